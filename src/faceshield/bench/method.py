"""A bench row's method: the protection built from its spec and options, and its row label."""

from __future__ import annotations

from faceshield.protections import REGISTRY, build, method_key, spec_options

# How a non-default option value reads in a row label, by option name: formatted with {value}
# and the other options by name; "" leaves the option out. An option not listed reads
# "name value" (DEFAULT_TAG).
TAGS: dict[str, str] = {
    "eps": "",  # the results' own column
    "strength": "",  # in the method's spec (blur@8)
    "whole_image": "",
    "targets": "",
    "steps": "{value} steps",
    "attack": "attacks {value}",
    "weights_path": "weights {value}",
    "mode": "{value}",
    "margin": "margin {value}",
    "robust": "robust",
    "norm": "L2 {eps}",
    "model_dropout": "model dropout {value}",
    "parts": "{value}",
    "variant": "variant {value}",
    "same_person": "person set",
    "max_eps": "ladder to {value}",
    "work_size": "work {value} px",
    "align_jitter": "align {value}",
    "surrogates_per_step": "{value} per step",
    "validate_with": "validated by {value}",
}
DEFAULT_TAG = "{name} {value}"


def label(method: str, options: dict) -> str:
    """The method's row name: its spec, plus each option it declares whose value differs from
    its default, as its TAGS entry reads ("tip-im [attacks facenet+sface, margin 0.5]";
    the spec's own options too: "ddm:variant=paper" -> "ddm [variant paper]")."""
    method, own = spec_options(method)
    options = {**options, **own}
    cls = REGISTRY[method_key(method)]
    shown = {p.name: p.describe_value(v) for p in cls.params if (v := options.get(p.name)) is not None}
    extra = []
    for p in cls.params:
        value = options.get(p.name)
        tag = TAGS.get(p.name, DEFAULT_TAG)
        if value is None or not tag or _same(value, p.default):
            continue
        extra.append(tag.format(**{**shown, "name": p.name, "value": p.describe_value(value)}))
    return f"{method} [{', '.join(extra)}]" if extra else method


def _same(value, default) -> bool:
    if isinstance(value, list | tuple) and isinstance(default, list | tuple):
        return tuple(value) == tuple(default)
    return value == default


def build_method(method: str, options: dict):
    """The protection, and the registry keys it attacks white-box or consults while it works
    (held-back validating recognisers): none of them counts as a black-box judge."""
    protection = build(method, **options)
    return protection, tuple(protection.attack) + tuple(getattr(protection, "validate_with", ()))
