"""`gptclassify report`: one self-contained page per run, its sections there, every text escaped,
nothing loaded from the network; opened in headless Chromium where the machine has it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gptclassify.cli import main

SECTIONS = ("recipe", "curves", "classes", "confusion", "calibration", "coverage", "mistakes", "baseline")
HOSTILE = '<script>alert("x")</script> <img src=x onerror=alert(1)> & "quotes"'


class Page(HTMLParser):
    """The ids, the tags and every URL a page would load."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.tags, self.urls = set(), [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id":
                self.ids.add(value)
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, weights_dir):
    """A run on SMS messages, reported on a test split of hostile HTML labelled against what the
    run says, so that every one is among its mistakes."""
    import pandas as pd
    from helpers import sms_slice_dir

    from gptclassify.inference.predict import Classifier

    tmp = tmp_path_factory.mktemp("report")
    data = sms_slice_dir(tmp, 150, 100)
    out = tmp / "run"
    assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(out), "--epochs", "2",
                 "--lr", "3e-3", "--prefix-dtype", "float32"]) == 0
    hostile = shutil.copytree(data, tmp / "hostile")
    texts = [f"{HOSTILE} {i}" for i in range(6)]
    wrong = [{"ham": "spam", "spam": "ham"}[p["label"]] for p in Classifier.load(out, "cpu").predict(texts)]
    pd.DataFrame({"text": texts, "label": wrong}).to_csv(hostile / "test.csv", index=False)
    assert main(["report", str(out), "--data", str(hostile), "--device", "cpu"]) == 0
    return out, data


def test_the_page_has_every_section_escapes_every_text_and_loads_nothing(hostile_run):
    out, _ = hostile_run
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert set(SECTIONS) <= page.ids
    assert "script" not in page.tags and "alert(1)>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text  # the hostile texts, shown as text
    assert all(url.startswith("data:image/png;base64,") for url in page.urls) and len(page.urls) >= 4
    assert "http://" not in text and "https://" not in text


def test_the_coverage_table_and_the_baseline_are_computed_on_the_split(hostile_run):
    from gptclassify.inference.report import coverage_table, gather

    out, data = hostile_run
    got = gather(out, data, "test", "cpu", log=lambda *a: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert got.scored["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    rows = coverage_table(got.probs, got.targets)
    assert rows[0]["coverage"] == 1.0 and rows[0]["accuracy"] == pytest.approx(got.scored["accuracy"])
    assert [r["min_score"] for r in rows] == sorted(r["min_score"] for r in rows)  # less answered: a higher bar
    from gptclassify.inference.predict import Classifier

    clf = Classifier.load(out, "cpu")
    for r in rows:  # --min-score at the table's value answers that share
        answered = [p for p in clf.predict(got.texts, min_score=r["min_score"]) if p["label"] is not None]
        assert len(answered) >= round(r["coverage"] * len(got.texts))
    assert 0 <= got.baseline["accuracy"] <= 1 and got.baseline["seconds"] >= 0


def test_label_sets_and_numbers_get_their_own_report(weights_dir, tmp_path):
    from test_tasks import sms_rows, tags_of, write_csv

    for task, label in (("multi-label", tags_of), ("regression", lambda t: str(len(t.split())))):
        src = write_csv(tmp_path / f"{task}.csv", [(t, label(t)) for t in sms_rows(200)])
        data, run = tmp_path / f"d-{task}", tmp_path / f"r-{task}"
        assert main(["prepare", "csv", str(src), "--label-column", "tags", "--task", task, "--out", str(data)]) == 0
        assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(run),
                     "--epochs", "1"]) == 0
        assert main(["report", str(run)]) == 0
        page = Page((run / "report.html").read_text(encoding="utf-8"))
        assert {"recipe", "classes", "mistakes", "baseline"} <= page.ids
        assert ("calibration" in page.ids) == (task == "multi-label") and "confusion" not in page.ids
        if task == "multi-label":  # each label's threshold, and the rule that chose them
            rule = json.loads((run / "metrics.json").read_text())["validation"]["threshold_rule"]["rule"]
            html = (run / "report.html").read_text(encoding="utf-8")
            assert "<th>threshold</th>" in html and f"Thresholds: the rule {rule}" in html


def test_a_run_whose_data_moved_asks_for_it(hostile_run, tmp_path, capsys):
    out, _ = hostile_run
    moved = tmp_path / "run"
    shutil.copytree(out, moved)
    config = json.loads((moved / "config.json").read_text())
    config["data"]["dir"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["report", str(moved)]) == 1
    err = capsys.readouterr().err
    assert "no prepared data there" in err and "--data DIR" in err and err.count("\n") == 1


def chromium() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return None
    return next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)


@pytest.mark.skipif(chromium() is None, reason="needs Chromium and playwright (apt-get install chromium; "
                                               "pip install playwright)")
def test_the_page_renders_in_headless_chromium_without_the_network(hostile_run):
    from playwright.sync_api import sync_playwright

    out, _ = hostile_run
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=args)
        page = browser.new_page()
        loaded, dialogs = [], []
        page.on("request", lambda r: loaded.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto((out / "report.html").resolve().as_uri())
        visible = {s: page.is_visible(f"#{s}") for s in SECTIONS}
        images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        text = page.inner_text("body")
        browser.close()
    assert all(visible.values()), visible
    assert images and min(images) > 100  # every figure decoded
    assert not dialogs and all(u.startswith(("file:", "data:")) for u in loaded), loaded
    assert f"{HOSTILE} 0" in text  # the hostile text, shown as the text it is
