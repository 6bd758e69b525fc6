import pytest

from tests.serve.tiny_model import tiny_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def service(model_dir):
    from radgen.serve import ReportService

    return ReportService.from_directory(model_dir)
