"""The window's "Save sharpened copy": ``sharpcam process IN OUT`` run in a child process.

The child is the command line's own ``process``, so a copy saved from the window is the one
the command writes: every frame at full size, the sound, the frame times, the colour tags,
the date and place, the index first; a stop keeps the frames so far as ``NAME.incomplete.EXT``.
It runs below normal priority (``--low-priority``): a call the live stream feeds keeps the
CPU. It says where it stands (``--progress lines``) and stops when its standard input is
closed (``--stop-on-eof``), which works on every OS, where a signal does not on Windows.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from engine.sinks import VIDEO_CODECS, output_image_name, partial_path, writable_image_extensions
from engine.sources import source_kind

#: ``main.py`` beside the ``app`` package: in a checkout and in an installed wheel alike.
MAIN_SCRIPT = Path(__file__).resolve().parents[1] / "main.py"
PROG = "sharpcam"  # main.PROG, which prefixes its lines (main, the command line, is not imported)
#: How long a stop waits for the child to finish its partial file before it is killed (a
#: copy of the sound or the index move under way stops within a second or two). Longer than
#: the child takes to end an encoder still finishing (main.STOPPED_FINISH_S, then 10 s for
#: FFmpeg to close the file: some 22 s in all): killed first, the child left FFmpeg (in its
#: own session) to finish the hidden file after it, unnamed.
STOP_GRACE_S = 30.0
#: How many of the child's last lines a crash shows.
CRASH_LINES = 6
_PROGRESS = re.compile(r"frames (\d+)/(\d+|\?)")
_DEFAULT_VIDEO_EXT = ".mp4"
_DEFAULT_IMAGE_EXT = ".png"


@dataclass(frozen=True)
class SaveResult:
    """How a save ended.

    Attributes:
        output: the file or folder asked for.
        code: the child's exit code (0 saved; 130 stopped, its frames so far kept; 1 or 2
            failed, as the command line says), or None when it could not start or crashed.
        stopped: :meth:`SaveJob.stop` was called.
        said: what the child said, its progress lines and the ``sharpcam:`` prefix left out.
        left: hidden working files a killed child left (its frames so far, unnamed).
    """

    output: str
    code: int | None
    stopped: bool = False
    said: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == 0


def default_output(source: str, folder: str | None = None) -> str:
    """A name for the sharpened copy of ``source`` that is not taken: ``NAME.sharp.EXT`` in
    ``folder`` (default: the source's own folder, or the home folder where that cannot be
    written), ``NAME.sharp-2.EXT`` and on where taken. A video keeps its container where one
    is written (else ``.mp4``), an image its format where one is written (an HEIF photo
    becomes ``.jpg``, a GIF ``.png``, others ``.png``); a folder's copy is a folder
    ``NAME.sharp``."""
    path = Path(source)
    kind = source_kind(source)
    where = Path(folder) if folder is not None else path.parent
    if folder is None and not os.access(where, os.W_OK):
        where = Path.home()  # the bundled clip in a read-only install, a DVD, a phone
    if kind == "folder":
        stem, ext = path.name or "photos", ""
    elif kind == "image":
        named = Path(output_image_name(path.name))
        stem, ext = named.stem, named.suffix.lower()
        if ext not in writable_image_extensions():
            ext = _DEFAULT_IMAGE_EXT
    else:
        stem, ext = path.stem, path.suffix.lower()
        if ext not in VIDEO_CODECS:
            ext = _DEFAULT_VIDEO_EXT
    for n in range(1, 1000):
        name = f"{stem}.sharp{'' if n == 1 else f'-{n}'}{ext}"
        if not os.path.lexists(where / name):
            return str(where / name)
    return str(where / f"{stem}.sharp{ext}")  # a thousand copies: the dialog asks


def save_filter(source: str) -> str:
    """The save dialog's file types for a copy of ``source`` (a video or an image)."""
    if source_kind(source) == "image":
        exts = writable_image_extensions()
        return "Images (" + " ".join(f"*{e}" for e in exts) + ")"
    return "Videos (" + " ".join(f"*{e}" for e in VIDEO_CODECS) + ")"


