"""``make bench``: every benchmark in turn, each in its own process with ``--json``, then one table.

Each benchmark stays runnable alone (its own table, its own ``--json``); this script only runs them
one after the other (never in parallel: they measure CPU and latency and would disturb each other),
collects their JSON, writes it all to ``benchmarks/results.json`` and prints one summary table with
every target met or missed. A benchmark that fails is reported as such and the others still run.

    python benchmarks/run_all.py [--skip batch,triggers,...] [--quick] [--out PATH]

``--quick`` trims the slow parts (no 5,000-trigger row, 100 fills in the batch) for a smoke run;
the figures in BENCHMARKS.md come from the full run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import fmt, log, machine  # noqa: E402

BENCHMARKS = (
    "import",
    "simulator",
    "deadline",
    "triggers",
    "triggers-adaptive",
    "latency",
    "batch",
    "batch-control",
    "batch-worker",
    "batch-deferred",
    "batch-large",
    "manifest",
    "spend",
)


def commands(quick: bool) -> dict[str, list[str]]:
    """The exact command of each benchmark; BENCHMARKS.md quotes these."""
    return {
        "import": ["bench_import.py", "--json"],
        "simulator": ["bench_simulator.py", "--json"],
        "deadline": ["bench_deadline.py", "--json"],
        "triggers": ["bench_triggers.py", "--json", *(["--sizes", "100,1000"] if quick else [])],
        # What users get by default: flux-fill-pro's adaptive schedule on 9 s predictions, beside the floor.
        "triggers-adaptive": [
            "bench_triggers.py",
            "--json",
            "--schedule",
            "adaptive",
            "--sizes",
            "1000",
            "--http-sizes",
            "",
            "--min-run",
            "8",
            "--max-run",
            "11",
        ],
        "latency": ["bench_latency.py", "--json", *(["--per-cell", "10"] if quick else [])],
        # One view of a 100,000-item batch's tab, and 12 at once, beside the whole-file reading it replaced.
        "manifest": ["bench_manifest.py", "--json", *(["--rows", "20000"] if quick else [])],
        # The fills page's figures over 10,000 recorded predictions (BENCHMARKS.md 7 has 100,000 and
        # 1,000,000: `bench_spend.py` alone, about 25 minutes with PostgreSQL).
        "spend": ["bench_spend.py", "--json", "--quick"],
        "batch": ["bench_batch.py", "--json", *(["--fills", "100"] if quick else [])],
        # The same task shape on Airflow's own TimeDeltaTrigger: Airflow's floor beside the fills.
        "batch-control": ["bench_batch.py", "--json", "--control", *(["--fills", "100"] if quick else [])],
        # The same fills as one batch operator task, on a worker and deferred.
        "batch-worker": [
            "bench_batch.py",
            "--json",
            "--mode",
            "worker",
            *(["--fills", "100"] if quick else []),
        ],
        "batch-deferred": [
            "bench_batch.py",
            "--json",
            "--mode",
            "deferred",
            *(["--fills", "100"] if quick else []),
        ],
        # Beyond [core] max_map_length: 5,000 fills of 1 s under caps raised to 50 and 3,000 a minute.
        "batch-large": [
            "bench_batch.py",
            "--json",
            "--mode",
            "worker",
            "--fills",
            "1000" if quick else "5000",
            "--predict-seconds",
            "1",
            "--max-in-flight",
            "50",
            "--creates-per-minute",
            "3000",
        ],
    }


def run_one(name: str, argv: list[str]) -> dict[str, Any]:
    """One benchmark in a child process; its progress goes straight to our stderr."""
    log(f"=== {name}: python benchmarks/{' '.join(argv)}")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(HERE / argv[0]), *argv[1:]], stdout=subprocess.PIPE, text=True, check=False
    )
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        return {"benchmark": name, "error": f"exit {proc.returncode}", "seconds": seconds}
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return {"benchmark": name, "error": "no JSON on stdout", "seconds": seconds}
    report["seconds"] = seconds
    return report


def summary_rows(reports: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) for every target of every benchmark that ran."""
    rows: list[tuple[str, str, str, str]] = []
    for name, report in reports.items():
        if "error" in report:
            rows.append((name, report["error"], "-", "NOT RUN"))
            continue
        if name == "import":
            for item in report["target"]:
                rows.append(
                    (
                        f"import: {item['label']} (ms)",
                        fmt(item["median_ms"], 1),
                        "<= 20",
                        "met" if item["met"] else "MISSED",
                    )
                )
            for row in report["rows"]:
                if "median_ms" in row and not row["label"].startswith("eachlabs"):
                    rows.append((f"import: {row['label']} (ms)", fmt(row["median_ms"], 1), "-", "compare"))
            plugin = report["plugin"]
            rows.append(
                (
                    "import: task start, plugin load added by the eachlabs plugin (ms)",
                    f"{plugin['added_ms']:+.1f} ({plugin['with_plugin_ms']:.1f} with, "
                    f"{plugin['without_plugin_ms']:.1f} without)",
                    "<= 5",
                    "met" if plugin["met"] else "MISSED",
                )
            )
        elif name == "simulator":
            rows.append(
                ("simulator: GET /v1/prediction/{id} (req/s)", f"{report['median_rps']:.0f}", "-", "info")
            )
        elif name == "deadline":
            for row in report["rows"]:
                rows.append(
                    (
                        f"deadline: {row['path']}, {row['schedule']}, 429 Retry-After 60",
                        f"ended after {row['ended_after_s']} s ({row['gets']} GETs), {row['outcome']}",
                        "-",
                        "info",
                    )
                )
        elif name in ("triggers", "triggers-adaptive"):
            for row in report["rows"]:
                rows.append(
                    (
                        f"{name}: {row['impl']} x{row['triggers']}",
                        f"{fmt(row['cpu_ms_per_poll'], 3)} ms/poll, {fmt(row['kb_per_trigger'], 1)} KB, "
                        f"{row['connections_opened']} conns, p50/p99 {fmt(row['delay_p50_s'])}/"
                        f"{fmt(row['delay_p99_s'])} s",
                        "-",
                        "info",
                    )
                )
        elif name == "manifest":
            for key, figure in report["figures"].items():
                kind, views = key.split("_")
                within = figure["added_rss_mb"] <= 64
                verdict = "compare" if kind == "whole" else "met" if within else "MISSED"
                rows.append(
                    (
                        f"manifest: {report['rows']:,} rows, {views} view(s) at once, {kind} reading",
                        f"{figure['seconds']:.2f} s, RSS +{figure['added_rss_mb']:.0f} MB",
                        "<= 64 MB" if kind == "streamed" else "-",
                        verdict,
                    )
                )
        elif name == "spend":
            for row in report["rows"]:
                if "error" in row:
                    rows.append(
                        (f"spend: {row['size']:,} predictions, {row['db']}", row["error"], "-", "NOT RUN")
                    )
                    continue
                slowest = max(
                    row["page_cold_s"],
                    row.get("page_second_s", 0),
                    row["page_warm_s"],
                    row["page_warm_after_new_rows_s"],
                )
                rows.append(
                    (
                        f"spend: fills page, {row['size']:,} predictions, {row['db']} "
                        "(cold/2nd/warm/+100 rows)",
                        f"{row['page_cold_s']:.2f}/{row.get('page_second_s', 0):.2f}/"
                        f"{row['page_warm_s']:.2f}/{row['page_warm_after_new_rows_s']:.2f} s, "
                        f"fold {row['fold_held_mb']:.1f} MB; "
                        f"Airflow's task list {row['airflow_ti_list_s']:.2f} s",
                        "<= 1 s",
                        "met" if slowest <= 1 else "MISSED",
                    )
                )
        elif name == "latency":
            for row in report["rows"]:
                rows.append(
                    (
                        f"latency: {row['scenario']} runs, {row['schedule']}",
                        f"median {fmt(row['latency_median_s'])} s, p90 {fmt(row['latency_p90_s'])} s, "
                        f"{fmt(row['gets_mean'], 1)} GETs",
                        "-",
                        "info",
                    )
                )
        elif name == "batch":
            rows.append(
                (
                    f"batch: {report['fills']} fills, pool {report.get('pool_slots', 10)}, real Airflow",
                    f"makespan {report['makespan_s']} s vs ideal {report['ideal_s']} s, "
                    f"{report['answered_429']} x 429 of {report['create_requests']} creates; "
                    f"fill phase {report['fill_phase_s']} s, "
                    f"median task {report['task_duration_median_s']} s",
                    "-",
                    "info",
                )
            )
        elif name in ("batch-worker", "batch-deferred", "batch-large"):
            rows.append(
                (
                    f"{name}: {report['fills']} fills of {report['predict_seconds']:g} s, one "
                    f"FluxFillBatchOperator task ({report['mode']})",
                    f"to last stored {report['stored_makespan_s']} s vs ideal {report['ideal_s']} s; "
                    f"task {report['task_wall_clock_s']} s; {report['answered_429']} x 429",
                    "-",
                    "info",
                )
            )
        elif name == "batch-control":
            rows.append(
                (
                    f"batch control: {report['fills']} deferrable waits, no provider, "
                    f"pool {report['pool_slots']}",
                    f"fill phase {report['fill_phase_s']} s vs pool-bound ideal {report['ideal_s']} s, "
                    f"median task {report['task_duration_median_s']} s",
                    "-",
                    "compare",
                )
            )
        for target in report.get("targets", []):
            sign = (
                "=="
                if target.get("exact")
                else ("≈" if "near" in target else (">=" if target.get("higher") else "<="))
            )
            rows.append(
                (
                    f"{name}: {target['what']}",
                    str(target["value"]),
                    f"{sign} {target['target']}",
                    "met" if target["met"] else "MISSED",
                )
            )
    return rows


def format_summary(rows: list[tuple[str, str, str, str]], info: dict[str, Any]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("figure", "measured", "target", "verdict")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [
        f"Benchmarks (nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
        f"Airflow {info['airflow']})",
        line.format(*head),
        "  ".join("-" * w for w in widths),
    ]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help=f"comma-separated, from {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) in --skip: {sorted(unknown)}")
    reports: dict[str, dict[str, Any]] = {}
    for name, argv_ in commands(args.quick).items():
        if name not in skip:
            reports[name] = run_one(name, argv_)
    info = machine()
    args.out.write_text(json.dumps({"machine": info, "reports": reports}, indent=2))
    print(format_summary(summary_rows(reports), info))
    log(f"full results: {args.out}")
    return 1 if any("error" in r for r in reports.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
