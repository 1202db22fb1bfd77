"""One loader for every stage: a model directory (or the embedded alias) in a role, checked strictly.

    model, model_dir = load_model(cfg.teacher_model, "--teacher_model", ENCODER, kinds=(DENSE,))

Every refusal is an InputError naming the flag: an unknown or unwanted architecture, unreadable weights, weights
missing or of the wrong shape. A pooler may be absent; a head may be drawn afresh only where the caller says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagekit.errors import InputError
from stagekit.model_paths import read_config_dict, resolve_model_dir

from .checks import weight_problems
from .families import STAGE_FAMILIES, family_named, require_family
from .formats import CLASSIFIER, DENSE, ENCODER, GENERATOR, MASKED_LM, SEQ2SEQ, Architecture, architecture_of
from .int8 import load_quantized, quantization_of
from .sparse_storage import SPARSE_WEIGHTS, load_sparse

# Keys a role may lack: an encoder its pooler (all-MiniLM-L6-v2 ships none), and, where the caller draws a new head
# from its seed, that head.
TOLERATED = {ENCODER: ("pooler.",), CLASSIFIER: (), MASKED_LM: (), GENERATOR: ()}
NEW_HEAD_PREFIXES = {ENCODER: (), CLASSIFIER: ("classifier.", "pooler.", "bert.pooler."), MASKED_LM: ("cls.",),
                     GENERATOR: ()}
FP32_ONLY = "this stage needs the fp32 model it came from"


def inspect_model(name_or_path: str, flag: str, kinds: tuple[str, ...] | None = None, stage: str | None = None
                  ) -> tuple[Path, dict[str, Any], Architecture]:
    """Directory, raw config.json and architecture of a model flag, checked before any weight is read; with
    `stage`, a dense model must be of a family that stage takes (families.STAGE_FAMILIES)."""
    model_dir = resolve_model_dir(name_or_path, flag)
    config = read_config_dict(model_dir, flag)
    arch = architecture_of(config, f"{flag} {name_or_path}", kinds)
    if stage is not None and arch.kind == DENSE:
        require_family(config, f"{flag} {name_or_path}", stage)
    if stage is not None and arch.kind == SEQ2SEQ and arch.model_type not in STAGE_FAMILIES[stage]:
        raise InputError(f"{flag} {name_or_path}: a {arch.model_type} text-to-text model; {stage} takes "
                         f"{', '.join(STAGE_FAMILIES[stage])} models")
    return model_dir, config, arch


def load_tokenizer(model_dir: Path, flag: str):
    """The fast tokenizer saved with a model, whatever its kind (WordPiece, byte-level BPE, SentencePiece), through
    AutoTokenizer; a directory with vocab.txt alone is read as WordPiece."""
    from transformers import AutoTokenizer, BertTokenizerFast

    if (model_dir / "tokenizer.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(model_dir))
        except (OSError, ValueError) as e:
            raise InputError(f"{flag} {model_dir}: cannot read its tokenizer ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0]})") from e
    if not (model_dir / "vocab.txt").is_file():
        raise InputError(f"{flag} {model_dir}: no tokenizer (tokenizer.json or vocab.txt) beside the weights")
    return BertTokenizerFast.from_pretrained(str(model_dir))


def load_model(name_or_path: str, flag: str, role: str = ENCODER, *, kinds: tuple[str, ...] | None = None,
               config_updates: dict[str, Any] | None = None, new_head: bool = False,
               need_fp32: bool = False, stage: str | None = None) -> tuple[nn.Module, Path]:
    """The model of a flag's value in `role` (ENCODER, CLASSIFIER, MASKED_LM), in eval mode, and its directory.
    `need_fp32`: refuse an int8 or bf16 model (the training stages: AdamW on bf16 weights loses most updates, and
    int8 modules have nothing to train)."""
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its load report would list a new head as a problem; it is checked here
    where = f"{flag} {name_or_path}"
    model_dir, raw, arch = inspect_model(name_or_path, flag, kinds, stage)
    cls = arch.model_class(role, where)
    if not any((model_dir / name).is_file() for name in ("model.safetensors", "pytorch_model.bin", SPARSE_WEIGHTS)):
        raise InputError(f"{where}: no model.safetensors in {model_dir}")
    if need_fp32 and quantization_of(raw):
        raise InputError(f"{where}: stored in int8; {FP32_ONLY}")
    try:
        if quantization_of(raw):
            return load_quantized(model_dir, cls), model_dir
        config = cls.config_class.from_pretrained(str(model_dir))
        config.update(config_updates or {})
        if (model_dir / SPARSE_WEIGHTS).is_file() and not (model_dir / "model.safetensors").is_file():
            model, info = _sparse_model(cls, config, model_dir / SPARSE_WEIGHTS)
        else:
            model, info = cls.from_pretrained(str(model_dir), config=config, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise InputError(f"{where}: cannot load weights ({e.__class__.__name__}: {str(e).splitlines()[0]})") from e
    family = family_named(raw.get("model_type"))
    fresh = family.head if family is not None else NEW_HEAD_PREFIXES[role]
    tolerated = TOLERATED[role] + (fresh if new_head else ())
    if (problem := weight_problems(info, tolerated)) is not None:
        raise InputError(f"{where}: weights missing or mismatched for {cls.__name__} ({problem})")
    if need_fp32 and (dtype := next(model.parameters()).dtype) != torch.float32:
        raise InputError(f"{where}: stored in {str(dtype).removeprefix('torch.')}; {FP32_ONLY}")
    return model.eval(), model_dir


def _sparse_model(cls, config, path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A model of a compactly stored sparse state dict, with the load report from_pretrained would give."""
    model = cls(config)
    result = model.load_state_dict(load_sparse(path), strict=False)
    return model, {"missing_keys": result.missing_keys, "unexpected_keys": result.unexpected_keys,
                   "mismatched_keys": []}
