"""The fills page's API figures (plugin/reconcile.py) against a real simulator over HTTP: every page of
``/v1/executions`` read and no more, the period sent as ``from`` / ``to``, money summed exactly, one
listing per (connection, period) per minute shared by the pages asking at once, failures said in the
provider's words without the key, the bounds said in words, and the connections taken from the
deployment only (the Connection table and ``AIRFLOW_CONN_*``), never from what a task wrote.

The simulator's history is seeded straight into its state (10,000 real creates would take minutes);
every figure is then read the way the api-server reads it, over HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_eachlabs.plugin import live, reconcile
from airflow_provider_eachlabs.plugin.reconcile import ApiFigures, api_figures, eachlabs_connection_ids
from airflow_provider_eachlabs.testing import EachlabsSimulator
from airflow_provider_eachlabs.testing.state import PredictionRecord
from tests.conftest import connection_json

KEY = "reconcile-key-4d9b2e71"
WRONG_KEY = "wrong-key-58c1f0a3"
CONN = "eachlabs_books"
NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test starts with nothing kept and nothing in flight (the cache lives for the process)."""
    reconcile._kept.clear()
    reconcile._flights.clear()
    yield
    reconcile._kept.clear()
    reconcile._flights.clear()


@pytest.fixture
def sim(airflow_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EachlabsSimulator]:
    # The api-server's process: its hooks find connections in the metadata database too.
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    with EachlabsSimulator(api_key=KEY, predict_seconds=0.2) as simulator:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_json(simulator.base_url, api_key=KEY))
        yield simulator


@pytest.fixture
def session(airflow_db: str) -> Iterator[Any]:
    from airflow.utils.session import create_session

    with create_session() as db_session:
        yield db_session


def seed(
    sim: EachlabsSimulator,
    count: int,
    *,
    prefix: str = "p",
    cost: Any = 0.05,
    at: datetime | None = None,
    outcome: str = "success",
    api_key: str = KEY,
) -> list[str]:
    """``count`` ended predictions in the simulator's history, created at ``at`` (now by default),
    one microsecond apart so that the listing's order is fixed."""
    created = (at or NOW).timestamp()
    ids = []
    with sim._state.lock:
        for index in range(count):
            ident = f"{prefix}-{index:05d}"
            record = PredictionRecord(
                id=ident,
                model="echo-test",
                input={},
                api_key=api_key,
                created_at=created - index * 1e-6,
                predict_seconds=0.0,
                cost=cost,
                outcome=None if outcome in ("cancelled", "running") else outcome,
                output="https://example.com/x.png",
                never_finish=outcome == "running",
                started=time.monotonic() - 1.0,
            )
            if outcome == "cancelled":
                record.cancelled_at = time.monotonic()
            sim._state.predictions[ident] = record
            ids.append(ident)
    return ids


def mine(answers: list[ApiFigures], conn_id: str = CONN) -> ApiFigures:
    (figures,) = [answer for answer in answers if answer.conn_id == conn_id]
    return figures


# --- paging, the period, the money -----------------------------------------------------------------


def test_every_page_is_read_until_a_short_one_and_each_execution_counted_once(sim, session):
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

    # Three real creates over HTTP, and 247 seeded before them: 250 executions, 3 pages.
    seeded = seed(sim, 247, at=NOW - timedelta(minutes=5))
    hook = EachlabsHook(CONN)
    created = [hook.create_prediction("echo-test", {"prompt": f"p{n}"}) for n in range(3)]
    sim.reset_counters()

    figures = mine(api_figures(session, None, None))

    assert figures.complete and (figures.truncated, figures.error) == (None, None)
    assert figures.count == 250 and figures.prediction_ids == frozenset(seeded + created)
    assert sim.counters.executions == 3  # 100 + 100 + 50 rows: the short page ends the listing
    assert figures.conn_id == CONN and (figures.since, figures.until) == (None, None)
    assert abs((figures.fetched_at - datetime.now(timezone.utc)).total_seconds()) < 10


def test_a_history_of_exactly_full_pages_ends_on_the_empty_page_after_them(sim, session):
    seed(sim, 200)
    figures = mine(api_figures(session, None, None))
    assert (figures.count, figures.truncated, sim.counters.executions) == (200, None, 3)


