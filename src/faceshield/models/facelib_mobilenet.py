"""facelib's MobileNet face embedder (Kutay Yildiz, 2020; MIT), the float TFLite file that the
package facelib 1.0 ships, run as a differentiable PyTorch module by tflite_graph. A family of
its own among FaceShield's recognisers: a Keras MobileNet (v1, depthwise-separable, ReLU6) with
a 128-d head, trained on insightface's MS1M-ArcFace set (MS-Celeb-1M, cleaned) with a margin
softmax loss (the package's README lists ArcFace, CosFace and SphereFace).

Input: a 112x112 RGB crop on the insightface (ArcFace) 5-point template, which is what facelib's
Pipeline.align produces. The graph normalises its own input ((x - 127.5) / 128, a Lambda layer
of the Keras model), so it takes pixels in [0, 255]. (facelib's FeatureExtractor.predict
normalises once more before the graph does, which squeezes the input into [-1.004, -0.988];
FaceShield feeds the graph the pixels it was built for: on the project's 296 face pairs the
package's double normalisation scores every pair above cosine 0.99, the pixels separate them.)
Output: 128-d, L2-normalised here. facelib ships no match rule: same person if the cosine
similarity exceeds 0.5, a round value just below the band (0.52-0.53) that classifies all of
the project's pairs correctly, erring towards matching the same person (a protection only counts
when the score falls below it); one of the 156 different-person pairs scores 0.516, the lowest
same-person pair 0.538. `python -m faceshield bench ../shared/data/faces --zoo` reports its
accuracy and ROC AUC.
"""

from __future__ import annotations

import torch

from faceshield import settings
from faceshield.models.alignment import AlignedRecogniser
from faceshield.weights import PackageFile, resolve

TFLITE = PackageFile("facelib", "facerec/feature_extraction/data/mobilenet_fp32.tflite")
SIZE = 112
THRESHOLD = 0.5


class MobileNetEmbedder(torch.nn.Module):
    """(N, 3, 112, 112) RGB in [0, 255] -> (N, 128) features (not normalised), the TFLite graph."""

    def __init__(self):
        super().__init__()
        from faceshield.models.tflite_graph import TFLiteGraph

        self.graph = TFLiteGraph(resolve(TFLITE).read_bytes())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.graph(x).values()
        return features


class FacelibMobileNetRecogniser(AlignedRecogniser):
    """facelib's MobileNet, white-box (held out of the default ensemble): 5 points from dlib's
    68-point predictor, ArcFace 112 px alignment, the TFLite graph in torch; same person if
    cosine > THRESHOLD."""

    name = "MobileNet MS1M (facelib)"
    threshold = THRESHOLD
    metric = "cosine"
    note = (
        "held out of the default attack set (white-box when named); facelib's MobileNet trained on MS1M, "
        f"128-d; same person if cosine > {THRESHOLD}"
    )
    size = SIZE

    def __init__(self):
        settings.apply_threads()
        super().__init__(MobileNetEmbedder())
