"""Long texts read in windows (`--truncation chunks`): where the windows fall, how their logits
combine, and a run trained, saved, evaluated, predicted and served that way."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gptclassify.classifier.pooling import combine_windows
from gptclassify.cli import main
from gptclassify.data.chunks import Chunking, dropped_tokens, window_starts, windows


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 400), body=st.integers(1, 64), overlap_share=st.floats(0, 0.99), max_chunks=st.integers(1, 9))
def test_windows_cover_the_text_or_spread_from_its_start_to_its_end(n, body, overlap_share, max_chunks):
    overlap = min(int(body * overlap_share), body - 1)
    starts = window_starts(n, body, overlap, max_chunks)
    assert starts[0] == 0 and starts == sorted(starts) and 1 <= len(starts) <= max_chunks
    assert all(0 <= s and (s + body <= n or n <= body) for s in starts)
    if n > body and len(starts) > 1:
        assert starts[-1] == n - body  # the last window ends where the text ends
    read = set().union(*(range(s, min(s + body, n)) for s in starts))
    needed = 1 if n <= body else 1 + -(-(n - body) // (body - overlap))
    if needed <= max_chunks:  # every token read, neighbours sharing at least `overlap`
        assert read == set(range(n))
        assert all(b - a <= body - overlap for a, b in zip(starts, starts[1:]))
    ids = list(range(1000, 1000 + n))
    chunking = Chunking(max_chunks, overlap)
    assert dropped_tokens(n, body, chunking) == n - len(read)
    assert [w for w in windows(ids, body, chunking)] == [ids[s:s + body] for s in starts]


def test_the_models_start_token_opens_every_window_and_a_bad_overlap_is_refused():
    from gptclassify.errors import UserError

    ids = [7] + list(range(20))  # a BOS, then 20 tokens of text
    got = windows(ids, 9, Chunking(8, 2), fixed=1)
    assert all(w[0] == 7 and len(w) <= 9 for w in got)
    assert sorted(set(t for w in got for t in w[1:])) == list(range(20))
    with pytest.raises(UserError, match="--chunk-overlap 8 must be under the window's 8 tokens"):
        windows(ids, 9, Chunking(8, 8), fixed=1)


def test_windows_combine_into_each_texts_mean_or_max_and_every_window_gets_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(7, 3, requires_grad=True)
    owners = torch.tensor([0, 0, 0, 1, 2, 2, 3])
    for how, reduce in (("mean", lambda x: x.mean(0)), ("max", lambda x: x.max(0).values)):
        got = combine_windows(logits, owners, how)
        want = torch.stack([reduce(logits[owners == i]) for i in range(4)])
        assert torch.allclose(got, want)
        (grad,) = torch.autograd.grad(got.sum(), logits)
        if how == "mean":
            assert torch.allclose(grad[:, 0], torch.tensor([1 / 3] * 3 + [1.0] + [0.5] * 2 + [1.0]))
        else:  # the window that gave each maximum
            assert grad.sum().item() == 12 and ((grad == 0) | (grad == 1)).all()


# ---------------------------------------------------------------- a run read in windows


def long_rows(task: str = "single-label", n: int = 120) -> list[tuple[str, str]]:
    """Texts of six SMS messages each (about 120 GPT-2 tokens): single-label, whether one of them
    asks a question; multi-label, the tags of `test_tasks.tags_of` met anywhere in the text."""
    from test_tasks import sms_rows, tags_of

    messages = sms_rows(4 * n + 6)
    texts = [" ".join(messages[i:i + 6]) for i in range(0, 4 * n, 4)]
    if task == "multi-label":
        return [(t, tags_of(t)) for t in texts]
    return [(t, "question" if "?" in t else "statement") for t in texts]


@pytest.fixture(scope="module", params=["single-label", "multi-label"])
def long_dir(request, tmp_path_factory):
    from test_tasks import write_csv

    tmp = tmp_path_factory.mktemp("long")
    src = write_csv(tmp / "long.csv", long_rows(request.param))
    assert main(["prepare", "csv", str(src), "--label-column", "tags", "--task", request.param,
                 "--out", str(tmp / "d")]) == 0
    return tmp / "d", request.param


CHUNKS = ["--truncation", "chunks", "--max-length", "32", "--max-chunks", "6", "--chunk-overlap", "4"]


@pytest.mark.parametrize("trainable", ["last-block", "lora"])
def test_a_chunked_run_reads_every_window_and_its_loss_is_torchs_on_the_combined_logits(trainable, long_dir,
                                                                                         weights_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from gptclassify.classifier.prefix import run_logits
    from gptclassify.data.batches import Collate
    from gptclassify.data.splits import load_data_split
    from gptclassify.inference.evaluate import evaluate_run
    from gptclassify.inference.predict import Classifier
    from gptclassify.inference.serve import create_app

    data, task = long_dir
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(run), "--epochs", "2",
                 "--lr", "1e-3", "--prefix-dtype", "float32", "--trainable", trainable, *CHUNKS]) == 0
    log = capsys.readouterr().out
    assert "length: windows of 32 tokens (--max-length) overlapping by 4, at most 6 per text (--max-chunks)" in log
    if trainable == "last-block":  # the windows said before the pass that reads them
        assert "frozen pass:" in log.split("length: windows")[1]
    config = json.loads((run / "config.json").read_text())
    assert (config["truncation"], config["max_chunks"], config["chunk_overlap"]) == ("chunks", 6, 4)

    clf = Classifier.load(run, "cpu")
    texts, targets = load_data_split(data, "test", clf.labels, task)
    per_text = [clf.encode_windows(t) for t in texts]
    assert max(len(w) for w in per_text) > 1 and all(len(x) <= 32 for ws in per_text for x in ws)
    flat = [w for ws in per_text for w in ws]
    ids, _, lengths = Collate(clf.tokenizer.pad_id)([(w, 0) for w in flat])
    with torch.no_grad():
        window_logits = run_logits(clf.model, clf.prefix, ids, lengths, clf.pooling).float()
    owners = [i for i, ws in enumerate(per_text) for _ in ws]
    groups = [window_logits[[j for j, o in enumerate(owners) if o == i]] for i in range(len(texts))]
    if task == "multi-label":  # a label's strongest window, then torch's binary cross-entropy
        logits = torch.stack([g.max(0).values for g in groups])
        reference = torch.nn.BCEWithLogitsLoss()(logits, torch.tensor(targets)).item()
    else:  # the windows' mean, then torch's cross-entropy
        logits = torch.stack([g.mean(0) for g in groups])
        reference = F.cross_entropy(logits, torch.tensor(targets)).item()
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert abs(test["loss"] - reference) < 1e-5
    again = evaluate_run(run, data, "test", "cpu")
    assert abs(again["loss"] - test["loss"]) < 1e-5
    probs = clf.probabilities(texts)
    expected = torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, -1)
    assert (probs - expected).abs().max().item() < 1e-5
    with TestClient(create_app(clf, run)) as client:
        answer = client.post("/v1/classify", json={"texts": texts[:3]})
        assert answer.status_code == 200
        assert answer.json()["predictions"] == json.loads(json.dumps(clf.predict(texts[:3])))


def test_chunked_training_from_the_feature_cache_equals_training_from_token_ids(long_dir, weights_dir, tmp_path):
    data, _ = long_dir
    for name, extra in (("cached", []), ("ids", ["--no-cache"])):
        assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(tmp_path / name),
                     "--epochs", "1", "--lr", "1e-3", "--prefix-dtype", "float32", *CHUNKS, *extra]) == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text())["step_loss"] for n in ("cached", "ids"))
    assert len(a) == len(b) > 5 and max(abs(x - y) for x, y in zip(a, b)) < 1e-5


def test_chunk_settings_that_mean_nothing_are_refused(long_dir, weights_dir, tmp_path, capsys):
    data, _ = long_dir
    for extra, message in [
        (["--max-chunks", "4"], "--max-chunks and --chunk-overlap shape the windows of --truncation chunks"),
        (["--truncation", "chunks", "--max-length", "16", "--chunk-overlap", "16"],
         "--chunk-overlap 16 must be under the window's 16 tokens"),
    ]:
        capsys.readouterr()
        assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(tmp_path / "r"),
                     *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_pairs_are_not_read_in_windows(weights_dir, tmp_path, capsys):
    from test_tasks import pair_rows, write_csv

    src = write_csv(tmp_path / "pairs.csv", pair_rows(), ("q", "a", "label"))
    assert main(["prepare", "csv", str(src), "--text-column", "q", "--text-pair-column", "a",
                 "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "d"), "--weights", str(weights_dir), "--out", str(tmp_path / "r"),
                 "--truncation", "chunks"]) == 1
    assert "pairs of texts are cut by --truncation head, tail or head+tail" in capsys.readouterr().err
