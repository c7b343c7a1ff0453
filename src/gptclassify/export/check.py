"""An export checks itself: the exported folder, loaded as its users will load it (transformers'
Auto classes, or our ONNX Runtime backend), scores texts against the run's own torch backend, and
the largest difference goes into the model card."""

from __future__ import annotations

from pathlib import Path

import torch

from ..classifier.tasks import probabilities
from ..config import RunConfig
from ..data.splits import read_split
from ..errors import UserError
from ..inference.predict import Classifier

PROBES = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "Ok lar... Joking wif u oni...",
          "The contract renews automatically unless either party objects in writing.", "", "a",
          "Thanks for your order! Your parcel ships tomorrow.", "URGENT! Call 09061701461 to claim your prize"]


def probe_texts(config: RunConfig, n: int = 50) -> tuple[list, str]:
    """Up to `n` texts of the run's test split, else a few built-in ones (or pairs of them)."""
    data_dir = Path(config.data.get("dir", ""))
    try:
        df = read_split(data_dir, "test").head(n)
        texts = list(zip(df["text"], df["text_pair"])) if "text_pair" in df else df["text"].tolist()
        return texts, f"the first {len(texts)} texts of {data_dir / 'test.csv'}"
    except (UserError, OSError, KeyError):
        pairs = bool(config.data.get("dataset", {}).get("text_pair_column"))
        texts = list(zip(PROBES, reversed(PROBES))) if pairs else PROBES
        return texts, f"{len(texts)} built-in probe texts (the run's data directory is gone)"


def transformers_scores(out: Path, texts: list, config: RunConfig) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    rows = []
    for start in range(0, len(texts), 16):
        part = texts[start:start + 16]
        args = ([a for a, _ in part], [b for _, b in part]) if part and isinstance(part[0], tuple) else (part,)
        batch = tokenizer(*args, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            rows.append(model(**batch).logits.float())
    scores = probabilities(config.task, torch.cat(rows))
    if config.task == "regression" and config.target_scale and model.config.model_type != "gpt2":
        scores = scores + config.target_scale[0]  # a Llama-family regression's mean is the card's to add (head.py)
    return scores


def check_export(out: Path, fmt: str, run_dir: Path, config: RunConfig, log=print) -> str:
    """One line for the card: the largest score difference against the run's torch backend."""
    texts, where = probe_texts(config)
    log(f"checking the export against the run on {where}")
    try:
        return compare(out, fmt, run_dir, config, texts, where)
    except UserError:
        raise
    except Exception as e:  # the folder does not load or run where it is meant to: nothing is kept
        raise UserError(f"the exported folder failed its check ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "nothing was written") from None


def compare(out: Path, fmt: str, run_dir: Path, config: RunConfig, texts: list, where: str) -> str:
    ours = Classifier.load(run_dir, device="cpu").probabilities(texts).double()
    if fmt == "onnx":
        import onnxruntime

        from ..inference.onnx_runtime import OnnxClassifier

        theirs, engine = torch.from_numpy(OnnxClassifier.load(out).probabilities(texts)), f"onnxruntime {onnxruntime.__version__}"
    else:
        try:
            import transformers
        except ImportError:
            return "Not checked: transformers was not installed where it was exported."
        theirs, engine = transformers_scores(out, texts, config).double(), f"transformers {transformers.__version__}"
    diff = (ours - theirs).abs().max().item() if len(texts) else 0.0
    return (f"Largest score difference against gptclassify's torch backend: {diff:.2e}, over {where} "
            f"({engine}).")
