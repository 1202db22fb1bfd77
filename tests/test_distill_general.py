"""General distillation on data pre-generated from the shipped dump, with the embedded teacher and a small TD
student: single process, 2 ranks under torchrun, horovodrun --gloo and mpirun, resume after SIGKILL, a dead
rank, and bad input."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from corpora.pregenerated import PregeneratedEpochs, read_vocab_ids
from distill.losses import DistillationLoss, attention_loss, layer_map
from distill.teacher import ScoringTeacher
from modeling import TuckerBertModel
from stagekit.cli import main
from stagekit.errors import InputError
from tests.conftest import REPO

TINY = REPO / "data/wiki/enwiki-20250201-tiny.xml.bz2"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def pregenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gd") / "pregen"
    assert main(["pregenerate", "--train_corpus", str(TINY), "--bert_model", "all-MiniLM-L6-v2", "--do_lower_case",
                 "--epochs_to_generate", "2", "--max_seq_len", "64", "--output_dir", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Validation text: the 206-page sample (it shares its first articles with the tiny dump; the multi-rank tests
    check how the loss is computed across ranks, not generalization)."""
    out = tmp_path_factory.mktemp("gd") / "held-out"
    assert main(["pregenerate", "--train_corpus", str(REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"), "--bert_model",
                 "all-MiniLM-L6-v2", "--do_lower_case", "--epochs_to_generate", "1", "--max_seq_len", "64",
                 "--output_dir", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("gd") / "td-12-32"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "32",
                 "--output_dir", str(out)]) == 0
    return out


def _args(pregenerated, student, out, *extra):
    return ["--teacher_model", "all-MiniLM-L6-v2", "--student_model", str(student), "--pregenerated_data",
            str(pregenerated), "--train_batch_size", "8", "--learning_rate", "1e-3", "--output_dir", str(out),
            "--quiet", *extra]


def _weights(d):
    return load_file(Path(d) / "model.safetensors")


def test_teacher_scores_match_eager_attention_and_leave_outputs_unchanged(teacher_dir, token_batch):
    eager = BertModel.from_pretrained(str(teacher_dir), attn_implementation="eager").eval()
    plain = BertModel.from_pretrained(str(teacher_dir)).eval()
    scoring = ScoringTeacher(BertModel.from_pretrained(str(teacher_dir)))
    batch = token_batch | {"token_type_ids": torch.zeros_like(token_batch["input_ids"])}
    hidden, scores = scoring(**batch)
    with torch.no_grad():
        ref = eager(**batch, output_attentions=True, output_hidden_states=True)
        ref_plain = plain(**batch, output_hidden_states=True)
    for a, b in zip(ref_plain.hidden_states, hidden):
        assert torch.equal(a, b)
    for s, probs in zip(scores, ref.attentions):
        torch.testing.assert_close(s.softmax(-1), probs, atol=1e-5, rtol=0)
    _, only_last = scoring(**batch, score_layers=[5])
    assert only_last[:5] == (None,) * 5 and torch.equal(only_last[5], scores[5])


def test_bf16_teacher_targets_stay_within_two_percent(teacher_dir, token_batch):
    batch = token_batch | {"token_type_ids": torch.zeros_like(token_batch["input_ids"])}
    exact = ScoringTeacher(BertModel.from_pretrained(str(teacher_dir)))
    fast = ScoringTeacher(BertModel.from_pretrained(str(teacher_dir)), bf16=True)
    (h32, s32), (h16, s16) = exact(**batch), fast(**batch)
    valid = batch["attention_mask"].bool()
    for a, b in zip(h32, h16):
        assert b.dtype == torch.float32 and (b - a)[valid].norm() < 0.02 * a[valid].norm()
    keys = valid[:, None, None, :].expand_as(s32[5])
    assert (s16[5] - s32[5])[keys].norm() < 0.02 * s32[5][keys].norm()


def test_losses_ignore_padding_and_map_layers():
    assert layer_map(6, 12) == [2, 4, 6, 8, 10, 12] and layer_map(6, 6) == [1, 2, 3, 4, 5, 6]
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    base = attention_loss(s, t, mask)
    s2 = s.clone()
    s2[0, :, 3:, :] = 1e4  # padded queries
    s2[0, :, :, 3:] = -1e4  # padded keys
    assert torch.equal(attention_loss(s2, t, mask), base)
    loss = DistillationLoss(6, 6, 256, 384, "all")
    assert isinstance(loss.projection, torch.nn.Linear) and len(loss.pairs) == 6
    last = DistillationLoss(6, 6, 384, 384, "last")
    assert last.pairs == [(6, 6)] and last.student_score_layers == [5] and last.teacher_score_layers == [5]


def test_reader_is_deterministic_sharded_and_lazy(pregenerated, teacher_dir):
    data = PregeneratedEpochs(pregenerated, read_vocab_ids(teacher_dir / "vocab.txt"))
    a = data.example_ids(0, 42, 0, 2)
    b = data.example_ids(0, 42, 1, 2)
    assert len(a) == len(b) == data.num_examples(0) // 2 and not set(a) & set(b)
    assert (data.example_ids(0, 42, 0, 2) == a).all()
    other_epoch = data.example_ids(1, 42, 0, 2)  # epoch_1 has its own size and order
    assert not (other_epoch[:100] == a[:100]).all()
    batch = data.batch(2, a[:4])  # training epoch 2 reads epoch_0 again
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"][:, 0].eq(101).all()  # [CLS]
    data.close()


@pytest.mark.slow
def test_single_process_loss_decreases_and_checkpoint_reloads(pregenerated, student, tmp_path):
    out = tmp_path / "gd"
    assert main(["general-distill", *_args(pregenerated, student, out, "--max_steps", "30", "--save_steps", "10",
                                           "--log_steps", "5")]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and log[-1]["loss"] < 0.8 * log[0]["loss"]
    summary = json.loads((out / "general_distill_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["ranks_in_sync"] and summary["final_loss"] < summary["first_loss"]
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step_10", "step_20", "step_30"]
    reloaded = TuckerBertModel.from_pretrained(out)
    assert reloaded.config.rank_dim == 32
    assert torch.equal(reloaded.encoder.factors.G, _weights(out / "checkpoints/step_30")["encoder.factors.G"])
    assert not torch.equal(reloaded.encoder.factors.G, _weights(student)["encoder.factors.G"])


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(pregenerated, student, tmp_path):
    ref = tmp_path / "ref"
    common = ["--max_steps", "16", "--save_steps", "4", "--seed", "3"]
    assert main(["general-distill", *_args(pregenerated, student, ref, *common)]) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "distill.general", *_args(pregenerated, student, out, *common)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints/step_8/training_state.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints/step_8").is_dir() and not (out / "general_distill_summary.json").exists()
    assert main(["general-distill", *_args(pregenerated, student, out, *common, "--resume")]) == 0
    assert json.loads((out / "general_distill_summary.json").read_text())["resumed_from_step"] >= 8
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# mpirun and horovodrun through the launch script users run (scripts/general_distill.sh), hosts from a hostfile
LAUNCHERS = {
    "torchrun": lambda hosts: [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                               "-m", "distill.general"],
    "horovodrun": lambda hosts: ["bash", "scripts/general_distill.sh", "--launcher", "horovodrun", "--gloo",
                                 "--hostfile", hosts, "--"],
    "mpirun": lambda hosts: ["bash", "scripts/general_distill.sh", "--hostfile", hosts, "--"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_ranks_learn_and_stay_identical(launcher, pregenerated, held_out, student, tmp_path):
    out = tmp_path / launcher
    hosts = tmp_path / "hosts"
    hosts.write_text("# this machine, two processes\nlocalhost slots=2\n")
    env = os.environ | {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    res = subprocess.run([*LAUNCHERS[launcher](str(hosts)), *_args(pregenerated, student, out, "--max_steps", "24",
                                                          "--log_steps", "4", "--save_steps", "24",
                                                          "--eval_data", str(held_out), "--eval_steps", "12",
                                                          "--max_eval_examples", "32")],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((out / "general_distill_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["backend"] == ("gloo" if launcher == "torchrun" else "horovod")
    checks = summary["parameter_checksums_by_rank"]
    assert len(checks) == 2 and checks[0] == checks[1]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    training = [r for r in log if "loss" in r]
    assert training[-1]["loss"] < 0.8 * training[0]["loss"]
    # Each rank validates half of the held-out examples; their mean is the loss on all of them.
    validation = summary["validation"]
    assert [r["step"] for r in validation] == [0, 12, 24] and validation[-1]["val_loss"] < validation[0]["val_loss"]


@pytest.mark.slow
def test_dead_rank_makes_the_other_exit_with_a_clear_error(pregenerated, student, tmp_path):
    """Two ranks started as srun would start them (no agent watching): kill one, the other must not hang."""
    out = tmp_path / "dead"
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = os.environ | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "distill.general",
                                       *_args(pregenerated, student, out, "--max_steps", "100000", "--log_steps", "1")],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 300
    while time.time() < deadline and not ((out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    _, err = procs[0].communicate(timeout=90)
    assert time.time() - killed_at < 60
    assert procs[0].returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("xcompress general-distill: error: rank 0 of 2") and "lost a peer" in last, err[-1500:]


BAD = {
    "student_not_td": (lambda s, p, t: ["--student_model", "all-MiniLM-L6-v2"], "not a TD model"),
    "no_epochs": (lambda s, p, t: ["--pregenerated_data", str(t)], "no epoch_*.json files"),
    "corrupt_line": (lambda s, p, t: ["--pregenerated_data", str(_corrupt_copy(p, t))], "epoch_0.json:"),
    "other_vocab": (lambda s, p, t: ["--student_model", str(_other_vocab(s, t))], "vocab.txt differs from the teacher"),
    "eval_data_is_training_data": (lambda s, p, t: ["--eval_data", str(p)], "the training data itself"),
    "batch_not_divisible": (lambda s, p, t: ["--train_batch_size", "7", "--gradient_accumulation_steps", "2"],
                            "not divisible by 1 ranks x 2 accumulation steps"),
}


def _corrupt_copy(pregenerated, tmp):
    d = tmp / "corrupt"
    d.mkdir()
    lines = (pregenerated / "epoch_0.json").read_text().splitlines(keepends=True)[:16]
    lines[2:] = ['{"tokens": ["[CLS]", "oops"\n'] * 14  # truncated JSON from line 3 on
    (d / "epoch_0.json").write_text("".join(lines))
    return d


def _other_vocab(student, tmp):
    d = tmp / "other-vocab"
    shutil.copytree(student, d)
    (d / "vocab.txt").write_text((d / "vocab.txt").read_text().replace("[unused0]", "[unused-x]"))
    return d


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exit_2_and_nothing_written(case, pregenerated, student, tmp_path, capsys):
    make, expected = BAD[case]
    extra = make(student, pregenerated, tmp_path)
    args = dict(zip(_args(pregenerated, student, tmp_path / "out")[0:-1:2], _args(pregenerated, student, tmp_path / "out")[1::2]))
    args.update(dict(zip(extra[0::2], extra[1::2])))
    argv = ["general-distill", *[x for kv in args.items() for x in kv], "--quiet", "--max_steps", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    if case == "corrupt_line":
        assert re.search(r"epoch_0\.json:(\d+): corrupt line", err[0]) and int(re.search(r":(\d+):", err[0]).group(1)) >= 3
    assert not (tmp_path / "out").exists()


def test_existing_run_is_never_overwritten(pregenerated, student, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["general-distill", *_args(pregenerated, student, out, "--max_steps", "2", "--save_steps", "2")]) == 0
    before = _weights(out)
    assert main(["general-distill", *_args(pregenerated, student, out, "--max_steps", "2")]) == 2
    assert "pass --resume" in capsys.readouterr().err
    after = _weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(InputError):
        PregeneratedEpochs(tmp_path / "nothing-here", {})
