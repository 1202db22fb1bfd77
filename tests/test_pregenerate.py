"""pregenerate on the shipped Wikipedia dumps: readers, cleaning, sentences, instances, resume, bad input."""
import bz2
import codecs
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pregenerate.documents import DocumentProcessor, paragraphs
from pregenerate.dumps import StreamRange
from pregenerate.sentences import MIN_TRAINING_CHARACTERS, boundary_errors, load_splitter, train_splitter
from pregenerate.sources import PARAGRAPHS, SENTENCES, WIKITEXT, iter_documents, iter_parts, part_documents
from pregenerate.tokenize import WordPieceEncoder
from pregenerate.wikitext import ENGLISH, is_disambiguation, parsed_paragraphs, wikitext_to_paragraphs
from stagekit.cli import main
from stagekit.errors import InputError
from tests import wiki_twins
from tests.conftest import REPO

DUMP = REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"
GERMAN_TEXT = REPO / "data/text/manpages-de.txt.bz2"
# German abbreviations (Duden's list, the common ones): followed by a lower-case word they never end a sentence.
GERMAN_ABBREVIATIONS = {"z.b", "d.h", "u.a", "usw", "bzw", "ca", "nr", "vgl", "ggf", "evtl", "inkl", "bspw", "sog",
                        "etc", "dr", "prof", "abs", "o.ä", "z.t", "i.d.r", "s.o", "s.u"}
TINY = REPO / "data/wiki/enwiki-20250201-tiny.xml.bz2"
FIELDS = ["tokens", "segment_ids", "is_random_next", "masked_lm_positions", "masked_lm_labels"]


@pytest.fixture(scope="module")
def processor(teacher_dir):
    return DocumentProcessor(teacher_dir / "vocab.txt", lowercase=True)


