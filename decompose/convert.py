"""Build a TD model from a dense BERT teacher and its shared-core Tucker factors."""
from __future__ import annotations

import torch
from torch import nn

from modeling.configuration_tucker_bert import TuckerBertConfig
from modeling.families import family_of
from modeling.formats import encoder_of
from modeling.modeling_tucker_bert import TuckerBertForSequenceClassification, TuckerBertModel
from modeling.stacking import OPS, block_layout

from .blocks import stack_encoder_blocks
from .residual import Corrections, fit_corrections
from .tucker import SharedTucker, decompose_fast, decompose_hooi


# A task teacher's task fields come along to its student.
_TASK_KEYS = ("num_labels", "id2label", "label2id", "problem_type", "finetuning_task", "bos_token_id", "eos_token_id")


def td_config_from_teacher(teacher_config, rank_layer: int, rank_dim: int, ops: str,
                           architecture: str = "TuckerBertModel", residual_ranks: list[int] | None = None
                           ) -> TuckerBertConfig:
    """The teacher's geometry (in BertConfig's names) with the given ranks, its family's embeddings and head."""
    family = family_of(teacher_config)
    values = teacher_config.to_dict()
    geometry = family.bert_geometry(values) | {k: values[k] for k in _TASK_KEYS if k in values}
    if geometry.get("embedding_size") == geometry["hidden_size"]:
        geometry["embedding_size"] = None
    return TuckerBertConfig(**geometry, rank_layer=rank_layer, rank_dim=rank_dim, ops=ops, architectures=[architecture],
                            residual_ranks=residual_ranks if any(residual_ranks or ()) else None, family=family.name,
                            positions_from_padding=family.position_offset > 0,
                            pooler_act=family.head_act)


@torch.no_grad()
def td_state_from_teacher(bert: nn.Module, factors: SharedTucker, config: TuckerBertConfig) -> dict[str, torch.Tensor]:
    """State dict of a `TuckerBertModel` holding the teacher's embeddings (and ELECTRA's projection), biases,
    LayerNorms, pooler if it has one and the sublayers that `ops` keeps dense, plus the Tucker factors."""
    family = family_of(bert)
    state: dict[str, torch.Tensor] = {f"embeddings.{name}": t for name, t in bert.embeddings.named_parameters()}
    if family.embedding_projection and hasattr(bert, family.embedding_projection):
        for name, t in getattr(bert, family.embedding_projection).named_parameters():
            state[f"embeddings.project.{name}"] = t
    if getattr(bert, "pooler", None) is not None:
        for name, t in bert.pooler.state_dict().items():
            state[f"pooler.{name}"] = t
    f = "encoder.factors."
    state.update({f + "U": factors.U, f + "V": factors.V, f + "G": factors.G, f + "P": factors.P})
    san, ffn = "query" in OPS[config.ops], "ffn_in_0" in OPS[config.ops]
    for i, layer in enumerate(family.layer_list(bert)):
        p = f"encoder.layer.{i}."
        q, k, v, o = (family.linear(layer, part) for part in ("query", "key", "value", "attn_out"))
        ffn_in, ffn_out = family.linear(layer, "ffn_in"), family.linear(layer, "ffn_out")
        state[p + "attention.qkv.bias"] = torch.cat([q.bias, k.bias, v.bias])
        state[p + "attention.output.bias"] = o.bias
        if not san:
            state[p + "attention.qkv.weight"] = torch.cat([q.weight, k.weight, v.weight])
            state[p + "attention.output.weight"] = o.weight
        for name, norm in (("attention", family.part(layer, "attn_norm")), ("ffn", family.part(layer, "ffn_norm"))):
            state[p + f"{name}.LayerNorm.weight"] = norm.weight
            state[p + f"{name}.LayerNorm.bias"] = norm.bias
        state[p + "ffn.intermediate.bias"] = ffn_in.bias
        state[p + "ffn.output.bias"] = ffn_out.bias
        if not ffn:
            state[p + "ffn.intermediate.weight"] = ffn_in.weight
            state[p + "ffn.output.weight"] = ffn_out.weight
    return {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}


