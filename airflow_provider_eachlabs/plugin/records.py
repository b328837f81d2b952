"""What the provider's tasks recorded, read back from the metadata database for the UI pages.

Everything comes from what the task itself wrote (its XCom and its ``task_state_store`` record),
addressed by dag, run, task and map index: a page never takes a prediction id or a URL from the
browser. That also makes the overview free of API calls, and it keeps working for runs whose
predictions the API has long forgotten. Runs in the api-server only.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs.plugin.authority import NO_AUTHORITY, Authority, task_authority
from airflow_provider_eachlabs.plugin.spend import Bucket, Figures
from airflow_provider_eachlabs.plugin.spend import figures as spend_figures
from airflow_provider_eachlabs.record import RECORD_KEY
from airflow_provider_eachlabs.results import BATCH_KEY, OUTCOME_KEY, PREDICTION_ID_KEY, REQUEST_KEY

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

RESULT_KEY = "return_value"
# Task states in which a prediction may still be running: the page then refreshes its live status.
WAITING_STATES = frozenset(
    {"scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule"}
)


@dataclass
class Attempt:
    """One try of the task and the prediction it had."""

    try_number: int | None
    prediction_id: str | None
    how: str
    state: str | None = None
    why: str = ""


@dataclass
class TaskView:
    """Everything the task page shows about one task instance."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int | None
    operator: str | None
    started: datetime | None
    ended: datetime | None
    prediction_id: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    # A batch task's plan (model, results manifest, output folder, item count); empty for one fill.
    batch: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    # The connection and the places the DAG gave the task: the only ones the api-server acts on.
    authority: Authority = NO_AUTHORITY

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def input(self) -> dict[str, Any]:
        value = self.request.get("input")
        return value if isinstance(value, dict) else {}

    @property
    def stored_path(self) -> str | None:
        return _text(self.outcome.get("stored_path") or self.result.get("stored_path"))

    @property
    def output_url(self) -> str | None:
        return _text(self.outcome.get("output_url") or self.result.get("output_url"))


def _prediction_id(value: Any) -> str | None:
    """A recorded prediction id that is a safe token (it goes into the API's URL path), else None."""
    from airflow_provider_eachlabs.api import check_prediction_id
    from airflow_provider_eachlabs.exceptions import EachlabsError

    try:
        return check_prediction_id(value)
    except EachlabsError:
        return None


def _text(value: Any) -> str | None:
    """A recorded string, or None for anything else a hostile XCom may hold in its place."""
    return value if isinstance(value, str) and value else None


