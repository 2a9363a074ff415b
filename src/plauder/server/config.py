"""Server configuration: flags > PLAUDER_* environment > TOML file > defaults."""

import dataclasses
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from plauder.errors import PlauderError
from plauder.protocol.limits import Limits


class ConfigError(PlauderError):
    """The configuration is invalid; the message names the option."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every server option, validated at start-up."""

    host: str = "127.0.0.1"
    port: int = 8080
    data: Path = Path("plauder-data")
    log_level: str = "info"
    log_format: str = "text"  # text | json
    # verification codes
    sms_sender: str = "console"  # console | http
    sms_http_url: str = ""
    code_ttl_seconds: int = 600
    code_attempts: int = 5
    codes_per_number_per_hour: int = 5
    code_requests_per_connection: int = 3
    # limits
    max_frame_bytes: int = 256 * 1024
    max_envelopes_per_send: int = 64
    max_body_bytes: int = 64 * 1024
    max_keys_per_upload: int = 100
    keys_low_threshold: int = 10
    requests_per_second: float = 200.0
    request_burst: int = 400
    claims_per_minute: int = 120  # get_devices with claim=True, per connection
    max_group_members: int = 1024
    max_groups_per_account: int = 500  # groups an account may belong to
    group_claims_per_minute: int = 4096  # pre-keys of member devices claimed, per connection
    auth_timeout_seconds: float = 30.0
    max_bad_frames: int = 20
    delivery_window: int = 500
    # retention
    envelope_ttl_days: int = 30
    dedup_ttl_days: int = 30  # how long a send's cmid is remembered against repeats
    sweep_interval_seconds: float = 3600.0
    # media: encrypted blobs uploaded and downloaded over HTTP
    max_media_bytes: int = 100 * 1024 * 1024  # bytes of one file (at most 2 GiB)
    media_quota_bytes: int = 2 * 1024**3  # bytes of unexpired blobs an account may hold
    media_uploads_per_hour: int = 60  # new uploads per account
    media_retention_days: int = 30  # a complete blob is deleted this long after its upload
    media_token_seconds: int = 600  # lifetime of an upload or download token
    media_dir: str = ""  # where blobs are stored; default data/media (shared in a cluster)
    # calls: TURN relays (coturn) whose short-lived credentials the server hands out
    turn_urls: tuple[str, ...] = ()  # turn:/turns: URIs; none: no relay is offered
    turn_secret: str = field(default="", repr=False)  # coturn's static-auth-secret
    turn_secret_file: str = ""  # or a file holding it
    turn_ttl_seconds: int = 3600  # lifetime of a credential (60 s to a day)
    turn_requests_per_minute: int = 30  # get_turn per connection
    # storage: SQLite in the data folder unless a postgresql:// URL is given
    database: str = ""
    db_pool_size: int = 8  # PostgreSQL connections per process
    # cluster: several processes or nodes share PostgreSQL and a Redis
    redis: str = ""  # redis://host:port/db; required with workers > 1
    redis_namespace: str = "plauder"  # prefix of every Redis key and channel
    node_id: str = ""  # unique per process in a cluster; default: host name and pid
    workers: int = 1  # processes sharing the port (SO_REUSEPORT)
    secret_file: str = (
        ""  # the code-hashing secret, the same on every node; default data/server.key
    )
    resync_seconds: float = 60.0  # how often a live feed re-reads its queue (lost pub/sub)
    # storage tuning
    sqlite_synchronous: str = "full"  # full | normal
    commit_gather_ms: float = 1.0  # how long a lone write waits for others to share its commit
    backlog: int = 4096
    shutdown_timeout_seconds: float = 10.0
    drain_seconds: float = 0.0  # on SIGTERM, /health says 503 this long before connections close

    @property
    def limits(self) -> Limits:
        """The limits announced to clients in `welcome`."""
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_envelopes_per_send=self.max_envelopes_per_send,
            max_body_bytes=self.max_body_bytes,
            max_keys_per_upload=self.max_keys_per_upload,
            keys_low_threshold=self.keys_low_threshold,
            max_group_members=self.max_group_members,
            max_media_bytes=self.max_media_bytes,
        )

    @property
    def database_path(self) -> Path:
        """The SQLite database file inside the data folder."""
        return self.data / "plauder.db"

    @property
    def media_path(self) -> Path:
        """The folder of media blobs (every node of a cluster must share it)."""
        return Path(self.media_dir) if self.media_dir else self.data / "media"

    @property
    def secret_path(self) -> Path:
        """Where the server secret lives (every node of a cluster needs the same one)."""
        return Path(self.secret_file) if self.secret_file else self.data / "server.key"

    @property
    def uses_postgres(self) -> bool:
        """Whether the database is PostgreSQL rather than the embedded SQLite."""
        return self.database.startswith(("postgres://", "postgresql://"))


_CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("text", "json"),
    "sms_sender": ("console", "http"),
    "sqlite_synchronous": ("full", "normal"),
}


