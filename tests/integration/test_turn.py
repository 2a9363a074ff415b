"""TURN credentials: the server hands out what a real coturn accepts, and nothing more.

Every test that needs a relay starts its own coturn (`Coturn` in tests/services.py)
and proves a credential the way a call would use it: by allocating a relay
address with aioice's TURN client (what aiortc uses). Most tests run `plauder
serve` as a process; the one that moves the clock runs a `Server` in the test's
own loop with a `ManualClock`.
"""

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from plauder.clock import ManualClock
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import Error, GetTurn, Ping, Pong, Turn
from plauder.server.app import Server
from tests.conftest import ServerProcess
from tests.integration.test_bad_input import Wire, rid
from tests.integration.test_media_server import User, in_process, local_user, user
from tests.services import Coturn

ServerFactory = Callable[..., ServerProcess]
NUMBERS = [f"+49151000300{i:02d}" for i in range(20)]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the WebSockets."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def numbers() -> Iterator[str]:
    """Phone numbers no other test of this module uses."""
    return iter(NUMBERS)


class _Relayed(asyncio.DatagramProtocol):
    """The receiving side of a relayed endpoint: notes when the allocation is gone."""

    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def allocate(coturn: Coturn, username: str, password: str) -> tuple[str, int]:
    """Allocate a relay address with these credentials, then release it; the address."""
    async with asyncio.timeout(10):
        transport, protocol = await create_turn_endpoint(
            _Relayed, coturn.address, username, password
        )
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        transport.close()  # deletes the allocation on the relay
        await protocol.lost
    return relayed


async def refusal(coturn: Coturn, username: str, password: str) -> int | None:
    """The STUN error code with which the relay refuses an allocation."""
    with pytest.raises(stun.TransactionFailed) as failed:
        await allocate(coturn, username, password)
    return failed.value.response.error_code


async def granted(coturn: Coturn, count: int) -> list[str]:
    """The usernames of coturn's allocations, once it has logged `count` of them."""
    async with asyncio.timeout(5):
        while len(coturn.allocations()) < count:
            await asyncio.sleep(0.02)
    return coturn.allocations()


async def turn(someone: User) -> Turn:
    """Ask for TURN credentials; the answer must be a `turn` frame."""
    answer = await someone.wire.request(GetTurn(id=rid()))
    assert isinstance(answer, Turn), answer
    return answer


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> int:
    """One counter from /metrics."""
    async with session.get(f"{url}/metrics") as r:
        found = re.search(rf"^plauder_{name} (\d+)$", await r.text(), re.MULTILINE)
    assert found, name
    return int(found[1])


@pytest.fixture
def relayed(server_factory: ServerFactory, coturn: Coturn) -> ServerProcess:
    """A server handing out credentials for the test's coturn."""
    return server_factory(**coturn.server_options())


# --- credentials that work -------------------------------------------------------------


async def test_credentials_from_the_server_allocate_a_relay_on_coturn(
    session: aiohttp.ClientSession, relayed: ServerProcess, coturn: Coturn, numbers: Iterator[str]
) -> None:
    alice = await user(session, relayed, numbers)
    before = int(time.time())
    answer = await turn(alice)

    assert answer.urls == coturn.urls
    expiry, _, account = answer.username.partition(":")
    assert before + 3600 <= int(expiry) <= int(time.time()) + 3600  # an hour by default
    assert answer.expires == int(expiry) * 1000
    [(account_id,)] = relayed.sql("SELECT id FROM accounts WHERE number = ?", alice.account.number)
    assert account == str(account_id)
    assert len(base64.b64decode(answer.password, validate=True)) == 20  # an HMAC-SHA1

    host, port = await allocate(coturn, answer.username, answer.password)
    assert host == "127.0.0.1"
    assert coturn.min_port <= port <= coturn.max_port
    assert await granted(coturn, 1) == [answer.username]
    assert await metric(session, relayed.url, "turn_credentials_issued") == 1


async def test_the_username_holds_no_phone_number(
    session: aiohttp.ClientSession, relayed: ServerProcess, coturn: Coturn, numbers: Iterator[str]
) -> None:
    for _ in range(3):
        someone = await user(session, relayed, numbers)
        answer = await turn(someone)
        assert re.fullmatch(r"\d{10}:\d{1,6}", answer.username), answer.username
        national = someone.account.number[-9:]
        for part in (someone.account.number, someone.account.number[1:], national):
            assert part not in answer.username
            assert part not in coturn.log_text()
        await allocate(coturn, answer.username, answer.password)
    assert len(await granted(coturn, 3)) == 3


async def test_two_accounts_get_different_credentials_each_accepted(
    session: aiohttp.ClientSession, relayed: ServerProcess, coturn: Coturn, numbers: Iterator[str]
) -> None:
    alice, bob = await user(session, relayed, numbers), await user(session, relayed, numbers)
    a, b = await turn(alice), await turn(bob)
    assert a.username.split(":")[1] != b.username.split(":")[1]
    assert a.password != b.password
    relays = {await allocate(coturn, t.username, t.password) for t in (a, b)}
    assert len(relays) == 2


# --- credentials that do not ----------------------------------------------------------


async def test_a_server_with_another_secret_gets_401_from_coturn(
    session: aiohttp.ClientSession,
    server_factory: ServerFactory,
    coturn: Coturn,
    numbers: Iterator[str],
) -> None:
    server = server_factory(**coturn.server_options(secret="not-" + coturn.secret))
    answer = await turn(await user(session, server, numbers))
    assert answer.urls == coturn.urls  # the server cannot know its secret is wrong
    assert await refusal(coturn, answer.username, answer.password) == 401
    assert coturn.allocations() == []


