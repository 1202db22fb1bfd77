"""The report stage: one row per task model (teacher first) with encoder and total parameters, size on disk,
CPU latency at batch 1 and 32, dev score and its percentage of the teacher's; `report.md`, `report.json` and
PNG plots (parameters vs score, latency vs score, size per model, distillation loss curves).

    xcompress report --task_name SST-2 --data_dir data/glue_data --output_dir runs/report \
        --models "teacher=runs/teacher-sst2,TD 1/7=runs/td-sst2,TD 1/7 int8=runs/td-sst2-int8" \
        --loss_logs "general distillation=runs/gd/log.jsonl,task distillation=runs/td-sst2/log.jsonl"

Every figure is measured here, on this machine, except the ONNX Runtime rows, which are taken from a quantize
stage's own measurements (`quantize_summary.json` in a model directory made with `--onnx`).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from corpora.glue import dev_files, get_task
from modeling.formats import GENERATOR, SEQ2SEQ
from modeling.loading import inspect_model, load_model, load_tokenizer
from stagekit.atomic import atomic_output_dir, check_output_dir, write_json
from stagekit.errors import InputError
from stagekit.options import at_least, check_values, option
from tasks.classifier import evaluate_features, load_classifier
from tasks.features import load_features

from .measure import MeasurementSettings, cpu_latency, parameter_counts, size_on_disk


@dataclasses.dataclass(kw_only=True)
class ReportConfig(MeasurementSettings):
    task_name: str = option()
    data_dir: str = option()
    output_dir: str = option()
    models: str = option(help="label=model_dir pairs separated by commas; the first is the reference")
    loss_logs: str | None = option(None, help="label=log.jsonl pairs (general-distill, task-distill, finetune logs)")
    generation_max_length: int = option(64, help="text-to-text models: new pieces generated at most per text",
                                        check=at_least(1))
    generation_num_beams: int = option(1, help="text-to-text models: 1 greedy, more beam search", check=at_least(1))
    max_eval_examples: int | None = option(None, help="text-to-text models: a seeded subset of the dev pairs",
                                           check=at_least(1))
    latency_examples: int = option(64, help="text-to-text models: sentences generated to time batch 1 and 32",
                                   check=at_least(1))
    overwrite_output_dir: bool = option(False)


CONFIG = ReportConfig


def _pairs(text: str | None, flag: str, must_exist: str) -> dict[str, Path]:
    pairs: dict[str, Path] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        label, sep, path = item.partition("=")
        if not sep or not label.strip() or not path.strip():
            raise InputError(f"{flag} {item!r}: expected label=path")
        p = Path(path.strip())
        if must_exist == "dir" and not p.is_dir() or must_exist == "file" and not p.is_file():
            raise InputError(f"{flag} {label.strip()}={p}: no such {'directory' if must_exist == 'dir' else 'file'}")
        pairs[label.strip()] = p
    return pairs


def run(cfg: ReportConfig) -> dict[str, Any]:
    started = time.perf_counter()
    check_values(cfg)
    models = _pairs(cfg.models, "--models", "dir")
    logs = _pairs(cfg.loss_logs, "--loss_logs", "file")
    if not models:
        raise InputError("--models: give at least one label=model_dir")
    if all(inspect_model(str(p), f"--models {label}")[2].kind == SEQ2SEQ for label, p in models.items()):
        return _text_report(cfg, models, logs, started)
    task = get_task(cfg.task_name)
    loaded = {label: load_classifier(str(path), f"--models {label}", task, need_task_model=True)[0]
              for label, path in models.items()}
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    dev_path = dev_files(task, cfg.data_dir)[0]
    rows = []
    for label, model in loaded.items():
        dev = load_features(task, dev_path, load_tokenizer(models[label], f"--models {label}"), cfg.max_seq_length)
        params = parameter_counts(model)
        half = next(model.parameters()).dtype == torch.bfloat16
        rows.append({"label": label, "model_dir": str(models[label]), "backend": "pytorch bf16" if half else "pytorch",
                     "model_type": model.config.model_type,
                     "quantized": bool(getattr(model.config, "xcompress_quantization", None)),
                     "encoder_params": params["encoder"], "total_params": params["total"],
                     "size_on_disk_bytes": size_on_disk(models[label]),
                     "latency_b1_s": cpu_latency(model, 1, cfg.latency_seq_length, cfg.latency_repeats),
                     "latency_b32_s": cpu_latency(model, 32, cfg.latency_seq_length, cfg.latency_repeats),
                     "dev": evaluate_features(model, task, dev, cfg.eval_batch_size)})
        rows[-1]["score"] = rows[-1]["dev"]["score"]
        rows += _onnx_rows(label, models, rows[-1])
    return _publish(cfg, out, task.name, rows, logs, started, {"dev_file": str(dev_path)})


def _text_report(cfg: ReportConfig, models: dict[str, Path], logs: dict[str, Path], started: float) -> dict[str, Any]:
    """The report of text-to-text models: each scored on the same dev pairs by generation (BLEU for `text`, the
    GLUE metric for a GLUE task in text form), generation time per sentence at batch 1 and 32 on this CPU, size as
    stored (a compact sparse file counts as it is) and the share of zero weights."""
    from corpora.glue import subset
    from text2text.data import text_task
    from text2text.generation import generate, generation_seconds

    task = text_task(cfg.task_name)
    dev = subset(task.pairs(cfg.data_dir, "dev"), cfg.max_eval_examples, 42)
    loaded = {label: load_model(str(path), f"--models {label}", GENERATOR, kinds=(SEQ2SEQ,))[0]
              for label, path in models.items()}
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    sources, rows = [p.source for p in dev], []
    for label, model in loaded.items():
        tokenizer = load_tokenizer(models[label], f"--models {label}")
        gen = (cfg.max_seq_length, cfg.generation_max_length, cfg.generation_num_beams)
        metrics = task.score(generate(model, tokenizer, sources, *gen, cfg.eval_batch_size), dev)
        timed = sources[:cfg.latency_examples]
        unique = list({p.data_ptr(): p for p in model.parameters()}.values())
        total = sum(p.numel() for p in unique)
        rows.append({"label": label, "model_dir": str(models[label]), "backend": "pytorch", "quantized": False,
                     "model_type": model.config.model_type, "encoder_params": None, "total_params": total,
                     "sparsity": sum(int((p == 0).sum()) for p in unique) / total,
                     "size_on_disk_bytes": size_on_disk(models[label]),
                     "latency_b1_s": generation_seconds(model, tokenizer, timed, *gen, 1),
                     "latency_b32_s": generation_seconds(model, tokenizer, timed, *gen, 32),
                     "dev": metrics, "score": metrics["score"]})
    return _publish(cfg, out, task.name, rows, logs, started,
                    {"dev_file": f"{cfg.data_dir} (dev)", "dev_pairs": len(dev), "text_to_text": True})


def _publish(cfg: ReportConfig, out: Path, task: str, rows: list[dict[str, Any]], logs: dict[str, Path],
             started: float, facts: dict[str, Any]) -> dict[str, Any]:
    """Percentages of the first row's score, the summary, and report.md, report.json and the plots in `out`."""
    reference = rows[0]["score"]
    for r in rows:
        r["percent_of_reference"] = 100 * r["score"] / reference if reference else None
    curves = {label: _read_log(path) for label, path in logs.items()}
    summary = {"task": task, "reference": rows[0]["label"], "rows": rows, **facts,
               "loss_logs": {k: str(v) for k, v in logs.items()}, "output_dir": str(out),
               "seconds": time.perf_counter() - started, "config": dataclasses.asdict(cfg)}
    with atomic_output_dir(out) as tmp:
        summary["plots"] = _plots(rows, curves, tmp / "plots", task)
        (tmp / "report.md").write_text(markdown(summary))
        write_json(tmp / "report.json", summary)
        write_json(tmp / "report_config.json", dataclasses.asdict(cfg))
    return summary


