"""The provider's metrics, sent through Airflow's own pipeline (``[metrics]``: StatsD, Datadog or
OpenTelemetry, whichever the deployment configured).

Why a module of its own: every name and type is here once, so the README's table, the tests and the
call sites cannot drift apart. It only names and emits; *when* is the callers' business, and each
metric has one caller per event, at the place where the event is decided (see the README's "Metrics"
table): a prediction bought is counted where the create succeeded, its end and cost where the end
is recorded once per prediction. A metric is never worth a failed task or a second prediction: the
backend is imported when something is emitted (never when a DAG file imports an operator), and any
error it raises is dropped.

Tags: ``dag_id`` and ``task_id``, as Airflow tags its own task metrics; Airflow passes them on where
the backend takes tags (OpenTelemetry, Datadog, StatsD with ``statsd_influxdb_enabled``) and drops
them on plain StatsD. What must survive plain StatsD is in the name: why a prediction failed is a
short, closed list, so it is the last part of the name, not a tag.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_eachlabs.api import Prediction

log = logging.getLogger(__name__)

BOUGHT = "eachlabs.predictions.bought"
REUSED = "eachlabs.predictions.reused"
SUCCEEDED = "eachlabs.predictions.succeeded"
FAILED = "eachlabs.predictions.failed"  # + "." + cause: content_policy, input, transient, unknown, timeout
CANCELLED = "eachlabs.predictions.cancelled"
# Money as a counter of whole micro-dollars: a counter is what StatsD, Datadog and OpenTelemetry all
# sum per interval (a gauge keeps only the last value, a timer is summarised as percentiles), and
# Airflow's counters take whole numbers (its OpenTelemetry counter refuses a negative count, StatsD
# servers differ on fractions). $0.05 is 50000.
COST = "eachlabs.cost_micro_usd"
PREDICT_TIME = "eachlabs.predict_time"
RATE_LIMITED = "eachlabs.rate_limited"
TIMEOUT_CAUSE = "timeout"

Tags = Mapping[str, str]


def task_tags(ti: Any) -> dict[str, str]:
    """``dag_id`` and ``task_id`` of a task instance (or anything with them), as Airflow tags its own."""
    tags = {name: getattr(ti, name, None) for name in ("dag_id", "task_id")}
    return {name: str(value) for name, value in tags.items() if value}


def bought(tags: Tags | None) -> None:
    """A create succeeded: one prediction was bought (never for a prediction found or re-used)."""
    _incr(BOUGHT, 1, tags)


def reused(tags: Tags | None) -> None:
    """A later try (a retry, a clear) used a prediction an earlier one bought, instead of buying."""
    _incr(REUSED, 1, tags)


def rate_limited(tags: Tags | None) -> None:
    """The API answered 429."""
    _incr(RATE_LIMITED, 1, tags)


def ended(prediction: Prediction, tags: Tags | None) -> None:
    """A prediction's end: succeeded, failed (by cause) or cancelled, with its cost and predict time
    when the API gave them. Call once per prediction."""
    if prediction.succeeded:
        _incr(SUCCEEDED, 1, tags)
    elif prediction.failed:
        _incr(failed_name(prediction.failure_cause.value), 1, tags)
    elif prediction.cancelled:
        _incr(CANCELLED, 1, tags)
    else:
        return
    cost = _amount(prediction.metrics.get("cost"))
    if cost is not None and round(cost * 1_000_000) > 0:
        _incr(COST, round(cost * 1_000_000), tags)
    seconds = _amount(prediction.metrics.get("predict_time"))
    if seconds is not None:
        _timing(PREDICT_TIME, timedelta(seconds=seconds), tags)


def timed_out(tags: Tags | None) -> None:
    """A prediction did not end within the task's timeout and was cancelled by the provider."""
    _incr(failed_name(TIMEOUT_CAUSE), 1, tags)


def failed_name(cause: str) -> str:
    return f"{FAILED}.{cause.replace('-', '_')}"


def _amount(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok and value >= 0 else None


def _stats() -> Any:
    """Airflow's ``Stats`` (its public import for providers), configured by the process it runs in:
    the task runner and the triggerer each set it up from ``[metrics]``."""
    from airflow.sdk.observability.stats import Stats

    return Stats


def _incr(name: str, count: int, tags: Tags | None) -> None:
    try:
        _stats().incr(name, count, tags=dict(tags) if tags else None)
    except Exception as error:  # a metric is never worth a failed task
        log.debug("Could not emit metric %s: %s", name, error)


def _timing(name: str, value: timedelta, tags: Tags | None) -> None:
    try:
        _stats().timing(name, value, tags=dict(tags) if tags else None)
    except Exception as error:
        log.debug("Could not emit metric %s: %s", name, error)
