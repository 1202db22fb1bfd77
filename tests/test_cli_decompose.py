"""`xcompress decompose` end to end on the embedded teacher, and its refusals of bad input."""
import json
import shutil

import pytest
from transformers import AutoModel

from modeling import TuckerBertModel
from stagekit.cli import main
from tests.conftest import REPO, run_cli


def _siblings(path):
    """Everything in the parent directory named after `path` (temporaries included)."""
    return sorted(p.name for p in path.parent.iterdir() if path.name in p.name)


def test_console_script_writes_a_loadable_td_directory(tmp_path):
    out = tmp_path / "td"
    res = run_cli("decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "64",
                  "--output_dir", str(out))
    assert res.returncode == 0, res.stderr
    assert "encoder params" in res.stdout
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "decompose_summary.json",
                 "decompose_config.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "decompose_summary.json").read_text())
    assert summary["teacher_encoder_params"] == 10_637_568
    assert summary["student_encoder_params"] == 12 * 64 * 64 + 2 * 384 * 64 + 72 * 12 + 6 * 9 * 384
    assert summary["compression_ratio"] == pytest.approx(10_637_568 / summary["student_encoder_params"])
    assert 0 < summary["relative_error"] < 1
    assert set(summary["relative_error_by_type"]) == {"Q", "K", "V", "O", "FFN_in", "FFN_out"}
    for key in ("seconds", "config", "size_on_disk_bytes"):
        assert key in summary
    assert summary["config"]["rank_layer"] == 12 and summary["config"]["ops"] == "san_ffn"
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, TuckerBertModel) and model.config.rank_dim == 64
    assert _siblings(out) == ["td"]


def test_python_m_with_dashed_flags_and_shipped_config(tmp_path):
    out = tmp_path / "td"
    res = run_cli("--teacher-model", "all-MiniLM-L6-v2", "--config", str(REPO / "models/minilm-td-36-64/config.json"),
                  "--ops", "san", "--rank-layer", "8", "--output-dir", str(out), module="decompose")
    assert res.returncode == 0, res.stderr
    cfg = json.loads((out / "config.json").read_text())
    # Flags win over --config; what the flag leaves out comes from the file.
    assert (cfg["rank_layer"], cfg["rank_dim"], cfg["ops"]) == (8, 64, "san")


def test_hooi_init_and_overwrite(tmp_path, capsys):
    out = tmp_path / "td"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    args = ["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "6", "--rank_dim", "32",
            "--ops", "san", "--init", "hooi", "--output_dir", str(out)]
    assert main(args) == 2
    assert (out / "keep.txt").read_text() == "user file"
    assert main(args + ["--overwrite_output_dir"]) == 0
    summary = json.loads((out / "decompose_summary.json").read_text())
    assert summary["init"] == "hooi" and summary["hooi_iterations"] >= 1
    assert not (out / "keep.txt").exists()
    assert _siblings(out) == ["td"]


def _bert_like(tmp_path, teacher_dir, **changes):
    """A copy of the teacher's config (weights linked) with some fields changed."""
    d = tmp_path / "teacher"
    d.mkdir()
    cfg = json.loads((teacher_dir / "config.json").read_text()) | changes
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").symlink_to(teacher_dir / "model.safetensors")
    return d


