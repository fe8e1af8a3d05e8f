"""APF, the adversarial privacy-preserving filter (Zhang et al., ACM MM 2020; demo MM 2021):
identity protection split between a weak user device ("end") and a server ("cloud").

Each face is aligned into a 192 px crop (ArcFace 5-point template, zoomed out to keep
context; the face spans about 75 px, near the recognisers' own input scale, whatever its size
in the photo). Three parts, each switchable, added together and clipped to the budget:
1. Image-specific gradient (end): a few sign-gradient steps of small probe recognisers
   (by default FaceNet and SFace; the weights say which) on the crop, from a random start.
   The device keeps its own perturbation; what leaves the device is the summed gradient,
   never the photo.
2. Adversarial gradient transfer (server): a U-Net, trained here, turns that cheap gradient
   into a perturbation that transfers to recognisers the probes are not (it was trained
   against the ensemble its weights name, on faces of people the benchmarks never judge).
3. Universal adversarial perturbation (end or server): one image-independent 192 px pattern
   for aligned faces, trained together with the transfer network.
The sum is kept to the face box grown by `face_margin` (what recognisers' crops read; the rest
of the crop is context for the networks, not a place to spend the budget: on the pair bench it
raises PSNR by about 0.8 dB at the same black-box protection as the whole crop), warped back
onto the face in the photo (bilinear, so the budget holds) and rounded to whole grey levels.
Trained by `python -m faceshield.train apf`; weights in weights/apf.safetensors (model card:
weights/README.md).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from faceshield import models, settings, weights
from faceshield.models import Detections
from faceshield.models.alignment import five_points, similarity, template, unwarp, warp
from faceshield.protections.base import (
    EPS,
    FACE_MARGIN,
    SEED,
    SUBSET,
    WEIGHTS,
    Budget,
    Param,
    Protection,
    ProtectionResult,
    no_identity_to_hide,
    region_mask,
    register,
)
from faceshield.protections.generator import PerturbationGenerator
from faceshield.tensors import to_tensor, to_uint8

WEIGHTS_FILE = "apf.safetensors"
CROP, ZOOM = 192, 0.55  # the aligned crop: 192 px, face at 0.55 x the ArcFace scale
PROBES = ("facenet", "sface")  # the device's probes when the weights do not name them
PARTS = ("gradient", "transfer", "uap")


def crop_transform(points: np.ndarray) -> np.ndarray:
    """crop pixel -> photo pixel (3x3) for a face's 5 ArcFace points."""
    return np.linalg.inv(similarity(points, template(CROP, ZOOM)))


def crop_mask(shape: tuple[int, ...], box, crop_to_photo: np.ndarray, margin: float, side: int = CROP) -> torch.Tensor:
    """(1, 1, side, side) in [0, 1]: where in the aligned crop the change may go, the face `box`
    of a photo of `shape` grown by `margin` x its size (region_mask) seen through the crop."""
    inside = torch.from_numpy(region_mask(shape[:2], np.asarray(box)[None], margin))[None, None] * 255
    return warp(inside, crop_to_photo, side) / 255


def crop_points(side: int = CROP) -> np.ndarray:
    """Where the 5 points sit in every aligned crop of that side (what the probe aligns to)."""
    return template(side, ZOOM)


