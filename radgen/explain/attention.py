"""Where a generated report looks: token → image-region maps and the share of attention on the image.

Given an image and a report (generated, or any text), one teacher-forced forward pass with
attention maps reproduces the attention the decoder paid while emitting each token: the row of
the position *before* a token is the query that predicted it. From there, per recipe:

- ``decoder_attention`` (LLaVA `mlp` projector): visual tokens are the encoder's patch tokens, so
  the decoder's attention over them (mean over heads and layers) is already a map on the grid.
- ``cross_attention`` (BLIP `bert_lm`): the decoder's cross-attentions over the encoder's patch
  tokens, mean over heads and layers.
- ``composed_attention`` (`mapping_layer`, `qformer`): visual tokens are learned queries, not
  places. Decoder attention over the queries (T × Q) is multiplied by the connector's own
  cross-attention of each query over the encoder grid (Q × N, mean over heads and its layers),
  which each connector reports itself (`Connector.feature_attention`: forward hooks on the mapping
  layer's `nn.MultiheadAttention`, the Q-Former's `cross_attentions`).
- ``grad_x_input`` (fallback, e.g. the ClipCap `prefix_mapper`, whose single pooled embedding
  carries no position, and any connector without `feature_attention`): gradient × input on the encoder's feature map for the log-probability of
  the sentence's tokens (Grad-CAM style, ReLU of the channel sum per location).

Every output names the method used. Maps are (h, w) arrays over the encoder's square patch grid;
`overlay` paints one over the radiograph the model saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Explanation:
    """Per-token maps of one report over one image."""

    method: str
    grid: tuple[int, int]
    token_maps: np.ndarray | None  # (T, h, w) for attention methods; None for grad_x_input
    sentence_maps: list[np.ndarray]  # one (h, w) per sentence
    visual_share: list[float] | None  # per decoder layer: mean attention mass on visual tokens (causal decoders)
    visual_share_after_first: list[float] | None = None  # the same without sequence position 0 (the attention sink)
    notes: list[str] = field(default_factory=list)


# -- geometry -----------------------------------------------------------------------------------------

def encoder_grid(num_tokens: int) -> tuple[int, int] | None:
    """(offset, side): patch tokens start at `offset` (1 when a CLS token leads) and form side × side."""
    for offset in (0, 1):
        side = math.isqrt(num_tokens - offset) if num_tokens > offset else 0
        if side > 1 and side * side == num_tokens - offset:
            return offset, side
    return None


# -- teacher forcing --------------------------------------------------------------------------------

def teacher_forced_batch(model: Any, token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[prefix][report tokens][eos] right-padded, for a forward pass over given (generated) token ids."""
    prefix = list(model.prefix_ids())
    eos = model.eos_id()
    rows = [prefix + list(ids) + [eos] for ids in token_ids]
    length = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else eos
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return input_ids, mask


def report_query_rows(model: Any, num_tokens: int) -> list[int]:
    """Sequence positions whose outputs predicted report tokens 0..num_tokens-1."""
    start = model.num_prefix_tokens  # first report position (visual + soft prompt + prefix for causal decoders)
    return [start - 1 + i for i in range(num_tokens)]


# -- connector attention over the encoder grid ------------------------------------------------------

def connector_attention(model: Any, features: torch.Tensor) -> torch.Tensor | None:
    """(B, Q, N) map from visual tokens to encoder tokens, or None when the connector has no spatial link.

    Each connector computes its own (`Connector.feature_attention`, radgen/models/connectors.py), so
    a new connector kind brings its map with it and explain needs no change.
    """
    return model.connector.feature_attention(features)


# -- decoder attention ------------------------------------------------------------------------------

def decoder_maps(model: Any, features: torch.Tensor, token_ids: list[list[int]]
                 ) -> tuple[list[torch.Tensor], list[list[float]] | None, list[list[float]] | None]:
    """Per report: (T, Q) attention of each token's query over the visual tokens (mean over heads and
    layers), and per layer the mean share of attention mass on the visual tokens (causal only), also
    without position 0: LLMs park much of their attention on the first position whatever it holds
    (the "attention sink", Xiao et al. 2023), and there the first position is a visual token."""
    input_ids, mask = teacher_forced_batch(model, token_ids)
    with torch.no_grad():
        out = model(input_ids, mask, image_features=features, output_attentions=True)
    n_visual = out.num_visual_tokens
    maps, shares, after_first = [], [], []
    for b, ids in enumerate(token_ids):
        rows = report_query_rows(model, len(ids))
        if model.is_causal:
            layers = torch.stack([a[b].float().mean(0) for a in out.attentions])  # (layers, L, L)
            selected = layers[:, rows, :]  # (layers, T, L)
            maps.append(selected[:, :, :n_visual].mean(0))
            shares.append(selected[:, :, :n_visual].sum(-1).mean(-1).tolist() if rows else [0.0] * len(layers))
            after_first.append(selected[:, :, 1:n_visual].sum(-1).mean(-1).tolist() if rows else [0.0] * len(layers))
        else:
            layers = torch.stack([a[b].float().mean(0) for a in out.cross_attentions])  # (layers, text, N)
            maps.append(layers[:, rows, :].mean(0))
    return maps, (shares if model.is_causal else None), (after_first if model.is_causal else None)


