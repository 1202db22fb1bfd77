"""Where each encoder family keeps its parts: one table of data, one lookup over it.

Every stage that reaches inside a dense encoder asks this table instead of writing a module path of its own
(TextPruner's habit, with one getter instead of one per family). A family is its model types, the attribute a task
or masked-LM model keeps its encoder under, where the layers are, where each layer keeps its Q, K, V, attention
output, FFN maps and layer norms, what its config calls the common sizes, and its model classes per role.

    fam = family_of(model)               # or of a config / config.json dict
    fam.linear(layer, "query")           # the nn.Linear of one layer's query map
    fam.size(config, "num_layers")       # 6 for all-MiniLM-L6-v2 (`num_hidden_layers`), `n_layers` for DistilBERT

Adding a family is one entry in FAMILIES plus its tests (tests/test_families.py builds a transplant of the
embedded teacher into each layout and checks the maps end to end).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

import torch
from torch import nn

from stagekit.errors import InputError

# Per-layer parts every family has, in the order the docs' table lists them.
PARTS = ("query", "key", "value", "attn_out", "attn_norm", "ffn_in", "ffn_out", "ffn_norm")
# The per-layer parts each weight group (modeling/params.py's names) holds, as composable pruning prunes them.
GROUP_PARTS = {"attention": ("query", "key", "value", "attn_out"), "ffn": ("ffn_in", "ffn_out")}
# Sizes every family has, under the names the stages use.
SIZES = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size")
# Roles a model is loaded in (formats.py re-exports them).
ENCODER, CLASSIFIER, MASKED_LM = "encoder", "classifier", "masked_lm"

_BERT_PARTS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
               "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
               "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
_BERT_SIZES = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
               "intermediate_size": "intermediate_size", "vocab_size": "vocab_size"}


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    base: str  # attribute holding the encoder in task and masked-LM models (transformers' base_model_prefix)
    layers: str  # the layer list, from the encoder
    parts: dict[str, str]  # PARTS -> module path inside one layer
    sizes: dict[str, str]  # SIZES -> config attribute
    classes: dict[str, str]  # role -> transformers class name
    inputs: tuple[str, ...]  # what its forward takes (DistilBERT: no token types)
    head: tuple[str, ...]  # state-dict prefixes of a task model's head (a fresh head may lack them)
    pooler: bool  # the encoder has a pooler (BERT's tanh layer over [CLS])
    position_offset: int = 0  # RoBERTa numbers positions from padding_idx + 1
    embedding_projection: str | None = None  # ELECTRA projects small embeddings up to the hidden width
    # A task model's head as a TD model holds it, a dense layer over the first token then the classifier:
    # TD module -> this family's module path in its task model, and the activation between them.
    task_head: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"pooler.dense": "bert.pooler.dense", "classifier": "classifier"})
    head_act: str = "tanh"
    # BertConfig's names for this family's config keys (the TD model's config is a BertConfig), and values it fixes.
    bert_names: dict[str, str] = dataclasses.field(default_factory=dict)
    bert_fixed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def model_class(self, role: str, where: str) -> type:
        import transformers

        if role not in self.classes:
            raise InputError(f"{where}: a {self.name} model cannot be loaded as a {role.replace('_', '-')} model")
        return getattr(transformers, self.classes[role])

    def encoder(self, model: nn.Module) -> nn.Module:
        """The bare encoder of a model in any role (a task model's `roberta`, or the model itself)."""
        return getattr(model, self.base, model)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.encoder(model).get_submodule(self.layers)

    def part(self, layer: nn.Module, part: str) -> nn.Module:
        return layer.get_submodule(self.parts[part])

    def linear(self, layer: nn.Module, part: str) -> nn.Linear:
        return self.part(layer, part)

    def set_part(self, layer: nn.Module, part: str, module: nn.Module) -> None:
        parent, _, name = self.parts[part].rpartition(".")
        setattr(layer.get_submodule(parent) if parent else layer, name, module)

    def size(self, config: Any, name: str) -> int:
        key = self.sizes[name]
        return config[key] if isinstance(config, dict) else getattr(config, key)

    def size_updates(self, **sizes: int) -> dict[str, int]:
        """Config keys for common sizes: `size_updates(num_layers=3)` is {"n_layers": 3} for DistilBERT."""
        return {self.sizes[k]: v for k, v in sizes.items()}

    def layer_sizes(self, model: nn.Module) -> tuple[list[int], list[int]]:
        """Heads and FFN neurons in each layer (a pruned or narrowed model has fewer than its config's counts)."""
        head = self.size(model.config, "hidden_size") // self.size(model.config, "num_heads")
        layers = self.layer_list(model)
        return ([self.linear(l, "query").out_features // head for l in layers],
                [self.linear(l, "ffn_in").out_features for l in layers])

    def bert_geometry(self, config: Any) -> dict[str, Any]:
        """This family's config (object or dict) in BertConfig's terms, what a TD model of it is built from."""
        values = config if isinstance(config, dict) else config.to_dict()
        renamed = {bert: values[ours] for bert, ours in self.bert_names.items() if ours in values}
        same = {k: v for k, v in values.items() if k in _BERT_KEYS and k not in renamed}
        return same | renamed | self.bert_fixed

    def model_blocks(self, model: nn.Module) -> dict[str, str]:
        """Every layer's blocks, by module name, with the weight group each holds: the deepest module holding all
        of a group's maps in a layer (BERT's and DistilBERT's `attention`, DistilBERT's `ffn`), or each map's own
        module where those share none below the layer (BERT's FFN: `intermediate` and `output`). A block is what
        composable pruning prunes, fine-tunes against the dense block and calls again alone on its own inputs."""
        prefix = f"{self.base}.{self.layers}" if hasattr(model, self.base) else self.layers
        blocks = {}
        for group, parts in GROUP_PARTS.items():
            parents = [self.parts[p].rpartition(".")[0].split(".") for p in parts]
            shared = list(itertools.takewhile(lambda names: len(set(names)) == 1, zip(*parents)))
            inside = [".".join(n[0] for n in shared)] if shared else list(dict.fromkeys(".".join(p) for p in parents))
            for i in range(len(self.layer_list(model))):
                blocks |= {f"{prefix}.{i}.{module}": group for module in inside}
        return blocks

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of a batch this family's forward takes (labels pass through)."""
        return {k: v for k, v in batch.items() if k in self.inputs or k == "labels"}


# The geometry a BertConfig describes; a TD model's config takes these from its teacher's, under these names.
_BERT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
              "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
              "embedding_size")
_ROBERTA_HEAD = {"pooler.dense": "classifier.dense", "classifier": "classifier.out_proj"}

_ENCODER_CLASSES = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert",
                    "electra": "Electra"}


