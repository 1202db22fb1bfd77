"""The teacher's outputs computed once (distill/teacher_cache.py), on the embedded teacher and real SST-2 rows:
what the cache gives back is what the teacher computes, an entry is found again only for the same teacher and data,
a damaged entry is rebuilt, and task distillation trains the same with the cache as without it."""
import json

import numpy as np
import pytest
import torch

from corpora.glue import dev_files, get_task
from distill.dist import Distributed
from distill.teacher import ScoringTeacher
from distill.teacher_cache import TeacherLayers, TeacherLogits
from modeling.formats import encoder_of
from modeling.loading import load_tokenizer
from modeling.params import weights_fingerprint
from tasks.classifier import load_classifier
from tasks.features import load_features
from tests.conftest import FAST, REPO, run_cli

HIDDEN, SCORES = [0, 2, 4, 6], [1, 3, 5]


@pytest.fixture(scope="module")
def model_and_rows():
    task = get_task("SST-2")
    torch.manual_seed(0)  # the new classifier head: any fixed function of the encoder will do
    model, model_dir = load_classifier("all-MiniLM-L6-v2", "--model", task)
    rows = load_features(task, dev_files(task, REPO / "data/glue_data")[0], load_tokenizer(model_dir, "--model"), 128,
                         240)
    return model, rows


def _batch(rows, ids):
    return rows.batch(ids) | {"index": torch.as_tensor(ids)}


def _inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_cached_outputs_are_the_teachers_own(model_and_rows, tmp_path):
    model, rows = model_and_rows
    dist, key = Distributed(), weights_fingerprint(model)
    logits = TeacherLogits(tmp_path, model, key, rows, dist)
    layers = TeacherLayers(tmp_path, model, key, rows, dist, HIDDEN, SCORES, pool_mb=8, seed=1)
    assert logits.entry.built and logits.entry.examples == 240
    # the pool: a seeded draw of the rows whose float16 layers fit the bound, not a prefix of the file
    assert 10 < len(layers.pool) < 240 and layers.pool[-1] > len(layers.pool)
    assert layers.hidden.nbytes + layers.scores.nbytes <= 8 * 2**20
    ids = layers.pool[[0, 3, 5, 8, 13, 21]]
    batch = _batch(rows, ids)
    with torch.no_grad():
        expected = model(**_inputs(batch)).logits
    assert torch.allclose(logits(batch), expected, atol=1e-5)
    hidden, scores = layers(batch)
    t_hidden, t_scores = ScoringTeacher(encoder_of(model))(**_inputs(batch))
    real = batch["attention_mask"].bool()
    assert [h is not None for h in hidden] == [i in HIDDEN for i in range(7)]
    assert [s is not None for s in scores] == [i in SCORES for i in range(6)]
    for i in HIDDEN:  # float16: three significant digits of values up to about 10
        assert (hidden[i] - t_hidden[i])[real].abs().max() < 1e-2
    pairs = real[:, None, :, None] & real[:, None, None, :]
    for i in SCORES:
        assert (scores[i] - t_scores[i])[pairs.expand_as(scores[i])].abs().max() < 2e-2


def test_an_entry_is_found_again_only_for_the_same_teacher_and_data(model_and_rows, tmp_path):
    model, rows = model_and_rows
    dist, key = Distributed(), weights_fingerprint(model)
    first = TeacherLogits(tmp_path, model, key, rows, dist).entry
    again = TeacherLogits(tmp_path, model, key, rows, dist).entry
    assert first.built and not again.built and again.path == first.path
    fewer = rows.__class__(rows.input_ids[:200], rows.token_type_ids[:200], rows.labels[:200], rows.guids[:200])
    other_data = TeacherLogits(tmp_path, model, key, fewer, dist).entry
    assert other_data.built and other_data.path != first.path
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # another teacher: one weight differs
    try:
        other_teacher = weights_fingerprint(model)
        assert other_teacher != key
        moved = TeacherLogits(tmp_path, model, other_teacher, rows, dist)
        assert moved.entry.built and moved.entry.path != first.path
        assert np.allclose(moved.logits, np.load(f"{first.path}/logits.npy") + 1.0, atol=1e-5)
    finally:
        with torch.no_grad():
            model.classifier.bias.sub_(1.0)
    # an entry whose record does not name its key (copied over, or cut short) is rebuilt, not read
    meta = tmp_path / first.path / "meta.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"key": "something else"}))
    assert TeacherLogits(tmp_path, model, key, rows, dist).entry.built
    assert len(list(tmp_path.glob(".*"))) == 0  # no building directory is left behind


@pytest.mark.slow
def test_task_distillation_trains_the_same_with_the_cache(sst2_teacher, td_student, glue_copy, tmp_path):
    """Both phases on 1,000 SST-2 rows, with and without the cache (the pool holds every row): the same losses
    step by step (logits to float32 rounding, layers to float16's), the same dev score; the second cached run builds
    nothing."""
    cache = tmp_path / "cache"

    def distil(name, *extra):
        out = tmp_path / name
        r = run_cli("task-distill", "--teacher_model", str(sst2_teacher), "--student_model", str(td_student),
                    "--task_name", "SST-2", "--data_dir", str(glue_copy), "--output_dir", str(out), "--stage", "both",
                    "--max_train_examples", "1000", "--intermediate_max_steps", "12", "--max_steps", "12",
                    "--eval_step", "12", "--log_steps", "2", "--learning_rate", "1e-4", *extra, *FAST)
        assert r.returncode == 0, r.stderr[-3000:]
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return json.loads((out / "task_distill_summary.json").read_text()), log

    plain, plain_log = distil("plain")
    cached, cached_log = distil("cached", "--teacher_cache", str(cache))
    reused, _ = distil("reused", "--teacher_cache", str(cache))
    assert [p["teacher_cache"]["built"] for p in cached["phases"]] == [True, True]
    assert [p["teacher_cache"]["built"] for p in reused["phases"]] == [False, False]
    assert cached["phases"][0]["teacher_cache"]["examples"] == 1000  # the default bound holds every row
    for a, b in zip(plain_log, cached_log, strict=True):
        if "loss" in a:
            tolerance = 2e-3 if a["phase"] == "intermediate" else 1e-5
            assert abs(a["loss"] - b["loss"]) <= tolerance * max(1.0, abs(a["loss"])), (a, b)
    assert abs(plain["dev"]["dev"]["acc"] - cached["dev"]["dev"]["acc"]) <= 2 / 872
    assert reused["dev"] == cached["dev"]


def test_a_cache_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = tmp_path / "out"
    r = run_cli("task-distill", "--teacher_model", "all-MiniLM-L6-v2", "--student_model", "all-MiniLM-L6-v2",
                "--task_name", "SST-2", "--data_dir", str(REPO / "data/glue_data"), "--output_dir", str(out),
                "--teacher_cache", str(blocker / "cache"), "--quiet")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--teacher_cache {blocker / 'cache'}: cannot be written" in r.stderr
    assert not out.exists()
