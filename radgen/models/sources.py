"""Where pretrained weights come from: hub ids, local folders, composite checkpoints.

Several components of one recipe often live in ONE checkpoint (BLIP-2's ViT-g, Q-Former and OPT are
all in `Salesforce/blip2-opt-2.7b`). `SourceCache` loads such a checkpoint once per `build_model`
call and hands out its parts. Ids are passed to `from_pretrained` unchanged: a hub id downloads (or
reads the HF cache), a local folder is read from disk.
"""

from __future__ import annotations

import os
from typing import Any

from radgen.errors import WeightsError


def is_local_dir(name: str | None) -> bool:
    return bool(name) and os.path.isdir(os.path.expanduser(str(name)))


def _transformers_class(class_name: str) -> Any:
    import transformers

    return getattr(transformers, class_name)


def hf_config(name: str, what: str, **kwargs: Any) -> Any:
    """AutoConfig for `name`, with a one-line error naming the recipe key when it is unreachable."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except Exception as err:
        raise WeightsError(
            f"{what} '{name}': no config found ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "pass a local folder, or a known hub id (radgen.models.registry) with pretrained=false, "
            "or check the network/HF cache") from None


def config_dict(name: str, what: str) -> dict[str, Any]:
    """The config.json of a local folder (read directly: AutoConfig does not resolve every
    sub-model type, e.g. blip_2_qformer) or of a hub id (via AutoConfig)."""
    import json

    path = os.path.join(os.path.expanduser(name), "config.json")
    if os.path.isfile(path):
        with open(path) as handle:
            return json.load(handle)
    return hf_config(name, what).to_dict()


class SourceCache:
    """Loads each (class, id) pair once; `meta=True` means build shapes only (no weights)."""

    def __init__(self, meta: bool = False, dtype: Any = None, load_kwargs: dict[str, Any] | None = None):
        self.meta = meta
        self.dtype = dtype
        self.load_kwargs = load_kwargs or {}
        self._loaded: dict[tuple[str, str], Any] = {}
        # Load options (dtype, 8-bit) a checkpoint shared by several components must be loaded with:
        # BLIP-2's ViT, Q-Former and OPT come from one file, loaded once, in the decoder's precision.
        self.shared_options: dict[str, dict[str, Any]] = {}

    def load(self, class_name: str, name: str, **kwargs: Any) -> Any:
        key = (class_name, name)
        if key not in self._loaded:
            cls = _transformers_class(class_name)
            options = {**self.load_kwargs, **self.shared_options.get(name, {}), **kwargs}
            if self.dtype is not None:
                options.setdefault("dtype", self.dtype)
            try:
                self._loaded[key] = cls.from_pretrained(name, **options)
            except WeightsError:
                raise
            except (OSError, ValueError) as err:
                raise WeightsError(
                    f"could not load {class_name} weights from '{name}' ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:160]}); pass a local folder or check the network/HF cache") from None
        return self._loaded[key]
