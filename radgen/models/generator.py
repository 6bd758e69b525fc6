"""`ReportGenerator`: image encoder → connector → text decoder, built from a recipe.

Sequence layout for causal decoders (what `forward` and `generate` feed as `inputs_embeds`):

    [visual tokens (num_visual_tokens)] [soft prompt] [bos] [prompt text] [report ...] [eos] [pad ...]

Labels are -100 everywhere except on the report and its eos, so the loss is the report's NLL.
BLIP-style decoders (`bert_lm`) instead read the visual tokens through cross-attention
(`encoder_hidden_states`) and the text sequence is [bos] [prompt] [report] [eos].

Explain code finds the visual positions at `[0, num_visual_tokens)` of the self-attention maps
(causal) or in `cross_attentions` (BLIP); `num_prefix_tokens` is where the text begins.

Decoding (`generate`: prompts, drafted or HF decoding, findings edits) is
`radgen.models.report_decoding`'s mixin; this module builds the model, runs its forward and sets
what trains.
"""

from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from radgen.config import RecipeConfig
from radgen.data.text import clean_context
from radgen.errors import ConfigError
from radgen.models.build import build_parts, prepared_image_size
from radgen.models.fast import base_model, label_position_loss, supports_label_position_loss
from radgen.models.findings import FindingHead, verbalize
from radgen.models.lexicon import KNOWN_WORDS_LOCK, Lexicon, TokenLexicon
from radgen.models.memory import ReportMemory
from radgen.models.peft import SoftPrompt, merge_lora
from radgen.models.persist import load_pretrained, save_pretrained
from radgen.models.report_decoding import GeneratedReport, ReportDecoding
from radgen.models.shortlist import Shortlist
from radgen.models.speculative import NgramDraft

__all__ = ["COMPONENTS", "GeneratedReport", "ReportGenerator", "ReportOutput", "build_model"]


@dataclass
class ReportOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    attentions: tuple | None = None  # self-attention per layer (B, heads, L, L); visual tokens first
    cross_attentions: tuple | None = None  # bert_lm only: (B, heads, text, visual)
    num_visual_tokens: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


COMPONENTS = ("encoder", "connector", "findings", "prompt", "decoder")


