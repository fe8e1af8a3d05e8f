"""The runners' one skeleton: each bench (detection, identity, transfer) protects photos with each
method through protect_each(), which times the protection and measures the change the same way
for all of them, and sums its rows up with summarise(); what a runner adds is its judges.

    for done in protect_each(protection, jobs, "identity tip-im", perceptual=True):
        rows.append(done.row)  # photo, seconds, success, faces, psnr, ssim, linf (, haarpsi)
    results["methods"][name] = {**summarise(rows), ...the runner's judges...}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from faceshield.metrics import image_quality
from faceshield.models import Detections
from faceshield.protections import Protection, ProtectionResult


@dataclass(frozen=True)
class Job:
    """One photo to protect: its name in the dataset (the row's "photo"), its pixels, the faces
    to protect when the bench gives them (None: the protection finds them), and options set on
    the protection for this photo only (e.g. same_person: the person's other photos)."""

    name: str
    pixels: np.ndarray
    faces: Detections | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """A protected job: the result and its row (what every bench records of a photo)."""

    job: Job
    result: ProtectionResult
    row: dict[str, Any]


def protect_each(
    protection: Protection | Callable[[Job], Protection],
    jobs: Iterable[Job],
    desc: str,
    perceptual: bool = False,
) -> Iterator[Done]:
    """Protect each job in turn (a progress bar named `desc`) and yield it with its row: photo,
    seconds (the protection alone), success, faces protected, budget used (None without one),
    and image_quality's psnr, ssim, linf (and haarpsi with `perceptual`). `protection` may be a
    function of the job (a protection per budget, as the transfer bench's control takes)."""
    for job in tqdm(list(jobs), desc=desc, unit="photo"):
        chosen = protection(job) if not isinstance(protection, Protection) else protection
        for name, value in job.options.items():
            setattr(chosen, name, value)
        start = time.perf_counter()
        result = chosen(job.pixels, faces=job.faces)
        seconds = time.perf_counter() - start
        row = {
            "photo": job.name,
            "seconds": seconds,
            "success": result.success,
            "faces": len(result.faces),
            "budget": result.budget.eps if result.budget is not None else None,
            "side": int(max(job.pixels.shape[:2])),
            **image_quality(job.pixels, result.pixels, perceptual=perceptual),
        }
        yield Done(job, result, row)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The timing and image-quality figures of a method's rows, the same names in every bench:
    seconds_per_photo (mean), seconds_median, seconds_worst; psnr (mean), psnr_median,
    psnr_lowest; ssim (mean) and haarpsi (mean, when measured)."""
    seconds = [float(r["seconds"]) for r in rows]
    psnr = [float(r["psnr"]) for r in rows]
    out = {
        "seconds_per_photo": float(np.mean(seconds)),
        "seconds_median": float(np.median(seconds)),
        "seconds_worst": float(np.max(seconds)),
        "psnr": float(np.mean(psnr)),
        "psnr_median": float(np.median(psnr)),
        "psnr_lowest": float(np.min(psnr)),
        "ssim": float(np.mean([float(r["ssim"]) for r in rows])),
    }
    if all("haarpsi" in r for r in rows):
        out["haarpsi"] = float(np.mean([float(r["haarpsi"]) for r in rows]))
    return out
