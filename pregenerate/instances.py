"""Masked-LM training instances with the semantics of BERT's / TinyBERT's pre-generation.

Per document: sentences are accumulated up to a target length (`max_seq_len - 3`, or with probability
`short_seq_prob` a random shorter one, drawn once per document as BERT does); the chunk is cut at a random point into segment A and B; with
probability 0.5 (always for a one-sentence chunk) B is replaced by sentences from a random other document
(drawn in proportion to its number of sentences) and the unused sentences go back to the document. The pair
is truncated from a random end of the longer segment, then `masked_lm_prob` of the tokens (at most
`max_predictions_per_seq`, optionally whole words) are masked: 80% [MASK], 10% kept, 10% a random word.

Every document draws from its own random stream seeded by (seed, epoch, document), so an epoch is the same
whatever the number of workers or the way documents are sharded.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import numpy as np

from .corpus import Corpus


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    do_whole_word_mask: bool = False


class Vocabulary:
    """What instance creation needs to know about the vocabulary, precomputed once."""

    def __init__(self, tokens: list[str]):
        self.json_tokens = [json.dumps(t) for t in tokens]  # each token's JSON text, escaped once
        self.cls, self.sep, self.mask = (tokens.index(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
        self.is_continuation = [t.startswith("##") for t in tokens]
        # Random replacements come from real words, not from [PAD], [unused17] and the like.
        self.replacement_ids = np.array(
            [i for i, t in enumerate(tokens) if not (t.startswith("[") and t.endswith("]"))], dtype=np.int64)


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Trim the longer segment, one token at a time from its front or its back at random, until the pair fits."""
    excess = len(a) + len(b) - max_tokens
    if excess <= 0:
        return a, b
    la, lb = len(a), len(b)
    cut = [0, 0, 0, 0]  # front of a, back of a, front of b, back of b
    for front in (rng.random(excess) < 0.5).tolist():
        if la > lb:
            la -= 1
            cut[0 if front else 1] += 1
        else:
            lb -= 1
            cut[2 if front else 3] += 1
    return a[cut[0] : len(a) - cut[1]], b[cut[2] : len(b) - cut[3]]


def _mask(tokens: list[int], n_a: int, n_b: int, cfg: MaskingConfig, vocab: Vocabulary,
          rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Mask in place; returns the sorted masked positions and their original ids."""
    positions = list(range(1, 1 + n_a)) + list(range(2 + n_a, 2 + n_a + n_b))
    budget = min(cfg.max_predictions_per_seq, max(1, int(round(len(tokens) * cfg.masked_lm_prob))))
    if not cfg.do_whole_word_mask:
        chosen = [positions[i] for i in rng.permutation(len(positions))[:budget].tolist()]
    else:
        groups: list[list[int]] = []
        for p in positions:
            if groups and vocab.is_continuation[tokens[p]] and groups[-1][-1] == p - 1:
                groups[-1].append(p)
            else:
                groups.append([p])
        chosen = []
        for g in rng.permutation(len(groups)).tolist():
            if len(chosen) >= budget:
                break
            if len(chosen) + len(groups[g]) <= budget:
                chosen.extend(groups[g])
    chosen.sort()
    labels = [tokens[p] for p in chosen]
    draws = rng.random(len(chosen)).tolist()
    randoms = vocab.replacement_ids[rng.integers(0, len(vocab.replacement_ids), len(chosen))].tolist()
    for p, r, w in zip(chosen, draws, randoms):
        if r < 0.8:
            tokens[p] = vocab.mask
        elif r >= 0.9:
            tokens[p] = w
    return chosen, labels


def _random_document_segment(corpus: Corpus, doc: int, min_tokens: int, rng: np.random.Generator) -> list[int]:
    """Tokens of consecutive sentences of another document, from a random sentence on, until `min_tokens`
    are reached (or the document ends). Documents are drawn in proportion to their number of sentences."""
    lo, hi = corpus.sentence_range(doc)
    s = int(rng.integers(0, corpus.num_sentences - (hi - lo)))
    if s >= lo:
        s += hi - lo  # skip over the current document's sentences
    other = corpus.document_of_sentence(s)
    other_lo, other_hi = corpus.sentence_range(other)
    start = int(rng.integers(0, other_hi - other_lo))
    return [t for sentence in corpus.sentences(other, start, max(1, min_tokens)) for t in sentence]


def document_instances(corpus: Corpus, doc: int, epoch: int, seed: int, cfg: MaskingConfig,
                       vocab: Vocabulary) -> Iterator[str]:
    """The JSON lines (TinyBERT's format) of one document for one epoch."""
    rng = np.random.default_rng([seed, epoch, doc])
    sentences = corpus.sentences(doc)
    max_tokens = cfg.max_seq_len - 3
    target = max_tokens if rng.random() >= cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))
    chunk: list[list[int]] = []
    length = 0
    i = 0
    while i < len(sentences):
        chunk.append(sentences[i])
        length += len(sentences[i])
        if i == len(sentences) - 1 or length >= target:
            a_end = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
            a = [t for s in chunk[:a_end] for t in s]
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random = True
                b = _random_document_segment(corpus, doc, target - len(a), rng)
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                is_random = False
                b = [t for s in chunk[a_end:] for t in s]
            a, b = _truncate_pair(a, b, max_tokens, rng)
            tokens = [vocab.cls, *a, vocab.sep, *b, vocab.sep]
            positions, labels = _mask(tokens, len(a), len(b), cfg, vocab, rng)
            yield _json_line(tokens, len(a), len(b), is_random, positions, labels, vocab)
            chunk, length = [], 0
        i += 1


def _json_line(tokens, n_a, n_b, is_random, positions, labels, vocab: Vocabulary) -> str:
    jt = vocab.json_tokens
    return (
        '{"tokens": [' + ", ".join([jt[t] for t in tokens])
        + '], "segment_ids": [' + ", ".join(["0"] * (n_a + 2) + ["1"] * (n_b + 1))
        + '], "is_random_next": ' + ("true" if is_random else "false")
        + ', "masked_lm_positions": [' + ", ".join(map(str, positions))
        + '], "masked_lm_labels": [' + ", ".join([jt[t] for t in labels]) + "]}\n"
    )
