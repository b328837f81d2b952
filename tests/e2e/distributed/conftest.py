"""A distributed Airflow on loopback: CeleryExecutor with two workers, two triggerers, Redis, PostgreSQL.

The teams that run thousands of fills a night run Airflow this way: Celery workers on several hosts
and more than one triggerer, for capacity and so that a dead one's triggers move to a live one. The
LocalExecutor stack beside this one cannot show either. Here every component is its own process, as
in ``tests/e2e/conftest.py`` (same process manager, same REST client, same rules: every process
stopped by PID, every wait with a deadline), plus Redis as the Celery broker (Debian's
``redis-server`` on a free port, its own folder, nothing saved) and PostgreSQL as the metadata
database and the Celery result backend.

Each worker and triggerer names itself through ``[core] hostname_callable`` (``hostname.py``), so the
tests can read from Airflow which worker ran a task and which triggerer holds a trigger. The
triggerer heartbeat and health threshold, and the scheduler's task heartbeat timeout, are lowered
so that a failover or a dead worker's task is noticed in seconds; the README says what the
production defaults mean.

The package-scoped stack starts only when one of this folder's tests asks for it, and is stopped
before the LocalExecutor stack starts (two Airflows never share the two cores).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.e2e.conftest import (
    ADMIN_USER,
    AIRFLOW,
    API_KEY,
    E2E_ENABLED,
    LOOPBACK,
    ROOT,
    AirflowApi,
    Managed,
    ProcessManager,
    _airflow_env,
    component_argv,
    connection_body,
    deployment_folders,
    free_port,
    migrate_database,
    postgres_database,
    require,
    wait_for,
    wait_healthy,
)

WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
# How long a triggerer may miss its heartbeat before its triggers move (production default: 30 s).
TRIGGERER_HEALTH_CHECK_THRESHOLD = 10
# How long a running task may miss its heartbeat before the scheduler fails it for a retry
# (production default: 300 s).
TASK_HEARTBEAT_TIMEOUT = 20
# Prints, for every trigger in the metadata database: its triggerer's name, its deadline, its
# prediction. Trigger kwargs are encrypted in the database and emptied in the REST API, so the tests
# read them with Airflow's own model, in the stack's environment.
TRIGGERS_SCRIPT = """
import json
from sqlalchemy import select
from airflow.jobs.job import Job
from airflow.models.trigger import Trigger
from airflow.utils.session import create_session

with create_session() as session:
    names = dict(session.execute(select(Job.id, Job.hostname)).all())
    print(json.dumps({
        str(trigger.id): {
            "triggerer": names.get(trigger.triggerer_id),
            "deadline": trigger.kwargs.get("deadline"),
            "prediction_id": trigger.kwargs.get("prediction_id"),
        }
        for trigger in session.scalars(select(Trigger))
    }))
