"""Batch throughput under the API's caps: 200 fills through a real Airflow (LocalExecutor).

What runs: Airflow's own processes, each started as a deployment starts them, on 127.0.0.1 with a
private AIRFLOW_HOME and SQLite metadata database (Airflow 3's LocalExecutor accepts SQLite):
``api-server`` (which also serves the Execution API the task processes talk to), ``scheduler``
(LocalExecutor), ``dag-processor`` and ``triggerer``. The DAG (``benchmarks/dags``) maps
``FluxFillOperator`` over 200 generated images with the README's setup: ``pool="eachlabs"`` of 10
slots created with ``--include-deferred``, and ``deferrable=True``. The simulator runs in its own
process with Eachlabs's caps (10 in flight, 100 creates a minute) and a scaled-down predict time.

The cap-bound ideal: create k can start no earlier than the end of create k-10 (10 in flight) nor
earlier than 60 s after create k-100 (100 creates in any minute). With every create at the earliest
such moment, the last prediction ends at the ideal makespan; ``ideal_makespan`` computes it. For 200
fills of 2 s: the first 100 go in 10 waves 2 s apart (0..18 s), the 101st must wait until 60 s, then
10 waves again: 60 + 20 = 80 s. The measured makespan is first create to last prediction end, as
the simulator recorded them; the DAG run's own start to end is shown beside it.

``--control`` runs ``bench_batch_control`` instead: the same mapped, pooled, deferrable task shape
on Airflow's own ``TimeDeltaTrigger``, with no provider code and no API. Its fill phase over its
pool-bound ideal is what Airflow itself adds per deferrable task on the machine: the floor that a
fill's makespan is read against.

``--mode worker`` and ``--mode deferred`` run the same fills as one ``FluxFillBatchOperator`` task
(``bench_batch_operator``) over a JSONL manifest, on a worker or in the triggerer. Their makespan
runs from the first create to the last output stored (the output files' times), their task's wall
clock is read beside the ideal, and on a worker the task process's peak RSS is reported. Give
``--max-in-flight`` and ``--creates-per-minute`` to raise the simulator's caps (and the operator's
pacing with them), e.g. 5,000 fills of 1 s at 50 in flight and 3,000 a minute, beyond what one
mapped task can expand to.

    python benchmarks/bench_batch.py [--fills 200] [--predict-seconds 2] [--mode mapped|worker|deferred]
        [--max-in-flight 10] [--creates-per-minute 100] [--pool-slots N] [--control] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT_PYTHON, ROOT, fmt, log, machine
from simproc import SimProcess

DAG_ID = "bench_batch_fill"
CONTROL_DAG_ID = "bench_batch_control"
OPERATOR_DAG_ID = "bench_batch_operator"
MODES = ("mapped", "worker", "deferred")
# The batch operator's targets (mapped tasks keep TARGET_RATIO): makespan / ideal on a worker and
# deferred, and the worker task's wall clock over the ideal.
OPERATOR_TARGET_RATIO = {"worker": 1.05, "deferred": 1.15}
LARGE_BATCH_TARGET_RATIO = 1.10
LARGE_BATCH = 1000
WALL_CLOCK_SLACK_S = 15.0
PEAK_RSS_TARGET_MB = 300.0
DAGS = Path(__file__).resolve().parent / "dags"
TARGET_RATIO = 1.15
TARGET_429_SHARE = 0.05
T = TypeVar("T")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=200)
    parser.add_argument("--predict-seconds", type=float, default=2.0)
    parser.add_argument("--max-in-flight", type=int, default=10)
    parser.add_argument("--creates-per-minute", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=32, help="[core] parallelism")
    parser.add_argument(
        "--pool-slots", type=int, default=None, help="eachlabs pool size (default: the in-flight cap)"
    )
    parser.add_argument("--mode", choices=MODES, default="mapped", help="mapped tasks or the batch operator")
    parser.add_argument(
        "--control",
        action="store_true",
        help="run the control DAG instead: the same deferrable task shape with Airflow's TimeDeltaTrigger",
    )
    parser.add_argument("--timeout", type=float, default=900, help="give up on the run after this, s")
    parser.add_argument("--python", type=Path, default=PROJECT_PYTHON)
    parser.add_argument("--keep", action="store_true", help="keep AIRFLOW_HOME and logs for inspection")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def ideal_makespan(fills: int, predict_seconds: float, in_flight: int, per_minute: int) -> float:
    """Earliest end of the last prediction when every create goes as soon as both caps allow."""
    starts: list[float] = []
    for k in range(fills):
        start = 0.0
        if k >= in_flight:
            start = max(start, starts[k - in_flight] + predict_seconds)
        if k >= per_minute:
            start = max(start, starts[k - per_minute] + 60.0)
        starts.append(start)
    return starts[-1] + predict_seconds if starts else 0.0


def make_images(folder: Path, count: int) -> None:
    """Small RGBA PNGs whose transparent band is the region to fill (the mask in the alpha channel)."""
    from PIL import Image

    for n in range(count):
        image = Image.new("RGBA", (64, 48), (40 + n % 200, 120, 200 - n % 150, 255))
        for x in range(20, 44):
            for y in range(12, 36):
                image.putpixel((x, y), (0, 0, 0, 0))
        image.save(folder / f"img_{n:04d}.png")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    """Poll until ``probe`` returns something truthy; every wait in this script has a deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (requests.RequestException, OSError, ValueError, KeyError) as error:
            last, value = error, None
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


