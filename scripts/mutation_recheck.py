"""Second pass of scripts/mutation.sh: re-run each surviving mutant against the module's wider tests.

mutmut runs every mutant against a few fast test files (a module's whole test folder would take hours
on 2 cores). A mutant that survives those is applied again here, in a scratch copy of the tree, and
run against the wider set (e.g. all of tests/serve): a survivor that fails there is killed by a test
that already exists, only a slower one. What is left survives the whole relevant suite and is
explained in docs/testing.md or killed by a new test.

    python scripts/mutation_recheck.py MODULE REPORT_DIR TEST [TEST ...]

reads REPORT_DIR/MODULE.summary (survivor ids) and REPORT_DIR/MODULE.survivors.diff (one
`mutmut show` diff per survivor, in the same order) and writes REPORT_DIR/MODULE.recheck: one line
per survivor, "ID killed TEST_ID" or "ID survived", then a count line. Run again (e.g. after adding
tests), it keeps the kills already in MODULE.recheck and re-runs only the mutants that survived;
MUTATION_RECHECK_ONLY="ID ..." limits that to some of them (the others keep their earlier line).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split_diffs(text: str) -> list[str]:
    """One unified diff per mutant: each `mutmut show` output starts with a '--- FILE' header."""
    chunks, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("--- ") and current and any(c.startswith("@@") for c in current):
            chunks.append("".join(current))
            current = []
        if line.startswith("--- ") or current:
            current.append(line)
    if current:
        chunks.append("".join(current))
    return chunks


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _patch(tree: Path, diff: str, reverse: bool = False) -> bool:
    """Apply (or undo) one mutant's diff; False when it does not apply (the file changed since the run)."""
    args = ["patch", "-p0", "--quiet", "--no-backup-if-mismatch", "--reject-file=-", "-d", str(tree)] + (["-R"] if reverse else [])
    return subprocess.run(args, input=diff.encode(), capture_output=True).returncode == 0


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    module, report, tests = argv[0], Path(argv[1]), argv[2:]
    summary = (report / f"{module}.summary").read_text()
    ids = re.search(r"^survivors:(.*)$", summary, re.M).group(1).split()
    diffs = split_diffs((report / f"{module}.survivors.diff").read_text())
    if len(diffs) != len(ids):
        raise SystemExit(f"mutation_recheck: {len(ids)} survivors in {module}.summary but {len(diffs)} diffs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONDONTWRITEBYTECODE": "1"}
    recheck = report / f"{module}.recheck"
    earlier = dict(re.findall(r"^(\d+) (.*)$", recheck.read_text(), re.M)) if recheck.is_file() else {}
    only = set(os.environ.get("MUTATION_RECHECK_ONLY", "").split())
    keep = {i: line for i, line in earlier.items() if line.startswith("killed") or (only and i not in only)}
    lines, killed = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        _copy_tree(tree)
        env["PYTHONPATH"] = str(tree)
        for mutant_id, diff in zip(ids, diffs):
            if mutant_id in keep:
                killed += keep[mutant_id].startswith("killed")
                lines.append(f"{mutant_id} {keep[mutant_id]}")
                continue
            if not _patch(tree, diff):
                lines.append(f"{mutant_id} not-applied (the file changed since the run; re-apply it by hand)")
                print(lines[-1], flush=True)
                continue
            try:
                run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                                      "--timeout", os.environ.get("MUTATION_TEST_TIMEOUT", "120"), *tests],
                                     cwd=tree, env=env, capture_output=True, text=True)
            finally:
                if not _patch(tree, diff, reverse=True):
                    raise SystemExit(f"mutation_recheck: could not undo mutant {mutant_id}")
            failed = re.search(r"^(?:FAILED|ERROR) (\S+)", run.stdout, re.M)
            if run.returncode == 0:
                lines.append(f"{mutant_id} survived")
            else:
                killed += 1
                lines.append(f"{mutant_id} killed {failed.group(1) if failed else f'(pytest exit {run.returncode})'}")
            print(lines[-1], flush=True)
    lines.append(f"{module}: {len(ids)} survivors re-run against {' '.join(tests)}: {killed} killed, {len(ids) - killed} still survive")
    recheck.write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
