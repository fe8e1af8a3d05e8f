"""Detection benchmark: protect every detection photo with each method and judge it with every
detector. Photos with ground truth (boxes.json) are scored against it (recall at IoU 0.5, AP);
the others against what each detector found on the clean photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceshield import models
from faceshield.bench.data import detection_photos
from faceshield.bench.method import build_method, label
from faceshield.bench.report import format_table, save
from faceshield.bench.runner import Job, protect_each, summarise
from faceshield.evaluation import DEFAULT_DETECTORS, DEFAULT_RECOGNISERS, evaluate
from faceshield.images import load_image
from faceshield.metrics import average_precision, match_detections


def run_bench(
    dataset: Path,
    methods: list[str],
    options: dict | None = None,
    out_dir: Path = Path("bench_results"),
    slow: bool = False,
    limit: int | None = None,
    annotated_only: bool = True,
) -> dict:
    """Detection benchmark: each method on the detection photos, judged by every detector."""
    options = {"eps": 8, **(options or {})}
    detector_keys = DEFAULT_DETECTORS + (models.names(kind="detector", slow=True) if slow else [])
    photos = [p for p in detection_photos(dataset, limit) if p[1] is not None or not annotated_only]
    results = {"dataset": str(dataset), "eps": options["eps"], "photos": [p.name for p, _ in photos], "methods": {}}
    for method in methods:
        protection, attacked = build_method(method, options)
        per_det = {k: {"before": [], "after": [], "n_truth": 0, "hit_before": 0, "hit_after": 0} for k in detector_keys}
        rows, match_flags = [], []
        jobs = (Job(path.name, load_image(path).pixels) for path, _ in photos)
        truths = {path.name: truth for path, truth in photos}
        for done in protect_each(protection, jobs, f"bench {method}"):
            truth = truths[done.job.name]
            ev = evaluate(done.job.pixels, done.result.pixels, detector_keys, DEFAULT_RECOGNISERS)
            for view in ev.detectors:
                ref = truth if truth is not None else view.before.boxes  # no labels: clean finds
                d = per_det[view.key]
                d["n_truth"] += len(ref)
                for when, found in (("before", view.before), ("after", view.after)):
                    scores, tp, hits = match_detections(found.boxes, found.scores, ref)
                    d[when].append((scores, tp))
                    d[f"hit_{when}"] += hits
            for rv in ev.recognisers:
                match_flags += [m.match for m in rv.matches]
            rows.append(done.row)
        summary = {
            **summarise(rows),
            "linf": int(max(r["linf"] for r in rows)),
            "recogniser_match_rate": float(np.mean(match_flags)) if match_flags else float("nan"),
            "detectors": {},
        }
        for key, d in per_det.items():
            if d["n_truth"] == 0:
                continue
            summary["detectors"][key] = {
                "faces": d["n_truth"],
                "white_box": models.white_box(key, attacked),
                "recall_before": d["hit_before"] / d["n_truth"],
                "recall_after": d["hit_after"] / d["n_truth"],
                "ap_before": average_precision(d["before"], d["n_truth"]),
                "ap_after": average_precision(d["after"], d["n_truth"]),
            }
        results["methods"][label(method, options)] = {"summary": summary, "photos": rows}
    return save(results, format_table(results), out_dir)
