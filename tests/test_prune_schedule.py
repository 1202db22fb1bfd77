"""prune-schedule on a small T5 trained here on the shipped corpus: each part reaches its amount and keeps it through
the later parts' fine-tuning, a stopped run resumes after its last finished part, the compact file is as small as
the goal says and loads back to the same weights, and bad schedules are one line."""
import json

import pytest
import torch

from compress.prune_schedule import PruneScheduleConfig
from compress.prune_targets import part_sparsity
from compress.prune_schedule import run as prune_schedule
from modeling.families import SEQ2SEQ_FAMILIES
from modeling.formats import GENERATOR
from modeling.loading import load_model
from modeling.sparse_storage import SPARSE_WEIGHTS, load_sparse, save_sparse
from stagekit.cli import main
from tests.conftest import CORPUS

SCHEDULE = "self_attention:0.9:0.05,cross_attention:0.4:0.05,feed_forward:0.7:0.05,lm_head:0.8:0.05"
FAST = ["--max_train_examples", "1600", "--max_eval_examples", "32", "--generation_max_length", "8",
        "--learning_rate", "3e-3", "--quiet"]


def test_each_part_reaches_its_amount_and_keeps_it(t5_de, tmp_path):
    out = tmp_path / "pruned"
    assert main(["prune-schedule", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(out), "--schedule", SCHEDULE, *FAST]) == 0
    summary = json.loads((out / "prune_schedule_summary.json").read_text())
    asked = {s.split(":")[0]: float(s.split(":")[1]) for s in SCHEDULE.split(",")}
    assert [p["part"] for p in summary["parts"]] == list(asked)
    # After part k, parts 1..k are at their amounts (within one weight of rounding) and later parts untouched.
    for k, record in enumerate(summary["parts"]):
        for j, (part, amount) in enumerate(asked.items()):
            s = record["sparsity"][part]["sparsity"]
            assert (abs(s - amount) < 0.005) if j <= k else s < 0.01, (record["part"], part, s)
    # The final model, read back from the compact file, holds the same zeros.
    model, _ = load_model(str(out), "--model", GENERATOR)
    final = part_sparsity(model, SEQ2SEQ_FAMILIES["t5"])
    assert {p: round(final[p]["sparsity"], 6) for p in asked} == {
        p: round(summary["sparsity"][p]["sparsity"], 6) for p in asked}
    overall = summary["sparsity"]["all"]["sparsity"]
    assert summary["bytes"] <= 1.2 * (1 - overall) * summary["original_bytes"], summary
    assert not (out / "model.safetensors").exists() and (out / SPARSE_WEIGHTS).is_file()
    lines = (out / "training_stats.csv").read_text().splitlines()
    assert lines[0] == "part,step,epoch,train_loss,val_loss,score,cpu_seconds" and len(lines) == 1 + 4 * 2
    assert (out / "loss.png").stat().st_size > 0 and "| lm_head | 80% | unstructured |" in (out / "prune_schedule_results.md").read_text()
    assert not (tmp_path / ".pruned.partial").exists()
    # The report stage takes text-to-text models: score by generation, time per sentence, size as stored, zeros.
    assert main(["report", "--task_name", "text", "--data_dir", str(CORPUS), "--output_dir", str(tmp_path / "report"),
                 "--models", f"dense={t5_de},pruned={out}", "--max_eval_examples", "16", "--generation_max_length", "8",
                 "--latency_examples", "4"]) == 0
    rows = {r["label"]: r for r in json.loads((tmp_path / "report/report.json").read_text())["rows"]}
    assert rows["pruned"]["size_on_disk_bytes"] == summary["bytes"] and rows["dense"]["sparsity"] == 0
    assert rows["pruned"]["sparsity"] == pytest.approx(overall)
    assert all(r["latency_b1_s"] > 0 and r["latency_b32_s"] > 0 for r in rows.values())


