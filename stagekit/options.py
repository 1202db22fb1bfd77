"""A stage's options declared once, on its config dataclass: the flag, its default, its help and its value check.

    @dataclasses.dataclass
    class DecomposeConfig:
        teacher_model: str = option(help="dense BERT directory or the alias all-MiniLM-L6-v2")
        hooi_sweeps: int = option(1, help="HOOI sweeps after the fast initialisation", check=at_least(0))

`add_config_arguments` makes the argparse flags (`--teacher_model`, required because it has no default),
`check_values` applies the checks. The CLI, the pipeline YAML checker and `xcompress submit` all build a stage's
config through them, so a flag, its default and its check exist in one place.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from .errors import InputError

_HELP, _CHOICES, _CHECK, _METAVAR, _POSITIONAL = "help", "choices", "check", "metavar", "positional"


@dataclasses.dataclass(frozen=True)
class Check:
    """A test of a flag's value and what a valid value is, for the error line."""

    test: Callable[[Any], bool]
    what: str


def at_least(n: float) -> Check:
    return Check(lambda v: v >= n, f"must be >= {n}")


def above(n: float) -> Check:
    return Check(lambda v: v > n, f"must be > {n}")


def between(low: float, high: float) -> Check:
    """low <= v < high."""
    return Check(lambda v: low <= v < high, f"must be in [{low}, {high})")


def option(default: Any = dataclasses.MISSING, *, help: str | None = None, choices: Sequence[str] | None = None,
           check: Check | None = None, metavar: str | None = None, positional: bool | str = False) -> Any:
    """A config field that is also a command-line flag. No default: a required flag. `positional`: an operand
    (`"remainder"`: every later argument, verbatim)."""
    metadata = {_HELP: help, _CHOICES: tuple(choices) if choices is not None else None, _CHECK: check,
                _METAVAR: metavar, _POSITIONAL: positional}
    return dataclasses.field(default=default, metadata=metadata)


def value_type(annotation: Any) -> type:
    """int for `int` and for `int | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per field of `config_cls` (named as the field), typed, defaulted and documented by it."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        kind = value_type(hints[f.name])
        kwargs: dict[str, Any] = {"help": meta.get(_HELP)}
        if meta.get(_CHOICES):
            kwargs["choices"] = meta[_CHOICES]
        if meta.get(_METAVAR):
            kwargs["metavar"] = meta[_METAVAR]
        if meta.get(_POSITIONAL):
            if meta[_POSITIONAL] == "remainder":
                kwargs["nargs"] = argparse.REMAINDER
            parser.add_argument(f.name, **kwargs)
            continue
        if kind is bool:
            parser.add_argument(f"--{f.name}", action="store_true", **kwargs)
            continue
        if kind is list:  # a list field takes one or more values after its flag
            kwargs["nargs"] = "+"
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        parser.add_argument(f"--{f.name}", type=kind if kind in (int, float) else str, **kwargs)


def check_values(cfg: Any) -> None:
    """Apply every field's check; the first failure is one InputError naming the flag."""
    for f in dataclasses.fields(cfg):
        check, value = f.metadata.get(_CHECK), getattr(cfg, f.name)
        if check is not None and value is not None and not check.test(value):
            raise InputError(f"--{f.name} {value}: {check.what}")


def config_from_namespace(config_cls: type, args: argparse.Namespace) -> Any:
    """A stage's config from parsed flags, its values checked."""
    cfg = config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
    check_values(cfg)
    return cfg