def _sentence_grad_x_input(model: Any, features: torch.Tensor, ids: list[int], spans: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Gradient × input on the encoder features for each sentence's summed token log-probability."""
    input_ids, mask = teacher_forced_batch(model, [ids])
    rows = report_query_rows(model, len(ids))
    targets = torch.tensor(ids, dtype=torch.long)
    saliency = []
    for start, end in spans:
        feats = features.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(input_ids, mask, image_features=feats)
            logprobs = out.logits[0, rows].float().log_softmax(-1)
            score = logprobs[torch.arange(start, end), targets[start:end].to(logprobs.device)].sum()
            (grad,) = torch.autograd.grad(score, feats)
        saliency.append((grad * feats.detach()).sum(-1)[0].clamp(min=0).float())  # (N,)
    return saliency


def _to_grid(values: torch.Tensor, offset: int, side: int) -> np.ndarray:
    return values[..., offset: offset + side * side].reshape(*values.shape[:-1], side, side).cpu().numpy()


def explain(model: Any, pixel_values: torch.Tensor, token_ids: list[list[int]], spans: list[list[tuple[int, int]]],
            force_gradient: bool = False) -> list[Explanation]:
    """Explain a batch: pixel_values (B, C, H, W), generated token ids and sentence token spans per report."""
    model.eval()
    with torch.no_grad():
        features = model.encode_images(pixel_values)
    grid = encoder_grid(features.shape[1])
    notes = []
    if grid is None:
        raise ValueError(f"the encoder gives {features.shape[1]} token(s), not a square patch grid; "
                         "set model.encoder.output=tokens to explain this model")
    offset, side = grid
    with torch.no_grad():
        link = None if force_gradient else connector_attention(model, features)
    kind = model.recipe.model.connector.kind
    method = "grad_x_input" if link is None else ("cross_attention" if not model.is_causal else
                                                  "decoder_attention" if model.connector.tokens_are_features else "composed_attention")
    if link is None and not force_gradient:
        notes.append(f"connector '{kind}' has no attention over the image grid; used gradient x input on the encoder features")
    token_level, shares, after_first = decoder_maps(model, features, token_ids)
    results = []
    for b, ids in enumerate(token_ids):
        if link is not None:
            per_token = token_level[b] @ link[b].to(token_level[b].device)  # (T, N)
            token_maps = _to_grid(per_token, offset, side)
            sentence_maps = [token_maps[s:e].mean(0) if e > s else np.zeros((side, side)) for s, e in spans[b]]
        else:
            token_maps = None
            sentence_maps = [_to_grid(v, offset, side) for v in _sentence_grad_x_input(model, features[b: b + 1], ids, spans[b])]
        results.append(Explanation(method, (side, side), token_maps, sentence_maps, shares[b] if shares else None,
                                   visual_share_after_first=after_first[b] if after_first else None, notes=list(notes)))
    return results


# -- drawing ----------------------------------------------------------------------------------------

def model_view_box(image_size: tuple[int, int], resize: str) -> tuple[int, int, int, int]:
    """The region (x0, y0, x1, y1) of the source image that the model's square input covers."""
    w, h = image_size
    if resize == "shortest_edge_crop":
        side = min(w, h)
        x0, y0 = (w - side) // 2, (h - side) // 2
        return x0, y0, x0 + side, y0 + side
    if resize == "pad":  # the square reaches past the image on its shorter sides (the mean-colour fill)
        side = max(w, h)
        x0, y0 = -((side - w) // 2), -((side - h) // 2)
        return x0, y0, x0 + side, y0 + side
    return 0, 0, w, h  # "squash": the whole image is resized to the square


def upsample(heat: np.ndarray, image_size: tuple[int, int], resize: str = "squash") -> np.ndarray:
    """An (h, w) map → a float array of the source image's size (bilinear), zero outside the model's view."""
    from PIL import Image

    x0, y0, x1, y1 = model_view_box(image_size, resize)
    region = np.asarray(Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F").resize((x1 - x0, y1 - y0), Image.BILINEAR))
    full = np.zeros((image_size[1], image_size[0]), dtype=np.float32)
    # only the part of the model's square that lies on the image ("pad" squares reach past it)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, image_size[0]), min(y1, image_size[1])
    full[iy0:iy1, ix0:ix1] = region[iy0 - y0: iy1 - y0, ix0 - x0: ix1 - x0]
    return full


def peak(heat_full: np.ndarray) -> tuple[int, int]:
    """(x, y) pixel of the map's maximum (first one in row-major order on ties)."""
    y, x = np.unravel_index(int(np.argmax(heat_full)), heat_full.shape)
    return int(x), int(y)


def overlay(image: Any, heat_full: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> Any:
    """RGB PIL image: the radiograph with the min-max normalised heatmap blended on top (same size)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from PIL import Image

    low, high = float(heat_full.min()), float(heat_full.max())
    norm = (heat_full - low) / (high - low) if high > low else np.zeros_like(heat_full)
    colors = (colormaps[colormap](norm)[..., :3] * 255).astype(np.uint8)
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    weight = alpha * norm[..., None]  # low attention leaves the radiograph visible
    blended = base * (1 - weight) + colors.astype(np.float32) * weight
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8), mode="RGB")
