"""The client's local store: keys, sessions, contacts, history and outbox, sealed at rest."""

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from plauder.crypto import StoreCipher
from plauder.protocol.content import Media, decode_content, encode_content
from plauder.protocol.frames import DeviceKeys

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    number TEXT PRIMARY KEY, account_key TEXT NOT NULL, verified INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL, changed INTEGER);
CREATE TABLE IF NOT EXISTS devices (
    number TEXT NOT NULL, device_id INTEGER NOT NULL, identity_key TEXT NOT NULL,
    signing_key TEXT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (number, device_id));
CREATE TABLE IF NOT EXISTS sessions (identity_key TEXT PRIMARY KEY, pickles TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT NOT NULL, chat TEXT NOT NULL, outgoing INTEGER NOT NULL, sender TEXT NOT NULL,
    body BLOB NOT NULL, ts INTEGER NOT NULL, server_ts INTEGER, status TEXT NOT NULL,
    seq INTEGER PRIMARY KEY AUTOINCREMENT, UNIQUE (sender, id));
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages (chat, seq);
CREATE TABLE IF NOT EXISTS outbox (
    cmid BLOB PRIMARY KEY, chat TEXT NOT NULL, content BLOB NOT NULL, frame BLOB NOT NULL,
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (digest BLOB PRIMARY KEY, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending_receipts (
    peer TEXT NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (peer, message_id));
CREATE TABLE IF NOT EXISTS media (
    sender TEXT NOT NULL, id TEXT NOT NULL, descriptor BLOB NOT NULL, path TEXT,
    PRIMARY KEY (sender, id));
CREATE TABLE IF NOT EXISTS outgoing_files (
    id TEXT PRIMARY KEY, chat TEXT NOT NULL, is_group INTEGER NOT NULL,
    created INTEGER NOT NULL);
"""

STATUS_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3, "failed": -1}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One message in a chat's history."""

    id: str
    chat: str
    outgoing: bool
    sender: str
    body: str
    ts: int
    server_ts: int | None
    status: str
    media: Media | None = None  # a file, photo or voice note; `body` is its caption
    media_path: str | None = None  # where the file was saved, once downloaded or sent


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A send the server has not acknowledged yet."""

    cmid: bytes
    chat: str
    content: bytes  # the plaintext document, to encrypt again if devices changed
    frame: bytes  # the encoded `send` frame


@dataclass(frozen=True, slots=True)
class MediaJob:
    """A file encrypted for sending whose message is not in the outbox yet.

    `media` describes it (the `media` table's row of our own message); its
    `media` field (the blob id) is empty until the server reserved the blob.
    """

    id: str  # the message id
    chat: str  # the contact's number or the group id
    is_group: bool
    media: Media


class LocalStore:
    """A SQLite file holding everything a device remembers; secrets are sealed."""

    def __init__(self, path: Path, cipher: StoreCipher) -> None:
        self.cipher = cipher
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        self._upgrade()
        self._depth = 0
        verifier = self._get("verifier")
        if verifier is None:
            self._put("verifier", cipher.verifier())
        else:
            cipher.check(verifier)

    def _upgrade(self) -> None:
        """Bring tables of older profiles up to date (columns added since)."""
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(pending_receipts)")]
        if "grp" not in columns:
            self._db.execute("ALTER TABLE pending_receipts ADD COLUMN grp TEXT NOT NULL DEFAULT ''")

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection, for tables kept by sibling modules (group_store.py)."""
        return self._db

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so that they land together or not at all."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # --- meta ----------------------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _put(self, key: str, value: bytes) -> None:
        self._db.execute(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            (key, value),
        )

    def get_secret(self, key: str) -> bytes | None:
        """A sealed value, opened."""
        sealed = self._get(key)
        return None if sealed is None else self.cipher.open(sealed, key.encode())

    def put_secret(self, key: str, value: bytes) -> None:
        """Seal and store a value."""
        self._put(key, self.cipher.seal(value, key.encode()))

    def get_setting(self, key: str) -> str | None:
        """A plain setting (not secret)."""
        value = self._get("setting:" + key)
        return None if value is None else value.decode()

    def put_setting(self, key: str, value: str) -> None:
        """Store a plain setting."""
        self._put("setting:" + key, value.encode())

    # --- contacts and devices ------------------------------------------------------------

    def contact_key(self, number: str) -> str | None:
        """The account key we trust for a contact."""
        row = self._db.execute(
            "SELECT account_key FROM contacts WHERE number = ?", (number,)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_contact_key(self, number: str, key: str, now: int) -> None:
        """Record a contact's account key (first use, or a change)."""
        self._db.execute(
            "INSERT INTO contacts (number, account_key, first_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (number) DO UPDATE SET account_key = excluded.account_key, "
            "changed = ?, verified = 0",
            (number, key, now, now),
        )

    def devices(self, number: str) -> list[DeviceKeys]:
        """A contact's verified devices as last fetched."""
        rows = self._db.execute(
            "SELECT device_id, identity_key, signing_key, signature FROM devices "
            "WHERE number = ? ORDER BY device_id",
            (number,),
        ).fetchall()
        return [
            DeviceKeys(device_id=r[0], identity_key=r[1], signing_key=r[2], signature=r[3])
            for r in rows
        ]

    def set_devices(self, number: str, devices: list[DeviceKeys]) -> None:
        """Replace a contact's device list."""
        with self.transaction():
            self._db.execute("DELETE FROM devices WHERE number = ?", (number,))
            self._db.executemany(
                "INSERT INTO devices (number, device_id, identity_key, signing_key, signature) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (number, d.device_id, d.identity_key, d.signing_key, d.signature)
                    for d in devices
                ],
            )

    # --- sessions ------------------------------------------------------------------------

    def sessions(self, identity_key: str) -> list[str]:
        """Pickled Olm sessions with a peer device."""
        row = self._db.execute(
            "SELECT pickles FROM sessions WHERE identity_key = ?", (identity_key,)
        ).fetchone()
        return [] if row is None else list(json.loads(row[0]))

    def set_sessions(self, identity_key: str, pickles: list[str]) -> None:
        """Store pickled Olm sessions with a peer device."""
        self._db.execute(
            "INSERT INTO sessions (identity_key, pickles) VALUES (?, ?) "
            "ON CONFLICT (identity_key) DO UPDATE SET pickles = excluded.pickles",
            (identity_key, json.dumps(pickles)),
        )

    # --- messages ------------------------------------------------------------------------

    def add_message(
        self,
        *,
        id: str,
        chat: str,
        outgoing: bool,
        sender: str,
        body: str,
        ts: int,
        server_ts: int | None,
        status: str,
    ) -> bool:
        """Add a message; False if one with the same sender and id exists already."""
        sealed = self.cipher.seal(body.encode(), f"{sender}/{id}".encode())
        cur = self._db.execute(
            "INSERT INTO messages (id, chat, outgoing, sender, body, ts, server_ts, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (id, chat, int(outgoing), sender, sealed, ts, server_ts, status),
        )
        return cur.rowcount == 1

    def set_status(self, sender: str, ids: list[str], status: str) -> list[str]:
        """Move messages forward to a status (never back); returns the ids that moved."""
        moved = []
        rank = STATUS_RANK[status]
        for mid in ids:
            row = self._db.execute(
                "SELECT status FROM messages WHERE sender = ? AND id = ?", (sender, mid)
            ).fetchone()
            if row is not None and STATUS_RANK.get(row[0], 0) < rank:
                self._db.execute(
                    "UPDATE messages SET status = ? WHERE sender = ? AND id = ?",
                    (status, sender, mid),
                )
                moved.append(mid)
        return moved

    def mark_failed(self, sender: str, mid: str) -> None:
        """A message the server refused for good (set_status never moves a status back)."""
        self._db.execute(
            "UPDATE messages SET status = 'failed' WHERE sender = ? AND id = ?", (sender, mid)
        )

    def set_server_ts(self, sender: str, mid: str, server_ts: int) -> None:
        """Record when the server stored an outgoing message."""
        self._db.execute(
            "UPDATE messages SET server_ts = ? WHERE sender = ? AND id = ?",
            (server_ts, sender, mid),
        )

    def history(self, chat: str, limit: int = 50, by_time: bool = False) -> list[HistoryEntry]:
        """The last messages of a chat, oldest first (in the server's order of time if `by_time`).

        `by_time` suits groups, whose lines come from several senders and the server.
        """
        order = "coalesce(server_ts, m.ts) DESC, seq DESC" if by_time else "seq DESC"
        rows = self._db.execute(
            "SELECT m.id, chat, outgoing, m.sender, body, ts, server_ts, status, "
            "f.descriptor, f.path FROM messages m "
            "LEFT JOIN media f ON f.sender = m.sender AND f.id = m.id "
            f"WHERE chat = ? ORDER BY {order} LIMIT ?",
            (chat, limit),
        ).fetchall()
        return [
            HistoryEntry(
                id=r[0],
                chat=r[1],
                outgoing=bool(r[2]),
                sender=r[3],
                body=self.cipher.open(r[4], f"{r[3]}/{r[0]}".encode()).decode(),
                ts=r[5],
                server_ts=r[6],
                status=r[7],
                media=None if r[8] is None else self._open_media(r[3], r[0], r[8]),
                media_path=r[9],
            )
            for r in reversed(rows)
        ]

    # --- media ---------------------------------------------------------------------------

    def put_media(self, sender: str, mid: str, media: Media, path: str | None = None) -> None:
        """Remember a message's media descriptor (its key included, sealed)."""
        sealed = self.cipher.seal(encode_content(media), f"media/{sender}/{mid}".encode())
        self._db.execute(
            "INSERT INTO media (sender, id, descriptor, path) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sender, id) DO NOTHING",
            (sender, mid, sealed, path),
        )

    def set_media_path(self, sender: str, mid: str, path: str) -> None:
        """Record where a message's file was saved."""
        self._db.execute(
            "UPDATE media SET path = ? WHERE sender = ? AND id = ?", (path, sender, mid)
        )

    def media(self, mid: str, sender: str | None = None) -> list[tuple[str, Media, str | None]]:
        """(sender, descriptor, saved path) of the media messages with this id (or id prefix)."""
        like = mid.replace("%", "").replace("_", "") + "%"
        query = "SELECT sender, id, descriptor, path FROM media WHERE id LIKE ?"
        args: tuple[str, ...] = (like,)
        if sender is not None:
            query += " AND sender = ?"
            args += (sender,)
        rows = self._db.execute(query, args).fetchall()
        return [(r[0], self._open_media(r[0], r[1], r[2]), r[3]) for r in rows]

    def replace_media(self, sender: str, mid: str, media: Media) -> None:
        """Put the final descriptor of a file this device sends (its blob id known now)."""
        sealed = self.cipher.seal(encode_content(media), f"media/{sender}/{mid}".encode())
        self._db.execute(
            "INSERT INTO media (sender, id, descriptor) VALUES (?, ?, ?) "
            "ON CONFLICT (sender, id) DO UPDATE SET descriptor = excluded.descriptor",
            (sender, mid, sealed),
        )

    def put_media_job(self, mid: str, chat: str, is_group: bool, now: int) -> None:
        """Remember a file to upload and send (its description: `replace_media`)."""
        self._db.execute(
            "INSERT INTO outgoing_files (id, chat, is_group, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (mid, chat, int(is_group), now),
        )

    def media_jobs(self, sender: str) -> list["MediaJob"]:
        """Files `sender` (this account) waits to upload and send, oldest first."""
        rows = self._db.execute(
            "SELECT j.id, j.chat, j.is_group, m.descriptor FROM outgoing_files j "
            "JOIN media m ON m.sender = ? AND m.id = j.id ORDER BY j.created, j.rowid",
            (sender,),
        ).fetchall()
        return [
            MediaJob(mid, chat, bool(is_group), self._open_media(sender, mid, sealed))
            for mid, chat, is_group, sealed in rows
        ]

    def queued(self) -> int:
        """How many sends and files wait to go out."""
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM outgoing_files)"
        ).fetchone()
        return int(row[0])

    def drop_media_job(self, mid: str) -> None:
        """A file's message is in the outbox now (or the file was given up)."""
        self._db.execute("DELETE FROM outgoing_files WHERE id = ?", (mid,))

    def _open_media(self, sender: str, mid: str, sealed: bytes) -> Media:
        content = decode_content(self.cipher.open(sealed, f"media/{sender}/{mid}".encode()))
        assert isinstance(content, Media)
        return content

    def unread(self, chat: str) -> list[str]:
        """Ids of received messages in a chat not yet marked read."""
        rows = self._db.execute(
            "SELECT id FROM messages WHERE chat = ? AND outgoing = 0 AND status != 'read' "
            "ORDER BY seq",
            (chat,),
        ).fetchall()
        return [r[0] for r in rows]

    def chats(self) -> list[str]:
        """Numbers with a history."""
        rows = self._db.execute("SELECT DISTINCT chat FROM messages ORDER BY chat").fetchall()
        return [r[0] for r in rows]

    # --- outbox and dedup ----------------------------------------------------------------

    def put_outbox(self, entry: OutboxEntry, now: int) -> None:
        """Remember a send until the server acknowledges it."""
        sealed = self.cipher.seal(entry.content, b"outbox/" + entry.cmid)
        self._db.execute(
            "INSERT INTO outbox (cmid, chat, content, frame, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (cmid) DO UPDATE SET frame = excluded.frame",
            (entry.cmid, entry.chat, sealed, entry.frame, now),
        )

    def remove_outbox(self, cmid: bytes) -> None:
        """The server acknowledged a send."""
        self._db.execute("DELETE FROM outbox WHERE cmid = ?", (cmid,))

    def outbox(self) -> list[OutboxEntry]:
        """Sends waiting for the server, oldest first."""
        rows = self._db.execute(
            "SELECT cmid, chat, content, frame FROM outbox ORDER BY created, rowid"
        ).fetchall()
        return [self._outbox_entry(r) for r in rows]

    def outbox_entry(self, cmid: bytes) -> OutboxEntry | None:
        """One send waiting for the server, if it still is."""
        row = self._db.execute(
            "SELECT cmid, chat, content, frame FROM outbox WHERE cmid = ?", (cmid,)
        ).fetchone()
        return None if row is None else self._outbox_entry(row)

    def _outbox_entry(self, r: tuple[bytes, str, bytes, bytes]) -> OutboxEntry:
        cmid = bytes(r[0])
        return OutboxEntry(
            cmid, r[1], self.cipher.open(bytes(r[2]), b"outbox/" + cmid), bytes(r[3])
        )

    def add_pending_receipt(self, peer: str, message_id: str, group: str = "") -> None:
        """Remember to tell a sender that a message (of a group, if given) was delivered."""
        self._db.execute(
            "INSERT OR IGNORE INTO pending_receipts (peer, message_id, grp) VALUES (?, ?, ?)",
            (peer, message_id, group),
        )

    def pending_receipts(self) -> dict[tuple[str, str], list[str]]:
        """Delivered receipts not yet queued for sending, by peer and group ("" for none)."""
        out: dict[tuple[str, str], list[str]] = {}
        for peer, grp, mid in self._db.execute(
            "SELECT peer, grp, message_id FROM pending_receipts ORDER BY rowid"
        ):
            out.setdefault((peer, grp), []).append(mid)
        return out

    def clear_pending_receipts(self, peer: str, ids: list[str]) -> None:
        """The receipts for these messages are in the outbox now."""
        self._db.executemany(
            "DELETE FROM pending_receipts WHERE peer = ? AND message_id = ?",
            [(peer, mid) for mid in ids],
        )

    def seen(self, digest: bytes) -> bool:
        """Whether an envelope with this digest was processed already."""
        return (
            self._db.execute("SELECT 1 FROM seen WHERE digest = ?", (digest,)).fetchone()
            is not None
        )

    def add_seen(self, digest: bytes, now: int) -> None:
        """Record a processed envelope, forgetting ones older than 30 days."""
        self._db.execute("INSERT OR IGNORE INTO seen (digest, ts) VALUES (?, ?)", (digest, now))

    def prune_seen(self, now: int) -> None:
        """Forget processed envelopes older than the server keeps any (30 days)."""
        self._db.execute("DELETE FROM seen WHERE ts < ?", (now - 31 * 86_400_000,))
