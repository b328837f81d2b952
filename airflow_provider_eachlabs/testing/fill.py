"""A real, deterministic inpainting stand-in for flux-fill-pro, built on Pillow alone.

The provider's tests need an output that is provably derived from the inputs (pixels outside the
mask untouched, pixels inside pulled from their surroundings), not a canned file, so that a
pipeline that mixes up image and mask, or drops the mask, fails visibly. A push-pull pyramid fill
gives that in a few milliseconds without numpy: Pillow's BOX resize of an RGBA image averages
colours weighted by alpha (it premultiplies internally), which is exactly the "pull" step.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops

__all__ = ["FillError", "fill_image"]

# Amplitude (+/-) of the seeded texture added inside the mask. Small enough to keep filled pixels
# close to their surroundings, large enough that a different seed changes the bytes.
NOISE_AMPLITUDE = 3


class FillError(ValueError):
    """The inputs cannot be filled; the message is shown to the user as the prediction's error."""


def _binary(mask: Image.Image) -> Image.Image:
    """White (>= 128) means fill, as on the model page; anything else is kept."""
    return mask.point(lambda v: 255 if v >= 128 else 0)


def _load(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:
        raise FillError(f"{what} is not a readable image: {exc}") from exc
    return img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def _push_pull(rgb: Image.Image, keep: Image.Image) -> Image.Image:
    """Colour for every pixel interpolated from the kept pixels (only the fill region is used)."""
    levels: list[Image.Image] = []
    level = rgb.convert("RGBA")
    level.putalpha(keep)
    levels.append(level)
    while level.size != (1, 1):
        w, h = level.size
        level = level.resize((max(1, (w + 1) // 2), max(1, (h + 1) // 2)), Image.Resampling.BOX)
        levels.append(level)
    # Coarse to fine: trust a level's own average where enough of it was known, else the coarser
    # estimate. Boosting coverage x4 keeps edges sharp where only a few known pixels contribute.
    current = levels[-1].convert("RGB")
    for level in reversed(levels[:-1]):
        up = current.resize(level.size, Image.Resampling.BILINEAR)
        trust = level.getchannel("A").point(lambda a: min(255, a * 4))
        current = Image.composite(level.convert("RGB"), up, trust)
    return current


def _texture(size: tuple[int, int], seed: int) -> Image.Image:
    """Deterministic per-seed noise centred on 128, as an RGB image for ImageChops.add."""
    w, h = size
    rng = random.Random(seed)
    # Coarser noise (1/2 resolution) looks like texture rather than sensor noise and is 4x cheaper.
    nw, nh = max(1, (w + 1) // 2), max(1, (h + 1) // 2)
    lut = [128 - NOISE_AMPLITUDE + (v * (2 * NOISE_AMPLITUDE + 1)) // 256 for v in range(256)]
    bands = [Image.frombytes("L", (nw, nh), rng.randbytes(nw * nh)).point(lut) for _ in range(3)]
    return Image.merge("RGB", bands).resize(size, Image.Resampling.NEAREST)


def fill_image(
    image_bytes: bytes,
    mask_bytes: bytes | None,
    *,
    output_format: str = "jpg",
    seed: int | None = None,
) -> bytes:
    """Fill the masked region of an image and encode it as the model would deliver it.

    With no mask the image's transparent pixels (alpha < 128) are the region, the "alpha mask"
    case of the model page. Pixels outside the region are bit-exact in PNG output.
    Raises FillError for unreadable images, size mismatches, or a missing region.
    """
    if output_format not in ("jpg", "png"):
        raise FillError(f"unsupported output_format {output_format!r}")
    img = _load(image_bytes, "image")
    if mask_bytes is not None:
        mask_img = _load(mask_bytes, "mask")
        if mask_img.size != img.size:
            raise FillError(
                f"mask size {mask_img.size[0]}x{mask_img.size[1]} does not match "
                f"image size {img.size[0]}x{img.size[1]}"
            )
        region = _binary(mask_img.convert("L"))
        base = img.convert("RGBA") if _has_alpha(img) else img.convert("RGB")
    else:
        if not _has_alpha(img):
            raise FillError("no mask given and the image has no alpha channel to use as the mask")
        base = img.convert("RGBA")
        region = _binary(ImageChops.invert(base.getchannel("A")))

    rgb = base.convert("RGB")
    keep = ImageChops.invert(region)
    if keep.getbbox() is None:
        # Nothing to pull colour from: a neutral grey keeps the result deterministic.
        filled = Image.new("RGB", rgb.size, (128, 128, 128))
    elif region.getbbox() is None:
        filled = rgb
    else:
        filled = _push_pull(rgb, keep)
    textured = ImageChops.add(filled, _texture(rgb.size, 0 if seed is None else seed), 1.0, -128)
    out_rgb = Image.composite(textured, rgb, region)

    buf = io.BytesIO()
    if output_format == "png":
        if base.mode == "RGBA":
            # Filled pixels become opaque; kept pixels keep their own alpha.
            alpha = ImageChops.lighter(base.getchannel("A"), region)
            out_rgb.putalpha(alpha)
            out_rgb = Image.composite(out_rgb, base, region)
        out_rgb.save(buf, format="PNG")
    else:
        out_rgb.save(buf, format="JPEG", quality=95)
    return buf.getvalue()
