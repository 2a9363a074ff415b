"""Voice calls on the command line: `call`, `answer`, `reject`, `calls`, and answering in `receive`.

Sound comes from the microphone, or `--play FILE`, or `--tone HZ`; the other
side goes to the speaker, or `--record FILE` (WAV). Without a sound device,
calls still work headless with files.
"""

import argparse
import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plauder.cli.output import Printer
from plauder.client import (
    AudioSink,
    AudioSource,
    Call,
    CallState,
    CallStateChanged,
    Client,
    ClientError,
    Discard,
    FileSource,
    Microphone,
    Silence,
    Speaker,
    Tone,
    WavFile,
)
from plauder.client.media_errors import AudioUnavailable

ClientFactory = Callable[..., Client]


def add_parsers(sub: Any, common: argparse.ArgumentParser, client: ClientFactory) -> None:
    """Register `call`, `answer`, `reject` and `calls`."""
    add = functools.partial(sub.add_parser, parents=[common])
    p = add(
        "call",
        help="call a contact: every device of theirs rings",
        description="Call a contact and talk until one side hangs up (Ctrl-C hangs up), "
        "or for --duration seconds. Sound comes from the microphone unless --play or --tone "
        "says otherwise; the other side is played on the speaker unless --record says where "
        "to write it. With --play and no --duration, the call ends when the file has played.",
    )
    p.add_argument("contact", help="the number to call")
    _talk_options(p)
    p.set_defaults(run=functools.partial(call, client=client))

    p = add("answer", help="wait for a call to ring on this device and answer it")
    _wait_option(p)
    _talk_options(p)
    p.set_defaults(run=functools.partial(answer, client=client))

    p = add("reject", help="wait for a call to ring on this device and decline it")
    _wait_option(p)
    p.set_defaults(run=functools.partial(reject, client=client))

    p = add("calls", help="the call log: who, which way, how it ended, how long, bytes used")
    p.add_argument("-n", "--limit", type=int, default=20)
    p.add_argument("contact", nargs="?", help="only the calls with this number")
    p.set_defaults(run=functools.partial(calls, client=client))
    for name in ("call", "answer", "reject", "calls"):
        sub.choices[name].set_defaults(is_async=True)


def add_receive_options(p: argparse.ArgumentParser) -> None:
    """`receive --auto-answer` and what answered calls play and record."""
    p.add_argument(
        "--auto-answer",
        action="store_true",
        help="answer every call that rings (microphone and speaker, or silence without them)",
    )
    p.add_argument("--answer-with", type=Path, metavar="FILE", help="play FILE to callers")
    p.add_argument(
        "--record-calls", type=Path, metavar="DIR", help="record each answered call in DIR"
    )
    p.add_argument(
        "--relay-only", action="store_true", help="answer through the server's TURN relay only"
    )


def _talk_options(p: argparse.ArgumentParser) -> None:
    sound = p.add_mutually_exclusive_group()
    sound.add_argument("--play", type=Path, metavar="FILE", help="send this audio file")
    sound.add_argument("--tone", type=float, metavar="HZ", help="send a tone (checking a line)")
    p.add_argument("--record", type=Path, metavar="FILE", help="write the other side to a WAV")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="hang up after this long")
    p.add_argument(
        "--low-data", action="store_true", help="12 kbit/s each way, for mobile data (default 32)"
    )
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="media only through the server's TURN relay (hides your address from the contact)",
    )


def _wait_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS", help="how long to wait for a call"
    )


def source_for(play: Path | None, tone: float | None) -> AudioSource:
    """The file, the tone, or the microphone (AudioUnavailable says what to do without one)."""
    if play is not None:
        return FileSource(play)
    if tone is not None:
        return Tone(tone)
    try:
        return Microphone()
    except AudioUnavailable as exc:
        raise AudioUnavailable(f"{exc}; send a file or a tone: --play FILE or --tone HZ") from exc


def sink_for(record: Path | None, out: Printer) -> AudioSink:
    """The WAV file, or the speaker, or nowhere (with a note) when there is none."""
    if record is not None:
        return WavFile(record)
    try:
        return Speaker()
    except AudioUnavailable as exc:
        out.note(f"{exc}: the other side is not played (--record FILE keeps it)")
        return Discard()


