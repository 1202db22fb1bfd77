"""The prune stage: a task model -> pruned task models, each recovered by fine-tuning (or by distillation
from `--teacher_model`), with a table and plots of score and size against what was kept.

    xcompress prune --model runs/teacher-sst2 --task_name SST-2 --data_dir data/glue_data \
        --output_dir runs/pruned --target_num_of_heads 8,6,4 --target_ffn_size 1024,512      (a sweep)
    xcompress prune --model runs/td-sst2 --pruning_type rank --target_rank_dim 96 --target_rank_layer 18 ...
    xcompress prune --model runs/teacher-sst2 --pruning_type unstructured --amount_ffn 0.7 --amount_attention 0.5 \
        --iterations 3 ...
    xcompress prune --model runs/td-sst2 --pruning_type vocabulary ...              (any task model, no recovery)

Structured pruning (dense and pruned BERT): TextPruner's targets, `--target_num_of_heads` and
`--target_ffn_size` as averages per layer allocated over layers by importance (`--even`: the same in every
layer), or `--layer_num_heads` / `--layer_ffn_sizes` per layer. Rank pruning (TD): `--target_rank_dim`,
`--target_rank_layer`. Unstructured: `--amount` for every group, `--amount_<group>` for one, `--iterations`
steps of prune-then-recover. Vocabulary (any task model): the word pieces that the task's files (train,
augmented, dev and test rows) use, with identical predictions on them (compress/prune_vocabulary.py). Comma lists make a sweep: one model per setting (the grid of heads x FFN sizes,
of d x l, or the list of amounts), each in `<output_dir>/<setting>/`; a single setting is `<output_dir>` itself.
Settings sharing a head count reuse one head-pruned, recovered model and prune only its FFN.
"""
from __future__ import annotations

import dataclasses
import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from corpora.glue import dev_files, get_task, read_examples, submission_files, task_dir, train_file
from distill.checkpoint import publish_model, save_model_dir
from modeling.formats import DENSE, PRUNED, TUCKER, kind_of
from modeling.loading import load_tokenizer
from modeling.params import GROUPS
from stagekit.atomic import check_output_dir, fresh_dir, partial_dir, publish_dir
from stagekit.errors import InputError
from stagekit.options import option
from stagekit.outputs import finish_stage
from stagekit.outputs import tokenizer_files as tokenizer_files_of
from tasks.classifier import evaluate_features, load_classifier, predict_logits, predictions
from tasks.features import load_features
from tasks.metrics import glue_metrics

from .measure import parameter_counts, size_on_disk
from .prune_unstructured import compressed_size, sparsity
from .prune_vocabulary import (check_same_pieces, prune_embeddings_, tokenizer_model, used_pieces, vocabulary_closure,
                               write_tokenizer)
from .pruning import KINDS, PruningConfig, prune_

WEIGHTS = "model.safetensors"


