"""FluxFillBatchOperator against the simulator over real HTTP: what a batch sends, buys, stores and
reports, how it fails, and how a retry, a killed worker or a restarted triggerer carries on without
paying twice. The simulator's counters say how many predictions were bought.

Most batches run on the worker (``deferrable=False``); the deferrable path runs ``BatchTrigger.run``
in the test, as the triggerer would, including a trigger rebuilt from ``serialize()`` mid-batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_eachlabs.batch.journal import JOURNAL_FOLDER
from airflow_provider_eachlabs.exceptions import EachlabsBatchError
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator
from airflow_provider_eachlabs.testing import EachlabsSimulator
from airflow_provider_eachlabs.triggers.batch import BatchTrigger
from tests.conftest import API_KEY, ROOT, connection_json
from tests.integration.test_operators import RecordingStateStore
from tests.integration.test_storage_roundtrip import BUCKET, s3, s3_endpoint  # noqa: F401 (fixtures)

DATA = ROOT / "example_dags" / "data"
SCENE, MASK = DATA / "scene.png", DATA / "scene_mask.png"
DEFAULTS = {"prompt": "an empty meadow", "image": str(SCENE), "mask": str(MASK), "output_format": "png"}
RESULTS = "eachlabs-results.jsonl"
REJECTED = "The provider rejected the prompt (content policy)."


class BatchTI:
    """The task instance as the batch reads it: its identity names the journal, shared by its tries."""

    dag_id, run_id, task_id, map_index = "batch_dag", "run-1", "fill_batch", -1

    def __init__(self) -> None:
        self.start_date = datetime.now(timezone.utc)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def context() -> dict[str, Any]:
    """A fresh try of the same task instance."""
    return {"ti": BatchTI()}


@pytest.fixture
def start_simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., EachlabsSimulator]]:
    """Start a simulator with the given caps and timings, with ``eachlabs_default`` pointing at it."""
    started: list[EachlabsSimulator] = []

    def start(**settings: Any) -> EachlabsSimulator:
        sim = EachlabsSimulator(api_key=API_KEY, **{"predict_seconds": 0.3, **settings}).start()
        started.append(sim)
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(sim.base_url))
        return sim

    yield start
    for sim in started:
        sim.stop()


def keyed(count: int) -> list[dict[str, Any]]:
    return [{"key": f"img{n}", "seed": n} for n in range(count)]


def batch(
    output_path: Path | str, items: list[dict[str, Any]] | None = None, **kwargs: Any
) -> FluxFillBatchOperator:
    arguments: dict[str, Any] = {
        "task_id": "fill_batch",
        "defaults": DEFAULTS,
        "output_path": str(output_path),
        "deferrable": False,
        **kwargs,
    }
    if items is not None:
        arguments["items"] = items
    return FluxFillBatchOperator(**arguments)


def creates(sim: EachlabsSimulator) -> int:
    return sum(sim.counters.creates.values())


def rows_in(content: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in content.splitlines()]
    keyed_rows = {row["key"]: row for row in rows}
    assert len(keyed_rows) == len(rows), "an item has two lines in the results manifest"
    return keyed_rows


def results(out: Path) -> dict[str, dict[str, Any]]:
    return rows_in((out / RESULTS).read_text())


def journal_files(out: Path) -> list[Path]:
    return [path for path in (out / JOURNAL_FOLDER).rglob("*") if path.is_file()]


def outputs(out: Path) -> list[str]:
    return sorted(path.name for path in out.glob("*.png"))


def assert_stored(sim: EachlabsSimulator, row: dict[str, Any], path: Path) -> None:
    """The file at ``path`` is the output of the row's prediction, exactly as the row describes it."""
    stored = path.read_bytes()
    assert row["status"] == "success"
    assert row["stored_path"] == str(path)
    assert row["sha256"] == hashlib.sha256(stored).hexdigest()
    assert row["bytes"] == len(stored)
    assert stored == sim.file_bytes(row["output_url"])
    assert row["output_url"] == f"{sim.base_url}/files/outputs/{row['prediction_id']}.png"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


# --- the happy path ------------------------------------------------------------------------------------


