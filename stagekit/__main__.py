"""`python -m stagekit <stage> ...`: the same as `xcompress <stage> ...`."""
from stagekit.cli import run_as_program

run_as_program()
