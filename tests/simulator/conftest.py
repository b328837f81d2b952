"""Fixtures for the simulator's own tests: a running simulator and a spec-checking HTTP client.

Every JSON answer that goes through `api` is validated against tests/data/openapi.json, so the
"responses match the official schemas" promise is checked by every test, not by a few.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from PIL import Image, ImageDraw

from airflow_provider_eachlabs.testing import EachlabsSimulator

SPEC_PATH = Path(__file__).resolve().parent.parent / "data" / "openapi.json"
KEY = "sim-key"
PREDICT_SECONDS = 0.2

_SPEC_ROUTES = [
    (re.compile(r"^/v1/prediction/?$"), "/v1/prediction"),
    (re.compile(r"^/v1/prediction/[^/]+/cancel$"), "/v1/prediction/{id}/cancel"),
    (re.compile(r"^/v1/prediction/[^/]+$"), "/v1/prediction/{id}"),
    (re.compile(r"^/v1/upload/presign$"), "/v1/upload/presign"),
    (re.compile(r"^/v1/model$"), "/v1/model"),
    (re.compile(r"^/v1/executions$"), "/v1/executions"),
]


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        parts = node["$ref"].lstrip("#/").split("/")
        target: Any = spec()
        for part in parts:
            target = target[part]
        node = target
    return node


def response_schema(spec_path: str | None, method: str, status: int) -> dict[str, Any]:
    """The spec's JSON schema for this answer; Error where the spec lists no such status."""
    error_schema = {"$ref": "#/components/schemas/Error"}
    if spec_path is None:
        return error_schema
    responses = spec()["paths"][spec_path][method.lower()]["responses"]
    if str(status) not in responses:
        return error_schema
    response = _deref(responses[str(status)])
    return response["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def validate_against_spec(path: str, method: str, status: int, body: Any) -> None:
    spec_path = next((name for rx, name in _SPEC_ROUTES if rx.match(path)), None)
    schema = {**response_schema(spec_path, method, status), "components": spec()["components"]}
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(body)


def spec_path_for(path: str) -> str | None:
    return next((name for rx, name in _SPEC_ROUTES if rx.match(path)), None)


class Api:
    """requests.Session bound to the simulator; checks X-Request-Id and the spec on every JSON answer."""

    def __init__(self, sim: EachlabsSimulator, key: str | None = KEY) -> None:
        self.sim = sim
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-API-Key"] = key

    def request(self, method: str, path: str, *, check_spec: bool = True, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 10)
        url = path if path.startswith("http") else self.sim.base_url + path
        resp = self.session.request(method, url, **kw)
        assert resp.headers.get("X-Request-Id"), f"no X-Request-Id on {method} {path}"
        if check_spec and resp.headers.get("content-type", "").startswith("application/json"):
            local = url[len(self.sim.base_url) :].split("?", 1)[0]
            validate_against_spec(local, method, resp.status_code, resp.json())
        return resp

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def create(self, inp: dict[str, Any], model: str = "flux-fill-pro", **kw: Any) -> requests.Response:
        return self.post("/v1/prediction", json={"model": model, "input": inp}, **kw)

    def create_id(self, inp: dict[str, Any], model: str = "flux-fill-pro") -> str:
        resp = self.create(inp, model)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["predictionID"])

    def wait(self, prediction_id: str, timeout: float = 10.0, **kw: Any) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = self.get(f"/v1/prediction/{prediction_id}", **kw).json()
            if body["status"] in ("success", "failed", "cancelled", "error", "canceled"):
                return body
            assert time.monotonic() < deadline, f"prediction still {body['status']}"
            time.sleep(0.03)


@pytest.fixture
def sim() -> Iterator[EachlabsSimulator]:
    with EachlabsSimulator(api_key=[KEY, "other-key"], predict_seconds=PREDICT_SECONDS) as s:
        yield s


@pytest.fixture
def api(sim: EachlabsSimulator) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.session.close()


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def gradient(size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A smooth scene, so a good fill is predictable: the colour near the hole."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([(x * 255 // (w - 1), y * 255 // (h - 1), 90) for y in range(h) for x in range(w)])
    return img


def square_mask(
    size: tuple[int, int] = (128, 96), box: tuple[int, int, int, int] = (40, 30, 80, 60)
) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@pytest.fixture
def scene_urls(sim: EachlabsSimulator) -> dict[str, str]:
    """Image and mask already stored in the simulator, as if uploaded."""
    return {
        "image": sim.add_file(png_bytes(gradient()), "image/png"),
        "mask": sim.add_file(png_bytes(square_mask()), "image/png"),
    }
