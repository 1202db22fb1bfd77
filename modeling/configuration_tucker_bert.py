"""TuckerBertConfig: a BERT geometry plus the shared-core Tucker ranks."""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from .stacking import OPS


@strict
class TuckerBertConfig(BertConfig):
    r"""BERT configuration whose encoder matrices share one Tucker decomposition.

    rank_layer (`int`): l, the number of small cores G[k] shared by all stacked blocks.
    rank_dim (`int`): d, the size of each core and the width of the shared factors U (h, d) and V (d, h).
    ops (`str`): which sublayers are factorized: `san_ffn`, `san` (attention only) or `ffn` (FFN only).
    residual_ranks (`list[int]`, optional): per layer, the rank of its own low-rank correction of each factorized
        projection (Q|K|V, the attention output, the FFN input and output matrices), 0 for none.
    family (`str`): the teacher's encoder family (bert, roberta, xlm-roberta, distilbert, electra); the layers are
        the same post-norm transformer in all of them, the embeddings and the head are the family's:
    embedding_size (`int`, optional): ELECTRA's embedding width when it is not the hidden width (then projected).
    positions_from_padding (`bool`): RoBERTa's positions, numbered from pad_token_id + 1 over real tokens.
    pooler_act (`str`): the activation after the dense layer over the first token (tanh; DistilBERT relu, ELECTRA
        gelu). `type_vocab_size` 0 means no token-type table (DistilBERT).
    """

    model_type = "tucker_bert"
    _auto_class = "AutoConfig"  # saved with its code: modeling/remote_code.py

    rank_layer: int = 72
    rank_dim: int = 384
    ops: str = "san_ffn"
    residual_ranks: list[int] | None = None
    family: str = "bert"
    embedding_size: int | None = None
    positions_from_padding: bool = False
    pooler_act: str = "tanh"

    def validate_architecture(self):
        super().validate_architecture()
        h = self.hidden_size
        if self.ops not in OPS:
            raise ValueError(f"ops must be one of {sorted(OPS)}, got {self.ops!r}")
        if self.intermediate_size != 4 * h:
            raise ValueError(f"the Tucker model needs intermediate_size = 4 * hidden_size, got {self.intermediate_size} for {h}")
        if not 1 <= self.rank_dim <= h:
            raise ValueError(f"rank_dim must be in [1, hidden_size={h}], got {self.rank_dim}")
        n_blocks = self.num_hidden_layers * len(OPS[self.ops])
        if not 1 <= self.rank_layer <= n_blocks:
            raise ValueError(f"rank_layer must be in [1, {n_blocks}] (stacked blocks), got {self.rank_layer}")
        if self.residual_ranks is not None:
            if len(self.residual_ranks) != self.num_hidden_layers:
                raise ValueError(f"residual_ranks needs one rank per layer ({self.num_hidden_layers}), "
                                 f"got {len(self.residual_ranks)}")
            if not all(0 <= r <= h for r in self.residual_ranks):
                raise ValueError(f"residual_ranks must be in [0, hidden_size={h}], got {self.residual_ranks}")

    def residual_rank(self, layer: int) -> int:
        """The rank of layer `layer`'s own correction (0: none)."""
        return self.residual_ranks[layer] if self.residual_ranks else 0

    @property
    def num_blocks(self) -> int:
        """Number of stacked h x h blocks (rows of P)."""
        return self.num_hidden_layers * len(OPS[self.ops])


__all__ = ["TuckerBertConfig"]
