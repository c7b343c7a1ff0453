"""A `gptclassify report` page in a real browser: make the report of a run, open it in headless
Chromium (no network), check its sections show, and take a full-page screenshot.

Needs Debian's Chromium and the Playwright driver (no browser download):
    apt-get install -y chromium && pip install playwright
    python benchmarks/report_check.py RUN [--data DIR]      # -> results/report.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS
from ui_check import CHROMIUM_ARGS

SECTIONS = ("recipe", "curves", "classes", "confusion", "calibration", "coverage", "mistakes", "baseline")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from gptclassify.inference.report import gather
    from gptclassify.inference.report_html import write_report

    page_path = Path(write_report(gather(args.run, args.data, device="cpu")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.resolve().as_uri())
        shown = {s: page.is_visible(f"#{s}") for s in SECTIONS}
        RESULTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(RESULTS / "report.png"), full_page=True)
        browser.close()
    print({"sections_visible": shown, "network_requests": [u for u in requests if not u.startswith(("file:", "data:"))],
           "screenshot": str(RESULTS / "report.png")})


if __name__ == "__main__":
    main()
