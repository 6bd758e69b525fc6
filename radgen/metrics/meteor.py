"""METEOR 1.5 through the official Java jar shipped with pycocoevalcap (the number papers report).

Why not pycocoevalcap's wrapper: it keeps one interactive JVM per object, reads replies line by line
without a timeout (a bad line blocks forever) and cannot score bootstrap resamples. Here the jar runs
in batch mode twice: once with one ``SCORE`` line per distinct (hypothesis, references) pair (giving
METEOR's sufficient statistics per study), once with ``EVAL`` lines: all studies together (per-study scores + the corpus score, exactly
what pycocoevalcap returns) and, for confidence intervals, one line per bootstrap resample with the
summed statistics (the jar aggregates a corpus by summing statistics, so this is exact).

Never substitute NLTK's METEOR: it is a different metric that scores far higher. Without Java the
metric is unavailable and `MeteorUnavailable` says so; the evaluator skips it with a protocol note.
"""

from __future__ import annotations

import contextlib
import importlib.util
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radgen.errors import RadgenError

METEOR_NAME = "METEOR 1.5 (pycocoevalcap meteor-1.5.jar, -l en -norm)"


class MeteorUnavailable(RadgenError):
    """Java or the METEOR 1.5 jar is missing."""


def find_jar() -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MeteorUnavailable("METEOR 1.5 needs the pycocoevalcap package (its meteor-1.5.jar); pip install pycocoevalcap")
    jar = Path(next(iter(spec.submodule_search_locations))) / "meteor" / "meteor-1.5.jar"
    if not jar.is_file():
        raise MeteorUnavailable(f"{jar}: METEOR 1.5 jar missing; reinstall pycocoevalcap")
    return jar


def java_available() -> bool:
    return shutil.which("java") is not None


def _clean(text: str) -> str:
    # The jar's line protocol: "|||" separates fields and a newline ends the request.
    return " ".join(text.replace("|||", " ").split())


class _Jar:
    """One METEOR 1.5 JVM in -stdio mode (starting it and loading paraphrase tables costs seconds).

    A writer thread feeds requests while this thread reads replies, so large batches cannot deadlock
    on full pipes; every reply has a deadline, so a stuck jar raises instead of hanging.
    """

    def __init__(self, timeout: float = 600.0):
        if not java_available():
            raise MeteorUnavailable("METEOR 1.5 needs Java (the `java` command was not found); install a JRE or drop 'meteor' from --metrics")
        jar = find_jar()
        self.timeout = timeout
        # Serial GC and the C1 compiler only keep the JVM on one core (12 CPU-s for 3,858 IU pairs
        # instead of 15 CPU-s spread over two): `evaluate` runs the jar beside the text encoder, which
        # wants the other core. Same scores; alone it takes ~2 s longer (docs/benchmarks.md, Metrics).
        self.process = subprocess.Popen(
            ["java", "-Xmx2G", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=jar.parent, bufsize=1,
        )
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.replies.put(line.strip())
        self.replies.put(None)  # EOF: the jar died

    def ask(self, lines: list[str], replies_per_line: int = 1) -> list[str]:
        assert self.process.stdin is not None

        def write() -> None:
            try:
                for line in lines:
                    self.process.stdin.write(line + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

        threading.Thread(target=write, daemon=True).start()
        out = []
        for _ in range(len(lines) * replies_per_line):
            try:
                reply = self.replies.get(timeout=self.timeout)
            except queue.Empty:
                raise MeteorUnavailable(f"METEOR 1.5 jar did not answer within {self.timeout:.0f} s; check the Java installation") from None
            if reply is None:
                raise MeteorUnavailable(f"METEOR 1.5 jar exited with code {self.process.poll()}; check the Java installation")
            out.append(reply)
        return out

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "_Jar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def aggregatable(stats: np.ndarray) -> np.ndarray:
    """Per-study statistics whose column sums are what the jar aggregates.

    METEOR 1.5's MeteorStats.addStats sums every field except `chunks` of a perfect match (all words
    matched in one chunk), which it leaves out; zero those so that plain sums reproduce the jar.
    """
    stats = np.array(stats, dtype=np.float64, copy=True)
    test_matches = stats[:, 4:20:4].sum(1) + stats[:, 6:20:4].sum(1)
    ref_matches = stats[:, 5:20:4].sum(1) + stats[:, 7:20:4].sum(1)
    perfect = (test_matches == stats[:, 0]) & (ref_matches == stats[:, 1]) & (stats[:, 20] == 1.0)
    stats[perfect, 20] = 0.0
    return stats


@dataclass
class MeteorScores:
    corpus: float
    per_study: np.ndarray  # (N,)
    stats: np.ndarray  # (N, 23) the jar's statistics via `aggregatable`: column sums aggregate a corpus


class MeteorScorer:
    """A METEOR 1.5 session: score corpora and bootstrap resamples on one JVM.

    >>> with MeteorScorer() as meteor:
    ...     scores = meteor.score(hypotheses, references)
    ...     resampled = meteor.corpus_from_summed(weights @ scores.stats)
    """

    def __init__(self, timeout: float = 600.0):
        self._jar = _Jar(timeout)

    def score(self, hypotheses: list[str], references: list) -> MeteorScores:
        """METEOR 1.5 per study and for the corpus; `references` holds a string or a list per study."""
        ref_lists = [[r] if isinstance(r, str) else list(r) for r in references]
        score_lines = ["SCORE ||| " + " ||| ".join(_clean(r) for r in refs) + " ||| " + _clean(h) for h, refs in zip(hypotheses, ref_lists)]
        # SCORE (the alignment: nearly all of the jar's time) once per distinct pair; generated reports
        # and normal references repeat, so corpora have many. EVAL still gets every study's statistics.
        distinct = list(dict.fromkeys(score_lines))
        stats_of = dict(zip(distinct, self._jar.ask(distinct)))
        stat_lines = [stats_of[line] for line in score_lines]
        eval_out = self._jar.ask(["EVAL ||| " + " ||| ".join(stat_lines)], replies_per_line=len(stat_lines) + 1)
        stats = aggregatable(np.array([[float(x) for x in line.split()] for line in stat_lines]))
        return MeteorScores(corpus=float(eval_out[-1]), per_study=np.array([float(x) for x in eval_out[:-1]]), stats=stats)

    def corpus_from_summed(self, summed: np.ndarray) -> np.ndarray:
        """Corpus METEOR of each row of summed `aggregatable` statistics (B, 23), e.g. bootstrap resamples."""
        lines = ["EVAL ||| " + " ".join(repr(float(x)) for x in row) for row in np.atleast_2d(summed)]
        out = self._jar.ask(lines, replies_per_line=2)  # each EVAL answers the segment score, then the total
        return np.array([float(x) for x in out[1::2]])

    def close(self) -> None:
        self._jar.close()

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def meteor_scores(hypotheses: list[str], references: list, timeout: float = 600.0) -> MeteorScores:
    """One-shot METEOR 1.5 (starts and stops a JVM)."""
    with MeteorScorer(timeout) as meteor:
        return meteor.score(hypotheses, references)
