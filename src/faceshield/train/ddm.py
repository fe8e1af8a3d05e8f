"""Train DDM's encryption model (protections/ddm.py): G_e = (encrypt, decrypt) and D.

DDM's collaborative scheme (arXiv 1811.07335): D is trained to tell reconstructed faces
(label 1) from encrypted ones (label 0), and the encryption model produces both kinds so
as to *maximise* D's recognition rate, the same objective as D's; plus an L1 reconstruction
term so that the encrypted crop keeps what the authorised decryption needs. The encrypted
domain is pushed as far from the face domain as D can see.

Two estimates of the discrepancy, both shared by D and G_e as the paper asks:
- "bce": the paper's recognition rate (binary cross-entropy). It saturates: once D tells the
  two kinds apart (a colour shift is enough, within ~150 steps), G_e gets no more push and
  the encrypted face keeps its layout.
- "wasserstein": the Kantorovich-Rubinstein estimate E[D(reconstructed)] - E[D(encrypted)]
  with a gradient penalty keeping D 1-Lipschitz (Gulrajani et al. 2017). It is a distance
  between the two distributions that does not saturate, so G_e keeps moving the encrypted
  domain away from faces for as long as it trains.

`--variant paper` is that objective alone (weights/ddm-paper.safetensors). `--variant identity`
(weights/ddm.safetensors) adds what removes identity as recognisers see it, for the
recognisers of `--recognisers` (the others are judges it never trained against):
- "away": each recogniser's embedding of the encrypted face is pushed past its match
  threshold (by `--away-margin`) from the original face's (Recogniser.dodge_loss);
- "gap": each step encrypts two random views (crop, scale, colour; flipped or not) of each
  of several faces; the mean similarity of two encryptions of one face is pushed down to the
  mean similarity of encryptions of different faces (the attacker who knows the protection
  compares encrypted with encrypted: two photos of one person should not match any more than
  two people do);
- a fidelity bound: the encrypted crop's PSNR against the original is held at or above
  `--target-psnr` (a hinge on each crop's mean squared error), so the change stays smaller
  than blurring or pixelating the face;
and both networks are residual (they start as the identity map). The reconstruction term
keeps the key: the decryption network is trained to undo every encryption.
The landmarks each recogniser aligns to are found once per training crop (and its mirror
image), on the clean crop, and moved with each view's crop and scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from faceshield import settings
from faceshield.protections.ddm import CROP, VARIANTS, CodecNet, Discriminator
from faceshield.train import data
from faceshield.train.checkpoint import Run, export_safetensors
from faceshield.weights import REPO_WEIGHTS

# What each variant defaults to where they differ (the flags' defaults are None)
DEFAULTS = {
    "paper": {"reconstruction_weight": 300.0, "steps": 1200, "discrepancy_weight": 1.0},
    "identity": {"reconstruction_weight": 100.0, "steps": 600, "discrepancy_weight": 0.1},
}


def add_arguments(p) -> None:
    p.add_argument("--variant", choices=list(VARIANTS), default="identity", help="see the module docstring")
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--run", type=Path, default=None, help="default runs/ddm-<variant>")
    p.add_argument("--steps", type=int, default=None, help="default: paper 1200, identity 600")
    p.add_argument("--batch", type=int, default=8, help="crops a step (identity: faces x --views)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--reconstruction-weight", type=float, default=None, help="default: paper 300, identity 100")
    p.add_argument(
        "--discrepancy",
        choices=["bce", "wasserstein"],
        default="wasserstein",
        help="how D and G_e measure the discrepancy they both maximise (see the module docstring)",
    )
    p.add_argument(
        "--discrepancy-weight",
        type=float,
        default=None,
        help="weight of the paper's term; default paper 1, identity 0.1",
    )
    p.add_argument("--gradient-penalty", type=float, default=10.0, help="wasserstein: weight of D's Lipschitz penalty")
    p.add_argument(
        "--disc-contrast",
        choices=["global", "local"],
        default="global",
        help="how D normalises contrast before judging (see protections.ddm.Discriminator)",
    )
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--blocks", type=int, default=4)
    # identity variant
    p.add_argument(
        "--recognisers",
        nargs="+",
        default=["facenet", "sface", "lightcnn"],
        help="identity: the recognisers trained against (dlib's ResNet, facelib's MobileNet and OpenFace stay judges "
        "it never saw)",
    )
    p.add_argument("--views", type=int, default=2, help="identity: random views of each face a step")
    p.add_argument("--identity-weight", type=float, default=1.0)
    p.add_argument("--gap-weight", type=float, default=1.0, help="identity: weight of the gap term beside 'away'")
    p.add_argument("--away-margin", type=float, default=0.2, help="identity: how far past each threshold (x threshold)")
    p.add_argument("--target-psnr", type=float, default=19.0, help="identity: lowest PSNR (dB) of an encrypted crop")
    p.add_argument("--fidelity-weight", type=float, default=300.0)
    p.add_argument("--init", type=Path, default=None, help="start G_e and G_d from this exported .safetensors")
    p.add_argument(
        "--skip-folders",
        nargs="*",
        default=["identities"],
        help="photo folders not to train on: by default the identity photos, which the bench's "
        "identity tables judge, so DDM is judged on faces it never saw",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", type=Path, default=None, help="default weights/<the variant's file>")


def _resolve(args) -> None:
    for name, value in DEFAULTS[args.variant].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.run = args.run or Path(f"runs/ddm-{args.variant}")
    args.export = args.export or REPO_WEIGHTS / VARIANTS[args.variant]


def face_crops_with_points(photos: list[torch.Tensor], size: int, keys, margin: float = 0.1) -> list[dict]:
    """Every face models.find_faces() sees, as the obfuscations cut it (box grown by `margin`),
    resized to size x size, and its mirror image; each with the landmarks the recognisers
    `keys` align to, found once on the clean crop: [{"crop": uint8 (3, size, size),
    "points": {key: (5, 2)}, "face": index of the face}]."""
    from faceshield import models

    # FivePoints (aligned recognisers) or DlibLandmarks (dlib's ResNet)
    finders = {key: models.load(key).landmarks for key in keys}
    out = []
    for face, (crop, box, (r0, r1, c0, c1)) in enumerate(data.face_regions(photos, size, margin)):
        sy, sx = size / (r1 - r0), size / (c1 - c0)
        inner = np.array([(box[0] - c0) * sx, (box[1] - r0) * sy, (box[2] - c0) * sx, (box[3] - r0) * sy])
        mirrored = np.array([size - inner[2], inner[1], size - inner[0], inner[3]])
        for image, b in ((crop, inner), (crop.flip(-1), mirrored)):
            view = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
            out.append({"crop": image, "points": {k: f(view, b) for k, f in finders.items()}, "face": face})
    return out


def random_view(item: dict, size: int, scale: tuple[float, float], jitter) -> tuple[torch.Tensor, dict]:
    """A random square crop (scale: its share of the area) resized to size x size, colour
    jittered; the landmarks moved with it. -> ((3, size, size) float in [0, 1], {key: points})."""
    crop = item["crop"]
    full = crop.shape[-1]
    side = int(round(full * np.sqrt(np.random.uniform(*scale))))
    ox, oy = np.random.randint(0, full - side + 1, 2)
    part = crop[None, :, oy : oy + side, ox : ox + side].float()
    x = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    x = jitter(x.round().clamp(0, 255).byte()).float() / 255.0
    f = size / side
    points = {k: (p + 0.5 - np.array([ox, oy])) * f - 0.5 for k, p in item["points"].items()}
    return x, points


def embed_batch(rec, x: torch.Tensor, points: list) -> torch.Tensor:
    """(N, D) embeddings of N crops (N, 3, H, W) in [0, 1], each at its own landmarks, with the
    graph: aligned recognisers run their network once on the stacked aligned crops."""
    from faceshield.models.alignment import AlignedRecogniser, align

    if isinstance(rec, AlignedRecogniser):
        chips = torch.cat([align(x[i : i + 1] * 255.0, points[i], rec.size, rec.zoom) for i in range(len(x))])
        return F.normalize(rec.net(chips), dim=1)
    return torch.stack([rec.embed_tensor(x[i : i + 1], points[i]) for i in range(len(x))])


def similarities(rec, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) similarity in units of the recogniser's threshold (higher: more alike)."""
    if rec.metric == "euclidean":
        return -torch.cdist(a, b) / rec.threshold
    return (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T) / rec.threshold


