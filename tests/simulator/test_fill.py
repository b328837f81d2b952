"""The flux-fill-pro fill: real pixels, deterministic, fast."""

from __future__ import annotations

import io
import time

from PIL import Image, ImageStat

from airflow_provider_eachlabs.testing.fill import FillError, fill_image

from .conftest import Api, gradient, png_bytes, square_mask

BOX = (40, 30, 80, 60)


def _img(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _ring_mean(img: Image.Image, box: tuple[int, int, int, int], margin: int = 3) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    ring = Image.new("L", img.size, 0)
    ring.paste(255, (x0 - margin, y0 - margin, x1 + 1 + margin, y1 + 1 + margin))
    ring.paste(0, (x0, y0, x1 + 1, y1 + 1))
    return tuple(ImageStat.Stat(img.convert("RGB"), ring).mean)


def test_fill_through_the_api_png(api: Api, scene_urls: dict[str, str]) -> None:
    pid = api.create_id({"prompt": "p", **scene_urls, "output_format": "png", "seed": 3})
    body = api.wait(pid)
    assert body["status"] == "success"
    assert body["output"] == f"{api.sim.base_url}/files/outputs/{pid}.png"
    resp = api.get(body["output"])
    assert resp.headers["content-type"] == "image/png"
    out = _img(resp.content)
    src = gradient()
    assert out.format == "PNG" and out.size == src.size
    mask = square_mask()
    keep = Image.eval(mask, lambda v: 255 - v)
    # Outside the mask: bit-exact.
    assert (
        Image.composite(out.convert("RGB"), Image.new("RGB", src.size), keep).tobytes()
        == Image.composite(src, Image.new("RGB", src.size), keep).tobytes()
    )
    # Inside: changed, and close to the surroundings (a smooth gradient, so the ring's mean).
    inside = out.crop((BOX[0], BOX[1], BOX[2] + 1, BOX[3] + 1))
    assert inside.tobytes() != src.crop((BOX[0], BOX[1], BOX[2] + 1, BOX[3] + 1)).tobytes()
    ring = _ring_mean(src, BOX)
    mean_inside = ImageStat.Stat(inside).mean
    assert all(abs(a - b) < 12 for a, b in zip(mean_inside, ring, strict=True)), (mean_inside, ring)
    # Not a solid colour: the fill follows the gradient across the hole.
    left = ImageStat.Stat(out.crop((BOX[0], BOX[1], BOX[0] + 5, BOX[3]))).mean[0]
    right = ImageStat.Stat(out.crop((BOX[2] - 5, BOX[1], BOX[2], BOX[3]))).mean[0]
    assert right - left > 20


def test_fill_jpg_default_format(api: Api, scene_urls: dict[str, str]) -> None:
    body = api.wait(api.create_id({"prompt": "p", **scene_urls}))
    assert body["output"].endswith(".jpg")
    resp = api.get(body["output"])
    assert resp.headers["content-type"] == "image/jpeg"
    out = _img(resp.content)
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == (128, 96)


def test_same_seed_same_bytes_and_different_seed_differs() -> None:
    image, mask = png_bytes(gradient()), png_bytes(square_mask())
    a = fill_image(image, mask, output_format="png", seed=7)
    assert a == fill_image(image, mask, output_format="png", seed=7)
    assert a != fill_image(image, mask, output_format="png", seed=8)
    assert fill_image(image, mask, output_format="png") == fill_image(
        image, mask, output_format="png", seed=0
    )


def test_alpha_mask_mode(api: Api) -> None:
    src = gradient().convert("RGBA")
    hole = square_mask()
    src.putalpha(Image.eval(hole, lambda v: 255 - v))
    url = api.sim.add_file(png_bytes(src), "image/png")
    body = api.wait(api.create_id({"prompt": "p", "image": url, "output_format": "png"}))
    assert body["status"] == "success", body
    out = _img(api.get(body["output"]).content)
    assert out.size == src.size
    keep = Image.eval(hole, lambda v: 255 - v)
    black = Image.new("RGBA", src.size)
    assert (
        Image.composite(out.convert("RGBA"), black, keep).tobytes()
        == Image.composite(src, black, keep).tobytes()
    )
    inside = out.convert("RGBA").crop((BOX[0], BOX[1], BOX[2] + 1, BOX[3] + 1))
    assert inside.getchannel("A").getextrema() == (255, 255)  # filled pixels are opaque
    ring = _ring_mean(src, BOX)
    assert all(abs(a - b) < 12 for a, b in zip(ImageStat.Stat(inside.convert("RGB")).mean, ring, strict=True))


def test_size_mismatch_fails_prediction(api: Api) -> None:
    image = api.sim.add_file(png_bytes(gradient()), "image/png")
    mask = api.sim.add_file(png_bytes(square_mask((64, 64), (10, 10, 20, 20))), "image/png")
    body = api.wait(api.create_id({"prompt": "p", "image": image, "mask": mask}))
    assert body["status"] == "failed"
    assert "size" in body["output"]["error_message"]


def test_not_an_image_fails_prediction(api: Api) -> None:
    junk = api.sim.add_file(b"not an image", "image/png")
    body = api.wait(api.create_id({"prompt": "p", "image": junk}))
    assert body["status"] == "failed"
    assert "image" in body["output"]["error_message"]


def test_no_mask_and_no_alpha_fails() -> None:
    try:
        fill_image(png_bytes(gradient()), None)
    except FillError as exc:
        assert "alpha" in str(exc)
    else:
        raise AssertionError("expected FillError")


def test_webp_and_jpeg_inputs(api: Api) -> None:
    image = api.sim.add_file(png_bytes(gradient(), "WEBP"), "image/webp")
    mask = api.sim.add_file(png_bytes(square_mask(), "JPEG"), "image/jpeg")
    assert api.wait(api.create_id({"prompt": "p", "image": image, "mask": mask}))["status"] == "success"


def test_fill_is_fast_on_1024_square() -> None:
    size = (1024, 1024)
    image = png_bytes(gradient(size))
    mask = png_bytes(square_mask(size, (300, 300, 700, 700)))
    fill_image(image, mask, output_format="png", seed=1)
    t0 = time.perf_counter()
    fill_image(image, mask, output_format="jpg", seed=1)
    # A fill costs the simulator a few hundredths of a second; the bound is generous for a busy CI.
    assert time.perf_counter() - t0 < 2.0
