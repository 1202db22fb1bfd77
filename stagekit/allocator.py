"""Training stages run under tcmalloc when it is installed.

A CPU training step allocates and frees the same gigabyte or so of activations every step. glibc's malloc
either gives those blocks back to the kernel (and every step pays the page faults again) or keeps them in a
heap that fragments: in general distillation of the 1/7 MiniLM student its peak RSS grew from 2.1 to 2.6 GB
over four steps. tcmalloc keeps freed blocks by size and hands the same ones out again: peak memory stays at
what the step needs and each step is about 15% faster (benchmarks/general_distill.py). As
`python -m torch.backends.xeon.run_cpu` does, the process re-executes itself once with the library in
LD_PRELOAD; the pid, arguments and environment of launchers (mpirun, torchrun, srun) are kept.
XCOMPRESS_MALLOC=system keeps the system allocator.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .stages import STAGES

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_tcmalloc() -> Path | None:
    for directory in LIBRARY_DIRS:
        for name in LIBRARIES:
            if (Path(directory) / name).is_file():
                return Path(directory) / name
    return None


def in_use() -> str:
    """`tcmalloc` if this process has it loaded, else `system`."""
    try:
        return "tcmalloc" if "tcmalloc" in Path("/proc/self/maps").read_text() else "system"
    except OSError:
        return "system"


def reexec_with_tcmalloc(argv: Sequence[str]) -> None:
    """For a training stage, replace this process by the same command with tcmalloc preloaded (once)."""
    stage = next((a for a in argv if not a.startswith("-")), None)
    if stage not in STAGES or not STAGES[stage].trains or os.environ.get("XCOMPRESS_MALLOC", "tcmalloc") != "tcmalloc":
        return
    preload = os.environ.get("LD_PRELOAD", "")
    library = find_tcmalloc()
    if library is None or "tcmalloc" in preload:
        return
    env = os.environ | {"LD_PRELOAD": ":".join(p for p in (str(library), preload) if p)}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "stagekit", *argv], env)
