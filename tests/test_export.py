"""`gptclassify export`: every family we train, as transformers' Auto classes load it and as ONNX
Runtime runs it, scores 50 texts (padded batches, texts longer than the run's max_length, an empty
one) as `Classifier.predict` does, within 1e-4; a service started with `--backend onnxruntime` with
torch made unimportable answers as the torch one; bad requests are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from gptclassify.cli import main
from gptclassify.inference.predict import Classifier
from helpers import gpt2_tokenizer_json, sms_slice_dir, small_gpt2_dir

transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FAMILIES = ["gpt2", "llama3", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]
LONG = "Dear customer, " + "your account statement is ready and waiting for you. " * 40  # over any max_length


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sms_slice_dir(tmp_path_factory.mktemp("export-data"), n_ham=20, n_spam=12)


def texts_of(sms, n=50) -> list[str]:
    return [LONG, "", "a", *sms[:n - 3]]


def weights_of(tmp_path, family: str):
    if family == "gpt2":
        return small_gpt2_dir(tmp_path)
    from test_families import save_tiny

    path, _ = save_tiny(tmp_path, family)
    gpt2_tokenizer_json(path / "tokenizer.json")
    if family == "gemma3":  # a model that wants its BOS before every text: the export must add it too
        from tokenizers import Tokenizer, processors

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                           special_tokens=[("<|endoftext|>", 50256)])
        tok.save(str(path / "tokenizer.json"))
    return path


def train(tmp_path, data, family: str, *options) -> object:
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", str(weights_of(tmp_path, family)), "--out", str(run),
                 "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--prefix-dtype", "float32",
                 "--truncation", "head", "--max-length", "48", *options]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """One small run per family, trained on first use."""
    made = {}

    def run_of(family):
        if family not in made:
            made[family] = train(tmp_path_factory.mktemp(f"export-{family}"), data, family)
        return made[family]
    return run_of


def export(run, fmt, out, *extra) -> int:
    return main(["export", str(run), "--format", fmt, "--out", str(out), *extra])


def hf_probabilities(folder, texts, pairs=None) -> torch.Tensor:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer(texts, pairs, padding=True, truncation=True, return_tensors="pt")
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].shape[1]  # a padded batch
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_loads_the_export_and_scores_as_predict(tmp_path, runs, family, sms):
    run = runs(family)
    texts = [t or "." for t in texts_of(sms)]  # transformers cannot run an empty sequence; ours reads a pad
    assert export(run, "transformers", tmp_path / "hf") == 0
    clf = Classifier.load(run, device="cpu")
    ours = clf.probabilities(texts)
    if family == "qwen2":  # transformers reads any qwen2 tokenizer as its Qwen2Tokenizer (Qwen's pre-tokenizer, not
        # this test's GPT-2 one): the network is checked on our token ids, padded, and the card says so
        encoded = [clf.encode(t) for t in texts]
        width = max(map(len, encoded))
        ids = torch.tensor([e + [clf.tokenizer.pad_id] * (width - len(e)) for e in encoded])
        model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
        with torch.no_grad():
            theirs = model(input_ids=ids, attention_mask=(ids != clf.tokenizer.pad_id).long()).logits.softmax(-1)
        assert "Qwen2Tokenizer" in (tmp_path / "hf" / "README.md").read_text()
    else:
        theirs = hf_probabilities(tmp_path / "hf", texts).softmax(-1)
    assert (ours - theirs).abs().max().item() < 1e-4
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"] == {"0": "ham", "1": "spam"} and config["problem_type"] == "single_label_classification"
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "from_pretrained" in card and "Largest score difference" in card


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_runtime_scores_the_export_as_predict(tmp_path, runs, family, sms):
    from gptclassify.inference.onnx_runtime import OnnxClassifier

    run = runs(family)
    assert export(run, "onnx", tmp_path / "onnx") == 0
    texts = texts_of(sms)
    ours = Classifier.load(run, device="cpu").probabilities(texts, batch_size=16).numpy()
    theirs = OnnxClassifier.load(tmp_path / "onnx").probabilities(texts, batch_size=16)
    assert abs(ours - theirs).max() < 1e-4
    assert [p["label"] for p in OnnxClassifier.load(tmp_path / "onnx").predict(texts)] == \
        [p["label"] for p in Classifier.load(run, device="cpu").predict(texts)]


def test_the_gpt2_export_folds_bias_and_calibration_exactly(tmp_path, data, sms):
    """A GPT-2 head's bias moved into ln_f's shift, a temperature into the score weights: the run's
    calibrated probabilities, to float32's precision."""
    run = train(tmp_path, data, "gpt2")
    config = json.loads((run / "config.json").read_text())
    config["temperature"] = 1.7  # as calibration would have set it on a larger validation split
    (run / "config.json").write_text(json.dumps(config))
    assert export(run, "transformers", tmp_path / "hf") == 0
    texts = sms[:20]
    ours = Classifier.load(run, device="cpu").probabilities(texts)
    assert (ours - hf_probabilities(tmp_path / "hf", texts).softmax(-1)).abs().max().item() < 1e-5


