"""Report metrics: n-gram (BLEU, ROUGE-L, CIDEr-D, METEOR 1.5), semantic (BERTScore, embedding cosine),
clinical efficacy (CheXpert labels; CheXbert / RadGraph from local weights) and bootstrap statistics.

`radgen.metrics.evaluate(preds, refs, section="findings", metrics=None, ...)` is the one entry point for
prediction files and Study records; `radgen.metrics.score(hyps=[...], refs=[...])` runs it on plain strings.
torch is imported only when semantic or CheXbert metrics run.
"""

# Importing the submodule first and then the function makes `radgen.metrics.evaluate` the function
# (the import system binds the submodule to the package attribute only on its first import).
from radgen.metrics.evaluate import evaluate  # noqa: E402
from radgen.metrics.score import score  # noqa: E402

__all__ = ["evaluate", "score"]
