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
    assert (found.fills, found.succeeded, found.spend) == (4, 3, 0.1)
    assert found.success_rate == 0.75
    assert found.p50_predict_time == 4.0
    assert found.p95_predict_time == pytest.approx(9.4)


def test_no_rows_have_no_rate_and_no_percentiles() -> None:
    found = figures([])
    assert (found.fills, found.success_rate, found.p50_predict_time, found.p95_predict_time) == (
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
    assert (found.fills, found.succeeded, found.spend) == (201, 199, 9.95)
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