@dataclasses.dataclass(kw_only=True)
class PruneConfig:
    model: str = option(help="a task model (fine-tuned, distilled, or pruned before)")
    task_name: str = option()
    data_dir: str = option()
    output_dir: str = option()
    pruning_type: str = option("structured", choices=KINDS + ("vocabulary",))
    importance: str = option(
        "taylor",
        help="taylor: |sum w*grad| on task data; l1: weight magnitude",
        choices=["taylor", "l1"])
    importance_examples: int = option(512, help="training examples the taylor scores use")
    target_num_of_heads: str | None = option(None, help="average heads kept per layer; a comma list sweeps")
    target_ffn_size: str | None = option(None, help="average FFN neurons kept per layer; a comma list sweeps")
    layer_num_heads: str | None = option(None, help="heads kept in each layer, e.g. 12,10,8,8,6,4")
    layer_ffn_sizes: str | None = option(None, help="FFN neurons kept in each layer")
    even: bool = option(False, help="the same count in every layer (default: allocate by importance)")
    target_rank_dim: str | None = option(None, help="TD rank d kept; a comma list sweeps")
    target_rank_layer: str | None = option(None, help="TD cores l kept; a comma list sweeps")
    amount: str | None = option(
        None,
        help="unstructured: fraction of weights zeroed in every group; a comma list sweeps")
    amount_attention: float | None = option(None, help="unstructured: fraction zeroed in the attention weights")
    amount_ffn: float | None = option(None, help="unstructured: fraction zeroed in the ffn weights")
    amount_factors: float | None = option(None, help="unstructured: fraction zeroed in the factors weights")
    amount_embeddings: float | None = option(None, help="unstructured: fraction zeroed in the embeddings weights")
    amount_classifier: float | None = option(None, help="unstructured: fraction zeroed in the classifier weights")
    iterations: int = option(1, help="unstructured: prune-then-recover steps to the target")
    teacher_model: str | None = option(None, help="recover by distilling this fine-tuned teacher's predictions")
    num_train_epochs: float = option(1.0, help="recovery epochs (0: no recovery)")
    learning_rate: float = option(2e-5)
    max_steps: int | None = option(None, help="recovery steps (overrides the epochs)")
    train_batch_size: int = option(32)
    eval_batch_size: int = option(128)
    max_seq_length: int = option(128)
    max_train_examples: int | None = option(None, help="recover on a seeded subset of this many examples")
    eval_step: int = option(200)
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False, help="no progress bars")


CONFIG = PruneConfig


@dataclasses.dataclass
class Setting:
    """One model of the sweep: what to prune, from which source (a setting's name, or None: the input)."""

    pruning: PruningConfig
    source: str | None = None
    shared: bool = False  # an intermediate other settings derive from


def _numbers(text: str | None, flag: str, kind: type = int) -> list | None:
    """A comma list of numbers from a flag (None when the flag is absent)."""
    if text is None:
        return None
    try:
        return [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text}: expected {'integers' if kind is int else 'numbers'} separated by commas") from None


def plan_settings(cfg: PruneConfig) -> dict[str, Setting]:
    """Every setting of the sweep by name, intermediates first."""
    kind, imp = cfg.pruning_type, cfg.importance
    if kind == "vocabulary":
        return {}
    if kind == "structured":
        heads: list = _numbers(cfg.target_num_of_heads, "--target_num_of_heads") or [None]
        ffn: list = _numbers(cfg.target_ffn_size, "--target_ffn_size") or [None]
        if cfg.layer_num_heads:
            heads = [_numbers(cfg.layer_num_heads, "--layer_num_heads")]
        if cfg.layer_ffn_sizes:
            ffn = [_numbers(cfg.layer_ffn_sizes, "--layer_ffn_sizes")]
        if heads == [None] and ffn == [None]:
            raise InputError("--pruning_type structured: give --target_num_of_heads and/or --target_ffn_size "
                             "(or --layer_num_heads / --layer_ffn_sizes)")
        settings: dict[str, Setting] = {}
        for h, f in itertools.product(heads, ffn):
            whole = PruningConfig("structured", imp, heads=h, ffn_size=f, even=cfg.even)
            if h is not None and f is not None and len(ffn) > 1:
                base = PruningConfig("structured", imp, heads=h, even=cfg.even)
                settings.setdefault(base.name, Setting(base, shared=True))
                settings[whole.name] = Setting(PruningConfig("structured", imp, ffn_size=f, even=cfg.even),
                                               source=base.name)
            else:
                settings.setdefault(whole.name, Setting(whole))
        return dict(sorted(settings.items(), key=lambda kv: kv[1].source is not None))
    if kind == "rank":
        dims = _numbers(cfg.target_rank_dim, "--target_rank_dim") or [None]
        layers = _numbers(cfg.target_rank_layer, "--target_rank_layer") or [None]
        if dims == [None] and layers == [None]:
            raise InputError("--pruning_type rank: give --target_rank_dim and/or --target_rank_layer")
        return {(s := PruningConfig("rank", imp, rank_dim=d, rank_layer=l)).name: Setting(s)
                for d, l in itertools.product(dims, layers)}
    overrides = {g: getattr(cfg, f"amount_{g}") for g in GROUPS if getattr(cfg, f"amount_{g}") is not None}
    amounts = _numbers(cfg.amount, "--amount", float) or [None]
    if amounts == [None] and not overrides:
        raise InputError("--pruning_type unstructured: give --amount and/or --amount_<group>")
    out = {}
    for a in amounts:
        s = PruningConfig("unstructured", imp, amounts={g: a for g in GROUPS if a is not None} | overrides)
        out[s.name] = Setting(s)
    return out


