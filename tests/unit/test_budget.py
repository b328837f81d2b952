"""``budget``: the arithmetic of ``max_cost`` and what it says, with no Airflow and no I/O."""

from __future__ import annotations

import pytest

from airflow_provider_eachlabs.budget import Budget, to_micro, usd, usd_amount
from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.record import TaskRecord


def test_a_budget_buys_exactly_up_to_max_cost_in_whole_micro_dollars():
    # 40 x 0.05 is 2.0000000000000004 in floats: the budget of $2.00 still holds all 40.
    assert Budget.of(2.00, 0.05).can_buy(40)
    assert not Budget.of(2.00, 0.05).can_buy(41)
    assert Budget.of(0.12, 0.05, spent=to_micro(0.05)).can_buy(1)
    assert not Budget.of(0.12, 0.05, spent=to_micro(0.10)).can_buy(1)
    assert Budget.of(0.10, 0.05, spent=to_micro(0.05)).can_buy(1)  # reaching max_cost is within it
    assert Budget.of(0, 0).can_buy(1000)
    assert not Budget.of(0, 0.01).can_buy(1)


def test_what_a_refusal_and_an_estimate_say():
    budget = Budget.of(0.12, 0.05, spent=to_micro(0.10))
    assert budget.refusal(["p1", "p2"]) == (
        "max_cost $0.12: spent $0.10 on 2 predictions (p1, p2), the next one costs $0.05"
    )
    assert (
        Budget.of(1, 0.05).refusal([])
        == "max_cost $1.00: spent $0.00 on 0 predictions, the next one costs $0.05"
    )
    many = Budget.of(1, 0.05, spent=to_micro(0.60)).refusal([f"p{i}" for i in range(12)], in_flight=3)
    assert "on 12 predictions (p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, and 2 more)" in many
    assert "(counting 3 in flight at the price)" in many
    assert Budget.of(5, 0.05).estimate(40) == "40 items \u00d7 $0.05 = $2.00, budget $5.00"
    assert Budget.of(5, 0.05, spent=to_micro(0.1)).estimate(2).endswith(", of which $0.10 is spent already")


@pytest.mark.parametrize(
    ("micro", "text"),
    [(0, "$0.00"), (50_000, "$0.05"), (2_000_000, "$2.00"), (3_500, "$0.0035"), (1, "$0.000001")],
)
def test_dollars_show_cents_and_smaller_digits_when_there_are_any(micro: int, text: str):
    assert usd(micro) == text


@pytest.mark.parametrize(
    ("value", "number"),
    [(None, None), ("", None), ("None", None), (5, 5.0), (0, 0.0), ("0.05", 0.05), (" 2 ", 2.0)],
)
def test_amounts_as_given_or_as_a_template_rendered_them(value: object, number: float | None):
    assert usd_amount("max_cost", value) == number


@pytest.mark.parametrize("value", [-1, "-0.5", "lots", float("nan"), float("inf"), True, [1]])
def test_an_amount_that_is_not_a_non_negative_number_is_refused_naming_field_value_and_rule(value: object):
    with pytest.raises(EachlabsInputError) as caught:
        usd_amount("max_cost", value)
    assert caught.value.final
    assert str(caught.value) == f"Invalid max_cost={value!r}: must be a non-negative number of USD"


def test_what_a_task_record_counts_as_spent_across_tries():
    record = TaskRecord()
    record.spend("a", 50_000)
    record.spend("a", 70_000)  # counted once
    record.spend("b", None)  # cost unknown: at the price
    record.finished_ids = ["a", "b", "c"]  # c: bought, its end never seen: at the price
    record.prediction_id = "d"
    assert record.spent == 50_000
    assert record.spent_so_far(40_000) == (50_000 + 3 * 40_000, ["a", "b", "c", "d"])


class Store(dict):
    def set(self, key: str, value: object, *, retention: object = None) -> None:
        self[key] = value


def test_the_record_keeps_what_was_spent_and_reads_an_older_record_without_it():
    store = Store()
    record = TaskRecord()
    record.spend("abc", 50_000)
    record.spend("def", None)
    record.save({"task_state_store": store})  # type: ignore[arg-type]
    assert store["eachlabs_prediction"]["spent_on"] == [["abc", 50_000], ["def", None]]
    assert TaskRecord.load({"task_state_store": store}).spent_on == [["abc", 50_000], ["def", None]]  # type: ignore[arg-type]
    store["eachlabs_prediction"] = {"version": 1, "finished_ids": ["abc"]}  # an older release's record
    assert TaskRecord.load({"task_state_store": store}).spent_on == []  # type: ignore[arg-type]
    store["eachlabs_prediction"]["spent_on"] = [["abc", -1], ["def", "x"], "junk", ["ghi", 5]]
    assert TaskRecord.load({"task_state_store": store}).spent_on == [["ghi", 5]]  # type: ignore[arg-type]
