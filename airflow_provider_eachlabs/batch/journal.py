"""The batch's journal: how far every item got, so that a retry, a killed worker or a restarted
triggerer carries on without paying for anything twice.

It lives on storage next to the outputs (``<output_path>/.eachlabs-batch/<task instance>/``) rather
than in ``task_state_store``: a batch of thousands changes state thousands of times, and a
``task_state_store`` value is rewritten whole on every change, while storage takes small files at
any rate and both the worker and the triggerer can reach it (a trigger cannot write
``task_state_store``). An object store cannot append, so every write is a new small segment holding
the events since the last one, and a reader replays the segments in order; past
``SEGMENTS_BEFORE_SNAPSHOT`` they are folded into one snapshot.

An item's create is announced (``sending``) and written before the create goes out, so a try that
dies between the create and its answer leaves an item that is looked for among the account's
predictions before anything is sent again, as the single-fill path does. The announcement also says
what was bought and when (``Purchase``: the input's key by ``reruns``, the try, the ``max_tries`` of
that run or clear, whether ``fresh_prediction`` was set), and every results row carries it: a later
try compares the input it would send with it (``reruns.decide``), and after a full success, when the
journal is removed, the results manifest is what a clear reads instead (``seed``).

Whoever can write ``output_path`` can write here too, so a replay trusts nothing it reads: entries for
keys outside the batch's plan are ignored, and every other entry is checked (``_after``) and dropped
when it is not one this provider writes. A file that cannot be read at all is a final error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import IO, Any

from airflow_provider_eachlabs.api import check_prediction_id
from airflow_provider_eachlabs.batch.folder import Folder
from airflow_provider_eachlabs.exceptions import EachlabsBatchError, EachlabsError
from airflow_provider_eachlabs.storage import reason

JOURNAL_FOLDER = ".eachlabs-batch"
PLAN_NAME = "plan.jsonl"
SEGMENTS_BEFORE_SNAPSHOT = 256
SENDING, CREATED, DONE, QUEUED = "sending", "created", "done", "queued"
STATES = (QUEUED, SENDING, CREATED, DONE)
SUCCESS = "success"
# "rejected": a reviewer rejected the item's staged output (``review``): paid for, not stored.
ROW_STATUSES = (SUCCESS, "failed", "cancelled", "timeout", "not started", "invalid", "rejected")
# Every field a results row may have, and its type (None is always allowed but for key and status).
_NUMBER = (int, float)
ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "status": (str,),
    "prediction_id": (str,),
    "prediction_status": (str,),
    "output_url": (str,),
    "stored_path": (str,),
    "sha256": (str,),
    "bytes": (int,),
    "cost": _NUMBER,
    "predict_time": _NUMBER,
    "error": (str,),
    "error_code": (str,),
    "final": (bool,),
    # What the row's prediction was bought for, so a clear after success can tell changed from not.
    "input_key": (str,),
    "input_digests": (dict,),
    "try_number": (int,),
    "max_tries": (int,),
    "fresh": (bool,),
    "task_instance": (str,),
    # With ``review=True``: "pending" (stored in the staging folder), "approved" or "rejected".
    "review": (str,),
}
# What a results row says about the purchase behind it (``Purchase`` under these names).
PURCHASE_ROW_FIELDS = ("input_key", "input_digests", "try_number", "max_tries", "fresh", "task_instance")
# A snapshot of a hundred thousand items (inputs and rows) is about 130 MB of ASCII JSON; a file past
# this cap was not written by this provider, and reading it would only exhaust the worker's memory.
MAX_FILE_CHARS = 256 * 1024 * 1024
_SEGMENT = re.compile(r"segment-(\d{9,18})-[0-9a-f]{8}\.jsonl")
_SNAPSHOT = re.compile(r"snapshot-(\d{9,18})\.jsonl")
_log = logging.getLogger(__name__)


def journal_root(output_path: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The journal folder of one task instance: shared by its tries, apart from every other task's."""
    identity = json.dumps([dag_id, run_id, task_id, map_index]).encode()
    return f"{output_path.rstrip('/')}/{JOURNAL_FOLDER}/{hashlib.sha256(identity).hexdigest()[:20]}"


