"""pregenerate: Wikipedia dumps or extracted text -> masked-LM training epochs in TinyBERT's format.

Light on purpose: nothing here imports torch or transformers, so workers stay small.
"""
import stagekit  # noqa: F401  (the offline environment)
