"""Models that exist only on the Hugging Face Hub, loaded from a pinned commit.

Their repos, files and commits are listed in weights/hub-pins.json; `scripts/pin_hub.py`
(online) records the commit of each. Offline, or unpinned, a model is simply unavailable
with the reason shown in the app ("unavailable offline"), never an error.
- yolo-face: a YOLOv8 face detector through ultralytics. Ultralytics .pt files are full
  pickles (arbitrary code on load), so they are only loaded from a pinned commit.
- facenet-vggface2: facenet-pytorch's InceptionResnetV1 (512-d) with its VGGFace2 weights,
  a state_dict loaded with weights_only=True; differentiable, so identity masks can attack it.
- arcface-auraface: an ArcFace-family ResNet-100 (AuraFace) in ONNX, converted with onnx2torch;
  differentiable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from faceshield.models.alignment import AlignedRecogniser
from faceshield.models.base import Detections, Detector
from faceshield.weights import REPO_WEIGHTS, HubFile, resolve

PINS_FILE = "hub-pins.json"


def pins() -> dict[str, dict]:
    return {k: v for k, v in json.loads((REPO_WEIGHTS / PINS_FILE).read_text()).items() if not k.startswith("_")}


def hub_file(key: str) -> Path:
    """The pinned file of `key`, from the Hub cache (offline: cache only)."""
    pin = pins()[key]
    if not pin.get("revision"):
        raise RuntimeError(
            f"{pin['repo_id']}/{pin['filename']} is not pinned to a commit yet (run scripts/pin_hub.py online)"
        )
    return resolve(HubFile(pin["repo_id"], pin["filename"], pin["revision"]))


class YoloFaceDetector(Detector):
    name = "YOLOv8 face (Hub)"
    threshold = 0.25

    def __init__(self):
        import os

        path = hub_file("yolo-face")  # first: no ultralytics import (it patches PIL) unless usable
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        self.model = YOLO(str(path))  # a pickle: only ever from the pinned commit
        self.note = f"black-box; ultralytics, confidence {self.threshold}"

    def detect(self, pixels: np.ndarray) -> Detections:
        result = self.model.predict(
            np.ascontiguousarray(pixels[:, :, ::-1]), conf=self.threshold, verbose=False, device="cpu"
        )[0]  # ultralytics takes numpy photos as BGR
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        return Detections(boxes.xyxy.cpu().numpy().astype(np.float32), boxes.conf.cpu().numpy().astype(np.float32))


class _Scaled(torch.nn.Module):
    """(x - shift) / scale in front of a network: each model's own input normalisation."""

    def __init__(self, net: torch.nn.Module, shift: float, scale: float):
        super().__init__()
        self.net, self.shift, self.scale = net, shift, scale

    def forward(self, x):
        return self.net((x - self.shift) / self.scale)


class FaceNetVGGFace2Recogniser(AlignedRecogniser):
    """facenet-pytorch's InceptionResnetV1 (VGGFace2): 160 px crops, (x - 127.5) / 128."""

    name = "FaceNet VGGFace2 (Hub)"
    size, zoom = 160, 0.8
    metric, threshold = "euclidean", 1.1
    note = "white-box; facenet-pytorch's VGGFace2 weights from the Hub; same person if distance < 1.1"

    def __init__(self):
        from facenet_pytorch import InceptionResnetV1

        net = InceptionResnetV1(pretrained=None, classify=False)
        state = torch.load(hub_file("facenet-vggface2"), map_location="cpu", weights_only=True)
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})  # no classifier
        super().__init__(_Scaled(net, 127.5, 128.0))


class ArcFaceRecogniser(AlignedRecogniser):
    """An insightface-format ArcFace ONNX (AuraFace): ArcFace 112 px alignment, RGB,
    (x - 127.5) / 127.5; same person if cosine >= 0.3 (a common insightface threshold)."""

    name = "ArcFace / AuraFace (Hub)"
    threshold = 0.3
    note = "white-box; ArcFace-family ONNX from the Hub via onnx2torch; same person if cosine >= 0.3"

    def __init__(self):
        import onnx
        from onnx2torch import convert

        super().__init__(_Scaled(convert(onnx.load(str(hub_file("arcface-auraface")))), 127.5, 127.5))
