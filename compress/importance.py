"""Importance of prunable units (heads, FFN neurons, Tucker ranks and cores), from task data or weights.

A unit is a group of weights that disappears together. `taylor` is the first-order estimate of the loss change
when the whole group is zeroed, |Σ w·∂L/∂w| over the group, summed over batches of task data (Molchanov et al.
2019; for heads this equals Michel et al.'s head-mask gradient). `l1` is the group's Σ|w|, needing no data.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from modeling.families import family_of

# Per-parameter values (w·g, or |w|) by parameter name -> per-unit sums by unit-group name.
Reducer = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
METHODS = ("taylor", "l1")


def unit_importance(model: nn.Module, reducer: Reducer, method: str,
                    batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    if method == "l1":
        with torch.no_grad():
            return reducer({n: p.abs() for n, p in params.items()})
    if method != "taylor":
        raise ValueError(f"importance method {method!r}: expected one of {METHODS}")
    family = family_of(model)
    was_training = model.training
    model.eval()  # the gradients of the model as it is used, without dropout noise
    scores: dict[str, torch.Tensor] = {}
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**family.model_inputs(batch)).loss.backward()
        with torch.no_grad():
            contrib = {n: p * p.grad for n, p in params.items() if p.grad is not None}
            for unit, value in reducer(contrib).items():
                scores[unit] = scores.get(unit, 0) + value.abs()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order (kept rows stay in place)."""
    return scores.topk(k).indices.sort().values


def allocate_globally(scores: list[torch.Tensor], total: int) -> list[int]:
    """Units to keep per layer when `total` are kept over all layers: every layer keeps its best unit, the rest
    go to the highest scores after normalising each layer to unit L2 norm (Michel et al.: raw scores differ in
    scale between layers)."""
    if not len(scores) <= total <= sum(len(s) for s in scores):
        raise ValueError(f"cannot keep {total} units over {len(scores)} layers of {[len(s) for s in scores]}")
    counts = [1] * len(scores)
    rest = []
    for layer, s in enumerate(scores):
        normed = s / s.norm().clamp_min(1e-12)
        order = normed.argsort(descending=True)
        rest += [(float(normed[j]), layer) for j in order[1:]]
    for _, layer in sorted(rest, reverse=True)[:total - len(scores)]:
        counts[layer] += 1
    return counts
