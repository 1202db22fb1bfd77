"""Encoders whose layers have their own number of attention heads and FFN size: what structured pruning makes.

transformers 5 dropped `prune_heads`, and every family's config has one head count and one FFN size for all layers,
so a physically pruned model gets its own `model_type` per family (`pruned_bert`, `pruned_roberta`,
`pruned_xlm-roberta`, `pruned_distilbert`, `pruned_electra`): the family's config plus `layer_num_heads`,
`layer_intermediate_sizes` and `pruned_layout` (where a layer keeps the maps that change size, written from the
family table when the model is pruned). The modeling classes are the family's own, with each layer's linear maps
rebuilt at the pruned shapes; every family's attention reshapes by head size, so fewer heads need no other change.
This file is copied beside the weights (it imports nothing of xcompress), so the directory loads in plain
transformers with `trust_remote_code`.
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (BertConfig, BertForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertForSequenceClassification, DistilBertModel, ElectraConfig,
                          ElectraForSequenceClassification, ElectraModel, RobertaConfig,
                          RobertaForSequenceClassification, RobertaModel, XLMRobertaConfig,
                          XLMRobertaForSequenceClassification, XLMRobertaModel)

from .remote_code import SavesItsCode

# Where BERT's layers keep the maps that change size (directories pruned before `pruned_layout` existed).
BERT_LAYOUT = {"layers": "encoder.layer", "query": "attention.self.query", "key": "attention.self.key",
               "value": "attention.self.value", "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense",
               "ffn_out": "output.dense"}


class PerLayerSizes:
    """The per-layer sizes of a pruned config (each config class declares the three fields)."""

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
        return self.layer_intermediate_sizes[layer]

    @property
    def layout(self) -> dict[str, str]:
        return self.pruned_layout or BERT_LAYOUT


@strict
class PrunedBertConfig(PerLayerSizes, BertConfig):
    r"""A BertConfig with per-layer sizes.

    layer_num_heads (`list[int]`): attention heads kept in each layer (each of head size hidden/num_attention_heads).
    layer_intermediate_sizes (`list[int]`): FFN neurons kept in each layer.
    pruned_layout (`dict[str, str]`): the layer list and, inside a layer, the query, key, value, attention output and
        FFN maps.
    """

    model_type = "pruned_bert"
    _auto_class = "AutoConfig"  # saved with its code: modeling/remote_code.py
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    pruned_layout: dict[str, str] | None = None


@strict
class PrunedRobertaConfig(PerLayerSizes, RobertaConfig):
    model_type = "pruned_roberta"
    _auto_class = "AutoConfig"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    pruned_layout: dict[str, str] | None = None


@strict
class PrunedXLMRobertaConfig(PerLayerSizes, XLMRobertaConfig):
    model_type = "pruned_xlm-roberta"
    _auto_class = "AutoConfig"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    pruned_layout: dict[str, str] | None = None


@strict
class PrunedDistilBertConfig(PerLayerSizes, DistilBertConfig):
    model_type = "pruned_distilbert"
    _auto_class = "AutoConfig"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    pruned_layout: dict[str, str] | None = None


@strict
class PrunedElectraConfig(PerLayerSizes, ElectraConfig):
    model_type = "pruned_electra"
    _auto_class = "AutoConfig"
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    pruned_layout: dict[str, str] | None = None


def resize_layers(encoder: nn.Module, config: PerLayerSizes) -> None:
    """Rebuild each layer's linear maps at the sizes `config` gives (weights are loaded or copied afterwards)."""
    h, where = config.hidden_size, config.layout
    for i, layer in enumerate(encoder.get_submodule(where["layers"])):
        width, ffn = config.heads(i) * config.head_size, config.ffn_size(i)
        for part, (n_in, n_out) in {"query": (h, width), "key": (h, width), "value": (h, width),
                                    "attn_out": (width, h), "ffn_in": (h, ffn), "ffn_out": (ffn, h)}.items():
            parent, _, name = where[part].rpartition(".")
            setattr(layer.get_submodule(parent), name, nn.Linear(n_in, n_out))
        attention = layer.get_submodule(where["query"].rpartition(".")[0])
        if hasattr(attention, "all_head_size"):  # BERT's attention keeps its head count and width: kept true
            attention.num_attention_heads, attention.all_head_size = config.heads(i), width


