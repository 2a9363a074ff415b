"""Accounts: verification codes and registration of an account with its first device."""

import hashlib
import hmac
import logging
import secrets

from plauder import phone
from plauder.clock import Clock
from plauder.crypto import BadSignature, identity
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import RequestCode, Verify
from plauder.server.config import Config
from plauder.server.errors import ClusterUnavailable, ServiceError
from plauder.server.ratelimit import KeyedLimiter, KeyLimiter
from plauder.server.sms import CodeSender
from plauder.server.storage import Registration, Store
from plauder.server.storage.base import CodeCheck

log = logging.getLogger(__name__)

_CHECK_ERRORS = {
    CodeCheck.WRONG: (ErrorCode.INVALID_CODE, "wrong verification code"),
    CodeCheck.NO_CODE: (ErrorCode.INVALID_CODE, "no code was requested for this number"),
    CodeCheck.EXPIRED: (ErrorCode.CODE_EXPIRED, "the code has expired: request a new one"),
    CodeCheck.TOO_MANY_ATTEMPTS: (
        ErrorCode.TOO_MANY_ATTEMPTS,
        "too many wrong codes: request a new one",
    ),
}


def number_or_error(number: str) -> str:
    """Normalize a number, turning a bad one into an invalid_number error."""
    try:
        return phone.normalize(number)
    except ValueError as exc:
        raise ServiceError(ErrorCode.INVALID_NUMBER, str(exc)) from exc


def _hash(secret: bytes, number: str, code: str) -> bytes:
    """Keyed hash of a code: a copy of the database alone does not reveal live codes."""
    return hmac.new(secret, f"{number}:{code}".encode(), hashlib.sha256).digest()


def code_limit(config: Config) -> tuple[float, int]:
    """Verification codes per number: per second on average, and at once."""
    return config.codes_per_number_per_hour / 3600.0, config.codes_per_number_per_hour


class Accounts:
    """Sends verification codes and registers verified numbers."""

    def __init__(
        self,
        store: Store,
        sender: CodeSender,
        clock: Clock,
        config: Config,
        secret: bytes,
        per_number: KeyLimiter | None = None,
    ) -> None:
        self._store = store
        self._secret = secret
        self._sender = sender
        self._clock = clock
        self._config = config
        self._per_number = per_number or KeyedLimiter(clock, *code_limit(config))

    async def request_code(self, frame: RequestCode) -> None:
        """Create a code for the number and send it, within the per-number limit."""
        number = number_or_error(frame.number)
        try:
            allowed = await self._per_number.take(number)
        except ClusterUnavailable as exc:
            # fail closed: every code costs an SMS
            raise ServiceError(ErrorCode.UNAVAILABLE, "cannot send codes now: try again") from exc
        if not allowed:
            raise ServiceError(ErrorCode.RATE_LIMITED, "too many codes for this number: wait")
        code = f"{secrets.randbelow(1_000_000):06d}"
        expires = self._clock.now_ms() + self._config.code_ttl_seconds * 1000
        await self._store.save_code(number, _hash(self._secret, number, code), expires)
        await self._sender.send_code(number, code)
        log.info("verification code sent")

    async def verify(self, frame: Verify) -> Registration:
        """Check the code and the device's signature, then create or replace the account."""
        number = number_or_error(frame.number)
        try:
            identity.verify_signature(
                frame.account_key,
                identity.device_payload(frame.device.identity_key, frame.device.signing_key),
                frame.device.signature,
            )
            for key in [*frame.one_time_keys, *filter(None, [frame.fallback_key])]:
                identity.verify_signature(
                    frame.device.signing_key, identity.prekey_payload(key.key), key.signature
                )
        except BadSignature as exc:
            raise ServiceError(ErrorCode.BAD_SIGNATURE, "a key signature does not verify") from exc
        if len(frame.one_time_keys) > self._config.max_keys_per_upload:
            raise ServiceError(ErrorCode.TOO_MANY_KEYS, "too many one-time keys in one upload")
        check = await self._store.check_code(
            number,
            _hash(self._secret, number, frame.code),
            self._clock.now_ms(),
            self._config.code_attempts,
        )
        if check is not CodeCheck.OK:
            code, message = _CHECK_ERRORS[check]
            raise ServiceError(code, message)
        reg = await self._store.register(
            number,
            frame.account_key,
            frame.device,
            list(frame.one_time_keys),
            frame.fallback_key,
            self._clock.now_ms(),
        )
        log.info("account registered account=%d device=%d", reg.account_id, reg.device_id)
        return reg
