"""Frame sources: a camera, a video file, a still image or a folder of images.

Every source hands out :class:`engine.frames.Frame` objects (``(H, W, 3) uint8 RGB``) from
``read()`` until it returns ``None`` (end of stream). Live sources deliver in real time: a
camera at its own rate, a file paced against the wall clock at its FPS. Offline sources deliver
as fast as they are read. The pipeline calls ``read()`` from its capture thread only;
``interrupt()`` may be called from any thread and makes a pending or later ``read()`` return
``None`` promptly (pacing, retry and reconnect waits are ``Event.wait`` calls, not sleeps).

>>> src = open_source("clip.mp4", live=False)            # doctest: +SKIP
>>> with src:                                            # doctest: +SKIP
...     while (frame := src.read()) is not None: ...
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import os
import re
import stat
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from engine.frames import (
    Frame,
    fit_to,
    image_size,
    opencv_name,
    resize_to,
    to_rgb8,
)
from engine.heif import (
    HEIF_EXTENSIONS,
    HeifError,
    decode_heif,
    heif_metadata,
    is_avif,
    is_heif,
)
from engine.mp4 import walk_top_level_boxes

__all__ = [
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "CameraInfo",
    "CameraNotFoundError",
    "CameraSource",
    "FrameSource",
    "ImageFolderSource",
    "ImageMetadata",
    "ImageSource",
    "SourceError",
    "VideoFileSource",
    "camera_device_path",
    "gif_transparency",
    "image_format",
    "is_animated_image",
    "is_camera_number",
    "list_cameras",
    "open_source",
    "read_image",
    "read_image_metadata",
    "register_source",
    "video_has_audio",
    "video_is_mirrored",
]

log = logging.getLogger(__name__)

#: Still images (read by content, so any of these OpenCV decodes). A still named otherwise
#: (`.jfif` from a browser, `.jp2`, `.avif`) was taken for a video: refused as "output must be
#: a video", read without its EXIF orientation, and left out of folders without a word.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".avif",
     ".jp2", ".ppm", ".pgm", ".pbm", ".pnm", ".sr", ".ras", ".exr", ".gif"}
) | HEIF_EXTENSIONS  # fmt: skip
DEFAULT_FPS = 30.0
#: The frame rates a source honours; OpenCV reports 0, nan or absurd rates for streams that do
#: not declare one, so anything outside is treated as "not given" (a video file's own rate may
#: be slower, down to _MIN_FILE_FPS).
FPS_RANGE = (0.5, 1000.0)


class SourceError(RuntimeError):
    """A source cannot be opened or read; the message names the file or device."""


class CameraNotFoundError(SourceError):
    """The requested camera does not exist. ``available`` lists the cameras that do."""

    def __init__(self, message: str, available: list[CameraInfo]):
        super().__init__(message)
        self.available = available


@runtime_checkable
class FrameSource(Protocol):
    """What the engine needs from a source.

    Attributes:
        size: ``(W, H)`` of the frames (of the first frame where they vary).
        fps: the rate the source delivers at when live (its own rate for files and cameras).
        frame_count: frames the source will deliver, ``None`` when unknown or endless.
        live: True when frames arrive in real time (cameras, paced files).
        reconnects: times a lost device came back (0 for files).
        last_wait_s: seconds the last ``read()`` spent waiting (pacing, camera exposure, a
            camera's failed reads and the pauses between them, reconnect back-off) rather than
            working; the engine subtracts it from capture time.
    """

    size: tuple[int, int]
    fps: float
    frame_count: int | None
    live: bool
    reconnects: int
    last_wait_s: float

    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of the stream or after :meth:`interrupt`.

        Raises :class:`SourceError` when the source fails for good. Every frame has a fresh
        image array (or one nobody writes into): the engine never modifies it.
        """
        ...

    def interrupt(self) -> None:
        """Wake a blocked ``read()`` and make it (and later ones) return ``None``."""
        ...

    def close(self) -> None:
        """Release the device or file; idempotent."""
        ...

    def describe(self) -> str:
        """One human line, e.g. ``"camera 0 · 1280x720 @ 30 fps"``."""
        ...


# --------------------------------------------------------------------------- helpers


class _SourceBase:
    """Shared plumbing: the interrupt event, frame numbering, context manager, idempotent close."""

    size: tuple[int, int]
    fps: float
    frame_count: int | None
    live: bool

    def __init__(self) -> None:
        self._interrupt = threading.Event()
        self._closed = False
        self._next_index = 0
        self.reconnects = 0
        self.last_wait_s = 0.0
        #: Whether :attr:`falling_behind` ever had a warning to give; kept once set.
        self.fell_behind = False
        #: Whether it ever fell behind because its pictures decode too slowly by themselves
        #: (not because the machine was busy with other work): see :meth:`_too_busy`.
        self.fell_behind_decoding = False
        self._decode_s: collections.deque[float] = collections.deque(maxlen=DECODE_SAMPLES)
        self._behind_said: str | None = None  # this stretch's warning (its words are kept)

    @property
    def falling_behind(self) -> str | None:
        """While a live file cannot be read at its own rate (a 4K HEVC clip, a folder of large
        photos on two cores, or a busy machine), the warning that it plays slower than it
        should; None otherwise (and always for offline sources and cameras). Nothing is skipped
        to keep up (see :class:`VideoFileSource`): the virtual camera, and a recording of it,
        are in slow motion.
        """
        pacer: _Pacer | None = getattr(self, "_pacer", None)
        if pacer is None or not pacer.behind():
            return None
        return self._behind_said or self._behind_warning(self._too_busy())

    def _behind_warning(self, busy: tuple[float, float] | None) -> str | None:
        """The warning for a stretch read slower than the rate; ``busy`` (see
        :meth:`_too_busy`): the pictures' typical decoding time and the period, where that
        keeps up by itself."""
        return None  # a repeated still image: nothing plays slower

    def _decoded(self, began: float) -> None:
        """Note the time one picture's decoding took, from ``began`` (``perf_counter``)."""
        self._decode_s.append(time.perf_counter() - began)

    def _too_busy(self) -> tuple[float, float] | None:
        """``(typical decoding time, period)`` in seconds where the recent pictures decode in
        under :data:`DECODE_KEEPS_UP` of a period, so that reading them slower than the rate
        is the machine's doing (other programs, the model at full size, on the same cores);
        None where decoding alone is too slow (or nothing was timed). The median: a picture
        whose thread waited for a core takes many times its own time (a 720p H.264 picture:
        2.5 ms alone, up to 240 ms beside a model and three busy loops on two cores, 11 ms
        typically), which a mean counted against the file."""
        pacer: _Pacer | None = getattr(self, "_pacer", None)
        times = sorted(self._decode_s)  # copied at once: the reader thread appends to it
        if pacer is None or not times:
            return None
        typical = times[len(times) // 2]
        return (typical, pacer.period) if typical < DECODE_KEEPS_UP * pacer.period else None

    def _pace(self, step: float | None = None) -> bool:
        """Wait for the next frame's turn (live sources), ``step`` seconds after the last one's
        (see :meth:`_Pacer.wait`); False when interrupted meanwhile."""
        pacer: _Pacer | None = getattr(self, "_pacer", None)
        if pacer is None:
            return True
        waited = pacer.wait(step)
        if waited is None:
            return False
        self.last_wait_s = waited
        if not pacer.behind():
            self._behind_said = None
        elif self._behind_said is None:
            # Judged once a stretch: the engine's warning, which the window shows once for each
            # new text, keeps its words while the stretch lasts.
            busy = self._too_busy()
            self._behind_said = self._behind_warning(busy)
            if self._behind_said is not None:
                self.fell_behind = True
                self.fell_behind_decoding |= busy is None
        return True

    def _emit(self, image: np.ndarray, t_capture: float) -> Frame:
        frame = Frame(image=image, index=self._next_index, t_capture=t_capture)
        self._next_index += 1
        return frame

    def interrupt(self) -> None:
        self._interrupt.set()

    def close(self) -> None:
        self._interrupt.set()
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # pragma: no cover - overridden where there is something
        pass

    def __enter__(self) -> _SourceBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:  # type: ignore[attr-defined]
            yield frame

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"  # type: ignore[attr-defined]


#: A paced source whose schedule restarted this many times within BEHIND_WINDOW_S is said to
#: fall behind its rate: one stall (the machine busy for a moment) restarts it once, a file
#: decoded at half its rate every few frames, one 8 % slow every few seconds.
BEHIND_RESTARTS = 3
BEHIND_WINDOW_S = 10.0
#: The longest a live video file's picture is held by its own time before the next, in the
#: containers whose clock may jump (MPEG-TS and -PS, FLV: two recordings joined): a longer
#: step is a jump, not a still, and lasts one period, as FFmpeg's own tools take a jump of
#: over 10 s there (``-dts_delta_threshold``). See ``VideoFileSource._step_s``.
MAX_STEP_S = 10.0
#: A picture held longer than this by its own time (a screen recording's still) is sent
#: again at this period meanwhile (the last wait of it up to 1.25 times as long: see
#: ``VideoFileSource.read``): the engine calls a source that sends nothing for 3 s stalled,
#: and a recording cuts a gap to 2 s.
REPEAT_S = 1.0
#: A file whose pictures typically decode in under this share of its frame period keeps its
#: rate by itself: read slower all the same, the machine is too busy (see
#: ``_SourceBase._too_busy``), and "a smaller file" was the wrong advice.
DECODE_KEEPS_UP = 0.75
#: The recent pictures whose decoding times judge that.
DECODE_SAMPLES = 30
#: How much faster than its rate a paced source may go to catch up a short lag (under the
#: pacer's ``max_lag_s``): 4/3 keeps every interval at 3/4 of the frame period or more.
CATCH_UP = 4.0 / 3.0


class _Pacer:
    """Releases frames against the wall clock, one period apart or each after its own step
    (a variable-rate file's picture times); waits are interruptible.

    Falling behind (a slow disk, a stalled machine) does not cause a burst of catch-up frames:
    after more than ``max_lag_s`` late the schedule restarts from now. Restarting again and
    again (:meth:`behind`) means the frames cannot be produced at the rate: they play slower.
    A lag under ``max_lag_s`` is caught up at most :data:`CATCH_UP` times the rate (each frame
    at least ``1 / CATCH_UP`` of its step after the one before, while no more than half of
    ``max_lag_s`` late): released as soon as they were due, the frames of a 120 ms decoding
    hiccup reached the virtual camera 5 ms apart.
    """

    def __init__(self, fps: float, interrupt: threading.Event, max_lag_s: float = 0.25):
        self.period = 1.0 / fps
        self._interrupt = interrupt
        self._max_lag = max_lag_s
        self._due: float | None = None
        self._released = -math.inf  # when the last frame was released
        self._forgive = False
        self._restarts: collections.deque[float] = collections.deque(maxlen=BEHIND_RESTARTS)

    def resync(self) -> None:
        """Let the next frame be late without counting a restart, and start the schedule again
        from it: a loop's rewind (an FFmpeg decoder started again for a tone-mapped clip:
        0.25-0.33 s) is no frame read late (a 1 s clip rewound three times in 10 s was said to
        play in slow motion), and the frames after it are not sent at once to catch up."""
        self._forgive = True

    def behind(self, now: float | None = None) -> bool:
        """Whether the schedule restarted :data:`BEHIND_RESTARTS` times in the last
        :data:`BEHIND_WINDOW_S` seconds (``now``: ``time.perf_counter()`` by default)."""
        now = time.perf_counter() if now is None else now
        return len(self._restarts) == BEHIND_RESTARTS and now - self._restarts[0] <= (
            BEHIND_WINDOW_S
        )

    def wait(self, step: float | None = None) -> float | None:
        """Block until the next frame is due, ``step`` seconds after the one before (one
        period by default); seconds waited, or None when interrupted."""
        now = time.perf_counter()
        forgive, self._forgive = self._forgive, False
        step = self.period if step is None else step
        if self._due is None:
            self._due = now
        else:
            self._due += step
        delay = self._due - now
        if delay <= 0:
            if forgive:
                self._due = now  # late by the rewind alone: no burst of frames to catch up
            elif -delay > self._max_lag:
                self._due = now
                self._restarts.append(now)
        # Behind by less than max_lag: caught up, but never faster than CATCH_UP times the rate,
        # while that holds the frame at most half of max_lag late. Held later, a file whose
        # decoding keeps up only on average (a slow keyframe every 15 frames, 0.68 of a period
        # a frame in all) fell further behind with each keyframe until it restarted: it
        # played at 0.85 of its speed and was said to be in slow motion.
        held = min(self._released + step / CATCH_UP, self._due + self._max_lag / 2)
        release = max(self._due, held)
        delay = release - now
        if delay > 0:
            if self._interrupt.wait(delay):
                return None
        # When it really went: a wait that overslept (by 4 ms on a busy machine, a timer tick
        # on Windows) let the next frame go at once after it, a burst all the same.
        self._released = time.perf_counter()
        return max(delay, 0.0)


#: The boxes an MP4 or QuickTime file may begin with.
_MP4_TOP_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def _clock_may_jump(path: Path) -> bool:
    """Whether ``path`` is an MPEG-TS (188-, 192- or 204-byte packets, from any byte: a stream
    dumped or cut mid-packet plays from the next), MPEG-PS or FLV file, whose clock may jump
    where two recordings were joined (FFmpeg's demuxers flag them so)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    if head.startswith((b"\0\0\1\xba", b"FLV")):
        return True
    if head[4:8] in _MP4_TOP_BOXES or head.startswith((b"RIFF", _EBML_MAGIC)):
        return False  # raw pictures in it may hold a flat 0x47 grey: "sync bytes"
    # Four sync bytes a packet apart, as FFmpeg's probe looks for them.
    return any(
        all(head[k + i * size] == 0x47 for i in range(4))
        for size in (188, 192, 204)
        for k in range(min(size, len(head) - 3 * size))
    )


def _check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise ValueError(f"expected a positive (W, H) size, got {tuple(size)}")
    return (w, h)


def _check_lost_after(reads: int, seconds: float) -> tuple[int, float]:
    """A camera's ``(lost_after_reads, lost_after_s)``, checked; ValueError names the bad one."""
    if isinstance(reads, bool) or not isinstance(reads, (int, np.integer)) or reads < 1:
        raise ValueError(f"lost_after_reads must be an integer >= 1, got {reads!r}")
    try:
        secs = float(seconds)
    except (TypeError, ValueError):
        secs = math.nan
    if isinstance(seconds, bool) or not (math.isfinite(secs) and secs > 0):
        raise ValueError(f"lost_after_s must be a finite number of seconds > 0, got {seconds!r}")
    return int(reads), secs


def _check_backoff(backoff: tuple[float, float]) -> tuple[float, float]:
    """A camera's reconnect ``(first, longest)`` wait, checked (a wait <= 0 would spin)."""
    try:
        first, longest = (float(v) for v in backoff)
    except (TypeError, ValueError):
        raise ValueError(f"backoff must be (first, longest) seconds, got {backoff!r}") from None
    if not (math.isfinite(longest) and 0 < first <= longest):
        raise ValueError(f"backoff must satisfy 0 < first <= longest seconds, got {backoff!r}")
    return first, longest


def _retry_period(fps: float) -> float:
    """Seconds between retries of a camera's failed read: one frame period, from 5 ms (no spin
    at absurd rates) to 100 ms (a slow camera still gets its retries in promptly)."""
    return min(max(1.0 / fps, 0.005), 0.1)


#: The slowest rate a video file may declare: a slideshow clip (ffmpeg ``-framerate 1/5``) runs
#: below FPS_RANGE, which bounds what a user types; slower still is broken timestamps.
_MIN_FILE_FPS = 1.0 / 60.0


#: Declared video rates above this are checked against the frames' timestamps: a container
#: with a millisecond time base and no declared rate (a browser's MediaRecorder WebM) reports
#: 1000 fps, and a 30 fps recording was played and written 33 times too fast.
_CHECK_FPS_ABOVE = 100.0
_PROBE_FRAMES = 16
# Reads tried past a failed one before a video is taken to have ended: damaged pictures in a
# row (each fails one read) that do not end it.
_DAMAGED_READS = 32


def _first_decodable(cap: Any) -> tuple[np.ndarray | None, bool]:
    """The first picture ``cap`` decodes from where it stands, past up to
    :data:`_DAMAGED_READS` damaged ones (None: none), and whether any were."""
    ok, img = cap.read()
    lost = not ok or img is None
    for _ in range(_DAMAGED_READS if lost else 0):
        # A damaged first picture, as one further on (see VideoFileSource._decode): taken as
        # a file with no picture at all, `process` failed on a clip with one bad packet.
        ok, img = cap.read()
        if ok and img is not None:
            break
    return (img if ok and img is not None else None), lost


def _rate_from_timestamps(path: str) -> float | None:
    """The rate the first frames of a video file are presented at (the mean interval of
    their timestamps), from a capture of its own; None when they carry no usable timestamps."""
    with _quiet_opencv():
        cap = _make_capture(path, cv2.CAP_ANY)
    try:
        stamps: list[float] = []
        while len(stamps) < _PROBE_FRAMES and cap.isOpened() and cap.grab():
            stamps.append(float(cap.get(cv2.CAP_PROP_POS_MSEC)))
    finally:
        cap.release()
    # The mean step, not the median: browsers stamp whole milliseconds (33, 32, 34 ...), and
    # the mean keeps the recording's length where the median's 34 ms stretched it by 3 %.
    steps = [b - a for a, b in itertools.pairwise(stamps) if math.isfinite(b - a) and b > a]
    if len(steps) < 2:
        return None
    return _valid_fps(1000.0 * len(steps) / sum(steps), lowest=_MIN_FILE_FPS)


#: How much of a Matroska file's start its rate is measured over: a 30-minute 2 GB recording
#: listed whole took 2.7 s to show its first picture in the window (an MP4: 0.2 s).
_RATE_SPAN_S = 120.0


def _mean_rate_from_packets(path: str) -> float | None:
    """The mean rate of a video file's pictures over its first :data:`_RATE_SPAN_S`, from
    their packets' times (FFmpeg's listing, nothing decoded: 0.16 s for a 500 MB 4K HEVC
    file, whose first 16 frames took 2.5 s to decode); None without FFmpeg, where it cannot
    tell, or for fewer than three pictures (the one step between two says little, and a
    Matroska writer gives the last picture the declared rate's duration, which is in
    question here)."""
    from engine.remux import RemuxError, find_ffmpeg, picture_times

    ffmpeg = find_ffmpeg()
    try:
        shown = None if ffmpeg is None else picture_times(path, ffmpeg=ffmpeg, first_s=_RATE_SPAN_S)
    except RemuxError:
        return None
    if shown is None or len(shown.times) < 3 or shown.times[-1] <= shown.times[0]:
        return None
    times = shown.times
    return _valid_fps(
        (len(times) - 1) * shown.timescale / (times[-1] - times[0]), lowest=_MIN_FILE_FPS
    )


def _square_pixel_size(cap: Any, size: tuple[int, int]) -> tuple[int, int] | None:
    """The size that shows a video's frames with square pixels, when its pixels are not
    square (DV, DVD, anamorphic HDV declare a sample aspect ratio); None when they are.

    OpenCV hands back the coded grid: shown as it is, a 2:1 file went to the call squashed to
    half its width. The coded width is stretched (the height is kept), or the height when
    OpenCV turned the frames a quarter for the file's rotation."""
    num, den = (float(cap.get(p)) for p in (cv2.CAP_PROP_SAR_NUM, cv2.CAP_PROP_SAR_DEN))
    if not (math.isfinite(num) and math.isfinite(den) and num > 0 and den > 0):
        return None
    ratio = num / den
    if abs(ratio - 1.0) <= 0.01 or not 0.1 <= ratio <= 10.0:
        return None  # square, or not a ratio any camera writes
    w, h = size
    if round(float(cap.get(cv2.CAP_PROP_ORIENTATION_META))) % 180 == 90 and cap.get(
        cv2.CAP_PROP_ORIENTATION_AUTO
    ):
        return w, max(1, round(h * ratio))
    return max(1, round(w * ratio)), h


def _valid_fps(value: float | None, lowest: float = FPS_RANGE[0]) -> float | None:
    """``value`` when it is a usable rate (``lowest`` to FPS_RANGE's top), else None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and lowest <= value <= FPS_RANGE[1] else None


_WEBP_ANIMATION_FLAG = 0x02  # in the VP8X chunk's flags byte
_CHUNK_WALK_LIMIT = 10_000  # a damaged file's chunk lengths could lead anywhere


def _webp_frames(f: Any) -> int:
    """Frames of the WebP open in ``f``: its ANMF chunks (counted up to 2) when its VP8X
    header says it is animated, else 1."""
    head = f.read(21)
    if len(head) < 21 or head[:4] != b"RIFF" or head[8:12] != b"WEBP" or head[12:16] != b"VP8X":
        return 1
    if not head[20] & _WEBP_ANIMATION_FLAG:
        return 1
    pos, frames = 12, 0
    for _ in range(_CHUNK_WALK_LIMIT):
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        if chunk[:4] == b"ANMF":
            frames += 1
            if frames >= 2:
                break
        pos += 8 + (int.from_bytes(chunk[4:], "little") + 1) // 2 * 2  # padded to even
    return max(frames, 1)


def _png_frames(f: Any) -> int:
    """Frames of the PNG open in ``f``, counted up to 2: its fcTL chunks (an APNG's frame
    headers), no more than its acTL chunk announces; 1 without an acTL before the image data.

    Not acTL's count alone: a PNG that announced 2 frames and held none besides its image
    was refused as an image output, then made a video of one frame."""
    if f.read(8) != b"\x89PNG\r\n\x1a\n":
        return 1
    pos, announced, frames, data_seen = 8, 0, 0, False
    for _ in range(_CHUNK_WALK_LIMIT):
        f.seek(pos)
        chunk = f.read(12)
        if len(chunk) < 12 or chunk[4:8] == b"IEND":
            break
        kind = chunk[4:8]
        if kind == b"IDAT":
            if not announced:
                return 1  # an acTL after the image data is not the file's
            data_seen = True
        elif kind == b"acTL" and not data_seen:
            announced = int.from_bytes(chunk[8:12], "big")
        elif kind == b"fcTL":
            frames += 1
            if frames >= 2:
                break
        pos += int.from_bytes(chunk[:4], "big") + 12
    return max(min(frames, announced), 1)


def _gif_blocks(f: Any) -> Iterator[tuple[int, bytes]]:
    """The blocks of the GIF open in ``f``, in order: ``(0x2C, its image descriptor)`` for an
    image and ``(0x21, its label and first data sub-block)`` for an extension; their data is
    skipped, not read or decoded. Ends at the trailer, the file's end or damage; nothing for
    a file that is not a GIF."""
    head = f.read(13)
    if len(head) < 13 or head[:6] not in (b"GIF87a", b"GIF89a"):
        return
    if head[10] & 0x80:  # a global colour table
        f.seek(3 << ((head[10] & 7) + 1), os.SEEK_CUR)
    for _ in range(_CHUNK_WALK_LIMIT):
        kind = f.read(1)
        if kind == b"\x2c":  # an image: descriptor, local colour table, LZW code size
            descriptor = f.read(9)
            if len(descriptor) < 9:
                return
            yield 0x2C, descriptor
            if descriptor[8] & 0x80:
                f.seek(3 << ((descriptor[8] & 7) + 1), os.SEEK_CUR)
            f.seek(1, os.SEEK_CUR)
        elif kind == b"\x21":  # an extension: its label, then the sub-blocks as an image's
            label = f.read(1)
            length = f.read(1)
            first = f.read(length[0]) if length else b""
            yield 0x21, label + first
            if not length or length == b"\0":
                continue
        else:  # the trailer (0x3b), the file's end or damage
            return
        while True:  # data sub-blocks, each led by its length, up to an empty one
            length = f.read(1)
            if not length or length == b"\0":
                break
            f.seek(length[0], os.SEEK_CUR)
        if not length:
            return


def _gif_frames(f: Any) -> int:
    """Frames of the GIF open in ``f``, counted up to 2; 1 for a file that is not a GIF or is
    cut short before a second."""
    frames = 0
    for kind, _ in _gif_blocks(f):
        frames += kind == 0x2C
        if frames >= 2:
            break
    return max(frames, 1)


def gif_transparency(f: Any) -> bool:
    """Whether the GIF open in ``f`` makes a colour of its first image transparent (its
    graphic control extension says so)."""
    for kind, data in _gif_blocks(f):
        if kind == 0x2C:
            return False
        if data[:1] == b"\xf9" and len(data) >= 2 and data[1] & 1:
            return True
    return False


def image_format(head: bytes) -> str | None:
    """``"png"``, ``"gif"``, ``"webp"`` or ``"tiff"`` from a file's first 12 bytes or more
    (not its name); None for anything else."""
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\0", b"MM\0*"):
        return "tiff"
    return None


def _animation_frames(f: Any) -> int:
    """Frames of the WebP, PNG or GIF open in ``f`` (known by its first bytes, not its
    name), counted up to 2; 1 for anything else."""
    kind = image_format(f.read(12))
    f.seek(0)
    count = {"gif": _gif_frames, "png": _png_frames, "webp": _webp_frames}.get(kind or "")
    return count(f) if count is not None else 1


def is_animated_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``, named as an image, is an animated WebP, PNG (APNG) or GIF of more
    than one frame, from its headers (small reads; the image data is not decoded), whatever
    its name says (an APNG named ``.gif``, a GIF named ``.png``).

    OpenCV's image decoder returns the first frame of those, so such a file was processed as
    a one-frame still: :func:`source_kind` makes it a video, which FFmpeg plays whole. A GIF
    of one frame is an image (it was a video that wanted a video output). False for anything
    else, and for a file that cannot be read.
    """
    if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as f:
            frames = _animation_frames(f)
    except (OSError, ValueError):
        return False
    return frames > 1


#: H.273's PQ and HLG transfer characteristics.
_HDR_TRANSFERS = (16, 18)


def _avif_loses(avif: Any) -> str:
    """What an AVIF read by OpenCV loses: ``avif`` is its :class:`engine.heif.HeifMetadata`."""
    lost = ["its colours off, HDR"] if avif.transfer in _HDR_TRANSFERS else []
    if avif.transformed:
        lost.append("not cropped and turned as it says")
    if (avif.bits or 8) > 8:
        lost.append(f"too dark: its {avif.bits}-bit levels taken as 16-bit ones")
    return ", ".join(lost)


def _video_container(head: bytes) -> str | None:
    """The video container a file's first bytes name (not HEIF / AVIF stills); None else."""
    if head[4:8] == b"ftyp" and not (is_heif(head) or is_avif(head)):
        return "MP4 / QuickTime"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska / WebM"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cut_short(data: bytes) -> str | None:
    """Why a JPEG or PNG reads as cut short (its end missing); None when it ends as it should
    (or is of another kind)."""
    if data[:3] == b"\xff\xd8\xff":
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None  # not a marker where one belongs: damaged, not cut
            marker = data[pos + 1]
            if marker == 0xFF:  # fill bytes before a marker
                pos += 1
                continue
            if marker == 0xDA:  # the scan data follows; the end marker closes the file
                # An FF in the scan data is stuffed (FF00), so FFD9 after it is the end marker.
                return None if data.rfind(b"\xff\xd9") > pos else "no JPEG end marker"
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        return "it ends before its picture data"
    if data[:8] == _PNG_SIGNATURE:
        pos = 8
        while pos + 8 <= len(data):
            kind = data[pos + 4 : pos + 8]
            pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
            if pos > len(data):
                return f"its {kind.decode('latin-1')} chunk runs past the end"
            if kind == b"IEND":
                return None
        return "no PNG end chunk, IEND"
    return None


def _undecodable_image_why(data: bytes) -> str:
    # A clip saved with a photo's name read "not an image OpenCV can decode", with no hint
    # that the file is fine as what it is.
    if not data:
        return "the file is empty (0 bytes)"
    container = _video_container(data[:64])
    if container:
        return f"it is a video ({container}), not an image: give it a video's extension"
    # A download or copy that stopped part-way read as a file of no known kind.
    cut = _cut_short(data)
    if cut:
        return f"the file is cut short ({cut}), as when a download or copy stops part-way"
    return "not an image OpenCV can decode"


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8 RGB`` (grey, alpha, 16-bit converted).

    Reads through ``np.fromfile`` + ``cv2.imdecode`` so non-ASCII paths work on Windows too.
    Raises :class:`SourceError` naming the file when it is missing or not a decodable image.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"image file not found: {p}")
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read image file {p}: {exc.strerror or exc}") from exc
    head = data[:64].tobytes()
    if is_heif(head):
        # An iPhone's photo: OpenCV has no HEIF decoder ("not a video" was all it said).
        try:
            bgr, note = decode_heif(p)
        except HeifError as exc:
            raise SourceError(f"cannot read image file {p}: {exc}") from exc
        if note:
            log.warning("%s: %s", p, note)
        return to_rgb8(bgr, bgr=True, inplace=True)
    avif = heif_metadata(p) if is_avif(head) else None
    if avif is not None and (
        avif.transfer in _HDR_TRANSFERS or avif.transformed or (avif.bits or 8) > 8
    ):
        # OpenCV gives an HDR AVIF's code values as they are (its greys came out 238 levels
        # off), a phone's portrait AVIF on its side (it applies no crop, rotation or mirror
        # property), and a 10-bit one's levels unscaled in 16 bits (nearly black).
        try:
            bgr, note = decode_heif(p)
        except HeifError as exc:
            log.warning("%s: read as it is (%s): %s", p, _avif_loses(avif), exc)
        else:
            if note:
                log.warning("%s: %s", p, note)
            return to_rgb8(bgr, bgr=True, inplace=True)
    # Not IMREAD_UNCHANGED: it also skips the EXIF orientation, so a phone's portrait photo
    # came out on its side. These flags keep grey and 16-bit; alpha is dropped either way.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    try:
        img = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as exc:
        # A header declaring more pixels than OpenCV decodes (CV_IO_MAX_IMAGE_PIXELS, 2^30)
        # raised an assertion that reached the user as "error: OpenCV(5.0.0) ...".
        why = (
            "its declared size is larger than OpenCV decodes"
            if "CV_IO_MAX_IMAGE_PIXELS" in str(exc)
            else f"not an image OpenCV can decode ({getattr(exc, 'err', None) or exc})"
        )
        raise SourceError(f"cannot read image file {p}: {why}") from exc
    if img is None:
        raise SourceError(f"cannot read image file {p}: {_undecodable_image_why(data.tobytes())}")
    cut = _cut_short(data.tobytes()) if head[:3] == b"\xff\xd8\xff" else None
    if cut:
        # OpenCV 4's libjpeg decodes a cut JPEG without a word, its missing rows grey: the
        # output then has a grey band the user would take for SharpCam's.
        log.warning(
            "%s: the file is cut short (%s), as when a download or copy stops part-way: its"
            " bottom rows may be a grey band, the decoder's fill for what is missing",
            p,
            cut,
        )
    try:
        return to_rgb8(img, bgr=True, inplace=True)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"cannot use image file {p}: {exc}") from exc


