"""DDM encryption (protections/ddm.py) in its two shipped variants, and the parts of its
trainer (train/ddm.py) that the identity variant adds: views that move their landmarks,
batched embeddings, the identity terms. Images are made here or ship with packages."""

import numpy as np
import pytest
import torch

from faceshield import models, weights
from faceshield.boxes import face_region
from faceshield.metrics import image_quality
from faceshield.protections import build
from faceshield.protections.ddm import VARIANTS, DDMEncryption, load_codecs
from faceshield.protections.obfuscation import REGION_MARGIN
from faceshield.settings import InputError


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_encrypts_visibly_and_its_key_decrypts(photos, variant):
    """astronaut.png was never in training. The face region changes visibly, and the variant's
    own decryption network brings it closer to the original than the encrypted face is."""
    pixels = photos["astronaut"]
    protection = build("ddm", variant=variant)
    result = protection(pixels)
    assert len(result.faces) >= 1
    r0, r1, c0, c1 = face_region(
        result.faces.boxes[0], pixels.shape, REGION_MARGIN
    )  # the region the obfuscation covers
    region = (slice(r0, r1), slice(c0, c1))
    encrypted_q = image_quality(pixels[region], result.pixels[region])
    assert encrypted_q["psnr"] < 25  # a visible change (an invisible one would be an adversarial method)
    restored = protection.decrypt(np.ascontiguousarray(result.pixels[region]))
    assert image_quality(pixels[region], restored)["psnr"] > encrypted_q["psnr"] + 3


def test_variants_are_declared_and_load_their_own_files():
    """`variant` is a declared option with the two choices; each loads its own weights file
    (the identity variant's networks are residual, the paper's are not); others are refused."""
    assert DDMEncryption.param("variant").choices == tuple(VARIANTS) == ("identity", "paper")
    assert DDMEncryption().variant == "paper"  # the identity variant leaks more (model card)
    for variant, file in VARIANTS.items():
        meta = weights.load_trained(None, file).meta
        assert (meta.get("residual") == "True") == (variant == "identity"), variant
        encrypt, decrypt = load_codecs(None, variant)
        assert encrypt.residual == decrypt.residual == (variant == "identity")
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():  # two different trained encryptions
        assert (load_codecs(None, "identity")[0](x) - load_codecs(None, "paper")[0](x)).abs().mean() > 0.01
    with pytest.raises(InputError):
        build("ddm", variant="nope")


def test_identity_variant_hides_the_face_and_its_key_restores_it(photos):
    """The encrypted astronaut no longer matches the clean one for the recognisers the identity
    variant trained against (FaceNet; SFace judged by its onnxruntime original) nor for two it
    never saw (LightCNN, OpenFace); dlib's ResNet, also never trained against, matches the
    decrypted face to the original. (dlib's ResNet still matches this encrypted face, just under
    its threshold: the bench measures how far each judge is fooled.)"""
    from faceshield.models import Detections

    pixels = photos["astronaut"]
    box = models.largest_face(pixels)
    protection = build("ddm", variant="identity")
    trained_against = weights.load_trained(None, VARIANTS["identity"]).meta["recognisers"].split(",")
    assert set(trained_against) == {"facenet", "sface"}
    encrypted = protection(pixels, faces=Detections(box[None], np.ones(1, np.float32))).pixels
    for key in ("facenet", "sface-onnx", "lightcnn", "openface"):
        rec = models.load(key)
        assert not rec.is_match(rec.score(rec.embed(pixels, box), rec.embed(encrypted, box))), key
    r0, r1, c0, c1 = face_region(box, pixels.shape, REGION_MARGIN)
    decrypted = encrypted.copy()
    decrypted[r0:r1, c0:c1] = protection.decrypt(np.ascontiguousarray(encrypted[r0:r1, c0:c1]))
    rec = models.load("dlib-resnet")
    assert rec.is_match(rec.score(rec.embed(pixels, box), rec.embed(decrypted, box)))


def test_a_training_view_moves_its_landmarks_with_the_crop():
    """A random crop and rescale of a training crop: the landmark still lands on the dot it marked."""
    from faceshield.train.ddm import random_view

    crop = torch.zeros(3, 160, 160, dtype=torch.uint8)
    crop[:, 58:62, 98:102] = 255  # a dot centred at x = 99.5, y = 59.5
    item = {"crop": crop, "points": {"k": np.array([[99.5, 59.5]])}}
    np.random.seed(1)
    for _ in range(5):
        x, points = random_view(item, 128, (0.6, 1.0), lambda t: t)
        assert x.shape == (3, 128, 128)
        gx, gy = points["k"][0]
        weight = x[0]
        ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        cx, cy = float((weight * xs).sum() / weight.sum()), float((weight * ys).sum() / weight.sum())
        assert abs(cx - gx) < 1.0 and abs(cy - gy) < 1.0


def test_batched_embeddings_are_the_recognisers_own(photos):
    """embed_batch (one network pass over the stacked aligned crops) gives what embed_tensor
    gives crop by crop."""
    from faceshield.models.alignment import FivePoints
    from faceshield.train.ddm import embed_batch

    pixels = photos["astronaut"]
    box = models.largest_face(pixels)
    points = FivePoints()(pixels, box)
    x = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None] / 255.0
    xs = torch.cat([x, x.flip(1)])  # two different crops (colour channels swapped)
    rec = models.load("sface")
    with torch.no_grad():
        batched = embed_batch(rec, xs, [points, points])
        single = torch.stack([rec.embed_tensor(xs[i : i + 1], points) for i in range(2)])
    assert torch.allclose(batched, single, atol=1e-4)
    assert not torch.allclose(batched[0], batched[1], atol=1e-2)


def test_identity_terms():
    """'gap' is positive when two encryptions of one face are closer than encryptions of
    different faces, zero when every encryption is alike; 'away' vanishes past the margin."""
    from faceshield.models.base import Recogniser
    from faceshield.train.ddm import identity_terms

    rec = Recogniser()
    rec.metric, rec.threshold = "cosine", 0.5
    faces = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]])
    kept = identity_terms(rec, apart, apart, faces, margin=0.2)  # unchanged by the encryption
    assert float(kept["gap"]) == pytest.approx(2.0)  # (1 - 0) / threshold
    assert float(kept["away"]) > 0 and kept["fooled"] == 0.0
    alike = torch.tensor([[0, 0, 1.0]] * 4)
    hidden = identity_terms(rec, alike, apart, faces, margin=0.2)
    assert float(hidden["gap"]) == pytest.approx(0.0) and float(hidden["away"]) == 0.0 and hidden["fooled"] == 1.0


def test_a_method_spec_carries_its_own_options():
    """ "ddm:variant=paper" in a bench run: that row's own option, shown in its label, checked
    against what the method declares."""
    from faceshield.bench.method import label
    from faceshield.protections import method_key, spec_options

    assert spec_options("ddm:variant=paper") == ("ddm", {"variant": "paper"})
    assert spec_options("blur@8:face_margin=0.2") == ("blur@8", {"face_margin": 0.2})
    assert method_key("ddm:variant=paper") == "ddm"
    assert build("ddm:variant=identity").variant == "identity" and build("ddm").variant == "paper"
    assert build("blur@8:face_margin=0.2").face_margin == 0.2
    assert label("ddm:variant=identity", {"eps": 8}) == "ddm [variant identity]" and label("ddm", {"eps": 8}) == "ddm"
    with pytest.raises(TypeError):
        build("ddm:eps=8")  # not a DDM option
    with pytest.raises(ValueError):
        spec_options("ddm:paper")
