"""Triggerer capacity: 100, 1,000 and 5,000 waits in one event loop, ours next to HttpSensorTrigger.

Three processes, so that each cost lands where it belongs: the simulator (``simproc.py``) serves
and counts GETs and TCP connections; the trigger process (``trigger_load.py``) runs the triggers as
Airflow's TriggerRunner does, one asyncio task per trigger consuming ``trigger.run()``, and reports
its own CPU time over the run; this parent samples that process's RSS and established sockets from
outside every 0.2 s.

The load: triggers arrive spread evenly over one poll interval (a triggerer picks up deferred tasks
as they come, not all in the same millisecond), each prediction ends 8 to 23 s after its trigger
started (staggered ends), and every trigger polls at a fixed 5 s interval, so 1,000 triggers ask
for 200 GETs a second. ``HttpSensorTrigger`` (the deferrable half of ``HttpSensor``) fires on the
first answer that is not a 404 and reads no body, so against the real prediction URL it would fire
at once on ``"status": "processing"``. To make it do the same GETs it polls a prediction URL that
answers 404 and is stopped at the moment the matching prediction ends; its delay cannot be measured,
because it cannot see the end at all.

Both kinds run in the compare interpreter (``benchmarks/.venv``, which holds the http provider and
ours editable), so they share Python, Airflow and every library. Polling a 404 sends
``HttpAsyncHook`` down its failure path, which logs a warning per poll that ours, on its normal path,
does not; that logger is silenced (as a deployment quieting a noisy hook would), so both kinds pay
only for their requests and their own logic. The 404 exception itself stays: it is how
``HttpSensorTrigger`` waits.

At the target size (1,000) both kinds run ``--repeat`` times (default 3), interleaved (ours, http,
http, ours, ...), and the verdicts use the medians; every run's figures and the spread are printed.

    python benchmarks/bench_triggers.py [--sizes 100,1000,5000] [--http-sizes 100,1000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMPARE_PYTHON, PROJECT_PYTHON, fmt, log, machine, percentile
from simproc import SimProcess

LOAD_SCRIPT = Path(__file__).resolve().parent / "trigger_load.py"
TARGETS = {
    "cpu_ms_per_poll": 0.3,
    "kb_per_trigger": 25.0,
    "connections": 20,
    "p99_slack_s": 0.5,
    "ratio": 3.0,
    "floor_ratio": 1.5,
}
TARGET_SIZE = 1000
IMPLS = {
    "eachlabs": "eachlabs PredictionTrigger",
    "http": "http HttpSensorTrigger",
    "floor": "floor bare aiohttp loop",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="trigger counts for ours")
    parser.add_argument("--http-sizes", default="100,1000", help="trigger counts for HttpSensorTrigger")
    parser.add_argument("--floor-sizes", default="1000", help="trigger counts for the bare aiohttp floor")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument(
        "--schedule",
        choices=("fixed", "adaptive"),
        default="fixed",
        help="fixed --poll-interval polls, or the adaptive schedule users get by default",
    )
    parser.add_argument("--min-run", type=float, default=8.0, help="shortest prediction, s")
    parser.add_argument("--max-run", type=float, default=23.0, help="longest prediction, s")
    parser.add_argument("--lead", type=float, default=8.0, help="s for the child to import and warm up")
    parser.add_argument("--python", type=Path, default=None, help="interpreter of the trigger process")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each kind at 1,000")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def child_env(sim: SimProcess, airflow_home: str) -> dict[str, str]:
    """Connections as environment variables, the way a deployment without a secrets backend has them."""
    host, port = "127.0.0.1", sim.port
    return {
        **os.environ,
        "AIRFLOW_HOME": airflow_home,
        "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(
            {"conn_type": "eachlabs", "host": sim.base_url, "password": sim.api_key}
        ),
        "AIRFLOW_CONN_HTTP_DEFAULT": json.dumps(
            {"conn_type": "http", "host": host, "port": port, "schema": "http"}
        ),
        # HttpAsyncHook warns on every 404 it polls (its failure path, which ours never takes): that
        # logger is silenced, so both kinds are measured on their requests and their own logic.
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "airflow.providers.http.hooks.http=error",
    }


def build_spec(impl: str, n: int, sim: SimProcess, args: argparse.Namespace, rng: random.Random) -> dict:
    """Seed the predictions and describe every trigger: when it starts, when its prediction ends."""
    t0 = time.time() + args.lead
    starts = [t0 + rng.uniform(0, args.poll_interval) for _ in range(n)]
    ends = [s + rng.uniform(args.min_run, args.max_run) for s in starts]
    warm_id = sim.seed([time.time() - 1], [time.time() - 2])[0]
    spec: dict[str, Any] = {
        "impl": impl,
        "t0": t0,
        "api_key": sim.api_key,
        "poll_interval": args.poll_interval if args.schedule == "fixed" else None,
        "expected_seconds": 9.0,
        "base_url": sim.base_url,
        "hard_stop": t0 + args.poll_interval + args.max_run + 40,
    }
    if impl in ("eachlabs", "floor"):
        ids = sim.seed(ends, starts)
        spec["warmup"] = {"id": warm_id}
        spec["triggers"] = [
            {"id": pid, "started_at": s, "ends_at": e} for pid, s, e in zip(ids, starts, ends, strict=True)
        ]
    else:
        spec["warmup"] = {"id": "warm", "endpoint": f"v1/prediction/{warm_id}"}
        spec["triggers"] = []
        for s, e in zip(starts, ends, strict=True):
            pid = str(uuid.uuid4())  # unknown to the simulator: 404 until stopped
            spec["triggers"].append(
                {"id": pid, "endpoint": f"v1/prediction/{pid}", "started_at": s, "ends_at": e, "stop_at": e}
            )
    return spec


def sample(pid: int, port: int, stop: threading.Event, out: dict[str, int]) -> None:
    """Peak RSS and peak established sockets to the simulator, read from outside the process."""
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out["peak_rss_kb"] = max(out.get("peak_rss_kb", 0), proc.memory_info().rss // 1024)
            sockets = [
                c
                for c in proc.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
            ]
            out["peak_sockets"] = max(out.get("peak_sockets", 0), len(sockets))
        except psutil.Error:
            return
        stop.wait(0.2)


def run_case(
    impl: str, n: int, sim: SimProcess, python: Path, args: argparse.Namespace, repeat: int = 0
) -> dict[str, Any]:
    """One load: N triggers of one kind; returns the figures of that row."""
    rng = random.Random(args.seed * 7919 + n + 104729 * repeat)
    spec = build_spec(impl, n, sim, args, rng)
    with tempfile.TemporaryDirectory(prefix="bench-triggers-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [str(python), str(LOAD_SCRIPT), str(spec_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(sim, tmp),
            cwd=tmp,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        while first and not first.startswith("STARTED"):  # trigger log lines come first
            first = proc.stdout.readline()
        if not first.startswith("STARTED"):
            proc.kill()
            raise RuntimeError(f"{impl} x{n}: trigger process failed before the start: {first!r}")
        sim.reset()
        sim_cpu0 = sim.stats()["cpu_seconds"]
        sampled: dict[str, int] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(proc.pid, sim.port, stop, sampled), daemon=True)
        sampler.start()
        limit = args.lead + args.poll_interval + args.max_run + 100
        try:
            rest, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"{impl} x{n}: trigger process did not finish within {limit:.0f}s") from None
        finally:
            stop.set()
            sampler.join(5)
    result_line = next((line for line in rest.splitlines() if line.startswith("RESULT ")), None)
    if proc.returncode != 0 or result_line is None:
        raise RuntimeError(f"{impl} x{n}: trigger process exited {proc.returncode}")
    result = json.loads(result_line[len("RESULT ") :])
    stats = sim.stats()
    gets = stats["gets"] if impl != "http" else stats["status_codes"].get("404", 0)
    row: dict[str, Any] = {
        "impl": IMPLS[impl],
        "triggers": n,
        "repeat": repeat,
        "gets": gets,
        "cpu_seconds": round(result["cpu_seconds"], 3),
        "cpu_ms_per_poll": round(result["cpu_seconds"] * 1000 / gets, 4) if gets else None,
        "kb_per_trigger": round((sampled.get("peak_rss_kb", 0) - result["baseline_rss_kb"]) / n, 2),
        "connections_opened": stats["connections"],
        "peak_sockets": sampled.get("peak_sockets", 0),
        "wall_seconds": round(result["wall_seconds"], 1),
        "unfinished": result["unfinished"],
        "simulator_cpu_share": round((stats["cpu_seconds"] - sim_cpu0) / result["wall_seconds"], 2),
    }
    if impl != "http":
        ends = {item["id"]: item["ends_at"] for item in spec["triggers"]}
        events = result["events"]
        delays = [events[pid]["t"] - end for pid, end in ends.items() if pid in events]
        statuses = [event["status"] for event in events.values()]
        row.update(
            {
                "events": len(events),
                "success_events": statuses.count("success"),
                "delay_p50_s": round(percentile(delays, 50) or 0.0, 3),
                "delay_p99_s": round(percentile(delays, 99) or 0.0, 3),
                "delay_max_s": round(max(delays), 3) if delays else None,
                "gets_per_trigger": round(gets / n, 2),
            }
        )
    else:
        row.update(
            {"events": 0, "delay_p50_s": None, "delay_p99_s": None, "gets_per_trigger": round(gets / n, 2)}
        )
    return row


def http_fires_early(sim: SimProcess, python: Path) -> dict[str, Any]:
    """The functional gap, shown: HttpSensorTrigger on a prediction that is still processing."""
    ends_at = time.time() + 30
    pid = sim.seed([ends_at], [time.time()])[0]
    code = (
        "import asyncio, sys, time\n"
        "from airflow.providers.http.triggers.http import HttpSensorTrigger\n"
        "t = HttpSensorTrigger(endpoint=sys.argv[1], headers={'X-API-Key': sys.argv[2]}, poke_interval=1)\n"
        "async def go():\n"
        "    async for e in t.run():\n"
        "        print(time.time(), e.payload); return\n"
        "asyncio.run(asyncio.wait_for(go(), 20))\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-http-early-") as tmp:
        proc = subprocess.run(
            [str(python), "-c", code, f"v1/prediction/{pid}", sim.api_key],
            capture_output=True,
            text=True,
            env=child_env(sim, tmp),
            cwd=tmp,
            timeout=60,
            check=False,
        )
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) < 2:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return {
        "event_payload": words[1],
        "seconds_before_prediction_end": round(ends_at - float(words[0]), 1),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of CPU per poll for each kind at the target size, and of the ratio per run."""
    out: dict[str, Any] = {}
    for kind in ("eachlabs", "http", "floor"):
        values = [
            r["cpu_ms_per_poll"] for r in rows if r["impl"].startswith(kind) and r["triggers"] == TARGET_SIZE
        ]
        values = [v for v in values if v]
        if values:
            out[kind] = {
                "runs": values,
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    ratios: dict[str, list[float]] = {"ratio": [], "floor_ratio": []}
    for repeat in sorted({r["repeat"] for r in rows if r["triggers"] == TARGET_SIZE}):
        pair = {
            r["impl"].split()[0]: r["cpu_ms_per_poll"]
            for r in rows
            if r["triggers"] == TARGET_SIZE and r["repeat"] == repeat and r["cpu_ms_per_poll"]
        }
        if "eachlabs" in pair and "http" in pair:
            ratios["ratio"].append(round(pair["http"] / pair["eachlabs"], 2))
        if "eachlabs" in pair and "floor" in pair:
            ratios["floor_ratio"].append(round(pair["eachlabs"] / pair["floor"], 2))
    for name, runs in ratios.items():
        if runs:
            out[name] = {"runs": runs, "median": statistics.median(runs), "min": min(runs), "max": max(runs)}
    return out


def verdicts(rows: list[dict[str, Any]], interval: float | None) -> list[dict[str, Any]]:
    """Each target at 1,000 triggers (medians over the repeated runs): met or missed, and by how much."""
    ours_rows = [r for r in rows if r["impl"].startswith("eachlabs") and r["triggers"] == TARGET_SIZE]
    if not ours_rows:
        return []
    spread = summary(rows)
    floor_rows = [r for r in rows if r["impl"].startswith("floor") and r["triggers"] == TARGET_SIZE]

    def median(key: str) -> Any:
        values = [r[key] for r in ours_rows if r[key] is not None]
        return statistics.median(values) if values else None

    out = [
        {
            "what": "CPU per poll (ms), median",
            "target": TARGETS["cpu_ms_per_poll"],
            "value": spread["eachlabs"]["median"],
        },
        {
            "what": "RSS per trigger (KB), median",
            "target": TARGETS["kb_per_trigger"],
            "value": median("kb_per_trigger"),
        },
        {
            "what": "TCP connections opened, most",
            "target": TARGETS["connections"],
            "value": max(r["connections_opened"] for r in ours_rows),
        },
        {
            "what": "p99 delay (s), median",
            "target": (interval or 1.0) + TARGETS["p99_slack_s"],
            "value": median("delay_p99_s"),
        },
        # The floor makes the same GETs: a floor that polled less would flatter the ratio.
        *(
            [
                {
                    "what": "floor GETs ÷ ours, median",
                    "target": 1.0,
                    "value": round(
                        statistics.median(r["gets"] for r in floor_rows)
                        / statistics.median(r["gets"] for r in ours_rows),
                        2,
                    ),
                    "near": 0.05,
                }
            ]
            if floor_rows
            else []
        ),
        # Every wait ends, and ends in success: a faster harness that lost waits would flatter.
        {
            "what": "unfinished triggers, all runs",
            "target": 0,
            "value": sum(r["unfinished"] for r in ours_rows),
            "exact": True,
        },
        {
            "what": "success events, every run",
            "target": TARGET_SIZE,
            "value": min(r["success_events"] for r in ours_rows),
            "exact": True,
        },
    ]
    if "ratio" in spread:
        out.append(
            {
                "what": "HttpSensorTrigger CPU/poll ÷ ours, median of runs",
                "target": TARGETS["ratio"],
                "value": spread["ratio"]["median"],
                "higher": True,
            }
        )
    if "floor_ratio" in spread:
        out.append(
            {
                "what": "our CPU/poll ÷ the bare aiohttp floor's, median of runs",
                "target": TARGETS["floor_ratio"],
                "value": spread["floor_ratio"]["median"],
            }
        )
    for item in out:
        value, target = item["value"], item["target"]
        if item.get("exact"):
            item["met"] = value == target
        elif "near" in item:
            item["met"] = value is not None and abs(value - target) <= item["near"]
        elif item.get("higher"):
            item["met"] = value is not None and value >= target
        else:
            item["met"] = value is not None and value <= target
    return out


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    head = (
        f"{'trigger':<28} {'n':>5} {'GETs':>6} {'CPU ms/poll':>11} {'KB/trigger':>10} {'conns':>6} "
        f"{'peak socks':>10} {'p50 s':>6} {'p99 s':>6} {'sim CPU':>7}"
    )
    polls = (
        f"fixed {report['poll_interval']:.0f} s polls"
        if report["schedule"] == "fixed"
        else "the adaptive schedule (first look 1 s before the expected 9 s, then every second)"
    )
    lines = [
        f"Triggerer capacity: {polls}, predictions end "
        f"{report['min_run']:.0f}-{report['max_run']:.0f} s after their trigger starts "
        f"(nproc {m['nproc']}, {m['cpu']}, Python {m['python']}, Airflow {m['airflow']})",
        head,
        "-" * len(head),
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['impl']:<28} {r['triggers']:>5} {r['gets']:>6} {fmt(r['cpu_ms_per_poll'], 3):>11} "
            f"{fmt(r['kb_per_trigger'], 1):>10} {r['connections_opened']:>6} {r['peak_sockets']:>10} "
            f"{fmt(r['delay_p50_s']):>6} {fmt(r['delay_p99_s']):>6} {fmt(r['simulator_cpu_share']):>7}"
        )
    for kind, label in (
        ("eachlabs", "ours, CPU ms/poll"),
        ("http", "HttpSensorTrigger, CPU ms/poll"),
        ("floor", "bare aiohttp floor, CPU ms/poll"),
        ("ratio", "HttpSensorTrigger ÷ ours"),
        ("floor_ratio", "ours ÷ the floor"),
    ):
        item = report["spread"].get(kind)
        if item:
            runs = ", ".join(f"{v:.2f}" if "ratio" in kind else f"{v:.3f}" for v in item["runs"])
            lines.append(
                f"at {TARGET_SIZE}, {label}: median {item['median']:.3f}, min {item['min']:.3f}, "
                f"max {item['max']:.3f} (runs: {runs})"
            )
    early = report.get("http_fires_early", {})
    if "seconds_before_prediction_end" in early:
        lines.append(
            f"HttpSensorTrigger on a processing prediction fired with {early['event_payload']} "
            f"{early['seconds_before_prediction_end']:.0f} s before the prediction ended."
        )
    lines.append("")
    for v in report["targets"]:
        sign = "==" if v.get("exact") else ("≈" if "near" in v else (">=" if v.get("higher") else "<="))
        state = "met" if v["met"] else "MISSED"
        lines.append(f"target at {TARGET_SIZE}: {v['what']} {sign} {v['target']}: {state} ({v['value']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    python = args.python or (COMPARE_PYTHON if COMPARE_PYTHON.exists() else PROJECT_PYTHON)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    http_sizes = [int(s) for s in args.http_sizes.split(",") if s]
    floor_sizes = [int(s) for s in args.floor_sizes.split(",") if s]
    if http_sizes and python != COMPARE_PYTHON and not args.python:
        log("benchmarks/.venv is missing (run bench_import.py once): skipping HttpSensorTrigger rows")
        http_sizes = []
    rows: list[dict[str, Any]] = []
    with SimProcess() as sim:
        early = http_fires_early(sim, python) if http_sizes else {}
        for n in sorted(set(sizes) | set(http_sizes) | set(floor_sizes)):
            repeats = args.repeat if n == TARGET_SIZE else 1
            for repeat in range(repeats):
                kinds = [
                    k
                    for k, ks in (("eachlabs", sizes), ("http", http_sizes), ("floor", floor_sizes))
                    if n in ks
                ]
                # Interleaved, alternating which goes first, so drift in the machine hits both alike.
                for impl in kinds if repeat % 2 == 0 else reversed(kinds):
                    log(f"triggers: {impl} x{n} (run {repeat + 1}/{repeats}) ...")
                    rows.append(run_case(impl, n, sim, python, args, repeat))
                    log(f"  {rows[-1]}")
    report = {
        "benchmark": "triggers",
        "machine": machine(python),
        "interpreter": str(python),
        "poll_interval": args.poll_interval,
        "schedule": args.schedule,
        "min_run": args.min_run,
        "max_run": args.max_run,
        "rows": rows,
        "http_fires_early": early,
        "targets": verdicts(rows, args.poll_interval if args.schedule == "fixed" else None),
        "spread": summary(rows),
        "median_cpu_ms_per_poll_ours": statistics.median(
            [r["cpu_ms_per_poll"] for r in rows if r["impl"].startswith("eachlabs") and r["cpu_ms_per_poll"]]
            or [0.0]
        ),
    }
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
