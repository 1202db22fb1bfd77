"""The `xcompress` command line: one subcommand per stage (stagekit/stages.py), its flags from the stage's config.

    xcompress decompose --teacher_model all-MiniLM-L6-v2 --rank_layer 36 --rank_dim 192 --output_dir runs/td
    xcompress demo

Every `--flag_name` also answers to `--flag-name`, and to any unambiguous prefix (`--output` for `--output_dir`),
as TinyBERT's scripts do. Bad input prints one line on stderr and exits with 2; a failed stage or lost peer, or an
operating-system error (no space, permission denied), one line and exit status 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .allocator import reexec_with_tcmalloc
from .errors import InputError, PeerFailure, StageFailure, os_error_line
from .options import add_config_arguments, config_from_namespace
from .stages import STAGES


class FlagParser(argparse.ArgumentParser):
    """argparse whose flags are registered once, with underscores; a dashed spelling is rewritten to the underscore
    one before parsing, so prefix abbreviations still match one flag. Errors are one line."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([_underscored(a) for a in args], namespace)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _underscored(arg: str) -> str:
    if not arg.startswith("--") or arg == "--" or " " in arg:  # a value that merely starts with dashes stays
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


def stage_module(stage: str) -> Any:
    return importlib.import_module(STAGES[stage].module)


def build_parser(stage: str | None = None) -> FlagParser:
    """The CLI parser; with `stage`, only that stage's module is imported to define its flags."""
    parser = FlagParser(prog="xcompress", description="Extreme compression of BERT-family encoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=FlagParser)
    for name, facts in STAGES.items():
        p = sub.add_parser(name, help=facts.help)
        if name == stage:
            config = stage_module(name).CONFIG
            add_config_arguments(p, config)
            if "quiet" not in {f.name for f in dataclasses.fields(config)}:
                # every stage takes --quiet: one without a flag of its own silences the progress bars it shows
                p.add_argument("--quiet", action="store_true", help="no progress bars")
            # `python -m torch.distributed.launch` passes --local-rank to every process; the shim reads
            # LOCAL_RANK from the environment, which that launcher sets too.
            p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = next((a for a in argv if a in STAGES), None)
    args = build_parser(stage).parse_args(argv)
    module = stage_module(args.command)
    # SIGTERM (a scheduler's time limit, a launcher stopping its workers, `kill`) unwinds like an exception, so the
    # stages' cleanup runs: no partial output is left under the user's name.
    if threading.current_thread() is threading.main_thread():  # only the main thread may set a handler
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    cfg = None
    if getattr(args, "quiet", False):
        os.environ["TQDM_DISABLE"] = "1"  # tqdm reads it for every bar it makes, transformers' weight loading included
    if "quiet" not in {f.name for f in dataclasses.fields(module.CONFIG)}:
        vars(args).pop("quiet", None)
    try:
        cfg = config_from_namespace(module.CONFIG, args)
        summary = module.run(cfg)
    except InputError as e:
        print(f"xcompress {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (PeerFailure, StageFailure) as e:
        print(f"xcompress {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if (line := os_error_line(e, getattr(cfg, "output_dir", None))) is None:
            raise
        print(f"xcompress {args.command}: error: {line}", file=sys.stderr)
        return 1
    if summary.get("is_main", True):  # under a launcher, one report (rank 0's), not one per rank
        print(module.report(summary))
    return 0


def _exit_on_sigterm(signum, frame):
    sys.exit(128 + signum)


def run_as_program(argv: Sequence[str] | None = None) -> None:
    """The process entry point (console script, `python -m`): main, under tcmalloc for training stages."""
    argv = list(sys.argv[1:] if argv is None else argv)
    reexec_with_tcmalloc(argv)
    sys.exit(main(argv))


if __name__ == "__main__":
    run_as_program()