@dataclass(frozen=True)
class ImageMetadata:
    """What a still image holds besides its pixels that a copy should keep.

    Attributes:
        exif: the EXIF block as stored (a TIFF structure, ``II*\\0`` or ``MM\\0*`` first):
            date taken, camera, exposure, GPS, and the Orientation that :func:`read_image`
            has already applied to the pixels. None when the file has none.
        icc: the embedded ICC colour profile (a wide-gamut Display P3 photo's colours are
            only right with it). None when the file has none.
        xmp: the XMP packet as stored (UTF-8 XML): what photo editors keep beside EXIF, such
            as ratings, keywords, captions, copyright and the edit history. None when the
            file has none.
        xmp_extended: a JPEG's XMP was too large for one segment and continues in extended
            XMP segments, which are not read (:attr:`xmp` is the main packet only).
        png_colour: a PNG's colour chunks (gAMA, cHRM, sRGB, cICP), each ``(type, data)``,
            in the order stored: a PNG saved with another gamma (gAMA 1.0, linear light) or
            other primaries shows otherwise without them (:func:`png_colour_is_srgb`).
            Empty when it has none, and for other formats.
        png_text: a PNG's text chunks (tEXt, zTXt, iTXt: a Comment, Description, Author),
            each ``(type, data)`` as stored, in order; not XMP's iTXt (:attr:`xmp`), nor
            ImageMagick's "Raw profile type" copies of EXIF, XMP or a profile, which would
            outlive the edited ones. Empty when it has none, and for other formats.
        lossless: its pixels are stored exactly (a PNG, a lossless WebP, a BMP, GIF, TIFF or
            PNM), so a WebP copy is written lossless too, and lossy otherwise
            (:func:`engine.sinks.write_image`).
    """

    exif: bytes | None = None
    icc: bytes | None = None
    xmp: bytes | None = None
    xmp_extended: bool = False
    png_colour: tuple[tuple[bytes, bytes], ...] = ()
    png_text: tuple[tuple[bytes, bytes], ...] = ()
    lossless: bool = False

    def __bool__(self) -> bool:
        return (
            self.exif is not None
            or self.icc is not None
            or self.xmp is not None
            or bool(self.png_colour)
            or bool(self.png_text)
        )


