"""Presigned upload round trip, and the checks a real presigned PUT enforces."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Api, gradient, png_bytes


def _presign(api: Api, content_type: str = "image/png", **extra: Any) -> dict[str, Any]:
    resp = api.post("/v1/upload/presign", json={"content_type": content_type, **extra})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_round_trip(api: Api) -> None:
    data = png_bytes(gradient())
    p = _presign(api, file_type="image", expires_in_seconds=3600)
    # Every header the PUT needs is listed, so a client that sends exactly these succeeds (the spec:
    # "send every header returned in required_headers").
    assert p["required_headers"] == {"Content-Type": "image/png", "x-amz-meta-file-id": p["id"]}
    assert p["presigned_url"].startswith(api.sim.base_url + "/uploads/")
    assert p["public_url"] == f"{api.sim.base_url}/files/uploads/{p['id']}.png"
    put = api.put(p["presigned_url"], data=data, headers=p["required_headers"])
    assert put.status_code == 200
    got = api.session.get(p["public_url"], headers={"X-API-Key": ""})
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "image/png"
    c = api.sim.counters
    assert (c.presigns, c.uploads, c.file_downloads) == (1, 1, 1)


def test_uploaded_file_usable_as_prediction_input(api: Api) -> None:
    p = _presign(api)
    api.put(
        p["presigned_url"],
        data=png_bytes(gradient()),
        headers={**p["required_headers"], "Content-Type": "image/png"},
    )
    pid = api.create_id({"prompt": "x", "image": p["public_url"], "mask": p["public_url"]})
    assert api.wait(pid)["status"] == "success"


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "image/png"},
        {"x-amz-meta-file-id": "wrong", "Content-Type": "image/png"},
        {"Content-Type": "image/jpeg", "x-amz-meta-file-id": "ID"},
    ],
)
def test_put_without_required_headers_rejected(api: Api, headers: dict[str, str]) -> None:
    p = _presign(api)
    headers = {k: (p["id"] if v == "ID" else v) for k, v in headers.items()}
    resp = api.put(p["presigned_url"], data=b"x", headers=headers, check_spec=False)
    assert resp.status_code == 403
    assert api.session.get(p["public_url"]).status_code == 404


def test_put_with_bad_signature_rejected(api: Api) -> None:
    p = _presign(api)
    url = p["presigned_url"].split("?")[0] + "?X-Amz-Signature=forged"
    resp = api.put(
        url, data=b"x", headers={**p["required_headers"], "Content-Type": "image/png"}, check_spec=False
    )
    assert resp.status_code == 403


@pytest.mark.parametrize("content_type", ["application/pdf", "text/plain", "image/tiff-nope", ""])
def test_unknown_content_type_is_400(api: Api, content_type: str) -> None:
    assert api.post("/v1/upload/presign", json={"content_type": content_type}).status_code == 400


def test_other_media_types_and_bad_file_type(api: Api) -> None:
    assert _presign(api, "video/mp4")["public_url"].endswith(".mp4")
    assert _presign(api, "audio/mpeg")["public_url"].endswith(".mp3")
    assert _presign(api, "image/jpeg")["public_url"].endswith(".jpg")
    bad = api.post("/v1/upload/presign", json={"content_type": "image/png", "file_type": "document"})
    assert bad.status_code == 400


def test_missing_file_is_404(api: Api) -> None:
    assert api.get("/files/uploads/nothing.png").status_code == 404
