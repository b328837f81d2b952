"""``EachlabsHook.upload_file`` over real HTTP against the simulator: a local path, a ``file://`` URI
and object storage each upload the file's own bytes; what is not an image is refused before any
request, as the operators refuse it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_provider_eachlabs.exceptions import EachlabsInputError, is_final
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import ROOT

SCENE = ROOT / "example_dags" / "data" / "scene.png"


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A folder of fsspec's in-process memory filesystem, removed afterwards."""
    root = f"/eachlabs-upload-{uuid.uuid4().hex}"
    yield root
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


def _local(path: Path, root: str) -> Any:
    return str(path)


def _path_object(path: Path, root: str) -> Any:
    return path


def _file_uri(path: Path, root: str) -> Any:
    return path.as_uri()


def _memory_uri(path: Path, root: str) -> Any:
    fsspec.filesystem("memory").pipe_file(f"{root}/{path.name}", path.read_bytes())
    return f"memory://{root}/{path.name}"


def _memory_object(path: Path, root: str) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(_memory_uri(path, root))


SOURCES: dict[str, Callable[[Path, str], Any]] = {
    "local path": _local,
    "pathlib.Path": _path_object,
    "file:// URI": _file_uri,
    "memory:// URI": _memory_uri,
    "ObjectStoragePath": _memory_object,
}


@pytest.mark.parametrize("kind", SOURCES)
def test_upload_file_serves_the_files_own_bytes(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, memory_root: str, kind: str
):
    path = tmp_path / "scene.png"
    path.write_bytes(SCENE.read_bytes())
    hook = EachlabsHook()

    public_url = hook.upload_file(SOURCES[kind](path, memory_root))

    assert public_url.startswith(f"{eachlabs_conn.base_url}/files/uploads/")
    download = hook.download(public_url)
    assert download.content == SCENE.read_bytes()
    assert download.content_type == "image/png"
    assert (eachlabs_conn.counters.presigns, eachlabs_conn.counters.uploads) == (1, 1)


def test_the_type_comes_from_the_bytes_not_the_name(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    """A PNG named ``.jpg`` is uploaded as the PNG it is."""
    path = tmp_path / "scene.jpg"
    path.write_bytes(SCENE.read_bytes())
    download = EachlabsHook().download(EachlabsHook().upload_file(path))
    assert download.content_type == "image/png" and download.content == SCENE.read_bytes()


@pytest.mark.parametrize("name", ["notes.txt", "notes.png"])
def test_a_text_file_is_refused_naming_field_value_and_rule_and_nothing_is_uploaded(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, name: str
):
    path = tmp_path / name
    path.write_text("not an image\n")

    with pytest.raises(EachlabsInputError) as caught:
        EachlabsHook().upload_file(str(path))

    assert str(caught.value) == (
        f"Invalid source={str(path)!r}: must be a JPEG, PNG or WebP image (its bytes are not)"
    )
    assert (caught.value.field, caught.value.value) == ("source", str(path))
    assert is_final(caught.value)
    assert (eachlabs_conn.counters.presigns, eachlabs_conn.counters.uploads) == (0, 0)
    assert eachlabs_conn.counters.requests == 0


def test_the_error_names_the_field_the_caller_gives(eachlabs_conn: EachlabsSimulator, memory_root: str):
    fsspec.filesystem("memory").pipe_file(f"{memory_root}/mask.png", b"GIF89a not ours")
    with pytest.raises(EachlabsInputError, match=r"^Invalid mask='memory://.*/mask\.png': must be a JPEG"):
        EachlabsHook().upload_file(f"memory://{memory_root}/mask.png", field="mask")
    assert eachlabs_conn.counters.requests == 0


@pytest.mark.parametrize(
    ("where", "rule"),
    [("missing.png", "no file exists at this path"), ("", "is a folder, not an image file")],
)
def test_a_missing_file_or_a_folder_is_refused_before_any_request(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, where: str, rule: str
):
    source = str(tmp_path / where) if where else str(tmp_path)
    with pytest.raises(EachlabsInputError, match=rf"^Invalid source={source!r}: {rule}$"):
        EachlabsHook().upload_file(source)
    assert eachlabs_conn.counters.requests == 0


def test_a_missing_object_is_refused_naming_its_uri(eachlabs_conn: EachlabsSimulator, memory_root: str):
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"memory://{memory_root}/gone.png")
    with pytest.raises(EachlabsInputError) as caught:
        EachlabsHook().upload_file(path)
    assert str(caught.value) == f"Invalid source={str(path)!r}: no file exists at this path"
    assert eachlabs_conn.counters.requests == 0
