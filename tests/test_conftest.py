"""The skip markers skip what is marked, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


def test_only_marked_tests_are_skipped_for_a_missing_gpu_or_research_data(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A case whose parametrize id was "gpu" was skipped on every machine without CUDA, and
    # counted as nothing: the id is one of pytest's keywords, as a marker is.
    monkeypatch.setenv("SHARPCAM_SHARED", str(pytester.path / "no-shared"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, even on a machine with one
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    shared: research data\n    gpu: a CUDA GPU\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("device", ["gpu", "cpu", "shared"])
        def test_named_like_a_marker(device):
            assert device

        @pytest.mark.gpu
        def test_marked_gpu():
            pass

        @pytest.mark.shared
        def test_marked_shared():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=3, skipped=2)
    result.stdout.fnmatch_lines(["*needs a CUDA GPU*", "*needs the research data*"])
