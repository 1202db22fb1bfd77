"""Parameter counts with the convention of DESIGN.md and the paper.

"Encoder parameters" are the encoder's weight matrices (or, for a TD model, its factors U, V, G, P and any
sublayer left dense) plus the linear biases; LayerNorms, embeddings, pooler and heads are not counted.
This is the convention under which BERT-base has 85.0M encoder parameters and the 72-384 TD student
11,299,968.
"""
from __future__ import annotations

from torch import nn


def encoder_params(model: nn.Module) -> int:
    """Encoder parameters of a dense BERT or a TD model (or any model wrapping one as `base_model`)."""
    base = getattr(model, "base_model", model)
    return sum(p.numel() for name, p in base.encoder.named_parameters() if "LayerNorm" not in name)

