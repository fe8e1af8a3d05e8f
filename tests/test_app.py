"""The running app, called through its API with gradio_client, like a user's browser would."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    import app

    app.demo.queue(max_size=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, show_error=True)
    yield Client(app.demo.local_url, verbose=False)
    app.demo.close()


def _call(client, path, **kw):
    from gradio_client import handle_file

    args = dict(method="detector-pgd", eps=8, steps=kw.pop("steps", 80), whole_image=False, slow_judges=False,
                reference_path=None)
    args.update(kw)
    return client.predict(handle_file(str(path)), args["method"], args["eps"], args["steps"], args["whole_image"],
                          args["slow_judges"], args["reference_path"], api_name="/protect")


@pytest.mark.slow
def test_protect_through_the_api(client, tmp_path):
    from faceshield import models
    from faceshield.examples import example_photos

    out = _call(client, example_photos()["astronaut"])
    slider, perturbation, download, gallery, detectors, recognisers, summary = out
    png = Image.open(download if isinstance(download, str) else download["path"])
    assert png.format == "PNG" and not png.getexif()
    assert len(models.load("mtcnn").detect(np.asarray(png.convert("RGB")))) == 0
    rows = {row[0]: row for row in detectors["data"]}
    assert rows["MTCNN"][1] >= 1 and rows["MTCNN"][2] == 0
    assert any(row[0] == "dlib ResNet" for row in recognisers["data"])
    assert "PSNR" in summary and len(gallery) >= 6


def test_bad_file_gives_a_clear_error(client, tmp_path):
    from gradio_client.exceptions import AppError

    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    with pytest.raises(AppError, match="empty"):
        _call(client, bad)


@pytest.mark.slow
def test_attack_lab_steps_through_iterations(client):
    """The lab records every iterate; the last one hides the face from MTCNN."""
    from gradio_client import handle_file

    from faceshield.examples import example_photos

    trace_slider, view, amplified, plot, caption = client.predict(
        handle_file(str(example_photos()["astronaut"])), "detector-pgd", 8, 30, api_name="/lab")
    assert "Iteration" in caption and len(amplified) == 3
    assert plot is not None


def test_each_protection_shows_the_knob_it_uses(photos):
    """The budget slider for the adversarial methods and the noise control, an obfuscation's own
    strength (prefilled with its default) for blur/pixelate/mask, neither for DDM; and a shown
    strength really changes the result."""
    import app
    from faceshield.protections import build

    face = np.ascontiguousarray(photos["astronaut"][:256, 96:352])
    for key in app.METHODS:
        budget, strength = app.method_controls(key)
        if key in ("blur", "pixelate", "mask"):
            assert not budget["visible"] and strength["visible"] and strength["value"] is not None, key
            weak = build(key, strength=strength["value"], whole_image=True)(face, faces=None).pixels
            other = build(key, strength=strength["value"] / 2, whole_image=True)(face, faces=None).pixels
            assert not np.array_equal(weak, other), key
        elif key == "ddm":
            assert not budget["visible"] and not strength["visible"]
        else:
            assert budget["visible"] and not strength["visible"], key
