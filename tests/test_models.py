"""The registry and the real offline models on real photos shipped by packages."""

import numpy as np
import pytest
import torch

from faceshield import models
from faceshield.protections import region_mask


def test_registry_lists_every_model_with_status():
    rows = {r["key"]: r for r in models.status()}
    assert {"mtcnn", "centerface", "dlib-hog", "dlib-cnn", "haar", "dlib-resnet", "facenet", "sface"} <= set(rows)
    offline = [k for k, spec in models.REGISTRY.items() if not spec.hub_only]
    assert all(rows[k]["available"] for k in offline), rows  # every packaged model works offline
    for key in set(rows) - set(offline):  # Hub-only: available from a cache, or say why not
        assert rows[key]["available"] or rows[key]["detail"].startswith("unavailable offline:")


def test_unknown_and_broken_models_report_reasons(monkeypatch):
    with pytest.raises(KeyError):
        models.load("no-such-model")
    broken = models.ModelSpec("broken", "detector", ".no_such_port:Detector", "nowhere", "n/a")
    monkeypatch.setitem(models.REGISTRY, "broken", broken)
    loaded, missing = models.available(["mtcnn", "broken"])
    assert list(loaded) == ["mtcnn"] and "No module named 'faceshield.models.no_such_port'" in missing["broken"]


@pytest.mark.parametrize("name,expected", [("astronaut", 1), ("bus", 2), ("zidane", 2)])
def test_mtcnn_finds_the_faces(photos, name, expected):
    found = models.load("mtcnn").detect(photos[name])
    assert len(found) >= expected


@pytest.mark.parametrize("key", ["dlib-hog", "haar"])
def test_black_box_detectors_find_the_astronaut(photos, key):
    found = models.load(key).detect(photos["astronaut"])
    assert len(found) >= 1
    assert found.boxes[:, 0].min() < 200 < found.boxes[:, 2].max()  # her face is around x = 180..270


def test_dlib_resnet_same_face_matches_and_different_faces_do_not(photos):
    rec = models.load("dlib-resnet")
    det = models.load("mtcnn")
    zidane = photos["zidane"]
    faces = det.detect(zidane)
    big = faces.boxes[np.argsort(-faces.scores)[:2]]
    a, b = rec.embed(zidane, big[0]), rec.embed(zidane, big[1])
    assert a.shape == (128,)
    assert rec.is_match(rec.score(a, rec.embed(zidane, big[0] + 2)))  # same face, shifted box
    assert not rec.is_match(rec.score(a, b))  # Zidane vs Ancelotti


def test_mtcnn_face_loss_is_differentiable_and_zero_without_faces(photos):
    det = models.load("mtcnn")
    pixels = photos["astronaut"]
    region = torch.from_numpy(region_mask(pixels.shape[:2], det.detect(pixels).boxes))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float().div(255).requires_grad_()
    loss = det.face_loss(x, region)
    loss.backward()
    assert loss.item() > 0 and x.grad.abs().sum() > 0
    blank = torch.full((1, 3, 128, 128), 0.5)
    assert det.face_loss(blank, torch.ones(128, 128)).item() == 0.0
