"""Atomic output directories: a stage writes into a temporary sibling and renames it into place.

An interrupted stage therefore leaves either the complete previous state or the complete new output,
never a half-written directory under the user's name.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
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
    publish_dir(tmp, out)


def publish_dir(tmp: Path, out: Path) -> None:
    """Put the complete directory `tmp` at `out`, replacing what was there.

    Linux swaps the two in one step (renameat2 with RENAME_EXCHANGE), so `out` always holds a complete output.
    Where the file system cannot, two renames: between them the old output waits under a hidden name beside
    `out`, so a process that dies there loses nothing."""
    if out.exists() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old output
        return
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the C library or the file system cannot (then nothing moved)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def partial_dir(out: Path) -> Path:
    """Where a stage that runs on several ranks builds `out` before publishing it: one hidden name beside it that
    every rank derives alike. A run that was killed leaves it behind, and the same command's next run replaces it."""
    return out.parent / f".{out.name}.partial"


def fresh_dir(path: Path) -> Path:
    """An empty directory at `path`, whatever an earlier, interrupted run left there."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)
