"""Inference backends: one small protocol, a plain registry, and `auto` selection.

A backend turns one RGB frame into its sharpened twin:

    be = create_backend("auto", model="weights/student_fast.onnx")
    print(be.provider)            # what really runs, e.g. "OpenVINO · CPU · bf16"
    out = be.process(rgb)         # (H, W, 3) uint8 -> (H, W, 3) uint8, same shape
    be.close()

Backends: ``onnx`` (ONNX Runtime: TensorRT → CUDA → DirectML → CoreML → CPU), ``openvino``
(native runtime, static shapes compiled per frame size), ``torch`` (TorchScript; CUDA fp16
channels_last), ``unsharp`` (classic unsharp mask, the baseline) and ``passthrough``.
Blending with `strength` is the pipeline's job, not the backend's.

Model files are verified against the `manifest.json` beside them before any runtime sees them
(see `engine.manifest`), and checked against the model contract in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import inspect
import logging
import math
import os
import pickle
import re
import sys
import threading
import time
import warnings
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from engine.manifest import (
    _SUFFIX_FORMAT,
    ManifestEntry,
    ModelError,
    ModelIntegrityError,
    load_manifest,
    onnx_external_data,
    verify_file,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "ModelError",
    "ModelIntegrityError",
    "ModelFile",
    "OnnxBackend",
    "OpenVinoBackend",
    "PassthroughBackend",
    "SCALE_LADDER",
    "ScaledBackend",
    "TorchBackend",
    "UnsharpBackend",
    "carry_warnings",
    "check_onnxruntime_install",
    "collect_warnings",
    "create_backend",
    "list_backends",
    "model_folder_message",
    "open_model",
    "parse_scale",
    "register_backend",
    "resolve_default_model",
    "scaled_size",
    "warm_up",
    "warn_user",
    "weights_dir",
]

MIN_SIZE = 16  # contract: models accept any H, W >= 16; smaller frames are padded up to it
#: Frames of more pixels than this run through the model in overlapping tiles of
#: :data:`TILE_SIDE`: a whole 12000x9000 photo took 7.6 GB under OpenVINO (about 68 bytes a
#: pixel), so a 200-megapixel one was killed for memory with no word. 8K (33 MP) runs whole.
TILE_ABOVE_PIXELS = 40_000_000
TILE_SIDE = 3072
#: Where tiles start: the students' padding multiple (32; 16 for ``student``), so their strided
#: stages see the whole frame's grid.
TILE_ALIGN = 32
#: Pixels of context each tile has beyond the part of it kept (the students' deepest blocks work
#: at 1/32 of the size).
TILE_MARGIN = 256

ORT_GPU_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)
ORT_PROVIDER_ORDER = (*ORT_GPU_PROVIDERS, "CPUExecutionProvider")
#: The providers whose mere presence makes the default the GPU student. Not CoreML: every
#: onnxruntime for macOS lists it, Macs or not with a GPU it runs on, and the GPU student (6x
#: the CPU student's work) under it was never measured; ``device="gpu"`` (the engine API) or
#: `--backend onnx --model weights/student.onnx` still asks for it.
ORT_AUTO_GPU_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
)
DEVICES = ("auto", "cpu", "gpu", "cuda")

log = logging.getLogger(__name__)


# catch_warnings swaps process-wide state and restores it on exit: two threads inside it at once
# (two models loading on the app's worker threads) restore each other's filters in the wrong
# order and leave them swapped for good. Every use here takes this lock.
_CATCH_WARNINGS = threading.Lock()


class _Collector:
    """One :func:`collect_warnings` block's messages. Threads carried into it (see
    :func:`carry_warnings`) append from their own threads, and may outlive the block."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.open = True
        self.lock = threading.Lock()

    def add(self, message: str) -> bool:
        """Append while the block runs; False once it has ended (nobody reads the list then)."""
        with self.lock:
            if self.open:
                self.messages.append(message)
            return self.open

    def close(self) -> None:
        with self.lock:
            self.open = False


# Where warn_user sends its messages in this thread (or asyncio task), None: Python warnings.
_COLLECTED: contextvars.ContextVar[_Collector | None] = contextvars.ContextVar(
    "sharpcam_backend_warnings", default=None
)


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Collect what building a backend warns a person about, in this thread only (and in the
    threads it starts through :func:`carry_warnings`).

    Inside the block, :func:`warn_user` appends its message to the yielded list instead of
    issuing a Python warning. The app loads models on a worker thread while its GUI thread runs:
    ``warnings.catch_warnings`` swaps process-wide state (it would record the GUI thread's
    warnings, and two overlapping uses restore each other's filters in the wrong order), and
    the once-per-location filter would hide a warning the second time a model loads.
    """
    collector = _Collector()
    token = _COLLECTED.set(collector)
    try:
        yield collector.messages
    finally:
        collector.close()
        _COLLECTED.reset(token)


def carry_warnings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` bound to this thread's :func:`collect_warnings` block, for another thread to run.

    A new thread starts with an empty context (Python < 3.14), so a :func:`warn_user` in a
    thread that a backend starts while it loads (``threading.Thread(target=fn)``, an executor)
    went to Python's warnings instead of the loading thread's list. Start it with
    ``target=carry_warnings(fn)``: its warnings are collected like the caller's own, and a
    warning it issues after the block has ended becomes a Python warning instead of being lost.
    """
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> Any:
        # A context can be entered by one thread at a time: each call gets its own copy (the
        # collector inside is the same object, so every copy appends to the caller's list).
        return context.copy().run(fn, *args, **kwargs)

    return run


def warn_user(message: str) -> None:
    """Warn about something a person should know (a model loaded unverified, the int8 file
    refused): to :func:`collect_warnings`' list when one is active here, else a
    ``warnings.warn`` that names the first line outside this module (the caller's).

    Counted, not given: a fixed stacklevel named a line in this file when `auto` reached the
    same check one call deeper than `create_backend` does."""
    collector = _COLLECTED.get()
    if collector is not None and collector.add(str(message)):
        return
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, stacklevel=level)


class BackendError(RuntimeError):
    """A backend cannot be created or cannot run (runtime missing, no device, all failed)."""


@runtime_checkable
class Backend(Protocol):
    """What the pipeline calls. `process` may return an internal buffer reused next call."""

    name: str  # registry name
    provider: str  # what really runs, human readable

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """`(H, W, 3)` uint8 RGB, C-contiguous -> `(H, W, 3)` uint8 RGB, same shape."""
        ...

    def close(self) -> None: ...


def warm_up(backend: Any, size: tuple[int, int], *, strict: bool = False) -> None:
    """One ``backend.process`` call on a blank frame of ``size`` ``(W, H)``, before a stream:
    OpenVINO compiles the model for a frame size on its first call (a second or more on two
    cores), whose frames a live stream would drop. A failure is left for the first real frame
    to meet and report (the engine then streams in passthrough, with a warning); ``strict``
    raises it instead (a backend about to replace one that works)."""
    w, h = (int(v) for v in size)
    try:
        # OpenVINO runs a size met once on its dynamic-shape model and compiles it on the
        # second call: asked now, the stream's first frame does not wait for that compile.
        prepare = getattr(backend, "prepare", None)
        if callable(prepare):
            prepare((w, h))
        backend.process(np.zeros((h, w, 3), np.uint8))
    except Exception:  # noqa: BLE001
        if strict:
            raise
        log.debug("the warm-up call failed", exc_info=True)


# --------------------------------------------------------------------------- model files


def weights_dir() -> Path:
    """The shipped weights folder (`$SHARPCAM_WEIGHTS` overrides the repo's `weights/`)."""
    env = os.environ.get("SHARPCAM_WEIGHTS")
    # expanduser: a service file or an IDE run configuration hands "~/..." over unexpanded
    # (only a shell expands it), and --model paths are expanded too.
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "weights"


def resolve_default_model(
    prefer_gpu: bool, suffix: str = ".onnx", *, int8: bool = False
) -> Path | None:
    """The shipped model for this machine: `student.onnx` when a GPU provider is active, else
    `student_fast.onnx`; whichever exists when the preferred one does not; None when neither.
    ``suffix=".ts"`` picks the TorchScript files (`student.ts`, `student_fast.ts`) instead.
    ``int8`` (CPU only): `student_fast_int8.onnx` first, when it ships.
    """
    names: tuple[str, ...] = (f"student{suffix}", f"student_fast{suffix}")
    if not prefer_gpu:
        names = names[::-1]
        if int8 and suffix == ".onnx" and _int8_matches_float():
            names = (INT8_NAME, *names)
    for name in names:
        path = weights_dir() / name
        if path.is_file():
            return path
    return None


def _default_model_to_run(gpu: bool, suffix: str = ".onnx") -> Path | None:
    """`resolve_default_model`, with a warning when the student for this device is missing and
    the other one stands in: the GPU student on a CPU (6x the work) ran with no word, the live
    stream shrinking its processing size to keep up."""
    path = resolve_default_model(gpu, suffix=suffix)
    wanted = f"student{suffix}" if gpu else f"student_fast{suffix}"
    if path is not None and path.name != wanted:
        role = "CPU" if gpu else "GPU"
        extra = "" if gpu else "; it is 6x the work of the CPU student, slower here"
        warn_user(
            f"{wanted} not found in {path.parent}: using {path.name}, the {role} student{extra}"
        )
    return path


INT8_NAME = "student_fast_int8.onnx"
_CPU_PRECISION: dict[str, str | None] = {}


def _int8_matches_float() -> bool:
    """The int8 file is the float CPU student's weights: the manifest gives both the same
    training-config digest (a leftover int8 file of older weights must not win)."""
    try:
        manifest = load_manifest(weights_dir())
    except ModelError:
        return False  # the float model's own load reports the manifest problem
    if manifest is None:
        # Nothing says the two hold the same weights (a folder of copied files, an int8 file
        # left from older weights), and the float file is the one a person put there to run.
        return False
    int8, flt = manifest.files.get(INT8_NAME), manifest.files.get("student_fast.onnx")
    if int8 is None or flt is None:
        # An unlisted int8 file beside a listed float one is not ours (and would load
        # unverified); a listed int8 file beside an unlisted float one has nothing to match.
        return False
    # The float file it was quantized from, by its sha256 (`training.export` writes it): the
    # config digest alone matched an int8 file of another run of the same config, and two
    # hand-made entries without digests (None == None).
    source = int8.extra.get("quantized_from")
    if source is not None:
        if str(source).lower() != flt.sha256:
            warn_user(
                f"{INT8_NAME} was quantized from another file than this student_fast.onnx "
                "(its quantized_from is not this file's sha256); using the float model"
            )
            return False
        return True
    if int8.config_digest is None or int8.config_digest != flt.config_digest:
        why = "config digests differ" if int8.config_digest else "no config digest says so"
        warn_user(
            f"{INT8_NAME} may hold other weights than student_fast.onnx ({why}); using the "
            "float model"
        )
        return False
    return True


_OV_CORE: Any = None
_OV_CORE_LOCK = threading.Lock()


def _ov_core() -> Any:
    """The process's one ``openvino.Core``, made on first use and never destroyed.

    OpenVINO's CPU plugin gives the compiling thread an alternate signal stack and, when its
    ``Core`` is destroyed, puts back the one it found. Two cores closed in the order they were
    opened (``bench`` closing its rows, the app swapping models) left the thread pointing at an
    unmapped stack, and the next Ctrl-C (Python's handlers run on that stack) was a segfault.
    One core for every backend (what OpenVINO recommends anyway: each Core loads its own
    plugins) leaves nothing to put back; compiled models still go with their backend.
    """
    global _OV_CORE
    with _OV_CORE_LOCK:
        if _OV_CORE is None:
            import openvino as ov

            _OV_CORE = ov.Core()
        return _OV_CORE


def openvino_cpu_precision() -> str | None:
    """The precision OpenVINO picks by itself on this CPU: ``"bf16"`` (AVX512-BF16 / AMX),
    ``"f16"`` (some ARM), ``"f32"`` (the rest, AVX2-VNNI-2 CPUs included, though they list a
    BF16 capability); None without OpenVINO. Asked once, no model compiled."""
    if "CPU" not in _CPU_PRECISION:
        try:
            hint = _ov_core().get_property("CPU", "INFERENCE_PRECISION_HINT")
            _CPU_PRECISION["CPU"] = _ov_precision_name(hint)
        except Exception:  # noqa: BLE001 - no OpenVINO or no CPU plugin
            _CPU_PRECISION["CPU"] = None
    return _CPU_PRECISION["CPU"]


