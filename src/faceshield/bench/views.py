"""What happens to a published photo before it is judged: what a platform does to it
(degradations) and what an attacker does first (ATTACKER_VIEWS)."""

from __future__ import annotations

import numpy as np

from faceshield.boxes import face_region
from faceshield.images import pil_open
from faceshield.protections.obfuscation import REGION_MARGIN


def degradations(pixels: np.ndarray, box: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What a platform may do to an uploaded photo: {name: (pixels, box in them)}."""
    import io

    import cv2
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=75)
    jpeg = np.asarray(pil_open(buf).convert("RGB"))
    h, w = pixels.shape[:2]
    half = cv2.resize(pixels, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return {"jpeg75": (jpeg, box), "resize0.5": (half, box * np.array([w // 2 / w, h // 2 / h] * 2))}


def stretched(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """What an attacker does first to a flat-looking face region: stretch each channel's 1-99th
    percentile to the full range (a faint face hidden in a flat colour shows again)."""
    r0, r1, c0, c1 = face_region(box, pixels.shape, REGION_MARGIN)
    out = pixels.copy()
    region = pixels[r0:r1, c0:c1].astype(np.float32)
    if region.size:
        lo, hi = np.percentile(region, [1, 99], axis=(0, 1))
        out[r0:r1, c0:c1] = np.clip((region - lo) / np.maximum(hi - lo, 1) * 255, 0, 255).round().astype(np.uint8)
    return out


def face_only(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face region alone on mid-grey: hair, clothes and background (which an obfuscation of
    the face leaves, and which let photos of one shoot find each other) are gone."""
    r0, r1, c0, c1 = face_region(box, pixels.shape, REGION_MARGIN)
    out = np.full_like(pixels, 128)
    out[r0:r1, c0:c1] = pixels[r0:r1, c0:c1]
    return out


ATTACKER_VIEWS = {"published": lambda px, box: px, "face_only": face_only, "stretched": stretched}