def identity_terms(rec, enc: torch.Tensor, clean: torch.Tensor, faces: torch.Tensor, margin: float) -> dict:
    """For one recogniser: 'away' (mean dodging loss of each encrypted crop from its original,
    in units of the threshold), 'gap' (mean similarity of two encryptions of one face minus
    that of different faces; 0 when the batch has no such pair) and 'fooled' (share of
    encrypted crops no longer matching their original)."""
    away = torch.stack([rec.dodge_loss(e, c, margin) for e, c in zip(enc, clean)]).mean() / rec.threshold
    s = similarities(rec, enc, enc)
    same = faces[:, None] == faces[None, :]
    off = ~torch.eye(len(faces), dtype=torch.bool)
    gap = s.new_zeros(())
    if (same & off).any() and (~same).any():
        gap = s[same & off].mean() - s[~same].mean()
    with torch.no_grad():
        scores = [float(rec.score_tensor(e, c)) for e, c in zip(enc, clean)]
        fooled = float(np.mean([not rec.is_match(v) for v in scores]))
    return {"away": away, "gap": gap, "fooled": fooled}


def main(args) -> None:
    from torchvision.transforms import v2

    from faceshield import models

    _resolve(args)
    settings.apply_threads()
    data.seed_everything(args.seed)
    photos = data.load_tensors(data.training_photos(args.data, tuple(args.skip_folders)))
    identity = args.variant == "identity"
    if identity:
        items = face_crops_with_points(photos, CROP + CROP // 4, args.recognisers)
        recs = {k: models.load(k) for k in args.recognisers}
        n_faces = len({it["face"] for it in items})
        by_face = {}
        for i, it in enumerate(items):
            by_face.setdefault(it["face"], []).append(i)
        print(f"{n_faces} faces ({len(items)} crops with their mirror images); trained against {', '.join(recs)}")
        jitter = v2.ColorJitter(0.3, 0.3, 0.3, 0.03)
    else:
        crops = data.face_crops(photos, size=CROP + CROP // 4)
        n_faces = len(crops)
        print(f"{len(crops)} face crops")
        augment = v2.Compose(
            [
                v2.RandomResizedCrop(CROP, scale=(0.6, 1.0), ratio=(0.9, 1.1), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.3, 0.3, 0.3, 0.03),
            ]
        )
    encrypt = CodecNet(args.width, args.blocks, residual=identity)
    decrypt = CodecNet(args.width, args.blocks, residual=identity)
    if args.init:
        from faceshield import weights

        trained = weights.load_trained(args.init)
        encrypt.load_state_dict(trained.part("encrypt"))
        decrypt.load_state_dict(trained.part("decrypt"))
        print(f"G_e and G_d start from {args.init}")
    disc = Discriminator(args.width, contrast=args.disc_contrast)
    opt_g = torch.optim.Adam(list(encrypt.parameters()) + list(decrypt.parameters()), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
    run = Run(
        args.run, {"encrypt": encrypt, "decrypt": decrypt, "disc": disc, "opt_g": opt_g, "opt_d": opt_d}, args.resume
    )
    mse_target = 10 ** (-args.target_psnr / 10)

    def recognition_loss(r, e):  # D's and G_e's shared objective: reconstructed -> high, encrypted -> low
        lr_, le = disc(r), disc(e)
        if args.discrepancy == "wasserstein":  # minus the W1 estimate; the drift term keeps D's values near 0
            return le.mean() - lr_.mean() + 1e-3 * (lr_**2).mean()
        return F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_)) + F.binary_cross_entropy_with_logits(
            le, torch.zeros_like(le)
        )

    def gradient_penalty(r, e):  # (|grad D| - 1)^2 on points between the two kinds
        t = torch.rand(len(r), 1, 1, 1)
        mix = (t * r + (1 - t) * e).requires_grad_(True)
        critic = disc(mix).mean(1)  # one value per image: the patch mean, as in the loss
        (grad,) = torch.autograd.grad(critic.sum(), mix, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def batch():
        if not identity:
            idx = torch.randint(len(crops), (args.batch,))
            return torch.stack([augment(crops[i]) for i in idx]).float() / 255.0, None, None
        per = max(1, args.batch // args.views)
        chosen = np.random.choice(n_faces, size=min(per, n_faces), replace=False)
        xs, points, faces = [], [], []
        for f in chosen:
            for _ in range(args.views):
                x, p = random_view(items[by_face[f][np.random.randint(len(by_face[f]))]], CROP, (0.6, 1.0), jitter)
                xs.append(x)
                points.append(p)
                faces.append(int(f))
        return torch.stack(xs), points, torch.tensor(faces)

    bar = tqdm(total=args.steps, initial=run.step, desc=f"ddm {args.variant}")
    while run.step < args.steps:
        x, points, faces = batch()
        e = encrypt(x)
        r = decrypt(e)
        logged = {}
        g_loss = torch.zeros(())
        if args.discrepancy_weight > 0:
            d_loss = recognition_loss(r.detach(), e.detach())
            if args.discrepancy == "wasserstein":
                d_loss = d_loss + args.gradient_penalty * gradient_penalty(r.detach(), e.detach())
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            discrepancy = recognition_loss(r, e)
            g_loss = g_loss + args.discrepancy_weight * discrepancy
            logged.update(d_loss=d_loss, discrepancy=discrepancy)
        rec = (r - x).abs().mean()
        g_loss = g_loss + args.reconstruction_weight * rec
        if identity:
            mse = ((e - x) ** 2).flatten(1).mean(1)
            fidelity = F.relu(mse - mse_target).mean()
            g_loss = g_loss + args.fidelity_weight * fidelity
            for k, model in recs.items():
                with torch.no_grad():
                    clean = embed_batch(model, x, [p[k] for p in points])
                terms = identity_terms(
                    model, embed_batch(model, e, [p[k] for p in points]), clean, faces, args.away_margin
                )
                g_loss = g_loss + args.identity_weight * (terms["away"] + args.gap_weight * F.relu(terms["gap"]))
                logged.update({f"{k}_away": terms["away"], f"{k}_gap": terms["gap"], f"{k}_fooled": terms["fooled"]})
            logged["encrypted_psnr"] = float((-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean())
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        run.step += 1
        with torch.no_grad():
            change = (e - x).abs().mean()
        run.log(g_loss=g_loss, reconstruction_l1=rec, encrypted_change_l1=change, **logged)
        bar.update(1)
        bar.set_postfix(g=f"{g_loss.item():.3f}", rec=f"{rec.item():.3f}", change=f"{float(change):.3f}")
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
    state = {f"encrypt.{k}": v for k, v in encrypt.state_dict().items()}
    state.update({f"decrypt.{k}": v for k, v in decrypt.state_dict().items()})
    holder = torch.nn.Module()
    holder.state_dict = lambda: state  # export_safetensors reads state_dict()
    meta = {
        "architecture": "DDM CodecNet x2 (encrypt, decrypt)",
        "variant": args.variant,
        "width": args.width,
        "blocks": args.blocks,
        "residual": identity,
        "crop": CROP,
        "steps": args.steps,
        "batch": args.batch,
        "reconstruction_weight": args.reconstruction_weight,
        "discrepancy": args.discrepancy,
        "discrepancy_weight": args.discrepancy_weight,
        "disc_contrast": args.disc_contrast,
        "seed": args.seed,
        "faces": n_faces,
        "data": "faceshield training photos (annotated detection photos held out; skipped: "
        f"{', '.join(args.skip_folders) or 'none'})",
    }
    if identity:
        meta.update(
            recognisers=",".join(args.recognisers),
            views=args.views,
            identity_weight=args.identity_weight,
            gap_weight=args.gap_weight,
            away_margin=args.away_margin,
            target_psnr=args.target_psnr,
            fidelity_weight=args.fidelity_weight,
            init=str(args.init or ""),
        )
    export_safetensors(holder, args.export, meta)
    print(f"wrote {args.export}")
