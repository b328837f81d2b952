"""Time to result: how long after a prediction ends the trigger sees it, and how many GETs it spends.

The default schedule (first look 1 s before the model's expected time, then every second until
three times that, then backing off to 30 s) is run side by side with fixed intervals of 1, 5 and
10 s, in one trigger process, against the simulator in another. Two sets of predictions:

* ``9 s``: every prediction takes exactly the model page's estimate for flux-fill-pro. This is the
  target's case.
* ``4-30 s``: run times spread uniformly, as queueing and image size spread them in practice; this
  shows what the schedule costs when the estimate is wrong, and where the back-off starts to add
  latency.

Predictions start spread over one second, so that a fixed interval meets each end at a random
phase. The latency is the trigger's event time minus the prediction's end; what Airflow adds after
the event (the scheduler resuming the task) comes on top and is seen in bench_batch.py.

    python benchmarks/bench_latency.py [--per-cell 20] [--json]
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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT_PYTHON, fmt, log, machine, percentile
from simproc import SimProcess

LOAD_SCRIPT = Path(__file__).resolve().parent / "trigger_load.py"
EXPECTED = 9.0
SCHEDULES: dict[str, float | None] = {"default": None, "fixed 1 s": 1.0, "fixed 5 s": 5.0, "fixed 10 s": 10.0}
SCENARIOS = {"9 s": (9.0, 9.0), "4-30 s": (4.0, 30.0)}
TARGET_MEDIAN_S = 1.0
TARGET_GETS = 8.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=int, default=20, help="predictions per schedule and scenario")
    parser.add_argument("--lead", type=float, default=8.0)
    parser.add_argument("--python", type=Path, default=PROJECT_PYTHON)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with SimProcess() as sim:
        t0 = time.time() + args.lead
        cells: list[tuple[str, str, dict[str, Any]]] = []
        for scenario, (lo, hi) in SCENARIOS.items():
            for schedule, interval in SCHEDULES.items():
                for _ in range(args.per_cell):
                    start = t0 + rng.uniform(0, 1)
                    item = {"started_at": start, "ends_at": start + rng.uniform(lo, hi)}
                    item["poll_interval"] = interval
                    item["expected_seconds"] = EXPECTED
                    cells.append((scenario, schedule, item))
        ids = sim.seed([c[2]["ends_at"] for c in cells], [c[2]["started_at"] for c in cells])
        for pid, cell in zip(ids, cells, strict=True):
            cell[2]["id"] = pid
        warm_id = sim.seed([time.time() - 1], [time.time() - 2])[0]
        spec = {
            "impl": "eachlabs",
            "t0": t0,
            "api_key": sim.api_key,
            "poll_interval": None,
            "expected_seconds": EXPECTED,
            "warmup": {"id": warm_id},
            "triggers": [cell[2] for cell in cells],
            "hard_stop": t0 + 80,
        }
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            env = {
                **os.environ,
                "AIRFLOW_HOME": tmp,
                "AIRFLOW_CONN_EACHLABS_DEFAULT": json.dumps(
                    {"conn_type": "eachlabs", "host": sim.base_url, "password": sim.api_key}
                ),
            }
            proc = subprocess.run(
                [str(args.python), str(LOAD_SCRIPT), str(spec_path)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
                timeout=args.lead + 120,
                check=False,
            )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"trigger process exited {proc.returncode}: {proc.stderr[-400:]}")
        events = json.loads(line[len("RESULT ") :])["events"]
        gets_by_id = sim.stats()["gets_by_id"]
    rows = []
    for scenario in SCENARIOS:
        for schedule in SCHEDULES:
            mine = [c[2] for c in cells if c[0] == scenario and c[1] == schedule]
            lat = [events[i["id"]]["t"] - i["ends_at"] for i in mine if i["id"] in events]
            gets = [gets_by_id.get(i["id"], 0) for i in mine]
            rows.append(
                {
                    "scenario": scenario,
                    "schedule": schedule,
                    "n": len(mine),
                    "success": sum(events.get(i["id"], {}).get("status") == "success" for i in mine),
                    "latency_median_s": round(statistics.median(lat), 3),
                    "latency_p90_s": round(percentile(lat, 90) or 0.0, 3),
                    "latency_max_s": round(max(lat), 3),
                    "gets_mean": round(statistics.mean(gets), 2),
                    "gets_max": max(gets),
                }
            )
    default = next(r for r in rows if r["scenario"] == "9 s" and r["schedule"] == "default")
    return {
        "benchmark": "latency",
        "machine": machine(args.python),
        "interpreter": str(args.python),
        "expected_seconds": EXPECTED,
        "rows": rows,
        "targets": [
            {
                "what": "default, 9 s: median added latency (s)",
                "target": TARGET_MEDIAN_S,
                "value": default["latency_median_s"],
                "met": default["latency_median_s"] <= TARGET_MEDIAN_S,
            },
            {
                "what": "default, 9 s: GETs per prediction (max)",
                "target": TARGET_GETS,
                "value": default["gets_max"],
                "met": default["gets_max"] <= TARGET_GETS,
            },
        ],
    }


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    head = (
        f"{'run time':<8} {'schedule':<11} {'n':>3} {'median s':>8} {'p90 s':>6} {'max s':>6} "
        f"{'GETs avg':>8} {'max':>4}"
    )
    lines = [
        "Time to result: trigger event minus prediction end, and GETs per prediction "
        f"(nproc {m['nproc']}, {m['cpu']}, Python {m['python']}, Airflow {m['airflow']})",
        head,
        "-" * len(head),
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['scenario']:<8} {r['schedule']:<11} {r['n']:>3} {fmt(r['latency_median_s']):>8} "
            f"{fmt(r['latency_p90_s']):>6} {fmt(r['latency_max_s']):>6} {fmt(r['gets_mean'], 1):>8} "
            f"{r['gets_max']:>4}"
        )
    lines.append("")
    for t in report["targets"]:
        lines.append(
            f"target: {t['what']} <= {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['value']})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    count = args.per_cell * len(SCHEDULES) * len(SCENARIOS)
    log(f"latency: {count} predictions, {len(SCHEDULES)} schedules x {len(SCENARIOS)} run-time sets, ~50 s")
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
