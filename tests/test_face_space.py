"""The face-space composite shared by the generator's training and its protection: squares
around faces, crops at the working size, the perturbation resized back and rounded."""

import numpy as np
import torch

from faceshield.protections.generator import WORK_SIZE, crop_squares, face_square, paste_squares, perturb_faces


class _Constant(torch.nn.Module):
    """A stand-in network: +1 everywhere (times eps), so where the change lands is visible."""

    def forward(self, x):
        return torch.ones_like(x)


def test_square_is_centred_on_the_face_with_context():
    r0, c0, side = face_square((100, 50, 140, 110), context=1.5)  # a 40 x 60 face
    assert side == 90
    assert (r0 + side / 2, c0 + side / 2) == (80, 120)


def test_crops_replicate_the_edge_where_a_square_leaves_the_image():
    x = torch.arange(20.0).repeat(1, 3, 20, 1)  # columns 0..19
    (crop,) = crop_squares(x, [(-5, -5, 10)], size=10)
    assert crop.shape == (3, 10, 10)
    assert torch.all(crop[:, :, :5] == 0)  # left half past the edge: column 0 repeated
    assert torch.allclose(crop[0, 0, 5:], torch.arange(5.0))


def test_perturbation_is_bounded_whole_and_only_on_the_squares():
    x = torch.full((1, 3, 64, 80), 100.0)
    squares = [(10, 10, 20), (50, 70, 30)]  # the second reaches past the bottom-right corner
    out = perturb_faces(_Constant(), x, squares, eps=8)
    change = out - x
    assert torch.equal(change, change.round()) and change.abs().max() <= 8
    inside = torch.zeros(64, 80, dtype=torch.bool)
    inside[10:30, 10:30] = True
    inside[50:, 70:] = True
    assert torch.all(change[0, :, inside] == 8)
    assert torch.all(change[0, :, ~inside] == 0)


def test_paste_resizes_the_working_size_delta_onto_each_square():
    deltas = torch.zeros(1, 3, WORK_SIZE, WORK_SIZE)
    deltas[:, :, : WORK_SIZE // 2] = 1.0  # top half
    canvas = paste_squares((1, 3, 100, 100), deltas, [(20, 20, 40)])
    assert canvas[0, 0, 25, 40] == 1.0 and canvas[0, 0, 55, 40] == 0.0
    assert canvas[0, 0, :20].abs().sum() == 0 and canvas[0, 0, 60:].abs().sum() == 0
    assert np.isclose(float(canvas[0, 0, 20:60, 20:60].mean()), 0.5, atol=0.03)
