"""The distillation pipeline (``python -m training.train``, ``.evaluate``, ``.export``, ...).

It needs the ``train`` extra; the app and ``engine/`` never import it. Only torch and PyYAML are
checked here: the lent GPU machine's Python installs kornia and pytorch-msssim from carried wheels
after its first ``training`` import (``training/gpu_session.sh``).
"""

from __future__ import annotations

import importlib.util
import sys

_NEEDS = {"torch": "torch", "yaml": "pyyaml"}
_missing = [
    package for module, package in _NEEDS.items() if importlib.util.find_spec(module) is None
]
if _missing:
    _message = (
        f"the training pipeline needs {', '.join(_missing)}, not installed here: "
        "pip install torch==2.13.0 (a CPU build; plain 'torch' may pull CUDA) and "
        "pip install -e '.[train]'"
    )
    # `python -m training.evaluate --help` ended in a traceback about torch; as a command it
    # says what to install, imported as a library it is an ImportError with the same words.
    if sys.argv and sys.argv[0] == "-m":
        raise SystemExit(f"sharpcam: error: {_message}")
    raise ImportError(_message)
