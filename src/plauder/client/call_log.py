"""The call log in the local store, and what a call measures (`CallStats`).

One row per call this device placed or was offered: who, which way, how it
ended, when, for how long, and the bytes its media used. The rows are not
secret beyond what the history already shows (numbers and times), so they are
not sealed.
"""

from dataclasses import dataclass
from typing import Any

from plauder.client.store import LocalStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY, peer TEXT NOT NULL, direction TEXT NOT NULL, state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', started INTEGER NOT NULL, connected INTEGER,
    ended INTEGER, bytes_sent INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0, low_data INTEGER NOT NULL DEFAULT 0,
    relayed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls (started);
"""

_COLUMNS = (
    "id, peer, direction, state, reason, started, connected, ended, bytes_sent, "
    "bytes_received, low_data, relayed"
)


@dataclass(frozen=True, slots=True)
class CallStats:
    """What a call's media used and how the line was, so far.

    Bytes count what the call put on the network: the encrypted packets (SRTP,
    RTCP, the DTLS handshake) with 28 bytes of IPv4 and UDP headers each; a
    TURN relay adds a few bytes more per packet, not counted. Bitrates are
    averages since the media connected.
    """

    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0  # of the other side's packets, lost on the way here
    remote_packets_lost: int = 0  # of ours, lost on the way there (as the other side reports)
    round_trip_time: float | None = None  # seconds, from the RTCP reports
    seconds: float = 0.0  # since the media connected
    send_bitrate: float = 0.0  # bits per second on the network
    receive_bitrate: float = 0.0
    opus_bitrate: int = 0  # the bitrate this side's Opus encoder aims at
    relayed: bool = False  # the media goes through a TURN relay

    @property
    def bytes_total(self) -> int:
        """Bytes sent and received."""
        return self.bytes_sent + self.bytes_received


@dataclass(frozen=True, slots=True)
class CallLogEntry:
    """One call in the log.

    `state` is how it ended (ended, rejected, busy, missed, failed) or where it
    is now; `reason` says more (hangup, remote_hangup, cancelled, timeout,
    answered_elsewhere, fingerprint_mismatch, ...). Times are milliseconds
    since the epoch on this device's clock.
    """

    id: str
    peer: str
    direction: str  # "outgoing" | "incoming"
    state: str
    reason: str
    started: int
    connected: int | None
    ended: int | None
    bytes_sent: int
    bytes_received: int
    low_data: bool
    relayed: bool

    @property
    def duration(self) -> float:
        """Seconds from connected to ended (0 for a call that never connected)."""
        if self.connected is None or self.ended is None:
            return 0.0
        return max(0, self.ended - self.connected) / 1000

    @property
    def bytes_total(self) -> int:
        """Bytes sent and received."""
        return self.bytes_sent + self.bytes_received

    @property
    def bytes_per_minute(self) -> float:
        """Bytes sent and received per minute of connected call (0 if it never connected)."""
        return self.bytes_total * 60 / self.duration if self.duration else 0.0


class CallLog:
    """The `calls` table of the local store."""

    def __init__(self, store: LocalStore) -> None:
        self._db = store.connection
        self._db.executescript(SCHEMA)

    def add(
        self, call_id: str, peer: str, direction: str, state: str, started: int, low_data: bool
    ) -> None:
        """Record a new call (once: a repeated id changes nothing)."""
        self._db.execute(
            "INSERT INTO calls (id, peer, direction, state, started, low_data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (call_id, peer, direction, state, started, int(low_data)),
        )

    def update(
        self,
        call_id: str,
        *,
        state: str,
        reason: str,
        connected: int | None,
        ended: int | None,
        low_data: bool,
    ) -> None:
        """Record where a call is now."""
        self._db.execute(
            "UPDATE calls SET state = ?, reason = ?, connected = ?, ended = ?, low_data = ? "
            "WHERE id = ?",
            (state, reason, connected, ended, int(low_data), call_id),
        )

    def set_usage(self, call_id: str, stats: CallStats) -> None:
        """Record the bytes a call used."""
        self._db.execute(
            "UPDATE calls SET bytes_sent = ?, bytes_received = ?, relayed = ? WHERE id = ?",
            (stats.bytes_sent, stats.bytes_received, int(stats.relayed), call_id),
        )

    def get(self, call_id: str) -> CallLogEntry | None:
        """One call, if logged."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else _entry(row)

    def entries(self, limit: int = 50, peer: str | None = None) -> list[CallLogEntry]:
        """The last calls (of one peer, if given), newest first."""
        query = f"SELECT {_COLUMNS} FROM calls"
        args: tuple[object, ...] = ()
        if peer is not None:
            query += " WHERE peer = ?"
            args = (peer,)
        rows = self._db.execute(
            query + " ORDER BY started DESC, rowid DESC LIMIT ?", (*args, limit)
        )
        return [_entry(r) for r in rows.fetchall()]


def _entry(r: tuple[Any, ...]) -> CallLogEntry:
    return CallLogEntry(
        id=str(r[0]),
        peer=str(r[1]),
        direction=str(r[2]),
        state=str(r[3]),
        reason=str(r[4]),
        started=int(r[5]),
        connected=None if r[6] is None else int(r[6]),
        ended=None if r[7] is None else int(r[7]),
        bytes_sent=int(r[8]),
        bytes_received=int(r[9]),
        low_data=bool(r[10]),
        relayed=bool(r[11]),
    )
