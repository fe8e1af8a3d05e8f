"""Every trainer end to end on a tiny dataset made here: train, checkpoint, resume, export,
and the exported file drives its protection. Two or three steps each: this checks the
plumbing (data, losses, checkpoints, file format), not what the networks learn."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from faceshield.cli import main as cli
from faceshield.protections import build
from faceshield.train.__main__ import main as train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, photos):
    """../shared/data/faces' layout: identities/<person>/*.jpg, detection/*.jpg + boxes.json
    (the annotated detection photos are held out of training)."""
    root = tmp_path_factory.mktemp("faces")
    for person, name in (("eileen", "astronaut"), ("zidane", "zidane")):
        folder = root / "identities" / person
        folder.mkdir(parents=True)
        Image.fromarray(photos[name]).save(folder / "1.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(photos[name][:, ::-1])).save(folder / "2.jpg", quality=95)
    (root / "detection").mkdir()
    Image.fromarray(photos["bus"]).save(root / "detection" / "group.jpg", quality=95)
    Image.fromarray(photos["bus"]).save(root / "detection" / "judged.jpg", quality=95)
    (root / "detection" / "boxes.json").write_text(json.dumps({"judged.jpg": [[0, 0, 10, 10]]}))
    return root


TRAINERS = {  # each as small as it goes; ddm trains on the identity photos here (nothing else has faces big enough)
    "generator": ["--face-sizes", "24", "48", "--batch", "1", "--width", "4", "--blocks", "1"]
    + ["--val-people", "zidane"],
    "apf": ["--batch", "1", "--width", "4", "--blocks", "1", "--ensemble", "facenet", "--probe", "sface"]
    + ["--probe-steps", "1", "--start-views", "1", "--val-every", "1", "--judges", "--skip-folders", "--packages"]
    + ["--val-photos", "detection/group.jpg"],
    "ddm": ["--batch", "2", "--width", "4", "--blocks", "1", "--skip-folders"],
}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_checkpoints_resumes_and_exports_a_working_file(trainer, dataset, tmp_path, photos):
    run, export = tmp_path / "run", tmp_path / f"{trainer}.safetensors"
    common = ["--data", str(dataset), "--run", str(run), "--export", str(export), "--save-every", "1"]
    train([trainer, "--steps", "2", *common, *TRAINERS[trainer]])
    assert (run / "last.pt").is_file() and export.is_file()
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if entry["step"]] == [1, 2]  # APF also logs the validation before step 1
    assert all(np.isfinite(v) for entry in logged for v in entry.values() if isinstance(v, float))

    train([trainer, "--steps", "3", "--resume", *common, *TRAINERS[trainer]])  # picks up at step 2
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if entry["step"]] == [1, 2, 3]
    with safe_open(str(export), "pt") as f:
        assert f.metadata()["steps"] == "3"

    protection = build(trainer, weights_path=str(export))
    result = protection(photos["astronaut"])
    assert result.pixels.shape == photos["astronaut"].shape
    assert not np.array_equal(result.pixels, photos["astronaut"])

    # the command line reaches the same file (how a run is benched before it is shipped)
    Image.fromarray(photos["astronaut"]).save(tmp_path / "astronaut.png")
    assert (
        cli(
            [
                "--threads",
                "1",
                "protect",
                str(tmp_path / "astronaut.png"),
                "-o",
                str(tmp_path / "out"),
                "--method",
                trainer,
                "--weights",
                str(export),
            ]
        )
        == 0
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "astronaut.png")), result.pixels)


def test_generator_views_of_large_faces_stay_in_range_and_are_never_mostly_upsampling():
    """--large-share draws that share of portrait-sized faces (200-600 px), the rest in the
    usual range; no view is more than 1.6 x the face's own size, a large one no more than
    --large-upsample x."""
    import random

    from faceshield.train.generator import view_size

    rng = random.Random(0)
    big = [view_size(500, rng, (24, 160), (200, 600), 0.5) for _ in range(400)]
    assert all(24 <= s <= 600 for s in big)
    assert 0.35 < np.mean([s >= 200 for s in big]) < 0.65  # about half are large
    assert not any(160 < s < 200 for s in big)
    assert all(view_size(500, rng, (24, 160), (200, 600), 0.0) <= 160 for _ in range(100))
    small = [view_size(50, rng, (24, 160), (200, 600), 1.0) for _ in range(100)]
    assert all(24 <= s <= 80 for s in small)  # a 50 px face: at most 80 px, never a large view
    # --large-upsample 4: a crowd's 60 px face is shown at a portrait's size, up to 4x
    up = [view_size(60, rng, (24, 160), (200, 600), 1.0, 4.0) for _ in range(100)]
    assert all(200 <= s <= 240 for s in up)
    up = [view_size(100, rng, (24, 160), (200, 600), 1.0, 4.0) for _ in range(100)]
    assert all(200 <= s <= 400 for s in up)


def test_generator_evaluate_prints_the_validation_of_each_weights_file_per_size(dataset, tmp_path, capsys):
    """--evaluate trains nothing: a row per weights file and face size, from the held-out faces."""
    args = ["generator", "--data", str(dataset), "--run", str(tmp_path / "run"), "--val-people", "zidane"]
    export = tmp_path / "g.safetensors"
    train([*args, "--steps", "1", "--export", str(export), *TRAINERS["generator"][:-2]])
    capsys.readouterr()
    train([*args, "--width", "4", "--blocks", "1", "--evaluate", str(export), "--val-sizes", "32", "64"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {export} |")]
    assert [row.split("|")[2].strip() for row in rows] == ["32", "64"]
    assert all(row.rstrip(" |").split("|")[-1].strip().replace(".", "").isdigit() for row in rows)  # PSNR
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1  # the one training step only


def test_apf_evaluate_prints_the_validation_of_each_weights_file(dataset, tmp_path, capsys):
    """--evaluate trains nothing: a row per weights file, each recogniser's fooled share and its
    mean distance beyond the threshold, on the run's validation views."""
    args = ["apf", "--data", str(dataset), "--run", str(tmp_path / "run"), *TRAINERS["apf"]]
    export = tmp_path / "a.safetensors"
    train([*args, "--steps", "1", "--export", str(export)])
    capsys.readouterr()
    train([*args, "--evaluate", str(export), str(export)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {export} |")]
    assert len(rows) == 2 and rows[0] == rows[1]  # the same file twice: the same figures
    cell = rows[0].split("|")[2].strip()  # facenet, e.g. "100% (+0.212)"
    assert cell.endswith(")") and "% (" in cell
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2  # validation + the one step
