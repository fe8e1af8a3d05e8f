"""The protection methods, by CLI name. Each entry builds a protection from keyword options."""

from __future__ import annotations

import inspect

from faceshield.protections.apf import APF
from faceshield.protections.base import ProtectionResult, merge_faces, region_mask
from faceshield.protections.ddm import DDMEncryption
from faceshield.protections.detector_pgd import DetectorPGD
from faceshield.protections.generator import GeneratorProtection
from faceshield.protections.obfuscation import GaussianBlur, GaussianNoise, Pixelate, SolidMask
from faceshield.protections.tip_im import TIPIM

METHODS = {
    cls.key: cls
    for cls in [
        DetectorPGD,
        GeneratorProtection,
        TIPIM,
        APF,
        GaussianBlur,
        Pixelate,
        SolidMask,
        DDMEncryption,
        GaussianNoise,
    ]
}

__all__ = [
    "METHODS",
    "ProtectionResult",
    "DetectorPGD",
    "GeneratorProtection",
    "TIPIM",
    "APF",
    "GaussianBlur",
    "Pixelate",
    "SolidMask",
    "DDMEncryption",
    "GaussianNoise",
    "build",
    "method_key",
    "merge_faces",
    "region_mask",
]


def method_key(spec: str) -> str:
    """ "blur@8" -> "blur": a method name, optionally @strength; KeyError if unknown."""
    key = spec.split("@", 1)[0]
    if key not in METHODS:
        raise KeyError(f"unknown method '{key}'; known: {', '.join(METHODS)}")
    return key


def build(key: str, **options):
    """A protection by CLI name, e.g. build("detector-pgd", eps=8) or build("blur@16").

    "name@value" sets the strength (obfuscations at several strengths in one bench run).
    Options another method takes but this one does not are dropped, so the UI, the CLI and the
    bench can pass one set of knobs (eps, steps, strength, attack, ...) to any method; an option
    that no method takes (a misspelling) is a TypeError naming the options there are.
    """
    if "@" in key:
        options = {**options, "strength": float(key.split("@", 1)[1])}
    cls = METHODS[method_key(key)]
    unknown = sorted(set(options) - _options_of_any_method())
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(_options_of_any_method()))}"
        )
    accepted = _options(cls)
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


def _options(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _options_of_any_method() -> set[str]:
    return set().union(*(_options(cls) for cls in METHODS.values()))
