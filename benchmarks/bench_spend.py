"""The fills page at 10,000 / 100,000 / 1,000,000 recorded predictions, beside Airflow's own task list.

For each size a real Airflow metadata database is made (``airflow db migrate`` into a private
``AIRFLOW_HOME``; SQLite, and PostgreSQL where Debian's binaries are there: a throwaway cluster as in
``tests/e2e/conftest.py``) and seeded with a year of history: 40 DAGs, one run a day each (14,600
runs), one mapped task instance per prediction, and the spend ledger the tasks write
(``task_state_store``: ``bought`` and ``ended`` per prediction, JSON as the Execution API stores
it; 90 % succeeded, 7 % failed, 3 % cancelled, 0.05 USD each). Then, in the same process, with the
provider's own code:

- the page's figures, ``records.overview(session, all_dag_ids)``: cold (a fresh ``spend.Fold``, the
  first page after an api-server start; median of 3), the page right after it, warm (the next
  pages: median of 5) and warm after 100 new ledger rows (5 times: insert, one page; median);
- the memory the fold keeps (tracemalloc over a fresh fold: what it holds after its first refresh,
  after a refresh once its rows have settled, and the peak while reading);
- where the cold fold's time goes: the SQL fetch alone, ``json.loads`` alone, the fold of the
  fetched rows, the newest-rows query of the page, and the once-a-minute deletion check (a count);
- Airflow's own task-instance list over the same history, the public REST route
  ``GET /api/v2/dags/~/dagRuns/~/taskInstances?limit=50&order_by=-start_date``, called through
  Airflow's FastAPI app in process (``TestClient``, simple auth manager, all admins); median of 5.

Each (database, size) runs in its own child process, whose environment points Airflow at that
database before Airflow is imported.

    python benchmarks/bench_spend.py [--sizes 10000,100000,1000000] [--quick] [--db sqlite,postgres] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import fmt, log, machine  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
DAGS = 40
DAYS = 365
CHUNK = 20_000
COST_MICRO_USD = 50_000  # 0.05 USD
MODEL = "flux-fill-pro"
CONN_ID = "eachlabs_default"  # ledger entries name their connection (the page groups by it too)
TASK_ID = "fill"
WARM_CALLS = 5
COLD_CALLS = 3
NEW_ROWS = 100  # 50 predictions, bought and ended
DAG_IDS = [f"catalog_fill_{n:02d}" for n in range(DAGS)]


# -- the parent: databases, children, the table --------------------------------------------------


def airflow_env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def migrate(env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def run_child(env: dict[str, str], db: str, size: int) -> dict[str, Any]:
    log(f"--- {db}, {size:,} predictions")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", db, str(size)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"db": db, "size": size, "error": f"exit {proc.returncode}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def sqlite_rows(sizes: Sequence[int], work: Path) -> Iterator[dict[str, Any]]:
    for size in sizes:
        home = work / f"sqlite-{size}"
        home.mkdir()
        env = airflow_env(home, f"sqlite:///{home / 'airflow.db'}")
        seconds = migrate(env)
        log(f"sqlite: migrated in {seconds:.1f} s")
        yield run_child(env, "sqlite", size)
        shutil.rmtree(home, ignore_errors=True)


def postgres_rows(sizes: Sequence[int], work: Path) -> Iterator[dict[str, Any]]:
    """A throwaway cluster (tests/e2e/conftest.py's), one database per size, dropped after it."""
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        log("postgres: SKIPPED, no /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        return
    try:
        import psycopg2
    except ImportError:
        log("postgres: SKIPPED, psycopg2 is not installed in this venv")
        return
    sys.path.insert(0, str(ROOT))
    from tests.e2e.conftest import ProcessManager, postgres_database

    pg_work = work / "pg"
    pg_work.mkdir()
    logs = work / "pg-logs"
    logs.mkdir()
    processes = ProcessManager(logs)
    try:
        with postgres_database(pg_work, processes) as url:
            base = url.rsplit("/", 1)[0]
            for size in sizes:
                name = f"spend_{size}"
                admin = psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql"))
                admin.autocommit = True
                admin.cursor().execute(f"CREATE DATABASE {name}")
                home = work / f"pg-{size}"
                home.mkdir()
                env = airflow_env(home, f"{base}/{name}")
                seconds = migrate(env)
                log(f"postgres: migrated in {seconds:.1f} s")
                yield run_child(env, "postgres", size)
                admin.cursor().execute(f"DROP DATABASE {name}")
                admin.close()
    finally:
        left = processes.stop_all()
        if left:
            log(f"postgres: processes still alive after stop: {left}")


def table(rows: list[dict[str, Any]]) -> str:
    columns = (
        ("page_cold_s", "page cold s", 3),
        ("figures_ready_s", "figures after s", 2),
        ("page_second_s", "2nd page s", 3),
        ("page_warm_s", "page warm s", 3),
        ("page_warm_after_new_rows_s", "warm +100 rows s", 3),
        ("fold_held_first_page_mb", "fold MB 1st page", 1),
        ("fold_held_mb", "fold MB settled", 1),
        ("airflow_ti_list_s", "Airflow TI list s", 3),
    )
    head = f"{'N':>9} | {'DB':<8} | " + " | ".join(f"{label:>{len(label)}}" for _, label, _ in columns)
    out = [head, "-" * len(head)]
    for row in rows:
        if "error" in row:
            out.append(f"{row['size']:>9,} | {row['db']:<8} | {row['error']}")
            continue
        cells = " | ".join(f"{fmt(row.get(name), digits):>{len(label)}}" for name, label, digits in columns)
        out.append(f"{row['size']:>9,} | {row['db']:<8} | {cells}")
    out += ["", "where the cold page's time goes (seconds, each part timed alone; '-' where not measured):"]
    parts = (
        ("sql_fetch", "SQL fetch"),
        ("sql_fetch_untyped", "untyped"),
        ("sql_fetch_untyped_no_updated_at", "no upd_at"),
        ("json_loads", "json.loads"),
        ("fold_with_json", "fold+json"),
        ("fold_day_of_timestamp", "day"),
        ("ledger_rows", "newest rows"),
        ("figures", "figures"),
        ("deletion_count", "count"),
    )
    head = f"{'N':>9} | {'DB':<8} | " + " | ".join(f"{label:>10}" for _, label in parts)
    head += f" | {'peak MB':>7} | {'seed rows/s':>11}"
    out += [head, "-" * len(head)]
    for row in rows:
        if "error" in row:
            continue
        cells = " | ".join(f"{fmt(row['cold_parts_s'].get(name), 3):>10}" for name, _ in parts)
        out.append(
            f"{row['size']:>9,} | {row['db']:<8} | {cells} | {fmt(row['fold_peak_mb'], 1):>7} | "
            f"{row['seed']['rows_per_s']:>11,.0f}"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default=",".join(str(s) for s in SIZES), help="predictions, comma-separated"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 predictions only")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("DB", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-spend-") as folder:
        work = Path(folder)
        if "sqlite" in dbs:
            rows += list(sqlite_rows(sizes, work))
        if "postgres" in dbs:
            rows += list(postgres_rows(sizes, work))
    report = {"machine": machine(), "sizes": sizes, "rows": rows}
    if args.json:
        print(json.dumps(report))
    else:
        print(table(rows))
    return 1 if any("error" in row for row in rows) else 0


# -- the child: seed one database, then measure ------------------------------------------------


def child(db: str, size: int) -> dict[str, Any]:
    from airflow import settings

    engine = settings.engine
    seed = seed_history(engine, db, size)
    rate = seed["rows_per_s"]
    log(f"{db} {size:,}: seeded {seed['rows']:,} rows in {seed['seconds']:.1f} s ({rate:,.0f}/s)")
    result: dict[str, Any] = {"db": db, "size": size, "seed": seed}
    result["provider_code"] = provider_code()
    result.update(measure_page(engine, db, size))
    result.update(measure_parts())
    result["airflow_ti_list_s"], result["airflow_ti_list_total"] = measure_ti_list(size)
    log(f"{db} {size:,}: {json.dumps({k: v for k, v in result.items() if k != 'seed'})}")
    return result


def provider_code() -> str:
    """The commit the measured fold comes from, and whether its files differ from it (the tree is shared)."""
    files = ["airflow_provider_eachlabs/plugin/spend.py", "airflow_provider_eachlabs/plugin/records.py"]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *files], cwd=ROOT, check=False)
    return head.stdout.strip() + (" (spend.py/records.py modified)" if dirty.returncode else "")


