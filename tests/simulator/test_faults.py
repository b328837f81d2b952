"""Every fault kind, seen through real clients (requests and httpx)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import requests

from airflow_provider_eachlabs.testing import EachlabsSimulator

from .conftest import KEY, Api

ECHO = {"model": "echo-test", "input": {"prompt": "x"}}


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_status_fault_then_normal_service(api: Api, status: int) -> None:
    api.sim.inject("create", "status", times=2, status=status)
    for _ in range(2):
        resp = api.post("/v1/prediction", json=ECHO)
        assert resp.status_code == status
        assert resp.json()["error"]
        assert "Retry-After" not in resp.headers
    assert api.sim.predictions == {}
    assert api.post("/v1/prediction", json=ECHO).status_code == 200
    assert api.sim.counters.create_requests == 3


def test_status_fault_with_retry_after(api: Api) -> None:
    api.sim.inject("get", "status", status=429, retry_after=7)
    resp = api.get("/v1/prediction/anything")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "7"
    assert api.get("/v1/prediction/anything").status_code == 404
    assert api.sim.counters.gets == 2


def test_faults_target_only_their_route(api: Api) -> None:
    api.sim.inject("presign", "status", status=500)
    assert api.get("/v1/model?slug=flux-fill-pro").status_code == 200
    assert api.post("/v1/upload/presign", json={"content_type": "image/png"}).status_code == 500
    assert api.post("/v1/upload/presign", json={"content_type": "image/png"}).status_code == 200


def test_drop_gives_connection_error_to_requests_and_httpx(sim: EachlabsSimulator) -> None:
    headers = {"X-API-Key": KEY}
    sim.inject("create", "drop", times=2)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(sim.base_url + "/v1/prediction", json=ECHO, headers=headers, timeout=5)
    with pytest.raises(httpx.TransportError) as info:
        httpx.post(sim.base_url + "/v1/prediction", json=ECHO, headers=headers, timeout=5)
    assert not isinstance(info.value, httpx.TimeoutException)
    assert sim.predictions == {}
    assert sim.counters.create_requests == 2
    resp = requests.post(sim.base_url + "/v1/prediction", json=ECHO, headers=headers, timeout=5)
    assert resp.status_code == 200


def test_drop_on_a_keep_alive_session(sim: EachlabsSimulator) -> None:
    client = Api(sim)
    assert client.get("/v1/model?slug=echo-test").status_code == 200
    sim.inject("model", "drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.get("/v1/model?slug=echo-test")
    assert client.get("/v1/model?slug=echo-test").status_code == 200


def test_drop_after_processing_creates_the_prediction(sim: EachlabsSimulator) -> None:
    sim.inject("create", "drop", after_processing=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(sim.base_url + "/v1/prediction", json=ECHO, headers={"X-API-Key": KEY}, timeout=5)
    assert len(sim.predictions) == 1
    assert sim.counters.creates == {KEY: 1}


async def test_drop_with_async_httpx(sim: EachlabsSimulator) -> None:
    sim.inject("get", "drop")
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"X-API-Key": KEY}) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/v1/prediction/x")
        assert (await client.get("/v1/prediction/x")).status_code == 404


def test_delay_exceeds_client_read_timeout(sim: EachlabsSimulator) -> None:
    sim.inject("get", "delay", seconds=0.5)
    url = sim.base_url + "/v1/prediction/x"
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, headers={"X-API-Key": KEY}, timeout=(2, 0.2))
    sim.inject("get", "delay", seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, headers={"X-API-Key": KEY}, timeout=httpx.Timeout(2, read=0.2))
    t0 = time.monotonic()
    sim.inject("get", "delay", seconds=0.3)
    resp = requests.get(url, headers={"X-API-Key": KEY}, timeout=5)
    assert resp.status_code == 404 and time.monotonic() - t0 >= 0.3


def test_malformed_is_200_with_invalid_json(api: Api) -> None:
    api.sim.inject("get", "malformed")
    resp = api.get("/v1/prediction/x", check_spec=False)
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.text)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        resp.json()


def test_file_route_faults(api: Api) -> None:
    url = api.sim.add_file(b"abc", "image/png")
    api.sim.inject("file", "status", status=503, retry_after=1)
    assert api.get(url).status_code == 503
    assert api.get(url).content == b"abc"


def test_upload_route_fault(api: Api) -> None:
    p = api.post("/v1/upload/presign", json={"content_type": "image/png"}).json()
    api.sim.inject("upload", "status", status=500)
    headers = {**p["required_headers"], "Content-Type": "image/png"}
    assert api.put(p["presigned_url"], data=b"x", headers=headers).status_code == 500
    assert api.put(p["presigned_url"], data=b"x", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("params", "running", "final"),
    [
        ({"final": "error"}, None, "error"),
        ({"final": "canceled"}, None, "canceled"),
        ({"final": "success"}, None, "success"),
        ({"running": "created"}, "created", "success"),
        ({"running": "mystery", "final": "error"}, "mystery", "error"),
    ],
)
def test_status_variants(api: Api, params: dict[str, Any], running: str | None, final: str) -> None:
    api.sim.inject("create", "status_variant", **params)
    pid = api.create_id({"prompt": "x"}, model="echo-test")
    first = api.get(f"/v1/prediction/{pid}", check_spec=running is None).json()
    if running is not None:
        assert first["status"] == running
    body = api.wait(pid, check_spec=running is None and final == "success")
    assert body["status"] == final
    if final == "error":
        assert body["output"]["error_code"]
        assert body["output"]["error_message"]
        assert body["logs"]
    # Only the next prediction is scripted.
    assert api.wait(api.create_id({"prompt": "x"}, model="echo-test"))["status"] == "success"


def test_never_finish_until_cancelled(api: Api) -> None:
    api.sim.inject("create", "never_finish")
    pid = api.create_id({"prompt": "x"}, model="echo-test")
    time.sleep(0.3)
    assert api.get(f"/v1/prediction/{pid}").json()["status"] == "processing"
    assert api.post(f"/v1/prediction/{pid}/cancel").status_code == 200
    assert api.get(f"/v1/prediction/{pid}").json()["status"] == "cancelled"


def test_fail_fault(api: Api, scene_urls: dict[str, str]) -> None:
    api.sim.inject("create", "fail", times=2, error_code="NSFW", error_message="nope")
    body = api.wait(api.create_id({"prompt": "x", **scene_urls}))
    assert body["status"] == "failed"
    assert body["output"] == {"error_code": "NSFW", "error_message": "nope"}
    assert api.wait(api.create_id({"prompt": "x"}, model="echo-test"))["status"] == "failed"
    assert api.wait(api.create_id({"prompt": "x"}, model="echo-test"))["status"] == "success"


def test_clear_faults(api: Api) -> None:
    api.sim.inject("create", "status", status=500, times=5)
    api.sim.inject("create", "never_finish")
    api.sim.clear_faults()
    pid = api.create_id({}, model="echo-test")
    assert api.wait(pid)["status"] == "success"


@pytest.mark.parametrize(
    ("route", "fault", "params"),
    [
        ("nope", "status", {"status": 500}),
        ("get", "explode", {}),
        ("get", "status", {}),
        ("get", "delay", {}),
        ("get", "never_finish", {}),
        ("create", "status_variant", {"final": "weird"}),
        ("get", "drop", {"bogus": 1}),
    ],
)
def test_bad_fault_scripts_raise(
    sim: EachlabsSimulator, route: str, fault: str, params: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        sim.inject(route, fault, **params)