class ReportGenerator(ReportDecoding, nn.Module):
    """See the module docstring. Build with `radgen.models.build_model(recipe)`; `generate` and its
    helpers are `radgen.models.report_decoding.ReportDecoding`'s."""

    def __init__(self, recipe: RecipeConfig, encoder: nn.Module, connector: nn.Module, decoder: nn.Module,
                 tokenizer: Any, image_transform: Any, prompt: SoftPrompt | None = None, findings: FindingHead | None = None):
        super().__init__()
        self.recipe = recipe
        self.encoder = encoder
        self.connector = connector
        if findings is not None:
            self.findings = findings
        if prompt is not None:
            self.prompt = prompt
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.is_causal = recipe.model.decoder.kind == "causal_lm"
        self.touched: set[str] = set()  # parameters ever made trainable (saved with base_weights=False)
        self.merged = False
        self.report_draft = NgramDraft()  # greedy decoding's draft table (radgen.models.speculative)
        # the tokens its reports use: drafted picks read only their head rows (radgen.models.shortlist);
        # None: over the whole head (benchmarks/drafted_decoding.py's radgen-drafted-whole-head)
        self.shortlist: Shortlist | None = Shortlist()
        self._shortlisted_memory: ReportMemory | None = None  # the report memory whose tokens the shortlist holds
        self.report_memory: ReportMemory | None = None  # retrieval-guided decoding's reports (radgen.models.memory)
        self._warned_no_memory = False
        self._known_words: tuple[ReportMemory, TokenLexicon] | None = None  # (the memory it was read from, the rule)

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def num_visual_tokens(self) -> int:
        return int(self.connector.num_tokens(self.encoder.num_tokens()))

    @property
    def num_soft_prompt_tokens(self) -> int:
        return int(self.prompt.soft_prompt.shape[0]) if hasattr(self, "prompt") else 0

    @property
    def num_prefix_tokens(self) -> int:
        """Positions before the report in the causal sequence (visual + soft prompt + bos + prompt);
        for a grounded model, with the prompt of a study without findings (see `prefix_ids`)."""
        return (self.num_visual_tokens + self.num_soft_prompt_tokens if self.is_causal else 0) + len(self.prefix_ids())

    @property
    def grounded_prompt(self) -> bool:
        """True when the prompt carries the finding head's findings (model.findings.prompt)."""
        return hasattr(self, "findings") and self.recipe.model.findings.prompt

    # -- text ---------------------------------------------------------------------------------------
    def prompt_text(self, findings: list[str] | None = None, context: str | None = None) -> str:
        """The text between bos and the report: the decoder prompt, led by the verbalised findings
        on a grounded model (`findings` None there means none found), and before them the study's
        clinical context when the recipe reads one (model.context) and the study has it.

        Why the indication: IU and MIMIC reports follow their author's template, and the indication
        ("chest pain", "pre-op", "pacemaker check") says much about which one; an image-free baseline
        that copies the training report with the nearest indication beat the image-only generator on
        BLEU and CIDEr (docs/benchmarks.md, "Grounding"). The context is cleaned and cut to
        model.context.max_words (radgen.data.text.clean_context); an empty one is left out, as in
        training (model.context.dropout), so studies without an indication stay in-distribution."""
        prompt = self.recipe.model.decoder.prompt
        parts = []
        spec = self.recipe.model.context
        if spec.section is not None:
            cleaned = clean_context(context, spec.max_words)
            if cleaned:
                parts.append(spec.template.format(context=cleaned))
        if self.grounded_prompt:
            parts.append(verbalize(findings or [], self.recipe.model.findings))
        if prompt:
            parts.append(prompt)
        return " ".join(parts)

    def prefix_ids(self, findings: list[str] | None = None, context: str | None = None) -> list[int]:
        """Token ids the report follows: [bos] (when the tokenizer has one) + the prompt text."""
        tok = self.tokenizer
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        prompt = self.prompt_text(findings, context)
        return bos + (tok(prompt, add_special_tokens=False)["input_ids"] if prompt else [])

    def eos_id(self) -> int:
        """The id that ends a report (eos, else sep for BERT-style decoders)."""
        tok = self.tokenizer
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if eos is None:
            raise ConfigError("the decoder's tokenizer has no eos/sep token; set decoder.tokenizer to one that has")
        return int(eos)

    def tokenize_reports(self, reports: list[str], max_tokens: int | None = None,
                         findings: list[list[str]] | None = None, contexts: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        """[bos][prompt][report][eos] right-padded; labels -100 on bos, prompt and padding.

        `findings` (grounded models): each report's findings for its prompt (training: the truth);
        `contexts`: each study's clinical context (model.context), "" or None for none."""
        tok = self.tokenizer
        shared = self.prefix_ids() if findings is None and contexts is None else None
        sep = " " if self.prompt_text() else ""
        eos = self.eos_id()
        rows = []
        for i, report in enumerate(reports):
            prefix = shared if shared is not None else self.prefix_ids(findings[i] if findings is not None else None,
                                                                       contexts[i] if contexts is not None else None)
            ids = tok(sep + report.strip(), add_special_tokens=False)["input_ids"]
            if max_tokens is not None:
                ids = ids[:max_tokens]
            rows.append((prefix + ids + [eos], len(prefix)))
        length = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for row, (ids, n_prefix) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, n_prefix: len(ids)] = torch.tensor(ids[n_prefix:])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def suppressed_tokens(self) -> list[int]:
        """Special tokens other than eos, which a report never contains: forced past its natural end
        (generate.min_new_tokens), an instruction-tuned decoder otherwise starts a new chat turn
        ("<|im_start|>user ...": 4 of 302 val reports of radgen-small under its retrieval guide)."""
        eos = self.eos_id()
        return sorted({int(i) for i in self.tokenizer.all_special_ids if i is not None and int(i) != eos})

    def _text_ids(self, report: str) -> list[int]:
        """A report's token ids as they follow the prompt in training (`tokenize_reports`), without eos."""
        return self._texts_ids([report])[0]

    def _texts_ids(self, reports: list[str]) -> list[list[int]]:
        """`_text_ids` of each report, in one tokenizer call."""
        sep = " " if self.prompt_text() else ""
        return self.tokenizer([sep + report.strip() for report in reports], add_special_tokens=False)["input_ids"]

    def _shortlist_memory(self) -> None:
        """Put the report memory's tokens on the shortlist, once per memory: they are the training
        reports' words, so the model's picks seldom leave the list."""
        memory = self.report_memory
        if memory is None or memory is self._shortlisted_memory or self.shortlist is None:
            return
        for ids in self._texts_ids(list(memory.reports)):
            self.shortlist.add(ids)
        self._shortlisted_memory = memory

    def known_words(self) -> TokenLexicon | None:
        """The known-words rule of this model's decoding (radgen.models.lexicon): the words of its report
        memory's reports, cleaned as the recipe trains; None without a report memory. Built once per memory."""
        memory = self.report_memory
        if memory is None:
            return None
        with KNOWN_WORDS_LOCK:  # decoding lanes ask from two threads at once: build it once
            cached = self._known_words
            if cached is None or cached[0] is not memory:
                words = Lexicon.from_texts(memory.cleaned(report) for report in memory.reports)
                rows = self.decoder.get_input_embeddings().num_embeddings
                cached = (memory, TokenLexicon(words, self.tokenizer, self.eos_id(), vocabulary=rows))
                self._known_words = cached
                if self.shortlist is not None:  # every token the rule allows is on the list: a pick the rule moved
                    self.shortlist.add(cached[1].possible)  # off the decoder's choice is never beaten off the list
        return cached[1]

    def add_draft_reports(self, reports: list[str]) -> int:
        """Seed greedy decoding's draft table with report texts (e.g. reports this model wrote on a
        validation split); returns the table's size. Changes speed only, never the text."""
        if reports:
            batch = self.tokenize_reports(reports)
            for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
                self.report_draft.add(ids[: sum(mask)])
        return len(self.report_draft)

    # -- vision -------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → encoder features (B, N, D): what a frozen-encoder feature cache stores.
        Images prepared at a finding head's larger size (model.findings.image_size) are resized to the
        encoder's first."""
        return self.encoder(_at_size(pixel_values.to(self._device()), self.encoder.image_size, self._prepared_size()))

    def image_features(self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None) -> torch.Tensor:
        if (pixel_values is None) == (image_features is None):
            raise ValueError("pass exactly one of pixel_values / image_features")
        return self.encode_images(pixel_values) if pixel_values is not None else image_features.to(self._device())

    def visual_tokens(self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.connector(self.image_features(pixel_values, image_features))

    def features_and_head_input(self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                                head_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder features for the connector, the finding head's input), from one encoder pass.

        The two are the same tensor unless the head has its own copy of the encoder's last blocks
        (model.findings.tune_encoder_blocks): then its input is the encoder's trunk map, taken from
        the same pass over `pixel_values`; with cached `image_features` the trunk maps must come as
        `head_features`."""
        blocks = self._head_blocks()
        if not blocks:
            features = self.image_features(pixel_values, image_features)
            return features, features
        if pixel_values is not None and image_features is None:
            if self.head_image_size() != self.encoder.image_size:  # the head reads its own pass at its own size
                return self.encode_images(pixel_values), self.head_input(pixel_values)
            return self.encoder.split_forward(pixel_values.to(self._device()), blocks)
        if head_features is None:
            raise ConfigError(f"recipe '{self.recipe.name}': the finding head reads the encoder's trunk maps "
                              f"(model.findings.tune_encoder_blocks={blocks}); pass pixel_values, not cached image_features")
        return self.image_features(None, image_features), head_features.to(self._device())

    def _head_blocks(self) -> int:
        """How many encoder blocks the finding head has its own copy of (0: it reads the encoder's output)."""
        return self.findings.tail_blocks if hasattr(self, "findings") else 0

    def head_image_size(self) -> int:
        """The size the finding head reads images at: model.findings.image_size, else the encoder's."""
        size = self.recipe.model.findings.image_size if self._head_blocks() else None
        return size or self.encoder.image_size

    def _prepared_size(self) -> int:
        """The size `image_transform` prepares images at: the larger of the encoder's and the head's."""
        return prepared_image_size(self.encoder.image_size, self.head_image_size())

    def head_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The finding head's input for images: encoder features, or trunk maps for a head with a tail
        (the encoder stops where the tail starts)."""
        blocks = self._head_blocks()
        if not blocks:
            return self.encode_images(pixel_values)
        pixels = _at_size(pixel_values.to(self._device()), self.head_image_size(), self._prepared_size())
        return self.encoder.split_forward(pixels, blocks, tokens=False)[1]

    @torch.no_grad()
    def predict_findings(self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                         **lateral: torch.Tensor | None) -> tuple[torch.Tensor, list[list[str]]]:
        """The finding head's probabilities (B, K) and above-threshold findings per image.
        `lateral`: lateral_pixel_values or lateral_features, and lateral_mask (see `finding_logits`)."""
        if not hasattr(self, "findings"):
            raise ConfigError(f"recipe '{self.recipe.name}' has no finding head (model.findings.enabled=false)")
        head_input = self.head_input(pixel_values) if pixel_values is not None else self.features_and_head_input(None, image_features)[1]
        return self.findings.predict(self.finding_logits(head_input, **lateral))

    def finding_logits(self, head_input: torch.Tensor, lateral_pixel_values: torch.Tensor | None = None,
                       lateral_features: torch.Tensor | None = None, lateral_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The finding head on the frontal view's head input (`features_and_head_input`), plus the
        lateral view's for a lateral head (model.findings.lateral): its pixels or cached head input,
        and `lateral_mask` (B,) marking the studies that have one (None: all). Without a lateral the
        head answers from the frontal alone."""
        lateral = None
        if self.findings.lateral and (lateral_pixel_values is not None or lateral_features is not None):
            lateral = self.head_input(lateral_pixel_values) if lateral_pixel_values is not None else lateral_features.to(self._device())
        return self.findings(head_input, lateral, lateral_mask if lateral is not None else None)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.get_input_embeddings()(input_ids)

    def _causal_inputs(self, visual: torch.Tensor, text_embeds: torch.Tensor, attention_mask: torch.Tensor):
        parts = [visual.to(text_embeds.dtype)]
        if hasattr(self, "prompt"):
            parts.append(self.prompt(visual.shape[0]).to(text_embeds.dtype))
        parts.append(text_embeds)
        n_before = sum(p.shape[1] for p in parts[:-1])
        ones = torch.ones(visual.shape[0], n_before, dtype=attention_mask.dtype, device=attention_mask.device)
        return torch.cat(parts, dim=1), torch.cat([ones, attention_mask], dim=1), n_before

    # -- training forward -----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                output_attentions: bool = False, loss_only: bool = False, finding_targets: torch.Tensor | None = None,
                **lateral: torch.Tensor | None) -> ReportOutput:
        """loss_only=True (training): causal decoders compute the loss from logits at label positions
        only (`radgen.models.fast.label_position_loss`, same value) and return logits=None.

        finding_targets (B, K) (grounded models): the finding head's BCE, times
        model.findings.loss_weight, is added to the report loss (extras: "report_loss", "finding_loss");
        `lateral` (lateral_pixel_values / lateral_features, lateral_mask) feeds a lateral head (`finding_logits`)."""
        device = self._device()
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        labels = labels.to(device) if labels is not None else None
        grounded = finding_targets is not None and hasattr(self, "findings")
        features, head_input = (self.features_and_head_input(pixel_values, image_features) if grounded
                                else (self.image_features(pixel_values, image_features), None))
        visual = self.connector(features)
        if output_attentions:
            with self._eager_attention():
                out = self._forward(input_ids, attention_mask, labels, visual, {"output_attentions": True})
        elif loss_only and labels is not None and self.is_causal and supports_label_position_loss(self.decoder):
            embeds, mask, n_before = self._causal_inputs(visual, self._embed(input_ids), attention_mask)
            labels = torch.cat([torch.full((labels.shape[0], n_before), -100, dtype=labels.dtype, device=device), labels], dim=1)
            out = ReportOutput(label_position_loss(self.decoder, embeds, mask, labels), None, None, None, visual.shape[1])
        else:
            out = self._forward(input_ids, attention_mask, labels, visual, {})
        if grounded:
            finding_logits = self.finding_logits(head_input, **lateral)
            finding_loss = self.findings.loss(finding_logits, finding_targets)
            out.extras.update(report_loss=out.loss, finding_loss=finding_loss, finding_logits=finding_logits)
            if out.loss is not None:
                out.loss = out.loss + self.recipe.model.findings.loss_weight * finding_loss.to(out.loss.dtype)
        return out

    @contextlib.contextmanager
    def _eager_attention(self):
        """SDPA kernels do not return attention maps: switch the decoder to eager attention for
        this call only (explain stage), then back, so training keeps the fast kernels."""
        base = base_model(self.decoder)
        previous = getattr(base.config, "_attn_implementation", None)
        switch = previous not in (None, "eager") and hasattr(base, "set_attn_implementation")
        if switch:
            base.set_attn_implementation("eager")
        try:
            yield
        finally:
            if switch:
                base.set_attn_implementation(previous)

    def _forward(self, input_ids, attention_mask, labels, visual, extra) -> ReportOutput:
        device = visual.device
        if self.is_causal:
            embeds, mask, n_before = self._causal_inputs(visual, self._embed(input_ids), attention_mask)
            if labels is not None:
                ignore = torch.full((labels.shape[0], n_before), -100, dtype=labels.dtype, device=device)
                labels = torch.cat([ignore, labels], dim=1)
            out = self.decoder(inputs_embeds=embeds, attention_mask=mask, labels=labels, return_dict=True, **extra)
            return ReportOutput(out.loss, out.logits, getattr(out, "attentions", None), None, visual.shape[1])
        encoder_mask = torch.ones(visual.shape[:2], dtype=torch.long, device=device)
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=visual,
                           encoder_attention_mask=encoder_mask, labels=labels, return_dict=True, **extra)
        return ReportOutput(out.loss, out.logits, getattr(out, "attentions", None), getattr(out, "cross_attentions", None), visual.shape[1])

    # -- training strategies ----------------------------------------------------------------------------
    def set_trainable(self, patterns: list[str]) -> int:
        """Freeze all, then unfreeze parameters whose component or name glob matches; returns the count.

        A pattern is a component ("encoder", "connector", "prompt", "decoder") or an fnmatch glob over
        parameter names ("decoder.*lora_*"). A pattern that matches nothing is a config error.
        """
        used = {pattern: False for pattern in patterns}
        for name, param in self.named_parameters():
            component = name.split(".", 1)[0]
            hit = False
            for pattern in patterns:
                if pattern == component or fnmatch.fnmatchcase(name, pattern):
                    used[pattern] = hit = True
            param.requires_grad_(hit)
            if hit:
                self.touched.add(name)
        # a component without parameters (BLIP's cross-attention bridge) is a valid, empty match
        unused = [p for p, ok in used.items() if not ok and p not in self.components()]
        if unused:
            raise ConfigError(f"stage train pattern(s) {unused} match no parameter of recipe '{self.recipe.name}' "
                              f"(components: {', '.join(self.components())}; globs match names like 'decoder.*lora_*')")
        self.train(self.training)  # re-derive which components run in train mode for the new stage
        return self.trainable_parameter_count()

    def components(self) -> list[str]:
        return [name for name in COMPONENTS if hasattr(self, name)]

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        counts = {}
        for name in self.components():
            params = list(getattr(self, name).parameters())
            counts[name] = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
        return counts

    def train(self, mode: bool = True) -> "ReportGenerator":
        """Components with nothing to train stay in eval mode: a frozen CNN's batch-norm statistics
        and a frozen tower's dropout must not change while the connector trains."""
        super().train(mode)
        if mode:
            for name in self.components():
                module = getattr(self, name)
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def merge_adapters(self) -> None:
        """Fold LoRA into the decoder weights for inference (identical outputs, no adapter overhead)."""
        merged = merge_lora(self.decoder)
        if merged is not self.decoder:
            self.decoder = merged
            self.merged = True

    # -- persistence (implemented in radgen.models.persist) ----------------------------------------------
    def save_pretrained(self, directory: str, base_weights: bool = True) -> None:
        save_pretrained(self, directory, base_weights=base_weights)

    @classmethod
    def from_pretrained(cls, directory: str, device: str | torch.device | None = None) -> "ReportGenerator":
        return load_pretrained(directory, build=build_model, device=device)


def _at_size(pixels: torch.Tensor, size: int, prepared: int) -> torch.Tensor:
    """Images prepared at `prepared` px (B, C, prepared, prepared), resized to `size` for a pass that
    reads them there; anything else is passed on as it is. Bicubic with antialiasing, as PIL's resize
    of the image itself would be, so the decoder's encoder sees what it was trained on up to resampling."""
    if size == prepared or tuple(pixels.shape[-2:]) != (prepared, prepared):
        return pixels
    return nn.functional.interpolate(pixels.float(), size=(size, size), mode="bicubic", antialias=True,
                                     align_corners=False).to(pixels.dtype)


def build_model(recipe: RecipeConfig, meta: bool = False, apply_first_stage: bool = True) -> ReportGenerator:
    """The ReportGenerator for `recipe`: its parts from radgen.models.build, then stage 1's trainability.

    meta=True builds shapes only on the meta device from architecture configs (no weights, no
    network, seconds even for 7B models): what `radgen model info` counts. The first stage's
    `train` patterns are applied, so `trainable_parameter_count()` is stage 1's.
    """
    model = ReportGenerator(recipe, *build_parts(recipe, meta=meta))
    if apply_first_stage and recipe.stages:
        model.set_trainable(recipe.stages[0].train)
    else:
        model.requires_grad_(False)
    # Like transformers' from_pretrained: start in eval mode (call .train() to train; frozen
    # components then stay in eval so their batch-norm statistics never drift).
    return model.eval()
