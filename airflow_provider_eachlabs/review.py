"""A person's review of a fill before it is published: the rules, with no Airflow and no I/O.

Why through Airflow's own human-in-the-loop: a review then appears in Required Actions with every
other decision a pipeline waits for, is answered there, in the Eachlabs tab or through Airflow's HITL
REST API alike, and waits in Airflow 3.3's ``awaiting_input`` state without holding a worker slot.
Three answers: **Approve** stores the reviewed output and the task succeeds; **Reject** fails the task,
final, with the reviewer's note; **Re-fill** buys a new prediction with the reviewer's changes (a new
prompt, seed or guidance) and asks again, at most ``max_review_rounds`` predictions in all. A review
not answered within ``review_timeout`` takes ``on_review_timeout`` (reject unless told otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_eachlabs.exceptions import EachlabsError, EachlabsInputError

APPROVE, REJECT, REFILL = "Approve", "Reject", "Re-fill"
OPTIONS = [APPROVE, REJECT, REFILL]
TIMEOUT_CHOICES = {"reject": REJECT, "approve": APPROVE}
# What a reviewer may change for a re-fill, and the JSON Schema type of each (null: keep it).
CHANGEABLE: dict[str, list[str]] = {
    "prompt": ["null", "string"],
    "seed": ["null", "integer"],
    "guidance": ["null", "number"],
}
NOTE = "note"
MAX_NOTE_CHARS = 2000


class ReviewRejected(EachlabsError):
    """The reviewer rejected the fill: final, the task fails with the note."""

    final = True


class ReviewRoundsExhausted(EachlabsError):
    """A re-fill was asked for past ``max_review_rounds``: final."""

    final = True


@dataclass(frozen=True)
class Verdict:
    """A reviewer's answer: the option, the note, who, and the changes a re-fill asks for."""

    choice: str
    note: str = ""
    by: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False


def check_settings(max_review_rounds: Any, on_review_timeout: Any) -> None:
    """At parse time: a clear error naming the field, the value and the rule."""
    if not isinstance(max_review_rounds, int) or isinstance(max_review_rounds, bool) or max_review_rounds < 1:
        raise EachlabsInputError("max_review_rounds", max_review_rounds, "must be a whole number, 1 or more")
    if on_review_timeout not in TIMEOUT_CHOICES:
        raise EachlabsInputError(
            "on_review_timeout", on_review_timeout, f"must be one of {sorted(TIMEOUT_CHOICES)}"
        )


def params(current: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The form a reviewer fills in, as Airflow's serialized Params: a note, and each changeable field
    with the value the reviewed prediction was bought with (left as it is: not changed)."""
    form: dict[str, dict[str, Any]] = {
        NOTE: _param("", ["null", "string"], "Why, for a rejection (it becomes the task's error); optional."),
    }
    for name, kinds in CHANGEABLE.items():
        if name in current:
            form[name] = _param(current.get(name), kinds, f"For a re-fill: the new {name}.")
    return form


def _param(value: Any, kinds: list[str], description: str) -> dict[str, Any]:
    return {"value": value, "description": description, "schema": {"type": kinds}, "source": "task"}


def verdict(event: Mapping[str, Any] | None, current: Mapping[str, Any]) -> Verdict:
    """The reviewer's answer in the event Airflow resumes the task with. A re-fill's changes are the
    fields whose value differs from ``current`` (what the reviewed prediction was bought with)."""
    if not isinstance(event, Mapping):
        raise EachlabsError(f"the review's answer cannot be read: {event!r}")
    if "error" in event:
        raise ReviewRejected(f"the review ended without an answer: {event.get('error')}")
    chosen = event.get("chosen_options")
    if not isinstance(chosen, list) or len(chosen) != 1 or chosen[0] not in OPTIONS:
        raise EachlabsError(f"the review's answer {chosen!r} is not one of {OPTIONS}")
    given = event.get("params_input") if isinstance(event.get("params_input"), Mapping) else {}
    assert isinstance(given, Mapping)
    note = str(given.get(NOTE) or "")[:MAX_NOTE_CHARS]
    by = event.get("responded_by_user")
    who = str(by.get("name") or by.get("id") or "") if isinstance(by, Mapping) else ""
    changes = {
        name: given[name]
        for name in CHANGEABLE
        if name in given
        and given[name] is not None
        and given[name] != ""
        and given[name] != current.get(name)
    }
    return Verdict(chosen[0], note, who, changes, bool(event.get("timedout")))


def rejection(verdict: Verdict, prediction_id: str, round_number: int) -> str:
    who = f"by {verdict.by}" if verdict.by else ("by the review's timeout" if verdict.timed_out else "")
    said = f": {verdict.note}" if verdict.note else " (no note)"
    return (
        f"The fill was rejected {who} in review round {round_number}{said}. Prediction {prediction_id} "
        "was not stored."
    ).replace("  ", " ")


def exhausted(max_rounds: int, prediction_id: str) -> str:
    return (
        f"A re-fill was asked for after {max_rounds} reviewed predictions (max_review_rounds={max_rounds}): "
        f"nothing more was bought and prediction {prediction_id} was not stored. Raise max_review_rounds, "
        "or clear the task to start the review again."
    )


def body(task_id: str, max_rounds: int, tab: str) -> str:
    """The request's text in Required Actions (Markdown). Airflow keeps a task's first request text
    for its later rounds, so it names no prediction: the tab shows the one under review."""
    return (
        f"A fill of task `{task_id}` waits for your review (at most {max_rounds} predictions, re-fills "
        f"included). See the image before, the mask and the fill under review in the "
        f"[Eachlabs tab]({tab}).\n\n"
        f"- **{APPROVE}**: store the fill where the task stores its outputs, and succeed.\n"
        f"- **{REJECT}**: fail the task with your note.\n"
        f"- **{REFILL}**: buy a new fill with the prompt, seed or guidance you change below, then review it."
    )
