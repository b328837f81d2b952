"""The re-run rule for one fill, against the simulator: each way a task instance runs again, what it
buys, and what its log, XCom and stored file say. Each case adds a row to the table the run prints
(the README's "Re-running a fill" carries it).

A "try" here is a fresh operator executed with the same ``task_state_store``, as Airflow runs a retry
or a clear; Airflow raises ``max_tries`` on a clear and keeps it on a retry, and so does ``Try``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.conftest import RERUN_ROWS
from tests.integration.test_operators import DATA, RecordingStateStore, RecordingTI, fill

REJECTED = {"error_code": "PROVIDER_REJECTED", "error_message": "flagged by moderation"}


class Try(RecordingTI):
    """The task instance as one try sees it."""

    def __init__(self, try_number: int, max_tries: int) -> None:
        super().__init__()
        self.try_number, self.max_tries = try_number, max_tries


class TaskInstance:
    """One task instance across its tries: its state store, and retries and clears as Airflow counts them."""

    def __init__(self, store: RecordingStateStore | None = None) -> None:
        self.store = store if store is not None else RecordingStateStore()
        self.try_number, self.max_tries = 0, 2  # retries=2

    def run(self, how: str, **kwargs: Any) -> tuple[Try, Any]:
        """A try: the first, a ``retry`` (max_tries kept) or a ``clear`` (max_tries raised)."""
        if how == "clear":
            self.max_tries = self.try_number + 2
        self.try_number += 1
        ti = Try(self.try_number, self.max_tries)
        context: dict[str, Any] = {"ti": ti}
        if self.store is not None:
            context["task_state_store"] = self.store
        return ti, fill(output_path=kwargs.pop("output_path"), **kwargs).execute(context)


def creates(sim: EachlabsSimulator) -> int:
    return sim.counters.create_requests


def row(order: int, run_again_by: str, input_since: str, bought: int, outcome: str) -> None:
    RERUN_ROWS.append(
        {
            "order": order,
            "operator": "FluxFillOperator",
            "run again by": run_again_by,
            "input since the earlier try": input_since,
            "predictions bought": bought,
            "outcome": outcome,
        }
    )


def logged(printed: str, line: str) -> bool:
    return re.search(r"\] " + re.escape(line) + r" \[", printed) is not None


@pytest.fixture
def out(tmp_path: Path) -> str:
    return f"{tmp_path}/out/"


def test_a_retry_of_an_unchanged_fill_re_uses_its_prediction(
    eachlabs_conn: EachlabsSimulator, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInstance()
    _, first = task.run("first", output_path=out)
    Path(first["stored_path"]).unlink()  # and the file is gone
    before = creates(eachlabs_conn)
    ti, again = task.run("retry", output_path=out)
    assert creates(eachlabs_conn) == before
    assert again["prediction_id"] == first["prediction_id"] and Path(again["stored_path"]).exists()
    assert logged(
        capsys.readouterr().out,
        f"Input unchanged since try 1: re-using prediction {first['prediction_id']} (status 'success'); "
        "set fresh_prediction=True to buy a new one",
    )
    assert ti.xcoms["eachlabs_request"]["how"] == "re-used"
    row(1, "retry", "unchanged", 0, "re-uses the prediction; stores its output again if the file is gone")


def test_a_clear_with_nothing_changed_buys_nothing(eachlabs_conn: EachlabsSimulator, out: str) -> None:
    task = TaskInstance()
    _, first = task.run("first", output_path=out)
    before = creates(eachlabs_conn)
    _, again = task.run("clear", output_path=out)
    assert creates(eachlabs_conn) == before
    assert again["prediction_id"] == first["prediction_id"] and again["sha256"] == first["sha256"]
    row(2, "clear", "unchanged", 0, "re-uses the prediction")


def test_a_clear_after_an_edit_buys_one_prediction_with_the_new_input(
    eachlabs_conn: EachlabsSimulator, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInstance()
    _, first = task.run("first", output_path=out, prompt="a meadow", seed=1)
    before = creates(eachlabs_conn)
    ti, again = task.run("clear", output_path=out, prompt="a quiet lake", seed=2)
    assert creates(eachlabs_conn) == before + 1
    new = again["prediction_id"]
    assert new != first["prediction_id"]
    sent = eachlabs_conn.predictions[new].input
    assert (sent["prompt"], sent["seed"]) == ("a quiet lake", 2)
    assert Path(again["stored_path"]).name.startswith(new) and Path(again["stored_path"]).exists()
    assert logged(
        capsys.readouterr().out, "Input changed since try 1 (prompt, seed): buying a new prediction"
    )
    assert (ti.xcoms["eachlabs_request"]["how"], ti.xcoms["eachlabs_request"]["prediction_id"]) == (
        "bought",
        new,
    )
    row(3, "clear", "edited (prompt, seed)", 1, "buys a new prediction with the new input")


def test_the_same_bytes_from_another_path_are_the_same_input(
    eachlabs_conn: EachlabsSimulator, out: str, tmp_path: Path
) -> None:
    """Files count by their content: a copy is unchanged, the same path with other bytes is changed."""
    image = tmp_path / "scene.png"
    shutil.copyfile(DATA / "scene.png", image)
    task = TaskInstance()
    task.run("first", output_path=out, image=str(image))
    copy = tmp_path / "copy.png"
    shutil.copyfile(image, copy)
    before = creates(eachlabs_conn)
    task.store.pop("eachlabs_uploads")  # even when the uploads are no longer remembered
    task.run("clear", output_path=out, image=str(copy))
    assert creates(eachlabs_conn) == before
    from PIL import Image

    original = image.read_bytes()
    with Image.open(image) as picture:
        picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)
    assert image.read_bytes() != original
    task.run("clear", output_path=out, image=str(image))
    assert creates(eachlabs_conn) == before + 1
    row(
        4,
        "clear",
        "same image bytes at another path / new bytes at the same path",
        "0 / 1",
        "files count by content",
    )


def test_a_clear_after_a_rejection_refuses_at_once_and_a_fix_buys_one(
    eachlabs_conn: EachlabsSimulator, out: str
) -> None:
    task = TaskInstance()
    eachlabs_conn.inject("create", "fail", **REJECTED)
    with pytest.raises(AirflowFailException, match="flagged by moderation"):
        task.run("first", output_path=out, prompt="a flagged prompt")
    [rejected] = list(eachlabs_conn.predictions)
    before = creates(eachlabs_conn)
    with pytest.raises(AirflowFailException) as refused:
        task.run("clear", output_path=out, prompt="a flagged prompt")
    assert creates(eachlabs_conn) == before
    assert str(refused.value) == (
        f"Input unchanged since try 1, whose prediction {rejected} was rejected (content-policy: "
        "PROVIDER_REJECTED: flagged by moderation): not buying it again. Change the input (prompt, "
        "images or parameters), or set fresh_prediction=True to buy a new one"
    )
    row(5, "clear", "unchanged after a rejection", 0, "fails at once, naming the rejected prediction")
    _, fixed = task.run("clear", output_path=out, prompt="an empty meadow")
    assert creates(eachlabs_conn) == before + 1
    assert eachlabs_conn.predictions[fixed["prediction_id"]].input["prompt"] == "an empty meadow"
    row(6, "clear", "edited after a rejection", 1, "buys a new prediction with the new input")


def test_a_transient_failure_of_an_unchanged_input_is_bought_again(
    eachlabs_conn: EachlabsSimulator, out: str
) -> None:
    task = TaskInstance()
    eachlabs_conn.inject("create", "fail", error_code="PROVIDER_TIMEOUT", error_message="upstream timed out")
    with pytest.raises(Exception, match="upstream timed out"):
        task.run("first", output_path=out)
    before = creates(eachlabs_conn)
    _, again = task.run("retry", output_path=out)
    assert creates(eachlabs_conn) == before + 1 and again["status"] == "success"
    row(7, "retry", "unchanged after a transient failure", 1, "buys a new prediction")


def test_fresh_prediction_buys_once_per_run_or_clear_and_its_retries_re_use_it(
    eachlabs_conn: EachlabsSimulator, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInstance()
    _, first = task.run("first", output_path=out)
    before = creates(eachlabs_conn)
    _, fresh = task.run("clear", output_path=out, fresh_prediction="True")  # as a template renders it
    assert creates(eachlabs_conn) == before + 1 and fresh["prediction_id"] != first["prediction_id"]
    assert logged(
        capsys.readouterr().out,
        f"Input unchanged since try 1, but fresh_prediction is set: buying a new prediction instead of "
        f"re-using {first['prediction_id']}",
    )
    _, retried = task.run("retry", output_path=out, fresh_prediction=True)
    assert creates(eachlabs_conn) == before + 1 and retried["prediction_id"] == fresh["prediction_id"]
    _, cleared = task.run("clear", output_path=out, fresh_prediction=True)
    assert creates(eachlabs_conn) == before + 2 and cleared["prediction_id"] != fresh["prediction_id"]
    row(
        8,
        "clear with fresh_prediction=True (then a retry)",
        "unchanged",
        "1 (then 0)",
        "a new variant, once per clear",
    )


def test_without_task_state_store_a_clear_buys_again(
    eachlabs_conn: EachlabsSimulator, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Airflow 3.2: nothing is kept between tries, and the log says so on every try."""
    task = TaskInstance()
    task.store = None  # type: ignore[assignment]
    task.run("first", output_path=out)
    before = creates(eachlabs_conn)
    task.run("clear", output_path=out)
    assert creates(eachlabs_conn) == before + 1
    assert logged(
        capsys.readouterr().out,
        "task_state_store is not available (Airflow older than 3.3): a retry or a clear of this task "
        "cannot know what this try buys, and will buy a new prediction whatever its input",
    )
    row(9, "retry or clear on Airflow 3.2", "any", 1, "buys a new prediction (no task_state_store)")


