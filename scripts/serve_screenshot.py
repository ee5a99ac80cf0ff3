"""Screenshot of `pathvqa serve` on the models `make demo` trained, for the README (docs/images/serve.png).

Starts the app, picks a demo test image in a headless system Chromium (Playwright), asks two
questions and saves the page.

    python scripts/serve_screenshot.py [--demo runs/demo] [--out docs/images/serve.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from pathvqa.apps.serve import demo_examples

PORT = 7871


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"pathvqa serve exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"pathvqa serve did not answer at {url} within {seconds:.0f} s")


def ask(page, question: str) -> None:
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    page.get_by_text(question, exact=False).last.wait_for(timeout=60_000)
    page.locator("#answers table").wait_for(timeout=60_000)
    time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", default="runs/demo")
    parser.add_argument("--out", default="docs/images/serve.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no system Chromium: apt-get install chromium")
    examples = demo_examples(Path(args.demo))
    if len(examples) < 3:
        sys.exit(f"no demo test images in {args.demo}: run `make demo` first")
    url = f"http://127.0.0.1:{PORT}/"
    cmd = [sys.executable, "-m", "pathvqa", "serve", "--demo-dir", args.demo, "--port", str(PORT)]
    proc = subprocess.Popen(cmd)
    try:
        wait_for(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url)
            page.get_by_text(examples[2][1], exact=True).first.click()  # a demo test image and question
            time.sleep(1)
            page.locator("#ask").click()
            page.locator("#answers table").wait_for(timeout=60_000)
            time.sleep(1)
            ask(page, "what stain was used for this section?")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
