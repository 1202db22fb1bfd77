"""python -m pregenerate ... == xcompress pregenerate ..."""
import sys

from compress.cli import main

sys.exit(main(["pregenerate", *sys.argv[1:]]))
