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

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_eachlabs.exceptions import EachlabsError, EachlabsInputError

APPROVE, REJECT, REFILL = "Approve", "Reject", "Re-fill"
# How this provider's review requests begin, in Required Actions and on the fills page.
FILL_SUBJECT, BATCH_SUBJECT = "Review the fill of ", "Review the batch "
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


def _who_and_why(verdict: Verdict | BatchVerdict) -> tuple[str, str]:
    """Who rejected (the reviewer, or the review's timeout) and the note, as a rejection says them."""
    who = f"by {verdict.by}" if verdict.by else ("by the review's timeout" if verdict.timed_out else "")
    return who, f": {verdict.note}" if verdict.note else " (no note)"


def rejection(verdict: Verdict, prediction_id: str, round_number: int) -> str:
    who, said = _who_and_why(verdict)
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


# --- a batch's review: every staged output at once, items named in the answer ------------------------

REJECT_KEYS, REFILL_PROMPTS = "reject", "refill"
REVIEW_FOLDER = ".eachlabs-review"
MAX_NAMED_ITEMS = 10_000


class ReviewAnswerUnreadable(EachlabsError):
    """A batch review's answer names items the batch has not staged, or a re-fill without a prompt:
    the batch asks again (the same round), buying and storing nothing."""


@dataclass(frozen=True)
class BatchVerdict:
    """A reviewer's answer to a batch: the option, the note, who, the items rejected one by one
    (Approve) and the items to fill again with a new prompt (Re-fill)."""

    choice: str
    note: str = ""
    by: str = ""
    reject: tuple[str, ...] = ()
    refill: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False


def staging_root(output_path: str, journal_name: str) -> str:
    """Where a reviewed batch stages its outputs until approval: inside ``output_path``, apart per task
    instance (``journal_name``: its journal folder's name, a hash of the task instance)."""
    return f"{output_path.rstrip('/')}/{REVIEW_FOLDER}/{journal_name}"


def batch_params() -> dict[str, dict[str, Any]]:
    """The batch review's form as Airflow's serialized Params: a note, the keys to reject, and the
    prompts to fill again with, by key."""
    return {
        NOTE: _param("", ["null", "string"], "Why, for a rejection (it becomes the task's error); optional."),
        REJECT_KEYS: _param(
            [],
            ["null", "array"],
            "For Approve: the keys of the items to reject (not stored); the rest are stored.",
        ),
        REFILL_PROMPTS: _param(
            {},
            ["null", "object"],
            "For Re-fill: item key -> its new prompt; only these items are bought again.",
        ),
    }


def batch_verdict(event: Mapping[str, Any] | None, pending: Collection[str]) -> BatchVerdict:
    """The reviewer's answer to a batch review. ``pending``: the keys of the items staged for review.
    Raises ``ReviewAnswerUnreadable`` when the answer names an item not under review, or a Re-fill
    names no item or gives an empty prompt."""
    choice, given, note, by, timed_out = _answer(event)
    reject = _keys(given.get(REJECT_KEYS)) if choice == APPROVE else ()
    refill = _prompts(given.get(REFILL_PROMPTS)) if choice == REFILL else {}
    unknown = [key for key in [*reject, *refill] if key not in pending]
    if unknown:
        raise ReviewAnswerUnreadable(
            f"the answer names {len(unknown)} item(s) that are not under review: {_listed(unknown)} "
            f"(the items under review: {_listed(sorted(pending))})"
        )
    if choice == REFILL and not refill:
        raise ReviewAnswerUnreadable(
            f"a {REFILL} must name at least one item with its new prompt in {REFILL_PROMPTS!r}, "
            'e.g. {"item-1": "a meadow, no crate"}'
        )
    return BatchVerdict(choice, note, by, reject, refill, timed_out)