def _pregenerate(out, corpus=TINY, *extra):
    return main(["pregenerate", "--train_corpus", str(corpus), "--bert_model", "all-MiniLM-L6-v2", "--do_lower_case",
                 "--output_dir", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pg") / "tiny"
    assert _pregenerate(out, TINY, "--epochs_to_generate", "2", "--max_seq_len", "64") == 0
    return out


def test_punkt_keeps_abbreviations_in_one_sentence(processor):
    text = "Dr. Smith arrived at 5 p.m. on Jan. 3 in the U.S., e.g. at noon. He left the next day."
    assert processor.splitter.tokenize(text) == [
        "Dr. Smith arrived at 5 p.m. on Jan. 3 in the U.S., e.g. at noon.", "He left the next day."]


def test_dump_reader_keeps_articles_only():
    docs = list(iter_documents(DUMP))
    assert len(docs) == 106 and all(d.kind == WIKITEXT for d in docs)  # 206 pages: 99 redirects, 1 other namespace
    titles = [d.title for d in docs]
    assert "Anarchism" in titles and len(set(titles)) == len(titles)
    tiny = list(iter_documents(TINY))  # schema 0.11 without <siteinfo>; mostly redirects
    assert {d.title for d in tiny} >= {"Anarchism", "Albedo", "Achilles", "Abraham Lincoln"}


def test_wikitext_cleaning_on_real_articles():
    docs = {d.title: d for d in iter_documents(DUMP)}
    paragraphs = wikitext_to_paragraphs(docs["Anarchism"].text)
    text = "\n".join(paragraphs)
    assert paragraphs[0].startswith("Anarchism is a political philosophy")
    for residue in ("{{", "}}", "[[", "]]", "<ref", "</ref>", "File:", "Category:", "thumb|", "{|", "|}", "<!--", "'''"):
        assert residue not in text, residue
    # Link text stays: "[[political philosophy]]" and piped links become their visible text.
    assert "political philosophy" in paragraphs[0]
    # Headings and list items are not prose.
    assert "== History ==" not in text and "History" not in paragraphs
    disamb = [t for t, d in docs.items() if is_disambiguation(t, d.text)]
    assert disamb and all(not d.endswith("(") for d in disamb)


def _titles_and_texts(path):
    return [(d.title, d.text) for d in iter_documents(path)]


@pytest.mark.parametrize("dump", [DUMP, TINY], ids=["206pages", "tiny"])
def test_fast_stripper_gives_the_parsers_paragraphs_on_every_page(dump):
    for doc in iter_documents(dump):
        assert wikitext_to_paragraphs(doc.text, doc.site) == parsed_paragraphs(doc.text, doc.site), doc.title


@pytest.mark.parametrize("encoding,bom", [("utf-16", b""), ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-8", codecs.BOM_UTF8),
                                          ("utf-32-le", b"")])
def test_dump_in_another_encoding_gives_the_same_documents(tmp_path, encoding, bom):
    twin = wiki_twins.reencoded(DUMP, tmp_path / "twin.xml.bz2", encoding, bom)
    assert _titles_and_texts(twin) == _titles_and_texts(DUMP)


def test_localized_namespace_links_are_dropped_in_a_german_dump(tmp_path):
    german = wiki_twins.german(DUMP, tmp_path / "dewiki.xml.bz2")
    docs = list(iter_documents(german))
    assert docs[0].site.language == "de" and {"Datei", "Kategorie", "Bild"} <= set(docs[0].site.namespace_names)
    english = list(iter_documents(DUMP))
    # Every page gives the English original's paragraphs: Datei:, Bild: and Kategorie: links vanish as File:,
    # Image: and Category: ones do ...
    assert [wikitext_to_paragraphs(d.text, d.site) for d in docs] == [wikitext_to_paragraphs(d.text) for d in english]
    # ... which an English-only link filter would not do: captions and category names leak into the text.
    leaked = "\n".join(p for d in docs for p in wikitext_to_paragraphs(d.text, ENGLISH))
    assert "thumb|" in leaked or "Kategorie:" in leaked


def test_multistream_dump_is_read_by_its_streams_identically(tmp_path):
    multi = wiki_twins.multistream(DUMP, tmp_path / "enwiki-multistream.xml.bz2")
    parts = list(iter_parts(multi))
    assert len(parts) > 1 and all(isinstance(p, StreamRange) for p in parts)
    assert _titles_and_texts(multi) == _titles_and_texts(DUMP)
    for count in (2, 3):  # the slices of a job array read every page once, in order
        sliced = [d.title for i in range(count) for p in iter_parts(multi, dump_slice=(i, count))
                  for d in part_documents(p)]
        assert sliced == [title for title, _ in _titles_and_texts(DUMP)]
    assert _pregenerate(tmp_path / "serial", DUMP, "--epochs_to_generate", "1") == 0
    assert _pregenerate(tmp_path / "parallel", multi, "--epochs_to_generate", "1", "--num_workers", "2") == 0
    assert (tmp_path / "parallel/epoch_0.json").read_bytes() == (tmp_path / "serial/epoch_0.json").read_bytes()
    assert (tmp_path / "parallel/corpus/tokens.int32").read_bytes() == (tmp_path / "serial/corpus/tokens.int32").read_bytes()


def test_punkt_trained_on_german_splits_at_abbreviations_no_worse_than_the_english_model(tmp_path):
    docs = list(iter_documents(GERMAN_TEXT))
    assert docs[0].kind == PARAGRAPHS and len(docs) > 500
    half = len(docs) // 2
    train = [p for d in docs[:half] for p in paragraphs(d)]
    held_out = [p for d in docs[half:] for p in paragraphs(d)]
    assert train_splitter(train, "de", tmp_path / "punkt_de.json", "test") > MIN_TRAINING_CHARACTERS
    english = boundary_errors(load_splitter(None), held_out, GERMAN_ABBREVIATIONS)
    german = boundary_errors(load_splitter(tmp_path / "punkt_de.json"), held_out, GERMAN_ABBREVIATIONS)
    assert german["abbreviation_sites"] >= 30 and german["sentence_end_sites"] >= 500
    assert german["false_breaks_at_abbreviations"] <= english["false_breaks_at_abbreviations"]
    assert english["false_breaks_at_abbreviations"] > 0.1  # the English model does break after z.B. and d.h.
    assert german["sentence_end_recall"] >= english["sentence_end_recall"] - 0.01 and german["sentence_end_recall"] > 0.95


def test_non_english_run_trains_and_keeps_its_sentence_model(tmp_path):
    out = tmp_path / "de"
    assert _pregenerate(out, GERMAN_TEXT, "--language", "de", "--epochs_to_generate", "1") == 0
    summary = json.loads((out / "pregenerate_summary.json").read_text())
    assert summary["language"] == "de" and summary["sentence_model"] == str(out / "punkt_de.json")
    model = (out / "punkt_de.json").read_bytes()
    # A dump says its language itself: the German twin of the English dump trains its own model.
    german_dump = wiki_twins.german(DUMP, tmp_path / "dewiki.xml.bz2")
    assert _pregenerate(tmp_path / "dump", german_dump, "--epochs_to_generate", "1") == 0
    assert json.loads((tmp_path / "dump/pregenerate_summary.json").read_text())["language"] == "de"
    assert (tmp_path / "dump/punkt_de.json").is_file()
    assert _pregenerate(out, GERMAN_TEXT, "--language", "de", "--epochs_to_generate", "2") == 0  # resumes
    assert (out / "punkt_de.json").read_bytes() == model and (out / "epoch_1.json").is_file()


@pytest.mark.parametrize("corpus,lowercase", [(DUMP, True), (TINY, True), (GERMAN_TEXT, False)],
                         ids=["206pages", "tiny", "german-cased"])
def test_memoized_wordpiece_gives_the_tokenizers_ids(corpus, lowercase, teacher_dir):
    processor = DocumentProcessor(teacher_dir / "vocab.txt", lowercase=lowercase)
    sentences = [s for d in iter_documents(corpus) for s in processor.sentences(d)]
    sentences += ["control\x1fcharacters join words", "tab\tand\u3000ideographic space", "\u00e9t\u00e9 \u4e2d\u6587 caf\u00e9"]
    direct = [e.ids for e in processor.encoder.tokenizer.encode_batch(sentences, add_special_tokens=False)]
    half = len(sentences) // 2  # a cold memo, then a warm one
    assert processor.encoder.encode(sentences[:half]) + processor.encoder.encode(sentences[half:]) == direct
    assert processor.encoder.encode(sentences) == direct
    full = WordPieceEncoder(teacher_dir / "vocab.txt", lowercase, max_chunks=50)  # past its cap, it still encodes
    assert full.encode(sentences[:half]) + full.encode(sentences[half:]) == direct and len(full.memo) == 50


def test_other_corpus_formats_give_the_same_documents(tmp_path, processor):
    plain = tmp_path / "plain.txt"
    plain.write_text("First sentence of doc one.\nSecond one here.\n\nDoc two only sentence.\n")
    docs = list(iter_documents(plain))
    assert [d.kind for d in docs] == [SENTENCES, SENTENCES]
    assert docs[0].text == ["First sentence of doc one.", "Second one here."]
    wx = tmp_path / "extracted" / "AA"
    wx.mkdir(parents=True)
    (wx / "wiki_00").write_text('<doc id="12" url="x" title="Alpha">\nAlpha\n\nAlpha is a letter. It comes first.\n</doc>\n'
                                '<doc id="13" url="y" title="Beta">\nBeta\nBeta is second.\n</doc>\n')
    (wx / "wiki_01").write_text(json.dumps({"id": "14", "title": "Gamma", "text": "Gamma\n\nGamma is third. Really."}) + "\n")
    docs = list(iter_documents(tmp_path / "extracted"))
    assert [(d.kind, d.title) for d in docs] == [(PARAGRAPHS, "Alpha"), (PARAGRAPHS, "Beta"), (PARAGRAPHS, "Gamma")]
    assert processor.sentences(docs[0]) == ["Alpha is a letter.", "It comes first."]
    assert processor.sentences(docs[2]) == ["Gamma is third.", "Really."]


def _epoch_lines(out, epoch):
    with open(out / f"epoch_{epoch}.json") as f:
        return [json.loads(line) for line in f]


def test_epochs_in_tinybert_format(tiny_run, teacher_dir):
    vocab = set((teacher_dir / "vocab.txt").read_text().splitlines())
    for epoch in (0, 1):
        lines = _epoch_lines(tiny_run, epoch)
        metrics = json.loads((tiny_run / f"epoch_{epoch}_metrics.json").read_text())
        assert metrics["num_training_examples"] == len(lines) > 100 and metrics["max_seq_len"] == 64
        assert 0.35 < np.mean([x["is_random_next"] for x in lines]) < 0.65
        for x in lines:
            assert list(x)[:5] == FIELDS
            toks, seg = x["tokens"], x["segment_ids"]
            assert len(toks) == len(seg) <= 64 and toks[0] == "[CLS]" and toks[-1] == "[SEP]"
            first_sep = toks.index("[SEP]")
            assert seg == [0] * (first_sep + 1) + [1] * (len(toks) - first_sep - 1)
            pos = x["masked_lm_positions"]
            assert pos == sorted(set(pos)) and 1 <= len(pos) <= 20 and len(x["masked_lm_labels"]) == len(pos)
            assert all(toks[p] not in ("[CLS]", "[SEP]") for p in pos)
            assert set(toks) <= vocab and set(x["masked_lm_labels"]) <= vocab
        masked = sum(x["tokens"][p] == "[MASK]" for x in lines for p in x["masked_lm_positions"])
        total = sum(len(x["masked_lm_positions"]) for x in lines)
        assert 0.75 < masked / total < 0.85  # 80% [MASK], 10% kept, 10% random
    assert _epoch_lines(tiny_run, 0) != _epoch_lines(tiny_run, 1)  # each epoch draws fresh pairs and masks


def test_line_index_seeks_to_every_instance(tiny_run):
    offsets = np.fromfile(tiny_run / "epoch_0.idx", dtype="<u8")
    data = (tiny_run / "epoch_0.json").read_bytes()
    assert offsets[-1] == len(data) and len(offsets) == data.count(b"\n") + 1
    k = len(offsets) // 2
    assert json.loads(data[offsets[k]:offsets[k + 1]])["tokens"][0] == "[CLS]"


def test_summary_and_config_written(tiny_run):
    summary = json.loads((tiny_run / "pregenerate_summary.json").read_text())
    assert summary["documents"] == 6 and summary["sentences"] > 1000 and summary["tokens"] > 30000
    assert len(summary["instances_per_epoch"]) == 2 and summary["seconds"] > 0
    assert json.loads((tiny_run / "pregenerate_config.json").read_text())["config"]["max_seq_len"] == 64


def test_deterministic_for_a_seed_and_independent_of_workers(tmp_path, tiny_run):
    assert _pregenerate(tmp_path / "w2", TINY, "--epochs_to_generate", "1", "--max_seq_len", "64", "--num_workers", "2") == 0
    assert (tmp_path / "w2" / "epoch_0.json").read_bytes() == (tiny_run / "epoch_0.json").read_bytes()
    assert _pregenerate(tmp_path / "s7", TINY, "--epochs_to_generate", "1", "--max_seq_len", "64", "--seed", "7") == 0
    assert (tmp_path / "s7" / "epoch_0.json").read_bytes() != (tiny_run / "epoch_0.json").read_bytes()


def test_whole_word_masking_masks_whole_words(tmp_path):
    assert _pregenerate(tmp_path / "wwm", TINY, "--epochs_to_generate", "1", "--do_whole_word_mask") == 0
    lines = _epoch_lines(tmp_path / "wwm", 0)
    pieces = 0
    for x in lines:
        pos = set(x["masked_lm_positions"])
        for p, label in zip(x["masked_lm_positions"], x["masked_lm_labels"]):
            if label.startswith("##"):
                pieces += 1
                # A masked word piece never stands alone, unless truncation cut its word at a segment start.
                assert p - 1 in pos or x["tokens"][p - 1] in ("[CLS]", "[SEP]")
    assert pieces > 0


def test_rerun_resumes_and_adds_epochs(tmp_path, tiny_run):
    out = tmp_path / "resume"
    assert _pregenerate(out, TINY, "--epochs_to_generate", "1", "--max_seq_len", "64") == 0
    first = (out / "epoch_0.json").stat().st_mtime_ns
    assert _pregenerate(out, TINY, "--epochs_to_generate", "2", "--max_seq_len", "64") == 0
    assert (out / "epoch_0.json").stat().st_mtime_ns == first
    assert (out / "epoch_1.json").read_bytes() == (tiny_run / "epoch_1.json").read_bytes()
    summary = json.loads((out / "pregenerate_summary.json").read_text())
    assert summary["epochs"][0]["resumed"] is True


@pytest.mark.slow
def test_sigkill_mid_epoch_leaves_no_partial_epoch_and_resumes(tmp_path, tiny_run):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pregenerate", "--train_corpus", str(DUMP), "--bert_model", "all-MiniLM-L6-v2",
           "--do_lower_case", "--epochs_to_generate", "3", "--max_seq_len", "64", "--output_dir", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".epoch_1.json.tmp-*")):
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".epoch_1.json.tmp-*")), "the run was not caught inside epoch 1"
    assert (out / "epoch_0.json").is_file() and not (out / "epoch_1.json").exists()
    complete = (out / "epoch_0.json").read_bytes()
    assert subprocess.run(cmd, cwd=REPO, capture_output=True).returncode == 0
    assert (out / "epoch_0.json").read_bytes() == complete
    assert not list(out.glob(".*tmp-*"))
    reference = tmp_path / "uninterrupted"
    assert _pregenerate(reference, DUMP, "--epochs_to_generate", "3", "--max_seq_len", "64") == 0
    for e in range(3):
        assert (out / f"epoch_{e}.json").read_bytes() == (reference / f"epoch_{e}.json").read_bytes()


