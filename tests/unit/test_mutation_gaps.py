"""Behaviours that no test checked until mutation testing showed it (docs/mutation.md).

Each test is named by what it guards, not by the mutant that found the gap.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_eachlabs import api, outputs, storage
from airflow_provider_eachlabs.addresses import (
    NotCanonical,
    host_address,
    is_api_host_url,
    is_loopback_host,
    is_public_https_url,
    peer_is_public,
    validate_api_host,
)
from airflow_provider_eachlabs.exceptions import (
    EachlabsConfigError,
    EachlabsInputError,
    EachlabsOutputError,
    EachlabsStorageError,
    EachlabsUnsafeAnswerError,
)
from airflow_provider_eachlabs.polling import PollLoop, PollSchedule
from airflow_provider_eachlabs.record import RecordState, TaskRecord
from airflow_provider_eachlabs.settings import EachlabsSettings


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://[2002:c0a8:101::]/x.png", False),  # 6to4 around 192.168.1.1
        ("https://[2002:7f00:1::]/x.png", False),  # 6to4 around 127.0.0.1
        ("https://[2002:808:808::]/x.png", True),  # 6to4 around 8.8.8.8
        ("https://[::ffff:8.8.8.8]/x.png", True),  # IPv4-mapped
        ("https://[::ffff:10.0.0.1]/x.png", False),
        ("https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/x.png", True),  # Teredo, client 8.8.8.8
        ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x.png", False),  # Teredo, client 10.0.0.1
    ],
)
def test_an_ipv4_address_inside_an_ipv6_one_is_judged_as_that_ipv4_address(url: str, public: bool):
    assert is_public_https_url(url) is public


def test_a_host_name_with_the_root_dot_is_the_same_public_host():
    assert is_public_https_url("https://cdn.example.com./out.png")
    assert not is_public_https_url("https://localhost./out.png")


@pytest.mark.parametrize(
    ("peer", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("2001:4860:4860::8888%eth0", True),
        ("fe80::1%eth0", False),
        ("10.0.0.1", False),
        ("::1", False),
        ("not an address", False),
        ("", False),
    ],
)
def test_the_address_a_socket_reached_is_public_only_when_it_is(peer: str, public: bool):
    assert peer_is_public(peer) is public


def test_a_storage_error_is_told_in_one_line_of_at_most_200_characters():
    assert storage.reason(PermissionError()) == "PermissionError"
    assert storage.reason(OSError("   ")) == "OSError"
    long = OSError("x" * 300 + "\nthe second line")
    assert storage.reason(long) == "OSError: " + "x" * 200


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T02:00:00+02:00", 1767225600.0),
        ("2026-01-01T00:00:00.500000Z", 1767225600.5),
        ("2026-01-01T00:00:00", 1767225600.0),  # no offset: the API's UTC, never the worker's zone
        ("", None),
        ("yesterday", None),
        (1767225600, None),
        (0, None),
        (None, None),
    ],
)
def test_execution_timestamps_are_read_as_utc_whatever_the_workers_zone(
    value: object, epoch: float | None, monkeypatch: pytest.MonkeyPatch
):
    """The search for a lost prediction stops at executions older than the create: a misread time
    would stop it too early (buying twice) or read every page."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert api.parse_timestamp(value) == epoch
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_unreadable_answer_is_quoted_in_the_error_up_to_200_characters():
    body = b"\xff<html>" + b"x" * 300
    with pytest.raises(api.EachlabsResponseError) as caught:
        api.read_json(api.ApiResponse(200, {}, body))
    assert str(caught.value) == "HTTP 200: the answer is not JSON: " + repr(
        ("\ufffd<html>" + "x" * 300)[:200]
    )


# --- the API's answers ------------------------------------------------------------------------------


def test_an_unreadable_answer_keeps_its_request_id():
    with pytest.raises(api.EachlabsResponseError) as caught:
        api.read_json(api.ApiResponse(200, {"X-Request-Id": "req-7"}, b"<html>"))
    assert caught.value.request_id == "req-7"
    assert str(caught.value).endswith("(request id req-7)")


@pytest.mark.parametrize("status", [300, 301, 399])
def test_every_3xx_answer_is_refused_as_a_redirect(status: int):
    """HTTP 300 (Multiple Choices) too: the API's calls follow nothing, so no 3xx is an answer."""
    with pytest.raises(EachlabsUnsafeAnswerError) as caught:
        api.raise_for_status(api.ApiResponse(status, {"Location": "https://elsewhere.example"}, b"{}"))
    assert caught.value.status_code == status
    assert "refusing a redirect to https://elsewhere.example" in str(caught.value)


