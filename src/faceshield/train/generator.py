"""Train the face-space perturbation generator (protections/generator.py).

Training works where the detectors decide: on faces, at sizes they see. Once, every face
MTCNN finds on the clean training photos is recorded. Each step draws `--batch` views: a
window around one face (2.2-3.2 face sides, off-centre), resized so the face is 24-160 px
(a `--large-share` of views: 200-600 px, a portrait's face),
flipped, colour-jittered, sometimes blurred or JPEG-compressed. The generator perturbs the
face's square exactly as the protection does (`perturb_faces`: crop with context -> 96 px ->
network -> resized back -> whole grey levels, straight-through), and the loss is each
white-box detector's own `face_loss` on the whole perturbed view (MTCNN re-runs its pyramid
and crops with its real area resampling), plus `--distortion-weight` x how far the square's
mean squared perturbation exceeds what `--psnr-floor` allows.

Validation (every `--val-every` steps, logged beside the losses): the share of fixed views
of held-out people (`--val-people`, never trained on) at face sizes 32/64/128 px (`--val-sizes`;
add a portrait's, e.g. 320) on which the
real detectors, run on the 8-bit result, no longer find the face; the best checkpoint by that
share whose median PSNR is within 0.5 dB of `--psnr-floor` is exported.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from faceshield import models, settings
from faceshield.protections.base import region_mask
from faceshield.protections.generator import (
    CONTEXT,
    WEIGHTS_FILE,
    WORK_SIZE,
    FaceGenerator,
    crop_squares,
    face_square,
    paste_squares,
    perturb_faces,
)
from faceshield.train import data
from faceshield.train.checkpoint import Run, export_safetensors
from faceshield.weights import REPO_WEIGHTS, load_trained

VAL_FACE_SIZES = (32, 64, 128)


def add_arguments(p) -> None:
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--run", type=Path, default=Path("runs/generator"), help="checkpoints and log.jsonl")
    p.add_argument("--steps", type=int, default=20000, help="optimiser steps")
    p.add_argument("--batch", type=int, default=8, help="views per optimiser step")
    p.add_argument("--face-sizes", type=int, nargs=2, default=[24, 160], help="face size range in the views (px)")
    p.add_argument(
        "--large-share",
        type=float,
        default=0.0,
        help="share of views of a large face (--large-sizes): portraits, where MTCNN decides at coarse pyramid levels",
    )
    p.add_argument("--large-sizes", type=int, nargs=2, default=[200, 600], help="face size range of large views (px)")
    p.add_argument(
        "--large-upsample",
        type=float,
        default=1.6,
        help="a large view is at most this x the face's own size (above 1.6: crowds' faces shown at a portrait's size)",
    )
    p.add_argument(
        "--val-sizes", type=int, nargs="+", default=list(VAL_FACE_SIZES), help="face sizes of the validation views"
    )
    p.add_argument("--eps", type=float, default=8, help="budget in grey levels")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--universal-lr", type=float, default=0.02, help="learning rate of the universal pattern")
    p.add_argument("--distortion-weight", type=float, default=10.0)
    p.add_argument("--psnr-floor", type=float, default=33.0, help="penalise the square's PSNR below this (dB)")
    p.add_argument("--pnet-weight", type=float, default=0.0, help="weight of MTCNN's dense P-Net term")
    p.add_argument("--max-candidates", type=int, default=12, help="MTCNN candidates per view in the loss")
    p.add_argument("--detectors", nargs="+", default=["mtcnn"], help="white-box detectors to train against")
    p.add_argument("--detector-weights", type=float, nargs="+", help="loss weight per detector (default 1 each)")
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--context", type=float, default=CONTEXT, help="square side / face box side")
    p.add_argument(
        "--val-people",
        nargs="*",
        default=["deepface_p12", "deepface_p13"],
        help="identity folders held out of training and used for validation",
    )
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--init", type=Path, help="start from the network weights of another run's last.pt, or an exported .safetensors"
    )
    p.add_argument("--export", type=Path, default=REPO_WEIGHTS / WEIGHTS_FILE)
    p.add_argument(
        "--evaluate",
        type=Path,
        nargs="+",
        help="train nothing: print the validation of these weights (.safetensors or a run's .pt) per --val-sizes",
    )


def face_records(photos: list[torch.Tensor], cache: Path | None = None, min_side: float = 20):
    """(photo index, x1y1x2y2 box) of every face of at least `min_side` px MTCNN finds
    (kept in `cache`, a JSON file, so a resumed run skips the search)."""
    if cache is not None and cache.is_file():
        return [(i, np.array(box)) for i, box in json.loads(cache.read_text())]
    mtcnn = models.load("mtcnn")
    records = []
    for i, photo in enumerate(tqdm(photos, desc="finding faces", leave=False)):
        for box in mtcnn.detect(photo.permute(1, 2, 0).numpy()).boxes:
            if min(box[2] - box[0], box[3] - box[1]) >= min_side:
                records.append((i, box.astype(np.float64)))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([(i, box.tolist()) for i, box in records]))
    return records


def face_view(photo: torch.Tensor, box, face_size: float, rng: random.Random, augment=None):
    """A window around one face, resized so its longer side is `face_size` px.

    photo: (3, H, W) uint8. Returns ((1, 3, h, w) float grey levels, the box in the view)."""
    _, h, w = photo.shape
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    half = side * rng.uniform(1.1, 1.6)
    cx = (x1 + x2) / 2 + side * rng.uniform(-0.3, 0.3)
    cy = (y1 + y2) / 2 + side * rng.uniform(-0.3, 0.3)
    c0, c1 = int(max(0, cx - half)), int(min(w, cx + half))
    r0, r1 = int(max(0, cy - half)), int(min(h, cy + half))
    k = face_size / side
    out_h, out_w = max(24, round((r1 - r0) * k)), max(24, round((c1 - c0) * k))
    view = photo[:, r0:r1, c0:c1]
    if augment is not None:
        view = augment(view)
    view = F.interpolate(view[None].float(), size=(out_h, out_w), mode="bilinear", antialias=True).round().clamp(0, 255)
    ky, kx = out_h / (r1 - r0), out_w / (c1 - c0)
    box_v = np.array([(x1 - c0) * kx, (y1 - r0) * ky, (x2 - c0) * kx, (y2 - r0) * ky])
    if rng.random() < 0.5:
        view = view.flip(3)
        box_v = np.array([out_w - box_v[2], box_v[1], out_w - box_v[0], box_v[3]])
    return view, box_v


def _augmenter():
    """Photometric changes only (geometry is face_view's): colour, blur, JPEG. uint8 in/out."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.2))], p=0.2),
            v2.RandomApply([v2.JPEG((50, 95))], p=0.3),
        ]
    )


