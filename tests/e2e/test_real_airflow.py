"""The example DAGs in a real Airflow: scheduler, LocalExecutor workers, triggerer, REST API.

What ``dag.test()`` cannot show, and these do: the operator's deferral really reaches a separate
triggerer process and comes back to a new worker; XCom and the extra link are read back the way
the UI reads them (REST); a triggerer restart mid-wait neither loses the wait nor buys a second
prediction; and the provider is visible to Airflow's CLI the way a deployment sees it.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psutil
import pytest

from airflow_provider_eachlabs.links import task_tab_path
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET, AirflowStack, connection_body, wait_for

FILL_DAG = "eachlabs_flux_fill"
FILL_TASK = "remove_crate"


def _assert_success(stack: AirflowStack, dag_id: str, run_id: str, timeout: float = 180) -> None:
    state = stack.api.wait_run(dag_id, run_id, timeout)
    if state != "success":
        tis = stack.api.task_instances(dag_id, run_id)
        logs = "\n".join(
            stack.api.log(dag_id, run_id, ti["task_id"], max(1, ti["try_number"]), ti["map_index"])
            for ti in tis
            if ti["state"] != "success"
        )
        raise AssertionError(f"{dag_id} run {run_id} ended {state}: {tis}\n{logs}\n{stack.logs()}")


def _wait_state(
    stack: AirflowStack, dag_id: str, run_id: str, task_id: str, state: str, timeout: float
) -> None:
    def reached() -> bool:
        tis = [ti for ti in stack.api.task_instances(dag_id, run_id) if ti["task_id"] == task_id]
        return bool(tis) and tis[0]["state"] == state

    wait_for(f"{dag_id}.{task_id} to be {state}", reached, timeout, interval=0.5)


def _check_fill_result(stack: AirflowStack, run_id: str) -> dict[str, Any]:
    """The XCom result and the extra link of the one-fill DAG, read over REST, agree with each other."""
    result = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "return_value")
    assert result["status"] == "success", result
    assert result["model"] == "flux-fill-pro"
    prediction_id = result["prediction_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", prediction_id), prediction_id
    assert Path(result["stored_path"]).is_file() and result["content_type"] == "image/png", result
    assert Path(result["preview_path"]).is_file(), result
    assert result["cost"] == pytest.approx(0.05)
    url = stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "prediction_url")
    assert url.endswith(f"/v1/prediction/{prediction_id}"), url
    links = stack.api.links(FILL_DAG, run_id, FILL_TASK)
    assert links.get("Eachlabs prediction") == task_tab_path(
        FILL_DAG, run_id, FILL_TASK, -1, stack.base_url
    ), links
    return dict(result)


def test_flux_fill_through_the_real_triggerer(dags_ready: AirflowStack) -> None:
    """One deferrable fill: submitted by a worker, waited on in the triggerer, finished by a worker."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    before = dict(stack.fast_sim.counters.creates)
    run_id = stack.api.trigger(FILL_DAG)
    _assert_success(stack, FILL_DAG, run_id)
    result = _check_fill_result(stack, run_id)
    assert stack.fast_sim.counters.creates.get(API_KEY, 0) - before.get(API_KEY, 0) == 1
    ti = stack.api.task_instances(FILL_DAG, run_id)[0]
    # Deferral ends in a new try of the same task instance on a worker; the trigger ran elsewhere.
    assert ti["state"] == "success" and ti["try_number"] == 1, ti
    # The log, as the UI shows it: the create with its id, then the trigger's status change.
    log = stack.api.log(FILL_DAG, run_id, FILL_TASK)
    assert f"Created Eachlabs prediction {result['prediction_id']}" in log, log
    assert re.search(rf"Prediction {result['prediction_id']} is 'success' after \d+\.\ds", log), log


def test_submit_and_sense(dags_ready: AirflowStack) -> None:
    """Submit returns the id; the deferrable sensor waits for it in the triggerer."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger("eachlabs_submit_and_sense")
    _assert_success(stack, "eachlabs_submit_and_sense", run_id)
    prediction_id = stack.api.xcom("eachlabs_submit_and_sense", run_id, "submit_fill", "return_value")
    assert isinstance(prediction_id, str) and prediction_id in stack.fast_sim.predictions
    links = stack.api.links("eachlabs_submit_and_sense", run_id, "submit_fill")
    assert (
        links.get("Eachlabs prediction")
        == f"/dags/eachlabs_submit_and_sense/runs/{quote(run_id, safe='')}/tasks/submit_fill/plugin/eachlabs"
    ), links


def test_batch_fill_under_the_pool(dags_ready: AirflowStack) -> None:
    """Dynamic task mapping over the sample folder, every mapped fill under the ``eachlabs`` pool."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger("eachlabs_batch_fill")
    _assert_success(stack, "eachlabs_batch_fill", run_id, timeout=240)
    fills = [ti for ti in stack.api.task_instances("eachlabs_batch_fill", run_id) if ti["task_id"] == "fill"]
    assert fills and all(ti["state"] == "success" and ti["pool"] == "eachlabs" for ti in fills), fills
    for ti in fills:
        result = stack.api.xcom("eachlabs_batch_fill", run_id, "fill", "return_value", ti["map_index"])
        assert result["status"] == "success" and Path(result["stored_path"]).is_file(), result


