"""Files in and out: inputs that are not URLs are uploaded, outputs are stored before their URL expires.

Inputs: a local path, a ``file://`` URI or any ``ObjectStoragePath`` URI (``s3://``, ``memory://``,
...) is read, recognised from its bytes (never its name) and uploaded through
``/v1/upload/presign``. Outputs: downloaded as soon as the prediction succeeds, checked, and written
under a temporary name then renamed, so a failure leaves no half-written file behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote, urlsplit

from airflow_provider_eachlabs.exceptions import (
    EachlabsInputError,
    EachlabsOutputError,
    EachlabsUnsafeAnswerError,
)
from airflow_provider_eachlabs.imageinfo import ImageInfo, is_whole_image, read_image_info

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# A file input as a DAG or a task names it: a local path (``str`` or ``Path``), a ``file://`` URI, an
# object-storage URI, or an ``ObjectStoragePath`` (read with its own connection and storage options).
FileSource: TypeAlias = "str | os.PathLike[str] | ObjectStoragePath"

# The stem of a stored output's name: a prediction id or a batch item's key, never a path.
FILE_STEM_RULE = "must be 1 to 128 letters, digits, '.', '-' or '_', not starting with '.' and without '..'"
_FILE_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

# Schemes of the Amazon, Google and Azure providers' filesystems, where a path's first part is a bucket
# (or container) that only an administrator should create.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "adl", "az"})


def read_source(field: str, source: FileSource) -> bytes:
    """The bytes of a local path, ``file://`` URI or object-storage URI, or an error naming the field."""
    if not isinstance(source, str | os.PathLike):  # an ObjectStoragePath, its storage options kept
        try:
            return bytes(source.read_bytes())
        except Exception as error:
            raise _unreadable(field, source_text(source), error) from None
    source = os.fspath(source)
    try:
        if "://" not in source:
            return Path(source).expanduser().read_bytes()
        parts = urlsplit(source)
        if parts.scheme == "file":
            return Path(unquote(parts.path)).read_bytes()
        from airflow.sdk import ObjectStoragePath

        return bytes(ObjectStoragePath(source).read_bytes())
    except Exception as error:
        raise _unreadable(field, source, error) from None


def source_text(source: FileSource) -> str:
    """A file input as messages and logs name it: the path or URI as written."""
    return os.fspath(source) if isinstance(source, os.PathLike) else str(source)


def _unreadable(field: str, source: str, error: Exception) -> EachlabsInputError:
    if isinstance(error, FileNotFoundError):
        return EachlabsInputError(field, source, "no file exists at this path")
    if isinstance(error, IsADirectoryError):
        return EachlabsInputError(field, source, "is a folder, not an image file")
    # Each storage library has its own errors (credentials, buckets, ...).
    return EachlabsInputError(field, source, f"cannot be read ({reason(error)})")


def reason(error: Exception) -> str:
    """A storage library's reason in one line: its class and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


@dataclass(frozen=True)
class ImageFile:
    """A file input read and recognised, ready to upload."""

    field: str
    source: str
    content: bytes
    info: ImageInfo

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def load_image(field: str, source: FileSource) -> ImageFile:
    """Read a file input and check that its bytes are an image the model page accepts.

    The operators and ``EachlabsHook.upload_file`` all read their files here: the type comes from
    the bytes, never the name, so a ``.png`` that is really a text file is refused before upload.
    """
    content = read_source(field, source)
    info = read_image_info(content)
    if info is None:
        raise EachlabsInputError(
            field, source_text(source), "must be a JPEG, PNG or WebP image (its bytes are not)"
        )
    return ImageFile(field, source_text(source), content, info)


def check_fill_inputs(image: ImageFile | None, mask: ImageFile) -> None:
    """What the model page asks of an image and its mask read here: the same size, checked before
    anything is uploaded. A URL image that was not read is the API's to check."""
    if image is not None:
        size, mask_size = (image.info.width, image.info.height), (mask.info.width, mask.info.height)
        if size != mask_size:
            raise EachlabsInputError(
                "mask",
                mask.source,
                f"must have the image's size {size[0]}x{size[1]} (it is {mask_size[0]}x{mask_size[1]})",
            )


def upload_image(
    upload: Callable[[bytes, str], str], image: ImageFile, uploaded: MutableMapping[str, str], log: Any
) -> str:
    """Upload a file input with ``upload(content, content_type)`` and return its public URL.

    ``uploaded`` maps a file's sha256 to the URL of an earlier upload of the same bytes: the operator
    keeps it across task retries, so a retry does not upload the same image again.
    """
    digest = image.sha256
    if digest not in uploaded:
        uploaded[digest] = upload(image.content, image.info.content_type)
        log.info("Uploaded %s (%d bytes) to %s", image.field, len(image.content), uploaded[digest])
    return uploaded[digest]


@dataclass(frozen=True)
class StoredOutput:
    """Where an output landed and what it is: the XCom result carries these fields."""

    path: str
    bytes: int
    sha256: str
    content_type: str
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored_path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
        }


