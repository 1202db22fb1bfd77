"""How much of the teacher's accuracy the compressed students keep, on GLUE's full dev sets, per route, with the CPU
minutes every stage took. Teachers (the embedded all-MiniLM-L6-v2) are fine-tuned on each task's full training set.

Routes from a dense teacher to a TD student (each stage through the real CLI):
  general  plain decomposition, general distillation on Wikipedia, both phases of task distillation on augmented
           data (TinyBERT's and the paper's route)
  recover  decomposition calibrated on Wikipedia, layer-wise recovery on the task's training text, prediction
           distillation on real training sentences
  task     the fine-tuned teacher decomposed with its task's training text as calibration (pooler and classifier
           kept), layer-wise recovery against the fine-tuned teacher, prediction distillation as above

Dense students of the same teacher at the TD students' encoder sizes (DENSE: `xcompress dense-student` keeps
chosen layers of the fine-tuned teacher, its FFN neurons and heads ranked by taylor importance on the task), each
distilled with TinyBERT's two phases on the same task text and budget as the TD route (layer-wise steps as many as
recovery's, then the same prediction distillation): the baseline the TD students have to beat at equal size.

Same function, same result (--families): the fine-tuned teacher moved into RoBERTa's or DistilBERT's layout
(tests/transplants.py: the same encoder function under another model_type; RoBERTa's head is BERT's shape and comes
along, DistilBERT's ReLU head is trained by a short fine-tuning of the transplant) goes through the task route to
its TD student, which should score as the BERT original's does.

The best route (BEST) runs for every task and student; the routes are compared side by side on --compare tasks
for the first student. Every stage's output and timing is kept in --work: a rerun resumes where it stopped, and a
--tasks/--students/--routes subset runs alone.

Budgets spent where the signal forms (--students 1/7+front 1/7+front64 1/48+front 1/48+front14): TD students with a
smaller shared core and layers 0 and 1's own low-rank corrections, at about the uniform students' sizes, on every
route as the others.

Pairs mined for pair tasks (--mined_pairs): `xcompress mine-pairs` pairs each training sentence with its nearest
sentences by the teacher's embeddings and with random ones, the teacher labels them, and a second task-route arm
(task+mined) distils predictions on them from the same recovered student, with the same steps: the plain arm is the
before, this the after. Single-sentence tasks the same way (--augmented): TinyBERT's word replacement (`xcompress
augment`, a masked-LM head fitted to the teacher on Wikipedia) of every row the teacher saw, up to 20 variants each,
labelled by the teacher in the prediction phase (task+augmented). `--aug_phases layerwise` gives those rows to the
layer-wise phase instead (TinyBERT's intermediate phase on augmented data: a recovery of its own, "-aug", that reads
each row once), and `both` to both phases.

    .venv/bin/python benchmarks/accuracy.py [--tasks SST-2 MRPC STS-B CoLA] [--students 1/7 1/48 1/7+front ...]
        [--routes task recover general] [--compare SST-2 STS-B] [--dense 1-layer 2-layers-ffn192 ...]
        [--families roberta distilbert] [--mined_pairs] [--augmented] [--teacher_examples N] [--prediction_steps 300] [--recover_steps 200]
        [--aug_phases prediction] [--budget cpu] [--hard_label_weight 0] [--prediction_lr 1e-4] [--pred_loss soft_ce]
        [--seed 42] [--ema_decay 0]
        [--work runs/bench-accuracy]

TinyBERT's own task-distillation budget (--budget tinybert, for a GPU: every stage takes one when it is visible):
data augmented x20 (SST-2) or x30 (word replacement; pair tasks: mine-pairs' defaults), 10 epochs of the layer-wise
phase and 3 of predictions at 3e-5 over it, for the task route and the dense students; steps per task from the size
of its train_aug.tsv; the results name the device they ran on.

A longer budget (--prediction_steps 1500: every student's prediction phase five times as long, on as many fresh
training rows) writes its own results file (accuracy-...-p1500.json) and its curve of score against CPU minutes.

Prints a table (score, % of teacher, encoder params, latency at batch 1 and 32, CPU minutes per stage), writes
benchmarks/results/accuracy.json and a plot of score against cumulative CPU minutes per route (accuracy.png).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
XC = str(REPO / ".venv/bin/xcompress")
TASKS = ("SST-2", "MRPC", "STS-B", "CoLA")
# TD students: their decompose flags. "+front" students spend part of the budget where the pair signal forms (the
# probe: the teacher's first two layers): a smaller shared core plus each of layers 0 and 1's own rank-r correction
# (--residual_ranks), at about the uniform student's encoder parameters (1/7: 1.46 M against 1.50 M; 1/48: 0.21 M
# against 0.22 M). "+front64" moves more of the 1/7 budget there (core 128 wide, rank-64 corrections: 1.50 M);
# "+front14" nearly all of the 1/48 budget (core 16 wide, rank-14 corrections: 0.217 M).
STUDENTS = {"1/7": ["--config", "models/minilm-td-36-192"], "1/48": ["--config", "models/minilm-td-36-64"],
            "1/7+front": ["--rank_layer", "36", "--rank_dim", "160", "--residual_ranks", "0:32,1:32"],
            "1/7+front64": ["--rank_layer", "36", "--rank_dim", "128", "--residual_ranks", "0:64,1:64"],
            "1/48+front": ["--rank_layer", "36", "--rank_dim", "40", "--residual_ranks", "0:8,1:8"],
            "1/48+front14": ["--rank_layer", "36", "--rank_dim", "16", "--residual_ranks", "0:14,1:14"]}
DEFAULT_STUDENTS = ["1/7", "1/48"]
ROUTES = ("task", "recover", "general")
BEST = "task"
TEACHER = "all-MiniLM-L6-v2"
TEACHER_ENCODER_PARAMS = 10_637_568
SEQ = 128
# Budgets: one per stage, the same for every task (the small tasks' teachers see more epochs of fewer rows).
SETTINGS = {
    "teacher_epochs": {"SST-2": 1, "MRPC": 3, "STS-B": 3, "CoLA": 3}, "teacher_lr": "5e-5",
    "pregen_epochs": 1, "mlm_examples": 3000, "aug_rows": 2000, "aug_n": 4,
    "calibration_examples": 512, "recover_examples": 4096, "recover_steps": 200, "recover_lr": "1e-3",
    "general_steps": 300, "general_lr": "5e-4",
    "eval_step": 50,
    "mined_neighbours": 3, "mined_random": 2,  # --mined_pairs: partners per training sentence (STS-B: ~50,000 pairs)
    "augmented_n": 20,  # --augmented: variants per sentence (TinyBERT: x20 SST-2, x30 CoLA; distinct ones kept)
}


# Task distillation per route. The general route is TinyBERT's (both phases, augmented data) at the rate the demo's
# plain student learns with. Students that start close to their teacher collapse to one class at 1e-3 (measured on
# the demo's SST-2: dev 0.509), so they distil predictions only, at 1e-4, on real training sentences (there:
# 0.7695 against 0.7603 on 1,248 augmented rows, same steps).
# The prediction phase's steps (--prediction_steps; each reads a batch of 32 rows it has not read before).
PREDICTION_STEPS = 300


PREDICTION_LR = 1e-4
TASK_DISTILL_SEED = 42  # xcompress task-distill's own default
# TinyBERT's task-distillation budget (--budget tinybert, its README's commands, batch 32): the intermediate phase
# 10 epochs and the prediction phase 3 epochs at 3e-5 over its augmented data, x20 for SST-2 and x30 for the others
# (pair tasks: mine-pairs' defaults, about 30 new pairs per training pair). The TD students' layer-wise phase keeps
# its rate (1e-3: the factors start far from the teacher's function); dense students take TinyBERT's 5e-5.
TINYBERT = {"layerwise_epochs": 10, "prediction_epochs": 3, "prediction_lr": 3e-5, "intermediate_lr": "5e-5",
            "augmented_n": {"SST-2": 20, "CoLA": 30}}


@dataclass(frozen=True)
class Prediction:
    """The prediction phase of the task and recover routes. A weight of gold labels, a rate, a loss or a seed other
    than the defaults is an arm of its own: its task-distill stages (from the same recovered students) and its
    results file carry `suffix`, so it runs beside the plain arm in one --work. Dense students keep the defaults."""
    steps: int = PREDICTION_STEPS
    hard_label_weight: float = 0.0
    learning_rate: float = PREDICTION_LR
    seed: int = TASK_DISTILL_SEED
    pred_loss: str = "soft_ce"
    ema_decay: float = 0.0

    @property
    def suffix(self) -> str:
        return ((f"-hl{self.hard_label_weight:g}" if self.hard_label_weight else "")
                + (f"-lr{self.learning_rate:g}" if self.learning_rate != PREDICTION_LR else "")
                + (f"-{self.pred_loss}" if self.pred_loss != "soft_ce" else "")
                + (f"-s{self.seed}" if self.seed != TASK_DISTILL_SEED else "")
                + (f"-ema{self.ema_decay:g}" if self.ema_decay else ""))

    def flags(self, route: str) -> list[str]:
        seed = ["--seed", str(self.seed)]
        if route == "general":
            return ["--aug_train", "--stage", "both", "--intermediate_max_steps", "100", "--intermediate_learning_rate",
                    "1e-3", "--max_steps", str(self.steps), "--learning_rate", "1e-3", *seed]
        extra = ["--hard_label_weight", str(self.hard_label_weight)] if self.hard_label_weight else []
        extra += ["--ema_decay", f"{self.ema_decay:g}"] if self.ema_decay else []
        return ["--stage", "prediction", "--max_train_examples", str(32 * self.steps), "--max_steps", str(self.steps),
                "--learning_rate", f"{self.learning_rate:g}", "--pred_loss", self.pred_loss, *extra, *seed]


# Dense students by name: their dense-student flags. Sizes (encoder parameters) against TD 1/7's 1.50 M and 1/48's
# 0.22 M: 3 of 6 layers 5.32 M, one layer 1.77 M, two layers with 192 FFN neurons 1.48 M, one layer with 2 heads and
# 128 FFN neurons 0.20 M.
DENSE = {"3-of-6-layers": ["--layer_stride", "2"], "1-layer": ["--keep_layers", "0"],
         "2-layers-ffn192": ["--keep_layers", "0,1", "--intermediate_size", "192"],
         "1-layer-2heads-ffn128": ["--keep_layers", "0", "--num_attention_heads", "2", "--intermediate_size", "128"]}
# Layer-wise distillation as many steps as the TD route's recovery (at the prediction phase's rate: the student
# starts as the teacher's own layers), then the TD route's prediction distillation. A student with fewer heads than
# the teacher has no head-by-head attention loss: it distils predictions only, for all the steps.
def dense_flags(name: str, steps: int, layerwise_steps: int = SETTINGS["recover_steps"], tinybert: bool = False
                ) -> list[str]:
    """`tinybert`: TinyBERT's budget and rates on the task's train_aug.tsv (`steps`, `layerwise_steps` its own)."""
    lr, intermediate_lr = ((f"{TINYBERT['prediction_lr']:g}", TINYBERT["intermediate_lr"]) if tinybert
                           else ("1e-4", "1e-4"))
    aug = ["--aug_train"] if tinybert else []
    if "--num_attention_heads" in DENSE[name]:
        return ["--stage", "prediction", *aug, "--max_train_examples", str(32 * steps), "--max_steps",
                str(steps + layerwise_steps), "--learning_rate", lr]
    return ["--stage", "both", *aug, "--intermediate_max_steps", str(layerwise_steps),
            "--intermediate_learning_rate", intermediate_lr, "--max_train_examples", str(32 * steps), "--max_steps",
            str(steps), "--learning_rate", lr]


# Families whose transplants of the fine-tuned teacher take the task route (the first --students entry), and the
# fine-tuning that trains a head the BERT original cannot hand over (DistilBERT's ReLU pre-classifier).
FAMILIES = ("roberta", "distilbert")
HEAD_TRAINING = {"distilbert": ["--max_steps", "100", "--learning_rate", "5e-5", "--eval_step", "100"]}


# Stages that write train_aug.tsv into the task's data rather than a model directory of their own.
DATA_STAGES = ("augment", "mine-pairs")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Runner:
    """Runs CLI stages, recording wall and CPU minutes in <work>/timings.json; a stage whose output exists and whose
    timing is recorded is not run again. Each record is merged into the file as it stands, so two runs of different
    arms in one --work (after their shared stages) keep each other's timings."""

    def __init__(self, work: Path):
        self.file = work / "timings.json"
        self.timings = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def __call__(self, key: str, out: Path, stage: str, *args: str) -> Path:
        done = out if stage == "pregenerate" or stage in DATA_STAGES else out / "config.json"
        if key in self.timings and done.exists():
            return out
        wall, cpu = time.perf_counter(), cpu_seconds()
        target = [] if stage in DATA_STAGES else ["--output_dir", str(out), "--overwrite_output_dir"]
        quiet = [] if stage == "decompose" else ["--quiet"]  # decompose prints one line anyway
        r = subprocess.run([XC, stage, *args, *target, *quiet], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{key} failed:\n{r.stderr[-3000:]}")
        self.timings[key] = {"wall_minutes": (time.perf_counter() - wall) / 60,
                             "cpu_minutes": (cpu_seconds() - cpu) / 60}
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        print(f"  {key}: {self.timings[key]['cpu_minutes']:.1f} CPU min ({self.timings[key]['wall_minutes']:.1f} "
              f"wall) | {last}", flush=True)
        on_disk = json.loads(self.file.read_text()) if self.file.is_file() else {}
        self.timings = {**on_disk, **self.timings}
        tmp = self.file.with_suffix(f".{os.getpid()}")
        tmp.write_text(json.dumps(self.timings, indent=1))
        tmp.replace(self.file)
        return out

    def cpu(self, key: str) -> float:
        return self.timings[key]["cpu_minutes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--students", nargs="+", default=DEFAULT_STUDENTS, choices=list(STUDENTS))
    ap.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES,
                    help=f"routes run on the --compare tasks ({BEST}, the best, runs everywhere)")
    ap.add_argument("--compare", nargs="*", default=["SST-2", "STS-B"], choices=TASKS)
    ap.add_argument("--dense", nargs="*", default=list(DENSE), choices=list(DENSE),
                    help="dense students distilled on every task (none: --dense with no names)")
    ap.add_argument("--families", nargs="*", default=[], choices=FAMILIES,
                    help="transplant each task's teacher into these families and take the task route there too")
    ap.add_argument("--teacher_examples", type=int, default=None,
                    help="fine-tune the teachers on a seeded subset of this many training rows (a run that fits a "
                         "session; use its own --work: the default run's teachers see the full training sets)")
    ap.add_argument("--prediction_steps", type=int, default=PREDICTION_STEPS,
                    help="steps of every student's prediction phase (a longer budget: use its own --work)")
    ap.add_argument("--recover_steps", type=int, default=SETTINGS["recover_steps"],
                    help="steps of the task route's layer-wise recovery (TinyBERT's ablation puts the transformer-"
                         "layer losses first for CoLA and MRPC); other values run beside the default in one --work")
    ap.add_argument("--hard_label_weight", type=float, default=0.0,
                    help="prediction phase of the task and recover routes: weight of the gold labels' loss mixed "
                         "with the teacher's (a student its soft targets pull to the majority class); other values "
                         "than 0 name their own task-distill stages beside the plain ones in one --work")
    ap.add_argument("--augmented", action="store_true",
                    help="single-sentence tasks: augment every training row the teacher saw by word replacement "
                         "(xcompress augment) and add a task-route arm whose prediction phase reads those rows, from "
                         "the same recovered student as the plain arm")
    ap.add_argument("--mined_pairs", action="store_true",
                    help="pair tasks: mine new pairs labelled by the teacher (xcompress mine-pairs) and add a "
                         "task-route arm whose prediction phase reads them, from the same recovered student as the "
                         "plain arm")
    ap.add_argument("--aug_phases", choices=("prediction", "layerwise", "both"), default="prediction",
                    help="with --augmented or --mined_pairs: the phases of that arm that read the new rows (the "
                         "layer-wise phase: a recovery of its own, one pass over as many rows as it has steps of 32, "
                         "TinyBERT's intermediate phase on augmented data)")
    ap.add_argument("--budget", choices=("cpu", "tinybert"), default="cpu",
                    help="tinybert: TinyBERT's task-distillation budget for the task route (the only one it runs) "
                         "and the dense students (10 layer-wise and 3 prediction epochs over data augmented x20-x30, "
                         "both phases on it; hours of a GPU, where every stage runs when one is visible): use its own "
                         "--work")
    ap.add_argument("--work", default=str(REPO / "runs/bench-accuracy"))
    ap.add_argument("--prediction_lr", type=float, default=PREDICTION_LR,
                    help="prediction phase of the task and recover routes: its learning rate; another value names "
                         "its own stages as --hard_label_weight does")
    ap.add_argument("--seed", type=int, default=TASK_DISTILL_SEED,
                    help="seed of the routes' task-distill stages (batch order, dropout; dense students keep 42): "
                         "another value names its own stages from the same recovered students, to measure how far "
                         "a score moves between runs")
    ap.add_argument("--pred_loss", choices=("soft_ce", "mse"), default="soft_ce",
                    help="prediction phase of the task and recover routes: the teacher's soft targets by cross-"
                         "entropy, or its logits by mean squared error; mse names its own stages")
    ap.add_argument("--ema_decay", type=float, default=0.0,
                    help="prediction phase of the task and recover routes: score and keep the moving average of the "
                         "weights with this decay (task-distill --ema_decay); another value than 0 names its own stages")
    args = ap.parse_args()
    if not 0 <= args.hard_label_weight <= 1:
        ap.error(f"--hard_label_weight {args.hard_label_weight:g}: a weight between 0 and 1")
    budget_set = [f for f, on in (("--recover_steps", args.recover_steps != SETTINGS["recover_steps"]),
                                  ("--prediction_steps", args.prediction_steps != PREDICTION_STEPS),
                                  ("--prediction_lr", args.prediction_lr != PREDICTION_LR),
                                  ("--aug_phases", args.aug_phases != "prediction")) if on]
    if args.budget == "tinybert" and budget_set:
        ap.error(f"--budget tinybert: sets {', '.join(budget_set)} itself, per task")
    if args.budget == "tinybert" and args.families:
        ap.error("--budget tinybert: the transplants (--families) take the CPU budget; run them in another --work")
    if args.aug_phases != "prediction" and not (args.augmented or args.mined_pairs):
        ap.error(f"--aug_phases {args.aug_phases}: needs --augmented or --mined_pairs, which make the rows it reads")
    if not 0 < args.prediction_lr < 1:
        ap.error(f"--prediction_lr {args.prediction_lr:g}: a learning rate between 0 and 1")
    if not 0 <= args.ema_decay < 1:
        ap.error(f"--ema_decay {args.ema_decay:g}: a decay in [0, 1)")
    prediction = Prediction(args.prediction_steps, args.hard_label_weight, args.prediction_lr, args.seed,
                            args.pred_loss, args.ema_decay)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run, s = Runner(work), SETTINGS
    print(f"work directory {work} (rerun the same command to resume)", flush=True)
    plan = [(task, student, route) for task in args.tasks for student in args.students for route in ROUTES
            if route == BEST or (route in args.routes and task in args.compare and student == args.students[0]
                                 and args.budget == "cpu")]
    needs = {route for _, _, route in plan}
    tinybert = args.budget == "tinybert"
    augmented = {t for t in args.tasks if (args.augmented or tinybert) and not _is_pair_task(t)}
    if augmented & {t for t, _, route in plan if route == "general"}:
        raise SystemExit("--augmented: the general route's augmentation writes the same train_aug.tsv; run the general "
                         "route in another --work")
    uses = {(route, student) for _, student, route in plan}

    pregen = None  # Wikipedia: the general route distils on it, the recover route calibrates on it
    if needs & {"recover", "general"} or augmented:
        pregen = run("pregenerate", work / "pregen", "pregenerate", "--train_corpus",
                     "data/wiki/enwiki-sample-206pages.xml.bz2", "--bert_model", TEACHER, "--do_lower_case",
                     "--epochs_to_generate", str(s["pregen_epochs"]), "--max_seq_len", str(SEQ))
    mlm = run("fit-mlm-head", work / "mlm", "fit-mlm-head", "--teacher_model", TEACHER, "--pregenerated_data",
              str(pregen), "--max_train_examples", str(s["mlm_examples"])) if "general" in needs or augmented else None
    shared = {}  # (route, student) -> the student every task of that route starts from, and its CPU minutes
    for student in args.students:
        name = _file_name(student)
        if ("recover", student) in uses:
            key = f"decompose wikipedia-calibrated {student}"
            start = run(key, work / f"dec-wiki-{name}", "decompose", "--teacher_model", TEACHER,
                        *STUDENTS[student], "--calibration_data", str(pregen), "--max_seq_length", str(SEQ),
                        "--calibration_examples", str(s["calibration_examples"]))
            shared["recover", student] = start, {"decompose (shared)": run.cpu(key)}
        if ("general", student) in uses:
            key = f"decompose plain {student}"
            plain = run(key, work / f"dec-plain-{name}", "decompose", "--teacher_model", TEACHER, *STUDENTS[student])
            start = run(f"general-distill {student}", work / f"gd-{name}", "general-distill", "--teacher_model",
                        TEACHER, "--student_model", str(plain), "--pregenerated_data", str(pregen), "--max_steps",
                        str(s["general_steps"]), "--train_batch_size", "32", "--learning_rate", s["general_lr"])
            shared["general", student] = start, {"decompose (shared)": run.cpu(key),
                                                 "general-distill (shared)": run.cpu(f"general-distill {student}")}

    results: dict = {}
    for task in args.tasks:
        glue = work / "glue_data"
        if not (glue / task / "train.tsv").is_file():
            (glue / task).mkdir(parents=True, exist_ok=True)
            for f in ("train.tsv", "dev.tsv"):
                (glue / task / f).write_bytes((REPO / "data/glue_data" / task / f).read_bytes())
        on_task = ["--task_name", task, "--data_dir", str(glue), "--max_seq_length", str(SEQ)]
        subset = ["--max_train_examples", str(args.teacher_examples)] if args.teacher_examples else []
        print(task, flush=True)
        teacher = run(f"{task} teacher", work / f"teacher-{task}", "finetune", "--model", TEACHER,
                      "--num_train_epochs", str(s["teacher_epochs"][task]), "--learning_rate", s["teacher_lr"],
                      "--eval_step", "1000", *subset, *on_task)
        if any(t == task and route == "general" for t, _, route in plan):
            run(f"{task} augment", glue / task / "train_aug.tsv", "augment", "--pretrained_bert_model", str(mlm),
                "--glue_dir", str(glue), "--task_name", task, "--max_train_examples", str(s["aug_rows"]),
                "--N", str(s["aug_n"]), "--overwrite")
        mined = (args.mined_pairs or tinybert) and _is_pair_task(task)
        arm = "augmented" if task in augmented else "mined" if mined else ""
        if arm == "augmented":
            n = TINYBERT["augmented_n"].get(task, 30) if tinybert else s["augmented_n"]
            run(f"{task} augment all", glue / task / "train_aug.tsv", "augment", "--pretrained_bert_model", str(mlm),
                "--glue_dir", str(glue), "--task_name", task, *subset, "--N", str(n), "--overwrite")
        if arm == "mined":
            sizes = [] if tinybert else ["--neighbours", str(s["mined_neighbours"]), "--random_partners",
                                         str(s["mined_random"])]
            run(f"{task} mine-pairs", glue / task / "train_aug.tsv", "mine-pairs", "--teacher_model", str(teacher),
                "--glue_dir", str(glue), "--task_name", task, *sizes, "--overwrite")
        task_prediction, recover_steps, aug_phases = prediction, args.recover_steps, args.aug_phases
        if tinybert:
            rows = _rows(glue / task / "train_aug.tsv")
            recover_steps, aug_phases = -(-TINYBERT["layerwise_epochs"] * rows // 32), "both"
            task_prediction = replace(prediction, steps=-(-TINYBERT["prediction_epochs"] * rows // 32),
                                      learning_rate=TINYBERT["prediction_lr"])
        row = results.setdefault(task, {"teacher": _summary(teacher, "finetune")["dev"]["dev"],
                                        "teacher_cpu_minutes": run.cpu(f"{task} teacher"), "students": {}})
        if tinybert:
            row["budget"] = {"train_aug_rows": rows, "layerwise_steps": recover_steps,
                             "prediction_steps": task_prediction.steps, "prediction_lr": task_prediction.learning_rate}
        for t, student, route in plan:
            if t != task:
                continue
            if not tinybert:  # the plain arm is the CPU budget's, in its own --work
                row["students"].setdefault(student, {})[route] = _route(run, work, task, student, route, teacher,
                                                                        prediction, shared, on_task,
                                                                        recover_steps=recover_steps)
            if arm and route == BEST:
                phases = "" if aug_phases == "prediction" else f" ({aug_phases})"
                row["students"].setdefault(student, {})[f"{route}+{arm}{phases}"] = _route(
                    run, work, task, student, route, teacher, task_prediction, shared, on_task, arm=arm,
                    aug_phases=aug_phases, recover_steps=recover_steps)
        for name in args.dense:
            flags = (dense_flags(name, task_prediction.steps, recover_steps, tinybert=True) if tinybert
                     else dense_flags(name, args.prediction_steps))
            row["students"].setdefault(f"dense {name}", {})["dense"] = _dense(run, work, task, name, teacher, flags,
                                                                          on_task)
        for family in args.families:
            moved = _transplanted(run, work, task, family, teacher, on_task)
            r = _route(run, work, task, args.students[0], BEST, moved, prediction, shared, on_task,
                       tag=f"{family}-")
            r["teacher"] = _summary(moved, "finetune")["dev"]["dev"] if family in HEAD_TRAINING else row["teacher"]
            row["students"].setdefault(f"{family} {args.students[0]}", {})[BEST] = r
    _report(results, args, prediction, run, work)


def _dense(run: Runner, work: Path, task: str, name: str, teacher: Path, flags: list[str], on_task: list[str]) -> dict:
    """A dense student of the fine-tuned teacher, distilled with `flags` (dense_flags); its dev score, CPU minutes,
    curve and size."""
    key = f"{task}-dense-{name}"
    start = run(f"{key} dense-student", work / f"dense-{key}", "dense-student", "--teacher_model", str(teacher),
                *DENSE[name], *on_task)
    out = run(f"{key} task-distill", work / f"td-{key}", "task-distill", "--teacher_model", str(teacher),
              "--student_model", str(start), *flags, "--eval_step", str(SETTINGS["eval_step"]), *on_task)
    stages = {"dense-student": run.cpu(f"{key} dense-student"), "task-distill": run.cpu(f"{key} task-distill")}
    summary = _summary(out, "task_distill")
    seconds = sum(p["seconds"] for p in summary["phases"])
    per_second = stages["task-distill"] / seconds
    *earlier, pred = summary["phases"]
    first = sum(p["seconds"] for p in earlier)
    curve = [{"cpu_minutes": stages["dense-student"] + per_second * (first + pred["seconds"] * h["step"] / pred["steps"]),
              "score": h["score"]} for h in pred["dev_history"]]
    return {"dev": summary["dev"]["dev"], "collapsed": summary.get("collapsed", {}), "cpu_minutes": stages,
            "curve": curve, "output_dir": str(out),
            "encoder_params": _summary(start, "dense_student")["encoder_params"]}


def _transplanted(run: Runner, work: Path, task: str, family: str, teacher: Path, on_task: list[str]) -> Path:
    """The fine-tuned teacher in `family`'s layout, its head trained where BERT's could not be moved."""
    sys.path.insert(0, str(REPO))
    from tests.transplants import transplant

    moved = work / f"teacher-{task}-{family}"
    if not (moved / "config.json").is_file():
        transplant(teacher, family, moved)
    if family not in HEAD_TRAINING:
        return moved
    return run(f"{task} teacher {family} head", work / f"teacher-{task}-{family}-head", "finetune", "--model",
               str(moved), *HEAD_TRAINING[family], *on_task)


def _route(run: Runner, work: Path, task: str, student: str, route: str, teacher: Path, prediction: Prediction,
           shared: dict, on_task: list[str], tag: str = "", arm: str = "", aug_phases: str = "prediction",
           recover_steps: int = SETTINGS["recover_steps"]) -> dict:
    """One student of one task by one route: its stages' CPU minutes, the dev score, and the curve of dev score
    against cumulative CPU minutes (route stages before task distillation, then its evaluations). `tag` names a
    teacher other than the task's own (a transplant); `arm` ("mined" or "augmented") reads the task's train_aug.tsv in
    `aug_phases`: the prediction phase from the same recovered student as the plain arm, the layer-wise phase (its
    own recovery, "-aug", one pass over as many rows as it has steps of 32), or both; a `recover_steps` other than the
    default names its own stages, a `prediction` other than the default its own task-distill stage from the same
    recovered student."""
    s, name = SETTINGS, f"{task}-{tag}{route}-{_file_name(student)}"
    text = str(work / "glue_data" / task)
    stages: dict[str, float] = {}
    if route == "task":
        start = run(f"{name} decompose", work / f"dec-{name}", "decompose", "--teacher_model", str(teacher),
                    *STUDENTS[student], "--calibration_data", text, "--max_seq_length", str(SEQ),
                    "--calibration_examples", str(s["calibration_examples"]))
        stages["decompose"] = run.cpu(f"{name} decompose")
    else:
        start, shared_cpu = shared[route, student]
        stages.update(shared_cpu)
    layerwise_aug, prediction_aug = arm and aug_phases != "prediction", arm and aug_phases != "layerwise"
    if route in ("task", "recover"):
        if recover_steps != s["recover_steps"]:
            name += f"-r{recover_steps}"
        # 128 rows are held out (recover's default) to measure the functional error; a longer budget reads the rest
        # more than once.
        fit = (min(32 * recover_steps, _rows(Path(text) / "train_aug.tsv") - 128) if layerwise_aug
               else s["recover_examples"])
        name += "-aug" if layerwise_aug else ""
        start = run(f"{name} recover", work / f"rec-{name}", "recover", "--teacher_model",
                    str(teacher) if route == "task" else TEACHER, "--student_model", str(start),
                    "--calibration_data", text, *(["--aug_train"] if layerwise_aug else []), "--calibration_examples",
                    str(fit), "--max_seq_length", str(SEQ), "--max_steps", str(recover_steps),
                    "--learning_rate", s["recover_lr"], "--eval_steps", str(recover_steps))
        stages["recover"] = run.cpu(f"{name} recover")
    name += prediction.suffix
    key, aug = (f"{name} task-distill {arm}", ["--aug_train"]) if prediction_aug else (f"{name} task-distill", [])
    out = run(key, work / f"td-{name}{'-' + arm if prediction_aug else ''}", "task-distill", "--teacher_model", str(teacher),
              "--student_model", str(start), *prediction.flags(route), *aug, "--eval_step", str(s["eval_step"]),
              *on_task)
    stages["task-distill"] = run.cpu(key)
    summary = _summary(out, "task_distill")
    before = sum(v for k, v in stages.items() if k != "task-distill")
    *earlier, pred = summary["phases"]
    seconds = sum(p["seconds"] for p in summary["phases"])
    per_second = stages["task-distill"] / seconds  # CPU minutes per wall second of this stage
    first = sum(p["seconds"] for p in earlier)
    curve = [{"cpu_minutes": before + per_second * (first + pred["seconds"] * h["step"] / pred["steps"]),
              "score": h["score"]} for h in pred["dev_history"]]
    return {"dev": summary["dev"]["dev"], "collapsed": summary.get("collapsed", {}), "cpu_minutes": stages,
            "curve": curve, "output_dir": str(out), "encoder_params": _td_encoder_params(start)}


def _rows(path: Path) -> int:
    """Rows of a GLUE file, its header not counted."""
    with path.open(encoding="utf-8") as f:
        return sum(1 for _ in f) - 1


def _is_pair_task(name: str) -> bool:
    sys.path.insert(0, str(REPO))
    from corpora.glue import get_task

    return get_task(name).is_pair


def _td_encoder_params(directory: Path) -> int:
    """A TD student's encoder parameters, its layers' own corrections included."""
    sys.path.insert(0, str(REPO))
    from modeling import TuckerBertConfig, TuckerBertModel
    from modeling.params import encoder_params

    return encoder_params(TuckerBertModel(TuckerBertConfig.from_pretrained(str(directory))))


def _summary(directory: Path, stage: str) -> dict:
    return json.loads((directory / f"{stage}_summary.json").read_text())


def _report(results: dict, args, prediction: Prediction, run: Runner, work: Path) -> None:
    rows = f"up to {args.teacher_examples:,} rows of the" if args.teacher_examples else "the full"
    device = _device()
    print(f"\nGLUE dev (full), teacher {TEACHER} ({TEACHER_ENCODER_PARAMS:,} encoder params) fine-tuned on {rows} "
          f"training sets; sequence {SEQ}; budget {args.budget}; ran on {device}; CPU minutes of its processes")
    print("| task | teacher | student | route | score | % of teacher | encoder params | ms at batch 1 / 32 | "
          "CPU min per stage | total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, row in results.items():
        row["latency_ms"] = _latency(work / f"teacher-{task}")
        print(f"| {task} | {row['teacher']['score']:.4f} | teacher | - | {row['teacher']['score']:.4f} | 100.0 | "
              f"{TEACHER_ENCODER_PARAMS:,} | {_ms(row['latency_ms'])} | - | {row['teacher_cpu_minutes']:.1f} |")
        for student, routes in row["students"].items():
            for route, r in routes.items():
                te = r.get("teacher", row["teacher"])["score"]  # a transplant with a trained head has its own
                score = r["dev"]["score"]
                r["percent_of_teacher"] = 100 * score / te if te else None
                r["total_cpu_minutes"] = sum(r["cpu_minutes"].values())
                r["latency_ms"] = _latency(Path(r["output_dir"]))
                cpu = ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_minutes"].items())
                flag = " (collapsed)" if r["collapsed"] else ""
                print(f"| {task} | {te:.4f} | {student} | {route} | {score:.4f}{flag} | "
                      f"{r['percent_of_teacher']:.1f} | {r['encoder_params']:,} | {_ms(r['latency_ms'])} | {cpu} | "
                      f"{r['total_cpu_minutes']:.1f} |")
        row["majority_class"] = _majority_class(task)
        te = row["teacher"]["score"]
        print(f"| {task} | {te:.4f} | majority class of train | - | {row['majority_class']:.4f} | "
              f"{100 * row['majority_class'] / te:.1f} | 0 | - | - | - |")
    print(f"(latency: median of 5 forward passes at sequence {SEQ}, {_threads()} threads, timed after every stage "
          "had ended; quote it only from a run on a quiet machine)")
    shared = {k: v for k, v in run.timings.items() if not k.startswith(tuple(results))}
    print("\nshared stages (CPU min): " + "; ".join(f"{k} {v['cpu_minutes']:.1f}" for k, v in shared.items()))
    total = sum(v["wall_minutes"] for v in run.timings.values())
    print(f"wall time of every stage recorded in {work}: {total:.1f} min")
    name = f"accuracy-teachers-{args.teacher_examples}" if args.teacher_examples else "accuracy"
    if args.prediction_steps != PREDICTION_STEPS:
        name += f"-p{args.prediction_steps}"
    if args.recover_steps != SETTINGS["recover_steps"]:
        name += f"-r{args.recover_steps}"
    if args.aug_phases != "prediction":
        name += f"-aug-{args.aug_phases}"
    if args.budget != "cpu":
        name += f"-{args.budget}"
    name += prediction.suffix
    if args.tasks != list(TASKS):  # a run of some tasks or students does not overwrite another's figures
        name += "-" + "-".join(args.tasks)
    if args.students != DEFAULT_STUDENTS:
        name += "-" + "-".join(map(_file_name, args.students))
    out = REPO / f"benchmarks/results/{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**SETTINGS, "recover_steps": args.recover_steps}, "distill": {r: prediction.flags(r) for r in ROUTES},
                               "prediction_steps": args.prediction_steps, "sequence": SEQ, "best_route": BEST,
                               "teacher_examples": args.teacher_examples, "dense": {k: DENSE[k] for k in args.dense},
                               "dense_distill": {k: dense_flags(k, args.prediction_steps) for k in args.dense}
                               if args.budget == "cpu" else "per task: the budget of each task's row",
                               "budget": args.budget, "device": device,
                               "results": results, "teacher_encoder_params": TEACHER_ENCODER_PARAMS,
                               "timings": run.timings, "wall_minutes": total}, indent=2) + "\n")
    print(f"-> {out}, {_plot(results, out.with_suffix('.png'))}")


