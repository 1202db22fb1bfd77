"""Model directories that load where xcompress is not installed.

A model class with `_auto_class` makes transformers' `save_pretrained` copy the file that defines it, and every
file it imports relatively, beside the weights. `SavesItsCode` also writes the class's whole `AUTO_MAP` into
config.json, so that in an environment with only torch and transformers

    AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True)

builds the same model from those copies; an int8 directory (`xcompress_quantization` in its config) is read by the
same code as xcompress reads it (int8.py, copied along).
"""
from __future__ import annotations

import json
from pathlib import Path

QUANTIZATION_KEY = "xcompress_quantization"


def quantized_config(model_dir) -> bool:
    config = Path(model_dir) / "config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get(QUANTIZATION_KEY))


class SavesItsCode:
    """Mixin for PreTrainedModel classes: `save_pretrained` maps every Auto class of the format (`AUTO_MAP`) to
    the copied code; `from_pretrained` of an int8 directory rebuilds its int8 model."""

    AUTO_MAP: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = dict(self.AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if quantized_config(pretrained_model_name_or_path):
            from .int8 import load_quantized

            return load_quantized(Path(pretrained_model_name_or_path), cls)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
