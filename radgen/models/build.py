"""`build_parts(recipe)`: the one place a recipe becomes modules.

The recipe's `model:` section (encoder, connector, decoder, peft, findings) becomes the image
encoder, the connector, the text decoder with its LoRA / prefix adapters, the soft prompt, the
finding head, the tokenizer and the image transform. `radgen.models.build_model(recipe)`
(radgen.models.generator) puts them into a ReportGenerator and applies the first stage's `train`
patterns. This module imports no model class: the generator, its persistence and the builder
compose from here without an import cycle.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import torch

from radgen.config import RecipeConfig, check_image_mode, check_stitch_resize
from radgen.errors import WeightsError
from radgen.models.connectors import build_connector
from radgen.models.decoders import build_decoder, cross_attention_width, input_width, load_options, load_tokenizer
from radgen.models.encoders import build_encoder
from radgen.models.findings import FindingHead, build_finding_head
from radgen.models.peft import SoftPrompt, apply_peft
from radgen.models.sources import SourceCache


def prepared_image_size(encoder_size: int, head_image_size: int | None) -> int:
    """The size images are prepared at: the larger of the encoder's and a finding head's own
    (model.findings.image_size); each pass resizes from there (ReportGenerator.encode_images, head_input)."""
    return max(encoder_size, head_image_size or 0)


def image_transform_for(encoder, head_image_size: int | None = None) -> object:
    from radgen.data.images import ImageTransform

    size = prepared_image_size(encoder.image_size, head_image_size)
    return ImageTransform(size, encoder.mean, encoder.std, channels=3, resize=encoder.resize)


class ModelParts(NamedTuple):
    """A ReportGenerator's constructor arguments after the recipe (in its order)."""

    encoder: Any
    connector: Any
    decoder: Any
    tokenizer: Any
    image_transform: Any
    prompt: SoftPrompt | None
    findings: FindingHead | None


def build_parts(recipe: RecipeConfig, meta: bool = False) -> ModelParts:
    """Build encoder → connector → decoder (+ peft), soft prompt and finding head for `recipe`.

    meta=True builds shapes only on the meta device from architecture configs (no weights, no
    network, seconds even for 7B models).
    """
    check_image_mode(recipe, f"recipe '{recipe.name}'")  # also for recipes not read by load_recipe (saved models, Python)
    spec = recipe.model
    sources = SourceCache(meta=meta)
    builtin = (spec.decoder.tokenizer or "").startswith("builtin:")
    tokenizer = load_tokenizer(spec.decoder) if (not meta or builtin) else None
    if spec.decoder.pretrained and not meta:
        # components from the decoder's own checkpoint (BLIP-2) load with the decoder's dtype/8-bit
        shared = {spec.encoder.name if spec.encoder.pretrained else None, spec.connector.name if spec.connector.pretrained else None}
        if spec.decoder.name in shared:
            sources.shared_options[spec.decoder.name] = load_options(spec.decoder, sources)
    device = torch.device("meta") if meta else contextlib.nullcontext()
    with device:
        encoder = build_encoder(spec.encoder, sources)
        decoder = build_decoder(spec.decoder, tokenizer, sources)
        connector = build_connector(spec.connector, encoder.hidden_size, input_width(decoder), cross_attention_width(decoder), sources)
        if not meta:
            embeddings = decoder.get_input_embeddings().weight.detach()  # norm in fp32 without an fp32 copy (OPT-2.7B: 128M values)
            connector.match_output_scale(float(torch.linalg.vector_norm(embeddings, dtype=torch.float32)) / embeddings.numel() ** 0.5)
        decoder = apply_peft(decoder, spec.peft, causal=spec.decoder.kind == "causal_lm")
        prompt = SoftPrompt(spec.peft.num_virtual_tokens, input_width(decoder)) if spec.peft.method == "prompt" else None
        findings = build_finding_head(spec.findings, encoder.hidden_size, encoder)
    check_stitch_resize(recipe, encoder.resize)
    if tokenizer is not None and len(tokenizer) > decoder.get_input_embeddings().num_embeddings:
        raise WeightsError(f"decoder '{spec.decoder.name}' has {decoder.get_input_embeddings().num_embeddings} token embeddings "
                           f"but its tokenizer '{spec.decoder.tokenizer or spec.decoder.name}' has {len(tokenizer)} tokens; "
                           "use the decoder's own tokenizer (unset model.decoder.tokenizer)")
    head_size = spec.findings.image_size if findings is not None else None
    return ModelParts(encoder, connector, decoder, tokenizer, image_transform_for(encoder, head_size), prompt, findings)