def test_the_executions_request_asks_for_one_page_of_one_models_executions():
    assert api.list_executions_request() == api.ApiRequest(
        "GET", "/v1/executions", resendable=True, params={"limit": "20", "offset": "0"}
    )
    assert api.list_executions_request(100, 200, "flux-fill-pro").params == {
        "limit": "100",
        "offset": "200",
        "model": "flux-fill-pro",
    }


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (500, b"", "HTTP 500: the API answered HTTP 500"),
        (500, b"{}", "HTTP 500: the API answered HTTP 500"),
        (502, b"\xffBad gateway " + b"x" * 400, "HTTP 502: \ufffdBad gateway " + "x" * 287),
        (503, b'["busy", 1]', 'HTTP 503: ["busy",1]'),
        (400, b'{"error": {"message": "steps too high"}}', "HTTP 400: steps too high"),
        (400, b'{"error": {"code": 7}}', 'HTTP 400: {"code":7}'),
        (400, b'{"message": "' + b"m" * 400 + b'"}', "HTTP 400: " + "m" * 300),
    ],
)
def test_an_error_answer_says_what_the_api_said_in_at_most_300_characters(
    status: int, body: bytes, said: str
):
    with pytest.raises(api.EachlabsAPIError) as caught:
        api.raise_for_status(api.ApiResponse(status, {}, body))
    assert str(caught.value) == said


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(value: str):
    assert api.retry_after_seconds({"Retry-After": value}) is None


@pytest.mark.parametrize("host", ["https://api.example.com/eachlabsX", "https://api.example.com/eachlabsX/"])
def test_a_prediction_link_keeps_the_hosts_path(host: str):
    assert api.prediction_url(host, "p1") == "https://api.example.com/eachlabsX/v1/prediction/p1"


# --- failed and cancelled predictions ---------------------------------------------------------------


def raised_for(prediction: api.Prediction, **kwargs: Any) -> Exception:
    with pytest.raises((api.PredictionFailed, api.PredictionCancelled)) as caught:
        api.raise_for_prediction_end(prediction, **kwargs)
    return caught.value


UNKNOWN_FAILURE = api.Prediction(
    id="p1",
    status="failed",
    output={"error_code": "SOMETHING_NEW", "error_message": "boom"},
    request_id="req-9",
)


def test_a_failed_prediction_leaves_its_id_code_and_request_id_in_the_tasks_outcome():
    from airflow_provider_eachlabs.results import failure_outcome

    error = raised_for(UNKNOWN_FAILURE)
    assert (
        str(error)
        == "Eachlabs prediction p1 ended with status 'failed': SOMETHING_NEW: boom (request id req-9)."
    )
    outcome = failure_outcome("p1", "m", error)
    assert (outcome["status"], outcome["error_code"], outcome["request_id"], outcome["final"]) == (
        "failed",
        "SOMETHING_NEW",
        "req-9",
        False,
    )
    assert (error.prediction_id, error.error_code, error.request_id) == ("p1", "SOMETHING_NEW", "req-9")


def test_an_unknown_failure_is_final_and_says_so_only_when_the_task_asks():
    error = raised_for(UNKNOWN_FAILURE, retry_unknown_failures=False)
    assert error.final
    assert str(error).endswith("(request id req-9). Not retried: retry_unknown_failures is off.")


def test_a_cancelled_prediction_leaves_its_id_and_request_id_in_the_tasks_outcome():
    from airflow_provider_eachlabs.results import failure_outcome

    error = raised_for(api.Prediction(id="p1", status="cancelled", request_id="req-9"))
    assert str(error) == "Eachlabs prediction p1 was cancelled (the API gave no reason) (request id req-9)"
    assert failure_outcome("p1", "m", error)["request_id"] == "req-9"
    assert (error.prediction_id, error.request_id) == ("p1", "req-9")


# --- input files ------------------------------------------------------------------------------------


def test_a_folder_given_as_an_image_is_refused_naming_the_field_and_the_folder(tmp_path: Path):
    with pytest.raises(EachlabsInputError) as caught:
        storage.read_source("mask", str(tmp_path))
    assert str(caught.value) == f"Invalid mask='{tmp_path}': is a folder, not an image file"


def test_a_file_that_is_no_image_is_refused_naming_the_field_and_the_file(tmp_path: Path):
    source = tmp_path / "x.png"
    source.write_bytes(b"not an image")
    with pytest.raises(EachlabsInputError) as caught:
        storage.load_image("image", str(source))
    assert (
        str(caught.value)
        == f"Invalid image='{source}': must be a JPEG, PNG or WebP image (its bytes are not)"
    )


