"""Composable pruning against independent prune-and-fine-tune runs, side by side, on the small T5 of the shipped
English -> German corpus (text2text.t5_from_corpus.trained_small_t5 makes it when --model is not given).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_compose.py [--model DIR] [--epochs 0.08] [--baseline_epochs 0.2]

Four versions: attention (self and cross) at 0.5 or 0.7, feed-forward at 0.5 or 0.7. Composed arm: each of the
distinct modules (a block at a rate) pruned and locally distilled once, each version composed and fine-tuned whole
for `--epochs`. Baseline arm: each version from pruned-only modules, fine-tuned whole for `--baseline_epochs`: four
independent prune-and-fine-tune runs. Both arms in one prune-compose run, same data, seeds and dev pairs (200,
greedy, 64 pieces); CPU time is the process's own (validations included, module capture and distillation counted
in the composed arm). Goal: every composed version at least its baseline's dev BLEU with at most 60 % of the
baseline's total CPU.

Prints a table, writes benchmarks/results/prune_compose.json. Rerunning with the same output skips the run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_compose.py --encoder [--model DIR]

The same on an encoder, the DistilBERT habit of composable pruning's users (they run it on IMDb, which is not here;
SST-2 is the sentiment task at hand): `--model` an SST-2 task model of any encoder family; without it, the embedded
MiniLM fine-tuned on 8,000 SST-2 sentences (1 epoch, lr 5e-5: accuracy.py's `--teacher_examples 8000` teacher),
written in DistilBERT's layout (tests/transplants.py) with its own head trained for 100 steps, as accuracy.py's
`--families distilbert` does. Versions: attention 0.5 or 0.7, FFN 0.5 or
0.7 (24 distinct modules: six layers' attention and FFN at two rates each, where four independent runs prune 48).
Model-level fine-tuning on the same 8,000 sentences at lr 5e-5 (`--epochs 0.25` composed, `--baseline_epochs 0.6`
baseline unless given), scored on all 872 dev sentences. Writes benchmarks/results/prune_compose_encoder.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from text2text.t5_from_corpus import trained_small_t5  # noqa: E402

XC = str(REPO / ".venv/bin/xcompress")
CORPUS = REPO / "data/parallel/gettext-en-de"

GRID = ["self_attention,cross_attention=0.5,0.7", "feed_forward=0.5,0.7"]
GLUE = REPO / "data/glue_data"
ENCODER_GRID = ["attention=0.5,0.7", "ffn=0.5,0.7"]
ENCODER_EXAMPLES = 8000


def xcompress(*args: str) -> None:
    r = subprocess.run([XC, *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"xcompress {args[0]} failed:\n{r.stderr[-3000:]}")


def sst2_distilbert(work: Path) -> Path:
    """The embedded MiniLM fine-tuned on 8,000 SST-2 sentences, written as a DistilBERT task model whose own head
    (a ReLU layer where BERT's pooler is tanh: it cannot be moved) is then trained for 100 steps."""
    from tests.transplants import transplant

    on_task = ["--task_name", "SST-2", "--data_dir", str(GLUE), "--max_train_examples", str(ENCODER_EXAMPLES),
               "--learning_rate", "5e-5", "--overwrite_output_dir", "--quiet"]
    teacher, moved, distilbert = work / "teacher-SST-2", work / "distilbert-moved", work / "distilbert-SST-2"
    if not (teacher / "finetune_summary.json").is_file():
        xcompress("finetune", "--model", "all-MiniLM-L6-v2", "--output_dir", str(teacher), "--num_train_epochs", "1",
                  "--eval_step", "1000", *on_task)
    if not (distilbert / "finetune_summary.json").is_file():
        transplant(teacher, "distilbert", moved)
        xcompress("finetune", "--model", str(moved), "--output_dir", str(distilbert), "--max_steps", "100",
                  "--eval_step", "100", *on_task)
    return distilbert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", action="store_true", help="compose versions of an SST-2 encoder instead of the T5")
    ap.add_argument("--model", type=Path, help="a T5 fine-tuned on the corpus (default: trained_small_t5), or with "
                                               "--encoder an SST-2 task model (default: the DistilBERT above)")
    ap.add_argument("--epochs", type=float, help="model-level fine-tuning of a composed version (0.08 T5, 0.25 "
                                                 "encoder)")
    ap.add_argument("--baseline_epochs", type=float, help="fine-tuning of an independent version (0.2, 0.6)")
    ap.add_argument("--module_steps", type=int, default=100)
    ap.add_argument("--learning_rate", type=float, help="model-level fine-tuning rate (2e-4 T5, 5e-5 encoder)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    encoder = args.encoder
    work = args.work or REPO / ("runs/bench-prune-compose-encoder" if encoder else "runs/bench-prune-compose")
    output = args.output or REPO / f"benchmarks/results/prune_compose{'_encoder' if encoder else ''}.json"
    epochs = args.epochs or (0.25 if encoder else 0.08)
    baseline_epochs = args.baseline_epochs or (0.6 if encoder else 0.2)
    learning_rate = args.learning_rate or (5e-5 if encoder else 2e-4)
    if encoder:
        model = args.model or sst2_distilbert(work)
        grid, on_task = ENCODER_GRID, ["--task_name", "SST-2", "--data_dir", str(GLUE), "--max_train_examples",
                                       str(ENCODER_EXAMPLES), "--max_seq_length", "128"]
    else:
        model = args.model or trained_small_t5(CORPUS, REPO / "runs/t5/t5de")
        grid, on_task = GRID, ["--task_name", "text", "--data_dir", str(CORPUS), "--max_eval_examples", "200",
                               "--generation_max_length", "64"]
    out = work / "composed"
    if not (out / "prune_compose_summary.json").is_file():
        xcompress("prune-compose", "--model", str(model), *on_task, "--output_dir", str(out), "--grid", *grid,
                  "--num_train_epochs", str(epochs), "--baseline_epochs", str(baseline_epochs), "--module_steps",
                  str(args.module_steps), "--learning_rate", str(learning_rate), "--eval_steps", "100000", "--quiet")
    s = json.loads((out / "prune_compose_summary.json").read_text())
    composed, baseline = s["results"]["composed"], s["results"]["baseline"]
    totals = s["fine_tuning_cpu_seconds"]
    metric = "accuracy" if encoder else "BLEU"
    result = {"model": str(model), "family": s["family"], "task": s["task"], "metric": metric, "grid": grid,
              "epochs": epochs, "baseline_epochs": baseline_epochs, "learning_rate": learning_rate,
              "original_dev": s["original"]["score"], "distinct_modules": s["distinct_modules"],
              "module_cpu_seconds": s["module_cpu_seconds"],
              "versions": {n: {"composed": {k: composed[n][k] for k in ("score_composed", "score", "steps", "cpu_seconds")},
                               "baseline": {k: baseline[n][k] for k in ("score_composed", "score", "steps", "cpu_seconds")},
                               "sparsity": composed[n]["sparsity"]["all"]} for n in composed},
              "cpu_seconds": totals, "cpu_ratio": totals["composed"] / totals["baseline"],
              "every_version_at_least_baseline": all(composed[n]["score"] >= baseline[n]["score"] for n in composed)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")

    scale = 100 if encoder else 1  # accuracy in %, BLEU as sacrebleu gives it
    print(f"{s['family']} on {s['task']}: dev {metric} of the original {scale * result['original_dev']:.2f}; "
          f"{s['distinct_modules']} distinct modules distilled in {s['module_cpu_seconds'] / 60:.1f} CPU min")
    print(f"{'version':<22}{'sparsity':>9}{'composed: start':>17}{'tuned':>7}{'CPU min':>9}"
          f"{'baseline: start':>17}{'tuned':>7}{'CPU min':>9}")
    for n, v in result["versions"].items():
        c, b = v["composed"], v["baseline"]
        print(f"{n:<22}{v['sparsity']:>9.1%}{scale * c['score_composed']:>17.2f}{scale * c['score']:>7.2f}"
              f"{c['cpu_seconds'] / 60:>9.1f}{scale * b['score_composed']:>17.2f}{scale * b['score']:>7.2f}"
              f"{b['cpu_seconds'] / 60:>9.1f}")
    print(f"CPU in all: composed {totals['composed'] / 60:.1f} min (modules included), baseline "
          f"{totals['baseline'] / 60:.1f} min: {result['cpu_ratio']:.0%} (goal at most 60 %); every version at least "
          f"its baseline: {result['every_version_at_least_baseline']}")
    print(f"-> {output}")


if __name__ == "__main__":
    main()
