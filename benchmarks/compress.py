"""Benchmark int8 quantization and structured pruning on SST-2 with the embedded teacher and its TD students.

    .venv/bin/python benchmarks/compress.py [--work DIR] [--recovery_steps 100]

Models: the SST-2 teacher and the 1/7 and 1/48 task-distilled students of `benchmarks/accuracy.py` (its work
directory, made with `--tasks SST-2 --compare` when absent). Quantization: `xcompress quantize --onnx` of each:
CPU latency fp32 vs int8 at batch 1 and 32 (sequence 128) in PyTorch and ONNX Runtime, size, and the dev score
change (goal: int8 >= 2x faster than fp32 on the dense teacher, >= 1.5x on the TD students, <= 1 point lost).
Pruning: `xcompress prune` of the teacher, one sweep over heads kept (FFN whole) and one over FFN size (heads
whole), each setting recovered by fine-tuning; dev score and size against what is kept.
Prints tables; writes benchmarks/results/compress.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
XC = str(REPO / ".venv/bin/xcompress")
MODELS = {"teacher (dense)": "teacher-SST-2", "TD 1/7": "td-SST-2-task-1of7", "TD 1/48": "td-SST-2-task-1of48"}
HEADS = "10,8,6,4,2"
FFN = "1280,1024,768,512,256"


def xcompress(*args: str) -> None:
    started = time.perf_counter()
    r = subprocess.run([XC, *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"xcompress {args[0]} failed:\n{r.stderr[-3000:]}")
    print(f"  xcompress {args[0]} {args[2] if len(args) > 2 else ''}: {(time.perf_counter() - started) / 60:.1f} min",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(REPO / "runs/bench-accuracy"), help="benchmarks/accuracy.py's work directory")
    ap.add_argument("--recovery_steps", type=int, default=100)
    args = ap.parse_args()
    work = Path(args.work)
    if not all((work / m / "config.json").is_file() for m in MODELS.values()):
        print(f"making the SST-2 models with benchmarks/accuracy.py in {work}", flush=True)
        subprocess.run([sys.executable, str(REPO / "benchmarks/accuracy.py"), "--tasks", "SST-2", "--compare",
                        "--work", str(work)], check=True)
    glue = work / "glue_data"
    out = work / "compress"
    quantized = {}
    for label, name in MODELS.items():
        target = out / f"int8-{name}"
        if not (target / "quantize_summary.json").is_file():
            xcompress("quantize", "--model", str(work / name), "--task_name", "SST-2", "--data_dir",
                      str(glue), "--onnx", "--latency_repeats", "10", "--overwrite_output_dir",
                      "--output_dir", str(target))
        quantized[label] = json.loads((target / "quantize_summary.json").read_text())
    latency = {label: interleaved_latency(work / name, out / f"int8-{name}") for label, name in MODELS.items()}
    pruned = {}
    # "control" keeps every head: the same recovery fine-tuning without pruning, the fair reference for the
    # sweeps (recovery is extra training, which an under-trained teacher gains from by itself).
    for sweep, flag, values in (("control", "--target_num_of_heads", "12"), ("heads", "--target_num_of_heads", HEADS),
                                ("ffn", "--target_ffn_size", FFN)):
        target = out / f"prune-{sweep}"
        if not (target / "prune_summary.json").is_file():
            xcompress("prune", "--model", str(work / MODELS["teacher (dense)"]), "--task_name", "SST-2",
                      "--data_dir", str(glue), flag, values, "--max_steps", str(args.recovery_steps),
                      "--max_train_examples", "4000", "--max_seq_length", "64", "--eval_step",
                      str(args.recovery_steps), "--learning_rate", "5e-5", "--quiet", "--overwrite_output_dir",
                      "--output_dir", str(target))
        pruned[sweep] = json.loads((target / "prune_summary.json").read_text())
    _report(quantized, latency, pruned, args)


def interleaved_latency(fp32_dir: Path, int8_dir: Path, rounds: int = 3, repeats: int = 10) -> dict:
    """Median latency per backend at batch 1 and 32 (sequence 128), measured in alternation within one process
    so that a slow spell of the machine hits every backend alike; the median over rounds of each round's median."""
    import statistics

    import torch

    sys.path.insert(0, str(REPO))
    from compress.measure import cpu_latency
    from compress.onnx_export import FP32_FILE, INT8_FILE, OnnxClassifier
    from corpora.glue import get_task
    from distill.classifier import load_classifier

    task = get_task("SST-2")
    fp32, _ = load_classifier(str(fp32_dir), "--model", task, need_task_model=True)
    int8, _ = load_classifier(str(int8_dir), "--model", task, need_task_model=True)
    vocab = fp32.config.vocab_size
    backends = {"pytorch fp32": fp32, "pytorch int8": int8,
                "onnxruntime fp32": OnnxClassifier(int8_dir / "onnx" / FP32_FILE, torch.get_num_threads()).logits,
                "onnxruntime int8": OnnxClassifier(int8_dir / "onnx" / INT8_FILE, torch.get_num_threads()).logits}
    times: dict = {b: {1: [], 32: []} for b in backends}
    for _ in range(rounds):
        for batch in (1, 32):
            for name, model in backends.items():
                times[name][batch].append(cpu_latency(model, batch, 128, repeats, vocab_size=vocab))
    return {b: {f"latency_b{k}_s": statistics.median(v) for k, v in t.items()} for b, t in times.items()}


