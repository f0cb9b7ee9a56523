"""SharpCam command line: the desktop app, live streaming, offline processing, benchmark, devices.

    python main.py                         start the desktop app (GUI options below)
    python main.py run --source 0 --output virtual
    python main.py process IN OUT          video -> video, image -> image, folder -> folder
    python main.py bench [--json]
    python main.py devices

Exit codes: 0 success (also after Ctrl-C or SIGTERM in ``run``, or Ctrl-Break or closing the
console window on Windows, which sends no SIGTERM: that is the normal way to end a live stream,
and the output file is closed and playable), 1 runtime error (missing file, bad
model, no virtual camera, camera not found, images of a folder skipped, a video whose decoding failed
partway: what was done is kept; fewer frames than a video's container announces is a warning), 2 usage error (bad option or ``--size`` syntax,
``--model`` for a backend that runs none), 130 ``process`` interrupted by Ctrl-C (its output is
closed but incomplete) or ``bench`` interrupted (the rows measured before it are printed), 141
the reader of stdout went away (``devices | head -1``): nothing is said, as by a Unix tool there.
Errors are one line on stderr, never a traceback (set ``SHARPCAM_DEBUG=1`` to get one); a folder's
skipped images get one line each before it.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # parsing loads no engine
    from engine.sinks import LostMetadata

# Before anything imports cv2 (the engine and the app do, lazily): on Windows each C runtime
# copies the environment when it loads, so OpenCV never sees a value set later. Hardware
# transforms make Media Foundation, the first camera API on Windows, take seconds to open many
# webcams (opencv/opencv#17687). setdefault so a user's own value wins.
os.environ.setdefault("OPENCV_VIDEOIO_MSMF_ENABLE_HW_TRANSFORMS", "0")
if not os.environ.get("SHARPCAM_DEBUG"):
    # OpenCV and FFmpeg print their own lines ("moov atom not found", "IHDR chunk shall be
    # first") above the one-line error that already names the file and the problem.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "FATAL")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL

PROG = "sharpcam"
_T = TypeVar("_T")
BACKEND_CHOICES = ("auto", "onnx", "openvino", "torch", "unsharp", "passthrough")
#: Backends that run no model file (engine.bench.MODEL_BACKENDS are the others; not imported:
#: parsing loads no engine).
MODELLESS_BACKENDS = ("unsharp", "passthrough")
#: Environment variable naming a pyvirtualcam backend for ``--output virtual`` (tests register a
#: recording backend with ``pyvirtualcam.register_backend`` and select it this way).
VIRTUAL_BACKEND_ENV = "SHARPCAM_VIRTUAL_BACKEND"
STATUS_PERIOD_TTY = 0.25  # s between in-place status refreshes on a terminal
STATUS_PERIOD_PIPE = 5.0  # s between status lines when stdout/stderr is not a terminal
NEWS_PERIOD = 0.5  # s between looks for a new warning, which `run` prints at once
#: The exit status where the reader of stdout went away (``devices | head -1``): 128 + SIGPIPE,
#: what a shell reports for ``cat`` or ``ls`` there (killed by the signal), so that a script
#: which lets that pass (``set -o pipefail``) lets SharpCam's pass too; 1 is a runtime error.
EXIT_BROKEN_PIPE = 141


class CliError(Exception):
    """A failure to report as one line on stderr with exit code ``code`` (1 runtime, 2 usage)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- parsing


_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
#: The largest side ``--size`` takes: 8K (DCI 8192x4320). A typo like 100000x100000 used to be
#: accepted and every frame resized to it: 30 GB a frame, an allocation failure mid-stream or
#: the out-of-memory killer.
MAX_SIDE = 8192


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)`` (width, height); raises ``ArgumentTypeError`` otherwise."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: width and height must be >= 16")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise argparse.ArgumentTypeError(
            f"bad size {text!r}: width and height must be <= {MAX_SIDE}"
        )
    return w, h


def _path(text: str) -> str:
    """A file, folder or device argument (``~`` expanded); an empty one is a usage error.

    ``Path("")`` is the current folder: ``--output ""`` (a shell variable that expanded to
    nothing) wrote numbered PNGs into it, and ``--source ""`` streamed its images.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    # `~` expanded as --model's is: a shell leaves it alone after `--output=` or in quotes, and
    # `process a.png "~/out/a.png"` made a folder named `~` in the current one.
    return os.path.expanduser(text)


def parse_size_list(text: str) -> list[tuple[int, int]]:
    """``"640x360,1280x720"`` -> ``[(640, 360), (1280, 720)]``."""
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        # An empty list (a shell variable that expanded to nothing) benchmarked nothing and
        # printed an empty table with exit code 0.
        raise argparse.ArgumentTypeError(f"bad size list {text!r}: expected WxH[,WxH...]")
    return sizes


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


#: The longest ``--quit-after``: the app's timer counts int32 milliseconds (24.8 days).
MAX_QUIT_AFTER_S = (2**31 - 1) / 1000.0


def _quit_after(text: str) -> float:
    value = _positive_float(text)
    # Past it (or inf) the app opened its window and camera, then failed with an empty
    # "OverflowError: " where the timer was set.
    if not value <= MAX_QUIT_AFTER_S:
        raise argparse.ArgumentTypeError(
            f"expected at most {int(MAX_QUIT_AFTER_S)} seconds (24 days), got {text!r}"
        )
    return value


def _fps(text: str) -> float:
    from engine.sources import FPS_RANGE

    lo, hi = FPS_RANGE
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    # Sources treat a rate outside this range as "not given" and fall back to 30: refuse it
    # here rather than run at another rate than the one asked for.
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"fps must be in [{lo:g}, {hi:g}], got {text!r}")
    return value


DENOISE_HELP = (
    "reduce a dim camera's noise before sharpening: where the scene holds still, frames are "
    "averaged; what moves has its grain flattened within the frame, its edges kept; colour "
    "speckle is smoothed everywhere; a clean picture passes untouched"
)


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"strength must be in [0, 1], got {text!r}")
    return value


def _scale(text: str) -> float | str:
    if text.strip().lower() == "auto":
        # argparse converts the string default "auto" on every parse: importing the engine
        # (OpenCV, a second) there kept `run`'s Ctrl-C handling from starting for that long.
        return "auto"
    from engine.backends import BackendError, parse_scale

    try:
        return parse_scale(text)
    except BackendError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fixed_scale(text: str) -> float:
    # Offline, "auto" would make the output depend on how busy the machine was.
    value = _scale(text)
    if value == "auto":
        raise argparse.ArgumentTypeError("process takes a fixed scale in (0, 1], not 'auto'")
    return float(value)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def package_version() -> str:
    """SharpCam's version: the installed package's, else the one in ``pyproject.toml`` beside
    this file (a checkout run as ``python main.py`` without ``pip install -e .``)."""
    from importlib import metadata

    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parent / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    # The [project] table's own key (tomllib is Python 3.11+; 3.10 is supported).
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = project and re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
    return found.group(1) if found else "unknown"


class _VersionAction(argparse.Action):
    """``--version``: looked up only when asked (the package metadata scan costs every start)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        print(f"{PROG} {package_version()}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (plus the usage) and exit code 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise CliError(f"{self.prog}: error: {message}", code=2)

    def print_help(self, file: Any = None) -> None:
        # argparse's drops a failed write: `--help | head -0` exited 0, the reader's going
        # unnoticed; main() ends as where any other output's reader went (EXIT_BROKEN_PIPE).
        (file or sys.stdout).write(self.format_help())


def _add_model_options(p: argparse.ArgumentParser, default_backend: str = "auto") -> None:
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=default_backend,
        help=f"inference backend (default: {default_backend}: the fastest available)",
    )
    p.add_argument(
        "--model", type=_path, metavar="PATH", help="model file (default: the shipped weights)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``sharpcam`` argument parser (subcommands run, process, bench, devices; none = GUI)."""
    parser = _Parser(
        prog=PROG,
        description="SharpCam: real-time motion deblurring for video calls. "
        "Without a command, starts the desktop app.",
        epilog="Exit codes: 0 ok (also Ctrl-C in 'run'), 1 runtime error, 2 usage error, "
        "130 'process' interrupted (its output kept as NAME.incomplete.EXT) or 'bench' "
        "interrupted (after printing the rows measured before it), 141 the reader of its "
        "output went away ('devices | head -1').",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    gui = parser.add_argument_group("desktop app options (no command)")
    # Own dests: a command's options of the same name would silently overwrite these.
    gui.add_argument(
        "--source",
        dest="gui_source",
        type=_path,
        metavar="SRC",
        help="camera index or video/image path",
    )
    gui.add_argument(
        "--screenshot",
        dest="gui_screenshot",
        type=_path,
        metavar="OUT.png",
        help="save a window screenshot",
    )
    gui.add_argument(
        "--quit-after",
        dest="gui_quit_after",
        metavar="SECONDS",
        type=_quit_after,
        help="close the app after SECONDS (with --screenshot: taken then; default 3 there)",
    )
    gui.add_argument(
        "--backend", dest="gui_backend", choices=BACKEND_CHOICES, help="inference backend"
    )
    gui.add_argument("--model", dest="gui_model", type=_path, metavar="PATH", help="model file")

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="live: camera or video -> virtual camera or file")
    run.add_argument(
        "--source",
        required=True,
        type=_path,
        metavar="0|PATH",
        help="camera index or device, video file, image or folder of images",
    )
    run.add_argument(
        "--output",
        required=True,
        type=_path,
        metavar="virtual|PATH",
        help="'virtual' (the first usable virtual camera; 'virtual:DEVICE' names one, e.g. "
        "virtual:/dev/video10), a video file, or a folder (numbered PNGs)",
    )
    _add_model_options(run)
    run.add_argument(
        "--size",
        type=parse_size,
        metavar="WxH",
        help="capture size (camera: 1280x720); a file, image or folder is scaled to fit it, "
        "letterboxed",
    )
    run.add_argument(
        "--fps",
        type=_fps,
        help="capture FPS of a camera, repeat rate of an image or folder (default 30); a video "
        "file plays at its own rate",
    )
    run.add_argument(
        "--strength", type=_strength, default=1.0, help="0 = input, 1 = model (default)"
    )
    run.add_argument("--denoise", action="store_true", help=DENOISE_HELP)
    run.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after")
    run.add_argument(
        "--scale",
        type=_scale,
        default="auto",
        metavar="S|auto",
        help="processing scale in (0, 1]: the model runs on a frame this much smaller and its "
        "correction is upsampled (default auto: full size while the model keeps up with the "
        "source's FPS, smaller steps down to 0.5 when it does not)",
    )
    # Hidden: which pyvirtualcam backend 'virtual' uses (tests register a recording one).
    run.add_argument("--virtual-backend", help=argparse.SUPPRESS)

    proc = sub.add_parser(
        "process", help="offline: video -> video, image -> image, folder -> folder, every frame"
    )
    proc.add_argument(
        "input", type=_path, metavar="IN", help="video file, image file or folder of images"
    )
    proc.add_argument("output", type=_path, metavar="OUT", help="video file, image file or folder")
    _add_model_options(proc)
    proc.add_argument(
        "--strength", type=_strength, default=1.0, help="0 = input, 1 = model (default)"
    )
    proc.add_argument("--denoise", action="store_true", help=DENOISE_HELP + " (videos; not photos)")
    proc.add_argument(
        "--scale",
        type=_fixed_scale,
        default=1.0,
        metavar="S",
        help="processing scale in (0, 1] (default 1: full size; offline there is no hurry)",
    )
    proc.add_argument(
        "--progress",
        choices=("bar", "lines"),
        default="bar",
        help="bar: a progress bar (default); lines: a 'frames N/TOTAL' line on stderr at most "
        "four times a second (TOTAL '?' when the input does not say), for logs and programs",
    )
    proc.add_argument(
        "--low-priority",
        action="store_true",
        help="run below normal priority, so that a live stream (a call) keeps the CPU "
        "(the app's 'Save sharpened copy' does)",
    )
    proc.add_argument(
        "--stop-on-eof",
        action="store_true",
        help="stop as Ctrl-C does (exit 130, the frames so far kept) when standard input "
        "closes: how a program that started process stops it on every OS (so not with "
        "stdin from /dev/null, nohup or ssh -n, where it is closed from the start)",
    )
    proc.add_argument(
        "--overwrite",
        action="store_true",
        help="folder -> folder: replace files of the same names already in the output folder "
        "(without it such a run is refused before anything is written)",
    )

    bench = sub.add_parser("bench", help="model-only vs. full-pipeline speed per backend and size")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--size",
        type=parse_size_list,
        action="append",
        metavar="WxH[,WxH]",
        help="frame size, repeatable or comma list (default 640x360,1280x720)",
    )
    bench.add_argument(
        "--frames",
        type=_positive_int,
        default=None,
        help="timed frames per measure (default 120), spread over 12 alternating rounds of at "
        "least 2 frames each (so at least 24)",
    )
    bench.add_argument(
        "--backend",
        action="append",
        choices=BACKEND_CHOICES,
        help="repeatable (default: every available model backend + unsharp)",
    )
    bench.add_argument(
        "--model", type=_path, metavar="PATH", help="model file (default: the shipped weights)"
    )
    bench.add_argument(
        "--precision",
        choices=("f32", "bf16", "f16"),
        help="force OpenVINO's inference precision in the openvino rows (the auto row times "
        "what the app runs: OpenVINO's choice, bf16 on CPUs that have it); the default model is "
        "then always the float one: with --precision f32 add --model "
        "WEIGHTS/student_fast_int8.onnx to time what a CPU without bf16 runs (WEIGHTS: the "
        "shipped weights folder, which 'devices' names)",
    )

    bench.add_argument(
        "--scale",
        type=_scale,
        action="append",
        metavar="S|auto",
        help="processing scale in (0, 1], repeatable (default 1): the model runs on a frame "
        "this much smaller and its correction is upsampled; auto adapts to 30 FPS",
    )
    bench.add_argument(
        "--denoise",
        action="store_true",
        help="time the pipeline with noise reduction on (run --denoise); the bench clip's fine "
        "texture reads as noise, so every frame is filtered: its full cost",
    )

    sub.add_parser("devices", help="list cameras, virtual camera and ONNX Runtime providers")
    return parser


# --------------------------------------------------------------------------- helpers


def _frames(n: int) -> str:
    """``"1 frame"``, ``"2 frames"``."""
    return f"{n} frame{'' if n == 1 else 's'}"


def _kept_where(sink: object, said: object) -> str:
    """``"; 5 frames are kept in out.incomplete.mp4"`` for a video sink that kept the frames
    of an unfinished file (:meth:`engine.sinks.VideoFileSink.kept_phrase`), else ""; "" too
    where the error ``said`` names that file already (a failure as FFmpeg finished it)."""
    phrase = getattr(sink, "kept_phrase", None)
    text = phrase() if phrase is not None else ""
    return f"; {text}" if text and str(getattr(sink, "kept_path", "")) not in str(said) else ""


