"""A real Airflow on loopback for the end-to-end suite: api-server, scheduler, dag-processor, triggerer.

``dag.test()`` runs everything in one process and never meets the scheduler, the LocalExecutor's
task supervisors, the Execution API or the triggerer; users do. So this suite starts each component
as its own process, exactly as a deployment does, on 127.0.0.1 with ports picked free, a private
``AIRFLOW_HOME`` and a private metadata database, and drives it only through the public REST API
(and, in ``test_browser.py``, a headless Chromium).

Robustness rules, because a leaked scheduler outlives the test run and poisons the next one:
every process is started in its own session with its PID recorded, is stopped by PID (SIGTERM to
the leader, then to its process group and any descendants, then SIGKILL) in a finalizer, and the
teardown fails if anything it started is still alive. Every wait has a deadline.

Prerequisites and skips: the real-Airflow tests need only this venv (SQLite is the default metadata
database; Airflow 3's LocalExecutor accepts it) and are skipped when ``EACHLABS_E2E=0``. Set
``EACHLABS_E2E_DB=postgres`` to run on a throwaway PostgreSQL cluster instead (needs Debian's
``postgresql`` and ``psycopg2``). The browser tests also need ``/usr/bin/chromium`` and the
``playwright`` package. With ``EACHLABS_E2E_REQUIRED=1`` (CI) a missing prerequisite is an error,
not a skip, so a green CI cannot hide a suite that never ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from airflow_provider_eachlabs.testing import EachlabsSimulator

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
E2E_DAGS = Path(__file__).resolve().parent / "dags"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
API_KEY = "e2e-key-4b1d6f0a93"
WEBHOOK_SECRET = "whsec-e2e-8c2f71d0a4"
ADMIN_USER = "admin"
# A second user of the simple auth manager with no role: it may sign in, and may read no DAG (the
# simple auth manager cannot limit a user to some DAGs; the FAB one can, through the same checks).
OUTSIDER_USER = "outsider"
AIRFLOW = [sys.executable, "-m", "airflow"]
T = TypeVar("T")


def _flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


E2E_ENABLED = _flag("EACHLABS_E2E", "1")
E2E_REQUIRED = _flag("EACHLABS_E2E_REQUIRED")


def require(condition: bool, reason: str) -> None:
    """Skip (dev box) or fail (CI, ``EACHLABS_E2E_REQUIRED=1``) when a prerequisite is missing."""
    if condition:
        return
    if E2E_REQUIRED:
        pytest.fail(f"e2e prerequisite missing while EACHLABS_E2E_REQUIRED=1: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A port free on 127.0.0.1 right now; the tiny race with other binders is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (requests.RequestException, OSError, ValueError) as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Managed:
    """One started process: its PID is the leader of its own session and process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _descendants(pid: int) -> list[int]:
    """PIDs below ``pid``; LocalExecutor workers and task supervisors may leave the process group."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class ProcessManager:
    """Starts processes and stops every one of them by PID; remembers every PID it ever saw."""

    log_dir: Path
    processes: list[Managed] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Managed:
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        managed = Managed(name, proc, log_path)
        self.processes.append(managed)
        self.seen_pids.add(proc.pid)
        return managed

    def stop(self, managed: Managed, grace: float = 30.0) -> None:
        """SIGTERM the leader (a graceful Airflow shutdown), then its group and descendants, then KILL."""
        pids = {managed.pid, *_descendants(managed.pid)}
        self.seen_pids |= pids
        if managed.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(managed.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.proc.wait(grace)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids |= set(_descendants(managed.pid))
            self.seen_pids |= pids
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(managed.pid, sig)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_pid_alive(pid) for pid in pids):
                time.sleep(0.1)
            if not any(_pid_alive(pid) for pid in pids):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.proc.wait(5)

    def stop_all(self) -> list[int]:
        """Stop everything in reverse start order; return the PIDs still alive afterwards."""
        for managed in reversed(self.processes):
            self.seen_pids |= set(_descendants(managed.pid))
        for managed in reversed(self.processes):
            self.stop(managed)
        return sorted(pid for pid in self.seen_pids if _pid_alive(pid))


# -- the metadata database -----------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


@contextlib.contextmanager
def postgres_database(workdir: Path, processes: ProcessManager) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; root runs it as ``postgres``."""
    bindir = _postgres_bin()
    require(bindir is not None, "EACHLABS_E2E_DB=postgres needs Debian's postgresql package")
    assert bindir is not None
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require(False, "EACHLABS_E2E_DB=postgres needs psycopg2 (pip install psycopg2-binary)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
    data = workdir / "pgdata"
    data.mkdir()
    if as_user:
        # The postgres user must reach its folder through our private (0700) temporary folders.
        for parent in (workdir.parent, workdir):
            parent.chmod(0o755)
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    initdb = subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert initdb.returncode == 0, f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}"
    port = free_port()
    server = processes.start(
        "postgres",
        [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={workdir}",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        dict(os.environ),
    )

    def ready() -> bool:
        if not server.alive():
            raise AssertionError(f"postgres exited:\n{server.log_text()[-3000:]}")
        probe = subprocess.run(
            [str(bindir / "pg_isready"), "-h", LOOPBACK, "-p", str(port)], capture_output=True, timeout=10
        )
        return probe.returncode == 0

    wait_for("postgres to accept connections", ready, timeout=60)
    subprocess.run(
        [str(bindir / "createdb"), "-h", LOOPBACK, "-p", str(port), "-U", "airflow", "airflow"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield f"postgresql+psycopg2://airflow@{LOOPBACK}:{port}/airflow"


# -- the REST client -----------------------------------------------------------------------------


class AirflowApi:
    """The public REST API (``/api/v2``) with a JWT from ``POST /auth/token``, as a user's script."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only, whatever proxy the environment names
        self._credentials = {"username": username, "password": password}

    def login(self) -> None:
        answer = self.session.post(f"{self.base_url}/auth/token", json=self._credentials, timeout=30)
        answer.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def request(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        answer = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        if answer.status_code not in expect:
            raise AssertionError(f"{method} {path} -> HTTP {answer.status_code}: {answer.text[:2000]}")
        return answer.json() if answer.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run now (``logical_date`` null, as the UI's trigger button does); return its id."""
        run = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        """Wait for a terminal run state and return it."""

        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return wait_for(f"run {dag_id}/{run_id} to finish", finished, timeout, interval=1)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        entry = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": "true"},
        )
        value = entry["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    def links(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        answer = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links", params={"map_index": map_index}
        )
        return dict(answer.get("extra_links", answer))

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task log as text, whatever shape (structured or plain) this Airflow returns."""
        answer = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = answer.get("content", answer)
        if isinstance(content, str):
            return content
        lines = []
        for item in content:
            if isinstance(item, dict):
                lines.append(" ".join(str(item.get(k, "")) for k in ("timestamp", "level", "event")))
                lines.extend(
                    f"  {k}={v}" for k, v in item.items() if k not in ("timestamp", "level", "event")
                )
            else:
                lines.append(str(item))
        return "\n".join(lines)


# -- the stack -----------------------------------------------------------------------------------


def component_argv(name: str, base_url: str) -> list[str]:
    """The command line of one Airflow component, as a deployment starts it (a ``triggerer-2`` is a
    triggerer; Celery workers are the distributed stack's own)."""
    if name.startswith("triggerer"):
        return [*AIRFLOW, "triggerer", "--skip-serve-logs"]
    return {
        "api-server": [*AIRFLOW, "api-server", "--host", LOOPBACK, "--port", base_url.rsplit(":", 1)[1]],
        "scheduler": [*AIRFLOW, "scheduler", "--skip-serve-logs"],
        "dag-processor": [*AIRFLOW, "dag-processor"],
    }[name]


@dataclass
class AirflowStack:
    """A running Airflow: its processes, environment, REST client and the simulators behind it."""

    home: Path
    env: dict[str, str]
    base_url: str
    password: str
    api: AirflowApi
    processes: ProcessManager
    fast_sim: EachlabsSimulator
    slow_sim: EachlabsSimulator
    output_dir: Path
    components: dict[str, Managed] = field(default_factory=dict)
    connection_host: str = ""
    statsd: StatsdListener | None = None

    def start_component(self, name: str) -> Managed:
        managed = self.processes.start(name, component_argv(name, self.base_url), self.env)
        self.components[name] = managed
        return managed

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """One ``airflow`` CLI command in this deployment's environment."""
        return subprocess.run(
            [*AIRFLOW, *args], env=self.env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout
        )

    def use_simulator(self, sim: EachlabsSimulator) -> None:
        """Point ``eachlabs_default`` (stored in the metadata DB) at ``sim``, through the REST API.

        A running triggerer keeps each connection's settings for a while (``SETTINGS_TTL_SECONDS``),
        as a deployment's does after someone edits a connection; so a change of simulator restarts
        the triggerer, and no test depends on which tests ran before it.
        """
        if sim.base_url == self.connection_host:
            return
        self.api.request(
            "PATCH",
            "/connections/eachlabs_default",
            json=connection_body(sim.base_url),
            params={"update_mask": ["host"]},
        )
        self.connection_host = sim.base_url
        self.restart_triggerer()

    def restart_triggerer(self) -> Managed:
        """Stop the triggerer by PID (SIGTERM, a graceful shutdown) and start a fresh one."""
        old = self.components.get("triggerer")
        if old is not None:
            self.processes.stop(old)
        return self.start_component("triggerer")

    def logs(self) -> str:
        """Every component's log tail, for assertion messages."""
        return "\n".join(
            f"===== {m.name} ({m.log_path})\n{m.log_text()[-4000:]}" for m in self.processes.processes
        )


def migrate_database(env: dict[str, str]) -> None:
    """``airflow db migrate`` in the deployment's environment, as its operator would run it first."""
    migrate = subprocess.run(
        [*AIRFLOW, "db", "migrate"], env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, f"airflow db migrate failed:\n{migrate.stdout}\n{migrate.stderr}"


def wait_healthy(api: AirflowApi, processes: ProcessManager) -> None:
    """Wait for the health endpoint to call every component healthy; fail at once if one exited."""

    def healthy() -> bool:
        for managed in processes.processes:
            if not managed.alive():
                raise AssertionError(f"{managed.name} exited early:\n{managed.log_text()[-5000:]}")
        health = api.session.get(f"{api.base_url}/api/v2/monitor/health", timeout=5).json()
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    wait_for("every Airflow component to report healthy", healthy, timeout=180, interval=1)


def connection_body(host: str) -> dict[str, Any]:
    """``eachlabs_default`` as the REST API takes it: stored in the DB, so tests can re-point it."""
    return {
        "connection_id": "eachlabs_default",
        "conn_type": "eachlabs",
        "host": host,
        "password": API_KEY,
        "extra": json.dumps({"timeout": 10, "max_retries": 3, "backoff_max": 2}),
    }


class StatsdListener:
    """A UDP socket on loopback that keeps every StatsD datagram the deployment sends (its
    ``[metrics]`` point here): tests/e2e/test_metrics.py reads what a real Airflow emitted."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(0.2)
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def env(self) -> dict[str, str]:
        """``[metrics]`` for this listener, with tags in the name (InfluxDB style) so they arrive."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": LOOPBACK,
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        }

    def lines(self) -> list[str]:
        """Every metric line received so far (a datagram may carry several)."""
        with self._lock:
            return list(self._lines)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._lines.extend(line for line in data.decode(errors="replace").splitlines() if line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _airflow_env(home: Path, db_url: str, port: int, password_file: Path, output_dir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW"))}
    base_url = f"http://{LOOPBACK}:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            # The example DAGs, and beside them the e2e suite's own (tests/e2e/dags).
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {"name": name, "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(path)}}
                    for name, path in (("dags-folder", ROOT / "example_dags"), ("e2e", E2E_DAGS))
                ]
            ),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{OUTSIDER_USER}:",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # On: an Asset event must create its consumer's run (tests/e2e/test_assets.py). Every
            # other DAG here is schedule=None, and the cron example is paused at creation.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "EACHLABS_DEMO_OUTPUT": str(output_dir),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            # OpenLineage (tests/e2e/test_openlineage.py), where its provider is installed: events of
            # the DAGs that call enable_lineage, and of no other, each to AIRFLOW_HOME/openlineage-*.json.
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(home / "openlineage")}
            ),
            "AIRFLOW__OPENLINEAGE__SELECTIVE_ENABLE": "True",
        }
    )
    return env


