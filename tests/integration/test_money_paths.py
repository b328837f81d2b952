"""Where a regression costs a user money or an image, each behaviour shown with real processes.

A try is killed for real (SIGKILL) right after its create reached the API; a write is made to fail
part-way for real (a file-size limit on the process); retries re-attach to predictions that had
already succeeded. The simulator's counters say how many predictions were bought.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs.addresses import is_api_host_url
from airflow_provider_eachlabs.exceptions import EachlabsDownloadError, EachlabsStorageError
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.record import RECORD_KEY
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import ROOT, connection_json
from tests.hostile import hostile_server, json_answer
from tests.integration.test_operators import DATA, RecordingStateStore, context, fill

FILL_ARGUMENTS = {
    "prompt": "an empty meadow",
    "image": str(DATA / "scene.png"),
    "mask": str(DATA / "scene_mask.png"),
    "output_format": "png",
    "poll_interval": 0.05,
    "deferrable": False,
}


def start_child_try(state_file: Path, limit: int | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.integration.children.fill_try", str(state_file)]
    argv.append(json.dumps({**FILL_ARGUMENTS, **kwargs}))
    if limit is not None:
        argv.append(str(limit))
    return subprocess.Popen(
        argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True
    )


def state_of(state_file: Path) -> RecordingStateStore:
    data = json.loads(state_file.read_text())
    store = RecordingStateStore(data["values"])
    store.retention = data["retention"]
    return store


def test_a_try_killed_right_after_its_create_is_followed_by_one_that_adopts_the_orphan(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    """The first try writes ``sent_at`` itself, sends the create and dies before reading the answer."""
    state_file = tmp_path / "task_state_store.json"
    eachlabs_conn.inject("create", "delay", seconds=60, after_processing=True)  # created, answer held back
    child = start_child_try(state_file)
    deadline = time.monotonic() + 60
    while sum(eachlabs_conn.counters.creates.values()) == 0:
        assert child.poll() is None and time.monotonic() < deadline, "the first try ended before its create"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    (orphan,) = eachlabs_conn.predictions
    store = state_of(state_file)
    assert "sent_at" in store[RECORD_KEY] and "id" not in store[RECORD_KEY]  # the dead try's own record

    result = fill(output_path=f"{tmp_path}/out/").execute(context(store))  # the task's retry
    assert result["prediction_id"] == orphan
    assert eachlabs_conn.counters.create_requests == 1
    assert store[RECORD_KEY]["id"] == orphan


def test_a_retry_after_the_worker_died_past_success_re_attaches_and_stores(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    """The prediction succeeded and was recorded, but nothing was stored: the retry buys nothing."""
    store = RecordingStateStore()
    done = fill().execute(context(store))  # a try that ends before storing anything (no output_path)
    assert eachlabs_conn.predictions[done["prediction_id"]].status == "success"
    result = fill(output_path=f"{tmp_path}/out/").execute(context(store))
    assert result["prediction_id"] == done["prediction_id"]
    assert Path(result["stored_path"]).is_file()
    assert eachlabs_conn.counters.create_requests == 1


def test_a_retry_after_the_preview_failed_re_attaches_and_draws_it(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    from airflow.sdk.exceptions import TaskDeferred

    store = RecordingStateStore()
    previews = tmp_path / "previews"
    first = fill(deferrable=True, output_path=f"{tmp_path}/out/", preview_path=f"{previews}/")
    with pytest.raises(TaskDeferred):
        first.execute(context(store))  # the preview folder was checked, and is fine, here
    previews.write_text("the preview folder went away")
    prediction = first.hook.wait_for_prediction(str(first.prediction_id), poll_interval=0.05, timeout=10)
    event = {"status": "success", "prediction_id": prediction.id, "prediction": prediction.to_dict()}
    with pytest.raises(EachlabsStorageError, match=rf"Prediction {prediction.id} succeeded .* the preview"):
        first.execute_complete(context(store), event)
    previews.unlink()
    result = fill(output_path=f"{tmp_path}/out/", preview_path=f"{previews}/").execute(context(store))
    assert result["prediction_id"] == prediction.id
    assert Path(result["preview_path"]) == previews / f"{prediction.id}-preview.png"
    assert eachlabs_conn.counters.create_requests == 1


def test_a_write_that_fails_part_way_leaves_the_old_file_and_no_scrap(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    """The process may write at most 4 KB per file: the ~200 KB output's write fails half-way through."""
    target = tmp_path / "filled.png"
    target.write_bytes(b"yesterday's image")
    child = start_child_try(tmp_path / "state.json", limit=4096, output_path=str(target))
    printed, _ = child.communicate(timeout=120)
    assert child.returncode == 1, printed
    (line,) = [line for line in printed.splitlines() if line.startswith(("ERROR", "RESULT"))]
    assert line.startswith("ERROR EachlabsStorageError: Prediction ") and "File too large" in line
    assert target.read_bytes() == b"yesterday's image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filled.png", "state.json"]


# --- where the key may go -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.eachlabs.ai.evil.com/files/x.png",
        "https://api.eachlabs.ai@evil.com/files/x.png",
        "https://evil.com/https://api.eachlabs.ai/files/x.png",
        "http://api.eachlabs.ai/files/x.png",
        "https://api.eachlabs.ai:8443/files/x.png",
        "https://api-eachlabs.ai/files/x.png",
    ],
)
def test_look_alike_hosts_are_not_the_api_host(url: str):
    assert not is_api_host_url(url, "https://api.eachlabs.ai")
    assert is_api_host_url("https://API.eachlabs.ai/files/x.png", "https://api.eachlabs.ai")


def test_an_output_on_another_loopback_port_is_not_the_api_host(monkeypatch: pytest.MonkeyPatch):
    """The plain-http loopback exception is for the configured host:port only, never its neighbours."""
    with hostile_server() as api, hostile_server() as elsewhere:
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(api.base_url, max_retries=0))
        api.on(
            "GET",
            "/v1/prediction/p1",
            json_answer({"status": "success", "output": f"{elsewhere.base_url}/x.png"}),
        )
        prediction = EachlabsHook().get_prediction("p1")
        with pytest.raises(EachlabsDownloadError, match="refusing to download"):
            EachlabsHook().download(str(prediction.output_url))
        assert elsewhere.received == []


def test_a_task_refuses_an_input_on_the_neighbouring_port(eachlabs_conn: EachlabsSimulator):
    neighbour = int(eachlabs_conn.base_url.rsplit(":", 1)[1]) + 1
    image = f"http://127.0.0.1:{neighbour}/files/uploads/scene.png"
    with pytest.raises(AirflowFailException, match=r"Invalid image=.*must be a public https:// URL"):
        fill(image=image).execute(context())
    assert eachlabs_conn.counters.requests == 0
