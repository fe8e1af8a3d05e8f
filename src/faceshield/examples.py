"""Example photos that ship inside installed packages (no download, no photos in the repo)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


@dataclass(frozen=True)
class Example:
    name: str
    label: str  # what the page shows: the kind of photo, the file, where it comes from, its licence
    path: Path


# name -> (package, path inside it, label); a frontal portrait, two people, a group
_SOURCES = {
    "astronaut": (
        "skimage",
        "data/astronaut.png",
        "Frontal portrait: astronaut.png (NASA, public domain; scikit-image)",
    ),
    "zidane": (
        "ultralytics",
        "assets/zidane.jpg",
        "Two people: zidane.jpg (ultralytics, AGPL-3.0)",
    ),
    "bus": (
        "ultralytics",
        "assets/bus.jpg",
        "Group: bus.jpg (ultralytics, AGPL-3.0)",
    ),
}


def shipped_file(package: str, inside: str) -> Path | None:
    """A file that an installed package ships (e.g. "skimage", "data/camera.png"), else None."""
    root = _package_dir(package)
    return root / inside if root and (root / inside).is_file() else None


def examples() -> list[Example]:
    """The labelled example photos that are installed, in page order (portrait, two people, group)."""
    found = []
    for name, (package, inside, label) in _SOURCES.items():
        if path := shipped_file(package, inside):
            found.append(Example(name, label, path))
    return found


def example_photos() -> dict[str, Path]:
    """{name: path} for scikit-image's astronaut and ultralytics' zidane and bus, where installed."""
    return {e.name: e.path for e in examples()}
