"""Each metric is emitted once per event, on every path that could emit it twice: a retry that
re-uses, a rejected input refused by a later try, an orphaned create found after a crash, a resumed
deferred task, a sensor on a prediction bought elsewhere, and a batch rebuilt mid-run as after a
triggerer restart. Real HTTP against the simulator; Airflow's ``Stats`` is a recorder. The simulator
charges $0.05 a prediction, failed ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_eachlabs import metrics
from airflow_provider_eachlabs.exceptions import EachlabsBatchError
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.record import TaskRecord
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_batch import (
    batch,
    creates,
    defer,
    keyed,
    rebuilt,
    run_trigger,
    running_until_creates,
    start_simulator,  # noqa: F401 (fixture)
)
from tests.integration.test_batch import context as batch_context
from tests.integration.test_operators import RecordingStateStore, context, fill
from tests.unit.test_metrics import FakeStats


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> FakeStats:
    fake = FakeStats()
    monkeypatch.setattr(metrics, "_stats", lambda: fake)
    return fake


CENTS_5 = 50_000  # the simulator's $0.05, in micro-dollars
BOUGHT, REUSED = "eachlabs.predictions.bought", "eachlabs.predictions.reused"
SUCCEEDED, COST = "eachlabs.predictions.succeeded", "eachlabs.cost_micro_usd"
REJECTED = "eachlabs.predictions.failed.content_policy"


def test_a_fill_then_a_retry_that_re_uses_it_count_one_purchase_and_one_success(
    eachlabs_conn: EachlabsSimulator, stats: FakeStats
):
    store = RecordingStateStore()
    first = fill().execute(context(store))
    again = fill().execute(context(store))  # a clear with nothing changed

    assert again["prediction_id"] == first["prediction_id"]
    assert eachlabs_conn.counters.create_requests == 1
    assert stats.counts() == Counter({BOUGHT: 1, SUCCEEDED: 1, COST: CENTS_5, REUSED: 1})
    assert [name for name in stats.names() if name == "eachlabs.predict_time"] == ["eachlabs.predict_time"]


def test_a_rejected_fill_counts_its_cause_once_and_the_refusal_that_follows_nothing(
    eachlabs_conn: EachlabsSimulator, stats: FakeStats
):
    store = RecordingStateStore()
    for _ in range(2):  # the try that buys it, then a clear of the same input: refused
        with pytest.raises(AirflowFailException):
            fill(prompt="a forbidden meadow").execute(context(store))

    assert eachlabs_conn.counters.create_requests == 1
    assert stats.counts() == Counter({BOUGHT: 1, REJECTED: 1, COST: CENTS_5})


def test_an_orphaned_create_found_after_a_crash_is_not_bought_again(
    eachlabs_conn: EachlabsSimulator, stats: FakeStats
):
    """An earlier try sent the create and died before recording the answer: this try finds it."""
    store = RecordingStateStore()
    input_ = {"text": "hello"}
    record = TaskRecord()
    record.sending(time.time() - 1, dict(input_))
    record.save(context(store))
    orphan = EachlabsHook().create_prediction("echo-test", input_)

    result = EachlabsPredictionOperator(
        task_id="echo", model="echo-test", input=input_, deferrable=False, poll_interval=0.05
    ).execute(context(store))

    assert result["prediction_id"] == orphan
    assert eachlabs_conn.counters.create_requests == 1
    assert BOUGHT not in stats.counts()
    assert stats.counts()[SUCCEEDED] == 1


def test_a_resumed_deferred_fill_that_failed_counts_its_failure_once(
    eachlabs_conn: EachlabsSimulator, stats: FakeStats
):
    store = RecordingStateStore()
    operator = fill(prompt="a forbidden meadow", deferrable=True)
    with pytest.raises(TaskDeferred):
        operator.execute(context(store))
    assert operator.prediction_id is not None
    prediction = operator.hook.wait_for_prediction(operator.prediction_id, poll_interval=0.05, timeout=10)
    event = {"status": "failed", "prediction_id": prediction.id, "prediction": prediction.to_dict()}
    for _ in range(2):  # the same event delivered to the task again
        with pytest.raises(AirflowFailException):
            fill(prompt="a forbidden meadow", deferrable=True).execute_complete(context(store), event)

    assert stats.counts() == Counter({BOUGHT: 1, REJECTED: 1, COST: CENTS_5})


def test_a_sensor_counts_the_end_of_a_prediction_bought_elsewhere_but_never_buys(
    eachlabs_conn: EachlabsSimulator, stats: FakeStats
):
    submitted = EachlabsPredictionOperator(
        task_id="submit", model="echo-test", input={"text": "hi"}, wait_for_completion=False
    ).execute(context())
    assert stats.counts() == Counter({BOUGHT: 1})
    store = RecordingStateStore()
    for _ in range(2):  # the sensor and its retry
        sensor = PredictionSensor(
            task_id="wait", prediction_id=submitted, deferrable=False, poke_interval=0.05
        )
        sensor.execute(context(store))

    assert stats.counts() == Counter({BOUGHT: 1, SUCCEEDED: 1, COST: CENTS_5})


def test_a_batch_counts_each_item_once(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    stats: FakeStats,
):
    sim = start_simulator()
    summary = batch(tmp_path / "out", keyed(3)).execute(batch_context())

    assert summary["succeeded"] == 3
    assert stats.counts() == Counter({BOUGHT: 3, SUCCEEDED: 3, COST: 3 * CENTS_5})
    assert {tags.get("task_id") for *_, tags in stats.calls if tags} == {"fill_batch"}
    assert creates(sim) == 3


def test_a_batch_rebuilt_mid_run_after_a_triggerer_restart_counts_nothing_twice(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    stats: FakeStats,
):
    sim = start_simulator(predict_seconds=2.0, max_in_flight=2)
    operator = batch(tmp_path / "out", keyed(5), deferrable=True, max_in_flight=2)
    trigger = defer(operator, batch_context())

    async def run_until_three_creates() -> None:
        task = await running_until_creates(trigger, sim, 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run_until_three_creates())
    for thread in threading.enumerate():  # the old trigger's requests still under way end
        if thread.name.startswith("eachlabs-batch"):
            thread.join(30)
    events = run_trigger(rebuilt(trigger))

    assert events[0]["summary"]["succeeded"] == 5
    assert creates(sim) == 5
    assert stats.counts() == Counter({BOUGHT: 5, SUCCEEDED: 5, COST: 5 * CENTS_5})


def numbered_try(number: int) -> dict[str, Any]:
    ctx = batch_context()
    ctx["ti"].try_number = number
    return ctx


def test_a_batch_retry_that_stores_what_an_earlier_try_paid_for_counts_it_once(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    stats: FakeStats,
):
    start_simulator()
    out = tmp_path / "out"
    blocker = out / "img1.png"
    blocker.mkdir(parents=True)  # a folder where img1's output should go: its store fails
    with pytest.raises(EachlabsBatchError):
        batch(out, keyed(3), item_retries=0).execute(numbered_try(1))
    assert stats.counts() == Counter({BOUGHT: 3, SUCCEEDED: 3, COST: 3 * CENTS_5})

    blocker.rmdir()
    summary = batch(out, keyed(3), item_retries=0).execute(numbered_try(2))  # the task's retry

    assert (summary["succeeded"], summary["creates"]) == (3, 0)
    assert stats.counts() == Counter({BOUGHT: 3, SUCCEEDED: 3, COST: 3 * CENTS_5, REUSED: 3})
