"""The batch's journal on storage: segments written by one writer after another are replayed in order
into every item's state, folded into a snapshot that replaces them, and removed with the batch.

Each test runs on a local folder and on ``memory://`` (an object store: no append, no rename).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_provider_eachlabs.batch import journal as journal_module
from airflow_provider_eachlabs.batch.folder import Folder
from airflow_provider_eachlabs.batch.journal import (
    CREATED,
    DONE,
    JOURNAL_FOLDER,
    PLAN_NAME,
    QUEUED,
    SENDING,
    ItemState,
    Journal,
    JournalState,
    journal_root,
)

INPUT = {"prompt": "a meadow", "image": "https://example.com/a.png", "seed": 1}


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "out" / JOURNAL_FOLDER / "task")
        return
    base = f"/eachlabs-journal-{uuid.uuid4().hex}"
    yield f"memory://{base}/{JOURNAL_FOLDER}/task"
    memory = fsspec.filesystem("memory")
    if memory.exists(base):
        memory.rm(base, recursive=True)


def sending(key: str, at: float = 100.0, **input_: Any) -> dict[str, Any]:
    return {"key": key, "state": SENDING, "at": at, "input": {**INPUT, **input_}}


def created(key: str, prediction_id: str, at: float = 101.0) -> dict[str, Any]:
    return {"key": key, "state": CREATED, "id": prediction_id, "at": at}


def done(key: str, **row: Any) -> dict[str, Any]:
    return {"key": key, "state": DONE, "row": {"key": key, **row}}


def write(journal: Journal, *events: dict[str, Any]) -> None:
    for event in events:
        journal.record(event)
    journal.write(journal.take())


def segments(folder: Folder) -> list[str]:
    return sorted(name for name in folder.names() if name.startswith(("segment-", "snapshot-")))


# --- where a journal lives --------------------------------------------------------------------------------


def test_each_task_instance_has_its_own_journal_shared_by_its_tries():
    first = journal_root("s3://b/out/", "dag", "run_1", "fill", -1)
    assert first == journal_root("s3://b/out", "dag", "run_1", "fill", -1)
    assert first.startswith(f"s3://b/out/{JOURNAL_FOLDER}/")
    others = {
        journal_root("s3://b/out/", *identity)
        for identity in (
            ("dag", "run_2", "fill", -1),
            ("dag", "run_1", "fill2", -1),
            ("dag", "run_1", "fill", 0),
            ("dag2", "run_1", "fill", -1),
            ("dag_run", "1", "fill", -1),  # ids that would collide if simply joined with "_"
        )
    }
    assert first not in others
    assert len(others) == 5


# --- replay -------------------------------------------------------------------------------------------------


def test_a_new_journal_replays_nothing(root: str):
    assert Journal(root).replay() == JournalState()


def test_replay_gives_every_item_the_state_its_last_event_left(root: str):
    journal = Journal(root)
    journal.replay()
    write(
        journal,
        {"upload": "sha-image", "url": "https://files/image.png"},
        sending("sent"),
        sending("made"),
        created("made", "p-made"),
        sending("stored"),
        created("stored", "p-stored"),
        done("stored", prediction_id="p-stored", status="success", stored_path="out/stored.png"),
        {"key": "limited", "state": QUEUED},
        done("bad", status="invalid", error="Invalid item 'bad' (items[4]) steps=51: ..."),
    )
    state = Journal(root).replay()
    assert state.uploads == {"sha-image": "https://files/image.png"}
    assert state.items == {
        "sent": ItemState(SENDING, INPUT, None, 100.0, None, None),
        "made": ItemState(CREATED, INPUT, "p-made", 100.0, 101.0, None),
        "stored": ItemState(
            DONE,
            INPUT,
            "p-stored",
            100.0,
            101.0,
            {
                "key": "stored",
                "prediction_id": "p-stored",
                "status": "success",
                "stored_path": "out/stored.png",
            },
        ),
        "limited": ItemState(QUEUED),
        "bad": ItemState(
            DONE,
            row={"key": "bad", "status": "invalid", "error": "Invalid item 'bad' (items[4]) steps=51: ..."},
        ),
    }


def test_an_item_sent_again_keeps_its_latest_input_and_a_redone_item_its_new_prediction(root: str):
    journal = Journal(root)
    journal.replay()
    write(journal, sending("a", at=1.0), created("a", "p1", at=2.0))
    write(journal, {"key": "a", "state": QUEUED}, sending("a", at=3.0, seed=2))
    item = Journal(root).replay().items["a"]
    assert (item.state, item.sent_at, item.input, item.prediction_id) == (
        SENDING,
        3.0,
        {**INPUT, "seed": 2},
        "p1",
    )
    write(journal, created("a", "p2", at=4.0), done("a", prediction_id="p2", status="success"))
    item = Journal(root).replay().items["a"]
    assert (item.state, item.prediction_id, item.created_at) == (DONE, "p2", 4.0)


def test_nothing_recorded_reaches_storage_before_it_is_written(root: str):
    journal = Journal(root)
    journal.replay()
    journal.record(sending("a"))
    assert journal.has_pending
    assert journal.state.items["a"].state == SENDING  # the writer's own state is current at once
    assert Journal(root).replay().items == {}
    journal.write(journal.take())
    assert not journal.has_pending
    assert Journal(root).replay().items["a"].state == SENDING
    journal.write([])  # nothing to say: no empty segment
    assert len(segments(journal.folder)) == 1


def test_segments_of_two_writers_one_after_the_other_replay_in_order(root: str):
    """A try writes, dies; the next try replays and carries on; a third reader sees both, in order."""
    first = Journal(root)
    first.replay()
    write(first, sending("a"), sending("b"))
    write(first, created("a", "pa"))
    second = Journal(root)  # the retry: another writer
    assert second.replay().items["a"].state == CREATED
    write(second, created("b", "pb"), done("a", prediction_id="pa", status="success"))
    write(second, sending("c"))
    names = segments(second.folder)
    assert len(names) == 4
    assert len({name.rsplit("-", 1)[1] for name in names}) == 2  # two writers, each its own names
    state = Journal(root).replay()
    assert {key: (item.state, item.prediction_id) for key, item in state.items.items()} == {
        "a": (DONE, "pa"),
        "b": (CREATED, "pb"),
        "c": (SENDING, None),
    }


def test_two_writers_that_wrote_the_same_sequence_number_both_count(root: str):
    """A trigger rebuilt while the old one still wrote: neither segment overwrites the other."""
    first, second = Journal(root), Journal(root)
    first.replay()
    second.replay()
    write(first, sending("a"), created("a", "pa"))
    write(second, sending("b"), created("b", "pb"))
    names = segments(first.folder)
    assert len(names) == 2
    assert len({name.split("-")[1] for name in names}) == 1  # the same number, two files
    state = Journal(root).replay()
    assert {key: item.prediction_id for key, item in state.items.items()} == {"a": "pa", "b": "pb"}


def test_the_plan_and_stray_files_are_not_events(root: str):
    journal = Journal(root)
    journal.replay()
    with journal.folder.writing(PLAN_NAME) as plan:
        plan.write(json.dumps({"key": "a", "input": INPUT}) + "\n")
    write(journal, sending("a"))
    assert Journal(root).replay().items["a"].state == SENDING
    with journal.folder.open_text(PLAN_NAME) as plan:
        assert [json.loads(line) for line in plan] == [{"key": "a", "input": INPUT}]


# --- snapshots -------------------------------------------------------------------------------------------


def test_past_the_limit_segments_are_folded_into_one_snapshot_and_deleted(
    root: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 3)
    journal = Journal(root)
    journal.replay()
    write(journal, {"upload": "sha", "url": "https://files/x.png"}, sending("a"))
    write(journal, created("a", "pa"), sending("b"))
    assert not journal.wants_snapshot
    write(journal, done("a", prediction_id="pa", status="success"))
    assert journal.wants_snapshot
    before = Journal(root).replay()
    journal.record(created("b", "pb"))
    journal.write(journal.take(), list(journal.state.events()))
    (snapshot,) = segments(journal.folder)
    assert snapshot.startswith("snapshot-")
    assert not journal.wants_snapshot
    after = Journal(root).replay()
    assert after.uploads == before.uploads
    assert after.items["a"] == before.items["a"]
    assert after.items["b"] == ItemState(CREATED, INPUT, "pb", 100.0, 101.0)
    # Segments written after the snapshot are replayed on top of it, by this writer or the next.
    write(journal, done("b", prediction_id="pb", status="failed", error="boom"))
    later = Journal(root)
    assert later.replay().items["b"].state == DONE
    write(later, sending("c"))
    assert set(Journal(root).replay().items) == {"a", "b", "c"}


def test_segments_a_snapshot_already_holds_are_ignored_if_their_deletion_was_cut_short(
    root: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 1)
    journal = Journal(root)
    journal.replay()
    write(journal, sending("a"), created("a", "pa"))
    stale = segments(journal.folder)[0]
    content = journal.folder.read(stale)
    journal.record(done("a", prediction_id="pa", status="success"))
    journal.write(journal.take(), list(journal.state.events()))
    journal.folder.write(stale, content)  # as if the writer died before deleting it
    state = Journal(root).replay()
    assert state.items["a"].state == DONE


def test_flush_writes_a_snapshot_when_one_is_due(root: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 2)
    journal = Journal(root)
    journal.replay()
    for key in ("a", "b", "c"):
        journal.record(sending(key))
        journal.flush()
    # Two segments, then the third flush folds them and its own events into a snapshot.
    assert [name.split("-")[0] for name in segments(journal.folder)] == ["snapshot"]
    assert set(Journal(root).replay().items) == {"a", "b", "c"}


def test_a_snapshot_survives_a_json_round_trip_of_every_state(root: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 1)
    journal = Journal(root)
    journal.replay()
    write(journal, sending("a"), sending("b"), created("b", "pb"), {"key": "q", "state": QUEUED})
    write(journal, done("d", status="invalid", error="e"))
    expected = Journal(root).replay()
    journal.write([], list(journal.state.events()))
    assert Journal(root).replay() == expected


# --- the end of a batch ---------------------------------------------------------------------------------


def test_remove_deletes_the_journal_and_its_plan(root: str):
    journal = Journal(root)
    journal.replay()
    with journal.folder.writing(PLAN_NAME) as plan:
        plan.write("{}\n")
    write(journal, sending("a"))
    neighbour = Journal(root.rsplit("/", 1)[0] + "/other-task")
    write(neighbour, sending("x"))
    journal.remove()
    assert journal.folder.names() == []
    assert Journal(root).replay() == JournalState()
    assert set(neighbour.replay().items) == {"x"}  # another task's journal beside it is untouched
