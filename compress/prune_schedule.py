"""The prune-schedule stage: a text-to-text model (T5) pruned part by part, each part by global L1 magnitude with its
own amount and fine-tuned for its own number of epochs before the next part is pruned (the NNI tutorial's habit):

    xcompress prune-schedule --model runs/t5-de --task_name text --data_dir data/parallel/gettext-en-de \
        --output_dir runs/t5-de-pruned \
        --schedule self_attention:0.9:15,cross_attention:0.4:20,feed_forward:0.7:15,lm_head:0.8:30

The parts are the family's (modeling/families.py; T5: self_attention, cross_attention, feed_forward, lm_head).
Within a part the smallest |w| over all its matrices are zeroed (torch.nn.utils.prune.global_unstructured), so
the part's sparsity is the asked amount and layers lose unequal shares. Fine-tuning is seq2seq-finetune's, with
every zero kept at zero, so a part pruned early stays at its amount to the end. T5 ties `lm_head` to the input
embeddings: pruning it prunes them.

After each part the run records the dev score right after pruning and after fine-tuning, and every part's
sparsity; a run that is stopped resumes after the last finished part when the same command is given again. Into
`--output_dir`: the model (stored compactly, modeling/sparse_storage.py, unless `--store dense`), its tokenizer,
`training_stats.csv` (every validation of every part), `loss.png` (training and validation loss over the
schedule), `prune_schedule_results.md`, and the config and summary.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn
from torch.nn.utils import prune

from corpora.glue import subset
from modeling.families import Seq2SeqFamily, seq2seq_family_of
from modeling.formats import GENERATOR, SEQ2SEQ
from modeling.loading import inspect_model, load_model, load_tokenizer
from modeling.sparse_storage import save_sparse
from stagekit.atomic import atomic_output_dir, check_output_dir, fresh_dir, partial_dir, write_json
from stagekit.errors import InputError
from stagekit.options import above, at_least, check_values, option
from stagekit.outputs import finish_stage
from text2text.data import text_task
from text2text.finetune import STATS_HEADER, Seq2SeqFinetuneConfig, stats_rows
from text2text.finetune import run as finetune
from text2text.generation import PairBatches, generate, mean_loss

from .measure import size_on_disk

STAGE = "prune-schedule"
# What a resumed run must share with the run that left its parts behind.
NOT_IDENTITY = ("output_dir", "overwrite_output_dir", "quiet")


@dataclasses.dataclass
class PruneScheduleConfig:
    model: str = option(help="a fine-tuned text-to-text model directory (T5)")
    task_name: str = option(help="'text' (a TSV of source and target texts in --data_dir) or a GLUE task name")
    data_dir: str = option()
    output_dir: str = option()
    schedule: str = option(help="part:amount:epochs,... in the order applied, e.g. "
                                "self_attention:0.9:15,cross_attention:0.4:20,feed_forward:0.7:15,lm_head:0.8:30")
    store: str = option("sparse", choices=["sparse", "dense"],
                        help="sparse: one bit per weight and the non-zero values (xcompress reads it); dense: the "
                             "plain model.safetensors transformers reads")
    learning_rate: float = option(5e-4, check=above(0))
    train_batch_size: int = option(32, check=at_least(1))
    eval_batch_size: int = option(64, check=at_least(1))
    eval_steps: int = option(500, help="validate every this many steps within a part (and at its end)",
                             check=at_least(1))
    max_source_length: int = option(128, check=at_least(2))
    max_target_length: int = option(128, check=at_least(2))
    generation_max_length: int = option(64, help="new pieces generated at most per text", check=at_least(1))
    generation_num_beams: int = option(1, check=at_least(1))
    max_train_examples: int | None = option(None, help="a seeded subset of the training pairs", check=at_least(1))
    max_eval_examples: int | None = option(500, help="dev pairs generated at each validation", check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = PruneScheduleConfig


@dataclasses.dataclass(frozen=True)
class Step:
    part: str
    amount: float
    epochs: float


def parse_schedule(text: str, family: Seq2SeqFamily) -> list[Step]:
    """The steps of `--schedule`, refused in one line when a part is unknown or named twice, an amount is outside
    [0, 1) or an epoch count is not positive."""
    steps = []
    for item in text.split(","):
        fields = item.strip().split(":")
        if len(fields) != 3:
            raise InputError(f"--schedule {text}: '{item}' is not part:amount:epochs")
        part, amount, epochs = fields
        if part not in family.parts:
            raise InputError(f"--schedule {text}: '{part}' is no part of a {family.name} model "
                             f"({', '.join(family.parts)})")
        try:
            step = Step(part, float(amount), float(epochs))
        except ValueError:
            raise InputError(f"--schedule {text}: '{item}': amount and epochs must be numbers") from None
        if not 0 <= step.amount < 1:
            raise InputError(f"--schedule {text}: '{item}': the amount is a fraction in [0, 1)")
        if step.epochs <= 0:
            raise InputError(f"--schedule {text}: '{item}': each part is fine-tuned for more than 0 epochs")
        if part in (s.part for s in steps):
            raise InputError(f"--schedule {text}: '{part}' is named twice")
        steps.append(step)
    return steps


def prune_part(model: nn.Module, family: Seq2SeqFamily, part: str, amount: float) -> None:
    """Zero the `amount` fraction of smallest-magnitude weights over all of one part's matrices, permanently."""
    members = [(m, "weight") for m in family.part_modules(model, part).values()]
    prune.global_unstructured(members, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in members:
        prune.remove(module, name)


def part_sparsity(model: nn.Module, family: Seq2SeqFamily) -> dict[str, dict[str, float]]:
    """Zeros per part, and over every parameter of the model (shared tensors counted once) as `all`."""
    out = {}
    for part in family.parts:
        weights = [m.weight for m in family.part_modules(model, part).values()]
        n, z = sum(w.numel() for w in weights), sum(int((w == 0).sum()) for w in weights)
        out[part] = {"weights": n, "zeros": z, "sparsity": z / n}
    every = list({p.data_ptr(): p for p in model.parameters()}.values())
    n, z = sum(p.numel() for p in every), sum(int((p == 0).sum()) for p in every)
    out["all"] = {"weights": n, "zeros": z, "sparsity": z / n}
    return out


def run(cfg: PruneScheduleConfig) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_values(cfg)
    task = text_task(cfg.task_name)
    model_dir, raw, _ = inspect_model(cfg.model, "--model", kinds=(SEQ2SEQ,), stage=STAGE)
    family = seq2seq_family_of(raw, f"--model {cfg.model}")
    steps = parse_schedule(cfg.schedule, family)
    task.pairs(cfg.data_dir, "train")  # a missing or malformed file is refused before anything is pruned
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    started, cpu_started = time.perf_counter(), time.process_time()
    work = partial_dir(out)
    identity = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IDENTITY}
    state_file = work / "schedule_state.json"
    state = _read_state(state_file)
    if state is None or state["identity"] != identity:
        fresh_dir(work)
        state = {"identity": identity, "original": dev_reference(cfg, task, model_dir), "done": []}
        write_json(state_file, state)
    elif not cfg.quiet:
        print(f"prune-schedule: resuming after part {len(state['done'])} of {len(steps)} ({work})", flush=True)
    source = Path(state["done"][-1]["model_dir"]) if state["done"] else model_dir

    # --- loop: prune one part, fine-tune, record -------------------------------------------------------------
    for k, step in enumerate(steps[len(state["done"]):], start=len(state["done"]) + 1):
        step_dir = fresh_dir(work / f"{k}-{step.part}")
        model, _ = load_model(str(source), "--model", GENERATOR, kinds=(SEQ2SEQ,), need_fp32=True, stage=STAGE)
        prune_part(model, family, step.part, step.amount)
        model.save_pretrained(step_dir / "pruned")
        load_tokenizer(source, "--model").save_pretrained(step_dir / "pruned")
        tuned = finetune(finetune_config(cfg, step_dir / "pruned", step_dir / "tuned", step.epochs))
        shutil.rmtree(step_dir / "pruned")
        model, _ = load_model(str(step_dir / "tuned"), "--model", GENERATOR, kinds=(SEQ2SEQ,))
        record = {"part": step.part, "amount": step.amount, "epochs": step.epochs,
                  "score_after_pruning": tuned["history"][0]["score"], "score": tuned["dev"]["score"],
                  "dev": tuned["dev"], "sparsity": part_sparsity(model, family), "steps": tuned["steps"],
                  "cpu_seconds": tuned["cpu_seconds"], "history": tuned["history"],
                  "model_dir": str(step_dir / "tuned")}
        if source != model_dir:
            shutil.rmtree(source.parent)  # only the latest part's model is needed to resume
        state["done"].append(record)
        write_json(state_file, state)
        source = step_dir / "tuned"
        if not cfg.quiet:
            print(f"prune-schedule part {k} {step.part} {step.amount:.0%}: dev {record['score_after_pruning']:.4f} "
                  f"after pruning -> {record['score']:.4f} after {step.epochs:g} epochs; overall sparsity "
                  f"{record['sparsity']['all']['sparsity']:.1%}", flush=True)

    # --- cleanup -------------------------------------------------------------------------------------------
    model, _ = load_model(str(source), "--model", GENERATOR, kinds=(SEQ2SEQ,))
    summary = {"model": str(model_dir), "task": task.name, "family": family.name,
               "tied_lm_head": bool(getattr(model.config, "tie_word_embeddings", False)),
               "original": state["original"], "parts": state["done"], "final": state["done"][-1]["dev"],
               "sparsity": part_sparsity(model, family), "store": cfg.store,
               "original_bytes": size_on_disk(model_dir), "seconds": time.perf_counter() - started,
               "cpu_seconds_this_run": time.process_time() - cpu_started, "output_dir": str(out),
               "config": dataclasses.asdict(cfg)}
    with atomic_output_dir(out) as tmp:
        if cfg.store == "sparse":
            model.config.save_pretrained(tmp)
            save_sparse(model, tmp)
        else:
            model.save_pretrained(tmp)
        load_tokenizer(source, "--model").save_pretrained(tmp)
        summary["bytes"] = size_on_disk(tmp)
        _write_stats(tmp / "training_stats.csv", state["done"])
        _plot_losses(tmp / "loss.png", state["done"])
        (tmp / "prune_schedule_results.md").write_text(report_table(summary) + "\n")
        finish_stage(tmp, STAGE, cfg, summary)
    shutil.rmtree(work)
    return summary


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dev_reference(cfg, task, model_dir: Path) -> dict[str, Any]:
    """The unpruned model's dev score and validation loss, on the dev pairs a pruned model is validated on (`cfg`
    carries seq2seq-finetune's data, length and generation flags)."""
    model, _ = load_model(str(model_dir), "--model", GENERATOR, kinds=(SEQ2SEQ,), stage=STAGE)
    tokenizer = load_tokenizer(model_dir, "--model")
    dev = subset(task.pairs(cfg.data_dir, "dev"), cfg.max_eval_examples, cfg.seed)
    generated = generate(model, tokenizer, [p.source for p in dev], cfg.max_source_length, cfg.generation_max_length,
                         cfg.generation_num_beams, cfg.eval_batch_size)
    metrics = task.score(generated, dev)
    data = PairBatches(dev, tokenizer, cfg.max_source_length, cfg.max_target_length)
    return {"score": metrics["score"], "dev": metrics, "val_loss": mean_loss(model, data, cfg.eval_batch_size)}


