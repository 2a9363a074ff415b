"""`plauder db upgrade`: the same migrations on SQLite and PostgreSQL, safe to repeat or race."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from plauder.server.storage.schema import MIGRATIONS
from tests.conftest import ROOT, ServerProcess

LATEST = len(MIGRATIONS)


def upgrade(options: dict[str, str], data: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "plauder.cli", "db", "upgrade", "--json", "--data", str(data)]
    if "database" in options:
        cmd += ["--database", options["database"]]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    parsed: dict[str, object] = json.loads(out)
    return parsed


async def test_upgrade_creates_the_schema_that_serve_then_uses(
    backend_options: Callable[[str], dict[str, str]],
    server_factory: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    options = backend_options("server")
    racers = [upgrade(options, tmp_path / "server") for _ in range(3)]  # at once: one migrates
    for proc in racers:
        assert result(proc)["version"] == LATEST
    server = server_factory()
    assert server.sql("SELECT count(*) FROM accounts") == [(0,)]
    assert server.sql("SELECT count(*) FROM schema_version") == [(LATEST,)]
    server.stop()
    again = result(upgrade(options, tmp_path / "server"))  # nothing left to do
    assert again["version"] == LATEST
    server.start()
    assert server.sql("SELECT count(*) FROM schema_version") == [(LATEST,)]


def test_upgrade_names_a_database_it_cannot_reach(tmp_path: Path) -> None:
    proc = upgrade({"database": "postgresql://plauder@127.0.0.1:1/none"}, tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot connect to the database" in err
    assert "Traceback" not in err
