"""Pruning and quantization on the SST-2 fine-tuned embedded teacher and a real TD student: structured pruning
removes rows and columns and its importance scores matter, rank pruning of TD factors, iterative magnitude
pruning that keeps its sparsity through fine-tuning, int8 quantization (PyTorch and ONNX Runtime) and bf16 within a
point of fp32, the report, and bad input refused before anything is written."""
import copy
import json

import numpy as np
import pytest
import torch

from stagekit.cli import main
from tests.conftest import FAST, run_cli

BF16_LOGIT_TOLERANCE = 0.1  # max |logit difference| of a bf16 copy against its fp32 model on real dev text


def _features(model_dir, glue, split, n=None):
    from corpora.glue import dev_files, get_task, train_file
    from modeling.loading import load_tokenizer
    from tasks.features import load_features

    task = get_task("SST-2")
    path = dev_files(task, glue)[0] if split == "dev" else train_file(task, glue, aug=False)
    return task, load_features(task, path, load_tokenizer(model_dir, "--model"), 64, n, 0)


def _batches(features, size=32):
    ids = np.arange(len(features))
    return [features.batch(ids[i:i + size]) for i in range(0, len(ids), size)]


def _load(model_dir, task):
    from tasks.classifier import load_classifier

    return load_classifier(str(model_dir), "--model", task, need_task_model=True)[0]


@pytest.mark.slow
def test_structured_pruning_removes_rows_and_taylor_scores_matter(sst2_teacher, glue_copy, tmp_path):
    from compress.importance import unit_importance
    from compress.prune_structured import head_ffn_reducer, prune_heads_and_ffn
    from compress.pruning import PruningConfig, prune_
    from distill.checkpoint import save_model_dir
    from tasks.classifier import evaluate_features

    task, train = _features(sst2_teacher, glue_copy, "train", 256)
    _, dev = _features(sst2_teacher, glue_copy, "dev")
    model = _load(sst2_teacher, task)
    full = evaluate_features(model, task, dev, 128)["acc"]

    # Keeping the 4 most important heads per layer by Taylor score beats keeping the 4 least important.
    scores = unit_importance(model, head_ffn_reducer(model), "taylor", _batches(train))
    accs = {}
    for which in ("top", "bottom"):
        m = _load(sst2_teacher, task)
        heads = [s.argsort(descending=which == "top")[:4].sort().values for s in (scores[f"heads.{i}"] for i in range(6))]
        prune_heads_and_ffn(m, heads, [torch.arange(1536)] * 6)
        accs[which] = evaluate_features(m, task, dev, 128)["acc"]
    assert accs["top"] > accs["bottom"] + 0.05, accs

    model = _load(sst2_teacher, task)
    before = sum(p.numel() for p in model.parameters())
    kept = prune_(model, PruningConfig(heads=6, ffn_size=768), _batches(train))
    assert sum(kept["layer_num_heads"]) == 36 and sum(kept["layer_intermediate_sizes"]) == 6 * 768
    assert min(kept["layer_num_heads"]) >= 1 and len(set(kept["layer_num_heads"])) > 1  # allocated by score
    for layer, heads, ffn in zip(model.bert.encoder.layer, kept["layer_num_heads"], kept["layer_intermediate_sizes"]):
        assert layer.attention.self.query.weight.shape == (heads * 32, 384)
        assert layer.attention.output.dense.weight.shape == (384, heads * 32)
        assert layer.intermediate.dense.weight.shape == (ffn, 384) and layer.output.dense.weight.shape == (384, ffn)
    assert sum(p.numel() for p in model.parameters()) < before - 3_000_000
    save_model_dir(model, tmp_path / "pruned", [sst2_teacher / "vocab.txt"])
    reloaded = _load(tmp_path / "pruned", task)
    batch = dev.batch(np.arange(16))
    batch.pop("labels")
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, reloaded(**batch).logits)
    assert json.loads((tmp_path / "pruned/config.json").read_text())["model_type"] == "pruned_bert"
    assert evaluate_features(reloaded, task, dev, 128)["acc"] > 0.6 and full > 0.75


