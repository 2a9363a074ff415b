"""Bad input gets its stable error code, and the server keeps serving everyone else.

Most tests speak raw frames over a real WebSocket to a real `plauder serve`
process, so they can send what the SDK never would. After each bad input a
fresh connection authenticates a bystander account and gets a `pong`, and in
some tests two SDK users still chat.
"""

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
import pytest

from plauder.client import Client, MessageReceived
from plauder.client.connection import ws_url
from plauder.crypto import AccountKey, Device, auth_payload, b64encode, prekey_payload
from plauder.protocol import codec
from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.frames import (
    Ack,
    Auth,
    AuthOk,
    ClientFrame,
    Drained,
    Envelope,
    Error,
    GetDevices,
    Hello,
    Ok,
    OutEnvelope,
    Ping,
    Pong,
    Registered,
    RequestCode,
    Send,
    Sent,
    ServerFrame,
    SignedKey,
    UploadKeys,
    Verify,
    Welcome,
)
from plauder.protocol.limits import PROTOCOL_VERSION
from tests.conftest import ServerProcess

MakeClient = Callable[..., Any]
F = TypeVar("F", bound=ServerFrame)

_ids = itertools.count(1)


def rid() -> int:
    """A fresh request id."""
    return next(_ids)


class Closed(Exception):
    """The server closed the WebSocket; `code` is its close code."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"connection closed with code {code}")
        self.code = code


class Wire:
    """A raw WebSocket to the server: sends any bytes, reads server frames.

    A reader task takes every message off the socket as it arrives (as real
    clients do), so a close frame is never missed.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.unclaimed: list[ServerFrame] = []
        self._inbox: asyncio.Queue[ServerFrame | Closed] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, server: ServerProcess) -> "Wire":
        """Connect without saying hello."""
        ws = await session.ws_connect(ws_url(server.url), max_msg_size=0, autoping=True)
        return cls(ws)

    async def close(self) -> None:
        """Close the WebSocket."""
        await self.ws.close()
        await self._reader

    async def _read_loop(self) -> None:
        try:
            async for msg in self.ws:
                assert msg.type == aiohttp.WSMsgType.BINARY, f"server sent {msg.type!r}"
                self._inbox.put_nowait(codec.decode_server(msg.data))
        finally:
            self._inbox.put_nowait(Closed(self.ws.close_code))

    async def send(self, frame: ClientFrame) -> None:
        """Send one well-formed frame."""
        await self.ws.send_bytes(codec.encode(frame))

    async def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes as one binary WebSocket message."""
        await self.ws.send_bytes(data)

    async def _read(self, timeout: float) -> ServerFrame:
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(item, Closed):
            self._inbox.put_nowait(item)  # for every later read too
            raise item
        return item

    async def next_of(self, kind: type[F], timeout: float = 10.0) -> F:
        """The next frame of a kind (frames of other kinds are kept for later)."""
        for i, frame in enumerate(self.unclaimed):
            if isinstance(frame, kind):
                del self.unclaimed[i]
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._read(timeout)
                if isinstance(frame, kind):
                    return frame
                self.unclaimed.append(frame)

    async def answer(self, request_id: int, timeout: float = 10.0) -> ServerFrame:
        """The frame answering a request id (other frames are kept for later)."""
        for i, frame in enumerate(self.unclaimed):
            if getattr(frame, "id", None) == request_id:
                del self.unclaimed[i]
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._read(timeout)
                if getattr(frame, "id", None) == request_id:
                    return frame
                if isinstance(frame, Error) and frame.id == 0:
                    raise AssertionError(f"error instead of an answer to {request_id}: {frame}")
                self.unclaimed.append(frame)

    async def request(self, frame: ClientFrame) -> ServerFrame:
        """Send a request and return its answer, whatever it is."""
        await self.send(frame)
        return await self.answer(frame.id)  # type: ignore[union-attr]

    async def error(self, frame: ClientFrame) -> str:
        """Send a request that must fail; return the error code."""
        answer = await self.request(frame)
        assert isinstance(answer, Error), f"expected an error, got {answer!r}"
        return answer.code

    async def hello(self) -> Welcome:
        """Say hello and return the welcome."""
        await self.send(Hello(v=PROTOCOL_VERSION, agent="tests"))
        return await self.next_of(Welcome)

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes the connection; return the close code."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self.unclaimed.append(await self._read(timeout))
                except Closed as exc:
                    return exc.code


@dataclass
class Account:
    """An account registered with raw frames: its keys and its device's id."""

    number: str
    account_key: AccountKey
    device: Device
    device_id: int


