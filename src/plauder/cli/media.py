"""Files on the command line: sending them, progress bars, and `media get` / `media play`."""

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from plauder.cli.output import Printer, human_size
from plauder.client import Chat, Client, ClientError, Group
from plauder.client.media import Attachment
from plauder.client.media_errors import AudioUnavailable
from plauder.client.media_transfer import Progress as ProgressCallback
from plauder.crypto.media import MediaError

BAR_FROM = 1024 * 1024  # transfers from this size on get a progress bar


def add_parsers(sub: Any, common: argparse.ArgumentParser, client: Callable[..., Client]) -> None:
    """Register `media get` and `media play`."""
    p = sub.add_parser("media", parents=[common], help="fetch or play a message's file")
    actions = p.add_subparsers(dest="media_action", metavar="ACTION", required=True)
    a = actions.add_parser("get", parents=[common], help="download, decrypt and check a file")
    a.add_argument("message_id", help="the message's id (a unique prefix will do)")
    a.add_argument("--out", type=Path, help="a file name or a folder (default: the profile's)")
    a.set_defaults(run=functools.partial(get, client=client), is_async=True)
    a = actions.add_parser(
        "play", parents=[common], help="play a voice note or audio, or convert it to WAV"
    )
    a.add_argument("message_id", help="the message's id (a unique prefix will do)")
    a.add_argument("--out", type=Path, help="write a WAV file instead of playing")
    a.set_defaults(run=functools.partial(play, client=client), is_async=True)


@contextlib.contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A callback drawing a progress bar on standard error, for transfers over a megabyte."""
    if not enabled:
        yield None
        return
    from rich.progress import (  # loaded only when a bar may be drawn
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=None,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    bar.console.file = sys.stderr
    task = bar.add_task(label, total=None, visible=False)

    def update(done: int, total: int) -> None:
        if total < BAR_FROM:
            return
        bar.update(task, completed=done, total=total, visible=True)

    with bar:
        yield update


async def send(args: argparse.Namespace, target: Chat | Group, timeout: float) -> str:
    """Send `--attach` or `--voice` to a chat or group, with a progress bar; returns the id."""
    path: Path = args.attach or args.voice
    label = f"⬆ {path.name}"
    with progress_bar(label, not args.json) as progress:
        if args.voice is not None:
            return await target.send_voice(
                path, low_data=args.low_data, progress=progress, timeout=timeout
            )
        return await target.send_file(
            path,
            caption=args.caption,
            keep_metadata=args.keep_metadata,
            progress=progress,
            timeout=timeout,
        )


async def save(attachment: Attachment, folder: Path, out: Printer) -> None:
    """Download a received file into `folder` and say where it went (or why it did not)."""
    try:
        with progress_bar(f"⬇ {attachment.name or 'file'}", not out.as_json) as progress:
            path = await attachment.download(folder, progress)
    except (ClientError, MediaError) as exc:
        out.emit(
            "error",
            f"could not save the file of {attachment.message_id[:12]}: {exc}",
            id=attachment.message_id,
            reason=str(exc),
        )
        return
    out.emit(
        "saved",
        f"  ✓ saved {path} ({human_size(attachment.size)}, checked)",
        id=attachment.message_id,
        path=str(path),
        size=attachment.size,
    )


async def get(args: argparse.Namespace, client: Callable[..., Client]) -> int:
    """Download a message's file and print where it was saved."""
    c = client(args)
    try:
        attachment = c.media_of(args.message_id)
        await c.start(receive=False)
        with progress_bar(f"⬇ {attachment.name or 'file'}", not args.json) as progress:
            path = await attachment.download(args.out, progress)
    finally:
        await c.close()
    Printer(args.json).emit(
        "saved",
        f"✓ saved {path} ({human_size(attachment.size)}, checked)",
        id=attachment.message_id,
        path=str(path),
        size=attachment.size,
    )
    return 0


async def play(args: argparse.Namespace, client: Callable[..., Client]) -> int:
    """Play a voice note (or write it as WAV with --out)."""
    c = client(args)
    try:
        attachment = c.media_of(args.message_id)
        if attachment.kind not in ("voice", "audio"):
            raise ClientError(f"message {attachment.message_id} is a {attachment.kind}, not audio")
        await c.start(receive=False)
        path = await c.media.saved_or_download(attachment)
    finally:
        await c.close()
    out = Printer(args.json)
    if args.out is not None:
        await c.media.to_wav(path, args.out)
        out.emit("saved", f"✓ wrote {args.out}", path=str(args.out))
        return 0
    try:
        await c.media.play(path)
    except AudioUnavailable as exc:
        raise ClientError(f"{exc}; or write it as a WAV file with --out FILE.wav") from exc
    out.emit("played", f"▶ played {path.name}", path=str(path))
    return 0