def test_triggerer_restart_mid_wait(dags_ready: AirflowStack) -> None:
    """SIGTERM the triggerer while the fill waits, start a new one: success, exactly one create."""
    stack = dags_ready
    sim = stack.slow_sim  # 20 s predictions: the wait outlives the restart
    stack.use_simulator(sim)
    # Counted from here: earlier tests of the suite may have used this simulator.
    creates_before, cancels_before = sum(sim.counters.creates.values()), sim.counters.cancels
    try:
        run_id = stack.api.trigger(FILL_DAG)
        _wait_state(stack, FILL_DAG, run_id, FILL_TASK, "deferred", timeout=120)
        old = stack.components["triggerer"]
        # Let the old triggerer pick the trigger up and poll (first GET ~8 s after the create) first.
        gets_before = sim.counters.gets
        wait_for("the old triggerer's first poll", lambda: sim.counters.gets > gets_before, timeout=60)
        time.sleep(1)
        old.proc.send_signal(signal.SIGTERM)
        old.proc.wait(60)
        stack.processes.stop(old)  # and anything it left behind
        assert sim.counters.cancels == cancels_before, "stopping the triggerer cancelled the prediction"
        stack.start_component("triggerer")
        _assert_success(stack, FILL_DAG, run_id, timeout=180)
        result = _check_fill_result(stack, run_id)
        assert sum(sim.counters.creates.values()) - creates_before == 1, sim.counters
        assert sim.counters.cancels == cancels_before, sim.counters
        assert result["prediction_id"] in sim.predictions
        # Each status change, with the time since the create, reads in the task log.
        log = stack.api.log(FILL_DAG, run_id, FILL_TASK)
        for status in ("processing", "success"):
            pattern = rf"Prediction {result['prediction_id']} is '{status}' after \d+\.\ds"
            assert re.search(pattern, log), f"no {status!r} change in the log:\n{log}"
    finally:
        stack.use_simulator(stack.fast_sim)


def _airflow_has_task_state_store() -> bool:
    """Airflow 3.3 brought task_state_store; the suite also runs on the lowest supported version."""
    from airflow.sdk.execution_time import context

    return hasattr(context, "TaskStateStoreAccessor")


def _task_process_talking_to(stack: AirflowStack, sim: EachlabsSimulator) -> psutil.Process | None:
    """The process running the task that polls ``sim``: a child of a LocalExecutor supervisor.

    The scheduler forks executor workers; for each task a worker supervises a child process that
    runs the task itself. That child is the "worker" a crash or an OOM kill takes away. Another
    task may be finishing at the same moment, so the one to kill is the one connected to ``sim``.
    """
    port = int(urlsplit(sim.base_url).port or 0)
    scheduler = psutil.Process(stack.components["scheduler"].proc.pid)
    tasks = [task for worker in scheduler.children() for task in worker.children()]
    talking = [
        task
        for task in tasks
        if any(c.raddr and c.raddr.port == port for c in task.net_connections(kind="tcp"))
    ]
    return talking[0] if len(talking) == 1 else None


def test_worker_killed_mid_wait_the_retry_reattaches(dags_ready: AirflowStack) -> None:
    """SIGKILL the task's process while it waits on the worker: the retry pays for no second fill."""
    stack = dags_ready
    sim = stack.slow_sim  # 20 s predictions: the kill lands mid-wait
    stack.use_simulator(sim)
    try:
        creates_before = sum(sim.counters.creates.values())
        gets_before = sim.counters.gets
        run_id = stack.api.trigger("eachlabs_worker_death")
        # The first GET comes after the prediction id is in task_state_store.
        wait_for(
            "the first try's create and first poll",
            lambda: sum(sim.counters.creates.values()) > creates_before and sim.counters.gets > gets_before,
            timeout=120,
        )
        task_process = wait_for("the task process", lambda: _task_process_talking_to(stack, sim), timeout=30)
        task_process.send_signal(signal.SIGKILL)
        task_process.wait(30)
        state = stack.api.wait_run("eachlabs_worker_death", run_id, 180)
        (ti,) = stack.api.task_instances("eachlabs_worker_death", run_id)
        log = stack.api.log("eachlabs_worker_death", run_id, "fill", ti["try_number"])
        assert state == "success", f"{ti}\n{log}\n{stack.logs()}"
        assert ti["try_number"] == 2, ti
        if _airflow_has_task_state_store():
            assert sum(sim.counters.creates.values()) - creates_before == 1, sim.counters
            assert "Input unchanged since try 1: re-using prediction" in log, log
        else:  # Airflow 3.2: no task_state_store, so the retry pays again, as the README says, and warns
            assert sum(sim.counters.creates.values()) - creates_before == 2, sim.counters
            assert "task_state_store is not available" in log, log
        result = stack.api.xcom("eachlabs_worker_death", run_id, "fill", "return_value")
        assert result["status"] == "success" and result["prediction_id"] in sim.predictions, result
    finally:
        stack.use_simulator(stack.fast_sim)


