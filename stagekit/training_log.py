"""What a training stage writes about its progress: `log.jsonl` (one JSON record per logged step, flushed so a
killed run keeps it), TensorBoard event files in `tensorboard/` beside it when TensorBoard is installed (what users
of these tools read: `tensorboard --logdir <output_dir>/tensorboard`), and `training_stats.csv` at the end.

Scalars in TensorBoard are named `<phase>/<field>` (`task_distill`'s phases: `intermediate/loss`,
`prediction/val_loss`, `prediction/dev/acc`); a record without a phase uses the field's name alone.
"""
from __future__ import annotations

import csv
import json
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
# Fields of a record that are coordinates, not curves.
_NOT_SCALARS = ("step", "phase", "epoch")


def tensorboard_available() -> bool:
    """torch writes event files only with the tensorboard package installed (an optional dependency)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class TrainingLog:
    """`log.jsonl` in `directory`, and its scalars as TensorBoard events when TensorBoard is installed."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "log.jsonl"
        self.file = open(self.path, "a")
        self.events = None
        if tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.events = SummaryWriter(str(Path(directory) / TENSORBOARD_DIR))

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.events is not None and "step" in record:
            prefix = f"{record['phase']}/" if record.get("phase") else ""
            for name, value in _scalars(record):
                self.events.add_scalar(prefix + name, value, record["step"])
            self.events.flush()

    def close(self) -> None:
        self.file.close()
        if self.events is not None:
            self.events.close()


def _scalars(record: dict[str, Any], within: str = "") -> Iterable[tuple[str, float]]:
    for name, value in record.items():
        if name in _NOT_SCALARS:
            continue
        if isinstance(value, dict):
            yield from _scalars(value, f"{within}{name}/")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield f"{within}{name}", float(value)


def write_stats(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """training_stats.csv: one row per validation, the given columns, blank where a row lacks a value."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if row.get(c) is None else _cell(row[c]) for c in columns])


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
