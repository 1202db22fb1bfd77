"""GLUE tasks in T5's own text-to-text form (the T5 paper, appendix D): the input names the task and its fields, the
target is the label's word, or for STS-B the score rounded to the nearest 0.2 as text ("3.8").

    sst2 sentence: it 's a charming and often affecting journey .      -> positive
    stsb sentence1: A man is playing a flute. sentence2: A man plays.  -> 3.8
"""
from __future__ import annotations

from .glue import Example, GlueTask
from .text_pairs import TextPair

# T5's prefix and field names per task, and its words for the labels in GLUE's label order.
PREFIX = {"CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "STS-B": "stsb", "QQP": "qqp", "MNLI": "mnli",
          "QNLI": "qnli", "RTE": "rte", "WNLI": "wnli"}
FIELDS = {"CoLA": ("sentence",), "SST-2": ("sentence",), "MRPC": ("sentence1", "sentence2"),
          "STS-B": ("sentence1", "sentence2"), "QQP": ("question1", "question2"), "MNLI": ("hypothesis", "premise"),
          "QNLI": ("question", "sentence"), "RTE": ("sentence1", "sentence2"), "WNLI": ("sentence1", "sentence2")}
WORDS = {"CoLA": ("unacceptable", "acceptable"), "SST-2": ("negative", "positive"),
         "MRPC": ("not_equivalent", "equivalent"), "QQP": ("not_duplicate", "duplicate"),
         "MNLI": ("contradiction", "entailment", "neutral"), "QNLI": ("entailment", "not_entailment"),
         "RTE": ("entailment", "not_entailment"), "WNLI": ("not_entailment", "entailment")}


def as_text(task: GlueTask, example: Example) -> TextPair:
    """One GLUE example as T5 reads and writes it (a test row's target is empty)."""
    names = FIELDS[task.name]
    texts = (example.text_a,) if len(names) == 1 else (example.text_a, example.text_b)
    if task.name == "MNLI":  # T5 puts the hypothesis first; GLUE's sentence1 is the premise
        texts = texts[::-1]
    source = " ".join([PREFIX[task.name], *(f"{name}: {text}" for name, text in zip(names, texts))])
    return TextPair(source, "" if example.label is None else label_text(task, example.label), example.guid)


def label_text(task: GlueTask, label: str | float) -> str:
    if task.is_regression:
        return f"{round(float(label) * 5) / 5:.1f}"
    return WORDS[task.name][task.labels.index(label)]


def text_label(task: GlueTask, text: str) -> str | float | None:
    """A generated text read back as a label (a score for STS-B), or None when it is none of them."""
    text = text.strip()
    if task.is_regression:
        try:
            return float(text)
        except ValueError:
            return None
    words = WORDS[task.name]
    return task.labels[words.index(text)] if text in words else None
