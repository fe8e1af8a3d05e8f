"""Identity masks: TIP-IM (Yang et al., "Towards Face Encryption by Generating Adversarial
Identity Masks", ICCV 2021), dodging mode.

Distance: L-inf <= eps grey levels, confined to the face regions found on the clean photo,
computed at full resolution on the whole photo (the face chips are re-sampled from it
differentiably, so no up-sampled crop is pasted back).
Objective, per face and attacked recogniser: a hinge that is zero once the protected face's
embedding is (threshold x (1 + margin)) away from the clean face's; plus `mmd_weight` times an
MMD naturalness term between the protected and the clean face region's 4x4 patches (Gaussian
kernel), TIP-IM's way of keeping the mask natural. Momentum iterations (MI-FGSM) with input
diversity (random down-scaling of the photo, landmarks scaled with it), whole grey-level steps,
success checked on the 8-bit image.

Not yet here (see README): targeted mode with greedy insertion of target identities, and
expectation over JPEG (kornia's differentiable JPEG is not a dependency yet).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from faceshield import models, settings
from faceshield.models import Detections
from faceshield.protections.base import ProtectionResult, momentum_step, region_mask, to_uint8

FACE_FINDERS = ("mtcnn", "dlib-hog")


class TIPIM:
    """Hide identities from face recognisers (dodging).

    Args:
        eps: L-inf budget in grey levels (default 8).
        steps: maximum iterations (default 60).
        step_size: grey levels per step (default 1).
        momentum: MI-FGSM decay (default 1.0).
        recognisers: differentiable recognisers to attack (default: every one in the registry).
        margin: required distance beyond each recogniser's threshold, as a fraction (default 0.25).
        landmark_jitter: std of the landmark noise per step, x face size (default 0.015; 0: off).
        mmd_weight: weight of the MMD naturalness term (default 1.0; 0 switches it off).
        diversity: probability of a random down-scale per step (default 0.5; 0 switches it off).
        face_margin: how far around each face box (x its size) the mask may reach (default 0.1).

    Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.

    Example:
        >>> result = TIPIM(eps=8)(pixels)
        >>> models.load("dlib-resnet").score(e_clean, e_protected)   # > 0.6: another person
    """

    key = "tip-im"
    title = "Hide identity (TIP-IM mask)"
    summary = "adversarial identity mask against differentiable recognisers, dodging (Yang et al.)"
    attacks = tuple(models.names(kind="recogniser", differentiable=True))

    def __init__(self, eps: float = 8, steps: int = 60, step_size: float = 1, momentum: float = 1.0,
                 recognisers: tuple[str, ...] = attacks, margin: float = 0.25, mmd_weight: float = 1.0,
                 landmark_jitter: float = 0.015,
                 diversity: float = 0.5, face_margin: float = 0.1, check_every: int = 5, extra_steps: int = 3,
                 seed: int = 0):
        self.eps, self.steps, self.step_size, self.momentum = eps, steps, step_size, momentum
        self.recognisers, self.margin, self.mmd_weight = tuple(recognisers), margin, mmd_weight
        self.diversity, self.face_margin, self.landmark_jitter = diversity, face_margin, landmark_jitter
        self.check_every, self.extra_steps, self.seed = check_every, extra_steps, seed

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None) -> ProtectionResult:
        settings.apply_threads()
        start = time.perf_counter()
        recs, missing = models.available(list(self.recognisers))
        recs = [r for r in recs.values() if r.differentiable]
        if not recs:
            raise RuntimeError(f"no differentiable recogniser available among {self.recognisers}: {missing}")
        if faces is None:  # the first finder that sees a face: a union would add false positives
            finders, _ = models.available(list(FACE_FINDERS))
            faces = Detections.empty()
            for finder in finders.values():
                faces = finder.detect(pixels)
                if len(faces):
                    break
        if len(faces) == 0:
            return ProtectionResult(pixels.copy(), faces, time.perf_counter() - start, {"steps": 0, "success": True},
                                    ["No face found: there is no identity to hide; the photo was left unchanged."])
        generator = torch.Generator().manual_seed(self.seed)
        x0 = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None]
        mask = region_mask(pixels.shape[:2], faces.boxes, self.face_margin)
        m = torch.from_numpy(mask)[None, None]
        # clean landmarks and embeddings stay fixed: the attack moves the face away from them
        targets = []
        for rec in recs:
            for box in faces.boxes:
                lm = rec.landmarks(pixels, box)
                with torch.no_grad():
                    targets.append((rec, box, lm, rec.embed_tensor(x0 / 255.0, lm)))
        clean_patches = _patches(x0 / 255.0, mask)
        delta = torch.zeros_like(x0, requires_grad=True)
        grad_avg = torch.zeros_like(x0)
        history, success, extra, steps_done = [], False, None, 0
        bar = tqdm(range(self.steps), desc=self.key, leave=False)
        for step in bar:
            x = (x0 + delta * m) / 255.0
            scale = 1.0
            if self.diversity and torch.rand((), generator=generator) < self.diversity:
                scale = float(torch.empty(()).uniform_(0.8, 1.0, generator=generator))
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
            # a recogniser finds landmarks on the protected photo, a little off the clean
            # ones: the mask must work for any nearby alignment (expectation over jitter)
            id_loss = sum(F.relu(rec.threshold * (1 + self.margin)
                                 - (rec.embed_tensor(x, self._jitter(lm, box, generator) * scale) - e0).norm())
                          for rec, box, lm, e0 in targets)
            loss = id_loss
            if self.mmd_weight:
                loss = loss + self.mmd_weight * _mmd(_patches((x0 + delta * m) / 255.0, mask), clean_patches)
            steps_done = step + 1
            history.append(float(id_loss.detach()))
            bar.set_postfix(identity_loss=f"{history[-1]:.3f}")
            if extra is None and step % self.check_every == self.check_every - 1:
                if self._hidden(targets, x0, delta, m):
                    extra = self.extra_steps
            if extra is not None:
                if extra == 0:
                    success = True
                    break
                extra -= 1
            (grad,) = torch.autograd.grad(loss, delta)
            grad_avg = momentum_step(delta, grad * m, grad_avg, x0, self.eps, self.step_size, self.momentum)
        bar.close()
        if not success:
            success = self._hidden(targets, x0, delta, m)
        out = to_uint8(x0 + delta * m)
        notices = [] if success else [f"After {steps_done} steps an attacked recogniser still matches a face: "
                                      "raise the budget or the number of steps."]
        info = {"steps": steps_done, "success": bool(success), "identity_loss": history,
                "targets": [r.name for r in recs], "unavailable_targets": missing}
        return ProtectionResult(out, faces, time.perf_counter() - start, info, notices)

    def _jitter(self, lm: np.ndarray, box: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if not self.landmark_jitter:
            return lm
        size = float(max(box[2] - box[0], box[3] - box[1]))
        return lm + torch.randn(lm.shape, generator=generator, dtype=torch.float64).numpy() * self.landmark_jitter * size

    @staticmethod
    def _hidden(targets, x0, delta, m) -> bool:
        """On the 8-bit image, with landmarks found again on it, is every face beyond every
        attacked recogniser's threshold?"""
        pixels = to_uint8(x0 + delta * m)
        x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None] / 255.0
        with torch.no_grad():
            return all(not rec.is_match(float((rec.embed_tensor(x, rec.landmarks(pixels, box)) - e0).norm()))
                       for rec, box, _, e0 in targets)


def _patches(x: torch.Tensor, mask: np.ndarray, size: int = 4, limit: int = 2048) -> torch.Tensor:
    """(N, 3*size*size) non-overlapping patches of the masked area (a fixed subset when large)."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    region = x[:, :, r0:r1 - (r1 - r0) % size, c0:c1 - (c1 - c0) % size]
    patches = F.unfold(region, size, stride=size)[0].T
    if len(patches) > limit:
        patches = patches[torch.linspace(0, len(patches) - 1, limit).long()]
    return patches


def _mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared MMD with a Gaussian kernel (bandwidth: median heuristic on the clean set)."""
    with torch.no_grad():
        bandwidth = torch.cdist(b, b).median().clamp_min(1e-3) ** 2
    k = lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / bandwidth)  # noqa: E731
    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
