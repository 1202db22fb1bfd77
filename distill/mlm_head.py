"""Fit a masked-LM head to a frozen encoder that was shipped without one (the embedded all-MiniLM-L6-v2),
so that `xcompress augment` can ask it for in-context word candidates.

The encoder and the word embeddings stay frozen; BERT's head (dense + GELU + LayerNorm, then the decoder tied to
the input embeddings, plus an output bias) is trained with cross-entropy on the masked positions of the
pre-generated epochs. Since nothing below the head learns, the encoder runs once over the training examples
(without gradients) and the head then trains for several epochs on the cached hidden states of the masked
positions. Held-out masked-token accuracy (top-1 and top-15) is measured before and after, on the last
`--eval_examples` lines of the first epoch file, which training never reads.

    xcompress fit-mlm-head --teacher_model all-MiniLM-L6-v2 --pregenerated_data data/pregenerated \
        --output_dir runs/minilm-mlm
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from corpora.pregenerated import PregeneratedEpochs, rank_permutation, read_vocab_ids
from modeling.formats import DENSE, MASKED_LM
from modeling.loading import inspect_model, load_model
from stagekit.atomic import atomic_output_dir, check_output_dir
from stagekit.errors import InputError
from stagekit.options import above, at_least, between, option
from stagekit.outputs import finish_stage, tokenizer_files
from stagekit.training_log import TrainingLog

from .checkpoint import write_model_files
from .flags import check_training_flags
from .loop import optimizer_for, optimizer_step


@dataclasses.dataclass
class FitMlmHeadConfig:
    teacher_model: str = option(help="dense BERT encoder (or all-MiniLM-L6-v2)")
    pregenerated_data: str = option(help="epochs from `xcompress pregenerate`")
    output_dir: str = option()
    num_train_epochs: float = option(3.0, help="passes of the head over the cached positions", check=above(0))
    max_train_examples: int = option(10000, help="examples encoded (epoch files in turn)", check=at_least(1))
    train_batch_size: int = option(1024, help="masked positions per step", check=at_least(1))
    learning_rate: float = option(3e-3, check=above(0))
    warmup_proportion: float = option(0.05, check=between(0, 1))
    weight_decay: float = option(0.01)
    max_grad_norm: float = option(1.0)
    eval_examples: int = option(512, help="held-out examples for the accuracy figures", check=at_least(1))
    encode_batch_size: int = option(64, check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = FitMlmHeadConfig


def _load(cfg: FitMlmHeadConfig):
    inspect_model(cfg.teacher_model, "--teacher_model", kinds=(DENSE,), stage="fit-mlm-head")
    torch.manual_seed(cfg.seed)  # the new head is drawn from the seed: two runs fit the same head
    return load_model(cfg.teacher_model, "--teacher_model", MASKED_LM, new_head=True, need_fp32=True)


@torch.no_grad()
def _encode(model, data: PregeneratedEpochs, batches: list[tuple[int, np.ndarray]], desc: str | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states at the masked positions of (epoch, example ids) batches, and their labels."""
    hidden, labels = [], []
    for epoch, ids in tqdm(batches, desc=desc, unit="batch", disable=desc is None):
        b = data.batch(epoch, ids, mlm_labels=True)
        h = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       token_type_ids=b["token_type_ids"]).last_hidden_state
        where = b["labels"] != -100
        hidden.append(h[where])
        labels.append(b["labels"][where])
    return torch.cat(hidden), torch.cat(labels)


@torch.no_grad()
def _accuracy(model, hidden: torch.Tensor, labels: torch.Tensor, k: int = 15) -> dict[str, float]:
    hits1 = hitsk = 0
    loss = 0.0
    for i in range(0, len(labels), 2048):
        logits, gold = model.cls(hidden[i:i + 2048]), labels[i:i + 2048]
        top = logits.topk(k, dim=-1).indices
        hits1 += int((top[:, 0] == gold).sum())
        hitsk += int((top == gold[:, None]).any(-1).sum())
        loss += float(F.cross_entropy(logits, gold, reduction="sum"))
    return {"top1": hits1 / len(labels), f"top{k}": hitsk / len(labels), "loss": loss / len(labels),
            "masked_tokens": len(labels)}


