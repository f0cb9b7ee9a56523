"""Teacher registry: the trainer and the evaluator ask for a teacher by name, never by class.

    teacher = load_teacher("dmphn", weights="../shared/weights/teachers/dmphn_1_2_4")
    out, feats = teacher(x, return_features=True)   # x (B, 3, H, W) in [0, 1]

Every teacher is returned frozen (``requires_grad=False``) and in eval mode, takes ``(B, 3, H, W)``
RGB in [0, 1] of any size and returns ``(B, 3, H, W)`` in about [0, 1] (not clamped), plus a list
of feature tensors for feature distillation; ``teacher.feature_channels`` gives their channels.

``fetch_weights`` gets a weights file from a URL or a local path and checks its sha256, so a
user can point the trainer at Restormer's official release. ``teacher_code_fingerprint`` names
the code a teacher's outputs depend on, so caches of those outputs go stale when it changes.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import inspect
import os
import re
import sys
import tempfile
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from training.models.dmphn import DMPHN, load_dmphn
from training.models.restormer import Restormer, load_restormer

__all__ = [
    "TEACHERS",
    "TeacherSpec",
    "WeightsError",
    "code_fingerprint",
    "default_weights",
    "describe_key_mismatch",
    "fetch_weights",
    "freeze",
    "list_teachers",
    "load_teacher",
    "sha256_file",
    "teacher_code_fingerprint",
]

_REPO = Path(__file__).resolve().parents[1]
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded, or did not match their expected sha256."""


@dataclass(frozen=True)
class TeacherSpec:
    """How to build and load one teacher."""

    build: Callable[[], nn.Module]  # random-init network (tests, shapes)
    load: Callable[[Path, str | torch.device], nn.Module]  # from a weights file or folder
    description: str
    weights_hint: str  # where the weights come from, for error messages
    default_weights: str | None = None  # path relative to the shared folder, when there is one
    folder: bool = False  # the weights are a folder of files, not one file
    # Peak memory of one forward pass on the CPU over the weights' own, per input pixel
    # (measured in float32 with glibc's default malloc; linear in the pixels from 128 px up).
    cpu_bytes_per_pixel: int = 0


def _shared_dir() -> Path:
    return Path(os.environ.get("SHARPCAM_SHARED", _REPO.parent / "shared"))


TEACHERS: dict[str, TeacherSpec] = {
    "dmphn": TeacherSpec(
        build=DMPHN,
        load=lambda path, device: load_dmphn(path, device=device),
        description="DMPHN 1-2-4 (Zhang et al., CVPR 2019), GoPro-trained, 5.4 M parameters",
        weights_hint="a folder with encoder_lv{1,2,3}.pkl and decoder_lv{1,2,3}.pkl",
        default_weights="weights/teachers/dmphn_1_2_4",
        folder=True,
        cpu_bytes_per_pixel=1_600,  # 1.4 GiB at 1280x720
    ),
    "restormer": TeacherSpec(
        build=Restormer,
        load=lambda path, device: load_restormer(path, device=device),
        description="Restormer (Zamir et al., CVPR 2022), official motion_deblurring.pth, 26.1 M",
        weights_hint=(
            "motion_deblurring.pth from "
            "https://github.com/swz30/Restormer/releases/download/v1.0/motion_deblurring.pth"
        ),
        # Full-resolution attention and a 2.66x gated FFN on up to 96 channels: 9.9 GiB at
        # 1280x720, more than most laptops have free.
        cpu_bytes_per_pixel=11_500,
    ),
}


def list_teachers() -> list[str]:
    return sorted(TEACHERS)