async def test_an_edited_credential_gets_401_from_coturn(
    session: aiohttp.ClientSession, relayed: ServerProcess, coturn: Coturn, numbers: Iterator[str]
) -> None:
    answer = await turn(await user(session, relayed, numbers))
    expiry, _, account = answer.username.partition(":")
    later = f"{int(expiry) + 86_400}:{account}"  # a longer life, with the same password
    assert await refusal(coturn, later, answer.password) == 401
    other = f"{expiry}:{int(account) + 1}"  # someone else's account
    assert await refusal(coturn, other, answer.password) == 401
    await allocate(coturn, answer.username, answer.password)  # the real one still works


@pytest.fixture
async def past(
    tmp_path: Path, coturn: Coturn, backend_options: Callable[[str], dict[str, str]]
) -> AsyncIterator[tuple[Server, ManualClock]]:
    """A server in the test's loop whose clock the test moves, sharing coturn's secret."""
    clock = ManualClock(now_ms=int(time.time() * 1000) - 61_000)  # 61 s ago
    options = {"turn_ttl_seconds": "60", **coturn.server_options(), **backend_options("past")}
    async with in_process(tmp_path / "past", clock, options) as server:
        yield server, clock


async def test_expired_credentials_get_401_from_coturn(
    session: aiohttp.ClientSession, past: tuple[Server, ManualClock], coturn: Coturn
) -> None:
    server, clock = past
    alice = await local_user(session, server, NUMBERS[-1])
    old = await turn(alice)  # issued 61 s ago, for 60 s: expired by coturn's clock
    assert old.expires == clock.now_ms() // 1000 * 1000 + 60_000
    assert int(old.username.split(":")[0]) < time.time()
    assert await refusal(coturn, old.username, old.password) == 401

    clock.advance(61)
    fresh = await turn(alice)
    await allocate(coturn, fresh.username, fresh.password)
    assert await granted(coturn, 1) == [fresh.username]
    await alice.wire.close()


# --- without a relay, and the limits ---------------------------------------------------


async def test_a_server_without_turn_answers_no_urls(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    answer = await turn(await user(session, server, numbers))
    assert answer.urls == []
    assert (answer.username, answer.password, answer.expires) == ("", "", 0)
    assert await metric(session, server.url, "turn_credentials_issued") == 0


async def test_get_turn_needs_authentication(
    session: aiohttp.ClientSession, relayed: ServerProcess
) -> None:
    wire = await Wire.open(session, relayed)
    try:
        await wire.hello()
        assert await wire.error(GetTurn(id=rid())) == ErrorCode.UNAUTHENTICATED
    finally:
        await wire.close()


async def test_too_many_requests_are_rate_limited_and_the_connection_carries_on(
    session: aiohttp.ClientSession,
    server_factory: ServerFactory,
    coturn: Coturn,
    numbers: Iterator[str],
) -> None:
    server = server_factory(turn_requests_per_minute="5", **coturn.server_options())
    alice = await user(session, server, numbers)
    for _ in range(5):
        await turn(alice)
    answer = await alice.wire.request(GetTurn(id=rid()))
    assert isinstance(answer, Error) and answer.code == ErrorCode.RATE_LIMITED, answer
    assert isinstance(await alice.wire.request(Ping(id=rid())), Pong)
    assert await metric(session, server.url, "turn_credentials_issued") == 5
    # the limit is per connection: a new one gets credentials at once
    again = await user(session, server, numbers)
    await turn(again)


async def test_the_default_limit_is_30_a_minute(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    alice = await user(session, server, numbers)
    answers = [await alice.wire.request(GetTurn(id=rid())) for _ in range(31)]
    assert sum(isinstance(a, Turn) for a in answers) == 30
    assert [a.code for a in answers if isinstance(a, Error)] == [ErrorCode.RATE_LIMITED]


# --- configuration refused at start ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"turn_urls": "turn:127.0.0.1:3478"}, "turn_secret"),
        ({"turn_urls": "stun:127.0.0.1:3478", "turn_secret": "x" * 32}, "turn_urls"),
        ({"turn_urls": "turn:127.0.0.1:3478", "turn_secret_file": "/nonexistent"}, "turn_secret"),
    ],  # every other refusal: tests/unit/test_turn_credentials.py
)
def test_bad_turn_options_stop_the_server_with_a_clear_message(
    tmp_path: Path, options: dict[str, str], named: str
) -> None:
    srv = ServerProcess(tmp_path / "server", options)
    with pytest.raises(RuntimeError, match="server exited") as failed:
        srv.start()
    assert named in str(failed.value)
    assert srv.proc is not None and srv.proc.returncode != 0
    assert not srv.data.exists()  # nothing was created


async def test_the_secret_may_come_from_a_file(
    session: aiohttp.ClientSession,
    tmp_path: Path,
    server_factory: ServerFactory,
    coturn: Coturn,
    numbers: Iterator[str],
) -> None:
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text(coturn.secret + "\n")  # as `echo` or an editor leaves it
    server = server_factory(turn_urls=coturn.url, turn_secret_file=str(secret_file))
    answer = await turn(await user(session, server, numbers))
    assert answer.urls == [coturn.url]
    await allocate(coturn, answer.username, answer.password)
    assert coturn.secret not in server.log_text()
