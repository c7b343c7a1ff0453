"""Messages per second: `Classifier.predict` against transformers' `pipeline("text-classification")`,
on the same GPT-2 124M classifier weights and all 5,574 SMS messages, batch size 32 for both.

    python benchmarks/predict_speed.py [--run RUN] [--n 5574]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import benchmark_run, gpt2_vocab_and_merges, save, sms_messages

from gptclassify.inference.predict import Classifier
from gptclassify.weights.to_hf import gpt2_state_to_hf


def to_transformers(clf: Classifier):
    """GPT2ForSequenceClassification holding exactly our weights (Conv1D = transposed Linear)."""
    import transformers

    cfg = clf.model.cfg
    hf = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        n_layer=cfg.n_layers, n_embd=cfg.emb_dim, n_head=cfg.n_heads, num_labels=len(clf.labels),
        pad_token_id=clf.tokenizer.pad_id, id2label=dict(enumerate(clf.labels)))).eval()
    state = gpt2_state_to_hf(clf.model.state_dict(), cfg) | {"score.weight": clf.model.out_head.weight}
    hf.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=False)
    return hf


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--n", type=int, default=5574)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import transformers

    run = args.run or benchmark_run()
    clf = Classifier.load(run, device="cpu")
    with torch.no_grad():
        clf.model.out_head.bias.zero_()  # Hugging Face's score head has no bias: same weights on both sides
    hf = to_transformers(clf)
    vocab, merges = gpt2_vocab_and_merges()
    tok = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)
    assert tok("Every effort moves you").input_ids == [6109, 3626, 6100, 345]
    tok.pad_token = tok.eos_token
    tok.model_max_length = clf.max_length
    pipe = transformers.pipeline("text-classification", model=hf, tokenizer=tok, device="cpu")
    texts = [t for t in sms_messages()[: args.n] if t.strip()]  # the pipeline fails on a text with no tokens
    clf.predict(texts[:64]), pipe(texts[:64], batch_size=args.batch_size, truncation=True)  # warm-up

    started = time.perf_counter()
    ours = clf.predict(texts, batch_size=args.batch_size)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = pipe(texts, batch_size=args.batch_size, truncation=True)
    theirs_s = time.perf_counter() - started
    agree = sum(a["label"] == b["label"] for a, b in zip(ours, theirs)) / len(texts)
    result = {"messages": len(texts), "batch_size": args.batch_size,
              "gptclassify_seconds": ours_s, "gptclassify_msgs_per_s": len(texts) / ours_s,
              "pipeline_seconds": theirs_s, "pipeline_msgs_per_s": len(texts) / theirs_s,
              "speedup": theirs_s / ours_s, "label_agreement": agree}
    print(result)
    print(f"wrote {save('predict_speed', result)}")


if __name__ == "__main__":
    main()