def _training_batches(data: PregeneratedEpochs, cfg: FitMlmHeadConfig) -> list[tuple[int, np.ndarray]]:
    """Up to --max_train_examples examples, epoch file after epoch file, held-out lines of file 0 excluded."""
    held_from = data.num_examples(0) - cfg.eval_examples
    batches, left = [], cfg.max_train_examples
    for epoch in range(data.num_files):
        ids = rank_permutation(data.num_examples(epoch), cfg.seed, epoch, 0, 1)
        ids = ids[ids < held_from] if epoch == 0 else ids
        ids = ids[:left]
        batches += [(epoch, ids[i:i + cfg.encode_batch_size]) for i in range(0, len(ids), cfg.encode_batch_size)]
        left -= len(ids)
        if left == 0:
            break
    return batches


def run(cfg: FitMlmHeadConfig) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_training_flags(cfg, 1)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    model, model_dir = _load(cfg)
    vocab = model_dir / "vocab.txt"
    if not vocab.is_file():
        raise InputError(f"--teacher_model {cfg.teacher_model}: no vocab.txt")
    data = PregeneratedEpochs(cfg.pregenerated_data, read_vocab_ids(vocab))
    n0 = data.num_examples(0)
    if n0 <= 2 * cfg.eval_examples:
        raise InputError(f"--pregenerated_data {cfg.pregenerated_data}: {n0} examples in epoch 0, too few to hold "
                         f"out --eval_examples {cfg.eval_examples} and train on the rest")
    started = time.perf_counter()
    progress = None if cfg.quiet else "encode"
    held = np.arange(n0 - cfg.eval_examples, n0)
    eval_h, eval_y = _encode(model, data, [(0, held[i:i + cfg.encode_batch_size])
                                           for i in range(0, len(held), cfg.encode_batch_size)], None)
    train_h, train_y = _encode(model, data, _training_batches(data, cfg), progress)
    data.close()
    encode_seconds = time.perf_counter() - started
    model.requires_grad_(False)
    head = model.cls.predictions
    head.transform.requires_grad_(True)
    head.bias.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    before = _accuracy(model, eval_h, eval_y)
    per_epoch = max(1, len(train_y) // cfg.train_batch_size)
    total = max(1, int(cfg.num_train_epochs * per_epoch))
    _, optimizer, scheduler = optimizer_for(head, cfg.learning_rate, cfg.weight_decay, cfg.warmup_proportion, total)
    generator = torch.Generator().manual_seed(cfg.seed)
    log_rows = []
    bar = tqdm(total=total, desc="fit MLM head", unit="step", disable=cfg.quiet)

    # --- loop ---------------------------------------------------------------------------------------------
    model.train()
    for step in range(total):
        if step % per_epoch == 0:
            order = torch.randperm(len(train_y), generator=generator)
        pick = order[(step % per_epoch) * cfg.train_batch_size:][:cfg.train_batch_size]
        loss = F.cross_entropy(model.cls(train_h[pick]), train_y[pick])
        loss.backward()
        optimizer_step(optimizer, scheduler, head.parameters(), cfg.max_grad_norm)
        log_rows.append({"step": step + 1, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                         "seconds": time.perf_counter() - started})
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.update(1)

    # --- cleanup ------------------------------------------------------------------------------------------
    bar.close()
    model.eval()
    after = _accuracy(model, eval_h, eval_y)
    summary = {"steps": total, "trainable_parameters": trainable, "train_masked_tokens": len(train_y),
               "held_out_before": before, "held_out_after": after, "encode_seconds": encode_seconds,
               "seconds": time.perf_counter() - started, "output_dir": str(out), "config": dataclasses.asdict(cfg)}
    with atomic_output_dir(out) as tmp:
        write_model_files(model, tmp, tokenizer_files(model_dir))
        log = TrainingLog(tmp)
        for row in log_rows:
            log.write(row)
        log.close()
        finish_stage(tmp, "fit-mlm-head", cfg, summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    b, a = summary["held_out_before"], summary["held_out_after"]
    return (f"fit-mlm-head: {summary['steps']} steps, {summary['trainable_parameters']:,} head parameters trained; "
            f"held-out masked-token accuracy top-1 {b['top1']:.3f} -> {a['top1']:.3f}, top-15 {b['top15']:.3f} -> "
            f"{a['top15']:.3f} ({a['masked_tokens']} tokens) in {summary['seconds'] / 60:.1f} min -> {summary['output_dir']}")
