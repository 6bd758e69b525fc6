"""radgen's version string: `radgen.__version__`, written into saved models and run logs.

Its own module so that lower layers (radgen.models.persist, radgen.train.run_log) read it without
importing the package's top-level API (radgen/__init__.py reaches up to radgen.pipeline).
pyproject.toml's `version` is the same string.
"""

__version__ = "0.1.0"