def test_pairs_multi_label_and_regression_export(tmp_path, sms):
    """A pair run's tokenizer joins the two texts as the run did; a multi-label run is
    multi_label_classification; a GPT-2 regression's outputs are in the target's units."""
    rows = [{"text": t, "text_pair": sms[i + 1], "label": "a|b" if i % 3 == 0 else ("b" if i % 3 == 1 else ""),
             "value": float(len(t) % 7), "klass": "x" if i % 2 else "y"} for i, t in enumerate(sms[:40])]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    weights = small_gpt2_dir(tmp_path)
    common = ["--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--prefix-dtype", "float32",
              "--truncation", "head", "--max-length", "40"]
    for task, extra in (("pairs", ["--text-pair-column", "text_pair", "--label-column", "klass"]), ("multi-label", ["--task", "multi-label"]),
                        ("regression", ["--task", "regression", "--label-column", "value"])):
        d, run, out = tmp_path / f"data-{task}", tmp_path / f"run-{task}", tmp_path / f"hf-{task}"
        assert main(["prepare", "csv", str(src), "--out", str(d), *extra]) == 0
        assert main(["train", "--data", str(d), "--model", str(weights), "--out", str(run), *common]) == 0
        assert export(run, "transformers", out) == 0
        clf = Classifier.load(run, device="cpu")
        if task == "pairs":
            firsts, seconds = [r["text"] for r in rows[:12]], [r["text_pair"] for r in rows[:12]]
            ours = clf.probabilities(list(zip(firsts, seconds)))
            theirs = hf_probabilities(out, firsts, seconds).softmax(-1)
        else:
            texts = sms[:12]
            ours, logits = clf.probabilities(texts), hf_probabilities(out, texts)
            theirs = logits.sigmoid() if task == "multi-label" else logits
            kind = json.loads((out / "config.json").read_text())["problem_type"]
            assert kind == {"multi-label": "multi_label_classification", "regression": "regression"}[task]
        assert (ours - theirs).abs().max().item() < 1e-4, task


def test_service_runs_from_the_onnx_folder_without_torch(tmp_path, runs, sms):
    """`serve --backend onnxruntime` in a process where torch (and transformers, tiktoken, safetensors)
    cannot be imported answers as the torch service does."""
    from test_serve import free_port, request, wait_until_up

    run = runs("gpt2")
    assert export(run, "onnx", tmp_path / "onnx") == 0
    port = free_port()
    blocked = ["torch", "transformers", "tiktoken", "safetensors", "matplotlib"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); from gptclassify.cli import main; "
            f"sys.exit(main(['serve', {str(tmp_path / 'onnx')!r}, '--backend', 'onnxruntime', '--port', '{port}']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        texts = sms[:10]
        status, body = request(url + "/v1/classify", {"texts": texts})
        assert status == 200
        answered = json.loads(body)["predictions"]
        expected = Classifier.load(run, device="cpu").predict(texts)
        assert [a["label"] for a in answered] == [e["label"] for e in expected]
        assert max(abs(a["score"] - e["score"]) for a, e in zip(answered, expected)) < 1e-4
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_predict_with_the_onnx_backend(tmp_path, runs, capsys):
    run = runs("gpt2")
    assert export(run, "onnx", tmp_path / "onnx") == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "onnx"), "--backend", "onnxruntime", "WINNER! Claim your prize"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), "--device", "cpu", "WINNER! Claim your prize"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < 1e-4