def signed_keys(device: Device, count: int, prefix: str = "k") -> list[SignedKey]:
    """One-time keys signed by a device (random Curve25519-sized keys: the server only
    checks signatures)."""
    out = []
    for i in range(count):
        key = b64encode(secrets.token_bytes(32))
        sig = device.sign(prekey_payload(key))
        out.append(SignedKey(key_id=f"{prefix}{i}-{secrets.token_hex(4)}", key=key, signature=sig))
    return out


def verify_frame(
    number: str, code: str, account_key: AccountKey, device: Device, keys: int = 5
) -> Verify:
    """A correct Verify frame for a fresh device."""
    return Verify(
        id=rid(),
        number=number,
        code=code,
        account_key=account_key.public_key,
        device=account_key.sign_device(device.identity_key, device.signing_key, 1),
        one_time_keys=signed_keys(device, keys),
        fallback_key=device.new_fallback_key(),
    )


async def request_code(session: aiohttp.ClientSession, server: ServerProcess, number: str) -> str:
    """Ask for a code on a fresh connection and read it from the server's console."""
    wire = await Wire.open(session, server)
    try:
        await wire.hello()
        assert isinstance(await wire.request(RequestCode(id=rid(), number=number)), Ok)
    finally:
        await wire.close()
    return server.code_for(number)


async def register_raw(
    session: aiohttp.ClientSession, server: ServerProcess, number: str, keys: int = 5
) -> Account:
    """Register an account with its first device using raw frames."""
    code = await request_code(session, server, number)
    account_key, device = AccountKey.generate(), Device.create()
    wire = await Wire.open(session, server)
    try:
        await wire.hello()
        answer = await wire.request(verify_frame(number, code, account_key, device, keys))
    finally:
        await wire.close()
    assert isinstance(answer, Registered), answer
    return Account(number, account_key, device, answer.device_id)


def auth_frame(account: Account, challenge: bytes, receive: bool = True) -> Auth:
    """An Auth frame answering a challenge with the account's device key."""
    payload = auth_payload(challenge, account.number, account.device_id)
    return Auth(
        id=rid(),
        number=account.number,
        device_id=account.device_id,
        signature=account.device.sign(payload),
        receive=receive,
    )


async def login(
    session: aiohttp.ClientSession, server: ServerProcess, account: Account, receive: bool = True
) -> tuple[Wire, AuthOk]:
    """A new connection authenticated as the account's device."""
    wire = await Wire.open(session, server)
    welcome = await wire.hello()
    answer = await wire.request(auth_frame(account, welcome.challenge, receive))
    assert isinstance(answer, AuthOk), answer
    return wire, answer


def envelope(to: Account | str, body: bytes = b"ciphertext", device_id: int = 1) -> OutEnvelope:
    """One envelope of opaque bytes for a device."""
    number = to if isinstance(to, str) else to.number
    return OutEnvelope(to=number, device_id=device_id, type=1, body=body)


def send_frame(*envelopes: OutEnvelope) -> Send:
    """A send of these envelopes with a fresh client message id."""
    return Send(id=rid(), cmid=secrets.token_bytes(16), envelopes=list(envelopes))


