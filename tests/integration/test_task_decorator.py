"""``@task.eachlabs`` over real HTTP against the simulator: the function's dict is what is sent, the
result is the operators', bad input fails as the operators fail, and re-runs follow the same rule.

As in test_operators.py, Airflow's runtime context is stood in for by small recorders; a "try" is a
fresh task built from the same decorator, executed with the same ``task_state_store``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_eachlabs import schema
from airflow_provider_eachlabs.decorators.eachlabs import (
    EachlabsDecoratedOperator,
    FluxFillDecoratedOperator,
    eachlabs_task,
)
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json
from tests.integration.test_operators import DATA, RecordingStateStore, context, fill
from tests.integration.test_reruns import Try

CALLS: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def fresh() -> None:
    CALLS.clear()
    schema._schemas.clear()


def scene_fill(prompt: str, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decorated function: the input computed in Python from the task's arguments."""
    CALLS.append({"prompt": prompt, "seed": seed})
    return {
        "prompt": f"{prompt}, photographed at noon",
        "image": str(DATA / "scene.png"),
        "mask": str(DATA / "scene_mask.png"),
        "seed": seed * 2,
        "output_format": "png",
        **(extra or {}),
    }


def task_of(function: Any, *args: Any, model: str = "flux-fill-pro", **kwargs: Any) -> Any:
    """The operator ``@task.eachlabs(model=..., **operator arguments)`` makes of ``function(*args)``."""
    arguments = {"poll_interval": 0.05, "deferrable": False, **kwargs}
    call_kwargs = arguments.pop("call_kwargs", {})
    return eachlabs_task(model=model, **arguments)(function)(*args, **call_kwargs).operator


class TI(Try):
    """One try's task instance; it reads back what it pushed, as a resumed task reads its XCom."""

    task_id, map_index = "scene_fill", -1

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int) -> Any:
        assert (task_ids, map_indexes) == (self.task_id, self.map_index)
        return self.xcoms.get(key)


def test_task_eachlabs_is_the_registered_decorator():
    from airflow.sdk import task

    assert task.eachlabs is eachlabs_task


