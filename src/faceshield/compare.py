"""Compare protections on one photo: privacy against visibility, the picture for a class.

compare() runs each chosen protection in turn on the same photo and faces, judges each with
the one evaluation routine (service.protect_and_judge, so every count means what it means on
the Protect page) and returns one row per protection: PSNR, SSIM, the detectors and
recognisers it fooled (attacked and never-attacked apart), its time, and the protected faces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from faceshield import models
from faceshield.boxes import face_region
from faceshield.images import load_image
from faceshield.protections import REGISTRY
from faceshield.protections.cancel import time_up
from faceshield.service import VIEW_MARGIN, ProtectionUnavailable, Tally, Verdict, face_view, protect_and_judge
from faceshield.settings import InputError

# One forward pass or a filter each (a second or two on a CPU); the iterative attacks take
# tens of seconds each (README, docs/benchmarks.md).
FAST_METHODS = ("generator", "blur", "pixelate", "mask", "noise")
COLUMNS = [
    "protection",
    "PSNR dB",
    "SSIM",
    "detectors fooled (white-box · black-box)",
    "recognisers fooled (white-box · black-box)",
    "seconds",
]


@dataclass
class Row:
    method: str
    verdict: Verdict | None = None  # None: it could not run (see error)
    crop: np.ndarray | None = None  # the faces' region after this protection (a thumbnail)
    error: str = ""


@dataclass
class Comparison:
    original_crop: np.ndarray  # the faces' region of the original (a thumbnail)
    rows: list[Row]
    notices: list[str] = field(default_factory=list)

    def table(self) -> list[list]:
        """COLUMNS rows, one per protection; a protection that could not run says why."""
        out = []
        for row in self.rows:
            v = row.verdict
            if v is None:
                out.append([row.method, "-", "-", row.error, "-", "-"])
                continue
            out.append(
                [
                    row.method,
                    "inf" if math.isinf(v.psnr) else round(v.psnr, 1),
                    round(v.ssim, 4),
                    f"{_count(v.detectors_attacked)} · {_count(v.detectors_judges)}",
                    f"{_count(v.recognisers_attacked)} · {_count(v.recognisers_judges)}",
                    round(v.seconds, 2),
                ]
            )
        return out

    def crops(self) -> list[tuple[np.ndarray, str]]:
        """(picture, caption): the original's faces, then each protection's."""
        return [(self.original_crop, "original")] + [(r.crop, r.method) for r in self.rows if r.crop is not None]

    def plot(self):
        """Matplotlib figure: x PSNR, y share of models fooled, a point per protection; the
        attacked (white-box) and never-attacked (black-box) models as two series."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4))
        done = [r for r in self.rows if r.verdict is not None]
        top = max([r.verdict.psnr for r in done if not math.isinf(r.verdict.psnr)] + [40.0]) + 5
        for label, part, marker, colour in (
            ("attacked (white-box)", "attacked", "s", "tab:red"),
            ("never attacked (black-box)", "judges", "o", "tab:blue"),
        ):
            points = [
                (min(r.verdict.psnr, top), getattr(r.verdict, part).share, r.method)
                for r in done
                if getattr(r.verdict, part).total
            ]
            if not points:
                continue
            xs, ys, names = zip(*points)
            ax.scatter(xs, ys, marker=marker, color=colour, s=60, label=label, alpha=0.8)
            for x, y, name in points:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set(
            xlabel="PSNR dB (higher: less visible)",
            ylabel="share of models fooled",
            ylim=(-0.05, 1.1),
            title="privacy against visibility",
        )
        ax.grid(alpha=0.3)
        if done:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        return fig


def _count(t: Tally) -> str:
    return f"{t.fooled}/{t.total}" if t.total else "-"


def compare(
    source,
    methods: list[str] | tuple[str, ...] = FAST_METHODS,
    eps: float = 8,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> Comparison:
    """Protect the photo `source` (path/bytes/array) with each of `methods` (keys of
    protections.REGISTRY, default settings and budget `eps`) in turn and judge each result.

    The faces are found once and given to every protection, and the detectors' view of the
    original is computed once. on_progress(i, n, method) is called before each protection.
    A protection that cannot run here (weights, too many faces) gets a row saying why; the
    request's time limit (protections.base.stop_when) ends the run early with a notice."""
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown or not methods:
        raise InputError(f"Choose protections among: {', '.join(REGISTRY)}.")
    loaded = load_image(source)
    pixels = loaded.pixels
    faces = models.find_faces(pixels)
    region = face_region(faces.boxes, pixels.shape, VIEW_MARGIN)
    comparison = Comparison(face_view(pixels, region), [], list(loaded.notices))
    if not len(faces):
        comparison.notices.append("No face found: every protection leaves this photo unchanged.")
    before = None
    for i, method in enumerate(methods):
        if on_progress is not None:
            on_progress(i, len(methods), method)
        late = time_up()  # Cancelled when the request was cancelled
        if late:
            comparison.notices.append(f"Stopped after {i} protections: {late}. Not run: {', '.join(methods[i:])}.")
            break
        try:
            judged = protect_and_judge(pixels, method, faces=faces, before=before, eps=eps)
        except ProtectionUnavailable:
            comparison.rows.append(Row(method, error="not available here (trained weights missing)"))
            continue
        except InputError as exc:
            comparison.rows.append(Row(method, error=str(exc)))
            continue
        before = {v.key: v.before for v in judged.evaluation.detectors}
        comparison.notices += [f"{method}: {n}" for n in judged.result.notices if not n.startswith("No face found")]
        comparison.rows.append(Row(method, judged.verdict, face_view(judged.result.pixels, region)))
    if on_progress is not None:
        on_progress(len(methods), len(methods), "done")
    return comparison