def validate(cfg: PruneConfig) -> dict[str, Setting]:
    """Every check that needs no model and no data: the pipeline runs it before any stage starts."""
    if cfg.iterations < 1:
        raise InputError(f"--iterations {cfg.iterations}: must be >= 1")
    if cfg.iterations > 1 and cfg.pruning_type != "unstructured":
        raise InputError("--iterations: iterative pruning is for --pruning_type unstructured")
    settings = plan_settings(cfg)
    for name, s in settings.items():
        try:
            s.pruning.validate()
        except ValueError as e:
            raise InputError(f"setting {name}: {e}") from e
    return settings


def run(cfg: PruneConfig) -> dict[str, Any]:
    started = time.perf_counter()
    settings = validate(cfg)
    task = get_task(cfg.task_name)
    task_dir(cfg.data_dir, task)
    model, model_dir = load_classifier(cfg.model, "--model", task, need_task_model=True, need_fp32=True)
    if cfg.teacher_model:  # checked now, not after the pruning it would recover
        load_classifier(cfg.teacher_model, "--teacher_model", task, need_task_model=True, need_fp32=True)
    for name, s in settings.items():
        try:
            s.pruning.check(model)
        except ValueError as e:
            raise InputError(f"--model {cfg.model}, setting {name}: {e}") from e
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    tokenizer = load_tokenizer(model_dir, "--model")
    if cfg.pruning_type == "vocabulary" and (kind := tokenizer_model(tokenizer)) not in ("WordPiece", "BPE", "Unigram"):
        raise InputError(f"--model {cfg.model}: its tokenizer is {kind}; vocabulary pruning reads WordPiece, BPE and "
                         "Unigram (SentencePiece) tokenizers")
    dev = load_features(task, dev_files(task, cfg.data_dir)[0], tokenizer, cfg.max_seq_length)
    texts = _task_texts(task, cfg.data_dir) if cfg.pruning_type == "vocabulary" else []
    importance = None
    if cfg.importance == "taylor" and cfg.pruning_type not in ("unstructured", "vocabulary"):
        importance = load_features(task, train_file(task, cfg.data_dir, aug=False), tokenizer, cfg.max_seq_length,
                                   cfg.importance_examples, cfg.seed)
    # Built under a hidden name beside --output_dir and published whole: an interrupted sweep leaves nothing
    # under the user's name, and the same command starts it again.
    work = fresh_dir(partial_dir(out))
    try:
        if cfg.pruning_type == "vocabulary":
            summary = _prune_vocabulary(cfg, task, model, model_dir, tokenizer, dev, texts, work)
        else:
            summary = _sweep(cfg, settings, task, model, model_dir, dev, importance, work)
        summary |= {"output_dir": str(out), "seconds": time.perf_counter() - started}
        sweep = cfg.pruning_type == "structured" and len(summary["rows"]) > 1
        plots = _plots(summary, work / "plots") if sweep else []
        summary["plots"] = [str(out / Path(p).relative_to(work)) for p in plots]
        (work / "prune_results.md").write_text(report(summary) + "\n")
        finish_stage(work, "prune", cfg, summary)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    publish_dir(work, out)
    return summary


