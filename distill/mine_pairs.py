"""New sentence pairs for a pair task, mined from its own training sentences and labelled by the fine-tuned teacher.

TinyBERT's word replacement makes copies of each pair that differ in a few words; a pair task's signal is the relation
between two sentences, which those copies barely vary. Here each training sentence is paired with its `--neighbours`
nearest sentences of the task (cosine of the teacher encoder's mean-pooled sentence embeddings: the embedded teacher
is a sentence-embedding model) and with `--random_partners` drawn at random, so the new pairs span the label range
from near-paraphrases to unrelated sentences. The teacher labels each pair (its class, or its score within the
training scores' range); task distillation then learns the teacher's outputs on them.

    xcompress mine-pairs --teacher_model runs/teacher-stsb --glue_dir data/glue_data --task_name STS-B
    xcompress mine-pairs ... --onto train_aug      # added to the rows `xcompress augment` wrote

`train_aug.tsv` holds the source rows, unchanged, then the mined pairs; a pair the source already holds (either way
round) is not added, so a second run onto the same file adds nothing. Deterministic for a seed.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from corpora.glue import Example, column_index, get_task, read_examples, read_rows, task_dir, train_file
from modeling.families import family_of
from modeling.formats import encoder_of
from modeling.loading import load_tokenizer
from stagekit.errors import InputError
from stagekit.options import at_least, option
from tasks.classifier import load_classifier, predict_logits, predictions
from tasks.features import encode

from .augment import numbered_rows

_CHUNK = 2048  # sentences per block of the similarity matrix


@dataclasses.dataclass
class MinePairsConfig:
    teacher_model: str = option(help="the teacher fine-tuned on the task: its encoder embeds the sentences, its head "
                                "labels the new pairs")
    glue_dir: str = option()
    task_name: str = option(help="a sentence-pair task (MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI)")
    neighbours: int = option(10, help="nearest sentences paired with each sentence", check=at_least(0))
    random_partners: int = option(5, help="sentences drawn at random paired with each sentence", check=at_least(0))
    onto: str = option("train", choices=["train", "train_aug"], help="the rows train_aug.tsv starts with: the "
                       "training file's, or those of the existing train_aug.tsv (xcompress augment), added to")
    max_seq_length: int = option(128, check=at_least(8))
    batch_size: int = option(128, help="sentences or pairs per teacher forward", check=at_least(1))
    max_train_examples: int | None = option(None, help="mine from a seeded subset of this many rows (as the task "
                                            "stages pick it)", check=at_least(1))
    seed: int = option(42)
    overwrite: bool = option(False, help="replace an existing train_aug.tsv (with --onto train)")
    quiet: bool = option(False)


CONFIG = MinePairsConfig


def run(cfg: MinePairsConfig) -> dict[str, Any]:
    started = time.perf_counter()
    task = get_task(cfg.task_name)
    if not task.is_pair:
        raise InputError(f"--task_name {task.name}: a single-sentence task; mine-pairs makes sentence pairs "
                         "(MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI)")
    if cfg.neighbours + cfg.random_partners == 0:
        raise InputError("--neighbours 0 and --random_partners 0: nothing to mine")
    target = task_dir(cfg.glue_dir, task) / "train_aug.tsv"
    if cfg.onto == "train_aug" and not target.is_file():
        raise InputError(f"--onto train_aug: no {target} (make it with `xcompress augment`, or use --onto train)")
    if cfg.onto == "train" and target.exists() and not cfg.overwrite:
        raise InputError(f"{target}: exists (pass --overwrite to replace it, or --onto train_aug to add to it)")
    teacher, teacher_dir = load_classifier(cfg.teacher_model, "--teacher_model", task, need_task_model=True)
    tokenizer = load_tokenizer(teacher_dir, "--teacher_model")
    source = train_file(task, cfg.glue_dir, aug=cfg.onto == "train_aug")
    read_examples(task, source)  # the whole source checked (fields, labels) before any work
    header, rows = numbered_rows(task, train_file(task, cfg.glue_dir), cfg.max_train_examples, cfg.seed)
    text_cols = [column_index(header, c, source) for c in task.text_columns]
    sentences = sorted({fields[c] for _, fields in rows for c in text_cols})
    if len(sentences) <= cfg.neighbours:
        raise InputError(f"--neighbours {cfg.neighbours}: the training rows hold only {len(sentences)} sentences")

    embeddings = _sentence_embeddings(teacher, tokenizer, sentences, cfg)
    partners = _partners(embeddings, cfg.neighbours, cfg.random_partners, cfg.seed)
    # --onto train: the rows mined from (a --max_train_examples subset, as augment writes it); train_aug: all of it
    if cfg.onto == "train_aug":
        source_rows = read_rows(source)
    else:
        source_rows = ([header] if header is not None else []) + [fields for _, fields in rows]
    held = {(f[text_cols[0]], f[text_cols[1]]) for f in source_rows[1 if header is not None else 0:] if f}
    pairs = []
    for i, js in enumerate(partners):
        for j in js:
            a, b = sentences[i], sentences[int(j)]
            if (a, b) not in held and (b, a) not in held:
                held.add((a, b))
                pairs.append((a, b))
    labels = _teacher_labels(teacher, tokenizer, task, pairs, cfg)
    mined = [_row(header, text_cols, column_index(header, task.train.label, source), a, b, label)
             for (a, b), label in zip(pairs, labels)]

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.writelines("\t".join(fields) + "\n" for fields in source_rows)
            f.writelines("\t".join(fields) + "\n" for fields in mined)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"task": task.name, "source": str(source), "source_rows": len(source_rows) - (header is not None),
            "sentences": len(sentences), "mined_pairs": len(mined), "output": str(target),
            "labels": dict(sorted(Counter(labels).items())) if not task.is_regression or not labels else _spread(labels),
            "seconds": time.perf_counter() - started, "config": dataclasses.asdict(cfg)}


@torch.no_grad()
def _sentence_embeddings(teacher, tokenizer, sentences: list[str], cfg: MinePairsConfig) -> torch.Tensor:
    """Unit vectors: the teacher encoder's last hidden states averaged over each sentence's pieces."""
    encoder, family = encoder_of(teacher), family_of(teacher)
    out = torch.zeros(len(sentences), family.size(teacher.config, "hidden_size"))
    order = np.argsort([len(s) for s in sentences], kind="stable")
    bar = tqdm(total=len(sentences), desc="embed", unit="sentence", disable=cfg.quiet)
    for start in range(0, len(order), cfg.batch_size):
        ids = order[start:start + cfg.batch_size]
        enc = tokenizer([sentences[i] for i in ids], truncation=True, max_length=cfg.max_seq_length, padding=True,
                        return_tensors="pt")
        hidden = encoder(**family.model_inputs(dict(enc))).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out[torch.from_numpy(ids)] = ((hidden * mask).sum(1) / mask.sum(1)).float()
        bar.update(len(ids))
    bar.close()
    return torch.nn.functional.normalize(out, dim=-1)


def _partners(embeddings: torch.Tensor, neighbours: int, random_partners: int, seed: int) -> list[np.ndarray]:
    """Per sentence: its nearest sentences by cosine (itself excluded), then distinct others drawn at random."""
    n = len(embeddings)
    out = []
    for start in range(0, n, _CHUNK):
        sims = embeddings[start:start + _CHUNK] @ embeddings.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -2.0  # not paired with itself
        near = sims.topk(neighbours, dim=1).indices.numpy() if neighbours else np.zeros((len(rows), 0), np.int64)
        for k, mine in enumerate(near):
            i = start + k
            rng = np.random.default_rng([seed, i])
            taken = set(mine.tolist()) | {i}
            drawn = [j for j in rng.permutation(n)[:random_partners + len(taken)].tolist() if j not in taken]
            out.append(np.concatenate([mine, np.array(drawn[:random_partners], dtype=np.int64)]))
    return out


def _teacher_labels(teacher, tokenizer, task, pairs: list[tuple[str, str]], cfg: MinePairsConfig) -> list[str]:
    """The teacher's class of each pair, or its score clipped to the training scores' range."""
    if not pairs:
        return []
    features = encode(task, [Example(f"mined-{k}", a, b, None) for k, (a, b) in enumerate(pairs)], tokenizer,
                      cfg.max_seq_length)
    pred = predictions(task, predict_logits(teacher, features, cfg.batch_size))
    if not task.is_regression:
        return [task.labels[int(p)] for p in pred]
    gold = [e.label for e in read_examples(task, train_file(task, cfg.glue_dir))]
    return [f"{v:.3f}" for v in np.clip(pred, min(gold), max(gold))]


def _row(header: list[str] | None, text_cols: list[int], label_col: int, a: str, b: str, label: str) -> list[str]:
    """A row of the task's training layout: the two sentences and the label in their columns, 'mined' elsewhere."""
    fields = ["mined"] * (len(header) if header is not None else max(*text_cols, label_col) + 1)
    fields[text_cols[0]], fields[text_cols[1]], fields[label_col] = a, b, label
    return fields


def _spread(labels: list[str]) -> dict[str, float]:
    v = np.array([float(x) for x in labels])
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def report(summary: dict[str, Any]) -> str:
    return (f"mine-pairs {summary['task']}: {summary['sentences']:,} sentences of {summary['source_rows']:,} rows -> "
            f"{summary['mined_pairs']:,} teacher-labelled pairs ({summary['labels']}) after the source rows, "
            f"{summary['seconds'] / 60:.1f} min -> {summary['output']}")
