#!/usr/bin/env bash
# Build the CPU image and smoke-test it: a demo run (render → generate → evaluate) in a
# container, then `radgen serve`: /health, one report from a PNG, and no third-party warning in
# the container's log. Needs a running Docker daemon that can pull python:3.11-slim. CI does not
# run this (building pulls ~1 GB); run it before publishing an image.
#   bash scripts/docker_smoke.sh [IMAGE_TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-radgen:cpu}"
WORK="$(mktemp -d)"
CONTAINER="radgen-smoke-$$"
cleanup() { docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "docker_smoke: building $TAG"
docker build -t "$TAG" .

echo "docker_smoke: radgen demo inside the container"
chmod 777 "$WORK"  # the image runs as uid 1000
docker run --rm -v "$WORK:/data" "$TAG" demo --out /data/demo --studies 2 --size 256 --metrics bleu,rouge_l,cider_d \
  2> "$WORK/demo.err" >/dev/null
test -s "$WORK/demo/report.html" || { echo "docker_smoke: demo wrote no report.html" >&2; cat "$WORK/demo.err" >&2; exit 1; }
PNG="$(find "$WORK/demo/images" -name '*_PA.png' | head -n 1)"

echo "docker_smoke: radgen generate on a folder inside the container"
mkdir -p "$WORK/scans" && cp "$PNG" "$WORK/scans/" && echo "not an image" > "$WORK/scans/notes.txt"
docker run --rm -v "$WORK:/data" "$TAG" generate /data/scans --out /data/preds.jsonl --max-new-tokens 20 > "$WORK/generate.out"
grep -q "1 generated" "$WORK/generate.out" && grep -q "1 not PNG/JPEG/DICOM" "$WORK/generate.out" \
  || { echo "docker_smoke: unexpected generate output: $(cat "$WORK/generate.out")" >&2; exit 1; }

echo "docker_smoke: radgen serve"
docker run -d --name "$CONTAINER" -p 127.0.0.1::8000 "$TAG" >/dev/null
PORT="$(docker port "$CONTAINER" 8000/tcp | head -n 1 | sed 's/.*://')"
for _ in $(seq 1 90); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { echo "docker_smoke: /health never answered" >&2; docker logs "$CONTAINER" >&2; exit 1; }
curl -fsS -F "file=@$PNG;type=image/png" "http://127.0.0.1:$PORT/v1/reports" > "$WORK/report.json"
grep -q '"findings"' "$WORK/report.json" || { echo "docker_smoke: no findings in $(cat "$WORK/report.json")" >&2; exit 1; }

if docker logs "$CONTAINER" 2>&1 | cat - "$WORK/demo.err" | grep -E "Warning|warnings.warn|Loading weights"; then
  echo "docker_smoke: third-party warnings or bars in the container's output (above)" >&2
  exit 1
fi
echo "docker_smoke: ok ($TAG: demo, generate, serve /health and /v1/reports)"
