"""Texts kept as files, on real documents: the SpamAssassin e-mails (datasets.py's spam-assassin,
6,046 e-mails, each its subject and body) written one file per e-mail under `ham/<group>/` and
`spam/<group>/` — the corpus's own layout — then `gptclassify prepare folder` on that folder
against `gptclassify prepare csv` on one CSV of the same e-mails in the same order: both must give
the same splits text for text, and the time each takes is what a user waits for before training.

    ../.venv/bin/python folder_input.py          # needs downloads/ (datasets.py spam-assassin)
"""

from __future__ import annotations

import csv
import os

import pandas as pd
from common import save, scratch_dir
from datasets import download, spam_assassin_rows
from long_text import GPTCLASSIFY, measured


def lay_out(rows: list[dict], root) -> list[dict]:
    """One file per e-mail under root/<label>/<group>/; the rows in the folder's sorted-path order."""
    named = []
    for i, r in enumerate(rows):
        path = root / r["label"] / r["group"] / f"{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(r["text"] + "\n", encoding="utf-8")
        named.append({**r, "file": path.relative_to(root).as_posix()})
    return sorted(named, key=lambda r: r["file"].split("/"))


def main():
    work = scratch_dir("gptclassify-folder-")
    rows = [r for r in spam_assassin_rows(download("spam-assassin")) if r["text"].strip()]
    named = lay_out(rows, work / "mail")
    with open(work / "mail.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"], extrasaction="ignore", quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows({**r, "text": r["text"].rstrip()} for r in named)
    megabytes = sum(p.stat().st_size for p in (work / "mail").rglob("*.txt")) / 1e6
    env = dict(os.environ)
    result = {"files": len(named), "megabytes": round(megabytes, 1)}
    for kind, source in (("csv", work / "mail.csv"), ("folder", work / "mail")):
        wall, rss, status = measured([GPTCLASSIFY, "prepare", kind, str(source), "--out", str(work / kind)], env)
        if status != 0:
            raise SystemExit(f"prepare {kind} failed ({status})")
        result[kind] = {"wall_seconds": round(wall, 2), "peak_rss_mb": round(rss)}
        print(f"prepare {kind}: {wall:.2f} s, peak {rss:.0f} MB", flush=True)
    for split in ("train", "validation", "test"):
        a = pd.read_csv(work / "csv" / f"{split}.csv", keep_default_na=False, dtype=str)
        b = pd.read_csv(work / "folder" / f"{split}.csv", keep_default_na=False, dtype=str)
        same = a[["text", "label"]].equals(b[["text", "label"]])
        result[f"{split}_identical"] = bool(same)
        print(f"{split}: {len(a)} texts, identical: {same}", flush=True)
        if not same:
            raise SystemExit(f"{split}: the folder's split differs from the CSV's")
    result["folder_over_csv"] = round(result["folder"]["wall_seconds"] / result["csv"]["wall_seconds"], 2)
    save("folder_input", result)


if __name__ == "__main__":
    main()
