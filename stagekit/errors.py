"""The one exception type for bad user input: the CLI turns it into one stderr line and exit status 2."""


class InputError(Exception):
    """Raised for anything the user handed in that cannot work (a file, a flag, a shape).

    The message names the file or flag and what is wrong, in one line.
    """


class PeerFailure(Exception):
    """A distributed run lost one of its ranks; the CLI prints one line and exits with status 1."""


class StageFailure(Exception):
    """A pipeline stage exited with an error (its own message is above); the CLI prints one line, exits 1."""


def os_error_line(e: BaseException, output: str | None) -> str | None:
    """One line for an operating-system error (no space, permission denied, read-only file system), naming the path
    and the cause, or None for anything else (a bug: the traceback is wanted). A write to an open file names no
    path: then it is the stage's `output`. safetensors reports the same errors as its own type."""
    if isinstance(e, OSError):
        where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None) or output
        cause = e.strerror or str(e)
        return f"{where}: {cause}" if where else cause
    if type(e).__module__.split(".")[0] == "safetensors":
        return f"{output}: cannot write or read model weights ({str(e).splitlines()[0]})"
    return None
