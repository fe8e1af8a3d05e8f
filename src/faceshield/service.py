"""Protect one photo and prepare everything the web page shows. The UI only lays this out."""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceshield import models
from faceshield.evaluation import DEFAULT_DETECTORS, Evaluation, evaluate
from faceshield.images import load_image, save_png
from faceshield.protections import build
from faceshield.visualize import amplified_perturbation, draw_detections

# Under the system temp dir, where Gradio may serve files from.
OUTPUT_DIR = Path(tempfile.gettempdir()) / "faceshield-outputs"
OUTPUT_MAX_AGE_S = 3600


@dataclass
class PageResult:
    original: np.ndarray
    protected: np.ndarray
    perturbation: np.ndarray
    detections: list[tuple[np.ndarray, str]]  # (picture, caption) pairs, before/after per detector
    detector_rows: list[list]
    recogniser_rows: list[list]
    summary: str  # markdown
    png_path: Path
    evaluation: Evaluation
    notices: list[str] = field(default_factory=list)


DETECTOR_COLUMNS = ["detector", "faces before", "faces after", "hidden", "scores before", "scores after", "how it runs"]
RECOGNISER_COLUMNS = ["recogniser", "face", "original vs protected", "same person?", "threshold",
                      "reference vs original", "reference vs protected", "reference still matches?"]


def protect_photo(source, method: str = "detector-pgd", eps: float = 8, steps: int | None = None,
                  whole_image: bool = False, slow_judges: bool = False, reference=None,
                  strength: float | None = None, mode: str | None = None, robust: bool = False,
                  targets: list | None = None, norm: str | None = None) -> PageResult:
    """Load `source` (path/bytes/array), protect it, judge it, and save the download PNG.
    `targets`: photos (paths/arrays) of target identities for targeted identity masks.
    Raises faceshield.images.ImageError for unusable input."""
    loaded = load_image(source)
    ref_pixels = load_image(reference).pixels if reference is not None else None
    target_pixels = [load_image(t).pixels for t in targets] if targets else None
    protection = build(method, eps=eps, steps=int(steps) if steps else None, whole_image=whole_image,
                       strength=strength, mode=mode, robust=robust or None, targets=target_pixels, norm=norm)
    result = protection(loaded.pixels)
    detector_keys = DEFAULT_DETECTORS + (models.names(kind="detector", slow=True) if slow_judges else [])
    # Identities are compared on the faces the protection worked on (when it found any): the
    # union of every detector's finds would add their false positives as "faces".
    ev = evaluate(loaded.pixels, result.pixels, detector_keys, reference=ref_pixels,
                  faces=result.faces if len(result.faces) else None)

    gallery = []
    for v in ev.detectors:
        gallery.append((draw_detections(loaded.pixels, v.before, (0, 220, 0), f"{v.name} before"), f"{v.name}: original"))
        gallery.append((draw_detections(result.pixels, v.after, (255, 60, 60), f"{v.name} after"), f"{v.name}: protected"))
    det_rows = [[v.name, len(v.before), len(v.after), f"{v.hidden}/{len(v.before)}",
                 _scores(v.before.scores), _scores(v.after.scores), v.note] for v in ev.detectors]
    for key in detector_keys:
        if key in ev.unavailable:
            det_rows.append([key, "-", "-", "-", "-", "-", f"unavailable: {ev.unavailable[key]}"])
    if not slow_judges:
        for key in models.names(kind="detector", slow=True):
            det_rows.append([key, "-", "-", "-", "-", "-", "slow judge: tick 'Also run slow detectors'"])
    rec_rows = []
    for rv in ev.recognisers:
        op = "<" if rv.metric == "euclidean" else ">"
        for m in rv.matches:
            rec_rows.append([rv.name, m.face + 1, round(m.score, 3), "yes" if m.match else "no", f"{op} {rv.threshold}",
                             _opt(m.reference_score), _opt(m.reference_protected_score),
                             "-" if m.reference_match is None else ("yes" if m.reference_match else "no")])
        if not rv.matches:
            rec_rows.append([rv.name, "-", "-", "no face to compare", f"{op} {rv.threshold}", "-", "-", "-"])
    for key in models.names(kind="recogniser"):
        if key in ev.unavailable:
            rec_rows.append([key, "-", "-", f"unavailable: {ev.unavailable[key]}", "-", "-", "-", "-"])

    png_path = _save_download(result.pixels)
    q = ev.quality
    notices = loaded.notices + result.notices
    status = result.info.get("success")
    summary = "\n".join([
        f"**{len(result.faces)} face(s) protected** with `{method}`"
        + (f" at L-inf {eps:g}/255" if hasattr(protection, "eps")
           else f" at strength {protection.strength:g}" if getattr(protection, "strength_label", "") else "")
        + f" in **{result.seconds:.1f} s**"
        + (f" ({result.info.get('steps')} steps against {', '.join(result.info.get('attacked', []))}: "
           f"{'goal reached' if status else 'goal NOT reached'} on the 8-bit image)." if 'steps' in result.info else "."),
    ] + ([f"Targeted: each face was steered towards target identity "
          f"{', '.join('#' + str(t + 1) for t in sorted({t for face in result.info['targets_used'] for t in face}))} "
          "of the target photos."] if result.info.get("targets_used") else []) + [
        f"Image quality: PSNR **{q['psnr']:.1f} dB**, SSIM **{q['ssim']:.4f}**, max change **{q['linf']}** grey levels. "
        f"Judged on the downloadable 8-bit PNG in {ev.seconds:.1f} s.",
    ] + [f"- {n}" for n in notices])
    if method == "apf" and len(result.faces):
        summary += "\n\n" + apf_parts_table(loaded.pixels, result, eps)
    return PageResult(loaded.pixels, result.pixels, amplified_perturbation(loaded.pixels, result.pixels),
                      gallery, det_rows, rec_rows, summary, png_path, ev, notices)


