#!/usr/bin/env bash
# Install splitseq (editable) into the active Python environment: bash scripts/install.sh [EXTRAS]
# EXTRAS defaults to "dev" (tests); use "" for the library alone, "dev,ray" for the Ray backend too.
#
# PyTorch: when torch is not installed yet, ask pip for the CPU build 2.13.0+cpu first. Machines that
# have that wheel on pip's find-links/index (such as this project's CI machines) take it in seconds
# instead of a multi-GB CUDA build; elsewhere the request fails at once and pip's ordinary choice
# of torch for the platform stands (nothing is pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
extras=${1-dev}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null \
        && echo "install: took the CPU build torch==2.13.0+cpu" \
        || echo "install: no CPU build 2.13.0+cpu reachable; pip picks torch for this platform"
fi
if [ -n "$extras" ]; then
    "$PY" -m pip install --quiet -e ".[$extras]"
else
    "$PY" -m pip install --quiet -e .
fi
echo "install: splitseq installed ($("$PY" -c 'import torch, gymnasium; print("torch", torch.__version__, "gymnasium", gymnasium.__version__)'))"
