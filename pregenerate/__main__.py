"""python -m pregenerate ... == xcompress pregenerate ..."""
import sys

from compress.cli import run_as_program

run_as_program(["pregenerate", *sys.argv[1:]])
