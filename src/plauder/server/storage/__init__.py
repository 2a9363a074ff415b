"""Durable state: the Store interface, its records and its backends."""

from plauder.server.storage.base import (
    AuthDevice,
    Delivery,
    DeviceRow,
    PresenceInfo,
    QueuedEnvelope,
    Registration,
    Store,
    StoredMessage,
)

__all__ = [
    "AuthDevice",
    "Delivery",
    "DeviceRow",
    "PresenceInfo",
    "QueuedEnvelope",
    "Registration",
    "Store",
    "StoredMessage",
]
