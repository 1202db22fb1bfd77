"""Where a student loses a task's signal: a linear probe on every layer's sentence vectors, teacher and students side
by side. For each model and layer, ridge regression (classification: one-vs-rest least squares) from the mean of
the real tokens' hidden states and the first token's, fitted on the task's training rows, scored on its dev set
with the task's metric. A head that reads a layer whose probe scores high can be trained; one whose probe scores
at chance cannot.

    .venv/bin/python benchmarks/probe.py --task STS-B --data_dir runs/exp/glue \
        --models "teacher=runs/exp/st-teacher,TD 1/7 decomposed=runs/exp/st-dec,TD 1/7 recovered=runs/exp/st-rec"

Prints one row per model (the probe score of the embeddings, then of each layer's output) and writes
benchmarks/results/probe.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from corpora.glue import TASKS, dev_files, get_task, train_file  # noqa: E402
from modeling.formats import CLASSIFIER  # noqa: E402
from modeling.loading import load_model, load_tokenizer  # noqa: E402
from tasks.features import load_features  # noqa: E402
from tasks.metrics import glue_metrics  # noqa: E402

PENALTIES = (10.0, 100.0, 1000.0)  # ridge strengths tried; the best dev score is kept (an upper bound of a probe)


@torch.inference_mode()
def layer_vectors(model_dir: str, task, data_dir: str, split: str, max_rows: int, seq: int) -> tuple[list, np.ndarray]:
    """Per layer (embeddings first), one (rows, 2h) array: mean of the real tokens, then the first token."""
    model, directory = load_model(model_dir, "--models", CLASSIFIER)
    path = train_file(task, data_dir, aug=False) if split == "train" else dev_files(task, data_dir)[0]
    features = load_features(task, path, load_tokenizer(directory, "--models"), seq)
    ids = np.arange(min(len(features), max_rows))
    layers: list[list[torch.Tensor]] = []
    for start in range(0, len(ids), 128):
        batch = features.batch(ids[start:start + 128])
        batch.pop("labels")
        hidden = model(**batch, output_hidden_states=True).hidden_states
        real = batch["attention_mask"].unsqueeze(-1).float()
        for i, h in enumerate(hidden):
            if len(layers) <= i:
                layers.append([])
            layers[i].append(torch.cat([(h.float() * real).sum(1) / real.sum(1), h[:, 0].float()], -1))
    return [torch.cat(chunks).numpy() for chunks in layers], np.asarray(features.labels)[ids]


def probe_score(task, train: np.ndarray, labels: np.ndarray, dev: np.ndarray, dev_labels: np.ndarray) -> float:
    mean, scale = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mean) / scale, (dev - mean) / scale
    targets = labels[:, None].astype(np.float64) if task.is_regression else np.eye(task.num_labels)[labels]
    best = -np.inf
    for penalty in PENALTIES:
        weights = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ (targets - targets.mean(0)))
        out = b @ weights + targets.mean(0)
        predictions = out[:, 0] if task.is_regression else out.argmax(-1)
        best = max(best, glue_metrics(task.metric, predictions, dev_labels)["score"])
    return float(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=list(TASKS))
    ap.add_argument("--data_dir", required=True, help="the glue_data directory, or the task's own directory")
    ap.add_argument("--models", required=True, help="label=model_dir pairs separated by commas")
    ap.add_argument("--train_rows", type=int, default=3000)
    ap.add_argument("--max_seq_length", type=int, default=64)
    args = ap.parse_args()
    task = get_task(args.task)
    models = dict(item.split("=", 1) for item in args.models.split(",") if item.strip())
    results = {}
    for label, directory in models.items():
        train, labels = layer_vectors(directory, task, args.data_dir, "train", args.train_rows, args.max_seq_length)
        dev, dev_labels = layer_vectors(directory, task, args.data_dir, "dev", 10**9, args.max_seq_length)
        results[label] = [probe_score(task, t, labels, d, dev_labels) for t, d in zip(train, dev)]
    layers = max(len(v) for v in results.values())
    print(f"\n{task.name} dev {task.metric} of a linear probe on each layer's mean and first-token vectors "
          f"({args.train_rows} training rows)")
    print("| model | embeddings | " + " | ".join(f"layer {i}" for i in range(1, layers)) + " |")
    print("|---|" + "---|" * layers)
    for label, scores in results.items():
        print(f"| {label} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")
    out = REPO / "benchmarks/results/probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": task.name, "models": models, "train_rows": args.train_rows,
                               "max_seq_length": args.max_seq_length, "scores": results}, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
