"""Per-layer low-rank corrections beside the shared factors: the layers where the task's signal forms can hold more
than the shared bank gives them (TuckerBertConfig.residual_ranks).

A layer with rank r gets, for each of its factorized projections (Q|K|V, the attention output, the FFN input and
output matrices), the best rank-r approximation of what the shared factors miss there (a truncated SVD, Eckart-Young),
split evenly between its two maps so that both start at the same scale. Given the blocks' input moments (a calibrated
decomposition), the error is measured on the inputs the blocks really read, as the factors' fit measures it
(decompose/weighted.py): the SVD of the whitened error E_i S_i, each block's part of the input map mapped back by
S_i⁻¹ (the FFN output matrix's four blocks read four parts of one input; their cross-moments are not kept, so each
part is whitened alone)."""
from __future__ import annotations

import dataclasses

import torch

from modeling.stacking import OPS, SAN_KINDS

from .weighted import sqrt_and_inverse

# Each factorized projection of a layer: its name in the TD state dict, its blocks, and whether they sit side by
# side along the input (the FFN output matrix reads 4 blocks) or are stacked along the output.
PROJECTIONS = {
    "attention.qkv": (SAN_KINDS[:3], False),
    "attention.output": (SAN_KINDS[3:], False),
    "ffn.intermediate": (OPS["ffn"][:4], False),
    "ffn.output": (OPS["ffn"][4:], True),
}


@dataclasses.dataclass
class Corrections:
    """The corrections' weights as TD state-dict entries, and the (n, h, h) stack of what they add to each block
    (zero in layers without one), for error reports and bias shifts."""

    state: dict[str, torch.Tensor]
    blocks: torch.Tensor


@torch.no_grad()
def fit_corrections(W: torch.Tensor, approx: torch.Tensor, ranks: list[int], layout: list[tuple[int, str]],
                    moments: torch.Tensor | None = None) -> Corrections:
    """Corrections of `approx` towards the teacher's stacked blocks `W` (both (n, h, h)), rank `ranks[layer]` per
    layer; `layout[i]` is block i's (layer, kind), `moments[i]` (optional) the second moment of its inputs."""
    h = W.shape[1]
    row = {where: i for i, where in enumerate(layout)}
    state: dict[str, torch.Tensor] = {}
    blocks = torch.zeros_like(W)
    for layer, rank in enumerate(ranks):
        for name, (kinds, side_by_side) in PROJECTIONS.items():
            rows = [row[layer, kind] for kind in kinds if (layer, kind) in row]
            if not rank or not rows:
                continue
            missed = [(W[i] - approx[i]).double() for i in rows]
            roots = [sqrt_and_inverse(moments[i].double()) for i in rows] if moments is not None else []
            if roots:
                missed = [e @ root for e, (root, _) in zip(missed, roots)]
            u, s, vh = torch.linalg.svd(torch.cat(missed, dim=1 if side_by_side else 0), full_matrices=False)
            half = s[:rank].sqrt()
            up, down = u[:, :rank] * half, half[:, None] * vh[:rank]
            if roots:  # one input for stacked blocks, one part of it per block side by side
                parts = down.split(h, dim=1) if side_by_side else [down]
                down = torch.cat([part @ inverse for part, (_, inverse) in zip(parts, roots)], dim=1)
            prefix = f"encoder.layer.{layer}.{name}.residual"
            state[f"{prefix}.up.weight"] = up.float().contiguous()
            state[f"{prefix}.down.weight"] = down.float().contiguous()
            added = (up @ down).to(W.dtype)
            for j, i in enumerate(rows):
                blocks[i] = added[:, j * h:(j + 1) * h] if side_by_side else added[j * h:(j + 1) * h]
    return Corrections(state, blocks)
