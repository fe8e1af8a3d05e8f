"""Our own trained networks, loaded from the committed weights/ through the weight
resolver: the generator (one pass) and APF (three parts); DDM's are in test_ddm.py."""

import numpy as np
import pytest

from faceshield import models
from faceshield.images import png_roundtrip
from faceshield.metrics import image_quality
from faceshield.protections import build


def _mtcnn_confidence(pixels, box) -> float:
    from faceshield.metrics import box_iou

    found = models.load("mtcnn").detect(pixels)
    if not len(found):
        return 0.0
    overlap = box_iou(found.boxes, box[None]).max(axis=1) > 0.3
    return float(found.scores[overlap].max()) if overlap.any() else 0.0


def test_generator_is_one_bounded_pass(photos):
    """zidane.jpg was never in training. One pass: within the budget, PNG-safe, fast, and
    every face MTCNN finds is weaker or gone (the headline numbers are in the bench)."""
    pixels = photos["zidane"]
    protection = build("generator")
    assert protection.eps == protection.network().eps  # its default: the budget it was trained at
    result = protection(pixels)
    out = png_roundtrip(result.pixels)
    q = image_quality(pixels, out)
    assert q["linf"] <= protection.eps and q["psnr"] >= 30
    assert not result.notices  # at its own budget: no warning
    other = build("generator", eps=protection.eps / 2)(pixels)
    assert any("trained at" in n for n in other.notices)
    assert result.seconds < 10  # the bench reports the real figure on an idle machine
    before = models.load("mtcnn").detect(pixels)
    after = [_mtcnn_confidence(out, box) for box in before.boxes]
    assert sum(after) < sum(before.scores)


@pytest.mark.parametrize("parts", [("gradient",), ("transfer",), ("uap",), ("gradient", "transfer", "uap")])
def test_apf_parts_stay_inside_the_budget(photos, parts):
    pixels = photos["astronaut"]
    result = build("apf", parts=parts)(pixels)
    q = image_quality(pixels, result.pixels)
    assert 0 < q["linf"] <= 8
    assert result.info["parts"] == list(parts)
    if "transfer" in parts:
        assert result.info["seconds_server"] > 0 and "gradient" in result.info["server_receives"]


def test_apf_full_filter_moves_the_identity(photos):
    pixels = photos["astronaut"]
    result = build("apf")(pixels)
    (box,) = result.faces.boxes[:1]
    for key in ("dlib-resnet", "facenet", "sface-onnx"):
        rec = models.load(key)
        clean, protected = rec.embed(pixels, box), rec.embed(result.pixels, box)
        moved = rec.score(clean, protected)
        assert (moved > 0.1) if rec.metric == "euclidean" else (moved < 0.99), key


@pytest.mark.parametrize("side", [160, 1024])
def test_apf_hides_a_small_and_a_large_face(photos, side):
    """The same face at a web thumbnail's size (about 55 px across) and at a large portrait's
    (about 350 px): both times FaceNet, which the device probes and the networks were trained
    against, no longer matches it to the clean photo (the speed is the bench's to measure)."""
    from PIL import Image

    pixels = np.asarray(Image.fromarray(photos["astronaut"]).resize((side, side), Image.Resampling.LANCZOS))
    result = build("apf")(pixels)
    assert image_quality(pixels, result.pixels)["linf"] <= 8
    (box,) = result.faces.boxes[:1]
    rec = models.load("facenet")
    assert not rec.is_match(rec.score(rec.embed(pixels, box), rec.embed(result.pixels, box)))