@dataclass
class ItemState:
    """How far one item got: queued, sending (a create went out, answer unknown), created, or done
    (``row`` is its line of the results manifest). ``input`` is what its create sent, so a lost create
    is looked for by it; ``input_key`` and the rest say what was bought and when (None: an older
    release, or nothing sent). The journal keeps progress only: what is sent is always the current
    plan's input, and progress recorded under another ``input_key`` is another input's."""

    state: str
    input: dict[str, Any] | None = None
    prediction_id: str | None = None
    sent_at: float | None = None
    created_at: float | None = None
    row: dict[str, Any] | None = None
    input_key: str | None = None
    digests: dict[str, str] | None = None
    try_number: int | None = None
    max_tries: int | None = None
    fresh: bool = False

    def purchase_row(self, task_instance: str) -> dict[str, Any]:
        """The results row's account of the purchase (nothing when no input was recorded)."""
        if self.input_key is None:
            return {}
        return {
            "input_key": self.input_key,
            "input_digests": self.digests,
            "try_number": self.try_number,
            "max_tries": self.max_tries,
            "fresh": self.fresh,
            "task_instance": task_instance,
        }


def purchase_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The purchase a ``sending`` event announces, as ``ItemState`` fields."""
    return {
        "input_key": event.get("input_key"),
        "digests": event.get("digests"),
        "try_number": event.get("try_number"),
        "max_tries": event.get("max_tries"),
        "fresh": event.get("fresh") is True,
    }


@dataclass(frozen=True)
class PlanEntry:
    """One item of the plan: what this try sends for it, and the key of that input."""

    key: str
    input: dict[str, Any] | None = None
    input_key: str | None = None
    digests: dict[str, str] | None = None


@dataclass
class JournalState:
    """Every item's state and every upload made so far (sha256 of the bytes to the uploaded URL)."""

    items: dict[str, ItemState] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)
    # What the journal saw bought and ended over its life, for the spend ledger (``ledger``).
    spend: SpendTally = field(default_factory=lambda: SpendTally())

    def apply(self, event: Mapping[str, Any]) -> None:
        if "upload" in event:
            self.uploads[str(event["upload"])] = str(event["url"])
            return
        if "spend" in event:  # a snapshot's tally, or the journal's name
            self.spend = SpendTally.read({**asdict(self.spend), **event["spend"]})
            return
        key, state = str(event["key"]), str(event["state"])
        if "item" in event:  # a snapshot's whole item
            self.items[key] = ItemState(**event["item"])
            return
        item = self.items.setdefault(key, ItemState(QUEUED))
        before = replace(item)
        item.state = state
        if state == SENDING:
            item.sent_at = float(event["at"])
            item.input = dict(event["input"])
            for name, value in purchase_fields(event).items():
                setattr(item, name, value)
        elif state == CREATED:
            item.prediction_id = str(event["id"])
            item.created_at = float(event["at"])
        elif state == DONE:
            item.row = dict(event["row"])
            item.prediction_id = item.row.get("prediction_id") or item.prediction_id
            if item.row.get("status") == "invalid":
                item.input = None
        self.spend.count(before, item)

    def replayed(self, event: dict[str, Any], keys: Container[str], snapshot: bool) -> str:
        """Apply one replayed ``event`` when it is one this provider writes for a key of the plan:
        ``"applied"``, ``"foreign"`` (a key outside the plan) or ``"dropped"`` (see ``_after``)."""
        if "upload" in event:
            if not (isinstance(event["upload"], str) and isinstance(event.get("url"), str)):
                return "dropped"
            self.uploads[event["upload"]] = event["url"]
            return "applied"
        if "spend" in event:
            spend = event["spend"]
            if snapshot:
                self.spend = SpendTally.read(spend)
            elif isinstance(spend, dict) and set(spend) == {"journal"} and not self.spend.journal:
                self.spend = SpendTally.read({**asdict(self.spend), **spend})
            else:
                return "dropped"
            return "applied"
        key = event.get("key")
        if not isinstance(key, str):
            return "dropped"
        if key not in keys:
            return "foreign"
        item = _after(key, self.items.get(key), event, snapshot)
        if item is None:
            return "dropped"
        if not snapshot:
            self.spend.count(self.items.get(key), item)
        self.items[key] = item
        return "applied"

    def events(self) -> Iterator[dict[str, Any]]:
        """Events that rebuild this state, one per upload and per item: what a snapshot holds."""
        for digest, url in self.uploads.items():
            yield {"upload": digest, "url": url}
        yield {"spend": asdict(self.spend)}
        for key, item in self.items.items():
            yield {"key": key, "state": item.state, "item": asdict(item)}


