#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. CI calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web page's end-to-end test (tests/serve/test_browser.py) drives headless Chromium with Selenium.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "test: installing chromium + chromium-driver (apt) for the browser test"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) >.venv/apt.log 2>&1 \
      || { echo "test: apt-get install chromium chromium-driver failed; see .venv/apt.log" >&2; exit 1; }
  else
    echo "test: chromium/chromedriver missing and apt-get unavailable (not root); the browser test will be skipped" >&2
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q "$@"