_POSITIVE = (
    "max_frame_bytes",
    "max_envelopes_per_send",
    "max_body_bytes",
    "max_keys_per_upload",
    "code_ttl_seconds",
    "code_attempts",
    "requests_per_second",
    "request_burst",
    "delivery_window",
    "envelope_ttl_days",
    "dedup_ttl_days",
    "codes_per_number_per_hour",
    "claims_per_minute",
    "max_group_members",
    "max_groups_per_account",
    "group_claims_per_minute",
    "code_requests_per_connection",
    "sweep_interval_seconds",
    "auth_timeout_seconds",
    "max_bad_frames",
    "backlog",
    "shutdown_timeout_seconds",
    "db_pool_size",
    "workers",
    "resync_seconds",
    "max_media_bytes",
    "media_quota_bytes",
    "media_uploads_per_hour",
    "media_retention_days",
    "media_token_seconds",
    "turn_requests_per_minute",
)

MAX_MEDIA_BYTES = 2 * 1024**3  # the largest blob a server may allow
TURN_TTL_SECONDS = (60, 86_400)  # the shortest and longest credential lifetime allowed
MAX_TURN_URLS = 8
MIN_TURN_SECRET = 16  # characters of the shared secret, at least
# turn:host[:port][?transport=udp|tcp], host a name, an IPv4 address or [IPv6] (RFC 7065)
TURN_URL = re.compile(
    r"turns?:(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?(?:\?transport=(?:udp|tcp))?"
)


def option_names() -> list[str]:
    """Names of all options, as used in TOML and (upper-cased) in PLAUDER_* variables."""
    return [f.name for f in fields(Config)]


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Config:
    """Merge the sources in precedence order and validate the result."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or (Path(env["PLAUDER_CONFIG"]) if env.get("PLAUDER_CONFIG") else None)
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    for name in option_names():
        raw = env.get("PLAUDER_" + name.upper())
        if raw is not None:
            values[name] = raw
    values.update({k: v for k, v in flags.items() if v is not None})
    return _build(values)


def _build(values: dict[str, Any]) -> Config:
    types = typing.get_type_hints(Config)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    converted = {name: _convert(name, raw, types[name]) for name, raw in values.items()}
    config = dataclasses.replace(Config(), **converted)
    _validate(config)
    return config


def _convert(name: str, raw: Any, kind: Any) -> Any:
    """Turn a value from a flag, the environment or TOML into the option's declared type."""
    bad = ConfigError(f"option {name}: {raw!r} is not a valid {getattr(kind, '__name__', kind)}")
    if isinstance(raw, bool) and kind is not bool:
        raise bad
    try:
        if kind is Path:
            return Path(str(raw))
        if kind is str:
            if not isinstance(raw, str):
                raise bad
            return raw
        if kind is int:
            if isinstance(raw, float):
                raise bad
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise bad
            return value
        if kind == tuple[str, ...]:  # comma separated in flags and the environment
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise bad
            return tuple(i.strip() for i in items if i.strip())
    except (TypeError, ValueError) as exc:
        raise bad from exc
    raise bad


def _validate(config: Config) -> None:
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(f"option {name} must be one of {', '.join(choices)}")
    if not 0 <= config.port <= 65535:
        raise ConfigError("option port must be between 0 and 65535")
    if config.sms_sender == "http" and not config.sms_http_url:
        raise ConfigError("option sms_http_url is required with sms_sender = 'http'")
    for name in _POSITIVE:
        if not getattr(config, name) > 0:
            raise ConfigError(f"option {name} must be positive")
    if config.max_media_bytes > MAX_MEDIA_BYTES:
        raise ConfigError(f"option max_media_bytes must be at most {MAX_MEDIA_BYTES} (2 GiB)")
    if not 0 <= config.drain_seconds <= 600:
        raise ConfigError("option drain_seconds must be between 0 and 600")
    if not 0 <= config.commit_gather_ms <= 50:
        raise ConfigError("option commit_gather_ms must be between 0 and 50")
    if config.database and not config.uses_postgres:
        raise ConfigError("option database must be a postgresql:// URL (empty: SQLite in data)")
    if config.redis and not config.redis.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("option redis must be a redis:// URL")
    if config.workers > 1 and not (config.redis and config.uses_postgres):
        raise ConfigError("option workers > 1 needs database (PostgreSQL) and redis")
    if config.redis and not config.uses_postgres:
        raise ConfigError("option redis needs database (PostgreSQL): nodes must share the store")
    if config.keys_low_threshold < 0:
        raise ConfigError("option keys_low_threshold must not be negative")
    _validate_turn(config)


def _validate_turn(config: Config) -> None:
    low, high = TURN_TTL_SECONDS
    if not low <= config.turn_ttl_seconds <= high:
        raise ConfigError(f"option turn_ttl_seconds must be between {low} and {high}")
    if len(config.turn_urls) > MAX_TURN_URLS:
        raise ConfigError(f"option turn_urls takes at most {MAX_TURN_URLS} URLs")
    for url in config.turn_urls:
        match = TURN_URL.fullmatch(url)
        if match is None or not 0 < int(match["port"] or 3478) <= 65535:
            raise ConfigError(
                f"option turn_urls: {url!r} is not a TURN URL "
                "(turn:host:port?transport=udp, or turns:host:5349?transport=tcp)"
            )
    if config.turn_secret and config.turn_secret_file:
        raise ConfigError("options turn_secret and turn_secret_file: give one, not both")
    if config.turn_urls and not (config.turn_secret or config.turn_secret_file):
        raise ConfigError(
            "option turn_urls needs turn_secret or turn_secret_file "
            "(the static-auth-secret of the TURN server)"
        )
    if config.turn_secret and len(config.turn_secret) < MIN_TURN_SECRET:
        raise ConfigError(f"option turn_secret must have at least {MIN_TURN_SECRET} characters")
