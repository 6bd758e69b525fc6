"""Grounding: a finding head on the image features, and its findings as the decoder's prompt.

Why: a report decoder trained on report text alone learns the normal template (most IU reports
are normal) and ignores the image even when its features separate the findings (linear probes on
radgen-small's frozen EfficientNet-Lite0 features reach AUROC 0.94-0.98 for cardiomegaly, effusion,
devices, edema). Classification-guided generation (PromptMRG, Jin et al., AAAI 2024) makes the
image's findings explicit: a multi-label head predicts the observations from the encoder features,
trained with a binary cross-entropy added to the report loss, and the findings it predicts are
written into the prompt ("Image findings: cardiomegaly, pleural effusion. Findings:"), so the
decoder conditions on them as on any text. Training feeds the study's true findings (teacher
forcing); generation feeds the head's, thresholded per observation on the validation split.

Targets come from the manifest's `labels.chexpert` (IU-Phantom: what the image shows; IU: human
MeSH labels) or, where a study has none (MIMIC, a user's folder), from radgen's report labeler on
the training report, as PromptMRG does with CheXbert. Uncertain counts as present.

`model.findings.tune_encoder_blocks: K` gives the head its own trainable copy of the encoder's last
K blocks (and head conv), reading the frozen encoder's trunk map from the same forward pass. Why:
the frozen ImageNet features are the limit of a head on them; refitted with a tuned copy of
EfficientNet-Lite0's last two stages, radgen-small's head went on IU-Phantom's val split from BCE
0.333 to 0.272 and AUROC 0.914 to 0.962 for support devices, 0.865 to 0.931 for lung lesions, while
the decoder keeps the frozen features it was trained on (docs/benchmarks.md, "Grounding").
`radgen fit-findings` trains it on cached trunk maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from radgen.config import FindingsConfig
from radgen.errors import ConfigError
from radgen.labels.observations import CHEXPERT_14, NO_FINDING

DEFAULT_OBSERVATIONS: tuple[str, ...] = tuple(name for name in CHEXPERT_14 if name != NO_FINDING)
LABEL_SOURCES = ("auto", "manifest", "report")
MEMBER_MEANS = ("logit", "probability")  # how a FindingEnsemble combines its members (model.findings.member_mean)


def observations_for(cfg: FindingsConfig) -> list[str]:
    names = list(cfg.observations) if cfg.observations else list(DEFAULT_OBSERVATIONS)
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"model.findings.observations must be distinct names, got {names}")
    return names


class FindingHead(nn.Module):
    """Encoder features (B, N, D) or (B, D) → one logit per observation.

    Mean- and max-pooled tokens (a sign can be small: max keeps a local response the mean dilutes),
    layer norm, then a one-hidden-layer MLP. `thresholds` (per observation, set on validation data
    by `radgen.train`) and `pos_weight` (class balance, from the training labels) are buffers, so
    they are saved with the weights.

    `lateral=True`: the study's lateral view, pooled and normalised the same way, joins the frontal
    one (zeros, with a presence flag of 0, when a study has none). Why: lines, tubes and fluid
    that are thin or faint on the frontal view at 224 px are plain on the lateral; on IU-Phantom's
    test split, logistic-regression probes on the frozen features go from F1 0.65 to 0.87 for
    support devices and 0.67 to 0.87 for pleural effusion with the lateral added
    (benchmarks/lateral_probe.py, docs/benchmarks.md "Grounding"; the decoder keeps
    the frontal view only). Training hides the lateral of some studies
    (model.findings.lateral_dropout), so a single frontal image still gets a calibrated answer.
    """

    def __init__(self, in_features: int, observations: Sequence[str], hidden_size: int = 256, dropout: float = 0.1,
                 lateral: bool = False, tail: nn.Module | None = None, tail_blocks: int = 0):
        super().__init__()
        self.observations = list(observations)
        self.lateral = lateral
        # tail: a trainable copy of the encoder's last `tail_blocks` blocks; the head's inputs are
        # then trunk maps (B, C, h, w) from `ImageEncoder.split_forward`, not encoder tokens
        self.tail_blocks = tail_blocks if tail is not None else 0
        if tail is not None:
            self.tail = tail
        self.norm = nn.LayerNorm(2 * in_features)
        if lateral:
            self.lateral_norm = nn.LayerNorm(2 * in_features)
        self.mlp = nn.Sequential(nn.Linear((4 if lateral else 2) * in_features, hidden_size), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_size, len(self.observations)))
        self.register_buffer("thresholds", torch.full((len(self.observations),), 0.5))
        self.register_buffer("pos_weight", torch.ones(len(self.observations)))
        # findings are rare (IU: 5-15% of studies each): start every logit at a 10% prior, so an
        # untrained head finds nothing rather than a random half of the observations
        nn.init.constant_(self.mlp[-1].bias, -2.2)

    def forward(self, features: torch.Tensor, lateral: torch.Tensor | None = None,
                lateral_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.pool(features, lateral, lateral_mask))

    def pool(self, features: torch.Tensor, lateral: torch.Tensor | None = None, lateral_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) or (B, D) features → (B, 2D) mean and max over tokens (no parameters without a
        tail: cacheable; with one, trunk maps (B, C, h, w) go through the tail first).
        A lateral head: (B, 4D + 1), the lateral view's pool (zeros where `lateral_mask` is False or
        no lateral is given) and its presence flag appended."""
        pooled = self._pool_view(features)
        if not self.lateral:
            return pooled
        if lateral is None:
            side, present = torch.zeros_like(pooled), pooled.new_zeros(pooled.shape[0], 1)
        else:
            side = self._pool_view(lateral)
            present = (lateral_mask.to(side.device, side.dtype)[:, None] if lateral_mask is not None
                       else side.new_ones(side.shape[0], 1))
        return torch.cat([pooled, side * present, present], dim=-1)

    def _pool_view(self, features: torch.Tensor) -> torch.Tensor:
        if self.tail_blocks:
            weight = next(self.tail.parameters())
            grid = self.tail(features.to(weight.device, weight.dtype))  # (B, D, h, w)
            features = grid.flatten(2).transpose(1, 2)
        if features.dim() == 2:
            features = features[:, None]
        values = features.to(self.norm.weight.dtype)
        return torch.cat([values.mean(1), values.amax(1)], dim=-1)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        if not self.lateral:
            return self.mlp(self.norm(pooled))
        width = self.norm.normalized_shape[0]
        front, side, present = pooled[:, :width], pooled[:, width:2 * width], pooled[:, 2 * width:]
        return self.mlp(torch.cat([self.norm(front), self.lateral_norm(side) * present], dim=-1))

    def train(self, mode: bool = True) -> FindingHead:
        super().train(mode)
        if self.tail_blocks:
            # batch-norm statistics stay those of the encoder: a tail fine-tuned on batches of a few
            # dozen images would otherwise re-estimate them from noise
            for module in self.tail.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def tails(self) -> list[nn.Module]:
        """The head's own encoder blocks (none without model.findings.tune_encoder_blocks)."""
        return [self.tail] if self.tail_blocks else []

    @staticmethod
    def hide_lateral(pooled: torch.Tensor, share: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training augmentation for a lateral head's pooled rows: hide the lateral of about `share` of them."""
        if share <= 0:
            return pooled
        hide = torch.rand(pooled.shape[0], generator=generator) < share
        out = pooled.clone()
        out[hide.to(out.device), -1] = 0.0
        return out

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.to(logits.device, torch.float32),
                                                  pos_weight=self.pos_weight.float())

    def predict(self, logits: torch.Tensor) -> tuple[torch.Tensor, list[list[str]]]:
        """Probabilities (B, K) and, per row, the observations at or above their threshold."""
        probs = torch.sigmoid(logits.float())
        present = probs >= self.thresholds.to(probs.device)
        names = [[self.observations[k] for k in row.nonzero().flatten().tolist()] for row in present.cpu()]
        return probs, names

    def set_class_balance(self, targets: torch.Tensor, max_pos_weight: float) -> None:
        """pos_weight = negatives / positives per observation, capped (absent ones get the cap)."""
        positives = targets.float().sum(0)
        negatives = targets.shape[0] - positives
        weight = torch.where(positives > 0, negatives / positives.clamp(min=1), torch.full_like(positives, max_pos_weight))
        self.pos_weight.copy_(weight.clamp(min=1.0, max=max_pos_weight))

    def set_thresholds(self, probs: torch.Tensor, targets: torch.Tensor, min_positives: int = 3) -> list[float]:
        """Set the thresholds to `best_f1_thresholds(probs, targets, min_positives)`; returns them."""
        chosen = best_f1_thresholds(probs, targets, min_positives)
        self.thresholds.copy_(torch.tensor(chosen))
        return chosen


