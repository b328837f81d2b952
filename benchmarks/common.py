"""Helpers every benchmark shares: the machine description, percentiles, the two interpreters.

Kept tiny and free of Airflow imports, so that importing it costs nothing in a measured process.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
COMPARE_PYTHON = ROOT / "benchmarks" / ".venv" / "bin" / "python"


def cpu_model() -> str:
    """The CPU model line of /proc/cpuinfo: figures mean little without it."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def airflow_version(python: Path | str = sys.executable) -> str:
    """Asked of the interpreter that runs the measured code, not of the one running the harness."""
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('apache-airflow'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def machine(python: Path | str = sys.executable) -> dict[str, Any]:
    """nproc, CPU model, Python and Airflow versions of the measured interpreter."""
    proc = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": proc.stdout.strip() or platform.python_version(),
        "airflow": airflow_version(python),
        "platform": platform.platform(),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values, so an empty run shows a dash."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def log(message: str) -> None:
    """Progress on stderr, so that --json leaves stdout as nothing but the JSON object."""
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 2) -> str:
    """A table cell: a dash where there is no figure."""
    return "-" if value is None else f"{value:.{digits}f}"
