"""decompose: shared-core Tucker factorization of BERT encoders and the TD-BERT model.

Importing this package registers the `tucker_bert` model type with the transformers Auto classes, so
`AutoModel.from_pretrained(td_dir)` returns a `TuckerBertModel`.

    xcompress decompose --teacher_model all-MiniLM-L6-v2 --config models/minilm-td-36-192/config.json \
        --output_dir runs/minilm-td-36-192
"""
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from .configuration_tucker_bert import TuckerBertConfig
from .modeling_tucker_bert import (
    TuckerBertForMaskedLM,
    TuckerBertForSequenceClassification,
    TuckerBertModel,
    TuckerBertModelOutput,
    fold_for_inference,
)
from .tucker import SharedTucker, decompose_fast, decompose_hooi, relative_errors

AutoConfig.register(TuckerBertConfig.model_type, TuckerBertConfig, exist_ok=True)
AutoModel.register(TuckerBertConfig, TuckerBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(TuckerBertConfig, TuckerBertForSequenceClassification, exist_ok=True)
AutoModelForMaskedLM.register(TuckerBertConfig, TuckerBertForMaskedLM, exist_ok=True)

__all__ = [
    "TuckerBertConfig",
    "TuckerBertModel",
    "TuckerBertForSequenceClassification",
    "TuckerBertForMaskedLM",
    "TuckerBertModelOutput",
    "fold_for_inference",
    "SharedTucker",
    "decompose_fast",
    "decompose_hooi",
    "relative_errors",
]
