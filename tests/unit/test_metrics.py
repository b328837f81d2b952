"""The provider's metrics: their names, types and values as Airflow's ``Stats`` receives them, the
once-per-prediction guard, and the 429s counted in the one retry layer. A fake ``Stats`` records every
call; tests/e2e/test_metrics.py checks the same against a real Airflow and a real UDP listener."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_eachlabs import metrics, retrying
from airflow_provider_eachlabs.api import Prediction
from airflow_provider_eachlabs.exceptions import EachlabsRateLimitError
from airflow_provider_eachlabs.results import report_end, report_success, report_timeout
from airflow_provider_eachlabs.settings import EachlabsSettings

TAGS = {"dag_id": "fills", "task_id": "fill"}


class FakeStats:
    """Airflow's ``Stats`` as the provider calls it: each call kept as (kind, name, value, tags)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str] | None]] = []

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("incr", stat, count, tags))

    def timing(self, stat: str, dt: Any, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("timing", stat, dt, tags))

    def counts(self) -> Counter[str]:
        """The sum of every counter, by name."""
        total: Counter[str] = Counter()
        for kind, name, value, _ in self.calls:
            if kind == "incr":
                total[name] += value
        return total

    def names(self) -> list[str]:
        return [name for _, name, _, _ in self.calls]


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> FakeStats:
    fake = FakeStats()
    monkeypatch.setattr(metrics, "_stats", lambda: fake)
    return fake


def ended(status: str, error_code: str | None = None, **figures: Any) -> Prediction:
    output = {"error_code": error_code} if error_code else "https://cdn.example/o.png"
    return Prediction(id="p-1", status=status, output=output, metrics=figures)


def test_a_success_counts_once_with_its_cost_in_micro_dollars_and_its_predict_time(stats: FakeStats):
    metrics.ended(ended("success", cost=0.05, predict_time=8.25), TAGS)

    assert stats.calls == [
        ("incr", "eachlabs.predictions.succeeded", 1, TAGS),
        ("incr", "eachlabs.cost_micro_usd", 50_000, TAGS),
        ("timing", "eachlabs.predict_time", timedelta(seconds=8.25), TAGS),
    ]


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("CONTENT_POLICY_VIOLATION", "eachlabs.predictions.failed.content_policy"),
        ("INVALID_IMAGE", "eachlabs.predictions.failed.input"),
        ("PROVIDER_UNAVAILABLE", "eachlabs.predictions.failed.transient"),
        ("SOMETHING_NEW", "eachlabs.predictions.failed.unknown"),
        (None, "eachlabs.predictions.failed.unknown"),
    ],
)
def test_a_failure_is_named_by_its_cause(stats: FakeStats, code: str | None, name: str):
    metrics.ended(ended("failed", code), TAGS)

    assert stats.calls == [("incr", name, 1, TAGS)]


def test_cancelled_timed_out_bought_reused_and_429_each_have_their_counter(stats: FakeStats):
    metrics.ended(ended("cancelled", cost=0.01), None)
    metrics.timed_out(TAGS)
    metrics.bought(TAGS)
    metrics.reused(TAGS)
    metrics.rate_limited(TAGS)

    assert stats.calls == [
        ("incr", "eachlabs.predictions.cancelled", 1, None),
        ("incr", "eachlabs.cost_micro_usd", 10_000, None),
        ("incr", "eachlabs.predictions.failed.timeout", 1, TAGS),
        ("incr", "eachlabs.predictions.bought", 1, TAGS),
        ("incr", "eachlabs.predictions.reused", 1, TAGS),
        ("incr", "eachlabs.rate_limited", 1, TAGS),
    ]


@pytest.mark.parametrize("cost", [None, "0.05", -1, float("nan"), True, 0])
def test_a_cost_that_is_no_amount_is_left_out(stats: FakeStats, cost: Any):
    metrics.ended(ended("success", cost=cost), TAGS)

    assert stats.names() == ["eachlabs.predictions.succeeded"]


