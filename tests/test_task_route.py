"""The task-aware route on real models and data: a fine-tuned teacher decomposes into a task student (pooler and
classifier kept) that evaluates, recovers and distills as a task model; a teacher of another task is refused; a
run whose predictions collapse to a constant says so."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from corpora.glue import get_task
from stagekit.cli import main
from tasks.classifier import load_classifier
from tests.conftest import FAST

pytestmark = pytest.mark.slow  # the fine-tuned SST-2 teacher is trained first


@pytest.fixture(scope="module")
def task_student(sst2_teacher, glue_copy, tmp_path_factory):
    """The SST-2 teacher at full ranks, calibrated on SST-2: the same network, now a TD task model."""
    out = tmp_path_factory.mktemp("task-route") / "td-full"
    assert main(["decompose", "--teacher_model", str(sst2_teacher), "--rank_layer", "72", "--rank_dim", "384",
                 "--calibration_data", str(glue_copy / "SST-2"), "--calibration_examples", "64",
                 "--held_out_examples", "16", "--calibration_sweeps", "1", "--max_seq_length", "64",
                 "--output_dir", str(out)]) == 0
    return out


def test_a_task_teacher_decomposes_into_a_task_student(task_student, sst2_teacher):
    config = json.loads((task_student / "config.json").read_text())
    assert config["architectures"] == ["TuckerBertForSequenceClassification"]
    assert config["finetuning_task"] == "SST-2" and len(config["id2label"]) == 2
    summary = json.loads((task_student / "decompose_summary.json").read_text())
    assert summary["task_model"] and summary["functional_error"]["overall"] < 1e-4
    task = get_task("SST-2")
    student, _ = load_classifier(str(task_student), "--model", task, need_task_model=True)
    teacher, _ = load_classifier(str(sst2_teacher), "--model", task, need_task_model=True)
    ids = torch.randint(1000, 30000, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = student(input_ids=ids).logits - teacher(input_ids=ids).logits
    assert float(diff.abs().max()) < 1e-4


def test_recovery_keeps_the_classifier(task_student, sst2_teacher, glue_copy, tmp_path):
    out = tmp_path / "recovered"
    assert main(["recover", "--teacher_model", str(sst2_teacher), "--student_model", str(task_student),
                 "--calibration_data", str(glue_copy / "SST-2"), "--calibration_examples", "64",
                 "--held_out_examples", "16", "--max_steps", "2", "--max_seq_length", "32", "--quiet",
                 "--output_dir", str(out)]) == 0
    before, after = load_file(task_student / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after)
    for name in ("classifier.weight", "classifier.bias", "bert.pooler.dense.weight"):
        assert torch.equal(before[name], after[name]), name
    assert json.loads((out / "config.json").read_text())["finetuning_task"] == "SST-2"


def test_a_teacher_of_another_task_is_refused(sst2_teacher, glue_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["decompose", "--teacher_model", str(sst2_teacher), "--rank_layer", "12", "--rank_dim", "64",
                 "--calibration_data", str(glue_copy / "STS-B"), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a task model for SST-2 (2 label(s)), but --calibration_data" in err[0], err
    assert "is STS-B (1 label(s))" in err[0] and not out.exists()


def test_a_collapsed_run_says_so(glue_copy, tmp_path):
    """A learning rate far too high drives STS-B predictions to a constant: the log, the summary and the report
    line say so instead of a bare 0.00."""
    out = tmp_path / "collapsed"
    assert main(["finetune", "--model", "all-MiniLM-L6-v2", "--task_name", "STS-B", "--data_dir", str(glue_copy),
                 "--learning_rate", "0.3", "--max_steps", "12", "--max_train_examples", "384", "--eval_step", "12",
                 "--output_dir", str(out), *FAST]) == 0
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert "collapsed" in summary["collapsed"]["dev"] or "not finite" in summary["collapsed"]["dev"]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("collapsed" in r for r in logged)


def test_a_collapse_restarts_from_the_last_sound_model(glue_copy, tmp_path):
    """The same rate collapses the run at its first evaluation; it restarts from the model it started with at the
    rate times --collapse_lr_factor (a sane 9e-5), with fresh Adam moments, and learns instead of spending the
    remaining two thirds of its budget on a constant."""
    out = tmp_path / "restarted"
    assert main(["finetune", "--model", "all-MiniLM-L6-v2", "--task_name", "STS-B", "--data_dir", str(glue_copy),
                 "--learning_rate", "0.3", "--collapse_lr_factor", "0.0003", "--max_steps", "36",
                 "--max_train_examples", "384", "--eval_step", "12", "--output_dir", str(out), *FAST]) == 0
    phase = json.loads((out / "finetune_summary.json").read_text())["phases"][0]
    [restart] = phase["restarts"]
    assert restart["step"] == 12 and restart["from_step"] == 0 and abs(restart["learning_rate"] - 9e-5) < 1e-12
    history = phase["dev_history"]
    assert "collapsed" in history[0] and all("collapsed" not in h for h in history[1:])
    assert phase["best_step"] in (24, 36) and phase["best_dev"]["score"] > 0.05
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["restart"]["step"] for r in logged if "restart" in r] == [12]


def test_a_td_student_learns_stsb(glue_copy, tmp_path):
    """The TD regression path learns STS-B: the embedded teacher factorized at full ranks (the same function in
    shared factors, so factor-space training is all that is tested) fine-tuned for 90 steps on 2,000 rows reaches a
    dev correlation of 0.65 (0.81 after 186). At 1/7 the MiniLM student does not, for want of rank: README."""
    td, out = tmp_path / "td-full", tmp_path / "stsb"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "72", "--rank_dim", "384",
                 "--output_dir", str(td)]) == 0
    assert main(["finetune", "--model", str(td), "--task_name", "STS-B", "--data_dir", str(glue_copy),
                 "--max_train_examples", "2000", "--max_steps", "90", "--learning_rate", "1e-4", "--eval_step", "90",
                 "--output_dir", str(out), *FAST]) == 0
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["dev"]["dev"]["score"] > 0.5 and not summary["collapsed"], summary["dev"]


def test_a_phase_that_starts_collapsed_trains_on_instead_of_restarting(sst2_teacher, glue_copy, tmp_path):
    """A student whose head starts as a constant predictor (zeroed here; a one-layer dense student's after its
    layer-wise phase) is collapsed at step 0: there is no sound model to go back to, so the phase trains on at its
    own rate and learns, where restarting from step 0 at lower rates held SST-2's one-layer student at one class."""
    student = tmp_path / "student"
    shutil.copytree(sst2_teacher, student)
    weights = load_file(student / "model.safetensors")
    save_file({k: torch.zeros_like(v) if k.startswith("classifier.") else v for k, v in weights.items()},
              student / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "td"
    assert main(["task-distill", "--teacher_model", str(sst2_teacher), "--student_model", str(student),
                 "--task_name", "SST-2", "--data_dir", str(glue_copy), "--stage", "prediction", "--max_steps", "40",
                 "--eval_step", "20", "--max_train_examples", "1280", "--learning_rate", "1e-4",
                 "--output_dir", str(out), *FAST]) == 0
    phase = json.loads((out / "task_distill_summary.json").read_text())["phases"][0]
    assert "collapsed" in phase["dev_history"][0] and phase["dev_history"][0]["step"] == 0
    assert phase["restarts"] == [] and "collapsed" not in phase["dev_history"][-1]
    assert phase["best_dev"]["score"] > 0.6, phase["dev_history"]


def test_ema_decay_scores_and_keeps_the_moving_average(glue_copy, teacher_dir, tmp_path):
    """--ema_decay: the same run (same seed, same batches) with the moving average of its weights kept. Training is
    untouched, so the run without it ends at the weights the average follows; the average lies between the start
    and those weights, and it is what the output holds and the summary scores."""
    runs = {}
    for decay in ("0", "0.9"):
        out = tmp_path / f"ema-{decay}"
        assert main(["finetune", "--model", "all-MiniLM-L6-v2", "--task_name", "SST-2", "--data_dir", str(glue_copy),
                     "--max_train_examples", "640", "--max_steps", "20", "--eval_step", "20", "--learning_rate", "1e-4",
                     "--ema_decay", decay, "--output_dir", str(out), *FAST]) == 0
        runs[decay] = out
    start = load_file(teacher_dir / "model.safetensors")
    raw, averaged = (load_file(runs[d] / "model.safetensors") for d in ("0", "0.9"))
    for name in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.5.output.dense.weight"):
        first, last, mean = start[name], raw[f"bert.{name}"], averaged[f"bert.{name}"]
        assert 0 < float((mean - first).norm()) < float((last - first).norm()), name
    assert json.loads((runs["0.9"] / "finetune_config.json").read_text())["ema_decay"] == 0.9
    summaries = [json.loads((runs[d] / "finetune_summary.json").read_text()) for d in ("0", "0.9")]
    assert summaries[0]["dev"] != summaries[1]["dev"]  # each scores what it keeps
