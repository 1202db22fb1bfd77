"""prune-compose on a small T5 trained here on the shipped corpus and on a fine-tuned MiniLM SST-2 model (as BERT and
as DistilBERT): the grid's versions share their distinct modules, each module's local distillation brings its
outputs closer to the dense block's, every version is composed at its rates and fine-tuned with its zeros held, the
baseline arm is built beside it, modules are never composed into other weights, and bad versions are one line."""
import csv
import json

import pytest
import torch

from compress.prune_compose import BlockInputs, grid_versions, local_distill, prune_block
from modeling.families import SEQ2SEQ_FAMILIES
from modeling.formats import GENERATOR
from modeling.loading import load_model
from stagekit.cli import main
from tests.conftest import CORPUS, FAST
from text2text.generation import PairBatches

T5 = SEQ2SEQ_FAMILIES["t5"]


def test_a_grid_of_four_versions_shares_half_its_modules(t5_de, tmp_path):
    out = tmp_path / "composed"
    assert main(["prune-compose", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(out), "--grid", "self_attention,cross_attention=0.5,0.8", "feed_forward=0.5,0.8",
                 "--num_train_epochs", "0.02", "--baseline_epochs", "0.04", "--module_steps", "20",
                 "--module_batches", "4", "--max_train_examples", "1600", "--max_eval_examples", "16",
                 "--generation_max_length", "8", "--quiet"]) == 0
    summary = json.loads((out / "prune_compose_summary.json").read_text())
    assert list(summary["versions"]) == ["sa0.5-ca0.5-ff0.5", "sa0.5-ca0.5-ff0.8", "sa0.8-ca0.8-ff0.5",
                                         "sa0.8-ca0.8-ff0.8"]
    # Tiny T5: 2 + 2 self-attention, 2 cross-attention, 2 + 2 feed-forward blocks, each at two rates.
    assert summary["distinct_modules"] == 2 * 10
    for m in summary["modules"]:
        assert m["local_mse_distilled"] < m["local_mse_pruned"], m
    for arm in ("composed", "baseline"):
        for name, rates in summary["versions"].items():
            r = summary["results"][arm][name]
            for part in ("self_attention", "cross_attention", "feed_forward"):
                assert abs(r["sparsity"][part] - rates[part]) < 0.01, (arm, name, part, r["sparsity"])
            assert r["sparsity"]["lm_head"] == 0
            model, _ = load_model(str(out / name if arm == "composed" else out / "baseline" / name), "--model",
                                  GENERATOR)  # the stored file holds the zeros the summary counted
            ff = [m.weight for m in T5.part_modules(model, "feed_forward").values()]
            zeros = sum(int((w == 0).sum()) for w in ff) / sum(w.numel() for w in ff)
            assert zeros == pytest.approx(r["sparsity"]["feed_forward"])
    rows = list(csv.reader((out / "training_stats.csv").open()))
    assert rows[0] == ["arm", "version", "step", "epoch", "train_loss", "val_loss", "score", "cpu_seconds"]
    assert (out / "loss.png").stat().st_size > 0 and (out / "versions.yaml").is_file()
    assert summary["fine_tuning_cpu_seconds"]["composed"] > summary["module_cpu_seconds"] > 0


