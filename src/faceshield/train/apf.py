"""Train APF's server part and universal perturbation (protections/apf.py).

Data: every face of the training photos (by default every photo except the identities the
pair benchmarks judge and the validation photos), plus the faces of photos that installed
packages ship. Views are made as the protection will meet them: a window around a face is
colour-jittered, rotated (pose), maybe mirrored, resized so the face is 60-600 px across (as a
phone or a web page resizes photos; a small face is never up-sampled more than `--max-upscale`)
and maybe JPEG-compressed; dlib's points are found on that window and the face is cut into
APF's 192 px crop exactly as the protection cuts it, with a small alignment jitter. The
device's side of each view (the probes' own perturbation and the gradient it sends) does
not depend on what is trained, so it is computed once per view: the run starts from a pool
of views and adds `--new-views` fresh ones every step (the pool is capped at `--pool`,
replaced at random), so the networks keep seeing new faces, sizes and crops. Each step, for
a batch from the pool: the transfer network's perturbation from the gradient, plus the
universal perturbation, plus the device's own perturbation, clipped to the budget and
rounded to grey levels; the loss is the dodging loss (Recogniser.dodge_loss, the one TIP-IM
uses) of every recogniser of the ensemble.

Validation is on whole photos the run never trains on (`--val-photos`: package portraits at
several face sizes, group photos at their own), judged every `--val-every` steps by the
ensemble and by `--judges` the filter is never trained against: the log shows the black-box curve.
A checkpoint holds the networks, the optimiser and the step; on `--resume` the pool is rebuilt
from new random views (the validation views are cached in the run folder).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from faceshield import models, settings, weights
from faceshield.examples import shipped_file
from faceshield.models.alignment import five_points, warp
from faceshield.protections.apf import (
    CROP,
    PROBES,
    WEIGHTS_FILE,
    crop_mask,
    crop_points,
    crop_transform,
    probe_gradient,
    transfer_part,
    uap_part,
)
from faceshield.protections.generator import PerturbationGenerator
from faceshield.train import data
from faceshield.train.checkpoint import Run, export_safetensors
from faceshield.weights import REPO_WEIGHTS

# photos with faces that installed packages ship: (package, file inside it)
PACKAGE_PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "camera": ("skimage", "data/camera.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "bus": ("ultralytics", "assets/bus.jpg"),
    "zidane": ("ultralytics", "assets/zidane.jpg"),
}
VAL_SIZES = (64, 128, 320)  # face sizes (px) the package portraits are validated at


def add_arguments(p) -> None:
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--run", type=Path, default=Path("runs/apf"))
    p.add_argument("--init", type=Path, help="start the networks from an exported .safetensors (e.g. weights/apf...)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eps", type=float, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--margin", type=float, default=0.5, help="dodging margin beyond each threshold")
    p.add_argument("--face-margin", type=float, default=0.25, help="how far around the face box the change may reach")
    p.add_argument("--probe", nargs="+", default=list(PROBES), help="the device's probe recognisers")
    p.add_argument("--ensemble", nargs="+", default=["dlib-resnet-torch", "facenet", "sface"])
    p.add_argument("--judges", nargs="*", default=["facelib-mobilenet"], help="never trained against; validation only")
    p.add_argument("--probe-steps", type=int, default=5, help="as many as the protection's default takes")
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--min-face", type=int, default=24, help="smallest face side (px) in a photo to train on")
    p.add_argument("--sizes", type=float, nargs=2, default=(60, 600), help="face sizes (px) the views are resized to")
    p.add_argument("--max-upscale", type=float, default=2.0, help="most a view may enlarge a face")
    p.add_argument("--pool", type=int, default=1500, help="most views kept")
    p.add_argument("--start-views", type=int, default=48, help="views made before the first step")
    p.add_argument("--new-views", type=int, default=1, help="fresh views added every step")
    p.add_argument(
        "--skip-folders",
        nargs="*",
        default=["identities"],
        help="photo folders not to train on: by default the identities the bench's pair tables judge",
    )
    p.add_argument("--packages", nargs="*", default=list(PACKAGE_PHOTOS), help="package photos to use")
    p.add_argument(
        "--val-photos",
        nargs="*",
        default=["astronaut", "grace_hopper", "detection/deepface_couple.jpg", "detection/linzaer_16.jpg"],
        help="photos (paths under --data, or package-photo names) never trained on: the validation set",
    )
    p.add_argument("--val-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export-only", action="store_true", help="export the run's last checkpoint and stop")
    p.add_argument(
        "--evaluate",
        type=Path,
        nargs="+",
        help="train nothing: print the validation of these weights (.safetensors files) on the run's validation views",
    )
    p.add_argument("--export", type=Path, default=REPO_WEIGHTS / WEIGHTS_FILE)


def photo_sets(args) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(training, validation) photos by name: every photo of --data except the skipped folders
    (the annotated detection photos included: the detection bench does not judge APF), plus
    the package photos; the --val-photos go to validation."""
    found = data.training_photos(args.data, tuple(args.skip_folders), keep_annotated=True)
    paths = {p.relative_to(args.data).as_posix(): p for p in found}
    for name in args.packages:
        if path := shipped_file(*PACKAGE_PHOTOS[name]):
            paths[name] = path
    photos = dict(zip(paths, data.load_tensors(list(paths.values()))))
    missing = set(args.val_photos) - set(photos)
    if missing:
        raise FileNotFoundError(f"validation photos not found: {', '.join(sorted(missing))}")
    val = {k: v for k, v in photos.items() if k in args.val_photos}
    return {k: v for k, v in photos.items() if k not in val}, val