class Journal:
    """The journal under ``root``: ``replay`` reads what earlier writers left into ``state``;
    ``record`` applies an event to ``state`` and queues it; ``take`` and ``write`` put the queued
    events in a new segment.

    ``record`` and ``take`` run on the batch's event loop, ``write`` in its thread pool, one at a
    time: the events a segment holds are taken on the loop, so none is lost to a write in progress.
    """

    def __init__(self, root: str) -> None:
        self.folder = Folder(root)
        self.state = JournalState()
        self._pending: list[dict[str, Any]] = []
        self._seq = 0
        self._writer = secrets.token_hex(4)  # two writers never overwrite each other's segment
        self._segments = 0

    def replay(self, keys: Container[str], log: Any = _log) -> JournalState:
        """The state every earlier writer left for the batch's ``keys`` (its plan); this writer's
        segments come after theirs. Raises a final ``EachlabsBatchError`` naming a file that cannot
        be read, so a retry does not read it again; entries it can read but not trust are dropped and
        counted in one warning."""
        state = JournalState()
        names = sorted(self.folder.names())
        for name in names:
            if name.startswith(("segment-", "snapshot-")) and not _is_journal_file(name):
                raise self._unreadable(name, "its name is not one this provider writes")
        snapshots = [name for name in names if name.startswith("snapshot-")]
        start = _seq_of(snapshots[-1]) if snapshots else 0
        segments = [name for name in names if name.startswith("segment-") and _seq_of(name) > start]
        outcomes: Counter[str] = Counter()
        for name in snapshots[-1:] + segments:
            for event in self._read(name):
                outcomes[state.replayed(event, keys, snapshot=name.startswith("snapshot-"))] += 1
        if outcomes["foreign"] or outcomes["dropped"]:
            log.warning(
                "The batch's journal in %s holds %d entries for keys outside this batch and %d entries "
                "this provider did not write; both were ignored (check who can write there)",
                self.folder.root,
                outcomes["foreign"],
                outcomes["dropped"],
            )
        self._seq = max([start, *(_seq_of(name) for name in segments)])
        self._segments = len(segments)
        self.state = state
        return state

    def plan_keys(self) -> set[str]:
        """Every key of the batch's plan (the items of the task's current try), read as a stream."""
        return set(self.plan_index())

    def plan_index(self) -> dict[str, str | None]:
        """Every key of the plan, with the key of the input it sends now (None: invalid now, or a
        plan without keys), read as a stream."""
        if not self.folder.exists(PLAN_NAME):
            raise self._unreadable(PLAN_NAME, "it does not exist; the task's next try writes it again")
        index: dict[str, str | None] = {}
        with self.open_plan() as handle:
            for number, line in enumerate(handle, start=1):
                entry = self.plan_entry(line, number)
                index[entry.key] = entry.input_key
        return index

    def open_plan(self) -> IO[str]:
        return self.folder.open_text(PLAN_NAME)

    def plan_line(self, line: str, number: int) -> tuple[str, dict[str, Any] | None]:
        """One line of the plan: an item's key, and its input (None: the item is invalid)."""
        entry = self.plan_entry(line, number)
        return entry.key, entry.input

    def plan_entry(self, line: str, number: int) -> PlanEntry:
        """One line of the plan, checked: an item's key, and for a valid item the input it sends now,
        that input's key and digests (``reruns``)."""
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            entry = None
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("key"), str)
            and isinstance(entry.get("input", {}), dict)
            and isinstance(entry.get("input_key", ""), str)
            and _digests(entry.get("digests", {}))
        ):
            raise self._unreadable(PLAN_NAME, f"line {number} is not a plan entry")
        return PlanEntry(entry["key"], entry.get("input"), entry.get("input_key"), entry.get("digests"))

    def _read(self, name: str) -> list[dict[str, Any]]:
        """The events of one file, each a JSON object, or a final error naming the file."""
        try:
            with self.folder.open_text(name) as handle:
                text = handle.read(MAX_FILE_CHARS + 1)
        except FileNotFoundError:
            raise  # a snapshot folded it away after the listing: a retry reads the snapshot instead
        except (OSError, ValueError) as error:  # not a file; not UTF-8
            raise self._unreadable(name, reason(error)) from None
        if len(text) > MAX_FILE_CHARS:
            raise self._unreadable(name, f"it is larger than {MAX_FILE_CHARS} characters")
        events: list[dict[str, Any]] = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                raise self._unreadable(name, f"line {number} is not JSON") from None
            if not isinstance(event, dict):
                raise self._unreadable(name, f"line {number} is not a JSON object")
            events.append(event)
        return events

    def _unreadable(self, name: str, why: str) -> EachlabsError:
        return EachlabsBatchError(
            f"The batch's journal file {self.folder.root}/{name} cannot be read: {why}. This provider "
            "did not write it as it is; check who can write there, then delete the file (deleting the "
            "whole folder makes the next try start again from the results manifest).",
            final=True,
        )

    def name_spend(self) -> None:
        """Give a journal that has none a name, written with its next segment: the task's ledger
        counts a journal's tally from zero when the name is new (``ledger.record_batch_try``)."""
        if not self.state.spend.journal:
            self.record({"spend": {"journal": secrets.token_hex(8)}})

    def record(self, event: dict[str, Any]) -> None:
        self.state.apply(event)
        self._pending.append(event)

    def take(self) -> list[dict[str, Any]]:
        """The events recorded since the last take, for one segment."""
        events, self._pending = self._pending, []
        return events

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def wants_snapshot(self) -> bool:
        return self._segments >= SEGMENTS_BEFORE_SNAPSHOT

    def write(self, events: list[dict[str, Any]], snapshot: list[dict[str, Any]] | None = None) -> None:
        """Write ``events`` as the next segment; with ``snapshot`` (``state.events()`` taken on the
        loop with them), fold everything into one file and drop the segments it replaces."""
        if events:
            self._seq += 1
            self.folder.write(f"segment-{self._seq:09d}-{self._writer}.jsonl", _lines(events))
            self._segments += 1
        if snapshot is None:
            return
        self._seq += 1
        name = f"snapshot-{self._seq:09d}.jsonl"
        self.folder.write(name, _lines(snapshot))
        for old in self.folder.names():
            if old.startswith(("segment-", "snapshot-")) and _seq_of(old) < self._seq:
                self.folder.delete(old)
        self._segments = 0

    def flush(self) -> None:
        """``write(take())``, for a caller without an event loop (the operator while it plans)."""
        self.write(self.take(), list(self.state.events()) if self.wants_snapshot else None)

    def seed(self, rows: Iterable[Mapping[str, Any]], keys: Container[str]) -> int:
        """Start an empty journal from the results manifest an earlier, successful try left (its
        journal removed): each row of this task instance (``task_instance``, the journal's own name)
        becomes its item, done, written at once as a snapshot that replays like any other. Rows of
        other task instances, of keys outside the plan, or not well-formed are left out."""
        name = self.folder.root.rsplit("/", 1)[-1]
        for row in rows:
            key = row.get("key")
            if row.get("task_instance") != name or not isinstance(key, str) or key not in keys:
                continue
            item = ItemState(
                DONE,
                prediction_id=row.get("prediction_id"),
                row=dict(row),
                **purchase_fields({**row, "digests": row.get("input_digests")}),
            )
            if _well_formed(key, item):
                self.state.items[key] = item
        if self.state.items:
            self.write(self.take(), list(self.state.events()))
        return len(self.state.items)

    def remove(self) -> None:
        """The batch is complete: its journal and plan are no longer needed, nor, when no other
        task's journal is left in it, the folder of journals."""
        self.folder.remove()
        Folder(self.folder.root.rsplit("/", 1)[0]).remove_if_empty()


