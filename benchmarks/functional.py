"""functional_error of decomposed students against CPU time: the plain (weight-space) decomposition, whitening by
the pooled input covariance, then rounds of least squares on every block's own inputs; calibration on in-domain
text (SST-2 training sentences) and on Wikipedia (pre-generated from the shipped dump excerpt). Measured on the
same 256 SST-2 dev sentences for every row. With --recovery, `xcompress recover` from the calibrated 1/7 student,
teacher-forced, student-forced and both, its curve of error against CPU seconds.

    .venv/bin/python benchmarks/functional.py [--students minilm-td-36-192,minilm-td-36-64] [--quick]
    .venv/bin/python benchmarks/functional.py --recovery [--steps 300]

Prints a table and writes benchmarks/results/functional.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from decompose.stage import DecomposeConfig, run  # noqa: E402
from pregenerate.stage import PregenerateConfig  # noqa: E402
from pregenerate.stage import run as pregenerate  # noqa: E402

SST2 = REPO / "data/glue_data/SST-2"
RATIO = {"minilm-td-36-192": "1/7", "minilm-td-20-112": "1/30", "minilm-td-36-64": "1/48"}


def _wikipedia(work: Path) -> Path:
    out = work / "wiki-epochs"
    pregenerate(PregenerateConfig(train_corpus=str(REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"),
                                  bert_model="all-MiniLM-L6-v2", output_dir=str(out), do_lower_case=True,
                                  epochs_to_generate=1, max_seq_len=128, quiet=True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default="minilm-td-36-192,minilm-td-36-64")
    ap.add_argument("--quick", action="store_true", help="SST-2 calibration only, sweeps 0 and 3")
    ap.add_argument("--recovery", action="store_true", help="layer-wise recovery curves instead")
    ap.add_argument("--steps", type=int, default=300, help="recovery steps per forcing")
    ap.add_argument("--output", default=None, help="default: benchmarks/results/functional[_recovery].json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="functional-"))
    if args.recovery:
        return recovery(work, args.steps, args.output or str(REPO / "benchmarks/results/functional_recovery.json"))
    args.output = args.output or str(REPO / "benchmarks/results/functional.json")
    sources = {"sst2-train": str(SST2)}
    if not args.quick:
        sources["wikipedia"] = str(_wikipedia(work))
    sweeps = (0, 3) if args.quick else (0, 1, 3, 6)
    rows = []
    for student in args.students.split(","):
        settings = [("plain", None, 0)] + [(f"calibrated {n} sweeps", path, n) for path in sources.values()
                                           for n in sweeps]
        for method, source, n in settings:
            cfg = DecomposeConfig(teacher_model="all-MiniLM-L6-v2", output_dir=str(work / f"{student}-{len(rows)}"),
                                  config=str(REPO / "models" / student), calibration_data=source,
                                  calibration_sweeps=n, functional_data=str(SST2), held_out_examples=256)
            started = time.process_time()
            summary = run(cfg)
            cpu = time.process_time() - started
            cal = summary["calibration"] or {}
            rows.append({"student": student, "ratio": RATIO.get(student, "?"), "method": method,
                         "calibration_data": next((k for k, v in sources.items() if v == source), None),
                         "functional_error": summary["functional_error"]["overall"],
                         "per_layer": summary["functional_error"]["per_layer"],
                         "output_error": (cal.get("output_error_by_sweep") or [None])[-1],
                         "output_error_plain": cal.get("output_error_plain"),
                         "weight_error": summary["relative_error"], "cpu_seconds": cpu,
                         "wall_seconds": summary["seconds"]})
            r = rows[-1]
            print(f"{student:18} {r['ratio']:5} {method:22} {str(r['calibration_data']):11} "
                  f"functional {r['functional_error']:.3f}  weight {r['weight_error']:.3f}  "
                  f"cpu {cpu:6.1f} s  wall {r['wall_seconds']:5.1f} s", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"rows": rows, "held_out": "256 SST-2 dev sentences"}, indent=2) + "\n")
    print(f"-> {args.output}")


def recovery(work: Path, steps: int, output: str) -> None:
    """The calibrated 1/7 student (SST-2 calibration, 3 rounds), then recover with each forcing."""
    from distill.recover import RecoverConfig
    from distill.recover import run as recover

    start = work / "calibrated"
    run(DecomposeConfig(teacher_model="all-MiniLM-L6-v2", output_dir=str(start), calibration_data=str(SST2),
                        config=str(REPO / "models/minilm-td-36-192")))
    curves = {}
    for forcing in ("teacher", "student", "both"):
        summary = recover(RecoverConfig(teacher_model="all-MiniLM-L6-v2", student_model=str(start),
                                        calibration_data=str(SST2), output_dir=str(work / forcing), forcing=forcing,
                                        max_steps=steps, eval_steps=max(1, steps // 6), quiet=True))
        curves[forcing] = summary["curve"]
        for point in summary["curve"]:
            print(f"recover {forcing:8} step {point['step']:4}  cpu {point['cpu_seconds']:6.1f} s  "
                  f"functional {point['functional_error']:.3f}", flush=True)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps({"student": "minilm-td-36-192, calibrated on SST-2 train", "curves": curves,
                                        "held_out": "128 held-out SST-2 training sentences"}, indent=2) + "\n")
    print(f"-> {output}")


if __name__ == "__main__":
    main()
