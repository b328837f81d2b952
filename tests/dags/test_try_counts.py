"""Final errors fail the task at once; transient ones get Airflow's retries. Counted on real task runs.

Each case runs ``trycount/eachlabs_try_count.py`` (one task, ``retries=2``, no retry delay) with
``dag.test()`` against a fresh simulator with one failure scripted, then reads the task instance's
try number from the metadata database and the predictions the simulator created. The run prints the
table (``tests/dags/conftest.py``); the README's "Errors and retries" section carries it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json
from tests.dags.conftest import TRY_ROWS

DAG_FILE = Path(__file__).parent / "trycount" / "eachlabs_try_count.py"
KEY = "try-key-5c1e"
# Airflow 3.3+ keeps a task's record across tries (task_state_store); a retry re-attaches through it.
KEEPS_TASK_STATE = importlib.util.find_spec("airflow.models.task_state_store") is not None


@dataclass(frozen=True)
class Case:
    error: str  # the class of the error the task fails with
    cause: str
    says: str  # what the task's log must say
    faults: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    operator: str = "fill"
    kwargs: dict[str, Any] = field(default_factory=dict)
    connection: dict[str, Any] = field(default_factory=dict)


FINAL = [
    Case("EachlabsInputError", "steps=51 in the DAG", "Invalid steps=51", kwargs={"steps": 51}),
    Case("EachlabsConfigError", "the connection has no key", "has no API key", connection={"api_key": ""}),
    Case(
        "EachlabsInvalidInputError", "400 on the create", "HTTP 400", [("create", "status", {"status": 400})]
    ),
    Case(
        "EachlabsInvalidInputError", "422 on the create", "HTTP 422", [("create", "status", {"status": 422})]
    ),
    Case("EachlabsAuthError", "a wrong key (401)", "HTTP 401", connection={"api_key": "wrong"}),
    Case("EachlabsAuthError", "403 on the presign", "HTTP 403", [("presign", "status", {"status": 403})]),
    Case(
        "EachlabsPaymentRequiredError",
        "402 on the create",
        "HTTP 402",
        [("create", "status", {"status": 402})],
    ),
    Case(
        "EachlabsNotFoundError",
        "an unknown model (404)",
        "HTTP 404",
        operator="generic",
        kwargs={"model": "nope"},
    ),
    Case("EachlabsConflictError", "409 on the create", "HTTP 409", [("create", "status", {"status": 409})]),
    Case(
        "EachlabsUnsafeAnswerError",
        "a redirect from the API",
        "refusing a redirect",
        [("create", "status", {"status": 302})],
    ),
    Case(
        "EachlabsDownloadError",
        "an output over max_output_bytes",
        "larger than the 100 byte limit",
        kwargs={"max_output_bytes": 100, "output_path": "{out}/"},
    ),
    Case(
        "EachlabsOutputError",
        "an output cut in half",
        "is not a whole JPEG",
        [("file", "truncate", {})],
        kwargs={"output_path": "{out}/"},
    ),
    Case(
        "PredictionFailed",
        "a content-policy rejection",
        "PROVIDER_REJECTED",
        kwargs={"prompt": "something forbidden"},
    ),
    Case(
        "PredictionFailed",
        "an unknown failure, retry_unknown_failures=False",
        "retry_unknown_failures is off",
        [("create", "fail", {"error_code": "SOMETHING_ODD"})],
        kwargs={"retry_unknown_failures": False},
    ),
    Case(
        "PredictionCancelled",
        "cancelled by someone",
        "was cancelled",
        [("create", "status_variant", {"final": "canceled"})],
    ),
    Case(
        "PredictionWaitFailed",
        "401 while the trigger waits",
        "Waiting for prediction",
        [("get", "status", {"status": 401, "times": 99})],
        kwargs={"deferrable": True},
    ),
]
TRANSIENT = [
    Case(
        "EachlabsRateLimitError",
        "429 on every create",
        "HTTP 429",
        [("create", "status", {"status": 429, "times": 99})],
    ),
    Case(
        "EachlabsServerError",
        "503 on every presign",
        "HTTP 503",
        [("presign", "status", {"status": 503, "times": 99})],
    ),
    Case(
        "EachlabsConnectionError",
        "every status request dropped",
        "ConnectionError",
        [("get", "drop", {"times": 99})],
    ),
    Case(
        "EachlabsResponseError",
        "every status answer malformed",
        "not JSON",
        [("get", "malformed", {"times": 99})],
    ),
    Case(
        "PredictionFailed",
        "an unknown failure (the default)",
        "SOMETHING_ODD",
        [("create", "fail", {"error_code": "SOMETHING_ODD", "times": 9})],
    ),
    Case(
        "PredictionFailed",
        "a transient failure (INTERNAL_ERROR)",
        "INTERNAL_ERROR",
        [("create", "fail", {"error_code": "INTERNAL_ERROR", "times": 9})],
    ),
    Case(
        "PredictionTimeout",
        "the prediction never finishes",
        "did not finish within",
        [("create", "never_finish", {"times": 9})],
        kwargs={"timeout": 0.5},
    ),
]


def run_case(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path, case: Case, kind: str
) -> tuple[int, int]:
    """Run the task; record its row; return (tries Airflow made, predictions the simulator created)."""
    arguments = json.loads(json.dumps(case.kwargs).replace("{out}", str(tmp_path / "out")))
    with EachlabsSimulator(api_key=KEY, predict_seconds=0.2) as sim:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT",
            connection_json(sim.base_url, **{"api_key": KEY, **case.connection}, max_retries=2),
        )
        monkeypatch.setenv("TRYCOUNT_OPERATOR", case.operator)
        monkeypatch.setenv("TRYCOUNT_KWARGS", json.dumps(arguments))
        for route, fault, params in case.faults:
            sim.inject(route, fault, **params)
        run = load_dag().test()
        tries, predictions = try_number(run), sum(sim.counters.creates.values())
    TRY_ROWS.append(
        {"error": case.error, "cause": case.cause, "kind": kind, "tries": tries, "predictions": predictions}
    )
    assert run.state == "failed"
    assert case.says in capfd.readouterr().out
    return tries, predictions


def load_dag() -> Any:
    spec = importlib.util.spec_from_file_location("eachlabs_try_count", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def try_number(run: Any) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(TaskInstance.run_id == run.run_id)).one()
        return int(ti.try_number)


@pytest.mark.parametrize("case", FINAL, ids=[f"{c.error}: {c.cause}" for c in FINAL])
def test_a_final_error_fails_the_task_on_its_first_try(
    airflow_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: Case,
):
    tries, predictions = run_case(monkeypatch, capfd, tmp_path, case, "final")
    assert tries == 1
    assert predictions <= 1


@pytest.mark.parametrize("case", TRANSIENT, ids=[f"{c.error}: {c.cause}" for c in TRANSIENT])
def test_a_transient_error_gets_airflows_retries(
    airflow_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: Case,
):
    tries, predictions = run_case(monkeypatch, capfd, tmp_path, case, "transient")
    assert tries == 3
    # A failed or timed-out prediction is replaced by a fresh one on each try; nothing else is bought:
    # a failing status request re-attaches to the one prediction (Airflow 3.3+; 3.2 has no
    # task_state_store to keep its id in, so each try buys one), a failing create or presign buys none.
    if case.error in ("PredictionFailed", "PredictionTimeout"):
        assert predictions == 3
    elif case.faults[0][0] == "get":
        assert predictions == (1 if KEEPS_TASK_STATE else 3)
    else:
        assert predictions == 0
