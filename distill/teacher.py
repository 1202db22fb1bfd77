"""Dense encoders of any family that also yield their pre-softmax attention scores.

transformers' models return attention probabilities, not scores. Forward hooks on each layer's query and key maps
(found through the family table) keep their outputs, and the scores are rebuilt as QKᵀ/√d_head + mask, the same
definition as TuckerBertModel's `attention_scores`. The hooks only read: the model's outputs are unchanged.

`ScoringTeacher` runs a teacher without gradients; `ScoringEncoder` is the same with gradients, for a dense student
trained on layer-wise losses. The head size comes from the config and the head count from each layer's query width,
so a student with fewer heads per layer (structured pruning, dense students) is read the same way.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from modeling.families import family_of
from modeling.modeling_tucker_bert import additive_attention_mask


class ScoringEncoder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.family = family_of(encoder)
        cfg = encoder.config
        self.head_dim = self.family.size(cfg, "hidden_size") // self.family.size(cfg, "num_heads")
        layers = self.family.layer_list(encoder)
        self._captured: list[dict[str, torch.Tensor]] = [{} for _ in layers]
        for i, layer in enumerate(layers):
            for name in ("query", "key"):
                self.family.linear(layer, name).register_forward_hook(self._keeper(i, name))

    def _keeper(self, i: int, name: str):
        def hook(module, inputs, output):
            self._captured[i][name] = output
        return hook

    def forward(self, input_ids, attention_mask, token_type_ids=None, score_layers: Sequence[int] | None = None):
        """Hidden states (embeddings first) and the scores of `score_layers` (0-based; all by default, None for the
        others)."""
        wanted = set(range(len(self._captured)) if score_layers is None else score_layers)
        inputs = self.family.model_inputs({"input_ids": input_ids, "attention_mask": attention_mask,
                                           "token_type_ids": token_type_ids})
        out = self.encoder(**inputs, output_hidden_states=True)
        b, t = input_ids.shape
        additive = additive_attention_mask(attention_mask, torch.float32)
        scores = []
        for i, kept in enumerate(self._captured):
            if i in wanted:
                q = kept["query"].view(b, t, -1, self.head_dim).transpose(1, 2)
                k = kept["key"].view(b, t, -1, self.head_dim).transpose(1, 2)
                scores.append(torch.matmul(q, k.transpose(-1, -2)).float() * self.head_dim**-0.5 + additive)
            else:
                scores.append(None)
            kept.clear()
        return out.hidden_states, tuple(scores)


class ScoringTeacher(nn.Module):
    def __init__(self, encoder: nn.Module, bf16: bool = False):
        super().__init__()
        self.scoring = ScoringEncoder(encoder.eval())
        self.bf16 = bf16  # forward in bfloat16, outputs returned in float32

    @torch.no_grad()
    def forward(self, input_ids, attention_mask, token_type_ids=None, score_layers: Sequence[int] | None = None,
                hidden_layers: Sequence[int] | None = None):
        """Hidden states (embeddings first) and the scores of `score_layers` (0-based); all by default, None for
        the others. Only `hidden_layers` of the hidden states are kept (all by default; 0 is the embeddings)."""
        # not bf16: leave whatever autocast the caller set (the shim's, on GPUs) in force
        bf16 = torch.autocast(input_ids.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with bf16:
            hidden, scores = self.scoring(input_ids, attention_mask, token_type_ids, score_layers)
        if hidden_layers is not None:  # the others are not held while the student trains
            hidden = tuple(h if i in hidden_layers else None for i, h in enumerate(hidden))
        if self.bf16:  # the scores are float32 already
            hidden = tuple(None if h is None else h.float() for h in hidden)
        return hidden, scores
