"""Measured, not estimated: CPU latency of a forward pass and size on disk.

Used by `xcompress demo`, the reports and benchmarks/; never asserted in tests.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn


def dummy_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids drawn from the regular vocabulary (ids < 1000 are special / unused in BERT vocabularies)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.inference_mode()
def cpu_latency(model: nn.Module, batch_size: int, seq_len: int, repeats: int = 10, warmup: int = 2) -> float:
    """Median seconds of one forward pass (inference mode, eval) over `repeats` timed runs."""
    model.eval()
    batch = dummy_batch(batch_size, seq_len, model.config.vocab_size)
    for _ in range(warmup):
        model(**batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def size_on_disk(model_dir: str | Path) -> int:
    """Bytes of the weight files of a model directory."""
    d = Path(model_dir)
    return sum(f.stat().st_size for f in d.iterdir() if f.suffix in (".safetensors", ".bin", ".onnx"))
