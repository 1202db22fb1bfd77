"""python -m compress <stage> ... == xcompress <stage> ..."""

from stagekit.cli import run_as_program

run_as_program()
