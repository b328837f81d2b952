"""The batch's pacer against a fake clock: both caps hold, a 429 from elsewhere pauses and shrinks the
batch's share, and quiet minutes give it back.

The pacer is sans-IO (every method is told the time), so a whole batch can be played out here in
simulated minutes, with an API that counts creates and predictions as the real one does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from airflow_provider_eachlabs.batch.pacer import Pacer


def send(pacer: Pacer, count: int, now: float) -> None:
    """``count`` creates sent and answered with a prediction at ``now``, each allowed at once."""
    for _ in range(count):
        assert pacer.delay(now) == 0.0
        pacer.sending()
        pacer.created(now)


# --- max_in_flight ----------------------------------------------------------------------------------


def test_no_create_is_allowed_while_every_slot_is_taken_and_waiting_alone_does_not_free_one():
    pacer = Pacer(max_in_flight=3, per_minute=100)
    send(pacer, 3, now=0.0)
    assert pacer.in_flight == 3
    for later in (0.0, 1.0, 60.0, 3600.0):
        assert pacer.delay(later) is None


def test_slots_freed_out_of_order_are_each_refilled_once():
    pacer = Pacer(max_in_flight=3, per_minute=100)
    send(pacer, 3, now=0.0)  # a, b, c in flight
    pacer.finished()  # c ends first: one slot, whichever prediction it was
    assert pacer.delay(1.0) == 0.0
    send(pacer, 1, now=1.0)  # d
    assert pacer.delay(1.0) is None
    pacer.finished()  # a
    pacer.finished()  # d, before b
    assert pacer.in_flight == 1
    send(pacer, 2, now=2.0)
    assert pacer.delay(2.0) is None
    assert pacer.in_flight == 3


def test_a_create_being_sent_holds_its_slot_before_it_is_answered():
    pacer = Pacer(max_in_flight=2, per_minute=100)
    pacer.sending()
    pacer.sending()
    assert pacer.delay(0.0) is None
    pacer.created(0.5)
    assert pacer.delay(0.5) is None  # answered: still running


def test_not_created_frees_its_slot_and_neither_pauses_nor_shrinks():
    pacer = Pacer(max_in_flight=2, per_minute=100)
    send(pacer, 1, now=0.0)
    pacer.sending()
    assert pacer.delay(0.0) is None
    pacer.not_created(0.1)  # a refusal (a 400, a connection that never opened): nothing was made
    assert pacer.in_flight == 1
    assert pacer.delay(0.1) == 0.0
    assert (pacer.in_flight_cap, pacer.per_minute_cap, pacer.rate_limited) == (2, 100, 0)


def test_a_refused_create_does_not_count_in_the_minute():
    pacer = Pacer(max_in_flight=10, per_minute=2)
    pacer.sending()
    pacer.not_created(0.0)
    send(pacer, 2, now=0.0)
    assert pacer.delay(0.0) == pytest.approx(60.0)


# --- creates per minute -----------------------------------------------------------------------------


def test_the_minute_is_a_sliding_window_from_each_create_answer():
    pacer = Pacer(max_in_flight=100, per_minute=3)
    send(pacer, 1, now=0.0)
    send(pacer, 1, now=10.0)
    send(pacer, 1, now=20.0)
    assert pacer.delay(30.0) == pytest.approx(30.0)  # the first leaves the minute at 60
    assert pacer.delay(59.9) == pytest.approx(0.1)
    assert pacer.delay(60.0) == 0.0
    send(pacer, 1, now=60.0)
    assert pacer.delay(60.0) == pytest.approx(10.0)  # now the one answered at 10 is the oldest
    assert pacer.delay(70.0) == 0.0


def test_creates_still_being_sent_count_in_the_minute():
    pacer = Pacer(max_in_flight=100, per_minute=3)
    for _ in range(3):
        pacer.sending()
    # Three creates unanswered: none has a time to leave the minute yet, so no delay can be given.
    assert pacer.delay(0.0) is None
    pacer.created(5.0)
    assert pacer.delay(5.0) == pytest.approx(60.0)
    pacer.created(6.0)
    pacer.created(7.0)
    assert pacer.delay(64.0) == pytest.approx(1.0)
    assert pacer.delay(65.0) == 0.0


def test_waiting_exactly_the_delay_given_frees_exactly_the_place_it_was_given_for():
    """A caller sleeps ``delay`` and asks again; whatever the float rounding of ``answer + 60 - now``,
    "0.0" must mean the minute has room, never a full minute that a burst of creates would overrun."""
    rng = random.Random(7)
    for _ in range(2000):
        answered = rng.uniform(0.0, 10_000.0)
        pacer = Pacer(max_in_flight=10, per_minute=1)
        send(pacer, 1, now=answered)
        now = answered + rng.uniform(0.0, 59.0)
        now += pacer.delay(now) or 0.0
        while (wait := pacer.delay(now)) != 0.0:  # a timer may fire a hair early: wait the rest
            assert wait is not None
            now += wait
        send(pacer, 1, now=now)
        assert pacer.delay(now) != 0.0, f"two creates allowed in one minute (first answered at {answered!r})"


def test_finishing_predictions_does_not_free_the_minute():
    pacer = Pacer(max_in_flight=100, per_minute=2)
    send(pacer, 2, now=0.0)
    pacer.finished()
    pacer.finished()
    assert pacer.in_flight == 0
    assert pacer.delay(1.0) == pytest.approx(59.0)


# --- a 429 from someone else on the key ---------------------------------------------------------------


def test_a_429_pauses_every_create_until_retry_after_and_shrinks_the_share():
    pacer = Pacer(max_in_flight=10, per_minute=100)
    send(pacer, 2, now=0.0)
    pacer.sending()
    pacer.not_created(10.0, retry_after=7.0)
    assert pacer.rate_limited == 1
    # Slots and minute have room, yet nothing may be sent before Retry-After has passed.
    assert pacer.in_flight == 2
    assert pacer.delay(10.0) == pytest.approx(7.0)
    assert pacer.delay(16.5) == pytest.approx(0.5)
    assert pacer.delay(17.0) == 0.0
    assert (pacer.in_flight_cap, pacer.per_minute_cap) == (8, 80)


def test_the_share_shrinks_by_a_fifth_per_429_down_to_a_tenth_and_never_below_one():
    pacer = Pacer(max_in_flight=10, per_minute=100)
    caps = []
    for second in range(12):
        pacer.sending()
        pacer.not_created(float(second), retry_after=0.0)
        caps.append((pacer.in_flight_cap, pacer.per_minute_cap))
    assert caps[:3] == [(8, 80), (6, 64), (5, 51)]
    assert caps[-1] == (1, 10)
    tiny = Pacer(max_in_flight=1, per_minute=1)
    tiny.sending()
    tiny.not_created(0.0, retry_after=0.0)
    assert (tiny.in_flight_cap, tiny.per_minute_cap) == (1, 1)


def test_a_shrunk_share_holds_the_in_flight_cap_below_the_api_cap():
    pacer = Pacer(max_in_flight=10, per_minute=100)
    pacer.sending()
    pacer.not_created(0.0, retry_after=1.0)
    send(pacer, 8, now=1.0)
    assert pacer.delay(1.0) is None  # 8 of the 10 the API allows: the rest is left to the other user


def test_a_later_429_with_a_shorter_retry_after_does_not_cut_the_pause_short():
    pacer = Pacer(max_in_flight=10, per_minute=100)
    pacer.sending()
    pacer.sending()
    pacer.not_created(0.0, retry_after=30.0)
    pacer.not_created(1.0, retry_after=2.0)
    assert pacer.delay(5.0) == pytest.approx(25.0)


def test_each_quiet_minute_gives_a_tenth_of_the_share_back_up_to_the_whole():
    pacer = Pacer(max_in_flight=10, per_minute=100)
    pacer.sending()
    pacer.not_created(0.0, retry_after=1.0)
    pacer.sending()
    pacer.not_created(30.0, retry_after=1.0)  # 0.64 of the caps
    assert (pacer.in_flight_cap, pacer.per_minute_cap) == (6, 64)
    pacer.delay(89.0)
    assert pacer.in_flight_cap == 6  # not yet a quiet minute since the last 429
    pacer.delay(90.0)
    assert (pacer.in_flight_cap, pacer.per_minute_cap) == (7, 74)
    pacer.delay(120.0)
    assert pacer.in_flight_cap == 7  # one tenth per minute, not per look
    for minute in range(2, 8):
        pacer.delay(90.0 + 60.0 * minute)
    assert (pacer.in_flight_cap, pacer.per_minute_cap) == (10, 100)


def test_a_429_during_recovery_restarts_the_quiet_minute():
    pacer = Pacer(max_in_flight=10, per_minute=100)
    pacer.sending()
    pacer.not_created(0.0, retry_after=1.0)
    pacer.sending()
    pacer.not_created(50.0, retry_after=1.0)
    pacer.delay(70.0)
    assert pacer.in_flight_cap == 6
    pacer.delay(110.0)
    assert pacer.in_flight_cap == 7


@pytest.mark.parametrize(("max_in_flight", "per_minute"), [(0, 100), (10, 0)])
def test_caps_below_one_are_refused(max_in_flight: int, per_minute: int):
    with pytest.raises(ValueError, match="at least 1"):
        Pacer(max_in_flight, per_minute)


# --- a whole batch in simulated time ------------------------------------------------------------------


@dataclass
class FakeApi:
    """What the API counts: a create from when it arrives, a prediction until it ends."""

    max_in_flight: int
    per_minute: int
    received: list[float] = field(default_factory=list)
    running: list[tuple[float, float]] = field(default_factory=list)
    worst_in_flight: int = 0
    worst_minute: int = 0

    def receive(self, at: float, ends_at: float) -> None:
        self.received.append(at)
        in_minute = sum(1 for t in self.received if at - 60.0 < t <= at)
        in_flight = sum(1 for start, end in self.running if start <= at < end) + 1
        self.running.append((at, ends_at))
        self.worst_minute = max(self.worst_minute, in_minute)
        self.worst_in_flight = max(self.worst_in_flight, in_flight)


@pytest.mark.parametrize(
    ("max_in_flight", "per_minute", "run_seconds", "seed"),
    [
        (10, 100, (2.0, 9.0), 1),  # the real caps, fast predictions: the minute binds
        (10, 100, (8.0, 30.0), 2),  # slow predictions: the slots bind
        (3, 20, (0.5, 4.0), 3),
        (5, 7, (0.1, 1.0), 4),
    ],
)
def test_a_simulated_batch_never_exceeds_either_cap_as_the_api_counts_them(
    max_in_flight: int, per_minute: int, run_seconds: tuple[float, float], seed: int
):
    """Creates take a random time to reach the API and to be answered, predictions a random time to
    run and to be seen ending; the API's own counts stay within both caps, and every item is made."""
    rng = random.Random(seed)
    pacer = Pacer(max_in_flight, per_minute)
    api = FakeApi(max_in_flight, per_minute)
    items, sent, ended = 300, 0, 0
    now = 0.0
    events: list[tuple[float, int, str]] = []  # (time, order, kind)
    order = 0
    while ended < items:
        while sent < items and pacer.delay(now) == 0.0:
            pacer.sending()
            sent += 1
            arrives = now + rng.uniform(0.0, 0.5)
            answered = arrives + rng.uniform(0.0, 0.5)
            ends = arrives + rng.uniform(*run_seconds)
            seen_end = max(ends, answered) + rng.uniform(0.0, 1.0)
            api.receive(arrives, ends)
            heapq.heappush(events, (answered, order, "answered"))
            heapq.heappush(events, (seen_end, order + 1, "seen_end"))
            order += 2
        delay = pacer.delay(now) if sent < items else None
        next_event = events[0][0] if events else None
        candidates = [t for t in (next_event, None if delay is None else now + delay) if t is not None]
        assert candidates, "the pacer waits for nothing that will ever happen"
        now = min(candidates)
        while events and events[0][0] <= now:
            _, _, kind = heapq.heappop(events)
            if kind == "answered":
                pacer.created(now)
            else:
                pacer.finished()
                ended += 1
    assert api.worst_in_flight <= max_in_flight
    assert api.worst_minute <= per_minute
    assert len(api.received) == items
    # Pacing is not starvation: the batch uses the caps it is given, close to what they allow.
    assert api.worst_in_flight == max_in_flight or api.worst_minute == per_minute
