"""The family table end to end: the embedded teacher transplanted into RoBERTa, DistilBERT and ELECTRA layouts
(tests/transplants.py) computes the same function, so every map of the table is checked by comparing a stage's
result on a transplant with its result on the BERT original. Dense students of every family; published configs of
each family build models the stages accept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

from decompose.blocks import stack_encoder_blocks
from distill.teacher import ScoringTeacher
from modeling.families import FAMILIES, family_of
from modeling.loading import load_tokenizer
from modeling.params import encoder_params
from tests.conftest import FAST, run_cli
from tests.transplants import transplant

SENTENCES = ["a gripping , funny and beautifully acted film .", "it 's a mess , and not a funny one .",
             "the performances are uniformly strong ."]
PAIRS = ["the film is good .", "nobody liked it ."]


@pytest.fixture(scope="module")
def transplants(tmp_path_factory, teacher_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("transplants")
    return {family: transplant(teacher_dir, family, root / family) for family in ("roberta", "distilbert", "electra")}


def _batch(teacher_dir: Path, pairs: bool) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(teacher_dir, "--model")
    return dict(tok(SENTENCES[:2], PAIRS if pairs else None, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_transplant_is_the_same_function(transplants, teacher_dir, teacher, family):
    """Encoder outputs equal the BERT teacher's within 1e-5 on real sentences (pairs too, but for DistilBERT, which
    has no token types)."""
    model = AutoModel.from_pretrained(str(transplants[family])).eval()
    for pairs in (False, True) if family != "distilbert" else (False,):
        batch = _batch(teacher_dir, pairs)
        mask = batch["attention_mask"].bool()
        with torch.no_grad():
            ref = teacher(**batch).last_hidden_state
            out = model(**family_of(model).model_inputs(batch)).last_hidden_state
        assert (ref - out)[mask].abs().max() < 1e-5


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_the_table_finds_the_same_maps(transplants, teacher_dir, teacher, family):
    """Stacked blocks, attention scores and hidden states read through the table are BERT's, exactly."""
    model = AutoModel.from_pretrained(str(transplants[family])).eval()
    assert family_of(model).name == family
    assert torch.equal(stack_encoder_blocks(model, "san_ffn"), stack_encoder_blocks(teacher, "san_ffn"))
    batch = _batch(teacher_dir, False)
    ref_hidden, ref_scores = ScoringTeacher(teacher)(**batch)
    hidden, scores = ScoringTeacher(model)(**batch)
    mask = batch["attention_mask"].bool()
    pairs = (mask[:, None, :, None] & mask[:, None, None, :]).expand_as(ref_scores[0])
    for r, s in zip(ref_scores, scores):
        assert (r - s)[pairs].abs().max() < 1e-4
    for r, s in zip(ref_hidden[1:], hidden[1:]):
        assert (r - s)[mask].abs().max() < 1e-5
    assert encoder_params(model) == encoder_params(teacher)


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_dense_students_of_every_family(transplants, teacher_dir, tmp_path, family):
    """`xcompress dense-student` on a transplant gives the same student as on BERT: same layers kept, same FFN
    neurons chosen (l1), same outputs; the directory loads in plain transformers as its own family."""
    args = ["--layer_stride", "2", "--intermediate_size", "768", "--quiet"]
    for name, source in (("bert", teacher_dir), (family, transplants[family])):
        r = run_cli("dense-student", "--teacher_model", str(source), "--output_dir", str(tmp_path / name), *args)
        assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / family / "dense_student_summary.json").read_text())
    assert summary["teacher_layers"] == [1, 3, 5] and summary["ffn_per_layer"] == [768] * 3
    assert json.loads((tmp_path / family / "config.json").read_text())["model_type"] == family
    ref, student = (AutoModel.from_pretrained(str(tmp_path / n)).eval() for n in ("bert", family))
    assert family_of(student).size(student.config, "num_layers") == 3
    assert encoder_params(student) == encoder_params(ref) == summary["encoder_params"]
    batch = _batch(teacher_dir, False)
    with torch.no_grad():
        a = ref(**batch).last_hidden_state
        b = student(**family_of(student).model_inputs(batch)).last_hidden_state
    assert (a - b)[batch["attention_mask"].bool()].abs().max() < 1e-5


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_td_students_of_every_family(transplants, teacher_dir, tmp_path, family):
    """`xcompress decompose` on a transplant gives the BERT original's TD student under the family's embeddings:
    the same factors and encoder outputs; it loads in plain transformers (trust_remote_code) as its family's TD
    model (RoBERTa's positions from the padding index, DistilBERT without token types)."""
    from safetensors.torch import load_file

    for name, source in (("bert", teacher_dir), (family, transplants[family])):
        r = run_cli("decompose", "--teacher_model", str(source), "--config", "models/minilm-td-36-192",
                    "--output_dir", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    ref, td = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("bert", family))
    for k in ("U", "V", "G", "P"):
        assert torch.equal(ref[f"encoder.factors.{k}"], td[f"encoder.factors.{k}"])
    config = json.loads((tmp_path / family / "config.json").read_text())
    assert config["model_type"] == "tucker_bert" and config["family"] == family
    assert config["positions_from_padding"] == (family == "roberta")
    assert (config["type_vocab_size"] == 0) == (family == "distilbert")
    ref_model, model = (AutoModel.from_pretrained(str(tmp_path / n), trust_remote_code=True).eval()
                        for n in ("bert", family))
    batch = _batch(teacher_dir, False)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        a, b = ref_model(**batch).last_hidden_state, model(**batch).last_hidden_state
    assert (a - b)[mask].abs().max() < 1e-5


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_a_full_rank_td_task_model_computes_its_teachers_logits(transplants, tmp_path, family):
    """A task model of each family (its own head: RoBERTa's and ELECTRA's classification head, DistilBERT's
    pre-classifier with ReLU) decomposed at full ranks is its teacher: the same logits, so the TD model's embeddings,
    positions and head are the family's."""
    from modeling.formats import CLASSIFIER
    from modeling.loading import load_model
    from stagekit.outputs import copy_tokenizer

    torch.manual_seed(0)
    teacher, _ = load_model(str(transplants[family]), "--model", CLASSIFIER,
                            config_updates={"num_labels": 2, "finetuning_task": "SST-2"}, new_head=True)
    teacher.save_pretrained(tmp_path / "teacher")
    copy_tokenizer(transplants[family], tmp_path / "teacher")
    r = run_cli("decompose", "--teacher_model", str(tmp_path / "teacher"), "--rank_layer", "72", "--rank_dim", "384",
                "--output_dir", str(tmp_path / "td"), "--quiet")
    assert r.returncode == 0, r.stderr
    td, _ = load_model(str(tmp_path / "td"), "--model", CLASSIFIER)
    batch = _batch(transplants[family], family != "distilbert")
    with torch.no_grad():
        ref = teacher.eval()(**family_of(teacher).model_inputs(batch)).logits
        out = td.eval()(**batch).logits
    assert (ref - out).abs().max() < 1e-3 * ref.abs().max()