def finetune_config(cfg, model: Path, output: Path, epochs: float) -> Seq2SeqFinetuneConfig:
    """seq2seq-finetune's config for fine-tuning a pruned model with its zeros held: the flags a pruning stage
    shares with it (learning rate, batches, lengths, generation, examples, seed) passed on."""
    own = ("model", "output_dir", "overwrite_output_dir", "num_train_epochs")
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Seq2SeqFinetuneConfig)
              if hasattr(cfg, f.name) and f.name not in own}
    return Seq2SeqFinetuneConfig(**shared, model=str(model), output_dir=str(output), num_train_epochs=epochs,
                                 keep_sparsity=True, overwrite_output_dir=True)


def _write_stats(path: Path, parts: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["part", *STATS_HEADER])
        for record in parts:
            w.writerows([record["part"], *row] for row in stats_rows(record["history"]))


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
             "| after | amount | epochs | dev after pruning | dev after fine-tuning | "
             + " | ".join(f"{p} sparsity" for p in summary["sparsity"]) + " |",
             "|---" * (5 + len(summary["sparsity"])) + "|",
             f"| original | - | - | - | {o['score']:.4f} | " + " | ".join("0.0%" for _ in summary["sparsity"]) + " |"]
    for r in summary["parts"]:
        lines.append(f"| {r['part']} | {r['amount']:.0%} | {r['epochs']:g} | {r['score_after_pruning']:.4f} | "
                     f"{r['score']:.4f} | " + " | ".join(f"{s['sparsity']:.1%}" for s in r["sparsity"].values()) + " |")
    lines += ["", f"On disk: {summary['bytes'] / 1e6:.2f} MB ({summary['store']}) against {summary['original_bytes'] / 1e6:.2f} MB "
              f"for the original, {summary['bytes'] / summary['original_bytes']:.3f} x; overall sparsity "
              f"{summary['sparsity']['all']['sparsity']:.1%}."]
    if summary["tied_lm_head"]:
        lines.append("lm_head is tied to the input embeddings (tie_word_embeddings): its zeros are theirs too.")
    return "\n".join(lines)


def report(summary: dict[str, Any]) -> str:
    parts = ", ".join(f"{r['part']} {r['score']:.4f}" for r in summary["parts"])
    return (f"prune-schedule {summary['task']}: dev {summary['original']['score']:.4f} -> {parts}; overall sparsity "
            f"{summary['sparsity']['all']['sparsity']:.1%}, {summary['bytes'] / 1e6:.2f} MB on disk "
            f"({summary['bytes'] / summary['original_bytes']:.3f} x the original) -> {summary['output_dir']}")

