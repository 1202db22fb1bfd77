"""python -m decompose ... == xcompress decompose ..."""
import sys

from stagekit.cli import run_as_program

run_as_program(["decompose", *sys.argv[1:]])