def test_the_generic_operator_follows_the_same_rule(eachlabs_conn: EachlabsSimulator) -> None:
    from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator

    store = RecordingStateStore()

    def run(text: str, max_tries: int, number: int) -> Any:
        task = EachlabsPredictionOperator(
            task_id="t", model="echo-test", input={"text": text}, poll_interval=0.05, deferrable=False
        )
        return task.execute({"ti": Try(number, max_tries), "task_state_store": store})

    first = run("one", 2, 1)
    before = creates(eachlabs_conn)
    assert run("one", 3, 2)["prediction_id"] == first["prediction_id"]
    assert creates(eachlabs_conn) == before
    edited = run("two", 4, 3)
    assert creates(eachlabs_conn) == before + 1
    assert eachlabs_conn.predictions[edited["prediction_id"]].input == {"text": "two"}
    RERUN_ROWS.append(
        {
            "order": 10,
            "operator": "EachlabsPredictionOperator",
            "run again by": "clear, then clear after an edit",
            "input since the earlier try": "unchanged, then edited",
            "predictions bought": "0, then 1",
            "outcome": "the same rule as FluxFillOperator",
        }
    )


def test_a_failed_prediction_keeps_the_cost_the_api_reported_and_an_error_before_buying_is_told(
    eachlabs_conn: EachlabsSimulator, out: str
) -> None:
    """What the tab shows for a failure: the rejected prediction's cost as the API reported it, and
    for a task that bought nothing (a wrong key), why, with no prediction and no cost."""
    task = TaskInstance()
    eachlabs_conn.inject("create", "fail", **REJECTED)
    ti = Try(1, 2)
    with pytest.raises(AirflowFailException):
        fill(output_path=out, prompt="a flagged prompt").execute({"ti": ti, "task_state_store": task.store})
    [rejected] = eachlabs_conn.predictions.values()
    outcome = ti.xcoms["eachlabs_outcome"]
    assert (outcome["prediction_id"], outcome["status"], outcome["cost"]) == (
        rejected.id,
        "failed",
        rejected.cost,
    )
    assert rejected.cost > 0
    wrong_key = Try(1, 2)
    with pytest.MonkeyPatch.context() as patch:
        from tests.conftest import connection_json

        patch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(eachlabs_conn.base_url, api_key="revoked")
        )
        with pytest.raises(AirflowFailException, match="HTTP 401"):
            fill(output_path=out).execute({"ti": wrong_key, "task_state_store": RecordingStateStore()})
    told = wrong_key.xcoms["eachlabs_outcome"]
    assert (told["prediction_id"], told["cost"], told["error_class"]) == (None, None, "EachlabsAuthError")
