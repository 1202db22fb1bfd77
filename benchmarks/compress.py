"""Benchmark what ships: vocabulary pruning, int8 quantization and structured pruning on SST-2, with the embedded
teacher and its TD students.

    .venv/bin/python benchmarks/compress.py [--work DIR] [--recovery_steps 100]
    .venv/bin/python benchmarks/compress.py --models "teacher=runs/demo/teacher,TD 1/7=runs/demo/task-distill" \
        --glue runs/demo/glue_data --out runs/bench-compress --no_pruning

Models: the SST-2 teacher and the 1/7 and 1/48 task-distilled students of `benchmarks/accuracy.py` (its work
directory, made with `--tasks SST-2 --compare` when absent), or `--models` (the first is the reference).
Each model is vocabulary-pruned (`xcompress prune --pruning_type vocabulary`), and that is quantized
(`xcompress quantize --onnx --bf16`): total size on disk of every form against the fp32 teacher's, parameters as
stored, CPU latency of fp32, int8 and bf16 at batch 1 and 32 (sequence 128) in PyTorch and ONNX Runtime, every
form of every model timed in alternation in one process, against its own fp32 form and against the fp32 teacher,
and the dev score change (goals: at 1/48 with vocabulary pruning and int8 at most 1/10 of the teacher's size, at
1/7 at most 1/4, at most 1 point lost; int8 >= 1.5x faster than fp32; TD 1/48 >= 2.7x faster than the teacher).
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
    ap.add_argument("--models", help="label=model_dir pairs separated by commas, the teacher first "
                                     "(default: benchmarks/accuracy.py's SST-2 models in --work)")
    ap.add_argument("--glue", help="GLUE data directory (default: <work>/glue_data)")
    ap.add_argument("--out", help="where the pruned and quantized models go (default: <work>/compress)")
    ap.add_argument("--no_pruning", action="store_true", help="skip the structured-pruning sweeps of the teacher")
    args = ap.parse_args()
    work = Path(args.work)
    if args.models:
        models = {label.strip(): Path(path.strip()) for label, _, path in
                  (item.partition("=") for item in args.models.split(",") if item.strip())}
    else:
        models = {label: work / name for label, name in MODELS.items()}
        if not all((d / "config.json").is_file() for d in models.values()):
            print(f"making the SST-2 models with benchmarks/accuracy.py in {work}", flush=True)
            subprocess.run([sys.executable, str(REPO / "benchmarks/accuracy.py"), "--tasks", "SST-2", "--compare",
                            "--work", str(work)], check=True)
    glue = Path(args.glue) if args.glue else work / "glue_data"
    out = Path(args.out) if args.out else work / "compress"
    quantized, vocabulary = {}, {}
    for label, source in models.items():
        vocab, target = out / f"vocab-{_slug(label)}", out / f"int8-{_slug(label)}"
        if not (vocab / "prune_summary.json").is_file():
            xcompress("prune", "--model", str(source), "--task_name", "SST-2", "--data_dir", str(glue),
                      "--pruning_type", "vocabulary", "--quiet", "--overwrite_output_dir", "--output_dir", str(vocab))
        vocabulary[label] = json.loads((vocab / "prune_summary.json").read_text())
        if not (target / "quantize_summary.json").is_file():
            xcompress("quantize", "--model", str(vocab), "--task_name", "SST-2", "--data_dir",
                      str(glue), "--onnx", "--bf16", "--latency_repeats", "10", "--overwrite_output_dir",
                      "--output_dir", str(target))
        quantized[label] = json.loads((target / "quantize_summary.json").read_text())
    latency = interleaved_latency({label: (out / f"vocab-{_slug(label)}", out / f"int8-{_slug(label)}")
                                   for label in models})
    pruned = {}
    # "control" keeps every head: the same recovery fine-tuning without pruning, the fair reference for the
    # sweeps (recovery is extra training, which an under-trained teacher gains from by itself).
    sweeps = [] if args.no_pruning else [("control", "--target_num_of_heads", "12"),
                                         ("heads", "--target_num_of_heads", HEADS), ("ffn", "--target_ffn_size", FFN)]
    for sweep, flag, values in sweeps:
        target = out / f"prune-{sweep}"
        if not (target / "prune_summary.json").is_file():
            xcompress("prune", "--model", str(next(iter(models.values()))), "--task_name", "SST-2",
                      "--data_dir", str(glue), flag, values, "--max_steps", str(args.recovery_steps),
                      "--max_train_examples", "4000", "--max_seq_length", "64", "--eval_step",
                      str(args.recovery_steps), "--learning_rate", "5e-5", "--quiet", "--overwrite_output_dir",
                      "--output_dir", str(target))
        pruned[sweep] = json.loads((target / "prune_summary.json").read_text())
    _report(vocabulary, quantized, latency, pruned, args, out)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.replace("/", "of")).strip("-")


def interleaved_latency(models: dict[str, tuple[Path, Path]], rounds: int = 3, repeats: int = 10) -> dict:
    """Median latency of every form of every model at batch 1 and 32 (sequence 128), all measured in alternation
    within one process so that a slow spell of the machine hits them alike; the median over rounds of each round's
    median. `models`: label -> (fp32 directory, quantize output directory)."""
    import statistics

    import torch

    sys.path.insert(0, str(REPO))
    from compress.measure import cpu_latency
    from compress.onnx_export import FP32_FILE, INT8_FILE, OnnxClassifier
    from compress.quantize import BF16_DIR
    from corpora.glue import get_task
    from tasks.classifier import load_classifier

    task = get_task("SST-2")
    threads = torch.get_num_threads()
    forms = {}
    for label, (fp32_dir, int8_dir) in models.items():
        forms[label] = {"pytorch fp32": load_classifier(str(fp32_dir), "--model", task, need_task_model=True)[0],
                        "pytorch int8": load_classifier(str(int8_dir), "--model", task, need_task_model=True)[0],
                        "pytorch bf16": load_classifier(str(int8_dir / BF16_DIR), "--model", task,
                                                        need_task_model=True)[0],
                        "onnxruntime fp32": OnnxClassifier(int8_dir / "onnx" / FP32_FILE, threads).logits,
                        "onnxruntime int8": OnnxClassifier(int8_dir / "onnx" / INT8_FILE, threads).logits}
    vocab = {label: f["pytorch fp32"].config.vocab_size for label, f in forms.items()}
    times: dict = {label: {b: {1: [], 32: []} for b in f} for label, f in forms.items()}
    for _ in range(rounds):
        for batch in (1, 32):
            for label, backends in forms.items():
                for name, model in backends.items():
                    times[label][name][batch].append(cpu_latency(model, batch, 128, repeats, vocab_size=vocab[label]))
    return {label: {b: {f"latency_b{k}_s": statistics.median(v) for k, v in t.items()} for b, t in per.items()}
            for label, per in times.items()}


def _report(vocabulary: dict, quantized: dict, latency: dict, pruned: dict, args, out: Path) -> None:
    from compress.measure import cpu_has_bf16

    reference = next(iter(vocabulary.values()))["original"]["size_on_disk_bytes"]
    _table("what ships, SST-2 dev: total size on disk against the fp32 teacher's, parameters as stored "
           "(encoder / all), dev accuracy",
           ["model", "form", "MB", "of teacher", "encoder params", "all params", "dev acc", "change (points)"])
    sizes = {}
    for label, summary in vocabulary.items():
        original, pruned_vocab = summary["original"], summary["rows"][0]
        rows = {r["backend"]: r for r in quantized[label]["rows"]}
        forms = {"fp32": (original["size_on_disk_bytes"], original["params"], original["score"]),
                 "fp32, vocabulary pruned": (pruned_vocab["size_on_disk_bytes"], pruned_vocab["params"],
                                             pruned_vocab["score"]),
                 "PyTorch int8, vocabulary pruned": (rows["pytorch int8"]["size_on_disk_bytes"],
                                                     rows["pytorch int8"]["params"], rows["pytorch int8"]["dev"]["acc"]),
                 "ONNX Runtime int8, vocabulary pruned": (rows["onnxruntime int8"]["size_on_disk_bytes"], None,
                                                          rows["onnxruntime int8"]["dev"]["acc"]),
                 "PyTorch bf16, vocabulary pruned": (rows["pytorch bf16"]["size_on_disk_bytes"],
                                                     rows["pytorch bf16"]["params"], rows["pytorch bf16"]["dev"]["acc"])}
        for form, (size, params, acc) in forms.items():
            change = 100 * (acc - original["score"])
            sizes.setdefault(label, {})[form] = {"size_on_disk_bytes": size, "of_teacher": size / reference,
                                                 "params": params, "acc": acc, "change_points": change}
            counts = f"{params['encoder']:,} | {params['total']:,}" if params else "- | -"
            print(f"| {label} | {form} | {size / 1e6:.1f} | 1/{reference / size:.1f} | {counts} | {acc:.4f} | "
                  f"{change:+.2f} |")
        print(f"| {label} | pieces kept | {pruned_vocab['vocabulary']['kept']:,} of "
              f"{pruned_vocab['vocabulary']['original_size']:,} | | | | | |")
    _table("int8 and bf16 forms of the vocabulary-pruned models, SST-2 dev, CPU (2 cores), sequence 128: latency in "
           "ms (speed-up over the same model's PyTorch fp32), every form measured in alternation, median of 3 rounds "
           "of 10",
           ["model", "backend", "b1 ms", "b32 ms", "size MB", "dev acc", "change (points)"])
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
    teacher_label = next(iter(latency))
    teacher = latency[teacher_label]["pytorch fp32"]
    _table(f"speed-up over the fp32 teacher ({teacher_label}, PyTorch) in the same measurement, sequence 128",
           ["model", "backend", "b1", "b32"])
    against_teacher = {}
    for label, per in latency.items():
        for backend, r in per.items():
            ratio1, ratio32 = teacher["latency_b1_s"] / r["latency_b1_s"], teacher["latency_b32_s"] / r["latency_b32_s"]
            against_teacher.setdefault(label, {})[backend] = {"speedup_b1": ratio1, "speedup_b32": ratio32}
            print(f"| {label} | {backend} | {ratio1:.2f}x | {ratio32:.2f}x |")
    if pruned:
        _pruning_table(pruned, args)
    path = REPO / "benchmarks/results/compress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sizes": sizes, "quantization": table, "against_teacher": against_teacher,
                                "bf16_instructions": cpu_has_bf16(), "pruning": {
        k: {"original": v["original"], "rows": v["rows"], "plots": v["plots"]} for k, v in pruned.items()},
        "recovery_steps": args.recovery_steps}, indent=2) + "\n")
    print(f"-> {path}; models in {out}" + ("; pruning plots in prune-*/plots" if pruned else ""))


def _table(title: str, columns: list[str]) -> None:
    print(f"\n{title}\n| {' | '.join(columns)} |\n|{'---|' * len(columns)}")


def _pruning_table(pruned: dict, args) -> None:
    _table(f"structured pruning of the teacher (Taylor importance, allocated over layers), {args.recovery_steps} "
           "recovery steps each, SST-2 dev",
           ["kept", "heads (of 72)", "FFN per layer (of 1536)", "encoder params", "MB", "dev acc", "% of control"])
    control = pruned["control"]["rows"][0]
    for sweep, summary in pruned.items():
        for r in [summary["original"], *summary["rows"]] if sweep == "control" else summary["rows"]:
            pct = 100 * r["score"] / control["score"]
            if sweep == "control":
                r = r | {"name": "original" if r is summary["original"] else "all kept, recovered (control)"}
            print(f"| {r['name']} | {r['heads']} | {r['ffn_size']:.0f} | {r['params']['encoder']:,} | "
                  f"{r['size_on_disk_bytes'] / 1e6:.1f} | {r['score']:.4f} | {pct:.1f} |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
