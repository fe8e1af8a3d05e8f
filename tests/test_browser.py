"""End to end in a real browser: Debian's Chromium driven by Playwright against the app.

One test per page (Protect, Compare, Attack lab, Models) on a small face with fast
protections, the page at a phone's width, and the slower full-photo runs of every protection.
Skipped when Chromium or Playwright is missing (.ci/run installs both)."""

import re
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
VERDICT = re.compile(
    r"Hidden from (\d+) of (\d+) detectors \((?:(\d+) of (\d+) never attacked|all never attacked)\)"
    r"(?: · no longer matched by (\d+) of (\d+) recognisers)?"
)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    import app

    app.demo.queue(max_size=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()
    app.demo.close()


def _open(browser, width: int = 1400, height: int = 1000):
    import app

    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    page.goto(app.demo.local_url)
    return page


@pytest.fixture(scope="module")
def page(browser):
    page = _open(browser)
    yield page
    page.close()


@pytest.fixture(scope="module")
def small_face(photos, tmp_path_factory) -> Path:
    """The astronaut's face, 192 px: quick to protect and judge."""
    path = tmp_path_factory.mktemp("photos") / "face.png"
    Image.fromarray(np.ascontiguousarray(photos["astronaut"][:192, 136:328])).save(path)
    return path


def _page_tab(page, name: str, elem: str):
    page.get_by_role("tab", name=name).click()
    panel = page.locator(f"#{elem}-page")
    panel.wait_for(state="visible", timeout=10_000)
    return panel


def _upload(panel, path) -> None:
    """Upload `path` as the page's photo; returns once the server has stored it."""
    with panel.page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.ok, timeout=30_000):
        panel.locator("input[type=file]").first.set_input_files(str(path))
    panel.page.wait_for_timeout(300)  # the component takes the stored file's path


def _choose(page, method: str) -> None:
    from faceshield.protections import REGISTRY

    page.get_by_role("combobox", name="Protection", exact=True).click()
    page.get_by_role("option", name=REGISTRY[method].title).click()


def _rows(panel, table: str) -> list[list[str]]:
    """The body rows of a Dataframe as the page shows them (its grid's ARIA roles)."""
    rows = [row.locator("[role=gridcell]").all_inner_texts() for row in panel.locator(f"#{table} [role=row]").all()]
    return [[cell.strip() for cell in row] for row in rows if row]


def _open_details(panel) -> None:
    """Open the details section, where the summary names the protection that ran."""
    if not panel.locator("#summary").is_visible():
        panel.get_by_text("Details: settings, image quality, notices").click()


def _click_protect(page, panel, method: str) -> bool:
    """Click Protect and wait for this run's own summary (a verdict from an earlier test on the same
    page is already there, so waiting for any verdict would return at once while this run is still
    queued). False when the page says the protection is not available here."""
    from faceshield.protections import REGISTRY

    _open_details(panel)
    panel.get_by_role("button", name="Protect").click()
    done = panel.get_by_text(re.compile(rf"face\(s\) protected with {re.escape(method)} "))
    refused = page.get_by_text(f"The protection '{REGISTRY[method].title}' is not available here")
    done.or_(refused).first.wait_for(state="attached", timeout=180_000)
    return not refused.count()


def _protect(page, path, method: str):
    panel = _page_tab(page, "Protect", "protect")
    _upload(panel, path)
    _choose(page, method)
    assert _click_protect(page, panel, method)
    return panel, panel.locator(".fs-verdict")


def test_protect_page_verdict_matches_the_table(page, small_face):
    panel, verdict = _protect(page, small_face, "blur")
    assert verdict.get_attribute("data-level") in ("green", "amber", "red")
    text = verdict.inner_text()
    counts = VERDICT.search(text)
    assert counts, text
    rows = [r for r in _rows(panel, "detector-table") if r[2].isdigit() and int(r[2]) > 0]
    hidden = [r for r in rows if r[4] == f"{r[2]}/{r[2]}"]
    assert (int(counts[1]), int(counts[2])) == (len(hidden), len(rows)), (text, rows)
    recognisers = {}
    for r in _rows(panel, "recogniser-table"):
        if r[2].isdigit():
            recognisers.setdefault(r[0], []).append(r[5])
    unmatched = [name for name, matched in recognisers.items() if "yes" not in matched]
    assert (int(counts[5]), int(counts[6])) == (len(unmatched), len(recognisers)), (text, recognisers)
    # the faces before and after, and the amplified change, are crops of the face region
    assert panel.locator("img").count() >= 3
    with page.expect_download() as info:
        panel.locator("#download").get_by_test_id("download-link").click()
    downloaded = Image.open(info.value.path())
    assert downloaded.format == "PNG" and downloaded.size == Image.open(small_face).size


