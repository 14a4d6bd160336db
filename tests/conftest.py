import os

import pytest

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
