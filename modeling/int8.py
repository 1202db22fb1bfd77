"""The library verb `quantize_(model, QuantizationConfig())`: int8 dynamic quantization of every linear map and
every embedding table, in place, for dense BERT, pruned BERT and TD models on CPU; and the int8 directory format
that keeps it.

Embeddings become 8-bit per row (torch's `per_channel_affine_float_qparams`: a float scale and offset per row,
looked up without unpacking); LayerNorms stay fp32. A TD model's shared factors are rounded to fp16 and kept,
then the model is folded (`fold_for_inference`: every factor projection becomes plain Linear maps, x Vᵀ then
[U C]ᵀ) and the folded maps quantize like any other.

On disk a quantized model is a Hugging Face directory whose config carries `xcompress_quantization`, and whose
`model.safetensors` holds each quantized Linear as `<name>.weight_int8` (int8), `.weight_scale`,
`.weight_zero_point` (per output channel) and `.bias`, each embedding as `<name>.weight_uint8`, `.weight_scale`,
`.weight_zero_point` (per row), and the fp32 tensors of everything else. A TD model stays factorized on disk:
its fp16 factors (`...encoder.stored_factors.{U,V,G,P}`) and the biases of its folded maps, not the folded
int8 matrices (about 12·h·d per layer), which `load_quantized` folds and quantizes again exactly as
`quantize_` did. `load_quantized` rebuilds exactly the saved int8 weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
from torch.ao.quantization import (
    default_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)
from transformers import BertForSequenceClassification
from transformers.dynamic_module_utils import custom_object_save

from .modeling_tucker_bert import FoldedProjection, TuckerBertPreTrainedModel, TuckerFactors, fold_for_inference
from .remote_code import QUANTIZATION_KEY as CONFIG_KEY
from .remote_code import SavesItsCode

WEIGHTS = "model.safetensors"


@dataclasses.dataclass
class QuantizationConfig:
    per_channel: bool = True  # one scale per output row: markedly closer to fp32 than one per matrix
    embeddings: bool = True  # 8-bit embedding rows: the word embeddings are most of a small model's bytes

    def qconfigs(self) -> dict[type, Any]:
        linear = per_channel_dynamic_qconfig if self.per_channel else default_dynamic_qconfig
        return {nn.Linear: linear} | ({nn.Embedding: float_qparams_weight_only_qconfig} if self.embeddings else {})


class RowQuantizedEmbedding(QuantizedEmbedding):
    """torch's 8-bit embedding, taking index tensors of any layout: its kernel refuses non-contiguous ones, and
    transformers passes stride-0 token-type ids (a buffer expanded over the batch) when none are given."""

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return super().forward(indices.contiguous())

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> RowQuantizedEmbedding:
        new = QuantizedEmbedding.from_float(mod)  # re-packing its unpacked weight() would lose the row offsets
        new.__class__ = cls
        return new


_MODULES = {nn.Linear: DynamicQuantLinear, nn.Embedding: RowQuantizedEmbedding}


def _quantize_modules(model: nn.Module, config: QuantizationConfig) -> None:
    with _quiet_ao():
        quantize_dynamic(model, config.qconfigs(), mapping=_MODULES, inplace=True)


class StoredFactors(nn.Module):
    """The fp16 factors a quantized TD model was folded from: what its file keeps instead of the folded maps."""

    def __init__(self, factors: TuckerFactors):
        super().__init__()
        for name in ("U", "V", "G", "P"):
            self.register_buffer(name, getattr(factors, name).detach().half())


@contextlib.contextmanager
def _quiet_ao() -> Iterator[None]:
    """torch.ao warns on every quantized-tensor creation that the API is deprecated; once per run is enough
    (docs/stages/quantize.md says so), not once per matrix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        yield


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model.config, CONFIG_KEY, None)) or any(
        isinstance(m, DynamicQuantLinear) for m in model.modules())


def quantize_(model: nn.Module, config: QuantizationConfig | None = None) -> nn.Module:
    """Quantize every nn.Linear of `model` to int8 (dynamic activations), in place; returns the model."""
    config = config or QuantizationConfig()
    if is_quantized(model):
        raise ValueError("the model is already quantized")
    model.eval()
    folded = isinstance(model, TuckerBertPreTrainedModel)
    if folded:
        factors = model.base_model.encoder.factors
        with torch.no_grad():  # the fp16 factors the file keeps are what the folded maps are made of
            for p in (factors.U, factors.V, factors.G, factors.P):
                p.copy_(p.half().float())
        _fold(model)
    _quantize_modules(model, config)
    model.config.update({CONFIG_KEY: {"method": "dynamic_int8", "per_channel": config.per_channel,
                                       "folded_tucker": folded, "factors": "float16" if folded else None,
                                       "embeddings": "uint8_rows" if config.embeddings else None}})
    return model


def _fold(model: nn.Module) -> None:
    """Fold a TD model, keeping its factors (fp16) as `encoder.stored_factors`."""
    stored = StoredFactors(model.base_model.encoder.factors)
    fold_for_inference(model)
    model.base_model.encoder.stored_factors = stored


def folded_maps(model: nn.Module) -> set[nn.Module]:
    """The Linear maps folded from stored factors: their weights are rebuilt at load time, not stored."""
    if not hasattr(getattr(model.base_model, "encoder", None), "stored_factors"):  # DistilBERT has no `encoder`
        return set()
    return {part for m in model.modules() if isinstance(m, FoldedProjection) for part in (m.down, m.up)}


