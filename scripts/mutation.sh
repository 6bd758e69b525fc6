#!/usr/bin/env bash
# Mutation testing (mutmut) of the modules users depend on most; each module against its own fast tests.
# Not run in CI: a module takes minutes (every mutant reruns its tests). Results: docs/testing.md.
#
#   scripts/mutation.sh                 # every module below
#   scripts/mutation.sh labels metrics  # some of them
#
# The source tree is copied to a temporary folder and mutated there, so the working tree is never
# touched (mutmut 2 rewrites files in place). Per module, the surviving mutants' diffs land in
# $MUTATION_REPORT (default: mutation-report/ under the repository, ignored by git).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
report=${MUTATION_REPORT:-$root/mutation-report}
"$py" -m pip install -q "mutmut==2.5.1"

# module -> files to mutate (comma-separated) | test files that guard them
declare -A paths=(
  [labels]="radgen/labels/labeler.py,radgen/labels/rules.py"
  [metrics]="radgen/metrics/text.py"
  [speculative]="radgen/models/speculative.py"
  [images]="radgen/data/images.py"
  [serve]="radgen/serve/app.py"
  [checkpoint]="radgen/train/checkpoint.py"
)
declare -A tests=(
  [labels]="tests/labels"
  [metrics]="tests/metrics/test_text_parity.py"
  [speculative]="tests/generate/test_speculative.py tests/generate/test_drafted_rejections.py"
  [images]="tests/data/test_images.py tests/data/test_image_limits.py"
  [serve]="tests/serve/test_api.py tests/serve/test_upload_limits.py"
  [checkpoint]="tests/train/test_resume.py"
)
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(labels metrics speculative images serve checkpoint)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$work"
mkdir -p "$report"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$work"
cd "$work"
for module in "${modules[@]}"; do
  [ -n "${paths[$module]:-}" ] || { echo "mutation: unknown module '$module' (one of: ${!paths[*]})" >&2; exit 2; }
  rm -f .mutmut-cache
  start=$(date +%s)
  # mutmut exits non-zero when mutants survive; the summary below says how many
  "$py" -m mutmut run --paths-to-mutate "${paths[$module]}" --tests-dir tests --no-progress \
    --runner "$py -m pytest -x -q -p no:cacheprovider -p no:randomly ${tests[$module]}" >"$report/$module.log" 2>&1 || true
  "$py" -m mutmut results >"$report/$module.results" 2>&1 || true
  # counts and survivor ids straight from mutmut's cache ("suspicious" = killed, but slowly)
  "$py" - "$module" "$(( $(date +%s) - start ))" >"$report/$module.summary" <<'PY'
import sqlite3, sys
rows = sqlite3.connect(".mutmut-cache").execute(
    "select s.filename, m.status, m.id from Mutant m join Line l on m.line = l.id join SourceFile s on l.sourcefile = s.id").fetchall()
for name in sorted({r[0] for r in rows}):
    status = [r[1] for r in rows if r[0] == name]
    killed = sum(s in ("ok_killed", "ok_suspicious") for s in status)
    survived, untested = status.count("bad_survived"), status.count("untested")
    run = len(status) - untested
    rate = f"{100 * survived / run:.1f}%" if run else "-"
    print(f"{sys.argv[1]}: {name}: {run} of {len(status)} mutants run, {killed} killed, {survived} survived ({rate}), "
          f"{status.count('bad_timeout')} timed out ({sys.argv[2]} s)")
print("survivors:", " ".join(str(r[2]) for r in rows if r[1] == "bad_survived"))
PY
  cat "$report/$module.summary"
  for id in $(sed -n 's/^survivors: //p' "$report/$module.summary"); do
    "$py" -m mutmut show "$id" || true
    echo
  done >"$report/$module.survivors.diff" 2>&1
done
echo "mutation: reports in $report"
