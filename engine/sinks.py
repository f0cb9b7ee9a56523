"""Frame sinks: a virtual camera, a video file, image files, or a callback.

A sink takes :class:`engine.frames.Frame` objects (``(H, W, 3) uint8 RGB``) in ``write()``,
fits frames of another size to its own (the virtual camera, video and image files letterbox
them, callback sinks resize them), and is closed exactly once however often ``close()`` is
called. The engine writes from its output thread; the arrays it passes may be reused for a
later frame once ``write()`` returns, so a sink that keeps a frame copies it.

The virtual camera lives in :mod:`engine.virtualcam` (imported on demand: loading pyvirtualcam's
native backend is not needed to write a file).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol, runtime_checkable

import cv2
import numpy as np

from engine.frames import (
    Frame,
    check_rgb8,
    even_size,
    fit_to,
    opencv_name,
    opencv_path_problem,
    resize_to,
)
from engine.heif import HEIF_EXTENSIONS
from engine.mp4 import MOOV_LIMIT as _MOOV_LIMIT
from engine.mp4 import MP4_EXTENSIONS as _MP4_EXTENSIONS
from engine.mp4 import boxes as _boxes
from engine.remux import ffmpeg_list, ffmpeg_reason, file_arg
from engine.sources import (
    IMAGE_EXTENSIONS,
    XMP_JPEG_HEADER,
    XMP_PNG_KEYWORD,
    ImageMetadata,
    _mp4_moov_at,
    png_colour_is_srgb,
)

try:  # POSIX: a lock tells a working file being written from one a killed run left
    import fcntl
except ImportError:  # Windows: no such lock is taken (see _written_elsewhere)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = [
    "METADATA_EXTENSIONS",
    "SINKS",
    "FALLBACK_CODECS",
    "VIDEO_CODECS",
    "CallbackSink",
    "FrameSink",
    "ImageSink",
    "LostMetadata",
    "SinkError",
    "VideoFileSink",
    "check_name_fits",
    "earlier_frame",
    "free_incomplete_path",
    "incomplete_path",
    "metadata_lost",
    "open_sink",
    "output_image_name",
    "partial_path",
    "register_sink",
    "sink_kind",
    "stale_work_files",
    "retime_mp4",
    "tag_mp4v_colour",
    "writable_image_extensions",
    "PATH_MAX",
    "write_file",
    "video_size_problem",
    "write_image",
]

#: Container extension -> the FourCC written there: H.264 (``avc1``) through FFmpeg's
#: libx264, MJPEG in an AVI (what AVI players expect).
VIDEO_CODECS = {".mp4": "avc1", ".m4v": "avc1", ".mov": "avc1", ".mkv": "avc1", ".avi": "MJPG"}
#: What a container gets where no FFmpeg with libx264 is found: the codecs OpenCV's own
#: writer has (this OpenCV build writes no H.264).
FALLBACK_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "MJPG", ".avi": "MJPG"}
#: The longest side FFmpeg's MPEG-4 (mp4v) encoder takes: from 8192 on it refuses to open
#: ("dimensions too large for MPEG-4"), where `--size` takes up to 8192 (DCI 8K).
MP4V_MAX_SIDE = 8191
#: The longest side each codec's encoder takes (by lower-case FourCC), what it says past it,
#: and what takes it: x264 refuses 16386 ("invalid width x height"), FFmpeg's MJPEG 65501
#: ("JPEG does not support resolutions above 65500x65500").
_MAX_VIDEO_SIDE = {
    "mp4v": (MP4V_MAX_SIDE, "mp4v (MPEG-4)", "use .avi or .mkv (MJPG) for this size"),
    "avc1": (16384, "avc1 (H.264)", "use .avi (MJPG) for this size"),
    "mjpg": (65500, "MJPG", "write its frames to a folder instead"),
}
#: FFmpeg takes no picture whose (W + 128) x (H + 128) reaches this (av_image_check_size):
#: 16384x16129 is refused ("Picture size ... is invalid") where 16384x16128 is taken.
_MAX_VIDEO_AREA = (2**31 - 1) // 8


def _video_size_problem(fourcc: str, size: tuple[int, int]) -> str | None:
    """Why a ``fourcc`` video of even ``size`` cannot be written (None where it can): found
    otherwise only by its first frames' write, once the model had loaded."""
    w, h = size
    limit = _MAX_VIDEO_SIDE.get(fourcc.lower())
    if limit is not None and max(size) > limit[0]:
        return f"{limit[1]} takes sides up to {limit[0]}, not {w}x{h}; {limit[2]}"
    if (w + 128) * (h + 128) >= _MAX_VIDEO_AREA:
        return f"{w}x{h} is more pixels than FFmpeg takes in a frame; write its frames to a folder"
    return None


def video_size_problem(path: str | os.PathLike[str], size: tuple[int, int]) -> str | None:
    """Why :class:`VideoFileSink` cannot write ``path`` at ``size`` (cut to even sides) with
    the codec it would choose there (None where it can, or the extension is not a video's)."""
    ext = Path(path).suffix.lower()
    fourcc = VIDEO_CODECS.get(ext)
    if fourcc is None:
        return None
    if _ffmpeg_for(fourcc, ext) is None:
        fourcc = FALLBACK_CODECS[ext]
    return _video_size_problem(fourcc, even_size(_check_size(size, "a video file")))


class SinkError(RuntimeError):
    """A sink cannot be opened or written; the message names the file or device."""


@runtime_checkable
class FrameSink(Protocol):
    """What the engine needs from a sink.

    Attributes:
        size: ``(W, H)`` the sink writes; ``None`` for sinks that keep each frame's size.
    """

    size: tuple[int, int] | None

    def write(self, frame: Frame) -> None:
        """Consume ``frame.image`` ``(H, W, 3) uint8 RGB`` before returning (no reference kept)."""
        ...

    def close(self) -> None:
        """Flush and release; idempotent. A video file is complete and playable afterwards."""
        ...

    # Optional: ``abort()`` closes a sink whose output is known to be incomplete (an offline
    # run that failed). The engine calls it instead of ``close()`` when a sink has it.

    def describe(self) -> str:
        """One human line, e.g. ``"video out.mp4 · 1280x720 @ 30 fps (mp4v)"``."""
        ...


class _SinkBase:
    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        abort = getattr(self, "abort", None)
        if exc_type is None or abort is None:
            self.close()  # type: ignore[attr-defined]
            return
        # Leaving on an error: the output is incomplete. close() published the partial frames
        # under the real name, over an earlier complete file of that name.
        try:
            abort()
        except SinkError as err:  # the error that brought us here is the one to see
            log.warning("%s", err)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"  # type: ignore[attr-defined]


def _check_size(size: tuple[int, int] | None, what: str) -> tuple[int, int]:
    if size is None:
        raise ValueError(f"{what} needs a frame size (W, H)")
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise ValueError(f"expected a positive (W, H) size, got {tuple(size)}")
    return (w, h)


#: The FFmpeg encoder, its pixel format and options, and (by extension) muxer, for the
#: FourCCs a :class:`VideoFileSink` writes through FFmpeg.
_FFMPEG_CODECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # q 2: a photo 2.3 levels off on average, the file 1.5 times OpenCV's size.
    "mp4v": ("mpeg4", "yuv420p", ("-q:v", "2")),
    "MJPG": ("mjpeg", "yuvj420p", ("-q:v", "2")),
    # CRF 18: 41.3 dB on 720p video (mp4v at q 2: 41.6, in a file 1.27 times the size).
    # No B-frames: retime_mp4 rewrites the frame durations alone, and B-frames add
    # composition offsets (and an edit-list delay) in the old time base; without them
    # x264 is also 1.2 times faster, for a file 1.15 times the size.
    "avc1": ("libx264", "yuv420p", ("-crf", "18", "-bf", "0")),
}
#: x264's speed preset: ``veryfast`` for a file made offline; ``ultrafast`` for a live
#: recording, where the encoder shares the CPU with the model. Measured at 720p on two
#: cores: veryfast made `run` drop 23 of 480 frames and step down to 0.75-0.875x, where
#: ultrafast (4 times faster, the file 1.45 times the size) drops as few as mp4v did.
_X264_PRESET = {False: "veryfast", True: "ultrafast"}
_FFMPEG_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska"}
#: How long FFmpeg may take to finish a file once its last frame is given, and to take one.
_FFMPEG_FINISH_S = 60.0
_FFMPEG_STALL_S = 30.0


def _ffmpeg_for(fourcc: str, suffix: str) -> str | None:
    """The FFmpeg to write a ``fourcc`` video named ``.suffix`` through, None where there is
    none, or it lacks the encoder (OpenCV's writer is used then)."""
    from engine.remux import find_ffmpeg

    if fourcc not in _FFMPEG_CODECS or suffix not in _FFMPEG_MUXERS:
        return None
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return None
    encoder = _FFMPEG_CODECS[fourcc][0]
    if not re.search(rf"^\s*V\S*\s+{encoder}\s", ffmpeg_list(ffmpeg, "encoders"), re.M):
        return None
    if fourcc == "avc1" and not _has_setparams(ffmpeg):
        # Its colour tag (nothing tags an H.264 file afterwards): mp4v is tagged on closing
        # (tag_mp4v_colour), and is written through this FFmpeg without the filter.
        return None
    return ffmpeg


def _has_setparams(ffmpeg: str) -> bool:
    """Whether ``ffmpeg`` has the ``setparams`` filter, which tags the colours it writes."""
    return bool(re.search(r"^\s*\S+\s+setparams\s", ffmpeg_list(ffmpeg, "filters"), re.M))