def test_compare_page_with_three_protections(page, small_face):
    panel = _page_tab(page, "Compare", "compare")
    _upload(panel, small_face)
    for key in ("generator", "noise"):  # ticked by default; blur, pixelate and mask stay
        box = panel.get_by_label(re.compile(rf"\({key}\)$"))
        box.uncheck()
    panel.get_by_role("button", name="Compare").click()
    panel.locator("#compare-table [role=row]").nth(3).wait_for(timeout=180_000)
    panel.locator("#compare-crops img").nth(3).wait_for(timeout=30_000)
    rows = _rows(panel, "compare-table")
    assert [r[0] for r in rows] == ["blur", "pixelate", "mask"], rows
    for row in rows:
        assert float(row[1]) > 10 and 0 < float(row[2]) <= 1, row  # PSNR, SSIM
        assert re.fullmatch(r"- · \d+/\d+", row[3]), row  # nothing attacked: every detector is a judge
    panel.locator("#compare-plot img").first.wait_for(timeout=30_000)  # the scatter plot, drawn
    assert panel.locator("#compare-crops img").count() == 4  # the original and three protections


def test_attack_lab_page(page, small_face):
    panel = _page_tab(page, "Attack lab", "lab")
    _upload(panel, small_face)
    steps = panel.locator("#lab-steps input[type=number]")
    steps.fill("5")
    steps.press("Enter")
    panel.get_by_role("button", name="Run the attack").click()
    panel.get_by_text(re.compile(r"Iteration \d+ of \d+")).wait_for(timeout=180_000)
    assert panel.locator("img").count() >= 2


def test_models_page(page):
    panel = _page_tab(page, "Models", "models")
    panel.get_by_text("how it runs").first.wait_for(timeout=30_000)
    text = panel.inner_text()
    assert "MTCNN" in text and "white-box" in text and "black-box" in text


def test_phone_width_stacks_cleanly(browser, small_face, tmp_path):
    """At 390 px the columns stack: nothing is wider than the screen, the verdict sits below the
    photo input, and a full-page screenshot can be taken."""
    page = _open(browser, width=390, height=844)
    try:
        panel, verdict = _protect(page, small_face, "mask")
        photo = panel.locator("input[type=file]").first.locator("xpath=ancestor::*[contains(@class,'block')][1]")
        assert verdict.bounding_box()["y"] > photo.bounding_box()["y"]
        for box in (verdict.bounding_box(), panel.get_by_role("button", name="Protect").bounding_box()):
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, box
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390 + 1, overflow
        shot = tmp_path / "phone.png"
        page.screenshot(path=str(shot), full_page=True)
        assert Image.open(shot).size[0] == 390
    finally:
        page.close()


@pytest.mark.slow
def test_upload_protect_and_download(page, tmp_path):
    """The default protection on the whole portrait: the downloaded PNG hides the face from MTCNN."""
    from faceshield import models
    from faceshield.examples import example_photos

    panel, verdict = _protect(page, example_photos()["astronaut"], "detector-pgd")
    assert "detectors" in verdict.inner_text()
    with page.expect_download() as info:
        panel.locator("#download").get_by_test_id("download-link").click()
    saved = tmp_path / "protected.png"
    info.value.save_as(saved)
    downloaded = Image.open(saved)
    assert downloaded.format == "PNG" and not downloaded.getexif()
    assert len(models.load("mtcnn").detect(np.asarray(downloaded.convert("RGB")))) == 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["generator", "tip-im", "apf", "ddm", "blur", "pixelate", "mask", "noise"])
def test_each_protection_in_the_browser(page, small_face, tmp_path, method):
    """Choose the protection in the dropdown (an iterative one at the page's fewest iterations),
    protect, and download a metadata-free PNG that differs from the photo (or, for a protection
    whose weights cannot load here, a clear message)."""
    from faceshield.page import CONTROLS
    from faceshield.protections import REGISTRY

    source = small_face  # the astronaut's face: quick to judge
    panel = _page_tab(page, "Protect", "protect")
    _open_details(panel)
    _upload(panel, source)
    _choose(page, method)
    if REGISTRY[method].param("steps") is not None:  # an iterative one: the fewest iterations the page allows
        steps = panel.get_by_label("number input for Maximum iterations")
        if not steps.is_visible():  # in the closed "Advanced options"
            panel.get_by_text("Advanced options").click()
        steps.fill(str(CONTROLS["steps"].low))
        steps.press("Enter")
    if not _click_protect(page, panel, method):
        pytest.skip(f"{method}: its weights are not usable here (the page says so)")
    with page.expect_download() as info:
        panel.locator("#download").get_by_test_id("download-link").click()
    saved = tmp_path / f"{method}.png"
    info.value.save_as(saved)
    downloaded = Image.open(saved)
    assert downloaded.format == "PNG" and not downloaded.getexif()
    original = np.asarray(Image.open(source).convert("RGB"))
    assert np.asarray(downloaded.convert("RGB")).shape == original.shape
    assert not np.array_equal(np.asarray(downloaded.convert("RGB")), original)
