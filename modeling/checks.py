"""The strict check on a checkpoint load, written once: transformers only warns about missing, unexpected or
mismatched weights and re-initialises them, which for a compressed model silently yields another network."""
from __future__ import annotations

from typing import Any

# State-dict keys of the network itself (embeddings and encoder) of every family, bare or under a task model's
# encoder attribute (`bert.`, `roberta.`, `distilbert.`, ...). This file is copied beside saved models and imports
# nothing of xcompress.
_BODY = ("embeddings.", "encoder.", "transformer.", "embeddings_project.")


def is_body_key(key: str) -> bool:
    return key.startswith(_BODY) or key.partition(".")[2].startswith(_BODY)
# Everything else: a pooler and the task or masked-LM heads.
HEAD_PREFIXES = ("pooler.", "bert.pooler.", "classifier.", "cls.")


def weight_problems(info: dict[str, Any], tolerated: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a load (`output_loading_info=True`), in a few words, or None: missing keys other than the
    `tolerated` prefixes (a pooler or a head drawn afresh), unexpected keys of the body, mismatched shapes."""
    problems = {
        "missing": [k for k in info["missing_keys"] if not k.startswith(tolerated)],
        "unexpected": [k for k in info["unexpected_keys"] if is_body_key(k)],
        "mismatched": [k for k, *_ in info["mismatched_keys"]],
    }
    parts = [f"{what}: {', '.join(sorted(keys)[:3])}{' ...' if len(keys) > 3 else ''}"
             for what, keys in problems.items() if keys]
    return "; ".join(parts) or None