def best_f1_thresholds(probs: torch.Tensor, targets: torch.Tensor, min_positives: int = 3,
                       placement: str = "middle") -> list[float]:
    """Per observation (column), a threshold that maximises F1 on (probs, targets); 0.5 where fewer
    than `min_positives` positives make the choice noise.

    Of the thresholds with the best F1, `placement="middle"` returns the one halfway, in logits,
    between the lowest score counted present and the highest score below it (the geometric mean of
    their odds): the same decisions on (probs, targets), with room either side. Why: the lowest score
    counted present sits on the edge of that gap, so a new study scoring a hair lower is missed; on
    IU-Phantom a head that separated cardiomegaly perfectly on val (edge 0.9994, next score 0.938)
    missed 6 of 28 test cases at the edge. The middle won 190 of 200 two-fold splits of val
    (docs/benchmarks.md, "Grounding", "Thresholds in the middle of the gap"). `placement="edge"`:
    that lowest score, the rule before (kept for benchmarks/threshold_placement.py).
    """
    if placement not in ("middle", "edge"):
        raise ValueError(f"placement must be 'middle' or 'edge', got {placement!r}")
    chosen = []
    for k in range(probs.shape[1]):
        p, t = probs[:, k].float(), targets[:, k].bool()
        if int(t.sum()) < min_positives:
            chosen.append(0.5)
            continue
        values = torch.unique(p)  # ascending
        best, best_f1 = 0, -1.0
        for i, value in enumerate(values.tolist()):
            hit = p >= value
            tp = float((hit & t).sum())
            f1 = 2 * tp / max(float(hit.sum()) + float(t.sum()), 1.0)
            if f1 > best_f1 + 1e-12:
                best, best_f1 = i, f1
        edge = values[best]
        if best > 0 and placement == "middle":
            below = values[best - 1]
            middle = torch.sigmoid((torch.logit(edge.double(), eps=1e-12) + torch.logit(below.double(), eps=1e-12)) / 2).float()
            # float32 may round the middle onto a neighbour: then the edge keeps the decisions exact
            edge = middle if below < middle <= edge else edge
        chosen.append(float(edge))
    return chosen


