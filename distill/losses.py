"""TinyBERT's layer-wise distillation losses.

- Attention: MSE between student and teacher pre-softmax attention scores, over (query, key) pairs where
  both positions are real tokens (padded positions carry the additive mask and are excluded).
- Hidden states: MSE between student and teacher hidden states, the embedding output included, over real
  tokens; a learned linear projection maps the student's width to the teacher's when they differ.
- Layers: student layer i (1-based) learns from teacher layer i * (teacher depth / student depth), or from the
  teacher layer a given map names (a dense student copied from chosen teacher layers learns from those).
  `layers="last"` is the original TD code's variant: the last layer's scores and hidden state only.
"""
from __future__ import annotations

import torch
from torch import nn


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based) for each student layer 1..S, uniformly spaced."""
    if teacher_layers % student_layers:
        raise ValueError(f"teacher depth {teacher_layers} is not a multiple of student depth {student_layers}")
    step = teacher_layers // student_layers
    return [i * step for i in range(1, student_layers + 1)]


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the positions where `valid` (broadcastable) is true. A masked sum rather
    than boolean indexing: no copies of the selected elements, no host synchronisation, and masked positions
    (which carry the additive mask) contribute exactly zero, gradient included."""
    valid = valid.expand_as(student)
    diff = torch.where(valid, student - teacher, torch.zeros((), dtype=student.dtype, device=student.device))
    return diff.pow(2).sum() / valid.sum().clamp(min=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over valid (query, key) pairs; scores are (B, H, T, T), mask is (B, T)."""
    return _masked_mse(student, teacher, (mask[:, None, :, None] * mask[:, None, None, :]).bool())


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over real tokens; hidden states are (B, T, h)."""
    return _masked_mse(student, teacher, mask.bool()[:, :, None])


class DistillationLoss(nn.Module):
    """Sum of attention and hidden-state losses over the mapped layers; owns the width projection."""

    def __init__(self, student_layers: int, teacher_layers: int, student_width: int, teacher_width: int,
                 layers: str = "all", mapping: list[int] | None = None):
        """`mapping`: the teacher layer (1-based) of each student layer; uniform when None."""
        super().__init__()
        if layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all' or 'last', got {layers!r}")
        if mapping is None:
            mapping = layer_map(student_layers, teacher_layers)
        elif len(mapping) != student_layers or any(not 1 <= t <= teacher_layers for t in mapping):
            raise ValueError(f"layer map {mapping}: needs one teacher layer in 1..{teacher_layers} for each of the "
                             f"student's {student_layers} layers")
        self.pairs = list(zip(range(1, student_layers + 1), mapping))
        if layers == "last":
            self.pairs = self.pairs[-1:]
        self.include_embeddings = layers == "all"
        self.projection = nn.Linear(student_width, teacher_width) if student_width != teacher_width else nn.Identity()

    @property
    def student_score_layers(self) -> list[int]:
        """0-based student layers whose attention scores the loss reads (the others need none)."""
        return [s - 1 for s, _ in self.pairs]

    @property
    def teacher_hidden_layers(self) -> list[int]:
        """Teacher hidden states the loss reads (0: the embedding output)."""
        return ([0] if self.include_embeddings else []) + [t for _, t in self.pairs]

    @property
    def teacher_score_layers(self) -> list[int]:
        return [t - 1 for _, t in self.pairs]

    def forward(self, s_hidden, s_scores, t_hidden, t_scores, mask) -> dict[str, torch.Tensor]:
        att = sum(attention_loss(s_scores[s - 1], t_scores[t - 1], mask) for s, t in self.pairs)
        hidden_pairs = ([(0, 0)] if self.include_embeddings else []) + self.pairs
        rep = sum(hidden_loss(self.projection(s_hidden[s]), t_hidden[t], mask) for s, t in hidden_pairs)
        return {"loss": att + rep, "attention": att.detach(), "hidden": rep.detach()}
