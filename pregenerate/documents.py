"""Raw document -> sentences -> token ids. Runs inside the worker processes, one batch of documents at a time."""
from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import numpy as np

from .sentences import load_splitter
from .sources import PARAGRAPHS, SENTENCES, WIKITEXT, Part, RawDocument, part_documents
from .tokenize import WordPieceEncoder
from .wikitext import is_disambiguation, wikitext_to_paragraphs

# Parentheses emptied by removed templates (pronunciations, coordinates): "Andorra (; , ), officially".
_EMPTY_PARENS = re.compile(r"\s*\(\s*[,;:\s]*\)")


@dataclasses.dataclass
class TokenizedBatch:
    """Documents of one batch, flattened: sentence lengths in token order, sentence counts per document."""

    tokens: np.ndarray  # int32, every sentence of every kept document, concatenated
    sentence_lengths: np.ndarray  # int64
    document_sentences: np.ndarray  # int64, sentences per kept document
    text_bytes: int  # UTF-8 bytes of the clean text that was tokenized
    dropped: int  # documents without any prose (disambiguation pages, stubs)


def paragraphs(doc: RawDocument) -> list[str] | None:
    """Clean prose paragraphs of a document; None where the corpus gives sentences already."""
    if doc.kind == SENTENCES:
        return None
    if doc.kind == WIKITEXT:
        if is_disambiguation(doc.title, doc.text):
            return []
        return [_EMPTY_PARENS.sub("", p) for p in wikitext_to_paragraphs(doc.text, doc.site)]
    if doc.kind == PARAGRAPHS:
        return [_EMPTY_PARENS.sub("", p) for p in doc.text]
    raise ValueError(f"unknown document kind {doc.kind!r}")


class DocumentProcessor:
    """Cleans, sentence-splits and tokenizes documents; built once per worker process. `sentence_model`: trained
    Punkt parameters, or None for the English ones that ship with nupunkt."""

    def __init__(self, vocab: Path, lowercase: bool, sentence_model: Path | None = None):
        self.encoder = WordPieceEncoder(vocab, lowercase)
        self.splitter = load_splitter(sentence_model)

    def sentences(self, doc: RawDocument) -> list[str]:
        prose = paragraphs(doc)
        if prose is None:
            return list(doc.text)
        return [s for paragraph in prose for s in self.splitter.tokenize(paragraph)]

    def __call__(self, part: Part) -> TokenizedBatch:
        docs = part_documents(part)
        per_doc = [self.sentences(d) for d in docs]
        flat = [s for sents in per_doc for s in sents]
        ids = self.encoder.encode(flat)
        lengths, counts, kept, k = [], [], [], 0
        for sents in per_doc:
            doc_ids = [x for x in ids[k : k + len(sents)] if x]  # sentences of only unknown chars vanish
            k += len(sents)
            if doc_ids:
                counts.append(len(doc_ids))
                lengths.extend(len(x) for x in doc_ids)
                kept.extend(doc_ids)
        tokens = np.fromiter(itertools.chain.from_iterable(kept), dtype=np.int32, count=sum(lengths))
        return TokenizedBatch(
            tokens=tokens,
            sentence_lengths=np.asarray(lengths, dtype=np.int64),
            document_sentences=np.asarray(counts, dtype=np.int64),
            text_bytes=sum(len(s.encode("utf-8")) for s in flat),
            dropped=len(docs) - len(counts),
        )
