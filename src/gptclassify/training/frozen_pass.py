"""The frozen pass: every example through the frozen prefix once, its output kept (in memory, on
the GPU, and in the on-disk cache for later runs), so that every epoch runs only the trainable
suffix. When it cannot be used (`features.cache_unavailable_reason`), the suffix reads token ids
and the log says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..classifier.names import needs_fixed_width
from ..data.batches import Collate
from ..data.splits import SPLITS
from ..device import no_grad_batching
from ..distributed import all_reduce_sum
from ..errors import UserError
from ..files import write_failure
from ..hub import sha256_file
from ..progress import Progress
from . import feature_cache
from .features import (FeatureDataset, build_feature_store, cache_unavailable_reason, collate_features, feature_widths,
                       gpu_room_for, keep_on_gpu, store_from, where_features_live)


@dataclass
class Inputs:
    """What the trainable suffix reads, per split, and how to batch it."""

    sets: dict  # split -> FeatureDataset (cached states) or TextDataset (token ids)
    collate: object
    cached: bool


def frozen_pass(classifier, tokens, world, device, log, names: dict, also_keep: tuple[int, ...] = ()) -> Inputs:
    """The cached states of every split (read from the on-disk cache, or computed and kept there),
    or the token datasets themselves when the cache is off or cannot be used. `also_keep`: other
    first trainable blocks whose states the same pass keeps in the cache too (when it runs at all), as
    a run that starts training there would find them (`tune` trains at several depths)."""
    cfg = classifier.cfg
    token_inputs = Inputs(tokens.datasets, Collate(classifier.tokenizer.pad_id, tokens.pad_to), cached=False)
    if not cfg.cache:
        log("feature cache: off (--no-cache)")
        return token_inputs
    reason = cache_unavailable_reason(classifier.model, cfg.trainable)
    if reason:
        log(f"feature cache: not used: {reason}")
        return token_inputs
    widths = {split: feature_widths(ds, tokens.pad_to, cfg.pooling) for split, ds in tokens.datasets.items()}
    counts = {split: sum(w) for split, w in widths.items()}
    mine = sum(counts.values())
    total = int(all_reduce_sum(torch.tensor([mine])).item())
    key, meta = cache_key(classifier, tokens, world, device, counts, names)
    entry, damaged = feature_cache.open_entry(key)
    if damaged:
        log(f"feature cache: entry {key[:12]} was damaged ({damaged}): removed, building it again")
    if entry is not None:
        stored = feature_cache.load_entry(entry, list(widths))
        features = {split: FeatureDataset(store_from(*stored[split]), ds) for split, ds in tokens.datasets.items()}
        log(f"feature cache: reusing {total:,} positions of entry {key[:12]} (made {entry.meta['created']}, "
            f"{entry.nbytes / 1e9:.2f} GB): the frozen pass is skipped")
        log_where_features_are(keep_on_gpu(features, device), "copied to the GPU", device, log)
        return Inputs(features, collate_features, cached=True)
    prefix, dim = classifier.prefix, classifier.model.cfg.emb_dim
    nbytes, where = where_features_live(mine, dim, prefix.out_dtype)
    writer, outputs, where = open_entry_writer(key, meta, widths, nbytes, where, dim, prefix.dtype_name)
    also = also_writers(classifier, tokens, world, device, counts, names, widths, nbytes, also_keep) if writer else {}
    each = " per process" if world.size > 1 else ""
    blocks = f"{classifier.start} frozen block{'s' if classifier.start != 1 else ''}"
    extra = f"; also the states entering block{'s' if len(also) > 1 else ''} {', '.join(map(str, also))} " \
            f"(+{len(also) * nbytes / 1e9:.2f} GB)" if also else ""
    log(f"frozen pass: {total:,} token positions through the embedding and {blocks} in {prefix.dtype} "
        f"({', '.join(f'{s} {n:,}' for s, n in counts.items())}{' on rank 0' if each else ''}); "
        f"features {nbytes / 1e9:.2f} GB{each} {where}{extra}")
    progress = Progress(mine, "positions", "frozen pass", log, enabled=world.is_main)
    writers = [writer, *(w for w, _, _ in also.values())]
    try:
        features = run_prefix_over(classifier, tokens, widths, outputs, nbytes, progress, device, log,
                                   {start: out for start, (_, _, out) in also.items()})
    except BaseException:
        for w in writers:
            if w:
                w.abandon()
        raise
    seconds = progress.close()
    kept = writer is not None and publish_entry(writer, key, log)
    for start, (w, also_key, _) in also.items():
        if publish_entry(w, also_key, log, protect=key):
            log(f"feature cache: the states entering block {start} kept as entry {also_key[:12]}")
    shared = f" (rank 0 holds {mine:,})" if world.size > 1 else ""
    log(f"feature cache: {total:,} positions through the frozen layers{shared} in {seconds:.1f}s"
        + (f", kept as entry {key[:12]}" if kept else ""))
    return Inputs(features, collate_features, cached=True)


def also_writers(classifier, tokens, world, device, counts: dict, names: dict, widths: dict, nbytes: int,
                 starts: tuple[int, ...]) -> dict[int, tuple]:
    """{start: (writer, key, {split: tensor})} for each other first trainable block in `starts` whose
    entry is not in the cache yet and can be written (one that cannot is left to the run that needs it);
    each entry is the size of the pass's own (`nbytes`)."""
    dim, dtype, out = classifier.model.cfg.emb_dim, classifier.prefix.dtype_name, {}
    for start in sorted(set(starts)):
        if start == classifier.start or not 0 < start <= len(classifier.model.trf_blocks):
            continue
        key, meta = cache_key(classifier, tokens, world, device, counts, names, start)
        entry, _ = feature_cache.open_entry(key)
        if entry is None:
            writer, outputs, _ = open_entry_writer(key, meta, widths, nbytes, "", dim, dtype)
            if writer:
                out[start] = (writer, key, outputs)
    return out


