"""The running app, called through its API with gradio_client, like a user's browser would."""

import numpy as np
import pytest
from conftest import protect_args
from PIL import Image

from faceshield import page


def _call(client, path, **kw):
    return client.predict(**protect_args(path, **kw), api_name="/protect")


@pytest.mark.slow
def test_protect_through_the_api(client, tmp_path):
    from faceshield import models
    from faceshield.examples import example_photos

    out = _call(client, example_photos()["astronaut"])
    slider, perturbation, download, gallery, detectors, recognisers, summary, verdict = out
    png = Image.open(download if isinstance(download, str) else download["path"])
    assert png.format == "PNG" and not png.getexif()
    assert len(models.load("mtcnn").detect(np.asarray(png.convert("RGB")))) == 0
    rows = {row[0]: row for row in detectors["data"]}
    assert rows["MTCNN"][1] == "attacked (white-box)" and rows["MTCNN"][2] >= 1 and rows["MTCNN"][3] == 0
    haar = next(row for row in detectors["data"] if "Haar" in row[0] or "haar" in row[0])
    assert haar[1] == "judge (never attacked)"
    assert any(row[0] == "dlib ResNet" and row[1] == "judge (never attacked)" for row in recognisers["data"])
    assert "PSNR" in summary and len(gallery) >= 6
    # the verdict banner counts the same rows: MTCNN (attacked) hidden, the judges apart
    found = [row for row in detectors["data"] if isinstance(row[2], int) and row[2] > 0]
    hidden = [row for row in found if row[4] == f"{row[2]}/{row[2]}"]
    judges = [row for row in found if row[1] == "judge (never attacked)"]
    judges_hidden = [row for row in hidden if row[1] == "judge (never attacked)"]
    assert f"Hidden from {len(hidden)} of {len(found)} detectors" in verdict
    assert f"({len(judges_hidden)} of {len(judges)} never attacked)" in verdict


def test_bad_file_gives_a_clear_error(client, tmp_path):
    from gradio_client.exceptions import AppError

    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    with pytest.raises(AppError, match="empty"):
        _call(client, bad)


@pytest.mark.slow
def test_attack_lab_steps_through_iterations(client):
    """The lab records every iterate and opens on the last one: its photo, the perturbation at
    three amplifications, the plot."""
    import re

    from gradio_client import handle_file

    from faceshield.examples import example_photos

    trace_slider, view, amplified, plot, caption = client.predict(
        handle_file(str(example_photos()["astronaut"])), "detector-pgd", 8, 10, api_name="/lab"
    )
    last = re.search(r"Iteration (\d+)\*\* of (\d+)", caption)
    assert last and last[1] == last[2] and 1 <= int(last[2]) <= 10, caption
    assert len(amplified) == 3 and view and plot is not None


def test_each_protection_shows_the_knob_it_uses(photos):
    """The budget slider for the adversarial methods and the noise control, an obfuscation's own
    strength (prefilled with its default) for blur/pixelate/mask, neither for DDM; and a shown
    strength really changes the result."""
    import app
    from faceshield.protections import build

    face = np.ascontiguousarray(photos["astronaut"][:256, 96:352])
    names = list(page.option_arguments())
    for key in app.REGISTRY:
        controls = dict(zip(names, app.method_controls(key)))
        budget, strength = controls["eps"], controls["strength"]
        assert controls["mode"]["visible"] == (key == "tip-im"), key  # the identity options: TIP-IM's
        if key in ("blur", "pixelate", "mask"):
            assert not budget["visible"] and strength["visible"] and strength["value"] is not None, key
            weak = build(key, strength=strength["value"], whole_image=True)(face, faces=None).pixels
            other = build(key, strength=strength["value"] / 2, whole_image=True)(face, faces=None).pixels
            assert not np.array_equal(weak, other), key
        elif key == "ddm":
            assert not budget["visible"] and not strength["visible"]
        else:
            assert budget["visible"] and not strength["visible"], key


