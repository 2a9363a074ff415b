"""Exceptions the SDK raises."""

from plauder.errors import PlauderError
from plauder.protocol.errors import ErrorCode


class ClientError(PlauderError):
    """Base of the SDK's errors."""


class ServerError(ClientError):
    """The server answered a request with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class ConnectionLost(ClientError):
    """The connection closed before the server answered."""


class NotConnected(ClientError):
    """No server could be reached in time."""


class Queued(NotConnected):
    """No server confirmed a send in time; it stays queued and goes out after a connection."""

    def __init__(self, message_id: str, reason: str) -> None:
        super().__init__(f"{reason}; message {message_id} stays queued and goes out later")
        self.message_id = message_id


class BadServerUrl(ClientError):
    """A server URL that plauder cannot connect to as written, or an empty list of them."""


class NotRegistered(ClientError):
    """The profile has no registered device yet: register and verify first."""


class UnknownContact(ClientError):
    """No account has this number."""


class UnknownGroup(ClientError):
    """This device knows no group by that name or id (or several by that name)."""


class UntrustedDevices(ClientError):
    """A contact's device list is not signed by their account key: nothing was sent."""


class UnknownMembers(UntrustedDevices):
    """The server lists accounts for a group that this device does not know as members.

    Nothing was sent and no key was shared with them; `numbers` are those accounts.
    """

    def __init__(self, gid: str, numbers: list[str]) -> None:
        super().__init__(
            f"the server lists {', '.join(numbers)} in group {gid}, not members here: not sent"
        )
        self.gid = gid
        self.numbers = numbers


# error codes that say "not now": the request may succeed if made again later
TRANSIENT = (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL)
