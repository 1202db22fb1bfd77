"""TD-BERT: a BERT encoder whose weight matrices are blocks of one shared-core Tucker decomposition.

Block i (nn.Linear layout) is W[i] = U · C[i] · V with C = Σ_k P[i, k] G[k]. The (n, h, h) tensor is never
rebuilt. Per forward the mixed cores C are formed once and folded into one side of each block:

- fan-out groups read one input and write several blocks (Q|K|V, the attention output, the 4 FFN input
  blocks): y = (x Vᵀ) · [U C_i]ᵀ, so the input is projected onto V once for the whole group;
- the fan-in group reads 4 input blocks and sums into one output (the FFN output matrix):
  y = (Σ_j x_j [Vᵀ C_jᵀ]) · Uᵀ, so the sum is projected back through U once.

With gradients enabled the folded weights are recomputed each forward (they are part of the graph); under
`torch.no_grad()` / inference mode they are computed once and cached until a factor changes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from .checks import HEAD_PREFIXES, weight_problems
from .configuration_tucker_bert import TuckerBertConfig
from .dropout import Dropout
from .onednn import recompute_contexts
from .recompute import attend, gelu_linear
from .remote_code import SavesItsCode, quantized_config
from .stacking import OPS

FAN_IN_KINDS = tuple(f"ffn_out_{j}" for j in range(4))


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive mask, as BertModel's eager path builds it: padded keys get the
    dtype's minimum, so softmax gives them zero weight and pre-softmax scores show where they are."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@dataclass
class FoldedWeights:
    """Per-forward weights derived from the shared factors (see module docstring)."""

    U: torch.Tensor  # (h, d)
    V: torch.Tensor  # (d, h)
    fan_out: torch.Tensor  # (n_fan_out * h, d): rows of block i are U @ C[i]
    fan_in: torch.Tensor  # (n_fan_in * h, d): rows of block j are Vᵀ @ C[j]ᵀ


class TuckerFactors(nn.Module):
    """The shared U, V, core bank G and mixing matrix P of the whole encoder."""

    def __init__(self, config: TuckerBertConfig):
        super().__init__()
        h, d, l = config.hidden_size, config.rank_dim, config.rank_layer
        self.U = nn.Parameter(torch.empty(h, d))
        self.V = nn.Parameter(torch.empty(d, h))
        self.G = nn.Parameter(torch.empty(l, d, d))
        self.P = nn.Parameter(torch.empty(config.num_blocks, l))
        # Per layer the stacking order puts every fan-out block before the fan-in blocks (stacking.OPS).
        kinds = OPS[config.ops]
        self.num_layers = config.num_hidden_layers
        self.fan_out_per_layer = sum(kind not in FAN_IN_KINDS for kind in kinds)
        self._cache: FoldedWeights | None = None
        self._cache_key: tuple | None = None

    def mixed_cores(self) -> torch.Tensor:
        """C = P · G, shape (n, d, d)."""
        return torch.einsum("nk,kab->nab", self.P, self.G)

    def _fold(self) -> FoldedWeights:
        cores = self.mixed_cores()
        d = cores.shape[-1]
        cores = cores.view(self.num_layers, -1, d, d)
        k = self.fan_out_per_layer
        fan_out = torch.matmul(self.U, cores[:, :k]).reshape(-1, d)
        fan_in = torch.matmul(self.V.T, cores[:, k:].transpose(-1, -2)).reshape(-1, d)
        return FoldedWeights(U=self.U, V=self.V, fan_out=fan_out, fan_in=fan_in)

    def folded(self) -> FoldedWeights:
        """Folded weights; cached when no gradient is being recorded."""
        if torch.is_grad_enabled():
            self._cache = self._cache_key = None
            return self._fold()
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in (self.U, self.V, self.G, self.P))
        if self._cache is None or self._cache_key != key:
            self._cache, self._cache_key = self._fold(), key
        return self._cache


class LowRankResidual(nn.Module):
    """A layer's own rank-r correction beside the shared factors, x -> x Bᵀ Aᵀ: where the signal forms, a layer can
    hold more than the shared bank gives it (`residual_ranks`), each weight counted in the encoder's parameters."""

    def __init__(self, in_features: int, rank: int, out_features: int):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def _residual(in_features: int, rank: int, out_features: int) -> LowRankResidual | None:
    return LowRankResidual(in_features, rank, out_features) if rank else None


