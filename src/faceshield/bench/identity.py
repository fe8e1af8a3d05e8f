"""Identity benchmark: protection success rate on same-person pairs, after degradations, the
targeted match rate, and the attacker who knows the protection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceshield import models
from faceshield.bench.data import pairs_per_person, people_of, read_pairs
from faceshield.bench.method import build_method, label
from faceshield.bench.report import format_identity_table, save
from faceshield.bench.runner import Job, protect_each, summarise
from faceshield.bench.views import ATTACKER_VIEWS, degradations
from faceshield.boxes import face_region
from faceshield.evaluation import DEFAULT_RECOGNISERS, identity_leakage
from faceshield.images import load_image
from faceshield.metrics import image_quality
from faceshield.models import Detections


def run_identity_bench(
    dataset: Path,
    methods: list[str],
    options: dict | None = None,
    out_dir: Path = Path("bench_results/identity"),
    limit: int | None = None,
    adaptive: bool = False,
    per_person: int | None = None,
    same_person: bool = False,
    size: int | None = None,
) -> dict:
    """Protection success rate on same-person pairs (pairs.csv): protect img_a, compare its
    face with the clean img_b's at each recogniser's own threshold; also after JPEG q75 and a
    0.5x resize of the protected photo; and, for targeted protection, how often the
    protected face matches the target identity it was steered to.

    adaptive: also protect every photo of pairs.csv and judge the attacker who knows the
    protection (evaluation.identity_leakage on protected-vs-protected pairs and rank-1).
    per_person: at most this many pairs per person, each with its own protected photo (in
    pairs.csv order): a quick run that still sees every person.
    same_person: protect each img_a knowing the person's other photos (the protection's
    `same_person` option), never the ones it is judged against (its img_b's).
    size: resize every protected photo first so its longer side is `size` px (web thumbnails
    to phone photos); each is judged against the clean img_b as it is."""
    options = {"eps": 8, **(options or {})}
    every_pair = read_pairs(dataset)
    pairs = [(a, b) for a, b, same in every_pair if same]
    if per_person:
        pairs = pairs_per_person(pairs, per_person)
    pairs = pairs[:limit] if limit else pairs
    wanted = {p for pair in pairs for p in pair}
    if adaptive:  # with --limit / per_person: the pairs among the photos of the chosen pairs
        every_pair = [(a, b, same) for a, b, same in every_pair if not (limit or per_person) or {a, b} <= wanted]
        wanted |= {p for a, b, _ in every_pair for p in (a, b)}
    recs, _ = models.available(DEFAULT_RECOGNISERS)
    photos = {p: load_image(dataset / p).pixels for p in sorted(wanted)}
    boxes = {p: models.largest_face(px) for p, px in photos.items()}
    originals = dict(photos)  # the photos as the dataset has them (references, judges' img_b)
    if size:  # the protected photos at another size: boxes scaled, not found again
        for a in {a for a, _ in pairs}:
            photos[a], factor = resized(photos[a], size)
            boxes[a] = None if boxes[a] is None else boxes[a] * factor
    pairs = [(a, b) for a, b in pairs if boxes[a] is not None and boxes[b] is not None]
    clean_emb = {(k, p): r.embed(photos[p], boxes[p]) for k, r in recs.items() for p in photos if boxes[p] is not None}
    results = {
        "dataset": str(dataset),
        "eps": options["eps"],
        "norm": options.get("norm") or "linf",
        "pairs": len(pairs),
        "size": size,
        "same_person": same_person,
        "methods": {},
    }
    person_sets = _person_sets(pairs, dataset, originals) if same_person else {}
    to_protect = sorted({a for a, _ in pairs} | ({p for p in photos if boxes[p] is not None} if adaptive else set()))
    if adaptive:
        faces = [p for p in photos if boxes[p] is not None]
        results["leakage_clean"] = {
            k: {
                view: identity_leakage(
                    r, {p: r.embed(see(photos[p], boxes[p]), boxes[p]) for p in faces}, every_pair, people_of(faces)
                )
                for view, see in ATTACKER_VIEWS.items()
            }
            for k, r in recs.items()
        }
    for method in methods:
        protection, attacked = build_method(method, options)
        protected, rows, used = {}, [], {}
        knows_person = protection.param("same_person") is not None
        jobs = (
            Job(
                a,
                photos[a],
                Detections(boxes[a][None], np.ones(1, np.float32)),
                {"same_person": person_sets.get(a)} if person_sets and knows_person else {},
            )
            for a in to_protect
        )
        for done in protect_each(protection, jobs, f"identity {method}", perceptual=True):
            protected[done.job.name] = done.result.pixels
            used[done.job.name] = (done.result.info.get("targets_used") or [[]])[0]
            rows.append(done.row)
        degraded = {a: degradations(protected[a], boxes[a]) for a in {a for a, _ in pairs}}  # PSR's photos only
        recovery = _recovery(protection, photos, protected, boxes) if protection.reversible else None
        target_emb = _target_embeddings(recs, getattr(protection, "targets", None)) if any(used.values()) else {}
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
                        people_of(protected),
                    )
                    for view, see in ATTACKER_VIEWS.items()
                }
            per_rec[k] = row
        name = label(method, options) + (" + person set" if person_sets and protection.param("same_person") else "")
        results["methods"][name] = {
            "recognisers": per_rec,
            "photos": rows,
            **summarise(rows),
            "attacked": list(attacked),
            "recovery": recovery,
        }
    return save(results, format_identity_table(results), out_dir)


def resized(pixels: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The photo resized (Lanczos) so its longer side is `side` px, and the scale factor."""
    from PIL import Image

    factor = side / max(pixels.shape[:2])
    if factor == 1:
        return pixels, 1.0
    h, w = pixels.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS)), factor


