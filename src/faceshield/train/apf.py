"""Train APF's server part and universal perturbation (protections/apf.py).

Data: every face of the training photos (by default not the identities the benchmarks judge),
aligned into APF's 192 px crop, in several views each: a small random similarity (scale,
rotation, shift: the alignment of a real photo is never exact) and colour jitter. The device's
side of each view (the probes' own perturbation and the gradient it sends) does not depend on
what is trained, so it is computed once and cached in the run folder. Each step, for a batch of
views: the transfer network's perturbation from the gradient, plus the universal perturbation,
plus the device's own perturbation, clipped to the budget; the loss is the dodging loss
(Recogniser.dodge_loss, the one TIP-IM uses) of every recogniser of the ensemble. The transfer
network learns what the gradient of this face adds, the universal part what works on every face.

A few faces are held out as a validation set, judged every `--val-every` steps by the ensemble
and by `--judges` the filter is never trained against: the log shows the black-box curve.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from faceshield import models, settings
from faceshield.models.alignment import five_points, warp
from faceshield.protections.apf import (
    CROP,
    PROBES,
    WEIGHTS_FILE,
    crop_points,
    crop_transform,
    normalise_gradient,
    probe_gradient,
)
from faceshield.protections.generator import PerturbationGenerator
from faceshield.train import data
from faceshield.train.checkpoint import Run, export_safetensors
from faceshield.weights import REPO_WEIGHTS


def add_arguments(p) -> None:
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--run", type=Path, default=Path("runs/apf"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eps", type=float, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.5, help="dodging margin beyond each threshold")
    p.add_argument("--probe", nargs="+", default=list(PROBES), help="the device's probe recognisers")
    p.add_argument("--ensemble", nargs="+", default=["dlib-resnet-torch", "facenet", "sface"])
    p.add_argument("--judges", nargs="*", default=["facelib-mobilenet"], help="never trained against; validation only")
    p.add_argument("--probe-steps", type=int, default=3)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--views", type=int, default=4, help="jittered views of each training face")
    p.add_argument("--min-face", type=int, default=32, help="smallest face side (px) to train on")
    p.add_argument(
        "--skip-folders",
        nargs="*",
        default=["identities"],
        help="photo folders not to train on: by default the identities the bench's pair tables judge",
    )
    p.add_argument("--val-faces", type=int, default=16)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export-only", action="store_true", help="export the run's last checkpoint and stop")
    p.add_argument("--export", type=Path, default=REPO_WEIGHTS / WEIGHTS_FILE)


def _jitter(rng: np.random.Generator, strength: float) -> np.ndarray:
    """A random similarity of the crop about its centre (3x3, crop -> crop)."""
    s = 1 + rng.uniform(-0.05, 0.05) * strength
    t = math.radians(rng.uniform(-4, 4) * strength)
    dx, dy = rng.uniform(-3, 3, 2) * strength
    c = (CROP - 1) / 2
    rot = np.array([[s * math.cos(t), -s * math.sin(t), 0], [s * math.sin(t), s * math.cos(t), 0], [0, 0, 1.0]])
    to_c, back = (
        np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]]),
        np.array([[1, 0, c + dx], [0, 1, c + dy], [0, 0, 1.0]]),
    )
    return back @ rot @ to_c


def _faces(photos: list[torch.Tensor], min_face: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(photo, crop -> photo transform) for every face at least `min_face` px."""
    points, out = five_points(), []
    for photo in photos:
        pixels = photo.permute(1, 2, 0).numpy()
        for face in models.find_faces(pixels).boxes:
            if min(face[2] - face[0], face[3] - face[1]) >= min_face:
                out.append((photo, crop_transform(points(pixels, face))))
    return out


@functools.cache
def _dlib_landmarks():
    from faceshield.models.dlib_models import DlibLandmarks

    return DlibLandmarks()


def _landmarks(keys, crop: torch.Tensor, jitter: np.ndarray) -> dict[str, np.ndarray]:
    """Each recogniser's landmarks in a view: dlib's own predictor for dlib's networks, the
    (jittered) ArcFace template for the others."""
    tpl = crop_points()
    moved = (np.linalg.inv(jitter) @ np.c_[tpl, np.ones(len(tpl))].T).T[:, :2]
    lo, hi = moved.min(0), moved.max(0)
    side = hi - lo
    box = np.array([lo[0] - 0.6 * side[0], lo[1] - 1.0 * side[1], hi[0] + 0.6 * side[0], hi[1] + 0.5 * side[1]])
    pixels = np.ascontiguousarray(crop.permute(1, 2, 0).numpy())
    return {k: (_dlib_landmarks()(pixels, box) if k.startswith("dlib") else moved) for k in keys}


def make_views(faces, args, keys, probes, seed: int, views: int, jitter_strength: float) -> list[dict]:
    """The cached training samples: view crop, landmarks, clean embeddings, the device's part."""
    from torchvision.transforms import v2

    colour = v2.ColorJitter(0.2, 0.2, 0.2, 0.02)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    recs = {k: models.load(k) for k in keys}
    samples = []
    for photo, a in tqdm(faces, desc="device side of each view"):
        for v in range(views):
            j = np.eye(3) if v == 0 else _jitter(rng, jitter_strength)
            crop = warp(photo[None].float(), a @ j, CROP)[0].round().clamp(0, 255).byte()
            if v:
                crop = colour(crop)
            lm = _landmarks(keys, crop, j)
            x = crop[None].float() / 255
            own, grad = probe_gradient(probes, x, args.eps, args.probe_steps, generator)
            with torch.no_grad():
                e0 = {k: r.embed_tensor(x, lm[k]) for k, r in recs.items()}
            samples.append({"crop": crop, "landmarks": lm, "e0": e0, "own": own.half(), "grad": grad.half()})
    return samples


