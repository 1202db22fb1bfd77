"""The layout of a dense encoder's weight matrices as h x h blocks stacked into one (n, h, h) tensor
(decompose/blocks.py cuts and stacks them).

Per layer, in this order (docs/design.md): Q, K, V, O, the FFN input matrix cut into 4 row blocks
(`ffn_in_0..3`), the FFN output matrix cut into 4 column blocks (`ffn_out_0..3`). `ops` chooses which of
them are factorized: `san_ffn` (all 12), `san` (Q, K, V, O), `ffn` (the 8 FFN blocks). Every block is in
nn.Linear layout (out, in), so block i acts as y = x @ W[i].T.
"""
from __future__ import annotations

SAN_KINDS = ("query", "key", "value", "attn_out")
FFN_KINDS = tuple(f"ffn_in_{j}" for j in range(4)) + tuple(f"ffn_out_{j}" for j in range(4))
OPS = {"san_ffn": SAN_KINDS + FFN_KINDS, "san": SAN_KINDS, "ffn": FFN_KINDS}
# Block types for per-type reconstruction error.
BLOCK_TYPE = {"query": "Q", "key": "K", "value": "V", "attn_out": "O"}
BLOCK_TYPE.update({k: "FFN_in" for k in FFN_KINDS[:4]})
BLOCK_TYPE.update({k: "FFN_out" for k in FFN_KINDS[4:]})


def block_layout(num_layers: int, ops: str) -> list[tuple[int, str]]:
    """(layer, kind) of every stacked block; the list index is the block's row in the stack and in P."""
    return [(layer, kind) for layer in range(num_layers) for kind in OPS[ops]]
