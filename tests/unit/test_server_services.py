"""Server services on a real SQLite store, with time under the test's control.

A ManualClock moves only when told to, so expiry, retention and rate limits are
shown without waiting for them.
"""

import io
import re
import secrets

import pytest

from plauder.clock import ManualClock
from plauder.crypto import AccountKey, Device
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceKeys, GroupSettings, OutEnvelope, RequestCode, Verify
from plauder.protocol.groups import GROUP_MESSAGE, GROUP_NOTICE
from plauder.server.accounts import Accounts
from plauder.server.config import Config
from plauder.server.errors import ServiceError
from plauder.server.ratelimit import KeyedLimiter, TokenBucket
from plauder.server.sms import ConsoleSender
from plauder.server.storage import groups
from plauder.server.storage.base import CodeCheck, Sender, Store
from plauder.server.storage.queries import Tx

ALICE = "+4915100000001"
BOB = "+4915100000002"
DAY_MS = 86_400_000
TTL_MS = Config().envelope_ttl_days * DAY_MS  # 30 days


@pytest.fixture
def clock() -> ManualClock:
    """Time that moves only when the test says so."""
    return ManualClock()


class Codes:
    """Accounts on the store, with codes printed to a buffer instead of a console."""

    def __init__(self, store: Store, clock: ManualClock, **options: int) -> None:
        self.out = io.StringIO()
        self.config = Config(**options)  # type: ignore[arg-type]
        self.accounts = Accounts(
            store, ConsoleSender(self.out), clock, self.config, secrets.token_bytes(32)
        )

    async def request(self, number: str) -> str:
        """Request a code and return the code that was sent."""
        await self.accounts.request_code(RequestCode(id=1, number=number))
        return re.findall(rf"code for {re.escape(number)}: (\d{{6}})", self.out.getvalue())[-1]

    async def verify(self, number: str, code: str) -> int:
        """Register with a code; returns the device id."""
        account, device = AccountKey.generate(), Device.create()
        frame = Verify(
            id=2,
            number=number,
            code=code,
            account_key=account.public_key,
            device=account.sign_device(device.identity_key, device.signing_key, 1),
            one_time_keys=device.new_one_time_keys(2),
        )
        return (await self.accounts.verify(frame)).device_id

    async def refused(self, number: str, code: str) -> str:
        """Verify with a code that must be refused; returns the error code."""
        with pytest.raises(ServiceError) as info:
            await self.verify(number, code)
        return info.value.code


