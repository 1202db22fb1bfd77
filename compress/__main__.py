"""python -m compress <stage> ... == xcompress <stage> ..."""

from compress.cli import run_as_program

run_as_program()
