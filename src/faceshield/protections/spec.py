"""What every protection is: a declared, registered callable from a photo to a protected photo.

A protection takes (H, W, 3) uint8 RGB pixels and returns a ProtectionResult whose pixels are
exactly what the user downloads (8-bit, so effects are judged after quantisation).

Each protection is one class: a subclass of Protection, registered with @register, that
declares its options once as Param records (name, kind, default, bounds, choices, help): the
domain only. How the CLI, the web page and the bench present an option (a flag, a control, a
row tag) is each adapter's own table (cli.py, page.py, bench/method.py), with fallbacks for an
option it does not list:

    @register
    class Sharpen(Protection):
        key, title, summary = "sharpen", "Sharpen", "unsharp mask of the face regions"
        params = (Param("amount", 1.0, "how much", low=0, high=5),)

        def __call__(self, pixels, faces=None) -> ProtectionResult: ...
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from faceshield.models import Detections
from faceshield.protections.results import ProtectionResult
from faceshield.settings import Knob

# What a Param's kind may be: a Python type of a single value, or one of these for a list.
NAMES = "names"  # a tuple of free strings (model registry keys)
SUBSET = "subset"  # a non-empty tuple of `choices`, in their order
PHOTOS = "photos"  # a list of (H, W, 3) uint8 photos (the CLI loads files)
PATH = "path"  # a file path (str)


@dataclass(frozen=True)
class Param:
    """One option of a protection, declared once: its domain only.

    name: the keyword (and, with dashes, its `--set` name); default: its value when not given
    (None only for optional inputs: photos, a path). kind: float, int, bool, str, or NAMES,
    SUBSET, PHOTOS, PATH (default: the default's type). low/high: the values it accepts
    anywhere (the CLI, the page, the bench); choices: the values a str (or SUBSET) may take.
    help: one line for --help and the docstring. How an adapter shows it (a flag, a control, a
    row tag) is in that adapter's table (cli.FLAGS, page.CONTROLS, bench.method.TAGS).
    """

    name: str
    default: Any
    help: str
    kind: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def __post_init__(self):
        if self.kind is None:
            kind = type(self.default) if self.default is not None else str
            object.__setattr__(self, "kind", NAMES if kind is tuple else kind)

    def but(self, **changes) -> Param:
        """A copy with some fields changed (one protection's default or help for a shared option)."""
        return dataclasses.replace(self, **changes)

    @property
    def numeric(self) -> bool:
        return self.kind in (int, float)

    def knob(self, what: str = "") -> Knob:
        """Its range as a settings.Knob, named `what` in messages (default: the option's name)."""
        return Knob(
            what or self.name,
            -math.inf if self.low is None else self.low,
            math.inf if self.high is None else self.high,
            integer=self.kind is int,
        )

    def range_text(self) -> str:
        """ "1 to 16", "at least 0", "" (no bounds)."""
        if self.low is not None and self.high is not None:
            return f"{self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"at least {self.low:g}"
        return f"at most {self.high:g}" if self.high is not None else ""

    def check(self, value, what: str = "", knob: Knob | None = None):
        """`value` as this option's kind, or ValueError (settings.InputError, whose message is
        for the user) when it is not one it accepts. `what` names it in the message (default:
        its name); a number must lie in `knob` (default: its own range; an adapter may pass a
        narrower one, e.g. the page's bound on a web request's compute)."""
        from faceshield.settings import InputError

        what = what or self.name
        if value is None:
            if self.default is None:
                return None
            raise InputError(f"{what} must be given.")
        if self.numeric:
            return (knob or self.knob(what)).check(value)
        if self.kind is bool:
            if not isinstance(value, bool | np.bool_):
                raise InputError(f"'{what}' must be true or false.")
            return bool(value)
        if self.kind in (str, PATH):
            if self.choices and (not isinstance(value, str) or value not in self.choices):
                raise InputError(f"{what} must be one of: {', '.join(self.choices)}.")
            if not isinstance(value, str):
                raise InputError(f"{what} must be text.")
            return value
        if self.kind in (NAMES, SUBSET):
            values = (value,) if isinstance(value, str) else value
            if not isinstance(values, list | tuple) or not values or not all(isinstance(v, str) for v in values):
                raise InputError(f"{what} must be a non-empty list of names.")
            if self.kind is SUBSET:
                unknown = [v for v in values if v not in self.choices]
                if unknown:
                    raise InputError(f"{what} must be among: {', '.join(self.choices)} (got {', '.join(unknown)}).")
                return tuple(c for c in self.choices if c in values)
            return tuple(values)
        if self.kind is PHOTOS:
            if not isinstance(value, list | tuple):
                raise InputError(f"{what} must be a list of photos.")
            return list(value)
        return value

    def describe_value(self, value) -> str:
        """The value as a row label shows it: 8.0 -> "8", ("a", "b") -> "a+b"."""
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, tuple | list):
            return "+".join(map(str, value))
        if self.kind == PATH:  # the file's name: which weights, not where they sit
            return Path(str(value)).name
        return str(value)


class Protection:
    """The base of every protection: declared options, a registry key, a summary text.

    A subclass sets `key` (its CLI name), `title` (the page's name), `summary` (one line for
    --help), `params` (its Param records) and implements __call__(pixels, faces=None) ->
    ProtectionResult. Options are keywords only; each is checked against its declaration and
    kept as an attribute of the same name; an option it does not declare is a TypeError.
    `prepare()` runs after that, for checks and state that depend on several options.
    """

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    attacks: ClassVar[tuple[str, ...]] = ()  # the models it attacks white-box by default
    hides: ClassVar[str] = ""  # "faces" (from detectors), "identity" (from recognisers), "" (visible change)
    per_face_cost: ClassVar[bool] = False  # its cost grows with the faces (settings.MAX_FACES applies)
    traceable: ClassVar[bool] = False  # __call__ takes on_step(step, pixels, loss) (the Attack lab)
    reversible: ClassVar[bool] = False  # it has decrypt(patch) (an authorised reconstruction)

    def __init__(self, **options):
        names = self.param_names()
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"{self.key} takes no option(s) {', '.join(unknown)}; its options: {', '.join(names) or 'none'}"
            )
        for p in self.params:
            value = options.get(p.name)
            setattr(self, p.name, p.default if value is None else p.check(value))
        self.prepare()

    def prepare(self) -> None:
        """Checks and state after the options are set (default: nothing)."""

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        raise NotImplementedError

    @property
    def attack(self) -> tuple[str, ...]:
        """The registry keys of the models this protection attacks white-box (an `attack`
        option, where declared, sets them)."""
        return self.__dict__.get("_attack", tuple(self.attacks))

    @attack.setter
    def attack(self, value) -> None:
        self.__dict__["_attack"] = tuple(value)

    @classmethod
    def param_names(cls) -> list[str]:
        return [p.name for p in cls.params]

    @classmethod
    def param(cls, name: str) -> Param | None:
        return next((p for p in cls.params if p.name == name), None)

    def options(self) -> dict:
        """The options in force, by name."""
        return {p.name: getattr(self, p.name) for p in self.params}

    def load_weights(self) -> None:
        """Load trained weights now, so a missing file fails before the work (default: none)."""

    def setting(self) -> str:
        """What the summary says it ran at when there is no budget ("strength 8"; default: nothing)."""
        return ""

    def describe(self, result: ProtectionResult) -> str:
        """The summary line (markdown) of `result`, e.g. "**1 face(s) protected** with
        `detector-pgd` at L-inf 8/255 (used 6) in **4.2 s** (31 steps against MTCNN: goal
        reached on the 8-bit image)."."""
        whole = result.faces_protected == 0 and result.budget is not None and result.budget.used > 0
        who = "The whole photo" if whole else f"{result.faces_protected} face(s)"  # no face found, perturbed anyway
        text = f"**{who} protected** with `{self.key}`"
        if result.budget is not None:
            text += f" at {result.budget}"
        elif self.setting():
            text += f" at {self.setting()}"
        text += f" in **{result.seconds:.1f} s**"
        if result.steps is not None:
            goal = {True: "goal reached", False: "goal NOT reached", None: "no goal"}[result.success]
            text += f" ({result.steps} steps against {', '.join(result.info.get('attacked', self.attack))}: {goal}"
            text += " on the 8-bit image)."
        else:
            text += "."
        return text


