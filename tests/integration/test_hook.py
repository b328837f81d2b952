"""EachlabsHook over real HTTP against the simulator: every verb, retries, and what is never retried."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.exceptions import EachlabsConfigError
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json


def png_bytes(size: tuple[int, int] = (32, 24), colour: tuple[int, int, int] = (10, 120, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_create_get_cancel_round_trip(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "hello"})
    assert eachlabs_conn.predictions[prediction_id].input == {"text": "hello"}
    assert hook.get_prediction(prediction_id).status in ("starting", "processing")
    hook.cancel_prediction(prediction_id)
    assert hook.get_prediction(prediction_id).status == "cancelled"


def test_wait_for_prediction_returns_the_finished_prediction(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "hello"})
    prediction = hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
    assert prediction.succeeded
    assert prediction.metrics["cost"] == 0.05


def test_wait_times_out_with_the_prediction_id_and_time_waited(eachlabs_conn: EachlabsSimulator):
    eachlabs_conn.inject("create", "never_finish")
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "hello"})
    with pytest.raises(api.PredictionTimeout, match=rf"{prediction_id} did not finish within 0\.[3-9]"):
        hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=0.3)


def test_get_model_returns_the_request_schema_and_test_connection_passes(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    schema = hook.get_model("flux-fill-pro")["request_schema"]
    assert schema["properties"]["steps"]["maximum"] == 50
    assert hook.test_connection() == (True, f"Connected to Eachlabs at {eachlabs_conn.base_url}")


def test_wrong_key_fails_at_once_without_retries(
    simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(simulator.base_url, api_key="wrong"))
    ok, message = EachlabsHook().test_connection()
    assert not ok and message.startswith("HTTP 401")
    assert "wrong" not in message
    assert simulator.counters.executions == 1


def test_connection_without_key_names_the_password_field(
    simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(simulator.base_url, api_key=""))
    with pytest.raises(EachlabsConfigError, match="has no API key: put it in the password field"):
        EachlabsHook().get_model("flux-fill-pro")


def test_plain_http_to_a_remote_host_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json("http://api.eachlabs.ai"))
    with pytest.raises(EachlabsConfigError, match="must use https://"):
        EachlabsHook().get_model("flux-fill-pro")


def test_settings_and_hook_repr_never_show_the_key(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    assert "sim-key" not in repr(hook.settings) and "sim-key" not in repr(hook)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_get_is_retried_through_server_errors(eachlabs_conn: EachlabsSimulator, status: int):
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "x"})
    eachlabs_conn.inject("get", "status", times=2, status=status)
    assert hook.get_prediction(prediction_id).id == prediction_id
    assert eachlabs_conn.counters.gets == 3


def test_get_gives_up_after_max_retries_with_the_last_error(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "x"})
    eachlabs_conn.inject("get", "status", times=10, status=503)
    with pytest.raises(api.EachlabsServerError, match="HTTP 503"):
        hook.get_prediction(prediction_id)
    assert eachlabs_conn.counters.gets == 4


def test_get_is_retried_through_dropped_connections_timeouts_and_malformed_json(
    eachlabs_conn: EachlabsSimulator,
):
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "x"})
    eachlabs_conn.inject("get", "drop")
    eachlabs_conn.inject("get", "malformed")
    assert hook.get_prediction(prediction_id).id == prediction_id
    assert eachlabs_conn.counters.gets == 3


def test_create_is_retried_on_429_honouring_retry_after_and_creates_once(eachlabs_conn: EachlabsSimulator):
    eachlabs_conn.inject("create", "status", times=2, status=429, retry_after=0)
    prediction_id = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    assert eachlabs_conn.counters.create_requests == 3
    assert eachlabs_conn.counters.creates == {"sim-key-7f3a9c1e5b": 1}
    assert list(eachlabs_conn.predictions) == [prediction_id]


@pytest.mark.parametrize(
    ("fault", "params"), [("status", {"status": 500}), ("drop", {"after_processing": True})]
)
def test_create_that_may_have_reached_the_server_is_not_resent(
    eachlabs_conn: EachlabsSimulator, fault: str, params: dict[str, object]
):
    eachlabs_conn.inject("create", fault, **params)
    with pytest.raises(api.EachlabsAPIError):
        EachlabsHook().create_prediction("echo-test", {"text": "x"})
    assert eachlabs_conn.counters.create_requests == 1


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, api.EachlabsInvalidInputError),
        (402, api.EachlabsPaymentRequiredError),
        (404, api.EachlabsNotFoundError),
        (409, api.EachlabsConflictError),
        (422, api.EachlabsInvalidInputError),
    ],
)
def test_final_client_errors_are_never_retried(
    eachlabs_conn: EachlabsSimulator, status: int, error_class: type[api.EachlabsAPIError]
):
    eachlabs_conn.inject("model", "status", times=5, status=status)
    with pytest.raises(error_class) as caught:
        EachlabsHook().get_model("flux-fill-pro")
    assert caught.value.request_id
    assert eachlabs_conn.counters.model_gets == 1


def test_simulator_validation_error_reaches_the_user_with_its_details(eachlabs_conn: EachlabsSimulator):
    with pytest.raises(api.EachlabsInvalidInputError, match="steps") as caught:
        EachlabsHook().create_prediction(
            "flux-fill-pro", {"prompt": "p", "image": "https://x/a.png", "steps": 99}
        )
    assert caught.value.status_code == 400 and caught.value.request_id


def test_spent_balance_is_a_payment_error(simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch):
    with EachlabsSimulator(api_key="k", predict_seconds=0.2, balance=0.05) as poor:
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(poor.base_url, api_key="k"))
        hook = EachlabsHook()
        hook.create_prediction("echo-test", {"text": "1"})
        with pytest.raises(api.EachlabsPaymentRequiredError, match="HTTP 402"):
            hook.create_prediction("echo-test", {"text": "2"})


def test_upload_round_trip_serves_the_same_bytes(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    content = png_bytes()
    public_url = hook.upload_bytes(content, "image/png")
    download = hook.download(public_url)
    assert download.content == content and download.content_type == "image/png"
    assert (eachlabs_conn.counters.presigns, eachlabs_conn.counters.uploads) == (1, 1)


def test_download_over_the_size_cap_fails_and_keeps_nothing(eachlabs_conn: EachlabsSimulator):
    hook = EachlabsHook()
    public_url = hook.upload_bytes(png_bytes((400, 400)), "image/png")
    with pytest.raises(api.EachlabsDownloadError, match="larger than the 100 byte limit"):
        hook.download(public_url, max_bytes=100)
    assert eachlabs_conn.counters.file_downloads == 1


def test_async_gets_share_one_bounded_pool_per_event_loop(eachlabs_conn: EachlabsSimulator):
    import psutil

    from airflow_provider_eachlabs.transport import aio

    prediction_id = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    port = int(eachlabs_conn.base_url.rsplit(":", 1)[1])

    def sockets_to_the_api() -> int:
        return sum(1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port)

    async def many() -> int:
        async with aio.shared_session():  # as a waiting trigger holds it
            hooks = [EachlabsHook() for _ in range(200)]
            predictions = await asyncio.gather(*(h.aget_prediction(prediction_id) for h in hooks))
            assert {p.id for p in predictions} == {prediction_id}
            return sockets_to_the_api()

    kept_alive_by_the_sync_create = sockets_to_the_api()
    assert 1 <= asyncio.run(many()) - kept_alive_by_the_sync_create <= aio.POOL_SIZE
    assert eachlabs_conn.counters.gets == 200
    assert len(aio._sessions) == 0  # the last user closed it


def test_async_get_retries_like_the_sync_one(eachlabs_conn: EachlabsSimulator):
    prediction_id = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    eachlabs_conn.inject("get", "status", status=429)
    eachlabs_conn.inject("get", "drop")
    assert asyncio.run(EachlabsHook().aget_prediction(prediction_id)).id == prediction_id
    assert eachlabs_conn.counters.gets == 3
