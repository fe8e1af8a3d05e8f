"""One-pass protection: a trained perturbation generator (Tong et al., "Image privacy
protection based on adversarial perturbation generative networks", second method).

A compact U-Net maps a photo of any size to a perturbation bounded by tanh x eps. It was
trained (faceshield.train.generator) against the white-box detectors' face losses, the same
losses the per-image attack descends, plus a distortion term, so it learns both where faces
are and what hides them: no detection runs at protection time.

Why a U-Net with a 1/8-resolution core: adversarial patterns against a detector need
full-resolution detail (the skip connections carry it) but also context the size of a face
(the downsampled core sees ~100 px); keeping wide layers at low resolution is what lets a
1024 px photo go through in a fraction of a second on a laptop CPU.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from faceshield import settings, weights
from faceshield.models import Detections
from faceshield.protections.base import EPS, WEIGHTS, Budget, Protection, ProtectionResult, register
from faceshield.tensors import to_tensor, to_uint8

WEIGHTS_FILE = "perturbation_generator.safetensors"


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(4, c_out), nn.SiLU())


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return F.silu(x + self.body(x))


class PerturbationGenerator(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H, W) perturbation in [-1, 1] (times eps by the caller).

    H and W may be anything: the input is padded to a multiple of 8 and the output cropped.
    """

    def __init__(self, width: int = 16, blocks: int = 3):
        super().__init__()
        w = width
        self.config = {"width": width, "blocks": blocks}
        self.stem = _conv(3, w)
        self.down1, self.down2, self.down3 = _conv(w, 2 * w, 2), _conv(2 * w, 4 * w, 2), _conv(4 * w, 6 * w, 2)
        self.core = nn.Sequential(*[_Residual(6 * w) for _ in range(blocks)])
        self.up3, self.up2, self.up1 = _conv(6 * w + 4 * w, 4 * w), _conv(4 * w + 2 * w, 2 * w), _conv(2 * w + w, w)
        self.head = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=1e-3)  # start near "no perturbation"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
        s0 = self.stem(x - 0.5)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        y = self.core(self.down3(s2))
        y = self.up3(torch.cat([F.interpolate(y, scale_factor=2.0), s2], 1))
        y = self.up2(torch.cat([F.interpolate(y, scale_factor=2.0), s1], 1))
        y = self.up1(torch.cat([F.interpolate(y, scale_factor=2.0), s0], 1))
        return torch.tanh(self.head(y))[:, :, :h, :w]


@functools.lru_cache(maxsize=4)  # once per process and weights file
def load_generator(path=None) -> PerturbationGenerator:
    """The trained generator from weights/ (its metadata: model.trained_against, ...)."""
    trained = weights.load_trained(path, WEIGHTS_FILE)
    meta = trained.meta
    model = PerturbationGenerator(width=int(meta.get("width", 16)), blocks=int(meta.get("blocks", 3)))
    model.load_state_dict(trained.tensors)
    model.trained_against = tuple(meta.get("detectors", "mtcnn").split(","))
    return weights.frozen(model)


@register
class GeneratorProtection(Protection):
    """Hide faces from detectors in one forward pass of the trained generator.

    Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.

    Example:
        >>> result = GeneratorProtection()(pixels)    # well under a second for 1024 px on a CPU
    """

    key = "generator"
    title = "Hide from detectors (instant generator)"
    summary = "one forward pass of a perturbation generator trained against white-box detectors (Tong et al.)"
    attacks = ("mtcnn",)  # replaced by what the loaded weights say they were trained against
    hides, per_face_cost = "faces", True
    params = (EPS.but(help="L-inf budget in grey levels (the network was trained at 8)"), WEIGHTS)

    def load_weights(self) -> None:
        self.network()

    @property
    def attack(self) -> tuple[str, ...]:
        """The detectors the network was trained against (white-box for it)."""
        try:
            return self.network().trained_against
        except Exception:  # weights missing: the protection will say so when called
            return self.attacks

    def network(self) -> PerturbationGenerator:
        return load_generator(self.weights_path)

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        settings.apply_threads()
        start = time.perf_counter()
        device = settings.device()
        net = self.network().to(device)
        x0 = to_tensor(pixels, device=device)
        with torch.no_grad():
            delta = torch.round(net(x0 / 255.0) * self.eps)  # whole grey levels, |delta| <= eps
        out = to_uint8(x0 + delta)
        info = {"passes": 1, "eps": self.eps, "attacked": list(self.attack)}
        return ProtectionResult(
            out,
            faces if faces is not None else Detections.empty(),
            time.perf_counter() - start,
            info,
            budget=Budget.measure("linf", self.eps, pixels, out),
        )