def _truncated(tmp_path, fraction):
    data = DUMP.read_bytes()
    p = tmp_path / f"cut{fraction}.xml.bz2"
    p.write_bytes(data[: int(len(data) * fraction)])
    return p


def _corrupted(tmp_path, seed):
    data = bytearray(DUMP.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(100, len(data), 8):
        data[i] ^= 0xFF
    p = tmp_path / f"corrupt{seed}.xml.bz2"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("make", [lambda t: _truncated(t, f) for f in (0.001, 0.3, 0.77, 0.999)]
                         + [lambda t: _corrupted(t, s) for s in range(4)])
def test_fuzzed_dumps_fail_with_input_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(InputError, match=str(path.name)):
        for _ in iter_documents(path):
            pass


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_multistream_dump_fails_with_one_line_in_parallel(tmp_path, capsys, damage):
    multi = wiki_twins.multistream(DUMP, tmp_path / "enwiki-multistream.xml.bz2")
    data = bytearray(multi.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        for i in np.random.default_rng(0).integers(len(data) // 3, len(data), 8):
            data[i] ^= 0xFF
    broken = tmp_path / f"{damage}-multistream.xml.bz2"
    broken.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert _pregenerate(out, broken, "--num_workers", "2", "--epochs_to_generate", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and broken.name in err[0] and "bz2" in err[0], err
    assert not out.exists()


def test_truncated_uncompressed_xml_is_an_input_error(tmp_path):
    xml = bz2.decompress(TINY.read_bytes())
    p = tmp_path / "cut.xml"
    p.write_bytes(xml[: len(xml) // 2])
    with pytest.raises(InputError, match="malformed XML"):
        list(iter_documents(p))


BAD = {
    "truncated_bz2": (lambda t: ["--train_corpus", str(_truncated(t, 0.5))], "truncated compressed stream"),
    "not_xml": (lambda t: ["--train_corpus", str(_write(t / "fake.xml", b"just some text\n"))], "not an XML file"),
    "not_a_dump": (lambda t: ["--train_corpus", str(_write(t / "feed.xml", b'<?xml version="1.0"?><rss><item/></rss>'))],
                   "XML root is <rss>, not a MediaWiki dump"),
    "encoding_contradicted": (lambda t: ["--train_corpus", str(_latin1_dump(t))], "are not utf-8, the encoding its XML"),
    "unknown_encoding": (lambda t: ["--train_corpus", str(_write(t / "x.xml", b'<?xml version="1.0" encoding="x-nope"?>'
                                                                            b'<mediawiki/>'))], "unknown encoding 'x-nope'"),
    "index_of_another_dump": (lambda t: ["--train_corpus", str(_mismatched_index(t))], "does not match it"),
    "language_without_text": (lambda t: ["--language", "fr"], "--language fr: no shipped sentence model"),
    "slices_of_one_stream": (lambda t: ["--dump_part", "0", "--dump_parts", "2"], "is not a multistream dump"),
    "slice_out_of_range": (lambda t: ["--dump_part", "2", "--dump_parts", "2"], "--dump_part 2: must be in [0, --dump_parts)"),
    "empty": (lambda t: ["--train_corpus", str(_write(t / "empty.txt", b""))], "no document with text"),
    "one_document": (lambda t: ["--train_corpus", str(_write(t / "one.txt", b"Only one document here.\nTwo lines.\n"))],
                     "only one document"),
    "not_utf8": (lambda t: ["--train_corpus", str(_write(t / "latin1.txt", "Doc one.\n\nCaf\xe9 noir.\n".encode("latin-1")))],
                 "latin1.txt:3: not UTF-8"),
    "no_vocab": (lambda t: ["--bert_model", str(_write(t / "novocab" / "config.json", b"{}").parent)], "no vocab.txt"),
    "missing_corpus": (lambda t: ["--train_corpus", str(t / "nope.xml.bz2")], "no such file or directory"),
    "bad_prob": (lambda t: ["--masked_lm_prob", "1.5"], "--masked_lm_prob 1.5"),
    "cased_flag_missing": (lambda t: ["--no_lower"], "the vocabulary is uncased"),
}


def _latin1_dump(tmp):
    """UTF-8 by its declaration, but a page holds Latin-1 bytes."""
    xml = bz2.decompress(TINY.read_bytes()).replace("Anarchism is".encode(), "Anarchism \xe9s".encode("latin-1"), 1)
    return _write(tmp / "latin1.xml", xml)


def _mismatched_index(tmp):
    multi = wiki_twins.multistream(TINY, tmp / "tiny-multistream.xml.bz2")
    index = multi.with_name("tiny-multistream-index.txt.bz2")
    lines = bz2.decompress(index.read_bytes()).decode().splitlines(keepends=True)
    index.write_bytes(bz2.compress(("".join(lines[:-1]) + "123:1:Moved\n").encode()))
    return multi


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_no_output(case, tmp_path, capsys):
    make, expected = BAD[case]
    extra = make(tmp_path)
    args = {"--train_corpus": str(TINY), "--bert_model": "all-MiniLM-L6-v2"}
    flags = ["--do_lower_case"]
    i = 0
    while i < len(extra):
        if extra[i] == "--no_lower":
            flags = []
            i += 1
        else:
            args[extra[i]] = extra[i + 1]
            i += 2
    out = tmp_path / "out"
    argv = ["pregenerate", *[x for kv in args.items() for x in kv], *flags, "--output_dir", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xcompress pregenerate: error: ") and expected in err[0], err
    assert not out.exists()


def test_output_of_another_run_is_refused_and_untouched(tmp_path, tiny_run, capsys):
    out = tmp_path / "other"
    assert _pregenerate(out, TINY, "--epochs_to_generate", "1", "--max_seq_len", "64") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert _pregenerate(out, TINY, "--epochs_to_generate", "1", "--max_seq_len", "128") == 2
    assert "holds another run's epochs (different max_seq_len)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    stranger = tmp_path / "stranger"
    _write(stranger / "epoch_0.json", b'{"tokens": []}\n')
    assert _pregenerate(stranger, TINY) == 2
    assert (stranger / "epoch_0.json").read_bytes() == b'{"tokens": []}\n'
