"""Per-part pruning of a small T5 trained on the shipped English -> German corpus: the score after each part, each
part's final sparsity against its amount, the file on disk against 1.2 x (1 - overall sparsity) of the fp32 file,
and test BLEU at generation lengths 20 and 64 before and after.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_schedule.py [--model DIR] [--epoch_scale 0.006]

Model: `--model`, a T5 fine-tuned on data/parallel/gettext-en-de. Without it, the one of the closing figures is made
(runs/t5/t5de) by text2text.t5_from_corpus.trained_small_t5: t5-small's architecture at d_model 256, d_ff 1024, 8
heads of 32, 4 + 4 layers, an 8,000-piece Unigram vocabulary of the training texts (9.3 M parameters), trained by
seq2seq-finetune for 3,000 steps at batch 64, lr 1e-3. That took 2.6 minutes on an H200; here it is about two hours
of one core.

Schedule: the NNI tutorial's amounts and epochs (self-attention 0.9 for 15 epochs, cross-attention 0.4 for 20,
feed-forward 0.7 for 15, lm_head 0.8 for 30) with the epochs scaled by `--epoch_scale` to fit a CPU session.
Dev scores come from the schedule (300 dev pairs, greedy, 64 pieces); test scores from seq2seq-evaluate (the first
1,000 test pairs of a seeded draw, greedy). Each stage is skipped when its output exists, and prune-schedule itself
resumes after its last finished part: rerunning the same command continues.

Prints a table, writes benchmarks/results/prune_schedule.json.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_schedule.py --encoder runs/bench-accuracy-8k/teacher-SST-2

The same schedule on an encoder: `--encoder`, an SST-2 task model of the embedded teacher (MiniLM, 6 layers). Parts
attention 0.5, ffn 0.7, embeddings 0.5, classifier 0.3 (the T5 amounts do not transfer: a 6-layer encoder's FFN
at 0.9 is another model), each fine-tuned for `--encoder_epochs` on the first `--encoder_train_examples` of a seeded
draw of the training sentences, scored on all 872 dev sentences. Twice: unstructured, and with attention and FFN
pruned in whole heads and neurons; then `report` times the original and both (CPU, sequence 128, batch 1 and 32):
dense kernels gain nothing from zeros, and should from smaller matrices. Writes
benchmarks/results/prune_schedule_encoder.json; run it on a quiet machine.
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
NNI = (("self_attention", 0.9, 15), ("cross_attention", 0.4, 20), ("feed_forward", 0.7, 15), ("lm_head", 0.8, 30))
LENGTHS = (20, 64)
ENCODER = (("attention", 0.5), ("ffn", 0.7), ("embeddings", 0.5), ("classifier", 0.3))
# The same amounts unstructured, and with attention and FFN removed in whole heads and neurons (a kernel's shapes).
ENCODER_VARIANTS = {"unstructured": {}, "heads+rows": {"attention": "heads", "ffn": "rows"}}


def xcompress(*args: str) -> None:
    r = subprocess.run([XC, *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"xcompress {args[0]} failed:\n{r.stderr[-3000:]}")


def test_scores(model: Path, work: Path, name: str, examples: int) -> dict:
    """Test metrics and generation latency at each generation length."""
    out = {}
    for length in LENGTHS:
        target = work / f"eval-{name}-{length}"
        result = target / "eval_results_text_test.json"
        if not result.is_file():
            xcompress("seq2seq-evaluate", "--model", str(model), "--task_name", "text", "--data_dir", str(CORPUS),
                      "--split", "test", "--output_dir", str(target), "--max_eval_examples", str(examples),
                      "--generation_max_length", str(length), "--latency_examples", "64", "--quiet")
        r = json.loads(result.read_text())
        out[length] = {"bleu": r["metrics"]["bleu"], "chrf": r["metrics"]["chrf"], "ms_per_sentence": r["ms_per_sentence"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a T5 fine-tuned on the corpus (default: made as the docstring says)")
    ap.add_argument("--epoch_scale", type=float, default=0.006, help="the NNI epochs are multiplied by this")
    ap.add_argument("--learning_rate", type=float, default=2e-4)
    ap.add_argument("--test_examples", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=REPO / "runs/bench-prune-schedule")
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks/results/prune_schedule.json")
    ap.add_argument("--encoder", type=Path, help="an SST-2 task model: run the encoder schedule on it instead")
    ap.add_argument("--encoder_epochs", type=float, default=0.25)
    ap.add_argument("--encoder_train_examples", type=int, default=8000)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.encoder:
        return encoder_schedule(args)
    model = args.model or trained_small_t5(CORPUS, REPO / "runs/t5/t5de")
    schedule = ",".join(f"{part}:{amount}:{epochs * args.epoch_scale:g}" for part, amount, epochs in NNI)
    pruned = args.work / "pruned"
    if not (pruned / "prune_schedule_summary.json").is_file():
        xcompress("prune-schedule", "--model", str(model), "--task_name", "text", "--data_dir", str(CORPUS),
                  "--output_dir", str(pruned), "--schedule", schedule, "--learning_rate", str(args.learning_rate),
                  "--eval_steps", "100000", "--max_eval_examples", "300", "--generation_max_length", "64", "--quiet")
    s = json.loads((pruned / "prune_schedule_summary.json").read_text())
    tests = {"original": test_scores(model, args.work, "original", args.test_examples),
             "pruned": test_scores(pruned, args.work, "pruned", args.test_examples)}
    overall = s["sparsity"]["all"]["sparsity"]
    result = {"model": str(model), "schedule": schedule, "learning_rate": args.learning_rate,
              "original_dev_bleu": s["original"]["score"],
              "parts": [{k: r[k] for k in ("part", "amount", "epochs", "steps", "score_after_pruning", "score",
                                           "cpu_seconds")} | {"sparsity": {p: v["sparsity"] for p, v in r["sparsity"].items()}}
                        for r in s["parts"]],
              "final_sparsity": {p: v["sparsity"] for p, v in s["sparsity"].items()},
              "asked": {part: amount for part, amount, _ in NNI},
              "bytes": s["bytes"], "original_bytes": s["original_bytes"], "size_ratio": s["bytes"] / s["original_bytes"],
              "size_goal": 1.2 * (1 - overall), "test": tests}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"schedule {schedule} (lr {args.learning_rate:g}); dev BLEU of the original {result['original_dev_bleu']:.2f}")
    print(f"{'after part':<16}{'amount':>8}{'steps':>7}{'dev BLEU pruned':>17}{'dev BLEU tuned':>16}"
          + "".join(f"{p:>17}" for p in result["asked"]) + f"{'CPU min':>9}")
    for r in result["parts"]:
        print(f"{r['part']:<16}{r['amount']:>8.0%}{r['steps']:>7}{r['score_after_pruning']:>17.2f}{r['score']:>16.2f}"
              + "".join(f"{r['sparsity'][p]:>17.2%}" for p in result["asked"]) + f"{r['cpu_seconds'] / 60:>9.1f}")
    worst = max(abs(result["final_sparsity"][p] - a) for p, a in result["asked"].items())
    print(f"final sparsity: largest gap to the asked amount {worst:.3%} (goal 0.5 %); overall {overall:.1%}")
    print(f"on disk {result['bytes'] / 1e6:.2f} MB against {result['original_bytes'] / 1e6:.2f} MB: "
          f"{result['size_ratio']:.3f} x (goal at most {result['size_goal']:.3f} x)")
    print(f"{'test':<10}" + "".join(f"{f'BLEU @{n}':>10}{f'chrF @{n}':>10}{f'ms b1 @{n}':>11}{f'ms b32 @{n}':>12}"
                                      for n in LENGTHS))
    for name, t in tests.items():
        print(f"{name:<10}" + "".join(f"{t[n]['bleu']:>10.2f}{t[n]['chrf']:>10.2f}{t[n]['ms_per_sentence']['batch_1']:>11.1f}"
                                      f"{t[n]['ms_per_sentence']['batch_32']:>12.1f}" for n in LENGTHS))
    print(f"-> {args.output}")


def encoder_schedule(args) -> None:
    """Both encoder schedules, then `report` times the original and both pruned models side by side."""
    result = {"model": str(args.encoder), "asked": dict(ENCODER), "schedules": {}}
    models = {"original": args.encoder}
    for variant, shapes in ENCODER_VARIANTS.items():
        schedule = ",".join(f"{part}:{amount}:{args.encoder_epochs:g}" + (f":{shapes[part]}" if part in shapes else "")
                            for part, amount in ENCODER)
        pruned = models[variant] = args.work / f"encoder-{variant}"
        if not (pruned / "prune_schedule_summary.json").is_file():
            xcompress("prune-schedule", "--model", str(args.encoder), "--task_name", "SST-2", "--data_dir",
                      str(REPO / "data/glue_data"), "--output_dir", str(pruned), "--schedule", schedule,
                      "--max_train_examples", str(args.encoder_train_examples), "--eval_steps", "100000", "--quiet")
        s = json.loads((pruned / "prune_schedule_summary.json").read_text())
        result["original_dev"], result["original_val_loss"] = s["original"]["score"], s["original"]["val_loss"]
        result["schedules"][variant] = {
            "schedule": schedule, "learning_rate": s["learning_rate"],
            "parts": [{k: r[k] for k in ("part", "amount", "shape", "epochs", "steps", "score_after_pruning", "score",
                                         "cpu_seconds", "reduction")} | {"val_loss": r["history"][-1]["val_loss"]}
                      for r in s["parts"]],
            "final_reduction": s["reduction"], "bytes": s["bytes"], "original_bytes": s["original_bytes"],
            "size_ratio": s["bytes"] / s["original_bytes"], "size_goal": 1.2 * (1 - s["reduction"]["all"])}
    timing = args.work / "encoder-report"
    if not (timing / "report.json").is_file():
        xcompress("report", "--task_name", "SST-2", "--data_dir", str(REPO / "data/glue_data"), "--output_dir",
                  str(timing), "--models", ",".join(f"{k}={v}" for k, v in models.items()))
    rows = json.loads((timing / "report.json").read_text())["rows"]
    result["timing"] = {r["label"]: {k: r[k] for k in ("score", "latency_b1_s", "latency_b32_s", "size_on_disk_bytes",
                                                        "encoder_params")} for r in rows}
    output = args.output.with_name(args.output.stem + "_encoder.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"SST-2 task model {args.encoder}: dev accuracy {result['original_dev']:.4f}, validation loss "
          f"{result['original_val_loss']:.4f}")
    for variant, v in result["schedules"].items():
        print(f"\n{variant}: {v['schedule']} (lr {v['learning_rate']:g})")
        print(f"{'after part':<12}{'amount':>8}{'shape':>14}{'steps':>7}{'dev pruned':>12}{'dev tuned':>11}"
              f"{'val loss':>10}" + "".join(f"{p + ' gone':>17}" for p in result["asked"]) + f"{'CPU min':>9}")
        for r in v["parts"]:
            print(f"{r['part']:<12}{r['amount']:>8.0%}{r['shape']:>14}{r['steps']:>7}{r['score_after_pruning']:>12.4f}"
                  f"{r['score']:>11.4f}{r['val_loss']:>10.4f}"
                  + "".join(f"{r['reduction'][p]:>17.2%}" for p in result["asked"]) + f"{r['cpu_seconds'] / 60:>9.1f}")
        worst = max(abs(v["final_reduction"][p] - a) for p, a in result["asked"].items())
        print(f"largest gap to the asked amount {worst:.3%} (goal 0.5 %); on disk {v['bytes'] / 1e6:.2f} MB against "
              f"{v['original_bytes'] / 1e6:.2f} MB: {v['size_ratio']:.3f} x (goal at most {v['size_goal']:.3f} x)")
    print(f"\n{'model':<14}{'dev acc':>9}{'encoder params':>16}{'MB':>8}{'ms batch 1':>12}{'ms batch 32':>13}")
    for label, t in result["timing"].items():
        print(f"{label:<14}{t['score']:>9.4f}{t['encoder_params']:>16,}{t['size_on_disk_bytes'] / 1e6:>8.1f}"
              f"{t['latency_b1_s'] * 1e3:>12.1f}{t['latency_b32_s'] * 1e3:>13.1f}")
    print(f"-> {output}")


if __name__ == "__main__":
    main()