def _cached(path: Path, build):
    if path.is_file():
        return torch.load(path, weights_only=False)
    value = build()
    torch.save(value, path)
    return value


def _apply(transfer, uap_logits, sample, eps):
    x = sample["crop"][None].float() / 255
    delta = (
        sample["own"].float()
        + transfer(normalise_gradient(sample["grad"].float())) * eps
        + torch.tanh(uap_logits)[None] * eps
    )
    return (x + delta.clamp(-eps, eps) / 255).clamp(0, 1)


def _fooled(rec, e, e0) -> bool:
    return not rec.is_match(float(rec.score_tensor(e.detach(), e0)))


def main(args) -> None:
    settings.apply_threads()
    data.seed_everything(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys([*args.ensemble, *args.judges]))
    probes = [models.load(k) for k in args.probe]
    recs = {k: models.load(k) for k in keys}

    def split():
        photos = data.load_tensors(data.training_photos(args.data, tuple(args.skip_folders)))
        faces = _faces(photos, args.min_face)
        order = np.random.default_rng(args.seed).permutation(len(faces))
        val = [faces[i] for i in order[: args.val_faces]]
        train = [faces[i] for i in order[args.val_faces :]]
        return (
            make_views(train, args, keys, probes, args.seed, args.views, 1.0),
            make_views(val, args, keys, probes, args.seed + 1, 1, 0.0),
        )

    train, val = _cached(args.run / "views.pt", split)
    print(f"{len(train)} training views, {len(val)} validation faces")
    transfer = PerturbationGenerator(args.width, args.blocks)
    uap_logits = torch.nn.Parameter(torch.zeros(3, CROP, CROP))
    opt = torch.optim.Adam(
        [{"params": transfer.parameters(), "lr": args.lr}, {"params": [uap_logits], "lr": args.lr * 10}]
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    holder = _ParamHolder(uap_logits)
    run = Run(args.run, {"transfer": transfer, "opt": opt, "uap": holder, "schedule": schedule}, args.resume)
    bar = tqdm(total=args.steps, initial=run.step, desc="apf")
    while run.step < args.steps and not args.export_only:
        opt.zero_grad()
        total, fooled = 0.0, {k: [] for k in args.ensemble}
        for i in torch.randint(len(train), (args.batch,)).tolist():
            sample = train[i]
            x_adv = _apply(transfer, uap_logits, sample, args.eps)
            loss = 0.0
            for k in args.ensemble:
                e = recs[k].embed_tensor(x_adv, sample["landmarks"][k])
                loss = loss + recs[k].dodge_loss(e, sample["e0"][k], args.margin)
                fooled[k].append(_fooled(recs[k], e, sample["e0"][k]))
            (loss / args.batch).backward()
            total += float(loss.detach()) / args.batch
        opt.step()
        schedule.step()
        run.step += 1
        rates = {f"fooled_{k}": np.mean(v) for k, v in fooled.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", fooled=f"{np.mean(list(rates.values())):.0%}")
        if run.step % args.val_every == 0 or run.step == args.steps:
            rates.update(validate(transfer, uap_logits, val, recs, args.eps))
        run.log(loss=total, **rates)
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
    export(args, transfer, uap_logits, len(train) // args.views, run.step)


@torch.no_grad()
def validate(transfer, uap_logits, val, recs, eps) -> dict:
    """Share of held-out faces each recogniser no longer matches (ensemble and judges)."""
    fooled = {k: [] for k in recs}
    for sample in val:
        x_adv = _apply(transfer, uap_logits, sample, eps)
        for k, rec in recs.items():
            fooled[k].append(_fooled(rec, rec.embed_tensor(x_adv, sample["landmarks"][k]), sample["e0"][k]))
    return {f"val_fooled_{k}": np.mean(v) for k, v in fooled.items()}


def export(args, transfer, uap_logits, faces: int, steps: int) -> None:
    state = {f"transfer.{k}": v for k, v in transfer.state_dict().items()}
    state["uap"] = torch.tanh(uap_logits.detach())
    holder = torch.nn.Module()
    holder.state_dict = lambda: state
    export_safetensors(
        holder,
        args.export,
        {
            "architecture": "APF: PerturbationGenerator transfer net + universal perturbation",
            "width": args.width,
            "blocks": args.blocks,
            "crop": CROP,
            "eps": args.eps,
            "probe": ",".join(args.probe),
            "probe_steps": args.probe_steps,
            "own_in_output": "true",
            "ensemble": ",".join(args.ensemble),
            "judges": ",".join(args.judges),
            "margin": args.margin,
            "steps": steps,
            "batch": args.batch,
            "views": args.views,
            "seed": args.seed,
            "faces": faces,
            "data": "faceshield training photos (annotated detection photos held out; skipped: "
            f"{', '.join(args.skip_folders) or 'none'})",
        },
    )
    print(f"wrote {args.export}")


class _ParamHolder(torch.nn.Module):
    """Lets Run checkpoint a bare parameter like a module."""

    def __init__(self, param: torch.nn.Parameter):
        super().__init__()
        self.param = param
