"""compress: the unified module (the `xcompress` CLI, the demo; pruning, quantization and the pipeline follow)."""

import os

# Nothing in xcompress may reach a model hub: make transformers fail fast instead of trying. Its weight-loading
# bars would bury the stages' own progress and error lines; they go too. Set here, in the package every stage
# imports first, so that `python -m distill.task` under a launcher gets them before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
