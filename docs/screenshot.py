"""Makes docs/screenshot.png: the live page of a real server in headless Chromium.

    python3 docs/screenshot.py

The server streams test:// through the tests' red-square model (tests/onnx_models.py), which
finds the scene's red square, so the picture shows boxes, labels and the FPS overlay as a camera's
stream would. Needs Chromium (apt-get install chromium) and Playwright (requirements-dev.txt).
"""
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import onnx_models  # noqa: E402
from browser import CHROMIUM_ARGS  # noqa: E402
from streaming import Server  # noqa: E402

OUT = os.path.join(HERE, "screenshot.png")


def main():
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as folder:
        model = onnx_models.red_square(os.path.join(folder, "red_square.onnx"))
        with Server("serve", "--source", "test://?fps=15", "--model", model, "--conf", "0.3") as server:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1100, "height": 620})
                    page.goto("http://127.0.0.1:{}/".format(server.port))
                    page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=20000)
                    time.sleep(6)  # the stats and the chart fill in, once a second
                    page.screenshot(path=OUT)
                finally:
                    browser.close()
    print(OUT)


if __name__ == "__main__":
    main()
