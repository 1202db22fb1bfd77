"""Float32 linear products on CPU computed by oneDNN rather than torch's BLAS (MKL).

torch computes `F.linear` on CPU with MKL's sgemm, and MKL chooses its kernels by CPU vendor: on AMD processors
it runs its AVX2 code even where AVX-512 is there. oneDNN, which torch bundles as mkldnn, chooses by instruction
set. On this project's AMD EPYC (Zen 5, 2 cores) the products of BERT training at batch 32 x 128 ran at
170-185 GFLOP/s through MKL and 370-410 through oneDNN (the weight-gradient products 200-350); both are
float32 products (max relative difference from float64 about 1e-6 for either). On Intel CPUs both libraries
run AVX-512 kernels and perform about alike.

`products(device)` is the context the training loops run their forward passes in (the shim's `compute()`):
inside it, `F.linear` and `recompute.gelu_linear` on float32 CPU tensors are computed by oneDNN, their backward
products too, without changes to the models (a torch function mode). Outside it (evaluation, latency
benchmarks) torch's default stays, so that speed comparisons with stock models are like for like.
XCOMPRESS_CPU_GEMM=blas keeps torch's default inside it too.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .recompute import ActivatedLinear, gelu_linear


class _Active(threading.local):
    depth = 0  # OneDNNProducts contexts entered in this thread


_active = _Active()


def enabled() -> bool:
    """oneDNN is in this torch build and XCOMPRESS_CPU_GEMM does not ask for torch's BLAS."""
    return (os.environ.get("XCOMPRESS_CPU_GEMM", "onednn") != "blas" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def backend(device: torch.device) -> str:
    """What computes the training stages' linear products on `device` (recorded in their summaries)."""
    return "onednn" if device.type == "cpu" and enabled() else "default"


def products(device: torch.device) -> contextlib.AbstractContextManager:
    """The context for forward passes on `device`: oneDNN products on CPU when enabled, else nothing."""
    return OneDNNProducts() if backend(device) == "onednn" else contextlib.nullcontext()


def recompute_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """For torch.utils.checkpoint's `context_fn`: the forward as it is, and its recomputation in backward (which
    runs outside the caller's context) computing products the way the forward does now."""
    return contextlib.nullcontext(), OneDNNProducts() if _active.depth else contextlib.nullcontext()


class _OneDNNProducts:
    """The products of a linear map and its backward, computed by oneDNN (for recompute.ActivatedLinear)."""

    @staticmethod
    def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x · weightᵀ + bias, any leading dimensions on x; x and weight may be strided views, the bias may not
        (the op reads it as contiguous whatever its strides: a strided bias gave wrong sums)."""
        bias = None if bias is None else bias.contiguous()
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """gradᵀ · x for 2-d grad (M, N) and x (M, K): the (N, K) gradient of a weight, summed over M.

        oneDNN reduces over the long M faster with the wider of N and K as its 'weight' operand (measured:
        1.1-1.6x either way round depending on the shape), so the narrower side goes first and the result is
        transposed back.
        """
        product = _OneDNNProducts.product
        if grad.shape[1] <= x.shape[1]:
            return product(grad.T, x.T)
        return product(x.T, grad.T).T


class _Linear(ActivatedLinear):
    """F.linear(act(x), weight, bias) by oneDNN's products, forward and backward."""


def _applies(x: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """float32 CPU operands, an input with rows (the op takes no 1-d or empty input), no autocast in force."""
    return (not torch.is_autocast_enabled("cpu") and x.dim() >= 2 and x.numel() > 0
            and all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided)
                    for t in (x, *others)))


class OneDNNProducts(TorchFunctionMode):
    """Routes F.linear and gelu_linear on float32 CPU tensors to oneDNN; every other call passes through."""

    def __enter__(self):
        _active.depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        _active.depth -= 1
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_args(*args, **kwargs)
            if _applies(x, weight, bias):
                return _Linear.apply(x, weight, bias, False, _OneDNNProducts)
        elif func is gelu_linear:
            x, weight = args
            if _applies(x, weight):
                return _Linear.apply(x, weight, None, True, _OneDNNProducts)
        return func(*args, **kwargs)


def _linear_args(input, weight, bias=None):
    return input, weight, bias