class Stack:
    """The Airflow processes this script started, each the leader of its own session, stopped by PID."""

    def __init__(self, env: dict[str, str], python: Path, log_dir: Path) -> None:
        self.env = env
        self.python = python
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), "-m", "airflow", *args],
            env=self.env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str, *args: str) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [str(self.python), "-m", "airflow", *args],
                env=self.env,
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {name} exited {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM each session (the component and the task processes it forked), then SIGKILL."""
        for proc in reversed(list(self.procs.values())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def airflow_env(
    home: Path, port: int, sim: SimProcess, images: Path, args: argparse.Namespace
) -> dict[str, str]:
    """A private deployment: own home, SQLite, LocalExecutor, the connection as an env variable."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(args.parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(
                {"conn_type": "eachlabs", "host": sim.base_url, "password": sim.api_key}
            ),
            "BENCH_BATCH_DIR": str(images),
            "BENCH_EXPECTED_SECONDS": str(args.predict_seconds),
            "BENCH_MANIFEST": str(images / "manifest.jsonl"),
            "BENCH_OUTPUT_DIR": str(images.parent / "output"),
            "BENCH_MAX_IN_FLIGHT": str(args.max_in_flight),
            "BENCH_PER_MINUTE": str(args.creates_per_minute),
            "BENCH_DEFERRABLE": "true" if args.mode == "deferred" else "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


