"""The Attack lab (class mode): an attack recorded iteration by iteration, for teaching.

trace_attack() runs an iterative protection with a per-step hook, keeps every iterate as the
page shows it (an 8-bit thumbnail, images.thumbnail), and judges a subset of them at full
resolution with detectors and recognisers, so a class can step through how confidence falls
while the perturbation grows. The Trace holds only what the lab's slider shows (thumbnails,
losses, scores): the page keeps it in a gr.State for settings.STATE_TTL seconds. budget_sweep()
shows the other trade-off: protection and visibility against the L-inf budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from faceshield import models
from faceshield.images import thumbnail
from faceshield.metrics import image_quality
from faceshield.protections import REGISTRY, build

LAB_DETECTORS = ("mtcnn", "centerface", "dlib-hog")
LAB_RECOGNISERS = ("dlib-resnet", "facenet", "sface")


def lab_methods() -> tuple[str, ...]:
    """The protections the lab can step through: those that report every iterate (traceable)."""
    return tuple(key for key, cls in REGISTRY.items() if cls.traceable)


@dataclass
class Trace:
    method: str
    eps: float
    iterates: list[np.ndarray]  # the photo after each step, uint8 thumbnails (images.thumbnail)
    loss: list[float]
    judged_steps: list[int] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)  # model name -> value at judged steps
    kinds: dict[str, str] = field(default_factory=dict)  # model name -> what the value is
    success: bool | None = None  # did the attack reach its goal against the models it attacked


def _face_score(det, pixels: np.ndarray, faces) -> float:
    """The detector's highest score among boxes overlapping the protected faces (0 if none)."""
    from faceshield.metrics import box_iou

    found = det.detect(pixels)
    if not len(found) or not len(faces):
        return 0.0
    overlap = box_iou(found.boxes, faces.boxes).max(axis=1) > 0.3
    return float(found.scores[overlap].max()) if overlap.any() else 0.0


def trace_attack(
    pixels: np.ndarray, method: str = "detector-pgd", eps: float = 8, steps: int = 40, judged: int = 12
) -> Trace:
    """Run `method` for at most `steps` iterations, keeping every iterate; judge `judged` of
    them (evenly spaced, the first and last included) with the lab's models."""
    if method not in lab_methods():
        raise ValueError(f"the lab steps through {lab_methods()}, not {method}")
    # The trace keeps thumbnails (what the page shows); full resolution only for the steps the
    # models judge (an even grid over the most steps asked for, plus the last one).
    iterates, losses, full = [thumbnail(pixels)], [], {0: pixels}
    grid = set(np.linspace(0, steps, min(judged, steps + 1)).round().astype(int).tolist())

    def keep(step, img, loss):
        iterates.append(thumbnail(img))
        losses.append(loss)
        if len(iterates) - 1 in grid:
            full[len(iterates) - 1] = img

    # one budget (no ladder), from the clean photo (no generator start): every step is shown
    protection = build(method, eps=eps, max_eps=eps, steps=steps, extra_steps=0, start="zero")
    result = protection(pixels, on_step=keep)
    iterates[-1] = thumbnail(result.pixels)
    full[len(iterates) - 1] = result.pixels
    trace = Trace(method, eps, iterates, losses, success=result.success)  # no full-size photo kept
    picks = sorted(i for i in full if i < len(iterates))
    trace.judged_steps = [int(i) for i in picks]
    dets, _ = models.available(list(LAB_DETECTORS))
    for det in dets.values():
        trace.kinds[det.name] = "face confidence"
        trace.scores[det.name] = [_face_score(det, full[i], result.faces) for i in picks]
    if REGISTRY[method].hides == "identity" and len(result.faces):
        box = result.faces.boxes[0]
        recs, _ = models.available(list(LAB_RECOGNISERS))
        for rec in recs.values():
            e0 = rec.embed(pixels, box)
            trace.kinds[rec.name] = (
                f"{rec.metric} to the original (match {'<' if rec.metric == 'euclidean' else '>'} {rec.threshold})"
            )
            trace.scores[rec.name] = [rec.score(e0, rec.embed(full[i], box)) for i in picks]
    return trace


def amplified(original: np.ndarray, protected: np.ndarray, factor: float) -> np.ndarray:
    """The perturbation x factor around mid-grey, uint8."""
    diff = protected.astype(np.float32) - original.astype(np.float32)
    return np.clip(128 + diff * factor, 0, 255).astype(np.uint8)


def budget_sweep(
    pixels: np.ndarray, method: str = "detector-pgd", budgets=(2, 4, 8, 12, 16), steps: int = 40
) -> list[dict]:
    """For each L-inf budget: did the attacked models stop seeing the face(s), at what PSNR/SSIM, how long."""
    rows = []
    for eps in budgets:
        t = time.perf_counter()
        result = build(method, eps=eps, max_eps=eps, steps=steps)(pixels)  # each budget alone
        rows.append(
            {
                "eps": eps,
                "success": bool(result.success),
                "steps": result.steps,
                "seconds": time.perf_counter() - t,
                **image_quality(pixels, result.pixels),
            }
        )
    return rows


def plot_trace(trace: Trace, step: int | None = None):
    """Matplotlib figure: the loss per iteration, and each model's score at the judged steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(range(1, len(trace.loss) + 1), trace.loss, color="tab:red")
    ax1.set(title=f"{trace.method} loss (0 = goal met)", xlabel="iteration", ylabel="loss")
    for name, values in trace.scores.items():
        ax2.plot(trace.judged_steps, values, marker="o", label=f"{name}: {trace.kinds[name]}")
    ax2.set(title="what the models see", xlabel="iteration")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        if step is not None:
            ax.axvline(step, color="grey", linestyle="--")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_sweep(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    eps = [r["eps"] for r in rows]
    ax.plot(eps, [r["psnr"] for r in rows], marker="o", label="PSNR dB (visibility)")
    for r in rows:
        ax.annotate(
            "hidden" if r["success"] else "found",
            (r["eps"], r["psnr"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            color="tab:green" if r["success"] else "tab:red",
        )
    ax.set(xlabel="budget (grey levels of 255)", ylabel="PSNR dB", title="budget: protection vs visibility")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
