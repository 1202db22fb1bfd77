"""Structured pruning of dense BERT classifiers: attention heads and FFN neurons are physically removed.

Scores come from `importance.unit_importance`; a target is an average per layer (allocated over layers by
score, or the same in every layer with `even`) or an explicit count per layer. The model becomes a
`pruned_bert` model in place: its linear maps shrink to the kept rows and columns.
"""
from __future__ import annotations

import torch
from torch import nn

from modeling.pruned_bert import PrunedBertConfig, PrunedBertForSequenceClassification

from .importance import Reducer, allocate_globally, top_indices

Target = int | list[int] | None  # average per layer, one count per layer, or keep everything


def _layer_prefix(i: int) -> str:
    return f"bert.encoder.layer.{i}."


def head_ffn_reducer(config) -> Reducer:
    """w·g (or |w|) summed per head (Q, K, V rows and O columns) and per FFN neuron (input row, output column)."""
    h = config.hidden_size
    hs = h // config.num_attention_heads

    def reduce(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(config.num_hidden_layers):
            p = _layer_prefix(i)
            heads = sum(v[f"{p}attention.self.{m}.weight"].view(-1, hs, h).sum((1, 2))
                        + v[f"{p}attention.self.{m}.bias"].view(-1, hs).sum(1) for m in ("query", "key", "value"))
            out[f"heads.{i}"] = heads + v[f"{p}attention.output.dense.weight"].view(h, -1, hs).sum((0, 2))
            out[f"ffn.{i}"] = (v[f"{p}intermediate.dense.weight"].sum(1) + v[f"{p}intermediate.dense.bias"]
                               + v[f"{p}output.dense.weight"].sum(0))
        return out

    return reduce


def current_sizes(model: nn.Module) -> tuple[list[int], list[int]]:
    """Heads and FFN neurons per layer of a dense or pruned BERT classifier."""
    hs = model.config.hidden_size // model.config.num_attention_heads
    layers = model.bert.encoder.layer
    return ([l.attention.self.query.out_features // hs for l in layers],
            [l.intermediate.dense.out_features for l in layers])


def plan_counts(target: Target, scores: list[torch.Tensor], even: bool, what: str) -> list[int]:
    """Units to keep per layer for one target."""
    have = [len(s) for s in scores]
    if target is None:
        return have
    if isinstance(target, list):
        counts = target
    elif even:
        counts = [target] * len(scores)
    else:
        counts = None
    if counts is not None:
        if len(counts) != len(have) or any(not 1 <= c <= n for c, n in zip(counts, have)):
            raise ValueError(f"{what}: cannot keep {counts} of {have} per layer (each layer keeps 1 to all)")
        return counts
    if not 1 <= target <= max(have):
        raise ValueError(f"{what}: an average of {target} per layer is outside 1..{max(have)}")
    return allocate_globally(scores, min(target * len(scores), sum(have)))


def prune_heads_and_ffn(model: nn.Module, keep_heads: list[torch.Tensor], keep_ffn: list[torch.Tensor]) -> nn.Module:
    """Keep the given head and neuron indices of every layer; the model becomes a PrunedBert classifier in place."""
    old = model.config
    hs = old.hidden_size // old.num_attention_heads
    config = PrunedBertConfig.from_dict({**old.to_dict(), "model_type": PrunedBertConfig.model_type,
                                         "layer_num_heads": [len(k) for k in keep_heads],
                                         "layer_intermediate_sizes": [len(k) for k in keep_ffn]})
    for layer, heads, neurons in zip(model.bert.encoder.layer, keep_heads, keep_ffn):
        rows = (heads[:, None] * hs + torch.arange(hs)).reshape(-1)
        attn = layer.attention.self
        for name in ("query", "key", "value"):
            setattr(attn, name, _sliced(getattr(attn, name), rows, dim=0))
        attn.num_attention_heads, attn.all_head_size = len(heads), len(rows)
        layer.attention.output.dense = _sliced(layer.attention.output.dense, rows, dim=1)
        layer.intermediate.dense = _sliced(layer.intermediate.dense, neurons, dim=0)
        layer.output.dense = _sliced(layer.output.dense, neurons, dim=1)
    config._attn_implementation = old._attn_implementation
    for module in model.modules():  # attention layers read the config they were built with
        if getattr(module, "config", None) is old:
            module.config = config
    model.__class__ = PrunedBertForSequenceClassification  # a subclass adding no state: the saved type is right
    return model


def _sliced(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim 0: outputs) or columns (dim 1: inputs) `index` of `linear`."""
    w = linear.weight.detach().index_select(dim, index).clone()
    b = linear.bias.detach()
    b = b.index_select(0, index).clone() if dim == 0 else b.clone()
    new = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        new.bias.copy_(b)
    return new


def keep_indices(scores: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
    return [top_indices(s, c) for s, c in zip(scores, counts)]
