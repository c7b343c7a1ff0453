"""Stratified k-fold splits of a set of examples for cross-validation (`gptclassify tune`): each
fold holds its share of every class (label sets: of every set of labels; numbers: of every range
of values), drawn from a seeded shuffle."""

from __future__ import annotations

import random
from collections import defaultdict


def stratified_folds(targets: list, k: int, seed: int) -> list[list[int]]:
    """k disjoint lists of example indices covering every example once. Examples are grouped by
    their class (class ids), their set of labels (0/1 rows) or their rank (numbers, in groups of k
    neighbours); each group is shuffled and dealt round the folds, the next group starting where
    the last one stopped, so folds differ in size by one at most."""
    rng = random.Random(seed)
    groups: dict = defaultdict(list)
    if targets and isinstance(targets[0], float):
        for rank, i in enumerate(sorted(range(len(targets)), key=targets.__getitem__)):
            groups[rank // k].append(i)
    else:
        for i, t in enumerate(targets):
            groups[tuple(t) if isinstance(t, list) else t].append(i)
    folds, turn = [[] for _ in range(k)], 0
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        for i in members:
            folds[turn % k].append(i)
            turn += 1
    return [sorted(f) for f in folds]