def run_prefix_over(classifier, tokens, widths: dict, outputs: dict, nbytes: int, progress, device, log,
                    also: dict | None = None) -> dict:
    """Every split through the frozen prefix once. On a GPU with room for them, the states are
    written and kept there (training batches them there) and copied to the on-disk entry after.
    `also`: {other first trainable block: {split: on-disk tensor}}, written in the same pass."""
    cfg, prefix = classifier.cfg, classifier.prefix
    texts_per_batch, tokens_per_batch = no_grad_batching(device, max(cfg.batch_size, 32))
    why_not = gpu_room_for(nbytes, device)
    log_where_features_are(why_not, "kept on the GPU", device, log)
    features = {}
    for split, ds in tokens.datasets.items():
        disk = outputs.get(split)
        flat = disk if why_not else torch.empty(sum(widths[split]), classifier.model.cfg.emb_dim,
                                                dtype=prefix.out_dtype, device=device)
        store = build_feature_store(prefix, ds, pad_id=classifier.tokenizer.pad_id, pad_to=tokens.pad_to,
                                    pooling=cfg.pooling, batch_size=texts_per_batch, max_tokens=tokens_per_batch,
                                    device=device, progress=progress, flat=flat,
                                    also={start: out[split] for start, out in (also or {}).items()})
        if disk is not None and flat is not disk:
            disk.copy_(store.flat.cpu())  # the reusable entry on disk, in one copy
        features[split] = FeatureDataset(store, ds)
    return features


def open_entry_writer(key: str, meta: dict, widths: dict, nbytes: int, where: str, dim: int, dtype: str):
    """The on-disk entry the frozen pass writes into, its files made and their space reserved
    first; (None, {}, why not) when it is over the cache's limit or cannot be written."""
    limit = feature_cache.limit_bytes()
    if nbytes > limit:
        return None, {}, f"{where}, not kept: over the on-disk cache's limit of {limit / 1e9:.0f} GB"
    writer = None
    try:
        writer = feature_cache.EntryWriter(key, meta)
        outputs = {split: writer.features(split, w, dim, dtype) for split, w in widths.items()}
        return writer, outputs, f"on disk in {feature_cache.cache_root()} (reusable)"
    except OSError as e:
        if writer:
            writer.abandon()
        return None, {}, f"{where}, not kept on disk ({e.filename or feature_cache.cache_root()}: {write_failure(e)})"


def publish_entry(writer, key: str, log, protect: str | None = None) -> bool:
    """Checksum the finished entry and put it in place, then keep the cache to its limit (never
    removing `protect` either: an entry this pass made)."""
    try:
        writer.finish()
    except (OSError, UserError) as e:  # the run goes on with its features; later runs compute them again
        writer.abandon()
        log(f"feature cache: could not keep the features on disk ({getattr(e, 'strerror', None) or e})")
        return False
    for old in feature_cache.prune(keep=(key, protect)):
        log(f"feature cache: removed entry {old.key[:12]} ({old.nbytes / 1e9:.2f} GB, least recently used)")
    return True


def cache_key(classifier, tokens, world, device, positions: dict[str, int], names: dict,
              start: int | None = None) -> tuple[str, dict]:
    """The on-disk cache's key (everything the features depend on) and what `cache list` shows; for
    the run's first trainable block, or for the later block `start`."""
    model, prefix, cfg = classifier.model, classifier.prefix, classifier.cfg
    start = classifier.start if start is None else start
    named = [(n, t) for n, t in model.state_dict().items()
             if not n.startswith(("trf_blocks.", "final_norm.", "out_head."))
             or (n.startswith("trf_blocks.") and int(n.split(".")[1]) < start)]
    parts = {
        "weights_sha256": feature_cache.hash_tensors(named),
        "model": model.cfg.to_dict(),
        "tokens_sha256": {s: feature_cache.hash_token_ids(ds.encoded) for s, ds in tokens.datasets.items()},
        "pad_id": classifier.tokenizer.pad_id, "pad_to": tokens.pad_to,
        "pooling_width": needs_fixed_width(cfg.pooling), "first_trainable_block": start, "prefix_dtype": prefix.dtype,
        "share": [world.rank, world.size], "torch": torch.__version__, "device": device.type,
    }
    data_dir = names["data_dir"]
    meta = {"model": names["model"], "weights": names["weights"], "data": str(data_dir.resolve()),
            "data_sha256": {s: sha256_file(data_dir / f"{s}.csv") for s in SPLITS if (data_dir / f"{s}.csv").is_file()},
            "max_length": tokens.max_length, "truncation": cfg.truncation, "first_trainable_block": start,
            "prefix_dtype": prefix.dtype, "dtype": prefix.dtype_name, "dim": model.cfg.emb_dim,
            "positions": positions, "share": parts["share"]}
    return feature_cache.entry_key(parts), meta


def log_where_features_are(why_not_on_gpu: str | None, on_gpu: str, device, log) -> None:
    """On a GPU, whether the cached states are there or, and why, in host memory (elsewhere: nothing)."""
    if device.type == "cuda":
        log("feature cache: " + (f"kept in host memory ({why_not_on_gpu})" if why_not_on_gpu else on_gpu))
