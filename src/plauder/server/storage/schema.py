"""The database schema as an ordered list of migrations, shared by all backends."""

# Each migration is a list of statements in the SQL both SQLite and PostgreSQL
# accept. `BIGINT GENERATED` is spelled per backend through the ID placeholder.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE accounts (
            id {id_pk},
            number TEXT NOT NULL UNIQUE,
            account_key TEXT NOT NULL,
            last_seen_visible BOOLEAN NOT NULL DEFAULT TRUE,
            last_seen BIGINT,
            next_device_id INTEGER NOT NULL DEFAULT 1,
            created BIGINT NOT NULL
        )""",
        """CREATE TABLE devices (
            pk {id_pk},
            account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            device_id INTEGER NOT NULL,
            identity_key TEXT NOT NULL,
            signing_key TEXT NOT NULL,
            signature TEXT NOT NULL,
            created BIGINT NOT NULL,
            UNIQUE (account_id, device_id)
        )""",
        """CREATE TABLE one_time_keys (
            device_pk BIGINT NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
            key_id TEXT NOT NULL,
            key TEXT NOT NULL,
            signature TEXT NOT NULL,
            PRIMARY KEY (device_pk, key_id)
        )""",
        """CREATE TABLE fallback_keys (
            device_pk BIGINT PRIMARY KEY REFERENCES devices(pk) ON DELETE CASCADE,
            key_id TEXT NOT NULL,
            key TEXT NOT NULL,
            signature TEXT NOT NULL
        )""",
        """CREATE TABLE envelopes (
            id {eid_pk},
            device_pk BIGINT NOT NULL,
            sender TEXT NOT NULL,
            sender_device INTEGER NOT NULL,
            type INTEGER NOT NULL,
            body {blob} NOT NULL,
            ts BIGINT NOT NULL
        )""",
        "CREATE INDEX envelopes_by_device ON envelopes (device_pk, id)",
        "CREATE INDEX envelopes_by_ts ON envelopes (ts)",
        """CREATE TABLE sent_messages (
            device_pk BIGINT NOT NULL,
            cmid {blob} NOT NULL,
            ts BIGINT NOT NULL,
            PRIMARY KEY (device_pk, cmid)
        ){without_rowid}""",
        "CREATE INDEX sent_messages_by_ts ON sent_messages (ts)",
        """CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value BIGINT NOT NULL
        )""",
        """CREATE TABLE verification_codes (
            number TEXT PRIMARY KEY,
            code_hash {blob} NOT NULL,
            expires BIGINT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        )""",
    ],
    [
        # settings every node must agree on, e.g. a fingerprint of the server secret
        """CREATE TABLE cluster_settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ],
    [
        # groups: membership and roles only; names and descriptions travel encrypted
        """CREATE TABLE groups (
            id {id_pk},
            gid {blob} NOT NULL UNIQUE,
            creator BIGINT NOT NULL REFERENCES accounts(id),
            version BIGINT NOT NULL DEFAULT 1,
            send_policy TEXT NOT NULL DEFAULT 'all',
            edit_policy TEXT NOT NULL DEFAULT 'admins',
            approval BOOLEAN NOT NULL DEFAULT FALSE,
            invite {blob} UNIQUE,
            created BIGINT NOT NULL
        )""",
        """CREATE TABLE group_members (
            group_id BIGINT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
            account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            joined BIGINT NOT NULL,
            PRIMARY KEY (group_id, account_id)
        )""",
        "CREATE INDEX group_members_by_account ON group_members (account_id)",
        """CREATE TABLE group_requests (
            group_id BIGINT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
            account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            ts BIGINT NOT NULL,
            PRIMARY KEY (group_id, account_id)
        )""",
        # a group message is stored once; each member device's envelope refers to it
        # (message_id) with an empty body
        """CREATE TABLE group_messages (
            id {id_pk},
            gid {blob} NOT NULL,
            sender TEXT NOT NULL,
            sender_device INTEGER NOT NULL,
            body {blob} NOT NULL,
            ts BIGINT NOT NULL
        )""",
        "CREATE INDEX group_messages_by_ts ON group_messages (ts)",
        "ALTER TABLE envelopes ADD COLUMN message_id BIGINT",
    ],
    [
        # media blobs: the ciphertext lives in the blob store, named by id; a row is
        # dead once `expires` passed (an unfinished upload a day after it was reserved,
        # a complete blob media_retention_days after it was completed)
        """CREATE TABLE media (
            id TEXT PRIMARY KEY,
            account BIGINT NOT NULL,
            device BIGINT NOT NULL,
            size BIGINT NOT NULL,
            created BIGINT NOT NULL,
            expires BIGINT NOT NULL,
            completed BIGINT
        )""",
        "CREATE INDEX media_by_account ON media (account, created)",
        "CREATE INDEX media_by_expires ON media (expires)",
    ],
    [
        # the invite link's card: name and description sealed under a key only the link
        # holds (crypto/invite.py); NULL without a link
        "ALTER TABLE groups ADD COLUMN invite_card {blob}",
    ],
]

# Envelope ids are handed out by the server in commit order (storage/sqlite_sends.py), so
# the envelope key needs no AUTOINCREMENT bookkeeping on every insert.
SQLITE_TYPES = {
    "id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "eid_pk": "INTEGER PRIMARY KEY",
    "blob": "BLOB",
    "without_rowid": " WITHOUT ROWID",
}
POSTGRES_TYPES = {
    "id_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "eid_pk": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    "blob": "BYTEA",
    "without_rowid": "",
}


def statements(version: int, types: dict[str, str]) -> list[str]:
    """The statements of one migration (1-based) for a backend's type names."""
    return [s.format(**types) for s in MIGRATIONS[version - 1]]
