"""Data layer: study records and manifests, dataset adapters, images, report text, torch datasets."""

from radgen.data.study import ImageRef, Study, read_manifest, write_manifest

__all__ = ["ImageRef", "Study", "read_manifest", "write_manifest"]