def photo_faces(photos: dict[str, torch.Tensor], min_face: int) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """(photo name, photo, box) for every face at least `min_face` px."""
    out = []
    for name, photo in photos.items():
        for box in models.find_faces(photo.permute(1, 2, 0).numpy()).boxes:
            if min(box[2] - box[0], box[3] - box[1]) >= min_face:
                out.append((name, photo, box))
    return out


def _rotate(point: np.ndarray, centre: np.ndarray, degrees: float) -> np.ndarray:
    """Where torchvision's rotate(degrees) (counter-clockwise, about `centre`) moves a point."""
    t = math.radians(degrees)
    d = point - centre
    return centre + np.array([d[0] * math.cos(t) + d[1] * math.sin(t), -d[0] * math.sin(t) + d[1] * math.cos(t)])


def resized_face(photo: torch.Tensor, box: np.ndarray, size: float, rng=None, max_upscale: float = 2.0):
    """A window (3 face sides) around the face in `box`, resized (antialiased) so the face is
    `size` px across; with `rng`, also colour-jittered, rotated up to 20 degrees, mirrored half
    the time and JPEG-compressed (quality 40-95) 60% of the time. Returns (window (3, h, w)
    uint8, the face's box in it)."""
    from torchvision.transforms import v2

    side = max(box[2] - box[0], box[3] - box[1])
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    h, w = photo.shape[1:]
    x0, y0 = (max(0, int(c - 1.5 * side)) for c in centre)
    x1, y1 = min(w, int(centre[0] + 1.5 * side)), min(h, int(centre[1] + 1.5 * side))
    window, centre = photo[:, y0:y1, x0:x1], centre - (x0, y0)
    if rng is not None:
        window = v2.ColorJitter(0.3, 0.3, 0.3, 0.03)(window)
        if rng.random() < 0.05:
            window = v2.functional.rgb_to_grayscale(window, 3)
        angle = rng.uniform(-20, 20)
        middle = np.array([(window.shape[2] - 1) / 2, (window.shape[1] - 1) / 2])
        window = v2.functional.rotate(window, angle, interpolation=v2.InterpolationMode.BILINEAR)
        centre = _rotate(centre, middle, angle)
        if rng.random() < 0.5:
            window, centre = window.flip(-1), np.array([window.shape[2] - 1 - centre[0], centre[1]])
    scale = min(size / side, max_upscale)
    out = (round(window.shape[1] * scale), round(window.shape[2] * scale))
    window = F.interpolate(window[None].float(), size=out, mode="bilinear", antialias=True, align_corners=False)
    window = window[0].round().clamp(0, 255).byte()
    if rng is not None and rng.random() < 0.6:
        window = v2.functional.jpeg(window, int(rng.integers(40, 96)))
    c, half = centre * scale, side * scale / 2
    return window, np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def _jitter(rng: np.random.Generator, side: int) -> np.ndarray:
    """A random similarity of a working crop about its centre (3x3, crop -> crop): the
    alignment of a real photo is never exact."""
    s = 1 + rng.uniform(-0.05, 0.05)
    t = math.radians(rng.uniform(-4, 4))
    dx, dy = rng.uniform(-3, 3, 2) * side / CROP
    c = (side - 1) / 2
    rot = np.array([[s * math.cos(t), -s * math.sin(t), 0], [s * math.sin(t), s * math.cos(t), 0], [0, 0, 1.0]])
    to_c, back = (
        np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]]),
        np.array([[1, 0, c + dx], [0, 1, c + dy], [0, 0, 1.0]]),
    )
    return back @ rot @ to_c


