"""Measured, not estimated: CPU latency of a forward pass and size on disk.

Used by `xcompress demo`, the reports and benchmarks/; never asserted in tests.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagekit.options import at_least, option


@dataclasses.dataclass(kw_only=True)
class MeasurementSettings:
    """The options of every stage that scores and times models: sequence lengths, batch size, repeats."""

    max_seq_length: int = option(128, help="of the dev examples scored", check=at_least(1))
    eval_batch_size: int = option(64, check=at_least(1))
    latency_seq_length: int = option(128, help="of the timed forward passes", check=at_least(1))
    latency_repeats: int = option(5, help="timed runs per batch size (the median is kept)", check=at_least(1))


def dummy_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids drawn from the regular vocabulary (ids < 1000 are special / unused in BERT vocabularies)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.inference_mode()
def cpu_latency(model: nn.Module | Callable[[dict[str, torch.Tensor]], Any], batch_size: int, seq_len: int,
                repeats: int = 10, warmup: int = 2, vocab_size: int | None = None) -> float:
    """Median seconds of one forward pass over `repeats` timed runs: of a model (inference mode, eval), or of
    any callable taking a batch dict (an onnxruntime session's wrapper)."""
    if isinstance(model, nn.Module):
        model.eval()
        vocab_size = model.config.vocab_size

        def call(batch):
            return model(**batch)
    else:
        call = model
    batch = dummy_batch(batch_size, seq_len, vocab_size)
    for _ in range(warmup):
        call(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_has_bf16() -> bool:
    """This CPU has bf16 instructions (AVX512-BF16 or AMX) that oneDNN uses; without them it emulates bf16."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def size_on_disk(model_dir: str | Path) -> int:
    """Bytes of the weight files of a model directory."""
    d = Path(model_dir)
    return sum(f.stat().st_size for f in d.iterdir() if f.suffix in (".safetensors", ".bin", ".onnx"))


def run_measuring_rss(cmd: list[str], cwd: str | Path, env: dict[str, str] | None = None,
                      poll_seconds: float = 0.02) -> tuple[float, list[int], int, str]:
    """Run a command to completion while polling its process tree.

    Returns wall seconds, the peak RSS of every process of the tree (largest first), the exit code and stderr.
    """
    import subprocess

    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(poll_seconds)
    return time.perf_counter() - start, sorted(peaks.values(), reverse=True), proc.returncode, proc.stderr.read()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters as stored: encoder parameters (the paper's convention, docs/design.md: weight matrices and linear
    biases, no LayerNorm) and all parameters, with the int8 weights of quantized Linear maps and embeddings, and for
    a factorized int8 TD model its stored factors instead of the maps folded from them at load time."""
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear

    from modeling.int8 import StoredFactors, folded_maps
    from modeling.params import NORMS, encoder_stack

    rebuilt = folded_maps(model)

    def count(module: nn.Module, skip_layernorm: bool) -> int:
        n = sum(p.numel() for name, p in module.named_parameters()
                if not (skip_layernorm and any(norm in name for norm in NORMS)))
        for m in module.modules():
            if isinstance(m, DynamicQuantLinear):
                n += (0 if m in rebuilt else m.weight().numel()) + (m.bias().numel() if m.bias() is not None else 0)
            elif isinstance(m, QuantizedEmbedding):
                n += m.weight().numel()
            elif isinstance(m, StoredFactors):
                n += sum(b.numel() for b in m.buffers())
        return n

    return {"encoder": count(encoder_stack(model), True), "total": count(model, False)}
