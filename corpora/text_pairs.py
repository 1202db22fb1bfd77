"""Text-to-text data: a TSV of source and target texts, one pair per row, with a header naming the columns
(`source` and `target`; any other column, such as the shipped corpus's `package`, is kept as the pair's origin).

A text may hold newlines and tabs (gettext messages, code): in the file they are escaped as `\\n` and `\\t`, a
backslash as `\\\\`, the escaping `escape` writes and `unescape` undoes exactly. No CSV quoting: quotes are text.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from stagekit.errors import InputError

from .glue import read_rows

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_ESCAPED = re.compile(r"\\[\\ntr]")


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


def unescape(field: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(0)], field)


@dataclasses.dataclass(frozen=True)
class TextPair:
    source: str
    target: str
    origin: str = ""  # where the pair comes from (the shipped corpus: its Debian package)


def read_pairs(path: Path, flag: str) -> list[TextPair]:
    """The pairs of one TSV file; a file without `source` and `target` columns, or with a short row, is refused
    naming `flag` and the file."""
    rows = read_rows(path, flag)
    if not rows or "source" not in rows[0] or "target" not in rows[0]:
        raise InputError(f"{flag} {path}: a text-to-text TSV needs a header with 'source' and 'target' columns")
    header = rows[0]
    s, t = header.index("source"), header.index("target")
    o = header.index("package") if "package" in header else None
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise InputError(f"{flag} {path}: line {line} has {len(row)} fields, the header {len(header)}")
        pairs.append(TextPair(unescape(row[s]), unescape(row[t]), row[o] if o is not None else ""))
    if not pairs:
        raise InputError(f"{flag} {path}: no pairs")
    return pairs