#: The PNG chunks that say how its values map to colours, and each one's data size (PNG
#: specification, third edition, 11.3.2).
PNG_COLOUR_CHUNKS = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"cICP": 4}
#: sRGB's white point and primaries as a cHRM chunk stores them (x, y times 100000).
_SRGB_CHRM = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)


def png_colour_is_srgb(chunks: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether PNG colour chunks (:attr:`ImageMetadata.png_colour`) describe sRGB, as a
    viewer takes a file without them: an sRGB chunk, a cICP of BT.709 primaries with the
    sRGB transfer, a gAMA of 1/2.2 (within 1 %) and a cHRM of sRGB's primaries (within
    0.01). Decided as a viewer does, cICP first, then sRGB, then gAMA and cHRM."""
    found = dict(chunks)
    if b"cICP" in found:
        return found[b"cICP"][:2] == bytes([1, 13])
    if b"sRGB" in found:
        return True
    if b"gAMA" in found and abs(int.from_bytes(found[b"gAMA"], "big") - 45455) > 455:
        return False
    if b"cHRM" in found:
        values = [int.from_bytes(found[b"cHRM"][i : i + 4], "big") for i in range(0, 32, 4)]
        return all(abs(v - srgb) <= 1000 for v, srgb in zip(values, _SRGB_CHRM, strict=True))
    return True


#: Bounds on what metadata reading takes from a file: a damaged (or hostile) length must not
#: make it read or inflate gigabytes.
_METADATA_LIMIT = 16 << 20
_EXIF_HEADER = b"Exif\0\0"
_ICC_JPEG_HEADER = b"ICC_PROFILE\0"
#: The headers of a JPEG's APP1 segments that hold XMP: the main packet, and the extended
#: parts a packet over 64 KB continues in (XMP specification part 3, 1.1.3).
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
_XMP_EXTENDED_JPEG_HEADER = b"http://ns.adobe.com/xmp/extension/\0"
#: The keyword of the PNG iTXt chunk that holds XMP.
XMP_PNG_KEYWORD = b"XML:com.adobe.xmp"
_METADATA_WALK_LIMIT = 100_000  # chunks or segments: a PNG of many IDAT chunks has thousands
#: Fill bytes (0xFF) a JPEG may put before its markers, in all: writers put a few at most, and
#: read one at a time, a file of nothing else took 100 s a gigabyte.
_JPEG_FILL_LIMIT = 1 << 16


def _tiff_or_none(data: bytes) -> bytes | None:
    data = data.removeprefix(_EXIF_HEADER)  # some WebP writers keep the JPEG header
    return data if data[:4] in (b"II*\0", b"MM\0*") else None


def _jpeg_metadata(f: Any) -> ImageMetadata:
    exif = xmp = None
    xmp_extended = False
    icc_parts: dict[int, bytes] = {}
    icc_count = 0
    if f.read(2) != b"\xff\xd8":
        return ImageMetadata()
    fill = 0
    for _ in range(_METADATA_WALK_LIMIT):
        head = f.read(2)
        while len(head) == 2 and head[1] == 0xFF and fill < _JPEG_FILL_LIMIT:
            head = head[1:] + f.read(1)  # a fill byte before a marker
            fill += 1
        if len(head) < 2 or head[0] != 0xFF or head[1] == 0xFF:
            break
        marker = head[1]
        if marker in (0xDA, 0xD9):  # the image data starts (or the file ends): no more
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # markers without a length
        size = int.from_bytes(f.read(2), "big") - 2
        if size < 0:
            break
        if marker in (0xE1, 0xE2):
            payload = f.read(size)
            if marker == 0xE1 and exif is None and payload.startswith(_EXIF_HEADER):
                exif = _tiff_or_none(payload)
            elif marker == 0xE1 and xmp is None and payload.startswith(XMP_JPEG_HEADER):
                xmp = payload[len(XMP_JPEG_HEADER) :] or None
            elif marker == 0xE1 and payload.startswith(_XMP_EXTENDED_JPEG_HEADER):
                xmp_extended = True
            elif marker == 0xE2 and payload.startswith(_ICC_JPEG_HEADER) and len(payload) > 14:
                # A profile over 64 KB is split over numbered segments, each saying how many.
                seq, icc_count = payload[12], payload[13]
                icc_parts[seq] = payload[14:]
        else:
            f.seek(size, os.SEEK_CUR)
    icc = None
    if icc_parts and sorted(icc_parts) == list(range(1, icc_count + 1)):
        icc = b"".join(icc_parts[i] for i in sorted(icc_parts))
    return ImageMetadata(exif=exif, icc=icc, xmp=xmp, xmp_extended=xmp_extended and bool(xmp))


def _itxt_xmp(data: bytes) -> bytes | None:
    """The XMP packet of a PNG iTXt chunk's ``data``; None when it holds other text."""
    # keyword NUL, compressed flag, method, language tag NUL, translated keyword NUL, text
    keyword, _, rest = data.partition(b"\0")
    if keyword != XMP_PNG_KEYWORD or len(rest) < 2:
        return None
    compressed, method = rest[0], rest[1]
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        return None
    text = parts[2]
    if compressed:
        if method != 0:
            return None
        try:
            text = zlib.decompressobj().decompress(text, _METADATA_LIMIT)
        except zlib.error:
            return None
    return text or None


#: The PNG chunks that hold text (a Comment, Description, Author).
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_text_kept(data: bytes) -> bool:
    """Whether a whole PNG text chunk's ``data`` is one to copy (:attr:`ImageMetadata.png_text`)."""
    keyword = data.partition(b"\0")[0]
    return keyword != XMP_PNG_KEYWORD and not keyword.startswith(b"Raw profile type ")


def _png_metadata(f: Any) -> ImageMetadata:
    exif = icc = xmp = None
    colour: list[tuple[bytes, bytes]] = []
    text: list[tuple[bytes, bytes]] = []
    image_data = False  # colour chunks after it are out of place: viewers pass over them
    pos = 8
    for _ in range(_METADATA_WALK_LIMIT):
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8 or head[4:] == b"IEND":
            break
        size = int.from_bytes(head[:4], "big")
        image_data = image_data or head[4:] == b"IDAT"
        if (
            not image_data
            and PNG_COLOUR_CHUNKS.get(head[4:]) == size
            and head[4:] not in dict(colour)
        ):
            data = f.read(size + 4)
            # Only whole ones: libpng passes over a colour chunk whose CRC is wrong.
            if zlib.crc32(head[4:] + data[:size]).to_bytes(4, "big") == data[size:]:
                colour.append((head[4:], data[:size]))
        elif head[4:] in (b"eXIf", b"iCCP", b"iTXt") and size <= _METADATA_LIMIT:
            data = f.read(size)
            if head[4:] == b"eXIf":
                exif = _tiff_or_none(data)
            elif head[4:] == b"iTXt":
                xmp = xmp or _itxt_xmp(data)
                if _png_text_kept(data) and _png_crc_ok(f, head, data):
                    text.append((b"iTXt", data))
            else:  # a name, its NUL, the method (0: zlib), the compressed profile
                name_end = data.find(b"\0")
                if 0 < name_end and data[name_end + 1 : name_end + 2] == b"\0":
                    inflate = zlib.decompressobj()
                    try:
                        icc = inflate.decompress(data[name_end + 2 :], _METADATA_LIMIT) or None
                    except zlib.error:
                        icc = None
        elif head[4:] in PNG_TEXT_CHUNKS and size <= _METADATA_LIMIT:
            data = f.read(size)
            if _png_text_kept(data) and _png_crc_ok(f, head, data):
                text.append((head[4:], data))
        pos += size + 12
    return ImageMetadata(
        exif=exif,
        icc=icc,
        xmp=xmp,
        png_colour=tuple(colour),
        png_text=tuple(text),
        lossless=True,
    )


