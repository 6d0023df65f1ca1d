"""Containers made on first use (`grpyc._firstuse`)."""

import gc

from grpyc._firstuse import NO_ITEMS, added, appended


def test_the_first_item_makes_the_container_and_later_ones_go_in_it():
    first = appended(NO_ITEMS, "a")
    assert first == ["a"] and NO_ITEMS == ()
    assert appended(first, "b") is first and first == ["a", "b"]
    seen = added(NO_ITEMS, 1)
    assert seen == {1}
    assert added(seen, 2) is seen and seen == {1, 2}


def test_state_not_yet_used_is_nothing_the_collector_walks():
    # What the module is for: an empty list or set per connection is tracked.
    assert not gc.is_tracked(NO_ITEMS)
    assert gc.is_tracked([]) and gc.is_tracked(set())


def test_a_connection_server_side_holds_none_of_the_lists_it_never_used(make_pair):
    server, client = make_pair()
    assert client.root.echo(1) == 1
    hub = server._hub
    assert hub._waits.frame is NO_ITEMS and hub._waits.idle is NO_ITEMS
    assert hub._baton.lenders is NO_ITEMS
    assert hub._admission._queued is NO_ITEMS