def _seq_of(name: str) -> int:
    return int(name.split("-")[1].split(".")[0])


def _lines(events: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events).encode()


def _is_journal_file(name: str) -> bool:
    return bool(_SEGMENT.fullmatch(name) or _SNAPSHOT.fullmatch(name))


@dataclass
class SpendTally:
    """Predictions the journal saw bought (a create recorded) and ended (a result recorded for a
    created item), over the journal's life: each is counted once, by the step
    that records it, so a replay counts what the live batch counted. ``journal`` names this journal,
    so the task's ledger knows a new one (after a batch that ended whole) starts from zero. Whoever can
    write ``output_path`` can write these numbers too: the fills page shows the API's own bill beside
    them."""

    journal: str = ""  # named once, by the try that starts the journal (``Journal.name_spend``)
    bought: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    cost: int = 0  # micro-USD
    # Ended predictions whose cost the API did not say (their ``cost`` counted nothing): ``max_cost``
    # counts them at the price.
    uncosted: int = 0
    # Predict times of the successes, by ``ledger.time_bin``: percentiles without a list per item.
    times: dict[str, int] = field(default_factory=dict)
    # The predictions bought, in the order they were: the fills page finds in them what the API
    # billed, and a ledger entry takes the ones after the previous entry's count.
    ids: list[str] = field(default_factory=list)

    def count(self, before: ItemState | None, after: ItemState) -> None:
        from airflow_provider_eachlabs.ledger import micro_usd, time_bin

        if after.state == CREATED and (before is None or before.state != CREATED):
            self.bought += 1
            if after.prediction_id:
                self.ids.append(after.prediction_id)
        row = after.row or {}
        # Only the step from created to done ends a prediction: a re-read of a stored item, or a
        # refusal re-stating a failed one, names a prediction whose end was counted already.
        if after.state != DONE or not row.get("prediction_id") or before is None or before.state != CREATED:
            return
        status = _earlier_status(row)
        setattr(self, status, getattr(self, status) + 1)
        cost = micro_usd(row.get("cost"))
        self.cost += cost or 0
        self.uncosted += cost is None
        if status == "succeeded" and isinstance(row.get("predict_time"), _NUMBER):
            name = str(time_bin(float(row["predict_time"])))
            self.times[name] = self.times.get(name, 0) + 1

    def committed(self, price: int) -> int:
        """Micro-USD the journal's predictions cost, for ``max_cost``: ended ones at their cost (an
        unknown one at ``price``), those bought and not ended (in flight) at ``price``."""
        ended = self.succeeded + self.failed + self.cancelled
        return self.cost + price * (self.uncosted + max(0, self.bought - ended))

    @classmethod
    def read(cls, value: Any) -> SpendTally:
        """A snapshot's tally, its wrongly typed fields left at zero."""
        body = value if isinstance(value, dict) else {}
        tally = cls()
        if isinstance(body.get("journal"), str):
            tally.journal = body["journal"][:64]
        for name in ("bought", "succeeded", "failed", "cancelled", "cost", "uncosted"):
            number = body.get(name)
            if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
                setattr(tally, name, number)
        ids = body.get("ids")
        if isinstance(ids, list):
            tally.ids = [i for i in ids if isinstance(i, str) and _id(i)]
        times = body.get("times")
        if isinstance(times, dict):
            tally.times = {
                str(k): v
                for k, v in times.items()
                if isinstance(v, int) and not isinstance(v, bool) and v > 0
            }
        return tally


