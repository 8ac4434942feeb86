"""Fixtures several test modules share."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP spinning on a busy 2-core machine costs 50×. Modules that
    train tiny models take it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