class FanOutProjection(nn.Module):
    """`n_blocks` blocks reading the same input: y = (x Vᵀ) [U C_i]ᵀ + b, outputs concatenated."""

    def __init__(self, hidden_size: int, n_blocks: int, first_row_block: int, residual_rank: int = 0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_blocks * hidden_size))
        self.rows = slice(first_row_block * hidden_size, (first_row_block + n_blocks) * hidden_size)
        self.residual = _residual(hidden_size, residual_rank, n_blocks * hidden_size)

    def forward(self, x: torch.Tensor, w: FoldedWeights) -> torch.Tensor:
        y = F.linear(F.linear(x, w.V), w.fan_out[self.rows], self.bias)
        return y if self.residual is None else y + self.residual(x)


class FanInProjection(nn.Module):
    """`n_blocks` input blocks summed into one output: y = (Σ_j x_j Vᵀ C_jᵀ) Uᵀ + b."""

    def __init__(self, hidden_size: int, n_blocks: int, first_row_block: int, residual_rank: int = 0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.rows = slice(first_row_block * hidden_size, (first_row_block + n_blocks) * hidden_size)
        self.residual = _residual(n_blocks * hidden_size, residual_rank, hidden_size)

    def forward(self, x: torch.Tensor, w: FoldedWeights, gelu_first: bool = False) -> torch.Tensor:
        """With `gelu_first`, x is the FFN's pre-activation: y = gelu(x) ..., gelu(x) recomputed in backward."""
        down = gelu_linear(x, w.fan_in[self.rows].T) if gelu_first else F.linear(x, w.fan_in[self.rows].T)
        y = F.linear(down, w.U, self.bias)
        return y if self.residual is None else y + self.residual(F.gelu(x) if gelu_first else x)


class FoldedProjection(nn.Module):
    """A factorized projection folded for inference as two plain Linear maps, so that int8 dynamic
    quantization and ONNX export see ordinary linear layers: fan-out groups x Vᵀ then [U C_i]ᵀ, the fan-in
    group x [Vᵀ C_jᵀ]_j then Uᵀ."""

    def __init__(self, in_features: int, rank_dim: int, out_features: int, residual: LowRankResidual | None = None):
        super().__init__()
        self.down = nn.Linear(in_features, rank_dim, bias=False)
        self.up = nn.Linear(rank_dim, out_features)
        self.residual = residual

    def forward(self, x: torch.Tensor, w: FoldedWeights | None = None) -> torch.Tensor:
        y = self.up(self.down(x))
        return y if self.residual is None else y + self.residual(x)


@torch.no_grad()
def fold_for_inference(model: nn.Module) -> nn.Module:
    """Replace every factorized projection by its folded Linear form and drop the shared factors, in place.

    The outputs are unchanged; the model can no longer be trained as a Tucker model. Folding trades the
    factors' compactness for plain matrices (about 12·h·d weights per layer instead of the shared bank).
    """
    base = model.bert if hasattr(model, "bert") else model
    w = base.encoder.factors.folded()
    h = base.config.hidden_size
    for layer in base.encoder.layer:
        for parent, name in ((layer.attention, "qkv"), (layer.attention, "output"),
                             (layer.ffn, "intermediate"), (layer.ffn, "output")):
            proj = getattr(parent, name)
            if isinstance(proj, FanOutProjection):
                new = FoldedProjection(h, w.V.shape[0], proj.bias.numel(), proj.residual)
                new.down.weight.copy_(w.V)
                new.up.weight.copy_(w.fan_out[proj.rows])
            elif isinstance(proj, FanInProjection):
                new = FoldedProjection(proj.rows.stop - proj.rows.start, w.V.shape[0], h, proj.residual)
                new.down.weight.copy_(w.fan_in[proj.rows].T)
                new.up.weight.copy_(w.U)
            else:
                continue
            new.up.bias.copy_(proj.bias)
            setattr(parent, name, new.to(proj.bias.device))
    del base.encoder.factors
    return model


class DenseProjection(nn.Linear):
    """A sublayer that `ops` leaves dense; same call signature as the factorized projections."""

    def forward(self, x: torch.Tensor, w: FoldedWeights | None = None) -> torch.Tensor:
        return super().forward(x)


class TuckerEmbeddings(nn.Module):
    """The embeddings of the teacher's family, under BertEmbeddings' parameter names: word, position and (where the
    family has them: not DistilBERT) token-type tables, LayerNorm, dropout, and ELECTRA's projection when its
    embedding width is not the hidden width. RoBERTa and XLM-R number positions from padding_idx + 1 and give
    padding the padding position (`positions_from_padding`)."""

    def __init__(self, config: TuckerBertConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.project = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None
        self.padding_idx = config.pad_token_id if config.positions_from_padding else None

    def positions(self, input_ids: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor:
        if self.padding_idx is None:
            return torch.arange(shape[1], device=device).expand(shape)
        if input_ids is None:  # embeddings given: padding cannot be seen, positions are sequential
            return torch.arange(self.padding_idx + 1, shape[1] + self.padding_idx + 1, device=device).expand(shape)
        real = input_ids.ne(self.padding_idx).long()
        return torch.cumsum(real, dim=1) * real + self.padding_idx

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = self.positions(input_ids, x.shape[:2], x.device)
        x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(position_ids)
            x = x + self.token_type_embeddings(types)
        x = self.dropout(self.LayerNorm(x))
        return self.project(x) if self.project is not None else x


class TuckerPooler(nn.Module):
    """The first token through a dense layer and the family's activation: BERT's pooler (tanh), and the same shape
    as RoBERTa's and ELECTRA's classification heads (tanh, GELU) and DistilBERT's pre-classifier (ReLU)."""

    def __init__(self, config: TuckerBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.pooler_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class TuckerBertAttention(nn.Module):
    def __init__(self, config: TuckerBertConfig, fan_out_offset: int | None, residual_rank: int = 0):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = h // self.num_heads
        self.scaling = self.head_dim**-0.5
        if fan_out_offset is None:
            self.qkv = DenseProjection(h, 3 * h)
            self.output = DenseProjection(h, h)
        else:
            self.qkv = FanOutProjection(h, 3, fan_out_offset, residual_rank)
            self.output = FanOutProjection(h, 1, fan_out_offset + 3, residual_rank)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x, mask, w, want_scores: bool):
        b, t, h = x.shape
        q, k, v = self.qkv(x, w).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = probs = None
        p_drop = self.attn_dropout if self.training else 0.0
        # SDPA with dropout on CPU falls back to its unfused path and draws one float per probability
        if want_scores or (p_drop > 0 and x.device.type == "cpu"):
            # 3-d batched products (heads folded into the batch): their backward needs no transposed copies
            q3 = (q * self.scaling).reshape(b * self.num_heads, t, self.head_dim)  # 4x fewer products than scores
            k3 = k.reshape(b * self.num_heads, t, self.head_dim)
            v3 = v.reshape(b * self.num_heads, t, self.head_dim)
            if mask is not None:
                bias = mask.expand(b, self.num_heads, -1, -1).reshape(b * self.num_heads, mask.shape[-2], t)
                scores = torch.baddbmm(bias, q3, k3.transpose(1, 2))
            else:
                scores = torch.bmm(q3, k3.transpose(1, 2))
            probs = scores.softmax(dim=-1)
            ctx = attend(probs, v3, p_drop, self.training).view(b, self.num_heads, t, self.head_dim)
            scores, probs = scores.view(b, self.num_heads, t, t), probs.view(b, self.num_heads, t, t)
            if not want_scores:
                scores = probs = None
        else:
            # The fused kernel is what BertModel uses by default; keep latency comparisons fair.
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, scale=self.scaling)
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        out = self.LayerNorm(self.dropout(self.output(ctx, w)) + x)
        return out, scores, probs


class TuckerBertFeedForward(nn.Module):
    def __init__(self, config: TuckerBertConfig, fan_out_offset: int | None, fan_in_offset: int | None,
                 residual_rank: int = 0):
        super().__init__()
        h = config.hidden_size
        if fan_out_offset is None:
            self.intermediate = DenseProjection(h, 4 * h)
            self.output = DenseProjection(4 * h, h)
        else:
            self.intermediate = FanOutProjection(h, 4, fan_out_offset, residual_rank)
            self.output = FanInProjection(h, 4, fan_in_offset, residual_rank)
        self.act = ACT2FN[config.hidden_act]
        self.exact_gelu = config.hidden_act == "gelu"
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x, w):
        if self.exact_gelu and isinstance(self.output, FanInProjection):
            if torch.is_grad_enabled():
                # The 4h-wide pre-activation (25 MB per layer at batch 32 x 128) is recomputed in backward from x,
                # which is kept anyway: the FFN's products run twice, 150 MB less at the 6-layer peak (about 4%
                # slower in general distillation; the 1/7 MiniLM student's peak 1.63 -> 1.48 GB).
                # Nothing random runs inside, so the RNG state need not be saved and restored.
                y = checkpoint(self._gelu_ffn, x, w, use_reentrant=False, preserve_rng_state=False,
                               context_fn=recompute_contexts)
            else:
                y = self._gelu_ffn(x, w)
        else:
            y = self.output(self.act(self.intermediate(x, w)), w)
        return self.LayerNorm(self.dropout(y) + x)

    def _gelu_ffn(self, x, w):
        return self.output(self.intermediate(x, w), w, gelu_first=True)


class TuckerBertLayer(nn.Module):
    def __init__(self, config: TuckerBertConfig, layer_idx: int):
        super().__init__()
        san, ffn = "query" in OPS[config.ops], "ffn_in_0" in OPS[config.ops]
        # Fan-out rows per layer: Q, K, V, O when attention is factorized, then the 4 FFN input blocks.
        per_layer_fan_out = 4 * san + 4 * ffn
        base = layer_idx * per_layer_fan_out
        rank = config.residual_rank(layer_idx)
        self.attention = TuckerBertAttention(config, base if san else None, rank)
        self.ffn = TuckerBertFeedForward(config, base + 4 * san if ffn else None, layer_idx * 4 if ffn else None, rank)

    def forward(self, x, mask, w, want_scores: bool):
        x, scores, probs = self.attention(x, mask, w, want_scores)
        return self.ffn(x, w), scores, probs


@dataclass
class TuckerBertModelOutput(BaseModelOutputWithPooling):
    """BertModel's outputs plus the pre-softmax attention scores (QKᵀ/√d_head + mask) of every layer."""

    attention_scores: tuple[torch.Tensor, ...] | None = None


class TuckerBertPreTrainedModel(SavesItsCode, PreTrainedModel):
    config_class = TuckerBertConfig
    config: TuckerBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False
    AUTO_MAP = {"AutoConfig": "configuration_tucker_bert.TuckerBertConfig",
                "AutoModel": "modeling_tucker_bert.TuckerBertModel",
                "AutoModelForSequenceClassification": "modeling_tucker_bert.TuckerBertForSequenceClassification",
                "AutoModelForMaskedLM": "modeling_tucker_bert.TuckerBertForMaskedLM"}

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, TuckerFactors):
            h, d = module.U.shape
            # Orthonormal U, V keep ‖W_i‖ = ‖C_i‖; scale the cores so that entries of W_i have BERT's std.
            init.orthogonal_(module.U)
            init.orthogonal_(module.V)
            init.normal_(module.G, std=std * h / d)
            init.normal_(module.P, std=1.0 / math.sqrt(module.P.shape[1]))
        elif isinstance(module, (FanOutProjection, FanInProjection)):
            init.zeros_(module.bias)
        elif isinstance(module, BertOnlyMLMHead):
            init.zeros_(module.predictions.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load strictly: the directory must hold a TD model whose embeddings and encoder all match.

        transformers only warns about missing or unexpected weights and re-initialises them; for a
        factorized model that silently yields a different network, so here it is an error. The pooler and
        task heads may be absent or newly initialised, as with any BERT checkpoint.
        """
        if quantized_config(pretrained_model_name_or_path):  # int8: xcompress's own format (modeling/int8.py)
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        config_file = Path(pretrained_model_name_or_path) / "config.json"
        if config_file.is_file():
            model_type = TuckerBertConfig.get_config_dict(str(pretrained_model_name_or_path))[0].get("model_type")
            if model_type != TuckerBertConfig.model_type:
                raise ValueError(
                    f"{pretrained_model_name_or_path}: model_type is {model_type!r}, not a TD model "
                    f"({TuckerBertConfig.model_type!r}); factorize it first with `xcompress decompose`"
                )
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except RuntimeError as e:
            if "ignore_mismatched_sizes" not in str(e):
                raise
            raise ValueError(
                f"{pretrained_model_name_or_path}: weights do not match {cls.__name__} "
                "(mismatched shapes: the config's ranks differ from the saved factors)"
            ) from e
        if (problem := weight_problems(info, HEAD_PREFIXES)) is not None:
            raise ValueError(f"{pretrained_model_name_or_path}: weights do not match {cls.__name__} ({problem})")
        return (model, info) if want_info else model



class TuckerBertModel(TuckerBertPreTrainedModel):
    """The TD encoder. Outputs match `BertModel`'s, plus `attention_scores` on request."""

    _auto_class = "AutoModel"

    def __init__(self, config: TuckerBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = TuckerEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.factors = TuckerFactors(config)
        self.encoder.layer = nn.ModuleList([TuckerBertLayer(config, i) for i in range(config.num_hidden_layers)])
        self.pooler = TuckerPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attention_scores: bool | Sequence[int] = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TuckerBertModelOutput | tuple:
        """BertModel's forward. `output_attention_scores`: True for every layer's pre-softmax scores, or the
        0-based indices of the layers wanted (the others use the fused attention kernel and report None)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict

        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds)
        mask = None
        # An all-ones mask is dropped for the fused kernel's sake; a traced graph (ONNX export) must keep it.
        tracing = torch.compiler.is_exporting() or torch.compiler.is_compiling()
        if attention_mask is not None and (tracing or not bool(attention_mask.all())):
            mask = additive_attention_mask(attention_mask, x.dtype)
        n_layers = len(self.encoder.layer)
        if output_attentions or output_attention_scores is True:
            score_layers = set(range(n_layers))
        else:
            score_layers = set(output_attention_scores or ())
        w = self.encoder.factors.folded() if hasattr(self.encoder, "factors") else None  # None once folded
        hidden, scores_all, probs_all = [x], [], []
        for i, layer in enumerate(self.encoder.layer):
            x, scores, probs = layer(x, mask, w, i in score_layers)
            hidden.append(x)
            scores_all.append(scores)
            probs_all.append(probs)
        pooled = self.pooler(x) if self.pooler is not None else None
        out = TuckerBertModelOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(probs_all) if output_attentions else None,
            attention_scores=tuple(scores_all) if output_attention_scores is not False and score_layers else None,
        )
        return out if return_dict else out.to_tuple()


class TuckerBertForSequenceClassification(TuckerBertPreTrainedModel):
    """TD encoder + BERT's classification head (pooler, dropout, linear); regression when num_labels == 1."""

    _auto_class = "AutoModelForSequenceClassification"

    def __init__(self, config: TuckerBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = TuckerBertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                output_attention_scores: bool | Sequence[int] = False, return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, output_attention_scores, return_dict=True)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return TuckerSequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions,
            attention_scores=out.attention_scores,
        )


@dataclass
class TuckerSequenceClassifierOutput(SequenceClassifierOutput):
    attention_scores: tuple[torch.Tensor, ...] | None = None


class TuckerBertForMaskedLM(TuckerBertPreTrainedModel):
    """TD encoder + BERT's masked-LM head, decoder tied to the word embeddings."""

    _auto_class = "AutoModelForMaskedLM"

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: TuckerBertConfig):
        super().__init__(config)
        self.bert = TuckerBertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, return_dict=True)
        logits = self.cls(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.vocab_size), labels.view(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = [
    "TuckerBertModel",
    "TuckerBertForSequenceClassification",
    "TuckerBertForMaskedLM",
    "TuckerBertPreTrainedModel",
    "TuckerBertModelOutput",
    "fold_for_inference",
]
