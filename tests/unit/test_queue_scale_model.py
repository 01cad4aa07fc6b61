"""bench/queue_scale.py's yardstick: the ideal dispatcher, on fixed and on varied session lengths."""

from __future__ import annotations

from bench.queue_scale import Lengths, ideal_served


def test_fixed_lengths_free_the_prefilled_places_1_over_r_apart_and_each_session_lives_c_over_r() -> None:
    # capacity 2, 1 end a second: places free at t0 + 1 and t0 + 2, each session then lives 2 s
    assert ideal_served({0: -1.0, 1: -0.5, 2: -0.2, 3: 2.5}, 2, 1.0, 0.0) == [1.0, 2.0, 3.0, 4.0]


def test_varied_lengths_hold_each_place_for_that_starts_own_length_in_send_order() -> None:
    lengths = Lengths("exponential", first_ends=[0.5, 3.0], by_start={0: 10.0, 1: 1.0, 2: 1.0})
    # sent in the order 1, 0, 2: start 1 takes the place free at 0.5 (until 1.5), start 0 the one free at 1.5,
    # start 2 the one free at 3.0
    assert ideal_served({0: -0.5, 1: -0.9, 2: -0.1}, 2, 1.0, 0.0, lengths) == [0.5, 1.5, 3.0]


def test_drawn_lengths_are_seeded_and_average_c_over_r() -> None:
    first = Lengths.draw("exponential", 5, 2.0, 4000, seed=7)
    assert first == Lengths.draw("exponential", 5, 2.0, 4000, seed=7)
    assert first != Lengths.draw("exponential", 5, 2.0, 4000, seed=8)
    mean = sum(first.by_start.values()) / len(first.by_start)
    assert 2.3 < mean < 2.7 and len(first.first_ends) == 5 and first.first_ends == sorted(first.first_ends)
    fixed = Lengths.draw("fixed", 5, 2.0, 3, seed=7)
    assert fixed.first_ends == [0.5, 1.0, 1.5, 2.0, 2.5] and set(fixed.by_start.values()) == {2.5}