def test_a_stopped_composition_resumes_with_its_modules_and_finished_versions(t5_de, tmp_path, monkeypatch):
    """The third version's fine-tuning is interrupted; the same command distils no module again, fine-tunes only
    the versions left, and publishes all four."""
    import compress.prune_compose as stage
    import compress.prune_targets as targets

    out = tmp_path / "composed"
    args = ["prune-compose", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
            "--output_dir", str(out), "--grid", "self_attention=0.5,0.8", "feed_forward=0.5,0.8",
            "--num_train_epochs", "0.02", "--module_steps", "5", "--module_batches", "2", "--max_train_examples",
            "800", "--max_eval_examples", "8", "--generation_max_length", "4", "--quiet"]
    real_finetune, real_distill, tuned, distilled = targets.finetune, stage.local_distill, [], []

    def finetune(cfg):
        tuned.append(cfg.model)
        if len(tuned) == 3:
            raise KeyboardInterrupt
        return real_finetune(cfg)

    def local_distill(*a):
        distilled.append(a[0])
        return real_distill(*a)

    monkeypatch.setattr(targets, "finetune", finetune)
    monkeypatch.setattr(stage, "local_distill", local_distill)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert len(distilled) == 16 and not out.exists() and (tmp_path / ".composed.partial").is_dir()
    tuned.clear()
    assert main(args) == 0
    assert len(distilled) == 16 and len(tuned) == 2  # versions 3 and 4 only
    summary = json.loads((out / "prune_compose_summary.json").read_text())
    assert len(summary["results"]["composed"]) == 4 and "baseline" not in summary["results"]
    assert not (out / "compose_state.json").exists() and not (out / "modules.pt").exists()
    assert not (tmp_path / ".composed.partial").exists()


def test_a_pruned_block_learns_the_dense_blocks_outputs(t5_de):
    """Local distillation on captured inputs: called alone on what it received in the whole model, the dense block
    gives back its captured output exactly; the pruned copy starts off and ends closer."""
    import copy

    from corpora.text_pairs import read_pairs
    from modeling.loading import load_tokenizer

    model, _ = load_model(str(t5_de), "--model", GENERATOR)
    pairs = read_pairs(CORPUS / "train.tsv", "--data_dir")[:64]
    data = PairBatches(pairs, load_tokenizer(t5_de, "--model"), 64, 64)
    block = "decoder.block.1.layer.1"  # cross-attention: needs the encoder's states and the masks it was given
    captured = BlockInputs(model, [block], [data.batch(range(0, 32)), data.batch(range(32, 64))])
    dense = model.get_submodule(block)
    with torch.no_grad():
        for args, kwargs, out in captured.calls[block]:
            torch.testing.assert_close(dense(*args, **kwargs)[0], out)
    pruned = copy.deepcopy(dense)
    prune_block(pruned, 0.8)
    before, after = local_distill(pruned, captured.calls[block], 40, 1e-3)
    assert after < 0.7 * before and float((pruned.EncDecAttention.q.weight == 0).float().mean()) >= 0.5
    assert set(T5.model_blocks(model).values()) == set(T5.parts)