class FindingEnsemble(nn.Module):
    """`model.findings.members` FindingHeads of one recipe, fitted from different seeds (or on other
    renders of the training studies); a study's logit of each observation is the mean of theirs
    (`mean="logit"`, the default) or of their probabilities (`mean="probability"`), thresholded on
    validation data like one head's.

    Why: the fit is the noisy part of the findings. Two fits of the same head recipe on the same
    features differ by about 0.03 in finding F1 on IU-Phantom's val split (docs/benchmarks.md,
    "Grounding"), more than the head changes that were tried there; the mean of several fits keeps
    what they agree on and cancels most of what any one fit learned by chance. Each member is a
    whole head with its own encoder blocks, so it costs one head's time a member (a few ms an
    image, against the decoder's hundreds).

    Why the mean of logits by default: a member's confident answers (cardiomegaly at 0.999, tuned
    thresholds near 0.99) are far apart in logits and crowded together in probabilities; averaging
    probabilities lets one unsure member pull a study across such a threshold. On IU-Phantom's val
    split, cross-validated, two heads' logit mean scored 0.877 against 0.867 for their probability
    mean and 0.863 for the better head alone (docs/benchmarks.md, "Grounding", "Two heads, their
    logits averaged").

    Same interface as FindingHead where the model uses it (`forward` → logits, `predict`,
    `thresholds`, `observations`, `lateral`, `tail_blocks`): with `mean="probability"` `forward`
    returns the logit of the mean probability, so `predict`'s sigmoid gives that mean back.
    """

    def __init__(self, members: Sequence[FindingHead], mean: str = "logit"):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"a finding ensemble needs at least 2 members, got {len(members)}")
        if mean not in MEMBER_MEANS:
            raise ConfigError(f"model.findings.member_mean: '{mean}' is not one of {', '.join(MEMBER_MEANS)}")
        first = members[0]
        if any(m.observations != first.observations or m.lateral != first.lateral or m.tail_blocks != first.tail_blocks
               for m in members):
            raise ConfigError("the members of a finding ensemble must share observations, lateral and tune_encoder_blocks")
        self.members = nn.ModuleList(members)
        self.mean = mean
        self.observations = list(first.observations)
        self.lateral = first.lateral
        self.tail_blocks = first.tail_blocks
        self.register_buffer("thresholds", torch.full((len(self.observations),), 0.5))

    def forward(self, features: torch.Tensor, lateral: torch.Tensor | None = None,
                lateral_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.combine([m(features, lateral, lateral_mask) for m in self.members])

    def combine(self, member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ensemble's fp32 logits from its members' (the same shape each), by `self.mean`: what
        `forward` returns, and what a fit tunes the thresholds on from the members' cached logits."""
        logits = torch.stack([m.float() for m in member_logits])
        if self.mean == "logit":
            return logits.mean(0)
        # the mean of sigmoids, as a logit: 1e-7 keeps a unanimous 0 or 1 finite (fp32 resolves it)
        return torch.logit(torch.sigmoid(logits).mean(0), eps=1e-7)

    def tails(self) -> list[nn.Module]:
        return [tail for member in self.members for tail in member.tails()]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """BCE of the ensemble's logits with the first member's class balance (`radgen train`
        trains the members jointly this way; `radgen fit-findings` fits each on its own)."""
        return self.members[0].loss(logits, targets)

    def set_class_balance(self, targets: torch.Tensor, max_pos_weight: float) -> None:
        for member in self.members:
            member.set_class_balance(targets, max_pos_weight)

    predict = FindingHead.predict
    set_thresholds = FindingHead.set_thresholds


def head_members(head: FindingHead | FindingEnsemble) -> list[FindingHead]:
    """The heads whose outputs a model's finding head averages (itself, for one head)."""
    return list(head.members) if isinstance(head, FindingEnsemble) else [head]


def combine_member_logits(head: FindingHead | FindingEnsemble, member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """`head`'s logits from those of its members (`head_members(head)`'s order): one head's own,
    or an ensemble's mean by its rule (model.findings.member_mean)."""
    if isinstance(head, FindingEnsemble):
        return head.combine(member_logits)
    (only,) = member_logits
    return only.float()


def build_finding_head(cfg: FindingsConfig, encoder_width: int, encoder: Any = None,
                       seed: int | None = None) -> FindingHead | FindingEnsemble | None:
    """The head of a grounded recipe (None when model.findings.enabled is false). `encoder` (an
    ImageEncoder) is needed when model.findings.tune_encoder_blocks > 0: the tail is copied from it.
    `model.findings.members` > 1 builds a FindingEnsemble of that many heads.

    `seed`: member i's initial weights are drawn right after `torch.manual_seed(seed + i)` (and its
    fit's dropout continues that stream), so a head of K members from seed S is the K one-member
    heads from seeds S..S+K-1 side by side, and an ensemble can be grown a member at a time
    (`radgen fit-findings --add-members`) with the same result."""
    if not cfg.enabled:
        return None
    if cfg.members < 1:
        raise ConfigError(f"model.findings.members must be >= 1, got {cfg.members}")
    if cfg.member_mean not in MEMBER_MEANS:
        raise ConfigError(f"model.findings.member_mean: '{cfg.member_mean}' is not one of {', '.join(MEMBER_MEANS)}")
    if cfg.members > 1:
        one = replace(cfg, members=1)
        return FindingEnsemble([build_finding_head(one, encoder_width, encoder, None if seed is None else seed + index)
                                for index in range(cfg.members)], mean=cfg.member_mean)
    if seed is not None:
        torch.manual_seed(seed)
    if cfg.tune_encoder_blocks < 0:
        raise ConfigError(f"model.findings.tune_encoder_blocks must be >= 0, got {cfg.tune_encoder_blocks}")
    if cfg.label_source not in LABEL_SOURCES:
        raise ConfigError(f"model.findings.label_source: '{cfg.label_source}' is not one of {', '.join(LABEL_SOURCES)}")
    if "{findings}" not in cfg.prompt_template:
        raise ConfigError(f"model.findings.prompt_template must contain '{{findings}}', got {cfg.prompt_template!r}")
    if not 0.0 <= cfg.lateral_dropout < 1.0:
        raise ConfigError(f"model.findings.lateral_dropout must be in [0, 1), got {cfg.lateral_dropout}")
    if cfg.image_size is not None and (cfg.image_size < 32 or not cfg.tune_encoder_blocks):
        raise ConfigError(f"model.findings.image_size={cfg.image_size}: a head reads images at its own size only with its own "
                          "encoder blocks (model.findings.tune_encoder_blocks > 0) and at 32 px or more; unset it to use the encoder's")
    tail = None
    if cfg.tune_encoder_blocks:
        if encoder is None:
            raise ConfigError("model.findings.tune_encoder_blocks needs the image encoder to copy its last blocks from")
        tail = encoder.tail_copy(cfg.tune_encoder_blocks)
    head = FindingHead(encoder_width, observations_for(cfg), cfg.hidden_size, cfg.dropout, lateral=cfg.lateral,
                       tail=tail, tail_blocks=cfg.tune_encoder_blocks)
    if seed is not None:
        # the fit's dropout draws from the global generator: `fit_finding_head` resumes it from here,
        # so this member fits the same whether it is fitted alone or after other members
        head.rng_after_init = torch.get_rng_state()
    return head


def verbalize(findings: Sequence[str], cfg: FindingsConfig) -> str:
    """"Image findings: cardiomegaly, pleural effusion." (the head's order: the observation list's)."""
    text = ", ".join(name.lower() for name in findings) if findings else cfg.none_text
    return cfg.prompt_template.format(findings=text)


def targets_from_labels(labels: Sequence[dict[str, Any] | None], reports: Sequence[str], observations: Sequence[str],
                        source: str = "auto") -> tuple[torch.Tensor, int]:
    """(B, K) 0/1 targets from each study's CheXpert label dict (1 present, -1 uncertain = present; an
    empty dict is a labelled study with nothing present); studies without one (None), or all with
    source="report", are labelled from their report text.
    Returns (targets, number of studies labelled from the report)."""
    from radgen.labels.labeler import label_report

    rows, from_report = [], 0
    for label, report in zip(labels, reports):
        if source == "report" or (source == "auto" and label is None):
            label = label_report(report)
            from_report += 1
        elif label is None:
            raise ConfigError("model.findings.label_source=manifest but a study has no labels.chexpert; "
                              "use label_source=auto to label such studies from their reports")
        rows.append([1.0 if (label.get(name) in (1, -1)) else 0.0 for name in observations])
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(observations)), from_report


def names_from_targets(targets: torch.Tensor, observations: Sequence[str]) -> list[list[str]]:
    return [[observations[k] for k in row.nonzero().flatten().tolist()] for row in targets.cpu()]
