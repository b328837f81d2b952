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
from airflow_provider_eachlabs.exceptions import EachlabsBatchError

INPUT = {"prompt": "a meadow", "image": "https://example.com/a.png", "seed": 1}
KEYS = frozenset({"a", "b", "c", "d", "q", "x", "sent", "made", "stored", "limited", "bad"})


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
    assert Journal(root).replay(KEYS) == JournalState()


def test_replay_gives_every_item_the_state_its_last_event_left(root: str):
    journal = Journal(root)
    journal.replay(KEYS)
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
    state = Journal(root).replay(KEYS)
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
    journal.replay(KEYS)
    write(journal, sending("a", at=1.0), created("a", "p1", at=2.0))
    write(journal, {"key": "a", "state": QUEUED, "id": "p1"}, sending("a", at=3.0, seed=2))
    item = Journal(root).replay(KEYS).items["a"]
    assert (item.state, item.sent_at, item.input, item.prediction_id) == (
        SENDING,
        3.0,
        {**INPUT, "seed": 2},
        "p1",
    )
    write(journal, created("a", "p2", at=4.0), done("a", prediction_id="p2", status="success"))
    item = Journal(root).replay(KEYS).items["a"]
    assert (item.state, item.prediction_id, item.created_at) == (DONE, "p2", 4.0)


def test_nothing_recorded_reaches_storage_before_it_is_written(root: str):
    journal = Journal(root)
    journal.replay(KEYS)
    journal.record(sending("a"))
    assert journal.has_pending
    assert journal.state.items["a"].state == SENDING  # the writer's own state is current at once
    assert Journal(root).replay(KEYS).items == {}
    journal.write(journal.take())
    assert not journal.has_pending
    assert Journal(root).replay(KEYS).items["a"].state == SENDING
    journal.write([])  # nothing to say: no empty segment
    assert len(segments(journal.folder)) == 1


def test_segments_of_two_writers_one_after_the_other_replay_in_order(root: str):
    """A try writes, dies; the next try replays and carries on; a third reader sees both, in order."""
    first = Journal(root)
    first.replay(KEYS)
    write(first, sending("a"), sending("b"))
    write(first, created("a", "pa"))
    second = Journal(root)  # the retry: another writer
    assert second.replay(KEYS).items["a"].state == CREATED
    write(second, created("b", "pb"), done("a", prediction_id="pa", status="success"))
    write(second, sending("c"))
    names = segments(second.folder)
    assert len(names) == 4
    assert len({name.rsplit("-", 1)[1] for name in names}) == 2  # two writers, each its own names
    state = Journal(root).replay(KEYS)
    assert {key: (item.state, item.prediction_id) for key, item in state.items.items()} == {
        "a": (DONE, "pa"),
        "b": (CREATED, "pb"),
        "c": (SENDING, None),
    }


def test_two_writers_that_wrote_the_same_sequence_number_both_count(root: str):
    """A trigger rebuilt while the old one still wrote: neither segment overwrites the other."""
    first, second = Journal(root), Journal(root)
    first.replay(KEYS)
    second.replay(KEYS)
    write(first, sending("a"), created("a", "pa"))
    write(second, sending("b"), created("b", "pb"))
    names = segments(first.folder)
    assert len(names) == 2
    assert len({name.split("-")[1] for name in names}) == 1  # the same number, two files
    state = Journal(root).replay(KEYS)
    assert {key: item.prediction_id for key, item in state.items.items()} == {"a": "pa", "b": "pb"}


def test_the_plan_and_stray_files_are_not_events(root: str):
    journal = Journal(root)
    journal.replay(KEYS)
    with journal.folder.writing(PLAN_NAME) as plan:
        plan.write(json.dumps({"key": "a", "input": INPUT}) + "\n")
    write(journal, sending("a"))
    assert Journal(root).replay(KEYS).items["a"].state == SENDING
    with journal.folder.open_text(PLAN_NAME) as plan:
        assert [json.loads(line) for line in plan] == [{"key": "a", "input": INPUT}]