def _eprint(*parts: object) -> None:
    try:
        print(*parts, file=sys.stderr, flush=True)
    except OSError:
        # The reader went away (`2>&1 | head`, a log forwarder that exited): what is said here
        # must never end a stream, nor decide whether its recording counts as complete.
        _silence_stderr()


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone: a BrokenPipeError was stdout's, not
    another pipe's (one to FFmpeg, which the engine handles itself)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    poll = getattr(select, "poll", None)  # POSIX; its text may all have been written before
    if poll is None:
        return False
    try:
        watch = poll()
        watch.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in watch.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _stdout_gone() -> int:
    """The reader of stdout went away (``devices | head -1``): nothing is said, as a Unix tool
    says nothing there (it said "error: BrokenPipeError", exit 1). Stdout goes to
    ``os.devnull`` from now on, as Python's documentation of SIGPIPE advises, so that the
    interpreter's own flush at exit does not fail on it again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return EXIT_BROKEN_PIPE


def _flushed(code: int) -> int:
    """``code``, once what stdout still holds is written (:data:`EXIT_BROKEN_PIPE` where its
    reader has gone: said here, not by Python's flush at exit)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_gone()
    except (OSError, ValueError):
        pass  # not a reader gone: what the command did stands
    return code


def _silence_stderr() -> None:
    """Send what is still said to stderr nowhere (it has no reader any more); Python's own
    flush at exit would otherwise fail on it again."""
    try:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    except OSError:
        pass


def _describe_backend(backend: Any) -> str:
    name = str(getattr(backend, "name", type(backend).__name__))
    provider = getattr(backend, "provider", None)
    return f"{name} · {provider}" if provider and provider != name else name


def _open_source(
    spec: str, *, live: bool, size: tuple[int, int] | None, fps: float | None, **options: Any
) -> Any:
    """``engine.open_source`` with its errors turned into one-line ``CliError``s."""
    from engine.sources import CameraNotFoundError, SourceError, open_source

    try:
        return open_source(spec, live=live, size=size, fps=fps, **options)
    except (CameraNotFoundError, SourceError) as exc:
        raise CliError(str(exc)) from exc  # the engine's messages name the file / list cameras
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot open {spec}: {exc}") from exc


def _model_file(model: str) -> Path:
    """``--model PATH`` as the engine opens it (``engine.backends.open_model``): with ``~``
    expanded, which the shell leaves in ``--model=~/m.onnx`` (it expands only a word's start)."""
    return Path(model).expanduser()


def _missing_model(model: str) -> str:
    """Why ``--model PATH`` (not a file) cannot load, in the user's words."""
    if _model_file(model).is_dir():
        from engine.backends import model_folder_message

        return model_folder_message(_model_file(model))
    return f"model file not found: {model}"


def _open_backend(
    name: str,
    model: str | None,
    *,
    live: bool,
    scale: float | str = 1.0,
    target_fps: float = 30.0,
) -> tuple[Any, str | None]:
    """Create the backend; live, a shipped model that fails falls back to passthrough with a
    warning.

    Returns ``(backend, warning or None)``. Any other failure is fatal (``CliError``): offline,
    output that is silently unprocessed would be worse than no output; live, a ``--model`` or a
    ``--backend`` runtime the user named that cannot start is theirs to fix, where streaming
    on unsharpened passed it off as a working run.
    """
    from engine.backends import create_backend

    if model is not None and not _model_file(model).is_file():
        problem: Exception | None = FileNotFoundError(_missing_model(model))
    else:
        problem = None
        try:
            return create_backend(name, model=model, scale=scale, target_fps=target_fps), None
        except Exception as exc:  # missing, corrupt or sha256-mismatched model; no runtime
            problem = exc
    if not live or not _shipped_model_failed(name, model, problem):
        raise CliError(f"cannot start backend '{name}': {problem}")
    warning = f"{name} backend failed ({problem}); streaming unprocessed (passthrough)"
    return create_backend("passthrough"), warning


def _shipped_model_failed(name: str, model: str | None, problem: Exception) -> bool:
    """Whether what failed is nothing the user named: the shipped weights (missing, damaged)
    under ``auto`` or a named backend whose runtime is here, or ``auto`` finding no runtime.

    A live stream keeps going through those (a call must not drop because a file in
    ``weights/`` broke); a named backend whose runtime is missing fails as the user's choice.
    """
    from engine.backends import BACKENDS
    from engine.manifest import ModelError

    if model is not None:
        return False
    if name == "auto":
        return True
    available = getattr(BACKENDS.get(name), "available", lambda: True)
    return isinstance(problem, ModelError) and bool(available())


class _StatusLine:
    """The live status: redrawn in place on a terminal, one line every few seconds otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.period = STATUS_PERIOD_TTY if self.tty else STATUS_PERIOD_PIPE
        self._last = -1e9
        self._width = 0

    def due(self, now: float) -> bool:
        return now - self._last >= self.period

    def _write(self, text: str) -> None:
        if self.stream is None:
            return  # its reader went away: the stream goes on without a status line
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:
            self.stream = None
            _silence_stderr()

    def show(self, text: str, now: float) -> None:
        self._last = now
        if self.tty:
            # A line wider than the terminal wraps, and \r then redraws only its last row. Cut
            # in the middle: what it says last (the scale, a grainy camera's advice, a warning)
            # was cut off at every usual width.
            cols = max(20, shutil.get_terminal_size().columns - 1)
            if len(text) > cols:
                head = (cols - 1) // 2
                text = text[:head] + "…" + text[len(text) - (cols - 1 - head) :]
            pad = " " * max(0, self._width - len(text))  # erase the tail of a longer line
            self._write("\r" + text + pad)
            self._width = len(text)
        else:
            self._write(text + "\n")

    def note(self, text: str) -> None:
        """A line of its own (a warning in full), above the status line."""
        if self.tty and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0
        self._write(text + "\n")

    def finish(self) -> None:
        if self.tty and self._width:
            self._write("\n")


#: What `process` says of a grainy video it sharpened without --denoise (the window's save
#: names its switch instead: app.save).
GRAIN_ADVICE = "--denoise would reduce it"


def _noise_levels(noise: float, colour: float | None) -> str:
    return f"noise {noise:.1f}" + ("" if colour is None else f", colour {colour:.1f}")


def format_status(stats: Any, width: int = 90) -> str:
    """One status line from an ``engine.EngineStats`` snapshot.

    The engine's warning (the start-up one it was given and its own, e.g. a model that failed
    mid-stream) is appended as ``WARNING: ...``, cut to ``width`` characters; :func:`cmd_run`
    prints each warning in full once on its own line.
    """
    who = stats.backend
    if stats.provider and stats.provider != stats.backend:
        who += f" · {stats.provider}"
    if stats.frames_out == 0 and stats.fps_in == 0:
        # A line of zeros read as "nothing flows" before the first frames (the rates need
        # two): once one has gone out, zeros are news and are shown.
        text = f"waiting for the first frame · {who}"
    elif stats.frames_out == 0 and not stats.fps_out:
        # Frames in, none out yet (a slow CPU's first 720p model call takes 1-2 s): its line
        # read "latency p50 0 ms p95 0 ms", a latency nothing had measured. As the window says.
        waiting = "waiting for the first frame" if stats.running else "no frame sent"
        text = (
            f"{waiting} · in {stats.fps_in:5.1f} fps · drops {stats.dropped} · "
            f"reconnects {stats.reconnects} · {who}"
        )
    else:
        text = (
            f"in {stats.fps_in:5.1f} fps · out {stats.fps_out:5.1f} fps · "
            f"latency p50 {stats.latency_ms_p50:4.0f} ms p95 {stats.latency_ms_p95:4.0f} ms · "
            f"drops {stats.dropped} · reconnects {stats.reconnects} · {who}"
        )
    noise = getattr(stats, "noise", None)
    if noise is not None:
        from engine.denoise import reduces, worth_telling

        levels = _noise_levels(noise, getattr(stats, "colour_noise", None))
        if getattr(stats, "denoise", False):
            # Whether it has anything to do (a clean picture passes untouched).
            text += f" · {levels}" + ("" if reduces(noise) else " (none to reduce)")
        elif worth_telling(noise):
            # A grainy camera and --denoise left off: the one place its user would learn of it.
            text += f" · grainy ({levels}): {GRAIN_ADVICE}"
    warn = stats.warning
    if warn:
        if len(warn) > width:
            warn = warn[: width - 3] + "..."
        text += f" · WARNING: {warn}"
    return text


#: A SIGINT this soon after the first is the same one delivered twice, not a second Ctrl-C.
SAME_SIGNAL_S = 0.5


def _install_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM, the terminal closing (SIGHUP) and on Windows Ctrl-Break (SIGBREAK) set
    ``stop`` (the main loop notices within 50 ms); a signal ignored when the process started
    (SIGHUP under ``nohup``) stays ignored. Returns the undo.

    A second Ctrl-C (:data:`SAME_SIGNAL_S` or more after the first) gets Python's default
    KeyboardInterrupt, for a stuck shutdown. Windows sends
    no SIGTERM (``taskkill /F`` and ``Popen.terminate()`` end the process outright): there
    Ctrl-C or Ctrl-Break stop a stream with its output closed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = [signal.SIGINT, signal.SIGTERM]
    # Closing the terminal (SIGHUP) ended `run` and `process` at once: their output stayed a
    # hidden .partial file (an .mp4 of 44 bytes), not finished or kept as .incomplete.
    signals += [getattr(signal, n) for n in ("SIGHUP", "SIGBREAK") if hasattr(signal, n)]
    previous = {sig: h for sig in signals if (h := signal.getsignal(sig)) is not signal.SIG_IGN}

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        first = time.monotonic()

        def again(signum: int, frame: Any) -> None:
            # One Ctrl-C can arrive twice, to the process and to its group (`timeout -s INT`,
            # `kill -INT -PGID`): taken for a second press, it cut the summary of where the
            # frames went to a bare "interrupted". A press comes later than that.
            if time.monotonic() - first >= SAME_SIGNAL_S:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt

        if signal.SIGINT in previous:  # one ignored at the start (`nohup`, `&`) stays so
            signal.signal(signal.SIGINT, again)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


# Windows: the console window closed, the user logging off, the machine shutting down.
CONSOLE_CLOSE_EVENTS = (2, 5, 6)  # CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT
# Windows ends the process 5 s after a close event, whatever its handler does.
CONSOLE_CLOSE_GRACE_S = 4.5
_console_handlers: list[Any] = []  # ctypes callbacks Windows may still call: never collected


def _console_close_handler(
    stop: threading.Event, finished: threading.Event
) -> Callable[[int], bool]:
    """The console control handler: a close event sets ``stop`` and holds the process until
    ``finished`` (the output closed) or the grace period ends; other events are not handled.

    The C runtime turns every event other than Ctrl-C into SIGBREAK, but returns at once, and
    Windows ends the process as soon as a handler returns from a close event: Python's handler
    never ran, and a `run` recording stayed in its hidden ``.NAME.partial.EXT``.
    """

    def handle(event: int) -> bool:
        if event not in CONSOLE_CLOSE_EVENTS:
            return False  # Ctrl-C and Ctrl-Break: SIGINT and SIGBREAK, handled as signals
        stop.set()
        finished.wait(CONSOLE_CLOSE_GRACE_S)
        return True

    return handle


def _hold_console_close(stop: threading.Event) -> Callable[[], None]:
    """On Windows, closing the console (or logging off) stops the command like Ctrl-C and
    waits for it to finish its output. Returns the release, to call once the output is closed
    (idempotent); elsewhere it does nothing."""
    if sys.platform != "win32" or threading.current_thread() is not threading.main_thread():
        return lambda: None
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    finished = threading.Event()
    prototype = ctypes.WINFUNCTYPE(ctypes.c_int, ctypes.c_uint)  # type: ignore[attr-defined]
    callback = prototype(_console_close_handler(stop, finished))
    if not kernel32.SetConsoleCtrlHandler(callback, True):
        return lambda: None  # no console (pythonw): nothing to close
    _console_handlers.append(callback)

    def release() -> None:
        if not finished.is_set():
            finished.set()
            kernel32.SetConsoleCtrlHandler(callback, False)

    return release


#: How often ``process --progress lines`` may say where it stands.
PROGRESS_LINE_S = 0.25
# Windows' BELOW_NORMAL_PRIORITY_CLASS; elsewhere a niceness this much above the caller's.
_BELOW_NORMAL_PRIORITY_CLASS = 0x4000
LOW_PRIORITY_NICE = 10


def _lower_priority() -> None:
    """Run this process below normal priority (``process --low-priority``), before any
    worker thread starts: on Linux a thread's niceness is its own, and ONNX Runtime's and
    OpenVINO's pools are made later, by this thread, and inherit it."""
    try:
        if sys.platform == "win32":
            import ctypes

            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
            # Typed: the pseudo handle (-1) passed as a C int reached a 64-bit HANDLE as
            # 0xFFFFFFFF, a handle to nothing.
            kernel32.GetCurrentProcess.restype = ctypes.c_void_p
            kernel32.SetPriorityClass.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
            kernel32.SetPriorityClass.restype = ctypes.c_int
            if not kernel32.SetPriorityClass(
                kernel32.GetCurrentProcess(), _BELOW_NORMAL_PRIORITY_CLASS
            ):
                raise OSError(ctypes.get_last_error(), "SetPriorityClass failed")  # type: ignore[attr-defined]
        else:
            os.nice(LOW_PRIORITY_NICE)
    except (OSError, AttributeError) as exc:
        # Slower for the live stream beside it, not wrong: the run goes on.
        _eprint(f"{PROG}: note: could not lower the priority ({exc})")


def _stop_on_eof(stop: threading.Event, stream: Any = None) -> threading.Thread:
    """Set ``stop`` once ``stream`` (standard input) ends: the parent closed its end, or
    died. A daemon thread: the process does not wait for it."""
    stream = sys.stdin if stream is None else stream

    def watch() -> None:
        try:
            if stream is not None:
                while stream.readline():
                    pass  # what is written is not a command: only the end counts
        except (OSError, ValueError):
            pass  # a closed or unreadable stdin is an end too
        stop.set()

    thread = threading.Thread(target=watch, name="stop-on-eof", daemon=True)
    thread.start()
    return thread


