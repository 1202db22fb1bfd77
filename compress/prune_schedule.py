"""The prune-schedule stage: a model pruned part by part, each part by global L1 magnitude with its own amount and
fine-tuned for its own number of epochs before the next part is pruned (the NNI tutorial's habit):

    xcompress prune-schedule --model runs/t5-de --task_name text --data_dir data/parallel/gettext-en-de \
        --output_dir runs/t5-de-pruned \
        --schedule self_attention:0.9:15,cross_attention:0.4:20,feed_forward:0.7:15,lm_head:0.8:30
    xcompress prune-schedule --model runs/teacher-sst2 --task_name SST-2 --data_dir data/glue_data \
        --output_dir runs/sst2-pruned --schedule attention:0.5:1,ffn:0.7:1,embeddings:0.5:1,classifier:0.3:1

Text-to-text models (T5) have their family's parts (modeling/families.py: self_attention, cross_attention,
feed_forward, lm_head) and are fine-tuned by seq2seq-finetune. Encoder task models (every encoder family, and TD
models) have the weight groups of compress/prune_unstructured.py (attention, ffn, embeddings, classifier; factors
for a TD model) and are fine-tuned on the gold labels by finetune, or by distilling `--teacher_model`'s
predictions as task-distill does. Within a part the smallest |w| over all its matrices are zeroed
(torch.nn.utils.prune.global_unstructured), so the part's sparsity is the asked amount and layers lose unequal
shares. Fine-tuning holds every zero at zero, so a part pruned early stays at its amount to the end. T5 ties
`lm_head` to the input embeddings: pruning it prunes them.

After each part the run records the dev score right after pruning and after fine-tuning, and every part's
sparsity; a run that is stopped resumes after the last finished part when the same command is given again. Into
`--output_dir`: the model (stored compactly, modeling/sparse_storage.py, unless `--store dense`), its tokenizer,
`training_stats.csv` (every validation of every part), `loss.png` (training and validation loss over the
schedule), `prune_schedule_results.md`, and the config and summary.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from stagekit.atomic import atomic_output_dir, check_output_dir, fresh_dir, partial_dir, write_json
from stagekit.errors import InputError
from stagekit.options import above, at_least, check_values, option
from stagekit.outputs import finish_stage
from stagekit.training_log import write_stats
from text2text.finetune import STATS_COLUMNS

from .measure import size_on_disk
from .prune_shapes import two_of_four_problem
from .prune_targets import Step, TextToTextModel, target_of

STAGE = "prune-schedule"
# What a resumed run must share with the run that left its parts behind.
NOT_IDENTITY = ("output_dir", "overwrite_output_dir", "quiet")


@dataclasses.dataclass
class PruneScheduleConfig:
    model: str = option(help="a fine-tuned text-to-text model (T5) or encoder task model (any encoder family, TD)")
    task_name: str = option(help="a GLUE task name, or 'text' (a TSV of source and target texts in --data_dir) for a "
                                 "text-to-text model")
    data_dir: str = option()
    output_dir: str = option()
    schedule: str = option(help="part:amount:epochs,... in the order applied, e.g. "
                                "self_attention:0.9:15,cross_attention:0.4:20,feed_forward:0.7:15,lm_head:0.8:30 "
                                "(T5) or attention:0.5:1,ffn:0.7:1,embeddings:0.5:1,classifier:0.3:1 (encoders)")
    store: str = option("sparse", choices=["sparse", "dense"],
                        help="sparse: one bit per weight and the non-zero values (xcompress reads it); dense: the "
                             "plain model.safetensors transformers reads")
    learning_rate: float | None = option(None, help="fine-tuning rate (default 5e-4 for text-to-text models, 2e-5 "
                                         "for encoders)", check=above(0))
    teacher_model: str | None = option(None, help="encoders: recover by distilling this fine-tuned teacher's "
                                                  "predictions (task-distill's prediction phase) instead of fine-tuning")
    max_seq_length: int = option(128, help="encoders: pieces per example", check=at_least(1))
    train_batch_size: int = option(32, check=at_least(1))
    eval_batch_size: int = option(64, check=at_least(1))
    eval_steps: int = option(500, help="validate every this many steps within a part (and at its end)",
                             check=at_least(1))
    max_source_length: int = option(128, help="text-to-text: source pieces", check=at_least(2))
    max_target_length: int = option(128, check=at_least(2))
    generation_max_length: int = option(64, help="new pieces generated at most per text", check=at_least(1))
    generation_num_beams: int = option(1, check=at_least(1))
    max_train_examples: int | None = option(None, help="a seeded subset of the training pairs", check=at_least(1))
    max_eval_examples: int | None = option(500, help="text-to-text: dev pairs generated at each validation (an "
                                           "encoder is scored on the whole dev set)", check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = PruneScheduleConfig


def parse_schedule(text: str, family: str, shapes: dict[str, tuple[str, ...]]) -> list[Step]:
    """The steps of `--schedule` (part:amount:epochs, and :shape where it is not unstructured), refused in one line
    when a part is unknown or named twice, a shape is not one the part offers (`shapes`: part -> its shapes), an
    amount is outside [0, 1) (exactly 0.5 for 2of4) or an epoch count is not positive."""
    steps, parts = [], tuple(shapes)
    for item in text.split(","):
        fields = item.strip().split(":")
        if len(fields) not in (3, 4):
            raise InputError(f"--schedule {text}: '{item}' is not part:amount:epochs[:shape]")
        part, amount, epochs, shape = (*fields, "unstructured")[:4]
        if part not in parts:
            raise InputError(f"--schedule {text}: '{part}' is no part of a {family} model ({', '.join(parts)})")
        try:
            step = Step(part, float(amount), float(epochs), shape)
        except ValueError:
            raise InputError(f"--schedule {text}: '{item}': amount and epochs must be numbers") from None
        if not 0 <= step.amount < 1:
            raise InputError(f"--schedule {text}: '{item}': the amount is a fraction in [0, 1)")
        if shape not in shapes[part]:
            raise InputError(f"--schedule {text}: '{item}': {part} is pruned in these shapes: "
                             f"{', '.join(shapes[part])}")
        if shape == "2of4" and step.amount != 0.5:
            raise InputError(f"--schedule {text}: '{item}': 2of4 zeroes exactly half the weights (amount 0.5)")
        if step.epochs <= 0:
            raise InputError(f"--schedule {text}: '{item}': each part is fine-tuned for more than 0 epochs")
        if part in (s.part for s in steps):
            raise InputError(f"--schedule {text}: '{part}' is named twice")
        steps.append(step)
    return steps


def run(cfg: PruneScheduleConfig) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_values(cfg)
    model_dir, target = target_of(cfg, STAGE)
    steps = parse_schedule(cfg.schedule, target.name, target.shapes)
    original = target.load(model_dir)
    for step in steps:
        if step.shape == "2of4" and (problem := two_of_four_problem(target.weights(original, step.part))):
            raise InputError(f"--schedule {cfg.schedule}: {step.part} cannot take 2of4: {problem}")
    original_weights = {p: s["weights"] for p, s in target.sparsity(original).items()}
    learning_rate = cfg.learning_rate or target.learning_rate
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    started, cpu_started = time.perf_counter(), time.process_time()
    work = partial_dir(out)
    identity = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IDENTITY}
    state_file = work / "schedule_state.json"
    state = read_state(state_file)
    if state is None or state["identity"] != identity:
        fresh_dir(work)
        state = {"identity": identity, "original": target.reference(), "done": []}
        write_json(state_file, state)
    elif not cfg.quiet:
        print(f"prune-schedule: resuming after part {len(state['done'])} of {len(steps)} ({work})", flush=True)
    source = Path(state["done"][-1]["model_dir"]) if state["done"] else model_dir

    # --- loop: prune one part, fine-tune, record -------------------------------------------------------------
    for k, step in enumerate(steps[len(state["done"]):], start=len(state["done"]) + 1):
        step_dir = fresh_dir(work / f"{k}-{step.part}")
        model = target.load(source)
        target.prune(model, step)
        target.save(model, source, step_dir / "pruned")
        tuned = target.finetune(step_dir / "pruned", step_dir / "tuned", step.epochs, learning_rate)
        shutil.rmtree(step_dir / "pruned")
        zeros = target.sparsity(target.load(step_dir / "tuned"))
        record = {"part": step.part, "amount": step.amount, "epochs": step.epochs, "shape": step.shape, **tuned,
                  "sparsity": zeros, "reduction": reduction(zeros, original_weights),
                  "model_dir": str(step_dir / "tuned")}
        if source != model_dir:
            shutil.rmtree(source.parent)  # only the latest part's model is needed to resume
        state["done"].append(record)
        write_json(state_file, state)
        source = step_dir / "tuned"
        if not cfg.quiet:
            print(f"prune-schedule part {k} {step.part} {step.amount:.0%}: dev {record['score_after_pruning']:.4f} "
                  f"after pruning -> {record['score']:.4f} after {step.epochs:g} epochs; overall "
                  f"{record['reduction']['all']:.1%} of the weights gone", flush=True)

    # --- cleanup -------------------------------------------------------------------------------------------
    model = target.load(source)
    summary = {"model": str(model_dir), "task": target.task.name, "family": target.name,
               "tied_lm_head": isinstance(target, TextToTextModel) and bool(getattr(model.config, "tie_word_embeddings", False)),
               "original": state["original"], "parts": state["done"], "final": state["done"][-1]["dev"],
               "sparsity": target.sparsity(model), "reduction": reduction(target.sparsity(model), original_weights),
               "store": cfg.store, "learning_rate": learning_rate,
               "original_bytes": size_on_disk(model_dir), "seconds": time.perf_counter() - started,
               "cpu_seconds_this_run": time.process_time() - cpu_started, "output_dir": str(out),
               "config": dataclasses.asdict(cfg)}
    with atomic_output_dir(out) as tmp:
        target.publish(model, source, tmp)
        summary["bytes"] = size_on_disk(tmp)
        _write_stats(tmp / "training_stats.csv", state["done"])
        _plot_losses(tmp / "loss.png", state["done"])
        (tmp / "prune_schedule_results.md").write_text(report_table(summary) + "\n")
        finish_stage(tmp, STAGE, cfg, summary)
    shutil.rmtree(work)
    return summary


def reduction(zeros: dict[str, dict[str, float]], original_weights: dict[str, int]) -> dict[str, float]:
    """Per part, the fraction of its original weights that are gone: zeroed, or removed with whole rows and heads."""
    return {p: 1 - (s["weights"] - s["zeros"]) / original_weights[p] for p, s in zeros.items()}


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_stats(path: Path, parts: list[dict[str, Any]]) -> None:
    write_stats(path, ("part", *STATS_COLUMNS), [{"part": r["part"], **row} for r in parts for row in r["history"]])


def _plot_losses(path: Path, parts: list[dict[str, Any]]) -> None:
    """Training and validation loss against optimizer steps over the whole schedule, a line where each part starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    offset = 0
    for i, record in enumerate(parts):
        h = record["history"]
        ax.axvline(offset, color="grey", lw=0.6, ls=":")
        ax.text(offset, 1.0, f" {record['part']}", transform=ax.get_xaxis_transform(), va="top", fontsize=7)
        trained = [r for r in h if r["train_loss"] is not None]
        ax.plot([offset + r["step"] for r in trained], [r["train_loss"] for r in trained], "o-", color="C0",
                label="training loss" if i == 0 else None)
        ax.plot([offset + r["step"] for r in h], [r["val_loss"] for r in h], "s--", color="C1",
                label="validation loss" if i == 0 else None)
        offset += record["steps"]
    ax.set_xlabel("optimizer steps over the schedule")
    ax.set_ylabel("cross-entropy per target piece")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_table(summary: dict[str, Any]) -> str:
    o = summary["original"]
    lines = [f"# Per-part pruning of {summary['model']} on {summary['task']}", "",
             "| after | amount | shape | epochs | dev after pruning | dev after fine-tuning | "
             + " | ".join(f"{p} gone" for p in summary["reduction"]) + " |",
             "|---" * (6 + len(summary["reduction"])) + "|",
             f"| original | - | - | - | - | {o['score']:.4f} | " + " | ".join("0.0%" for _ in summary["reduction"]) + " |"]
    for r in summary["parts"]:
        lines.append(f"| {r['part']} | {r['amount']:.0%} | {r['shape']} | {r['epochs']:g} | "
                     f"{r['score_after_pruning']:.4f} | {r['score']:.4f} | "
                     + " | ".join(f"{g:.1%}" for g in r["reduction"].values()) + " |")
    lines += ["", "Gone: the fraction of a part's original weights zeroed, or removed with whole rows or heads.",
              f"On disk: {summary['bytes'] / 1e6:.2f} MB ({summary['store']}) against {summary['original_bytes'] / 1e6:.2f} MB "
              f"for the original, {summary['bytes'] / summary['original_bytes']:.3f} x; overall "
              f"{summary['reduction']['all']:.1%} of the weights gone."]
    if summary["tied_lm_head"]:
        lines.append("lm_head is tied to the input embeddings (tie_word_embeddings): its zeros are theirs too.")
    return "\n".join(lines)


def report(summary: dict[str, Any]) -> str:
    parts = ", ".join(f"{r['part']} {r['score']:.4f}" for r in summary["parts"])
    return (f"prune-schedule {summary['task']}: dev {summary['original']['score']:.4f} -> {parts}; overall "
            f"{summary['reduction']['all']:.1%} of the weights gone, {summary['bytes'] / 1e6:.2f} MB on disk "
            f"({summary['bytes'] / summary['original_bytes']:.3f} x the original) -> {summary['output_dir']}")