def _file_name(student: str) -> str:
    """A student's name as its stage directories and results files spell it ("1/7+front" -> "1of7+front")."""
    return student.replace("/", "of")


def _device() -> str:
    """Where the stages ran: they take the GPU when one is visible, as this process does."""
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} CPU cores ({cpu})"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _latency(directory: Path) -> dict[str, float]:
    """Milliseconds of one forward pass of the model in `directory` at batch 1 and 32 (a TD model with its folded
    weights formed once, as it runs for inference)."""
    sys.path.insert(0, str(REPO))
    import modeling  # noqa: F401  (registers the TD and pruned types with the Auto classes)
    from compress.measure import cpu_latency
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    return {f"batch_{b}": 1000 * cpu_latency(model, b, SEQ, repeats=5) for b in (1, 32)}


def _ms(latency: dict[str, float]) -> str:
    return f"{latency['batch_1']:.1f} / {latency['batch_32']:.0f}"


def _majority_class(task_name: str) -> float:
    """The dev score of predicting the training set's most frequent label everywhere (STS-B: its mean score, whose
    correlation is 0): the floor a student has to clear to have learnt anything."""
    import numpy as np

    from corpora.glue import dev_files, get_task, read_examples, train_file
    from tasks.metrics import glue_metrics

    task = get_task(task_name)
    if task.is_regression:
        return 0.0
    train = [e.label for e in read_examples(task, train_file(task, REPO / "data/glue_data"))]
    majority = task.labels.index(max(task.labels, key=train.count))
    gold = np.array([task.labels.index(e.label) for e in read_examples(task, dev_files(task, REPO / "data/glue_data")[0])])
    return glue_metrics(task.metric, np.full_like(gold, majority), gold)["score"]


def _plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(task, student) for task, row in results.items() for student in row["students"]]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 3.6), squeeze=False)
    for ax, (task, student) in zip(axes[0], pairs):
        row = results[task]
        for route, r in row["students"][student].items():
            ax.plot([p["cpu_minutes"] for p in r["curve"]], [p["score"] for p in r["curve"]], marker="o", label=route)
        ax.axhline(row["teacher"]["score"], color="grey", linestyle="--", label="teacher")
        ax.set(title=f"{task}, {student if student.startswith('dense') else 'TD ' + student}", xlabel="CPU minutes (route, cumulative)", ylabel="dev score")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
