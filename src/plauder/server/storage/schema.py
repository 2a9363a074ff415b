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
            id {id_pk},
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
        )""",
        "CREATE INDEX sent_messages_by_ts ON sent_messages (ts)",
        """CREATE TABLE verification_codes (
            number TEXT PRIMARY KEY,
            code_hash {blob} NOT NULL,
            expires BIGINT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        )""",
    ],
]

SQLITE_TYPES = {"id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"}
POSTGRES_TYPES = {"id_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "blob": "BYTEA"}


def statements(version: int, types: dict[str, str]) -> list[str]:
    """The statements of one migration (1-based) for a backend's type names."""
    return [s.format(**types) for s in MIGRATIONS[version - 1]]
