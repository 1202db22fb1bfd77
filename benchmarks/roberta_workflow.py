"""The RoBERTa workflow users run with TextPruner and TextBrewer (configs/roberta-workflow.yaml), measured: structured
pruning swept over heads and over FFN size (score and size against each), distillation into a RoBERTa of half the
depth with intermediate losses, int8, and the before/after table of size, dev score and latency.

No RoBERTa checkpoint can be fetched here, so the RoBERTa is the embedded teacher fine-tuned on SST-2 and moved into
RoBERTa's layout (tests/transplants.py: the same function, its classification head included); the pipeline is the
one a user points at a fine-tuned roberta-large (`vars.teacher`).

    .venv/bin/python benchmarks/roberta_workflow.py [--bert_teacher DIR] [--teacher_examples 8000]

--bert_teacher reuses a BERT SST-2 teacher (e.g. runs/bench-accuracy-8k/teacher-SST-2, fine-tuned by
benchmarks/accuracy.py --teacher_examples 8000); otherwise one is fine-tuned here on that many rows (about 25 CPU
minutes). Every stage's output stays in runs/roberta-workflow; a rerun resumes. Prints the tables and writes
benchmarks/results/roberta-workflow.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
XC = str(REPO / ".venv/bin/xcompress")
PIPELINE = REPO / "configs/roberta-workflow.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bert_teacher", default=None, help="a BERT model fine-tuned on SST-2 to move into RoBERTa's layout")
    ap.add_argument("--teacher_examples", type=int, default=8000)
    args = ap.parse_args()
    plan = yaml.safe_load(PIPELINE.read_text())
    work, v = REPO / plan["work_dir"], plan["vars"]
    glue, teacher = REPO / v["glue"], REPO / v["teacher"]
    task_dir = glue / v["task"]
    if not (task_dir / "dev.tsv").is_file():
        shutil.copytree(REPO / "data/glue_data" / v["task"], task_dir)
    if not (teacher / "config.json").is_file():
        bert = Path(args.bert_teacher) if args.bert_teacher else work / "bert-teacher"
        if not (bert / "config.json").is_file():
            _run("finetune", "--model", "all-MiniLM-L6-v2", "--task_name", v["task"], "--data_dir", str(glue),
                 "--max_train_examples", str(args.teacher_examples), "--num_train_epochs", "1", "--max_seq_length",
                 str(v["seq"]), "--eval_step", "1000", "--output_dir", str(bert), "--quiet")
        sys.path.insert(0, str(REPO))
        from tests.transplants import transplant

        transplant(bert, "roberta", teacher)
    _run("pipeline", str(PIPELINE))
    report = json.loads((work / "report/report.json").read_text())
    sweeps = {axis: json.loads((work / axis / "prune_summary.json").read_text()) for axis in ("heads", "ffn")}
    print(f"\n{plan['name']}: {v['task']} dev, sequence {v['seq']}, teacher {teacher} (a RoBERTa)")
    print("| sweep | setting | heads | FFN per layer | score | % of teacher | size MB |")
    print("|---|---|---|---|---|---|---|")
    for axis, s in sweeps.items():
        for r in [s["original"], *s["rows"]]:
            print(f"| {axis} | {r.get('name', 'teacher')} | {r['heads']} | {r['ffn_size']:.0f} | {r['score']:.4f} | "
                  f"{r.get('percent_of_original', 100.0):.1f} | {r['size_on_disk_bytes'] / 1e6:.1f} |")
    print("\n| model | type | score | % of teacher | encoder params | size MB | latency b1 ms | latency b32 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        print(f"| {r['label']} | {r['model_type']}{' int8' if r['quantized'] else ''} | {r['score']:.4f} | "
              f"{r['percent_of_reference']:.1f} | {r['encoder_params']:,} | {r['size_on_disk_bytes'] / 1e6:.1f} | "
              f"{1e3 * r['latency_b1_s']:.1f} | {1e3 * r['latency_b32_s']:.0f} |")
    plots = [p for s in sweeps.values() for p in s.get("plots", [])]
    out = REPO / "benchmarks/results/roberta-workflow.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pipeline": str(PIPELINE.relative_to(REPO)), "vars": v, "sweeps": sweeps,
                               "report": report, "plots": plots}, indent=2) + "\n")
    print(f"-> {out}; plots: {', '.join(plots)}")


def _run(*args: str) -> None:
    r = subprocess.run([XC, *args], cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"xcompress {args[0]} failed (exit {r.returncode})")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