def default_weights(name: str) -> Path | None:
    """The weights this machine has for teacher ``name`` (under ``$SHARPCAM_SHARED``), if any."""
    spec = TEACHERS[name]
    if spec.default_weights is None:
        return None
    path = _shared_dir() / spec.default_weights
    return path if path.exists() else None


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher is never trained."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_teacher(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    sha256: str | None = None,
    random_init: bool = False,
) -> nn.Module:
    """Build teacher ``name`` and load its weights; returned frozen and in eval mode.

    Args:
        weights: a file, a folder (DMPHN) or a URL (downloaded and cached by `fetch_weights`).
            None uses the shared folder's copy when there is one.
        sha256: expected digest of a weights *file* (checked before loading).
        random_init: skip loading (shapes and tests only; the outputs mean nothing).
    """
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher {name!r}; known: {', '.join(list_teachers())}")
    spec = TEACHERS[name]
    if random_init:
        return freeze(spec.build()).to(device)
    if weights is None:
        weights = default_weights(name)
        if weights is None:
            raise WeightsError(f"teacher {name!r} needs weights: {spec.weights_hint}")
    if urllib.parse.urlparse(str(weights)).scheme not in _URL_SCHEMES:
        # `~/dmphn` was "does not exist" for a folder, while a file's `~` was expanded.
        weights = Path(weights).expanduser()
    if spec.folder and not Path(weights).is_dir():
        # fetch_weights would say "weights file not found", or load_parts list all six parts
        # as missing "in" a file: neither says that a folder is wanted.
        what = "is a file" if Path(weights).is_file() else "does not exist"
        raise WeightsError(f"teacher {name!r} needs {spec.weights_hint}; {weights} {what}")
    if not spec.folder and Path(weights).is_dir():
        # The loader's RuntimeError left the trainer's set-up with a traceback, not one line.
        raise WeightsError(f"teacher {name!r} needs {spec.weights_hint}; {weights} is a folder")
    if Path(weights).is_dir():
        if sha256 is not None:
            # Skipped without a word before: the caller believed the weights were verified.
            raise WeightsError(
                f"sha256 given for {weights}, a folder: a digest verifies one weights file"
            )
        path = Path(weights)
    else:
        path = fetch_weights(weights, sha256=sha256)
    try:
        # Loaded on the CPU and moved after, so that only the weights' own problems land here.
        model = spec.load(path, "cpu")
    except RuntimeError as exc:
        # A file that is no checkpoint, or one of another network: the loaders' RuntimeError was
        # a traceback in the trainer and cache_teacher, which report a WeightsError in one line.
        raise WeightsError(f"teacher {name!r}: {_shorten_key_lists(str(exc))}") from exc
    return freeze(model).to(device)


def describe_key_mismatch(
    missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str] = (), shown: int = 3
) -> str:
    """One line of a state dict that does not fit a network: each kind's count and its first
    ``shown`` entries (``missing keys: 412 (a, b, c, ...)``), kinds without entries left out."""
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = ", ..." if len(items) > shown else ""
            parts.append(f"{label}: {len(items)} ({', '.join(items[:shown])}{more})")
    return "; ".join(parts)


# The loaders' lists as they word them (`missing keys ['a', 'b']`): whole, a network of another
# architecture gave 20-40 KB of key names on one line. Their text is matched, not reworded at
# the source: a change to training/models/*.py changes the teacher's code fingerprint and throws
# away every cache of its outputs.
_KEY_LIST = re.compile(r"(missing keys|unexpected keys|shape mismatches) (\[[^\]]*\])")


def _shorten_key_lists(message: str) -> str:
    found: dict[str, list[str]] = {}
    for m in _KEY_LIST.finditer(message):
        try:
            found[m[1]] = [str(v) for v in ast.literal_eval(m[2])]
        except (ValueError, SyntaxError):
            return message
    if not found:
        return message
    head = message[: _KEY_LIST.search(message).start()].rstrip(" :;,")
    summary = describe_key_mismatch(
        found.get("missing keys", []),
        found.get("unexpected keys", []),
        found.get("shape mismatches", []),
    )
    return f"{head}: {summary}"


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]


def _canonical(node: object) -> str:
    # Not ast.dump: its text changes between Python versions (3.13 leaves out empty fields, 3.12
    # added type_params), and an interpreter upgrade alone would then look like new teacher
    # code. Empty fields are left out here in every version.
    if isinstance(node, ast.JoinedStr):
        # 3.12.1's parser adds an empty Constant to a format spec with a nested field
        # (f"{b!r:>{w}}"); 3.10, 3.11 and 3.13 do not. It changes nothing the code does.
        parts = [v for v in node.values if not (isinstance(v, ast.Constant) and v.value == "")]
        return f"JoinedStr(values={_canonical(parts)})" if parts else "JoinedStr()"
    if isinstance(node, ast.AST):
        fields = [
            f"{name}={_canonical(value)}"
            for name, value in ast.iter_fields(node)
            if value is not None and not (isinstance(value, list) and not value)
        ]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(v) for v in node) + "]"
    return repr(node)


