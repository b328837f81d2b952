"""``@task.eachlabs`` in a real Airflow: triggered over REST, its function runs on a worker, the wait
goes to the triggerer, and the task's XCom result is the prediction's, with exactly one create of the
input the function computed (counted as deltas: the suite shares one simulator across files).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.e2e.conftest import AirflowStack, wait_for

DAG_ID, TASK_ID = "eachlabs_task_decorator_e2e", "fill"


def test_the_decorated_fill_returns_the_predictions_result_and_buys_once(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    wait_for(
        "the @task.eachlabs DAG to be parsed",
        lambda: any(d["dag_id"] == DAG_ID for d in stack.api.get("/dags", params={"limit": 100})["dags"]),
        timeout=120,
        interval=1,
    )
    sim = stack.fast_sim
    creates_before, uploads_before = sim.counters.create_requests, sim.counters.uploads
    known = set(sim.predictions)
    run_id = stack.api.trigger(DAG_ID)
    state = stack.api.wait_run(DAG_ID, run_id, 180)
    assert state == "success", (stack.api.log(DAG_ID, run_id, TASK_ID), stack.logs())

    assert sim.counters.create_requests - creates_before == 1
    assert sim.counters.uploads - uploads_before == 2  # the scene and its mask
    (new,) = set(sim.predictions) - known
    prediction = sim.predictions[new]
    sent = prediction.input
    # What the function computed from the upstream task's value and the templated op_kwarg "{{ 10 + 5 }}".
    assert {k: v for k, v in sent.items() if k not in ("image", "mask")} == {
        "prompt": "an empty meadow in autumn",
        "steps": 30,
        "prompt_upsampling": False,
        "guidance": 3,
        "safety_tolerance": 2,
        "output_format": "png",
    }
    assert sent["image"].startswith(f"{sim.base_url}/files/uploads/")

    result = stack.api.xcom(DAG_ID, run_id, TASK_ID, "return_value")
    output_url = f"{sim.base_url}/files/outputs/{new}.png"
    assert result["prediction_id"] == new
    assert (result["status"], result["model"]) == ("success", "flux-fill-pro")
    assert result["output_url"] == output_url and result["output_urls"] == [output_url]
    stored = Path(result["stored_path"])
    assert stored.name == f"{new}.png" and stored.parent.name == "task-decorator-e2e"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == result["sha256"]
    assert stored.read_bytes() == sim.file_bytes(output_url)
    assert stack.api.xcom(DAG_ID, run_id, TASK_ID, "prediction_id") == new
    (ti,) = [t for t in stack.api.task_instances(DAG_ID, run_id) if t["task_id"] == TASK_ID]
    assert ti["try_number"] == 1 and ti["operator"] in ("FluxFillDecoratedOperator", "@task.eachlabs"), ti
    log = stack.api.log(DAG_ID, run_id, TASK_ID)
    assert "Pausing task as DEFERRED" in log or "deferred" in log.lower(), log[-3000:]