def test_roberta_td_student_takes_the_task_route_as_its_bert_original(sst2_teacher, glue_copy, tmp_path):
    """Same function, same result: the SST-2 teacher and its RoBERTa transplant (head included) through calibrated
    decomposition, layer-wise recovery and prediction distillation, same data and seeds, end at the same dev score
    and the same logits."""
    from modeling.formats import CLASSIFIER
    from modeling.loading import load_model

    roberta = transplant(sst2_teacher, "roberta", tmp_path / "roberta")
    task = ["--task_name", "SST-2", "--data_dir", str(glue_copy)]
    scores, logits = [], []
    batch = _batch(sst2_teacher, True)
    for name, teacher in (("bert", sst2_teacher), ("roberta", roberta)):
        d = tmp_path / name
        steps = [("decompose", ["--teacher_model", str(teacher), "--config", "models/minilm-td-36-192",
                                "--calibration_data", str(glue_copy / "SST-2"), "--calibration_examples", "128"]),
                 ("recover", ["--teacher_model", str(teacher), "--student_model", str(d / "decompose"),
                              "--calibration_data", str(glue_copy / "SST-2"), "--calibration_examples", "256",
                              "--max_steps", "8", "--eval_steps", "8", "--learning_rate", "1e-3"]),
                 ("task-distill", ["--teacher_model", str(teacher), "--student_model", str(d / "recover"), *task,
                                   "--pred_distill", "--max_steps", "10", "--max_train_examples", "320",
                                   "--eval_step", "10", "--learning_rate", "1e-4"])]
        for stage, args in steps:
            r = run_cli(stage, *args, "--output_dir", str(d / stage), *FAST)
            assert r.returncode == 0, f"{name} {stage}: {r.stderr}"
        scores.append(json.loads((d / "task-distill/task_distill_summary.json").read_text())["dev"]["dev"]["score"])
        model, _ = load_model(str(d / "task-distill"), "--model", CLASSIFIER)
        with torch.no_grad():
            logits.append(model.eval()(**batch).logits)
    assert json.loads((tmp_path / "roberta/decompose/config.json").read_text())["family"] == "roberta"
    assert scores[1] == pytest.approx(scores[0], abs=1e-9)
    assert (logits[0] - logits[1]).abs().max() < 1e-4


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_structured_pruning_of_every_family(transplants, teacher_dir, tmp_path, family):
    """Heads and FFN neurons pruned by magnitude from a transplant: the same units as from the BERT original, the same
    outputs, saved in the family's own pruned format (`pruned_<family>`) that xcompress loads back; dense-student with
    fewer heads writes it too."""
    from compress.pruning import PruningConfig, prune_
    from distill.checkpoint import save_model_dir
    from modeling.formats import ENCODER, PRUNED, kind_of
    from modeling.loading import load_model

    batch = _batch(teacher_dir, False)
    mask = batch["attention_mask"].bool()
    outputs = []
    for name, source in (("bert", teacher_dir), (family, transplants[family])):
        model, _ = load_model(str(source), "--model", ENCODER)
        kept = prune_(model.eval(), PruningConfig(importance="l1", heads=6, ffn_size=768))
        save_model_dir(model, tmp_path / name, [source / "vocab.txt"])
        again, _ = load_model(str(tmp_path / name), "--model", ENCODER)
        assert kind_of(again) == PRUNED and again.config.model_type == f"pruned_{name}"
        assert family_of(again).layer_sizes(again) == (kept["layer_num_heads"], kept["layer_intermediate_sizes"])
        with torch.no_grad():
            outputs.append(again.eval()(**family_of(again).model_inputs(batch)).last_hidden_state)
    assert (outputs[0] - outputs[1])[mask].abs().max() < 1e-5
    r = run_cli("dense-student", "--teacher_model", str(transplants[family]), "--layer_stride", "2",
                "--num_attention_heads", "6", "--output_dir", str(tmp_path / "dense"), "--quiet")
    assert r.returncode == 0, r.stderr
    student = AutoModel.from_pretrained(str(tmp_path / "dense"), trust_remote_code=True)
    assert student.config.model_type == f"pruned_{family}" and family_of(student).layer_sizes(student)[0] == [6] * 3


