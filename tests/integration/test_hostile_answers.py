"""A hostile answer changes nothing: what a compromised or impersonated API host can no longer do.

Each test scripts ``tests/hostile.py``'s loopback server to answer as an attacker would, points the
``eachlabs_default`` connection at it (plain http is allowed to loopback, as for a local proxy), and
shows the provider refusing: nothing written outside ``output_path``, no request reaching a second
server, memory growth under a small bound, and an ``EachlabsError`` (final where a retry cannot help)
for every failure.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from PIL import Image

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.api import HttpRequest
from airflow_provider_eachlabs.exceptions import (
    EachlabsConnectionError,
    EachlabsDownloadError,
    EachlabsError,
    EachlabsOutputError,
    EachlabsResponseError,
    EachlabsUnsafeAnswerError,
)
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator
from airflow_provider_eachlabs.preview import write_preview
from airflow_provider_eachlabs.settings import EachlabsSettings
from airflow_provider_eachlabs.transport import aio, sync
from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger
from tests.conftest import connection_json
from tests.hostile import (
    HostileServer,
    dripped,
    gzip_bomb,
    hostile_server,
    json_answer,
    raw_answer,
    redirect,
    send,
)
from tests.integration.test_operators import context

MiB = 1024 * 1024


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    with hostile_server() as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(server.base_url, max_retries=1, timeout=2)
        )
        yield server


@pytest.fixture
def elsewhere() -> Iterator[HostileServer]:
    """A second server on another port: the place a hostile answer tries to send things to."""
    with hostile_server() as server:
        yield server


def png(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def webp(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 30, 200)).save(buffer, format="WEBP")
    return buffer.getvalue()


def url_fill(tmp_path: Path, **kwargs: Any) -> FluxFillOperator:
    """A fill whose inputs are public URLs, so the hostile host sees only the create and what follows."""
    return FluxFillOperator(
        task_id="fill",
        prompt="an empty meadow",
        image="https://cdn.example.com/scene.png",
        mask="https://cdn.example.com/mask.png",
        output_path=f"{tmp_path}/out/",
        poll_interval=0.05,
        deferrable=False,
        **kwargs,
    )


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def peak_allocation(action: Callable[[], Any]) -> int:
    """The most memory Python held at once while ``action`` ran, above what it held before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        with pytest.raises(EachlabsError):
            action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


# --- 1. a file write anywhere ------------------------------------------------------------------------


def test_an_id_that_is_a_path_writes_nothing_and_fails_at_once(hostile: HostileServer, tmp_path: Path):
    evil = f"../../../..{tmp_path}/x/evil"
    hostile.on("POST", "/v1/prediction", json_answer({"status": "success", "predictionID": evil}))
    with pytest.raises(AirflowFailException, match="refusing the prediction id"):
        url_fill(tmp_path).execute(context())
    assert files_under(tmp_path) == []
    assert [r.path for r in hostile.received] == ["/v1/prediction"]


def test_an_output_that_only_starts_like_an_image_is_not_stored(hostile: HostileServer, tmp_path: Path):
    """The finding: a ``.py`` URL whose body starts like a WebP header, under an echoed id that is a path."""
    code = b"import os; open('/tmp/pwned', 'w')\n"
    polyglot = b"RIFF" + struct.pack("<I", 4 + len(code)) + b"WEBPVP8 " + code
    hostile.on("POST", "/v1/prediction", json_answer({"predictionID": "abc123"}))
    hostile.on(
        "GET",
        "/v1/prediction/abc123",
        json_answer(
            {"id": "../../x/evil", "status": "success", "output": f"{hostile.base_url}/files/evil.py"}
        ),
    )
    hostile.on("GET", "/files/evil.py", raw_answer(200, polyglot, {"Content-Type": "image/webp"}))
    with pytest.raises(
        AirflowFailException,
        match=rf"^the output {hostile.base_url}/files/evil\.py of prediction abc123 is not a whole JPEG, "
        "PNG or WebP image; nothing was stored$",
    ):
        url_fill(tmp_path).execute(context())
    assert files_under(tmp_path) == []


