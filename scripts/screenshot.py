"""Screenshots of the app after protecting the astronaut example, from a real headless Chromium.

    python scripts/screenshot.py                      -> docs/screenshot.png (detector-pgd)
    python scripts/screenshot.py --all                -> also docs/screenshot-<method>.png for every method
    python scripts/screenshot.py --only apf ddm       -> just those methods' pages
    python scripts/screenshot.py --lab                -> docs/screenshot-lab.png (the Attack lab)
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
from faceshield.protections import METHODS  # noqa: E402

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


def shoot_lab(browser, out: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app.demo.local_url)
    page.get_by_role("tab", name="Attack lab").click()
    page.wait_for_timeout(1000)
    # the Protect page (always visible) lists its 3 examples first; the lab's astronaut comes next
    page.locator(".gallery-item:visible, button.gallery:visible").nth(3).click()
    page.wait_for_timeout(3000)
    page.get_by_role("button", name="Run the attack").click()
    page.get_by_text(re.compile(r"Iteration \d+ of \d+")).wait_for(timeout=300_000)  # the caption, when done
    page.wait_for_timeout(3000)
    page.screenshot(path=str(out), full_page=True)
    page.close()
    print(f"wrote {out}")


def main() -> None:
    app.demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            only = sys.argv[sys.argv.index("--only") + 1 :] if "--only" in sys.argv else []
            if not only and "--lab" not in sys.argv:
                shoot(browser, "detector-pgd", DOCS / "screenshot.png")
            methods = [m for m in METHODS if m != "detector-pgd"] if "--all" in sys.argv else only
            for method in methods:
                tab = "Detectors" if method in ("noise", "generator") else "Recognisers"
                shoot(browser, method, DOCS / f"screenshot-{method}.png", tab)
            if "--lab" in sys.argv or "--all" in sys.argv:
                shoot_lab(browser, DOCS / "screenshot-lab.png")
            browser.close()
    finally:
        app.demo.close()


if __name__ == "__main__":
    main()
