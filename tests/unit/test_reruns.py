"""The re-run rule on its own: digests that see files by content, and each decision's sentence."""

from __future__ import annotations

import pytest

from airflow_provider_eachlabs.reruns import Choice, Earlier, changed_fields, decide, input_digests, input_key

FILES = {"https://up/1.png": "aa", "https://up/2.png": "aa", "https://up/3.png": "bb"}


def test_an_uploaded_file_counts_by_its_bytes_not_its_url() -> None:
    one = input_digests({"image": "https://up/1.png", "prompt": "p"}, FILES)
    same_bytes = input_digests({"image": "https://up/2.png", "prompt": "p"}, FILES)
    other_bytes = input_digests({"image": "https://up/3.png", "prompt": "p"}, FILES)
    assert input_key(one) == input_key(same_bytes) != input_key(other_bytes)
    assert changed_fields(one, other_bytes) == ["image"]
    assert changed_fields(one, input_digests({"image": "https://up/1.png"}, FILES)) == ["prompt"]


def test_field_order_and_number_types_do_not_hide_a_change() -> None:
    assert input_key(input_digests({"a": 1, "b": 2}, {})) == input_key(input_digests({"b": 2, "a": 1}, {}))
    assert input_key(input_digests({"seed": 1}, {})) != input_key(input_digests({"seed": "1"}, {}))


def earlier(key: str, **kwargs: object) -> Earlier:
    fields = {
        "prediction_id": "p1",
        "try_number": 1,
        "key": key,
        "digests": {"prompt": "x"},
        "status": "success",
    }
    return Earlier(**{**fields, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "fresh", "choice", "reason"),
    [
        (None, False, Choice.BUY, "no earlier try bought a prediction: buying one"),
        (earlier("k2"), False, Choice.BUY, "input changed since try 1 (prompt): buying a new prediction"),
        (
            earlier("k1"),
            False,
            Choice.REUSE,
            "input unchanged since try 1: re-using prediction p1 (status 'success'); "
            "set fresh_prediction=True to buy a new one",
        ),
        (
            earlier("k1", status="failed"),
            False,
            Choice.BUY,
            "input unchanged since try 1, whose prediction p1 ended 'failed': buying a new one",
        ),
        (
            earlier("k1", status="failed", rejected="content-policy: NSFW"),
            False,
            Choice.REFUSE,
            "input unchanged since try 1, whose prediction p1 was rejected (content-policy: NSFW): "
            "not buying it again. Change the input (prompt, images or parameters), or set "
            "fresh_prediction=True to buy a new one",
        ),
        (
            earlier("k1"),
            True,
            Choice.BUY,
            "input unchanged since try 1, but fresh_prediction is set: buying a new prediction instead of "
            "re-using p1",
        ),
        (
            earlier("k1", bought_fresh_this_run=True),
            True,
            Choice.REUSE,
            "input unchanged since try 1: re-using prediction p1 (status 'success'); "
            "set fresh_prediction=True to buy a new one",
        ),
        (
            earlier(None, try_number=None, status="processing"),  # type: ignore[arg-type]
            False,
            Choice.REUSE,
            "input unchanged since an earlier try: re-using prediction p1 (status 'processing'); "
            "set fresh_prediction=True to buy a new one",
        ),
    ],
    ids=["first", "changed", "unchanged", "failed", "rejected", "fresh", "fresh-retry", "older-record"],
)
def test_each_decision_and_its_sentence(
    before: Earlier | None, fresh: bool, choice: Choice, reason: str
) -> None:
    decision = decide(before, "k1", {"prompt": "y"}, fresh=fresh)
    assert (decision.choice, decision.reason) == (choice, reason)
