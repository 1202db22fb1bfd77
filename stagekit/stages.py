"""Every `xcompress` stage, with what the entry point, the allocator, the pipeline and submit need to know of it.

Only the chosen stage's module is imported (by name, when the command runs): pregenerate must not pay for torch,
which the model stages import.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Stage:
    module: str  # defines CONFIG (its options), run(cfg) -> summary and report(summary) -> str
    help: str
    trains: bool = False  # a training loop: runs under tcmalloc (stagekit/allocator.py)
    multi_rank: bool = False  # may run under torchrun, mpirun, horovodrun or srun with several ranks
    in_pipeline: bool = True  # may be a stage of a pipeline YAML


STAGES: dict[str, Stage] = {
    "pregenerate": Stage("pregenerate.stage", "Wikipedia dump or text -> masked-LM training epochs"),
    "decompose": Stage("decompose.stage", "dense BERT teacher -> shared-core Tucker (TD) student"),
    "dense-student": Stage("compress.dense_student", "dense teacher -> smaller dense student of its family (fewer "
                           "layers, narrower FFN, fewer heads), initialised from the teacher"),
    "general-distill": Stage("distill.general", "layer-wise distillation of a TD student on pre-generated data",
                             trains=True, multi_rank=True),
    "recover": Stage("distill.recover", "layer-wise recovery: each TD layer learns the teacher's layer on real text",
                     trains=True),
    "finetune": Stage("distill.finetune", "fine-tune a teacher (or any BERT/TD model) on a GLUE task",
                      trains=True, multi_rank=True),
    "fit-mlm-head": Stage("distill.mlm_head", "fit a masked-LM head to a frozen encoder (for augment)", trains=True),
    "augment": Stage("distill.augment", "TinyBERT data augmentation of a GLUE task's training set"),
    "mine-pairs": Stage("distill.mine_pairs", "new sentence pairs of a pair task from its own sentences' nearest "
                        "neighbours, labelled by the fine-tuned teacher"),
    "task-distill": Stage("distill.task", "distil a fine-tuned teacher into a TD student on a GLUE task",
                          trains=True, multi_rank=True),
    "evaluate": Stage("distill.evaluate", "GLUE dev metrics (and test submissions) of a model"),
    "seq2seq-finetune": Stage("text2text.finetune", "fine-tune a text-to-text model (T5) on source/target texts or a "
                              "GLUE task in T5's text form, validating by generation", trains=True),
    "seq2seq-evaluate": Stage("text2text.evaluate", "BLEU, chrF, exact match or the GLUE metric of a text-to-text "
                              "model's generated texts, and its generation time per sentence"),
    "prune": Stage("compress.prune", "structured, TD-rank or unstructured pruning of a task model, with recovery",
                   trains=True),
    "prune-schedule": Stage("compress.prune_schedule", "per-part global L1 pruning of a text-to-text model (T5) or "
                            "encoder task model, each part fine-tuned before the next, resumable, stored compactly",
                            trains=True),
    "prune-compose": Stage("compress.prune_compose", "composable pruning of a text-to-text model (T5) or encoder task "
                           "model: the distinct pruned modules of N versions pruned and distilled once, composed, "
                           "fine-tuned whole", trains=True),
    "quantize": Stage("compress.quantize", "int8 dynamic quantization (PyTorch and ONNX Runtime) of a task model"),
    "report": Stage("compress.report", "report.md and plots: size, latency and score of a set of task models"),
    "pipeline": Stage("compress.pipeline", "run the stages of a pipeline YAML in order, resuming complete ones",
                      in_pipeline=False),
    "submit": Stage("compress.submit", "submit a stage, or a pipeline as a chain of jobs, to SLURM (sbatch)"),
    "demo": Stage("compress.demo", "the main job on the embedded defaults", in_pipeline=False),
}
