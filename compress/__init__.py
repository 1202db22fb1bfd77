"""compress: the unified module (the `xcompress` CLI, the demo; pruning, quantization and the pipeline follow)."""
