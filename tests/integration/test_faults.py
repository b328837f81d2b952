"""Every fault the simulator can inject, at every step of a fill, with the outcome a user sees.

Each case runs a whole FluxFillOperator (sync path: upload, create, poll, download, and cancel on
timeout) against a fresh simulator with one fault scripted, and records: did the fill succeed after
retries, or fail with which message; how many predictions it created; how many requests it made.
The run prints the table (tests/integration/conftest.py); the README's Reliability section carries it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json
from tests.integration.conftest import FAULT_ROWS
from tests.integration.test_operators import context, fill

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STEP_ROUTES = {
    "upload": "upload",
    "presign": "presign",
    "create": "create",
    "poll": "get",
    "download": "file",
}
STEP_ORDER = {"presign": 0, "upload": 1, "create": 2, "poll": 3, "cancel": 4, "download": 5}
TRANSIENT = [
    ("429 + Retry-After", {"fault": "status", "status": 429, "retry_after": 0}),
    ("429, no Retry-After", {"fault": "status", "status": 429}),
    ("500", {"fault": "status", "status": 500}),
    ("502", {"fault": "status", "status": 502}),
    ("503", {"fault": "status", "status": 503}),
    ("504", {"fault": "status", "status": 504}),
    ("dropped connection", {"fault": "drop"}),
    ("read timeout", {"fault": "delay", "seconds": 1.5}),
    ("malformed JSON", {"fault": "malformed"}),
]
# What a fill ends as when one transient fault hits a step: every step recovers, the create by
# looking for the prediction before sending again (an upload PUT is retried like any idempotent call).
CASES = [
    (step, name, params)
    for step in ("presign", "upload", "create", "poll", "download")
    for name, params in TRANSIENT
    if not (step == "upload" and name == "malformed JSON")  # a PUT's answer has no body to read
]


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> EachlabsSimulator:
    with EachlabsSimulator(api_key="fault-key", predict_seconds=0.3) as simulator:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT",
            connection_json(simulator.base_url, api_key="fault-key", timeout=1, max_retries=3),
        )
        yield simulator


def run_fill(sim: EachlabsSimulator, step: str, fault: str, tmp_path: Path, **kwargs: Any) -> str:
    """Run one fill, record its row, and return the outcome: "succeeded", or the error in full.

    "failed at once" is a final error (``AirflowFailException``: Airflow does not retry the task);
    "failed" names the class of an error Airflow's retries take over.
    """
    try:
        result = fill(output_path=f"{tmp_path}/", **kwargs).execute(context())
        outcome = "succeeded" if Path(result["stored_path"]).exists() else "succeeded, nothing stored"
    except AirflowFailException as error:
        outcome = f"failed at once: {error}"
    except BaseException as error:
        outcome = f"failed: {type(error).__name__}: {error}"
    FAULT_ROWS.append(
        {
            "order": STEP_ORDER[step],
            "step": step,
            "fault": fault,
            "outcome": UUID.sub("<id>", outcome.split(" (request id")[0])[:100],
            "predictions created": sum(sim.counters.creates.values()),
            "requests made": sim.counters.requests,
        }
    )
    return outcome


@pytest.mark.parametrize(("step", "name", "params"), CASES, ids=[f"{s}-{n}" for s, n, _ in CASES])
def test_one_transient_fault_is_absorbed(
    sim: EachlabsSimulator, tmp_path: Path, step: str, name: str, params: dict[str, Any]
):
    sim.inject(STEP_ROUTES[step], **params)
    assert run_fill(sim, step, name, tmp_path) == "succeeded"
    assert sum(sim.counters.creates.values()) == 1
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("500 after creating", {"fault": "status", "status": 500, "after_processing": True}),
        ("503 after creating", {"fault": "status", "status": 503, "after_processing": True}),
        ("dropped after creating", {"fault": "drop", "after_processing": True}),
        ("malformed after creating", {"fault": "malformed", "after_processing": True}),
    ],
)
def test_an_ambiguous_create_that_did_create_is_found_not_paid_twice(
    sim: EachlabsSimulator, tmp_path: Path, name: str, params: dict[str, Any]
):
    sim.inject("create", **params)
    assert run_fill(sim, "create", name, tmp_path) == "succeeded"
    assert sim.counters.create_requests == 1
    assert sum(sim.counters.creates.values()) == 1


@pytest.mark.parametrize(
    ("step", "name", "route", "status", "created"),
    [
        ("presign", "503 every time", "presign", 503, 0),
        ("create", "429 every time", "create", 429, 0),
        ("poll", "502 every time", "get", 502, 1),
        ("download", "500 every time", "file", 500, 1),
    ],
)
def test_a_lasting_fault_fails_with_a_clear_message(
    sim: EachlabsSimulator, tmp_path: Path, step: str, name: str, route: str, status: int, created: int
):
    sim.inject(route, "status", times=50, status=status)
    outcome = run_fill(sim, step, name, tmp_path)
    assert outcome.startswith("failed: ") and f"HTTP {status}" in outcome
    # Before the create nothing is bought; after it, exactly the one prediction, never a second.
    assert sum(sim.counters.creates.values()) == created
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("status 'error'", {"final": "error"}, "failed: PredictionFailed"),
        ("status 'canceled'", {"final": "canceled"}, "failed at once: Eachlabs prediction"),
        ("status 'created' while running", {"running": "created"}, "succeeded"),
        ("unknown status while running", {"running": "mystery"}, "succeeded"),
    ],
)
def test_status_variants(
    sim: EachlabsSimulator, tmp_path: Path, name: str, params: dict[str, Any], expected: str
):
    sim.inject("create", "status_variant", **params)
    assert run_fill(sim, "poll", name, tmp_path).startswith(expected)
    assert sum(sim.counters.creates.values()) == 1


def test_moderation_failure_names_the_code(sim: EachlabsSimulator, tmp_path: Path):
    outcome = run_fill(sim, "poll", "moderation rejects", tmp_path, prompt="something forbidden")
    assert outcome.startswith("failed at once: Eachlabs prediction") and "PROVIDER_REJECTED" in outcome


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("cancel answered normally", None),
        ("cancel answered 503 once", {"fault": "status", "status": 503}),
        ("cancel connection dropped", {"fault": "drop"}),
        ("cancel answered 500 always", {"fault": "status", "status": 500, "times": 50}),
    ],
)
def test_timeout_cancels_best_effort(
    sim: EachlabsSimulator, tmp_path: Path, name: str, params: dict[str, Any] | None
):
    sim.inject("create", "never_finish")
    if params:
        sim.inject("cancel", **params)
    outcome = run_fill(sim, "cancel", f"never finishes; {name}", tmp_path, timeout=0.5)
    assert outcome.startswith("failed: PredictionTimeout")
    (record,) = sim.predictions.values()
    assert record.status == ("processing" if name.endswith("always") else "cancelled")
