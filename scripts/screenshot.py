"""Screenshot of the app after protecting the astronaut example, from a real headless Chromium.

    python scripts/screenshot.py docs/screenshot.png      (needs: apt-get install chromium; pip install playwright)
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

import app  # noqa: E402

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(out: str = "docs/screenshot.png") -> None:
    app.demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app.demo.local_url)
            page.locator(".gallery-item, button.gallery").first.click()  # the astronaut example
            page.wait_for_timeout(3000)  # the example loads into the Photo input asynchronously
            page.get_by_role("button", name="Protect").click()
            page.get_by_text("face(s) protected").wait_for(timeout=180_000)
            page.wait_for_timeout(1500)
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        app.demo.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
