"""Write one epoch: `epoch_{i}.json` (TinyBERT's format), `epoch_{i}.idx` and `epoch_{i}_metrics.json`.

`epoch_{i}.idx` holds N + 1 little-endian uint64 byte offsets: the start of every line, then the file size,
so a reader can seek to any instance without loading the epoch. The epoch file is renamed into place last:
if `epoch_{i}.json` exists, it is complete and its index and metrics are beside it.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stagekit.atomic import temp_dir_beside, write_json

from .parallel import ordered_map
from .workers import write_shard

# Small shards keep every worker busy to the end of an epoch; a shard costs one file and one task.
SHARD_DOCUMENTS = 16


def epoch_paths(output_dir: Path, epoch: int) -> tuple[Path, Path, Path]:
    return (output_dir / f"epoch_{epoch}.json", output_dir / f"epoch_{epoch}.idx",
            output_dir / f"epoch_{epoch}_metrics.json")


def epoch_is_complete(output_dir: Path, epoch: int) -> bool:
    data, index, metrics = epoch_paths(output_dir, epoch)
    if not (data.is_file() and index.is_file() and metrics.is_file()):
        return False
    return index.stat().st_size >= 8 and int(np.fromfile(index, dtype="<u8")[-1]) == data.stat().st_size


def write_epoch(output_dir: Path, epoch: int, num_docs: int, max_seq_len: int, seed: int, pool, window: int,
                show_progress: bool = True) -> dict[str, Any]:
    """Generate epoch `epoch` over every document of the corpus with the workers (see workers.init);
    returns its metrics. `pool` None runs in this process."""
    start = time.perf_counter()
    data, index, metrics_path = epoch_paths(output_dir, epoch)
    work = temp_dir_beside(data)
    tasks = [(epoch, lo, min(lo + SHARD_DOCUMENTS, num_docs), str(work / f"shard_{lo}"))
             for lo in range(0, num_docs, SHARD_DOCUMENTS)]
    try:
        n, size = 0, 0
        with open(work / "epoch.json", "wb") as out, open(work / "epoch.idx", "wb") as idx, \
                tqdm(total=num_docs, desc=f"epoch {epoch}", unit="doc", disable=not show_progress) as bar:
            for (shard_path, offsets), task in zip(ordered_map(pool, write_shard, tasks, window), tasks):
                (offsets + np.uint64(size)).astype("<u8").tofile(idx)
                with open(shard_path, "rb") as shard:
                    shutil.copyfileobj(shard, out, 1 << 20)
                size = out.tell()
                n += len(offsets)
                os.unlink(shard_path)
                bar.update(task[2] - task[1])
                bar.set_postfix(instances=n)
            np.asarray([size], dtype="<u8").tofile(idx)
        metrics = {"num_training_examples": n, "max_seq_len": max_seq_len, "bytes": size,
                   "index": {"file": index.name, "dtype": "<u8", "entries": n + 1},
                   "seed": seed, "seconds": time.perf_counter() - start}
        os.replace(work / "epoch.idx", index)
        write_json(metrics_path, metrics)
        os.replace(work / "epoch.json", data)
        return metrics
    finally:
        shutil.rmtree(work, ignore_errors=True)
