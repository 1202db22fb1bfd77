"""GLUE processors on the real task files shipped in data/glue_data,
the five tasks without files here on files in their standard layout, metrics against hand-computed values,
bad task data refused with file and line, and collapsed predictions named."""
import math
import shutil

import numpy as np
import pytest

from corpora.glue import TASKS, dev_files, get_task, read_examples, submission_files, train_file
from stagekit.errors import InputError
from tasks.metrics import collapse, glue_metrics, matthews_corrcoef
from tests.conftest import REPO

GLUE = REPO / "data/glue_data"


@pytest.fixture(scope="module", autouse=True)
def glue_present():
    assert (GLUE / "SST-2/train.tsv").is_file(), f"{GLUE}: the shipped GLUE files are missing from the checkout"


@pytest.mark.parametrize("name,train_rows,dev_rows,counts", [
    ("CoLA", 8551, 1043, {"1": 6023, "0": 2528}),
    ("SST-2", 67349, 872, None),
    ("MRPC", 3668, 408, None),
    ("STS-B", 5749, 1500, None),
])
def test_processors_read_the_real_files(name, train_rows, dev_rows, counts):
    task = get_task(name)
    train = read_examples(task, train_file(task, GLUE))
    dev = read_examples(task, dev_files(task, GLUE)[0])
    assert (len(train), len(dev)) == (train_rows, dev_rows)
    if counts:
        assert {k: sum(e.label == k for e in train) for k in counts} == counts
    if task.is_regression:
        assert all(0.0 <= e.label <= 5.0 for e in train + dev)
    else:
        assert {e.label for e in train} == set(task.labels)
    assert all(e.text_a.strip() for e in train)
    assert all((e.text_b is not None) == (task.train.text_b is not None) for e in train)


def test_real_file_quirks():
    mrpc = read_examples(get_task("MRPC"), GLUE / "MRPC/train.tsv")
    assert mrpc[0].label == "1" and mrpc[0].text_a.startswith("Amrozi accused his brother")  # header BOM dropped
    cola = read_examples(get_task("cola"), GLUE / "CoLA/train.tsv")
    assert cola[0].text_a == "Our friends won't buy this analysis, let alone the next one we propose."  # no header
    # bare quotes are text, not CSV quoting
    assert '"the witness"' in mrpc[0].text_a and not any("\n" in e.text_a for e in mrpc)
    stsb = read_examples(get_task("STS-B"), GLUE / "STS-B/train.tsv")
    assert (stsb[0].text_a, stsb[0].text_b, stsb[0].label) == ("A plane is taking off.", "An air plane is taking off.", 5.0)


_STANDARD = {  # headers of the real glue_data files of the tasks not shipped here, one row each
    "QQP": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "1\t2\t3\tHow are you?\tHow do you do?\t1",
            "id\tquestion1\tquestion2", "0\tWhat is it?\tWhat's that?"),
    "MNLI": ("index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label",
             "0\t1\t2e\tgov\t(\t(\t(\t(\tConceptually cream skimming.\tProduct and geography.\tneutral\tneutral",
             "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2",
             "0\t1\t2\tfiction\t(\t(\t(\t(\tHe ran.\tHe moved."),
    "QNLI": ("index\tquestion\tsentence\tlabel", "0\tWhen?\tIn 1990.\tentailment",
             "index\tquestion\tsentence", "0\tWho?\tNobody."),
    "RTE": ("index\tsentence1\tsentence2\tlabel", "0\tA dog barks.\tAn animal makes noise.\tentailment",
            "index\tsentence1\tsentence2", "0\tIt rains.\tIt is dry."),
    "WNLI": ("index\tsentence1\tsentence2\tlabel", "0\tI put the cake in the box.\tThe cake is in the box.\t1",
             "index\tsentence1\tsentence2", "0\tA.\tB."),
}


@pytest.mark.parametrize("name", sorted(_STANDARD))
def test_processors_of_the_other_tasks_read_the_standard_layout(tmp_path, name):
    task = get_task(name)
    header, row, test_header, test_row = _STANDARD[name]
    d = tmp_path / task.name
    d.mkdir()
    (d / "train.tsv").write_text(f"{header}\n{row}\n")
    for dev in task.dev_files:
        (d / f"{dev}.tsv").write_text(f"{header}\n{row}\n")
    for test in task.submission_files:
        (d / f"{test}.tsv").write_text(f"{test_header}\n{test_row}\n")
    [ex] = read_examples(task, train_file(task, tmp_path))
    assert ex.label in task.labels and ex.text_b
    assert len(dev_files(task, tmp_path)) == (2 if name == "MNLI" else 1)
    for path, submission in submission_files(task, tmp_path):
        [t] = read_examples(task, path, labelled=False)
        assert t.label is None and t.guid == "0" and t.text_b
    assert [s for _, s in submission_files(task, tmp_path)] == (["MNLI-m", "MNLI-mm"] if name == "MNLI" else [task.name])


