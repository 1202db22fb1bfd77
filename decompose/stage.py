"""The decompose stage: dense BERT teacher -> TD student directory.

    xcompress decompose --teacher_model all-MiniLM-L6-v2 --rank_layer 36 --rank_dim 192 \
        --output_dir runs/minilm-td-36-192
    xcompress decompose --teacher_model models/bert-base-uncased --config models/bert-td-72-384/config.json \
        --output_dir runs/bert-td-72-384
    python -m decompose ...   (same flags)

Writes a Hugging Face directory (config.json, model.safetensors, tokenizer files), `decompose_config.json`
(the resolved stage config) and `decompose_summary.json`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from corpora.glue import TASKS
from modeling.families import family_of, layers_of
from modeling.formats import CLASSIFIER, DENSE, ENCODER, TUCKER, architecture_of, encoder_of, is_task_model, label_count
from modeling.loading import inspect_model, load_model, load_tokenizer
from modeling.params import encoder_params
from modeling.stacking import BLOCK_TYPE, OPS, block_layout
from stagekit.atomic import atomic_output_dir, check_output_dir
from stagekit.errors import InputError
from stagekit.model_paths import read_config_dict
from stagekit.options import at_least, check_values, option
from stagekit.outputs import finish_stage

from .blocks import stack_encoder_blocks
from .calibration import block_inputs, hidden_state_errors, hold_out, read_sequences
from .convert import bias_shifts, factorize_teacher, td_model
from .residual import fit_corrections
from .tucker import decompose_fast, relative_errors
from .weighted import output_error, refit, whitened_tucker


@dataclasses.dataclass
class DecomposeConfig:
    """Resolved configuration of one decompose run."""

    teacher_model: str = option(help="dense BERT directory or the alias all-MiniLM-L6-v2")
    output_dir: str = option()
    rank_layer: int | None = option(None, help="l: number of shared cores")
    rank_dim: int | None = option(None, help="d: size of each core and width of U, V")
    ops: str | None = option(None, help="sublayers to factorize (default san_ffn)", choices=sorted(OPS))
    config: str | None = option(
        None,
        help="a TD config.json (e.g. models/bert-td-72-384/config.json) giving the ranks")
    residual_ranks: str | None = option(
        None, help="layers that get their own low-rank correction beside the shared factors, as layer:rank pairs "
                   "(0-based), e.g. 0:32,1:16; every factorized projection of the layer gets one")
    init: str = option(
        "fast",
        help="fast: Gram-based ST-HOSVD (+ --hooi_sweeps); hooi: tensorly Tucker, random init, 100 iters",
        choices=["fast", "hooi"])
    hooi_sweeps: int = option(1, help="HOOI sweeps after the fast initialisation (0: one-shot)", check=at_least(0))
    calibration_data: str | None = option(None, help="fit what the blocks compute on this text, not their weights: "
                                          "pre-generated epochs, a GLUE task directory or a text file")
    calibration_examples: int = option(512, help="sequences the fit reads", check=at_least(1))
    calibration_sweeps: int = option(3, help="rounds of least squares on every block's own inputs (0: whitening only)",
                                     check=at_least(0))
    held_out_examples: int = option(128, help="sequences, never fitted on, that measure functional_error",
                                    check=at_least(1))
    functional_data: str | None = option(None, help="text for functional_error (default: held-out calibration "
                                         "text, or without it the shipped SST-2 dev sentences)")
    max_seq_length: int = option(128, help="of the calibration and held-out sequences", check=at_least(8))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)


CONFIG = DecomposeConfig
# Held-out text for functional_error when the user gives none: real sentences, shipped with the repository.
SHIPPED_SST2 = Path(__file__).resolve().parent.parent / "data" / "glue_data" / "SST-2"


def _resolve_ranks(cfg: DecomposeConfig) -> tuple[int, int, str, dict[str, Any]]:
    """Ranks from flags, falling back to --config (flags win); also returns the --config dict (its residual ranks
    replaced by --residual_ranks when given)."""
    from_file: dict[str, Any] = {}
    if cfg.config is not None:
        path = Path(cfg.config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise InputError(f"--config {cfg.config}: no such file")
        from_file = read_config_dict(path.parent, "--config")
        architecture_of(from_file, f"--config {cfg.config}", kinds=(TUCKER,))
    rank_layer = cfg.rank_layer if cfg.rank_layer is not None else from_file.get("rank_layer")
    rank_dim = cfg.rank_dim if cfg.rank_dim is not None else from_file.get("rank_dim")
    ops = cfg.ops or from_file.get("ops", "san_ffn")
    if rank_layer is None or rank_dim is None:
        raise InputError("--rank_layer and --rank_dim are required (or give --config with both)")
    if cfg.residual_ranks is not None:
        from_file["residual_ranks"] = _layer_ranks(cfg.residual_ranks)
    return int(rank_layer), int(rank_dim), ops, from_file


def _layer_ranks(text: str) -> dict[int, int]:
    """--residual_ranks 'layer:rank,...' as {layer: rank}."""
    ranks: dict[int, int] = {}
    for pair in filter(None, text.split(",")):
        layer, _, rank = pair.partition(":")
        if not (layer.strip().isdigit() and rank.strip().isdigit()) or int(layer) in ranks:
            raise InputError(f"--residual_ranks {text}: expected distinct layer:rank pairs of whole numbers, "
                             f"e.g. 0:32,1:16")
        ranks[int(layer)] = int(rank)
    return ranks


def _residual_ranks(given: dict[int, int] | list[int] | None, layers: int, hidden: int) -> list[int] | None:
    """One rank per layer from --residual_ranks (or --config's list), checked against the teacher."""
    if given is None:
        return None
    flag = "--residual_ranks" if isinstance(given, dict) else "--config residual_ranks"
    ranks = dict(given) if isinstance(given, dict) else dict(enumerate(given))
    if isinstance(given, list) and len(given) != layers:
        raise InputError(f"{flag} {given}: one rank per layer needed, the teacher has {layers} layers")
    if missing := sorted(layer for layer in ranks if layer >= layers):
        raise InputError(f"{flag}: layer {missing[0]} does not exist, the teacher's layers are 0..{layers - 1}")
    if too_wide := sorted(r for r in ranks.values() if not 0 <= r <= hidden):
        raise InputError(f"{flag}: rank {too_wide[-1]} exceeds the teacher's hidden size {hidden}")
    return [ranks.get(layer, 0) for layer in range(layers)]


def _check_teacher(cfg: DecomposeConfig, rank_layer: int, rank_dim: int, ops: str, td_file: dict[str, Any]
                   ) -> tuple[Path, dict[str, Any], list[int] | None]:
    """Everything about the teacher that can be refused before loading weights; its directory, its config and the
    residual rank of each of its layers."""
    teacher_dir, tc, _ = inspect_model(cfg.teacher_model, "--teacher_model", kinds=(DENSE,), stage="decompose")
    flag = f"--teacher_model {cfg.teacher_model}"
    geometry = family_of(tc, flag).bert_geometry(tc)
    h, inter, layers = (geometry.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers"))
    if not all(isinstance(v, int) for v in (h, inter, layers)):
        raise InputError(f"{flag}: config lacks the hidden size, FFN size or number of layers")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        if key in td_file and td_file[key] != geometry.get(key):
            raise InputError(f"--config {cfg.config}: {key} is {td_file[key]} but the teacher's is {geometry.get(key)}")
    if inter != 4 * h:
        raise InputError(f"{flag}: intermediate_size {inter} is not 4 x hidden_size {h}; the block stacking needs 4h")
    if not 1 <= rank_dim <= h:
        raise InputError(f"--rank_dim {rank_dim}: must be between 1 and the hidden size {h}")
    n_blocks = layers * len(OPS[ops])
    if not 1 <= rank_layer <= n_blocks:
        raise InputError(f"--rank_layer {rank_layer}: must be between 1 and the number of stacked blocks {n_blocks} (ops={ops})")
    _check_task(cfg, tc)
    return teacher_dir, tc, _residual_ranks(td_file.get("residual_ranks"), layers, h)


def _check_task(cfg: DecomposeConfig, tc: dict[str, Any]) -> None:
    """A task teacher calibrated on a GLUE task directory must have been trained for that task."""
    source = Path(cfg.calibration_data or "")
    if not (is_task_model(tc) and source.is_dir() and source.name in TASKS):
        return
    task = TASKS[source.name]
    trained_on, labels = tc.get("finetuning_task"), label_count(tc)
    if trained_on not in (None, task.name) or labels != task.num_labels:
        raise InputError(f"--teacher_model {cfg.teacher_model}: a task model for {trained_on or 'another task'} "
                         f"({labels} label(s)), but --calibration_data {cfg.calibration_data} is {task.name} "
                         f"({task.num_labels} label(s))")


def run(cfg: DecomposeConfig) -> dict[str, Any]:
    """Factorize the teacher and write the TD directory; returns the summary."""
    check_values(cfg)
    if cfg.calibration_data is not None and cfg.init != "fast":
        raise InputError(f"--init {cfg.init}: the calibrated fit starts from the fast initialisation; drop --init")
    rank_layer, rank_dim, ops, td_file = _resolve_ranks(cfg)
    teacher_dir, tc, residual_ranks = _check_teacher(cfg, rank_layer, rank_dim, ops, td_file)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)

    start = time.perf_counter()
    # A task teacher keeps its pooler and classifier: the student is a task model that task-distill takes as is.
    role = CLASSIFIER if is_task_model(tc) else ENCODER
    teacher, _ = load_model(str(teacher_dir), "--teacher_model", role, kinds=(DENSE,))
    tokenizer = load_tokenizer(teacher_dir, "--teacher_model")
    fit, held_out, source = _text(cfg, tokenizer)
    t0 = time.perf_counter()
    if fit:
        student, factors, W, approx, calibration = _calibrated(cfg, teacher, fit, rank_layer, rank_dim, ops,
                                                               residual_ranks)
    else:
        student, factors, W, approx = factorize_teacher(teacher, rank_layer, rank_dim, ops, cfg.init,
                                                        cfg.hooi_sweeps, cfg.seed, residual_ranks)
        calibration = None
    factor_seconds = time.perf_counter() - t0
    types = [BLOCK_TYPE[kind] for _, kind in block_layout(len(layers_of(teacher)), ops)]
    errors = relative_errors(W.double(), approx.double(), types)
    functional = (hidden_state_errors(encoder_of(teacher), encoder_of(student), held_out) | {"source": source}
                  if held_out else None)

    teacher_params, student_params = encoder_params(teacher), encoder_params(student)
    resolved = dataclasses.asdict(cfg) | {"rank_layer": rank_layer, "rank_dim": rank_dim, "ops": ops,
                                          "residual_ranks": residual_ranks, "teacher_dir": str(teacher_dir)}
    with atomic_output_dir(out) as tmp:
        student.save_pretrained(tmp)
        summary = {
            "teacher_model": cfg.teacher_model,
            "task_model": role == CLASSIFIER,
            "teacher_encoder_params": teacher_params,
            "student_encoder_params": student_params,
            "compression_ratio": teacher_params / student_params,
            "relative_error": errors["overall"],
            "relative_error_by_type": {k: v for k, v in errors.items() if k != "overall"},
            "init": cfg.init,
            "hooi_iterations": factors.iterations,
            "functional_error": functional,
            "calibration": calibration,
            "factorization_seconds": factor_seconds,
            "seconds": time.perf_counter() - start,
            "size_on_disk_bytes": (tmp / "model.safetensors").stat().st_size,
            "config": resolved,
        }
        finish_stage(tmp, "decompose", resolved, summary, tokenizer_from=teacher_dir)
    return summary


def _text(cfg: DecomposeConfig, tokenizer) -> tuple[list, list, str | None]:
    """Calibration sequences (none without --calibration_data), held-out sequences and where they come from."""
    if cfg.calibration_data is not None:
        sequences = read_sequences(cfg.calibration_data, "--calibration_data", tokenizer, cfg.max_seq_length,
                                   cfg.calibration_examples + cfg.held_out_examples, cfg.seed)
        fit, held = hold_out(sequences, cfg.calibration_examples, cfg.held_out_examples, "--calibration_data",
                             cfg.calibration_data)
        held_out = held if cfg.functional_data is None else _held_out(cfg, tokenizer, cfg.functional_data)
        return fit, held_out, cfg.functional_data or f"held-out part of {cfg.calibration_data}"
    source = cfg.functional_data or (str(SHIPPED_SST2) if SHIPPED_SST2.is_dir() else None)
    return [], (_held_out(cfg, tokenizer, source) if source else []), source


def _held_out(cfg: DecomposeConfig, tokenizer, source: str) -> list:
    flag = "--functional_data" if cfg.functional_data else "shipped SST-2 dev set"
    return read_sequences(source, flag, tokenizer, cfg.max_seq_length, cfg.held_out_examples, cfg.seed, split="dev")


def _calibrated(cfg: DecomposeConfig, teacher, fit: list, rank_layer: int, rank_dim: int, ops: str,
                residual_ranks: list[int] | None):
    """Factors fitted to the blocks' outputs on the calibration text (the layers' corrections to what they miss in
    weight space), biases moved to the teacher's mean outputs."""
    stats = block_inputs(encoder_of(teacher), fit, ops)
    if stats.tokens < teacher.config.hidden_size:
        raise InputError(f"--calibration_data {cfg.calibration_data}: {stats.tokens} tokens, fewer than the hidden "
                         f"size {teacher.config.hidden_size}: too few to fit rank_dim {rank_dim}")
    W = stack_encoder_blocks(encoder_of(teacher), ops, dtype=torch.float64)
    # The biases absorb the inputs' means (bias_shifts), so the factors fit their covariances.
    covariance = stats.moments - stats.means[:, :, None] * stats.means[:, None, :]
    start = whitened_tucker(W, covariance, stats.inputs, rank_layer, rank_dim, cfg.hooi_sweeps)
    factors, history = refit(W, start, covariance, stats.inputs, cfg.calibration_sweeps)
    layout = block_layout(len(layers_of(teacher)), ops)
    plain = decompose_fast(W, rank_layer, rank_dim, sweeps=cfg.hooi_sweeps)
    approx = factors.reconstruct()
    corrections = fit_corrections(W, approx, residual_ranks or [], layout, covariance[stats.inputs])
    approx = approx + corrections.blocks
    student = td_model(teacher, factors, rank_layer, rank_dim, ops, bias_shifts(W, approx, stats.means[stats.inputs], layout),
                       corrections, residual_ranks)
    return student, factors, W.float(), approx.float(), {
        "sequences": len(fit), "tokens": stats.tokens, "sweeps": cfg.calibration_sweeps,
        "output_error_plain": output_error(W, plain, covariance, stats.inputs),
        "output_error_by_sweep": history,
    }


def report(summary: dict[str, Any]) -> str:
    """One human line per run, printed by the CLI."""
    return (
        f"decompose: {summary['student_encoder_params']:,} encoder params "
        f"(teacher {summary['teacher_encoder_params']:,}, 1/{summary['compression_ratio']:.1f}), "
        f"weight error {summary['relative_error']:.4f}"
        + (f", functional error {summary['functional_error']['overall']:.4f}" if summary["functional_error"] else "")
        + f", {summary['seconds']:.1f} s -> {summary['config']['output_dir']}"
    )
