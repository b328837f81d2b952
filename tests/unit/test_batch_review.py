"""A batch's review without a server: reading the answer (``review.batch_verdict``), where outputs are
staged, and the Eachlabs tab's review grid, which serves staged outputs only from that task
instance's staging folder inside its ``output_path``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_eachlabs import review as rules
from airflow_provider_eachlabs.batch.journal import journal_root

SCENE = Path(__file__).parents[2] / "example_dags" / "data" / "scene.png"


def answer(choice: str, **params: Any) -> dict[str, Any]:
    return {
        "chosen_options": [choice],
        "params_input": params,
        "responded_by_user": {"id": "ana", "name": "Ana"},
        "timedout": False,
    }


def test_approve_names_the_rejected_items_and_ignores_a_refill() -> None:
    found = rules.batch_verdict(answer("Approve", reject=["b", "c", "b"], refill={"a": "x"}), {"a", "b", "c"})
    assert (found.choice, found.reject, found.refill, found.by) == ("Approve", ("b", "c"), {}, "Ana")
    # A form may send the keys as text: one per line or comma-separated.
    assert rules.batch_verdict(answer("Approve", reject="b,\nc"), {"b", "c"}).reject == ("b", "c")
    assert rules.batch_verdict(answer("Approve", reject=None), {"b"}).reject == ()


def test_refill_takes_prompts_by_key_as_an_object_or_its_json() -> None:
    pending = {"a", "b"}
    assert rules.batch_verdict(answer("Re-fill", refill={"a": " new "}), pending).refill == {"a": "new"}
    assert rules.batch_verdict(answer("Re-fill", refill='{"b": "y"}'), pending).refill == {"b": "y"}
    assert rules.batch_verdict(answer("Re-fill", refill={"a": "x"}, reject=["b"]), pending).reject == ()


@pytest.mark.parametrize(
    ("event", "said"),
    [
        (answer("Approve", reject=["zz"]), "not under review: 'zz'"),
        (answer("Re-fill", refill={"zz": "x"}), "not under review: 'zz'"),
        (answer("Re-fill"), "must name at least one item"),
        (answer("Re-fill", refill={"a": ""}), "gives no prompt"),
        (answer("Re-fill", refill="not json"), "is not a JSON object"),
        (answer("Approve", reject={"a": 1}), "must be a list of item keys"),
    ],
)
def test_an_answer_that_cannot_be_applied_says_why(event: dict[str, Any], said: str) -> None:
    with pytest.raises(rules.ReviewAnswerUnreadable, match=said):
        rules.batch_verdict(event, {"a"})


def test_a_full_rejection_names_who_the_round_and_the_note() -> None:
    found = rules.batch_verdict(answer("Reject", note="off"), {"a"})
    assert rules.batch_rejection(found, 2, 5) == (
        "The batch was rejected by Ana in review round 2: off. None of its 5 staged outputs was stored."
    )
    timed_out = rules.batch_verdict({**answer("Reject"), "responded_by_user": None, "timedout": True}, set())
    assert "rejected by the review's timeout in review round 1 (no note)" in rules.batch_rejection(
        timed_out, 1, 1
    )


def test_the_form_offers_a_note_the_keys_to_reject_and_the_prompts_to_refill() -> None:
    form = rules.batch_params()
    assert set(form) == {"note", "reject", "refill"}
    assert (form["reject"]["value"], form["refill"]["value"]) == ([], {})


def test_outputs_are_staged_inside_output_path_apart_per_task_instance() -> None:
    one = journal_root("s3://b/out/", "dag", "run", "task", -1).rsplit("/", 1)[-1]
    other = journal_root("s3://b/out/", "dag", "run2", "task", -1).rsplit("/", 1)[-1]
    assert rules.staging_root("s3://b/out/", one) == f"s3://b/out/.eachlabs-review/{one}"
    assert one != other


def batch_view(tmp_path: Path, rows: list[dict[str, Any]], state: str = "awaiting_input") -> Any:
    from airflow_provider_eachlabs.plugin.authority import Authority
    from airflow_provider_eachlabs.plugin.records import TaskView

    (tmp_path / "eachlabs-results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    view = TaskView("dag", "run", "fill_items", -1, state, 1, "FluxFillBatchOperator", None, None)
    view.batch = {"items": len(rows), "model": "flux-fill-pro"}
    view.outcome = {"status": "awaiting review", "review_round": 1, "max_review_rounds": 3, "batch": True}
    view.authority = Authority("eachlabs_default", f"{tmp_path}/", None)
    return view


def staged_rows(tmp_path: Path, keys: list[str]) -> list[dict[str, Any]]:
    name = journal_root(f"{tmp_path}/", "dag", "run", "fill_items", -1).rsplit("/", 1)[-1]
    staging = Path(rules.staging_root(str(tmp_path), name))
    staging.mkdir(parents=True)
    rows = []
    for key in keys:
        (staging / f"{key}.png").write_bytes(SCENE.read_bytes())
        rows.append(
            {"key": key, "status": "success", "stored_path": str(staging / f"{key}.png"), "review": "pending"}
        )
    return rows


def test_the_batch_tab_shows_the_staged_grid_with_a_reject_box_and_a_prompt_per_item(tmp_path: Path) -> None:
    from airflow_provider_eachlabs.plugin.app import render_task_page, template_environment

    view = batch_view(tmp_path, staged_rows(tmp_path, ["sofa", "lamp"]))
    page = render_task_page(template_environment(), view, "/eachlabs/ti/dag/run/fill_items", "n0nce", "/ui")
    assert "Review (round 1 of at most 3)" in page and 'id="staged">2<' in page and 'id="stored">0<' in page
    for key in ("sofa", "lamp"):
        assert f'name="reject" value="{key}"' in page and f'name="refill" data-key="{key}"' in page
        assert f"/eachlabs/ti/dag/run/fill_items/batch/{key}?map_index=-1&amp;thumb=true" in page
    assert '"/ui/api/v2/dags/dag/dagRuns/run/taskInstances/fill_items/-1/hitlDetails"' in page
    assert '<script nonce="n0nce">' in page and "params_input" in page
    # Once answered, there is no form.
    view.state = "running"
    assert 'id="review-form"' not in render_task_page(template_environment(), view, "/b", "n", "/ui")


def test_a_staged_output_is_served_from_the_staging_folder_only(tmp_path: Path) -> None:
    from airflow_provider_eachlabs.plugin.images import Unavailable, batch_picture

    (row,) = staged_rows(tmp_path, ["sofa"])
    view = batch_view(tmp_path, [row])
    assert batch_picture(view, row, thumbnail=False).content == SCENE.read_bytes()
    (tmp_path / "elsewhere.png").write_bytes(SCENE.read_bytes())
    (tmp_path / ".eachlabs-batch").mkdir()
    (tmp_path / ".eachlabs-batch" / "x.png").write_bytes(SCENE.read_bytes())
    for forged in (str(tmp_path / "elsewhere.png"), str(tmp_path / ".eachlabs-batch" / "x.png")):
        with pytest.raises(Unavailable, match="is not inside the task's output_path"):
            batch_picture(view, {**row, "stored_path": forged}, thumbnail=False)
    # Without the review mark, a file in the staging folder is not served either (not directly inside).
    with pytest.raises(Unavailable, match="is not inside the task's output_path"):
        batch_picture(view, {"key": "sofa", "stored_path": row["stored_path"]}, thumbnail=False)
