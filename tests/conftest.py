"""Shared test setup: offscreen Qt, and skip markers for what CI does not have."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Qt aborts the whole process without a display unless this is set before QApplication exists.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARPCAM_SHARED", REPO.parent / "shared"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_shared = pytest.mark.skip(
        reason=f"needs the research data in {SHARED} (not on this machine)"
    )
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    has_shared = (SHARED / "README.md").is_file()
    has_gpu = _has_cuda() if any("gpu" in item.keywords for item in items) else False
    for item in items:
        if "shared" in item.keywords and not has_shared:
            item.add_marker(skip_shared)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path of ../shared (tests using it must carry @pytest.mark.shared)."""
    return SHARED