def code_fingerprint(*sources: str) -> str:
    """Hex digest of Python source texts as the interpreter reads them: comments, docstrings
    and formatting do not count, any change to what the code does does.

    Caches of a teacher's outputs key on it: keyed on the raw text, every reworded comment
    would throw away hours of teacher time on a CPU."""
    h = hashlib.sha256()
    for source in sources:
        # dedent: inspect.getsource of a method keeps its class indentation
        tree = ast.parse(textwrap.dedent(source))
        _strip_docstrings(tree)
        h.update(_canonical(tree).encode())
        h.update(b"\0")
    return h.hexdigest()


def teacher_code_fingerprint(name: str) -> str:
    """``code_fingerprint`` of the module that defines teacher ``name``'s network and loader
    (``training/models/dmphn.py`` for ``dmphn``), read from disk now; ``""`` for a name that is
    not a registered teacher.

    Code the module imports from elsewhere is not covered: the networks are self-contained."""
    spec = TEACHERS.get(name)
    if spec is None:
        return ""
    module = inspect.getmodule(spec.build)
    source_file = inspect.getsourcefile(module) if module is not None else None
    if source_file is None:
        raise RuntimeError(f"teacher {name!r}: cannot find the source of its network")
    return code_fingerprint(read_source(Path(source_file)))


def read_source(path: Path) -> str:
    """A Python file's text as the interpreter reads it: a UTF-8 byte-order mark (which Python
    accepts and ``ast.parse`` of the decoded text does not) dropped, line endings universal."""
    return path.read_text(encoding="utf-8-sig")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_sha(path: Path, sha256: str | None, source: str) -> None:
    if sha256 is None:
        return
    actual = sha256_file(path)
    if actual.lower() != sha256.lower():
        raise WeightsError(
            f"sha256 mismatch for {source}: expected {sha256.lower()}, got {actual} "
            "(the file is damaged, incomplete or not the one you meant)"
        )


# What `fetch_weights` downloads; anything else is a local path (``C:\\w.pth`` parses with
# a scheme "c").
_URL_SCHEMES = ("http", "https", "file", "ftp")


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sharpcam" / "weights"


def fetch_weights(
    url_or_path: str | Path, *, sha256: str | None = None, dest_dir: str | Path | None = None
) -> Path:
    """Return a local weights file for ``url_or_path``, verified against ``sha256`` when given.

    A local path is checked in place. A URL (``http(s)://``, ``file://``) is streamed into a temp
    file in ``dest_dir`` (default ``~/.cache/sharpcam/weights``) and renamed once complete and
    verified, so an interrupted download never leaves a file that looks valid. A file already in
    ``dest_dir`` that matches ``sha256`` is reused without downloading.

    Raises:
        WeightsError: missing file, failed download, or sha256 mismatch (the message has both).
    """
    text = str(url_or_path)
    scheme = urllib.parse.urlparse(text).scheme
    if scheme not in _URL_SCHEMES:
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        _check_sha(path, sha256, str(path))
        return path

    dest_dir = Path(dest_dir) if dest_dir is not None else _default_cache()
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(text).path)).name or "weights.bin"
    dest = dest_dir / name
    if dest.is_file() and sha256 is not None:
        try:
            _check_sha(dest, sha256, str(dest))
            return dest
        except WeightsError:
            pass  # stale or damaged copy: download again

    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(text, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            got = _stream(resp, out, total, name)
        if total and got != total:
            # A connection closed early ends the read without an error: without a digest (the
            # trainer passes none) the cut file was cached under its final name, and loading it
            # failed as "not a PyTorch checkpoint".
            raise WeightsError(f"download of {text} incomplete: {got} of {total} bytes")
        _check_sha(tmp, sha256, text)
        os.replace(tmp, dest)
    except WeightsError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"cannot download {text}: {exc}") from exc
    return dest


def _stream(src, dst, total: int, label: str) -> int:
    """Copy ``src`` to ``dst`` in chunks with a tqdm bar (none when tqdm is absent); returns
    the number of bytes copied."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a training dependency
        tqdm = None
    bar = (
        tqdm(
            total=total or None, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False
        )
        if tqdm is not None
        else None
    )
    copied = 0
    try:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            copied += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return copied
