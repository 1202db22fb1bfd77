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
    "td_as_teacher": (lambda tmp, t: ["--teacher_model", str(_bert_like(tmp, t, model_type="tucker_bert"))], "a TD model (tucker_bert), not a dense BERT"),
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