class _ProgressLines:
    """``process --progress lines``: ``frames N/TOTAL`` on stderr when N has changed, at most
    every :data:`PROGRESS_LINE_S`, and the last count always (the same calls as tqdm's bar)."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.n = 0
        self._said = -1
        self._at = -math.inf

    def update(self, k: int) -> None:
        self.n += k
        now = time.monotonic()
        if self.n != self._said and now - self._at >= PROGRESS_LINE_S:
            self._say(now)

    def _say(self, now: float) -> None:
        _eprint(f"frames {self.n}/{'?' if self.total is None else self.total}")
        self._said, self._at = self.n, now

    def __enter__(self) -> _ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.n != self._said:
            self._say(time.monotonic())


# --------------------------------------------------------------------------- commands


def cmd_gui(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """No command: start the desktop app; when it cannot be imported, the help and why (exit 1)."""
    try:
        from app.main import run_app
    except ImportError as exc:
        # PySide6 is a dependency: failing to import it is a broken install (a Qt without its
        # system libraries: "libEGL.so.1: cannot open shared object file"). The help alone,
        # exit 0, hid that, and a bug report's `--screenshot` run "passed" without a picture.
        parser.print_help()
        raise CliError(f"the desktop app cannot start: {exc}") from exc
    if args.gui_screenshot is not None:
        _check_screenshot_name(args.gui_screenshot)
    if args.gui_source is not None:
        from engine.sources import source_kind

        if source_kind(args.gui_source) != "camera" and not Path(args.gui_source).exists():
            # The app fell back to the demo clip and exited 0: a bug report's
            # `--screenshot shot.png --quit-after 5` showed another source than the one named.
            raise CliError(f"no such file or folder: {args.gui_source}")
    if args.gui_model is not None and not _model_file(args.gui_model).is_file():
        # The window ran unsharpened, exit 0, and a scripted run said nothing of it: as `run`.
        raise CliError(_missing_model(args.gui_model))
    options = {
        "source": args.gui_source,
        "screenshot": args.gui_screenshot,
        "quit_after": args.gui_quit_after,
        "backend": args.gui_backend,
        "model": args.gui_model,
    }
    return int(run_app(options, virtual_backend=os.environ.get(VIRTUAL_BACKEND_ENV)) or 0)


def _check_screenshot_name(name: str) -> None:
    """A usage error unless Qt can save ``--screenshot NAME``: found only after the app had run.

    The app saves with ``QPixmap.save(name)``, which takes the format from the lower-cased
    extension, so the rule is that extension among Qt's image writers.
    """
    try:
        from PySide6.QtGui import QImageWriter
    except ImportError:  # the app cannot start either; it says why
        return
    formats = sorted({bytes(f).decode().lower() for f in QImageWriter.supportedImageFormats()})
    ext = Path(name).suffix.lower().removeprefix(".")
    if Path(name).is_dir():
        raise CliError(f"--screenshot {name} is a folder; give an image file name", code=2)
    if ext not in formats:
        given = f"a .{ext} file" if ext else "a name without an extension"
        raise CliError(
            f"--screenshot {name}: Qt cannot save {given}; use an image extension "
            f"({', '.join(formats)})",
            code=2,
        )


def _same_path(source: str, output: str) -> bool:
    """Whether writing ``output`` would replace (or fill) ``source``.

    resolve() alone misses a case-folded name on a case-insensitive volume (macOS, Windows:
    ``Clip.mp4`` vs ``clip.mp4``) and a hard link; samefile compares the files themselves but
    needs both to exist, so a new output falls back to comparing resolved paths.
    """
    try:
        if os.path.samefile(source, output):
            return True
    except (OSError, ValueError):
        pass  # one of them does not exist (yet), or the name is not a valid path
    try:
        return Path(source).resolve() == Path(output).resolve()
    except (RuntimeError, OSError):  # a loop of links (RuntimeError before Python 3.13)
        return False  # it names no file: nothing of it can be replaced


def _check_input_path(source: str) -> None:
    """A usage error (exit 2) for an input path no file can have: longer than the system
    takes, or a loop of symbolic links. Each was the bare exception, exit 1 ("error: OSError:
    [Errno 36] File name too long", "error: RuntimeError: Symlink loop from ...")."""
    # Asked of the file system: its limits are its own (in characters on APFS or exFAT,
    # where a name of 200 accented letters is 400 bytes and fits).
    try:
        os.stat(source)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            length = len(os.fsencode(source))
            raise CliError(
                f"input {source[:60]}...: its path ({length} bytes) or a name in it is longer "
                "than the file system takes",
                2,
            ) from None
        if exc.errno == errno.ELOOP:
            raise CliError(
                f"input {source}: a loop of symbolic links (it leads back to itself)", 2
            ) from None
    except ValueError:  # a NUL in the name: said where the name is used
        pass


def _link_loop(path: str) -> bool:
    """Whether ``path``, or a folder on the way to it, is a loop of symbolic links."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    except ValueError:  # a NUL in the name: said where the name is used
        return False
    return False


def _check_not_input(source: str, output: str) -> None:
    """Refuse (usage error) an output that would replace or fill ``source``.

    A video output is written under a hidden ``.NAME.partial.EXT`` and, when it fails or is
    interrupted, kept as ``NAME.incomplete.EXT`` (:class:`engine.sinks.VideoFileSink`): those
    names replace a file too. ``process clip.incomplete.mp4 clip.mp4`` (finishing what an
    interrupted run kept) replaced its own input when interrupted again, and
    ``process .clip.partial.mp4 clip.mp4`` truncated the input it was reading.
    """
    from engine.sinks import VIDEO_CODECS, incomplete_path, partial_path

    _check_input_path(source)
    if _same_path(source, output):
        raise CliError(f"output {output} would overwrite the input", code=2)
    if os.path.isdir(source):
        _check_not_input_image(source, output)
    out = Path(output)
    if out.suffix.lower() not in VIDEO_CODECS:
        return
    # The sink's own names: a long one is cut short to fit the file system.
    partial = partial_path(out)
    incomplete = incomplete_path(out)
    for path, role in (
        (partial, "is where it is written until it is complete"),
        (incomplete, "is where its frames are kept if it fails or is interrupted"),
    ):
        if _same_path(source, str(path)):
            raise CliError(
                f"output {output} would overwrite the input: {path.name} {role}; "
                "rename the input or give another output name",
                code=2,
            )


def _check_not_feedback(source: str, device: str | None, *, picked: bool = False) -> None:
    """Refuse (usage error) a virtual camera ``device`` that is the camera ``source``: the
    stream would read its own output back, each frame deblurred again, forever.

    ``picked``: the device is the one ``--output virtual`` chose, not one the user named.
    """
    from engine.virtualcam import is_source_device

    also = named = ""
    if is_source_device(device, source):
        node = os.path.realpath(device) if device else device
        also = f" ({node})" if node != device else ""  # a /dev/v4l/by-id link: say which node
    else:
        name = _os_camera_name(source)
        if not (device and name):
            return
        from app.camera_list import reads_virtual_device  # _os_camera_name found Qt there

        if not reads_virtual_device(str(source), name, device):
            return
        named = f" ({name!r} on this Mac)"
    which = f"the virtual camera it picked, {device}," if picked else f"virtual camera {device}"
    raise CliError(
        f"{which}{also} is the source {source}{named}: the stream would read its own output; "
        "give another --source or name another device with --output virtual:DEVICE",
        code=2,
    )


def _os_camera_name(source: str) -> str | None:
    """The name macOS gives camera index ``source`` (QtMultimedia's, as the window lists it),
    None elsewhere or where it cannot tell.

    On macOS OBS's virtual camera is a camera OpenCV opens like any, by an index, and names
    none: the only way to tell that ``run --source 1 --output virtual`` reads what it sends.
    (On Windows, OpenCV's Media Foundation does not list OBS's DirectShow camera; on Linux the
    device files are compared.)
    """
    from engine.sources import is_camera_number

    if sys.platform != "darwin" or not is_camera_number(str(source)):
        return None
    try:
        from app.camera_list import os_camera_names

        return os_camera_names().get(str(int(source)))
    except Exception:  # no QtMultimedia: the stream goes on as before, unchecked
        return None


def _is_image_file_name(out: str) -> bool:
    """Whether ``out`` names one image file (``shot.png``), not a folder of numbered frames."""
    from engine.sources import IMAGE_EXTENSIONS

    return Path(out).suffix.lower() in IMAGE_EXTENSIONS and not Path(out).is_dir()


def _check_image_writer(out: str) -> None:
    """A usage error for an image file this OpenCV has no writer for (``.exr`` without the
    codec): found otherwise only once the model had run on the frame."""
    import cv2

    from engine.sinks import ENCODE_AS, image_format_problem

    # The extension alone: OpenCV crashed the process on a name that is not UTF-8.
    suffix = Path(out).suffix.lower()
    problem = image_format_problem(suffix)
    if problem:
        # It failed ("cannot encode") only once the model had run on the frame.
        raise CliError(f"output {out}: {problem}", code=2)
    if not cv2.haveImageWriter("x" + ENCODE_AS.get(suffix, suffix)):
        raise CliError(f"output {out}: this OpenCV cannot write {suffix} images", code=2)


#: The widest image a format holds, in pixels either way (WebP's 14-bit sizes, libjpeg's).
_MAX_IMAGE_SIDE = {".webp": 16383, ".jpg": 65500, ".jpeg": 65500, ".jpe": 65500, ".jfif": 65500}


def _check_image_fits(out: str, size: tuple[int, int]) -> None:
    """A usage error for an image larger than ``out``'s format holds: it failed ("cannot
    encode ... as .webp", no reason) only after the model had run on it."""
    limit = _MAX_IMAGE_SIDE.get(Path(out).suffix.lower())
    if limit is not None and max(size) > limit:
        raise CliError(
            f"output {out}: a {Path(out).suffix.lower()} image is at most {limit} pixels wide "
            f"and high, and this one is {size[0]}x{size[1]}; give .png or .tif",
            code=2,
        )


def _check_video_fits(out: str, size: tuple[int, int]) -> None:
    """A usage error for a video larger than the codec ``out`` is written with takes: x264
    failed ("invalid width x height (20000x2)") only on the first frames, once the model had
    loaded."""
    from engine.sinks import video_size_problem

    problem = video_size_problem(out, size)
    if problem:
        raise CliError(f"output {out}: {problem}", code=2)


def _check_not_input_image(folder: str, output: str) -> None:
    """Refuse an output file that is one of the images of the input ``folder`` (by any name):
    ``run --source photos --output photos/b.png`` wrote each frame over b.png, which the
    stream then read back in place of the photo."""
    from engine.sources import IMAGE_EXTENSIONS

    if not Path(output).is_file():
        return  # a new file: the folder's images were listed before it exists
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return  # a folder it may not list: the source says so when it opens it
    for entry in entries:
        # The files ImageFolderSource reads: image extensions, not hidden.
        if entry.suffix.lower() not in IMAGE_EXTENSIONS or entry.name.startswith("."):
            continue
        if _same_path(str(entry), output):
            raise CliError(
                f"output {output} would overwrite {entry.name}, an image of the input folder "
                f"{folder}",
                code=2,
            )


def cmd_run(args: argparse.Namespace) -> int:
    """Live: stream until --duration, the end of a video source, Ctrl-C or SIGTERM.

    A shipped model that fails to load (or any model failing mid-stream) never stops the
    stream: frames go out unprocessed and the status line carries the WARNING. A ``--model``
    or ``--backend`` named on the command line that cannot start is an error (exit 1).
    """
    # From the start, not only once streaming: Ctrl-C while OpenCV loads, a camera opens or
    # the model compiles (seconds) used to end `run` with 130, where Ctrl-C in `run` is 0.
    stop = threading.Event()
    restore = _install_stop_signals(stop)
    release = _hold_console_close(stop)
    try:
        from engine.sinks import SinkError, earlier_frame, is_virtual_spec, sink_kind
        from engine.sources import source_kind

        camera = source_kind(args.source) == "camera"
        if not camera:
            _check_input_path(args.source)  # also for a virtual camera output
        virtual = is_virtual_spec(args.output)
        if not virtual:
            _check_output_name(args.output)  # first: asking about a name too long raises
        if virtual:
            # Named: before the camera opens. 'virtual' alone: once the device is picked.
            _check_not_feedback(args.source, args.output.partition(":")[2] or None)
        elif not camera:
            # The finished recording would replace the very file (or fill the folder) it reads.
            _check_not_input(args.source, args.output)
        try:
            kind = sink_kind(args.output)  # an output it cannot write (out.txt): before the model
        except SinkError as exc:
            raise CliError(str(exc), code=2) from exc
        if kind == "video":
            _check_video_output_not_folder(args.output)
        elif kind == "images" and _is_image_file_name(args.output):
            # `run --output shot.exr` streamed, then failed on the first frame (exit 1).
            _check_image_writer(args.output)
        elif kind == "images" and (earlier := earlier_frame(args.output)) is not None:
            # Found by the sink only once the model had loaded, and exit 1 where `process`
            # refuses a folder holding its results with 2.
            raise CliError(
                f"folder {args.output} already holds frames ({earlier.name}): give an empty "
                "or new folder",
                code=2,
            )
        elif kind == "images" and Path(args.output).exists() and not Path(args.output).is_dir():
            # A file without an extension (`--output notes`, `/dev/null`) is taken for a
            # folder of frames: "cannot create folder notes: [Errno 17] File exists", exit 1,
            # once the model had loaded.
            raise CliError(
                f"output {args.output} is a file, not a folder: give a video file "
                "(.mp4, .avi, ...), an image file or a folder for numbered PNGs",
                code=2,
            )
        return _run_stream(args, stop, restore, camera=camera, virtual=virtual)
    finally:
        restore()
        release()  # the output is closed: a console closing meanwhile may end the process


def _run_stream(
    args: argparse.Namespace,
    stop: threading.Event,
    restore: Callable[[], None],
    *,
    camera: bool,
    virtual: bool,
) -> int:
    """:func:`cmd_run` once its arguments are checked; ``stop`` is set by Ctrl-C / SIGTERM,
    ``restore`` gives the signals back (idempotent)."""
    from engine.backends import collect_warnings, warm_up
    from engine.pipeline import Engine
    from engine.sinks import SinkError, open_sink, sink_kind
    from engine.sources import DEFAULT_FPS, ImageFolderSource, VideoFileSource, source_kind
    from engine.virtualcam import VirtualCameraUnavailable

    def stopped_early() -> bool:
        if stop.is_set():
            _eprint(f"{PROG}: stopped before streaming began")
        return stop.is_set()

    size = args.size or ((1280, 720) if camera else None)
    source = _open_source(args.source, live=True, size=size, fps=args.fps or DEFAULT_FPS)
    if (
        args.fps is not None
        and isinstance(source, VideoFileSource)
        and not math.isclose(source.fps, args.fps, rel_tol=1e-3)  # 29.97 is 30000/1001
    ):
        # It was taken silently: a user who asked for 15 FPS got the file's 30.
        _eprint(
            f"{PROG}: warning: --fps {args.fps:g} does not apply to a video file; "
            f"{Path(args.source).name} plays at its own {source.fps:g} fps"
        )
    if camera:
        _note_camera_mode(source, args.size, args.fps)
    if isinstance(source, VideoFileSource):
        try:
            _tone_map(source, args.source, "the virtual camera" if virtual else args.output)
        except BaseException:
            source.close()
            raise
    watched = _WatchedSource(source)
    engine = None
    sink = None
    backend = None
    try:
        if not virtual and sink_kind(args.output) == "video":
            _check_video_fits(args.output, source.size)
        if stopped_early():
            return 0
        fps = getattr(source, "fps", None) or DEFAULT_FPS
        # Said after the warm-up: a fixed-size model's "auto-scale keeps it at full size" came
        # just before the error that it cannot run these frames at all.
        load_warnings: list[str] = []
        try:
            with collect_warnings() as load_warnings:
                backend, warning = _open_backend(
                    args.backend, args.model, live=True, scale=args.scale, target_fps=fps
                )
        except BaseException:
            for text in load_warnings:
                _eprint(f"{PROG}: warning: {text}")
            raise
        cannot_run: CliError | None = None
        if args.strength > 0 and not stop.is_set():  # at 0 the engine never calls the model
            # OpenVINO compiles on its first call: inside the stream that second counted in
            # --duration (`--duration 1` wrote nothing) and its frames were dropped.
            try:
                # A --model is the user's to fix (as one that does not load): one that cannot
                # take the source's frames (a fixed input size) streamed unsharpened over an
                # existing output, then exit 1. The shipped ones stream on, with a warning.
                warm_up(backend, source.size, strict=args.model is not None)
            except Exception as exc:
                w, h = source.size
                cannot_run = CliError(
                    f"--model {args.model} cannot run on the {w}x{h} frames of {args.source}: {exc}"
                )
                cannot_run.__cause__ = exc
        for text in load_warnings:
            if cannot_run is None or "has a fixed input size" not in text:
                _eprint(f"{PROG}: warning: {text}")
        if cannot_run is not None:
            raise cannot_run
        if stopped_early():
            return 0
        sink_options: dict[str, Any] = {}
        if virtual:
            vbackend = args.virtual_backend or os.environ.get(VIRTUAL_BACKEND_ENV)
            if vbackend:
                sink_options["backend"] = vbackend
        created = None if virtual else _missing_folders(args.output)
        if not virtual:
            _note_stale_work(args.output)
        try:
            if sink_kind(args.output) == "video":
                sink_options["timed"] = True  # dropped frames must not speed the file up
            sink = open_sink(args.output, size=source.size, fps=source.fps, **sink_options)
        except (VirtualCameraUnavailable, SinkError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        finally:
            _note_created(created)  # also when the sink failed after making it
        if virtual:
            _check_not_feedback(args.source, getattr(sink, "device", None), picked=True)
        if stopped_early():
            return 0

        output = _CutShortOutput(sink, watched)
        engine = Engine(
            watched,
            backend,
            sinks=[output],
            live=True,
            strength=args.strength,
            denoise=args.denoise,
            warning=warning,
            close_backend=True,
            on_error=lambda exc: None,  # shown through stats().warning / engine.errors
        )
        status = _StatusLine()
        _eprint(f"{source.describe()} -> {sink.describe()} · {_describe_backend(backend)}")
        _note_lost_audio(args.source, args.output)
        if not virtual and sink_kind(args.output) == "video":
            _note_even_sides(source.size, args.output)
        if not virtual:
            # A recording loses what `process` says it loses: a 10-bit clip or a TIFF's later
            # pages went into the file unsaid.
            if isinstance(source, VideoFileSource):
                _note_video_depth(args.source, args.output)
                if sink_kind(args.output) == "video":  # frames in a folder hold no streams
                    _note_other_streams(args.source, args.output)
            elif source_kind(args.source) == "image":
                _note_lost_image_detail("image", source, args.output)
        if isinstance(source, ImageFolderSource):
            _note_folder_entries(source)
        if warning:
            _eprint(f"{PROG}: warning: {warning}")
        seen_warnings: set[str] = set()

        def say_news(stats: Any) -> None:
            if engine.failed_sinks:
                return  # the only output failed: the run ends on that error, said once
            # Each warning once, the start-up one (printed above) not again. The joined text
            # was news whenever one of its parts was: a standing warning (the model's NaN, a
            # failed output) was printed again beside each stall that came or went.
            for news in stats.warnings:
                if news != warning and news not in seen_warnings:
                    seen_warnings.add(news)
                    status.note(f"{PROG}: warning: {news}")

        t0 = time.perf_counter()  # --duration counts from here: the model is warm
        timed_out = False  # --duration ended the stream
        source_ended_at: float | None = None  # when the engine was seen done by itself
        next_news = t0
        engine.start()
        try:
            while not stop.is_set() and not engine.done.is_set():
                now = time.perf_counter()
                if args.duration is not None and now - t0 >= args.duration:
                    timed_out = True
                    break
                if engine.failed_sinks:
                    break  # the only output is gone: streaming on would write nowhere
                # Warnings twice a second, not at each status line: piped, those are 5 s
                # apart, and a stall begun since the last one went unsaid at a stop.
                due = status.due(now)
                if due or now >= next_news:
                    next_news = now + NEWS_PERIOD
                    stats = engine.stats()
                    say_news(stats)
                    if due:
                        status.show(format_status(stats), now)
                stop.wait(0.05)
            if engine.done.is_set() and not (stop.is_set() or timed_out):
                source_ended_at = time.perf_counter()
            else:
                # Once stopping, the engine calls no source stalled: ask before.
                say_news(engine.stats())
        finally:
            if stop.is_set():
                # Said at once: finishing a recording can take a while (an encoder behind on
                # 4K frames), and Ctrl-C seemed to do nothing for up to a minute.
                what = "" if virtual else f": finishing {args.output}"
                status.note(f"{PROG}: stopping{what}…")
            if not engine.done.is_set() and not engine.failed_sinks:
                # Stopped (--duration, Ctrl-C, SIGTERM), not ended: a timed recording lasts
                # until now, however few frames the model finished by then; one whose source
                # had ended (its output still writing) ends at its last frame.
                mark_stop = getattr(sink, "mark_stop", None)
                if mark_stop is not None:
                    # A camera that had stalled before the stop holds its last frame only
                    # briefly past it, not up to the stop.
                    mark_stop(
                        time.perf_counter(),
                        last_capture=engine.last_capture,
                        hold=not engine.source_ended,
                    )
            hurry = _stop_engine(engine, 1.0)
            status.show(format_status(engine.stats()), time.perf_counter())
            status.finish()
            restore()  # Ctrl-C is Python's again: it ends a shutdown that hangs in the join
            joined = _join_before_exit(engine, sink, args.output, hurry=hurry)
        if not joined:
            _check_finished(sink, args.output)
        stats = engine.stats()
        if engine.failed_sinks:
            failed, exc = engine.failed_sinks[0]
            where = _kept_where(failed, exc)
            # The sink's own count: the engine's frames_out also counts the frames it handed
            # on in the moment between the failure and the stop (a folder that refused its
            # first frame was "failed after 2 frames").
            written = getattr(failed, "frames_written", None)
            count = stats.frames_out if written is None else written
            raise CliError(
                f"output {failed.describe()} failed after {_frames(count)}: {exc}{where}"
            )
        if getattr(sink, "failed", False):
            # Closing failed (the finished file could not take its name): the recording is not
            # where it was asked for, and Ctrl-C said "stopped", exit 0, of frames left hidden.
            first = next((e for e in engine.errors if isinstance(e, SinkError)), None)
            where = _kept_where(sink, first)
            raise CliError(f"{first or f'cannot finish {args.output}'}{where}")
        _move_index_first(sink)
        if engine.errors and (engine.failure is not None or output.cut_short):
            # The stream ended on an error (a camera unplugged, an unreadable file): say so
            # and exit non-zero rather than pass as a finished run. One that ran through a
            # model failure (the stream goes on without the model) ends as a Ctrl-C does,
            # whether --duration, Ctrl-C or the source's own end stopped it: the errors said,
            # exit 0 (a clip played to its end was exit 1, its recording complete).
            where = _kept_where(sink, engine.errors[0]) if output.cut_short else ""
            raise CliError(
                f"{len(engine.errors)} error(s) in the stream ({_frames(stats.frames_out)} out); "
                f"first: {engine.errors[0]}{where}"
            )
        if engine.errors:
            _eprint(
                f"{PROG}: {len(engine.errors)} error(s) in the stream; first: {engine.errors[0]}"
            )
        written = getattr(sink, "frames_written", None)
        if written == 0 and not virtual:
            # `run --duration 1` that ended while the model's first frame (seconds on a large
            # frame and a loaded CPU) was still in it: exit 0, no file, and not a word.
            end = "the stop" if stop.is_set() or timed_out else "the source ended"
            nothing = (
                f"nothing written to {args.output}: no frame reached it before {end} "
                f"({_frames(stats.frames_in)} read)"
                + (f"; {args.output} left as it was" if Path(args.output).exists() else "")
            )
            if not stop.is_set():
                raise CliError(nothing)
            _eprint(f"{PROG}: stopped; {nothing}")  # Ctrl-C in `run` stays exit 0
            return 0
        total = source.frame_count if isinstance(source, VideoFileSource) else None
        # Not the frames a long still was sent again as: a cut-off screen recording's stills
        # made up for its missing pictures, and it passed as whole.
        decoded = stats.frames_in - getattr(source, "repeats", 0)
        if (
            total
            and not (stop.is_set() or timed_out)
            and decoded < total
            and not _count_estimated(args.source, total, decoded, source.fps, source.last_time_s)
            and not _trimmed_clip(args.source, total, decoded)
        ):
            # As `process` says it: a file cut off mid-write ended the run as if it were whole,
            # exit 0 and not a word, over an earlier recording of the same name.
            _eprint(
                f"{PROG}: warning: {args.source} announced {total} frames and "
                f"{decoded} could be decoded (damaged or truncated, or a count the "
                "container only estimates)"
            )
        if getattr(source, "fell_behind", False) and not virtual:
            # Every frame read is shown, so a file read slower than its rate (a 4K HEVC clip
            # on two cores) was recorded in slow motion, with each frame repeated, unsaid.
            if isinstance(source, ImageFolderSource):
                _eprint(
                    f"{PROG}: note: the images in {args.source} could not be read at "
                    f"{source.fps:g} a second here, so {args.output} shows each of them longer"
                )
            else:
                # A file that decodes in time by itself was read slower beside other work (the
                # model at full size, other programs): the machine, not the file, to change.
                busy = (
                    ""
                    if getattr(source, "fell_behind_decoding", True)
                    else " (the computer was too busy: close other programs, or lower --scale)"
                )
                _eprint(
                    f"{PROG}: note: {args.source} could not be read at its {source.fps:g} fps "
                    f"here{busy}, so {args.output} plays it slower; `{PROG} process` converts "
                    "a file frame for frame at its own rate"
                )
        if isinstance(source, ImageFolderSource) and args.size is None:
            _note_other_sizes(source, "the virtual camera" if virtual else args.output)
        ended = source_ended_at - t0 if source_ended_at is not None else None
        # Not for a source that lasts as long as --duration (a 1 s clip, --duration 1): the
        # end and the deadline land within a frame or two of each other.
        margin = max(0.1, 2 / fps)
        if args.duration is not None and ended is not None and ended + margin < args.duration:
            # `run --source photos --duration 2` wrote 0.13 s (4 photos at 30 a second) and
            # ended without a word of why.
            once = (
                f", each image once at {source.fps:g} a second"
                if isinstance(source, ImageFolderSource)
                else ""
            )
            _eprint(
                f"{PROG}: note: {args.source} ended after {_frames(stats.frames_in)}{once}, "
                f"{ended:.1f} s into --duration {args.duration:g}"
            )
        cut = getattr(sink, "repeats_cut", 0)
        if cut:
            _eprint(
                # Not "before the stop": a source that had ended or stalled ends the file
                # earlier anyway, and the file is shorter than that by this much.
                f"{PROG}: note: {args.output} is {cut / sink.fps:.1f} s shorter than recorded: "
                "its encoder was behind, and the repeated frames it had still to write were "
                "left out"
            )
        if stop.is_set():
            # A timed recording repeats the frames the model had no time for: say both counts,
            # or the file's length contradicts the message.
            extra = (
                f"; {written} in {args.output} at the source's clock"
                if written is not None and written != stats.frames_out
                else ""
            )
            _eprint(f"{PROG}: stopped ({_frames(stats.frames_out)} out{extra})")
        return 0
    finally:
        if engine is None:
            if sink is not None:
                sink.close()
            if backend is not None:
                backend.close()
            source.close()
        else:
            # Idempotent after a run; an error between Engine(...) and start() (describe(), the
            # audio note) left the source, sink and backend open: a never-started engine's
            # stop() closes all three.
            engine.stop(timeout=1.0)


class _WatchedSource:
    """A live source that remembers whether its ``read()`` raised other than while being
    interrupted (:attr:`failed`); everything else is the wrapped source's."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._interrupted = False
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not delegated: _source itself, before __init__ set it
            raise AttributeError(name)
        return getattr(self._source, name)

    def read(self) -> Any:
        try:
            return self._source.read()
        except BaseException:
            self.failed = not self._interrupted
            raise

    def interrupt(self) -> None:
        self._interrupted = True
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            interrupt()


class _CutShortOutput:
    """``run``'s output, closed as incomplete when its source failed part-way (a video that
    stops decoding, an image of a folder it cannot read): a video then keeps its frames as
    ``NAME.incomplete.EXT`` (``abort()``) and leaves an existing ``NAME.EXT`` alone, as a run
    whose output failed does. The live engine closes its outputs as finished whatever ended
    the stream, and a truncated recording replaced the earlier one under the name asked for.
    """

    def __init__(self, sink: Any, source: _WatchedSource) -> None:
        self._sink = sink
        self._source = source
        self.cut_short = False  # closed as incomplete

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._sink, name)

    def write(self, frame: Any) -> None:
        self._sink.write(frame)

    def close(self) -> None:
        abort = getattr(self._sink, "abort", None)
        if self._source.failed and abort is not None:
            self.cut_short = True
            abort()
        else:
            self._sink.close()

    def describe(self) -> str:
        return str(self._sink.describe())


def _note_other_sizes(source: Any, output: str) -> None:
    """Say, once, how many images of a folder ``run`` sent at another size than the first
    one's: ``output`` took that size, and they were fitted into it with borders where the
    start line said only "first 64x48"."""
    others = source.other_sizes
    if not others:
        return
    w, h = source.size
    n = len(others)
    images, are, them, its = (
        ("image", "is", "it", "its") if n == 1 else ("images", "are", "them", "their")
    )
    _eprint(
        f"{PROG}: note: {n} {images} in folder {source.path.name} {are} not {w}x{h} like the "
        f"first one ({_some_names(others)}): {output} shows {them} scaled to fit {w}x{h}, "
        f"with black borders where {its} shape differs"
    )


def _note_camera_mode(source: Any, size: tuple[int, int] | None, fps: float | None) -> None:
    """Warn where a camera does not deliver the ``--size`` or ``--fps`` asked for (most offer
    a few modes and take the nearest), or does not say its rate: it ran on, exit 0, with the
    delivered mode in the header line as the only sign."""
    got = f"{source.size[0]}x{source.size[1]} @ {source.fps:g} fps"
    missed = []
    if size is not None and tuple(source.size) != tuple(size):
        missed.append(f"--size {size[0]}x{size[1]}")
    if fps is not None and getattr(source, "fps_reported", True):
        if not math.isclose(source.fps, fps, rel_tol=0.02):
            missed.append(f"--fps {fps:g}")
    if missed:
        _eprint(
            f"{PROG}: warning: {source.label} does not offer "
            f"{' and '.join(missed)}; it delivers {got}"
        )
    if fps is not None and not getattr(source, "fps_reported", True):
        # Then the rate asked for is taken as the camera's: a 30 fps camera asked for 60 was
        # recorded with every frame twice and `--scale auto` judged it by a 15 ms budget.
        _eprint(
            f"{PROG}: warning: the camera does not report its frame rate; taking the "
            f"--fps {fps:g} asked for (if it delivers fewer, leave --fps out)"
        )


#: How long `run` and `process` wait, after the output is complete, for a model call still in
#: progress (a compile for a new processing size takes 1-2 s on two cores); and how long an
#: output still being finished may go without progress (frames taken, bytes written).
JOIN_TIMEOUT_S = 30.0
#: The longest wait for an output that keeps making progress: an encoder behind on 4K frames
#: takes seconds a frame, but one that never ends must not hold the process for ever.
FINISH_LIMIT_S = 300.0
#: How long the wait goes on before it is said, with how to end it.
FINISH_NOTE_S = 5.0
#: How long FFmpeg, told to end (SIGTERM), has to close the file before it is killed.
END_WRITER_S = 10.0
#: How long `process --stop-on-eof` (the window's save) waits, once stopped, for its output
#: to finish before it ends the encoder with the frames it has (SIGTERM: FFmpeg encodes what
#: it holds, closes the file and exits). The window kills a save that has not ended some
#: time after asking (app.save.STOP_GRACE_S, sized to this and END_WRITER_S): a wait for an
#: encoder behind on 4K frames (up to FINISH_LIMIT_S) was cut by that kill, and FFmpeg
#: finished the hidden file after it, unnamed.
STOPPED_FINISH_S = 5.0


def _stop_engine(engine: Any, timeout: float) -> bool:
    """``engine.stop(timeout)``; True where a second Ctrl-C cut it short (it waits for the
    output's close, an encoder behind on 4K frames): :func:`_join_before_exit` is then told
    to ``hurry`` and ends the encoder with the frames it has. Raised on, that Ctrl-C ended the
    run with FFmpeg writing on after exit, its frames left in the hidden file."""
    try:
        engine.stop(timeout=timeout)
    except KeyboardInterrupt:
        return True
    return False


def _join_before_exit(
    engine: Any,
    sink: Any = None,
    output: str = "",
    stopped: threading.Event | None = None,
    *,
    hurry: bool = False,
) -> bool:
    """Let the engine's threads end before the interpreter does: one still inside a native
    call at shutdown aborts the process (exit 134) though the output is complete. Returns
    whether they did.

    The output is waited for as long as it makes progress (:data:`JOIN_TIMEOUT_S` without,
    :data:`FINISH_LIMIT_S` in all), or until a second Ctrl-C (``hurry``: it came before, as
    the engine stopped), or :data:`STOPPED_FINISH_S` once ``stopped`` is set; then its
    encoder is ended, keeping the frames it has: FFmpeg, in its own session, finished the
    file after SharpCam had exited, and it stayed under its hidden name.
    """
    if not _wait_for_output(engine, sink, output, stopped, hurry=hurry):
        end_writer = getattr(sink, "end_writer", None)
        # OpenCV's writer has no encoder of its own to end: nothing to wait 20 s for.
        if end_writer is not None and end_writer():
            if not engine.done.wait(END_WRITER_S):
                end_writer(kill=True)
                engine.done.wait(END_WRITER_S)
    if engine.join(timeout=JOIN_TIMEOUT_S):
        return True
    _eprint(
        f"{PROG}: note: the engine was still busy (a camera's read, a model call or an "
        "output's write) "
        f"after {JOIN_TIMEOUT_S:g} s; exiting"
    )
    return False


def _wait_for_output(
    engine: Any,
    sink: Any,
    output: str,
    stopped: threading.Event | None = None,
    *,
    hurry: bool = False,
) -> bool:
    """Wait for the engine's output to be closed (:attr:`Engine.done`) while it makes
    progress, :data:`STOPPED_FINISH_S` at most once ``stopped`` is set (also while waiting);
    False where the wait was given up (and said so)."""
    if getattr(sink, "bytes_written", None) is None:
        # Not a file being encoded: the join waits for it. Waited for here too, a hung virtual
        # camera held the exit 60 s where the note said 30.
        return True

    def progress() -> tuple[int, int]:
        return sink.frames_written, sink.bytes_written

    began = last_change = time.monotonic()
    last = progress()
    told = False
    why = "Ctrl-C" if hurry and not engine.done.is_set() else ""
    stopped_at: float | None = None
    try:
        # An event, not Thread.join: a Ctrl-C that cut a join short left the thread reading
        # as ended (Python 3.11).
        while not why and not engine.done.wait(1.0):
            now = time.monotonic()
            if (seen := progress()) != last:
                last, last_change = seen, now
            if stopped_at is None and stopped is not None and stopped.is_set():
                stopped_at = now
            if now - last_change >= JOIN_TIMEOUT_S:
                why = f"it made no progress for {JOIN_TIMEOUT_S:g} s"
            elif now - began >= FINISH_LIMIT_S:
                why = f"it was not finished after {FINISH_LIMIT_S:g} s"
            elif stopped_at is not None and now - stopped_at >= STOPPED_FINISH_S:
                why = f"stopped, and it was not finished {STOPPED_FINISH_S:g} s later"
            if why:
                break
            if not told and now - began >= FINISH_NOTE_S:
                told = True
                _eprint(
                    f"{PROG}: still finishing {output} ({last[1] / 1e6:.1f} MB so far); "
                    "Ctrl-C again to stop waiting and keep the frames it has"
                )
    except KeyboardInterrupt:
        why = "Ctrl-C"
    if not why:
        return True
    _eprint(f"{PROG}: stopped waiting for {output} ({why}); keeping the frames it has")
    return False


#: How long `run` may spend moving a recording's MP4 index before its frames once it is
#: finished (:func:`_move_index_first`): a copy of the file, about 2 GB on an SSD.
FASTSTART_LIVE_S = 10.0


def _move_index_first(sink: Any) -> None:
    """Move the index of a finished `run` recording (an MP4, M4V or MOV at its name) before its
    frames (:func:`engine.mp4.faststart`), so that it plays as it downloads.

    Here, not as the engine closes the file: that is a daemon thread, which a second Ctrl-C
    ended mid-copy, and the hidden copy stayed. The stop signals are taken again meanwhile:
    a Ctrl-C, SIGTERM or the terminal closing ends the copy, which is removed, and the
    recording, complete, keeps its index at its end (as one too long to copy within
    :data:`FASTSTART_LIVE_S` does).
    """
    from engine.mp4 import MP4_EXTENSIONS, faststart
    from engine.remux import RemuxStopped

    path = getattr(sink, "kept_path", None)
    if (
        path is None
        or path != getattr(sink, "path", None)
        or getattr(sink, "failed", False)
        or path.suffix.lower() not in MP4_EXTENSIONS
    ):
        return
    moving = threading.Event()
    restore = _install_stop_signals(moving)
    left: list[Path] = []
    try:
        faststart(path, stop=moving, within_s=FASTSTART_LIVE_S, left=left)
    except (RemuxStopped, KeyboardInterrupt):
        _eprint(
            f"{PROG}: note: stopped while moving the index of {path} before its frames: the "
            "recording is complete and plays, its index at its end"
        )
    finally:
        restore()
        _say_left_behind(left, path)


def _say_left_behind(left: list[Path], output: str | os.PathLike[str]) -> None:
    """Name the copies :func:`engine.mp4.faststart` could not remove (their folder turned
    read-only meanwhile): each holds as much as ``output``, hidden."""
    for copy in left:
        _eprint(
            f"{PROG}: warning: {copy} could not be removed (a copy made to move the index of "
            f"{output} before its frames; {output} is complete): remove it"
        )


def _check_finished(sink: Any, output: str) -> None:
    """After a join that gave up: an output still being written is not finished, and its
    frames are in a hidden file. It said only "exiting", exit 0, with nothing at ``output``."""
    left = getattr(sink, "unfinished_path", None)
    if left is not None:
        raise CliError(
            f"{output} is not finished: it was still being written when SharpCam stopped "
            f"waiting for it (a slow disk, or an encoder behind); the frames so far are in {left}"
        )


def _note_lost_audio(source: str, output: str, *, copied: bool = False) -> bool:
    """Say that a video's sound track does not reach the output (OpenCV writes pictures
    only). With ``copied`` (``process``), FFmpeg copies it after the frames where it is
    found: returns whether to, and says nothing then."""
    from engine.sinks import VIDEO_CODECS
    from engine.sources import source_kind, video_has_audio

    if source_kind(source) != "video" or Path(output).suffix.lower() not in VIDEO_CODECS:
        return False
    has_audio = video_has_audio(source)
    if has_audio is False:
        return False
    if copied:
        from engine.remux import find_ffmpeg

        if find_ffmpeg() is not None:
            return True
    if has_audio is None:
        # A container whose track list is not read here (MPEG-TS, OGV, WMV): FFmpeg's is.
        has_audio = _ffmpeg_hears(source)
        if has_audio is False:
            return False
    # `run` records live: frames the model had no time for are dropped, and the sound would
    # drift from the pictures. `process` without FFmpeg cannot copy it.
    from engine.remux import ffmpeg_unusable, find_ffmpeg

    # A $SHARPCAM_FFMPEG set wrong, or an FFmpeg that hung: "install FFmpeg" was no answer.
    unusable = ffmpeg_unusable()
    if copied:
        why = f" ({unusable})" if unusable else " (install FFmpeg to keep it)"
    else:
        if find_ffmpeg() is not None:
            keeps = "keeps it"
        elif unusable:
            keeps = f"keeps it with an FFmpeg that runs: {unusable}"
        else:
            keeps = "keeps it once FFmpeg is installed"
        why = f" (`run` records live: the sound would drift from the pictures; `process` {keeps})"
    if has_audio:
        _eprint(
            f"{PROG}: note: {output} will have no sound: the audio of {source} is not copied{why}"
        )
    else:
        # A container whose track list is not read here (MPEG-TS, FLV, ...): say it either way.
        _eprint(
            f"{PROG}: note: {output} will have no sound: audio is not copied (whether {source} "
            f"has any could not be told){why}"
        )
    return False


def _ffmpeg_hears(video: str) -> bool | None:
    """Whether FFmpeg lists sound it can read in ``video``; None where it cannot tell (no
    FFmpeg, a file it cannot list)."""
    from engine.remux import _sound_maps, find_ffmpeg

    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return None
    maps = _sound_maps(ffmpeg, video, None, 0)
    return None if maps == ["-map", "0:a?"] else bool(maps)


def _kept_tags(video: str) -> bool:
    """Whether ``video`` has a date, place or camera tag that ``process`` copies."""
    from engine.remux import find_ffmpeg, has_kept_tags

    ffmpeg = find_ffmpeg()
    return bool(ffmpeg) and has_kept_tags(video, ffmpeg=ffmpeg)


def _note_avi_tags(video: str, output: str) -> None:
    # An AVI holds no date or place: they were dropped without a word, where .mp4, .mov and
    # .mkv keep them.
    if Path(output).suffix.lower() == ".avi" and _kept_tags(video):
        _eprint(
            f"{PROG}: note: {output} will be without the date and place of {video} (an AVI "
            "holds none; .mp4, .mov or .mkv keep them)"
        )


def _missing_after_stop(kind: str, video: str, sound: bool) -> str:
    """What an interrupted video output lacks, as ``", without ..."`` ("" for none): its
    sound and tags are put in after the last frame, which a stop does not reach."""
    if kind != "video":
        return ""
    missing = [
        *(["sound"] if sound else []),
        *(["the date and place"] if _kept_tags(video) else []),
    ]
    return f", without {' or '.join(missing)}" if missing else ""


def _tone_map(source: Any, video: str, output: str) -> None:
    """Where ``video`` is HDR (an iPhone films HDR by default), make ``source`` (its
    ``VideoFileSource``) read it tone mapped to SDR by FFmpeg as it goes
    (``engine.remux.tone_map_hdr``), and say which. OpenCV decodes HDR to 8-bit without
    converting its primaries: saturated colours came out shifted (a pure green as
    (92, 228, 63)). Where this FFmpeg cannot tone map, or fails to, a note says so."""
    from engine.remux import tone_map_hdr

    done = tone_map_hdr(source)
    if source.deinterlaced:
        _eprint(
            f"{PROG}: note: {video} is interlaced ({source.deinterlaced}); it is de-interlaced "
            "as it is read (FFmpeg's bwdif, one picture a frame)"
        )
    if done is None:
        return
    if done.problem is None:
        _eprint(
            f"{PROG}: note: {video} is HDR video ({done.transfer}); it is tone mapped to SDR "
            "(BT.709) as it is read"
        )
        return
    _eprint(
        f"{PROG}: note: {video} is HDR video ({done.transfer}), and SharpCam works in 8-bit "
        f"SDR: the colours of {output} will not match it ({done.problem}; convert it to SDR "
        "first to keep them)"
    )


def _note_even_sides(size: tuple[int, int] | None, output: str) -> None:
    """Say that a video file output of frames of ``size`` loses their last column or row:
    the video sink keeps even sides (4:2:0 video needs them), and a 641x359 clip came out
    640x358, said only by the size on the first line."""
    from engine.frames import even_size, fit_cuts

    if size is None:
        return
    w, h = size
    ew, eh = even_size(size)
    cut = [*(["column"] if ew < w else []), *(["row"] if eh < h else [])]
    if cut and not fit_cuts(size, (ew, eh)):
        # Under 50 pixels a side the sink resamples instead (fit_to): "cut" was false there.
        _eprint(
            f"{PROG}: note: {output} will be {ew}x{eh}: the {w}x{h} frames are scaled to it "
            "(video is encoded with even sides)"
        )
    elif cut:
        _eprint(
            f"{PROG}: note: {output} will be {ew}x{eh}: the last {' and '.join(cut)} of the "
            f"{w}x{h} frames {'is' if len(cut) == 1 else 'are'} cut (video is encoded with "
            "even sides)"
        )


def _note_video_depth(video: str, output: str) -> None:
    """Say that ``video``'s depth beyond 8 bits does not reach ``output``, as an image's is
    said (:func:`_note_lost_image_detail`): a 10-bit camera clip came out 8-bit unsaid. An
    HDR video's notes say it already (SharpCam works in 8-bit SDR)."""
    from engine.remux import find_ffmpeg, hdr_transfer, video_depth

    ffmpeg = find_ffmpeg()
    if ffmpeg is None or hdr_transfer(video, ffmpeg=ffmpeg) is not None:
        return
    depth = video_depth(video, ffmpeg=ffmpeg)
    if depth is not None and depth > 8:
        _eprint(f"{PROG}: note: {output} will be 8-bit, without the {depth}-bit depth of {video}")


#: How a note names the streams of a video that its output is without, by kind (one, more).
_STREAM_NAMES = {
    "video": ("second video stream", "{n} other video streams"),
    "subtitle": ("subtitle track", "{n} subtitle tracks"),
    "cover": ("cover picture", "{n} cover pictures"),
    "timecode": ("timecode track", "{n} timecode tracks"),
    "data": ("data track", "{n} data tracks"),
    "chapter": ("chapter", "{n} chapters"),  # no stream, but a recording is without them too
}


def _streams_named(counts: dict[str, int]) -> tuple[str, str]:
    """``("second video stream and timecode track", "are")``: the streams ``counts`` holds by
    kind (:func:`engine.remux.other_streams`), and the verb that goes with them."""
    names = [
        one if counts[kind] == 1 else more.format(n=counts[kind])
        for kind, (one, more) in _STREAM_NAMES.items()
        if counts.get(kind)
    ]
    return _listed(names), "is" if sum(counts.values()) == 1 else "are"


def _first_only(counts: dict[str, int]) -> str:
    """Why a video's other video streams are missing, where ``counts`` holds some."""
    return " (SharpCam reads its first video stream only)" if counts.get("video") else ""


def _note_other_streams(video: str, output: str) -> None:
    """Say what of ``video`` a recording of it is without besides its sound: its video streams
    after the first, its subtitles, covers, timecode and data tracks (`process` says so of
    its output too), and its chapters (which `process` keeps). From the FFmpeg listing its
    other notes read: no FFmpeg run of its own."""
    from engine.remux import (
        chapter_count,
        cover_pictures,
        find_ffmpeg,
        other_streams,
        subtitle_tracks,
    )

    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return
    counts = other_streams(video, ffmpeg=ffmpeg)
    counts["subtitle"] = subtitle_tracks(video, ffmpeg=ffmpeg)
    counts["cover"] = cover_pictures(video, ffmpeg=ffmpeg)
    counts["chapter"] = chapter_count(video, ffmpeg=ffmpeg)
    if any(counts.values()):
        listed, _ = _streams_named(counts)
        _eprint(
            f"{PROG}: note: {output} will be without the {listed} of {video}{_first_only(counts)}"
        )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_detail(f: Any) -> list[str]:
    """What the PNG open in ``f`` holds beyond 8-bit RGB, from its chunk headers before the
    image data (the data itself is skipped, not read)."""
    head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE):
        return []
    detail = []
    depth, colour = head[24], head[25]  # IHDR, the first chunk
    if colour in (4, 6):
        detail.append("the alpha channel")
    pos = 8
    for _ in range(1000):  # a damaged file's lengths could lead anywhere
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8 or chunk[4:] == b"IDAT":
            break
        if chunk[4:] == b"tRNS":  # a palette's or a single colour's transparency
            detail.append("the transparency")
            break
        pos += int.from_bytes(chunk[:4], "big") + 12
    if depth == 16:
        detail.append("the 16-bit depth")
    return detail


def _gif_detail(f: Any) -> list[str]:
    """The transparency of the GIF open in ``f`` (a GIF is 8-bit at most)."""
    from engine.sources import gif_transparency

    return ["the transparency"] if gif_transparency(f) else []


def _webp_detail(f: Any) -> list[str]:
    """The alpha channel of the WebP open in ``f``, from its first chunk's header (a WebP is
    8-bit, so it has nothing else to lose)."""
    head = f.read(30)
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return []
    kind = head[12:16]
    if kind == b"VP8X":  # the extended format: a flags byte, alpha at 0x10
        alpha = bool(head[20] & 0x10)
    elif kind == b"VP8L":  # lossless: signature 0x2F, then 14 + 14 bits of size, alpha_is_used
        alpha = head[20] == 0x2F and bool(int.from_bytes(head[21:25], "little") >> 28 & 1)
    else:  # "VP8 ", lossy without alpha
        alpha = False
    return ["the alpha channel"] if alpha else []


def _tiff_detail(f: Any) -> list[str]:
    """What the TIFF open in ``f`` holds beyond 8-bit RGB, from the tags of its first image
    (BitsPerSample, ExtraSamples, SampleFormat); the image data is not read."""
    head = f.read(8)
    order = {b"II": "little", b"MM": "big"}.get(head[:2])
    if len(head) < 8 or order is None or int.from_bytes(head[2:4], order) != 42:
        return []  # not a classic TIFF (BigTIFF's 43 is left to the decoder's silence)
    f.seek(int.from_bytes(head[4:8], order))
    count = int.from_bytes(f.read(2), order)
    tags: dict[int, tuple[int, int, bytes]] = {}
    for _ in range(min(count, 1000)):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, kind = int.from_bytes(entry[0:2], order), int.from_bytes(entry[2:4], order)
        tags[tag] = (kind, int.from_bytes(entry[4:8], order), entry[8:12])

    def first_value(tag: int, default: int) -> int:
        if tag not in tags:
            return default
        kind, n, field = tags[tag]
        size = {3: 2, 4: 4}.get(kind, 1)
        if n * size > 4:  # the values lie elsewhere in the file
            f.seek(int.from_bytes(field, order))
            field = f.read(size)
        return int.from_bytes(field[:size], order)

    detail = []
    # A channel beside the colour ones: ExtraSamples says so, or only the count (OpenCV
    # writes RGBA as 4 samples without it). Photometric: 0/1 grey, 2 RGB, 3 palette, 5 CMYK.
    colours = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3}.get(first_value(262, 2), 3)
    if 338 in tags or first_value(277, 1) > colours:
        detail.append("the alpha channel")
    bits, sample_format = first_value(258, 1), first_value(339, 1)
    if sample_format == 3:
        detail.append("the floating-point values")
    elif bits > 8:
        detail.append(f"the {bits}-bit depth")
    return detail