def _png_crc_ok(f: Any, head: bytes, data: bytes) -> bool:
    """Whether the CRC that follows the chunk ``data`` just read from ``f`` is right: a
    damaged one, which libpng passes over, must not be copied under a new, right CRC."""
    return zlib.crc32(head[4:] + data).to_bytes(4, "big") == f.read(4)


def _webp_metadata(f: Any) -> ImageMetadata:
    exif = icc = xmp = None
    lossless = False
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return ImageMetadata()
    pos = 12
    for _ in range(_METADATA_WALK_LIMIT):
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        size = int.from_bytes(chunk[4:], "little")
        if chunk[:4] in (b"EXIF", b"ICCP", b"XMP ") and size <= _METADATA_LIMIT:
            data = f.read(size)
            if chunk[:4] == b"EXIF":
                exif = _tiff_or_none(data)
            elif chunk[:4] == b"XMP ":
                xmp = data or None
            else:
                icc = data or None
        lossless = lossless or chunk[:4] == b"VP8L"
        pos += 8 + (size + 1) // 2 * 2
    return ImageMetadata(exif=exif, icc=icc, xmp=xmp, lossless=lossless)


def read_image_metadata(path: str | os.PathLike[str]) -> ImageMetadata:
    """The EXIF block, ICC profile and XMP packet of a JPEG, PNG, WebP, HEIF or AVIF file,
    from its headers (the image data is not decoded); an empty :class:`ImageMetadata` for
    other formats, a file without them, or one that cannot be read."""
    try:
        with open(path, "rb") as f:
            magic = f.read(64)
            f.seek(0)
            if magic.startswith(b"\xff\xd8"):
                return _jpeg_metadata(f)
            if magic.startswith(b"\x89PNG\r\n\x1a\n"):
                return _png_metadata(f)
            if magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
                return _webp_metadata(f)
        if is_heif(magic) or is_avif(magic):
            heif = heif_metadata(path)
            exif = heif.exif and _tiff_or_none(heif.exif)
            return ImageMetadata(exif=exif, icc=heif.icc, xmp=heif.xmp)
        if _lossless_format(magic):
            # A scan's TIFF or a screenshot's BMP made a lossy WebP: only a PNG was known
            # to store its pixels exactly.
            return ImageMetadata(lossless=True)
    except (OSError, ValueError):
        pass
    return ImageMetadata()


def _lossless_format(head: bytes) -> bool:
    """Whether the file opening with ``head`` is a BMP, GIF, TIFF, PNM or Sun raster image,
    whose formats store pixels exactly (a TIFF's JPEG compression aside)."""
    return (
        head[:2] == b"BM"
        or image_format(head) in ("gif", "tiff")
        or (head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7"))
        or head[:4] == b"\x59\xa6\x6a\x95"
    )


#: TIFF tags of IFD 0 that are a photo's metadata, by what a note calls them: the camera's and
#: the date's (and the EXIF and GPS sub-IFDs), the colour profile, the XMP packet.
_TIFF_METADATA_TAGS = {
    "the EXIF data": frozenset({270, 271, 272, 306, 315, 33432, 34665, 34853}),
    "the colour profile": frozenset({34675}),
    "the XMP data": frozenset({700}),
}


def tiff_metadata_unread(path: str | os.PathLike[str]) -> list[str]:
    """What metadata a TIFF file holds that :func:`read_image_metadata` does not read (it reads
    none of a TIFF's), by the names a note gives it (``"the EXIF data"``, ``"the colour
    profile"``, ``"the XMP data"``), from the tags of its first IFD; [] for a file that is no
    classic TIFF, holds none, or cannot be read. Its Orientation is not among them:
    :func:`read_image` applies it to the pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] not in (b"II*\0", b"MM\0*"):
                return []
            order = "<" if head[:2] == b"II" else ">"
            f.seek(struct.unpack(order + "I", head[4:8])[0])
            (count,) = struct.unpack(order + "H", f.read(2))
            entries = f.read(12 * min(count, 4096))
    except (OSError, struct.error):
        return []
    tags = {struct.unpack_from(order + "H", entries, i)[0] for i in range(0, len(entries) - 11, 12)}
    return [what for what, ids in _TIFF_METADATA_TAGS.items() if tags & ids]


_MOOV_READ_LIMIT = 64 << 20  # hours of video have a moov this large; bounded memory
#: Top-level boxes read on the way to the moov: a camera's file has a handful, a fragmented
#: one its moov first; a file of millions of empty boxes took seconds (bounded time).
_BOX_WALK_LIMIT = 100_000


def _mp4_moov_at(f: Any, size: int) -> tuple[int, int] | None:
    """``(position, length)`` of the ``moov`` box of the ISO media file (mp4, mov, m4v) open in
    ``f``, found by walking the top-level boxes (a camera writes it at the end: the frames
    before it are skipped, not read); None when there is none, a box size before it is
    broken, or more than :data:`_BOX_WALK_LIMIT` boxes come before it."""
    try:
        for pos, length, kind in walk_top_level_boxes(f, size, _BOX_WALK_LIMIT):
            if kind == b"moov":
                return pos, length
    except ValueError:
        pass
    return None


def _mp4_has_audio(f: Any, size: int) -> bool | None:
    # A 'soun' handler in the moov box.
    found = _mp4_moov_at(f, size)
    if found is None:
        return None
    pos, length = found
    f.seek(pos)
    moov = f.read(min(length, _MOOV_READ_LIMIT))
    if b"soun" in _mp4_handlers(moov):
        return True
    return False if len(moov) == length else None  # not all read: cannot tell


def _mp4_moov(f: Any, size: int) -> bytes | None:
    """The whole ``moov`` box of the ISO media file open in ``f``, wherever it is; None when
    there is none (:func:`_mp4_moov_at`) or it is larger than :data:`_MOOV_READ_LIMIT`."""
    found = _mp4_moov_at(f, size)
    if found is None or found[1] > _MOOV_READ_LIMIT:
        return None
    f.seek(found[0])
    return f.read(found[1])


def _mp4_handlers(moov: bytes) -> set[bytes]:
    """The handler types (``b"vide"``, ``b"soun"``, ...) of the tracks in a ``moov`` box."""
    found = set()
    i = moov.find(b"hdlr")
    while i >= 0:
        found.add(moov[i + 12 : i + 16])
        i = moov.find(b"hdlr", i + 4)
    return found


def _cover_comes_first(path: str | os.PathLike[str]) -> bool:
    """Whether FFmpeg lists a cover picture as the first video stream of the MP4 / QuickTime
    file at ``path``, before its video (``engine.remux.cover_comes_first``); False without
    FFmpeg. FFmpeg is asked only where the index holds a cover (``covr``): not for every file."""
    try:
        with open(path, "rb") as f:
            if f.read(8)[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                return False
            moov = _mp4_moov(f, f.seek(0, os.SEEK_END))
    except OSError:
        return False
    if not moov or b"covr" not in moov:
        return False
    from engine.remux import RemuxError, cover_comes_first, find_ffmpeg

    ffmpeg = find_ffmpeg()
    try:
        return ffmpeg is not None and cover_comes_first(path, ffmpeg=ffmpeg)
    except RemuxError:
        return False


def _unopenable_video_why(path: str | os.PathLike[str]) -> str | None:
    """Why a file OpenCV did not open as a video cannot be one, where its bytes say so: it is
    empty, or an MP4 / QuickTime file with no index or no video track. None when they do not
    (a codec OpenCV lacks, bytes of no known kind).

    OpenCV says only "not opened": an empty file, a phone's recording cut off before its index
    was written and a sound-only ``.mp4`` all read "not a video, or a codec OpenCV cannot
    decode", which sends the user looking for a codec.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "the file is empty (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(64)
            if _video_container(head) != "MP4 / QuickTime":
                return None
            found = _mp4_moov_at(f, size)
            if found is None or found[0] + found[1] > size:
                return (
                    "an MP4 / QuickTime file without its whole index (the 'moov' box): a "
                    "recording cut off before it was finished, which players cannot read either"
                )
            if found[1] > _MOOV_READ_LIMIT:
                return None  # an index too large to read here: nothing to say of its tracks
            f.seek(found[0])
            moov = f.read(found[1])
    except OSError:
        return None
    handlers = _mp4_handlers(moov)
    if b"vide" in handlers:
        return None
    return "it has no video track" + (" (sound only)" if b"soun" in handlers else "")


def _child_boxes(box: bytes, start: int = 8) -> Iterator[tuple[bytes, bytes]]:
    """``(type, whole box)`` of the boxes inside ``box`` from ``start``; stops at one whose
    size does not fit."""
    pos = start
    while pos + 8 <= len(box):
        length, kind = int.from_bytes(box[pos : pos + 4], "big"), box[pos + 4 : pos + 8]
        if length < 8 or pos + length > len(box):
            return
        yield kind, box[pos : pos + length]
        pos += length


def video_is_mirrored(path: str | os.PathLike[str]) -> bool:
    """Whether the display matrix of a video file's video track mirrors the picture (a
    negative determinant: a front camera's recording, an editor's "flip"): an MP4 / MOV's
    track header, or a Matroska / WebM track's projection (:func:`_matroska_is_mirrored`).
    False for other files, or when it cannot tell.

    FFmpeg gives OpenCV the matrix as a rotation angle alone: a mirrored file came out turned
    (a flip alone as a half turn) instead of mirrored.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:4] == _EBML_MAGIC:
                f.seek(0)
                return _matroska_is_mirrored(f.read(_MATROSKA_READ_LIMIT))
            if head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                return False
            moov = _mp4_moov(f, f.seek(0, os.SEEK_END))
    except OSError:
        return False
    for kind, trak in _child_boxes(moov or b""):
        if kind != b"trak":
            continue
        children = dict(_child_boxes(trak))
        mdia = dict(_child_boxes(children.get(b"mdia", b"")))
        hdlr, tkhd = mdia.get(b"hdlr", b""), children.get(b"tkhd", b"")
        if hdlr[16:20] != b"vide" or len(tkhd) < 9:
            continue
        # The 3x3 matrix's a, b (then u), c, d after the times (64-bit in version 1), layer,
        # group, volume; 16.16 fixed point: the signs are all that matter.
        at = 8 + 4 + (32 if tkhd[8] == 1 else 20) + 8 + 8
        if len(tkhd) < at + 20:
            return False
        a, b, _, c, d = (
            int.from_bytes(tkhd[at + 4 * i : at + 4 * i + 4], "big", signed=True) for i in range(5)
        )
        return a * d - b * c < 0
    return False


_EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # the EBML header that opens every Matroska / WebM file
_MKV_SEGMENT, _MKV_TRACKS, _MKV_CLUSTER = 0x18538067, 0x1654AE6B, 0x1F43B675
_MKV_TRACK_ENTRY, _MKV_TRACK_TYPE, _MKV_VIDEO, _MKV_AUDIO = 0xAE, 0x83, 1, 2
#: A video track's settings, its Projection, and the Projection's type and pose (yaw, pitch,
#: roll: floats, in degrees).
_MKV_VIDEO_SETTINGS, _MKV_PROJECTION, _MKV_PROJECTION_TYPE = 0xE0, 0x7670, 0x7671
_MKV_POSE = (0x7673, 0x7674, 0x7675)
#: Muxers write the track list before the first cluster of frames, within the first kilobytes.
_MATROSKA_READ_LIMIT = 1 << 20


def _ebml_vint(buf: bytes, i: int, *, keep_marker: bool) -> tuple[int | None, int]:
    """The EBML variable-length integer at ``buf[i]`` and the index after it: an element ID
    (``keep_marker``, as the spec writes IDs) or a size (None: "unknown", all value bits set)."""
    if i >= len(buf) or buf[i] == 0:
        raise ValueError("not an EBML number")
    n = 9 - buf[i].bit_length()  # the leading zero bits, plus one, give the length
    if i + n > len(buf):
        raise ValueError("EBML number cut off")
    value = int.from_bytes(buf[i : i + n], "big")
    if keep_marker:
        return value, i + n
    value &= (1 << (7 * n)) - 1
    return (None if value == (1 << (7 * n)) - 1 else value), i + n


def _matroska_elements(buf: bytes) -> Iterator[tuple[int, int, int | None]]:
    """``(ID, where its data starts, size)`` of the elements of the Matroska / WebM file that
    ``buf`` opens: the EBML header, then those in its Segment (Info, Tracks, Clusters ...),
    up to one of unknown size (None). ValueError where ``buf`` holds no element."""
    i, end = 0, len(buf)
    while i < end:
        eid, i = _ebml_vint(buf, i, keep_marker=True)
        size, i = _ebml_vint(buf, i, keep_marker=False)
        if eid == _MKV_SEGMENT:
            # Descend: its children (Info, Tracks, Clusters ...) follow. A live recording
            # (a browser's WebM) leaves the segment's size unknown.
            end = len(buf) if size is None else min(len(buf), i + size)
            continue
        yield eid, i, size
        if size is None:
            return
        i += size


def _matroska_has_audio(buf: bytes) -> bool | None:
    """Whether the Matroska / WebM file that ``buf`` opens lists an audio track (TrackType 2);
    None when its track list is not within ``buf``."""
    try:
        tracks_seen = False
        for eid, i, size in _matroska_elements(buf):
            if eid == _MKV_CLUSTER or size is None:
                return False if tracks_seen else None  # frames begin: no track list after
            if eid == _MKV_TRACKS:
                tracks_seen = True
                if i + size > len(buf):
                    return None
                if _matroska_tracks_have_audio(buf[i : i + size]):
                    return True
        return False if tracks_seen else None
    except ValueError:
        return None


def _matroska_tracks_have_audio(tracks: bytes) -> bool:
    i = 0
    while i < len(tracks):
        eid, i = _ebml_vint(tracks, i, keep_marker=True)
        size, i = _ebml_vint(tracks, i, keep_marker=False)
        if size is None:
            raise ValueError("a track entry of unknown size")
        if eid == _MKV_TRACK_ENTRY:
            entry, j = tracks[i : i + size], 0
            while j < len(entry):
                cid, j = _ebml_vint(entry, j, keep_marker=True)
                csize, j = _ebml_vint(entry, j, keep_marker=False)
                if csize is None:
                    raise ValueError("a track field of unknown size")
                if (
                    cid == _MKV_TRACK_TYPE
                    and int.from_bytes(entry[j : j + csize], "big") == _MKV_AUDIO
                ):
                    return True
                j += csize
        i += size
    return False


def _ebml_children(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(ID, data)`` of the elements that ``data`` (a master element's) holds; ValueError
    when they do not fit in it."""
    i = 0
    while i < len(data):
        eid, i = _ebml_vint(data, i, keep_marker=True)
        size, i = _ebml_vint(data, i, keep_marker=False)
        if size is None or i + size > len(data):
            raise ValueError("an element that does not fit")
        yield eid, data[i : i + size]
        i += size


def _ebml_float(data: bytes) -> float:
    if not data:
        return 0.0  # the default of an element stored empty
    if len(data) not in (4, 8):
        raise ValueError("not an EBML float")
    return struct.unpack(">f" if len(data) == 4 else ">d", data)[0]


def _matroska_is_mirrored(buf: bytes) -> bool:
    """Whether the first video track of the Matroska / WebM file that ``buf`` opens is shown
    mirrored; False when its track list is not within ``buf``.

    Matroska has no display matrix: FFmpeg (9) writes a flip as the track's Projection, a
    yaw of 180 degrees (``-display_hflip``; a vertical flip is that and a roll of 180), and
    reads a rectangular projection (type 0) back as a flipped matrix when its yaw is 180 or
    -180, its pitch 0 and its roll a number; other poses it ignores (spherical video). The
    turn and flip are then applied as for an MP4 (``VideoFileSource._mirror_flip``).
    """
    try:
        for eid, i, size in _matroska_elements(buf):
            if eid == _MKV_CLUSTER or size is None:
                return False  # frames begin: no track list after
            if eid != _MKV_TRACKS:
                continue
            for kind, entry in _ebml_children(buf[i : i + size]):
                fields = dict(_ebml_children(entry)) if kind == _MKV_TRACK_ENTRY else {}
                if int.from_bytes(fields.get(_MKV_TRACK_TYPE, b""), "big") != _MKV_VIDEO:
                    continue
                video = dict(_ebml_children(fields.get(_MKV_VIDEO_SETTINGS, b"")))
                pose = dict(_ebml_children(video.get(_MKV_PROJECTION, b"")))
                if int.from_bytes(pose.get(_MKV_PROJECTION_TYPE, b""), "big") != 0:
                    return False
                yaw, pitch, roll = (_ebml_float(pose.get(k, b"")) for k in _MKV_POSE)
                return abs(yaw) == 180.0 and pitch == 0.0 and not math.isnan(roll)
            return False  # the first track list names no video
    except ValueError:
        pass
    return False


def video_has_audio(path: str | os.PathLike[str]) -> bool | None:
    """Whether a video file holds a sound track: True, False, or None when it cannot tell.

    OpenCV reads and writes pictures only, so a processed copy has no sound: callers say so
    rather than drop it silently. Reads the container headers of MP4/MOV/M4V, AVI and Matroska
    (MKV, WebM) files, and says False of an animated GIF, WebP or PNG; other containers give
    None.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = f.seek(0, os.SEEK_END)
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                return _mp4_has_audio(f, size)
            if head[:4] == _EBML_MAGIC:
                f.seek(0)
                return _matroska_has_audio(f.read(_MATROSKA_READ_LIMIT))
            if (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head.startswith(
                (b"\x89PNG", b"GIF87a", b"GIF89a")
            ):
                return False  # an animated image: pictures only
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                f.seek(0)
                hdrl = f.read(1 << 16)  # the stream headers open the file
                i = hdrl.find(b"strh")
                while i >= 0:
                    if hdrl[i + 8 : i + 12] == b"auds":
                        return True
                    i = hdrl.find(b"strh", i + 4)
                return False
    except OSError:
        pass
    return None


def _natural_key(name: str) -> list[Any]:
    # frame2.png before frame10.png, as a person numbers files. isdecimal, not isdigit: "²" is
    # a digit that \d does not split on, and int() refuses it.
    return [int(t) if t.isdecimal() else t.lower() for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- cameras


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """A file's size and modification time (ns); None where it cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _picture_size(path: Path) -> tuple[int, int] | None:
    """``(W, H)`` of the first picture OpenCV decodes of the video at ``path``, upright;
    None where it decodes none."""
    with _quiet_opencv():
        cap = _make_capture(str(path), cv2.CAP_ANY)
    try:
        ok, img = cap.read() if cap.isOpened() else (False, None)
        return image_size(img) if ok and img is not None else None
    finally:
        cap.release()


def _file_identity(path: Path) -> tuple[int, int] | None:
    """What tells a file from another put in its place (device, inode); not its size or
    time, which a recording still being written changes."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _make_capture(target: int | str, api: int) -> Any:
    """Open an OpenCV capture. Module level so tests can substitute a fake device."""
    if isinstance(target, str):
        try:
            target = opencv_name(target)
        except ValueError as exc:
            raise SourceError(f"cannot open video file: {exc}") from exc
    return cv2.VideoCapture(target, api)


def _camera_apis() -> list[int]:
    """The OS's native capture APIs, best first (CAP_ANY would pick GStreamer or slow paths)."""
    if sys.platform.startswith("linux"):
        return [cv2.CAP_V4L2, cv2.CAP_ANY]
    if sys.platform == "win32":
        # Media Foundation only: OpenCV's MSMF indexes devices in the order MFEnumDeviceSources
        # lists them, the same list Qt's QMediaDevices shows, so the app's camera i is MSMF's i.
        # DirectShow's list also holds DirectShow-only virtual cameras (OBS Virtual Camera, our
        # own output), so its index i can be another device: as a fallback it opened OBS's
        # camera as "camera 0" on a PC without a webcam, and SharpCam sharpened its own output
        # in a loop. MSMF's slow open is avoided by OPENCV_VIDEOIO_MSMF_ENABLE_HW_TRANSFORMS=0
        # (see engine/__init__.py).
        return [cv2.CAP_MSMF]
    if sys.platform == "darwin":
        return [cv2.CAP_AVFOUNDATION]
    return [cv2.CAP_ANY]


# OpenCV's log level is one per process: the app probes cameras while a lost camera reconnects
# on the capture thread. Only the first to quieten saves the level, only the last restores it;
# each saving its own restored another's SILENT, and OpenCV stayed mute for the session.
_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_saved_level = 0


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's warnings while probing devices that may not exist (thread-safe)."""
    global _quiet_users, _quiet_saved_level
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:
        yield
        return
    with _quiet_lock:
        if _quiet_users == 0:
            _quiet_saved_level = logging_mod.getLogLevel()
            # SILENT, not ERROR: a missing index makes V4L2 log "Camera index out of range" at
            # ERROR level, which would land on the user's terminal beside our own, clearer one.
            silent = getattr(logging_mod, "LOG_LEVEL_SILENT", logging_mod.LOG_LEVEL_ERROR)
            logging_mod.setLogLevel(silent)
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0:
                logging_mod.setLogLevel(_quiet_saved_level)


@dataclass(frozen=True)
class CameraInfo:
    """A camera found by :func:`list_cameras`."""

    index: int  # OpenCV index, what ``open_source(str(index))`` opens
    path: str | None  # device node on Linux ("/dev/video0"), else None
    name: str  # human name where the OS tells it ("Integrated Camera"), else "camera N"

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.index}: {self.name}{where}"


def _linux_camera_name(index: int) -> str | None:
    try:
        return Path(f"/sys/class/video4linux/video{index}/name").read_text().strip() or None
    except OSError:
        return None


def _probe_camera(index: int) -> bool:
    """Whether camera ``index`` opens. Module level so tests can fake the machine's cameras."""
    if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}"):
        return False  # no node: skip a slow, noisy open attempt
    with _quiet_opencv():
        for api in _camera_apis():
            cap = _make_capture(index, api)
            try:
                if cap.isOpened():
                    return True
            finally:
                cap.release()
    return False


