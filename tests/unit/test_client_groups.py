"""The SDK's local group state: notices, names, receipts and Megolm sessions across restarts."""

import dataclasses
from pathlib import Path

import pytest

from plauder.client.events import IdentityChanged
from plauder.client.group_book import GroupBook
from plauder.client.group_keys import GroupKeys
from plauder.client.group_store import GroupStore, WaitingMessage
from plauder.client.groups import receipt_summary
from plauder.client.keys import Keys
from plauder.client.store import LocalStore
from plauder.crypto import (
    AccountKey,
    Device,
    ReplayedMessage,
    StoreCipher,
    new_key,
)
from plauder.protocol.content import GroupState
from plauder.protocol.frames import GroupInfo, GroupMember, GroupNotice, GroupSettings

ME, ANNA, BEN, CARL = "+4915100000001", "+4915100000002", "+4915100000003", "+4915100000004"
GID = "ab" * 16
KEY = new_key()


def open_book(folder: Path) -> tuple[LocalStore, GroupBook]:
    """The local store of a profile folder and the book over its group tables."""
    store = LocalStore(folder / "store.db", StoreCipher(KEY))
    return store, GroupBook(ME, store, GroupStore(store))


def notice(action: str, actor: str, numbers: list[str], version: int) -> GroupNotice:
    """A server notice as it arrives in an envelope of type 3."""
    return GroupNotice(action=action, actor=actor, numbers=numbers, version=version)  # type: ignore[arg-type]


def lines(store: LocalStore) -> list[str]:
    """The group's system lines, oldest first."""
    return [e.body for e in store.history(GID, by_time=True) if e.sender == ""]


def test_notices_build_the_membership_and_write_each_line_once(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [ME, BEN], 1), 10)
        book.apply_notice(GID, notice("added", ANNA, [CARL], 2), 20)
        book.apply_notice(GID, notice("promoted", ANNA, [ME], 3), 30)
        again = book.apply_notice(GID, notice("added", ANNA, [CARL], 2), 20)  # redelivered
        book.apply_notice(GID, notice("removed", ME, [BEN], 4), 40)
    record = book.record(GID)
    assert again is None
    assert record.members == {ANNA: "admin", ME: "admin", CARL: "member"}
    assert (record.role, record.version, record.rotate) == ("admin", 4, True)
    assert lines(store) == [
        f"{ANNA} created the group",
        f"{ANNA} added {CARL}",
        f"{ANNA} made {ME} admin",
        f"{ME} removed {BEN}",
    ]


def test_a_newer_view_from_the_server_is_not_undone_by_older_notices(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    members = [GroupMember(number=ANNA, role="admin"), GroupMember(number=ME, role="member")]
    with store.transaction():
        book.apply_info(
            GroupInfo(
                id=1, gid=bytes.fromhex(GID), version=5, members=members, settings=GroupSettings()
            )
        )
        event = book.apply_notice(GID, notice("added", ANNA, [BEN], 3), 30)
    assert book.record(GID).members == {ANNA: "admin", ME: "member"}
    assert event is not None and event.text == f"{ANNA} added {BEN}"  # the line still shows


def test_removal_of_this_account_ends_its_role(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [ME], 1), 10)
        book.apply_notice(GID, notice("removed", ANNA, [ME], 2), 20)
    assert book.record(GID).role == ""
    assert ME not in book.record(GID).members


def test_the_newest_name_wins_and_strangers_changes_are_kept_apart(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [ME, BEN], 1), 10)
        book.apply_state(GID, ANNA, GroupState(id="s1", ts=100, name="Familie"), 100)
        late = book.apply_state(GID, BEN, GroupState(id="s0", ts=50, name="Alt"), 110)
        renamed = book.apply_state(GID, BEN, GroupState(id="s2", ts=200, name="Koch"), 200)
    assert late is None
    assert renamed is not None and (renamed.action, renamed.name) == ("renamed", "Koch")
    assert book.record(GID).name == "Koch"
    assert lines(store)[-2:] == [
        f"{ANNA} named the group “Familie”",
        f"{BEN} renamed the group to “Koch”",
    ]
    store.close()
    raw = (tmp_path / "store.db").read_bytes()
    assert b"Familie" not in raw and b"Koch" not in raw  # names are sealed at rest


def test_a_member_back_in_the_group_learns_the_new_name_without_crediting_the_messenger(
    tmp_path: Path,
) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [ME, BEN], 1), 10)
        book.apply_state(GID, ANNA, GroupState(id="s1", ts=100, name="Familie"), 100)
        book.apply_notice(GID, notice("removed", ANNA, [ME], 2), 110)
        # BEN renames to "Koch" at 200 while this account is out; then ANNA adds it again
        book.apply_notice(GID, notice("added", ANNA, [ME], 4), 300)
        lagging = book.adopt_state(GID, "Familie", "", 100)  # a share from a member behind
        shared = book.adopt_state(GID, "Koch", "", 200)  # the share before ANNA's welcome
        passed_on = book.apply_state(GID, ANNA, GroupState(id="w", ts=200, name="Koch"), 310)
        later = book.apply_state(GID, BEN, GroupState(id="s3", ts=400, name="Köche"), 400)
    assert lagging is None and passed_on is None
    assert shared is not None and (shared.action, shared.actor) == ("renamed", "")
    assert later is not None and later.actor == BEN
    assert lines(store)[-3:] == [
        f"{ANNA} added {ME}",
        "the group is named “Koch”",
        f"{BEN} renamed the group to “Köche”",
    ]


