"""The figures of the fault harness on hand-made samples: what counts as held, missing,
late and back from the dead (measure.py), without running any process."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import Clock, NodeSample, Truth, Window, analyse, guard_stats, window_stats  # noqa: E402


def truth(*events):
    t = Truth(Clock())
    t.events = list(events)
    return t


def samples(*rows):
    """rows: (t, ports) with ports None for "no list yet"."""
    return [(t, None if ports is None else frozenset(ports)) for t, ports in rows]


def test_a_killed_host_is_held_until_the_consumer_drops_it():
    tr = truth((0.0, 1, "live", "start"), (0.0, 2, "live", "start"), (1.0, 2, "dead", "kill"))
    series, eps = analyse(tr, samples((0.5, {1, 2}), (1.5, {1, 2}), (7.0, {1, 2}), (7.5, {1})))
    assert eps.held == [(2, 1.0, 7.0, "kill")]
    assert series.dead_held == [0, 1, 1, 0]
    stats = window_stats(series, eps, Window("w", 0.0, 5.0, 10.0))
    assert stats["dead_held_max"] == 6.0
    assert stats["back"] == 0


def test_a_dead_host_listed_again_after_it_was_dropped_is_back_from_the_dead():
    tr = truth((0.0, 1, "live", "start"), (0.0, 2, "live", "start"), (1.0, 2, "dead", "term"))
    _, eps = analyse(tr, samples((0.5, {1, 2}), (1.5, {1}), (2.0, {1, 2}), (2.5, {1}),
                                 (3.0, {1, 2})))
    assert eps.back == [(2, 2.0), (2, 3.0)]


def test_a_host_never_listed_before_it_died_is_not_back_from_the_dead_when_it_shows_late():
    tr = truth((0.0, 1, "live", "start"), (1.0, 2, "live", "start"), (1.2, 2, "dead", "kill"))
    _, eps = analyse(tr, samples((0.5, {1}), (1.5, {1}), (2.0, {1, 2}), (3.0, {1})))
    assert eps.back == []


def test_a_restarted_host_is_a_new_life_not_a_resurrection():
    tr = truth((0.0, 1, "live", "start"), (0.0, 2, "live", "start"), (1.0, 2, "dead", "kill"),
               (3.0, 2, "live", "start"))
    _, eps = analyse(tr, samples((0.5, {1, 2}), (1.5, {1}), (3.5, {1, 2})))
    assert eps.back == []
    assert eps.appear == [(2, 3.0, 3.5)]


def test_a_live_or_silent_host_dropped_by_the_consumer_is_missing_until_listed_again():
    tr = truth((0.0, 1, "live", "start"), (0.0, 2, "live", "start"), (1.0, 2, "silent", "stop"))
    series, eps = analyse(tr, samples((0.5, {1, 2}), (2.0, {1}), (3.0, {1}), (4.0, {1, 2})))
    assert eps.missing == [(2, 2.0, 4.0)]
    assert series.missing == [0, 1, 1, 0]
    stats = window_stats(series, eps, Window("w", 0.0, 3.0, 5.0))
    assert stats["missing_max"] == 2.0 and stats["coverage"] == 100.0


def test_an_empty_list_while_hosts_live_is_counted_and_uncovers():
    tr = truth((0.0, 1, "live", "start"))
    series, eps = analyse(tr, samples((0.1, None), (0.5, {1}), (1.0, set()), (1.5, {1})))
    stats = window_stats(series, eps, Window("w", 0.0, 2.0, 2.0))
    assert stats["samples"] == 3  # "no list yet" is not a sample
    assert stats["empty"] == 1 and stats["uncovered"] == 1
    assert round(stats["coverage"], 1) == 66.7


def test_a_live_host_the_consumer_never_lists_is_counted_as_never_listed():
    tr = truth((0.0, 1, "live", "start"), (1.0, 2, "live", "start"))
    series, eps = analyse(tr, samples((0.5, {1}), (2.0, {1}), (3.0, {1})))
    assert eps.never == [(2, 1.0)] and eps.appear == []
    assert window_stats(series, eps, Window("w", 0.0, 2.0, 4.0))["never"] == 1


def test_the_guard_is_judged_on_what_fell_before_it_engaged_not_on_max_stale_running_out():
    w = Window("silence", 10.0, 40.0, 60.0)
    late = [NodeSample(9.0, True, 260, 0, False), NodeSample(11.0, True, 200, 0, False),
            NodeSample(12.0, True, 90, 0, False), NodeSample(13.0, True, 260, 170, True)]
    in_time = [NodeSample(9.0, True, 260, 0, False), NodeSample(11.0, True, 250, 0, False),
               NodeSample(12.0, True, 260, 173, True),
               # --max-stale ran out just before the agents came back: by design.
               NodeSample(39.5, True, 90, 40, True), NodeSample(41.0, True, 260, 0, False)]
    stats = guard_stats({"late": late, "in_time": in_time}, w)
    assert stats["late"]["min_hosts_until_engaged"] == 90
    assert stats["in_time"]["min_hosts_until_engaged"] == 250
    assert stats["in_time"]["min_hosts"] == 90
    assert stats["in_time"]["engaged"] and stats["in_time"]["max_stale"] == 173
