"""Who may do what in a group, in this device's view of it: the checks a receiver makes."""

from typing import Literal

from plauder.client.group_store import EarlierView, GroupRecord
from plauder.protocol.frames import GroupSettings

Act = Literal["send", "edit", "share"]  # a message, a new name or description, a session key


def refusal(record: GroupRecord, sender: str, act: Act) -> str:
    """Why this device refuses what a number sent to a group; "" if it may.

    A view that a server answer moved ahead of the stream counts together with
    the one before it, until the notices of the change arrived.
    """
    views = [(record.members, record.settings)]
    if record.earlier is not None:
        views.append((record.earlier.members, record.earlier.settings))
    roles = [(members[sender], settings) for members, settings in views if sender in members]
    if not roles:
        return f"{sender} is not a member of the group"
    if act == "share" or any(_allowed(role, settings, act) for role, settings in roles):
        return ""
    return f"only admins may {doing(act)} the group, and {sender} is not one"


def doing(act: Act) -> str:
    """What an act does to a group, in words: "send to", ..."""
    match act:
        case "send":
            return "send to"
        case "edit":
            return "change the name or description of"
    return "share keys in"


def keep_earlier(old: GroupRecord, until: int, settings: GroupSettings) -> EarlierView | None:
    """The view to count beside a newer one (of version `until`) from the server.

    The old view, with any kept before it; for a group seen for the first
    time, a blind one: who was a member before is unknown.
    """
    if not old.members:
        return EarlierView(until=until, members={}, settings=settings, blind=True)
    if until <= old.version:
        return old.earlier
    members = dict(old.members)
    kept = old.settings
    if old.earlier is not None:
        for number, role in old.earlier.members.items():
            members[number] = "admin" if "admin" in (role, members.get(number)) else role
        kept = _looser(kept, old.earlier.settings)
    blind = old.earlier is not None and old.earlier.blind
    return EarlierView(until=until, members=members, settings=kept, blind=blind)


def member_may(settings: GroupSettings, act: Act) -> bool:
    """Whether a member who is no admin may do this under these settings."""
    return _allowed("member", settings, act)


def _allowed(role: str, settings: GroupSettings, act: Act) -> bool:
    rule = settings.send if act == "send" else settings.edit
    return rule == "all" or role == "admin"


def _looser(a: GroupSettings, b: GroupSettings) -> GroupSettings:
    return GroupSettings(
        send="all" if "all" in (a.send, b.send) else "admins",
        edit="all" if "all" in (a.edit, b.edit) else "admins",
        approval=a.approval,
    )