def check_file_stem(stem: str) -> bool:
    """Whether ``stem`` can name a file inside a folder and nothing else (see ``FILE_STEM_RULE``)."""
    return bool(_FILE_STEM.fullmatch(stem)) and ".." not in stem


def is_folder_like(output_path: str) -> bool:
    """A trailing slash, or an existing local folder: outputs are named inside it."""
    return output_path.endswith("/") or (_is_local(output_path) and _local_path(output_path).is_dir())


def output_target(output_path: str, stem: str, extension: str) -> str:
    """Where an output goes: a folder-like path gets ``<stem>.<extension>`` inside it; any other path
    is the file itself.

    The stem comes from the API (a prediction id) or a DAG (``output_name``), so it must be a plain
    name, and the final path must lie inside the folder: nothing an answer says can write elsewhere.
    """
    if not check_file_stem(stem):
        raise EachlabsUnsafeAnswerError(
            f"refusing to name an output file {stem[:80]!r}: a name {FILE_STEM_RULE}"
        )
    if not is_folder_like(output_path):
        return output_path
    target = f"{output_path.rstrip('/')}/{stem}.{extension}"
    if _is_local(output_path) and _local_path(target).resolve().parent != _local_path(output_path).resolve():
        raise EachlabsUnsafeAnswerError(
            f"refusing to write {target}: it is not inside output_path {output_path!r}"
        )
    return target


def check_writable(field: str, output_path: str) -> None:
    """Refuse, before anything is uploaded or bought, a place an output could not be written to.

    Local: the nearest existing folder must be a writable folder. Object storage: the scheme must
    have a filesystem, credentials must resolve (the Amazon provider falls back to anonymous access,
    which cannot write to a bucket), and the bucket must exist, checked with one metadata request:
    nothing is written and no bucket is created.
    """
    try:
        problem = (
            _local_problem(output_path) if _is_local(output_path) else _object_storage_problem(output_path)
        )
    except Exception as error:
        problem = reason(error)
    if problem:
        raise EachlabsInputError(field, output_path, f"cannot be written: {problem}")


def _local_problem(output_path: str) -> str | None:
    path = _local_path(output_path)
    folder = path if is_folder_like(output_path) else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable by this worker"
    return None


def _object_storage_problem(output_path: str) -> str | None:
    from airflow.sdk import ObjectStoragePath

    parts = urlsplit(output_path)
    path = ObjectStoragePath(output_path)
    if parts.scheme not in _BUCKET_SCHEMES:
        path.exists()  # the scheme's filesystem answers (or raises what is wrong)
        return None
    if getattr(path.fs, "anon", False):
        return (
            f"no credentials were found for {parts.scheme}:// (anonymous access cannot write to a bucket): "
            f"name a connection in the URI ({parts.scheme}://<conn_id>@{path.bucket}/...) or configure the "
            "worker's credentials"
        )
    if not ObjectStoragePath(f"{parts.scheme}://{parts.netloc}/").exists():
        return f"the bucket {path.bucket!r} does not exist or cannot be seen with these credentials"
    return None


def _is_local(path: str) -> bool:
    return "://" not in path or urlsplit(path).scheme == "file"


def _local_path(path: str) -> Path:
    parts = urlsplit(path)
    return Path(unquote(parts.path) if parts.scheme == "file" else path).expanduser()


def check_output(content: bytes, expected_format: str | None, where: str) -> ImageInfo:
    """The downloaded output's facts, once its bytes are a whole image of the expected format."""
    info = read_image_info(content)
    if info is None or not is_whole_image(content, info):
        raise EachlabsOutputError(
            f"the output {where} is not a whole JPEG, PNG or WebP image; nothing was stored"
        )
    if expected_format and info.kind != expected_format:
        raise EachlabsOutputError(
            f"the output {where} is a {info.kind} image, not the {expected_format} asked for; "
            "nothing was stored"
        )
    return info


def store_output(content: bytes, info: ImageInfo, target: str) -> StoredOutput:
    """Write a checked output; local files are renamed into place, object stores PUT whole."""
    write_atomically(target, content)
    return StoredOutput(
        path=target,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content_type=info.content_type,
        width=info.width,
        height=info.height,
    )


def write_atomically(target: str, content: bytes) -> None:
    """Write ``content`` to a local path, ``file://`` or object-storage URI, never leaving half a file.

    Bucket stores get no ``mkdir``: their keys need no folders, and their ``mkdir`` creates a missing
    bucket, so a typo in the bucket name would write into a new bucket instead of failing.
    """
    parts = urlsplit(target)
    if "://" in target and parts.scheme != "file":
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(target)
        if parts.scheme not in _BUCKET_SCHEMES:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return
    local = _local_path(target)
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, local)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting it, the only portable way), for the mode mkstemp forgets."""
    current = os.umask(0)
    os.umask(current)
    return current
