"""TURN credentials (coturn's shared-secret REST scheme) and the turn_* options."""

import base64
from pathlib import Path

import pytest

from plauder.clock import ManualClock
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import GetTurn
from plauder.server.calls import Calls, load_turn_secret, turn_credential
from plauder.server.config import Config, ConfigError, load_config
from plauder.server.errors import ServiceError
from plauder.server.metrics import Metrics
from plauder.server.storage.base import Sender

SECRET = "correct horse battery staple"
URL = "turn:turn.example.net:3478?transport=udp"
ALICE = Sender(42, "+4915100000001", 7, 1)


def test_the_credential_is_the_hmac_sha1_of_the_username() -> None:
    # the password as `openssl dgst -sha1 -hmac SECRET -binary | base64` computes it
    credential = turn_credential(SECRET.encode(), 42, 1_700_003_600)
    assert credential.username == "1700003600:42"
    assert credential.password == "FaRhjgurcW5e7pKVk+DSo3YIea8="
    assert credential.expires == 1_700_003_600


def test_another_secret_expiry_or_account_gives_another_password() -> None:
    one = turn_credential(SECRET.encode(), 42, 1_700_003_600).password
    assert turn_credential(b"another secret of enough length", 42, 1_700_003_600).password != one
    assert turn_credential(SECRET.encode(), 42, 1_700_003_601).password != one
    assert turn_credential(SECRET.encode(), 43, 1_700_003_600).password != one
    assert len(base64.b64decode(one)) == 20


def calls(clock: ManualClock, metrics: Metrics, **options: str) -> Calls:
    """A Calls service over these options."""
    config = load_config(options, env={})
    return Calls(config, load_turn_secret(config), clock, metrics)


def test_calls_answer_urls_and_a_credential_for_the_ttl() -> None:
    clock, metrics = ManualClock(now_ms=1_700_000_000_500), Metrics()
    service = calls(clock, metrics, turn_urls=URL, turn_secret=SECRET, turn_ttl_seconds="600")
    answer = service.turn(GetTurn(id=5), ALICE, lambda: True)
    assert (answer.id, answer.urls) == (5, [URL])
    assert answer.username == "1700000600:42"  # unix seconds, the account id; no number
    assert answer.password == turn_credential(SECRET.encode(), 42, 1_700_000_600).password
    assert answer.expires == 1_700_000_600_000  # milliseconds, as every time on the wire
    assert metrics.turn_credentials_issued == 1


def test_without_relays_the_answer_is_empty_and_nothing_is_counted() -> None:
    metrics = Metrics()
    answer = calls(ManualClock(), metrics).turn(GetTurn(id=1), ALICE, lambda: True)
    assert (answer.urls, answer.username, answer.password, answer.expires) == ([], "", "", 0)
    assert metrics.turn_credentials_issued == 0


def test_a_request_over_the_limit_is_rate_limited() -> None:
    service = calls(ManualClock(), Metrics(), turn_urls=URL, turn_secret=SECRET)
    with pytest.raises(ServiceError) as refused:
        service.turn(GetTurn(id=1), ALICE, lambda: False)
    assert refused.value.code is ErrorCode.RATE_LIMITED


# --- options ---------------------------------------------------------------------------


def test_no_relay_by_default() -> None:
    config = Config()
    assert (config.turn_urls, config.turn_secret, config.turn_secret_file) == ((), "", "")
    assert (config.turn_ttl_seconds, config.turn_requests_per_minute) == (3600, 30)
    assert load_turn_secret(config) == b""


def test_urls_from_flags_and_environment_are_comma_separated(tmp_path: Path) -> None:
    two = f"{URL}, turns:turn.example.net:5349?transport=tcp"
    config = load_config({"turn_urls": two, "turn_secret": SECRET}, env={})
    assert config.turn_urls == (URL, "turns:turn.example.net:5349?transport=tcp")
    env = {"PLAUDER_TURN_URLS": URL, "PLAUDER_TURN_SECRET": SECRET}
    assert load_config({}, env=env).turn_urls == (URL,)
    path = tmp_path / "plauder.toml"
    path.write_text(f'turn_urls = ["{URL}", "turn:[::1]:3478"]\nturn_secret = "{SECRET}"\n')
    assert load_config({}, env={}, config_file=path).turn_urls == (URL, "turn:[::1]:3478")


def test_the_secret_is_not_in_the_repr() -> None:
    config = load_config({"turn_urls": URL, "turn_secret": SECRET}, env={})
    assert SECRET not in repr(config)


def test_the_secret_file_is_read_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "turn.secret"
    path.write_text(SECRET + "\n")
    config = load_config({"turn_urls": URL, "turn_secret_file": str(path)}, env={})
    assert load_turn_secret(config) == SECRET.encode()
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="turn_secret_file"):
        load_turn_secret(config)
    path.unlink()
    with pytest.raises(ConfigError, match="turn_secret_file: cannot read"):
        load_turn_secret(config)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"turn_urls": URL}, "turn_secret"),  # a relay needs the secret
        ({"turn_urls": "stun:stun.example.net:3478", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": "https://turn.example.net/", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": "turn:", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": "turn:host:99999", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": "turn:host:0", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": "turn:host?transport=sctp", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": "turn:user@host", "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": ",".join([URL] * 9), "turn_secret": SECRET}, "turn_urls"),
        ({"turn_urls": URL, "turn_secret": "short"}, "turn_secret"),
        ({"turn_urls": URL, "turn_secret": SECRET, "turn_secret_file": "/x"}, "turn_secret"),
        ({"turn_ttl_seconds": "59"}, "turn_ttl_seconds"),
        ({"turn_ttl_seconds": "86401"}, "turn_ttl_seconds"),
        ({"turn_requests_per_minute": "0"}, "turn_requests_per_minute"),
    ],
)
def test_bad_turn_options_name_the_option(options: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(options, env={})


def test_a_toml_list_of_other_things_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plauder.toml"
    path.write_text("turn_urls = [3478]\n")
    with pytest.raises(ConfigError, match="turn_urls"):
        load_config({}, env={}, config_file=path)
