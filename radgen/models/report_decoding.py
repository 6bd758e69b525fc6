"""Decoding reports from images: the generation half of `ReportGenerator` (radgen.models.generator).

`ReportDecoding.generate` runs the finding head, builds each study's prompt (its findings and
indication), decodes with drafted greedy (`radgen.models.speculative`) or the decoder's HF
`generate` (beam search, sampling, decoders drafting does not cover), and, for grounded models,
edits each report to state the head's findings (`radgen.models.consistency`) and scores the edited
text under the model (`radgen.models.rescoring`). A mixin, not a wrapper: it reads the model's own
parts (encoder, connector, finding head, decoder, tokenizer, draft table, shortlist, report memory),
so `model.generate(...)` stays the one call; `ReportGenerator` keeps building, forward and training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from radgen.models.consistency import make_consistent
from radgen.models.fast import label_position_logprobs, supports_label_position_loss
from radgen.models.lexicon import KnownWordsProcessor, TokenLexicon
from radgen.models.rescoring import PrefillState, common_prefix_length, score_continuations, score_tails
from radgen.models.speculative import NgramDraft, drafted_greedy, supports_drafting

log = logging.getLogger(__name__)


@dataclass
class GeneratedReport:
    """One decoded report: its text, its tokens with their log-probabilities under the model, and,
    for grounded models, what the finding head found and what the consistency step changed."""

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


class ReportDecoding:
    """`generate` and its helpers for `ReportGenerator` (see the module docstring)."""

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor | None = None, image_features: torch.Tensor | None = None, num_beams: int = 3,
                 max_new_tokens: int = 60, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0, min_new_tokens: int = 0,
                 draft_tokens: int = 16, findings: list[list[str]] | None = None, consistent_findings: bool = True,
                 contexts: list[str | None] | None = None, guide_margin: float = 0.0, guide_pool: int = 1,
                 known_words: bool = True, **lateral: torch.Tensor | None) -> list[GeneratedReport]:
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
        `known_words` (with a report memory): the decoder writes only words its training reports contain
        (`radgen.models.lexicon`); False: any token.
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
            lexicon = self.known_words() if known_words else None
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
                                                  guides, guide_margin, lexicon)
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
                                                  guides=[guides[i] for i in rows] if guides is not None else None, guide_margin=guide_margin,
                                                  lexicon=lexicon)
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
                  guide_margin: float = 0.0, lexicon: TokenLexicon | None = None) -> tuple[list[GeneratedReport], PrefillState | None]:
        """Decode a batch: visual tokens (B, T, H), prefix ids (B, P). `prefix_mask` (B, P), causal
        decoders only: 0 marks the left padding of shorter prefixes (None: every position is real).
        With `keep_prefill`, drafted decoding also returns its prefill (`score_continuations`); else None.
        `guides`: one retrieved report per row for retrieval-guided greedy (drafted decoding only).
        `lexicon`: the known-words rule (`radgen.models.lexicon`), every decoding; None: any token."""
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
                                 shortlist=self.shortlist, lexicon=lexicon)
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
        if lexicon is not None:  # HF generate: a logits processor (with inputs_embeds, input_ids hold the new tokens only)
            from transformers import LogitsProcessorList

            options["logits_processor"] = LogitsProcessorList([KnownWordsProcessor(lexicon, 0 if self.is_causal else prefix.shape[1])])
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
