"""Benchmark general distillation on CPU: throughput per backend, step time split, peak memory, loss curves.

    .venv/bin/python benchmarks/general_distill.py [--curve_minutes 10] [--throughput_steps 12]

Data: epochs pre-generated from the shipped dump data/wiki/enwiki-sample-206pages.xml.bz2 (sequence 128).
Students: the embedded teacher factorized at models/minilm-td-36-192 (1/7) and models/minilm-td-36-64 (1/48).

1. Throughput at the reference settings of the original general_distill.py: student l=36 d=192, batch 32,
   sequence 128, last-layer loss (`--loss_layers last`), one process (2 threads; under tcmalloc with oneDNN
   products, as the training stages run by default, then again with the system allocator, with torch's
   default (MKL) products, and with the teacher in bfloat16 (`--teacher_bf16`, not the reference's
   settings)), then 2 ranks (1 thread each) under torchrun, horovodrun --gloo and mpirun. Samples/s exclude
   the first two steps (warm-up); peak RSS is polled for every process of the run.
2. Loss curves: each student trained for about `--curve_minutes` of CPU time with the full layer-wise loss
   on one process (step count derived from its measured throughput).

Prints tables, writes benchmarks/results/general_distill.json and general_distill_loss.png.

Reference (issue 4, measured on this machine): the original general_distill.py made to run on CPU, same
teacher and settings: 7.35 samples/s on one process with 2 threads, peak 5.1 GB; 8.26 samples/s in total
on 2 ranks under horovodrun --gloo, 5.1 GB per rank.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from compress.measure import run_measuring_rss  # noqa: E402

BIN = REPO / ".venv/bin"
REFERENCE = {"single_samples_per_second": 7.35, "two_ranks_horovod_samples_per_second": 8.26, "peak_rss_gb": 5.1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, list[int]]:
    wall, peaks, code, err = run_measuring_rss(cmd, REPO, env, poll_seconds=0.05)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{err[-3000:]}")
    return wall, peaks


def prepare(work: Path) -> tuple[Path, dict[str, Path]]:
    data = work / "pregenerated"
    subprocess.run([str(BIN / "xcompress"), "pregenerate", "--train_corpus",
                    str(REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"), "--bert_model", "all-MiniLM-L6-v2",
                    "--do_lower_case", "--epochs_to_generate", "3", "--max_seq_len", "128", "--num_workers", "2",
                    "--output_dir", str(data), "--quiet"], check=True, cwd=REPO)
    students = {}
    for name in ("minilm-td-36-192", "minilm-td-36-64"):
        students[name] = work / name
        subprocess.run([str(BIN / "xcompress"), "decompose", "--teacher_model", "all-MiniLM-L6-v2", "--config",
                        str(REPO / "models" / name / "config.json"), "--output_dir", str(students[name])],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return data, students


def distill_args(data: Path, student: Path, out: Path, steps: int, loss_layers: str) -> list[str]:
    return ["--teacher_model", "all-MiniLM-L6-v2", "--student_model", str(student), "--pregenerated_data", str(data),
            "--train_batch_size", "32", "--learning_rate", "1e-4", "--max_steps", str(steps), "--log_steps", "1",
            "--save_steps", str(steps), "--loss_layers", loss_layers, "--output_dir", str(out), "--quiet"]


def throughput(log: list[dict], batch: int = 32, skip: int = 2) -> float:
    """Samples/s between the end of step `skip` and the last step."""
    a, b = log[skip - 1], log[-1]
    return (b["step"] - a["step"]) * batch / (b["seconds"] - a["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput_steps", type=int, default=12)
    ap.add_argument("--curve_minutes", type=float, default=10.0, help="0: throughput only, no loss curves")
    ap.add_argument("--output", default=str(REPO / "benchmarks/results/general_distill.json"))
    args = ap.parse_args()
    result: dict = {"reference": REFERENCE}
    env = os.environ | {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    py = [str(BIN / "python"), "-m", "distill.general"]
    # label -> (command, environment, extra flags)
    launchers = {
        "single (2 threads)": (py, {}, []),
        "single, system malloc": (py, {"XCOMPRESS_MALLOC": "system"}, []),
        "single, MKL products": (py, {"XCOMPRESS_CPU_GEMM": "blas"}, []),
        "single, --teacher_bf16": (py, {}, ["--teacher_bf16"]),
        "torchrun 2 ranks": ([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                              "-m", "distill.general"], {}, []),
        "horovodrun --gloo 2 ranks": ([str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo", *py], {}, []),
        "mpirun 2 ranks": (["bash", str(REPO / "scripts/general_distill.sh"), "-np", "2", "--"], {}, []),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, students = prepare(work)
        print("Throughput: student 36-192, batch 32, sequence 128, last-layer loss")
        print(f"{'launcher':<26} {'samples/s':>9} {'x ref':>6} {'teacher fwd':>11} {'student f/b':>11} "
              f"{'opt+sync':>8} {'data':>6} {'malloc':>8} {'products':>8} {'peak RSS GB (per process)':>28}")
        rows = []
        for label, (launcher, extra_env, extra_flags) in launchers.items():
            out = work / f"tp-{len(rows)}"
            _, peaks = run_measured([*launcher, *distill_args(data, students["minilm-td-36-192"], out,
                                                              args.throughput_steps, "last"), *extra_flags],
                                    env | extra_env)
            log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
            summary = json.loads((out / "general_distill_summary.json").read_text())
            split = summary["time_split_seconds"]
            total_split = sum(split.values())
            sps = throughput(log)
            ref = REFERENCE["single_samples_per_second"] if label.startswith("single") else \
                REFERENCE["two_ranks_horovod_samples_per_second"]
            workers = [p for p in peaks if p > 200e6]  # the training processes, not launchers' helpers
            row = {"launcher": label, "samples_per_second": sps, "speedup_vs_reference": sps / ref,
                   "time_split_fraction": {k: v / total_split for k, v in split.items()},
                   "peak_rss_gb_per_process": [round(p / 1e9, 2) for p in peaks],
                   "peak_rss_gb_training_process": round(max(workers) / 1e9, 2), "ranks_in_sync": summary["ranks_in_sync"],
                   "allocator": summary["allocator"], "linear_products": summary["linear_products"]}
            rows.append(row)
            f = row["time_split_fraction"]
            print(f"{label:<26} {sps:>9.2f} {row['speedup_vs_reference']:>6.2f} {f['teacher_forward']:>11.0%} "
                  f"{f['student_forward_backward']:>11.0%} {f['optimizer_and_sync']:>8.0%} {f['data']:>6.0%} "
                  f"{row['allocator']:>8} {row['linear_products']:>8} "
                  f"{str(row['peak_rss_gb_per_process'][:4]):>28}", flush=True)
        result["throughput"] = rows

        curves = {}
        if args.curve_minutes > 0:
            print(f"Loss curves: about {args.curve_minutes} min each, one process, full layer-wise loss")
        for name, student in students.items() if args.curve_minutes > 0 else ():
            probe = work / f"probe-{name}"
            run_measured([*py, *distill_args(data, student, probe, 6, "all")], env)
            sps = throughput([json.loads(x) for x in (probe / "log.jsonl").read_text().splitlines()])
            steps = max(10, int(args.curve_minutes * 60 * sps / 32))
            out = work / f"curve-{name}"
            wall, peaks = run_measured([*py, *distill_args(data, student, out, steps, "all")], env)
            log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
            curves[name] = {"steps": steps, "wall_seconds": wall, "samples_per_second": throughput(log),
                            "peak_rss_gb": round(max(peaks) / 1e9, 2),
                            "curve": [{"step": x["step"], "loss": x["loss"], "attention": x["attention"],
                                       "hidden": x["hidden"], "seconds": x["seconds"]} for x in log]}
            first, last = log[0]["loss"], log[-1]["loss"]
            print(f"  {name}: {steps} steps in {wall / 60:.1f} min, {curves[name]['samples_per_second']:.2f} samples/s, "
                  f"loss {first:.3f} -> {last:.3f} ({last / first:.1%} of the first), peak {curves[name]['peak_rss_gb']} GB",
                  flush=True)
        result["loss_curves"] = curves

    out_json = Path(args.output)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_json}")
    if curves:
        plot(curves, out_json.with_name(out_json.stem + "_loss.png"))
        print(f"wrote {out_json.with_name(out_json.stem + '_loss.png')}")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, c in curves.items():
        ax.plot([x["seconds"] / 60 for x in c["curve"]], [x["loss"] for x in c["curve"]], label=name)
    ax.set_xlabel("minutes of CPU training (1 process, 2 threads)")
    ax.set_ylabel("distillation loss (attention + hidden)")
    ax.set_yscale("log")
    ax.set_title("General distillation: all-MiniLM-L6-v2 teacher, shipped Wikipedia dump", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
