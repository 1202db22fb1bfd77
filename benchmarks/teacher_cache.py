"""Task distillation with the teacher's outputs computed once (`--teacher_cache`) against computing them every step.

    .venv/bin/python benchmarks/teacher_cache.py [--teacher DIR] [--train_examples 8000] [--steps 60]

Teacher: an SST-2 task model of the embedded teacher (`--teacher`, e.g. runs/bench-accuracy-8k/teacher-SST-2;
without it one is fine-tuned here on 2,000 rows). Student: the teacher's encoder factorized at 1/7 (l = 36, d = 192).
Data: the first `--train_examples` of a seeded draw of SST-2's training rows, sequence 128, batch 32, one process.

For each phase of task distillation (intermediate: attention scores and hidden states of every layer; prediction:
logits), the same `--steps` run three times: without the cache, with a new cache (built first), and with the cache
built. Examples per second count the phase's steps only (from its log, dev evaluation excluded); the build's
seconds are reported beside them, with the number of examples after which the cache has paid for itself.

Prints a table, writes benchmarks/results/teacher_cache.json. Runs its stages one after the other: time it on a
quiet machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
XC = str(REPO / ".venv/bin/xcompress")
BATCH = 32


def xcompress(*args: str) -> None:
    r = subprocess.run([XC, *args, "--quiet"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"xcompress {args[0]} failed:\n{r.stderr[-3000:]}")


def distil(work: Path, name: str, teacher: Path, student: Path, phase: str, args, *extra: str) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    xcompress("task-distill", "--teacher_model", str(teacher), "--student_model", str(student), "--task_name",
              "SST-2", "--data_dir", str(REPO / "data/glue_data"), "--output_dir", str(out), "--stage", phase,
              "--max_train_examples", str(args.train_examples), "--intermediate_max_steps", str(args.steps),
              "--max_steps", str(args.steps), "--eval_step", str(10 * args.steps), "--log_steps", "10",
              "--train_batch_size", str(BATCH), "--max_seq_length", "128", *extra)
    summary = json.loads((out / "task_distill_summary.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    seconds = max(row["seconds"] for row in log if "seconds" in row)  # logged before the final dev evaluation
    p = summary["phases"][0]
    return {"examples_per_second": args.steps * BATCH / seconds, "phase_seconds": seconds,
            "cache": p.get("teacher_cache"), "dev": summary["dev"].get("dev")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, help="SST-2 task model of the embedded teacher")
    ap.add_argument("--train_examples", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--work", type=Path, default=REPO / "runs/bench-teacher-cache")
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks/results/teacher_cache.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.teacher
    if teacher is None:
        teacher = args.work / "teacher-SST-2"
        if not (teacher / "config.json").is_file():
            xcompress("finetune", "--model", "all-MiniLM-L6-v2", "--task_name", "SST-2", "--data_dir",
                      str(REPO / "data/glue_data"), "--output_dir", str(teacher), "--max_train_examples", "2000",
                      "--num_train_epochs", "1", "--overwrite_output_dir")
    student = args.work / "td-36-192"
    if not (student / "config.json").is_file():
        xcompress("decompose", "--teacher_model", str(teacher), "--config", "models/minilm-td-36-192",
                  "--output_dir", str(student), "--overwrite_output_dir")
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for phase in ("intermediate", "prediction"):
        plain = distil(args.work, f"{phase}-plain", teacher, student, phase, args)
        built = distil(args.work, f"{phase}-building", teacher, student, phase, args, "--teacher_cache", str(cache))
        reused = distil(args.work, f"{phase}-cached", teacher, student, phase, args, "--teacher_cache", str(cache))
        gain = 1 / plain["examples_per_second"] - 1 / reused["examples_per_second"]  # seconds saved per example
        rows.append({"phase": phase, "plain": plain, "building": built, "cached": reused,
                     "speedup": reused["examples_per_second"] / plain["examples_per_second"],
                     "build_seconds": built["cache"]["build_seconds"], "cached_examples": built["cache"]["examples"],
                     "break_even_examples": built["cache"]["build_seconds"] / gain if gain > 0 else None})
    result = {"train_examples": args.train_examples, "steps": args.steps, "batch": BATCH, "max_seq_length": 128,
              "teacher": str(teacher), "student": "TD 1/7 (l = 36, d = 192)", "phases": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Task distillation, SST-2 ({args.train_examples} rows), TD 1/7 student, batch {BATCH}, sequence 128, "
          f"{args.steps} steps per run")
    print(f"{'phase':<13} {'no cache ex/s':>13} {'cached ex/s':>11} {'speedup':>7} {'build s':>8} "
          f"{'cached rows':>11} {'pays off after':>14}")
    for r in rows:
        even = f"{r['break_even_examples']:,.0f} ex" if r["break_even_examples"] else "never"
        print(f"{r['phase']:<13} {r['plain']['examples_per_second']:>13.1f} {r['cached']['examples_per_second']:>11.1f} "
              f"{r['speedup']:>6.2f}x {r['build_seconds']:>8.1f} {r['cached_examples']:>11,} {even:>14}")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
