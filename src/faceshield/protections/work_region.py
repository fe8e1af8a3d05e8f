"""Where a per-face attack works: the face's neighbourhood, at the recognisers' resolution.

Recognisers look at a face through a crop of 112-160 px. A perturbation optimised pixel by
pixel on a 1000 px face is sampled sparsely by that crop: most of it is never seen, the rest
is tied to one exact sampling grid and averages out as soon as another model (or a platform's
resize) samples the face differently. So the attack runs on a copy of the face's
neighbourhood scaled down (with antialiasing) until the face is about `face_px` across, and
the perturbation found there is up-sampled onto the photo: smooth at the scale recognisers
see, the same at every photo size, and a cost per face that does not grow with the photo.
Faces already smaller than `face_px` are worked on at their own resolution.

    region = WorkRegion.around(box, pixels.shape, face_px=160, margin=0.1)
    x0 = region.down(photo)                      # (1, 3, h, w) grey levels, the attack's image
    ... optimise delta (1, 3, h, w) with |delta| <= eps inside region.mask ...
    photo = region.paste(photo, delta)           # 8-bit photo with the change applied
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from faceshield.boxes import grow

ALIGN = 32  # the region's corner sits on this grid, so image pyramids (dlib's chips) keep their phase


@dataclass(frozen=True)
class WorkRegion:
    """One face's neighbourhood: photo rows r0:r1, columns c0:c1, worked on at `scale` (<= 1)
    work pixels per photo pixel; `mask` ((h, w) float32, work resolution) and `photo_mask`
    ((r1 - r0, c1 - c0), photo resolution) are 1 where the change may go (the face box grown
    by the protection's margin)."""

    r0: int
    r1: int
    c0: int
    c1: int
    scale: float
    mask: np.ndarray
    photo_mask: np.ndarray

    @classmethod
    def around(
        cls, box, shape: tuple[int, ...], face_px: float = 160, margin: float = 0.1, context: float = 1.0
    ) -> WorkRegion:
        """The region for an x1y1x2y2 face `box` in a photo of `shape`: the box grown by
        `context` x its size on every side (what the recognisers' crops read), its corner on
        the ALIGN grid; scaled so the face's longer side is `face_px` (no up-scaling; 0: the
        photo's own resolution)."""
        h, w = shape[:2]
        r0, r1, c0, c1 = grow(box, context, (h, w))
        r0, c0 = r0 // ALIGN * ALIGN, c0 // ALIGN * ALIGN
        side = float(max(box[2] - box[0], box[3] - box[1]))
        scale = min(1.0, face_px / side) if face_px and side > 0 else 1.0
        size = (max(1, round((r1 - r0) * scale)), max(1, round((c1 - c0) * scale)))
        photo_mask: np.ndarray = np.zeros((r1 - r0, c1 - c0), np.float32)
        m0, m1, n0, n1 = grow(box, margin, (h, w))
        photo_mask[m0 - r0 : m1 - r0, n0 - c0 : n1 - c0] = 1.0
        if scale == 1.0:
            mask = photo_mask
        else:  # the work pixels whose footprint lies mostly inside the face area
            small = F.interpolate(torch.from_numpy(photo_mask)[None, None], size=size, mode="area")[0, 0]
            mask = (small > 0.5).float().numpy()
        return cls(r0, r1, c0, c1, scale, mask, photo_mask)

    @property
    def size(self) -> tuple[int, int]:
        return self.mask.shape

    def crop(self, photo: torch.Tensor) -> torch.Tensor:
        """The region of a (1, C, H, W) photo at the photo's resolution."""
        return photo[:, :, self.r0 : self.r1, self.c0 : self.c1]

    def down(self, photo: torch.Tensor) -> torch.Tensor:
        """The region of a (1, C, H, W) photo at work resolution (antialiased)."""
        crop = self.crop(photo)
        if self.scale == 1.0:
            return crop.clone()
        return F.interpolate(crop, size=self.size, mode="bilinear", antialias=True, align_corners=False)

    def up(self, delta: torch.Tensor) -> torch.Tensor:
        """A work-resolution (1, C, h, w) change at the photo's resolution, inside the face area
        (bilinear, so |up(delta)| <= max |delta|)."""
        if self.scale != 1.0:
            delta = F.interpolate(delta, size=self.photo_mask.shape, mode="bilinear", align_corners=False)
        return delta * torch.from_numpy(self.photo_mask).to(delta)

    def to_work(self, points: np.ndarray) -> np.ndarray:
        """Photo (x, y) points (landmarks) in work coordinates."""
        return (np.asarray(points, np.float64) - [self.c0, self.r0]) * self.scale

    def box_in_crop(self, box) -> np.ndarray:
        return np.asarray(box, np.float32) - np.array([self.c0, self.r0, self.c0, self.r0], np.float32)

    def protected_crop(self, photo: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The region of `photo` (grey levels) with `delta` applied, as the 8-bit file holds it."""
        with torch.no_grad():
            return torch.round(self.crop(photo) + self.up(delta)).clamp(0, 255)

    def paste(self, photo: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """A copy of `photo` (1, 3, H, W grey levels) with `delta` applied to the region, rounded."""
        out = photo.clone()
        out[:, :, self.r0 : self.r1, self.c0 : self.c1] = self.protected_crop(photo, delta)
        return out