def list_cameras(max_index: int = 10) -> list[CameraInfo]:
    """Cameras that open, probing OpenCV indices ``0 .. max_index - 1``."""
    found = []
    linux = sys.platform.startswith("linux")
    for index in range(max_index):
        if not _probe_camera(index):
            continue
        path = f"/dev/video{index}" if linux else None
        name = (_linux_camera_name(index) if linux else None) or f"camera {index}"
        found.append(CameraInfo(index=index, path=path, name=name))
    return found


def is_camera_number(text: str) -> bool:
    """Whether ``text`` is a camera's number (``"0"``, ``" 2 "``): ASCII digits only. A file
    named ``①`` or ``²`` passes ``str.isdigit()``, was taken for a camera, and int() refused it."""
    text = text.strip()
    return text.isascii() and text.isdigit()


def _parse_camera(device: int | str) -> tuple[int | str, int | None]:
    """``(what to open, OpenCV index if known)`` for ``0``, ``"0"`` or ``"/dev/video0"``."""
    if isinstance(device, int):
        return device, device
    text = str(device).strip()
    if is_camera_number(text):
        return int(text), int(text)
    # A link (/dev/v4l/by-id/...) names its node's index too, for the camera's name and list.
    node = os.path.realpath(text) if os.path.islink(text) else text
    m = re.fullmatch(r"/dev/video(\d+)", node)
    return text, (int(m.group(1)) if m else None)


def camera_device_path(device: int | str) -> str | None:
    """The device file camera ``device`` opens (``2`` -> ``"/dev/video2"`` on Linux, where
    OpenCV's V4L2 index is the node's number; a path as given), None for an index elsewhere
    (Windows and macOS cameras have no file)."""
    target, index = _parse_camera(device)
    if isinstance(target, str):
        return target
    return f"/dev/video{index}" if sys.platform.startswith("linux") else None


#: A reconnect this recent before a camera is said to have moved (``CameraSource.retarget``)
#: opened its old number, which the move gave to another camera: that capture is let go.
SUSPECT_REOPEN_S = 10.0


