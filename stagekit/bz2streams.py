"""bz2 files made of several streams (Wikimedia's multistream dumps): where their streams start.

Used by pregenerate, which reads such a dump by its streams, and by submit, which cuts one into job-array slices.
"""
from __future__ import annotations

import bz2
import re
from pathlib import Path

# A stream header and the magic number of its first block, byte-aligned: how a stream starts.
STREAM_START = re.compile(rb"BZh[1-9]1AY&SY")
_FIRST_STREAM_BYTES = 1 << 18  # Wikimedia's header streams are about a kilobyte


def first_stream_end(path: Path) -> int | None:
    """Where the first bz2 stream of a multistream dump ends (a stream header follows it); None for a file of one
    stream. A multistream dump's first stream holds only its header: one whose first stream runs past
    `_FIRST_STREAM_BYTES` is read as a single stream (without decompressing it twice)."""
    with open(path, "rb") as f:
        decompressor = bz2.BZ2Decompressor()
        while not decompressor.eof:
            block = f.read(1 << 16)
            if not block or f.tell() > _FIRST_STREAM_BYTES:
                return None  # one long stream (or a truncated file: the single-stream reader says so)
            try:
                decompressor.decompress(block)
            except OSError:
                return None  # corrupt: likewise
        end = f.tell() - len(decompressor.unused_data)
        f.seek(end)
        return end if STREAM_START.match(f.read(10)) else None