def _landmarks(keys, crop: torch.Tensor, jitter: np.ndarray) -> dict[str, np.ndarray]:
    """Each recogniser's landmarks in a view: dlib's own predictor for dlib's networks, the
    (jittered) ArcFace template for the others."""
    tpl = crop_points(crop.shape[-1])
    moved = (np.linalg.inv(jitter) @ np.c_[tpl, np.ones(len(tpl))].T).T[:, :2]
    lo, hi = moved.min(0), moved.max(0)
    side = hi - lo
    box = np.array([lo[0] - 0.6 * side[0], lo[1] - 1.0 * side[1], hi[0] + 0.6 * side[0], hi[1] + 0.5 * side[1]])
    pixels = np.ascontiguousarray(crop.permute(1, 2, 0).numpy())
    return {k: (_dlib_landmarks()(pixels, box) if k.startswith("dlib") else moved) for k in keys}


@functools.cache
def _dlib_landmarks():
    from faceshield.models.dlib_models import DlibLandmarks

    return DlibLandmarks()


class Views:
    """Makes training and validation samples: the working crop of a face as the protection cuts
    it, each recogniser's landmarks and clean embedding, and the device's part."""

    def __init__(self, args, keys):
        self.args = args
        self.probes = [models.load(k) for k in args.probe]
        self.recs = {k: models.load(k) for k in keys}
        self.generator = torch.Generator().manual_seed(args.seed)

    def sample(self, window: torch.Tensor, box: np.ndarray, jitter_rng=None) -> dict | None:
        pixels = np.ascontiguousarray(window.permute(1, 2, 0).numpy())
        a, side = crop_transform(five_points()(pixels, box)), CROP
        j = np.eye(3) if jitter_rng is None else _jitter(jitter_rng, side)
        crop = warp(window[None].float(), a @ j, side)[0].clamp(0, 255).byte()
        lm = _landmarks(self.recs, crop, j)
        x = crop[None].float() / 255
        own, grad = probe_gradient(self.probes, x, self.args.eps, self.args.probe_steps, self.generator)
        with torch.no_grad():
            e0 = {k: r.embed_tensor(x, lm[k]) for k, r in self.recs.items()}
        mask = crop_mask(pixels.shape, box, a @ j, self.args.face_margin, side)
        return {"crop": crop, "landmarks": lm, "e0": e0, "own": own.half(), "grad": grad.half(), "mask": mask.half()}

    def random(self, faces, rng) -> dict:
        _, photo, box = faces[rng.integers(len(faces))]
        size = math.exp(rng.uniform(*np.log(self.args.sizes)))
        window, face = resized_face(photo, box, size, rng, self.args.max_upscale)
        return self.sample(window, face, rng)

    def validation(self, faces) -> list[dict]:
        """Package portraits at VAL_SIZES, other photos' faces at their own size; no jitter."""
        out = []
        for name, photo, box in faces:
            for size in VAL_SIZES if name in PACKAGE_PHOTOS else (None,):
                if size is None:
                    out.append(self.sample(photo, box))
                else:
                    out.append(self.sample(*resized_face(photo, box, size, max_upscale=math.inf)))
        return out


def _cached(path: Path, build):
    if path.is_file():
        return torch.load(path, weights_only=False)
    value = build()
    torch.save(value, path)
    return value


def _apply(transfer, uap_logits, sample, eps):
    """The protected working crop: the three parts, clipped, rounded to grey levels."""
    x = sample["crop"][None].float() / 255
    side = x.shape[-1]
    delta = (
        sample["own"].float()
        + transfer_part(transfer, sample["grad"].float(), eps)
        + uap_part(torch.tanh(uap_logits), eps, side)
    ).clamp(-eps, eps) * sample["mask"].float()
    delta = delta + (delta.round() - delta).detach()  # the photo stores whole grey levels
    return (x + delta / 255).clamp(0, 1)


def _fooled(rec, e, e0) -> bool:
    return not rec.is_match(float(rec.score_tensor(e.detach(), e0)))


def _initialise(path: Path, transfer, uap_logits) -> None:
    trained = weights.load_trained(path)
    transfer.load_state_dict(trained.part("transfer"))
    with torch.no_grad():
        uap_logits.copy_(torch.atanh(trained.tensors["uap"].clamp(-0.999, 0.999)))


