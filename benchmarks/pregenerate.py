"""Benchmark `xcompress pregenerate`: throughput and peak memory, from the raw dump and from extracted text.

    .venv/bin/python benchmarks/pregenerate.py [--epochs 3]

Inputs, all made from the shipped dump data/wiki/enwiki-sample-206pages.xml.bz2:
  dump-1x       the dump itself
  dump-8x       its pages repeated 8 times, as one .xml.bz2
  text-1x/8x    the clean text the dump yields, in TinyBERT's layout (one sentence per line, blank line
                between documents), once and repeated 8 times
Each runs the real CLI in a subprocess with 1 and 2 workers, 3 epochs, sequence 128; the process tree is
polled every 20 ms for each process's resident memory. Prints a table and writes
benchmarks/results/pregenerate.json.

Reference (issue 3, measured on this machine): the original TinyBERT pregenerate_training_data.py on this
dump's 2.9 MB of extracted text does about 1,300 instances/s (0.6 MB/s) on one process; its peak memory is
290 MB for 2.9 MB of text and 560 MB for 23 MB.
"""
from __future__ import annotations

import argparse
import bz2
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from compress.measure import run_measuring_rss  # noqa: E402
from pregenerate.documents import DocumentProcessor  # noqa: E402
from pregenerate.sources import iter_documents  # noqa: E402
from pregenerate.tokenize import vocab_file  # noqa: E402

DUMP = REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"
TINYBERT = {"instances_per_second": 1300, "megabytes_per_second": 0.6, "peak_rss_mb_1x": 290, "peak_rss_mb_8x": 560}


def make_inputs(work: Path) -> dict[str, Path]:
    xml = bz2.decompress(DUMP.read_bytes()).decode("utf-8")
    head, rest = xml.split("<page>", 1)
    pages = "<page>" + rest[: rest.rindex("</mediawiki>")]
    dump8 = work / "dump-8x.xml.bz2"
    dump8.write_bytes(bz2.compress((head + pages * 8 + "</mediawiki>\n").encode("utf-8"), 6))
    processor = DocumentProcessor(vocab_file("all-MiniLM-L6-v2"), lowercase=True)
    docs = [processor.sentences(d) for d in iter_documents(DUMP)]
    text = "".join("\n".join(s) + "\n\n" for s in docs if s)
    (work / "text-1x.txt").write_text(text)
    (work / "text-8x.txt").write_text(text * 8)
    return {"dump-1x": DUMP, "dump-8x": dump8, "text-1x": work / "text-1x.txt", "text-8x": work / "text-8x.txt"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--output", default=str(REPO / "benchmarks/results/pregenerate.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = make_inputs(work)
        print(f"{'input':<9} {'workers':>7} {'text MB':>8} {'corpus s':>9} {'epochs s':>9} {'inst/s':>8} "
              f"{'epoch inst/s':>12} {'MB/s':>6} {'x TinyBERT':>10} {'peak RSS MB (per process)':>26}")
        for name, path in inputs.items():
            for workers in (1, 2):
                out = work / f"out-{name}-{workers}"
                cmd = [str(REPO / ".venv/bin/xcompress"), "pregenerate", "--train_corpus", str(path),
                       "--bert_model", "all-MiniLM-L6-v2", "--do_lower_case", "--epochs_to_generate", str(args.epochs),
                       "--max_seq_len", "128", "--num_workers", str(workers), "--output_dir", str(out), "--quiet"]
                wall, peaks, code, err = run_measuring_rss(cmd, REPO)
                if code != 0:
                    raise SystemExit(f"{name} with {workers} workers failed (exit {code}): {err[-2000:]}")
                s = json.loads((out / "pregenerate_summary.json").read_text())
                instances = sum(s["instances_per_epoch"])
                epoch_seconds = sum(e["seconds"] for e in s["epochs"])
                row = {
                    "input": name, "workers": workers, "text_megabytes": s["text_megabytes"],
                    "corpus_seconds": s["corpus_seconds"], "epoch_seconds": epoch_seconds, "wall_seconds": wall,
                    "instances": instances, "instances_per_second": instances / wall,
                    "epoch_instances_per_second": instances / epoch_seconds,
                    "megabytes_per_second": s["text_megabytes"] * args.epochs / wall,
                    "speedup_vs_tinybert": instances / wall / TINYBERT["instances_per_second"],
                    "peak_rss_mb_per_process": sorted(round(v / 1e6) for v in peaks),
                }
                rows.append(row)
                print(f"{name:<9} {workers:>7} {row['text_megabytes']:>8.1f} {row['corpus_seconds']:>9.1f} "
                      f"{epoch_seconds:>9.1f} {row['instances_per_second']:>8,.0f} "
                      f"{row['epoch_instances_per_second']:>12,.0f} {row['megabytes_per_second']:>6.2f} "
                      f"{row['speedup_vs_tinybert']:>10.1f} {str(row['peak_rss_mb_per_process']):>26}", flush=True)
    result = {"epochs": args.epochs, "max_seq_len": 128, "tinybert_reference": TINYBERT, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"instances/s and MB/s are end to end (wall time of the whole command, {args.epochs} epochs); "
          f"wrote {args.output}")


if __name__ == "__main__":
    main()
