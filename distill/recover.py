"""Layer-wise recovery: every layer of a TD student learns, all at once, to reproduce the teacher's output of that
layer on real text, fed either its own input (student-forced, the default) or the teacher's (teacher-forced: no
layer waits for the ones below), or both.

    xcompress recover --teacher_model all-MiniLM-L6-v2 --student_model runs/td --calibration_data data/glue_data/SST-2 \
        --max_steps 300 --output_dir runs/td-recovered

The loss is the relative squared error of each layer's output, averaged over layers, on real tokens; the shared
factors, biases and LayerNorms train, the embeddings (the teacher's) stay. `functional_error` (the student's own
hidden states against the teacher's, each layer fed by the one below) is measured on held-out text before, every
`--eval_steps` steps, and after: recover_summary.json holds the curve against CPU seconds.
"""
from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from decompose.calibration import batches, hidden_state_errors, hold_out, read_sequences
from modeling.formats import CLASSIFIER, DENSE, ENCODER, TUCKER, encoder_of, is_task_model
from modeling.loading import inspect_model, load_model, load_tokenizer
from modeling.modeling_tucker_bert import additive_attention_mask
from stagekit.atomic import atomic_output_dir, check_output_dir
from stagekit.errors import InputError
from stagekit.model_paths import shared_vocab
from stagekit.options import above, at_least, between, check_values, option
from stagekit.outputs import finish_stage

from .loop import optimizer_for, optimizer_step


