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


def crop(pixels: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """pixels[r0:r1, c0:c1] of a (row0, row1, col0, col1) region (boxes.face_region), as a
    contiguous copy."""
    r0, r1, c0, c1 = region
    return np.ascontiguousarray(pixels[r0:r1, c0:c1])


def enlarge(pixels: np.ndarray, min_side: int = 320) -> np.ndarray:
    """A small crop scaled up by a whole factor (each pixel a square block, nothing invented)
    until its longer side reaches `min_side`; larger pictures are returned as they are."""
    factor = int(np.ceil(min_side / max(1, max(pixels.shape[:2]))))
    return pixels if factor <= 1 else np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
