"""The distillation pipeline (``python -m training.train``, ``.evaluate``, ``.export``, ...).

It needs the ``train`` extra; the app and ``engine/`` never import it.
"""

from __future__ import annotations

import importlib.util
import sys

# Run without torch, `python -m training.evaluate --help` ended in a traceback about it. Only
# commands are checked, and only the packages every one but `carry` imports at its top (the lent
# GPU machine installs kornia and pytorch-msssim from carried wheels after its first `training`
# import; `carry` packs data with OpenCV alone). Imported as a library, a missing package raises
# its own ModuleNotFoundError as before.
_NEEDS = {"torch": "torch", "yaml": "pyyaml"}
_NO_TORCH_COMMANDS = ("training.carry",)


def _command() -> str | None:
    """The module run by ``python -m``, while its package is imported; else None."""
    if not sys.argv or sys.argv[0] != "-m":
        return None
    argv = list(getattr(sys, "orig_argv", ()))
    return argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""


_run = _command()
if _run is not None and _run not in _NO_TORCH_COMMANDS:
    _missing = [pkg for module, pkg in _NEEDS.items() if importlib.util.find_spec(module) is None]
    if _missing:
        raise SystemExit(
            f"sharpcam: error: the training pipeline needs {' and '.join(_missing)}, not "
            f"installed here (Python {sys.executable}, searched {sys.path}): "
            'pip install -e ".[train]" (README, Training; for a CPU-only torch, '
            "pip install torch --index-url https://download.pytorch.org/whl/cpu first)"
        )
