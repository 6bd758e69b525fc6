"""Serving: `radgen serve` (REST API + offline web page) over a bounded, batching request queue.

    from radgen.serve import ReportService, ServeSettings, create_app
    app = create_app(ReportService.from_directory("out/model"), ServeSettings(token="s3cret"))

See docs/serve.md.
"""

from radgen.serve.app import ServeSettings, create_app
from radgen.serve.inference import ReportService, model_card, resolve_model_dir, sniff_kind
from radgen.serve.queue import BatchQueue, QueueFullError

__all__ = ["BatchQueue", "QueueFullError", "ReportService", "ServeSettings", "create_app", "model_card", "resolve_model_dir", "sniff_kind"]
