"""A user reading a task's log sees one error, once, on one line: nothing marked error that is not.

Whole task runs with ``dag.test()``; everything the run printed is read as the task log would show it.
"""

from __future__ import annotations

import json
import re

import pytest

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json
from tests.dags.test_example_dags import load_dag as load_example
from tests.dags.test_try_counts import load_dag as load_try_count

ERROR_LINE = re.compile(r"^\S+ \[error\s*\]", re.MULTILINE)


@pytest.fixture
def sim(airflow_db: str, monkeypatch: pytest.MonkeyPatch) -> EachlabsSimulator:
    with EachlabsSimulator(api_key="noise-key", predict_seconds=0.2) as simulator:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(simulator.base_url, api_key="noise-key")
        )
        yield simulator


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 51}, "AirflowFailException: Invalid steps=51: must be from 1 to 50 inclusive"),
        (
            {"prompt": "something forbidden"},
            "AirflowFailException: Eachlabs prediction <id> ended with status 'failed': PROVIDER_REJECTED: "
            "The provider rejected the prompt (content policy). (request id <rid>). Not retried: a "
            "content-policy rejection does not change on a retry.",
        ),
    ],
)
def test_a_failed_fill_logs_one_error_once(
    sim: EachlabsSimulator,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    kwargs: dict[str, object],
    message: str,
):
    monkeypatch.setenv("TRYCOUNT_KWARGS", json.dumps({**kwargs, "retries": 0}))
    assert load_try_count().test().state == "failed"
    printed = capfd.readouterr().out
    errors = [line for line in printed.splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == 1 and "Task failed with exception" in errors[0]
    shown = re.sub(
        r"req_[0-9a-f]{32}", "<rid>", re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "<id>", printed)
    )
    assert shown.count(message) == 1
    assert "During handling of the above exception" not in printed  # one traceback, not a chain


def test_a_sensor_run_logs_no_error_at_all(sim: EachlabsSimulator, capfd: pytest.CaptureFixture[str]):
    assert load_example("example_submit_and_sense").test().state == "success"
    printed = capfd.readouterr().out
    assert [line for line in printed.splitlines() if ERROR_LINE.match(line)] == []