class _FFmpegWriter:
    """What :class:`VideoFileSink` asks of OpenCV's ``VideoWriter`` (``isOpened``, ``write``,
    ``release``), done by an FFmpeg fed the frames raw on a pipe.

    OpenCV's writer converts BGR to YUV with swscale's fast, truncating path (no flag
    reaches it): a 128 grey came back 124/126/123 from an .mp4 and every video it wrote was
    darker and greener by 1-5 levels. Here swscale rounds (``accurate_rnd``): the grey comes
    back 128, a photo 2.3 levels off on average where OpenCV's was 3.8. It also writes H.264,
    which OpenCV's writer here cannot: MPEG-4 part 2 (``mp4v``) plays in no browser, so in
    no chat app's preview.

    FFmpeg runs in its own process group: a Ctrl-C in the terminal would end it at once, and
    the file with it, before the sink could finish it.
    """

    def __init__(
        self,
        ffmpeg: str,
        path: Path,
        fourcc: str,
        fps: float,
        size: tuple[int, int],
        *,
        live: bool = False,
    ) -> None:
        encoder, pix_fmt, options = _FFMPEG_CODECS[fourcc]
        if encoder == "libx264":
            options = ("-preset", _X264_PRESET[live], *options)
        filters = f"format={pix_fmt}"
        if _has_setparams(ffmpeg):
            # swscale's matrix (BT.601, limited range; full for MJPEG) of sRGB pictures, said
            # in the stream and the container: untagged, players took HD for BT.709.
            filters += ",setparams=color_primaries=bt709:color_trc=bt709:colorspace=smpte170m"
        self.error = ""  # FFmpeg's reason, where it failed
        self.failed = False
        self._errors = tempfile.TemporaryFile()  # a pipe nobody reads could fill and stall it
        group: dict[str, Any] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
            if os.name == "nt"
            else {"start_new_session": True}
        )
        command = [
            ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}",
            "-r", f"{fps:.6g}", "-i", "pipe:0", "-an",
            "-sws_flags", "accurate_rnd+full_chroma_int", "-vf", filters,
            "-c:v", encoder, *options,
            "-f", _FFMPEG_MUXERS[path.suffix.lower()], file_arg(path),
        ]  # fmt: skip
        self._started: subprocess.Popen[bytes] | None = None
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errors,
                **group,
            )  # fmt: skip
        except OSError as exc:
            self._errors.close()
            self._proc = None
            self.error = f"cannot run {ffmpeg}: {exc.strerror or exc}"
            return
        self._started = self._proc  # kept after release() lets go of _proc, for end_now()
        # A write into the pipe waits while FFmpeg is behind (a 4K frame takes a while); one
        # that stopped reading held the writing thread, and Ctrl-C with it, for ever.
        self._writing_since: float | None = None
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="ffmpeg-writer-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            since, proc = self._writing_since, self._proc
            if (
                since is not None
                and proc is not None
                and time.monotonic() - since > _FFMPEG_STALL_S
            ):
                self.error = f"FFmpeg took no frame for {_FFMPEG_STALL_S:g} s"
                proc.kill()  # the write in progress fails, and says so
                return

    def _said(self) -> str:
        """FFmpeg's reason, once it has ended (given a moment to); "" while it runs."""
        proc = self._proc
        if proc is None or self.error:
            return self.error
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return ""
        try:
            self._errors.seek(0)
            return ffmpeg_reason(self._errors.read())
        except (OSError, ValueError):
            return ""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        if self._proc is not None and self._proc.poll() is None:
            return True
        self.error = self._said() or self.error
        return False

    def write(self, bgr: np.ndarray) -> bool:
        """Hand ``bgr`` (``(H, W, 3)`` uint8, C-contiguous) to FFmpeg; False where it has
        gone (a full disk ends it), as OpenCV's writer says a failed write; :attr:`error`
        then says why where FFmpeg did."""
        if self._proc is None or self._proc.stdin is None:
            return False
        self._writing_since = time.monotonic()
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(bgr)).cast("B"))
        except (OSError, ValueError):
            self.error = self._said()
            return False
        finally:
            self._writing_since = None
        return True

    def end_now(self, *, kill: bool = False) -> None:
        """End FFmpeg now, from any thread, without the frames it was still to take: SIGTERM
        (it finishes the file with the frames it has, its index too, and exits 255), or with
        ``kill`` SIGKILL. The write or :meth:`release` in progress then returns, and the file
        counts as failed. For a caller that stopped waiting: in its own session, FFmpeg
        outlived SharpCam and finished the file unnamed after it had exited."""
        proc = self._started
        if proc is None or proc.poll() is not None:
            return
        self.error = self.error or "SharpCam stopped waiting for FFmpeg to finish it"
        try:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        except OSError:
            pass  # it ended meanwhile

    def release(self) -> None:
        """Finish the file: FFmpeg writes what it holds and its index, and ends. Where it fails
        to, :attr:`failed` and :attr:`error` say so."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._done.set()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass  # it has gone: its status says why
        hung = False
        try:
            # Writing what it holds and the index takes a moment; one that hangs (a stalled
            # network drive) must not hold the run for ever.
            proc.wait(timeout=_FFMPEG_FINISH_S)
        except subprocess.TimeoutExpired:
            hung = True
            proc.kill()
            proc.wait()
        if hung:
            self.failed = True
            self.error = f"FFmpeg did not finish it within {_FFMPEG_FINISH_S:g} s"
        elif proc.returncode != 0:
            self.failed = True
            if not self.error:
                try:
                    self._errors.seek(0)
                    self.error = ffmpeg_reason(self._errors.read())
                except (OSError, ValueError):
                    pass
            self.error = self.error or f"ffmpeg exited with status {proc.returncode}"
        self._errors.close()


class VideoFileSink(_SinkBase):
    """A video file, H.264 for .mp4/.m4v/.mov/.mkv, MJPEG for .avi (or ``fourcc``): written
    through FFmpeg where one is found (:class:`_FFmpegWriter`: OpenCV's writer shifted the
    colours), else through OpenCV's writer, which writes no H.264 (:data:`FALLBACK_CODECS`:
    mp4v, or MJPEG in an MKV, instead). ``timed`` files (a live recording) take x264's fastest
    preset, as the encoder shares the CPU with the model.

    Frames go to a hidden ``.NAME.partial.EXT`` beside the target, renamed to the target on
    ``close()``, so a file with the real name is always complete and playable (Ctrl-C on a live
    stream closes it through the engine's ``stop()``; an offline run stopped early is aborted
    as incomplete); a partial file left by a killed process never hides as a finished one. A
    sink closed without any frame leaves no file. Odd sizes are rounded down to even sides
    (frames are fitted to :attr:`size`: letterboxed when their aspect ratio differs). The
    file says which colour matrix its frames hold (BT.601; OpenCV's mp4v through
    :func:`tag_mp4v_colour`): players took untagged HD for BT.709.

    ``timed=True`` (a live stream) keeps the file's clock: a live engine drops frames when the
    model is slower than the source, and a file that stores every frame it gets at a constant
    ``fps`` would play too fast. Each frame goes to the slot of its ``t_capture`` on the ``fps``
    grid; slots a dropped frame left empty repeat the previous frame, and a frame whose slot is
    already written is skipped. A frame under a slot off the next free slot (early, or late with
    no frame dropped before it while the source runs at about ``fps``) takes that slot: jitter
    does not make a repeat and a skip. Time in which the source delivered nothing (a stalled
    camera) is shortened to ``MAX_GAP_S``; time it delivered frames the engine dropped is not,
    however long (a model that takes seconds a frame on a loaded CPU): the frame indices tell
    the two apart, each frame dropped in between standing for one slot (``fps`` is the source's
    rate, as ``run`` opens it). A stream stopped by its user (:meth:`mark_stop`) lasts until the
    stop: ``close()`` repeats the last frame over the slots the model had no time to fill (a
    still image behind a slow model was a one-frame file after ``--duration 2``); a source
    that ended needs no such tail.

    ``abort()`` (a failed offline run) keeps the frames written so far as a playable
    ``NAME.incomplete.EXT`` (:attr:`kept_path`) and leaves an existing file at ``path`` alone:
    an incomplete result never replaces a complete one, and nothing written is thrown away.
    After a failed write, ``close()`` keeps the file there too. Neither working name replaces
    a file that already has it: the hidden file is then ``.NAME.partial-2.EXT``, the kept one
    ``NAME.incomplete-2.EXT`` (and so on). A file kept so is first read back: one in which no
    frame plays (an MP4 whose index the full disk had no room for, an AVI the disk was full
    for from the start) is removed instead, :attr:`kept_path` stays ``None`` and
    :attr:`not_kept` says why, as does the message of the failed write's error.

    An MP4, M4V or MOV keeps its index after its frames, where the writers put it: the edits
    made after ``close()`` (:func:`retime_mp4`, the sound) need it there. Its caller moves it
    first at the end (:func:`engine.mp4.faststart`), in a thread that a second Ctrl-C does not
    end mid-copy (the engine closes its sinks in a daemon thread).

    ``publish=False`` (a caller with edits of its own to make, ``process`` putting the sound
    back) leaves a finished file under its hidden name (:attr:`kept_path`, with
    :attr:`published` False), for the caller to edit and then :meth:`publish`, or
    :meth:`keep_incomplete` where an edit failed: an existing file at ``path`` was replaced
    by frames whose sound then failed to follow (a full disk), under a run that exited 1.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        size: tuple[int, int],
        fps: float = 30.0,
        fourcc: str | None = None,
        timed: bool = False,
        publish: bool = True,
    ):
        self.path = Path(path)
        self.publish_on_close = bool(publish)
        self.size = even_size(_check_size(size, "a video file sink"))
        self.timed = bool(timed)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        ext = self.path.suffix.lower()
        self.fourcc = fourcc or VIDEO_CODECS.get(ext)
        if self.fourcc is None:
            raise SinkError(
                f"cannot write video {self.path}: unknown extension {ext or '(none)'!r}; "
                f"use one of {', '.join(VIDEO_CODECS)}"
            )
        if not isinstance(self.fourcc, str) or len(self.fourcc) != 4:
            # Checked before any file exists: VideoWriter_fourcc's TypeError came after the
            # hidden partial file was made, and left it behind.
            raise ValueError(f"a FourCC is 4 characters (e.g. 'MJPG'), got {self.fourcc!r}")
        ffmpeg = _ffmpeg_for(self.fourcc, ext)
        if ffmpeg is None and fourcc is None:
            self.fourcc = FALLBACK_CODECS[ext]
            ffmpeg = _ffmpeg_for(self.fourcc, ext)
        too_large = _video_size_problem(self.fourcc, self.size)
        if too_large:
            # OpenCV's writer said only "cannot write video big.mp4 with codec mp4v", and
            # x264 failed on the first frames ("invalid width x height (20000x2)").
            raise SinkError(f"cannot write video {self.path}: {too_large}")
        check_name_fits(self.path)  # first: is_dir() raises on a name too long
        if self.path.is_dir():
            # Found only at close(), the rename would fail after all the work was done and
            # leave it in the hidden partial file.
            raise SinkError(f"cannot write video {self.path}: it is a folder")
        problem = opencv_path_problem(self.path)
        if problem:
            # OpenCV's writer crashed the process on it, and left the empty partial file.
            raise SinkError(f"cannot write video: {problem}")
        folder = self.path.parent
        try:
            make_folder(folder)
        except SinkError as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from exc.__cause__
        # OpenCV's writer says only "not opened", which read as a codec problem: a folder it
        # may not write, a read-only volume or a name too long fail here with their own words.
        try:
            self._partial, file = _create_partial(self.path)
        except OSError as exc:
            raise SinkError(
                f"cannot write video {self.path}: {_write_problem(exc, folder)}"
            ) from exc
        # OpenCV writes it by name; the file stays open (POSIX) only to hold its lock.
        self._locked = _keep_lock(file)
        writer: Any = None
        try:
            try:
                name = opencv_name(self._partial)
            except ValueError as exc:
                raise SinkError(f"cannot write video {self.path}: {exc}") from exc
            if ffmpeg is not None:
                writer = _FFmpegWriter(
                    ffmpeg, self._partial, self.fourcc, self.fps, self.size, live=self.timed
                )
            else:
                writer = cv2.VideoWriter(
                    name, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size
                )
            if not writer.isOpened():
                said = getattr(writer, "error", "")  # FFmpeg's reason, where it gave one
                raise SinkError(
                    f"cannot write video {self.path} with codec {self.fourcc}"
                    + (f": {said}" if said else "")
                )
            w, h = self.size
            self._resized = np.empty((h, w, 3), np.uint8)
            self._bgr = np.empty((h, w, 3), np.uint8)
        except BaseException:
            # Nobody gets a sink to close: the writer and the hidden file are ours to remove.
            if writer is not None:
                writer.release()
            self._partial.unlink(missing_ok=True)
            self._let_go()
            raise
        self._writer: Any = writer
        self._encoder: Any = writer  # kept past close() letting go of _writer, for end_writer()
        self.writer_ended = False  # end_writer() ended the encoder: its failure is the caller's
        self._lock = threading.Lock()
        self.frames_written = 0  # frames stored in the file, repeats included
        self.frames_skipped = 0  # timed: frames whose slot was already written
        self.kept_path: Path | None = None  # where close()/abort() left the frames
        # After a failed write: how many frames that file holds (None: not counted).
        self.frames_kept: int | None = None
        # Why the frames written are nowhere (their file held no frame that plays), if so.
        self.not_kept: str | None = None
        self.failed = False  # a write failed: the file is incomplete whatever ends it
        self._write_error: SinkError | None = None  # the failed write's error
        self._disk_full = False  # the disk was full when a write failed
        self._t0: float | None = None  # timed: t_capture of slot 0
        self._next_slot = 0
        self._last_at = 0.0  # timed: the capture time, in slots, of the last frame written
        self._last_index: int | None = None  # timed: Frame.index of the last frame given
        self._given_at: float | None = None  # timed: the capture time, in slots, of that frame
        # timed: the source's recent time between two of its frames, in slots (None before two)
        self._step: float | None = None
        self._t_stop: float | None = None  # timed: the stream was stopped then (mark_stop)
        # timed: repeats are written until then (perf_counter), once stopped (mark_stop)
        self._repeat_until: float | None = None
        self.repeats_cut = 0  # timed: repeats left out after a stop (STOP_REPEATS_S)

    MAX_GAP_S = 2.0
    #: timed: how long after :meth:`mark_stop` repeats of a frame may still be written. An
    #: encoder slower than the clock (4K at 60 fps on two cores: 5 frames a second) was
    #: minutes behind the stop, re-encoding one picture for every 1/60 s the model took.
    STOP_REPEATS_S = 2.0
    #: timed: the most slots between a source's frames for it to run at the file's rate.
    AT_RATE_STEP = 1.25

    def write(self, frame: Frame) -> None:
        # Before anything is written: a refused frame leaves the file as it was.
        check_rgb8(frame.image, f"video {self.path.name}")
        with self._lock:
            if self._writer is None:
                raise SinkError(f"video {self.path} is closed")
            repeats = 0
            if self.timed:
                if self._t0 is None:
                    self._t0 = frame.t_capture
                dropped = 0 if self._last_index is None else frame.index - self._last_index - 1
                self._last_index = frame.index
                at = (frame.t_capture - self._t0) * self.fps  # in slots
                slot = round(at)
                # A source at about the file's rate (not one at half of it: a webcam at 15 fps
                # in dim light, whose frames are due every other slot), judged before this frame.
                at_rate = self._step is not None and self._step < self.AT_RATE_STEP
                if self._given_at is not None and dropped >= 0:
                    step = min(max(at - self._given_at, 0.0) / (dropped + 1), 2.0)
                    self._step = (
                        step if self._step is None else self._step + (step - self._step) / 8
                    )
                self._given_at = at
                if slot < self._next_slot:
                    # A new frame (half a slot or more after the last one written) that rounds
                    # into the taken slot takes the next one, while it is less than a slot
                    # early: a camera at 29.97 fps, or one whose first frame came half a slot
                    # off, lost frames to a couple of ms of jitter and repeated others (up to
                    # 75 of 300). A source faster than the file still has its extra frames
                    # skipped, and the file keeps the clock.
                    if at <= self._next_slot - 1 or at - self._last_at < 0.5:
                        self.frames_skipped += 1
                        return
                    slot = self._next_slot
                elif (
                    slot > self._next_slot and dropped == 0 and at_rate and at < self._next_slot + 1
                ):
                    # Less than a slot late, with no frame dropped before it: it takes the next
                    # slot. Given the one after it, it left a repeat of the frame before, and the
                    # frame after it, on time again, then fell into a taken slot and was
                    # skipped: a stutter in the file for one late frame (a USB hiccup, a decode).
                    # Only from a source at the file's rate: the frames of a slower one are due
                    # slots apart, and one a little early was pulled a slot earlier still (a
                    # 15 fps camera in a 30 fps file held its frames 1, 3, 2 slots, not 2 each).
                    slot = self._next_slot
                self._last_at = at
                # Only the part of the gap no dropped frame accounts for is a stall: capping the
                # whole gap cut a model's slow seconds out of the file (`run --duration 6` behind
                # a 2.6 s model call made a 4 s file).
                stall_cap = max(0, dropped) + round(self.MAX_GAP_S * self.fps)
                # _bgr still holds the previous frame (if any): it fills the dropped slots.
                gap = min(slot - self._next_slot, stall_cap)
                repeats = gap if self.frames_written else 0
                self._next_slot = slot + 1
            self._repeat(repeats)
            # Letterboxed, never stretched: a camera that comes back at another resolution
            # (or a folder of photos of mixed shapes) keeps its proportions in the file.
            img = fit_to(frame.image, self.size, out=self._resized)
            self._put(cv2.cvtColor(img, cv2.COLOR_RGB2BGR, dst=self._bgr))

    def _put(self, bgr: np.ndarray) -> None:
        # VideoWriter.write reports a failed encode or a full disk only through its result.
        if self._writer.write(bgr) is False:
            self.failed = True
            self._disk_full = _disk_full(self._partial.parent)
            said = getattr(self._writer, "error", "")  # FFmpeg's reason, where it gave one
            why = ": the disk is full" if self._disk_full else (f": {said}" if said else "")
            self._write_error = SinkError(
                f"cannot write frame {self.frames_written} to video {self.path}{why}"
            )
            raise self._write_error
        self.frames_written += 1

    def mark_stop(
        self, t_stop: float, *, last_capture: float | None = None, hold: bool = True
    ) -> None:
        """The live stream was stopped at ``t_stop`` (``time.perf_counter()``, the clock of
        ``t_capture``): ``close()`` holds the last frame until then (not with ``hold=False``:
        a source that had ended). Only for ``timed``.

        ``last_capture`` (:attr:`engine.pipeline.Engine.last_capture`): when the source last
        delivered a frame. Given, a source that had stalled before the stop holds its last
        frame ``MAX_GAP_S`` past that at most, as a stall inside the file does.

        Repeats (the slots of the frames the model had no time for, and that hold) are
        written for :data:`STOP_REPEATS_S` more at most; those left out are counted in
        :attr:`repeats_cut`. Returns at once, also while a write is in progress.
        """
        # Not under the lock: a write in progress holds it for as long as its repeats take.
        self._repeat_until = time.perf_counter() + self.STOP_REPEATS_S
        if hold:
            end = t_stop if last_capture is None else min(t_stop, last_capture + self.MAX_GAP_S)
            self._t_stop = end

    def _repeat(self, n: int) -> int:
        """Write the last frame again ``n`` times, fewer once a stop's time for repeats is
        up (the rest counted in :attr:`repeats_cut`); returns how many were written."""
        for i in range(n):
            until = self._repeat_until
            if until is not None and time.perf_counter() >= until:
                self.repeats_cut += n - i
                return i
            self._put(self._bgr)
        return n

    def end_writer(self, *, kill: bool = False) -> bool:
        """Stop the encoder without waiting for it (a caller that gave up waiting for the
        file): FFmpeg ends, on SIGTERM with the frames it has in a playable file, which is
        then kept as incomplete (:attr:`kept_path`) by the close or write under way. Not
        under the lock, which that write holds. Does nothing with OpenCV's writer, which
        writes in this process: returns whether there was an encoder to end."""
        end_now = getattr(self._encoder, "end_now", None)
        if end_now is None:
            return False
        self.writer_ended = True
        end_now(kill=kill)
        return True

    @property
    def bytes_written(self) -> int:
        """The size of the hidden file while it is written (0 before it exists, or once it
        has gone): what a caller waiting for the file to finish counts as progress."""
        try:
            return self._partial.stat().st_size
        except OSError:
            return 0

    def _hold_last_frame(self) -> None:
        with self._lock:
            if (
                self._writer is None
                or self.failed
                or self._t_stop is None
                or self._t0 is None
                or not self.frames_written
            ):
                return
            end = round((self._t_stop - self._t0) * self.fps)  # slots before the stop
            # Not capped at MAX_GAP_S past the last frame written: the frames after it were
            # still in the model (seconds a frame on a loaded CPU) while the source went on, and
            # capped, `run --duration S` made files seconds shorter than S. A source that had
            # stalled is told apart by mark_stop's last_capture.
            self._next_slot += self._repeat(max(0, end - self._next_slot))  # _bgr: the last

    def close(self) -> None:
        try:
            self._hold_last_frame()
        finally:
            # After a failed write (disk full) the file lacks frames, and an mp4 its index: the
            # live engine closes a failed sink, and the real name would then replace an
            # earlier, complete file with one that does not play.
            self._finish(self.incomplete_path if self.failed else self.path)

    def abort(self) -> None:
        """Close as incomplete: the frames so far go to :attr:`incomplete_path`, not ``path``."""
        self._finish(self.incomplete_path)

    @property
    def incomplete_path(self) -> Path:
        """``out.mp4`` -> ``out.incomplete.mp4`` (where the frames of a run that did not
        finish go, unless a file has that name: :attr:`kept_path` says where they went)."""
        return incomplete_path(self.path)

    def _free_incomplete_path(self) -> Path:
        # The file there holds the frames of an earlier run that did not finish (or is the
        # user's): a second interrupted run replaced an hour's kept frames with a second's.
        path = free_incomplete_path(self.path)
        if path is not None:
            return path
        raise SinkError(
            f"cannot keep the frames of {self.path}: {_MAX_NUMBERED} files named like "
            f"{self.incomplete_path.name} are in the way"
        )

    def relock(self) -> None:
        """A ``publish=False`` sink's finished file, waiting for its name, was replaced by an
        edited copy (its sound put in, its index moved): hold the lock of the file now at the
        hidden name, and let go of the one replaced. Held, the replaced file's blocks stayed
        taken until :meth:`publish` (a second copy of an hour's video on the disk while the
        next edit needed room for its own)."""
        with self._lock:
            if not self.awaiting_name or self._locked is None:
                return
            try:
                if os.path.samestat(os.fstat(self._locked.fileno()), os.stat(self._partial)):
                    return  # not replaced
                file = open(self._partial, "rb")  # noqa: SIM115 - held until it has its name
            except OSError:
                self._let_go()  # the old one's blocks at least are given back
                return
            _lock(file)
            self._let_go()
            self._locked = file

    def _let_go(self) -> None:
        """Give up the working file's lock: it has its name, was kept, or is gone."""
        locked, self._locked = self._locked, None
        if locked is not None:
            locked.close()

    def _finish(self, target: Path) -> None:
        try:
            self._finish_file(target)
        finally:
            if not self.awaiting_name:  # publish() or keep_incomplete() gives it up then
                self._let_go()

    def _finish_file(self, target: Path) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is None:
                return
            writer.release()
            if self.frames_written == 0:
                self._partial.unlink(missing_ok=True)
                return
            # OpenCV's writer says nothing of a write that failed, as it went or as it
            # finished the file: a full disk then passed for a finished file ("30 frames ->
            # out.mkv", exit 0, 24 in it; an .mp4 without its index). A disk full after it
            # is taken for one.
            quiet_full = (
                not isinstance(writer, _FFmpegWriter)
                and not self.failed
                and _disk_full(self._partial.parent)
            )
            late = (getattr(writer, "failed", False) or quiet_full) and not self.failed
            if late:
                # FFmpeg failed as it finished the file (its index, on a disk just full): it
                # is not complete, whatever the writes said.
                self.failed = True
                self._disk_full = quiet_full or _disk_full(self._partial.parent)
                why = "the disk is full" if self._disk_full else writer.error
                self._write_error = SinkError(f"cannot finish video {self.path}: {why}")
                target = self.incomplete_path
            if self.path.suffix.lower() in _MP4_EXTENSIONS:
                # Untagged, HD was played with the wrong matrix (see tag_mp4v_colour). Not by
                # the FourCC's name: FMP4, XVID or DIVX give the same mp4v entry in an MP4, and
                # the function leaves any other entry alone.
                tag_mp4v_colour(self._partial)
            if target != self.path and self._discard_unplayable():
                if late:
                    raise self._write_error  # type: ignore[misc]
                return
            if target == self.path and not self.publish_on_close:
                self.kept_path = self._partial  # finished; the caller names it (publish())
                return
            try:
                if target == self.incomplete_path:
                    target = self._free_incomplete_path()
                os.replace(self._partial, target)
            except (OSError, SinkError) as exc:
                # The frames stayed in the hidden file, unannounced (an hour's processing, or a
                # recording `run` then called stopped, exit 0) when the name was refused: an
                # earlier out.mp4 open in a player on Windows, a folder made under the name.
                self.failed = True
                self.kept_path = self._keep_unfinished(target)
                if isinstance(exc, SinkError):
                    raise
                raise SinkError(f"cannot finish video {target}: {exc}") from exc
            self.kept_path = target
            if self.failed:
                # A failed write (a full disk) lost what FFmpeg still held: "cannot write frame
                # 12" kept 5. The file is counted, not the frames handed on.
                self.frames_kept = _count_frames(target)
            if late:
                raise SinkError(f"{self._write_error}; {self.kept_phrase()}")

    def publish(self) -> Path:
        """Give the finished file of a ``publish=False`` sink its name (``path``, replacing a
        file there) once the caller's edits are done; returns ``path``. Where the name is
        refused (a folder made under it, a file open in a player on Windows) the frames go to
        a free ``NAME.incomplete.EXT`` (or stay in the hidden file) and :class:`SinkError`
        says where."""
        with self._lock:
            held = self._held("publish")
            try:
                os.replace(held, self.path)
            except OSError as exc:
                self.kept_path = self._keep_unfinished(self.path)
                where = f"; its frames are kept in {self.kept_path}" if self.kept_path else ""
                raise SinkError(f"cannot finish video {self.path}: {exc}{where}") from exc
            finally:
                self._let_go()
            self.kept_path = self.path
            return self.path

    def keep_incomplete(self) -> Path | None:
        """Keep the finished file of a ``publish=False`` sink as ``NAME.incomplete.EXT`` (a
        free one), an edit the caller made having failed or been stopped: an existing file at
        ``path`` stays as it was. Returns where the frames are (the hidden file itself when no
        name is free)."""
        with self._lock:
            self._held("keep")
            try:
                self.kept_path = self._keep_unfinished(self.path)
            finally:
                self._let_go()
            return self.kept_path

    @property
    def awaiting_name(self) -> bool:
        """A ``publish=False`` sink's finished file waits under its hidden name for
        :meth:`publish` or :meth:`keep_incomplete`."""
        return self._writer is None and self.kept_path == self._partial

    @property
    def published(self) -> bool:
        """The finished file has its name (``close()``, or :meth:`publish`)."""
        return self.kept_path == self.path

    def _held(self, what: str) -> Path:
        if not self.awaiting_name:
            raise RuntimeError(
                f"cannot {what} video {self.path}: no finished file is waiting for its name "
                "(open it with publish=False and close() it first)"
            )
        return self._partial

    @property
    def unfinished_path(self) -> Path | None:
        """The hidden file the frames are in while the file is not finished yet (a close
        still writing); None once it has its name, was kept, or was never written."""
        if self.kept_path is not None or not self._partial.exists():
            return None
        return self._partial

    def kept_phrase(self) -> str:
        """Where the frames of an unfinished file went, for a message: ``"5 frames are kept
        in out.incomplete.mp4"`` (or ``"the frames written are kept in ..."`` where they
        were not counted); "" where they were not kept."""
        if self.kept_path is None:
            return ""
        n = self.frames_kept
        if n is None:
            return f"the frames written are kept in {self.kept_path}"
        return f"{n} frame{'s are' if n != 1 else ' is'} kept in {self.kept_path}"

    def _discard_unplayable(self) -> bool:
        """Remove the hidden file when no frame in it plays, and say why; ``True`` if so.

        The frames of a run that did not finish are kept only when they play: on a full disk
        an MP4 lacks the index (moov) its writer adds at the end, and an AVI may hold nothing
        but what the disk took before it filled (0 bytes), and "the frames written are kept
        in out.incomplete.mp4" named a file that nothing could open.
        """
        why = _unplayable(self._partial)
        if why is None:
            return False
        # Asked before the removal frees the space: a write that failed says so already.
        full = self._disk_full or _disk_full(self._partial.parent)
        self._partial.unlink(missing_ok=True)
        if why == "index" and full:
            why = (
                "an MP4 writes its index at its end and the full disk had no room for it "
                "(.avi or .mkv keep the frames written)"
            )
        elif why == "index":
            why = "it lacks the index an MP4 writes at its end"
        elif full:
            why = "the disk was full before a frame that plays reached it"
        else:
            why = "no frame in it plays"
        self.not_kept = f"nothing of video {self.path.name} could be kept: {why}"
        exc = self._write_error
        if exc is None:
            # Aborted for another reason (the engine reports this beside it).
            n = self.frames_written
            raise SinkError(f"{self.not_kept} ({n} frame{'s' * (n != 1)} written)")
        # The failed write's error is what the engine and the CLI report: it ends with where
        # the frames went (nowhere) instead of a caller's "kept in NAME.incomplete.EXT".
        exc.args = (f"{exc.args[0]}; {self.not_kept}", *exc.args[1:])
        return True

    def _keep_unfinished(self, target: Path) -> Path | None:
        """Where the frames of a file that could not be renamed to ``target`` are: a free
        ``NAME.incomplete.EXT`` when it takes them, else the hidden file itself."""
        if target == self.path:
            try:
                kept = self._free_incomplete_path()
                os.replace(self._partial, kept)
                return kept
            except (OSError, SinkError):
                pass
        return self._partial if self._partial.exists() else None

    def describe(self) -> str:
        w, h = self.size
        return f"video {self.path.name} · {w}x{h} @ {self.fps:g} fps ({self.fourcc})"


