"""How much of a LoRA run's peak memory is the C allocator's, not torch's: SmolLM2-135M's shape
(random weights; the sizes are what matter), LoRA beside every Linear of every block and the head,
`--recompute-blocks`' path, 3 training steps of 8 texts x 256 tokens, then one evaluation batch of
32 (as `train` evaluates between epochs). Each variant is a process of its own:

- `glibc default`: glibc raises its mmap threshold as large blocks are freed (up to 32 MB), so
  tensors of a few MB come from heap memory it keeps and fragments after they are freed.
- `MALLOC_MMAP_THRESHOLD_=131072`: every tensor above 128 KB gets pages of its own, returned to the
  system when it is freed (and zero-filled again by the kernel on the next allocation: the cost).

Reported: training and evaluation seconds, peak RSS, and what autograd keeps for the
backward pass (bytes packed by saved-tensor hooks during the forward pass).

    ../.venv/bin/python allocator.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from common import peak_rss_mb, save

VARIANTS = {"glibc default": {}, "MALLOC_MMAP_THRESHOLD_=131072": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def one_run() -> dict:
    import torch
    from torch.autograd.graph import saved_tensors_hooks

    from gptclassify.classifier.head import add_classifier_head, prefix_states, suffix_logits
    from gptclassify.classifier.lora import add_lora
    from gptclassify.models.llama import LlamaModel, llama_config

    torch.manual_seed(0)
    model = add_classifier_head(LlamaModel(llama_config("smollm2-135m")), 10)
    add_lora(model, rank=16, alpha=16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    lengths = torch.full((8,), 256)
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t

    started = time.perf_counter()
    for _ in range(3):
        saved.clear()
        x = prefix_states(model, torch.randint(0, model.cfg.vocab_size, (8, 256)), 0)
        with saved_tensors_hooks(pack, lambda t: t):
            logits = suffix_logits(model, x, lengths, 0, "last-token", recompute=True)
        torch.nn.functional.cross_entropy(logits, torch.zeros(8, dtype=torch.long)).backward()
        optimizer.step()
        optimizer.zero_grad()
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with torch.no_grad():
        ids = torch.randint(0, model.cfg.vocab_size, (32, 256))
        suffix_logits(model, prefix_states(model, ids, 0), torch.full((32,), 256), 0, "last-token")
    return {"train_seconds": train_seconds, "eval_seconds": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(), "saved_for_backward_mb": sum(saved) / 1e6}


def main():
    if sys.argv[1:] == ["--child"]:
        print(json.dumps(one_run()))
        return
    rows = {}
    for name, env in VARIANTS.items():
        out = subprocess.run([sys.executable, __file__, "--child"], env={**os.environ, **env}, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        rows[name] = json.loads(out.splitlines()[-1])
        print(name, json.dumps(rows[name]), flush=True)
    base, fixed = rows["glibc default"], rows["MALLOC_MMAP_THRESHOLD_=131072"]
    rows["ratios"] = {"peak_rss": fixed["peak_rss_mb"] / base["peak_rss_mb"],
                      "train_time": fixed["train_seconds"] / base["train_seconds"],
                      "eval_time": fixed["eval_seconds"] / base["eval_seconds"]}
    print(json.dumps(rows["ratios"]))
    save("allocator", rows)


if __name__ == "__main__":
    main()
