"""When the batch looks at each prediction: often while it learns, then just before the batch's own
typical run time, tightly around it, and less and less often after."""

from __future__ import annotations

import itertools

import pytest

from airflow_provider_eachlabs.batch.schedule import (
    EARLIEST_LOOK,
    LEARNED_FROM,
    LEARNING_INTERVAL,
    LONGEST_INTERVAL,
    TIGHT_INTERVAL,
    LearnedSchedule,
)


def looks(schedule: LearnedSchedule, until: float) -> list[float]:
    """The moments (seconds after the create) at which a prediction is looked at, up to ``until``."""
    moments, elapsed = [], 0.0
    while True:
        elapsed += schedule.delay(elapsed)
        if elapsed > until:
            return moments
        moments.append(round(elapsed, 6))


def test_until_three_predictions_ended_it_looks_every_half_second_whatever_the_model_page_says():
    """flux-fill-pro's page says 9 s; a batch whose fills take 2 s must not wait 9 s on its first wave."""
    schedule = LearnedSchedule(expected_seconds=9.0)
    assert looks(schedule, 3.0) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert schedule.delay(0.2) == pytest.approx(EARLIEST_LOOK - 0.2)
    schedule.observe(2.0)
    schedule.observe(2.0)
    assert not schedule.learned
    assert schedule.typical == 9.0
    assert schedule.delay(5.0) == LEARNING_INTERVAL


def test_once_learned_the_first_look_is_just_before_the_median_then_tight_then_backing_off():
    schedule = LearnedSchedule(expected_seconds=9.0)
    for seconds in (4.0, 4.2, 3.8):
        schedule.observe(seconds)
    assert schedule.learned
    assert schedule.typical == 4.0
    first = 4.0 - 2 * TIGHT_INTERVAL
    assert schedule.delay(0.0) == pytest.approx(first)
    assert schedule.delay(1.0) == pytest.approx(first - 1.0)
    # Tight from just before the typical time until twice it plus two seconds (10 s here).
    assert schedule.delay(first) == TIGHT_INTERVAL
    assert schedule.delay(9.99) == TIGHT_INTERVAL
    # Past that, half the time since, capped.
    assert schedule.delay(14.0) == pytest.approx(2.0)
    assert schedule.delay(1000.0) == LONGEST_INTERVAL
    moments = looks(schedule, 10.0)
    assert moments[0] == pytest.approx(first)
    assert all(b - a == pytest.approx(TIGHT_INTERVAL) for a, b in itertools.pairwise(moments))


def test_the_median_ignores_a_few_stragglers():
    schedule = LearnedSchedule(expected_seconds=9.0)
    for seconds in (2.0, 2.1, 120.0, 1.9, 300.0):
        schedule.observe(seconds)
    assert schedule.typical == 2.1
    assert schedule.delay(0.0) == pytest.approx(2.1 - 2 * TIGHT_INTERVAL)


def test_it_follows_the_batch_when_run_times_change():
    schedule = LearnedSchedule(expected_seconds=9.0)
    for _ in range(LEARNED_FROM):
        schedule.observe(10.0)
    assert schedule.typical == 10.0
    for _ in range(LEARNED_FROM // 2 + 1):
        schedule.observe(3.0)
    assert schedule.typical == 3.0


def test_very_fast_predictions_are_not_looked_at_before_the_earliest_look():
    schedule = LearnedSchedule(expected_seconds=9.0)
    for _ in range(3):
        schedule.observe(0.2)
    assert schedule.delay(0.0) == EARLIEST_LOOK
    assert schedule.delay(EARLIEST_LOOK) == TIGHT_INTERVAL


def test_a_fixed_poll_interval_overrides_everything():
    schedule = LearnedSchedule(expected_seconds=9.0, interval=2.5)
    for seconds in (4.0, 4.0, 4.0):
        schedule.observe(seconds)
    assert [schedule.delay(elapsed) for elapsed in (0.0, 3.0, 500.0)] == [2.5, 2.5, 2.5]


@pytest.mark.parametrize("learned", [False, True])
def test_every_delay_is_positive_and_bounded(learned: bool):
    """No look is scheduled in the past (a busy loop) or further off than the longest interval."""
    schedule = LearnedSchedule(expected_seconds=9.0)
    if learned:
        for seconds in (0.0, 0.0, 0.0):
            schedule.observe(seconds)
    for tenth in range(0, 20_000, 7):
        delay = schedule.delay(tenth / 10)
        assert 0.0 < delay <= LONGEST_INTERVAL