#: How many numbered names (``-2``, ``-3``, ...) a working or kept file tries when its own is
#: taken.
_MAX_NUMBERED = 1000
#: What a number adds to a working or kept name at most (``-1000``): kept free in the name.
_NUMBER_ROOM = len(f"-{_MAX_NUMBERED}")
#: The longest file name where the file system does not say (ext4, APFS, NTFS all take 255).
_DEFAULT_NAME_MAX = 255
#: The longest path a system call takes: PATH_MAX, 4096 on Linux, 1024 on macOS.
PATH_MAX = 1024 if sys.platform == "darwin" else 4096
#: What an output's path leaves free of :data:`PATH_MAX`: for the working names beside it
#: (``NAME.incomplete-1000.EXT``) or a frames folder's names in it
#: (``/.frame_000000.partial-1000.png``).
_PATH_ROOM = 48
#: What an image's path leaves free: for its own working name (``.NAME.partial-1000.EXT``).
_IMAGE_ROOM = len("..partial") + _NUMBER_ROOM


def _name_length(name: str) -> int:
    """``name``'s length in the units its file system limits: UTF-16 code units on Windows,
    bytes elsewhere (a name of 100 accented letters is 200 bytes on Linux)."""
    if sys.platform == "win32":
        return len(name.encode("utf-16-le", "surrogatepass")) // 2
    return len(os.fsencode(name))


