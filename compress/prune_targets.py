"""What the per-part pruning stages (prune-schedule, prune-compose) do with the model they are given, one class per
kind: a text-to-text model (T5) or an encoder task model. Each loads the model in fp32, names its parts and the
shapes a part can be pruned in, prunes, counts zeros per part, scores the unpruned model, fine-tunes a pruned one
with its zeros held (seq2seq-finetune; finetune, or task-distill's prediction phase from `--teacher_model`), and
publishes the result stored compactly. For composable pruning each also names its blocks (the modules it prunes and
distils one by one, modeling/families.py) and gives real training batches to capture their inputs on.

`cfg` is either stage's config: the two share the flags read here by name.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import prune

from corpora.glue import dev_files, get_task, subset, task_dir, train_file
from distill.checkpoint import save_model_dir, write_model_files
from modeling.families import Seq2SeqFamily, family_of, seq2seq_family_of
from modeling.formats import DENSE, GENERATOR, PRUNED, SEQ2SEQ, kind_of
from modeling.loading import inspect_model, load_model, load_tokenizer
from modeling.params import GROUPS, weight_group
from modeling.sparse_storage import save_sparse
from stagekit.errors import InputError
from stagekit.outputs import tokenizer_files as tokenizer_files_of
from tasks.classifier import dev_evaluation, load_classifier
from tasks.features import load_features
from text2text.data import text_task
from text2text.finetune import Seq2SeqFinetuneConfig
from text2text.finetune import run as finetune
from text2text.generation import PairBatches, generate, mean_loss

from .prune import recover
from .prune_shapes import encoder_units_, seq2seq_ffn_rows_, two_of_four_
from .prune_unstructured import magnitude_prune, sparsity

if TYPE_CHECKING:
    from .prune_compose import PruneComposeConfig
    from .prune_schedule import PruneScheduleConfig

    StageConfig = PruneScheduleConfig | PruneComposeConfig


@dataclasses.dataclass(frozen=True)
class Step:
    """One part of a schedule: how much of it goes, in which shape, and how long it is fine-tuned after."""

    part: str
    amount: float
    epochs: float
    shape: str = "unstructured"


def prune_part(model: nn.Module, family: Seq2SeqFamily, part: str, amount: float) -> None:
    """Zero the `amount` fraction of smallest-magnitude weights over all of one part's matrices, permanently."""
    members = [(m, "weight") for m in family.part_modules(model, part).values()]
    prune.global_unstructured(members, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in members:
        prune.remove(module, name)


def part_sparsity(model: nn.Module, family: Seq2SeqFamily) -> dict[str, dict[str, float]]:
    """Zeros per part, and over every parameter of the model (shared tensors counted once) as `all`."""
    out = {}
    for part in family.parts:
        weights = [m.weight for m in family.part_modules(model, part).values()]
        n, z = sum(w.numel() for w in weights), sum(int((w == 0).sum()) for w in weights)
        out[part] = {"weights": n, "zeros": z, "sparsity": z / n}
    every = list({p.data_ptr(): p for p in model.parameters()}.values())
    n, z = sum(p.numel() for p in every), sum(int((p == 0).sum()) for p in every)
    out["all"] = {"weights": n, "zeros": z, "sparsity": z / n}
    return out


class TextToTextModel:
    """A text-to-text model: its family's parts and blocks, scores by generation, seq2seq-finetune with the zeros
    held."""

    learning_rate = 5e-4

    def __init__(self, cfg: StageConfig, model_dir: Path, raw: dict[str, Any], stage: str):
        self.cfg, self.model_dir, self.stage = cfg, model_dir, stage
        self.task = text_task(cfg.task_name)
        self.family = seq2seq_family_of(raw, f"--model {cfg.model}")
        self.name = self.family.name
        rows = ("rows",) if self.family.ffn_size_key else ()
        self.shapes = {p: ("unstructured", "2of4") + (rows if p == "feed_forward" else ()) for p in self.family.parts}
        self.task.pairs(cfg.data_dir, "train")  # a missing or malformed file is refused before anything is pruned

    def load(self, path: Path) -> nn.Module:
        return load_model(str(path), "--model", GENERATOR, kinds=(SEQ2SEQ,), need_fp32=True, stage=self.stage)[0]

    def weights(self, model: nn.Module, part: str) -> dict[str, torch.Tensor]:
        return {name: m.weight for name, m in self.family.part_modules(model, part).items()}

    def prune(self, model: nn.Module, step: Step) -> None:
        if step.shape == "rows":
            seq2seq_ffn_rows_(model, self.family, step.amount)
        elif step.shape == "2of4":
            two_of_four_(list(self.weights(model, step.part).values()))
        else:
            prune_part(model, self.family, step.part, step.amount)

    def sparsity(self, model: nn.Module) -> dict[str, dict[str, float]]:
        return part_sparsity(model, self.family)

    def reference(self) -> dict[str, Any]:
        return dev_reference(self.cfg, self.task, self.model_dir, self.stage)

    def blocks(self, model: nn.Module) -> dict[str, str]:
        return self.family.model_blocks(model)

    def training_batches(self, count: int) -> list[dict[str, Any]]:
        """Up to `count` seeded batches of training pairs, as the model's forward takes them."""
        cfg = self.cfg
        train = subset(self.task.pairs(cfg.data_dir, "train"), cfg.max_train_examples, cfg.seed)
        data = PairBatches(train, load_tokenizer(self.model_dir, "--model"), cfg.max_source_length,
                           cfg.max_target_length)
        return [data.batch(ids) | {"use_cache": False} for ids in seeded_batches(len(train), count, cfg)]

    def save(self, model: nn.Module, source: Path, target: Path) -> None:
        model.save_pretrained(target)
        load_tokenizer(source, "--model").save_pretrained(target)

    def finetune(self, pruned: Path, out: Path, epochs: float, learning_rate: float) -> dict[str, Any]:
        tuned = finetune(finetune_config(dataclasses.replace(self.cfg, learning_rate=learning_rate), pruned, out,
                                         epochs))
        return {"score_after_pruning": tuned["history"][0]["score"], "score": tuned["dev"]["score"],
                "dev": tuned["dev"], "steps": tuned["steps"], "cpu_seconds": tuned["cpu_seconds"],
                "history": tuned["history"]}

    def publish(self, model: nn.Module, source: Path, target: Path) -> None:
        if self.cfg.store == "sparse":
            model.config.save_pretrained(target)
            save_sparse(model, target)
        else:
            model.save_pretrained(target)
        load_tokenizer(source, "--model").save_pretrained(target)


class EncoderModel:
    """An encoder task model: its weight groups as parts, its layers' attention and FFN modules as blocks, scores on
    the whole dev set, finetune (or task-distill's prediction phase from `--teacher_model`) with the zeros held."""

    learning_rate = 2e-5

    def __init__(self, cfg: StageConfig, model_dir: Path):
        self.cfg, self.model_dir = cfg, model_dir
        self.task = get_task(cfg.task_name)
        task_dir(cfg.data_dir, self.task)
        model = self.load(model_dir)
        if cfg.teacher_model:  # checked now, not after the first part it would recover
            load_classifier(cfg.teacher_model, "--teacher_model", self.task, need_task_model=True)
        present = {weight_group(name, p) for name, p in model.named_parameters()}
        whole_units = kind_of(model) in (DENSE, PRUNED)  # a TD model's layers are factors, not rows and heads
        extra = {"ffn": ("rows",), "attention": ("heads",)} if whole_units else {}
        self.family = family_of(model)
        self.name = self.family.name
        self.shapes = {g: ("unstructured", "2of4") + extra.get(g, ()) for g in GROUPS if g in present}
        self.tokenizer_files = tokenizer_files_of(model_dir)
        self.tokenizer = load_tokenizer(model_dir, "--model")
        self.dev = load_features(self.task, dev_files(self.task, cfg.data_dir)[0], self.tokenizer, cfg.max_seq_length)

    def load(self, path: Path) -> nn.Module:
        return load_classifier(str(path), "--model", self.task, need_task_model=True, need_fp32=True)[0]

    def weights(self, model: nn.Module, part: str) -> dict[str, torch.Tensor]:
        return {name: p for name, p in model.named_parameters() if weight_group(name, p) == part}

    def prune(self, model: nn.Module, step: Step) -> None:
        if step.shape in ("rows", "heads"):
            encoder_units_(model, step.shape, step.amount)
        elif step.shape == "2of4":
            two_of_four_(list(self.weights(model, step.part).values()))
        else:
            magnitude_prune(model, {step.part: step.amount})

    def sparsity(self, model: nn.Module) -> dict[str, dict[str, float]]:
        return sparsity(model)

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        found = dev_evaluation(model, self.task, self.dev, self.cfg.eval_batch_size)
        return {"score": found.metrics["score"], "dev": found.metrics, "val_loss": found.loss}

    def reference(self) -> dict[str, Any]:
        return self.evaluate(self.load(self.model_dir))

    def blocks(self, model: nn.Module) -> dict[str, str]:
        return self.family.model_blocks(model)

    def training_batches(self, count: int) -> list[dict[str, Any]]:
        """Up to `count` seeded batches of training examples, as the model's forward takes them."""
        cfg = self.cfg
        train = load_features(self.task, train_file(self.task, cfg.data_dir), self.tokenizer, cfg.max_seq_length,
                              cfg.max_train_examples, cfg.seed)
        batches = [self.family.model_inputs(train.batch(ids)) for ids in seeded_batches(len(train), count, cfg)]
        return [{k: v for k, v in b.items() if k != "labels"} for b in batches]

    def save(self, model: nn.Module, source: Path, target: Path) -> None:
        save_model_dir(model, target, self.tokenizer_files)

    def finetune(self, pruned: Path, out: Path, epochs: float, learning_rate: float) -> dict[str, Any]:
        cfg, after = self.cfg, self.evaluate(self.load(pruned))
        cpu = time.process_time()
        settings = dict(data_dir=cfg.data_dir, num_train_epochs=epochs, learning_rate=learning_rate, max_steps=None,
                        train_batch_size=cfg.train_batch_size, eval_batch_size=cfg.eval_batch_size,
                        max_seq_length=cfg.max_seq_length, max_train_examples=cfg.max_train_examples,
                        eval_step=cfg.eval_steps, seed=cfg.seed, quiet=True)
        tuned = recover(pruned, out, self.task.name, settings, cfg.teacher_model, keep_sparsity=True)
        phase = tuned["phases"][-1]
        start = {"step": 0, "train_loss": None, "val_loss": after["val_loss"], "score": after["score"]}
        history = [start] + [{k: h.get(k) for k in ("step", "train_loss", "val_loss", "score")}
                             for h in phase["dev_history"]]
        dev = next(iter(tuned["dev"].values()))
        return {"score_after_pruning": after["score"], "score": dev["score"], "dev": dev, "steps": phase["steps"],
                "cpu_seconds": time.process_time() - cpu, "history": history}

    def publish(self, model: nn.Module, source: Path, target: Path) -> None:
        write_model_files(model, target, self.tokenizer_files)
        if self.cfg.store == "sparse":
            (target / "model.safetensors").unlink()
            save_sparse(model, target)


def target_of(cfg: StageConfig, stage: str) -> tuple[Path, TextToTextModel | EncoderModel]:
    """The model `--model` names, as the target of a pruning stage; an encoder given `--task_name text` is refused."""
    model_dir, raw, arch = inspect_model(cfg.model, "--model", stage=stage)
    if arch.kind == SEQ2SEQ:
        return model_dir, TextToTextModel(cfg, model_dir, raw, stage)
    if cfg.task_name == "text":
        raise InputError(f"--model {cfg.model}: an encoder; --task_name text is for text-to-text models (T5)")
    return model_dir, EncoderModel(cfg, model_dir)


def seeded_batches(examples: int, count: int, cfg: StageConfig) -> list[list[int]]:
    """Up to `count` batches of `cfg.train_batch_size` example indices, in a seeded random order."""
    order = torch.randperm(examples, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    size = cfg.train_batch_size
    return [order[i * size:(i + 1) * size] for i in range(min(count, examples // size or 1))]


def dev_reference(cfg: StageConfig, task, model_dir: Path, stage: str) -> dict[str, Any]:
    """The unpruned model's dev score and validation loss, on the dev pairs a pruned model is validated on (`cfg`
    carries seq2seq-finetune's data, length and generation flags)."""
    model, _ = load_model(str(model_dir), "--model", GENERATOR, kinds=(SEQ2SEQ,), stage=stage)
    tokenizer = load_tokenizer(model_dir, "--model")
    dev = subset(task.pairs(cfg.data_dir, "dev"), cfg.max_eval_examples, cfg.seed)
    generated = generate(model, tokenizer, [p.source for p in dev], cfg.max_source_length, cfg.generation_max_length,
                         cfg.generation_num_beams, cfg.eval_batch_size)
    metrics = task.score(generated, dev)
    data = PairBatches(dev, tokenizer, cfg.max_source_length, cfg.max_target_length)
    return {"score": metrics["score"], "dev": metrics, "val_loss": mean_loss(model, data, cfg.eval_batch_size)}


def finetune_config(cfg: StageConfig, model: Path, output: Path, epochs: float) -> Seq2SeqFinetuneConfig:
    """seq2seq-finetune's config for fine-tuning a pruned model with its zeros held: the flags a pruning stage
    shares with it (learning rate, batches, lengths, generation, examples, seed) passed on."""
    own = ("model", "output_dir", "overwrite_output_dir", "num_train_epochs")
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Seq2SeqFinetuneConfig)
              if hasattr(cfg, f.name) and f.name not in own}
    return Seq2SeqFinetuneConfig(**shared, model=str(model), output_dir=str(output), num_train_epochs=epochs,
                                 keep_sparsity=True, overwrite_output_dir=True)


