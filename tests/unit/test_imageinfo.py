"""Header reading of the three formats the model page accepts, checked against Pillow's own files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from airflow_provider_eachlabs.imageinfo import ImageInfo, read_image_info


def encode(mode: str, size: tuple[int, int], fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, "red" if mode != "P" else 1)
    if mode == "P":
        options.setdefault("transparency", 0)
    if mode == "RGBA":
        image.putpixel((0, 0), (0, 0, 0, 0))  # an encoder drops an alpha channel that is all opaque
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt", "options", "expected"),
    [
        ("RGB", "PNG", {}, ImageInfo("png", 37, 21, False)),
        ("RGBA", "PNG", {}, ImageInfo("png", 37, 21, True)),
        ("LA", "PNG", {}, ImageInfo("png", 37, 21, True)),
        ("P", "PNG", {}, ImageInfo("png", 37, 21, True)),
        ("L", "PNG", {}, ImageInfo("png", 37, 21, False)),
        ("RGB", "JPEG", {}, ImageInfo("jpg", 37, 21, False)),
        ("RGB", "JPEG", {"progressive": True}, ImageInfo("jpg", 37, 21, False)),
        ("RGB", "WEBP", {"lossless": False}, ImageInfo("webp", 37, 21, False)),
        ("RGB", "WEBP", {"lossless": True}, ImageInfo("webp", 37, 21, False)),
        ("RGBA", "WEBP", {"lossless": True}, ImageInfo("webp", 37, 21, True)),
        ("RGBA", "WEBP", {"lossless": False}, ImageInfo("webp", 37, 21, True)),
    ],
)
def test_format_size_and_alpha_from_the_header(
    mode: str, fmt: str, options: dict[str, object], expected: ImageInfo
):
    assert read_image_info(encode(mode, (37, 21), fmt, **options)) == expected


@pytest.mark.parametrize(
    "content", [b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8Z", b"hello"]
)
def test_anything_else_is_not_an_image(content: bytes):
    assert read_image_info(content) is None


def test_content_type_follows_the_format():
    assert read_image_info(encode("RGB", (4, 4), "JPEG")).content_type == "image/jpeg"  # type: ignore[union-attr]
