"""Every kind of file a user can name, in and out of a whole fill against the simulator.

Each round trip reads the image and mask from where the user put them, uploads them, fills, stores
the PNG where ``output_path`` says, and reads it back from there independently of the provider: the
pixels outside the mask must be the input's, bit for bit, and the XCom result must describe the
stored bytes exactly. ``s3://`` runs against a real S3-compatible server (moto's server mode) on a
loopback port, through the Amazon provider's filesystem as a deployment would have it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from functools import reduce
from pathlib import Path
from typing import Any

import fsspec
import pytest
from PIL import Image, ImageChops

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import DATA, context, fill

SCENE = DATA / "scene.png"
MASK = DATA / "scene_mask.png"
BUCKET = "bucket"


def assert_filled_only_inside_the_mask(stored: bytes) -> None:
    """Outside the mask the PNG equals the input in every channel of every pixel; inside, it changed.

    Each RGB band is checked on its own: a difference image flattened to grey rounds a one-level
    change in red or blue down to zero, and would hide it.
    """
    after = Image.open(io.BytesIO(stored))
    assert (after.format, after.size) == ("PNG", (512, 384))
    before = Image.open(SCENE).convert("RGB")
    difference = ImageChops.difference(before, after.convert("RGB"))
    region = Image.open(MASK).convert("L").point(lambda v: 255 if v >= 128 else 0)
    keep = ImageChops.invert(region)
    for band in difference.split():
        assert ImageChops.multiply(band, keep).getbbox() is None, "a pixel outside the mask changed"
    changed = reduce(ImageChops.lighter, difference.split()).point(lambda v: 255 if v else 0)
    changed_inside = ImageChops.multiply(changed, region).histogram()[255]
    assert changed_inside > 0.5 * region.histogram()[255], "the masked region was not filled"


def assert_result_describes(result: dict[str, Any], stored_path: str, stored: bytes) -> None:
    """The XCom result names where the output is and what it is, matching the bytes found there."""
    assert result["status"] == "success"
    assert {key: result[key] for key in ("stored_path", "bytes", "sha256", "content_type")} == {
        "stored_path": stored_path,
        "bytes": len(stored),
        "sha256": hashlib.sha256(stored).hexdigest(),
        "content_type": "image/png",
    }
    assert (result["width"], result["height"]) == (512, 384)


# --- local paths, file:// and memory:// ------------------------------------------------------------


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A private folder of fsspec's process-wide memory filesystem, removed afterwards."""
    root = f"/eachlabs-roundtrip-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    yield root
    if memory.exists(root):
        memory.rm(root, recursive=True)


def place_inputs(kind: str, tmp_path: Path, memory_root: str) -> tuple[str, str]:
    """Put the sample image and mask where a user of this kind keeps them; return what they would type."""
    if kind == "memory":
        memory = fsspec.filesystem("memory")
        memory.pipe_file(f"{memory_root}/in/scene.png", SCENE.read_bytes())
        memory.pipe_file(f"{memory_root}/in/mask.png", MASK.read_bytes())
        return f"memory://{memory_root}/in/scene.png", f"memory://{memory_root}/in/mask.png"
    folder = tmp_path / "in folder"  # a space, which a file:// URI carries percent-encoded
    folder.mkdir()
    (folder / "scene.png").write_bytes(SCENE.read_bytes())
    (folder / "mask.png").write_bytes(MASK.read_bytes())
    if kind == "file":
        return (folder / "scene.png").as_uri(), (folder / "mask.png").as_uri()
    return str(folder / "scene.png"), str(folder / "mask.png")


def output_for(kind: str, tmp_path: Path, memory_root: str) -> tuple[str, Callable[[str], str]]:
    """What a user of this kind writes as ``output_path``, and the stored path expected for an id."""
    out = tmp_path / "out"
    if kind == "local folder":
        return f"{out}/", lambda prediction_id: f"{out}/{prediction_id}.png"
    if kind == "file path":
        uri = (out / "filled.png").as_uri()
        return uri, lambda prediction_id: uri
    return (
        f"memory://{memory_root}/out/",
        lambda prediction_id: f"memory://{memory_root}/out/{prediction_id}.png",
    )


