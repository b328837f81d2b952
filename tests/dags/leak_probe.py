"""Run the probe DAG through success, failure, timeout and every fault, for test_secrets.py to search.

Run as its own process (DEBUG logging, a private Airflow home) so that everything it leaves —
output, logs, the metadata database — can be searched for the API key afterwards. Prints one JSON
line per scenario: its name and the run's final state.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from airflow_provider_eachlabs.testing import EachlabsSimulator

KEY = sys.argv[1]
WRONG_KEY = sys.argv[2]
os.environ["AIRFLOW_VAR_EACHLABS_WEBHOOK_SECRET"] = sys.argv[3]
SCENARIOS: list[tuple[str, dict[str, str], list[tuple[str, str, dict[str, Any]]], str]] = [
    ("success, deferrable", {}, [], "success"),
    ("success, on the worker", {"PROBE_DEFERRABLE": "false"}, [], "success"),
    ("moderation failure", {"PROBE_PROMPT": "a doomed meadow"}, [], "failed"),
    ("timeout, deferrable", {"PROBE_TIMEOUT": "1"}, [("create", "never_finish", {})], "failed"),
    (
        "timeout, on the worker",
        {"PROBE_TIMEOUT": "1", "PROBE_DEFERRABLE": "false"},
        [("create", "never_finish", {})],
        "failed",
    ),
    *[
        (f"{fault} at {route}", {"PROBE_DEFERRABLE": "false"}, [(route, fault, params)], "success")
        for route in ("presign", "upload", "create", "get", "file")
        for fault, params in (("status", {"status": 503}), ("drop", {}), ("malformed", {}))
        if not (route == "upload" and fault == "malformed")
    ],
    (
        "lasting 401",
        {"PROBE_DEFERRABLE": "false"},
        [("presign", "status", {"status": 401, "times": 9})],
        "failed",
    ),
]


def load_probe_dag() -> Any:
    """A fresh parse of the probe DAG, so that it reads this scenario's environment."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "eachlabs_probe", Path(__file__).parent / "probe" / "eachlabs_probe.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def main() -> None:
    import logging

    logging.getLogger().setLevel(logging.DEBUG)
    with EachlabsSimulator(api_key=KEY, predict_seconds=0.3, reject_word="doomed") as sim:
        for name, env, faults, expected in [*SCENARIOS, ("wrong key", {}, [], "failed")]:
            key = WRONG_KEY if name == "wrong key" else KEY
            connection = {"conn_type": "eachlabs", "host": sim.base_url, "password": key}
            connection["extra"] = {
                "timeout": 1,
                "max_retries": 2,
                "backoff_initial": 0.01,
                "backoff_max": 0.05,
            }
            os.environ["AIRFLOW_CONN_EACHLABS_DEFAULT"] = json.dumps(connection)
            for variable in ("PROBE_PROMPT", "PROBE_TIMEOUT", "PROBE_DEFERRABLE"):
                os.environ.pop(variable, None)
            os.environ.update(env)
            sim.clear_faults()
            for route, fault, params in faults:
                sim.inject(route, fault, **params)
            state = str(load_probe_dag().test().state)
            print(json.dumps({"scenario": name, "state": state, "expected": expected}), flush=True)


if __name__ == "__main__":
    main()
