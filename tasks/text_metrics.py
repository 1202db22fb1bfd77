"""Metrics of generated text, as the field reports them: corpus BLEU and chrF by sacrebleu (its defaults: 13a
tokenization, BLEU's exponential smoothing, chrF with character 6-grams and beta 2), each with its signature, and exact
match for classification as text (T5's GLUE form: the label's word is the target).

A segment is scored as one line: its newlines and tabs become single spaces first (a gettext usage text spans
lines; sacrebleu's command line reads one segment per line), so the API's figures and `sacrebleu ref.txt -i hyp.txt`'s
on the files `segment_lines` writes are the same numbers.
"""
from __future__ import annotations

import re

from sacrebleu.metrics import BLEU, CHRF

_BREAKS = re.compile(r"[\n\t\r]+")


def segment_line(text: str) -> str:
    """A segment as sacrebleu's line-based files hold it."""
    return _BREAKS.sub(" ", text)


def generation_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float | str]:
    """BLEU, chrF and exact match (the share of hypotheses equal to their reference, whitespace at the ends aside),
    `score` being BLEU; the signatures say how BLEU and chrF were computed."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    hyp, ref = [segment_line(h) for h in hypotheses], [segment_line(r) for r in references]
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hyp, [ref]), chrf.corpus_score(hyp, [ref])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / max(1, len(references))
    return {"bleu": b.score, "chrf": c.score, "exact_match": exact, "score": b.score,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}
