"""Rank pruning of TD models: shrink the shared Tucker ranks d (`rank_dim`) and l (`rank_layer`).

The natural structured pruning of a shared-core model. Removing index a of d drops column a of U with slice
G[:, a, :]; index b drops row b of V with G[:, :, b]; core k drops G[k] and column k of P. The U side and the
V side each keep their d' most important indices (they are independent indices that share one size), the
bank keeps its l' most important cores. Every layer shrinks at once, since all share the factors.
"""
from __future__ import annotations

import torch
from torch import nn

from modeling.params import encoder_stack

from .importance import top_indices

def rank_reducer(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scores of U and V columns and of cores, from the shared factors wherever the model keeps them."""
    f = {name.rpartition(".")[2]: t for name, t in v.items() if name.rpartition(".")[0].endswith("factors")}
    return {"rank_u": f["U"].sum(0), "rank_v": f["V"].sum(1), "cores": f["G"].sum((1, 2))}


def check_ranks(config, rank_dim: int | None, rank_layer: int | None) -> tuple[int, int]:
    d = rank_dim or config.rank_dim
    l = rank_layer or config.rank_layer
    if not 1 <= d <= config.rank_dim:
        raise ValueError(f"rank_dim {d}: must be in 1..{config.rank_dim} (the model's rank_dim)")
    if not 1 <= l <= config.rank_layer:
        raise ValueError(f"rank_layer {l}: must be in 1..{config.rank_layer} (the model's rank_layer)")
    return d, l


def prune_ranks(model: nn.Module, scores: dict[str, torch.Tensor], rank_dim: int, rank_layer: int) -> nn.Module:
    """Keep the `rank_dim` best U and V indices and the `rank_layer` best cores, in place."""
    factors = encoder_stack(model).factors
    keep_u, keep_v = top_indices(scores["rank_u"], rank_dim), top_indices(scores["rank_v"], rank_dim)
    keep_k = top_indices(scores["cores"], rank_layer)
    with torch.no_grad():
        factors.U = nn.Parameter(factors.U[:, keep_u].clone())
        factors.V = nn.Parameter(factors.V[keep_v].clone())
        factors.G = nn.Parameter(factors.G[keep_k][:, keep_u][:, :, keep_v].clone())
        factors.P = nn.Parameter(factors.P[:, keep_k].clone())
    factors._cache = factors._cache_key = None
    model.config.rank_dim, model.config.rank_layer = rank_dim, rank_layer
    return model