class Api:
    """The public REST API with a token, as a user's script would drive it."""

    def __init__(self, base_url: str, password: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False
        self.password = password

    def login(self) -> bool:
        answer = self.session.post(
            f"{self.base_url}/auth/token", json={"username": "admin", "password": self.password}, timeout=10
        )
        answer.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return True

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        answer.raise_for_status()
        return answer.json() if answer.content else None


def write_manifest(images: Path) -> None:
    """The batch operator's items: one JSONL line per image, keyed by its name."""
    with (images / "manifest.jsonl").open("w") as manifest:
        for path in sorted(images.glob("*.png")):
            manifest.write(json.dumps({"key": path.stem, "image": str(path)}) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    dag_id = CONTROL_DAG_ID if args.control else DAG_ID if args.mode == "mapped" else OPERATOR_DAG_ID
    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    home, images, logs = workdir / "home", workdir / "images", workdir / "logs"
    for folder in (home, images, logs):
        folder.mkdir()
    make_images(images, args.fills)
    write_manifest(images)
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    with SimProcess(
        predict_seconds=args.predict_seconds,
        max_in_flight=args.max_in_flight,
        creates_per_minute=args.creates_per_minute,
    ) as sim:
        port = free_port()
        stack = Stack(airflow_env(home, port, sim, images, args), args.python, logs)
        try:
            log(f"batch: airflow db migrate in {home} ...")
            migrate = stack.airflow("db", "migrate")
            if migrate.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
            pool = stack.airflow(
                "pools",
                "set",
                "eachlabs",
                str(args.pool_slots or args.max_in_flight),
                "Eachlabs in-flight cap",
                "--include-deferred",
            )
            if pool.returncode != 0:
                raise RuntimeError(f"airflow pools set failed:\n{pool.stderr[-3000:]}")
            stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
            stack.start("scheduler", "scheduler", "--skip-serve-logs")
            stack.start("dag-processor", "dag-processor")
            stack.start("triggerer", "triggerer", "--skip-serve-logs")
            api = Api(f"http://127.0.0.1:{port}", password)

            def logged_in() -> bool:
                stack.check_alive()
                return api.login()

            wait_for("the api-server", logged_in, timeout=180)

            def parsed() -> bool:
                stack.check_alive()
                return bool(api.call("GET", f"/dags/{dag_id}"))

            wait_for("the benchmark DAG to be parsed", parsed, timeout=180)
            sim.reset()
            log(f"batch: triggering {args.fills} fills ...")
            run_id = api.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]

            def finished() -> dict[str, Any] | None:
                stack.check_alive()
                state = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
                return state if state["state"] in ("success", "failed") else None

            dag_run = wait_for("the batch run to finish", finished, timeout=args.timeout, interval=2)
            tis: list[dict[str, Any]] = []
            while True:  # the API pages at 100 whatever limit is asked
                page = api.call(
                    "GET",
                    f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                    params={"limit": 100, "offset": len(tis)},
                )["task_instances"]
                tis += page
                if not page:
                    break
            stats = sim.stats(predictions=True)
            summary = None
            if args.mode != "mapped" and not args.control:
                path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/fill/xcomEntries/return_value"
                summary = api.call("GET", path, params={"deserialize": True}).get("value")
            stored_at = [p.stat().st_mtime for p in (workdir / "output").glob("*.png")]
        finally:
            stack.stop()
    from datetime import datetime

    def epoch(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    fills = [ti for ti in tis if ti["task_id"] == "fill"]
    states: dict[str, int] = {}
    for ti in fills:
        states[ti["state"]] = states.get(ti["state"], 0) + 1
    durations = [float(ti["duration"]) for ti in fills if ti.get("duration") is not None]
    pool_slots = args.pool_slots or args.max_in_flight
    report: dict[str, Any] = {
        "benchmark": "batch control" if args.control else "batch",
        "mode": "control" if args.control else args.mode,
        "machine": machine(args.python),
        "ran_through": (
            "real Airflow: api-server, scheduler (LocalExecutor), dag-processor, triggerer; SQLite"
        ),
        "dag_id": dag_id,
        "fills": args.fills,
        "predict_seconds": args.predict_seconds,
        "caps": {"in_flight": args.max_in_flight, "creates_per_minute": args.creates_per_minute},
        "pool_slots": pool_slots,
        "dag_run_state": dag_run["state"],
        "task_states": states,
        "failed_tasks": states.get("failed", 0) + states.get("upstream_failed", 0),
        "tasks_retried": sum(1 for ti in fills if int(ti.get("try_number") or 1) > 1),
        "dag_run_s": round(epoch(dag_run["end_date"]) - epoch(dag_run["start_date"]), 1),
        # How long each task holds its pool slot (start to end of its last try): the wait plus
        # Airflow's overhead (task start, defer, resume, finish) and, for a fill, upload and create.
        "task_duration_median_s": round(statistics.median(durations), 2) if durations else None,
        "workdir": str(workdir) if args.keep else None,
    }
    if args.mode == "mapped":
        # The fill phase, read the same way for a fill run and the control: from the end of the task
        # that lists the images (the mapped tasks can start) to the end of the last mapped task.
        listed = max(epoch(ti["end_date"]) for ti in tis if ti["task_id"] == "list_images")
        report["fill_phase_s"] = round(
            max(epoch(ti["end_date"]) for ti in fills if ti.get("end_date")) - listed, 1
        )
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if args.control:
        # No API, so no caps: the pool alone bounds it, waves of pool_slots waits back to back.
        ideal = math.ceil(args.fills / pool_slots) * args.predict_seconds
        ratio = round(report["fill_phase_s"] / ideal, 3)
        report.update({"ideal_s": round(ideal, 1), "fill_phase_ratio": ratio, "targets": []})
        return report
    predictions = [
        p for p in stats["predictions"].values() if p["status"] in ("success", "failed", "cancelled")
    ]
    first_create = min(p["created_at"] for p in predictions)
    last_end = max(p["created_at"] + p["run_time"] for p in predictions)
    makespan = last_end - first_create
    ideal = ideal_makespan(args.fills, args.predict_seconds, args.max_in_flight, args.creates_per_minute)
    answered_429 = int(stats["status_codes"].get("429", 0))
    create_requests = int(stats["create_requests"])
    report.update(
        {
            "predictions_created": stats["creates"],
            "create_requests": create_requests,
            "answered_429": answered_429,
            "share_429": round(answered_429 / create_requests, 4) if create_requests else None,
            "makespan_s": round(makespan, 1),
            "ideal_s": round(ideal, 1),
            "ratio": round(makespan / ideal, 3) if ideal else None,
        }
    )
    report["targets"] = [
        # Exactly one prediction bought per fill: fewer is a lost fill, more is paying twice.
        {"what": "predictions created", "target": args.fills, "value": stats["creates"], "exact": True},
    ]
    if args.mode == "mapped":
        report["targets"] += [
            {"what": "makespan / ideal", "target": TARGET_RATIO, "value": report["ratio"]},
            {"what": "failed tasks", "target": 0, "value": report["failed_tasks"]},
            {
                "what": "share of creates answered 429",
                "target": TARGET_429_SHARE,
                "value": report["share_429"],
            },
        ]
    else:
        report.update(operator_figures(args, report, summary, stored_at, first_create, ideal, fills))
        target = LARGE_BATCH_TARGET_RATIO if args.fills > LARGE_BATCH else OPERATOR_TARGET_RATIO[args.mode]
        report["targets"] += [
            {"what": "makespan to last stored / ideal", "target": target, "value": report["stored_ratio"]},
            {"what": "creates answered 429", "target": 0, "value": answered_429},
            {
                "what": "outputs stored",
                "target": args.fills,
                "value": report["outputs_stored"],
                "exact": True,
            },
        ]
        if args.mode == "worker":
            report["targets"] += [
                {
                    "what": "task wall clock - ideal (s)",
                    "target": WALL_CLOCK_SLACK_S,
                    "value": report["task_over_ideal_s"],
                },
                {
                    "what": "peak RSS of the task process (MB)",
                    "target": PEAK_RSS_TARGET_MB,
                    "value": report["peak_rss_mb"],
                },
            ]
    for item in report["targets"]:
        value = item["value"]
        item["met"] = value is not None and (
            value == item["target"] if item.get("exact") else value <= item["target"]
        )
    return report


def operator_figures(
    args: argparse.Namespace,
    report: dict[str, Any],
    summary: dict[str, Any] | None,
    stored_at: list[float],
    first_create: float,
    ideal: float,
    fills: list[dict[str, Any]],
) -> dict[str, Any]:
    """The batch operator's own figures: to the last output stored, the task's wall clock, its RSS."""
    stored_makespan = max(stored_at) - first_create if stored_at else None
    task = fills[0] if fills else {}
    wall = float(task["duration"]) if task.get("duration") is not None else None
    return {
        "outputs_stored": len(stored_at),
        "stored_makespan_s": None if stored_makespan is None else round(stored_makespan, 1),
        "stored_ratio": None if stored_makespan is None else round(stored_makespan / ideal, 3),
        "task_wall_clock_s": None if wall is None else round(wall, 1),
        "task_over_ideal_s": None if wall is None else round(wall - ideal, 1),
        "peak_rss_mb": (summary or {}).get("peak_rss_mb") if args.mode == "worker" else None,
        "summary": summary,
    }


def format_table(r: dict[str, Any]) -> str:
    m = r["machine"]
    what = "control waits" if r["benchmark"] == "batch control" else "fills"
    shape = {
        "mapped": f"mapped tasks, pool of {r['pool_slots']} + deferrable",
        "control": f"mapped waits, pool of {r['pool_slots']} + deferrable",
        "worker": "one FluxFillBatchOperator task on a worker",
        "deferred": "one FluxFillBatchOperator task, deferred to the triggerer",
    }[r["mode"]]
    lines = [
        f"Batch ({r['dag_id']}): {r['fills']} {what} of {r['predict_seconds']:g} s, "
        f"caps {r['caps']['in_flight']} in flight and {r['caps']['creates_per_minute']} creates/min, "
        f"{shape} (nproc {m['nproc']}, {m['cpu']}, Python {m['python']}, Airflow {m['airflow']})",
        f"ran through: {r['ran_through']}",
        f"DAG run {fmt(r['dag_run_s'], 1)} s, state {r['dag_run_state']}; median task duration "
        f"{fmt(r.get('task_duration_median_s'), 1)} s; tasks {r['task_states']}, "
        f"retried {r['tasks_retried']}",
    ]
    if "fill_phase_s" in r:
        lines.append(f"fill phase {fmt(r['fill_phase_s'], 1)} s (images listed to last task end)")
    if r["benchmark"] == "batch control":
        lines.append(
            f"pool-bound ideal {fmt(r['ideal_s'], 1)} s, fill phase / ideal {fmt(r['fill_phase_ratio'], 3)}"
        )
    else:
        lines += [
            f"makespan {fmt(r['makespan_s'], 1)} s (first create to last end), "
            f"ideal {fmt(r['ideal_s'], 1)} s, ratio {fmt(r['ratio'], 3)}",
            f"predictions {r['predictions_created']}, create requests {r['create_requests']}, "
            f"429s {r['answered_429']} ({fmt((r['share_429'] or 0) * 100, 1)}%)",
        ]
    if r["mode"] in ("worker", "deferred"):
        lines.append(
            f"to the last output stored {fmt(r['stored_makespan_s'], 1)} s, "
            f"ratio {fmt(r['stored_ratio'], 3)}; "
            f"task wall clock {fmt(r['task_wall_clock_s'], 1)} s (ideal + {fmt(r['task_over_ideal_s'], 1)} s)"
            + (f"; peak RSS {fmt(r['peak_rss_mb'], 1)} MB" if r.get("peak_rss_mb") is not None else "")
        )
    lines.append("")
    for t in r["targets"]:
        sign = "==" if t.get("exact") else "<="
        lines.append(
            f"target: {t['what']} {sign} {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['value']})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
