"""Every dollar on the page, in a real Airflow: a DAG that buys in every way a DAG does (a fill
retried after a transient failure, a rejected fill retried, a batch with a rejected item retried, a
``@task`` with ``EachlabsHook``), then a clear and an ``airflow dags test`` run of the same DAG. The
fills page's figures for the DAG, and the StatsD listener's, must equal what the simulator billed for
this DAG's predictions (their prompts start with ``spend:``): every try's, every item's, once.
"""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.e2e.conftest import AirflowStack
from tests.e2e.rest import clear_task, wait_parsed
from tests.e2e.test_metrics import mark, ours, received
from tests.e2e.test_ui_plugin import plugin

DAG_ID = "eachlabs_spend_scenario"
pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("airflow.models.task_state_store") is None,
    reason="the ledger is kept in Airflow 3.3's task_state_store",
)


def billed(stack: AirflowStack) -> tuple[int, Decimal]:
    """The simulator's count and summed cost of this DAG's predictions."""
    mine = [
        p for p in stack.fast_sim.predictions.values() if str(p.input.get("prompt", "")).startswith("spend:")
    ]
    return len(mine), sum((Decimal(repr(p.cost)) for p in mine), Decimal(0))


def page_figures(stack: AirflowStack) -> tuple[int, Decimal]:
    page = plugin(stack, "/", dag_id=DAG_ID).text
    bought = int(re.search(r'id="bought">(\d+)<', page).group(1))  # type: ignore[union-attr]
    spend = Decimal(re.search(r'id="spend">\$([0-9.,]+)<', page).group(1).replace(",", ""))  # type: ignore[union-attr]
    return bought, spend


def test_the_fills_page_and_the_metrics_count_every_prediction_the_api_billed(
    dags_ready: AirflowStack,
) -> None:
    stack = dags_ready
    sim = stack.fast_sim
    stack.use_simulator(sim)
    wait_parsed(stack, DAG_ID)
    assert billed(stack) == (0, 0) and page_figures(stack) == (0, 0)
    since = mark(stack)
    # The first fill's first prediction fails for a passing reason: its retry buys another.
    sim.inject("create", "fail", times=1, error_code="PROVIDER_UNAVAILABLE", error_message="busy")
    run_id = stack.api.trigger(DAG_ID)
    # The run succeeds with its last task (each runs whatever the one before did).
    assert stack.api.wait_run(DAG_ID, run_id, 300) == "success", stack.logs()
    states = {
        ti["task_id"]: (ti["state"], ti["try_number"]) for ti in stack.api.task_instances(DAG_ID, run_id)
    }
    assert states == {
        "retried": ("success", 2),
        "rejected": ("failed", 1),  # a content-policy rejection: no retry
        "batch": ("failed", 1),  # its one failure is final: no retry
        "with_the_hook": ("success", 1),
    }, states
    # Bought: 2 (retried) + 1 (rejected) + 3 (batch) + 1 (hook).
    assert billed(stack)[0] == 7
    clear_task(stack, DAG_ID, run_id, "retried")  # unchanged: re-used, nothing bought
    stack.api.wait_run(DAG_ID, run_id, 300)
    count, cost = billed(stack)
    assert count == 7
    assert page_figures(stack) == (count, cost)
    sent = ours(received(stack, since), DAG_ID)
    assert sent["eachlabs.predictions.bought"] == count, sent
    assert sent["eachlabs.cost_micro_usd"] == int(cost * 1_000_000), sent

    # airflow dags test: the same DAG run in one process, recorded like any other run.
    test_run = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    count, cost = billed(stack)
    assert count > 7, test_run.stderr[-3000:]
    assert page_figures(stack) == (count, cost)
