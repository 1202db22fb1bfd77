"""Evaluate a classifier (dense BERT, TD, and the later pruned and quantized models) on a GLUE task's dev
files, and with `--do_predict` write GLUE submission files for its test files.

    xcompress evaluate --model runs/td-sst2 --task_name SST-2 --data_dir data/glue_data
    xcompress evaluate --model runs/td-sst2 --task_name SST-2 --data_dir data/glue_data --do_predict --output_dir runs/sub

Metrics go to stdout and `eval_results_<task>.json` in `--output_dir` (default: the model's directory);
submissions are `<output_dir>/<TASK>.tsv` (`MNLI-m.tsv` and `MNLI-mm.tsv` for MNLI), `index<TAB>prediction`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from corpora.glue import GlueTask, dev_files, get_task, submission_files
from modeling.formats import VOCABULARY_KEY
from modeling.loading import load_tokenizer
from stagekit.atomic import write_json
from stagekit.errors import InputError
from stagekit.options import option
from tasks.classifier import dev_evaluation, load_classifier, predict_logits, predictions
from tasks.features import load_features


@dataclasses.dataclass
class EvaluateConfig:
    model: str = option(help="a model fine-tuned or distilled on the task")
    task_name: str = option()
    data_dir: str = option()
    output_dir: str | None = option(
        None,
        help="where the JSON metrics (and submissions) go; default: the model directory")
    do_predict: bool = option(False, help="also write GLUE submission files for the test split")
    max_seq_length: int = option(128)
    eval_batch_size: int = option(128)


CONFIG = EvaluateConfig


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    task = get_task(cfg.task_name)
    if cfg.eval_batch_size < 1:
        raise InputError(f"--eval_batch_size {cfg.eval_batch_size}: must be >= 1")
    model, model_dir = load_classifier(cfg.model, "--model", task, need_task_model=True)
    tokenizer = load_tokenizer(model_dir, "--model")
    devs = {p.stem: load_features(task, p, tokenizer, cfg.max_seq_length) for p in dev_files(task, cfg.data_dir)}
    tests = [(load_features(task, p, tokenizer, cfg.max_seq_length, labelled=False), name)
             for p, name in submission_files(task, cfg.data_dir)] if cfg.do_predict else []
    out = Path(cfg.output_dir) if cfg.output_dir else model_dir
    if out.exists() and not out.is_dir():
        raise InputError(f"--output_dir {out}: exists and is not a directory")
    started = time.perf_counter()
    evaluated = {name: dev_evaluation(model, task, feats, cfg.eval_batch_size) for name, feats in devs.items()}
    results = {name: e.metrics for name, e in evaluated.items()}
    collapsed = {name: e.collapsed for name, e in evaluated.items() if e.collapsed}
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    submissions = [_write_submission(out / f"{name}.tsv", task, feats, predict_logits(model, feats, cfg.eval_batch_size))
                   for feats, name in tests]
    # A pruned vocabulary turns the pieces it dropped into [UNK] (or other pieces): say how often that happened.
    pruned = getattr(model.config, VOCABULARY_KEY, None)
    unknown = {name: _unknown(feats, tokenizer.unk_token_id) for name, feats in devs.items()} if pruned else {}
    summary = {"model": str(model_dir), "task": task.name, "dev": results, "collapsed": collapsed,
               "vocabulary": pruned, "unknown_pieces": unknown,
               "dev_examples": {k: len(v) for k, v in devs.items()},
               "eval_seconds": seconds, "submissions": submissions, "config": dataclasses.asdict(cfg)}
    write_json(out / f"eval_results_{task.name}.json", summary)
    return summary


def _unknown(feats, unk_id: int) -> dict[str, int]:
    return {"unknown": sum(ids.count(unk_id) for ids in feats.input_ids),
            "pieces": sum(len(ids) for ids in feats.input_ids)}


def _write_submission(path: Path, task: GlueTask, feats, logits) -> str:
    preds = predictions(task, logits)
    values = [f"{min(5.0, max(0.0, float(v))):.3f}" for v in preds] if task.is_regression else [task.labels[i] for i in preds]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write("index\tprediction\n")
        for guid, v in zip(feats.guids, values):
            f.write(f"{guid}\t{v}\n")
    tmp.replace(path)
    return str(path)


def report(summary: dict[str, Any]) -> str:
    lines = [f"evaluate {summary['task']} {summary['model']}:"]
    for name, metrics in summary["dev"].items():
        lines.append(f"  {name} ({summary['dev_examples'][name]} examples): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if name in summary["collapsed"]:
            lines.append(f"  warning: {name}: {summary['collapsed'][name]}")
        if name in summary["unknown_pieces"]:
            u, v = summary["unknown_pieces"][name], summary["vocabulary"]
            lines.append(f"  note: {name}: {u['unknown']:,} of {u['pieces']:,} pieces are [UNK] (vocabulary pruned to "
                         f"{v['kept']:,} of {v['original_size']:,} pieces; text it was not pruned for loses words)")
    lines += [f"  submission: {p}" for p in summary["submissions"]]
    return "\n".join(lines)
