"""What a task or a REST user cannot make the api-server do, in the real api-server.

XCom can be edited over the REST API by anyone allowed to edit a DAG's task instances. Each test
here edits a finished task's XCom as such a user would (``PATCH .../xcomEntries/{key}``) to name
another connection, a file outside the task's ``output_path``, a symbolic link, an escaped ``..``,
a FIFO, a bucket URI with another connection, or a record of the wrong type, and checks what the
plugin then does: it keeps to the DAG's own connection and folder, refuses with a reason, answers
at once, and never a 500. The last test points many viewers at a slow API while Airflow's own pages
must stay quick.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.e2e.conftest import API_KEY, AirflowStack
from tests.e2e.rest import trigger_until_deferred
from tests.e2e.test_ui_plugin import FILL_DAG, FILL_TASK, SCENE, plugin, ti_path

OTHER_TEAM_SECRET = "other-team-password-5e1f"
BATCH_DAG, BATCH_TASK = "eachlabs_batch_operator", "fill_all"


def patch_xcom(stack: AirflowStack, dag_id: str, run_id: str, task_id: str, key: str, value: Any) -> None:
    stack.api.request(
        "PATCH",
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
        json={"value": value, "map_index": -1},
    )


@pytest.fixture(scope="module")
def fill(dags_ready: AirflowStack) -> tuple[str, dict[str, Any]]:
    """A succeeded fill whose XCom the tests then edit; every answer it gave is recorded first."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger(FILL_DAG)
    assert stack.api.wait_run(FILL_DAG, run_id) == "success", stack.logs()
    return run_id, stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "return_value")


@pytest.fixture(scope="module")
def other_team(dags_ready: AirflowStack) -> Iterator[EachlabsSimulator]:
    """Another team's ``http`` connection, whose host records every request it gets."""
    with EachlabsSimulator(api_key=OTHER_TEAM_SECRET) as host:
        dags_ready.api.request(
            "POST",
            "/connections",
            json={
                "connection_id": "other_team_http",
                "conn_type": "http",
                "host": host.base_url,
                "password": OTHER_TEAM_SECRET,
            },
            expect=(201, 409),
        )
        yield host


@pytest.fixture
def passport(dags_ready: AirflowStack) -> Iterator[Path]:
    """A private image outside every task's output_path, that the api-server's user can read."""
    private = dags_ready.output_dir.parent / "private"
    private.mkdir(exist_ok=True)
    path = private / "passport.png"
    shutil.copyfile(SCENE, path)
    yield path
    shutil.rmtree(private)


def after_image(stack: AirflowStack, run_id: str) -> requests.Response:
    started = time.monotonic()
    answer = plugin(stack, ti_path(FILL_DAG, run_id, FILL_TASK) + "/image/after")
    assert time.monotonic() - started < 10, "the image route blocked"
    return answer


def test_xcom_cannot_pick_the_connection(dags_ready: AirflowStack, other_team: EachlabsSimulator) -> None:
    """A deferred fill whose ``eachlabs_request`` names another team's connection: the live status
    and the images still use the DAG's ``eachlabs_default``, and the other host hears nothing."""
    stack = dags_ready
    sim = stack.slow_sim
    stack.use_simulator(sim)
    try:
        run_id = trigger_until_deferred(stack, FILL_DAG)
        request = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "eachlabs_request")
        patch_xcom(
            stack, FILL_DAG, run_id, FILL_TASK, "eachlabs_request", {**request, "conn_id": "other_team_http"}
        )
        path = ti_path(FILL_DAG, run_id, FILL_TASK)
        gets = sim.counters.gets
        live = plugin(stack, f"{path}/status").json()
        assert live["status"] in ("starting", "processing"), live
        assert sim.counters.gets == gets + 1
        for kind in ("before", "mask"):
            assert plugin(stack, f"{path}/image/{kind}").status_code == 200, kind
        assert plugin(stack, path).status_code == 200
        assert other_team.counters.requests == 0  # its password was never sent anywhere
        assert stack.api.wait_run(FILL_DAG, run_id, 180) == "success"
    finally:
        stack.use_simulator(stack.fast_sim)


@pytest.mark.parametrize(
    ("where", "refusal"),
    [
        ("outside", "is not inside the task's output_path"),
        ("escaped", "is not inside the task's output_path"),
        ("bucket", "is not inside the task's output_path"),
    ],
)
def test_xcom_cannot_pick_a_file_outside_output_path(
    dags_ready: AirflowStack, fill: tuple[str, dict[str, Any]], passport: Path, where: str, refusal: str
) -> None:
    stack = dags_ready
    run_id, result = fill
    folder = Path(result["stored_path"]).parent
    recorded = {
        "outside": str(passport),
        "escaped": f"file://{folder}/%2e%2e/private/passport.png",
        "bucket": "s3://aws_default@private-bucket/passport.png",
    }[where]
    for key in ("return_value", "eachlabs_outcome"):
        value = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, key)
        patch_xcom(
            stack, FILL_DAG, run_id, FILL_TASK, key, {**value, "stored_path": recorded, "output_url": None}
        )
    answer = after_image(stack, run_id)
    assert answer.status_code == 404 and refusal in answer.text, answer.text
    assert answer.content != passport.read_bytes()


