"""dlib's MMOD CNN face detector ("mmod_human_face_detector.dat") in PyTorch.

Topology, from dlib's examples/dnn_mmod_face_detection_ex.cpp (input side first):
  3 x [con 5x5/2 (16, 32, 32 filters), no padding -> affine -> relu]   (downsampler, 1/8)
  3 x [con 5x5/1 (45), padding 2 -> affine -> relu] -> con 9x9/1 (1), padding 4
The file stores batch norms (bn_con2); dlib folds them into affine layers when it loads the
file as the detector type, and dlib_format.read_layers does the same.

What the loss_mmod layer and input_rgb_image_pyramid<pyramid_down<6>> do around the network,
re-done here step by step because an attack needs all of it differentiable:
- the input tensor is a tiled pyramid: the photo, (RGB - mean) / 256, and its successive
  5/6 down-scalings (dlib's resize_image: bilinear, corner-aligned, each level from the
  previous one, in that normalised float domain) packed into one zero-filled canvas by
  compute_tiled_image_pyramid_details (10 px between tiles, 11 px outer border);
- every output cell scoring above 0 is an 80x80 window centred on input-tensor point
  8 x cell + 14 (the three stride-2 5x5 convolutions), mapped back to the photo through the
  tile nearest to it (p -> p x 6/5 + 0.3 per pyramid level), rounded to whole pixels;
- NMS keeps the best window and drops any whose intersection over their *bounding box*
  exceeds the file's threshold (dlib's test_box_overlap; 0.338 in this file).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from faceshield.models.base import Detections, Detector
from faceshield.models.dlib_format import Reader, copy_parameters, read_layers
from faceshield.models.dlib_resnet import MEAN_RGB, Affine

PADDING, OUTER_PADDING = 10, 11  # input_rgb_image_pyramid's defaults (the file's version 1)
PYRAMID_RATE = 5.0 / 6.0  # pyramid_down<6>
STRIDE, OFFSET = 8, 14  # output cell -> input-tensor point, from the con layers' geometry


class MMODNet(nn.Module):
    """(1, 3, NR, NC) tiled, normalised pyramid -> (1, 1, nr, nc) face scores (0 = threshold)."""

    SPEC = [
        (3, 16, 5, 2, 0),
        (16, 32, 5, 2, 0),
        (32, 32, 5, 2, 0),
        (32, 45, 5, 1, 2),
        (45, 45, 5, 1, 2),
        (45, 45, 5, 1, 2),
    ]

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in self.SPEC)
        self.affines = nn.ModuleList(Affine(o) for _, o, _, _, _ in self.SPEC)
        self.head = nn.Conv2d(45, 1, 9, 1, 4)

    def forward(self, x):
        for conv, affine in zip(self.convs, self.affines):
            x = F.relu(affine(conv(x)))
        return self.head(x)

    @classmethod
    def from_dlib_file(cls, data: bytes) -> MMODNet:
        layers = read_layers(data)
        convs = [layer.params for layer in layers if layer.kind == "con"]
        affines = [layer.params for layer in layers if layer.kind == "affine"]
        model = cls()
        targets = list(model.convs) + [model.head]
        if (len(convs), len(affines)) != (len(targets), len(model.affines)):
            raise ValueError(f"{len(convs)} con / {len(affines)} bn layers; MMOD has 7 / 6")
        copy_parameters(targets, model.affines, convs, affines)
        return model.eval()


def read_options(data: bytes) -> dict:
    """The loss_mmod options at the head of the file: detection window and NMS thresholds."""
    r = Reader(data, 2)  # after the network's own version int
    if r.string() != "loss_mmod_":
        raise ValueError("not a dlib loss_mmod network file")
    version = r.int()
    if version != 1:  # later versions store several windows with labels
        raise ValueError(f"mmod_options version {version} is not supported")
    width, height = r.int(), r.int()
    r.real(), r.real(), r.real()  # loss per false alarm / missed target, truth-match IoU
    return dict(window=(width, height), nms_iou=r.real(), nms_covered=r.real())


def pyramid_rects(nr: int, nc: int) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """dlib's compute_tiled_image_pyramid_details: each level's (left, top, right, bottom),
    inclusive, in the canvas, and the canvas size (rows, cols)."""
    sizes = [(nc, nr)]
    while True:
        nr, nc = math.floor(PYRAMID_RATE * nr), math.floor(PYRAMID_RATE * nc)
        if nr * nc == 0 or nr < 5:
            break
        sizes.append((nc, nr))
    total_height = sum(h + PADDING for _, h in sizes) - 2 * PADDING
    height = prev_width = 0
    for w, h in sizes:  # down the first column until the rest fits beside it
        if w <= sizes[0][0] - prev_width - PADDING and (height - sizes[0][1]) * 2 >= total_height - sizes[0][1]:
            break
        height += h + PADDING
        prev_width = w
    height -= PADDING
    width = sizes[0][0]
    rects, y, i = [], OUTER_PADDING, 0
    while y < height + OUTER_PADDING and i < len(sizes):
        w, h = sizes[i]
        rects.append((OUTER_PADDING, y, OUTER_PADDING + w - 1, y + h - 1))
        y += h + PADDING
        i += 1
    y -= PADDING
    while i < len(sizes):  # then back up the right-hand side, bottom first
        w, h = sizes[i]
        right, bottom = OUTER_PADDING + width - 1, y - 1
        rect = (right - w + 1, bottom - h + 1, right, bottom)
        l0, t0, r0, b0 = rects[0]
        if not (rect[2] < l0 or rect[0] > r0 or rect[3] < t0 or rect[1] > b0):
            break  # would overlap the photo itself
        rects.append(rect)
        y -= h + PADDING
        i += 1
    return rects, height + 2 * OUTER_PADDING, width + 2 * OUTER_PADDING


def tiled_pyramid(img255: torch.Tensor) -> tuple[torch.Tensor, list]:
    """(1, 3, H, W) RGB in [0, 255] -> the network's input canvas and its tile rects."""
    rects, rows, cols = pyramid_rects(img255.shape[2], img255.shape[3])
    mean = torch.tensor(MEAN_RGB, dtype=img255.dtype, device=img255.device).view(1, 3, 1, 1)
    level = (img255 - mean) / 256.0
    canvas = img255.new_zeros(1, 3, rows, cols)
    for i, (left, top, right, bottom) in enumerate(rects):
        if i:
            level = F.interpolate(level, size=(bottom - top + 1, right - left + 1), mode="bilinear", align_corners=True)
        canvas[:, :, top : bottom + 1, left : right + 1] = level
    return canvas, rects