def _jittered_square(box, context: float, rng: random.Random):
    """The square the protection would perturb, from a box a few percent off (the detector's
    box on the full photo differs a little from the one on this view)."""
    x1, y1, x2, y2 = box
    s = max(x2 - x1, y2 - y1)
    dx, dy, ds = (rng.uniform(-0.05, 0.05) * s for _ in range(3))
    return face_square((x1 + dx - ds, y1 + dy - ds, x2 + dx + ds, y2 + dy + ds), context)


def _found(detector, pixels: np.ndarray, box) -> bool:
    """Whether the detector finds a face whose centre lies inside `box`."""
    found = detector.detect(pixels)
    if not len(found):
        return False
    cx = (found.boxes[:, 0] + found.boxes[:, 2]) / 2
    cy = (found.boxes[:, 1] + found.boxes[:, 3]) / 2
    return bool(np.any((cx > box[0]) & (cx < box[2]) & (cy > box[1]) & (cy < box[3])))


def validation_views(photos, records, seed: int = 0, sizes=VAL_FACE_SIZES):
    """Fixed views (no photometric augmentation) of each record at every one of `sizes`."""
    rng = random.Random(seed)
    return [face_view(photos[i], box, size, rng) for i, box in records for size in sizes]


def view_size(
    side: float, rng: random.Random, sizes, large_sizes, large_share: float, large_upsample: float = 1.6
) -> float:
    """The face size (px) of one training view of a face `side` px on its photo: log-uniform in
    `sizes`, or with probability `large_share` in `large_sizes` (a portrait's face). A view is
    never more than 1.6 x the face's own size (no view is mostly up-sampling), a large view never
    more than `large_upsample` x: a crowd's 80 px face shown at 300 px carries the same coarse
    content MTCNN decides a portrait on (its pyramid's coarse levels, 24/48 px crops), so more
    people's faces teach the portrait case."""
    lo, hi = sizes
    cap = 1.6
    if rng.random() < large_share and large_upsample * side > large_sizes[0]:
        lo, hi = large_sizes
        cap = large_upsample
    top = min(hi, max(cap * side, sizes[0]))
    return math.exp(rng.uniform(math.log(min(lo, top)), math.log(top)))


