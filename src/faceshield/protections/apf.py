"""APF, the adversarial privacy-preserving filter (Zhang et al., ACM MM 2020; demo MM 2021):
identity protection split between a weak user device ("end") and a server ("cloud").

Each face is aligned into a 192 px crop (ArcFace 5-point template, zoomed out to keep
context). Three parts, each switchable:
1. Image-specific gradient (end): a few sign-gradient steps of a small probe recogniser
   (SFace, the smallest of the zoo) on the crop, from a random start; what leaves the device
   is this gradient, not the photo.
2. Adversarial gradient transfer (server): a small U-Net, trained here, turns that cheap
   gradient into a perturbation that transfers to stronger recognisers (it was trained
   against dlib's ResNet and FaceNet). Without it, the probe's own perturbation is used.
3. Universal adversarial perturbation (end or server): one image-independent 192 px pattern
   for aligned faces, trained against the recogniser ensemble, added to the result.
The crop-space perturbation, clipped to the L-inf budget, is warped back onto the face in the
photo (bilinear, so the budget holds) and rounded to whole grey levels.
Trained by `python -m faceshield.train apf`; weights in weights/apf.safetensors (model card:
weights/README.md).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from faceshield import models, settings, weights
from faceshield.models import Detections
from faceshield.models.alignment import FivePoints, similarity, template, unwarp, warp
from faceshield.protections.base import (
    EPS,
    SEED,
    SUBSET,
    WEIGHTS,
    Budget,
    Param,
    Protection,
    ProtectionResult,
    register,
)
from faceshield.protections.generator import PerturbationGenerator
from faceshield.tensors import to_tensor, to_uint8

WEIGHTS_FILE = "apf.safetensors"
CROP, ZOOM = 192, 0.55  # the aligned working crop: 192 px, face at 0.55 x the ArcFace scale
PROBE = "sface"
PARTS = ("gradient", "transfer", "uap")


def crop_transform(points: np.ndarray) -> np.ndarray:
    """crop pixel -> photo pixel (3x3) for a face's 5 ArcFace points."""
    return np.linalg.inv(similarity(points, template(CROP, ZOOM)))


def crop_points() -> np.ndarray:
    """Where the 5 points sit in every aligned crop (what the probe aligns to)."""
    return template(CROP, ZOOM)


def probe_gradient(probe, crop01: torch.Tensor, eps: float, steps: int, generator: torch.Generator):
    """The end side: `steps` sign-gradient steps of the probe's dodging objective on a
    (1, 3, CROP, CROP) crop in [0, 1] from a random start. Returns (the probe's own
    perturbation in grey levels, the summed gradient that is sent to the server)."""
    points = crop_points()
    with torch.no_grad():
        e0 = probe.embed_tensor(crop01, points)
    delta = (torch.rand(crop01.shape, generator=generator) - 0.5) * eps  # grey levels
    total = torch.zeros_like(crop01)
    for _ in range(steps):
        delta.requires_grad_(True)
        score = probe.score_tensor(probe.embed_tensor((crop01 + delta / 255).clamp(0, 1), points), e0)
        # descend the match score (cosine) or ascend the distance (Euclidean)
        objective = score if probe.metric == "cosine" else -score
        (grad,) = torch.autograd.grad(objective, delta)
        total += grad
        with torch.no_grad():
            delta = (delta - eps / 4 * grad.sign()).clamp(-eps, eps)
    return delta.detach(), total


