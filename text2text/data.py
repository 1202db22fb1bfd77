"""The pairs of a text-to-text task and how its generated texts are scored.

`--task_name text` reads `--data_dir`'s train.tsv, dev.tsv and test.tsv (source and target columns, see
corpora/text_pairs.py) and scores BLEU (with chrF and exact match beside it); a GLUE task name reads that task's
files in T5's text form (corpora/glue_text.py) and scores the task's own metric on the labels read back from the
generated words, a word that is no label counting as wrong.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from corpora.glue import GlueTask, dev_files, get_task, read_examples, task_dir, train_file
from corpora.glue_text import as_text, text_label
from corpora.text_pairs import TextPair, read_pairs
from stagekit.errors import InputError
from tasks.metrics import glue_metrics
from tasks.text_metrics import generation_metrics

TEXT = "text"


@dataclasses.dataclass(frozen=True)
class TextTask:
    name: str
    glue: GlueTask | None  # None: a TSV of source and target texts

    def pairs(self, data_dir: str, split: str) -> list[TextPair]:
        """The pairs of `split` (train, dev or test)."""
        if self.glue is None:
            root = Path(data_dir)
            if not root.is_dir():
                raise InputError(f"--data_dir {data_dir}: no such directory")
            return read_pairs(root / f"{split}.tsv", "--data_dir")
        path = train_file(self.glue, data_dir) if split == "train" else (
            dev_files(self.glue, data_dir)[0] if split == "dev" else task_dir(data_dir, self.glue) / "test.tsv")
        return [as_text(self.glue, e) for e in read_examples(self.glue, path, labelled=split != "test")]

    def score(self, generated: list[str], pairs: list[TextPair]) -> dict[str, float | str]:
        """The task's metrics of generated texts against the pairs' targets; `score` is the one it is ranked by."""
        references = [p.target for p in pairs]
        if self.glue is None:
            return generation_metrics(generated, references)
        read = [text_label(self.glue, g) for g in generated]
        gold = [text_label(self.glue, r) for r in references]
        invalid = sum(r is None for r in read)
        if self.glue.is_regression:
            pred = np.array([0.0 if r is None else r for r in read])
            metrics = glue_metrics(self.glue.metric, pred, np.array(gold, dtype=np.float64))
        else:
            index = {label: i for i, label in enumerate(self.glue.labels)}
            pred = np.array([-1 if r is None else index[r] for r in read])
            metrics = glue_metrics(self.glue.metric, pred, np.array([index[g] for g in gold]))
        exact = sum(g.strip() == r for g, r in zip(generated, references)) / len(references)
        return metrics | {"exact_match": exact, "invalid_outputs": invalid}


def text_task(name: str) -> TextTask:
    """`text` or a GLUE task name, refused in one line otherwise."""
    if name == TEXT:
        return TextTask(TEXT, None)
    try:
        glue = get_task(name)
    except InputError:
        raise InputError(f"--task_name {name}: not '{TEXT}' (a TSV of source and target texts) or a GLUE task") from None
    return TextTask(glue.name, glue)
