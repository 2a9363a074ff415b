"""The local store's group tables: groups, Megolm sessions, messages waiting for keys, receipts."""

import json
from dataclasses import dataclass, field

import msgspec

from plauder.client.store import STATUS_RANK, LocalStore
from plauder.protocol.frames import GroupSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    gid TEXT PRIMARY KEY, state BLOB NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,
    members TEXT NOT NULL, settings TEXT NOT NULL, requests TEXT NOT NULL, link INTEGER NOT NULL,
    rotate INTEGER NOT NULL DEFAULT 0, earlier TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS group_outbound (
    gid TEXT PRIMARY KEY, pickle BLOB NOT NULL, shared TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS group_inbound (
    sender_key TEXT NOT NULL, session_id TEXT NOT NULL, pickle BLOB NOT NULL,
    PRIMARY KEY (sender_key, session_id));
CREATE TABLE IF NOT EXISTS group_waiting (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, gid TEXT NOT NULL, sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL, sender_key TEXT NOT NULL, session_id TEXT NOT NULL,
    type INTEGER NOT NULL, ciphertext BLOB NOT NULL, ts INTEGER NOT NULL,
    parked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS group_waiting_by_session ON group_waiting (sender_key, session_id);
CREATE TABLE IF NOT EXISTS group_receipts (
    message_id TEXT NOT NULL, number TEXT NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (message_id, number));
"""

_settings_decoder = msgspec.json.Decoder(GroupSettings)


def is_group_chat(chat: str) -> bool:
    """Whether a chat (of the history or the outbox) is a group's gid rather than a number."""
    return not chat.startswith("+")


# A device a sender shared its current session with: (number, device id, identity key).
SharedDevice = tuple[str, int, str]


class EarlierView(msgspec.Struct, frozen=True):
    """Members and settings a server answer changed before the notices of the change arrived.

    Envelopes queued before those notices were sent under this view; it is
    dropped once the notice of version `until` came. `blind`: the first view
    of a group came from the server, and who was a member before is unknown.
    """

    until: int
    members: dict[str, str]
    settings: GroupSettings
    blind: bool = False


_earlier_decoder = msgspec.json.Decoder(EarlierView)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """What this device knows of a group; `role` is "" once it is no longer a member."""

    gid: str  # hex
    name: str = ""
    description: str = ""
    state_ts: int = 0  # sender's clock of the state that set name and description
    version: int = 0
    role: str = ""
    members: dict[str, str] = field(default_factory=dict)  # number -> role
    settings: GroupSettings = field(default_factory=GroupSettings)
    requests: tuple[str, ...] = ()
    link: bool = False
    rotate: bool = False  # a member left or was removed: the next send starts a new session
    named_by: str = ""  # who named a group not known yet by a key share: checked once it is
    earlier: EarlierView | None = None
    # this account (re)entered the group and no state message told it the current name yet:
    # a key share may bring a newer one, and the next state may be passed on by a non-author
    newcomer: bool = False


@dataclass(frozen=True, slots=True)
class WaitingMessage:
    """A group message kept (and acknowledged) until the key of its session arrives."""

    seq: int
    gid: str
    sender: str
    sender_device: int
    sender_key: str
    session_id: str
    type: int
    ciphertext: bytes
    ts: int


class GroupStore:
    """Group state beside the LocalStore's tables, in the same database and transactions."""

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self._db = store.connection
        self._db.executescript(SCHEMA)
        for table, column, kind in (
            ("groups", "earlier", "TEXT NOT NULL DEFAULT ''"),
            ("group_waiting", "parked", "INTEGER NOT NULL DEFAULT 0"),
        ):
            columns = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]
            if column not in columns:  # a profile from before the column
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    # --- groups --------------------------------------------------------------------------

    def get(self, gid: str) -> GroupRecord | None:
        """A group by its gid (hex)."""
        row = self._db.execute(_SELECT + " WHERE gid = ?", (gid,)).fetchone()
        return None if row is None else self._record(row)

    def all(self) -> list[GroupRecord]:
        """Every group this device knows, by name."""
        records = [self._record(r) for r in self._db.execute(_SELECT).fetchall()]
        return sorted(records, key=lambda r: (r.name.casefold(), r.gid))

    def save(self, record: GroupRecord) -> None:
        """Insert or replace a group."""
        state = json.dumps(
            {
                "name": record.name,
                "description": record.description,
                "ts": record.state_ts,
                "by": record.named_by,
                "new": record.newcomer,
            }
        ).encode()
        earlier = record.earlier
        self._db.execute(
            "INSERT OR REPLACE INTO groups (gid, state, version, role, members, settings, "
            "requests, link, rotate, earlier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.gid,
                self._store.cipher.seal(state, b"group/" + record.gid.encode()),
                record.version,
                record.role,
                json.dumps(record.members, sort_keys=True),
                msgspec.json.encode(record.settings).decode(),
                json.dumps(list(record.requests)),
                int(record.link),
                int(record.rotate),
                "" if earlier is None else msgspec.json.encode(earlier).decode(),
            ),
        )

    def _record(self, row: tuple[object, ...]) -> GroupRecord:
        gid = str(row[0])
        sealed = row[1]
        assert isinstance(sealed, bytes)
        state = json.loads(self._store.cipher.open(sealed, b"group/" + gid.encode()))
        return GroupRecord(
            gid=gid,
            name=state["name"],
            description=state["description"],
            state_ts=state["ts"],
            version=int(str(row[2])),
            role=str(row[3]),
            members=json.loads(str(row[4])),
            settings=_settings_decoder.decode(str(row[5])),
            requests=tuple(json.loads(str(row[6]))),
            link=bool(row[7]),
            rotate=bool(row[8]),
            named_by=state.get("by", ""),
            earlier=_earlier_decoder.decode(str(row[9])) if row[9] else None,
            newcomer=state.get("new", False),
        )

    def unread(self, gid: str) -> list[tuple[str, str]]:
        """(sender, id) of a group's received messages not yet marked read, oldest first."""
        rows = self._db.execute(
            "SELECT sender, id FROM messages WHERE chat = ? AND outgoing = 0 "
            "AND status = 'received' ORDER BY seq",
            (gid,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def newest_ts(self, gid: str) -> int:
        """The time of a group's newest line or message (0 if none)."""
        row = self._db.execute(
            "SELECT max(coalesce(server_ts, ts)) FROM messages WHERE chat = ?", (gid,)
        ).fetchone()
        return int(row[0] or 0)

    def sent_status(self, gid: str, message_id: str) -> str:
        """The status of a message this account sent to a group ("" if there is none such)."""
        row = self._db.execute(
            "SELECT status FROM messages WHERE chat = ? AND id = ? AND outgoing = 1",
            (gid, message_id),
        ).fetchone()
        return "" if row is None else str(row[0])

    # --- this device's outbound sessions -------------------------------------------------

    def outbound(self, gid: str) -> tuple[str, set[SharedDevice]] | None:
        """This device's session for a group (pickled) and the devices it was shared with."""
        row = self._db.execute(
            "SELECT pickle, shared FROM group_outbound WHERE gid = ?", (gid,)
        ).fetchone()
        if row is None:
            return None
        pickle = self._store.cipher.open(bytes(row[0]), b"group_outbound/" + gid.encode())
        return pickle.decode(), {(n, d, k) for n, d, k in json.loads(row[1])}

    def put_outbound(self, gid: str, pickle: str, shared: set[SharedDevice]) -> None:
        """Store this device's session for a group and whom it was shared with."""
        sealed = self._store.cipher.seal(pickle.encode(), b"group_outbound/" + gid.encode())
        self._db.execute(
            "INSERT OR REPLACE INTO group_outbound (gid, pickle, shared) VALUES (?, ?, ?)",
            (gid, sealed, json.dumps(sorted(shared))),
        )

    # --- sessions shared with this device ------------------------------------------------

    def inbound(self, sender_key: str, session_id: str) -> str | None:
        """A pickled session another device shared with this one."""
        row = self._db.execute(
            "SELECT pickle FROM group_inbound WHERE sender_key = ? AND session_id = ?",
            (sender_key, session_id),
        ).fetchone()
        if row is None:
            return None
        return self._store.cipher.open(bytes(row[0]), _inbound_aad(sender_key, session_id)).decode()

    def put_inbound(self, sender_key: str, session_id: str, pickle: str) -> None:
        """Store a session shared with this device (with the indices it decrypted)."""
        sealed = self._store.cipher.seal(pickle.encode(), _inbound_aad(sender_key, session_id))
        self._db.execute(
            "INSERT OR REPLACE INTO group_inbound (sender_key, session_id, pickle) "
            "VALUES (?, ?, ?)",
            (sender_key, session_id, sealed),
        )

    # --- messages waiting for their key --------------------------------------------------

    def add_waiting(self, message: WaitingMessage, parked: bool = False) -> None:
        """Keep a group message until the key of its session arrives.

        `parked`: until the notices show whether its sender was a member then.
        """
        self._db.execute(
            "INSERT INTO group_waiting (gid, sender, sender_device, sender_key, session_id, "
            "type, ciphertext, ts, parked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.gid,
                message.sender,
                message.sender_device,
                message.sender_key,
                message.session_id,
                message.type,
                message.ciphertext,
                message.ts,
                int(parked),
            ),
        )

    def waiting(self, sender_key: str, session_id: str) -> list[WaitingMessage]:
        """The messages waiting for a session's key, in the order they arrived."""
        return self._waiting(
            "sender_key = ? AND session_id = ? AND parked = 0", (sender_key, session_id)
        )

    def parked(self, gid: str) -> list[WaitingMessage]:
        """A group's messages parked until the notices show whether their senders were members."""
        return self._waiting("gid = ? AND parked = 1", (gid,))

    def _waiting(self, where: str, params: tuple[str, ...]) -> list[WaitingMessage]:
        rows = self._db.execute(
            "SELECT seq, gid, sender, sender_device, sender_key, session_id, type, ciphertext, "
            f"ts FROM group_waiting WHERE {where} ORDER BY seq",
            params,
        ).fetchall()
        return [
            WaitingMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), r[8])
            for r in rows
        ]

    def remove_waiting(self, seq: int) -> None:
        """A waiting message was decrypted (or given up)."""
        self._db.execute("DELETE FROM group_waiting WHERE seq = ?", (seq,))

    def count_waiting(self) -> int:
        """How many group messages wait for keys."""
        return int(self._db.execute("SELECT count(*) FROM group_waiting").fetchone()[0])

    # --- receipts of this device's messages ----------------------------------------------

    def set_recipients(self, message_id: str, numbers: list[str]) -> None:
        """The members a group message went to; each starts at `sent`."""
        self._db.execute("DELETE FROM group_receipts WHERE message_id = ?", (message_id,))
        self._db.executemany(
            "INSERT INTO group_receipts (message_id, number, status) VALUES (?, ?, 'sent')",
            [(message_id, n) for n in numbers],
        )

    def receipts(self, message_id: str) -> dict[str, str]:
        """Each recipient's status of a group message this account sent."""
        rows = self._db.execute(
            "SELECT number, status FROM group_receipts WHERE message_id = ? ORDER BY number",
            (message_id,),
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def move_receipt(self, message_id: str, number: str, status: str) -> bool:
        """Move one recipient's status forward (never back); whether it moved."""
        row = self._db.execute(
            "SELECT status FROM group_receipts WHERE message_id = ? AND number = ?",
            (message_id, number),
        ).fetchone()
        if row is None or STATUS_RANK.get(row[0], 0) >= STATUS_RANK[status]:
            return False
        self._db.execute(
            "UPDATE group_receipts SET status = ? WHERE message_id = ? AND number = ?",
            (status, message_id, number),
        )
        return True


_SELECT = (
    "SELECT gid, state, version, role, members, settings, requests, link, rotate, earlier "
    "FROM groups"
)


def _inbound_aad(sender_key: str, session_id: str) -> bytes:
    return f"group_inbound/{sender_key}/{session_id}".encode()
