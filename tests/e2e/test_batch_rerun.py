"""Re-running a batch in a real Airflow, the way the user who met the bug did: one item of a batch
whose items come from a Variable is rejected by content policy; the item is fixed in the Variable and
the task cleared over the REST API. The clear buys exactly the fixed item, with its new prompt; a
second clear with nothing changed buys nothing. The batch runs in the real triggerer, its journal on
the output storage (no ``task_state_store``).
"""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import AirflowStack
from tests.e2e.rest import clear_task, set_variable, wait_parsed

DAG_ID = "eachlabs_rerun_batch"
TASK_ID = "fill_items"
VARIABLE = "eachlabs_rerun_items"
REJECTED = "a forbidden meadow"  # the simulator rejects every prompt with "forbidden" in it
FIXED = "an empty meadow at dawn"


def items(bad_prompt: str) -> list[dict[str, Any]]:
    return [
        {"key": "sofa", "prompt": "a green sofa", "seed": 1},
        {"key": "bad", "prompt": bad_prompt, "seed": 2},
        {"key": "lamp", "prompt": "a tall lamp", "seed": 3},
    ]


def set_items(stack: AirflowStack, value: list[dict[str, Any]]) -> None:
    set_variable(stack, VARIABLE, json.dumps(value))


def clear(stack: AirflowStack, run_id: str) -> None:
    clear_task(stack, DAG_ID, run_id, TASK_ID)


def rows(stack: AirflowStack) -> dict[str, dict[str, Any]]:
    results = stack.output_dir / "rerun-batch" / "eachlabs-results.jsonl"
    return {row["key"]: row for row in map(json.loads, results.read_text().splitlines())}


def creates(stack: AirflowStack) -> int:
    return sum(stack.fast_sim.counters.creates.values())


def test_a_cleared_batch_buys_only_the_item_fixed_in_the_variable(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    wait_parsed(stack, DAG_ID)
    set_items(stack, items(REJECTED))
    before = creates(stack)

    run_id = stack.api.trigger(DAG_ID)
    assert stack.api.wait_run(DAG_ID, run_id, 180) == "failed"
    assert creates(stack) - before == 3
    first = rows(stack)
    rejected = first["bad"]["prediction_id"]
    assert (first["bad"]["status"], first["bad"]["error_code"]) == ("failed", "PROVIDER_REJECTED")
    assert first["sofa"]["status"] == first["lamp"]["status"] == "success"

    set_items(stack, items(FIXED))
    clear(stack, run_id)
    state = stack.api.wait_run(DAG_ID, run_id, 180)
    (ti,) = stack.api.task_instances(DAG_ID, run_id)
    log = stack.api.log(DAG_ID, run_id, TASK_ID, ti["try_number"])
    assert state == "success", f"{ti}\n{log}\n{stack.logs()}"
    assert creates(stack) - before == 4, stack.fast_sim.counters  # exactly one more: the fixed item
    fixed = rows(stack)
    new_id = fixed["bad"]["prediction_id"]
    assert new_id != rejected and fixed["bad"]["status"] == "success"
    assert stack.fast_sim.predictions[new_id].input["prompt"] == FIXED
    for key in ("sofa", "lamp"):
        assert fixed[key]["prediction_id"] == first[key]["prediction_id"]
    assert "Item bad: input changed since try 1 (prompt): buying a new prediction" in log, log
    summary = stack.api.xcom(DAG_ID, run_id, TASK_ID, "return_value")
    assert (summary["succeeded"], summary["creates"]) == (3, 1), summary

    clear(stack, run_id)  # nothing changed: the journal is gone, the results manifest stands in
    assert stack.api.wait_run(DAG_ID, run_id, 180) == "success"
    assert creates(stack) - before == 4, stack.fast_sim.counters
    again = rows(stack)
    assert {key: row["prediction_id"] for key, row in again.items()} == {
        key: row["prediction_id"] for key, row in fixed.items()
    }
    assert all((stack.output_dir / "rerun-batch" / f"{key}.png").is_file() for key in again)
    (ti,) = stack.api.task_instances(DAG_ID, run_id)
    log = stack.api.log(DAG_ID, run_id, TASK_ID, ti["try_number"])
    assert "3 items unchanged since an earlier try re-use what it bought" in log, log
