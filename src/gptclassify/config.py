"""The schema of a run, in one place: every training setting (`TrainConfig`, whose fields are also
the `train` command's options), how a text becomes class logits (`Policy`), the whole run as
`config.json` holds it (`RunConfig`), and the service's request limits (`Limits`, the `serve` options). Training writes a `RunConfig`; evaluate, predict, serve and
resume read one back through `RunConfig.from_json`, which checks everything and refuses a
stranger's file in one line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .classifier.names import LORA_HEADS, POOLINGS, PREFIX_DTYPES, TRAINABLE, needs_fixed_width, valid_trainable
from .data.chunks import DEFAULT_MAX_CHUNKS, Chunking
from .data.tokenizer import TRUNCATIONS
from .errors import UserError
from .options import check_settings, setting
from .version import __version__

SCHEDULES = ("constant", "linear", "cosine")
SELECT_BY = ("loss", "accuracy", "macro-f1")
BATCH_ORDERS = ("shuffled", "by-length")

# Tokens kept of each text unless --max-length says otherwise (texts shorter than this keep the
# book's rule: the longest training text). Chosen on long e-mails by validation accuracy
# (benchmarks/long_text.py, SpamAssassin with SmolLM2, head truncation): 94% at 128 tokens, 97% at
# 256, 94% at 512, whose frozen pass has 1.48x the positions of 256's.
DEFAULT_MAX_LENGTH = 256

# Which tokens of a longer text are kept unless --truncation says otherwise: the first and the last
# half of max_length. Chosen by 5-fold cross-validation on the 500 training-side SpamAssassin e-mails
# (benchmarks/recipe_cv.py): head+tail 95.40% against head's 92.80% at 256 tokens. The book's preset
# keeps the book's head.
DEFAULT_TRUNCATION = "head+tail"


@dataclass
class TrainConfig:
    """Every setting of a training run. Each field is a `train` option (`options.setting`); None
    means "not given": a preset or the model family fills it (`make_config`, `with_family_defaults`)."""

    epochs: int = setting(5, "passes over the training data (the book's 5)", at_least=1)
    batch_size: int = setting(8, "texts per optimizer step, over all processes (the book's 8)", at_least=1)
    lr: float | None = setting(None, "AdamW's learning rate; the rate used is recorded in config.json", above=0,
                               default_text="by model family: GPT-2 5e-5 (the book's), Llama-style 8e-4, "
                                            "Gemma 3 1.6e-3, Qwen2 2e-4")
    weight_decay: float = setting(0.1, "AdamW's weight decay (the book's 0.1)", at_least=0)
    seed: int = setting(123, "seeds the head, the data order and dropout (the book's 123)", at_least=-2 ** 63,
                        at_most=2 ** 64 - 1)
    trainable: str = setting("last-block", "what trains besides the new head: `head`, `last-block` (+ final norm: "
                             "the book's), `last-N-blocks` (any N, e.g. `last-4-blocks`), `all`, or `lora` adapters "
                             "(appendix E)", metavar="{head,last-block,last-N-blocks,all,lora}")
    lora_rank: int = setting(16, "LoRA: rank of each update", at_least=1)
    lora_alpha: float = setting(16.0, "LoRA: the update is scaled by alpha / rank, as peft (the book's LoRALayer "
                                "with alpha 16 is `--lora-alpha 256` at rank 16)", above=0)
    lora_dropout: float = setting(0.0, "LoRA: dropout on the adapters' input", at_least=0, at_most=0.999999)
    lora_blocks: int | None = setting(None, "LoRA: adapters in the last N blocks only; the blocks before are a "
                                      "cached frozen prefix", metavar="N", at_least=0, default_text="every block")
    lora_head: str = setting("adapter", "LoRA: an adapter on the new head (the book's) or the head trained "
                             "outright", choices=LORA_HEADS)
    pooling: str = setting("last-token", "which hidden state the head reads: each text's last real token, the "
                           "book's last position (`[:, -1, :]`, a pad token for shorter texts), or the mean over "
                           "real tokens", choices=POOLINGS)
    max_length: int | None = setting(None, "tokens kept of each text; longer texts are cut by --truncation (the log "
                                     "says how many, and how many tokens that drops); beyond the model's context, "
                                     "the context is kept", at_least=1,
                                     default_text=f"the longest training text, at most {DEFAULT_MAX_LENGTH}")
    truncation: str = setting(DEFAULT_TRUNCATION, "which tokens of a longer text are kept: its start, its end, "
                              "half of each, or all of it in windows of --max-length whose logits are combined "
                              "(chunks: mean, or max per label for multi-label); predictions cut the same way",
                              choices=TRUNCATIONS, default_text=f"{DEFAULT_TRUNCATION} (the book preset: head)")
    max_chunks: int | None = setting(None, "--truncation chunks: windows per text at most; a longer text's are "
                                     "spread evenly from its start to its end (the cost, in windows and positions, "
                                     "is said before the frozen pass)", at_least=1, default_text=str(DEFAULT_MAX_CHUNKS))
    chunk_overlap: int | None = setting(None, "--truncation chunks: tokens neighbouring windows share", at_least=0,
                                        default_text="an eighth of --max-length")
    batch_order: str = setting("shuffled", "the training texts' order: shuffled (the book's), or by-length: "
                               "shuffled, then cut in groups of 50 batches whose texts are batched in order of length, "
                               "the batches' order shuffled again: fewer padding positions, so cheaper steps where "
                               "the trainable part reads every position (several blocks, LoRA, --no-cache)",
                               choices=BATCH_ORDERS, default_text="shuffled; tune: by-length")
    pad_to_max: bool = setting(False, "pad every batch to max_length, as the book does", cli=False)
    drop_last: bool = setting(False, "drop the last, smaller training batch, as the book does", cli=False)
    eval_freq: int = setting(50, "steps between the book's loss estimates (0: none)", at_least=0)
    eval_iter: int | None = setting(5, "batches per loss estimate", at_least=1)
    epoch_eval_iter: int | None = setting(None, "batches for the epoch-end accuracy (the book's 5); None: the whole "
                                          "split", at_least=1, cli=False)
    grad_clip: float | None = setting(None, "clip the gradients' norm to this", above=0)
    warmup_steps: int = setting(0, "steps of linear warmup to --lr", at_least=0)
    lr_schedule: str | None = setting(None, "after warmup: keep the rate (the book's), or decay it to zero by the "
                                      "last step", choices=SCHEDULES,
                                      default_text="by model family: GPT-2 constant, SmolLM2 cosine")
    max_steps: int | None = setting(None, "stop after this many optimizer steps", at_least=1)
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps; on CUDA the trainable "
                          "part computes under bfloat16 autocast")
    cache: bool = setting(True, "run the frozen layers every step instead of caching their output",
                          flag="--no-cache", default_text="cache on")
    prefix_dtype: str = setting("auto", "precision of the frozen layers: bfloat16 where the CPU has bfloat16 units "
                                "(AMX or AVX512-BF16, auto's choice there and on CUDA), int8 (dynamic quantization: "
                                "faster on other x86 CPUs, measure it on your validation split), float32 (auto "
                                "elsewhere)", choices=PREFIX_DTYPES)
    keep_best: bool = setting(False, "keep the epoch with the best validation score (--select-by)")
    select_by: str | None = setting(None, "the validation score that picks the epoch kept (given, the best epoch is "
                                    "kept)", choices=SELECT_BY, default_text="loss")
    early_stopping: int | None = setting(None, "stop after PATIENCE epochs without a better validation score; the "
                                         "best epoch is kept", metavar="PATIENCE", at_least=1)
    class_weight: str | None = setting(None, "weight each class's loss by n / (classes x its count): for "
                                       "imbalanced classes (multi-label: each label's positives by its negatives "
                                       "over its positives)", choices=("balanced",))
    loss: str = setting("auto", "the task's loss (cross-entropy, binary cross-entropy per label, squared error), or "
                        "Huber's for a regression target with outliers", choices=("auto", "huber"))
    checkpoint_every: int | None = setting(None, "also checkpoint every STEPS steps within an epoch (0: at epoch ends "
                                           "only)", metavar="STEPS", at_least=0, default_text="every 10 minutes")
    recompute_blocks: bool = setting(False, "keep only each trained block's input for the backward pass and compute "
                                     "its inside again there: less memory for LoRA or many blocks on long texts "
                                     "(measured: 0.63x peak, 1.4x time)")
    preset: str | None = setting(None, "book: everything chapter 6 did (pad to the longest training text, "
                                 "last-position, drop_last, eval 50/5, lr 5e-5 constant, head truncation)",
                                 choices=("book",))

    @property
    def chunking(self) -> Chunking | None:
        """The windows of --truncation chunks (None for the other policies)."""
        if self.truncation != "chunks":
            return None
        return Chunking(self.max_chunks or DEFAULT_MAX_CHUNKS, self.chunk_overlap)

    def __post_init__(self):
        check_settings(self)
        if self.trainable != "lora" and not valid_trainable(self.trainable):
            raise UserError(f"--trainable must be one of {', '.join(TRAINABLE)}, lora (N a number), "
                            f"not {self.trainable!r}")
        if self.truncation != "chunks" and (self.max_chunks is not None or self.chunk_overlap is not None):
            raise UserError("--max-chunks and --chunk-overlap shape the windows of --truncation chunks, "
                            f"not {self.truncation} truncation")
        if self.select_by or self.early_stopping:
            self.keep_best = True
        if self.keep_best and self.select_by is None:
            self.select_by = "loss"

    @property
    def pad_to_fixed(self) -> bool:
        """Every batch padded to max_length: the book's choice, or what the pooling needs."""
        return self.pad_to_max or needs_fixed_width(self.pooling)

    @classmethod
    def from_json(cls, settings: dict, where: str) -> "TrainConfig":
        """Saved settings (a checkpoint's, a run's), older names and older defaults read as they were meant."""
        if not isinstance(settings, dict):
            raise UserError(f"{where}: 'training' must be an object")
        settings = {"lr_schedule": "constant", "prefix_dtype": "float32", **renamed(settings)}  # before these settings
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(f"{where}: unknown training setting {unknown[0]!r}")
        try:
            return cls(**settings)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None


