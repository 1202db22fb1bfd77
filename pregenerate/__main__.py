"""python -m pregenerate ... == xcompress pregenerate ..."""
import sys

from stagekit.cli import run_as_program

run_as_program(["pregenerate", *sys.argv[1:]])