def _name_max(folder: Path) -> int:
    """The longest file name ``folder`` (or, not made yet, the folder it will be made in)
    takes, in the units of :func:`_name_length`."""
    if sys.platform == "win32" or not hasattr(os, "pathconf"):
        return _DEFAULT_NAME_MAX
    where = folder
    try:
        while not where.is_dir() and where.parent != where:
            where = where.parent
        limit = os.pathconf(where, "PC_NAME_MAX")
    except (OSError, ValueError):  # a folder name too long itself: is_dir() raises for it
        return _DEFAULT_NAME_MAX
    return limit if limit > 0 else _DEFAULT_NAME_MAX


def check_name_fits(path: str | os.PathLike[str], *, room: int | None = None) -> None:
    """Raise :class:`SinkError` when ``path``'s file name (or a folder's name on the way to it)
    is longer than the file system takes (255 bytes on most), or the whole path longer than
    the system does with ``room`` bytes to spare (default: for the working names beside an
    output or a frames folder's names in it), in one line that says so, before any work is
    done.

    The working names beside it (:func:`partial_path`, :func:`incomplete_path`) are shortened
    to fit; the final name is never changed, so it is refused here instead.
    """
    path = Path(path)
    if sys.platform != "win32":
        # The whole path too: past it every call on the name failed, the first (is_dir)
        # with a bare "[Errno 36] File name too long".
        length = len(os.fsencode(str(path)))
        most = PATH_MAX - 1 - (_PATH_ROOM if room is None else room)  # 1: the ending NUL
        if length > most:
            raise SinkError(
                f"cannot write {str(path)[:60]}...: its path is {length} bytes long, more than "
                f"the {most} the system takes; give a shorter one"
            )
    limit = _name_max(path.parent)
    for part in (path, *path.parents):
        length = _name_length(part.name)
        if length <= limit:
            continue
        what = "its name" if part == path else f"the name of folder {part.name[:24]}..."
        unit = "characters" if sys.platform == "win32" else "bytes"
        raise SinkError(
            f"cannot write {path}: {what} is {length} {unit} long, more than the {limit} "
            "the file system takes; give a shorter name"
        )


def _fitted_name(folder: Path, head: str, stem: str, infix: str, suffix: str) -> str:
    """``HEAD + STEM + INFIX + SUFFIX``, with ``stem`` cut (and marked with a hash of it, so
    that two long names cut alike still differ) where the whole would not fit in ``folder``
    with room for a number (:func:`_numbered`) left.

    A name near the limit failed: ``.NAME.partial.EXT`` is 9 bytes longer than ``NAME.EXT``
    (``NAME.incomplete.EXT`` 11), and a 250-byte output name could not be written at all.
    """
    limit = _name_max(folder) - _NUMBER_ROOM
    name = f"{head}{stem}{infix}{suffix}"
    if _name_length(name) <= limit:
        return name
    tag = "~" + hashlib.sha1(os.fsencode(stem)).hexdigest()[:8]
    cut = stem
    while cut and _name_length(f"{head}{cut}{tag}{infix}{suffix}") > limit:
        cut = cut[:-1]
    return f"{head}{cut}{tag}{infix}{suffix}"


def partial_path(target: str | os.PathLike[str]) -> Path:
    """The hidden working file ``target`` is written to first: ``.NAME.partial.EXT`` beside
    it, with ``NAME`` cut short where the whole would be too long a file name (see
    :func:`_create_partial` for the numbered ones used when it is taken)."""
    target = Path(target)
    return target.with_name(
        _fitted_name(target.parent, ".", target.stem, ".partial", target.suffix)
    )


def incomplete_path(target: str | os.PathLike[str]) -> Path:
    """Where the frames of a video that did not finish are kept: ``NAME.incomplete.EXT``
    beside ``target``, with ``NAME`` cut short where the whole would be too long a name."""
    target = Path(target)
    return target.with_name(
        _fitted_name(target.parent, "", target.stem, ".incomplete", target.suffix)
    )


def free_incomplete_path(target: str | os.PathLike[str]) -> Path | None:
    """Where the frames of ``target`` would be kept now were it stopped: its
    :func:`incomplete_path`, or the first numbered one free (``NAME.incomplete-2.EXT``);
    None when all are taken."""
    for path in _numbered(incomplete_path(target)):
        if not os.path.lexists(path):
            return path
    return None


def _numbered(path: Path) -> Iterator[Path]:
    """``a.partial.mp4``, then ``a.partial-2.mp4``, ``a.partial-3.mp4``, ..."""
    yield path
    for n in range(2, _MAX_NUMBERED + 1):
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


def _create_partial(target: Path) -> tuple[Path, BinaryIO]:
    """A new hidden working file beside ``target``, open for writing: ``.NAME.partial.EXT``,
    or a numbered one when that name is taken.

    Created exclusively: an existing file of that name is another run's working file, the
    frames a killed run left, or the input itself (``process .a.partial.png a.png`` moved its
    input onto the output), and opening it for writing truncated it. An exclusive create also
    refuses to follow a symbolic link there. Raises ``OSError`` when the folder takes no file.
    """
    first = partial_path(target)
    for path in _numbered(first):
        try:
            file = open(path, "xb")
        except FileExistsError:
            continue
        except PermissionError:
            # Windows answers an exclusive create on a folder of that name with "access
            # denied", not "exists": the name is taken, not the folder closed to us.
            if os.path.isdir(path):
                continue
            raise
        _lock(file)
        return path, file
    raise SinkError(
        f"cannot write {target}: {_MAX_NUMBERED} working files named like {first.name} are "
        "in the way"
    )


def _lock(file: BinaryIO) -> None:
    """Lock the working file open in ``file`` for as long as it stays open (POSIX): the mark
    by which :func:`stale_work_files` tells it from one a killed run left. The lock goes with
    the process, however it ends."""
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a file system without locks: no mark
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _keep_lock(file: BinaryIO) -> BinaryIO | None:
    """``file`` (a working file from :func:`_create_partial`, written by name by another
    writer) kept open to hold its lock; closed (None) where no lock is taken: on Windows an
    open file cannot be renamed."""
    if fcntl is None:
        file.close()
        return None
    return file


#: A working file written to in the last this many seconds counts as in use, locked or not:
#: `process` puts the sound into a new copy of it, which nobody locks, then looks for
#: subtitles before moving its index (under a lock again).
_IN_USE_S = 30.0
#: A working file's name: ``.NAME.partial.EXT`` (or ``-2`` ...), and the copy made of it to
#: put the sound in or move the index (``..NAME.partial.partial.EXT``).
_WORK_NAME = re.compile(r"\.(?P<first>\..+\.partial(?:-\d+)?)\.partial(?:-\d+)?(?P<ext>\.[^.]+)")
_ANY_WORK_NAME = re.compile(r"\..+\.partial(?:-\d+)?\.[^.]+")


def _work_group(name: str) -> str:
    """The working file ``name`` belongs to: itself, or the one it is a copy of."""
    match = _WORK_NAME.fullmatch(name)
    return match["first"] + match["ext"] if match else name


def _locked_elsewhere(path: Path) -> bool | None:
    """Whether a running process holds the lock of :func:`_lock` on ``path``; None where
    that cannot be told (no locks here, or the file cannot be opened)."""
    if fcntl is None:
        return None
    try:
        with open(path, "rb") as file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return None
            return False  # closing the file gives the probe's lock back
    except OSError:
        return None


#: CreateFile's numbers (winbase.h, winerror.h), which _winapi does not all name.
_GENERIC_READ = 0x80000000
_FILE_SHARE_READ = 0x1
_FILE_SHARE_DELETE = 0x4
_OPEN_EXISTING = 3
_ERROR_SHARING_VIOLATION = 32


def _written_elsewhere(path: Path) -> bool | None:
    """Windows: whether a process has ``path`` open for writing (a recording's FFmpeg or
    OpenCV writer); None where that cannot be told. Asked by opening it to read while
    letting others read and delete it but not write: Windows refuses that open while any
    handle with write access is open (a sharing violation), and closes a killed process's
    handles with it. No lock is taken instead: Windows' byte-range locks bar even the
    writer's own writes, and a file held open by Python's open() cannot be renamed."""
    import _winapi  # Windows only

    try:
        handle = _winapi.CreateFile(
            str(path),
            _GENERIC_READ,
            _FILE_SHARE_READ | _FILE_SHARE_DELETE,  # a rename by its writer is not refused
            0,
            _OPEN_EXISTING,
            0,
            0,
        )
    except OSError as exc:
        return True if getattr(exc, "winerror", None) == _ERROR_SHARING_VIOLATION else None
    _winapi.CloseHandle(handle)
    return False


