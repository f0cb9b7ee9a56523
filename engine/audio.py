"""A processed video's sound, copied from its source with FFmpeg.

OpenCV reads and writes pictures only, so a video that ``process`` writes has no sound of
its own. Where an ``ffmpeg`` executable is found (on the ``PATH``, or the one the
``imageio-ffmpeg`` package bundles), the source's audio streams are muxed into the written
file afterwards: copied as they are where the output's container holds them playably,
re-encoded where it does not (to AAC; to PCM in an AVI). The pictures are copied untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["AudioCopyError", "copy_audio", "find_ffmpeg"]

#: Names an ``ffmpeg`` executable: it wins over the one found on the ``PATH``.
FFMPEG_ENV = "SHARPCAM_FFMPEG"


class AudioCopyError(RuntimeError):
    """The sound could not be copied; the video written before is left as it was."""


def find_ffmpeg() -> str | None:
    """An ``ffmpeg`` executable: ``$SHARPCAM_FFMPEG``, else ``ffmpeg`` on the ``PATH``, else
    the one bundled with ``imageio-ffmpeg`` where that package is installed; None without."""
    named = os.environ.get(FFMPEG_ENV)
    if named:
        return named if Path(named).is_file() else None
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary missing for this platform
        return None


#: Audio codecs each output container holds where players play them (FFmpeg's names):
#: copied as they are; any other is re-encoded (:data:`_REENCODE`). FFmpeg writes PCM into
#: an MP4 too (ISO 23003-5), which QuickTime and browsers do not play.
_PLAYABLE = {
    ".mp4": ("aac", "mp3", "ac3", "eac3", "alac"),
    ".m4v": ("aac", "mp3", "ac3", "eac3", "alac"),
    ".mov": ("aac", "mp3", "ac3", "eac3", "alac", "pcm_"),
    ".avi": ("pcm_", "mp3", "ac3"),
    ".mkv": ("",),  # Matroska holds any
}
#: What goes in where a codec is not playable there: AAC, or PCM in an AVI (lossless, and
#: an encoder every FFmpeg build has).
_REENCODE = {".avi": ["-c:a", "pcm_s16le"]}
_AAC = ["-c:a", "aac", "-b:a", "192k"]


def _audio_codecs(ffmpeg: str, source: Path) -> list[str]:
    """The codecs of ``source``'s audio streams, as FFmpeg names them (``["aac"]``)."""
    probe = subprocess.run(
        [ffmpeg, "-nostdin", "-hide_banner", "-i", str(source)],
        capture_output=True,
        text=True,
        errors="replace",
    )  # exits 1 (no output named): the stream list is all it is asked for
    return re.findall(r"Stream #\S+.*?: Audio: ([\w-]+)", probe.stderr)


def _mux(ffmpeg: str, source: Path, video: Path, out: Path, audio_codec: list[str]) -> str:
    """Run FFmpeg: ``video``'s pictures and ``source``'s sound into ``out``. Returns its
    error output ("" when it succeeded)."""
    command = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", str(video), "-i", str(source),
        "-map", "0:v", "-map", "1:a?", "-c:v", "copy", *audio_codec,
        # The date taken and the place (a phone's) are the source's; the pictures' own
        # colour tags and (upright) orientation stay those of the video written.
        "-map_metadata", "1",
        str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if done.returncode == 0:
        return ""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"ffmpeg exited with status {done.returncode}"


def copy_audio(
    source: str | os.PathLike[str], video: str | os.PathLike[str], *, ffmpeg: str | None = None
) -> None:
    """Put the audio streams of ``source`` into ``video`` (written from its pictures).

    ``video`` is rewritten beside itself under a hidden name and replaced only when FFmpeg
    succeeded, so a failure (or an interrupt) leaves it as it was. The audio is copied as
    it is, or re-encoded where ``video``'s container does not hold its codec playably (see
    :data:`_PLAYABLE`). A ``source`` without audio leaves ``video`` unchanged.

    Raises:
        AudioCopyError: no ``ffmpeg`` (``ffmpeg=None`` and :func:`find_ffmpeg` finds none),
            or FFmpeg failed both ways; the message says why.
    """
    ffmpeg = ffmpeg or find_ffmpeg()
    if ffmpeg is None:
        raise AudioCopyError("no ffmpeg found (install FFmpeg, or pip install imageio-ffmpeg)")
    from engine.sinks import partial_path

    source, video = Path(source), Path(video)
    out = partial_path(video)
    ext = video.suffix.lower()
    reencode = _REENCODE.get(ext, _AAC)
    try:
        codecs = _audio_codecs(ffmpeg, source)
        playable = _PLAYABLE.get(ext, ("",))
        why = "not tried"
        if all(c.startswith(playable) for c in codecs):
            why = _mux(ffmpeg, source, video, out, ["-c:a", "copy"])
        if why:
            # A codec the container does not take, or its players do not play (Vorbis, or
            # PCM in an MP4).
            why = _mux(ffmpeg, source, video, out, reencode)
        if why:
            raise AudioCopyError(f"ffmpeg: {why}")
        os.replace(out, video)
    except OSError as exc:
        raise AudioCopyError(str(exc.strerror or exc)) from exc
    finally:
        with contextlib.suppress(OSError):
            out.unlink(missing_ok=True)