def test_a_batch_killed_mid_way_is_finished_by_its_retry_buying_each_item_once(
    dags_ready: AirflowStack,
) -> None:
    """SIGKILL the batch task's process with some outputs stored, some predictions running and some
    items not yet created: the retry re-attaches to the running ones, skips the stored ones, creates
    the rest, and every item is bought and stored exactly once."""
    stack = dags_ready
    sim = stack.slow_sim  # 20 s predictions, four in flight: three waves
    stack.use_simulator(sim)
    out = stack.output_dir / "batch-kill"
    try:
        creates_before = sum(sim.counters.creates.values())
        run_id = stack.api.trigger("eachlabs_batch_kill")

        def mid_batch() -> bool:
            created = sum(sim.counters.creates.values()) - creates_before
            return created > 4 and any(out.glob("item_*.png"))

        wait_for("the first wave stored and the second created", mid_batch, timeout=180)
        task_process = wait_for("the task process", lambda: _task_process_talking_to(stack, sim), timeout=30)
        task_process.send_signal(signal.SIGKILL)
        task_process.wait(30)
        created_by_the_first_try = sum(sim.counters.creates.values()) - creates_before
        stored_by_the_first_try = len(list(out.glob("item_*.png")))
        state = stack.api.wait_run("eachlabs_batch_kill", run_id, 300)
        (ti,) = stack.api.task_instances("eachlabs_batch_kill", run_id)
        log = stack.api.log("eachlabs_batch_kill", run_id, "fill_all", ti["try_number"])
        assert state == "success", f"{ti}\n{log}\n{stack.logs()}"
        assert ti["try_number"] == 2, ti
        assert 4 < created_by_the_first_try < 12 and stored_by_the_first_try < 12
        assert sum(sim.counters.creates.values()) - creates_before == 12, sim.counters
        assert sorted(p.name for p in out.glob("item_*")) == [f"item_{n:02d}.png" for n in range(12)]
        lines = [json.loads(line) for line in (out / "eachlabs-results.jsonl").read_text().splitlines()]
        stored = [line["key"] for line in lines if line["status"] == "success"]
        assert sorted(stored) == [f"item_{n:02d}" for n in range(12)], lines  # each once
        assert {line["prediction_id"] for line in lines} <= set(sim.predictions)
        summary = stack.api.xcom("eachlabs_batch_kill", run_id, "fill_all", "return_value")
        assert summary["succeeded"] == 12 and summary["creates"] == 12 - created_by_the_first_try, summary
        assert not (out / ".eachlabs-batch").exists(), "the journal outlived a finished batch"
    finally:
        stack.use_simulator(stack.fast_sim)


def test_provider_visible_to_the_cli(dags_ready: AirflowStack) -> None:
    """``airflow providers`` lists ours with its version; hooks, links and triggers are registered."""
    from airflow_provider_eachlabs import __version__

    stack = dags_ready
    providers = stack.cli("providers", "list", "--output", "json")
    assert providers.returncode == 0, providers.stderr
    ours = [p for p in json.loads(providers.stdout) if p["package_name"] == "airflow-provider-eachlabs"]
    assert ours and ours[0]["version"] == __version__, providers.stdout
    hooks = stack.cli("providers", "hooks", "--output", "json")
    assert "airflow_provider_eachlabs.hooks.eachlabs.EachlabsHook" in hooks.stdout, hooks.stdout
    assert '"eachlabs"' in hooks.stdout
    links = stack.cli("providers", "links", "--output", "json")
    assert "airflow_provider_eachlabs.links.EachlabsPredictionLink" in links.stdout, links.stdout
    triggers = stack.cli("providers", "triggers", "--output", "json")
    assert "airflow_provider_eachlabs.triggers.prediction" in triggers.stdout, triggers.stdout


