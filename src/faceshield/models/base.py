"""What every detector and recogniser provides, so protections and evaluation need not care
which model they hold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """Faces found in one photo, in that photo's pixel coordinates."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32, higher = more face-like (model's own scale)
    landmarks: np.ndarray | None = None  # (N, 5, 2) eyes, nose, mouth corners, when known

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    def scaled(self, factor: float) -> Detections:
        lm = None if self.landmarks is None else self.landmarks * factor
        return Detections(self.boxes * factor, self.scores, lm)


class Detector:
    """A face detector.

    detect(pixels) takes an (H, W, 3) uint8 RGB array. Differentiable detectors also implement
    face_loss(x, region): x is a (1, 3, H, W) float tensor in [0, 1] that requires grad, region an
    (H, W) 0/1 tensor marking where no face may be found; the loss is zero once the detector
    would find no face there, and grows with how confidently it still does. attack_loss()
    gives the face loss for the steps of one attack, where a detector may keep work from one
    step to the next (MTCNN screens its candidates every few steps).
    """

    name: str = "detector"
    threshold: float = 0.5
    differentiable: bool = False
    note: str = ""  # shown in the UI, e.g. "runs on an 800 px copy"

    def detect(self, pixels: np.ndarray) -> Detections:
        raise NotImplementedError

    def face_loss(self, x, region):
        raise NotImplementedError(f"{self.name} is not differentiable")

    def attack_loss(self, every: int = 1) -> AttackLoss:
        """face_loss for the steps of one attack (a new one per attack: it may keep state;
        `every`: how often a detector that screens candidates re-screens them)."""
        return AttackLoss(self.face_loss)


class AttackLoss:
    """A detector's face loss over the steps of one attack: loss(x, region) as face_loss.

    surely_found(): whether the last call saw a face the real detector finds all but surely
    (MTCNN: a candidate above every stage's own threshold), so the attack skips that step's
    check with the real detector (a whole detection, on a crowd photo about a second); False
    when unknown, and the real detector is asked."""

    def __init__(self, face_loss):
        self.face_loss = face_loss

    def __call__(self, x, region):
        return self.face_loss(x, region)

    def surely_found(self) -> bool:
        return False


class Recogniser:
    """A face recogniser: face -> embedding, with the model's own match rule."""

    name: str = "recogniser"
    threshold: float = 0.6
    metric: str = "euclidean"  # "euclidean" (match if below) or "cosine" (match if above)
    differentiable: bool = False  # does it offer embed_tensor(x, landmarks) for attacks?
    note: str = ""

    def embed(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(D,) embedding of the face in `box` (x1, y1, x2, y2) of an (H, W, 3) uint8 photo."""
        raise NotImplementedError

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        if self.metric == "euclidean":
            return float(np.linalg.norm(a - b))
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def is_match(self, score: float) -> bool:
        return score < self.threshold if self.metric == "euclidean" else score > self.threshold

    def score_tensor(self, a, b):
        """score() on torch embeddings, differentiable."""
        import torch.nn.functional as F

        if self.metric == "euclidean":
            return (a - b).norm()
        return F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1))[0]

    def dodge_loss(self, a, b, margin: float = 0.0):
        """Zero once embeddings a and b are `margin` (a fraction of the threshold) beyond this
        recogniser's match threshold, growing linearly before: the one dodging objective."""
        import torch.nn.functional as F

        s = self.score_tensor(a, b)
        if self.metric == "euclidean":
            return F.relu(self.threshold * (1 + margin) - s)
        return F.relu(s - self.threshold * (1 - margin))

    def match_loss(self, a, b, margin: float = 0.0):
        """Zero once a and b match with `margin` to spare: the impersonation objective."""
        import torch.nn.functional as F

        s = self.score_tensor(a, b)
        if self.metric == "euclidean":
            return F.relu(s - self.threshold * (1 - margin))
        return F.relu(self.threshold * (1 + margin) - s)
