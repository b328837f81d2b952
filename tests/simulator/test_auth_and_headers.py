"""Auth, request ids and the model route."""

from __future__ import annotations

import jsonschema
import pytest

from airflow_provider_eachlabs.testing import EachlabsSimulator

from .conftest import KEY, Api


def test_x_api_key_and_bearer_both_accepted(sim: EachlabsSimulator) -> None:
    bearer = Api(sim, key=None)
    bearer.session.headers["Authorization"] = f"Bearer {KEY}"
    assert bearer.post("/v1/prediction", json={"model": "echo-test", "input": {}}).status_code == 200
    assert Api(sim).post("/v1/prediction", json={"model": "echo-test", "input": {}}).status_code == 200
    assert sim.counters.creates[KEY] == 2


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_missing_or_wrong_key_is_401_with_body(sim: EachlabsSimulator, headers: dict[str, str]) -> None:
    client = Api(sim, key=None)
    for method, path in [
        ("POST", "/v1/prediction"),
        ("GET", "/v1/prediction/x"),
        ("POST", "/v1/prediction/x/cancel"),
        ("POST", "/v1/upload/presign"),
        ("GET", "/v1/executions"),
    ]:
        resp = client.request(method, path, json={"model": "echo-test", "input": {}}, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == {}


def test_request_id_unique_on_every_response(api: Api) -> None:
    ids = {api.get("/v1/model?slug=flux-fill-pro").headers["X-Request-Id"] for _ in range(5)}
    ids.add(api.get("/v1/prediction/nope").headers["X-Request-Id"])
    ids.add(api.get("/files/nope.png").headers["X-Request-Id"])
    assert len(ids) == 7


def test_unknown_prediction_and_other_keys_prediction_are_404(sim: EachlabsSimulator, api: Api) -> None:
    resp = api.get("/v1/prediction/does-not-exist")
    assert resp.status_code == 404
    assert resp.json() == {"error": "Prediction not found"}
    pid = api.create_id({"prompt": "hi"}, model="echo-test")
    other = Api(sim, key="other-key")
    assert other.get(f"/v1/prediction/{pid}").status_code == 404
    assert other.post(f"/v1/prediction/{pid}/cancel").status_code == 404


def test_model_detail_schema_matches_model_page(api: Api) -> None:
    resp = api.get("/v1/model", params={"slug": "flux-fill-pro"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["slug"] == "flux-fill-pro" and body["output_type"] == "image"
    schema = body["request_schema"]
    assert schema["required"] == ["prompt", "image"]
    props = schema["properties"]
    assert (props["steps"]["minimum"], props["steps"]["maximum"], props["steps"]["type"]) == (
        1,
        50,
        "integer",
    )
    assert (props["guidance"]["minimum"], props["guidance"]["maximum"], props["guidance"]["type"]) == (
        2,
        5,
        "number",
    )
    assert (props["safety_tolerance"]["minimum"], props["safety_tolerance"]["maximum"]) == (1, 6)
    assert props["output_format"]["enum"] == ["jpg", "png"]
    assert props["prompt_upsampling"]["type"] == "boolean"
    assert props["seed"]["type"] == "integer"
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {"prompt": "p", "image": "https://example.com/a.png", "steps": 50, "guidance": 2}
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "steps": True}, schema)


def test_model_unknown_slug_and_missing_slug(api: Api) -> None:
    assert api.get("/v1/model", params={"slug": "nope"}).status_code == 404
    assert api.get("/v1/model").status_code == 400
    assert api.get("/v1/model", params={"slug": "echo-test"}).status_code == 200


def test_unknown_model_create_is_404(api: Api) -> None:
    resp = api.create({"prompt": "x"}, model="no-such-model")
    assert resp.status_code == 404
    assert "no-such-model" in resp.json()["error"]


@pytest.mark.parametrize(
    "body",
    [{"input": {}}, {"model": "echo-test"}, {"model": "echo-test", "input": []}, {"model": 3, "input": {}}],
)
def test_malformed_create_body_is_400(api: Api, body: dict[str, object]) -> None:
    assert api.post("/v1/prediction", json=body).status_code == 400


def test_create_body_not_json_is_400(api: Api) -> None:
    resp = api.post("/v1/prediction", data=b"{nope", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400


def test_trailing_slash_create_accepted(api: Api) -> None:
    resp = api.post("/v1/prediction/", json={"model": "echo-test", "input": {}})
    assert resp.status_code == 200