def task_view(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskView | None:
    """The task instance and what it recorded, or None when there is no such task instance."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    ti = session.scalar(
        select(TaskInstance).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index,
        )
    )
    if ti is None:
        return None
    view = TaskView(
        dag_id,
        run_id,
        task_id,
        map_index,
        state=str(ti.state) if ti.state else None,
        try_number=ti.try_number,
        operator=ti.operator,
        started=ti.start_date,
        ended=ti.end_date,
    )
    xcoms = _xcoms(session, dag_id, run_id, task_id, map_index)
    prediction_id = xcoms.get(PREDICTION_ID_KEY)
    view.prediction_id = _prediction_id(prediction_id)
    for name, key in (
        ("request", REQUEST_KEY),
        ("outcome", OUTCOME_KEY),
        ("result", RESULT_KEY),
        ("batch", BATCH_KEY),
    ):
        value = xcoms.get(key)
        if isinstance(value, dict):
            setattr(view, name, value)
    view.attempts = _attempts(session, view)
    view.authority = task_authority(session, ti)
    return view


def _xcoms(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any]:
    from airflow.models.xcom import XComModel

    rows: Any = session.scalars(
        XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index)
    ).all()
    return {row.key: _value(row) for row in rows}


def _value(row: Any) -> Any:
    from airflow.models.xcom import XComModel

    value = XComModel.deserialize_value(row)
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _attempts(session: Session, view: TaskView) -> list[Attempt]:
    """Each try's prediction, from the task's record (Airflow 3.3+), with each try's final state.

    XCom keeps only the current try, so earlier tries come from ``task_state_store``, where the
    operator lists which prediction each try had, whether it bought it, re-used an earlier try's,
    found one a dead try had made or refused to buy again, and why. On Airflow 3.2 only the current
    try is known.
    """
    states = _try_states(session, view)
    record = _record(session, view)
    attempts = [
        Attempt(
            try_number=entry.get("try") if isinstance(entry.get("try"), int) else None,
            prediction_id=str(entry.get("prediction_id") or "") or None,
            how=str(entry.get("how") or "bought"),
            why=str(entry.get("why") or "")[:500],
        )
        for entry in record.get("attempts", [])
        if isinstance(entry, dict)
    ]
    if not attempts and view.prediction_id:
        how, why = str(view.request.get("how") or "bought"), str(view.request.get("why") or "")[:500]
        attempts = [Attempt(view.try_number, view.prediction_id, how, why=why)]
    for attempt in attempts:
        attempt.state = states.get(attempt.try_number) if attempt.try_number is not None else None
    return attempts


def _try_states(session: Session, view: TaskView) -> dict[int, str]:
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from sqlalchemy import select

    rows = session.execute(
        select(TaskInstanceHistory.try_number, TaskInstanceHistory.state).where(
            TaskInstanceHistory.dag_id == view.dag_id,
            TaskInstanceHistory.run_id == view.run_id,
            TaskInstanceHistory.task_id == view.task_id,
            TaskInstanceHistory.map_index == view.map_index,
        )
    ).all()
    states = {int(number): str(state) for number, state in rows if number is not None and state}
    if view.try_number is not None and view.state:
        states[view.try_number] = view.state
    return states


def _record(session: Session, view: TaskView) -> dict[str, Any]:
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:  # Airflow 3.2 has no task_state_store
        return {}
    from sqlalchemy import select

    raw = session.scalar(
        select(TaskStateStoreModel.value).where(
            TaskStateStoreModel.dag_id == view.dag_id,
            TaskStateStoreModel.run_id == view.run_id,
            TaskStateStoreModel.task_id == view.task_id,
            TaskStateStoreModel.map_index == view.map_index,
            TaskStateStoreModel.key == RECORD_KEY,
        )
    )
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- the overview --------------------------------------------------------------------------------


@dataclass
class Row:
    """One task's prediction on the overview: where it ran and how it ended."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    at: datetime
    outcome: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return bool(self.outcome.get("ok")) or self.outcome.get("status") == "succeeded"

    @property
    def is_batch(self) -> bool:
        return bool(self.outcome.get("batch"))

    @property
    def fills(self) -> int:
        """How many fills the row stands for: a batch task's row counts all of its items."""
        return _count(self.outcome.get("fills")) if self.is_batch else 1

    @property
    def fills_succeeded(self) -> int:
        return _count(self.outcome.get("succeeded")) if self.is_batch else int(self.succeeded)

    @property
    def status(self) -> str:
        """succeeded, failed, cancelled or open (the ledger's words; an XCom outcome's are mapped)."""
        said = str(self.outcome.get("status") or ("success" if self.succeeded else "failed"))
        return {"success": "succeeded", "timeout": "cancelled", "error": "failed"}.get(said, said)

    @property
    def cost(self) -> float | None:
        cost = self.outcome.get("cost")
        return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None

    @property
    def predict_time(self) -> float | None:
        """A fill's predict time; for a batch, its median (it stands for each of its fills)."""
        value = self.outcome.get("p50_predict_time" if self.is_batch else "predict_time")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _one_per_prediction(newest_first: Iterable[Row]) -> list[Row]:
    """The newest row of each prediction: a sensor that watched a prediction its submitting task
    also waited for records the same fill (and the same cost) again."""
    seen: set[str] = set()
    rows = []
    for row in newest_first:
        prediction_id = row.outcome.get("prediction_id")
        if isinstance(prediction_id, str):
            if prediction_id in seen:
                continue
            seen.add(prediction_id)
        rows.append(row)
    return rows


def bought_something(outcome: dict[str, Any]) -> bool:
    """Whether an outcome stands for predictions bought: a batch, or a fill that names its prediction
    (a task that failed before buying records why for its tab, and costs nothing)."""
    return bool(outcome.get("batch") or outcome.get("prediction_id"))


def figures(rows: list[Row]) -> Figures:
    """Totals over the XCom outcomes (Airflow 3.2, which has no ledger), a batch task counting for
    each of its items. Percentiles take a batch's median once per fill it stored: its rows are in its
    results manifest, not read here."""
    times = sorted(
        t for row in rows if (t := row.predict_time) is not None for _ in range(max(1, row.fills_succeeded))
    )
    fills = sum(row.fills for row in rows)
    succeeded = sum(row.fills_succeeded for row in rows)
    cancelled = sum(row.fills for row in rows if row.status == "cancelled")
    return Figures(
        bought=fills,
        succeeded=succeeded,
        failed=fills - succeeded - cancelled,
        cancelled=cancelled,
        open=0,
        spend=round(sum(row.cost or 0.0 for row in rows), 4),
        unknown_cost=0,
        p50_predict_time=_percentile(times, 50),
        p95_predict_time=_percentile(times, 95),
    )


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    return float(statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1])


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


