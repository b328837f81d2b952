"""Format, size and alpha of a JPEG, PNG or WebP file, read from its header alone.

The provider checks inputs (a mask of the image's size, an alpha channel when no mask is given) and
describes outputs (width, height) without decoding pixels and without requiring Pillow, which only
the simulator and the preview need.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# The most pixels an image may claim before the provider decodes it (Pillow would allocate for all
# of them): ten times flux-fill-pro's largest output, about 160 MB of RGBA.
MAX_DECODE_PIXELS = 40_000_000
_JPEG_SIZE_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format as the model page names it, size in pixels, alpha channel."""

    kind: str
    width: int
    height: int
    has_alpha: bool

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]


def read_image_info(content: bytes) -> ImageInfo | None:
    """The header's facts, or None when the bytes are not a JPEG, PNG or WebP image."""
    try:
        if content.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(content)
        if content.startswith(b"\xff\xd8\xff"):
            return _jpeg(content)
        if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
            return _webp(content)
    except (struct.error, IndexError):
        return None
    return None


def is_whole_image(content: bytes, info: ImageInfo) -> bool:
    """Whether the file's structure holds from its header to its last byte.

    A header alone proves little: a file that starts like an image can carry anything after it. A
    PNG's chunks must run cleanly to ``IEND`` at the very end, a JPEG must end with its end marker,
    and a WebP's RIFF size must be the file's size.
    """
    try:
        if info.kind == "png":
            return _png_chunks_end_at_iend(content)
        if info.kind == "jpg":
            return content.rstrip(b"\0").endswith(b"\xff\xd9")
        riff_size = int.from_bytes(content[4:8], "little")
        return len(content) in (riff_size + 8, riff_size + 8 + (riff_size & 1))
    except (struct.error, IndexError):
        return False


def _png_chunks_end_at_iend(content: bytes) -> bool:
    position = 8
    while position + 12 <= len(content):
        length = int.from_bytes(content[position : position + 4], "big")
        kind = content[position + 4 : position + 8]
        if not kind.isalpha():
            return False
        position += 12 + length
        if kind == b"IEND":
            return position == len(content)
    return False


def _png(content: bytes) -> ImageInfo | None:
    if content[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", content[16:24])
    colour_type = content[25]
    return ImageInfo("png", width, height, colour_type in (4, 6) or b"tRNS" in content[:4096])


def _jpeg(content: bytes) -> ImageInfo | None:
    position = 2
    while position + 9 < len(content):
        if content[position] != 0xFF:
            return None
        marker = content[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        (length,) = struct.unpack(">H", content[position + 2 : position + 4])
        if marker in _JPEG_SIZE_MARKERS:
            height, width = struct.unpack(">HH", content[position + 5 : position + 9])
            return ImageInfo("jpg", width, height, False)
        position += 2 + length
    return None


def _webp(content: bytes) -> ImageInfo | None:
    chunk = content[12:16]
    if chunk == b"VP8X":
        has_alpha = bool(content[20] & 0x10)
        width = 1 + int.from_bytes(content[24:27], "little")
        height = 1 + int.from_bytes(content[27:30], "little")
        return ImageInfo("webp", width, height, has_alpha)
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", content[21:25])
        return ImageInfo("webp", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool((bits >> 28) & 1))
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", content[26:30])
        return ImageInfo("webp", width & 0x3FFF, height & 0x3FFF, False)
    return None