def _tiff_pages(path: Path) -> int:
    """How many pages (image directories) the TIFF or BigTIFF at ``path`` chains, counted up
    to 100; 1 for anything else or a file that cannot be read. OpenCV decodes the first only.
    A directory marked a reduced-resolution copy or a mask of another (NewSubfileType 1 or 4:
    a scan's or a camera's thumbnail) is not a page: a photo with its thumbnail was said to
    lose its second page."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            order = {b"II": "little", b"MM": "big"}.get(head[:2])
            if order is None or len(head) < 8:
                return 1
            version = int.from_bytes(head[2:4], order)
            if version not in (42, 43) or version == 43 and len(head) < 16:
                return 1
            # Classic: 2-byte entry count, 12-byte entries, 4-byte links; BigTIFF: 8, 20, 8.
            big = version == 43
            link, entry = (8, 20) if big else (4, 12)
            pages, offset, seen = 0, int.from_bytes(head[8:16] if big else head[4:8], order), set()
            # A damaged chain may loop, or run on through directories that are no pages.
            while offset and offset not in seen and pages < 100 and len(seen) < 1000:
                seen.add(offset)
                f.seek(offset)
                count = f.read(8 if big else 2)
                if len(count) < (8 if big else 2):
                    break
                entries = f.read(entry * min(int.from_bytes(count, order), 4096))
                subfile = 0
                for at in range(0, len(entries) - entry + 1, entry):
                    if int.from_bytes(entries[at : at + 2], order) == 254:
                        value = entries[at + 4 + link : at + entry]
                        short = int.from_bytes(entries[at + 2 : at + 4], order) == 3
                        subfile = int.from_bytes(value[: 2 if short else 4], order)
                        break
                pages += not subfile & 0b101
                f.seek(offset + len(count) + entry * int.from_bytes(count, order))
                nxt = f.read(link)
                offset = int.from_bytes(nxt, order) if len(nxt) == link else 0
    except (OSError, ValueError):  # ValueError: a BigTIFF link past what seek takes
        return 1
    return max(pages, 1)


def _image_detail_lost(path: Path, *, decode: bool) -> list[str]:
    """What ``path`` holds that the engine's 8-bit RGB frames drop (alpha, depth beyond 8 bits).

    PNG, GIF, WebP and TIFF from their headers (no decoding); other formats by decoding the file
    again, only with ``decode`` (one image: cheap; a folder of photos: a second decode of
    each). JPEG is 8-bit RGB or grey. [] when nothing is lost or the file does not say.
    """
    import cv2
    import numpy as np

    from engine.heif import heif_metadata, is_avif, is_heif
    from engine.sources import image_format

    try:
        with open(path, "rb") as f:
            head = f.read(64)
        if is_heif(head) or is_avif(head):
            # From the boxes: a camera's 10-bit HIF or AVIF (OpenCV decodes no HEIF).
            meta = heif_metadata(path)
            deep = [f"the {meta.bits}-bit depth"] if meta.bits and meta.bits > 8 else []
            return (["the alpha channel"] if meta.alpha else []) + deep
        # By the bytes, not the name: an RGBA PNG named .gif went unnoted.
        headers = {
            "png": _png_detail,
            "gif": _gif_detail,
            "webp": _webp_detail,
            "tiff": _tiff_detail,
        }
        header = headers.get(image_format(head) or "")
        if header is not None:
            with open(path, "rb") as f:
                return header(f)
        if not decode or head[:3] == b"\xff\xd8\xff":  # a JPEG: 8-bit RGB or grey
            return []
        img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        return []  # the source has opened it: an error here only costs the note
    if img is None:
        return []
    detail = []
    if img.ndim == 3 and img.shape[2] in (2, 4):
        detail.append("the alpha channel")
    if img.dtype == np.uint16:
        detail.append("the 16-bit depth")
    elif img.dtype.kind == "f":
        detail.append("the floating-point values")
    return detail


def _note_lost_image_detail(kind: str, source: Any, output: str) -> None:
    """Say that an image's alpha channel or depth beyond 8 bits does not reach the output (the
    engine works in 8-bit RGB): a transparent PNG came back opaque without a word."""
    if kind == "image":
        detail = _image_detail_lost(Path(source.path), decode=True)
        if detail:
            _eprint(
                f"{PROG}: note: {output} will be 8-bit RGB, without {' and '.join(detail)} "
                f"of {Path(source.path).name}"
            )
        pages = _tiff_pages(Path(source.path))
        if pages > 1:
            # The pages after the first (a scan's, a fax's) were dropped without a word.
            _eprint(
                f"{PROG}: note: {output} will hold only the first of the {pages}"
                f"{'+' * (pages >= 100)} pages of {Path(source.path).name} (SharpCam reads "
                "one page of a TIFF)"
            )
        if Path(output).suffix.lower() == ".pgm" and Path(source.path).suffix.lower() != ".pgm":
            _eprint(f"{PROG}: note: {output} will be grey: a .pgm holds grey only")
    elif kind == "folder":
        # Headers only: decoding every photo twice to say so would cost more than it tells.
        hits = [f for f in source.files if _image_detail_lost(f, decode=False)]
        if hits:
            _eprint(
                f"{PROG}: note: the outputs are 8-bit RGB: {len(hits)} of the "
                f"{len(source.files)} images lose an alpha channel, transparency or 16-bit "
                f"depth (first: {hits[0].name})"
            )


_TIFF_UNREAD = "SharpCam does not carry a TIFF's tags over; a JPEG or PNG input keeps them"


def _note_lost_metadata(kind: str, source: Any, output: str) -> None:
    """Say that an image's EXIF data (date taken, camera), XMP data (rating, keywords) or colour
    profile does not reach the output, and why: a format that holds none, but also a JPEG output that cannot (an EXIF
    block over 64 KB, one that cannot be read, a grey photo's profile on RGB pixels), where
    naming the formats that keep them sent the user to the format they had given."""
    from engine.sinks import LostMetadata, metadata_lost, output_image_name
    from engine.sources import read_image_metadata, tiff_metadata_unread

    def lost_from(image: Path, out: str | Path) -> list[LostMetadata]:
        # A TIFF's tags are not read at all: its profile and camera tags went without a note.
        unread = [LostMetadata(what, _TIFF_UNREAD) for what in tiff_metadata_unread(image)]
        return unread or metadata_lost(read_image_metadata(image), out)

    if kind == "image":
        lost = lost_from(Path(source.path), output)
        if lost:
            what = _lost_metadata_text(lost, of=Path(source.path).name)
            _eprint(f"{PROG}: note: {output} will be without {what}")
    elif kind == "folder":
        # Each output keeps its input's name: a format that holds none loses them.
        losses = [(f, lost_from(f, output_image_name(f.name))) for f in source.files]
        hits = [(f, lost) for f, lost in losses if lost]
        if hits:
            first, lost = hits[0]
            _eprint(
                f"{PROG}: note: {len(hits)} of the {len(source.files)} images lose their "
                f"EXIF data, XMP data or colour profile; the first, {first.name}, loses "
                f"{_lost_metadata_text(lost)}"
            )


def _lost_metadata_text(lost: Sequence[LostMetadata], of: str | None = None) -> str:
    """``"the EXIF data and the colour profile of a.jpg (WHY)"``, or ``"the EXIF data of
    a.jpg (WHY) and the colour profile (WHY2)"`` when they are lost for different reasons
    (``of`` names the image)."""
    reasons: dict[str, list[str]] = {}
    for item in lost:
        reasons.setdefault(item.why, []).append(item.what)
    parts = []
    for why, whats in reasons.items():
        named = f" of {of}" if of and not parts else ""
        parts.append(f"{_listed(whats)}{named} ({why})")
    return _listed(parts)


def _listed(items: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 2 else items)


#: How many names a note about a folder's entries gives before "...".
NAMES_IN_A_NOTE = 3


def _some_names(paths: Sequence[Path]) -> str:
    """``"a.txt, b, c.mp4"`` or ``"a.txt, b, c.mp4, ..."``: the first few names of ``paths``."""
    names = [p.name for p in paths[:NAMES_IN_A_NOTE]]
    return ", ".join(names) + (", ..." if len(paths) > NAMES_IN_A_NOTE else "")


def _note_folder_entries(source: Any) -> None:
    """Say what a folder source reads nothing (or only a first frame) of: its sub-folders and
    files of other types were left out without a word, an animated image's later frames too."""
    from engine.sources import is_animated_image

    left_out = list(getattr(source, "left_out", ()))
    folders = [p for p in left_out if p.is_dir()]
    others = [p for p in left_out if not p.is_dir()]
    parts = []
    if folders:
        parts.append(
            f"{len(folders)} sub-folder{'s' * (len(folders) != 1)} ({_some_names(folders)})"
        )
    if others:
        parts.append(
            f"{len(others)} file{'s' * (len(others) != 1)} of other types ({_some_names(others)})"
        )
    name = Path(source.path).name
    if parts:
        _eprint(f"{PROG}: note: left out of folder {name}: {' and '.join(parts)}")
    animated = [f for f in source.files if is_animated_image(f)]
    if animated:
        n = len(animated)
        _eprint(
            f"{PROG}: note: {n} animated image{'s' * (n != 1)} in folder {name}: only the "
            f"first frame of each is processed ({_some_names(animated)})"
        )
    paged = [f for f in source.files if _tiff_pages(f) > 1]
    if paged:
        n = len(paged)
        _eprint(
            f"{PROG}: note: {n} TIFF{'s' * (n != 1)} of several pages in folder {name}: only "
            f"the first page of each is processed ({_some_names(paged)})"
        )


#: Write errors that no later image escapes: the folder cannot take more files, so the run
#: stops rather than fail (and list) every image left.
_OUTPUT_FULL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no quotas everywhere
)


