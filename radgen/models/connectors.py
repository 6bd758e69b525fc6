"""Connectors: encoder features (B, N, D) → visual tokens for the decoder (B, T, H).

- `QFormerConnector` (BLIP-2, seed 000): learned queries cross-attend to the ViT features through
  transformers' `Blip2QFormerModel`; a linear layer maps them to the LM width.
- `MLPProjector` (LLaVA-1.5, seed 002): Linear → GELU → Linear on every patch token.
- `MappingLayer` (seed 003): one transformer decoder layer; learned soft-prompt queries attend to
  the projected CNN features.
- `PrefixMapper` (ClipCap's transformer mapper, seed 004): one image embedding → `clip_length`
  tokens, concatenated with learned prefix constants, run through a transformer; the outputs at
  the prefix positions are the visual tokens.
- `CrossAttentionBridge` (BLIP, seed 001): the decoder attends to the encoder tokens itself
  (encoder_hidden_states), so the connector passes them through (projecting only if widths differ).

Each kind is registered with `@register_connector("<kind>")` on its builder, and `build_connector`
looks `model.connector.kind` up in `CONNECTORS` (radgen/models/kinds.py). A new kind is one file:
a `Connector` subclass plus a registered builder (docs/recipes.md, "Adding a connector").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from radgen.config import ConnectorConfig
from radgen.errors import ConfigError
from radgen.models import registry
from radgen.models.kinds import KindRegistry
from radgen.models.sources import SourceCache, config_dict, is_local_dir


class ConnectorWidths(NamedTuple):
    """The widths a connector joins, known only once the encoder and decoder are built."""

    encoder: int  # D of the encoder features (B, N, D)
    decoder: int  # the decoder's input-embedding width: what prepended visual tokens must have
    cross: int | None  # the decoder's cross-attention width over encoder states (bert_lm), else None


class Connector(nn.Module):
    """Base class. `cross_attention` connectors feed the decoder's cross-attention, not its input."""

    cross_attention = False
    # True when visual token i is encoder token i (projected): the decoder's attention over the
    # visual tokens is then already a map on the image grid (radgen.explain's decoder_attention).
    tokens_are_features = False

    def num_tokens(self, encoder_tokens: int) -> int:
        raise NotImplementedError

    def match_output_scale(self, embedding_rms: float) -> None:
        """Called once at build with the decoder's token-embedding RMS; connectors that normalize their output start there."""

    def feature_attention(self, features: torch.Tensor) -> torch.Tensor | None:
        """(B, T, N): how much each visual token draws on each encoder token, for `radgen explain`.

        None (the default for connectors that are not `tokens_are_features`) means no spatial link:
        explanations then fall back to gradient x input on the encoder features.
        """
        if not self.tokens_are_features:
            return None
        eye = torch.eye(features.shape[1], device=features.device)
        return eye.unsqueeze(0).expand(features.shape[0], -1, -1)


