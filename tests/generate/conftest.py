import pytest

from tests.generate.fixtures import phantom_manifest, tiny_model


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    """(manifest path, folder) of five rendered IU-Phantom studies (64 px)."""
    folder = tmp_path_factory.mktemp("phantom")
    return phantom_manifest(folder), folder


@pytest.fixture(scope="session")
def saved_small(tmp_path_factory):
    """A tiny radgen-small saved with save_pretrained, and the in-memory model."""
    model = tiny_model("radgen-small")
    folder = tmp_path_factory.mktemp("model") / "model"
    model.save_pretrained(str(folder))
    return folder, model
