"""dlib's ResNet-29 face descriptor ("dlib_face_recognition_resnet_model_v1.dat") in PyTorch.

Topology, from dlib's examples/dnn_face_recognition_ex.cpp (input side first):
  con 7x7/2 (32) -> affine -> relu -> max_pool 3x3/2
  -> 3 x ares(32) -> ares_down(64) + 3 x ares(64) -> ares_down(128) + 2 x ares(128)
  -> ares_down(256) + 2 x ares(256) -> ares_down(256) -> avg_pool_everything -> fc_no_bias(128)
  block = con 3x3/stride -> affine -> relu -> con 3x3/1 -> affine
  ares = relu(block(x) + x); ares_down = relu(block_stride2(x) + avg_pool 2x2/2 (x))
Pitfalls dlib's own code sets: convolutions and pools with stride != 1 have no padding; the
residual add (add_prev) zero-fills the smaller input at the end of channels, bottom and right;
the input is (RGB - (122.782, 117.001, 104.298)) / 256 at 150x150; the descriptor is not
normalised (same person: Euclidean distance < 0.6).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from faceshield.models.base import Recogniser
from faceshield.models.dlib_format import copy_parameters, read_layers

MEAN_RGB = (122.782, 117.001, 104.298)
CHIP_SIZE = 150


class Affine(nn.Module):
    """dlib's affine layer: a frozen batch norm, y = gamma * x + beta per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv_a = nn.Conv2d(c_in, c_out, 3, stride, padding=1 if stride == 1 else 0)
        self.bn_a = Affine(c_out)
        self.conv_b = nn.Conv2d(c_out, c_out, 3, 1, padding=1)
        self.bn_b = Affine(c_out)

    def forward(self, x):
        y = self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x)))))
        shortcut = x if self.stride == 1 else F.avg_pool2d(x, 2, 2)
        return F.relu(_add_prev(y, shortcut))


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum at the larger size, the smaller zero-filled at the end."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    pad = lambda t: F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))  # noqa: E731
    return pad(a) + pad(b)


class DlibResNet(nn.Module):
    """(N, 3, 150, 150) RGB in [0, 255] -> (N, 128) dlib face descriptors."""

    LEVELS = (
        [(32, 1)] * 3
        + [(64, 2)]
        + [(64, 1)] * 3
        + [(128, 2)]
        + [(128, 1)] * 2
        + [(256, 2)]
        + [(256, 1)] * 2
        + [(256, 2)]
    )

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.bn1 = Affine(32)
        blocks, c_in = [], 32
        for c_out, stride in self.LEVELS:
            blocks.append(Block(c_in, c_out, stride))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, rgb255: torch.Tensor) -> torch.Tensor:
        x = (rgb255 - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_dlib_file(cls, data: bytes) -> DlibResNet:
        """Build from the bytes of dlib_face_recognition_resnet_model_v1.dat; the file's
        shapes, strides and paddings must agree with the topology above."""
        layers = read_layers(data)
        model = cls()
        convs = [model.conv1] + [c for b in model.blocks for c in (b.conv_a, b.conv_b)]
        affines = [model.bn1] + [a for b in model.blocks for a in (b.bn_a, b.bn_b)]
        file_convs = [layer.params for layer in layers if layer.kind == "con"]
        file_affines = [layer.params for layer in layers if layer.kind == "affine"]
        file_fc = [layer.params for layer in layers if layer.kind == "fc"]
        if (len(file_convs), len(file_affines), len(file_fc)) != (len(convs), len(affines), 1):
            raise ValueError(
                f"layer counts {len(file_convs)}/{len(file_affines)}/{len(file_fc)} "
                f"do not match dlib's ResNet-29 ({len(convs)}/{len(affines)}/1)"
            )
        copy_parameters(convs, affines, file_convs, file_affines)
        with torch.no_grad():
            model.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(file_fc[0]["weight"].T)))
        return model.eval()


class DlibResNetTorchRecogniser(Recogniser):
    """dlib's ResNet descriptor, differentiable: dlib's 5 landmarks (fixed), the face chip
    re-done with grid_sample (face_chip.py), and the ported network.

    embed(pixels, box) matches native dlib within ~1e-3 per descriptor value;
    embed_tensor(x, landmarks) takes (1, 3, H, W) in [0, 1] and keeps the graph for attacks.
    """

    name = "dlib ResNet (PyTorch port)"
    threshold = 0.6
    metric = "euclidean"
    differentiable = True
    note = "white-box port of dlib ResNet; same person if distance < 0.6"
    CACHE_NAME = "dlib_face_recognition_resnet_model_v1.safetensors"

    def __init__(self):
        from faceshield import settings
        from faceshield.models.dlib_models import DlibLandmarks, _model_file

        settings.apply_threads()
        self.landmarks = DlibLandmarks()
        self.net = load_converted(
            _model_file("dlib_face_recognition_resnet_model_v1.dat"), settings.CACHE_DIR / self.CACHE_NAME
        )
        for p in self.net.parameters():
            p.requires_grad_(False)

    def embed_tensor(self, x: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
        from faceshield.models.face_chip import extract_chip

        return self.net(extract_chip(x * 255.0, landmarks, CHIP_SIZE, 0.25))[0]

    def embed(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None] / 255.0
        with torch.no_grad():
            return self.embed_tensor(x, self.landmarks(pixels, box)).numpy()


def load_converted(dat_path, cache_path) -> DlibResNet:
    """The network from a safetensors cache, converting dlib's .dat into it on first use."""
    from pathlib import Path

    from faceshield.weights import cached_conversion

    return cached_conversion(
        cache_path, DlibResNet(), lambda: DlibResNet.from_dlib_file(Path(dat_path).read_bytes()), dat_path
    )