@pytest.mark.parametrize(
    ("kind", "refusal"), [("symlink", "is a symbolic link"), ("fifo", "is not a regular file")]
)
def test_a_stored_output_replaced_by_a_symlink_or_a_fifo_is_not_read(
    dags_ready: AirflowStack, fill: tuple[str, dict[str, Any]], passport: Path, kind: str, refusal: str
) -> None:
    stack = dags_ready
    run_id, result = fill
    for key in ("return_value", "eachlabs_outcome"):
        value = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, key)
        patch_xcom(
            stack,
            FILL_DAG,
            run_id,
            FILL_TASK,
            key,
            {**value, "stored_path": result["stored_path"], "output_url": None},
        )
    stored = Path(result["stored_path"])
    kept = stored.with_name(stored.name + ".kept")
    os.replace(stored, kept)
    try:
        if kind == "symlink":
            stored.symlink_to(passport)
        else:
            os.mkfifo(stored)
        answer = after_image(stack, run_id)
        assert answer.status_code == 404 and refusal in answer.text, answer.text
    finally:
        stored.unlink()
        os.replace(kept, stored)
    assert after_image(stack, run_id).status_code == 200  # the real output, back in place


def test_a_record_of_the_wrong_type_is_shown_not_a_500(
    dags_ready: AirflowStack, fill: tuple[str, dict[str, Any]]
) -> None:
    stack = dags_ready
    run_id, _ = fill
    outcome = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "eachlabs_outcome")
    hostile = {**outcome, "ok": False, "status": "failed", "error_code": 42, "error_message": ["not", "text"]}
    patch_xcom(stack, FILL_DAG, run_id, FILL_TASK, "eachlabs_outcome", hostile)
    path = ti_path(FILL_DAG, run_id, FILL_TASK)
    for route in (path, f"{path}/status", "/"):
        answer = plugin(stack, route)
        assert answer.status_code == 200, (route, answer.text[:500])
    patch_xcom(stack, FILL_DAG, run_id, FILL_TASK, "eachlabs_outcome", "not a record")
    assert plugin(stack, path).status_code == 200


def test_a_batch_reads_only_the_manifest_and_outputs_its_dag_names(
    dags_ready: AirflowStack, passport: Path
) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger(BATCH_DAG)
    assert stack.api.wait_run(BATCH_DAG, run_id, 240) == "success", stack.logs()
    forged = passport.parent / "forged-results.jsonl"
    forged.write_text(f'{{"key": "product_1", "status": "success", "stored_path": "{passport}"}}\n')
    plan = stack.api.xcom(BATCH_DAG, run_id, BATCH_TASK, "eachlabs_batch")
    patch_xcom(
        stack,
        BATCH_DAG,
        run_id,
        BATCH_TASK,
        "eachlabs_batch",
        {**plan, "results_path": str(forged), "output_path": str(passport.parent) + "/"},
    )
    path = ti_path(BATCH_DAG, run_id, BATCH_TASK)
    page = plugin(stack, path).text
    assert 'id="done">3 / 3<' in page and str(forged) not in page
    picture = plugin(stack, f"{path}/batch/product_1")
    assert picture.status_code == 200 and picture.content != passport.read_bytes()


def test_a_slow_api_under_many_viewers_leaves_airflows_own_pages_quick(dags_ready: AirflowStack) -> None:
    """45 viewers poll the live status of a deferred fill while every status request to the API
    takes 20 s: each status answer comes within seconds, and ``GET /api/v2/dags`` stays quick."""
    stack = dags_ready
    sim = stack.slow_sim
    stack.use_simulator(sim)
    try:
        run_id = trigger_until_deferred(stack, FILL_DAG)
        sim.inject("get", "delay", times=1000, seconds=20)
        path = ti_path(FILL_DAG, run_id, FILL_TASK)
        plugin(stack, path)  # a token for the viewers
        status_times: list[float] = []

        def viewer() -> None:
            for _ in range(3):
                started = time.monotonic()
                plugin(stack, f"{path}/status")
                status_times.append(time.monotonic() - started)

        viewers = [threading.Thread(target=viewer) for _ in range(45)]
        for thread in viewers:
            thread.start()
        dags_times = []
        while any(thread.is_alive() for thread in viewers):
            started = time.monotonic()
            stack.api.get("/dags", params={"limit": 5})
            dags_times.append(time.monotonic() - started)
            time.sleep(0.5)
        for thread in viewers:
            thread.join()
        assert max(dags_times) < 5, dags_times
        assert statistics.median(status_times) < 3 and max(status_times) < 12, sorted(status_times)
    finally:
        sim.clear_faults()
    assert stack.api.wait_run(FILL_DAG, run_id, 240) == "success", stack.logs()
    stack.use_simulator(stack.fast_sim)


def test_an_api_that_repeats_the_key_shows_it_nowhere(dags_ready: AirflowStack) -> None:
    """A rejection whose message repeats the key: the outcome XCom, the tab and the task log (of the
    deferred fill, resumed on a worker) carry ``***`` instead."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    stack.fast_sim.inject(
        "create", "fail", error_code="PROVIDER_REJECTED", error_message=f"flagged (key {API_KEY})"
    )
    try:
        run_id = stack.api.trigger(FILL_DAG)
        assert stack.api.wait_run(FILL_DAG, run_id) == "failed"
    finally:
        stack.fast_sim.clear_faults()
    outcome = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "eachlabs_outcome")
    assert API_KEY not in str(outcome) and "flagged (key ***)" in outcome["error_message"]
    page = plugin(stack, ti_path(FILL_DAG, run_id, FILL_TASK)).text
    assert "flagged (key ***)" in page
    log = stack.api.log(FILL_DAG, run_id, FILL_TASK, 1)
    assert "flagged (key ***)" in log and API_KEY not in log


def test_no_answer_carried_a_key(dags_ready: AirflowStack) -> None:
    from tests.e2e.test_ui_plugin import SEEN

    assert SEEN and [b for b in SEEN if API_KEY.encode() in b or OTHER_TEAM_SECRET.encode() in b] == []