def resample(t: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, side, side), antialiased when it shrinks."""
    if t.shape[-1] == side and t.shape[-2] == side:
        return t
    return F.interpolate(t, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def transfer_part(net: torch.nn.Module, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """The server: the transfer network's perturbation (grey levels) for a device gradient of
    any working side (the network runs at CROP)."""
    return resample(net(normalise_gradient(resample(grad, CROP))) * eps, grad.shape[-1])


def uap_part(uap: torch.Tensor, eps: float, side: int) -> torch.Tensor:
    """The universal perturbation (3, CROP, CROP) in [-1, 1] as grey levels on a working crop."""
    return resample(uap[None], side) * eps


def probe_gradient(probes, crop01: torch.Tensor, eps: float, steps: int, generator: torch.Generator):
    """The end side: `steps` sign-gradient steps of the probes' dodging objective on a
    (1, 3, s, s) working crop in [0, 1] from a random start. Each probe's match score counts
    in units of its own threshold, so no probe dominates. Returns (the probes' own
    perturbation in grey levels, the summed gradient that is sent to the server)."""
    points = crop_points(crop01.shape[-1])
    with torch.no_grad():
        e0 = [probe.embed_tensor(crop01, points) for probe in probes]
    delta = (torch.rand(crop01.shape, generator=generator) - 0.5) * eps  # grey levels
    total = torch.zeros_like(crop01)
    for _ in range(steps):
        delta.requires_grad_(True)
        x = (crop01 + delta / 255).clamp(0, 1)
        # descend the match score (cosine) or ascend the distance (Euclidean)
        objective = sum(
            (1 if p.metric == "cosine" else -1) * p.score_tensor(p.embed_tensor(x, points), e) / p.threshold
            for p, e in zip(probes, e0)
        )
        (grad,) = torch.autograd.grad(objective, delta)
        total += grad
        with torch.no_grad():
            delta = (delta - eps / 4 * grad.sign()).clamp(-eps, eps)
    return delta.detach(), total


def normalise_gradient(g: torch.Tensor) -> torch.Tensor:
    """Scale-free input for the transfer network (gradients differ by orders of magnitude)."""
    return g / g.flatten(1).std(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


@dataclass(frozen=True)
class APFWeights:
    """What weights/apf.safetensors holds: the server's transfer network, the universal
    perturbation (in [-1, 1], times eps), and how they were trained."""

    transfer: PerturbationGenerator
    uap: torch.Tensor
    probes: tuple[str, ...]  # the device's probes the transfer network learned to read
    trained_against: tuple[str, ...]
    own_in_output: bool  # the device's own perturbation is part of the output (APF v2)


@functools.lru_cache(maxsize=4)  # once per process and weights file
def load_apf(path=None) -> APFWeights:
    trained = weights.load_trained(path, WEIGHTS_FILE)
    meta = trained.meta
    net = PerturbationGenerator(int(meta.get("width", 16)), int(meta.get("blocks", 3)))
    net.load_state_dict(trained.part("transfer"))
    return APFWeights(
        weights.frozen(net),
        trained.tensors["uap"],
        tuple(meta.get("probe", ",".join(PROBES)).split(",")),
        tuple(meta.get("ensemble", "dlib-resnet-torch,facenet,sface").split(",")),
        meta.get("own_in_output", "false").lower() == "true",
    )


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
        FACE_MARGIN,
        Param(
            "parts",
            PARTS,
            "which of its three parts to use: gradient, transfer, uap",
            kind=SUBSET,
            choices=PARTS,
        ),
        Param(
            "probe_steps",
            10,
            "sign-gradient steps of the probes on the device (v2 weights were trained on 3, the new trainer uses 5)",
            low=0,
        ),
        WEIGHTS,
        SEED,
    )

    def load_weights(self) -> None:
        load_apf(self.weights_path)

    def _trained(self) -> APFWeights | None:
        return load_apf(self.weights_path) if {"transfer", "uap"} & set(self.parts) else None

    @property
    def attack(self) -> tuple[str, ...]:
        """White-box for this filter: the probes, plus the recognisers its trained parts were
        trained against (read from the weights, so leave-one-out weights are judged fairly)."""
        try:
            trained = load_apf(self.weights_path)
        except Exception:  # weights missing: the protection will say so when called
            return self.attacks if {"transfer", "uap"} & set(self.parts) else PROBES
        if not {"transfer", "uap"} & set(self.parts):
            return trained.probes
        return tuple(dict.fromkeys((*trained.probes, *trained.trained_against)))

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        """The protected photo; with several parts, `result.parts` also holds the photo each
        part alone gives (the same pass: what the app's "what each part adds" table shows)."""
        settings.apply_threads()
        start = time.perf_counter()
        faces = models.find_faces(pixels) if faces is None else faces
        if len(faces) == 0:
            return no_identity_to_hide(pixels, faces, start, budget=Budget("linf", self.eps, 0.0))
        trained = self._trained()
        probe_keys = trained.probes if trained else PROBES
        own_in_output = trained.own_in_output if trained else True
        probes = [models.load(k) for k in probe_keys]
        points = five_points()
        generator = torch.Generator().manual_seed(self.seed)
        x0 = to_tensor(pixels)
        subsets = [tuple(self.parts)] + ([(p,) for p in self.parts] if len(self.parts) > 1 else [])
        totals = {subset: torch.zeros_like(x0) for subset in subsets}
        t_end = t_server = 0.0
        sides = []
        for box in faces.boxes:
            a, side = crop_transform(points(pixels, box)), CROP
            sides.append(side)
            crop = warp(x0, a, side) / 255.0
            part = {}
            if "gradient" in self.parts or "transfer" in self.parts:
                t = time.perf_counter()
                own, grad = probe_gradient(probes, crop, self.eps, self.probe_steps, generator)
                t_end += time.perf_counter() - t
                part["gradient"] = own
                if "transfer" in self.parts:  # the server sees only `grad`
                    t = time.perf_counter()
                    with torch.no_grad():
                        part["transfer"] = transfer_part(trained.transfer, grad, self.eps)
                    t_server += time.perf_counter() - t
            if "uap" in self.parts:
                part["uap"] = uap_part(trained.uap, self.eps, side)
            mask = crop_mask(pixels.shape, box, a, self.face_margin, side)
            footprint = unwarp(mask, a, pixels.shape[:2])
            for subset, total in totals.items():
                # first weights (APF v1): the transfer network replaced the device's own part
                keys = [k for k in subset if own_in_output or k != "gradient" or "transfer" not in subset]
                chosen = [part[k] for k in keys if k in part] or [torch.zeros_like(crop)]
                delta = torch.stack(chosen).sum(0).clamp(-self.eps, self.eps) * mask
                # later faces win overlaps
                totals[subset] = total * (1 - footprint) + unwarp(delta, a, pixels.shape[:2])
        photos = {
            "+".join(subset): to_uint8((x0 + torch.round(total.clamp(-self.eps, self.eps))).clamp(0, 255))
            for subset, total in totals.items()
        }
        out = photos["+".join(self.parts)]
        info = {
            "faces": len(faces),
            "parts": list(self.parts),
            "eps": self.eps,
            "probes": list(probe_keys),
            "attacked": list(self.attack),
            "seconds_end": round(t_end, 3),
            "seconds_server": round(t_server, 3),
            "server_receives": "a gradient per face, " + ", ".join(f"{s}x{s}x3" for s in sides) + " (never the photo)",
        }
        return ProtectionResult(
            out,
            faces,
            time.perf_counter() - start,
            info,
            budget=Budget.measure("linf", self.eps, pixels, out),
            parts={k: v for k, v in photos.items() if k in self.parts and len(self.parts) > 1},
        )
