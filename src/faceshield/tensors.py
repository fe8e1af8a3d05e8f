"""Photos as torch tensors and back: the one convention every attack and network uses.

A photo is (H, W, 3) uint8 RGB; as a tensor it is (1, 3, H, W) float32, in grey levels [0, 255]
(the attacks' budgets are grey levels) or, with unit=True, in [0, 1] (what the networks take).
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(pixels: np.ndarray, unit: bool = False, device=None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in grey levels, or in [0, 1] with unit=True (a copy)."""
    x = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1)[None]
    if unit:
        x = x / 255.0
    return x.to(device) if device is not None else x


def to_uint8(x: torch.Tensor, unit: bool = False) -> np.ndarray:
    """(1, 3, H, W) tensor in grey levels (or [0, 1] with unit=True) -> (H, W, 3) uint8, rounded
    and clipped."""
    x = x.detach()[0]
    if unit:
        x = x.clamp(0, 1) * 255
    return x.permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()
