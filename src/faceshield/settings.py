"""Runtime settings, read once from the environment (one place for every knob)."""

from __future__ import annotations

import os
from pathlib import Path


def _int(name: str, default: int) -> int:
    value = os.getenv(name)
    return int(value) if value not in (None, "") else default


# Running on Hugging Face Spaces? (set by the platform)
SPACE_ID: str | None = os.getenv("SPACE_ID")

# torch intra-op threads. Two shared cores: more threads than free cores makes torch
# much slower, not faster, so the default stays at min(2, cores) and tests pin 1.
TORCH_THREADS: int = _int("FACESHIELD_THREADS", min(2, os.cpu_count() or 1))

# Photos whose longer side exceeds this are downscaled before anything else (with a notice).
MAX_SIDE: int = _int("FACESHIELD_MAX_SIDE", 2048)
# Refuse to decode more pixels than this (decompression-bomb guard). 20000 x 20000 fits;
# JPEGs that large are decoded at a reduced scale straight away (PIL draft mode).
MAX_DECODE_PIXELS: int = _int("FACESHIELD_MAX_DECODE_PIXELS", 20000 * 20000)
# Files larger than this are refused before decoding.
MAX_FILE_BYTES: int = _int("FACESHIELD_MAX_FILE_BYTES", 50 * 1024 * 1024)

# Slow native judges (dlib's MMOD CNN) run on a copy whose longer side is at most this.
SLOW_JUDGE_MAX_SIDE: int = _int("FACESHIELD_SLOW_JUDGE_MAX_SIDE", 800)

# Converted weights and prepared example images live here, never in git.
CACHE_DIR: Path = Path(os.getenv("FACESHIELD_CACHE", Path.home() / ".cache" / "faceshield"))

# Gradio queue: one protection at a time per CPU core pair; bounded waiting line.
CONCURRENCY_LIMIT: int = _int("FACESHIELD_CONCURRENCY", 1)
MAX_QUEUE_SIZE: int = _int("FACESHIELD_MAX_QUEUE", 16)


def device():
    """The torch device for this request: CUDA when one is visible, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_threads_applied = False


def apply_threads() -> None:
    """Apply TORCH_THREADS to torch and OpenCV once per process."""
    global _threads_applied
    if _threads_applied:
        return
    import torch

    torch.set_num_threads(TORCH_THREADS)
    try:
        import cv2

        cv2.setNumThreads(TORCH_THREADS)
    except ImportError:  # pragma: no cover - cv2 is a hard dependency in practice
        pass
    _threads_applied = True