def seed_history(engine: Any, db: str, size: int) -> dict[str, Any]:
    """DAGs, a year of daily runs, one mapped task instance and two ledger rows per prediction."""
    from airflow.models.dag import DagModel
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    started = time.perf_counter()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    first_day = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0)
    with Session(engine) as session:
        session.add(DagBundleModel(name="dags-folder"))
        session.flush()
        for dag_id in DAG_IDS:
            session.add(
                DagModel(
                    dag_id=dag_id,
                    bundle_name="dags-folder",
                    is_paused=False,
                    is_stale=False,
                    timetable_type="airflow.timetables.interval.CronDataIntervalTimetable",
                    timetable_summary="@daily",
                    max_active_tasks=16,
                    max_active_runs=1,
                    max_consecutive_failed_dag_runs=0,
                    has_task_concurrency_limits=False,
                    fileloc=f"/opt/airflow/dags/{dag_id}.py",
                )
            )
        session.flush()
        versions = {}
        for dag_id in DAG_IDS:
            version = DagVersion(dag_id=dag_id, version_number=1, bundle_name="dags-folder")
            session.add(version)
            versions[dag_id] = version
        session.commit()
        version_ids = {dag_id: version.id for dag_id, version in versions.items()}

    # Runs in time order, each DAG at its own minute past midnight; predictions spread over them.
    runs: list[dict[str, Any]] = []
    for day in range(DAYS):
        logical = first_day + timedelta(days=day)
        for n, dag_id in enumerate(DAG_IDS):
            start = logical + timedelta(days=1, minutes=n)
            runs.append(
                {
                    "dag_id": dag_id,
                    "run_id": f"scheduled__{logical.isoformat()}",
                    "run_type": "scheduled",
                    "logical_date": logical,
                    "data_interval_start": logical,
                    "data_interval_end": logical + timedelta(days=1),
                    "run_after": logical + timedelta(days=1),
                    "queued_at": start,
                    "start_date": start,
                    "end_date": start + timedelta(hours=1),
                    "state": "success",
                    "created_dag_version_id": version_ids[dag_id],
                    "conf": {},
                    "triggered_by": DagRunTriggeredByType.TIMETABLE,
                }
            )
    with engine.begin() as conn:
        conn.execute(DagRun.__table__.insert(), runs)
        ids = {
            (dag_id, run_id): run_pk
            for run_pk, dag_id, run_id in conn.execute(select(DagRun.id, DagRun.dag_id, DagRun.run_id))
        }

    rng = random.Random(20261207)
    per_run, extra = divmod(size, len(runs))
    ti_rows: list[dict[str, Any]] = []
    store_rows: list[dict[str, Any]] = []
    counts = {"task_instance": 0, "task_state_store": 0}

    def flush(conn: Any) -> None:
        if ti_rows:
            conn.execute(TaskInstance.__table__.insert(), ti_rows)
            counts["task_instance"] += len(ti_rows)
        if store_rows:
            conn.execute(TaskStateStoreModel.__table__.insert(), store_rows)
            counts["task_state_store"] += len(store_rows)
        ti_rows.clear()
        store_rows.clear()

    prediction = 0
    with engine.begin() as conn:
        if db == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        for index, run in enumerate(runs):
            # The first ``extra`` runs of every day-block get one more (spread over the year).
            k = per_run + (1 if (index * 7919) % len(runs) < extra else 0)
            run_pk = ids[(run["dag_id"], run["run_id"])]
            at = run["start_date"] + timedelta(seconds=5)
            for map_index in range(k):
                prediction += 1
                ident = f"{prediction:08x}-{rng.getrandbits(32):08x}-4b7a-9c1d-{rng.getrandbits(48):012x}"
                draw = rng.random()
                status = "succeeded" if draw < 0.90 else "failed" if draw < 0.97 else "cancelled"
                predict_time = round(rng.uniform(3.0, 14.0), 2)
                bought_at = at + timedelta(seconds=map_index * 0.5)
                ended_at = bought_at + timedelta(seconds=predict_time + 1)
                where = {
                    "dag_run_id": run_pk,
                    "dag_id": run["dag_id"],
                    "run_id": run["run_id"],
                    "task_id": TASK_ID,
                    "map_index": map_index,
                }
                ti_rows.append(
                    {
                        "dag_id": run["dag_id"],
                        "run_id": run["run_id"],
                        "task_id": TASK_ID,
                        "map_index": map_index,
                        "state": "success" if status == "succeeded" else "failed",
                        "start_date": bought_at - timedelta(seconds=1),
                        "end_date": ended_at,
                        "duration": predict_time + 2,
                        "try_number": 1,
                        "max_tries": 2,
                        "hostname": "worker-1",
                        "unixname": "airflow",
                        "pool": "default_pool",
                        "pool_slots": 1,
                        "queue": "default",
                        "priority_weight": 1,
                        "operator": "FluxFillOperator",
                        "executor": "LocalExecutor",
                        "dag_version_id": version_ids[run["dag_id"]],
                        "span_status": "not_started",
                    }
                )
                store_rows.append(
                    {
                        **where,
                        "key": f"eachlabs_ledger/bought/{ident}",
                        "value": json.dumps(
                            {
                                "v": 1,
                                "conn": CONN_ID,
                                "at": bought_at.timestamp(),
                                "model": MODEL,
                                "how": "bought",
                                "try": 1,
                            }
                        ),
                        "updated_at": bought_at,
                    }
                )
                store_rows.append(
                    {
                        **where,
                        "key": f"eachlabs_ledger/ended/{ident}",
                        "value": json.dumps(
                            {
                                "v": 1,
                                "conn": CONN_ID,
                                "bought_at": bought_at.timestamp(),
                                "status": status,
                                "cause": "content-policy" if status == "failed" else None,
                                "cost": COST_MICRO_USD,
                                "predict_time": predict_time,
                                "try": 1,
                            }
                        ),
                        "updated_at": ended_at,
                    }
                )
                if len(store_rows) >= CHUNK:
                    flush(conn)
        flush(conn)
    if prediction != size:
        raise RuntimeError(f"seeded {prediction} predictions, not {size}")
    if db == "postgres":  # as autovacuum would have, on a database that has lived a year
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    rows = len(runs) + counts["task_instance"] + counts["task_state_store"]
    return {
        "seconds": round(seconds, 1),
        "rows": rows,
        "rows_per_s": rows / seconds,
        "dag_runs": len(runs),
        **counts,
    }


