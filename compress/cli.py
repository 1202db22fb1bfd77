"""The `xcompress` command line: one subcommand per stage.

    xcompress decompose --teacher_model all-MiniLM-L6-v2 --rank_layer 36 --rank_dim 192 --output_dir runs/td
    xcompress demo

Every `--flag_name` also answers to `--flag-name`. Bad input prints one line on stderr and exits with 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .allocator import reexec_with_tcmalloc
from .errors import InputError, PeerFailure, StageFailure

class FlagParser(argparse.ArgumentParser):
    """argparse with TinyBERT-style underscore flags that also accept dashes, and one-line errors."""

    def add_argument(self, *names, **kwargs):
        aliases = [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        return super().add_argument(*names, *aliases, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


# Stage name -> (module with add_arguments / CONFIG / run / report, one-line help). Only the chosen
# stage's module is imported: pregenerate must not pay for torch, which the model stages import.
STAGES = {
    "pregenerate": ("pregenerate.stage", "Wikipedia dump or text -> masked-LM training epochs"),
    "decompose": ("decompose.stage", "dense BERT teacher -> shared-core Tucker (TD) student"),
    "general-distill": ("distill.general", "layer-wise distillation of a TD student on pre-generated data"),
    "finetune": ("distill.finetune", "fine-tune a teacher (or any BERT/TD model) on a GLUE task"),
    "fit-mlm-head": ("distill.mlm_head", "fit a masked-LM head to a frozen encoder (for augment)"),
    "augment": ("distill.augment", "TinyBERT data augmentation of a GLUE task's training set"),
    "task-distill": ("distill.task", "distil a fine-tuned teacher into a TD student on a GLUE task"),
    "evaluate": ("distill.evaluate", "GLUE dev metrics (and test submissions) of a model"),
    "prune": ("compress.prune", "structured, TD-rank or unstructured pruning of a task model, with recovery"),
    "quantize": ("compress.quantize", "int8 dynamic quantization (PyTorch and ONNX Runtime) of a task model"),
    "report": ("compress.report", "report.md and plots: size, latency and score of a set of task models"),
    "pipeline": ("compress.pipeline", "run the stages of a pipeline YAML in order, resuming complete ones"),
    "submit": ("compress.submit", "submit a stage, or a pipeline as a chain of jobs, to SLURM (sbatch)"),
    "demo": ("compress.demo", "the main job on the embedded defaults"),
}


def build_parser(stage: str | None = None) -> FlagParser:
    """The CLI parser; with `stage`, only that stage's module is imported to define its flags."""
    parser = FlagParser(prog="xcompress", description="Extreme compression of BERT-family encoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=FlagParser)
    for name, (module_name, help_line) in STAGES.items():
        p = sub.add_parser(name, help=help_line)
        if name == stage:
            importlib.import_module(module_name).add_arguments(p)
            # `python -m torch.distributed.launch` passes --local-rank to every process; the shim reads
            # LOCAL_RANK from the environment, which that launcher sets too.
            p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    return parser


def config_from_args(config_cls: type, args: argparse.Namespace) -> Any:
    """A stage's config dataclass from the parsed flags: every field is the flag of the same name."""
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = next((a for a in argv if a in STAGES), None)
    args = build_parser(stage).parse_args(argv)
    module = importlib.import_module(STAGES[args.command][0])
    try:
        summary = module.run(config_from_args(module.CONFIG, args))
    except InputError as e:
        print(f"xcompress {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (PeerFailure, StageFailure) as e:
        print(f"xcompress {args.command}: error: {e}", file=sys.stderr)
        return 1
    if summary.get("is_main", True):  # under a launcher, one report (rank 0's), not one per rank
        print(module.report(summary))
    return 0


def run_as_program(argv: Sequence[str] | None = None) -> None:
    """The process entry point (console script, `python -m`): main, under tcmalloc for training stages."""
    argv = list(sys.argv[1:] if argv is None else argv)
    reexec_with_tcmalloc(argv)
    sys.exit(main(argv))


if __name__ == "__main__":
    run_as_program()
