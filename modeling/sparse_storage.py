"""Sparse weights stored compactly: a matrix whose zeros outnumber 1/32 of its entries is written as one bit per
entry (numpy.packbits of the non-zero mask) and its non-zero values, everything else as it is, in one safetensors
file, `model.sparse.safetensors`. A pruned model of sparsity s then takes about (1 - s) + 1/32 of its dense fp32
bytes, where the dense file is as large as the unpruned model's and gzip wins little back from random-looking
floats. Weights shared between names (T5's tied embeddings and `lm_head`) are written once.

Every xcompress stage reads such a directory (modeling/loading.py); `prune-schedule --store dense` writes the
plain `model.safetensors` that transformers reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

SPARSE_WEIGHTS = "model.sparse.safetensors"
# Bits per entry of the mask against the 32 of an fp32 value: below this share of zeros the mask costs more than
# the zeros save.
MIN_ZEROS = 1 / 32


def save_sparse(model: nn.Module, directory: Path) -> Path:
    """Write the model's state dict compactly into `directory`; returns the file."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    first_name: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if (key := (t.data_ptr(), tuple(t.shape))) in first_name and t.numel():
            layout[name] = {"alias": first_name[key]}
            continue
        first_name[key] = name
        nonzero = t != 0
        if t.dim() >= 2 and t.is_floating_point() and 1 - nonzero.float().mean() > MIN_ZEROS:
            tensors[f"{name}::mask"] = torch.from_numpy(np.packbits(nonzero.flatten().numpy()))
            tensors[f"{name}::values"] = t[nonzero].contiguous()
            layout[name] = {"shape": list(t.shape)}
        else:
            tensors[name] = t.contiguous()
    path = Path(directory) / SPARSE_WEIGHTS
    save_file(tensors, str(path), metadata={"format": "pt", "xcompress_sparse": json.dumps(layout)})
    return path


def load_sparse(path: Path) -> dict[str, torch.Tensor]:
    """The dense state dict of a file `save_sparse` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        layout = json.loads(f.metadata()["xcompress_sparse"])
        state = {k: f.get_tensor(k) for k in f.keys() if "::" not in k}
        for name, entry in layout.items():
            if "shape" in entry:
                shape = entry["shape"]
                n = int(np.prod(shape))
                mask = torch.from_numpy(np.unpackbits(f.get_tensor(f"{name}::mask").numpy(), count=n).astype(bool))
                values = f.get_tensor(f"{name}::values")
                dense = torch.zeros(n, dtype=values.dtype)
                dense[mask] = values
                state[name] = dense.view(shape)
    for name, entry in layout.items():
        if "alias" in entry:
            state[name] = state[entry["alias"]]
    return state
