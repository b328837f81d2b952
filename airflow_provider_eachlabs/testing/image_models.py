"""The simulator's two simple image models, real work with Pillow: an upscale and a description.

They give the generic operator something that is not flux-fill-pro: a model whose output is a list
of file URLs, and one whose output is an object with text.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageStat

__all__ = ["describe_image", "upscale_image"]


def upscale_image(data: bytes, scale: int) -> bytes:
    """The image ``scale`` times larger, as PNG."""
    with Image.open(io.BytesIO(data)) as image:
        bigger = image.convert("RGBA").resize(
            (image.width * scale, image.height * scale), Image.Resampling.LANCZOS
        )
    buffer = io.BytesIO()
    bigger.save(buffer, format="PNG")
    return buffer.getvalue()


def describe_image(data: bytes, max_words: int) -> dict[str, Any]:
    """A short, deterministic description: size and mean colour, cut to ``max_words`` words."""
    with Image.open(io.BytesIO(data)) as image:
        red, green, blue = (round(v) for v in ImageStat.Stat(image.convert("RGB")).mean)
        width, height = image.size
    words = f"an image of {width} by {height} pixels whose mean colour is rgb {red} {green} {blue}".split()
    return {"text": " ".join(words[:max_words]), "width": width, "height": height}
