"""Benchmark: protect every photo of a dataset with each method and judge it with every model.

Dataset layout (as shared/data/faces): detection/*.jpg with detection/boxes.json ground truth
for some of them. Photos with ground truth are scored against it (recall at IoU 0.5, AP); the
others against what each detector found on the clean photo. Prints a markdown table and
writes results.md and results.json to the output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceshield import models
from faceshield.evaluation import DEFAULT_DETECTORS, DEFAULT_RECOGNISERS, evaluate, identity_leakage
from faceshield.images import load_image, pil_open
from faceshield.metrics import average_precision, image_quality, match_detections
from faceshield.models import Detections
from faceshield.protections import METHODS, build, method_key
from faceshield.protections.obfuscation import face_region
from faceshield.tensors import to_tensor


def _photos(dataset: Path, limit: int | None) -> list[tuple[Path, np.ndarray | None]]:
    det_dir = dataset / "detection"
    truth = json.loads((det_dir / "boxes.json").read_text()) if (det_dir / "boxes.json").exists() else {}
    # Annotated photos first: they carry the headline numbers.
    names = sorted(truth) + sorted(p.name for p in det_dir.glob("*.jpg") if p.name not in truth)
    photos = [(det_dir / n, np.asarray(truth[n], np.float32) if n in truth else None) for n in names]
    return photos[:limit] if limit else photos


def _label(method: str, options: dict) -> str:
    """The method's row name: its spec, plus each option it declares whose value differs from
    its default, as the declaration's `tag` reads ("tip-im [attacks facenet+sface, margin 0.5]")."""
    cls = METHODS[method_key(method)]
    shown = {p.name: p.describe_value(v) for p in cls.params if (v := options.get(p.name)) is not None}
    extra = []
    for p in cls.params:
        value = options.get(p.name)
        if value is None or p.tag == "" or _same(value, p.default):
            continue
        tag = p.tag if p.tag is not None else f"{p.name} {{value}}"
        extra.append(tag.format(**{**shown, "value": p.describe_value(value)}))
    return f"{method} [{', '.join(extra)}]" if extra else method


def _same(value, default) -> bool:
    if isinstance(value, list | tuple) and isinstance(default, list | tuple):
        return tuple(value) == tuple(default)
    return value == default


def _build(method: str, options: dict):
    """The protection, and the registry keys it attacks white-box."""
    protection = build(method, **options)
    return protection, protection.attack


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
    photos = [p for p in _photos(dataset, limit) if p[1] is not None or not annotated_only]
    results = {"dataset": str(dataset), "eps": options["eps"], "photos": [p.name for p, _ in photos], "methods": {}}
    for method in methods:
        protection, attacked = _build(method, options)
        per_det = {k: {"before": [], "after": [], "n_truth": 0, "hit_before": 0, "hit_after": 0} for k in detector_keys}
        rows, match_flags = [], []
        for path, truth in tqdm(photos, desc=f"bench {method}", unit="photo"):
            pixels = load_image(path).pixels
            t = time.perf_counter()
            result = protection(pixels)
            seconds = time.perf_counter() - t
            ev = evaluate(pixels, result.pixels, detector_keys, DEFAULT_RECOGNISERS)
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
            rows.append(
                {
                    "photo": path.name,
                    "seconds": seconds,
                    "faces": len(result.faces),
                    "success": result.success,
                    **ev.quality,
                }
            )
        summary = {
            "seconds_per_photo": float(np.mean([r["seconds"] for r in rows])),
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows])),
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
        results["methods"][_label(method, options)] = {"summary": summary, "photos": rows}
    return _report(results, format_table(results), out_dir)


