"""Build a TD model from a dense BERT teacher and its shared-core Tucker factors."""
from __future__ import annotations

import torch
from torch import nn

from modeling.configuration_tucker_bert import TuckerBertConfig
from modeling.modeling_tucker_bert import TuckerBertModel
from modeling.stacking import OPS, stack_encoder_blocks

from .tucker import SharedTucker, decompose_fast, decompose_hooi


def td_config_from_teacher(teacher_config, rank_layer: int, rank_dim: int, ops: str) -> TuckerBertConfig:
    """The teacher's geometry with the given ranks; architecture fields are copied, nothing else."""
    base = {k: v for k, v in teacher_config.to_dict().items() if k not in ("model_type", "architectures", "transformers_version", "_name_or_path")}
    base.update(rank_layer=rank_layer, rank_dim=rank_dim, ops=ops, architectures=["TuckerBertModel"])
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
    for i, layer in enumerate(bert.encoder.layer):
        p = f"encoder.layer.{i}."
        sa, ao = layer.attention.self, layer.attention.output
        state[p + "attention.qkv.bias"] = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
        state[p + "attention.output.bias"] = ao.dense.bias
        if not san:
            state[p + "attention.qkv.weight"] = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight])
            state[p + "attention.output.weight"] = ao.dense.weight
        state[p + "attention.LayerNorm.weight"] = ao.LayerNorm.weight
        state[p + "attention.LayerNorm.bias"] = ao.LayerNorm.bias
        state[p + "ffn.intermediate.bias"] = layer.intermediate.dense.bias
        state[p + "ffn.output.bias"] = layer.output.dense.bias
        if not ffn:
            state[p + "ffn.intermediate.weight"] = layer.intermediate.dense.weight
            state[p + "ffn.output.weight"] = layer.output.dense.weight
        state[p + "ffn.LayerNorm.weight"] = layer.output.LayerNorm.weight
        state[p + "ffn.LayerNorm.bias"] = layer.output.LayerNorm.bias
    return {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}


def factorize_teacher(bert: nn.Module, rank_layer: int, rank_dim: int, ops: str = "san_ffn", init: str = "fast",
                      sweeps: int = 1, seed: int = 0) -> tuple[TuckerBertModel, SharedTucker, torch.Tensor]:
    """The TD model of a dense teacher: its stacked blocks factorized, everything else copied.

    Returns the model, the factors and the float32 stack they approximate (for error reports)."""
    W = stack_encoder_blocks(bert, ops, dtype=torch.float32)
    if init == "fast":
        factors = decompose_fast(W, rank_layer, rank_dim, sweeps=sweeps)
    else:
        factors = decompose_hooi(W, rank_layer, rank_dim, seed=seed)
    config = td_config_from_teacher(bert.config, rank_layer, rank_dim, ops)
    model = TuckerBertModel(config)
    model.load_state_dict(td_state_from_teacher(bert, factors, config), strict=True)
    return model, factors, W
