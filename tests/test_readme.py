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


def test_a_wheel_carries_every_file_the_app_and_engine_read() -> None:
    # A non-editable install (`pip install .`, pipx) had only the .py files: no shipped
    # model, no demo clip, no icons, so the app could not sharpen anything nor start.
    import fnmatch
    import json

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    packages, data = setuptools["packages"]["find"]["include"], setuptools["package-data"]

    def carried(path: Path) -> bool:
        rel = path.relative_to(REPO)
        package = rel.parts[0]
        inside = "/".join(rel.parts[1:])
        return any(fnmatch.fnmatch(package, p) for p in packages) and any(
            fnmatch.fnmatch(inside, pattern) for pattern in data.get(package, [])
        )

    from app.camera_list import DEMO_CLIP
    from app.window import ICON_PATH
    from engine.backends import weights_dir

    needed = [DEMO_CLIP, ICON_PATH, *ICON_PATH.parent.glob("*.svg")]
    needed += [weights_dir() / "manifest.json", weights_dir() / "MODEL_CARD.md"]
    manifest = json.loads((weights_dir() / "manifest.json").read_text(encoding="utf-8"))
    needed += [weights_dir() / name for name in manifest["files"]]
    needed += list((REPO / "training" / "configs").glob("*.yaml"))
    assert len(needed) > 10 and all(p.is_file() for p in needed)
    missing = [str(p.relative_to(REPO)) for p in needed if not carried(p)]
    assert not missing, f"not in the wheel's package data: {missing}"
    # Nothing the tests or the research data hold goes in.
    assert not any(p.startswith(("tests", "runs", "data")) for p in packages)


def test_the_app_command_installs_an_ffmpeg_for_the_sound() -> None:
    # `process` puts a video's sound back with FFmpeg; with imageio-ffmpeg in the dev extra
    # only, the README's app install wrote every video silent unless FFmpeg was on the PATH.
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    app = _code_blocks((REPO / "README.md").read_text(encoding="utf-8"))[0]
    extras = re.search(r'pip install -e "\.\[([^\]]*)\]"', app).group(1).split(",")
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra.strip()]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}
    assert "imageio-ffmpeg" in names

    from engine.remux import find_ffmpeg

    assert find_ffmpeg() is not None
