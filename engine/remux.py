"""What OpenCV's writer loses of a processed video, put back with FFmpeg: its sound and the
timing of a variable frame rate.

OpenCV reads and writes pictures only, at one frame rate, so a video that ``process``
writes has no sound of its own, and a phone's variable-rate video plays at its mean rate.
Where an ``ffmpeg`` executable is found (``$SHARPCAM_FFMPEG``, on the ``PATH``, or the one
the ``imageio-ffmpeg`` package bundles):

* :func:`keep_timing` gives an MP4, MOV or MKV output its source's frame durations
  (:func:`engine.sinks.retime_mp4`; an MKV through a MOV copy);
* :func:`copy_audio` muxes the source's audio streams into the written file: copied as they
  are where the output's container holds them playably, re-encoded where it does not (to
  AAC; to PCM in an AVI). The pictures are copied untouched.

And :class:`SdrFrames` decodes an HDR video (:func:`hdr_transfer`) tone mapped to 8-bit SDR,
whose colours OpenCV's decoder would otherwise shift, and an SDR one whose colours OpenCV gets
wrong (:func:`exact_colour_filters`: 10-bit 4:2:0, untagged HD).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engine.frames import pictures_differ

log = logging.getLogger(__name__)

__all__ = [
    "RemuxError",
    "RemuxStopped",
    "copy_audio",
    "cover_comes_first",
    "ffmpeg_list",
    "ffmpeg_reason",
    "file_arg",
    "DEINTERLACE",
    "field_order",
    "find_ffmpeg",
    "ffmpeg_unusable",
    "has_kept_tags",
    "hdr_transfer",
    "keep_timing",
    "PictureTimes",
    "packet_count",
    "picture_times",
    "SdrFrames",
    "sound_end",
    "subtitle_tracks",
    "exact_colour_filters",
    "ToneMapping",
    "tone_map_hdr",
    "tone_map_problem",
]

#: Names an ``ffmpeg`` executable: it wins over the one found on the ``PATH``.
FFMPEG_ENV = "SHARPCAM_FFMPEG"


class RemuxError(RuntimeError):
    """FFmpeg could not do it; the video written before is left as it was."""


class RemuxStopped(RemuxError):
    """Stopped (``stop`` set), FFmpeg ended; the video written before is left as it was."""


def file_arg(path: str | os.PathLike[str]) -> str:
    """``path`` as FFmpeg is to take it, a file: a name with a colon (``clip:1.mp4``) was
    taken for a protocol ("Protocol not found")."""
    return "file:" + os.fspath(path)


#: FFmpeg's lines that say only that something failed, not what: the reason is elsewhere.
_GENERIC = re.compile(
    r"^(Error opening (output|input) files?|Terminating thread with return code|Task finished "
    r"with error code|Nothing was written into output file|Conversion failed|Error while "
    r"filtering|Could not open encoder before EOF|Last message repeated)",
    re.I,
)


def ffmpeg_reason(text: bytes) -> str:
    """The first line of FFmpeg's error output that says what went wrong, without FFmpeg's
    ``[component @ 0x...]`` prefixes; its last line where none does."""
    lines = []
    for raw in text.decode("utf-8", errors="replace").splitlines():
        line = re.sub(r"^(\[[^]]*@ \w+\] ?)+", "", raw.strip()).strip()
        if line:
            lines.append(line)
    telling = [line for line in lines if not _GENERIC.match(line)]
    return telling[0] if telling else (lines[-1] if lines else "")


def _ffmpeg_candidate() -> tuple[str | None, bool]:
    """The ``ffmpeg`` SharpCam would use, as found (it may not exist where named, or have
    been passed over), and whether ``$SHARPCAM_FFMPEG`` named it: that one is never replaced
    by another (see :func:`ffmpeg_unusable`)."""
    named = os.environ.get(FFMPEG_ENV)
    if named:
        return named, True
    found = shutil.which("ffmpeg")
    if found:
        return found, False
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe(), False
    except Exception:  # not installed, or its binary missing for this platform
        return None, False


def find_ffmpeg() -> str | None:
    """An ``ffmpeg`` executable: ``$SHARPCAM_FFMPEG``, else ``ffmpeg`` on the ``PATH``, else
    the one bundled with ``imageio-ffmpeg`` where that package is installed; None without
    (and where it did not answer before, :data:`_UNANSWERING`)."""
    found, named = _ffmpeg_candidate()
    if found is None or found in _UNANSWERING or (named and not Path(found).is_file()):
        return None
    return found


def ffmpeg_unusable() -> str | None:
    """Why :func:`find_ffmpeg` finds none where one is named or was found, in words for a note:
    ``$SHARPCAM_FFMPEG`` naming no file, or an FFmpeg that did not answer. None where it finds
    one, or where none is installed at all (then installing FFmpeg is the fix).

    A ``$SHARPCAM_FFMPEG`` that names no file is not replaced by the FFmpeg on the ``PATH``
    or the bundled one: it is set to choose one (a build with the filters HDR needs, or not
    the system's), and another in its place would go unsaid; saying so is the fix."""
    found, named = _ffmpeg_candidate()
    if found is None:
        return None
    if found in _UNANSWERING:
        if named:
            return f"{found}, the FFmpeg ${FFMPEG_ENV} names, did not answer, so it was ended"
        return f"FFmpeg {found} did not answer, so it was ended"
    if named and not Path(found).exists():
        return f"${FFMPEG_ENV} names {found}, which does not exist: correct it or unset it"
    if named and not Path(found).is_file():
        return f"${FFMPEG_ENV} names {found}, which is not a file: correct it or unset it"
    return None


#: Audio codecs each output container holds where players play them (FFmpeg's names):
#: copied as they are; any other is re-encoded (:data:`_AAC`, :data:`_AVI_AUDIO`). FFmpeg writes PCM into
#: an MP4 too (ISO 23003-5), which QuickTime and browsers do not play.
_PLAYABLE = {
    ".mp4": ("aac", "mp3", "ac3", "eac3", "alac"),
    ".m4v": ("aac", "mp3", "ac3", "eac3", "alac"),
    ".mov": ("aac", "mp3", "ac3", "eac3", "alac", "pcm_"),
    ".avi": (),  # always PCM: see _AVI_AUDIO
    ".mkv": ("",),  # Matroska holds any
}
#: What goes in where a codec is not playable there: AAC, or PCM in an AVI (lossless, and
#: an encoder every FFmpeg build has).
_AAC = ["-c:a", "aac", "-b:a", "192k"]
#: An AVI has no start time per stream: sound that starts after the pictures was moved to
#: the start. Always PCM there, the gap filled with silence.
_AVI_AUDIO = ["-c:a", "pcm_s16le", "-af", "aresample=async=1:first_pts=0"]
#: Outputs of the MP4 family (QuickTime's boxes).
_MP4_LIKE = (".mp4", ".m4v", ".mov")
#: The muxer by extension where FFmpeg's own pick loses something: for .m4v it takes its
#: iPod muxer, which drops the colour tag and refuses MP3.
_MUXER = {".m4v": "mp4"}


#: How long FFmpeg may take to list a file's streams or its own filters and encoders (it
#: takes a fraction of a second): a $SHARPCAM_FFMPEG that hung held `process` before its
#: first frame, silently, for good.
_QUERY_TIMEOUT_S = 30.0
#: How long an FFmpeg whose query ran past :data:`_QUERY_TIMEOUT_S` gets to say its version:
#: one that does is slow on that file (a network share, a virus scan at its first open), not
#: hung, and stays in use.
_VERSION_TIMEOUT_S = 5.0
#: The executables that did not answer so, nor then their version: :func:`find_ffmpeg` passes
#: them over from then on.
_UNANSWERING: set[str] = set()


class _SlowQuery(RemuxError):
    """A query ran past its limit, yet the FFmpeg answers: the file it was about is slow to
    read. Its answer counts as none; the FFmpeg stays in use."""


def _answers(ffmpeg: str, stop: threading.Event | None, timeout: float) -> bool:
    """Whether ``ffmpeg -version`` answers within ``timeout`` seconds."""
    try:
        _run([ffmpeg, "-version"], stop, timeout, check=False)
    except RemuxStopped:
        raise
    except RemuxError:
        return False
    return True


def _run(
    command: list[str],
    stop: threading.Event | None,
    timeout: float | None = None,
    *,
    check: bool = True,
) -> tuple[int, str]:
    """Run ``command``: its exit status and error output. ``stop`` set meanwhile ends it
    (:class:`RemuxStopped`); so does an exception here (a second Ctrl-C), so that no
    FFmpeg goes on writing after SharpCam. One still running ``timeout`` seconds on is ended
    too (:class:`RemuxError`), and the executable asked its version (where ``check``): only
    one that does not answer that either is passed over from then on; one that does raises
    :class:`_SlowQuery` (the file asked about is slow to read, not FFmpeg)."""
    done = _run_once(command, stop, timeout)
    if done is not None:
        return done
    exe, said = command[0], f"{command[0]} did not answer in {timeout:g} s"
    if check and exe not in _UNANSWERING and _answers(exe, stop, min(_VERSION_TIMEOUT_S, timeout)):
        raise _SlowQuery(f"{said}, though it answers otherwise: the file is slow to read")
    _UNANSWERING.add(exe)
    raise RemuxError(said)


class _OutOfTime(Exception):
    """:func:`_run_once`'s limit ran out (the process is ended on the way out)."""


def _run_once(
    command: list[str], stop: threading.Event | None, timeout: float | None
) -> tuple[int, str] | None:
    """:func:`_run` without its version question: None where ``timeout`` ran out (the
    process ended)."""
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",  # FFmpeg writes UTF-8; Windows decoded it in its ANSI code page
            errors="replace",
        )
    except OSError as exc:  # not there, not executable ($SHARPCAM_FFMPEG names a text file)
        raise RemuxError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with proc:
            try:
                while True:
                    try:
                        out, err = proc.communicate(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        if stop is not None and stop.is_set():
                            raise RemuxStopped("stopped") from None
                        if deadline is not None and time.monotonic() > deadline:
                            raise _OutOfTime from None
            except BaseException:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
    except _OutOfTime:
        return None
    return proc.returncode, out + err


#: File tags worth carrying over (FFmpeg's names): when and where a clip was filmed, and on
#: what. QuickTime's metadata keys (``mdta``) are how an iPhone says all of them.
_KEPT_TAGS = re.compile(
    r"^\s+(creation_time|date|location|location-eng|make|model|com\.apple\.quicktime\.\S+)\s*:",
    # Any case: FFmpeg lists a Matroska file's tags as stored, in capitals (DATE, LOCATION).
    re.M | re.I,
)


#: FFmpeg's stream listings (``ffmpeg -i FILE``), by executable, file, size and time: one
#: `process` asked it four times of its input (the tone map, the tags, the sound, the
#: subtitles), an FFmpeg start each.
_LISTINGS: dict[tuple[str, str, int, int], str] = {}
#: The files (as keyed there) whose listing ran past its limit while FFmpeg answered otherwise.
_SLOW_TO_LIST: set[tuple[str, str, int, int]] = set()


def _listing(ffmpeg: str, source: str | os.PathLike[str], stop: threading.Event | None) -> str:
    """What ``ffmpeg -i source`` says of it (its streams and tags), asked once per version
    of the file. Raises as :func:`_run` does."""
    try:
        st = os.stat(source)
        key = (ffmpeg, os.fspath(source), st.st_size, st.st_mtime_ns)
    except (OSError, ValueError):
        key = None
    if key is not None and key in _LISTINGS:
        return _LISTINGS[key]
    if key is not None and key in _SLOW_TO_LIST:
        # Asked by each note in turn, a slow file cost every one of them the whole limit.
        raise _SlowQuery(f"{ffmpeg} did not list {source} in {_QUERY_TIMEOUT_S:g} s before")
    # Exits 1 (no output named): the stream list is all it is asked for.
    try:
        _, text = _run([ffmpeg, "-hide_banner", "-i", file_arg(source)], stop, _QUERY_TIMEOUT_S)
    except _SlowQuery:
        if key is not None:
            _SLOW_TO_LIST.add(key)
        raise
    if key is not None:
        if len(_LISTINGS) >= 16:
            _LISTINGS.clear()
        _LISTINGS[key] = text
    return text


def _listing_or_none(
    ffmpeg: str, source: str | os.PathLike[str], stop: threading.Event | None
) -> str | None:
    """:func:`_listing`, or None where FFmpeg cannot read ``source``: each caller has its own
    answer for a file it cannot list. A stop still raises: it is not the file's fault."""
    try:
        return _listing(ffmpeg, source, stop)
    except RemuxStopped:
        raise
    except RemuxError:
        return None


def _probe(ffmpeg: str, source: Path, stop: threading.Event | None) -> tuple[list[str], bool]:
    """The codecs of ``source``'s audio streams, as FFmpeg names them (``["aac"]``), and
    whether it holds QuickTime metadata keys (``mdta``: an iPhone's date, place and model)."""
    try:
        text = _listing(ffmpeg, source, stop)
    except _SlowQuery:
        # Slow to list, as a file FFmpeg cannot read: nothing known of it, the copy still
        # tried (it waits as long as the file takes).
        text = ""
    codecs = re.findall(r"Stream #\S+.*?: Audio: ([\w-]+)", text)
    return codecs, "com.apple.quicktime." in text


def _sound_maps(
    ffmpeg: str, source: str | os.PathLike[str], stop: threading.Event | None, input_index: int
) -> list[str]:
    """``-map`` options for the audio streams of ``source`` (FFmpeg's input ``input_index``)
    that hold sound FFmpeg can read: not a DVB recording's empty audio PID ("0 channels", on
    which FFmpeg's listing and mux both failed: no picture times, no sound at all), not a
    codec it cannot decode (an iPhone's APAC beside its AAC: every track was lost). All of
    them (``a?``) where the streams cannot be listed."""
    text = _listing_or_none(ffmpeg, source, stop)
    if text is None:
        return ["-map", f"{input_index}:a?"]
    decodable = set(re.findall(r"^ D[.E]A\S* +(\S+)", ffmpeg_list(ffmpeg, "codecs"), re.M))
    maps = []
    for n, line in enumerate(re.findall(r"Stream #\S+.*?: Audio: ([^\n]*)", text)):
        codec = line.split(" ", 1)[0].rstrip(",")
        if " Hz" in line and ", 0 channels" not in line and (not decodable or codec in decodable):
            maps += ["-map", f"{input_index}:a:{n}"]
    return maps


def subtitle_tracks(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> int:
    """How many subtitle streams ``source`` holds (0 where FFmpeg cannot read it): nothing
    copies them into a processed video (their times are the source's, and the output's
    container may not take their format), so the user is told."""
    return _listed(ffmpeg, source, stop, r"Stream #\S+.*?: Subtitle: ")


def cover_pictures(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> int:
    """How many cover pictures ``source`` holds (an MP4's ``attached_pic``, an MKV's image
    attachment; 0 where FFmpeg cannot read it): like subtitles, nothing copies them into a
    processed video, and an album's or a film's cover was gone without a word."""
    return _listed(ffmpeg, source, stop, r"Stream #\S+.*?: Video: [^\n]*\(attached pic\)")


def chapter_count(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> int:
    """How many chapters FFmpeg lists for ``source`` (0 where it cannot read it): `process`
    keeps them, a recording (`run`) is without them, and a film's chapters were gone from it
    without a word."""
    return _listed(ffmpeg, source, stop, r"^\s*Chapter #\d+:\d+: ")


def _listed(
    ffmpeg: str, source: str | os.PathLike[str], stop: threading.Event | None, pattern: str
) -> int:
    """How many lines of FFmpeg's listing of ``source`` ``pattern`` matches (0 where it cannot
    read it)."""
    text = _listing_or_none(ffmpeg, source, stop)
    return 0 if text is None else len(re.findall(pattern, text, re.MULTILINE))


def other_streams(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> dict[str, int]:
    """How many streams of ``source`` besides its first video, its sound, its subtitles and
    its covers FFmpeg lists, by kind: ``"video"`` (the video streams after the first, which
    SharpCam does not read), ``"timecode"`` (a camera's ``tmcd`` track) and ``"data"`` (any
    other data stream: a GoPro's ``gpmd`` sensor track, an MPEG-TS KLV or SCTE-35 one); kinds
    it has none of are left out, and all of them where FFmpeg cannot read it. Nothing copies
    them into a processed video: a second camera angle or a GoPro's telemetry was gone
    without a word. Read from the listing the other questions share: no FFmpeg run of its
    own."""
    text = _listing_or_none(ffmpeg, source, stop)
    if text is None:
        return {}
    # By stream number: an MPEG-TS lists a stream once under each program that holds it.
    streams = dict(re.findall(r"Stream #(\d+:\d+)\S*?: (\w+: [^\n]*)", text))
    videos = [line for line in streams.values() if line.startswith("Video: ")]
    # Not a QuickTime chapter track (``text``): `process` keeps the chapters it holds.
    data = [
        line
        for line in streams.values()
        if line.startswith("Data: ") and "(text / 0x74786574)" not in line
    ]
    timecodes = sum("(tmcd " in line for line in data)
    counts = {
        "video": max(0, sum("(attached pic)" not in line for line in videos) - 1),
        "timecode": timecodes,
        "data": len(data) - timecodes,
    }
    return {kind: n for kind, n in counts.items() if n}


def video_depth(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> int | None:
    """The bits a sample of ``source``'s video holds, by FFmpeg's pixel format (10 for
    ``yuv420p10le``, 16 for ``rgb48le``, 8 for ``yuv420p``); None where FFmpeg cannot tell.
    A cover picture's stream is not the video's."""
    text = _listing_or_none(ffmpeg, source, stop)
    if text is None:
        return None
    for line in re.findall(r"Stream #\S+.*?: Video: [^\n]*", text):
        if "(attached pic)" in line:
            continue
        pix = re.search(r"Video: .*?, ([a-z][a-z0-9_]*)\b", line)
        if pix is None:
            return None
        # Formats of more than 8 bits end in their depth and byte order; nv12 is 8-bit and
        # rgb565le's digits are a packing: neither says a depth.
        bits = re.search(r"(\d+)(?:le|be)$", pix.group(1))
        depth = {48: 16, 64: 16}.get(int(bits.group(1)), int(bits.group(1))) if bits else 8
        return depth if 8 < depth <= 16 else 8
    return None


def has_kept_tags(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> bool:
    """Whether ``source`` carries a date, place or camera that :func:`copy_audio` would copy
    (it copies them for a silent video too)."""
    text = _listing_or_none(ffmpeg, source, stop)
    if text is None:
        return False
    return _KEPT_TAGS.search(text) is not None


def _video_line(ffmpeg: str, source: str | os.PathLike[str], stop: threading.Event | None) -> str:
    """FFmpeg's line for ``source``'s first video stream that is not a cover picture (""
    where it has none, or FFmpeg cannot read it)."""
    text = _listing_or_none(ffmpeg, source, stop)
    if text is None:
        return ""
    lines = re.findall(r"Stream #\S+.*?: Video: [^\n]*", text)
    # A tagger may store an MP4's cover (its udta) before the tracks, and FFmpeg then lists
    # it first: its JPEG's tags were taken for the video's, an HDR clip's transfer unseen.
    return next((line for line in lines if "(attached pic)" not in line), "")


def cover_comes_first(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> bool:
    """Whether the first video stream FFmpeg lists of ``source`` is a cover picture with a
    video after it (False where FFmpeg cannot read it): OpenCV, which takes the first video
    stream and has no way to name another, then decodes the cover in place of the video."""
    text = _listing_or_none(ffmpeg, source, stop)
    if text is None:
        return False
    lines = re.findall(r"Stream #\S+.*?: Video: [^\n]*", text)
    return bool(lines) and "(attached pic)" in lines[0] and bool(_video_line(ffmpeg, source, stop))


def hdr_transfer(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> str | None:
    """``"PQ"`` or ``"HLG"`` where ``source``'s first video stream is HDR by its transfer
    (FFmpeg's ``smpte2084`` or ``arib-std-b67``), None otherwise or where FFmpeg cannot tell.
    OpenCV decodes such a stream to 8-bit SDR without converting its primaries: saturated
    colours do not survive."""
    return _transfer_of(_video_line(ffmpeg, source, stop))


def _transfer_of(line: str) -> str | None:
    """:func:`hdr_transfer` from FFmpeg's line for the stream."""
    if "smpte2084" in line:
        return "PQ"
    return "HLG" if "arib-std-b67" in line else None


def _untagged(line: str) -> str:
    """The ``setparams`` filter naming BT.2020's matrix and primaries where FFmpeg's stream
    ``line`` (``yuv420p10le(tv, unknown/bt2020/smpte2084)``) leaves them unknown, with a
    comma after it; "" where both are tagged. An HDR transfer without them is BT.2020's in
    practice, and ``zscale`` refuses a conversion from unknown ("no path between
    colorspaces")."""
    tags = re.search(r"\w\((?:(?:tv|pc), )?([\w-]+)/([\w-]+)/[\w-]+", line)
    matrix, primaries = tags.groups() if tags else ("unknown", "unknown")
    params = [
        *(["colorspace=bt2020nc"] if matrix == "unknown" else []),
        *(["color_primaries=bt2020"] if primaries == "unknown" else []),
    ]
    return f"setparams={':'.join(params)}," if params else ""


#: HDR to SDR as ITU-R BT.2408 places it: linear light with HDR's reference white (203 cd/m²)
#: at 1.0, BT.2020's primaries to BT.709's, then a Möbius curve that leaves every level up to
#: 0.9 of that white as it is and rolls the highlights off below 1.0 (a hard clip blows out
#: skies and lamps; Hable's curve, FFmpeg's usual example, darkened a face by 27 levels).
#: ``desat=0``: the filter's default desaturation lifted SDR's 224 to 238. Measured on
#: pictures made PQ and HLG from SDR and mapped back: greys as they were, scikit-image's
#: photos 2.0 levels off on average (against OpenCV's decoding of their 4:2:0 SDR clip, whose
#: colour upsampling differs), a pure green within 25. Read as they are by OpenCV 5.1
#: (FFmpeg 9), the greys were right but not the primaries: that green came out (92, 228, 63).
TONE_MAP = (
    "zscale=t=linear:npl=203,format=gbrpf32le,zscale=p=bt709,"
    "tonemap=tonemap=mobius:param=0.9:desat=0,zscale=t=bt709,format=gbrp"
)


@functools.lru_cache(maxsize=8)
def ffmpeg_list(ffmpeg: str, kind: str) -> str:
    """``ffmpeg``'s list of ``kind`` (``"filters"``, ``"encoders"``), asked once per executable;
    "" where it cannot run."""
    try:
        # check=False: it names no file, so one past its limit is FFmpeg itself, not a file
        # slow to read; kept in use on its -version, the runs after (no limit) waited for good.
        return _run([ffmpeg, "-hide_banner", f"-{kind}"], None, _QUERY_TIMEOUT_S, check=False)[1]
    except RemuxError:
        return ""


def tone_map_problem(ffmpeg: str) -> str | None:
    """Why ``ffmpeg`` cannot run :data:`TONE_MAP` (a build without the zimg library has no
    ``zscale``), or None where it can."""
    filters = ffmpeg_list(ffmpeg, "filters")
    if not filters:
        return f"{ffmpeg} did not list its filters"
    missing = [
        f for f in ("zscale", "tonemap") if not re.search(rf"^\s*\S+\s+{f}\s", filters, re.M)
    ]
    if missing:
        return f"the FFmpeg found ({ffmpeg}) has no {' or '.join(missing)} filter"
    return None


class SdrFrames:
    """The pictures of a video's first video stream decoded by FFmpeg, an HDR one's tone
    mapped to 8-bit SDR BT.709 (:data:`TONE_MAP`; ``filters`` names another graph, see
    :func:`exact_colour_filters`) as they are read: BGR, turned upright, every picture once at
    its own time, so that they pair one to one with :func:`picture_times` (and with what
    OpenCV decodes of an SDR file). Nothing is written to disk: a copy of a phone's clip
    was 4.8 times its size, and cost the output its room on a nearly full disk.

    Args:
        source: the video.
        size: ``(W, H)`` of its pictures, upright (what OpenCV decodes of it).
        ffmpeg: the executable.

    Damaged pictures are skipped as OpenCV skips them (FFmpeg's ``-max_error_rate 1``: by
    default it gave up on a file with many, where OpenCV read on).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        size: tuple[int, int],
        *,
        ffmpeg: str,
        sync: str = "-fps_mode",
        line: str | None = None,
        filters: str | None = None,
        codec_cropping: bool = True,
    ):
        self.size = (int(size[0]), int(size[1]))
        if filters is None:  # an HDR video's: tone mapped
            if line is None:  # FFmpeg's line for the stream, where the caller has not read it
                line = _video_line(ffmpeg, source, None)
            order = field_order(line)
            filters = (f"{DEINTERLACE}," if order else "") + _untagged(line) + TONE_MAP
        # sync: "-vsync" for an FFmpeg older than 5.1, which knows no -fps_mode. Without it,
        # a rawvideo pipe is constant-rate: pictures would be repeated or dropped.
        # codec_cropping: only the crop the stream itself codes, as OpenCV applies it; from
        # 7.1 FFmpeg also applies a container's (an MP4's clean aperture), and its smaller
        # pictures were read at OpenCV's size, as stripes. Older ones know no such option.
        crop = ["-apply_cropping", "codec"] if codec_cropping else []
        self._command = [
            ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-max_error_rate", "1",
            *crop, "-i", file_arg(source), "-map", "0:v:0", "-vf", filters,
            sync, "passthrough", "-an", "-sn", "-dn",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1",
        ]  # fmt: skip
        self.frames = 0
        self.error_output = ""  # all FFmpeg said, once it ended
        self._held: np.ndarray | None = None
        # close() and restart() from different threads (a stop while a loop starts again)
        # must not leave an FFmpeg started after the close, which nobody would end.
        self._lock = threading.Lock()
        self._shut = False
        self._start()

    def _start(self) -> None:
        self._ended = False  # its output reached its end
        self._errors = tempfile.TemporaryFile()  # a pipe nobody reads could fill and stall it
        # Its own process group: a Ctrl-C in the terminal ended FFmpeg at once, before SharpCam
        # noticed it, and the video looked complete at the frame it had reached.
        group: dict[str, Any] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
            if os.name == "nt"
            else {"start_new_session": True}
        )
        try:
            self._proc = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._errors,
                **group,
            )
        except OSError as exc:
            self._errors.close()
            raise RemuxError(f"cannot run {self._command[0]}: {exc.strerror or exc}") from exc

    def restart(self) -> None:
        """From the first picture again (a file played in a loop); nothing once closed."""
        with self._lock:
            if self._shut:
                return
            self._end()
            self._held = None
            self._start()

    def hold(self, picture: np.ndarray) -> None:
        """Give ``picture`` (one :meth:`read` returned) again at the next :meth:`read`."""
        self._held = picture

    def read(self) -> np.ndarray | None:
        """The next picture, ``(H, W, 3)`` uint8 BGR, or None at the end (or once closed)."""
        if self._held is not None:
            held, self._held = self._held, None
            return held
        stdout = self._proc.stdout
        if stdout is None or stdout.closed:
            return None
        w, h = self.size
        img = np.empty((h, w, 3), np.uint8)
        view = memoryview(img).cast("B")
        got = 0
        try:
            while got < len(view):
                n = stdout.readinto(view[got:])
                if not n:
                    self._ended = True
                    return None  # the end, or FFmpeg failed: :meth:`close` says why
                got += n
        except (OSError, ValueError):  # closed by another thread meanwhile
            return None
        self.frames += 1
        return img

    def close(self) -> str:
        """End FFmpeg, for good; returns its error output's last line where it failed (""
        otherwise, and where it was ended here)."""
        with self._lock:
            self._shut = True
            return self._end()

    def _end(self) -> str:
        proc = self._proc
        if self._ended:
            # Its output ended: it is ending by itself, and its status says how (polled at
            # once, a failed FFmpeg still closing counted as ended here, its reason lost).
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        ended_here = proc.poll() is None
        if ended_here:
            # Killed, not asked: it writes nothing but the pipe, and on SIGTERM it first
            # flushed every picture in flight (a second at 4K). Before the pipe is closed: a
            # read in progress on another thread holds the pipe's lock until FFmpeg writes
            # or goes (the close waited for it).
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()
        try:
            self._errors.seek(0)
            text = self._errors.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):  # ended before
            return ""
        finally:
            self._errors.close()
        self.error_output = text
        if ended_here or proc.returncode == 0:
            return ""
        # The last line: FFmpeg ends with the reason it gave up ("Decode error rate ...
        # exceeds maximum"), after one line per damaged picture.
        lines = [t.strip() for t in text.splitlines() if t.strip()]
        last = re.sub(r"^\[[^]]*@ \w+\] ", "", lines[-1]) if lines else ""
        return last or f"ffmpeg exited with status {proc.returncode}"


class ToneMapping(NamedTuple):
    """What :func:`tone_map_hdr` did with an HDR video."""

    transfer: str  # "PQ" or "HLG"
    problem: str | None  # why its pictures are read as they are; None: tone mapped


def tone_map_hdr(source: Any, *, ffmpeg: str | None = None) -> ToneMapping | None:
    """Where ``source`` (an ``engine.sources.VideoFileSource``, not read yet) is an HDR video,
    have it read the pictures tone mapped to SDR by FFmpeg (:class:`SdrFrames`, handed over
    with its ``decode_with``). None for SDR video, and where no FFmpeg can tell.

    Where this FFmpeg cannot tone map (no ``zscale``) or fails on the file before its first
    picture, ``source`` stays as it was and :attr:`ToneMapping.problem` says why.

    An SDR video whose colours OpenCV's decoder gets wrong (:func:`exact_colour_filters`) is
    read through FFmpeg too, with nothing to say; where FFmpeg fails on it, OpenCV reads it.
    """
    ffmpeg = ffmpeg or find_ffmpeg()
    if ffmpeg is None:
        return None
    line = _video_line(ffmpeg, source.path, None)  # read once: the transfer, and the tags
    transfer = _transfer_of(line)
    if transfer is None:
        _decode_exactly(source, ffmpeg, line)
        return None
    problem = tone_map_problem(ffmpeg)
    if problem:
        return ToneMapping(transfer, problem)
    try:
        frames, why = _start_frames(source, ffmpeg, line=line)
    except RemuxError as exc:
        return ToneMapping(transfer, str(exc))
    if frames is None:
        return ToneMapping(transfer, f"tone mapping failed: {why}")
    source.decode_with(frames)
    source.deinterlaced = field_order(line)
    _time_pictures(source, ffmpeg)
    return ToneMapping(transfer, None)


#: How :class:`SdrFrames` is started, newest FFmpeg first: ``(sync option, codec_cropping)``;
#: one whose error names an option the FFmpeg lacks ("Unrecognized option 'fps_mode'.")
#: tries the next.
_STARTS = (("-fps_mode", True), ("-fps_mode", False), ("-vsync", False))


def _start_frames(source: Any, ffmpeg: str, **options: Any) -> tuple[SdrFrames | None, str]:
    """:class:`SdrFrames` for ``source`` (a ``VideoFileSource``) with its first picture read
    and held (the filter graph's errors come before any picture), or None and why FFmpeg gave
    none. Raises :class:`RemuxError` where FFmpeg cannot be run."""
    why = "FFmpeg gave no picture"
    for sync, crop in _STARTS:
        frames = SdrFrames(
            source.path,
            source.decoded_size,
            ffmpeg=ffmpeg,
            sync=sync,
            codec_cropping=crop,
            **options,
        )
        first = frames.read()
        if first is not None:
            frames.hold(first)
            return frames, ""
        why = frames.close() or why
        said = frames.error_output
        if not ("apply_cropping" in said and crop) and not (
            "fps_mode" in said and sync == "-fps_mode"
        ):
            break
    return None, why


#: FFmpeg's names of colour matrices (``-colorspace``), as its stream line prints them.
_MATRICES = frozenset(
    "rgb gbr bt709 unknown reserved fcc bt470bg smpte170m smpte240m ycgco ycocg bt2020nc "
    "bt2020c smpte2085 chroma-derived-nc chroma-derived-c ictcp".split()
)
#: The conversion to 8-bit BGR: rounded (OpenCV's, FFmpeg's default, truncates: 0.6 of a
#: level darker on average). Not full_chroma_int as well: it doubled the cost (9-11 against
#: 4-6 ms a 720p frame here) for a mean difference of 0.9 levels, at colour edges.
_EXACT = "flags=accurate_rnd"


def exact_colour_filters(line: str) -> str | None:
    """The FFmpeg filters that decode the video stream of FFmpeg's ``line`` to the colours a
    player shows, where OpenCV's decoder does not; None where it does.

    * More than 8 bits in 4:2:0 (a phone's or camera's 10-bit H.264 or HEVC): OpenCV's
      conversion turned an exact grey (502/512/512) magenta, (128, 126, 128).
    * YUV without a colour matrix, of HD size (players take BT.709 from 1280 wide or 577
      high; not a JPEG's, BT.601 at any size): OpenCV decoded it as BT.601, a pure red as
      (232, 0, 1), and the output, tagged, kept that shift in every player.
    """
    pix = re.search(r"Video: .*?, (yuvj?4\d\dp(\d*)\w*)(?:\(([^)]*)\))?", line)
    if pix is None:
        return None
    depth = int(pix.group(2) or 8)
    fields = [f.strip() for f in (pix.group(3) or "").split(",")]
    matrix = next((f.split("/")[0] for f in fields if f.split("/")[0] in _MATRICES), "unknown")
    size = re.search(r", (\d+)x(\d+)\b", line[pix.end() :])
    w, h = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    # Not a JPEG's (MJPEG: a webcam's recording), whose matrix is BT.601 at any size.
    untagged_hd = (
        matrix in ("unknown", "reserved")
        and (w >= 1280 or h > 576)
        and not re.search(r"Video: (?:mjpeg|jpeg|jpegls|ljpeg)\b", line)
    )
    if untagged_hd:
        return f"scale=in_color_matrix=bt709:{_EXACT},format=bgr24"
    if depth > 8 and pix.group(1).startswith(("yuv420p", "yuvj420p")):
        return f"scale={_EXACT},format=bgr24"
    return None


#: FFmpeg's field orders of interlaced video, as its stream line prints them.
_FIELD_ORDERS = ("top first", "bottom first", "top coded first", "bottom coded first")
#: The de-interlacer: one picture per frame (the file's rate kept), only those flagged
#: interlaced (a stream may mix in progressive ones).
DEINTERLACE = "bwdif=mode=send_frame:deint=interlaced"


def field_order(line: str) -> str | None:
    """The field order of the interlaced video stream of FFmpeg's ``line`` ("top first"),
    None for progressive or untagged video. OpenCV decodes such a frame with its two fields
    woven, and the sharpened frame kept the combs of every moving edge, tagged progressive,
    so that no player took them out any more."""
    # One level of parentheses inside: "yuv420p(tv, top coded first (swapped))".
    fields = re.search(r"Video: .*?, [a-z]\w*\(((?:[^()]|\([^()]*\))*)\)", line)
    if fields is None:
        return None
    for field in (f.strip() for f in fields.group(1).split(",")):
        if field.startswith(_FIELD_ORDERS):
            return field.removesuffix(" (swapped)")
    return None


def _decode_exactly(source: Any, ffmpeg: str, line: str) -> None:
    """Have ``source`` (an SDR ``VideoFileSource``, not read yet) read through FFmpeg where
    :func:`exact_colour_filters` says OpenCV's colours are wrong; as it was otherwise, and
    where FFmpeg fails on the file before its first picture."""
    filters = exact_colour_filters(line)
    order = field_order(line)
    if order is not None:
        filters = f"{DEINTERLACE},{filters or f'scale={_EXACT},format=bgr24'}"
    if filters is None:
        return
    opencv_first = source.first_picture
    try:
        frames, why = _start_frames(source, ffmpeg, filters=filters)
    except RemuxError as exc:
        frames, why = None, str(exc)
    if frames is not None and opencv_first is not None:
        # The same picture, but for its colours: any other size or content (a crop this
        # FFmpeg applies and OpenCV does not) would be read as garbage.
        ours = frames.read()
        frames.hold(ours)
        # De-interlaced, only the rows of the field bwdif keeps: the first field's (odd rows
        # when the bottom field comes first). The others are rebuilt, and the woven ones of a
        # moving first picture differed by 196 levels: a DV camcorder's clip stayed combed.
        rows = 1 if order is not None and order.startswith("bottom") else 0
        if pictures_differ(ours[rows::4, ::4], opencv_first[rows::4, ::4]):
            frames.close()
            frames, why = None, "its first picture differs from OpenCV's"
    if frames is None:
        log.info("%s: read by OpenCV, not FFmpeg: %s", source.path.name, why)
        return
    source.decode_with(frames)
    source.deinterlaced = order
    _time_pictures(source, ffmpeg)


def _time_pictures(source: Any, ffmpeg: str) -> None:
    """Where ``source`` (a ``VideoFileSource`` reading through :class:`SdrFrames`) plays
    live, list its pictures' times on a thread of their own and hand them over
    (``use_picture_times``): FFmpeg's decoder gives none, and a variable-rate clip played at
    its mean rate. The listing stops when the source is interrupted or closed."""
    if not getattr(source, "live", False):
        return
    stop = getattr(source, "_interrupt", None)

    def work() -> None:
        try:
            found = picture_times(source.path, ffmpeg=ffmpeg, stop=stop, from_key=True)
        except Exception as exc:  # RemuxStopped on a close; any failure leaves one period
            log.debug("%s: no picture times: %s", source.path.name, exc)
            return
        if found is not None and found.times:
            first = found.times[0]
            source.use_picture_times([(t - first) / found.timescale for t in found.times])

    threading.Thread(target=work, name="sharpcam-picture-times", daemon=True).start()


class PictureTimes(NamedTuple):
    """When each picture of a video is shown, in units of 1 / ``timescale`` s from the start
    of the file, in the order they are shown; ``end``: when the last one stops being shown
    (None where the file does not say)."""

    timescale: int
    times: list[int]
    end: int | None


def picture_times(
    source: str | os.PathLike[str],
    *,
    ffmpeg: str,
    stop: threading.Event | None = None,
    as_stored: bool = False,
    frames: int | None = None,
    first_s: float | None = None,
    from_key: bool = False,
) -> PictureTimes | None:
    """The :class:`PictureTimes` of ``source``'s first video stream, from its packets'
    times (nothing is decoded): from the file's start time (its earliest stream's), or with
    ``as_stored`` as the file stores them (from 0, as a Matroska duration counts). None where
    FFmpeg cannot tell (an FFmpeg older than 5.1 without ``-fps_mode``, a file it cannot
    read).

    ``frames``, the pictures the decoder gave, where known: a file that begins between
    keyframes holds packets it may not show (an H.264 decoder shows none before the first
    keyframe; MPEG-4 part 2's shows them all). Where the packets outnumber ``frames`` and
    those from the first keyframe on match it, only those are listed. ``first_s``: of the
    first seconds only (a 30-minute recording took 2.5 s to list whole). ``from_key``, where
    ``frames`` is not known: as an H.264 or HEVC decoder shows them, from the first keyframe
    on and none shown before it (an open GOP's leading pictures).
    """
    found = _packets(source, ffmpeg=ffmpeg, stop=stop, as_stored=as_stored, first_s=first_s)
    if found is None:
        return None
    timescale, listed = found

    def shown(packets: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
        return sorted(
            (pts, duration)
            for pts, duration, _ in packets
            # Before 0: the lead-in an edit list cuts (a clip trimmed by stream copy), not shown.
            if pts >= 0
        )

    packets = shown(listed)
    key = next((i for i, (_, _, flags) in enumerate(listed) if flags & 1), 0)
    if from_key and frames is None and listed and not listed[0][2] & 1:
        packets = [p for p in shown(listed[key:]) if p[0] >= listed[key][0]]
    elif frames is not None and len(packets) > frames:
        # A stream-copied cut or a TS capture joined late: timed from its first packet, the
        # sound was cut 2 s early and the pictures ran that far ahead of it.
        if len(from_key := shown(listed[key:])) == frames:
            packets = from_key
        elif len(clean := [p for p in from_key if p[0] >= listed[key][0]]) == frames:
            # An open GOP (x265's default): pictures after the keyframe in decode order but
            # shown before it refer to the GOP cut away, and are not shown either.
            packets = clean
    if not packets:
        return None
    last, last_duration = packets[-1]
    end = last + last_duration if last_duration > 0 else None
    return PictureTimes(timescale, [pts for pts, _ in packets], end)


#: FFmpeg's "no value" for a time (AV_NOPTS_VALUE), as its listings print it.
_NO_TIME = -(2**63)


def _packets(
    source: str | os.PathLike[str],
    *,
    ffmpeg: str,
    stop: threading.Event | None = None,
    as_stored: bool = False,
    first_s: float | None = None,
) -> tuple[int, list[tuple[int, int, int]]] | None:
    """The time base (1 / its value) and ``(pts, duration, flags)`` of each packet of
    ``source``'s first video stream, in decode order, from FFmpeg's listing (nothing is
    decoded), from the file's start time or (``as_stored``) as stored, of its first
    ``first_s`` seconds where given; None where FFmpeg cannot list them."""
    copyts = ["-copyts"] if as_stored else []
    first = ["-t", f"{first_s:g}"] if first_s else []
    status, text = _run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", file_arg(source), *copyts,
         # With its sound (listed as stream 1, not read): FFmpeg starts an MPEG-TS or -PS
         # file's clock at the earliest of the streams used, so the pictures alone began at
         # 0 however late after the sound they start, as :func:`_mux` has them too.
         "-map", "0:v:0", *_sound_maps(ffmpeg, source, stop, 0),
         # -copyinkf: packets before the first keyframe, which OpenCV's decoder shows too
         "-c", "copy", "-copyinkf", "-fps_mode", "passthrough", *first, "-f", "framecrc", "-"],
        stop,
    )  # fmt: skip
    # "#tb 0: 1/12800", then per packet "0, dts, pts, duration, size, crc[, F=0x3]"
    base = re.search(r"^#tb 0: (\d+)/(\d+)", text, re.M)
    if status != 0 or base is None or int(base.group(1)) < 1 or int(base.group(2)) < 1:
        return None
    listed = re.findall(
        r"^0,\s*(-?\d+),\s*(-?\d+),\s*(-?\d+),\s*\d+,\s*0x[0-9a-fA-F]+(?:,\s*F=0x([0-9a-fA-F]+))?",
        text,
        re.M,
    )
    # A clock of N/D seconds (an AVI at 29.97 fps: 100/2997) counts in ticks of 1/D, N each:
    # read as "not 1/N", such files had no packet count, and a frame cut off by a full disk
    # was counted again.
    tick = int(base.group(1))
    return int(base.group(2)), [
        # No time to show it at (an AVI's I and P pictures among B ones: FFmpeg's "no value",
        # -2**63): its decode time, on the AVI's one-rate grid as OpenCV shows it. Read as
        # before 0, the first picture was a B at 0.067 s and 1.3 s of sound was cut.
        ((int(p) if int(p) != _NO_TIME else int(dts)) * tick, int(d) * tick, int(f or "1", 16))
        for dts, p, d, f in listed
    ]


def sound_end(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> float | None:
    """When the last sound of ``source`` ends, in seconds as the file stores it (from 0, as
    its duration counts), from its audio packets (nothing is decoded); None where it has no
    sound or FFmpeg cannot list it."""
    maps = _sound_maps(ffmpeg, source, stop, 0)
    if not maps:
        return None  # without a -map, FFmpeg would list the pictures too
    status, text = _run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", file_arg(source), "-copyts",
         *maps, "-c", "copy", "-f", "framecrc", "-"],
        stop,
    )  # fmt: skip
    if status != 0:
        return None
    bases = {
        int(i): int(n) / int(d)
        for i, n, d in re.findall(r"^#tb (\d+): (\d+)/(\d+)", text, re.M)
        if int(d) > 0
    }
    ends = [
        (int(pts) + max(int(duration), 0)) * bases[int(i)]
        for i, pts, duration in re.findall(r"^(\d+),\s*-?\d+,\s*(-?\d+),\s*(-?\d+),", text, re.M)
        if int(i) in bases
    ]
    return max(ends) if ends else None


def packet_count(
    source: str | os.PathLike[str], *, ffmpeg: str, stop: threading.Event | None = None
) -> int | None:
    """The pictures in ``source``'s first video stream: its packets, less those the demuxer
    flags corrupt (a file cut off by a full disk ends in a fragment of one, with nothing to
    show); None where FFmpeg cannot list them."""
    found = _packets(source, ffmpeg=ffmpeg, stop=stop)
    return None if found is None else sum(not flags & 2 for _, _, flags in found[1])


#: A frame shown this much off the mean rate's grid (seconds) counts as a varying rate, however
#: slow the rate: half a frame of a 5 fps GIF is 0.1 s.
_MAX_OFF_GRID_S = 0.02


def _durations(
    times: list[int], end: int | None = None, timescale: int | None = None, *, always: bool = False
) -> list[int] | None:
    """Frame durations from the times the frames are shown and when the last one ends
    (without ``end`` it lasts as long as the one before it), in ticks of ``timescale`` per
    second; None where the rate does not vary (or cannot be read from them). ``always``:
    also where it does not vary."""
    # The end counts: a GIF's pictures 0.1 s apart with the last held 3 s (a title card)
    # was called constant and every picture written at the mean, 0.82 s.
    edges = [*times, end] if end is not None and end > times[-1] else times
    steps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    if not steps or min(steps) < 1:
        return None
    if always:
        return steps if len(steps) == len(times) else [*steps, steps[-1]]
    mean = (edges[-1] - edges[0]) / len(steps)
    # Constant where every frame is within half a frame of the mean rate's grid (a 29.97 fps
    # clip on a 1/600 clock: steps of 20 and 21). Not step by step: a minute at 30 fps then
    # one at 28.57 (steps of 20, then 21) drifted 1.5 s from its sound.
    drift = max(abs(t - edges[0] - i * mean) for i, t in enumerate(edges))
    # Half a frame, but never more than _MAX_OFF_GRID_S: a GIF's frames of 0.1 and 0.3 s by
    # turns sit half a frame off the grid each, and were all played at 0.2 s.
    off = mean / 2 if not timescale else min(mean / 2, _MAX_OFF_GRID_S * timescale)
    if drift <= max(1.0, off):
        return None
    return steps if len(steps) == len(times) else [*steps, steps[-1]]


def keep_timing(
    source: str | os.PathLike[str],
    video: str | os.PathLike[str],
    *,
    frames: int,
    ffmpeg: str | None = None,
    stop: threading.Event | None = None,
    gaps: Sequence[tuple[int, float]] = (),
    decoded_s: float | None = None,
) -> str:
    """Give ``video`` (a video OpenCV wrote from ``source``'s ``frames`` pictures, one frame
    each) the frame durations of ``source`` where its frame rate varies. Returns
    ``"retimed"`` where it did (an MP4 or MOV; an MKV through a MOV, :func:`_retime_mkv`),
    ``"failed"`` where it could not rewrite ``video`` (a full disk; ``video`` is as it was),
    ``"varies"`` where the rate varies and ``video``'s container cannot take the durations
    (an AVI has one rate), and ``""`` otherwise: a constant rate, a count of pictures other
    than ``frames`` (frames the decoder dropped), no FFmpeg, or one that cannot tell. At a
    constant rate with pictures lost after the first (``gaps``), ``"early"`` or
    ``"failed-early"`` in place of ``"varies"`` or ``"failed"``: the frames after them play
    early, ahead of the sound.

    ``gaps``: the damaged pictures the decoder lost (``VideoFileSource.gaps``: the pictures
    decoded before each run of them, and the seconds from the one before it to the one
    after). Their times are left out and the picture before each run lasts until the one
    after, at a constant rate too (``""`` where that was done: the rate does not vary):
    written one after another, the pictures after a gap came a frame early each. A run at the
    start (``before`` 0) only moves the first time (the sound starts there: :func:`copy_audio`).
    ``decoded_s``: the seconds from the first picture decoded to the last, where known: where
    the pictures after it were lost (a damaged last picture), the last one written lasts to
    the end of ``source``'s.

    Raises:
        RemuxStopped: ``stop`` was set; ``video`` is as it was.
    """
    from engine.sinks import retime_mp4

    ffmpeg = ffmpeg or find_ffmpeg()
    if ffmpeg is None:
        return ""
    gaps = [(before, span) for before, span in gaps if 0 <= before < frames]
    try:
        # With gaps the packets outnumber the pictures: not the sign of a start between
        # keyframes that ``frames`` looks for.
        found = picture_times(source, ffmpeg=ffmpeg, stop=stop, frames=None if gaps else frames)
    except RemuxStopped:
        raise
    except RemuxError:  # an FFmpeg that cannot run: the mean rate, as without one
        return ""
    if found is None:
        return ""
    times = _without_gaps(found.times, gaps, found.timescale) if gaps else found.times
    lost_at_end = (
        decoded_s is not None
        and 0 < frames < len(times)
        and _nearest(times, times[0] + decoded_s * found.timescale) == frames - 1
    )
    if lost_at_end:
        # Not "other pictures": a varying rate was lost whole, its frames at the mean rate.
        times = times[:frames]
    if len(times) != frames:
        return ""
    varies = _durations(found.times, found.end, found.timescale) is not None
    # Lost at the start only, the pictures keep their steps: the sound starts later instead.
    early = any(before for before, _ in gaps)
    durations = _durations(times, found.end, found.timescale, always=early or lost_at_end)
    if durations is None:
        return ""
    ext = Path(video).suffix.lower()
    if ext == ".mkv":
        done = _retime_mkv(ffmpeg, Path(video), durations, found.timescale, stop)
    elif ext not in _MP4_LIKE:
        done = "varies"
    else:
        done = "retimed" if retime_mp4(video, durations, found.timescale) else "failed"
    if varies:
        return done
    if not early or done == "retimed":
        return ""
    # A constant rate: not "varies", which sent users looking for a fault the input has not.
    return "failed-early" if done == "failed" else "early"


def _nearest(times: list[int], target: float) -> int:
    """The index of the time in ``times`` (sorted) nearest to ``target``."""
    at = bisect.bisect_left(times, target)
    if at == len(times) or (at > 0 and target - times[at - 1] <= times[at] - target):
        return at - 1
    return at


def _without_gaps(times: list[int], gaps: Sequence[tuple[int, float]], timescale: int) -> list[int]:
    """``times`` (sorted) less those of the pictures lost in ``gaps`` (see
    :func:`keep_timing`): after each, the decoded pictures go on from the time nearest to the
    one before it plus the gap's span (packet times and OpenCV's differ by rounding); after
    one at the start (``before`` 0), from the first time plus its span."""
    kept: list[int] = []
    at = 0  # where in ``times`` the next picture decoded is
    for before, span in sorted(gaps):
        take = before - len(kept)
        if take < (1 if before else 0) or at + take > len(times) or not times:
            return []  # not this file's pictures: the count tells the caller
        kept += times[at : at + take]
        at += take
        target = (kept[-1] if kept else times[0]) + span * timescale
        after = bisect.bisect_left(times, target, at)
        if after > at and (
            after == len(times) or target - times[after - 1] <= times[after] - target
        ):
            after -= 1
        at = after
    return kept + times[at:]


def _retime_mkv(
    ffmpeg: str,
    video: Path,
    durations: list[int],
    timescale: int,
    stop: threading.Event | None,
) -> str:
    """:func:`keep_timing` for an MKV: its frames copied into a hidden MOV, whose index takes
    the durations (:func:`engine.sinks.retime_mp4`: an H.264 stream's SPS its clock too), and
    copied back into a hidden MKV that replaces ``video`` when whole. Matroska stores each
    frame's time (in milliseconds), not a rate: the copies keep the times the MOV says.
    ``"retimed"``, or ``"failed"`` with ``video`` as it was.

    Raises:
        RemuxStopped: ``stop`` was set; ``video`` is as it was.
    """
    from engine.sinks import SinkError, _create_partial, retime_mp4

    made: list[Path] = []
    try:
        for target in (video.with_suffix(".mov"), video):
            path, file = _create_partial(target)
            file.close()  # FFmpeg writes it by name
            made.append(path)
        mov, mkv = made
        copy = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i"]
        status, _ = _run([*copy, file_arg(video), "-map", "0:v", "-c", "copy", "-f", "mov",
                          file_arg(mov)], stop)  # fmt: skip
        if status != 0 or not retime_mp4(mov, durations, timescale):
            return "failed"
        # Not the MOV's tags (its brand, handler and vendor): the MKV's are the writer's.
        status, _ = _run([*copy, file_arg(mov), "-map", "0:v", "-c", "copy",
                          "-map_metadata", "-1", "-f", "matroska", file_arg(mkv)], stop)  # fmt: skip
        if status != 0:
            return "failed"
        os.replace(mkv, video)
        made.remove(mkv)
        return "retimed"
    except RemuxStopped:
        raise
    except (OSError, SinkError, RemuxError):  # an FFmpeg that cannot run: as a failed copy
        return "failed"
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _mux(
    ffmpeg: str,
    source: Path,
    video: Path,
    out: Path,
    audio_codec: list[str],
    *,
    skip: float,
    stop: threading.Event | None,
    tags: Sequence[str] = (),
) -> str:
    """Run FFmpeg: ``video``'s pictures and ``source``'s sound from ``skip`` seconds on into
    ``out``. Returns its error output ("" when it succeeded)."""
    muxer = _MUXER.get(out.suffix.lower())
    # The sound moved `skip` earlier and the output cut at 0, not the source sought to `skip`:
    # an FLV's seek to 0.023 s landed at 1.5 s, its first 1.5 s of sound lost. Not the
    # pictures moved later and the output cut at `skip`: their times, rounded to their clock,
    # could fall before the cut, and with them every picture to the next keyframe (all).
    early = ["-itsoffset", f"{-skip:.6f}"] if skip > 0.001 else []
    cut = ["-ss", "0"] if skip > 0.001 else []
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-i", file_arg(video), *early, "-i", file_arg(source),
        # The source's pictures used too (and thrown away): its clock then starts as in
        # picture_times (an MPEG-TS or -PS clock starts at the earliest stream used; the
        # sound alone began at 0 however much later than the pictures it starts).
        "-map", "1:v:0", "-c", "copy", "-f", "null", "-",
        "-map", "0:v", *_sound_maps(ffmpeg, source, stop, 1), "-c:v", "copy", *audio_codec,
        # The date taken and the place (a phone's) are the source's; the pictures' own
        # colour tags and (upright) orientation stay those of the video written.
        "-map_metadata", "1", *tags, *cut,
        *(["-f", muxer] if muxer else []),
        file_arg(out),
    ]  # fmt: skip
    status, text = _run(command, stop)
    if status == 0:
        return ""
    # What went wrong, not FFmpeg's last word ("Error opening output files: Invalid argument"
    # for "Could not find tag for codec ... not supported in container").
    return ffmpeg_reason(text.encode()) or f"ffmpeg exited with status {status}"


def copy_audio(
    source: str | os.PathLike[str],
    video: str | os.PathLike[str],
    *,
    ffmpeg: str | None = None,
    stop: threading.Event | None = None,
    frames: int | None = None,
    gaps: Sequence[tuple[int, float]] = (),
) -> None:
    """Put the audio streams of ``source`` into ``video`` (written from its ``frames``
    pictures, where known: see :func:`picture_times`; ``gaps`` as for :func:`keep_timing`).

    ``video`` is rewritten beside itself under a hidden name and replaced only when FFmpeg
    succeeded, so a failure (or an interrupt) leaves it as it was. The audio is copied as
    it is, or re-encoded where ``video``'s container does not hold its codec playably (see
    :data:`_PLAYABLE`). The source's date, place and camera tags come along, an iPhone's
    QuickTime keys included; for a ``source`` without audio, they are all that is copied.

    The sound starts where the source's pictures do: sound before the first picture (a
    video that starts late) had no picture in the written video either.

    Raises:
        RemuxError: no ``ffmpeg`` (``ffmpeg=None`` and :func:`find_ffmpeg` finds none),
            or FFmpeg failed both ways; the message says why.
        RemuxStopped: ``stop`` was set; FFmpeg was ended.
    """
    ffmpeg = ffmpeg or find_ffmpeg()
    if ffmpeg is None:
        # One named wrong, or passed over for not answering earlier in the run: "install
        # FFmpeg" was no answer there.
        raise RemuxError(
            ffmpeg_unusable() or "no ffmpeg found (install FFmpeg, or pip install imageio-ffmpeg)"
        )
    from engine.sinks import partial_path

    source, video = Path(source), Path(video)
    out = partial_path(video)
    ext = video.suffix.lower()
    try:
        codecs, apple = _probe(ffmpeg, source, stop)
        # An iPhone's date, place, make and model are QuickTime metadata keys, which the
        # MP4/MOV muxer drops unless told to write them: they were lost without a word.
        tags = (
            # ...and without the source's file-type fields, which it then wrote as keys too.
            ["-movflags", "use_metadata_tags", "-metadata", "major_brand=",
             "-metadata", "minor_version=", "-metadata", "compatible_brands="]
            if apple and ext in _MP4_LIKE
            else []
        )  # fmt: skip
        # The written video starts with the source's first picture, so its sound must start
        # there too (a video whose pictures start a second after its sound played behind).
        # Where the first pictures were lost to damage, from the first one decoded: from the
        # first listed, the sound ran behind the pictures by the pictures lost.
        lead = [(0, span) for before, span in gaps if before == 0]
        shown = picture_times(source, ffmpeg=ffmpeg, stop=stop, frames=None if lead else frames)
        times = (_without_gaps(shown.times, lead, shown.timescale) or shown.times) if shown else []
        skip = times[0] / shown.timescale if shown and times else 0.0
        playable = _PLAYABLE.get(ext, ("",))
        why = "not tried"
        if all(c.startswith(playable) for c in codecs):
            why = _mux(
                ffmpeg, source, video, out, ["-c:a", "copy"], skip=skip, stop=stop, tags=tags
            )
        if why:
            # A codec the container does not take, or its players do not play (Vorbis, or
            # PCM in an MP4); in an AVI, always PCM.
            reencode = _AVI_AUDIO if ext == ".avi" else _AAC
            why = _mux(ffmpeg, source, video, out, reencode, skip=skip, stop=stop, tags=tags)
        if why:
            raise RemuxError(f"ffmpeg: {why}")
        os.replace(out, video)
    except OSError as exc:
        raise RemuxError(str(exc.strerror or exc)) from exc
    finally:
        with contextlib.suppress(OSError):
            out.unlink(missing_ok=True)
