"""``max_cost`` in a real Airflow: a batch whose estimate exceeds its budget buys nothing, and its task
fails at once (final: the two retries it has are not used), saying why in its log.
"""

from __future__ import annotations

from tests.e2e.conftest import AirflowStack
from tests.e2e.rest import wait_parsed

DAG_ID = "eachlabs_budget_batch"
TASK_ID = "fill_items"


def creates(stack: AirflowStack) -> int:
    return sum(stack.fast_sim.counters.creates.values())


def test_a_batch_whose_estimate_exceeds_max_cost_buys_nothing_and_fails_saying_why(
    dags_ready: AirflowStack,
) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    wait_parsed(stack, DAG_ID)
    before, uploads = creates(stack), stack.fast_sim.counters.uploads

    run_id = stack.api.trigger(DAG_ID)
    state = stack.api.wait_run(DAG_ID, run_id, 180)
    (ti,) = stack.api.task_instances(DAG_ID, run_id)
    log = stack.api.log(DAG_ID, run_id, TASK_ID, ti["try_number"])
    assert state == "failed", f"{ti}\n{log}\n{stack.logs()}"
    assert (ti["state"], ti["try_number"]) == ("failed", 1), ti  # final: no retry
    assert creates(stack) == before and stack.fast_sim.counters.uploads == uploads
    message = (
        "The batch's estimate exceeds max_cost, so nothing was bought: 40 items \u00d7 $0.05 = $2.00, "
        "budget $1.00 (every valid item: 40). Raise max_cost, or buy fewer items."
    )
    assert message in log, log
    outcome = stack.api.xcom(DAG_ID, run_id, TASK_ID, "eachlabs_outcome")
    assert (outcome["error_class"], outcome["final"]) == ("EachlabsBudgetError", True), outcome
    assert outcome["error_message"] == message


def test_a_fill_whose_retry_would_pass_max_cost_stops_at_it(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    sim = stack.fast_sim
    stack.use_simulator(sim)
    wait_parsed(stack, "eachlabs_budget_fill")
    before = creates(stack)
    sim.inject("create", "fail", times=1, error_code="PROVIDER_UNAVAILABLE", error_message="busy")
    run_id = stack.api.trigger("eachlabs_budget_fill")
    assert stack.api.wait_run("eachlabs_budget_fill", run_id, 180) == "failed"
    (ti,) = stack.api.task_instances("eachlabs_budget_fill", run_id)
    assert (ti["state"], ti["try_number"]) == ("failed", 2), ti  # the retry refused; the third not tried
    assert creates(stack) == before + 1
    outcome = stack.api.xcom("eachlabs_budget_fill", run_id, "fill", "eachlabs_outcome")
    assert outcome["error_class"] == "EachlabsBudgetError" and outcome["final"] is True, outcome
    assert outcome["error_message"].startswith("max_cost $0.07: spent $0.05 on 1 prediction ("), outcome
    assert "the next one costs $0.05: it was not sent" in outcome["error_message"], outcome
