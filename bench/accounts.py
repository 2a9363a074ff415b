"""Bench accounts: deterministic keys, a tiny code collector, registration over the wire."""

import asyncio
import hashlib
from dataclasses import dataclass
from functools import cached_property

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.wire import Wire, WireError
from plauder.crypto.encoding import b64encode
from plauder.crypto.identity import auth_payload, device_payload, prekey_payload
from plauder.protocol.frames import (
    Auth,
    AuthOk,
    DeviceKeys,
    Registered,
    RequestCode,
    SignedKey,
    Verify,
)

CODE_ATTEMPTS = 5  # request_code answered `unavailable` (e.g. Redis busy) is tried again
FIRST_NUMBER = 4915100000000  # +49 151 mobile numbers: valid E.164 for phonenumbers


def number(index: int) -> str:
    """The phone number of bench account `index`."""
    return f"+{FIRST_NUMBER + index}"


def _seed(salt: bytes, index: int, label: bytes) -> bytes:
    return hashlib.blake2b(label + index.to_bytes(8, "big"), key=salt, digest_size=32).digest()


@dataclass(frozen=True)
class Identity:
    """Keys of one bench account with one device, derived from a run's salt and an index."""

    index: int
    salt: bytes

    @property
    def number(self) -> str:
        """The account's phone number."""
        return number(self.index)

    @cached_property
    def account_key(self) -> Ed25519PrivateKey:
        """The account's Ed25519 identity key."""
        return Ed25519PrivateKey.from_private_bytes(_seed(self.salt, self.index, b"account"))

    @cached_property
    def device_key(self) -> Ed25519PrivateKey:
        """The device's Ed25519 signing key (the key `Device.sign` uses in the SDK)."""
        return Ed25519PrivateKey.from_private_bytes(_seed(self.salt, self.index, b"device"))

    def device_keys(self) -> DeviceKeys:
        """The device's public keys, signed by the account key."""
        curve = X25519PrivateKey.from_private_bytes(_seed(self.salt, self.index, b"curve"))
        identity_key = b64encode(curve.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        signing_key = _public(self.device_key)
        signature = b64encode(self.account_key.sign(device_payload(identity_key, signing_key)))
        return DeviceKeys(
            device_id=1, identity_key=identity_key, signing_key=signing_key, signature=signature
        )

    def fallback_key(self) -> SignedKey:
        """A signed Curve25519 fallback key, as a real client registers one."""
        curve = X25519PrivateKey.from_private_bytes(_seed(self.salt, self.index, b"fallback"))
        key = b64encode(curve.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        signature = b64encode(self.device_key.sign(prekey_payload(key)))
        return SignedKey(key_id="AAAAAQ", key=key, signature=signature, fallback=True)

    def auth(self, request_id: int, challenge: bytes, device_id: int = 1) -> Auth:
        """An `auth` frame signing the connection's challenge with the device key."""
        payload = auth_payload(challenge, self.number, device_id)
        signature = b64encode(self.device_key.sign(payload))
        return Auth(id=request_id, number=self.number, device_id=device_id, signature=signature)


def _public(key: Ed25519PrivateKey) -> str:
    return b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


class CodeCollector:
    """The server's `http` code sender posts here; bench clients fetch codes by number."""

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.received = 0

    async def start(self) -> str:
        """Listen on 127.0.0.1 and a free port; returns the URL to give the server."""
        app = web.Application()
        app.router.add_post("/", self._post)
        app.router.add_get("/code/{number}", self._get)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url + "/"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def _event(self, number: str) -> asyncio.Event:
        event = self._waiters.get(number)
        if event is None:
            event = self._waiters[number] = asyncio.Event()
        return event

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._codes[body["number"]] = body["code"]
        self.received += 1
        self._event(body["number"]).set()
        return web.Response(text="ok")

    async def _get(self, request: web.Request) -> web.Response:
        number = request.match_info["number"]
        try:
            await asyncio.wait_for(self._event(number).wait(), 20.0)
        except TimeoutError:
            raise web.HTTPNotFound(text="no code") from None
        self._waiters.pop(number, None)
        return web.Response(text=self._codes.pop(number))


async def fetch_code(session: aiohttp.ClientSession, collector: str, number: str) -> str:
    """The code the server sent to a number (long poll on the collector)."""
    async with session.get(f"{collector}/code/{number}") as resp:
        if resp.status != 200:
            raise RuntimeError(f"no verification code for {number}")
        return await resp.text()


async def register(
    session: aiohttp.ClientSession, ws_url: str, collector: str, ident: Identity
) -> None:
    """Register one account over the real protocol: request_code, then verify."""
    wire = await Wire.open(session, ws_url)
    try:
        for attempt in range(CODE_ATTEMPTS):  # `unavailable` is transient: the SDK retries too
            try:
                await wire.request(RequestCode(id=wire.next_id(), number=ident.number))
                break
            except WireError as exc:
                if exc.code != "unavailable" or attempt == CODE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        code = await fetch_code(session, collector, ident.number)
        frame = Verify(
            id=wire.next_id(),
            number=ident.number,
            code=code,
            account_key=_public(ident.account_key),
            device=ident.device_keys(),
            fallback_key=ident.fallback_key(),
        )
        answer = await wire.request(frame)
        if not isinstance(answer, Registered) or answer.device_id != 1:
            raise RuntimeError(f"unexpected answer to verify: {answer!r}")
    finally:
        await wire.close()


async def authenticate(wire: Wire, ident: Identity, timeout: float = 30.0) -> AuthOk:
    """Sign the connection's challenge and wait for `auth_ok`."""
    assert wire.welcome is not None
    answer = await wire.request(ident.auth(wire.next_id(), wire.welcome.challenge), timeout)
    if not isinstance(answer, AuthOk):
        raise RuntimeError(f"unexpected answer to auth: {answer!r}")
    return answer
