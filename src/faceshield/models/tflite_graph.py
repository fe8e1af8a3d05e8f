"""Run a float TFLite graph as a differentiable PyTorch module.

The .tflite flatbuffer is read with the `tflite` package (generated flatbuffers accessors, no
TensorFlow). Constant tensors (float32, or float16 behind DEQUANTIZE ops) become float32
buffers; the operators are executed in file order. 4-D activations are kept NCHW, so convolution
kernels are transposed once at load; RESHAPE goes back to TFLite's NHWC order first, because
the graph's reshapes flatten NHWC memory. Only the operators BlazeFace and facelib's MobileNet
recogniser use are implemented: any other one is refused when the graph is loaded, not
silently mis-run.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "INT64": np.int64}
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}


def _enum_names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _options(op, cls):
    import tflite

    table = op.BuiltinOptions()
    opts = getattr(tflite, cls)()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding: the extra pixel, if any, goes after (bottom/right)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _activation(x: torch.Tensor, code: int) -> torch.Tensor:
    # TFLite ActivationFunctionType: 0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6
    if code == 0:
        return x
    if code == 1:
        return F.relu(x)
    if code == 2:
        return x.clamp(-1, 1)
    if code == 3:
        return x.clamp(0, 6)
    raise ValueError(f"unsupported fused activation {code}")


class TFLiteGraph(torch.nn.Module):
    """forward(x) with x NCHW float -> {output tensor name: tensor in TFLite's layout}
    (4-D outputs NHWC, as the interpreter returns them)."""

    SUPPORTED = {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "RELU",
        "PAD",
        "MAX_POOL_2D",
        "RESHAPE",
        "CONCATENATION",
        "RESIZE_BILINEAR",
        "DEQUANTIZE",
        "SUB",
        "MUL",
        "MEAN",
        "FULLY_CONNECTED",
    }

    def __init__(self, data: bytes):
        super().__init__()
        import tflite

        model = tflite.Model.GetRootAsModel(data, 0)
        graph = model.Subgraphs(0)
        op_names = _enum_names(tflite.BuiltinOperator)
        type_names = _enum_names(tflite.TensorType)
        tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
        self.names = [t.Name().decode() for t in tensors]

        consts: dict[int, np.ndarray] = {}
        for i, t in enumerate(tensors):
            buf = model.Buffers(t.Buffer()).DataAsNumpy()
            if isinstance(buf, np.ndarray) and buf.size:
                dtype = _NP_TYPES[type_names[t.Type()]]
                consts[i] = np.frombuffer(buf.tobytes(), dtype).reshape(t.ShapeAsNumpy())

        self.ops: list[tuple] = []
        self.params = torch.nn.ParameterDict()  # frozen; named by op index for state_dict()
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            kind = op_names[model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()]
            if kind not in self.SUPPORTED:
                raise NotImplementedError(f"TFLite operator {kind} is not supported")
            ins, outs = list(op.InputsAsNumpy()), list(op.OutputsAsNumpy())
            if kind == "DEQUANTIZE":  # float16 weights: fold into a float32 constant
                consts[outs[0]] = consts[ins[0]].astype(np.float32)
                continue
            spec: dict = {}
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                o = _options(op, "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions")
                w = consts[ins[1]].astype(np.float32)  # conv (O, kh, kw, I); depthwise (1, kh, kw, C)
                w = w.transpose(0, 3, 1, 2) if kind == "CONV_2D" else w.transpose(3, 0, 1, 2)
                self.params[f"w{k}"] = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(w)), False)
                if len(ins) > 2 and ins[2] >= 0:
                    self.params[f"b{k}"] = torch.nn.Parameter(
                        torch.from_numpy(consts[ins[2]].astype(np.float32)), False
                    )
                if kind == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() not in (0, 1):
                    raise NotImplementedError("depth multiplier > 1")
                spec = dict(
                    stride=(o.StrideH(), o.StrideW()),
                    same=o.Padding() == tflite.Padding.SAME,
                    act=o.FusedActivationFunction(),
                    dil=(o.DilationHFactor(), o.DilationWFactor()),
                )
            elif kind in ("ADD", "SUB", "MUL"):
                spec = dict(act=_options(op, kind.title() + "Options").FusedActivationFunction())
            elif kind == "MEAN":
                axes = consts[ins[1]].reshape(-1).tolist()
                spec = dict(axes=axes, keep=bool(_options(op, "ReducerOptions").KeepDims()))
            elif kind == "FULLY_CONNECTED":
                o = _options(op, "FullyConnectedOptions")
                if o.WeightsFormat() != 0 or o.KeepNumDims():
                    raise NotImplementedError("shuffled weights or kept dimensions in FULLY_CONNECTED")
                self.params[f"w{k}"] = torch.nn.Parameter(torch.from_numpy(consts[ins[1]].astype(np.float32)), False)
                if len(ins) > 2 and ins[2] >= 0:
                    self.params[f"b{k}"] = torch.nn.Parameter(
                        torch.from_numpy(consts[ins[2]].astype(np.float32)), False
                    )
                spec = dict(act=o.FusedActivationFunction())
            elif kind == "MAX_POOL_2D":
                o = _options(op, "Pool2DOptions")
                spec = dict(
                    kernel=(o.FilterHeight(), o.FilterWidth()),
                    stride=(o.StrideH(), o.StrideW()),
                    same=o.Padding() == tflite.Padding.SAME,
                    act=o.FusedActivationFunction(),
                )
            elif kind == "PAD":
                spec = dict(pads=consts[ins[1]].tolist())
            elif kind == "RESHAPE":
                spec = dict(shape=tensors[outs[0]].ShapeAsNumpy().tolist())
            elif kind == "CONCATENATION":
                o = _options(op, "ConcatenationOptions")
                spec = dict(axis=o.Axis(), act=o.FusedActivationFunction())
            elif kind == "RESIZE_BILINEAR":
                o = _options(op, "ResizeBilinearOptions")
                if not o.HalfPixelCenters() and not o.AlignCorners():
                    raise NotImplementedError("legacy (asymmetric) bilinear resize")
                spec = dict(size=consts[ins[1]].tolist(), align=bool(o.AlignCorners()))
            elementwise = kind in ("ADD", "SUB", "MUL")
            self.ops.append((k, kind, [i for i in ins if i not in consts or elementwise], outs, spec))
        for i in {i for op in self.ops for i in op[2] if i in consts}:  # e.g. a constant ADD term
            self.register_buffer(f"c{i}", torch.from_numpy(consts[i].astype(np.float32)), persistent=False)
        self.inputs = list(graph.InputsAsNumpy())
        self.outputs = list(graph.OutputsAsNumpy())

    def _value(self, env: dict, i: int) -> torch.Tensor:
        return env[i] if i in env else getattr(self, f"c{i}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        env = {self.inputs[0]: x}
        for k, kind, ins, outs, s in self.ops:
            a = self._value(env, ins[0])
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w, b = self.params[f"w{k}"], self.params[f"b{k}"] if f"b{k}" in self.params else None
                if s["same"]:
                    (top, bottom), (left, right) = (
                        _same_padding(a.shape[2 + d], (w.shape[2 + d] - 1) * s["dil"][d] + 1, s["stride"][d])
                        for d in (0, 1)
                    )
                    a = F.pad(a, (left, right, top, bottom))
                groups = a.shape[1] if kind == "DEPTHWISE_CONV_2D" else 1
                y = _activation(F.conv2d(a, w, b, s["stride"], 0, s["dil"], groups), s["act"])
            elif kind in ("ADD", "SUB", "MUL"):
                b = self._value(env, ins[1])
                if a.dim() == 4 and b.dim() == 1:  # a per-channel constant, NHWC-broadcast in TFLite
                    b = b.view(1, -1, 1, 1)
                y = a + b if kind == "ADD" else a - b if kind == "SUB" else a * b
                y = _activation(y, s["act"])
            elif kind == "MEAN":
                if a.dim() == 4 and sorted(s["axes"]) != [1, 2]:
                    raise NotImplementedError(f"MEAN over NHWC axes {s['axes']}")
                y = a.mean(dim=(2, 3) if a.dim() == 4 else s["axes"], keepdim=s["keep"])  # H, W in NCHW
            elif kind == "FULLY_CONNECTED":
                w, b = self.params[f"w{k}"], self.params[f"b{k}"] if f"b{k}" in self.params else None
                flat = a.permute(0, 2, 3, 1) if a.dim() == 4 else a  # TFLite flattens NHWC memory
                y = _activation(F.linear(flat.reshape(flat.shape[0], -1), w, b), s["act"])
            elif kind == "RELU":
                y = F.relu(a)
            elif kind == "PAD":  # paddings are (N, H, W, C) pairs; F.pad wants last dim first
                (n0, n1), (h0, h1), (w0, w1), (c0, c1) = s["pads"]
                y = F.pad(a, (w0, w1, h0, h1, c0, c1, n0, n1))
            elif kind == "MAX_POOL_2D":
                if s["same"]:
                    (top, bottom), (left, right) = (
                        _same_padding(a.shape[2 + d], s["kernel"][d], s["stride"][d]) for d in (0, 1)
                    )
                    a = F.pad(a, (left, right, top, bottom), value=float("-inf"))
                y = _activation(F.max_pool2d(a, s["kernel"], s["stride"]), s["act"])
            elif kind == "RESHAPE":
                y = (a.permute(0, 2, 3, 1) if a.dim() == 4 else a).reshape(s["shape"])
                if y.dim() == 4:
                    y = y.permute(0, 3, 1, 2)
            elif kind == "CONCATENATION":
                parts = [self._value(env, i) for i in ins]
                axis = _NHWC_TO_NCHW_AXIS[s["axis"]] if parts[0].dim() == 4 else s["axis"]
                y = _activation(torch.cat(parts, axis), s["act"])
            elif kind == "RESIZE_BILINEAR":
                y = F.interpolate(a, size=s["size"], mode="bilinear", align_corners=s["align"])
            env[outs[0]] = y
        return {self.names[i]: (env[i].permute(0, 2, 3, 1) if env[i].dim() == 4 else env[i]) for i in self.outputs}
