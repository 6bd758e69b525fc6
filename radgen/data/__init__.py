"""Data layer: study records and manifests, dataset adapters, images, report text, torch datasets."""

from radgen.data.study import ImageRef, Study, read_manifest, write_manifest

__all__ = ["ImageRef", "Study", "read_manifest", "write_manifest"]

# Dataset adapters: `prepare(format, root, ...)` parses a dataset layout into studies. Only light
# modules are imported here so `import radgen.data` stays fast; images/text/dataset (numpy, torch)
# are imported from their own modules.
from radgen.data.adapters import FORMATS, prepare  # noqa: E402

__all__ += ["FORMATS", "prepare"]
