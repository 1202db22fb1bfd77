"""python -m decompose ... == xcompress decompose ..."""
import sys

from compress.cli import main

sys.exit(main(["decompose", *sys.argv[1:]]))
