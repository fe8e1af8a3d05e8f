"""The PyTorch port of dlib's ResNet descriptor equals native dlib on real photos."""

import numpy as np
import pytest
import torch

from faceshield import models
from faceshield.models.dlib_models import _model_file
from faceshield.models.dlib_resnet import DlibResNet, load_converted


@pytest.fixture(scope="module")
def port():
    return models.load("dlib-resnet-torch")


@pytest.fixture(scope="module")
def native():
    return models.load("dlib-resnet")


def _faces(photos):
    mtcnn = models.load("mtcnn")
    for name in ("astronaut", "bus", "zidane"):
        for box in mtcnn.detect(photos[name]).boxes:
            yield name, photos[name], box


def test_network_equals_native_on_native_chips(photos, port, native):
    import dlib

    for name, pixels, box in _faces(photos):
        shape = native.landmarks.shape(pixels, box)
        chip = dlib.get_face_chip(pixels, shape, 150, 0.25)
        expected = np.asarray(native.model.compute_face_descriptor(chip))
        with torch.no_grad():
            got = port.net(torch.from_numpy(chip.astype(np.float32)).permute(2, 0, 1)[None])[0].numpy()
        assert np.abs(got - expected).max() <= 1e-4, name


def test_differentiable_alignment_matches_native(photos, port, native):
    worst = max(np.abs(port.embed(p, b) - native.embed(p, b)).max() for _, p, b in _faces(photos))
    assert worst <= 1e-3


def test_gradient_reaches_the_photo(photos, port):
    pixels = photos["astronaut"]
    box = models.load("mtcnn").detect(pixels).boxes[0]
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float().div(255).requires_grad_()
    port.embed_tensor(x, port.landmarks(pixels, box)).norm().backward()
    grad = x.grad[0].abs().sum(0)
    assert grad.sum() > 0
    x1, y1, x2, y2 = box.astype(int)
    inside = grad[max(0, y1 - 40) : y2 + 40, max(0, x1 - 40) : x2 + 40].sum()
    assert inside / grad.sum() > 0.99  # only the face chip's pixels matter


def test_conversion_cache_roundtrip(tmp_path):
    dat = _model_file("dlib_face_recognition_resnet_model_v1.dat")
    first = load_converted(dat, tmp_path / "resnet.safetensors")
    assert (tmp_path / "resnet.safetensors").is_file()
    second = load_converted(dat, tmp_path / "resnet.safetensors")  # from the cache this time
    probe = torch.rand(1, 3, 150, 150) * 255
    with torch.no_grad():
        assert torch.equal(first(probe), second(probe))


def test_wrong_file_is_rejected():
    with pytest.raises(ValueError, match="layer counts"):
        DlibResNet.from_dlib_file(open(_model_file("mmod_human_face_detector.dat"), "rb").read())