def _earlier_status(row: Mapping[str, Any]) -> str:
    """How an ended item's prediction ended, as the ledger names it."""
    if SUCCESS in (row.get("status"), row.get("prediction_status")):
        return "succeeded"
    return "cancelled" if row.get("status") in ("cancelled", "timeout") else "failed"


_ITEM_FIELDS = frozenset(item.name for item in fields(ItemState))
# What a snapshot written by a release before purchases were recorded holds: still read.
_FIRST_ITEM_FIELDS = frozenset({"state", "input", "prediction_id", "sent_at", "created_at", "row"})


def _after(key: str, item: ItemState | None, event: Mapping[str, Any], snapshot: bool) -> ItemState | None:
    """The item's state after a replayed ``event``, or None to drop the event.

    A dropped event leaves the item where its last valid event left it, never at "new": an item the
    journal validly says was sent, created or stored is looked for, re-attached to or kept, as if the
    bad entry had never been written. So garbage never buys anything again. A well-formed entry must
    also be a step this provider takes from that state: nothing follows a stored item but a re-read of
    its own prediction; an item holding a prediction (created, or paid but not stored) is only queued
    again naming that prediction (its failure) and only ended with it; and a result that names a
    prediction must name the one the item holds (a refusal re-states the failed one). So a lone forged
    "done" cannot stand in for an item never bought, and a forged "queued", "sending" or failure cannot
    make a created item bought again. Two steps leave any state: a "sending" that announces another
    input (its ``input_key`` differs from the item's: the user changed the item), and an "invalid"
    row (the item as it is now fails its checks). Whole items come only from a snapshot, which a
    replay reads first.
    """
    state = event.get("state")
    if "item" in event:
        whole = event["item"]
        if not (snapshot and item is None and isinstance(whole, dict)):
            return None
        if not _FIRST_ITEM_FIELDS <= set(whole) <= _ITEM_FIELDS:
            return None
        new = ItemState(**whole)
        return new if new.state == state and _well_formed(key, new) else None
    if snapshot:
        return None
    old = item or ItemState(QUEUED)
    holds = _holds(item)
    new = replace(old)
    row = event.get("row")
    another_input = state == SENDING and _another_purchase(old, event)
    invalid = state == DONE and isinstance(row, dict) and row.get("status") == "invalid"
    if state == QUEUED and (not holds or event.get("id") == old.prediction_id):
        new.state = QUEUED
    elif state == SENDING and (not holds or another_input):
        new.state, new.sent_at, new.input = SENDING, event.get("at"), event.get("input")
        for name, value in purchase_fields(event).items():
            setattr(new, name, value)
    elif state == CREATED and old.state == SENDING:
        new.state, new.prediction_id, new.created_at = CREATED, event.get("id"), event.get("at")
    elif invalid and isinstance(row, dict) and row.get("prediction_id") is None:
        new.state, new.row, new.input = DONE, dict(row), None
    elif state == DONE and isinstance(row, dict):
        named = row.get("prediction_id")
        if named != old.prediction_id if holds else named not in (None, old.prediction_id):
            return None
        new.state, new.row, new.prediction_id = DONE, dict(row), named or old.prediction_id
    else:
        return None
    ended_well = new.state == DONE and new.prediction_id == old.prediction_id
    if _stored(item) and not (ended_well or another_input or invalid):
        return None
    return new if _well_formed(key, new) else None


