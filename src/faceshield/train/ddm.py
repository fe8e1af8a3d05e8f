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

The defaults are the run shipped as weights/ddm.safetensors (see its model card for the runs
tried and how each was measured).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from faceshield import settings
from faceshield.protections.ddm import CROP, WEIGHTS_FILE, CodecNet, Discriminator
from faceshield.train import data
from faceshield.train.checkpoint import Run, export_safetensors
from faceshield.weights import REPO_WEIGHTS


def add_arguments(p) -> None:
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--run", type=Path, default=Path("runs/ddm"))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--reconstruction-weight", type=float, default=300.0)
    p.add_argument(
        "--discrepancy",
        choices=["bce", "wasserstein"],
        default="wasserstein",
        help="how D and G_e measure the discrepancy they both maximise (see the module docstring)",
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
    p.add_argument(
        "--skip-folders",
        nargs="*",
        default=["identities"],
        help="photo folders not to train on: by default the identity photos, which the bench's "
        "identity tables judge, so DDM is judged on faces it never saw",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", type=Path, default=REPO_WEIGHTS / WEIGHTS_FILE)


def main(args) -> None:
    from torchvision.transforms import v2

    settings.apply_threads()
    data.seed_everything(args.seed)
    crops = data.face_crops(
        data.load_tensors(data.training_photos(args.data, tuple(args.skip_folders))), size=CROP + CROP // 4
    )
    print(f"{len(crops)} face crops")
    augment = v2.Compose(
        [
            v2.RandomResizedCrop(CROP, scale=(0.6, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.3, 0.3, 0.3, 0.03),
        ]
    )
    encrypt, decrypt = CodecNet(args.width, args.blocks), CodecNet(args.width, args.blocks)
    disc = Discriminator(args.width, contrast=args.disc_contrast)
    opt_g = torch.optim.Adam(list(encrypt.parameters()) + list(decrypt.parameters()), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
    run = Run(
        args.run, {"encrypt": encrypt, "decrypt": decrypt, "disc": disc, "opt_g": opt_g, "opt_d": opt_d}, args.resume
    )

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

    bar = tqdm(total=args.steps, initial=run.step, desc="ddm")
    while run.step < args.steps:
        idx = torch.randint(len(crops), (args.batch,))
        x = torch.stack([augment(crops[i]) for i in idx]).float() / 255.0
        e = encrypt(x)
        r = decrypt(e)
        d_loss = recognition_loss(r.detach(), e.detach())
        if args.discrepancy == "wasserstein":
            d_loss = d_loss + args.gradient_penalty * gradient_penalty(r.detach(), e.detach())
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        rec = (r - x).abs().mean()
        g_loss = recognition_loss(r, e) + args.reconstruction_weight * rec
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        run.step += 1
        with torch.no_grad():
            change = (e - x).abs().mean()
        run.log(d_loss=d_loss, g_loss=g_loss, reconstruction_l1=rec, encrypted_change_l1=change)
        bar.update(1)
        bar.set_postfix(d=f"{d_loss.item():.3f}", rec=f"{rec.item():.3f}", change=f"{float(change):.3f}")
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
    state = {f"encrypt.{k}": v for k, v in encrypt.state_dict().items()}
    state.update({f"decrypt.{k}": v for k, v in decrypt.state_dict().items()})
    holder = torch.nn.Module()
    holder.state_dict = lambda: state  # export_safetensors reads state_dict()
    export_safetensors(
        holder,
        args.export,
        {
            "architecture": "DDM CodecNet x2 (encrypt, decrypt)",
            "width": args.width,
            "blocks": args.blocks,
            "crop": CROP,
            "steps": args.steps,
            "batch": args.batch,
            "reconstruction_weight": args.reconstruction_weight,
            "discrepancy": args.discrepancy,
            "disc_contrast": args.disc_contrast,
            "seed": args.seed,
            "faces": len(crops),
            "data": "faceshield training photos (annotated detection photos held out; skipped: "
            f"{', '.join(args.skip_folders) or 'none'})",
        },
    )
    print(f"wrote {args.export}")
