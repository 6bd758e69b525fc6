"""radgen: radiology report generation — data → train → generate → evaluate → explain → serve.

Five published recipes (BLIP-2 + LoRA, BLIP captioning, LLaVA two-stage, ResNet + mapper + LoRA,
ClipCap prefix tuning) and an offline default (`radgen-small`) share one core:
image encoder → connector → text decoder.

    import radgen
    pipe = radgen.load("radgen-small")   # shipped model, a saved model folder or a training run
    pipe("chest.dcm")["findings"]        # path, PIL image, numpy array or pydicom Dataset; or a list

`import radgen` stays light: torch and transformers load on the first `radgen.load`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from radgen.errors import RadgenError
from radgen.version import __version__

if TYPE_CHECKING:
    from radgen.pipeline import ReportPipeline

__all__ = ["RadgenError", "__version__", "load"]


def load(model: str | None = "radgen-small", **kwargs: Any) -> "ReportPipeline":
    """A pipeline that drafts a report per image; see radgen.pipeline.load for the options."""
    from radgen.pipeline import load as load_pipeline

    return load_pipeline(model, **kwargs)
