"""Silence third-party noise on normal runs; radgen's own progress bars and messages stay.

A model load used to print transformers' "Loading weights" / GGUF conversion bars and a
`FutureWarning` about `is_gradient_checkpointing`; `generate` added a `UserWarning` about
`no_repeat_ngram_size`. None of it is actionable for a radgen user (the n-gram constraint applying
to new tokens only is what radgen wants: the prompt is image embeddings), so the CLI and
`radgen.load` call `quiet_third_party()` once. `radgen -v` (verbose) leaves everything on.

Only the named messages are filtered: an unexpected warning from a library still shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

# (category, regex on the start of the message) of warnings that are known and harmless for radgen.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (FutureWarning, r"`past_key_values` is deprecated"),
    (UserWarning, r"Passing `no_repeat_ngram_size` with `inputs_embeds`"),
    # torch.utils.tensorboard imports a deprecated pkg_resources / distutils API on some versions
    (UserWarning, r"pkg_resources is deprecated"),
    (DeprecationWarning, r"distutils Version classes are deprecated"),
)

_done = False


def quiet_third_party() -> None:
    """Hide transformers / huggingface_hub progress bars and info logs and the known warnings.

    Idempotent and cheap; imports transformers only if it is already imported or importable
    without side effects here (it is a core dependency).
    """
    global _done
    if _done:
        return
    _done = True
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    # huggingface_hub reads this when its progress bars are first created
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a core dependency; a broken install reports itself later
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    for name in ("accelerate", "timm", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def third_party_bars_hidden() -> Iterator[None]:
    """Hide the bar transformers draws while dequantising a GGUF file (it uses tqdm directly, so
    `disable_progress_bar` does not reach it) when quiet mode is on; radgen logs its own line instead."""
    if not _done:
        yield
        return
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = lambda *args, **kwargs: original(*args, **{**kwargs, "disable": True})
    try:
        yield
    finally:
        gguf_utils.tqdm = original