def evaluate(args) -> None:
    """--evaluate: each weights file's validation (shares fooled and how far beyond each
    threshold), on the run's cached validation views (made the same way when missing)."""
    keys = list(dict.fromkeys([*args.ensemble, *args.judges]))
    views = Views(args, keys)
    args.run.mkdir(parents=True, exist_ok=True)
    val = _cached(args.run / "val.pt", lambda: views.validation(photo_faces(photo_sets(args)[1], args.min_face)))
    print(f"{len(val)} validation views; fooled share (mean distance beyond the threshold, in thresholds)")
    print("| weights | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for path in args.evaluate:
        transfer = PerturbationGenerator(args.width, args.blocks)
        uap_logits = torch.nn.Parameter(torch.zeros(3, CROP, CROP))
        _initialise(path, transfer, uap_logits)
        out = validate(transfer, uap_logits, val, views.recs, args.eps)
        cells = [f"{out[f'val_fooled_{k}']:.0%} ({out[f'val_beyond_{k}']:+.3f})" for k in keys]
        print(f"| {path} | " + " | ".join(cells) + " |", flush=True)


def main(args) -> None:
    settings.apply_threads()
    if args.evaluate:
        return evaluate(args)
    data.seed_everything(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys([*args.ensemble, *args.judges]))
    train_photos, val_photos = photo_sets(args)
    faces = photo_faces(train_photos, args.min_face)
    print(f"{len(faces)} training faces in {len(train_photos)} photos")
    transfer = PerturbationGenerator(args.width, args.blocks)
    uap_logits = torch.nn.Parameter(torch.zeros(3, CROP, CROP))
    if args.init and not args.resume:
        _initialise(args.init, transfer, uap_logits)
        print(f"initialised from {args.init}")
    opt = torch.optim.Adam(
        [{"params": transfer.parameters(), "lr": args.lr}, {"params": [uap_logits], "lr": args.lr * 10}]
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    run = Run(
        args.run, {"transfer": transfer, "opt": opt, "uap": _ParamHolder(uap_logits), "schedule": schedule}, args.resume
    )
    if args.export_only:
        export(args, transfer, uap_logits, len(faces), run.step)
        return
    views = Views(args, keys)
    val = _cached(args.run / "val.pt", lambda: views.validation(photo_faces(val_photos, args.min_face)))
    print(f"{len(val)} validation views from {', '.join(val_photos)}")
    rng = np.random.default_rng([args.seed, run.step])  # a resumed run makes new views
    pool = [views.random(faces, rng) for _ in tqdm(range(args.start_views), desc="first views")]
    recs = views.recs
    if run.step == 0:
        run.log(**validate(transfer, uap_logits, val, recs, args.eps))
    bar = tqdm(total=args.steps, initial=run.step, desc="apf")
    while run.step < args.steps:
        for _ in range(args.new_views):
            new = views.random(faces, rng)
            if len(pool) < args.pool:
                pool.append(new)
            else:
                pool[rng.integers(len(pool))] = new
        opt.zero_grad()
        total, fooled = 0.0, {k: [] for k in args.ensemble}
        for i in rng.integers(len(pool), size=args.batch):
            sample = pool[i]
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
        run.log(loss=total, pool=len(pool), **rates)
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
    export(args, transfer, uap_logits, len(faces), run.step)


@torch.no_grad()
def validate(transfer, uap_logits, val, recs, eps) -> dict:
    """Share of held-out views each recogniser no longer matches (ensemble and judges), and how
    far beyond its threshold each is on average (in units of the threshold; > 0: no match), the
    continuous figure that moves before a binary share does."""
    fooled, beyond = {k: [] for k in recs}, {k: [] for k in recs}
    for sample in val:
        x_adv = _apply(transfer, uap_logits, sample, eps)
        for k, rec in recs.items():
            e = rec.embed_tensor(x_adv, sample["landmarks"][k])
            fooled[k].append(_fooled(rec, e, sample["e0"][k]))
            s = float(rec.score_tensor(e, sample["e0"][k])) / rec.threshold
            beyond[k].append(s - 1 if rec.metric == "euclidean" else 1 - s)
    return {f"val_fooled_{k}": np.mean(v) for k, v in fooled.items()} | {
        f"val_beyond_{k}": round(float(np.mean(v)), 4) for k, v in beyond.items()
    }


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
            "face_margin": args.face_margin,
            "steps": steps,
            "batch": args.batch,
            "seed": args.seed,
            "faces": faces,
            "sizes": f"{args.sizes[0]:g}-{args.sizes[1]:g} px",
            "init": str(args.init or ""),
            "data": "faceshield training photos and package photos "
            f"({', '.join(args.packages)}); skipped: {', '.join(args.skip_folders) or 'none'}; "
            f"validation only: {', '.join(args.val_photos)}",
        },
    )
    print(f"wrote {args.export}")


class _ParamHolder(torch.nn.Module):
    """Lets Run checkpoint a bare parameter like a module."""

    def __init__(self, param: torch.nn.Parameter):
        super().__init__()
        self.param = param
