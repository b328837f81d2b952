"""``review=True`` on the batch operators, over real HTTP against the simulator: the outputs wait in a
staging folder inside ``output_path`` until a person answers; Approve (some items rejected) publishes
the rest, Reject fails the task with its note and stores nothing, Re-fill buys exactly the named items
again with their new prompts and asks again.

Airflow's side of the human-in-the-loop is driven by hand, as in tests/integration/test_review.py:
the request is recorded and the answer handed to ``batch_review_complete`` as Airflow hands it. The
real thing, answered over Airflow's HITL REST API, is tests/e2e/test_batch_review.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_eachlabs.batch.journal import JOURNAL_FOLDER
from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.results import OUTCOME_KEY
from airflow_provider_eachlabs.review import REVIEW_FOLDER
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration import test_batch
from tests.integration.test_batch import RESULTS, BatchTI, batch, creates, outputs, results
from tests.integration.test_operators import RecordingStateStore

awaiting = pytest.importorskip("airflow.sdk.exceptions").__dict__.get("TaskAwaitingInput")
pytestmark = pytest.mark.skipif(awaiting is None, reason="Airflow 3.3's awaiting_input")

start_simulator = test_batch.start_simulator  # the fixture, shared
FILLS = Asset("eachlabs_reviewed_fills")
FILES = AssetAlias("eachlabs_reviewed_files")
KEYS = ["a", "b", "c", "d"]


class ReviewBatchTI(BatchTI):
    try_number = 1

    def __init__(self) -> None:
        super().__init__()
        self.id = uuid.uuid4()


@pytest.fixture
def requests_written(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    written: list[dict[str, Any]] = []
    import airflow.sdk.execution_time.hitl as hitl

    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: written.append(request))
    return written


def context(store: RecordingStateStore, task: Any = None) -> dict[str, Any]:
    ti = ReviewBatchTI()
    return {
        "ti": ti,
        "task_instance": ti,
        "task_state_store": store,
        "task": task,
        "outlet_events": OutletEventAccessors(),
    }


def answer(choice: str, **params: Any) -> dict[str, Any]:
    return {
        "chosen_options": [choice],
        "params_input": {"note": None, "reject": [], "refill": {}, **params},
        "responded_by_user": {"id": "ana", "name": "Ana"},
        "responded_at": None,
        "timedout": False,
    }


def reviewed(out: Path, **kwargs: Any) -> Any:
    items = [{"key": key, "seed": n} for n, key in enumerate(KEYS)]
    return batch(out, items, review=True, outlets=[FILLS, FILES], **kwargs)


def staged(out: Path) -> list[str]:
    return sorted(p.name for p in (out / REVIEW_FOLDER).rglob("*.png"))


def waiting(out: Path, store: RecordingStateStore, **kwargs: Any) -> dict[str, Any]:
    ctx = context(store)
    with pytest.raises(awaiting) as parked:
        reviewed(out, **kwargs).execute(ctx)
    assert parked.value.method_name == "batch_review_complete"
    return ctx


def test_a_reviewed_batch_stages_every_output_and_changes_nothing_in_output_path(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    ctx = waiting(out, RecordingStateStore())
    assert creates(sim) == 4
    assert outputs(out) == []  # nothing published before a person approves
    assert staged(out) == [f"{key}.png" for key in KEYS]
    rows = results(out)
    for key in KEYS:
        assert rows[key]["review"] == "pending" and rows[key]["status"] == "success"
        assert f"/{REVIEW_FOLDER}/" in rows[key]["stored_path"]
        assert Path(rows[key]["stored_path"]).parent.parent == out / REVIEW_FOLDER
    (request,) = requests_written
    assert request["options"] == ["Approve", "Reject", "Re-fill"] and request["defaults"] is None
    assert set(request["params"]) == {"note", "reject", "refill"}
    assert "Eachlabs tab" in request["body"] and "at most 3 review rounds" in request["body"]
    outcome = ctx["ti"].xcoms[OUTCOME_KEY]
    assert (outcome["status"], outcome["review_round"], outcome["in_review"]) == ("awaiting review", 1, 4)
    assert outcome["staging_path"] == str(Path(rows["a"]["stored_path"]).parent)


def test_approval_with_one_item_rejected_publishes_the_rest_and_fires_only_what_was_stored(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    waiting(out, store)
    before = results(out)
    operator = reviewed(out)
    ctx = context(store, operator)
    summary = operator.batch_review_complete(ctx, answer("Approve", reject=["c"], note="a seam shows"))
    assert creates(sim) == 4  # approval buys nothing
    assert outputs(out) == ["a.png", "b.png", "d.png"]
    assert not (out / REVIEW_FOLDER).exists() and not (out / JOURNAL_FOLDER).exists()
    rows = results(out)
    for key in ("a", "b", "d"):
        assert rows[key]["review"] == "approved" and rows[key]["stored_path"] == str(out / f"{key}.png")
        assert (out / f"{key}.png").read_bytes() == sim.file_bytes(rows[key]["output_url"])
        assert rows[key]["sha256"] == before[key]["sha256"]
    assert rows["c"]["status"] == "rejected" and rows["c"]["stored_path"] is None
    assert rows["c"]["error"] == "rejected by Ana in review round 1: a seam shows; not stored"
    assert (summary["succeeded"], summary["rejected"], summary["failed"]) == (3, 1, 0)
    outcome = ctx["ti"].xcoms[OUTCOME_KEY]
    assert outcome["ok"] is True and outcome["rejected"] == 1
    from tests.integration.test_assets import alias_events, asset_event, sent

    events = sent(ctx)
    extra = asset_event(events, FILLS)["extra"]
    assert extra["succeeded"] == 3
    assert sorted(p["key"] for p in extra["predictions"]) == ["a", "b", "d"]
    assert sorted(e["dest_asset_key"]["uri"] for e in alias_events(events, FILES)) == sorted(
        (out / f"{key}.png").as_uri() for key in ("a", "b", "d")
    )


def test_a_rejection_fails_the_task_with_its_note_and_stores_nothing(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    waiting(out, store)
    ctx = context(store)
    with pytest.raises(AirflowFailException) as failed:
        reviewed(out).batch_review_complete(ctx, answer("Reject", note="wrong style"))
    assert str(failed.value) == (
        "The batch was rejected by Ana in review round 1: wrong style. "
        "None of its 4 staged outputs was stored."
    )
    assert outputs(out) == [] and creates(sim) == 4
    assert ctx["ti"].xcoms[OUTCOME_KEY]["error_message"].startswith("The batch was rejected by Ana")


def test_a_refill_of_one_of_four_items_buys_exactly_one_with_the_new_prompt_then_asks_again(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    waiting(out, store)
    first = {key: row["prediction_id"] for key, row in results(out).items()}
    known = set(sim.predictions)
    ctx = context(store)
    with pytest.raises(awaiting):
        reviewed(out).batch_review_complete(ctx, answer("Re-fill", refill={"b": "a meadow, no crate"}))
    assert creates(sim) == 5  # exactly one more
    (second,) = set(sim.predictions) - known
    assert sim.predictions[second].input["prompt"] == "a meadow, no crate"
    rows = results(out)
    assert rows["b"]["prediction_id"] == second and rows["b"]["review"] == "pending"
    assert {k: rows[k]["prediction_id"] for k in "acd"} == {k: first[k] for k in "acd"}
    assert outputs(out) == [] and len(staged(out)) == 4
    outcome = ctx["ti"].xcoms[OUTCOME_KEY]
    assert (outcome["status"], outcome["review_round"]) == ("awaiting review", 2)
    assert len(requests_written) == 2
    assert store["eachlabs_prediction"]["review"] == {"round": 2, "prompts": {"b": "a meadow, no crate"}}
    # The ledger counts the re-fill like any other prediction: 5 bought over both rounds.
    assert store["eachlabs_ledger_batch_total"]["bought"] == 5

    # A retry of the task now (its worker died) sends the changed prompt: nothing is bought again.
    with pytest.raises(awaiting):
        reviewed(out).execute(context(store))
    assert creates(sim) == 5

    summary = reviewed(out).batch_review_complete(context(store), answer("Approve"))
    assert summary["succeeded"] == 4 and creates(sim) == 5
    assert outputs(out) == [f"{key}.png" for key in KEYS]
    assert results(out)["b"]["prediction_id"] == second


def test_a_refill_past_max_review_rounds_buys_nothing_and_fails(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    waiting(out, store, max_review_rounds=1)
    with pytest.raises(AirflowFailException, match=r"max_review_rounds=1\): nothing more was bought"):
        reviewed(out, max_review_rounds=1).batch_review_complete(
            context(store), answer("Re-fill", refill={"a": "again"})
        )
    assert creates(sim) == 4 and outputs(out) == []


def test_an_answer_naming_an_item_not_under_review_is_asked_again_buying_and_storing_nothing(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    waiting(out, store)
    ctx = context(store)
    with pytest.raises(awaiting):
        reviewed(out).batch_review_complete(ctx, answer("Approve", reject=["zz"]))
    assert "'zz'" in ctx["ti"].xcoms[OUTCOME_KEY]["review_problem"]
    assert outputs(out) == [] and creates(sim) == 4 and len(requests_written) == 2
    with pytest.raises(awaiting):
        reviewed(out).batch_review_complete(context(store), answer("Re-fill"))
    assert creates(sim) == 4


def test_a_staged_output_changed_on_disk_is_not_published(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    waiting(out, store)
    Path(results(out)["a"]["stored_path"]).write_bytes(b"not the fill")
    with pytest.raises(AirflowFailException, match="changed since the batch stored it"):
        reviewed(out).batch_review_complete(context(store), answer("Approve"))
    assert "a.png" not in outputs(out)


def test_without_review_nothing_is_staged(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
) -> None:
    start_simulator()
    out = tmp_path / "out"
    summary = batch(out, [{"key": key} for key in KEYS]).execute(test_batch.context())  # type: ignore[arg-type]
    assert summary["succeeded"] == 4 and outputs(out) == [f"{key}.png" for key in KEYS]
    assert not (out / REVIEW_FOLDER).exists()
    assert all("review" not in row for row in results(out).values())
    assert json.loads((out / RESULTS).read_text().splitlines()[0])["stored_path"] == str(out / "a.png")


def test_a_deferred_reviewed_batch_stages_in_the_triggerer_and_a_refill_defers_again(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    from tests.integration.test_batch import defer, rebuilt, run_trigger

    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    trigger = defer(reviewed(out, deferrable=True), context(store))
    (event,) = run_trigger(rebuilt(trigger))
    assert outputs(out) == [] and len(staged(out)) == 4
    with pytest.raises(awaiting):
        reviewed(out, deferrable=True).execute_complete(context(store), event)
    with pytest.raises(TaskDeferred) as again:  # the re-fill runs in the triggerer too
        reviewed(out, deferrable=True).batch_review_complete(
            context(store), answer("Re-fill", refill={"d": "a calm sea"})
        )
    (event,) = run_trigger(rebuilt(again.value.trigger))
    assert creates(sim) == 5 and outputs(out) == []
    ctx = context(store)
    with pytest.raises(awaiting):
        reviewed(out, deferrable=True).execute_complete(ctx, event)
    assert ctx["ti"].xcoms[OUTCOME_KEY]["review_round"] == 2
    reviewed(out, deferrable=True).batch_review_complete(context(store), answer("Approve", reject=["a"]))
    assert outputs(out) == ["b.png", "c.png", "d.png"] and creates(sim) == 5


def test_a_refill_past_max_cost_buys_nothing_and_fails(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, requests_written: list[dict[str, Any]]
) -> None:
    sim = start_simulator()
    out = tmp_path / "out"
    store = RecordingStateStore()
    budget = {"max_cost": 0.2, "cost_per_prediction": 0.05}
    waiting(out, store, **budget)
    with pytest.raises(AirflowFailException, match="exceeds max_cost, so nothing was bought"):
        reviewed(out, **budget).batch_review_complete(context(store), answer("Re-fill", refill={"a": "x"}))
    assert creates(sim) == 4 and outputs(out) == []


def test_review_settings_are_checked_when_the_dag_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(EachlabsInputError, match="on_review_timeout"):
        batch(tmp_path, [], review=True, on_review_timeout="ignore")
    with pytest.raises(EachlabsInputError, match="max_review_rounds"):
        batch(tmp_path, [], review=True, max_review_rounds=0)