def test_connection_test_against_the_simulator(dags_ready: AirflowStack) -> None:
    """``airflow connections test`` and the REST/UI "Test" button both reach the simulator."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    before = stack.fast_sim.counters.executions
    tested = stack.cli("connections", "test", "eachlabs_default")
    assert tested.returncode == 0 and "success" in tested.stdout.lower(), tested.stdout + tested.stderr
    answer = stack.api.request("POST", "/connections/test", json=connection_body(stack.fast_sim.base_url))
    assert answer["status"] is True, answer
    assert stack.fast_sim.counters.executions >= before + 2


def test_failed_prediction_log_names_the_request_id(dags_ready: AirflowStack) -> None:
    """A prediction the model fails: the sensor fails, and its log carries the API's words and request id."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    stack.fast_sim.inject("create", "fail", error_code="PROVIDER_REJECTED", error_message="flagged input")
    try:
        run_id = stack.api.trigger("eachlabs_submit_and_sense")
        assert stack.api.wait_run("eachlabs_submit_and_sense", run_id) == "failed"
    finally:
        stack.fast_sim.clear_faults()
    states = {ti["task_id"]: ti for ti in stack.api.task_instances("eachlabs_submit_and_sense", run_id)}
    assert states["submit_fill"]["state"] == "success" and states["wait_for_fill"]["state"] == "failed", (
        states
    )
    log = stack.api.log(
        "eachlabs_submit_and_sense", run_id, "wait_for_fill", states["wait_for_fill"]["try_number"]
    )
    assert "PROVIDER_REJECTED" in log and "flagged input" in log, log
    assert re.search(r"request id req_[0-9a-f]+", log), log


def test_task_log_reports_the_cost(dags_ready: AirflowStack) -> None:
    """The API reports the cost ($0.05 a fill); the finished task's log says so."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger(FILL_DAG)
    _assert_success(stack, FILL_DAG, run_id)
    log = stack.api.log(FILL_DAG, run_id, FILL_TASK)
    # A sentence ("cost $0.05"), not the event payload's dict repr ("'cost': 0.05") that Airflow dumps.
    assert re.search(r"(?<!['\"])\bcost(?!['\"])[ :=]+\$?0\.05", log, re.IGNORECASE), log


def _airflow_calls_trigger_on_kill() -> bool:
    """Airflow 3.3 calls a trigger's on_kill when a user marks its deferred task failed; 3.2 does not."""
    import airflow
    from packaging.version import Version

    return Version(airflow.__version__) >= Version("3.3.0")


def test_marking_a_deferred_fill_failed_cancels_its_prediction(dags_ready: AirflowStack) -> None:
    """A user marks a waiting fill failed over the REST API (as the UI's button does): on Airflow 3.3
    the triggerer itself calls the trigger's on_kill, which cancels the prediction, so nobody pays for
    the rest of it. Airflow 3.2 never calls it: the prediction runs to its end (README, Reliability)."""
    stack = dags_ready
    sim = stack.slow_sim  # 20 s predictions: the mark lands mid-wait
    stack.use_simulator(sim)
    try:
        gets_before, cancels_before = sim.counters.gets, sim.counters.cancels
        run_id = stack.api.trigger("eachlabs_webhook_fill")
        _wait_state(stack, "eachlabs_webhook_fill", run_id, "fill", "deferred", timeout=120)
        wait_for("the triggerer's first poll", lambda: sim.counters.gets > gets_before, timeout=60)
        prediction_id = stack.api.xcom("eachlabs_webhook_fill", run_id, "fill", "prediction_id")
        stack.api.request(
            "PATCH",
            f"/dags/eachlabs_webhook_fill/dagRuns/{run_id}/taskInstances/fill",
            json={"new_state": "failed"},
        )
        if _airflow_calls_trigger_on_kill():
            wait_for("the cancel", lambda: sim.counters.cancels > cancels_before, timeout=60)
            assert sim.counters.cancels == cancels_before + 1, sim.counters
            assert sim.predictions[prediction_id].status == "cancelled"
        else:
            time.sleep(15)
            assert sim.counters.cancels == cancels_before, sim.counters
            assert sim.predictions[prediction_id].status in ("processing", "success")
        assert stack.api.run_state("eachlabs_webhook_fill", run_id) == "failed"
        # The secret rendered from its Variable reached the API (test_secrets_in_logs: and no log).
        assert sim.predictions[prediction_id].webhook_url == "https://hooks.example.com/eachlabs"
        assert sim.predictions[prediction_id].webhook_secret == WEBHOOK_SECRET
    finally:
        stack.use_simulator(stack.fast_sim)
