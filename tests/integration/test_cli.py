"""The README's tour, typed as a user would, against a real server."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, register

A, B = "+4915100000001", "+4915100000002"


def plauder(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the plauder command line."""
    return subprocess.run(
        [sys.executable, "-m", "plauder.cli", "--config-dir", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def lines(out: str) -> list[dict[str, Any]]:
    """The JSON objects printed one per line."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_register_chat_receipts_history(server: ServerProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "profiles"
    for number in (A, B):
        out = plauder(cfg, "-a", number, "register", "--server", server.url).stdout
        assert f"plauder -a {number} verify" in out
        out = plauder(cfg, "-a", number, "verify", server.code_for(number)).stdout
        assert f"Registered {number}" in out

    sent = lines(plauder(cfg, "--json", "-a", A, "send", "-m", "Hallo", B).stdout)
    assert sent[0]["type"] == "sent"
    mid = sent[0]["id"]

    got = plauder(cfg, "-a", B, "receive").stdout
    assert f"{A}: Hallo" in got

    receipts = lines(plauder(cfg, "-a", A, "receive", "--json").stdout)
    assert {"type": "receipt", "sender": B, "status": "delivered", "ids": [mid]} in receipts

    assert "1 message(s)" in plauder(cfg, "-a", B, "mark-read", A).stdout
    receipts = lines(plauder(cfg, "-a", A, "--json", "receive").stdout)
    assert [r["status"] for r in receipts if r["type"] == "receipt"] == ["read"]

    history = lines(plauder(cfg, "-a", A, "--json", "history", B).stdout)
    assert [(h["body"], h["status"]) for h in history] == [("Hallo", "read")]
    assert "you: Hallo  ✓✓ read" in plauder(cfg, "-a", A, "history", B).stdout

    # nothing left: receive exits promptly with nothing to print
    assert plauder(cfg, "-a", B, "receive").stdout == ""


def test_safety_number_whoami_and_errors(server: ServerProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "profiles"
    for number in (A, B):
        plauder(cfg, "-a", number, "register", "--server", server.url)
        plauder(cfg, "-a", number, "verify", server.code_for(number))

    mine = lines(plauder(cfg, "--json", "-a", A, "safety-number", B).stdout)[0]
    theirs = lines(plauder(cfg, "--json", "-a", B, "safety-number", A).stdout)[0]
    assert mine["digits"] == theirs["digits"] and len(mine["digits"]) == 60
    shown = plauder(cfg, "-a", A, "safety-number", B).stdout
    assert "█" in shown or "▀" in shown  # the QR code in the terminal

    who = lines(plauder(cfg, "-a", A, "whoami", "--json").stdout)[0]
    assert (who["number"], who["servers"]) == (A, [server.url])

    bad = plauder(cfg, "-a", A, "send", "-m", "x", "+4915199999999", check=False)
    assert bad.returncode == 1 and "not on this server" in bad.stderr
    wrong = plauder(cfg, "-a", "+4915100000003", "verify", "000000", check=False)
    assert wrong.returncode == 1
    assert "plauder:" in wrong.stderr

    helptext = plauder(cfg, "--help").stdout
    for command in (
        "register",
        "verify",
        "send",
        "receive",
        "history",
        "safety-number",
        "mark-read",
        "whoami",
        "serve",
    ):
        assert command in helptext


async def test_numbers_as_typed_receipts_in_words_and_empty_lists(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "profiles"
    for number in (A, B):
        await (await register(server, cfg, number)).close()

    def run(number: str, *args: str) -> str:
        return plauder(cfg, "-a", number, *args).stdout

    assert run(A, "groups") == "no groups yet\n"
    assert run(A, "--json", "groups") == ""
    assert run(A, "history", "+49 151 00000099") == "no messages with +4915100000099\n"
    assert run(A, "--json", "history", "+4915100000099") == ""

    sent = run(A, "send", "-m", "Hallo", "+49 151 00000002")
    assert sent.startswith(f"✓ sent to {B} (")
    mid = sent.split("(")[1].rstrip(")\n")
    run(B, "receive")
    assert run(A, "receive") == f"✓✓ delivered to {B}: {mid}\n"
    run(B, "mark-read", A)
    assert run(A, "receive") == f"✓✓ read by {B}: {mid}\n"
    assert run(A, "history", B).endswith("you: Hallo  ✓✓ read\n")


def test_sent_while_the_server_is_down_goes_out_with_the_next_receive(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "profiles"
    for number in (A, B):
        plauder(cfg, "-a", number, "register", "--server", server.url)
        plauder(cfg, "-a", number, "verify", server.code_for(number))
    plauder(cfg, "-a", A, "send", "-m", "vorher", B)  # the session exists now
    assert "vorher" in plauder(cfg, "-a", B, "receive").stdout
    server.kill()

    text = plauder(cfg, "-a", A, "send", "-m", "im Funkloch", B, "--wait", "2", check=False)
    assert text.returncode == 75, text.stderr  # queued, not failed
    assert text.stdout.startswith(f"⏳ queued for {B} (")
    note = tmp_path / "notiz.txt"
    note.write_text("Dienstplan: Montag früh\n")
    queued = lines(
        plauder(
            cfg, "--json", "-a", A, "send", "--attach", str(note), B, "--wait", "2", check=False
        ).stdout
    )
    assert queued[0]["type"] == "queued"
    assert "im Funkloch  …" in plauder(cfg, "-a", A, "history", B).stdout  # pending

    server.start()
    plauder(cfg, "-a", A, "receive")  # connects, and what was queued goes out
    history = lines(plauder(cfg, "-a", A, "--json", "history", B).stdout)
    assert [h["status"] for h in history[-2:]] == ["sent", "sent"]
    got = plauder(cfg, "-a", B, "receive", "--download-dir", str(tmp_path / "in")).stdout
    assert f"{A}: im Funkloch" in got and "📎 notiz.txt" in got
    assert (tmp_path / "in" / "notiz.txt").read_text() == "Dienstplan: Montag früh\n"
