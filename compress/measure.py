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
