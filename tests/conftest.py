import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own index cache: no test sees another's cached split."""
    monkeypatch.setenv("GLUS_CACHE", str(tmp_path / "glus-cache"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """One synthetic dataset for the whole session (read-only for tests: copy it before breaking it)."""
    from glus.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, seed=0, videos=8, progress=False)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole module (modules that compare outputs byte for byte or run subprocesses)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
