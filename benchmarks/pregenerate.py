"""Benchmark `xcompress pregenerate`: speed per core from the raw dump, two-worker scaling, memory, cleaning
quality, sentence splitting in another language, and what a full English dump would take.

    .venv/bin/python benchmarks/pregenerate.py [--epochs 3] [--full_dump_xml_gb 105]

Everything is made from the shipped data, in one run:
  1. components, one core, on the 206-page dump: bz2 (standard library, indexed_bzip2), XML parsing, wikitext to
     prose (mwparserfromhell's parse against the regular-expression stripper), Punkt, WordPiece (the tokenizer
     against the memoized encoder, cold and warm);
  2. the real CLI end to end on dump-1x (the dump), dump-8x (its pages 8 times, one bz2 stream), dump-8x-multistream
     (the same as Wikimedia's multistream layout, with its index) and the clean text in TinyBERT's layout (1x, 8x);
     one worker pinned to one core (taskset) and two workers; the process tree's resident memory polled every 20 ms;
  3. cleaning quality on every shipped dump and the German twin: markup debris among the tokens, sentences per
     page, pages where the stripper and the parser disagree, and 20 paragraphs side by side (wikitext -> prose);
  4. sentence splitting: Punkt trained on half of the German prose (data/text) against the shipped English model,
     on the other half; and a Punkt model trained on English dump prose against the shipped one;
  5. the scale estimate: a full English pages-articles dump on 16 and 64 cores from the measured rates.
dump-8x repeats pages, so its memo and Punkt caches are warmer than a real dump's: its rate is an upper bound
and dump-1x's (cold caches, process start included) a lower one. Prints tables; writes
benchmarks/results/pregenerate.json.

Reference (issue 3, measured on this machine): the original TinyBERT pregenerate_training_data.py on this
dump's 2.9 MB of extracted text does about 1,300 instances/s (0.6 MB/s) on one process; its peak memory is
290 MB for 2.9 MB of text and 560 MB for 23 MB.
"""
from __future__ import annotations

import argparse
import bz2
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core means one core, for the tokenizer too

from compress.measure import run_measuring_rss  # noqa: E402
from pregenerate.documents import DocumentProcessor, paragraphs  # noqa: E402
from pregenerate.fast_wikitext import strip_markup  # noqa: E402
from pregenerate.sentences import boundary_errors, load_splitter, train_splitter  # noqa: E402
from pregenerate.sources import iter_documents, iter_parts, part_documents  # noqa: E402
from pregenerate.tokenize import WordPieceEncoder, vocab_file  # noqa: E402
from pregenerate.wikitext import is_disambiguation, parsed_paragraphs, wikitext_to_paragraphs  # noqa: E402
from tests import wiki_twins  # noqa: E402

DUMP = REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"
TINY = REPO / "data/wiki/enwiki-20250201-tiny.xml.bz2"
GERMAN_TEXT = REPO / "data/text/manpages-de.txt.bz2"
TINYBERT = {"instances_per_second": 1300, "megabytes_per_second": 0.6, "peak_rss_mb_1x": 290, "peak_rss_mb_8x": 560}
# Published single-core rates of the tools a user would otherwise run (MB of dump text per second).
OTHERS = {"WikiExtractor": 2.0, "wiki2txt": 9.7, "wikrs (Rust)": 47.0}
GERMAN_ABBREVIATIONS = {"z.b", "d.h", "u.a", "usw", "bzw", "ca", "nr", "vgl", "ggf", "evtl", "inkl", "bspw", "sog",
                        "etc", "dr", "prof", "abs", "o.ä", "z.t", "i.d.r", "s.o", "s.u"}
ENGLISH_ABBREVIATIONS = {"e.g", "i.e", "etc", "dr", "mr", "mrs", "ms", "st", "jr", "sr", "vs", "approx", "ca", "c",
                         "no", "vol", "pp", "ed", "eds", "u.s", "u.k", "inc", "ltd", "co", "corp", "gen", "col", "lt",
                         "jan", "feb", "mar", "apr", "aug", "sept", "sep", "oct", "nov", "dec", "fig", "al"}
