"""Text-to-text data: the shipped English -> German corpus read as it was written, split so that dev and test are
programs the training set never saw, and bad files refused in one line."""
from pathlib import Path

import pytest

from corpora.text_pairs import escape, read_pairs, unescape
from stagekit.errors import InputError
from tests.conftest import REPO

CORPUS = REPO / "data/parallel/gettext-en-de"


@pytest.mark.parametrize("text", ["plain", "two\nlines\tand a tab", "a \\n that is not a newline", "\\", "\r\n\\t"])
def test_escaping_round_trips(text):
    assert unescape(escape(text)) == text
    assert "\n" not in escape(text) and "\t" not in escape(text)


def test_the_shipped_corpus_is_split_by_package_with_unseen_held_out_sources():
    parts = {part: read_pairs(CORPUS / f"{part}.tsv", "--data_dir") for part in ("train", "dev", "test")}
    assert [len(parts[p]) for p in ("train", "dev", "test")] == [33889, 4493, 4082]
    packages = {part: {p.origin for p in pairs} for part, pairs in parts.items()}
    assert not packages["train"] & packages["dev"] and not packages["train"] & packages["test"]
    assert not packages["dev"] & packages["test"]
    train_sources = {p.source for p in parts["train"]}
    assert not any(p.source in train_sources for p in parts["dev"] + parts["test"])
    # Messages keep their layout: multi-line usage texts come back with real newlines.
    usage = [p for p in parts["test"] if p.origin == "coreutils" and "--dereference" in p.source]
    assert any("\n" in p.source and "\n" in p.target for p in usage)
    assert sum("\n" in p.source for p in parts["test"]) == 1441
    for package in packages["train"] | packages["dev"] | packages["test"]:
        assert (CORPUS / "copyright" / package).is_file(), package
        assert f"| {package} |" in (CORPUS / "SOURCES.md").read_text()


@pytest.mark.parametrize("content, expected", [
    ("english\tgerman\nhello\thallo\n", "a text-to-text TSV needs a header with 'source' and 'target' columns"),
    ("source\ttarget\nhello\n", "line 2 has 1 fields, the header 2"),
    ("source\ttarget\n", "no pairs"),
])
def test_bad_text_pair_files_are_refused_in_one_line(content, expected, tmp_path: Path):
    path = tmp_path / "train.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=expected) as e:
        read_pairs(path, "--data_dir")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_generation_metrics_agree_with_sacrebleus_command_line(tmp_path: Path):
    """On real dev messages and an imperfect "translation" of them (the German of a neighbouring message for every
    third one, the English source for every fifth, the reference otherwise), BLEU and chrF equal what sacrebleu's
    own command line prints for the same files."""
    import json
    import subprocess

    from tasks.text_metrics import generation_metrics, segment_line

    pairs = read_pairs(CORPUS / "dev.tsv", "--data_dir")[:400]
    refs = [p.target for p in pairs]
    hyps = [pairs[i - 1].target if i % 3 == 0 else p.source if i % 5 == 0 else p.target for i, p in enumerate(pairs)]
    ours = generation_metrics(hyps, refs)
    (tmp_path / "ref.txt").write_text("".join(segment_line(r) + "\n" for r in refs))
    (tmp_path / "hyp.txt").write_text("".join(segment_line(h) + "\n" for h in hyps))
    cli = subprocess.run([str(REPO / ".venv/bin/sacrebleu"), str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
                          "-m", "bleu", "chrf", "-f", "json", "-w", "4"], capture_output=True, text=True, check=True)
    theirs = {m["name"]: m["score"] for m in json.loads(cli.stdout)}
    assert round(ours["bleu"], 4) == theirs["BLEU"] and round(ours["chrf"], 4) == theirs["chrF2"], (ours, theirs)
    assert 20 < ours["bleu"] < 90 and ours["exact_match"] == sum(h == r for h, r in zip(hyps, refs)) / 400
    assert ours["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