class _FrameTags:
    """Which source frame each image array is, for as long as the array lives.

    Keyed by the array's identity, with a weak reference that drops the entry when the array
    is freed: a later array at the same address is never taken for an earlier frame, and the
    images the backend is never called on (strength 0) are not kept alive.
    """

    def __init__(self) -> None:
        # Reentrant: a garbage collection inside the block can free an array and run its
        # callback, which takes the lock, in the same thread.
        self._lock = threading.RLock()
        self._tags: dict[int, tuple[weakref.ref[Any], int]] = {}

    def tag(self, image: Any, index: int) -> None:
        key = id(image)

        def forget(ref: weakref.ref[Any]) -> None:
            with self._lock:
                if self._tags.get(key, (None,))[0] is ref:
                    del self._tags[key]

        with self._lock:
            self._tags[key] = (weakref.ref(image, forget), index)

    def index_of(self, image: Any) -> int | None:
        """The frame index ``image`` was read as; None for an array no frame was read as."""
        with self._lock:
            entry = self._tags.get(id(image))
        if entry is None or entry[0]() is not image:
            return None
        return entry[1]


class _TaggedSource:
    """A source whose frames' images are recorded in ``tags`` as they are read; everything
    else is the wrapped source's."""

    def __init__(self, source: Any, tags: _FrameTags) -> None:
        self._source = source
        self._tags = tags

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not delegated: _source itself, before __init__ set it
            raise AttributeError(name)
        return getattr(self._source, name)

    def read(self) -> Any:
        frame = self._source.read()
        if frame is not None:
            self._tags.tag(frame.image, frame.index)
        return frame


