"""Nearest-neighbour words by cosine similarity, for the words augmentation cannot ask the masked-LM about
(those WordPiece splits into several pieces): GloVe vectors when the user brings them (GloVe's text format,
`word v1 ... vd` per line), otherwise the teacher's own input embeddings, a multi-piece word being the mean of
its pieces and its candidates the vocabulary's whole words.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stagekit.errors import InputError

from .stop_words import STOP_WORDS


class Neighbours:
    """Cosine nearest neighbours among `words`, normalised vectors in rows of `vectors`; answers cached."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.words = words
        self.vectors = torch.from_numpy((vectors / np.maximum(norms, 1e-12)).astype(np.float32))
        self._cache: dict[str, list[str]] = {}

    def vector(self, word: str) -> torch.Tensor | None:
        raise NotImplementedError

    def nearest(self, word: str, m: int) -> list[str]:
        if word not in self._cache:
            v = self.vector(word)
            if v is None:
                self._cache[word] = []
            else:
                sims = self.vectors @ (v / v.norm().clamp(min=1e-12))
                top = torch.topk(sims, min(m + 1, len(self.words))).indices.tolist()
                self._cache[word] = [self.words[i] for i in top if self.words[i] != word][:m]
        return self._cache[word]


class GloveNeighbours(Neighbours):
    def __init__(self, path: str | Path):
        words, rows, dim = [], [], None
        try:
            with open(path, encoding="utf-8", errors="strict") as f:
                for n, line in enumerate(f, start=1):
                    parts = line.rstrip("\n").rstrip(" ").split(" ")
                    if len(parts) < 3:
                        raise InputError(f"--glove_embs {path}:{n}: not `word v1 ... vd`")
                    dim = dim or len(parts) - 1
                    if len(parts) - 1 != dim:
                        raise InputError(f"--glove_embs {path}:{n}: {len(parts) - 1} values where line 1 has {dim}")
                    try:
                        rows.append(np.asarray(parts[1:], dtype=np.float32))
                    except ValueError:
                        raise InputError(f"--glove_embs {path}:{n}: a vector value is not a number") from None
                    words.append(parts[0])
        except FileNotFoundError:
            raise InputError(f"--glove_embs {path}: no such file") from None
        except UnicodeDecodeError as e:
            raise InputError(f"--glove_embs {path}: not UTF-8 text ({e})") from None
        if not words:
            raise InputError(f"--glove_embs {path}: no vectors")
        super().__init__(words, np.stack(rows))
        self.index = {w: i for i, w in enumerate(words)}

    def vector(self, word: str) -> torch.Tensor | None:
        i = self.index.get(word)
        return None if i is None else self.vectors[i]


class EmbeddingNeighbours(Neighbours):
    """Neighbours in a BERT model's input-embedding space; candidates are alphabetic whole-word tokens."""

    def __init__(self, embeddings: torch.Tensor, tokenizer):
        vocab = tokenizer.get_vocab()
        self.tokenizer = tokenizer
        self.all = embeddings.detach().float()
        whole = sorted((i, w) for w, i in vocab.items() if w.isalpha() and w.isascii() and len(w) > 1
                       and w not in STOP_WORDS)
        super().__init__([w for _, w in whole], self.all[[i for i, _ in whole]].numpy())

    def vector(self, word: str) -> torch.Tensor | None:
        ids = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(word))
        return self.all[ids].mean(0) if ids else None
