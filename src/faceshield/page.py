"""The web page's side of the declared options: how the Protect page and the Attack lab show
them (CONTROLS, LAB), the /protect API's schema (named arguments in a stable order, with a
version) and the typed requests the handlers receive, checked before any work.

Every event that does work hands its inputs raw (preprocess=False) and they are checked here:
numbers against the declared range, narrowed where the page bounds a web request's compute
(Gradio's slider check lets NaN through and fails with a TypeError on text), choices against
the page's lists, uploads handed to FaceShield's own loader untouched (Gradio has already
checked the file was uploaded here; its decoding would convert the photo first and, on a file
it cannot read, show the server path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faceshield import settings
from faceshield.protections import REGISTRY
from faceshield.protections.spec import EPS, NAMES, PATH, PHOTOS, STEPS, SUBSET, Param
from faceshield.settings import InputError, Knob


@dataclass(frozen=True)
class Control:
    """How the page shows one declared option: its control's text, where it sits (`group`:
    "main" above the advanced options, "advanced" inside them, any other text a heading inside
    them), its name in messages (`what`, default: the label), the choices' texts, and the
    range it offers and accepts (low/high, default: the declared range; the page narrows it
    where a web request's compute must stay bounded)."""

    label: str
    group: str = "main"
    what: str = ""
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choice_labels: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.what or self.label

    def knob(self, param: Param) -> Knob:
        """The range this control accepts for `param`: its own bounds, else the declared ones."""
        declared = param.knob(self.name)
        return Knob(
            self.name,
            declared.low if self.low is None else self.low,
            declared.high if self.high is None else self.high,
            integer=declared.integer,
        )

    def check(self, param: Param, value: Any) -> Any:
        """`value` as `param` takes it, within this control's range (InputError otherwise)."""
        return param.check(value, self.name, self.knob(param) if param.numeric else None)


IDENTITY = "Identity mask (TIP-IM)"  # the heading of TIP-IM's own options

# The Protect page's controls, by option name, or by (protection key, option name) for one
# protection's own way of showing it (an obfuscation's strength). An option listed nowhere
# stays off the page (the protection's default applies). The order here is the order of the
# /protect API's arguments.
CONTROLS: dict[str | tuple[str, str], Control] = {
    "eps": Control(
        "Strength: max change per pixel, in grey levels of 255 (RMS change over the faces with the L2 budget)",
        what="The budget (grey levels of 255)",
    ),
    "steps": Control("Maximum iterations", "advanced", low=10, high=settings.MAX_STEPS),
    "whole_image": Control("Protect the whole image when no face is found", "advanced", what="Protect the whole image"),
    "mode": Control(
        "Identity goal",
        IDENTITY,
        what="The identity goal",
        choice_labels=("Dodging: just do not match", "Targeted: look like a target identity"),
    ),
    "targets": Control(
        "Target identities (photos; default: built-in faces of example photos)", IDENTITY, what="target identity photos"
    ),
    "robust": Control(
        "Survive JPEG re-compression and resizing (slower)", IDENTITY, what="Survive JPEG re-compression"
    ),
    "norm": Control(
        "What the strength bounds",
        IDENTITY,
        choice_labels=("Max change per pixel (L-inf)", "Average (RMS) change over the faces (L2)"),
    ),
    # the person's own album: the mask leaves all of it behind, and the judging compares with it
    "same_person": Control(
        "Other photos of the same person (optional): protect against being linked to them",
        what="same-person photos",
    ),
    # Blur time grows linearly with sigma: the page stops at 20 (protections/obfuscation.py)
    ("blur", "strength"): Control(
        "Blur: sigma as % of the face size (more = stronger)",
        what="Blur strength (sigma, % of the face size)",
        low=1,
        high=20,
    ),
    ("pixelate", "strength"): Control(
        "Pixelate: blocks across the face (fewer = coarser)",
        what="Pixelate strength (blocks across the face)",
        high=64,  # beyond 64 blocks pixelation hides little
    ),
    ("mask", "strength"): Control("Mask: fill grey level (0-255)", what="Mask grey level"),
}

# The Attack lab's two numbers: the iterative attacks' own budget and iterations, the lab's
# iterations bounded lower (it keeps every iterate).
LAB: dict[str, tuple[Param, Control]] = {
    "eps": (EPS, Control("Budget (grey levels of 255)", what="The lab's budget (grey levels of 255)")),
    "steps": (STEPS, Control("Iterations", what="The lab's iterations", low=5, high=settings.LAB_MAX_STEPS)),
}


def control(key: str, name: str) -> Control | None:
    """How the page shows option `name` of protection `key` (None: it does not)."""
    return CONTROLS.get((key, name)) or CONTROLS.get(name)


def shown(key: str) -> dict[str, tuple[Param, Control]]:
    """The options of protection `key` that the page shows, by name: (declaration, control).
    A path (a weights file) is never asked of a web user."""
    out = {}
    for param in REGISTRY[key].params:
        if (c := control(key, param.name)) is not None and param.kind is not PATH:
            out[param.name] = (param, c)
    return out


# The /protect API: API_HEAD, the options the page shows (in CONTROLS order), API_TAIL. The
# version changes with any change to the arguments (tests/data/protect-api.json is the record).
API_VERSION = 2  # 2: same_person (other photos of the person, identity masks)
API_HEAD = ("image_path", "method")
API_TAIL = ("slow_judges", "reference_path")
KIND_NAMES = {
    float: "number",
    int: "integer",
    bool: "boolean",
    str: "text",
    NAMES: "names",
    SUBSET: "names",
    PHOTOS: "files",
    PATH: "file",
}


@dataclass(frozen=True)
class Argument:
    """One named argument of /protect: `accepts` is what any protection that shows it accepts
    (the union of their choices, the envelope of their ranges); `used_by` the protections that
    use it (the others ignore it, but it must still be such a value)."""

    name: str
    description: str
    accepts: Param
    used_by: tuple[str, ...] = ()
    what: str = ""  # its name in messages: its controls' one name, else `name`

    def record(self) -> dict[str, Any]:
        """The argument as the recorded schema lists it (JSON)."""
        p = self.accepts
        out: dict[str, Any] = {
            "name": self.name,
            "kind": KIND_NAMES.get(p.kind, str(p.kind)),
            "default": p.default,
            "description": self.description,
        }
        if p.numeric:
            out["range"] = [p.low, p.high]
        if p.choices:
            out["choices"] = list(p.choices)
        if self.used_by:
            out["used_by"] = list(self.used_by)
        return out


def option_arguments() -> dict[str, Argument]:
    """The /protect arguments that carry protection options, by name, in CONTROLS order."""
    users: dict[str, list[tuple[str, Param, Control]]] = {}
    for entry in CONTROLS:
        name = entry if isinstance(entry, str) else entry[1]
        for key in sorted(REGISTRY):
            if (pair := shown(key).get(name)) is not None and (pair[1] is CONTROLS[entry]):
                users.setdefault(name, []).append((key, *pair))
    out = {}
    for name, uses in users.items():
        params = [p for _, p, _ in uses]
        knobs = [c.knob(p) for _, p, c in uses if p.numeric]
        accepts = Param(
            name,
            None,
            "",
            kind=params[0].kind,
            low=min(k.low for k in knobs) if knobs else None,
            high=max(k.high for k in knobs) if knobs else None,
            choices=tuple(dict.fromkeys(c for p in params for c in p.choices)),
        )
        labels = dict.fromkeys(c.label for _, _, c in uses)
        text = " / ".join(labels) + " (empty: the protection's default)"
        names = list(dict.fromkeys(c.name for _, _, c in uses))
        what = names[0] if len(names) == 1 else name
        out[name] = Argument(name, text, accepts, tuple(sorted(key for key, _, _ in uses)), what)
    return out


def protect_api() -> list[Argument]:
    """The /protect endpoint's arguments, in order."""
    upload = Param("upload", None, "", kind=PATH)
    return [
        Argument("image_path", "the photo to protect (an uploaded file)", upload),
        Argument("method", "the protection", Param("method", None, "", kind=str, choices=tuple(sorted(REGISTRY)))),
        *option_arguments().values(),
        Argument("slow_judges", "also judge with the slow detectors", Param("slow_judges", False, "")),
        Argument("reference_path", "optional: another photo of the same person (an uploaded file)", upload),
    ]


def api_schema() -> dict[str, Any]:
    """The /protect API as a versioned record (docs/operations.md; tests/data/protect-api.json)."""
    return {"endpoint": "/protect", "version": API_VERSION, "arguments": [a.record() for a in protect_api()]}


def upload(payload: Any) -> str | None:
    """The path of an uploaded file from its raw payload (None: nothing uploaded)."""
    if payload is None:
        return None
    if not isinstance(payload, dict) or not payload.get("path"):
        raise InputError("This upload could not be read as a file.")
    return str(payload["path"])


def photo(payload: Any) -> str:
    """The uploaded photo's path (InputError when none was uploaded)."""
    source = upload(payload)
    if not source:
        raise InputError("Upload a photo first (or click an example).")
    return source


def choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{what} must be one of: {', '.join(choices)}.")
    return value


def choices(values: Any, allowed: tuple[str, ...], what: str) -> list[str]:
    """A list of distinct choices (a ticked CheckboxGroup), in the page's order."""
    if not isinstance(values, list) or not values:
        raise InputError(f"Tick at least one of {what}.")
    for value in values:
        choice(value, allowed, what)
    return [c for c in allowed if c in values]


def _option(value: Any, param: Param, control: Control) -> Any:
    """One option's raw value as `control` accepts it (empty: None, the protection's default);
    photo lists are bounded (settings.MAX_TARGETS) and each an upload."""
    if value is None or value == "" or (param.kind is PHOTOS and value == []):
        return None
    if param.kind is PHOTOS:
        if not isinstance(value, list):
            raise InputError(f"The {control.name} must be a list of photos.")
        if len(value) > settings.MAX_TARGETS:
            raise InputError(f"Give at most {settings.MAX_TARGETS} {control.name} (got {len(value)}).")
        return [upload(v) for v in value]
    return control.check(param, value)


@dataclass(frozen=True)
class ProtectRequest:
    """A checked /protect request: what service.protect_photo takes."""

    source: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)  # the options the chosen protection uses
    slow_judges: bool = False
    reference: str | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> ProtectRequest:
        """The raw /protect inputs by argument name, checked (InputError otherwise). An option
        the chosen protection shows is checked as its control accepts it; any other must still
        be a value the argument accepts (a grey level of 128 left by the mask passes, NaN or
        1e9 does not) and is not used."""
        method = choice(values.get("method"), tuple(REGISTRY), "The protection")
        own = shown(method)
        options = {}
        for name, argument in option_arguments().items():
            if name in own:
                options[name] = _option(values.get(name), *own[name])
            else:
                _option(values.get(name), argument.accepts, Control(argument.what))
        slow = values.get("slow_judges", False)
        if not isinstance(slow, bool):
            raise InputError("'Also run slow detectors' must be true or false.")
        return cls(photo(values.get("image_path")), method, options, slow, upload(values.get("reference_path")))

    def kwargs(self) -> dict[str, Any]:
        """service.protect_photo's keyword arguments."""
        return {
            "source": self.source,
            "method": self.method,
            "slow_judges": self.slow_judges,
            "reference": self.reference,
            **self.options,
        }

    @property
    def steps(self) -> int | None:
        steps = self.options.get("steps")
        return int(steps) if steps is not None else None


@dataclass(frozen=True)
class LabRequest:
    """A checked Attack-lab request (/lab: eps and steps; /sweep: steps, eps None)."""

    source: str
    method: str
    steps: int
    eps: float | None = None

    @classmethod
    def parse(cls, image_path: Any, method: Any, steps: Any, eps: Any = None, sweep: bool = False) -> LabRequest:
        from faceshield import lab

        method = choice(method, lab.lab_methods(), "The attack")
        eps_param, eps_control = LAB["eps"]
        steps_param, steps_control = LAB["steps"]
        budget = None if sweep else eps_control.check(eps_param, eps)
        iterations = steps_control.check(steps_param, steps)
        return cls(photo(image_path), method, int(iterations), budget)


@dataclass(frozen=True)
class CompareRequest:
    """A checked /compare request."""

    source: str
    methods: list[str]

    @classmethod
    def parse(cls, image_path: Any, methods: Any) -> CompareRequest:
        chosen = choices(methods, tuple(REGISTRY), "the protections to compare")
        return cls(photo(image_path), chosen)