def _report(quantized: dict, latency: dict, pruned: dict, args) -> None:
    print("\nint8 dynamic quantization, SST-2 dev, CPU (2 cores), sequence 128: latency in ms (speed-up over PyTorch "
          "fp32), backends measured in alternation, median of 3 rounds of 10")
    print("| model | backend | b1 ms | b32 ms | size MB | dev acc | change (points) |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for label, summary in quantized.items():
        rows = {r["backend"]: r | latency[label][r["backend"]] for r in summary["rows"]}
        base = rows["pytorch fp32"]
        for backend, r in rows.items():
            ratio1, ratio32 = base["latency_b1_s"] / r["latency_b1_s"], base["latency_b32_s"] / r["latency_b32_s"]
            change = 100 * (r["dev"]["acc"] - base["dev"]["acc"])
            table.setdefault(label, {})[backend] = {"speedup_b1": ratio1, "speedup_b32": ratio32, "change_points": change,
                                                    "latency_b1_s": r["latency_b1_s"], "latency_b32_s": r["latency_b32_s"],
                                                    "size_on_disk_bytes": r["size_on_disk_bytes"], "acc": r["dev"]["acc"]}
            print(f"| {label} | {backend} | {r['latency_b1_s'] * 1e3:.1f} ({ratio1:.2f}x) | "
                  f"{r['latency_b32_s'] * 1e3:.1f} ({ratio32:.2f}x) | {r['size_on_disk_bytes'] / 1e6:.1f} | "
                  f"{r['dev']['acc']:.4f} | {change:+.2f} |")
    print("\nstructured pruning of the teacher (Taylor importance, allocated over layers), "
          f"{args.recovery_steps} recovery steps each, SST-2 dev")
    print("| kept | heads (of 72) | FFN per layer (of 1536) | encoder params | MB | dev acc | % of control |")
    print("|---|---|---|---|---|---|---|")
    control = pruned["control"]["rows"][0]
    for sweep, summary in pruned.items():
        for r in [summary["original"], *summary["rows"]] if sweep == "control" else summary["rows"]:
            pct = 100 * r["score"] / control["score"]
            if sweep == "control":
                r = r | {"name": "original" if r is summary["original"] else "all kept, recovered (control)"}
            print(f"| {r['name']} | {r['heads']} | {r['ffn_size']:.0f} | {r['params']['encoder']:,} | "
                  f"{r['size_on_disk_bytes'] / 1e6:.1f} | {r['score']:.4f} | {pct:.1f} |")
    path = REPO / "benchmarks/results/compress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"quantization": table, "pruning": {
        k: {"original": v["original"], "rows": v["rows"], "plots": v["plots"]} for k, v in pruned.items()},
        "recovery_steps": args.recovery_steps}, indent=2) + "\n")
    print(f"-> {path}; plots in {Path(args.work) / 'compress'}/prune-*/plots")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