def validate(net, views, detectors, eps: float, context: float) -> dict:
    """Share of views whose face each detector found clean and no longer finds protected."""
    net.eval()
    found = {d.name: [0, 0] for d in detectors}
    psnrs = []
    with torch.no_grad():
        for view, box in views:
            adv = perturb_faces(net, view, [face_square(box, context)], eps)
            clean_px = view[0].permute(1, 2, 0).byte().numpy()
            adv_px = adv[0].permute(1, 2, 0).byte().numpy()
            psnrs.append(10 * math.log10(255**2 / max(float((adv - view).pow(2).mean()), 1e-6)))
            for d in detectors:
                if _found(d, clean_px, box):
                    found[d.name][0] += 1
                    found[d.name][1] += _found(d, adv_px, box)
    net.train()
    out = {f"hidden_{k}": 1 - f[1] / f[0] for k, f in found.items() if f[0]}
    out["val_psnr"] = float(np.median(psnrs))
    return out


def _load_state(path: Path) -> dict:
    """Network weights from an exported .safetensors, a run's best.pt (a state dict) or last.pt."""
    if str(path).endswith(".safetensors"):
        return load_trained(path).tensors
    state = torch.load(path, weights_only=False)
    return state["net"] if "net" in state else state


def evaluate(args) -> None:
    """--evaluate: each weights file's validation (the held-out people's faces) at each face size."""
    val_folders = tuple(f"identities/{p}" for p in args.val_people)
    val_photos = data.load_tensors(sorted(p for f in val_folders for p in (args.data / f).glob("*.jpg")))
    records = face_records(val_photos, args.run / "val_faces.json")
    detectors = [models.load(k) for k in args.detectors]
    print("| weights | face size | " + " | ".join(f"hidden from {d.name}" for d in detectors) + " | PSNR dB |")
    print("|---|---:|" + "---:|" * len(detectors) + "---:|")
    for path in args.evaluate:
        net = FaceGenerator(args.width, args.blocks, WORK_SIZE)
        net.load_state_dict(_load_state(path), strict=False)
        for size in args.val_sizes:
            out = validate(net, validation_views(val_photos, records, sizes=(size,)), detectors, args.eps, args.context)
            hidden = " | ".join(f"{out.get(f'hidden_{d.name}', float('nan')):.0%}" for d in detectors)
            print(f"| {path} | {size} | {hidden} | {out['val_psnr']:.1f} |", flush=True)