def _classes(prefix: str, encoder: str = "Model") -> dict[str, str]:
    return {ENCODER: f"{prefix}{encoder}", CLASSIFIER: f"{prefix}ForSequenceClassification",
            MASKED_LM: f"{prefix}ForMaskedLM"}


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", ("bert",), "bert", "encoder.layer", _BERT_PARTS, _BERT_SIZES, _classes("Bert"),
           ("input_ids", "attention_mask", "token_type_ids"), ("classifier.", "pooler.", "bert.pooler.", "cls."),
           pooler=True),
    Family("roberta", ("roberta",), "roberta", "encoder.layer", _BERT_PARTS, _BERT_SIZES, _classes("Roberta"),
           ("input_ids", "attention_mask", "token_type_ids"), ("classifier.", "lm_head.", "roberta.pooler."),
           pooler=False, position_offset=2, task_head=_ROBERTA_HEAD),
    Family("xlm-roberta", ("xlm-roberta",), "roberta", "encoder.layer", _BERT_PARTS, _BERT_SIZES,
           _classes("XLMRoberta"), ("input_ids", "attention_mask", "token_type_ids"),
           ("classifier.", "lm_head.", "roberta.pooler."), pooler=False, position_offset=2, task_head=_ROBERTA_HEAD),
    Family("distilbert", ("distilbert",), "distilbert", "transformer.layer",
           {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
            "attn_out": "attention.out_lin", "attn_norm": "sa_layer_norm", "ffn_in": "ffn.lin1",
            "ffn_out": "ffn.lin2", "ffn_norm": "output_layer_norm"},
           {"hidden_size": "dim", "num_layers": "n_layers", "num_heads": "n_heads", "intermediate_size": "hidden_dim",
            "vocab_size": "vocab_size"},
           _classes("DistilBert"), ("input_ids", "attention_mask"),
           ("pre_classifier.", "classifier.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
           pooler=False, task_head={"pooler.dense": "pre_classifier", "classifier": "classifier"}, head_act="relu",
           bert_names={"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                       "intermediate_size": "hidden_dim", "hidden_act": "activation", "hidden_dropout_prob": "dropout",
                       "attention_probs_dropout_prob": "attention_dropout", "classifier_dropout": "seq_classif_dropout"},
           bert_fixed={"type_vocab_size": 0, "layer_norm_eps": 1e-12}),
    Family("electra", ("electra",), "electra", "encoder.layer", _BERT_PARTS, _BERT_SIZES, _classes("Electra"),
           ("input_ids", "attention_mask", "token_type_ids"), ("classifier.", "generator_"),
           pooler=False, embedding_projection="embeddings_project", task_head=_ROBERTA_HEAD, head_act="gelu"),
)}
_BY_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}
DENSE_MODEL_TYPES = tuple(_BY_TYPE)
# The role of a text-to-text model: an encoder-decoder with its language-model head, generating text.
GENERATOR = "generator"


