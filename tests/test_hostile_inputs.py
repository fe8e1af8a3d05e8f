"""Odd and hostile photos through the same path the app's Protect button takes
(service.protect_photo): each gives a result or a clear ImageError, and the downloaded PNG
never carries the input's metadata."""

import io

import numpy as np
import pytest
from PIL import Image

from faceshield.images import ImageError
from faceshield.service import protect_photo


def _jpeg_with_gps(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    image = Image.fromarray(pixels).convert(mode)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPS IFD
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def _assert_clean_png(path):
    png = Image.open(path)
    assert png.format == "PNG"
    assert not png.getexif() and not png.info.get("exif") and not png.info.get("icc_profile")
    assert not any(k.lower().startswith(("gps", "xmp", "comment")) for k in png.info)


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_gps_and_exif_never_reach_the_download(photos, mode):
    page = protect_photo(_jpeg_with_gps(photos["astronaut"], mode), method="blur")
    _assert_clean_png(page.png_path)
    assert page.protected.shape == photos["astronaut"].shape


def test_one_pixel_photo_is_handled():
    page = protect_photo(np.full((1, 1, 3), 200, np.uint8), method="detector-pgd", steps=5)
    assert page.protected.shape == (1, 1, 3)
    assert any("No face" in n or "small" in n.lower() for n in page.notices)


def test_photo_without_a_face_is_left_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    page = protect_photo(pixels, method="tip-im", steps=5)
    assert np.array_equal(page.protected, pixels)
    assert any("No face" in n for n in page.notices)


def test_fifty_faces_in_one_photo(photos):
    """A 7x7 grid of the astronaut's face (49 faces) plus one: every face is obfuscated."""
    from faceshield import models

    face = photos["astronaut"][20:200, 140:300]
    face = np.asarray(Image.fromarray(face).resize((80, 90)))
    grid = np.full((7 * 100, 8 * 90, 3), 255, np.uint8)
    for i in range(50):
        r, c = divmod(i, 8)
        if r < 7:
            grid[r * 100:r * 100 + 90, c * 90:c * 90 + 80] = face
    page = protect_photo(grid, method="pixelate")
    before = len(models.load("mtcnn").detect(grid))
    assert before >= 40  # MTCNN sees (most of) them
    assert len(models.load("mtcnn").detect(page.protected)) <= before // 4


def test_garbage_gives_a_clear_message():
    with pytest.raises(ImageError):
        protect_photo(b"\x00" * 10, method="blur")
    with pytest.raises(ImageError):
        protect_photo(b"", method="blur")