def _onnx_rows(label: str, models: dict[str, Path], torch_row: dict[str, Any]) -> list[dict[str, Any]]:
    """The ONNX Runtime rows (fp32 and int8) a quantize stage measured for this model. Both are exports of the
    quantize stage's fp32 source, and are labelled after it (by its label here, when it has one)."""
    path = models[label] / "quantize_summary.json"
    if not path.is_file():
        return []
    summary = json.loads(path.read_text())
    source = Path(summary["model"]).resolve()
    source_label = next((k for k, p in models.items() if p.resolve() == source), f"{label}: its fp32 source")
    rows = []
    for r in summary.get("rows", []):
        if not r["backend"].startswith("onnxruntime") or "dev" not in r:
            continue
        # ONNX files hold the folded matrices, not what the PyTorch directories store: no parameter count
        rows.append({"model_dir": torch_row["model_dir"], "model_type": torch_row["model_type"],
                     "encoder_params": None, "total_params": None,
                     "label": f"{source_label}, {r['backend'].replace('onnxruntime', 'ONNX Runtime')}",
                     "backend": r["backend"],
                     "quantized": "int8" in r["backend"], "size_on_disk_bytes": r["size_on_disk_bytes"],
                     "latency_b1_s": r["latency_b1_s"], "latency_b32_s": r["latency_b32_s"], "dev": r["dev"],
                     "score": r["dev"]["score"], "measured_by": str(path)})
    return rows


def _read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Loss per step, one curve per phase (task-distill logs hold two), and the validation loss of each phase that
    was evaluated on dev (a curve named '<phase> validation')."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"--loss_logs {path}:{n}: not a JSON line") from None
            if "step" not in record:
                continue
            phase = record.get("phase", "")
            if "loss" in record:
                curves.setdefault(phase, []).append((record["step"], record["loss"]))
            if "val_loss" in record:
                curves.setdefault(f"{phase} validation".strip(), []).append((record["step"], record["val_loss"]))
    return curves


