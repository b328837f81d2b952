"""The spend ledger: every prediction a task bought, written where the fills page adds it up.

Why ``task_state_store`` and why these keys: a task can write nothing else that outlives its try and
that the api-server can read (XCom is cleared at every try), and the page must never load a row per
prediction to add them up. So the ledger is append-only: a prediction's entries are written once,
under a key of their own, and the api-server folds each new row into a running summary as it
appears (``plugin.spend``), never reading an old one again.

- ``eachlabs_ledger/bought/<id>`` when a task buys (or finds) a prediction: the day it counts in.
- ``eachlabs_ledger/ended/<id>`` when the task sees its end: status, cost (failed and cancelled
  predictions cost money too), predict time, and the buying time, so the end counts in the same day.
- ``eachlabs_ledger/batch/<try>`` when a batch try ends: the predictions its journal saw bought and
  ended since the previous entry (a batch of thousands writes one row a try, not two an item).

A prediction bought and never seen to end (its task was marked failed while it waited, or it was
submitted without waiting) stays *open* on the page, where the API's own history settles it.
Writing is never worth a failed task: an error is logged and dropped. Airflow 3.2 has no
``task_state_store``; there the page falls back to the tasks' XCom outcomes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs.api import non_negative_number

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction

log = logging.getLogger(__name__)

PREFIX = "eachlabs_ledger/"
BOUGHT = PREFIX + "bought/"
ENDED = PREFIX + "ended/"
BATCH = PREFIX + "batch/"
# The batch's own running total, read back by its next try to write only what is new.
BATCH_TOTAL_KEY = "eachlabs_ledger_batch_total"
VERSION = 1
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
# How a task got a prediction it records as bought: it sent the create, or it found the one a try
# that died before recording it had sent.
HOW_BOUGHT, HOW_FOUND = "bought", "found"


def micro_usd(cost: Any) -> int | None:
    """A cost in whole micro-dollars: sums of floats drift, and the page must equal the API's bill."""
    amount = non_negative_number(cost)
    return round(amount * 1_000_000) if amount is not None else None


def time_bin(seconds: float) -> int:
    """The predict-time bin of ``seconds``: a quarter of a power of two wide (a bin's middle is within
    9% of any time in it), so percentiles over millions of predictions need a few dozen counters."""
    return max(-28, min(60, math.floor(4 * math.log2(max(seconds, 0.01)))))


def bin_seconds(number: int) -> float:
    """The middle of a predict-time bin, in seconds."""
    return round(2 ** ((number + 0.5) / 4), 2)


def end_status(prediction: Prediction) -> str | None:
    if prediction.succeeded:
        return SUCCEEDED
    if prediction.failed:
        return FAILED
    if prediction.cancelled:
        return CANCELLED
    return None


def record_bought(
    context: Context | Mapping[str, Any],
    prediction_id: str,
    model: str | None,
    how: str,
    at: float | None = None,
    conn_id: str | None = None,
) -> None:
    """A task bought (or found) ``prediction_id``: count it today, open until its end is recorded."""
    ti = context.get("ti")
    _write(
        context,
        BOUGHT + prediction_id,
        {
            "v": VERSION,
            "conn": _conn(context, conn_id),
            "max_cost": _max_cost(context),
            "at": at if at is not None else time.time(),
            "model": model,
            "how": how,
            "try": getattr(ti, "try_number", None),
        },
    )


def record_ended(
    context: Context | Mapping[str, Any],
    prediction: Prediction,
    bought_at: float | None,
    conn_id: str | None = None,
) -> None:
    """The end of a prediction this task instance recorded as bought, with what the API said it cost."""
    ended = end_status(prediction)
    if ended is None:
        return
    ti = context.get("ti")
    _write(
        context,
        ENDED + prediction.id,
        {
            "v": VERSION,
            "conn": _conn(context, conn_id),
            "bought_at": bought_at,
            "status": ended,
            "cause": prediction.failure_cause.value if prediction.failed else None,
            "cost": micro_usd(prediction.metrics.get("cost")),
            "predict_time": non_negative_number(prediction.metrics.get("predict_time")),
            "try": getattr(ti, "try_number", None),
        },
    )


