"""corpora: the text sources the stages read (GLUE task files)."""
import stagekit  # noqa: F401  (the offline environment)