def deployment_folders(prefix: str) -> tuple[Path, Path, Path, str, Path]:
    """A deployment's private folders and login: its work folder, ``AIRFLOW_HOME``, the output
    folder, and the password both users of the simple auth manager sign in with (and its file)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    home = workdir / "airflow-home"
    home.mkdir()
    output_dir = workdir / "output"
    output_dir.mkdir()
    password = secrets.token_urlsafe(12)
    password_file = home / "passwords.json"
    password_file.write_text(json.dumps({ADMIN_USER: password, OUTSIDER_USER: password}))
    return workdir, home, output_dir, password, password_file


@pytest.fixture(scope="package")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """Start the whole deployment once for tests/e2e; stop every process it started.

    Package scope, not session: in ``make test`` the other suites run after this package, and they
    must not share two cores with a scheduler and a triggerer that nobody uses any more.
    """
    require(E2E_ENABLED, "EACHLABS_E2E=0: the real-Airflow suite is switched off")
    workdir, home, output_dir, password, password_file = deployment_folders("eachlabs-e2e-")
    processes = ProcessManager(log_dir=tmp_path_factory.mktemp("e2e-logs"))
    fast_sim = EachlabsSimulator(api_key=API_KEY, predict_seconds=1.0)
    slow_sim = EachlabsSimulator(api_key=API_KEY, predict_seconds=20.0)
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(fast_sim)
            stack.enter_context(slow_sim)
            statsd = StatsdListener()
            stack.callback(statsd.close)
            if os.environ.get("EACHLABS_E2E_DB", "sqlite") == "postgres":
                pg_dir = workdir / "pg"
                pg_dir.mkdir()
                db_url = stack.enter_context(postgres_database(pg_dir, processes))
            else:
                db_url = f"sqlite:///{home / 'airflow.db'}"
            port = free_port()
            env = _airflow_env(home, db_url, port, password_file, output_dir)
            # Task and trigger logs next to the component logs, in pytest's kept temporary folder.
            env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(processes.log_dir / "airflow-logs")
            env.update(statsd.env())  # every component sends its metrics to the listener
            base_url = env["AIRFLOW__API__BASE_URL"]
            migrate_database(env)
            api = AirflowApi(base_url, ADMIN_USER, password)
            airflow = AirflowStack(
                home, env, base_url, password, api, processes, fast_sim, slow_sim, output_dir
            )
            airflow.statsd = statsd
            for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
                airflow.start_component(name)
            wait_healthy(api, processes)
            api.login()
            api.request("POST", "/connections", json=connection_body(fast_sim.base_url), expect=(201,))
            airflow.connection_host = fast_sim.base_url
            api.request(
                "POST",
                "/variables",
                json={"key": "eachlabs_webhook_secret", "value": WEBHOOK_SECRET},
                expect=(201,),
            )
            api.request(
                "POST",
                "/pools",
                json={
                    "name": "eachlabs",
                    "slots": 10,
                    "description": "Eachlabs in-flight cap",
                    "include_deferred": True,
                },
                expect=(201,),
            )
            yield airflow
        finally:
            leftovers = processes.stop_all()
            if leftovers:
                failures.append(f"processes still alive after teardown: {leftovers}")
    shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        pytest.fail("; ".join(failures), pytrace=False)


@pytest.fixture(scope="package")
def dags_ready(airflow_stack: AirflowStack) -> AirflowStack:
    """Wait for the dag-processor to have serialized the three example DAGs and the suite's own."""
    wanted = {
        "eachlabs_flux_fill",
        "eachlabs_submit_and_sense",
        "eachlabs_batch_fill",
        "eachlabs_batch_operator",
        "eachlabs_worker_death",
        "eachlabs_webhook_fill",
        "eachlabs_batch_kill",
    }

    def parsed() -> bool:
        dags = airflow_stack.api.get("/dags", params={"limit": 100})["dags"]
        return wanted <= {d["dag_id"] for d in dags}

    try:
        wait_for("the example DAGs to be parsed", parsed, timeout=120, interval=1)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{airflow_stack.logs()}") from None
    return airflow_stack
