"""tasks: GLUE examples as model inputs, the task metrics, task models loaded for one task, their predictions and dev
evaluation; what training (distill) and compression (compress) both read."""
import stagekit  # noqa: F401  (the offline environment, before transformers loads anything)