def _ov_precision_name(hint: Any) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``) as the short name used here: bf16."""
    text = str(hint)
    names = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
    return next((short for long, short in names.items() if f"'{long}'" in text), text)


def prefer_int8(precision: str | None = None) -> bool:
    """Whether OpenVINO's default model here is the int8 student: when OpenVINO chooses the
    precision itself (``precision`` None) and picks float32 or bf16 (`openvino_cpu_precision`),
    the x86 cases measured. On a 2-core Xeon, model-only ms at 1280x720, medians: forced f32
    36.4 (int8) against 51.0 (float); its own bf16 32.4 against 37.4; on held-out blur through
    this backend int8 costs 0.01-0.02 dB (the int8 file keeps its finest scale in float). ARM's
    f16 keeps the float model: not measured there. A forced precision keeps the float model:
    the caller chose the runtime."""
    return precision is None and openvino_cpu_precision() in ("f32", "bf16")


@dataclass(frozen=True)
class ModelFile:
    """A model file that passed the manifest check (done once per load, never per frame)."""

    path: Path
    format: str  # onnx | torchscript
    entry: ManifestEntry | None  # None: no manifest lists it (a user's own model)


def open_model(model: str | Path | ModelFile) -> ModelFile:
    """Verify a model file against the `manifest.json` beside it.

    Raises:
        ModelError: ``model file not found: PATH``, a folder (`model_folder_message`), an
            unreadable manifest, or an ONNX weights file (external data) it names is missing.
        ModelIntegrityError: listed in the manifest with a different sha256.
    """
    if isinstance(model, ModelFile):
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        # verify_file would call it "not found", and the file meant is likely right inside.
        raise ModelError(model_folder_message(path))
    entry = verify_file(path)
    fmt = entry.format if entry else _SUFFIX_FORMAT.get(path.suffix.lower(), "onnx")
    if entry is None:
        if fmt == "onnx" and path.suffix.lower() != ".xml":
            # A listed model's weights files are checked by verify_file. Left to the runtime, a
            # model moved without its .onnx.data was "External data path does not exist" under
            # ONNX Runtime and "Invalid usage of method for externally stored data" under
            # OpenVINO (`auto` too).
            for location in onnx_external_data(path):
                if not (path.parent / location).is_file():
                    raise ModelError(
                        f"cannot load model {path}: its weights file {location} is missing "
                        f"(next to the .onnx, in {path.parent})"
                    )
        warn_user(f"{path}: not listed in a manifest.json beside it; loading it unverified")
    return ModelFile(path=path, format=fmt, entry=entry)


#: Suffixes of the files a backend here can run (OpenVINO's IR: an ``.xml`` beside its ``.bin``).
_MODEL_SUFFIXES = (*_SUFFIX_FORMAT, ".xml")


def model_folder_message(path: str | Path, limit: int = 8) -> str:
    """Why the folder ``path`` cannot be a model, naming the model files it holds (the first
    ``limit``), or saying it holds none."""
    folder = Path(path)
    try:
        names = sorted(
            f.name
            for f in folder.iterdir()
            if f.suffix.lower() in _MODEL_SUFFIXES
            and f.is_file()
            and (f.suffix.lower() != ".xml" or f.with_suffix(".bin").is_file())
        )
    except OSError:
        return f"model {path} is a folder: give a model file, not a folder"
    if not names:
        kinds = ", ".join(_MODEL_SUFFIXES)
        return f"model {path} is a folder and holds no model file ({kinds}): give a model file"
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return (
        f"model {path} is a folder: give one of the model files in it "
        f"({', '.join(names[:limit])}{more})"
    )


def _shape_str(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _check_contract(
    path: Path,
    inputs: Sequence[tuple[str, Sequence[Any], str]],
    outputs: Sequence[tuple[str, Sequence[Any], str]],
) -> None:
    """Refuse a model that breaks the contract: one input, one output, `(1, 3, H, W)` float,
    the output as large as the input.

    Each tensor is `(name, shape, dtype)`; a dimension is an int when static, else a str (a
    symbol's name, or ``"?"`` for an unnamed one).
    """
    pre = f"{path}: breaks the model contract:"
    for side, tensors in (("input", inputs), ("output", outputs)):
        if len(tensors) != 1:
            names = ", ".join(repr(t[0]) for t in tensors)
            raise ModelError(f"{pre} expected 1 {side}, got {len(tensors)} ({names})")
        name, shape, dtype = tensors[0]
        if len(shape) != 4:
            raise ModelError(
                f"{pre} {side} {name!r} must be 4-D (1, 3, H, W), got {_shape_str(shape)}"
            )
        if not isinstance(shape[1], int) and isinstance(shape[3], int) and shape[3] <= 4:
            # Channels last with dynamic N, H, W (TensorFlow's layout) passes every check of a
            # static dimension below; it then failed the first frame (ONNX Runtime) or the
            # compile (OpenVINO) with a message about dimension 3 or a convolution.
            raise ModelError(
                f"{pre} {side} {name!r} is channels last (NHWC): must be channels first "
                f"(1, 3, H, W), got {_shape_str(shape)}"
            )
        if isinstance(shape[1], int) and shape[1] != 3:
            raise ModelError(
                f"{pre} {side} {name!r} must have 3 channels (1, 3, H, W), got {_shape_str(shape)}"
            )
        if isinstance(shape[0], int) and shape[0] != 1:
            raise ModelError(
                f"{pre} {side} {name!r} must have batch 1 (1, 3, H, W), got {_shape_str(shape)}"
            )
        if dtype not in ("float32", "float16"):
            raise ModelError(f"{pre} {side} {name!r} must be float32 or float16, got {dtype}")
    _check_output_size(pre, inputs[0][1], outputs[0][0], outputs[0][1])


def _check_output_size(
    pre: str, in_shape: Sequence[Any], out_name: str, out_shape: Sequence[Any]
) -> None:
    """Refuse an output whose declared H or W cannot follow the input's: a fixed size where the
    input's differs or is dynamic, or the input's other spatial symbol (`(1, 3, W, H)`).

    Judged from declarations only: a trial run would make TensorRT build an engine for one
    more size. Unnamed or unrelated symbols say nothing, and such a model loads.
    """
    named = {d for d in in_shape[2:] if isinstance(d, str) and d not in ("?", "...")}
    for axis in (2, 3):
        i, o = in_shape[axis], out_shape[axis]
        if isinstance(o, int):
            bad = o != i  # also a dynamic input: any other frame size comes back resized
        else:
            bad = o != i and o in named  # the symbols of one model name one value each
        if bad:
            # An unnamed dynamic dimension reads as the letter the contract gives it.
            want = [d if d != "?" else hw for d, hw in zip(in_shape[2:], "HW", strict=True)]
            raise ModelError(
                f"{pre} output {out_name!r} must be {_shape_str((1, 3, *want))} "
                f"like the input, got {_shape_str(out_shape)}"
            )


#: The line a TorchScript error's own message starts on (``RuntimeError: shape ...``,
#: ``builtins.ValueError: ...``), below the model code it quotes.
_TORCHSCRIPT_ERROR = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception)\b")


def _one_line(exc: BaseException) -> str:
    """A runtime's error message as one line. OpenVINO's spans several, most of them the C++
    source locations it passed through (``Exception from src/...cpp:84:``); TorchScript's
    quotes the model's code twice, with ``<--- HERE`` marks, above the error itself. Errors
    reach a person as one line (the CLI's stderr, the app's warning)."""
    text = str(exc)
    if "Traceback of TorchScript" in text:
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if _TORCHSCRIPT_ERROR.match(line)]
        if starts:
            text = "\n".join(lines[starts[-1] :])
    lines = (line.strip() for line in text.splitlines())
    kept = [line for line in lines if line and not line.startswith("Exception from ")]
    return " ".join(kept) or type(exc).__name__


#: What installs each model backend's runtime: said where it is missing, by that backend named
#: and by ``auto`` alike (auto's "not installed" lines had named none). The torch one is the CPU
#: build: an unpinned ``pip install torch`` on Linux fetches the CUDA one (GBs).
INSTALL_HINTS = {
    "onnx": "pip install onnxruntime (or onnxruntime-gpu)",
    "openvino": "pip install openvino (extra: sharpcam[openvino])",
    "torch": "pip install torch --index-url https://download.pytorch.org/whl/cpu "
    "(a CPU build; the CUDA one for a GPU)",
}


def _require(module: str, backend: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = INSTALL_HINTS[backend]
        raise BackendError(f"backend {backend!r} needs {module!r}: {hint} ({exc})") from exc


def physical_cores() -> int | None:
    """Physical cores this process may use (hyper-threads share one core's FPUs); None where
    they cannot be counted (Windows and macOS without ``psutil``).

    Not the logical count there: ONNX Runtime's own default is the physical cores, and the
    logical count gave a hyper-threaded PC twice the threads ONNX Runtime would have chosen."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    logical = len(cpus) or os.cpu_count() or 1
    try:
        import psutil  # optional; counts cores on every OS

        n = psutil.cpu_count(logical=False)
        if n:
            return max(1, min(n, logical))
    except ImportError:
        pass
    if sys.platform.startswith("linux") and cpus:
        cores = set()
        for cpu in cpus:
            f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
            try:
                cores.add(f.read_text().strip())
            except OSError:
                return logical
        return max(1, len(cores))
    return logical if cpus else None


def user_cache_dir() -> Path:
    """Per-user cache folder for SharpCam (TensorRT engines and OpenVINO's compiled models live
    under it)."""
    # An empty or relative variable is ignored (the XDG spec says so): taken as given, the cache
    # went to ./sharpcam in whatever folder the app was started from.
    if sys.platform == "win32":
        env, default = os.environ.get("LOCALAPPDATA", ""), Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        env, default = "", Path.home() / "Library" / "Caches"
    else:
        env, default = os.environ.get("XDG_CACHE_HOME", ""), Path.home() / ".cache"
    base = Path(env) if os.path.isabs(env) else default
    return base / "sharpcam"


def _writable_folder(folder: Path) -> bool:
    """Make ``folder`` (a cache's) if it is missing; whether this process can write there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


#: What OpenVINO's compiled-model cache may hold before its least recently used entries go. One
#: entry per model and size (on an AVX2 CPU, --threads and --precision f32 found the default's),
#: about the model file's size whatever the frame's (1.5 MB for the int8 student, 3.4 for
#: student_fast, 4.3 for student): a start writes two or three (the load's trial size, the
#: stream's, any-size), each scale --scale auto steps to one, and so does every size met twice
#: (a camera's new resolution, a folder of mixed photos).
OPENVINO_CACHE_BYTES = 128 * 2**20


def _prune_cache(folder: Path, limit: int) -> None:
    """Delete the least recently used ``.blob`` files of ``folder`` until it holds ``limit`` bytes
    at most; the newest always stays. Errors are ignored: another process may prune or read the
    same folder (a file it has open stays readable on POSIX, and cannot be deleted on Windows)."""
    blobs = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".blob") and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    # A hit reads the file, which moves its atime (at most daily under Linux's
                    # relatime); where access times are off, the write time alone says.
                    blobs.append((max(st.st_atime, st.st_mtime), st.st_size, entry.path))
    except OSError:
        return
    total = sum(size for _, size, _ in blobs)
    for _, size, path in sorted(blobs)[:-1]:
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            try:
                os.unlink(path)
            except PermissionError:
                # OpenVINO writes its entries read-only, which Windows will not delete.
                os.chmod(path, 0o600)
                os.unlink(path)
            total -= size


# --------------------------------------------------------------------------- base classes


class _BackendBase:
    """Idempotent close and context manager for every built-in backend."""

    name = "base"
    provider = "?"
    needs_model = False
    _closed = False

    @classmethod
    def available(cls) -> bool:
        """Whether the runtime this backend needs can be imported."""
        return True

    def process(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> _BackendBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider!r}>"


def _check_frame(rgb: np.ndarray) -> None:
    # Attribute checks only: cheap enough for the hot path, and they turn a bad frame into a
    # readable message instead of a runtime's stack trace.
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or rgb.shape[2] != 3
    ):
        got = (rgb.shape, rgb.dtype) if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected (H, W, 3) uint8, got {got}")


class _ModelBackend(_BackendBase):
    """Shared frame handling for backends that run a model: checks and tiny-frame padding."""

    needs_model = True
    model: ModelFile
    #: Frames whose model output held NaN or an infinity; the input's values stand in there
    #: (the engine warns once when this grows). Counted, never raised: a model that breaks on
    #: one frame in a thousand should not stop a call or a long render. Looked for only in a
    #: model of :attr:`guarded`.
    nonfinite_frames = 0
    #: 1 once a frame of mid-range values came back almost all white (a model whose output
    #: is 0-255, not the contract's 0-1): the engine warns once when this grows. Judged on the
    #: first frame with enough mid-range values, in a model of :attr:`guarded` only.
    saturated_frames = 0
    _range_judged = False

    @property
    def guarded(self) -> bool:
        """Whether the output is searched for NaN and infinities: for a user's own model,
        listed in no manifest. A listed one passed ``training.export``'s check against its
        eager model, which refuses NaN, and goes without the cost (1-6 % of OpenVINO's call
        at 1280x720: a select and a reduction in its graph)."""
        return self.model.entry is None

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """`(H, W, 3)` uint8 RGB -> `(H, W, 3)` uint8 RGB (a buffer reused by the next call)."""
        if self._closed:
            raise BackendError(f"{self.name} backend is closed")
        _check_frame(rgb)
        h, w = rgb.shape[:2]
        try:
            if h * w > TILE_ABOVE_PIXELS and not getattr(self, "fixed_size", False):
                out = self._infer_tiled(rgb)
            elif h >= MIN_SIZE and w >= MIN_SIZE:
                out = self._infer(np.ascontiguousarray(rgb))
            else:
                # The contract only promises H, W >= 16: pad tiny frames (thumbnails, tests),
                # crop.
                big = cv2.copyMakeBorder(
                    rgb, 0, max(0, MIN_SIZE - h), 0, max(0, MIN_SIZE - w), cv2.BORDER_REPLICATE
                )
                out = np.ascontiguousarray(self._infer(big)[:h, :w])
        except (BackendError, ModelError):
            raise  # already one line that names the model
        except Exception as exc:
            # A runtime's own error names neither the model nor the frame, and may span many
            # lines (TorchScript quotes the model's code): it reaches a person as one line.
            raise BackendError(
                _failed_at(f"{self.model.path} failed on a {w}x{h} frame", exc)
            ) from exc
        if self.guarded and not self._range_judged:
            self._judge_range(rgb, out)
        return out

    def _infer_tiled(self, rgb: np.ndarray) -> np.ndarray:
        """The model over overlapping tiles (at most four sizes: the last along a side may be up
        to TILE_ALIGN - 1 longer), each keeping its part up to the middle of its overlap with
        the next: memory for a tile, not the frame."""
        h, w = rgb.shape[:2]
        out = np.empty_like(rgb)
        rows, cols = _tile_spans(h), _tile_spans(w)
        bad_before = self.nonfinite_frames
        try:
            for y0, y1, ky0, ky1 in rows:
                for x0, x1, kx0, kx1 in cols:
                    tile = self._infer(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
                    out[ky0:ky1, kx0:kx1] = tile[ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0]
        finally:
            # Each tile's _infer counts itself as a frame: three bad tiles are one bad frame.
            self.nonfinite_frames = min(self.nonfinite_frames, bad_before + 1)
        return out

    def _judge_range(self, rgb: np.ndarray, out: np.ndarray) -> None:
        """Count the frame in :attr:`saturated_frames` when its mid-range values came back
        almost all white: a model whose output is 0-255 gave an all-white picture with no word,
        where NaN got one. Once per backend, on the first frame with enough such values (a
        blank warm-up frame, a dark camera say nothing); a subsample keeps it cheap."""
        # About 16k pixels whatever the size: on a dark camera, which may never give enough
        # mid-range values, it runs on every frame (every 4th row and column took 1.5 ms a
        # 720p frame there).
        step = max(1, round(math.sqrt(rgb.shape[0] * rgb.shape[1] / 16384)))
        src, got = rgb[::step, ::step], out[::step, ::step]
        # Far from both ends: a 0-1 model (an identity, a sharpening, a deblurring one) takes
        # these to white only at the odd strong edge, a 0-255 one takes every one.
        mid = (src >= 32) & (src <= 223)
        n = int(np.count_nonzero(mid))
        if n < max(256, src.size // 4):
            return
        self._range_judged = True
        if np.count_nonzero(got[mid] == 255) > 0.9 * n:
            self.saturated_frames += 1

    def _infer(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError


#: What a runtime says when a model's own graph cannot take a frame size (a side that is not
#: the multiple it needs, with no padding inside): ONNX Runtime's "Attempting to broadcast an
#: axis ... 96 by 101", OpenVINO's "Argument shapes are inconsistent" and "dim index: 2
#: mismatch", PyTorch's "The size of tensor a (96) must match ...".
_SHAPE_FAILURE = re.compile(r"broadcast|shapes|inconsistent|size of tensor|mismatch", re.IGNORECASE)


def _tile_spans(n: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, keep_start, keep_end)`` of the tiles along a side of ``n`` pixels:
    :data:`TILE_SIDE` long but the last (up to :data:`TILE_ALIGN` - 1 longer, to end at ``n``),
    each starting at a multiple of :data:`TILE_ALIGN` (a student's strided stages then see the
    whole frame's grid: a tile starting at an odd column gave other pixels), overlapping by at
    least 2 x :data:`TILE_MARGIN`, each kept up to the middle of its overlaps."""
    if n <= TILE_SIDE + TILE_ALIGN:
        return [(0, n, 0, n)]
    step = TILE_SIDE - 2 * TILE_MARGIN
    last = (n - TILE_SIDE) // TILE_ALIGN * TILE_ALIGN
    starts = list(range(0, last, step)) + [last]
    ends = [s + TILE_SIDE for s in starts[:-1]] + [n]
    spans = []
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        keep0 = 0 if i == 0 else (s + ends[i - 1]) // 2
        keep1 = n if i == len(starts) - 1 else (starts[i + 1] + e) // 2
        spans.append((s, e, keep0, keep1))
    return spans


def _failed_at(head: str, exc: BaseException) -> str:
    """``head`` (the model and the frame size it failed at) and the runtime's words, as one
    line. When those are about shapes the model, not the frame, breaks the contract, and the
    line says so: the runtime's own text ("96 by 101") said nothing of the sizes a model must
    take."""
    said = _one_line(exc)
    if not _SHAPE_FAILURE.search(said):
        return f"{head}: {said}"
    return (
        f"{head}: the model contract asks for any H and W (>= {MIN_SIZE}), a model padding "
        f"inside itself to the multiple it needs, as the shipped students do; the runtime said: "
        f"{said}"
    )


class _FrameBuffers:
    """Preallocated buffers for one frame size: uint8 HWC <-> float NCHW, via cv2 fast paths.

    Reallocated only when the frame size changes, so the hot loop allocates nothing.
    `nchw` is `(1, 3, H, W)` of `dtype`, `out_nchw` of `out_dtype` (default: `dtype`); `out` is
    `(H, W, 3)` uint8.
    """

    def __init__(self, dtype: np.dtype, out_dtype: np.dtype | None = None) -> None:
        self.dtype = np.dtype(dtype)
        # The contract lets each end be float32 or float16 on its own; a bound output of the
        # input's type failed the first frame of a float32-in, float16-out model.
        self.out_dtype = np.dtype(out_dtype if out_dtype is not None else dtype)
        self.size: tuple[int, int] | None = None

    def ensure(self, h: int, w: int) -> bool:
        """Allocate for `(h, w)`; True when the buffers were (re)allocated."""
        if self.size == (h, w):
            return False
        self.size = (h, w)
        self.nchw = np.empty((1, 3, h, w), self.dtype)
        self.out_nchw = np.empty((1, 3, h, w), self.out_dtype)
        self.out = np.empty((h, w, 3), np.uint8)
        self._planes_u8 = [np.empty((h, w), np.uint8) for _ in range(3)]
        self._plane_f32 = np.empty((h, w), np.float32)
        return True

    def to_nchw(self, rgb: np.ndarray) -> np.ndarray:
        """`(H, W, 3)` uint8 -> `self.nchw` `(1, 3, H, W)` in [0, 1]."""
        # cv2.split writes into the given planes; one contiguous multiply per plane beats a
        # strided numpy transpose by ~2x.
        cv2.split(rgb, mv=self._planes_u8)
        scale = np.float32(1.0 / 255.0)
        for c in range(3):
            np.multiply(self._planes_u8[c], scale, out=self.nchw[0, c], casting="unsafe")
        return self.nchw

    def from_nchw(self, y: np.ndarray, guarded: bool = False) -> np.ndarray:
        """`(1, 3, H, W)` float in [0, 1] -> `self.out` `(H, W, 3)` uint8 (clamped, rounded).

        ``guarded``: where a value is NaN or infinite the input's value (left in the planes by
        `to_nchw`, which must have run for this frame) stands in; `self.nonfinite` says
        whether any did.
        """
        self.nonfinite = False
        for c in range(3):
            plane = y[0, c]
            if plane.dtype != np.float32:
                np.copyto(self._plane_f32, plane)
                plane = self._plane_f32
            if not guarded:
                # dtype=CV_8U saturates and rounds: clip(y * 255 + 0.5) in one pass.
                cv2.multiply(plane, 255.0, dst=self._planes_u8[c], dtype=cv2.CV_8U)
                continue
            # One sum is the gate (0.1-0.15 ms a plane at 1280x720, measured): NaN or an
            # infinity makes it non-finite. Without it cv2 turned NaN into 255 (white) where
            # OpenVINO and torch give 0 (black). Huge finite values may overflow the sum too:
            # the exact mask below then finds nothing and changes nothing.
            with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: said below
                total = plane.sum(dtype=np.float32)
            if np.isfinite(total):
                cv2.multiply(plane, 255.0, dst=self._planes_u8[c], dtype=cv2.CV_8U)
                continue
            finite = np.isfinite(plane)
            self.nonfinite |= not bool(finite.all())
            # The plane still holds the input's channel: the model's values where finite only.
            np.copyto(self._planes_u8[c], cv2.multiply(plane, 255.0, dtype=cv2.CV_8U), where=finite)
        cv2.merge(self._planes_u8, dst=self.out)
        return self.out


# --------------------------------------------------------------------------- ONNX Runtime


class OnnxBackend(_ModelBackend):
    """ONNX Runtime with the fastest execution provider this machine really brings up.

    Args:
        model: a contract `.onnx` file (or an already verified `ModelFile`).
        device: ``auto`` (GPU providers first, then CPU), ``cpu``, or ``gpu``/``cuda`` (GPU
            providers only; fails when none comes up).
        threads: CPU intra-op threads (default: physical cores).
        providers: explicit provider names, overriding `device`.
        io_binding: bind preallocated host buffers for input and output (default: on).
        trt_cache_dir: TensorRT engine cache (default: `<user cache>/sharpcam/tensorrt`).
    """

    name = "onnx"
    model_format = "onnx"  # what `create_backend` checks a model file's format against

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def __init__(
        self,
        *,
        model: str | Path | ModelFile,
        device: str = "auto",
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        io_binding: bool | None = None,
        trt_cache_dir: str | Path | None = None,
    ) -> None:
        ort = _require("onnxruntime", "onnx")
        if device not in DEVICES:
            raise BackendError(f"device must be one of {DEVICES}, got {device!r}")
        self.model = open_model(model)
        available = ort.get_available_providers()
        if providers is None:
            wanted = {
                "auto": ORT_PROVIDER_ORDER,
                "cpu": ("CPUExecutionProvider",),
            }.get(device, ORT_GPU_PROVIDERS)
        else:
            wanted = tuple(providers)
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise BackendError(
                f"onnxruntime has none of the providers {list(wanted)} "
                f"(available: {available}); for a GPU install onnxruntime-gpu"
            )

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # 0 (where cores cannot be counted) leaves ONNX Runtime its own default: the physical
        # cores, counted by the OS's own API. Counted here, the count also follows the CPUs
        # this process is allowed (Linux affinity, containers), which ONNX Runtime ignores.
        so.intra_op_num_threads = threads or physical_cores() or 0
        # No spin-waiting after each run: same speed measured here, and the capture and sink
        # threads need those cycles on small CPUs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Provider fall-back chatter is reported through .provider; and an error is logged (in
        # colour, with C++ source paths) just before the exception that carries its text, which
        # the caller reports as one line.
        so.log_severity_level = 4
        with_options: list[Any] = []
        uncached: Path | None = None  # a TensorRT cache folder that cannot be written
        for p in chosen:
            if p == "TensorrtExecutionProvider":
                cache = Path(trt_cache_dir or user_cache_dir() / "tensorrt")
                trt: dict[str, Any] = {"trt_fp16_enable": True}
                if _writable_folder(cache):
                    trt.update(
                        trt_engine_cache_enable=True,
                        trt_engine_cache_path=str(cache),
                        trt_timing_cache_enable=True,
                        trt_timing_cache_path=str(cache),
                    )
                else:
                    # A read-only home (a sandbox, a service account) is no reason to refuse a
                    # model that runs; and onnxruntime-gpu lists TensorRT even without a GPU.
                    uncached = cache
                with_options.append((p, trt))
            elif p == "DmlExecutionProvider":
                # DirectML cannot run with memory patterns or parallel execution.
                so.enable_mem_pattern = False
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                with_options.append(p)
            else:
                with_options.append(p)
        try:
            self._session = ort.InferenceSession(
                str(self.model.path), sess_options=so, providers=with_options
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelError(f"cannot load model {self.model.path}: {_one_line(exc)}") from exc

        # onnxruntime-gpu lists CUDA even on machines without a GPU: the session is the truth.
        self.providers = list(self._session.get_providers())
        self.provider = f"ONNX Runtime · {self.providers[0]}"
        if uncached is not None and self.providers[0] == "TensorrtExecutionProvider":
            warn_user(
                f"TensorRT engine cache {uncached} is not writable; "
                "TensorRT rebuilds its engines at every start"
            )
        if (
            device in ("gpu", "cuda")
            and providers is None
            and self.providers[0] not in ORT_GPU_PROVIDERS
        ):
            self._session = None
            raise BackendError(
                f"no GPU provider came up (asked for {chosen}, session got {self.providers})"
            )

        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        _check_contract(
            self.model.path,
            [(i.name, _ort_shape(i.shape), _ort_dtype(i.type)) for i in ins],
            [(o.name, _ort_shape(o.shape), _ort_dtype(o.type)) for o in outs],
        )
        self._in_name, self._out_name = ins[0].name, outs[0].name
        in_shape = _ort_shape(ins[0].shape)
        self._fixed_hw = tuple(d if isinstance(d, int) else None for d in in_shape[2:])
        self._fixed_size = any(d is not None for d in self._fixed_hw)
        self._in_shape = in_shape
        self._buf = _FrameBuffers(_ort_np_dtype(ins[0].type), _ort_np_dtype(outs[0].type))
        # Binding our own buffers costs nothing on CPU either (measured) and spares ORT the
        # per-frame output allocation, so it is on by default everywhere.
        self._use_binding = True if io_binding is None else io_binding
        self._binding: Any = None
        self._ort = ort

    def _bind(self) -> None:
        b = self._session.io_binding()
        buf = self._buf
        # Both ends bound to our host buffers: ORT copies to/from the device inside the run,
        # and nothing is allocated or re-bound per frame.
        b.bind_input(self._in_name, "cpu", 0, buf.dtype, buf.nchw.shape, buf.nchw.ctypes.data)
        b.bind_output(
            self._out_name, "cpu", 0, buf.out_dtype, buf.out_nchw.shape, buf.out_nchw.ctypes.data
        )
        self._binding = b

    def run_nchw(self, x: np.ndarray) -> np.ndarray:
        """The model on one tensor: `(1, 3, H, W)` float in [0, 1] -> same shape (no reuse)."""
        return self._session.run([self._out_name], {self._in_name: x})[0]

    def _infer(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        # Checked before the buffers change size: a refused frame must leave the binding intact
        # (ensure() would free the old buffers the I/O binding still points at).
        if self._fixed_size and (
            (self._fixed_hw[0] is not None and self._fixed_hw[0] != h)
            or (self._fixed_hw[1] is not None and self._fixed_hw[1] != w)
        ):
            raise BackendError(self._fixed_size_message(h, w))
        if self._buf.ensure(h, w) and self._use_binding:
            self._bind()
        x = self._buf.to_nchw(rgb)
        if self._binding is not None:
            try:
                self._session.run_with_iobinding(self._binding)
            except Exception as exc:
                mismatch = self._output_mismatch(x)
                if mismatch is None:
                    raise
                raise mismatch from exc
            y = self._buf.out_nchw
        else:
            y = self._session.run([self._out_name], {self._in_name: x})[0]
            if y.shape != x.shape:
                # from_nchw would leave the result buffer as it was: a stale or blank frame.
                raise self._contract_error(x.shape, y.shape)
        out = self._buf.from_nchw(y, self.guarded)
        if self._buf.nonfinite:
            self.nonfinite_frames += 1
        return out

    @property
    def fixed_size(self) -> bool:
        """The model takes one height or width only (exported without dynamic axes): it runs
        at no processing scale but 1 (:class:`ScaledBackend`)."""
        return self._fixed_size

    def _fixed_size_message(self, h: int, w: int) -> str:
        fh, fw = self._fixed_hw
        if fh is not None and fw is not None:
            fixed = f"a fixed input size {fw}x{fh} (input {_shape_str(self._in_shape)})"
        elif fh is not None:
            fixed = (
                f"a fixed input height of {fh} (input {_shape_str(self._in_shape)}) "
                f"and runs only frames {fh} pixels high"
            )
        else:
            fixed = (
                f"a fixed input width of {fw} (input {_shape_str(self._in_shape)}) "
                f"and runs only frames {fw} pixels wide"
            )
        # W x H, as the status line and every other message give a frame's size.
        return f"{self.model.path} has {fixed}, frame is {w}x{h}: export it with dynamic H and W"

    def _contract_error(self, want: Sequence[int], got: Sequence[int]) -> ModelError:
        return ModelError(
            f"{self.model.path}: breaks the model contract: output must be {_shape_str(want)} "
            f"like the input, got {_shape_str(got)}"
        )

    def _output_mismatch(self, x: np.ndarray) -> ModelError | None:
        """After a bound run failed: the contract error when the output is another size than
        the input (ONNX Runtime's own message is a paragraph about pre-allocated OrtValues),
        found by one unbound run; None when that is not the reason."""
        try:
            y = self._session.run([self._out_name], {self._in_name: x})[0]
        except Exception:  # noqa: BLE001 - the bound run's own error says why
            return None
        return self._contract_error(x.shape, y.shape) if y.shape != x.shape else None

    def close(self) -> None:
        self._binding = None
        self._session = None
        # The frame buffers too (two float frames: ~50 MB at 1080p): the app keeps a stopped
        # engine's closed backend until its next start.
        self._buf = _FrameBuffers(self._buf.dtype, self._buf.out_dtype)
        super().close()


def _ort_shape(shape: Sequence[Any]) -> list[int | str]:
    return [d if isinstance(d, int) else str(d or "?") for d in shape]


def _ort_dtype(t: str) -> str:
    return {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(t, t)


def _ort_np_dtype(t: str) -> type:
    return np.float16 if _ort_dtype(t) == "float16" else np.float32


# --------------------------------------------------------------------------- OpenVINO


def _is_constant(output: Any) -> bool:
    """Whether an OpenVINO ``output`` is a constant (through conversions: a model saved with
    ``compress_to_fp16``, OpenVINO's default, keeps its constants in f16 behind a Convert)."""
    op = output.get_node()
    while op.get_type_name() == "Convert":
        op = op.input_value(0).get_node()
    return op.get_type_name() == "Constant"


def _before_saturation(output: Any) -> Any:
    """What an OpenVINO graph's ``output`` is before the saturating ops it may end in, or
    ``output`` itself: the contract's models end in a clamp to [0, 1] (a Clamp, or an ONNX
    Clip read as a Maximum and a Minimum with constants), maybe after a Relu, conversions
    around them. OpenVINO's make NaN 0 (black) where ONNX Runtime's keep it, so NaN is looked
    for before them (and an infinity, which they map into range as ONNX Runtime's do, after)."""
    node = output
    for _ in range(8):  # a clamp's few nodes, not a walk through the network
        op = node.get_node()
        kind = op.get_type_name()
        if kind in ("Convert", "Clamp", "Relu"):
            node = op.input_value(0)
        elif kind in ("Minimum", "Maximum"):
            varying = [i for i in op.input_values() if not _is_constant(i)]
            if len(varying) != 1:
                break
            node = varying[0]
        else:
            break
    return node


class OpenVinoBackend(_ModelBackend):
    """Native OpenVINO runtime; each frame size seen twice gets its own static-shape model.

    Static shapes run much faster than dynamic ones in OpenVINO (4x at 640x480 here), but each
    costs a compile (0.3-0.9 s on two cores) and holds its buffers (~95 MiB at 1080p, ~440 at
    12 MP). A size met for the first time runs on one dynamic-shape model, compiled once; a
    size met again (a video, a camera) is compiled for itself and cached (`cache_size` sizes
    and `cache_pixels` pixels at most, least recently used out). `prepare` compiles a size at
    once: what `warm_up` calls before a stream, so its first frame does not wait. A folder of
    photos of mixed sizes paid a compile per photo (10x ONNX Runtime's time) and kept eight
    of them (3.5 GB of 12 MP photos).
    Pre/post-processing (uint8 HWC <-> float NCHW, clamp, round) is compiled into the graph
    with OpenVINO's PrePostProcessor, so `process` hands the frame over without a copy.

    Args:
        model: a contract `.onnx` (or OpenVINO IR `.xml`) file.
        device: ``auto``/``cpu`` -> ``CPU``; ``gpu`` -> ``GPU`` (Intel graphics).
        threads: inference threads (default: OpenVINO's choice, physical cores).
        precision: ``None`` lets OpenVINO choose (bf16 on CPUs with native bf16, else f32),
            ``"f32"`` or ``"bf16"`` force it. The chosen one is shown in `provider`.
        cache_dir: OpenVINO's compiled-model cache (default: `<user cache>/sharpcam/openvino`),
            keyed by OpenVINO on the graph with its weights, the size and the CPU (on an AVX2
            CPU one entry whatever ``threads`` and ``precision="f32"``; whether a forced
            precision gets its own where bf16 is native was not measured).
    """

    name = "openvino"
    model_format = "onnx"  # or OpenVINO IR (.xml), which no manifest or suffix calls otherwise

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def gpu_listed(cls) -> bool:
        # device "auto" runs on the CPU here (an Intel GPU only when asked for): whether ONNX
        # Runtime lists CUDA says nothing about it, and the GPU student would crawl on a CPU.
        return False

    def __init__(
        self,
        *,
        model: str | Path | ModelFile,
        device: str = "auto",
        threads: int | None = None,
        precision: str | None = None,
        cache_size: int = 8,
        cache_pixels: int = 16_000_000,
        cache_dir: str | Path | None = None,
    ) -> None:
        ov = _require("openvino", "openvino")
        if device not in DEVICES:
            raise BackendError(f"device must be one of {DEVICES}, got {device!r}")
        if precision not in (None, "f32", "bf16", "f16"):
            raise BackendError(f"precision must be None, 'f32', 'bf16' or 'f16', got {precision!r}")
        self.model = open_model(model)
        self._ov = ov
        self._core = _ov_core()
        self.device = "CPU" if device in ("auto", "cpu") else "GPU"
        if self.device not in self._core.available_devices:
            raise BackendError(
                f"OpenVINO device {self.device} not available "
                f"(available: {self._core.available_devices})"
            )
        if not _ov_frontend_takes(self.model.path):
            # read_model would try every frontend it has, and TensorFlow's prints its parse
            # errors of a non-ONNX file (or a damaged .xml) straight to stderr, around the
            # one-line error below.
            kind = "an OpenVINO" if self.model.path.suffix.lower() == ".xml" else "an ONNX"
            raise ModelError(
                f"cannot load model {self.model.path}: not {kind} model "
                "(damaged, truncated or in another format)"
            )
        try:
            self._model = self._core.read_model(str(self.model.path))
        except Exception as exc:
            raise ModelError(f"cannot load model {self.model.path}: {_one_line(exc)}") from exc
        _check_contract(
            self.model.path,
            [(p.get_any_name(), _ov_shape(p), _ov_dtype(p)) for p in self._model.inputs],
            [(p.get_any_name(), _ov_shape(p), _ov_dtype(p)) for p in self._model.outputs],
        )
        # OpenVINO reads an ONNX QDQ graph as FakeQuantize ops: say so, or an int8 model
        # chosen by `prefer_int8` would look like the float one in the status line.
        self.quantized = any(op.get_type_name() == "FakeQuantize" for op in self._model.get_ops())
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision:
            self._config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        # Each start compiled the model again, and each new size (a step of --scale auto, a
        # camera's new resolution) while the picture waited: the int8 student on two AVX2
        # cores, medians, 0.8 s to load and 0.55-0.6 s a size; from the cache 0.4 and 0.25.
        cache = Path(cache_dir or user_cache_dir() / "openvino")
        if _writable_folder(cache):
            self._config["CACHE_DIR"] = str(cache)
        else:
            # A read-only home (a sandbox, a service account) is no reason to refuse a model.
            warn_user(
                f"OpenVINO model cache {cache} is not writable; "
                "OpenVINO compiles its models at every start"
            )
        self._cache_failed = False  # a compile with the cache failed once (see _compile)
        self._cache_size = max(1, cache_size)
        self._cache_pixels = int(cache_pixels)
        self._cache_lock = threading.Lock()
        self._in_use: tuple[int, int] | None = None  # (h, w) of the frames inferred last
        self._compiled: OrderedDict[tuple[int, int], tuple[Any, Any]] = OrderedDict()
        self._dynamic: tuple[Any, Any] | None = None  # (compiled, request) for any size
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()  # sizes met once
        self.precision = precision
        self.provider = f"OpenVINO · {self.device}"
        # Compile once at a small size now: a model OpenVINO cannot run fails here (where
        # `auto` can fall back), and `provider` can say which precision really runs. Not
        # square: an output with H and W swapped under unrelated symbols passes the declared
        # check and a square probe, and failed at the first frame of a video instead. One
        # compile either way (the same 0.2-1 s as 64x64 for the shipped students), and both
        # sides a multiple of 32, the largest the students pad to.
        self._request_for(MIN_SIZE * 4, MIN_SIZE * 6, fixed=True, trial=True)

    def prepare(self, size: tuple[int, int], *, beside: bool = False) -> None:
        """Compile for frames of ``size`` ``(W, H)`` now (a stream's, before its first frame).

        ``beside``: while frames of another size are still being inferred (ScaledBackend
        readying its next scale on a thread of its own); the size in use then stays compiled,
        over ``cache_pixels`` if need be. Without it, at 4K, readying the next scale dropped
        the size in use, which the stream then compiled again on its own thread.
        """
        if self._closed:
            raise BackendError(f"{self.name} backend is closed")
        w, h = (max(MIN_SIZE, int(v)) for v in size)
        self._request_for(h, w, fixed=True, keep=self._in_use if beside else None, warm=beside)

    def is_prepared(self, size: tuple[int, int]) -> bool:
        """Whether frames of ``size`` ``(W, H)`` run on a model compiled for that size now
        (compiled, and not dropped from the cache since)."""
        w, h = (max(MIN_SIZE, int(v)) for v in size)
        with self._cache_lock:
            return (h, w) in self._compiled

    def _build(self, h: int, w: int) -> Any:
        """The model reshaped to `(1, 3, h, w)` with uint8 NHWC in and out: `(1, h, w, 3)`."""
        import openvino.opset13 as ops
        from openvino.preprocess import PrePostProcessor

        ov = self._ov
        model = self._model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape([1, 3, h, w])})
        if self.guarded:
            # NaN and infinities: the input's value stands in (clamp made NaN 0, black, where
            # ONNX Runtime's conversion gave 255), and a second output, whether any value was
            # bad, tells the host (a select of whole pixels, any channel bad, cost 10 %). A
            # flag, not a sum: in f16 (ARM CPUs, GPUs) a frame's sum overflows. Not where the
            # shapes are known to differ: a model whose output is another size than its input
            # must reach the contract check, not fail here.
            result = model.get_results()[0]
            y = ops.convert(result.input_value(0), "f32")
            before = ops.convert(_before_saturation(result.input_value(0)), "f32")
            bad = ops.logical_or(ops.is_nan(before), ops.logical_not(ops.is_finite(y)))
            shape = result.get_output_partial_shape(0)
            if shape.compatible(model.get_parameters()[0].get_output_partial_shape(0)):
                x = ops.convert(model.get_parameters()[0], "f32")
                result.input(0).replace_source_output(ops.select(bad, x, y).output(0))
            all_axes = np.array([0, 1, 2, 3], np.int64)
            model.add_results([ops.result(ops.reduce_logical_or(bad, all_axes))])
            model.validate_nodes_and_infer_types()
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
        ppp.output(0).model().set_layout(ov.Layout("NCHW"))
        ppp.output(0).tensor().set_layout(ov.Layout("NHWC"))

        def to_u8(node: Any) -> Any:
            # Same arithmetic as the other backends: clip(y * 255 + 0.5), then truncate.
            y = ops.convert(node, "f32")
            y = ops.add(ops.multiply(y, np.float32(255.0)), np.float32(0.5))
            return ops.convert(ops.clamp(y, 0.0, 255.0), "u8").output(0)

        ppp.output(0).postprocess().custom(to_u8)
        return ppp.build()

    def _compile(self, h: int, w: int) -> Any:
        config = self._config
        try:
            try:
                compiled = self._core.compile_model(self._build(h, w), self.device, config)
            except Exception as exc:
                if "CACHE_DIR" not in config:
                    raise
                # The folder gone bad since the start (removed and blocked, made read-only),
                # or an OpenVINO that raises where it could not write its entry: compiled
                # without it. Where the cache was not the cause, this raises the model's error.
                uncached = {k: v for k, v in config.items() if k != "CACHE_DIR"}
                compiled = self._core.compile_model(self._build(h, w), self.device, uncached)
                folder = config["CACHE_DIR"]
                if not self._cache_failed and os.path.isdir(folder) and os.access(folder, os.W_OK):
                    # Once, where the folder is still fine: two starts on an empty cache race
                    # for an entry (OpenVINO writes it in place; the other's read of it half
                    # written deletes it, and this one's chmod then fails). That warned and
                    # dropped the cache for the session.
                    self._cache_failed = True
                    return compiled
                self._config = uncached
                warn_user(
                    f"OpenVINO model cache {config['CACHE_DIR']} cannot be used "
                    f"({_one_line(exc)}); OpenVINO compiles its models at every start"
                )
            else:
                if "CACHE_DIR" in config:
                    _prune_cache(Path(config["CACHE_DIR"]), OPENVINO_CACHE_BYTES)
            return compiled
        except Exception as exc:
            at = "any size" if h < 0 else f"{w}x{h}"
            raise BackendError(
                _failed_at(f"OpenVINO cannot compile {self.model.path} at {at}", exc)
            ) from exc

    def _request_for(
        self,
        h: int,
        w: int,
        *,
        fixed: bool = False,
        keep: tuple[int, int] | None = None,
        warm: bool = False,
        trial: bool = False,
    ) -> Any:
        key = (h, w)
        # The caches, not the compiles, under the lock: `prepare` may run on another thread
        # (ScaledBackend readies its next scale beside the stream) while frames are inferred.
        with self._cache_lock:
            if not fixed:
                self._in_use = key
            hit = self._compiled.get(key)
            if hit is not None:
                self._compiled.move_to_end(key)
                return hit[1]
            dynamic = not fixed and key not in self._seen
            if dynamic:
                self._seen[key] = None
                while len(self._seen) > 64:
                    self._seen.popitem(last=False)
            else:
                self._seen.pop(key, None)
        if dynamic:
            if self._dynamic is None:
                compiled = self._compile(-1, -1)
                self._dynamic = (compiled, compiled.create_infer_request())
            return self._dynamic[1]
        compiled = self._compile(h, w)
        out = compiled.outputs[0].get_partial_shape()
        out_shape = tuple(out.to_shape()) if out.is_static else (1, h, w, 3)
        if out_shape != (1, h, w, 3):
            # Dynamic H and W say nothing about the output's size until reshaped; unchecked,
            # `process` would hand back a frame of another size than the one it was given.
            got = _shape_str((out_shape[0], out_shape[3], *out_shape[1:3]))
            if trial:
                # The load's own frame: its size, quoted as "must be (1, 3, 64, 96)", read
                # as if it were the user's frame.
                raise ModelError(
                    f"{self.model.path}: breaks the model contract: its output must be as large "
                    f"as its input, and on a {w}x{h} trial frame it is {out_shape[2]}x{out_shape[1]}"
                    f"{_size_ratio(w, h, out_shape[2], out_shape[1])}"
                )
            raise ModelError(
                f"{self.model.path}: breaks the model contract: output must be (1, 3, {h}, {w}) "
                f"like the input, got {got}"
            )
        request = compiled.create_infer_request()
        if warm:
            # A compiled model's first inference sets up its buffers (1 s at 4K, 5x a call):
            # run here, not in the stream's first frame at the new size, and before the cache
            # offers the request: the stream once ran it while this call still did, and got
            # the zeros in its frame (or a corrupted heap). (warm_up's own call does it before
            # a stream.)
            request.infer({0: np.zeros((1, h, w, 3), np.uint8)})
        with self._cache_lock:
            self._compiled[key] = (compiled, request)
            # Least recently used out; the newest always stays, however large, and so does
            # `keep` (the size in use beside which it was compiled).
            for old in [k for k in self._compiled if k not in (key, keep)]:
                if (
                    len(self._compiled) <= self._cache_size
                    and sum(a * b for a, b in self._compiled) <= self._cache_pixels
                ):
                    break
                del self._compiled[old]
        if self.device == "CPU":
            self.inference_precision = _ov_precision_name(
                compiled.get_property("INFERENCE_PRECISION_HINT")
            )
            self.provider = f"OpenVINO · {self.device} · {self.inference_precision}"
            if self.quantized:
                self.provider += " · int8"
        return request

    def _infer(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        request = self._request_for(h, w)
        # share_inputs: the frame is read in place; share_outputs: the result is the request's
        # own buffer (valid until the next frame of this size, as the protocol allows).
        request.infer({0: rgb[None]}, share_inputs=True, share_outputs=True)
        out = request.get_output_tensor(0).data[0]
        if self.guarded and request.get_output_tensor(1).data.any():
            self.nonfinite_frames += 1
        if out.shape != (h, w, 3):
            # Checked at compile time for a static shape; the dynamic one says only here.
            raise ModelError(
                f"{self.model.path}: breaks the model contract: output must be (1, 3, {h}, "
                f"{w}) like the input, got (1, {out.shape[2]}, {out.shape[0]}, {out.shape[1]})"
            )
        return out

    def close(self) -> None:
        self._compiled.clear()
        self._dynamic = None
        # The graph read at load holds the weights (an IR's .bin stays mapped while it lives).
        self._model = None
        super().close()


def _size_ratio(w: int, h: int, out_w: Any, out_h: Any) -> str:
    """`` (2x its input)``, `` (0.5x its width, 1.5x its height)``: how an output of
    ``out_w`` x ``out_h`` relates to its ``w`` x ``h`` input; empty where a side is unknown."""
    if not (isinstance(out_w, int) and isinstance(out_h, int)) or out_w < 0 or out_h < 0:
        return ""
    rw, rh = out_w / w, out_h / h
    if math.isclose(rw, rh):
        return f" ({rw:.3g}x its input)"
    return f" ({rw:.3g}x its width, {rh:.3g}x its height)"


def _ov_frontend_takes(path: Path) -> bool:
    """Whether OpenVINO's frontend for the file's kind (ONNX; its own IR for ``.xml``) takes
    it (it looks at the header only)."""
    framework = "ir" if path.suffix.lower() == ".xml" else "onnx"
    try:
        from openvino.frontend import FrontEndManager

        return bool(FrontEndManager().load_by_framework(framework).supported(str(path)))
    except Exception:  # noqa: BLE001 - no ONNX frontend here: read_model decides and says why
        return True


def _ov_dtype(port: Any) -> str:
    t = port.get_element_type().get_type_name()
    return {"f32": "float32", "f16": "float16"}.get(t, t)


def _ov_shape(port: Any) -> list[int | str]:
    ps = port.get_partial_shape()
    if ps.rank.is_dynamic:
        return ["..."]
    return [d.get_length() if d.is_static else "?" for d in ps]


# --------------------------------------------------------------------------- PyTorch


_EXPORT_HINT = (
    "export it as TorchScript (torch.jit.script(model).save(PATH)) or ONNX (torch.onnx.export); "
    "a SharpCam training checkpoint: python -m training.export"
)


def _not_torchscript(torch: Any, path: Path, jit_exc: BaseException) -> str:
    """Why ``path`` is no TorchScript model, in words that say what to do.

    Never a full unpickling (``weights_only=False``): a pickle runs whatever code the file
    names as it loads, before any warning could be read, and an unlisted file is anybody's.
    The restricted one (``weights_only=True``: tensors and plain containers, no code) only
    tells a state dict or checkpoint from a pickled module, to say what each needs.
    """
    pre = f"cannot load model {path}"
    zipped = _is_zip(path)
    if zipped and _holds_torchscript(path):
        # torch.load refuses these with weights_only, after warning that it is "dispatching to
        # torch.jit.load"; and "not TorchScript" would send a person to export what they have.
        return (
            f"{pre}: a TorchScript archive PyTorch {torch.__version__} cannot load (damaged, or "
            f"saved by a newer PyTorch): {_one_line(jit_exc)}"
        )
    try:
        # mmap: the tensors are only mapped, never read (a training checkpoint of some GB was
        # read whole to say it is not a model); the legacy format (torch < 1.6) cannot be.
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as exc:
        # Every weights-only failure says "Weights only load failed", garbage too ("Unsupported
        # operand"): only a refused class or function ("Unsupported global" since torch 2.5,
        # "Unsupported class" before, "... is blocked") makes it a pickled object.
        text = str(exc).lower()
        if any(s in text for s in ("unsupported global", "unsupported class", "is blocked")):
            return (
                f"{pre}: a pickled Python object (torch.save(model)), not TorchScript; "
                f"SharpCam does not unpickle it, as that runs code from the file: {_EXPORT_HINT}"
            )
    except Exception:  # noqa: BLE001 - not a torch file at all: TorchScript's error says so
        pass
    else:
        return (
            f"{pre}: holds weights or a training checkpoint ({type(obj).__name__}), not a "
            f"model, which needs its architecture: {_EXPORT_HINT}"
        )
    return f"{pre}: not TorchScript ({_one_line(jit_exc)})"


def _is_zip(path: Path) -> bool:
    """Whether ``path`` starts like a zip archive (torch.save's format since torch 1.6)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _holds_torchscript(path: Path) -> bool:
    """Whether the zip ``path`` is laid out as a TorchScript archive: ``constants.pkl`` in its
    one top folder, as torch.load tells one (its table of contents only is read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # noqa: BLE001 - damaged past reading: torch.load's turn to say what it is
        return False
    return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in names)


class TorchBackend(_ModelBackend):
    """A TorchScript model (`torch.jit.save`) in PyTorch: CUDA fp16 channels_last, else CPU fp32.

    Args:
        model: a TorchScript archive (`.pt`, `.ts`, ...). A pickled `nn.Module` is refused, not
            unpickled: unpickling runs code from the file.
        device: ``auto`` (CUDA when available), ``cpu``, ``gpu``/``cuda``.
        half: fp16 on CUDA (default True; ignored on CPU).
        threads: ignored (torch's thread pool is process-wide; set it with torch.set_num_threads).
    """

    name = "torch"
    model_suffix = ".ts"  # the shipped file this backend runs when no model is given
    model_format = "torchscript"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("torch") is not None

    @classmethod
    def gpu_listed(cls) -> bool:
        """Whether ``device="auto"`` would run on CUDA here."""
        try:
            import torch
        except ImportError:
            # Asked before the backend is built: its own check says what to install, where a
            # bare ModuleNotFoundError from here did not.
            return False
        return bool(torch.cuda.is_available())

    def __init__(
        self,
        *,
        model: str | Path | ModelFile,
        device: str = "auto",
        threads: int | None = None,
        half: bool = True,
    ) -> None:
        torch = _require("torch", "torch")
        if device not in DEVICES:
            raise BackendError(f"device must be one of {DEVICES}, got {device!r}")
        self.model = open_model(model)
        cuda = torch.cuda.is_available()
        if device in ("gpu", "cuda") and not cuda:
            raise BackendError("torch backend: CUDA is not available in this PyTorch build")
        self._torch = torch
        self._device = torch.device("cuda" if cuda and device != "cpu" else "cpu")
        self._dtype = torch.float16 if (self._device.type == "cuda" and half) else torch.float32
        self._net = self._load(torch)
        self._net = self._net.to(self._device, self._dtype).eval()
        if self._device.type == "cuda":
            try:
                self._net = self._net.to(memory_format=torch.channels_last)
            except (TypeError, RuntimeError):
                pass  # some scripted modules refuse; channels_last input still helps cuDNN
        precision = "fp16" if self._dtype == torch.float16 else "fp32"
        self.provider = f"PyTorch · {self._device.type} {precision}"
        self._size: tuple[int, int] | None = None
        self._probe()

    def _load(self, torch: Any) -> Any:
        path = self.model.path
        try:
            with _CATCH_WARNINGS, warnings.catch_warnings():
                # torch >= 2.10 flags TorchScript as deprecated; it is still the portable
                # ONNX-free format that trainers export, so loading it is deliberate.
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as jit_exc:
            raise ModelError(_not_torchscript(torch, path, jit_exc)) from jit_exc

    def _probe(self) -> None:
        """TorchScript has no static signature: run a tiny frame to check the contract."""
        torch = self._torch
        x = torch.zeros(
            1, 3, MIN_SIZE * 2, MIN_SIZE * 2 + 1, device=self._device, dtype=self._dtype
        )
        try:
            with torch.inference_mode():
                y = self._net(x)
        except Exception as exc:
            raise ModelError(
                f"{self.model.path}: breaks the model contract: a (1, 3, H, W) input fails: "
                f"{_one_line(exc)}"
            ) from exc
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
            raise self._contract_error(tuple(x.shape), y)

    def _contract_error(self, want: tuple[int, ...], y: Any) -> ModelError:
        got = tuple(y.shape) if isinstance(y, self._torch.Tensor) else type(y).__name__
        return ModelError(
            f"{self.model.path}: breaks the model contract: output must be {want} "
            f"like the input, got {got}"
        )

    def _infer(self, rgb: np.ndarray) -> np.ndarray:
        torch = self._torch
        h, w = rgb.shape[:2]
        if self._size != (h, w):
            self._size = (h, w)
            cuda = self._device.type == "cuda"
            self._host_in = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=cuda)
            self._host_out = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=cuda)
            self._out_np = self._host_out.numpy()
            # NCHW view of an HWC buffer: already channels_last strides, no transpose copy.
            self._x = torch.empty((h, w, 3), dtype=self._dtype, device=self._device).permute(
                2, 0, 1
            )[None]
        with torch.inference_mode():
            src = torch.from_numpy(rgb)
            if self._device.type == "cuda":
                self._host_in.copy_(src)
                src = self._host_in.to(self._device, non_blocking=True)
            self._x.copy_(src.permute(2, 0, 1)[None]).mul_(1.0 / 255.0)
            y = self._net(self._x)
            if not isinstance(y, torch.Tensor) or y.shape != self._x.shape:
                # The probe at load saw one small size; copy_ below would broadcast a (1, 3,
                # 1, 1) output over the whole frame, or fail with a message about tensor a and b.
                raise self._contract_error(tuple(self._x.shape), y)
            y = y.float()
            # One sum is the gate (0.1 ms at 1280x720 on CPU; on CUDA its sync is the one the
            # host copy below waits for anyway): NaN turned into 0 (black) here, 255 (white)
            # through ONNX Runtime. Where a value is not finite the input's stands in.
            if self.guarded and not bool(torch.isfinite(y.sum())):
                finite = torch.isfinite(y)
                if not bool(finite.all()):
                    self.nonfinite_frames += 1
                    y = torch.where(finite, y, self._x.float())
            y = y.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)
            self._host_out.copy_(y[0].permute(1, 2, 0))
        return self._out_np

    def run_nchw(self, x: np.ndarray) -> np.ndarray:
        """The model on one tensor: `(1, 3, H, W)` float in [0, 1] -> same shape, float32."""
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self._device, self._dtype)
            return self._net(t).float().cpu().numpy()

    def close(self) -> None:
        self._net = None
        # The frame buffers too (on CUDA a device tensor and two pinned host buffers): the app
        # keeps a stopped engine's closed backend until its next start.
        self._size = None
        self._x = self._host_in = self._host_out = self._out_np = None
        super().close()


