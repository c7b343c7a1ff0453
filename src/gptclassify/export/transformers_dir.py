"""`export --format transformers`: a folder that `AutoModelForSequenceClassification.from_pretrained`
and `AutoTokenizer.from_pretrained` load without custom code.

The whole network (frozen and trained; LoRA is already merged into a finished run) under
transformers' names, the head folded to its bias-free `score` (export/head.py), `id2label`, the
task as `problem_type`, and the pad token our batches use, so that transformers pools the same last
real token. The tokenizer cuts and joins texts as the run did where transformers can say so
(`model_max_length`, `truncation_side`, a pair's separator); where it cannot, the card says so.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..config import PROBLEM_TYPES, RunConfig
from ..data.gpt2_files import gpt2_tokenizers_json, vocab_and_merges
from ..data.tokenizer import Tokenizer
from ..errors import UserError
from ..files import save_safetensors, write_json
from ..weights.to_hf import HF_CLASSES, gpt2_config_to_hf, gpt2_state_to_hf, llama_config_to_hf, llama_state_to_hf
from .head import fold_bias_into_shift, scores_head

# What transformers' tokenizer does with a text over model_max_length, by our truncation policy
TRUNCATION_SIDES = {"head": "right", "tail": "left"}


def refusal(config: RunConfig) -> str | None:
    """Why this run cannot be a transformers classifier, in one line (None: it can)."""
    if config.policy.pooling != "last-token":
        return (f"transformers' sequence classifiers read each text's last real token; this run pools "
                f"'{config.policy.pooling}': export it with --format onnx, which keeps its pooling")
    return None


def differences(config: RunConfig) -> list[str]:
    """What a transformers user gets that differs from gptclassify's own predictions."""
    out = []
    if config.model.get("model_type") == "qwen2":
        out.append("transformers (5.x) reads a qwen2 folder's tokenizer as its Qwen2Tokenizer: tokenizer.json's "
                   "vocabulary and merges with Qwen's own pre-tokenizer, the same as tokenizer.json's for Qwen's "
                   "checkpoints (a different one would tokenize differently)")
    truncation = config.policy.truncation
    if truncation not in TRUNCATION_SIDES:
        out.append(f"texts over {config.policy.max_length} tokens: this run read "
                   + ("their first and last halves" if truncation == "head+tail" else
                      "all of them in windows whose scores it combined")
                   + "; transformers' tokenizer keeps their first tokens (truncation=True)")
    out += precision_note(config)
    if config.task == "multi-label":
        out.append("multi-label: apply a sigmoid per label and each label's threshold from config.json's "
                   "gptclassify.thresholds (transformers has no thresholds)")
    return out


def precision_note(config: RunConfig) -> list[str]:
    """An export is float32 throughout: what that changes for a run whose frozen layers compute in less."""
    if config.policy.prefix_dtype not in ("bfloat16", "int8"):
        return []
    return [f"this run computes its frozen layers in {config.policy.prefix_dtype}; the export is float32 "
            "throughout, so its scores differ from gptclassify's torch backend by that rounding"]


def head_state(state: dict, config: RunConfig, family: str) -> tuple[dict, list[str]]:
    weight, bias, difference = scores_head(state, config)
    out = {"score.weight": weight.float().contiguous()}
    if bias is not None:
        if family != "gpt2":
            raise UserError("this run's head has a bias, which transformers' score layer for this family cannot "
                            "hold (runs from gptclassify 0.1 train it without one): train it again, or export "
                            "--format onnx")
        out["transformer.ln_f.bias"] = fold_bias_into_shift(weight, bias, state["final_norm.shift"])
    return out, [difference] if difference else []


def write_transformers(out: Path, model: nn.Module, tokenizer: Tokenizer, config: RunConfig, log=print) -> list[str]:
    """Write the folder's weights, config and tokenizer into `out`; returns what differs from the run."""
    why = refusal(config)
    if why:
        raise UserError(why)
    family = model.cfg.family
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    head, notes = head_state(state, config, family)  # first: a head it cannot hold is refused before any work
    log(f"writing the transformers folder ({sum(p.numel() for p in model.parameters()) * 4 / 1e6:,.0f} MB of "
        "float32 weights)")
    if family == "gpt2":
        hf_state, hf_config = gpt2_state_to_hf(state, model.cfg), gpt2_config_to_hf(model.cfg)
    else:
        hf_state, hf_config = llama_state_to_hf(state, model.cfg), llama_config_to_hf(model.cfg)
    hf_state.update(head)
    labels = config.labels
    hf_config |= {
        "architectures": [HF_CLASSES[getattr(model.cfg, "model_type", family)][1]],
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "problem_type": PROBLEM_TYPES[config.task], "pad_token_id": config.policy.pad_id, "torch_dtype": "float32",
        "gptclassify": {"task": config.task, "max_length": config.policy.max_length,
                        "truncation": config.policy.truncation, "thresholds": config.thresholds,
                        "temperature": config.temperature, "target_scale": config.target_scale,
                        "model_name": config.model_name, "version": config.gptclassify_version},
    }
    save_safetensors(hf_state, out / "model.safetensors", {"format": "pt"})
    write_json(out / "config.json", hf_config)
    write_tokenizer(out, tokenizer, config)
    return notes + differences(config)


def write_tokenizer(out: Path, tokenizer: Tokenizer, config: RunConfig) -> None:
    """tokenizer.json (GPT-2's rebuilt from tiktoken, with vocab.json and merges.txt beside it), and
    tokenizer_config.json: right padding with our pad token, the run's length and truncation side, and
    a pair joined as the run joined it (prefix, first text, separator, second text)."""
    from tokenizers import processors

    hf = hf_tokenizer(tokenizer)
    pad = hf.id_to_token(config.policy.pad_id)
    sep_id = tokenizer.pad_id if tokenizer.sep_id is None else tokenizer.sep_id
    prefix = [(hf.id_to_token(i), i) for i in tokenizer.prefix]
    head = " ".join(t for t, _ in prefix)
    sep = hf.id_to_token(sep_id)
    hf.post_processor = processors.TemplateProcessing(
        single=f"{head} $A".strip(), pair=f"{head} $A {sep} $B:1".strip(),
        special_tokens=sorted({*prefix, (sep, sep_id)}, key=lambda p: p[1]))
    hf.save(str(out / "tokenizer.json"))
    if tokenizer.name == "gpt2":
        import json

        vocab, merges = vocab_and_merges(tokenizer.encoding)
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer" if tokenizer.name == "gpt2" else "PreTrainedTokenizerFast",
        "model_max_length": config.policy.max_length, "padding_side": "right",
        "truncation_side": TRUNCATION_SIDES.get(config.policy.truncation, "right"),
        "pad_token": pad, "eos_token": sep, "add_prefix_space": False, "clean_up_tokenization_spaces": False,
    })
    write_json(out / "special_tokens_map.json", {"pad_token": pad, "eos_token": sep})


def hf_tokenizer(tokenizer: Tokenizer):
    """The run's tokenizer as a `tokenizers.Tokenizer` (a copy: the run's own is not changed)."""
    from tokenizers import Tokenizer as HFTokenizer

    if tokenizer.name == "gpt2":
        return gpt2_tokenizers_json(tokenizer.encoding)
    return HFTokenizer.from_str(tokenizer.hf.to_str())