def _sweep(cfg: PruneConfig, settings: dict[str, Setting], task, model, model_dir: Path, dev, importance,
           work: Path) -> dict[str, Any]:
    """Every setting pruned (and recovered) into `work`, scored against the original; the summary's rows."""
    original = _row("original", model, model_dir, evaluate_features(model, task, dev, cfg.eval_batch_size))
    single = len(settings) == 1
    rows, dirs = [], {}
    for name, setting in settings.items():
        source = dirs[setting.source] if setting.source else model_dir
        target = work if single else work / name
        info, recovered = _prune_and_recover(cfg, setting.pruning, source, target, task, importance)
        final, _ = load_classifier(str(target), "--output_dir", task, need_task_model=True)
        # A recovered model was scored on this dev file (its first) by the recovery run itself.
        row = _row(name, final, target, recovered or evaluate_features(final, task, dev, cfg.eval_batch_size))
        row |= {"setting": dataclasses.asdict(setting.pruning), "derived_from": setting.source,
                "shared_intermediate": setting.shared, "pruned": info,
                "percent_of_original": 100 * row["score"] / original["score"] if original["score"] else None}
        rows.append(row)
        dirs[name] = target
        if not cfg.quiet:
            print(f"prune {name}: dev {row['score']:.4f} ({row['percent_of_original']:.1f}% of "
                  f"{original['score']:.4f}), {row['size_on_disk_bytes'] / 1e6:.1f} MB", flush=True)
    return {"task": task.name, "model": str(model_dir), "pruning_type": cfg.pruning_type, "original": original,
            "rows": rows, "config": dataclasses.asdict(cfg)}


def _task_texts(task, data_dir: str) -> list[tuple[str, str | None]]:
    """Every text of the task's files that exist: training (and augmented) rows, dev and test rows."""
    labelled = [train_file(task, data_dir), train_file(task, data_dir, aug=True), *dev_files(task, data_dir)]
    texts = []
    for path, has_labels in [(p, True) for p in labelled] + [(p, False) for p, _ in submission_files(task, data_dir)]:
        if path.is_file():
            texts += [(e.text_a, e.text_b) for e in read_examples(task, path, labelled=has_labels)]
    return texts


def _prune_vocabulary(cfg: PruneConfig, task, model, model_dir: Path, tokenizer, dev, texts, work: Path
                      ) -> dict[str, Any]:
    """The word pieces of the task's text kept, the tokenizer renumbered; no recovery (nothing changes on that
    text, which the summary shows: texts split differently and the largest dev logit change, both 0)."""
    original_logits = predict_logits(model, dev, cfg.eval_batch_size)
    original = _row("original", model, model_dir, _metrics(task, original_logits, dev))
    keep = vocabulary_closure(tokenizer, used_pieces(tokenizer, texts))
    record = prune_embeddings_(model, keep)
    model.save_pretrained(work)
    write_tokenizer(tokenizer, keep, model_dir, work)
    pruned_tokenizer = load_tokenizer(work, "--output_dir")
    final, _ = load_classifier(str(work), "--output_dir", task, need_task_model=True)
    dev_after = load_features(task, dev_files(task, cfg.data_dir)[0], pruned_tokenizer, cfg.max_seq_length)
    logits = predict_logits(final, dev_after, cfg.eval_batch_size)
    row = _row("vocabulary", final, work, _metrics(task, logits, dev_after))
    row |= {"vocabulary": record, "texts": len(texts),
            "texts_split_differently": check_same_pieces(tokenizer, pruned_tokenizer, keep, texts),
            "max_dev_logit_change": float(np.abs(logits - original_logits).max()),
            "percent_of_original": 100 * row["score"] / original["score"] if original["score"] else None}
    if not cfg.quiet:
        print(f"prune vocabulary: {record['kept']:,} of {record['original_size']:,} pieces kept, dev {row['score']:.4f} "
              f"(was {original['score']:.4f}), {row['size_on_disk_bytes'] / 1e6:.1f} MB", flush=True)
    return {"task": task.name, "model": str(model_dir), "pruning_type": "vocabulary", "original": original,
            "rows": [row], "config": dataclasses.asdict(cfg)}


