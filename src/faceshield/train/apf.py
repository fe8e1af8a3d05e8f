"""Train APF's server part and universal perturbation (protections/apf.py).

Data: every face of the training photos, aligned into APF's 192 px crop. Each step, for a
batch of crops (colour-jittered): the probe's image-specific gradient (SFace, on the "end"),
the transfer network's perturbation from it, plus the universal perturbation, clipped to the
budget; the loss is the dodging loss (Recogniser.dodge_loss, the one TIP-IM uses) of every
recogniser of the ensemble on the perturbed crop. The transfer network and the universal
perturbation are trained together: the universal part learns what works on every face, the
transfer part what the gradient of this face adds to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from faceshield import models, settings
from faceshield.models.alignment import FivePoints, warp
from faceshield.protections.apf import (
    CROP,
    PROBE,
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
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--eps", type=float, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.5, help="dodging margin beyond each threshold")
    p.add_argument("--ensemble", nargs="+", default=["dlib-resnet-torch", "facenet", "sface"])
    p.add_argument("--probe-steps", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", type=Path, default=REPO_WEIGHTS / WEIGHTS_FILE)


def aligned_crops(photos: list[torch.Tensor]) -> list[tuple[torch.Tensor, dict]]:
    """[(uint8 (3, CROP, CROP) crop, {recogniser key: landmarks in the crop})] for every face."""
    from faceshield.models.dlib_models import DlibLandmarks

    points, dlib_points, out = FivePoints(), DlibLandmarks(), []
    tpl = crop_points()
    # the face's box inside the crop, from where the template puts eyes and mouth
    lo, hi = tpl.min(0), tpl.max(0)
    side = hi - lo
    box = np.array([lo[0] - 0.6 * side[0], lo[1] - 1.0 * side[1], hi[0] + 0.6 * side[0], hi[1] + 0.5 * side[1]])
    for photo in photos:
        pixels = photo.permute(1, 2, 0).numpy()
        x = photo[None].float()
        for face in models.find_faces(pixels).boxes:
            if min(face[2] - face[0], face[3] - face[1]) < 40:
                continue
            crop = warp(x, crop_transform(points(pixels, face)), CROP)[0].round().clamp(0, 255).byte()
            crop_pixels = np.ascontiguousarray(crop.permute(1, 2, 0).numpy())
            out.append((crop, {"dlib-resnet-torch": dlib_points(crop_pixels, box), "facenet": tpl, "sface": tpl}))
    return out


def main(args) -> None:
    from torchvision.transforms import v2

    settings.apply_threads()
    data.seed_everything(args.seed)
    crops = aligned_crops(data.load_tensors(data.training_photos(args.data)))
    print(f"{len(crops)} aligned face crops")
    recs = {k: models.load(k) for k in args.ensemble}
    probe = models.load(PROBE)
    jitter = v2.ColorJitter(0.2, 0.2, 0.2, 0.02)  # geometry stays: the landmarks must hold
    transfer = PerturbationGenerator(args.width, args.blocks)
    uap_logits = torch.nn.Parameter(torch.zeros(3, CROP, CROP))
    opt = torch.optim.Adam(
        [{"params": transfer.parameters(), "lr": args.lr}, {"params": [uap_logits], "lr": args.lr * 10}]
    )
    run = Run(args.run, {"transfer": transfer, "opt": opt, "uap": _ParamHolder(uap_logits)}, args.resume)
    generator = torch.Generator().manual_seed(args.seed)
    bar = tqdm(total=args.steps, initial=run.step, desc="apf")
    while run.step < args.steps:
        opt.zero_grad()
        total, fooled = 0.0, []
        for i in torch.randint(len(crops), (args.batch,)).tolist():
            crop, landmarks = crops[i]
            x = jitter(crop)[None].float() / 255.0
            _, grad = probe_gradient(probe, x, args.eps, args.probe_steps, generator)
            delta = transfer(normalise_gradient(grad)) * args.eps + torch.tanh(uap_logits)[None] * args.eps
            x_adv = (x + delta.clamp(-args.eps, args.eps) / 255.0).clamp(0, 1)
            loss = 0.0
            for k, rec in recs.items():
                with torch.no_grad():
                    e0 = rec.embed_tensor(x, landmarks[k])
                e = rec.embed_tensor(x_adv, landmarks[k])
                loss = loss + rec.dodge_loss(e, e0, args.margin)
                fooled.append(not rec.is_match(float(rec.score_tensor(e.detach(), e0))))
            (loss / args.batch).backward()
            total += float(loss) / args.batch
        opt.step()
        run.step += 1
        run.log(loss=total, fooled=np.mean(fooled))
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", fooled=f"{np.mean(fooled):.0%}")
        if run.step % args.save_every == 0 or run.step == args.steps:
            run.save()
    bar.close()
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
            "probe": PROBE,
            "probe_steps": args.probe_steps,
            "ensemble": ",".join(args.ensemble),
            "margin": args.margin,
            "steps": args.steps,
            "batch": args.batch,
            "seed": args.seed,
            "faces": len(crops),
            "data": "faceshield training photos (annotated detection photos held out)",
        },
    )
    print(f"wrote {args.export}")


class _ParamHolder(torch.nn.Module):
    """Lets Run checkpoint a bare parameter like a module."""

    def __init__(self, param: torch.nn.Parameter):
        super().__init__()
        self.param = param