def main(args) -> None:
    settings.apply_threads()
    if args.evaluate:
        return evaluate(args)
    data.seed_everything(args.seed)
    rng = random.Random(args.seed)
    val_folders = tuple(f"identities/{p}" for p in args.val_people)
    photos = data.load_tensors(data.training_photos(args.data, skip_folders=val_folders))
    val_photos = data.load_tensors(sorted(p for f in val_folders for p in (args.data / f).glob("*.jpg")))
    records = face_records(photos, args.run / "faces.json")
    val_views = validation_views(
        val_photos, face_records(val_photos, args.run / "val_faces.json"), sizes=tuple(args.val_sizes)
    )
    detectors = [models.load(k) for k in args.detectors]
    weights = args.detector_weights or [1.0] * len(detectors)
    for d in detectors:
        if hasattr(d, "proposal_weight"):  # the cached registry model; this process only trains
            d.proposal_weight, d.max_candidates = args.pnet_weight, args.max_candidates
    allowed_mse = 255.0**2 / 10 ** (args.psnr_floor / 10)  # grey levels^2 before the hinge bites
    net = FaceGenerator(args.width, args.blocks, WORK_SIZE)
    if args.init and not args.resume:
        state = _load_state(args.init)  # a shipped export (weights/perturbation_generator...) or a run's
        missing = net.load_state_dict(state, strict=False).missing_keys
        print(f"initialised from {args.init}" + (f" (new: {', '.join(missing)})" if missing else ""))
    body = [p for name, p in net.named_parameters() if name != "universal"]
    # the universal pattern is one tensor in tanh space: it needs steps of its own size to move
    opt = torch.optim.Adam([{"params": body}, {"params": [net.universal], "lr": args.universal_lr}], lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.05)
    best = {"score": -1.0}
    run = Run(args.run, {"net": net, "opt": opt, "sched": sched, "best": _Holder(best)}, args.resume)
    augment = _augmenter()
    print(
        f"{len(photos)} training photos, {len(records)} faces; {len(val_views)} validation views of "
        f"{len(val_photos)} held-out photos; detectors {[d.name for d in detectors]}"
    )

    bar = tqdm(total=args.steps, initial=run.step, desc="generator")
    while run.step < args.steps:
        views = []
        for _ in range(args.batch):
            i, box = rng.choice(records)
            side = max(box[2] - box[0], box[3] - box[1])
            size = view_size(side, rng, args.face_sizes, args.large_sizes, args.large_share, args.large_upsample)
            views.append(face_view(photos[i], box, size, rng, augment))
        opt.zero_grad()
        squares = [_jittered_square(box, args.context, rng) for _, box in views]
        # one generator pass for the whole batch; each view then goes to the detectors alone
        deltas = net(torch.cat([crop_squares(v, [sq]) for (v, _), sq in zip(views, squares)]) / 255.0) * args.eps
        loss, face_total, dist_total = 0.0, 0.0, 0.0
        for (view, box), square, d in zip(views, squares, deltas):
            delta = paste_squares(view.shape, d[None], [square])
            adv = (view + delta + (torch.round(delta) - delta).detach()).clamp(0, 255)  # as perturb_faces
            region = torch.from_numpy(region_mask(view.shape[2:], box[None], 0.1))
            face = sum(wt * det.face_loss(adv / 255.0, region) for wt, det in zip(weights, detectors))
            mse = d.pow(2).mean()  # the square's mean squared change (grey levels^2), before rounding
            dist = torch.relu(mse / allowed_mse - 1.0)
            loss = loss + (face + args.distortion_weight * dist) / args.batch
            face_total += float(face.detach()) / args.batch
            dist_total += float(dist.detach()) / args.batch
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        run.step += 1
        row = {"face_loss": face_total, "distortion": dist_total, "lr": sched.get_last_lr()[0]}
        if run.step % args.val_every == 0 or run.step == args.steps:
            row.update(validate(net, val_views, detectors, args.eps, args.context))
            score = float(np.mean([v for k, v in row.items() if k.startswith("hidden_")] or [0.0]))
            # a checkpoint that hides more by changing more than the floor allows is not better
            if score > best["score"] and row["val_psnr"] >= args.psnr_floor - 0.5:
                best.update(score=score, step=run.step)
                torch.save(net.state_dict(), run.dir / "best.pt")
            tqdm.write(f"step {run.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        run.log(**row)
        bar.update(1)
        bar.set_postfix(face=f"{face_total:.1f}")
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
    if (run.dir / "best.pt").is_file():  # ship the best validated network, not the last
        net.load_state_dict(torch.load(run.dir / "best.pt"))
    _export(net, args, best.get("step", run.step), best["score"])
    print(f"best validation {best['score']:.3f} at step {best.get('step')}; wrote {args.export}")


class _Holder:
    """A dict saved and restored with the checkpoint (the best validation score so far)."""

    def __init__(self, d: dict):
        self.d = d

    def state_dict(self):
        return dict(self.d)

    def load_state_dict(self, state):
        self.d.clear()
        self.d.update(state)


def _export(net, args, step: int, score: float) -> None:
    export_safetensors(
        net,
        args.export,
        {
            "architecture": "FaceGenerator",
            "universal_lr": args.universal_lr,
            "space": "face",
            "context": args.context,
            "width": args.width,
            "blocks": args.blocks,
            "eps": args.eps,
            "steps": args.steps,
            "exported_step": step,
            "validation_hidden": round(score, 4),
            "batch": args.batch,
            "face_sizes": args.face_sizes,
            "large_share": args.large_share,
            "large_sizes": args.large_sizes,
            "large_upsample": args.large_upsample,
            "val_sizes": args.val_sizes,
            "detectors": ",".join(args.detectors),
            "detector_weights": args.detector_weights or "",
            "distortion_weight": args.distortion_weight,
            "psnr_floor": args.psnr_floor,
            "pnet_weight": args.pnet_weight,
            "val_people": ",".join(args.val_people),
            "seed": args.seed,
            "init": str(args.init or ""),
            "data": "faces in faceshield training photos (annotated detection photos and val people held out)",
        },
    )