@dataclass
class Overview:
    rows: list[Row]
    total: Figures
    by_dag: dict[str, Figures]
    by_day: dict[date, Figures]
    dag_ids: list[str]
    # What was bought with each Eachlabs connection ("" when the ledger does not say): the
    # reconciliation compares it with the API's own history for that connection's key.
    by_conn: dict[str, Figures] = field(default_factory=dict)
    # Each DAG's tasks' max_cost summed (USD per run), where a task has one.
    budgets: dict[str, float] = field(default_factory=dict)
    # Fills waiting for a person's review, oldest first.
    reviews: list[Waiting] = field(default_factory=list)
    # The api-server started a moment ago and is still reading the ledger: no figures yet.
    counting: bool = False


@dataclass(frozen=True)
class Waiting:
    """A task instance whose fill waits for a review, and since when."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    since: datetime | None


def overview(
    session: Session,
    dag_ids: set[str],
    *,
    dag_id: str | None = None,
    since: date | None = None,
    until: date | None = None,
    status: str | None = None,
    limit: int = 200,
) -> Overview:
    """What the readable DAGs bought, filtered by DAG and period: the figures from the spend ledger's
    fold (``spend``), the rows the newest ``limit`` predictions; ``status`` filters the rows. On
    Airflow 3.2 (no ledger) both come from the tasks' XCom outcomes."""
    wanted = {dag_id} & dag_ids if dag_id else dag_ids
    if not has_ledger():
        return _overview_from_outcomes(session, dag_ids, wanted, since, until, status, limit)
    from airflow_provider_eachlabs.plugin.spend import Fold, current

    fold = current(session)
    buckets = (fold or Fold()).select(wanted, since, until)
    by_dag: dict[str, list[Bucket]] = defaultdict(list)
    by_day: dict[date, list[Bucket]] = defaultdict(list)
    by_conn: dict[str, list[Bucket]] = defaultdict(list)
    for where, bucket in buckets.items():
        by_dag[where.dag_id].append(bucket)
        by_day[where.day].append(bucket)
        by_conn[where.conn].append(bucket)
    rows = ledger_rows(session, wanted, since, until, status, limit)
    return Overview(
        rows=rows,
        total=spend_figures(buckets.values()),
        by_dag={name: spend_figures(group) for name, group in sorted(by_dag.items())},
        by_day={day: spend_figures(group) for day, group in sorted(by_day.items(), reverse=True)},
        dag_ids=sorted({where.dag_id for where in (fold or Fold()).select(dag_ids)}),
        by_conn={name: spend_figures(group) for name, group in sorted(by_conn.items())},
        budgets={name: b for name in by_dag if fold and (b := fold.budget(name)) is not None},
        reviews=reviews_waiting(session, wanted),
        counting=fold is None,
    )


REVIEWS_SHOWN = 50