def _report(results: dict, table: str, out_dir: Path) -> dict:
    """Print the table and save it (results.md) with the raw numbers (results.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(table)
    print(table)
    return results


def _degradations(pixels: np.ndarray, box: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What a platform may do to an uploaded photo: {name: (pixels, box in them)}."""
    import io

    import cv2
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=75)
    jpeg = np.asarray(pil_open(buf).convert("RGB"))
    h, w = pixels.shape[:2]
    half = cv2.resize(pixels, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return {"jpeg75": (jpeg, box), "resize0.5": (half, box * np.array([w // 2 / w, h // 2 / h] * 2))}


def _pairs(dataset: Path) -> list[tuple[str, str, bool]]:
    """pairs.csv as (photo a, photo b, same person?), photo paths relative to the dataset."""
    import csv

    with open(dataset / "pairs.csv", newline="") as f:
        return [(r["img_a"], r["img_b"], r["same"].strip() == "1") for r in csv.DictReader(f)]


def _per_person(pairs: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The first k pairs of each person whose protected photo (img_a) no kept pair uses yet."""
    kept, count, used = [], {}, set()
    for a, b in pairs:
        person = Path(a).parent.name
        if count.get(person, 0) < k and a not in used:
            kept.append((a, b))
            count[person] = count.get(person, 0) + 1
            used.add(a)
    return kept


def _people(photos) -> dict[str, str]:
    """{photo: person}: identities/<person>/<n>.jpg."""
    return {p: Path(p).parent.name for p in photos}


def _stretched(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """What an attacker does first to a flat-looking face region: stretch each channel's 1-99th
    percentile to the full range (a faint face hidden in a flat colour shows again)."""
    r0, r1, c0, c1 = face_region(box, pixels.shape)
    out = pixels.copy()
    region = pixels[r0:r1, c0:c1].astype(np.float32)
    if region.size:
        lo, hi = np.percentile(region, [1, 99], axis=(0, 1))
        out[r0:r1, c0:c1] = np.clip((region - lo) / np.maximum(hi - lo, 1) * 255, 0, 255).round().astype(np.uint8)
    return out


def _face_only(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face region alone on mid-grey: hair, clothes and background (which an obfuscation of
    the face leaves, and which let photos of one shoot find each other) are gone."""
    r0, r1, c0, c1 = face_region(box, pixels.shape)
    out = np.full_like(pixels, 128)
    out[r0:r1, c0:c1] = pixels[r0:r1, c0:c1]
    return out


ATTACKER_VIEWS = {"published": lambda px, box: px, "face_only": _face_only, "stretched": _stretched}


def run_identity_bench(
    dataset: Path,
    methods: list[str],
    options: dict | None = None,
    out_dir: Path = Path("bench_results/identity"),
    limit: int | None = None,
    adaptive: bool = False,
    per_person: int | None = None,
) -> dict:
    """Protection success rate on same-person pairs (pairs.csv): protect img_a, compare its
    face with the clean img_b's at each recogniser's own threshold; also after JPEG q75 and a
    0.5x resize of the protected photo; and, for targeted protection, how often the
    protected face matches the target identity it was steered to.

    adaptive: also protect every photo of pairs.csv and judge the attacker who knows the
    protection (evaluation.identity_leakage on protected-vs-protected pairs and rank-1).
    per_person: at most this many pairs per person, each with its own protected photo (in
    pairs.csv order): a quick run that still sees every person."""
    options = {"eps": 8, **(options or {})}
    every_pair = _pairs(dataset)
    pairs = [(a, b) for a, b, same in every_pair if same]
    if per_person:
        pairs = _per_person(pairs, per_person)
    pairs = pairs[:limit] if limit else pairs
    wanted = {p for pair in pairs for p in pair}
    if adaptive:  # with --limit / per_person: the pairs among the photos of the chosen pairs
        every_pair = [(a, b, same) for a, b, same in every_pair if not (limit or per_person) or {a, b} <= wanted]
        wanted |= {p for a, b, _ in every_pair for p in (a, b)}
    recs, _ = models.available(DEFAULT_RECOGNISERS)
    photos = {p: load_image(dataset / p).pixels for p in sorted(wanted)}
    boxes = {p: models.largest_face(px) for p, px in photos.items()}
    pairs = [(a, b) for a, b in pairs if boxes[a] is not None and boxes[b] is not None]
    clean_emb = {(k, p): r.embed(photos[p], boxes[p]) for k, r in recs.items() for p in photos if boxes[p] is not None}
    results = {
        "dataset": str(dataset),
        "eps": options["eps"],
        "norm": options.get("norm") or "linf",
        "pairs": len(pairs),
        "methods": {},
    }
    to_protect = sorted({a for a, _ in pairs} | ({p for p in photos if boxes[p] is not None} if adaptive else set()))
    if adaptive:
        faces = [p for p in photos if boxes[p] is not None]
        results["leakage_clean"] = {
            k: {
                view: identity_leakage(
                    r, {p: r.embed(see(photos[p], boxes[p]), boxes[p]) for p in faces}, every_pair, _people(faces)
                )
                for view, see in ATTACKER_VIEWS.items()
            }
            for k, r in recs.items()
        }
    for method in methods:
        protection, attacked = _build(method, options)
        protected, rows, used = {}, [], {}
        for a in tqdm(to_protect, desc=f"identity {method}", unit="photo"):
            t = time.perf_counter()
            result = protection(photos[a], faces=Detections(boxes[a][None], np.ones(1, np.float32)))
            protected[a] = result.pixels
            used[a] = (result.info.get("targets_used") or [[]])[0]
            rows.append(
                {
                    "photo": a,
                    "seconds": time.perf_counter() - t,
                    "success": result.success,
                    **image_quality(photos[a], result.pixels),
                }
            )
        degraded = {a: _degradations(protected[a], boxes[a]) for a in {a for a, _ in pairs}}  # PSR's photos only
        recovery = _recovery(protection, photos, protected, boxes) if protection.reversible else None
        target_emb = _target_embeddings(recs) if any(used.values()) else {}
        per_rec = {}
        for k, r in recs.items():

            def psr(view) -> float:
                return 1.0 - float(np.mean([r.is_match(r.score(r.embed(*view(a)), clean_emb[k, b])) for a, b in pairs]))

            row = {
                "match_clean": float(
                    np.mean([r.is_match(r.score(clean_emb[k, a], clean_emb[k, b])) for a, b in pairs])
                ),
                "psr": psr(lambda a: (protected[a], boxes[a])),
                "psr_jpeg75": psr(lambda a: degraded[a]["jpeg75"]),
                "psr_resize0.5": psr(lambda a: degraded[a]["resize0.5"]),
                "white_box": models.white_box(k, attacked),
            }
            row["match_protected"] = 1.0 - row["psr"]
            if target_emb:  # share of protected faces that match one of their chosen targets
                row["target_match"] = float(
                    np.mean(
                        [
                            any(r.is_match(r.score(r.embed(protected[a], boxes[a]), target_emb[k][t])) for t in used[a])
                            for a in protected
                        ]
                    )
                )
            if adaptive:  # the attacker sees every photo protected, as published and in two views of his own
                row["leakage"] = {
                    view: identity_leakage(
                        r,
                        {a: r.embed(see(protected[a], boxes[a]), boxes[a]) for a in protected},
                        every_pair,
                        _people(protected),
                    )
                    for view, see in ATTACKER_VIEWS.items()
                }
            per_rec[k] = row
        results["methods"][_label(method, options)] = {
            "recognisers": per_rec,
            "photos": rows,
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows])),
            "seconds_per_photo": float(np.mean([r["seconds"] for r in rows])),
            "recovery": recovery,
        }
    return _report(results, format_identity_table(results), out_dir)


def _recovery(protection, photos, protected, boxes) -> dict:
    """For reversible obfuscations (DDM): how well the authorised decryption recovers the
    face region (PSNR/SSIM of decrypted vs original region), and whether recognisers match it."""
    rows, rec = [], models.load("dlib-resnet")
    for a, pixels in protected.items():
        r0, r1, c0, c1 = face_region(boxes[a], pixels.shape)
        restored = pixels.copy()
        restored[r0:r1, c0:c1] = protection.decrypt(np.ascontiguousarray(pixels[r0:r1, c0:c1]))
        q = image_quality(photos[a][r0:r1, c0:c1], restored[r0:r1, c0:c1])
        match = rec.is_match(rec.score(rec.embed(photos[a], boxes[a]), rec.embed(restored, boxes[a])))
        rows.append({"psnr": q["psnr"], "ssim": q["ssim"], "dlib_match": match})
    return {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "dlib_match_rate": float(np.mean([r["dlib_match"] for r in rows])),
    }


def _target_embeddings(recs: dict) -> dict[str, list[np.ndarray]]:
    """{recogniser key: [embedding of each built-in target identity]} (None when no face)."""
    from faceshield.protections.tip_im import builtin_target_photos

    targets = builtin_target_photos()
    faces = [models.largest_face(t) for t in targets]
    return {
        k: [r.embed(t, box) if box is not None else None for t, box in zip(targets, faces)] for k, r in recs.items()
    }


def _budget(results: dict) -> str:
    if results.get("norm") == "l2":
        return f"L2 budget: RMS {results['eps']:g} grey levels over the face regions"
    return f"L-inf budget {results['eps']:g}/255"


def format_identity_table(results: dict) -> str:
    lines = [
        f"{results['pairs']} same-person pairs; protected img_a vs clean img_b; "
        f"{_budget(results)} for the adversarial methods; PSR = protection success rate "
        "(pairs no longer matched); after JPEG q75 / a 0.5x resize of the protected photo",
        "",
        "| method | recogniser | match clean | PSR | PSR JPEG75 | PSR 0.5x | target match | PSNR dB | SSIM | s/photo |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, res in results["methods"].items():
        for key, r in res["recognisers"].items():
            tag = " (white-box)" if r["white_box"] else ""
            target = f"{r['target_match']:.1%}" if "target_match" in r else "-"
            lines.append(
                f"| {method} | {key}{tag} | {r['match_clean']:.1%} | {r['psr']:.1%} | {r['psr_jpeg75']:.1%} "
                f"| {r['psr_resize0.5']:.1%} | {target} | {res['psnr']:.1f} | {res['ssim']:.3f} "
                f"| {res['seconds_per_photo']:.1f} |"
            )
    if "leakage_clean" in results:
        lines += _leakage_table(results)
    for method, res in results["methods"].items():
        if res.get("recovery"):
            r = res["recovery"]
            lines.append(
                f"\n{method}: authorised decryption of the face region: PSNR {r['psnr']:.1f} dB, "
                f"SSIM {r['ssim']:.3f}; dlib still matches the decrypted face to the original on "
                f"{r['dlib_match_rate']:.0%} of photos"
            )
    return "\n".join(lines) + "\n"


def _leakage_table(results: dict) -> list[str]:
    """The attacker who knows the protection: both photos of every pair protected the same way."""
    some = next(iter(results["leakage_clean"].values()))["published"]
    lines = [
        "",
        f"Attacker who knows the protection (McPherson et al. 2016): every photo protected the same "
        f"way, {some['pairs']} same/different pairs compared protected-vs-protected; ROC AUC 0.5 and rank-1 at "
        f"chance ({some['rank1_chance']:.1%}) mean no identity is left; 'trained': leave-one-out accuracy of a "
        "logistic regression fitted on the other protected photos' embeddings. Views: as published; "
        "'face only': everything outside the face regions greyed (no hair, clothes or background to go by); "
        "'stretched': each face region's contrast stretched first. In brackets: 95% interval of the face-only "
        "AUC from resampling people; methods whose intervals overlap are not told apart by this data",
        "",
        "| method | recogniser | AUC | rank-1 | trained | AUC, face only | rank-1, face only | trained, face only "
        "| AUC, stretched | rank-1, stretched |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("clean", results["leakage_clean"])]
    rows += [(m, {k: r["leakage"] for k, r in res["recognisers"].items()}) for m, res in results["methods"].items()]

    def show(v, fmt):  # nan when a limited run has no different-person pairs
        return "-" if np.isnan(v) else format(v, fmt)

    for method, per_rec in rows:
        for key, views in per_rec.items():
            columns = [(v, m) for v in ("published", "face_only") for m in ("auc", "rank1", "trained")]
            columns += [("stretched", "auc"), ("stretched", "rank1")]
            cells = [show(views[v][m], ".3f" if m == "auc" else ".1%") for v, m in columns]
            face = views["face_only"]
            if "auc_low" in face:  # results.json files written before the interval existed lack it
                cells[3] += f" ({show(face['auc_low'], '.2f')}-{show(face['auc_high'], '.2f')})"
            lines.append(f"| {method} | {key} | " + " | ".join(cells) + " |")
    # a port and its original are one network: count it once in the average
    distinct = [
        k
        for k in results["leakage_clean"]
        if not any(models.REGISTRY[o].twin == k for o in results["leakage_clean"] if o != k)
    ]
    lines += [
        "",
        f"Mean over the distinct networks ({', '.join(distinct)}):",
        "",
        "| method | PSNR dB | AUC | AUC, face only | AUC, stretched |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, per_rec in rows:
        means = [np.mean([per_rec[k][v]["auc"] for k in distinct]) for v in ATTACKER_VIEWS]
        psnr = f"{results['methods'][method]['psnr']:.1f}" if method in results["methods"] else "-"
        lines.append(f"| {method} | {psnr} | " + " | ".join(show(m, ".2f") for m in means) + " |")
    return lines


def format_table(results: dict) -> str:
    lines = [
        f"{len(results['photos'])} photos; L-inf budget {results['eps']:g}/255 for the adversarial methods",
        "",
        "| method | detector | faces | recall before | recall after | AP before | AP after | PSNR dB | SSIM "
        "| s/photo |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, res in results["methods"].items():
        s = res["summary"]
        for key, d in s["detectors"].items():
            attacked = " (white-box)" if d.get("white_box") else ""
            lines.append(
                f"| {method} | {key}{attacked} | {d['faces']} | {d['recall_before']:.1%} | {d['recall_after']:.1%} "
                f"| {d['ap_before']:.3f} | {d['ap_after']:.3f} | {s['psnr']:.1f} | {s['ssim']:.3f} "
                f"| {s['seconds_per_photo']:.1f} |"
            )
    lines.append("")
    for method, res in results["methods"].items():
        s = res["summary"]
        slowest = max(res["photos"], key=lambda r: r["seconds"])
        judged = [r for r in res["photos"] if r["success"] is not None]
        fooled = (
            f"white-box detectors fooled on {sum(bool(r['success']) for r in judged)}/{len(judged)} photos; "
            if judged
            else ""
        )
        lines.append(
            f"{method}: recogniser match rate (protected face vs its original, at each recogniser's "
            f"threshold): {s['recogniser_match_rate']:.1%}; max L-inf {s['linf']} grey levels; "
            f"{fooled}slowest photo "
            f"{slowest['seconds']:.1f} s ({slowest['photo']}, {slowest['faces']} faces)"
        )
    return "\n".join(lines) + "\n"


def run_zoo_bench(dataset: Path, out_dir: Path = Path("bench_results/zoo"), repeats: int = 3) -> dict:
    """The model zoo on clean photos: each recogniser's verification accuracy at its own
    threshold and ROC AUC on pairs.csv; each detector's recall and AP on the annotated photos;
    every model's forward and forward+backward time on this machine."""
    results = {"dataset": str(dataset), "recognisers": {}, "detectors": {}, "timing": {}}
    pairs = _pairs(dataset)
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
            **identity_leakage(rec, emb, pairs, _people(emb)),
        }
    dets, det_missing = models.available(models.names(kind="detector"))
    annotated = [(p, t) for p, t in _photos(dataset, None) if t is not None]
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
    return _report(results, format_zoo_table(results), out_dir)


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


def format_zoo_table(results: dict) -> str:
    lines = [
        "| recogniser | metric, threshold | pairs | accuracy | TPR | TNR | ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results["recognisers"].items():
        lines.append(
            f"| {key} | {r['metric']} {r['threshold']} | {r['pairs']} | {r['accuracy']:.1%} | "
            f"{r['tpr']:.1%} | {r['tnr']:.1%} | {r['auc']:.3f} |"
        )
    lines += ["", "| detector | faces | recall | AP |", "|---|---|---|---|"]
    for key, d in results["detectors"].items():
        lines.append(f"| {key} | {d['faces']} | {d['recall']:.1%} | {d['ap']:.3f} |")
    lines += ["", "| model | forward s | forward+backward s |", "|---|---|---|"]
    for key, t in results["timing"].items():
        fb = f"{t['forward_backward']:.2f}" if "forward_backward" in t else "black-box"
        lines.append(f"| {key} | {t['forward']:.2f} | {fb} |")
    for key, reason in results.get("unavailable", {}).items():
        lines.append(f"\n{key}: unavailable ({reason})")
    return "\n".join(lines) + "\n"


def _portraits(dataset: Path, limit: int | None) -> list[Path]:
    """identities/<person>/<n>.jpg, one large face each: all of them, or `limit` spread evenly
    over the sorted list (so a quick run still sees every person, not the first few)."""
    found = sorted((dataset / "identities").glob("*/*.jpg"))
    if not limit or limit >= len(found):
        return found
    return [found[int(i)] for i in np.linspace(0, len(found) - 1, limit).round()]


def run_transfer_bench(
    dataset: Path,
    method: str = "detector-pgd",
    options: dict | None = None,
    out_dir: Path = Path("bench_results/transfer"),
    limit: int | None = None,
    control: str = "noise",
) -> dict:
    """Detector transfer: `method` and the same-budget `control` on the annotated detection
    photos (recall at IoU 0.5 against boxes.json) and on the portraits (share of portraits on
    which each detector still finds the face it found on the clean photo), judged by every
    detector of the zoo that loads here, each marked white-box (attacked) or black-box."""
    from faceshield.metrics import box_iou

    options = {"eps": 8, **(options or {})}
    keys = DEFAULT_DETECTORS
    judges, _ = models.available(list(keys))
    annotated = [(p, t) for p, t in _photos(dataset, limit) if t is not None]
    portraits = _portraits(dataset, limit)
    results = {
        "dataset": str(dataset),
        "eps": options["eps"],
        "annotated": [p.name for p, _ in annotated],
        "portraits": len(portraits),
        "methods": {},
    }
    for name in (method, control):
        protection, attacked = _build(name, options)
        det = {k: {"hit_before": 0, "hit_after": 0, "faces": 0, "portraits": 0, "kept": 0} for k in judges}
        rows = []
        for path, truth in tqdm(
            [(p, t) for p, t in annotated] + [(p, None) for p in portraits], desc=f"transfer {name}", unit="photo"
        ):
            pixels = load_image(path).pixels
            t = time.perf_counter()
            result = protection(pixels)
            seconds = time.perf_counter() - t
            q = image_quality(pixels, result.pixels)
            rows.append(
                {
                    "photo": str(path.relative_to(dataset)),
                    "seconds": seconds,
                    "psnr": q["psnr"],
                    "success": result.success,
                    "portrait": truth is None,
                }
            )
            for key, judge in judges.items():
                before, after = judge.detect(pixels), judge.detect(result.pixels)
                d = det[key]
                if truth is not None:
                    d["faces"] += len(truth)
                    d["hit_before"] += match_detections(before.boxes, before.scores, truth)[2]
                    d["hit_after"] += match_detections(after.boxes, after.scores, truth)[2]
                elif len(before):
                    d["portraits"] += 1
                    d["kept"] += bool(len(after) and (box_iou(before.boxes, after.boxes) >= 0.3).any())
        seconds = [r["seconds"] for r in rows]
        psnr = [r["psnr"] for r in rows]
        results["methods"][_label(name, options)] = {
            "attacked": list(attacked),
            "seconds_median": float(np.median(seconds)),
            "seconds_max": float(np.max(seconds)),
            "psnr_median": float(np.median(psnr)),
            "psnr_min": float(np.min(psnr)),
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
    return _report(results, format_transfer_table(results), out_dir)


def format_transfer_table(results: dict) -> str:
    """Black-box detectors first (what a user meets), then the attacked ones; control beside."""
    (method, res), (control, ctl) = list(results["methods"].items())
    lines = [
        f"{len(results['annotated'])} annotated photos (recall at IoU 0.5) and {results['portraits']} portraits "
        f"(share on which the detector still finds the face); L-inf {results['eps']:g}/255",
        "",
        f"| detector | role | recall before | after: {method} | after: {control} | "
        f"portraits found before | still found: {method} | still found: {control} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(res["detectors"], key=lambda k: res["detectors"][k]["white_box"])
    for key in order:
        d, c = res["detectors"][key], ctl["detectors"][key]
        role = "white-box (attacked)" if d["white_box"] else "black-box"
        lines.append(
            f"| {key} | {role} | {d['recall_before']:.1%} | {d['recall_after']:.1%} | {c['recall_after']:.1%} "
            f"| {d['portraits_found']} | {d['portraits_kept']:.1%} | {c['portraits_kept']:.1%} |"
        )
    lines.append("")
    for name, r in results["methods"].items():
        ok = [p["success"] for p in r["photos"] if p["success"] is not None]
        lines.append(
            f"{name}: PSNR median {r['psnr_median']:.1f} dB (lowest {r['psnr_min']:.1f}); "
            f"{r['seconds_median']:.1f} s a photo median, {r['seconds_max']:.1f} s worst"
            + (
                f"; every attacked detector fooled on {sum(map(bool, ok))}/{len(ok)} photos"
                if ok and r["attacked"]
                else ""
            )
        )
    return "\n".join(lines) + "\n"