@contextlib.contextmanager
def _eager_attention(module: nn.Module) -> Iterator[None]:
    """transformers' sdpa/flash attention returns no weights; switch `module` to eager for one call."""
    config = getattr(module, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(module, "set_attn_implementation")
    if switch:
        module.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            module.set_attn_implementation(previous)


ConnectorBuilder = Callable[[ConnectorConfig, ConnectorWidths, SourceCache], Connector]
CONNECTORS: KindRegistry[ConnectorBuilder] = KindRegistry("model.connector.kind")
register_connector = CONNECTORS.register  # @register_connector("kind") on a ConnectorBuilder


class QFormerConnector(Connector):
    def __init__(self, qformer: nn.Module, query_tokens: nn.Parameter, projection: nn.Linear):
        super().__init__()
        self.qformer = qformer
        self.query_tokens = query_tokens  # (1, num_queries, qformer_hidden), BLIP-2's name
        self.language_projection = projection

    def num_tokens(self, encoder_tokens: int) -> int:
        return self.query_tokens.shape[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dtype = self.query_tokens.dtype
        features = features.to(dtype)
        queries = self.query_tokens.expand(features.shape[0], -1, -1)
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=features, encoder_attention_mask=mask, return_dict=True)
        return self.language_projection(out.last_hidden_state.to(self.language_projection.weight.dtype))

    def feature_attention(self, features: torch.Tensor) -> torch.Tensor:
        """The Q-Former's query -> encoder-token cross-attentions, mean over heads and layers."""
        queries = self.query_tokens.expand(features.shape[0], -1, -1)
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        with _eager_attention(self.qformer):
            out = self.qformer(query_embeds=queries, encoder_hidden_states=features.to(queries.dtype), encoder_attention_mask=mask,
                               output_attentions=True, return_dict=True)
        maps = [a.float().mean(1) for a in (out.cross_attentions or ()) if a is not None]  # each (B, Q, N)
        if not maps:
            raise RuntimeError("the Q-Former returned no cross-attentions")
        return torch.stack(maps).mean(0)


@register_connector("qformer")
def build_qformer(cfg: ConnectorConfig, widths: ConnectorWidths, sources: SourceCache) -> QFormerConnector:
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    if cfg.name and cfg.pretrained and not sources.meta:
        composite = sources.load("Blip2ForConditionalGeneration", cfg.name)
        return QFormerConnector(composite.qformer, composite.query_tokens, composite.language_projection)
    known = registry.known_architecture(registry.QFORMER_ARCHITECTURES, cfg.name) if cfg.name else None
    if known is not None and not is_local_dir(cfg.name):
        fields = known["config"]
    elif cfg.name:
        data = config_dict(cfg.name, what="connector.name")
        fields = data.get("qformer_config") or data  # a BLIP-2 checkpoint or a saved Q-Former config
    else:
        fields = {}
    fields = {k: v for k, v in {**fields, **cfg.config}.items() if k not in ("model_type", "transformers_version", "architectures")}
    fields["encoder_hidden_size"] = widths.encoder
    config = Blip2QFormerConfig(**fields)
    qformer = Blip2QFormerModel(config)
    query_tokens = nn.Parameter(torch.zeros(1, cfg.num_tokens, config.hidden_size))
    nn.init.normal_(query_tokens, std=config.initializer_range)  # BLIP-2's init
    return QFormerConnector(qformer, query_tokens, nn.Linear(config.hidden_size, widths.decoder))


class MLPProjector(Connector):
    """LLaVA-1.5's `mlp2x_gelu` projector."""

    tokens_are_features = True

    def __init__(self, in_width: int, out_width: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or out_width
        self.proj = nn.Sequential(nn.Linear(in_width, hidden), nn.GELU(), nn.Linear(hidden, out_width))

    def num_tokens(self, encoder_tokens: int) -> int:
        return encoder_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features.to(self.proj[0].weight.dtype))


@register_connector("mlp")
def build_mlp(cfg: ConnectorConfig, widths: ConnectorWidths, sources: SourceCache) -> MLPProjector:
    return MLPProjector(widths.encoder, widths.decoder, cfg.hidden_size)


class MappingLayer(Connector):
    """One transformer decoder layer: `num_tokens` learned queries attend to the projected features.

    Two additions to seed 003's layer (the first opt-in, the second always), measured on radgen-small (docs/benchmarks.md, shipped
    model): without them, 3 epochs on IU-Phantom gave a model whose val loss with the images of
    other studies was the same as with its own (1.769 vs 1.768), i.e. it ignored the image.
    * `standardize_features`: CNN features after ReLU6 share a large positive common part that
      swamps the between-image spread, so every image produced almost the same visual tokens. A BatchNorm without affine (running per-channel mean
      and variance) removes that part, as the standardization in a linear probe does.
    * `match_output_scale`: the final LayerNorm's gain starts at the decoder's token-embedding RMS,
      so visual tokens begin with the norm of text embeddings (SmolLM2: ~3.2) instead of sqrt(width) (24).
    """

    def __init__(self, in_width: int, out_width: int, num_tokens: int, num_heads: int, mlp_ratio: float, dropout: float, num_layers: int = 1,
                 standardize_features: bool = False):
        super().__init__()
        if out_width % num_heads:
            raise ConfigError(f"model.connector.num_heads={num_heads} must divide the decoder width {out_width}")
        self.feature_norm = nn.BatchNorm1d(in_width, affine=False) if standardize_features else None
        self.input_projection = nn.Linear(in_width, out_width)
        self.queries = nn.Parameter(torch.randn(num_tokens, out_width) * 0.02)
        layer = nn.TransformerDecoderLayer(out_width, num_heads, int(out_width * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(out_width)

    def num_tokens(self, encoder_tokens: int) -> int:
        return self.queries.shape[0]

    def match_output_scale(self, embedding_rms: float) -> None:
        with torch.no_grad():
            self.norm.weight.fill_(embedding_rms)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.to(self.queries.dtype)
        if self.feature_norm is not None:
            features = self.feature_norm(features.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants (B, C, N)
        memory = self.input_projection(features)
        queries = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        return self.norm(self.layers(queries, memory))

    def feature_attention(self, features: torch.Tensor) -> torch.Tensor:
        """The queries' cross-attention over the encoder tokens, mean over heads and layers.

        nn.TransformerDecoderLayer calls its `multihead_attn` with need_weights=False; a pre-hook turns
        the weights on (averaged over heads) and a forward hook keeps them.
        """
        captured: list[torch.Tensor] = []

        def pre(module, args, kwargs):
            kwargs["need_weights"] = True
            kwargs["average_attn_weights"] = True
            return args, kwargs

        def post(module, args, kwargs, output):
            captured.append(output[1].detach())

        handles = []
        for layer in self.layers.layers:
            handles.append(layer.multihead_attn.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(layer.multihead_attn.register_forward_hook(post, with_kwargs=True))
        try:
            self(features)
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack(captured).mean(0).float()


@register_connector("mapping_layer")
def build_mapping_layer(cfg: ConnectorConfig, widths: ConnectorWidths, sources: SourceCache) -> MappingLayer:
    return MappingLayer(widths.encoder, widths.decoder, cfg.num_tokens, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, cfg.num_layers,
                        cfg.standardize_features)


class PrefixMapper(Connector):
    """ClipCap's TransformerMapper (Mokady et al. 2021), as used by seed 004.

    A pooled image embedding (B, 1, D) → Linear → `clip_length` tokens; learned `prefix_length`
    constants are appended; a pre-norm transformer runs over both; the prefix positions are output.
    """

    def __init__(self, in_width: int, out_width: int, clip_length: int, prefix_length: int, num_layers: int,
                 num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.clip_length = clip_length
        self.linear = nn.Linear(in_width, clip_length * out_width)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, out_width))
        layer = nn.TransformerEncoderLayer(out_width, num_heads, int(out_width * mlp_ratio), dropout, activation="relu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def num_tokens(self, encoder_tokens: int) -> int:
        return self.prefix_const.shape[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != 1:
            features = features.mean(dim=1, keepdim=True)  # the mapper takes one embedding per image
        batch = features.shape[0]
        clip_tokens = self.linear(features[:, 0].to(self.prefix_const.dtype)).view(batch, self.clip_length, -1)
        prefix = self.prefix_const.unsqueeze(0).expand(batch, -1, -1)
        out = self.transformer(torch.cat([clip_tokens, prefix], dim=1))
        return out[:, self.clip_length:]


@register_connector("prefix_mapper")
def build_prefix_mapper(cfg: ConnectorConfig, widths: ConnectorWidths, sources: SourceCache) -> PrefixMapper:
    return PrefixMapper(widths.encoder, widths.decoder, cfg.num_tokens, cfg.prefix_length, cfg.num_layers,
                        cfg.num_heads, cfg.mlp_ratio, cfg.dropout)


class CrossAttentionBridge(Connector):
    cross_attention = True
    tokens_are_features = True

    def __init__(self, in_width: int, out_width: int):
        super().__init__()
        self.projection = nn.Linear(in_width, out_width) if in_width != out_width else None

    def num_tokens(self, encoder_tokens: int) -> int:
        return encoder_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features) if self.projection is not None else features


@register_connector("cross_attention")
def build_cross_attention(cfg: ConnectorConfig, widths: ConnectorWidths, sources: SourceCache) -> CrossAttentionBridge:
    if widths.cross is None:
        raise ConfigError("model.connector.kind=cross_attention needs a decoder with cross-attention (decoder.kind=bert_lm)")
    return CrossAttentionBridge(widths.encoder, widths.cross)


def build_connector(cfg: ConnectorConfig, encoder_width: int, decoder_width: int, cross_width: int | None, sources: SourceCache) -> Connector:
    """The connector of kind `cfg.kind` (a ConfigError listing the registered kinds when there is none)."""
    return CONNECTORS.get(cfg.kind)(cfg, ConnectorWidths(encoder_width, decoder_width, cross_width), sources)
