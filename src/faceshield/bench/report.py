"""The bench's tables (markdown, from a results dict as results.json holds it) and saving them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from faceshield import models
from faceshield.bench.views import ATTACKER_VIEWS


def save(results: dict, table: str, out_dir: Path) -> dict:
    """Print the table and save it (results.md) with the raw numbers (results.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(table)
    print(table)
    return results


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


def budget_text(results: dict) -> str:
    if results.get("norm") == "l2":
        return f"L2 budget: RMS {results['eps']:g} grey levels over the face regions"
    return f"L-inf budget {results['eps']:g}/255"


def format_identity_table(results: dict) -> str:
    lines = [
        f"{results['pairs']} same-person pairs; protected img_a vs clean img_b; "
        f"{budget_text(results)} for the adversarial methods; PSR = protection success rate "
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
        lines += leakage_table(results)
    for method, res in results["methods"].items():
        if res.get("recovery"):
            r = res["recovery"]
            lines.append(
                f"\n{method}: authorised decryption of the face region: PSNR {r['psnr']:.1f} dB, "
                f"SSIM {r['ssim']:.3f}; dlib still matches the decrypted face to the original on "
                f"{r['dlib_match_rate']:.0%} of photos"
            )
    return "\n".join(lines) + "\n"


FIRST_THREE = ("dlib-resnet", "facenet", "sface-onnx")  # the distinct recognisers before LightCNN and the rest


def leakage_table(results: dict) -> list[str]:
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
    three = [k for k in FIRST_THREE if k in distinct]  # the networks the older tables averaged over
    lines += [
        "",
        f"Mean over the distinct networks ({', '.join(distinct)}); 'face only, 3' over {', '.join(three)} alone; "
        "for a reversible protection, its authorised decryption of the face region (PSNR against the original "
        "region, and the share of decrypted faces dlib's ResNet matches to the original):",
        "",
        "| method | PSNR dB | AUC | AUC, face only | AUC, stretched | AUC, face only, 3 | decrypted PSNR dB "
        "| dlib re-match |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, per_rec in rows:
        means = [np.mean([per_rec[k][v]["auc"] for k in distinct]) for v in ATTACKER_VIEWS]
        means.append(np.mean([per_rec[k]["face_only"]["auc"] for k in three]) if three else float("nan"))
        res = results["methods"].get(method, {})
        psnr = f"{res['psnr']:.1f}" if res else "-"
        recovery = res.get("recovery")
        decrypted = [f"{recovery['psnr']:.1f}", f"{recovery['dlib_match_rate']:.0%}"] if recovery else ["-", "-"]
        lines.append(f"| {method} | {psnr} | " + " | ".join([*(show(m, ".2f") for m in means), *decrypted]) + " |")
    return lines


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


def format_transfer_table(results: dict) -> str:
    """Black-box detectors first (what a user meets), then the attacked ones; each method's
    column, the control's last."""
    names = list(results["methods"])
    runs = list(results["methods"].values())
    methods = names[:-1]
    lines = [
        f"{len(results['annotated'])} annotated photos (recall at IoU 0.5) and {results['portraits']} portraits "
        f"(share on which the detector still finds the face); L-inf {results['eps']:g}/255"
        + (" for the first method (each one's budgets: the last row)" if len(names) > 2 else ""),
        "",
        "| detector | role | recall before | "
        + " | ".join(f"after: {n}" for n in names)
        + " | portraits found before | "
        + " | ".join(f"still found: {n}" for n in names)
        + " |",
        "|---|---|---:|" + "---:|" * len(names) + "---:|" + "---:|" * len(names),
    ]

    def attacked_by(key: str) -> list[str]:
        return [n for n, r in zip(methods, runs) if r["detectors"][key]["white_box"]]

    first = runs[0]["detectors"]
    for key in sorted(first, key=lambda k: len(attacked_by(k)) > 0):
        by = attacked_by(key)
        if not by:
            role = "black-box"
        elif len(methods) == 1:
            role = "white-box (attacked)"
        else:
            role = "white-box for " + ", ".join(by)
        lines.append(
            f"| {key} | {role} | {first[key]['recall_before']:.1%} | "
            + " | ".join(f"{r['detectors'][key]['recall_after']:.1%}" for r in runs)
            + f" | {first[key]['portraits_found']} | "
            + " | ".join(f"{r['detectors'][key]['portraits_kept']:.1%}" for r in runs)
            + " |"
        )
    lines += ["", *transfer_goals(results), ""]
    for name, r in results["methods"].items():
        ok = [p["success"] for p in r["photos"] if p["success"] is not None]
        lines.append(
            f"{name}: PSNR median {r['psnr_median']:.1f} dB (lowest {r['psnr_lowest']:.1f}); "
            f"{r['seconds_median']:.1f} s a photo median, {r['seconds_worst']:.1f} s worst"
            + (
                f"; every attacked detector fooled on {sum(map(bool, ok))}/{len(ok)} photos"
                if ok and r["attacked"]
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def format_sweep_table(sweep: dict) -> str:
    """One row per setting (photo size, or held-out family) and method: black-box PSR first
    (each never-attacked judge, then their mean), then the attacked models', after JPEG q75 and
    a 0.5x resize (black-box mean), visibility and time."""
    first = sweep["rows"][0]["results"] if sweep["rows"] else {"pairs": 0}
    what = {
        "sizes": "photo size (longer side)",
        "loo": "family held out of the attack",
        "budgets": "budget (eps, grey levels)",
    }[sweep["kind"]]
    lines = [
        f"{first['pairs']} same-person pairs per row; {budget_text(first) if 'eps' in first else ''}; rows: {what}. "
        "Black-box = judged by recognisers the protection never attacked (nor their twins); PSR = pairs no "
        "longer matched; PSNR median / lowest; HaarPSI 1 = identical; seconds median / worst per photo",
        "",
        "| setting | method | black-box PSR per judge | black-box mean | white-box mean | black-box JPEG75 "
        "| black-box 0.5x | PSNR dB | HaarPSI | s/photo |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sweep["rows"]:
        for method, res in row["results"]["methods"].items():
            recs = res["recognisers"]
            black = {k: r for k, r in recs.items() if not r["white_box"]}
            white = [r["psr"] for r in recs.values() if r["white_box"]]

            def mean(key, rows=black):
                return f"{np.mean([r[key] for r in rows.values()]):.1%}" if rows else "-"

            judges = ", ".join(f"{k} {r['psr']:.0%}" for k, r in black.items())
            lines.append(
                f"| {row['setting']} | {method} | {judges} | **{mean('psr')}** "
                f"| {f'{np.mean(white):.1%}' if white else '-'} | {mean('psr_jpeg75')} | {mean('psr_resize0.5')} "
                f"| {res.get('psnr_median', res['psnr']):.1f} / {res.get('psnr_lowest', res['psnr']):.1f} "
                f"| {res.get('haarpsi', float('nan')):.3f} "
                f"| {res.get('seconds_median', res['seconds_per_photo']):.1f} "
                f"/ {res.get('seconds_worst', res['seconds_per_photo']):.1f} |"
            )
    return "\n".join(lines) + "\n"


def transfer_goals(results: dict) -> list[str]:
    """The hiding goals, one column per method and the control's last: portraits hidden from
    every detector the method attacks (the control: those the first method attacks), recall
    those detectors keep on the annotated photos, PSNR, seconds (with several methods the
    total too, so a faster start reads as a ratio) and the budget ladder's use (how many
    photos ended at which budget). Records made before these were kept per photo show what
    they have."""
    runs = list(results["methods"].items())
    control = runs[-1][0]

    def attacked(name: str, r: dict) -> list[str]:
        source = runs[0][1] if name == control else r
        return [k for k, d in source["detectors"].items() if d["white_box"]]

    if not attacked(*runs[0]):
        return []

    def hidden(name, r):
        keys = attacked(name, r)
        portraits = [p for p in r["photos"] if p["portrait"] and "hidden_from_attacked" in p]
        n, total = sum(p["hidden_from_attacked"] for p in portraits), len(portraits)
        if not portraits and len(keys) == 1:  # an older record: the one detector's own count
            d = r["detectors"][keys[0]]
            total = d["portraits_found"]
            n = round(total * (1 - d["portraits_kept"]))
        return f"{n}/{total} ({n / total:.0%})" if total else "-"

    def recall(name, r):
        return ", ".join(f"{k} {r['detectors'][k]['recall_after']:.1%}" for k in attacked(name, r))

    def ladder(name, r):
        budgets = [p["budget"] for p in r["photos"] if p.get("budget") is not None]
        counts = {b: budgets.count(b) for b in sorted(set(budgets))}
        return ", ".join(f"{b:g}/255: {n}" for b, n in counts.items()) or "-"

    def seconds(name, r):
        text = f"{r['seconds_median']:.1f} / {r['seconds_worst']:.1f}"
        if len(runs) > 2:
            text += f" / {sum(p['seconds'] for p in r['photos']):.0f}"
        return text

    rows = [
        ("portraits hidden from every detector it attacks", hidden),
        ("recall the attacked detectors keep on the annotated photos", recall),
        ("PSNR median (lowest), dB", lambda name, r: f"{r['psnr_median']:.1f} ({r['psnr_lowest']:.1f})"),
        ("seconds a photo, median / worst" + (" / total" if len(runs) > 2 else ""), seconds),
        ("photos per budget it ended at", ladder),
    ]
    lines = ["| goal | " + " | ".join(name for name, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
    return lines + [f"| {what} | " + " | ".join(show(n, r) for n, r in runs) + " |" for what, show in rows]