def wrong(code: str) -> str:
    """A six-digit code that is not `code`."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- verification codes ---------------------------------------------------------------


async def test_code_expires_after_code_ttl(store: Store, clock: ManualClock) -> None:
    codes = Codes(store, clock, code_ttl_seconds=600)
    code = await codes.request(ALICE)
    clock.advance(599)
    assert await codes.refused(ALICE, wrong(code)) == ErrorCode.INVALID_CODE  # still alive
    clock.advance(1)
    assert await codes.refused(ALICE, code) == ErrorCode.CODE_EXPIRED
    assert await codes.refused(ALICE, code) == ErrorCode.INVALID_CODE  # gone for good

    code = await codes.request(ALICE)  # a new code works
    assert await codes.verify(ALICE, code) == 1


async def test_store_reports_an_expired_code(store: Store) -> None:
    now = 1_700_000_000_000
    await store.save_code(ALICE, b"right", now + 600_000)
    assert await store.check_code(ALICE, b"wrong", now + 599_999, 5) is CodeCheck.WRONG
    assert await store.check_code(ALICE, b"right", now + 600_000, 5) is CodeCheck.EXPIRED
    assert await store.check_code(ALICE, b"right", now + 600_001, 5) is CodeCheck.NO_CODE


async def test_five_wrong_attempts_lock_the_code(store: Store, clock: ManualClock) -> None:
    codes = Codes(store, clock)
    assert codes.config.code_attempts == 5
    code = await codes.request(ALICE)
    answers = [await codes.refused(ALICE, wrong(code)) for _ in range(5)]
    assert answers == [ErrorCode.INVALID_CODE] * 4 + [ErrorCode.TOO_MANY_ATTEMPTS]
    assert await codes.refused(ALICE, code) == ErrorCode.TOO_MANY_ATTEMPTS  # even the right one

    # a lock is per number, and a new code starts over
    other = await codes.request(BOB)
    assert await codes.verify(BOB, other) == 1
    code = await codes.request(ALICE)
    assert await codes.verify(ALICE, code) == 1


async def test_store_counts_attempts(store: Store) -> None:
    await store.save_code(ALICE, b"right", 10_000)
    checks = [await store.check_code(ALICE, b"wrong", 0, 5) for _ in range(5)]
    assert checks == [CodeCheck.WRONG] * 4 + [CodeCheck.TOO_MANY_ATTEMPTS]
    assert await store.check_code(ALICE, b"right", 0, 5) is CodeCheck.TOO_MANY_ATTEMPTS
    await store.save_code(ALICE, b"again", 10_000)  # a new code resets the count
    assert await store.check_code(ALICE, b"again", 0, 5) is CodeCheck.OK
    assert await store.check_code(ALICE, b"again", 0, 5) is CodeCheck.NO_CODE  # consumed


async def test_codes_per_number_refill_over_the_hour(store: Store, clock: ManualClock) -> None:
    codes = Codes(store, clock, codes_per_number_per_hour=2)
    await codes.request(ALICE)
    await codes.request(ALICE)
    with pytest.raises(ServiceError) as info:
        await codes.request(ALICE)
    assert info.value.code == ErrorCode.RATE_LIMITED
    await codes.request(BOB)  # another number is not affected

    clock.advance(1800)  # half an hour: one of two codes per hour is back
    await codes.request(ALICE)
    with pytest.raises(ServiceError):
        await codes.request(ALICE)


async def test_invalid_number_gets_no_code(store: Store, clock: ManualClock) -> None:
    codes = Codes(store, clock)
    with pytest.raises(ServiceError) as info:
        await codes.accounts.request_code(RequestCode(id=1, number="12345"))
    assert info.value.code == ErrorCode.INVALID_NUMBER
    assert codes.out.getvalue() == ""


# --- messages -----------------------------------------------------------------------------


async def register(store: Store, number: str) -> Sender:
    """An account with one device, straight in the store."""
    keys = DeviceKeys(device_id=1, identity_key="ik", signing_key="sk", signature="sig")
    reg = await store.register(number, "account-key-" + number, keys, [], None, 0)
    return Sender(reg.account_id, number, reg.device_pk, reg.device_id)


def to(recipient: Sender, body: bytes) -> list[OutEnvelope]:
    """One envelope for the recipient's device."""
    return [OutEnvelope(to=recipient.number, device_id=recipient.device_id, type=1, body=body)]


async def queued_bodies(store: Store, device: Sender) -> list[bytes]:
    """The bodies queued for a device, oldest first."""
    return [e.body for e in await store.fetch_queued(device.device_pk, 0, 1000)]


async def test_sweep_deletes_envelopes_older_than_the_ttl(store: Store) -> None:
    alice, bob = await register(store, ALICE), await register(store, BOB)
    now = 1_800_000_000_000
    ages = {
        b"a year old": 365 * DAY_MS,
        b"31 days old": 31 * DAY_MS,
        b"just over 30 days old": TTL_MS + 1,
        b"just under 30 days old": TTL_MS - 1,
        b"a day old": DAY_MS,
        b"new": 0,
    }
    cmids = {}
    for body, age in ages.items():
        cmids[body] = secrets.token_bytes(16)
        await store.store_message(alice, cmids[body], to(bob, body), now - age)

    assert await store.sweep(now, TTL_MS, TTL_MS) == 3
    assert await queued_bodies(store, bob) == [b"just under 30 days old", b"a day old", b"new"]
    assert await store.sweep(now, TTL_MS, TTL_MS) == 0  # nothing more to do

    # a young message is still remembered: its retry is not stored again
    retry = await store.store_message(alice, cmids[b"a day old"], to(bob, b"a day old"), now)
    assert retry.duplicate


