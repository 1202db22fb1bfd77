"""Pair mining on real STS-B and MRPC rows with the embedded teacher briefly fine-tuned on each: the source rows come
first unchanged, the new pairs are the sentences' nearest neighbours (sharing far more words than the random
partners) and random partners, labelled with the teacher's own predictions, a second run adds nothing, and bad input
is refused before anything is written."""
import shutil

import numpy as np
import pytest

from corpora.glue import get_task, read_examples, read_rows
from modeling.loading import load_tokenizer
from tasks.classifier import load_classifier, predict_logits, predictions
from tasks.features import encode
from tests.conftest import REPO, run_cli

ROWS = ["--max_train_examples", "200", "--max_seq_length", "64", "--quiet"]


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    d = tmp_path_factory.mktemp("mine") / "glue_data"
    for task in ("STS-B", "MRPC", "SST-2"):
        shutil.copytree(REPO / "data/glue_data" / task, d / task, ignore=shutil.ignore_patterns("train_aug*"))
    return d


def _teacher(glue, task, out):
    """The embedded teacher after a few steps on the task: a task model whose encoder is still the sentence
    embedder (the neighbours), with a head of its own (the labels)."""
    r = run_cli("finetune", "--model", "all-MiniLM-L6-v2", "--task_name", task, "--data_dir", str(glue),
                "--output_dir", str(out), "--max_train_examples", "64", "--max_steps", "2", "--eval_step", "2",
                "--train_batch_size", "32", "--max_seq_length", "64", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _words(text):
    return {w.strip(".,!?;:\"'").lower() for w in text.split()} - {""}


def test_mined_stsb_pairs(glue, tmp_path):
    teacher = _teacher(glue, "STS-B", tmp_path / "teacher")
    r = run_cli("mine-pairs", "--teacher_model", str(teacher), "--glue_dir", str(glue), "--task_name", "STS-B",
                "--neighbours", "3", "--random_partners", "2", *ROWS)
    assert r.returncode == 0, r.stderr
    out = glue / "STS-B/train_aug.tsv"
    rows = read_rows(out)
    original = read_rows(glue / "STS-B/train.tsv")
    assert rows[0] == original[0] and len(rows[1:201]) == 200 and all(row in original for row in rows[1:201])
    mined = rows[201:]
    sentences = {row[c] for row in rows[1:201] for c in (7, 8)}
    # at most 5 per sentence; mutual neighbours and the source's own pairs (often a sentence's nearest) count once
    assert 2 * len(sentences) < len(mined) <= 5 * len(sentences)
    assert all(row[:7] == ["mined"] * 7 and row[7] in sentences and row[8] in sentences for row in mined)
    task = get_task("STS-B")
    examples = read_examples(task, out)  # the whole file reads as STS-B training data
    scores = np.array([e.label for e in examples[200:]])
    gold = [e.label for e in read_examples(task, glue / "STS-B/train.tsv")]
    assert min(gold) <= scores.min() and scores.max() <= max(gold)
    # each sentence's first three partners are its neighbours, the next two random: neighbours share words
    by_first: dict[str, list[str]] = {}
    for row in mined:
        by_first.setdefault(row[7], []).append(row[8])
    overlap = {"near": [], "random": []}
    for a, partners in by_first.items():
        if len(partners) == 5:
            for kind, b in zip(["near"] * 3 + ["random"] * 2, partners):
                overlap[kind].append(len(_words(a) & _words(b)) / len(_words(a) | _words(b)))
    assert np.mean(overlap["near"]) > 3 * np.mean(overlap["random"]), {k: np.mean(v) for k, v in overlap.items()}
    # the labels are the teacher's predictions for those pairs
    model, model_dir = load_classifier(str(teacher), "--model", task)
    sample = examples[200:216]
    features = encode(task, sample, load_tokenizer(model_dir, "--model"), 64)
    expected = predictions(task, predict_logits(model, features, 16))
    assert np.allclose(np.clip(expected, min(gold), max(gold)), [e.label for e in sample], atol=6e-4)
    # onto the file it wrote: every pair is there already
    before = out.read_bytes()
    r = run_cli("mine-pairs", "--teacher_model", str(teacher), "--glue_dir", str(glue), "--task_name", "STS-B",
                "--neighbours", "3", "--random_partners", "2", "--onto", "train_aug", *ROWS)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == before and "-> 0 teacher-labelled pairs" in r.stdout


def test_mined_mrpc_pairs_and_bad_input(glue, tmp_path):
    teacher = _teacher(glue, "MRPC", tmp_path / "teacher")
    common = ["--teacher_model", str(teacher), "--glue_dir", str(glue)]
    cases = [
        (["--task_name", "SST-2"], "--task_name SST-2: a single-sentence task"),
        (["--task_name", "MRPC", "--onto", "train_aug"], "--onto train_aug: no "),
        (["--task_name", "MRPC", "--neighbours", "0", "--random_partners", "0"], "nothing to mine"),
        (["--task_name", "STS-B", "--overwrite"], "has 2 output label(s) but STS-B has 1"),
    ]
    for extra, message in cases:
        r = run_cli("mine-pairs", *common, *extra, "--quiet")
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)
    assert not (glue / "MRPC/train_aug.tsv").exists()
    r = run_cli("mine-pairs", *common, "--task_name", "MRPC", "--neighbours", "2", "--random_partners", "1", *ROWS)
    assert r.returncode == 0, r.stderr
    out = glue / "MRPC/train_aug.tsv"
    examples = read_examples(get_task("MRPC"), out)
    # MRPC's pairs are paraphrases: a sentence's nearest is mostly its own partner, held already
    assert len(examples) > 200 + 400 and {e.label for e in examples[200:]} <= {"0", "1"}
    before = out.read_bytes()
    r = run_cli("mine-pairs", *common, "--task_name", "MRPC", "--quiet")
    assert r.returncode == 2 and "exists (pass --overwrite" in r.stderr and out.read_bytes() == before
