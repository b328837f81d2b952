"""The one re-run rule: within a task instance, what the provider buys is keyed by the input it sends.

A retry or a clear of a task instance meets what an earlier try bought. Whether that prediction
serves again depends only on the input this try would send (the rendered model input, every
uploaded file standing as the hash of its bytes), never on which operator asks:

1. a changed input is always bought anew, never answered by an earlier prediction;
2. an unchanged input is never bought twice: a running or succeeded prediction of it is re-used, a
   transient failure or a cancel is bought again, and a final rejection (content policy, invalid
   input) fails again at once without buying, naming the prediction and what to change;
3. ``fresh_prediction`` buys a new one anyway, once per run or clear: the retries of a try that
   bought fresh re-use what it bought (Airflow raises ``max_tries`` on every clear, never on a
   retry, which tells the two apart).

No I/O and no Airflow here: the single-fill operators and every item of a batch ask ``decide`` and
log its ``reason`` as it is, so the log reads the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

FRESH_PARAMETER = "fresh_prediction"
# What the README and every log line call the parameter that buys a new prediction of the same input.
FRESH_HINT = f"set {FRESH_PARAMETER}=True to buy a new one"


def fresh_requested(value: Any) -> bool:
    """``fresh_prediction`` as rendered: a bool, or the text a template renders one as."""
    from airflow_provider_eachlabs.exceptions import EachlabsInputError

    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if isinstance(value, (str, int)) and text in ("true", "1", "false", "0", ""):
        return text in ("true", "1")
    raise EachlabsInputError(FRESH_PARAMETER, value, "must be True or False (or 'true', '1', 'false', '0')")


def input_digests(input: Mapping[str, Any], files: Mapping[str, str]) -> dict[str, str]:
    """Each top-level field's digest. ``files`` maps an uploaded file's URL to the sha256 of its
    bytes, so the same bytes uploaded again under another URL are the same input."""
    return {str(name): _digest(_by_content(value, files)) for name, value in input.items()}


def input_key(digests: Mapping[str, str]) -> str:
    """One digest for the whole input: equal exactly when every field is."""
    return _digest(sorted(digests.items()))


def changed_fields(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The fields whose value differs, was added or was removed, in name order."""
    return sorted(name for name in set(before) | set(now) if before.get(name) != now.get(name))


def rejection(error_code: Any, said: str) -> str | None:
    """The reason to give when a failed prediction was a final rejection (content policy, invalid
    input), which the same input would meet again; None for any other failure."""
    from airflow_provider_eachlabs.api import FINAL_CAUSES, failure_cause

    cause = failure_cause(error_code if isinstance(error_code, str) else None)
    return f"{cause.value}: {said}"[:300] if cause in FINAL_CAUSES else None


def fresh_this_run(bought_fresh: Any, bought_under: Any, max_tries: Any) -> bool:
    """Whether an earlier purchase was the fresh one of this run or clear: made with
    ``fresh_prediction`` under the ``max_tries`` Airflow gives the task now (a clear raises it)."""
    return bought_fresh is True and bought_under is not None and bought_under == max_tries


class Choice(Enum):
    BUY = "bought"
    REUSE = "re-used"
    REFUSE = "refused"


@dataclass(frozen=True)
class Earlier:
    """What an earlier try bought for this task instance, and how it stands now.

    ``status`` is the API's word on it now (``unknown`` when the API no longer knows it); ``rejected``
    holds the reason of a final rejection; ``key`` and ``digests`` are None for a prediction whose
    input an older release did not record."""

    prediction_id: str
    try_number: int | None
    key: str | None
    digests: Mapping[str, str] | None
    status: str
    rejected: str | None = None
    bought_fresh_this_run: bool = False


@dataclass(frozen=True)
class Decision:
    choice: Choice
    reason: str
    prediction_id: str | None = None


def decide(earlier: Earlier | None, key: str, digests: Mapping[str, str], *, fresh: bool) -> Decision:
    """Buy, re-use or refuse: the rule above, with the sentence the task log and the tab show."""
    if earlier is None:
        return Decision(Choice.BUY, "no earlier try bought a prediction: buying one")
    since = f"since try {earlier.try_number}" if earlier.try_number else "since an earlier try"
    if earlier.key is not None and earlier.key != key:
        changed = changed_fields(earlier.digests, digests) if earlier.digests is not None else []
        fields = ", ".join(changed) or "input"
        return Decision(Choice.BUY, f"input changed {since} ({fields}): buying a new prediction")
    if fresh and not earlier.bought_fresh_this_run:
        return Decision(
            Choice.BUY,
            f"input unchanged {since}, but {FRESH_PARAMETER} is set: buying a new prediction "
            f"instead of re-using {earlier.prediction_id}",
        )
    if earlier.rejected is not None:
        return Decision(
            Choice.REFUSE,
            f"input unchanged {since}, whose prediction {earlier.prediction_id} was rejected "
            f"({earlier.rejected}): not buying it again. Change the input (prompt, images or "
            f"parameters), or {FRESH_HINT}",
            earlier.prediction_id,
        )
    if earlier.status in ("failed", "error", "cancelled", "canceled", "unknown"):
        ended = "is unknown to the API" if earlier.status == "unknown" else f"ended {earlier.status!r}"
        return Decision(
            Choice.BUY,
            f"input unchanged {since}, whose prediction {earlier.prediction_id} {ended}: buying a new one",
        )
    return Decision(
        Choice.REUSE,
        f"input unchanged {since}: re-using prediction {earlier.prediction_id} "
        f"(status {earlier.status!r}); {FRESH_HINT}",
        earlier.prediction_id,
    )


def _by_content(value: Any, files: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        digest = files.get(value)
        return f"sha256:{digest}" if digest else value
    if isinstance(value, Mapping):
        return {str(k): _by_content(v, files) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_by_content(v, files) for v in value]
    return value


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