async def test_dedup_records_can_expire_before_the_envelopes(store: Store) -> None:
    alice, bob = await register(store, ALICE), await register(store, BOB)
    now = 1_800_000_000_000
    old, young = secrets.token_bytes(16), secrets.token_bytes(16)
    await store.store_message(alice, old, to(bob, b"three days old"), now - 3 * DAY_MS)
    await store.store_message(alice, young, to(bob, b"an hour old"), now - 3_600_000)

    assert await store.sweep(now, TTL_MS, 2 * DAY_MS) == 0  # both envelopes stay queued
    assert await queued_bodies(store, bob) == [b"three days old", b"an hour old"]
    # the younger cmid is still remembered, the older one forgotten
    assert (await store.store_message(alice, young, to(bob, b"an hour old"), now)).duplicate
    assert not (await store.store_message(alice, old, to(bob, b"three days old"), now)).duplicate


async def test_sweep_deletes_expired_codes(store: Store) -> None:
    await store.save_code(ALICE, b"old", 1_000)
    await store.save_code(BOB, b"live", 5_000)
    await store.sweep(2_000, TTL_MS, TTL_MS)
    assert await store.check_code(ALICE, b"old", 0, 5) is CodeCheck.NO_CODE
    assert await store.check_code(BOB, b"live", 0, 5) is CodeCheck.OK


async def test_same_cmid_twice_is_stored_once(store: Store) -> None:
    alice, bob = await register(store, ALICE), await register(store, BOB)
    cmid = secrets.token_bytes(16)
    first = await store.store_message(alice, cmid, to(bob, b"hello"), 1_000)
    again = await store.store_message(alice, cmid, to(bob, b"hello"), 2_000)

    assert (first.duplicate, len(first.deliveries)) == (False, 1)
    # the repeat routes what is still queued again: the node that stored the send
    # may have died before it routed it
    assert (again.duplicate, again.deliveries) == (True, first.deliveries)
    assert again.ts == first.ts == 1_000  # the time of the stored message
    assert await queued_bodies(store, bob) == [b"hello"]

    # still a duplicate after bob acknowledged it: the retry is not delivered again
    (queued,) = await store.fetch_queued(bob.device_pk, 0, 10)
    assert await store.ack(bob.device_pk, [queued.eid]) == 1
    late = await store.store_message(alice, cmid, to(bob, b"hello"), 3_000)
    assert (late.duplicate, late.deliveries) == (True, ())
    assert await queued_bodies(store, bob) == []


async def test_a_repeated_send_routes_only_its_own_queued_envelopes(store: Store) -> None:
    alice, bob = await register(store, ALICE), await register(store, BOB)
    carol = await register(store, "+4915100000003")
    cmid = secrets.token_bytes(16)
    first = await store.store_message(alice, cmid, [*to(bob, b"b"), *to(carol, b"c")], 1_000)
    await store.store_message(alice, secrets.token_bytes(16), to(bob, b"later"), 1_001)
    await store.store_message(bob, secrets.token_bytes(16), to(carol, b"bob's"), 1_000)
    await store.ack(
        carol.device_pk, [d.eid for d in first.deliveries if d.device_pk == carol.device_pk]
    )

    again = await store.store_message(alice, cmid, [*to(bob, b"b"), *to(carol, b"c")], 2_000)
    assert again.duplicate
    assert again.deliveries == tuple(d for d in first.deliveries if d.device_pk == bob.device_pk)


async def test_cmids_are_per_sending_device(store: Store) -> None:
    alice, bob = await register(store, ALICE), await register(store, BOB)
    cmid = secrets.token_bytes(16)
    await store.store_message(alice, cmid, to(bob, b"from alice"), 1_000)
    from_bob = await store.store_message(bob, cmid, to(alice, b"from bob"), 1_000)
    assert not from_bob.duplicate
    assert await queued_bodies(store, alice) == [b"from bob"]


