"""The task record: three states, one retention, and records written by earlier releases still read."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from airflow_provider_eachlabs.exceptions import EachlabsUnsafeAnswerError
from airflow_provider_eachlabs.record import RECORD_KEY, RETENTION, UPLOADS_KEY, RecordState, TaskRecord
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import DATA, RecordingStateStore, context, fill


def test_the_three_states_and_what_is_saved():
    store = RecordingStateStore()
    ctx = context(store)
    record = TaskRecord.load(ctx)
    assert record.state is RecordState.NOTHING_SENT
    record.sending(100.0)
    record.save(ctx)
    assert store[RECORD_KEY] == {"version": 1, "finished_ids": [], "sent_at": 100.0}
    assert TaskRecord.load(ctx).state is RecordState.SENT_WITHOUT_ID
    record.created("p-1", 101.0)
    record.uploads["abc"] = "https://cdn.example.com/u.png"
    record.save(ctx)
    assert TaskRecord.load(ctx).state is RecordState.CREATED
    assert store.retention == {RECORD_KEY: RETENTION, UPLOADS_KEY: RETENTION}
    record.finished()
    record.sending(102.0)
    assert (record.finished_ids, record.prediction_id) == (["p-1"], None)


def test_without_task_state_store_the_record_is_empty_and_never_saved():
    ctx = {"ti": None}
    record = TaskRecord.load(ctx)  # type: ignore[arg-type]
    assert not record.stored and record.state is RecordState.NOTHING_SENT
    record.sending(1.0)
    record.save(ctx)  # type: ignore[arg-type]


def test_a_record_with_an_unsafe_id_is_refused():
    store = RecordingStateStore({RECORD_KEY: {"id": "../../x", "started_at": 1.0}})
    with pytest.raises(EachlabsUnsafeAnswerError):
        TaskRecord.load(context(store))


def test_a_retry_reads_the_record_an_earlier_release_wrote_and_re_attaches(eachlabs_conn: EachlabsSimulator):
    """Literal dicts in the shape releases before the versioned record wrote (no ``version``)."""
    first = fill()
    scene, mask = (DATA / "scene.png").read_bytes(), (DATA / "scene_mask.png").read_bytes()
    uploads = {
        hashlib.sha256(data).hexdigest(): first.hook.upload_bytes(data, "image/png") for data in (scene, mask)
    }
    body = {
        "prompt": "an empty meadow",
        "image": uploads[hashlib.sha256(scene).hexdigest()],
        "mask": uploads[hashlib.sha256(mask).hexdigest()],
        "steps": 50,
        "prompt_upsampling": False,
        "guidance": 3,
        "safety_tolerance": 2,
        "output_format": "png",
    }
    created = first.hook.create_prediction("flux-fill-pro", body)
    uploads_before = eachlabs_conn.counters.uploads
    store = RecordingStateStore(
        {
            RECORD_KEY: {"id": created, "started_at": time.time(), "finished_ids": []},
            UPLOADS_KEY: uploads,
        }
    )
    result = fill().execute(context(store))
    assert (result["prediction_id"], result["status"]) == (created, "success")  # waited for, not cut short
    assert eachlabs_conn.counters.create_requests == 1
    assert eachlabs_conn.counters.uploads == uploads_before


def test_a_record_sent_without_an_id_in_the_old_shape_finds_its_prediction(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    ctx = context(RecordingStateStore())
    record = TaskRecord.load(ctx)
    body = fill().build_input(ctx, record)
    store = RecordingStateStore(
        {RECORD_KEY: {"sent_at": time.time(), "finished_ids": []}, UPLOADS_KEY: record.uploads}
    )
    orphan = fill().hook.create_prediction("flux-fill-pro", body)
    assert fill().execute(context(store))["prediction_id"] == orphan
    assert eachlabs_conn.counters.create_requests == 1
