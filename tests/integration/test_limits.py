"""Every limit is enforced by the server itself, whatever a client sends.

Servers are started with small limits (`server_factory(requests_per_second=5)`)
so each limit is cheap to reach; clients speak raw frames over a real WebSocket.
"""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from plauder.crypto import AccountKey, Device
from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.frames import (
    Devices,
    Error,
    GetDevices,
    KeysLow,
    Ok,
    Ping,
    Pong,
    Registered,
    RequestCode,
    ServerFrame,
    UploadKeys,
)
from plauder.protocol.limits import MAX_STORED_ONE_TIME_KEYS
from tests.conftest import ServerProcess
from tests.integration.test_bad_input import (
    Account,
    Wire,
    auth_frame,
    login,
    register_raw,
    request_code,
    rid,
    signed_keys,
    verify_frame,
)

ServerFactory = Callable[..., ServerProcess]

ALICE = "+4915100000001"
BOB = "+4915100000002"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for raw WebSockets."""
    async with aiohttp.ClientSession() as s:
        yield s


async def pipelined_pings(wire: Wire, count: int) -> list[ServerFrame]:
    """Send `count` pings at once; their answers in request order."""
    ids = [rid() for _ in range(count)]
    for i in ids:
        await wire.send(Ping(id=i))
    return [await wire.answer(i) for i in ids]


def new_keys() -> tuple[AccountKey, Device]:
    """A fresh account key and device."""
    return AccountKey.generate(), Device.create()


def wrong_code(code: str) -> str:
    """A six-digit code that is not `code`."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


def codes(answers: list[ServerFrame]) -> list[str]:
    """`pong` or the error code of each answer."""
    return ["pong" if isinstance(a, Pong) else getattr(a, "code", "?") for a in answers]


# --- request rate ---------------------------------------------------------------------