def read_back(kind: str, stored_path: str, tmp_path: Path) -> bytes:
    """The stored file as someone would read it afterwards, without the provider's code."""
    if kind == "memory folder":
        memory = fsspec.filesystem("memory")
        folder = stored_path.removeprefix("memory://").rsplit("/", 1)[0]
        assert memory.ls(folder, detail=False) == [stored_path.removeprefix("memory://")]
        return bytes(memory.cat_file(stored_path.removeprefix("memory://")))
    # Locally the output folder holds the output alone: no temporary .part file is left behind.
    assert [path.name for path in (tmp_path / "out").iterdir()] == [stored_path.rsplit("/", 1)[-1]]
    return (tmp_path / "out" / stored_path.rsplit("/", 1)[-1]).read_bytes()


@pytest.mark.parametrize("output_kind", ["local folder", "file path", "memory folder"])
@pytest.mark.parametrize("input_kind", ["local", "file", "memory"])
def test_round_trip_keeps_every_pixel_outside_the_mask(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, memory_root: str, input_kind: str, output_kind: str
):
    image, mask = place_inputs(input_kind, tmp_path, memory_root)
    output_path, expected_path = output_for(output_kind, tmp_path, memory_root)

    result = fill(image=image, mask=mask, output_path=output_path).execute(context())

    stored_path = expected_path(result["prediction_id"])
    stored = read_back(output_kind, stored_path, tmp_path)
    assert_result_describes(result, stored_path, stored)
    assert_filled_only_inside_the_mask(stored)
    assert eachlabs_conn.counters.uploads == 2


# --- s3:// against a real S3-compatible server ----------------------------------------------------


