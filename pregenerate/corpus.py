"""The tokenized corpus on disk: built once per output directory, read by every epoch.

Layout of `<output_dir>/corpus/`:
  tokens.int32      every sentence's token ids, concatenated
  sentences.int64   S + 1 offsets into tokens
  documents.int64   D + 1 offsets into sentences
  corpus.json       counts and provenance

Reads go through pread rather than a memory map, so a process's resident memory does not grow with the
corpus it samples from.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stagekit.atomic import temp_dir_beside, write_json
from stagekit.errors import InputError

from .documents import TokenizedBatch
from .parallel import ordered_map
from .sources import Part, iter_parts


def build_corpus(train_corpus: str, directory: Path, process: Callable[[Part], TokenizedBatch], pool, window: int,
                 provenance: dict[str, Any], language: str | None = None, read_threads: int = 1,
                 dump_slice: tuple[int, int] | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Stream the corpus's parts through `process` on the pool's workers into `directory`, written atomically;
    returns corpus.json. `pool` None runs in this process."""

    start = time.perf_counter()
    tmp = temp_dir_beside(directory)
    stats = {"documents": 0, "sentences": 0, "tokens": 0, "text_bytes": 0, "dropped_documents": 0}
    try:
        with open(tmp / "tokens.int32", "wb") as tok_f, open(tmp / "sentences.int64", "wb") as sent_f, \
                open(tmp / "documents.int64", "wb") as doc_f, \
                tqdm(desc="documents", unit="doc", disable=not show_progress) as bar:
            sent_f.write(np.zeros(1, np.int64).tobytes())
            doc_f.write(np.zeros(1, np.int64).tobytes())
            parts = iter_parts(train_corpus, language, read_threads, dump_slice)
            for out in ordered_map(pool, process, parts, window):
                tok_f.write(out.tokens.tobytes())
                sent_f.write((stats["tokens"] + np.cumsum(out.sentence_lengths)).tobytes())
                doc_f.write((stats["sentences"] + np.cumsum(out.document_sentences)).tobytes())
                stats["tokens"] += int(out.sentence_lengths.sum())
                stats["sentences"] += len(out.sentence_lengths)
                stats["documents"] += len(out.document_sentences)
                stats["text_bytes"] += out.text_bytes
                stats["dropped_documents"] += out.dropped
                bar.update(len(out.document_sentences) + out.dropped)
        if stats["documents"] == 0:
            raise InputError(f"--train_corpus {train_corpus}: no document with text (empty corpus?)")
        if stats["documents"] < 2:
            raise InputError(f"--train_corpus {train_corpus}: only one document; random next sentences "
                             "need at least two")
        info = stats | {"seconds": time.perf_counter() - start} | provenance
        write_json(tmp / "corpus.json", info)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        return info
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Corpus:
    """Random access to documents of a built corpus."""

    def __init__(self, directory: Path):
        self.info = json.loads((directory / "corpus.json").read_text())
        self.num_documents = self.info["documents"]
        self.num_sentences = self.info["sentences"]
        self._tok = os.open(directory / "tokens.int32", os.O_RDONLY)
        self._sent = os.open(directory / "sentences.int64", os.O_RDONLY)
        self._doc = os.open(directory / "documents.int64", os.O_RDONLY)

    def close(self) -> None:
        for fd in (self._tok, self._sent, self._doc):
            os.close(fd)

    @staticmethod
    def _read(fd: int, dtype, start: int, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return np.frombuffer(os.pread(fd, count * size, start * size), dtype=dtype)

    def sentence_range(self, doc: int) -> tuple[int, int]:
        lo, hi = self._read(self._doc, np.int64, doc, 2)
        return int(lo), int(hi)

    def sentences(self, doc: int, start: int = 0, min_tokens: int | None = None) -> list[list[int]]:
        """Sentences of a document as lists of token ids, from sentence `start` on; with `min_tokens`, only
        as many as it takes to reach that many tokens (the last one crossing it included)."""
        lo, hi = self.sentence_range(doc)
        offsets = self._read(self._sent, np.int64, lo + start, hi - lo - start + 1)
        if min_tokens is not None:
            needed = int(np.searchsorted(offsets - offsets[0], min_tokens, side="left"))
            offsets = offsets[: max(1, min(needed, len(offsets) - 1)) + 1]
        tokens = self._read(self._tok, np.int32, int(offsets[0]), int(offsets[-1] - offsets[0])).tolist()
        cuts = (offsets - offsets[0]).tolist()
        return [tokens[a:b] for a, b in zip(cuts[:-1], cuts[1:])]

    def document_of_sentence(self, sentence: int) -> int:
        """Binary search over the document offsets, a few preads deep."""
        lo, hi = 0, self.num_documents
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if int(self._read(self._doc, np.int64, mid, 1)[0]) <= sentence:
                lo = mid
            else:
                hi = mid
        return lo
