#!/usr/bin/env bash
# Make .venv with kdx installed (editable) and its test and export extras.
# On a machine without an NVIDIA GPU, install the CPU build of torch first: a
# dependency that requires torch would otherwise pull PyPI's default torch wheel,
# a CUDA build with several GB of CUDA libraries that a CPU-only machine never uses.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        .venv/bin/pip install -q "torch>=2.4,<3"
    else
        # The CPU wheel: from the local wheel folder where there is one, else PyTorch's CPU index.
        .venv/bin/pip install -q torch==2.13.0 2>/dev/null \
            || .venv/bin/pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    fi
fi
.venv/bin/pip install -q -e ".[dev,export,text,embed]"
echo "ready: .venv/bin/kdx"
