"""Errors a service raises for a request; the gateway turns them into error frames."""

from plauder.errors import PlauderError
from plauder.protocol.errors import ErrorCode


class ServiceError(PlauderError):
    """A request failed for a reason the client is told, with a stable code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StorageError(PlauderError):
    """The database failed; nothing of the request was stored."""


class ClusterUnavailable(PlauderError):
    """Redis, which the nodes of a cluster share, cannot be reached or refused a command."""
