"""compress: pruning, int8 quantization, the pipeline runner, SLURM submission, reports and the demo."""
import stagekit  # noqa: F401  (the offline environment, before transformers loads anything)