def test_the_period_is_sent_as_from_and_to_and_only_its_executions_count(sim, session):
    january = seed(sim, 3, prefix="jan", at=datetime(2026, 1, 15, tzinfo=timezone.utc))
    february = seed(sim, 4, prefix="feb", at=datetime(2026, 2, 10, 12, tzinfo=timezone.utc))
    seed(sim, 5, prefix="mar", at=datetime(2026, 3, 2, tzinfo=timezone.utc))

    since, until = datetime(2026, 2, 1, tzinfo=timezone.utc), datetime(2026, 3, 1, tzinfo=timezone.utc)
    feb = mine(api_figures(session, since, until))
    assert (feb.count, feb.prediction_ids) == (4, frozenset(february))
    assert (feb.since, feb.until) == (since, until)

    # A naive datetime is UTC; since alone reaches to now, until alone the 90 days before it.
    later = mine(api_figures(session, datetime(2026, 2, 1), None))
    assert later.count == 4 + 5
    before = mine(api_figures(session, None, datetime(2026, 2, 1)))
    assert before.prediction_ids == frozenset(january)
    # A zone other than UTC is the same moment.
    cet = timezone(timedelta(hours=1))
    same = mine(
        api_figures(session, datetime(2026, 2, 1, 1, tzinfo=cet), datetime(2026, 3, 1, 1, tzinfo=cet))
    )
    assert same.prediction_ids == frozenset(february)


def test_without_a_period_the_api_default_of_90_days_applies(sim, session):
    recent = seed(sim, 2, prefix="new", at=NOW - timedelta(days=89))
    seed(sim, 2, prefix="old", at=NOW - timedelta(days=91))
    figures = mine(api_figures(session, None, None))
    assert figures.prediction_ids == frozenset(recent)


def test_costs_are_summed_exactly_and_unknown_costs_counted_apart(sim, session):
    seed(sim, 250, prefix="tenth", cost=0.1)
    seed(sim, 3, prefix="odd", cost=0.035)
    seed(sim, 2, prefix="none", cost=None)
    seed(sim, 1, prefix="text", cost="0.05")  # not a number: unknown, not guessed
    # The float sum drifts; the figure must not.
    assert sum([0.1] * 250 + [0.035] * 3) != 25.105

    figures = mine(api_figures(session, None, None))

    assert figures.cost == Decimal("25.105") and isinstance(figures.cost, Decimal)
    assert (figures.count, figures.unknown_cost) == (256, 3)


def test_each_status_is_counted(sim, session):
    seed(sim, 4, prefix="ok", outcome="success")
    seed(sim, 3, prefix="bad", outcome="failed")
    seed(sim, 2, prefix="stop", outcome="cancelled")
    seed(sim, 1, prefix="run", outcome="running")
    figures = mine(api_figures(session, None, None))
    assert dict(figures.by_status) == {"success": 4, "error": 3, "cancelled": 2, "other": 1}
    assert figures.count == 10


# --- one listing per (connection, period) per minute, shared ---------------------------------------


def test_a_second_view_within_the_minute_sends_no_request(sim, session, monkeypatch):
    seed(sim, 150)
    first = mine(api_figures(session, None, None))
    assert sim.counters.executions == 2

    again = mine(api_figures(session, None, None))

    assert sim.counters.executions == 2  # nothing asked
    assert again == first
    # Another period is another listing.
    mine(api_figures(session, datetime(2026, 1, 1, tzinfo=timezone.utc), None))
    assert sim.counters.executions == 4
    # Past the minute, the API is asked again.
    monkeypatch.setattr(reconcile, "FRESH_SECONDS", 0.2)
    time.sleep(0.3)
    seed(sim, 1, prefix="late")
    assert mine(api_figures(session, None, None)).count == 151
    assert sim.counters.executions == 6


