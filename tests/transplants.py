"""The embedded teacher transplanted into other families' layouts: the same function under another model_type.

Nothing of another family can be downloaded here, so each family's test model is the BERT teacher's weights moved
to where that family keeps them:
- RoBERTa (and XLM-R, its modeling code): positions start at padding_idx + 1, so with pad id 0 the position table
  is BERT's shifted down one row; two token types kept for pairs; its classification head has BERT's pooler shape
  (dense, tanh, out_proj), so a task model's logits match too.
- DistilBERT: no token types: the type-0 embedding is folded into the position table (single sentences match).
- ELECTRA: with embedding_size = hidden_size it has no projection and BERT's encoder; its head applies GELU where
  BERT's pooler applies tanh, so only its encoder matches.
The tokenizer files are the teacher's (WordPiece), so every stage sees the same ids.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import (BertForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertForSequenceClassification, DistilBertModel, ElectraConfig,
                          ElectraForSequenceClassification, ElectraModel, RobertaConfig,
                          RobertaForSequenceClassification, RobertaModel)

from stagekit.model_paths import TOKENIZER_FILES

FAMILIES = ("roberta", "distilbert", "electra")


def _layer_state(bert: BertModel, names: dict[str, str], prefix: str, layers: str) -> dict[str, torch.Tensor]:
    state = {}
    for i in range(bert.config.num_hidden_layers):
        for ours, theirs in names.items():
            for what in ("weight", "bias"):
                state[f"{prefix}{layers}.{i}.{theirs}.{what}"] = bert.state_dict()[f"encoder.layer.{i}.{ours}.{what}"]
    return state


_DISTILBERT = {"attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin",
               "attention.self.value": "attention.v_lin", "attention.output.dense": "attention.out_lin",
               "attention.output.LayerNorm": "sa_layer_norm", "intermediate.dense": "ffn.lin1",
               "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm"}
_SAME = {k: k for k in _DISTILBERT}


def transplant(source: Path, family: str, target: Path) -> Path:
    """Write `source` (a BERT directory, task model or not) as a `family` model directory at `target`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source))
    task = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    full = (BertForSequenceClassification if task else BertModel).from_pretrained(str(source)).eval()
    bert = full.bert if task else full
    c = config.to_dict()
    emb = {k: v for k, v in bert.embeddings.state_dict().items()}
    shared = {k: c[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "hidden_act", "layer_norm_eps", "type_vocab_size")}
    task_fields = {k: c[k] for k in ("finetuning_task", "id2label", "label2id", "problem_type") if k in c}
    if family == "roberta":
        cfg = RobertaConfig(**shared, **task_fields, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                            max_position_embeddings=c["max_position_embeddings"] + 1)
        positions = torch.cat([torch.zeros(1, c["hidden_size"]), emb["position_embeddings.weight"]])
        state = {"embeddings.word_embeddings.weight": emb["word_embeddings.weight"],
                 "embeddings.position_embeddings.weight": positions,
                 "embeddings.token_type_embeddings.weight": emb["token_type_embeddings.weight"],
                 "embeddings.LayerNorm.weight": emb["LayerNorm.weight"], "embeddings.LayerNorm.bias": emb["LayerNorm.bias"],
                 **_layer_state(bert, _SAME, "", "encoder.layer")}
        if not task:  # RobertaModel has BERT's pooler
            state.update({f"pooler.{k}": v for k, v in bert.pooler.state_dict().items()})
        model_cls = RobertaForSequenceClassification if task else RobertaModel
        head = {"classifier.dense": "bert.pooler.dense", "classifier.out_proj": "classifier"}
    elif family == "distilbert":
        cfg = DistilBertConfig(vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
                               n_heads=c["num_attention_heads"], hidden_dim=c["intermediate_size"],
                               activation=c["hidden_act"], max_position_embeddings=c["max_position_embeddings"],
                               pad_token_id=0, **task_fields)
        state = {"embeddings.word_embeddings.weight": emb["word_embeddings.weight"],
                 "embeddings.position_embeddings.weight":
                     emb["position_embeddings.weight"] + emb["token_type_embeddings.weight"][0],
                 "embeddings.LayerNorm.weight": emb["LayerNorm.weight"], "embeddings.LayerNorm.bias": emb["LayerNorm.bias"],
                 **_layer_state(bert, _DISTILBERT, "", "transformer.layer")}
        model_cls = DistilBertForSequenceClassification if task else DistilBertModel
        head = {}
    elif family == "electra":
        cfg = ElectraConfig(**shared, **task_fields, embedding_size=c["hidden_size"],
                            max_position_embeddings=c["max_position_embeddings"], pad_token_id=0)
        state = {f"embeddings.{k}": v for k, v in emb.items() if k != "position_ids"}
        state.update(_layer_state(bert, _SAME, "", "encoder.layer"))
        model_cls = ElectraForSequenceClassification if task else ElectraModel
        head = {}
    else:
        raise ValueError(family)
    model = model_cls(cfg).eval()
    if task:
        prefix = model.base_model_prefix
        state = {f"{prefix}.{k}": v for k, v in state.items()}
        for ours, theirs in head.items():
            for what in ("weight", "bias"):
                state[f"{ours}.{what}"] = full.state_dict()[f"{theirs}.{what}"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    # only what a family has and BERT lacks may stay as initialised: its own head (fine-tuned by the tests)
    assert all(k.startswith(("classifier.", "pre_classifier.")) for k in missing), missing
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    return target
