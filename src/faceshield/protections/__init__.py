"""The protection methods, by CLI name. Each entry builds a protection from keyword options."""

from __future__ import annotations

from faceshield.protections.base import ProtectionResult, merge_faces, region_mask
from faceshield.protections.detector_pgd import DetectorPGD

METHODS = {cls.key: cls for cls in [DetectorPGD]}

__all__ = ["METHODS", "ProtectionResult", "DetectorPGD", "build", "merge_faces", "region_mask"]


def build(key: str, **options):
    """A protection by CLI name, e.g. build("detector-pgd", eps=8)."""
    if key not in METHODS:
        raise KeyError(f"unknown method '{key}'; known: {', '.join(METHODS)}")
    return METHODS[key](**options)
