"""Demo on the embedded defaults: factorize all-MiniLM-L6-v2 at the shipped MiniLM TD configs.

    xcompress demo [--output_dir runs/demo] [--overwrite_output_dir]
    make demo

For each of models/minilm-td-*/ it decomposes the embedded teacher (reusing a complete earlier output),
then prints encoder parameters, compression ratio, reconstruction error, size on disk and CPU latency
against the teacher at batch 1 and 32, sequence 128. Until the pipeline lands, this is the main job.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from decompose.stage import DecomposeConfig, load_dense_teacher
from decompose.stage import run as run_decompose

from .atomic import write_json
from .measure import cpu_latency, size_on_disk
from .model_paths import EMBEDDED_TEACHER, resolve_model_dir

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIGS = ("minilm-td-36-192", "minilm-td-20-112", "minilm-td-36-64")


@dataclasses.dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    teacher_model: str = EMBEDDED_TEACHER
    overwrite_output_dir: bool = False
    latency_repeats: int = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", default="runs/demo")
    p.add_argument("--teacher_model", default=EMBEDDED_TEACHER)
    p.add_argument("--overwrite_output_dir", action="store_true", help="redo decompositions already in output_dir")
    p.add_argument("--latency_repeats", type=int, default=5)


CONFIG = DemoConfig


def run(cfg: DemoConfig) -> dict[str, Any]:
    from decompose import TuckerBertModel

    out = Path(cfg.output_dir)
    teacher_dir = resolve_model_dir(cfg.teacher_model, "--teacher_model")
    teacher = load_dense_teacher(teacher_dir)
    rows = [{
        "model": "teacher",
        "encoder_params": None,
        "compression_ratio": 1.0,
        "relative_error": 0.0,
        "size_on_disk_bytes": size_on_disk(teacher_dir),
        "latency_b1_s": cpu_latency(teacher, 1, 128, cfg.latency_repeats),
        "latency_b32_s": cpu_latency(teacher, 32, 128, cfg.latency_repeats),
    }]
    for name in DEMO_CONFIGS:
        target = out / name
        if cfg.overwrite_output_dir or not (target / "decompose_summary.json").is_file():
            summary = run_decompose(DecomposeConfig(
                teacher_model=cfg.teacher_model, output_dir=str(target),
                config=str(REPO / "models" / name / "config.json"), overwrite_output_dir=True))
        else:
            summary = json.loads((target / "decompose_summary.json").read_text())
        rows[0]["encoder_params"] = summary["teacher_encoder_params"]
        student = TuckerBertModel.from_pretrained(str(target))
        rows.append({
            "model": name,
            "encoder_params": summary["student_encoder_params"],
            "compression_ratio": summary["compression_ratio"],
            "relative_error": summary["relative_error"],
            "size_on_disk_bytes": size_on_disk(target),
            "latency_b1_s": cpu_latency(student, 1, 128, cfg.latency_repeats),
            "latency_b32_s": cpu_latency(student, 32, 128, cfg.latency_repeats),
        })
    result = {"config": dataclasses.asdict(cfg), "rows": rows, "output_dir": str(out)}
    write_json(out / "demo_summary.json", result)
    return result


def report(result: dict[str, Any]) -> str:
    t = result["rows"][0]
    lines = [
        f"{'model':<18} {'enc params':>11} {'ratio':>7} {'rel err':>8} {'disk MB':>8} "
        f"{'b1 ms':>8} {'b1 x':>6} {'b32 ms':>8} {'b32 x':>6}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['model']:<18} {r['encoder_params']:>11,} {'1/' + format(r['compression_ratio'], '.1f'):>7} "
            f"{r['relative_error']:>8.4f} {r['size_on_disk_bytes'] / 1e6:>8.1f} "
            f"{r['latency_b1_s'] * 1e3:>8.1f} {t['latency_b1_s'] / r['latency_b1_s']:>6.2f} "
            f"{r['latency_b32_s'] * 1e3:>8.1f} {t['latency_b32_s'] / r['latency_b32_s']:>6.2f}"
        )
    lines.append("x: speed-up over the teacher (CPU, sequence 128, median of repeats). "
                 f"Summary: {Path(result['output_dir']) / 'demo_summary.json'}")
    return "\n".join(lines)
