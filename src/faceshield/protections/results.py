"""What a protection returns: the protected pixels, the faces it worked on, its budget and
diagnostics (ProtectionResult, Budget)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceshield.models import Detections


@dataclass(frozen=True)
class Budget:
    """The perturbation budget of an adversarial protection and what it really used, both in
    grey levels of 255: L-inf (the largest change of any value) or, for norm "l2", the RMS
    change over the face regions."""

    norm: str  # "linf" or "l2"
    eps: float  # the bound asked for
    used: float  # the same measure of the change actually made (<= eps)

    def __str__(self) -> str:
        what = "L-inf" if self.norm == "linf" else "L2 (RMS over the faces)"
        return f"{what} {self.eps:g}/255 (used {self.used:.3g})"

    @classmethod
    def measure(
        cls, norm: str, eps: float, before: np.ndarray, after: np.ndarray, mask: np.ndarray | None = None
    ) -> Budget:
        """The budget `eps` under `norm`, with the change from `before` to `after` ((H, W, 3)
        uint8) measured the same way; `mask` ((H, W), 1 on the face regions) for "l2"."""
        diff = after.astype(np.float64) - before.astype(np.float64)
        if norm == "l2":
            area = 3 * float(np.sum(mask)) if mask is not None else diff.size
            used = math.sqrt(float(np.sum(diff**2)) / max(area, 1.0))
        else:
            used = float(np.abs(diff).max()) if diff.size else 0.0
        return cls(norm, float(eps), used)


@dataclass
class ProtectionResult:
    """What a protection returns: `pixels`, `faces`, `seconds`, `info` and `notices` by position
    or keyword, the typed fields below by keyword."""

    pixels: np.ndarray  # (H, W, 3) uint8, the protected photo
    faces: Detections  # the faces (on the clean photo) that the protection worked on
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)  # method diagnostics: losses, parts, timings...
    notices: list[str] = field(default_factory=list)  # things the user should know
    faces_protected: int | None = None  # default: len(faces)
    steps: int | None = None  # iterations run (None: not an iterative method)
    success: bool | None = None  # did it reach its goal against the models it attacked (None: no goal)
    budget: Budget | None = None  # None: no perturbation budget (a visible obfuscation)
    # a method made of parts (APF): the photo each part alone gives, computed in the same pass
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.faces_protected is None:
            self.faces_protected = len(self.faces)


def no_identity_to_hide(pixels: np.ndarray, faces: Detections, start: float, **typed: Any) -> ProtectionResult:
    """The result of an identity protection on a photo without a face: unchanged, and said so."""
    return ProtectionResult(
        pixels.copy(),
        faces,
        time.perf_counter() - start,
        notices=["No face found: there is no identity to hide; the photo was left unchanged."],
        **typed,
    )
