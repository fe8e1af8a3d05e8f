"""The iterative attacks' optimisation loop (detector-pgd, TIP-IM) and its parts: the momentum
steps under an L-inf or L2 budget, the stopping rule judged on the 8-bit photo, and two model
hooks for transfer (feature dropout, mid-level features)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from faceshield.protections.cancel import check_stop
from faceshield.tensors import to_uint8

Tensor = Any  # a torch.Tensor (torch is not type-checked here: pyproject.toml)


def momentum_step(
    delta: Tensor, grad: Tensor, grad_avg: Tensor, x0: Tensor, eps: float, step_size: float, momentum: float
) -> Tensor:
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


def l2_step(
    delta: Tensor, grad: Tensor, grad_avg: Tensor, x0: Tensor, mask: Tensor, radius: float, step: float, momentum: float
) -> Tensor:
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


def l2_round(delta: Tensor, x0: Tensor, radius: float) -> Tensor:
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
    patience: also end it, without success (`stalled`), when the lowest loss of the last
    `patience` steps is less than `min_gain` below the lowest before them (a budget ladder then
    climbs at once instead of spending the rest of a rung's steps on a plateau); 0: never.

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
        patience: int = 0,
        min_gain: float = 0.05,
    ):
        self.check_every, self.extra_steps, self.check_first = check_every, extra_steps, check_first
        self.zero_stops, self.zero_required = zero_stops, zero_required
        self.patience, self.min_gain = patience, min_gain
        self.losses: list[float] = []
        self.extra: int | None = None  # steps still to take after judge() held
        self.success = self.stalled = False

    @property
    def reached(self) -> bool:
        return self.extra is not None

    def __call__(self, step: int, loss: float, judge: Callable[[], bool]) -> bool:
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
        self.losses.append(loss)
        if self.patience and len(self.losses) >= 2 * self.patience:
            before, recent = min(self.losses[: -self.patience]), min(self.losses[-self.patience :])
            if recent > (1 - self.min_gain) * before:
                self.stalled = True
                return True
        return self.zero_stops and zero


@dataclass
class AttackRun:
    """What iterate() did: the steps taken and the loss value of each."""

    steps: int = 0
    history: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs: its name (the progress bar's), at most `steps` steps, each a momentum
    step of `step_size` grey levels within the L-inf budget `eps` (norm "linf"), or with norm
    "l2" inside the ball of `radius` grey levels; smooth(grad), if given, filters each gradient
    first (translation invariance)."""

    name: str
    steps: int
    eps: float
    step_size: float
    momentum: float = 1.0
    norm: str = "linf"
    radius: float | None = None
    smooth: Callable[[Tensor], Tensor] | None = None


@dataclass
class Perturbation:
    """What the loop changes: `delta` ((1, 3, H, W) grey levels, requires_grad, changed in place)
    added to the clean photo `x0` (grey levels) inside the (1, 1, H, W) face-region `mask`."""

    delta: Tensor
    x0: Tensor
    mask: Tensor

    def photo(self) -> np.ndarray:
        """The 8-bit photo now: x0 + delta inside the mask."""
        return to_uint8(self.x0 + self.delta.detach() * self.mask)


def iterate(
    config: LoopConfig,
    perturbation: Perturbation,
    objective: Callable[[int], tuple[Tensor, float]],
    judge: Callable[[], bool],
    stop: EarlyStop,
    on_step: Callable[[int, np.ndarray, float], None] | None = None,
    notices: list[str] | None = None,
) -> AttackRun:
    """The iterative attacks' loop (detector-pgd, TIP-IM) on `perturbation`, run as `config` says.

    Each step: the request's cancellation and deadline (check_stop: a deadline ends the loop
    with a notice added to `notices`); objective(step) -> (loss tensor to descend, its value to
    log and judge); the lab's on_step(step, the 8-bit photo, value); a tqdm progress bar (the
    page follows it); the stopping rule stop(step, value, judge) judged on the 8-bit photo; then
    one step of the gradient (momentum_step, or l2_step; round after with l2_round).
    """
    import torch
    from tqdm.auto import tqdm

    delta, x0, m = perturbation.delta, perturbation.x0, perturbation.mask
    run, grad_avg = AttackRun(), torch.zeros_like(x0)
    bar = tqdm(range(config.steps), desc=config.name, leave=False)
    for step in bar:
        if (late := check_stop(step)) is not None:  # the request's time is up
            if notices is not None:
                notices.append(late)
            break
        loss, value = objective(step)
        run.steps = step + 1
        run.history.append(value)
        if on_step is not None:
            on_step(step, perturbation.photo(), value)
        bar.set_postfix(loss=f"{value:.3f}")
        if stop(step, value, judge):
            break
        (grad,) = torch.autograd.grad(loss, delta)
        if config.smooth is not None:
            grad = config.smooth(grad)
        if config.norm == "l2":
            assert config.radius is not None, "an L2 loop needs its radius"
            step_l2 = config.step_size * config.radius / 8
            grad_avg = l2_step(delta, grad, grad_avg, x0, m, config.radius, step_l2, config.momentum)
        else:
            grad_avg = momentum_step(delta, grad * m, grad_avg, x0, config.eps, config.step_size, config.momentum)
    bar.close()
    return run


class _Hooks:
    """Forward hooks registered on enter (`self.handles`) and removed on exit."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class feature_dropout(_Hooks):
    """Model augmentation for transfer (DFANet: Zhong and Deng, "Towards Transferable
    Adversarial Attack against Deep Face Recognition", IEEE TIFS 2020): while active, every
    convolution of the given models drops each output value with probability `p` (rescaled, as
    in training-mode dropout), so each attack step sees a slightly different network and the
    perturbation cannot lean on any one feature. p = 0 does nothing. The models' torch modules
    are found among their attributes; their weights are never changed.

        with feature_dropout(recognisers, 0.1, generator):
            loss = ...  # forward and backward passes of the attack step
    """

    def __init__(self, models: Sequence[object], p: float, generator: Tensor | None = None):
        super().__init__()
        self.p, self.models, self.generator = p, models, generator

    def __enter__(self) -> Self:
        import torch

        if self.p <= 0:
            return self
        p, generator = self.p, self.generator

        def hook(module: Tensor, inputs: Tensor, output: Tensor) -> Tensor:
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


class mid_features(_Hooks):
    """Capture one intermediate feature map per model (a feature-level objective, as in FIA /
    ILA-style transfer attacks): the output of the convolution at `depth` (0-1) through each
    model's torch network, in the order the convolutions were registered. After a forward pass
    of model i, `self.last[i]` holds its feature map (with its graph).

        with mid_features(recognisers, 0.5) as mid:
            rec.embed_tensor(x, lm); f = mid.last[0]
    """

    def __init__(self, models: Sequence[Any], depth: float = 0.5):
        super().__init__()
        self.models, self.depth = models, depth
        self.last: dict[int, Tensor] = {}

    def __enter__(self) -> Self:
        import torch

        for i, model in enumerate(self.models):
            convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
            if not convs:
                continue
            layer = convs[min(len(convs) - 1, int(self.depth * len(convs)))]

            def hook(module: Tensor, inputs: Tensor, output: Tensor, i: int = i) -> None:
                self.last[i] = output

            self.handles.append(layer.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.last.clear()
