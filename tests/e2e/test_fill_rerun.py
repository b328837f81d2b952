"""Re-running a fill in a real Airflow, as a user does: the prompt comes from a Variable; the
Variable is edited and the succeeded task cleared over the REST API, then cleared again with nothing
changed, then the prompt is made one the simulator rejects and cleared twice. Each clear buys what
the rule says (one prediction for an edit, none otherwise), and the XCom result and the stored file
name the new prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import AirflowStack
from tests.e2e.rest import clear_task, set_variable, wait_parsed

DAG_ID, TASK_ID = "eachlabs_rerun_fill", "fill"
VARIABLE = "eachlabs_rerun_prompt"


def set_prompt(stack: AirflowStack, prompt: str) -> None:
    set_variable(stack, VARIABLE, prompt)


def clear_and_wait(stack: AirflowStack, run_id: str) -> str:
    clear_task(stack, DAG_ID, run_id, TASK_ID)
    return stack.api.wait_run(DAG_ID, run_id, 180)


def creates(stack: AirflowStack) -> int:
    return stack.fast_sim.counters.create_requests


def result(stack: AirflowStack, run_id: str) -> dict[str, Any]:
    return stack.api.xcom(DAG_ID, run_id, TASK_ID, "return_value")


def test_a_cleared_fill_buys_only_when_its_input_changed(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    wait_parsed(stack, DAG_ID)
    set_prompt(stack, "an empty green meadow")
    before = creates(stack)
    run_id = stack.api.trigger(DAG_ID)
    assert stack.api.wait_run(DAG_ID, run_id, 180) == "success", stack.logs()
    first = result(stack, run_id)
    assert creates(stack) - before == 1

    set_prompt(stack, "a quiet lake at dawn")  # the edit
    assert clear_and_wait(stack, run_id) == "success", stack.logs()
    edited = result(stack, run_id)
    assert creates(stack) - before == 2
    assert edited["prediction_id"] != first["prediction_id"]
    assert stack.fast_sim.predictions[edited["prediction_id"]].input["prompt"] == "a quiet lake at dawn"
    assert Path(edited["stored_path"]).name.startswith(edited["prediction_id"])
    assert Path(edited["stored_path"]).exists()
    log = stack.api.log(DAG_ID, run_id, TASK_ID, try_number=2)
    assert "Input changed since try 1 (prompt): buying a new prediction" in log, log[-3000:]

    assert clear_and_wait(stack, run_id) == "success", stack.logs()  # nothing changed
    assert creates(stack) - before == 2
    assert result(stack, run_id)["prediction_id"] == edited["prediction_id"]
    log = stack.api.log(DAG_ID, run_id, TASK_ID, try_number=3)
    assert f"Input unchanged since try 2: re-using prediction {edited['prediction_id']}" in log

    set_prompt(stack, "a forbidden meadow")  # the simulator rejects it
    assert clear_and_wait(stack, run_id) == "failed"
    assert creates(stack) - before == 3
    rejected = stack.api.xcom(DAG_ID, run_id, TASK_ID, "prediction_id")
    assert clear_and_wait(stack, run_id) == "failed"  # the same rejected input: refused, not bought
    assert creates(stack) - before == 3
    log = stack.api.log(DAG_ID, run_id, TASK_ID, try_number=5)
    assert f"whose prediction {rejected} was rejected" in log and "not buying it again" in log
