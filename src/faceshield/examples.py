"""Example photos that ship inside installed packages (no download, no photos in the repo)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def example_photos() -> dict[str, Path]:
    """{name: path} for scikit-image's astronaut and ultralytics' bus and zidane, where installed."""
    found = {}
    skimage_dir, ultra_dir = _package_dir("skimage"), _package_dir("ultralytics")
    candidates = {
        "astronaut": skimage_dir and skimage_dir / "data" / "astronaut.png",
        "bus": ultra_dir and ultra_dir / "assets" / "bus.jpg",
        "zidane": ultra_dir and ultra_dir / "assets" / "zidane.jpg",
    }
    for name, path in candidates.items():
        if path and path.is_file():
            found[name] = path
    return found
