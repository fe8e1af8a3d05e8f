"""Runtime settings, read once from the environment (one place for every knob)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
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
# Every heavy web request (protect, lab, sweep) shares these CONCURRENCY_LIMIT slots; an
# iterative attack stops after this many seconds and returns its best result so far.
MAX_SECONDS: float = float(os.getenv("FACESHIELD_MAX_SECONDS") or 120)

# Per-request size: faces protected in one photo, target photos, and the web upload limit
# (MAX_FILE_BYTES, given to Gradio as max_file_size). The page's pictures (gallery, lab) are
# thumbnails at most THUMB_SIDE px; the download stays full resolution. The lab's state
# (its thumbnails) is dropped after STATE_TTL seconds.
MAX_FACES: int = _int("FACESHIELD_MAX_FACES", 8)
MAX_TARGETS: int = _int("FACESHIELD_MAX_TARGETS", 8)
THUMB_SIDE: int = _int("FACESHIELD_THUMB_SIDE", 512)
STATE_TTL: int = _int("FACESHIELD_STATE_TTL", 900)


class InputError(ValueError):
    """A value from the user (a number on the page, a photo) that FaceShield refuses; the
    message is meant for them and never names a server path."""


@dataclass(frozen=True)
class Knob:
    """A closed range of numbers and the input's name in messages: a declared option's range
    (protections.spec.Param.knob), narrowed where the page bounds a web request (page.py)."""

    label: str
    low: float
    high: float
    integer: bool = False

    def check(self, value) -> float | int:
        """`value` (a number, or a numeric string as a raw API call may send) inside [low, high];
        rounded to an int for integer knobs. Raises InputError for NaN, inf, text, or out of range."""
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{self.label} must be a number, not {str(value)[:20]!r}.") from None
        if not math.isfinite(number):
            raise InputError(f"{self.label} must be a finite number, not {number}.")
        if not self.low <= number <= self.high:
            raise InputError(f"{self.label} must be between {self.low:g} and {self.high:g} (got {number:g}).")
        return round(number) if self.integer else number


# Upper bounds of the compute a request may ask for (iterations of one attack).
MAX_STEPS: int = _int("FACESHIELD_MAX_STEPS", 300)
LAB_MAX_STEPS: int = _int("FACESHIELD_LAB_MAX_STEPS", 100)


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
