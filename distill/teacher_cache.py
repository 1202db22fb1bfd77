"""The teacher's outputs computed once per teacher and data, on disk, memory-mapped.

Task distillation runs the teacher on every batch; on augmented data (TinyBERT's x20 to x30) that is most of the
compute when the student is small. The cache computes it once:

- logits of every training example (float32), for the prediction phase;
- hidden states and attention scores of the layers the loss reads (float16), for a bounded pool of examples drawn
  from the seed, for the intermediate phase, which then trains on the pool.

An entry lives in `<cache>/<kind>-<key>/`, where the key is a hash of the teacher's weights, the examples' piece ids
(so the data file, the subset, the tokenizer and the sequence length are all in it) and what the entry holds (the
layers, the pool's bound). Another teacher or other data is another key, so a stale entry is never read; an entry
whose own record does not name its key (copied, or cut short) is rebuilt. Ranks share the building: each computes a
slice of the examples into the same memory-mapped files (one machine, or a file system all nodes see), and the
entry appears under its name only when complete.

    hidden.npy / scores.npy  flat float16, example after example: (layers, L, d) and (layers, heads, L, L)
    offsets.npy              (pool, 2): where each pool example starts in the two
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modeling.formats import encoder_of
from stagekit.atomic import fresh_dir, partial_dir, publish_dir, write_json
from stagekit.errors import InputError
from tasks.classifier import predict_logits
from tasks.features import TaskFeatures

from .dist import Distributed
from .task_training import model_inputs
from .teacher import ScoringTeacher

_META = "meta.json"
_BUILD_BATCH = 64


def writable_cache(path: str, flag: str = "--teacher_cache") -> Path:
    """The cache directory, created; one line naming it when it cannot be written."""
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{flag} {root}: cannot be written ({e.strerror or e})") from None
    return root


def features_fingerprint(features: TaskFeatures) -> str:
    h = hashlib.blake2b(digest_size=16)
    for ids, segments in zip(features.input_ids, features.token_type_ids):
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        h.update(np.asarray(segments, dtype=np.int8).tobytes())
        h.update(b"|")
    return h.hexdigest()


@dataclasses.dataclass
class CacheEntry:
    """What one task run reports about the cache it used."""
    path: str
    built: bool
    build_seconds: float
    examples: int


class _Entry:
    """Find an entry by its key or build it (ranks sharing the work), then open its arrays read-only."""

    def __init__(self, root: Path, kind: str, identity: dict[str, Any]):
        key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=16).hexdigest()
        self.identity, self.key = identity, key
        self.path = root / f"{kind}-{key}"

    def complete(self) -> bool:
        try:
            meta = json.loads((self.path / _META).read_text())
        except (OSError, ValueError):
            return False
        return meta.get("key") == self.key

    def build(self, dist: Distributed, allocate: Callable[[Path], None] | None,
              fill: Callable[[Path, int, int], None]) -> tuple[bool, float]:
        """(built, seconds): `allocate(dir)`, when given, creates the files on the main rank, then every rank runs
        `fill(dir, rank, world)` for its share; an incomplete entry is replaced."""
        started = time.perf_counter()
        if dist.all_gather_object(self.complete())[0]:  # the main rank's view: every rank decides alike
            return False, 0.0
        work = partial_dir(self.path)
        if dist.is_main:
            fresh_dir(work)
            if allocate is not None:
                allocate(work)
        dist.barrier()
        fill(work, dist.rank, dist.world_size)
        dist.barrier()
        if dist.is_main:
            write_json(work / _META, {"key": self.key, **self.identity})
            publish_dir(work, self.path)
        dist.barrier()
        return True, time.perf_counter() - started


def _by_length(features: TaskFeatures, ids: np.ndarray) -> np.ndarray:
    """`ids` ordered by length: batches of like lengths waste little on padding."""
    lengths = np.array([len(features.input_ids[i]) for i in ids])
    return ids[np.argsort(lengths, kind="stable")]


class TeacherLogits:
    """The teacher's logits for every training example, looked up by example index."""

    def __init__(self, root: Path, teacher: nn.Module, teacher_key: str, features: TaskFeatures, dist: Distributed):
        entry = _Entry(root, "logits", {"teacher": teacher_key, "examples": features_fingerprint(features),
                                        "count": len(features)})

        def fill(work: Path, rank: int, world: int) -> None:
            logits = predict_logits(teacher, features, _BUILD_BATCH, dist)  # each rank a slice, all get the whole
            if rank == 0:
                np.save(work / "logits.npy", logits.astype(np.float32))

        built, seconds = entry.build(dist, None, fill)
        self.logits = np.load(entry.path / "logits.npy", mmap_mode="r")
        self.entry = CacheEntry(str(entry.path), built, seconds, len(features))

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.logits[batch["index"].numpy()])).to(batch["input_ids"].device)


