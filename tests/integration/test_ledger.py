"""The spend ledger: what each task writes for the predictions it bought (over real HTTP against the
simulator), and the api-server's fold of it into the fills page's figures (over a real SQLite table
of Airflow's own ``task_state_store`` model)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs import ledger
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import RecordingStateStore, context, fill


def ledger_of(store: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in store.items() if key.startswith(ledger.PREFIX)}


def test_a_fill_records_its_purchase_and_its_end_with_the_cost_the_api_reported(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
) -> None:
    store = RecordingStateStore()
    result = fill(output_path=f"{tmp_path}/").execute(context(store))
    prediction_id = result["prediction_id"]
    billed = eachlabs_conn.predictions[prediction_id].cost
    entries = ledger_of(store)
    assert set(entries) == {ledger.BOUGHT + prediction_id, ledger.ENDED + prediction_id}
    bought, ended = entries[ledger.BOUGHT + prediction_id], entries[ledger.ENDED + prediction_id]
    assert (bought["model"], bought["how"]) == ("flux-fill-pro", "bought")
    assert (ended["status"], ended["cost"]) == ("succeeded", round(billed * 1_000_000))
    assert ended["bought_at"] == pytest.approx(bought["at"])
    context_module = pytest.importorskip("airflow.sdk.execution_time.context")
    never = getattr(context_module, "NEVER_EXPIRE", None)  # Airflow 3.3; 3.2 has no task_state_store
    assert store.retention[ledger.ENDED + prediction_id] is never  # money history is kept


def test_a_failed_prediction_is_recorded_with_its_cost_and_a_retry_records_nothing_twice(
    eachlabs_conn: EachlabsSimulator,
) -> None:
    store = RecordingStateStore()
    eachlabs_conn.inject("create", "fail", error_message="upstream broke")
    operator = EachlabsPredictionOperator(
        task_id="p", model="echo-test", input={"text": "x"}, poll_interval=0.05, deferrable=False
    )
    with pytest.raises(Exception, match="upstream broke"):
        operator.execute(context(store))
    first = ledger_of(store)
    (ended_key,) = [key for key in first if key.startswith(ledger.ENDED)]
    prediction_id = ended_key.removeprefix(ledger.ENDED)
    assert first[ended_key]["status"] == "failed"
    assert first[ended_key]["cost"] == round(eachlabs_conn.predictions[prediction_id].cost * 1_000_000)
    # The retry buys anew (a transient failure); the first prediction's entries are left as they were.
    operator.execute(context(store))
    second = ledger_of(store)
    assert {k: v for k, v in second.items() if prediction_id in k} == first
    assert len([k for k in second if k.startswith(ledger.BOUGHT)]) == 2


def test_a_sensor_watching_another_tasks_prediction_writes_no_ledger_entry(
    eachlabs_conn: EachlabsSimulator,
) -> None:
    buyer = RecordingStateStore()
    prediction_id = EachlabsPredictionOperator(
        task_id="submit", model="echo-test", input={"text": "hi"}, wait_for_completion=False
    ).execute(context(buyer))
    assert set(ledger_of(buyer)) == {ledger.BOUGHT + prediction_id}  # open: its end is not watched here
    watcher = RecordingStateStore()
    PredictionSensor(
        task_id="wait", prediction_id=prediction_id, poke_interval=0.05, deferrable=False
    ).execute(context(watcher))
    assert ledger_of(watcher) == {}


def test_a_sensor_seeing_a_failure_writes_no_ledger_entry_either(eachlabs_conn: EachlabsSimulator) -> None:
    eachlabs_conn.inject("create", "fail", error_message="upstream broke")
    prediction_id = EachlabsPredictionOperator(
        task_id="s", model="echo-test", input={"text": "x"}, wait_for_completion=False
    ).execute(context())
    watcher = RecordingStateStore()
    with pytest.raises(AirflowFailException):
        PredictionSensor(
            task_id="wait", prediction_id=prediction_id, poke_interval=0.05, deferrable=False
        ).execute(context(watcher))
    assert ledger_of(watcher) == {}


# --- the api-server's fold ----------------------------------------------------------------------------


@pytest.fixture
def table() -> Iterator[Any]:
    """Airflow's own ``task_state_store`` table, in a SQLite database of its own."""
    import airflow.models.dagrun  # noqa: F401  (its table is what the store's foreign key names)

    pytest.importorskip("airflow.models.task_state_store", reason="Airflow 3.3 and newer")
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import StaticPool

    # One in-memory database for every session, whichever thread opens it (the start-up fold's).
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    TaskStateStoreModel.__table__.create(engine)  # type: ignore[attr-defined]
    with Session(engine) as session:
        yield session


