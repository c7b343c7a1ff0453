"""LoRA (--trainable lora), as the book's appendix E: the book's 2,666,528 trainable parameters and
its per-step losses, the same outputs and gradients as peft's LoRA, adapters merged on save into
a plain classifier (that predicts as the unmerged model), and rebuilt from base weights + adapter."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors import safe_open

from gptclassify import Classifier, load_pretrained
from gptclassify.classifier.head import add_classifier_head, classify_logits
from gptclassify.inference.evaluate import evaluate_run
from gptclassify.files import load_safetensors
from gptclassify.classifier.lora import LoRALinear, add_lora, apply_adapter, merge_lora
from gptclassify.models.gpt2 import GPTModel, gpt2_config
from gptclassify.training.run import train, train_run
from gptclassify.training.prepare import prepare
from gptclassify.config import make_config


def quiet(*args, **kwargs):
    pass


def test_the_books_setting_trains_2_666_528_parameters():
    with torch.device("meta"):
        model = GPTModel(gpt2_config("gpt2"))
        add_classifier_head(model, 2)
        trainable, total = add_lora(model, rank=16, alpha=256)
    assert trainable == 2_666_528  # appendix E: all 73 Linear layers, the head's included
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 73
    assert total == 124_441_346 + 2_666_528


def test_the_count_is_printed(data_dir, tmp_path):
    lines = []
    prepare("gpt2", "random", data_dir, make_config(None, trainable="lora", lora_alpha=256), tmp_path / "run",
            log=lines.append)
    assert "trainable parameters: 2,666,528 of 127,107,874" in lines


def book_lora_losses(data_dir, steps: int) -> list[float]:
    """Appendix E as the book writes it: LoRALayer (A Kaiming-uniform with a = sqrt(5), B zeros,
    alpha * x A B), LinearWithLoRA around every nn.Linear (the new head's too), everything else
    frozen; chapter 6's data, loader and loop (last position, AdamW 5e-5, weight decay 0.1)."""
    from torch.utils.data import DataLoader

    from gptclassify import get_tokenizer
    from test_train import book_dataset

    class LoRALayer(torch.nn.Module):
        def __init__(self, in_dim, out_dim, rank, alpha):
            super().__init__()
            self.A = torch.nn.Parameter(torch.empty(in_dim, rank))
            torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            self.B = torch.nn.Parameter(torch.zeros(rank, out_dim))
            self.alpha = alpha

        def forward(self, x):
            return self.alpha * (x @ self.A @ self.B)

    class LinearWithLoRA(torch.nn.Module):
        def __init__(self, linear, rank, alpha):
            super().__init__()
            self.linear = linear
            self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

        def forward(self, x):
            return self.linear(x) + self.lora(x)

    def replace_linear_with_lora(model, rank, alpha):
        for name, module in model.named_children():
            if isinstance(module, torch.nn.Linear):
                setattr(model, name, LinearWithLoRA(module, rank, alpha))
            else:
                replace_linear_with_lora(module, rank, alpha)

    train_dataset = book_dataset(data_dir / "train.csv", get_tokenizer("gpt2"))
    torch.manual_seed(123)
    train_loader = DataLoader(train_dataset, batch_size=8, shuffle=True, drop_last=True)
    torch.manual_seed(123)
    model = GPTModel(gpt2_config("gpt2")).eval()  # what --weights random builds
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(768, 2)
    for param in model.parameters():
        param.requires_grad = False
    replace_linear_with_lora(model, rank=16, alpha=16)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    model.train()
    losses = []
    for input_batch, target_batch in train_loader:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(input_batch)[:, -1, :], target_batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) == steps:
            return losses


def test_the_books_appendix_e_losses(data_dir, tmp_path):
    expected = book_lora_losses(data_dir, steps=3)
    cfg = make_config("book", trainable="lora", lora_rank=16, lora_alpha=256, max_steps=3, eval_freq=0)
    train_run("gpt2", "random", data_dir, cfg, tmp_path / "run", log=quiet)
    got = json.loads((tmp_path / "run" / "history.json").read_text())["step_loss"]
    assert len(got) == 3 and len(set(got)) == 3
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-5, (got, expected)


