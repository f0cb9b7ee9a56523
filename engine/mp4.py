"""An MP4's index moved before its frames ("fast start"), so that it plays as it downloads.

FFmpeg and OpenCV write an MP4's index (the ``moov`` box: where each frame is, and when) after
the frames (``mdat``), since it is known only at the end. A player reading the file from its
start, as a browser does over a connection that takes no range requests, or a chat app's
upload check, must then fetch all of it before the first frame shows. :func:`faststart` puts
the index first and points its chunk offsets (``stco``, ``co64``) past it, as FFmpeg's
``-movflags +faststart`` does, on a file that is finished: every step before it (the colour
tag, the source's frame durations, the sound) edits an index that comes last.

The frames are copied, not re-encoded; the copy goes to a hidden file that replaces the
original only when it is whole, so a failure, a full disk or a stop leaves the file as it was.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "MP4_EXTENSIONS",
    "boxes",
    "faststart",
    "moov_first",
    "top_level_boxes",
    "walk_top_level_boxes",
]

#: The ISO media files SharpCam writes whose index the writer adds when it finishes.
MP4_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov"})

#: The boxes on the way from ``moov`` to a track's chunk offsets.
_TO_CHUNK_OFFSETS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})
#: Top-level boxes that may follow the frames and are dropped with the move: padding, and the
#: old index that :func:`engine.sinks._append_moov` leaves as ``free``.
_PADDING = frozenset({b"free", b"skip"})
#: A fragmented MP4 indexes its frames in fragments; moving its ``moov`` is not done here.
_FRAGMENTED = frozenset({b"moof", b"mfra", b"sidx", b"styp"})
#: The largest ``moov`` read: hours of video (bounded memory).
MOOV_LIMIT = 64 << 20
#: The most top-level boxes walked (a file of many small boxes is not one a writer made).
_TOP_LIMIT = 10_000
_CHUNK = 8 << 20
#: The copy is put on the disk this often: a slow one (a USB stick) then shows in the time
#: it takes, where the page cache took gigabytes at once and the final flush took minutes.
_SYNC_EVERY = 32 << 20
#: Free bytes left on the disk beyond the copy (a copy that would fill it is not made).
_MARGIN = 64 << 20


def boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """``(position, size, type)`` of the boxes in ``buf[start:end]``; ValueError when their
    sizes do not tile it (a 64-bit or to-the-end size included: not met inside a moov here)."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise ValueError("a box header cut off")
        size, kind = struct.unpack_from(">I4s", buf, pos)
        if size < 8 or pos + size > end:
            raise ValueError("a box size that does not fit")
        yield pos, size, kind
        pos += size


def walk_top_level_boxes(
    f: BinaryIO, size: int, limit: int = _TOP_LIMIT
) -> Iterator[tuple[int, int, bytes]]:
    """``(position, size, type)`` of each top-level box of the ISO media file open in ``f``,
    ``size`` bytes long (64-bit sizes read, a size of 0 running to the end), as they are
    read: a box that runs past the end is given before the ValueError that ends the walk
    (a file cut off inside its last box). ValueError too at a broken size, a header cut off,
    or past ``limit`` boxes (bounded time: a file of millions of empty boxes is no writer's)."""
    pos = 0
    for _ in range(limit):
        if pos >= size:
            break
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise ValueError("a box header cut off")
        length, kind = struct.unpack(">I4s", head[:8])
        if length == 1:
            if len(head) < 16:
                raise ValueError("a box header cut off")
            length = struct.unpack(">Q", head[8:])[0]
        elif length == 0:
            length = size - pos
        if length < 8:
            raise ValueError(f"a {kind!r} box shorter than its header")
        yield pos, length, kind
        pos += length
    else:
        if pos < size:
            raise ValueError("too many top-level boxes")
    if pos > size:
        raise ValueError("a box that runs past the end of the file")


def top_level_boxes(f: BinaryIO, size: int) -> list[tuple[int, int, bytes]]:
    """Every top-level box (:func:`walk_top_level_boxes`); ValueError where they do not tile
    the file (cut off, a broken size) or are more than a writer makes."""
    return list(walk_top_level_boxes(f, size))


def _chunk_offsets(box: bytes, delta: int, lo: int, hi: int, wide: bool) -> bytes:
    """``box`` (a ``moov`` or a box inside it) with every chunk offset moved by ``delta``; each
    must point into ``[lo, hi)`` (the frames that move), else ValueError. With ``wide``, an
    ``stco`` (32-bit offsets) becomes a ``co64``; without, one that no longer fits in 32 bits
    raises OverflowError."""
    kind = box[4:8]
    if kind in (b"stco", b"co64"):
        width = 4 if kind == b"stco" else 8
        if len(box) < 16:
            raise ValueError(f"a {kind!r} box cut off")
        (count,) = struct.unpack_from(">I", box, 12)
        if len(box) != 16 + width * count:
            raise ValueError(f"a {kind!r} box whose size is not its entries'")
        form = ">" + ("I" if width == 4 else "Q") * count
        offsets = struct.unpack_from(form, box, 16)
        if offsets and not (lo <= min(offsets) and max(offsets) < hi):
            raise ValueError("a chunk offset outside the frames")
        moved = [o + delta for o in offsets]
        if width == 4 and not wide:
            if moved and max(moved) >= 1 << 32:
                raise OverflowError("a chunk offset past 4 GiB")
            return box[:16] + struct.pack(form, *moved)
        body = struct.pack(">" + "Q" * count, *moved)
        return struct.pack(">I4s", 16 + len(body), b"co64") + box[8:16] + body
    if kind not in _TO_CHUNK_OFFSETS:
        return box
    body = b"".join(
        _chunk_offsets(box[pos : pos + size], delta, lo, hi, wide)
        for pos, size, _ in boxes(box, 8, len(box))
    )
    return struct.pack(">I", 8 + len(body)) + kind + body


