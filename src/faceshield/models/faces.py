"""Face finding: which detectors decide where the faces of a photo are, when a caller (a
protection, the bench, the page) is not given them, and which face is "the" face."""

from __future__ import annotations

from faceshield.boxes import largest
from faceshield.models.base import Detections
from faceshield.models.registry import available

FACE_FINDERS = ("mtcnn", "dlib-hog")


def find_faces(pixels, finders: tuple[str, ...] = FACE_FINDERS) -> Detections:
    """The faces the first finder that sees any finds (a union would add false positives)."""
    loaded, _ = available(list(finders))
    for finder in loaded.values():
        found = finder.detect(pixels)
        if len(found):
            return found
    return Detections.empty()


def largest_face(pixels, finders: tuple[str, ...] = FACE_FINDERS):
    """(4,) box of the largest face find_faces() sees, or None."""
    found = find_faces(pixels, finders)
    return found.boxes[largest(found.boxes)] if len(found) else None
