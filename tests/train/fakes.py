"""TEST DOUBLES for the training tests: a tiny model implementing the ReportGenerator contract
(encoder / connector / decoder, encode_images, tokenize_reports, forward → loss, generate,
set_trainable, save_pretrained) and a generated image+report dataset.

They exist so the trainer's own logic (resume, stages, NaN skip, cache, DDP) is tested with
sub-second steps; the end-to-end tests use the real `radgen.models.build_model` recipes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from radgen.config import RecipeConfig, from_dict, recipe_to_yaml
from radgen.io import atomic_dir

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,"
PAD, BOS, EOS = 0, 1, 2
VOCAB = 3 + len(ALPHABET)


@dataclass
class FakeTransform:
    size: int = 16
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)


@dataclass
class FakeGenerated:
    text: str
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


@dataclass
class Out:
    loss: torch.Tensor | None
    logits: torch.Tensor


class TinyReportGenerator(nn.Module):
    """Conv+BatchNorm encoder → linear connector → 1-layer causal transformer over characters."""

    def __init__(self, recipe: RecipeConfig | None = None, width: int = 32, nan_at_call: int | None = None):
        super().__init__()
        self.recipe = recipe or RecipeConfig()
        self.image_transform = FakeTransform()
        self.tokenizer = None
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8), nn.ReLU())
        self.connector = nn.Sequential(nn.Linear(8, width), nn.Dropout(0.1))
        self.decoder = nn.ModuleDict(
            {
                "embed": nn.Embedding(VOCAB, width),
                "pos": nn.Embedding(96, width),
                "layer": nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.1, batch_first=True),
                "head": nn.Linear(width, VOCAB),
            }
        )
        self.encode_calls = 0  # images through the encoder: the feature-cache tests count them
        self.train_forward_calls = 0
        self.nan_at_call = nan_at_call  # training-mode forward call whose loss is NaN (skip-step tests)

    # -- contract -------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.encode_calls += pixel_values.shape[0]
        grid = self.encoder(pixel_values)
        return grid.flatten(2).transpose(1, 2)  # (B, 16, 8)

    def tokenize_reports(self, reports: list[str], max_tokens: int | None = None) -> dict[str, torch.Tensor]:
        rows = []
        for text in reports:
            ids = [3 + ALPHABET.index(c) for c in text.lower() if c in ALPHABET]
            rows.append([BOS] + ids[: max_tokens or 60] + [EOS])
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), PAD)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    def _logits(self, prefix: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        x = torch.cat([prefix, self.decoder["embed"](input_ids)], dim=1)
        x = x + self.decoder["pos"](torch.arange(x.shape[1], device=x.device))
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        h = self.decoder["layer"](x, src_mask=causal, is_causal=True)
        return self.decoder["head"](h[:, prefix.shape[1] :])

    def forward(self, input_ids, attention_mask, labels=None, pixel_values=None, image_features=None, output_attentions=False):
        assert (pixel_values is None) != (image_features is None), "exactly one of pixel_values / image_features"
        self.train_forward_calls += int(self.training)
        features = self.encode_images(pixel_values) if pixel_values is not None else image_features
        logits = self._logits(self.connector(features), input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
            if self.training and self.train_forward_calls == self.nan_at_call:
                loss = loss * float("nan")
        return Out(loss, logits)

    @torch.no_grad()
    def generate(self, pixel_values=None, image_features=None, num_beams=1, max_new_tokens=30, **_):
        features = self.encode_images(pixel_values) if pixel_values is not None else image_features
        prefix = self.connector(features)
        ids = torch.full((prefix.shape[0], 1), BOS, device=prefix.device)
        for _ in range(max_new_tokens):
            nxt = self._logits(prefix, ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
        out = []
        for row in ids[:, 1:].tolist():
            row = row[: row.index(EOS)] if EOS in row else row
            out.append(FakeGenerated("".join(ALPHABET[i - 3] for i in row if i >= 3), row))
        return out

    def set_trainable(self, patterns: list[str]) -> int:
        for name, param in self.named_parameters():
            component = name.split(".")[0]
            param.requires_grad = any(p == component or fnmatch.fnmatch(name, p) for p in patterns)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save_pretrained(self, directory) -> None:
        with atomic_dir(directory) as tmp:
            save_file({k: v.detach().clone().contiguous() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
            (tmp / "radgen_config.yaml").write_text(recipe_to_yaml(self.recipe))

    @classmethod
    def from_pretrained(cls, directory) -> TinyReportGenerator:
        import yaml

        model = cls(from_dict(RecipeConfig, yaml.safe_load((Path(directory) / "radgen_config.yaml").read_text())))
        model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
        return model


REPORTS = {
    0: "the heart is normal. no effusion.",
    1: "left pleural effusion. heart normal.",
    2: "right lower lobe opacity. no effusion.",
}


class FakeStudies(torch.utils.data.Dataset):
    """Images whose bright quadrant decides the report, so a model can learn image → text."""

    def __init__(self, count: int, seed: int = 0, prefix: str = "s", offset: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for index in range(count):
            kind = (index + offset) % 3
            pixels = torch.rand((3, 16, 16), generator=generator) * 0.2
            if kind == 1:
                pixels[:, :, :8] += 0.8
            elif kind == 2:
                pixels[:, 8:, 8:] += 0.8
            key = hashlib.sha1(pixels.numpy().tobytes() + b"first_frontal").hexdigest()
            self.items.append({"study_id": f"{prefix}{index}", "pixel_values": pixels, "image_key": key, "report": REPORTS[kind]})
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        self.reads += 1
        return dict(self.items[index])


def fake_recipe(**train_overrides) -> RecipeConfig:
    """A recipe for the double: two stages unless overridden; small batches; eval every 2 steps."""
    data = {
        "name": "fake",
        "data": {"max_tokens": 40},
        "stages": [
            {"name": "connector", "train": ["connector"], "max_steps": 3, "lr": 3e-3},
            {"name": "all", "train": ["connector", "decoder"], "max_steps": 5, "lr": 2e-3},
        ],
        "train": {"batch_size": 4, "eval_every": 2, "save_every": 2, "log_every": 1, "eval_generate": 3, "warmup_steps": 1,
                  "feature_cache": False, "keep_checkpoints": 3},
        "generate": {"num_beams": 1, "max_new_tokens": 20},
    }
    for key, value in train_overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(RecipeConfig, json.loads(json.dumps(data)))
