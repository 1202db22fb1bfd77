"""The nine GLUE tasks in the standard `glue_data` layout: which columns hold the texts and the label, the
label order every BERT checkpoint uses, dev and test files, and submission file names.

The real files have quirks that are honoured rather than assumed away: MRPC starts with a UTF-8 byte-order
mark, CoLA's train and dev files have no header (its test file has one), MNLI has two dev and test files, and
no file may be read with CSV quoting (sentences contain bare quotes). Columns are found by header name, so
MNLI's 12-column train and 16-column dev files read alike.
"""
from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np

from stagekit.errors import InputError

csv.field_size_limit(sys.maxsize)


@dataclasses.dataclass(frozen=True)
class Example:
    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None  # a label string, a float for regression, None for test rows


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where a file's fields are: header names, or 0-based positions for a file without a header."""
    text_a: str | int
    text_b: str | int | None
    label: str | int | None
    guid: str | int | None = None


@dataclasses.dataclass(frozen=True)
class GlueTask:
    name: str
    labels: tuple[str, ...] | None  # None: regression
    metric: str  # mcc | acc | acc_and_f1 | corr
    train: Columns
    test: Columns
    dev_files: tuple[str, ...] = ("dev",)
    submission_files: tuple[str, ...] = ("test",)
    submission_names: tuple[str, ...] = ()
    header: bool = True  # train and dev files (test files always have one)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def is_pair(self) -> bool:
        return self.train.text_b is not None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def text_columns(self) -> tuple[str | int, ...]:
        return tuple(c for c in (self.train.text_a, self.train.text_b) if c is not None)


def _pair(a: str, b: str, label: str) -> tuple[Columns, Columns]:
    return Columns(a, b, label), Columns(a, b, None, "index")


TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("CoLA", ("0", "1"), "mcc", Columns(3, None, 1), Columns("sentence", None, None, "index"), header=False),
    GlueTask("SST-2", ("0", "1"), "acc", Columns("sentence", None, "label"), Columns("sentence", None, None, "index")),
    GlueTask("MRPC", ("0", "1"), "acc_and_f1", *_pair("#1 String", "#2 String", "Quality")),
    GlueTask("STS-B", None, "corr", *_pair("sentence1", "sentence2", "score")),
    GlueTask("QQP", ("0", "1"), "acc_and_f1", Columns("question1", "question2", "is_duplicate"),
             Columns("question1", "question2", None, "id")),
    GlueTask("MNLI", ("contradiction", "entailment", "neutral"), "acc", *_pair("sentence1", "sentence2", "gold_label"),
             dev_files=("dev_matched", "dev_mismatched"), submission_files=("test_matched", "test_mismatched"),
             submission_names=("MNLI-m", "MNLI-mm")),
    GlueTask("QNLI", ("entailment", "not_entailment"), "acc", *_pair("question", "sentence", "label")),
    GlueTask("RTE", ("entailment", "not_entailment"), "acc", *_pair("sentence1", "sentence2", "label")),
    GlueTask("WNLI", ("0", "1"), "acc", *_pair("sentence1", "sentence2", "label")),
]}


def get_task(name: str) -> GlueTask:
    """A task by its GLUE name, case-insensitively (`sst-2`, `SST-2`, `sst2`)."""
    key = name.lower().replace("-", "")
    for task in TASKS.values():
        if task.name.lower().replace("-", "") == key:
            return task
    raise InputError(f"--task_name {name}: unknown task (one of {', '.join(TASKS)})")


def task_dir(data_dir: str | Path, task: GlueTask) -> Path:
    """`data_dir` may be the task's own directory or the `glue_data` directory above it."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data_dir {data_dir}: no such directory")
    if (root / task.name).is_dir():
        return root / task.name
    if any((root / f"{name}.tsv").is_file() for name in ("train", *task.dev_files)):
        return root
    raise InputError(f"--data_dir {data_dir}: no {task.name}/ directory and no {task.name} train or dev files in it")


def read_rows(path: Path, flag: str = "--data_dir") -> list[list[str]]:
    """All rows of a GLUE TSV, byte-order mark dropped, no quoting; a missing file is an input error."""
    if not path.is_file():
        raise InputError(f"{flag} {path.parent}: no {path.name} for this task")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as e:
        raise InputError(f"{flag} {path}: not UTF-8 text ({e})") from e


def column_index(header: list[str] | None, col: str | int, path: Path) -> int:
    if isinstance(col, int):
        return col
    assert header is not None
    try:
        return header.index(col)
    except ValueError:
        raise InputError(f"{path}:1: no column {col!r} in the header (found: {', '.join(header)})") from None


def read_examples(task: GlueTask, path: Path, labelled: bool = True) -> list[Example]:
    """Examples of one file; a short row, an unknown label or an unreadable score names its file and line."""
    rows = read_rows(path)
    cols = task.train if labelled else task.test
    has_header = task.header or not labelled
    header = rows[0] if has_header and rows else None
    body = rows[1:] if has_header else rows
    first_line = 2 if has_header else 1
    idx = {k: column_index(header, c, path) for k, c in dataclasses.asdict(cols).items() if c is not None}
    need = max(idx.values()) + 1
    examples = []
    for n, row in enumerate(body, start=first_line):
        if not row:
            continue
        if len(row) < need:
            raise InputError(f"{path}:{n}: malformed row, {len(row)} tab-separated fields where {task.name} needs {need}")
        label = row[idx["label"]] if "label" in idx else None
        if label is not None:
            label = _parse_label(task, label, path, n)
        guid = row[idx["guid"]] if "guid" in idx else f"{path.stem}-{n}"
        examples.append(Example(guid, row[idx["text_a"]], row[idx["text_b"]] if "text_b" in idx else None, label))
    if not examples:
        raise InputError(f"{path}: no examples")
    return examples


def _parse_label(task: GlueTask, raw: str, path: Path, line: int) -> str | float:
    if task.is_regression:
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"{path}:{line}: score {raw!r} is not a number") from None
    if raw not in task.labels:
        raise InputError(f"{path}:{line}: label {raw!r} is not one of {task.name}'s labels {', '.join(task.labels)}")
    return raw


def train_file(task: GlueTask, data_dir: str | Path, aug: bool = False) -> Path:
    return task_dir(data_dir, task) / ("train_aug.tsv" if aug else "train.tsv")


def dev_files(task: GlueTask, data_dir: str | Path) -> list[Path]:
    d = task_dir(data_dir, task)
    return [d / f"{name}.tsv" for name in task.dev_files]


def submission_files(task: GlueTask, data_dir: str | Path) -> list[tuple[Path, str]]:
    """(test file, submission name) pairs: `SST-2.tsv`, `MNLI-m.tsv`, ..."""
    d = task_dir(data_dir, task)
    names = task.submission_names or (task.name,)
    return [(d / f"{f}.tsv", n) for f, n in zip(task.submission_files, names)]


def subset(items: list, max_examples: int | None, seed: int) -> list:
    """A seeded random subset of `items` in their original order; the task stages and `augment` call this with
    the same seed to pick the same rows."""
    if max_examples is None or max_examples >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), max_examples, replace=False))
    return [items[i] for i in keep]
