"""Screenshots of the app after protecting the astronaut example, from a real headless Chromium.

    python scripts/screenshot.py                      -> docs/screenshot.png (detector-pgd)
    python scripts/screenshot.py --all                -> also docs/screenshot-<method>.png for every method
(needs: apt-get install chromium; pip install playwright)
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

import app  # noqa: E402
from faceshield.protections import METHODS  # noqa: E402

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def shoot(browser, method: str, out: Path, tab: str = "Detectors") -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app.demo.local_url)
    page.locator(".gallery-item, button.gallery").first.click()  # the astronaut example
    page.wait_for_timeout(3000)  # the example loads into the Photo input asynchronously
    if method != "detector-pgd":
        page.get_by_label("Protection").click()
        page.get_by_role("option", name=METHODS[method].title).click()
    page.get_by_role("button", name="Protect").click()
    page.get_by_text("face(s) protected").wait_for(timeout=180_000)
    page.get_by_role("tab", name=tab).click()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out), full_page=True)
    page.close()
    print(f"wrote {out}")


def main() -> None:
    app.demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            shoot(browser, "detector-pgd", DOCS / "screenshot.png")
            if "--all" in sys.argv:
                for method in METHODS:
                    if method != "detector-pgd":
                        tab = "Recognisers" if method != "noise" else "Detectors"
                        shoot(browser, method, DOCS / f"screenshot-{method}.png", tab)
            browser.close()
    finally:
        app.demo.close()


if __name__ == "__main__":
    main()
