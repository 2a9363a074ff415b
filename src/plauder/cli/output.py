"""How the CLI prints events and results: text for people, JSON lines for scripts."""

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from plauder.client import (
    CallLogEntry,
    CallStateChanged,
    DecryptionError,
    Event,
    GroupChanged,
    IdentityChanged,
    IncomingCall,
    MessageReceived,
    PresenceChanged,
    ReceiptReceived,
    TypingChanged,
)
from plauder.client.store import HistoryEntry
from plauder.protocol.content import Media

TICKS = {"pending": "…", "sent": "✓", "delivered": "✓✓", "read": "✓✓ read", "failed": "✗ failed"}


def when(ms: int | None) -> str:
    """A local date and time for a timestamp in milliseconds."""
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


class Printer:
    """Writes results as text or as one JSON object per line."""

    def __init__(self, as_json: bool, group_name: Callable[[str], str] | None = None) -> None:
        self.as_json = as_json
        self._group_name = group_name or (lambda gid: "")

    def _where(self, gid: str, name: str = "") -> str:
        """A group as shown before its lines: "[Name] ", or "" outside groups."""
        if not gid:
            return ""
        return f"[{name or self._group_name(gid) or gid[:8]}] "

    def emit(self, kind: str, text: str, /, **fields: Any) -> None:
        """One result: `text` for people, `{"type": kind, **fields}` for scripts."""
        if self.as_json:
            print(json.dumps({"type": kind, **fields}, ensure_ascii=False), flush=True)
        else:
            print(text, flush=True)

    def nothing(self, text: str) -> None:
        """Say that there is nothing to list (for people; scripts get no line)."""
        if not self.as_json:
            print(text, flush=True)

    def note(self, text: str) -> None:
        """A remark for people, on standard error (never in the JSON output)."""
        print(f"plauder: {text}", file=sys.stderr, flush=True)

    def event(self, ev: Event) -> None:
        """Print an SDK event."""
        match ev:
            case MessageReceived():
                where = self._where(ev.group, ev.group_name)
                media = ev.media.content if ev.media is not None else None
                text = ev.body if media is None else describe(media)
                self.emit(
                    "message",
                    f"[{when(ev.server_ts)}] {where}{ev.sender}: {text}",
                    id=ev.id,
                    sender=ev.sender,
                    body=ev.body,
                    ts=ev.ts,
                    server_ts=ev.server_ts,
                    **({"group": ev.group, "group_name": ev.group_name} if ev.group else {}),
                    **({"media": media_fields(media)} if media is not None else {}),
                )
            case ReceiptReceived():
                verb = "read by" if ev.status == "read" else "delivered to"
                ids = ", ".join(ev.ids)
                self.emit(
                    "receipt",  # two ticks, then in words: "✓✓ read by …", not "✓✓ read read by"
                    f"✓✓ {self._where(ev.group)}{verb} {ev.sender}: {ids}",
                    sender=ev.sender,
                    status=ev.status,
                    ids=list(ev.ids),
                    **({"group": ev.group} if ev.group else {}),
                )
            case GroupChanged():
                self.emit("group", f"{self._where(ev.gid, ev.name)}{ev.text}", **asdict(ev))
            case TypingChanged():
                state = "is typing…" if ev.active else "stopped typing"
                self.emit("typing", f"{ev.sender} {state}", sender=ev.sender, active=ev.active)
            case PresenceChanged():
                state = "online" if ev.online else f"last seen {when(ev.last_seen)}"
                self.emit(
                    "presence",
                    f"{ev.number} is {state}",
                    number=ev.number,
                    online=ev.online,
                    last_seen=ev.last_seen,
                )
            case IdentityChanged():
                self.emit(
                    "identity_changed",
                    f"WARNING: the safety number with {ev.number} has changed. They may have "
                    f"reinstalled plauder, or someone may be intercepting. Compare it: "
                    f"plauder safety-number {ev.number}",
                    number=ev.number,
                    old_key=ev.old_key,
                    new_key=ev.new_key,
                )
            case IncomingCall():
                call = ev.call
                low = " (low data)" if call.low_data else ""
                self.emit(
                    "incoming_call",
                    f"📞 {call.peer} is calling{low} (call {call.id[:8]})",
                    call=call.id,
                    peer=call.peer,
                    low_data=call.low_data,
                )
            case CallStateChanged():
                self.emit(
                    "call_state",
                    f"📞 call with {ev.call.peer}: {CALL_STATES.get(ev.state, ev.state)}"
                    + (f" ({ev.reason})" if ev.reason else "")
                    + (f": {ev.call.error}" if ev.call.error else ""),
                    call=ev.call.id,
                    peer=ev.call.peer,
                    direction=ev.call.direction,
                    state=ev.state,
                    reason=ev.reason,
                    **({"error": ev.call.error} if ev.call.error else {}),
                )
            case DecryptionError():
                self.emit(
                    "error",
                    f"could not read a message from {ev.sender}: {ev.reason}",
                    sender=ev.sender,
                    device=ev.sender_device,
                    reason=ev.reason,
                )

    def call_log(self, entry: CallLogEntry) -> None:
        """One line of the call log."""
        arrow = "→" if entry.direction == "outgoing" else "←"
        how = entry.state + (f" ({entry.reason})" if entry.reason else "")
        facts = [how]
        if entry.connected is not None:
            facts.append(_duration(round(entry.duration * 1000)))
        if entry.bytes_total:
            facts.append(usage(entry))
        if entry.low_data:
            facts.append("low data")
        if entry.relayed:
            facts.append("relayed")
        self.emit(
            "call",
            f"[{when(entry.started)}] {arrow} {entry.peer}: {', '.join(facts)}",
            **_call_fields(entry),
        )

    def call_summary(self, entry: CallLogEntry) -> None:
        """How a call went, once it is over."""
        text = f"call with {entry.peer} {entry.state}"
        if entry.connected is not None:
            text += f" after {_duration(round(entry.duration * 1000))}, {usage(entry)}"
        self.emit("call_summary", text, **_call_fields(entry))

    def history(self, entries: list[HistoryEntry], where: str) -> None:
        """Print a chat's history (a group's system lines after a dot, without a sender).

        `where` names the chat when it is empty: "no messages with +49…".
        """
        if not entries:
            self.nothing(f"no messages {where}")
        for e in entries:
            who = "you: " if e.outgoing else f"{e.sender}: " if e.sender else "· "
            tick = f"  {TICKS.get(e.status, '')}" if e.outgoing else ""
            text = e.body if e.media is None else describe(e.media)
            if e.media_path:
                text += f" → {e.media_path}"
            self.emit(
                "history",
                f"[{when(e.server_ts or e.ts)}] {who}{text}{tick}",
                id=e.id,
                chat=e.chat,
                outgoing=e.outgoing,
                sender=e.sender,
                body=e.body,
                ts=e.ts,
                server_ts=e.server_ts,
                status=e.status,
                **({"media": media_fields(e.media, e.media_path)} if e.media else {}),
            )