REGISTRY: dict[str, type[Protection]] = {}


def register(cls: type[Protection]) -> type[Protection]:
    """Class decorator: make `cls` a protection by its `key` (the CLI name, the page's choice,
    the bench's method). Its Args are added to its docstring from the declarations."""
    if not cls.key or not issubclass(cls, Protection):
        raise TypeError(f"{cls.__name__}: a registered protection is a Protection with a key")
    names = cls.param_names()
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: an option is declared twice in {names}")
    if cls.params and "Args:" not in (cls.__doc__ or ""):
        args = "\n".join(f"        {p.name}: {p.help} (default {p.default!r})" for p in cls.params)
        cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n    Args:\n" + args + "\n"
    REGISTRY[cls.key] = cls
    return cls


# Options several protections declare (each may change its default or help with .but()).
EPS = Param(
    "eps",
    8.0,
    "budget in grey levels out of 255: L-inf, or with norm l2 the RMS change over the face regions",
    low=1,
    high=16,
)
STEPS = Param("steps", 80, "maximum iterations", low=1)
WHOLE_IMAGE = Param("whole_image", False, "with no face found, still protect the whole photo")
ATTACK = Param("attack", (), "white-box models to attack (registry keys, e.g. facenet sface)", kind=NAMES)
WEIGHTS = Param(
    "weights_path",
    None,
    "a .safetensors file to use instead of the shipped one (e.g. a training run's export)",
    kind=PATH,
)
FACE_MARGIN = Param("face_margin", 0.25, "how far around each face box (x its size) the change may reach", low=0)
SEED = Param("seed", 0, "random seed", low=0)


def parse_setting(text: str) -> tuple[str, Any]:
    """ "smoothing=0.02" -> ("smoothing", 0.02): an OPTION=VALUE setting (--set, a bench spec's
    options), the value a Python literal, else text; dashes in the name read as underscores.
    ValueError when it is not OPTION=VALUE."""
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected OPTION=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip().replace("-", "_"), parsed
