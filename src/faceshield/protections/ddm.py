"""DDM encryption: "Distribution Discrepancy Maximization for Image Privacy Preserving"
(arXiv 1811.07335), a visible obfuscation learned so that recognisers cannot see through it.

An encryption generator G_e maps a face crop to an encrypted crop; a decryption network
G_d maps it back (the reconstruction path), and a discriminator D learns to tell
reconstructed faces (distributed like real faces) from encrypted ones. Unlike a GAN, G_e
*helps* D succeed: the paper shows that this maximises the discrepancy between the
encrypted and the original face distributions, while the reconstruction term keeps enough
information in the encrypted crop for an authorised holder of G_d to recover the face.
Trained by `python -m faceshield.train ddm` (faceshield/train/ddm.py); two variants ship
with a model card (weights/README.md):
- "paper" (the default, weights/ddm-paper.safetensors): the paper's objective alone.
- "identity" (weights/ddm.safetensors): the paper's objective plus terms meant to remove
  identity as recognisers see it (the encrypted face's embedding pushed away from the
  original's, and two encryptions of one face no closer than encryptions of different faces),
  under a fidelity bound; both networks are residual (they start as the identity map). It is
  less damaging and decrypts far better, but the attacker who knows the protection still
  finds more identity in it than in the paper variant (model card), so it is not the default.

Here it is one more obfuscation of the face regions (as blur, pixelation and masking):
each face box, grown by 10%, is resized to 128x128, encrypted and resized back.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from faceshield import weights
from faceshield.protections.base import WEIGHTS, Param, register
from faceshield.protections.obfuscation import _COMMON, _Obfuscation
from faceshield.tensors import to_tensor, to_uint8

VARIANTS = {"identity": "ddm.safetensors", "paper": "ddm-paper.safetensors"}  # variant -> weights/ file
WEIGHTS_FILE = VARIANTS["paper"]  # the default variant's
CROP = 128


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU())


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_block(c, c), nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.body(x)


class CodecNet(nn.Module):
    """Encoder-decoder for 128x128 crops in [0, 1] -> 128x128 crops in [0, 1]; G_e and G_d
    share this architecture (two downsamplings, residual core, two upsamplings).

    residual=True: the output is sigmoid(logit(x) + net(x)), with the last layer starting at
    zero, so the network starts as the identity map and learns a change of the input."""

    def __init__(self, width: int = 32, blocks: int = 4, residual: bool = False):
        super().__init__()
        self.residual = residual
        w = width
        self.net = nn.Sequential(
            _block(3, w),
            _block(w, 2 * w, 2),
            _block(2 * w, 4 * w, 2),
            *[_Residual(4 * w) for _ in range(blocks)],
            nn.Upsample(scale_factor=2.0),
            _block(4 * w, 2 * w),
            nn.Upsample(scale_factor=2.0),
            _block(2 * w, w),
            nn.Conv2d(w, 3, 3, 1, 1),
        )
        if residual:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        out = self.net(x * 2 - 1)
        if self.residual:
            return torch.sigmoid(torch.logit(x.clamp(1 / 512, 1 - 1 / 512)) + out)
        return torch.sigmoid(out)


class Discriminator(nn.Module):
    """ "Reconstructed face" vs "encrypted" logits from PatchGANs at full and half resolution.

    Each scale first normalises contrast, so D judges structure, not brightness or contrast:
    otherwise G_e wins by turning the face into a flat colour that still hides a faint copy
    of it, which any attacker stretches back (we saw this). contrast="global" standardises
    every image per channel; "local" divides by the contrast of a 15-px neighbourhood, so a
    bright frame round the crop (which G_e learned to add, inflating the global spread) no
    longer hides a faint face inside it. The half-resolution branch sees through fine noise
    laid over a face.
    """

    def __init__(self, width: int = 32, scales: int = 2, contrast: str = "global"):
        super().__init__()
        if contrast not in ("global", "local"):
            raise ValueError(f"contrast must be 'global' or 'local', not {contrast!r}")
        self.contrast = contrast
        w = width
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3, w, 4, 2, 1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(w, 2 * w, 4, 2, 1),
                nn.InstanceNorm2d(2 * w, affine=True),
                nn.LeakyReLU(0.2),
                nn.Conv2d(2 * w, 4 * w, 4, 2, 1),
                nn.InstanceNorm2d(4 * w, affine=True),
                nn.LeakyReLU(0.2),
                nn.Conv2d(4 * w, 1, 4, 1, 1),
            )
            for _ in range(scales)
        )

    def forward(self, x) -> torch.Tensor:
        """(N, 3, 128, 128) in [0, 1] -> (N, P) patch logits of every scale."""
        out = []
        for i, branch in enumerate(self.branches):
            y = F.avg_pool2d(x, 2**i) if i else x
            out.append(branch(self._normalise(y)).flatten(1))
        return torch.cat(out, 1)

    def _normalise(self, y: torch.Tensor) -> torch.Tensor:
        if self.contrast == "global":
            return (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 0.02)

        def local_mean(t):  # 15x15 box mean, reflected at the border
            return F.avg_pool2d(F.pad(t, (7, 7, 7, 7), mode="reflect"), 15, stride=1)

        centred = y - local_mean(y)
        return centred / (local_mean(centred**2).sqrt() + 0.02)


@functools.lru_cache(maxsize=4)  # once per process and weights file
def load_codecs(path=None, variant: str = "paper") -> tuple[CodecNet, CodecNet]:
    """(G_e, G_d) from the file at `path`, else the variant's weights/ file (VARIANTS; keys
    encrypt.* and decrypt.*; the metadata gives width, blocks and whether they are residual)."""
    trained = weights.load_trained(path, VARIANTS[variant])
    nets = []
    for part in ("encrypt", "decrypt"):
        meta = trained.meta
        net = CodecNet(int(meta.get("width", 32)), int(meta.get("blocks", 4)), meta.get("residual") == "True")
        net.load_state_dict(trained.part(part))
        nets.append(weights.frozen(net))
    return nets[0], nets[1]


def _through(net: nn.Module, patch: np.ndarray) -> np.ndarray:
    """A uint8 patch of any size through a 128x128 network, back at its own size."""
    h, w = patch.shape[:2]
    x = to_tensor(patch, unit=True)
    x = F.interpolate(x, size=(CROP, CROP), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        y = F.interpolate(net(x), size=(h, w), mode="bilinear", align_corners=False)
    return to_uint8(y, unit=True)


@register
class DDMEncryption(_Obfuscation):
    """Learned encryption of the face regions (reversible by the holder of the decryption network)."""

    key, title = "ddm", "Obfuscate: DDM encryption"
    summary = "learned encryption of the face regions that maximises the distribution discrepancy (DDM)"
    reversible = True
    params = (
        Param("strength", 1.0, "ignored (the encryption is all or nothing)"),
        Param(
            "variant",
            "paper",
            "which trained encryption: 'paper' (the paper's objective alone, weights/ddm-paper.safetensors) or "
            "'identity' (plus terms against identity, weights/ddm.safetensors; leaks more to the adaptive attacker)",
            choices=tuple(VARIANTS),
        ),
        *_COMMON,
        WEIGHTS,
    )

    def setting(self) -> str:
        return ""  # its strength is ignored

    def load_weights(self) -> None:
        load_codecs(self.weights_path, self.variant)

    def obscure(self, patch):
        return _through(load_codecs(self.weights_path, self.variant)[0], patch)

    def decrypt(self, patch: np.ndarray) -> np.ndarray:
        """The authorised reconstruction G_d of an encrypted patch (same box)."""
        return _through(load_codecs(self.weights_path, self.variant)[1], patch)
