"""Unstructured L1 magnitude pruning with a separate amount per group of weights, masks made permanent.

Groups: `attention` and `ffn` (the encoder's dense linear maps), `factors` (a TD model's shared U, V, G, P),
`embeddings`, `classifier` (pooler and classification head). Within a group the smallest |w| are zeroed
globally (torch.nn.utils.prune.global_unstructured). Weights already zero count as pruned, so an iterative
schedule reaches its target by pruning a model that was pruned and fine-tuned before.

Sparse weights do not make dense kernels faster: the gain is the size of a compressed file.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from torch import nn
from torch.nn.utils import prune

from modeling.params import weight_group


def _grouped(model: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    groups: dict[str, list[tuple[nn.Module, str]]] = {}
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if (g := weight_group(full, p)) is not None:
                groups.setdefault(g, []).append((module, pname))
    return groups


def magnitude_prune(model: nn.Module, amounts: dict[str, float]) -> None:
    """Zero the `amounts[group]` fraction of smallest-magnitude weights of each group, permanently."""
    groups = _grouped(model)
    for group, amount in amounts.items():
        if not amount or group not in groups:
            continue
        prune.global_unstructured(groups[group], pruning_method=prune.L1Unstructured, amount=amount)
        for module, pname in groups[group]:
            prune.remove(module, pname)


def sparsity(model: nn.Module) -> dict[str, dict[str, float]]:
    """Zeros per group and over all prunable weights."""
    report: dict[str, dict[str, float]] = {}
    total = zeros = 0
    for group, members in _grouped(model).items():
        n = sum(getattr(m, p).numel() for m, p in members)
        z = sum(int((getattr(m, p) == 0).sum()) for m, p in members)
        report[group] = {"weights": n, "zeros": z, "sparsity": z / n}
        total, zeros = total + n, zeros + z
    report["all"] = {"weights": total, "zeros": zeros, "sparsity": zeros / max(total, 1)}
    return report


def compressed_size(weights_file: Path) -> int:
    """Bytes of the weights file gzip-compressed: what sparsity saves when the model is shipped."""
    tmp = weights_file.with_name(f".{weights_file.name}.gz-measure")
    try:
        with open(weights_file, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return tmp.stat().st_size
    finally:
        tmp.unlink(missing_ok=True)
