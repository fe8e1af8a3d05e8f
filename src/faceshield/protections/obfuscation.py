"""Visible obfuscations of the face regions: Gaussian blur, pixelation and a solid mask.

These are the everyday baselines the DDM paper ("Distribution Discrepancy Maximization for
Image Privacy Preserving", arXiv 1811.07335) compares against; the evaluation panel shows
which of them still let recognisers match the person. Faces are the union of what the fast
offline detectors find on the clean photo.

Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from faceshield import models
from faceshield.models import Detections
from faceshield.protections.base import ProtectionResult, merge_faces

FACE_FINDERS = ("mtcnn", "dlib-hog", "haar")


def face_region(box, shape: tuple[int, ...], margin: float = 0.1) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) that an obfuscation covers: the x1y1x2y2 box grown by `margin`
    x its size per side, clipped to an image of `shape` (H, W, ...)."""
    x1, y1, x2, y2 = box
    h, w = shape[:2]
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    return int(max(0, y1 - mh)), int(min(h, y2 + mh)), int(max(0, x1 - mw)), int(min(w, x2 + mw))


class _Obfuscation:
    key = ""
    title = ""
    summary = ""
    default_strength = 0.0
    strength_label = ""  # what `strength` means, for the app's control ("": the method has none)
    uses_budget = False  # whether the adversarial budget eps applies (only to the noise control)

    def __init__(
        self,
        strength: float | None = None,
        whole_image: bool = False,
        face_margin: float = 0.1,
        finders: tuple[str, ...] = FACE_FINDERS,
    ):
        """strength: method-specific (see the subclass); face_margin: box growth x face size per side."""
        self.strength = self.default_strength if strength is None else float(strength)
        self.whole_image, self.face_margin, self.finders = whole_image, face_margin, tuple(finders)

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        start = time.perf_counter()
        if faces is None:
            finders, _ = models.available(list(self.finders))
            faces = merge_faces([d.detect(pixels) for d in finders.values()])
        out, notices = pixels.copy(), []
        h, w = pixels.shape[:2]
        if len(faces) == 0:
            if not self.whole_image:
                notices.append(
                    "No face found: the photo was left unchanged "
                    "(tick 'protect the whole image' to obfuscate it anyway)."
                )
                return ProtectionResult(out, faces, time.perf_counter() - start, {}, notices)
            notices.append("No face found: the whole photo was obfuscated.")
            regions = [(0, h, 0, w)]
        else:
            regions = [face_region(box, (h, w), self.face_margin) for box in faces.boxes]
        for r0, r1, c0, c1 in regions:
            if r1 > r0 and c1 > c0:
                out[r0:r1, c0:c1] = self.obscure(np.ascontiguousarray(pixels[r0:r1, c0:c1]))
        return ProtectionResult(
            out, faces, time.perf_counter() - start, {"strength": self.strength, "regions": len(regions)}, notices
        )

    def obscure(self, patch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GaussianBlur(_Obfuscation):
    """strength: Gaussian sigma as a percentage of the face size (default 8)."""

    key, title = "blur", "Obfuscate: Gaussian blur"
    summary = "Gaussian blur of the face regions (strength: sigma as % of face size)"
    default_strength = 8.0
    strength_label = "Blur: sigma as % of the face size (more = stronger)"

    def obscure(self, patch):
        sigma = max(0.5, self.strength / 100 * max(patch.shape[:2]))
        return cv2.GaussianBlur(patch, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


class Pixelate(_Obfuscation):
    """strength: number of blocks across the face (default 8; fewer = coarser)."""

    key, title = "pixelate", "Obfuscate: pixelate"
    summary = "pixelation of the face regions (strength: blocks across the face)"
    default_strength = 8.0
    strength_label = "Pixelate: blocks across the face (fewer = coarser)"

    def obscure(self, patch):
        h, w = patch.shape[:2]
        blocks = max(1, int(round(self.strength)))
        small = cv2.resize(
            patch,
            (max(1, round(blocks * w / max(h, w))), max(1, round(blocks * h / max(h, w)))),
            interpolation=cv2.INTER_AREA,
        )
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


class SolidMask(_Obfuscation):
    """strength: grey level of the fill (default 128)."""

    key, title = "mask", "Obfuscate: solid mask"
    summary = "solid grey box over the face regions (strength: fill grey level)"
    default_strength = 128.0
    strength_label = "Mask: fill grey level (0-255)"

    def obscure(self, patch):
        return np.full_like(patch, int(np.clip(self.strength, 0, 255)))


class GaussianNoise(_Obfuscation):
    """Random Gaussian noise in the face regions, clipped to the same L-inf budget as the
    adversarial methods: the control that shows what the *adversarial* part of a mask buys.

    strength: ignored; eps: budget in grey levels (default 8; sigma = eps / 2).
    """

    key, title = "noise", "Control: Gaussian noise (same budget)"
    summary = "Gaussian noise in the face regions clipped to +-eps (a control for the adversarial methods)"
    uses_budget = True

    def __init__(self, eps: float = 8, whole_image: bool = False, seed: int = 0):
        super().__init__(strength=0.0, whole_image=whole_image, face_margin=0.1)
        self.eps, self.rng = eps, np.random.default_rng(seed)

    def obscure(self, patch):
        noise = np.clip(np.round(self.rng.normal(0, self.eps / 2, patch.shape)), -self.eps, self.eps)
        return np.clip(patch.astype(np.int16) + noise.astype(np.int16), 0, 255).astype(np.uint8)
