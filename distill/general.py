"""General distillation: the TD student learns the teacher's attention scores and hidden states on
pre-generated Wikipedia data (TinyBERT's general distillation, no MLM loss).

    xcompress general-distill --teacher_model all-MiniLM-L6-v2 --student_model runs/minilm-td-36-192 \
        --pregenerated_data data/pregenerated --num_train_epochs 2 --train_batch_size 32 --learning_rate 1e-4 \
        --output_dir runs/gd-36-192
    python -m distill.general ...                                    (same flags)
    mpirun --allow-run-as-root -np 2 .venv/bin/python -m distill.general ...      (Horovod)
    horovodrun -np 2 -H localhost:2 --gloo .venv/bin/python -m distill.general ...
    torchrun --nproc_per_node 2 -m distill.general ...                (DistributedDataParallel)

`--student_model` is a TD directory from `xcompress decompose`, or a TD config directory (e.g.
models/minilm-td-36-192) that is initialised randomly, or, with `--use_swap`, by factorizing the teacher.
`--train_batch_size` is the global batch, split over ranks and accumulation steps. `--eval_data`, pre-generated
epochs of text training never sees (another slice of the dump: `pregenerate --dump_part`), gives the validation
loss every `--eval_steps`.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from corpora.pregenerated import PregeneratedEpochs, read_vocab_ids
from modeling.formats import DENSE, ENCODER, TUCKER
from modeling.loading import inspect_model, load_model
from stagekit.allocator import in_use as allocator_in_use
from stagekit.atomic import write_json
from stagekit.errors import InputError
from stagekit.model_paths import resolve_model_dir, shared_vocab
from stagekit.options import above, at_least, between, option
from stagekit.outputs import tokenizer_files
from stagekit.training_log import TENSORBOARD_DIR, TrainingLog, write_stats

from .checkpoint import checkpoint_dirs, load_training_state, parameter_checksum, publish_model, save_checkpoint
from .dist import Distributed
from .flags import check_training_flags
from .loop import accumulate, micro_batch_size, optimizer_for, optimizer_step, write_log
from .losses import DistillationLoss
from .teacher import ScoringTeacher


@dataclasses.dataclass
class GeneralDistillConfig:
    teacher_model: str = option()
    student_model: str = option(help="TD directory, or TD config directory (see --use_swap)")
    pregenerated_data: str = option()
    output_dir: str = option()
    num_train_epochs: float = option(1.0, check=above(0))
    train_batch_size: int = option(32, help="global batch over all ranks", check=at_least(1))
    learning_rate: float = option(1e-4, check=above(0))
    max_steps: int | None = option(None, help="stop after this many optimizer steps", check=at_least(1))
    gradient_accumulation_steps: int = option(1, check=at_least(1))
    warmup_proportion: float = option(0.1, check=between(0, 1))
    weight_decay: float = option(0.01)
    max_grad_norm: float = option(1.0)
    loss_layers: str = option(
        "all",
        help="all: every mapped layer and the embeddings; last: the original TD code's last-layer loss",
        choices=["all", "last"])
    teacher_bf16: bool = option(False, help="the teacher's forward pass in bfloat16 on CPU (fast with AVX512-BF16 or "
                                "AMX; on GPUs both run in bf16 anyway): about 1.5x faster teacher than fp32 through "
                                "oneDNN, its targets within about 1%% (relative)")
    use_swap: bool = option(False, help="initialise a config-only student by factorizing the teacher")
    save_steps: int = option(500, check=at_least(1))
    save_total_limit: int = option(3, check=at_least(1))
    log_steps: int = option(10, check=at_least(1))
    eval_data: str | None = option(None, help="pre-generated epochs of held-out text (e.g. `pregenerate --dump_part` "
                                   "of another slice): the same loss on its first epoch is the validation loss")
    eval_steps: int = option(500, help="validate every this many steps (and before the first and after the last)",
                             check=at_least(1))
    max_eval_examples: int = option(512, help="examples of --eval_data's first epoch to validate on",
                                    check=at_least(1))
    resume: bool = option(False, help="continue from the latest checkpoint in --output_dir")
    overwrite_output_dir: bool = option(False)
    seed: int = option(42)
    do_lower_case: bool = option(False, help="accepted for TinyBERT compatibility (data is pre-tokenized)")
    reduce_memory: bool = option(False, help="accepted for TinyBERT compatibility (epochs are read lazily)")
    quiet: bool = option(False)


CONFIG = GeneralDistillConfig
STATS_COLUMNS = ("step", "train_loss", "val_loss")


class DistillationStep(nn.Module):
    """Student and loss in one module, so that one wrapper syncs the student and the width projection."""

    def __init__(self, student: nn.Module, loss: DistillationLoss):
        super().__init__()
        self.student, self.loss = student, loss

    def forward(self, batch, teacher_out):
        t_hidden, t_scores = teacher_out
        out = self.student(**batch, output_hidden_states=True, output_attention_scores=self.loss.student_score_layers)
        return self.loss(out.hidden_states, out.attention_scores, t_hidden, t_scores, batch["attention_mask"])


def _load_teacher(cfg: GeneralDistillConfig):
    teacher, teacher_dir = load_model(cfg.teacher_model, "--teacher_model", ENCODER, kinds=(DENSE,), need_fp32=True,
                                      stage="general-distill")
    return teacher_dir, teacher


def _load_student(cfg: GeneralDistillConfig, teacher, student_dir: Path):
    """A TD model from a TD directory, or from a TD config (random, or factorized teacher with --use_swap)."""
    from decompose.convert import factorize_teacher
    from modeling import TuckerBertConfig, TuckerBertModel

    inspect_model(str(student_dir), "--student_model", kinds=(TUCKER,))
    if (student_dir / "model.safetensors").is_file() and not cfg.use_swap:
        return load_model(str(student_dir), "--student_model", ENCODER, need_fp32=True)[0]
    config = TuckerBertConfig.from_pretrained(str(student_dir))
    if cfg.use_swap:
        tc = teacher.config
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
            if getattr(config, key) != getattr(tc, key):
                raise InputError(f"--use_swap: the student's {key} {getattr(config, key)} differs from the teacher's "
                                 f"{getattr(tc, key)}; factorizing the teacher needs the same geometry")
        return factorize_teacher(teacher, config.rank_layer, config.rank_dim, config.ops,
                                 residual_ranks=config.residual_ranks)[0]
    if config.vocab_size != teacher.config.vocab_size:
        raise InputError(f"--student_model {cfg.student_model}: vocab_size {config.vocab_size} differs from the "
                         f"teacher's {teacher.config.vocab_size}")
    torch.manual_seed(cfg.seed)
    return TuckerBertModel(config)


def _prepare_output(cfg: GeneralDistillConfig) -> Path:
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output_dir {out}: exists and is not a directory")
    if cfg.resume:
        if not checkpoint_dirs(out):
            raise InputError(f"--resume: no checkpoint in {out / 'checkpoints'}")
        return out
    if out.is_dir() and any(out.iterdir()):
        if not cfg.overwrite_output_dir:
            raise InputError(f"--output_dir {out}: directory exists and is not empty (pass --resume to continue "
                             "its run, or --overwrite_output_dir to replace it)")
    return out


def _position(step: int, steps_in_epoch) -> tuple[int, int]:
    """(training epoch, step within it) of a global optimizer step; epoch files may differ in size."""
    epoch = 0
    while step >= steps_in_epoch(epoch):
        step -= steps_in_epoch(epoch)
        epoch += 1
    return epoch, step


def run(cfg: GeneralDistillConfig) -> dict[str, Any]:
    dist = Distributed()
    try:
        return _train(cfg, dist)
    except Exception as e:
        failure = dist.peer_failure(e)
        if failure is None:
            raise
        raise failure from e
    finally:
        dist.shutdown()


def _train(cfg: GeneralDistillConfig, dist: Distributed) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_training_flags(cfg, dist.world_size)
    out = _prepare_output(cfg)
    teacher_dir, teacher_bert = _load_teacher(cfg)
    student_dir = resolve_model_dir(cfg.student_model, "--student_model")
    vocab = shared_vocab(teacher_dir, student_dir)
    if vocab is None:
        raise InputError(f"--teacher_model {cfg.teacher_model}: pre-generated epochs hold WordPiece tokens, and this "
                         "teacher has no vocab.txt")
    data = PregeneratedEpochs(cfg.pregenerated_data, read_vocab_ids(vocab))
    held_out = _held_out(cfg, read_vocab_ids(vocab))
    student = _load_student(cfg, teacher_bert, student_dir)
    if student.pooler is not None:
        # No layer-wise loss reaches the pooler: freeze it rather than have every rank hunt for unused parameters.
        student.pooler.requires_grad_(False)
    teacher = ScoringTeacher(teacher_bert, bf16=cfg.teacher_bf16).to(dist.device)
    loss_fn = DistillationLoss(student.config.num_hidden_layers, teacher_bert.config.num_hidden_layers,
                               student.config.hidden_size, teacher_bert.config.hidden_size, cfg.loss_layers)
    module = DistillationStep(student, loss_fn).to(dist.device)

    micro = micro_batch_size(cfg.train_batch_size, dist.world_size, cfg.gradient_accumulation_steps)
    if data.steps_per_epoch(0, cfg.train_batch_size) == 0:
        raise InputError(f"--train_batch_size {cfg.train_batch_size}: larger than an epoch of {cfg.pregenerated_data}")
    total = cfg.max_steps or max(1, int(cfg.num_train_epochs * data.steps_per_epoch(0, cfg.train_batch_size)))
    latest = checkpoint_dirs(out)[-1] if cfg.resume else None
    state = load_training_state(latest) if latest is not None else None
    if state is not None:
        module.student.load_state_dict(type(student).from_pretrained(str(latest)).state_dict())
        module.loss.load_state_dict(state["loss"])
    model, optimizer, scheduler = optimizer_for(module, cfg.learning_rate, cfg.weight_decay, cfg.warmup_proportion,
                                                total, dist, cfg.gradient_accumulation_steps)
    start_step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"][dist.rank])
        start_step = state["step"]
    else:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout differs per rank, reproducibly
    dist.broadcast_state(module, optimizer)

    # Read this rank's first batch before anything is written: broken data is refused with nothing on disk.
    # (A corrupt line met later stops the run with its file and line; earlier checkpoints stay intact.)
    first_epoch, first_in_epoch = _position(start_step, lambda e: data.steps_per_epoch(e, cfg.train_batch_size))
    first_ids = data.example_ids(first_epoch, cfg.seed, dist.rank, dist.world_size)
    first = first_in_epoch * cfg.gradient_accumulation_steps * micro
    data.batch(first_epoch, first_ids[first:first + micro])
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if start_step == 0:  # --overwrite_output_dir: the replaced run's log is not this run's
            for stale in (out / "log.jsonl", out / "training_stats.csv"):
                stale.unlink(missing_ok=True)
            shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
        write_json(out / "general_distill_config.json", dataclasses.asdict(cfg) | {"world_size": dist.world_size,
                                                                                   "backend": dist.backend})
    log = TrainingLog(out) if dist.is_main else None
    tok_files = tokenizer_files(teacher_dir)
    timing = {"data": 0.0, "teacher_forward": 0.0, "student_forward_backward": 0.0, "optimizer_and_sync": 0.0}
    bar = tqdm(total=total, initial=start_step, desc="general distillation", unit="step",
               disable=not dist.is_main or cfg.quiet)
    epoch_ids: dict[int, Any] = {}

    def targets(batch: dict[str, torch.Tensor]):
        return teacher(**batch, score_layers=loss_fn.teacher_score_layers, hidden_layers=loss_fn.teacher_hidden_layers)

    def validate(done: int) -> None:
        if held_out is not None:
            losses = _validation_loss(module, held_out, cfg.max_eval_examples, micro, targets, dist)
            write_log(log, {"step": done, **{f"val_{k}": v for k, v in losses.items()}})
            model.train()

    started, first_loss, metrics = time.perf_counter(), None, {}
    if start_step == 0:
        validate(0)

    # --- loop ---------------------------------------------------------------------------------------------
    model.train()
    for step in range(start_step, total):
        epoch, in_epoch = _position(step, lambda e: data.steps_per_epoch(e, cfg.train_batch_size))
        if epoch not in epoch_ids:
            epoch_ids = {epoch: data.example_ids(epoch, cfg.seed, dist.rank, dist.world_size)}

        def micro_batch(m: int) -> dict[str, torch.Tensor]:
            first = (in_epoch * cfg.gradient_accumulation_steps + m) * micro
            return {k: v.to(dist.device) for k, v in data.batch(epoch, epoch_ids[epoch][first:first + micro]).items()}

        sums = accumulate(model, dist, cfg.gradient_accumulation_steps, micro_batch, targets, timing)
        t4 = time.perf_counter()
        optimizer_step(optimizer, scheduler, module.parameters(), cfg.max_grad_norm, dist)
        timing["optimizer_and_sync"] += time.perf_counter() - t4
        done = step + 1
        if done % cfg.log_steps == 0 or done == total or first_loss is None:
            metrics = dist.all_reduce_mean(sums)
            first_loss = metrics["loss"] if first_loss is None else first_loss
            elapsed = time.perf_counter() - started
            write_log(log, {"step": done, **metrics, "lr": scheduler.get_last_lr()[0],
                            "samples_per_second": (done - start_step) * cfg.train_batch_size / elapsed,
                            "seconds": elapsed})
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        bar.update(1)
        if done % cfg.eval_steps == 0 or done == total:
            validate(done)
        if done % cfg.save_steps == 0 or done == total:
            _checkpoint(out, done, module, optimizer, scheduler, dist, tok_files, cfg.save_total_limit)

    # --- cleanup ------------------------------------------------------------------------------------------
    bar.close()
    data.close()
    if held_out is not None:
        held_out.close()
    seconds = time.perf_counter() - started
    checksums = dist.all_gather_object(parameter_checksum(module))
    summary = {"steps": total, "resumed_from_step": start_step, "world_size": dist.world_size,
               "parameter_checksums_by_rank": checksums, "ranks_in_sync": len(set(checksums)) == 1,
               "backend": dist.backend, "allocator": allocator_in_use(), "linear_products": dist.linear_products,
               "first_loss": first_loss, "final_loss": metrics.get("loss"),
               "samples_per_second": (total - start_step) * cfg.train_batch_size / seconds if total > start_step else None,
               "seconds": seconds, "time_split_seconds": timing, "config": dataclasses.asdict(cfg)}
    if dist.is_main:
        log.close()
        validation = _validation_rows(log.path)
        summary["validation"] = validation
        if held_out is not None:
            write_stats(out / "training_stats.csv", STATS_COLUMNS, validation)
        publish_model(out, out / "checkpoints" / f"step_{total}")
        write_json(out / "general_distill_summary.json", summary)
    dist.barrier()
    return summary | {"is_main": dist.is_main}


def _held_out(cfg: GeneralDistillConfig, vocab: dict[str, int]) -> PregeneratedEpochs | None:
    if cfg.eval_data is None:
        return None
    if Path(cfg.eval_data).resolve() == Path(cfg.pregenerated_data).resolve():
        raise InputError(f"--eval_data {cfg.eval_data}: the training data itself; the validation loss needs text "
                         "training never reads (pregenerate another slice of the dump with --dump_part)")
    return PregeneratedEpochs(cfg.eval_data, vocab, flag="--eval_data")


@torch.no_grad()
def _validation_loss(module: DistillationStep, held_out: PregeneratedEpochs, max_examples: int, micro: int,
                     targets, dist: Distributed) -> dict[str, float]:
    """The training loss on the first `max_examples` of the held-out epoch, each rank its share, dropout off."""
    module.eval()
    ids = np.arange(min(max_examples, held_out.num_examples(0)))[dist.rank::dist.world_size]
    sums: dict[str, float] = {}
    for first in range(0, len(ids), micro):
        batch = {k: v.to(dist.device) for k, v in held_out.batch(0, ids[first:first + micro]).items()}
        with dist.compute():
            losses = module(batch, targets(batch))
        share = len(batch["input_ids"]) / len(ids)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value) * share
    return dist.all_reduce_mean(sums)


def _validation_rows(log_path: Path) -> list[dict[str, Any]]:
    """Each validation with the training loss last logged before it, read back from the log so that a resumed
    run's rows include those written before the interruption."""
    rows: dict[int, dict[str, Any]] = {}
    train_loss = None
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train_loss = record["loss"]
        if "val_loss" in record:  # a step validated again after a resume replaces its first record
            rows[record["step"]] = {"step": record["step"], "train_loss": train_loss, "val_loss": record["val_loss"]}
    return [rows[step] for step in sorted(rows)]


def _checkpoint(out, step, module, optimizer, scheduler, dist: Distributed, tok_files, keep) -> None:
    """Rank 0 writes; every rank contributes its RNG state so that a resume reproduces each rank's dropout."""
    rng = dist.all_gather_object(torch.get_rng_state())
    if dist.is_main:
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "loss": module.loss.state_dict(), "rng": rng}
        save_checkpoint(out, step, module.student, state, tok_files, keep)
    dist.barrier()


def report(summary: dict[str, Any]) -> str:
    rate = summary["samples_per_second"]
    validation = summary.get("validation") or []
    return (f"general-distill: {summary['steps']} steps on {summary['world_size']} rank(s) ({summary['backend']}), "
            f"loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}"
            + (f", validation loss {validation[0]['val_loss']:.4f} -> {validation[-1]['val_loss']:.4f}"
               if validation else "")
            + (f", {rate:.1f} samples/s" if rate else "") + f" -> {summary['config']['output_dir']}")


if __name__ == "__main__":
    import sys

    from stagekit.cli import run_as_program

    run_as_program(["general-distill", *sys.argv[1:]])