def moov_first(moov: bytes, lo: int, hi: int) -> bytes:
    """``moov`` for a file in which it comes just before the frames at ``[lo, hi)``, which then
    move by its own length: its chunk offsets moved, 32-bit ones made 64-bit where one would
    pass 4 GiB. ValueError where an offset points outside the frames or a box is broken."""
    try:
        return _chunk_offsets(moov, len(moov), lo, hi, wide=False)
    except OverflowError:
        # Every stco becomes a co64, so the index's length no longer depends on the offsets.
        grown = len(_chunk_offsets(moov, 0, lo, hi, wide=True))
        return _chunk_offsets(moov, grown, lo, hi, wide=True)


def faststart(
    path: str | os.PathLike[str],
    *,
    stop: threading.Event | None = None,
    within_s: float | None = None,
    left: list[Path] | None = None,
) -> bool:
    """Move the index of the finished MP4 or MOV at ``path`` before its frames. Returns
    whether the index now comes first (moved, or there already).

    The file is left as it was (False) where its layout is not a writer's (one ``moov`` after
    the frames, only padding after it, not fragmented), the disk lacks room for a copy (and
    :data:`_MARGIN`), the copy fails, it takes longer than ``within_s`` seconds (`run` must
    not hold its exit long for it), or the file changed meanwhile (replaced,
    renamed, written: the newer file is not overwritten by the copy of the older). A hidden
    file takes the copy and replaces ``path`` when it is whole and on the disk. A copy that
    cannot be removed (its folder turned read-only meanwhile) is added to ``left``, for the
    caller to say.

    Raises:
        engine.remux.RemuxStopped: ``stop`` was set; the file is as it was.
    """
    path = Path(path)
    left = [] if left is None else left
    try:
        found = _copy_index_first(path, stop, within_s, left)
    except (OSError, ValueError, struct.error):
        return False
    if found is None or found[0] == path:
        return found is not None
    temp, copied = found
    try:
        if _identity(os.stat(path)) != copied:
            raise OSError(f"{path} changed while its index was moved")
        # After the original is closed: Windows does not replace a file open for reading.
        os.replace(temp, path)
    except OSError:
        _remove(temp, left)
        return False
    return True


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells the file copied from another put at its name since, or one written to."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _remove(temp: Path, left: list[Path]) -> None:
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        left.append(temp)


def _copy_index_first(
    path: Path, stop: threading.Event | None, within_s: float | None, left: list[Path]
) -> tuple[Path, tuple[int, int, int, int]] | None:
    """The hidden copy of ``path`` with its index first, on the disk, and the identity
    (:func:`_identity`) of the file copied; ``(path, ...)`` where the index comes first
    already; None where :func:`faststart` leaves the file alone."""
    from engine.sinks import SinkError, _create_partial

    started = time.monotonic()
    with open(path, "rb") as src:
        copied = _identity(os.fstat(src.fileno()))
        size = src.seek(0, os.SEEK_END)
        top = top_level_boxes(src, size)
        kinds = [kind for _, _, kind in top]
        if kinds.count(b"moov") != 1 or b"mdat" not in kinds:
            return None
        if any(kind in _FRAGMENTED for kind in kinds):
            return None
        at = kinds.index(b"moov")
        first = kinds.index(b"mdat")
        if at < first:
            return path, copied
        last = len(kinds) - 1 - kinds[::-1].index(b"mdat")
        if at < last or any(k not in _PADDING for k in kinds[last + 1 :] if k != b"moov"):
            return None
        moov_pos, moov_len, _ = top[at]
        if moov_len > MOOV_LIMIT:
            return None
        lo = top[first][0]
        hi = top[last][0] + top[last][1]
        src.seek(moov_pos)
        moov = moov_first(src.read(moov_len), lo, hi)
        if shutil.disk_usage(path.parent).free < lo + len(moov) + (hi - lo) + _MARGIN:
            return None
        try:
            temp, out = _create_partial(path)
        except SinkError:
            return None
        whole = False
        try:
            with out:
                deadline = None if within_s is None else started + within_s
                if not _copy(src, out, 0, lo, stop, deadline):
                    return None
                out.write(moov)
                if not _copy(src, out, lo, hi, stop, deadline):
                    return None
                out.flush()
                # On the disk before it takes the name: a crash must not leave the name on a
                # file whose blocks were never written.
                os.fsync(out.fileno())
            whole = True
        finally:
            if not whole:
                _remove(temp, left)
    return temp, copied


def _copy(
    src: BinaryIO,
    out: BinaryIO,
    start: int,
    end: int,
    stop: threading.Event | None,
    deadline: float | None,
) -> bool:
    """Copy ``src[start:end]`` to ``out`` a chunk at a time (bounded memory); False once
    ``time.monotonic()`` passes ``deadline``.

    Raises:
        engine.remux.RemuxStopped: ``stop`` was set.
    """
    from engine.remux import RemuxStopped

    src.seek(start)
    left = end - start
    unsynced = 0
    while left:
        if stop is not None and stop.is_set():
            raise RemuxStopped("stopped while moving the index first")
        if deadline is not None and time.monotonic() > deadline:
            return False
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise OSError("the file got shorter while it was copied")
        out.write(chunk)
        left -= len(chunk)
        unsynced += len(chunk)
        if unsynced >= _SYNC_EVERY:
            out.flush()
            getattr(os, "fdatasync", os.fsync)(out.fileno())
            unsynced = 0
    return True
