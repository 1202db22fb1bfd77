"""The teacher's WordPiece vocabulary and fast (Rust) tokenizer, without importing torch or transformers."""
from __future__ import annotations

import hashlib
from pathlib import Path

from stagekit.errors import InputError
from stagekit.model_paths import resolve_model_dir


def vocab_file(bert_model: str) -> Path:
    """The vocab.txt of a model directory or alias; a model without one is refused."""
    model_dir = resolve_model_dir(bert_model, "--bert_model")
    vocab = model_dir / "vocab.txt"
    if not vocab.is_file():
        raise InputError(f"--bert_model {bert_model}: no vocab.txt in {model_dir} (a WordPiece vocabulary is needed)")
    return vocab


def read_vocab(vocab: Path) -> list[str]:
    """Tokens by id; a file that is not a WordPiece vocabulary is refused."""
    try:
        tokens = vocab.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--bert_model {vocab}: cannot read the vocabulary ({e})") from e
    missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in tokens]
    if missing:
        raise InputError(f"--bert_model {vocab}: vocabulary lacks {', '.join(missing)}")
    return tokens


def vocab_digest(vocab: Path) -> str:
    return hashlib.sha256(vocab.read_bytes()).hexdigest()[:16]


def wordpiece_tokenizer(vocab: Path, lowercase: bool):
    """BERT's basic + WordPiece tokenization (the teacher's fast tokenizer), special tokens not added."""
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(str(vocab), lowercase=lowercase)
