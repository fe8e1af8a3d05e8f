"""The shared parts of the protections: the face-region mask, merging detectors' faces, the
white-box models to attack; and, for the protection modules, one import place for the split
modules (results.py, spec.py, loop.py, cancel.py)."""

from __future__ import annotations

import numpy as np

from faceshield.boxes import grow
from faceshield.models import Detections
from faceshield.protections.cancel import Cancelled, check_cancelled, check_stop, stop_when
from faceshield.protections.loop import (
    AttackRun,
    EarlyStop,
    LoopConfig,
    Perturbation,
    feature_dropout,
    iterate,
    l2_round,
    l2_step,
    mid_features,
    momentum_step,
)
from faceshield.protections.results import Budget, ProtectionResult, no_identity_to_hide
from faceshield.protections.spec import (
    ATTACK,
    EPS,
    FACE_MARGIN,
    NAMES,
    PATH,
    PHOTOS,
    REGISTRY,
    SEED,
    STEPS,
    SUBSET,
    WEIGHTS,
    WHOLE_IMAGE,
    Param,
    Protection,
    register,
)

__all__ = [
    "ATTACK",
    "EPS",
    "FACE_MARGIN",
    "NAMES",
    "PATH",
    "PHOTOS",
    "REGISTRY",
    "SEED",
    "STEPS",
    "SUBSET",
    "WEIGHTS",
    "WHOLE_IMAGE",
    "AttackRun",
    "Budget",
    "Cancelled",
    "EarlyStop",
    "LoopConfig",
    "Perturbation",
    "Param",
    "Protection",
    "ProtectionResult",
    "check_cancelled",
    "check_stop",
    "feature_dropout",
    "iterate",
    "l2_round",
    "l2_step",
    "merge_faces",
    "mid_features",
    "momentum_step",
    "no_identity_to_hide",
    "region_mask",
    "register",
    "stop_when",
    "white_box_models",
]


def region_mask(shape: tuple[int, int], boxes: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """(H, W) float32 mask, 1 inside each box grown by `margin` x its size on every side.

    Confining the perturbation to the faces is what keeps PSNR high: the same budget spread
    over the whole photo costs ~30 dB at 8/255.
    """
    mask = np.zeros(shape[:2], np.float32)
    for box in np.asarray(boxes, np.float32).reshape(-1, 4):
        r0, r1, c0, c1 = grow(box, margin, shape)
        mask[r0:r1, c0:c1] = 1.0
    return mask


def merge_faces(detections: list[Detections], iou: float = 0.4) -> Detections:
    """Union of several detectors' faces, overlapping boxes merged (keeps the larger score)."""
    import torch
    from torchvision.ops import nms

    parts = [d for d in detections if len(d)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([d.boxes for d in parts])
    # Detectors score on different scales; rank by detector order, then score.
    rank = np.concatenate([np.full(len(d), -i, np.float32) * 1e3 + d.scores for i, d in enumerate(parts)])
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(rank), iou).numpy()
    return Detections(boxes[keep], np.concatenate([d.scores for d in parts])[keep])


def white_box_models(keys) -> tuple[list, dict[str, str]]:
    """The differentiable models among `keys` that load here, and {key: reason} for the rest;
    RuntimeError when none is left to attack."""
    from faceshield import models

    loaded, missing = models.available(list(keys))
    usable = [m for m in loaded.values() if m.differentiable]
    if not usable:
        raise RuntimeError(f"no white-box model available among {tuple(keys)}: {missing}")
    return usable, missing