CALL_STATES = {
    "outgoing": "calling…",
    "ringing": "ringing…",
    "connecting": "connecting…",
    "connected": "connected",
    "ended": "ended",
    "rejected": "declined",
    "busy": "busy",
    "missed": "missed",
    "failed": "failed",
}


def usage(entry: CallLogEntry) -> str:
    """A call's bytes in words: in all and per minute."""
    text = human_size(entry.bytes_total)
    if entry.duration:
        text += f" ({human_size(round(entry.bytes_per_minute))}/min)"
    return text


def _call_fields(entry: CallLogEntry) -> dict[str, Any]:
    fields = asdict(entry)
    fields.update(duration=round(entry.duration, 1), bytes_per_minute=round(entry.bytes_per_minute))
    return fields


def human_size(n: int) -> str:
    """A byte count in human units: 912 B, 1.4 MB, 2.0 GB."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _duration(ms: int) -> str:
    seconds = round(ms / 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"


def describe(media: Media) -> str:
    """A file message in one line: kind, name, size, dimensions or length, caption, short id."""
    if media.kind == "voice":
        text = f"🎤 voice note {_duration(media.duration_ms)} ({human_size(media.size)})"
    else:
        icon = {"image": "🖼", "video": "🎬", "audio": "🎵"}.get(media.kind, "📎")
        facts = [media.mime, human_size(media.size)]
        if media.width and media.height:
            facts.append(f"{media.width}x{media.height}")
        if media.duration_ms:
            facts.append(_duration(media.duration_ms))
        text = f"{icon} {media.name or media.kind} ({', '.join(facts)})"
    if media.caption:
        text += f" “{media.caption}”"
    return f"{text} [{media.id[:8]}]"  # enough for `plauder media get ID`


def media_fields(media: Media, path: str | None = None) -> dict[str, Any]:
    """A file message's description for JSON output (without its key)."""
    fields: dict[str, Any] = {
        "kind": media.kind,
        "name": media.name,
        "mime": media.mime,
        "size": media.size,
        "caption": media.caption,
    }
    if media.width:
        fields.update(width=media.width, height=media.height)
    if media.duration_ms:
        fields["duration_ms"] = media.duration_ms
    if path:
        fields["path"] = path
    return fields


def fail(message: str) -> None:
    """Print an error for people on standard error."""
    print(f"plauder: {message}", file=sys.stderr, flush=True)