def test_bad_exports_are_refused_in_one_line(tmp_path, runs, data, capsys):
    run = runs("gpt2")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    assert export(run, "onnx", out) == 1
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "the user's file"
    assert export(run, "transformers", out, "--overwrite") == 0  # replaced whole, in one rename
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert export(run, "transformers", run, "--overwrite") == 1
    assert "would replace the run" in capsys.readouterr().err and (run / "model.safetensors").is_file()
    assert export(tmp_path / "nowhere", "onnx", tmp_path / "x") == 1
    assert "not a gptclassify run" in capsys.readouterr().err
    (tmp_path / "mean").mkdir()
    mean = train(tmp_path / "mean", data, "gpt2", "--pooling", "mean")
    capsys.readouterr()
    assert export(mean, "transformers", tmp_path / "hf-mean") == 1
    err = capsys.readouterr().err
    assert "pools 'mean'" in err and "--format onnx" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "hf-mean").exists()
    assert main(["predict", str(run), "--backend", "onnxruntime", "hi"]) == 1
    assert "no model.onnx" in capsys.readouterr().err


def test_an_old_llama_run_with_a_head_bias_is_refused(tmp_path, runs, capsys):
    """Runs before the Llama family's head lost its bias load and predict, but cannot be a transformers
    classifier exactly: the export says so in one line."""
    import shutil

    from gptclassify.files import load_safetensors, save_safetensors

    old = tmp_path / "old"
    shutil.copytree(runs("qwen3"), old)
    state = load_safetensors(old / "model.safetensors")
    state["out_head.bias"] = torch.tensor([0.3, -0.3])
    save_safetensors(state, old / "model.safetensors")
    assert Classifier.load(old, device="cpu").predict("hello")["label"] in ("ham", "spam")
    assert export(old, "transformers", tmp_path / "hf") == 1
    err = capsys.readouterr().err
    assert "head has a bias" in err and len(err.strip().splitlines()) == 1


def test_lora_chunks_and_multi_label_runs_export(tmp_path, data, sms):
    """A LoRA run exports its merged weights; a run that reads long texts in windows exports to ONNX
    and combines them as the torch backend does (mean; a multi-label run's max, with its thresholds)."""
    from gptclassify.inference.onnx_runtime import OnnxClassifier

    (tmp_path / "lora").mkdir()
    lora = train(tmp_path / "lora", data, "qwen3", "--trainable", "lora", "--lora-rank", "4")
    assert export(lora, "transformers", tmp_path / "lora-hf") == 0
    texts = sms[:16]
    ours = Classifier.load(lora, device="cpu").probabilities(texts)
    assert (ours - hf_probabilities(tmp_path / "lora-hf", texts).softmax(-1)).abs().max().item() < 1e-4

    rows = [{"text": t, "label": "a|b" if i % 3 == 0 else ("b" if i % 3 == 1 else "a")} for i, t in enumerate(sms[:40])]
    src = tmp_path / "tags.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tags = tmp_path / "tags"
    assert main(["prepare", "csv", str(src), "--out", str(tags), "--task", "multi-label"]) == 0
    long_texts = [LONG, LONG[:300] + " WINNER claim now", *sms[:10]]
    for name, d in (("chunks", data), ("tags", tags)):
        (tmp_path / f"{name}-run").mkdir()
        run = tmp_path / f"{name}-run" / "run"
        assert main(["train", "--data", str(d), "--model", str(small_gpt2_dir(tmp_path / f"{name}-run")), "--out", str(run),
                     "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--prefix-dtype", "float32",
                     "--truncation", "chunks", "--max-length", "16", "--max-chunks", "4"]) == 0
        assert export(run, "onnx", tmp_path / f"{name}-onnx") == 0
        clf, onnx = Classifier.load(run, device="cpu"), OnnxClassifier.load(tmp_path / f"{name}-onnx")
        assert len(clf.encode_windows(LONG)) == 4
        assert abs(clf.probabilities(long_texts).numpy() - onnx.probabilities(long_texts)).max() < 1e-4, name
        key = "label" if name == "chunks" else "labels"
        assert [p[key] for p in onnx.predict(long_texts)] == [p[key] for p in clf.predict(long_texts)]
