"""Benchmark the decompose stage: factorization speed/error and TD-model inference cost.

    .venv/bin/python benchmarks/decompose.py            # everything (about 15 min on 2 cores)
    .venv/bin/python benchmarks/decompose.py --quick    # MiniLM only

1. Factorization, same tensor and same run: `--init fast` (one-shot, 1 sweep, converged) against tensorly's
   Tucker/HOOI with the paper code's settings (init='random', n_iter_max=100, tol=1e-4, float32), on
   - the embedded teacher's real stack (72 x 384 x 384) at the shipped MiniLM configs;
   - a BERT-base-size stack (144 x 768 x 768) TILED from the teacher's real blocks (each 768 x 768 block is
     a 2 x 2 tiling of four real 384 x 384 blocks), at the shipped BERT-base configs.
2. Inference, CPU, sequence 128, batch 1 and 32: median latency (teacher and student runs interleaved),
   peak RSS of a fresh process that loads the model and runs batch 32, weights size on disk. MiniLM students
   come from the real teacher; BERT-base latency uses random weights of that geometry (no BERT-base
   checkpoint ships here; latency does not depend on the values).

Prints tables and writes benchmarks/results/decompose.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from compress.measure import dummy_batch, size_on_disk  # noqa: E402
from decompose.stage import DecomposeConfig  # noqa: E402
from decompose.stage import run as run_decompose
from decompose.tucker import decompose_fast, decompose_hooi, relative_errors  # noqa: E402
from modeling import TuckerBertModel  # noqa: E402
from modeling.formats import DENSE, ENCODER  # noqa: E402
from modeling.loading import load_model  # noqa: E402
from modeling.stacking import BLOCK_TYPE, block_layout  # noqa: E402
from decompose.blocks import stack_encoder_blocks  # noqa: E402
from stagekit.model_paths import embedded_teacher_dir  # noqa: E402

MINILM_CONFIGS = [(36, 192), (20, 112), (36, 64)]
BERT_BASE_CONFIGS = [(72, 384), (36, 256)]


def tiled_bert_base_stack(W: torch.Tensor) -> torch.Tensor:
    """(144, 768, 768) from (72, 384, 384): block i tiles real blocks 4i..4i+3 (mod 72) as a 2 x 2 grid."""
    n = W.shape[0]
    out = []
    for i in range(144):
        a, b, c, d = (W[(4 * i + k) % n] for k in range(4))
        out.append(torch.cat([torch.cat([a, b], 1), torch.cat([c, d], 1)], 0))
    return torch.stack(out)


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def factorization_rows(name: str, W: torch.Tensor, configs, types) -> list[dict]:
    rows = []
    W64 = W.double()
    decompose_fast(W, *configs[-1])  # warm up the BLAS/LAPACK paths once
    for l, d in configs:
        hooi, t_hooi = timed(lambda: decompose_hooi(W, l, d))
        e_hooi = relative_errors(W64, hooi.reconstruct().double(), types)["overall"]
        row = {"tensor": name, "rank_layer": l, "rank_dim": d, "hooi_seconds": t_hooi, "hooi_error": e_hooi,
               "hooi_iterations": hooi.iterations}
        for label, sweeps in (("oneshot", 0), ("fast", 1), ("converged", 20)):
            res, t = timed(lambda: decompose_fast(W, l, d, sweeps=sweeps))
            err = relative_errors(W64, res.reconstruct().double(), types)["overall"]
            row |= {f"{label}_seconds": t, f"{label}_error": err, f"{label}_speedup": t_hooi / t,
                    f"{label}_sweeps": res.iterations}
        rows.append(row)
        print(f"  {name} {l}-{d}: hooi {t_hooi:.2f}s err {e_hooi:.4f} ({hooi.iterations} it) | "
              f"one-shot {row['oneshot_seconds']:.2f}s err {row['oneshot_error']:.4f} | "
              f"fast {row['fast_seconds']:.2f}s err {row['fast_error']:.4f} | "
              f"converged {row['converged_seconds']:.2f}s err {row['converged_error']:.4f}", flush=True)
    return rows


def _peak_rss_child(model_dir: str, is_td: bool, queue) -> None:
    from transformers import BertModel

    torch.set_num_threads(2)
    model = (TuckerBertModel if is_td else BertModel).from_pretrained(model_dir).eval()
    with torch.inference_mode():
        model(**dummy_batch(32, 128, model.config.vocab_size))
    # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the parent's peak.
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    queue.put(hwm_kb * 1024)


def peak_rss(model_dir: Path, is_td: bool) -> int:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_rss_child, args=(str(model_dir), is_td, q))
    p.start()
    value = q.get()
    p.join()
    return value


@torch.inference_mode()
def interleaved_latency(models: dict, batch_size: int, rounds: int, block: int = 3) -> dict[str, float]:
    """Median latency per model. Models take turns in blocks of `block` back-to-back runs: turns spread
    machine noise over all models alike, and back-to-back runs keep each model's weights as warm in cache
    as they are when one model is served."""
    batch = dummy_batch(batch_size, 128, 30522)
    for m in models.values():
        m.eval()
        m(**batch)
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            m(**batch)
            for _ in range(block):
                t = time.perf_counter()
                m(**batch)
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def latency_rows(label: str, teacher_dir: Path, students: dict[str, Path], repeats: int) -> list[dict]:
    from transformers import BertModel

    models = {"teacher": BertModel.from_pretrained(str(teacher_dir))}
    models |= {k: TuckerBertModel.from_pretrained(str(p)) for k, p in students.items()}
    lat = {bs: interleaved_latency(models, bs, repeats if bs == 1 else max(2, repeats // 3)) for bs in (1, 32)}
    dirs = {"teacher": teacher_dir} | students
    rows = []
    for k in models:
        row = {"geometry": label, "model": k, "latency_b1_s": lat[1][k], "latency_b32_s": lat[32][k],
               "speedup_b1": lat[1]["teacher"] / lat[1][k], "speedup_b32": lat[32]["teacher"] / lat[32][k],
               "size_on_disk_bytes": size_on_disk(dirs[k]), "peak_rss_bytes": peak_rss(dirs[k], k != "teacher")}
        rows.append(row)
        print(f"  {label} {k:<18} b1 {row['latency_b1_s'] * 1e3:8.1f} ms ({row['speedup_b1']:.2f}x)  "
              f"b32 {row['latency_b32_s'] * 1e3:8.1f} ms ({row['speedup_b32']:.2f}x)  "
              f"disk {row['size_on_disk_bytes'] / 1e6:6.1f} MB  peak RSS {row['peak_rss_bytes'] / 1e6:6.0f} MB", flush=True)
    return rows


def bert_base_dirs(root: Path) -> tuple[Path, dict[str, Path]]:
    """A random BERT-base-geometry teacher and TD students of the shipped BERT-base configs."""
    from transformers import BertConfig, BertModel

    from modeling import TuckerBertConfig

    geo = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    torch.manual_seed(0)
    BertModel(BertConfig(**geo)).save_pretrained(root / "bert-base-random")
    students = {}
    for l, d in BERT_BASE_CONFIGS:
        TuckerBertModel(TuckerBertConfig(rank_layer=l, rank_dim=d, **geo)).save_pretrained(root / f"bert-td-{l}-{d}")
        students[f"bert-td-{l}-{d}"] = root / f"bert-td-{l}-{d}"
    return root / "bert-base-random", students


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MiniLM only (skips the BERT-base-size runs)")
    ap.add_argument("--repeats", type=int, default=8, help="rounds of turns at batch 1 (a third at batch 32)")
    ap.add_argument("--output", default=str(REPO / "benchmarks/results/decompose.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    teacher_dir = embedded_teacher_dir()
    teacher, _ = load_model(str(teacher_dir), "--teacher_model", ENCODER, kinds=(DENSE,))
    W = stack_encoder_blocks(teacher, "san_ffn", dtype=torch.float32)
    print("Factorization (float32 input; errors measured in float64)")
    rows = factorization_rows("minilm-72x384x384-real", W, MINILM_CONFIGS,
                              [BLOCK_TYPE[k] for _, k in block_layout(6, "san_ffn")])
    if not args.quick:
        Wb = tiled_bert_base_stack(W)
        rows += factorization_rows("bert-base-144x768x768-tiled", Wb, BERT_BASE_CONFIGS,
                                   [BLOCK_TYPE[k] for _, k in block_layout(12, "san_ffn")])
    result["factorization"] = rows

    print("Inference (CPU, sequence 128)")
    with tempfile.TemporaryDirectory() as tmp:
        students = {}
        for l, d in MINILM_CONFIGS:
            out = Path(tmp) / f"minilm-td-{l}-{d}"
            run_decompose(DecomposeConfig(teacher_model=str(teacher_dir), output_dir=str(out), rank_layer=l, rank_dim=d))
            students[out.name] = out
        lat = latency_rows("minilm", teacher_dir, students, args.repeats)
        if not args.quick:
            bb_teacher, bb_students = bert_base_dirs(Path(tmp))
            lat += latency_rows("bert-base", bb_teacher, bb_students, max(3, args.repeats // 3))
    result["inference"] = lat

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