def save_quantized(model: nn.Module, directory: Path) -> None:
    """config.json and model.safetensors of a quantized model, into an existing directory."""
    tensors: dict[str, torch.Tensor] = {}
    rebuilt = folded_maps(model)
    for name, module in model.named_modules():
        if isinstance(module, QuantizedEmbedding):
            w = module.weight()
            tensors[f"{name}.weight_uint8"] = w.int_repr().contiguous()
            tensors[f"{name}.weight_scale"] = w.q_per_channel_scales().float().contiguous()
            tensors[f"{name}.weight_zero_point"] = w.q_per_channel_zero_points().float().contiguous()
        elif isinstance(module, DynamicQuantLinear) and module in rebuilt:
            if module.bias() is not None:
                tensors[f"{name}.bias"] = module.bias().detach().contiguous()
        elif isinstance(module, DynamicQuantLinear):
            w, b = module.weight(), module.bias()
            tensors[f"{name}.weight_int8"] = w.int_repr().contiguous()
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                scale, zero = w.q_per_channel_scales(), w.q_per_channel_zero_points()
            else:
                scale, zero = torch.tensor([w.q_scale()]), torch.tensor([w.q_zero_point()])
            tensors[f"{name}.weight_scale"] = scale.float().contiguous()
            tensors[f"{name}.weight_zero_point"] = zero.to(torch.int64).contiguous()
            if b is not None:
                tensors[f"{name}.bias"] = b.detach().contiguous()
    for key, value in _float_tensors(model).items():
        tensors[key] = value.detach().contiguous()
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt", CONFIG_KEY: "dynamic_int8"})
    # The code that reads this format, beside it: plain transformers loads it with trust_remote_code=True.
    code = model if isinstance(model, SavesItsCode) else QuantizedBertForSequenceClassification
    if isinstance(model, (SavesItsCode, BertForSequenceClassification)):
        model.config.auto_map = dict(code.AUTO_MAP)
        custom_object_save(code, directory)
    model.config.save_pretrained(directory)


class QuantizedBertForSequenceClassification(SavesItsCode, BertForSequenceClassification):
    """What a dense int8 classifier's `auto_map` names: BERT's class, reading the int8 format."""

    _auto_class = "AutoModelForSequenceClassification"
    AUTO_MAP = {"AutoModelForSequenceClassification": "int8.QuantizedBertForSequenceClassification"}


def load_quantized(model_dir: Path, model_class: type) -> nn.Module:
    """A quantized model saved by `save_quantized`, with its int8 weights exactly as saved."""
    config = model_class.config_class.from_pretrained(str(model_dir))
    settings = getattr(config, CONFIG_KEY)
    model = model_class(config).eval()
    tensors = load_file(str(model_dir / WEIGHTS))
    if settings.get("factors") == "float16":
        encoder = next(n for n, m in model.named_modules() if isinstance(m, TuckerFactors)).rsplit(".", 1)[0]
        with torch.no_grad():  # the folded maps and their int8 weights come from these, as in quantize_
            for key in ("U", "V", "G", "P"):
                stored = tensors.get(f"{encoder}.stored_factors.{key}")
                if stored is None:
                    raise ValueError(f"{model_dir / WEIGHTS}: no stored factor {key} of a factorized int8 TD model")
                getattr(model.base_model.encoder.factors, key).copy_(stored.float())
        _fold(model)
    elif settings.get("folded_tucker"):
        fold_for_inference(model)
    quantization = QuantizationConfig(settings["per_channel"], embeddings=settings.get("embeddings") is not None)
    _quantize_modules(model, quantization)
    rebuilt = folded_maps(model)
    for name, module in model.named_modules():
        if isinstance(module, QuantizedEmbedding):
            q, scale, zero = _pop_packed(tensors, name, "weight_uint8", model_dir)
            with _quiet_ao():
                module.set_weight(torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0))
        elif isinstance(module, DynamicQuantLinear) and module in rebuilt:
            module.set_weight_bias(module.weight(), tensors.pop(f"{name}.bias", None))
        elif isinstance(module, DynamicQuantLinear):
            q, scale, zero = _pop_packed(tensors, name, "weight_int8", model_dir)
            real = (q.float() - zero[:, None].float() if zero.numel() > 1 else q.float() - float(zero)) \
                * (scale[:, None] if scale.numel() > 1 else float(scale))
            with _quiet_ao():
                if scale.numel() > 1:
                    weight = torch.quantize_per_channel(real, scale.double(), zero, 0, torch.qint8)
                else:
                    weight = torch.quantize_per_tensor(real, float(scale), int(zero), torch.qint8)
            module.set_weight_bias(weight, tensors.pop(f"{name}.bias", None))
    expected = _float_tensors(model)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{model_dir / WEIGHTS}: weights do not match the config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[key])
    return model


def _pop_packed(tensors: dict[str, torch.Tensor], name: str, values: str, model_dir: Path
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stored integers of a quantized module and their scales and zero points, taken out of `tensors`."""
    try:
        return (tensors.pop(f"{name}.{values}"), tensors.pop(f"{name}.weight_scale"),
                tensors.pop(f"{name}.weight_zero_point"))
    except KeyError as e:
        raise ValueError(f"{model_dir / WEIGHTS}: no {values} for {name}") from e


def _float_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer outside the quantized Linear maps (which hold theirs packed)."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def quantization_of(config: dict[str, Any]) -> dict[str, Any] | None:
    return config.get(CONFIG_KEY)
