#!/usr/bin/env bash
# Mutation testing (mutmut) of the modules users depend on most; each module against its own fast tests.
# Not run in CI: a module takes minutes (every mutant reruns its tests). Results: docs/testing.md.
# Survivors are then re-run against the wider test set of their module (see `wider` below).
#
#   scripts/mutation.sh                 # every module below
#   scripts/mutation.sh labels metrics  # some of them
#
# The source tree is copied to a temporary folder and mutated there, so the working tree is never
# touched (mutmut 2 rewrites files in place). Per module, the surviving mutants' diffs land in
# $MUTATION_REPORT (default: mutation-report/ under the repository, ignored by git).
#
# Each mutant's tests run in a process forked from one that has already imported the third-party
# libraries (torch, numpy, PIL, pydicom, pytest): on 2 shared cores importing torch is most of a test
# run. Nothing of radgen or tests/ is imported before the fork, so every mutant's run imports the
# mutated source afresh, as a new interpreter would. MUTATION_FORKSERVER=0 runs plain pytest instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
report=${MUTATION_REPORT:-$root/mutation-report}
"$py" -m pip install -q "mutmut==2.5.1"

# module -> files to mutate (comma-separated) | test files that guard them
declare -A paths=(
  [labels]="radgen/labels/labeler.py"
  [rules]="radgen/labels/rules.py"
  [metrics]="radgen/metrics/text.py"
  [speculative]="radgen/models/speculative.py"
  [images]="radgen/data/images.py"
  [serve]="radgen/serve/app.py"
  [checkpoint]="radgen/train/checkpoint.py"
)
declare -A tests=(
  [labels]="tests/labels"
  [rules]="tests/labels"
  [metrics]="tests/metrics/test_text_parity.py"
  [speculative]="tests/generate/test_speculative.py tests/generate/test_drafted_rejections.py tests/generate/test_draft_table.py tests/generate/test_greedy_rule.py"
  # Left out as too slow per mutant: the subprocess test of test_image_limits.py (a fresh interpreter
  # imports radgen, ~25 s; it checks PIL's global limit, which no statement of images.py sets) and the
  # full-size bombs of test_images_budget.py (each builds 170-390 MB of zeros; the small versions stay)
  [images]="tests/data/test_images.py tests/data/test_image_limits.py tests/data/test_colour.py tests/data/test_images_budget.py tests/data/test_image_decoding_edges.py tests/data/test_image_decoding_details.py tests/data/test_image_transform_details.py --deselect tests/data/test_image_limits.py::test_importing_radgen_leaves_the_pixel_limit_at_pillows_default --deselect tests/data/test_images_budget.py::test_bombs_are_refused_from_the_header[png_bomb] --deselect tests/data/test_images_budget.py::test_bombs_are_refused_from_the_header[dicom_header_bomb] --deselect tests/data/test_images_budget.py::test_deflated_dicom_is_refused_without_inflating_it"
  [serve]="tests/serve/test_api.py tests/serve/test_upload_limits.py tests/serve/test_defaults.py tests/serve/test_contract.py"
  [checkpoint]="tests/train/test_checkpoint_state.py tests/train/test_checkpoint_safety.py tests/train/test_resume.py"
)
# Second pass (scripts/mutation_recheck.py): each survivor re-applied and run against the module's wider
# tests; one that fails there is killed by an existing, slower test. Results in $report/MODULE.recheck.
declare -A wider=(
  [labels]="tests/labels tests/metrics/test_clinical.py tests/metrics/test_findings.py"
  [rules]="tests/labels tests/metrics/test_clinical.py tests/metrics/test_findings.py"
  [metrics]="tests/metrics/test_text_parity.py tests/metrics/test_score.py tests/metrics/test_stats.py tests/metrics/test_findings.py tests/metrics/test_evaluate.py"
  [speculative]="tests/generate"
  [images]="tests/data/test_image_decoding_details.py tests/data/test_image_transform_details.py tests/data/test_images.py tests/data/test_colour.py tests/data/test_image_decoding_edges.py tests/data/test_images_budget.py tests/data/test_image_limits.py tests/data/test_dataset.py tests/models/test_stitch_preprocessing.py"
  [serve]="tests/serve/test_defaults.py tests/serve/test_contract.py tests/serve/test_queue.py tests/serve/test_hardening.py tests/serve/test_api.py tests/serve/test_upload_limits.py tests/serve/test_memory.py tests/serve/test_browser.py"
  [checkpoint]="tests/train/test_checkpoint_state.py tests/train/test_checkpoint_safety.py tests/train/test_trainer.py tests/models/test_saved_format.py tests/train/test_end_to_end.py tests/train/test_resume.py"
)
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(labels rules metrics speculative images serve checkpoint)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$work"
mkdir -p "$report"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$work" PYTHONDONTWRITEBYTECODE=1
cd "$work"

