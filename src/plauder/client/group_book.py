"""What this device knows of its groups, kept current from answers, notices and state messages.

Each change writes its system line into the group's chat (once, by a stable
id) and yields the GroupChanged event to report. Callers run these inside a
store transaction with whatever else the change belongs to.
"""

import dataclasses

from plauder.client.events import GroupChanged, IdentityChanged
from plauder.client.group_rights import keep_earlier, refusal
from plauder.client.group_store import GroupRecord, GroupStore
from plauder.client.store import LocalStore
from plauder.protocol.content import GroupState
from plauder.protocol.frames import GroupInfo, GroupNotice, GroupSettings

SYSTEM = ""  # the sender of system lines in a group's history


class GroupBook:
    """Group records and their system lines."""

    def __init__(self, number: str, store: LocalStore, groups: GroupStore) -> None:
        self._number = number
        self._store = store
        self.groups = groups

    def record(self, gid: str) -> GroupRecord:
        """A group's record, or an empty one for a group not seen yet."""
        return self.groups.get(gid) or GroupRecord(gid=gid)

    def apply_info(self, info: GroupInfo) -> GroupRecord:
        """Take the server's view of members, roles and settings, if not older than ours.

        A member missing since the last view makes the next send start a new session.
        The last view still counts for what is queued before the notices of the
        change; a name a key share brought before the group was known stays only
        if its sender may edit the group.
        """
        gid = info.gid.hex()
        old = self.record(gid)
        if info.version < old.version:
            return old
        members: dict[str, str] = {m.number: m.role for m in info.members}
        record = dataclasses.replace(
            old,
            version=info.version,
            members=members,
            role=members.get(self._number, ""),
            settings=info.settings,
            requests=tuple(info.requests),
            link=info.link,
            rotate=old.rotate or bool(set(old.members) - set(members)),
            earlier=keep_earlier(old, info.version, info.settings),
        )
        record = _name_checked(record)
        self.groups.save(record)
        return record

    def apply_join(self, info: GroupInfo) -> GroupRecord:
        """Take the view a join by link answered with; what we knew of the name may be stale."""
        old = self.record(info.gid.hex())
        record = self.apply_info(info)
        if old.role and old.version >= info.version:  # a member all along: nothing missed
            return record
        record = dataclasses.replace(record, newcomer=True)
        self.groups.save(record)
        return record

    def left(self, gid: str) -> None:
        """This account left the group."""
        old = self.record(gid)
        members = {n: r for n, r in old.members.items() if n != self._number}
        self.groups.save(dataclasses.replace(old, members=members, role=""))

    def apply_notice(self, gid: str, notice: GroupNotice, ts: int) -> GroupChanged | None:
        """Apply a server notice (unless a newer view has it already); its event, once."""
        record = self.record(gid)
        key = f"v{notice.version}"
        if record.earlier is not None and notice.version >= record.earlier.until:
            record = dataclasses.replace(record, earlier=None)  # the stream caught up
        if notice.action == "requested":  # keeps the version: one line per request
            requests = dict.fromkeys(record.requests + tuple(notice.numbers))
            record = dataclasses.replace(record, requests=tuple(requests))
            key = f"request/{','.join(notice.numbers)}/{ts}"
        elif notice.version > record.version:  # else a newer view had it (and set `rotate`)
            record = _changed(record, notice)
            record = dataclasses.replace(
                record,
                role=record.members.get(self._number, ""),
                rotate=record.rotate or notice.action in ("removed", "left"),
            )
        if notice.action in ("added", "joined") and self._number in notice.numbers:
            record = dataclasses.replace(record, newcomer=True)  # the name comes passed on
        record = _name_checked(record)
        self.groups.save(record)
        return self._line(
            record,
            key,
            notice.action,
            notice.actor,
            tuple(notice.numbers),
            notice.version,
            ts,
        )

    def apply_state(self, gid: str, sender: str, state: GroupState, ts: int) -> GroupChanged | None:
        """A new name or description, if newer than the one we know; its event.

        A newcomer's first state may be one a member passed on (adding or
        welcoming it) rather than made: its line names nobody.
        """
        record = self.record(gid)
        if state.ts <= record.state_ts:
            if record.newcomer and state.ts == record.state_ts:  # told what we know: current
                self.groups.save(dataclasses.replace(record, newcomer=False))
            return None
        actor = "" if record.newcomer and sender != self._number else sender
        new = dataclasses.replace(
            record,
            name=state.name,
            description=state.description,
            state_ts=state.ts,
            newcomer=False,
        )
        self.groups.save(new)
        return self._state_line(record, new, f"state/{sender}/{state.id}", actor, ts)

    def adopt_state(
        self, gid: str, name: str, description: str, state_ts: int, unchecked_from: str = ""
    ) -> GroupChanged | None:
        """Name and description from a key share, for a group we know no (current) name of.

        A device without a name takes it silently; a newcomer's name from
        before it (re)entered is replaced by a newer one, with a line that
        names nobody. Other changes come only as state messages.
        `unchecked_from` is the sender of a share for a group whose members are
        not known yet: its name is dropped if the members, once known, show it
        may not edit.
        """
        record = self.record(gid)
        stale = record.newcomer and record.state_ts < state_ts
        if not (record.state_ts == 0 < state_ts or stale):
            return None
        new = dataclasses.replace(
            record, name=name, description=description, state_ts=state_ts, named_by=unchecked_from
        )
        self.groups.save(new)
        if record.state_ts == 0:
            return None
        ts = max(state_ts, self.groups.newest_ts(gid))  # learned now: after what the chat shows
        return self._state_line(record, new, f"state/share/{state_ts}", "", ts)

    def _state_line(
        self, old: GroupRecord, new: GroupRecord, key: str, actor: str, ts: int
    ) -> GroupChanged | None:
        """The line of a new name or description (`actor` "" when who made it is not known)."""
        action = ("renamed" if old.name else "named") if new.name != old.name else "described"
        return self._line(new, key, action, actor, (), 0, ts)

    def identity_changed(self, change: IdentityChanged, ts: int) -> list[GroupChanged]:
        """A line in every group the number is a member of: its safety number changed."""
        events = []
        for record in self.groups.all():
            if change.number in record.members and record.role:
                event = self._line(
                    record,
                    f"identity/{change.number}/{change.new_key}",
                    "safety_number",
                    change.number,
                    (change.number,),
                    0,
                    ts,
                )
                if event is not None:
                    events.append(event)
        return events

    def _line(
        self,
        record: GroupRecord,
        key: str,
        action: str,
        actor: str,
        numbers: tuple[str, ...],
        version: int,
        ts: int,
    ) -> GroupChanged | None:
        """Write a system line (once per key) and return its event, None if it was there."""
        text = line_text(action, actor, numbers, record)
        added = self._store.add_message(
            id=f"{record.gid}/{key}",
            chat=record.gid,
            outgoing=False,
            sender=SYSTEM,
            body=text,
            ts=ts,
            server_ts=ts,
            status="system",
        )
        if not added:
            return None
        return GroupChanged(record.gid, record.name, action, actor, numbers, version, text)