async def call(args: argparse.Namespace, client: ClientFactory) -> int:
    """Call a contact and talk."""
    out = Printer(args.json)
    source = source_for(args.play, args.tone)
    cli = client(args)
    try:
        await cli.start(receive=True)
        the_call = await cli.call(
            args.contact,
            source,
            sink_for(args.record, out),
            low_data=args.low_data,
            relay_only=args.relay_only,
        )
        return await _talk(cli, the_call, args, out, source)
    finally:
        await cli.close()


async def answer(args: argparse.Namespace, client: ClientFactory) -> int:
    """Answer the next call that rings here, and talk."""
    out = Printer(args.json)
    source = source_for(args.play, args.tone)
    cli = client(args)
    try:
        await cli.start(receive=True)
        ringing = await _next_ringing(cli, args.wait)
        await ringing.accept(
            source, sink_for(args.record, out), low_data=args.low_data, relay_only=args.relay_only
        )
        return await _talk(cli, ringing, args, out, source)
    finally:
        await cli.close()


async def reject(args: argparse.Namespace, client: ClientFactory) -> int:
    """Decline the next call that rings here."""
    cli = client(args)
    try:
        await cli.start(receive=True)
        ringing = await _next_ringing(cli, args.wait)
        await ringing.reject()
    finally:
        await cli.close()
    Printer(args.json).emit(
        "call_rejected",
        f"declined the call from {ringing.peer}",
        call=ringing.id,
        peer=ringing.peer,
    )
    return 0


async def _next_ringing(client: Client, wait: float) -> Call:
    rang: asyncio.Queue[Call] = asyncio.Queue()
    client.on_incoming_call(rang.put_nowait)
    try:
        async with asyncio.timeout(wait):
            return await rang.get()
    except TimeoutError:
        raise ClientError(f"no call rang within {wait:g} s") from None


async def _talk(
    client: Client, call: Call, args: argparse.Namespace, out: Printer, source: AudioSource
) -> int:
    """Show the call's progress until it ends: hung up by either side, or after --duration."""
    shown = asyncio.get_running_loop().create_task(_show(client, call, out))
    try:
        await call.wait_state(CallState.CONNECTED)
        if call.state is CallState.CONNECTED:
            await _connected(call, args.duration, source)
        if not call.state.final:
            await call.hangup()
        await call.wait_ended()
    finally:
        shown.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shown
        for ev in client.pending_events():  # the last changes, not shown yet
            if isinstance(ev, CallStateChanged) and ev.call is call:
                out.event(ev)
    entry = client.calls.log(limit=1, peer=call.peer)
    if entry and entry[0].id == call.id:
        out.call_summary(entry[0])
    return 0 if call.connected_at is not None else 1


async def _connected(call: Call, duration: float | None, source: AudioSource) -> None:
    """Wait while the call is connected, at most `duration`, or until a played file ended."""
    ends_with_file = isinstance(source, FileSource) and duration is None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(duration):
            while call.state is CallState.CONNECTED:
                if ends_with_file and isinstance(source, FileSource) and source.finished:
                    await asyncio.sleep(0.5)  # its last packets reach the other side
                    return
                with contextlib.suppress(TimeoutError):
                    await call.wait_state(CallState.ENDED, timeout=0.2)


async def _show(client: Client, call: Call, out: Printer) -> None:
    async for ev in client.events():
        if isinstance(ev, CallStateChanged) and ev.call is call:
            out.event(ev)


async def calls(args: argparse.Namespace, client: ClientFactory) -> int:
    """Print the call log."""
    cli = client(args)
    try:
        entries = cli.calls.log(args.limit, args.contact)
    finally:
        await cli.close()
    out = Printer(args.json)
    for entry in reversed(entries):
        out.call_log(entry)
    return 0


def auto_answer(client: Client, args: argparse.Namespace, out: Printer) -> None:
    """Answer every call that rings (for `receive --auto-answer`)."""

    async def pick_up(call: Call) -> None:
        source: AudioSource
        if args.answer_with is not None:
            source = FileSource(args.answer_with, loop=True)
        else:
            try:
                source = Microphone()
            except AudioUnavailable as exc:
                out.note(f"{exc}: answering with silence")
                source = Silence()
        record = None
        if args.record_calls is not None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(call.started / 1000))
            record = args.record_calls / f"call-{stamp}-{call.id[:8]}.wav"
        sink = sink_for(record, out)
        try:
            await call.accept(source, sink, relay_only=args.relay_only)
        except ClientError as exc:
            out.note(f"the call from {call.peer} could not be answered: {exc}")

    if args.record_calls is not None:
        args.record_calls.mkdir(parents=True, exist_ok=True)
    client.on_incoming_call(pick_up)
