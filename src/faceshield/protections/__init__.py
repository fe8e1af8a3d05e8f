"""The protection methods, by CLI name: every Protection subclass registered with @register.

Importing this package imports each method's module, which registers it (base.register); a
protection defined anywhere else is registered the same way when its module is imported.
"""

# ruff: noqa: I001  (the imports' order is the registry's: the page's and --help's order)
from __future__ import annotations

from faceshield.protections.base import REGISTRY, Param, Protection, ProtectionResult, merge_faces, region_mask
from faceshield.protections.base import register
from faceshield.protections.spec import parse_setting
from faceshield.protections.detector_pgd import DetectorPGD
from faceshield.protections.generator import GeneratorProtection
from faceshield.protections.tip_im import TIPIM
from faceshield.protections.apf import APF
from faceshield.protections.obfuscation import GaussianBlur, GaussianNoise, Pixelate, SolidMask
from faceshield.protections.ddm import DDMEncryption

__all__ = [
    "REGISTRY",
    "Param",
    "Protection",
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
    "check_options",
    "declared",
    "method_key",
    "spec_options",
    "merge_faces",
    "region_mask",
    "register",
]


def method_key(spec: str) -> str:
    """ "blur@8" -> "blur": a method name, optionally @strength and :options (spec_options);
    KeyError if unknown."""
    key = spec.partition(":")[0].split("@", 1)[0]
    if key not in REGISTRY:
        raise KeyError(f"unknown method '{key}'; known: {', '.join(REGISTRY)}")
    return key


def spec_options(spec: str) -> tuple[str, dict]:
    """ "ddm:variant=paper" -> ("ddm", {"variant": "paper"}): options of this method alone,
    written after a colon as OPTION=VALUE, comma-separated (each value a Python literal, else
    text), so one bench run can hold one method with different options; "blur@8" -> ("blur@8", {})."""
    name, sep, rest = spec.partition(":")
    own = {}
    for item in rest.split(",") if sep else ():
        try:
            option, value = parse_setting(item)
        except ValueError:
            raise ValueError(f"expected METHOD:OPTION=VALUE[,OPTION=VALUE], got {spec!r}") from None
        own[option] = value
    return name, own


def build(key: str, **knobs) -> Protection:
    """A protection by CLI name from one shared set of knobs, e.g. build("detector-pgd", eps=8)
    or build("blur@16").

    "name@value" sets the strength (obfuscations at several strengths in one bench run);
    "name:option=value" sets an option of this method alone (spec_options). The
    page, compare and the bench pass one set of knobs (eps, steps, strength, attack, ...) to any
    method: the knobs another protection declares but this one does not are dropped, and None
    means "this protection's default". A knob no protection declares (a misspelling) is a
    TypeError naming the options there are. To be strict, call the class: REGISTRY[key](**options)
    refuses any option it does not declare.
    """
    key, own = spec_options(key)
    if own:
        check_options([key], own)
        knobs = {**knobs, **own}
    if "@" in key:
        knobs = {**knobs, "strength": float(key.split("@", 1)[1])}
    cls = REGISTRY[method_key(key)]
    check_options(list(REGISTRY), knobs)
    names = set(cls.param_names())
    return cls(**{k: v for k, v in knobs.items() if k in names and v is not None})


def check_options(keys, options) -> None:
    """TypeError unless every option in `options` is declared by at least one of the protections
    `keys` (one key: exactly that protection's options)."""
    keys = [method_key(k) for k in keys]
    allowed = set().union(*(REGISTRY[k].param_names() for k in keys))
    unknown = sorted(set(options) - allowed)
    if unknown:
        whose = keys[0] if len(keys) == 1 else "these protections"
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for {whose}; options: {', '.join(sorted(allowed))}")


def declared(keys=None) -> dict[str, list[tuple[str, Param]]]:
    """Every option name declared by the protections `keys` (default: all), in the order they
    are first declared, with each (protection key, its Param): what the CLI's flags, the page's
    controls and the checks of the page's inputs are made from."""
    out: dict[str, list[tuple[str, Param]]] = {}
    for key in keys or REGISTRY:
        for p in REGISTRY[key].params:
            out.setdefault(p.name, []).append((key, p))
    return out