async def test_request_rate_per_connection(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(requests_per_second=5, request_burst=5)
    alice = await register_raw(session, server, ALICE)
    bob = await register_raw(session, server, BOB)

    wire, _ = await login(session, server, alice)  # hello and auth spend 2 of 5 tokens
    answers = codes(await pipelined_pings(wire, 10))
    assert answers[:3] == ["pong"] * 3, answers  # the rest of the burst
    assert set(answers[3:]) <= {"pong", ErrorCode.RATE_LIMITED}
    assert answers.count(ErrorCode.RATE_LIMITED) >= 5, answers  # little refilled meanwhile

    # the limit is per connection: another one is served at once
    other, _ = await login(session, server, bob)
    assert codes(await pipelined_pings(other, 3)) == ["pong"] * 3
    await other.close()

    # after a second at 5 requests per second, the whole burst is back
    await asyncio.sleep(1.0)
    assert codes(await pipelined_pings(wire, 5)) == ["pong"] * 5
    await wire.close()


async def test_flood_of_rate_limited_requests_closes_the_connection(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(requests_per_second=5, request_burst=5, max_bad_frames=3)
    alice = await register_raw(session, server, ALICE)
    wire, _ = await login(session, server, alice)
    with contextlib.suppress(ConnectionError):  # the server may close while we still send
        for _ in range(20):
            await wire.send(Ping(id=rid()))
    assert await wire.closed() == CloseCode.RATE_LIMITED
    limited = [f for f in wire.unclaimed if isinstance(f, Error)]
    assert len(limited) == 4  # max_bad_frames strikes are tolerated, the next one closes
    assert {e.code for e in limited} == {ErrorCode.RATE_LIMITED}

    other, _ = await login(session, server, alice)  # the server serves the next one
    assert isinstance(await other.request(Ping(id=rid())), Pong)
    await other.close()


# --- verification codes ---------------------------------------------------------------


async def test_codes_per_number_per_hour(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(codes_per_number_per_hour=2)
    await request_code(session, server, ALICE)
    second = await request_code(session, server, ALICE)

    wire = await Wire.open(session, server)
    await wire.hello()
    # the same number written differently is the same number
    spaced = "+49 151 0000 0001"
    assert await wire.error(RequestCode(id=rid(), number=spaced)) == ErrorCode.RATE_LIMITED
    await wire.close()
    sent = re.findall(rf"verification code for {re.escape(ALICE)}: (\d+)", server.log_text())
    assert len(sent) == 2  # no third code went out

    # other numbers are not affected
    await request_code(session, server, BOB)

    # the refused request did not replace the code that was sent
    wire = await Wire.open(session, server)
    await wire.hello()
    frame = verify_frame(ALICE, second, AccountKey.generate(), Device.create())
    assert isinstance(await wire.request(frame), Registered)
    await wire.close()


async def test_code_requests_and_verify_attempts_per_connection(
    server: ServerProcess, session: aiohttp.ClientSession, numbers: Iterator[str]
) -> None:
    first = [next(numbers) for _ in range(4)]
    wire = await Wire.open(session, server)
    await wire.hello()
    for number in first[:3]:  # code_requests_per_connection = 3
        assert isinstance(await wire.request(RequestCode(id=rid(), number=number)), Ok)
    assert await wire.error(RequestCode(id=rid(), number=first[3])) == ErrorCode.RATE_LIMITED
    await wire.close()
    code = await request_code(session, server, first[3])  # a new connection may ask again

    # code_attempts = 5 verifications per connection, whatever the number
    wire = await Wire.open(session, server)
    await wire.hello()
    for number in [*first[:3], first[3], first[3]]:
        wrong = verify_frame(number, wrong_code(server.code_for(number)), *new_keys())
        assert await wire.error(wrong) == ErrorCode.INVALID_CODE
    right = verify_frame(first[3], code, *new_keys())
    assert await wire.error(right) == ErrorCode.RATE_LIMITED
    await wire.close()

    wire = await Wire.open(session, server)
    await wire.hello()
    assert isinstance(await wire.request(right), Registered)
    await wire.close()


# --- authentication timeout -----------------------------------------------------------


async def test_auth_timeout_closes_unauthenticated_connections(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(auth_timeout_seconds=0.5)
    alice = await register_raw(session, server, ALICE)

    signed_in, _ = await login(session, server, alice)
    silent = await Wire.open(session, server)  # not even hello
    greeted = await Wire.open(session, server)
    await greeted.hello()
    failed = await Wire.open(session, server)
    welcome = await failed.hello()
    impostor = Account(ALICE, alice.account_key, Device.create(), alice.device_id)
    assert await failed.error(auth_frame(impostor, welcome.challenge)) == ErrorCode.AUTH_FAILED

    for wire in (silent, greeted, failed):
        assert await wire.closed(timeout=5) == CloseCode.AUTH_TIMEOUT
        await wire.close()

    # the authenticated connection, older than all of them, stays open
    assert isinstance(await signed_in.request(Ping(id=rid())), Pong)
    await signed_in.close()


# --- one-time keys ----------------------------------------------------------------------


async def test_one_time_keys_per_upload(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(max_keys_per_upload=5)
    code = await request_code(session, server, ALICE)
    account_key, device = AccountKey.generate(), Device.create()
    wire = await Wire.open(session, server)
    welcome = await wire.hello()
    assert welcome.limits.max_keys_per_upload == 5
    too_many = verify_frame(ALICE, code, account_key, device, keys=6)
    assert await wire.error(too_many) == ErrorCode.TOO_MANY_KEYS
    registered = await wire.request(verify_frame(ALICE, code, account_key, device))
    assert isinstance(registered, Registered)
    await wire.close()

    bob = await register_raw(session, server, BOB, keys=5)
    wire, ok = await login(session, server, bob)
    assert ok.one_time_keys == 5
    upload = UploadKeys(id=rid(), one_time_keys=signed_keys(bob.device, 6))
    assert await wire.error(upload) == ErrorCode.TOO_MANY_KEYS
    upload = UploadKeys(id=rid(), one_time_keys=signed_keys(bob.device, 5))
    assert isinstance(await wire.request(upload), Ok)
    await wire.close()

    wire, ok = await login(session, server, bob)
    assert ok.one_time_keys == 10
    await wire.close()


async def test_stored_one_time_keys_are_capped(
    server: ServerProcess, session: aiohttp.ClientSession, numbers: Iterator[str]
) -> None:
    assert MAX_STORED_ONE_TIME_KEYS == 200
    alice = await register_raw(session, server, next(numbers), keys=50)
    wire, _ = await login(session, server, alice)

    async def upload(count: int) -> ServerFrame:
        return await wire.request(
            UploadKeys(id=rid(), one_time_keys=signed_keys(alice.device, count))
        )

    assert isinstance(await upload(100), Ok)  # 150
    crossing = await upload(51)  # would be 201: refused as a whole
    assert isinstance(crossing, Error) and crossing.code == ErrorCode.TOO_MANY_KEYS
    assert isinstance(await upload(50), Ok)  # exactly 200
    over = await upload(1)
    assert isinstance(over, Error) and over.code == ErrorCode.TOO_MANY_KEYS
    await wire.close()

    wire, ok = await login(session, server, alice)
    assert ok.one_time_keys == 200
    await wire.close()


async def test_keys_low_push_when_claims_drain_the_pool(
    server: ServerProcess, session: aiohttp.ClientSession, numbers: Iterator[str]
) -> None:
    alice = await register_raw(session, server, next(numbers))
    bob = await register_raw(session, server, next(numbers), keys=12)
    bob_wire, ok = await login(session, server, bob)
    assert ok.one_time_keys == 12
    threshold = 10  # keys_low_threshold: the default
    alice_wire, _ = await login(session, server, alice)

    claimed: list[str] = []
    fallback_seen = False
    for _ in range(13):
        answer = await alice_wire.request(GetDevices(id=rid(), number=bob.number, claim=True))
        assert isinstance(answer, Devices)
        (bundle,) = answer.devices
        assert bundle.prekey is not None
        if bundle.prekey.fallback:
            fallback_seen = True
        else:
            claimed.append(bundle.prekey.key_id)
    assert len(set(claimed)) == 12  # each one-time key handed out once
    assert fallback_seen  # then the fallback key

    # pushes start once fewer than `threshold` keys remain: 11 and 10 sent none
    remaining = [(await bob_wire.next_of(KeysLow)).remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert remaining[0] == threshold - 1
    assert (await bob_wire.next_of(KeysLow)).remaining == 0  # the fallback claim

    # a lookup without `claim` draws nothing
    answer = await alice_wire.request(GetDevices(id=rid(), number=bob.number))
    assert isinstance(answer, Devices) and answer.devices[0].prekey is None
    await alice_wire.close()
    await bob_wire.close()


async def test_pre_key_claims_per_connection(
    server_factory: ServerFactory, session: aiohttp.ClientSession, numbers: Iterator[str]
) -> None:
    server = server_factory(claims_per_minute=3)
    alice = await register_raw(session, server, next(numbers))
    bob = await register_raw(session, server, next(numbers), keys=10)
    wire, _ = await login(session, server, alice)
    answers = []
    for _ in range(5):
        answers.append(await wire.request(GetDevices(id=rid(), number=bob.number, claim=True)))
    kinds = ["devices" if isinstance(a, Devices) else getattr(a, "code", "?") for a in answers]
    assert kinds == ["devices"] * 3 + [ErrorCode.RATE_LIMITED] * 2  # nobody drains a pool
    # looking up devices without claiming stays possible
    assert isinstance(await wire.request(GetDevices(id=rid(), number=bob.number)), Devices)
    bob_wire, ok = await login(session, server, bob)
    assert ok.one_time_keys == 7
    await wire.close()
    await bob_wire.close()


async def test_pipelined_requests_beyond_the_pending_limit_are_all_answered(
    server: ServerProcess, session: aiohttp.ClientSession, numbers: Iterator[str]
) -> None:
    # more requests at once than a connection may have running (64): the server
    # stops reading until some finish, and answers every one
    alice = await register_raw(session, server, next(numbers))
    wire, _ = await login(session, server, alice)
    answers = await pipelined_pings(wire, 200)
    assert codes(answers) == ["pong"] * 200
    await wire.close()