class ResizesLayers:
    """Builds the family's model, then narrows each layer to the config's sizes."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        resize_layers(getattr(self, self.base_model_prefix, self), config)
        self.post_init()


def _auto_map(prefix: str) -> dict[str, str]:
    return {"AutoConfig": f"pruned.{prefix}Config", "AutoModel": f"pruned.{prefix}Model",
            "AutoModelForSequenceClassification": f"pruned.{prefix}ForSequenceClassification"}


class PrunedBertModel(ResizesLayers, SavesItsCode, BertModel):
    config_class, _auto_class, AUTO_MAP = PrunedBertConfig, "AutoModel", _auto_map("PrunedBert")


class PrunedBertForSequenceClassification(ResizesLayers, SavesItsCode, BertForSequenceClassification):
    config_class, _auto_class = PrunedBertConfig, "AutoModelForSequenceClassification"
    AUTO_MAP = _auto_map("PrunedBert")


class PrunedRobertaModel(ResizesLayers, SavesItsCode, RobertaModel):
    config_class, _auto_class, AUTO_MAP = PrunedRobertaConfig, "AutoModel", _auto_map("PrunedRoberta")


class PrunedRobertaForSequenceClassification(ResizesLayers, SavesItsCode, RobertaForSequenceClassification):
    config_class, _auto_class = PrunedRobertaConfig, "AutoModelForSequenceClassification"
    AUTO_MAP = _auto_map("PrunedRoberta")


class PrunedXLMRobertaModel(ResizesLayers, SavesItsCode, XLMRobertaModel):
    config_class, _auto_class, AUTO_MAP = PrunedXLMRobertaConfig, "AutoModel", _auto_map("PrunedXLMRoberta")


class PrunedXLMRobertaForSequenceClassification(ResizesLayers, SavesItsCode, XLMRobertaForSequenceClassification):
    config_class, _auto_class = PrunedXLMRobertaConfig, "AutoModelForSequenceClassification"
    AUTO_MAP = _auto_map("PrunedXLMRoberta")


class PrunedDistilBertModel(ResizesLayers, SavesItsCode, DistilBertModel):
    config_class, _auto_class, AUTO_MAP = PrunedDistilBertConfig, "AutoModel", _auto_map("PrunedDistilBert")


class PrunedDistilBertForSequenceClassification(ResizesLayers, SavesItsCode, DistilBertForSequenceClassification):
    config_class, _auto_class = PrunedDistilBertConfig, "AutoModelForSequenceClassification"
    AUTO_MAP = _auto_map("PrunedDistilBert")


class PrunedElectraModel(ResizesLayers, SavesItsCode, ElectraModel):
    config_class, _auto_class, AUTO_MAP = PrunedElectraConfig, "AutoModel", _auto_map("PrunedElectra")


class PrunedElectraForSequenceClassification(ResizesLayers, SavesItsCode, ElectraForSequenceClassification):
    config_class, _auto_class = PrunedElectraConfig, "AutoModelForSequenceClassification"
    AUTO_MAP = _auto_map("PrunedElectra")


# The dense model_type each pruned format comes from -> (config, encoder, task model).
PRUNED_CLASSES = {
    "bert": (PrunedBertConfig, PrunedBertModel, PrunedBertForSequenceClassification),
    "roberta": (PrunedRobertaConfig, PrunedRobertaModel, PrunedRobertaForSequenceClassification),
    "xlm-roberta": (PrunedXLMRobertaConfig, PrunedXLMRobertaModel, PrunedXLMRobertaForSequenceClassification),
    "distilbert": (PrunedDistilBertConfig, PrunedDistilBertModel, PrunedDistilBertForSequenceClassification),
    "electra": (PrunedElectraConfig, PrunedElectraModel, PrunedElectraForSequenceClassification),
}

__all__ = ["PRUNED_CLASSES", "resize_layers", *(c.__name__ for classes in PRUNED_CLASSES.values() for c in classes)]
