"""A wait keeps its deadline while the API answers every status request with ``429 Retry-After: 60``.

The simulator answers every GET of the prediction with 429 and ``Retry-After: 60``; a wait with a
5 s timeout must end (``PredictionTimeout`` raised and the cancel sent, or the ``timeout`` event yielded)
within 6 s, on the worker (``EachlabsHook.wait_for_prediction``) and in the triggerer
(``PredictionTrigger``), with the connection's default retry settings (5 retries, backoff up to 60 s).
Both the adaptive schedule (first look at 8 s, so the only look is at the deadline) and a fixed 1 s
interval are measured. Prints the wall time and the GETs the simulator received for each.

    python benchmarks/bench_deadline.py [--timeout 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import log, machine  # noqa: E402

KEY = "bench-deadline-key"


def measure(path: str, interval: float | None, timeout: float) -> dict[str, Any]:
    from airflow_provider_eachlabs.exceptions import PredictionTimeout
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
    from airflow_provider_eachlabs.testing import EachlabsSimulator
    from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

    with EachlabsSimulator(api_key=KEY, predict_seconds=60) as sim:
        os.environ["AIRFLOW_CONN_EACHLABS_DEFAULT"] = json.dumps(
            {"conn_type": "eachlabs", "host": sim.base_url, "password": KEY}
        )
        prediction_id = EachlabsHook().create_prediction("flux-fill-pro", _fill_input(sim))
        sim.inject("get", "status", times=10_000, status=429, retry_after=60)
        started = time.time()
        outcome = "no timeout"
        if path == "worker":
            try:
                EachlabsHook().wait_for_prediction(
                    prediction_id, interval, timeout, model="flux-fill-pro", started_at=started
                )
            except PredictionTimeout:
                EachlabsHook().cancel_prediction(prediction_id)  # as the operator does next
                outcome = "PredictionTimeout, cancel sent"
        else:
            trigger = PredictionTrigger(
                prediction_id, "eachlabs_default", started + timeout, started, interval, expected_seconds=9.0
            )

            async def events() -> list[dict[str, Any]]:
                return [event.payload async for event in trigger.run()]

            (event,) = asyncio.run(events())
            outcome = f"{event['status']} event"
        elapsed = time.time() - started
        return {
            "path": path,
            "schedule": "adaptive" if interval is None else f"every {interval:g} s",
            "timeout_s": timeout,
            "ended_after_s": round(elapsed, 2),
            "gets": sim.counters.gets,
            "outcome": outcome,
        }


def _fill_input(sim: Any) -> dict[str, Any]:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(buffer, format="PNG")
    return {"prompt": "x", "image": sim.add_file(buffer.getvalue())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW_HOME", str(HERE / ".airflow-bench"))
    rows = []
    # The hook's log lines go to stdout; with --json, stdout carries nothing but the report.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        for path in ("worker", "trigger"):
            for interval in (None, 1.0):
                log(f"{path}, {'adaptive' if interval is None else f'every {interval} s'} ...")
                rows.append(measure(path, interval, args.timeout))
    bound = args.timeout + 1.0
    targets = [
        {
            "what": f"{row['path']}, {row['schedule']}: wait ends (s) under 429 Retry-After 60",
            "value": row["ended_after_s"],
            "target": bound,
            "met": row["ended_after_s"] <= bound,
        }
        for row in rows
    ]
    report = {"benchmark": "deadline", "machine": machine(), "rows": rows, "targets": targets}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{'path':8} {'schedule':12} {'timeout':>8} {'ended after':>12} {'GETs':>5}  outcome")
        for row in rows:
            print(
                f"{row['path']:8} {row['schedule']:12} {row['timeout_s']:>7.1f}s "
                f"{row['ended_after_s']:>11.2f}s {row['gets']:>5}  {row['outcome']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
