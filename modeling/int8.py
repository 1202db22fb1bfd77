"""The library verb `quantize_(model, QuantizationConfig())`: int8 dynamic quantization of every linear map,
in place, for dense BERT, pruned BERT and TD models on CPU; and the int8 directory format that keeps it.

A TD model is first folded (`fold_for_inference`): its factor projections become plain Linear maps
(x Vᵀ, then [U C]ᵀ), which quantize like any other. Embeddings and LayerNorms stay fp32.

On disk a quantized model is a Hugging Face directory whose config carries `xcompress_quantization`, and whose
`model.safetensors` holds each quantized Linear as `<name>.weight_int8` (int8), `.weight_scale`,
`.weight_zero_point` (per output channel) and `.bias`, beside the fp32 tensors of everything else.
`load_quantized` rebuilds exactly the saved int8 weights.
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
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

from .formats import TUCKER, kind_of
from .modeling_tucker_bert import fold_for_inference

CONFIG_KEY = "xcompress_quantization"
WEIGHTS = "model.safetensors"


@dataclasses.dataclass
class QuantizationConfig:
    per_channel: bool = True  # one scale per output row: markedly closer to fp32 than one per matrix

    def qconfig(self):
        return per_channel_dynamic_qconfig if self.per_channel else default_dynamic_qconfig


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
    folded = kind_of(model) == TUCKER
    if folded:
        fold_for_inference(model)
    with _quiet_ao():
        quantize_dynamic(model, {nn.Linear: config.qconfig()}, inplace=True)
    model.config.update({CONFIG_KEY: {"method": "dynamic_int8", "per_channel": config.per_channel,
                                       "folded_tucker": folded}})
    return model


def save_quantized(model: nn.Module, directory: Path) -> None:
    """config.json and model.safetensors of a quantized model, into an existing directory."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, DynamicQuantLinear):
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
    model.config.save_pretrained(directory)


def load_quantized(model_dir: Path, model_class: type) -> nn.Module:
    """A quantized model saved by `save_quantized`, with its int8 weights exactly as saved."""
    config = model_class.config_class.from_pretrained(str(model_dir))
    settings = getattr(config, CONFIG_KEY)
    model = model_class(config).eval()
    if settings.get("folded_tucker"):
        fold_for_inference(model)
    with _quiet_ao():
        quantize_dynamic(model, {nn.Linear: QuantizationConfig(settings["per_channel"]).qconfig()}, inplace=True)
    tensors = load_file(str(model_dir / WEIGHTS))
    for name, module in model.named_modules():
        if isinstance(module, DynamicQuantLinear):
            try:
                q = tensors.pop(f"{name}.weight_int8")
                scale, zero = tensors.pop(f"{name}.weight_scale"), tensors.pop(f"{name}.weight_zero_point")
            except KeyError as e:
                raise ValueError(f"{model_dir / WEIGHTS}: no int8 weights for {name}") from e
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


def _float_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer outside the quantized Linear maps (which hold theirs packed)."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def quantization_of(config: dict[str, Any]) -> dict[str, Any] | None:
    return config.get(CONFIG_KEY)