def save_command(
    source: str,
    output: str,
    *,
    backend: str = "auto",
    model: str | None = None,
    strength: float = 1.0,
    denoise: bool = False,
) -> list[str]:
    """The arguments after the Python executable: ``main.py process SOURCE OUTPUT ...``."""
    if source_kind(source) == "folder" and not output.endswith(("/", os.sep)):
        # Said to be a folder: `process` takes a new name with a dot (``photos.sharp``) for
        # a file of a format it does not know.
        output += os.sep
    args = [
        str(MAIN_SCRIPT),
        "process",
        source,
        output,
        "--backend",
        backend,
        "--strength",
        f"{strength:g}",
        "--progress",
        "lines",
        "--low-priority",
        "--stop-on-eof",
    ]
    if model is not None:
        # One argument: a relative file named "-fast.onnx" read as an option ("--model:
        # expected one argument"), and the save failed where the live stream ran it.
        args.append(f"--model={model}")
    if denoise and source_kind(source) == "video":
        # It averages a video's frames; for photos `process` would say so in its own words.
        args.append("--denoise")
    return args


class SaveJob(QObject):
    """One save running in a child process.

    Signals:
        progress(done, total): frames written so far, and how many there are (0: unknown).
        finished(SaveResult): once, when the child has ended or could not start.
    """

    progress = Signal(int, int)
    finished = Signal(object)

    def __init__(
        self,
        source: str,
        output: str,
        *,
        backend: str = "auto",
        model: str | None = None,
        strength: float = 1.0,
        denoise: bool = False,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.source = source
        self.output = output
        self.strength = strength  # what the copy is made with: the window's may change since
        self.denoise = denoise
        self.done = 0
        self.total = 0
        self.result: SaveResult | None = None
        self._stopped = False
        self._started = 0.0
        self._said: list[str] = []
        self._pending = b""
        self._proc = QProcess(self)
        self._proc.setProgram(sys.executable)
        self._proc.setArguments(
            save_command(
                source, output, backend=backend, model=model, strength=strength, denoise=denoise
            )
        )
        # Its words, as they are written, in one stream; UTF-8 on every OS (a Windows pipe
        # took the ANSI code page, and a name in Japanese came back as question marks).
        self._proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        self._proc.setProcessEnvironment(env)
        self._proc.readyReadStandardOutput.connect(self._read)
        self._proc.finished.connect(self._on_finished)
        self._proc.errorOccurred.connect(self._on_error)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._proc.kill)

    def start(self) -> None:
        """Start the child; :attr:`finished` says how it ended."""
        self._started = time.time()
        self._proc.start()

    def running(self) -> bool:
        return self.result is None

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called and the child has not ended yet."""
        return self._stopped and self.result is None

    def stop(self) -> None:
        """Stop the save: its frames so far are kept (``NAME.incomplete.EXT``, as the child
        says). Killed if it has not ended :data:`STOP_GRACE_S` later."""
        if self.result is not None or self._stopped:
            return
        self._stopped = True
        self._proc.closeWriteChannel()
        self._kill_timer.start(round(STOP_GRACE_S * 1000))

    def wait(self, timeout_s: float) -> bool:
        """Block until the child has ended (its :attr:`finished` emitted); False if it has
        not within ``timeout_s``. The kill timer of :meth:`stop` does not run meanwhile (no
        event loop): a caller that gives up calls :meth:`kill`."""
        if self.result is None and self._proc.state() != QProcess.ProcessState.NotRunning:
            self._proc.waitForFinished(round(timeout_s * 1000))
        return self.result is not None

    def kill(self) -> None:
        """End the child now, and wait for it: its frames so far stay in its hidden partial
        file (``.NAME.partial.EXT``), unnamed. For a child that did not stop when asked."""
        if self.result is None and self._proc.state() != QProcess.ProcessState.NotRunning:
            self._proc.kill()
            self._proc.waitForFinished(5000)

    def _read(self) -> None:
        self._pending += bytes(self._proc.readAllStandardOutput().data())
        *lines, self._pending = re.split(rb"\r\n|\r|\n", self._pending)
        for raw in lines:
            self._take(raw.decode("utf-8", errors="replace").strip())

    def _take(self, line: str) -> None:
        if not line:
            return
        match = _PROGRESS.fullmatch(line)
        if match is not None:
            self.done = int(match.group(1))
            self.total = 0 if match.group(2) == "?" else int(match.group(2))
            self.progress.emit(self.done, self.total)
            return
        self._said.append(line.removeprefix(f"{PROG}: "))

    def _end(self, code: int | None) -> None:
        if self.result is not None:
            return
        self._kill_timer.stop()
        self._read()
        if self._pending:
            self._take(self._pending.decode("utf-8", errors="replace").strip())
            self._pending = b""
        left = self._left_behind() if code is None else []
        self.result = SaveResult(self.output, code, self._stopped, list(self._said), left)
        self.finished.emit(self.result)

    def _left_behind(self) -> list[str]:
        """The hidden working files of :attr:`output` written since the start: a child killed
        (or crashed) before it named its file leaves its frames there."""
        first = partial_path(self.output)
        found: set[Path] = set()
        # The child's own (its frames), and FFmpeg's beside it while the sound or the timing
        # went in (`..NAME.partial.partial.EXT`): the video waits under its hidden name then.
        for base in (first, partial_path(first)):
            # Escaped: a name with [ ] * ? (`clip [1].mp4`) matched nothing, nothing was named.
            pattern = f"{glob.escape(base.stem)}*{glob.escape(base.suffix)}"
            try:
                found.update(
                    p
                    for p in base.parent.glob(pattern)
                    if p.is_file() and p.stat().st_mtime >= self._started - 1.0
                )
            except OSError:
                pass
        return sorted(str(p) for p in found)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._end(code if status == QProcess.ExitStatus.NormalExit else None)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            # No finished signal follows: this is the end.
            self._said.append(f"{sys.executable} could not be started ({self._proc.errorString()})")
            self._end(None)


def saved_folder(result: SaveResult) -> str:
    """The folder that holds what ``result`` wrote or kept: the output folder of a folder's
    copies, else the folder of the output file (where a stop's or a failure's ``.incomplete``
    file is too), or of the hidden file a killed child left; "" when nothing was written
    there ("Show folder" opened an empty one after a stop before the first frame, and was not
    offered for a failure that kept its frames)."""
    out = Path(result.output)
    if result.left:
        folder = Path(result.left[0]).parent
    elif out.is_dir():
        folder = out if any(out.iterdir()) else Path("")
    elif result.ok or any(_KEPT.search(line) for line in result.said):
        folder = out.parent
    else:
        return ""
    return str(folder) if str(folder) not in ("", ".") and folder.is_dir() else ""


#: What the command says of frames it kept when it did not finish (main.py's and the sink's
#: words: "4 frames are kept in", "171 frames kept in", "the frames written are kept in",
#: "its frames are kept in", "171 of 12000 frames written to"); a path of the input's with
#: "kept in" in its name is none of them.
_KEPT = re.compile(
    r"\bframes? (?:written )?(?:are |is )?kept in |\b\d+ of \S+ (?:frames?|images?) written to "
)


#: The command line's own advice, which the window has no control for.
_CLI_ONLY = re.compile(r",? or --overwrite to replace them")
#: ...and the command line's switch, said as the window's (main.GRAIN_ADVICE).
GRAIN_ADVICE_WORDS = 'turn on "Reduce noise in dim light" and save again to reduce it'
_GRAIN_ADVICE = (re.compile(r"--denoise would reduce it$"), GRAIN_ADVICE_WORDS)
_OF_UNKNOWN = re.compile(r"(\d+) of \? frames")  # "381 of ? frames": the file gave no count
_LEVEL = re.compile(r"^(?:note|warning|error|skipped): ")
_SKIPPED = re.compile(r"(?:error: )?(\d+) of (\d+) images skipped; (\d+) written to (.*)")


#: The warning of a user's own model, not listed in a manifest (engine.backends.open_model).
_UNVERIFIED = re.compile(r": not listed in a manifest\.json beside it; loading it unverified$")


#: The end of `process`'s warning of a file that decoded short: "; 29 frames written to OUT".
_WRITTEN_TAIL = re.compile(r"; (\d+ frames? written to .+)$")


def _without_written(line: str, last: str) -> str:
    """``line`` without its closing "; N frames written to OUT" where ``last`` says that."""
    match = _WRITTEN_TAIL.search(line)
    if match is not None and last.startswith(match.group(1)):
        return line[: match.start()]
    return line


def describe_result(result: SaveResult) -> tuple[str, str, str]:
    """``(kind, headline, details)`` for the window's banner: kind ``"saved"``,
    ``"save_warning"`` (saved with something of the input lost, stopped, or some photos of a
    folder skipped: what was written is kept) or ``"save_failed"``."""
    said = [_OF_UNKNOWN.sub(r"\1 frames", _CLI_ONLY.sub("", s)) for s in result.said]
    said = [_GRAIN_ADVICE[0].sub(_GRAIN_ADVICE[1], s) for s in said]
    marked = [s for s in said[:-1] if _LEVEL.match(s)]
    # A model the user picked that no manifest lists is theirs to vouch for: said, but not
    # "saved with a problem" on every save made with it.
    problems = [
        s for s in marked if s.startswith(("warning:", "error:")) and not _UNVERIFIED.search(s)
    ]
    news = [_LEVEL.sub("", s) for s in marked]
    if result.ok:
        # Not the first line (the input, the output and the model: known); the last says
        # where the frames went and what came with them.
        last = [re.sub(r"^(\d+ (?:frames?|images?)) -> ", r"\1 written to ", s) for s in said[-1:]]
        # A warning of frames not decoded ends with what the last line says again ("...; 29
        # frames written to OUT"): the banner said it twice in a row.
        news = [_without_written(s, last[0]) if last else s for s in news]
        details = "\n".join([*news, *last])
        if not problems:
            return "saved", "Sharpened copy saved", details
        # Saved, but something of the input did not come with it: not the all-clear.
        lost_sound = any("has no sound" in s for s in problems)
        head = "without its sound" if lost_sound else "with a problem (below)"
        return "save_warning", f"Sharpened copy saved {head}", details
    if result.code == 130:
        stops = [s for s in said if s.startswith("interrupted")] or said[-1:]
        # Said after the stop, too: a hidden copy not removed holds as much as the output.
        warned = [
            _LEVEL.sub("", s)
            for s in said
            if s.startswith(("warning:", "error:")) and s not in stops
        ]
        return "save_warning", "Saving stopped", "\n".join([*stops, *warned])
    if result.code is None:
        left = [f"The frames done so far are in the hidden file {p} (it may not play)."
                for p in result.left]  # fmt: skip
        if result.stopped:
            return (
                "save_warning",
                "Saving stopped: it did not end when asked, and was ended",
                "\n".join(left),
            )
        lines = [*said[-CRASH_LINES:], *left]
        return "save_failed", "Saving failed: the processing ended unexpectedly", "\n".join(lines)
    skipped = _SKIPPED.fullmatch(said[-1]) if said else None
    if result.code == 1 and skipped is not None and int(skipped.group(3)) > 0:
        n = int(skipped.group(1))
        return (
            "save_warning",
            f"Sharpened copies saved, {n} photo{'' if n == 1 else 's'} skipped",
            "\n".join([*news, said[-1].removeprefix("error: ")]),
        )
    failed = [_LEVEL.sub("", s) for s in said if s.startswith(("error:", "warning:"))]
    return "save_failed", "Saving failed", "\n".join(failed or said[-CRASH_LINES:])


__all__ = [
    "GRAIN_ADVICE_WORDS",
    "SaveJob",
    "SaveResult",
    "default_output",
    "describe_result",
    "save_command",
    "save_filter",
    "saved_folder",
]