def test_a_real_image_behind_a_py_url_is_named_by_its_bytes_inside_output_path(
    hostile: HostileServer, tmp_path: Path
):
    hostile.on("POST", "/v1/prediction", json_answer({"predictionID": "abc123"}))
    hostile.on(
        "GET",
        "/v1/prediction/abc123",
        json_answer(
            {"id": "../../x/evil", "status": "success", "output": f"{hostile.base_url}/files/evil.py"}
        ),
    )
    hostile.on("GET", "/files/evil.py", raw_answer(200, webp(), {"Content-Type": "image/webp"}))
    operator = url_fill(tmp_path)
    operator.output_format = "jpg"
    with pytest.raises(AirflowFailException, match="is a webp image, not the jpg asked for"):
        operator.execute(context())
    generic = FluxFillOperator.__mro__[1](  # the generic operator: no format was asked for
        task_id="any", model="flux-fill-pro", input={}, output_path=f"{tmp_path}/out/", deferrable=False
    )
    generic.prediction_id = "abc123"
    result = generic.finish(context(), generic.hook.get_prediction("abc123"))
    assert result["stored_path"] == f"{tmp_path}/out/abc123.webp"
    assert files_under(tmp_path) == ["out/abc123.webp"]


# --- 2. the key follows a redirect -------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_no_api_call_follows_a_redirect_so_the_key_stays_home(
    hostile: HostileServer, elsewhere: HostileServer, status: int
):
    hostile.on("GET", "/v1/prediction/abc", redirect(status, f"{elsewhere.base_url}/steal"))
    hostile.on("POST", "/v1/prediction", redirect(status, f"{elsewhere.base_url}/steal"))
    with pytest.raises(
        EachlabsUnsafeAnswerError, match=r"refusing a redirect to http://127\.0\.0\.1:"
    ) as caught:
        EachlabsHook().get_prediction("abc")
    assert caught.value.final
    with pytest.raises(EachlabsUnsafeAnswerError, match="follow no redirects"):
        EachlabsHook().create_prediction("m", {"prompt": "p"}, webhook_secret="whsec-1")
    with pytest.raises(EachlabsUnsafeAnswerError, match="follow no redirects"):
        asyncio.run(EachlabsHook().aget_prediction("abc"))
    assert elsewhere.received == []
    assert len(hostile.received) == 3  # each sent once: an unsafe answer is not retried


def test_a_trigger_meeting_a_redirect_yields_one_final_error_event(
    hostile: HostileServer, elsewhere: HostileServer
):
    hostile.on("GET", "/v1/prediction/abc", redirect(302, f"{elsewhere.base_url}/steal"))
    now = time.time()
    trigger = PredictionTrigger("abc", "eachlabs_default", now + 10, now - 60, poll_interval=0.05)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert (event["status"], event["final"]) == ("error", True)
    assert "refusing a redirect" in event["message"]
    assert elsewhere.received == []


def test_downloads_never_carry_the_key_not_even_from_the_api_host(hostile: HostileServer):
    hostile.on("GET", "/files/out.png", raw_answer(200, png(), {"Content-Type": "image/png"}))
    EachlabsHook().download(f"{hostile.base_url}/files/out.png")
    (received,) = hostile.received
    sent = {name.lower() for name in received.headers}
    assert "x-api-key" not in sent and "authorization" not in sent


# --- 3. memory exhaustion ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 500])
def test_a_gzip_bomb_is_refused_while_it_unpacks_on_both_transports(hostile: HostileServer, status: int):
    hostile.on("GET", "/v1/prediction/abc", gzip_bomb(100 * MiB, status=status))
    limit = api.API_ANSWER_MAX_BYTES if status == 200 else api.ERROR_ANSWER_MAX_BYTES
    for call in (
        lambda: EachlabsHook().get_prediction("abc"),
        lambda: asyncio.run(EachlabsHook().aget_prediction("abc")),
    ):
        with pytest.raises(EachlabsUnsafeAnswerError, match=f"larger than the {limit} byte limit"):
            call()
        assert peak_allocation(call) < 4 * MiB


def test_an_oversized_output_is_refused_while_it_unpacks(hostile: HostileServer):
    packed = zlib.compress(b"\0" * (100 * MiB), 9)
    hostile.on(
        "GET",
        "/files/out.png",
        raw_answer(200, packed, {"Content-Type": "image/png", "Content-Encoding": "deflate"}),
    )
    download = lambda: EachlabsHook().download(f"{hostile.base_url}/files/out.png", max_bytes=MiB)  # noqa: E731
    with pytest.raises(EachlabsDownloadError, match=f"larger than the {MiB} byte limit"):
        download()
    assert peak_allocation(download) < 4 * MiB