def test_rank_pruning_shrinks_td_factors(td_student, tmp_path):
    from compress.pruning import PruningConfig, prune_
    from modeling import TuckerBertForSequenceClassification

    model = TuckerBertForSequenceClassification.from_pretrained(str(td_student), num_labels=2).eval()
    factors = model.bert.encoder.factors
    U, V, G, P = (t.detach().clone() for t in (factors.U, factors.V, factors.G, factors.P))
    prune_(model, PruningConfig(kind="rank", importance="l1", rank_dim=128, rank_layer=24))
    assert model.config.rank_dim == 128 and model.config.rank_layer == 24
    assert factors.U.shape == (384, 128) and factors.V.shape == (128, 384)
    assert factors.G.shape == (24, 128, 128) and factors.P.shape == (72, 24)
    # l1 importance: the U columns and cores of largest Σ|w| are kept, unchanged and in their order.
    kept_u = U.abs().sum(0).topk(128).indices.sort().values
    kept_k = G.abs().sum((1, 2)).topk(24).indices.sort().values
    assert torch.equal(factors.U, U[:, kept_u])
    kept_v = V.abs().sum(1).topk(128).indices.sort().values
    assert torch.equal(factors.V, V[kept_v]) and torch.equal(factors.P, P[:, kept_k])
    assert torch.equal(factors.G, G[kept_k][:, kept_u][:, :, kept_v])
    model.save_pretrained(tmp_path / "td")
    again = TuckerBertForSequenceClassification.from_pretrained(str(tmp_path / "td")).eval()
    ids = torch.randint(1000, 30000, (2, 24))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, again(input_ids=ids).logits)


