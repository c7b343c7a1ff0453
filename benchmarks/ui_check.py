"""The page at `/` in a real browser: start `gptclassify serve`, open the page in headless
Chromium, type a message, click Classify, read the verdict back and take a screenshot.

Needs Debian's Chromium and the Playwright driver (no browser download):
    apt-get install -y chromium && pip install playwright
    python benchmarks/ui_check.py [--run RUN]
"""

from __future__ import annotations

import argparse

from common import RESULTS, benchmark_run, serving

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--message", default="WINNER!! You have been selected to receive a $1000 prize. Call 09061701461 to claim now.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from gptclassify import Classifier

    run = args.run or benchmark_run()
    with serving(run) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 520})
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('labels')")
        page.fill("#text", args.message)
        page.click("#classify")
        page.wait_for_function("document.getElementById('verdict').textContent.includes('%')")
        verdict, details, model = (page.text_content(s) for s in ("#verdict", "#details", "#model"))
        RESULTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(RESULTS / "ui.png"))
        browser.close()
    expected = Classifier.load(run, device="cpu").predict(args.message)
    print({"model": model, "verdict": verdict, "details": details, "expected_label": expected["label"]})
    assert verdict.startswith(expected["label"]), (verdict, expected)
    print(f"verdict read back matches Classifier.predict; screenshot: {RESULTS / 'ui.png'}")


if __name__ == "__main__":
    main()