class _PerImageBackend:
    """Folder processing: the model failing on one image skips that image (listed at the end)
    rather than end the run, as it must for a video (a video's frames cannot have gaps).

    :attr:`failures` maps the failed image's frame index to the error. The index comes from
    the image array itself (``tags``, filled by :class:`_TaggedSource`), not from counting
    calls: the engine makes no call for a frame at strength 0 or while disabled, and from
    such a frame on a count would blame (and skip) a good image and write the failed one
    unprocessed under its name. The image itself is returned in its place, for
    :class:`_NamedImageSink` not to write.
    """

    def __init__(self, backend: Any, tags: _FrameTags) -> None:
        self._backend = backend
        self._tags = tags
        self.failures: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:  # name, provider, close(): the wrapped backend's
        if name.startswith("_"):  # not delegated: _backend itself, before __init__ set it
            raise AttributeError(name)
        return getattr(self._backend, name)

    def process(self, rgb: Any) -> Any:
        try:
            result = self._backend.process(rgb)
            shape, dtype = getattr(result, "shape", None), getattr(result, "dtype", None)
            if shape != rgb.shape or dtype != rgb.dtype:
                raise ValueError(f"the model returned {shape} {dtype} for {rgb.shape} {rgb.dtype}")
        except Exception as exc:
            index = self._tags.index_of(rgb)
            if index is None:
                # Not an image the source handed out (the engine copied it): skipping by guess
                # could write this image unprocessed under its name, so the run fails instead.
                raise
            self.failures[index] = str(exc) or type(exc).__name__
            return rgb
        return result


class _NamedImageSink:
    """Folder -> folder: each processed image keeps its input file's name (and format), and
    its EXIF data, XMP data and colour profile where that format holds them.

    An image the model failed on (``failures``, from :class:`_PerImageBackend`) or that cannot
    be written is skipped and listed in :attr:`skipped` as ``(input file, message)``: each
    output is a file of its own, and the others are still wanted. A full or read-only disk
    still ends the run, and a folder it may not write in ends it before the first image.
    """

    size = None

    def __init__(self, out_dir: Path, source: Any, failures: dict[int, str]) -> None:
        from engine.sinks import SinkError, make_folder

        self.out_dir = out_dir
        self.source = source  # an ImageFolderSource: frame_files names each frame's file
        self.failures = failures
        self.skipped: list[tuple[Path, str]] = []
        make_folder(out_dir)  # was "[Errno 13] Permission denied: '...'" and nothing else
        try:
            # An existing folder it may not write in: every image went through the model,
            # then failed to write and was listed as skipped (minutes to hours of work).
            with tempfile.TemporaryFile(dir=out_dir, prefix=".sharpcam-"):
                pass
        except OSError as exc:
            raise SinkError(f"cannot write in folder {out_dir}: {exc.strerror or exc}") from exc
        self.frames_written = 0

    def write(self, frame: Any) -> None:
        from engine.sinks import SinkError, output_image_name, write_image
        from engine.sources import read_image_metadata

        file = self.source.frame_files[frame.index]
        problem = self.failures.get(frame.index)
        if problem is not None:
            self.skipped.append((file, f"cannot process {file}: {problem}"))
            return
        try:
            metadata = read_image_metadata(file)
            out = self.out_dir / output_image_name(file.name)
            write_image(out, frame.image, metadata=metadata)
        except SinkError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno in _OUTPUT_FULL_ERRNOS:
                raise
            self.skipped.append((file, str(exc)))
            return
        self.frames_written += 1

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"folder {self.out_dir}"


#: How many skipped images `process` names one by one; the rest are counted.
MAX_SKIPPED_LISTED = 20


def _report_skipped(source: Any, sink: Any) -> int:
    """Name the images a folder run skipped (unreadable, failed, unwritable), in folder
    order, at most :data:`MAX_SKIPPED_LISTED`; returns how many were skipped."""
    skipped = [*getattr(source, "skipped", ()), *getattr(sink, "skipped", ())]
    order = {file: i for i, file in enumerate(getattr(source, "files", ()))}
    skipped.sort(key=lambda item: order.get(item[0], len(order)))
    for _, message in skipped[:MAX_SKIPPED_LISTED]:
        _eprint(f"{PROG}: skipped: {message}")
    if len(skipped) > MAX_SKIPPED_LISTED:
        _eprint(f"{PROG}: ... and {len(skipped) - MAX_SKIPPED_LISTED} more skipped")
    return len(skipped)


def _full_disk_error(exc: BaseException) -> bool:
    """Whether FFmpeg failed for want of room (its message, as FFmpeg words ENOSPC/EDQUOT)."""
    return any(t in str(exc) for t in ("No space left on device", "Disk quota exceeded"))


def _check_process_output(kind: str, out: str, source: str | None = None) -> None:
    """Usage errors in ``process``'s output (exit 2), found before the model loads."""
    from engine.sinks import VIDEO_CODECS, SinkError, sink_kind, writable_image_extensions
    from engine.sources import IMAGE_EXTENSIONS, is_animated_image

    path = Path(out)
    ext = path.suffix.lower()
    if kind == "video":
        if ext not in VIDEO_CODECS:
            # An animated WebP or PNG is read as a video: "for a video input" puzzled.
            what = (
                f"an animated image input ({Path(source).name} has several frames)"
                if source is not None and is_animated_image(source)
                else "a video input"
            )
            raise CliError(
                f"output {out} must be a video file ({', '.join(VIDEO_CODECS)}) for {what}",
                code=2,
            )
        _check_video_output_not_folder(out)
    elif kind == "image":
        if ext not in IMAGE_EXTENSIONS:
            exts = ", ".join(writable_image_extensions())
            raise CliError(f"output {out} must be an image file ({exts}) for an image input", 2)
        if path.is_dir():
            # The image sink took a folder named like an image for a frame folder: the result
            # went to out.png/frame_000000.png and the summary said "1 frame -> out.png".
            raise CliError(f"output {out} is a folder; give an image file name", code=2)
        _check_image_writer(out)
    elif kind == "folder":
        try:
            video = sink_kind(out) == "video"
        except SinkError as exc:  # out.txt: neither a folder nor a file it writes
            raise CliError(str(exc), code=2) from exc
        # A new folder named like an image (result.jpg) is a slip for a file name, as a video
        # name is: it was made, filled with the images, and reported as "N frames -> result.jpg".
        image = ext in IMAGE_EXTENSIONS and not path.is_dir()
        if path.exists() and not path.is_dir() or video or image:
            raise CliError(f"output {out} must be a folder for a folder input", code=2)
    else:
        raise CliError(f"cannot process a {kind} input: give a video, an image or a folder", 2)


def _folds_case(folder: Path) -> bool:
    """Whether ``folder`` (or, not made yet, the folder it will be made in) takes two names
    that differ only in case for one file: macOS and Windows volumes, a FAT or exFAT drive."""
    where = folder
    while not where.is_dir():
        if where.parent == where:
            return False
        where = where.parent
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=".sharpcam-case-") as probe:
            name = Path(probe.name).name
            return os.path.samefile(probe.name, where / name.swapcase())
    except OSError:
        return False  # no such file: names keep their case; or the sink will say why not


def _check_folder_outputs(files: Sequence[Path], out_dir: Path, *, overwrite: bool = False) -> None:
    """Usage errors (exit 2) in a folder run's outputs, before the model loads: two images
    written to one output file, an input that is a link to an output it would overwrite, or
    (unless ``overwrite``) a file already in ``out_dir`` under an output's name.

    Each image keeps its name (an HEIF photo's becomes ``.jpg``, a GIF's ``.png``:
    :func:`engine.sinks.output_image_name`), so names are unique in the input folder but for
    ``IMG_1.HEIC`` beside ``IMG_1.jpg`` (or ``logo.gif`` beside ``logo.png``); and ``A.png``
    and ``a.png`` (from a Linux folder) are one file in a folder that folds case, where the
    second result silently replaced the first.
    """
    from engine.sinks import output_image_name

    fold = _folds_case(out_dir)

    def key(name: str) -> str:
        # NFC too: APFS and HFS+ also take either Unicode form of a name for one file.
        return unicodedata.normalize("NFC", name).lower() if fold else name

    written: dict[str, Path] = {}
    for file in files:
        name = output_image_name(file.name)
        first = written.setdefault(key(name), file)
        if first is not file:
            renamed = next((f for f in (first, file) if output_image_name(f.name) != f.name), None)
            if renamed is not None:
                ext = Path(output_image_name(renamed.name)).suffix
                what = "a GIF's" if renamed.suffix.lower() == ".gif" else "an HEIF photo's"
                why = f"{what} result is a {ext}; rename one of them"
            else:
                why = (
                    f"folder {out_dir} does not tell names apart by case; rename one of them "
                    "or give an output folder on another drive"
                )
            raise CliError(
                f"{first.name} and {file.name} would both be written to "
                f"{out_dir / output_image_name(first.name)}: {why}",
                code=2,
            )
    if not out_dir.is_dir():
        return
    for file in files:
        # A link into the output folder: its target is replaced by a result, before or after
        # the link is read (then as a result, to be deblurred twice).
        real = Path(os.path.realpath(file))
        first = written.get(key(real.name))  # the target's own name, as a result is named
        if first is not None and _same_path(str(real.parent), str(out_dir)):
            raise CliError(
                f"input {file} is a link to {real}, which this run would overwrite with the "
                f"result of {first.name}",
                code=2,
            )
    if overwrite:
        return
    # `process photos/picked photos` wrote each result over the original of the same name,
    # and a second batch into a results folder replaced the first, both silently: unlike a
    # named output file, these names are the run's, not the user's.
    outputs = [out_dir / output_image_name(file.name) for file in files]
    taken = [out for out in outputs if os.path.lexists(out)]
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise CliError(
            f"folder {out_dir} already holds {taken[0].name}{more}, which this run would "
            "replace with its results; give a new output folder, or --overwrite to replace them",
            code=2,
        )


def _missing_folders(out: str) -> Path | None:
    """The topmost folder above ``out`` that does not exist yet, which its sink will create;
    None when there is none (``out`` itself, a folder of frames, is not counted)."""
    top = None
    # As the sinks take it: a `~` the shell left (`--output=~/a.mp4`) is a folder named `~`.
    for parent in Path(out).parents:
        if parent.exists():
            break
        top = parent
    return top


def _note_created(top: Path | None) -> None:
    # Made without a word, a typo in a folder name (`--output reuslts/a.mp4`) left the result
    # where nobody would look.
    if top is not None and top.is_dir():
        _eprint(f"{PROG}: note: created folder {top} (it did not exist)")


def _size_text(n: int) -> str:
    """``n`` bytes for a message: "640 bytes", "84 KB", "5.6 MB", "2.1 GB"."""
    if n < 1000:
        return f"{n} bytes"
    if n < 1000**2:
        return f"{n / 1000:.0f} KB"
    if n < 1000**3:
        return f"{n / 1000**2:.1f} MB"
    return f"{n / 1000**3:.1f} GB"


