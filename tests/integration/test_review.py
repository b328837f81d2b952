"""``review=True``: a fill waits for a person before it is stored, over real HTTP against the simulator.

Airflow's side of the human-in-the-loop (the request written through the task's supervisor, the park
in ``awaiting_input``, the resume with the answer) is driven here by hand: the request is recorded
and the answer handed to ``review_complete`` as Airflow hands it. The real thing, answered over
Airflow's HITL REST API, is in tests/e2e/test_review.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs import review as rules
from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.results import OUTCOME_KEY
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import RecordingStateStore, RecordingTI, fill

awaiting = pytest.importorskip("airflow.sdk.exceptions").__dict__.get("TaskAwaitingInput")
pytestmark = pytest.mark.skipif(awaiting is None, reason="Airflow 3.3's awaiting_input")


class ReviewTI(RecordingTI):
    dag_id, run_id, task_id, map_index, try_number = "review_dag", "run-1", "fill", -1, 1

    def __init__(self) -> None:
        super().__init__()
        self.id = uuid.uuid4()


@pytest.fixture
def requests_written(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The human-in-the-loop requests the task writes (through its supervisor, in Airflow)."""
    written: list[dict[str, Any]] = []
    import airflow.sdk.execution_time.hitl as hitl

    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: written.append(request))
    return written


def context(store: RecordingStateStore) -> dict[str, Any]:
    ti = ReviewTI()
    return {"ti": ti, "task_instance": ti, "task_state_store": store}


def answer(choice: str, **params: Any) -> dict[str, Any]:
    return {
        "chosen_options": [choice],
        "params_input": {"note": None, **params},
        "responded_by_user": {"id": "ana", "name": "Ana"},
        "responded_at": None,
        "timedout": False,
    }


def reviewed_fill(tmp_path: Path, **kwargs: Any) -> Any:
    return fill(output_path=f"{tmp_path}/", review=True, seed=7, **kwargs)


def test_a_fill_waits_for_review_before_anything_is_stored(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    store = RecordingStateStore()
    ctx = context(store)
    with pytest.raises(awaiting) as parked:
        reviewed_fill(tmp_path).execute(ctx)
    assert parked.value.method_name == "review_complete"
    assert list(tmp_path.iterdir()) == []  # nothing is published before a person approves
    (request,) = requests_written
    assert request["options"] == ["Approve", "Reject", "Re-fill"] and request["defaults"] is None
    assert (
        request["params"]["prompt"]["value"] == "an empty meadow" and request["params"]["seed"]["value"] == 7
    )
    (prediction_id,) = eachlabs_conn.predictions
    assert "Eachlabs tab" in request["body"] and "at most 3 predictions" in request["body"]
    outcome = ctx["ti"].xcoms[OUTCOME_KEY]
    assert (outcome["status"], outcome["prediction_id"], outcome["review_round"]) == (
        "awaiting review",
        prediction_id,
        1,
    )
    # Its cost is spent whatever the answer: it is in the ledger already.
    assert store[f"eachlabs_ledger/ended/{prediction_id}"]["status"] == "succeeded"


def test_approval_stores_the_reviewed_output_and_buys_nothing_more(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    store = RecordingStateStore()
    with pytest.raises(awaiting):
        reviewed_fill(tmp_path).execute(context(store))
    (prediction_id,) = eachlabs_conn.predictions
    result = reviewed_fill(tmp_path).review_complete(context(store), answer("Approve"))
    assert result["prediction_id"] == prediction_id
    assert Path(result["stored_path"]) == tmp_path / f"{prediction_id}.png"
    assert sum(eachlabs_conn.counters.creates.values()) == 1


def test_a_rejection_fails_the_task_with_the_note_and_stores_nothing(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    store = RecordingStateStore()
    with pytest.raises(awaiting):
        reviewed_fill(tmp_path).execute(context(store))
    (prediction_id,) = eachlabs_conn.predictions
    ctx = context(store)
    with pytest.raises(AirflowFailException) as failed:
        reviewed_fill(tmp_path).review_complete(ctx, answer("Reject", note="the crate is still there"))
    assert str(failed.value) == (
        "The fill was rejected by Ana in review round 1: the crate is still there. "
        f"Prediction {prediction_id} was not stored."
    )
    assert list(tmp_path.iterdir()) == []
    assert ctx["ti"].xcoms[OUTCOME_KEY]["error_message"].startswith("The fill was rejected by Ana")


def test_a_refill_buys_exactly_one_prediction_with_the_new_prompt_then_asks_again(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    store = RecordingStateStore()
    with pytest.raises(awaiting):
        reviewed_fill(tmp_path).execute(context(store))
    (first,) = eachlabs_conn.predictions
    refilling = context(store)
    with pytest.raises(awaiting):
        reviewed_fill(tmp_path).review_complete(
            refilling, answer("Re-fill", prompt="a meadow, no crate", seed=7)
        )
    assert sum(eachlabs_conn.counters.creates.values()) == 2
    (second,) = set(eachlabs_conn.predictions) - {first}
    sent = eachlabs_conn.predictions[second].input
    assert (sent["prompt"], sent["seed"]) == ("a meadow, no crate", 7)
    assert requests_written[-1]["params"]["prompt"]["value"] == "a meadow, no crate"
    outcome = refilling["ti"].xcoms[OUTCOME_KEY]  # what the tab shows: the fill under review now
    assert (outcome["prediction_id"], outcome["review_round"], outcome["status"]) == (
        second,
        2,
        "awaiting review",
    )
    # Both fills are counted in the task's spend; approving stores the second.
    assert {store[f"eachlabs_ledger/ended/{p}"]["status"] for p in (first, second)} == {"succeeded"}
    result = reviewed_fill(tmp_path).review_complete(context(store), answer("Approve"))
    assert result["prediction_id"] == second
    assert [p.name for p in tmp_path.iterdir()] == [f"{second}.png"]
    assert sum(eachlabs_conn.counters.creates.values()) == 2


def test_a_refill_past_max_review_rounds_buys_nothing_and_fails(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    store = RecordingStateStore()
    with pytest.raises(awaiting):
        reviewed_fill(tmp_path, max_review_rounds=1).execute(context(store))
    with pytest.raises(AirflowFailException, match=r"max_review_rounds=1\): nothing more was bought"):
        reviewed_fill(tmp_path, max_review_rounds=1).review_complete(
            context(store), answer("Re-fill", prompt="again")
        )
    assert sum(eachlabs_conn.counters.creates.values()) == 1


def test_a_review_timeout_states_what_it_does() -> None:
    assert rules.verdict({**answer("Reject"), "responded_by_user": None, "timedout": True}, {}).timed_out
    with pytest.raises(EachlabsInputError, match="on_review_timeout"):
        fill(review=True, on_review_timeout="ignore")
    with pytest.raises(EachlabsInputError, match="max_review_rounds"):
        fill(review=True, max_review_rounds=0)
