"""Both readings of the model page: a maskless alpha image is sent with its mask derived and explicit.

The model page marks ``mask`` "Required: Yes" and also optional when the image has an alpha channel.
The simulator's ``mask_required`` mode plays the stricter reading (a maskless input answers 400), so
these tests would fail if the provider ever relied on the lenient one.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import API_KEY, connection_json
from tests.integration.test_operators import DATA, context, fill

PRODUCT = DATA / "batch" / "product_1.png"  # its mask is its alpha channel: transparent = fill


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> Iterator[EachlabsSimulator]:
    with EachlabsSimulator(api_key=API_KEY, predict_seconds=0.3, mask_required=True) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(sim.base_url))
        yield sim


def sent_mask(sim: EachlabsSimulator) -> Image.Image:
    (prediction,) = sim.predictions.values()
    content = sim.file_bytes(prediction.input["mask"])
    assert content is not None, prediction.input
    return Image.open(io.BytesIO(content))


def assert_mask_is_the_inverted_alpha(mask: Image.Image) -> None:
    alpha = Image.open(PRODUCT).convert("RGBA").getchannel("A")
    assert (mask.mode, mask.size) == ("L", alpha.size)
    assert ImageChops.difference(mask, ImageChops.invert(alpha)).getbbox() is None  # every pixel


def assert_only_the_transparent_region_changed(stored: Path) -> None:
    original = Image.open(PRODUCT).convert("RGBA")
    filled = Image.open(stored).convert("RGBA")
    opaque = original.getchannel("A").point(lambda v: 255 if v >= 128 else 0)
    difference = ImageChops.difference(original.convert("RGB"), filled.convert("RGB")).convert("L")
    assert ImageChops.multiply(difference, opaque).getbbox() is None


def test_a_local_alpha_image_without_a_mask_is_sent_with_its_mask(strict: EachlabsSimulator, tmp_path: Path):
    result = fill(image=str(PRODUCT), mask=None, output_path=f"{tmp_path}/").execute(context())
    assert result["status"] == "success"
    assert_mask_is_the_inverted_alpha(sent_mask(strict))
    assert_only_the_transparent_region_changed(Path(result["stored_path"]))
    assert strict.counters.uploads == 2  # the image and its derived mask


def test_an_alpha_image_given_by_url_is_read_for_its_mask(strict: EachlabsSimulator, tmp_path: Path):
    image_url = strict.add_file(PRODUCT.read_bytes(), "image/png")
    result = fill(image=image_url, mask=None, output_path=f"{tmp_path}/").execute(context())
    (prediction,) = strict.predictions.values()
    assert prediction.input["image"] == image_url  # the image itself is not uploaded again
    assert_mask_is_the_inverted_alpha(sent_mask(strict))
    assert_only_the_transparent_region_changed(Path(result["stored_path"]))
    assert strict.counters.uploads == 1


def test_the_strict_reading_refuses_a_maskless_input_so_the_test_above_can_fail(strict: EachlabsSimulator):
    """The simulator's strict mode is real: without the derived mask the API would have answered 400."""
    from airflow_provider_eachlabs.exceptions import EachlabsInvalidInputError
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

    image_url = strict.add_file(PRODUCT.read_bytes(), "image/png")
    with pytest.raises(EachlabsInvalidInputError, match=r"HTTP 400: Invalid input: input.mask: is required"):
        EachlabsHook().create_prediction("flux-fill-pro", {"prompt": "p", "image": image_url})
