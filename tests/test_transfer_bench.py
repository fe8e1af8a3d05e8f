"""The detector transfer bench on a tiny dataset made here: every detector judged, attacked ones
labelled white-box, the noise control beside the method, time and PSNR reported."""

import json

import numpy as np
from PIL import Image

from faceshield import models
from faceshield.bench import run_transfer_bench
from faceshield.protections import DetectorPGD


def test_transfer_table_marks_attacked_detectors_and_shows_the_control(photos, tmp_path):
    astronaut = photos["astronaut"]
    (tmp_path / "detection").mkdir()
    (tmp_path / "identities" / "someone").mkdir(parents=True)
    Image.fromarray(astronaut).save(tmp_path / "detection" / "one.jpg", quality=95)
    box = models.load("mtcnn").detect(astronaut).boxes[0]
    (tmp_path / "detection" / "boxes.json").write_text(json.dumps({"one.jpg": [box.round().tolist()]}))
    Image.fromarray(astronaut[:300, 60:360]).save(tmp_path / "identities" / "someone" / "1.jpg", quality=95)

    options = {"steps": 3, "rung_steps": 3, "attack": ("mtcnn",)}
    results = run_transfer_bench(tmp_path, ["detector-pgd", "generator"], options, out_dir=tmp_path / "out")
    method, generator, control = results["methods"]
    assert control.startswith("noise") and generator == "generator"
    rows = results["methods"][method]["detectors"]
    assert rows["mtcnn"]["white_box"] and not rows["haar"]["white_box"] and not rows["dlib-hog"]["white_box"]
    assert rows["mtcnn"]["recall_before"] == 1.0 and rows["mtcnn"]["portraits_found"] == 1
    table = (tmp_path / "out" / "results.md").read_text()
    assert f"| mtcnn | white-box for {method}, generator |" in table and "| haar | black-box |" in table
    assert f"after: {method} | after: generator | after: noise" in table
    assert "seconds a photo, median / worst / total" in table  # several methods: the total, for ratios
    assert table.index("black-box") < table.index("white-box")  # the never-attacked judges lead
    summary = results["methods"][method]
    assert summary["seconds_median"] > 0 and np.isfinite(summary["psnr_lowest"])

    # the goals beside the control: portraits hidden from MTCNN, the budgets the ladder ended at
    photos = summary["photos"]
    ladder = [DetectorPGD(**options).budgets()[i][0] for i in range(4)]
    assert all(p["budget"] in ladder for p in photos)
    assert [p["budget"] for p in results["methods"][control]["photos"]] == [p["budget"] for p in photos]
    (portrait,) = [p for p in photos if p["portrait"]]
    hidden = int(portrait["hidden_from_attacked"])
    assert f"| portraits hidden from every detector it attacks | {hidden}/1 ({hidden:.0%}) |" in table
    counts = {b: [p["budget"] for p in photos].count(b) for b in sorted({p["budget"] for p in photos})}
    assert "| photos per budget it ended at | " + ", ".join(f"{b:g}/255: {n}" for b, n in counts.items()) in table