class CameraSource(_SourceBase):
    """A camera through OpenCV with the OS's native API, reconnecting when it disappears.

    Real webcams fail a read now and then while the device is fine (a USB hiccup, a UVC driver
    dropping a frame during an exposure change); releasing and reopening the device for that
    would cost seconds of frozen video. So a failed read is retried, once per frame period (at
    once after a read that itself waited that long), and the device counts as lost only when
    ``lost_after_reads`` reads in a row failed or the failed reads have gone on for
    ``lost_after_s`` seconds, whichever comes first. Until then ``read()`` keeps trying and
    returns nothing: no frame is repeated, and ``reconnecting`` stays False. A good read ends
    the streak. The streak rule also covers the first frame after opening or reopening (some
    drivers fail a read or two while the sensor starts).

    Args:
        device: OpenCV index (``0`` or ``"0"``) or device path (``"/dev/video2"``).
        size: requested ``(W, H)``; the camera may pick another, ``size`` reports what it gave.
        fps: requested rate; ``fps`` reports what the driver says.
        fourcc: requested pixel format; MJPG is what USB cameras need for 1080p30 (raw YUYV
            does not fit through USB 2 at that size). ``None`` leaves the driver's default.
        reconnect: when the device is lost, keep reopening it with exponential back-off
            (``backoff = (first, longest)`` seconds, ``0 < first <= longest``) instead of
            raising :class:`SourceError`.
        lost_after_reads: failed reads in a row that mean the device is lost (``>= 1``; 1 gives
            up on the first failure). 10 is a third of a second of fast failures at 30 fps:
            an unplugged camera's reads fail at once, and it is found gone that soon.
        lost_after_s: seconds of failed reads in a row that mean the device is lost (``> 0``).
            Bounds the wait where each failed read itself blocks (a driver's time-out).

    Attributes:
        reconnecting: True from when the device counts as lost until a reopened one delivers
            a frame (not while failed reads are being retried).
        reconnects: times a lost device came back (a retried failed read is no reconnect).
        last_wait_s: seconds the last ``read()`` waited for the sensor, on failed reads, between
            retries and in reconnect back-off (opening the device again counts as work).
    """

    live = True
    frame_count = None

    def __init__(
        self,
        *,
        device: int | str,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        fourcc: str | None = "MJPG",
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.25, 2.0),
        lost_after_reads: int = 10,
        lost_after_s: float = 1.0,
    ):
        super().__init__()
        # Checked before the device is opened: a bad value must not leave the camera taken.
        self._lost_after_reads, self._lost_after_s = _check_lost_after(
            lost_after_reads, lost_after_s
        )
        self._backoff = _check_backoff(backoff)
        self._target, self._index = _parse_camera(device)
        self._label = f"camera {device}"
        self._requested = (_check_size(size), _valid_fps(fps), fourcc)
        self._reconnect = reconnect
        # Failed reads are retried once per frame period: the rate asked for until the driver
        # says its own.
        self._retry_s = _retry_period(self._requested[1] or DEFAULT_FPS)
        self._failed_reads = 0  # the last streak's failed reads, for the messages
        self._absent = False  # retarget(None): not reopened until told where it is
        self._reopened_at: float | None = None  # when a reconnect last opened the device
        self.reconnecting = False  # True while the device is gone and being reopened
        self._lock = threading.Lock()  # read() vs close() on the capture object
        self._cap: Any = self._open()
        if self._cap is None:
            raise self._not_found()
        try:
            first = self._grab_retrying()
            if first is None:
                raise SourceError(
                    f"{self._label} opened but delivers no frames ({self._streak_text()})"
                )
            self._pending: Frame | None = first
            self.size = first.size
            reported = _valid_fps(self._cap.get(cv2.CAP_PROP_FPS))
            #: Whether the driver said its rate (Media Foundation and AVFoundation often say 0:
            #: :attr:`fps` is then the rate asked for, unconfirmed).
            self.fps_reported = reported is not None
            self.fps = reported or self._requested[1] or DEFAULT_FPS
            self._retry_s = _retry_period(self.fps)
        except BaseException:
            # Nobody gets a source to close: the device would stay taken until the process ends
            # (the app's next start could not open it).
            self._cap.release()
            self._cap = None
            raise

    def _not_found(self) -> SourceError:
        available = list_cameras()
        listing = ", ".join(str(c) for c in available) if available else "none found"
        missing = self._index is not None and all(c.index != self._index for c in available)
        if isinstance(self._target, str) and not os.path.exists(self._target):
            missing = True
        if missing:
            # macOS opens no camera at all until the app (or the terminal running it) is
            # allowed to: that read as "does not exist", with nothing about where to allow it.
            why = (
                " (on macOS, also check System Settings > Privacy & Security > Camera: "
                "allow SharpCam, or the terminal that runs it)"
                if sys.platform == "darwin" and not available
                else ""
            )
            return CameraNotFoundError(
                f"{self._label} does not exist; available cameras: {listing}{why}", available
            )
        return SourceError(
            f"{self._label} exists but cannot be opened (in use by another application?); "
            f"available cameras: {listing}"
        )

    def _open(self) -> Any:
        size, fps, fourcc = self._requested
        with _quiet_opencv():
            for api in _camera_apis():
                cap = _make_capture(self._target, api)
                if not cap.isOpened():
                    cap.release()
                    continue
                # Order matters for V4L2: the format first, then size and rate, so the driver
                # validates the size against the MJPG mode list rather than YUYV's.
                if fourcc:
                    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
                if size is not None:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
                if fps is not None:
                    cap.set(cv2.CAP_PROP_FPS, fps)
                # Keep one frame in the driver queue: a deeper queue is latency, never quality.
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
                return cap
        return None

    def _grab(self) -> Frame | None:
        """One frame from the open device, or None when the read failed."""
        with self._lock:
            if self._cap is None:
                return None
            t0 = time.perf_counter()
            ok = self._cap.grab()  # waits for the sensor: not work, counted as waiting
            t1 = time.perf_counter()
            # A failed grab waited for the sensor too (a driver's time-out, a dropped frame).
            self.last_wait_s += t1 - t0
            if not ok:
                return None
            ok, img = self._cap.retrieve()  # the decode (MJPG) happens here
        if not ok or img is None or img.size == 0:
            return None
        try:
            if img.ndim == 2 and img.shape[0] == 1:
                # OpenCV's V4L2 hands over a pixel format it cannot convert (an H.264-only
                # camera) as one row of bytes: it streamed as a 1-pixel-high picture.
                raise ValueError(f"a raw {img.shape[1]}-byte buffer, not a picture")
            rgb = to_rgb8(img, bgr=True, inplace=True)
        except (TypeError, ValueError) as exc:
            # A driver that hands over raw data OpenCV did not convert (a 2-channel YUYV
            # buffer): the error must name the camera, not only the array.
            raise SourceError(f"{self._label} delivers frames SharpCam cannot use: {exc}") from exc
        return self._emit(rgb, t1)

    def _grab_retrying(self) -> Frame | None:
        """The next frame the open device delivers, retrying failed reads.

        None when interrupted, when no device is open (a reopen failed: nothing to retry), or
        once the device counts as lost (see the class docstring); ``_failed_reads`` then holds
        the streak's length.
        """
        self._failed_reads = 0
        streak_start = 0.0
        while not self._interrupt.is_set():
            t0 = time.perf_counter()
            frame = self._grab()
            if frame is not None:
                if self._failed_reads:
                    log.debug("%s: %d failed reads, then a frame", self._label, self._failed_reads)
                return frame
            now = time.perf_counter()
            if not self._failed_reads:
                streak_start = t0  # a first read that blocked and failed counts whole
            self._failed_reads += 1
            if (
                self._cap is None
                or self._failed_reads >= self._lost_after_reads
                or now - streak_start >= self._lost_after_s
            ):
                return None
            # A read that failed at once is the driver's error, not a wait for the sensor:
            # asking again at once would spin. The next frame is due a period after this read
            # began; a read that blocked that long is retried right away.
            pause = self._retry_s - (now - t0)
            if pause > 0:
                if self._interrupt.wait(pause):
                    return None
                self.last_wait_s += time.perf_counter() - now
        return None

    def _streak_text(self) -> str:
        reads = self._failed_reads
        return f"{reads} read{'s' if reads != 1 else ''} in a row failed"

    def read(self) -> Frame | None:
        self.last_wait_s = 0.0
        if self._pending is not None and not self._interrupt.is_set():
            frame, self._pending = self._pending, None
            # The probe frame from opening is stale once a model took seconds to load: a live
            # source hands out only what the camera sees now.
            if time.perf_counter() - frame.t_capture < 2.0 / self.fps:
                return frame
        delay = self._backoff[0]
        while not self._interrupt.is_set():
            frame = self._grab_retrying()
            if frame is not None:
                if self.reconnecting:
                    self.reconnecting = False
                    self.reconnects += 1
                    log.info("%s is back (reconnect %d)", self._label, self.reconnects)
                return frame
            if self._interrupt.is_set():
                break
            if not self._reconnect:
                raise SourceError(
                    f"{self._label} stopped delivering frames ({self._streak_text()})"
                )
            if not self.reconnecting:
                log.warning("%s lost (%s); reconnecting", self._label, self._streak_text())
                self.reconnecting = True
            with self._lock:
                if self._cap is not None:
                    self._cap.release()
                    self._cap = None
            t0 = time.perf_counter()
            if self._interrupt.wait(delay):
                break
            self.last_wait_s += time.perf_counter() - t0
            delay = min(delay * 2.0, self._backoff[1])
            target = self._target
            cap = None if self._absent else self._open()
            with self._lock:
                if self._closed or (cap is not None and (self._absent or self._target != target)):
                    # Closed meanwhile, or told while it opened that its number is another
                    # camera's now, or that it moved.
                    if cap is not None:
                        cap.release()
                    if self._closed:
                        break
                    continue
                self._cap = cap
                if cap is not None:
                    self._reopened_at = time.perf_counter()
        return None

    def retarget(self, device: int | str | None, *, taken: bool = False) -> None:
        """Where the camera is now, for its next reopen; None: not there, so not reopened
        until told where it is.

        Windows and macOS number cameras by their place in the OS's list, which an unplug
        shifts: reopening its old number after the camera was unplugged opened the camera next
        in line (another one, sent to the call unasked), and a camera whose number had shifted
        was never found again. Whoever watches the list (the app) says where it went, and
        whether its old number is another camera's now (``taken``): then a capture a reconnect
        opened there just now shows that camera, and is let go.
        """
        with self._lock:
            if device is None:
                self._absent = True
                if self._cap is not None:
                    # Opened at its old number before the list said it moved (the reconnect
                    # may come first): another camera's picture. Closed: it is lost again.
                    self._cap.release()
                    self._cap = None
            else:
                target, index = _parse_camera(device)
                recent = self._reopened_at is not None and (
                    time.perf_counter() - self._reopened_at < SUSPECT_REOPEN_S
                )
                if taken and target != self._target and self._cap is not None and recent:
                    # A reconnect just now reopened its old number, before the list said it
                    # moved: another camera's picture (an unplug and replug seen as one move).
                    # Not when the number is no one else's: the capture is still its own.
                    self._cap.release()
                    self._cap = None
                self._target, self._index = target, index
                self._absent = False

    def _release(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    @property
    def label(self) -> str:
        """What messages call the camera: ``"camera 0"``, ``"camera /dev/video2"``."""
        return self._label

    def describe(self) -> str:
        return f"{self._label} · {self.size[0]}x{self.size[1]} @ {self.fps:g} fps"


# --------------------------------------------------------------------------- files


class VideoFileSource(_SourceBase):
    """A video file. Live: paced against the wall clock, each picture after its own time (at
    the file's rate where none is known); nothing is skipped here (the
    pipeline's latest-frame slot drops what inference cannot keep up with).
    Offline: decoded as fast as it is read.

    Args:
        path: the video file.
        live: pace to real time.
        size: scale frames to fit this ``(W, H)``, letterboxed (never stretched); ``None``
            keeps the file's size.
        fps: used only when the file has no rate of its own (default 30). A declared rate
            above 100 fps (or none) is checked against the first frames' timestamps, and a
            Matroska / WebM one against the mean of all its pictures' times (FFmpeg's, where
            there is one): they win when they disagree by more than 10 %.
        loop: start again at the end instead of ending (a demo clip as an endless camera).
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        live: bool = True,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        loop: bool = False,
    ):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as exc:
            # OpenCV says only "not opened": an unreadable file was reported as "not a video,
            # or a codec OpenCV cannot decode".
            raise SourceError(f"cannot read video file {self.path}: {exc.strerror or exc}") from exc
        self.live = live
        self._loop = loop
        self._resize = _check_size(size)
        self._identity = _file_identity(self.path)
        self._stamp = _file_stamp(self.path)  # its size and time: changed, it is probed again
        with _quiet_opencv():
            self._cap = _make_capture(str(self.path), cv2.CAP_ANY)
        try:
            if not self._cap.isOpened():
                why = _unopenable_video_why(self.path)
                raise SourceError(
                    f"cannot open video file {self.path}: "
                    + (why or "not a video, or a codec OpenCV cannot decode")
                    + self._animation_hint()
                )
            if _cover_comes_first(self.path):
                # OpenCV decodes the cover as the video, and no option names another stream:
                # a 30-frame clip came out as its cover, one frame long, without an error.
                raise SourceError(
                    f"cannot read video file {self.path}: its first video stream is a cover "
                    "picture, which OpenCV would read in place of the video; copy the file "
                    "without it first (ffmpeg -i IN -map 0:V -map 0:a? -c copy OUT)"
                )
            img, lost_first = _first_decodable(self._cap)
            if img is None:
                raise SourceError(
                    f"cannot read video file {self.path}: no decodable frames"
                    + self._animation_hint()
                )
            self._first: np.ndarray | None = img
            #: The presentation time (s) of the last picture decoded, where OpenCV decodes it:
            #: whether the pictures reach the end of a container that only estimates its count.
            self.last_time_s: float | None = self._position_s()
            #: That of the first picture decoded: with :attr:`last_time_s`, whether pictures
            #: were lost at the end (``engine.remux.keep_timing``'s ``decoded_s``).
            self.first_time_s = self.last_time_s
            #: This pass's damaged pictures (see _decode), each run of them as the pictures
            #: decoded before it and the seconds from the one before it to the one after, by
            #: their own times: what the pictures after it keep their times by
            #: (``engine.remux.keep_timing``), where the written frames follow one another.
            #: A run at the start is ``(0, seconds from the stream's start to the first
            #: picture decoded)``: where the output's sound starts (``copy_audio``).
            self.gaps: list[tuple[int, float]] = []
            self._gap_at_start(lost_first)
            # A loop's stand-in for a one-frame file (see _decode): read() converts in place.
            self._first_kept: np.ndarray | None = img.copy() if loop else None
            self._lone: np.ndarray | None = None
            self._pass_frames = 0
            # The file's own rate, even below FPS_RANGE: taken for "none", a 0.2 fps slideshow
            # played and was written at 30 fps, 150 times too fast.
            declared = _valid_fps(self._cap.get(cv2.CAP_PROP_FPS), lowest=_MIN_FILE_FPS)
            count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
            measured = None
            matroska = self._matroska()
            if declared is None or declared > _CHECK_FPS_ABOVE:
                measured = _rate_from_timestamps(str(self.path))
            elif matroska:
                measured = _mean_rate_from_packets(str(self.path))
            if measured is not None and declared is not None:
                if abs(measured / declared - 1.0) <= 0.1:
                    measured = None  # a real high-speed clip (or a true hint): it stands
                else:
                    log.info(
                        "%s declares %g fps, its timestamps say %.3g: using those",
                        self.path.name,
                        declared,
                        measured,
                    )
                    # A Matroska file stores no count: OpenCV's is its duration times the
                    # declared rate, so at the frames' own rate it is their estimate again (not
                    # the pictures FFmpeg lists: a file cut off mid-write keeps its whole
                    # duration, which is how a shortfall tells it). Elsewhere the container's
                    # count came from the wrong rate.
                    count = round(count * measured / declared) if matroska else math.nan
            self.fps = measured or declared or _valid_fps(fps) or DEFAULT_FPS
            self.frame_count = (
                int(count) if math.isfinite(count) and count > 0 and not loop else None
            )
            #: ``(W, H)`` of the pictures as decoded, upright (before ``size``'s scaling).
            self.decoded_size = image_size(img)
            self._square = _square_pixel_size(self._cap, image_size(img))
            self._flip = self._mirror_flip()
            self.size = self._resize or self._square or image_size(img)
        except BaseException:
            self._cap.release()  # nobody gets a source to close
            raise
        self._pacer = _Pacer(self.fps, self._interrupt) if live else None
        self._time_before: float | None = None  # the last paced picture's time (_step_s)
        self._clock_may_jump = _clock_may_jump(self.path)
        # A picture decoded and its step, not yet sent; the last picture sent (see REPEAT_S).
        self._held: tuple[np.ndarray, float | None] | None = None
        self._shown: np.ndarray | None = None
        #: Frames sent again while a still lasted (see REPEAT_S): not pictures of the file.
        self.repeats = 0
        self._picture_times: list[float] | None = None  # see use_picture_times
        self._decoder: Any = None  # see decode_with
        #: The field order ("top first") of an interlaced video de-interlaced as it is read,
        #: set with the decoder that does it (``engine.remux``); None otherwise.
        self.deinterlaced: str | None = None

    def _matroska(self) -> bool:
        """Whether the file is Matroska / WebM, whose declared rate (a track's default frame
        duration) is the writer's hint, not its frames' times: an MKV declaring 30 fps whose
        frames came at 25 (a webcam in dim light) played, and was written, 1.2 times too fast,
        its pictures ahead of its sound by 1.2 s at the end of 7 s."""
        try:
            with open(self.path, "rb") as f:
                return f.read(4) == _EBML_MAGIC
        except OSError:
            return False

    @property
    def first_picture(self) -> np.ndarray | None:
        """The first picture as OpenCV decodes it, ``(H, W, 3)`` uint8 BGR, turned and
        mirrored as it is shown (before any scaling), until it is read (None after, and once
        another decoder is given): for a check that another decoder gives the same picture."""
        if self._first is None or self._flip is None:
            return self._first
        return cv2.flip(self._first, self._flip)

    def decode_with(self, decoder: Any) -> None:
        """Take the pictures from ``decoder`` instead of OpenCV's decoder, from the first on:
        its ``read()`` gives ``(H, W, 3)`` uint8 BGR pictures of :attr:`decoded_size`, upright
        and unmirrored, then None; its ``restart()`` starts again from the first (a source
        that loops); its ``close()`` is called with the source's (a text it returns is why it
        ended early, logged). Everything else (rate, count, pixel aspect, scaling) stays the
        file's. For FFmpeg's HDR tone mapping (``engine.remux.SdrFrames``), which OpenCV
        cannot do."""
        if self._next_index:
            raise ValueError("decode_with: only before the first read")
        self._decoder = decoder
        self._first = self._first_kept = None
        self.last_time_s = None  # FFmpeg's pictures carry no time here
        self._flip = None  # FFmpeg applies the display matrix whole, mirroring included

    def use_picture_times(self, times_s: Sequence[float]) -> None:
        """Pace the pictures of :meth:`decode_with`'s decoder, which gives no times, by
        ``times_s``: seconds, one per picture in the order shown (``engine.remux``'s
        ``picture_times``). Listed once the decoder is open (a 30-minute file took 2.5 s),
        they may come from another thread, and until then, and past their end, each picture
        lasts one period: a variable-rate HDR phone clip played at its mean rate."""
        self._picture_times = list(times_s)

    def _time_of_picture(self) -> float | None:
        """The time of the picture just decoded, where it is known."""
        if self._decoder is None:
            return self.last_time_s
        times, i = self._picture_times, self._pass_frames - 1
        return times[i] if times is not None and 0 <= i < len(times) else None

    def _position_s(self) -> float | None:
        ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        return ms / 1000.0 if math.isfinite(ms) and ms >= 0 else None

    def _mirror_flip(self) -> int | None:
        """The ``cv2.flip`` code that completes OpenCV's turn of a mirrored video, or None.

        OpenCV turns frames by the rotation FFmpeg reads from the display matrix and ignores
        its mirroring: a horizontal flip came out as a half turn, a clip turned a quarter and
        mirrored came out mirrored the other way. What is missing is always a flip of the
        stored frame's vertical axis: a vertical flip of the shown frame, or a horizontal one
        when the turn was a quarter (the stored vertical is then horizontal). Checked against
        FFmpeg 9, which applies the whole matrix, for each turn with either flip.
        """
        if not self._cap.get(cv2.CAP_PROP_ORIENTATION_AUTO) or not video_is_mirrored(self.path):
            return None
        quarter = round(float(self._cap.get(cv2.CAP_PROP_ORIENTATION_META))) % 180 == 90
        return 1 if quarter else 0

    def _animation_hint(self) -> str:
        # FFmpeg decodes animated WebP only from version 9 (APNG for long): an OpenCV built
        # with an older one opens none, where reading it as a still gave its first frame.
        if not is_animated_image(self.path):
            return ""
        return (
            " (it is an animated image, which the FFmpeg in this OpenCV cannot play; "
            "convert it to a video or a GIF)"
        )

    def _decode(self) -> np.ndarray | None:
        if self._lone is not None:
            return self._lone.copy()  # the caller converts it in place
        if self._decoder is not None:
            return self._decode_with_decoder()
        if self._first is not None:
            img, self._first = self._first, None
            self._pass_frames = 1
            return img
        ok, img = self._cap.read()
        for _ in range(_DAMAGED_READS if not ok or img is None else 0):
            # OpenCV's read fails once for each packet its decoder refuses (a damaged
            # picture), then reads on: taken as the end, an H.264 clip with one bad picture
            # lost every picture after it. At the real end each further read fails at once.
            ok, img = self._cap.read()
            if ok and img is not None:
                before, after = self.last_time_s, self._position_s()
                if before is not None and after is not None and after > before:
                    self.gaps.append((self._pass_frames, after - before))
                break
        if ok and img is not None:
            self.last_time_s = self._position_s()
            self._pass_frames += 1
            if self._pass_frames == 2:
                self._first_kept = None  # not a one-frame file
            return img
        if self._loop and self._next_index > 0:
            one_frame, self._pass_frames = self._pass_frames == 1, 0
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            # As in __init__: with one read, a damaged first picture ended the loop after
            # its first pass (and the file was opened again, to fail the same way).
            img, lost_first = _first_decodable(self._cap)
            if img is not None:
                self._new_pass(lost_first)
                return img
            if one_frame and self._first_kept is not None:
                # FFmpeg's seek back to 0 after the end of a one-frame file says it worked,
                # then reads nothing: the loop ended after its only frame. It repeats, as a
                # photo's does, without decoding it again (opening it anew took 23 ms a
                # 1080p frame, and read whatever file had replaced it since).
                self._lone, self._first_kept = self._first_kept, None
                return self._lone.copy()
            if not one_frame:
                return self._reopen_and_read()
        return None

    def _decode_with_decoder(self) -> np.ndarray | None:
        img = self._decoder.read()
        if img is not None:
            self._pass_frames += 1
            if self._loop:
                # A one-frame file repeats its picture, as OpenCV's path does: starting
                # FFmpeg again for each pass took 73 ms a 1080p frame.
                self._first_kept = img.copy() if self._pass_frames == 1 else None
            return img
        times = self._picture_times
        if times and len(times) != self._pass_frames:
            # Not the pictures the listing counted (damaged ones skipped, a start between
            # keyframes the decoder took otherwise): the times may be others', one period.
            log.info("%s: %d pictures, %d times listed: paced at its rate", self.path.name,
                     self._pass_frames, len(times))  # fmt: skip
            self._picture_times = []
        if not self._loop or self._next_index == 0 or self._closed:
            return None
        if self._pass_frames == 1 and self._first_kept is not None:
            if why := self._decoder.close():  # FFmpeg failed after it: no one-frame file
                log.warning("%s: decoding ended early: %s", self.path.name, why)
                return None
            self._lone, self._first_kept = self._first_kept, None
            return self._lone.copy()
        if _file_identity(self.path) != self._identity:
            # Only the file that was probed: another put in its place was read as pictures
            # of the old one's size, as garbage.
            return None
        stamp = _file_stamp(self.path)
        if stamp != self._stamp:
            # Written over in place (the same inode: `cp`, `ffmpeg -y`), or still being
            # recorded: pictures of another size were read at this one's, as garbage (a
            # check of the first picture missed two videos that both fade in from black).
            self._stamp = stamp
            if _picture_size(self.path) != self.decoded_size:
                log.warning("%s: another video was written in its place; it ends", self.path.name)
                self._decoder.close()
                return None
        self._pass_frames = 0
        self._decoder.restart()  # a no-op once closed meanwhile
        img = self._decoder.read()
        if img is not None:
            self._new_pass()
            self._first_kept = img.copy()
        return img

    def _new_pass(self, lost_first: bool = False) -> None:
        """A loop's pass began again with its first picture (just decoded), after damaged
        ones where ``lost_first``."""
        self._pass_frames = 1
        self.gaps = []
        if self._decoder is None:
            self.last_time_s = self._position_s()
            self._gap_at_start(lost_first)
        if self._pacer is not None:
            self._pacer.resync()

    def _gap_at_start(self, lost_first: bool) -> None:
        if lost_first and self.last_time_s:
            self.gaps.append((0, self.last_time_s))

    def _reopen_and_read(self) -> np.ndarray | None:
        # A stream that cannot seek (a raw MJPEG file) loops by being read again from the
        # start. Only the file that was probed, with pictures of the size it had: one put in
        # its place would come out at the old one's size and flip.
        if self._closed or _file_identity(self.path) != self._identity:
            return None
        with _quiet_opencv():
            cap = _make_capture(str(self.path), cv2.CAP_ANY)
        img, lost_first = _first_decodable(cap) if cap.isOpened() else (None, False)
        if img is None or self._closed or image_size(img) != self.decoded_size:
            cap.release()
            return None
        self._cap.release()
        self._cap = cap
        self._new_pass(lost_first)
        return img

    def _step_s(self) -> float | None:
        """Seconds from the picture before to the one just decoded, by their own times (a
        phone's clip at 30 fps, then 15 as the light fails, played its first half at 0.76 times
        its speed and its second at 1.5 at the mean rate), or None for one period: a pass's
        first picture, pictures without times (FFmpeg's decoder before, or without,
        :meth:`use_picture_times`), a step back or none, and in
        a container whose clock may jump (:func:`_clock_may_jump`) one longer than
        :data:`MAX_STEP_S` (an MPEG-TS joined from two recordings: a jump of an hour held the
        picture for one). Elsewhere a long step is a still (a screen recording's), held as
        long as it lasts."""
        now = self._time_of_picture()
        before, self._time_before = self._time_before, now
        if before is None or now is None or self._pass_frames < 2:
            return None
        step = now - before
        if step <= 0 or (self._clock_may_jump and step > MAX_STEP_S):
            return None
        return step

    def read(self) -> Frame | None:
        self.last_wait_s = 0.0
        if self._interrupt.is_set() or self._closed:
            return None
        if self._held is None:
            # Decoded first, then waited for: the wait is by the picture's own time, which
            # only its decoding tells, and the decoding's own time no longer delays it.
            began = time.perf_counter()
            img = self._decode()
            if img is None:
                return None
            self._decoded(began)
            self._held = (img, self._step_s() if self._pacer is not None else None)
        img, step = self._held
        # Not sent again for a last bit shorter than a quarter of REPEAT_S, which goes with the
        # wait before: a still of 1.003 s sent its repeat and then the next picture 6 ms apart,
        # and a live recording dropped that picture (the same slot as the repeat).
        if step is not None and step - REPEAT_S >= REPEAT_S / 4 and self._shown is not None:
            self._held = (img, step - REPEAT_S)
            if not self._pace(REPEAT_S):
                return None
            self.repeats += 1
            return self._emit(self._shown.copy(), time.perf_counter())
        self._held = None
        if not self._pace(step):
            return None
        rgb = to_rgb8(img, bgr=True, inplace=True)
        if self._flip is not None:
            rgb = cv2.flip(rgb, self._flip)
        if self._square is not None:
            rgb = resize_to(rgb, self._square)
        if self._resize is not None:
            rgb = fit_to(rgb, self._resize)
        if self._pacer is not None:
            self._shown = rgb  # sent again while a long still lasts (never changed in place)
        return self._emit(rgb, time.perf_counter())

    def _behind_warning(self, busy: tuple[float, float] | None) -> str | None:
        if busy is not None:
            # A 720p H.264 clip beside a full-size model on two cores was said to be too
            # heavy to decode, with advice to pick a smaller file.
            return (
                f"{self.path.name} cannot be read at its {self.fps:.3g} fps while the computer "
                f"is this busy (it decodes in {busy[0] * 1000:.0f} ms a frame, of "
                f"{busy[1] * 1000:.0f}): it plays in slow motion"
            )
        return (
            f"{self.path.name} cannot be decoded at its {self.fps:.3g} fps: it plays in slow motion"
        )

    def _release(self) -> None:
        self._cap.release()
        if self._decoder is not None and (why := self._decoder.close()):
            # Damaged pictures end it early; the count of frames handled says how early.
            log.warning("%s: decoding ended early: %s", self.path.name, why)

    def describe(self) -> str:
        n = self.frame_count
        count = f", {n} frame{'' if n == 1 else 's'}" if n else ""
        mode = "live" if self.live else "offline"
        return f"video {self.path.name} · {self.size[0]}x{self.size[1]} @ {self.fps:g} fps{count} ({mode})"


class ImageSource(_SourceBase):
    """A still image. Live: the same image repeated at ``fps`` (default 30), endlessly.
    Offline: one frame. ``loop`` is accepted as for the other file sources (a caller need not
    know which kind of file it opens); a live image repeats either way."""

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        live: bool = True,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        loop: bool = False,
    ):
        del loop
        super().__init__()
        self.path = Path(path)
        image = read_image(self.path)
        resize = _check_size(size)
        if resize is not None:
            image = fit_to(image, resize)
        # Shared by every frame: nobody writes into source images (see FrameSource.read).
        self._image = image
        self.live = live
        self.size = image_size(image)
        self.fps = _valid_fps(fps) or DEFAULT_FPS
        self.frame_count = None if live else 1
        self._pacer = _Pacer(self.fps, self._interrupt) if live else None

    def read(self) -> Frame | None:
        self.last_wait_s = 0.0
        if self._interrupt.is_set() or self._closed:
            return None
        if self._pacer is None and self._next_index >= 1:
            return None
        if not self._pace():
            return None
        return self._emit(self._image, time.perf_counter())

    def describe(self) -> str:
        rate = f" repeated @ {self.fps:g} fps" if self.live else ""
        return f"image {self.path.name} · {self.size[0]}x{self.size[1]}{rate}"


class ImageFolderSource(_SourceBase):
    """The images of a folder in natural order (``2.png`` before ``10.png``).

    Offline: every image once, each at its own size unless ``size`` is given. Live: paced at
    ``fps`` (default 30); ``loop`` starts again at the first image.

    An image that cannot be read raises :class:`SourceError` from ``read()`` (and from the
    constructor for the first one), which ends the stream. With ``skip_unreadable=True`` it is
    passed over instead and listed in :attr:`skipped` as ``(file, message)``; only a folder
    without a single readable image is an error then. Looping, every file is tried again on
    each pass (:attr:`unreadable` lists those that failed at their latest try: a photo caught
    mid-save plays once it is whole), and a pass in which none can be read any more (the
    folder moved, its drive unplugged) raises :class:`SourceError` saying so.
    :attr:`frame_files` names the file of each frame delivered (frame ``i`` came from
    ``frame_files[i]``; not kept when looping): once an image is skipped, frame indices no
    longer follow :attr:`files`. :attr:`left_out` lists what the folder holds besides its
    images, in natural order: sub-folders (not read) and files without an image extension;
    hidden entries (``.NAME``) are in neither list. An animated WebP or PNG among the images
    gives its first frame only. :attr:`other_sizes` names the images read so far whose size
    differs from the first one's, in folder order (an output of one size fits them into it).
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        live: bool = True,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        loop: bool = False,
        skip_unreadable: bool = False,
    ):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"image folder not found: {self.path}")
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:  # was "[Errno 13] Permission denied: '...'" and nothing else
            raise SourceError(f"cannot read folder {self.path}: {exc.strerror or exc}") from exc
        files, left_out = [], []
        for p in entries:
            # Hidden files are not frames: macOS's "._NAME.png" metadata twins on shared
            # drives, a killed writer's ".NAME.partial.png". Nor are they worth a mention.
            if p.name.startswith("."):
                continue
            # Not is_file(): a link to a drive not mounted was left out without a word
            # (neither processed nor among the skipped); read, it names itself.
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir():
                files.append(p)
            else:
                left_out.append(p)
        self.files = sorted(files, key=lambda p: _natural_key(p.name))
        # Sub-folders (not descended into) and files of other types (.gif, .mp4, .txt): a run
        # on a folder of 500 photos in 12 sub-folders did nothing with them and said nothing.
        self.left_out: list[Path] = sorted(left_out, key=lambda p: _natural_key(p.name))
        if not self.files:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"no images in folder {self.path} (looked for {exts})")
        self._resize = _check_size(size)
        self._skip = skip_unreadable
        self.skipped: list[tuple[Path, str]] = []
        self._unreadable: dict[int, str] = {}  # position -> why, at its latest read
        self._listed: set[int] = set()  # positions in skipped
        self.frame_files: list[Path] = []
        self._own_first: tuple[int, int] | None = None  # the first image's size, as read
        self._other_sized: set[int] = set()  # positions whose size differs from it
        self.live = live
        self._loop = loop
        self._pos = 0
        self._first: np.ndarray | None = self._next_image()
        if self._first is None:
            first = self.skipped[0][1]
            raise SourceError(
                f"no readable images in folder {self.path}: all {len(self.files)} failed; "
                f"first: {first}"
            )
        self.size = image_size(self._first)
        self.fps = _valid_fps(fps) or DEFAULT_FPS
        self.frame_count = None if loop else len(self.files)
        self._pacer = _Pacer(self.fps, self._interrupt) if live else None

    def _load(self, i: int) -> np.ndarray:
        image = read_image(self.files[i])
        own = image_size(image)
        if self._own_first is None:
            self._own_first = own
        elif own != self._own_first:
            self._other_sized.add(i)
        return fit_to(image, self._resize) if self._resize is not None else image

    @property
    def other_sizes(self) -> list[Path]:
        """The images read so far whose size is not the first one's, in folder order: a
        recording or a virtual camera takes the first one's size and fits these into it, with
        black borders where their shape differs."""
        return [self.files[i] for i in sorted(set(self._other_sized))]

    @property
    def unreadable(self) -> list[tuple[Path, str]]:
        """The files that could not be read at their latest try, ``(file, message)`` in
        folder order: a looping source tries each again on every pass, so a photo caught
        mid-save plays again once it is whole (:attr:`skipped` keeps every one ever skipped)."""
        now = dict(self._unreadable)  # read by another thread (the app's) than the reader's
        return [(self.files[i], why) for i, why in sorted(now.items())]

    def _next_image(self) -> np.ndarray | None:
        """The image at ``_pos`` or, skipping, the next readable one; None past the last file.
        Leaves ``_pos`` on the file the image came from."""
        while self._pos < len(self.files):
            try:
                image = self._load(self._pos)
                self._unreadable.pop(self._pos, None)
                return image
            except SourceError as exc:
                if not self._skip:
                    raise
                if self._pos not in self._listed:  # a looping source meets it again
                    self._listed.add(self._pos)
                    self.skipped.append((self.files[self._pos], str(exc)))
                self._unreadable[self._pos] = str(exc)
            self._pos += 1
        return None

    def _next_pass(self) -> None:
        # Every file is tried again: one caught mid-save (or on a drive back) plays again.
        self._pos = 0

    def _none_readable(self) -> SourceError:
        why = next(iter(self._unreadable.values()), "")
        return SourceError(
            f"none of the {len(self.files)} images in folder {self.path} can be read any "
            f"more; first: {why}"
        )

    def read(self) -> Frame | None:
        self.last_wait_s = 0.0
        if self._interrupt.is_set() or self._closed:
            return None
        if self._pos >= len(self.files):
            if not self._loop:
                return None
            self._next_pass()
        if not self._pace():
            return None
        if self._first is not None:
            image, self._first = self._first, None
        else:
            began = time.perf_counter()
            image = self._next_image()
            if image is not None:
                self._decoded(began)
            if image is None and self._loop:
                self._next_pass()  # the files after the last readable one were all skipped
                image = self._next_image()
                if image is None:
                    # Moved, deleted or unplugged while it played: said as such, where "the
                    # source sends no more frames" gave no reason.
                    raise self._none_readable()
            if image is None:
                return None
        if not self._loop:  # a looping source repeats its files: the list would grow forever
            self.frame_files.append(self.files[self._pos])
        self._pos += 1
        return self._emit(image, time.perf_counter())

    def _behind_warning(self, busy: tuple[float, float] | None) -> str | None:
        if busy is not None:
            return (
                f"the images in {self.path.name} cannot be read at {self.fps:.3g} a second "
                f"while the computer is this busy (each is read in {busy[0] * 1000:.0f} ms, of "
                f"{busy[1] * 1000:.0f}): they play slower"
            )
        return (
            f"the images in {self.path.name} cannot be read at {self.fps:.3g} a second: "
            "they play slower"
        )

    def describe(self) -> str:
        return f"folder {self.path.name} · {len(self.files)} images · first {self.size[0]}x{self.size[1]}"


