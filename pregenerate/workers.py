"""What runs inside the worker processes. One pool serves the whole run (corpus pass and every epoch):
spawning workers costs about a second each, which is more than an epoch of a small corpus."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .corpus import Corpus
from .documents import DocumentProcessor, TokenizedBatch
from .instances import MaskingConfig, Vocabulary, document_instances
from .sources import Part

_state: dict[str, Any] = {}  # this process's processor, vocabulary, settings and (once built) corpus


def init(vocab: str, lowercase: bool, sentence_model: str | None, tokens: list[str], corpus_dir: str,
         masking: MaskingConfig, seed: int) -> None:
    _state.clear()
    model = Path(sentence_model) if sentence_model else None
    _state.update(processor=DocumentProcessor(Path(vocab), lowercase, model), vocab=Vocabulary(tokens),
                  corpus_dir=Path(corpus_dir), masking=masking, seed=seed)


def process_part(part: Part) -> TokenizedBatch:
    return _state["processor"](part)


def write_shard(task: tuple[int, int, int, str]) -> tuple[str, np.ndarray]:
    """Instances of documents [lo, hi) of epoch `epoch` into a shard file; returns its path and line offsets."""
    epoch, lo, hi, path = task
    if "corpus" not in _state:  # the corpus exists only once the corpus pass is over
        _state["corpus"] = Corpus(_state["corpus_dir"])
    corpus, vocab, masking, seed = _state["corpus"], _state["vocab"], _state["masking"], _state["seed"]
    offsets, pos = [], 0
    with open(path, "wb") as f:
        for doc in range(lo, hi):
            for line in document_instances(corpus, doc, epoch, seed, masking, vocab):
                data = line.encode("utf-8")
                offsets.append(pos)
                pos += len(data)
                f.write(data)
    return path, np.asarray(offsets, dtype=np.uint64)
