"""Reviewing a fill in a real Airflow, as a pipeline owner does: the deferred fill waits in
``awaiting_input`` (listed in Required Actions); a Re-fill with a new prompt, answered over Airflow's
HITL REST API, buys exactly one more prediction and asks again; Approve stores that output and fires
the task's Asset event; a Reject fails the task with its note, storing nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import AirflowStack, wait_for
from tests.e2e.rest import wait_parsed
from tests.e2e.test_ui_plugin import plugin

DAG_ID, TASK_ID = "eachlabs_review_fill", "fill"
pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("airflow.models.task_state_store") is None,
    reason="Airflow 3.3's awaiting_input",
)


def hitl_path(run_id: str) -> str:
    return f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/-1/hitlDetails"


def waiting_for_review(stack: AirflowStack, run_id: str, round_number: int) -> dict[str, Any]:
    """The request, once the task waits for the answer of that round (its outcome names the round:
    Airflow keeps the request's text from the first)."""

    def asked() -> dict[str, Any] | None:
        (ti,) = stack.api.task_instances(DAG_ID, run_id)
        if ti["state"] != "awaiting_input":
            return None
        outcome = stack.api.xcom(DAG_ID, run_id, TASK_ID, "eachlabs_outcome")
        if not isinstance(outcome, dict) or outcome.get("review_round") != round_number:
            return None
        detail = stack.api.get(hitl_path(run_id))
        return None if detail.get("response_received") else {**detail, "outcome": outcome}

    try:
        return wait_for(f"review round {round_number}", asked, timeout=180, interval=0.5)
    except AssertionError as error:
        (ti,) = stack.api.task_instances(DAG_ID, run_id)
        log = stack.api.log(DAG_ID, run_id, TASK_ID, try_number=ti["try_number"])
        raise AssertionError(
            f"{error}; the task is {ti['state']}; its log ends:\n{log[-3000:]}\n{stack.logs()}"
        ) from None


def respond(stack: AirflowStack, run_id: str, choice: str, **params: Any) -> None:
    """Answer as a person does: not within milliseconds of the task parking. An answer that lands
    while the worker that parked the task is still exiting has Airflow 3.3's scheduler fail the
    resumed task ("Cannot start Task Instance in invalid state"), whoever the operator is."""
    time.sleep(3)
    body = {
        "chosen_options": [choice],
        "params_input": {"note": None, "prompt": None, "seed": None, "guidance": None, **params},
    }
    stack.api.request("PATCH", hitl_path(run_id), json=body)


def test_a_refill_buys_one_more_and_approval_stores_it_and_fires_the_asset(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    sim = stack.fast_sim
    stack.use_simulator(sim)
    wait_parsed(stack, DAG_ID)
    known = set(sim.predictions)
    run_id = stack.api.trigger(DAG_ID)
    request = waiting_for_review(stack, run_id, 1)
    (first,) = set(sim.predictions) - known
    assert (
        request["options"] == ["Approve", "Reject", "Re-fill"]
        and request["outcome"]["prediction_id"] == first
    )
    required = stack.api.get("/dags/~/dagRuns/~/hitlDetails", params={"dag_id": DAG_ID})
    assert any(
        d["task_instance"]["dag_run_id"] == run_id for d in required["hitl_details"]
    )  # Required Actions
    assert not list((stack.output_dir / "review-fill").glob(f"{first}*"))  # nothing stored before approval
    fills_page = plugin(stack, "/").text
    assert run_id in fills_page.split('id="reviews"', 1)[1].split("</table>", 1)[0]  # "Reviews waiting"

    respond(stack, run_id, "Re-fill", prompt="a green meadow, the crate gone")
    second = waiting_for_review(stack, run_id, 2)["outcome"]["prediction_id"]
    assert len(set(sim.predictions) - known) == 2  # exactly one more prediction bought
    assert (sim.predictions[second].input["prompt"], sim.predictions[second].input["seed"]) == (
        "a green meadow, the crate gone",
        11,
    )

    respond(stack, run_id, "Approve")
    assert stack.api.wait_run(DAG_ID, run_id, 120) == "success", stack.logs()
    result = stack.api.xcom(DAG_ID, run_id, TASK_ID, "return_value")
    assert result["prediction_id"] == second and Path(result["stored_path"]).exists()
    assert not list(Path(result["stored_path"]).parent.glob(f"{first}*"))  # the first fill was never stored
    events = stack.api.get("/assets/events", params={"source_dag_id": DAG_ID, "source_run_id": run_id})
    assert events["asset_events"], "approval fires the task's Asset event"


def test_a_rejection_fails_the_task_with_its_note(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger(DAG_ID)
    waiting_for_review(stack, run_id, 1)
    respond(stack, run_id, "Reject", note="the crate is still visible")
    assert stack.api.wait_run(DAG_ID, run_id, 120) == "failed"
    outcome = stack.api.xcom(DAG_ID, run_id, TASK_ID, "eachlabs_outcome")
    assert "in review round 1: the crate is still visible" in outcome["error_message"], outcome
    assert outcome["final"] is True
