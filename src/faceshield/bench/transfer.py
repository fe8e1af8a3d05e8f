"""Detector transfer benchmark: a method and its same-budget control, judged by every detector."""

from __future__ import annotations

from pathlib import Path

from faceshield import models
from faceshield.bench.data import detection_photos, portrait_photos
from faceshield.bench.method import build_method, label
from faceshield.bench.report import format_transfer_table, save
from faceshield.bench.runner import Job, protect_each, summarise
from faceshield.evaluation import DEFAULT_DETECTORS
from faceshield.images import load_image
from faceshield.metrics import match_detections


def run_transfer_bench(
    dataset: Path,
    method: str | list[str] = "detector-pgd",
    options: dict | None = None,
    out_dir: Path = Path("bench_results/transfer"),
    limit: int | None = None,
    control: str = "noise",
) -> dict:
    """Detector transfer: each method (one, or several side by side, e.g. the per-image
    attack, the generator and the attack started from the generator) and the same-budget
    `control` on the annotated detection photos (recall at IoU 0.5 against boxes.json) and on
    the portraits (share of portraits on which each detector still finds the face it found on
    the clean photo), judged by every detector of the zoo that loads here, each marked
    white-box (attacked) or black-box. The control runs on each photo at the budget the first
    method ended at there (a budget ladder may climb above eps). Per photo it keeps the
    budget, and for portraits whether every detector that method attacks lost the face."""
    from faceshield.metrics import box_iou

    methods = [method] if isinstance(method, str) else list(method)

    options = dict(options or {})  # each method at its own default budget unless eps is given
    keys = DEFAULT_DETECTORS
    judges, _ = models.available(list(keys))
    annotated = [(p, t) for p, t in detection_photos(dataset, limit) if t is not None]
    portraits = portrait_photos(dataset, limit)
    results = {
        "dataset": str(dataset),
        "eps": options.get("eps", getattr(build_method(methods[0], options)[0], "eps", 8.0)),
        "annotated": [p.name for p, _ in annotated],
        "portraits": len(portraits),
        "methods": {},
    }
    truths = {str(p.relative_to(dataset)): t for p, t in annotated} | {
        str(p.relative_to(dataset)): None for p in portraits
    }
    took: dict[str, float] = {}  # photo -> the first method's budget there (the control's too)
    first_attacked = None
    for name in (*methods, control):
        protection, attacked = build_method(name, options)
        first_attacked = attacked if first_attacked is None else first_attacked
        attacked_by_method = first_attacked if name == control else attacked
        at_budget: dict[float, object] = {}
        det = {k: {"hit_before": 0, "hit_after": 0, "faces": 0, "portraits": 0, "kept": 0} for k in judges}
        rows = []
        jobs = (Job(photo, load_image(dataset / photo).pixels) for photo in truths)

        def at_its_budget(job: Job, name: str = name, protection=protection):
            """A method as asked; the control at the budget the first method ended at on this photo."""
            if name != control:
                return protection
            eps = took.get(job.name, float(results["eps"]))
            if eps not in at_budget:
                at_budget[eps] = build_method(name, {**options, "eps": eps})[0]
            return at_budget[eps]

        for done in protect_each(at_its_budget, jobs, f"transfer {name}"):
            photo, pixels, result, truth = done.job.name, done.job.pixels, done.result, truths[done.job.name]
            if result.budget is not None and name == methods[0]:
                took[photo] = result.budget.eps
            row = {**done.row, "portrait": truth is None}
            rows.append(row)
            for key, judge in judges.items():
                before, after = judge.detect(pixels), judge.detect(result.pixels)
                d = det[key]
                if truth is not None:
                    d["faces"] += len(truth)
                    d["hit_before"] += match_detections(before.boxes, before.scores, truth)[2]
                    d["hit_after"] += match_detections(after.boxes, after.scores, truth)[2]
                elif len(before):
                    kept = bool(len(after) and (box_iou(before.boxes, after.boxes) >= 0.3).any())
                    d["portraits"] += 1
                    d["kept"] += kept
                    if key in attacked_by_method:  # hidden from every attacked detector: none keeps it
                        row["hidden_from_attacked"] = row.get("hidden_from_attacked", True) and not kept
        results["methods"][label(name, options)] = {
            "attacked": list(attacked),
            **summarise(rows),
            "detectors": {
                k: {
                    "white_box": models.white_box(k, attacked),
                    "recall_before": d["hit_before"] / max(d["faces"], 1),
                    "recall_after": d["hit_after"] / max(d["faces"], 1),
                    "portraits_found": d["portraits"],
                    "portraits_kept": d["kept"] / max(d["portraits"], 1),
                }
                for k, d in det.items()
            },
            "photos": rows,
        }
    return save(results, format_transfer_table(results), out_dir)
