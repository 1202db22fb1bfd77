"""Fine-tuning a magnitude-pruned model without losing its zeros."""
from __future__ import annotations

import torch
from torch import nn

from modeling.params import weight_group


class SparsityMask:
    """Keeps zero weights at zero while a pruned model is fine-tuned: call it after every optimizer step."""

    def __init__(self, model: nn.Module):
        self.masks = [(p, p.detach() != 0) for name, p in model.named_parameters()
                      if weight_group(name, p) is not None and bool((p == 0).any())]

    @torch.no_grad()
    def __call__(self) -> None:
        for p, mask in self.masks:
            p.mul_(mask)
