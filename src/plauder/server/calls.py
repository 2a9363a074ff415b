"""Calls: short-lived credentials for the TURN relays (coturn's shared-secret REST scheme).

The calls themselves (offer, answer, hang-up...) are end-to-end encrypted
contents of ordinary messages; the server only hands a device the relays and
a credential for them. The relay and this server share a secret (coturn's
`static-auth-secret`); a credential is

    username = "<expiry, unix seconds>:<account id>"
    password = base64(HMAC-SHA1(secret, username))

which the relay checks by computing the same HMAC and refusing an expiry in
the past. No state is kept: any node with the secret can issue one.
"""

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plauder.clock import Clock
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import GetTurn, Turn
from plauder.server.config import MIN_TURN_SECRET, Config, ConfigError
from plauder.server.errors import ServiceError
from plauder.server.metrics import Metrics
from plauder.server.storage.base import Sender


@dataclass(frozen=True)
class TurnCredential:
    """A username and password for the relays, valid until `expires` (unix seconds)."""

    username: str
    password: str
    expires: int


def turn_credential(secret: bytes, account_id: int, expires: int) -> TurnCredential:
    """The credential of an account that the relay accepts until `expires` (unix seconds)."""
    username = f"{expires}:{account_id}"
    mac = hmac.new(secret, username.encode("ascii"), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(mac).decode("ascii"), expires)


def load_turn_secret(config: Config) -> bytes:
    """The secret shared with the relays, from the option or its file; empty without relays."""
    if not config.turn_urls:
        return b""
    if config.turn_secret:
        return config.turn_secret.encode()
    try:
        text = Path(config.turn_secret_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(
            f"option turn_secret_file: cannot read {config.turn_secret_file}: {reason}"
        ) from exc
    if len(text) < MIN_TURN_SECRET:
        raise ConfigError(
            f"option turn_secret_file: the secret in {config.turn_secret_file} must have "
            f"at least {MIN_TURN_SECRET} characters"
        )
    return text.encode()


class Calls:
    """Answers `get_turn` for authenticated devices."""

    def __init__(self, config: Config, secret: bytes, clock: Clock, metrics: Metrics) -> None:
        self._urls = list(config.turn_urls)
        self._ttl = config.turn_ttl_seconds
        self._secret = secret
        self._clock = clock
        self._metrics = metrics

    def turn(self, frame: GetTurn, actor: Sender, allowed: Callable[[], bool]) -> Turn:
        """The relays and a fresh credential; no urls when the server has no relay.

        `allowed` spends one of the connection's requests for credentials.
        """
        if not allowed():
            raise ServiceError(ErrorCode.RATE_LIMITED, "too many TURN credential requests: wait")
        if not self._urls:
            return Turn(id=frame.id, urls=[])
        expires = self._clock.now_ms() // 1000 + self._ttl
        credential = turn_credential(self._secret, actor.account_id, expires)
        self._metrics.turn_credentials_issued += 1
        return Turn(
            id=frame.id,
            urls=list(self._urls),
            username=credential.username,
            password=credential.password,
            expires=expires * 1000,
        )
