"""DAG-parse cost of importing our operator, next to the operators users would import instead; and
what our UI plugin adds to the start of every task.

The scheduler's DAG processor re-imports every DAG file in a fresh interpreter, so what an operator's
module costs to import is paid on every parse of every DAG that uses it. Each row here is the time
one ``from X import Y`` adds after ``import airflow.sdk`` (which every DAG file pays anyway), taken in
a fresh Python process each time, as the median of several processes.

All rows, ours included, are measured in one separate venv (``benchmarks/.venv``) that also holds the
comparison providers, so that every row runs in the same interpreter with the same dependencies. The
comparison providers are never installed into the project's ``.venv``: the tests must see Airflow as
users install it. Ours is measured in the project's ``.venv`` too, as an extra row.

The rows run interleaved (row 1, row 2, ..., row 1, row 2, ...) so that machine noise hits all alike.

Airflow loads every ``airflow.plugins`` entry point in each task process (``integrate_macros_plugins``
when it builds the task's context) and in the DAG processor, so the plugin's own import is paid on
every task start. The second table times the step of that load where entry-point plugins are
imported and instantiated (``_load_entrypoint_plugins``, after what a task process has already
imported; the rest of ``integrate_macros_plugins``, about 170 ms of provider discovery here, does
not depend on our plugin and would drown a 5 ms figure in its noise). It runs in the project venv
twice, interleaved: once as installed, once with our entry point skipped, which is the same process
without the plugin. The difference is what the plugin costs.

    python benchmarks/bench_import.py [--runs 9] [--python PATH] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import venv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "benchmarks" / "compare-requirements.txt"
# Named ".venv" so that the ".venv/" rule of .gitignore covers it (".venv-compare" would not be), and
# so ruff and hatch's sdist skip it as they skip the project's own venv.
DEFAULT_COMPARE_VENV = ROOT / "benchmarks" / ".venv"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
STAMP_NAME = ".bench-import-stamp"
TARGET_MS = 20.0
PLUGIN_TARGET_MS = 5.0
MIN_RUNS = 7

# Runs in each fresh process: airflow.sdk first (every DAG file imports it), then only the import
# under test is timed. Module and attribute come in through argv, never pasted into the code.
SNIPPET = (
    "import sys, time, importlib, airflow.sdk\n"
    "t = time.perf_counter()\n"
    "getattr(importlib.import_module(sys.argv[1]), sys.argv[2])\n"
    "print((time.perf_counter() - t) * 1000)\n"
)


# Runs in each fresh process: what a task process has imported before it loads plugins, then the
# timed load, with the entry points whose module starts with argv[1] skipped (none when it is "").
PLUGIN_SNIPPET = (
    "import sys, time, airflow.sdk\n"
    "from airflow.sdk.execution_time import task_runner\n"
    "from airflow.sdk._shared import module_loading\n"
    "from airflow.sdk._shared.plugins_manager import _load_entrypoint_plugins\n"
    "real, skip = module_loading.entry_points_with_dist, sys.argv[1]\n"
    "module_loading.entry_points_with_dist = lambda group: (\n"
    "    (ep, dist) for ep, dist in real(group) if not (skip and ep.value.startswith(skip)))\n"
    "t = time.perf_counter()\n"
    "plugins, errors = _load_entrypoint_plugins()\n"
    "elapsed = (time.perf_counter() - t) * 1000\n"
    "assert not errors, errors\n"
    "print(','.join(sorted(p.name for p in plugins)) or '-', elapsed)\n"
)
PLUGIN_MODULE = "airflow_provider_eachlabs.plugin"


@dataclass(frozen=True)
class Target:
    """One import to time: a label for the table, and the module and class a DAG file would import."""

    label: str
    module: str
    attr: str


OURS = Target(
    "eachlabs FluxFillOperator", "airflow_provider_eachlabs.operators.flux_fill", "FluxFillOperator"
)
OTHERS = (
    Target("standard PythonOperator", "airflow.providers.standard.operators.python", "PythonOperator"),
    Target("http HttpOperator", "airflow.providers.http.operators.http", "HttpOperator"),
    Target(
        "dbt-cloud DbtCloudRunJobOperator",
        "airflow.providers.dbt.cloud.operators.dbt",
        "DbtCloudRunJobOperator",
    ),
    Target(
        "databricks DatabricksSubmitRunOperator",
        "airflow.providers.databricks.operators.databricks",
        "DatabricksSubmitRunOperator",
    ),
)


@dataclass
class Row:
    """A target bound to the interpreter it is measured in, with the samples gathered so far."""

    target: Target
    python: Path
    where: str
    samples: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.target.label} ({self.where})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line; fewer than MIN_RUNS processes give a median too noisy to compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help=f"fresh processes per row (>= {MIN_RUNS})")
    parser.add_argument(
        "--python",
        type=Path,
        help="interpreter for the comparison rows (must have the providers and ours installed); "
        f"default: create or reuse {DEFAULT_COMPARE_VENV.relative_to(ROOT)}",
    )
    parser.add_argument(
        "--project-python",
        type=Path,
        default=PROJECT_PYTHON if PROJECT_PYTHON.exists() else Path(sys.executable),
        help="interpreter of the project venv, for the extra row of ours (default: .venv/bin/python)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}")
    # absolute(), not resolve(): resolving a venv's python symlink would leave the venv. Absolute,
    # because the measured processes run from a temp dir.
    for name in ("python", "project_python"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            parser.error(f"--{name.replace('_', '-')}: {path} does not exist")
        setattr(args, name, None if path is None else path.absolute())
    return args


def log(message: str) -> None:
    """Progress goes to stderr so that --json leaves stdout as nothing but the JSON object."""
    print(message, file=sys.stderr, flush=True)


def install_stamp() -> str:
    """Hash of what the compare venv was built from; a change in either file means reinstalling."""
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_compare_venv(venv_dir: Path) -> Path:
    """Create (or reuse, while its stamp still matches) the venv that holds every provider compared.

    Ours goes in editable, so the code measured is the working tree's, in the same interpreter as
    the other providers. The stamp is written last, so an install that failed half-way is redone.
    """
    python = venv_dir / "bin" / "python"
    stamp_file = venv_dir / STAMP_NAME
    stamp = install_stamp()
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    log(f"setting up {venv_dir} (first run takes a few minutes) ...")
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for extra in (["-r", str(REQUIREMENTS)], ["-e", str(ROOT)]):
        subprocess.run([*pip, *extra], check=True, stdout=sys.stderr)
    stamp_file.write_text(stamp)
    return python


def build_rows(compare_python: Path, project_python: Path, where: str) -> list[Row]:
    """Every row in the compare interpreter (ours first, as the reference), plus ours in the project venv."""
    rows = [Row(OURS, compare_python, where)]
    rows += [Row(target, compare_python, where) for target in OTHERS]
    rows.append(Row(OURS, project_python, "project venv"))
    return rows


def time_import(row: Row, airflow_home: Path) -> float:
    """Time one import in a fresh process; raise with its stderr's last line if the import fails.

    AIRFLOW_HOME points at a temp dir so Airflow writes no config into ~/airflow, and the process
    runs from that dir so that nothing in the current directory shadows an installed module.
    """
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    proc = subprocess.run(
        [str(row.python), "-c", SNIPPET, row.target.module, row.target.attr],
        capture_output=True,
        text=True,
        env=env,
        cwd=airflow_home,
        check=False,
    )
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {proc.returncode}: {last}")
    return float(lines[-1])


def warm_up(rows: list[Row], airflow_home: Path) -> None:
    """One untimed import per row: writes the .pyc files and Airflow's config, and finds broken rows.

    Without it the first sample of each row would include bytecode compilation, which a DAG
    processor pays once, not on every parse. A row that cannot import is kept, marked, and skipped.
    """
    for row in rows:
        try:
            time_import(row, airflow_home)
        except RuntimeError as exc:
            row.error = str(exc)
            log(f"skipping {row.label}: {exc}")


def measure(rows: list[Row], runs: int, airflow_home: Path) -> None:
    """Take `runs` samples per row, round robin, so that a burst of machine noise hits every row."""
    live = [row for row in rows if row.error is None]
    for run in range(runs):
        for row in live:
            row.samples.append(time_import(row, airflow_home))
        log(f"round {run + 1}/{runs} done")


def time_plugin_load(python: Path, skip: str, airflow_home: Path) -> tuple[str, float]:
    """The plugins a task process loaded and the ms it took, in a fresh process, ``skip`` left out."""
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    proc = subprocess.run(
        [str(python), "-c", PLUGIN_SNIPPET, skip],
        capture_output=True,
        text=True,
        env=env,
        cwd=airflow_home,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"plugin load failed, exit {proc.returncode}: {last}")
    names, ms = lines[-1].rsplit(" ", 1)
    return names, float(ms)


def measure_plugin(python: Path, runs: int, airflow_home: Path) -> dict[str, Any]:
    """Task-start plugin load with ours and without, interleaved; checks each run loaded what it says."""
    samples: dict[str, list[float]] = {"with": [], "without": []}
    for run in range(runs + 1):  # the first round is a warm-up (bytecode, Airflow's config)
        for variant, skip in (("with", ""), ("without", PLUGIN_MODULE)):
            names, ms = time_plugin_load(python, skip, airflow_home)
            if ("eachlabs" in names.split(",")) != (variant == "with"):
                raise RuntimeError(f"the {variant} run loaded plugins {names!r}")
            if run:
                samples[variant].append(ms)
        log(f"plugin round {run}/{runs} done" if run else "plugin warm-up done")
    with_ms, without_ms = (statistics.median(samples[v]) for v in ("with", "without"))
    added = with_ms - without_ms
    return {
        "what": "ms to import and instantiate the airflow.plugins entry points at a task's start, "
        "fresh process each sample",
        "python": str(python),
        "with_plugin_ms": round(with_ms, 2),
        "without_plugin_ms": round(without_ms, 2),
        "added_ms": round(added, 2),
        "target_ms": PLUGIN_TARGET_MS,
        "met": added <= PLUGIN_TARGET_MS,
        "samples_ms": {variant: [round(x, 2) for x in values] for variant, values in samples.items()},
    }


def summarize(row: Row, reference_ms: float | None) -> dict[str, Any]:
    """Median, min, max and the ratio to ours (compare venv) of one row, as plain data."""
    result: dict[str, Any] = {
        "label": row.label,
        "module": row.target.module,
        "class": row.target.attr,
        "python": str(row.python),
    }
    if row.error is not None:
        return {**result, "error": row.error}
    median = statistics.median(row.samples)
    ratio = median / reference_ms if reference_ms else None
    return {
        **result,
        "median_ms": round(median, 2),
        "min_ms": round(min(row.samples), 2),
        "max_ms": round(max(row.samples), 2),
        "ratio_to_ours": None if ratio is None else round(ratio, 2),
        "samples_ms": [round(s, 2) for s in row.samples],
    }


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """Whether one row of ours meets the target; the margin says by how much it is met or missed."""
    median = summary.get("median_ms")
    if median is None:
        return {"label": summary["label"], "met": False, "median_ms": None, "over_ms": None}
    return {
        "label": summary["label"],
        "met": median <= TARGET_MS,
        "median_ms": median,
        "over_ms": round(median - TARGET_MS, 2),
    }


def machine() -> dict[str, Any]:
    """What the numbers were taken on, since they mean little without it."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def build_report(rows: list[Row], runs: int, plugin: dict[str, Any]) -> dict[str, Any]:
    """The whole result as one JSON-able object, shaped for a `make bench` that collects them all."""
    reference = rows[0]
    reference_ms = statistics.median(reference.samples) if reference.samples else None
    summaries = [summarize(row, reference_ms) for row in rows]
    ours = [summary for row, summary in zip(rows, summaries, strict=True) if row.target is OURS]
    return {
        "benchmark": "import",
        "what": "ms one operator import adds after `import airflow.sdk`, fresh process each sample",
        "runs": runs,
        "machine": machine(),
        "target_ms": TARGET_MS,
        "rows": summaries,
        "target": [verdict(summary) for summary in ours],
        "plugin": plugin,
    }