@pytest.mark.slow
def test_prune_stage_sweep_reuses_the_head_pruned_model(sst2_teacher, glue_copy, tmp_path):
    out = tmp_path / "sweep"
    assert main(["prune", "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--target_num_of_heads", "6", "--target_ffn_size", "1024,512",
                 "--importance_examples", "64", "--max_steps", "6", "--max_train_examples", "300",
                 "--eval_step", "6", *FAST]) == 0
    summary = json.loads((out / "prune_summary.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert list(rows) == ["heads-6", "heads-6_ffn-1024", "heads-6_ffn-512"]
    assert rows["heads-6"]["shared_intermediate"] and rows["heads-6_ffn-512"]["derived_from"] == "heads-6"
    # The derived models keep exactly the head-pruned model's heads, and shrink as the FFN does.
    assert rows["heads-6_ffn-1024"]["layer_num_heads"] == rows["heads-6"]["layer_num_heads"]
    assert rows["heads-6"]["heads"] == 36 and rows["heads-6_ffn-512"]["ffn_size"] == 512
    sizes = [rows[n]["size_on_disk_bytes"] for n in rows]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] < summary["original"]["size_on_disk_bytes"]
    for name, row in rows.items():
        config = json.loads((out / name / "config.json").read_text())
        assert config["model_type"] == "pruned_bert" and config["layer_num_heads"] == row["layer_num_heads"]
        assert row["score"] > 0.6  # recovered; chance is 0.51
    assert (out / "prune_results.md").read_text().count("| heads-6") == 3
    assert {p.name for p in (out / "plots").iterdir()} == {"score_vs_heads.png", "size_vs_heads.png"}


@pytest.mark.slow
def test_iterative_magnitude_pruning_keeps_its_sparsity(sst2_teacher, glue_copy, tmp_path):
    from compress.prune_unstructured import sparsity

    out = tmp_path / "sparse"
    assert main(["prune", "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--pruning_type", "unstructured", "--amount_ffn", "0.6",
                 "--amount_attention", "0.3", "--iterations", "2", "--max_steps", "4", "--max_train_examples", "200",
                 "--eval_step", "4", *FAST]) == 0
    task, _ = _features(sst2_teacher, glue_copy, "dev", 1)
    groups = sparsity(_load(out, task))
    assert groups["ffn"]["sparsity"] == pytest.approx(0.6, abs=1e-3)  # fine-tuning did not regrow zeros
    assert groups["attention"]["sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert groups["embeddings"]["sparsity"] < 1e-3
    first = sparsity(_load(out / "iter_1", task))["ffn"]["sparsity"]
    assert first == pytest.approx(1 - 0.4 ** 0.5, abs=1e-3)  # half the schedule: equal fractions of what is left
    row = json.loads((out / "prune_summary.json").read_text())["rows"][0]
    assert row["compressed_bytes"] < 0.85 * row["size_on_disk_bytes"]


@pytest.fixture(scope="module")
def int8_teacher(sst2_teacher, glue_copy, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "teacher-int8"
    assert main(["quantize", "--model", str(sst2_teacher), "--output_dir", str(out), "--task_name", "SST-2",
                 "--data_dir", str(glue_copy), "--onnx", "--bf16", "--max_seq_length", "64", "--latency_seq_length", "32",
                 "--latency_repeats", "2"]) == 0
    return out


@pytest.mark.slow
def test_int8_and_bf16_teacher_lose_at_most_a_point_in_pytorch_and_onnxruntime(int8_teacher, glue_copy, tmp_path):
    summary = json.loads((int8_teacher / "quantize_summary.json").read_text())
    rows = {r["backend"]: r for r in summary["rows"]}
    assert list(rows) == ["pytorch fp32", "pytorch int8", "onnxruntime fp32", "onnxruntime int8", "pytorch bf16"]
    fp32 = rows["pytorch fp32"]["dev"]["acc"]
    assert rows["onnxruntime fp32"]["dev"]["acc"] == fp32
    for backend in ("pytorch int8", "onnxruntime int8", "pytorch bf16"):
        assert rows[backend]["dev"]["acc"] >= fp32 - 0.01, (backend, rows[backend]["dev"], fp32)
    # bf16 keeps 8 bits of mantissa: logits within BF16_LOGIT_TOLERANCE of fp32, the same label almost everywhere
    bf16 = summary["bf16"]["agreement"]
    assert bf16["max_abs_logit_diff"] <= BF16_LOGIT_TOLERANCE and bf16["same_prediction"] >= 0.98, bf16
    assert rows["pytorch bf16"]["size_on_disk_bytes"] < 0.55 * rows["pytorch fp32"]["size_on_disk_bytes"]
    assert summary["onnx"]["agreement"]["onnxruntime fp32"]["max_abs_logit_diff"] <= 1e-4
    # The quality claim is the accuracy bound above. ORT's and torch's int8 schemes quantize differently, so they
    # part on examples near the decision boundary: 96.5-100% agreement for teachers fine-tuned by equally sound code
    # (the float rounding of training decides which). A broken int8 graph agrees at about chance (50%).
    assert summary["onnx"]["agreement"]["onnxruntime int8"]["same_prediction"] >= 0.9
    assert rows["onnxruntime int8"]["size_on_disk_bytes"] < 0.4 * rows["onnxruntime fp32"]["size_on_disk_bytes"]
    config = json.loads((int8_teacher / "config.json").read_text())
    assert config["xcompress_quantization"]["method"] == "dynamic_int8"
    r = run_cli("evaluate", "--model", str(int8_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                "--output_dir", str(tmp_path), "--max_seq_length", "64", "--eval_batch_size", "64")
    # The int8 directory reloads exactly: the same batches give the same score. (Activations are quantized per
    # batch, so other batch sizes move a few predictions.)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "eval_results_SST-2.json").read_text())["dev"]["dev"]["acc"] == rows["pytorch int8"]["dev"]["acc"]
    r = run_cli("evaluate", "--model", str(int8_teacher / "bf16"), "--task_name", "SST-2", "--data_dir",
                str(glue_copy), "--output_dir", str(tmp_path / "bf16"), "--max_seq_length", "64", "--eval_batch_size", "64")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "bf16/eval_results_SST-2.json").read_text())["dev"]["dev"]["acc"] == rows["pytorch bf16"]["dev"]["acc"]


def test_td_factor_projections_fold_and_quantize(td_student, tmp_path):
    from safetensors.torch import load_file
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    from modeling import TuckerBertForSequenceClassification, fold_for_inference
    from modeling.int8 import load_quantized, quantize_, save_quantized

    model = TuckerBertForSequenceClassification.from_pretrained(str(td_student), num_labels=2).eval()
    ids = torch.randint(1000, 30000, (4, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        folded = fold_for_inference(copy.deepcopy(model))
        assert not hasattr(folded.bert.encoder, "factors")
        assert torch.allclose(folded(input_ids=ids, attention_mask=mask).logits, ref, atol=1e-5)
    quantize_(model)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert not linear and sum(isinstance(m, QLinear) for m in model.modules()) == 6 * 8 + 2  # 4 groups x 2 maps
    assert sum(isinstance(m, QEmbedding) for m in model.modules()) == 3  # words, positions, token types
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
    assert (out - ref).abs().max() < 0.05
    save_quantized(model, tmp_path)
    again = load_quantized(tmp_path, TuckerBertForSequenceClassification)
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, attention_mask=mask).logits, out)
    # Factorized on disk: the fp16 factors, not the folded int8 maps; smaller than the fp32 file.
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert stored["bert.encoder.stored_factors.G"].dtype == torch.float16
    assert not any(k.startswith("bert.encoder.layer.") and k.endswith("weight_int8") for k in stored)
    assert (tmp_path / "model.safetensors").stat().st_size < 0.35 * (td_student / "model.safetensors").stat().st_size
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(again)


@pytest.mark.slow
def test_report_lists_every_model_with_plots(sst2_teacher, int8_teacher, glue_copy, tmp_path):
    out = tmp_path / "report"
    r = run_cli("report", "--task_name", "SST-2", "--data_dir", str(glue_copy), "--output_dir", str(out),
                "--models", f"teacher={sst2_teacher},teacher int8={int8_teacher}", "--loss_logs",
                f"fine-tuning={sst2_teacher / 'log.jsonl'}", "--max_seq_length", "64", "--latency_seq_length", "32",
                "--latency_repeats", "2")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "report.json").read_text())
    labels = [row["label"] for row in summary["rows"]]
    assert labels == ["teacher", "teacher int8", "teacher, ONNX Runtime fp32", "teacher, ONNX Runtime int8"]
    assert summary["rows"][0]["percent_of_reference"] == 100.0
    assert all(row["latency_b1_s"] > 0 and row["size_on_disk_bytes"] > 0 for row in summary["rows"])
    md = (out / "report.md").read_text()
    smallest = min(summary["rows"], key=lambda row: row["size_on_disk_bytes"])
    assert "| teacher int8 | pytorch int8 |" in md and "Fastest at batch 1: " in md
    assert f"smallest: {smallest['label']} (" in md and "int8, score" in md.split("smallest: ")[1]
    assert {p.name for p in (out / "plots").iterdir()} == {"params_vs_score.png", "latency_vs_score.png",
                                                          "size_per_model.png", "loss_curves.png"}
    assert str(out / "report.md") in r.stdout


