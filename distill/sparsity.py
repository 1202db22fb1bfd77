"""Fine-tuning a magnitude-pruned model without losing its zeros."""
from __future__ import annotations

import torch
from torch import nn


class SparsityMask:
    """Keeps zero weights at zero while a pruned model is fine-tuned: call it after every optimizer step."""

    def __init__(self, model: nn.Module):
        # Every matrix, not only the groups of an encoder's pruning: a text-to-text model's parts are pruned too.
        self.masks = [(p, p.detach() != 0) for p in model.parameters() if p.dim() >= 2 and bool((p == 0).any())]

    @torch.no_grad()
    def __call__(self) -> None:
        for p, mask in self.masks:
            p.mul_(mask)
