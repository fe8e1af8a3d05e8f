"""OpenCV's Viola-Jones Haar cascade (ships with opencv-python): the classic black-box judge."""

from __future__ import annotations

import numpy as np

from faceshield.models.base import Detections, Detector


class HaarCascadeDetector(Detector):
    name = "OpenCV Haar"
    threshold = 0.0
    note = "black-box; frontal-face cascade, scale 1.1, 5 neighbours"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml"):
        import cv2

        self._cv2 = cv2
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + cascade)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load {cascade}")

    def detect(self, pixels: np.ndarray) -> Detections:
        grey = self._cv2.cvtColor(np.ascontiguousarray(pixels), self._cv2.COLOR_RGB2GRAY)
        rects, _, weights = self.cascade.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20), outputRejectLevels=True
        )
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float32)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return Detections(boxes, np.asarray(weights, np.float32).reshape(-1))
