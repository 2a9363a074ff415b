"""Groups: check group requests, run them in the store, route their envelopes to members."""

import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from plauder.clock import Clock
from plauder.crypto.invite import MAX_CARD_BYTES
from plauder.protocol import codec
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    DeviceBundle,
    Envelope,
    GetGroup,
    GroupAdd,
    GroupAnswer,
    GroupCreate,
    GroupDeviceList,
    GroupDevices,
    GroupInfo,
    GroupInvite,
    GroupJoin,
    GroupLeave,
    GroupLink,
    GroupList,
    GroupRemove,
    GroupRequest,
    GroupSend,
    GroupSetRole,
    GroupSetSettings,
    JoinRequested,
    ListGroups,
    MemberDevices,
    Ok,
    Sent,
    ServerFrame,
)
from plauder.protocol.groups import GID_BYTES
from plauder.server.accounts import number_or_error
from plauder.server.config import Config
from plauder.server.errors import ServiceError
from plauder.server.messages import CMID_SIZES
from plauder.server.metrics import Metrics
from plauder.server.router import Router
from plauder.server.storage import Store
from plauder.server.storage import groups as ops
from plauder.server.storage.base import Sender

GROUP_FRAMES = GroupRequest.__args__
DIGEST_BYTES = 32


class Groups:
    """Serves the group frames for authenticated devices."""

    def __init__(
        self, store: Store, router: Router, clock: Clock, config: Config, metrics: Metrics
    ) -> None:
        self._store = store
        self._router = router
        self._clock = clock
        self._config = config
        self._metrics = metrics
        self._limits = ops.GroupLimits(config.max_group_members, config.max_groups_per_account)

    async def handle(
        self, frame: GroupRequest, actor: Sender, take_claims: Callable[[int], bool]
    ) -> tuple[ServerFrame, list[tuple[int, int]]]:
        """Answer one group frame; also returns (device pk, keys left) of pools drawn from.

        `take_claims(n)` spends n pre-key claims of the connection's budget.
        """
        now = self._clock.now_ms()
        if isinstance(frame, ListGroups):
            found = await self._store.run(ops.list_groups, actor.account_id, write=False)
            return GroupList(id=frame.id, groups=found), []
        if isinstance(frame, GroupJoin):
            return await self._join(frame, actor, now), []
        _check_gid(frame.gid)
        match frame:
            case GroupSend():
                return await self._send(frame, actor, now), []
            case GroupDevices():
                return await self._devices(frame, actor, take_claims)
            case GetGroup():
                view = await self._store.run(
                    ops.group_view, actor.account_id, frame.gid, write=False
                )
                return _info(frame.id, view), []
            case GroupCreate():
                numbers = self._numbers(frame.members, allow_empty=True, grows=True)
                result = await self._run(
                    ops.create, actor, frame.gid, numbers, frame.settings, self._limits, now
                )
            case GroupAdd():
                numbers = self._numbers(frame.numbers, grows=True)
                result = await self._run(ops.add, actor, frame.gid, numbers, self._limits, now)
            case GroupRemove():
                result = await self._run(
                    ops.remove, actor, frame.gid, self._numbers(frame.numbers), now
                )
            case GroupSetRole():
                numbers = self._numbers(frame.numbers)
                result = await self._run(ops.set_role, actor, frame.gid, numbers, frame.role, now)
            case GroupLeave():
                await self._run(ops.leave, actor, frame.gid, now)
                return Ok(id=frame.id), []
            case GroupSetSettings():
                result = await self._run(ops.set_settings, actor, frame.gid, frame.settings, now)
            case GroupInvite():
                if len(frame.card) > MAX_CARD_BYTES:
                    raise ServiceError(
                        ErrorCode.INVALID_REQUEST,
                        f"an invite card may have at most {MAX_CARD_BYTES} bytes",
                    )
                token = None if frame.revoke else secrets.token_urlsafe(16)
                await self._store.run(ops.set_invite, actor, frame.gid, token, frame.card)
                return GroupLink(id=frame.id, gid=frame.gid, token=token or ""), []
            case GroupAnswer():
                numbers = self._numbers(frame.numbers)
                result = await self._run(
                    ops.answer, actor, frame.gid, numbers, frame.approve, self._limits, now
                )
        assert result.view is not None
        return _info(frame.id, result.view), []

    async def _run(
        self, fn: Callable[..., Coroutine[Any, Any, ops.GroupResult]], *args: Any
    ) -> ops.GroupResult:
        """Run a change and route the notices it queued."""
        result = await self._store.run(fn, *args)
        await self.route(result.fanouts)
        return result

    async def _join(self, frame: GroupJoin, actor: Sender, now: int) -> ServerFrame:
        if not 0 < len(frame.token) <= 64:
            raise ServiceError(ErrorCode.INVALID_LINK, "this invite link is not valid")
        gid, card, result = await self._store.run(ops.join, actor, frame.token, self._limits, now)
        await self.route(result.fanouts)
        if result.view is None:
            return JoinRequested(id=frame.id, gid=gid, card=card)
        return _info(frame.id, result.view, card)

    async def _send(self, frame: GroupSend, actor: Sender, now: int) -> Sent:
        if len(frame.cmid) not in CMID_SIZES:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "cmid must be 8 to 32 bytes")
        if not frame.body:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "a group message needs a body")
        if len(frame.body) > self._config.max_body_bytes:
            raise ServiceError(
                ErrorCode.ENVELOPE_TOO_LARGE,
                f"a group message body may have at most {self._config.max_body_bytes} bytes",
            )
        if len(frame.digest) != DIGEST_BYTES:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "digest must be 32 bytes")
        result = await self._store.run(
            ops.send, actor, frame.gid, frame.cmid, frame.body, frame.digest, frame.kind, now
        )
        if not result.duplicate:
            self._metrics.messages_stored += 1
        # routed before answering, as for `send`: each feed gets its envelopes in order; a
        # repeat routes what is still queued again (its first node may have died before)
        await self.route(result.fanouts, count=not result.duplicate)
        return Sent(id=frame.id, ts=result.ts, duplicate=result.duplicate)

    async def _devices(
        self, frame: GroupDevices, actor: Sender, take_claims: Callable[[int], bool]
    ) -> tuple[ServerFrame, list[tuple[int, int]]]:
        if len(frame.claim) > 2 * self._config.max_group_members:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "too many devices to claim at once")
        if frame.claim and not take_claims(len(frame.claim)):
            raise ServiceError(ErrorCode.RATE_LIMITED, "too many pre-key claims: wait")
        listing = await self._store.run(
            ops.member_devices, actor, frame.gid, list(frame.claim), write=bool(frame.claim)
        )
        members = [
            MemberDevices(
                number=m.number,
                account_key=m.account_key,
                devices=[DeviceBundle(device=keys, prekey=pre) for keys, pre in m.devices],
            )
            for m in listing.members
        ]
        answer = GroupDeviceList(
            id=frame.id,
            gid=frame.gid,
            version=listing.version,
            digest=listing.digest,
            members=members,
        )
        low = [(pk, n) for pk, n in listing.drawn if n < self._config.keys_low_threshold]
        return answer, low

    async def route(self, fanouts: list[ops.Fanout], count: bool = True) -> None:
        """Offer each stored group envelope to its device's connection (counted if new)."""
        deliver = self._router.deliver
        for f in fanouts:
            frame = codec.envelope_encoder(
                Envelope(
                    eid=0,
                    sender=f.sender,
                    sender_device=f.sender_device,
                    type=f.type,
                    body=f.body,
                    ts=f.ts,
                    group=f.gid,
                )
            )
            for device_pk, eid in f.targets:
                await deliver(device_pk, eid, frame(eid))
            if count:
                self._metrics.group_envelopes_queued += len(f.targets)
        self._router.flush()

    def _numbers(
        self, numbers: list[str], allow_empty: bool = False, grows: bool = False
    ) -> list[str]:
        if not numbers and not allow_empty:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "name at least one number")
        if len(numbers) > self._config.max_group_members:
            raise ServiceError(
                ErrorCode.GROUP_FULL if grows else ErrorCode.INVALID_REQUEST,
                f"a group may have at most {self._config.max_group_members} members",
            )
        return [number_or_error(n) for n in numbers]


def _check_gid(gid: bytes) -> None:
    if len(gid) != GID_BYTES:
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"a group id has {GID_BYTES} bytes")


def _info(request_id: int, view: ops.GroupView, card: bytes = b"") -> GroupInfo:
    return GroupInfo(
        id=request_id,
        gid=view.gid,
        version=view.version,
        members=view.members,
        settings=view.settings,
        requests=view.requests,
        link=view.link,
        card=card,
    )
