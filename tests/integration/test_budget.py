"""``max_cost`` against the simulator over real HTTP: a fill whose retries would pass the budget stops at
it, a batch whose estimate exceeds it buys nothing, a batch that fits buys everything, and a batch
whose predictions cost more than the price it was given stops creating at the budget. The simulator's
counters say what was bought.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs.exceptions import EachlabsBudgetError, EachlabsInputError, PredictionFailed
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_batch import (
    batch,
    context,
    defer,
    keyed,
    rebuilt,
    results,
    run_trigger,
    start_simulator,  # noqa: F401 (fixture)
)
from tests.integration.test_batch import creates as batch_creates
from tests.integration.test_operators import RecordingStateStore, RecordingTI, fill
from tests.integration.test_reruns import TaskInstance, creates

TIMES = "\u00d7"


def test_a_fill_whose_retries_would_pass_max_cost_is_refused_before_the_create_that_would(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
) -> None:
    # Tries 1 and 2 each buy a prediction that fails transiently (the API bills it, $0.05); try 3
    # would take the task to $0.15, past $0.12: it sends nothing and fails, final.
    eachlabs_conn.inject("create", "fail", times=2, error_code="PROVIDER_UNAVAILABLE", error_message="busy")
    task = TaskInstance()
    budget = {"output_path": f"{tmp_path}/out/", "max_cost": 0.12, "cost_per_prediction": 0.05}
    before = creates(eachlabs_conn)
    bought = []
    for how in ("first", "retry"):
        with pytest.raises(PredictionFailed) as caught:
            task.run(how, **budget)
        assert not caught.value.final  # transient: Airflow retries the task
        bought.append(caught.value.prediction_id)
    assert creates(eachlabs_conn) - before == 2
    assert [eachlabs_conn.predictions[i].cost for i in bought] == [0.05, 0.05]

    with pytest.raises(AirflowFailException) as refused:  # final: no retry can help
        task.run("retry", **budget)
    assert str(refused.value) == (
        f"max_cost $0.12: spent $0.10 on 2 predictions ({bought[0]}, {bought[1]}), the next one costs "
        "$0.05: it was not sent (raise max_cost to buy it)"
    )
    assert creates(eachlabs_conn) - before == 2
    record = task.store["eachlabs_prediction"]
    assert record["spent_on"] == [[bought[0], 50_000], [bought[1], 50_000]]


def test_a_fill_within_max_cost_runs_as_without_it_and_counts_what_it_spent(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
) -> None:
    task = TaskInstance()
    before = creates(eachlabs_conn)
    _, result = task.run("first", output_path=f"{tmp_path}/out/", max_cost="0.05", cost_per_prediction="0.05")
    assert result["status"] == "success" and creates(eachlabs_conn) - before == 1
    assert task.store["eachlabs_prediction"]["spent_on"] == [[result["prediction_id"], 50_000]]
    # A clear of the unchanged input re-uses it: nothing to buy, so max_cost, spent already, is no bar.
    _, again = task.run("clear", output_path=f"{tmp_path}/out/", max_cost=0.05, cost_per_prediction=0.05)
    assert again["prediction_id"] == result["prediction_id"] and creates(eachlabs_conn) - before == 1
    # A changed input is a new purchase, which the spent budget refuses.
    with pytest.raises(AirflowFailException, match=r"max_cost \$0.05: spent \$0.05 on 1 prediction \("):
        task.run("clear", output_path=f"{tmp_path}/out/", max_cost=0.05, cost_per_prediction=0.05, seed=7)
    assert creates(eachlabs_conn) - before == 1


def test_max_cost_without_a_price_fails_at_once_naming_the_field(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
) -> None:
    before = eachlabs_conn.counters.requests
    with pytest.raises(
        AirflowFailException, match=r"^Invalid cost_per_prediction=None: must be set when max_cost"
    ):
        TaskInstance().run("first", output_path=f"{tmp_path}/out/", max_cost=1)
    assert eachlabs_conn.counters.requests == before  # nothing uploaded, nothing bought
    with pytest.raises(
        EachlabsInputError, match=r"^Invalid max_cost=-1: must be a non-negative number of USD$"
    ):
        batch(tmp_path, keyed(1), max_cost=-1, cost_per_prediction=0.05)


def test_a_batch_whose_estimate_exceeds_max_cost_buys_nothing_and_says_why(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    sim = start_simulator()
    ctx = context()
    with pytest.raises(AirflowFailException) as caught:
        batch(tmp_path / "out", keyed(40), max_cost=1.00, cost_per_prediction=0.05).execute(ctx)
    assert str(caught.value) == (
        f"The batch's estimate exceeds max_cost, so nothing was bought: 40 items {TIMES} $0.05 = $2.00, "
        "budget $1.00 (every valid item: 40). Raise max_cost, or buy fewer items."
    )
    assert batch_creates(sim) == 0 and sim.counters.uploads == 0  # refused before the first upload
    assert ctx["ti"].xcoms["eachlabs_outcome"]["error_class"] == "EachlabsBudgetError"


def test_a_batch_that_fits_logs_its_estimate_and_buys_every_item(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = start_simulator()
    summary = batch(tmp_path / "out", keyed(4), max_cost=0.20, cost_per_prediction=0.05).execute(context())
    assert (summary["succeeded"], summary["spend"], batch_creates(sim)) == (4, 0.2, 4)
    assert (
        f"Budget: 4 items {TIMES} $0.05 = $0.20, budget $0.20 (every valid item: 4)"
        in capsys.readouterr().out
    )


def test_a_batch_whose_predictions_cost_more_than_its_price_stops_creating_at_max_cost(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The user's price ($0.05) is below the API's ($0.10): the estimate fits, the spend does not. One at
    # a time: two predictions cost $0.20, and a third would pass max_cost.
    sim = start_simulator(cost_per_prediction=0.10)
    out = tmp_path / "out"
    arguments: dict[str, Any] = {"max_cost": 0.20, "cost_per_prediction": 0.05, "max_in_flight": 1}
    with pytest.raises(AirflowFailException) as caught:
        batch(out, keyed(4), **arguments).execute(context())
    assert batch_creates(sim) == 2
    stored = sorted(key for key, row in results(out).items() if row["status"] == "success")
    assert stored == ["img0", "img1"]
    ids = ", ".join(row["prediction_id"] for row in results(out).values())
    assert str(caught.value) == (
        f"max_cost $0.20: spent $0.20 on 2 predictions ({ids}), the next one costs $0.05; the batch "
        f"stopped creating (2 items not started) and finished what was in flight: see {out}/"
        "eachlabs-results.jsonl. A clear with a higher max_cost buys the rest, re-using what was bought."
    )
    assert "Budget: 4 items" in capsys.readouterr().out

    # The next try counts what the earlier one spent: its estimate is the two items left.
    with pytest.raises(AirflowFailException) as again:
        batch(out, keyed(4), **arguments).execute(context())
    assert re.search(
        rf"nothing was bought: 2 items {TIMES} \$0.05 = \$0.10, budget \$0.20, of which \$0.20 is spent "
        r"already \(the items to buy: 2 of the 4 valid items re-use what earlier tries bought\)",
        str(again.value),
    )
    assert batch_creates(sim) == 2
    # A higher max_cost buys only what is left.
    summary = batch(out, keyed(4), **{**arguments, "max_cost": 0.40}).execute(context())
    assert (summary["succeeded"], batch_creates(sim)) == (4, 4)


def test_a_deferred_batch_stopped_by_max_cost_fails_on_the_worker_after_its_ledger_entry(
    start_simulator: Callable[..., EachlabsSimulator],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    sim = start_simulator(cost_per_prediction=0.10)
    operator = batch(
        tmp_path / "out", keyed(3), deferrable=True, max_cost=0.15, cost_per_prediction=0.05, max_in_flight=1
    )
    ctx = context()
    trigger = defer(operator, ctx)
    assert (trigger.config["max_cost"], trigger.config["price"]) == (0.15, 0.05)
    events = run_trigger(rebuilt(trigger))
    assert events[0]["status"] == "done" and "budget_stop" in events[0]["summary"]
    ctx["task_state_store"] = store = RecordingStateStore()
    with pytest.raises(AirflowFailException, match=r"^max_cost \$0.15: spent \$0.20 on 2 predictions"):
        operator.execute_complete(ctx, events[0])
    assert batch_creates(sim) == 2  # $0.05 + $0.05 at the price fit; the API billed $0.10 each
    assert store["eachlabs_ledger/batch/0"]["bought"] == 2  # what it bought is in the ledger
    assert ctx["ti"].xcoms["eachlabs_outcome"]["ok"] is False


def test_without_task_state_store_the_budget_covers_the_try_and_the_log_says_so(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = fill(output_path=f"{tmp_path}/", max_cost=0.05, cost_per_prediction=0.05).execute(
        {"ti": RecordingTI()}
    )
    assert result["status"] == "success"
    assert "max_cost covers this try only: without task_state_store" in capsys.readouterr().out


def test_task_eachlabs_takes_max_cost_and_refuses_past_it(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
) -> None:
    from tests.integration.test_task_decorator import scene_fill, task_of

    budget = {"output_path": f"{tmp_path}/", "max_cost": "{{ params.budget }}", "cost_per_prediction": 0.05}
    operator = task_of(scene_fill, "an empty meadow", 3, **budget)
    assert {"max_cost", "cost_per_prediction"} <= set(operator.template_fields)
    operator.max_cost = "0.04"  # as the template rendered it: less than one prediction
    before = creates(eachlabs_conn)
    with pytest.raises(
        AirflowFailException, match=r"^max_cost \$0.04: spent \$0.00 on 0 predictions, the next"
    ):
        operator.execute(context_with_store())
    assert creates(eachlabs_conn) == before


def context_with_store() -> dict[str, Any]:
    return {"ti": RecordingTI(), "task_state_store": RecordingStateStore()}


def test_the_budget_error_is_final() -> None:
    assert EachlabsBudgetError("x").final
