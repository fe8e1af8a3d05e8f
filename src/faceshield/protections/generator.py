"""One-pass protection: a trained perturbation generator (Tong et al., "Image privacy
protection based on adversarial perturbation generative networks", second method), working in
face space.

Detectors decide on small resamplings of each face (MTCNN's R-Net and O-Net see 24 and 48 px
area-resampled crops; CenterFace a stride-4 heatmap), so the generator works there too: each
face the clean photo shows is cut out as a square with context (`face_square`), resized to a
fixed working size (96 px), mapped by a compact U-Net to a perturbation bounded by tanh x eps,
resized back onto the face and rounded to whole grey levels (`perturb_faces`). Training
(faceshield.train.generator) runs that same composite against the detectors' real resampling,
so a photo of any size and a face of any size go through the one path the network learned.

Why a U-Net with a 1/8-resolution core: adversarial patterns need pixel-level detail (the skip
connections carry it) and face-sized context (the 12 x 12 core sees the whole crop).
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
from faceshield.protections.base import EPS, WEIGHTS, WHOLE_IMAGE, Budget, Protection, ProtectionResult, register
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

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output before tanh."""
        h, w = x.shape[2:]
        x = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
        s0 = self.stem(x - 0.5)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        y = self.core(self.down3(s2))
        y = self.up3(torch.cat([F.interpolate(y, scale_factor=2.0), s2], 1))
        y = self.up2(torch.cat([F.interpolate(y, scale_factor=2.0), s1], 1))
        y = self.up1(torch.cat([F.interpolate(y, scale_factor=2.0), s0], 1))
        return self.head(y)[:, :, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.logits(x))