# --------------------------------------------------------------------------- classic


class UnsharpBackend(_BackendBase):
    """Classic unsharp mask: `out = in + amount * (in - gaussian(in, radius))`, saturated.

    The baseline every learned result is compared to. No model, pure OpenCV.
    """

    name = "unsharp"
    provider = "unsharp mask · OpenCV"

    def __init__(self, *, amount: float = 1.0, radius: float = 2.0, **_ignored: Any) -> None:
        # Finite too: NaN passed both comparisons (an all-white frame), and an infinite
        # radius sized a kernel that took the process's memory.
        if not (math.isfinite(amount) and math.isfinite(radius) and amount >= 0 and radius > 0):
            raise BackendError(f"unsharp needs amount >= 0 and radius > 0, got {amount}, {radius}")
        self.amount = float(amount)
        self.radius = float(radius)
        self._size: tuple[int, int] | None = None

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """`(H, W, 3)` uint8 -> `(H, W, 3)` uint8 (a buffer reused by the next call)."""
        _check_frame(rgb)
        if self._size != rgb.shape[:2]:
            self._size = rgb.shape[:2]
            # Not empty_like: it copies a Fortran-ordered frame's layout, and OpenCV refuses a
            # dst that is not C-contiguous.
            self._blur = np.empty(rgb.shape, np.uint8)
            self._out = np.empty(rgb.shape, np.uint8)
        cv2.GaussianBlur(rgb, (0, 0), self.radius, dst=self._blur)
        cv2.addWeighted(rgb, 1.0 + self.amount, self._blur, -self.amount, 0.0, dst=self._out)
        return self._out


