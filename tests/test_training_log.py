"""Every training stage's progress as users of these tools read it: the validation loss beside the training loss
in log.jsonl and training_stats.csv, and the same scalars as TensorBoard event files (TensorBoard is installed by
scripts/setup.sh)."""
import csv
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stagekit.cli import main
from stagekit.training_log import TENSORBOARD_DIR, TrainingLog, tensorboard_available
from tests.conftest import REPO

WIKI = REPO / "data/wiki"


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_fine_tuned_encoder_logs_its_validation_loss(sst2_teacher):
    """The SST-2 teacher of the suite (finetune, 62 steps, dev every 1,000 steps and at the end)."""
    assert tensorboard_available()
    log = [json.loads(line) for line in (sst2_teacher / "log.jsonl").read_text().splitlines()]
    evaluated = [r for r in log if "dev" in r]
    assert evaluated and all(r["val_loss"] > 0 for r in evaluated)
    # The training loss fell, and the validation loss of the final model is below chance's ln 2.
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0] and evaluated[-1]["val_loss"] < 0.693
    scalars = _scalars(sst2_teacher / TENSORBOARD_DIR)
    assert {"finetune/loss", "finetune/val_loss", "finetune/dev/acc", "finetune/lr"} <= set(scalars)
    assert scalars["finetune/val_loss"][-1] == (evaluated[-1]["step"], pytest.approx(evaluated[-1]["val_loss"], rel=1e-6))
    rows = list(csv.DictReader((sst2_teacher / "training_stats.csv").open()))
    assert [r["phase"] for r in rows] == ["finetune"] * len(evaluated)
    assert float(rows[-1]["val_loss"]) == pytest.approx(evaluated[-1]["val_loss"], rel=1e-5)


def test_a_fine_tuned_t5_logs_its_validation_loss(t5_de):
    log = [json.loads(line) for line in (t5_de / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 200] and log[1]["val_loss"] < log[0]["val_loss"]
    scalars = _scalars(t5_de / TENSORBOARD_DIR)
    assert {"train_loss", "val_loss", "score", "metrics/bleu", "cpu_seconds"} <= set(scalars)
    assert [s for s, _ in scalars["val_loss"]] == [0, 200]
    # The log was written beside the output while the run lasted, and that directory became the output.
    assert not (t5_de.parent / f".{t5_de.name}.partial").exists()


@pytest.mark.slow
def test_general_distillation_logs_a_validation_loss_on_held_out_text(tmp_path):
    """Training text: the tiny dump; held-out: the 206-page sample. The two share some articles (each starts at the
    same pages), so this checks what is computed and written, not how well the student generalizes."""
    data = {}
    for name, dump in (("train", "enwiki-20250201-tiny.xml.bz2"), ("held_out", "enwiki-sample-206pages.xml.bz2")):
        data[name] = tmp_path / name
        assert main(["pregenerate", "--train_corpus", str(WIKI / dump), "--bert_model", "all-MiniLM-L6-v2",
                     "--do_lower_case", "--epochs_to_generate", "1", "--max_seq_len", "64", "--output_dir",
                     str(data[name]), "--quiet"]) == 0
    student, out = tmp_path / "td", tmp_path / "gd"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "32",
                 "--output_dir", str(student)]) == 0
    assert main(["general-distill", "--teacher_model", "all-MiniLM-L6-v2", "--student_model", str(student),
                 "--pregenerated_data", str(data["train"]), "--eval_data", str(data["held_out"]), "--eval_steps", "10",
                 "--max_eval_examples", "64", "--max_steps", "25", "--train_batch_size", "8", "--learning_rate", "1e-3",
                 "--log_steps", "5", "--output_dir", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "training_stats.csv").open()))
    # Before training, every 10 steps, and after the last.
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 25]
    assert rows[0]["train_loss"] == "" and all(float(r["train_loss"]) > 0 for r in rows[1:])
    val = [float(r["val_loss"]) for r in rows]
    assert val[-1] < 0.8 * val[0]
    summary = json.loads((out / "general_distill_summary.json").read_text())
    assert [r["val_loss"] for r in summary["validation"]] == pytest.approx(val, rel=1e-5)
    scalars = _scalars(out / TENSORBOARD_DIR)
    assert {"loss", "val_loss", "val_attention", "val_hidden"} <= set(scalars)
    assert [s for s, _ in scalars["val_loss"]] == [0, 10, 20, 25]


def test_records_become_scalars_named_by_phase(tmp_path):
    log = TrainingLog(tmp_path)
    log.write({"phase": "prediction", "step": 10, "loss": 0.5, "dev": {"acc": 0.75}, "collapsed": "text", "ok": True})
    log.write({"step": 20, "loss": 0.25})
    log.close()
    assert _scalars(tmp_path / TENSORBOARD_DIR) == {"prediction/loss": [(10, 0.5)], "prediction/dev/acc": [(10, 0.75)],
                                                    "loss": [(20, 0.25)]}
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
