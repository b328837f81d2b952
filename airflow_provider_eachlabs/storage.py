"""Files in and out: inputs that are not URLs are uploaded, outputs are stored before their URL expires.

Inputs: a local path, a ``file://`` URI or any ``ObjectStoragePath`` URI (``s3://``, ``memory://``,
...) is read, recognised from its bytes (never its name) and uploaded through
``/v1/upload/presign``. Outputs: downloaded as soon as the prediction succeeds, checked, and written
under a temporary name then renamed, so a failure leaves no half-written file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_eachlabs.imageinfo import ImageInfo, read_image_info
from airflow_provider_eachlabs.inputs import EachlabsInputError

if TYPE_CHECKING:
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

# Schemes of the Amazon, Google and Azure providers' filesystems, where a path's first part is a bucket
# (or container) that only an administrator should create.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "adl", "az"})


def read_source(field: str, source: str) -> bytes:
    """The bytes of a local path, ``file://`` URI or object-storage URI, or an error naming the field."""
    try:
        if "://" not in source:
            return Path(source).expanduser().read_bytes()
        parts = urlsplit(source)
        if parts.scheme == "file":
            return Path(unquote(parts.path)).read_bytes()
        from airflow.sdk import ObjectStoragePath

        return bytes(ObjectStoragePath(source).read_bytes())
    except FileNotFoundError:
        raise EachlabsInputError(field, source, "no file exists at this path") from None
    except IsADirectoryError:
        raise EachlabsInputError(field, source, "is a folder, not an image file") from None
    except (OSError, ValueError) as error:
        raise EachlabsInputError(field, source, f"cannot be read ({error})") from None


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


def load_image(field: str, source: str) -> ImageFile:
    """Read a file input and check that its bytes are an image the model page accepts."""
    content = read_source(field, source)
    info = read_image_info(content)
    if info is None:
        raise EachlabsInputError(field, source, "must be a JPEG, PNG or WebP image (its bytes are not)")
    return ImageFile(field, source, content, info)


def check_fill_inputs(image: ImageFile | None, mask: ImageFile | None, mask_given: bool) -> None:
    """What the model page asks of a local image and mask, checked before anything is uploaded.

    Only files read here can be checked; a URL input is the API's to check.
    """
    if image is not None and mask is not None:
        size, mask_size = (image.info.width, image.info.height), (mask.info.width, mask.info.height)
        if size != mask_size:
            raise EachlabsInputError(
                "mask",
                mask.source,
                f"must have the image's size {size[0]}x{size[1]} (it is {mask_size[0]}x{mask_size[1]})",
            )
    if image is not None and not mask_given and not image.info.has_alpha:
        raise EachlabsInputError(
            "mask",
            None,
            f"is required: the image {image.source!r} has no alpha channel to mark the region to fill",
        )


def upload_image(hook: EachlabsHook, image: ImageFile, uploaded: MutableMapping[str, str]) -> str:
    """Upload a file input and return its public URL.

    ``uploaded`` maps a file's sha256 to the URL of an earlier upload of the same bytes: the operator
    keeps it across task retries, so a retry does not upload the same image again.
    """
    digest = image.sha256
    if digest not in uploaded:
        uploaded[digest] = hook.upload_bytes(image.content, image.info.content_type)
        hook.log.info("Uploaded %s (%d bytes) to %s", image.field, len(image.content), uploaded[digest])
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


def output_target(output_path: str, prediction_id: str, extension: str) -> str:
    """A folder-like path (trailing slash, or an existing folder) gets ``<prediction id>.<ext>``."""
    is_folder = output_path.endswith("/") or ("://" not in output_path and os.path.isdir(output_path))
    if is_folder:
        return f"{output_path.rstrip('/')}/{prediction_id}.{extension}"
    return output_path


def store_output(content: bytes, target: str, expected_format: str | None) -> StoredOutput:
    """Check the image and write it; local files are renamed into place, object stores PUT whole."""
    info = read_image_info(content)
    if info is None or (expected_format and info.kind != expected_format):
        raise EachlabsInputError(
            "output", target, f"the downloaded output is not a {expected_format or 'known'} image"
        )
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
    local = Path(unquote(parts.path) if parts.scheme == "file" else target).expanduser()
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


def write_preview(target: str, before: bytes, mask: bytes | None, after: bytes) -> str:
    """A before | mask | after strip, as one PNG, for people to look at."""
    from io import BytesIO

    from PIL import Image

    def load(content: bytes) -> Image.Image:
        with Image.open(BytesIO(content)) as image:
            return image.convert("RGB")

    after_image = load(after)
    before_image = load(before).resize(after_image.size)
    if mask is not None:
        mask_image = load(mask).resize(after_image.size)
    else:
        with Image.open(BytesIO(before)) as original:
            alpha = original.convert("RGBA").getchannel("A").resize(after_image.size)
        mask_image = Image.eval(alpha, lambda value: 255 - value).convert("RGB")
    gap = 8
    width, height = after_image.size
    strip = Image.new("RGB", (3 * width + 2 * gap, height), "white")
    for index, image in enumerate((before_image, mask_image, after_image)):
        strip.paste(image, (index * (width + gap), 0))
    buffer = BytesIO()
    strip.save(buffer, format="PNG")
    write_atomically(target, buffer.getvalue())
    return target


def _umask() -> int:
    """The process umask (read by setting it, the only portable way), for the mode mkstemp forgets."""
    current = os.umask(0)
    os.umask(current)
    return current