async def test_a_group_message_is_kept_until_its_last_member_acked_it(store: Store) -> None:
    alice, bob, carol = [await register(store, n) for n in (ALICE, BOB, "+4915100000003")]
    gid = secrets.token_bytes(16)
    limits = groups.GroupLimits(max_members=8, max_groups=8)
    now = 1_800_000_000_000
    await store.run(groups.create, alice, gid, [BOB, carol.number], GroupSettings(), limits, now)
    listing = await store.run(groups.member_devices, alice, gid, [])
    sent = await store.run(
        groups.send, alice, gid, secrets.token_bytes(16), b"megolm", listing.digest, "message", now
    )
    assert [len(f.targets) for f in sent.fanouts] == [2]

    later = now + 10 * 60_000
    for member in (bob, carol):
        queued = await store.fetch_queued(member.device_pk, 0, 10)
        assert [(e.type, e.group) for e in queued] == [(GROUP_NOTICE, gid), (GROUP_MESSAGE, gid)]
        assert queued[1].body == b"megolm" and queued[1].sender == ALICE
        await store.ack(member.device_pk, [e.eid for e in queued])
        await store.sweep(later, TTL_MS, TTL_MS)
        left = await store.run(_bodies)
        # the body stays while carol has not acked; it goes with the last reference
        assert (b"megolm" in left) is (member is bob)


async def test_a_repeated_group_send_routes_what_is_still_queued(store: Store) -> None:
    alice, bob, carol = [await register(store, n) for n in (ALICE, BOB, "+4915100000003")]
    gid = secrets.token_bytes(16)
    limits = groups.GroupLimits(max_members=8, max_groups=8)
    now = 1_800_000_000_000
    await store.run(groups.create, alice, gid, [BOB, carol.number], GroupSettings(), limits, now)
    listing = await store.run(groups.member_devices, alice, gid, [])
    cmid = secrets.token_bytes(16)
    sent = await store.run(
        groups.send, alice, gid, cmid, b"megolm", listing.digest, "message", now + 1
    )
    (fanout,) = sent.fanouts
    await store.ack(bob.device_pk, [eid for pk, eid in fanout.targets if pk == bob.device_pk])

    again = await store.run(
        groups.send, alice, gid, cmid, b"megolm", listing.digest, "message", now + 2
    )
    assert (again.duplicate, again.ts) == (True, now + 1)
    # carol's envelope is routed again (the first node may have died before routing
    # it); bob's is gone
    assert again.fanouts == [
        groups.Fanout(
            gid,
            ALICE,
            alice.device_id,
            fanout.type,
            b"megolm",
            now + 1,
            [t for t in fanout.targets if t[0] == carol.device_pk],
        )
    ]


async def _bodies(tx: Tx) -> list[bytes]:
    """Every stored group message body."""
    return [bytes(r[0]) for r in await tx.fetchall("SELECT body FROM group_messages")]


# --- rate limits ------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate(clock: ManualClock) -> None:
    bucket = TokenBucket(clock, rate=5, burst=5)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.1)  # half a token
    assert not bucket.take()
    clock.advance(0.1)  # a whole one
    assert bucket.take()
    assert not bucket.take()


def test_token_bucket_never_holds_more_than_the_burst(clock: ManualClock) -> None:
    bucket = TokenBucket(clock, rate=5, burst=3)
    assert bucket.full()
    bucket.take()
    assert not bucket.full()
    clock.advance(3600)  # a long idle time
    assert bucket.full()
    assert [bucket.take() for _ in range(4)] == [True] * 3 + [False]


def test_token_bucket_cost(clock: ManualClock) -> None:
    bucket = TokenBucket(clock, rate=1, burst=10)
    assert bucket.take(cost=7)
    assert not bucket.take(cost=4)  # refused whole: nothing spent
    assert bucket.take(cost=3)
    assert not bucket.take()


async def test_keyed_limiter_keeps_keys_apart(clock: ManualClock) -> None:
    limiter = KeyedLimiter(clock, rate=1 / 3600, burst=2)
    assert [await limiter.take(ALICE) for _ in range(3)] == [True, True, False]
    assert await limiter.take(BOB)  # another key has its own bucket
    clock.advance(3600)
    assert await limiter.take(ALICE)
    assert not await limiter.take(ALICE)


async def test_keyed_limiter_does_not_forget_busy_keys(clock: ManualClock) -> None:
    # many fresh keys must not push an exhausted key out, or an attacker could
    # reset their own limit by asking for other numbers
    limiter = KeyedLimiter(clock, rate=1 / 3600, burst=1, max_keys=3)
    assert await limiter.take(ALICE)
    assert not await limiter.take(ALICE)
    for i in range(10):
        assert await limiter.take(f"+49151000001{i:02d}")
    assert not await limiter.take(ALICE)