DEBRIS = re.compile(r"[{}\[\]|<>]|''|==|&[a-z]+;|https?:|\bthumb\b")


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def make_inputs(work: Path) -> dict[str, Path]:
    header, pages, end = wiki_twins.split_dump(wiki_twins.dump_text(DUMP))
    dump8 = work / "dump-8x.xml.bz2"
    dump8.write_bytes(bz2.compress((header + "".join(pages * 8) + end).encode("utf-8"), 9))
    multi = wiki_twins.multistream(dump8, work / "dump-8x-multistream.xml.bz2", pages_per_stream=100)
    processor = DocumentProcessor(vocab_file("all-MiniLM-L6-v2"), lowercase=True)
    docs = [processor.sentences(d) for d in iter_documents(DUMP)]
    text = "".join("\n".join(s) + "\n\n" for s in docs if s)
    (work / "text-1x.txt").write_text(text)
    (work / "text-8x.txt").write_text(text * 8)
    return {"dump-1x": DUMP, "dump-8x": dump8, "dump-8x-multistream": multi,
            "text-1x": work / "text-1x.txt", "text-8x": work / "text-8x.txt"}


def xml_megabytes(path: Path) -> float:
    if path.suffix != ".bz2":
        return path.stat().st_size / 1e6
    with bz2.open(path, "rb") as f:
        return sum(len(b) for b in iter(lambda: f.read(1 << 22), b"")) / 1e6


def components() -> list[dict]:
    """Seconds and MB of wikitext per second of each step, one core, on the 206-page dump."""
    import indexed_bzip2

    raw = DUMP.read_bytes()
    xml, bz2_s = _timed(lambda: bz2.decompress(raw))
    _, ibz_s = _timed(lambda: indexed_bzip2.open(str(DUMP), parallelization=1).read())
    parts, read_s = _timed(lambda: list(iter_parts(DUMP)))
    docs, parse_s = _timed(lambda: [d for p in parts for d in part_documents(p)])
    docs = [d for d in docs if not is_disambiguation(d.title, d.text)]
    wiki_mb = sum(len(d.text.encode()) for d in docs) / 1e6
    _, parser_s = _timed(lambda: [parsed_paragraphs(d.text, d.site) for d in docs])
    prose, strip_s = _timed(lambda: [wikitext_to_paragraphs(d.text, d.site) for d in docs])
    splitter = load_splitter(None)
    flat = [p for ps in prose for p in ps]
    sentences, punkt_s = _timed(lambda: [s for p in flat for s in splitter.tokenize(p)])
    encoder = WordPieceEncoder(vocab_file("all-MiniLM-L6-v2"), lowercase=True)
    _, hf_s = _timed(lambda: encoder.tokenizer.encode_batch(sentences, add_special_tokens=False))
    _, cold_s = _timed(lambda: encoder.encode(sentences))
    _, warm_s = _timed(lambda: encoder.encode(sentences))
    rows = [("bz2, standard library", bz2_s), ("bz2, indexed_bzip2", ibz_s), ("read, decode, cut into parts", read_s),
            ("XML parse (expat)", parse_s),
            ("wikitext -> prose, mwparserfromhell", parser_s), ("wikitext -> prose, stripper", strip_s),
            ("Punkt (English)", punkt_s), ("WordPiece, tokenizer", hf_s), ("WordPiece, memo cold", cold_s),
            ("WordPiece, memo warm", warm_s)]
    print(f"\ncomponents, one core, 206-page dump ({len(xml) / 1e6:.1f} MB XML, {wiki_mb:.1f} MB article wikitext, "
          f"{sum(map(len, flat)) / 1e6:.1f} MB prose, {len(sentences):,} sentences)")
    print(f"{'step':<38} {'s':>6} {'MB wikitext/s':>14}")
    for name, s in rows:
        print(f"{name:<38} {s:>6.2f} {wiki_mb / s:>14.1f}")
    return [{"step": n, "seconds": s, "wikitext_mb_per_s": wiki_mb / s} for n, s in rows]


