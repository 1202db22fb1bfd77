"""distill: general and task distillation, fine-tuning, augmentation, evaluation, the distributed shim."""
import stagekit  # noqa: F401  (the offline environment, before transformers loads anything)