def test_concurrent_views_share_one_listing(sim, session):
    from airflow.utils.session import create_session

    seed(sim, 120)
    sim.inject("executions", "delay", times=1, seconds=0.5)  # the first page is slow
    views = 8
    start = threading.Barrier(views)
    answers: list[ApiFigures] = []

    def view() -> None:
        with create_session() as own:
            start.wait()
            answers.append(mine(api_figures(own, None, None)))

    threads = [threading.Thread(target=view) for _ in range(views)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == views and all(answer.count == 120 for answer in answers)
    assert sim.counters.executions == 2  # one listing of two pages, for all eight views
    assert len({id(answer) for answer in answers}) == 1


# --- failures, in the provider's words, kept for the minute ------------------------------------------


def test_a_wrong_key_is_an_error_naming_the_connection_and_never_the_key(sim, session, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_WRONG", connection_json(sim.base_url, api_key=WRONG_KEY))
    seed(sim, 3)

    answers = api_figures(session, None, None)

    wrong = mine(answers, "eachlabs_wrong")
    assert wrong.error is not None
    assert wrong.error.startswith(
        "Eachlabs connection 'eachlabs_wrong': the API refused the connection's key"
    )
    assert not wrong.complete and wrong.count == 0
    assert WRONG_KEY not in repr(answers) and KEY not in repr(answers)
    # The other connection is read all the same.
    assert mine(answers).count == 3
    # The failure is kept for the minute too: no second request with the wrong key.
    asked = sim.counters.executions
    assert mine(api_figures(session, None, None), "eachlabs_wrong") == wrong
    assert sim.counters.executions == asked


def test_an_unreachable_api_is_an_error_at_once(sim, session, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_EACHLABS_GONE", connection_json(f"http://127.0.0.1:{port}", api_key=WRONG_KEY)
    )
    started = time.monotonic()
    gone = mine(api_figures(session, None, None), "eachlabs_gone")
    assert time.monotonic() - started < live.PAGE_TIMEOUT + 1
    assert gone.error is not None and gone.error.startswith("Eachlabs connection 'eachlabs_gone': the API ")
    assert WRONG_KEY not in repr(gone)


def test_a_server_error_is_said_and_kept_for_the_minute(sim, session):
    seed(sim, 3)
    sim.inject("executions", "status", times=3, status=503, message=f"upstream said {KEY}")
    failed = mine(api_figures(session, None, None))
    assert failed.error is not None and failed.error.startswith(
        f"Eachlabs connection {CONN!r}: the API failed"
    )
    assert KEY not in repr(failed) and "upstream" not in failed.error
    assert sim.counters.executions == 1  # sent once: no retries on a page
    assert mine(api_figures(session, None, None)) == failed
    assert sim.counters.executions == 1


def test_a_slow_api_is_an_error_after_the_page_deadline(sim, session, monkeypatch):
    monkeypatch.setattr(live, "PAGE_TIMEOUT", 1.0)
    seed(sim, 3)
    sim.inject("executions", "delay", times=1, seconds=3)
    started = time.monotonic()
    slow = mine(api_figures(session, None, None))
    took = time.monotonic() - started
    assert slow.error is not None and slow.error.startswith(f"Eachlabs connection {CONN!r}: the API ")
    assert took < 2.5, took


# --- the bounds, said in words --------------------------------------------------------------------


def test_the_listing_stops_at_its_page_bound_and_says_so(sim, session, monkeypatch):
    monkeypatch.setattr(reconcile, "MAX_PAGES", 2)
    seed(sim, 250)
    figures = mine(api_figures(session, None, None))
    assert figures.truncated == "listing truncated at 200 executions"
    assert (figures.count, figures.error, figures.complete) == (200, None, False)
    assert sim.counters.executions == 2


def test_the_listing_stops_at_10000_executions_by_default(sim, session, monkeypatch):
    # The page bound alone: on a busy machine the simulator's 100 pages of a 10,050-row history can
    # take longer than the 10 s budget (3.4 to 5 s here, once more), and that bound is tested below.
    monkeypatch.setattr(reconcile, "LISTING_SECONDS", 120.0)
    seed(sim, 10_050)
    started = time.monotonic()
    figures = mine(api_figures(session, None, None))
    took = time.monotonic() - started
    assert figures.truncated == "listing truncated at 10,000 executions", (figures, took)
    assert figures.count == 10_000 and len(figures.prediction_ids) == 10_000
    assert sim.counters.executions == 100
    assert figures.cost == Decimal("500.00")
    print(f"10,000 executions in 100 pages: {took:.2f} s")


def test_the_listing_stops_at_its_time_budget_and_says_so(sim, session, monkeypatch):
    monkeypatch.setattr(reconcile, "LISTING_SECONDS", 2.0)
    seed(sim, 500)
    sim.inject("executions", "delay", times=5, seconds=0.8)
    started = time.monotonic()
    figures = mine(api_figures(session, None, None))
    took = time.monotonic() - started
    # Two slow pages read (one, should the second overrun what was left of the budget), then no
    # third one started with less than MIN_PAGE_SECONDS left.
    assert figures.count in (100, 200) and figures.error is None, figures
    assert figures.truncated == f"listing stopped at its 2 s budget, after {figures.count} executions"
    assert took < 3.0, took


# --- which connections: the deployment's, never a task's ---------------------------------------------


def test_connections_come_from_the_connection_table_and_the_environment_only(sim, session, monkeypatch):
    from airflow.models.connection import Connection

    db_sim_key = "db-key-3a7e"
    with (
        EachlabsSimulator(api_key=db_sim_key, predict_seconds=0.2) as db_sim,
        EachlabsSimulator(api_key="xcom-key-9", predict_seconds=0.2) as xcom_sim,
    ):
        seed(db_sim, 2, api_key=db_sim_key)
        seed(xcom_sim, 2, api_key="xcom-key-9")
        session.add(
            Connection(
                conn_id="eachlabs_in_db", conn_type="eachlabs", host=db_sim.base_url, password=db_sim_key
            )
        )
        session.add(Connection(conn_id="http_in_db", conn_type="http", host=xcom_sim.base_url))
        # A URI form, a connection of another type, a JSON that only mentions eachlabs.
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_URI", f"eachlabs://:{KEY}@127.0.0.1/?timeout=2")
        monkeypatch.setenv("AIRFLOW_CONN_NOT_EACHLABS", "http://example.com")
        monkeypatch.setenv(
            "AIRFLOW_CONN_MENTIONS_EACHLABS", json.dumps({"conn_type": "http", "description": "eachlabs"})
        )
        monkeypatch.setenv("AIRFLOW_CONN_BROKEN", "{not json")
        monkeypatch.setenv(
            "EACHLABS_CONN_NOT_AIRFLOW", connection_json(xcom_sim.base_url, api_key="xcom-key-9")
        )
        # What a task wrote: an XCom that names a connection and a host, as a hostile task would.
        _task_wrote(
            session,
            {
                "eachlabs_conn_id": "eachlabs_from_xcom",
                "conn_id": "eachlabs_from_xcom",
                "host": xcom_sim.base_url,
                "connection": json.loads(connection_json(xcom_sim.base_url, api_key="xcom-key-9")),
            },
        )
        session.commit()  # the api-server's hook reads connections in a session of its own
        try:
            ids = eachlabs_connection_ids(session)
            assert {"eachlabs_in_db", CONN, "eachlabs_uri"} <= set(ids)
            assert not {
                "http_in_db",
                "not_eachlabs",
                "mentions_eachlabs",
                "broken",
                "eachlabs_from_xcom",
            } & set(ids)
            answers = api_figures(session, None, None)
            assert [answer.conn_id for answer in answers] == ids
            assert mine(answers, "eachlabs_in_db").count == 2 and db_sim.counters.executions == 1
            assert xcom_sim.counters.requests == 0  # nothing a task wrote was followed
        finally:
            _forget(session)


def _forget(session: Any) -> None:
    from airflow.models.connection import Connection
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    session.rollback()
    session.query(XComModel).filter(XComModel.dag_id == "reconcile_probe").delete()
    session.query(TaskInstance).filter(TaskInstance.dag_id == "reconcile_probe").delete()
    session.query(DagRun).filter(DagRun.dag_id == "reconcile_probe").delete()
    session.query(DagModel).filter(DagModel.dag_id == "reconcile_probe").delete()
    session.query(DagBundleModel).filter(DagBundleModel.name == "reconcile-probe").delete()
    session.query(Connection).filter(Connection.conn_id.in_(["eachlabs_in_db", "http_in_db"])).delete()
    session.commit()


def _task_wrote(session: Any, value: dict[str, Any]) -> None:
    """An XCom row of a run, as a task's ``xcom_push`` leaves it."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import insert

    dag_id = "reconcile_probe"
    session.add(DagBundleModel(name="reconcile-probe"))
    session.flush()
    session.add(DagModel(dag_id=dag_id, bundle_name="reconcile-probe"))
    session.flush()
    run = DagRun(dag_id=dag_id, run_id="probe_run", run_type="manual", state="success")
    session.add(run)
    session.flush()
    session.execute(
        insert(TaskInstance.__table__).values(
            dag_id=dag_id, task_id="hostile", run_id=run.run_id, map_index=-1, pool="default_pool"
        )
    )
    session.add(
        XComModel(
            dag_run_id=run.id,
            task_id="hostile",
            map_index=-1,
            key="eachlabs_request",
            dag_id=dag_id,
            run_id=run.run_id,
            value=json.dumps(value),
        )
    )