# --------------------------------------------------------------------------- registry

#: A source factory: ``factory(spec, *, live, size, fps, **options) -> FrameSource``.
SourceFactory = Callable[..., FrameSource]


def _camera_factory(spec: Any, *, live: bool, size: Any, fps: Any, **options: Any) -> FrameSource:
    del live  # a camera is live by nature
    return CameraSource(device=spec, size=size, fps=fps, **options)


def _file_factory(cls: type) -> SourceFactory:
    def factory(spec: Any, *, live: bool, size: Any, fps: Any, **options: Any) -> FrameSource:
        return cls(path=spec, live=live, size=size, fps=fps, **options)

    factory.__name__ = f"open_{cls.__name__}"
    return factory


#: kind -> factory; :func:`open_source` picks the kind from the spec unless told.
SOURCES: dict[str, SourceFactory] = {
    "camera": _camera_factory,
    "video": _file_factory(VideoFileSource),
    "image": _file_factory(ImageSource),
    "folder": _file_factory(ImageFolderSource),
}


#: The built-in factories whose spec is a path: open_source names a missing one. A registered
#: kind's spec may be anything (a URL, a test pattern's name), its factory judges it.
_PATH_FACTORIES = frozenset(SOURCES[kind] for kind in ("video", "image", "folder"))