@dataclasses.dataclass(frozen=True)
class Seq2SeqFamily:
    """An encoder-decoder family: its model types, its generator class, and its parts, each the module names (a
    regular expression, matched whole) of the nn.Linear maps it holds: the units per-part pruning schedules name."""

    name: str
    model_types: tuple[str, ...]
    generator: str  # transformers class name
    parts: dict[str, str]
    # The module each Linear map's block is (its name's first group): the unit composable pruning prunes, fine-tunes
    # and composes, called again on its own inputs.
    blocks: str
    # The feed-forward maps by their last name inside a block: those whose rows are the hidden neurons (inputs; a
    # gated FFN has two) and the one whose columns are; and the config key of the neuron count. Removing whole
    # neurons keeps the model one that transformers loads, when every block keeps the same number.
    ffn_inputs: tuple[str, ...] = ()
    ffn_output: str = ""
    ffn_size_key: str = ""

    def block_of(self, linear_name: str) -> str:
        return re.fullmatch(self.blocks, linear_name).group(1)

    def model_blocks(self, model: nn.Module) -> dict[str, str]:
        """Every block of the model holding prunable maps, with its part."""
        return {self.block_of(name): part for part in self.parts for name in self.part_modules(model, part)}

    def part_modules(self, model: nn.Module, part: str) -> dict[str, nn.Linear]:
        """The Linear maps of one part of a model, by name."""
        pattern = re.compile(self.parts[part])
        return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(name)}


SEQ2SEQ_FAMILIES: dict[str, Seq2SeqFamily] = {f.name: f for f in (
    Seq2SeqFamily("t5", ("t5",), "T5ForConditionalGeneration", {
        "self_attention": r"(encoder|decoder)\.block\.\d+\.layer\.0\.SelfAttention\.[qkvo]",
        "cross_attention": r"decoder\.block\.\d+\.layer\.1\.EncDecAttention\.[qkvo]",
        "feed_forward": r"(encoder\.block\.\d+\.layer\.1|decoder\.block\.\d+\.layer\.2)\.DenseReluDense\.w(i|o|i_0|i_1)",
        "lm_head": r"lm_head"},
        blocks=r"(lm_head|(?:encoder|decoder)\.block\.\d+\.layer\.\d+)(?:\..*)?",
        ffn_inputs=("wi", "wi_0", "wi_1"), ffn_output="wo", ffn_size_key="d_ff"),
)}
SEQ2SEQ_MODEL_TYPES = tuple(t for f in SEQ2SEQ_FAMILIES.values() for t in f.model_types)