def test_a_batch_buys_one_prediction_per_item_and_stores_each_under_its_key(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator(max_in_flight=3)
    out = tmp_path / "out"

    summary = batch(out, keyed(7), max_in_flight=3).execute(context())

    rows = results(out)
    assert sorted(rows) == [f"img{n}" for n in range(7)]
    for n in range(7):
        row = rows[f"img{n}"]
        assert_stored(sim, row, out / f"img{n}.png")
        assert (row["cost"], row["predict_time"]) == (0.05, 0.3)
        sent = sim.predictions[row["prediction_id"]].input
        # Each item's own fields reached its own prediction, over the defaults; files went up once.
        assert sent["seed"] == n
        assert {name: sent[name] for name in ("prompt", "output_format")} == {
            "prompt": "an empty meadow",
            "output_format": "png",
        }
        assert sent["image"].startswith(f"{sim.base_url}/files/uploads/")
        assert sent["mask"].startswith(f"{sim.base_url}/files/uploads/")
    assert len({row["prediction_id"] for row in rows.values()}) == 7
    assert summary == {
        "items": 7,
        "succeeded": 7,
        "failed": 0,
        "invalid": 0,
        "spend": 0.35,
        "p50_predict_time": 0.3,
        "p95_predict_time": 0.3,
        "creates": 7,
        "rate_limited": 0,  # three in flight at most, as the API allows: it never had to say 429
        "results_path": str(out / RESULTS),
        "first_failures": [],
        "all_failures_final": False,
    }
    assert creates(sim) == sim.counters.create_requests == 7
    assert sim.counters.uploads == 2  # the shared image and mask, once each
    assert sim.counters.cancels == 0
    # What is left in the output folder: the outputs and the results, no journal.
    assert outputs(out) == [f"img{n}.png" for n in range(7)]
    assert sorted(path.name for path in out.iterdir() if path.name != JOURNAL_FOLDER) == sorted(
        [*outputs(out), RESULTS]
    )
    assert journal_files(out) == []


def test_items_from_a_jsonl_manifest_with_their_own_images(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    manifest = tmp_path / "tonight.jsonl"
    lines = [
        {"key": "sofa", "image": str(SCENE), "mask": str(MASK), "prompt": "a sofa"},
        {"prompt": "a lamp"},
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out"

    summary = batch(out, items_path=str(manifest), results_path=str(tmp_path / "report.jsonl")).execute(
        context()
    )

    assert summary["succeeded"] == 2
    rows = rows_in((tmp_path / "report.jsonl").read_text())
    assert outputs(out) == ["1.png", "sofa.png"]  # an item without a key is named by its position
    assert sim.predictions[rows["sofa"]["prediction_id"]].input["prompt"] == "a sofa"
    assert sim.predictions[rows["1"]["prediction_id"]].input["prompt"] == "a lamp"
    assert not (out / RESULTS).exists()


# --- bad items ------------------------------------------------------------------------------------------


def test_a_bad_item_refuses_the_batch_before_anything_is_uploaded_or_bought(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    items = [
        {"key": "fine", "seed": 1},
        {"key": "steep", "steps": 51},
        {"key": "gif", "output_format": "gif"},
        {"key": "colour", "colour": "red"},
    ]
    ctx = context()
    with pytest.raises(AirflowFailException) as caught:
        batch(out, items).execute(ctx)
    message = str(caught.value)
    assert message.startswith("3 of 4 items are invalid, so nothing was sent (on_invalid='fail'")
    told = ctx["ti"].xcoms["eachlabs_outcome"]  # the tab says why, and that nothing was bought
    assert (told["ok"], told["prediction_id"], told["error_message"]) == (False, None, message)
    assert "Invalid item 'steep' (items[1]) steps=51: must be from 1 to 50 inclusive" in message
    assert "Invalid item 'gif' (items[2]) output_format='gif': must be one of jpg, png" in message
    assert "Invalid item 'colour' (items[3]) colour='red': is not a field of flux-fill-pro" in message
    assert sim.counters.requests == 0
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_a_bad_line_of_a_manifest_is_named_by_its_line(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    manifest = tmp_path / "items.csv"
    manifest.write_text("key,seed,mask\na,1,\nb,two,\nc,3,/nowhere/mask.png\n")
    with pytest.raises(AirflowFailException) as caught:
        batch(tmp_path / "out", items_path=str(manifest)).execute(context())
    message = str(caught.value)
    assert "2 of 3 items are invalid" in message
    assert "Invalid item 'b' (line 3) seed='two': must be an integer" in message
    assert "Invalid item 'c' (line 4) mask='/nowhere/mask.png': no file exists at this path" in message
    assert sim.counters.requests == 0


def test_duplicate_keys_refuse_the_batch_naming_both_places(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    with pytest.raises(
        AirflowFailException, match=r"Invalid item 'a' \(items\[2\]\) key='a': is also the key of items\[0\]"
    ):
        batch(tmp_path / "out", [{"key": "a"}, {"key": "b"}, {"key": "a"}]).execute(context())
    assert sim.counters.requests == 0


def test_on_invalid_skip_runs_the_others_and_records_why_in_the_results(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"

    summary = batch(out, [*keyed(3), {"key": "bad", "steps": 0}], on_invalid="skip").execute(context())

    assert (summary["succeeded"], summary["failed"], summary["invalid"], summary["items"]) == (3, 0, 1, 4)
    assert results(out)["bad"] == {
        "key": "bad",
        "status": "invalid",
        "error": "Invalid item 'bad' (items[3]) steps=0: must be from 1 to 50 inclusive",
    }
    assert outputs(out) == ["img0.png", "img1.png", "img2.png"]
    assert creates(sim) == 3


# --- failed predictions ---------------------------------------------------------------------------------


def test_rejected_items_fail_the_task_at_once_and_the_others_are_stored(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    sim.inject("create", "fail", times=2, error_code="PROVIDER_REJECTED", error_message=REJECTED)
    out = tmp_path / "out"

    with pytest.raises(AirflowFailException) as caught:  # every failure final: no Airflow retry helps
        batch(out, keyed(5)).execute(context())

    rows = results(out)
    rejected = sorted(key for key, row in rows.items() if row["status"] != "success")
    assert len(rejected) == 2
    for key in rejected:
        assert rows[key]["status"] == "failed"
        assert rows[key]["error_code"] == "PROVIDER_REJECTED"
        assert rows[key]["final"] is True
        assert REJECTED in rows[key]["error"]
        assert sim.predictions[rows[key]["prediction_id"]].status == "failed"
    for key in set(rows) - set(rejected):
        assert_stored(sim, rows[key], out / f"{key}.png")
    assert outputs(out) == sorted(f"{key}.png" for key in set(rows) - set(rejected))
    message = str(caught.value)
    assert message.startswith("2 of 5 items failed (max_failed=0): ")
    for key in rejected:
        assert (
            f"{key}: Eachlabs prediction {rows[key]['prediction_id']} ended with status 'failed': " in message
        )
    assert f"PROVIDER_REJECTED: {REJECTED}" in message
    assert f"Every item's result is in {out / RESULTS}" in message
    assert creates(sim) == 5  # a rejection is not bought again within the batch


def test_failures_within_max_failed_let_the_task_succeed(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    sim.inject("create", "fail", times=2, error_code="NSFW_CONTENT", error_message="flagged")
    out = tmp_path / "out"

    summary = batch(out, keyed(5), max_failed=2).execute(context())

    assert (summary["succeeded"], summary["failed"], summary["all_failures_final"]) == (3, 2, True)
    assert sorted(failure["key"] for failure in summary["first_failures"]) == sorted(
        key for key, row in results(out).items() if row["status"] == "failed"
    )
    assert all("NSFW_CONTENT: flagged" in failure["error"] for failure in summary["first_failures"])
    assert summary["spend"] == 0.25  # a rejected prediction is billed too
    assert journal_files(out) != []  # failures stay in the journal for a later try


def test_a_transient_failure_is_retried_in_the_batch_and_one_left_over_is_not_final(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """The first prediction fails transiently, the second is rejected; with one item retry the first
    item is bought again and stored, with none the task fails for Airflow to retry."""
    sim = start_simulator()
    sim.inject("create", "fail", error_code="PROVIDER_UNAVAILABLE", error_message="try later")
    sim.inject("create", "fail", error_code="PROVIDER_REJECTED", error_message=REJECTED)
    summary = batch(tmp_path / "a", keyed(4), item_retries=1, max_failed=1).execute(context())
    assert (summary["succeeded"], summary["failed"], summary["creates"]) == (3, 1, 5)
    assert creates(sim) == 5

    sim.inject("create", "fail", error_code="PROVIDER_UNAVAILABLE", error_message="try later")
    sim.inject("create", "fail", error_code="PROVIDER_REJECTED", error_message=REJECTED)
    with pytest.raises(EachlabsBatchError) as caught:
        batch(tmp_path / "b", keyed(4), item_retries=0).execute(context())
    assert not caught.value.final
    message = str(caught.value)
    assert message.startswith("2 of 4 items failed (max_failed=0): ")
    assert "PROVIDER_UNAVAILABLE: try later" in message and "PROVIDER_REJECTED" in message
    assert "a retry of the task redoes only the failed items" in message


# --- transient faults and 429s ----------------------------------------------------------------------------


def test_transient_faults_at_every_step_are_absorbed_and_buy_nothing_extra(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    sim.inject("presign", "status", status=503)
    sim.inject("upload", "drop")
    sim.inject("create", "status", status=502)  # before the API made anything: looked up, then sent
    sim.inject("get", "status", status=500, times=2)
    sim.inject("get", "malformed")
    sim.inject("file", "status", status=503)
    sim.inject("executions", "status", status=500)
    out = tmp_path / "out"

    summary = batch(out, keyed(4)).execute(context())

    assert (summary["succeeded"], summary["failed"]) == (4, 0)
    assert creates(sim) == 4
    assert outputs(out) == [f"img{n}.png" for n in range(4)]


def test_a_create_whose_answer_was_lost_is_looked_up_not_sent_again(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    sim.inject("create", "drop", after_processing=True)  # made, then the connection reset
    out = tmp_path / "out"

    summary = batch(out, keyed(3)).execute(context())

    assert summary["succeeded"] == 3
    assert creates(sim) == sim.counters.create_requests == 3
    assert sim.counters.executions >= 1  # the lost one was found in the account's executions
    assert len({row["prediction_id"] for row in results(out).values()}) == 3


def test_a_429_from_elsewhere_pauses_the_creates_and_loses_none(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    sim.inject("create", "status", status=429, retry_after=1, message="Rate limit exceeded")
    out = tmp_path / "out"
    started = time.time()

    summary = batch(out, keyed(3), max_in_flight=1).execute(context())

    assert (summary["succeeded"], summary["rate_limited"], summary["creates"]) == (3, 1, 3)
    assert creates(sim) == 3
    assert sim.counters.create_requests == 4  # the refused one, sent again after its Retry-After
    # The first create was refused; nothing was created before its Retry-After had passed.
    assert min(prediction.created_at for prediction in sim.predictions.values()) >= started + 1.0


def test_a_batch_sharing_its_key_with_a_running_prediction_backs_off_and_finishes(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """Someone else holds one of the key's three slots: the API answers 429 when the batch takes all
    three; the batch shrinks its share and finishes, every item bought once, the other left alone."""
    sim = start_simulator(max_in_flight=3)
    sim.inject("create", "never_finish")
    other = EachlabsHook().create_prediction("echo-test", {"text": "someone else's"})
    out = tmp_path / "out"

    summary = batch(out, keyed(6), max_in_flight=3).execute(context())

    assert (summary["succeeded"], summary["creates"]) == (6, 6)
    assert summary["rate_limited"] >= 1
    assert creates(sim) == 7
    assert sim.counters.create_requests == 7 + summary["rate_limited"]
    assert sim.predictions[other].status == "processing"
    assert sim.counters.cancels == 0


# --- storage, retries and resumes -----------------------------------------------------------------------


def test_an_output_that_could_not_be_stored_is_stored_by_the_next_try_without_buying_again(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    blocker = out / "img1.png"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("a folder where the output should go")

    with pytest.raises(EachlabsBatchError) as caught:
        batch(out, keyed(4), item_retries=1).execute(context())

    assert not caught.value.final  # the storage may be back on the next try
    row = results(out)["img1"]
    assert (row["status"], row["prediction_status"]) == ("failed", "success")
    assert f"img1: Prediction {row['prediction_id']} succeeded, but its output could not be written" in str(
        caught.value
    )
    paid = row["prediction_id"]
    assert creates(sim) == 4

    (blocker / "keep").unlink()
    blocker.rmdir()
    summary = batch(out, keyed(4), item_retries=1).execute(context())  # the task's retry

    assert (summary["succeeded"], summary["failed"], summary["creates"]) == (4, 0, 0)
    assert creates(sim) == 4
    rows = results(out)
    assert rows["img1"]["prediction_id"] == paid
    for n in range(4):
        assert_stored(sim, rows[f"img{n}"], out / f"img{n}.png")
    assert journal_files(out) == []


def test_a_retry_after_failures_redoes_only_the_failed_items(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    sim.inject("create", "fail", error_code="PROVIDER_UNAVAILABLE", error_message="try later")
    out = tmp_path / "out"
    with pytest.raises(EachlabsBatchError):
        batch(out, keyed(4), item_retries=0).execute(context())
    (failed,) = [key for key, row in results(out).items() if row["status"] == "failed"]
    stored_before = {name: (out / name).stat().st_mtime_ns for name in outputs(out)}

    summary = batch(out, keyed(4), item_retries=0).execute(context())

    assert (summary["succeeded"], summary["creates"]) == (4, 1)
    assert creates(sim) == 5
    assert {name: (out / name).stat().st_mtime_ns for name in stored_before} == stored_before
    assert (out / f"{failed}.png").is_file()


def start_child_try(**kwargs: Any) -> subprocess.Popen[str]:
    arguments = {"defaults": DEFAULTS, "deferrable": False, **kwargs}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.children.batch_try", json.dumps(arguments)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_a_worker_killed_mid_batch_is_followed_by_a_try_that_pays_for_nothing_twice(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator(predict_seconds=1.0, max_in_flight=2)
    out = tmp_path / "out"
    child = start_child_try(items=keyed(6), output_path=str(out), max_in_flight=2)
    wait_until(lambda: creates(sim) >= 3 or child.poll() is not None, "three creates")
    kill(child)
    assert 3 <= creates(sim) < 6
    assert journal_files(out) != []

    summary = batch(out, keyed(6), max_in_flight=2).execute(context())  # the task's retry

    assert summary["succeeded"] == 6
    assert creates(sim) == 6
    assert summary["creates"] < 6
    # Resumed at the key's cap, the retry counted the dead try's predictions in flight: no 429.
    assert summary["rate_limited"] == 0
    rows = results(out)
    assert {row["prediction_id"] for row in rows.values()} == set(sim.predictions)
    for n in range(6):
        assert_stored(sim, rows[f"img{n}"], out / f"img{n}.png")


def test_a_try_killed_before_its_create_was_answered_is_followed_by_one_that_adopts_it(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """The create reached the API, which made the prediction and held its answer back: the try died
    not knowing its id. The retry finds it among the account's executions instead of buying another."""
    sim = start_simulator()
    sim.inject("create", "delay", seconds=60, after_processing=True)
    out = tmp_path / "out"
    child = start_child_try(items=keyed(3), output_path=str(out), max_in_flight=1)
    wait_until(lambda: creates(sim) == 1 or child.poll() is not None, "the first create")
    kill(child)
    (orphan,) = sim.predictions

    summary = batch(out, keyed(3), max_in_flight=1).execute(context())

    assert summary["succeeded"] == 3
    assert (summary["creates"], creates(sim), sim.counters.create_requests) == (2, 3, 3)
    assert results(out)["img0"]["prediction_id"] == orphan
    assert_stored(sim, results(out)["img0"], out / "img0.png")


# --- the deadline ----------------------------------------------------------------------------------------


def test_the_deadline_cancels_every_prediction_in_flight_and_starts_no_more(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator(predict_seconds=60)
    out = tmp_path / "out"
    started = time.monotonic()

    with pytest.raises(EachlabsBatchError) as caught:
        batch(out, keyed(4), max_in_flight=3, timeout=1.5).execute(context())

    assert time.monotonic() - started < 30
    assert str(caught.value).startswith("The batch did not finish before its deadline")
    assert not caught.value.final  # a retry keeps what was stored and does the rest
    rows = results(out)
    statuses = sorted(row["status"] for row in rows.values())
    assert statuses == ["not started", "timeout", "timeout", "timeout"]
    cancelled = {row["prediction_id"] for row in rows.values() if row["status"] == "timeout"}
    assert cancelled == set(sim.predictions)
    assert sim.counters.cancels == 3
    assert all(sim.predictions[id_].status == "cancelled" for id_ in cancelled)
    assert creates(sim) == 3


# --- object storage -------------------------------------------------------------------------------------


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"/eachlabs-batch-{uuid.uuid4().hex}"
    yield root
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


def test_a_manifest_and_outputs_on_memory_storage(
    start_simulator: Callable[..., EachlabsSimulator], memory_root: str
):
    sim = start_simulator()
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"{memory_root}/in/scene.png", SCENE.read_bytes())
    memory.pipe_file(f"{memory_root}/in/mask.png", MASK.read_bytes())
    manifest = "".join(json.dumps({"key": f"img{n}", "seed": n}) + "\n" for n in range(3))
    memory.pipe_file(f"{memory_root}/in/items.jsonl", manifest.encode())
    defaults = {
        **DEFAULTS,
        "image": f"memory://{memory_root}/in/scene.png",
        "mask": f"memory://{memory_root}/in/mask.png",
    }

    summary = batch(
        f"memory://{memory_root}/out/",
        items_path=f"memory://{memory_root}/in/items.jsonl",
        defaults=defaults,
        results_path=f"memory://{memory_root}/reports/tonight.jsonl",
    ).execute(context())

    assert (summary["succeeded"], summary["results_path"]) == (
        3,
        f"memory://{memory_root}/reports/tonight.jsonl",
    )
    rows = rows_in(memory.cat_file(f"{memory_root}/reports/tonight.jsonl").decode())
    assert sorted(path.rsplit("/", 1)[1] for path in memory.find(f"{memory_root}/out")) == [
        "img0.png",
        "img1.png",
        "img2.png",
    ]  # the outputs alone: the journal is gone
    for n in range(3):
        stored = memory.cat_file(f"{memory_root}/out/img{n}.png")
        assert rows[f"img{n}"]["stored_path"] == f"memory://{memory_root}/out/img{n}.png"
        assert rows[f"img{n}"]["sha256"] == hashlib.sha256(stored).hexdigest()
        assert stored == sim.file_bytes(rows[f"img{n}"]["output_url"])
    assert creates(sim) == 3


def test_a_manifest_and_outputs_in_an_s3_bucket(
    start_simulator: Callable[..., EachlabsSimulator],
    s3: tuple[str, Any],  # noqa: F811
):
    sim = start_simulator()
    prefix, client = s3
    client.put_object(Bucket=BUCKET, Key="in/items.csv", Body=b"key,seed\nimg0,0\nimg1,1\n")
    defaults = {**DEFAULTS, "image": f"{prefix}/in/scene.png", "mask": f"{prefix}/in/mask.png"}

    summary = batch(f"{prefix}/out/", items_path=f"{prefix}/in/items.csv", defaults=defaults).execute(
        context()
    )

    assert summary["succeeded"] == 2
    keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"])
    assert keys == ["out/eachlabs-results.jsonl", "out/img0.png", "out/img1.png"]
    rows = rows_in(client.get_object(Bucket=BUCKET, Key=f"out/{RESULTS}")["Body"].read().decode())
    for n in range(2):
        stored = client.get_object(Bucket=BUCKET, Key=f"out/img{n}.png")["Body"].read()
        assert rows[f"img{n}"]["stored_path"] == f"{prefix}/out/img{n}.png"
        assert rows[f"img{n}"]["sha256"] == hashlib.sha256(stored).hexdigest()
        assert stored == sim.file_bytes(rows[f"img{n}"]["output_url"])
    assert creates(sim) == 2


# --- deferred: the batch in the triggerer ----------------------------------------------------------------


def run_trigger(trigger: BatchTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def rebuilt(trigger: BatchTrigger) -> BatchTrigger:
    """The trigger as the triggerer rebuilds it from its database row."""
    classpath, kwargs = trigger.serialize()
    stored = json.loads(json.dumps(kwargs))
    module, name = classpath.rsplit(".", 1)
    again = getattr(importlib.import_module(module), name)(**stored)
    assert isinstance(again, BatchTrigger)
    assert again.serialize() == (classpath, stored)
    return again


async def running_until_creates(
    trigger: BatchTrigger, sim: EachlabsSimulator, count: int
) -> asyncio.Future[None]:
    """The trigger running as a task, returned once the simulator has seen ``count`` creates; the
    task fails the test should the trigger ever finish, since each caller stops it first."""

    async def drain() -> None:
        async for event in trigger.run():
            pytest.fail(f"the trigger finished before it was stopped: {event.payload}")

    task = asyncio.ensure_future(drain())
    while creates(sim) < count:
        await asyncio.sleep(0.02)
    return task


def defer(operator: FluxFillBatchOperator, ctx: dict[str, Any]) -> BatchTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(ctx)
    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert isinstance(trigger, BatchTrigger)
    return trigger


def test_a_deferred_batch_runs_in_the_trigger_and_completes_on_the_worker(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    operator = batch(out, keyed(3), deferrable=True, timeout=600)
    ctx = context()

    trigger = defer(operator, ctx)

    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_eachlabs.triggers.batch.BatchTrigger"
    config = kwargs["config"]
    assert (config["model"], config["output_path"], config["results_path"]) == (
        "flux-fill-pro",
        f"{out}/",
        f"{out}/{RESULTS}",
    )
    assert config["journal_path"].startswith(f"{out}/{JOURNAL_FOLDER}/")
    assert config["deadline"] == pytest.approx(ctx["ti"].start_date.timestamp() + 600)
    assert (sim.counters.uploads, creates(sim)) == (2, 0)  # checked and uploaded; nothing bought yet

    events = run_trigger(rebuilt(trigger))

    assert len(events) == 1
    assert events[0]["status"] == "done"
    ctx["task_state_store"] = store = RecordingStateStore()
    summary = operator.execute_complete(ctx, events[0])
    # The journal's spend tally goes to the task's ledger, not to the XCom result.
    tally = events[0]["summary"]["spend_tally"]
    assert summary == {k: v for k, v in events[0]["summary"].items() if k != "spend_tally"}
    assert (summary["succeeded"], summary["creates"]) == (3, 3)
    billed = sum(round(sim.predictions[p].cost * 1_000_000) for p in sim.predictions)
    assert (tally["bought"], tally["succeeded"], tally["cost"]) == (3, 3, billed)
    entry = store["eachlabs_ledger/batch/0"]  # this stand-in task instance has no try number
    assert (entry["bought"], entry["succeeded"], entry["cost"]) == (3, 3, billed)
    rows = results(out)
    for n in range(3):
        assert_stored(sim, rows[f"img{n}"], out / f"img{n}.png")
    assert journal_files(out) == []


def test_a_trigger_that_meets_a_wrong_key_sends_one_error_event_and_the_task_fails_at_once(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sim = start_simulator()
    operator = batch(tmp_path / "out", keyed(3), deferrable=True)
    ctx = context()
    trigger = defer(operator, ctx)
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(sim.base_url, api_key="revoked-key"))

    events = run_trigger(rebuilt(trigger))

    assert len(events) == 1
    assert events[0]["status"] == "error" and events[0]["final"] is True
    assert "HTTP 401" in events[0]["message"]
    with pytest.raises(AirflowFailException, match=r"The batch stopped in the triggerer: HTTP 401"):
        operator.execute_complete(ctx, events[0])
    assert creates(sim) == 0


def test_a_trigger_rebuilt_mid_batch_re_attaches_and_buys_nothing_twice(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """A triggerer restart: the running trigger is cancelled after some creates, whatever it was doing,
    and a trigger rebuilt from its serialized form carries on from the journal. Three-second
    predictions leave the watcher six seconds between the third create and the last, on a busy
    machine too."""
    sim = start_simulator(predict_seconds=3.0, max_in_flight=2)
    out = tmp_path / "out"
    operator = batch(out, keyed(6), deferrable=True, max_in_flight=2)
    ctx = context()
    trigger = defer(operator, ctx)

    async def run_until_three_creates() -> None:
        task = await running_until_creates(trigger, sim, 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run_until_three_creates())
    for (
        thread
    ) in threading.enumerate():  # the old trigger's requests still under way end, as in a dying process
        if thread.name.startswith("eachlabs-batch"):
            thread.join(30)
    bought_before = creates(sim)
    assert 3 <= bought_before < 6

    events = run_trigger(rebuilt(trigger))

    assert events[0]["status"] == "done"
    summary = events[0]["summary"]
    assert summary["succeeded"] == 6
    assert creates(sim) == 6
    assert summary["creates"] == 6 - bought_before
    assert summary["rate_limited"] == 0
    rows = results(out)
    assert {row["prediction_id"] for row in rows.values()} == set(sim.predictions)
    assert operator.execute_complete(ctx, events[0])["succeeded"] == 6
    for n in range(6):
        assert_stored(sim, rows[f"img{n}"], out / f"img{n}.png")
    assert journal_files(out) == []


def test_a_batch_trigger_cancelled_as_its_loop_wakes_stops_and_buys_nothing_more(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """The triggerer cancels a trigger when its task is marked failed or the trigger moves. A cancel
    that lands in the same turn as a finished request wakes the batch's loop must still stop it;
    ``asyncio.wait_for`` on Python 3.11 dropped such a cancel, and the batch bought on."""
    sim = start_simulator(predict_seconds=3.0, max_in_flight=2)
    out = tmp_path / "out"
    operator = batch(out, keyed(6), deferrable=True, max_in_flight=2)
    trigger = defer(operator, context())

    async def cancel_as_it_wakes() -> None:
        task = await running_until_creates(trigger, sim, 2)
        await asyncio.sleep(0.2)  # the loop is asleep again, waiting for its next look
        runner = trigger._runner
        assert runner is not None
        runner._wake.set()  # as a finished request does, in the same turn as the cancel
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_as_it_wakes())
    time.sleep(4.0)  # longer than a prediction: a batch that went on would have bought more by now
    assert creates(sim) == 2
    assert not (out / RESULTS).exists()


# --- a journal written by someone else --------------------------------------------------------------------


def first_try_with_one_failure(sim: EachlabsSimulator, out: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Four items, one failed: the journal stays for the retry. The failed key and the results."""
    sim.inject("create", "fail", error_code="PROVIDER_UNAVAILABLE", error_message="try later")
    with pytest.raises(EachlabsBatchError):
        batch(out, keyed(4), item_retries=0).execute(context())
    rows = results(out)
    (failed,) = [key for key, row in rows.items() if row["status"] == "failed"]
    return failed, rows


def forge(out: Path, *entries: dict[str, Any] | str) -> None:
    """A segment written by hand into the task's journal, after everything the batch wrote."""
    (folder,) = (out / JOURNAL_FOLDER).iterdir()
    lines = (entry if isinstance(entry, str) else json.dumps(entry) for entry in entries)
    (folder / "segment-000000900-0badc0de.jsonl").write_text("".join(line + "\n" for line in lines))


def test_a_forged_journal_cannot_make_a_retry_buy_a_stored_item_again(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    failed, before = first_try_with_one_failure(sim, out)
    first, second, third = [key for key in before if key != failed]
    forge(
        out,
        {"key": first, "state": "done", "row": {"key": first, "status": "failed", "error": "forged"}},
        {"key": second, "state": "queued"},
        {"key": third, "state": "sending", "at": time.time(), "input": {"prompt": "again", "seed": 1}},
    )

    summary = batch(out, keyed(4), item_retries=0).execute(context())

    assert (summary["succeeded"], summary["creates"]) == (4, 1)  # the failed item, nothing else
    assert creates(sim) == 5
    rows = results(out)
    assert {key: rows[key]["prediction_id"] for key in (first, second, third)} == {
        key: before[key]["prediction_id"] for key in (first, second, third)
    }


def test_a_forged_journal_cannot_make_a_retry_buy_an_item_that_is_not_in_the_batch(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    failed, before = first_try_with_one_failure(sim, out)
    sent = sim.predictions[before[failed]["prediction_id"]].input
    forged = {**sent, "prompt": "something nobody asked for"}
    forge(
        out,
        {"key": "intruder", "state": "sending", "at": time.time(), "input": forged},
        {"key": "intruder", "state": "queued"},
    )

    summary = batch(out, keyed(4), item_retries=0).execute(context())

    assert (summary["items"], summary["succeeded"], summary["creates"]) == (4, 4, 1)
    assert creates(sim) == 5
    assert "intruder" not in results(out)
    assert not (out / "intruder.png").exists()
    assert all(p.input["prompt"] != forged["prompt"] for p in sim.predictions.values())


def test_a_forged_cost_never_reaches_the_spend_which_the_api_reports(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    failed, before = first_try_with_one_failure(sim, out)
    first, second, third = [key for key in before if key != failed]
    forge(
        out,
        {"key": first, "state": "done", "row": {**before[first], "cost": 1000}},  # well formed, but a lie
        {"key": second, "state": "done", "row": {**before[second], "cost": -5}},
        {"key": third, "state": "done", "row": {**before[third], "cost": float("nan")}},  # written as NaN
    )

    summary = batch(out, keyed(4), item_retries=0).execute(context())

    assert summary["spend"] == 0.2  # four predictions kept, 0.05 each, as the API says
    assert creates(sim) == 5
    assert {row["cost"] for row in results(out).values()} == {0.05}


def test_a_garbled_journal_entry_is_not_a_crash_loop(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    failed, before = first_try_with_one_failure(sim, out)
    stored = next(key for key in before if key != failed)
    forge(
        out,
        {"key": stored, "state": "done", "row": 5},
        {"key": stored, "state": "created", "id": 7, "at": "soon"},
        {"key": failed, "state": "queued", "item": {"state": "queued", "surprise": True}},
    )

    summary = batch(out, keyed(4), item_retries=0).execute(context())

    assert (summary["succeeded"], summary["creates"]) == (4, 1)
    assert creates(sim) == 5


def test_an_unreadable_journal_fails_the_task_at_once_naming_the_file(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    sim = start_simulator()
    out = tmp_path / "out"
    first_try_with_one_failure(sim, out)
    forge(out, '{"key": "img0", "state": "done", "row": {"key": ')

    with pytest.raises(AirflowFailException) as caught:  # final: Airflow does not retry it
        batch(out, keyed(4), item_retries=0).execute(context())

    (folder,) = (out / JOURNAL_FOLDER).iterdir()
    assert (
        f"journal file {folder}/segment-000000900-0badc0de.jsonl cannot be read: line 1 is not JSON"
        in str(caught.value)
    )
    assert creates(sim) == 4
