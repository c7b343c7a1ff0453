"""Modules on their own, against a reference where one exists: the metrics against scikit-learn,
the optimizer's state through a checkpoint's files, the classifier's head, freezing and pooling,
and the batches one process or two see."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from gptclassify.data.batches import GROUP_BATCHES, Collate, ShardedLoader, by_length
from gptclassify.training.checkpoint import flatten_optimizer, unflatten_optimizer
from gptclassify.classifier.head import add_classifier_head, first_trainable_block, freeze_all_but, pool
from gptclassify.distributed import World
from gptclassify.classifier.metrics import classification_report
from gptclassify.models.gpt2 import GPTModel, gpt2_config


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60))))
def test_metrics_match_scikit_learn(case):
    metrics = pytest.importorskip("sklearn.metrics")
    k, pairs = case
    y_true, y_pred = np.array([t for t, _ in pairs]), np.array([p for _, p in pairs])
    labels = [f"c{i}" for i in range(k)]
    report = classification_report(y_true, y_pred, labels)
    classes = list(range(k))
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, labels=classes, average="macro",
                                                                zero_division=0))
    assert report["confusion_matrix"] == metrics.confusion_matrix(y_true, y_pred, labels=classes).tolist()
    p, r, f, s = metrics.precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    for i, label in enumerate(labels):
        got = report["per_class"][label]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == \
            pytest.approx((p[i], r[i], f[i], s[i]))


def test_an_optimizer_restored_from_a_checkpoints_files_takes_the_same_next_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(5, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # as state.json stores it
    twin = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    twin.load_state_dict(model.state_dict())
    restored = torch.optim.AdamW(twin.parameters(), lr=1.0)
    restored.load_state_dict(unflatten_optimizer({k: v.clone() for k, v in tensors.items()}, meta))
    for m, o in ((model, opt), (twin, restored)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_the_head_the_frozen_part_and_the_pooled_position():
    model = GPTModel(gpt2_config("gpt2", n_layers=4, emb_dim=32, n_heads=4, vocab_size=100))
    add_classifier_head(model, 3, seed=7)
    head = model.out_head.weight.clone()
    add_classifier_head(model, 3, seed=7)
    assert model.out_head.weight.shape == (3, 32) and torch.equal(model.out_head.weight, head)  # the seed decides
    assert [first_trainable_block(4, t) for t in ("head", "last-block", "last-3-blocks", "all")] == [4, 3, 1, -1]
    with pytest.raises(ValueError):
        first_trainable_block(4, "last-9-blocks")
    trainable, total = freeze_all_but(model, "last-block")
    expected = sum(p.numel() for m in (model.trf_blocks[-1], model.final_norm, model.out_head) for p in m.parameters())
    assert trainable == expected == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == sum(p.numel() for p in model.parameters())
    hidden, lengths = torch.randn(2, 5, 32), torch.tensor([2, 5])
    assert torch.equal(pool(hidden, lengths, "last-token"), torch.stack([hidden[0, 1], hidden[1, 4]]))
    assert torch.equal(pool(hidden, lengths, "last-position"), hidden[:, -1])
    assert torch.allclose(pool(hidden, lengths, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))


def test_two_processes_see_the_single_processs_batches_between_them():
    examples = [([i] * (i % 4 + 1), i) for i in range(11)]  # each labelled by its index
    collate = Collate(pad_id=-1)
    ids, labels, lengths = collate(examples[:3])
    assert ids.tolist() == [[0, -1, -1], [1, 1, -1], [2, 2, 2]] and lengths.tolist() == [1, 2, 3]
    torch.manual_seed(0)
    alone = ShardedLoader(examples, 11, 4, collate, World(), shuffle=True)
    order = alone.draw_order()
    seen = [sorted(labels_of(b)) for b, _ in alone.batches(order)]
    shares = [ShardedLoader([examples[i] for i in World(r, 2).shard(11)], 11, 4, collate, World(r, 2))
              for r in (0, 1)]
    together = [sorted(labels_of(a) + labels_of(b))
                for (a, size_a), (b, size_b) in zip(shares[0].batches(order), shares[1].batches(order))]
    assert together == seen


@pytest.mark.parametrize("parts", [(11, 5), (4, 7, 3), (1, 1)])
def test_two_splits_shared_out_are_one_loaders_examples_each_held_once(parts):
    """tune's winner trains on the training and validation splits: each shared out on its own, as
    the frozen pass shares them; the two processes' batches hold the single process's examples."""
    splits = [[([i] * (i % 3 + 1), 100 * s + i) for i in range(n)] for s, n in enumerate(parts)]
    every = [e for split in splits for e in split]
    collate = Collate(pad_id=-1)
    torch.manual_seed(0)
    alone = ShardedLoader(every, len(every), 4, collate, World(), shuffle=True, parts=list(parts))
    order = alone.draw_order()
    seen = [sorted(labels_of(b)) for b, _ in alone.batches(order)]
    assert sorted(x for b in seen for x in b) == sorted(y for _, y in every)
    shares = [ShardedLoader([split[i] for split in splits for i in World(r, 2).shard(len(split))], len(every), 4,
                            collate, World(r, 2), parts=list(parts)) for r in (0, 1)]
    together = [sorted(labels_of(a) + labels_of(b))
                for (a, _), (b, _) in zip(shares[0].batches(order), shares[1].batches(order))]
    assert together == seen


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9).flatmap(lambda b: st.tuples(
    st.one_of(st.lists(st.integers(1, 300), min_size=1, max_size=900),
              st.integers(1, 100).flatmap(lambda n: st.lists(st.integers(1, 300), min_size=n * b, max_size=n * b))),
    st.just(b))), st.integers(0, 2 ** 32 - 1))
def test_batches_by_length_hold_every_text_once_and_pad_no_more_than_the_shuffled_order(case, seed):
    """(No more padding: where every batch is full; a short batch can, by chance, fall better shuffled.)"""
    sizes, batch_size = case
    order = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = by_length(order, sizes, batch_size, torch.Generator().manual_seed(seed))
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert sum(len(b) < batch_size for b in batches) <= 1
    groups = [set(order[g:g + GROUP_BATCHES * batch_size]) for g in range(0, len(order), GROUP_BATCHES * batch_size)]
    assert all(any(set(b) <= g for g in groups) for b in batches)  # texts mix only within their group
    padded = sum(len(b) * max(sizes[i] for i in b) for b in batches)
    shuffled = sum(len(b) * max(sizes[i] for i in b) for b in (order[k:k + batch_size]
                                                                for k in range(0, len(order), batch_size)))
    assert padded <= shuffled or len(sizes) % batch_size


def test_batches_by_length_are_the_same_for_one_process_or_two():
    collate = Collate(pad_id=-1)
    sizes = [(7 * i) % 13 + 1 for i in range(50)]
    examples = [([i] * sizes[i], i) for i in range(50)]
    torch.manual_seed(0)
    order = ShardedLoader(examples, 50, 4, collate, World(), shuffle=True, sizes=sizes).draw_order()
    torch.manual_seed(0)
    shuffled = ShardedLoader(examples, 50, 4, collate, World(), shuffle=True).draw_order()
    assert sorted(i for b in order for i in b) == list(range(50))

    def padded(batches):
        return sum(max(sizes[i] for i in b) * len(b) for b in batches)

    assert padded(order) < 0.8 * padded(shuffled)
    shares = [ShardedLoader([examples[i] for i in World(r, 2).shard(50)], 50, 4, collate, World(r, 2), sizes=sizes)
              for r in (0, 1)]
    together = [sorted(labels_of(a) + labels_of(b))
                for (a, _), (b, _) in zip(shares[0].batches(order), shares[1].batches(order))]
    assert together == [sorted(b) for b in order]


def labels_of(batch) -> list[int]:
    return [] if batch is None else batch[1].tolist()
