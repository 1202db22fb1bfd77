"""Dense students: a smaller model of the teacher's own family, initialised from the teacher (DistilBERT's and
TextBrewer's route, and the baseline every TD student has to beat at its size).

    xcompress dense-student --teacher_model runs/teacher-sst2 --layer_stride 2 --output_dir runs/dense-3of6
    xcompress dense-student --teacher_model runs/teacher-sst2 --keep_layers 0 --output_dir runs/dense-1layer
    xcompress dense-student --teacher_model runs/teacher-sst2 --keep_layers 0,1 --intermediate_size 192 \
        --task_name SST-2 --data_dir data/glue_data --output_dir runs/dense-2-narrow
    xcompress task-distill --teacher_model runs/teacher-sst2 --student_model runs/dense-3of6 --stage both ...

Depth: `--layer_stride k` keeps teacher layers k, 2k, ... (1-based), the layers TinyBERT's uniform map distils each
student layer from; `--keep_layers` takes a 0-based list. Width: `--intermediate_size` FFN neurons and
`--num_attention_heads` heads in every layer, the most important kept, ranked as structured pruning ranks them
(taylor on the task's training data with --task_name and --data_dir, else l1). Embeddings, pooler and head are the
teacher's. The config records the teacher layer each student layer came from (`xcompress_teacher_layers`), which
task-distill's layer map follows. Every family keeps fewer layers and a narrower FFN in its own config; fewer heads
need per-layer sizes, stored as the family's pruned format (`pruned_roberta`, ...).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import nn

from corpora.glue import dev_files, get_task, task_dir, train_file
from modeling.families import family_of
from modeling.formats import CLASSIFIER, DENSE, ENCODER, TEACHER_LAYERS_KEY, is_task_model
from modeling.loading import inspect_model, load_model, load_tokenizer
from modeling.params import encoder_params
from stagekit.atomic import atomic_output_dir, check_output_dir
from stagekit.errors import InputError
from stagekit.options import at_least, option
from stagekit.outputs import finish_stage
from tasks.classifier import evaluate_features, load_classifier
from tasks.features import load_features

from .importance import unit_importance
from .prune_structured import (current_sizes, head_ffn_reducer, keep_indices, prune_heads_and_ffn, retarget_config_,
                               slice_layers_)


@dataclasses.dataclass(kw_only=True)
class DenseStudentConfig:
    teacher_model: str = option(help="a dense model of any family (a task model gives a task student)")
    output_dir: str = option()
    keep_layers: str | None = option(None, help="teacher layers kept, 0-based, e.g. 0,2,4")
    layer_stride: int | None = option(None, help="keep teacher layers k, 2k, ... (1-based; TinyBERT's uniform map)",
                                      check=at_least(1))
    num_attention_heads: int | None = option(None, help="heads kept in every layer (most important first)",
                                             check=at_least(1))
    intermediate_size: int | None = option(None, help="FFN neurons kept in every layer (most important first)",
                                           check=at_least(1))
    importance: str | None = option(None, choices=["taylor", "l1"],
                                    help="how heads and neurons are ranked (default: taylor with --task_name, else l1)")
    importance_examples: int = option(512, help="training examples the taylor scores use", check=at_least(1))
    task_name: str | None = option(None, help="with --data_dir: taylor importance, and the student's dev score")
    data_dir: str | None = option(None)
    max_seq_length: int = option(128, check=at_least(8))
    eval_batch_size: int = option(128, check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = DenseStudentConfig


def kept_layers(cfg: DenseStudentConfig, depth: int) -> list[int]:
    """0-based teacher layers the student keeps, checked against the teacher's depth."""
    if cfg.keep_layers is not None and cfg.layer_stride is not None:
        raise InputError("--keep_layers and --layer_stride exclude each other")
    if cfg.layer_stride is not None:
        if cfg.layer_stride > depth:
            raise InputError(f"--layer_stride {cfg.layer_stride}: the teacher has {depth} layers")
        return list(range(cfg.layer_stride - 1, depth, cfg.layer_stride))
    if cfg.keep_layers is None:
        return list(range(depth))
    try:
        layers = [int(v) for v in cfg.keep_layers.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--keep_layers {cfg.keep_layers}: expected 0-based layer numbers separated by commas") from None
    if not layers or any(not 0 <= i < depth for i in layers) or len(set(layers)) != len(layers):
        raise InputError(f"--keep_layers {cfg.keep_layers}: each teacher layer at most once, from 0 to {depth - 1} "
                         f"(the teacher has {depth})")
    return layers


def keep_layers_(model: nn.Module, layers: list[int]) -> None:
    """Keep only `layers` of a model of any family, in that order, in place (config included)."""
    family = family_of(model)
    stack = family.layer_list(model)
    parent, _, name = family.layers.rpartition(".")
    family.encoder(model).get_submodule(parent).register_module(name, nn.ModuleList([stack[i] for i in layers]))
    model.config.update(family.size_updates(num_layers=len(layers)))


def run(cfg: DenseStudentConfig) -> dict[str, Any]:
    started = time.perf_counter()
    teacher_dir, raw, _ = inspect_model(cfg.teacher_model, "--teacher_model", kinds=(DENSE,))
    family = family_of(raw, f"--teacher_model {cfg.teacher_model}")
    layers = kept_layers(cfg, family.size(raw, "num_layers"))
    heads, ffn = family.size(raw, "num_heads"), family.size(raw, "intermediate_size")
    if cfg.num_attention_heads is not None:
        if cfg.num_attention_heads > heads:
            raise InputError(f"--num_attention_heads {cfg.num_attention_heads}: the teacher has {heads} per layer")
    if cfg.intermediate_size is not None and cfg.intermediate_size > ffn:
        raise InputError(f"--intermediate_size {cfg.intermediate_size}: the teacher has {ffn} per layer")
    if (cfg.task_name is None) != (cfg.data_dir is None):
        raise InputError("--task_name and --data_dir go together")
    importance = cfg.importance or ("taylor" if cfg.task_name else "l1")
    if importance == "taylor" and cfg.task_name is None:
        raise InputError("--importance taylor: needs --task_name and --data_dir (training data to score on)")
    task = get_task(cfg.task_name) if cfg.task_name else None
    if task is not None:
        task_dir(cfg.data_dir, task)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)

    if task is not None:
        model, _ = load_classifier(cfg.teacher_model, "--teacher_model", task, need_task_model=True, need_fp32=True)
    else:
        model, _ = load_model(cfg.teacher_model, "--teacher_model", CLASSIFIER if is_task_model(raw) else ENCODER,
                              need_fp32=True)
    teacher_params = encoder_params(model)
    student = copy.deepcopy(model)
    keep_layers_(student, layers)
    narrow_heads = cfg.num_attention_heads is not None and cfg.num_attention_heads < heads
    narrow_ffn = cfg.intermediate_size is not None and cfg.intermediate_size < ffn
    ranked = None
    if narrow_heads or narrow_ffn:
        tokenizer = load_tokenizer(teacher_dir, "--teacher_model")
        ranked = _narrow(student, cfg, importance, task, tokenizer, heads, ffn)
    student.config.update({TEACHER_LAYERS_KEY: layers})
    dev = None
    if task is not None:
        features = load_features(task, dev_files(task, cfg.data_dir)[0], load_tokenizer(teacher_dir, "--teacher_model"),
                                 cfg.max_seq_length)
        dev = evaluate_features(student, task, features, cfg.eval_batch_size)
    kept_heads, kept_ffn = current_sizes(student)
    summary = {"teacher_model": str(teacher_dir), "family": family.name, "model_type": student.config.model_type,
               "teacher_layers": layers, "heads_per_layer": kept_heads, "ffn_per_layer": kept_ffn,
               "importance": ranked,
               "teacher_encoder_params": teacher_params, "encoder_params": encoder_params(student),
               "dev_before_distillation": dev, "seconds": time.perf_counter() - started}
    with atomic_output_dir(out) as tmp:
        student.save_pretrained(tmp)
        finish_stage(tmp, "dense-student", cfg, summary, tokenizer_from=teacher_dir)
    return summary


