"""Visible obfuscations: they change only the face regions, as configured."""

import numpy as np
import pytest

from faceshield import models
from faceshield.evaluation import evaluate
from faceshield.protections import build, region_mask


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask", "noise"])
def test_only_face_regions_change(photos, method):
    astronaut = photos["astronaut"]
    result = build(method, eps=8, steps=5)(astronaut)  # eps/steps are not theirs: dropped
    changed = np.abs(result.pixels.astype(int) - astronaut).max(axis=2) > 0
    allowed = region_mask(astronaut.shape[:2], result.faces.boxes, margin=0.1) > 0
    assert len(result.faces) >= 1 and changed[allowed].mean() > 0.3
    assert not changed[~allowed].any()  # nothing outside the (grown) face boxes


def test_pixelate_makes_blocks_and_mask_fills(photos):
    astronaut = photos["astronaut"]
    faces = models.load("mtcnn").detect(astronaut)
    x1, y1, x2, y2 = faces.boxes[0].astype(int)
    pixelated = build("pixelate", strength=4)(astronaut, faces).pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
    assert len(np.unique(pixelated.reshape(-1, 3), axis=0)) <= 25  # at most 5 x 5 blocks touch it
    masked = build("mask", strength=0)(astronaut, faces).pixels[y1:y2, x1:x2]
    assert (masked == 0).all()


def test_mask_breaks_identity_matching(photos):
    astronaut = photos["astronaut"]
    result = build("mask")(astronaut)
    (rec,) = evaluate(astronaut, result.pixels, ["mtcnn"], ["dlib-resnet"], faces=result.faces).recognisers
    assert not rec.matches[0].match


def test_noise_respects_the_budget(photos):
    astronaut = photos["astronaut"]
    result = build("noise", eps=4)(astronaut)
    assert 0 < np.abs(result.pixels.astype(int) - astronaut).max() <= 4