pytest=("$py" -m pytest)
printf '"$@" || exit 1\n' >"$work/.runner.sh"
if [ "${MUTATION_FORKSERVER:-1}" != 0 ]; then
  sock="$work/.forkserver.sock"
  # server: preload, then per request fork a child that runs pytest.main(args) with its output sent back
  cat >"$work/.forkserver.py" <<'PY'
import json, os, select, signal, socket, sys
sys.dont_write_bytecode = True
for name in ("numpy", "torch", "PIL.Image", "pydicom", "pytest", "transformers"):
    try:
        __import__(name)
    except Exception:  # noqa: BLE001 - preloading is only a speed-up
        pass
assert not any(m == "radgen" or m.startswith(("radgen.", "tests")) for m in sys.modules)
import pytest
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(1)
while True:
    conn, _ = server.accept()
    with conn.makefile() as lines:
        args = json.loads(lines.readline())
    pid = os.fork()
    if pid == 0:
        server.close()
        os.dup2(conn.fileno(), 1)
        os.dup2(conn.fileno(), 2)
        try:
            code = int(pytest.main(args))
        except BaseException:  # noqa: BLE001
            code = 99
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    while True:  # the client gone (mutmut's timeout killed it): kill the run
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if select.select([conn], [], [], 0.05)[0] and not conn.recv(1, socket.MSG_PEEK):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
    if code is not None:
        try:
            conn.sendall(f"\n__rc__ {code & 255 if code >= 0 else 98}\n".encode())
        except OSError:
            pass
    conn.close()
PY
  cat >"$work/.forkclient.py" <<'PY'
import json, socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(sys.argv[1])
client.sendall((json.dumps(sys.argv[2:]) + "\n").encode())
data = b""
while chunk := client.recv(65536):
    data += chunk
text, _, rc = data.decode(errors="replace").rpartition("\n__rc__ ")
sys.stdout.write(text + "\n")
sys.exit(int(rc.strip()) if rc.strip().isdigit() else 97)
PY
  "$py" "$work/.forkserver.py" "$sock" >"$work/.forkserver.log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
  for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.5; done
  [ -S "$sock" ] || { echo "mutation: fork server did not start" >&2; cat "$work/.forkserver.log" >&2; exit 1; }
  pytest=("$py" -S "$work/.forkclient.py" "$sock")
fi
# A mutant that makes a loop endless (drafted decoding's `while True`) fails its test after this many
# seconds (pytest-timeout) instead of waiting out mutmut's own timeout (10x the baseline run, ~10 min
# a mutant here); such a hang counts as a kill. Far above any single test in these fast files.
test_timeout=${MUTATION_TEST_TIMEOUT:-120}
for module in "${modules[@]}"; do
  [ -n "${paths[$module]:-}" ] || { echo "mutation: unknown module '$module' (one of: ${!paths[*]})" >&2; exit 2; }
  rm -f .mutmut-cache "$report/$module.recheck"  # a recheck keeps earlier kills: only of this run
  start=$(date +%s)
  # mutmut exits non-zero when mutants survive; the summary below says how many. mutmut 2 counts only
  # exit status 1 as a kill, so .runner.sh turns pytest's 2 (a mutant that breaks collection or
  # import, e.g. a renamed default) into 1: a kill, not a false survivor.
  "$py" -m mutmut run --paths-to-mutate "${paths[$module]}" --tests-dir tests --no-progress \
    --runner "bash $work/.runner.sh ${pytest[*]} -x -q -p no:cacheprovider -p no:randomly --timeout $test_timeout ${tests[$module]}" \
    >"$report/$module.log" 2>&1 || true
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
  (cd "$root" && "$py" scripts/mutation_recheck.py "$module" "$report" ${wider[$module]}) || true
done
echo "mutation: reports in $report"
