"""What the teacher's blocks really read, and how far a student's outputs are from the teacher's.

Calibration text (`--calibration_data`) is a directory of pre-generated epochs (TinyBERT's format; masked tokens
are restored from their labels), a GLUE task directory (its train.tsv, pairs kept as pairs), or a text file (one
text per line). It is tokenized with the teacher's tokenizer, shuffled with the seed, and split: the first
`examples` sequences fit the decomposition, the next `held_out` measure it.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from corpora.glue import TASKS, read_examples
from corpora.pregenerated import PregeneratedEpochs, epoch_shards
from modeling.families import family_of
from modeling.stacking import block_layout
from stagekit.errors import InputError

# The input each kind of block reads: Q, K, V the layer's input, O the attention context, the FFN-input blocks
# the attention block's output, FFN-output block j the j-th h-wide slice of the GELU activations.
_INPUT_OF = {"query": "attention", "key": "attention", "value": "attention", "attn_out": "context",
             **{f"ffn_in_{j}": "ffn_in" for j in range(4)}, **{f"ffn_out_{j}": f"activation_{j}" for j in range(4)}}
_INPUTS = ("attention", "context", "ffn_in", "activation_0", "activation_1", "activation_2", "activation_3")


def read_sequences(path: str, flag: str, tokenizer, max_seq_length: int, needed: int, seed: int,
                   split: str = "train") -> list[dict[str, list[int]]]:
    """Up to `needed` tokenized sequences from a calibration source, in a seeded random order (of a GLUE task
    directory, its `split` file)."""
    source = Path(path)
    if not source.exists():
        raise InputError(f"{flag} {path}: no such file or directory")
    shuffle = random.Random(seed).shuffle
    if source.is_dir() and epoch_shards(source):
        epochs = PregeneratedEpochs(source, tokenizer.get_vocab(), flag)
        sequences = [{"input_ids": ids[:max_seq_length], "token_type_ids": types[:max_seq_length]}
                     for ids, types in epochs.texts(0)]
        epochs.close()
        shuffle(sequences)
    else:
        if source.is_dir() and (source / f"{split}.tsv").is_file():
            if source.name not in TASKS:
                raise InputError(f"{flag} {path}: a GLUE task directory is named after its task ({', '.join(TASKS)})")
            texts = [(e.text_a, e.text_b) for e in read_examples(TASKS[source.name], source / f"{split}.tsv")]
        elif source.is_file():
            try:
                texts = [(line.strip(), None) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError as e:
                raise InputError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        else:
            raise InputError(f"{flag} {path}: expected pre-generated epochs (epoch_*.json), a GLUE task directory "
                             f"({split}.tsv) or a text file")
        shuffle(texts)  # before tokenizing: a task's whole training set need not be tokenized for a few hundred
        sequences = [{"input_ids": list(e["input_ids"]), "token_type_ids": list(e["token_type_ids"])}
                     for e in (tokenizer(a, b, truncation=True, max_length=max_seq_length) for a, b in texts[:needed])]
    sequences = [s for s in sequences if len(s["input_ids"]) > 2][:needed]
    if not sequences:
        raise InputError(f"{flag} {path}: no text in it")
    return sequences


def hold_out(sequences: list, fit_examples: int, held_out_examples: int, flag: str, path: str) -> tuple[list, list]:
    """(fitted, held out): the first `held_out_examples` sequences are never fitted on. A source shorter than asked
    for still holds a fifth out, so the error is never measured on text the fit has seen."""
    enough = len(sequences) >= fit_examples + held_out_examples
    held = held_out_examples if enough else min(held_out_examples, len(sequences) // 5)
    if held == 0:
        raise InputError(f"{flag} {path}: {len(sequences)} sequence(s), too few to fit on and hold some out "
                         "(give a few hundred sentences)")
    return sequences[held:held + fit_examples], sequences[:held]


def batches(sequences: list[dict[str, list[int]]], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches, longest first within each (padding costs nothing but time)."""
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(s["input_ids"]) for s in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(chunk):
            n = len(s["input_ids"])
            ids[row, :n] = torch.tensor(s["input_ids"])
            types[row, :n] = torch.tensor(s["token_type_ids"])
            mask[row, :n] = 1
        yield {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@dataclasses.dataclass
class BlockInputs:
    """Second moments E[x xᵀ] and means E[x] of the inputs of every stacked block, over real tokens.

    `moments` and `means` hold one entry per distinct input; `inputs[i]` is block i's entry."""

    moments: torch.Tensor  # (g, h, h) float64
    means: torch.Tensor  # (g, h) float64
    inputs: torch.Tensor  # (n,) long
    tokens: int


@torch.no_grad()
def block_inputs(bert: nn.Module, sequences: list[dict[str, list[int]]], ops: str, batch_size: int = 32) -> BlockInputs:
    """Run the dense teacher over the calibration sequences and accumulate what each block reads."""
    family = family_of(bert)
    h, layers = family.size(bert.config, "hidden_size"), family.layer_list(bert)
    names = [(layer, name) for layer in range(len(layers)) for name in _INPUTS]
    index = {key: g for g, key in enumerate(names)}
    sums = torch.zeros(len(names), h, h, dtype=torch.float64)
    firsts = torch.zeros(len(names), h, dtype=torch.float64)
    state = {"mask": None, "tokens": 0}

    def accumulate(layer: int, name: str, x: torch.Tensor) -> None:
        rows = x[state["mask"]].double()  # (real tokens, width)
        g = index[(layer, name)]
        sums[g] += rows.T @ rows
        firsts[g] += rows.sum(0)

    def hook(layer: int, kind: str):
        def record(module, args):
            x = args[0]
            if kind == "activation":
                for j, part in enumerate(x.split(h, dim=-1)):
                    accumulate(layer, f"activation_{j}", part)
            else:
                accumulate(layer, kind, x)
        return record

    handles = []
    for i, layer in enumerate(layers):
        for part, kind in (("query", "attention"), ("attn_out", "context"), ("ffn_in", "ffn_in"),
                           ("ffn_out", "activation")):
            handles.append(family.linear(layer, part).register_forward_pre_hook(hook(i, kind)))
    try:
        bert.eval()
        for batch in batches(sequences, batch_size):
            state["mask"] = batch["attention_mask"].bool()
            state["tokens"] += int(state["mask"].sum())
            bert(**family.model_inputs(batch))
    finally:
        for handle in handles:
            handle.remove()
    tokens = state["tokens"]
    inputs = torch.tensor([index[(layer, _INPUT_OF[kind])] for layer, kind in block_layout(len(layers), ops)])
    return BlockInputs(moments=sums / tokens, means=firsts / tokens, inputs=inputs, tokens=tokens)


@torch.no_grad()
def hidden_state_errors(teacher: nn.Module, student: nn.Module, sequences: list[dict[str, list[int]]],
                        batch_size: int = 32) -> dict[str, object]:
    """‖H_student − H_teacher‖ / ‖H_teacher‖ over real tokens, after every layer: `overall` is the last layer's,
    `per_layer` lists them all. `cls` is the last layer's error on the first token, what a classifier reads, relative
    to how much the teacher's varies from one input to the next (1.0: no better than the teacher's mean [CLS] vector,
    which a token-averaged error can hide)."""
    num = den = None
    cls_err, cls_sum, cls_sq = 0.0, 0.0, 0.0
    teacher.eval()
    student.eval()
    device = next(student.parameters()).device
    for batch in batches(sequences, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        mask = batch["attention_mask"].bool()
        t = teacher(**batch, output_hidden_states=True).hidden_states[1:]
        s = student(**batch, output_hidden_states=True).hidden_states[1:]
        d = torch.stack([((a - b)[mask].double() ** 2).sum() for a, b in zip(s, t)])
        r = torch.stack([(b[mask].double() ** 2).sum() for b in t])
        num, den = (d, r) if num is None else (num + d, den + r)
        first = t[-1][:, 0].double()
        cls_err += float(((s[-1][:, 0].double() - first) ** 2).sum())
        cls_sum, cls_sq = cls_sum + first.sum(0).cpu(), cls_sq + float((first ** 2).sum())
    per_layer = [float(x) for x in torch.sqrt(num / den)]
    spread = cls_sq - float((cls_sum ** 2).sum()) / len(sequences)
    return {"overall": per_layer[-1], "per_layer": per_layer, "cls": (cls_err / spread) ** 0.5 if spread > 0 else None,
            "sequences": len(sequences)}
