"""Sentence splitting with Punkt (Kiss and Strunk, 2006), as implemented by nupunkt.

English uses the parameters that ship inside nupunkt (trained on English text; nothing is downloaded). Punkt is
unsupervised, so any other language gets parameters trained on the corpus itself: the first
`TRAINING_CHARACTERS` of its clean prose, read before the corpus pass, saved as `punkt_<language>.json` beside
the tokenized corpus and reused by reruns. nupunkt's trainer is the one its tokenizer reads, so the trained
model and the shipped English one run through the same code.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from stagekit.errors import InputError

SHIPPED_LANGUAGE = "en"
TRAINING_CHARACTERS = 20_000_000
# Below this, Punkt sees too few occurrences of a language's abbreviations to tell them from sentence ends.
MIN_TRAINING_CHARACTERS = 300_000


def model_path(directory: Path, language: str) -> Path | None:
    """Where a run keeps its trained parameters; None for the language whose parameters ship."""
    return None if language == SHIPPED_LANGUAGE else directory / f"punkt_{language}.json"


def load_splitter(model: Path | None):
    """nupunkt's sentence tokenizer: the shipped English parameters, or a trained model."""
    import nupunkt

    return nupunkt.load_default_model() if model is None else nupunkt.PunktSentenceTokenizer.load(model)


def train_splitter(paragraphs: Iterable[str], language: str, out: Path, source: str) -> int:
    """Train Punkt on up to TRAINING_CHARACTERS of paragraphs and save it to `out`; returns the characters used
    (0: the corpus has no paragraphs to split, and no model is written). Too little text is refused, naming
    `source`, where the language came from."""
    from nupunkt import PunktTrainer

    texts, size = [], 0
    for paragraph in paragraphs:
        texts.append(paragraph)
        size += len(paragraph) + 2
        if size >= TRAINING_CHARACTERS:
            break
    if size == 0:
        return 0
    if size < MIN_TRAINING_CHARACTERS:
        raise InputError(f"{source}: no shipped sentence model for it, and the corpus has {size:,} characters "
                         f"of prose to train one (at least {MIN_TRAINING_CHARACTERS:,} needed)")
    trainer = PunktTrainer()
    trainer.train("\n\n".join(texts))
    tmp = out.with_name(".tmp-" + out.name)  # nupunkt names the file by its suffix
    trainer.save(tmp, compress=False)
    tmp.replace(out)
    return size


_WORD_BEFORE_PERIOD = re.compile(r"(?:^|\s)(\S+)\.\s+(\S)")


def boundary_errors(splitter, paragraphs: Iterable[str], abbreviations: set[str]) -> dict[str, float]:
    """How a splitter treats periods whose role the text itself gives away, in paragraphs it did not train on:
    an abbreviation from `abbreviations` followed by a lower-case word never ends a sentence (a break there is an
    error); a longer plain word that is not an abbreviation, followed by a capital, almost always does (recall)."""
    false_breaks = abbrev_sites = kept = end_sites = 0
    for paragraph in paragraphs:
        breaks = {end for _, end in splitter.span_tokenize(paragraph)}
        for m in _WORD_BEFORE_PERIOD.finditer(paragraph):
            word, following = m.group(1), m.group(2)
            broke = any(m.end(1) + 1 <= b <= m.start(2) for b in breaks)
            if word.lower().strip("(\"'„“") in abbreviations and following.islower():
                abbrev_sites += 1
                false_breaks += broke
            elif word.isalpha() and len(word) >= 4 and word.lower() not in abbreviations and following.isupper():
                end_sites += 1
                kept += broke
    return {"abbreviation_sites": abbrev_sites, "false_breaks_at_abbreviations": false_breaks / max(abbrev_sites, 1),
            "sentence_end_sites": end_sites, "sentence_end_recall": kept / max(end_sites, 1)}
