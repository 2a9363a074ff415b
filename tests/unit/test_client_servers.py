"""A profile's list of server URLs: parsing, and the order a client tries them in."""

import pytest

from plauder.client import BadServerUrl
from plauder.client.servers import ServerOrder, parse_servers

A, B, C = "https://a.example:8443", "https://b.example", "http://127.0.0.1:8080"


def test_repeated_and_comma_separated_values_keep_their_order_once() -> None:
    assert parse_servers([f"{A}/", f"{B},{C}", f" {A} , {B}"]) == [A, B, C]
    assert parse_servers(["localhost:8080"]) == ["localhost:8080"]
    assert parse_servers(["wss://chat.example/"]) == ["wss://chat.example"]


@pytest.mark.parametrize(
    "bad",
    ["", " , ", "ftp://a.example", "http://", "http://a.example/v1/ws", "http://a:port", "a?x=1"],
)
def test_malformed_lists_are_refused(bad: str) -> None:
    with pytest.raises(BadServerUrl):
        parse_servers([bad])


def test_listed_order_starts_at_the_last_that_worked() -> None:
    order = ServerOrder(shuffle=False)
    assert order.round([A, B, C], None) == [A, B, C]
    assert order.round([A, B, C], B) == [B, C, A]
    assert order.round([A, B, C], "http://gone.example") == [A, B, C]


def test_moving_on_tries_the_others_first_and_the_lost_one_last() -> None:
    order = ServerOrder(shuffle=False)
    assert order.round([A, B, C], B, moving_on=True) == [C, A, B]
    assert order.round([A, B, C], C, moving_on=True) == [A, B, C]
    assert order.round([A], A, moving_on=True) == [A]


def test_shuffled_order_is_fixed_per_client_and_spreads_clients() -> None:
    servers = [A, B, C]
    order = ServerOrder()
    first = order.base(servers)
    assert sorted(first) == sorted(servers)
    assert order.base(list(reversed(servers))) == first  # the list's order does not matter
    # a URL added later slots in without reordering the others
    grown = order.base([*servers, "https://d.example"])
    assert [u for u in grown if u in servers] == first
    # many clients start on every server
    starts = {ServerOrder().round(servers, None)[0] for _ in range(300)}
    assert starts == set(servers)