def _note_stale_work(out: str) -> None:
    """Name the hidden working files of ``out`` that an earlier run writing it left when it
    was killed (an out-of-memory kill, a power cut): its frames so far, which it never named.
    A new run writes beside them, to a numbered working name: a crashed hour-long recording
    sat hidden, gigabytes of it, and nothing said it could be recovered. They are left alone
    (the user's to rename or delete); one another running SharpCam writes is not named
    (:func:`engine.sinks.stale_work_files`)."""
    from engine.sinks import stale_work_files

    found = stale_work_files(out)
    if not found:
        return
    sizes = []
    for path in found:
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(0)
    why = (
        f"what an earlier run writing {out} had written when it was stopped before it "
        "finished (killed, crashed, or the power failed)"
    )
    # File managers hide a name that starts with a dot: "Show folder" opened on no such file.
    # Not Explorer, which shows it (there Ctrl+H and `ls -a` were advice for nothing).
    if sys.platform == "win32":
        shows = ""
    elif sys.platform == "darwin":
        shows = ": Cmd+Shift+. shows {} in the Finder, `ls -a` in a terminal"
    else:
        shows = ": Ctrl+H shows {} in most file managers, `ls -a` in a terminal"
    if len(found) == 1:
        _eprint(
            f"{PROG}: note: the hidden file {found[0]} ({_size_text(sizes[0])}) holds {why}. "
            "SharpCam leaves it there: rename it to keep it, or delete it (its name starts "
            f"with a dot{shows.format('it')})"
        )
        return
    names = ", ".join(p.name for p in found[:5]) + (
        f" and {len(found) - 5} more" if len(found) > 5 else ""
    )
    _eprint(
        f"{PROG}: note: {len(found)} hidden files in {found[0].parent} "
        f"({_size_text(sum(sizes))} in all: {names}) hold {why}. SharpCam leaves them there: "
        "rename them to keep them, or delete them (their names start with a dot"
        f"{shows.format('them')})"
    )


def _check_output_name(out: str) -> None:
    """A usage error (exit 2) for an output file name longer than its file system takes: the
    write failed only once the model had run ("File name too long")."""
    from engine.sinks import SinkError, check_name_fits

    try:
        check_name_fits(out)
    except SinkError as exc:
        raise CliError(str(exc), code=2) from exc
    if _link_loop(out):
        # Path.resolve() raised on it: "error: RuntimeError: Symlink loop from ...", exit 1.
        raise CliError(f"output {out}: a loop of symbolic links (it leads back to itself)", 2)


def _check_video_output_not_folder(out: str) -> None:
    """A usage error (exit 2) for a video output that is an existing folder (``clips.mp4/``),
    as for an image output: the video sink refused it only once the model had loaded, exit 1."""
    if Path(out).is_dir():
        raise CliError(f"output {out} is a folder; give a video file name", code=2)


