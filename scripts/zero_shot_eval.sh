#!/usr/bin/env bash
# Zero-shot scores of a recipe (no training), in one command (issue #19, seed 000's zero-shot row):
#   scripts/zero_shot_eval.sh RECIPE MANIFEST OUT_DIR [--split test] [--size tiny] [KEY=VALUE ...]
# builds RECIPE exactly as training would start it (`radgen model export --untrained`), drafts a
# report for every study of the split (`radgen generate`), and scores them (`radgen evaluate`):
# OUT_DIR/model/, OUT_DIR/pred.jsonl, OUT_DIR/scores.json. Real recipes need their hub weights.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: scripts/zero_shot_eval.sh RECIPE MANIFEST OUT_DIR [--split S] [--size SIZE] [KEY=VALUE ...]" >&2; exit 2; }
recipe=$1 manifest=$2 out=$3; shift 3
split=test size=full overrides=()
while [ $# -gt 0 ]; do
  case $1 in
    --split) split=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    *) overrides+=("$1"); shift ;;
  esac
done
radgen=${RADGEN:-radgen}
mkdir -p "$out"
$radgen model export "$recipe" --untrained --size "$size" --out "$out/model" "${overrides[@]}"
$radgen generate --model "$out/model" --data "$manifest" --split "$split" --out "$out/pred.jsonl" --overwrite --no-progress
$radgen evaluate --pred "$out/pred.jsonl" --ref "$manifest" --split "$split" --out "$out/scores.json"
