"""Identity masks: after protection dlib's recogniser no longer matches the face to itself."""

import numpy as np
import pytest

from faceshield import models
from faceshield.images import png_roundtrip
from faceshield.metrics import image_quality
from faceshield.protections import TIPIM, build


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "zidane"])
def test_native_dlib_no_longer_matches(photos, name):
    pixels = photos[name]
    result = TIPIM(eps=8)(pixels)
    downloaded = png_roundtrip(result.pixels)
    native = models.load("dlib-resnet")  # native dlib, landmarks found again on the protected photo
    assert len(result.faces) >= 1 and result.info["success"]
    for box in result.faces.boxes:
        assert not native.is_match(native.score(native.embed(pixels, box), native.embed(downloaded, box)))
    q = image_quality(pixels, downloaded)
    assert q["linf"] <= 8 and q["psnr"] >= 35


def test_switches_and_no_face():
    flat = np.full((64, 64, 3), 128, np.uint8)
    result = build("tip-im", eps=8, mmd_weight=0, diversity=0)(flat)
    assert np.array_equal(result.pixels, flat) and "No face" in result.notices[0]