@dataclasses.dataclass
class RecoverConfig:
    teacher_model: str = option(help="the dense teacher the student was decomposed from")
    student_model: str = option(help="a TD directory (xcompress decompose, or any later stage's TD output)")
    calibration_data: str = option(help="text to recover on: pre-generated epochs, a GLUE task directory or a "
                                   "text file")
    output_dir: str = option()
    calibration_examples: int = option(2048, help="sequences trained on", check=at_least(1))
    aug_train: bool = option(False, help="a GLUE task directory's train_aug.tsv (xcompress augment or mine-pairs) "
                             "instead of its train.tsv: TinyBERT's layer-wise phase on augmented data")
    held_out_examples: int = option(128, help="sequences, never trained on, that measure functional_error",
                                    check=at_least(1))
    max_seq_length: int = option(128, check=at_least(8))
    max_steps: int = option(300, help="optimizer steps", check=at_least(1))
    train_batch_size: int = option(32, check=at_least(1))
    learning_rate: float = option(1e-3, check=above(0))
    warmup_proportion: float = option(0.05, check=between(0, 1))
    weight_decay: float = option(0.0)
    max_grad_norm: float = option(1.0)
    forcing: str = option("student", choices=["teacher", "student", "both"],
                          help="each layer fed the student's own input (errors from below included: the lowest "
                               "error per CPU second, benchmarks/functional.py), the teacher's (layers learn "
                               "independently), or the sum of both losses")
    eval_steps: int = option(50, help="measure functional_error every this many steps", check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = RecoverConfig


def layer_losses(student, teacher_hidden: tuple[torch.Tensor, ...], attention_mask: torch.Tensor,
                 forcing: str) -> torch.Tensor:
    """Each layer's relative squared error against the teacher's output of it, over real tokens (one entry per
    layer): fed the teacher's input to the layer, the student's own, or both summed. (A term for the first token
    alone, relative to the teacher's spread of it over the batch, was measured and dropped: on the demo's SST-2
    student it left the [CLS] error at 1.03 instead of 0.76 and the classifier collapsed to one class.)"""
    real = attention_mask.bool()
    mask = None if bool(real.all()) else additive_attention_mask(attention_mask, teacher_hidden[0].dtype)
    w = student.encoder.factors.folded()
    teacher_fed, student_fed = [], []
    own = teacher_hidden[0]
    for i, layer in enumerate(student.encoder.layer):
        target = teacher_hidden[i + 1]
        scale = target[real].pow(2).sum()
        if forcing in ("teacher", "both"):
            out, _, _ = layer(teacher_hidden[i], mask, w, False)
            teacher_fed.append((out - target)[real].pow(2).sum() / scale)
        if forcing in ("student", "both"):
            own, _, _ = layer(own, mask, w, False)
            student_fed.append((own - target)[real].pow(2).sum() / scale)
    return sum(torch.stack(fed) for fed in (teacher_fed, student_fed) if fed)


def run(cfg: RecoverConfig) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_values(cfg)
    if cfg.aug_train and not (Path(cfg.calibration_data) / "train_aug.tsv").is_file():
        raise InputError(f"--aug_train: --calibration_data {cfg.calibration_data} has no train_aug.tsv (make it with "
                         "`xcompress augment` or `xcompress mine-pairs`)")
    teacher, teacher_dir = load_model(cfg.teacher_model, "--teacher_model", ENCODER, kinds=(DENSE,), need_fp32=True,
                                      stage="recover")
    # A task student is loaded with its head, which stays untouched and is saved with it.
    _, student_config, _ = inspect_model(cfg.student_model, "--student_model", kinds=(TUCKER,))
    model, student_dir = load_model(cfg.student_model, "--student_model",
                                    CLASSIFIER if is_task_model(student_config) else ENCODER, kinds=(TUCKER,),
                                    need_fp32=True)
    student = encoder_of(model)
    shared_vocab(teacher_dir, student_dir)
    tokenizer = load_tokenizer(teacher_dir, "--teacher_model")
    sequences = read_sequences(cfg.calibration_data, "--calibration_data", tokenizer, cfg.max_seq_length,
                               cfg.calibration_examples + cfg.held_out_examples, cfg.seed,
                               "train_aug" if cfg.aug_train else "train")
    fit, held = hold_out(sequences, cfg.calibration_examples, cfg.held_out_examples, "--calibration_data",
                         cfg.calibration_data)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # one device: layers train all at once
    teacher, model = teacher.to(device), model.to(device)
    teacher.eval().requires_grad_(False)
    student.eval()  # no dropout: the layers are fitted, not regularised
    student.embeddings.requires_grad_(False)
    if student.pooler is not None:
        student.pooler.requires_grad_(False)
    _, optimizer, scheduler = optimizer_for(student, cfg.learning_rate, cfg.weight_decay, cfg.warmup_proportion,
                                            cfg.max_steps)
    order = random.Random(cfg.seed)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    curve = [{"step": 0, "cpu_seconds": 0.0, **_errors(teacher, student, held)}]
    bar = tqdm(total=cfg.max_steps, desc="layer-wise recovery", unit="step", disable=cfg.quiet)
    pool: list = []

    # --- loop ---------------------------------------------------------------------------------------------
    for step in range(1, cfg.max_steps + 1):
        if len(pool) < cfg.train_batch_size:
            pool = fit[:]
            order.shuffle(pool)
        batch = {k: v.to(device) for k, v in next(batches(pool[:cfg.train_batch_size], cfg.train_batch_size)).items()}
        pool = pool[cfg.train_batch_size:]
        with torch.no_grad():
            target = teacher(**batch, output_hidden_states=True).hidden_states
        loss = layer_losses(student, target, batch["attention_mask"], cfg.forcing).mean()
        loss.backward()
        optimizer_step(optimizer, scheduler, [p for p in student.parameters() if p.requires_grad], cfg.max_grad_norm)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.update(1)
        if step % cfg.eval_steps == 0 or step == cfg.max_steps:
            curve.append({"step": step, "cpu_seconds": time.process_time() - cpu_start, "loss": float(loss.detach()),
                          **_errors(teacher, student, held)})

    # --- cleanup ------------------------------------------------------------------------------------------
    bar.close()
    summary = {"teacher_model": cfg.teacher_model, "student_model": cfg.student_model,
               "functional_error_before": curve[0]["functional_error"],
               "functional_error": curve[-1]["functional_error"],
               "functional_error_per_layer": curve[-1]["per_layer"],
               "cls_error_before": curve[0]["cls_error"], "cls_error": curve[-1]["cls_error"], "curve": curve,
               "train_sequences": len(fit), "held_out_sequences": len(held),
               "cpu_seconds": time.process_time() - cpu_start, "seconds": time.perf_counter() - wall_start,
               "output_dir": str(out), "config": dataclasses.asdict(cfg)}
    with atomic_output_dir(out) as tmp:
        model.save_pretrained(tmp)
        finish_stage(tmp, "recover", cfg, summary, tokenizer_from=student_dir)
    return summary


def _errors(teacher, student, held: list) -> dict[str, Any]:
    errors = hidden_state_errors(teacher, student, held)
    return {"functional_error": errors["overall"], "cls_error": errors["cls"], "per_layer": errors["per_layer"]}


def report(summary: dict[str, Any]) -> str:
    return (f"recover: functional_error {summary['functional_error_before']:.3f} -> {summary['functional_error']:.3f}, "
            f"[CLS] error {_number(summary['cls_error_before'])} -> {_number(summary['cls_error'])} "
            f"in {summary['config']['max_steps']} steps ({summary['cpu_seconds'] / 60:.1f} CPU min) "
            f"-> {summary['output_dir']}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
