"""Structured pruning of dense classifiers: attention heads and FFN neurons are physically removed.

Scores come from `importance.unit_importance`; a target is an average per layer (allocated over layers by
score, or the same in every layer with `even`) or an explicit count per layer. Scoring and slicing find each
layer's maps through the family table, so they work on every family (transformers 5 reshapes attention by head
size, so fewer heads need nothing but narrower maps); a model with per-layer sizes is saved in its family's
pruned format (modeling/pruned.py: `pruned_bert`, `pruned_roberta`, ...).
"""
from __future__ import annotations

import torch
from torch import nn

from modeling.families import PARTS, family_of
from modeling.pruned import PRUNED_CLASSES

from .importance import Reducer, allocate_globally, top_indices

Target = int | list[int] | None  # average per layer, one count per layer, or keep everything


def head_size(config) -> int:
    fam = family_of(config)
    return fam.size(config, "hidden_size") // fam.size(config, "num_heads")


def head_ffn_reducer(model: nn.Module) -> Reducer:
    """w·g (or |w|) summed per head (Q, K, V rows and O columns) and per FFN neuron (input row, output column)."""
    fam, config = family_of(model), model.config
    h, hs = fam.size(config, "hidden_size"), head_size(config)
    prefix = "" if model is fam.encoder(model) else f"{fam.base}."

    def reduce(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(fam.size(config, "num_layers")):
            def w(part: str, what: str = "weight") -> torch.Tensor:
                return v[f"{prefix}{fam.layers}.{i}.{fam.parts[part]}.{what}"]
            heads = sum(w(m).view(-1, hs, h).sum((1, 2)) + w(m, "bias").view(-1, hs).sum(1)
                        for m in ("query", "key", "value"))
            out[f"heads.{i}"] = heads + w("attn_out").view(h, -1, hs).sum((0, 2))
            out[f"ffn.{i}"] = w("ffn_in").sum(1) + w("ffn_in", "bias") + w("ffn_out").sum(0)
        return out

    return reduce


def current_sizes(model: nn.Module) -> tuple[list[int], list[int]]:
    """Heads and FFN neurons per layer of a dense or pruned classifier of any family."""
    return family_of(model).layer_sizes(model)


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


def slice_layers_(model: nn.Module, keep_heads: list[torch.Tensor], keep_ffn: list[torch.Tensor]) -> None:
    """Keep the given head and neuron indices of every layer of a model of any family, in place (its config is the
    caller's to change)."""
    fam = family_of(model)
    hs = head_size(model.config)
    for layer, heads, neurons in zip(fam.layer_list(model), keep_heads, keep_ffn):
        rows = (heads[:, None] * hs + torch.arange(hs)).reshape(-1)
        for part, index, dim in (("query", rows, 0), ("key", rows, 0), ("value", rows, 0), ("attn_out", rows, 1),
                                 ("ffn_in", neurons, 0), ("ffn_out", neurons, 1)):
            fam.set_part(layer, part, sliced(fam.linear(layer, part), index, dim))
        # BERT's attention keeps its head count and width as attributes: kept true for whoever reads them
        attention = layer.get_submodule(fam.parts["query"].rpartition(".")[0])
        if hasattr(attention, "all_head_size"):
            attention.num_attention_heads, attention.all_head_size = len(heads), len(rows)


def prune_heads_and_ffn(model: nn.Module, keep_heads: list[torch.Tensor], keep_ffn: list[torch.Tensor]) -> nn.Module:
    """Keep the given head and neuron indices of every layer; the model becomes its family's pruned one in place."""
    old, family = model.config, family_of(model)
    config_cls, encoder_cls, classifier_cls = PRUNED_CLASSES[family.name]
    layout = {"layers": family.layers} | {p: family.parts[p] for p in PARTS if not p.endswith("_norm")}
    config = config_cls.from_dict({**old.to_dict(), "model_type": config_cls.model_type,
                                   "layer_num_heads": [len(k) for k in keep_heads],
                                   "layer_intermediate_sizes": [len(k) for k in keep_ffn], "pruned_layout": layout})
    slice_layers_(model, keep_heads, keep_ffn)
    retarget_config_(model, config)
    # a subclass adding no state: the saved type is right
    model.__class__ = encoder_cls if model is family.encoder(model) else classifier_cls
    return model


def retarget_config_(model: nn.Module, config) -> None:
    """Point every module that reads the model's config (attention layers do) at `config`, the model included."""
    old = model.config
    config._attn_implementation = old._attn_implementation
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = config


def sliced(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim 0: outputs) or columns (dim 1: inputs) `index` of `linear` (and its bias,
    when it has one)."""
    w = linear.weight.detach().index_select(dim, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach().index_select(0, index) if dim == 0 else linear.bias.detach())
    return new


def keep_indices(scores: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
    return [top_indices(s, c) for s, c in zip(scores, counts)]