def to_photo(points: np.ndarray, rects: list, anchors: np.ndarray | None = None) -> np.ndarray:
    """dlib's tiled_pyramid_to_image for (N, 2) canvas points: each point goes through the tile
    nearest to its anchor (the point itself by default; a window's centre for its corners),
    minus that tile's origin, then p -> p x 6/5 + 0.3 once per pyramid level."""
    anchors = points if anchors is None else anchors
    r = np.array(rects, np.float64)  # (L, 4) l, t, r, b
    nearest_x = np.clip(anchors[:, None, 0], r[None, :, 0], r[None, :, 2])
    nearest_y = np.clip(anchors[:, None, 1], r[None, :, 1], r[None, :, 3])
    # distance 0 inside a tile; the first of equals wins, as in dlib's loop
    level = np.argmin(np.hypot(nearest_x - anchors[:, None, 0], nearest_y - anchors[:, None, 1]), axis=1)
    local = points - r[level, :2]
    for k in range(1, int(level.max(initial=0)) + 1):
        local = np.where((level >= k)[:, None], local * (6.0 / 5.0) + 0.3, local)
    return local


def lround(v: np.ndarray) -> np.ndarray:
    """C's lround: halves away from zero (numpy's round goes to even)."""
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


class DlibMMODTorchDetector(Detector):
    """dlib's CNN face detector, differentiable. detect() equals dlib's
    cnn_face_detection_model_v1(img, 0) on the same photo; face_loss() is white-box."""

    name = "dlib CNN (MMOD, PyTorch port)"
    threshold = 0.0
    differentiable = True
    CACHE_NAME = "mmod_human_face_detector.safetensors"

    def __init__(self, margin: float = 0.5):
        from faceshield import settings
        from faceshield.models.dlib_models import _model_file
        from faceshield.weights import cached_conversion

        settings.apply_threads()
        path = Path(_model_file("mmod_human_face_detector.dat"))
        with open(path, "rb") as f:
            self.options = read_options(f.read(256))
        self.net = cached_conversion(
            settings.CACHE_DIR / self.CACHE_NAME, MMODNet(), lambda: MMODNet.from_dlib_file(path.read_bytes()), path
        )
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.margin = margin
        self.note = "white-box port of dlib's MMOD CNN at the photo's own scale (no upsampling)"

    def to(self, device) -> DlibMMODTorchDetector:
        self.net.to(device)
        return self

    def scores(self, x255: torch.Tensor) -> tuple[torch.Tensor, list]:
        canvas, rects = tiled_pyramid(x255)
        return self.net(canvas)[0, 0], rects

    def _windows(self, rows: np.ndarray, cols: np.ndarray, rects: list) -> np.ndarray:
        """(N, 4) photo-space windows (dlib's inclusive l, t, r, b, rounded) of output cells."""
        w, h = self.options["window"]
        centre = np.stack([cols * STRIDE + OFFSET, rows * STRIDE + OFFSET], 1).astype(np.float64)
        half = np.array([(w - 1) / 2, (h - 1) / 2])
        # the window's corners go through the tile its centre is nearest to
        tl, br = to_photo(centre - half, rects, centre), to_photo(centre + half, rects, centre)
        return lround(np.concatenate([tl, br], 1))

    def detect(self, pixels: np.ndarray) -> Detections:
        if min(pixels.shape[:2]) < 5:
            return Detections.empty()
        img = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            out, rects = self.scores(img.to(next(self.net.parameters()).device))
        out = out.cpu().numpy()
        rows, cols = np.nonzero(out > self.threshold)
        if len(rows) == 0:
            return Detections.empty()
        scores = out[rows, cols].astype(np.float64)
        boxes = self._windows(rows, cols, rects)
        keep: list[int] = []
        for i in np.argsort(-scores, kind="stable"):
            if not any(
                _overlaps(boxes[i], boxes[j], self.options["nms_iou"], self.options["nms_covered"]) for j in keep
            ):
                keep.append(i)
        kept = boxes[keep].astype(np.float32)
        kept[:, 2:] += 1  # inclusive right/bottom -> exclusive, as the native wrapper reports
        return Detections(kept, scores[keep].astype(np.float32))

    def face_loss(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Sum over output cells whose window centre falls in `region` of how far their score
        is above -margin: zero once no window there could become a face."""
        out, rects = self.scores(x * 255.0)
        with torch.no_grad():
            rows, cols = torch.nonzero(out > self.threshold - self.margin, as_tuple=True)
        if len(rows) == 0:
            return out.sum() * 0.0
        centre = np.stack([cols.numpy() * STRIDE + OFFSET, rows.numpy() * STRIDE + OFFSET], 1).astype(np.float64)
        p = lround(to_photo(centre, rects))
        h, w = region.shape
        ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
        ok[ok] = region[p[ok, 1], p[ok, 0]].cpu().numpy() > 0
        if not ok.any():
            return out.sum() * 0.0
        sel = torch.from_numpy(ok)
        return F.relu(out[rows[sel], cols[sel]] - (self.threshold - self.margin)).sum()


def _overlaps(a: np.ndarray, b: np.ndarray, iou: float, covered: float) -> bool:
    """dlib's test_box_overlap on inclusive integer rectangles: intersection over the
    *bounding box* of both, or over either box's own area."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = float(iw * ih)
    outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return inner / outer > iou or inner / area_a > covered or inner / area_b > covered