# Settings that had another name once: read under the old name, used under the new.
OLD_NAMES = {"cache_dtype": "prefix_dtype"}


def renamed(settings: dict) -> dict:
    out = {k: v for k, v in settings.items() if k not in OLD_NAMES}
    for old, new in OLD_NAMES.items():
        if settings.get(old) is not None and settings.get(new) is None:
            out[new] = settings[old]
    return out


# Everything the book's chapter 6 used.
PRESETS = {
    "book": dict(pad_to_max=True, pooling="last-position", drop_last=True, eval_freq=50, eval_iter=5,
                 epoch_eval_iter=5, lr=5e-5, lr_schedule="constant", prefix_dtype="float32", truncation="head"),
}

# The learning rate each model family trains with unless --lr / --lr-schedule say otherwise.
# GPT-2: the book's. The Llama family (SmolLM2): the best of ten recipes in repeated 5-fold
# cross-validation on the SMS training messages (benchmarks/lr_cv.py); the book's 5e-5 underfits it.
# Gemma 3 (270M): the best of 1e-4 … 1.6e-3 (cosine) in 5-fold cross-validation on the same messages
# (benchmarks/lr_cv.py --model gemma-3-270m-gguf; 98.49% against 97.99% at the Llama family's 8e-4).
# Qwen2 (Qwen2.5-Coder 0.5B): 2e-4 against 8e-4 in the same cross-validation, 98.74% against 97.91%.
FAMILY_DEFAULTS = {
    "gpt2": dict(lr=5e-5, lr_schedule="constant"),
    "llama": dict(lr=8e-4, lr_schedule="cosine"),
    "gemma3": dict(lr=1.6e-3, lr_schedule="cosine"),
    "qwen2": dict(lr=2e-4, lr_schedule="cosine"),
}


