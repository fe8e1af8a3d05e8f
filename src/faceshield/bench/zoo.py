"""Model-zoo benchmark: the models on clean photos (verification, detection, timings)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceshield import models
from faceshield.bench.data import detection_photos, people_of, read_pairs
from faceshield.bench.report import format_zoo_table, save
from faceshield.evaluation import identity_leakage
from faceshield.images import load_image
from faceshield.metrics import average_precision, match_detections
from faceshield.tensors import to_tensor


def run_zoo_bench(dataset: Path, out_dir: Path = Path("bench_results/zoo"), repeats: int = 3) -> dict:
    """The model zoo on clean photos: each recogniser's verification accuracy at its own
    threshold and ROC AUC on pairs.csv; each detector's recall and AP on the annotated photos;
    every model's forward and forward+backward time on this machine."""
    results = {"dataset": str(dataset), "recognisers": {}, "detectors": {}, "timing": {}}
    pairs = read_pairs(dataset)
    photos = {p: load_image(dataset / p).pixels for a, b, _ in pairs for p in (a, b)}
    boxes = {p: models.largest_face(px) for p, px in tqdm(photos.items(), desc="faces", unit="photo")}
    pairs = [(a, b, same) for a, b, same in pairs if boxes[a] is not None and boxes[b] is not None]
    recs, missing = models.available(models.names(kind="recogniser"))
    for key, rec in recs.items():
        emb = {
            p: rec.embed(px, boxes[p]) for p, px in tqdm(photos.items(), desc=key, unit="photo") if boxes[p] is not None
        }
        results["recognisers"][key] = {
            "name": rec.name,
            "threshold": rec.threshold,
            "metric": rec.metric,
            **identity_leakage(rec, emb, pairs, people_of(emb)),
        }
    dets, det_missing = models.available(models.names(kind="detector"))
    annotated = [(p, t) for p, t in detection_photos(dataset, None) if t is not None]
    for key, det in dets.items():
        per_image, hits, n = [], 0, 0
        for path, truth in tqdm(annotated, desc=key, unit="photo"):
            found = det.detect(load_image(path).pixels)
            scores, tp, h = match_detections(found.boxes, found.scores, truth)
            per_image.append((scores, tp))
            hits, n = hits + h, n + len(truth)
        results["detectors"][key] = {
            "name": det.name,
            "faces": n,
            "recall": hits / n,
            "ap": average_precision(per_image, n),
        }
    results["timing"] = _zoo_timing({**recs, **dets}, repeats)
    results["unavailable"] = {**missing, **det_missing}
    return save(results, format_zoo_table(results), out_dir)


def _zoo_timing(loaded: dict, repeats: int) -> dict:
    """Median seconds of forward and (white-box models) forward+backward on a shipped photo."""
    import torch

    from faceshield.examples import example_photos

    pixels = load_image(example_photos()["zidane"]).pixels  # 1280 x 720, two faces
    box = models.largest_face(pixels)
    x0 = to_tensor(pixels, unit=True)
    region = torch.ones(pixels.shape[:2])

    def median(fn) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    timing = {}
    for key, model in loaded.items():
        is_det = models.REGISTRY[key].kind == "detector"
        row = {"forward": median((lambda: model.detect(pixels)) if is_det else (lambda: model.embed(pixels, box)))}
        if model.differentiable:

            def backward():
                x = x0.clone().requires_grad_(True)
                if is_det:
                    loss = model.face_loss(x, region)
                else:
                    loss = model.embed_tensor(x, model.landmarks(pixels, box)).sum()
                loss.backward()

            row["forward_backward"] = median(backward)
        timing[key] = row
    return timing
