"""Reviewing a batch in a real Airflow: the deferred batch of 3 stages its outputs and waits in
``awaiting_input``; a Re-fill of one item with a new prompt, answered over Airflow's HITL REST API,
buys exactly one more prediction and asks again; Approve with one item rejected stores the other two
in ``output_path`` (the rejected one not) and fires the Asset event; a Reject fails the task with its
note, storing nothing. Creates are counted on the simulator as deltas (other tests share it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import AirflowStack, wait_for

DAG_ID, TASK_ID = "eachlabs_review_batch", "fill_items"
pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("airflow.models.task_state_store") is None,
    reason="Airflow 3.3's awaiting_input",
)


def hitl_path(run_id: str) -> str:
    return f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/-1/hitlDetails"


def out_dir(stack: AirflowStack, run_id: str) -> Path:
    return stack.output_dir / "review-batch" / run_id.replace(":", "-").replace("+", "-")


def creates(stack: AirflowStack) -> int:
    return sum(stack.fast_sim.counters.creates.values())


def rows(stack: AirflowStack, run_id: str) -> dict[str, dict[str, Any]]:
    text = (out_dir(stack, run_id) / "eachlabs-results.jsonl").read_text()
    return {row["key"]: row for row in map(json.loads, text.splitlines())}


def published(stack: AirflowStack, run_id: str) -> list[str]:
    return sorted(p.name for p in out_dir(stack, run_id).glob("*.png"))


def waiting_for_review(stack: AirflowStack, run_id: str, round_number: int) -> dict[str, Any]:
    def asked() -> dict[str, Any] | None:
        (ti,) = stack.api.task_instances(DAG_ID, run_id)
        if ti["state"] in ("failed", "success"):
            raise AssertionError(f"the batch ended {ti['state']} before review round {round_number}")
        if ti["state"] != "awaiting_input":
            return None
        outcome = stack.api.xcom(DAG_ID, run_id, TASK_ID, "eachlabs_outcome")
        if not isinstance(outcome, dict) or outcome.get("review_round") != round_number:
            return None
        detail = stack.api.get(hitl_path(run_id))
        return None if detail.get("response_received") else {**detail, "outcome": outcome}

    return wait_for(f"batch review round {round_number}", asked, timeout=180, interval=0.5)


def respond(stack: AirflowStack, run_id: str, choice: str, **params: Any) -> None:
    # A person answers after seconds, not milliseconds: an answer within ~100 ms of the park can meet an
    # Airflow 3.3 race (the parking workload's exit, processed after the resumed one is queued under the
    # same key, takes that key off the executor, and the scheduler marks the queued task failed).
    time.sleep(3)
    body = {"chosen_options": [choice], "params_input": {"note": None, "reject": [], "refill": {}, **params}}
    stack.api.request("PATCH", hitl_path(run_id), json=body)


def tab(stack: AirflowStack, run_id: str) -> None:
    """The Eachlabs tab shows the staged grid and the form, and serves each staged output (from the
    staging folder inside output_path) with the reviewer's own Airflow login."""
    where = "/".join(quote(part, safe="") for part in (DAG_ID, run_id, TASK_ID))
    base = f"{stack.base_url}/eachlabs/ti/{where}"
    page = stack.api.session.get(base, params={"map_index": -1}, timeout=60)
    assert page.status_code == 200, page.text[:500]
    assert 'id="review-form"' in page.text and "Review (round 1 of at most 3)" in page.text
    for key in ("sofa", "lamp", "rug"):
        assert f'name="reject" value="{key}"' in page.text
        image = stack.api.session.get(f"{base}/batch/{key}", params={"map_index": -1}, timeout=60)
        assert (image.status_code, image.headers["content-type"]) == (200, "image/png"), image.text[:300]
        assert (
            image.content
            == (out_dir(stack, run_id) / ".eachlabs-review").glob(f"*/{key}.png").__next__().read_bytes()
        )


def parsed(stack: AirflowStack) -> None:
    wait_for(
        "the review batch DAG to be parsed",
        lambda: any(d["dag_id"] == DAG_ID for d in stack.api.get("/dags", params={"limit": 200})["dags"]),
        timeout=120,
        interval=1,
    )


def test_a_refill_buys_one_more_and_approval_stores_all_but_the_rejected(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    parsed(stack)
    before = creates(stack)
    run_id = stack.api.trigger(DAG_ID)

    request = waiting_for_review(stack, run_id, 1)
    assert request["options"] == ["Approve", "Reject", "Re-fill"]
    assert request["outcome"]["in_review"] == 3 and creates(stack) - before == 3
    assert published(stack, run_id) == []  # nothing in output_path before approval
    first = rows(stack, run_id)
    assert {row["review"] for row in first.values()} == {"pending"}
    tab(stack, run_id)

    respond(stack, run_id, "Re-fill", refill={"lamp": "a brass floor lamp"})
    waiting_for_review(stack, run_id, 2)
    assert creates(stack) - before == 4, stack.fast_sim.counters  # exactly one more
    second = rows(stack, run_id)
    new_id = second["lamp"]["prediction_id"]
    assert new_id != first["lamp"]["prediction_id"]
    assert stack.fast_sim.predictions[new_id].input["prompt"] == "a brass floor lamp"
    assert second["sofa"]["prediction_id"] == first["sofa"]["prediction_id"]
    assert published(stack, run_id) == []

    respond(stack, run_id, "Approve", reject=["rug"], note="the rug is crooked")
    assert stack.api.wait_run(DAG_ID, run_id, 120) == "success", stack.logs()
    assert published(stack, run_id) == ["lamp.png", "sofa.png"]
    final = rows(stack, run_id)
    assert final["rug"]["status"] == "rejected" and "the rug is crooked" in final["rug"]["error"]
    assert final["lamp"]["stored_path"] == str(out_dir(stack, run_id) / "lamp.png")
    assert creates(stack) - before == 4
    events = stack.api.get("/assets/events", params={"source_dag_id": DAG_ID, "source_run_id": run_id})
    (event,) = events["asset_events"]
    assert event["extra"]["succeeded"] == 2
    assert sorted(p["key"] for p in event["extra"]["predictions"]) == ["lamp", "sofa"]


def test_a_full_rejection_fails_the_task_with_its_note(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    parsed(stack)
    run_id = stack.api.trigger(DAG_ID)
    waiting_for_review(stack, run_id, 1)
    respond(stack, run_id, "Reject", note="wrong room entirely")
    assert stack.api.wait_run(DAG_ID, run_id, 120) == "failed"
    outcome = stack.api.xcom(DAG_ID, run_id, TASK_ID, "eachlabs_outcome")
    assert "in review round 1: wrong room entirely" in outcome["error_message"], outcome
    assert outcome["final"] is True
    assert published(stack, run_id) == []
