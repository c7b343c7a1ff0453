"""The transformers peer of label_shapes.py on a regression set, replayed cheaply, to measure its
spread over many seeds beside ours.

The peer (`label_shapes.peer`) trains SmolLM2's last block, final norm and a new head with AdamW
(8e-4, cosine to zero, weight decay 0.1), batch 8, 5 epochs, running the whole network every step:
16 to 48 minutes a seed on 2 cores. Here the same training is replayed: the peer's new head as
`peer_model(seed)` draws it, its batch order (`random.Random(seed)`, one shuffle per epoch), our
model's last block on float32 states entering it (computed once), our AdamW and schedule. Where the
peer has run (`label_shapes.py --rows peer --seeds ...`), the replay gives its R² to about 1e-6, so
the two train the same way and differ only in what a seed draws: the head's first weights and the
batches' order. A seed then costs under a minute.

    ../.venv/bin/python peer_replay.py --seeds 123 1 2 3 4 5 6 7 8 9 10   # results/peer_replay.json
    ../.venv/bin/python peer_replay.py --summary    # the replay's spread beside ours (label_shapes.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from common import RESULTS, save
from label_shapes import WEIGHTS, read, scores, subset
from long_text import peer_batches, peer_model

EPOCHS, BATCH, LR, CAP = 5, 8, 8e-4, 256


def states(model, tok, texts: list[str], start: int, dtype: str) -> list[torch.Tensor]:
    """Each text's hidden states entering block `start` (token ids as the peer's), computed by our
    frozen prefix in `dtype` (float32 as the peer; bfloat16 as our default on a CPU with bfloat16
    units, which the feature cache then holds) and returned as float32."""
    from gptclassify.classifier.prefix import FrozenPrefix
    from gptclassify.data.tokenizer import keep

    prefix = FrozenPrefix(model, start, dtype, torch.device("cpu"))
    ids = [keep(tok.encode(t, CAP, "head+tail"), CAP, "head+tail", len(tok.prefix)) or [tok.pad_id] for t in texts]
    out: list[torch.Tensor | None] = [None] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    with torch.no_grad():
        for b in range(0, len(order), 32):
            rows = order[b: b + 32]
            width = max(len(ids[i]) for i in rows)
            batch = torch.tensor([ids[i] + [tok.pad_id] * (width - len(ids[i])) for i in rows])
            x = prefix(batch).float()  # causal: the padding after a text never reaches it
            for k, i in enumerate(rows):
                out[i] = x[k, : len(ids[i])].clone()
    return out


def padded(xs: list[torch.Tensor], rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([xs[i].shape[0] for i in rows])
    x = torch.zeros(len(rows), int(lengths.max()), xs[rows[0]].shape[1])
    for k, i in enumerate(rows):
        x[k, : lengths[k]] = xs[i]
    return x, lengths


def replay(model, pristine: dict, train_x, train_z, test_x, seed: int, head: str) -> torch.Tensor:
    """The peer's training with `seed`, replayed (`head`: the peer's first head weights, or ours as
    `train --seed` draws them); the test split's standardized predictions."""
    import torch.nn.functional as F

    from gptclassify.classifier.head import add_classifier_head, suffix_logits
    from gptclassify.config import TrainConfig
    from gptclassify.training.steps import make_optimizer

    model.load_state_dict(pristine)
    add_classifier_head(model, 1, seed)  # our first head, as `train --seed` draws it
    if head == "peer":
        with torch.no_grad():
            model.out_head.weight.copy_(peer_model(1, "regression", seed)[0].score.weight)
    start = len(model.trf_blocks) - 1
    steps = EPOCHS * ((len(train_x) + BATCH - 1) // BATCH)
    optimizer, schedule = make_optimizer(model, TrainConfig(lr=LR, lr_schedule="cosine"), steps)
    model.train()
    for batches in peer_batches(len(train_x), EPOCHS, BATCH, seed):
        for rows in batches:
            x, lengths = padded(train_x, rows)
            loss = F.mse_loss(suffix_logits(model, x, lengths, start, "last-token").reshape(-1), train_z[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([suffix_logits(model, *padded(test_x, list(range(b, min(b + 64, len(test_x))))), start,
                                        "last-token").reshape(-1) for b in range(0, len(test_x), 64)])


def variant(dtype: str, head: str) -> str:
    whose = "the peer's" if head == "peer" else "our"
    return f"{dtype} prefix, {whose} first head"


def run(name: str, seeds: list[int], dtype: str, head: str) -> None:
    from gptclassify.classifier.head import add_classifier_head, freeze_all_but
    from gptclassify.weights import load_pretrained, load_tokenizer

    started = time.perf_counter()
    data = subset(name)
    train, test = read(data, "train"), read(data, "test")
    model, tok = load_pretrained(WEIGHTS), load_tokenizer(WEIGHTS)
    add_classifier_head(model, 1, 123, bias=False)
    freeze_all_but(model, "last-block")
    start = len(model.trf_blocks) - 1
    train_x, test_x = (states(model, tok, list(df["text"]), start, dtype) for df in (train, test))
    print(f"{dtype} states of {len(train_x) + len(test_x):,} texts: {time.perf_counter() - started:.0f}s", flush=True)
    y = train["label"].astype(float).to_numpy()
    mean, std = y.mean(), y.std()  # as the peer standardizes
    train_z = torch.tensor((y - mean) / std, dtype=torch.float32)
    test_y = test["label"].astype(float).to_numpy()
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    previous = RESULTS / "peer_replay.json"
    results = json.loads(previous.read_text()).get("results", {}) if previous.is_file() else {}
    for seed in seeds:
        t = time.perf_counter()
        predicted = replay(model, pristine, train_x, train_z, test_x, seed, head).numpy() * std + mean
        got = {**scores("regression", test_y, predicted), "seconds": time.perf_counter() - t}
        results.setdefault(name, {}).setdefault(variant(dtype, head), {})[str(seed)] = got
        print(f"seed {seed}: R² {got['r2']:.4f} ({got['seconds']:.0f}s)", flush=True)
        save("peer_replay", {"weights": WEIGHTS, "results": results})


def spread(r2: list[float]) -> str:
    return f"{len(r2)} seeds, R² mean {statistics.mean(r2):.4f}, sd {statistics.stdev(r2):.4f}, {min(r2):.4f} to {max(r2):.4f}"


def summary(name: str) -> None:
    """The replay beside the real peer (where it ran), each variant's spread and its paired change
    from the peer's own setting (the same seeds: the same batches), and our default's spread."""
    replayed = json.loads((RESULTS / "peer_replay.json").read_text())["results"][name]
    shapes = json.loads((RESULTS / "label_shapes.json").read_text())["results"][name]
    base = replayed[variant("float32", "peer")]
    real = {"123": shapes.get("peer")} | {k.split()[-1]: v for k, v in shapes.items() if k.startswith("peer seed")}
    for seed, got in real.items():
        if got and seed in base:
            print(f"seed {seed}: the peer {got['r2']:.6f}, replayed {base[seed]['r2']:.6f}")
    for name_, runs in replayed.items():
        print(f"replay, {name_}: {spread([v['r2'] for v in runs.values()])}")
        common = [seed for seed in runs if seed in base]
        if runs is not base and len(common) > 1:
            change = [runs[seed]["r2"] - base[seed]["r2"] for seed in common]
            se = statistics.stdev(change) / len(change) ** 0.5
            print(f"    paired change on {len(common)} seeds: {statistics.mean(change):+.4f} (standard error {se:.4f})")
    ours = [v["r2"] for k, v in shapes.items() if k == "default" or k.startswith("default seed")]
    peer = [v["r2"] for v in base.values()]
    print(f"gptclassify default (label_shapes.py): {spread(ours)}")
    se = (statistics.variance(peer) / len(peer) + statistics.variance(ours) / len(ours)) ** 0.5
    print(f"the peer's lead: {statistics.mean(peer) - statistics.mean(ours):+.4f} R² (standard error {se:.4f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="vader-tweets", choices=["vader-tweets"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[123, 1, 2])
    parser.add_argument("--prefix-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="the states' precision (the peer: float32)")
    parser.add_argument("--head", choices=["peer", "ours"], default="peer", help="whose first head weights")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.summary:
        summary(args.dataset)
    else:
        run(args.dataset, args.seeds, args.prefix_dtype, args.head)


if __name__ == "__main__":
    main()