def with_family_defaults(cfg: TrainConfig, family: str, model_type: str | None = None) -> TrainConfig:
    """`cfg` with the settings it leaves open (None) taken from the model's defaults: its
    architecture's (`model_type`) where one was chosen for it, else its family's."""
    defaults = FAMILY_DEFAULTS.get(model_type) or FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["gpt2"])
    return replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def make_config(preset: str | None = None, **given) -> TrainConfig:
    """A TrainConfig from a preset with explicit settings on top (None means: not given)."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    given, names = renamed(given), {f.name for f in fields(TrainConfig)}
    unknown = sorted(k for k in given if k not in names)
    if unknown:
        raise TypeError(f"make_config: no setting {unknown[0]!r}")
    given = {k: v for k, v in given.items() if v is not None}
    return TrainConfig(**{**PRESETS.get(preset or "", {}), **given, "preset": preset})


@dataclass(frozen=True)
class Policy:
    """How a text becomes class logits; evaluate, predict and serve repeat the training's exactly."""

    pooling: str
    max_length: int
    truncation: str
    pad_to: int | None  # every batch padded to this width (the book's choice, or last-position pooling)
    pad_id: int
    prefix_dtype: str  # the frozen layers' precision
    first_trainable_block: int | None  # where the frozen prefix ends (None: runs from before it was recorded)
    max_chunks: int | None = None  # truncation `chunks`: windows per text at most, and their overlap
    chunk_overlap: int | None = None

    @property
    def chunking(self) -> Chunking | None:
        return Chunking(self.max_chunks, self.chunk_overlap) if self.truncation == "chunks" else None


