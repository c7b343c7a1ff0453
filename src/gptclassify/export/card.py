"""The exported folder's README.md: a model card (Hugging Face's front matter, then what the model
is, what it was trained on, how well it did, how to load it, and what differs from gptclassify)."""

from __future__ import annotations

import json

from ..classifier.names import head_size
from ..config import RunConfig

SCALARS = ("accuracy", "macro_f1", "micro_f1", "r2", "spearman", "pearson", "loss", "ece")


def metrics_table(metrics: dict) -> str:
    rows = [(split, metrics[split]) for split in ("train", "validation", "test") if isinstance(metrics.get(split), dict)]
    keys = [k for k in SCALARS if any(isinstance(m.get(k), (int, float)) for _, m in rows)]
    if not rows or not keys:
        return "(the run has no metrics.json)"
    lines = ["| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for split, m in rows:
        lines.append(f"| {split} | " + " | ".join(f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else ""
                                                  for k in keys) + " |")
    return "\n".join(lines)


def data_sizes(dataset: dict) -> str:
    """Texts per split, from `prepare`'s dataset.json (single-label: its class counts summed)."""
    counts = dataset.get("counts")
    if not isinstance(counts, dict) or dataset.get("label_separator"):
        return ""
    return ": " + ", ".join(f"{split} {sum(c.values()):,} texts" for split, c in counts.items() if isinstance(c, dict))


def usage(fmt: str, config: RunConfig) -> str:
    pair = bool(config.data.get("dataset", {}).get("text_pair_column"))
    texts = '["first text", "second text"]' if not pair else '["first text"], ["its pair"]'
    if fmt == "transformers":
        activation = {"single-label": "softmax(-1)", "multi-label": "sigmoid()", "regression": "squeeze(-1)"}[config.task]
        return f"""```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("DIR")
model = AutoModelForSequenceClassification.from_pretrained("DIR").eval()
batch = tokenizer({texts}, padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    scores = model(**batch).logits.{activation}
print([model.config.id2label[i] for i in scores.argmax(-1).tolist()])
```"""
    return f"""Without torch (`pip install onnxruntime tokenizers numpy`, then gptclassify without its dependencies:
`pip install --no-deps gptclassify`):

```sh
gptclassify predict DIR --backend onnxruntime "a text to classify"
gptclassify serve DIR --backend onnxruntime --port 8000
```

Or by hand: `model.onnx` takes `input_ids` and `attention_mask` (int64, batch × length, right-padded
with token {config.policy.pad_id}) and returns `logits` (batch × {head_size(config.task, config.labels)}),
before the calibration in config.json (`temperature`)."""


def model_card(fmt: str, config: RunConfig, metrics: dict, notes: list[str], check: str) -> str:
    t = config.training
    dataset = config.data.get("dataset", {})
    recipe = (f"trainable `{t.trainable}`, pooling `{config.policy.pooling}`, {t.epochs} epochs, lr {t.lr:g} "
              f"({t.lr_schedule}), batch {t.batch_size}, max_length {config.policy.max_length} "
              f"({config.policy.truncation} truncation), seed {t.seed}")
    front = {"library_name": "transformers" if fmt == "transformers" else "onnx",
             "pipeline_tag": "text-classification", "tags": ["gptclassify", config.task]}
    differs = "\n".join(f"- {n}" for n in notes) or "- nothing: the same tokens, pooling and calibrated scores."
    return f"""---
{chr(10).join(f"{k}: {json.dumps(v)}" for k, v in front.items())}
---

# {config.model_name or "gptclassify"} text classifier ({config.task})

Fine-tuned with [gptclassify](https://github.com/) {config.gptclassify_version} from `{config.model_name}`
(weights: `{config.weights}`), exported as a {"transformers" if fmt == "transformers" else "ONNX"} folder.

- **Labels**: {", ".join(f"`{label}`" for label in config.labels)}
- **Data**: `{config.data.get("dir", "unknown")}`{data_sizes(dataset)}
- **Recipe**: {recipe}
- **Calibration**: {"temperature " + json.dumps(config.temperature) + " (folded into the scores)" if config.temperature is not None else "none"}

## Metrics (gptclassify's, on the run's splits)

{metrics_table(metrics)}

## How to load

{usage(fmt, config)}

## What differs from gptclassify's own predictions

{differs}

## Checked at export

{check}
"""
