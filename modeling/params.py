"""Parameter counts with the convention of the paper (docs/design.md), and the groups weights are pruned in.

"Encoder parameters" are the encoder's weight matrices (or, for a TD model, its factors U, V, G, P and any
sublayer left dense) plus the linear biases; LayerNorms, embeddings, pooler and heads are not counted.
This is the convention under which BERT-base has 85.0M encoder parameters and the 72-384 TD student
11,299,968.
"""
from __future__ import annotations

import torch
from torch import nn


def encoder_params(model: nn.Module) -> int:
    """Encoder parameters of a dense BERT or a TD model (or any model wrapping one as `base_model`)."""
    base = getattr(model, "base_model", model)
    return sum(p.numel() for name, p in base.encoder.named_parameters() if "LayerNorm" not in name)


# Groups of weight matrices, as unstructured pruning amounts and sparsity reports name them.
GROUPS = ("attention", "ffn", "factors", "embeddings", "classifier")


def weight_group(name: str, param: torch.Tensor) -> str | None:
    """The group of a parameter, or None for biases and LayerNorm (never pruned)."""
    if param.dim() < 2:
        return None
    if ".embeddings." in f".{name}":
        return "embeddings"
    if name.startswith("classifier.") or ".pooler." in name:
        return "classifier"
    if ".factors." in name:
        return "factors"
    if ".attention." in name:
        return "attention"
    if ".intermediate." in name or ".ffn." in name or ".output.dense." in name:
        return "ffn"
    return None
