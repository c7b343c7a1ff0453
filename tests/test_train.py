"""Fine-tuning: the book's numbers and losses, Hugging Face's classifier logits, resume, the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gptclassify import load_pretrained
from gptclassify.classifier.head import add_classifier_head, classify_logits, freeze_all_but
from helpers import interrupt_after_epoch
from gptclassify.cli import main
from gptclassify.models.gpt2 import GPTModel, gpt2_config
from gptclassify.training.run import train, train_run
from gptclassify.training.prepare import prepare
from gptclassify.config import FAMILY_DEFAULTS, make_config, with_family_defaults
from gptclassify.training.steps import lr_factor

transformers = pytest.importorskip("transformers")


def quiet(*args, **kwargs):
    pass


def test_trainable_parameters_of_gpt2_last_block():
    with torch.device("meta"):
        model = GPTModel(gpt2_config("gpt2"))
        add_classifier_head(model, 2)
    assert freeze_all_but(model, "last-block") == (7_090_946, 124_441_346)
    assert freeze_all_but(model, "head")[0] == 768 * 2 + 2
    assert freeze_all_but(model, "all")[0] == 124_441_346


def book_dataset(csv_file, tokenizer, max_length=None):
    """Chapter 6's SpamDataset: texts padded to the longest (or cut to max_length), labels ham 0, spam 1."""
    from torch.utils.data import Dataset

    class SpamDataset(Dataset):
        def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=50256):
            self.data = pd.read_csv(csv_file, keep_default_na=False)
            self.encoded_texts = [tokenizer.encode(text) for text in self.data["text"]]
            if max_length is None:
                self.max_length = max(len(e) for e in self.encoded_texts)
            else:
                self.max_length = max_length
                self.encoded_texts = [e[: self.max_length] for e in self.encoded_texts]
            self.encoded_texts = [e + [pad_token_id] * (self.max_length - len(e)) for e in self.encoded_texts]

        def __getitem__(self, index):
            label = {"ham": 0, "spam": 1}[self.data.iloc[index]["label"]]
            return torch.tensor(self.encoded_texts[index]), torch.tensor(label)

        def __len__(self):
            return len(self.data)

    return SpamDataset(csv_file, tokenizer, max_length)


