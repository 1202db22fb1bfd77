"""stagekit: what every stage stands on. Errors, atomic output, model paths, the allocator, options declared once
on a stage's config, and the `xcompress` entry point.

Importing it sets the offline environment: nothing in xcompress may reach a model hub, so transformers fails fast
instead of trying; its weight-loading bars would bury the stages' own progress and error lines, so they go too.
Every package of xcompress imports stagekit first, so `python -m distill.task` under a launcher has these set
before transformers is imported. A user's own setting wins.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