def record_timed_out(
    context: Context | Mapping[str, Any], prediction_id: str, bought_at: float | None
) -> None:
    """A prediction the task's timeout cancelled: its cost is not known here (the page settles it)."""
    ti = context.get("ti")
    _write(
        context,
        ENDED + prediction_id,
        {
            "v": VERSION,
            "conn": _conn(context),
            "bought_at": bought_at,
            "status": CANCELLED,
            "cause": "timeout",
            "cost": None,
            "predict_time": None,
            "try": getattr(ti, "try_number", None),
        },
    )


def record_batch_try(context: Context | Mapping[str, Any], tally: Mapping[str, Any]) -> None:
    """What a batch's journal counted up to now, less what earlier tries of the task already wrote.

    ``tally`` is cumulative over the journal's life (``batch.journal``): ``bought``, ``succeeded``,
    ``failed``, ``cancelled``, ``cost`` (micro-USD), ``times`` (successes by ``time_bin``), and
    ``journal``, which names the journal (a new one after a batch that ended whole starts from zero),
    and ``ids``, the predictions bought in order; the task's running total keeps only how many."""
    store = context.get("task_state_store")
    if store is None:
        return
    ti = context.get("ti")
    try:
        earlier = store.get(BATCH_TOTAL_KEY)
    except Exception as error:
        log.warning("Could not read the batch's spend ledger total: %s", error)
        return
    previous = (
        earlier if isinstance(earlier, Mapping) and earlier.get("journal") == tally.get("journal") else {}
    )
    entry: dict[str, Any] = {
        "v": VERSION,
        "conn": _conn(context),
        "max_cost": _max_cost(context),
        "at": time.time(),
        "try": getattr(ti, "try_number", None),
    }
    for name in ("bought", SUCCEEDED, FAILED, CANCELLED, "cost"):
        entry[name] = max(0, _int(tally.get(name)) - _int(previous.get(name)))
    now, then = _bins(tally.get("times")), _bins(previous.get("times"))
    entry["times"] = {
        name: count - then.get(name, 0) for name, count in now.items() if count > then.get(name, 0)
    }
    ids = [i for i in tally.get("ids", []) if isinstance(i, str)]
    entry["ids"] = ids[_int(previous.get("ids")) :]
    if not any(entry[name] for name in ("bought", SUCCEEDED, FAILED, CANCELLED)):
        return
    number = getattr(ti, "try_number", None) or 0
    total = {**tally, "ids": len(ids)}
    # The total first: a try that dies between the two writes loses an entry rather than doubling it.
    if _write(context, BATCH_TOTAL_KEY, total):
        _write(context, f"{BATCH}{number}", entry)


def _max_cost(context: Context | Mapping[str, Any]) -> float | None:
    """The task's ``max_cost`` as rendered (a template renders to text), for the fills page to show
    beside what the DAG spent; None without one."""
    given = getattr(context.get("task"), "max_cost", None)
    try:
        return non_negative_number(float(given)) if given not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _conn(context: Context | Mapping[str, Any], conn_id: str | None = None) -> str | None:
    """The connection the prediction was bought with: the operator's, or the hook's in a ``@task``."""
    found = conn_id or getattr(context.get("task"), "eachlabs_conn_id", None)
    return found if isinstance(found, str) else None


def _bins(value: Any) -> dict[str, int]:
    return {str(k): _int(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _write(context: Context | Mapping[str, Any], key: str, value: dict[str, Any]) -> bool:
    store = context.get("task_state_store")
    if store is None:
        return False
    retention: Any = None  # Airflow 3.2, where only a test's stand-in store can be here
    with contextlib.suppress(ImportError):
        from airflow.sdk.execution_time.context import NEVER_EXPIRE as retention
    try:
        store.set(key, value, retention=retention)
    except Exception as error:  # the ledger is never worth a failed task
        log.warning("Could not write %s to the spend ledger: %s", key, error)
        return False
    return True
