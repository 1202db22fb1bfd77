"""Pre-generated masked-LM epochs (TinyBERT's format), read lazily.

Training epoch i reads `epoch_{i mod E}.json`. Lines are located through `epoch_{i}.idx` (written by
`xcompress pregenerate`) or, for data made by other tools, by one scan of the file that keeps only the
offsets. The order of an epoch is a permutation drawn from (seed, epoch); rank r of W takes every W-th
example of it, so every step's batch is known without reading what came before (resume jumps straight to it).
The one reader of the format: general distillation and fit-mlm-head batch it, decompose and recover calibrate on
its text (`texts`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from stagekit.errors import InputError

_EPOCH = re.compile(r"^epoch_(\d+)\.json$")


def read_vocab_ids(vocab_file: Path) -> dict[str, int]:
    return {tok: i for i, tok in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())}


class PregeneratedEpochs:
    """The epochs of a pre-generated directory, batched per rank.

    The directory holds `epoch_*.json` files, or shard subdirectories that each do (one per dump part, as the
    SLURM pregeneration array writes them): epoch i is then the concatenation of every shard's epoch i.
    """

    def __init__(self, directory: str | Path, vocab: dict[str, int], flag: str = "--pregenerated_data"):
        self.directory, self.flag = Path(directory), flag
        if not self.directory.is_dir():
            raise InputError(f"{flag} {directory}: no such directory")
        shards = epoch_shards(self.directory)
        if not shards:
            raise InputError(f"{flag} {directory}: no epoch_*.json files (nor shard directories with them)")
        numbers = _epoch_numbers(shards[0])
        if numbers != list(range(len(numbers))):
            raise InputError(f"{flag} {shards[0]}: epochs {numbers} are not numbered 0..{len(numbers) - 1}")
        for shard in shards[1:]:
            if _epoch_numbers(shard) != numbers:
                raise InputError(f"{flag} {shard}: epochs {_epoch_numbers(shard)} differ from "
                                 f"{shards[0].name}'s {numbers} (every shard needs the same epochs)")
        # parts[i]: the files that together make epoch i
        self.parts = [[shard / f"epoch_{i}.json" for shard in shards] for i in numbers]
        self.vocab = vocab
        self._offsets: dict[tuple[int, int], np.ndarray] = {}
        self._starts: dict[int, np.ndarray] = {}
        self._handles: dict[Path, object] = {}

    @property
    def num_files(self) -> int:
        return len(self.parts)

    def _part_offsets(self, i: int, part: int) -> np.ndarray:
        """Byte offsets of every line of one file, plus the file size."""
        if (i, part) not in self._offsets:
            path = self.parts[i][part]
            index = path.with_suffix(".idx")
            if index.is_file():
                offsets = np.fromfile(index, dtype="<u8")
                if offsets[-1] != path.stat().st_size:
                    raise InputError(f"{self.flag} {index}: index does not match {path.name} (stale or truncated)")
            else:
                offsets = _scan_offsets(path)
            if len(offsets) < 2:
                raise InputError(f"{self.flag} {path}: no training examples")
            self._offsets[i, part] = offsets
        return self._offsets[i, part]

    def _part_starts(self, epoch: int) -> np.ndarray:
        """Index of the first example of each part of the file read by training epoch `epoch`, plus the total."""
        i = epoch % self.num_files
        if i not in self._starts:
            counts = [len(self._part_offsets(i, p)) - 1 for p in range(len(self.parts[i]))]
            self._starts[i] = np.concatenate([[0], np.cumsum(counts)])
        return self._starts[i]

    def num_examples(self, epoch: int) -> int:
        return int(self._part_starts(epoch)[-1])

    def steps_per_epoch(self, epoch: int, global_batch: int) -> int:
        return self.num_examples(epoch) // global_batch

    def _locate(self, epoch: int, k: int) -> tuple[int, int, int]:
        """(file index, part, line) of example k of an epoch: which shard's file holds it, and where."""
        i = epoch % self.num_files
        starts = self._part_starts(epoch)
        part = int(np.searchsorted(starts, k, side="right")) - 1
        return i, part, k - int(starts[part])

    def _line(self, epoch: int, k: int) -> dict:
        i, part, line = self._locate(epoch, k)
        path, offsets = self.parts[i][part], self._part_offsets(i, part)
        if path not in self._handles:
            self._handles[path] = open(path, "rb")
        f = self._handles[path]
        f.seek(int(offsets[line]))
        raw = f.read(int(offsets[line + 1] - offsets[line]))
        try:
            record = json.loads(raw)
            tokens, segments = record["tokens"], record["segment_ids"]
            if not isinstance(tokens, list) or len(tokens) != len(segments) or not tokens:
                raise ValueError("tokens and segment_ids must be non-empty lists of equal length")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{self.flag} {path}:{line + 1}: corrupt line ({e})") from e
        return record

    def example_ids(self, epoch: int, seed: int, rank: int, world_size: int) -> np.ndarray:
        """This rank's examples of an epoch, in order; equal counts on every rank."""
        return rank_permutation(self.num_examples(epoch), seed, epoch, rank, world_size)

    def batch(self, epoch: int, ids: np.ndarray, mlm_labels: bool = False) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids for examples `ids`, padded to the longest; with
        `mlm_labels`, also `labels`: the original token at each masked position, -100 elsewhere."""
        records = [self._line(epoch, int(k)) for k in ids]
        length = max(len(r["tokens"]) for r in records)
        input_ids = torch.zeros(len(records), length, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        segments = torch.zeros_like(input_ids)
        for row, (k, r) in enumerate(zip(ids, records)):
            try:
                token_ids = [self.vocab[t] for t in r["tokens"]]
            except KeyError as e:
                raise InputError(f"{self.flag} {self._where(epoch, k)}: token {e} "
                                 "is not in the student's vocabulary (data made with another vocabulary?)") from e
            n = len(token_ids)
            input_ids[row, :n] = torch.tensor(token_ids)
            mask[row, :n] = 1
            segments[row, :n] = torch.tensor(r["segment_ids"])
        out = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": segments}
        if mlm_labels:
            out["labels"] = self._mlm_labels(epoch, ids, records, input_ids.shape)
        return out

    def _mlm_labels(self, epoch: int, ids: np.ndarray, records: list[dict], shape) -> torch.Tensor:
        labels = torch.full(shape, -100, dtype=torch.long)
        for row, (k, r) in enumerate(zip(ids, records)):
            try:
                positions, words = r["masked_lm_positions"], r["masked_lm_labels"]
                labels[row, positions] = torch.tensor([self.vocab[w] for w in words], dtype=torch.long)
            except (KeyError, IndexError, TypeError, RuntimeError) as e:
                raise InputError(f"{self.flag} {self._where(epoch, k)}: bad masked-LM "
                                 f"positions or labels ({e.__class__.__name__}: {e})") from e
        return labels

    def texts(self, epoch: int = 0) -> Iterator[tuple[list[int], list[int]]]:
        """Every example of an epoch in file order with its masked tokens put back: (token ids, segment ids)."""
        for k in range(self.num_examples(epoch)):
            r = self._line(epoch, k)
            try:
                tokens = list(r["tokens"])
                for pos, word in zip(r["masked_lm_positions"], r["masked_lm_labels"]):
                    tokens[pos] = word
                yield [self.vocab[t] for t in tokens], list(r["segment_ids"])
            except (KeyError, IndexError, TypeError) as e:
                raise InputError(f"{self.flag} {self._where(epoch, k)}: not a pre-generated example of this "
                                 f"vocabulary ({e.__class__.__name__}: {e})") from e

    def _where(self, epoch: int, k) -> str:
        i, part, line = self._locate(epoch, int(k))
        return f"{self.parts[i][part]}:{line + 1}"

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()


def rank_permutation(n: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s share of a permutation of range(n) drawn from (seed, epoch): every world_size-th index,
    the same count on every rank (the remainder is left out, so all ranks take the same number of steps)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).numpy()
    return order[rank::world_size][:n // world_size]


def epoch_shards(directory: Path) -> list[Path]:
    """The directories holding a pre-generated directory's epochs: itself, or its shard subdirectories."""
    if _epoch_numbers(directory):
        return [directory]
    return sorted(d for d in directory.iterdir() if d.is_dir() and _epoch_numbers(d))


def _epoch_numbers(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _EPOCH.match(p.name)))


def _scan_offsets(path: Path) -> np.ndarray:
    """Line offsets of a file without an index: one streaming pass, only the offsets kept."""
    offsets, pos = [0], 0
    with open(path, "rb") as f:
        for line in f:
            pos += len(line)
            if line.strip():
                offsets.append(pos)
            else:
                offsets[-1] = pos
    return np.asarray(offsets, dtype=np.uint64)
