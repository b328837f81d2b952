"""What the provider's tasks leave in XCom: the same small shape from every operator and the sensor.

Ids, URLs, paths and numbers, never image bytes: XCom lives in the metadata database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction

# Pushed right after the create, before any waiting, so links and pages work while the task waits.
PREDICTION_ID_KEY = "prediction_id"
PREDICTION_URL_KEY = "prediction_url"
# What the task asked for (model, input, connection, which try and how): pushed with the id, read by
# the UI plugin's task page.
REQUEST_KEY = "eachlabs_request"
# How the task's prediction ended, success or not: pushed as the task ends, read by the UI plugin.
OUTCOME_KEY = "eachlabs_outcome"
# A batch task's plan (model, connection, results manifest, item count): pushed before its first
# create, so the UI plugin can follow the batch; its counts and spend go to OUTCOME_KEY at the end.
BATCH_KEY = "eachlabs_batch"
# A model's output that is not a file (an object, a list, text) is kept in XCom up to this size.
OUTPUT_XCOM_MAX_BYTES = 4096
# The input shown on the task page is kept up to this size (a prompt is small; a document is not).
INPUT_XCOM_MAX_BYTES = 16384


def prediction_summary(prediction: Prediction) -> dict[str, Any]:
    """The small result every task of this provider returns.

    ``output_urls`` lists every file the model made. An output that is more than one URL (an object,
    text) is kept as ``output`` when its JSON is at most ``OUTPUT_XCOM_MAX_BYTES``; beyond that,
    ``output_note`` says where to read it.
    """
    metrics = prediction.metrics
    summary: dict[str, Any] = {
        "prediction_id": prediction.id,
        "status": prediction.status,
        "output_url": prediction.output_url,
        "output_urls": prediction.output_urls,
        "predict_time": metrics.get("predict_time"),
        "cost": metrics.get("cost"),
        "metrics": metrics,
    }
    output = prediction.output
    if output is not None and not (isinstance(output, str) and output == prediction.output_url):
        size = len(json.dumps(output, default=str).encode())
        if size <= OUTPUT_XCOM_MAX_BYTES:
            summary["output"] = output
        else:
            summary["output_note"] = (
                f"the output is {size} bytes of JSON, more than the {OUTPUT_XCOM_MAX_BYTES} kept in XCom: "
                f"read it with EachlabsHook().get_prediction({prediction.id!r}).output"
            )
    return summary


def report_success(context: Context, prediction: Prediction, log: Any) -> None:
    """Log a success with its cost once per prediction, not once per try, and count it in the metrics
    and the spend ledger.

    A try that re-attaches to a prediction an earlier try already reported (its store failed, say)
    says so instead, so that summing the costs in the logs or the metrics counts each prediction once.
    """
    first = _first_report(context, prediction.id, prediction.metrics.get("cost"))
    if first is None:
        log.info("Prediction %s succeeded (its cost was reported by an earlier try)", prediction.id)
        return
    metrics = prediction.metrics
    log.info(
        "Prediction %s succeeded (predict time %ss, cost %s USD)",
        prediction.id,
        metrics.get("predict_time", "unreported"),
        metrics.get("cost", "unreported"),
    )
    _count_end(context, prediction, first)


def report_end(context: Context, prediction: Prediction) -> None:
    """Count a failed or cancelled prediction (and its cost) in the metrics and the spend ledger, once
    per prediction: the guard ``report_success`` uses, so a later try that refuses or re-reads it
    counts nothing."""
    first = _first_report(context, prediction.id, prediction.metrics.get("cost"))
    if first is not None:
        _count_end(context, prediction, first)


def report_timeout(context: Context, prediction_id: str) -> None:
    """Count a prediction the task's timeout cancelled, once per prediction."""
    first = _first_report(context, prediction_id)
    if first is not None:
        from airflow_provider_eachlabs import ledger
        from airflow_provider_eachlabs import metrics as emit

        emit.timed_out(emit.task_tags(context["ti"]))
        if first.bought_here:
            ledger.record_timed_out(context, prediction_id, first.bought_at)


@dataclass(frozen=True)
class _FirstReport:
    """The end of a prediction no earlier try reported: whether a try of this task instance bought
    (or found) it, and when it was bought, if known. A sensor watching another task's prediction
    counts its end in the metrics, never in the ledger, where the buyer counts it."""

    bought_here: bool
    bought_at: float | None


