"""The bench scenarios: idle, pairs and e2e."""