def _metrics(task, logits: np.ndarray, features) -> dict[str, float]:
    return glue_metrics(task.metric, predictions(task, logits), features.labels)


def _prune_and_recover(cfg: PruneConfig, pruning: PruningConfig, source: Path, target: Path, task,
                       importance) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Prune `source` into `target` (recovering after each iteration) and leave the final model at its top.
    Returns what was kept and, when recovered, the final model's dev metrics."""
    steps = cfg.iterations
    info: dict[str, Any] = {}
    metrics = None
    for k in range(1, steps + 1):
        work = target if steps == 1 else target / f"iter_{k}"
        model, _ = load_classifier(str(source), "--model", task, need_task_model=True)
        step = pruning
        if steps > 1:  # cumulative sparsity 1-(1-a)^(k/n): equal fractions of what is left at each step
            step = dataclasses.replace(pruning, amounts={g: 1 - (1 - a) ** (k / steps) for g, a in pruning.amounts.items()})
        info = prune_(model, step, _batches(importance, cfg) if importance is not None else None)
        tokenizer_files = tokenizer_files_of(source)
        save_model_dir(model, work / "pruned", tokenizer_files)
        if cfg.num_train_epochs > 0 or cfg.max_steps:
            recovered = recover(work / "pruned", work / "recovery", task.name, recovery_settings(cfg),
                                cfg.teacher_model, keep_sparsity=pruning.kind == "unstructured")
            metrics = next(iter(recovered["dev"].values()))
            publish_model(work, work / "recovery")
        else:
            publish_model(work, work / "pruned")
        source = work
    if steps > 1:
        publish_model(target, source)
    return info, metrics


def _batches(features, cfg: PruneConfig):
    ids = np.arange(len(features))
    for i in range(0, len(ids), cfg.train_batch_size):
        yield features.batch(ids[i:i + cfg.train_batch_size])


def recovery_settings(cfg: PruneConfig) -> dict[str, Any]:
    """The flags prune passes on to the stage that recovers a pruned model."""
    return dict(data_dir=cfg.data_dir, num_train_epochs=cfg.num_train_epochs, learning_rate=cfg.learning_rate,
                max_steps=cfg.max_steps, train_batch_size=cfg.train_batch_size, eval_batch_size=cfg.eval_batch_size,
                max_seq_length=cfg.max_seq_length, max_train_examples=cfg.max_train_examples, eval_step=cfg.eval_step,
                seed=cfg.seed, quiet=cfg.quiet)


def recover(pruned: Path, out: Path, task_name: str, settings: dict[str, Any], teacher_model: str | None,
            keep_sparsity: bool) -> dict[str, Any]:
    """Fine-tune the pruned model on the gold labels, or distil `teacher_model`'s predictions into it, with
    `settings` (recovery_settings' fields); returns the finetune or task-distill summary (its `dev` metrics are
    the published model's)."""
    common = settings | dict(task_name=task_name, output_dir=str(out), keep_sparsity=keep_sparsity,
                             overwrite_output_dir=True)
    if teacher_model:
        from distill.task import TaskDistillConfig
        from distill.task import run as distil

        summary = distil(TaskDistillConfig(teacher_model=teacher_model, student_model=str(pruned),
                                           stage="prediction", **common))
    else:
        from distill.finetune import FinetuneConfig
        from distill.finetune import run as finetune

        summary = finetune(FinetuneConfig(model=str(pruned), **common))
    shutil.rmtree(out / "best", ignore_errors=True)  # the best checkpoint is the model published at the top
    return summary


