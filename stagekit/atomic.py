"""Atomic output directories: a stage writes into a temporary sibling and renames it into place.

An interrupted stage therefore leaves either the complete previous state or the complete new output,
never a half-written directory under the user's name.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_dir_beside(path: Path) -> Path:
    """A fresh hidden directory next to `path` (same filesystem, so a rename can publish it), with the
    permissions an ordinary mkdir would give rather than mkdtemp's private 0700."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def check_output_dir(path: str | os.PathLike, overwrite: bool, flag: str = "--output_dir") -> Path:
    """Refuse an existing non-empty directory unless overwriting was asked for."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{flag} {out}: directory exists and is not empty (pass --overwrite_output_dir to replace it)")
    return out


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` in one rename."""
    out = Path(path)
    tmp = temp_dir_beside(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)