def _name_checked(record: GroupRecord) -> GroupRecord:
    """A record whose name from an unchecked key share is kept only if its sender may edit."""
    if not record.named_by or not record.members:
        return record
    if refusal(record, record.named_by, "edit"):
        return dataclasses.replace(record, name="", description="", state_ts=0, named_by="")
    return dataclasses.replace(record, named_by="")


def _changed(record: GroupRecord, notice: GroupNotice) -> GroupRecord:
    """A record with one notice's change applied."""
    members = dict(record.members)
    settings = record.settings
    requests = [n for n in record.requests if n not in notice.numbers]
    match notice.action:
        case "created":
            members[notice.actor] = "admin"
            for n in notice.numbers:
                members.setdefault(n, "member")
            settings = notice.settings or settings
        case "added" | "joined":
            for n in notice.numbers:
                members.setdefault(n, "member")
        case "removed" | "left":
            for n in notice.numbers or [notice.actor]:
                members.pop(n, None)
        case "promoted":
            members.update((n, "admin") for n in notice.numbers if n in members)
        case "demoted":
            members.update((n, "member") for n in notice.numbers if n in members)
        case "settings":
            settings = notice.settings or settings
    return dataclasses.replace(
        record,
        members=members,
        settings=settings,
        requests=tuple(requests),
        version=notice.version,
    )


def line_text(action: str, actor: str, numbers: tuple[str, ...], record: GroupRecord) -> str:
    """The system line shown in a group's chat for a change."""
    who = ", ".join(numbers)
    if not actor and action in ("named", "renamed"):  # passed on by a member: made by whom?
        return f"the group is named “{record.name}”"
    if not actor and action == "described":
        return f"the group's description is: {record.description}"
    match action:
        case "created":
            return f"{actor} created the group"
        case "added":
            return f"{actor} added {who}"
        case "removed":
            return f"{actor} removed {who}"
        case "left":
            return f"{who or actor} left"
        case "joined":
            return f"{who} joined"
        case "promoted":
            return f"{actor} made {who} admin"
        case "demoted":
            return f"{actor} made {who} a member (no longer admin)"
        case "settings":
            return f"{actor} changed the settings: {settings_text(record.settings)}"
        case "requested":
            return f"{who} asked to join"
        case "named":
            return f"{actor} named the group “{record.name}”"
        case "renamed":
            return f"{actor} renamed the group to “{record.name}”"
        case "described":
            return f"{actor} changed the description: {record.description}"
        case "safety_number":
            return f"the safety number with {actor} changed: compare it again"
    return f"{actor}: {action} {who}"


def settings_text(settings: GroupSettings) -> str:
    """Settings in a few words."""
    approval = "with approval" if settings.approval else "without approval"
    return f"send: {settings.send}, edit info: {settings.edit}, link joins {approval}"