def normalise_gradient(g: torch.Tensor) -> torch.Tensor:
    """Scale-free input for the transfer network (gradients differ by orders of magnitude)."""
    return g / g.flatten(1).std(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


@functools.lru_cache(maxsize=4)  # once per process and weights file
def load_apf(path=None) -> tuple[PerturbationGenerator, torch.Tensor]:
    """(transfer network, universal perturbation in [-1, 1] x eps) from weights/apf.safetensors."""
    trained = weights.load_trained(path, WEIGHTS_FILE)
    net = PerturbationGenerator(int(trained.meta.get("width", 16)), int(trained.meta.get("blocks", 3)))
    net.load_state_dict(trained.part("transfer"))
    net.trained_against = tuple(trained.meta.get("ensemble", "dlib-resnet-torch,facenet,sface").split(","))
    return weights.frozen(net), trained.tensors["uap"]


@register
class APF(Protection):
    """Hide identities with the adversarial privacy-preserving filter.

    Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.

    Example:
        >>> result = APF()(pixels)
        >>> result.info["seconds_end"], result.info["seconds_server"]
    """

    key = "apf"
    title = "Hide identity (APF filter)"
    summary = "end/server split: probe gradient, learned gradient transfer, universal perturbation (Zhang et al.)"
    attacks = ("sface", "dlib-resnet-torch", "facenet")  # probe + the ensemble the networks were trained on
    hides, per_face_cost = "identity", True
    params = (
        EPS.but(help="L-inf budget in grey levels (the networks were trained at 8)"),
        Param(
            "parts",
            PARTS,
            "which of its three parts to use: gradient, transfer, uap",
            kind=SUBSET,
            choices=PARTS,
            flag="--parts",
            tag="{value}",
        ),
        Param("probe_steps", 3, "sign-gradient steps of the probe on the device", low=0),
        WEIGHTS,
        SEED,
    )

    def load_weights(self) -> None:
        load_apf(self.weights_path)

    @property
    def attack(self) -> tuple[str, ...]:
        """White-box for this filter: the probe, plus the recognisers its trained parts were
        trained against (read from the weights, so leave-one-out weights are judged fairly)."""
        if not {"transfer", "uap"} & set(self.parts):
            return (PROBE,)
        try:
            ensemble = load_apf(self.weights_path)[0].trained_against
        except Exception:  # weights missing: the protection will say so when called
            return self.attacks
        return tuple(dict.fromkeys((PROBE, *ensemble)))

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        settings.apply_threads()
        start = time.perf_counter()
        faces = models.find_faces(pixels) if faces is None else faces
        if len(faces) == 0:
            return ProtectionResult(
                pixels.copy(),
                faces,
                time.perf_counter() - start,
                {"faces": 0},
                ["No face found: there is no identity to hide; the photo was left unchanged."],
                budget=Budget("linf", self.eps, 0.0),
            )
        transfer, uap = load_apf(self.weights_path) if {"transfer", "uap"} & set(self.parts) else (None, None)
        probe = models.load(PROBE)
        points = FivePoints()
        generator = torch.Generator().manual_seed(self.seed)
        x0 = to_tensor(pixels)
        total = torch.zeros_like(x0)
        t_end = t_server = 0.0
        for box in faces.boxes:
            a = crop_transform(points(pixels, box))
            crop = warp(x0, a, CROP) / 255.0
            t = time.perf_counter()
            parts = []
            if "gradient" in self.parts or "transfer" in self.parts:
                own, grad = probe_gradient(probe, crop, self.eps, self.probe_steps, generator)
                t_end += time.perf_counter() - t
                if "transfer" in self.parts:  # the server sees only `grad`
                    t = time.perf_counter()
                    with torch.no_grad():
                        parts.append(transfer(normalise_gradient(grad)) * self.eps)
                    t_server += time.perf_counter() - t
                else:
                    parts.append(own)
            if "uap" in self.parts:
                parts.append(uap[None] * self.eps)
            delta = torch.stack(parts).sum(0).clamp(-self.eps, self.eps)
            footprint = unwarp(torch.ones_like(delta[:, :1]), a, pixels.shape[:2])
            total = total * (1 - footprint) + unwarp(delta, a, pixels.shape[:2])  # later faces win overlaps
        out = (x0 + torch.round(total.clamp(-self.eps, self.eps))).clamp(0, 255)
        out = to_uint8(out)
        info = {
            "faces": len(faces),
            "parts": list(self.parts),
            "eps": self.eps,
            "attacked": list(self.attacks),
            "seconds_end": round(t_end, 3),
            "seconds_server": round(t_server, 3),
            "server_receives": f"a {CROP}x{CROP}x3 gradient per face (never the photo)",
        }
        return ProtectionResult(
            out, faces, time.perf_counter() - start, info, budget=Budget.measure("linf", self.eps, pixels, out)
        )
