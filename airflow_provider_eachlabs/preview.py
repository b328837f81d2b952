"""The before | mask | after strip people look at, drawn with Pillow from bytes already checked.

A small PNG can claim a canvas of billions of pixels and make Pillow allocate gigabytes, so every
image's size is read from its header and refused beyond ``MAX_DECODE_PIXELS`` before any pixel is
decoded.
"""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING

from airflow_provider_eachlabs.exceptions import EachlabsOutputError
from airflow_provider_eachlabs.imageinfo import MAX_DECODE_PIXELS, read_image_info
from airflow_provider_eachlabs.storage import write_atomically

if TYPE_CHECKING:
    from PIL import Image

_GAP = 8


def write_preview(target: str, before: bytes, mask: bytes | None, after: bytes) -> str:
    """Write the strip as one PNG to ``target`` (local or object storage) and return ``target``."""
    for name, content in (("image", before), ("mask", mask), ("output", after)):
        if content is not None:
            _check_size(name, content)
    after_image = _load(after)
    before_image = _load(before).resize(after_image.size)
    mask_image = _mask_image(before, mask, after_image.size)
    width, height = after_image.size
    strip = _new_strip(3 * width + 2 * _GAP, height)
    for index, image in enumerate((before_image, mask_image, after_image)):
        strip.paste(image, (index * (width + _GAP), 0))
    buffer = BytesIO()
    strip.save(buffer, format="PNG")
    write_atomically(target, buffer.getvalue())
    return target


def _check_size(name: str, content: bytes) -> None:
    info = read_image_info(content)
    if info is None:
        raise EachlabsOutputError(f"cannot draw the preview: the {name} is not a JPEG, PNG or WebP image")
    if info.width * info.height > MAX_DECODE_PIXELS:
        raise EachlabsOutputError(
            f"cannot draw the preview: the {name} claims {info.width}x{info.height} pixels, more than "
            f"the preview's limit of {MAX_DECODE_PIXELS:,}"
        )


def _load(content: bytes) -> Image.Image:
    from PIL import Image

    with Image.open(BytesIO(content)) as image:
        return image.convert("RGB")


def _mask_image(before: bytes, mask: bytes | None, size: tuple[int, int]) -> Image.Image:
    """The mask as given, or the image's alpha channel read as one (transparent = filled)."""
    from PIL import Image

    if mask is not None:
        return _load(mask).resize(size)
    with Image.open(BytesIO(before)) as original:
        alpha = original.convert("RGBA").getchannel("A").resize(size)
    return Image.eval(alpha, lambda value: 255 - value).convert("RGB")


def _new_strip(width: int, height: int) -> Image.Image:
    from PIL import Image

    return Image.new("RGB", (width, height), "white")
