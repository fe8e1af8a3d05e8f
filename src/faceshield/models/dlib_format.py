"""Reading dlib's serialized DNN files (.dat) with numpy, no dlib needed.

Format facts, from dlib's serialize.h, float_details.h and dnn/{core,layers,tensor}.h:
- integers: one control byte (low 4 bits: how many bytes follow, high bit: negative), then the
  magnitude in little-endian bytes;
- strings: an integer length, then the characters;
- floats (double): an integer mantissa then an integer exponent, value = m x 2^e;
- tensors: version, num_samples, k, nr, nc (integers), then the values as raw float32 LE;
- a network is written outermost layer first, each wrapper writing its sub-network before its
  own details, so the layers' own records appear in the file from the input side outwards.
  Tag and skip layers store no parameters: the topology comes from dlib's network definition
  (see dlib_resnet.py) and the shapes read here check it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def real(self) -> float:
        """dlib's portable float: an integer mantissa and an integer exponent (base 2)."""
        mantissa = self.int()
        return mantissa * 2.0 ** self.int()

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos : self.pos + size].decode("ascii")
        self.pos += size
        return text

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version not in (1, 2):
            raise ValueError(f"unexpected tensor version {version} at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += 4 * count
        return values.reshape(shape)


@dataclass
class Layer:
    kind: str  # "con", "affine", "fc"
    params: dict = field(default_factory=dict)


# Only layers with parameters are read; their version strings mark where each record starts.
_MARKER = re.compile(rb"\x01(\x05con_[4-6]|\x07affine_|\x08affine_2|\x07bn_con2|\x04fc_[23])")


def read_layers(data: bytes) -> list[Layer]:
    """The parameterised layers of a dlib network file, from the input side outwards."""
    layers = []
    for match in _MARKER.finditer(data):
        r = Reader(data, match.start())
        version = r.string()
        if version.startswith("con_"):
            params = r.tensor().reshape(-1)
            num_filters, nr, nc = r.int(), r.int(), r.int()
            stride, _ = r.int(), r.int()
            padding, _ = r.int(), r.int()
            weights = params[: params.size - num_filters]
            layers.append(
                Layer(
                    "con",
                    {
                        "weight": weights.reshape(num_filters, -1, nr, nc),
                        "bias": params[params.size - num_filters :],
                        "stride": stride,
                        "padding": padding,
                    },
                )
            )
        elif version == "bn_con2":  # a trained batch norm: folded into an affine layer
            params = r.tensor().reshape(-1)
            for _ in range(2):  # gamma and beta alias_tensors: version, 4 sizes
                [r.int() for _ in range(5)]
            r.tensor(), r.tensor()  # batch means / inverse stds of the last training batch
            running_means, running_variances = r.tensor().reshape(-1), r.tensor().reshape(-1)
            r.int(), r.int()  # num_updates, running_stats_window_size
            [r.real() for _ in range(4)]  # learning-rate and weight-decay multipliers
            eps = r.real()
            half = params.size // 2
            # dlib's affine_(const bn_&): gamma / sqrt(var + eps), beta - mean x that
            gamma = (params[:half] / np.sqrt(running_variances + eps)).astype(np.float32)
            layers.append(
                Layer("affine", {"gamma": gamma, "beta": (params[half:] - gamma * running_means).astype(np.float32)})
            )
        elif version.startswith("affine_"):
            params = r.tensor().reshape(-1)
            half = params.size // 2
            layers.append(Layer("affine", {"gamma": params[:half], "beta": params[half:]}))
        else:
            num_outputs, num_inputs = r.int(), r.int()
            weights = r.tensor().reshape(-1)[: num_inputs * num_outputs]
            layers.append(Layer("fc", {"weight": weights.reshape(num_inputs, num_outputs)}))
    return layers


def copy_parameters(convs, affines, file_convs: list[dict], file_affines: list[dict]) -> None:
    """Copy a dlib file's con and affine parameters into torch Conv2d / Affine modules, in
    order, checking every convolution's shape, stride and padding against the file's."""
    import torch

    with torch.no_grad():
        for conv, p in zip(convs, file_convs, strict=True):
            if p["weight"].shape != tuple(conv.weight.shape) or (p["stride"], p["padding"]) != (
                conv.stride[0],
                conv.padding[0],
            ):
                raise ValueError(
                    f"conv mismatch: file {p['weight'].shape} stride {p['stride']} "
                    f"padding {p['padding']} vs {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(torch.from_numpy(p["weight"]))
            conv.bias.copy_(torch.from_numpy(p["bias"]))
        for affine, p in zip(affines, file_affines, strict=True):
            affine.gamma.copy_(torch.from_numpy(p["gamma"]))
            affine.beta.copy_(torch.from_numpy(p["beta"]))
