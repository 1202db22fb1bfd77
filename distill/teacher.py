"""A dense BERT teacher that also yields its pre-softmax attention scores.

transformers' BertModel returns attention probabilities, not scores. Forward hooks on each layer's `query`
and `key` projections keep their outputs, and the scores are rebuilt as QKᵀ/√d_head + mask, the same
definition as TuckerBertModel's `attention_scores`. The hooks only read: the teacher's outputs are unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from decompose.modeling_tucker_bert import additive_attention_mask


class ScoringTeacher(nn.Module):
    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert.eval()
        cfg = bert.config
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self._captured: list[dict[str, torch.Tensor]] = [{} for _ in bert.encoder.layer]
        for i, layer in enumerate(bert.encoder.layer):
            for name in ("query", "key"):
                getattr(layer.attention.self, name).register_forward_hook(self._keeper(i, name))

    def _keeper(self, i: int, name: str):
        def hook(module, inputs, output):
            self._captured[i][name] = output
        return hook

    @torch.no_grad()
    def forward(self, input_ids, attention_mask, token_type_ids, score_layers: Sequence[int] | None = None):
        """Hidden states (embeddings first) and the scores of `score_layers` (0-based; all by default,
        None for the others)."""
        wanted = set(range(len(self._captured)) if score_layers is None else score_layers)
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        output_hidden_states=True)
        b, t = input_ids.shape
        additive = additive_attention_mask(attention_mask, out.last_hidden_state.dtype)
        scores = []
        for i, kept in enumerate(self._captured):
            if i in wanted:
                q = kept["query"].view(b, t, self.heads, self.head_dim).transpose(1, 2)
                k = kept["key"].view(b, t, self.heads, self.head_dim).transpose(1, 2)
                scores.append(torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5 + additive)
            else:
                scores.append(None)
            kept.clear()
        return out.hidden_states, tuple(scores)
