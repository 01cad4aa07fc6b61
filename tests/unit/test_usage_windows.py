"""How a session's billed seconds are shared out over the UTC days and months it ran in, and the windows' resets."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.start.billing import day_reset, month_reset, split_seconds


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_session_inside_one_day_counts_its_seconds_there_a_second_begun_counting() -> None:
    days, months = split_seconds(ts("2026-12-06T10:00:00"), ts("2026-12-06T10:01:30.2"))
    assert days == {"2026-12-06": 91} and months == {"2026-12": 91}


def test_a_session_over_midnight_and_over_a_month_end_is_shared_out_and_sums_to_the_whole() -> None:
    days, months = split_seconds(ts("2026-11-30T23:59:00"), ts("2026-12-01T00:02:00.5"))
    assert days == {"2026-11-30": 60, "2026-12-01": 121} and sum(days.values()) == 181  # 60 s, then 120.5 s
    assert months == {"2026-11": 60, "2026-12": 121}
    days, _ = split_seconds(ts("2026-12-31T23:00:00"), ts("2027-01-01T01:00:00"))
    assert days == {"2026-12-31": 3600, "2027-01-01": 3600}


def test_a_session_of_no_time_counts_nothing_and_resets_are_the_next_midnight_and_first() -> None:
    assert split_seconds(ts("2026-12-06T10:00:00"), ts("2026-12-06T10:00:00")) == ({"2026-12-06": 0},
                                                                                    {"2026-12": 0})
    assert day_reset(ts("2026-12-06T10:00:00")) == ts("2026-12-07T00:00:00")
    assert month_reset(ts("2026-12-06T10:00:00")) == ts("2027-01-01T00:00:00")
    assert month_reset(ts("2026-02-28T23:59:59")) == ts("2026-03-01T00:00:00")
