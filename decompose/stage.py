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

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from compress.atomic import atomic_output_dir, check_output_dir, write_json
from compress.errors import InputError
from compress.model_paths import read_config_dict, resolve_model_dir

from .configuration_tucker_bert import TuckerBertConfig
from .convert import factorize_teacher
from .params import encoder_params
from .stacking import BLOCK_TYPE, OPS, block_layout
from .tucker import relative_errors

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclasses.dataclass
class DecomposeConfig:
    """Resolved configuration of one decompose run."""

    teacher_model: str
    output_dir: str
    rank_layer: int | None = None
    rank_dim: int | None = None
    ops: str | None = None
    config: str | None = None
    init: str = "fast"
    hooi_sweeps: int = 1
    seed: int = 42
    overwrite_output_dir: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher_model", required=True, help="dense BERT directory or the alias all-MiniLM-L6-v2")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--rank_layer", type=int, help="l: number of shared cores")
    p.add_argument("--rank_dim", type=int, help="d: size of each core and width of U, V")
    p.add_argument("--ops", choices=sorted(OPS), help="sublayers to factorize (default san_ffn)")
    p.add_argument("--config", help="a TD config.json (e.g. models/bert-td-72-384/config.json) giving the ranks")
    p.add_argument("--init", choices=["fast", "hooi"], default="fast",
                   help="fast: Gram-based ST-HOSVD (+ --hooi_sweeps); hooi: tensorly Tucker, random init, 100 iters")
    p.add_argument("--hooi_sweeps", type=int, default=1, help="HOOI sweeps after the fast initialisation (0: one-shot)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--overwrite_output_dir", action="store_true")


CONFIG = DecomposeConfig