def _row(name: str, model, model_dir: Path, metrics: dict[str, float]) -> dict[str, Any]:
    from .prune_structured import current_sizes

    row = {"name": name, "model_type": model.config.model_type, "params": parameter_counts(model),
           "size_on_disk_bytes": size_on_disk(model_dir), "compressed_bytes": compressed_size(model_dir / WEIGHTS),
           "sparsity": sparsity(model)["all"]["sparsity"], "dev": metrics, "score": metrics["score"]}
    if kind_of(model) in (DENSE, PRUNED):
        heads, ffn = current_sizes(model)
        row |= {"heads": sum(heads), "layer_num_heads": heads, "ffn_size": sum(ffn) / len(ffn), "layer_ffn_sizes": ffn}
    if kind_of(model) == TUCKER:
        row |= {"rank_dim": model.config.rank_dim, "rank_layer": model.config.rank_layer}
    return row


def _plots(summary: dict[str, Any], directory: Path) -> list[str]:
    """Score and size against heads kept (FFN unpruned) and against FFN size (heads unpruned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    o = summary["original"]
    written = []
    for axis, label, other in (("heads", "attention heads kept (all layers)", "ffn_size"),
                               ("ffn_size", "FFN neurons per layer (mean)", "heads")):
        points = [o] + [r for r in summary["rows"] if r.get(other) == o.get(other) and r.get(axis) != o.get(axis)]
        if len(points) < 2:
            continue
        points.sort(key=lambda r: r[axis])
        xs = [r[axis] for r in points]
        for y, ylabel, fname in ((lambda r: r["score"], f"{summary['task']} dev score", f"score_vs_{axis}.png"),
                                 (lambda r: r["size_on_disk_bytes"] / 1e6, "size on disk (MB)", f"size_vs_{axis}.png")):
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.plot(xs, [y(r) for r in points], marker="o")
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(directory / fname, dpi=100)
            plt.close(fig)
            written.append(str(directory / fname))
    return written


def report(summary: dict[str, Any]) -> str:
    o = summary["original"]
    lines = [f"# Pruning {summary['model']} on {summary['task']} ({summary['pruning_type']})", "",
             "| setting | heads | FFN/layer | rank d, l | encoder params | MB | gzip MB | sparsity | dev score | % of original |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in [o, *summary["rows"]]:
        ranks = f"{r['rank_dim']}, {r['rank_layer']}" if "rank_dim" in r else "-"
        pct = f"{r.get('percent_of_original', 100.0):.1f}" if r.get("percent_of_original", 100.0) is not None else "-"
        lines.append(f"| {r['name']} | {r.get('heads', '-')} | {r['ffn_size']:.0f} | {ranks} | {r['params']['encoder']:,} | "
                     f"{r['size_on_disk_bytes'] / 1e6:.1f} | {r['compressed_bytes'] / 1e6:.1f} | {r['sparsity']:.1%} | "
                     f"{r['score']:.4f} | {pct} |" if "ffn_size" in r else
                     f"| {r['name']} | - | - | {ranks} | {r['params']['encoder']:,} | {r['size_on_disk_bytes'] / 1e6:.1f} | "
                     f"{r['compressed_bytes'] / 1e6:.1f} | {r['sparsity']:.1%} | {r['score']:.4f} | {pct} |")
    for r in summary["rows"]:
        if "vocabulary" in r:
            v = r["vocabulary"]
            lines += ["", f"Vocabulary: {v['kept']:,} of {v['original_size']:,} word pieces kept (those of "
                          f"{r['texts']:,} task texts); texts split differently: {r['texts_split_differently']}, "
                          f"largest dev logit change: {r['max_dev_logit_change']:.2g}."]
    if summary["pruning_type"] == "unstructured":
        lines += ["", "Zeroed weights shrink the gzip-compressed file; dense kernels do not run faster on them."]
    lines += ["", f"{summary['seconds'] / 60:.1f} min -> {summary['output_dir']}"]
    return "\n".join(lines)
