"""`ReportGenerator`: image encoder → connector → text decoder, built from a recipe.

Sequence layout for causal decoders (what `forward` and `generate` feed as `inputs_embeds`):

    [visual tokens (num_visual_tokens)] [soft prompt] [bos] [prompt text] [report ...] [eos] [pad ...]

Labels are -100 everywhere except on the report and its eos, so the loss is the report's NLL.
BLIP-style decoders (`bert_lm`) instead read the visual tokens through cross-attention
(`encoder_hidden_states`) and the text sequence is [bos] [prompt] [report] [eos].

Explain code finds the visual positions at `[0, num_visual_tokens)` of the self-attention maps
(causal) or in `cross_attentions` (BLIP); `num_prefix_tokens` is where the text begins.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from radgen.config import RecipeConfig
from radgen.data.text import clean_context
from radgen.errors import ConfigError
from radgen.models.build import build_parts
from radgen.models.fast import base_model, label_position_logprobs, label_position_loss, supports_label_position_loss
from radgen.models.consistency import make_consistent
from radgen.models.findings import FindingHead, verbalize
from radgen.models.peft import SoftPrompt, merge_lora
from radgen.models.memory import ReportMemory
from radgen.models.persist import load_pretrained, save_pretrained
from radgen.models.rescoring import PrefillState, common_prefix_length, score_continuations, score_tails
from radgen.models.shortlist import Shortlist
from radgen.models.speculative import NgramDraft, drafted_greedy, supports_drafting


@dataclass
class GeneratedReport:
    text: str
    token_ids: list[int]
    token_logprobs: list[float]  # log p(token | prefix) under the model, one per token id
    tokens: list[str]
    # grounded models (model.findings): the head's probability per observation, and the findings
    # written into this report's prompt (the head's above-threshold ones, or those passed in)
    finding_probs: dict[str, float] | None = None
    findings: list[str] | None = None
    edits: list[str] | None = None  # findings-consistency edits (radgen.models.consistency), when any
    guide: str | None = None  # retrieval-guided decoding: the stored report whose phrasing the decoder could take
    guide_study_id: str | None = None  # ... and the study it belongs to (radgen.models.memory)


@dataclass
class ReportOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    attentions: tuple | None = None  # self-attention per layer (B, heads, L, L); visual tokens first
    cross_attentions: tuple | None = None  # bert_lm only: (B, heads, text, visual)
    num_visual_tokens: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


log = logging.getLogger(__name__)

COMPONENTS = ("encoder", "connector", "findings", "prompt", "decoder")


class ReportGenerator(nn.Module):
    """See the module docstring. Build with `radgen.models.build_model(recipe)`."""

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
        """(B, C, H, W) → encoder features (B, N, D): what a frozen-encoder feature cache stores."""
        return self.encoder(pixel_values.to(self._device()))

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
            return self.encoder.split_forward(pixel_values.to(self._device()), blocks)
        if head_features is None:
            raise ConfigError(f"recipe '{self.recipe.name}': the finding head reads the encoder's trunk maps "
                              f"(model.findings.tune_encoder_blocks={blocks}); pass pixel_values, not cached image_features")
        return self.image_features(None, image_features), head_features.to(self._device())

    def _head_blocks(self) -> int:
        """How many encoder blocks the finding head has its own copy of (0: it reads the encoder's output)."""
        return self.findings.tail_blocks if hasattr(self, "findings") else 0

    def head_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The finding head's input for images: encoder features, or trunk maps for a head with a tail
        (the encoder stops where the tail starts)."""
        blocks = self._head_blocks()
        if not blocks:
            return self.encode_images(pixel_values)
        return self.encoder.split_forward(pixel_values.to(self._device()), blocks, tokens=False)[1]

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

    # -- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None, num_beams: int = 3,
                 max_new_tokens: int = 60, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0, min_new_tokens: int = 0,
                 draft_tokens: int = 16, findings: list[list[str]] | None = None, consistent_findings: bool = True,
                 contexts: list[str | None] | None = None, guide_margin: float = 0.0, guide_pool: int = 1,
                 **lateral: torch.Tensor | None) -> list[GeneratedReport]:
        """Decode one report per image with the decoder's HF `generate` (KV cache on).

        Greedy decoding on a causal decoder instead drafts up to `draft_tokens` tokens a pass from
        reports this model wrote before (`radgen.models.speculative`; 0 = HF greedy): the same
        greedy text, fewer decoder passes. `add_draft_reports` seeds the draft table.
        min_new_tokens > 0 forbids eos before that many tokens (benchmarks use it to decode fixed lengths).
        Runs in eval mode (no dropout, batch-norm statistics untouched) and restores the mode after,
        so validation-time decoding inside a training loop changes nothing.

        Grounded models (model.findings): each report carries the head's `finding_probs`, and its
        prompt names the head's above-threshold findings, or `findings[i]` when given (what-if use).
        Rows whose prompts differ in length decode in one batch with the shorter prompts padded and
        masked, positions counting real tokens only, so every row sees the positions it was trained
        with (decoders that take such masks: `supports_drafting`; others decode per prompt length). With
        `consistent_findings` (default) the text is then made to state the named findings, deny none of
        them and state no other finding the head covers (`radgen.models.consistency`); edited reports
        are re-scored by the model.
        `contexts[i]`: study i's clinical context (the indication) when the recipe reads one
        (model.context.section); ignored otherwise. `lateral` (lateral_pixel_values /
        lateral_features, lateral_mask): the studies' lateral views, for a lateral finding head.
        `guide_margin` > 0 with a report memory (`self.report_memory`, radgen.models.memory) and
        drafted greedy: retrieval-guided greedy, each row guided by the memory's report for its
        context (radgen.models.speculative.drafted_greedy); 0: the greedy text. `guide_pool` > 1: the
        guide is the consensus report of that many nearest-indication reports (`ReportMemory.lookup`).
        """
        # only the modules in training mode are switched, and exactly they switch back: a model kept in
        # eval mode (every inference caller) skips two walks over its ~850 modules a call
        training = [module for module in self.modules() if module.training]
        if training:
            self.eval()
        try:
            features, head_input = self.features_and_head_input(pixel_values, image_features)
            batch = features.shape[0]
            probs = None
            if hasattr(self, "findings"):
                probs, predicted = self.findings.predict(self.finding_logits(head_input, **lateral))
                findings = predicted if findings is None else [list(f) for f in findings]
            if findings is not None and len(findings) != batch:
                raise ValueError(f"findings: {len(findings)} lists for {batch} images")
            if contexts is not None and len(contexts) != batch:
                raise ValueError(f"contexts: {len(contexts)} texts for {batch} images")
            prefixes = [self.prefix_ids(findings[i] if findings is not None else None, contexts[i] if contexts is not None else None)
                        for i in range(batch)]
            visual = self.connector(features)
            reports: list[GeneratedReport | None] = [None] * batch
            groups: dict[int, list[int]] = {}
            edit = probs is not None and consistent_findings and self.grounded_prompt
            prefills: list[tuple[list[int], PrefillState]] = []  # (batch rows, their prompts' prefill) for re-scoring edits
            guides = None
            if guide_margin > 0 and self._drafting(num_beams, do_sample, draft_tokens):
                if self.report_memory is not None:
                    found = [self.report_memory.lookup(contexts[i] if contexts is not None else None, guide_pool) for i in range(batch)]
                    sources, guides = [f[0] for f in found], [f[1] for f in found]
                elif not self._warned_no_memory:
                    self._warned_no_memory = True
                    log.warning("generate.guide_margin is %s but this model has no report memory: plain greedy text "
                                "(store one with `radgen model memory DIR --data MANIFEST`)", guide_margin)
            if len({len(ids) for ids in prefixes}) > 1 and self.is_causal and supports_drafting(self.decoder):
                # per-study findings and indications give nearly every row its own prompt length: one
                # batch, shorter prompts left-padded and masked, positions counting real tokens only
                # (drafting sets them itself; HF generate derives them from the mask), so the padding is
                # invisible to each row. One group per prompt length made 32 studies up to 32 batches of one.
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id()
                width = max(len(ids) for ids in prefixes)
                prefix = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prefixes], dtype=torch.long, device=visual.device)
                prefix_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prefixes], dtype=torch.long,
                                           device=visual.device)
                reports, prefill = self._generate(visual, prefix, num_beams, max_new_tokens, do_sample, temperature, top_p,  # type: ignore[assignment]
                                                  repetition_penalty, no_repeat_ngram_size, min_new_tokens, draft_tokens, prefix_mask, edit,
                                                  guides, guide_margin)
                prefills += [(list(range(batch)), prefill)] if prefill is not None else []
            else:
                for i, ids in enumerate(prefixes):
                    groups.setdefault(len(ids), []).append(i)
            for rows in groups.values():
                index = torch.tensor(rows, device=visual.device)
                prefix = torch.tensor([prefixes[i] for i in rows], dtype=torch.long, device=visual.device)
                decoded, prefill = self._generate(visual[index] if len(rows) < batch else visual, prefix, num_beams, max_new_tokens,
                                                  do_sample, temperature, top_p, repetition_penalty, no_repeat_ngram_size,
                                                  min_new_tokens, draft_tokens, keep_prefill=edit,
                                                  guides=[guides[i] for i in rows] if guides is not None else None, guide_margin=guide_margin)
                prefills += [(rows, prefill)] if prefill is not None else []
                for i, report in zip(rows, decoded):
                    reports[i] = report
            for i, report in enumerate(reports if guides is not None else []):
                report.guide, report.guide_study_id = guides[i], sources[i]
            if probs is not None:
                names = self.findings.observations
                for i, report in enumerate(reports):
                    report.finding_probs = {name: round(float(p), 4) for name, p in zip(names, probs[i].tolist())}
                    report.findings = list(findings[i])
                if edit:
                    self._make_consistent(reports, visual, findings, contexts, prefills)  # type: ignore[arg-type]
            return reports  # type: ignore[return-value]
        finally:
            for module in training:
                module.training = True

    def _make_consistent(self, reports: list[GeneratedReport], visual: torch.Tensor, findings: list[list[str]],
                         contexts: list[str | None] | None = None, prefills: list[tuple[list[int], PrefillState]] | None = None) -> None:
        """Edit each report to state its named findings (radgen.models.consistency), then give the
        edited ones the model's own token log-probabilities under their prompt. An edit that only cut
        sentences from the end keeps the decoded tokens' log-probabilities: the same tokens after the
        same prefix. After drafted decoding (`prefills`: batch rows, state), an edit that keeps the
        first decoded tokens re-scores the rest on the row's decoding cache (`score_tails`), any other
        the whole text on the prompt's prefill cache; else one teacher-forced pass over visual
        tokens, prompt and text."""
        edited = []
        for i, report in enumerate(reports):
            text, edits = make_consistent(report.text, findings[i], self.findings.observations)
            if edits:
                report.text, report.edits = text, edits
                edited.append(i)
        if not edited:
            return
        tokens = self.tokenize_reports([reports[i].text for i in edited], findings=[findings[i] for i in edited],
                                       contexts=[contexts[i] for i in edited] if contexts is not None else None)
        labels = tokens["labels"].masked_fill(tokens["labels"] == self.eos_id(), -100)  # the text's tokens, not its end
        texts = [[int(t) for t in row if t != -100] for row in labels.tolist()]
        values: dict[int, list[float]] = {}  # position in `edited` → log-probs
        for n, i in enumerate(edited):  # only sentences cut from the end (fragments): the decoded tokens' own log-probs
            if texts[n] and texts[n] == reports[i].token_ids[:len(texts[n])]:
                values[n] = reports[i].token_logprobs[:len(texts[n])]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id()
        for rows, prefill in prefills or []:
            where = {i: k for k, i in enumerate(rows)}
            mine = [n for n, i in enumerate(edited) if i in where and n not in values]
            # an edit that keeps the report's first decoded tokens (sentences added at the end, a
            # sentence reworded or dropped further on): only what follows them, on the decoding's cache
            same = {n: common_prefix_length(texts[n], reports[edited[n]].token_ids) for n in mine}
            tails = [n for n in mine if prefill.decoded and prefill.decoded[where[edited[n]]] is not None and same[n] >= 1]
            if tails:
                scored = score_tails(self.decoder, [prefill.decoded[where[edited[n]]] for n in tails], [same[n] for n in tails],
                                     [texts[n] for n in tails], pad)
                values.update((n, reports[edited[n]].token_logprobs[:same[n]] + tail) for n, tail in zip(tails, scored))
                mine = [n for n in mine if n not in values]
            if mine:
                scored = score_continuations(self.decoder, prefill, [where[edited[n]] for n in mine], [texts[n] for n in mine], pad)
                values.update(zip(mine, scored))
        rest = [n for n in range(len(edited)) if n not in values]
        if rest:
            index = torch.tensor(rest)
            input_ids, attention_mask = tokens["input_ids"][index].to(visual.device), tokens["attention_mask"][index].to(visual.device)
            picked, labels = visual[torch.tensor([edited[n] for n in rest], device=visual.device)], labels[index].to(visual.device)
            if self.is_causal and supports_label_position_loss(self.decoder):
                embeds, mask, n_before = self._causal_inputs(picked, self._embed(input_ids), attention_mask)
                ignore = torch.full((labels.shape[0], n_before), -100, dtype=labels.dtype, device=labels.device)
                scored = label_position_logprobs(self.decoder, embeds, mask, torch.cat([ignore, labels], dim=1))
            else:
                logp = self._forward(input_ids, attention_mask, None, picked, {}).logits.float().log_softmax(-1)
                n_before = logp.shape[1] - input_ids.shape[1]  # visual tokens (+ soft prompt) before the text
                scored = [[float(logp[row, n_before + t - 1, labels[row, t]]) for t in range(labels.shape[1]) if labels[row, t] != -100]
                          for row in range(len(rest))]
            values.update(zip(rest, scored))
        for n, i in enumerate(edited):
            reports[i].token_ids, reports[i].token_logprobs = texts[n], values[n]
            reports[i].tokens = self.tokenizer.convert_ids_to_tokens(texts[n])

    def _drafting(self, num_beams: int, do_sample: bool, draft_tokens: int) -> bool:
        return num_beams == 1 and not do_sample and draft_tokens > 0 and self.is_causal and supports_drafting(self.decoder)

    def _generate(self, visual, prefix, num_beams, max_new_tokens, do_sample, temperature, top_p,
                  repetition_penalty, no_repeat_ngram_size, min_new_tokens, draft_tokens,
                  prefix_mask: torch.Tensor | None = None, keep_prefill: bool = False, guides: list[str] | None = None,
                  guide_margin: float = 0.0) -> tuple[list[GeneratedReport], PrefillState | None]:
        """Decode a batch: visual tokens (B, T, H), prefix ids (B, P). `prefix_mask` (B, P), causal
        decoders only: 0 marks the left padding of shorter prefixes (None: every position is real).
        With `keep_prefill`, drafted decoding also returns its prefill (`score_continuations`); else None.
        `guides`: one retrieved report per row for retrieval-guided greedy (drafted decoding only)."""
        device = visual.device
        batch = visual.shape[0]
        eos, pad = self.eos_id(), self.tokenizer.pad_token_id
        if self._drafting(num_beams, do_sample, draft_tokens):
            mask = torch.ones_like(prefix) if prefix_mask is None else prefix_mask
            embeds, full_mask, _ = self._causal_inputs(visual, self._embed(prefix), mask)
            rows = [[t for t, real in zip(ids, keep) if real] for ids, keep in zip(prefix.tolist(), mask.tolist())]  # unpadded
            self._shortlist_memory()
            tables = None
            if guides is not None and guide_margin > 0:
                tables = []
                for prefix_ids, text in zip(rows, guides):
                    if not text.strip():  # nothing left to lend (radgen.models.memory.vouched_sentences): unguided
                        tables.append(None)
                        continue
                    table = NgramDraft(max_keys=10_000)  # one report: a few hundred keys
                    table.add(prefix_ids + self._text_ids(text) + [eos])
                    tables.append(table)
            out = drafted_greedy(self.decoder, embeds, self.report_draft, rows, eos, pad if pad is not None else eos,
                                 max_new_tokens, draft_tokens, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
                                 attention_mask=None if prefix_mask is None else full_mask, keep_prefill=keep_prefill,
                                 guides=tables, guide_margin=guide_margin, suppress_tokens=self.suppressed_tokens(),
                                 shortlist=self.shortlist)
            for prefix_ids, ids in zip(rows, out.token_ids):
                self.report_draft.add(prefix_ids + ids)
            return [self._report(torch.tensor(ids, dtype=torch.long), torch.tensor(lp), eos)
                    for ids, lp in zip(out.token_ids, out.logprobs)], out.prefill
        options = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
                       repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                       eos_token_id=eos, pad_token_id=pad if pad is not None else eos, use_cache=True,
                       # keep one (steps, B*beams, vocab) history, not two: beams need HF's beam scores,
                       # greedy/sampling the raw logits
                       return_dict_in_generate=True, output_scores=num_beams > 1, output_logits=num_beams == 1)
        if min_new_tokens > 0:
            options["min_new_tokens"] = min_new_tokens
        suppressed = self.suppressed_tokens()
        if suppressed:
            options["suppress_tokens"] = suppressed
        if do_sample:
            options.update(temperature=temperature, top_p=top_p)
        else:
            options.update(temperature=None, top_p=None, top_k=None)  # silence sampling-flag warnings
        if self.is_causal:
            mask = torch.ones_like(prefix) if prefix_mask is None else prefix_mask
            embeds, mask, _ = self._causal_inputs(visual, self._embed(prefix), mask)
            out = self.decoder.generate(inputs_embeds=embeds, attention_mask=mask, **options)
            new_tokens = out.sequences  # with inputs_embeds only, sequences hold the new tokens only
            steps = len(out.scores if num_beams > 1 else out.logits)
            if new_tokens.shape[1] > steps:
                new_tokens = new_tokens[:, -steps:]
        else:
            encoder_mask = torch.ones(visual.shape[:2], dtype=torch.long, device=device)
            out = self.decoder.generate(input_ids=prefix, attention_mask=torch.ones_like(prefix), encoder_hidden_states=visual,
                                        encoder_attention_mask=encoder_mask, **options)
            new_tokens = out.sequences[:, prefix.shape[1]:]
        logprobs = self._token_logprobs(out, new_tokens, num_beams)
        return [self._report(new_tokens[i], logprobs[i], eos) for i in range(batch)], None

    def _token_logprobs(self, out: Any, new_tokens: torch.Tensor, num_beams: int) -> torch.Tensor:
        """log p of each chosen token under the model (raw logits; beam search: HF's beam scores)."""
        if num_beams > 1:
            beam_indices = getattr(out, "beam_indices", None)
            return self.decoder.compute_transition_scores(new_tokens, out.scores, beam_indices, normalize_logits=False).float().cpu()
        steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # (B, steps, V)
        return steps.gather(-1, new_tokens[:, : steps.shape[1], None]).squeeze(-1).cpu()

    def _report(self, ids: torch.Tensor, logprobs: torch.Tensor, eos: int) -> GeneratedReport:
        ids_list = ids.tolist()
        end = ids_list.index(eos) if eos in ids_list else len(ids_list)
        ids_list = ids_list[:end]
        special = set(self.tokenizer.all_special_ids)
        keep = [i for i, t in enumerate(ids_list) if t not in special]
        token_ids = [ids_list[i] for i in keep]
        values = [float(logprobs[i]) for i in keep]
        tokens = self.tokenizer.convert_ids_to_tokens(token_ids)
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
        return GeneratedReport(text=text, token_ids=token_ids, token_logprobs=values, tokens=tokens)

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