def test_page_controls_span_the_bounds_the_server_checks():
    """The page's sliders span the ranges its controls accept (page.CONTROLS and page.LAB, within
    the declared ranges), every obfuscation's strength has bounds around its default, and the
    events that do work hand their handlers the raw inputs (preprocess=False), which they check."""
    import app
    from faceshield import settings
    from faceshield.protections import DetectorPGD

    events = {fn.api_name: fn for fn in app.demo.fns.values()}
    assert all(events[name].preprocess is False for name in ("protect", "lab", "sweep"))

    props = {c["props"].get("label"): (c["type"], c["props"]) for c in app.demo.get_config_file()["components"]}
    knobs = {
        "Maximum iterations": page.CONTROLS["steps"].knob(DetectorPGD.param("steps")),
        "Iterations": page.LAB["steps"][1].knob(page.LAB["steps"][0]),
        "Budget (grey levels of 255)": page.LAB["eps"][1].knob(page.LAB["eps"][0]),
    }
    assert (knobs["Maximum iterations"].low, knobs["Maximum iterations"].high) == (10, settings.MAX_STEPS)
    for label, knob in knobs.items():
        kind, p = props[label]
        assert kind == "slider" and (p["minimum"], p["maximum"]) == (knob.low, knob.high)
    for key, cls in app.REGISTRY.items():
        for name, (param, control) in page.shown(key).items():  # a page range lies inside the declared one
            knob, declared = control.knob(param), param.knob()
            assert declared.low <= knob.low <= knob.high <= declared.high, (key, name)
        if "strength" in page.shown(key):
            knob = page.shown(key)["strength"][1].knob(cls.param("strength"))
            assert knob.low <= cls.param("strength").default <= knob.high, key
            assert knob.check(cls.param("strength").default) == cls.param("strength").default


def test_every_setting_and_limit_is_documented_with_its_default():
    """docs/operations.md's settings table has a row for every FACESHIELD_* variable that
    settings.py reads, with its default; the README's limits paragraph names the per-request
    limits and how to set them."""
    import re
    from pathlib import Path

    from faceshield import settings

    root = Path(__file__).resolve().parents[1]
    source = Path(settings.__file__).read_text()
    defaults = dict(re.findall(r'_int\("(FACESHIELD_\w+)", ([\d *]+)\)', source))
    defaults.update(re.findall(r'os.getenv\("(FACESHIELD_\w+)"\) or (\d+)\)', source))
    read = set(re.findall(r'"(FACESHIELD_\w+)"', source))
    assert len(defaults) >= 12 and set(defaults) <= read
    rows = [
        line for line in (root / "docs" / "operations.md").read_text().splitlines() if line.startswith("| `FACESHIELD_")
    ]
    for name in read:
        (row,) = [r for r in rows if f"`{name}`" in r.split("|")[1]] or [None]
        assert row, f"{name} has no row in the settings table"
        if name in defaults:
            assert str(eval(defaults[name])) in row.split("|")[2], (name, defaults[name], row)
    readme = (root / "README.md").read_text()
    limits = " ".join(readme[readme.index("**Input handling and limits.**") :].split("\n\n")[0].split())
    for name in (
        "MAX_FILE_BYTES",
        "MAX_DECODE_PIXELS",
        "MAX_SIDE",
        "MAX_FACES",
        "MAX_TARGETS",
        "MAX_STEPS",
        "MAX_SECONDS",
        "CONCURRENCY",
        "MAX_QUEUE",
    ):
        assert f"`FACESHIELD_{name}`" in limits, name
    assert "python app.py" in limits and "docker run -e" in limits


def test_the_protect_api_is_the_recorded_schema():
    """/protect's arguments (names, order, kinds, ranges, who uses each) and version are the
    recorded copy: a change to the public API is a decision (a new record and version), and the
    order does not follow the order the protection modules were imported in."""
    import json
    from pathlib import Path

    import app
    from faceshield.protections import REGISTRY

    recorded = json.loads((Path(__file__).parent / "data" / "protect-api.json").read_text())
    schema = page.api_schema()
    assert schema == recorded, "the /protect API changed: update tests/data/protect-api.json and page.API_VERSION"
    shuffled = dict(reversed(list(REGISTRY.items())))
    original = dict(REGISTRY)
    try:
        REGISTRY.clear()
        REGISTRY.update(shuffled)
        assert page.api_schema() == recorded
    finally:
        REGISTRY.clear()
        REGISTRY.update(original)
    served = next(fn for fn in app.demo.fns.values() if fn.api_name == "protect")  # the names the API gives
    assert served.input_parameter_names == [a["name"] for a in recorded["arguments"]]
