from tests.generate.conftest import phantom, saved_small  # noqa: F401  (shared session fixtures)
