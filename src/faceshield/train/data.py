"""Training photos and their augmentation, shared by every trainer.

Photos come from a folder laid out like ../shared/data/faces (identities/<person>/*.jpg,
detection/*.jpg with detection/boxes.json). The annotated detection photos are held out:
they are what the bench judges. Augmentation is torchvision's transforms.v2 (random
resized crops, flips, colour jitter, JPEG re-compression), not hand-written.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from faceshield.images import load_image


def held_out(root: Path) -> set[str]:
    """Names of the annotated detection photos (the evaluation set)."""
    boxes = root / "detection" / "boxes.json"
    return set(json.loads(boxes.read_text())) if boxes.is_file() else set()


def training_photos(root: Path, skip_folders: tuple[str, ...] = (), keep_annotated: bool = False) -> list[Path]:
    """Every photo under `root` except the held-out evaluation photos (unless `keep_annotated`:
    a trainer whose protection the detection bench does not judge may use them) and those
    under `skip_folders` (relative to root), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no training data at {root}")
    skip = set() if keep_annotated else held_out(root)
    skipped = [root / f for f in skip_folders]
    photos = sorted(
        p for p in root.rglob("*.jpg") if p.name not in skip and not any(p.is_relative_to(f) for f in skipped)
    )
    if not photos:
        raise FileNotFoundError(f"no .jpg photos under {root}")
    return photos


def load_tensors(paths: list[Path]) -> list[torch.Tensor]:
    """(3, H, W) uint8 tensors, read through the app's own loader (EXIF, colour modes)."""
    return [torch.from_numpy(np.array(load_image(p).pixels)).permute(2, 0, 1) for p in paths]  # a writable copy


def augmenter(size: int, jpeg: bool = True):
    """A random view of a photo: crop (15-100% of its area) resized to size x size, flip,
    colour jitter and, half the time, JPEG re-compression. uint8 (3, H, W) in and out."""
    from torchvision.transforms import v2

    steps = [
        v2.RandomResizedCrop(size, scale=(0.15, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
    ]
    if jpeg:
        steps.append(v2.RandomApply([v2.JPEG((40, 95))], p=0.5))
    return v2.Compose(steps)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def face_regions(photos: list[torch.Tensor], size: int, margin: float = 0.1):
    """Every face models.find_faces() sees in the photos, as the obfuscations cut it (box grown
    by `margin` x its size per side), resized: yields (uint8 (3, size, size) crop, the face box,
    (r0, r1, c0, c1) the grown region in the photo). Regions under 24 px are skipped."""
    import torch.nn.functional as F

    from faceshield import models
    from faceshield.boxes import face_region

    for photo in photos:
        pixels = photo.permute(1, 2, 0).numpy()
        for box in models.find_faces(pixels).boxes:
            r0, r1, c0, c1 = face_region(box, pixels.shape, margin)
            if min(r1 - r0, c1 - c0) < 24:  # too small to teach anything at 128 px
                continue
            crop = photo[None, :, r0:r1, c0:c1].float()
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
            yield crop.round().clamp(0, 255).byte(), box, (r0, r1, c0, c1)


def face_crops(photos: list[torch.Tensor], size: int, margin: float = 0.1) -> list[torch.Tensor]:
    """(3, size, size) uint8 crops of every face models.find_faces() sees in the photos,
    each box grown by `margin` x its size per side (as the obfuscations grow it)."""
    return [crop for crop, _, _ in face_regions(photos, size, margin)]