# --- 4. an upload PUT to wherever the API says -------------------------------------------------------


def presign_answer(presigned_url: str, headers: dict[str, str]) -> Callable[..., None]:
    return json_answer(
        {
            "id": "u1",
            "presigned_url": presigned_url,
            "public_url": "https://cdn.example.com/u1.png",
            "required_headers": headers,
        }
    )


def test_a_presigned_url_to_a_private_address_gets_no_put(hostile: HostileServer, elsewhere: HostileServer):
    hostile.on("POST", "/v1/upload/presign", presign_answer(f"{elsewhere.base_url}/internal-admin", {}))
    with pytest.raises(
        EachlabsUnsafeAnswerError, match=r"refusing to upload to http://127\.0\.0\.1:"
    ) as caught:
        EachlabsHook().upload_bytes(png(), "image/png")
    assert caught.value.final
    assert elsewhere.received == []


def test_an_upload_follows_no_redirect_and_sends_only_upload_headers(
    hostile: HostileServer, elsewhere: HostileServer, capsys: pytest.CaptureFixture[str]
):
    asked_for = {
        "Content-Type": "image/png",
        "x-amz-meta-file-id": "u1",
        "X-Admin": "1",
        "Authorization": "Bearer attacker",
        "x-amz-evil": "a\r\nX-Injected: 1",
    }
    hostile.on("POST", "/v1/upload/presign", presign_answer(f"{hostile.base_url}/put/u1", asked_for))
    hostile.on("PUT", "/put/u1", lambda handler: send(handler, 200, b""))
    assert EachlabsHook().upload_bytes(png(), "image/png") == "https://cdn.example.com/u1.png"
    put = hostile.received[-1]
    assert put.method == "PUT" and put.body == png()
    sent = {name.lower() for name in put.headers}
    assert {"content-type", "x-amz-meta-file-id"} <= sent
    assert sent.isdisjoint({"x-admin", "authorization", "x-api-key", "x-amz-evil", "x-injected"})
    assert "not sent: X-Admin, Authorization, x-amz-evil" in capsys.readouterr().out

    hostile.on("PUT", "/put/u1", redirect(307, f"{elsewhere.base_url}/internal-admin"))
    with pytest.raises(EachlabsUnsafeAnswerError, match="refusing a redirect"):
        EachlabsHook().upload_bytes(png(), "image/png")
    assert elsewhere.received == []


# --- 5. address forms that reach loopback ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.1/out.png",
        "https://0x7f.1/out.png",
        "https://0177.0.0.1/out.png",
        "https://169.254.43518/out.png",
        "https://10.1/out.png",
        "https://2130706433/out.png",
        "https://[::ffff:127.0.0.1]/out.png",
    ],
)
def test_odd_number_forms_of_private_addresses_are_not_public(hostile: HostileServer, url: str):
    with pytest.raises(EachlabsDownloadError, match="refusing to download"):
        EachlabsHook().download(url)
    assert hostile.received == []


@pytest.mark.parametrize(
    "send_once", [sync.send, lambda request, settings: asyncio.run(aio.send(request, settings))]
)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_address_actually_connected_to_must_be_public(
    elsewhere: HostileServer, send_once: Callable[..., Any], host: str
):
    """A name that resolves to a private address (``localhost`` here) is refused at the socket."""
    url = elsewhere.base_url.replace("127.0.0.1", host) + "/x.png"
    settings = EachlabsSettings(host="https://api.eachlabs.ai", api_key="k", timeout=2)
    with pytest.raises(EachlabsDownloadError, match=r"resolves to (127\.0\.0\.1|::1), which is not a public"):
        send_once(HttpRequest("GET", url, public_only=True), settings)
    assert elsewhere.received == []