@pytest.mark.parametrize("args, expected", [
    (["--grid", "attention=0.5"], "version at0.5: 'attention' is no part of a t5 model"),
    (["--grid", "feed_forward:0.5"], "--grid feed_forward:0.5: not parts=rates"),
    (["--grid", "feed_forward=1.5"], "feed_forward rate 1.5 is not a fraction in [0, 1)"),
    ([], "give the versions as --versions FILE or --grid parts=rates ..., one of the two"),
])
def test_bad_versions_are_one_line(args, expected, t5_de, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune-compose", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.parametrize("blocks, expected", [
    ("{encoder.block.9.layer.0: 0.5}", "version v: blocks: the model has no block 'encoder.block.9.layer.0'"),
    ("{encoder.block.0.layer.0: 1.0}", "version v: blocks: encoder.block.0.layer.0 rate 1.0 is not a fraction"),
    ("[encoder.block.0.layer.0]", "version v: blocks: expected block: rate entries"),
])
def test_a_versions_file_naming_a_block_the_model_lacks_is_refused(blocks, expected, t5_de, tmp_path, capsys):
    versions, out = tmp_path / "versions.yaml", tmp_path / "out"
    versions.write_text(f"versions:\n  v: {{feed_forward: 0.5, blocks: {blocks}}}\n")
    assert main(["prune-compose", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(out), "--versions", str(versions)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(versions) in err[0], err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_versions_of_a_grid_are_named_by_their_rates():
    versions = grid_versions(["self_attention,cross_attention=0.5,0.7", "feed_forward=0.3"], tuple(T5.parts), "t5")
    assert versions == {"sa0.5-ca0.5-ff0.3": {"self_attention": 0.5, "cross_attention": 0.5, "feed_forward": 0.3},
                        "sa0.7-ca0.7-ff0.3": {"self_attention": 0.7, "cross_attention": 0.7, "feed_forward": 0.3}}


@pytest.fixture(scope="module")
def distilbert_sst2(sst2_teacher, glue_copy, tmp_path_factory):
    """The fine-tuned MiniLM SST-2 model written as a DistilBERT task model (the same function, another layout), whose
    own head (a ReLU layer where BERT's pooler is tanh: it cannot be moved) is then trained for 60 steps, so that its
    validation loss measures how far a pruned version is from a working model, not from a random head."""
    from tests.transplants import transplant

    work = tmp_path_factory.mktemp("distilbert")
    torch.manual_seed(0)  # the head the transplant draws: the same model whatever ran before
    moved = transplant(sst2_teacher, "distilbert", work / "moved")
    out = work / "sst2"
    assert main(["finetune", "--model", str(moved), "--task_name", "SST-2", "--data_dir", str(glue_copy), "--output_dir",
                 str(out), "--max_train_examples", "960", "--max_steps", "60", "--learning_rate", "1e-4",
                 "--eval_step", "60", *FAST]) == 0
    return out


ENCODER_RUN = ["--task_name", "SST-2", "--max_train_examples", "320", "--max_seq_length", "64", "--module_steps",
               "30", "--module_batches", "2", "--train_batch_size", "16", "--eval_steps", "1000", "--quiet"]


def test_an_encoder_grid_composes_distilbert_versions(distilbert_sst2, glue_copy, tmp_path):
    """DistilBERT (the family the composable-pruning users run on IMDb) at attention 0.5 or 0.8 and FFN 0.5: each
    layer's attention and FFN module is a block, each (block, rate) is pruned and distilled once, each version holds
    its rates in every block it composes, and the published model loads back with the zeros counted."""
    from compress.prune_unstructured import sparsity
    from corpora.glue import get_task
    from tasks.classifier import load_classifier

    out = tmp_path / "composed"
    assert main(["prune-compose", "--model", str(distilbert_sst2), "--data_dir", str(glue_copy), "--output_dir",
                 str(out), "--grid", "attention=0.5,0.8", "ffn=0.5", "--num_train_epochs", "0.1",
                 "--baseline_epochs", "0.1", *ENCODER_RUN]) == 0
    summary = json.loads((out / "prune_compose_summary.json").read_text())
    assert summary["family"] == "distilbert" and summary["learning_rate"] == 2e-5
    assert list(summary["versions"]) == ["at0.5-ff0.5", "at0.8-ff0.5"]
    assert summary["distinct_modules"] == 6 * 2 + 6  # six layers' attention at two rates, their FFN at one
    assert {m["block"].rsplit(".", 1)[1] for m in summary["modules"]} == {"attention", "ffn"}
    for m in summary["modules"]:
        assert m["local_mse_distilled"] < m["local_mse_pruned"], m
    task = get_task("SST-2")
    original = sparsity(load_classifier(str(distilbert_sst2), "--model", task, need_task_model=True)[0])
    for arm in ("composed", "baseline"):
        for name, rates in summary["versions"].items():
            r = summary["results"][arm][name]
            for part in ("attention", "ffn"):
                assert abs(r["sparsity"][part] - rates[part]) < 0.005, (arm, name, part, r["sparsity"])
            for untouched in ("embeddings", "classifier"):  # as the original has them (a few embeddings are 0)
                assert r["sparsity"][untouched] == original[untouched]["sparsity"], (arm, name, untouched)
            assert r["score"] == r["dev"]["acc"] and r["steps"] == 2 and r["history"][0]["score"] == r["score_composed"]
            model, _ = load_classifier(str(out / name if arm == "composed" else out / "baseline" / name), "--model",
                                       task, need_task_model=True)
            assert sparsity(model)["ffn"]["sparsity"] == pytest.approx(r["sparsity"]["ffn"])
    # Where pruning hurts (attention at 0.8: the pruned-only version falls near chance), the distilled modules start
    # the version close to the dense model's function; at 0.5 pruning alone costs little and both start near it.
    composed, baseline = (summary["results"][arm]["at0.8-ff0.5"]["history"][0] for arm in ("composed", "baseline"))
    assert composed["val_loss"] < baseline["val_loss"] and composed["score"] > baseline["score"] + 0.05
    lines = (out / "training_stats.csv").read_text().splitlines()
    assert lines[0] == "arm,version,step,epoch,train_loss,val_loss,score,cpu_seconds" and len(lines) == 1 + 4 * 2
    assert "| at0.8-ff0.5 | baseline |" in (out / "prune_compose_results.md").read_text()


def test_bert_blocks_are_called_alone_on_their_captured_inputs(sst2_teacher, glue_copy):
    """BERT keeps its FFN in two modules (`intermediate`, and `output` with the residual input as a second argument):
    each is a block, and called alone on what it received in the whole model, each dense block gives back its
    captured output exactly."""
    from corpora.glue import get_task
    from modeling.families import FAMILIES
    from modeling.loading import load_tokenizer
    from tasks.classifier import load_classifier
    from tasks.features import load_features

    task = get_task("SST-2")
    model, _ = load_classifier(str(sst2_teacher), "--model", task, need_task_model=True)
    blocks = FAMILIES["bert"].model_blocks(model)
    assert {b for b, part in blocks.items() if b.startswith("bert.encoder.layer.2.")} == {
        "bert.encoder.layer.2.attention", "bert.encoder.layer.2.intermediate", "bert.encoder.layer.2.output"}
    assert sorted(set(blocks.values())) == ["attention", "ffn"] and len(blocks) == 6 * 3
    features = load_features(task, glue_copy / "SST-2" / "train.tsv", load_tokenizer(sst2_teacher, "--model"), 64, 32)
    batch = {k: v for k, v in features.batch(range(32)).items() if k != "labels"}
    captured = BlockInputs(model.eval(), list(blocks), [batch])
    with torch.no_grad():
        for block in blocks:
            (args, kwargs, out), = captured.calls[block]
            again = model.get_submodule(block)(*args, **kwargs)
            torch.testing.assert_close(again[0] if isinstance(again, tuple) else again, out)


def test_modules_are_never_composed_into_other_weights(distilbert_sst2, glue_copy, tmp_path, monkeypatch, capsys):
    """A run stopped after its modules were distilled, then given again after the model's weights changed: refused
    in one line naming the flag and the fingerprints, the stopped run's modules kept."""
    import shutil

    import compress.prune_targets as targets
    from safetensors.torch import load_file, save_file

    model, out = tmp_path / "model", tmp_path / "composed"
    shutil.copytree(distilbert_sst2, model)
    args = ["prune-compose", "--model", str(model), "--data_dir", str(glue_copy), "--output_dir", str(out),
            "--grid", "ffn=0.5", *ENCODER_RUN]

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(targets, "recover", stopped)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    modules = tmp_path / ".composed.partial" / "modules.pt"
    assert modules.is_file()
    weights = load_file(model / "model.safetensors")
    weights["classifier.bias"] = weights["classifier.bias"] + 0.1
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--model {model}: not the weights the modules in" in err[0] and "fingerprint" in err[0]
    assert modules.is_file() and not out.exists()


@pytest.mark.parametrize("args, expected", [
    (["--task_name", "SST-2", "--grid", "embeddings=0.5"],
     "version em0.5: 'embeddings' is no part of a bert model (attention, ffn)"),
    (["--task_name", "text", "--grid", "ffn=0.5"], "an encoder; --task_name text is for text-to-text models"),
])
def test_an_encoder_composition_names_encoder_parts(args, expected, sst2_teacher, glue_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune-compose", "--model", str(sst2_teacher), "--data_dir", str(glue_copy), "--output_dir",
                 str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_a_td_model_is_refused(td_student, glue_copy, tmp_path, capsys):
    """A TD model's layers share their factors: there is no per-layer module to compose."""
    out = tmp_path / "out"
    assert main(["prune-compose", "--model", str(td_student), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--grid", "ffn=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prune-compose takes dense encoders" in err[0], err
    assert not out.exists()
