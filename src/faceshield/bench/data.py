"""The dataset a bench reads (laid out as shared/data/faces): the detection photos with their
ground truth, the same/different pairs, the portraits, and who is on each photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def detection_photos(dataset: Path, limit: int | None) -> list[tuple[Path, np.ndarray | None]]:
    det_dir = dataset / "detection"
    truth = json.loads((det_dir / "boxes.json").read_text()) if (det_dir / "boxes.json").exists() else {}
    # Annotated photos first: they carry the headline numbers.
    names = sorted(truth) + sorted(p.name for p in det_dir.glob("*.jpg") if p.name not in truth)
    photos = [(det_dir / n, np.asarray(truth[n], np.float32) if n in truth else None) for n in names]
    return photos[:limit] if limit else photos


def read_pairs(dataset: Path) -> list[tuple[str, str, bool]]:
    """pairs.csv as (photo a, photo b, same person?), photo paths relative to the dataset."""
    import csv

    with open(dataset / "pairs.csv", newline="") as f:
        return [(r["img_a"], r["img_b"], r["same"].strip() == "1") for r in csv.DictReader(f)]


def pairs_per_person(pairs: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The first k pairs of each person whose protected photo (img_a) no kept pair uses yet."""
    kept, count, used = [], {}, set()
    for a, b in pairs:
        person = Path(a).parent.name
        if count.get(person, 0) < k and a not in used:
            kept.append((a, b))
            count[person] = count.get(person, 0) + 1
            used.add(a)
    return kept


def people_of(photos) -> dict[str, str]:
    """{photo: person}: identities/<person>/<n>.jpg."""
    return {p: Path(p).parent.name for p in photos}


def portrait_photos(dataset: Path, limit: int | None) -> list[Path]:
    """identities/<person>/<n>.jpg, one large face each: all of them, or `limit` spread evenly
    over the sorted list (so a quick run still sees every person, not the first few)."""
    found = sorted((dataset / "identities").glob("*/*.jpg"))
    if not limit or limit >= len(found):
        return found
    return [found[int(i)] for i in np.linspace(0, len(found) - 1, limit).round()]
