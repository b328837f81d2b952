"""The journal's part in the re-run rule: what a create says it bought replays; the steps a changed
or freshly bought item takes from a created or stored state replay, while a forged step back still
does not; a journal of an older release still reads; and a results manifest seeds a journal only
with its own task instance's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_provider_eachlabs.batch.journal import (
    CREATED,
    DONE,
    SENDING,
    ItemState,
    Journal,
)

INPUT = {"prompt": "a meadow", "seed": 1}
KEYS = frozenset({"a", "b"})


def sending(key: str = "a", input_key: str = "k1", **extra: Any) -> dict[str, Any]:
    purchase = {"input_key": input_key, "digests": {"prompt": "d1"}, "try_number": 1, "max_tries": 0}
    return {"key": key, "state": SENDING, "at": 100.0, "input": INPUT, **purchase, **extra}


def stored(key: str = "a", prediction_id: str = "p-a") -> list[dict[str, Any]]:
    row = {"key": key, "prediction_id": prediction_id, "status": "success", "stored_path": f"{key}.png"}
    return [
        {"key": key, "state": CREATED, "id": prediction_id, "at": 101.0},
        {"key": key, "state": DONE, "row": row},
    ]


def written(root: Path, *events: dict[str, Any]) -> Journal:
    journal = Journal(str(root))
    journal.replay(KEYS)
    for event in events:
        journal.record(event)
    journal.write(journal.take())
    return journal


def test_a_create_s_purchase_replays_and_its_row_carries_it(tmp_path: Path):
    written(tmp_path, sending(fresh=True), *stored())
    item = Journal(str(tmp_path)).replay(KEYS).items["a"]

    assert (item.state, item.input_key, item.digests, item.try_number, item.fresh) == (
        DONE,
        "k1",
        {"prompt": "d1"},
        1,
        True,
    )
    assert item.purchase_row("ti") == {
        "input_key": "k1",
        "input_digests": {"prompt": "d1"},
        "try_number": 1,
        "max_tries": 0,
        "fresh": True,
        "task_instance": "ti",
    }


def test_another_input_or_a_fresh_purchase_may_follow_a_stored_item(tmp_path: Path):
    journal = written(tmp_path, sending(), *stored(), sending(input_key="k2"))
    assert Journal(str(tmp_path)).replay(KEYS).items["a"].input_key == "k2"

    fresh = sending(input_key="k2", fresh=True, max_tries=1)
    journal.record(fresh)
    journal.write(journal.take())
    item = Journal(str(tmp_path)).replay(KEYS).items["a"]
    assert (item.state, item.fresh, item.max_tries) == (SENDING, True, 1)


def test_the_same_input_sent_again_cannot_step_back_from_a_stored_item(tmp_path: Path):
    """What the batch never writes: the same input, not fresh, or fresh again in the same run."""
    written(tmp_path, sending(fresh=True), *stored(), sending(), sending(fresh=True))
    item = Journal(str(tmp_path)).replay(KEYS).items["a"]
    assert (item.state, item.prediction_id) == (DONE, "p-a")


def test_a_refusal_restates_the_failed_prediction_and_replays(tmp_path: Path):
    failed = {"key": "a", "prediction_id": "p-a", "status": "failed", "error_code": "PROVIDER_REJECTED"}
    refused = {**failed, "error": "input unchanged since try 1 ...", "final": True}
    written(
        tmp_path,
        sending(),
        {"key": "a", "state": CREATED, "id": "p-a", "at": 101.0},
        {"key": "a", "state": DONE, "row": failed},
        {"key": "a", "state": DONE, "row": refused},
    )
    assert Journal(str(tmp_path)).replay(KEYS).items["a"].row == refused


def test_an_item_invalid_now_ends_whatever_it_was(tmp_path: Path):
    invalid = {"key": "a", "status": "invalid", "error": "steps must be at least 1"}
    written(tmp_path, sending(), *stored(), {"key": "a", "state": DONE, "row": invalid})
    item = Journal(str(tmp_path)).replay(KEYS).items["a"]
    assert (item.state, item.row, item.input) == (DONE, invalid, None)


def test_a_snapshot_of_an_older_release_still_replays(tmp_path: Path):
    old = {
        "state": CREATED,
        "input": INPUT,
        "prediction_id": "p-a",
        "sent_at": 1.0,
        "created_at": 2.0,
        "row": None,
    }
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "snapshot-000000001.jsonl").write_text(
        json.dumps({"key": "a", "state": CREATED, "item": old})
    )
    item = Journal(str(tmp_path)).replay(KEYS).items["a"]
    assert item == ItemState(CREATED, INPUT, "p-a", 1.0, 2.0)
    assert item.input_key is None  # unknown: treated as unchanged by reruns.decide


def test_a_manifest_seeds_only_its_own_task_instance_s_rows(tmp_path: Path):
    root = tmp_path / "journal" / "ti-1"
    purchase = {"input_key": "k1", "input_digests": {"prompt": "d1"}, "try_number": 1, "max_tries": 0}
    rows = [
        {"key": "a", "prediction_id": "p-a", "status": "success", **purchase, "task_instance": "ti-1"},
        {"key": "b", "prediction_id": "p-b", "status": "success", **purchase, "task_instance": "ti-2"},
        {"key": "z", "prediction_id": "p-z", "status": "success", **purchase, "task_instance": "ti-1"},
        {"key": "b", "prediction_id": "p-b", "status": "bogus", **purchase, "task_instance": "ti-1"},
    ]
    journal = Journal(str(root))
    journal.replay(KEYS)

    assert journal.seed(rows, KEYS) == 1

    item = Journal(str(root)).replay(KEYS).items["a"]
    assert (item.state, item.prediction_id, item.input_key, item.digests) == (
        DONE,
        "p-a",
        "k1",
        {"prompt": "d1"},
    )
    assert set(Journal(str(root)).replay(KEYS).items) == {"a"}