def _open_process_sink(kind: str, source: Any, out: str, backend: Any) -> Any:
    """The sink matching the input kind: video -> video, image -> image, folder -> folder
    (``out`` already passed :func:`_check_process_output`; a folder's ``backend`` is a
    :class:`_PerImageBackend`). An image keeps its EXIF data, XMP data and colour profile
    where the output's format can hold them."""
    from engine.sinks import SinkError, open_sink
    from engine.sources import read_image_metadata

    _note_stale_work(out)
    try:
        if kind == "video":
            # Named by cmd_process once its sound and timing are in: a failed copy of the
            # sound replaced an existing file with a soundless one under an exit 1.
            return open_sink(out, size=source.size, fps=source.fps, publish=False)
        if kind == "image":
            metadata = read_image_metadata(source.path)
            return open_sink(out, size=None, kind="images", metadata=metadata)
        return _NamedImageSink(Path(out), source, backend.failures)
    except (SinkError, OSError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _lost(video: str, gaps: Sequence[tuple[int, float]]) -> str:
    """Where ``video``'s damaged pictures were lost (``VideoFileSource.gaps``), by the
    frames written before them."""
    after = ", ".join(str(before) for before, _ in sorted(gaps) if before)
    return f"damaged pictures of {video} could not be decoded (after frame {after})"


def _finish_video(
    args: argparse.Namespace,
    sink: Any,
    written: int,
    copy_sound: bool,
    stop: threading.Event,
    existed: bool,
    gaps: Sequence[tuple[int, float]] = (),
    decoded_s: float | None = None,
) -> int:
    """``process``'s last steps for a video, on its finished file while it waits under its
    hidden name (a ``publish=False`` sink): the input's frame times, its sound (or its date and
    place), the index moved first; then the file gets its name. Where a step fails so that
    the run exits 1 (a full disk) or is stopped, the frames are kept as ``NAME.incomplete.EXT``
    and an existing file at the output's name stays as it was. Returns the exit code."""
    from engine.remux import (
        RemuxError,
        RemuxStopped,
        copy_audio,
        cover_pictures,
        find_ffmpeg,
        has_kept_tags,
        keep_timing,
        other_streams,
        subtitle_tracks,
    )
    from engine.sinks import SinkError
    from engine.sources import video_has_audio

    work = str(sink.kept_path)  # messages name args.output: the hidden name is ours
    untouched = f"; {args.output} is left as it was" if existed else ""
    said = ""
    failed = False
    sound_in = False
    ffmpeg = find_ffmpeg()

    def copy(without: str) -> bool:
        """The input's sound (or tags) into ``work``; True where the run fails for it."""
        try:
            copy_audio(args.input, work, ffmpeg=ffmpeg, stop=stop, frames=written, gaps=gaps)
        except RemuxStopped:
            raise
        except RemuxError as exc:
            # The frames are all there: a warning, not a failed run; but a full disk fails it
            # (exit 1), as it does the frames: scripts went on with a silent video.
            full = _full_disk_error(exc)
            _eprint(f"{PROG}: {'error' if full else 'warning'}: {args.output} {without}: {exc}")
            return full
        sink.relock()  # the copy with it took the hidden name: the one replaced is let go
        return False

    step = "putting back the input's timing"
    try:
        # Before the sound: the copy with it keeps the pictures' times as they are.
        timing = ffmpeg and keep_timing(
            args.input,
            work,
            frames=written,
            ffmpeg=ffmpeg,
            stop=stop,
            gaps=gaps,
            decoded_s=decoded_s,
        )
        sink.relock()  # an MKV's retimed copy may have taken the hidden name
        # A silent clip's frames are off their own times, not "ahead of the sound". Not
        # copy_sound alone: that is True of an MPEG-TS whose tracks only FFmpeg lists, sound
        # or none, and a silent one's notes still spoke of its sound.
        # Asked only where a note needs it: FFmpeg's listing is not read for every video.
        heard = (
            timing in ("failed", "failed-early", "early", "varies")
            and copy_sound
            and (bool(video_has_audio(args.input)) or _ffmpeg_hears(args.input) is not False)
        )
        off_time = "ahead of or behind the sound" if heard else "ahead of or behind their times"
        ahead = ", ahead of the sound" if heard else ""
        if timing == "retimed":
            said += ", at the input's varying frame rate"
        elif timing in ("failed", "failed-early"):
            # Its index could not be rewritten: on a full disk, silent and exit 0.
            from engine.sinks import _disk_full

            full = _disk_full(Path(args.output).parent)
            mkv = Path(args.output).suffix.lower() == ".mkv"
            what = "its frame times" if mkv else "its index"
            why = "the disk is full" if full else f"{what} could not be rewritten"
            plays = (
                f"the frame rate of {args.input} varies and {args.output} plays its frames at "
                f"their mean rate, {off_time} within the clip"
                if timing == "failed"
                else f"{_lost(args.input, gaps)} and {args.output} plays the frames after "
                f"them early{ahead}"
            )
            _eprint(f"{PROG}: {'error' if full else 'warning'}: {plays}: {why}")
            failed = failed or full
        elif timing == "early":
            # An AVI has one rate: the frames after a lost picture take its slot.
            _eprint(
                f"{PROG}: note: {_lost(args.input, gaps)}; {args.output} plays the frames "
                f"after them early{ahead}, by the pictures lost (an .mp4, .mov or .mkv output "
                "keeps their times)"
            )
        elif timing == "varies":
            _eprint(
                f"{PROG}: note: the frame rate of {args.input} varies; {args.output} "
                f"plays its frames at their mean rate, {off_time} within the clip (an .mp4, "
                ".mov or .mkv output keeps the timing)"
            )
        if lead := [span for before, span in gaps if before == 0]:
            _eprint(
                f"{PROG}: note: the first pictures of {args.input} could not be decoded "
                f"(damaged); {args.output} starts at its first decodable one, {lead[0]:.2f} s in"
            )
        if copy_sound:
            step = "copying the sound"
            failed = copy("has no sound") or failed
            # Asked of the output: an input whose container is not read here may have had
            # none.
            if video_has_audio(work):
                said += ", with the sound of the input"
                sound_in = True  # a stop after it (the subtitles' probe) is not "without sound"
        elif ffmpeg and Path(args.output).suffix.lower() != ".avi":  # holds none: noted before
            step = "copying the date and place"  # a stop while they are looked for, too
            if has_kept_tags(args.input, ffmpeg=ffmpeg, stop=stop):
                # A silent clip's date and place were copied only with a sound track: a
                # screen recording or a muted phone clip lost them.
                failed = copy(f"is without the date and place of {args.input}") or failed
        step = "looking for subtitles"
        subtitles = subtitle_tracks(args.input, ffmpeg=ffmpeg, stop=stop) if ffmpeg else 0
        if subtitles:
            # They went without a word: a film's subtitles were simply gone from the copy.
            tracks = "track is" if subtitles == 1 else f"{subtitles} tracks are"
            _eprint(f"{PROG}: note: the input's subtitle {tracks} not copied")
        covers = cover_pictures(args.input, ffmpeg=ffmpeg, stop=stop) if ffmpeg else 0
        if covers:
            # Dropped as the subtitles are: a film's or a music video's cover, unsaid.
            pictures = "cover picture is" if covers == 1 else f"{covers} cover pictures are"
            _eprint(f"{PROG}: note: the input's {pictures} not copied")
        others = other_streams(args.input, ffmpeg=ffmpeg, stop=stop) if ffmpeg else {}
        if others:
            # A second camera angle, a timecode or a GoPro's telemetry went unsaid.
            listed, are = _streams_named(others)
            _eprint(f"{PROG}: note: the input's {listed} {are} not copied{_first_only(others)}")
    except RemuxStopped:
        kept = sink.keep_incomplete()
        _eprint(
            f"{PROG}: interrupted while {step}: {_frames(written)} kept in {kept}{said}"
            f"{', without sound' if copy_sound and not sound_in else ''}{untouched}"
        )
        return 130
    if failed:
        # Exit 1: not under the output's name, as for any run that failed part-way.
        kept = sink.keep_incomplete()
        _eprint(f"{PROG}: {_frames(written)} kept in {kept}{said}{untouched}")
        return 1
    from engine.mp4 import MP4_EXTENSIONS, faststart

    if Path(args.output).suffix.lower() in MP4_EXTENSIONS:
        left: list[Path] = []
        complete: str | Path = args.output
        try:
            faststart(work, stop=stop, left=left)
        except RemuxStopped:
            # Whole, and it plays; but a stopped run replaces no file (it was named, over an
            # existing output, under an exit 130).
            kept = complete = sink.keep_incomplete()
            _eprint(
                f"{PROG}: interrupted while moving the index of {args.output} before its "
                f"frames: {_frames(written)} kept in {kept}{said} (it plays; a browser "
                f"fetches all of it before the first frame){untouched}"
            )
            return 130
        finally:
            _say_left_behind(left, complete)
    try:
        sink.publish()
    except SinkError as exc:
        raise CliError(str(exc)) from exc
    _eprint(f"{_frames(written)} -> {args.output}{said}")
    return 0


#: Containers that keep no frame count: OpenCV announces duration x rate, rounded. Matroska,
#: FLV and ASF store the duration (one cut off mid-write keeps the whole one); MPEG-TS and -PS
#: and Ogg do not (FFmpeg reads it from the file's end), so a cut-off one is a shorter whole:
#: a camcorder's whole .mts was "damaged or truncated" for an estimate one frame over.
_ESTIMATED_COUNT = (
    ".mkv", ".webm", ".mk3d", ".flv", ".wmv", ".asf",
    ".ts", ".mts", ".m2ts", ".m2t", ".mpg", ".mpeg", ".vob", ".ogv",
)  # fmt: skip
ESTIMATE_SLACK_S = 0.5  # s of frames an estimated count may announce beyond the pictures


def _count_estimated(
    path: str, announced: int, decoded: int, fps: float, last_s: float | None = None
) -> str:
    """Whether ``decoded`` of the ``announced`` frames of ``path`` are all it holds, its count
    an estimate: Matroska keeps none, and the file's duration (its sound's, where that runs
    on) times the rate was read as frames lost. OBS records MKV by default, its sound a little
    longer than the pictures: every save of one was "saved with a problem" (94 announced, 90
    decoded).

    Whole where its last picture, or its sound, ends within half a second of that duration
    (a clip whose sound runs on 2 s past its pictures was "damaged or truncated"): one with frames
    dropped while it was recorded (119 announced, 80 decoded, the last ending at 3.97 s of
    3.97) or starting late (a stream-copied cut: 150 for 120, ending at 4.985 s of 5.0), not
    one cut off mid-write (its header keeps the whole duration: 180 announced, 84 decoded).
    When the last picture ends is FFmpeg's (from the start of the file), else ``last_s``,
    the time OpenCV gave the last picture (from the start of the pictures, so a late start
    reads as frames lost); without either, half a second short at most is taken for whole.
    Pictures the file stores but that did not decode are lost whatever the duration says:
    more than half a second of them is damage (a bad copy whose 10 pictures reach the end,
    1 decodable, was "a count the container only estimates").

    Returns "" where the shortfall is not explained so; ``"rounded"`` where the pictures reach
    the duration, at most half a second short of the count, and every picture stored was
    decoded: the count only rounds up a duration a little longer than the pictures (the
    sound's), and nothing is worth a word; ``"estimate"`` for the others.
    """
    short = announced - decoded
    if Path(str(path)).suffix.lower() not in _ESTIMATED_COUNT or short <= 0 or fps <= 0:
        return ""
    slack = max(1.0, ESTIMATE_SLACK_S * fps) / fps  # s
    stored = _stored_pictures(path)
    end = stored[0] if stored is not None else None
    if stored is not None and (stored[1] - decoded) / fps > slack:
        return ""
    if end is None and last_s is not None:
        end = last_s + 1.0 / fps
    if end is not None:
        if announced / fps - end <= slack:
            # "announced 61 frames, 60 were decoded" of a whole MKV (its sound 0.04 s longer)
            # read as a frame lost.
            every = stored is not None and stored[1] <= decoded  # known, not assumed
            return "rounded" if short / fps <= slack and every else "estimate"
        # A sound that runs on seconds past the pictures (a clip whose sound was kept longer)
        # is the duration: the file is whole where it reaches it. One cut off mid-write stops
        # all its streams short of the duration its header keeps.
        sound = _stored_sound_end(path)
        whole = sound is not None and sound > end and announced / fps - sound <= slack
        return "estimate" if whole else ""
    return "estimate" if short / fps <= slack else ""


def _ask_ffmpeg(question: Callable[[str], _T]) -> _T | None:
    """``question(ffmpeg)`` (a reading of a file's packets); None where there is no FFmpeg,
    or it cannot answer."""
    from engine.remux import RemuxError, find_ffmpeg

    ffmpeg = find_ffmpeg()
    try:
        return None if ffmpeg is None else question(ffmpeg)
    except RemuxError:
        return None


def _trimmed_clip(path: str, announced: int, decoded: int) -> bool:
    """Whether ``path`` stores more pictures than it shows, the rest cut by its edit list, and
    ``decoded`` are all it shows: an MP4 or MOV trimmed by stream copy (`ffmpeg -ss 1 -i x -c
    copy`) keeps the pictures from the keyframe before the cut, and a whole one announced 120
    frames for 90 shown and was "damaged or truncated"."""
    if decoded >= announced:
        return False
    from engine.remux import packet_count, picture_times

    # All it announces is stored (a file cut off mid-write stores fewer, all shown), and all
    # it shows was decoded.
    if _ask_ffmpeg(lambda ffmpeg: packet_count(path, ffmpeg=ffmpeg)) != announced:
        return False
    shown = _ask_ffmpeg(lambda ffmpeg: picture_times(path, ffmpeg=ffmpeg))
    return shown is not None and len(shown.times) == decoded


def _stored_sound_end(path: str) -> float | None:
    """When the sound of ``path`` ends, in seconds as the file stores it; None without sound
    or an FFmpeg to tell."""
    from engine.remux import sound_end

    return _ask_ffmpeg(lambda ffmpeg: sound_end(path, ffmpeg=ffmpeg))


def _stored_pictures(path: str) -> tuple[float, int] | None:
    """When the last picture of ``path`` stops being shown, in seconds as the file stores it
    (from 0, as its duration counts), and how many pictures it stores, from its packets
    (FFmpeg's, nothing decoded); None where there is no FFmpeg to tell."""
    from engine.remux import picture_times

    shown = _ask_ffmpeg(lambda ffmpeg: picture_times(path, ffmpeg=ffmpeg, as_stored=True))
    if shown is None or not shown.times:
        return None
    end = shown.end if shown.end is not None else shown.times[-1]
    return end / shown.timescale, len(shown.times)


def cmd_process(args: argparse.Namespace) -> int:
    """Offline: every frame, in order, with a progress bar; any model problem is fatal, except
    that a folder skips (and names at the end, exit 1) an image it cannot read, process or
    write."""
    from tqdm import tqdm

    from engine.pipeline import Engine
    from engine.sources import source_kind

    kind = source_kind(args.input)
    if kind == "camera":
        raise CliError("process reads files; for a camera use: run --source N --output FILE", 2)
    if args.low_priority:
        _lower_priority()
    _check_output_name(args.output)  # first: asking about a name too long raises
    _check_not_input(args.input, args.output)
    folder = kind == "folder"
    # A folder's results are its images: "2 frames -> out" followed "folder in · 2 images";
    # a photo's is one image (the window's banner said "1 frame written to photo.jpg").
    noun = "image" if kind in ("folder", "image") else "frame"

    def counted(n: int) -> str:
        return f"{n} {noun}{'' if n == 1 else 's'}"

    # A folder's images are separate pictures: one that cannot be read is skipped and named
    # at the end, where it used to stop the run with the rest of the folder undone.
    options = {"skip_unreadable": True} if folder else {}
    source = _open_source(args.input, live=False, size=None, fps=None, **options)
    engine = None
    sink = None
    backend = None
    # Given back on every way out: an error between taking Ctrl-C over and the engine's loop
    # (the sound-track probe) left it taken, a stop flag nobody read.
    restore: Callable[[], None] | None = None
    release: Callable[[], None] | None = None
    try:
        _check_process_output(kind, args.output, args.input)
        if kind == "image":
            _check_image_fits(args.output, source.size)
        elif kind == "video":
            _check_video_fits(args.output, source.size)
        if folder:
            _check_folder_outputs(source.files, Path(args.output), overwrite=args.overwrite)
        backend, _ = _open_backend(args.backend, args.model, live=False, scale=args.scale)
        engine_source = source
        if folder:
            tags = _FrameTags()
            engine_source = _TaggedSource(source, tags)
            backend = _PerImageBackend(backend, tags)
        existed = Path(args.output).exists()  # a folder output is made by its sink
        created = _missing_folders(args.output)
        try:
            sink = _open_process_sink(kind, source, args.output, backend)
        finally:
            _note_created(created)  # also when the sink failed after making it
        total = source.frame_count
        stop = threading.Event()
        restore = _install_stop_signals(stop)
        release = _hold_console_close(stop)
        if args.stop_on_eof:
            _stop_on_eof(stop)
        _eprint(f"{source.describe()} -> {sink.describe()} · {_describe_backend(backend)}")
        copy_sound = _note_lost_audio(args.input, args.output, copied=True)
        _note_lost_image_detail(kind, source, args.output)
        _note_lost_metadata(kind, source, args.output)
        if args.denoise and kind != "video":
            _eprint(
                f"{PROG}: note: --denoise averages the frames of a video; "
                f"{'photos are' if folder else 'a photo is'} sharpened without it"
            )
        if folder:
            _note_folder_entries(source)
        if kind == "video":
            _tone_map(source, args.input, args.output)
            _note_video_depth(args.input, args.output)
            _note_even_sides(source.size, args.output)
            _note_avi_tags(args.input, args.output)
        engine = Engine(
            engine_source,
            backend,
            sinks=[sink],
            live=False,
            strength=args.strength,
            # Over time only: photos of a folder are not frames of one scene.
            denoise=args.denoise and kind == "video",
            close_backend=True,
            on_error=lambda exc: None,  # collected in engine.errors, reported below
        )

        def done() -> int:  # frames handled, skipped images included: the bar reaches its end
            return engine.stats().frames_out + len(getattr(source, "skipped", ()))

        engine.start()
        try:
            progress = (
                _ProgressLines(total)
                if args.progress == "lines"
                else tqdm(total=total, unit=noun, desc="process", file=sys.stderr)
            )
            with progress as bar:
                while not stop.is_set() and not engine.done.is_set():
                    stop.wait(0.1)
                    bar.update(done() - bar.n)
                bar.update(done() - bar.n)
        finally:
            # The stop signals stay with `stop` (undone at the end): a SIGTERM while the
            # sound is copied below must not end the process with FFmpeg writing on.
            hurry = _stop_engine(engine, 5.0)
            # The window's save is killed if it outlasts the window's wait: stopped, it does
            # not wait for its encoder as long as a terminal's Ctrl-C does.
            stopped = stop if args.stop_on_eof else None
            joined = _join_before_exit(engine, sink, args.output, stopped, hurry=hurry)
        if not joined:
            _check_finished(sink, args.output)
        # The engine counts a skipped image as handed to the output; the sink knows better.
        written = sink.frames_written if folder else engine.stats().frames_out
        skipped = _report_skipped(source, sink) if folder else 0
        if engine.nonfinite_warning:
            # Before any way out: what was written has the input in those places, whatever
            # ends the run (an interrupt, skipped images, a failure later on).
            _eprint(f"{PROG}: warning: {engine.nonfinite_warning}")
        if engine.range_warning:
            _eprint(f"{PROG}: warning: {engine.range_warning}")
        # The window's stop ended an encoder still finishing (STOPPED_FINISH_S) and its frames
        # are kept: its failed close is that stop's doing ("Saving failed" was said of a stop).
        ended = (
            stopped is not None
            and stop.is_set()
            and getattr(sink, "writer_ended", False)
            and getattr(sink, "kept_path", None) is not None
        )
        if engine.errors and not ended:
            where = _kept_where(sink, engine.errors[0])
            raise CliError(f"processing failed after {counted(written)}: {engine.errors[0]}{where}")
        # A stop that came after the last frame (stdin closed under --stop-on-eof as a photo
        # finished) cut nothing short: "interrupted", exit 130, was said of a finished output.
        if stop.is_set() and (ended or not engine.complete):
            kept = getattr(sink, "kept_path", None)
            if kept is None and written == 0:
                # "0 of 180 frames written to out.mp4" named an earlier result as this one's.
                _eprint(
                    f"{PROG}: interrupted before the first {noun} was done; nothing written"
                    + (f", {args.output} left as it was" if existed else "")
                )
            else:
                _eprint(
                    f"{PROG}: interrupted: {written} of {total or '?'} {noun}s written to "
                    f"{kept or args.output}{_missing_after_stop(kind, args.input, copy_sound)}"
                )
            return 130
        if skipped:
            # Exit 1 so that a script notices; every image written is complete and kept.
            raise CliError(
                f"{skipped} of {len(source.files)} images skipped; {written} written to "
                f"{args.output}"
            )
        estimate = (
            _count_estimated(
                args.input, total, written, source.fps, getattr(source, "last_time_s", None)
            )
            if total is not None
            else ""
        )
        if estimate == "rounded":
            pass  # every picture decoded, to the file's end: the count was off, not the file
        elif estimate:
            _eprint(
                f"{PROG}: note: the file announced {total} frames, {written} were decoded "
                "(its container keeps no count: the announced one is an estimate)"
            )
        elif total is not None and _trimmed_clip(args.input, total, written):
            _eprint(
                f"{PROG}: note: the file announced {total} frames, {written} were decoded (its "
                "edit list cuts the others: a trimmed clip)"
            )
        elif total is not None and written < total:
            # Not an error: the count is the container's, and complete files announce frames
            # they never present (an MP4 trimmed by stream copy, whose edit list cuts the start:
            # 90 announced, 75 decoded; a WebM/MKV starting late: 62 for 50), which OpenCV
            # cannot tell from a truncated file. Exit 1 would fail those; the warning says what
            # was written, and everything decoded is there.
            _eprint(
                f"{PROG}: warning: {args.input} announced {total} frames and {written} could be "
                "decoded (damaged or truncated, or a count the container only estimates); "
                f"{_frames(written)} written to {args.output}"
            )
        if total is not None and written > total:
            # Nothing lost: some containers' frame count is an estimate (VFR, edit lists).
            _eprint(f"{PROG}: note: the file announced {total} frames, {written} were decoded")
        noise, colour = engine.noise_level, engine.colour_noise_level
        if kind == "video" and not args.denoise and noise is not None:
            from engine.denoise import worth_telling

            if worth_telling(noise):
                levels = _noise_levels(noise, colour)
                _eprint(f"{PROG}: note: the video is grainy ({levels}); {GRAIN_ADVICE}")
        said = ""
        if kind == "video" and sink.awaiting_name:
            try:
                gaps = getattr(source, "gaps", ())  # damaged pictures lost on the way
                first = getattr(source, "first_time_s", None)
                last = getattr(source, "last_time_s", None)
                decoded_s = last - first if first is not None and last is not None else None
                return _finish_video(
                    args, sink, written, copy_sound, stop, existed, gaps, decoded_s
                )
            except BaseException:
                if sink.awaiting_name:
                    sink.keep_incomplete()  # never left hidden, whatever went wrong
                raise
        _eprint(f"{counted(written)} -> {args.output}{said}")
        return 0
    finally:
        if restore is not None:
            restore()
        if engine is None:
            if sink is not None:
                sink.close()
            if backend is not None:
                backend.close()
            source.close()
        else:
            engine.stop(timeout=5.0)  # idempotent; closes all three if start() never came
        if release is not None:
            release()  # the output is closed: a console closing meanwhile may end the process


def cmd_bench(args: argparse.Namespace) -> int:
    """Model-only vs. pipeline speed for each backend and size; a table or one JSON object."""
    from engine import bench

    sizes = [s for group in args.size for s in group] if args.size else list(bench.DEFAULT_SIZES)
    sizes = list(dict.fromkeys(sizes))
    odd = next((s for s in sizes if s[0] % 2 or s[1] % 2), None)
    if odd is not None:
        # The pipeline measure decodes a video, and video encoders keep even sides only: a
        # 641x361 row timed the pipeline at 640x360 beside the model alone at 641x361.
        raise CliError(
            f"bench --size {odd[0]}x{odd[1]}: width and height must be even (the pipeline "
            "measure decodes a video clip, whose sides are even)",
            code=2,
        )
    frames = args.frames or bench.DEFAULT_FRAMES
    if args.model is not None and not _model_file(args.model).is_file():
        raise CliError(_missing_model(args.model))
    backends = list(dict.fromkeys(args.backend)) if args.backend else None
    if args.precision and backends is not None and "openvino" not in backends:
        raise CliError("--precision applies to the openvino backend: add --backend openvino", 2)

    def progress(text: str) -> None:
        _eprint(f"bench: {text} ...")

    try:
        report = bench.run_bench(
            backends,
            sizes,
            frames,
            args.model,
            on_progress=progress,
            precision=args.precision,
            scales=list(dict.fromkeys(args.scale or [1.0])),
            denoise=args.denoise,
        )
    except CliError:
        raise
    except Exception as exc:  # a backend that was asked for by name cannot start
        raise CliError(str(exc)) from exc
    if args.json:
        for note in report.notes:
            _eprint(f"note: {note}")
        print(json.dumps(report.as_json_dict(), indent=2))
    else:
        print(bench.format_table(report))
    if report.interrupted:
        _eprint(f"{PROG}: interrupted")
        return 130
    if report.failed:
        # The why is in the notes above (and the JSON's "failed"): one short line here.
        rows = ", ".join(f.split(": ", 1)[0] for f in report.failed)
        raise CliError(f"bench: {len(report.failed)} row(s) not measured ({rows}): see the notes")
    return 0


def _camera_size(index: int) -> str:
    """The resolution a camera opens at by default, or ``"?"`` when it will not open now."""
    from engine.sources import open_source

    try:
        src = open_source(str(index), live=True, reconnect=False)
    except Exception:
        return "?"
    try:
        return f"{src.size[0]}x{src.size[1]} @ {src.fps:g} fps"
    finally:
        src.close()


def cmd_devices(args: argparse.Namespace) -> int:
    """Cameras, whether a virtual camera is usable (with per-OS advice), ORT providers."""
    from engine.backends import check_onnxruntime_install, list_backends
    from engine.sources import list_cameras
    from engine.virtualcam import virtual_camera_status

    cams = list_cameras()
    print("Cameras:")
    if not cams:
        print("  none found (use a video file: run --source clip.mp4 ...)")
    for cam in cams:
        # OpenCV names no camera on macOS ("camera 1"): which one is OBS's matters there.
        named = _os_camera_name(str(cam.index))
        shown = f"{cam.index}: {named}" if named else str(cam)
        print(f"  {shown} · {_camera_size(cam.index)}")

    vbackend = os.environ.get(VIRTUAL_BACKEND_ENV)
    ok, message = virtual_camera_status(backend=vbackend)
    print("Virtual camera:")
    print("  " + ("usable: " if ok else "NOT usable: ") + message.replace("\n", "\n  "))

    print(f"Backends available: {', '.join(list_backends())}")
    from engine.backends import weights_dir

    # Installed, the shipped files are not under the current folder: bench's help names them.
    print(f"Shipped weights: {weights_dir()}")
    if "openvino" in list_backends():
        from engine.backends import openvino_cpu_precision, prefer_int8, resolve_default_model

        model = resolve_default_model(prefer_gpu=False, int8=prefer_int8())
        print(
            f"OpenVINO on this CPU: {openvino_cpu_precision() or 'unknown'} precision; "
            f"default CPU model: {model.name if model else 'none shipped'}"
        )
    try:
        import onnxruntime

        print(
            f"ONNX Runtime {onnxruntime.__version__} providers: "
            f"{', '.join(onnxruntime.get_available_providers())}"
        )
    except Exception as exc:  # a broken or missing runtime is what this command diagnoses
        print(f"ONNX Runtime: not usable ({exc})")
    warning = check_onnxruntime_install()
    if warning:
        print(f"WARNING: {warning}")
    return 0


# --------------------------------------------------------------------------- entry point


def _check_model_applies(args: argparse.Namespace) -> None:
    """``--model`` with only backends that run no model is a usage error: it was ignored, and
    the output looked like the model's (``--backend unsharp --model mine.onnx``)."""
    if args.command is None:
        backends, model = [args.gui_backend], args.gui_model
    else:
        backend = getattr(args, "backend", None)
        model = getattr(args, "model", None)
        # bench's --backend is repeatable: the model is used if any of them runs one.
        backends = backend if isinstance(backend, list) else [backend]
    if model is None or None in backends or any(b not in MODELLESS_BACKENDS for b in backends):
        return
    names = " and ".join(f"--backend {b}" for b in dict.fromkeys(backends))
    raise CliError(
        f"--model is not used by {names}: {'they run' if len(set(backends)) > 1 else 'it runs'} "
        "no model; drop --model or pick a model backend (auto, onnx, openvino, torch)",
        code=2,
    )


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *rest: Any
) -> None:
    # Library warnings (an unverified model, a fallback) as one readable line, no source dump.
    _eprint(f"{PROG}: warning: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python main.py`` and the ``sharpcam`` console script; returns the exit code."""
    warnings.showwarning = _show_warning
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            # Started with the descriptor closed (`>&- 2>&-`, a service, pythonw): Python sets
            # it to None, and process's progress bar failed on it, exit 1 and nothing written.
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    for stream in (sys.stdout, sys.stderr):
        # A code page without "·" or "×" (cp932 on Japanese Windows, for a redirected stdout)
        # made `bench > out.txt` fail with UnicodeEncodeError, its table lost.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_model_applies(args)
        if args.command is None:
            return cmd_gui(args, parser)
        misplaced = [
            f"--{name.removeprefix('gui_').replace('_', '-')}"
            for name, value in vars(args).items()
            if name.startswith("gui_") and value is not None
        ]
        if misplaced:
            parser.error(
                f"{', '.join(misplaced)} before '{args.command}' is a desktop-app option; "
                f"put command options after the command: {PROG} {args.command} {misplaced[0]} ..."
            )
        command = {
            "run": cmd_run,
            "process": cmd_process,
            "bench": cmd_bench,
            "devices": cmd_devices,
        }
        return _flushed(command[args.command](args))
    except CliError as exc:
        msg = str(exc)
        _eprint(msg if msg.startswith(f"{PROG}") else f"{PROG}: error: {msg}")
        return exc.code
    except KeyboardInterrupt:
        _eprint(f"{PROG}: interrupted")
        return 130
    except SystemExit as exc:  # argparse --help, --version
        return _flushed(exc.code if isinstance(exc.code, int) else 0)
    except BrokenPipeError as exc:
        if _stdout_reader_gone():  # `devices | head -1`, a long bench table
            return _stdout_gone()
        if os.environ.get("SHARPCAM_DEBUG"):
            traceback.print_exc()
        _eprint(f"{PROG}: error: {type(exc).__name__}: {exc}")
        return 1
    except Exception as exc:
        if os.environ.get("SHARPCAM_DEBUG"):
            traceback.print_exc()
        _eprint(f"{PROG}: error: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
