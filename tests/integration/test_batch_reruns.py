"""Re-running a batch against the simulator over real HTTP: per item, a changed input is bought anew
with what it is now, an unchanged one never twice (re-used, refused when rejected, stored again when
its file is gone), and ``fresh_prediction`` buys every item once per run or clear.

A try is a new ``execute`` of the same task instance; a clear is one whose ``max_tries`` Airflow
raised. The simulator rejects every prompt with the word "forbidden" in it (content policy), and
its counters say what was bought and with which input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs.batch.journal import JOURNAL_FOLDER
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration import test_batch
from tests.integration.conftest import RERUN_ROWS
from tests.integration.test_batch import BatchTI, assert_stored, batch, creates, journal_files, results

start_simulator = test_batch.start_simulator  # the fixture, shared

FIXED = "an empty meadow at dawn"


class TryTI(BatchTI):
    """A try of the task instance: ``try_number``, and ``max_tries`` that only a clear raises."""

    def __init__(self, try_number: int, max_tries: int, run_id: str = "run-1") -> None:
        super().__init__()
        self.try_number, self.max_tries, self.run_id = try_number, max_tries, run_id


def attempt(try_number: int = 1, max_tries: int = 0, run_id: str = "run-1") -> dict[str, Any]:
    return {"ti": TryTI(try_number, max_tries, run_id)}


def items(bad_prompt: str | None = None, **prompts: str) -> list[dict[str, Any]]:
    """Four items; ``bad`` has ``bad_prompt`` when given, any key its own prompt."""
    chosen = {"bad": bad_prompt} if bad_prompt else {}
    chosen.update(prompts)
    return [
        {"key": key, "seed": n, **({"prompt": chosen[key]} if key in chosen else {})}
        for n, key in enumerate(("img0", "img1", "bad", "img3"))
    ]


def table_row(order: int, run_again_by: str, input_since: str, bought: str, outcome: str) -> None:
    """A row of the re-run table the suite prints (the README's "Re-running a fill")."""
    RERUN_ROWS.append(
        {
            "order": order,
            "operator": "FluxFillBatchOperator (4 items)",
            "run again by": run_again_by,
            "input since the earlier try": input_since,
            "predictions bought": bought,
            "outcome": outcome,
        }
    )


def sent_prompts(sim: EachlabsSimulator) -> list[str]:
    return [prediction.input["prompt"] for prediction in sim.predictions.values()]


def said(capsys: pytest.CaptureFixture[str]) -> str:
    """What the task log said since the last call (Airflow's structlog writes it to stdout)."""
    return capsys.readouterr().out


def rejected_first(sim: EachlabsSimulator, out: Path) -> str:
    """The first try: ``bad`` rejected by content policy, the three others stored. Its prediction."""
    with pytest.raises(AirflowFailException):
        batch(out, items("a forbidden meadow")).execute(attempt(1, 0))
    assert creates(sim) == 4
    row = results(out)["bad"]
    assert (row["status"], row["error_code"], row["final"]) == ("failed", "PROVIDER_REJECTED", True)
    return str(row["prediction_id"])


def test_a_rejected_item_fixed_in_the_manifest_is_bought_once_with_its_new_prompt(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sim = start_simulator()
    out = tmp_path / "out"
    rejected = rejected_first(sim, out)
    before = dict(results(out))

    said(capsys)
    summary = batch(out, items(FIXED)).execute(attempt(1, 1))  # the task cleared after the edit

    assert creates(sim) == 5  # one more: the fixed item, and only it
    assert sent_prompts(sim)[-1] == FIXED  # what the manifest says now, not what the journal kept
    rows = results(out)
    assert rows["bad"]["prediction_id"] != rejected
    assert_stored(sim, rows["bad"], out / "bad.png")
    for key in ("img0", "img1", "img3"):  # unchanged: the same predictions, the same files
        assert rows[key]["prediction_id"] == before[key]["prediction_id"]
        assert_stored(sim, rows[key], out / f"{key}.png")
    assert (summary["succeeded"], summary["failed"], summary["creates"]) == (4, 0, 1)
    log = said(capsys)
    assert "Item bad: input changed since try 1 (prompt): buying a new prediction" in log
    assert "3 items unchanged since an earlier try re-use what it bought" in log
    assert rows["bad"]["input_key"] != before["bad"]["input_key"]
    assert rows["img0"]["input_key"] == before["img0"]["input_key"]
    table_row(
        11,
        "clear",
        "the rejected item fixed",
        "1",
        "buys the fixed item with its new prompt; the 3 others re-used",
    )


def test_an_unchanged_rejected_item_is_refused_without_buying_naming_the_prediction(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sim = start_simulator()
    out = tmp_path / "out"
    rejected = rejected_first(sim, out)

    said(capsys)
    for try_number, max_tries in ((2, 0), (1, 1)):  # a retry, then a clear
        with pytest.raises(AirflowFailException) as caught:  # final: no retry could help
            batch(out, items("a forbidden meadow")).execute(attempt(try_number, max_tries))
        assert creates(sim) == 4  # nothing bought again
        row = results(out)["bad"]
        assert (row["status"], row["prediction_id"], row["final"]) == ("failed", rejected, True)
        assert f"whose prediction {rejected} was rejected (content-policy: PROVIDER_REJECTED)" in row["error"]
        assert "Change the input (prompt, images or parameters)" in row["error"]
        assert "fresh_prediction=True" in row["error"]
        assert row["error"] in str(caught.value)
        log = said(capsys)
        assert f"Item bad: {row['error']}" in log
    table_row(
        12,
        "retry, clear",
        "unchanged after a rejection",
        "0",
        "the rejected item refused, naming its prediction",
    )


def test_a_batch_cleared_after_success_keeps_the_unchanged_and_buys_the_changed(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sim = start_simulator()
    out = tmp_path / "out"
    batch(out, items()).execute(attempt(1, 0))
    first = results(out)
    assert creates(sim) == 4 and journal_files(out) == []  # success removed the journal

    summary = batch(out, items()).execute(attempt(1, 1))  # cleared, nothing changed

    assert creates(sim) == 4
    assert summary["succeeded"] == 4 and summary["spend"] == 0.2  # the API's costs, read again
    rows = results(out)
    for key, row in rows.items():
        assert row["prediction_id"] == first[key]["prediction_id"]
        assert_stored(sim, row, out / f"{key}.png")

    said(capsys)
    batch(out, items(img1="a meadow with a fox")).execute(attempt(1, 2))  # cleared after an edit

    assert creates(sim) == 5
    assert sent_prompts(sim)[-1] == "a meadow with a fox"
    rows = results(out)
    assert rows["img1"]["prediction_id"] != first["img1"]["prediction_id"]
    assert_stored(sim, rows["img1"], out / "img1.png")
    assert [rows[key]["prediction_id"] for key in ("img0", "bad", "img3")] == [
        first[key]["prediction_id"] for key in ("img0", "bad", "img3")
    ]
    log = said(capsys)
    assert "Item img1: input changed since try 1 (prompt): buying a new prediction" in log
    table_row(
        13,
        "clear after full success",
        "unchanged, then one item edited",
        "0, then 1",
        "keeps the stored items",
    )


def test_another_run_writing_the_same_folder_re_uses_nothing_of_this_one(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """The rule holds within one task instance: the results manifest of another run is not its own."""
    sim = start_simulator()
    out = tmp_path / "out"
    batch(out, items()).execute(attempt(1, 0))
    batch(out, items()).execute(attempt(1, 0, run_id="run-2"))
    assert creates(sim) == 8


def test_fresh_prediction_buys_every_item_once_per_run_or_clear(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sim = start_simulator()
    out = tmp_path / "out"
    batch(out, items()).execute(attempt(1, 0))
    first = results(out)

    said(capsys)
    batch(out, items(), fresh_prediction="true").execute(attempt(1, 1))  # cleared, with fresh set
    assert creates(sim) == 8
    fresh = results(out)
    assert all(fresh[key]["prediction_id"] != first[key]["prediction_id"] for key in fresh)
    assert all(row["fresh"] and row["max_tries"] == 1 for row in fresh.values())
    shown = said(capsys)
    instead = f"buying a new prediction instead of re-using {first['img0']['prediction_id']}"
    assert f"Item img0: input unchanged since try 1, but fresh_prediction is set: {instead}" in shown

    batch(out, items(), fresh_prediction="1").execute(attempt(2, 1))  # a retry of that same run
    assert creates(sim) == 8
    assert {key: row["prediction_id"] for key, row in results(out).items()} == {
        key: row["prediction_id"] for key, row in fresh.items()
    }

    batch(out, items(), fresh_prediction=True).execute(attempt(1, 2))  # cleared again
    assert creates(sim) == 12
    table_row(
        14,
        "clear with fresh_prediction=True (then a retry)",
        "unchanged",
        "4 (then 0)",
        "every item anew, once per clear",
    )


def test_fresh_prediction_survives_a_try_that_died_mid_batch(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """A fresh try that bought some items and failed: its retry re-uses those and buys only the rest
    (here: the one the API lost), never the fresh ones again."""
    sim = start_simulator()
    out = tmp_path / "out"
    batch(out, items()).execute(attempt(1, 0))
    sim.inject("create", "fail", error_code="PROVIDER_UNAVAILABLE", error_message="try later")
    with pytest.raises(Exception, match="1 of 4 items failed"):
        batch(out, items(), fresh_prediction=True, item_retries=0).execute(attempt(1, 1))
    assert creates(sim) == 8

    batch(out, items(), fresh_prediction=True, item_retries=0).execute(attempt(2, 1))

    assert creates(sim) == 9  # only the failed one
    assert all(row["status"] == "success" for row in results(out).values())


def test_an_output_file_deleted_is_stored_again_from_its_prediction_without_buying(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sim = start_simulator()
    out = tmp_path / "out"
    batch(out, items()).execute(attempt(1, 0))
    first = results(out)
    (out / "img1.png").unlink()

    said(capsys)
    batch(out, items()).execute(attempt(1, 1))

    assert creates(sim) == 4
    rows = results(out)
    assert rows["img1"]["prediction_id"] == first["img1"]["prediction_id"]
    assert_stored(sim, rows["img1"], out / "img1.png")
    log = said(capsys)
    assert f"its stored output {out / 'img1.png'} is gone: storing prediction" in log
    table_row(
        15, "clear", "unchanged, one output file deleted", "0", "stores the same prediction's output again"
    )


def test_a_journalled_item_changed_before_its_retry_sends_the_new_input(
    start_simulator: Callable[..., EachlabsSimulator], tmp_path: Path
):
    """A transient failure left the old input in the journal; the retry sends the item as it is now."""
    sim = start_simulator()
    out = tmp_path / "out"
    sim.inject("create", "fail", error_code="PROVIDER_UNAVAILABLE", error_message="try later")
    with pytest.raises(Exception, match="1 of 4 items failed"):
        batch(out, items(), item_retries=0).execute(attempt(1, 0))
    (failed,) = [key for key, row in results(out).items() if row["status"] == "failed"]
    assert (out / JOURNAL_FOLDER).exists()

    batch(out, items(**{failed: FIXED}), item_retries=0).execute(attempt(2, 0))

    assert creates(sim) == 5
    assert sent_prompts(sim)[-1] == FIXED