def register_source(kind: str, factory: SourceFactory) -> None:
    """Add or replace a source kind (``open_source(spec, kind=kind, ...)`` then opens it)."""
    SOURCES[kind] = factory


def source_kind(spec: int | str | os.PathLike[str]) -> str:
    """The kind :func:`open_source` would use: camera, folder, image or video (also an
    animated WebP or PNG: see :func:`is_animated_image`)."""
    if isinstance(spec, int):
        return "camera"
    text = os.fspath(spec)
    # /dev/v4l/ by name: an unplugged camera's by-id link is gone, with nothing to stat, and
    # must still say "camera ... does not exist", not "no such file".
    if is_camera_number(text) or text.startswith(("/dev/video", "/dev/v4l/")):
        return "camera"
    p = Path(text)
    if sys.platform.startswith("linux") and _is_device_file(p):
        # A link elsewhere to a camera node (a udev rule's /dev/webcam): a camera, which a
        # video decoder would have "opened" and then read nothing from. Linux only: cameras
        # elsewhere have no device file, and NUL or COM1 there is no camera.
        return "camera"
    if os.path.isdir(p):  # not Path.is_dir: a path too long for the system raised there
        return "folder"
    if p.suffix.lower() in IMAGE_EXTENSIONS and not is_animated_image(p):
        return "image"
    return "video"


def _is_device_file(path: Path) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_source(
    spec: int | str | os.PathLike[str],
    *,
    live: bool,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    kind: str | None = None,
    **options: Any,
) -> FrameSource:
    """Open a frame source from a user's spec.

    Args:
        spec: camera index (``0``, ``"0"``), device path (``"/dev/video0"``), a video file,
            an image file, or a folder of images.
        live: real-time delivery (cameras always are; files are paced at their FPS) versus as
            fast as possible, every frame (offline processing).
        size: ``(W, H)`` requested from a camera; files, images and folders are scaled to fit
            it, letterboxed.
        fps: requested from a camera; the repeat rate for images and folders; only a fallback
            for video files (they play at their own rate).
        kind: force ``"camera"``, ``"video"``, ``"image"``, ``"folder"`` or a registered kind.
        **options: passed to the source (``loop=True`` for files, ``skip_unreadable=True``
            for folders, ``fourcc``, ``reconnect``, ``backoff``, ``lost_after_reads`` and
            ``lost_after_s`` for cameras).

    Raises:
        SourceError: missing or unreadable file (named in the message).
        CameraNotFoundError: the camera does not exist (the message lists those that do).
    """
    kind = kind or source_kind(spec)
    try:
        factory = SOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(SOURCES)}") from None
    if factory in _PATH_FACTORIES and not isinstance(spec, int):
        p = Path(os.fspath(spec))
        if not p.exists():
            raise SourceError(f"no such file or folder: {p}")
    return factory(spec, live=live, size=size, fps=fps, **options)