def seq2seq_family_of(model_or_config: Any, where: str = "model") -> Seq2SeqFamily:
    """The encoder-decoder family of a model, its config or config.json dict."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    family = next((f for f in SEQ2SEQ_FAMILIES.values() if model_type in f.model_types), None)
    if family is None:
        raise InputError(f"{where}: model_type is {model_type!r}, not a text-to-text family xcompress reads "
                         f"({', '.join(SEQ2SEQ_MODEL_TYPES)})")
    return family


ALL_FAMILIES = tuple(FAMILIES)
# The families each stage takes: the stages that are narrower refuse the others through `require_family` with this
# table, and docs/families.md is generated from it (`python -m modeling.families`).
STAGE_FAMILIES: dict[str, tuple[str, ...]] = {
    # A TD student keeps its teacher's family's embeddings and head (modeling/modeling_tucker_bert.py).
    "decompose": ALL_FAMILIES, "recover": ALL_FAMILIES, "general-distill": ("bert",),
    "fit-mlm-head": ("bert",), "augment": ("bert",), "mine-pairs": ALL_FAMILIES,
    "dense-student": ALL_FAMILIES, "finetune": ALL_FAMILIES, "task-distill": ALL_FAMILIES,
    "evaluate": ALL_FAMILIES, "prune --pruning_type structured": ALL_FAMILIES,
    "prune --pruning_type unstructured": ALL_FAMILIES, "prune --pruning_type vocabulary": ALL_FAMILIES,
    "quantize": ALL_FAMILIES, "report": ALL_FAMILIES,
    "seq2seq-finetune": tuple(SEQ2SEQ_FAMILIES), "seq2seq-evaluate": tuple(SEQ2SEQ_FAMILIES),
    "prune-schedule": ALL_FAMILIES + tuple(SEQ2SEQ_FAMILIES), "prune-compose": ALL_FAMILIES + tuple(SEQ2SEQ_FAMILIES),
}
WHY_NOT = {
    "general-distill": "its students are masked-LM models with BERT's head, trained on WordPiece pre-generated data",
    "fit-mlm-head": "its masked-LM head is BERT's", "augment": "its masked-LM head is BERT's",
}


def require_family(config: Any, where: str, stage: str) -> Family:
    """The family of a dense model's config, refused with one line when `stage` does not take it."""
    family = family_of(config, where)
    if family.name not in STAGE_FAMILIES[stage]:
        raise InputError(f"{where}: a {family.name} model; {stage} takes {', '.join(STAGE_FAMILIES[stage])} models "
                         f"({WHY_NOT.get(stage, 'see docs/families.md')})")
    return family


def support_table() -> str:
    """docs/families.md's table: which stage takes which family."""
    names = list(FAMILIES) + list(SEQ2SEQ_FAMILIES)
    rows = ["| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for stage, families in STAGE_FAMILIES.items():
        rows.append(f"| {stage} | " + " | ".join("yes" if n in families else "-" for n in names) + " |")
    return "\n".join(rows)


def family_named(model_type: str) -> Family | None:
    return _BY_TYPE.get(model_type)


def family_of(model_or_config: Any, where: str = "model") -> Family:
    """The family of a dense or pruned model, its config or its config.json dict; a TD model's layout is BERT's."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    if model_type == "tucker_bert":  # its layers are BERT's whatever family its embeddings and head come from
        model_type = "bert"
    fam = _BY_TYPE.get(model_type.removeprefix("pruned_"))
    if fam is None:
        raise InputError(f"{where}: model_type is {model_type!r}, not an encoder family xcompress reads "
                         f"({', '.join(DENSE_MODEL_TYPES)})")
    return fam


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder of a model of any family in any role."""
    return family_of(model).encoder(model)


def layers_of(model: nn.Module) -> nn.ModuleList:
    return family_of(model).layer_list(model)


TABLE_BEGIN, TABLE_END = "<!-- families: generated by `python -m modeling.families` -->", "<!-- /families -->"


def families_page(text: str) -> str:
    """docs/families.md's text with its table regenerated."""
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{support_table()}\n{TABLE_END}{tail}"


if __name__ == "__main__":
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "families.md"
    page.write_text(families_page(page.read_text()))