def _overview_once() -> tuple[float, Any]:
    from airflow.utils.session import create_session

    from airflow_provider_eachlabs.plugin.records import overview

    with create_session() as session:
        started = time.perf_counter()
        page = overview(session, set(DAG_IDS))
        return time.perf_counter() - started, page


def _fresh_fold() -> Any:
    """The fold as a freshly started api-server worker has it: empty, its first fold not started."""
    import threading

    from airflow_provider_eachlabs.plugin import spend

    spend.FOLD = spend.Fold()
    spend.READY = threading.Event()
    spend._STARTED = threading.Event()
    return spend.FOLD


def insert_new_rows(engine: Any, predictions: int, serial: int) -> None:
    """``predictions`` more predictions of today's first run, bought and ended 5 s ago (settled)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import select

    at = datetime.now(timezone.utc) - timedelta(seconds=5)
    with engine.begin() as conn:
        run_pk, dag_id, run_id = conn.execute(
            select(DagRun.id, DagRun.dag_id, DagRun.run_id).order_by(DagRun.id.desc()).limit(1)
        ).one()
        rows = []
        for n in range(predictions):
            ident = f"ffff{serial:04x}-{n:08x}-4b7a-9c1d-5e6f7a8b9c0d"
            where = {"dag_run_id": run_pk, "dag_id": dag_id, "run_id": run_id, "task_id": TASK_ID}
            where["map_index"] = 100_000 + serial * 1000 + n
            rows.append(
                {
                    **where,
                    "key": f"eachlabs_ledger/bought/{ident}",
                    "value": json.dumps(
                        {
                            "v": 1,
                            "conn": CONN_ID,
                            "at": at.timestamp(),
                            "model": MODEL,
                            "how": "bought",
                            "try": 1,
                        }
                    ),
                    "updated_at": at,
                }
            )
            value = {
                "v": 1,
                "conn": CONN_ID,
                "bought_at": at.timestamp(),
                "status": "succeeded",
                "cause": None,
            }
            value.update({"cost": COST_MICRO_USD, "predict_time": 4.2, "try": 1})
            rows.append(
                {
                    **where,
                    "key": f"eachlabs_ledger/ended/{ident}",
                    "value": json.dumps(value),
                    "updated_at": at,
                }
            )
        conn.execute(TaskStateStoreModel.__table__.insert(), rows)


def measure_page(engine: Any, db: str, size: int) -> dict[str, Any]:
    import tracemalloc

    from airflow.utils.session import create_session

    from airflow_provider_eachlabs.plugin import records  # imported before any clock starts

    del records
    from airflow_provider_eachlabs.plugin import spend

    cold: list[float] = []
    ready: list[float] = []
    for _ in range(COLD_CALLS):
        _fresh_fold()
        started = time.perf_counter()
        seconds, page = _overview_once()  # starts the first fold; answers at once when it is long
        cold.append(seconds)
        spend.READY.wait(3600)
        ready.append(time.perf_counter() - started)
    seconds, page = _overview_once()
    total = page.total
    expected_spend = size * COST_MICRO_USD / 1_000_000
    if total.bought != size or abs(total.spend - expected_spend) > 1e-6 or total.open:
        raise RuntimeError(f"the page says {total}, not {size} predictions for {expected_spend} USD")
    # The page right after the cold one: the fold re-reads the ids of its last SETTLE_SECONDS.
    second = _overview_once()[0]
    warm = [_overview_once()[0] for _ in range(WARM_CALLS)]
    after_new: list[float] = []
    for serial in range(WARM_CALLS):
        insert_new_rows(engine, NEW_ROWS // 2, serial)
        seconds, page = _overview_once()
        after_new.append(seconds)
    if page.total.bought != size + WARM_CALLS * NEW_ROWS // 2:
        raise RuntimeError(f"the page missed new rows: {page.total.bought}")

    # The memory the fold keeps: a fresh fold's first refresh under tracemalloc (its time is not
    # used), then, once its rows are older than SETTLE_SECONDS, a second refresh: what it keeps for good.
    fold = _fresh_fold()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.monotonic()
    with create_session() as session:
        fold.refresh(session)
    held, peak = tracemalloc.get_traced_memory()
    time.sleep(max(0.0, getattr(spend, "SETTLE_SECONDS", 0) + 0.5 - (time.monotonic() - started)))
    with create_session() as session:
        fold.refresh(session)
    settled = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "page_cold_s": statistics.median(cold),
        "figures_ready_s": statistics.median(ready),
        "page_cold_runs_s": cold,
        "page_second_s": second,
        "page_warm_s": statistics.median(warm),
        "page_warm_after_new_rows_s": statistics.median(after_new),
        "fold_held_mb": (settled - before) / 2**20,
        "fold_held_first_page_mb": (held - before) / 2**20,
        "fold_peak_mb": (peak - before) / 2**20,
        "fold_buckets": len(fold.buckets),
        "fold_rows": fold.rows,
        "page_figures": {
            "bought": total.bought,
            "succeeded": total.succeeded,
            "failed": total.failed,
            "cancelled": total.cancelled,
            "spend_usd": total.spend,
            "p50_predict_time": total.p50_predict_time,
        },
    }


def measure_parts() -> dict[str, Any]:
    """The cold page taken apart: each part timed alone, on the same rows."""
    from airflow.utils.session import create_session

    from airflow_provider_eachlabs.plugin import spend
    from airflow_provider_eachlabs.plugin.records import ledger_rows

    dag_ids = set(DAG_IDS)
    with create_session() as session:
        started = time.perf_counter()
        fetched = list(spend._rows_after(session, 0))
        sql_fetch = time.perf_counter() - started
    started = time.perf_counter()
    for row in fetched:
        json.loads(row[3])
    json_loads = time.perf_counter() - started
    fold = spend.Fold()
    started = time.perf_counter()
    for row in fetched:
        fold._fold(*row[1:5])
    fold_with_json = time.perf_counter() - started
    with create_session() as session:
        started = time.perf_counter()
        ledger_rows(session, dag_ids, None, None, None, 200)
        newest = time.perf_counter() - started
        started = time.perf_counter()
        spend._count_up_to(session, max(row[0] for row in fetched))
        count = time.perf_counter() - started
    driver = _driver_fetch()
    pieces = _fold_pieces(fetched)
    buckets = fold.select(dag_ids)
    started = time.perf_counter()
    groups: dict[tuple[int, Any], list[Any]] = {}
    for where, bucket in buckets.items():  # by DAG, by day (and by connection), as overview() groups
        for part, name in enumerate(where):
            groups.setdefault((part, name), []).append(bucket)
    spend.figures(buckets.values())
    for group in groups.values():
        spend.figures(group)
    figures = time.perf_counter() - started
    return {
        "cold_parts_s": {
            "sql_fetch": sql_fetch,
            "json_loads": json_loads,
            "fold_with_json": fold_with_json,
            "ledger_rows": newest,
            "figures": figures,
            "deletion_count": count,
            **driver,
            **pieces,
        },
        "ledger_rows_read": len(fetched),
    }


def _driver_fetch() -> dict[str, float]:
    """The fold's query with untyped columns: what the driver costs without SQLAlchemy's result
    processing (``UtcDateTime`` parsing every ``updated_at``), and without ``updated_at`` at all."""
    from airflow.utils.session import create_session
    from sqlalchemy import column, select, table

    from airflow_provider_eachlabs.ledger import PREFIX

    store = table(
        "task_state_store",
        *(column(name) for name in ("id", "dag_id", "key", "value", "updated_at", "task_id")),
    )
    figures = {}
    for name, columns in (
        (
            "sql_fetch_untyped",
            [store.c[name] for name in ("id", "dag_id", "key", "value", "updated_at", "task_id")],
        ),
        (
            "sql_fetch_untyped_no_updated_at",
            [store.c[name] for name in ("id", "dag_id", "key", "value", "task_id")],
        ),
    ):
        query = (
            select(*columns)
            .where(store.c.id > 0, store.c.key.startswith(PREFIX, autoescape=True))
            .order_by(store.c.id)
            .execution_options(yield_per=10_000)
        )
        with create_session() as session:
            started = time.perf_counter()
            for _ in session.execute(query):
                pass
            figures[name] = time.perf_counter() - started
    return figures


def _fold_pieces(fetched: list[Any]) -> dict[str, float]:
    """A step ``Fold._fold`` takes for every row, timed alone over all the rows: the day of its time."""
    from airflow_provider_eachlabs.plugin import spend

    stamps = [1_750_000_000.0 + n for n in range(len(fetched))]
    started = time.perf_counter()
    for at in stamps:
        spend._day(at)
    return {"fold_day_of_timestamp": time.perf_counter() - started}


def measure_ti_list(size: int) -> tuple[float, int]:
    """Airflow's own task list, all DAGs and runs, newest first, as the UI's task-instance page asks."""
    from airflow.api_fastapi import app as api_app
    from fastapi.testclient import TestClient

    # Airflow's route alone: no plugin (ours included) is mounted, so a plugin being edited cannot
    # break this figure, and what is measured is Airflow's own query and serialisation.
    api_app.init_plugins = lambda app: None
    client = TestClient(api_app.create_app(apps="core"))
    path = "/api/v2/dags/~/dagRuns/~/taskInstances"
    params: dict[str, str | int] = {"limit": 50, "order_by": "-start_date"}
    answer = client.get(path, params=params)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:500]}")
    total = int(answer.json()["total_entries"])
    times = []
    for _ in range(WARM_CALLS):
        started = time.perf_counter()
        answer = client.get(path, params=params)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200 and len(answer.json()["task_instances"]) == 50
    if total != size:
        raise RuntimeError(f"Airflow lists {total} task instances, not {size}")
    return statistics.median(times), total


if __name__ == "__main__":
    sys.exit(main())