def test_a_newcomers_first_state_message_names_nobody(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [BEN], 1), 10)
        book.apply_notice(GID, notice("joined", ME, [ME], 2), 20)
        first = book.apply_state(GID, ANNA, GroupState(id="s1", ts=5, name="Familie"), 30)
        second = book.apply_state(GID, ANNA, GroupState(id="s2", ts=40, name="Koch"), 40)
    assert first is not None and first.actor == "" and first.text == "the group is named “Familie”"
    assert second is not None and second.text == f"{ANNA} renamed the group to “Koch”"
    assert book.record(GID).newcomer is False


def test_a_changed_safety_number_shows_in_the_groups_of_that_member(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    with store.transaction():
        book.apply_notice(GID, notice("created", ANNA, [ME, BEN], 1), 10)
        events = book.identity_changed(IdentityChanged(BEN, "old", "new"), 50)
        none = book.identity_changed(IdentityChanged(CARL, "old", "new"), 50)
    assert [e.action for e in events] == ["safety_number"] and none == []
    assert lines(store)[-1] == f"the safety number with {BEN} changed: compare it again"


@pytest.mark.parametrize(
    ("receipts", "summary"),
    [
        ({}, "sent"),
        ({ANNA: "sent", BEN: "delivered"}, "delivered to 1 of 2"),
        ({ANNA: "delivered", BEN: "delivered"}, "delivered to all"),
        ({ANNA: "read", BEN: "delivered", CARL: "delivered"}, "delivered to all, read by 1 of 3"),
        ({ANNA: "read", BEN: "sent"}, "delivered to 1 of 2, read by 1 of 2"),
        ({ANNA: "read", BEN: "read"}, "read by all"),
    ],
)
def test_receipts_in_words(receipts: dict[str, str], summary: str) -> None:
    assert receipt_summary(receipts) == summary


def test_sessions_survive_a_restart_without_reusing_or_repeating_an_index(tmp_path: Path) -> None:
    sender_dir, receiver_dir = tmp_path / "sender", tmp_path / "receiver"
    sender_dir.mkdir()
    receiver_dir.mkdir()
    account = AccountKey.generate()
    device = Device.create()
    keys_of_sender = account.sign_device(device.identity_key, device.signing_key, 1)

    def open_keys(folder: Path, adopt: Device | None) -> tuple[LocalStore, GroupKeys]:
        store = LocalStore(folder / "store.db", StoreCipher(KEY))
        keys = Keys(store)
        if adopt is not None:
            with store.transaction():
                keys.adopt(adopt)
        else:
            keys.load()
        return store, GroupKeys(keys, GroupStore(store), store.cipher.pickle_key)

    store, sender = open_keys(sender_dir, device)
    sender.start(GID, 0)
    first = sender.encrypt(GID, b"eins", 0)
    share = sender.key_share(GID)
    with store.transaction():
        sender.persist()
    store.close()

    store, sender = open_keys(sender_dir, None)
    second = sender.encrypt(GID, b"zwei", 0)
    assert second.message_index == first.message_index + 1  # the restored ratchet moved on
    store.close()

    rstore, receiver = open_keys(receiver_dir, Device.create())
    receiver.import_share(share, device.identity_key, keys_of_sender)
    got = receiver.decrypt(GID, device.identity_key, second.session_id, second.ciphertext)
    assert got.plaintext == b"zwei"
    with rstore.transaction():
        receiver.persist()
    rstore.close()

    rstore, receiver = open_keys(receiver_dir, None)
    with pytest.raises(ReplayedMessage):  # seen before the restart: not shown twice
        receiver.decrypt(GID, device.identity_key, second.session_id, second.ciphertext)


def test_messages_waiting_for_a_key_are_kept_in_order(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    waiting = [WaitingMessage(0, GID, ANNA, 1, "ik", "s1", 2, bytes([i]), i) for i in range(3)]
    with store.transaction():
        for message in waiting:
            book.groups.add_waiting(message)
        book.groups.add_waiting(WaitingMessage(0, GID, ANNA, 1, "ik", "other", 2, b"x", 9))
    kept = book.groups.waiting("ik", "s1")
    assert [m.ciphertext for m in kept] == [b"\x00", b"\x01", b"\x02"]
    book.groups.remove_waiting(kept[0].seq)
    assert book.groups.count_waiting() == 3


def test_a_removal_already_seen_in_a_view_asks_for_one_new_session_only(tmp_path: Path) -> None:
    store, book = open_book(tmp_path)
    gid = bytes.fromhex(GID)
    before = [GroupMember(number=ME, role="admin"), GroupMember(number=BEN, role="member")]
    with store.transaction():
        book.apply_info(
            GroupInfo(id=1, gid=gid, version=1, members=before, settings=GroupSettings())
        )
        book.apply_info(
            GroupInfo(id=2, gid=gid, version=2, members=before[:1], settings=GroupSettings())
        )
    assert book.record(GID).rotate  # the answer to our own removal
    with store.transaction():  # the next send started a new session
        book.groups.save(dataclasses.replace(book.record(GID), rotate=False))
        book.apply_notice(GID, notice("removed", ME, [BEN], 2), 20)  # the notice comes later
    assert not book.record(GID).rotate
    assert lines(store) == [f"{ME} removed {BEN}"]
