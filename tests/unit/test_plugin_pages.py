"""What the UI plugin's pages compute from recorded outcomes: the figures a pipeline owner reads at
the top of the fills page, and the advice a failed task's tab gives."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_eachlabs.plugin.advice import advice
from airflow_provider_eachlabs.plugin.records import Row, _one_per_prediction, figures

AT = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


def row(prediction_id: str | None, task: str = "fill", **outcome: Any) -> Row:
    return Row("dag", "run", task, -1, AT, {"prediction_id": prediction_id, **outcome})


def test_figures_add_up_fills_success_spend_and_predict_time() -> None:
    rows = [
        row("a", ok=True, cost=0.05, predict_time=2.0),
        row("b", ok=True, cost=0.05, predict_time=4.0),
        row("c", ok=False, status="failed", cost=None, predict_time=None),
        row("d", ok=True, cost=True, predict_time=10.0),  # a bool is no cost
    ]
    found = figures(rows)
    assert (found.bought, found.succeeded, found.spend) == (4, 3, 0.1)
    assert found.success_rate == 0.75
    assert found.p50_predict_time == 4.0
    assert found.p95_predict_time == pytest.approx(9.4)


def test_no_rows_have_no_rate_and_no_percentiles() -> None:
    found = figures([])
    assert (found.bought, found.success_rate, found.p50_predict_time, found.p95_predict_time) == (
        0,
        None,
        None,
        None,
    )


def test_a_prediction_seen_by_two_tasks_counts_once_as_its_newest_row() -> None:
    newest_first = [row("a", task="sense", ok=True, cost=0.05), row("a", task="submit", ok=True, cost=0.05)]
    kept = _one_per_prediction([*newest_first, row(None, ok=False), row(None, ok=False)])
    assert [r.task_id for r in kept] == ["sense", "fill", "fill"]
    assert figures(kept).spend == 0.05


@pytest.mark.parametrize(
    ("outcome", "says"),
    [
        ({"status": "failed", "error_code": "provider_rejected"}, "content policy rejected the input"),
        ({"status": "failed", "error_code": "INVALID_IMAGE"}, "The model rejected the input"),
        ({"status": "failed", "error_code": "PROVIDER_TIMEOUT"}, "passing reason"),
        ({"status": "failed", "error_code": "SOMETHING_NEW"}, "without a reason the provider knows"),
        ({"status": "timeout", "error_class": "PredictionTimeout"}, "Raise timeout"),
        ({"status": "error", "error_class": "EachlabsStorageError"}, "stores it without buying again"),
    ],
)
def test_a_failed_tab_says_what_to_do(outcome: dict[str, Any], says: str) -> None:
    assert says in advice(outcome)


def test_a_batch_task_counts_for_each_of_its_fills() -> None:
    batch = row(
        None, task="fill_all", ok=False, batch=True, fills=200, succeeded=198, cost=9.9, p50_predict_time=9.0
    )
    found = figures([batch, row("a", ok=True, cost=0.05, predict_time=2.0)])
    assert (found.bought, found.succeeded, found.spend) == (201, 199, 9.95)
    assert found.p50_predict_time == 9.0  # the batch's median stands for each fill it stored
    assert batch.predict_time == 9.0 and batch.is_batch


def test_an_unreadable_output_is_a_reason_full_size_and_a_drawn_no_image_as_a_thumbnail() -> None:
    from airflow_provider_eachlabs.plugin.app import image_answer
    from airflow_provider_eachlabs.plugin.images import Unavailable

    def gone() -> Any:
        raise Unavailable("after: the output URL <https://x/y.png> answered 404")

    full = image_answer(gone, thumb=False)
    assert full.status_code == 404
    assert full.body == b"after: the output URL <https://x/y.png> answered 404"
    thumbnail = image_answer(gone, thumb=True)
    assert thumbnail.status_code == 200 and thumbnail.media_type == "image/svg+xml"
    assert thumbnail.headers["cache-control"] == "no-store"  # readable again later, drawn then
    svg = bytes(thumbnail.body).decode()
    assert "<title>after: the output URL &lt;https://x/y.png&gt; answered 404</title>" in svg
    assert "no image</text>" in svg


def _view(state: str, **recorded: Any) -> Any:
    from airflow_provider_eachlabs.plugin.authority import Authority
    from airflow_provider_eachlabs.plugin.records import TaskView

    view = TaskView("dag", "run", "fill", -1, state, 1, "FluxFillOperator", None, None)
    view.authority = Authority("eachlabs_default", recorded.pop("output_path", None), None)
    for name, value in recorded.items():
        setattr(view, name, value)
    return view


def _page(view: Any) -> str:
    from airflow_provider_eachlabs.plugin.app import render_task_page, template_environment

    return render_task_page(template_environment(), view, "/eachlabs/ti/dag/run/fill", "n")


def test_a_task_that_failed_before_buying_says_why_and_what_to_do() -> None:
    outcome = {
        "ok": False,
        "status": "error",
        "error_class": "EachlabsAuthError",
        "error_message": "HTTP 401: invalid API key (request id req_1)",
        "request_id": "req_1",
    }
    page = _page(_view("failed", outcome=outcome))
    assert "it failed before buying one, and nothing was billed" in page
    assert "The task failed before buying a prediction (EachlabsAuthError)" in page
    assert "HTTP 401: invalid API key" in page and "check it in the Eachlabs dashboard" in page


def test_a_running_fill_says_where_its_output_will_be_stored() -> None:
    running = _view("deferred", prediction_id="pred_1", output_path="/data/fills/")
    assert "will be stored in /data/fills/" in _page(running)
    named = _view("running", prediction_id="pred_1", output_path="/data/fills/sofa.png")
    assert "will be stored at /data/fills/sofa.png" in _page(named)
    assert "not stored (no output_path)" in _page(_view("running", prediction_id="pred_1"))


def test_a_fill_marked_failed_while_waiting_does_not_say_it_has_no_output_yet() -> None:
    from airflow_provider_eachlabs.plugin.images import unrecorded

    stopped = _view("failed", prediction_id="pred_1", output_path="/data/fills/")
    assert unrecorded(stopped, "after") == (
        "the task stopped before its prediction finished (a task marked failed while it waits cancels "
        "its prediction)"
    )
    assert (
        unrecorded(_view("deferred", prediction_id="pred_1"), "after") == "the prediction has no output yet"
    )


def test_the_fills_page_counts_no_row_for_a_task_that_bought_nothing() -> None:
    from airflow_provider_eachlabs.plugin.records import bought_something

    assert bought_something({"ok": True, "prediction_id": "a", "cost": 0.05})
    assert bought_something({"ok": False, "batch": True, "fills": 3})
    assert not bought_something({"ok": False, "prediction_id": None, "error_class": "EachlabsAuthError"})


def test_a_fill_waiting_for_review_shows_the_form_that_answers_through_airflows_hitl_api() -> None:
    from airflow_provider_eachlabs.plugin.app import render_task_page, template_environment

    waiting = _view(
        "awaiting_input",
        prediction_id="pred_1",
        request={
            "input": {"prompt": "an empty meadow", "seed": 7, "guidance": 3, "image": "https://x/i.png"}
        },
        outcome={
            "status": "awaiting review",
            "prediction_id": "pred_1",
            "review_round": 2,
            "max_review_rounds": 3,
        },
    )
    page = render_task_page(template_environment(), waiting, "/eachlabs/ti/dag/run/fill", "n", "/ui")
    assert "Review (round 2 of at most 3)" in page and "Nothing is stored until this fill is approved" in page
    assert '"/ui/api/v2/dags/dag/dagRuns/run/taskInstances/fill/-1/hitlDetails"' in page
    assert (
        '<textarea name="prompt" rows="3">an empty meadow</textarea>' in page
        and 'name="seed" value="7"' in page
    )
    assert (
        'data-choice="Approve"' in page and 'data-choice="Reject"' in page and 'data-choice="Re-fill"' in page
    )
    assert '<script nonce="n">' in page  # the page's script runs under its Content-Security-Policy
    # Once answered (or for any other state), there is no form.
    answered = _view("scheduled", prediction_id="pred_1", outcome={"status": "awaiting review"})
    assert 'id="review-form"' not in render_task_page(template_environment(), answered, "/b", "n", "/ui")


def test_a_fill_waiting_for_review_is_no_failure_and_a_rejected_one_says_who_decided() -> None:
    waiting = _view(
        "awaiting_input", prediction_id="pred_1", outcome={"ok": False, "status": "awaiting review"}
    )
    assert 'class="failure"' not in _page(waiting)
    said = "The fill was rejected by Ana in review round 1: the crate. Prediction pred_1 was not stored."
    rejected = _view(
        "failed",
        prediction_id="pred_1",
        outcome={"ok": False, "status": "error", "error_class": "ReviewRejected", "error_message": said},
    )
    page = _page(rejected)
    assert "The fill was rejected in review" in page and "A reviewer rejected the fill" in page
    assert said in page
