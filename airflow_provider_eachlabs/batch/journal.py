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
predictions before anything is sent again, as the single-fill path does.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_eachlabs.batch.folder import Folder

JOURNAL_FOLDER = ".eachlabs-batch"
PLAN_NAME = "plan.jsonl"
SEGMENTS_BEFORE_SNAPSHOT = 256
SENDING, CREATED, DONE, QUEUED = "sending", "created", "done", "queued"


def journal_root(output_path: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The journal folder of one task instance: shared by its tries, apart from every other task's."""
    identity = json.dumps([dag_id, run_id, task_id, map_index]).encode()
    return f"{output_path.rstrip('/')}/{JOURNAL_FOLDER}/{hashlib.sha256(identity).hexdigest()[:20]}"


@dataclass
class ItemState:
    """How far one item got: queued, sending (a create went out, answer unknown), created, or done
    (``row`` is its line of the results manifest). ``input`` is what its create sent: a resumed batch
    looks for, re-attaches to or re-creates an item from the journal alone."""

    state: str
    input: dict[str, Any] | None = None
    prediction_id: str | None = None
    sent_at: float | None = None
    created_at: float | None = None
    row: dict[str, Any] | None = None


@dataclass
class JournalState:
    """Every item's state and every upload made so far (sha256 of the bytes to the uploaded URL)."""

    items: dict[str, ItemState] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)

    def apply(self, event: Mapping[str, Any]) -> None:
        if "upload" in event:
            self.uploads[str(event["upload"])] = str(event["url"])
            return
        key, state = str(event["key"]), str(event["state"])
        if "item" in event:  # a snapshot's whole item
            self.items[key] = ItemState(**event["item"])
            return
        item = self.items.setdefault(key, ItemState(QUEUED))
        item.state = state
        if state == SENDING:
            item.sent_at = float(event["at"])
            item.input = dict(event["input"])
        elif state == CREATED:
            item.prediction_id = str(event["id"])
            item.created_at = float(event["at"])
        elif state == DONE:
            item.row = dict(event["row"])
            item.prediction_id = item.row.get("prediction_id") or item.prediction_id

    def events(self) -> Iterator[dict[str, Any]]:
        """Events that rebuild this state, one per upload and per item: what a snapshot holds."""
        for digest, url in self.uploads.items():
            yield {"upload": digest, "url": url}
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

    def replay(self) -> JournalState:
        """The state every earlier writer left; this writer's segments come after theirs."""
        state = JournalState()
        names = sorted(self.folder.names())
        snapshots = [name for name in names if name.startswith("snapshot-")]
        start = _seq_of(snapshots[-1]) if snapshots else 0
        segments = [name for name in names if name.startswith("segment-") and _seq_of(name) > start]
        for name in snapshots[-1:] + segments:
            for event in _events(self.folder.read(name)):
                state.apply(event)
        self._seq = max([start, *(_seq_of(name) for name in segments)])
        self._segments = len(segments)
        self.state = state
        return state

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

    def remove(self) -> None:
        """The batch is complete: its journal and plan are no longer needed, nor, when no other
        task's journal is left in it, the folder of journals."""
        self.folder.remove()
        Folder(self.folder.root.rsplit("/", 1)[0]).remove_if_empty()


def _seq_of(name: str) -> int:
    return int(name.split("-")[1].split(".")[0])


def _lines(events: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events).encode()


def _events(content: bytes) -> Iterator[dict[str, Any]]:
    for line in content.decode().splitlines():
        if line.strip():
            yield json.loads(line)
