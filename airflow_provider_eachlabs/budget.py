"""``max_cost``: a task's budget in USD, across every prediction of every try. The rules, no I/O.

Money is counted in whole micro-dollars (``ledger.micro_usd``): sums of floats drift, and a budget of
$2.00 must hold 40 predictions at $0.05, not 39. A create is sent only while what was spent plus the
price of what is being bought stays within ``max_cost``; ``Budget`` says whether it does and what to
tell the user when it does not. The price comes from ``cost_per_prediction``: the Eachlabs API
publishes no price per model (``GET /v1/model`` has none), only the cost of a prediction once it ran
(``metrics.cost``), which is what ``spent`` counts; a prediction whose cost is unknown counts as the
price. The single fill (``operators.prediction``, from its task record) and the batch
(``operators.batch`` before it starts, ``batch.runner`` before each create) both ask it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_eachlabs.exceptions import EachlabsInputError

MICRO = 1_000_000
SHOWN_IDS = 10
TIMES = "\u00d7"  # the multiplication sign
NO_PRICE = (
    "must be set when max_cost is: the Eachlabs API publishes no price per model (GET /v1/model has "
    "none), so the budget needs the price of one prediction in USD (flux-fill-pro: 0.05)"
)


def usd_amount(field: str, value: Any) -> float | None:
    """A rendered ``max_cost`` or ``cost_per_prediction``: None, or a finite non-negative number of
    USD (text a template rendered, ``"5"`` or ``"0.05"``, is read as the number it spells)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise EachlabsInputError(field, value, "must be a non-negative number of USD")
    return number


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


def usd(micro: int) -> str:
    """``$2.00``, ``$0.05``, ``$0.0035``: cents always, smaller digits when there are any."""
    text = f"{micro / MICRO:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@dataclass(frozen=True)
class Budget:
    """What a task may still buy: ``max_cost``, the ``price`` of one prediction and what is ``spent``
    (ended predictions at their cost, the rest at the price), all in micro-USD."""

    max_cost: int
    price: int
    spent: int = 0

    @classmethod
    def of(cls, max_cost: float, price: float, spent: int = 0) -> Budget:
        return cls(to_micro(max_cost), to_micro(price), spent)

    def can_buy(self, count: int = 1) -> bool:
        """Whether ``count`` more predictions at the price stay within ``max_cost``."""
        return self.spent + count * self.price <= self.max_cost

    def refusal(self, ids: Sequence[str], in_flight: int = 0) -> str:
        """Why the next create is not sent: ``max_cost $0.12: spent $0.10 on 2 predictions (a, b), the
        next one costs $0.05``."""
        shown = ", ".join(ids[:SHOWN_IDS]) + (
            f", and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
        )
        on = f"{len(ids)} prediction{'' if len(ids) == 1 else 's'}" + (f" ({shown})" if ids else "")
        flying = f" (counting {in_flight} in flight at the price)" if in_flight else ""
        return (
            f"max_cost {usd(self.max_cost)}: spent {usd(self.spent)} on {on}{flying}, the next one costs "
            f"{usd(self.price)}"
        )

    def estimate(self, count: int) -> str:
        """A batch's estimate before it buys: 40 items at $0.05, $2.00 of a $5.00 budget (as
        ``40 items \u00d7 $0.05 = $2.00, budget $5.00``)."""
        total = usd(count * self.price)
        line = f"{count} items {TIMES} {usd(self.price)} = {total}, budget {usd(self.max_cost)}"
        if self.spent:
            line += f", of which {usd(self.spent)} is spent already"
        return line


def budget_terms(max_cost: Any, cost_per_prediction: Any) -> tuple[float, float] | None:
    """``max_cost`` and the price it counts with, as rendered; None without a budget. Either one that
    is not a non-negative number, or a ``max_cost`` without a price, fails naming the field."""
    limit = usd_amount("max_cost", max_cost)
    price = usd_amount("cost_per_prediction", cost_per_prediction)
    if limit is None:
        return None
    if price is None:
        raise EachlabsInputError("cost_per_prediction", cost_per_prediction, NO_PRICE)
    return limit, price


def check_given(**amounts: Any) -> None:
    """``max_cost`` and ``cost_per_prediction`` as an operator is given them, unless a template
    renders them later (checked again then)."""
    for name, value in amounts.items():
        if not (isinstance(value, str) and "{{" in value):
            usd_amount(name, value)
