"""Numbers for judging a protection: image quality (via scikit-image) and detection quality."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def image_quality(original: np.ndarray, protected: np.ndarray, perceptual: bool = False) -> dict:
    """PSNR (dB), SSIM and L-inf (grey levels) between two (H, W, 3) uint8 photos; with
    perceptual=True also HaarPSI (piq; 1 = identical, weight-free, close to human judgements)."""
    diff = np.abs(original.astype(np.int16) - protected.astype(np.int16))
    linf = int(diff.max()) if diff.size else 0
    psnr = float("inf") if linf == 0 else float(peak_signal_noise_ratio(original, protected, data_range=255))
    small = min(original.shape[:2]) < 7  # SSIM's window needs 7 px
    ssim = (
        1.0 if linf == 0 or small else float(structural_similarity(original, protected, channel_axis=2, data_range=255))
    )
    quality = {"psnr": psnr, "ssim": ssim, "linf": linf}
    if perceptual:
        quality["haarpsi"] = haarpsi(original, protected)
    return quality


def haarpsi(original: np.ndarray, protected: np.ndarray) -> float:
    """HaarPSI (Reisenhofer et al. 2018) of two (H, W, 3) uint8 photos, by piq."""
    import piq
    import torch

    if min(original.shape[:2]) < 32:
        return 1.0 if np.array_equal(original, protected) else float("nan")
    x, y = (torch.from_numpy(np.array(p, np.float32)).permute(2, 0, 1)[None] for p in (original, protected))
    return float(piq.haarpsi(y, x, data_range=255.0))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of x1y1x2y2 boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-12)


def match_detections(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float = 0.5):
    """Greedy VOC matching, most confident first. Returns (scores sorted desc, true-positive flags,
    number of ground-truth boxes matched)."""
    order = np.argsort(-np.asarray(scores))
    boxes, scores = np.asarray(boxes).reshape(-1, 4)[order], np.asarray(scores)[order]
    ious = box_iou(boxes, truth) if len(truth) else np.zeros((len(boxes), 0))
    taken = np.zeros(len(truth), bool)
    tp = np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        if ious.shape[1] == 0:
            break
        j = int(np.argmax(np.where(taken, -1, ious[i])))
        if ious[i, j] >= iou and not taken[j]:
            taken[j], tp[i] = True, True
    return scores, tp, int(taken.sum())


def average_precision(per_image: list[tuple[np.ndarray, np.ndarray]], n_truth: int) -> float:
    """VOC all-point interpolated AP from [(scores, tp flags), ...] pooled over images."""
    if n_truth == 0:
        return float("nan")
    scores = np.concatenate([s for s, _ in per_image]) if per_image else np.zeros(0)
    tp = np.concatenate([t for _, t in per_image]) if per_image else np.zeros(0, bool)
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    recall = np.cumsum(tp) / n_truth
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))