class TeacherLayers:
    """Hidden states and attention scores of a bounded pool of training examples, in ScoringTeacher's form (a tuple
    over all layers, None where the loss reads nothing)."""

    def __init__(self, root: Path, teacher: nn.Module, teacher_key: str, features: TaskFeatures, dist: Distributed,
                 hidden_layers: Sequence[int], score_layers: Sequence[int], pool_mb: float, seed: int):
        scorer = ScoringTeacher(encoder_of(teacher))
        family, config = scorer.scoring.family, encoder_of(teacher).config
        self.depth = family.size(config, "num_layers")
        self.width = family.size(config, "hidden_size")
        self.heads = family.size(config, "num_heads")
        self.hidden_layers, self.score_layers = sorted(hidden_layers), sorted(score_layers)
        lengths = np.array([len(ids) for ids in features.input_ids], dtype=np.int64)
        hidden_size = len(self.hidden_layers) * lengths * self.width
        score_size = len(self.score_layers) * self.heads * lengths * lengths
        # The pool: a seeded draw of examples, as many as fit the bound (all of them when they do).
        order = np.random.default_rng(seed).permutation(len(features))
        fits = np.cumsum(2 * (hidden_size[order] + score_size[order])) <= pool_mb * 2**20
        self.pool = np.sort(order[:int(fits.sum())])
        if len(self.pool) == 0:
            raise InputError(f"--teacher_cache_pool_mb {pool_mb}: too small for one example's hidden states and "
                             "attention scores")
        offsets = np.stack([np.cumsum(hidden_size[self.pool]) - hidden_size[self.pool],
                            np.cumsum(score_size[self.pool]) - score_size[self.pool]], axis=1)
        entry = _Entry(root, "layers", {"teacher": teacher_key, "examples": features_fingerprint(features),
                                        "count": len(features), "hidden_layers": self.hidden_layers,
                                        "score_layers": self.score_layers, "pool_mb": pool_mb, "seed": seed})

        def allocate(work: Path) -> None:
            np.save(work / "offsets.npy", offsets)
            for name, size in (("hidden", hidden_size), ("scores", score_size)):
                np.lib.format.open_memmap(work / f"{name}.npy", mode="w+", dtype=np.float16,
                                          shape=(int(size[self.pool].sum()),))

        def fill(work: Path, rank: int, world: int) -> None:
            hidden_out = np.load(work / "hidden.npy", mmap_mode="r+")
            scores_out = np.load(work / "scores.npy", mmap_mode="r+")
            where = {int(i): p for p, i in enumerate(self.pool)}
            mine = _by_length(features, self.pool)[rank::world]
            for start in range(0, len(mine), _BUILD_BATCH):
                ids = mine[start:start + _BUILD_BATCH]
                inputs = {k: v.to(dist.device) for k, v in model_inputs(features.batch(ids)).items()}
                hidden, scores = scorer(**inputs, score_layers=self.score_layers,
                                        hidden_layers=self.hidden_layers)
                h = torch.stack([hidden[i] for i in self.hidden_layers], 1).to(torch.float16).cpu().numpy()
                s = torch.stack([scores[i] for i in self.score_layers], 1).to(torch.float16).cpu().numpy()
                for row, i in enumerate(ids):
                    n = lengths[i]
                    h_at, s_at = offsets[where[int(i)]]
                    hidden_out[h_at:h_at + hidden_size[i]] = h[row, :, :n].reshape(-1)
                    scores_out[s_at:s_at + score_size[i]] = s[row, :, :, :n, :n].reshape(-1)
            hidden_out.flush()
            scores_out.flush()

        built, seconds = entry.build(dist, allocate, fill)
        self.hidden = np.load(entry.path / "hidden.npy", mmap_mode="r")
        self.scores = np.load(entry.path / "scores.npy", mmap_mode="r")
        self.offsets = np.load(entry.path / "offsets.npy")
        self.lengths = lengths
        self.entry = CacheEntry(str(entry.path), built, seconds, len(self.pool))

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[tuple, tuple]:
        ids = batch["index"].numpy()
        b, t = batch["input_ids"].shape
        nh, ns = len(self.hidden_layers), len(self.score_layers)
        hidden = np.zeros((nh, b, t, self.width), dtype=np.float32)
        scores = np.zeros((ns, b, self.heads, t, t), dtype=np.float32)
        for row, p in enumerate(np.searchsorted(self.pool, ids)):
            n = self.lengths[ids[row]]
            h_at, s_at = self.offsets[p]
            hidden[:, row, :n] = self.hidden[h_at:h_at + nh * n * self.width].reshape(nh, n, self.width)
            scores[:, row, :, :n, :n] = self.scores[s_at:s_at + ns * self.heads * n * n].reshape(ns, self.heads, n, n)
        device = batch["input_ids"].device
        hidden_t = [None] * (self.depth + 1)
        for k, layer in enumerate(self.hidden_layers):
            hidden_t[layer] = torch.from_numpy(hidden[k]).to(device)
        scores_t = [None] * self.depth
        for k, layer in enumerate(self.score_layers):
            scores_t[layer] = torch.from_numpy(scores[k]).to(device)
        return tuple(hidden_t), tuple(scores_t)
