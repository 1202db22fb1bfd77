"""The `xcompress` command line: one subcommand per stage.

    xcompress decompose --teacher_model all-MiniLM-L6-v2 --rank_layer 36 --rank_dim 192 --output_dir runs/td
    xcompress demo

Every `--flag_name` also answers to `--flag-name`. Bad input prints one line on stderr and exits with 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Nothing in xcompress may reach a model hub: make transformers fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class FlagParser(argparse.ArgumentParser):
    """argparse with TinyBERT-style underscore flags that also accept dashes, and one-line errors."""

    def add_argument(self, *names, **kwargs):
        aliases = [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        return super().add_argument(*names, *aliases, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _stages():
    """Stage name -> module with add_arguments / config_from_args / run / report."""
    from decompose import stage as decompose_stage

    from . import demo

    return {"decompose": decompose_stage, "demo": demo}


def build_parser() -> FlagParser:
    parser = FlagParser(prog="xcompress", description="Extreme compression of BERT-family encoders.")
    sub = parser.add_subparsers(dest="stage", required=True, parser_class=FlagParser)
    for name, module in _stages().items():
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from decompose.errors import InputError

    args = build_parser().parse_args(argv)
    module = _stages()[args.stage]
    try:
        summary = module.run(module.config_from_args(args))
    except InputError as e:
        print(f"xcompress {args.stage}: error: {e}", file=sys.stderr)
        return 2
    print(module.report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