def test_a_mask_of_another_size_is_refused_naming_the_mask_file(tmp_path: Path):
    paths = []
    for name, size in (("scene.png", (8, 8)), ("mask.png", (4, 4))):
        buffer = io.BytesIO()
        Image.new("RGB", size).save(buffer, "PNG")
        (tmp_path / name).write_bytes(buffer.getvalue())
        paths.append(str(tmp_path / name))
    image, mask = storage.load_image("image", paths[0]), storage.load_image("mask", paths[1])
    with pytest.raises(EachlabsInputError) as caught:
        storage.check_fill_inputs(image, mask)
    assert str(caught.value) == f"Invalid mask='{paths[1]}': must have the image's size 8x8 (it is 4x4)"


# --- output files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sub/name", "a..b", "..", ".hidden", "x" * 129, "a b"])
def test_an_output_name_that_is_not_a_plain_file_name_is_refused(name: str):
    assert not storage.check_file_stem(name)
    with pytest.raises(EachlabsUnsafeAnswerError) as caught:
        storage.output_target("/data/out/", name, "png")
    assert (
        str(caught.value) == f"refusing to name an output file {name[:80]!r}: a name {storage.FILE_STEM_RULE}"
    )


def test_a_refused_output_name_is_quoted_up_to_80_characters():
    with pytest.raises(EachlabsUnsafeAnswerError, match=re.escape(repr("/" + "x" * 79) + ": a name")):
        storage.output_target("/data/out/", "/" + "x" * 200, "png")


def test_an_output_folder_ending_in_x_keeps_its_name(tmp_path: Path):
    folder = tmp_path / "BOX"
    assert storage.output_target(f"{folder}/", "p1", "png") == f"{folder}/p1.png"


def test_a_symlink_planted_where_the_output_goes_is_refused(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "p1.png").symlink_to(tmp_path / "elsewhere" / "p1.png")
    with pytest.raises(EachlabsUnsafeAnswerError) as caught:
        storage.output_target(f"{tmp_path}/out/", "p1", "png")
    assert str(caught.value) == (
        f"refusing to write {tmp_path}/out/p1.png: it is not inside output_path '{tmp_path}/out/'"
    )


def test_an_output_of_another_format_names_itself_and_says_nothing_was_stored():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buffer, format="WEBP")
    with pytest.raises(EachlabsOutputError) as caught:
        storage.check_output(buffer.getvalue(), "jpg", "https://cdn.example.com/p1.webp of prediction p1")
    assert str(caught.value) == (
        "the output https://cdn.example.com/p1.webp of prediction p1 is a webp image, not the jpg asked for; "
        "nothing was stored"
    )


def test_a_stored_output_gets_missing_folders_and_the_umasks_permissions(tmp_path: Path):
    previous = os.umask(0o022)
    try:
        target = tmp_path / "a" / "b" / "p1.png"
        storage.write_atomically(str(target), b"image bytes")
        storage.write_atomically(f"file://{target}", b"new bytes")  # replaced whole
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["p1.png"]


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file URI"])
def test_a_local_output_is_written_to_a_hidden_part_file_beside_it_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_uri: bool
):
    """A worker killed mid-write leaves at most a hidden ``.<name>.*.part`` scrap, never a half image
    under the output's name or one a ``*.png`` glob would pick up."""
    folders_at_rename: list[list[str]] = []
    rename = os.replace

    def watched_rename(source: str, target: str) -> None:
        folders_at_rename.append(sorted(path.name for path in tmp_path.iterdir()))
        rename(source, target)

    monkeypatch.setattr(storage.os, "replace", watched_rename)
    target = tmp_path / "p1.png"
    storage.write_atomically(target.as_uri() if as_uri else str(target), b"image")
    [names] = folders_at_rename
    assert len(names) == 1 and re.fullmatch(r"\.p1\.png\.[^.]+\.part", names[0]), names
    assert [path.name for path in tmp_path.iterdir()] == ["p1.png"]
    assert target.read_bytes() == b"image"