def stale_work_files(target: str | os.PathLike[str]) -> list[Path]:
    """The hidden working files of ``target`` (:func:`partial_path` and its numbered and
    copied forms beside it; for a folder, those in it) that no running process is writing:
    what a run killed while writing it left (a recording's frames so far, under its hidden
    name). Never those of a file another SharpCam writes now (it holds their lock; on
    Windows, its writer has them open), nor any written to in the last :data:`_IN_USE_S`
    seconds; none where that cannot be told (a file system without locks)."""
    windows = sys.platform == "win32"
    if fcntl is None and not windows:
        return []
    target = Path(target)
    if target.is_dir():
        folder, names = target, [_ANY_WORK_NAME]
    else:
        folder = target.parent
        first = partial_path(target).name
        head = re.escape(first[: len(first) - len(target.suffix)]) + r"(?:-\d+)?"
        ext = re.escape(target.suffix)
        names = [re.compile(head + ext), re.compile(r"\." + head + r"\.partial(?:-\d+)?" + ext)]
    try:
        with os.scandir(folder) as entries:
            found = [
                Path(e.path)
                for e in entries
                if any(n.fullmatch(e.name) for n in names) and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []
    now = time.time()
    live = set()
    for path in found:
        try:
            recent = now - path.stat().st_mtime < _IN_USE_S
        except OSError:
            recent = True  # gone meanwhile: finished
        if recent or (_written_elsewhere if windows else _locked_elsewhere)(path) is not False:
            live.add(_work_group(path.name))
    return sorted(p for p in found if _work_group(p.name) not in live)


#: Free bytes under which a file system that refused a write counts as full (the writer's last
#: buffer did not fit; what is left is a few blocks at most).
_FULL_BELOW = 1 << 20


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _FULL_BELOW
    except OSError:
        return False


def _unplayable(path: Path) -> str | None:
    """``None`` when a frame of the video at ``path`` decodes; else ``"index"`` (an MP4
    without its moov box) or ``"frames"`` (an empty file, or one in which no frame decodes).

    The MP4 case is found by reading the boxes' headers, not by OpenCV: FFmpeg prints "moov
    atom not found" to stderr when asked to open one. A file whose size or boxes cannot be
    read (an ``OSError``) is taken as playable.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "frames"
        if path.suffix.lower() in _MP4_EXTENSIONS and not _has_moov(path, size):
            return "index"
    except OSError:
        return None
    try:
        cap = cv2.VideoCapture(opencv_name(path))
    except ValueError:
        return None
    try:
        return None if cap.isOpened() and cap.grab() else "frames"
    finally:
        cap.release()


def _count_frames(path: Path) -> int | None:
    """The frames of the video at ``path``, from its packets (FFmpeg reads, decodes nothing)
    or, without FFmpeg, its index (OpenCV); None where neither can tell."""
    from engine.remux import RemuxError, find_ffmpeg, packet_count

    ffmpeg = find_ffmpeg()
    if ffmpeg is not None:
        try:
            found = packet_count(path, ffmpeg=ffmpeg)
        except RemuxError:
            found = None
        if found is not None:
            return found
    try:
        cap = cv2.VideoCapture(opencv_name(path))
    except ValueError:
        return None
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


def _has_moov(path: Path, size: int) -> bool:
    """Whether the top-level boxes of the MP4 at ``path`` include its index (``moov``); not
    where the walk to it breaks (an ``mdat`` that never finished runs to the end)."""
    with open(path, "rb") as file:
        return _mp4_moov_at(file, size) is not None


#: The boxes on the way from ``moov`` to the video track's sample description.
_MP4_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})
#: A VisualSampleEntry's own fields (after its 8-byte header), before its child boxes.
_VISUAL_SAMPLE_ENTRY = 8 + 78
#: What OpenCV's writer stores: FFmpeg's default RGB -> YUV conversion, the BT.601 matrix in
#: limited range, of sRGB pictures (BT.709 primaries and transfer). ISO/IEC 23091-2 codes.
_COLOUR_PRIMARIES, _COLOUR_TRANSFER, _COLOUR_MATRIX = 1, 1, 6


def _colour_box(quicktime: bool) -> bytes:
    """The ``colr`` box that says :data:`_COLOUR_MATRIX` and co: ``nclc`` for QuickTime
    (.mov), ``nclx`` with the range flag (limited) for MP4, as FFmpeg's muxer writes them."""
    codes = struct.pack(">HHH", _COLOUR_PRIMARIES, _COLOUR_TRANSFER, _COLOUR_MATRIX)
    body = b"nclc" + codes if quicktime else b"nclx" + codes + b"\0"
    return struct.pack(">I", 8 + len(body)) + b"colr" + body


def _with_colour(box: bytes, colr: bytes) -> bytes | None:
    """``box`` (a ``moov`` or a box inside it) with ``colr`` added to its mp4v sample entry,
    every size on the way grown to match; None when there is no untagged mp4v entry in it."""
    kind = box[4:8]
    if kind == b"stsd":

        def tagged(entry: bytes) -> bytes | None:
            if any(k == b"colr" for _, _, k in _boxes(entry, _VISUAL_SAMPLE_ENTRY, len(entry))):
                return None  # tagged already (a later OpenCV may tag it itself)
            return entry + colr

        return _edit_sample_entry(box, (b"mp4v",), tagged)
    if kind not in _MP4_CONTAINERS:
        return None
    for pos, size, _ in _boxes(box, 8, len(box)):
        grown = _with_colour(box[pos : pos + size], colr)
        if grown is not None:
            head = struct.pack(">I", len(box) + len(grown) - size) + box[4:pos]
            return head + grown + box[pos + size :]
    return None


def tag_mp4v_colour(path: str | os.PathLike[str]) -> bool:
    """Say in the MP4 or MOV at ``path`` which colours its mp4v frames hold: a ``colr`` box in
    the video's sample description. Returns whether it was added.

    OpenCV's writer converts to YUV with the BT.601 matrix and says nothing; players then
    guess, and for HD (1280x720 and up) they guess BT.709: greens played 16 % darker, reds
    lighter. Told, FFmpeg (mpv, VLC), browsers and QuickTime decode it with BT.601.

    Only a file whose ``moov`` is its last box is changed (the writer puts it after the
    frames): the grown copy goes after it, so no frame moves. Any other layout, or an entry
    that has a ``colr`` box already, is left alone (False). A write that fails (a full disk,
    an I/O error) leaves the file as it was, or at worst holding a second, complete moov:
    it plays either way (:func:`_append_moov`).
    """
    path = Path(path)
    colr = _colour_box(path.suffix.lower() == ".mov")
    return _edit_last_moov(path, lambda moov: _with_colour(moov, colr))


def _edit_last_moov(path: Path, edit: Callable[[bytes], bytes | None]) -> bool:
    """Replace the ``moov`` of the MP4 or MOV at ``path`` by ``edit(moov)``; returns whether
    it did. Only where the moov is the file's last box (the writer puts it after the frames):
    the new one goes after it (:func:`_append_moov`), so no frame moves. Any other layout, an
    ``edit`` that returns None or raises ValueError, or a failed write leaves the file
    playable, as it was or holding a second complete moov."""
    try:
        # Unbuffered: a write the full disk refuses fails there, not in a later flush that
        # would also keep the cut after it from happening (_truncate).
        with open(path, "r+b", buffering=0) as f:
            size = f.seek(0, os.SEEK_END)
            found = _mp4_moov_at(f, size)
            if found is None:
                return False
            pos, length = found
            if pos + length != size or length > _MOOV_LIMIT:
                return False
            f.seek(pos)
            edited = edit(f.read(length))
            return edited is not None and _append_moov(f, pos, size, edited)
    except (OSError, ValueError, struct.error):
        return False


def _full_box(kind: bytes, version: int, body: bytes) -> bytes:
    return struct.pack(">I4sB3x", 12 + len(body), kind, version) + body


def _edit_sample_entry(
    stsd: bytes, kinds: tuple[bytes, ...], edit: Callable[[bytes], bytes | None]
) -> bytes | None:
    """``stsd`` with its one visual sample entry (of a type in ``kinds``) replaced by
    ``edit(entry)``, the sizes of both grown to match; None where it has no such entry or
    ``edit`` returns None."""
    (count,) = struct.unpack_from(">I", stsd, 12)
    entries = list(_boxes(stsd, 16, len(stsd)))
    if count != 1 or len(entries) != 1 or entries[0][2] not in kinds:
        return None
    pos, size, _ = entries[0]
    if size < _VISUAL_SAMPLE_ENTRY:
        return None
    new = edit(stsd[pos : pos + size])
    if new is None:
        return None
    head = struct.pack(">I", len(stsd) + len(new) - size) + stsd[4:pos]
    return head + struct.pack(">I", len(new)) + new[4:] + stsd[pos + size :]


def _stsd_with_clock(stsd: bytes, tick: int, timescale: int) -> bytes:
    """``stsd`` with the SPS of its one H.264 entry declaring a clock of ``tick`` units of
    ``timescale`` a frame (:mod:`engine.h264`); as it was for any other entry, or an SPS
    without timing."""
    from engine.h264 import avcc_with_clock

    if 2 * timescale >= 1 << 32:
        return stsd  # more than the SPS's 32 bits hold

    def clocked(entry: bytes) -> bytes | None:
        for at, length, kind in _boxes(entry, _VISUAL_SAMPLE_ENTRY, len(entry)):
            if kind == b"avcC":
                avcc = avcc_with_clock(entry[at + 8 : at + length], tick, 2 * timescale)
                if avcc is None:
                    return None
                box = struct.pack(">I", len(avcc) + 8) + b"avcC" + avcc
                return entry[:at] + box + entry[at + length :]
        return None

    return _edit_sample_entry(stsd, (b"avc1", b"avc3"), clocked) or stsd


def _retimed(
    box: bytes, stts: bytes, duration: int, timescale: int, movie: list[int], tick: int = 1
) -> bytes:
    """``box`` (a ``moov`` or a box inside it) with its one track's ``stts`` replaced, its
    ``mdhd`` timescale and duration set, and the durations in the movie's timescale
    (``mvhd``, ``tkhd``, ``elst``) following. ``movie`` holds the movie timescale once read.
    An H.264 track's SPS is given a clock of ``tick`` units (:func:`_stsd_with_clock`).
    ValueError where the layout is not OpenCV's (one track, version 0 boxes)."""
    kind = box[4:8]
    if kind == b"stts":
        return stts
    if kind == b"stsd":
        return _stsd_with_clock(box, tick, timescale)
    if kind == b"mdhd":
        if box[8] != 0:
            raise ValueError("a version 1 mdhd")
        return box[:20] + struct.pack(">II", timescale, duration) + box[28:]
    in_movie = round(duration * movie[0] / timescale) if movie else 0
    if kind == b"mvhd":
        if box[8] != 0:
            raise ValueError("a version 1 mvhd")
        movie.append(struct.unpack_from(">I", box, 20)[0])
        in_movie = round(duration * movie[0] / timescale)
        return box[:24] + struct.pack(">I", in_movie) + box[28:]
    if kind == b"tkhd":
        if box[8] != 0 or not movie:
            raise ValueError("a version 1 tkhd, or one before the mvhd")
        return box[:28] + struct.pack(">I", in_movie) + box[32:]
    if kind == b"elst":
        if box[8] != 0 or struct.unpack_from(">I", box, 12)[0] != 1 or not movie:
            raise ValueError("an edit list of other than one version 0 entry")
        return box[:16] + struct.pack(">I", in_movie) + box[20:]
    if kind not in _MP4_CONTAINERS | {b"edts"}:
        return box
    children = [box[pos : pos + size] for pos, size, _ in _boxes(box, 8, len(box))]
    if kind == b"moov" and sum(c[4:8] == b"trak" for c in children) != 1:
        raise ValueError("not one track")
    body = b"".join(_retimed(c, stts, duration, timescale, movie, tick) for c in children)
    return struct.pack(">I", 8 + len(body)) + kind + body


def retime_mp4(path: str | os.PathLike[str], durations: list[int], timescale: int) -> bool:
    """Give the frames of the MP4 or MOV at ``path`` (as the writers make one: one video
    track, one duration for every frame) the durations ``durations`` (one per frame, in units
    of 1 / ``timescale`` s). Returns whether it did.

    The writers have one frame rate: a variable-rate video (a phone's in poor light) was
    written at its mean rate, so its pictures ran ahead of or behind its sound within the
    clip. Its own durations put them back in step. An H.264 stream's SPS, which declared the
    mean rate, is given a clock all the durations are whole ticks of (:mod:`engine.h264`).
    Any other layout, or a count other than the file's frames, is left alone (False); a
    failed write leaves the file as it was, or holding a second complete index
    (:func:`_append_moov`).
    """
    path = Path(path)
    if not durations or timescale < 1 or min(durations) < 1 or sum(durations) >= 1 << 32:
        return False
    counts: list[list[int]] = []
    for d in durations:
        if counts and counts[-1][1] == d:
            counts[-1][0] += 1
        else:
            counts.append([1, d])
    stts = _full_box(
        b"stts",
        0,
        struct.pack(">I", len(counts)) + b"".join(struct.pack(">II", *c) for c in counts),
    )

    def edit(moov: bytes) -> bytes | None:
        if _stts_frames(moov) != len(durations):
            return None
        return _retimed(moov, stts, sum(durations), timescale, [], math.gcd(*durations))

    return _edit_last_moov(path, edit)


def _stts_frames(box: bytes) -> int | None:
    """The number of frames the ``stts`` inside ``box`` counts; None without one."""
    kind = box[4:8]
    if kind == b"stts":
        (entries,) = struct.unpack_from(">I", box, 12)
        return sum(struct.unpack_from(">I", box, 16 + 8 * i)[0] for i in range(entries))
    if kind not in _MP4_CONTAINERS:
        return None
    for pos, size, _ in _boxes(box, 8, len(box)):
        n = _stts_frames(box[pos : pos + size])
        if n is not None:
            return n
    return None


def _write_at(f: BinaryIO, at: int, data: bytes) -> None:
    """Write ``data`` at ``at`` and wait until it is on the disk: a full disk (delayed
    allocation, a copy-on-write file system) or an I/O error may only show there."""
    f.seek(at)
    view = memoryview(data)
    while view:  # an unbuffered write may take part of it
        written = f.write(view)
        if not written:
            raise OSError(errno.EIO, "nothing written")
        view = view[written:]
    os.fsync(f.fileno())


def _append_moov(f: BinaryIO, old: int, size: int, moov: bytes) -> bool:
    """Make ``moov`` (the file's index at ``old``, grown) the index of the file open in
    ``f``, whose ``size`` bytes end with the old one. Returns whether it is.

    Rewritten in place, a write that failed half-way (ENOSPC on a copy-on-write file system,
    where an overwrite takes new blocks too; EIO) left half an index, and close() published
    a file no player opens as finished. Instead the new box goes after the old one as a
    ``free`` box, then two 4-byte type writes swap their roles: the new box becomes a ``moov``
    (players take the first one, still the old, until the next write), then the old one a
    ``free``. Each step is on the disk before the next begins, so after any failure, or a
    crash between steps, the file holds a complete moov that players take first. A failure
    is undone where the file system lets it be (the old box named ``moov`` again, the file
    cut back to ``size``). The old index stays in the file as ``free``: its size (about a
    megabyte for an hour of video) is the price.
    """
    try:
        _write_at(f, size, moov[:4] + b"free" + moov[8:])
        _write_at(f, size + 4, b"moov")
    except OSError:
        # The old moov is untouched: the new bytes, whatever of them got there, go.
        _truncate(f, size)
        return False
    try:
        _write_at(f, old + 4, b"free")
    except OSError:
        # Two complete moov boxes, the old one first; or the new one alone, if the old
        # one's type got half changed. Put the old one back, and only then drop the new.
        try:
            _write_at(f, old + 4, b"moov")
        except OSError:
            return False
        _truncate(f, size)
        return False
    return True


def _truncate(f: BinaryIO, size: int) -> None:
    # A cut that fails leaves a box after the moov that players skip (a free, or one of an
    # unknown type whose size runs past the end).
    with contextlib.suppress(OSError):
        os.ftruncate(f.fileno(), size)


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents, or raise :class:`SinkError` saying why not.

    What stands where a folder of the path should be is named: ``mkdir`` said "File exists"
    (or "Not a directory") of ``notes/x.mp4`` where ``notes`` is a file, or a broken link.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        for part in (folder, *folder.parents):
            try:
                is_dir = stat.S_ISDIR(os.stat(part).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                if os.path.islink(part):
                    why = f"{part} is a link to something that does not exist"
                    break
                continue  # not there: its parent is looked at next
            except OSError as look:
                if look.errno == errno.ELOOP:  # mkdir said "File exists" of it
                    why = f"{part} is a loop of symbolic links"
                    continue  # the loop may start further up: named where it does
                break  # cannot be looked at (no permission): mkdir's own words say it
            if not is_dir:
                why = f"{part} is a file, not a folder"
            break
        raise SinkError(f"cannot create folder {folder}: {why}") from exc


def _write_problem(exc: OSError, folder: Path) -> str:
    """Why a file in ``folder`` cannot be created, from the error creating it."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in folder {folder}"
    if exc.errno == errno.EROFS:
        return f"folder {folder} is on a read-only file system"
    if exc.errno == errno.ENOENT:
        if folder.is_dir():
            # /proc and /sys answer so for a new file in a folder that is there: "folder
            # /proc does not exist" was false.
            return f"folder {folder} does not let files be created in it"
        return f"folder {folder} does not exist"
    return str(exc.strerror or exc)


#: Image formats that hold grey only: colour frames are converted to grey for them.
_GREY_ONLY = frozenset({".pgm"})
#: Extensions OpenCV's encoder does not know by name for a format it writes.
ENCODE_AS = {".jfif": ".jpg"}

#: The quality of a lossy WebP output: JPEG's (OpenCV's default, 95).
WEBP_QUALITY = 95


#: Image formats :func:`write_image` writes EXIF data and an ICC profile into.
_JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
METADATA_EXTENSIONS = _JPEG_EXTENSIONS | {".png"}
_TIFF_ORIENTATION, _TIFF_EXIF_IFD = 0x0112, 0x8769
_EXIF_PIXEL_X, _EXIF_PIXEL_Y = 0xA002, 0xA003
_TIFF_SHORT, _TIFF_LONG, _TIFF_IFD = 3, 4, 13
#: An APP segment's payload: its 16-bit length counts itself too.
_JPEG_SEGMENT_MAX = 0xFFFF - 2
_JPEG_EXIF_HEADER = b"Exif\0\0"
_JPEG_ICC_HEADER = b"ICC_PROFILE\0"
_JPEG_ICC_CHUNK = _JPEG_SEGMENT_MAX - len(_JPEG_ICC_HEADER) - 2  # + sequence number, count


def _ifd_entries(buf: bytes, order: str, offset: int) -> tuple[list[int], int]:
    """The positions of the 12-byte entries of the TIFF directory at ``offset``, and where
    its link to the next directory is. ValueError when it does not fit in ``buf``."""
    if offset < 8 or offset + 2 > len(buf):
        raise ValueError("a directory outside the block")
    (count,) = struct.unpack_from(order + "H", buf, offset)
    end = offset + 2 + 12 * count
    if end > len(buf):
        raise ValueError("a directory running past the block")
    return [offset + 2 + 12 * i for i in range(count)], end


def _upright_exif(exif: bytes, size: tuple[int, int]) -> bytes | None:
    """``exif`` (a TIFF block) made true of the written image: Orientation 1, since the
    decoder turned the pixels upright already (kept, a portrait photo was turned a second
    time); the pixel dimensions of ``size`` ``(W, H)``; and no thumbnail (IFD1), a small copy
    of the unprocessed picture that viewers would turn by the old orientation.

    Edited in place (no offset moves). None when its structure cannot be read: copied
    unedited, its orientation could turn the picture again.
    """
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None or len(exif) < 8:
        return None
    buf = bytearray(exif)
    try:
        if struct.unpack_from(order + "H", buf, 2)[0] != 42:
            return None
        entries, link = _ifd_entries(buf, order, struct.unpack_from(order + "I", buf, 4)[0])
        sub_ifd = None
        for pos in entries:
            tag, kind, count = struct.unpack_from(order + "HHI", buf, pos)
            if tag == _TIFF_ORIENTATION:
                if kind != _TIFF_SHORT or count != 1:
                    return None
                struct.pack_into(order + "H", buf, pos + 8, 1)
            elif tag == _TIFF_EXIF_IFD and kind in (_TIFF_LONG, _TIFF_IFD) and count == 1:
                sub_ifd = struct.unpack_from(order + "I", buf, pos + 8)[0]
        if link + 4 <= len(buf):
            struct.pack_into(order + "I", buf, link, 0)
        if sub_ifd is not None:
            for pos in _ifd_entries(buf, order, sub_ifd)[0]:
                tag, kind, count = struct.unpack_from(order + "HHI", buf, pos)
                if tag not in (_EXIF_PIXEL_X, _EXIF_PIXEL_Y) or count != 1:
                    continue
                value = size[0] if tag == _EXIF_PIXEL_X else size[1]
                if kind == _TIFF_LONG:
                    struct.pack_into(order + "I", buf, pos + 8, value)
                elif kind == _TIFF_SHORT and value <= 0xFFFF:
                    struct.pack_into(order + "H", buf, pos + 8, value)
    except (struct.error, ValueError):
        return None
    return bytes(buf)


def _exif_orientation(exif: bytes | None) -> int | None:
    """The Orientation tag of the TIFF block ``exif``; None without one (or a block that
    cannot be read)."""
    order = {b"II": "<", b"MM": ">"}.get((exif or b"")[:2])
    if exif is None or order is None or len(exif) < 8:
        return None
    try:
        entries, _ = _ifd_entries(exif, order, struct.unpack_from(order + "I", exif, 4)[0])
        for pos in entries:
            tag, kind, count = struct.unpack_from(order + "HHI", exif, pos)
            if tag == _TIFF_ORIENTATION and kind == _TIFF_SHORT and count == 1:
                return struct.unpack_from(order + "H", exif, pos + 8)[0]
    except (struct.error, ValueError):
        return None
    return None


_XMP_TIFF_NS, _XMP_EXIF_NS = b"http://ns.adobe.com/tiff/1.0/", b"http://ns.adobe.com/exif/1.0/"
_XMP_BASIC_NS = b"http://ns.adobe.com/xap/1.0/"
_RDF_NS = b"http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XML_NAME = rb"[A-Za-z_][\w.:-]*"
_XML_VALUE = rb"(?:\"[^\"]*\"|'[^']*')"
_XML_ATTRS = rb"((?:\s+" + _XML_NAME + rb"\s*=\s*" + _XML_VALUE + rb")*)"
_XML_ATTR = re.compile(rb"(\s+)(" + _XML_NAME + rb")(\s*=\s*)(" + _XML_VALUE + rb")")
#: A start tag, its attributes walked whole (a ``>`` or a property's name inside a quoted
#: value is text), and where the element holds text only, that text and its end tag.
_XML_START = re.compile(
    rb"<(" + _XML_NAME + rb")" + _XML_ATTRS + rb"(\s*/?)>(?:([^<]*)(</\1\s*>))?"
)
#: Larger than any pixel dimension: sized with it, an XMP packet is as long as it can get.
_WIDEST_SIZE = (999_999_999, 999_999_999)


def _xmp_prefixes(xmp: bytes, namespace: bytes) -> list[bytes]:
    """The prefixes ``xmp`` binds to ``namespace`` (``tiff`` for the TIFF one, usually)."""
    pattern = rb"xmlns:([A-Za-z_][\w.-]*)\s*=\s*[\"']" + re.escape(namespace) + rb"[\"']"
    return list(dict.fromkeys(re.findall(pattern, xmp)))


def _xmp_set(xmp: bytes, values: dict[bytes, bytes]) -> bytes:
    """``xmp`` with each property named in ``values`` (``{b"tiff:Orientation": b"1"}``) set
    where it is given, in XMP's forms: an attribute (``tiff:Orientation="6"``), an element
    (``<tiff:Orientation>6</tiff:Orientation>``), or either inside a qualified value's
    ``rdf:value``. Only start tags and element text are edited, never a caption or another
    attribute's value that quotes a property."""

    def start_tag(m: re.Match[bytes]) -> bytes:
        name, attrs, close, text, end = m.groups()

        def attr(a: re.Match[bytes]) -> bytes:
            if a.group(2) not in values:
                return a.group(0)
            quote = a.group(4)[:1]
            return a.group(1) + a.group(2) + a.group(3) + quote + values[a.group(2)] + quote

        head = b"<" + name + _XML_ATTR.sub(attr, attrs) + close + b">"
        if text is None:
            return head
        return head + (values.get(name, text)) + end

    return _XML_START.sub(start_tag, xmp)


def _xmp_set_qualified(xmp: bytes, values: dict[bytes, bytes]) -> bytes:
    """``xmp`` with each property of ``values`` given as a qualified value (its content in an
    ``rdf:value``, ``rdf:parseType="Resource"`` or a nested ``rdf:Description``) set there."""
    rdf = _xmp_prefixes(xmp, _RDF_NS)
    for name, value in values.items():
        inner = {p + b":value": value for p in rdf}
        tag = re.escape(name)
        xmp = re.sub(
            rb"(<" + tag + _XML_ATTRS + rb"\s*>)(.*?)(</" + tag + rb"\s*>)",
            lambda m, inner=inner: m.group(1) + _xmp_set(m.group(3), inner) + m.group(4),
            xmp,
            flags=re.S,
        )
    return xmp


def _without_padding(xmp: bytes) -> bytes:
    """``xmp`` without its padding (the whitespace before its closing ``<?xpacket end``,
    room for in-place edits)."""
    head, end, tail = xmp.rpartition(b"<?xpacket end")
    return head.rstrip() + b"\n" + end + tail if end else xmp


def _upright_xmp(xmp: bytes, size: tuple[int, int], *, turned: bool) -> bytes | None:
    """``xmp`` (an XMP packet) made true of the written image, as :func:`_upright_exif`
    makes the EXIF block: its TIFF orientation 1 where the decoder has ``turned`` the
    pixels upright by the EXIF one (an XMP orientation alone is not applied by the decoder,
    and stays, so a viewer shows the copy as it showed the original); its pixel dimensions
    those of ``size`` ``(W, H)``; and no ``xmp:Thumbnails``, small copies of the unprocessed
    picture.

    None when it is not UTF-8 text (XMP's usual encoding): it could not be edited, and
    copied as it is, its orientation could turn the picture a second time.
    """
    try:
        xmp.decode("utf-8")
    except UnicodeDecodeError:
        return None
    width, height = (str(v).encode() for v in size)
    values: dict[bytes, bytes] = {}
    for prefix in _xmp_prefixes(xmp, _XMP_TIFF_NS):
        if turned:
            values[prefix + b":Orientation"] = b"1"
        values[prefix + b":ImageWidth"] = width
        values[prefix + b":ImageLength"] = height
    for prefix in _xmp_prefixes(xmp, _XMP_EXIF_NS):
        values[prefix + b":PixelXDimension"] = width
        values[prefix + b":PixelYDimension"] = height
    if values:
        xmp = _xmp_set_qualified(_xmp_set(xmp, values), values)
    for prefix in _xmp_prefixes(xmp, _XMP_BASIC_NS):
        tag = re.escape(prefix + b":Thumbnails")
        xmp = re.sub(rb"<" + tag + _XML_ATTRS + rb"\s*/>", b"", xmp)
        xmp = re.sub(
            rb"<" + tag + _XML_ATTRS + rb"\s*>.*?</" + tag + rb"\s*>", b"", xmp, flags=re.S
        )
    return xmp


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _jpeg_with_metadata(
    data: bytes, exif: bytes | None, icc: bytes | None, xmp: bytes | None = None
) -> bytes:
    """The JPEG ``data`` (SOI, then OpenCV's JFIF APP0) with an APP1 Exif segment, an APP1
    XMP segment and the ICC profile's APP2 segments after its APP0, where other writers put
    them."""
    extra = b""
    if exif is not None:
        extra += _jpeg_segment(0xE1, _JPEG_EXIF_HEADER + exif)
    if xmp is not None:
        extra += _jpeg_segment(0xE1, XMP_JPEG_HEADER + xmp)
    if icc is not None:
        chunks = [icc[i : i + _JPEG_ICC_CHUNK] for i in range(0, len(icc), _JPEG_ICC_CHUNK)]
        for n, chunk in enumerate(chunks, 1):
            payload = _JPEG_ICC_HEADER + bytes([n, len(chunks)]) + chunk
            extra += _jpeg_segment(0xE2, payload)
    at = 2
    if data[2:4] == b"\xff\xe0":  # after the JFIF header: it must come first
        at = 4 + int.from_bytes(data[4:6], "big")
    return data[:at] + extra + data[at:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")


def _png_with_metadata(
    data: bytes,
    exif: bytes | None,
    icc: bytes | None,
    xmp: bytes | None = None,
    colour: Sequence[tuple[bytes, bytes]] = (),
    text: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """The PNG ``data`` with the ``colour`` chunks (``(type, data)``: gAMA, cHRM, sRGB, cICP),
    iCCP, eXIf, XMP's iTXt and the ``text`` chunks (``(type, data)``: tEXt, zTXt, iTXt)
    after its IHDR (the colour chunks and the profile must come before the image data)."""
    at = 8 + 8 + int.from_bytes(data[8:12], "big") + 4  # past the signature and IHDR
    extra = b"".join(_png_chunk(kind, payload) for kind, payload in colour)
    if icc is not None:
        extra += _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc, 9))
    if exif is not None:
        extra += _png_chunk(b"eXIf", exif)
    if xmp is not None:
        # Uncompressed, no language: as the XMP specification (part 3) asks of PNG writers.
        extra += _png_chunk(b"iTXt", XMP_PNG_KEYWORD + b"\0\0\0\0\0" + xmp)
    extra += b"".join(_png_chunk(kind, payload) for kind, payload in text)
    return data[:at] + extra + data[at:]


class LostMetadata(NamedTuple):
    """What of an image's metadata an output goes without, and why (:func:`metadata_lost`)."""

    #: ``"the EXIF data"``, ``"the XMP data"``, ``"the XMP data's extension"`` or ``"the
    #: colour profile"``.
    what: str
    #: Why, in words that follow it in parentheses: ``"only .jfif/.jpe/.jpeg/.jpg/.png
    #: outputs keep them"``, ``"it is a grey profile, not an RGB one, and the output is RGB"``.
    why: str


_EXIF, _PROFILE, _XMP = "the EXIF data", "the colour profile", "the XMP data"
#: A PNG's colour chunks (gAMA, cHRM, cICP) that say other than sRGB: a JPEG has no place
#: for them, and without them its viewer takes the values for sRGB.
_PNG_COLOUR = "the PNG gamma and colour space"
_XMP_EXTENSION = "the XMP data's extension"
#: A PNG's text chunks: a JPEG has a comment but no place for their keywords.
_PNG_TEXT = "the PNG text"
#: The colour spaces of ICC profiles that name their own kind (ICC.1 header, bytes 16-20).
_ICC_SPACES = {b"GRAY": "a grey", b"CMYK": "a CMYK", b"Lab ": "a Lab", b"XYZ ": "an XYZ"}


def _icc_not_rgb(icc: bytes) -> str | None:
    """Why ``icc`` cannot go with an RGB image: it describes another colour space (a grey or
    CMYK photo's profile; colour-managed viewers failed on the copy, and libpng warned "Gray
    color space not permitted on RGB PNG"); None for an RGB profile."""
    space = icc[16:20]
    if space == b"RGB ":
        return None
    kind = _ICC_SPACES.get(space)
    if kind is None and len(space) == 4 and space.strip().isalnum() and space.isascii():
        kind = f"a {space.decode().strip()}"
    if kind is None:
        return "it does not say it is an RGB profile, and the output is RGB"
    return f"it is {kind} profile, not an RGB one, and the output is RGB"


class _Embedded(NamedTuple):
    exif: bytes | None
    icc: bytes | None
    xmp: bytes | None
    lost: list[LostMetadata]
    png_colour: tuple[tuple[bytes, bytes], ...] = ()
    png_text: tuple[tuple[bytes, bytes], ...] = ()


def _metadata_to_write(
    metadata: ImageMetadata | None, ext: str, size: tuple[int, int]
) -> _Embedded:
    """The EXIF block, ICC profile and XMP packet as :func:`write_image` embeds them in a
    ``ext`` file of ``size`` (None for what it cannot), and what it cannot, why."""
    if not metadata:
        return _Embedded(None, None, None, [])
    lost: list[LostMetadata] = []
    jpeg = ext in _JPEG_EXTENSIONS
    colour = metadata.png_colour if ext == ".png" else ()
    colour_lost = []
    if metadata.png_colour and not colour and not png_colour_is_srgb(metadata.png_colour):
        # Where the file holds a profile, viewers take it instead (and a JPEG keeps it), but
        # not over a cICP chunk, which outranks it.
        cicp = any(kind == b"cICP" for kind, _ in metadata.png_colour)
        kept = metadata.icc is not None and jpeg and _icc_not_rgb(metadata.icc) is None
        if cicp or not kept:
            colour_lost.append(LostMetadata(_PNG_COLOUR, "only a .png output keeps them"))
    text = metadata.png_text if ext == ".png" else ()
    if metadata.png_text and not text:
        # A Comment, Description or Author was dropped without a word.
        keywords = dict.fromkeys(data.partition(b"\0")[0] for _, data in metadata.png_text)
        names = [k.decode("latin-1") for k in keywords]
        named = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        colour_lost.append(LostMetadata(f"{_PNG_TEXT} ({named})", "only a .png output keeps it"))
    if ext not in METADATA_EXTENSIONS:
        why = f"only {'/'.join(sorted(METADATA_EXTENSIONS))} outputs keep them"
        if metadata.exif is not None:
            lost.append(LostMetadata(_EXIF, why))
        if metadata.xmp is not None:
            lost.append(LostMetadata(_XMP, why))
        if metadata.icc is not None:
            lost.append(LostMetadata(_PROFILE, why))
        return _Embedded(None, None, None, lost + colour_lost)
    exif = None if metadata.exif is None else _upright_exif(metadata.exif, size)
    if metadata.exif is not None and exif is None:
        why = (
            "its structure cannot be read, and copied as it is, its orientation could turn "
            "the picture a second time"
        )
        lost.append(LostMetadata(_EXIF, why))
    elif exif is not None and jpeg and len(_JPEG_EXIF_HEADER) + len(exif) > _JPEG_SEGMENT_MAX:
        # A PNG's eXIf may be larger than a JPEG segment takes.
        why = f"it is {len(exif) // 1024} KB, more than the 64 KB a JPEG holds"
        exif = None
        lost.append(LostMetadata(_EXIF, f"{why}; a .png output keeps it"))
    xmp = None
    if metadata.xmp is not None:
        turned = _exif_orientation(metadata.exif) not in (None, 1)
        xmp = _upright_xmp(metadata.xmp, size, turned=turned)
        if xmp is None:
            why = (
                "it is not UTF-8 text, and copied as it is, its orientation could turn the "
                "picture a second time"
            )
            lost.append(LostMetadata(_XMP, why))
        elif jpeg:
            # Decided on the packet at its longest (the widest dimensions): the note, made
            # before the image's size is known, and the write then agree.
            longest = _upright_xmp(metadata.xmp, _WIDEST_SIZE, turned=turned) or b""
            if len(XMP_JPEG_HEADER) + len(longest) > _JPEG_SEGMENT_MAX:
                xmp, longest = _without_padding(xmp), _without_padding(longest)
            if len(XMP_JPEG_HEADER) + len(longest) > _JPEG_SEGMENT_MAX:
                kb = -(-(len(XMP_JPEG_HEADER) + len(longest)) // 1024)  # rounded up: over 64
                why = f"it is {kb} KB, more than the 64 KB a JPEG holds"
                xmp = None
                lost.append(LostMetadata(_XMP, f"{why}; a .png output keeps it"))
        if xmp is not None and metadata.xmp_extended:
            # Its main packet says what the extension held (xmpNote:HasExtendedXMP): an
            # editor's history or a depth map, read only with the extension's segments.
            why = "SharpCam copies only the main XMP packet of a JPEG"
            lost.append(LostMetadata(_XMP_EXTENSION, why))
    icc = metadata.icc
    if icc is not None:
        not_rgb = _icc_not_rgb(icc)
        if not_rgb is not None:
            icc = None
            lost.append(LostMetadata(_PROFILE, not_rgb))
        elif jpeg and len(icc) > 255 * _JPEG_ICC_CHUNK:
            icc = None
            why = "it is larger than the 16 MB a JPEG holds; a .png output keeps it"
            lost.append(LostMetadata(_PROFILE, why))
    return _Embedded(exif, icc, xmp, lost + colour_lost, colour, text)


def metadata_lost(
    metadata: ImageMetadata | None, target: str | os.PathLike[str]
) -> list[LostMetadata]:
    """What of ``metadata`` :func:`write_image` cannot keep in ``target``, and why: its format
    holds none, the EXIF block cannot be read to be put upright or is too large for a JPEG,
    the colour profile is not an RGB one (the output is RGB)."""
    # The size only fills the pixel dimensions in: what is kept does not depend on it.
    return _metadata_to_write(metadata, Path(target).suffix.lower(), (1, 1)).lost


def image_format_problem(ext: str) -> str | None:
    """Why no frame can be written as an ``ext`` image though it names one (``.pbm``: 1-bit
    frames only; GIF: 256 colours; HEIF, which is read only), else None."""
    if ext.lower() == ".pbm":
        return "a .pbm holds black and white only; give .pgm for grey or .png"
    if ext.lower() == ".gif":
        # OpenCV would write one, in 256 colours: banding and dither where it sharpened.
        return "SharpCam reads .gif images but does not write them (256 colours); give .png"
    if ext.lower() in HEIF_EXTENSIONS:
        return (
            f"SharpCam reads {ext.lower()} photos but cannot write them; give .jpg (it keeps "
            "the date, place and colour profile) or .png"
        )
    return None


def earlier_frame(
    folder: str | os.PathLike[str], *, prefix: str = "frame_", ext: str = ".png"
) -> Path | None:
    """The first frame an earlier run left in ``folder`` under the names an
    :class:`ImageSink` writes there (``frame_000123.png``), None where there is none (or no
    such folder). Numbering starts at 0 again: a shorter new run would overwrite the start of
    an earlier one and leave its tail, one sequence that mixes two recordings."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    # Only names a sink writes: `frame_4k_reference.png` is not one.
    own = re.compile(rf"{re.escape(prefix)}[0-9]{{6,}}{re.escape(ext)}", re.IGNORECASE)
    return next((p for p in sorted(folder.iterdir()) if own.fullmatch(p.name)), None)


def writable_image_extensions() -> list[str]:
    """The image extensions a frame can be written as, sorted (not HEIF's, nor ``.pbm``, nor
    those this OpenCV has no writer for: ``.exr`` was offered, then refused)."""
    return [
        ext
        for ext in sorted(IMAGE_EXTENSIONS)
        if image_format_problem(ext) is None and cv2.haveImageWriter("x" + ENCODE_AS.get(ext, ext))
    ]


def output_image_name(name: str) -> str:
    """The name a folder run gives the result of the image ``name``: the same, but for the
    formats it does not write: ``.jpg`` for an HEIF photo (``IMG_0001.HEIC`` ->
    ``IMG_0001.jpg``), ``.png`` for a GIF (``logo.gif`` -> ``logo.png``)."""
    stem, dot, ext = name.rpartition(".")
    if dot and stem and "." + ext.lower() in HEIF_EXTENSIONS:
        return stem + ".jpg"
    if dot and stem and ext.lower() == "gif":
        return stem + ".png"
    return name


def write_image(
    target: str | os.PathLike[str], rgb: np.ndarray, *, metadata: ImageMetadata | None = None
) -> Path:
    """Write ``rgb`` ``(H, W, 3) uint8 RGB`` to ``target`` in the format of its extension.

    The file is written beside the target under a new hidden name (:func:`_create_partial`)
    and renamed when complete, so a failed write (disk full) never leaves a truncated image
    under the target's name, nor destroys an earlier image there. Raises :class:`SinkError`
    naming the file.

    ``metadata`` (the source image's, :func:`engine.sources.read_image_metadata`) goes into a
    JPEG or PNG: the EXIF data with its Orientation reset to 1 (the pixels are upright) and
    the ICC profile when it is an RGB one (the pixels are RGB); other formats, an EXIF block
    that cannot be read, and a grey or CMYK photo's profile go without (:func:`metadata_lost`
    says what, and why).
    """
    target = Path(target)
    # Only its own working name beside it: a frame in a folder as long as an output may be
    # was refused at its first write, after the run had started (exit 1).
    check_name_fits(target, room=_IMAGE_ROOM)
    ext = target.suffix.lower()
    problem = image_format_problem(ext)
    if problem:
        raise SinkError(f"cannot write {target}: {problem}")
    code = cv2.COLOR_RGB2GRAY if ext in _GREY_ONLY else cv2.COLOR_RGB2BGR
    params: list[int] = []
    if ext == ".webp" and not (metadata is not None and metadata.lossless):
        # OpenCV writes WebP lossless unless given a quality: a 7 KB lossy photo came out
        # as 55 KB. Lossy at JPEG's quality (OpenCV's 95) where the input was lossy too.
        params = [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY]
    try:
        ok, data = cv2.imencode(ENCODE_AS.get(ext, ext), cv2.cvtColor(rgb, code), params)
    except cv2.error as exc:  # no encoder for the extension in this OpenCV build (.exr)
        raise SinkError(
            f"cannot encode {target} as {ext}: {getattr(exc, 'err', None) or exc}"
        ) from exc
    if not ok:
        raise SinkError(f"cannot encode {target} as {ext}")
    exif, icc, xmp, _, colour, text = _metadata_to_write(
        metadata, ext, (rgb.shape[1], rgb.shape[0])
    )
    if colour or text:  # a PNG
        data = _png_with_metadata(data.tobytes(), exif, icc, xmp, colour, text)
    elif exif is not None or icc is not None or xmp is not None:
        embed = _jpeg_with_metadata if ext in _JPEG_EXTENSIONS else _png_with_metadata
        data = embed(data.tobytes(), exif, icc, xmp)
    # Not imwrite: non-ASCII paths on Windows. Not ndarray.tofile either: a full disk was
    # "N requested and M written" with no errno, which callers could not tell apart.
    return write_file(target, data)


def write_file(target: str | os.PathLike[str], data: bytes | np.ndarray) -> Path:
    """Write ``data`` to ``target`` whole or not at all: beside it under a new hidden name
    (:func:`_create_partial`), renamed over it when complete, so a failed write (disk full)
    neither leaves a truncated file under its name nor destroys the one there. A link named
    as ``target`` is written through, to the file it points at, as a copy or a shell
    redirect writes (the link stays). Returns ``target``; raises :class:`SinkError` naming
    it."""
    named = Path(target)
    path = named
    if os.path.islink(named) and os.path.exists(named):
        path = Path(os.path.realpath(named))
    partial: Path | None = None
    try:
        partial, file = _create_partial(path)
        with file:
            file.write(data)
        os.replace(partial, path)
    except OSError as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise SinkError(f"cannot write {named}: {exc.strerror or exc}") from exc
    return named


class ImageSink(_SinkBase):
    """Image files: numbered ``frame_000000.png`` ... in a folder, or one image path.

    Args:
        path: a folder (created) for numbered files, or a file with an image extension, which
            holds the latest frame written (one frame for a still image in, one out).
        size: fit each frame to ``(W, H)``, letterboxed (never stretched); ``None`` keeps each
            frame's size.
        ext: extension of numbered files.
        prefix: file name prefix of numbered files.
        metadata: EXIF data and ICC profile written into every JPEG or PNG file (a still
            image's own, processed; see :func:`write_image`).
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        size: tuple[int, int] | None = None,
        ext: str = ".png",
        prefix: str = "frame_",
        metadata: ImageMetadata | None = None,
    ):
        # A trailing slash says a folder, which Path() forgets.
        folder_named = os.fspath(path).endswith(("/", os.sep))
        self.path = Path(path)
        check_name_fits(self.path)  # first: is_dir() raises on a name too long
        self.size = None if size is None else _check_size(size, "an image sink")
        self.single = (
            self.path.suffix.lower() in IMAGE_EXTENSIONS
            and not self.path.is_dir()
            and not folder_named
        )
        self.ext = (self.path.suffix if self.single else ext).lower()
        if not self.ext.startswith("."):
            self.ext = "." + self.ext
        self.prefix = prefix
        self.metadata = metadata
        folder = self.path.parent if self.single else self.path
        if not self.single:
            earlier = earlier_frame(folder, prefix=prefix, ext=self.ext)
            if earlier is not None:
                raise SinkError(
                    f"folder {folder} already holds frames ({earlier.name}): "
                    "give an empty or new folder"
                )
        if folder.exists() and not folder.is_dir():
            # mkdir said "[Errno 17] File exists: 'notes'" of a file named like a folder. (A
            # broken link is make_folder's to name: it was called a file.)
            # A photo's output read "cannot write frames to ...".
            what = f"image {self.path.name}" if self.single else "frames"
            raise SinkError(f"cannot write {what} to {folder}: it is a file, not a folder")
        make_folder(folder)
        try:
            # A folder it may not write in failed only at the first frame, once the model
            # had run (a video output and a folder run are refused before it loads).
            with tempfile.TemporaryFile(dir=folder, prefix=".sharpcam-"):
                pass
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {_write_problem(exc, folder)}") from exc
        self.frames_written = 0
        self._closed = False

    def target(self, n: int) -> Path:
        """Where the ``n``-th written frame goes."""
        return self.path if self.single else self.path / f"{self.prefix}{n:06d}{self.ext}"

    def write(self, frame: Frame) -> None:
        if self._closed:
            raise SinkError(f"image sink {self.path} is closed")
        check_rgb8(frame.image, self.describe() if self.single else f"images {self.path.name}")
        # Letterboxed, as in a video file: stretched, a portrait photo after a landscape one
        # (or a camera back at 4:3 after a reconnect) came out squashed.
        img = frame.image if self.size is None else fit_to(frame.image, self.size)
        write_image(self.target(self.frames_written), img, metadata=self.metadata)
        self.frames_written += 1

    def close(self) -> None:
        self._closed = True

    def describe(self) -> str:
        # One photo out was "images x.jpg".
        if self.single:
            return f"image {self.path.name}"
        return f"images {self.path}/{self.prefix}NNNNNN{self.ext}"


class CallbackSink(_SinkBase):
    """Calls ``callback(frame)`` for every frame (a preview, a recorder in tests).

    The frame's array may be reused after the call returns: copy it to keep it.
    """

    def __init__(self, *, callback: Callable[[Frame], Any], size: tuple[int, int] | None = None):
        if not callable(callback):
            raise TypeError(f"expected a callable, got {type(callback).__name__}")
        self.callback = callback
        self.size = None if size is None else _check_size(size, "a callback sink")
        self._resized: np.ndarray | None = None
        self._closed = False

    def write(self, frame: Frame) -> None:
        if self._closed:
            return
        if self.size is not None and frame.size != self.size:
            w, h = self.size
            if self._resized is None:
                self._resized = np.empty((h, w, 3), np.uint8)
            frame = Frame(
                resize_to(frame.image, self.size, out=self._resized), frame.index, frame.t_capture
            )
        self.callback(frame)

    def close(self) -> None:
        self._closed = True

    def describe(self) -> str:
        return f"callback {getattr(self.callback, '__name__', type(self.callback).__name__)}"


# --------------------------------------------------------------------------- registry

#: A sink factory: ``factory(spec, *, size, fps, **options) -> FrameSink``.
SinkFactory = Callable[..., FrameSink]


def _virtual_factory(spec: Any, *, size: Any, fps: float, **options: Any) -> FrameSink:
    from engine.virtualcam import VirtualCameraSink

    text = str(spec)
    if is_virtual_spec(text) and ":" in text and "device" not in options:
        options["device"] = text.split(":", 1)[1] or None
    return VirtualCameraSink(size=_check_size(size, "a virtual camera"), fps=fps, **options)


def _video_factory(spec: Any, *, size: Any, fps: float, **options: Any) -> FrameSink:
    return VideoFileSink(path=spec, size=size, fps=fps, **options)


def _images_factory(spec: Any, *, size: Any, fps: float, **options: Any) -> FrameSink:
    del fps
    return ImageSink(path=spec, size=size, **options)


def _callback_factory(spec: Any, *, size: Any, fps: float, **options: Any) -> FrameSink:
    del fps
    return CallbackSink(callback=spec, size=size, **options)


#: kind -> factory; :func:`open_sink` picks the kind from the spec unless told.
SINKS: dict[str, SinkFactory] = {
    "virtual": _virtual_factory,
    "video": _video_factory,
    "images": _images_factory,
    "callback": _callback_factory,
}


def register_sink(kind: str, factory: SinkFactory) -> None:
    """Add or replace a sink kind (``open_sink(spec, kind=kind, ...)`` then opens it)."""
    SINKS[kind] = factory


def is_virtual_spec(spec: object) -> bool:
    """Whether ``spec`` names the virtual camera: ``virtual`` or ``virtual:DEVICE``, any case.

    Any case because ``--output VIRTUAL`` used to write a folder named VIRTUAL; only the keyword
    folds, the device after the colon is passed on as typed.
    """
    if not isinstance(spec, str):
        return False
    head, sep, _ = spec.partition(":")
    return head.lower() == "virtual" and (bool(sep) or spec == head)


def sink_kind(spec: str | os.PathLike[str] | Callable[[Frame], Any]) -> str:
    """The kind :func:`open_sink` would use: virtual, video, images or callback."""
    if callable(spec):
        return "callback"
    text = os.fspath(spec)
    if is_virtual_spec(text):
        return "virtual"
    p = Path(text)
    ext = p.suffix.lower()
    folder = text.endswith(("/", os.sep))
    if folder and (ext in VIDEO_CODECS or ext in IMAGE_EXTENSIONS) and not p.is_dir():
        # Path() drops the slash: `shots.png/` wrote every frame over one file shots.png, and
        # `clip.mp4/` a video, where the slash said a folder.
        raise SinkError(
            f"{text} ends with a slash (a folder) but is named like a {ext} file: give "
            f"{text.rstrip('/' + os.sep)} for a file, or a folder name without {ext}"
        )
    if ext in VIDEO_CODECS and not folder:
        return "video"
    if ext in IMAGE_EXTENSIONS or p.is_dir() or folder or not ext:
        return "images"
    raise SinkError(
        f"cannot tell what to write to {text}: give a video ({', '.join(VIDEO_CODECS)}), "
        f"an image ({', '.join(writable_image_extensions())}), a folder, or 'virtual'"
    )


def open_sink(
    spec: str | os.PathLike[str] | Callable[[Frame], Any],
    *,
    size: tuple[int, int] | None,
    fps: float = 30.0,
    kind: str | None = None,
    **options: Any,
) -> FrameSink:
    """Open a sink from a user's spec.

    Args:
        spec: ``"virtual"`` (or ``"virtual:DEVICE"``; the keyword in any case), a video path
            (.mp4 -> H.264, .avi -> MJPG: :data:`VIDEO_CODECS`), an image path, a folder
            (numbered PNGs), or a callable.
        size: ``(W, H)`` of the output (required for video and the virtual camera; images and
            callbacks keep each frame's size when ``None``).
        fps: frame rate written into a video / announced to the virtual camera.
        kind: force a kind (``virtual``, ``video``, ``images``, ``callback`` or registered).
        **options: passed to the sink (``device``, ``backend``, ``fmt`` for the virtual
            camera; ``fourcc``, ``timed`` for video; ``ext``, ``prefix``, ``metadata`` for
            images).

    Raises:
        engine.virtualcam.VirtualCameraUnavailable: no virtual camera (message has guidance).
        SinkError: the file cannot be written (message names it).
    """
    kind = kind or sink_kind(spec)
    try:
        factory = SINKS[kind]
    except KeyError:
        raise ValueError(f"unknown sink kind {kind!r}; known: {', '.join(SINKS)}") from None
    return factory(spec, size=size, fps=fps, **options)
