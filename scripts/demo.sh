#!/usr/bin/env bash
# One command from a fresh checkout to the demo page: install (scripts/setup.sh), then
# `radgen demo` with the model shipped in radgen/assets/default_model, and print where the page is.
# Extra arguments go to `radgen demo` (e.g. --model runs/iu/best --studies 4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/radgen demo --out out/demo "$@" >/dev/null
echo "demo page: $(pwd)/out/demo/report.html"