def _plots(rows: list[dict[str, Any]], curves: dict[str, dict[str, list]], directory: Path, task: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True)
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(directory / name, dpi=100)
        plt.close(fig)
        written.append(f"plots/{name}")

    params = "encoder_params" if rows[0]["encoder_params"] is not None else "total_params"
    for key, xlabel, name, log in ((params, params.replace("_", " "), "params_vs_score.png", True),
                                   ("latency_b32_s", "CPU latency, batch 32 (s)", "latency_vs_score.png", False)):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows if key == "latency_b32_s" else [r for r in rows if r["backend"] == "pytorch"]:
            ax.scatter(r[key], r["score"])
            ax.annotate(r["label"], (r[key], r["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{task} dev score")
        ax.grid(alpha=0.3)
        save(fig, name)
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(rows)))
    ax.barh([r["label"] for r in rows][::-1], [r["size_on_disk_bytes"] / 1e6 for r in rows][::-1])
    ax.set_xlabel("size on disk (MB)")
    save(fig, "size_per_model.png")
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, phases in curves.items():
            for phase, points in phases.items():
                ax.plot([s for s, _ in points], [v for _, v in points], label=f"{label} {phase}".strip())
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, "loss_curves.png")
    return written


def markdown(summary: dict[str, Any]) -> str:
    if summary.get("text_to_text"):
        return _text_markdown(summary)
    rows = summary["rows"]
    lines = [f"# xcompress report: {summary['task']}", "",
             f"Dev set: `{summary['dev_file']}`. Percentages are of **{summary['reference']}**'s score. Latency: CPU, "
             f"sequence {summary['config']['latency_seq_length']}, median of {summary['config']['latency_repeats']} runs, "
             "this machine.", "",
             "| model | backend | encoder params | total params | size MB | b1 ms | b32 ms | score | % of ref |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pct = f"{r['percent_of_reference']:.1f}" if r["percent_of_reference"] is not None else "-"
        lines.append(f"| {r['label']} | {_backend(r)} | "
                     f"{_count(r['encoder_params'])} | {_count(r['total_params'])} | {r['size_on_disk_bytes'] / 1e6:.1f} | "
                     f"{r['latency_b1_s'] * 1e3:.1f} | {r['latency_b32_s'] * 1e3:.1f} | {r['score']:.4f} | {pct} |")
    fastest = {b: min(rows, key=lambda r: r[f"latency_b{b}_s"]) for b in (1, 32)}
    smallest = min(rows, key=lambda r: r["size_on_disk_bytes"])
    lines += ["", f"Fastest at batch 1: {_form(fastest[1])}; at batch 32: {_form(fastest[32])}; smallest: "
              f"{_form(smallest)}."]
    lines += ["", "Parameters as stored. Encoder parameters follow the paper's convention (weight matrices and linear "
              "biases; a TD model's factors). An int8 TD model stores its factors in fp16 and folds them into int8 "
              "matrices when it loads; PyTorch and ONNX Runtime int8 store embeddings in 8 bits per entry. ONNX files "
              "hold the folded matrices, so their rows count no parameters.", ""]
    lines += [f"![{p}]({p})" for p in summary["plots"]]
    return "\n".join(lines) + "\n"


def _text_markdown(summary: dict[str, Any]) -> str:
    c = summary["config"]
    beams = c["generation_num_beams"]
    search = "greedy search" if beams == 1 else f"beam search ({beams} beams)"
    lines = [f"# xcompress report: {summary['task']} (text-to-text)", "",
             f"{summary['dev_pairs']} dev pairs of `{c['data_dir']}`, generated with {search} up to {c['generation_max_length']} pieces. Percentages are of **{summary['reference']}**'s score. "
             f"Latency: generation time per sentence on this CPU, {c['latency_examples']} sentences, after a warm-up.",
             "", "| model | params | zero weights | size MB | b1 ms/sentence | b32 ms/sentence | score | % of ref |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        pct = f"{r['percent_of_reference']:.1f}" if r["percent_of_reference"] is not None else "-"
        lines.append(f"| {r['label']} | {_count(r['total_params'])} | {r['sparsity']:.1%} | "
                     f"{r['size_on_disk_bytes'] / 1e6:.2f} | {r['latency_b1_s'] * 1e3:.1f} | {r['latency_b32_s'] * 1e3:.1f} | "
                     f"{r['score']:.4f} | {pct} |")
    lines += ["", "Sparse weights run through dense kernels: zeros make the file smaller (when stored compactly), not the "
              "generation faster; the time per sentence also follows how much a model writes.", ""]
    lines += [f"![{p}]({p})" for p in summary["plots"]]
    return "\n".join(lines) + "\n"


def _backend(row: dict[str, Any]) -> str:
    return row["backend"] + (" int8" if row["quantized"] and "int8" not in row["backend"] else "")


def _form(row: dict[str, Any]) -> str:
    return f"{row['label']} ({_backend(row)}, score {row['score']:.4f})"


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def report(summary: dict[str, Any]) -> str:
    return markdown(summary).split("\n\n![")[0] + f"\n\nreport: {Path(summary['output_dir']) / 'report.md'}"
