import pytest
import torch

from radgen.config import load_recipe
from radgen.models import build_model

REPORTS = ["the heart size is normal . no pleural effusion .", "mild cardiomegaly . small left effusion ."]


def tiny(name: str, *overrides: str):
    torch.manual_seed(0)
    return build_model(load_recipe(name, size="tiny", overrides=list(overrides)))


def pixels(model, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    size = model.encoder.image_size
    return torch.randn(batch, 3, size, size)


@pytest.fixture(scope="module")
def small():
    return tiny("radgen-small")
