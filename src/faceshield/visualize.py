"""Pictures for people: detections drawn on photos, the perturbation made visible."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from faceshield.models import Detections


def draw_detections(pixels: np.ndarray, found: Detections, colour=(0, 220, 0), label: str = "") -> np.ndarray:
    """A copy of `pixels` with each box and its score drawn; a caption when nothing was found."""
    image = Image.fromarray(pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for box, score in zip(found.boxes, found.scores):
        draw.rectangle([float(v) for v in box], outline=colour, width=width)
        draw.text((float(box[0]) + width, float(box[1]) + width), f"{score:.2f}", fill=colour)
    caption = f"{label}: {len(found)} face(s)" if label else f"{len(found)} face(s)"
    draw.rectangle([0, 0, 8 + 7 * len(caption), 16], fill=(0, 0, 0))
    draw.text((4, 2), caption, fill=(255, 255, 255))
    return np.asarray(image)


def amplified_perturbation(original: np.ndarray, protected: np.ndarray, gain: float | None = None) -> np.ndarray:
    """The difference made visible: mid-grey plus the perturbation times `gain`
    (default: stretched so the largest change fills the range)."""
    diff = protected.astype(np.float32) - original.astype(np.float32)
    peak = float(np.abs(diff).max())
    gain = gain if gain is not None else (127.0 / peak if peak > 0 else 1.0)
    return np.clip(128.0 + diff * gain, 0, 255).astype(np.uint8)


def face_region(shape: tuple, boxes: np.ndarray, margin: float = 0.4) -> tuple[int, int, int, int]:
    """The x0, y0, x1, y1 pixel box around every face box (x1y1x2y2) in an image of `shape`,
    widened by `margin` x the largest face's size on each side: the part of a photo worth
    showing big. The whole image when there are no boxes."""
    h, w = shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return 0, 0, w, h
    pad = margin * float(np.max(boxes[:, 2:] - boxes[:, :2]))
    x0, y0 = np.maximum(boxes[:, :2].min(0) - pad, 0)
    x1, y1 = np.minimum(boxes[:, 2:].max(0) + pad, (w, h))
    x0, y0, x1, y1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
    if x1 <= x0 or y1 <= y0:  # boxes outside the image
        return 0, 0, w, h
    return x0, y0, x1, y1


def crop(pixels: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """pixels[y0:y1, x0:x1] of an x0, y0, x1, y1 region, as a contiguous copy."""
    x0, y0, x1, y1 = region
    return np.ascontiguousarray(pixels[y0:y1, x0:x1])


def enlarge(pixels: np.ndarray, min_side: int = 320) -> np.ndarray:
    """A small crop scaled up by a whole factor (each pixel a square block, nothing invented)
    until its longer side reaches `min_side`; larger pictures are returned as they are."""
    factor = int(np.ceil(min_side / max(1, max(pixels.shape[:2]))))
    return pixels if factor <= 1 else np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
