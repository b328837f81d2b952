"""The provider's metrics as a real Airflow sends them: every component of the e2e deployment has
``[metrics] statsd_on`` pointed at a UDP listener on loopback (``StatsdListener`` in conftest), and
these tests read the datagrams. A deferrable fill (bought on a worker, its end seen by the worker
after the triggerer), a rejected one, and a batch run in the triggerer: the listener must receive
``eachlabs.predictions.bought`` exactly as many times as the simulator counted creates, and the cost
the simulator charged, tagged with the DAG and task as Airflow tags its own ``ti.finish``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import AirflowStack, wait_for
from tests.e2e.rest import wait_parsed

CHARGE_MICRO_USD = 50_000  # the simulator charges $0.05 a prediction, failed ones included
RERUN_DAG, RERUN_TASK, PROMPT_VARIABLE = "eachlabs_rerun_fill", "fill", "eachlabs_rerun_prompt"


@dataclass(frozen=True)
class Line:
    """One StatsD line, ``airflow.<name>,<tag>=<value>...:<value>|<type>`` (InfluxDB-style tags)."""

    name: str
    tags: dict[str, str]
    value: float
    kind: str

    @classmethod
    def parse(cls, text: str) -> Line:
        head, _, body = text.rpartition(":")
        name, *pairs = head.split(",")
        value, kind = body.split("|")[:2]
        return cls(name, dict(pair.split("=", 1) for pair in pairs), float(value), kind)


def received(stack: AirflowStack, since: int) -> list[Line]:
    assert stack.statsd is not None
    return [Line.parse(text) for text in stack.statsd.lines()[since:]]


def mark(stack: AirflowStack) -> int:
    assert stack.statsd is not None
    return len(stack.statsd.lines())


def ours(lines: list[Line], dag_id: str) -> Counter[str]:
    """The sum of each of the provider's counters for one DAG."""
    total: Counter[str] = Counter()
    for line in lines:
        mine = line.name.startswith("airflow.eachlabs.") and line.tags.get("dag_id") == dag_id
        if mine and line.kind == "c":
            total[line.name.removeprefix("airflow.")] += int(line.value)
    return total


def finished(lines: list[Line], dag_id: str) -> list[Line]:
    """Airflow's own ``ti.finish`` lines of a DAG's tasks that ended (a deferral sends one too): they
    come after the provider's, from the same task."""
    return [
        line
        for line in lines
        if line.name == "airflow.ti.finish"
        and line.tags.get("dag_id") == dag_id
        and line.tags.get("state") in ("success", "failed")
    ]


def set_prompt(stack: AirflowStack, prompt: str) -> None:
    body = {"key": PROMPT_VARIABLE, "value": prompt}
    status = stack.api.session.patch(f"{stack.base_url}/api/v2/variables/{PROMPT_VARIABLE}", json=body)
    if status.status_code == 404:
        stack.api.request("POST", "/variables", json=body, expect=(201,))
    else:
        assert status.status_code == 200, status.text


def run(stack: AirflowStack, dag_id: str, expected: str, tasks: int) -> tuple[list[Line], int]:
    """Trigger ``dag_id``, wait for the run and for its tasks' ``ti.finish`` metrics; what the listener
    received meanwhile, and how many predictions the simulator saw created."""
    since, creates = mark(stack), stack.fast_sim.counters.create_requests
    run_id = stack.api.trigger(dag_id)
    assert stack.api.wait_run(dag_id, run_id, 240) == expected, stack.logs()
    wait_for(
        f"the ti.finish metrics of {dag_id}",
        lambda: len(finished(received(stack, since), dag_id)) >= tasks,
        timeout=30,
    )
    return received(stack, since), stack.fast_sim.counters.create_requests - creates


@pytest.fixture
def stack(dags_ready: AirflowStack) -> AirflowStack:
    dags_ready.use_simulator(dags_ready.fast_sim)
    return dags_ready


def test_a_deferrable_fill_sends_one_purchase_its_success_cost_and_time(stack: AirflowStack) -> None:
    dag_id, task_id = "eachlabs_flux_fill", "remove_crate"
    lines, creates = run(stack, dag_id, "success", tasks=1)

    assert creates == 1
    counts = ours(lines, dag_id)
    assert counts["eachlabs.predictions.bought"] == creates
    assert counts["eachlabs.predictions.succeeded"] == 1
    assert counts["eachlabs.cost_micro_usd"] == creates * CHARGE_MICRO_USD
    times = [line for line in lines if line.name == "airflow.eachlabs.predict_time"]
    assert len(times) == 1 and times[0].kind == "ms" and times[0].value > 0
    # Tagged as Airflow tags its own metric of the same task, in the same format.
    (airflow_own,) = finished(lines, dag_id)
    for line in lines:
        if line.name.startswith("airflow.eachlabs."):
            assert line.tags == {"dag_id": dag_id, "task_id": task_id}
            assert {k: airflow_own.tags[k] for k in ("dag_id", "task_id")} == line.tags


def test_a_rejected_fill_sends_its_purchase_and_its_cause(stack: AirflowStack) -> None:
    wait_parsed(stack, RERUN_DAG)
    set_prompt(stack, "a forbidden meadow")
    lines, creates = run(stack, RERUN_DAG, "failed", tasks=1)

    assert creates == 1
    assert ours(lines, RERUN_DAG) == Counter(
        {
            "eachlabs.predictions.bought": creates,
            "eachlabs.predictions.failed.content_policy": 1,
            "eachlabs.cost_micro_usd": CHARGE_MICRO_USD,
        }
    )


def test_a_batch_in_the_triggerer_sends_one_purchase_per_create(stack: AirflowStack) -> None:
    dag_id = "eachlabs_batch_operator"
    lines, creates = run(stack, dag_id, "success", tasks=2)

    assert creates >= 2
    counts = ours(lines, dag_id)
    assert counts["eachlabs.predictions.bought"] == creates
    assert counts["eachlabs.predictions.succeeded"] == creates
    assert counts["eachlabs.cost_micro_usd"] == creates * CHARGE_MICRO_USD
    tagged = {line.tags.get("task_id") for line in lines if line.name.startswith("airflow.eachlabs.")}
    assert tagged == {"fill_all"}