def format_ms(value: float | None) -> str:
    """Milliseconds for the table; a dash where a row has no figure."""
    return "-" if value is None else f"{value:.1f}"


def format_table(report: dict[str, Any]) -> str:
    """The plain-text table, then one target line per row of ours."""
    width = max(len(row["label"]) for row in report["rows"])
    head = f"{'import':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}  {'x ours':>7}"
    m = report["machine"]
    lines = [
        f"Import cost after `import airflow.sdk`, ms, median of {report['runs']} fresh processes "
        f"(nproc {m['nproc']}, Python {m['python']})",
        head,
        "-" * len(head),
    ]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"{row['label']:<{width}}  not measured: {row['error']}")
            continue
        ratio = "-" if row["ratio_to_ours"] is None else f"{row['ratio_to_ours']:.1f}x"
        cells = [format_ms(row[key]) for key in ("median_ms", "min_ms", "max_ms")]
        lines.append(f"{row['label']:<{width}}  {cells[0]:>8}  {cells[1]:>8}  {cells[2]:>8}  {ratio:>7}")
    lines.append("")
    for item in report["target"]:
        lines.append(target_line(item))
    plugin = report["plugin"]
    lines += [
        "",
        f"Entry-point plugin load at a task's start, ms, median of {report['runs']} fresh processes",
        f"{'with the eachlabs plugin':<32}  {plugin['with_plugin_ms']:>8.1f}",
        f"{'without it (entry point skipped)':<32}  {plugin['without_plugin_ms']:>8.1f}",
        f"target <= {PLUGIN_TARGET_MS:.0f} ms added by the plugin: "
        + ("met" if plugin["met"] else "missed")
        + f" ({plugin['added_ms']:+.1f} ms)",
    ]
    return "\n".join(lines)


def target_line(item: dict[str, Any]) -> str:
    """The one line a reader looks for: is ours within the target, and if not, by how much."""
    prefix = f"target <= {TARGET_MS:.0f} ms, {item['label']}:"
    if item["median_ms"] is None:
        return f"{prefix} not measured"
    if item["met"]:
        return f"{prefix} met ({item['median_ms']:.1f} ms)"
    return f"{prefix} missed by {item['over_ms']:.1f} ms ({item['median_ms']:.1f} ms)"


def main(argv: Sequence[str] | None = None) -> int:
    """Set up, measure, report; exit 0 even when the target is missed, since the report says so."""
    args = parse_args(argv)
    compare_python = args.python or ensure_compare_venv(DEFAULT_COMPARE_VENV)
    rows = build_rows(compare_python, args.project_python, "--python" if args.python else "compare venv")
    with tempfile.TemporaryDirectory(prefix="bench-import-airflow-home-") as tmp:
        airflow_home = Path(tmp)
        warm_up(rows, airflow_home)
        measure(rows, args.runs, airflow_home)
        plugin = measure_plugin(args.project_python, args.runs, airflow_home)
    report = build_report(rows, args.runs, plugin)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
