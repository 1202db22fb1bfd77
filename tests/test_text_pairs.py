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
