"""Layer-wise recovery on the real teacher and real SST-2 text: it lowers the functional error it reports, the
recovered directory loads, and bad input is refused before anything is written."""
from __future__ import annotations

import json

import pytest

from modeling import TuckerBertModel
from stagekit.cli import main
from tests.conftest import REPO

SST2 = REPO / "data/glue_data/SST-2"


def test_layerwise_recovery_lowers_the_functional_error(td_student, tmp_path):
    out = tmp_path / "recovered"
    assert main(["recover", "--teacher_model", "all-MiniLM-L6-v2", "--student_model", str(td_student),
                 "--calibration_data", str(SST2), "--calibration_examples", "256", "--held_out_examples", "64",
                 "--max_steps", "20", "--eval_steps", "10", "--quiet", "--output_dir", str(out)]) == 0
    summary = json.loads((out / "recover_summary.json").read_text())
    assert [c["step"] for c in summary["curve"]] == [0, 10, 20]
    assert summary["functional_error"] < 0.9 * summary["functional_error_before"]
    # What a classifier reads ([CLS]) is measured too; it moves more slowly than the average (1.25 -> 1.18 here).
    assert summary["cls_error"] < summary["cls_error_before"]
    assert summary["held_out_sequences"] == 64 and summary["train_sequences"] == 256
    assert isinstance(TuckerBertModel.from_pretrained(out), TuckerBertModel)
    assert (out / "vocab.txt").is_file() and (out / "recover_config.json").is_file()


def test_aug_train_recovers_on_the_augmented_rows(td_student, tmp_path):
    """--aug_train reads the task directory's train_aug.tsv, here 300 real SST-2 rows against the 1,000 of
    train.tsv's first rows that stand in for an augmented file (TinyBERT's augmented file keeps its originals first):
    the same request for 400 sequences finds only 240 in train.tsv (a fifth held out) and all 400 in train_aug.tsv."""
    data = tmp_path / "SST-2"
    data.mkdir()
    lines = (SST2 / "train.tsv").read_text().splitlines(keepends=True)
    (data / "train.tsv").write_text("".join(lines[:301]))
    (data / "train_aug.tsv").write_text("".join(lines[:1001]))
    sizes = {}
    for aug in (False, True):
        out = tmp_path / f"recovered-{aug}"
        assert main(["recover", "--teacher_model", "all-MiniLM-L6-v2", "--student_model", str(td_student),
                     "--calibration_data", str(data), "--calibration_examples", "400", "--held_out_examples", "64",
                     "--max_steps", "2", "--max_seq_length", "32", "--quiet", "--output_dir", str(out),
                     *(["--aug_train"] if aug else [])]) == 0
        summary = json.loads((out / "recover_summary.json").read_text())
        sizes[aug] = summary["train_sequences"], summary["held_out_sequences"]
        assert json.loads((out / "recover_config.json").read_text())["aug_train"] is aug
    assert sizes == {False: (240, 60), True: (400, 64)}


@pytest.mark.parametrize("case", ["dense_student", "missing_data", "bad_steps", "no_aug"])
def test_bad_input_is_one_line_exit_2(case, td_student, tmp_path, capsys):
    args = {"--teacher_model": "all-MiniLM-L6-v2", "--student_model": str(td_student), "--calibration_data": str(SST2)}
    expected = {"dense_student": "--student_model all-MiniLM-L6-v2: a dense encoder (bert), not a TD model",
                "missing_data": "--calibration_data", "bad_steps": "--max_steps 0: must be >= 1",
                "no_aug": f"--aug_train: --calibration_data {SST2} has no train_aug.tsv"}[case]
    extra = []
    if case == "dense_student":
        args["--student_model"] = "all-MiniLM-L6-v2"
    elif case == "missing_data":
        args["--calibration_data"] = str(tmp_path / "none")
    elif case == "bad_steps":
        extra = ["--max_steps", "0"]
    else:
        extra = ["--aug_train"]
    out = tmp_path / "out"
    argv = ["recover", *[x for kv in args.items() for x in kv], *extra, "--output_dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()