def factorize_teacher(teacher: nn.Module, rank_layer: int, rank_dim: int, ops: str = "san_ffn", init: str = "fast",
                      sweeps: int = 1, seed: int = 0, residual_ranks: list[int] | None = None
                      ) -> tuple[nn.Module, SharedTucker, torch.Tensor, torch.Tensor]:
    """The TD model of a dense teacher: its stacked blocks factorized, everything else copied.

    Returns the model, the factors, the float32 stack they approximate and the model's approximation of it (the
    factors' plus the layers' corrections, `residual_ranks`), for error reports."""
    W = stack_encoder_blocks(encoder_of(teacher), ops, dtype=torch.float32)
    if init == "fast":
        factors = decompose_fast(W, rank_layer, rank_dim, sweeps=sweeps)
    else:
        factors = decompose_hooi(W, rank_layer, rank_dim, seed=seed)
    approx = factors.reconstruct()
    corrections = fit_corrections(W, approx, residual_ranks or [], block_layout(len(residual_ranks or ()), ops))
    model = td_model(teacher, factors, rank_layer, rank_dim, ops, corrections=corrections,
                     residual_ranks=residual_ranks)
    return model, factors, W, approx + corrections.blocks


def td_model(teacher: nn.Module, factors: SharedTucker, rank_layer: int, rank_dim: int, ops: str,
             bias_shifts: dict[str, torch.Tensor] | None = None, corrections: Corrections | None = None,
             residual_ranks: list[int] | None = None) -> nn.Module:
    """The TD model holding `factors` (and the layers' `corrections` at `residual_ranks`) and the teacher's other
    weights, each bias moved by its shift, if any.
    A task teacher (a ...ForSequenceClassification) gives a task student: its head copied into the TD model's pooler
    and classifier. A teacher without a pooler (DistilBERT's, ELECTRA's encoder) leaves the TD pooler initialised,
    as a fresh task head would be."""
    bert = encoder_of(teacher)
    task = bert is not teacher
    cls = TuckerBertForSequenceClassification if task else TuckerBertModel
    config = td_config_from_teacher(teacher.config, rank_layer, rank_dim, ops, cls.__name__, residual_ranks)
    state = td_state_from_teacher(bert, factors, config) | (corrections.state if corrections else {})
    for name, shift in (bias_shifts or {}).items():
        state[name] = state[name] + shift.to(state[name].dtype)
    if task:
        state = {f"bert.{k}": v for k, v in state.items() if not k.startswith("pooler.")}
        for ours, theirs in family_of(teacher).task_head.items():
            target = f"bert.{ours}" if ours.startswith("pooler.") else ours
            for name, t in teacher.get_submodule(theirs).state_dict().items():
                state[f"{target}.{name}"] = t.detach().float()
    model = cls(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    pooler = "bert.pooler." if task else "pooler."
    if unexpected or any(not k.startswith(pooler) for k in missing):
        raise RuntimeError(f"TD state does not match {cls.__name__}: missing {missing}, unexpected {unexpected}")
    return model


@torch.no_grad()
def bias_shifts(W: torch.Tensor, approx: torch.Tensor, means: torch.Tensor, layout: list[tuple[int, str]]
                ) -> dict[str, torch.Tensor]:
    """The bias changes that give each factorized block the teacher's mean output on its inputs:
    b' = b + (W_i − Ŵ_i) μ_i, so the factors only have to match the inputs' variation around their mean.
    `approx` is the student's stack Ŵ, `means[i]` block i's mean input, `layout[i]` its (layer, kind)."""
    h = W.shape[1]
    missed = torch.einsum("nab,nb->na", W.double() - approx.double(), means.double())
    shifts: dict[str, torch.Tensor] = {}

    def add(name: str, size: int, start: int, value: torch.Tensor) -> None:
        shifts.setdefault(name, torch.zeros(size, dtype=torch.float64))[start:start + h] += value

    for (layer, kind), delta in zip(layout, missed):
        p = f"encoder.layer.{layer}."
        if kind in ("query", "key", "value"):
            add(p + "attention.qkv.bias", 3 * h, ("query", "key", "value").index(kind) * h, delta)
        elif kind == "attn_out":
            add(p + "attention.output.bias", h, 0, delta)
        elif kind.startswith("ffn_in"):
            add(p + "ffn.intermediate.bias", 4 * h, int(kind[-1]) * h, delta)
        else:
            add(p + "ffn.output.bias", h, 0, delta)
    return shifts