class FaceGenerator(PerturbationGenerator):
    """The face-space generator: the U-Net's output plus a learned universal pattern (one
    face-space perturbation shared by every face, which training finds fast; the network
    adapts it to each face), through tanh. Input: (N, 3, size, size) crops in [0, 1]."""

    def __init__(self, width: int = 24, blocks: int = 4, size: int = 96):
        super().__init__(width, blocks)
        self.config["size"] = size
        self.universal = nn.Parameter(torch.zeros(1, 3, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.logits(x) + self.universal)


CONTEXT = 1.5  # the perturbed square's side / the face box's longer side
WORK_SIZE = 96  # the generator's working resolution (px)


def face_square(box, context: float = CONTEXT) -> tuple[int, int, int]:
    """(row0, col0, side) of the square the generator perturbs around an x1y1x2y2 face box:
    centred on the box, `context` x its longer side (it may reach past the photo's edge)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(8, int(round(max(x2 - x1, y2 - y1) * context)))
    return int(round((y1 + y2 - side) / 2)), int(round((x1 + x2 - side) / 2)), side


def crop_squares(x: torch.Tensor, squares, size: int = WORK_SIZE) -> torch.Tensor:
    """(N, 3, size, size) crops of the (1, 3, H, W) image at each (row0, col0, side) square,
    edges replicated where a square leaves the image, resized with antialiasing."""
    _, _, h, w = x.shape
    crops = []
    for r0, c0, s in squares:
        a, b, c, d = max(r0, 0), min(r0 + s, h), max(c0, 0), min(c0 + s, w)
        crop = F.pad(x[:, :, a:b, c:d], (c - c0, c0 + s - d, a - r0, r0 + s - b), mode="replicate")
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(crops)


def paste_squares(shape, deltas: torch.Tensor, squares) -> torch.Tensor:
    """A (1, 3, H, W) perturbation holding each (3, S, S) working-size delta resized onto its
    square (the part inside the image); where squares overlap the later one wins."""
    _, _, h, w = shape
    canvas = deltas.new_zeros(shape)
    for delta, (r0, c0, s) in zip(deltas, squares):
        a, b, c, d = max(r0, 0), min(r0 + s, h), max(c0, 0), min(c0 + s, w)
        if b <= a or d <= c:
            continue
        up = F.interpolate(delta[None], size=(s, s), mode="bilinear", align_corners=False)
        canvas = canvas.clone()
        canvas[:, :, a:b, c:d] = up[:, :, a - r0 : b - r0, c - c0 : d - c0]
    return canvas


def perturb_faces(net: nn.Module, x: torch.Tensor, squares, eps: float) -> torch.Tensor:
    """The protected image: x (1, 3, H, W) in grey levels [0, 255] plus the generator's
    perturbation on every square, rounded to whole grey levels (a straight-through gradient in
    training), |change| <= eps. What the protection saves and what training attacks."""
    if not len(squares):
        return x
    deltas = net(crop_squares(x, squares) / 255.0) * eps
    delta = paste_squares(x.shape, deltas, squares)
    delta = delta + (torch.round(delta) - delta).detach()
    return (x + delta).clamp(0, 255)


@functools.lru_cache(maxsize=4)  # once per process and weights file
def load_generator(path=None) -> FaceGenerator:
    """The trained generator from weights/ (its metadata: model.trained_against, ...)."""
    trained = weights.load_trained(path, WEIGHTS_FILE)
    meta = trained.meta
    if meta.get("space") != "face":
        raise RuntimeError(
            f"{trained.path} is not a face-space generator (retrain with python -m faceshield.train generator)"
        )
    model = FaceGenerator(width=int(meta.get("width", 24)), blocks=int(meta.get("blocks", 4)), size=WORK_SIZE)
    model.load_state_dict(trained.tensors)
    model.trained_against = tuple(meta.get("detectors", "mtcnn").split(","))
    model.context = float(meta.get("context", CONTEXT))
    model.eps = float(meta.get("eps", 8))  # the budget it was trained at (grey levels)
    return weights.frozen(model)


@register
class GeneratorProtection(Protection):
    """Hide faces from detectors in one forward pass of the trained generator per face.

    Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.

    Example:
        >>> result = GeneratorProtection()(pixels)    # a fraction of a second for 1024 px on a CPU
    """

    key = "generator"
    title = "Hide from detectors (instant generator)"
    summary = "one forward pass per face of a perturbation generator trained against detectors (Tong et al.)"
    attacks = ("mtcnn",)  # replaced by what the loaded weights say they were trained against
    hides, per_face_cost = "faces", True
    params = (
        EPS.but(
            default=16.0,
            help="L-inf budget in grey levels (the shipped network was trained at 16, its square's PSNR held "
            "near 33 dB: at a smaller budget it hides fewer faces)",
        ),
        WEIGHTS,
        WHOLE_IMAGE.but(help="with no face found, still perturb the whole photo (as one square)"),
    )

    def load_weights(self) -> None:
        self.network()

    @property
    def attack(self) -> tuple[str, ...]:
        """The detectors the network was trained against (white-box for it)."""
        try:
            return self.network().trained_against
        except Exception:  # weights missing: the protection will say so when called
            return self.attacks

    def network(self) -> FaceGenerator:
        return load_generator(self.weights_path)

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        from faceshield import models

        settings.apply_threads()
        start = time.perf_counter()
        net = self.network()
        if faces is None:
            faces = models.find_faces(pixels)
        h, w = pixels.shape[:2]
        notices = []
        if self.eps != net.eps:
            notices.append(
                f"The network was trained at {net.eps:g}/255; at {self.eps:g}/255 its perturbation is scaled "
                "and hides faces less reliably."
            )
        squares = [face_square(box, net.context) for box in faces.boxes]
        if not squares:
            if not self.whole_image:
                return ProtectionResult(
                    pixels.copy(),
                    faces,
                    time.perf_counter() - start,
                    {"passes": 0, "eps": self.eps, "faces_protected": 0, "attacked": list(self.attack)},
                    [
                        "No face found: the photo was left unchanged "
                        "(tick 'protect the whole image' to perturb it anyway)."
                    ],
                    budget=Budget("linf", self.eps, 0.0),
                )
            squares = [(0, 0, max(h, w))]
            notices.append("No face found: the whole photo was perturbed.")
        x0 = to_tensor(pixels)
        with torch.no_grad():
            out = perturb_faces(net, x0, squares, self.eps)
        info = {"passes": len(squares), "eps": self.eps, "faces_protected": len(faces), "attacked": list(self.attack)}
        out = to_uint8(out)
        budget = Budget.measure("linf", self.eps, pixels, out)
        return ProtectionResult(out, faces, time.perf_counter() - start, info, notices, budget=budget)
