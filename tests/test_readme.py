"""The README's two commands stay what CI runs and what a new user types."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _code_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_the_two_commands() -> None:
    blocks = _code_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    app, tests = blocks[0], blocks[1]
    assert app.startswith("python3 -m venv .venv") and app.endswith("python main.py")
    assert tests.startswith("python3 -m venv .venv") and tests.endswith("python -m pytest -q")
    # CPU-only on a fresh machine: torch pinned to the local CPU build before the extras, which
    # would otherwise pull the registry's newest CUDA build.
    assert "torch==2.13.0" in tests and tests.index("torch==2.13.0") < tests.index(".[")
    assert "gpu" not in app and "gpu" not in tests


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _code_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    # .ci/run finds the command in the README itself; check it finds exactly this one.
    pattern = re.search(r'grep -m1 -E "([^"]+)" README.md', script).group(1)
    found = subprocess.run(
        ["grep", "-m1", "-E", pattern, "README.md"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert found == blocks[1]
    assert 'bash -c "$test_cmd' in script
