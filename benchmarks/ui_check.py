"""The page at `/` in a real browser: start `gptclassify serve`, open the page in headless
Chromium, type a message, click Classify, read the verdict back and take a screenshot.

Needs Debian's Chromium and the Playwright driver (no browser download):
    apt-get install -y chromium && pip install playwright
    python benchmarks/ui_check.py [--run RUN]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request

from common import RESULTS, benchmark_run

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--message", default="WINNER!! You have been selected to receive a $1000 prize. Call 09061701461 to claim now.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    run = args.run or benchmark_run()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "gptclassify.cli", "serve", str(run), "--port", str(port),
                               "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 800, "height": 520})
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.includes('labels')")
            page.fill("#text", args.message)
            page.click("#classify")
            page.wait_for_function("document.getElementById('verdict').textContent.includes('%')")
            verdict = page.text_content("#verdict")
            details = page.text_content("#details")
            model = page.text_content("#model")
            RESULTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(RESULTS / "ui.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = __import__("gptclassify").Classifier.load(run, device="cpu").predict(args.message)
    print({"model": model, "verdict": verdict, "details": details, "expected_label": expected["label"]})
    assert verdict.startswith(expected["label"]), (verdict, expected)
    print(f"verdict read back matches Classifier.predict; screenshot: {RESULTS / 'ui.png'}")


if __name__ == "__main__":
    main()