def apf_parts_table(pixels: np.ndarray, full, eps: float) -> str:
    """APF's three parts, each alone and together: where it runs, what it costs, and how far
    it moves the first face's identity for each recogniser (markdown)."""
    from faceshield.protections.apf import PARTS

    box = full.faces.boxes[0]
    recs, _ = models.available(["dlib-resnet", "facenet", "sface-onnx"])
    clean = {k: r.embed(pixels, box) for k, r in recs.items()}
    where = {"gradient": "device (probe SFace)", "transfer": "device probe + server network",
             "uap": "device or server (a fixed pattern)"}
    header = "| APF part | runs on | " + " | ".join(f"{r.name} ({r.metric}, match {'<' if r.metric == 'euclidean' else '>'} "
                                                   f"{r.threshold})" for r in recs.values()) + " | s |"
    lines = ["**What each APF part adds** (first face; the server receives only a gradient, never the photo)", "",
             header, "|" + "---|" * (len(recs) + 3)]
    for parts in [(p,) for p in PARTS] + [PARTS]:
        res = full if parts == PARTS else build("apf", eps=eps, parts=parts)(pixels, faces=full.faces)
        scores = [f"{r.score(clean[k], r.embed(res.pixels, box)):.3f}" for k, r in recs.items()]
        name = "all three" if parts == PARTS else parts[0]
        lines.append(f"| {name} | {where.get(name, 'device + server')} | " + " | ".join(scores)
                     + f" | {res.seconds:.1f} |")
    return "\n".join(lines)


def _scores(scores: np.ndarray) -> str:
    return ", ".join(f"{s:.2f}" for s in scores[:8]) + (" ..." if len(scores) > 8 else "") or "-"


def _opt(value) -> str | float:
    return "-" if value is None else round(value, 3)


def _save_download(pixels: np.ndarray) -> Path:
    """Save the protected PNG in a fresh per-request folder; drop folders older than an hour."""
    now = time.time()
    if OUTPUT_DIR.exists():
        for old in OUTPUT_DIR.iterdir():
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                for f in old.glob("*"):
                    f.unlink(missing_ok=True)
                old.rmdir()
    return save_png(pixels, OUTPUT_DIR / uuid.uuid4().hex / "protected.png")
