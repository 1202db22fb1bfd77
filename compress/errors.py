"""The one exception type for bad user input: the CLI turns it into one stderr line and exit status 2."""


class InputError(Exception):
    """Raised for anything the user handed in that cannot work (a file, a flag, a shape).

    The message names the file or flag and what is wrong, in one line.
    """


class PeerFailure(Exception):
    """A distributed run lost one of its ranks; the CLI prints one line and exits with status 1."""


class StageFailure(Exception):
    """A pipeline stage exited with an error (its own message is above); the CLI prints one line, exits 1."""
