"""What every stage leaves beside its output, written once: the resolved config (`<stage>_config.json`), the
summary (`<stage>_summary.json`) and, for a model directory, the tokenizer files of the model it came from."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from .atomic import write_json
from .model_paths import TOKENIZER_FILES


def tokenizer_files(model_dir: Path) -> list[Path]:
    """The tokenizer files a model directory holds (WordPiece, byte-level BPE or SentencePiece)."""
    return [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]


def copy_tokenizer(source: Path, target: Path) -> None:
    for f in tokenizer_files(source):
        shutil.copy2(f, target / f.name)


def finish_stage(directory: Path, stage: str, cfg: Any, summary: dict[str, Any],
                 tokenizer_from: Path | None = None) -> None:
    """Write the stage's config (its dataclass, or the resolved dict) and summary into `directory`, and the tokenizer
    files of `tokenizer_from`."""
    if tokenizer_from is not None:
        copy_tokenizer(tokenizer_from, directory)
    name = stage.replace("-", "_")
    write_json(directory / f"{name}_config.json", cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg))
    write_json(directory / f"{name}_summary.json", summary)
