"""Identity masks: TIP-IM (Yang et al., "Towards Face Encryption by Generating Adversarial
Identity Masks", ICCV 2021).

Distance: L-inf <= eps grey levels, confined to the face regions found on the clean photo,
computed at full resolution on the whole photo (the face crops are re-sampled from it
differentiably, so no up-sampled crop is pasted back).
Objective, per face, summed over the attacked recognisers (each with its own metric and
threshold, Recogniser.dodge_loss / match_loss):
  dodging:  the protected face must be `margin` beyond the threshold from the clean face;
  targeted: additionally it must match a target identity. Targets come from a candidate set
            (uploaded photos, or the built-in faces of the photos shipped by installed
            packages); TIP-IM's greedy insertion grows the active set S one identity at a
            time, adding the candidate with the largest gain in the set objective
            (a soft-min over S of the match losses) whenever the gain is worth it.
Plus `mmd_weight` x an MMD naturalness term between the protected and the clean face
region's 4x4 patches (Gaussian kernel), TIP-IM's way of keeping the mask natural.
Optimiser: momentum iterations (MI-FGSM) in whole grey levels with input diversity (random
down-scaling, landmarks scaled with it), landmark jitter, and with `robust` an expectation
over transformations: stronger down-scaling (to 0.5x) and kornia's differentiable JPEG
(quality 50-90) of the face region, so that the mask survives re-compression and resizing.
Success is checked on the 8-bit image, landmarks found again on it.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
import torch.nn.functional as F

from faceshield import models, settings
from faceshield.boxes import grow
from faceshield.models import Detections
from faceshield.protections.base import (
    ATTACK,
    EPS,
    FACE_MARGIN,
    PHOTOS,
    SEED,
    STEPS,
    Budget,
    EarlyStop,
    Param,
    Protection,
    ProtectionResult,
    feature_dropout,
    iterate,
    l2_round,
    mid_features,
    no_identity_to_hide,
    region_mask,
    register,
    white_box_models,
)
from faceshield.tensors import to_tensor, to_uint8


@register
class TIPIM(Protection):
    """Hide identities from face recognisers: dodging, or steering towards target identities.

    Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.

    Example:
        >>> result = TIPIM(eps=8)(pixels)
        >>> models.load("dlib-resnet").score(e_clean, e_protected)   # > 0.6: another person
        >>> TIPIM(mode="targeted")(pixels).info["targets_used"]       # who the face now resembles
    """

    key = "tip-im"
    title = "Hide identity (TIP-IM mask)"
    summary = "adversarial identity mask against differentiable recognisers, dodging or targeted (Yang et al.)"
    attacks = tuple(models.names(kind="recogniser", differentiable=True))
    hides, per_face_cost, traceable = "identity", True, True
    params = (
        EPS.but(
            help="budget in grey levels: the L-inf bound, or with norm l2 the RMS change over the face "
            "regions (L2 norm = eps x sqrt(values in the face regions))"
        ),
        STEPS.but(default=60),
        Param("step_size", 1.0, "grey levels per step; under L2, 1/8 of the radius per unit", low=0),
        Param("momentum", 1.0, "MI-FGSM decay", low=0),
        ATTACK.but(default=attacks, help="differentiable recognisers to attack"),
        Param(
            "mode",
            "dodging",
            "dodging (just do not match) or targeted (match a target identity)",
            choices=("dodging", "targeted"),
        ),
        Param(
            "targets",
            None,
            "targeted: photos of target identities, one face each (the largest); default: the faces in "
            "the example photos shipped by installed packages",
            kind=PHOTOS,
        ),
        Param(
            "margin",
            1.0,
            "how far beyond each recogniser's threshold to push, as a fraction of it (default 1.0: twice "
            "the distance for dlib/FaceNet, cosine 0 for SFace/LightCNN; going well past the attacked "
            "models' thresholds is what transfers to recognisers never attacked, at the same L-inf "
            "budget but more steps)",
            low=0,
        ),
        Param(
            "target_margin",
            0.25,
            "targeted mode: how far inside each recogniser's threshold the target must match, and how far "
            "beyond it the face must be from itself, as a fraction (margin is the dodging mode's)",
            low=0,
            high=0.9,
        ),
        Param("mmd_weight", 1.0, "weight of the MMD naturalness term (0 switches it off)", low=0),
        Param("landmark_jitter", 0.015, "std of the landmark noise per step, x face size (0: off)", low=0),
        Param("diversity", 0.5, "probability of a random down-scale per step (0 switches it off)", low=0, high=1),
        Param(
            "robust",
            False,
            "expectation over JPEG re-compression and down-scaling to 0.5x, to survive re-compression (slower)",
        ),
        Param(
            "norm",
            "linf",
            "linf, or l2, the paper's other budget: an L2 ball lets the mask put more change where it "
            "matters and less elsewhere",
            choices=("linf", "l2"),
        ),
        Param("insert_every", 10, "greedy insertion of a target identity is considered every this many steps", low=1),
        FACE_MARGIN.but(default=0.1),
        Param("check_every", 5, "test the recognisers on the 8-bit image every this many steps", low=1),
        Param("extra_steps", 3, "steps kept after success", low=0),
        SEED,
        Param(
            "model_dropout",
            0.0,
            "model augmentation for transfer to unseen recognisers: dropout with this probability on every "
            "convolution output of the attacked recognisers during the attack (DFANet; 0: off)",
            low=0,
            high=0.99,
        ),
        Param(
            "smoothing",
            0.0,
            "translation-invariant gradients (TI, Dong et al. 2019): blur each step's gradient with a "
            "Gaussian of this std x the face size (0: off)",
            low=0,
        ),
        Param(
            "feature_weight",
            0.0,
            "weight of a feature-level objective: each attacked recogniser's intermediate feature map is "
            "pushed away from the clean face's, relative to its size (0: off)",
            low=0,
        ),
        Param("feature_depth", 0.5, "where that feature map is taken (0-1 through the network)", low=0, high=1),
    )

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None, on_step=None) -> ProtectionResult:
        """on_step(step, pixels_uint8, identity_loss), if given, sees every iterate (the Attack lab)."""
        settings.apply_threads()
        start = time.perf_counter()
        recs, missing = white_box_models(self.attack)
        faces = models.find_faces(pixels) if faces is None else faces
        if len(faces) == 0:
            return no_identity_to_hide(
                pixels, faces, start, steps=0, success=True, budget=Budget(self.norm, self.eps, 0.0)
            )
        generator = torch.Generator().manual_seed(self.seed)
        x0 = to_tensor(pixels)
        mask = region_mask(pixels.shape[:2], faces.boxes, self.face_margin)
        m = torch.from_numpy(mask)[None, None]
        # clean landmarks and embeddings stay fixed: the attack moves the face away from them
        clean = [
            [(rec, lm, _embed(rec, x0 / 255.0, lm)) for rec in recs for lm in [rec.landmarks(pixels, box)]]
            for box in faces.boxes
        ]
        notices = []
        candidates, chosen, photo_index = [], [[] for _ in faces.boxes], []
        if self.mode == "targeted":
            candidates, photo_index = self._candidates(recs, clean)
            if not candidates:
                notices.append(
                    "No usable target identity (every candidate looks like a face in this photo): "
                    "protected in dodging mode instead."
                )
        clean_patches = _patches(x0 / 255.0, mask)
        # TIP-IM's targeted objective keeps its own, smaller margin on both terms: a face cannot be
        # twice the threshold from itself and well inside it from a target at once
        dodge_margin = self.target_margin if candidates else self.margin
        face_size = float(np.median(np.max(faces.boxes[:, 2:] - faces.boxes[:, :2], axis=1)))
        radius = self.eps * float(np.sqrt(3 * mask.sum()))  # L2 budget (grey levels), norm="l2"
        delta = torch.zeros_like(x0, requires_grad=True)
        # done when the margin is reached (loss 0: what transfers to unseen recognisers) and the
        # 8-bit photo fools every attacked recogniser at its threshold
        stop = EarlyStop(self.check_every, self.extra_steps, zero_required=True)

        def objective(step: int):
            x, scale = self._transform((x0 + delta * m) / 255.0, mask, generator)
            id_loss, feature_loss = x.new_zeros(()), x.new_zeros(())
            for i, face in enumerate(clean):
                lms = [self._jitter(lm, faces.boxes[i], generator) * scale for _, lm, _ in face]
                if self.feature_weight:  # the clean face's feature maps, seen the same way
                    x_clean = F.interpolate(x0 / 255.0, size=x.shape[2:], mode="bilinear") if scale != 1 else x0 / 255.0
                    with torch.no_grad(), mid_features(recs, self.feature_depth) as mid:
                        clean_maps = [
                            (rec.embed_tensor(x_clean, lm), mid.last.get(k))[1]
                            for k, ((rec, _, _), lm) in enumerate(zip(face, lms))
                        ]
                with (
                    feature_dropout(recs, self.model_dropout, generator),
                    mid_features(recs, self.feature_depth) as mid,
                ):
                    embs = []
                    for k, ((rec, _, _), lm) in enumerate(zip(face, lms)):
                        embs.append(rec.embed_tensor(x, lm))
                        if self.feature_weight and clean_maps[k] is not None:
                            f, f0 = mid.last[k], clean_maps[k]
                            feature_loss = feature_loss - (f - f0).norm() / f0.norm().clamp_min(1e-6)
                id_loss = id_loss + sum(rec.dodge_loss(e, e0, dodge_margin) for (rec, _, e0), e in zip(face, embs))
                if candidates:
                    losses = torch.stack(
                        [
                            sum(
                                rec.match_loss(e, t[j], self.target_margin)
                                for j, ((rec, _, _), e) in enumerate(zip(face, embs))
                            )
                            for t in candidates
                        ]
                    )
                    if step % self.insert_every == 0:
                        _greedy_insert(chosen[i], losses.detach())
                    id_loss = id_loss + _softmin(losses[chosen[i]])
            loss = id_loss + self.feature_weight * feature_loss
            if self.mmd_weight:
                loss = loss + self.mmd_weight * _mmd(_patches((x0 + delta * m) / 255.0, mask), clean_patches)
            return loss, float(id_loss.detach())

        run = iterate(
            self.key,
            delta,
            x0,
            m,
            objective,
            lambda: self._succeeded(clean, candidates, chosen, faces, x0, delta, m),
            stop,
            self.steps,
            self.eps,
            self.step_size,
            self.momentum,
            norm=self.norm,
            radius=radius,
            smooth=(lambda grad: _blur(grad, self.smoothing * face_size)) if self.smoothing else None,
            on_step=on_step,
            notices=notices,
        )
        history, steps_done = run.history, run.steps
        success = stop.success
        if self.norm == "l2":  # whole grey levels, still inside the ball; judged as rounded
            with torch.no_grad():
                delta.copy_(l2_round(delta * m, x0, radius))
            success = False
        if not success:
            success = self._succeeded(clean, candidates, chosen, faces, x0, delta, m)
        out = to_uint8(x0 + delta * m)
        if not success:
            goal = "matches its target" if candidates else "still matches a face"
            notices.append(
                f"After {steps_done} steps not every attacked recogniser is fooled ({goal} condition): "
                "raise the budget or the number of steps."
            )
        info = {
            "identity_loss": history,
            "mode": self.mode,
            "attacked": [r.name for r in recs],
            "unavailable_attacked": missing,
            "robust": self.robust,
            "norm": self.norm,
            # per face: indices into the target photos (targets, or builtin_target_photos())
            "targets_used": [[photo_index[c] for c in face_set] for face_set in chosen] if candidates else [],
        }
        return ProtectionResult(
            out,
            faces,
            time.perf_counter() - start,
            info,
            notices,
            steps=steps_done,
            success=bool(success),
            budget=Budget.measure(self.norm, self.eps, pixels, out, mask),
        )

    def describe(self, result: ProtectionResult) -> str:
        """The summary line, and for a targeted mask which target photos the faces now resemble."""
        text = super().describe(result)
        used = sorted({t for face in result.info.get("targets_used", []) for t in face})
        if used:
            text += (
                "\nTargeted: each face was steered towards target identity "
                + ", ".join(f"#{t + 1}" for t in used)
                + " of the target photos."
            )
        return text

    def _candidates(self, recs, clean) -> tuple[list[list[torch.Tensor]], list[int]]:
        """Target embeddings [candidate][recogniser] and each one's index among the target
        photos, leaving out identities that already match a face of this photo at any
        attacked recogniser (they may be the same person)."""
        photos = self.targets if self.targets is not None else builtin_target_photos()
        candidates, index = [], []
        for k, target in enumerate(photos):
            box = models.largest_face(target)
            if box is None:
                continue
            xt = to_tensor(target, unit=True)
            embs = [_embed(rec, xt, rec.landmarks(target, box)) for rec in recs]
            same = any(
                rec.is_match(float(rec.score_tensor(e, e0))) for face in clean for (rec, _, e0), e in zip(face, embs)
            )
            if not same:
                candidates.append(embs)
                index.append(k)
        return candidates, index

    def _transform(self, x: torch.Tensor, mask: np.ndarray, generator: torch.Generator):
        """Input diversity and, with `robust`, JPEG of the face region: (x', landmark scale)."""
        if self.robust and torch.rand((), generator=generator) < 0.5:
            x = _jpeg_region(x, mask, float(torch.empty(()).uniform_(50, 90, generator=generator)))
        scale = 1.0
        if self.diversity and torch.rand((), generator=generator) < self.diversity:
            low = 0.5 if self.robust else 0.8
            scale = float(torch.empty(()).uniform_(low, 1.0, generator=generator))
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        return x, scale

    def _jitter(self, lm: np.ndarray, box: np.ndarray, generator: torch.Generator) -> np.ndarray:
        # a recogniser finds landmarks on the protected photo a little off the clean ones:
        # the mask must work for any nearby alignment (expectation over jitter)
        if not self.landmark_jitter:
            return lm
        size = float(max(box[2] - box[0], box[3] - box[1]))
        return (
            lm + torch.randn(lm.shape, generator=generator, dtype=torch.float64).numpy() * self.landmark_jitter * size
        )

    @staticmethod
    def _succeeded(clean, candidates, chosen, faces, x0, delta, m) -> bool:
        """On the 8-bit image, with landmarks found again on it: is every face beyond every
        attacked recogniser's threshold from itself and (targeted) matched to its best target?"""
        pixels = to_uint8(x0 + delta * m)
        x = to_tensor(pixels, unit=True)
        with torch.no_grad():
            for i, face in enumerate(clean):
                embs = [rec.embed_tensor(x, rec.landmarks(pixels, faces.boxes[i])) for rec, _, _ in face]
                if any(rec.is_match(float(rec.score_tensor(e, e0))) for (rec, _, e0), e in zip(face, embs)):
                    return False
                if (
                    candidates
                    and chosen[i]
                    and not any(
                        all(
                            rec.is_match(float(rec.score_tensor(e, candidates[c][j])))
                            for j, ((rec, _, _), e) in enumerate(zip(face, embs))
                        )
                        for c in chosen[i]
                    )
                ):
                    return False
        return True


@functools.lru_cache(maxsize=1)  # fixed photos: found once per process, not per request
def builtin_target_photos() -> tuple[np.ndarray, ...]:
    """The built-in target identities: the faces in the photos that installed packages ship
    (scikit-image's astronaut, ultralytics' bus and zidane), never a photo from the repo."""
    from faceshield.examples import example_photos
    from faceshield.images import load_image

    photos = []
    for path in example_photos().values():
        pixels = load_image(path).pixels
        for box in models.find_faces(pixels).boxes:  # one photo per face, cropped with context
            r0, r1, c0, c1 = grow(box, 1.0, pixels.shape)
            photos.append(np.ascontiguousarray(pixels[r0:r1, c0:c1]))
    return tuple(photos)


def _embed(rec, x: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return rec.embed_tensor(x, landmarks)


def _softmin(losses: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Soft minimum: the set objective is met by resembling any one identity of the set."""
    return -temperature * torch.logsumexp(-losses / temperature, dim=0)


def _greedy_insert(chosen: list[int], losses: torch.Tensor, min_gain: float = 0.05) -> None:
    """TIP-IM's greedy insertion: add the candidate whose insertion lowers the set objective
    most, if it lowers it by at least `min_gain` of its value (the first pick is the nearest)."""
    if not chosen:
        chosen.append(int(torch.argmin(losses)))
        return
    if len(chosen) == len(losses):
        return
    current = float(_softmin(losses[chosen]))
    gain, best = max(
        (current - float(_softmin(losses[chosen + [c]])), c) for c in range(len(losses)) if c not in chosen
    )
    if gain > min_gain * max(current, 1e-6):
        chosen.append(best)


def _jpeg_region(x: torch.Tensor, mask: np.ndarray, quality: float) -> torch.Tensor:
    """kornia's differentiable JPEG applied to the masked area's bounding box, cut on the
    16-pixel grid so the 8x8 blocks and 2x2 chroma subsampling align with a real JPEG's."""
    from kornia.enhance import jpeg_codec_differentiable

    rows, cols = np.nonzero(mask)
    r0, c0 = rows.min() // 16 * 16, cols.min() // 16 * 16
    r1, c1 = min(x.shape[2], -(-(rows.max() + 1) // 16) * 16), min(x.shape[3], -(-(cols.max() + 1) // 16) * 16)
    crop = jpeg_codec_differentiable(x[:, :, r0:r1, c0:c1].clamp(0, 1), torch.tensor([quality]))
    out = x.clone()
    out[:, :, r0:r1, c0:c1] = crop
    return out


def _patches(x: torch.Tensor, mask: np.ndarray, size: int = 4, limit: int = 2048) -> torch.Tensor:
    """(N, 3*size*size) non-overlapping patches of the masked area (a fixed subset when large)."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    region = x[:, :, r0 : r1 - (r1 - r0) % size, c0 : c1 - (c1 - c0) % size]
    patches = F.unfold(region, size, stride=size)[0].T
    if len(patches) > limit:
        patches = patches[torch.linspace(0, len(patches) - 1, limit).long()]
    return patches


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, C, H, W) tensor, std `sigma` px (kernel to 3 sigma)."""
    if sigma < 0.3:
        return x
    radius = int(np.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(x.shape[1], 1, 1)
    rows = F.conv1d(x.permute(0, 3, 1, 2).reshape(-1, x.shape[1], x.shape[2]), k, padding=radius, groups=x.shape[1])
    x = rows.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]).permute(0, 2, 3, 1)
    cols = F.conv1d(x.permute(0, 2, 1, 3).reshape(-1, x.shape[1], x.shape[3]), k, padding=radius, groups=x.shape[1])
    return cols.reshape(x.shape[0], x.shape[2], x.shape[1], x.shape[3]).permute(0, 2, 1, 3)


def _mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared MMD with a Gaussian kernel (bandwidth: median heuristic on the clean set)."""
    with torch.no_grad():
        bandwidth = torch.cdist(b, b).median().clamp_min(1e-3) ** 2
    k = lambda u, v: torch.exp(-(torch.cdist(u, v) ** 2) / bandwidth)  # noqa: E731
    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