def test_a_running_prediction_counts_nothing(stats: FakeStats):
    metrics.ended(ended("processing", cost=0.05), TAGS)

    assert stats.calls == []


def test_a_failing_backend_never_fails_the_task(monkeypatch: pytest.MonkeyPatch):
    def broken() -> Any:
        raise OSError("no route to the StatsD host")

    monkeypatch.setattr(metrics, "_stats", broken)
    metrics.bought(TAGS)
    metrics.ended(ended("success", cost=0.05, predict_time=1.0), TAGS)


def test_task_tags_are_the_dag_and_task_as_airflow_tags_its_own():
    class TI:
        dag_id, task_id, run_id = "fills", "group.fill", "manual__1"

    assert metrics.task_tags(TI()) == {"dag_id": "fills", "task_id": "group.fill"}
    assert metrics.task_tags(None) == {}


def test_the_public_stats_of_this_airflow_takes_the_calls_the_provider_makes():
    """Not the fake: Airflow's own ``Stats`` (no backend configured) accepts each call as made."""
    from airflow.sdk.observability.stats import Stats

    Stats.incr(metrics.BOUGHT, 1, tags=TAGS)
    Stats.timing(metrics.PREDICT_TIME, timedelta(seconds=1.5), tags=TAGS)


# --- once per prediction -----------------------------------------------------------------------------


class TI:
    dag_id, task_id = "fills", "fill"


class Store(dict[str, Any]):
    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self[key] = json.loads(json.dumps(value))


def a_try(store: Store) -> dict[str, Any]:
    """A try of one task instance: its own context, the task instance's store."""
    return {"ti": TI(), "task_state_store": store}


def test_an_end_is_counted_by_the_first_try_that_sees_it_and_by_no_later_one(stats: FakeStats):
    store = Store()
    log = logging.getLogger("test")
    success = ended("success", cost=0.05, predict_time=2.0)

    report_success(a_try(store), success, log)
    report_success(a_try(store), success, log)  # a retry re-attached to it (its store failed)

    assert stats.counts() == Counter({"eachlabs.predictions.succeeded": 1, "eachlabs.cost_micro_usd": 50_000})
    assert [tags for *_, tags in stats.calls] == [TAGS, TAGS, TAGS]


def test_a_failure_and_a_timeout_are_counted_once_too(stats: FakeStats):
    store = Store()
    rejected = Prediction(id="p-2", status="failed", output={"error_code": "NSFW_CONTENT"})

    report_end(a_try(store), rejected)
    report_end(a_try(store), rejected)  # a later try refuses the same rejected input
    report_timeout(a_try(store), "p-3")
    report_timeout(a_try(store), "p-3")

    assert stats.names() == [
        "eachlabs.predictions.failed.content_policy",
        "eachlabs.predictions.failed.timeout",
    ]


# --- 429s, where they are met ------------------------------------------------------------------------


SETTINGS = EachlabsSettings(
    host="https://api.example", api_key="k", timeout=5.0, max_retries=3, backoff_initial=0.0, backoff_max=0.0
)


def test_every_429_met_is_counted_with_the_tasks_tags(stats: FakeStats):
    answers = [EachlabsRateLimitError("HTTP 429", status_code=429, retry_after=0)] * 2 + ["done"]

    def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    log = logging.getLogger("test")
    done = retrying.call_with_retries(attempt, SETTINGS, resendable=False, log=log, metric_tags=TAGS)
    assert done == "done"
    assert stats.calls == [("incr", "eachlabs.rate_limited", 1, TAGS)] * 2


def test_a_429_handed_to_a_pacer_is_counted_once(stats: FakeStats):
    def attempt() -> str:
        raise EachlabsRateLimitError("HTTP 429", status_code=429, retry_after=1)

    with pytest.raises(EachlabsRateLimitError):
        retrying.call_with_retries(
            attempt, SETTINGS, resendable=False, log=logging.getLogger("t"), rate_limits=False
        )
    assert stats.calls == [("incr", "eachlabs.rate_limited", 1, None)]
