"""What every protection is: a declared, registered callable from a photo to a protected photo.

A protection takes (H, W, 3) uint8 RGB pixels and returns a ProtectionResult whose pixels are
exactly what the user downloads (8-bit, so effects are judged after quantisation).

Each protection is one class: a subclass of Protection, registered with @register, that
declares its options once as Param records (name, default, bounds, help, where the page shows
it). The CLI's flags, the web page's controls, the server's checks of what the page sends and
the bench's row labels are all made from those declarations (cli.py, app.py, bench/method.py):

    @register
    class Sharpen(Protection):
        key, title, summary = "sharpen", "Sharpen", "unsharp mask of the face regions"
        params = (Param("amount", 1.0, "how much", low=0, high=5, label="Amount", group="main"),)

        def __call__(self, pixels, faces=None) -> ProtectionResult: ...
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from faceshield.boxes import grow
from faceshield.models import Detections
from faceshield.settings import MAX_STEPS, Knob
from faceshield.tensors import to_uint8  # noqa: F401 (the attacks' import place)


@dataclass(frozen=True)
class Budget:
    """The perturbation budget of an adversarial protection and what it really used, both in
    grey levels of 255: L-inf (the largest change of any value) or, for norm "l2", the RMS
    change over the face regions."""

    norm: str  # "linf" or "l2"
    eps: float  # the bound asked for
    used: float  # the same measure of the change actually made (<= eps)

    def __str__(self) -> str:
        what = "L-inf" if self.norm == "linf" else "L2 (RMS over the faces)"
        return f"{what} {self.eps:g}/255 (used {self.used:.3g})"

    @classmethod
    def measure(cls, norm: str, eps: float, before: np.ndarray, after: np.ndarray, mask=None) -> Budget:
        """The budget `eps` under `norm`, with the change from `before` to `after` ((H, W, 3)
        uint8) measured the same way; `mask` ((H, W), 1 on the face regions) for "l2"."""
        diff = after.astype(np.float64) - before.astype(np.float64)
        if norm == "l2":
            area = 3 * float(np.sum(mask)) if mask is not None else diff.size
            used = math.sqrt(float(np.sum(diff**2)) / max(area, 1.0))
        else:
            used = float(np.abs(diff).max()) if diff.size else 0.0
        return cls(norm, float(eps), used)


@dataclass
class ProtectionResult:
    """What a protection returns. `pixels`, `faces`, `seconds`, `info` and `notices` may be
    given by position (as before); the typed fields below are keywords."""

    pixels: np.ndarray  # (H, W, 3) uint8, the protected photo
    faces: Detections  # the faces (on the clean photo) that the protection worked on
    seconds: float
    info: dict = field(default_factory=dict)  # method diagnostics: losses, parts, timings...
    notices: list[str] = field(default_factory=list)  # things the user should know
    faces_protected: int | None = None  # default: len(faces)
    steps: int | None = None  # iterations run (None: not an iterative method)
    success: bool | None = None  # did it reach its goal against the models it attacked (None: no goal)
    budget: Budget | None = None  # None: no perturbation budget (a visible obfuscation)
    # a method made of parts (APF): the photo each part alone gives, computed in the same pass
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if self.faces_protected is None:
            self.faces_protected = len(self.faces)
        # older readers look these up in info
        for key in ("steps", "success"):
            if getattr(self, key) is not None:
                self.info.setdefault(key, getattr(self, key))


def no_identity_to_hide(pixels: np.ndarray, faces: Detections, start: float, **typed) -> ProtectionResult:
    """The result of an identity protection on a photo without a face: unchanged, and said so."""
    return ProtectionResult(
        pixels.copy(),
        faces,
        time.perf_counter() - start,
        notices=["No face found: there is no identity to hide; the photo was left unchanged."],
        **typed,
    )


# What a Param's kind may be: a Python type of a single value, or one of these for a list.
NAMES = "names"  # a tuple of free strings (model registry keys)
SUBSET = "subset"  # a non-empty tuple of `choices`, in their order
PHOTOS = "photos"  # a list of (H, W, 3) uint8 photos (the CLI loads files)
PATH = "path"  # a file path (str)


@dataclass(frozen=True)
class Param:
    """One option of a protection, declared once.

    name: the keyword (and, with dashes, its `--set` name); default: its value when not given
    (None only for optional inputs: photos, a path). kind: float, int, bool, str, or NAMES,
    SUBSET, PHOTOS, PATH (default: the default's type). low/high: the values it accepts
    anywhere; choices: the values a str (or SUBSET) may take. help: one line for --help and
    the docstring.

    The CLI: `flag` gives it a flag of its own ("--eps"; shared by every protection that
    declares the name); without one it is reached with --set name=value.
    The web page: `group` "" keeps it off the page; "main" shows it above the advanced options,
    "advanced" inside them, any other text under that heading inside them. `label` is the
    control's text, `what` its name in error messages (default: label), `choice_labels` the
    choices' texts, `page_low`/`page_high` the range the page offers and the server accepts
    (default: low/high; a web request's compute is bounded there). `step` is the slider's.
    The bench: `tag` is how a non-default value reads in a row label, formatted with {value}
    and the other options by name ("margin {value}"); "" leaves it out.
    """

    name: str
    default: Any
    help: str
    kind: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    flag: str = ""
    metavar: str = ""
    group: str = ""
    label: str = ""
    what: str = ""
    choice_labels: tuple = ()
    page_low: float | None = None
    page_high: float | None = None
    step: float | None = None
    tag: str | None = None

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

    @property
    def message_name(self) -> str:
        return self.what or self.label or self.name

    def knob(self, page: bool = False) -> Knob:
        """Its range as a settings.Knob (the page's range with page=True)."""
        low = self.page_low if page and self.page_low is not None else self.low
        high = self.page_high if page and self.page_high is not None else self.high
        return Knob(
            self.message_name,
            -math.inf if low is None else low,
            math.inf if high is None else high,
            integer=self.kind is int,
        )

    def check(self, value, page: bool = False):
        """`value` as this option's kind, or ValueError (settings.InputError, whose message is
        for the user) when it is not one it accepts; with page=True, within the page's range."""
        from faceshield.settings import InputError

        what = self.message_name
        if value is None:
            if self.default is None:
                return None
            raise InputError(f"{what} must be given.")
        if self.numeric:
            return self.knob(page).check(value)
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

    def describe(self, result: ProtectionResult) -> str:
        """The summary line (markdown) of `result`, e.g. "**1 face(s) protected** with
        `detector-pgd` at L-inf 8/255 (used 6) in **4.2 s** (31 steps against MTCNN: goal
        reached on the 8-bit image)."."""
        whole = result.faces_protected == 0 and result.budget is not None and result.budget.used > 0
        who = "The whole photo" if whole else f"{result.faces_protected} face(s)"  # no face found, perturbed anyway
        text = f"**{who} protected** with `{self.key}`"
        if result.budget is not None:
            text += f" at {result.budget}"
        elif self.param("strength") is not None and self.param("strength").group:
            text += f" at strength {self.strength:g}"
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
# The page's budget and iterations are bounded (settings.MAX_STEPS): a web request's compute.
EPS = Param(
    "eps",
    8.0,
    "budget in grey levels out of 255: L-inf, or with norm l2 the RMS change over the face regions",
    low=0,
    high=255,
    flag="--eps",
    group="main",
    label="Strength: max change per pixel, in grey levels of 255 (RMS change over the faces with the L2 budget)",
    what="The budget (grey levels of 255)",
    page_low=1,
    page_high=16,
    tag="",
)
STEPS = Param(
    "steps",
    80,
    "maximum iterations",
    low=1,
    flag="--steps",
    group="advanced",
    label="Maximum iterations",
    page_low=10,
    page_high=MAX_STEPS,
    tag="{value} steps",
)
WHOLE_IMAGE = Param(
    "whole_image",
    False,
    "with no face found, still protect the whole photo",
    flag="--whole-image",
    group="advanced",
    label="Protect the whole image when no face is found",
    what="Protect the whole image",
    tag="",
)
ATTACK = Param(
    "attack",
    (),
    "white-box models to attack (registry keys, e.g. facenet sface)",
    kind=NAMES,
    flag="--attack",
    metavar="MODEL",
    tag="attacks {value}",
)
WEIGHTS = Param(
    "weights_path",
    None,
    "a .safetensors file to use instead of the shipped one (e.g. a training run's export)",
    kind=PATH,
    flag="--weights",
    metavar="FILE",
    tag="weights {value}",
)
FACE_MARGIN = Param("face_margin", 0.25, "how far around each face box (x its size) the change may reach", low=0)
SEED = Param("seed", 0, "random seed", low=0)


def region_mask(shape: tuple[int, int], boxes: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """(H, W) float32 mask, 1 inside each box grown by `margin` x its size on every side.

    Confining the perturbation to the faces is what keeps PSNR high: the same budget spread
    over the whole photo costs ~30 dB at 8/255.
    """
    mask = np.zeros(shape[:2], np.float32)
    for box in np.asarray(boxes, np.float32).reshape(-1, 4):
        r0, r1, c0, c1 = grow(box, margin, shape)
        mask[r0:r1, c0:c1] = 1.0
    return mask


def merge_faces(detections: list[Detections], iou: float = 0.4) -> Detections:
    """Union of several detectors' faces, overlapping boxes merged (keeps the larger score)."""
    import torch
    from torchvision.ops import nms

    parts = [d for d in detections if len(d)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([d.boxes for d in parts])
    # Detectors score on different scales; rank by detector order, then score.
    rank = np.concatenate([np.full(len(d), -i, np.float32) * 1e3 + d.scores for i, d in enumerate(parts)])
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(rank), iou).numpy()
    return Detections(boxes[keep], np.concatenate([d.scores for d in parts])[keep])


def momentum_step(delta, grad, grad_avg, x0, eps: float, step_size: float, momentum: float):
    """One MI-FGSM step (Dong et al. 2018) in whole grey levels, in place on `delta`.

    delta, grad, grad_avg, x0: (1, 3, H, W) tensors in grey levels; returns the new grad_avg.
    Descends the loss, keeps |delta| <= eps, whole numbers (so x0 + delta is already the 8-bit
    photo) and x0 + delta inside [0, 255].
    """
    import torch

    with torch.no_grad():
        grad_avg = momentum * grad_avg + grad / grad.abs().mean().clamp_min(1e-12)
        delta -= step_size * grad_avg.sign()
        delta.clamp_(-eps, eps)
        delta.copy_(torch.round(delta))
        delta.copy_((x0 + delta).clamp(0, 255) - x0)
    return grad_avg


def l2_step(delta, grad, grad_avg, x0, mask, radius: float, step: float, momentum: float):
    """One momentum step under an L2 budget, in place on `delta` (float grey levels): move
    `step` (L2, grey levels) along the momentum direction, project onto the ball of `radius`
    and keep x0 + delta inside [0, 255]. Rounding waits for l2_round(): under an L2 budget a
    step spread over the face is far less than a grey level per pixel."""
    import torch

    with torch.no_grad():
        grad = grad * mask
        grad_avg = momentum * grad_avg + grad / grad.norm().clamp_min(1e-12)
        delta -= step * grad_avg / grad_avg.norm().clamp_min(1e-12)
        delta *= (radius / delta.norm().clamp_min(1e-12)).clamp(max=1.0)
        delta.copy_((x0 + delta).clamp(0, 255) - x0)
    return grad_avg


def l2_round(delta, x0, radius: float):
    """Whole grey levels with the L2 norm still <= radius: round; while rounding pushed the
    norm over, round a slightly shrunk delta instead (ends: at scale 0 the norm is 0)."""
    import torch

    with torch.no_grad():
        scale, out = 1.0, torch.round(delta)
        while out.norm() > radius:
            scale *= 0.98
            out = torch.round(delta * scale)
        return (x0 + out).clamp(0, 255) - x0


class EarlyStop:
    """The iterative attacks' stopping rule, judged on the 8-bit photo.

    Every `check_every` steps (and at step 0 with check_first; at once when the surrogate loss
    reaches zero with zero_stops) judge() tests the real models on the 8-bit image; once it
    holds, `extra_steps` more steps stand some distance from the threshold, then the attack
    stops with success. zero_required: judge only when the loss is zero (the margin is met).
    zero_stops: a zero loss also ends the attack, judged or not (no gradient is left).

        stop = EarlyStop(4, 2, zero_stops=True)
        for step in range(steps):
            loss = ...
            if stop(step, float(loss), judge):
                break
            ...  # the gradient step
        stop.success, stop.reached  # goal held (and the extra steps were taken); judge() held once
    """

    def __init__(
        self,
        check_every: int,
        extra_steps: int,
        zero_stops: bool = False,
        zero_required: bool = False,
        check_first: bool = False,
    ):
        self.check_every, self.extra_steps, self.check_first = check_every, extra_steps, check_first
        self.zero_stops, self.zero_required = zero_stops, zero_required
        self.extra: int | None = None  # steps still to take after judge() held
        self.success = False

    @property
    def reached(self) -> bool:
        return self.extra is not None

    def __call__(self, step: int, loss: float, judge) -> bool:
        """Stop now? (after this step's loss, before its gradient step)"""
        zero = loss == 0.0
        due = step % self.check_every == self.check_every - 1 or (step == 0 and self.check_first)
        if self.extra is None and (due or (self.zero_stops and zero)) and (zero or not self.zero_required):
            if judge():
                self.extra = self.extra_steps
        if self.extra is not None:
            if self.extra == 0 or (self.zero_stops and zero):
                self.success = True
                return True
            self.extra -= 1
            return False
        return self.zero_stops and zero


@dataclass
class AttackRun:
    """What iterate() did: the steps taken and the loss value of each."""

    steps: int = 0
    history: list[float] = field(default_factory=list)


def iterate(
    name: str,
    delta,
    x0,
    m,
    objective,
    judge,
    stop: EarlyStop,
    steps: int,
    eps: float,
    step_size: float,
    momentum: float,
    norm: str = "linf",
    radius: float | None = None,
    smooth=None,
    on_step=None,
    notices: list[str] | None = None,
) -> AttackRun:
    """The iterative attacks' loop (detector-pgd, TIP-IM), on the perturbation x0 + delta * m.

    delta: (1, 3, H, W) grey levels, requires_grad, changed in place; x0 the clean photo in grey
    levels, m the (1, 1, H, W) face-region mask. Each step: the request's cancellation and
    deadline (check_stop: a deadline ends the loop with a notice added to `notices`);
    objective(step) -> (loss tensor to descend, its value to log and judge); the lab's
    on_step(step, the 8-bit photo, value); a tqdm progress bar (the page follows it); the
    stopping rule stop(step, value, judge) judged on the 8-bit photo; then one momentum step of
    the gradient (smooth(grad) first, if given): whole grey levels within the L-inf budget eps
    (momentum_step), or with norm "l2" inside the ball of `radius` (l2_step; round after with
    l2_round).
    """
    import torch
    from tqdm.auto import tqdm

    run, grad_avg = AttackRun(), torch.zeros_like(x0)
    bar = tqdm(range(steps), desc=name, leave=False)
    for step in bar:
        if (late := check_stop(step)) is not None:  # the request's time is up
            if notices is not None:
                notices.append(late)
            break
        loss, value = objective(step)
        run.steps = step + 1
        run.history.append(value)
        if on_step is not None:
            on_step(step, to_uint8(x0 + delta.detach() * m), value)
        bar.set_postfix(loss=f"{value:.3f}")
        if stop(step, value, judge):
            break
        (grad,) = torch.autograd.grad(loss, delta)
        if smooth is not None:
            grad = smooth(grad)
        if norm == "l2":
            grad_avg = l2_step(delta, grad, grad_avg, x0, m, radius, step_size * radius / 8, momentum)
        else:
            grad_avg = momentum_step(delta, grad * m, grad_avg, x0, eps, step_size, momentum)
    bar.close()
    return run


def white_box_models(keys) -> tuple[list, dict[str, str]]:
    """The differentiable models among `keys` that load here, and {key: reason} for the rest;
    RuntimeError when none is left to attack."""
    from faceshield import models

    loaded, missing = models.available(list(keys))
    usable = [m for m in loaded.values() if m.differentiable]
    if not usable:
        raise RuntimeError(f"no white-box model available among {tuple(keys)}: {missing}")
    return usable, missing


class feature_dropout:
    """Model augmentation for transfer (DFANet: Zhong and Deng, "Towards Transferable
    Adversarial Attack against Deep Face Recognition", IEEE TIFS 2020): while active, every
    convolution of the given models drops each output value with probability `p` (rescaled, as
    in training-mode dropout), so each attack step sees a slightly different network and the
    perturbation cannot lean on any one feature. p = 0 does nothing. The models' torch modules
    are found among their attributes; their weights are never changed.

        with feature_dropout(recognisers, 0.1, generator):
            loss = ...  # forward and backward passes of the attack step
    """

    def __init__(self, models, p: float, generator=None):
        self.p, self.models, self.generator, self.handles = p, models, generator, []

    def __enter__(self):
        import torch

        if self.p <= 0:
            return self
        p, generator = self.p, self.generator

        def hook(module, inputs, output):
            keep = torch.rand(output.shape, generator=generator, device=output.device) >= p
            return output * keep / (1 - p)

        seen = set()
        for model in self.models:
            for value in vars(model).values():
                if isinstance(value, torch.nn.Module):
                    for module in value.modules():
                        if isinstance(module, torch.nn.Conv2d) and id(module) not in seen:
                            seen.add(id(module))
                            self.handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        return False


class mid_features:
    """Capture one intermediate feature map per model (a feature-level objective, as in FIA /
    ILA-style transfer attacks): the output of the convolution at `depth` (0-1) through each
    model's torch network, in the order the convolutions were registered. After a forward pass
    of model i, `self.last[i]` holds its feature map (with its graph).

        with mid_features(recognisers, 0.5) as mid:
            rec.embed_tensor(x, lm); f = mid.last[0]
    """

    def __init__(self, models, depth: float = 0.5):
        self.models, self.depth, self.handles, self.last = models, depth, [], {}

    def __enter__(self):
        import torch

        for i, model in enumerate(self.models):
            convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
            if not convs:
                continue
            layer = convs[min(len(convs) - 1, int(self.depth * len(convs)))]

            def hook(module, inputs, output, i=i):
                self.last[i] = output

            self.handles.append(layer.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.last.clear()
        return False


# Bounded compute: a request runs its attacks inside `stop_when(event, seconds)`; every
# iterative loop calls check_stop() once per step. A cancelled request (the event is set)
# ends the loop with Cancelled; a request past its deadline keeps the best result so far
# and says so. Gradio cannot kill a handler's worker thread, so the loop has to look.


class Cancelled(Exception):
    """The request that asked for this attack was cancelled or its client went away."""


@dataclass
class _Stop:
    event: threading.Event | None
    deadline: float | None
    seconds: float | None


_stop: contextvars.ContextVar[_Stop | None] = contextvars.ContextVar("faceshield_stop", default=None)
steps_checked = 0  # attack steps seen by check_stop() in this process (tests read it)


@contextlib.contextmanager
def stop_when(event: threading.Event | None = None, seconds: float | None = None):
    """Inside this block check_stop() raises Cancelled once `event` is set and reports the
    deadline `seconds` from now (None: no deadline). Nested inside another, it keeps the outer
    event when given none."""
    deadline = time.monotonic() + seconds if seconds else None
    outer = _stop.get()
    if event is None and outer is not None:
        event = outer.event
    token = _stop.set(_Stop(event, deadline, seconds))
    try:
        yield
    finally:
        _stop.reset(token)


def check_cancelled() -> None:
    """Raises Cancelled if the request was cancelled (for work that is not an attack step:
    judging a result face by face)."""
    stop = _stop.get()
    if stop is not None and stop.event is not None and stop.event.is_set():
        raise Cancelled


def check_stop(step: int) -> str | None:
    """Called once per attack step: raises Cancelled if the request was cancelled; returns a
    notice for the user when the request's time is up (the loop then stops and keeps its best
    result so far); None otherwise."""
    global steps_checked
    steps_checked += 1
    stop = _stop.get()
    if stop is None:
        return None
    if stop.event is not None and stop.event.is_set():
        raise Cancelled
    if stop.deadline is not None and time.monotonic() > stop.deadline:
        return (
            f"Stopped after {step} steps: the time limit of {stop.seconds:g} s per request was reached, "
            "so this is the best result so far."
        )
    return None