def test_roberta_task_model_scores_as_its_bert_original(sst2_teacher, glue_copy, tmp_path):
    """A fine-tuned teacher moved to RoBERTa's layout (its head included) scores the same on SST-2 dev."""
    roberta = transplant(sst2_teacher, "roberta", tmp_path / "roberta")
    scores = []
    for model in (sst2_teacher, roberta):
        r = run_cli("evaluate", "--model", str(model), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                    "--output_dir", str(tmp_path / model.name), "--max_seq_length", "64")
        assert r.returncode == 0, r.stderr
        scores.append(json.loads((tmp_path / model.name / "eval_results_SST-2.json").read_text()))
    assert scores[0]["dev"]["dev"]["score"] == pytest.approx(scores[1]["dev"]["dev"]["score"], abs=1e-9)


def test_dense_student_distils_layer_by_layer(sst2_teacher, glue_copy, tmp_path):
    """A 3-layer dense student of the SST-2 teacher: both phases of task distillation, its hidden states and
    attention scores read through the table, the layer map following the teacher layers it was copied from."""
    student = tmp_path / "dense"
    r = run_cli("dense-student", "--teacher_model", str(sst2_teacher), "--keep_layers", "0,2,4",
                "--intermediate_size", "1024", "--task_name", "SST-2", "--data_dir", str(glue_copy),
                "--importance_examples", "64", "--output_dir", str(student), *FAST)
    assert r.returncode == 0, r.stderr
    start = json.loads((student / "dense_student_summary.json").read_text())
    assert start["importance"] == "taylor" and start["dev_before_distillation"]["score"] > 0.5
    out = tmp_path / "distilled"
    r = run_cli("task-distill", "--teacher_model", str(sst2_teacher), "--student_model", str(student),
                "--task_name", "SST-2", "--data_dir", str(glue_copy), "--stage", "both", "--intermediate_max_steps",
                "12", "--max_steps", "12", "--max_train_examples", "384", "--eval_step", "12",
                "--output_dir", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    intermediate = [e["loss"] for e in log if e.get("phase") == "intermediate" and "loss" in e]
    assert len(intermediate) >= 2 and intermediate[-1] < intermediate[0]
    summary = json.loads((out / "task_distill_summary.json").read_text())
    assert summary["dev"]["dev"]["score"] > 0.5
    assert AutoConfig.from_pretrained(str(out)).num_hidden_layers == 3


@pytest.mark.parametrize("case", ["general_distill_roberta", "gpt2", "t5", "layer_out_of_range", "heads_roberta", "layer_map"])
def test_bad_family_input_is_one_line(case, transplants, sst2_teacher, glue_copy, tmp_path):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "num_layers": 2, "d_model": 64}))
    out = tmp_path / "out"
    args, expected = {
        "general_distill_roberta": (["general-distill", "--teacher_model", str(transplants["roberta"]),
                                     "--student_model", str(transplants["roberta"]), "--pregenerated_data", str(tmp_path)],
                                    "a roberta model; general-distill takes bert models (its students are masked-LM"),
        "gpt2": (["dense-student", "--teacher_model", str(gpt2), "--layer_stride", "2"],
                 "model_type is 'gpt2', not one xcompress reads"),
        "t5": (["decompose", "--teacher_model", str(t5), "--rank_layer", "8", "--rank_dim", "32"],
               "a text-to-text (encoder-decoder) model (t5), not a dense encoder"),
        "layer_out_of_range": (["dense-student", "--teacher_model", str(transplants["distilbert"]), "--keep_layers",
                                "0,6"], "--keep_layers 0,6: each teacher layer at most once, from 0 to 5"),
        "heads_roberta": (["dense-student", "--teacher_model", str(transplants["roberta"]), "--num_attention_heads",
                           "13"], "--num_attention_heads 13: the teacher has 12 per layer"),
        "layer_map": (["task-distill", "--teacher_model", str(sst2_teacher), "--student_model", str(sst2_teacher),
                       "--task_name", "SST-2", "--data_dir", str(glue_copy), "--stage", "intermediate",
                       "--layer_map", "1,2,3,4,5,7"], "--layer_map 1,2,3,4,5,7: needs 6 teacher layers"),
    }[case]
    r = run_cli(*args, "--output_dir", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert not out.exists()


# The published config.json values of each family's common checkpoints (hub files, copied here: nothing is fetched).
PUBLISHED = {
    "roberta-large": {"model_type": "roberta", "vocab_size": 50265, "hidden_size": 1024, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "intermediate_size": 4096, "max_position_embeddings": 514,
                      "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                      "layer_norm_eps": 1e-05},
    "xlm-roberta-base": {"model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": 768,
                         "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                         "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0,
                         "eos_token_id": 2, "layer_norm_eps": 1e-05},
    "distilbert-base-uncased": {"model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6,
                                "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512,
                                "activation": "gelu", "pad_token_id": 0},
    "electra-small-discriminator": {"model_type": "electra", "vocab_size": 30522, "embedding_size": 128,
                                    "hidden_size": 256, "num_hidden_layers": 12, "num_attention_heads": 4,
                                    "intermediate_size": 1024, "max_position_embeddings": 512, "type_vocab_size": 2,
                                    "pad_token_id": 0},
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("roberta-large", "xlm-roberta-base")
                                  else n for n in PUBLISHED])
def test_published_configs_build_models_the_table_reads(name, teacher_dir, tmp_path):
    """A randomly initialised model of each published config: the table finds every layer's maps at the config's
    sizes, dense-student halves its depth (ELECTRA's embedding projection included), and decompose makes a TD
    student with the family's embeddings that runs on real ids."""
    raw = dict(PUBLISHED[name])
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    family = family_of(model)
    depth, width = family.size(config, "num_layers"), family.size(config, "hidden_size")
    layers = family.layer_list(model)
    assert len(layers) == depth
    assert all(family.linear(layer, part).weight.shape[0] == width
               for layer in layers for part in ("query", "key", "value", "attn_out", "ffn_out"))
    assert family.layer_sizes(model) == ([family.size(config, "num_heads")] * depth,
                                         [family.size(config, "intermediate_size")] * depth)
    if family.embedding_projection:
        assert getattr(model, family.embedding_projection).out_features == width
    source = tmp_path / name
    model.save_pretrained(source)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (source / f).write_bytes((teacher_dir / f).read_bytes())
    r = run_cli("dense-student", "--teacher_model", str(source), "--layer_stride", "2", "--output_dir",
                str(tmp_path / "student"), "--quiet")
    assert r.returncode == 0, r.stderr
    student = AutoModel.from_pretrained(str(tmp_path / "student"))
    assert family_of(student).size(student.config, "num_layers") == depth // 2
    r = run_cli("decompose", "--teacher_model", str(source), "--rank_layer", "8", "--rank_dim", "32", "--output_dir",
                str(tmp_path / "td"), "--quiet")
    assert r.returncode == 0, r.stderr
    td = AutoModel.from_pretrained(str(tmp_path / "td"), trust_remote_code=True).eval()
    assert td.config.family == family.name and td.config.rank_dim == 32
    with torch.no_grad():
        hidden = td(**_batch(teacher_dir, False)).last_hidden_state
    assert hidden.shape[-1] == width and torch.isfinite(hidden).all()


def test_every_family_is_registered_with_its_classes():
    for family in FAMILIES.values():
        for model_type in family.model_types:
            for role in family.classes:
                cls = family.model_class(role, "test")
                assert cls.config_class.model_type == model_type


def test_the_families_page_is_generated_from_the_table():
    from modeling.families import families_page
    from tests.conftest import REPO

    page = REPO / "docs/families.md"
    assert families_page(page.read_text()) == page.read_text(), "docs/families.md is stale (run `make docs`)"


def _tokenizer_text(glue_copy: Path) -> list[str]:
    """What the test tokenizers learn their pieces from: 20,000 SST-2 sentences and the sentences of STS-B (news and
    captions), so their vocabularies hold pieces that SST-2's text never uses."""
    sst2 = [line.split("\t")[0] for line in (glue_copy / "SST-2/train.tsv").read_text().splitlines()[1:20001]]
    stsb = [s for line in (glue_copy / "STS-B/train.tsv").read_text().splitlines()[1:] for s in line.split("\t")[7:9]]
    return sst2 + stsb


@pytest.fixture(scope="module")
def bpe_roberta(tmp_path_factory, glue_copy) -> Path:
    """A small RoBERTa with its own byte-level BPE (3,000 pieces learnt from SST-2 and STS-B sentences), fine-tuned
    on SST-2: the tokenizer paths are real, not WordPiece in disguise."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    from stagekit.cli import main

    base = tmp_path_factory.mktemp("bpe") / "roberta-bpe"
    rows = _tokenizer_text(glue_copy)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(rows, vocab_size=3000, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    config = RobertaConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=512, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(base)
    tok.save_pretrained(base)
    out = base.parent / "roberta-bpe-sst2"
    assert main(["finetune", "--model", str(base), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--max_train_examples", "4000", "--num_train_epochs", "2",
                 "--learning_rate", "5e-4", "--eval_step", "1000", *FAST]) == 0
    return out


def test_a_roberta_with_its_own_bpe_through_the_stages(bpe_roberta, glue_copy, tmp_path):
    """Byte-level BPE from the model directory through finetune, dense-student, both phases of task distillation,
    int8 and vocabulary pruning (merges kept consistent)."""
    from modeling.loading import load_tokenizer

    tok = load_tokenizer(bpe_roberta, "--model")
    # byte-level BPE's own pieces: a space is the byte marker Ġ, no WordPiece "##"
    assert tok.convert_ids_to_tokens(tok("a gripping film")["input_ids"]) == ["<s>", "a", "Ġg", "ri", "pp", "ing",
                                                                             "Ġfilm", "</s>"]
    teacher = json.loads((bpe_roberta / "finetune_summary.json").read_text())["dev"]["dev"]["score"]
    assert teacher > 0.6  # learnt something from its own pieces (majority class: 0.509)
    student = tmp_path / "dense"
    r = run_cli("dense-student", "--teacher_model", str(bpe_roberta), "--layer_stride", "2", "--intermediate_size",
                "256", "--task_name", "SST-2", "--data_dir", str(glue_copy), "--importance_examples", "64",
                "--output_dir", str(student), *FAST)
    assert r.returncode == 0, r.stderr
    assert (student / "tokenizer.json").read_bytes() == (bpe_roberta / "tokenizer.json").read_bytes()
    distilled = tmp_path / "distilled"
    r = run_cli("task-distill", "--teacher_model", str(bpe_roberta), "--student_model", str(student), "--task_name",
                "SST-2", "--data_dir", str(glue_copy), "--stage", "both", "--intermediate_max_steps", "10",
                "--max_steps", "10", "--max_train_examples", "320", "--eval_step", "10", "--output_dir",
                str(distilled), *FAST)
    assert r.returncode == 0, r.stderr
    assert AutoConfig.from_pretrained(str(distilled)).model_type == "roberta"
    r = run_cli("quantize", "--model", str(distilled), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                "--output_dir", str(tmp_path / "int8"), "--latency_repeats", "1", "--max_seq_length", "64", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "int8/quantize_summary.json").read_text())["rows"]
    assert abs(rows[1]["dev"]["score"] - rows[0]["dev"]["score"]) < 0.05
    _prunes_its_vocabulary_exactly(bpe_roberta, glue_copy, tmp_path / "vocab")


def _prunes_its_vocabulary_exactly(model: Path, glue_copy: Path, out: Path) -> dict:
    """Vocabulary pruning on the task's text: fewer pieces, the same splits and logits on that text, a tokenizer that
    loads (BPE merges consistent) and still encodes text it never saw."""
    r = run_cli("prune", "--model", str(model), "--pruning_type", "vocabulary", "--task_name", "SST-2",
                "--data_dir", str(glue_copy), "--output_dir", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    row = json.loads((out / "prune_summary.json").read_text())["rows"][0]
    assert row["texts_split_differently"] == 0 and row["max_dev_logit_change"] < 1e-5
    assert row["vocabulary"]["kept"] < row["vocabulary"]["original_size"]
    tok = load_tokenizer(out, "--model")
    unseen = tok("zygote quixotically xylophones")["input_ids"]
    assert len(unseen) > 3 and max(unseen) < row["vocabulary"]["kept"]
    return row


def test_xlm_roberta_with_a_sentencepiece_unigram_prunes_its_vocabulary(glue_copy, tmp_path):
    """An XLM-R model with its own SentencePiece Unigram tokenizer (trained on SST-2's sentences; the model's task head
    untrained): vocabulary pruning keeps the pieces SST-2 uses and splits every text as before."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaForSequenceClassification

    sp = SentencePieceUnigramTokenizer()
    rows = _tokenizer_text(glue_copy)
    sp.train_from_iterator(rows, vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>")
    sp._tokenizer.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                      special_tokens=[("<s>", 0), ("</s>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", unk_token="<unk>", pad_token="<pad>")
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=256, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, finetuning_task="SST-2", num_labels=2)
    torch.manual_seed(0)
    model = tmp_path / "xlmr"
    XLMRobertaForSequenceClassification(config).save_pretrained(model)
    tok.save_pretrained(model)
    from compress.prune_vocabulary import tokenizer_model

    assert tokenizer_model(load_tokenizer(model, "--model")) == "Unigram"
    _prunes_its_vocabulary_exactly(model, glue_copy, tmp_path / "vocab")
