"""flux-fill-pro input validation: every field of the model page, at its boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_eachlabs.testing import EachlabsSimulator

from .conftest import KEY, PREDICT_SECONDS, Api


@pytest.fixture(scope="module")
def sim() -> Iterator[EachlabsSimulator]:
    """One simulator for the many small cases here; caps are raised so they never interfere."""
    with EachlabsSimulator(
        api_key=KEY, predict_seconds=PREDICT_SECONDS, max_in_flight=10_000, creates_per_minute=100_000
    ) as s:
        yield s


def _base(scene_urls: dict[str, str]) -> dict[str, Any]:
    return {"prompt": "a red door", "image": scene_urls["image"], "mask": scene_urls["mask"]}


@pytest.mark.parametrize(
    "extra",
    [
        {"steps": 1},
        {"steps": 50},
        {"guidance": 2},
        {"guidance": 5},
        {"guidance": 3.5},
        {"safety_tolerance": 1},
        {"safety_tolerance": 6},
        {"output_format": "png"},
        {"output_format": "jpg"},
        {"seed": 0},
        {"seed": -5},
        {"prompt_upsampling": True},
        {"prompt_upsampling": False},
    ],
)
def test_valid_values_accepted(api: Api, scene_urls: dict[str, str], extra: dict[str, Any]) -> None:
    resp = api.create({**_base(scene_urls), **extra})
    assert resp.status_code == 200, resp.text


def test_mask_is_optional(api: Api, scene_urls: dict[str, str]) -> None:
    assert api.create({"prompt": "x", "image": scene_urls["image"]}).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", 51),
        ("steps", 2.5),
        ("steps", True),
        ("steps", "10"),
        ("guidance", 1.99),
        ("guidance", 5.01),
        ("guidance", True),
        ("guidance", "3"),
        ("safety_tolerance", 0),
        ("safety_tolerance", 7),
        ("safety_tolerance", False),
        ("seed", 1.5),
        ("seed", True),
        ("seed", "1"),
        ("prompt_upsampling", 1),
        ("prompt_upsampling", "true"),
        ("output_format", "webp"),
        ("output_format", "PNG"),
        ("prompt", ""),
        ("prompt", "   "),
        ("prompt", 5),
        ("image", 5),
        ("image", ""),
        ("mask", None),
        ("image", "http://example.com/a.png"),
        ("image", "data:image/png;base64,AAAA"),
        ("image", "https://localhost/a.png"),
        ("image", "https://127.0.0.1/a.png"),
        ("image", "https://127.5.0.1:8080/a.png"),
        ("image", "https://[::1]/a.png"),
        ("image", "https://10.0.0.1/a.png"),
        ("image", "https://192.168.1.2/a.png"),
        ("image", "https://169.254.169.254/latest"),
        ("mask", "http://example.com/m.png"),
        ("mask", "https://localhost:9999/m.png"),
        ("mask", "ftp://example.com/m.png"),
        ("unknown_key", 1),
        ("image_url", "https://example.com/a.png"),
    ],
)
def test_invalid_values_rejected_naming_the_field(
    api: Api, scene_urls: dict[str, str], field: str, value: Any
) -> None:
    resp = api.create({**_base(scene_urls), field: value})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["details"]["field"] == field
    assert field in body["error"]


@pytest.mark.parametrize("field", ["prompt", "image"])
def test_required_fields(api: Api, scene_urls: dict[str, str], field: str) -> None:
    inp = _base(scene_urls)
    del inp[field]
    resp = api.create(inp)
    assert resp.status_code == 400
    assert resp.json()["details"]["field"] == field


def test_rejected_create_creates_and_bills_nothing(api: Api, scene_urls: dict[str, str]) -> None:
    before = dict(api.sim.predictions)
    api.sim.reset_counters()
    api.create({**_base(scene_urls), "steps": 0})
    assert api.sim.predictions == before
    assert api.sim.counters.create_requests == 1
    assert api.sim.counters.creates == {}


def test_public_https_url_passes_validation_then_fails_to_fetch(api: Api) -> None:
    pid = api.create_id({"prompt": "x", "image": "https://example.com/a.png"})
    body = api.wait(pid)
    assert body["status"] == "failed"
    assert body["output"]["error_code"] == "INPUT_FETCH_FAILED"


def test_own_url_that_does_not_exist_fails_fetch(api: Api) -> None:
    pid = api.create_id({"prompt": "x", "image": api.sim.base_url + "/files/uploads/missing.png"})
    body = api.wait(pid)
    assert body["status"] == "failed"
    assert body["output"]["error_code"] == "INPUT_FETCH_FAILED"