def _narrow(student: nn.Module, cfg: DenseStudentConfig, importance: str, task, tokenizer, heads: int,
            ffn: int) -> str:
    """Keep the most important heads and FFN neurons of every layer; the student's config follows."""
    batches = None
    if importance == "taylor":
        features = load_features(task, train_file(task, cfg.data_dir), tokenizer, cfg.max_seq_length,
                                 cfg.importance_examples, cfg.seed)
        order = torch.arange(len(features))
        batches = [features.batch(order[i:i + 32]) for i in range(0, len(features), 32)]
    scores = unit_importance(student, head_ffn_reducer(student), importance, batches)
    depth = len(family_of(student).layer_list(student))
    keep_heads = keep_indices([scores[f"heads.{i}"] for i in range(depth)], [cfg.num_attention_heads or heads] * depth)
    keep_ffn = keep_indices([scores[f"ffn.{i}"] for i in range(depth)], [cfg.intermediate_size or ffn] * depth)
    if cfg.num_attention_heads is not None and cfg.num_attention_heads < heads:
        prune_heads_and_ffn(student, keep_heads, keep_ffn)
    else:
        slice_layers_(student, keep_heads, keep_ffn)
        config = copy.deepcopy(student.config)
        config.update(family_of(student).size_updates(intermediate_size=len(keep_ffn[0])))
        retarget_config_(student, config)
    return importance


def report(summary: dict[str, Any]) -> str:
    dev = summary["dev_before_distillation"]
    return (f"dense student of {summary['family']}: teacher layers {summary['teacher_layers']}, "
            f"{summary['encoder_params']:,} encoder params (teacher {summary['teacher_encoder_params']:,})"
            + (f", dev {dev['score']:.4f} before distillation" if dev else ""))
