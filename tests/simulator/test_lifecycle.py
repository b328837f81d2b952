"""Status sequence, cancel, reject word, caps, balance and the executions listing."""

from __future__ import annotations

import time

import requests

from airflow_provider_eachlabs.testing import EachlabsSimulator

from .conftest import KEY, PREDICT_SECONDS, Api


def test_status_sequence_starting_processing_success(sim: EachlabsSimulator) -> None:
    with EachlabsSimulator(predict_seconds=1.0) as slow:
        client = Api(slow)
        pid = client.create_id({"prompt": "hi"}, model="echo-test")
        seen: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = client.get(f"/v1/prediction/{pid}").json()["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == "success":
                break
            time.sleep(0.02)
        assert seen == ["starting", "processing", "success"]
        final = client.get(f"/v1/prediction/{pid}").json()
        assert final["output"] == {"prompt": "hi"}
        assert final["metrics"] == {"predict_time": 1.0, "cost": 0.05}
        assert final["urls"]["get"] == f"{slow.base_url}/v1/prediction/{pid}"
        assert final["urls"]["cancel"] == f"{slow.base_url}/v1/prediction/{pid}/cancel"
        record = slow.predictions[pid]
        assert (record.id, record.model, record.input, record.status, record.api_key) == (
            pid,
            "echo-test",
            {"prompt": "hi"},
            "success",
            KEY,
        )
        assert abs(record.created_at - time.time()) < 10


def test_running_prediction_has_no_output_yet(api: Api) -> None:
    pid = api.create_id({"prompt": "x"}, model="echo-test")
    body = api.get(f"/v1/prediction/{pid}").json()
    assert body["status"] in ("starting", "processing")
    assert "output" not in body
    assert body["logs"] is None


def test_cancel_running_then_terminal_is_409(api: Api) -> None:
    pid = api.create_id({"prompt": "x"}, model="echo-test")
    resp = api.post(f"/v1/prediction/{pid}/cancel")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "cancelled",
        "message": "Prediction canceled successfully",
        "predictionID": pid,
    }
    assert api.get(f"/v1/prediction/{pid}").json()["status"] == "cancelled"
    time.sleep(PREDICT_SECONDS + 0.05)
    assert api.get(f"/v1/prediction/{pid}").json()["status"] == "cancelled"
    again = api.post(f"/v1/prediction/{pid}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["error"]
    done = api.create_id({"prompt": "x"}, model="echo-test")
    api.wait(done)
    assert api.post(f"/v1/prediction/{done}/cancel").status_code == 409
    assert api.post("/v1/prediction/nope/cancel").status_code == 404
    assert api.sim.counters.cancels == 4


def test_reject_word_fails_with_provider_rejected(api: Api) -> None:
    pid = api.create_id({"prompt": "something FORBIDDEN here"}, model="echo-test")
    body = api.wait(pid)
    assert body["status"] == "failed"
    assert body["output"]["error_code"] == "PROVIDER_REJECTED"
    assert body["output"]["error_message"]
    assert "PROVIDER_REJECTED" in body["logs"]


def test_in_flight_cap_answers_429_with_retry_after() -> None:
    with EachlabsSimulator(predict_seconds=3, max_in_flight=10) as sim:
        client = Api(sim)
        ids = [client.create_id({"prompt": str(n)}, model="echo-test") for n in range(10)]
        resp = client.create({"prompt": "11th"}, model="echo-test")
        assert resp.status_code == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 3
        assert resp.json()["error"]
        assert len(sim.predictions) == 10
        assert sim.counters.creates == {KEY: 10}
        assert sim.counters.create_requests == 11
        # The cap is per key and frees up when a prediction ends (here: is cancelled).
        client.post(f"/v1/prediction/{ids[0]}/cancel")
        assert client.create({"prompt": "again"}, model="echo-test").status_code == 200


def test_in_flight_cap_is_per_key() -> None:
    with EachlabsSimulator(api_key=["a", "b"], predict_seconds=3, max_in_flight=1) as sim:
        assert Api(sim, "a").create({}, model="echo-test").status_code == 200
        assert Api(sim, "a").create({}, model="echo-test").status_code == 429
        assert Api(sim, "b").create({}, model="echo-test").status_code == 200


def test_rate_cap_answers_429_with_retry_after() -> None:
    with EachlabsSimulator(predict_seconds=0.05, creates_per_minute=3) as sim:
        client = Api(sim)
        for _ in range(3):
            assert client.create({}, model="echo-test").status_code == 200
        resp = client.create({}, model="echo-test")
        assert resp.status_code == 429
        assert 55 <= int(resp.headers["Retry-After"]) <= 60
        assert len(sim.predictions) == 3


def test_balance_exhausted_is_402() -> None:
    with EachlabsSimulator(predict_seconds=0.05, balance=0.1, cost_per_prediction=0.05) as sim:
        client = Api(sim)
        assert client.create({}, model="echo-test").status_code == 200
        assert client.create({}, model="echo-test").status_code == 200
        resp = client.create({}, model="echo-test")
        assert resp.status_code == 402
        assert resp.json()["error"] == "Insufficient balance"
        assert len(sim.predictions) == 2
        assert sim.balance is not None and abs(sim.balance) < 1e-9


def test_counters_and_reset(api: Api) -> None:
    pid = api.create_id({}, model="echo-test")
    api.get(f"/v1/prediction/{pid}")
    api.get("/v1/model?slug=echo-test")
    c = api.sim.counters
    assert (c.create_requests, c.gets, c.requests) == (1, 1, 3)
    api.sim.reset_counters()
    assert api.sim.counters.requests == 0 and api.sim.counters.creates == {}


def test_executions_lists_this_keys_predictions(sim: EachlabsSimulator, api: Api) -> None:
    ids = [api.create_id({"prompt": str(n)}, model="echo-test") for n in range(3)]
    Api(sim, "other-key").create_id({}, model="echo-test")
    bad = api.create_id({"prompt": "forbidden"}, model="echo-test")
    for pid in [*ids, bad]:
        api.wait(pid)
    listing = api.get("/v1/executions", params={"limit": 2}).json()
    assert listing["total_count"] == 4 and listing["limit"] == 2 and len(listing["executions"]) == 2
    assert listing["executions"][0]["id"] == bad
    errors = api.get("/v1/executions", params={"status": "error"}).json()
    assert [e["id"] for e in errors["executions"]] == [bad]
    assert api.get("/v1/executions", params={"model": "flux-fill-pro"}).json()["total_count"] == 0
    assert api.get("/v1/executions", params={"status": "bogus"}).status_code == 400
    assert api.get("/v1/executions", params={"offset": 3}).json()["executions"][0]["id"] == ids[0]


def test_plain_requests_without_session(sim: EachlabsSimulator) -> None:
    resp = requests.post(
        sim.base_url + "/v1/prediction",
        json={"model": "echo-test", "input": {"a": 1}},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert resp.status_code == 200 and resp.headers["X-Request-Id"]
