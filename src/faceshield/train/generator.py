"""Train the one-pass perturbation generator (protections/generator.py).

Each step: a random augmented view of a training photo, the generator's perturbation
(tanh x eps, rounded to whole grey levels with a straight-through gradient, as the app rounds
it), and the loss = the white-box detectors' own face_loss on the perturbed view (the one the
per-image attack descends; zero once no face is found) + distortion_weight x how far the
view's mean squared perturbation exceeds what --psnr-floor allows (a hinge: below it the
network may spend the budget where the faces are).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from faceshield import models, settings
from faceshield.protections.generator import WEIGHTS_FILE, PerturbationGenerator
from faceshield.train import data
from faceshield.train.checkpoint import Run, export_safetensors
from faceshield.weights import REPO_WEIGHTS


def add_arguments(p) -> None:
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--run", type=Path, default=Path("runs/generator"), help="checkpoints and log.jsonl")
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    p.add_argument("--batch", type=int, default=4, help="views per optimiser step")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 384], help="view sizes (px)")
    p.add_argument("--eps", type=float, default=8, help="budget in grey levels")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--distortion-weight", type=float, default=30.0)
    p.add_argument(
        "--psnr-floor",
        type=float,
        default=34.0,
        help="distortion is penalised only where a view's PSNR falls below this (dB)",
    )
    p.add_argument(
        "--pnet-weight",
        type=float,
        default=1.0,
        help="weight of MTCNN's dense P-Net term (0: R-Net/O-Net candidates only)",
    )
    p.add_argument("--detectors", nargs="+", default=["mtcnn"], help="white-box detectors to train against")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, help="start from the network weights of another run's last.pt")
    p.add_argument("--export", type=Path, default=REPO_WEIGHTS / WEIGHTS_FILE)


def main(args) -> None:
    settings.apply_threads()
    data.seed_everything(args.seed)
    photos = data.load_tensors(data.training_photos(args.data))
    detectors = [models.load(k) for k in args.detectors]
    for d in detectors:
        if hasattr(d, "proposal_weight"):  # the cached registry model; this process only trains
            d.proposal_weight = args.pnet_weight
    # the mean squared perturbation (grey levels^2) a view may have before it is penalised
    allowed_mse = 255.0**2 / 10 ** (args.psnr_floor / 10)
    net = PerturbationGenerator(args.width, args.blocks)
    if args.init and not args.resume:
        net.load_state_dict(torch.load(args.init, weights_only=False)["net"])
        print(f"initialised from {args.init}")
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.05)
    run = Run(args.run, {"net": net, "opt": opt, "sched": sched}, args.resume)
    augment = {s: data.augmenter(s) for s in args.sizes}
    print(f"{len(photos)} training photos; detectors {[d.name for d in detectors]}")

    bar = tqdm(total=args.steps, initial=run.step, desc="generator")
    while run.step < args.steps:
        opt.zero_grad()
        face_total = dist_total = mse_total = 0.0
        size = random.choice(args.sizes)
        for _ in range(args.batch):
            x = augment[size](random.choice(photos))[None].float() / 255.0
            g = net(x) * args.eps
            g = g + (torch.round(g) - g).detach()  # whole grey levels, as at protection time
            x_adv = (x + g / 255.0).clamp(0, 1)
            region = torch.ones(x.shape[2:])
            face = sum(d.face_loss(x_adv, region) for d in detectors)
            # hinge: free up to the PSNR floor, so the budget goes where the faces are
            dist = torch.relu(g.pow(2).mean() / allowed_mse - 1.0)
            ((face + args.distortion_weight * dist) / args.batch).backward()
            face_total += face.item() / args.batch
            dist_total += dist.item() / args.batch
            mse_total += float(g.detach().pow(2).mean()) / args.batch
        opt.step()
        sched.step()
        run.step += 1
        run.log(face_loss=face_total, distortion=dist_total, mse=mse_total, lr=sched.get_last_lr()[0])
        bar.update(1)
        bar.set_postfix(face=f"{face_total:.1f}", rms=f"{mse_total**0.5:.2f}")
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
    export_safetensors(
        net,
        args.export,
        {
            "architecture": "PerturbationGenerator",
            "width": args.width,
            "blocks": args.blocks,
            "eps": args.eps,
            "steps": args.steps,
            "batch": args.batch,
            "sizes": args.sizes,
            "detectors": ",".join(args.detectors),
            "distortion_weight": args.distortion_weight,
            "psnr_floor": args.psnr_floor,
            "pnet_weight": args.pnet_weight,
            "seed": args.seed,
            "init": str(args.init or ""),
            "data": "faceshield training photos (annotated detection photos held out)",
        },
    )
    print(f"wrote {args.export}")
