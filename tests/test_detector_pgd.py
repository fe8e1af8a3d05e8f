"""Acceptance: at 8/255, after a round trip through the downloaded PNG, MTCNN finds no face (the
attack on MTCNN alone, start=zero); the default (MTCNN and BlazeFace short-range attacked, the
generator's one pass first) hides a large face from both."""

import numpy as np
import pytest

from faceshield import models
from faceshield.images import png_roundtrip
from faceshield.metrics import image_quality
from faceshield.protections import DetectorPGD


@pytest.fixture(scope="module")
def protected(photos):
    protection = DetectorPGD(eps=8, start="zero", attack=("mtcnn",))
    return {name: protection(pixels) for name, pixels in photos.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "bus", "zidane"])
def test_mtcnn_finds_no_face_after_png_roundtrip(photos, protected, name):
    mtcnn = models.load("mtcnn")
    assert len(mtcnn.detect(photos[name])) >= 1
    result = protected[name]
    downloaded = png_roundtrip(result.pixels)
    assert len(mtcnn.detect(downloaded)) == 0, result.info["face_loss"][-5:]
    q = image_quality(photos[name], downloaded)
    assert q["linf"] <= 8
    assert q["psnr"] >= 35.0, q


@pytest.mark.slow
def test_perturbation_stays_on_the_faces(photos, protected):
    result = protected["astronaut"]
    changed = np.abs(result.pixels.astype(int) - photos["astronaut"].astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.mean() < 0.2
    assert xs.min() > 100 and xs.max() < 350 and ys.max() < 250  # her face is at x 180..270, y 60..170


def test_no_face_photo_is_left_unchanged_unless_asked():
    rng = np.random.default_rng(0)
    noise = (rng.normal(128, 5, (96, 128, 3))).clip(0, 255).astype(np.uint8)
    result = DetectorPGD(eps=4, steps=3)(noise)
    assert np.array_equal(result.pixels, noise) and "No face" in result.notices[0]
    forced = DetectorPGD(eps=4, steps=3, whole_image=True)(noise)
    assert np.abs(forced.pixels.astype(int) - noise).max() <= 4


@pytest.mark.slow
def test_default_hides_a_large_frontal_face(photos):
    """The portrait case: the astronaut at twice her size (a 230 px frontal face filling a
    1024 px photo), default settings, judged by both attacked detectors (facenet-pytorch's MTCNN,
    BlazeFace short-range) on the saved PNG; the change stays within the budget it reports."""
    import cv2

    big = cv2.resize(photos["astronaut"], None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    mtcnn = models.load("mtcnn")
    (box,) = mtcnn.detect(big).boxes
    assert box[2] - box[0] > 150  # a large face, not a small one
    result = DetectorPGD()(big)
    assert result.info["attacked"] == ["MTCNN", models.load("blazeface-short").name]
    downloaded = png_roundtrip(result.pixels)
    assert result.success and len(mtcnn.detect(downloaded)) == 0
    assert len(models.load("blazeface-short").detect(downloaded)) == 0
    assert image_quality(big, downloaded)["linf"] <= result.budget.eps <= 16


def test_a_misspelt_option_is_an_error_and_shared_ones_are_not():
    from faceshield.protections import build

    with pytest.raises(TypeError, match="unknown option.*epss"):
        build("detector-pgd", epss=4)
    blur = build("blur", eps=8, attack=("mtcnn",), margin=0.5)  # knobs of other methods: dropped
    assert blur.key == "blur"


def test_budget_ladder_rungs():
    """8 -> 10 -> 13 -> 16 by default; none when the top is not above eps or no rung is asked."""
    assert DetectorPGD().budgets() == [(8, 80), (10, 40), (13, 40), (16, 40)]
    assert DetectorPGD(eps=4, max_eps=8, rungs=2, rung_steps=5).budgets() == [(4, 80), (6, 5), (8, 5)]
    assert DetectorPGD(eps=16).budgets() == [(16, 80)]
    assert DetectorPGD(rungs=0).budgets() == [(8, 80)]
    assert DetectorPGD().budgets(faces=False) == [(8, 80)]  # no face: nothing to hide, no ladder


def test_budget_ladder_climbs_until_the_face_is_hidden(photos):
    """One step at 8/255 leaves the astronaut's face found (checked without the ladder); the
    ladder then climbs, stops at the first budget that hides her from MTCNN on the saved PNG,
    reports that budget and names it in the summary line."""
    mtcnn = models.load("mtcnn")
    pixels = photos["astronaut"]
    fast = dict(eps=8, steps=1, check_every=1, rung_steps=20, start="zero")
    alone = DetectorPGD(**fast, max_eps=8)(pixels)
    assert not alone.success and len(mtcnn.detect(alone.pixels)) == 1 and alone.info["ladder"][-1]["eps"] == 8

    protection = DetectorPGD(**fast)
    result = protection(pixels)
    ladder = result.info["ladder"]
    assert ladder[0] == {"eps": 8, "steps": 1, "hidden": False}
    assert len(ladder) >= 2 and [r["hidden"] for r in ladder] == [False] * (len(ladder) - 1) + [True]
    assert len(ladder) < len(protection.budgets())  # stopped below the top of the ladder
    took = ladder[-1]["eps"]
    assert result.success and result.budget.eps == took and result.budget.used <= took
    assert len(mtcnn.detect(png_roundtrip(result.pixels))) == 0
    assert result.info["psnr"] == pytest.approx(image_quality(pixels, result.pixels)["psnr"])
    text = protection.describe(result)
    assert f"at L-inf {took:g}/255" in text and f"hidden at **{took:g}/255**" in text
    assert f"PSNR {result.info['psnr']:.1f} dB" in text


def test_generator_start_takes_no_step_when_its_one_pass_hides(photos, monkeypatch):
    """start=generator: when the generator's perturbation already hides every face, the result
    is it (shrunk) with no attack step and the summary says so; when it does not, the ladder
    goes on from it within eps and hides the face as the plain attack does."""
    import torch

    from faceshield.protections import detector_pgd

    mtcnn = models.load("mtcnn")
    pixels = photos["astronaut"]
    plain = DetectorPGD(start="zero")(pixels)
    assert plain.success
    found = torch.from_numpy(plain.pixels.astype(np.float32) - pixels.astype(np.float32)).permute(2, 0, 1)[None]
    monkeypatch.setattr(detector_pgd, "_generator_start", lambda x0, boxes, eps: found.clamp(-eps, eps))
    protection = DetectorPGD(start="generator")
    result = protection(pixels)
    assert result.success and result.steps == 0 and result.info["ladder"][0]["generator"]
    assert len(mtcnn.detect(png_roundtrip(result.pixels))) == 0
    assert "one pass already hid every face" in protection.describe(result)

    monkeypatch.setattr(detector_pgd, "_generator_start", lambda x0, boxes, eps: torch.zeros_like(x0))
    result = protection(pixels)
    assert result.success and result.steps > 0 and "generator" not in result.info["ladder"][0]
    assert len(mtcnn.detect(png_roundtrip(result.pixels))) == 0 and result.budget.used <= 16


def test_default_starts_from_the_generator_and_says_so_when_it_cannot(photos, monkeypatch):
    """start=generator is the default; without the generator's weights the attack starts from
    zero, takes its steps and says why in a notice (no crash)."""
    from faceshield.protections import detector_pgd
    from faceshield.weights import WeightsUnavailable

    assert DetectorPGD().start == "generator"

    def missing():
        raise WeightsUnavailable("weights/perturbation_generator.safetensors is not in this checkout")

    monkeypatch.setattr(detector_pgd, "_generator_eps", missing)
    result = DetectorPGD(steps=2, rungs=0, check_every=1)(photos["astronaut"])
    assert result.steps > 0 and "generator" not in result.info["ladder"][0]
    assert any("generator is unavailable" in n and "not in this checkout" in n for n in result.notices)