def _another_purchase(old: ItemState, event: Mapping[str, Any]) -> bool:
    """Whether a ``sending`` buys something the item's prediction does not stand for: another input,
    or ``fresh_prediction`` in a run or clear that has not bought this item fresh yet."""
    if isinstance(event.get("input_key"), str) and event["input_key"] != old.input_key:
        return True
    return event.get("fresh") is True and not (old.fresh and event.get("max_tries") == old.max_tries)


def _holds(item: ItemState | None) -> bool:
    """Whether the item has a prediction bought for it that is not failed: created, or ended well."""
    if item is None:
        return False
    row = item.row or {}
    return item.state == CREATED or (
        item.state == DONE and SUCCESS in (row.get("status"), row.get("prediction_status"))
    )


def _stored(item: ItemState | None) -> bool:
    return item is not None and item.state == DONE and (item.row or {}).get("status") == SUCCESS


def _well_formed(key: str, item: ItemState) -> bool:
    """Every field of the right type, and what its state needs present."""
    if item.state not in STATES or not (item.input is None or isinstance(item.input, dict)):
        return False
    if not (_time(item.sent_at) and _time(item.created_at) and _id(item.prediction_id)):
        return False
    if not _purchase(item):
        return False
    if item.state == SENDING and (item.input is None or item.sent_at is None):
        return False
    if item.state == CREATED and (
        item.input is None or item.prediction_id is None or item.created_at is None
    ):
        return False
    if item.row is None or not _row(key, item.row):
        return item.row is None and item.state != DONE
    if item.state != DONE:
        return True  # the row of an earlier round, kept until this round ends
    status, named = item.row["status"], item.row.get("prediction_id")
    if named not in (None, item.prediction_id) or (status == SUCCESS and named is None):
        return False
    return status != "invalid" or item.input is None


def _purchase(item: ItemState) -> bool:
    """The purchase fields: a key and digests of text, a try and ``max_tries`` that are counts."""
    if not (item.input_key is None or isinstance(item.input_key, str)) or not isinstance(item.fresh, bool):
        return False
    if not all(n is None or (_typed(n, (int,)) and n >= 0) for n in (item.try_number, item.max_tries)):
        return False
    return item.digests is None or _digests(item.digests)


def _digests(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _row(key: str, row: Any) -> bool:
    """A results row: its own key, a known status, and only known fields of the right types."""
    if not isinstance(row, dict) or row.get("key") != key or row.get("status") not in ROW_STATUSES:
        return False
    for name, value in row.items():
        if name not in ROW_FIELDS or not (value is None or _typed(value, ROW_FIELDS[name])):
            return False
    digests = row.get("input_digests")
    if digests is not None and not _digests(digests):
        return False
    return _id(row.get("prediction_id")) and all(_time(row.get(n)) for n in ("cost", "predict_time", "bytes"))


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _time(value: Any) -> bool:
    """None, or a finite number that is not negative (a time, a cost, a size)."""
    return value is None or (_typed(value, _NUMBER) and math.isfinite(value) and value >= 0)


def _id(value: Any) -> bool:
    if value is None:
        return True
    try:
        check_prediction_id(value)
    except EachlabsError:
        return False
    return True
