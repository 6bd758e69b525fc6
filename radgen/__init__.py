"""radgen: radiology report generation — data → train → generate → evaluate → explain → serve.

Five published recipes (BLIP-2 + LoRA, BLIP captioning, LLaVA two-stage, ResNet + mapper + LoRA,
ClipCap prefix tuning) and an offline default (`radgen-small`) share one core:
image encoder → connector → text decoder.
"""

from radgen.errors import RadgenError

__version__ = "0.1.0"
__all__ = ["RadgenError", "__version__"]