class PassthroughBackend(_BackendBase):
    """Returns the frame unchanged (the fallback when no model can run)."""

    name = "passthrough"
    provider = "passthrough"

    def __init__(self, **_ignored: Any) -> None:
        pass

    def process(self, rgb: np.ndarray) -> np.ndarray:
        return rgb


# --------------------------------------------------------------------------- processing scale

#: Processing scales ``auto`` steps through, largest first.
SCALE_LADDER: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5)


def scaled_size(size: tuple[int, int], scale: float, multiple: int = 1) -> tuple[int, int]:
    """``(W, H)`` of a frame of ``size`` (W, H) processed at ``scale``, each side >= 16.

    Below full size each side is rounded to the nearest ``multiple`` (the model's padding
    multiple): the model pads up to it anyway, so real pixels cost no more than padding
    (1280x720 at 0.75 -> 960x544, not 960x540 padded to 544).
    """
    w, h = size
    if scale >= 1.0:
        return w, h

    def side(n: int) -> int:
        m = max(1, multiple)
        r = m * round(n * scale / m)
        if r < MIN_SIZE:  # a small frame: the exact size, at least the contract's minimum
            r = max(MIN_SIZE, round(n * scale))
        return min(n, r)

    return side(w), side(h)


def parse_scale(value: float | str) -> float | str:
    """``"auto"`` or a number in (0, 1] (``"0.75"`` is read as 0.75); anything else raises."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise BackendError(
                f"scale must be 'auto' or a number in (0, 1], got {value!r}"
            ) from None
    scale = float(value)
    if not 0.0 < scale <= 1.0:
        raise BackendError(f"scale must be 'auto' or a number in (0, 1], got {value!r}")
    return scale


def _trimmed_mean(times: Sequence[float]) -> float:
    """The mean without the slowest tenth (at least the slowest one): one stall does not
    count. Not a median: with call times of two kinds (every other call slow) it jumps
    between them from one call to the next, and it misses 4 slow calls in 9."""
    kept = sorted(times)[: len(times) - max(1, len(times) // 10)]
    return sum(kept) / len(kept) if kept else 0.0


class ScaledBackend(_BackendBase):
    """Runs another backend at a lower processing resolution and adds its correction back.

    ``out = in + up(inner(down(in)) - down(in))``: the model sees a ``scale``-sized frame (its
    cost falls with the pixel count, ~``scale**2``), and only the *correction* it makes is
    upsampled, so the input's own detail stays at full resolution. Both resizes are bilinear
    (for 2x exactly the 2x2 mean); the correction travels as int16, so nothing is clipped before
    the final saturating add. Measured on held-out GoPro blur (``python -m training.evaluate
    --scale``): the fast student keeps most of its gain at 0.875 and 0.75 (model card, Speed).

    ``scale="auto"`` adapts to the machine: it starts at full resolution and steps down
    :data:`SCALE_LADDER` while the recent call time (the mean of the last :attr:`RECENT` calls
    without the slowest tenth: one stall or one compile at a new frame size does not count),
    judged once every :attr:`JUDGE_S` seconds on at least :attr:`QUICK` calls, exceeds the
    frame budget ``0.9 / target_fps`` (or, at any call, the last :attr:`QUICK` calls exceed
    :attr:`QUICK_OVER` times the budget), past every scale predicted (the time now times the
    pixel ratio) to be over :attr:`QUICK_OVER` times the budget itself; it steps back up,
    judged in the same way, to the largest scale predicted under 80 % of the budget, and not
    within ``recover_s`` of having stepped down from there, so it cannot oscillate faster than
    that. A scale left again within ``2 * recover_s`` of being stepped up to waits twice as
    long before the next try (up to :attr:`RECOVER_MAX_S`), ``recover_s`` again once a step
    up to it has held. Each size is a static shape to OpenVINO: a wrapped
    backend with ``prepare`` is readied for a new scale on a thread of its own, and the stream
    steps there at the first call once it is.

    Shapes: ``(H, W, 3) uint8 -> (H, W, 3) uint8``; the result is a buffer reused next call.
    """

    RECENT = 30  # calls whose trimmed mean `auto` judges by (a second of video at 30 fps)
    JUDGE_S = 1.0  # seconds between two judgements
    QUICK = 8  # calls that suffice: a judgement's least, and a scale far too slow is left
    QUICK_OVER = 1.25  # "far too slow": this times the budget
    RECOVER_MAX_S = 80.0  # the longest wait before trying a scale again (recover_s doubled)

    def __init__(
        self,
        backend: Any,
        scale: float | str = "auto",
        *,
        target_fps: float = 30.0,
        recover_s: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        parsed = parse_scale(scale)
        if not target_fps > 0:
            raise BackendError(f"target_fps must be > 0, got {target_fps!r}")
        self.inner = backend
        self.name = str(getattr(backend, "name", type(backend).__name__))
        self.adaptive = parsed == "auto"
        self._ladder = list(SCALE_LADDER)
        self._level = 0
        self._scale = self._ladder[0] if self.adaptive else float(parsed)
        self.budget_s = 0.9 / float(target_fps)
        self.overhead_s = 0.0  # set_overhead
        self._recover_s = float(recover_s)
        self._clock = clock
        self._recent: deque[float] = deque(maxlen=self.RECENT)  # call times at this scale
        self._calls = 0  # at the current scale
        self._judged = clock()  # when the calls at this scale were last judged (or it began)
        self._left: dict[float, float] = {}  # scale -> when auto last stepped down from it
        self._wait: dict[float, float] = {}  # scale -> how long after that it may try it again
        self._raised_at: float | None = None  # when auto stepped up to the scale in use
        self._buffers: tuple[np.ndarray, ...] | None = None
        self._frame: tuple[int, int] | None = None  # (W, H) of the latest frame
        self._ready: set[tuple[int, int]] = set()  # model sizes `prepare` has compiled
        self._preparing: tuple[tuple[int, int], threading.Thread] | None = None
        entry = getattr(getattr(backend, "model", None), "entry", None)
        self.multiple = int(getattr(getattr(entry, "input", None), "multiple", None) or 1)
        if getattr(backend, "fixed_size", False):
            # Every smaller size fails in the model: `auto` ran it at full size, stepped down
            # when it was slow, and the rest of the stream went out unsharpened.
            path = getattr(getattr(backend, "model", None), "path", "the model")
            if not self.adaptive:
                raise BackendError(
                    f"{path} has a fixed input size, so it runs at processing scale 1 only "
                    "(export it with dynamic H and W to run it smaller)"
                )
            self._ladder = [1.0]
            warn_user(
                f"{path} has a fixed input size: the automatic processing scale keeps it at "
                "full size (export it with dynamic H and W to let it run smaller)"
            )

    @property
    def scale(self) -> float:
        """The processing scale in use now (changes over time with ``auto``)."""
        return self._scale

    def follow_rate(self, fps: float) -> None:
        """``auto`` keeps up with ``fps`` from now on: the rate frames really arrive at,
        where the source could not say it (the engine measures it)."""
        if math.isfinite(fps) and fps > 0:
            self.budget_s = 0.9 / float(fps)

    def set_overhead(self, seconds: float) -> None:
        """Each frame also spends ``seconds`` before the model on the same thread (the engine's
        noise reduction): ``auto`` keeps the two together within the frame budget."""
        if math.isfinite(seconds) and seconds >= 0:
            self.overhead_s = float(seconds)

    @property
    def provider(self) -> str:  # type: ignore[override]
        # Only a reduced scale is news: "auto" at full size runs exactly the wrapped backend.
        inner = str(getattr(self.inner, "provider", ""))
        mode = "auto " if self.adaptive else ""
        frame = self._frame
        if frame is not None and scaled_size(frame, self._scale, self.multiple) == frame:
            # A frame of a few multiples of the model's: rounded to them, the "scaled" size
            # was the frame's own, which ran at full size under a "0.9x".
            return inner
        return f"{inner} · {mode}{self._scale:g}x" if self._scale < 1.0 else inner

    def __getattr__(self, item: str) -> Any:
        # model, quantized, inference_precision...: what the wrapped backend says about itself.
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)

    def prepare(self, size: tuple[int, int]) -> None:
        """The wrapped backend's ``prepare`` for the size it will see at the current scale."""
        prepare = getattr(self.inner, "prepare", None)
        if callable(prepare):
            prepare(scaled_size(size, self._scale, self.multiple))

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(H, W, 3)`` uint8 RGB at the current scale."""
        if self._closed:
            raise BackendError(f"{self.name} backend is closed")
        _check_frame(rgb)
        self._frame = (rgb.shape[1], rgb.shape[0])
        t0 = self._clock()
        out = self._run(rgb, self._scale)
        if self.adaptive:
            self._adapt(self._clock() - t0)
        return out

    def _run(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        h, w = rgb.shape[:2]
        sw, sh = scaled_size((w, h), scale, self.multiple)
        if (sw, sh) == (w, h):
            return self.inner.process(rgb)
        if (
            self._buffers is None
            or self._buffers[0].shape[:2] != (sh, sw)
            or (self._buffers[3].shape != rgb.shape)
        ):
            # Reallocated only when the frame or the scale changes: nothing per frame.
            self._buffers = (
                np.empty((sh, sw, 3), np.uint8),  # the small frame the model sees
                np.empty((sh, sw, 3), np.int16),  # its correction
                np.empty((h, w, 3), np.int16),  # the correction upsampled
                np.empty((h, w, 3), np.uint8),  # the result
            )
        small, correction, upsampled, out = self._buffers
        cv2.resize(rgb, (sw, sh), dst=small, interpolation=cv2.INTER_LINEAR)
        result = self.inner.process(small)
        cv2.subtract(result, small, dst=correction, dtype=cv2.CV_16S)
        cv2.resize(correction, (w, h), dst=upsampled, interpolation=cv2.INTER_LINEAR)
        return cv2.add(rgb, upsampled, dst=out, dtype=cv2.CV_8U)

    def _adapt(self, seconds: float) -> None:
        self._calls += 1
        if self._calls == 1:
            return  # the first call at a scale may include compiling the model for its size
        self._recent.append(seconds)
        level, now = self._level, self._clock()
        # What the frame costs before the model on the same thread (noise reduction) counts too.
        budget = self.budget_s - self.overhead_s
        # Judged on up to a second of calls, once a second, unless far over: 9 calls
        # re-judged at every call gave jitter alone a new chance each frame to cross a
        # threshold. A model that kept up at full size (mean 81 % of the frame period, calls
        # varying by 25 %) stepped down and back up every 10 s, the detail changing each time.
        # Seconds, not calls: a 5 fps source, or a model skipping every other frame, took
        # 30 calls far longer than a second.
        enough = len(self._recent) >= self.QUICK
        judge = enough and now - self._judged >= self.JUDGE_S
        quick = enough and (
            _trimmed_mean(list(self._recent)[-self.QUICK :]) > self.QUICK_OVER * budget
        )
        # Trimmed: one slow call (a GC pause, another app's burst, OpenVINO compiling for a new
        # frame size) would pull a plain mean over the budget and cost `recover_s` at a lower
        # resolution.
        typical = _trimmed_mean(self._recent) if judge else 0.0
        wanted = None
        if (quick or (judge and typical > budget)) and level + 1 < len(self._ladder):
            # Past each scale predicted far too slow itself (the time now times the pixel
            # ratio, over QUICK_OVER times the budget), not one step at a time: each step
            # waited for 8 calls and a compile beside the stream (which slows it on two cores),
            # and 1x -> 0.5x took 11-13 s at 6-15 fps.
            # The time now is what the last 3 calls all took at least: at a sudden overload
            # the last 8 still hold calls from before it, and predicted 0.875 to fit where it
            # took 4x the budget. Not their median, nor the mean of the last 8: two stalls
            # (a GC pause, a compile beside the stream) in a row sent a model that kept up
            # straight to 0.5x, with two compiles, where one step was the most they called for.
            now_s = max(typical, min(list(self._recent)[-3:]))
            wanted = level + 1
            while (
                wanted + 1 < len(self._ladder)
                and now_s * (self._ladder[wanted] / self._scale) ** 2 > self.QUICK_OVER * budget
            ):
                wanted += 1
        elif judge and level > 0:
            # Up as far as predicted with room to spare (a cost falls slower than the pixels,
            # so the prediction errs large), but not past a scale left within its wait.
            up = level
            while up > 0:
                larger = self._ladder[up - 1]
                predicted = typical * (larger / self._scale) ** 2
                wait = self._wait.get(larger, self._recover_s)
                if predicted >= 0.8 * budget or now - self._left.get(larger, -np.inf) < wait:
                    break
                up -= 1
            if up < level:
                wanted = up
        if wanted is not None and self._preparing is not None:
            # A size being readied for a step the same way is kept: another judgement changing
            # the target would throw that compile away and start another. Up, only where no
            # larger than this judgement allows: a full size readied while the load rose again
            # was stepped to though now predicted over the budget (an attempt that failed, and
            # doubled its next wait).
            readying = self._preparing[0]
            for other, scale in enumerate(self._ladder):
                if self._frame is not None and readying == scaled_size(
                    self._frame, scale, self.multiple
                ):
                    if other != level and (other > level) == (wanted > level):
                        wanted = other if wanted > level else max(other, wanted)
                    break
        if wanted is None:
            if judge:
                self._judged = now
        elif self._is_ready(wanted):
            if wanted > level:
                self._left[self._scale] = now
                # An attempt at this scale that failed soon after: the next waits twice as
                # long (up to RECOVER_MAX_S). A load that comes and goes (another app's
                # bursts) flipped the detail every 10 s for as long as it lasted.
                failed = self._raised_at is not None and now - self._raised_at < 2 * self._recover_s
                wait = self._wait.get(self._scale, self._recover_s)
                self._wait[self._scale] = (
                    min(max(2 * wait, self._recover_s), self.RECOVER_MAX_S)
                    if failed
                    else self._recover_s
                )
                self._raised_at = None
            else:
                self._raised_at = now
            self._step(wanted)
        # else: readied beside the stream; asked again at the next call, and stepped to then

    def _is_ready(self, level: int) -> bool:
        """Whether the wrapped backend is ready for frames at ``level``'s scale; if not, it is
        readied (its ``prepare``) on a thread of its own while the stream goes on at the scale
        it has. Stepping first froze the video 0.4-0.8 s at each new scale while OpenVINO
        compiled for it on the inference thread (about 3 s in a call's first 8 s)."""
        prepare = getattr(self.inner, "prepare", None)
        if not callable(prepare) or self._frame is None:
            return True  # nothing to ready (ONNX Runtime, torch): its first call is the cost
        size = scaled_size(self._frame, self._ladder[level], self.multiple)
        if self._preparing is not None:
            readying, thread = self._preparing
            if thread.is_alive():
                # One at a time (two compiles would halve the stream's cores), and no step
                # while it may still use what it compiled.
                return False
            self._preparing = None
            self._ready.add(readying)
            if readying == size:
                return True  # ready; or failed, and the step's first call says why
        # Asked of the backend where it can say: its cache drops sizes (at 4K, full size
        # once the next two scales were compiled), and a size once ready may be gone.
        is_prepared = getattr(self.inner, "is_prepared", None)
        if callable(is_prepared):
            if is_prepared(size):
                return True
        elif size in self._ready or size == self._frame:
            return True

        try:
            beside = "beside" in inspect.signature(prepare).parameters
        except (TypeError, ValueError):  # no signature to read (a builtin)
            beside = False

        def ready() -> None:
            try:
                prepare(size, beside=True) if beside else prepare(size)
            except Exception:  # the step's first call compiles it again and says why
                log.debug("preparing %s failed", size, exc_info=True)

        thread = threading.Thread(target=ready, name="sharpcam-prepare", daemon=True)
        self._preparing = (size, thread)
        thread.start()
        return False

    def reset(self) -> None:
        """``auto`` only: back to full resolution, forgetting the call times and the steps down.

        What a stream of another frame size should start from: the benchmark calls it before
        each size, so that a small size's row does not start at the scale a large one left, and
        stay there within ``recover_s`` of that step down (640x360 ran at 0.625x throughout, after
        a 1280x720 row). A fixed scale has nothing to reset.
        """
        if self.adaptive:
            self._left.clear()
            self._wait.clear()
            self._raised_at = None
            self._step(0)

    def _step(self, level: int) -> None:
        if self._ladder[level] != self._scale:
            log.info("processing scale %g -> %g", self._scale, self._ladder[level])
        self._level = level
        self._scale = self._ladder[level]
        self._recent.clear()
        self._calls = 0
        self._judged = self._clock()

    def close(self) -> None:
        if self._preparing is not None:
            # Not closed under a compile: OpenVINO's model would be freed while in use.
            self._preparing[1].join(timeout=30.0)
            self._preparing = None
        if not self._closed:
            self.inner.close()
        self._buffers = None  # full-size frames: the closed backend may be kept a while
        super().close()

    def __repr__(self) -> str:
        return f"<ScaledBackend {self.provider!r}>"


# --------------------------------------------------------------------------- registry


BACKENDS: dict[str, type] = {
    "onnx": OnnxBackend,
    "openvino": OpenVinoBackend,
    "torch": TorchBackend,
    "unsharp": UnsharpBackend,
    "passthrough": PassthroughBackend,
}


def register_backend(name: str, cls: type) -> None:
    """Add (or replace) a backend class under `name`; it is built as `cls(**options)`."""
    if not name or name == "auto":
        raise ValueError(f"invalid backend name {name!r}")
    BACKENDS[name] = cls


def list_backends() -> list[str]:
    """Registered backends whose runtime is importable here (without ``auto``)."""
    out = []
    for name, cls in BACKENDS.items():
        check: Callable[[], bool] | None = getattr(cls, "available", None)
        if check is None or check():
            out.append(name)
    return out


def _accepts(cls: type, key: str) -> bool:
    params = inspect.signature(cls).parameters
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _build(name: str, model: Any, device: str, threads: int | None, options: dict) -> Any:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}"
        ) from None
    kwargs = dict(options)
    for key, value in (("device", device), ("threads", threads)):
        if _accepts(cls, key):
            kwargs[key] = value
    if getattr(cls, "needs_model", False) or (model is not None and _accepts(cls, "model")):
        kwargs["model"] = model
    return cls(**kwargs)