def test_a_fill_sends_the_computed_input_and_returns_the_operators_result(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    operator = task_of(scene_fill, "an empty meadow", 21, output_path=f"{tmp_path}/")
    assert isinstance(operator, FluxFillDecoratedOperator)
    ctx = context()
    result = operator.execute(ctx)
    prediction_id = result["prediction_id"]
    sent = eachlabs_conn.predictions[prediction_id].input
    # Files were uploaded as FluxFillOperator uploads them; omitted fields took the page's defaults.
    assert sent["image"].startswith(f"{eachlabs_conn.base_url}/files/uploads/")
    assert sent["mask"].startswith(f"{eachlabs_conn.base_url}/files/uploads/")
    assert {k: v for k, v in sent.items() if k not in ("image", "mask")} == {
        "prompt": "an empty meadow, photographed at noon",
        "seed": 42,
        "steps": 50,
        "prompt_upsampling": False,
        "guidance": 3,
        "safety_tolerance": 2,
        "output_format": "png",
    }
    assert CALLS == [{"prompt": "an empty meadow", "seed": 21}]
    stored = tmp_path / f"{prediction_id}.png"
    output_url = f"{eachlabs_conn.base_url}/files/outputs/{prediction_id}.png"
    assert result == {
        "prediction_id": prediction_id,
        "model": "flux-fill-pro",
        "status": "success",
        "output_url": output_url,
        "output_urls": [output_url],
        "predict_time": 0.3,
        "cost": 0.05,
        "metrics": {"predict_time": 0.3, "cost": 0.05},
        "stored_path": str(stored),
        "bytes": stored.stat().st_size,
        "sha256": hashlib.sha256(stored.read_bytes()).hexdigest(),
        "content_type": "image/png",
        "width": 512,
        "height": 384,
    }
    # The same keys, XComs and record as FluxFillOperator given the same input.
    operator_ctx = context()
    by_operator = fill(prompt=sent["prompt"], seed=42, output_path=f"{tmp_path}/op/").execute(operator_ctx)
    assert set(result) == set(by_operator)
    assert set(ctx["ti"].xcoms) == set(operator_ctx["ti"].xcoms)
    assert ctx["ti"].xcoms["eachlabs_request"]["input"] == sent
    assert ctx["task_state_store"]["eachlabs_prediction"]["id"] == prediction_id
    assert eachlabs_conn.counters.create_requests == 2


@pytest.mark.parametrize(
    ("bad", "operator_arguments"),
    [
        ({"steps": 51}, {"steps": 51}),
        ({"guidance": "7"}, {"guidance": "7"}),
        ({"image": "/nope/scene.png"}, {"image": "/nope/scene.png"}),
        ({"prompt": "None"}, {"prompt": "None"}),
    ],
)
def test_bad_fill_input_fails_at_once_with_the_operators_message_and_no_request(
    eachlabs_conn: EachlabsSimulator, bad: dict[str, Any], operator_arguments: dict[str, Any]
):
    def make_fill() -> dict[str, Any]:
        return {**scene_fill("a meadow", 1), **bad}

    with pytest.raises(AirflowFailException) as by_decorator:
        task_of(make_fill).execute(context())
    with pytest.raises(AirflowFailException) as by_operator:
        fill(**operator_arguments).execute(context())
    assert str(by_decorator.value) == str(by_operator.value)
    assert str(by_decorator.value).startswith(f"Invalid {next(iter(bad))}=")
    assert eachlabs_conn.counters.requests == 0


def test_a_missing_prompt_and_an_unknown_field_are_named(eachlabs_conn: EachlabsSimulator):
    def no_prompt() -> dict[str, Any]:
        return {"image": str(DATA / "scene.png")}

    with pytest.raises(AirflowFailException, match=r"^Invalid prompt=None: must be a non-empty string$"):
        task_of(no_prompt).execute(context())
    with pytest.raises(
        AirflowFailException,
        match=r"^Invalid strength=0\.8: is not a flux-fill-pro input; its fields: prompt, image, mask, seed, "
        r"steps, prompt_upsampling, guidance, safety_tolerance, output_format$",
    ):
        task_of(scene_fill, "a meadow", 1, call_kwargs={"extra": {"strength": 0.8}}).execute(context())
    assert eachlabs_conn.counters.requests == 0


@pytest.mark.parametrize(
    ("returned", "kind"),
    [(["a meadow"], "list"), ("a meadow", "str"), (None, "NoneType")],
)
def test_a_function_that_returns_no_dict_fails_naming_the_task_the_type_and_the_rule(
    eachlabs_conn: EachlabsSimulator, returned: Any, kind: str
):
    def make_fill() -> Any:
        return returned

    with pytest.raises(AirflowFailException) as caught:
        task_of(make_fill).execute(context())
    assert str(caught.value) == (
        f"Invalid input={returned!r}: @task.eachlabs task 'make_fill' returned a {kind}, not a dict: "
        "its function must return the model's input as a dict of field names to values"
    )
    assert eachlabs_conn.counters.requests == 0


def test_other_models_are_checked_against_their_published_schema(eachlabs_conn: EachlabsSimulator):
    image = "https://cdn.example.com/a.png"

    def upscale(scale: int) -> dict[str, Any]:
        return {"image": image, "scale": scale}

    with pytest.raises(AirflowFailException) as by_decorator:
        task_of(upscale, 9, model="upscale-image").execute(context())
    with pytest.raises(AirflowFailException) as by_operator:
        EachlabsPredictionOperator(
            task_id="t", model="upscale-image", input={"image": image, "scale": 9}, deferrable=False
        ).execute(context())
    assert str(by_decorator.value) == str(by_operator.value)
    assert str(by_decorator.value).startswith("Invalid input.scale=9: must be at most 4")
    assert eachlabs_conn.counters.create_requests == 0

    def echo() -> dict[str, Any]:
        return {"text": "hi"}

    operator = task_of(echo, model="echo-test")
    assert isinstance(operator, EachlabsDecoratedOperator)
    result = operator.execute(context())
    assert eachlabs_conn.predictions[result["prediction_id"]].input == {"text": "hi"}
    assert (result["status"], result["model"]) == ("success", "echo-test")


def test_op_kwargs_and_operator_fields_are_templated(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    operator = task_of(
        scene_fill,
        "{{ params.prompt }}",
        call_kwargs={"seed": 5},
        output_path="{{ params.out }}/",
    )
    assert {"op_args", "op_kwargs", "output_path", "fresh_prediction"} <= set(operator.template_fields)
    ctx = context()
    ctx["params"] = {"prompt": "a lake", "out": str(tmp_path)}
    operator.render_template_fields(ctx)
    result = operator.execute(ctx)
    assert (
        eachlabs_conn.predictions[result["prediction_id"]].input["prompt"] == "a lake, photographed at noon"
    )
    assert Path(result["stored_path"]).parent == tmp_path


def test_arguments_that_belong_in_the_function_are_refused_when_the_dag_is_parsed():
    with pytest.raises(TypeError, match="takes no input="):
        task_of(scene_fill, "a", 1, input={"prompt": "x"})
    with pytest.raises(TypeError, match="prompt is a model input: return it from the decorated function"):
        task_of(scene_fill, "a", 1, prompt="x")
    with pytest.raises(TypeError, match="needs model="):
        eachlabs_task()(scene_fill)


def test_a_deferred_fill_resumes_with_the_format_it_asked_for(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    """A resumed task is a new operator that never ran the function: on Airflow 3.3 the record says
    what was sent, on 3.2 (no task_state_store) the request this try pushed to XCom does."""
    for store in (RecordingStateStore(), None):
        ti = TI(1, 2)
        ctx: dict[str, Any] = {"ti": ti}
        if store is not None:
            ctx["task_state_store"] = store
        with pytest.raises(TaskDeferred) as deferred:
            task_of(scene_fill, "a meadow", 1, deferrable=True, output_path=f"{tmp_path}/").execute(ctx)
        prediction_id = deferred.value.trigger.serialize()[1]["prediction_id"]
        prediction = eachlabs_conn.predictions[prediction_id]
        resumed = task_of(scene_fill, "a meadow", 1, deferrable=True, output_path=f"{tmp_path}/")
        prediction_now = resumed.hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
        event = {"status": "success", "prediction_id": prediction_id, "prediction": prediction_now.to_dict()}
        result = resumed.execute_complete(ctx, event)
        assert resumed.expected_output_format() == "png" == prediction.input["output_format"]
        assert result["stored_path"] == f"{tmp_path}/{prediction_id}.png"
    assert len(CALLS) == 2  # once per first try; never on resume


def test_a_retry_re_attaches_and_buys_nothing_twice(eachlabs_conn: EachlabsSimulator):
    store = RecordingStateStore()
    first = task_of(scene_fill, "a meadow", 1, deferrable=True)
    with pytest.raises(TaskDeferred):
        first.execute({"ti": TI(1, 2), "task_state_store": store})
    ti = TI(2, 2)  # a retry: max_tries kept
    result = task_of(scene_fill, "a meadow", 1).execute({"ti": ti, "task_state_store": store})
    assert result["prediction_id"] == first.prediction_id
    assert result["status"] == "success"
    assert eachlabs_conn.counters.create_requests == 1
    assert eachlabs_conn.counters.uploads == 2  # image and mask, once: the retry re-used the uploads
    assert ti.xcoms["eachlabs_request"]["how"] == "re-used"
    assert len(CALLS) == 2  # the retry computed the input again, and found it unchanged


def test_a_clear_with_unchanged_input_buys_nothing_and_a_changed_one_buys_once(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    store = RecordingStateStore()
    out = f"{tmp_path}/"
    first = task_of(scene_fill, "a meadow", 1, output_path=out).execute(
        {"ti": TI(1, 2), "task_state_store": store}
    )
    # A clear: max_tries raised past the try number.
    again = task_of(scene_fill, "a meadow", 1, output_path=out).execute(
        {"ti": TI(2, 3), "task_state_store": store}
    )
    assert eachlabs_conn.counters.create_requests == 1
    assert again["prediction_id"] == first["prediction_id"] and again["sha256"] == first["sha256"]
    changed = task_of(scene_fill, "a lake", 1, output_path=out).execute(
        {"ti": TI(3, 4), "task_state_store": store}
    )
    assert eachlabs_conn.counters.create_requests == 2
    assert changed["prediction_id"] != first["prediction_id"]
    assert (
        eachlabs_conn.predictions[changed["prediction_id"]].input["prompt"] == "a lake, photographed at noon"
    )


@pytest.fixture
def example_env(airflow_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    with EachlabsSimulator(api_key="dag-key-42", predict_seconds=0.3) as sim:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(sim.base_url, api_key="dag-key-42")
        )
        monkeypatch.setenv("EACHLABS_DEMO_OUTPUT", str(tmp_path / "out"))
        yield sim


def test_the_example_dag_runs_whole(example_env: EachlabsSimulator, tmp_path: Path):
    """``dag.test()`` of example_dags/example_task_decorator.py (deferred, through the triggerer)."""
    from tests.dags.test_example_dags import load_dag, xcoms

    run = load_dag("example_task_decorator").test()
    assert run.state == "success"
    (result,) = xcoms(run, "fill_scene")
    assert result["status"] == "success" and result["model"] == "flux-fill-pro"
    assert result["stored_path"] == f"{tmp_path}/out/task-decorator/{result['prediction_id']}.png"
    assert Path(result["stored_path"]).is_file()
    sent = example_env.predictions[result["prediction_id"]].input
    assert sent["prompt"] == "an empty green meadow under a clear sky, seen in spring"
    assert example_env.counters.creates == {"dag-key-42": 1}
