"""Small pieces of the GPU path that run anywhere: batches filled up to a number of positions, step
losses read back in bulk, and models made without drawing initial values."""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from gptclassify.data.lengths import length_sorted_batches
from gptclassify.device import GPU_BATCH_TOKENS, no_grad_batching
from gptclassify.training.features import keep_on_gpu
from gptclassify.training.steps import TrainState, smoothed
from gptclassify.weights.tensors import build_model, uninitialised


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=200), st.integers(1, 50), st.integers(1, 2000))
def test_batches_by_positions_hold_every_example_once_within_the_budget(lengths, batch_size, max_tokens):
    batches = length_sorted_batches(lengths, batch_size, max_tokens)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # short to long
    for b in batches:
        assert 1 <= len(b) <= batch_size
        width = max(max(lengths[i] for i in b), 1)
        assert len(b) == 1 or len(b) * width <= max_tokens  # a text longer than the budget goes alone


def test_without_a_budget_batches_are_the_cpus_fixed_size():
    lengths = [5, 3, 9, 1, 7]
    assert length_sorted_batches(lengths, 2) == [[3, 1], [0, 4], [2]]
    assert no_grad_batching(torch.device("cpu"), 32) == (32, None)
    texts, tokens = no_grad_batching(torch.device("cuda"), 32)
    assert tokens == GPU_BATCH_TOKENS and texts >= 32


def test_step_losses_read_back_in_bulk_keep_their_order():
    state = TrainState(history={"step_loss": [0.5], "eval": [], "epochs": []})
    state.pending += [torch.tensor([0.25]), torch.tensor([0.125])]
    assert state.read_losses() == [0.25, 0.125] and state.pending == []
    state.pending.append(torch.tensor([1.0]))
    saved = state.to_dict()  # a checkpoint never misses a step
    assert saved["history"]["step_loss"] == [0.5, 0.25, 0.125, 1.0] and "pending" not in saved
    assert TrainState(**saved).pending == []
    assert smoothed(None, [1.0, 0.0]) == 0.9


def test_models_made_uninitialised_take_their_weights_and_leave_init_alone():
    normal = nn.init.normal_
    with uninitialised():
        made = nn.Linear(3, 2)
    assert made.weight.is_meta and nn.init.normal_ is normal
    state = {"weight": torch.arange(6.0).view(2, 3), "bias": torch.ones(2)}
    model = build_model(lambda cfg: nn.Linear(3, 2), None, state)
    assert torch.equal(model.weight, state["weight"]) and torch.equal(model.bias, state["bias"])
    torch.manual_seed(0)
    a = nn.Linear(3, 2).weight
    torch.manual_seed(0)
    with uninitialised():
        nn.Linear(3, 2)  # draws nothing from the generator
    assert torch.equal(nn.Linear(3, 2).weight, a)


def test_features_stay_in_host_memory_off_a_gpu():
    assert keep_on_gpu({}, torch.device("cpu")) == "not on a GPU"


def test_the_frozen_pass_stores_each_examples_states_whatever_the_batching():
    """Batched by count or by positions, each example's stored states are its own prefix output."""
    from gptclassify.data.batches import TextDataset
    from gptclassify.training.features import build_feature_store
    from gptclassify.models.gpt2 import GPTModel, gpt2_config
    from gptclassify.classifier.prefix import FrozenPrefix

    class Ids:  # a tokenizer of space-separated ids
        def encode(self, text, *args):
            return [int(t) for t in text.split()]

    torch.manual_seed(0)
    model = GPTModel(gpt2_config("gpt2", n_layers=2, emb_dim=32, n_heads=4, vocab_size=100)).eval()
    prefix = FrozenPrefix(model, 1, "float32", torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    texts = [" ".join(str(t) for t in torch.randint(0, 99, (int(n),), generator=g).tolist())
             for n in torch.randint(1, 30, (23,), generator=g)]
    ds = TextDataset(texts, [0] * len(texts), Ids(), max_length=64)
    for pooling, pad_to in (("last-token", None), ("last-position", 29)):
        for batch_size, max_tokens in ((4, None), (1000, 60), (3, 10_000)):
            store = build_feature_store(prefix, ds, pad_id=99, pad_to=pad_to, pooling=pooling, batch_size=batch_size,
                                        device=torch.device("cpu"), max_tokens=max_tokens)
            for i, ids in enumerate(ds.encoded):
                padded = ids + [99] * ((pad_to or len(ids)) - len(ids))
                expected = prefix(torch.tensor([padded]))[0]
                assert torch.allclose(store.get(i), expected, atol=1e-5), (pooling, batch_size, max_tokens, i)
