"""Build a TD model from a dense BERT teacher and its shared-core Tucker factors."""
from __future__ import annotations

import torch
from torch import nn

from modeling.configuration_tucker_bert import TuckerBertConfig
from modeling.families import family_of
from modeling.formats import encoder_of
from modeling.modeling_tucker_bert import TuckerBertForSequenceClassification, TuckerBertModel
from modeling.stacking import OPS

from .blocks import stack_encoder_blocks
from .tucker import SharedTucker, decompose_fast, decompose_hooi


def td_config_from_teacher(teacher_config, rank_layer: int, rank_dim: int, ops: str,
                           architecture: str = "TuckerBertModel") -> TuckerBertConfig:
    """The teacher's geometry with the given ranks; a task teacher's task fields (labels, problem type) come along."""
    base = {k: v for k, v in teacher_config.to_dict().items() if k not in ("model_type", "architectures", "transformers_version", "_name_or_path")}
    base.update(rank_layer=rank_layer, rank_dim=rank_dim, ops=ops, architectures=[architecture])
    return TuckerBertConfig(**base)


@torch.no_grad()
def td_state_from_teacher(bert: nn.Module, factors: SharedTucker, config: TuckerBertConfig) -> dict[str, torch.Tensor]:
    """State dict of a `TuckerBertModel` holding the teacher's embeddings, biases, LayerNorms, pooler and the
    sublayers that `ops` keeps dense, plus the Tucker factors."""
    state: dict[str, torch.Tensor] = {}
    for name, t in bert.embeddings.state_dict().items():
        state[f"embeddings.{name}"] = t
    if getattr(bert, "pooler", None) is not None:
        for name, t in bert.pooler.state_dict().items():
            state[f"pooler.{name}"] = t
    f = "encoder.factors."
    state.update({f + "U": factors.U, f + "V": factors.V, f + "G": factors.G, f + "P": factors.P})
    san, ffn = "query" in OPS[config.ops], "ffn_in_0" in OPS[config.ops]
    family = family_of(bert)
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
                      sweeps: int = 1, seed: int = 0) -> tuple[nn.Module, SharedTucker, torch.Tensor]:
    """The TD model of a dense teacher: its stacked blocks factorized, everything else copied.

    Returns the model, the factors and the float32 stack they approximate (for error reports)."""
    W = stack_encoder_blocks(encoder_of(teacher), ops, dtype=torch.float32)
    if init == "fast":
        factors = decompose_fast(W, rank_layer, rank_dim, sweeps=sweeps)
    else:
        factors = decompose_hooi(W, rank_layer, rank_dim, seed=seed)
    return td_model(teacher, factors, rank_layer, rank_dim, ops), factors, W


def td_model(teacher: nn.Module, factors: SharedTucker, rank_layer: int, rank_dim: int, ops: str,
             bias_shifts: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The TD model holding `factors` and the teacher's other weights, each bias moved by its shift, if any.
    A task teacher (a BertForSequenceClassification) gives a task student: its pooler and classifier copied."""
    bert = encoder_of(teacher)
    task = bert is not teacher
    cls = TuckerBertForSequenceClassification if task else TuckerBertModel
    config = td_config_from_teacher(teacher.config, rank_layer, rank_dim, ops, cls.__name__)
    state = td_state_from_teacher(bert, factors, config)
    for name, shift in (bias_shifts or {}).items():
        state[name] = state[name] + shift.to(state[name].dtype)
    if task:
        state = {f"bert.{k}": v for k, v in state.items()}
        state.update({f"classifier.{k}": v.detach().float() for k, v in teacher.classifier.state_dict().items()})
    model = cls(config)
    model.load_state_dict(state, strict=True)
    return model


@torch.no_grad()
def bias_shifts(W: torch.Tensor, factors: SharedTucker, means: torch.Tensor, layout: list[tuple[int, str]]
                ) -> dict[str, torch.Tensor]:
    """The bias changes that give each factorized block the teacher's mean output on its inputs:
    b' = b + (W_i − Ŵ_i) μ_i, so the factors only have to match the inputs' variation around their mean.
    `means[i]` is block i's mean input, `layout[i]` its (layer, kind)."""
    h = W.shape[1]
    missed = torch.einsum("nab,nb->na", W.double() - factors.reconstruct().double(), means.double())
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
