"""The plauder server: gateway, services, router and storage."""