def _resolve_ranks(cfg: DecomposeConfig) -> tuple[int, int, str, dict[str, Any]]:
    """Ranks from flags, falling back to --config (flags win); also returns the --config dict."""
    from_file: dict[str, Any] = {}
    if cfg.config is not None:
        path = Path(cfg.config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise InputError(f"--config {cfg.config}: no such file")
        from_file = read_config_dict(path.parent, "--config")
        if from_file.get("model_type") != TuckerBertConfig.model_type:
            raise InputError(f"--config {cfg.config}: model_type is {from_file.get('model_type')!r}, expected 'tucker_bert'")
    rank_layer = cfg.rank_layer if cfg.rank_layer is not None else from_file.get("rank_layer")
    rank_dim = cfg.rank_dim if cfg.rank_dim is not None else from_file.get("rank_dim")
    ops = cfg.ops or from_file.get("ops", "san_ffn")
    if rank_layer is None or rank_dim is None:
        raise InputError("--rank_layer and --rank_dim are required (or give --config with both)")
    return int(rank_layer), int(rank_dim), ops, from_file


def _check_teacher(cfg: DecomposeConfig, rank_layer: int, rank_dim: int, ops: str, td_file: dict[str, Any]) -> Path:
    """Everything about the teacher that can be refused before loading weights."""
    teacher_dir = resolve_model_dir(cfg.teacher_model, "--teacher_model")
    tc = read_config_dict(teacher_dir, "--teacher_model")
    flag = f"--teacher_model {cfg.teacher_model}"
    if tc.get("model_type") == TuckerBertConfig.model_type:
        raise InputError(f"{flag}: already a TD model; the teacher must be a dense BERT")
    if tc.get("model_type") != "bert":
        raise InputError(f"{flag}: model_type is {tc.get('model_type')!r}; only BERT-architecture teachers are supported")
    h, inter, layers = tc.get("hidden_size"), tc.get("intermediate_size"), tc.get("num_hidden_layers")
    if not all(isinstance(v, int) for v in (h, inter, layers)):
        raise InputError(f"{flag}: config lacks hidden_size / intermediate_size / num_hidden_layers")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        if key in td_file and td_file[key] != tc.get(key):
            raise InputError(f"--config {cfg.config}: {key} is {td_file[key]} but the teacher's is {tc.get(key)}")
    if inter != 4 * h:
        raise InputError(f"{flag}: intermediate_size {inter} is not 4 x hidden_size {h}; the block stacking needs 4h")
    if not 1 <= rank_dim <= h:
        raise InputError(f"--rank_dim {rank_dim}: must be between 1 and the hidden size {h}")
    n_blocks = layers * len(OPS[ops])
    if not 1 <= rank_layer <= n_blocks:
        raise InputError(f"--rank_layer {rank_layer}: must be between 1 and the number of stacked blocks {n_blocks} (ops={ops})")
    if not any((teacher_dir / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise InputError(f"{flag}: no model.safetensors in {teacher_dir}")
    return teacher_dir


def load_dense_teacher(teacher_dir: Path, flag: str = "--teacher_model"):
    """Load a dense BertModel, refusing the silent re-initialisation transformers would otherwise do."""
    from safetensors import SafetensorError
    from transformers import BertModel

    try:
        bert, info = BertModel.from_pretrained(str(teacher_dir), output_loading_info=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise InputError(f"{flag} {teacher_dir}: cannot load weights ({e.__class__.__name__}: {str(e).splitlines()[0]})") from e
    encoder_missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if encoder_missing or info["mismatched_keys"]:
        bad = (encoder_missing or [k for k, *_ in info["mismatched_keys"]])[:3]
        raise InputError(f"{flag} {teacher_dir}: weights missing or mismatched for a BertModel: {', '.join(bad)}")
    return bert.eval()


def run(cfg: DecomposeConfig) -> dict[str, Any]:
    """Factorize the teacher and write the TD directory; returns the summary."""
    if cfg.hooi_sweeps < 0:
        raise InputError(f"--hooi_sweeps {cfg.hooi_sweeps}: must be >= 0")
    rank_layer, rank_dim, ops, td_file = _resolve_ranks(cfg)
    teacher_dir = _check_teacher(cfg, rank_layer, rank_dim, ops, td_file)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)

    start = time.perf_counter()
    teacher = load_dense_teacher(teacher_dir)
    t0 = time.perf_counter()
    student, factors, W = factorize_teacher(teacher, rank_layer, rank_dim, ops, cfg.init, cfg.hooi_sweeps, cfg.seed)
    factor_seconds = time.perf_counter() - t0
    types = [BLOCK_TYPE[kind] for _, kind in block_layout(teacher.config.num_hidden_layers, ops)]
    errors = relative_errors(W.double(), factors.reconstruct().double(), types)

    teacher_params, student_params = encoder_params(teacher), encoder_params(student)
    resolved = dataclasses.asdict(cfg) | {"rank_layer": rank_layer, "rank_dim": rank_dim, "ops": ops,
                                          "teacher_dir": str(teacher_dir)}
    with atomic_output_dir(out) as tmp:
        student.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (teacher_dir / name).is_file():
                shutil.copy2(teacher_dir / name, tmp / name)
        write_json(tmp / "decompose_config.json", resolved)
        summary = {
            "teacher_model": cfg.teacher_model,
            "teacher_encoder_params": teacher_params,
            "student_encoder_params": student_params,
            "compression_ratio": teacher_params / student_params,
            "relative_error": errors["overall"],
            "relative_error_by_type": {k: v for k, v in errors.items() if k != "overall"},
            "init": cfg.init,
            "hooi_iterations": factors.iterations,
            "factorization_seconds": factor_seconds,
            "seconds": time.perf_counter() - start,
            "size_on_disk_bytes": (tmp / "model.safetensors").stat().st_size,
            "config": resolved,
        }
        write_json(tmp / "decompose_summary.json", summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    """One human line per run, printed by the CLI."""
    return (
        f"decompose: {summary['student_encoder_params']:,} encoder params "
        f"(teacher {summary['teacher_encoder_params']:,}, 1/{summary['compression_ratio']:.1f}), "
        f"relative error {summary['relative_error']:.4f}, {summary['seconds']:.1f} s -> {summary['config']['output_dir']}"
    )
