"""grpyc.registry.wire and .table: the registry's decisions, fed bytes and values, no sockets."""

import logging

import pytest

from grpyc import brine
from grpyc.registry import RegistryLimits, RegistryTable
from grpyc.registry.wire import (
    InvalidRequestError,
    datagram_reply_budget,
    fit_reply,
    parse_request,
)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def request(cmd, args):
    return brine.dump(("RPYC", cmd, args))


SERVERS = tuple((f"10.0.{index}.1", 18000 + index) for index in range(40))


# ---------------------------------------------------------------------------
# wire
# ---------------------------------------------------------------------------


def test_fit_reply_keeps_the_longest_prefix_that_fits_every_budget():
    for budget in range(1, 700):
        encoded, left_out = fit_reply(SERVERS, budget)
        kept = SERVERS[: len(SERVERS) - left_out]

        assert brine.load(encoded) == kept, budget
        assert len(encoded) <= max(budget, 1), budget
        if left_out:
            # One more entry would not have fitted.
            assert len(brine.dump(SERVERS[: len(kept) + 1])) > budget, budget


def test_fit_reply_leaves_results_that_fit_and_scalars_whole():
    assert fit_reply(SERVERS[:3], 1500) == (brine.dump(SERVERS[:3]), 0)
    assert fit_reply("OK", 1) == (brine.dump("OK"), 0)
    assert fit_reply(None, 1) == (brine.dump(None), 0)


def test_datagram_reply_budget_is_a_multiple_of_the_request_up_to_a_datagram():
    assert datagram_reply_budget(19, 10) == 190
    assert datagram_reply_budget(16, 50) == 800
    assert datagram_reply_budget(1000, 10) == 1500


def test_parse_request_refuses_nesting_deeper_than_any_request():
    deep = request("QUERY", ((((("x",),),),),))
    with pytest.raises(InvalidRequestError, match=r"undecodable request of \d+ bytes"):
        parse_request(deep, 1500)
    assert parse_request(request("register", (("a", "b"), 5)), 1500) == (
        "REGISTER",
        (("a", "b"), 5),
    )


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "8"])
def test_limits_must_be_positive_ints(value):
    with pytest.raises(ValueError, match=rf"max_entries must be an int >= 1, got {value!r}"):
        RegistryLimits(max_entries=value)


# ---------------------------------------------------------------------------
# the table's limits
# ---------------------------------------------------------------------------


def make_table(clock=None, **limits):
    return RegistryTable(clock=clock or FakeClock(), limits=RegistryLimits(**limits))


def register(table, host, names, port):
    return table.handle_request(request("REGISTER", (tuple(names), port)), host)


OK = brine.dump("OK")


def test_entries_per_host_are_bounded_but_refreshes_always_pass(caplog):
    table = make_table(max_entries_per_host=3)
    assert register(table, "h1", ["a", "b", "c"], 1) == OK

    with caplog.at_level(logging.WARNING, logger=table.logger.name):
        assert register(table, "h1", ["d"], 1) is None
        assert register(table, "h1", ["a"], 2) is None
    assert register(table, "h1", ["a", "B", "c"], 1) == OK
    assert register(table, "h2", ["d"], 1) == OK

    assert table.entries_of("h1") == 3
    assert sorted(table.services) == ["A", "B", "C", "D"]
    assert [r.getMessage() for r in caplog.records] == [
        "refused REGISTER from h1: h1 would hold 4 entries, over max_entries_per_host=3"
    ] * 2


def test_entries_in_total_are_bounded_and_freed_by_unregister(caplog):
    table = make_table(max_entries=4)
    assert register(table, "h1", ["a", "b"], 1) == OK
    assert register(table, "h2", ["a", "b"], 1) == OK

    with caplog.at_level(logging.WARNING, logger=table.logger.name):
        assert register(table, "h3", ["a"], 1) is None
    assert table.handle_request(request("UNREGISTER", (1,)), "h1") == OK
    assert register(table, "h3", ["a", "c"], 1) == OK

    assert (table.entries_of("h1"), table.entries_of("h2"), table.entries_of("h3")) == (0, 2, 2)
    assert [r.getMessage() for r in caplog.records] == [
        "refused REGISTER from h3: the registry would hold 5 entries, over max_entries=4"
    ]


def test_a_full_table_prunes_stale_entries_before_refusing():
    clock = FakeClock()
    table = make_table(clock, max_entries=2)
    table.pruning_timeout = 10
    assert register(table, "h1", ["a", "b"], 1) == OK
    clock.now += 11

    assert register(table, "h2", ["c"], 1) == OK
    assert table.services == {"C": {("h2", 1): clock.now}}
    assert table.entries_of("h1") == 0


def test_a_full_table_prunes_at_most_once_a_second():
    clock = FakeClock()
    table = make_table(clock, max_entries=1)
    table.pruning_timeout = 10
    prunes = []
    original = table.prune
    table.prune = lambda: prunes.append(clock.now) or original()
    assert register(table, "h1", ["a"], 1) == OK

    for _ in range(5):
        assert register(table, "h2", ["b"], 1) is None
        clock.now += 0.25

    assert prunes == [1000.0, 1001.0]


def test_names_longer_than_the_limit_refuse_the_whole_request(caplog):
    table = make_table(max_name_length=8)
    with caplog.at_level(logging.WARNING, logger=table.logger.name):
        assert register(table, "h1", ["short", "n" * 9], 1) is None
    assert register(table, "h1", ["n" * 8], 1) == OK

    assert list(table.services) == ["NNNNNNNN"]
    assert [r.getMessage() for r in caplog.records] == [
        "refused REGISTER from h1: name of 9 characters exceeds max_name_length=8"
    ]


def test_duplicate_aliases_count_once():
    table = make_table(max_entries_per_host=2)
    assert register(table, "h1", ["a", "A", "a", "b"], 1) == OK
    assert table.entries_of("h1") == 2


def test_pruned_and_unregistered_entries_give_their_room_back():
    clock = FakeClock()
    table = make_table(clock)
    table.pruning_timeout = 10
    register(table, "h1", ["a", "b"], 1)
    register(table, "h1", ["a"], 2)
    clock.now += 11
    table.prune()
    register(table, "h2", ["a"], 1)
    table.handle_request(request("UNREGISTER", (1,)), "h2")

    assert table.services == {}
    assert (table.entries_of("h1"), table.entries_of("h2")) == (0, 0)


def test_replies_are_cut_to_the_budget_given_and_the_cut_is_logged(caplog):
    table = make_table()
    for host, port in SERVERS:
        register(table, host, ["many"], port)
    query = request("QUERY", ("many",))

    with caplog.at_level(logging.INFO, logger=table.logger.name):
        cut = table.handle_request(query, "h", 200)
    whole = table.handle_request(query, "h")

    assert brine.load(cut) == SERVERS[:10]
    assert brine.load(whole) == SERVERS
    assert [r.getMessage() for r in caplog.records] == [
        "QUERY reply to h left out 30 entries to fit 200 bytes"
    ]
