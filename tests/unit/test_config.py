"""Server configuration: flags > PLAUDER_* environment > TOML file > defaults."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plauder.server.config import Config, ConfigError, load_config, option_names

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = [f.name for f in dataclasses.fields(Config) if f.type in (int, float, "int", "float")]
FLOATS = [f.name for f in dataclasses.fields(Config) if f.type in (float, "float")]


def toml(tmp_path: Path, text: str) -> Path:
    """A TOML config file with this content."""
    path = tmp_path / "plauder.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence -------------------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    config = load_config({}, env={})
    assert config == Config()
    assert (config.port, config.max_frame_bytes, config.code_attempts) == (8080, 256 * 1024, 5)


def test_each_source_overrides_the_ones_below(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        'max_bad_frames = 7\nrequest_burst = 7\nrequests_per_second = 7.5\nhost = "10.0.0.7"\n',
    )
    env = {"PLAUDER_REQUEST_BURST": "8", "PLAUDER_REQUESTS_PER_SECOND": "8.5"}
    flags = {"requests_per_second": "9.5", "port": None}  # None: the flag was not given

    config = load_config(flags, env=env, config_file=path)
    assert config.code_attempts == Config().code_attempts  # default
    assert config.max_bad_frames == 7  # file
    assert config.host == "10.0.0.7"  # file
    assert config.request_burst == 8  # env over file
    assert config.requests_per_second == 9.5  # flag over env and file
    assert config.port == 8080  # an absent flag hides nothing


def test_values_get_the_type_of_their_option() -> None:
    config = load_config(
        {"auth_timeout_seconds": "0.5"},
        env={"PLAUDER_PORT": "9001", "PLAUDER_LOG_LEVEL": "debug"},
    )
    assert config.port == 9001
    assert config.auth_timeout_seconds == 0.5
    assert config.log_level == "debug"


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_data_folder_from_any_source_is_a_path(source: str, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    if source == "flag":  # `--set data=...` passes a string
        config = load_config({"data": str(folder)}, env={})
    elif source == "env":
        config = load_config({}, env={"PLAUDER_DATA": str(folder)})
    else:
        config = load_config({}, env={}, config_file=toml(tmp_path, f'data = "{folder}"\n'))
    assert isinstance(config.data, Path)
    assert config.database_path == folder / "plauder.db"  # what the server opens


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = toml(tmp_path, "max_envelopes_per_send = 3\n")
    config = load_config({}, env={"PLAUDER_CONFIG": str(path)})
    assert config.max_envelopes_per_send == 3
    assert config.limits.max_envelopes_per_send == 3  # and announced to clients


def test_explicit_config_file_wins_over_the_environments(tmp_path: Path) -> None:
    named = toml(tmp_path, "max_body_bytes = 1000\n")
    other = tmp_path / "other.toml"
    other.write_text("max_body_bytes = 2000\n", encoding="utf-8")
    config = load_config({}, env={"PLAUDER_CONFIG": str(other)}, config_file=named)
    assert config.max_body_bytes == 1000


def test_unrelated_environment_is_ignored() -> None:
    config = load_config({}, env={"PLAUDER_NOT_AN_OPTION": "1", "HOME": "/root"})
    assert config == Config()


def test_limits_announced_to_clients_follow_the_config() -> None:
    config = load_config(
        {"max_frame_bytes": "5000", "max_keys_per_upload": "7", "keys_low_threshold": "3"},
        env={},
    )
    limits = config.limits
    assert (limits.max_frame_bytes, limits.max_keys_per_upload) == (5000, 7)
    assert limits.keys_low_threshold == 3


def test_media_options() -> None:
    config = load_config({"max_media_bytes": "5000", "media_dir": "/srv/blobs"}, env={})
    assert config.limits.max_media_bytes == 5000  # announced to clients
    assert config.media_path == Path("/srv/blobs")
    assert load_config({"data": "d"}, env={}).media_path == Path("d") / "media"
    assert Config().max_media_bytes == 100 * 1024 * 1024
    assert load_config({"max_media_bytes": str(2 * 1024**3)}, env={}).max_media_bytes > 0
    with pytest.raises(ConfigError, match="max_media_bytes"):
        load_config({"max_media_bytes": str(2 * 1024**3 + 1)}, env={})


# --- bad values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", "eighty"),
        ("port", "70000"),
        ("max_frame_bytes", "big"),
        ("max_frame_bytes", "0"),
        ("requests_per_second", "fast"),
        ("requests_per_second", "0"),
        ("code_attempts", "-3"),
        ("log_level", "loud"),
        ("log_format", "xml"),
        ("sms_sender", "pigeon"),
        ("sqlite_synchronous", "off"),
        ("auth_timeout_seconds", "0"),
        ("sweep_interval_seconds", "-1"),
        ("media_quota_bytes", "0"),
        ("media_token_seconds", "0"),
        ("media_retention_days", "0"),
    ],
)
def test_bad_values_name_the_option(name: str, value: str) -> None:
    for source in ("flag", "env"):
        with pytest.raises(ConfigError, match=name):
            if source == "flag":
                load_config({name: value}, env={})
            else:
                load_config({}, env={f"PLAUDER_{name.upper()}": value})


def test_bad_value_in_the_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_body_bytes"):
        load_config({}, env={}, config_file=toml(tmp_path, 'max_body_bytes = "lots"\n'))


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("port = true", "port"),  # int(True) would be 1
        ("max_body_bytes = 1000.5", "max_body_bytes"),  # int(1000.5) would cut it to 1000
    ],
)
def test_wrongly_typed_toml_values_are_rejected(tmp_path: Path, line: str, name: str) -> None:
    # the same text in PLAUDER_MAX_BODY_BYTES=1000.5 is refused; the file must be too
    with pytest.raises(ConfigError, match=name):
        load_config({}, env={}, config_file=toml(tmp_path, line + "\n"))


def test_http_sender_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="sms_http_url"):
        load_config({"sms_sender": "http"}, env={})
    config = load_config({"sms_sender": "http", "sms_http_url": "http://sms.example/"}, env={})
    assert config.sms_http_url == "http://sms.example/"


def accepted(names: list[str], value: str) -> list[str]:
    """The options that load without error when set to `value`."""
    ok = []
    for name in names:
        try:
            load_config({name: value}, env={})
        except ConfigError as exc:
            assert name in str(exc)  # the message names the option
        else:
            ok.append(name)
    return ok


def test_negative_numbers_are_rejected() -> None:
    # no count, size, rate or duration of the server is meaningful below zero
    assert accepted([n for n in NUMERIC if n != "port"], "-1") == []


def test_not_a_number_is_rejected() -> None:
    # float("nan") parses, but NaN makes every comparison false: `nan <= 0` lets it
    # through, and a NaN rate or timeout then breaks what uses it
    assert FLOATS  # the float options were found
    assert accepted(FLOATS, "nan") == []


def test_unreadable_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config({}, env={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config({}, env={}, config_file=toml(tmp_path, "port = = 1\n"))


# --- unknown options --------------------------------------------------------------------


def test_unknown_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_frame_byte"):
        load_config({"max_frame_byte": "5"}, env={})  # a typo
    with pytest.raises(ConfigError, match="colour"):
        load_config({}, env={}, config_file=toml(tmp_path, 'colour = "blue"\n'))


# --- the command line -------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m plauder.cli ...` with a wide terminal, so help lines are not wrapped."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "plauder.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=30,
        check=False,
    )


def test_serve_help_lists_every_option() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    for name in option_names():
        assert name in result.stdout, f"{name} missing from `plauder serve --help`"
    for flag in ("--host", "--port", "--data", "--config", "--set"):
        assert flag in result.stdout


def test_serve_refuses_a_bad_option_before_starting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad = run_cli("serve", "--data", str(data), "--set", "max_frame_bytes=huge")
    assert bad.returncode != 0
    assert "max_frame_bytes" in bad.stderr + bad.stdout
    unknown = run_cli("serve", "--data", str(data), "--set", "max_frames=1")
    assert unknown.returncode != 0
    assert "max_frames" in unknown.stderr + unknown.stdout
    assert not data.exists()  # nothing was started
