"""The mask an image's alpha channel stands for, sent explicitly with the image.

The model page marks ``mask`` "Required: Yes", and also says it is optional when the image carries an
alpha mask. A request that leaves it out is valid under the second reading only, and a stricter API
would answer 400. So when the image has an alpha channel and no mask is given, the provider derives
the mask from the alpha channel (transparent is filled: white; opaque is kept: black) and uploads it
like any mask: the request is valid under both readings, and fills the same region.
"""

from __future__ import annotations

from io import BytesIO

from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.imageinfo import MAX_DECODE_PIXELS, read_image_info
from airflow_provider_eachlabs.storage import ImageFile


def mask_from_alpha(image: ImageFile) -> ImageFile:
    """A greyscale PNG of the image's size: 255 minus its alpha, pixel for pixel."""
    if not image.info.has_alpha:
        raise EachlabsInputError(
            "mask",
            None,
            f"is required: the image {image.source!r} has no alpha channel to mark the region to fill",
        )
    if image.info.width * image.info.height > MAX_DECODE_PIXELS:
        raise EachlabsInputError(
            "image",
            image.source,
            f"is {image.info.width}x{image.info.height}: too large to read its alpha channel as a mask "
            f"(at most {MAX_DECODE_PIXELS:,} pixels); pass a mask",
        )
    from PIL import Image, ImageChops

    with Image.open(BytesIO(image.content)) as opened:
        alpha = opened.convert("RGBA").getchannel("A")
    buffer = BytesIO()
    ImageChops.invert(alpha).save(buffer, format="PNG")
    content = buffer.getvalue()
    info = read_image_info(content)
    assert info is not None  # Pillow just wrote it
    return ImageFile("mask", f"the alpha channel of {image.source}", content, info)
