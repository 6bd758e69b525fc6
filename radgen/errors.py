"""User-facing errors.

Every error a user can fix (bad file, bad config key, missing weights) is a `RadgenError` whose
message is one line naming the file or key and what to do. The CLI prints it without a traceback.
"""


class RadgenError(Exception):
    """An error the user can act on; `str(err)` is a single line naming the cause and the fix."""


class ConfigError(RadgenError):
    """A recipe/config file or override is invalid."""


class DataError(RadgenError):
    """An input file (image, report, manifest, dataset folder) is missing or unreadable."""


class WeightsError(RadgenError):
    """Model weights or a checkpoint are missing or do not match the model."""
