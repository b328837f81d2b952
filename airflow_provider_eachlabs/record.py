"""The task's record in ``task_state_store``: what a retry needs to re-attach instead of paying again.

A try writes the record before it sends the create (``sent_at``) and completes it with the id right
after, so the next try finds the task in one of three states: nothing sent, sent without an id (the
try died in between: look for the prediction before sending another), or created (re-attach). The
record is versioned and its key names never change, because a retry of a task started by an older
release must still read it. Uploads are remembered by content hash under a second key, so a retry
does not upload the same bytes again. Airflow 3.2 has no ``task_state_store``: the record is then
empty and unsaved, and the operator says what that costs. A field a later release adds goes under a
new key, read as empty when an older record lacks it (``spent_on``: what ``max_cost`` counts); the
version changes only if an existing key's meaning ever does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs.api import check_prediction_id

if TYPE_CHECKING:
    from airflow.sdk import Context

# task_state_store keys: renaming them breaks re-attachment of retries already in flight.
RECORD_KEY = "eachlabs_prediction"
UPLOADS_KEY = "eachlabs_uploads"
RECORD_VERSION = 1
# Far beyond any retry schedule, and far below the API's 180 days for uploaded files.
RETENTION = timedelta(days=30)


class RecordState(Enum):
    NOTHING_SENT = "nothing sent"
    SENT_WITHOUT_ID = "sent without an id"
    CREATED = "created"


@dataclass
class TaskRecord:
    """One task instance's predictions across its tries."""

    sent_at: float | None = None
    prediction_id: str | None = None
    started_at: float | None = None
    finished_ids: list[str] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)
    # Predictions whose success (and cost) a try has already logged.
    reported_ids: list[str] = field(default_factory=list)
    # What each prediction bought by this task instance cost, as its end was counted (``results``):
    # ``[id, micro-USD]``, the cost None when the API did not say. ``max_cost`` reads it (``budget``).
    spent_on: list[list[Any]] = field(default_factory=list)
    # The input the last create sent (when small), so a re-attaching try can show what was asked.
    sent_input: dict[str, Any] | None = None
    # Each try's prediction, how the try got it (bought, re-used, found, refused) and why: the UI's
    # history.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # What the current prediction was bought for (``reruns``): its input's key and field digests, the
    # try that bought it, whether fresh_prediction was set, and the max_tries of that run or clear.
    bought: dict[str, Any] = field(default_factory=dict)
    # A review under way (``review``): its round, the prediction under review, and the changes the
    # reviewer asked for so far, which every later step of the task applies to its input.
    review: dict[str, Any] = field(default_factory=dict)
    stored: bool = True

    @property
    def state(self) -> RecordState:
        if self.prediction_id:
            return RecordState.CREATED
        if self.sent_at is not None:
            return RecordState.SENT_WITHOUT_ID
        return RecordState.NOTHING_SENT

    @classmethod
    def load(cls, context: Context) -> TaskRecord:
        """The record earlier tries left, in this release's shape or any older one."""
        store = context.get("task_state_store")
        if store is None:
            return cls(stored=False)
        raw = store.get(RECORD_KEY)
        body: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        uploads = store.get(UPLOADS_KEY)
        finished = body.get("finished_ids")
        reported = body.get("reported_ids")
        spent_on = body.get("spent_on")
        attempts = body.get("attempts")
        sent_input = body.get("sent_input")
        bought = body.get("bought")
        review = body.get("review")
        return cls(
            sent_at=_number(body.get("sent_at")),
            prediction_id=check_prediction_id(body["id"]) if body.get("id") else None,
            started_at=_number(body.get("started_at")),
            finished_ids=[check_prediction_id(i) for i in finished] if isinstance(finished, list) else [],
            uploads={str(k): str(v) for k, v in uploads.items()} if isinstance(uploads, Mapping) else {},
            reported_ids=[check_prediction_id(i) for i in reported] if isinstance(reported, list) else [],
            spent_on=_spent_on(spent_on),
            sent_input=dict(sent_input) if isinstance(sent_input, Mapping) else None,
            attempts=[dict(a) for a in attempts if isinstance(a, Mapping)]
            if isinstance(attempts, list)
            else [],
            bought=dict(bought) if isinstance(bought, Mapping) else {},
            review=dict(review) if isinstance(review, Mapping) else {},
        )

    def sending(
        self, now: float, input: dict[str, Any] | None = None, bought: Mapping[str, Any] | None = None
    ) -> None:
        """About to send a create: whatever an earlier try created is finished with."""
        if self.prediction_id:
            self.finished_ids.append(self.prediction_id)
        self.sent_at, self.prediction_id, self.started_at = now, None, None
        self.sent_input = input
        self.bought = dict(bought or {})

    @property
    def spent(self) -> int:
        """Micro-USD the ended predictions of this task instance cost, where the API said."""
        return sum(cost for _, cost in self.spent_on if isinstance(cost, int))

    def spend(self, prediction_id: str, cost: int | None) -> None:
        """The end of a prediction this task instance bought, at its cost in micro-USD (None: unknown)."""
        if all(entry[0] != prediction_id for entry in self.spent_on):
            self.spent_on.append([prediction_id, cost])

    def spent_so_far(self, price: int) -> tuple[int, list[str]]:
        """Micro-USD spent by every try of this task instance, and on which predictions: ended ones at
        their cost, the rest (an unknown cost, an end no try saw) at ``price``."""
        ids = [str(entry[0]) for entry in self.spent_on]
        total = sum(price if cost is None else int(cost) for _, cost in self.spent_on)
        for bought in [*self.finished_ids, *([self.prediction_id] if self.prediction_id else [])]:
            if bought not in ids:
                ids.append(bought)
                total += price
        return total, ids

    def created(self, prediction_id: str, now: float) -> None:
        self.prediction_id, self.started_at = prediction_id, now

    def finished(self) -> None:
        """The current prediction ended in a way a retry must not re-attach to."""
        if self.prediction_id:
            self.finished_ids.append(self.prediction_id)
        self.sent_at, self.prediction_id, self.started_at = None, None, None

    def save(self, context: Context) -> None:
        """Keep the record for every later try of this task instance (Airflow 3.3+)."""
        store = context.get("task_state_store")
        if store is None:
            return
        body: dict[str, Any] = {"version": RECORD_VERSION, "finished_ids": list(self.finished_ids)}
        if self.reported_ids:
            body["reported_ids"] = list(self.reported_ids)
        if self.spent_on:
            body["spent_on"] = [list(entry) for entry in self.spent_on]
        if self.sent_input is not None:
            body["sent_input"] = self.sent_input
        if self.attempts:
            body["attempts"] = list(self.attempts)
        if self.bought:
            body["bought"] = dict(self.bought)
        if self.review:
            body["review"] = dict(self.review)
        if self.sent_at is not None:
            body["sent_at"] = self.sent_at
        if self.prediction_id:
            body["id"] = self.prediction_id
            body["started_at"] = self.started_at
        store.set(RECORD_KEY, body, retention=RETENTION)
        if self.uploads:
            store.set(UPLOADS_KEY, dict(self.uploads), retention=RETENTION)


def _spent_on(value: object) -> list[list[Any]]:
    """``[id, micro-USD or None]`` pairs, the malformed ones left out."""
    if not isinstance(value, list):
        return []
    return [
        [check_prediction_id(entry[0]), entry[1]]
        for entry in value
        if isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and (entry[1] is None or (type(entry[1]) is int and entry[1] >= 0))
    ]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
