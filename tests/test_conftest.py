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


def _checkout_with_a_test(pytester: pytest.Pytester, body: str) -> None:
    """A checkout like this one (pyproject.toml, tests/conftest.py) with one test of ``body``."""
    (pytester.path / "pyproject.toml").write_text("")
    tests = pytester.mkdir("tests")
    (tests / "conftest.py").write_text(CONFTEST.read_text())
    (tests / "test_it.py").write_text(
        "from pathlib import Path\n\nREPO = Path(__file__).resolve().parents[1]\n\n\n"
        f"def test_it():\n{body}"
    )


def test_a_test_that_leaves_a_file_in_the_checkout_fails_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A test's fake FFmpeg wrote a file named "-" into the checkout's root on every run, and
    # it was committed: the session fails, naming the file, though every test passed.
    monkeypatch.setenv("SHARPCAM_SHARED", str(pytester.path / "no-shared"))
    _checkout_with_a_test(pytester, "    (REPO / '-').write_text('junk')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"ERROR: the tests left files in the checkout {pytester.path}: -"])


def test_files_in_dot_folders_and_caches_do_not_fail_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests rightly change these (bytecode, a tool's cache); only the project's files count.
    monkeypatch.setenv("SHARPCAM_SHARED", str(pytester.path / "no-shared"))
    _checkout_with_a_test(
        pytester,
        "    for folder in ('.cache', 'tests/__pycache__'):\n"
        "        (REPO / folder).mkdir(exist_ok=True)\n"
        "        (REPO / folder / 'left.bin').write_bytes(b'x')\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "left files" not in result.stdout.str()
