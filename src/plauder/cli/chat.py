"""Account and chat commands: register, verify, send, receive and the rest."""

import argparse
import asyncio
import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from plauder.cli import calls, groups, media
from plauder.cli.output import Printer, fail
from plauder.client import (
    BadServerUrl,
    Chat,
    Client,
    ClientError,
    Event,
    Group,
    MessageReceived,
    Queued,
    UnknownGroup,
)
from plauder.client.servers import parse_servers

QUEUED_EXIT = 75  # sysexits' EX_TEMPFAIL: not sent yet, queued to go out later


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the account and chat subcommands."""
    add = functools.partial(sub.add_parser, parents=[common])
    p = add("register", help="ask for a verification code for your number")
    p.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="URL",
        help="server URL; repeat it, or separate URLs with commas, for several nodes",
    )
    p.set_defaults(run=register)

    p = add("verify", help="finish registration with the code you received")
    p.add_argument("code")
    p.set_defaults(run=verify)

    p = add(
        "send",
        help="send an end-to-end encrypted message, file or voice note to a contact or a group",
    )
    p.add_argument("-m", "--message", help="the text")
    p.add_argument("recipient", nargs="?", help="the recipient's number")
    p.add_argument("--group", metavar="GROUP", help="send to a group (by name or id) instead")
    p.add_argument("--attach", type=Path, metavar="FILE", help="send a file, photo or video")
    p.add_argument("--caption", default="", help="a caption for the file")
    p.add_argument(
        "--keep-metadata",
        action="store_true",
        help="keep a photo's EXIF data (camera, GPS position); removed by default",
    )
    p.add_argument("--voice", type=Path, metavar="AUDIO", help="send an audio file as a voice note")
    p.add_argument("--low-data", action="store_true", help="a smaller voice note, for mobile data")
    p.add_argument(
        "--wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for a server before leaving it queued (default 20; "
        f"exit status {QUEUED_EXIT} then)",
    )
    p.set_defaults(run=send)

    p = add(
        "receive",
        help="receive messages and receipts (exits when the queue is empty)",
        description="Receive what is queued, send delivered receipts, print everything. "
        "Exits when the queue is empty, unless --timeout or --follow.",
    )
    p.add_argument("--timeout", type=float, help="keep receiving this many seconds")
    p.add_argument("--follow", action="store_true", help="keep receiving until interrupted")
    p.add_argument(
        "--download-dir",
        type=Path,
        metavar="DIR",
        help="download, decrypt and check every received file into DIR",
    )
    calls.add_receive_options(p)
    p.set_defaults(run=receive)

    p = add("mark-read", help="mark a chat read and send read receipts")
    p.add_argument("contact", help="a number, or a group's name or id")
    p.set_defaults(run=mark_read)

    p = add("history", help="show a chat's history from this device")
    p.add_argument("contact", help="a number, or a group's name or id")
    p.add_argument("-n", "--limit", type=int, default=50)
    p.set_defaults(run=history)

    p = add("safety-number", help="show the safety number and QR code with a contact")
    p.add_argument("contact")
    p.add_argument("--no-qr", action="store_true", help="digits only")
    p.set_defaults(run=safety)

    p = add("whoami", help="show this profile's number, device and servers")
    p.set_defaults(run=whoami)

    p = add("privacy", help="who may see when you are online and were last seen")
    p.add_argument("last_seen", choices=["everyone", "nobody"])
    p.set_defaults(run=privacy)

    p = add(
        "servers",
        help="show or change this profile's server URLs",
        description="With no action: list the server URLs, the one used last marked. "
        "The client tries them in turn and moves on when one fails.",
    )
    p.set_defaults(run=servers, action="show", urls=[])
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    for action, text in (
        ("set", "replace the list"),
        ("add", "add URLs to the list"),
        ("remove", "remove URLs from the list"),
    ):
        a = actions.add_parser(action, parents=[common], help=text)
        a.add_argument("urls", nargs="+", metavar="URL", help="server URLs (or comma separated)")

    for name in (
        "register",
        "verify",
        "send",
        "receive",
        "mark-read",
        "history",
        "safety-number",
        "whoami",
        "privacy",
        "servers",
    ):
        sub.choices[name].set_defaults(is_async=True)
    groups.add_parsers(sub, common, _client)
    media.add_parsers(sub, common, _client)
    calls.add_parsers(sub, common, _client)


def _is_number(text: str) -> bool:
    """Whether a chat argument is a phone number rather than a group's name or id."""
    return text.strip().startswith("+")


