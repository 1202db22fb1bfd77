"""Pruning in shapes a kernel can exploit, beside unstructured zeros that dense kernels multiply anyway:

- `rows`: whole feed-forward neurons removed (a row of each input map, a column of the output map), so the matrices
  are smaller and every kernel runs faster. Encoders: compress/prune_structured.py's removal, allocated over layers by
  L1 norm (a pruned-format model). Text-to-text models: the same count in every block, so the config's FFN size
  (T5: d_ff) changes and plain transformers loads the result.
- `heads`: whole attention heads of an encoder removed, allocated over layers by L1 norm (prune_structured again).
- `2of4`: 2:4 semi-structured zeros, two of every four consecutive weights along a matrix's input dimension (the
  pattern sparse tensor cores run: torch.sparse.to_sparse_semi_structured, Ampere and later GPUs). A CPU has no such
  kernel: the gain there is the compact file only.
"""
from __future__ import annotations

import torch
from torch import nn

from modeling.families import Seq2SeqFamily

from .importance import top_indices
from .prune_structured import current_sizes, sliced
from .pruning import PruningConfig, prune_

SHAPES = ("unstructured", "rows", "heads", "2of4")


def two_of_four_(weights: list[torch.Tensor]) -> None:
    """Zero the two smallest |w| of every four consecutive inputs of each matrix, in place."""
    with torch.no_grad():
        for w in weights:
            groups = w.view(w.shape[0], -1, 4)
            drop = groups.abs().topk(2, dim=-1, largest=False).indices
            groups.scatter_(-1, drop, 0.0)


def two_of_four_problem(weights: dict[str, torch.Tensor]) -> str | None:
    """Why 2:4 cannot apply to these matrices (an input width not a multiple of 4), or None."""
    bad = [name for name, w in weights.items() if w.dim() != 2 or w.shape[1] % 4]
    return f"{bad[0]} has {weights[bad[0]].shape[-1]} inputs, not a multiple of 4" if bad else None


def encoder_units_(model: nn.Module, shape: str, amount: float) -> dict[str, list[int]]:
    """Remove `amount` of an encoder's FFN neurons (`rows`) or attention heads (`heads`) by L1 norm, allocated over
    layers; the model becomes its family's pruned format in place. Returns the units kept per layer."""
    heads, ffn = current_sizes(model)
    have = heads if shape == "heads" else ffn
    keep = max(1, round((1 - amount) * sum(have) / len(have)))
    config = PruningConfig("structured", "l1", heads=keep) if shape == "heads" else \
        PruningConfig("structured", "l1", ffn_size=keep)
    return prune_(model, config)


def seq2seq_ffn_rows_(model: nn.Module, family: Seq2SeqFamily, amount: float) -> int:
    """Remove `amount` of the feed-forward neurons of every block of a text-to-text model, the same number in each
    (those of the smallest L1 norm over their input rows and output column); returns the neurons each block keeps."""
    size = getattr(model.config, family.ffn_size_key)
    keep = max(1, round((1 - amount) * size))
    blocks: dict[str, dict[str, nn.Linear]] = {}
    for name, linear in family.part_modules(model, "feed_forward").items():
        block, _, last = name.rpartition(".")
        blocks.setdefault(block, {})[last] = linear
    for block, maps in blocks.items():
        inputs = [maps[n] for n in family.ffn_inputs if n in maps]
        output = maps[family.ffn_output]
        score = sum(m.weight.detach().abs().sum(1) for m in inputs) + output.weight.detach().abs().sum(0)
        index = top_indices(score, keep)
        parent = model.get_submodule(block)
        for n in family.ffn_inputs:
            if n in maps:
                setattr(parent, n, sliced(maps[n], index, 0))
        setattr(parent, family.ffn_output, sliced(output, index, 1))
    setattr(model.config, family.ffn_size_key, keep)
    return keep