# --- snapshots -------------------------------------------------------------------------------------------


def test_past_the_limit_segments_are_folded_into_one_snapshot_and_deleted(
    root: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 3)
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, {"upload": "sha", "url": "https://files/x.png"}, sending("a"))
    write(journal, created("a", "pa"), sending("b"))
    assert not journal.wants_snapshot
    write(journal, done("a", prediction_id="pa", status="success"))
    assert journal.wants_snapshot
    before = Journal(root).replay(KEYS)
    journal.record(created("b", "pb"))
    journal.write(journal.take(), list(journal.state.events()))
    (snapshot,) = segments(journal.folder)
    assert snapshot.startswith("snapshot-")
    assert not journal.wants_snapshot
    after = Journal(root).replay(KEYS)
    assert after.uploads == before.uploads
    assert after.items["a"] == before.items["a"]
    assert after.items["b"] == ItemState(CREATED, INPUT, "pb", 100.0, 101.0)
    # Segments written after the snapshot are replayed on top of it, by this writer or the next.
    write(journal, done("b", prediction_id="pb", status="failed", error="boom"))
    later = Journal(root)
    assert later.replay(KEYS).items["b"].state == DONE
    write(later, sending("c"))
    assert set(Journal(root).replay(KEYS).items) == {"a", "b", "c"}


def test_segments_a_snapshot_already_holds_are_ignored_if_their_deletion_was_cut_short(
    root: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 1)
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"), created("a", "pa"))
    stale = segments(journal.folder)[0]
    content = journal.folder.read(stale)
    journal.record(done("a", prediction_id="pa", status="success"))
    journal.write(journal.take(), list(journal.state.events()))
    journal.folder.write(stale, content)  # as if the writer died before deleting it
    state = Journal(root).replay(KEYS)
    assert state.items["a"].state == DONE


def test_flush_writes_a_snapshot_when_one_is_due(root: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 2)
    journal = Journal(root)
    journal.replay(KEYS)
    for key in ("a", "b", "c"):
        journal.record(sending(key))
        journal.flush()
    # Two segments, then the third flush folds them and its own events into a snapshot.
    assert [name.split("-")[0] for name in segments(journal.folder)] == ["snapshot"]
    assert set(Journal(root).replay(KEYS).items) == {"a", "b", "c"}


def test_a_snapshot_survives_a_json_round_trip_of_every_state(root: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal_module, "SEGMENTS_BEFORE_SNAPSHOT", 1)
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"), sending("b"), created("b", "pb"), {"key": "q", "state": QUEUED})
    write(journal, done("d", status="invalid", error="e"))
    expected = Journal(root).replay(KEYS)
    journal.write([], list(journal.state.events()))
    assert Journal(root).replay(KEYS) == expected


# --- the end of a batch ---------------------------------------------------------------------------------


def test_remove_deletes_the_journal_and_its_plan(root: str):
    journal = Journal(root)
    journal.replay(KEYS)
    with journal.folder.writing(PLAN_NAME) as plan:
        plan.write("{}\n")
    write(journal, sending("a"))
    neighbour = Journal(root.rsplit("/", 1)[0] + "/other-task")
    write(neighbour, sending("x"))
    journal.remove()
    assert journal.folder.names() == []
    assert Journal(root).replay(KEYS) == JournalState()
    assert set(neighbour.replay(KEYS).items) == {"x"}  # another task's journal beside it is untouched


# --- a journal written by someone else ----------------------------------------------------------------
# Whoever can write output_path can write the journal: a replay keeps only the plan's keys and the
# entries this provider writes, and an item whose entry is dropped stays where its last valid one left it.


