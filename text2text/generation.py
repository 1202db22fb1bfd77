"""Text-to-text batches and generation: sources and targets as piece ids of the model's own tokenizer (its
post-processor appends the end-of-sequence piece, as T5's does), padded per batch; labels padded with -100 so the
loss skips them; generation by greedy or beam search up to a maximum number of new pieces."""
from __future__ import annotations

import time

import torch

from corpora.text_pairs import TextPair


class PairBatches:
    """The pairs of one split as piece ids, truncated to the given lengths."""

    def __init__(self, pairs: list[TextPair], tokenizer, max_source_length: int, max_target_length: int):
        self.pairs = pairs
        self.pad = tokenizer.pad_token_id
        self.sources = tokenizer([p.source for p in pairs], max_length=max_source_length, truncation=True)["input_ids"]
        self.targets = tokenizer(text_target=[p.target for p in pairs], max_length=max_target_length,
                                 truncation=True)["input_ids"]

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, rows) -> dict[str, torch.Tensor]:
        rows = [int(i) for i in rows]
        src = _padded([self.sources[i] for i in rows], self.pad)
        labels = _padded([self.targets[i] for i in rows], -100)
        return {"input_ids": src, "attention_mask": (src != self.pad).long(), "labels": labels}


def on_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _padded(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out


@torch.no_grad()
def mean_loss(model, data: PairBatches, batch_size: int) -> float:
    """Teacher-forced cross-entropy per target piece over a split (the validation loss)."""
    model.eval()
    total, pieces = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data.batch(range(start, min(start + batch_size, len(data))))
        n = int((batch["labels"] != -100).sum())
        total += float(model(**on_device(batch, model.device)).loss) * n
        pieces += n
    return total / max(1, pieces)


@torch.no_grad()
def generate(model, tokenizer, sources: list[str], max_source_length: int, max_length: int, num_beams: int,
             batch_size: int) -> list[str]:
    """Each source's generated text, in order. Sources go through in order of length, so that a batch pads little."""
    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        enc = tokenizer([sources[i] for i in rows], max_length=max_source_length, truncation=True, padding=True,
                        return_tensors="pt").to(model.device)
        ids = model.generate(**enc, max_new_tokens=max_length, num_beams=num_beams, do_sample=False)
        for i, text in zip(rows, tokenizer.batch_decode(ids, skip_special_tokens=True)):
            out[i] = text
    return out


def generation_seconds(model, tokenizer, sources: list[str], max_source_length: int, max_length: int,
                       num_beams: int, batch_size: int) -> float:
    """Wall seconds per sentence of generating `sources` at `batch_size`, after one warm-up batch."""
    generate(model, tokenizer, sources[:batch_size], max_source_length, max_length, num_beams, batch_size)
    _synchronize(model.device)
    start = time.perf_counter()
    generate(model, tokenizer, sources, max_source_length, max_length, num_beams, batch_size)
    _synchronize(model.device)
    return (time.perf_counter() - start) / len(sources)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: time what they did, not what was queued
        torch.cuda.synchronize(device)
