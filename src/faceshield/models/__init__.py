"""Detectors and recognisers behind one registry.

base.py       the Detector / Recogniser interfaces and Detections
registry.py   REGISTRY: one record ("module:Class", weights source, licence, role) per model;
              load / available / names / white_box / status
faces.py      face finding: find_faces, largest_face
the rest      one module per model family (ports, wrappers, converters)
"""

from faceshield.models.base import Detections, Detector, Recogniser
from faceshield.models.faces import FACE_FINDERS, find_faces, largest_face
from faceshield.models.registry import (
    REGISTRY,
    ModelSpec,
    ModelUnavailable,
    available,
    forget,
    load,
    names,
    status,
    white_box,
)

__all__ = [
    "Detections",
    "Detector",
    "Recogniser",
    "ModelSpec",
    "ModelUnavailable",
    "REGISTRY",
    "FACE_FINDERS",
    "load",
    "forget",
    "status",
    "available",
    "names",
    "white_box",
    "find_faces",
    "largest_face",
]
