"""Shared test set-up: a private Airflow home, the simulator, and an ``eachlabs_default`` connection.

Airflow reads its configuration at import, so the environment is set here, before any test module
imports it. Every test that talks HTTP talks to a real simulator on a loopback port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = tempfile.mkdtemp(prefix="eachlabs-tests-airflow-")
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "example_dags")
# dag.test() finds a DAG through the configured bundles: the examples, and the suite's own DAGs.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (
            ("dags-folder", ROOT / "example_dags"),
            ("try-count", ROOT / "tests/dags/trycount"),
        )
    ]
)
os.environ.pop("AIRFLOW_CONN_EACHLABS_DEFAULT", None)

from airflow_provider_eachlabs.testing import EachlabsSimulator  # noqa: E402

API_KEY = "sim-key-7f3a9c1e5b"


@pytest.fixture
def simulator() -> Iterator[EachlabsSimulator]:
    with EachlabsSimulator(api_key=API_KEY, predict_seconds=0.3) as sim:
        yield sim


def connection_json(host: str, api_key: str = API_KEY, **extra: float) -> str:
    """A connection in ``AIRFLOW_CONN_*`` JSON form, with fast retries for tests."""
    settings = {"timeout": 2, "max_retries": 3, "backoff_initial": 0.01, "backoff_max": 0.05, **extra}
    return json.dumps({"conn_type": "eachlabs", "host": host, "password": api_key, "extra": settings})


@pytest.fixture
def eachlabs_conn(simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch) -> EachlabsSimulator:
    """``eachlabs_default`` pointing at the simulator; returns the simulator for its counters."""
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(simulator.base_url))
    return simulator


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata database in the private Airflow home, made once per session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
        timeout=300,
    )
    return AIRFLOW_HOME
