"""Screenshots of the app from a real headless Chromium, on the astronaut example.

    python scripts/screenshot.py                 -> docs/screenshot.png (Protect with detector-pgd: the verdict
                                                    first), docs/screenshot-compare.png (Compare),
                                                    docs/screenshot-phone.png (Protect at 390 px wide)
    python scripts/screenshot.py --all           -> also docs/screenshot-<method>.png for every method and the lab
    python scripts/screenshot.py --only apf ddm  -> just those methods' Protect pages
    python scripts/screenshot.py --lab           -> docs/screenshot-lab.png (the Attack lab)
(needs: apt-get install chromium; pip install playwright)
"""

import os
import re
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

import app  # noqa: E402
from faceshield.protections import REGISTRY, build  # noqa: E402
from faceshield.service import ProtectionUnavailable, check_weights  # noqa: E402

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[1] / "docs"
# The Compare screenshot: an attack (its attacked and never-attacked models apart) beside the
# fast protections; the generator too when its weights load here.
COMPARED = ("detector-pgd", "generator", "blur", "pixelate", "mask", "noise")
PANELS = {"Protect": "#protect-page", "Compare": "#compare-page", "Attack lab": "#lab-page"}


def _open(browser, tab: str, width: int = 1400, height: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(app.demo.local_url)
    page.get_by_role("tab", name=tab).click()
    panel = page.locator(PANELS[tab])
    panel.wait_for(state="visible")
    panel.get_by_role("button", name=re.compile("^Frontal portrait")).click()  # the astronaut example
    page.wait_for_timeout(3000)  # the example loads into the Photo input asynchronously
    return page, panel


def _save(page, out: Path) -> None:
    page.screenshot(path=str(out), full_page=True)
    page.close()
    print(f"wrote {out}")


def shoot(browser, method: str, out: Path, width: int = 1400) -> None:
    page, panel = _open(browser, "Protect", width=width, height=1000 if width > 600 else 844)
    if method != "detector-pgd":
        page.get_by_role("combobox", name="Protection", exact=True).click()
        page.get_by_role("option", name=REGISTRY[method].title).click()
    panel.get_by_role("button", name="Protect").click()
    panel.locator(".fs-verdict").or_(page.get_by_text("is not available here")).first.wait_for(timeout=300_000)
    page.wait_for_timeout(1500)
    _save(page, out)


def _usable(method: str) -> bool:
    try:
        check_weights(build(method))
        return True
    except ProtectionUnavailable:
        return False


def shoot_compare(browser, out: Path) -> None:
    page, panel = _open(browser, "Compare", height=1100)
    chosen = [key for key in COMPARED if _usable(key)]
    for key in REGISTRY:
        panel.get_by_label(re.compile(rf"\({re.escape(key)}\)$")).set_checked(key in chosen)
    panel.get_by_role("button", name="Compare").click()
    panel.locator("#compare-table [role=row]").nth(len(chosen)).wait_for(timeout=600_000)  # header + a row each
    panel.locator("#compare-plot img").first.wait_for(timeout=30_000)
    page.wait_for_timeout(3000)
    _save(page, out)


def shoot_lab(browser, out: Path) -> None:
    page, panel = _open(browser, "Attack lab", height=1100)
    panel.get_by_role("button", name="Run the attack").click()
    panel.get_by_text(re.compile(r"Iteration \d+ of \d+")).wait_for(timeout=300_000)  # the caption, when done
    page.wait_for_timeout(3000)
    _save(page, out)


def main() -> None:
    app.demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            only = (
                [a for a in sys.argv[sys.argv.index("--only") + 1 :] if not a.startswith("--")]
                if "--only" in sys.argv
                else []
            )
            if not only and "--lab" not in sys.argv:
                shoot(browser, "detector-pgd", DOCS / "screenshot.png")
                shoot_compare(browser, DOCS / "screenshot-compare.png")
                shoot(browser, "blur", DOCS / "screenshot-phone.png", width=390)
            methods = [m for m in REGISTRY if m != "detector-pgd"] if "--all" in sys.argv else only
            for method in methods:
                shoot(browser, method, DOCS / f"screenshot-{method}.png")
            if "--lab" in sys.argv or "--all" in sys.argv:
                shoot_lab(browser, DOCS / "screenshot-lab.png")
            browser.close()
    finally:
        app.demo.close()


if __name__ == "__main__":
    main()
