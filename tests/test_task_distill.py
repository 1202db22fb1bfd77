"""Task stages on real SST-2 / MRPC / STS-B data with the embedded teacher: fine-tuning, a 2-rank torchrun task
distillation that beats the undistilled student, evaluation of the TD model reloaded from disk (and GLUE
submission files), fit-mlm-head and augmentation (format, determinism, GloVe), and bad input."""
import json
import os
import shutil
import subprocess

import pytest

from stagekit.cli import main
from tests.conftest import FAST, REPO, run_cli

# Every test here trains on real SST-2 (the fine-tuned teacher, the masked-LM head): the demo-sized runs.
pytestmark = pytest.mark.slow

TINY = REPO / "data/wiki/enwiki-20250201-tiny.xml.bz2"
GLUE = REPO / "data/glue_data"
SAMPLE = REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"


@pytest.fixture(scope="module")
def glue(glue_copy):
    return glue_copy


@pytest.fixture(scope="module")
def teacher(sst2_teacher):
    return sst2_teacher


@pytest.fixture(scope="module")
def student(td_student):
    return td_student


def _dev_score(model, glue, tmp_path, task="SST-2"):
    r = run_cli("evaluate", "--model", str(model), "--task_name", task, "--data_dir", str(glue), "--output_dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    return json.loads((tmp_path / f"eval_results_{task}.json").read_text())["dev"]["dev"]


def _untrained_head_score(model_dir, glue):
    """The undistilled student: the general TD model with a new (seeded) classifier, on the full dev set."""
    import torch

    from corpora.glue import dev_files, get_task
    from modeling.loading import load_tokenizer
    from tasks.classifier import evaluate_features, load_classifier
    from tasks.features import load_features

    task = get_task("SST-2")
    torch.manual_seed(0)
    model, _ = load_classifier(str(model_dir), "--model", task)
    dev = load_features(task, dev_files(task, glue)[0], load_tokenizer(model_dir, "--model"), 64)
    return evaluate_features(model, task, dev, 128)


def test_finetuned_teacher_learns_sst2(teacher, glue, tmp_path):
    results = json.loads((teacher / "eval_results.json").read_text())["dev"]
    assert results["acc"] > 0.75  # the full dev set; chance is 0.51
    config = json.loads((teacher / "config.json").read_text())
    assert config["finetuning_task"] == "SST-2" and config["id2label"] == {"0": "0", "1": "1"}
    assert abs(_dev_score(teacher, glue, tmp_path)["acc"] - results["acc"]) < 1e-6  # reloaded, same score


def test_two_rank_torchrun_task_distillation_beats_the_undistilled_student(teacher, student, glue, tmp_path):
    out = tmp_path / "td-sst2"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = ["bash", "scripts/task_distill.sh", "--nproc_per_node", "2", "--", "--teacher_model", str(teacher), "--student_model", str(student), "--task_name", "SST-2",
           "--data_dir", str(glue), "--output_dir", str(out), "--stage", "both", "--max_train_examples", "2000",
           "--intermediate_max_steps", "20", "--max_steps", "80", "--eval_step", "80", "--train_batch_size", "32", "--learning_rate", "1e-3",
           "--intermediate_learning_rate", "1e-3", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "task_distill_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert [p["phase"] for p in summary["phases"]] == ["intermediate", "prediction"]
    undistilled = _untrained_head_score(student, glue)
    distilled = _dev_score(out, glue, tmp_path / "distilled")  # the TD model reloaded from disk
    assert distilled["acc"] > undistilled["acc"] + 0.1, (undistilled, distilled)
    assert abs(distilled["acc"] - summary["dev"]["dev"]["acc"]) < 1e-6
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "tucker_bert" and config["finetuning_task"] == "SST-2"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {row["phase"] for row in log} == {"intermediate", "prediction"}


def test_evaluate_writes_glue_submissions(teacher, glue, tmp_path):
    data = tmp_path / "glue_data"
    shutil.copytree(glue / "SST-2", data / "SST-2", ignore=shutil.ignore_patterns("train_aug*"))
    dev = (data / "SST-2/dev.tsv").read_text().splitlines()[1:21]
    (data / "SST-2/test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{row.split(chr(9))[0]}\n"
                                                                      for i, row in enumerate(dev)))
    r = run_cli("evaluate", "--model", str(teacher), "--task_name", "SST-2", "--data_dir", str(data), "--do_predict",
                "--output_dir", str(tmp_path / "sub"))
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "sub/SST-2.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and len(rows) == 21
    assert [row.split("\t")[0] for row in rows[1:]] == [str(i) for i in range(20)]
    assert {row.split("\t")[1] for row in rows[1:]} <= {"0", "1"}


@pytest.fixture(scope="module")
def mlm_head(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    assert main(["pregenerate", "--train_corpus", str(SAMPLE), "--bert_model", "all-MiniLM-L6-v2", "--do_lower_case",
                 "--epochs_to_generate", "1", "--max_seq_len", "64", "--output_dir", str(root / "pregen"), "--quiet"]) == 0
    assert main(["fit-mlm-head", "--teacher_model", "all-MiniLM-L6-v2", "--pregenerated_data", str(root / "pregen"),
                 "--output_dir", str(root / "mlm"), "--max_train_examples", "1500", "--eval_examples", "200",
                 "--num_train_epochs", "2", "--quiet"]) == 0
    return root / "mlm"


def test_fit_mlm_head_learns_masked_tokens(mlm_head):
    summary = json.loads((mlm_head / "fit_mlm_head_summary.json").read_text())
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert before["top15"] < 0.02 and after["top15"] > 0.2 and after["loss"] < before["loss"] - 2
    config = json.loads((mlm_head / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]


def _augment(mlm_head, glue_dir, task, *extra):
    return run_cli("augment", "--pretrained_bert_model", str(mlm_head), "--glue_dir", str(glue_dir), "--task_name",
                   task, "--max_train_examples", "12", "--N", "6", "--quiet", *extra)


def test_augment_format_and_determinism(mlm_head, tmp_path):
    shutil.copytree(GLUE / "MRPC", tmp_path / "MRPC")
    outputs = []
    for workers in ("1", "2"):
        r = _augment(mlm_head, tmp_path, "MRPC", "--num_workers", workers, "--overwrite")
        assert r.returncode == 0, r.stderr
        outputs.append((tmp_path / "MRPC/train_aug.tsv").read_text())
    assert outputs[0] == outputs[1]
    header, *rows = [line.split("\t") for line in outputs[0].splitlines()]
    original = {tuple(r) for r in (line.split("\t") for line in (GLUE / "MRPC/train.tsv").read_text("utf-8-sig").splitlines())}
    assert "\t".join(header) == "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    assert all(len(r) == 5 and r[0] in ("0", "1") for r in rows)
    kept = [r for r in rows if tuple(r) in original]
    assert len(kept) == 12  # every sampled original row, unchanged
    assert 12 * 2 < len(rows) <= 12 * (1 + 2 * 6)  # both sentences augmented, at most N each
    assert len({tuple(r) for r in rows}) == len(rows)  # deduplicated
    by_pair = {}
    for r in rows:
        by_pair.setdefault((r[1], r[2]), []).append(r)
    for pair_rows in by_pair.values():
        first = pair_rows[0]
        for r in pair_rows[1:]:
            assert r[0] == first[0] and (r[3] == first[3]) != (r[4] == first[4])  # one sentence changed at a time
    r = _augment(mlm_head, tmp_path, "MRPC")
    assert r.returncode == 2 and "exists (pass --overwrite" in r.stderr


def test_augment_with_glove_vectors(mlm_head, tmp_path, teacher_dir):
    """GloVe's text format; multi-piece words take their candidates from it."""
    from safetensors.torch import load_file

    emb = load_file(teacher_dir / "model.safetensors")["embeddings.word_embeddings.weight"]
    vocab = (teacher_dir / "vocab.txt").read_text().splitlines()
    words = [(i, w) for i, w in enumerate(vocab) if w.isalpha() and len(w) > 3][:3000]
    lines = [f"{w} " + " ".join(f"{x:.5f}" for x in emb[i][:50].tolist()) for i, w in words]
    lines.append("rehnquist " + " ".join(f"{x:.5f}" for x in emb[words[0][0]][:50].tolist()))
    (tmp_path / "glove.txt").write_text("\n".join(lines) + "\n")
    shutil.copytree(GLUE / "MRPC", tmp_path / "MRPC")
    r = _augment(mlm_head, tmp_path, "MRPC", "--glove_embs", str(tmp_path / "glove.txt"), "--num_workers", "1")
    assert r.returncode == 0, r.stderr
    glove_words = {w for _, w in words}
    aug_words = {w for line in (tmp_path / "MRPC/train_aug.tsv").read_text().splitlines()[1:] for w in line.split("\t")[3].split()}
    assert aug_words & glove_words
    (tmp_path / "bad.txt").write_text("word 0.1 0.2\nother 0.3\n")
    r = _augment(mlm_head, tmp_path, "MRPC", "--glove_embs", str(tmp_path / "bad.txt"), "--overwrite")
    assert r.returncode == 2 and "bad.txt:2" in r.stderr


def test_bad_input_is_refused_before_anything_is_written(teacher, student, glue, tmp_path):
    out = tmp_path / "out"
    common = ["--student_model", str(student), "--data_dir", str(glue), "--output_dir", str(out), "--quiet"]
    broken = tmp_path / "broken"
    shutil.copytree(glue / "SST-2", broken / "SST-2", ignore=shutil.ignore_patterns("train_aug*"))
    rows = (broken / "SST-2/train.tsv").read_text().splitlines()
    (broken / "SST-2/train.tsv").write_text("\n".join(rows[:7] + ["a good film\tpositive"] + rows[7:20]) + "\n")
    cases = [
        (["--teacher_model", str(teacher), "--task_name", "SST-5"], "unknown task"),
        (["--teacher_model", str(teacher), "--task_name", "CoLA"], "no CoLA/ directory"),  # this glue_data has no CoLA
        (["--teacher_model", str(teacher), "--task_name", "STS-B"], "has 2 output label(s) but STS-B has 1"),
        (["--teacher_model", "all-MiniLM-L6-v2", "--task_name", "SST-2"], "not fine-tuned on SST-2"),
        (["--teacher_model", str(teacher), "--task_name", "SST-2", "--aug_train"], "no " + str(glue / "SST-2/train_aug.tsv")),
        (["--teacher_model", str(teacher), "--task_name", "SST-2", "--temperature", "0"], "--temperature 0"),
    ]
    for extra, message in cases:
        r = run_cli("task-distill", *extra, *common)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)
        assert not out.exists()
    r = run_cli("task-distill", "--teacher_model", str(teacher), "--task_name", "SST-2", *common[:2],
                "--data_dir", str(broken), "--output_dir", str(out), "--quiet")
    assert r.returncode == 2 and "train.tsv:8: label 'positive' is not one of SST-2's labels" in r.stderr
    assert not out.exists()
    r = run_cli("evaluate", "--model", str(teacher), "--task_name", "MRPC", "--data_dir", str(glue))
    assert r.returncode == 2 and "was trained on SST-2, not MRPC" in r.stderr


def test_finetune_stopped_by_sigterm_leaves_nothing_and_the_same_command_runs_again(glue, tmp_path):
    """A scheduler's SIGTERM in the middle of training: nothing under --output_dir, no partial directory kept, and
    the same command line then runs to the end (it used to be refused as a non-empty output directory)."""
    import signal
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "teacher"
    cmd = [str(Path(sys.executable).parent / "xcompress"), "finetune", "--model", "all-MiniLM-L6-v2", "--task_name",
           "SST-2", "--data_dir", str(glue), "--output_dir", str(out), "--max_train_examples", "64",
           "--train_batch_size", "8", "--max_steps", "60", "--eval_step", "1000", "--max_seq_length", "32", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".teacher.partial"
    deadline = time.time() + 300
    while not (partial / "finetune_config.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "finetune ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert list(tmp_path.iterdir()) == [], "an interrupted finetune left files behind"
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and (out / "finetune_summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]