def _group_name(client: Client, gid: str) -> str:
    try:
        return client.groups.get(gid).name
    except UnknownGroup:
        return ""


def _client(args: argparse.Namespace, **kw: Any) -> Client:
    if not args.account:
        raise ClientError("say which account: plauder -a +4915... COMMAND")
    profile = args.config_dir / args.account.replace("+", "")
    return Client(profile, args.account, passphrase=os.environ.get("PLAUDER_PASSPHRASE"), **kw)


async def register(args: argparse.Namespace) -> int:
    """Request a verification code."""
    client = _client(args)
    try:
        await client.request_code(args.server)
    finally:
        await client.close()
    Printer(args.json).emit(
        "code_sent",
        f"A verification code was sent to {client.number}.\n"
        f"Finish with: plauder -a {client.number} verify CODE",
        number=client.number,
    )
    return 0


async def verify(args: argparse.Namespace) -> int:
    """Verify the code and create this device's keys."""
    client = _client(args)
    try:
        device_id = await client.verify(args.code)
    finally:
        await client.close()
    Printer(args.json).emit(
        "registered",
        f"Registered {client.number} (device {device_id}).",
        number=client.number,
        device_id=device_id,
    )
    return 0


async def send(args: argparse.Namespace) -> int:
    """Send one text, file or voice note and wait for the server's tick (or leave it queued)."""
    if bool(args.recipient) == bool(args.group):
        raise ClientError("say whom to send to: a number, or --group NAME")
    chosen = [x for x in (args.message, args.attach, args.voice) if x is not None]
    if len(chosen) != 1:
        raise ClientError("say what to send: -m TEXT, --attach FILE or --voice AUDIO (one)")
    client = _client(args, connect_timeout=args.wait)
    out = Printer(args.json)
    try:
        await client.start(receive=False, wait=False)  # what is queued needs no server yet
        target: Chat | Group
        if args.group:
            target = await groups.find(client, args.group)
            to, fields = f"[{groups.label(target)}]", {"group": target.gid}
        else:
            target = client.chat(args.recipient)
            to, fields = target.peer, {"recipient": target.peer}
        try:
            if args.message is not None:
                mid = await target.send_text(args.message, timeout=args.wait)
            else:
                mid = await media.send(args, target, timeout=args.wait)
        except Queued as exc:
            out.emit(
                "queued",
                f"⏳ queued for {to} ({exc.message_id}): no server confirmed it yet; it goes "
                "out the next time plauder connects (`plauder receive`, or another send)",
                id=exc.message_id,
                **fields,
            )
            return QUEUED_EXIT
        with contextlib.suppress(ClientError, TimeoutError):
            await client.wait_sent(timeout=10.0)  # sends queued before go out with this one
    finally:
        await client.close()
    out.emit("sent", f"✓ sent to {to} ({mid})", id=mid, **fields)
    return 0


async def receive(args: argparse.Namespace) -> int:
    """Print events until the queue is empty (or the timeout, or for ever)."""
    client = _client(args)
    out = Printer(args.json, group_name=functools.partial(_group_name, client))

    async def show(ev: Event) -> None:
        out.event(ev)
        if args.download_dir is not None and isinstance(ev, MessageReceived) and ev.media:
            await media.save(ev.media, args.download_dir, out)

    if args.auto_answer:
        calls.auto_answer(client, args, out)
    try:
        await client.start(receive=True)
        if args.follow or args.timeout:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if args.follow else args.timeout):
                    async for ev in client.events():
                        await show(ev)
        else:
            await client.wait_idle(timeout=120.0)
            with contextlib.suppress(ClientError, TimeoutError):
                await client.wait_sent(timeout=30.0)  # sends and files queued while offline
        for ev in client.pending_events():
            await show(ev)
    finally:
        await client.close()
    return 0


