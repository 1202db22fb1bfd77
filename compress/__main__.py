"""python -m compress <stage> ... == xcompress <stage> ..."""
import sys

from compress.cli import run_as_program

run_as_program()