def _answer(event: Mapping[str, Any] | None) -> tuple[str, Mapping[str, Any], str, str, bool]:
    if not isinstance(event, Mapping):
        raise EachlabsError(f"the review's answer cannot be read: {event!r}")
    if "error" in event:
        raise ReviewRejected(f"the review ended without an answer: {event.get('error')}")
    chosen = event.get("chosen_options")
    if not isinstance(chosen, list) or len(chosen) != 1 or chosen[0] not in OPTIONS:
        raise EachlabsError(f"the review's answer {chosen!r} is not one of {OPTIONS}")
    raw = event.get("params_input")
    given: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    note = str(given.get(NOTE) or "")[:MAX_NOTE_CHARS]
    by = event.get("responded_by_user")
    who = str(by.get("name") or by.get("id") or "") if isinstance(by, Mapping) else ""
    return chosen[0], given, note, who, bool(event.get("timedout"))


def _keys(value: Any) -> tuple[str, ...]:
    """Item keys as a list, or as text (one per line or comma-separated, as a form may send them)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part for part in value.replace("\n", ",").split(",")]
    if not isinstance(value, list):
        raise ReviewAnswerUnreadable(f"{REJECT_KEYS!r} must be a list of item keys, not {_short(value)}")
    keys = [str(key).strip() for key in value if isinstance(key, (str, int)) and str(key).strip()]
    if len(keys) > MAX_NAMED_ITEMS:
        raise ReviewAnswerUnreadable(f"{REJECT_KEYS!r} names more than {MAX_NAMED_ITEMS} items")
    return tuple(dict.fromkeys(keys))


def _prompts(value: Any) -> dict[str, str]:
    """Item key -> new prompt, as an object (or its JSON text); an item with an empty prompt is refused."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise ReviewAnswerUnreadable(
                f"{REFILL_PROMPTS!r} is not a JSON object: {_short(value)}"
            ) from None
    if not isinstance(value, Mapping) or len(value) > MAX_NAMED_ITEMS:
        raise ReviewAnswerUnreadable(
            f"{REFILL_PROMPTS!r} must be an object of item key -> prompt, not {_short(value)}"
        )
    prompts: dict[str, str] = {}
    for key, prompt in value.items():
        if not isinstance(prompt, str) or not prompt.strip():
            raise ReviewAnswerUnreadable(
                f"the re-fill of item {str(key)[:80]!r} gives no prompt: {_short(prompt)}"
            )
        prompts[str(key)] = prompt.strip()
    return prompts


def _listed(keys: Collection[str], shown: int = 10) -> str:
    keys = list(keys)
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(repr(key[:80]) for key in keys[:shown]) + more


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "..."


def batch_rejection(verdict: BatchVerdict, round_number: int, staged: int) -> str:
    who, said = _who_and_why(verdict)
    return (
        f"The batch was rejected {who} in review round {round_number}{said}. None of its {staged} staged "
        "outputs was stored."
    ).replace("  ", " ")


def item_rejection(verdict: BatchVerdict, round_number: int) -> str:
    """A rejected item's error in the results manifest."""
    who = f" by {verdict.by}" if verdict.by else ""
    said = f": {verdict.note}" if verdict.note else ""
    return f"rejected{who} in review round {round_number}{said}; not stored"


def batch_exhausted(max_rounds: int) -> str:
    return (
        f"A re-fill was asked for after {max_rounds} review rounds (max_review_rounds={max_rounds}): nothing "
        "more was bought and nothing was stored. Raise max_review_rounds, or clear the task to review the "
        "staged outputs again."
    )


def batch_body(task_id: str, max_rounds: int, tab: str) -> str:
    """The batch request's text (Markdown); Airflow keeps the first round's for the later ones."""
    return (
        f"The outputs of batch task `{task_id}` are staged and wait for your review (at most {max_rounds} "
        f"review rounds). See them, tick the ones to reject and give new prompts in the "
        f"[Eachlabs tab]({tab}).\n\n"
        f"- **{APPROVE}**: store every staged output where the task stores its outputs, except the items "
        f"listed in `{REJECT_KEYS}`, and succeed.\n"
        f"- **{REJECT}**: store nothing and fail the task with your note.\n"
        f"- **{REFILL}**: buy the items named in `{REFILL_PROMPTS}` again with their new prompts "
        '(`{"key": "new prompt"}`), then review again.'
    )
