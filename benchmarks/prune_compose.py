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


def xcompress(*args: str) -> None:
    r = subprocess.run([XC, *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"xcompress {args[0]} failed:\n{r.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a T5 fine-tuned on the corpus (default: trained_small_t5)")
    ap.add_argument("--epochs", type=float, default=0.08, help="model-level fine-tuning of a composed version")
    ap.add_argument("--baseline_epochs", type=float, default=0.2, help="fine-tuning of an independent version")
    ap.add_argument("--module_steps", type=int, default=100)
    ap.add_argument("--learning_rate", type=float, default=2e-4)
    ap.add_argument("--work", type=Path, default=REPO / "runs/bench-prune-compose")
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks/results/prune_compose.json")
    args = ap.parse_args()
    model = args.model or trained_small_t5(CORPUS, REPO / "runs/t5/t5de")
    out = args.work / "composed"
    if not (out / "prune_compose_summary.json").is_file():
        xcompress("prune-compose", "--model", str(model), "--task_name", "text", "--data_dir", str(CORPUS),
                  "--output_dir", str(out), "--grid", *GRID, "--num_train_epochs", str(args.epochs),
                  "--baseline_epochs", str(args.baseline_epochs), "--module_steps", str(args.module_steps),
                  "--learning_rate", str(args.learning_rate), "--eval_steps", "100000", "--max_eval_examples", "200",
                  "--generation_max_length", "64", "--quiet")
    s = json.loads((out / "prune_compose_summary.json").read_text())
    composed, baseline = s["results"]["composed"], s["results"]["baseline"]
    totals = s["fine_tuning_cpu_seconds"]
    result = {"model": str(model), "grid": GRID, "epochs": args.epochs, "baseline_epochs": args.baseline_epochs,
              "original_dev_bleu": s["original"]["score"], "distinct_modules": s["distinct_modules"],
              "module_cpu_seconds": s["module_cpu_seconds"],
              "versions": {n: {"composed": {k: composed[n][k] for k in ("score_composed", "score", "steps", "cpu_seconds")},
                               "baseline": {k: baseline[n][k] for k in ("score_composed", "score", "steps", "cpu_seconds")},
                               "sparsity": composed[n]["sparsity"]["all"]} for n in composed},
              "cpu_seconds": totals, "cpu_ratio": totals["composed"] / totals["baseline"],
              "every_version_at_least_baseline": all(composed[n]["score"] >= baseline[n]["score"] for n in composed)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"dev BLEU of the original {result['original_dev_bleu']:.2f}; {s['distinct_modules']} distinct modules "
          f"distilled in {s['module_cpu_seconds'] / 60:.1f} CPU min")
    print(f"{'version':<22}{'sparsity':>9}{'composed: start':>17}{'tuned':>7}{'CPU min':>9}"
          f"{'baseline: start':>17}{'tuned':>7}{'CPU min':>9}")
    for n, v in result["versions"].items():
        c, b = v["composed"], v["baseline"]
        print(f"{n:<22}{v['sparsity']:>9.1%}{c['score_composed']:>17.2f}{c['score']:>7.2f}{c['cpu_seconds'] / 60:>9.1f}"
              f"{b['score_composed']:>17.2f}{b['score']:>7.2f}{b['cpu_seconds'] / 60:>9.1f}")
    print(f"CPU in all: composed {totals['composed'] / 60:.1f} min (modules included), baseline "
          f"{totals['baseline'] / 60:.1f} min: {result['cpu_ratio']:.0%} (goal at most 60 %); every version at least "
          f"its baseline: {result['every_version_at_least_baseline']}")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