def test_outputs_and_gradients_equal_peft(weights_dir):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    ours = load_pretrained(weights_dir)
    add_classifier_head(ours, 3)
    theirs = copy.deepcopy(ours)
    add_lora(ours, rank=4, alpha=8, head="adapter")
    for m in ours.modules():  # a nonzero B, so the updates matter
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.B, std=0.02)
    targets = [name for name, m in theirs.named_modules() if isinstance(m, torch.nn.Linear)]
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0),
                                          theirs)
    theirs_modules = dict(theirs.named_modules())
    with torch.no_grad():
        for name, m in ours.named_modules():
            if isinstance(m, LoRALinear):
                layer = theirs_modules[name]
                layer.lora_A["default"].weight.copy_(m.A.T)
                layer.lora_B["default"].weight.copy_(m.B.T)
    ids = torch.randint(0, 50257, (3, 17))
    out_ours, out_theirs = ours(ids), theirs(ids)
    assert (out_ours - out_theirs).abs().max().item() < 1e-5
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    for name, m in ours.named_modules():
        if isinstance(m, LoRALinear):
            layer = theirs_modules[name]
            for ours_grad, theirs_grad in ((m.A.grad, layer.lora_A["default"].weight.grad.T),
                                           (m.B.grad, layer.lora_B["default"].weight.grad.T)):
                assert ((ours_grad - theirs_grad).norm() / theirs_grad.norm()).item() < 1e-5


def test_one_query_attention_reads_the_adapted_weights(weights_dir):
    """The last block's one-query path reads W_key and W_value's weights directly: with LoRA
    it must see the updated ones, so logits and gradients equal the full forward's."""
    torch.manual_seed(0)
    model = load_pretrained(weights_dir)
    add_classifier_head(model, 2)
    add_lora(model, rank=4, alpha=8)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.B, std=0.05)
    ids = torch.randint(0, 50257, (4, 12))
    lengths = torch.tensor([12, 7, 3, 9])
    fast = classify_logits(model, ids, lengths, "last-token")
    full = model(ids)[torch.arange(4), lengths - 1]
    assert (fast - full).abs().max().item() < 1e-5
    a = model.trf_blocks[-1].att.W_key.A
    g_fast = torch.autograd.grad(fast.sum(), a)[0]
    g_full = torch.autograd.grad(model(ids)[torch.arange(4), lengths - 1].sum(), a)[0]
    assert torch.allclose(g_fast, g_full, atol=1e-5) and g_fast.abs().sum() > 0


