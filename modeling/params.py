"""Parameter counts with the convention of the paper (docs/design.md), and the groups weights are pruned in.

"Encoder parameters" are the encoder's weight matrices (or, for a TD model, its factors U, V, G, P and any
sublayer left dense) plus the linear biases; LayerNorms, embeddings, pooler and heads are not counted.
This is the convention under which BERT-base has 85.0M encoder parameters and the 72-384 TD student
11,299,968.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from .families import family_of

NORMS = ("LayerNorm", "layer_norm")


def encoder_stack(model: nn.Module) -> nn.Module:
    """The module holding a model's layers (and a TD model's shared factors): BERT's `encoder`, DistilBERT's
    `transformer`."""
    family = family_of(model)
    return family.encoder(model).get_submodule(family.layers.rpartition(".")[0])


def encoder_params(model: nn.Module) -> int:
    """Encoder parameters of a dense model of any family or a TD model, in any role."""
    return sum(p.numel() for name, p in encoder_stack(model).named_parameters() if not any(n in name for n in NORMS))


# Groups of weight matrices, as unstructured pruning amounts and sparsity reports name them.
GROUPS = ("attention", "ffn", "factors", "embeddings", "classifier")


def weight_group(name: str, param: torch.Tensor) -> str | None:
    """The group of a parameter, or None for biases and LayerNorm (never pruned)."""
    if param.dim() < 2:
        return None
    if ".embeddings." in f".{name}" or ".embeddings_project." in f".{name}":  # ELECTRA's projection too
        return "embeddings"
    if name.startswith(("classifier.", "pre_classifier.")) or ".pooler." in name:  # DistilBERT's two-layer head
        return "classifier"
    if ".factors." in name:
        return "factors"
    if ".attention." in name:
        return "attention"
    if ".intermediate." in name or ".ffn." in name or ".output.dense." in name:
        return "ffn"
    return None


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of every parameter and buffer of a model, by name: the same weights give the same key wherever they
    were loaded from (what a cache of a teacher's outputs, or modules pruned from a model, are checked against)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
