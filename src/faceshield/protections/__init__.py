"""The protection methods, by CLI name. Each entry builds a protection from keyword options."""

from __future__ import annotations

import inspect

from faceshield.protections.base import ProtectionResult, merge_faces, region_mask
from faceshield.protections.detector_pgd import DetectorPGD
from faceshield.protections.obfuscation import GaussianBlur, GaussianNoise, Pixelate, SolidMask
from faceshield.protections.tip_im import TIPIM

METHODS = {cls.key: cls for cls in [DetectorPGD, TIPIM, GaussianBlur, Pixelate, SolidMask, GaussianNoise]}

__all__ = ["METHODS", "ProtectionResult", "DetectorPGD", "GaussianBlur", "Pixelate", "SolidMask", "GaussianNoise", "TIPIM",
           "build", "merge_faces", "region_mask"]


def build(key: str, **options):
    """A protection by CLI name, e.g. build("detector-pgd", eps=8).

    Options a method does not take are dropped, so the UI and CLI can pass their common
    knobs (eps, steps, strength, whole_image) to any method.
    """
    if key not in METHODS:
        raise KeyError(f"unknown method '{key}'; known: {', '.join(METHODS)}")
    cls = METHODS[key]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
