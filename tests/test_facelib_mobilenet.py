"""facelib's MobileNet recogniser: the PyTorch port of its TFLite graph equals the LiteRT
interpreter (reference outputs made once by scripts/reference_outputs.py, in tests/data) and
behaves as a recogniser; it is white-box when named but not in the default attack set."""

from pathlib import Path

import numpy as np
import pytest
import torch

from faceshield import models

DATA = Path(__file__).parent / "data"
KEY = "facelib-mobilenet"


@pytest.fixture(scope="module")
def rec():
    try:
        return models.load(KEY)
    except models.ModelUnavailable as exc:
        pytest.skip(f"{KEY} unavailable: {exc}")


def test_port_equals_litert_reference(rec):
    """Raw 128-d features on five aligned chips (astronaut, zidane.jpg, bus.jpg) within 1e-4 of
    LiteRT's, and the unit embeddings too."""
    ref = np.load(DATA / "facelib_mobilenet_reference.npz")
    chips = torch.from_numpy(ref["chips"].astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = rec.net(chips).numpy()
    expected = ref["features"]
    assert got.shape == expected.shape == (5, 128)
    assert np.abs(got - expected).max() <= 1e-4
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    assert np.abs(unit(got) - unit(expected)).max() <= 1e-4


def test_separates_people_and_matches_a_rescaled_copy(photos, rec):
    import cv2

    pixels = photos["zidane"]
    boxes = models.load("mtcnn").detect(pixels).boxes
    a, b = (rec.embed(pixels, box) for box in boxes[:2])
    small = cv2.resize(pixels, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    assert rec.is_match(rec.score(a, rec.embed(small, boxes[0] * 0.8)))
    assert not rec.is_match(rec.score(a, b))


def test_gradient_reaches_the_photo_near_the_face(photos, rec):
    pixels = photos["astronaut"]
    box = models.load("mtcnn").detect(pixels).boxes[0]
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None].div(255).requires_grad_(True)
    rec.embed_tensor(x, rec.landmarks(pixels, box)).sum().backward()
    grad = x.grad[0].abs().sum(0).numpy()
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    inside = grad[int(max(0, y1 - h)) : int(y2 + h), int(max(0, x1 - w)) : int(x2 + w)].sum()
    assert grad.sum() > 0 and inside / grad.sum() > 0.999


def test_held_out_of_the_default_attack_set():
    assert models.REGISTRY[KEY].differentiable and models.REGISTRY[KEY].held_out
    assert KEY in models.names(kind="recogniser")  # judged by default
    assert KEY not in models.names(kind="recogniser", differentiable=True)  # not attacked by default
    assert KEY not in models.names(kind="recogniser", differentiable=False)


def test_attackable_when_named(rec):
    from faceshield.protections.base import white_box_models

    usable, missing = white_box_models((KEY,))
    assert usable == [rec] and not missing