def test_a_write_that_fails_leaves_no_partial_file(tmp_path: Path):
    with pytest.raises(TypeError):
        storage.write_atomically(str(tmp_path / "p1.png"), "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_an_output_on_another_filesystem_than_the_temporary_folder_is_renamed_into_place():
    """The temporary file is made next to the output, so the rename never crosses filesystems."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("needs a folder on another filesystem than the temporary folder")
    target = shm / f"eachlabs-test-{os.getpid()}" / "p1.png"
    try:
        storage.write_atomically(str(target), b"image bytes")
        assert target.read_bytes() == b"image bytes"
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


@pytest.mark.parametrize("store", ["memory", "local"])
def test_an_object_store_output_gets_its_folders(tmp_path: Path, store: str):
    from airflow.sdk import ObjectStoragePath

    folder = f"eachlabs-{os.getpid()}" if store == "memory" else tmp_path.as_posix().lstrip("/")
    target = f"{store}:///{folder}/a/b/p1.png"
    storage.write_atomically(target, b"first")
    storage.write_atomically(target, b"second")
    assert ObjectStoragePath(target).read_bytes() == b"second"


# --- what the wait says -----------------------------------------------------------------------------


def test_the_wait_tells_each_new_status_once_and_an_unknown_word_once_in_whole_sentences():
    poll = PollLoop("p1", started_at=0.0, deadline=100.0, schedule=PollSchedule(1.0, 9.0))
    assert poll.on_prediction(api.Prediction(id="p1", status="mystery"), 1.25).note == (
        "Prediction p1 is 'mystery' after 1.2s "
        "(a status the provider does not know: treated as still running)"
    )
    assert poll.on_prediction(api.Prediction(id="p1", status="processing"), 2.0).note == (
        "Prediction p1 is 'processing' after 2.0s"
    )
    assert poll.on_prediction(api.Prediction(id="p1", status="enigma"), 3.0).note == (
        "Prediction p1 is 'enigma' after 3.0s"
    )
    assert poll.last_status == "enigma"
    late = api.EachlabsServerError("boom", status_code=502)
    assert poll.on_error(late, 100.0).note == "Polling prediction p1 failed at the deadline (HTTP 502: boom)"


# --- the API host's own files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "on_host"),
    [
        ("https://api.example.com/files/x.png", "https://api.example.com", True),
        ("https://api.example.com:443/files/x.png", "https://api.example.com", True),
        ("https://api.example.com/files/x.png", "https://api.example.com:443/", True),
        ("https://api.example.com:8443/files/x.png", "https://api.example.com", False),
        ("http://api.example.com/files/x.png", "https://api.example.com", False),
        ("https://cdn.example.com/files/x.png", "https://api.example.com", False),
        ("https://user@api.example.com/files/x.png", "https://api.example.com", False),
        ("https://api.example.com/v2/files/x.png", "https://api.example.com/v2", True),
        ("https://api.example.com/v2x/files/x.png", "https://api.example.com/v2", False),
        ("https://api.example.com/v2/files/x.png", "https://api.example.com/v2X", False),
        ("http://127.0.0.1:8080/files/x.png", "http://127.0.0.1:8080", True),
        ("http://127.0.0.1/files/x.png", "http://127.0.0.1:80", True),
        ("http://127.0.0.1:bad/files/x.png", "http://127.0.0.1:80", False),
        ("https:///files/x.png", "https://api.example.com", False),
        ("https://api.example.com/files/x.png", "", False),
        ("https://api.example.com/files/x.png", None, False),
    ],
)
def test_a_file_is_on_the_api_host_only_with_its_scheme_host_port_and_path(
    url: str, host: str | None, on_host: bool
):
    assert is_api_host_url(url, host) is on_host


# --- the task record --------------------------------------------------------------------------------


class Store(dict):  # type: ignore[type-arg]
    """``task_state_store`` as a task sees it: get, and set with a retention."""

    def set(self, key: str, value: object, *, retention: object = None) -> None:
        self[key] = value


def test_the_record_keeps_everything_a_retry_needs_and_reads_it_back():
    store = Store()
    ctx = {"task_state_store": store}
    record = TaskRecord.load(ctx)  # type: ignore[arg-type]
    record.sending(100.0)
    record.created("p-1", 101.0)
    record.uploads["abc"] = "https://cdn.example.com/u.png"
    record.reported_ids.append("p-0")
    record.finished_ids.append("p-00")
    record.save(ctx)  # type: ignore[arg-type]
    assert store["eachlabs_prediction"] == {
        "version": 1,
        "finished_ids": ["p-00"],
        "reported_ids": ["p-0"],
        "sent_at": 100.0,
        "id": "p-1",
        "started_at": 101.0,
    }
    assert store["eachlabs_uploads"] == {"abc": "https://cdn.example.com/u.png"}
    again = TaskRecord.load(ctx)  # type: ignore[arg-type]
    assert (again.sent_at, again.prediction_id, again.started_at) == (100.0, "p-1", 101.0)
    assert (again.finished_ids, again.reported_ids, again.uploads) == (["p-00"], ["p-0"], record.uploads)
    assert again.stored and again.state is RecordState.CREATED


@pytest.mark.parametrize(
    "body",
    [
        {"sent_at": True, "started_at": "5", "finished_ids": "p-1", "reported_ids": {"p": 1}},
        {"sent_at": None, "id": "", "finished_ids": None},
        "not a record",
    ],
)
def test_a_record_in_an_unknown_shape_reads_as_nothing_sent(body: object):
    store = Store({"eachlabs_prediction": body, "eachlabs_uploads": ["not", "a", "mapping"]})
    record = TaskRecord.load({"task_state_store": store})  # type: ignore[arg-type]
    assert record.state is RecordState.NOTHING_SENT
    assert (record.sent_at, record.started_at) == (None, None)
    assert (record.finished_ids, record.reported_ids, record.uploads) == ([], [], {})


def test_a_new_create_finishes_with_the_earlier_prediction_and_forgets_its_times():
    record = TaskRecord(sent_at=1.0, prediction_id="p-1", started_at=2.0)
    record.sending(3.0)
    assert (record.sent_at, record.prediction_id, record.started_at, record.finished_ids) == (
        3.0,
        None,
        None,
        ["p-1"],
    )
    record.created("p-2", 4.0)
    record.finished()
    assert (record.sent_at, record.prediction_id, record.started_at, record.finished_ids) == (
        None,
        None,
        None,
        ["p-1", "p-2"],
    )


# --- requests and answers, field by field -----------------------------------------------------------


def test_an_api_request_goes_to_the_configured_host_with_the_key_its_body_and_its_query():
    settings = EachlabsSettings(host="https://api.example.com", api_key="k-1")
    request = api.ApiRequest("POST", "/v1/x", resendable=False, json={"a": 1}, params={"q": "2"}).to_http(
        settings
    )
    assert (request.method, request.url, request.json, request.params) == (
        "POST",
        "https://api.example.com/v1/x",
        {"a": 1},
        {"q": "2"},
    )
    assert request.headers == api.auth_headers("k-1")
    assert request.headers["Accept"] == "application/json"
    assert (request.content, request.public_only, request.max_bytes) == (
        None,
        False,
        api.API_ANSWER_MAX_BYTES,
    )


def test_a_create_sends_the_model_the_input_and_both_webhook_fields():
    sent = {"prompt": "p"}
    request = api.create_prediction_request("m", sent, "https://hooks.example.com/x", "whsec-1")
    assert request == api.ApiRequest(
        "POST",
        "/v1/prediction",
        resendable=False,
        json={
            "model": "m",
            "input": {"prompt": "p"},
            "webhook_url": "https://hooks.example.com/x",
            "webhook_secret": "whsec-1",
        },
    )
    assert request.json is not None and request.json["input"] is not sent  # a copy, not the task's dict


@pytest.mark.parametrize(
    ("content_type", "file_type"),
    [("image/png", "image"), ("video/mp4", "video"), ("audio/wav", "audio"), ("application/pdf", "other")],
)
def test_a_presign_names_the_content_type_and_its_kind(content_type: str, file_type: str):
    assert api.presign_upload_request(content_type) == api.ApiRequest(
        "POST",
        "/v1/upload/presign",
        resendable=True,
        json={"content_type": content_type, "file_type": file_type},
    )


def test_the_other_requests_name_their_route():
    assert api.get_prediction_request("p1") == api.ApiRequest("GET", "/v1/prediction/p1", resendable=True)
    assert api.cancel_prediction_request("p1") == api.ApiRequest(
        "POST", "/v1/prediction/p1/cancel", resendable=True
    )
    assert api.get_model_request("m") == api.ApiRequest(
        "GET", "/v1/model", resendable=True, params={"slug": "m"}
    )
    assert api.prediction_url("https://api.example.com/", "p1") == "https://api.example.com/v1/prediction/p1"


def test_a_prediction_answer_keeps_only_what_has_the_documented_type():
    body = {
        "status": "processing" * 10,
        "output": {"x": 1},
        "metrics": ["not", "a", "mapping"],
        "logs": 5,
        "message": {"not": "text"},
        "details": [1, 2],
    }
    prediction = api.read_prediction(
        api.ApiResponse(200, {"x-request-id": "r" * 150}, json.dumps(body).encode()), "p1"
    )
    assert prediction == api.Prediction(
        id="p1",
        status=("processing" * 10)[:40],
        output={"x": 1},
        metrics={},
        logs=None,
        message=None,
        details=[1, 2],
        request_id="r" * 100,
    )
    words = {"status": "failed", "logs": "l", "message": "m", "metrics": {"cost": 1}}
    read = api.read_prediction(api.ApiResponse(200, {}, json.dumps(words).encode()), "p1")
    assert (read.logs, read.message, read.metrics, read.request_id) == ("l", "m", {"cost": 1}, None)


@pytest.mark.parametrize("body", [[], {"status": 5}, {"output": "x"}])
def test_a_prediction_answer_without_a_status_word_is_a_response_error(body: object):
    with pytest.raises(api.EachlabsResponseError) as caught:
        api.read_prediction(api.ApiResponse(200, {"X-Request-Id": "r1"}, json.dumps(body).encode()), "p1")
    assert str(caught.value).startswith("HTTP 200: the prediction answer has no status: ")
    assert caught.value.request_id == "r1"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({"predictionID": "a", "prediction_id": "b", "id": "c"}, "a"),
        ({"prediction_id": "b", "id": "c"}, "b"),
        ({"predictionID": "", "prediction_id": None, "id": "c"}, "c"),
    ],
)
def test_a_create_answer_is_read_under_each_documented_key_in_order(body: dict[str, Any], found: str):
    assert api.read_created_prediction_id(api.ApiResponse(201, {}, json.dumps(body).encode())) == found


def test_a_create_answer_without_an_id_quotes_it():
    with pytest.raises(api.EachlabsResponseError) as caught:
        api.read_created_prediction_id(api.ApiResponse(200, {}, b'["no id"]'))
    assert str(caught.value) == "HTTP 200: the create answer carries no prediction id: '[\"no id\"]'"


def test_a_refused_id_is_quoted_up_to_80_characters():
    with pytest.raises(EachlabsUnsafeAnswerError) as caught:
        api.check_prediction_id("/" * 200)
    assert (
        str(caught.value) == f"refusing the prediction id {repr('/' * 200)[:80]}: it {api.PREDICTION_ID_RULE}"
    )


@pytest.mark.parametrize(
    ("headers", "location"),
    [
        ({"Location": "https://elsewhere.example/" + "x" * 300}, "https://elsewhere.example/" + "x" * 174),
        ({}, "nowhere"),
    ],
)
def test_a_redirect_from_the_api_names_where_it_pointed(headers: dict[str, str], location: str):
    with pytest.raises(EachlabsUnsafeAnswerError) as caught:
        api.raise_for_status(api.ApiResponse(302, {"X-Request-Id": "r1", **headers}, b""))
    assert str(caught.value) == (
        f"HTTP 302: refusing a redirect to {location}: API calls and uploads follow no redirects, so the "
        "key and the files go only to the host they were sent to (request id r1)"
    )


def test_a_rate_limit_carries_its_retry_after_and_request_id():
    with pytest.raises(api.EachlabsRateLimitError) as caught:
        api.raise_for_status(api.ApiResponse(429, {"Retry-After": "7", "X-Request-Id": "r1"}, b"{}"))
    assert (caught.value.retry_after, caught.value.request_id, caught.value.status_code) == (7.0, "r1", 429)


def test_headers_are_found_whatever_their_case():
    assert api.header({"content-type": "image/png"}, "Content-Type") == "image/png"
    assert api.header({"Content-Type": "image/png", "content-type": "x"}, "Content-Type") == "image/png"
    assert api.header({}, "Content-Type") is None


@pytest.mark.parametrize(
    ("status", "headers", "said"),
    [
        (200, {"Content-Type": "text/html"}, "is not an image (Content-Type 'text/html')"),
        (200, {}, "is not an image (Content-Type 'missing')"),
        (302, {}, "refusing a redirect to nowhere"),
    ],
)
def test_a_download_that_is_no_image_or_a_redirect_nowhere_is_refused(
    status: int, headers: dict[str, str], said: str
):
    with pytest.raises(api.EachlabsAPIError, match=re.escape(said)):
        api.read_download(api.ApiResponse(status, headers, b"<html>"), "https://cdn.example.com/p1.png")


def test_a_download_reads_an_image_by_its_content_type_in_any_case():
    got = api.read_download(api.ApiResponse(200, {"content-type": "IMAGE/PNG"}, b"bytes"), "https://c/x.png")
    assert got == api.Download("https://c/x.png", b"bytes", "IMAGE/PNG")
    assert api.read_download(api.ApiResponse(307, {"Location": "/next"}, b""), "https://c/x.png") == "/next"


@pytest.mark.parametrize(
    ("body", "kept", "dropped"),
    [
        (
            {"X-Amz-Acl": "private", "Cache-Control": "no-cache"},
            {"X-Amz-Acl": "private", "Cache-Control": "no-cache"},
            (),
        ),
        ({"X-Other": "1", "x-amz-bad": "a\nb", "Expires": "x\0"}, {}, ("X-Other", "x-amz-bad", "Expires")),
        ({"X" * 100: "1"}, {}, ("X" * 60,)),
    ],
)
def test_a_presign_answer_keeps_only_clean_s3_upload_headers(
    body: dict[str, str], kept: dict[str, str], dropped: tuple[str, ...]
):
    answer = {
        "presigned_url": "https://up.example.com/u",
        "public_url": "https://cdn.example.com/u",
        "required_headers": body,
    }
    assert api.read_presigned_upload(answer) == api.PresignedUpload(
        "https://up.example.com/u", "https://cdn.example.com/u", kept, dropped
    )


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"presigned_url": "https://u"}, "the presign answer lacks presigned_url or public_url: "),
        ({"public_url": "https://u"}, "the presign answer lacks presigned_url or public_url: "),
        (["x"], "the presign answer lacks presigned_url or public_url: "),
        (
            {"presigned_url": "https://u", "public_url": "https://p", "required_headers": ["x"]},
            "the presign answer's required_headers is not an object: ",
        ),
    ],
)
def test_a_presign_answer_missing_its_urls_or_with_odd_headers_is_a_response_error(answer: Any, said: str):
    with pytest.raises(api.EachlabsResponseError) as caught:
        api.read_presigned_upload(answer)
    assert str(caught.value) == said + json.dumps(answer, separators=(",", ":"))


@pytest.mark.parametrize(
    ("host", "kept"),
    [
        ("  https://API.EXAMPLE.BOX/ ", "https://API.EXAMPLE.BOX"),
        ("http://127.0.0.1.:8080//", "http://127.0.0.1.:8080"),
        ("", "https://api.eachlabs.ai"),
    ],
)
def test_a_connection_host_is_kept_as_written_without_blanks_and_trailing_slashes(host: str, kept: str):
    assert validate_api_host(host) == kept


@pytest.mark.parametrize(
    ("host", "said"),
    [
        (
            "https://user@api.example.com",
            "must be a plain https://<host>[:port] URL (no user name, query or fragment)",
        ),
        ("https://api.example.com/?q=1", "must be a plain https://<host>[:port] URL"),
        ("https://api.example.com/#f", "must be a plain https://<host>[:port] URL"),
        ("https://127.1", "is a number in an unusual form: write the address as four decimal parts"),
        ("https://0x7f.0.0.1", "is a number in an unusual form"),
        (
            "ftp://api.example.com",
            "is not a URL: write it as https://<host> (the default is https://api.eachlabs.ai)",
        ),
        (
            "http://api.example.com",
            "must use https:// (plain http:// is allowed only for localhost / 127.0.0.1 / ::1) so that "
            "the API key is never sent in clear",
        ),
    ],
)
def test_a_connection_host_that_is_refused_says_why(host: str, said: str):
    with pytest.raises(EachlabsConfigError) as caught:
        validate_api_host(host)
    assert str(caught.value).startswith(f"Eachlabs connection host {host!r} ")
    assert said in str(caught.value)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("LOCALHOST.", None),
        ("api.example.com.", None),
        ("[::1]", None),
        ("::1", "::1"),
    ],
)
def test_a_host_is_an_address_only_when_it_is_written_as_one(host: str, address: str | None):
    found = host_address(host)
    assert (str(found) if found is not None else None) == address


@pytest.mark.parametrize("host", ["127.1", "0x7f.1", "1.2.3.0x4", "2130706433", "a.b.99"])
def test_a_host_whose_last_label_is_a_number_must_be_a_dotted_quad(host: str):
    with pytest.raises(NotCanonical):
        host_address(host)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost.", True),
        ("127.0.0.1", True),
        ("127.0.0.1.", True),
        ("::1", True),
        ("127.1", False),
        ("api.example.com", False),
    ],
)
def test_loopback_hosts_are_named_or_numbered_so(host: str, loopback: bool):
    assert is_loopback_host(host) is loopback


def test_a_download_that_is_no_image_says_so_with_its_status_and_request_id_in_bounded_length():
    long_url = "https://cdn.example.com/" + "u" * 300
    long_type = "text/" + "h" * 100
    with pytest.raises(api.EachlabsResponseError) as caught:
        api.read_download(
            api.ApiResponse(200, {"Content-Type": long_type, "X-Request-Id": "r1"}, b"x"), long_url
        )
    assert str(caught.value) == (
        f"HTTP 200: output {long_url[:200]} is not an image (Content-Type {long_type[:60]!r}) (request id r1)"
    )
    assert (caught.value.status_code, caught.value.request_id) == (200, "r1")


# --- storing what was paid for ----------------------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_stored_output_is_listed_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    urls = ["https://cdn.example.com/p1.png", "https://cdn.example.com/p1-2.png"]
    prediction = api.Prediction(id="p1", status="success", output=urls)
    log = logging.getLogger("test.outputs")
    with caplog.at_level(logging.INFO, logger="test.outputs"):
        fields = outputs.store_outputs(
            prediction,
            f"{tmp_path}/",
            name="p1",
            fetch=lambda url: png_bytes(),
            expected_format=None,
            log=log,
        )
    assert fields["stored_paths"] == [f"{tmp_path}/p1.png", f"{tmp_path}/p1_1.png"]
    assert [r.getMessage() for r in caplog.records] == [
        f"Stored the output of prediction p1 at {tmp_path}/p1.png",
        f"Stored the output of prediction p1 at {tmp_path}/p1_1.png",
    ]


def test_a_store_that_fails_after_the_prediction_succeeded_says_where_the_paid_image_still_is(
    tmp_path: Path,
):
    (tmp_path / "out").write_text("a file where the folder should be")
    url = "https://cdn.example.com/p1.png"
    prediction = api.Prediction(id="p1", status="success", output=url)
    with pytest.raises(EachlabsStorageError) as caught:
        outputs.store_outputs(
            prediction,
            f"{tmp_path}/out/sub/",
            name="p1",
            fetch=lambda _: png_bytes(),
            expected_format="png",
            log=logging.getLogger("test.outputs"),
        )
    assert str(caught.value) == (
        f"Prediction p1 succeeded, but its output could not be written to {tmp_path}/out/sub/p1.png "
        f"(NotADirectoryError: [Errno 20] Not a directory: '{tmp_path}/out/sub'). The image is at {url} "
        "while that URL lasts; the task's next try stores it without buying another prediction."
    )
    assert (caught.value.prediction_id, caught.value.output_url, caught.value.final) == ("p1", url, False)


# --- inputs and output folders, checked before anything is bought ------------------------------------


def image_file(path: Path, size: tuple[int, int]) -> str:
    Image.new("RGB", size, (10, 120, 40)).save(path, format="PNG")
    return str(path)


def test_a_mask_of_another_size_is_refused_naming_the_mask(tmp_path: Path):
    image = storage.load_image("image", image_file(tmp_path / "scene.png", (32, 24)))
    mask = storage.load_image("mask", image_file(tmp_path / "mask.png", (16, 12)))
    with pytest.raises(EachlabsInputError) as caught:
        storage.check_fill_inputs(image, mask)
    assert str(caught.value) == (
        f"Invalid mask={mask.source!r}: must have the image's size 32x24 (it is 16x12)"
    )


def test_an_upload_is_logged_once_and_the_same_bytes_are_not_uploaded_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    image = storage.load_image("image", image_file(tmp_path / "scene.png", (8, 6)))
    sent: list[tuple[int, str]] = []

    def upload(content: bytes, content_type: str) -> str:
        sent.append((len(content), content_type))
        return "https://cdn.example.com/u1.png"

    uploaded: dict[str, str] = {}
    log = logging.getLogger("test.uploads")
    with caplog.at_level(logging.INFO, logger="test.uploads"):
        for _ in range(2):
            assert storage.upload_image(upload, image, uploaded, log) == "https://cdn.example.com/u1.png"
    assert sent == [(len(image.content), "image/png")]
    assert [r.getMessage() for r in caplog.records] == [
        f"Uploaded image ({len(image.content)} bytes) to https://cdn.example.com/u1.png"
    ]


def test_an_output_folder_that_is_a_file_is_refused_before_anything_is_bought(tmp_path: Path):
    (tmp_path / "a-file").write_text("not a folder")
    for output_path in (f"{tmp_path}/a-file/", f"file://{tmp_path}/a-file/out/"):
        with pytest.raises(EachlabsInputError, match=r"cannot be written: .*/a-file is a file, not a folder"):
            storage.check_writable("output_path", output_path)


def test_an_existing_output_file_may_be_written_again(tmp_path: Path):
    (tmp_path / "out.png").write_bytes(b"an earlier run")
    storage.check_writable("output_path", f"{tmp_path}/out.png")


def test_a_local_output_folder_is_taken_literally_not_as_a_url(tmp_path: Path):
    folder = tmp_path / "batch%41 #1"
    folder.mkdir()
    assert storage.is_folder_like(str(folder))
    assert storage.output_target(str(folder), "p1", "png") == f"{folder}/p1.png"