def reviews_waiting(session: Session, dag_ids: set[str]) -> list[Waiting]:
    """The readable DAGs' fills and batches waiting for a review: Airflow's human-in-the-loop
    requests this provider wrote, not answered yet, their task still waiting."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import or_, select

    from airflow_provider_eachlabs.review import BATCH_SUBJECT, FILL_SUBJECT

    rows = session.execute(
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            HITLDetail.created_at,
        )
        .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(
            TaskInstance.dag_id.in_(sorted(dag_ids)),
            TaskInstance.state.in_(("awaiting_input", "deferred")),
            HITLDetail.responded_at.is_(None),
            or_(*(HITLDetail.subject.startswith(s, autoescape=True) for s in (FILL_SUBJECT, BATCH_SUBJECT))),
        )
        .order_by(HITLDetail.created_at)
        .limit(REVIEWS_SHOWN)
    ).all()
    return [Waiting(*row) for row in rows]


def has_ledger() -> bool:
    try:
        import airflow.models.task_state_store  # noqa: F401
    except ImportError:  # Airflow 3.2
        return False
    return True


# At most this many of the newest ledger rows are read to find a page of rows matching a status.
LEDGER_ROWS_READ = 5000


def ledger_rows(
    session: Session,
    dag_ids: set[str],
    since: date | None,
    until: date | None,
    status: str | None,
    limit: int,
) -> list[Row]:
    """The newest predictions of the ledger, one row each (a batch try's entry is one row): a
    prediction's purchase and its end are merged, newest first, by primary key (no JSON is searched)."""
    from airflow.models.task_state_store import TaskStateStoreModel as Store
    from sqlalchemy import select

    from airflow_provider_eachlabs.ledger import BATCH, BOUGHT, ENDED, PREFIX

    # ``dag_id || ''``: no index on it may be used, so the database walks the primary key from the
    # newest row and stops at the limit (SQLite otherwise sorted every ledger row: 1.3 s at a million).
    query = select(Store).where(
        Store.key.startswith(PREFIX, autoescape=True), Store.dag_id.concat("").in_(sorted(dag_ids))
    )
    if since is not None:
        query = query.where(Store.updated_at >= _midnight(since))
    if until is not None:
        query = query.where(Store.updated_at < _midnight(until) + timedelta(days=1))
    found: dict[tuple[str, str, str, int, str], Row] = {}
    for entry in session.scalars(query.order_by(Store.id.desc()).limit(LEDGER_ROWS_READ)):
        value = _json(entry.value)
        name = entry.key
        if name.startswith(BATCH):
            outcome = {"batch": True, **_batch_outcome(value)}
            ident = name
        elif name.startswith((BOUGHT, ENDED)):
            ident = name.rsplit("/", 1)[-1]
            outcome = {"prediction_id": ident, "status": "open", **value} if name.startswith(BOUGHT) else {}
            if name.startswith(ENDED):
                outcome = {"prediction_id": ident, **value, "cost": _usd(value.get("cost"))}
        else:
            continue
        where = (entry.dag_id, entry.run_id, entry.task_id, entry.map_index, ident)
        row = found.get(where)
        if row is None:
            found[where] = Row(
                entry.dag_id, entry.run_id, entry.task_id, entry.map_index, entry.updated_at, outcome
            )
        else:  # the purchase under its end (read after it): the end's status, the purchase's how
            row.outcome = {**outcome, **row.outcome}
    rows = [row for row in found.values() if status is None or row.status == status]
    return rows[:limit]


def _json(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _usd(micro: Any) -> float | None:
    ok = isinstance(micro, int) and not isinstance(micro, bool) and micro >= 0
    return micro / 1_000_000 if ok else None


def _batch_outcome(value: dict[str, Any]) -> dict[str, Any]:
    counts = {name: _count(value.get(name)) for name in ("bought", "succeeded", "failed", "cancelled")}
    ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
    return {
        "fills": counts["bought"] or ended,
        "succeeded": counts["succeeded"],
        "cost": _usd(value.get("cost")),
        "status": "succeeded" if ended and counts["succeeded"] == ended else ("failed" if ended else "open"),
        "try": value.get("try"),
    }


def _overview_from_outcomes(
    session: Session,
    dag_ids: set[str],
    wanted: set[str],
    since: date | None,
    until: date | None,
    status: str | None,
    limit: int,
) -> Overview:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    query = select(XComModel).where(XComModel.key == OUTCOME_KEY, XComModel.dag_id.in_(sorted(wanted)))
    if since is not None:
        query = query.where(XComModel.timestamp >= _midnight(since))
    if until is not None:
        query = query.where(XComModel.timestamp < _midnight(until) + timedelta(days=1))
    rows = _one_per_prediction(
        Row(x.dag_id, x.run_id, x.task_id, x.map_index, x.timestamp, value)
        for x in session.scalars(query.order_by(XComModel.timestamp.desc())).all()
        if isinstance(value := _value(x), dict) and bought_something(value)
    )
    if status:
        rows = [row for row in rows if row.status == status]
    by_dag: dict[str, list[Row]] = defaultdict(list)
    by_day: dict[date, list[Row]] = defaultdict(list)
    for row in rows:
        by_dag[row.dag_id].append(row)
        by_day[row.at.date()].append(row)
    recorded = session.scalars(
        select(XComModel.dag_id)
        .where(XComModel.key == OUTCOME_KEY, XComModel.dag_id.in_(sorted(dag_ids)))
        .distinct()
    ).all()
    return Overview(
        rows=rows[:limit],
        total=figures(rows),
        by_dag={name: figures(group) for name, group in sorted(by_dag.items())},
        by_day={day: figures(group) for day, group in sorted(by_day.items(), reverse=True)},
        dag_ids=sorted(recorded),
    )


# --- the reconciliation with the API's own history ---------------------------------------------------

# The API's default window, used on both sides when the page names no start.
RECONCILED_DAYS = 90
UNRECORDED_SHOWN = 20


@dataclass
class Reconciled:
    """One Eachlabs connection: what the DAGs recorded buying with it, beside what the API billed its
    key over the same period, and the API's predictions no task recorded."""

    conn_id: str
    recorded: Figures
    api: Any  # reconcile.ApiFigures
    unrecorded: int
    unrecorded_ids: list[str]
    # Open predictions (bought, no end recorded: their task stopped waiting) the API says ended, and
    # what it billed for them: recorded spend plus this is what the DAGs' predictions cost.
    settled: int = 0
    settled_cost: float = 0.0

    @property
    def spend(self) -> float:
        """What the DAGs' predictions cost: the ledger's, and the API's for the open ones it settled."""
        return self.recorded.spend + self.settled_cost


def reconciliation(session: Session, since: date | None, until: date | None, wait: float) -> list[Reconciled]:
    """Each connection of the deployment, the API's figures beside the ledger's, over whole UTC days
    (``RECONCILED_DAYS`` back when no start is given). Every DAG counts, readable or not: the caller
    shows this only to a user who may read every DAG."""
    from airflow_provider_eachlabs.plugin.reconcile import api_figures
    from airflow_provider_eachlabs.plugin.spend import Fold, current

    first = since or (datetime.now(timezone.utc).date() - timedelta(days=RECONCILED_DAYS - 1))
    start = _midnight(first)
    end = _midnight(until) + timedelta(days=1) - timedelta(microseconds=1) if until else None
    answers = api_figures(session, start, end, wait=wait)
    fold = current(session) or Fold()
    by_conn: dict[str, list[Bucket]] = defaultdict(list)
    for where, bucket in fold.select({where.dag_id for where in fold.buckets}, first, until).items():
        by_conn[where.conn].append(bucket)
    known = recorded_ids(session, first, until) if answers else set()
    open_ones = fold.open_predictions(first, until)
    found = []
    for answer in answers:
        missing = sorted(answer.prediction_ids - known)
        ended = [
            answer.executions[ident]
            for ident, where in open_ones.items()
            if where.conn == answer.conn_id and answer.executions.get(ident, ("other",))[0] != "other"
        ]
        found.append(
            Reconciled(
                conn_id=answer.conn_id,
                recorded=spend_figures(by_conn.get(answer.conn_id, [])),
                api=answer,
                unrecorded=len(missing),
                unrecorded_ids=missing[:UNRECORDED_SHOWN],
                settled=len(ended),
                settled_cost=float(sum((cost for _, cost in ended if cost is not None), Decimal(0))),
            )
        )
    return found


def recorded_ids(session: Session, since: date, until: date | None) -> set[str]:
    """The predictions the ledger holds as bought around the period (a day each side: a prediction is
    dated by the API when created and by the ledger when written): one scan of the ledger's keys, and
    the batch entries' lists."""
    from airflow.models.task_state_store import TaskStateStoreModel as Store
    from sqlalchemy import or_, select

    from airflow_provider_eachlabs.ledger import BATCH, BOUGHT

    query = select(Store.key, Store.value).where(
        or_(Store.key.startswith(BOUGHT, autoescape=True), Store.key.startswith(BATCH, autoescape=True)),
        Store.updated_at >= _midnight(since) - timedelta(days=1),
    )
    if until is not None:
        query = query.where(Store.updated_at < _midnight(until) + timedelta(days=2))
    ids: set[str] = set()
    for key, value in session.execute(query):
        if key.startswith(BOUGHT):
            ids.add(key[len(BOUGHT) :])
        else:
            listed = _json(value).get("ids")
            if isinstance(listed, list):
                ids.update(i for i in listed if isinstance(i, str))
    return ids
