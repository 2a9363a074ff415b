"""Who a device lets send, rename and share keys in a group, in its own view of the group."""

from pathlib import Path

from plauder.client.group_rights import refusal
from plauder.protocol.frames import GroupInfo, GroupMember, GroupSettings
from tests.unit.test_client_groups import ANNA, BEN, CARL, GID, ME, notice, open_book


def info(version: int, members: dict[str, str], **settings: str) -> GroupInfo:
    """A `group_info` answer as the server sends it."""
    return GroupInfo(
        id=1,
        gid=bytes.fromhex(GID),
        version=version,
        members=[GroupMember(number=n, role=r) for n, r in members.items()],  # type: ignore[arg-type]
        settings=GroupSettings(**settings),  # type: ignore[arg-type]
    )


def test_members_send_admins_rename_strangers_nothing(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [ME, BEN], 1), 10)
    record = book.record(GID)
    assert refusal(record, BEN, "send") == ""
    assert refusal(record, BEN, "share") == ""
    assert refusal(record, ANNA, "edit") == ""
    assert refusal(record, BEN, "edit") == (
        f"only admins may change the name or description of the group, and {BEN} is not one"
    )
    for act in ("send", "edit", "share"):
        assert refusal(record, CARL, act) == f"{CARL} is not a member of the group"  # type: ignore[arg-type]

    with store.transaction():
        book.apply_info(info(2, {ANNA: "admin", ME: "member", BEN: "member"}, send="admins"))
        book.apply_notice(GID, notice("settings", ANNA, [], 2), 20)
    assert "only admins may send to the group" in refusal(book.record(GID), BEN, "send")


def test_a_view_ahead_of_the_stream_still_lets_in_what_came_before_the_change(
    tmp_path: Path,
) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ME, [ANNA, BEN, CARL], 1), 10)
        book.apply_notice(GID, notice("promoted", ME, [ANNA], 2), 20)
        # the answers to our own requests, before their notices: BEN removed, ANNA demoted
        book.apply_info(info(4, {ME: "admin", ANNA: "member", CARL: "member"}))
    record = book.record(GID)
    assert BEN not in record.members
    assert refusal(record, BEN, "send") == ""  # sent before the removal, still queued
    assert refusal(record, ANNA, "edit") == ""  # an admin until the notices come

    with store.transaction():
        book.apply_notice(GID, notice("removed", ME, [BEN], 3), 30)
    assert refusal(book.record(GID), BEN, "send") == ""  # not caught up yet: version 4 is ahead
    with store.transaction():
        book.apply_notice(GID, notice("demoted", ME, [ANNA], 4), 40)
    record = book.record(GID)
    assert record.earlier is None
    assert refusal(record, BEN, "send") == f"{BEN} is not a member of the group"
    assert "only admins" in refusal(record, ANNA, "edit")


def test_a_name_from_a_key_share_before_the_members_were_known_stays_only_from_an_editor(
    tmp_path: Path,
) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.adopt_state(GID, "Gekapert", "", 500, unchecked_from=CARL)
    assert book.record(GID).name == "Gekapert"
    with store.transaction():
        book.apply_info(info(2, {ANNA: "admin", ME: "member"}))
    record = book.record(GID)
    assert (record.name, record.state_ts, record.named_by) == ("", 0, "")

    with store.transaction():
        book.adopt_state(GID, "Familie", "", 600, unchecked_from=ANNA)
        book.apply_notice(GID, notice("added", ANNA, [BEN], 3), 30)
    assert (book.record(GID).name, book.record(GID).named_by) == ("Familie", "")
