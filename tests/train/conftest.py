import pytest
import torch

from tests.train.run_fake import collate


@pytest.fixture
def fake_collate():
    return collate


@pytest.fixture(autouse=True)
def _few_threads():
    # 2-core CI: extra intra-op threads only add contention for these tiny models
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
