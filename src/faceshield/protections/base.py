"""What every protection is: a callable from a photo to a protected photo.

A protection takes (H, W, 3) uint8 RGB pixels and returns a ProtectionResult whose pixels are
exactly what the user downloads (8-bit, so effects are judged after quantisation).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from faceshield.models import Detections


@dataclass
class ProtectionResult:
    pixels: np.ndarray  # (H, W, 3) uint8, the protected photo
    faces: Detections  # the faces (on the clean photo) that the protection worked on
    seconds: float
    info: dict = field(default_factory=dict)  # method diagnostics: steps, losses, success...
    notices: list[str] = field(default_factory=list)  # things the user should know


def region_mask(shape: tuple[int, int], boxes: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """(H, W) float32 mask, 1 inside each box grown by `margin` x its size on every side.

    Confining the perturbation to the faces is what keeps PSNR high: the same budget spread
    over the whole photo costs ~30 dB at 8/255.
    """
    h, w = shape
    mask = np.zeros((h, w), np.float32)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4):
        mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
        c0, c1 = int(max(0, np.floor(x1 - mw))), int(min(w, np.ceil(x2 + mw)))
        r0, r1 = int(max(0, np.floor(y1 - mh))), int(min(h, np.ceil(y2 + mh)))
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


def white_box_models(keys) -> tuple[list, dict[str, str]]:
    """The differentiable models among `keys` that load here, and {key: reason} for the rest;
    RuntimeError when none is left to attack."""
    from faceshield import models

    loaded, missing = models.available(list(keys))
    usable = [m for m in loaded.values() if m.differentiable]
    if not usable:
        raise RuntimeError(f"no white-box model available among {tuple(keys)}: {missing}")
    return usable, missing


def to_uint8(x) -> np.ndarray:
    """(1, 3, H, W) tensor in grey levels -> (H, W, 3) uint8, rounded and clipped."""
    return x.detach()[0].permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()


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
