"""A BERT whose layers have their own number of attention heads and FFN size: what structured pruning makes.

transformers 5 dropped `prune_heads` and BertConfig has one head count and one intermediate size for every
layer, so a physically pruned model gets its own `model_type`, `pruned_bert`: BertConfig plus
`layer_num_heads` and `layer_intermediate_sizes`. The modeling classes are BERT's, with each layer's linear
maps built at the pruned shapes; attention reshapes by head size, so fewer heads need no other change.
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel

from .remote_code import SavesItsCode

AUTO_MAP = {"AutoConfig": "pruned_bert.PrunedBertConfig", "AutoModel": "pruned_bert.PrunedBertModel",
            "AutoModelForSequenceClassification": "pruned_bert.PrunedBertForSequenceClassification"}


@strict
class PrunedBertConfig(BertConfig):
    r"""BertConfig with per-layer sizes.

    layer_num_heads (`list[int]`): attention heads kept in each layer (each of head size hidden/num_attention_heads).
    layer_intermediate_sizes (`list[int]`): FFN neurons kept in each layer.
    """

    model_type = "pruned_bert"
    _auto_class = "AutoConfig"  # saved with its code: modeling/remote_code.py

    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None

    def validate_architecture(self):
        super().validate_architecture()
        for name in ("layer_num_heads", "layer_intermediate_sizes"):
            sizes = getattr(self, name)
            if sizes is not None and (len(sizes) != self.num_hidden_layers or min(sizes) < 1):
                raise ValueError(f"{name} must list one size >= 1 per layer ({self.num_hidden_layers}), got {sizes}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def heads(self, layer: int) -> int:
        return self.layer_num_heads[layer] if self.layer_num_heads else self.num_attention_heads

    def ffn_size(self, layer: int) -> int:
        return self.layer_intermediate_sizes[layer] if self.layer_intermediate_sizes else self.intermediate_size


def resize_bert_layers(bert: BertModel, config: PrunedBertConfig) -> None:
    """Rebuild each layer's linear maps at the sizes `config` gives (weights are loaded or copied afterwards)."""
    h = config.hidden_size
    for i, layer in enumerate(bert.encoder.layer):
        width, ffn = config.heads(i) * config.head_size, config.ffn_size(i)
        attn = layer.attention.self
        attn.query, attn.key, attn.value = nn.Linear(h, width), nn.Linear(h, width), nn.Linear(h, width)
        attn.num_attention_heads, attn.all_head_size = config.heads(i), width
        layer.attention.output.dense = nn.Linear(width, h)
        layer.intermediate.dense = nn.Linear(h, ffn)
        layer.output.dense = nn.Linear(ffn, h)


class PrunedBertModel(SavesItsCode, BertModel):
    config_class = PrunedBertConfig
    _auto_class = "AutoModel"
    AUTO_MAP = AUTO_MAP

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        resize_bert_layers(self, config)
        self.post_init()


class PrunedBertForSequenceClassification(SavesItsCode, BertForSequenceClassification):
    config_class = PrunedBertConfig
    _auto_class = "AutoModelForSequenceClassification"
    AUTO_MAP = AUTO_MAP

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        resize_bert_layers(self.bert, config)
        self.post_init()


__all__ = ["PrunedBertConfig", "PrunedBertModel", "PrunedBertForSequenceClassification", "resize_bert_layers"]
