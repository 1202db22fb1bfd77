"""The quantize stage: a task model (dense, pruned or TD) -> its int8 dynamic-quantized copy, with score,
size and CPU latency before and after; with `--onnx`, the same model exported to ONNX and run by
onnxruntime in fp32 and int8, checked against PyTorch; with `--bf16`, a bfloat16 copy (half the fp32 file, and
the fastest form on CPUs with AVX512-BF16 or AMX, whose matrix units take bf16 operands).

    xcompress quantize --model runs/td-sst2 --output_dir runs/td-sst2-int8 --task_name SST-2 \
        --data_dir data/glue_data --onnx

Writes the int8 model directory (loadable by `xcompress evaluate`), `onnx/model.onnx` and
`onnx/model.int8.onnx` with `--onnx`, the model directory `bf16/` with `--bf16`, `quantize_config.json` and
`quantize_summary.json`.
ONNX fp32 logits must agree with PyTorch's within `ONNX_FP32_TOLERANCE`; int8 graphs differ from PyTorch's
int8 by rounding, so their agreement is reported (predicted labels, max logit difference), not enforced; so is
the bf16 copy's agreement with the fp32 model.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corpora.glue import dev_files, get_task
from modeling.formats import CLASSIFIER
from modeling.int8 import QuantizationConfig, is_quantized, quantization_of, quantize_, save_quantized
from modeling.loading import load_model, load_tokenizer
from stagekit.atomic import atomic_output_dir, check_output_dir
from stagekit.errors import InputError
from stagekit.model_paths import read_config_dict, resolve_model_dir
from stagekit.options import option
from stagekit.outputs import copy_tokenizer, finish_stage
from tasks.classifier import evaluate_features, load_classifier, predictions
from tasks.features import load_features
from tasks.metrics import glue_metrics

from .measure import MeasurementSettings, cpu_has_bf16, cpu_latency, parameter_counts, size_on_disk

ONNX_FP32_TOLERANCE = 1e-4  # max |logit difference| between onnxruntime fp32 and PyTorch fp32
BF16_DIR = "bf16"


@dataclasses.dataclass(kw_only=True)
class QuantizeConfig(MeasurementSettings):
    model: str = option(help="a task model: fine-tuned, distilled or pruned")
    output_dir: str = option()
    task_name: str | None = option(None, help="with --data_dir: dev score before and after")
    data_dir: str | None = option(None)
    onnx: bool = option(False, help="also export ONNX (fp32 and int8) and run it with onnxruntime")
    per_tensor: bool = option(False, help="one scale per matrix instead of per output channel")
    fp32_embeddings: bool = option(False, help="keep the embedding tables in fp32 (default: 8 bits per entry, a "
                                               "scale and offset per row)")
    bf16: bool = option(False, help="also write a bfloat16 copy (bf16/, loadable like any model directory): half "
                                    "the fp32 size, fast on CPUs with AVX512-BF16 or AMX (slower than fp32 without)")
    overwrite_output_dir: bool = option(False)


CONFIG = QuantizeConfig


def run(cfg: QuantizeConfig) -> dict[str, Any]:
    started = time.perf_counter()
    model_dir = resolve_model_dir(cfg.model, "--model")
    if quantization_of(read_config_dict(model_dir, "--model")):
        raise InputError(f"--model {cfg.model}: already quantized (quantize the fp32 model it came from)")
    if (cfg.task_name is None) != (cfg.data_dir is None):
        raise InputError("--task_name and --data_dir go together (both to score the model, neither to skip it)")
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    task = get_task(cfg.task_name) if cfg.task_name else None
    if task is not None:
        model, _ = load_classifier(cfg.model, "--model", task, need_task_model=True)
        dev = load_features(task, dev_files(task, cfg.data_dir)[0], load_tokenizer(model_dir, "--model"), cfg.max_seq_length)
    else:
        model, dev = load_model(cfg.model, "--model", CLASSIFIER)[0], None
    if is_quantized(model):
        raise InputError(f"--model {cfg.model}: already quantized")
    if (dtype := next(model.parameters()).dtype) != torch.float32:
        raise InputError(f"--model {cfg.model}: stored in {str(dtype).removeprefix('torch.')} (quantize the fp32 model "
                         "it came from)")
    fp32 = {"backend": "pytorch fp32", **_measure(model, model_dir, cfg, task, dev)}
    int8_model = quantize_(copy.deepcopy(model), QuantizationConfig(per_channel=not cfg.per_tensor,
                                                                      embeddings=not cfg.fp32_embeddings))
    rows = [fp32]
    with atomic_output_dir(out) as tmp:
        save_quantized(int8_model, tmp)
        copy_tokenizer(model_dir, tmp)
        rows.append({"backend": "pytorch int8", **_measure(int8_model, tmp, cfg, task, dev)})
        onnx = _onnx(model, int8_model, tmp / "onnx", cfg, task, dev) if cfg.onnx else None
        if onnx is not None:
            rows += onnx.pop("rows")
        bf16 = _bf16(model, model_dir, tmp / BF16_DIR, cfg, task, dev) if cfg.bf16 else None
        if bf16 is not None:
            rows.append(bf16.pop("row"))
        summary = {"model": str(model_dir), "output_dir": str(out), "task": task.name if task else None,
                   "model_type": model.config.model_type, "rows": rows, "onnx": onnx, "bf16": bf16,
                   "seconds": time.perf_counter() - started, "config": dataclasses.asdict(cfg)}
        finish_stage(tmp, "quantize", cfg, summary)
    return summary


def _bf16(model, model_dir: Path, directory: Path, cfg: QuantizeConfig, task, dev) -> dict[str, Any]:
    """The bfloat16 copy of `model`, saved, measured and compared with the fp32 model on the check batches."""
    half = copy.deepcopy(model).to(torch.bfloat16).eval()
    half.save_pretrained(directory)
    copy_tokenizer(model_dir, directory)
    batches = _check_batches(dev, model.config.vocab_size)
    with torch.inference_mode():
        reference = np.concatenate([model(**b).logits.numpy() for b in batches])
        logits = np.concatenate([half(**b).logits.float().numpy() for b in batches])
    same = float((logits.argmax(-1) == reference.argmax(-1)).mean()) if logits.shape[1] > 1 else None
    row = {"backend": "pytorch bf16", **_measure(half, directory, cfg, task, dev)}
    return {"row": row, "cpu_has_bf16": cpu_has_bf16(),
            "agreement": {"against": "pytorch fp32", "max_abs_logit_diff": float(np.abs(logits - reference).max()),
                          "same_prediction": same, "examples": len(logits)}}


def _measure(model, model_dir: Path, cfg: QuantizeConfig, task, dev) -> dict[str, Any]:
    row = {"size_on_disk_bytes": size_on_disk(model_dir), "params": parameter_counts(model),
           "latency_b1_s": cpu_latency(model, 1, cfg.latency_seq_length, cfg.latency_repeats),
           "latency_b32_s": cpu_latency(model, 32, cfg.latency_seq_length, cfg.latency_repeats)}
    if task is not None:
        row["dev"] = evaluate_features(model, task, dev, cfg.eval_batch_size)
    return row


def _onnx(model, int8_model, directory: Path, cfg: QuantizeConfig, task, dev) -> dict[str, Any]:
    from .onnx_export import FP32_FILE, INT8_FILE, OnnxClassifier, export_onnx, quantize_onnx

    directory.mkdir()
    export_onnx(model, directory / FP32_FILE)
    quantize_onnx(directory / FP32_FILE, directory / INT8_FILE)
    batches = _check_batches(dev, model.config.vocab_size)
    with torch.inference_mode():
        torch_fp32 = np.concatenate([model(**b).logits.numpy() for b in batches])
        torch_int8 = np.concatenate([int8_model(**b).logits.numpy() for b in batches])
    rows, agreement = [], {}
    threads = torch.get_num_threads()
    for label, name, reference in (("onnxruntime fp32", FP32_FILE, torch_fp32), ("onnxruntime int8", INT8_FILE, torch_int8)):
        session = OnnxClassifier(directory / name, threads)
        logits = np.concatenate([session.logits(b) for b in batches])
        diff = float(np.abs(logits - reference).max())
        same = float((logits.argmax(-1) == reference.argmax(-1)).mean()) if logits.shape[1] > 1 else None
        agreement[label] = {"against": label.replace("onnxruntime", "pytorch"), "max_abs_logit_diff": diff,
                            "same_prediction": same, "examples": len(logits)}
        row = {"backend": label, "size_on_disk_bytes": (directory / name).stat().st_size,
               "latency_b1_s": cpu_latency(session.logits, 1, cfg.latency_seq_length, cfg.latency_repeats,
                                           vocab_size=model.config.vocab_size),
               "latency_b32_s": cpu_latency(session.logits, 32, cfg.latency_seq_length, cfg.latency_repeats,
                                            vocab_size=model.config.vocab_size)}
        if task is not None:
            row["dev"] = _onnx_score(session, task, dev, cfg.eval_batch_size)
        rows.append(row)
    fp32_diff = agreement["onnxruntime fp32"]["max_abs_logit_diff"]
    if not fp32_diff <= ONNX_FP32_TOLERANCE:
        raise RuntimeError(f"ONNX export disagrees with PyTorch: max |logit difference| {fp32_diff:.2e} > "
                           f"{ONNX_FP32_TOLERANCE:g}")
    return {"rows": rows, "agreement": agreement, "fp32_tolerance": ONNX_FP32_TOLERANCE}


def _check_batches(dev, vocab_size: int) -> list[dict[str, torch.Tensor]]:
    """Real dev batches (padding included) when a task is given, else random token batches."""
    from .measure import dummy_batch

    if dev is None:
        return [dummy_batch(16, 64, vocab_size, seed=s) for s in range(4)]
    ids = np.arange(min(len(dev), 512))
    batches = [dev.batch(ids[i:i + 64]) for i in range(0, len(ids), 64)]
    for b in batches:
        b.pop("labels")
    return batches


def _onnx_score(session, task, dev, batch_size: int) -> dict[str, float]:
    ids = np.arange(len(dev))
    logits = []
    for i in range(0, len(ids), batch_size):
        b = dev.batch(ids[i:i + batch_size])
        b.pop("labels")
        logits.append(session.logits(b))
    return glue_metrics(task.metric, predictions(task, np.concatenate(logits)), dev.labels)


def report(summary: dict[str, Any]) -> str:
    base = summary["rows"][0]
    lines = [f"{'backend':<18} {'MB':>7} {'b1 ms':>8} {'b1 x':>6} {'b32 ms':>8} {'b32 x':>6} {'dev':>8}"]
    for r in summary["rows"]:
        score = f"{r['dev']['score']:.4f}" if "dev" in r else "-"
        lines.append(f"{r['backend']:<18} {r['size_on_disk_bytes'] / 1e6:>7.1f} {r['latency_b1_s'] * 1e3:>8.1f} "
                     f"{base['latency_b1_s'] / r['latency_b1_s']:>6.2f} {r['latency_b32_s'] * 1e3:>8.1f} "
                     f"{base['latency_b32_s'] / r['latency_b32_s']:>6.2f} {score:>8}")
    agreements = dict(summary["onnx"]["agreement"]) if summary["onnx"] else {}
    if summary.get("bf16"):
        agreements["pytorch bf16"] = summary["bf16"]["agreement"]
        if not summary["bf16"]["cpu_has_bf16"]:
            lines.append("pytorch bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX); it is emulated here")
    for label, a in agreements.items():
        same = f", same prediction {a['same_prediction']:.1%}" if a["same_prediction"] is not None else ""
        lines.append(f"{label} vs {a['against']}: max |logit diff| {a['max_abs_logit_diff']:.2e}{same} "
                     f"on {a['examples']} examples")
    lines.append(f"x: speed-up over PyTorch fp32 (CPU, sequence {summary['config']['latency_seq_length']}). "
                 f"-> {summary['output_dir']}")
    return "\n".join(lines)