# --- 6. slow answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers_too", [False, True])
def test_an_answer_dripped_byte_by_byte_ends_at_the_request_timeout_on_both_transports(
    monkeypatch: pytest.MonkeyPatch, hostile: HostileServer, headers_too: bool
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(hostile.base_url, max_retries=0, timeout=1)
    )
    hostile.on(
        "GET", "/v1/prediction/abc", dripped(b'{"status": "processing"}' * 10, 0.2, headers_too=headers_too)
    )
    for call in (
        lambda: EachlabsHook().get_prediction("abc"),
        lambda: asyncio.run(EachlabsHook().aget_prediction("abc")),
    ):
        started = time.monotonic()
        with pytest.raises(EachlabsConnectionError, match="took longer than the 1s request timeout"):
            call()
        assert time.monotonic() - started < 2.5  # 240 bytes at 0.2 s each would take 48 s


# --- 7. failures that escaped the error family -------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (raw_answer(200, b"[" * 200_000, {"Content-Type": "application/json"}), EachlabsResponseError),
        (raw_answer(200, b"{}", {"Content-Length": "abc"}), EachlabsError),
        (raw_answer(200, b"{}", {"Content-Encoding": "br"}), EachlabsResponseError),
        (raw_answer(200, b"not gzip at all", {"Content-Encoding": "gzip"}), EachlabsResponseError),
    ],
)
def test_every_failure_reading_an_answer_is_an_eachlabs_error(
    hostile: HostileServer, answer: Callable[..., None], error_class: type[EachlabsError]
):
    hostile.on("GET", "/v1/prediction/abc", answer)
    with pytest.raises(error_class):
        EachlabsHook().get_prediction("abc")
    with pytest.raises(EachlabsError):
        asyncio.run(EachlabsHook().aget_prediction("abc"))


def test_a_trigger_turns_any_failure_into_one_error_event(hostile: HostileServer):
    hostile.on(
        "GET", "/v1/prediction/abc", raw_answer(200, b"[" * 200_000, {"Content-Type": "application/json"})
    )
    now = time.time()
    trigger = PredictionTrigger("abc", "eachlabs_default", now + 10, now - 60, poll_interval=0.05)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "error" and "not JSON" in event["message"]


# --- 8. odd ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [".", "..", "a/../b", "x" * 129])
def test_odd_ids_never_reach_the_api_host(hostile: HostileServer, bad_id: str):
    with pytest.raises(EachlabsUnsafeAnswerError):
        EachlabsHook().get_prediction(bad_id)
    hostile.on("POST", "/v1/prediction", json_answer({"predictionID": bad_id}))
    with pytest.raises(EachlabsUnsafeAnswerError, match="refusing the prediction id"):
        EachlabsHook().create_prediction("m", {"prompt": "p"})
    assert [r.path for r in hostile.received] == ["/v1/prediction"]


def test_a_sensor_refuses_an_odd_id_from_its_template(hostile: HostileServer):
    from airflow_provider_eachlabs.sensors.prediction import PredictionSensor

    sensor = PredictionSensor(task_id="wait", prediction_id="..", deferrable=False, poke_interval=0.05)
    with pytest.raises(AirflowFailException, match=r"Invalid prediction_id='\.\.': must be 1 to 128"):
        sensor.execute(context())
    assert hostile.received == []


# --- 9. the preview ----------------------------------------------------------------------------------


def test_a_small_png_claiming_a_huge_canvas_is_refused_before_any_pixel_is_decoded(tmp_path: Path):
    body = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    idat_data = zlib.compress(b"\0" * 1000)
    idat = (
        struct.pack(">I", len(idat_data))
        + b"IDAT"
        + idat_data
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat_data))
    )
    claiming = b"\x89PNG\r\n\x1a\n" + ihdr + idat + b"\0\0\0\0IEND\xaeB`\x82"
    draw = lambda: write_preview(str(tmp_path / "preview.png"), png(), None, claiming)  # noqa: E731
    with pytest.raises(
        EachlabsOutputError, match=r"claims 100000x100000 pixels, more than the preview's limit"
    ):
        draw()
    assert peak_allocation(draw) < 4 * MiB
    assert files_under(tmp_path) == []


# --- 10. the webhook --------------------------------------------------------------------------------


def test_webhook_secret_is_templated_and_webhook_url_must_be_https(hostile: HostileServer, tmp_path: Path):
    assert "webhook_secret" in FluxFillOperator.template_fields
    with pytest.raises(AirflowFailException, match=r"Invalid webhook_url='http://hooks.example.com/x'"):
        url_fill(tmp_path, webhook_url="http://hooks.example.com/x").execute(context())
    assert hostile.received == []