def end_to_end(inputs: dict[str, Path], epochs: int, work: Path) -> list[dict]:
    rows = []
    print(f"\nend to end ({epochs} epochs, sequence 128); MB/s: dump XML (or text) megabytes per second of the corpus pass "
          "per core")
    print(f"{'input':<20} {'workers':>7} {'input MB':>8} {'corpus s':>8} {'MB/s/core':>9} {'epochs s':>8} "
          f"{'epoch inst/s':>12} {'wall s':>7} {'peak RSS MB (per process)':>26}")
    for name, path in inputs.items():
        size = xml_megabytes(path)
        for workers in (1, 2):
            out = work / f"out-{name}-{workers}"
            cmd = [str(REPO / ".venv/bin/xcompress"), "pregenerate", "--train_corpus", str(path),
                   "--bert_model", "all-MiniLM-L6-v2", "--do_lower_case", "--epochs_to_generate", str(epochs),
                   "--max_seq_len", "128", "--num_workers", str(workers), "--output_dir", str(out), "--quiet"]
            if workers == 1:
                cmd = ["taskset", "-c", "0", *cmd]
            wall, peaks, code, err = run_measuring_rss(cmd, REPO)
            if code != 0:
                raise SystemExit(f"{name} with {workers} workers failed (exit {code}): {err[-2000:]}")
            s = json.loads((out / "pregenerate_summary.json").read_text())
            instances = sum(s["instances_per_epoch"])
            epoch_seconds = sum(e["seconds"] for e in s["epochs"])
            row = {"input": name, "workers": workers, "input_mb": size, "text_megabytes": s["text_megabytes"],
                   "corpus_seconds": s["corpus_seconds"], "mb_per_s_per_core": size / s["corpus_seconds"] / workers,
                   "mb_per_s": size / s["corpus_seconds"], "epoch_seconds": epoch_seconds, "wall_seconds": wall,
                   "instances": instances, "epoch_instances_per_second": instances / epoch_seconds,
                   "instances_per_second": instances / wall,
                   "speedup_vs_tinybert": instances / wall / TINYBERT["instances_per_second"],
                   "peak_rss_mb_per_process": sorted(round(v / 1e6) for v in peaks),
                   "sentences": s["sentences"], "documents": s["documents"]}
            rows.append(row)
            print(f"{name:<20} {workers:>7} {size:>8.1f} {row['corpus_seconds']:>8.2f} {row['mb_per_s_per_core']:>9.2f} "
                  f"{epoch_seconds:>8.2f} {row['epoch_instances_per_second']:>12,.0f} {wall:>7.1f} "
                  f"{str(row['peak_rss_mb_per_process']):>26}", flush=True)
    for name in inputs:
        one, two = (next(r for r in rows if r["input"] == name and r["workers"] == w) for w in (1, 2))
        print(f"  {name}: two workers {one['corpus_seconds'] / two['corpus_seconds']:.2f}x one worker's corpus pass, "
              f"{one['epoch_seconds'] / two['epoch_seconds']:.2f}x its epochs")
    return rows


def quality(work: Path) -> dict:
    german = wiki_twins.german(DUMP, work / "dewiki-twin.xml.bz2")
    rows, samples = [], []
    rng = random.Random(0)
    print(f"\ncleaning quality{'':<12} {'pages':>5} {'with prose':>10} {'sentences/page':>14} {'tokens':>8} "
          f"{'debris %':>8} {'stripper != parser':>18}")
    splitter = load_splitter(None)
    for name, path in (("enwiki-sample-206pages", DUMP), ("enwiki-20250201-tiny", TINY), ("dewiki twin", german)):
        docs = [d for d in iter_documents(path) if not is_disambiguation(d.title, d.text)]
        fast = [wikitext_to_paragraphs(d.text, d.site) for d in docs]
        parser = [parsed_paragraphs(d.text, d.site) for d in docs]
        tokens = [w for ps in fast for p in ps for w in p.split()]
        debris = sum(1 for w in tokens if DEBRIS.search(w))
        sentences = sum(len(splitter.tokenize(p)) for ps in fast for p in ps)
        row = {"dump": name, "pages": len(docs), "pages_with_prose": sum(1 for ps in fast if ps),
               "sentences_per_page": sentences / max(1, len(docs)), "tokens": len(tokens),
               "debris_fraction": debris / max(1, len(tokens)), "pages_differing": sum(a != b for a, b in zip(fast, parser))}
        rows.append(row)
        print(f"{name:<28} {row['pages']:>5} {row['pages_with_prose']:>10} {row['sentences_per_page']:>14.1f} "
              f"{len(tokens):>8,} {100 * row['debris_fraction']:>8.3f} {row['pages_differing']:>18}")
        if name == "enwiki-sample-206pages":
            for doc, ps in rng.sample([(d, ps) for d, ps in zip(docs, fast) if ps], 20):
                paragraph = rng.choice(ps)
                source = next((line for line in doc.text.split("\n")
                               if paragraph in " ".join(strip_markup(line, doc.site.non_text_link).split())),
                              "(spans several source lines)")
                samples.append({"page": doc.title, "wikitext": source[:400], "prose": paragraph[:400]})
    print("\n20 paragraphs side by side (wikitext line -> prose), 206-page dump:")
    for s in samples:
        print(f"- [{s['page']}]\n  wikitext: {s['wikitext'][:240]}\n  prose:    {s['prose'][:240]}")
    return {"dumps": rows, "samples": samples}


