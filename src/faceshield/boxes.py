"""The face-box policy: how a face box grows into the region a protection works on, and which
face is "the" face of a photo. Boxes are x1y1x2y2 in pixels (float); regions are
(row0, row1, col0, col1), integer, end-exclusive, inside the image."""

from __future__ import annotations

import math

import numpy as np


def grow(box, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The region of `box` grown by `margin` x its width (left and right) and x its height (top
    and bottom), rounded outwards so it covers the whole grown box, clipped to an image of
    `shape` (H, W, ...)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = shape[:2]
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    r0, r1 = max(0, math.floor(y1 - mh)), min(h, math.ceil(y2 + mh))
    c0, c1 = max(0, math.floor(x1 - mw)), min(w, math.ceil(x2 + mw))
    return int(r0), int(r1), int(c0), int(c1)


def largest(boxes) -> int:
    """The index of the largest box (by area) among (N, 4) boxes, N >= 1."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return int(np.argmax(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)))


def face_region(boxes, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    """The region (row0, row1, col0, col1) covering every x1y1x2y2 box in `boxes` (one box or
    (N, 4)), each grown by `margin` (grow), in an image of `shape` (H, W, ...): what an
    obfuscation covers of one face, or the part of a photo worth showing big. The whole image
    when there is no box or the boxes lie outside it."""
    h, w = shape[:2]
    regions = [grow(box, margin, shape) for box in np.asarray(boxes, np.float64).reshape(-1, 4)]
    if not regions:
        return 0, h, 0, w
    r0, c0 = min(r[0] for r in regions), min(r[2] for r in regions)
    r1, c1 = max(r[1] for r in regions), max(r[3] for r in regions)
    if r1 <= r0 or c1 <= c0:
        return 0, h, 0, w
    return r0, r1, c0, c1