@pytest.fixture(scope="module")
def lora_run(data_dir, weights_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    cfg = make_config(None, trainable="lora", lora_rank=4, lora_alpha=8, lora_blocks=1, epochs=2, max_steps=12)
    trainer = prepare(None, str(weights_dir), data_dir, cfg, out, log=quiet)
    train(trainer)
    return out


def test_a_lora_run_is_saved_merged_and_predicts_as_trained(lora_run, data_dir, sms):
    config = json.loads((lora_run / "config.json").read_text())
    assert config["training"]["trainable"] == "lora" and config["first_trainable_block"] == 1
    saved = load_safetensors(lora_run / "model.safetensors")
    assert not [k for k in saved if k.endswith((".A", ".B", ".base.weight"))]  # a plain classifier
    metrics = json.loads((lora_run / "metrics.json").read_text())["test"]
    assert evaluate_run(lora_run, data_dir, "test")["confusion_matrix"] == metrics["confusion_matrix"]
    assert abs(evaluate_run(lora_run, data_dir, "test")["loss"] - metrics["loss"]) < 1e-5  # merged = unmerged


def test_a_lora_run_rebuilt_from_base_weights_and_its_adapter(lora_run, weights_dir, sms):
    with safe_open(str(lora_run / "adapter.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "gptclassify-lora" and meta["rank"] == "4" and meta["blocks"] == "1"
    adapter = load_safetensors(lora_run / "adapter.safetensors")
    assert all(k.endswith((".A", ".B")) or k.startswith("out_head.") for k in adapter)
    unmerged = apply_adapter(load_pretrained(weights_dir), adapter, rank=int(meta["rank"]), alpha=float(meta["alpha"]),
                             blocks=int(meta["blocks"]), head=meta["head"]).eval()
    merged = Classifier.load(lora_run, "cpu")
    texts = sms[:40]
    ids = [merged.encode(t) for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([i + [merged.tokenizer.pad_id] * (width - len(i)) for i in ids])
    lengths = torch.tensor([len(i) for i in ids])
    with torch.no_grad():
        a = classify_logits(unmerged, batch, lengths, "last-token")
        b = classify_logits(merged.model, batch, lengths, "last-token")
    assert (a - b).abs().max().item() < 1e-5
    merge_lora(unmerged)
    assert all(torch.allclose(v, merged.model.state_dict()[k], atol=1e-6) for k, v in unmerged.state_dict().items())


def test_lora_blocks_leaves_a_cached_prefix_and_resumes(data_dir, weights_dir, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import SHARED_DATA
    from helpers import small_gpt2_dir

    weights = small_gpt2_dir(tmp_path, n_layer=4)
    args = ["--trainable", "lora", "--lora-rank", "2", "--lora-blocks", "2", "--lora-head", "train", "--epochs", "2",
            "--checkpoint-every", "4"]
    cfg = make_config(None, trainable="lora", lora_rank=2, lora_blocks=2, lora_head="train", epochs=2,
                      checkpoint_every=4)
    lines = []
    trainer = prepare(None, str(weights), data_dir, cfg, tmp_path / "straight", log=lines.append)
    assert trainer.classifier.start == 2 and trainer.inputs.cached
    assert any("embedding and 2 frozen blocks in" in line for line in lines)
    names = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {n for n in names if not n.endswith((".A", ".B"))} == {"out_head.weight", "out_head.bias"}
    assert all(int(n.split(".")[1]) >= 2 for n in names if n.startswith("trf_blocks"))
    train(trainer)

    def cli(*argv, env=None):
        return subprocess.run([sys.executable, "-m", "gptclassify", "train", *map(str, argv)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "GPTCLASSIFY_GPT2_BPE_DIR":
                                                           str(SHARED_DATA / "gpt2"), **(env or {})})

    killed = cli("--data", data_dir, "--weights", weights, "--out", tmp_path / "killed", *args,
                 env={"GPTCLASSIFY_FAILPOINT": "step:18"})
    assert killed.returncode == -9
    assert cli("--resume", tmp_path / "killed").returncode == 0
    a = load_safetensors(tmp_path / "straight" / "model.safetensors")
    b = load_safetensors(tmp_path / "killed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "killed" / "adapter.safetensors").is_file()


def test_recomputed_blocks_train_the_same_and_keep_less_for_backward(data_dir, tmp_path):
    """--recompute-blocks: the same weights after training (dropout masks drawn again alike), with far
    fewer bytes held for the backward pass."""
    from helpers import small_gpt2_dir

    weights = small_gpt2_dir(tmp_path, n_layer=4)
    kept, saved = {}, {}
    for recompute in (False, True):
        cfg = make_config(None, trainable="lora", lora_rank=2, lora_dropout=0.1, epochs=1, max_steps=6,
                          recompute_blocks=recompute)
        trainer = prepare(None, str(weights), data_dir, cfg, tmp_path / f"run-{recompute}", log=quiet)
        (inputs, _, lengths), _ = next(iter(trainer.loaders["validation"]))
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trainer.logits_fn(inputs, lengths)
        kept[recompute] = sum(sizes)
        train(trainer)
        saved[recompute] = load_safetensors(tmp_path / f"run-{recompute}" / "model.safetensors")
    assert kept[True] < kept[False] / 3
    assert saved[True].keys() == saved[False].keys()
    assert all(torch.allclose(saved[True][k], saved[False][k], atol=1e-6) for k in saved[False])
    before = load_pretrained(weights).state_dict()  # the first block's merged weights moved: it trained
    assert any(not torch.equal(saved[True][k], before[k]) for k in saved[True] if k.startswith("trf_blocks.0."))