def _count_end(context: Context, prediction: Prediction, first: _FirstReport) -> None:
    from airflow_provider_eachlabs import ledger
    from airflow_provider_eachlabs import metrics as emit

    emit.ended(prediction, emit.task_tags(context["ti"]))
    if first.bought_here:
        ledger.record_ended(context, prediction, first.bought_at)


def _first_report(context: Context, prediction_id: str, cost: Any = None) -> _FirstReport | None:
    """None when a try of this task instance reported the end of ``prediction_id`` already; else it
    is marked reported (and saved) before the caller says anything: a try that dies between the two
    leaves the end unreported rather than reported twice. A prediction the task instance bought is
    counted with its ``cost`` (None: unknown) in the same save, for ``max_cost`` (``budget``)."""
    from airflow_provider_eachlabs.ledger import micro_usd
    from airflow_provider_eachlabs.record import TaskRecord

    record = TaskRecord.load(context)
    if prediction_id in record.reported_ids:
        return None
    record.reported_ids.append(prediction_id)
    current = prediction_id == record.prediction_id
    bought_here = current or prediction_id in record.finished_ids
    if bought_here:
        record.spend(prediction_id, micro_usd(cost))
    record.save(context)
    return _FirstReport(bought_here=bought_here, bought_at=record.started_at if current else None)


def small_json(value: Any, limit: int) -> Any:
    """``value`` when its JSON fits in ``limit`` bytes, else None: XCom lives in the metadata database."""
    return value if len(json.dumps(value, default=str).encode()) <= limit else None


def request_record(
    *,
    prediction_id: str,
    model: str | None,
    conn_id: str,
    input: Any,
    how: str,
    why: str,
    try_number: int | None,
) -> dict[str, Any]:
    """The ``eachlabs_request`` XCom: what was asked, of which connection, and how this try got it
    (bought, re-used, found or refused) and why."""
    return {
        "prediction_id": prediction_id,
        "model": model,
        "conn_id": conn_id,
        "input": small_json(input, INPUT_XCOM_MAX_BYTES),
        "how": how,
        "why": why,
        "try_number": try_number,
    }


def success_outcome(result: dict[str, Any]) -> dict[str, Any]:
    """The ``eachlabs_outcome`` XCom of a success: the figures the overview page adds up."""
    keys = ("prediction_id", "model", "status", "cost", "predict_time", "output_url", "stored_path", "sha256")
    return {"ok": True, **{key: result.get(key) for key in keys}}


def batch_outcome(summary: dict[str, Any], *, model: str, ok: bool) -> dict[str, Any]:
    """The ``eachlabs_outcome`` XCom of a batch task: one row on the overview page that counts for
    all its fills."""
    return {
        "ok": ok,
        "batch": True,
        "model": model,
        "status": "success" if ok else "failed",
        "fills": summary["items"] - summary["invalid"],
        "succeeded": summary["succeeded"],
        "failed": summary["failed"],
        "cost": summary["spend"],
        "p50_predict_time": summary["p50_predict_time"],
        "results_path": summary["results_path"],
    }


def failure_outcome(prediction_id: str | None, model: str | None, error: BaseException) -> dict[str, Any]:
    """The ``eachlabs_outcome`` XCom of a task that failed: after its prediction existed (with what the
    API billed for it), or before it bought one (``prediction_id`` None, so the tab can say why)."""
    from airflow_provider_eachlabs import exceptions

    status = {
        exceptions.PredictionFailed: "failed",
        exceptions.PredictionCancelled: "cancelled",
        exceptions.PredictionTimeout: "timeout",
    }.get(type(error), "error")
    return {
        "ok": False,
        "prediction_id": prediction_id,
        "model": model,
        "status": status,
        "error_class": type(error).__name__,
        "error_code": getattr(error, "error_code", None),
        "error_message": str(error)[:1000],
        "request_id": getattr(error, "request_id", None),
        "final": exceptions.is_final(error),
        "cost": getattr(error, "cost", None),
    }


@contextmanager
def outcome_reported(
    context: Context, prediction_id: Callable[[], str | None], model: str | None
) -> Iterator[None]:
    """A task that fails leaves ``eachlabs_outcome`` saying how and why, whether its prediction exists
    or it failed before buying one (a wrong key, bad input, an output place it cannot write).

    ``prediction_id`` is asked when the error happens (the task learns the id as it goes). Only the
    provider's own errors are reported: anything else is a bug the task log shows.
    """
    try:
        yield
    except Exception as error:
        from airflow_provider_eachlabs.exceptions import EachlabsError

        if isinstance(error, EachlabsError):
            context["ti"].xcom_push(key=OUTCOME_KEY, value=failure_outcome(prediction_id(), model, error))
        raise