def book_training_losses(weights_dir, data_dir, epochs=2, batch_size=8, eval_freq=50, eval_iter=5):
    """Chapter 6's loop as the book writes it, recording each step's loss."""
    from torch.utils.data import DataLoader

    from gptclassify import get_tokenizer

    tokenizer = get_tokenizer("gpt2")

    train_dataset = book_dataset(data_dir / "train.csv", tokenizer)
    val_dataset = book_dataset(data_dir / "validation.csv", tokenizer, max_length=train_dataset.max_length)
    torch.manual_seed(123)
    train_loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_dataset, batch_size=batch_size, shuffle=False, drop_last=False)

    model = load_pretrained(weights_dir)
    for param in model.parameters():
        param.requires_grad = False
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(model.cfg.emb_dim, 2)
    for param in model.trf_blocks[-1].parameters():
        param.requires_grad = True
    for param in model.final_norm.parameters():
        param.requires_grad = True

    def calc_loss_batch(input_batch, target_batch):
        logits = model(input_batch)[:, -1, :]
        return torch.nn.functional.cross_entropy(logits, target_batch)

    def calc_loss_loader(loader, num_batches):
        total = 0.0
        num_batches = min(num_batches, len(loader))
        for i, (x, y) in enumerate(loader):
            if i >= num_batches:
                break
            total += calc_loss_batch(x, y).item()
        return total / num_batches

    def calc_accuracy_loader(loader, num_batches):
        correct = n = 0
        for i, (x, y) in enumerate(loader):
            if i >= num_batches:
                break
            with torch.no_grad():
                predicted = model(x)[:, -1, :].argmax(-1)
            n += predicted.shape[0]
            correct += (predicted == y).sum().item()
        return correct / n

    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    losses, global_step = [], -1
    for _ in range(epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    calc_loss_loader(train_loader, eval_iter)
                    calc_loss_loader(val_loader, eval_iter)
                model.train()
        calc_accuracy_loader(train_loader, eval_iter)
        calc_accuracy_loader(val_loader, eval_iter)
    return losses


@pytest.mark.parametrize("cache", [False, True])
def test_book_preset_reproduces_the_books_losses(weights_dir, data_dir, tmp_path, cache):
    expected = book_training_losses(weights_dir, data_dir, epochs=2, eval_freq=5)
    cfg = make_config("book", epochs=2, cache=cache, eval_freq=5)
    trainer = prepare(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=quiet)
    train(trainer)
    got = json.loads((tmp_path / "run" / "history.json").read_text())["step_loss"]
    assert len(got) == len(expected) == 2 * (105 // 8)
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-5


def test_cached_and_uncached_training_agree(weights_dir, data_dir, tmp_path):
    runs = {}
    for cache in (True, False):
        cfg = make_config(None, epochs=2, cache=cache, prefix_dtype="float32")  # 1e-5 below, on any CPU
        train_run(None, str(weights_dir), data_dir, cfg, tmp_path / str(cache), log=quiet)
        runs[cache] = (json.loads((tmp_path / str(cache) / "history.json").read_text()),
                       json.loads((tmp_path / str(cache) / "metrics.json").read_text()))
    (h_c, m_c), (h_u, m_u) = runs[True], runs[False]
    assert len(h_c["step_loss"]) == len(h_u["step_loss"]) == 2 * 14
    assert max(abs(a - b) for a, b in zip(h_c["step_loss"], h_u["step_loss"])) < 1e-5
    for split in ("train", "validation", "test"):
        assert abs(m_c[split]["loss"] - m_u[split]["loss"]) < 1e-5
        assert m_c[split]["accuracy"] == m_u[split]["accuracy"]
    assert json.loads((tmp_path / "True" / "config.json").read_text())["feature_cache"] is True


@pytest.mark.parametrize("pooling", ["mean", "last-position"])
def test_other_poolings_cached_and_uncached_agree(weights_dir, data_dir, tmp_path, pooling):
    losses = []
    for cache in (True, False):
        cfg = make_config(None, epochs=1, cache=cache, pooling=pooling, trainable="last-2-blocks", max_steps=6,
                          prefix_dtype="float32")
        train_run(None, str(weights_dir), data_dir, cfg, tmp_path / str(cache), log=quiet)
        losses.append(json.loads((tmp_path / str(cache) / "history.json").read_text())["step_loss"])
    assert len(losses[0]) == 6
    assert max(abs(a - b) for a, b in zip(*losses)) < 1e-5


def test_last_token_pooling_matches_gpt2_for_sequence_classification(weights_dir, tokenizer, sms):
    ours = load_pretrained(weights_dir)
    add_classifier_head(ours, 2)
    with torch.no_grad():
        ours.out_head.bias.zero_()  # Hugging Face's score head has no bias
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(weights_dir, num_labels=2, pad_token_id=50256).eval()
    with torch.no_grad():
        hf.score.weight.copy_(ours.out_head.weight)
    ids = [tokenizer.encode(t)[:60] for t in sms[:12]]
    lengths = torch.tensor([len(x) for x in ids])
    batch = torch.tensor([x + [50256] * (int(lengths.max()) - len(x)) for x in ids])
    assert (lengths < lengths.max()).sum() >= 8  # most rows really are padded
    with torch.no_grad():
        expected = hf(batch).logits
        got = classify_logits(ours, batch, lengths, "last-token")
        book = ours.out_head(ours.final_norm(ours.trf_blocks(ours.embed(batch))))[:, -1, :]
    assert (got - expected).abs().max().item() < 1e-4
    assert (book - expected).abs().max().item() > 1e-3  # the book's last position is a different thing


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedules_match_transformers(schedule):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}[schedule]
    total, warmup = 40, 6
    reference = make(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), warmup, total).lr_lambdas[0]
    cfg = make_config(None, lr_schedule=schedule, warmup_steps=warmup)
    ours = [lr_factor(step, cfg, total) for step in range(total)]
    # transformers spends step 0 at rate zero; our warmup starts one step further on, and ends at the same step
    assert ours[:warmup] == pytest.approx([reference(step + 1) for step in range(warmup)])
    assert ours[warmup:] == pytest.approx([reference(step) for step in range(warmup, total)])
    assert ours[-1] > 0 and ours[-1] < 0.03  # the last step still learns, a little
    assert lr_factor(7, make_config(None, lr_schedule="constant"), total) == 1.0  # the book's keeps the rate


def test_family_defaults_fill_only_what_is_left_open():
    llama = FAMILY_DEFAULTS["llama"]
    cfg = with_family_defaults(make_config(None), "llama")
    assert (cfg.lr, cfg.lr_schedule) == (llama["lr"], llama["lr_schedule"])
    cfg = with_family_defaults(make_config(None, lr=1e-3), "llama")
    assert (cfg.lr, cfg.lr_schedule) == (1e-3, llama["lr_schedule"])  # what the user says wins
    cfg = with_family_defaults(make_config("book"), "llama")
    assert (cfg.lr, cfg.lr_schedule) == (5e-5, "constant")  # the book's recipe is the book's, whatever the model
    cfg = with_family_defaults(make_config(None), "gpt2")
    assert (cfg.lr, cfg.lr_schedule) == (5e-5, "constant")


