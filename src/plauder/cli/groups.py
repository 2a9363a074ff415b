"""Group commands: `plauder group ACTION ...` and `plauder groups`."""

import argparse
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from plauder.cli.output import Printer, when
from plauder.client import Client, Group, GroupSettings, ServerError, UnknownGroup
from plauder.client.group_book import settings_text

Action = Callable[[Client, argparse.Namespace, Printer], Awaitable[None]]


def add_parsers(sub: Any, common: argparse.ArgumentParser, client: Callable[..., Client]) -> None:
    """Register `group` with its actions and `groups`."""
    p = sub.add_parser("groups", parents=[common], help="list your groups with unread counts")
    p.set_defaults(run=functools.partial(_run, client, _list, True), is_async=True)

    p = sub.add_parser(
        "group",
        parents=[common],
        help="create and manage end-to-end encrypted groups",
        description="Groups are named by their name or id (`plauder groups` lists both). "
        "Names and descriptions travel encrypted: the server never sees them.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str, run: Action, group: bool = True) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=text)
        if group:
            a.add_argument("group", help="the group's name or id")
        online = name != "history"  # the rest asks the server
        a.set_defaults(run=functools.partial(_run, client, run, online), is_async=True)
        return a

    a = action("create", "create a group (prints its id)", _create, group=False)
    a.add_argument("name")
    a.add_argument("--member", action="append", default=[], metavar="NUMBER")
    a.add_argument("--description", default="")
    _settings_options(a)
    for name, text in (
        ("add", "add members (admins)"),
        ("remove", "remove members (admins)"),
        ("promote", "make members admins (admins)"),
        ("demote", "make admins members (admins)"),
        ("approve", "let in numbers that asked to join by link (admins)"),
        ("deny", "refuse numbers that asked to join by link (admins)"),
    ):
        action(name, text, _members).add_argument("numbers", nargs="+", metavar="NUMBER")
    action("rename", "give the group a new name", _rename).add_argument("name")
    action("describe", "give the group a new description", _describe).add_argument("text")
    a = action("info", "members, admins, settings and who read your messages", _info)
    a.add_argument("--message", metavar="ID", help="one message's status per member")
    a = action("invite-link", "create a new invite link (admins)", _invite)
    a.add_argument("--revoke", action="store_true", help="stop the link from working")
    action("join", "join a group by invite link", _join, group=False).add_argument("link")
    action("leave", "leave the group", _leave)
    a = action("settings", "who may send and edit, link approval (admins)", _settings)
    _settings_options(a)
    a = action("history", "show the group's history from this device", _history)
    a.add_argument("-n", "--limit", type=int, default=50)
    action("mark-read", "mark the group read and send read receipts", _mark_read)


def _settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--send", choices=["all", "admins"], help="who may send messages")
    p.add_argument("--edit", choices=["all", "admins"], help="who may change name and description")
    p.add_argument("--approval", choices=["on", "off"], help="link joins wait for an admin")


def _settings_from(args: argparse.Namespace, base: GroupSettings) -> GroupSettings:
    return GroupSettings(
        send=args.send or base.send,
        edit=args.edit or base.edit,
        approval=base.approval if args.approval is None else args.approval == "on",
    )


async def _run(
    client_for: Callable[..., Client], action: Action, online: bool, args: argparse.Namespace
) -> int:
    client = client_for(args)
    try:
        if online:
            await client.start(receive=False)
        await action(client, args, Printer(args.json))
    finally:
        await client.close()
    return 0


async def find(client: Client, name_or_gid: str) -> Group:
    """A group by name or id, asking the server for our groups if this device knows none such."""
    try:
        return client.groups.get(name_or_gid)
    except UnknownGroup:
        if client.server is None:
            raise
        await client.groups.refresh()
        try:
            return client.groups.get(name_or_gid)
        except UnknownGroup as exc:
            # names travel end-to-end encrypted: the server cannot tell this device a new one
            raise UnknownGroup(
                f"{exc}: if it was renamed, run `plauder receive` first, or use the group's id"
            ) from exc


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def label(group: Group) -> str:
    """A group as named in a sentence: its name, or its id while it has none."""
    return group.name or group.gid


def _title(group: Group) -> str:
    return f"{group.name or '(no name yet)'} ({group.gid})"


async def _create(client: Client, args: argparse.Namespace, out: Printer) -> None:
    settings = _settings_from(args, GroupSettings())
    group = await client.groups.create(args.name, args.member, args.description, settings)
    out.emit("group_created", group.gid, group=group.gid, name=group.name, members=group.members)


async def _list(client: Client, args: argparse.Namespace, out: Printer) -> None:
    listed = await client.groups.refresh()
    if not listed:
        out.nothing("no groups yet")
    for group in listed:
        unread = f"  {group.unread} unread" if group.unread else ""
        out.emit(
            "group",
            f"{_title(group)}  {_count(len(group.members), 'member')}, you: {group.role}{unread}",
            group=group.gid,
            name=group.name,
            members=len(group.members),
            role=group.role,
            unread=group.unread,
        )


async def _members(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    change = {
        "add": group.add,
        "remove": group.remove,
        "promote": group.promote,
        "demote": group.demote,
        "approve": group.approve,
        "deny": group.deny,
    }[args.action]
    await change(*args.numbers)
    _show_members(group, out)


def _show_members(group: Group, out: Printer) -> None:
    members = group.members
    text = "\n".join(f"  {n} {role}" for n, role in sorted(members.items()))
    out.emit("members", f"{_title(group)}\n{text}", group=group.gid, members=members)


async def _rename(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    await group.rename(args.name)
    out.emit("renamed", f"renamed to {group.name}", group=group.gid, name=group.name)


async def _describe(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    await group.describe(args.text)
    text = f"description of {group.name}: {group.description}"
    out.emit("described", text, group=group.gid, description=group.description)


async def _info(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    with contextlib.suppress(ServerError):  # not a member any more: what this device knows
        await group.refresh()
    lines = [_title(group)]
    if group.description:
        lines.append(f"description: {group.description}")
    lines.append(f"you: {group.role or 'not a member'}")
    lines.append("members:")
    lines += [f"  {n} {role}" for n, role in sorted(group.members.items())]
    lines.append(f"settings: {settings_text(group.settings)}")
    if group.requests:
        lines.append(f"asking to join: {', '.join(group.requests)}")
    sent = [e for e in group.history(200) if e.outgoing]
    if args.message:
        sent = [e for e in sent if e.id == args.message]
    statuses = []
    for entry in sent[-5:]:
        receipts = {} if entry.status in ("pending", "failed") else group.receipts(entry.id)
        lines.append(f"[{when(entry.server_ts or entry.ts)}] you: {entry.body}")
        lines.append(f"  {group.summary(entry.id)}")
        lines += [f"  {n}: {status}" for n, status in receipts.items()]
        statuses.append(
            {"id": entry.id, "body": entry.body, "status": entry.status, "receipts": receipts}
        )
    out.emit(
        "group_info",
        "\n".join(lines),
        group=group.gid,
        name=group.name,
        description=group.description,
        role=group.role,
        members=group.members,
        requests=list(group.requests),
        settings=msgspec.to_builtins(group.settings),
        messages=statuses,
    )


async def _invite(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    if args.revoke:
        await group.revoke_link()
        out.emit("link", "the invite link no longer works", group=group.gid, link="")
        return
    link = await group.invite_link()
    out.emit("link", link, group=group.gid, link=link)


async def _join(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await client.groups.join(args.link)
    if group is None:
        out.emit("join_requested", "asked to join: an admin has to approve", group=None)
        return
    out.emit("joined", f"joined {_title(group)}", group=group.gid, name=group.name)


async def _leave(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    await group.leave()
    out.emit("left", f"left {_title(group)}", group=group.gid)


async def _settings(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    if args.send or args.edit or args.approval:
        await group.set_settings(_settings_from(args, group.settings))
    settings = group.settings
    out.emit(
        "settings",
        settings_text(settings),
        group=group.gid,
        send=settings.send,
        edit=settings.edit,
        approval=settings.approval,
    )


async def _history(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    out.history(group.history(args.limit), f"in {label(group)}")


async def _mark_read(client: Client, args: argparse.Namespace, out: Printer) -> None:
    group = await find(client, args.group)
    ids = await group.mark_read()
    text = f"{len(ids)} message(s) in {label(group)} marked read"
    out.emit("marked_read", text, group=group.gid, ids=ids)