def _no_model_error(suffix: str = ".onnx") -> ModelError:
    # The names of the files that were looked for: the torch backend wants `.ts` files, and
    # naming the `.onnx` ones that sit right there sends a person looking in the wrong place.
    return ModelError(
        f"no model given and none in {weights_dir()} "
        f"(expected student_fast{suffix} or student{suffix}): pass --model PATH, or set "
        "SHARPCAM_WEIGHTS to a folder holding them"
    )


def create_backend(
    name: str = "auto",
    *,
    model: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    scale: float | str = 1.0,
    target_fps: float = 30.0,
    **options: Any,
) -> Backend:
    """Build a backend by registry name, or the fastest that starts here with ``auto``.

    Args:
        name: ``auto`` or a `BACKENDS` key.
        model: model file; default: the shipped one for the device (`resolve_default_model`).
        device: ``auto`` | ``cpu`` | ``gpu``.
        threads: CPU threads for the runtime (default: physical cores).
        scale: processing scale in (0, 1], or ``"auto"`` to fit ``target_fps``: below 1 the
            backend is wrapped in a :class:`ScaledBackend` (a lower-resolution model call).
        target_fps: the frame rate ``scale="auto"`` keeps up with (the camera's).
        options: passed to the backend class (e.g. ``precision="f32"`` for OpenVINO).

    Raises:
        ModelError: the model is missing, corrupt or breaks the contract.
        ModelIntegrityError: the model does not match its manifest's sha256.
        BackendError: the backend cannot start (for ``auto``: every failure, one per line).
    """
    if device not in DEVICES:
        raise BackendError(f"device must be one of {DEVICES}, got {device!r}")
    parsed = parse_scale(scale)  # bad input fails before any runtime starts
    if parsed != 1.0 and name != "passthrough" and not target_fps > 0:
        # ScaledBackend's own check came after the model had loaded, and left it open.
        raise BackendError(f"target_fps must be > 0, got {target_fps!r}")
    backend: Backend | None = None
    if name != "auto":
        cls = BACKENDS.get(name)
        cpu_model: Path | None = None  # the default model to use if the GPU does not come up
        if cls is not None and getattr(cls, "needs_model", False):
            if model is None:
                probe = getattr(cls, "gpu_listed", _ort_gpu_listed)
                gpu = device in ("gpu", "cuda") or (device == "auto" and probe())
                if gpu and device == "auto":
                    cpu_model = resolve_default_model(False, getattr(cls, "model_suffix", ".onnx"))
                # int8 only under OpenVINO (`prefer_int8`): ONNX Runtime runs its QDQ graph
                # slower than the float one on AMX (86-103 against 68-92 ms at 720p), and no
                # faster on AVX2 alone (0.95-1.04 of it; OpenVINO's int8 there is 0.7).
                if name == "openvino" and not gpu and prefer_int8(options.get("precision")):
                    backend = _try_int8(name, device, threads, options)
                if backend is None:
                    suffix = getattr(cls, "model_suffix", ".onnx")
                    model = _default_model_to_run(gpu, suffix=suffix)
                    if model is None:
                        raise _no_model_error(suffix)
            if backend is None and getattr(cls, "available", lambda: True)():
                model = open_model(model)  # verified once, here
                _check_format(name, cls, model)
        if backend is None:
            backend = _build(name, model, device, threads, options)
            providers = getattr(backend, "providers", None)
            if (
                cpu_model is not None
                and providers
                and providers[0] not in ORT_GPU_PROVIDERS
                and cpu_model != getattr(model, "path", model)
            ):
                # onnxruntime-gpu lists CUDA on machines without a GPU, so the GPU student was
                # picked; the session fell back to the CPU, where it costs ~6x the CPU student.
                backend.close()
                backend = _build(name, open_model(cpu_model), device, threads, options)
    else:
        backend = _create_auto(model, device, threads, options)
    if parsed == 1.0 or name == "passthrough":
        return backend
    try:
        return ScaledBackend(backend, parsed, target_fps=target_fps)
    except BaseException:
        backend.close()  # refused (a fixed-size model below 1): its session must not stay
        raise


