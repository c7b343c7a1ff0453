"""Small real inputs for the training tests: a slice of the SMS data and a small random GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import SMS_FILE
from gptclassify.cli import main


def sms_slice_dir(tmp_path: Path, n_ham=90, n_spam=60, name="data") -> Path:
    """`prepare csv` on the first messages of each class of the real file."""
    rows, counts = [], {"ham": 0, "spam": 0}
    with open(SMS_FILE, encoding="utf-8") as f:
        for line in f:
            label, text = line.rstrip("\n").split("\t", 1)
            if counts[label] < {"ham": n_ham, "spam": n_spam}[label]:
                counts[label] += 1
                rows.append({"text": text, "label": label})
    src = tmp_path / f"{name}.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / name
    assert main(["prepare", "csv", str(src), "--out", str(out)]) == 0
    return out


def small_gpt2_dir(tmp_path: Path, n_layer=2, n_embd=64, n_head=4, seed=0) -> Path:
    """A small GPT-2 with random weights in the Hugging Face layout (config.json + safetensors)."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head))
    out = tmp_path / f"gpt2-{n_layer}x{n_embd}"
    model.save_pretrained(out)
    return out


def gpt2_tokenizer_json(dest: Path) -> Path:
    """GPT-2's byte-level BPE as a Hugging Face `tokenizer.json` (from the shared encoder.json and vocab.bpe),
    for small Llama-family checkpoints over GPT-2's vocabulary: such weights need their own tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from conftest import GPT2_BPE_DIR

    vocab = json.loads((GPT2_BPE_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (GPT2_BPE_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(line.split()) for line in lines if line]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(dest))
    return dest


def interrupt_after_epoch(monkeypatch, epoch: int = 1) -> None:
    """A Ctrl-C right after the checkpoint at the end of `epoch`, as one landing there would: training
    stops with KeyboardInterrupt, and `--resume` must go on from that checkpoint."""
    import gptclassify.training.run as run

    real = run.save

    def save_then_interrupt(p, optimizer, scheduler, state, order=None):
        real(p, optimizer, scheduler, state, order)
        if order is None and state.epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(run, "save", save_then_interrupt)
