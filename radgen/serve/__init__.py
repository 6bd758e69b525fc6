"""Serving: `radgen serve` (REST API + offline web page) over a bounded, batching request queue.

    from radgen.serve import ReportService, ServeSettings, create_app
    app = create_app(ReportService.from_directory("out/model"), ServeSettings(token="s3cret"))

See docs/serve.md.
"""

from importlib import import_module
from typing import Any

# Loaded on first use: fastapi is the optional [serve] extra, and `radgen demo` / the CLI import
# radgen.serve.inference and radgen.serve.cli without needing it.
_EXPORTS = {
    "ServeSettings": "radgen.serve.app", "create_app": "radgen.serve.app",
    "ReportService": "radgen.serve.inference", "model_card": "radgen.serve.inference",
    "resolve_model_dir": "radgen.serve.inference", "sniff_kind": "radgen.serve.inference",
    "BatchQueue": "radgen.serve.queue", "QueueFullError": "radgen.serve.queue",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'radgen.serve' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
