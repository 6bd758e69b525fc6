"""On-disk cache of frozen-encoder features: encode every image once, then train from features.

When a stage freezes the image encoder (BLIP-2's ViT-g, LLaVA's CLIP, stage 1 of seed 003), its
output for an image never changes, yet a naive loop recomputes it every epoch. The cache stores
`model.encode_images(pixel_values)` per image:

    <cache_dir>/<encoder_id>/meta.json           encoder id, feature shape, dtype
    <cache_dir>/<encoder_id>/index.json          image_key -> [shard, row]
    <cache_dir>/<encoder_id>/shard-00000.npy     (rows, N, D) array, opened memory-mapped

* `image_key` (from StudyDataset) hashes the image bytes, the image-selection mode and
  data.colour=keep, so an edited image, or a colour decode of a file cached gray, is a miss;
* `encoder_id` hashes the encoder config, the image transform (size, mean, std) and every encoder
  weight and buffer, so new weights or preprocessing land in a fresh folder: a stale entry can
  never be read.

Shards are append-only and each is written to a temporary file and renamed (radgen.io), then the
index is rewritten atomically: a crash mid-build loses at most the shard being written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radgen.errors import DataError
from radgen.io import atomic_open, atomic_write_json
from radgen.threads import rebalance_threads

log = logging.getLogger(__name__)

_DTYPES = {"float16": np.float16, "float32": np.float32}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (names, shapes, dtypes, bytes).

    Hashing all bytes (not a sample) is the only way to notice a fine-tuned encoder; blake2b runs
    at ~1 GB/s, so even ViT-g (1B params) costs a few seconds once per run.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").reshape(-1).contiguous()  # 1-D: 0-dim tensors cannot be viewed as bytes
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _describe(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    if hasattr(obj, "__dict__"):
        return {k: _describe(v) for k, v in sorted(vars(obj).items()) if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_describe(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def encoder_identity(model: torch.nn.Module) -> str:
    """Identity of what produces the features: encoder config + image transform + weights."""
    recipe = getattr(model, "recipe", None)
    parts = {
        "encoder_config": asdict(recipe.model.encoder) if recipe is not None else None,
        "image_transform": _describe(getattr(model, "image_transform", None)),
        "weights": weights_fingerprint(model.encoder),
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()[:20]


class FeatureCache:
    """Memory-mapped feature store for one encoder identity."""

    def __init__(self, root: str | Path, encoder_id: str, dtype: str = "float16"):
        if dtype not in _DTYPES:
            raise DataError(f"train.feature_cache_dtype: '{dtype}' is not float16 or float32")
        self.dir = Path(root) / encoder_id
        self.encoder_id = encoder_id
        self.dtype = _DTYPES[dtype]
        self.index: dict[str, list[int]] = {}
        self._shards: dict[int, np.ndarray] = {}
        meta_path = self.dir / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("encoder_id") != encoder_id or meta.get("dtype") != dtype:
                raise DataError(f"{meta_path}: cache folder belongs to another encoder/dtype; delete {self.dir}")
            self.index = json.loads((self.dir / "index.json").read_text()) if (self.dir / "index.json").is_file() else {}

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        # DataLoader workers get a copy: send the index, not the opened memmaps (they would pickle as arrays)
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def missing(self, keys: Sequence[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for key in keys:
            if key not in self.index and key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def add(self, keys: Sequence[str], features: torch.Tensor | np.ndarray) -> None:
        """Append one shard of features (rows aligned with keys) and publish it in the index."""
        array = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        if len(keys) != len(array):
            raise ValueError(f"{len(keys)} keys for {len(array)} feature rows")
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = 1 + max((s for s, _ in self.index.values()), default=-1)
        with atomic_open(self.dir / f"shard-{shard:05d}.npy", "wb") as handle:
            np.save(handle, array.astype(self.dtype))
        atomic_write_json(self.dir / "meta.json", {"encoder_id": self.encoder_id, "dtype": np.dtype(self.dtype).name, "feature_shape": list(array.shape[1:])})
        for row, key in enumerate(keys):
            self.index[key] = [shard, row]
        atomic_write_json(self.dir / "index.json", self.index, indent=None)

    def _shard(self, number: int) -> np.ndarray:
        if number not in self._shards:
            path = self.dir / f"shard-{number:05d}.npy"
            try:
                self._shards[number] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataError(f"{path}: unreadable feature shard ({err}); delete {self.dir} to rebuild the cache") from None
        return self._shards[number]

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """Features for `keys`, stacked (B, N, D) float32."""
        rows = []
        for key in keys:
            if key not in self.index:
                raise KeyError(f"image {key} is not in feature cache {self.dir}")
            shard, row = self.index[key]
            rows.append(np.asarray(self._shard(shard)[row], dtype=np.float32))
        return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def fill_cache(
    model: torch.nn.Module,
    dataset: Sequence[dict],
    cache: FeatureCache,
    batch_size: int,
    device: torch.device,
    autocast: Any = None,
    progress: bool = True,
    shard_rows: int = 4096,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[dict], int]:
    """Encode the images of `dataset` not yet cached (with `encode`, default `model.encode_images`).

    Returns (per index {study_id, image_key, report, ...}, number of images encoded); items with a
    lateral view (a lateral finding head) have it cached too, under `lateral_image_key`.

    One pass reads every item (the key is a hash of the image file, so the item is needed anyway);
    missing images are encoded in batches and flushed in shards of `shard_rows`.
    """
    from tqdm.auto import tqdm

    records: list[dict] = []
    pending_keys: list[str] = []
    pending_pixels: list[torch.Tensor] = []
    out_keys: list[str] = []
    out_rows: list[torch.Tensor] = []
    scheduled: set[str] = set()
    encoded = 0
    was_training = model.encoder.training
    model.encoder.eval()

    def encode_pending() -> None:
        nonlocal encoded
        if not pending_pixels:
            return
        pixels = torch.stack(pending_pixels).to(device)
        with autocast() if autocast is not None else torch.autocast("cpu", enabled=False):
            features = (encode or model.encode_images)(pixels)
        out_keys.extend(pending_keys)
        out_rows.append(features.float().cpu())
        encoded += len(pending_keys)
        pending_keys.clear()
        pending_pixels.clear()
        rebalance_threads()

    for index in tqdm(range(len(dataset)), desc="feature cache", unit="img", disable=not progress, leave=False):
        item = dataset[index]
        key = item["image_key"]
        record = {"study_id": item["study_id"], "image_key": key, "report": item["report"],
                  "finding_labels": item.get("finding_labels")}
        if "context" in item:
            record["context"] = item["context"]
        images = [(key, item["pixel_values"])]
        if "lateral_pixel_values" in item:  # a lateral finding head: its view is cached the same way
            record["lateral_image_key"] = item["lateral_image_key"]
            if item["lateral_image_key"] is not None:
                images.append((item["lateral_image_key"], item["lateral_pixel_values"]))
        records.append(record)
        for image_key, pixels in images:
            if image_key in cache or image_key in scheduled:
                continue
            scheduled.add(image_key)
            pending_keys.append(image_key)
            pending_pixels.append(pixels)
            if len(pending_keys) >= batch_size:
                encode_pending()
            if len(out_keys) >= shard_rows:
                cache.add(out_keys, torch.cat(out_rows))
                out_keys, out_rows = [], []
    encode_pending()
    if out_keys:
        cache.add(out_keys, torch.cat(out_rows))
    model.encoder.train(was_training)
    return records, encoded


class CachedFeatures(torch.utils.data.Dataset):
    """A training set whose items carry cached `image_features` instead of pixels (no image decoding)."""

    def __init__(self, records: list[dict], cache: FeatureCache):
        self.records = records
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        item = {**record, "image_features": self.cache.get([record["image_key"]])[0]}
        if "lateral_image_key" in record:
            lateral_key = record["lateral_image_key"]
            item["has_lateral"] = lateral_key is not None
            item["lateral_features"] = self.cache.get([lateral_key])[0] if lateral_key is not None else torch.zeros_like(item["image_features"])
        return item
