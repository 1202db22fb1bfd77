"""python -m distill <stage> ... == xcompress <stage> ..."""
import sys

from compress.cli import main

sys.exit(main())
