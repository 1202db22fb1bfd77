"""Cut a dense encoder's weight matrices into h x h blocks and stack them into one (n, h, h) tensor, in the order
`modeling.stacking` lays out. Any family: the family table says where each layer keeps its maps.
"""
from __future__ import annotations

import torch
from torch import nn

from modeling.families import Family, family_of
from modeling.stacking import block_layout

_SAN_PARTS = {"query": "query", "key": "key", "value": "value", "attn_out": "attn_out"}


def _layer_block(family: Family, layer: nn.Module, kind: str, h: int) -> torch.Tensor:
    if kind in _SAN_PARTS:
        return family.linear(layer, _SAN_PARTS[kind]).weight
    j = int(kind[-1])
    if kind.startswith("ffn_in"):
        return family.linear(layer, "ffn_in").weight[j * h : (j + 1) * h, :]
    return family.linear(layer, "ffn_out").weight[:, j * h : (j + 1) * h]


@torch.no_grad()
def stack_encoder_blocks(encoder: nn.Module, ops: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Stack the blocks of a dense encoder into W of shape (n, h, h)."""
    family = family_of(encoder)
    h = family.size(encoder.config, "hidden_size")
    layers = family.layer_list(encoder)
    blocks = [_layer_block(family, layers[i], kind, h) for i, kind in block_layout(len(layers), ops)]
    return torch.stack([b.detach().to(dtype) for b in blocks])