def test_a_stopped_schedule_resumes_after_its_last_finished_part(t5_de, tmp_path, monkeypatch):
    """The second part's fine-tuning is interrupted; the same command resumes there and ends as an uninterrupted run."""
    import text2text.finetune as finetune_module

    out = tmp_path / "pruned"
    cfg = PruneScheduleConfig(model=str(t5_de), task_name="text", data_dir=str(CORPUS), output_dir=str(out),
                              schedule="self_attention:0.5:0.05,feed_forward:0.5:0.05", max_train_examples=1600,
                              max_eval_examples=32, generation_max_length=8, learning_rate=3e-3, quiet=True)
    real, calls = finetune_module.run, []

    def interrupted(c):
        calls.append(c.model)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(c)

    monkeypatch.setattr("compress.prune_targets.finetune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prune_schedule(cfg)
    assert not out.exists()
    state = json.loads((tmp_path / ".pruned.partial/schedule_state.json").read_text())
    assert [p["part"] for p in state["done"]] == ["self_attention"]
    monkeypatch.setattr("compress.prune_targets.finetune", real)
    summary = prune_schedule(cfg)
    assert [p["part"] for p in summary["parts"]] == ["self_attention", "feed_forward"]
    assert summary["parts"][0] == state["done"][0]  # the finished part was not run again
    assert abs(summary["sparsity"]["feed_forward"]["sparsity"] - 0.5) < 0.005


def test_compact_storage_round_trips_and_writes_tied_weights_once(t5_de, tmp_path):
    model, _ = load_model(str(t5_de), "--model", GENERATOR)
    torch.nn.utils.prune.l1_unstructured(model.lm_head, "weight", amount=0.75)
    torch.nn.utils.prune.remove(model.lm_head, "weight")
    path = save_sparse(model, tmp_path)
    state = load_sparse(path)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert state["lm_head.weight"] is state["shared.weight"]  # tied: stored once, shared again on reading
    unique = {v.data_ptr(): v for v in model.state_dict().values()}.values()
    dense_bytes, n = sum(v.numel() * 4 for v in unique), model.shared.weight.numel()
    # The tied matrix costs a bit per entry and its quarter of non-zero values; the rest is as it was.
    assert path.stat().st_size < dense_bytes - 4 * n + n / 8 + 0.25 * 4 * n + 50_000

@pytest.mark.parametrize("schedule, expected", [
    ("self_attention:0.9", "'self_attention:0.9' is not part:amount:epochs"),
    ("attention:0.5:1", "'attention' is no part of a t5 model (self_attention, cross_attention, feed_forward, lm_head)"),
    ("lm_head:1.0:1", "'lm_head:1.0:1': the amount is a fraction in [0, 1)"),
    ("lm_head:0.5:0", "'lm_head:0.5:0': each part is fine-tuned for more than 0 epochs"),
    ("lm_head:0.5:1,lm_head:0.2:1", "'lm_head' is named twice"),
])
def test_bad_schedules_are_one_line(schedule, expected, t5_de, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune-schedule", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(out), "--schedule", schedule]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


ENCODER_SCHEDULE = "ffn:0.6:0.1,attention:0.5:0.1,embeddings:0.3:0.1,classifier:0.2:0.1"


def test_an_encoder_is_pruned_part_by_part(sst2_teacher, glue_copy, tmp_path):
    """The same command on a fine-tuned MiniLM SST-2 model: its weight groups are the parts, each reaches its amount
    and keeps it, the dev score (accuracy on all 872 dev sentences) and validation loss are recorded around every
    part's fine-tuning, and the compact file loads back as the classifier it was."""
    from compress.prune_unstructured import sparsity
    from corpora.glue import get_task
    from tasks.classifier import load_classifier

    out = tmp_path / "pruned"
    assert main(["prune-schedule", "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--schedule", ENCODER_SCHEDULE, "--max_train_examples", "640",
                 "--eval_steps", "1", "--max_seq_length", "64", "--quiet"]) == 0
    summary = json.loads((out / "prune_schedule_summary.json").read_text())
    asked = {s.split(":")[0]: float(s.split(":")[1]) for s in ENCODER_SCHEDULE.split(",")}
    assert summary["family"] == "bert" and summary["learning_rate"] == 2e-5
    for k, record in enumerate(summary["parts"]):
        for j, (part, amount) in enumerate(asked.items()):
            s = record["sparsity"][part]["sparsity"]
            assert (abs(s - amount) < 0.005) if j <= k else s < 0.01, (record["part"], part, s)
        assert record["steps"] == 2 and [h["step"] for h in record["history"]] == [0, 1, 2]
        assert all(h["val_loss"] > 0 for h in record["history"]) and record["history"][-1]["train_loss"] > 0
        assert 0.5 < record["score"] <= 1 and record["score"] == record["dev"]["acc"]
    assert 0.5 < summary["original"]["score"] and summary["original"]["val_loss"] > 0
    model, _ = load_classifier(str(out), "--model", get_task("SST-2"), need_task_model=True)
    final = sparsity(model)
    assert {p: round(final[p]["sparsity"], 6) for p in asked} == {
        p: round(summary["sparsity"][p]["sparsity"], 6) for p in asked}
    assert not (out / "model.safetensors").exists() and (out / SPARSE_WEIGHTS).is_file()
    assert summary["bytes"] < 0.75 * summary["original_bytes"], summary
    lines = (out / "training_stats.csv").read_text().splitlines()
    assert lines[0] == "part,step,epoch,train_loss,val_loss,score,cpu_seconds" and len(lines) == 1 + 4 * 3
    assert (out / "loss.png").stat().st_size > 0 and "| classifier | 20% | unstructured |" in (out / "prune_schedule_results.md").read_text()


@pytest.mark.parametrize("args, expected", [
    (["--task_name", "SST-2", "--schedule", "self_attention:0.5:1"],
     "'self_attention' is no part of a bert model (attention, ffn, embeddings, classifier)"),
    (["--task_name", "text", "--schedule", "ffn:0.5:1"], "an encoder; --task_name text is for text-to-text models"),
])
def test_an_encoder_schedule_names_encoder_parts(args, expected, sst2_teacher, glue_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune-schedule", "--model", str(sst2_teacher), "--data_dir", str(glue_copy), "--output_dir", str(out),
                 *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_kernel_shapes_on_an_encoder(sst2_teacher, glue_copy, tmp_path):
    """Whole FFN neurons and heads removed (a smaller model, the pruned format), 2:4 zeros in the embeddings that
    fine-tuning keeps, and each part's share gone as asked."""
    from compress.prune_structured import current_sizes
    from corpora.glue import get_task
    from tasks.classifier import load_classifier

    out = tmp_path / "shaped"
    schedule = "ffn:0.5:0.1:rows,attention:0.5:0.1:heads,embeddings:0.5:0.1:2of4"
    assert main(["prune-schedule", "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--schedule", schedule, "--max_train_examples", "640", "--eval_steps", "2",
                 "--max_seq_length", "64", "--quiet"]) == 0
    summary = json.loads((out / "prune_schedule_summary.json").read_text())
    model, _ = load_classifier(str(out), "--model", get_task("SST-2"), need_task_model=True)
    heads, ffn = current_sizes(model)
    assert sum(heads) == 36 and sum(ffn) == 6 * 768, (heads, ffn)  # half of 6 x 12 heads and 6 x 1536 neurons
    for part in ("ffn", "attention", "embeddings"):
        assert abs(summary["reduction"][part] - 0.5) < 0.005, summary["reduction"]
    words = model.bert.embeddings.word_embeddings.weight.detach().view(-1, 4)
    assert bool(((words != 0).sum(1) <= 2).all())  # every four inputs keep at most two weights
    assert [r["shape"] for r in summary["parts"]] == ["rows", "heads", "2of4"]
    assert summary["parts"][-1]["score"] > 0.5


def test_whole_feed_forward_rows_of_a_t5_load_in_plain_transformers(t5_de, tmp_path):
    """`rows` on T5's feed-forward keeps the same neurons in every block, so d_ff shrinks and transformers' own
    class loads the (dense-stored) result; 2:4 on self-attention keeps two of every four weights."""
    from transformers import T5ForConditionalGeneration

    out = tmp_path / "rows"
    assert main(["prune-schedule", "--model", str(t5_de), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(out), "--schedule", "feed_forward:0.5:0.05:rows,self_attention:0.5:0.05:2of4",
                 "--store", "dense", *FAST]) == 0
    model = T5ForConditionalGeneration.from_pretrained(str(out))
    original = T5ForConditionalGeneration.from_pretrained(str(t5_de))
    assert model.config.d_ff == original.config.d_ff // 2
    assert model.encoder.block[0].layer[1].DenseReluDense.wi.weight.shape == (original.config.d_ff // 2, 64)
    for name, m in SEQ2SEQ_FAMILIES["t5"].part_modules(model, "self_attention").items():
        assert bool(((m.weight.detach().view(-1, 4) != 0).sum(1) <= 2).all()), name
    summary = json.loads((out / "prune_schedule_summary.json").read_text())
    assert summary["reduction"]["feed_forward"] == pytest.approx(0.5) and summary["parts"][0]["score"] >= 0


@pytest.mark.parametrize("schedule, expected", [
    ("ffn:0.5:1:heads", "'ffn:0.5:1:heads': ffn is pruned in these shapes: unstructured, 2of4, rows"),
    ("attention:0.3:1:2of4", "2of4 zeroes exactly half the weights (amount 0.5)"),
])
def test_a_shape_the_part_lacks_is_refused(schedule, expected, sst2_teacher, glue_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune-schedule", "--model", str(sst2_teacher), "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--schedule", schedule]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()