def _person_sets(pairs, dataset: Path, photos: dict) -> dict[str, list[np.ndarray]]:
    """{img_a: the person's other photos}: every photo of the person in the dataset except
    img_a itself and the photos img_a is judged against."""
    judged = {}
    for a, b in pairs:
        judged.setdefault(a, {a}).add(b)
    sets = {}
    for a, skip in judged.items():
        folder = (dataset / a).parent
        others = sorted(str(p.relative_to(dataset)) for p in folder.glob("*.jpg"))
        sets[a] = [photos.get(o) if o in photos else load_image(dataset / o).pixels for o in others if o not in skip]
    return sets


def _recovery(protection, photos, protected, boxes) -> dict:
    """For reversible obfuscations (DDM): how well the authorised decryption recovers the
    face region (PSNR/SSIM of decrypted vs original region), and whether recognisers match it."""
    rows, rec = [], models.load("dlib-resnet")
    for a, pixels in protected.items():
        r0, r1, c0, c1 = face_region(boxes[a], pixels.shape, protection.face_margin)
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


def _target_embeddings(recs: dict, targets=None) -> dict[str, list[np.ndarray]]:
    """{recogniser key: [embedding of each target identity]} (None when no face): the target
    photos the protection was given (`targets`, as --target gives them), else the built-in ones
    (what TIP-IM's targets_used indexes into)."""
    from faceshield.protections.tip_im import builtin_target_photos

    targets = builtin_target_photos() if targets is None else targets
    faces = [models.largest_face(t) for t in targets]
    return {
        k: [r.embed(t, box) if box is not None else None for t, box in zip(targets, faces)] for k, r in recs.items()
    }


def run_identity_sweep(
    dataset: Path,
    methods: list[str],
    options: dict | None = None,
    out_dir: Path = Path("bench_results/identity-sweep"),
    sizes: list[int] | None = None,
    loo: bool = False,
    budgets: list[float] | None = None,
    **pairs_options,
) -> dict:
    """run_identity_bench once per setting, one compact table with black-box figures first:
    sizes: once per photo size (the protected photos resized first, `--sizes`);
    loo: leave one family out (`--loo`): for each recogniser the protection attacks by
    default, attack all the others and judge every recogniser, the held-out one included;
    budgets: once per budget (eps), for curves of black-box PSR against PSNR (`--budgets`).
    pairs_options go to run_identity_bench (limit, per_person, same_person)."""
    from faceshield.bench.report import format_sweep_table
    from faceshield.protections import REGISTRY, method_key, spec_options

    options = dict(options or {})
    settings: list[tuple[str, dict, dict]] = []  # (row name, options, run_identity_bench keywords)
    if loo:
        attackers = [m for m in methods if REGISTRY[method_key(spec_options(m)[0])].attacks]
        default = options.get("attack") or REGISTRY[method_key(spec_options(attackers[0])[0])].attacks
        default = tuple(models.available(list(default))[0])  # the ones that load here (no Hub offline)
        for key in default:
            settings.append((f"held out: {key}", {**options, "attack": tuple(k for k in default if k != key)}, {}))
    for eps in budgets or []:
        settings.append((f"eps {eps:g}", {**options, "eps": eps}, {}))
    for size in sizes or ([] if loo or budgets else [None]):
        settings.append((f"{size} px" if size else "as is", options, {"size": size}))
    rows = []
    for name, opts, extra in settings:
        print(f"\n## {name}")
        results = run_identity_bench(
            dataset, methods, opts, out_dir=out_dir / name.replace(" ", "-").replace(":", ""), **pairs_options, **extra
        )
        rows.append({"setting": name, "results": results})
    kind = "loo" if loo else "budgets" if budgets and not sizes else "sizes"
    sweep = {"dataset": str(dataset), "kind": kind, "rows": rows}
    return save(sweep, format_sweep_table(sweep), out_dir)