BAD_INPUTS = {
    "missing_teacher": (lambda tmp, t: ["--teacher_model", str(tmp / "nope")], "no such directory"),
    "hub_name": (lambda tmp, t: ["--teacher_model", "bert-base-uncased"], "never downloaded"),
    "not_bert": (lambda tmp, t: ["--teacher_model", str(_bert_like(tmp, t, model_type="gpt2"))], "model_type is 'gpt2'"),
    "not_4h": (lambda tmp, t: ["--teacher_model", str(_bert_like(tmp, t, intermediate_size=1024))], "not 4 x hidden_size"),
    "rank_dim_gt_h": (lambda tmp, t: ["--teacher_model", "all-MiniLM-L6-v2", "--rank_dim", "385"], "--rank_dim 385"),
    "rank_layer_gt_blocks": (lambda tmp, t: ["--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "73"], "--rank_layer 73"),
    "corrupt_config": (lambda tmp, t: ["--teacher_model", str(_corrupt_config(tmp))], "cannot read config"),
    "corrupt_weights": (lambda tmp, t: ["--teacher_model", str(_corrupt_weights(tmp, t))], "cannot load weights"),
    "td_as_teacher": (lambda tmp, t: ["--teacher_model", str(_bert_like(tmp, t, model_type="tucker_bert"))], "a TD model (tucker_bert), not a dense encoder"),
    "config_other_geometry": (lambda tmp, t: ["--teacher_model", "all-MiniLM-L6-v2", "--config",
                                              str(REPO / "models/bert-td-72-384/config.json")], "hidden_size is 768"),
}


def _corrupt_config(tmp):
    d = tmp / "broken"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    return d


def _corrupt_weights(tmp, teacher_dir):
    d = tmp / "truncated"
    d.mkdir()
    shutil.copy(teacher_dir / "config.json", d / "config.json")
    (d / "model.safetensors").write_bytes((teacher_dir / "model.safetensors").read_bytes()[:4096])
    return d


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, teacher_dir, capsys):
    make_args, expected = BAD_INPUTS[case]
    out = tmp_path / "out"
    args = make_args(tmp_path, teacher_dir)
    if "--rank_layer" not in args:
        args += ["--rank_layer", "12"]
    if "--rank_dim" not in args and "--config" not in args:
        args += ["--rank_dim", "64"]
    assert main(["decompose", *args, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xcompress decompose: error: ") and expected in err[0], err
    assert not out.exists() and _siblings(out) == []


def test_bad_flag_value_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["decompose", "--teacher_model", "x", "--output_dir", "y", "--rank_layer", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rank_layer" in err[0]


def test_missing_ranks_are_refused(tmp_path, capsys):
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--output_dir", str(tmp_path / "o")]) == 2
    assert "--rank_layer and --rank_dim are required" in capsys.readouterr().err


SST2 = REPO / "data/glue_data/SST-2"


def _decompose(out, *args):
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", *args, "--output_dir", str(out)]) == 0
    return json.loads((out / "decompose_summary.json").read_text())


@pytest.fixture(scope="module")
def plain_and_calibrated(tmp_path_factory):
    """The 1/7 student decomposed plainly and calibrated on SST-2 training sentences; both measured on the same
    128 SST-2 dev sentences."""
    d = tmp_path_factory.mktemp("calibration")
    common = ["--config", str(REPO / "models/minilm-td-36-192"), "--functional_data", str(SST2)]
    plain = _decompose(d / "plain", *common)
    calibrated = _decompose(d / "calibrated", *common, "--calibration_data", str(SST2), "--calibration_examples", "256")
    return plain, calibrated


def test_every_decomposition_reports_its_functional_error(plain_and_calibrated):
    plain, _ = plain_and_calibrated
    f = plain["functional_error"]
    assert f["sequences"] == 128 and len(f["per_layer"]) == 6 and f["overall"] == f["per_layer"][-1] > 0
    assert plain["calibration"] is None


def test_calibration_lowers_the_functional_error(plain_and_calibrated):
    plain, calibrated = plain_and_calibrated
    assert calibrated["functional_error"]["overall"] < 0.8 * plain["functional_error"]["overall"]
    c = calibrated["calibration"]
    assert c["sequences"] == 256 and c["tokens"] > 2000
    # Whitening beats the plain fit on the blocks' own outputs, and least squares never makes it worse.
    sweeps = c["output_error_by_sweep"]
    assert sweeps[0] < c["output_error_plain"] and all(b <= a + 1e-9 for a, b in zip(sweeps, sweeps[1:]))


def test_full_ranks_with_calibration_reproduce_the_teacher(tmp_path, teacher):
    import torch

    out = tmp_path / "full"
    summary = _decompose(out, "--rank_layer", "72", "--rank_dim", "384", "--calibration_data", str(SST2),
                         "--calibration_examples", "64", "--held_out_examples", "16", "--calibration_sweeps", "1")
    assert summary["functional_error"]["overall"] < 1e-4
    student = TuckerBertModel.from_pretrained(out).eval()
    ids = torch.randint(1000, 30000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = student(input_ids=ids).last_hidden_state - teacher(input_ids=ids).last_hidden_state
    assert float(diff.abs().max()) < 1e-4


def _other_vocab_epochs(tmp):
    d = tmp / "epochs"
    d.mkdir()
    row = {"tokens": ["[CLS]", "zzzunknownzzz", "[SEP]"], "segment_ids": [0, 0, 0], "is_random_next": False,
           "masked_lm_positions": [], "masked_lm_labels": []}
    (d / "epoch_0.json").write_text(json.dumps(row) + "\n")
    return d


def _text(tmp, text):
    (tmp / "cal.txt").write_bytes(text)
    return tmp / "cal.txt"


BAD_CALIBRATION = {
    "missing": (lambda tmp: tmp / "nowhere", "--calibration_data", "no such file or directory"),
    "empty": (lambda tmp: _text(tmp, b"\n\n"), "--calibration_data", "no text in it"),
    "not_text": (lambda tmp: _text(tmp, b"\xff\xfe\x00binary"), "--calibration_data", "not UTF-8 text"),
    "other_vocabulary": (_other_vocab_epochs, "--calibration_data", "not a pre-generated example of this vocabulary"),
    "too_small": (lambda tmp: _text(tmp, b"one short line.\nand another.\n"), "--calibration_data", "too few"),
    "not_a_source": (lambda tmp: tmp, "--calibration_data", "expected pre-generated epochs"),
}


def test_calibration_with_tensorly_init_is_refused(tmp_path, capsys):
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "64",
                 "--init", "hooi", "--calibration_data", str(SST2), "--output_dir", str(tmp_path / "o")]) == 2
    assert "--init hooi: the calibrated fit starts from the fast initialisation" in capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(BAD_CALIBRATION))
def test_bad_calibration_data_is_one_line_exit_2(case, tmp_path, capsys):
    make, flag, expected = BAD_CALIBRATION[case]
    source = make(tmp_path)
    out = tmp_path / "out"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "64",
                 "--calibration_data", str(source), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"xcompress decompose: error: {flag} ") and expected in err[0], err
    assert not out.exists()