BAD = {
    "amount_out_of_range": (["prune", "--pruning_type", "unstructured", "--amount", "1.0"], "must be in [0, 1)"),
    "too_many_heads": (["prune", "--layer_num_heads", "12,12,12,12,12,13"], "cannot keep"),
    "rank_on_dense": (["prune", "--pruning_type", "rank", "--target_rank_dim", "64"], "rank pruning needs a TD model, not a dense encoder"),
    "no_target": (["prune"], "give --target_num_of_heads"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_pruning_input_exits_2_and_writes_nothing(case, sst2_teacher, glue_copy, tmp_path, capsys):
    args, message = BAD[case]
    out = tmp_path / "out"
    status = main([*args, "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                   "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_quantizing_a_quantized_model_is_refused(int8_teacher, tmp_path, capsys):
    assert main(["quantize", "--model", str(int8_teacher), "--output_dir", str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err and not (tmp_path / "again").exists()
    assert main(["quantize", "--model", str(int8_teacher / "bf16"), "--output_dir", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "stored in bfloat16" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "again").exists()


@pytest.mark.slow
def test_training_stages_refuse_int8_and_bf16_models(int8_teacher, td_student, glue_copy, tmp_path, capsys):
    """Unchecked, an int8 model crashed fine-tuning with a traceback and a bf16 one trained silently in bf16."""
    on_task = ["--task_name", "SST-2", "--data_dir", str(glue_copy)]
    for stored, model in (("int8", int8_teacher), ("bfloat16", int8_teacher / "bf16")):
        for args, flag in ((["finetune", "--model", str(model), *on_task], "--model"),
                           (["task-distill", "--teacher_model", str(model), "--student_model", str(td_student),
                             *on_task], "--teacher_model"),
                           (["prune", "--model", str(model), "--pruning_type", "vocabulary", *on_task], "--model"),
                           (["recover", "--teacher_model", str(model), "--student_model", str(td_student),
                             "--calibration_data", str(glue_copy / "SST-2")], "--teacher_model")):
            out = tmp_path / "out"
            assert main([*args, "--output_dir", str(out)]) == 2, args
            err = capsys.readouterr().err.strip()
            assert f"error: {flag} {model}: stored in {stored}; this stage needs the fp32 model" in err, err
            assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_vocabulary_pruning_keeps_every_prediction_on_the_task_text(sst2_teacher, glue_copy, tmp_path):
    from corpora.glue import get_task, read_examples
    from modeling.loading import load_tokenizer
    from tasks.classifier import predict_logits
    from tasks.features import encode

    out = tmp_path / "vocab"
    assert main(["prune", "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--pruning_type", "vocabulary", "--max_seq_length", "64", "--output_dir", str(out)]) == 0
    row = json.loads((out / "prune_summary.json").read_text())["rows"][0]
    assert row["texts_split_differently"] == 0 and row["max_dev_logit_change"] == 0.0
    config = json.loads((out / "config.json").read_text())
    kept = config["xcompress_vocabulary"]["kept"]
    assert config["vocab_size"] == kept < 30522 // 2 and config["xcompress_vocabulary"]["original_size"] == 30522
    assert row["size_on_disk_bytes"] < 0.7 * json.loads((out / "prune_summary.json").read_text())["original"]["size_on_disk_bytes"]
    assert len((out / "vocab.txt").read_text().splitlines()) == kept
    # Training sentences too (not only dev): the same logits from the pruned model and its renumbered tokenizer.
    task = get_task("SST-2")
    examples = read_examples(task, glue_copy / "SST-2/train.tsv")[:512]
    logits = {}
    for name, directory in (("original", sst2_teacher), ("pruned", out)):
        features = encode(task, examples, load_tokenizer(directory, "--model"), 64)
        logits[name] = predict_logits(_load(directory, task), features, 64)
    assert np.array_equal(logits["original"], logits["pruned"])
    # Text outside the task's files loses the pieces that were dropped, and evaluate says how many.
    other = tmp_path / "other/SST-2"
    other.mkdir(parents=True)
    (other / "dev.tsv").write_text("sentence\tlabel\nthe sushi bar in 東京 was splendid\t1\na good film\t1\n",
                                   encoding="utf-8")  # SST-2 has no CJK characters; the original vocabulary does
    r = run_cli("evaluate", "--model", str(out), "--task_name", "SST-2", "--data_dir", str(tmp_path / "other"),
                "--output_dir", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr
    unknown = json.loads((tmp_path / "eval/eval_results_SST-2.json").read_text())["unknown_pieces"]["dev"]
    assert unknown["unknown"] >= 1 and f"{unknown['unknown']} of {unknown['pieces']} pieces are [UNK]" in r.stdout


def test_vocabulary_pruning_of_a_td_model_keeps_its_outputs(td_student, tmp_path):
    from compress.prune_vocabulary import prune_embeddings_, write_tokenizer
    from modeling import TuckerBertForSequenceClassification
    from modeling.loading import load_tokenizer

    model = TuckerBertForSequenceClassification.from_pretrained(str(td_student), num_labels=2).eval()
    tokenizer = load_tokenizer(td_student, "--model")
    text = ["a gripping, well-acted thriller", "the plot is thin and the jokes fall flat"]
    original = tokenizer(text, padding=True, return_tensors="pt")
    keep = sorted(set(original["input_ids"].flatten().tolist()) | set(tokenizer.all_special_ids))
    with torch.no_grad():
        before = model(**original).logits
    prune_embeddings_(model, keep)
    write_tokenizer(tokenizer, keep, td_student, tmp_path)
    model.save_pretrained(tmp_path)
    again = TuckerBertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    renumbered = load_tokenizer(tmp_path, "--model")(text, padding=True, return_tensors="pt")
    assert again.config.vocab_size == len(keep) and renumbered["input_ids"].max() < len(keep)
    with torch.no_grad():
        assert torch.equal(again(**renumbered).logits, before)


@pytest.mark.slow
def test_vocabulary_pruning_needs_the_tokenizer(sst2_teacher, glue_copy, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((sst2_teacher / f).read_bytes())
    out = tmp_path / "out"
    status = main(["prune", "--model", str(bare), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                   "--pruning_type", "vocabulary", "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "no tokenizer" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