"""


# What the tests measured (failover time, connections per triggerer...), printed after the run.
FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("Eachlabs on a distributed Airflow")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@dataclass
class DistributedAirflow:
    """The running deployment: processes by name, the REST client, the simulators behind it."""

    env: dict[str, str]
    base_url: str
    api: AirflowApi
    processes: ProcessManager
    fast_sim: EachlabsSimulator
    slow_sim: EachlabsSimulator
    long_sim: EachlabsSimulator
    output_dir: Path
    components: dict[str, Managed] = field(default_factory=dict)

    def start(self, name: str) -> Managed:
        """Start one component; workers and triggerers under their own host names."""
        env = dict(self.env)
        if name.startswith(("worker-", "triggerer-")):
            env["EACHLABS_E2E_HOSTNAME"] = name
        if name.startswith("worker-"):
            argv = [
                *AIRFLOW,
                "celery",
                "worker",
                "--concurrency",
                "2",
                "--celery-hostname",
                f"{name}@%h",
                "--skip-serve-logs",
            ]
        else:
            argv = component_argv(name, self.base_url)
        managed = self.processes.start(name, argv, env)
        self.components[name] = managed
        return managed

    def triggers(self) -> dict[str, dict[str, Any]]:
        """Every trigger now in the metadata database: its triggerer's name, deadline and prediction."""
        done = subprocess.run(
            [AIRFLOW[0], "-c", TRIGGERS_SCRIPT],
            env=self.env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def point_default_at(self, sim: EachlabsSimulator) -> None:
        """Re-point ``eachlabs_default`` (read afresh by every task on a worker) at ``sim``."""
        self.api.request(
            "PATCH",
            "/connections/eachlabs_default",
            json=connection_body(sim.base_url),
            params={"update_mask": ["host"]},
        )

    def logs(self) -> str:
        return "\n".join(
            f"===== {m.name} ({m.log_path})\n{m.log_text()[-3000:]}" for m in self.processes.processes
        )


def _celery_available() -> bool:
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def redis_server(workdir: Path, processes: ProcessManager) -> Iterator[str]:
    """Debian's redis-server on a free loopback port, with its own folder and nothing saved to disk."""
    binary = shutil.which("redis-server")
    require(binary is not None, "the distributed stack needs Debian's redis-server")
    assert binary is not None
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    server = processes.start(
        "redis",
        [
            binary,
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        {"PATH": "/usr/bin:/bin"},
    )

    def ready() -> bool:
        if not server.alive():
            raise AssertionError(f"redis exited:\n{server.log_text()[-3000:]}")
        import socket

        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_for("redis to answer PING", ready, timeout=30)
    yield f"redis://{LOOPBACK}:{port}/0"


def _celery_env(base: dict[str, str], db_url: str, broker_url: str) -> dict[str, str]:
    env = dict(base)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "32",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.distributed.hostname.from_environment",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


@pytest.fixture(scope="package")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedAirflow]:
    """Start the distributed deployment once for this folder; stop every process it started."""
    require(E2E_ENABLED, "EACHLABS_E2E=0: the real-Airflow suite is switched off")
    require(
        _celery_available(), "the distributed stack needs apache-airflow-providers-celery (make e2e-deps)"
    )
    workdir, home, output_dir, password, password_file = deployment_folders("eachlabs-celery-")
    processes = ProcessManager(log_dir=tmp_path_factory.mktemp("distributed-logs"))
    fast_sim = EachlabsSimulator(api_key=API_KEY, predict_seconds=2.0)
    slow_sim = EachlabsSimulator(api_key=API_KEY, predict_seconds=20.0)
    long_sim = EachlabsSimulator(api_key=API_KEY, predict_seconds=60.0, max_in_flight=50)
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        try:
            for sim in (fast_sim, slow_sim, long_sim):
                stack.enter_context(sim)
            pg_dir = workdir / "pg"
            pg_dir.mkdir()
            db_url = stack.enter_context(postgres_database(pg_dir, processes))
            broker_url = stack.enter_context(redis_server(workdir, processes))
            port = free_port()
            env = _celery_env(_airflow_env(home, db_url, port, password_file, output_dir), db_url, broker_url)
            env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(processes.log_dir / "airflow-logs")
            migrate_database(env)
            base_url = env["AIRFLOW__API__BASE_URL"]
            api = AirflowApi(base_url, ADMIN_USER, password)
            airflow = DistributedAirflow(
                env, base_url, api, processes, fast_sim, slow_sim, long_sim, output_dir
            )
            for name in ("api-server", "scheduler", "dag-processor", *TRIGGERERS, *WORKERS):
                airflow.start(name)
            wait_healthy(api, processes)
            api.login()
            api.request("POST", "/connections", json=connection_body(fast_sim.base_url), expect=(201,))
            api.request(
                "POST",
                "/connections",
                json={**connection_body(long_sim.base_url), "connection_id": "eachlabs_long"},
                expect=(201,),
            )
            api.request(
                "POST",
                "/pools",
                json={"name": "eachlabs", "slots": 10, "include_deferred": True},
                expect=(201,),
            )
            wanted = {"eachlabs_batch_fill", "eachlabs_many_waits", "eachlabs_worker_death"}

            def parsed() -> bool:
                dags = api.get("/dags", params={"limit": 100})["dags"]
                return wanted <= {d["dag_id"] for d in dags}

            wait_for("the DAGs to be parsed", parsed, timeout=120, interval=1)
            yield airflow
        finally:
            leftovers = processes.stop_all()
            if leftovers:
                failures.append(f"processes still alive after teardown: {leftovers}")
    shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        pytest.fail("; ".join(failures), pytrace=False)