async def assert_serving(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    """The process runs, and a fresh connection can authenticate and ping."""
    assert server.alive()
    wire, _ = await login(session, server, witness, receive=False)
    try:
        assert isinstance(await wire.request(Ping(id=rid())), Pong)
    finally:
        await wire.close()


async def assert_chat_works(make_client: MakeClient) -> None:
    """Two SDK users can still exchange a message."""
    alice: Client = await make_client()
    bob: Client = await make_client()
    mid = await alice.send_text(bob.number, "still there?")
    async with asyncio.timeout(10):
        while True:
            ev = await bob.next_event()
            if isinstance(ev, MessageReceived):
                break
    assert (ev.sender, ev.body, ev.id) == (alice.number, "still there?", mid)


def sized_ping(request_id: int, size: int) -> bytes:
    """A valid ping frame padded with an unknown field to exactly `size` bytes."""
    pad = size
    for _ in range(10):
        data = msgspec.msgpack.encode({"t": "ping", "id": request_id, "pad": "x" * pad})
        if len(data) == size:
            return data
        pad += size - len(data)
    raise AssertionError("could not size the frame")


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server for the whole module: every test adds its abuse, and every test
    shows the server still serves afterwards. (Tests with other options start their own.)"""
    srv = ServerProcess(tmp_path_factory.mktemp("bad-input") / "server")
    srv.start()
    yield srv
    if srv.alive():
        srv.stop()


@pytest.fixture(scope="module")
def numbers() -> Iterator[str]:
    """Numbers unique across the module, since its tests share one server."""
    return iter([f"+49151100{i:05d}" for i in range(1, 500)])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for raw WebSockets."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def witness(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> Account:
    """A bystander account on the default server, to show it still works."""
    return await register_raw(session, server, next(numbers))


@pytest.fixture
async def wire(session: aiohttp.ClientSession, server: ServerProcess) -> AsyncIterator[Wire]:
    """A raw connection to the default server that has said hello."""
    w = await Wire.open(session, server)
    await w.hello()
    yield w
    await w.close()


# --- malformed frames -------------------------------------------------------------------


async def test_garbage_bytes_are_bad_frame(
    wire: Wire,
    session: aiohttp.ClientSession,
    server: ServerProcess,
    witness: Account,
    make_client: MakeClient,
) -> None:
    for garbage in (b"\xc1\xff\x00 not msgpack", b"", b"\x93\x01\x02", b"\xa4ping"):
        await wire.send_raw(garbage)
        err = await wire.next_of(Error)
        assert (err.code, err.id) == (ErrorCode.BAD_FRAME, 0)

    assert await wire.error(RequestCode(id=rid(), number="nonsense")) == ErrorCode.INVALID_NUMBER
    await assert_serving(session, server, witness)
    await assert_chat_works(make_client)


async def test_msgpack_of_the_wrong_shape_is_bad_frame(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account, numbers: Iterator[str]
) -> None:
    alice = await register_raw(session, server, next(numbers))
    wire, _ = await login(session, server, alice)
    bad_send = {"t": "send", "id": 41, "cmid": "not bytes", "envelopes": []}
    await wire.send_raw(msgspec.msgpack.encode(bad_send))
    err = await wire.answer(41)
    assert isinstance(err, Error) and err.code == ErrorCode.BAD_FRAME

    bad_types = {"t": "ack", "id": 42, "eids": "all of them"}
    await wire.send_raw(msgspec.msgpack.encode(bad_types))
    err = await wire.answer(42)
    assert isinstance(err, Error) and err.code == ErrorCode.BAD_FRAME

    await wire.send_raw(msgspec.msgpack.encode(["send", 43, b"cmid", []]))  # a list, not a map
    err = await wire.next_of(Error)
    assert (err.code, err.id) == (ErrorCode.BAD_FRAME, 0)

    await wire.send_raw(msgspec.msgpack.encode({"id": 44}))  # no type at all
    err = await wire.answer(44)
    assert isinstance(err, Error) and err.code == ErrorCode.BAD_FRAME

    assert isinstance(await wire.request(Ping(id=rid())), Pong)  # the connection still works
    await wire.close()
    await assert_serving(session, server, witness)


async def test_deeply_nested_frame_is_bad_frame(
    wire: Wire, session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    # 2 KB: far below max_frame_bytes, but nested deeper than the decoder recurses
    nested = b"\x82\xa1t" + b"\x91" * 2000 + b"\xc0" + b"\xa2id\x07"
    await wire.send_raw(nested)
    err = await wire.next_of(Error)
    assert err.code == ErrorCode.BAD_FRAME
    await wire.send(Hello(v=PROTOCOL_VERSION))
    assert isinstance(await wire.next_of(Welcome), Welcome)
    await assert_serving(session, server, witness)


async def test_unknown_frame_type(
    wire: Wire, session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    await wire.send_raw(msgspec.msgpack.encode({"t": "teleport", "id": 77, "to": "mars"}))
    err = await wire.answer(77)
    assert isinstance(err, Error) and err.code == ErrorCode.UNKNOWN_FRAME

    # a server-to-client frame type is not a request either
    await wire.send_raw(codec.encode(Pong(id=78, server_time=0)))
    err = await wire.answer(78)
    assert isinstance(err, Error) and err.code == ErrorCode.UNKNOWN_FRAME
    await assert_serving(session, server, witness)


async def test_text_websocket_frame_is_bad_frame(
    wire: Wire, session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    await wire.ws.send_str('{"t": "ping", "id": 5}')
    err = await wire.next_of(Error)
    assert (err.code, err.id) == (ErrorCode.BAD_FRAME, 0)
    assert isinstance(await wire.hello(), Welcome)  # still usable
    await assert_serving(session, server, witness)


async def test_frame_just_over_max_frame_bytes(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    witness: Account,
    make_client: MakeClient,
) -> None:
    max_bytes = 256 * 1024  # the default, announced in welcome
    wire = await Wire.open(session, server)
    welcome = await wire.hello()
    assert welcome.limits.max_frame_bytes == max_bytes
    assert isinstance(await wire.request(auth_frame(witness, welcome.challenge)), AuthOk)

    await wire.send_raw(sized_ping(501, max_bytes))  # exactly at the limit: fine
    assert isinstance(await wire.answer(501), Pong)

    await wire.send_raw(sized_ping(502, max_bytes + 1))
    err = await wire.next_of(Error)
    assert err.code == ErrorCode.FRAME_TOO_LARGE

    assert isinstance(await wire.request(Ping(id=rid())), Pong)  # the connection still works
    await wire.close()
    await assert_serving(session, server, witness)
    await assert_chat_works(make_client)


async def test_frame_far_over_the_limit_closes_only_that_connection(
    server_factory: Callable[..., ServerProcess], session: aiohttp.ClientSession
) -> None:
    server = server_factory(max_frame_bytes=2000)  # aiohttp drops messages over 4x this
    witness = await register_raw(session, server, "+4915100000001", keys=1)
    wire = await Wire.open(session, server)
    await wire.hello()
    await wire.send_raw(b"\x00" * 100_000)
    assert await wire.closed() == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await assert_serving(session, server, witness)


# --- the connection's state machine ---------------------------------------------------


async def test_requests_before_hello(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    wire = await Wire.open(session, server)
    for frame in (
        Ping(id=rid()),
        RequestCode(id=rid(), number="+4915100000099"),
        Auth(id=rid(), number=witness.number, device_id=1, signature="AAAA"),
        send_frame(envelope(witness)),
    ):
        assert await wire.error(frame) == ErrorCode.HELLO_REQUIRED
    assert isinstance(await wire.hello(), Welcome)  # hello still works afterwards
    await wire.close()
    await assert_serving(session, server, witness)


async def test_requests_before_authentication(
    wire: Wire, session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    for frame in (
        send_frame(envelope(witness)),
        Ack(id=rid(), eids=[1]),
        GetDevices(id=rid(), number=witness.number, claim=True),
        UploadKeys(id=rid(), one_time_keys=signed_keys(Device.create(), 1)),
        Ping(id=rid()),
    ):
        assert await wire.error(frame) == ErrorCode.UNAUTHENTICATED

    # nothing was stored and no key was claimed
    witness_wire, ok = await login(session, server, witness)
    assert ok.one_time_keys == 5
    await witness_wire.next_of(Drained)
    assert not any(isinstance(f, Envelope) for f in witness_wire.unclaimed)
    await witness_wire.close()
    await assert_serving(session, server, witness)


async def test_unsupported_protocol_version_closes(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    wire = await Wire.open(session, server)
    await wire.send(Hello(v=PROTOCOL_VERSION + 1))
    err = await wire.next_of(Error)
    assert err.code == ErrorCode.UNSUPPORTED_VERSION
    assert await wire.closed() == CloseCode.UNSUPPORTED_VERSION
    await wire.close()
    await assert_serving(session, server, witness)


async def test_too_many_bad_frames_close_the_connection(
    wire: Wire, session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    for _ in range(20):  # max_bad_frames: tolerated
        await wire.send_raw(b"\xc1")
        assert (await wire.next_of(Error)).code == ErrorCode.BAD_FRAME
    assert isinstance(await wire.hello(), Welcome)  # still open

    await wire.send_raw(b"\xc1")  # one too many
    assert (await wire.next_of(Error)).code == ErrorCode.BAD_FRAME
    assert await wire.closed() == CloseCode.PROTOCOL_ERROR
    await assert_serving(session, server, witness)


# --- authentication -------------------------------------------------------------------


async def test_challenge_signed_by_the_wrong_key(
    wire: Wire, session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    welcome = await wire.hello()
    impostor = Account(witness.number, witness.account_key, Device.create(), witness.device_id)
    assert await wire.error(auth_frame(impostor, welcome.challenge)) == ErrorCode.AUTH_FAILED
    # the challenge is spent: even the right key needs a new hello now
    assert await wire.error(auth_frame(witness, welcome.challenge)) == ErrorCode.AUTH_FAILED
    assert await wire.error(Ping(id=rid())) == ErrorCode.UNAUTHENTICATED

    # an unknown device and an unknown number fail the same way
    welcome = await wire.hello()
    ghost_device = Account(witness.number, witness.account_key, witness.device, 2)
    assert await wire.error(auth_frame(ghost_device, welcome.challenge)) == ErrorCode.AUTH_FAILED
    welcome = await wire.hello()
    nobody = Account("+4915100000098", witness.account_key, witness.device, 1)
    assert await wire.error(auth_frame(nobody, welcome.challenge)) == ErrorCode.AUTH_FAILED
    await assert_serving(session, server, witness)


async def test_replayed_auth_is_refused(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    first = await Wire.open(session, server)
    welcome = await first.hello()
    captured = auth_frame(witness, welcome.challenge)
    assert isinstance(await first.request(captured), AuthOk)

    # the same answer on the same, now authenticated, connection
    assert await first.error(captured) == ErrorCode.ALREADY_AUTHENTICATED
    await first.send(Hello(v=PROTOCOL_VERSION))  # nor a new challenge to sign
    assert (await first.next_of(Error)).code == ErrorCode.ALREADY_AUTHENTICATED
    assert isinstance(await first.request(Ping(id=rid())), Pong)

    # the same answer on a new connection, whose challenge differs
    second = await Wire.open(session, server)
    await second.hello()
    assert await second.error(captured) == ErrorCode.AUTH_FAILED
    assert await second.error(Ping(id=rid())) == ErrorCode.UNAUTHENTICATED
    await second.close()
    await first.close()
    await assert_serving(session, server, witness)


async def test_wrong_codes_lock_the_code(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account, numbers: Iterator[str]
) -> None:
    number = next(numbers)
    code = await request_code(session, server, number)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    account_key, device = AccountKey.generate(), Device.create()

    wire = await Wire.open(session, server)
    await wire.hello()
    codes = [await wire.error(verify_frame(number, wrong, account_key, device)) for _ in range(5)]
    assert codes == [ErrorCode.INVALID_CODE] * 4 + [ErrorCode.TOO_MANY_ATTEMPTS]
    await wire.close()

    # even the right code is refused now, on a fresh connection
    wire = await Wire.open(session, server)
    await wire.hello()
    right = verify_frame(number, code, account_key, device)
    assert await wire.error(right) == ErrorCode.TOO_MANY_ATTEMPTS
    await wire.close()

    # a new code works
    code = await request_code(session, server, number)
    wire = await Wire.open(session, server)
    await wire.hello()
    registered = await wire.request(verify_frame(number, code, account_key, device))
    assert isinstance(registered, Registered)
    await wire.close()
    await assert_serving(session, server, witness)


async def test_verify_with_keys_not_signed_by_the_account(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account, numbers: Iterator[str]
) -> None:
    number = next(numbers)
    code = await request_code(session, server, number)
    account_key, device = AccountKey.generate(), Device.create()
    good = verify_frame(number, code, account_key, device)

    wire = await Wire.open(session, server)
    await wire.hello()
    stranger = AccountKey.generate()
    forged = msgspec.structs.replace(
        good,
        id=rid(),
        device=stranger.sign_device(device.identity_key, device.signing_key, 1),
    )
    assert await wire.error(forged) == ErrorCode.BAD_SIGNATURE

    other_device = Device.create()
    foreign_key = msgspec.structs.replace(
        good, id=rid(), one_time_keys=[*good.one_time_keys, *signed_keys(other_device, 1)]
    )
    assert await wire.error(foreign_key) == ErrorCode.BAD_SIGNATURE

    # the rejected attempts did not use up the code
    assert isinstance(await wire.request(msgspec.structs.replace(good, id=rid())), Registered)
    await wire.close()
    await assert_serving(session, server, witness)


async def test_upload_of_keys_signed_by_another_device(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account
) -> None:
    wire, ok = await login(session, server, witness)
    bad = UploadKeys(id=rid(), one_time_keys=signed_keys(Device.create(), 3))
    assert await wire.error(bad) == ErrorCode.BAD_SIGNATURE
    await wire.close()
    wire, again = await login(session, server, witness)
    assert again.one_time_keys == ok.one_time_keys  # nothing was stored
    await wire.close()
    await assert_serving(session, server, witness)


# --- messages ---------------------------------------------------------------------------


async def test_ack_of_someone_elses_envelope(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account, numbers: Iterator[str]
) -> None:
    alice, bob, carol = [await register_raw(session, server, next(numbers)) for _ in range(3)]
    alice_wire, _ = await login(session, server, alice)
    assert isinstance(await alice_wire.request(send_frame(envelope(bob, b"for bob"))), Sent)

    bob_wire, _ = await login(session, server, bob)
    got = await bob_wire.next_of(Envelope)
    assert (got.sender, got.body) == (alice.number, b"for bob")
    await bob_wire.close()  # without acking

    carol_wire, _ = await login(session, server, carol)
    assert await carol_wire.error(Ack(id=rid(), eids=[got.eid])) == ErrorCode.UNKNOWN_ENVELOPE
    assert await carol_wire.error(Ack(id=rid(), eids=[got.eid + 1000])) == (
        ErrorCode.UNKNOWN_ENVELOPE
    )
    await carol_wire.close()

    # bob still has it, and can ack it once
    bob_wire, _ = await login(session, server, bob)
    again = await bob_wire.next_of(Envelope)
    assert (again.eid, again.body) == (got.eid, b"for bob")
    assert isinstance(await bob_wire.request(Ack(id=rid(), eids=[got.eid])), Ok)
    assert await bob_wire.error(Ack(id=rid(), eids=[got.eid])) == ErrorCode.UNKNOWN_ENVELOPE
    await bob_wire.close()
    await alice_wire.close()
    await assert_serving(session, server, witness)


async def test_send_to_unknown_number_or_wrong_devices(
    session: aiohttp.ClientSession, server: ServerProcess, witness: Account, numbers: Iterator[str]
) -> None:
    alice, bob = [await register_raw(session, server, next(numbers)) for _ in range(2)]
    nobody = next(numbers)
    wire, _ = await login(session, server, alice)

    assert await wire.error(send_frame(envelope(nobody))) == ErrorCode.UNKNOWN_ACCOUNT
    # one good envelope does not get a message with a bad one through
    mixed = send_frame(envelope(bob, b"half"), envelope(nobody))
    assert await wire.error(mixed) == ErrorCode.UNKNOWN_ACCOUNT

    for bad in (
        send_frame(envelope(bob, device_id=2)),  # bob has no device 2
        send_frame(envelope(bob), envelope(bob)),  # device 1 twice
        send_frame(envelope(bob), envelope(bob, device_id=2)),  # one too many
        send_frame(envelope(alice)),  # the sender's own device
    ):
        assert await wire.error(bad) == ErrorCode.MISMATCHED_DEVICES
    assert await wire.error(Send(id=rid(), cmid=b"0123456789abcdef", envelopes=[])) == (
        ErrorCode.INVALID_REQUEST
    )
    assert await wire.error(GetDevices(id=rid(), number=nobody)) == ErrorCode.UNKNOWN_ACCOUNT

    assert isinstance(await wire.request(send_frame(envelope(bob, b"the real one"))), Sent)
    await wire.close()

    # bob gets exactly the one good message: nothing of the rejected sends was stored
    bob_wire, _ = await login(session, server, bob)
    await bob_wire.next_of(Drained)
    bodies = [f.body for f in bob_wire.unclaimed if isinstance(f, Envelope)]
    assert bodies == [b"the real one"]
    await bob_wire.close()
    await assert_serving(session, server, witness)


async def test_send_over_envelope_count_and_body_size(
    server_factory: Callable[..., ServerProcess], session: aiohttp.ClientSession
) -> None:
    server = server_factory(max_envelopes_per_send=2, max_body_bytes=1000)
    alice = await register_raw(session, server, "+4915100000001")
    bob = await register_raw(session, server, "+4915100000002")
    wire = await Wire.open(session, server)
    welcome = await wire.hello()
    assert (welcome.limits.max_envelopes_per_send, welcome.limits.max_body_bytes) == (2, 1000)
    assert isinstance(await wire.request(auth_frame(alice, welcome.challenge)), AuthOk)

    three = send_frame(envelope(bob), envelope(bob), envelope(bob))
    assert await wire.error(three) == ErrorCode.TOO_MANY_ENVELOPES
    big = send_frame(envelope(bob, b"x" * 1001))
    assert await wire.error(big) == ErrorCode.ENVELOPE_TOO_LARGE
    assert isinstance(await wire.request(send_frame(envelope(bob, b"y" * 1000))), Sent)
    await wire.close()

    bob_wire, _ = await login(session, server, bob)
    await bob_wire.next_of(Drained)
    assert [len(f.body) for f in bob_wire.unclaimed if isinstance(f, Envelope)] == [1000]
    await bob_wire.close()
    await assert_serving(session, server, alice)