def test_resumed_run_ends_with_the_same_weights(weights_dir, data_dir, tmp_path, monkeypatch):
    cfg = make_config(None, epochs=3, lr_schedule="cosine", warmup_steps=3)  # the schedule's position resumes too
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "straight", log=quiet)

    interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "resumed", log=quiet)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert main(["train", "--resume", str(tmp_path / "resumed")]) == 0
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "straight" / "history.json").read_text())
    hb = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert ha["step_loss"] == hb["step_loss"]


def test_keep_best_epoch(weights_dir, data_dir, tmp_path):
    cfg = make_config(None, epochs=3, keep_best=True, lr=1e-2)  # a high rate makes later epochs worse
    metrics = train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=quiet)
    epochs = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    best = min(epochs, key=lambda e: e["val_loss"])
    assert metrics["training"]["best_epoch"] == best["epoch"]
    assert abs(metrics["validation"]["loss"] - best["val_loss"]) < 1e-4


def test_end_to_end_cli(weights_dir, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--weights", str(weights_dir),
                 "--out", str(run), "--epochs", "2", "--eval-freq", "5"]) == 0
    capsys.readouterr()
    for name in ("model.safetensors", "config.json", "metrics.json", "history.json", "loss.png", "accuracy.png"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "ham", "1": "spam"} and config["label2id"] == {"ham": 0, "spam": 1}
    assert config["pooling"] == "last-token" and config["model"]["n_layers"] == 2
    assert config["training"]["lr"] == 5e-5 and config["training"]["batch_size"] == 8
    assert config["tokenizer"] == {"kind": "tiktoken", "name": "gpt2"} and config["gptclassify_version"]
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert set(test) >= {"accuracy", "loss", "macro_f1", "per_class", "confusion_matrix"}
    assert sum(map(sum, test["confusion_matrix"])) == test["examples"] == 30
    assert metrics["training"]["seconds"] > 0 and metrics["training"]["examples_per_second"] > 0
    history = json.loads((run / "history.json").read_text())
    assert len(history["epochs"]) == 2 and len(history["step_loss"]) == 28
    assert [e["step"] for e in history["eval"]] == [1, 6, 11, 16, 21, 26]  # the book's schedule

    assert main(["evaluate", str(run), "--data", str(data_dir), "--split", "test"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == test["accuracy"]
    assert evaluated["confusion_matrix"] == test["confusion_matrix"]
    assert abs(evaluated["loss"] - test["loss"]) < 1e-5


def run_dir_for_errors(weights_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--weights", str(weights_dir), "--out", str(run),
                 "--epochs", "1", "--max-steps", "2"]) == 0
    return run


def test_bad_input_gives_one_line_errors(weights_dir, data_dir, tmp_path, capsys):
    run = run_dir_for_errors(weights_dir, data_dir, tmp_path)
    capsys.readouterr()
    three = tmp_path / "three"
    three.mkdir()
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["ham", "spam", "eggs"]}).to_csv(three / "test.csv", index=False)
    (run / "checkpoint").rename(tmp_path / "moved")  # so that only the finished run remains

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_bytes((run / "config.json").read_bytes())
    (corrupt / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:1000])

    cases = [
        (["evaluate", str(tmp_path), "--data", str(data_dir)], "not a gptclassify run"),
        (["evaluate", str(run), "--data", str(three)], "label 'eggs' is not among the model's labels"),
        (["evaluate", str(corrupt), "--data", str(data_dir)], "corrupt or unreadable"),
        (["train", "--data", str(data_dir), "--model", "gpt5", "--weights", "random", "--out", str(tmp_path / "x")],
         "unknown model 'gpt5'"),
        (["train", "--data", str(data_dir), "--model", "gpt2", "--weights", "gpt5", "--out", str(tmp_path / "x")],
         "unknown model 'gpt5'"),
        (["train", "--data", str(tmp_path / "nodata"), "--weights", str(weights_dir), "--out", str(tmp_path / "x")],
         "no dataset.json"),
        (["train", "--resume", str(tmp_path / "nothing")], "no checkpoint to resume from"),
        (["train", "--data", str(data_dir), "--weights", str(weights_dir), "--out", str(run)],
         "already holds a run"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("gptclassify: error:"), err
        assert message in err, (argv, err)


def test_bfloat16_cache_trains_close_to_float32(weights_dir, data_dir, tmp_path):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = make_config(None, epochs=1, max_steps=5, cache_dtype=dtype)
        trainer = prepare(None, str(weights_dir), data_dir, cfg, tmp_path / dtype, log=quiet)
        assert trainer.inputs.sets["train"].store.flat.dtype == getattr(torch, dtype)
        train(trainer)
        losses[dtype] = json.loads((tmp_path / dtype / "history.json").read_text())["step_loss"]
    assert max(abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"])) < 2e-2
