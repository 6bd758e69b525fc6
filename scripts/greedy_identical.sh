#!/usr/bin/env bash
# Are a model's greedy reports identical at two commits? (issue #18: a refactor must not change them)
#   scripts/greedy_identical.sh BASE_REV [MODEL] [MANIFEST] [N]
# Generates the first N test studies greedily with MODEL at BASE_REV (a temporary worktree) and at
# the working tree, then compares report text and token ids study by study. Exit 1 on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:?usage: scripts/greedy_identical.sh BASE_REV [MODEL] [MANIFEST] [N]}"
MODEL="$(realpath "${2:-radgen/assets/default_model}")"
MANIFEST="$(realpath "${3:-work/default-model/phantom/manifest.jsonl}")"
N="${4:-48}"
PY="$PWD/.venv/bin/python"  # not realpath: the venv link must stay a link
OUT="$(mktemp -d)"
trap 'git worktree remove --force "$OUT/base" >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
git worktree add --detach "$OUT/base" "$BASE" >/dev/null
for side in base head; do
  dir="$PWD"; [ "$side" = base ] && dir="$OUT/base"
  (cd "$dir" && PYTHONPATH="$dir" "$PY" -m radgen generate --model "$MODEL" --data "$MANIFEST" --split test --limit "$N" \
     --greedy --out "$OUT/$side.jsonl" --overwrite --no-progress)
done
"$PY" - "$OUT/base.jsonl" "$OUT/head.jsonl" <<'PYEOF'
import json, sys
base, head = ({json.loads(l)["study_id"]: json.loads(l) for l in open(p)} for p in sys.argv[1:3])
differ = [k for k in base if (base[k]["findings"], base[k].get("token_ids")) != (head[k]["findings"], head[k].get("token_ids"))]
print(f"{len(base) - len(differ)} of {len(base)} greedy reports identical (text and token ids)")
sys.exit(1 if differ or base.keys() != head.keys() else 0)
PYEOF