def write(session: Any, dag_id: str, run: int, key: str, value: dict[str, Any], age: float = 10.0) -> None:
    """A row as the api-server's Execution API writes it for a task."""
    from airflow.models.task_state_store import TaskStateStoreModel

    session.add(
        TaskStateStoreModel(
            dag_run_id=run,
            task_id="fill",
            map_index=-1,
            key=key,
            dag_id=dag_id,
            run_id=f"run_{run}",
            value=json.dumps(value),
            updated_at=datetime.now(timezone.utc) - timedelta(seconds=age),
        )
    )
    session.commit()


DAY = datetime(2026, 12, 1, 9, tzinfo=timezone.utc).timestamp()


def test_the_fold_adds_up_purchases_ends_and_batch_tries_and_reads_each_row_once(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_eachlabs.plugin import spend
    from airflow_provider_eachlabs.plugin.spend import Fold, figures

    fold = Fold()
    write(table, "nightly", 1, ledger.BOUGHT + "p1", {"at": DAY})
    write(
        table,
        "nightly",
        1,
        ledger.ENDED + "p1",
        {"bought_at": DAY, "status": "succeeded", "cost": 50000, "predict_time": 4.0},
    )
    write(table, "nightly", 2, ledger.BOUGHT + "p2", {"at": DAY})
    write(table, "nightly", 2, ledger.ENDED + "p2", {"bought_at": DAY, "status": "failed", "cost": 50000})
    write(table, "nightly", 3, ledger.BOUGHT + "p3", {"at": DAY + 86400})  # open: marked failed while waiting
    write(
        table,
        "batch",
        4,
        ledger.BATCH + "1",
        {"at": DAY, "bought": 40, "succeeded": 38, "failed": 2, "cost": 2_000_000, "times": {"8": 38}},
    )
    write(table, "nightly", 1, "eachlabs_prediction", {"id": "p1"})  # the task's record: not money
    write(table, "nightly", 5, ledger.BOUGHT + "p5", {"at": DAY}, age=0.0)  # just written
    fold.refresh(table)
    every = figures(fold.select({"nightly", "batch"}).values())
    assert (every.bought, every.succeeded, every.failed, every.open) == (44, 39, 3, 2)
    assert every.spend == pytest.approx(2.10)
    nightly = figures(fold.select({"nightly"}).values())
    assert (nightly.bought, nightly.open, nightly.spend) == (4, 2, pytest.approx(0.10))
    day = datetime.fromtimestamp(DAY, timezone.utc).date()
    one_day = figures(fold.select({"nightly"}, since=day, until=day).values())
    assert (one_day.bought, one_day.open) == (3, 1)
    # Each row is folded once: refreshes read the recent ids again (a row committed late is not
    # missed) and count none of them twice, before and after they settle.
    fold.refresh(table)
    monkeypatch.setattr(spend, "SETTLE_SECONDS", 0.0)
    fold.refresh(table)
    write(table, "nightly", 6, ledger.BOUGHT + "p6", {"at": DAY, "max_cost": 0.5})
    fold.refresh(table)
    fold.refresh(table)
    assert figures(fold.select({"nightly"}).values()).bought == 5
    assert fold.recent == {} and fold.settled == fold.watermark
    # What no task saw end is kept by id, for the API's history to settle; what ended is not.
    assert set(fold.open_predictions()) == {"p3", "p5", "p6"}
    assert set(fold.open_predictions(since=day, until=day)) == {"p5", "p6"}
    # The DAG's budget is its tasks' max_cost as their latest entries said.
    assert (fold.budget("nightly"), fold.budget("batch")) == (0.5, None)


def test_the_fold_starts_again_when_rows_it_counted_were_deleted(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import delete

    from airflow_provider_eachlabs.plugin import spend

    fold = spend.Fold()
    write(table, "nightly", 1, ledger.BOUGHT + "p1", {"at": DAY})
    write(table, "nightly", 2, ledger.BOUGHT + "p2", {"at": DAY})
    fold.refresh(table)
    assert spend.figures(fold.buckets.values()).bought == 2
    table.execute(delete(TaskStateStoreModel).where(TaskStateStoreModel.dag_run_id == 2))  # its run deleted
    table.commit()
    fold.refresh(table)
    assert spend.figures(fold.buckets.values()).bought == 2  # checked at most once a minute
    monkeypatch.setattr(spend, "DELETION_CHECK_SECONDS", 0.0)
    fold.refresh(table)
    assert spend.figures(fold.buckets.values()).bought == 1


def test_a_batch_try_writes_what_is_new_since_the_last_entry(eachlabs_conn: EachlabsSimulator) -> None:
    store = RecordingStateStore()
    ctx = context(store)

    class TI:
        try_number = 1

    ctx["ti"] = TI()
    ledger.record_batch_try(
        ctx,
        {"journal": "j1", "bought": 40, "succeeded": 35, "failed": 5, "cost": 2_000_000, "times": {"8": 35}},
    )
    TI.try_number = 2
    ledger.record_batch_try(
        ctx,
        {"journal": "j1", "bought": 45, "succeeded": 40, "failed": 5, "cost": 2_250_000, "times": {"8": 40}},
    )
    assert store[ledger.BATCH + "1"]["bought"] == 40
    second = store[ledger.BATCH + "2"]
    assert (second["bought"], second["succeeded"], second["failed"], second["cost"], second["times"]) == (
        5,
        5,
        0,
        250_000,
        {"8": 5},
    )
    # A new journal (the batch ended whole, then was cleared) counts from zero.
    TI.try_number = 3
    ledger.record_batch_try(ctx, {"journal": "j2", "bought": 2, "succeeded": 2, "cost": 100_000})
    assert store[ledger.BATCH + "3"]["bought"] == 2


def test_the_start_up_fold_reads_in_a_thread_and_pages_answer_meanwhile(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first page after the api-server starts does not wait for a whole ledger to be read: it
    starts the fold in a thread and answers; a later page has the figures."""
    import contextlib
    import threading

    from sqlalchemy.orm import Session

    from airflow_provider_eachlabs.plugin import spend

    write(table, "nightly", 1, ledger.BOUGHT + "p1", {"at": DAY})
    release = threading.Event()

    @contextlib.contextmanager
    def slow_session() -> Iterator[Any]:
        release.wait(10)  # the ledger is long to read
        with Session(table.get_bind()) as session:
            yield session

    for name, value in (
        ("FOLD", spend.Fold()),
        ("READY", threading.Event()),
        ("_STARTED", threading.Event()),
    ):
        monkeypatch.setattr(spend, name, value)
    monkeypatch.setattr(spend, "FIRST_FOLD_WAIT", 0.2)
    assert spend.current(table, slow_session) is None  # the page answers now, with a note, not after the read
    release.set()
    assert spend.READY.wait(10)
    fold = spend.current(table)
    assert fold is not None and spend.figures(fold.buckets.values()).bought == 1
