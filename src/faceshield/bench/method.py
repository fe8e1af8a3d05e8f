"""A bench row's method: the protection built from its spec and options, and its row label."""

from __future__ import annotations

from faceshield.protections import METHODS, build, method_key, spec_options


def label(method: str, options: dict) -> str:
    """The method's row name: its spec, plus each option it declares whose value differs from
    its default, as the declaration's `tag` reads ("tip-im [attacks facenet+sface, margin 0.5]";
    the spec's own options too: "ddm:variant=paper" -> "ddm [variant paper]")."""
    method, own = spec_options(method)
    options = {**options, **own}
    cls = METHODS[method_key(method)]
    shown = {p.name: p.describe_value(v) for p in cls.params if (v := options.get(p.name)) is not None}
    extra = []
    for p in cls.params:
        value = options.get(p.name)
        if value is None or p.tag == "" or _same(value, p.default):
            continue
        tag = p.tag if p.tag is not None else f"{p.name} {{value}}"
        extra.append(tag.format(**{**shown, "value": p.describe_value(value)}))
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
