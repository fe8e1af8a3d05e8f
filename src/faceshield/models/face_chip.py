"""dlib's face chip (get_face_chip_details + extract_image_chip) redone differentiably.

The chip is a similarity transform of the photo fitted (least squares, Umeyama, as dlib's
find_similarity_transform) from dlib's 5-point template, grown by `padding`, to the face's
landmarks; pixels are sampled bilinearly with grid_sample, so gradients reach the photo.
Landmarks are fixed inputs (computed on the clean photo). When the face is much larger than
the chip, dlib first steps down its 5-tap Gaussian pyramid (pyramid_down<2>) until the chip's
footprint is no bigger than the chip; this does the same filter and coordinate mapping, without
dlib's 8-bit rounding between levels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.transform import SimilarityTransform

# dlib's template for its 5-point shape predictor (image_transforms/interpolation.h)
TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def chip_transform(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """3x3 matrix mapping chip pixel (x, y) to photo coordinates for 5 (x, y) landmarks.

    As dlib's chip_details: fit the similarity transform, keep its angle and scale, and span a
    rectangle centred on the chip centre's image whose sides are size*scale - 1 (dlib's
    centered_drect); chip pixels 0 and size-1 land on its edges.
    """
    chip_points = (padding + TEMPLATE_5) / (2 * padding + 1) * size
    tform = SimilarityTransform.from_estimate(chip_points, np.asarray(landmarks, np.float64))  # Umeyama
    if not tform or not np.isfinite(tform.params).all():
        raise ValueError("could not fit the face chip transform")
    a, b = tform.params[0, 0], tform.params[1, 0]
    scale, angle = float(np.hypot(a, b)), float(np.arctan2(b, a))
    cx, cy = tform.params[:2] @ np.array([size / 2, size / 2, 1.0])
    step = (size * scale - 1) / (size - 1)
    cos, sin = np.cos(angle) * step, np.sin(angle) * step
    centre = (size - 1) / 2
    return np.array(
        [[cos, -sin, cx - cos * centre + sin * centre], [sin, cos, cy - sin * centre - cos * centre], [0.0, 0.0, 1.0]]
    )


def _pyramid_down(img: torch.Tensor) -> torch.Tensor:
    """One level of dlib's pyramid_down<2>: 5x5 [1 4 6 4 1]^2/256 filter, every other pixel."""
    k = _GAUSS.to(img)
    c = img.shape[1]
    img = F.conv2d(img, (k / 16).view(1, 1, 1, 5).repeat(c, 1, 1, 1), stride=(1, 2), groups=c)
    img = F.conv2d(img, (k / 16).view(1, 1, 5, 1).repeat(c, 1, 1, 1), stride=(2, 1), groups=c)
    return img


def extract_chip(image: torch.Tensor, landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> torch.Tensor:
    """(1, C, H, W) float photo -> (1, C, size, size) chip, differentiable in the photo."""
    m = chip_transform(landmarks, size, padding)
    side = float(np.hypot(m[0, 0], m[1, 0])) * (size - 1) + 1  # the chip rectangle's side in the photo
    level = 0
    # dlib steps down its pyramid while one more step would still leave the rectangle larger
    # than the chip (drectangle area counts r - l + 1)
    while ((side - 1) / 2 + 1) ** 2 > size * size and min(image.shape[2:]) > 8:
        image = _pyramid_down(image)
        level += 1
        side = (side - 1) / 2 + 1
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(size * size, dtype=torch.float64)])
    photo = torch.from_numpy(m) @ pts  # (3, N) photo coordinates
    px, py = photo[0], photo[1]
    for _ in range(level):  # dlib's point_down for pyramid_down<2>
        px, py = px / 2 - 1.25, py / 2 - 0.75
    h, w = image.shape[2:]
    grid = torch.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], dim=1).view(1, size, size, 2)
    chip = F.grid_sample(image, grid.to(image), mode="bilinear", padding_mode="zeros", align_corners=True)
    # dlib leaves chip pixels that fall outside the photo black, and stores the chip as uint8
    # (truncating): both reproduced, the truncation with a straight-through gradient.
    inside = ((px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)).view(1, 1, size, size).to(chip)
    chip = chip * inside
    return chip + (chip.floor() - chip).detach()
