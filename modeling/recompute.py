"""Two products whose wide input is recomputed in the backward pass instead of stored.

Training a TD student at batch 32 x 128 keeps, per layer, two 25 MB tensors that are cheap to rebuild: the
dropped-out attention probabilities (the softmax output is kept anyway) and the GELU output of the 4h-wide FFN
activation (its input is kept anyway). Rebuilding them costs one elementwise pass each in backward and saves
about 300 MB of the 6-layer student's peak memory. Results and gradients are those of the plain expressions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function

from .dropout import dropout, keep_mask


class _DroppedProbsTimesValues(torch.autograd.Function):
    """bmm(where(keep, probs, 0), v) * scale, keeping probs (shared with softmax) and the boolean mask."""

    @staticmethod
    def forward(ctx, probs, keep, v, scale):
        ctx.save_for_backward(probs, keep, v)
        ctx.scale = scale
        return torch.bmm(torch.where(keep, probs, 0.0), v).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        probs, keep, v = ctx.saved_tensors
        grad = grad * ctx.scale
        grad_probs = torch.where(keep, torch.bmm(grad, v.transpose(1, 2)), 0.0) if ctx.needs_input_grad[0] else None
        grad_v = torch.bmm(torch.where(keep, probs, 0.0).transpose(1, 2), grad) if ctx.needs_input_grad[2] else None
        return grad_probs, None, grad_v, None


def attend(probs: torch.Tensor, v: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Attention probabilities (B, T, T) after dropout, times values (B, T, d)."""
    if training and p > 0.0 and probs.device.type == "cpu" and torch.is_grad_enabled():
        return _DroppedProbsTimesValues.apply(probs, keep_mask(probs.shape, p), v, 1.0 / (1.0 - p))
    return torch.bmm(dropout(probs, p, training), v)


class TorchProducts:
    """The products of a linear map and its backward, as torch computes them by default."""

    @staticmethod
    def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    def weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """gradᵀ · x for 2-d grad (M, N) and x (M, K)."""
        return grad.T.mm(x)


class ActivatedLinear(torch.autograd.Function):
    """F.linear(act(x), weight, bias) with its products computed by `ops` (TorchProducts, or onednn's). With
    `gelu_input` x goes through exact GELU first, and that activation is recomputed in backward, not kept.
    Applied through subclasses, whose names tell the graph nodes apart."""

    @staticmethod
    def forward(ctx, x, weight, bias, gelu_input: bool, ops):
        ctx.save_for_backward(x, weight)
        ctx.gelu_input, ctx.has_bias, ctx.ops = gelu_input, bias is not None, ops
        return ops.product(F.gelu(x) if gelu_input else x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = ctx.ops.product(grad, weight.T)
            if ctx.gelu_input:
                grad_x = torch.ops.aten.gelu_backward(grad_x, x)
        grad2d = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            act = F.gelu(x) if ctx.gelu_input else x
            grad_w = ctx.ops.weight_grad(grad2d, act.reshape(-1, act.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0)
        return grad_x, grad_w, grad_b, None, None


class _GeluLinear(ActivatedLinear):
    """F.linear(gelu(x), weight) by torch's products, keeping x and not gelu(x)."""


def gelu_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(gelu(x), weight). Overridable like a torch function: onednn.products() computes it by oneDNN."""
    if has_torch_function((x, weight)):
        return handle_torch_function(gelu_linear, (x, weight), x, weight)
    return _GeluLinear.apply(x, weight, None, True, TorchProducts)
