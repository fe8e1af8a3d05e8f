"""Identity masks: TIP-IM (Yang et al., "Towards Face Encryption by Generating Adversarial
Identity Masks", ICCV 2021), with OPOM's person-level objective (Zhong and Deng, TPAMI 2022).

Distance: L-inf <= eps grey levels (or, with norm l2, an RMS bound), confined to each face
region found on the clean photo.
Where: each face is attacked on its neighbourhood scaled down until the face is `work_size`
px across (work_region.WorkRegion), the mask up-sampled onto the photo: recognisers see faces
at 112-160 px, so a mask made at that scale holds at every photo size and costs the same on a
12 MP portrait as on a thumbnail.
Objective (identity_objective.IdentityObjective), per face, summed over the attacked
recognisers (each with its own metric and threshold):
  dodging:  the protected face must be `margin` beyond the threshold from the person: the
            convex hull of this face's clean embeddings, a few views of it, and the person's
            other photos when given (`same_person`): an attacker links a photo to a person
            through their other photos, so that is what it is pushed away from;
  targeted: additionally it must match a target identity. Targets come from a candidate set
            (uploaded photos, or the built-in faces of the photos shipped by installed
            packages); TIP-IM's greedy insertion grows the active set S one identity at a
            time (an explicit step of the loop), adding the candidate with the largest gain in
            the set objective (a soft-min over S of the match losses).
Plus `mmd_weight` x an MMD naturalness term between the protected and the clean face
region's 4x4 patches (Gaussian kernel), TIP-IM's way of keeping the mask natural.
Optimiser: momentum iterations (MI-FGSM) with input diversity (random down-scaling), an
expectation over alignments (landmark noise, and with `align_jitter` a random similarity per
recogniser and step), optionally a random subset of recognisers per step, a texture-adaptive
budget (`perceptual`), held-back validating recognisers that decide when to stop
(`validate_with`), and with `robust` an expectation over kornia's differentiable JPEG and
down-scaling to 0.5x. Success is checked on the 8-bit photo, landmarks found again on it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

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
    NAMES,
    PHOTOS,
    SEED,
    STEPS,
    Budget,
    EarlyStop,
    LoopConfig,
    Param,
    Perturbation,
    Protection,
    ProtectionResult,
    feature_dropout,
    iterate,
    l2_round,
    no_identity_to_hide,
    region_mask,
    register,
    white_box_models,
)
from faceshield.protections.identity_objective import HULLS, IdentityObjective, Person
from faceshield.protections.work_region import WorkRegion
from faceshield.tensors import to_tensor, to_uint8

VALIDATE_MARGIN = 0.1  # how far past its threshold a held-back validating recogniser must be


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
        STEPS.but(default=36),
        Param("step_size", 2.0, "grey levels per step; under L2, 1/8 of the radius per unit", low=0),
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
            "spectrum",
            0.0,
            "spectrum simulation (SSA, Long et al. ECCV 2022): each step sees the face with noise of the budget's "
            "size added and every DCT frequency scaled by a random factor in 1 +- this (0: off)",
            low=0,
            high=1,
        ),
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
            "same_person",
            None,
            "other photos of the same person (one face each, the largest): the mask moves the face away from "
            "everything they span at every attacked recogniser, not only from this photo (OPOM)",
            kind=PHOTOS,
        ),
        Param(
            "hull",
            "convex",
            "the region of the person's embeddings to leave: convex (their convex hull) or centre (their mean)",
            choices=HULLS,
        ),
        Param(
            "views",
            2,
            "views of this face (lower resolution, other exposures) added to the person's photos",
            low=0,
            high=3,
        ),
        Param(
            "work_size",
            160.0,
            "the attack runs on a copy of each face scaled down to this size (px) and up-samples the mask: "
            "the scale recognisers see, the same cost at any photo size (0: the photo's resolution)",
            low=0,
        ),
        Param(
            "align_jitter",
            1.0,
            "expectation over alignments: a random rotation (8 deg), scale (8%) and shift (4%) of each "
            "recogniser's landmarks per step, times this (0: off)",
            low=0,
        ),
        Param(
            "surrogates_per_step",
            2,
            "attack a random subset of this many recognisers per step (0: all; fewer: cheaper steps)",
            low=0,
        ),
        Param(
            "validate_with",
            (),
            "held-back recognisers (registry keys) never attacked but judged at each check: the attack goes on "
            "until they also miss by a margin",
            kind=NAMES,
        ),
        Param(
            "perceptual",
            0.0,
            "spend the budget where the eye is least sensitive: up to this share of it is taken off flat "
            "skin and kept on texture (0: a uniform L-inf budget)",
            low=0,
            high=1,
        ),
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
        photo = to_tensor(pixels)
        validators = [v for v in models.available(list(self.validate_with))[0].values() if v not in recs]
        # the person's other photos, as every attacked recogniser sees them
        references = [person_embeddings(recs, p) for p in self.same_person or []]
        references = [r for r in references if r is not None]
        notices = (
            []
            if len(references) == len(self.same_person or [])
            else ["A same-person photo without a face was left out."]
        )
        # each face as every attacked (and validating) recogniser sees it on the clean photo
        clean = [
            [_embed(rec, photo / 255.0, rec.landmarks(pixels, box)) for rec in recs + validators] for box in faces.boxes
        ]
        candidates, photo_index = [], []
        if self.mode == "targeted":
            candidates, photo_index = self._candidates(recs, [face[: len(recs)] for face in clean])
            if not candidates:
                notices.append(
                    "No usable target identity (every candidate looks like a face in this photo): "
                    "protected in dodging mode instead."
                )
        # TIP-IM's targeted objective keeps its own, smaller margin on both terms: a face cannot be
        # twice the threshold from itself and well inside it from a target at once
        dodge_margin = self.target_margin if candidates else self.margin
        out, steps, history, objectives, success = photo, 0, [], [], True
        for i, box in enumerate(faces.boxes):
            region = WorkRegion.around(box, pixels.shape, self.work_size, self.face_margin)
            x0 = region.down(out)
            landmarks = [region.to_work(rec.landmarks(pixels, box)) for rec in recs]
            person = self._person(recs, x0, landmarks, references)
            objective = IdentityObjective(person, dodge_margin, self.hull, candidates, self.target_margin)
            # judged on the 8-bit photo against the real photos: this face and the person's others
            judge_anchors = [torch.stack([clean[i][j]] + [r[j] for r in references]) for j in range(len(recs))]
            face = _Face(region, box, landmarks, x0, objective, judge_anchors, validators, clean[i][len(recs) :])
            delta, run, reached = self._attack_face(face, out, generator, on_step, notices, steps)
            out = _apply(region, out, delta, self.norm, self.eps)
            steps, history, success = steps + run.steps, history + run.history, success and reached
            objectives.append((objective, judge_anchors))
        result = to_uint8(out)
        if not success or self.norm == "l2":  # the saved photo, every face, landmarks found again
            success = all(
                self._fooled(result, box, recs, anchors, objective)
                for box, (objective, anchors) in zip(faces.boxes, objectives)
            )
        if not success:
            goal = "matches its target" if candidates else "still matches a face"
            notices.append(
                f"After {steps} steps not every attacked recogniser is fooled ({goal} condition): "
                "raise the budget or the number of steps."
            )
        info = {
            "identity_loss": history,
            "mode": self.mode,
            "attacked": [r.name for r in recs],
            "unavailable_attacked": missing,
            "robust": self.robust,
            "norm": self.norm,
            "person_photos": 1 + len(references),
            # per face: indices into the target photos (targets, or builtin_target_photos())
            "targets_used": [[photo_index[c] for c in o.chosen] for o, _ in objectives] if candidates else [],
        }
        mask = region_mask(pixels.shape[:2], faces.boxes, self.face_margin)
        return ProtectionResult(
            result,
            faces,
            time.perf_counter() - start,
            info,
            notices,
            steps=steps,
            success=bool(success),
            budget=Budget.measure(self.norm, self.eps, pixels, result, mask),
        )

    def _attack_face(self, face: _Face, photo, generator, on_step, notices, first_step):
        """One face's mask at work resolution: (delta (1, 3, h, w) grey levels, the loop's run,
        goal reached on the 8-bit photo)."""
        region, objective, x0 = face.region, face.objective, face.x0
        recs = objective.person.recognisers
        m = torch.from_numpy(region.mask)[None, None]
        mmd = _MMD(_patches(x0 / 255.0, region.mask)) if self.mmd_weight else None
        face_size = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1])) * region.scale
        radius = self.eps * float(np.sqrt(3 * region.mask.sum()))  # L2 budget (grey levels), norm="l2"
        eps = self.eps * _texture_weight(x0, m, self.perceptual) if self.perceptual else self.eps
        delta = torch.zeros_like(x0, requires_grad=True)
        # without a validating recogniser: done when the margin is reached (loss 0: what transfers
        # to unseen recognisers) and the 8-bit photo fools every attacked one; with one, as soon as
        # it too is fooled by a margin on the 8-bit photo
        stop = EarlyStop(self.check_every, self.extra_steps, zero_required=not face.validators)

        def loss_at(step: int):
            x, scale = self._transform((x0 + delta * m) / 255.0, region.mask, generator)
            inserting = bool(objective.targets) and step % self.insert_every == 0
            active = range(len(recs)) if inserting else self._surrogates(len(recs), generator)
            with feature_dropout(recs, self.model_dropout, generator):
                embs = [
                    rec.embed_tensor(x, self._jitter(face.landmarks[j], face_size, generator) * scale)
                    if j in active
                    else None
                    for j, rec in enumerate(recs)
                ]
            target_losses = objective.target_losses(embs) if objective.targets else None
            if inserting:
                objective.insert(target_losses)  # TIP-IM's greedy insertion, a step of its own
            id_loss = objective.loss(embs, target_losses)
            loss = id_loss
            if mmd is not None:
                loss = loss + self.mmd_weight * mmd(_patches((x0 + delta * m) / 255.0, region.mask))
            return loss, float(id_loss.detach())

        def judge() -> bool:
            crop = to_uint8(region.protected_crop(photo, delta.detach() * m))
            box = region.box_in_crop(face.box)
            if not self._fooled(crop, box, recs, face.judge_anchors, objective):
                return False
            return all(  # the held-back recognisers must miss too, by a margin
                float(v.dodge_loss(_embed(v, to_tensor(crop, unit=True), v.landmarks(crop, box)), e0, VALIDATE_MARGIN))
                == 0
                for v, e0 in zip(face.validators, face.validator_clean)
            )

        def show(step, _pixels, value):
            on_step(first_step + step, to_uint8(_apply(region, photo, delta.detach() * m, "linf", self.eps)), value)

        smooth = (lambda grad: _blur(grad, self.smoothing * face_size)) if self.smoothing else None
        config = LoopConfig(self.key, self.steps, eps, self.step_size, self.momentum, self.norm, radius, smooth)
        show_step = show if on_step is not None else None
        run = iterate(config, Perturbation(delta, x0, m), loss_at, judge, stop, show_step, notices)
        return delta.detach() * m, run, stop.success

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
                rec.is_match(float(rec.score_tensor(e, e0))) for face in clean for rec, e0, e in zip(recs, face, embs)
            )
            if not same:
                candidates.append(embs)
                index.append(k)
        return candidates, index

    def _transform(self, x: torch.Tensor, mask: np.ndarray, generator: torch.Generator):
        """Input diversity, spectrum simulation and, with `robust`, JPEG of the face region:
        (x', landmark scale)."""
        if self.robust and torch.rand((), generator=generator) < 0.5:
            x = _jpeg_region(x, mask, float(torch.empty(()).uniform_(50, 90, generator=generator)))
        if self.spectrum:
            x = _spectrum_view(x, self.eps / 255.0, self.spectrum, generator)
        scale = 1.0
        if self.diversity and torch.rand((), generator=generator) < self.diversity:
            low = 0.5 if self.robust else 0.8
            scale = float(torch.empty(()).uniform_(low, 1.0, generator=generator))
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        return x, scale

    def _jitter(self, lm: np.ndarray, face_size: float, generator: torch.Generator) -> np.ndarray:
        """Landmarks as another aligner might place them: a recogniser finds them a little off
        on the protected photo, and every recogniser crops the face its own way, so the mask must
        work for any nearby alignment (an expectation over alignments, drawn per step and per
        recogniser): noise on each point (landmark_jitter) and a random similarity transform
        (align_jitter: rotation, scale and shift) about the face's centre."""
        lm = np.asarray(lm, np.float64)
        if self.landmark_jitter:
            noise = torch.randn(lm.shape, generator=generator, dtype=torch.float64).numpy()
            lm = lm + noise * self.landmark_jitter * face_size
        if self.align_jitter:
            angle, log_scale, dx, dy = (
                torch.randn(4, generator=generator, dtype=torch.float64) * self.align_jitter
            ).tolist()
            angle, scale = np.deg2rad(8 * angle), np.exp(0.08 * log_scale)
            rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            centre = lm.mean(0)
            lm = (lm - centre) @ rot.T + centre + np.array([dx, dy]) * 0.04 * face_size
        return lm

    def _surrogates(self, n: int, generator: torch.Generator) -> range | list[int]:
        """The recognisers this step attacks: all, or a random `surrogates_per_step` of them."""
        k = self.surrogates_per_step
        if not k or k >= n:
            return range(n)
        return sorted(torch.randperm(n, generator=generator)[:k].tolist())

    def _person(self, recs, x0: torch.Tensor, landmarks, references) -> Person:
        """The person as each recogniser sees them: this face (at work resolution), the
        person's other photos, then `views` views of this face standing in for more photos."""
        x = x0 / 255.0
        views = [(x, 0.0)]
        if self.views >= 1:  # the same face in a low-resolution photo
            small = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
            views.append((F.interpolate(small, size=x.shape[2:], mode="bilinear", align_corners=False), 0.0))
        if self.views >= 2:  # a darker exposure, aligned a little differently
            views.append((x.clamp(0, 1) ** 1.4, 1.0))
        if self.views >= 3:  # a brighter one, aligned differently again
            views.append((x.clamp(0, 1) ** 0.7, -1.0))
        anchors = []
        for j, rec in enumerate(recs):
            lm = np.asarray(landmarks[j], np.float64)
            face = [_embed(rec, x, lm)] + [r[j] for r in references]
            for view, turn in views[1:]:
                angle = np.deg2rad(5 * turn)
                rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                face.append(_embed(rec, view, (lm - lm.mean(0)) @ rot.T + lm.mean(0)))
            anchors.append(torch.stack(face))
        return Person(list(recs), anchors, photos=1 + len(references))

    @staticmethod
    def _fooled(pixels, box, recs, anchors, objective: IdentityObjective) -> bool:
        """On an 8-bit photo (or a region of one), with landmarks found again on it: is the face
        in `box` beyond every attacked recogniser's threshold from every row of anchors[j] and
        (targeted) matched to one of its chosen targets? (IdentityObjective.fooled)"""
        x = to_tensor(pixels, unit=True)
        return objective.fooled([_embed(rec, x, rec.landmarks(pixels, box)) for rec in recs], anchors)


@dataclass
class _Face:
    """One face's attack: where it works, its landmarks there (per recogniser), the clean work
    image, its objective, what success is judged against (judge_anchors[j]: (K, D) real photos
    of the person at recogniser j) and the held-back validating recognisers with the clean
    face's embeddings at each."""

    region: WorkRegion
    box: np.ndarray
    landmarks: list[np.ndarray]
    x0: torch.Tensor
    objective: IdentityObjective
    judge_anchors: list[torch.Tensor]
    validators: list
    validator_clean: list[torch.Tensor]


def person_embeddings(recs, photo: np.ndarray) -> list[torch.Tensor] | None:
    """The largest face of another photo of the person at each recogniser (None: no face)."""
    box = models.largest_face(photo)
    if box is None:
        return None
    x = to_tensor(photo, unit=True)
    return [_embed(rec, x, rec.landmarks(photo, box)) for rec in recs]


def _apply(region: WorkRegion, photo: torch.Tensor, delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """`photo` (grey levels) with one face's work-resolution `delta` applied, in whole grey
    levels; under an L2 budget rounded inside the ball at the photo's resolution."""
    if norm != "l2":
        return region.paste(photo, delta)
    with torch.no_grad():
        crop = region.crop(photo)
        change = l2_round(region.up(delta), crop, eps * float(np.sqrt(3 * region.photo_mask.sum())))
        out = photo.clone()
        out[:, :, region.r0 : region.r1, region.c0 : region.c1] = crop + change
        return out


def _texture_weight(x0: torch.Tensor, m: torch.Tensor, strength: float) -> torch.Tensor:
    """(1, 1, h, w) per-pixel budget factor in [1 - strength x 0.75, 1]: full budget where the
    face has texture (local contrast at or above its 75th percentile), less on flat skin where
    the eye sees change most (a just-noticeable-difference mask)."""
    y = (0.299 * x0[:, :1] + 0.587 * x0[:, 1:2] + 0.114 * x0[:, 2:]) / 255.0
    mean = F.avg_pool2d(y, 5, 1, 2, count_include_pad=False)
    std = (F.avg_pool2d(y * y, 5, 1, 2, count_include_pad=False) - mean**2).clamp_min(0).sqrt()
    reference = torch.quantile(std[m > 0], 0.75).clamp_min(1e-4) if bool((m > 0).any()) else std.new_tensor(1.0)
    weight = (std / reference).clamp(0.25, 1.0)
    return (1 - strength) + strength * weight


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


@functools.lru_cache(maxsize=8)
def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix of size n (its transpose is the inverse)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.float()


def _spectrum_view(x: torch.Tensor, sigma: float, rho: float, generator: torch.Generator) -> torch.Tensor:
    """SSA's spectrum transformation of a (1, C, H, W) image in [0, 1]: Gaussian noise of std
    `sigma` added, then each 2-D DCT coefficient of each channel scaled by a factor drawn
    uniformly in [1 - rho, 1 + rho], back to pixels. Differentiable in x."""
    h, w = x.shape[2:]
    dh, dw = _dct_matrix(h), _dct_matrix(w)
    noisy = x + torch.randn(x.shape, generator=generator) * sigma
    coeffs = dh @ noisy @ dw.T
    scale = 1 + (torch.rand(coeffs.shape, generator=generator) * 2 - 1) * rho
    return dh.T @ (coeffs * scale) @ dw


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


class _MMD:
    """Squared MMD to a fixed clean set of patches, Gaussian kernel (bandwidth: median heuristic
    on the clean set). What depends only on the clean set (the bandwidth, the clean-clean term)
    is computed once, not at every step."""

    def __init__(self, clean: torch.Tensor):
        self.clean = clean
        with torch.no_grad():
            distances = torch.cdist(clean, clean)
            self.bandwidth = distances.median().clamp_min(1e-3) ** 2
            self.clean_term = torch.exp(-(distances**2) / self.bandwidth).mean()

    def kernel(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(torch.cdist(u, v) ** 2) / self.bandwidth)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        return self.kernel(patches, patches).mean() + self.clean_term - 2 * self.kernel(patches, self.clean).mean()