#: format -> (a file of it, the format, the suffix of the shipped files)
_FORMATS = {
    "onnx": ("an ONNX file", "ONNX", ".onnx"),
    "torchscript": ("a TorchScript file", "TorchScript", ".ts"),
}


def _check_format(name: str, cls: type, model: ModelFile) -> None:
    """Refuse a model file in another format than backend ``name`` runs, when its manifest
    entry or its suffix says which: the runtime's own error named neither (``--backend torch
    --model student_fast.onnx``: "PytorchStreamReader failed reading zip archive ...")."""
    runs = getattr(cls, "model_format", None)
    suffix = model.path.suffix.lower()
    if suffix == ".xml" and runs in _FORMATS and name != "openvino":
        # OpenVINO's own format, which only its backend reads: ONNX Runtime said "Protobuf
        # parsing failed", torch that the file was corrupted.
        raise ModelError(
            f"cannot load model {model.path}: it is an OpenVINO IR file and the {name} backend "
            f"runs {_FORMATS[runs][1]} models (use the openvino backend for it, or a "
            f"{_FORMATS[runs][2]} file)"
        )
    known = model.entry.format if model.entry else _SUFFIX_FORMAT.get(suffix)
    if runs not in _FORMATS or known not in _FORMATS or known == runs:
        return
    others = [n for n, c in BACKENDS.items() if getattr(c, "model_format", None) == known]
    use = f"the {' or '.join(others)} backend for it, or " if others else ""
    what = _FORMATS[known][0]
    if model.entry is None and model.path.suffix.lower() in (".pt", ".pth"):
        # Also a training checkpoint's suffix (runs/*/best.pt), which no backend runs: the
        # torch backend would refuse it as "a dict, not a model".
        what = "a PyTorch file"
        use = (
            f"the {' or '.join(others)} backend for a TorchScript one; a training checkpoint "
            "is exported first with python -m training.export; or "
            if others
            else ""
        )
    raise ModelError(
        f"cannot load model {model.path}: it is {what} and the {name} backend "
        f"runs {_FORMATS[runs][1]} models (use {use}a {_FORMATS[runs][2]} file)"
    )


