"""Offline by construction, one torch thread, images from installed packages."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("FACESHIELD_THREADS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from faceshield.examples import example_photos  # noqa: E402
from faceshield.images import load_image  # noqa: E402

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """astronaut (skimage), bus and zidane (ultralytics) as RGB uint8."""
    found = example_photos()
    assert set(found) == {"astronaut", "bus", "zidane"}, f"example photos missing: {found}"
    return {name: load_image(path).pixels for name, path in found.items()}


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    if not SHARED_FACES.is_dir():
        pytest.skip("../shared/data/faces is not beside this checkout")
    return SHARED_FACES


@pytest.fixture(scope="module")
def client():
    """The app served as `python app.py` serves it (show_error off), called through its API."""
    from gradio_client import Client

    import app

    app.launch(prevent_thread_lock=True, quiet=True)
    yield Client(app.demo.local_url, verbose=False)
    app.demo.close()


def protect_args(path, **kw) -> dict:
    """Keyword arguments of the /protect endpoint (page.protect_api(): made from the declared
    options): the page's defaults, `path` uploaded, `kw` on top."""
    from gradio_client import handle_file

    args = {
        "image_path": handle_file(str(path)) if path else None,
        "method": "detector-pgd",
        "eps": 8,
        "steps": 80,
        "whole_image": False,
        "mode": "dodging",
        "targets": None,
        "robust": False,
        "norm": "linf",
        "same_person": None,
        "strength": None,
        "slow_judges": False,
        "reference_path": None,
    }
    return {**args, **kw}
