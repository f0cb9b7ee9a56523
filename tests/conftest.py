"""Shared test setup: offscreen Qt, and skip markers for what CI does not have."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
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
    # The markers themselves, not `item.keywords`: keywords also hold parametrize ids and
    # names, so a case with the id "gpu" or "shared" was skipped without anyone marking it.
    has_gpu = _has_cuda() if any(item.get_closest_marker("gpu") for item in items) else False
    for item in items:
        if item.get_closest_marker("shared") and not has_shared:
            item.add_marker(skip_shared)
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(skip_gpu)


_BEFORE = pytest.StashKey["set[Path] | None"]()


def _checkout_files() -> set[Path]:
    """Files in the checkout, less the dot-folders and caches that tests rightly change."""
    found: set[Path] = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        found.update(Path(root, f).relative_to(REPO) for f in files)
    return found


def pytest_configure(config: pytest.Config) -> None:
    # OpenVINO caches its compiled models in the user cache folder (TensorRT its engines): the
    # tests, and the commands they start, write theirs to a folder of the session's own.
    cache = tempfile.mkdtemp(prefix="sharpcam-test-cache-")
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    os.environ["XDG_CACHE_HOME"] = os.environ["LOCALAPPDATA"] = cache


def pytest_sessionstart(session: pytest.Session) -> None:
    # A test's fake FFmpeg once wrote a file named "-" into the checkout's root on every run,
    # and it was committed: a test writes under tmp_path, never into the project.
    session.config.stash[_BEFORE] = (
        _checkout_files() if (REPO / "pyproject.toml").is_file() else None
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    new = sorted(str(p) for p in _checkout_files() - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the tests left files in the checkout {REPO}: {', '.join(new[:10])}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path of ../shared (tests using it must carry @pytest.mark.shared)."""
    return SHARED


pytest_plugins = ["pytester"]  # tests/test_conftest.py runs this file on a small test module


@pytest.fixture(autouse=True)
def _automatic_gc_restored():
    """An app test's bridge turns automatic collection off for its GUI-thread collector
    (app/_gc.py); the tests after it run with the interpreter's own, as they would alone."""
    yield
    gc.enable()


@pytest.fixture(autouse=True)
def _terminal_signals():
    """Each test starts as a process started from a terminal does: Ctrl-C (SIGINT) raising
    KeyboardInterrupt, SIGHUP at its default. A runner started in the background (`cmd &`,
    nohup) hands both over ignored, and the code rightly leaves a signal ignored at its start
    alone (a background job's Ctrl-C is not for it): the tests that send them then measured
    the runner, not the code. Their children inherit the defaults too."""
    import signal

    saved = {}
    for name, default in (("SIGINT", signal.default_int_handler), ("SIGHUP", signal.SIG_DFL)):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_IGN:
            saved[sig] = signal.signal(sig, default)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
