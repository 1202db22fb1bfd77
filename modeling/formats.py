"""The architectures xcompress reads, each registered once: its config class, its model classes per role, and what
the stages may do with it.

Dense encoders come from the family table (`families.py`): every family there is a DENSE architecture here, with
transformers' own classes. The TD and pruned formats are xcompress's. The int8 storage (`int8.py`) is not an
architecture: it is a way of storing any of them, recognised by a key in config.json.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import transformers

from stagekit.errors import InputError

from .configuration_tucker_bert import TuckerBertConfig
from .modeling_tucker_bert import TuckerBertForMaskedLM, TuckerBertForSequenceClassification, TuckerBertModel
from .families import CLASSIFIER, ENCODER, FAMILIES, GENERATOR, MASKED_LM, SEQ2SEQ_FAMILIES, encoder_of  # noqa: F401  (roles and encoder_of: re-exported)
from .pruned import PRUNED_CLASSES

# A config key: the word pieces kept by vocabulary pruning ({"original_size": n, "kept": k}).
VOCABULARY_KEY = "xcompress_vocabulary"
# A config key: the teacher layer (0-based) each layer of a dense student was copied from (xcompress dense-student).
TEACHER_LAYERS_KEY = "xcompress_teacher_layers"
# What an architecture is, for the stages: a dense teacher (fine-tuned, factorized, distilled from), a TD
# student, or a structurally pruned model.
DENSE, TUCKER, PRUNED, SEQ2SEQ = "dense", "tucker", "pruned", "seq2seq"


@dataclasses.dataclass(frozen=True)
class Architecture:
    model_type: str
    kind: str
    config_class: type
    classes: dict[str, type]  # role -> model class

    def model_class(self, role: str, where: str) -> type:
        if role not in self.classes:
            raise InputError(f"{where}: a {self.model_type} model cannot be loaded as a {role.replace('_', '-')} model")
        return self.classes[role]


def _dense(family) -> list[Architecture]:
    classes = {role: getattr(transformers, name) for role, name in family.classes.items()}
    return [Architecture(t, DENSE, classes[ENCODER].config_class, classes) for t in family.model_types]


ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    *(a for family in FAMILIES.values() for a in _dense(family)),
    Architecture(TuckerBertConfig.model_type, TUCKER, TuckerBertConfig,
                 {ENCODER: TuckerBertModel, CLASSIFIER: TuckerBertForSequenceClassification,
                  MASKED_LM: TuckerBertForMaskedLM}),
    *(Architecture(config.model_type, PRUNED, config, {ENCODER: encoder, CLASSIFIER: classifier})
      for config, encoder, classifier in PRUNED_CLASSES.values()),
    *(Architecture(t, SEQ2SEQ, getattr(transformers, f.generator).config_class,
                   {GENERATOR: getattr(transformers, f.generator)})
      for f in SEQ2SEQ_FAMILIES.values() for t in f.model_types),
)}

KIND_NAMES = {DENSE: "a dense encoder", TUCKER: "a TD model", PRUNED: "a pruned encoder",
              SEQ2SEQ: "a text-to-text (encoder-decoder) model"}


def architecture_of(config: Any, where: str, kinds: tuple[str, ...] | None = None) -> Architecture:
    """The registered architecture of a config (a config.json dict or a transformers config), refused with one
    line naming `where` when it is unknown or not one of `kinds`."""
    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise InputError(f"{where}: model_type is {model_type!r}, not one xcompress reads ({known})")
    if kinds is not None and arch.kind not in kinds:
        wanted = " or ".join(KIND_NAMES[k] for k in kinds)
        raise InputError(f"{where}: {KIND_NAMES[arch.kind]} ({model_type}), not {wanted}")
    return arch


def is_task_model(config: dict[str, Any]) -> bool:
    """A model trained for a task: its config names the task (`finetuning_task`, written by `xcompress finetune`,
    `task-distill` and Hugging Face's run_glue) or its architecture is a ...ForSequenceClassification."""
    return bool(config.get("finetuning_task")) or any(
        a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def label_count(config: dict[str, Any]) -> int:
    """Output labels of a task model's config.json (transformers writes id2label, not num_labels)."""
    return config.get("num_labels", len(config.get("id2label") or {}) or 2)


def kind_of(model_or_config: Any) -> str:
    """DENSE, TUCKER or PRUNED for a loaded model or its config."""
    config = getattr(model_or_config, "config", model_or_config)
    return architecture_of(config, type(model_or_config).__name__).kind
