"""Per-image detector evasion: the iterative attack of Tong et al., "Image privacy protection
based on adversarial perturbation generative networks" (first method), here as momentum PGD
(MI-FGSM, Dong et al. 2018) under an L-inf budget.

Distance: L-inf <= eps (grey levels out of 255), perturbation confined to the face regions.
Objective: each white-box detector's face_loss (by default MTCNN and BlazeFace short-range; zero
once it finds none of the clean faces), plus an optional L2 distortion penalty. Steps are
whole grey levels, so the float result is already the 8-bit PNG the user downloads; success
is checked on that 8-bit image with the real detector and the attack stops a few steps after
it holds.

Budget ladder: when the steps at `eps` end with an attacked detector still finding a face,
the attack goes on at the next rung (`rungs` budgets spaced geometrically up to `max_eps`),
each warm-started from the perturbation so far, and keeps the first budget that hides every
face; the result's budget and the summary line say which budget it took.

Start (default `start=generator`): the trained one-pass generator's perturbation
(protections/generator.py) at the budget it was trained at; when it already hides every face
from the attacked detectors no step is taken, else the ladder goes on from it clipped to eps.
`start=zero` is the attack alone (the Attack lab steps through it).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from faceshield import settings
from faceshield.metrics import image_quality
from faceshield.models import Detections
from faceshield.protections.base import (
    ATTACK,
    EPS,
    FACE_MARGIN,
    STEPS,
    WHOLE_IMAGE,
    Budget,
    EarlyStop,
    LoopConfig,
    Param,
    Perturbation,
    Protection,
    ProtectionResult,
    iterate,
    merge_faces,
    region_mask,
    register,
    white_box_models,
)
from faceshield.tensors import to_tensor, to_uint8
from faceshield.weights import WeightsUnavailable


@register
class DetectorPGD(Protection):
    """Hide faces from face detectors.

    Shapes: pixels (H, W, 3) uint8 in, ProtectionResult.pixels (H, W, 3) uint8 out.

    Example:
        >>> result = DetectorPGD(eps=8)(pixels)
        >>> models.load("mtcnn").detect(result.pixels)   # finds no face
    """

    key = "detector-pgd"
    title = "Hide from detectors (iterative)"
    summary = "per-image momentum PGD on the face scores of white-box detectors (Tong et al.)"
    # white-box targets by default (the bench marks them): two designs, a cascade (MTCNN) and a
    # single-shot anchor detector (BlazeFace short-range, MediaPipe's selfie model), both in the
    # generator's training loss, so its one-pass start is aimed at both
    attacks = ("mtcnn", "blazeface-short")
    hides, per_face_cost, traceable = "faces", True, True
    params = (
        EPS.but(help="L-inf budget in grey levels"),
        STEPS.but(default=80),
        Param("step_size", 1.0, "grey levels per step", low=0),
        Param("momentum", 1.0, "MI-FGSM decay", low=0),
        ATTACK.but(default=attacks, help="white-box detectors to attack (registry keys)"),
        Param("distortion_weight", 0.0, "weight of the mean squared perturbation (grey levels) in the loss", low=0),
        FACE_MARGIN,
        Param(
            "screen_every",
            4,
            "MTCNN: screen the candidate windows with the whole cascade (the no-grad part of a step, much of "
            "its cost on a crowd) every this many steps, pushing the same candidates down in between; 1: every step",
            low=1,
        ),
        Param("check_every", 4, "test the real detectors on the 8-bit image every this many steps", low=1),
        Param("extra_steps", 2, "steps kept after success, to stand some distance from the threshold", low=0),
        WHOLE_IMAGE,
        Param(
            "shrink",
            True,
            "after success, scale the perturbation down as far as the white-box detectors still miss "
            "every face (costs three detector checks)",
        ),
        Param(
            "start",
            "generator",
            "generator: begin from the trained generator's one-pass perturbation (protections/generator.py) "
            "at the budget it was trained at (within max_eps); when that already hides every face no step is "
            "taken and it is shrunk as far as hiding allows, else the ladder goes on from it clipped to eps "
            "(on 20 dev photos against MTCNN: the same success as zero, 7x faster median, +1.3 dB PSNR); "
            "zero: the attack alone",
            choices=("zero", "generator"),
        ),
        Param(
            "max_eps",
            16.0,
            "budget ladder: while an attacked detector still finds a face after the steps at eps, go on at "
            "larger budgets up to this one (grey levels; at or below eps: no ladder)",
            low=0,
            high=EPS.high,
        ),
        Param(
            "grid",
            0,
            "coarse grid: the change is made of cells about (smallest face side / grid) px across (each step's "
            "gradient averaged over the cells), where a large face is decided at MTCNN's coarse pyramid levels "
            "and a pixel-wise change averages out; 0: pixel-wise",
            low=0,
        ),
        Param("rungs", 3, "budget ladder: how many budgets above eps it may try (0: none)", low=0, high=8),
        Param(
            "patience",
            16,
            "budget ladder: leave a budget for the next one early when the loss fell less than plateau_gain in "
            "this many steps (a plateau the rest of the steps rarely leave); 0: always take every step",
            low=0,
        ),
        Param(
            "plateau_gain",
            0.25,
            "budget ladder: with patience, the loss must fall by this share every `patience` steps for a budget "
            "to be kept (0.05: only a flat loss climbs; a crowd's loss creeping down 10% a window at a budget "
            "it cannot reach zero at cost half its time)",
            low=0,
            high=1,
        ),
        Param(
            "rung_steps",
            40,
            "budget ladder: most iterations at each larger budget (each starts from the perturbation so far)",
            low=1,
        ),
    )

    def __call__(self, pixels: np.ndarray, faces: Detections | None = None, on_step=None) -> ProtectionResult:
        """on_step(step, pixels_uint8, face_loss), if given, sees every iterate (the Attack lab)."""
        settings.apply_threads()
        start = time.perf_counter()
        detectors, missing = white_box_models(self.attack)
        device = settings.device()
        for d in detectors:
            if hasattr(d, "to"):
                d.to(device)

        clean = {d.name: d.detect(pixels) for d in detectors}
        all_faces = merge_faces(list(clean.values()) + ([faces] if faces is not None else []))
        notices = []
        if len(all_faces) == 0:
            if not self.whole_image:
                return ProtectionResult(
                    pixels.copy(),
                    all_faces,
                    time.perf_counter() - start,
                    notices=[
                        "No face found: the photo was left unchanged "
                        "(tick 'protect the whole image' to perturb it anyway)."
                    ],
                    steps=0,
                    success=True,
                    budget=Budget("linf", self.eps, 0.0),
                )
            mask = np.ones(pixels.shape[:2], np.float32)
            notices.append("No face found: the whole photo was perturbed.")
        else:
            mask = region_mask(pixels.shape[:2], all_faces.boxes, self.face_margin)

        x0 = to_tensor(pixels, device=device)  # grey levels
        region = torch.from_numpy(mask).to(device)
        m = region[None, None]
        delta = torch.zeros_like(x0, requires_grad=True)  # grey levels, whole numbers

        losses = [d.attack_loss(self.screen_every) for d in detectors]  # one attack's losses (they may keep state)

        def objective(step: int):
            x = (x0 + delta * m) / 255.0
            face_loss = sum(loss(x, region) for loss in losses)
            distortion = (delta * m).pow(2).mean()
            return face_loss + self.distortion_weight * distortion, float(face_loss.detach())

        # a zero loss ends it too: the surrogate sees no face, so no gradient is left
        held: dict[str, torch.Tensor] = {}  # the last perturbation judged to hide every face

        def hidden(cheap: bool = True) -> bool:
            # while a loss still sees a face the real detector surely keeps, skip the real check
            # (on a crowd photo a second each, and most checks of a rung that fails)
            if cheap and any(loss.surely_found() for loss in losses):
                return False
            ok = self._hidden(detectors, x0, delta, m, mask)
            if ok:
                held["delta"] = delta.detach().clone()
            return ok

        history, ladder = [], []
        smooth = coarse_grid(self.cell(all_faces.boxes))
        budgets = self.budgets(len(all_faces) > 0)
        success = False
        warm = None
        if self.start == "generator" and len(all_faces):
            # the trained generator's one pass, at the budget it was trained at (within the
            # ladder's largest): when it already hides every face no step is taken (shrink then
            # spends only what hiding needs); else the ladder goes on from it, clipped to eps
            # (only its weights may be missing: an error while running it is a bug, not a fallback)
            try:
                eps = min(_generator_eps(), budgets[-1][0])
            except WeightsUnavailable as error:
                notices.append(f"The trained generator is unavailable ({error}); the attack started from zero.")
            else:
                warm = _generator_start(x0.cpu(), all_faces.boxes, eps)
        if warm is not None:
            with torch.no_grad():
                delta.copy_(warm.to(device))
            success = hidden(cheap=False)
            if success:
                ladder.append({"eps": eps, "steps": 0, "hidden": True, "generator": True})
                budgets = []
            else:
                with torch.no_grad():
                    delta.clamp_(-self.eps, self.eps)
        for rung, (eps, steps) in enumerate(budgets):
            # a larger rung goes on from the perturbation so far (just judged: a face is found);
            # every rung but the last may be left early on a plateau
            patience = self.patience if rung < len(budgets) - 1 else 0
            first = not ladder and warm is not None
            stop = EarlyStop(
                self.check_every,
                self.extra_steps,
                zero_stops=True,
                check_first=first,
                patience=patience,
                min_gain=self.plateau_gain,
            )
            late: list[str] = []
            held.clear()
            config = LoopConfig(self.key, steps, eps, self.step_size, self.momentum, smooth=smooth)
            run = iterate(config, Perturbation(delta, x0, m), objective, hidden, stop, on_step, late)
            history += run.history
            # judged on the final 8-bit photo: the steps taken after success to stand off the
            # threshold can also bring a face back over it; then the photo judged hidden during
            # this rung is kept (the ladder goes on only when none was)
            success = hidden(cheap=False)
            if not success and "delta" in held:
                with torch.no_grad():
                    delta.copy_(held["delta"])
                success = True
            ladder.append({"eps": eps, "steps": run.steps, "hidden": bool(success)})
            notices += late
            if success or late:  # hidden, or the request's time is up
                break
        steps_done = sum(r["steps"] for r in ladder)
        scale = self._shrink(detectors, x0, delta, m, mask) if success and self.shrink else 1.0
        out = to_uint8(x0 + torch.round(delta.detach() * scale) * m)
        info = {
            "face_loss": history,
            "attacked": [d.name for d in detectors],
            "unavailable_attacked": missing,
            "perturbation_scale": scale,
            "ladder": ladder,
            "eps_used": eps,
            "cell": self.cell(all_faces.boxes),
            "psnr": image_quality(pixels, out)["psnr"],
        }
        if not success:
            tried = f" at budgets up to {eps:g}/255" if len(ladder) > 1 else ""
            notices.append(
                f"After {steps_done} steps{tried} a white-box detector still finds a face: "
                "raise the budget or the number of steps."
            )
        return ProtectionResult(
            out,
            all_faces,
            time.perf_counter() - start,
            info,
            notices,
            steps=steps_done,
            success=bool(success),
            budget=Budget.measure("linf", eps, pixels, out),
        )

    def budgets(self, faces: bool = True) -> list[tuple[float, int]]:
        """The ladder: (budget, most steps) to try in turn. eps with `steps` first, then up to
        `rungs` whole-grey-level budgets spaced geometrically from eps to max_eps, each with
        `rung_steps` (none without a face: with the whole photo perturbed there is no face to
        hide). DetectorPGD(eps=8).budgets() -> [(8, 80), (10, 40), (13, 40), (16, 40)]."""
        ladder = [(self.eps, self.steps)]
        if not faces or self.rungs == 0 or self.max_eps <= self.eps:
            return ladder
        ratio = self.max_eps / self.eps
        for k in range(1, self.rungs + 1):
            eps = float(round(self.eps * ratio ** (k / self.rungs))) if k < self.rungs else float(self.max_eps)
            if eps > ladder[-1][0]:
                ladder.append((eps, self.rung_steps))
        return ladder

    def cell(self, boxes) -> int:
        """The coarse grid's cell side (px) for faces `boxes`: the smallest face's longer side /
        grid, at least 1 (1: pixel-wise; a crowd's small faces keep the pixel-wise change)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not self.grid or not len(boxes):
            return 1
        side = float(np.max(boxes[:, 2:] - boxes[:, :2], axis=1).min())
        return max(1, int(side / self.grid))

    def describe(self, result: ProtectionResult) -> str:
        """The summary line, and which budget the ladder took when it climbed (and its PSNR)."""
        text = super().describe(result)
        ladder = result.info.get("ladder", [])
        if ladder and ladder[0].get("generator") and ladder[0]["hidden"]:
            return text + (
                f"\nThe trained generator's one pass already hid every face (no attack step; "
                f"PSNR {result.info['psnr']:.1f} dB)."
            )
        if len(ladder) > 1:
            climb = " -> ".join(f"{r['eps']:g}" for r in ladder)
            outcome = (
                f"hidden at **{ladder[-1]['eps']:g}/255**"
                if ladder[-1]["hidden"]
                else f"a face is still found at the largest, {ladder[-1]['eps']:g}/255"
            )
            text += (
                f"\nBudget ladder: {ladder[0]['eps']:g}/255 left a face found, so it climbed {climb}/255: "
                f"{outcome} (PSNR {result.info['psnr']:.1f} dB)."
            )
        return text

    def _shrink(self, detectors, x0, delta, m, mask, checks: int = 3) -> float:
        """The smallest scaling of the perturbation (bisection in [0.3, 1], `checks` checks on
        the 8-bit photo) at which the white-box detectors still find no face: visibility is
        spent only as far as the detectors need it."""
        lo, hi = 0.3, 1.0
        for _ in range(checks):
            mid = (lo + hi) / 2
            if self._hidden(detectors, x0, torch.round(delta.detach() * mid), m, mask):
                hi = mid
            else:
                lo = mid
        return hi

    @staticmethod
    def _hidden(detectors, x0, delta, m, mask) -> bool:
        """Do all white-box detectors miss every face on the 8-bit image?"""
        pixels = to_uint8(x0 + delta.detach() * m)
        for d in detectors:
            found = d.detect(pixels)
            for x1, y1, x2, y2 in found.boxes:
                cx = int(np.clip((x1 + x2) / 2, 0, mask.shape[1] - 1))
                cy = int(np.clip((y1 + y2) / 2, 0, mask.shape[0] - 1))
                if mask[cy, cx] > 0:
                    return False
        return True


def coarse_grid(cell: int):
    """The gradient filter of a perturbation made of `cell` px cells: each step's gradient is
    averaged over the cells and up-sampled bilinearly (None for 1 px cells: pixel-wise)."""
    if cell <= 1:
        return None
    import torch.nn.functional as F

    def smooth(grad: torch.Tensor) -> torch.Tensor:
        coarse = F.avg_pool2d(grad, cell, ceil_mode=True)
        return F.interpolate(coarse, size=grad.shape[-2:], mode="bilinear", align_corners=False)

    return smooth


def _generator_eps() -> float:
    """The budget (grey levels) the shipped generator was trained at."""
    from faceshield.protections.generator import load_generator

    return load_generator().eps


def _generator_start(x0: torch.Tensor, boxes, eps: float) -> torch.Tensor:
    """The trained generator's perturbation (whole grey levels, |.| <= eps) for these faces."""
    from faceshield.protections.generator import face_square, load_generator, perturb_faces

    net = load_generator()
    return perturb_faces(net, x0, [face_square(b, net.context) for b in boxes], eps) - x0
