"""A KV cache that grows into spare room instead of copying itself every pass.

Why: transformers' `DynamicLayer.update` appends a pass's keys and values with `torch.cat`, which
copies the whole cache, every layer, every pass. Drafted decoding (`radgen.models.speculative`)
keeps rejected drafts in the cache (masked), so at batch 32 a layer's cache is a few MB and a
report's ~25 passes copied it ~25 times (the timed effect, `benchmarks/drafted_decoding.py
--also-concat-cache`: docs/benchmarks.md, Performance, "A KV cache that grows in place"). A `GrowingLayer` keeps each layer's keys and values in a buffer with room to spare
(half again what it holds) and writes a pass's states into that room; the cache it returns is a
view of the buffer's filled part, so attention reads exactly the numbers `torch.cat` would have
made (tests/models/test_kv_cache.py). A view handed out is never written to again: anything that
replaces a layer's keys (crop, row selection, beam reordering, offloading) makes the next update
start a new buffer.
"""

from __future__ import annotations

import copy

import torch

try:  # transformers >= 4.56 builds its caches from per-layer objects; older ones keep lists and get no growing layers
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - transformers < 4.56
    DynamicLayer = None  # type: ignore[assignment,misc]

# spare room a new buffer gets: half of what it must hold, at least this many positions
MIN_SPARE = 16


if DynamicLayer is not None:

    class GrowingLayer(DynamicLayer):  # type: ignore[misc,valid-type]
        """`DynamicLayer` whose update writes into spare room of a buffer (see the module's note)."""

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
            self._handed: torch.Tensor | None = None  # the keys view last returned: still ours while `keys` is it

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            held = self.get_seq_length()
            needed = held + key_states.shape[-2]
            ours = self._buffers is not None and self.keys is self._handed
            if not ours or self._buffers[0].shape[-2] < needed or self._buffers[0].shape[:2] != key_states.shape[:2]:
                self._buffers = self._new_buffers(key_states, value_states, held, needed)
            key_buffer, value_buffer = self._buffers
            key_buffer[:, :, held:needed].copy_(key_states)
            value_buffer[:, :, held:needed].copy_(value_states)
            self.keys, self.values = key_buffer[:, :, :needed], value_buffer[:, :, :needed]
            self._handed = self.keys
            return self.keys, self.values

        def _new_buffers(self, key_states: torch.Tensor, value_states: torch.Tensor, held: int,
                         needed: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Buffers for `needed` positions and room to spare, holding the `held` cached ones."""
            capacity = needed + max(needed // 2, MIN_SPARE)
            buffers = []
            for cached, new in ((self.keys, key_states), (self.values, value_states)):
                buffer = new.new_empty(*new.shape[:2], capacity, new.shape[-1])
                if held:
                    buffer[:, :, :held].copy_(cached)
                buffers.append(buffer)
            return buffers[0], buffers[1]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep rows `indices`, with the room to spare (one copy, as `DynamicLayer`'s)."""
            if self.get_seq_length() > 0 and self._buffers is not None and self.keys is self._handed:
                held = self.keys.shape[-2]
                self._buffers = tuple(buffer.index_select(0, indices.to(buffer.device)) for buffer in self._buffers)  # type: ignore[assignment]
                self.keys, self.values = self._buffers[0][:, :, :held], self._buffers[1][:, :, :held]
                self._handed = self.keys
                return
            super().batch_select_indices(indices)

        def __deepcopy__(self, memo: dict) -> GrowingLayer:
            """A copy holding the filled part only (no spare room): decoding keeps a copy of the prompts' cache."""
            clone = self.__class__.__new__(self.__class__)
            memo[id(self)] = clone
            for name, value in self.__dict__.items():
                if name not in ("keys", "values", "_buffers", "_handed"):
                    setattr(clone, name, copy.deepcopy(value, memo))
            clone.keys = None if self.keys is None else self.keys.clone(memory_format=torch.contiguous_format)
            clone.values = None if self.values is None else self.values.clone(memory_format=torch.contiguous_format)
            clone._buffers = clone._handed = None
            return clone

else:  # pragma: no cover - transformers < 4.56
    GrowingLayer = None  # type: ignore[assignment,misc]


def growing_cache():  # noqa: ANN201 - a transformers DynamicCache
    """An empty transformers `DynamicCache` whose layers are `GrowingLayer`s (where this transformers
    builds caches from layer objects; otherwise its plain `DynamicCache`)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if GrowingLayer is not None and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer and not cache.layers:
        cache.layer_class_to_replicate = GrowingLayer
    return cache
