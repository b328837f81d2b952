"""``GET /v1/executions``'s creation window, as the spec has it: ``from`` and ``to`` are RFC 3339
date-times, both bounds inclusive; without ``from`` the window is the 90 days before ``to`` (or before
now); a value that is not RFC 3339, or a ``from`` after ``to``, is a 400 that says which and why."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_eachlabs.testing import EachlabsSimulator

from .conftest import Api

JAN = datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc)
FEB = datetime(2026, 2, 15, 12, 0, 0, tzinfo=timezone.utc)
MAR = datetime(2026, 3, 15, 12, 0, 0, tzinfo=timezone.utc)


def made_at(sim: EachlabsSimulator, api: Api, when: datetime) -> str:
    """A real prediction, its creation time then moved to ``when``."""
    prediction_id = api.create_id({"prompt": when.isoformat()}, model="echo-test")
    sim.predictions[prediction_id].created_at = when.timestamp()
    return prediction_id


def listed(api: Api, **params: str) -> list[str]:
    resp = api.get("/v1/executions", params={"limit": "100", **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total_count"] == len(body["executions"])
    return [row["id"] for row in body["executions"]]


@pytest.fixture
def history(sim: EachlabsSimulator, api: Api) -> dict[str, str]:
    return {
        "jan": made_at(sim, api, JAN),
        "feb": made_at(sim, api, FEB),
        "mar": made_at(sim, api, MAR),
        "now": made_at(sim, api, datetime.now(timezone.utc)),
        "old": made_at(sim, api, datetime.now(timezone.utc) - timedelta(days=91)),
    }


def test_from_and_to_bound_the_creation_time_both_inclusive(api: Api, history: dict[str, str]):
    assert listed(api, **{"from": "2026-02-01T00:00:00Z", "to": "2026-02-28T23:59:59Z"}) == [history["feb"]]
    assert listed(api, **{"from": "2026-02-15T12:00:00Z", "to": "2026-03-15T12:00:00Z"}) == [
        history["mar"],
        history["feb"],
    ]
    assert listed(api, **{"from": "2026-02-15T12:00:00.000001Z", "to": "2026-03-15T11:59:59.999Z"}) == []


def test_any_offset_and_fractions_are_the_same_moment(api: Api, history: dict[str, str]):
    window = {"from": "2026-02-15T14:00:00+02:00", "to": "2026-02-15t07:00:00.000000000-05:00"}
    assert listed(api, **window) == [history["feb"]]
    assert listed(api, **{"from": "2026-02-15T12:00:00.5z", "to": "2026-02-16T00:00:00Z"}) == []


def test_without_from_the_window_is_the_90_days_before_to_or_now(api: Api, history: dict[str, str]):
    cutoff = datetime.now(timezone.utc) - timedelta(days=90)
    recent = [history[name] for name, when in (("mar", MAR), ("feb", FEB), ("jan", JAN)) if when >= cutoff]
    assert listed(api) == [history["now"], *recent]  # "old" is 91 days old
    # 90 days before 2026-04-20 is 2026-01-20: January is out, February in.
    assert listed(api, to="2026-04-20T00:00:00Z") == [history["mar"], history["feb"]]
    # An explicit from reaches as far back as asked.
    far = listed(api, **{"from": (datetime.now(timezone.utc) - timedelta(days=400)).isoformat()})
    assert far[0] == history["now"] and history["old"] in far and history["jan"] in far


def test_only_from_reaches_up_to_now(api: Api, history: dict[str, str]):
    assert listed(api, **{"from": "2026-03-01T00:00:00Z"})[-1] == history["mar"]
    assert history["now"] in listed(api, **{"from": "2026-03-01T00:00:00Z"})


@pytest.mark.parametrize(
    "name, value",
    [
        ("from", "yesterday"),
        ("from", "2026-01-01"),  # a date, not a date-time
        ("to", "2026-01-01T00:00:00"),  # no offset
        ("to", "2026-13-01T00:00:00Z"),  # no such month
        ("from", "2026-01-01 00:00:00Z"),  # RFC 3339 writes the T
        ("to", "2026-01-01T00:00:00 00:00"),  # a '+' that arrived as a space
        ("from", ""),
    ],
)
def test_a_value_that_is_not_rfc_3339_is_a_400_naming_the_parameter(api: Api, name: str, value: str):
    resp = api.get("/v1/executions", params={name: value})
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"].startswith(f"invalid {name!r}: ") and "RFC 3339" in body["error"]
    assert body["details"] == {"field": name}


def test_from_after_to_is_a_400(api: Api):
    resp = api.get("/v1/executions", params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid window: 'from' is after 'to'"


def test_the_window_pages_like_the_rest_of_the_listing(sim: EachlabsSimulator, api: Api):
    inside = [made_at(sim, api, FEB + timedelta(seconds=n)) for n in range(5)]
    made_at(sim, api, JAN)
    window = {"from": "2026-02-01T00:00:00Z", "to": "2026-02-28T00:00:00Z"}
    first = api.get("/v1/executions", params={"limit": "3", **window}).json()
    second = api.get("/v1/executions", params={"limit": "3", "offset": "3", **window}).json()
    assert (first["total_count"], second["total_count"]) == (5, 5)
    assert [row["id"] for row in first["executions"] + second["executions"]] == inside[::-1]