def _try_int8(name: str, device: str, threads: int | None, options: dict) -> Backend | None:
    """The shipped int8 CPU student on backend ``name``; None when it does not ship (or belongs
    to other weights), and None with a warning when it is damaged or will not start: the float
    student beside it is the same network."""
    path = resolve_default_model(prefer_gpu=False, int8=True)
    if path is None or path.name != INT8_NAME:
        return None
    try:
        built = _build(name, open_model(path), device, threads, options)
    except (ModelError, BackendError) as exc:
        warn_user(f"{INT8_NAME} not usable ({exc}); using the float model")
        return None
    _check_float_beside(path.parent)
    return built


def _check_float_beside(folder: Path) -> None:
    """Warn when the float CPU student beside the int8 one is missing or damaged: the int8
    file runs well without it, and a damaged shipped file went unsaid on the default path
    (the onnx backend, ``--precision`` and the GPU-less ``auto`` of another CPU need it)."""
    path = folder / "student_fast.onnx"
    try:
        verify_file(path)
        return
    except ModelIntegrityError:
        why = "does not match manifest.json (damaged or replaced)"
    except (ModelError, OSError) as exc:
        why = "is missing" if not path.exists() else f"cannot be checked ({exc})"
    warn_user(
        f"{path.name} in {folder} {why}: running {INT8_NAME}, its int8 copy; reinstall "
        "SharpCam to repair it"
    )