def test_all_nine_tasks_and_their_label_orders():
    assert list(TASKS) == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]
    assert TASKS["MNLI"].labels == ("contradiction", "entailment", "neutral")  # the order BERT checkpoints use
    assert TASKS["STS-B"].num_labels == 1 and TASKS["STS-B"].is_regression


def test_metrics_against_hand_computed_values():
    gold = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 0, 1, 1, 0])
    # tp=3 tn=3 fp=1 fn=1: acc 6/8, F1 = 6/8, MCC = (9-1)/sqrt(4*4*4*4) = 0.5
    m = glue_metrics("acc_and_f1", pred, gold)
    assert m["acc"] == 0.75 and math.isclose(m["f1"], 0.75) and math.isclose(m["score"], 0.75)
    assert math.isclose(glue_metrics("mcc", pred, gold)["mcc"], 0.5)
    assert matthews_corrcoef(np.ones(4), np.array([1, 0, 1, 0])) == 0.0  # a constant prediction
    # Pearson of (1,2,3,4) vs (2,4,6,9): cov/(sd sd); Spearman 1 (monotone)
    x, y = np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 9])
    pearson = ((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    c = glue_metrics("corr", x, y)
    assert math.isclose(c["pearson"], pearson) and math.isclose(c["spearman"], 1.0)
    assert math.isclose(c["score"], (pearson + 1) / 2)
    # Spearman with ties: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    ties = glue_metrics("corr", np.array([1.0, 2, 2, 3]), x)["spearman"]
    r = np.array([1, 2.5, 2.5, 4])
    assert math.isclose(ties, np.corrcoef(r, x)[0, 1])


def test_bad_task_data_names_file_and_line(tmp_path):
    with pytest.raises(InputError, match="unknown task"):
        get_task("SST-3")
    task = get_task("SST-2")
    d = tmp_path / "SST-2"
    shutil.copytree(GLUE / "SST-2", d, ignore=shutil.ignore_patterns("train*"))
    with pytest.raises(InputError, match="no train.tsv"):
        read_examples(task, train_file(task, tmp_path))
    lines = (GLUE / "SST-2/dev.tsv").read_text().splitlines()
    (d / "train.tsv").write_text("\n".join(lines[:5] + ["no label column here"] + lines[5:10]) + "\n")
    with pytest.raises(InputError, match=r"train.tsv:6: malformed row"):
        read_examples(task, train_file(task, tmp_path))
    (d / "train.tsv").write_text("\n".join(lines[:3] + ["a fine film\t2"]) + "\n")
    with pytest.raises(InputError, match=r"train.tsv:4: label '2' is not one of SST-2's labels"):
        read_examples(task, train_file(task, tmp_path))
    stsb = get_task("STS-B")
    (tmp_path / "STS-B").mkdir()
    rows = (GLUE / "STS-B/dev.tsv").read_text().splitlines()
    (tmp_path / "STS-B/dev.tsv").write_text("\n".join(rows[:2] + [rows[2].rsplit("\t", 1)[0] + "\thigh"]) + "\n")
    with pytest.raises(InputError, match=r"dev.tsv:3: score 'high' is not a number"):
        read_examples(stsb, dev_files(stsb, tmp_path)[0])


def test_collapse_names_what_happened():
    gold = np.array([0.0, 1.5, 3.2, 4.8])
    assert collapse(np.array([0.2, 1.0, 3.0, 4.0]), gold, regression=True) is None
    assert "collapsed to a constant" in collapse(np.full(4, 2.5), gold, regression=True)
    assert "not finite" in collapse(np.array([1.0, np.nan, 2.0, 3.0]), gold, regression=True)
    assert "all 3 are label 1" in collapse(np.array([1, 1, 1]), np.array([0, 1, 1]), regression=False)
    assert collapse(np.array([1, 1, 1]), np.array([1, 1, 1]), regression=False) is None
