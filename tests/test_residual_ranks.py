"""Layers with their own low-rank correction beside the shared factors (`xcompress decompose --residual_ranks`): the
budget spent where the signal forms, counted in the encoder's parameters, carried through loading, folding and int8."""
import copy
import json

import pytest
import torch
from transformers import AutoModel

from modeling import TuckerBertModel, fold_for_inference
from modeling.params import encoder_params
from stagekit.cli import main
from tests.conftest import REPO

SST2 = REPO / "data/glue_data/SST-2"
H = 384


def _decompose(out, *args) -> dict:
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", *args, "--output_dir", str(out), "--quiet"]) == 0
    return json.loads((out / "decompose_summary.json").read_text())


def _hidden(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


IDS = torch.randint(1000, 30000, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("calibrated", [False, True], ids=["plain", "calibrated"])
def test_full_rank_corrections_reproduce_the_teacher_from_a_tiny_core(calibrated, tmp_path, teacher):
    """A correction of rank h holds all that a tiny shared core (l = 2, d = 8) misses in every projection, so the
    student is the teacher again: the corrections sit in the right blocks, and the calibrated fit's whitening is
    undone exactly."""
    text = ["--calibration_data", str(SST2), "--calibration_examples", "64", "--held_out_examples", "16",
            "--calibration_sweeps", "1"] if calibrated else []
    summary = _decompose(tmp_path / "td", "--rank_layer", "2", "--rank_dim", "8", "--residual_ranks",
                         ",".join(f"{layer}:{H}" for layer in range(6)), *text)
    assert summary["relative_error"] < 1e-5 and summary["config"]["residual_ranks"] == [H] * 6
    student = TuckerBertModel.from_pretrained(tmp_path / "td").eval()
    assert float((_hidden(student, IDS) - _hidden(teacher, IDS)).abs().max()) < 1e-4


@pytest.fixture(scope="module")
def uniform_and_front(tmp_path_factory):
    """The same shared core (l = 36, d = 160) calibrated on the same SST-2 sentences, without and with a rank-32
    correction in layers 0 and 1."""
    d = tmp_path_factory.mktemp("residual")
    common = ["--rank_layer", "36", "--rank_dim", "160", "--calibration_data", str(SST2), "--calibration_examples",
              "128", "--held_out_examples", "64", "--calibration_sweeps", "1"]
    return d, _decompose(d / "uniform", *common), _decompose(d / "front", *common, "--residual_ranks", "0:32,1:32")


def test_corrections_are_counted_and_lower_their_layers_error(uniform_and_front):
    d, uniform, front = uniform_and_front
    # Per corrected layer: 32 x (h + 3h) for Q|K|V, 32 x 2h for the attention output, 32 x 5h each for the FFN's two.
    assert front["student_encoder_params"] - uniform["student_encoder_params"] == 2 * 32 * 16 * H
    model = TuckerBertModel.from_pretrained(d / "front")
    assert model.config.residual_ranks == [32, 32, 0, 0, 0, 0]
    assert encoder_params(model) == front["student_encoder_params"]
    u, f = uniform["functional_error"]["per_layer"], front["functional_error"]["per_layer"]
    assert f[0] < 0.95 * u[0] and f[1] < 0.95 * u[1], (u, f)
    assert front["relative_error_by_type"]["FFN_out"] < uniform["relative_error_by_type"]["FFN_out"]


def test_corrections_load_in_plain_transformers_fold_and_quantize(uniform_and_front, tmp_path):
    from modeling import TuckerBertForSequenceClassification
    from modeling.int8 import load_quantized, quantize_, save_quantized

    d, _, _ = uniform_and_front
    model = TuckerBertModel.from_pretrained(d / "front").eval()
    ref = _hidden(model, IDS)
    plain = AutoModel.from_pretrained(str(d / "front"), trust_remote_code=True).eval()
    assert torch.equal(_hidden(plain, IDS), ref)
    without = copy.deepcopy(model)
    for layer in without.encoder.layer[:2]:
        layer.attention.qkv.residual = None
    assert float((_hidden(without, IDS) - ref).abs().max()) > 0.1  # the corrections do something
    assert torch.allclose(_hidden(fold_for_inference(copy.deepcopy(model)), IDS), ref, atol=1e-5)

    classifier = TuckerBertForSequenceClassification.from_pretrained(d / "front", num_labels=2).eval()
    with torch.no_grad():
        logits = classifier(input_ids=IDS).logits
        quantize_(classifier)
        out = classifier(input_ids=IDS).logits
    assert (out - logits).abs().max() < 0.05
    save_quantized(classifier, tmp_path)
    again = load_quantized(tmp_path, TuckerBertForSequenceClassification)
    with torch.no_grad():
        assert torch.equal(again(input_ids=IDS).logits, out)


@pytest.mark.parametrize("value, expected", [
    ("6:16", "--residual_ranks: layer 6 does not exist, the teacher's layers are 0..5"),
    ("0:400", "--residual_ranks: rank 400 exceeds the teacher's hidden size 384"),
    ("0-16", "--residual_ranks 0-16: expected distinct layer:rank pairs"),
    ("0:16,0:8", "--residual_ranks 0:16,0:8: expected distinct layer:rank pairs"),
])
def test_bad_residual_ranks_are_one_line_exit_2(value, expected, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--config", "models/minilm-td-36-192",
                 "--residual_ranks", value, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()
