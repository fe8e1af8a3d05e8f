"""The one evaluation routine and its metrics."""

import numpy as np
import pytest

from faceshield.evaluation import evaluate
from faceshield.metrics import average_precision, box_iou, image_quality, match_detections


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    assert np.allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_matching_and_ap():
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    s, tp, hits = match_detections(boxes, scores, truth)
    assert hits == 2 and tp.tolist() == [True, False, True, False]  # a duplicate is a false positive
    # precision 1 at recall 0.5, 2/3 at recall 1.0 -> AP = 0.5 * 1 + 0.5 * 2/3
    assert average_precision([(s, tp)], 2) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([], 2) == 0.0


def test_image_quality():
    a = np.zeros((32, 32, 3), np.uint8)
    b = a.copy()
    assert image_quality(a, b) == {"psnr": float("inf"), "ssim": 1.0, "linf": 0}
    b[0, 0, 0] = 8
    q = image_quality(a, b)
    assert (
        q["linf"] == 8 and q["psnr"] == pytest.approx(10 * np.log10(255**2 / (64 / (32 * 32 * 3)))) and q["ssim"] < 1.0
    )


def test_evaluate_with_reference_photo(photos):
    astronaut = photos["astronaut"]
    noisy = np.clip(astronaut.astype(int) + np.random.default_rng(0).integers(-2, 3, astronaut.shape), 0, 255)
    ev = evaluate(
        astronaut,
        noisy.astype(np.uint8),
        ["mtcnn", "haar"],
        ["dlib-resnet"],
        reference=np.ascontiguousarray(astronaut[:, ::-1]),
    )
    assert [v.key for v in ev.detectors] == ["mtcnn", "haar"] and ev.detectors[0].hidden == 0
    (rec,) = ev.recognisers
    face = rec.matches[0]
    assert face.match and face.reference_match and face.reference_score < 0.6
    assert ev.quality["linf"] <= 2


def test_judging_is_bounded_per_request(photos):
    """The web path judges at most max_faces faces (the largest, with a notice), and a
    cancelled request stops the judging itself, not only the attack."""
    import threading

    from faceshield.models import Detections
    from faceshield.protections.base import Cancelled, stop_when

    astronaut = photos["astronaut"]
    boxes = np.array([[150, 50, 350, 270], [10, 10, 40, 40], [400, 300, 430, 330], [0, 400, 60, 460]], float)
    faces = Detections(boxes, np.ones(len(boxes)))
    ev = evaluate(astronaut, astronaut, [], ["dlib-resnet"], faces=faces, max_faces=2)
    (rec,) = ev.recognisers
    assert [m.face for m in rec.matches] == [0, 3]  # the two largest, in the photo's order
    assert ev.notices and "2 largest of the 4 faces" in ev.notices[0]
    assert evaluate(astronaut, astronaut, [], ["dlib-resnet"], faces=faces).notices == []

    cancelled = threading.Event()
    cancelled.set()
    with stop_when(cancelled), pytest.raises(Cancelled):
        evaluate(astronaut, astronaut, [], ["dlib-resnet"], faces=faces)