TOKENIZERS = ({"kind": "tiktoken", "name": "gpt2"}, {"kind": "tokenizers", "file": "tokenizer.json"})
# Our tasks by transformers' names for them (its config.json's problem_type).
PROBLEM_TYPES = {"single-label": "single_label_classification", "multi-label": "multi_label_classification",
                 "regression": "regression"}


@dataclass
class RunConfig:
    """A finished run, as its `config.json` holds it (the layout transformers users know: id2label,
    label2id, a `model` object of the architecture, and our own fields beside them)."""

    model_name: str
    weights: str
    model: dict  # the architecture (`models.model_from_config_dict` reads it)
    labels: list[str]
    policy: Policy
    tokenizer: dict  # one of TOKENIZERS: tiktoken's gpt2, or the run's own tokenizer.json
    training: TrainConfig
    data: dict
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    feature_cache: bool | None = None
    gptclassify_version: str = __version__
    task: str = "single-label"  # classifier/tasks.py: single-label, multi-label, regression
    thresholds: list[float] | None = None  # multi-label: each label's decision threshold
    target_scale: list[float] | None = None  # regression: [mean, std] of the training targets
    temperature: float | list[float] | None = None  # calibration: the logits' divisor (multi-label: per label)
    tuning: dict | None = None  # `gptclassify tune`: how the recipe was chosen (tuning.json has the table)

    def to_json(self) -> dict:
        return {
            "gptclassify_version": self.gptclassify_version, "model_name": self.model_name, "weights": self.weights,
            "model": self.model, "num_classes": len(self.labels),
            "id2label": {str(i): label for i, label in enumerate(self.labels)},
            "label2id": {label: i for i, label in enumerate(self.labels)},
            **asdict(self.policy), "tokenizer": self.tokenizer,
            "trainable_parameters": self.trainable_parameters, "total_parameters": self.total_parameters,
            "training": asdict(self.training), "data": self.data, "feature_cache": self.feature_cache,
            "task": self.task, "problem_type": PROBLEM_TYPES[self.task], "thresholds": self.thresholds,
            "target_scale": self.target_scale, "temperature": self.temperature, "tuning": self.tuning,
        }

    @classmethod
    def from_json(cls, config: dict, where: str) -> "RunConfig":
        """A `config.json` read back and checked: a run from someone else is data, not code, and
        nothing in it may point outside its directory."""
        if not isinstance(config, dict):
            raise UserError(f"{where}: not a JSON object; not a gptclassify run config")
        for key in ("model", "id2label", "pooling", "max_length", "tokenizer", "pad_id"):
            if key not in config:
                raise UserError(f"{where}: missing {key!r}; not a gptclassify run config")
        config = {"truncation": "head", **config}  # runs written before truncation policies kept the head
        for ok, message in run_config_checks(config):
            if not ok:
                raise UserError(f"{where}: {message}")
        id2label = config["id2label"]
        policy = Policy(config["pooling"], config["max_length"], config["truncation"], config.get("pad_to"),
                        config["pad_id"], config.get("prefix_dtype", "float32"), config.get("first_trainable_block"),
                        config.get("max_chunks"), config.get("chunk_overlap"))
        training = TrainConfig.from_json(config.get("training", {}), where)
        return cls(str(config.get("model_name", "")), str(config.get("weights", "")), config["model"],
                   [id2label[str(i)] for i in range(len(id2label))], policy, config["tokenizer"], training,
                   config.get("data") if isinstance(config.get("data"), dict) else {},
                   config.get("trainable_parameters"), config.get("total_parameters"), config.get("feature_cache"),
                   str(config.get("gptclassify_version", "")), config.get("task", "single-label"),
                   config.get("thresholds"), config.get("target_scale"), config.get("temperature"),
                   config.get("tuning") if isinstance(config.get("tuning"), dict) else None)


