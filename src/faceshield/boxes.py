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
