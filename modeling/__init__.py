"""modeling: every model format xcompress reads and writes, and the one loader the stages use.

The formats are the dense encoders of every family (families.py), the shared-core Tucker (TD) model, the
head/FFN-pruned encoder of every family and the int8 storage of any of them (`formats.py` lists them; `loading.py`
loads a directory strictly). Importing this package registers `tucker_bert` and the `pruned_*` model types with the
transformers Auto classes, so `AutoModel.from_pretrained(td_dir)` returns a `TuckerBertModel`.
"""
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

import stagekit  # noqa: F401  (the offline environment, before transformers loads anything)

from .configuration_tucker_bert import TuckerBertConfig
from .modeling_tucker_bert import (
    TuckerBertForMaskedLM,
    TuckerBertForSequenceClassification,
    TuckerBertModel,
    TuckerBertModelOutput,
    fold_for_inference,
)
from .pruned import PRUNED_CLASSES, PrunedBertConfig, PrunedBertForSequenceClassification, PrunedBertModel

AutoConfig.register(TuckerBertConfig.model_type, TuckerBertConfig, exist_ok=True)
AutoModel.register(TuckerBertConfig, TuckerBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(TuckerBertConfig, TuckerBertForSequenceClassification, exist_ok=True)
AutoModelForMaskedLM.register(TuckerBertConfig, TuckerBertForMaskedLM, exist_ok=True)
for _config, _encoder, _classifier in PRUNED_CLASSES.values():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _encoder, exist_ok=True)
    AutoModelForSequenceClassification.register(_config, _classifier, exist_ok=True)

__all__ = [
    "TuckerBertConfig",
    "TuckerBertModel",
    "TuckerBertForSequenceClassification",
    "TuckerBertForMaskedLM",
    "TuckerBertModelOutput",
    "fold_for_inference",
    "PrunedBertConfig",
    "PrunedBertModel",
    "PrunedBertForSequenceClassification",
]