def run_config_checks(config: dict) -> list[tuple[bool, str]]:
    id2label, start, task = config["id2label"], config.get("first_trainable_block"), config.get("task", "single-label")
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    numbers = lambda v, n: isinstance(v, list) and len(v) == n and all(  # noqa: E731
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    fewest = {"single-label": 2, "multi-label": 1, "regression": 1}.get(task, 2)
    return [
        (task in PROBLEM_TYPES, f"'task' must be one of {', '.join(PROBLEM_TYPES)}"),
        (isinstance(config["model"], dict), "'model' must be an object"),
        (isinstance(id2label, dict) and len(id2label) >= fewest
         and sorted(id2label) == sorted(map(str, range(len(id2label))))
         and all(isinstance(v, str) for v in id2label.values()), "'id2label' must map 0..n-1 to label names"),
        (task != "regression" or len(id2label) == 1, "a regression run has one output"),
        (config.get("thresholds") is None or numbers(config["thresholds"], len(id2label)),
         "'thresholds' must be one number per label"),
        (config.get("target_scale") is None or numbers(config["target_scale"], 2) and config["target_scale"][1] > 0,
         "'target_scale' must be [mean, std] with std > 0"),
        (config.get("temperature") is None or (numbers([config["temperature"]], 1) and config["temperature"] > 0
                                               if task != "multi-label" else
                                               numbers(config["temperature"], len(id2label))
                                               and min(config["temperature"]) > 0),
         "'temperature' must be a positive number (multi-label: one per label)"),
        (config["pooling"] in POOLINGS, f"'pooling' must be one of {', '.join(POOLINGS)}"),
        (config["truncation"] in TRUNCATIONS, f"'truncation' must be one of {', '.join(TRUNCATIONS)}"),
        (is_int(config["max_length"]) and config["max_length"] > 0, "'max_length' must be a positive integer"),
        (is_int(config["pad_id"]) and config["pad_id"] >= 0, "'pad_id' must be a token id"),
        (config.get("pad_to") is None or is_int(config["pad_to"]) and config["pad_to"] > 0,
         "'pad_to' must be a positive integer or null"),
        (config["tokenizer"] in TOKENIZERS, "'tokenizer' must be tiktoken gpt2, or tokenizers with the run's own "
                                            "tokenizer.json"),
        (config.get("prefix_dtype", "float32") in PREFIX_DTYPES, f"'prefix_dtype' must be one of "
                                                                  f"{', '.join(PREFIX_DTYPES)}"),
        (start is None or is_int(start) and start >= -1, "'first_trainable_block' must be a block index or null"),
        (config["truncation"] != "chunks" or is_int(config.get("max_chunks")) and config["max_chunks"] > 0,
         "'max_chunks' must be a positive integer with truncation chunks"),
        (config.get("chunk_overlap") is None or is_int(config["chunk_overlap"]) and config["chunk_overlap"] >= 0,
         "'chunk_overlap' must be a token count or null"),
    ]


@dataclass
class Limits:
    """What one request to `serve`, and its queue, may hold; each field is also a `serve` option."""

    max_texts: int = setting(64, "texts per request (beyond: 413)", at_least=1)
    max_chars: int = setting(10_000, "characters per text (beyond: 413)", at_least=1)
    max_batch_texts: int = setting(128, "texts per forward pass, across requests", at_least=1, cli=False)
    max_body_bytes: int = setting(1_000_000, "request body size, checked before parsing (beyond: 413)", at_least=1)
    max_queue_texts: int = setting(1024, "texts waiting for the model (beyond: 503 + Retry-After)", at_least=1,
                                   flag="--max-queue")
    timeout_s: float = setting(30.0, "seconds a request may wait for its answer (then 503)", above=0,
                               at_most=86_400, unit="seconds", flag="--timeout")

    def __post_init__(self):
        check_settings(self)
