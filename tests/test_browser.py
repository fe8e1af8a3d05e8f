"""End to end in a real browser: Debian's Chromium driven by Playwright against the app.

Skipped when Chromium or Playwright is missing (.ci/run installs both)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    import app

    app.demo.queue(max_size=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(app.demo.local_url)
        yield page
        browser.close()
    app.demo.close()


@pytest.mark.slow
def test_upload_protect_and_download(page, tmp_path):
    from faceshield import models
    from faceshield.examples import example_photos

    page.locator("input[type=file]").first.set_input_files(str(example_photos()["astronaut"]))
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Protect").click()
    page.get_by_text("face(s) protected").wait_for(timeout=180_000)
    assert page.get_by_text("What each face detector finds").is_visible()
    page.get_by_role("tab", name="Recognisers").click()
    page.locator("text=dlib ResNet >> visible=true").first.wait_for(timeout=10_000)
    with page.expect_download() as info:
        page.get_by_test_id("download-link").first.click()
    saved = tmp_path / "protected.png"
    info.value.save_as(saved)
    downloaded = Image.open(saved)
    assert downloaded.format == "PNG" and not downloaded.getexif()
    assert len(models.load("mtcnn").detect(np.asarray(downloaded.convert("RGB")))) == 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["generator", "tip-im", "apf", "ddm", "blur", "pixelate", "mask", "noise"])
def test_each_protection_in_the_browser(page, tmp_path, method):
    """Choose the protection in the dropdown, protect, and download a metadata-free PNG that
    differs from the photo."""
    import re

    from faceshield.examples import example_photos
    from faceshield.protections import METHODS

    source = example_photos()["astronaut"]
    page.locator("input[type=file]").first.set_input_files(str(source))
    page.wait_for_timeout(1500)
    page.get_by_label("Protection").click()
    page.get_by_role("option", name=METHODS[method].title).click()
    page.get_by_role("button", name="Protect").click()
    page.get_by_text(re.compile(rf"face\(s\) protected with {re.escape(method)} ")).wait_for(timeout=180_000)
    with page.expect_download() as info:
        page.get_by_test_id("download-link").first.click()
    saved = tmp_path / f"{method}.png"
    info.value.save_as(saved)
    downloaded = Image.open(saved)
    assert downloaded.format == "PNG" and not downloaded.getexif()
    original = np.asarray(Image.open(source).convert("RGB"))
    assert np.asarray(downloaded.convert("RGB")).shape == original.shape
    assert not np.array_equal(np.asarray(downloaded.convert("RGB")), original)
