"""What a user does to a running Airflow over its REST API, shared by the e2e tests: wait for a
DAG to be parsed, edit a Variable, clear a task, start a run and wait until its task defers."""

from __future__ import annotations

from tests.e2e.conftest import AirflowStack, wait_for


def wait_parsed(stack: AirflowStack, *dag_ids: str) -> None:
    """Wait until the dag-processor has serialized these DAGs of the suite's own bundle."""
    wanted = set(dag_ids)
    wait_for(
        f"{', '.join(sorted(wanted))} to be parsed",
        lambda: wanted <= {d["dag_id"] for d in stack.api.get("/dags", params={"limit": 500})["dags"]},
        timeout=120,
        interval=1,
    )


def set_variable(stack: AirflowStack, key: str, value: str) -> None:
    """Create the Variable, or edit it as a user would when it exists."""
    body = {"key": key, "value": value}
    answer = stack.api.request("POST", "/variables", json=body, expect=(201, 409))
    if answer is None or "key" not in answer:
        stack.api.request("PATCH", f"/variables/{key}", json=body)


def clear_task(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> None:
    """Clear one task of a run, whatever its state, and wait for the run to start again."""
    stack.api.request(
        "POST",
        f"/dags/{dag_id}/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": [task_id], "only_failed": False, "dry_run": False},
    )
    wait_for(
        "the cleared run to start again",
        lambda: stack.api.run_state(dag_id, run_id) in ("queued", "running"),
        timeout=30,
        interval=0.2,
    )


def trigger_until_deferred(stack: AirflowStack, dag_id: str) -> str:
    """A new run of the DAG, returned once one of its tasks is deferred."""
    run_id = stack.api.trigger(dag_id)
    wait_for(
        "the task to defer",
        lambda: any(ti["state"] == "deferred" for ti in stack.api.task_instances(dag_id, run_id)),
        timeout=120,
    )
    return run_id