def require_s3_packages() -> None:
    """Skip, saying what to install, when the test extra's S3 packages are missing (make test has them).

    In CI (``EACHLABS_E2E_REQUIRED=1``) a missing package fails the run instead: a green CI must not
    hide S3 round trips that never ran.
    """
    import importlib

    why = "s3:// round trips need the test extra: pip install -e '.[test]'"
    for module, package in (
        ("moto.server", "moto with flask and flask-cors"),
        ("boto3", "boto3"),
        ("s3fs", "s3fs"),
        ("airflow.providers.amazon.aws.fs.s3", "apache-airflow-providers-amazon"),
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            message = f"{package} is not installed; {why}"
            if os.environ.get("EACHLABS_E2E_REQUIRED", "").strip().lower() in ("1", "true", "yes", "on"):
                pytest.fail(
                    f"S3 test prerequisite missing while EACHLABS_E2E_REQUIRED=1: {message}", pytrace=False
                )
            pytest.skip(message)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for this module's tests, stopped afterwards."""
    require_s3_packages()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def forget_s3_filesystems() -> None:
    """Drop the s3 filesystems Airflow and fsspec cache per process: each is bound to one endpoint."""
    from airflow.sdk.io.store import _STORE_CACHE
    from s3fs import S3FileSystem

    for alias in [alias for alias in _STORE_CACHE if alias.split("-", 1)[0] in ("s3", "s3a", "s3n")]:
        del _STORE_CACHE[alias]
    S3FileSystem.clear_instance_cache()


@pytest.fixture(params=["aws_default connection", "AWS environment"])
def s3(request: pytest.FixtureRequest, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bucket holding the sample image and mask under in/, reached as a user would configure it.

    ``aws_default connection``: the Airflow connection (here from AIRFLOW_CONN_AWS_DEFAULT, with the
    endpoint in its extra), named in the URI as ``s3://aws_default@bucket/...``, which is how
    ObjectStoragePath takes a conn_id from a plain string. ``AWS environment``: plain ``s3://bucket/...``
    URIs and boto's own credential chain (AWS_* variables, as an instance role would provide).
    Yields the URI prefix to use and a boto3 client to check the bucket with.
    """
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AIRFLOW_CONN_AWS_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "aws_default connection":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        connection = {
            "conn_type": "aws",
            "login": "conn-key-id",
            "password": "conn-secret",
            "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
        prefix = f"s3://aws_default@{BUCKET}"
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key-id")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
        prefix = f"s3://{BUCKET}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="checker",
        aws_secret_access_key="checker",
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="in/scene.png", Body=SCENE.read_bytes())
    client.put_object(Bucket=BUCKET, Key="in/mask.png", Body=MASK.read_bytes())
    forget_s3_filesystems()
    try:
        yield prefix, client
    finally:
        forget_s3_filesystems()
        for bucket in client.list_buckets()["Buckets"]:
            for item in client.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []):
                client.delete_object(Bucket=bucket["Name"], Key=item["Key"])
            client.delete_bucket(Bucket=bucket["Name"])


def test_s3_round_trip_reads_inputs_and_writes_the_output_to_the_bucket(
    eachlabs_conn: EachlabsSimulator, s3: tuple[str, Any]
):
    prefix, client = s3

    result = fill(
        image=f"{prefix}/in/scene.png", mask=f"{prefix}/in/mask.png", output_path=f"{prefix}/out/"
    ).execute(context())

    key = f"out/{result['prediction_id']}.png"
    assert [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]] == [key]
    stored_object = client.get_object(Bucket=BUCKET, Key=key)
    stored = stored_object["Body"].read()
    assert_result_describes(result, f"{prefix}/{key}", stored)
    assert_filled_only_inside_the_mask(stored)
    assert eachlabs_conn.counters.uploads == 2


def test_s3_output_to_a_missing_bucket_fails_before_anything_is_bought_and_creates_no_bucket(
    eachlabs_conn: EachlabsSimulator, s3: tuple[str, Any]
):
    from airflow.sdk.exceptions import AirflowFailException

    prefix, client = s3
    typo = prefix.replace(BUCKET, "bukcet")

    with pytest.raises(
        AirflowFailException,
        match=rf"Invalid output_path='{typo}/out/': cannot be written: the bucket 'bukcet' does not exist",
    ):
        fill(
            image=f"{prefix}/in/scene.png", mask=f"{prefix}/in/mask.png", output_path=f"{typo}/out/"
        ).execute(context())

    assert eachlabs_conn.counters.requests == 0
    assert [bucket["Name"] for bucket in client.list_buckets()["Buckets"]] == [BUCKET]


def test_s3_output_without_credentials_fails_before_anything_is_bought(
    eachlabs_conn: EachlabsSimulator, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """No AWS credentials anywhere: the Amazon provider would go anonymous, which cannot write."""
    from airflow.sdk.exceptions import AirflowFailException

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AIRFLOW_CONN_AWS_DEFAULT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    forget_s3_filesystems()
    try:
        with pytest.raises(
            AirflowFailException,
            match=r"Invalid output_path='s3://bucket/filled/': cannot be written: no credentials were found",
        ) as caught:
            fill(output_path="s3://bucket/filled/").execute(context())
    finally:
        forget_s3_filesystems()
    assert str(caught.value).endswith(
        "name a connection in the URI (s3://<conn_id>@bucket/...) or configure the worker's credentials"
    )
    assert eachlabs_conn.counters.requests == 0


def test_s3_missing_input_fails_naming_the_field_before_any_request(
    eachlabs_conn: EachlabsSimulator, s3: tuple[str, Any]
):
    from airflow.sdk.exceptions import AirflowFailException

    prefix, _ = s3
    with pytest.raises(AirflowFailException, match=r"Invalid mask='s3://.*/in/nope\.png': no file exists"):
        fill(image=f"{prefix}/in/scene.png", mask=f"{prefix}/in/nope.png").execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_a_bucket_gone_before_the_write_is_not_created_by_it(s3: tuple[str, Any]):
    """The storage went away after the check: the write fails (the next try stores the output)
    instead of creating a bucket under the name it was given."""
    from airflow_provider_eachlabs.storage import write_atomically

    prefix, client = s3
    with pytest.raises(Exception):  # noqa: B017 -- the S3 library's own error
        write_atomically(f"{prefix.replace(BUCKET, 'gone')}/out/p1.png", b"image bytes")
    assert [bucket["Name"] for bucket in client.list_buckets()["Buckets"]] == [BUCKET]
