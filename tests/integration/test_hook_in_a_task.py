"""The README's "Using ``EachlabsHook`` in a task" example, run as it is: a real ``@task`` in
``dag.test()`` against the simulator uploads a file, buys one fill, waits, stores the output and
returns its URL. The README shows the task's code from ``example_dags/example_hook_in_task.py``, and
the last test keeps the two the same once the section is there."""

from __future__ import annotations

import ast
import importlib.util
import json
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import ROOT, connection_json

EXAMPLE = ROOT / "example_dags" / "example_hook_in_task.py"
DATA = ROOT / "example_dags" / "data"
KEY = "hook-task-key-5"
README_HEADING = "Using `EachlabsHook` in a task"


@pytest.fixture
def sim(airflow_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EachlabsSimulator]:
    with EachlabsSimulator(api_key=KEY, predict_seconds=0.3) as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(simulator.base_url, api_key=KEY))
        monkeypatch.setenv("EACHLABS_DEMO_OUTPUT", str(tmp_path / "out"))
        yield simulator


def load_dag() -> Any:
    spec = importlib.util.spec_from_file_location("example_hook_in_task", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def task_result(run: Any) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (row,) = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids="fill_with_the_hook", key="return_value"
            )
        ).all()
        return XComModel.deserialize_value(row)


def test_the_task_uploads_fills_waits_stores_and_returns_the_output_url(
    sim: EachlabsSimulator, tmp_path: Path
):
    run = load_dag().test()
    assert run.state == "success"

    output_url = task_result(run)
    (prediction_id,) = sim.predictions
    assert output_url == sim.predictions[prediction_id].output
    assert output_url.startswith(f"{sim.base_url}/files/") and output_url.endswith(f"/{prediction_id}.png")
    # One fill bought, of the two files the task uploaded, each uploaded once with its own bytes.
    assert sim.counters.creates == {KEY: 1}
    assert (sim.counters.presigns, sim.counters.uploads) == (2, 2)
    sent = sim.predictions[prediction_id].input
    assert sent["prompt"] == "an empty green meadow under a clear sky" and sent["output_format"] == "png"
    hook = EachlabsHook()
    assert hook.download(sent["image"]).content == (DATA / "scene.png").read_bytes()
    assert hook.download(sent["mask"]).content == (DATA / "scene_mask.png").read_bytes()
    # The output was stored as the API served it, and it is the filled scene.
    stored = tmp_path / "out" / f"{prediction_id}.png"
    assert stored.read_bytes() == hook.download(output_url).content
    assert Image.open(stored).size == Image.open(DATA / "scene.png").size
    # The fill is in the task's spend ledger, with the cost the API billed, as an operator's would be.
    entries = ledger_entries(run.run_id)
    if entries is not None:  # Airflow 3.3 and newer
        assert set(entries) == {
            f"eachlabs_ledger/bought/{prediction_id}",
            f"eachlabs_ledger/ended/{prediction_id}",
        }
        ended = entries[f"eachlabs_ledger/ended/{prediction_id}"]
        billed = round(sim.predictions[prediction_id].cost * 1_000_000)
        assert (ended["status"], ended["cost"], ended["conn"]) == ("succeeded", billed, "eachlabs_default")


def ledger_entries(run_id: str) -> dict[str, Any] | None:
    """The ``eachlabs_ledger/`` rows of the run's task_state_store, or None before Airflow 3.3."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel as Store
    except ImportError:
        return None
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(Store.key, Store.value).where(Store.run_id == run_id)).all()
    return {key: json.loads(value) for key, value in rows if key.startswith("eachlabs_ledger/")}


def test_a_text_file_fails_the_task_at_once_and_buys_nothing(sim: EachlabsSimulator, tmp_path: Path):
    """The example's ``final_errors_fail_the_task``: one try, whatever ``retries`` says; no request."""
    notes = tmp_path / "scene.png"
    notes.write_text("a text file with an image's name\n")
    dag = load_dag()
    task = dag.get_task("fill_with_the_hook")
    task.retries, task.retry_delay = 2, timedelta(0)
    run = dag.test(run_conf={"image": str(notes)})
    assert run.state == "failed"
    (ti,) = run.get_task_instances()
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert sim.counters.requests == 0


def example_task_source() -> str:
    """The ``@task`` function of the example DAG, decorator included, dedented."""
    text = EXAMPLE.read_text()
    tree = ast.parse(text)
    (function,) = (
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "fill_with_the_hook"
    )
    lines = text.splitlines()[function.decorator_list[0].lineno - 1 : function.end_lineno]
    return textwrap.dedent("\n".join(lines))


def test_the_readme_shows_the_code_this_test_runs():
    readme = (ROOT / "README.md").read_text()
    if README_HEADING not in readme:
        pytest.skip(f"the README has no {README_HEADING!r} section yet")
    section = readme.split(README_HEADING, 1)[1].split("\n## ", 1)[0]
    assert example_task_source() in section, "the README's example is not the code the test above runs"
