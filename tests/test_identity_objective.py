"""The pieces of the identity masks' objective and where they work: the person's region in
embedding space and the face's work region, checked on made numbers (fast, no model)."""

import numpy as np
import torch

from faceshield.models.base import Recogniser
from faceshield.protections.identity_objective import IdentityObjective, Person, hull_point, project_simplex
from faceshield.protections.work_region import ALIGN, WorkRegion


def test_simplex_projection_and_hull_point():
    w = project_simplex(torch.tensor([0.9, 0.8, -1.0], dtype=torch.float64))
    assert torch.allclose(w, torch.tensor([0.55, 0.45, 0.0], dtype=torch.float64)) and abs(float(w.sum()) - 1) < 1e-12
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    inside = torch.tensor([0.3, 0.6], dtype=torch.float64)
    assert torch.allclose(hull_point(inside, square, iters=200), inside, atol=1e-6)  # inside: itself
    outside = torch.tensor([2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(
        hull_point(outside, square, iters=200), torch.tensor([1.0, 0.5], dtype=torch.float64), atol=1e-4
    )
    assert torch.allclose(hull_point(outside, square, "centre"), torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.equal(hull_point(outside, square[:1]), square[0])  # one photo: that photo


class _Euclid(Recogniser):
    name, threshold, metric = "made", 1.0, "euclidean"


def test_the_person_objective_is_met_only_beyond_every_photo():
    """Dodging the person: zero only once the face is margin x threshold away from the whole
    hull of the person's embeddings, not just from its own photo."""
    rec = _Euclid()
    anchors = torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)  # this photo, another photo
    person = Person([rec], [anchors], photos=2)
    objective = IdentityObjective(person, margin=0.5)
    near_other = torch.tensor([0.5, 2.2], dtype=torch.float64)  # 2.26 from this photo, 0.54 from the other
    assert float(objective.loss([near_other])) > 0 and not objective.fooled([near_other])
    between = torch.tensor([1.0, 1.0], dtype=torch.float64)  # 1.41 from both photos, 1.0 from the hull
    assert float(objective.loss([between])) == 0.5 and objective.fooled([between]) is True
    far = torch.tensor([2.0, 1.0], dtype=torch.float64, requires_grad=True)
    loss = objective.loss([far])
    assert float(loss) == 0.0  # 2.0 from the hull: beyond 1.5
    one_photo = IdentityObjective(Person([rec], [anchors[:1]]), margin=0.5)
    assert float(one_photo.loss([near_other])) == 0.0  # the one-photo objective never sees the other photo


def test_work_region_scales_large_faces_and_keeps_the_budget():
    shape = (1500, 1200, 3)
    box = np.array([300.0, 400.0, 940.0, 1100.0])  # a 700 px face
    region = WorkRegion.around(box, shape, face_px=160, margin=0.1)
    assert region.r0 % ALIGN == 0 and region.c0 % ALIGN == 0
    assert abs(region.scale - 160 / 700) < 1e-9 and max(region.size) < 600
    photo = torch.full((1, 3, *shape[:2]), 100.0)
    x0 = region.down(photo)
    assert x0.shape[2:] == region.size and torch.allclose(x0, torch.full_like(x0, 100.0))
    delta = torch.randint(-8, 9, (1, 3, *region.size)).float() * torch.from_numpy(region.mask)
    out = region.paste(photo, delta)
    change = (out - photo)[0].abs()
    assert float(change.max()) <= 8 and float(change.max()) > 0
    outside = np.ones(shape[:2], bool)
    r0, c0 = region.r0, region.c0
    outside[r0 : r0 + region.photo_mask.shape[0], c0 : c0 + region.photo_mask.shape[1]] &= region.photo_mask == 0
    assert float(change.sum(0)[torch.from_numpy(outside)].abs().max()) == 0  # nothing outside the face area
    lm = np.array([[500.0, 600.0]])
    assert np.allclose(region.to_work(lm), (lm - [c0, r0]) * region.scale)
    small = WorkRegion.around(np.array([10.0, 10.0, 70.0, 80.0]), (100, 100, 3), face_px=160)
    assert small.scale == 1.0 and np.array_equal(small.mask, small.photo_mask)  # small faces: their own pixels
