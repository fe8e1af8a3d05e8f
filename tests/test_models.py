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


def test_mtcnn_area_crops_equal_facenet_pytorchs_resampling():
    """The summed-area-table crops are F.interpolate(mode="area") of each crop (what
    facenet-pytorch's imresample does), values and gradients, small and large crops alike."""
    import torch.nn.functional as F

    from faceshield.models.mtcnn import area_crops

    img = (torch.rand(1, 3, 120, 170, generator=torch.Generator().manual_seed(0)) * 255).requires_grad_()
    crops = [(0, 120, 0, 170), (10, 13, 5, 9), (20, 110, 40, 160), (3, 40, 7, 31), (50, 51, 60, 61)]
    for size in (24, 48):
        ours = area_crops(img, crops, size)
        theirs = torch.cat([F.interpolate(img[:, :, a:b, c:d], size=(size, size), mode="area") for a, b, c, d in crops])
        assert torch.allclose(ours, theirs, atol=1e-3)
        w = torch.randn_like(ours)
        (g1,) = torch.autograd.grad((ours * w).sum(), img)
        (g2,) = torch.autograd.grad((theirs * w).sum(), img)
        assert torch.allclose(g1, g2, atol=1e-3)


def test_mtcnn_surrogate_proposes_every_box_the_real_cascade_does(photos):
    """Every P-Net box facenet-pytorch's detect_face makes (generateBoundingBox: window corners
    floored to whole pixels, then the regression and rerec) is among face_loss's candidates:
    a box off by a fraction of a pixel was a crowd face the attack called hidden while the real
    detector still found it."""
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox, imresample, rerec

    det = models.load("mtcnn")
    pixels = photos["zidane"][::2, ::2]
    h, w = pixels.shape[:2]
    img = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float()
    ours, _ = det._proposals(img, torch.ones(h, w), det._taus()[0])
    with torch.no_grad():
        for scale in det._scales(h, w)[:4]:
            reg, probs = det.mtcnn.pnet((imresample(img, (int(h * scale + 1), int(w * scale + 1))) - 127.5) * 0.0078125)
            boxes, _ = generateBoundingBox(reg, probs[:, 1], scale, det.thresholds[0])
            bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            theirs = torch.stack(
                [
                    boxes[:, 0] + boxes[:, 5] * bw,
                    boxes[:, 1] + boxes[:, 6] * bh,
                    boxes[:, 2] + boxes[:, 7] * bw,
                    boxes[:, 3] + boxes[:, 8] * bh,
                    boxes[:, 4],
                ],
                1,
            )
            theirs = rerec(theirs)[:, :4]
            assert len(theirs) > 0
            gap = (theirs[:, None, :] - ours[None, :, :]).abs().amax(-1).amin(1)
            assert gap.max() < 1e-3, scale


def test_mtcnn_screening_by_chunks_keeps_live_candidates_and_misses_none(photos):
    """_screen judges P-Net's windows in chunks, the most confident first, and stops once it has
    enough live ones: what it returns is alive at R-Net and O-Net, as many as asked for when
    there are that many, and with room for all of them it returns exactly the live set."""
    det = models.load("mtcnn")
    pixels = photos["zidane"][::2, ::2]
    h, w = pixels.shape[:2]
    img = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float()
    region, tau = torch.ones(h, w), det._taus()
    with torch.no_grad():
        boxes, _ = det._proposals(img, region, tau[0])
        m_r, reg_r = det._judge(det._rnet, img, boxes, 24)
        m_o, _ = det._judge(det._onet, img, det._refine(boxes, reg_r), 48)
    alive = {tuple(b) for b in boxes[(m_r > tau[1]) & (m_o > tau[2])].tolist()}
    assert len(alive) > det.max_candidates  # a photo that needs more than one chunk's worth
    few, _ = det._screen(img, region, tau)
    assert len(few) == det.max_candidates and {tuple(b) for b in few.tolist()} <= alive
    every, _ = det._screen(img, region, tau, share=len(alive) // det.max_candidates + 1)
    assert {tuple(b) for b in every.tolist()} == alive


def test_mtcnn_attack_loss_screens_every_few_steps_and_confirms_zero(photos):
    """attack_loss: with a screening every step it is face_loss itself; a zero is only ever returned after a
    fresh screening (so the attack's "no candidate left" still means none)."""
    det = models.load("mtcnn")
    pixels = photos["astronaut"]
    region = torch.from_numpy(region_mask(pixels.shape[:2], det.detect(pixels).boxes))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float().div(255)
    assert det.attack_loss(every=1)(x, region).item() == pytest.approx(det.face_loss(x, region).item())
    # every 4 steps: a screening feeds four steps, so it keeps up to 4x the candidates, the most confident first
    loss = det.attack_loss(every=4)
    assert loss(x, region).item() >= det.face_loss(x, region).item()
    blank = torch.full((1, 3, 128, 128), 0.5)
    screened = det.attack_loss(every=4)
    assert screened(x[:, :, :128, :128], torch.ones(128, 128)).item() >= 0
    assert screened(blank, torch.ones(128, 128)).item() == 0.0  # cached boxes, then a fresh look


def test_mtcnn_attack_loss_says_when_a_face_is_surely_still_found(photos):
    """surely_found() (the attack then skips its check with the real detector) is true on a
    face the real MTCNN finds with confidence and false where no candidate is left; whenever
    it is true, the real detector does find a face in the region."""
    det = models.load("mtcnn")
    pixels = photos["astronaut"]
    boxes = det.detect(pixels).boxes
    region = torch.from_numpy(region_mask(pixels.shape[:2], boxes))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float().div(255)
    loss = det.attack_loss(every=4)
    loss(x, region)
    assert loss.surely_found() and len(boxes)
    # sign steps of a grey level down the loss: each time it says "surely", the real one agrees
    grey = x * 255
    delta = torch.zeros_like(grey, requires_grad=True)
    claims = 0
    for _ in range(30):
        adv = (grey + delta).clamp(0, 255)
        value = loss(adv / 255, region)
        if loss.surely_found():
            claims += 1
            assert len(det.detect(adv.detach()[0].permute(1, 2, 0).byte().numpy()))
        if value.item() == 0:
            break
        (grad,) = torch.autograd.grad(value, delta)
        with torch.no_grad():
            delta -= grad.sign() * region
            delta.clamp_(-12, 12)
    assert value.item() == 0 and claims >= 3  # it got there, and it claimed on the way
    assert not models.Detector.attack_loss(det, 1).surely_found()  # the generic loss never claims
    blank = det.attack_loss(every=4)
    assert blank(torch.full((1, 3, 128, 128), 0.5), torch.ones(128, 128)).item() == 0.0
    assert not blank.surely_found()
