"""The sha256 a task reports is of the whole stored file, however large: a guard, because every
output the suite made before was smaller than one 64 KiB read."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from PIL import Image

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import context, fill

SIZE = (320, 240)


def noisy_inputs(folder: Path) -> tuple[Path, Path]:
    """An image of random pixels (PNG cannot shrink it, so the fill's PNG output is large too) and a
    mask that fills a small part of it."""
    image, mask = folder / "noise.png", folder / "noise_mask.png"
    Image.frombytes("RGB", SIZE, random.Random(7).randbytes(SIZE[0] * SIZE[1] * 3)).save(image)
    region = Image.new("L", SIZE, 0)
    region.paste(255, (100, 80, 200, 160))
    region.save(mask)
    return image, mask


def test_the_sha256_covers_an_output_larger_than_64_kib(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    image, mask = noisy_inputs(tmp_path)
    ctx = context()
    result = fill(image=str(image), mask=str(mask), output_path=f"{tmp_path}/out/").execute(ctx)
    stored = Path(result["stored_path"]).read_bytes()
    assert len(stored) > 64 * 1024
    assert stored == eachlabs_conn.file_bytes(result["output_url"])
    assert result["bytes"] == len(stored)
    assert result["sha256"] == hashlib.sha256(stored).hexdigest()
    assert ctx["ti"].xcoms["eachlabs_outcome"]["sha256"] == result["sha256"]