async def mark_read(args: argparse.Namespace) -> int:
    """Send read receipts for a chat."""
    client = _client(args)
    try:
        await client.start(receive=False)
        if _is_number(args.contact):
            ids = await client.mark_read(args.contact)
        else:
            ids = await (await groups.find(client, args.contact)).mark_read()
    finally:
        await client.close()
    Printer(args.json).emit(
        "marked_read", f"{len(ids)} message(s) from {args.contact} marked read", ids=ids
    )
    return 0


async def history(args: argparse.Namespace) -> int:
    """Print the local history of a chat."""
    client = _client(args)
    try:
        chat: Chat | Group
        if _is_number(args.contact):
            chat = client.chat(args.contact)
            where = f"with {chat.peer}"
        else:
            chat = client.groups.get(args.contact)
            where = f"in {groups.label(chat)}"
        Printer(args.json).history(chat.history(args.limit), where)
    finally:
        await client.close()
    return 0


async def safety(args: argparse.Namespace) -> int:
    """Print the safety number (and QR code) with a contact."""
    client = _client(args)
    try:
        if client.store.contact_key(args.contact) is None:
            await client.start(receive=False)
        digits, payload = await client.safety_number(args.contact)
    finally:
        await client.close()
    out = Printer(args.json)
    out.emit(
        "safety_number",
        f"Safety number with {args.contact}:\n{digits}\n"
        "Compare it with your contact in person or over a call.",
        contact=args.contact,
        digits=digits.replace(" ", ""),
        qr=payload,
    )
    if not args.json and not args.no_qr:
        import segno  # only this command draws a QR code

        segno.make(payload, error="m").terminal(compact=True)
    return 0


async def whoami(args: argparse.Namespace) -> int:
    """Print the profile's number, device and servers."""
    client = _client(args)
    try:
        if not client.registered:
            fail(f"{client.number} is not registered on this device")
            return 1
        key = client.account_key.public_key
        Printer(args.json).emit(
            "whoami",
            f"{client.number}, device {client.device_id}\n"
            f"servers: {' '.join(client.servers)}\naccount key: {key}",
            number=client.number,
            device_id=client.device_id,
            servers=client.servers,
            account_key=key,
        )
    finally:
        await client.close()
    return 0


async def privacy(args: argparse.Namespace) -> int:
    """Change who may see presence and last seen."""
    client = _client(args)
    try:
        await client.start(receive=False)
        await client.set_presence_visible(args.last_seen == "everyone")
    finally:
        await client.close()
    Printer(args.json).emit(
        "privacy", f"last seen and online: {args.last_seen}", last_seen=args.last_seen
    )
    return 0


async def servers(args: argparse.Namespace) -> int:
    """Show the profile's server URLs, or set, add or remove some."""
    client = _client(args)
    try:
        urls = client.servers
        if args.action == "set":
            urls = client.set_servers(args.urls)
        elif args.action == "add":
            urls = client.set_servers(urls + args.urls)
        elif args.action == "remove":
            gone = parse_servers(args.urls)
            urls = [u for u in urls if u not in gone]
            if not urls:
                raise BadServerUrl("a profile keeps at least one server URL")
            urls = client.set_servers(urls)
        elif not urls:
            fail(f"{client.number} has no servers yet: register first")
            return 1
        last = client.last_server
    finally:
        await client.close()
    text = "\n".join(u + ("  (used last)" if u == last else "") for u in urls)
    Printer(args.json).emit("servers", text, number=client.number, servers=urls, last=last)
    return 0
