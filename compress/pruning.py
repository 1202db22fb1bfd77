"""The library verb: `prune_(model, PruningConfig(...), batches)` prunes a classifier in place.

    from compress.pruning import PruningConfig, prune_
    prune_(model, PruningConfig(kind="structured", heads=8, ffn_size=1024), batches)   # dense BERT
    prune_(model, PruningConfig(kind="rank", rank_dim=96, rank_layer=18), batches)     # TD model
    prune_(model, PruningConfig(kind="unstructured", amounts={"ffn": 0.7, "attention": 0.5}))

`batches` (dicts of model inputs with `labels`) feed the `taylor` importance; `l1` and unstructured pruning
need none.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from modeling.formats import DENSE, KIND_NAMES, PRUNED, TUCKER, kind_of
from modeling.int8 import quantization_of
from modeling.params import GROUPS

from .importance import METHODS, unit_importance
from .prune_rank import check_ranks, prune_ranks, rank_reducer
from .prune_structured import Target, current_sizes, head_ffn_reducer, keep_indices, plan_counts, prune_heads_and_ffn
from .prune_unstructured import magnitude_prune, sparsity

KINDS = ("structured", "rank", "unstructured")
_KINDS = {"structured": (DENSE, PRUNED), "rank": (TUCKER,)}


@dataclasses.dataclass
class PruningConfig:
    kind: str = "structured"
    importance: str = "taylor"
    heads: Target = None  # structured: average heads per layer, or one count per layer
    ffn_size: Target = None  # structured: average FFN neurons per layer, or one count per layer
    even: bool = False  # structured: the same count in every layer instead of allocating by score
    rank_dim: int | None = None
    rank_layer: int | None = None
    amounts: dict[str, float] = dataclasses.field(default_factory=dict)  # unstructured: fraction per group

    @property
    def name(self) -> str:
        """A directory name for this setting."""
        def part(label, v):
            return f"{label}-{'.'.join(map(str, v)) if isinstance(v, list) else v}"
        if self.kind == "structured":
            parts = [part("heads", self.heads) if self.heads is not None else "",
                     part("ffn", self.ffn_size) if self.ffn_size is not None else ""]
            return "_".join(p for p in parts if p) or "unpruned"
        if self.kind == "rank":
            return "_".join(p for p in (f"d-{self.rank_dim}" if self.rank_dim else "",
                                        f"l-{self.rank_layer}" if self.rank_layer else "") if p) or "unpruned"
        return "_".join(f"{g}-{a:g}" for g, a in sorted(self.amounts.items()) if a) or "unpruned"

    def validate(self) -> None:
        """Raise ValueError for a setting that fits no model (checked before any model is loaded)."""
        if self.kind not in KINDS:
            raise ValueError(f"pruning kind {self.kind!r}: expected one of {KINDS}")
        if self.importance not in METHODS:
            raise ValueError(f"importance {self.importance!r}: expected one of {METHODS}")
        for what, target in (("heads", self.heads), ("ffn_size", self.ffn_size)):
            counts = target if isinstance(target, list) else [target] if target is not None else []
            if any(c < 1 for c in counts):
                raise ValueError(f"{what} {target}: every layer keeps at least 1")
        for what, rank in (("rank_dim", self.rank_dim), ("rank_layer", self.rank_layer)):
            if rank is not None and rank < 1:
                raise ValueError(f"{what} {rank}: must be >= 1")
        for group, amount in self.amounts.items():
            if group not in GROUPS:
                raise ValueError(f"pruning group {group!r}: expected one of {GROUPS}")
            if not 0 <= amount < 1:
                raise ValueError(f"pruning amount {amount} for {group}: must be in [0, 1)")

    def check(self, model: nn.Module) -> None:
        """Raise ValueError, naming the problem, if this setting cannot apply to `model`."""
        self.validate()
        kind = kind_of(model)
        if self.kind in _KINDS and kind not in _KINDS[self.kind]:
            raise ValueError(f"{self.kind} pruning needs {' or '.join(KIND_NAMES[k] for k in _KINDS[self.kind])}, "
                             f"not {KIND_NAMES[kind]}" + (" (TD models: pruning type 'rank')" if kind == TUCKER else ""))
        if quantization_of(model.config.to_dict()):
            raise ValueError("the model is quantized; prune before quantizing")
        if self.kind == "structured":
            heads, ffn = current_sizes(model)
            zeros = [torch.zeros(n) for n in heads], [torch.zeros(n) for n in ffn]
            plan_counts(self.heads, zeros[0], self.even, "heads")
            plan_counts(self.ffn_size, zeros[1], self.even, "ffn_size")
        elif self.kind == "rank":
            check_ranks(model.config, self.rank_dim, self.rank_layer)


def prune_(model: nn.Module, config: PruningConfig,
           batches: Iterable[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """Prune `model` in place; returns what was kept."""
    config.check(model)
    if config.kind == "unstructured":
        magnitude_prune(model, config.amounts)
        return {"sparsity": sparsity(model)}
    if config.importance == "taylor" and batches is None:
        raise ValueError("taylor importance needs batches of task data (or use importance 'l1')")
    if config.kind == "rank":
        d, l = check_ranks(model.config, config.rank_dim, config.rank_layer)
        scores = unit_importance(model, rank_reducer, config.importance, batches)
        prune_ranks(model, scores, d, l)
        return {"rank_dim": d, "rank_layer": l}
    scores = unit_importance(model, head_ffn_reducer(model), config.importance, batches)
    layers = model.config.num_hidden_layers
    head_scores = [scores[f"heads.{i}"] for i in range(layers)]
    ffn_scores = [scores[f"ffn.{i}"] for i in range(layers)]
    keep_heads = keep_indices(head_scores, plan_counts(config.heads, head_scores, config.even, "heads"))
    keep_ffn = keep_indices(ffn_scores, plan_counts(config.ffn_size, ffn_scores, config.even, "ffn_size"))
    prune_heads_and_ffn(model, keep_heads, keep_ffn)
    return {"layer_num_heads": [len(k) for k in keep_heads], "layer_intermediate_sizes": [len(k) for k in keep_ffn]}