def sentence_models(work: Path) -> dict:
    results = {}
    for name, corpus, abbreviations in (("German prose (manpages-de)", GERMAN_TEXT, GERMAN_ABBREVIATIONS),
                                        ("English dump prose (206 pages)", DUMP, ENGLISH_ABBREVIATIONS)):
        docs = [p for p in (paragraphs(d) for d in iter_documents(corpus)) if p]
        half = len(docs) // 2
        model = work / f"punkt_{len(results)}.json"
        used, train_s = _timed(lambda: train_splitter([p for ps in docs[:half] for p in ps], "xx", model, "benchmark"))
        held_out = [p for ps in docs[half:] for p in ps]
        shipped = boundary_errors(load_splitter(None), held_out, abbreviations)
        trained = boundary_errors(load_splitter(model), held_out, abbreviations)
        results[name] = {"training_characters": used, "training_seconds": train_s, "shipped_english": shipped,
                         "trained": trained}
    print(f"\nsentence splitting on held-out halves {'':<8} {'abbrev. sites':>13} {'breaks at abbrev.':>17} "
          f"{'end sites':>9} {'end recall':>10}")
    for name, r in results.items():
        for label in ("shipped_english", "trained"):
            m = r[label]
            print(f"{name + ', ' + label.replace('_', ' '):<46} {m['abbreviation_sites']:>13} "
                  f"{100 * m['false_breaks_at_abbreviations']:>16.1f}% {m['sentence_end_sites']:>9} "
                  f"{100 * m['sentence_end_recall']:>9.1f}%")
    return results


def scale_estimate(rows: list[dict], full_xml_gb: float, epochs: int) -> dict:
    """Wall time of a full English dump from the measured per-core rates and two-worker efficiency."""
    def row(name, workers):
        return next(r for r in rows if r["input"] == name and r["workers"] == workers)

    estimate = {"full_dump_xml_gb": full_xml_gb, "epochs": epochs}
    one_lo, one_hi = row("dump-1x", 1), row("dump-8x-multistream", 1)
    efficiency = min(1.0, row("dump-8x-multistream", 1)["corpus_seconds"] / row("dump-8x-multistream", 2)["corpus_seconds"] / 2)
    prose_per_xml = one_hi["text_megabytes"] / one_hi["input_mb"]
    epoch_rate = row("dump-8x-multistream", 1)["epoch_instances_per_second"]
    instances_per_xml_mb = one_hi["instances"] / epochs / one_hi["input_mb"]
    print(f"\nscale estimate: a full English pages-articles dump, {full_xml_gb:.0f} GB of XML; per-core corpus rate "
          f"{one_lo['mb_per_s_per_core']:.2f} (cold, dump-1x) to {one_hi['mb_per_s_per_core']:.2f} MB/s (warm, dump-8x); "
          f"two-worker efficiency {efficiency:.2f}, assumed to hold; {epochs} epochs at {epoch_rate:,.0f} instances/s "
          f"per core; peak memory per process {max(max(r['peak_rss_mb_per_process']) for r in rows)} MB")
    for cores in (16, 64):
        corpus_h = [full_xml_gb * 1e3 / (r["mb_per_s_per_core"] * cores * efficiency) / 3600 for r in (one_lo, one_hi)]
        epoch_h = full_xml_gb * 1e3 * instances_per_xml_mb * epochs / (epoch_rate * cores * efficiency) / 3600
        estimate[f"{cores}_cores"] = {"corpus_hours": corpus_h, "epochs_hours": epoch_h}
        print(f"  {cores} cores: corpus pass {corpus_h[1]:.1f}-{corpus_h[0]:.1f} h, {epochs} epochs {epoch_h:.1f} h, "
              f"total {corpus_h[1] + epoch_h:.1f}-{corpus_h[0] + epoch_h:.1f} h")
    estimate.update(efficiency=efficiency, prose_mb_per_xml_mb=prose_per_xml)
    return estimate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--full_dump_xml_gb", type=float, default=105.0,
                    help="XML size of the full English pages-articles dump to extrapolate to (2025: about 105 GB)")
    ap.add_argument("--output", default=str(REPO / "benchmarks/results/pregenerate.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"epochs": args.epochs, "max_seq_len": 128, "tinybert_reference": TINYBERT,
                  "published_single_core_mb_per_s": OTHERS, "components": components()}
        inputs = make_inputs(work)
        result["end_to_end"] = end_to_end(inputs, args.epochs, work)
        result["quality"] = quality(work)
        result["sentence_models"] = sentence_models(work)
        result["scale_estimate"] = scale_estimate(result["end_to_end"], args.full_dump_xml_gb, args.epochs)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"published single-core rates for comparison (MB/s): {OTHERS}; wrote {args.output}")


if __name__ == "__main__":
    main()
