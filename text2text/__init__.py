"""text2text: sequence-to-sequence models (T5) fine-tuned and evaluated on text-to-text data (a TSV of source and
target texts, or a GLUE task in T5's text form), with generation by greedy or beam search."""
import stagekit  # noqa: F401  (the offline environment, before transformers loads anything)
