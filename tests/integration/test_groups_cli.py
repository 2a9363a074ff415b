"""The group commands of the issue, typed as users would, against a real server."""

from pathlib import Path

from tests.conftest import ServerProcess, register
from tests.integration.test_cli import lines, plauder

A, B, C, D, E = (f"+49151000000{i}" for i in range(11, 16))


async def test_group_create_send_receive_manage_and_list(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "profiles"
    for number in (A, B, C, D, E):  # registered as `plauder register` does (test_cli.py)
        await (await register(server, cfg, number)).close()

    def run(number: str, *args: str) -> str:
        return plauder(cfg, "-a", number, *args).stdout

    gid = run(A, "group", "create", "Familie", "--member", B, "--member", C).strip()
    assert len(gid) == 32
    sent = lines(run(A, "--json", "send", "-m", "Essen um 7?", "--group", "Familie"))
    assert sent[0]["group"] == gid
    assert f"[Familie] {A}: Essen um 7?" in run(B, "receive")
    assert f"[Familie] {A}: Essen um 7?" in run(C, "receive")
    run(B, "send", "-m", "Ja, gern", "--group", gid)  # by id works too
    assert f"[Familie] {B}: Ja, gern" in run(A, "receive")

    assert "1 message(s)" in run(B, "mark-read", "Familie")
    run(A, "receive")
    info = lines(run(A, "--json", "group", "info", "Familie"))[0]
    assert info["members"] == {A: "admin", B: "member", C: "member"}
    (mine,) = [m for m in info["messages"] if m["body"] == "Essen um 7?"]
    assert mine["receipts"] == {B: "read", C: "delivered"}

    run(A, "group", "add", "Familie", D)
    run(A, "group", "remove", "Familie", C)
    run(A, "group", "promote", "Familie", B)
    run(A, "group", "rename", "Familie", "Familie Koch")
    run(A, "group", "describe", "Familie Koch", "Jeden Sonntag")
    got = run(D, "receive")
    assert f"{A} renamed the group to “Familie Koch”" in got
    assert f"{A} removed {C}" in got
    assert f"[Familie Koch] {A} changed the description: Jeden Sonntag" in got

    link = run(A, "group", "invite-link", "Familie Koch").strip()
    assert link.startswith("plauder://join/")
    assert f"joined Familie Koch ({gid})" in run(E, "group", "join", link)  # the link's card
    run(B, "group", "leave", gid)  # B has not received the new name yet
    run(A, "send", "-m", "Willkommen, E!", "--group", "Familie Koch")
    got = run(E, "receive")
    assert f"[Familie Koch] {A}: Willkommen, E!" in got and f"{B} left" in got
    listed = lines(run(E, "--json", "groups"))
    assert [(g["name"], g["members"], g["unread"]) for g in listed] == [("Familie Koch", 3, 1)]

    run(A, "group", "invite-link", "Familie Koch", "--revoke")
    refused = plauder(cfg, "-a", C, "group", "join", link, check=False)
    assert refused.returncode == 1 and "invalid_link" in refused.stderr

    history = run(A, "history", "Familie Koch")
    assert history.index("created the group") < history.index("you: Essen um 7?")
    assert "you: Willkommen, E!" in history


async def test_a_removed_member_rejoins_and_the_lines_say_who_did_what(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Receipts, a send refused after a removal, and a rename C missed while it was out."""
    cfg = tmp_path / "profiles"
    for number in (A, B, C, D):
        await (await register(server, cfg, number)).close()

    def run(number: str, *args: str) -> str:
        return plauder(cfg, "-a", number, *args).stdout

    run(A, "group", "create", "Familie", "--member", B, "--member", C)
    mid = lines(run(A, "--json", "send", "-m", "Essen um 7?", "--group", "Familie"))[0]["id"]
    run(B, "receive")
    run(C, "receive")
    run(B, "mark-read", "Familie")
    got = run(A, "receive")
    assert f"✓✓ [Familie] delivered to {B}: {mid}" in got
    assert f"✓✓ [Familie] read by {B}: {mid}" in got

    run(A, "group", "add", "Familie", D)
    run(A, "group", "remove", "Familie", C)
    refused = plauder(
        cfg, "-a", C, "send", "-m", "bin ich noch drin?", "--group", "Familie", check=False
    )
    assert refused.returncode == 1 and "unknown_group" in refused.stderr
    assert "you: bin ich noch drin?  ✗ failed" in run(C, "history", "Familie")
    info = run(C, "group", "info", "Familie")
    assert "you: bin ich noch drin?\n  failed" in info and "you: not a member" in info, info
    (failed,) = lines(run(C, "--json", "group", "info", "Familie"))[0]["messages"][-1:]
    assert (failed["body"], failed["status"]) == ("bin ich noch drin?", "failed")

    run(A, "group", "promote", "Familie", B)
    run(B, "receive")
    run(B, "group", "rename", "Familie", "Familie Koch")
    run(A, "receive")
    link = run(A, "group", "invite-link", "Familie Koch").strip()
    # the link's card tells C the current name at once; A's device tells it again
    assert "joined Familie Koch" in run(C, "group", "join", link)
    run(A, "receive")
    run(C, "receive")
    history = run(C, "history", "Familie Koch")
    assert "renamed" not in history and "· the group is named “Familie Koch”" in history, history
    assert f"· {A} removed {C}" in history and f"· {C} joined" in history
    run(D, "receive")
    history = run(D, "history", "Familie Koch")
    assert f"· {A} added {D}" in history and "—:" not in history
    assert f"· {B} renamed the group to “Familie Koch”" in history, history
