"""decompose: shared-core Tucker factorization of BERT encoders into TD students (the model itself is in modeling).

    xcompress decompose --teacher_model all-MiniLM-L6-v2 --config models/minilm-td-36-192/config.json \
        --output_dir runs/minilm-td-36-192
"""
import stagekit  # noqa: F401  (the offline environment, before transformers loads anything)

from .tucker import SharedTucker, decompose_fast, decompose_hooi, relative_errors

__all__ = ["SharedTucker", "decompose_fast", "decompose_hooi", "relative_errors"]