def _ort_gpu_listed() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return any(p in ORT_AUTO_GPU_PROVIDERS for p in ort.get_available_providers())


def _create_auto(model: Any, device: str, threads: int | None, options: dict) -> Backend:
    """Try backends in order of expected speed; the first that starts wins."""
    verified: dict[Path, ModelFile] = {}

    def model_for(gpu: bool) -> ModelFile:
        path = Path(model) if model is not None else _default_model_to_run(gpu)
        if path is None:
            raise _no_model_error()
        if path not in verified:
            verified[path] = open_model(path)  # each distinct file hashed once
        return verified[path]

    attempts: list[tuple[str, str, bool]] = []  # (backend, device, model for GPU)
    explicit_fmt = None
    if model is not None:
        explicit_fmt = model_for(False).format
    want_gpu, want_cpu = device in ("auto", "gpu", "cuda"), device in ("auto", "cpu")
    if explicit_fmt == "torchscript":
        attempts.append(("torch", device, True))
    else:
        if want_gpu and _ort_gpu_listed():
            attempts.append(("onnx", "gpu", True))
        if want_cpu:
            attempts += [("openvino", "cpu", False), ("onnx", "cpu", False)]
    if not attempts:
        raise BackendError(f"auto: no backend can run on device {device!r} here")

    failures: list[tuple[str, BaseException]] = []
    for backend, dev, gpu in attempts:
        label = f"{backend} ({dev})"
        cls = BACKENDS.get(backend)
        if cls is None or not cls.available():
            hint = f": {INSTALL_HINTS[backend]}" if backend in INSTALL_HINTS else ""
            failures.append((label, BackendError(f"{backend} runtime is not installed{hint}")))
            continue
        try:
            opts = {k: v for k, v in options.items() if _accepts(cls, k)}
            if backend == "openvino" and model is None and prefer_int8(opts.get("precision")):
                built = _try_int8(backend, dev, threads, opts)
                if built is not None:
                    return built
            return _build(backend, model_for(gpu), dev, threads, opts)
        except ModelIntegrityError as exc:
            if not (gpu and model is None and want_cpu):
                raise
            # The GPU student is hashed before its session shows whether a GPU is up: a
            # damaged student.onnx refused to start a CPU-only machine whose CPU student (what
            # would run there) was intact.
            warn_user(f"{exc}; trying the CPU student")
            failures.append((label, exc))
        except Exception as exc:  # collected: auto reports every failure together
            failures.append((label, exc))
    # A broken model fails every runtime the same way: say that, not "no backend".
    model_errors = [e for _, e in failures if isinstance(e, ModelError)]
    if model_errors and len(model_errors) == len(failures):
        raise model_errors[0]
    lines = "\n".join(f"  {label}: {exc}" for label, exc in failures)
    raise BackendError(f"no backend could start:\n{lines}")


# --------------------------------------------------------------------------- install check

_ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
)


def _installed_distributions() -> set[str]:
    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name:
            names.add(name)
    return names


def check_onnxruntime_install() -> str | None:
    """A warning when several onnxruntime builds are installed together, else None.

    They all install the same `onnxruntime` module, so the last one installed silently
    overwrites parts of the others (typically the GPU providers vanish).
    """
    found = [d for d in _ORT_DISTRIBUTIONS if d in _installed_distributions()]
    if len(found) < 2:
        return None
    keep = next((d for d in found if d != "onnxruntime"), found[-1])
    return (
        f"{' and '.join(found)} are installed together; they ship the same 'onnxruntime' "
        f"module and break each other. Fix: pip uninstall -y {' '.join(found)} && "
        f"pip install {keep}"
    )