def forge(journal: Journal, *lines: Any, name: str = "segment-000000900-0badc0de.jsonl") -> None:
    """A segment written by hand, as someone with write access to the output folder could."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    journal.folder.write(name, text.encode())


def test_entries_for_keys_outside_the_plan_are_ignored_and_counted_in_one_warning(
    root: str, caplog: pytest.LogCaptureFixture
):
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"))
    forge(journal, sending("intruder"), created("intruder", "p-x"), {"key": "intruder", "state": QUEUED})

    with caplog.at_level("WARNING"):
        state = Journal(root).replay({"a"})

    assert set(state.items) == {"a"}
    (warning,) = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert "3 entries for keys outside this batch and 0 entries this provider did not write" in warning


def row(**fields: Any) -> dict[str, Any]:
    return {
        "key": "a",
        "state": DONE,
        "row": {"key": "a", "prediction_id": "p-a", "status": "success", **fields},
    }


GARBLED = [
    {"key": "a", "state": "paid", "id": "p-a"},  # not a state
    {"key": "a", "state": CREATED, "id": "../../etc", "at": 2.0},  # not a prediction id
    {"key": "a", "state": CREATED, "id": 7, "at": 2.0},
    {"key": "a", "state": CREATED, "id": "p-b", "at": "soon"},  # times are finite numbers
    {"key": "a", "state": CREATED, "id": "p-b", "at": float("nan")},
    {"key": "a", "state": SENDING, "at": 3.0, "input": ["a", "list"]},
    {"key": "a", "state": DONE, "row": 5},
    row(cost=-1),
    {
        "key": "a",
        "state": DONE,
        "row": {"key": "a", "prediction_id": "p-a", "status": "success", "cost": True},
    },
    {
        "key": "a",
        "state": DONE,
        "row": {"key": "a", "prediction_id": "p-a", "status": "success", "cost": "1000"},
    },
    {
        "key": "a",
        "state": DONE,
        "row": {"key": "a", "prediction_id": "p-a", "status": "success", "cost": 1e400},
    },
    {
        "key": "a",
        "state": DONE,
        "row": {"key": "b", "prediction_id": "p-a", "status": "success"},
    },  # another key
    row(status="great"),
    row(x=1),
    {
        "key": "a",
        "state": CREATED,
        "item": {"state": CREATED, "prediction_id": "p-b"},
    },  # whole items: snapshots
    {"key": ["a"], "state": QUEUED},
    {"upload": "sha", "url": 5},
]


@pytest.mark.parametrize("entry", GARBLED, ids=range(len(GARBLED)))
def test_an_entry_this_provider_did_not_write_is_dropped_and_the_item_keeps_its_last_valid_state(
    root: str, entry: dict[str, Any]
):
    """Never a crash, and never "new": a created item stays created, so it is re-attached to, not bought."""
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"), created("a", "p-a"))
    forge(journal, entry)

    state = Journal(root).replay(KEYS)

    assert state.items == {"a": ItemState(CREATED, INPUT, "p-a", 100.0, 101.0)}
    assert state.uploads == {}


def test_a_lone_forged_done_does_not_stand_for_an_item_never_bought(root: str):
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"))
    forge(
        journal,
        done("a", prediction_id="p-fake", status="success", stored_path="a.png", cost=0.05),
        done("b", prediction_id="p-fake", status="success", stored_path="b.png", cost=0.05),
    )

    state = Journal(root).replay(KEYS)

    assert state.items == {"a": ItemState(SENDING, INPUT, None, 100.0)}  # looked for, then bought


@pytest.mark.parametrize(
    "step_back",
    [
        {"key": "a", "state": QUEUED},  # the queue after a failure names the failed prediction
        {"key": "a", "state": QUEUED, "id": "p-other"},
        sending("a", at=200.0),
        done("a", status="failed", error="forged"),
        done("a", prediction_id="p-other", status="failed", error="forged"),
        created("a", "p-other"),
    ],
    ids=["queued", "queued-other", "sending", "failed", "failed-other", "created-again"],
)
@pytest.mark.parametrize("stored", [False, True], ids=["created", "stored"])
def test_a_forged_step_back_cannot_make_a_created_or_stored_item_bought_again(
    root: str, step_back: dict[str, Any], stored: bool
):
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"), created("a", "p-a"))
    if stored:
        write(journal, done("a", prediction_id="p-a", status="success", stored_path="a.png", cost=0.05))
    before = Journal(root).replay(KEYS)
    forge(journal, step_back)

    assert Journal(root).replay(KEYS) == before


def test_what_the_batch_itself_writes_after_a_failure_still_replays(root: str):
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"), created("a", "p1"), {"key": "a", "state": QUEUED, "id": "p1"})
    write(journal, sending("a", at=3.0), {"key": "a", "state": QUEUED}, sending("a", at=4.0))
    write(journal, done("a", status="failed", error="the create failed"), sending("a", at=5.0))
    write(journal, created("a", "p2"), done("a", prediction_id="p2", status="success", cost=0.05))
    write(journal, done("a", prediction_id="p2", status="success", cost=0.05, stored_path="a.png"))

    item = Journal(root).replay(KEYS).items["a"]

    assert (item.state, item.prediction_id, item.sent_at) == (DONE, "p2", 5.0)
    assert item.row is not None and item.row["stored_path"] == "a.png"


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        (
            "segment-000000900-0badc0de.jsonl",
            b'{"key": "a", "state": "queued"}\n{"key": ',
            "line 2 is not JSON",
        ),
        ("segment-000000900-0badc0de.jsonl", b'["a", "queued"]\n', "line 1 is not a JSON object"),
        ("segment-000000900-0badc0de.jsonl", b"[" * 100_000 + b"\n", "line 1 is not JSON"),
        ("segment-000000900-0badc0de.jsonl", b'{"key": "\xff"}\n', "UnicodeDecodeError"),
        ("snapshot-000000900.jsonl", b"\x00" * 64, "line 1 is not JSON"),
        ("segment-1e9-x.jsonl", b"", "its name is not one this provider writes"),
        ("snapshot-latest.jsonl", b"", "its name is not one this provider writes"),
        ("segment-000000900-0badc0de.jsonl", b" " * 300_000, "it is larger than 200000 characters"),
    ],
    ids=["truncated", "not-an-object", "nested", "not-utf8", "binary", "name", "snapshot-name", "too-large"],
)
def test_an_unreadable_journal_file_is_a_final_error_naming_it(
    root: str, name: str, content: bytes, why: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "MAX_FILE_CHARS", 200_000)
    journal = Journal(root)
    journal.replay(KEYS)
    write(journal, sending("a"))
    journal.folder.write(name, content)

    with pytest.raises(EachlabsBatchError) as caught:
        Journal(root).replay(KEYS)

    assert caught.value.final
    assert f"The batch's journal file {journal.folder.root}/{name} cannot be read: " in str(caught.value)
    assert why in str(caught.value)


def test_a_segment_that_is_not_a_file_is_a_final_error_naming_it(tmp_path: Path):
    root = tmp_path / "journal"
    journal = Journal(str(root))
    journal.replay(KEYS)
    write(journal, sending("a"))
    (segment,) = segments(journal.folder)
    (root / segment).unlink()
    (root / segment).symlink_to(tmp_path)  # listed as a name, read as a folder

    with pytest.raises(EachlabsBatchError, match=rf"journal file {root}/{segment} cannot be read: \w+Error"):
        journal_module.Journal(str(root))._read(segment)


def test_the_plan_names_every_key_and_a_missing_or_garbled_plan_is_a_final_error(root: str):
    journal = Journal(root)
    with pytest.raises(EachlabsBatchError, match=r"plan\.jsonl cannot be read: it does not exist") as caught:
        journal.plan_keys()
    assert caught.value.final
    with journal.folder.writing(PLAN_NAME) as plan:
        plan.write(json.dumps({"key": "a", "input": INPUT}) + "\n" + json.dumps({"key": "b"}) + "\n")
    assert journal.plan_keys() == {"a", "b"}
    with journal.folder.writing(PLAN_NAME) as plan:
        plan.write(json.dumps({"key": "a", "input": "not an input"}) + "\n")
    with pytest.raises(EachlabsBatchError, match=r"plan\.jsonl cannot be read: line 1 is not a plan entry"):
        journal.plan_keys()
