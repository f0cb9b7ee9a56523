"""engine.mp4: an MP4's index moved before its frames ("fast start")."""

from __future__ import annotations

import errno
import io
import os
import struct
import subprocess
import threading
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from engine.frames import Frame
from engine.mp4 import faststart, moov_first
from engine.remux import RemuxStopped, picture_times
from engine.sinks import VideoFileSink, retime_mp4
from tests.videos import read_video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def root_boxes(path: Path) -> list[str]:
    """The top-level boxes of ``path`` in order, as FFmpeg's demuxer reads them (its trace):
    read by other code than the one under test."""
    trace = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "trace", "-i", str(path)], capture_output=True, text=True
    ).stderr
    return [line.split("type:'")[1][:4] for line in trace.splitlines() if "parent:'root'" in line]


def packets(path: Path) -> list[str]:
    """Every packet of every stream of ``path``: stream, dts, pts, duration, size, MD5."""
    out = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-map", "0", "-c", "copy", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if not line.startswith("#")]


def decode_errors(path: Path) -> str:
    return subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
    ).stderr


def clip_with_sound(path: Path, *extra: str) -> Path:
    """Two seconds of H.264 with AAC sound, as FFmpeg writes them: the index last."""
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "2", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-c:a", "aac", *extra, str(path)],
        check=True,
    )  # fmt: skip
    return path


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def chunk_offsets(kind: bytes, offsets: list[int]) -> bytes:
    form = "I" if kind == b"stco" else "Q"
    return box(kind, struct.pack(f">4xI{len(offsets)}{form}", len(offsets), *offsets))


def moov_with(*tables: bytes) -> bytes:
    """A moov holding one track per chunk-offset table, with the boxes that lead to it."""
    traks = b"".join(
        box(b"trak", box(b"mdia", box(b"minf", box(b"stbl", box(b"stsd", bytes(8)) + t))))
        for t in tables
    )
    return box(b"moov", box(b"mvhd", bytes(100)) + traks)


def offsets_in(moov: bytes) -> list[tuple[bytes, list[int]]]:
    """The chunk-offset tables of ``moov`` as :func:`moov_with` lays it out."""
    found = []
    at = 0
    while (at := max(moov.find(b"stco", at + 1), moov.find(b"co64", at + 1))) > 0:
        kind = moov[at : at + 4]
        (n,) = struct.unpack_from(">I", moov, at + 8)
        form = "I" if kind == b"stco" else "Q"
        found.append((kind, list(struct.unpack_from(f">{n}{form}", moov, at + 12))))
        at += 4
    return found


@pytest.mark.parametrize("name", ["call.mp4", "call.mov", "call.m4v"])
def test_the_index_goes_first_and_every_packet_stays(tmp_path: Path, name: str) -> None:
    path = clip_with_sound(tmp_path / name)
    assert root_boxes(path)[-1] == "moov"
    before = packets(path)
    assert faststart(path)
    order = root_boxes(path)
    assert order.index("moov") < order.index("mdat"), order
    # The same packets of both streams at the same times: nothing re-encoded, nothing moved
    # in time; and the whole file decodes without a complaint.
    assert packets(path) == before and len(before) > 50
    assert decode_errors(path) == ""
    assert os.listdir(tmp_path) == [name]  # no working copy left
    # A second call finds it done and leaves it be.
    kept = path.read_bytes()
    assert faststart(path) and path.read_bytes() == kept


def test_an_index_rewritten_in_place_leaves_no_old_copy_behind(tmp_path: Path) -> None:
    # retime_mp4 appends the grown index and leaves the old one as a `free` box after the
    # frames: the move takes the new one and drops the old, and the timing stays.
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    for i in range(10):
        sink.write(Frame(np.full((48, 64, 3), 20 * i, np.uint8), i, 0.0))
    sink.close()
    assert retime_mp4(path, [1024] * 5 + [512] * 5, 12800)
    assert root_boxes(path)[-2:] == ["free", "moov"]
    size, times = path.stat().st_size, picture_times(path, ffmpeg=FFMPEG)
    assert faststart(path)
    order = root_boxes(path)
    assert order[-2:] == ["moov", "mdat"] and order.count("free") <= 1, order
    assert path.stat().st_size < size  # the old index is gone
    assert picture_times(path, ffmpeg=FFMPEG) == times
    assert [round(float(f.mean()) / 20) for f in read_video(path)] == list(range(10))


def test_offsets_past_4_gib_become_64_bit() -> None:
    # A 32-bit chunk offset pushed past 4 GiB by the index in front would point near the
    # file's start: every table becomes a co64, and the move counts the index it grew.
    lo, hi = 1000, (1 << 32) + 5000
    moov = moov_with(
        chunk_offsets(b"stco", [lo + 8, (1 << 32) - 100]), chunk_offsets(b"co64", [lo + 50])
    )
    moved = moov_first(moov, lo, hi)
    assert len(moved) == len(moov) + 2 * 4  # two offsets widened by 4 bytes each
    assert offsets_in(moved) == [
        (b"co64", [lo + 8 + len(moved), (1 << 32) - 100 + len(moved)]),
        (b"co64", [lo + 50 + len(moved)]),
    ]
    # Offsets that stay within 32 bits stay 32-bit, moved by the index's own length.
    small = moov_with(chunk_offsets(b"stco", [lo + 8, lo + 900]))
    assert offsets_in(moov_first(small, lo, 2000)) == [
        (b"stco", [lo + 8 + len(small), lo + 900 + len(small)])
    ]


@pytest.mark.parametrize(
    "table",
    [
        chunk_offsets(b"stco", [10]),  # before the frames
        chunk_offsets(b"stco", [2000]),  # past them
        box(b"stco", struct.pack(">4xI", 3) + bytes(4)),  # fewer entries than it counts
    ],
)
def test_an_index_that_does_not_point_into_the_frames_is_refused(table: bytes) -> None:
    with pytest.raises(ValueError):
        moov_first(moov_with(table), 1000, 2000)


def test_a_layout_other_than_a_writers_is_left_as_it_was(tmp_path: Path) -> None:
    fragmented = clip_with_sound(
        tmp_path / "fragmented.mp4", "-movflags", "frag_keyframe+empty_moov"
    )
    path = clip_with_sound(tmp_path / "plain.mp4")
    data = path.read_bytes()
    after = tmp_path / "after.mp4"  # something other than padding after the index
    after.write_bytes(data + box(b"uuid", bytes(16)))
    cut = tmp_path / "cut.mp4"  # the index cut off
    cut.write_bytes(data[:-10])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    for bad in (fragmented, after, cut, junk):
        kept = bad.read_bytes()
        assert not faststart(bad), bad.name
        assert bad.read_bytes() == kept, bad.name
    assert not faststart(tmp_path / "missing.mp4")
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["fragmented.mp4", "plain.mp4", "after.mp4", "cut.mp4", "junk.mp4"]
    )


def test_a_stop_or_the_time_limit_leaves_the_file_and_no_copy(tmp_path: Path) -> None:
    path = clip_with_sound(tmp_path / "call.mp4")
    kept = path.read_bytes()
    stop = threading.Event()
    stop.set()
    with pytest.raises(RemuxStopped):
        faststart(path, stop=stop)
    assert path.read_bytes() == kept and os.listdir(tmp_path) == ["call.mp4"]
    assert not faststart(path, within_s=0.0)
    assert path.read_bytes() == kept and os.listdir(tmp_path) == ["call.mp4"]


def test_no_room_for_the_copy_leaves_the_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import engine.mp4

    path = clip_with_sound(tmp_path / "call.mp4")
    kept = path.read_bytes()
    real = engine.mp4.shutil.disk_usage

    def small(folder):  # noqa: ANN001, ANN202
        usage = real(folder)
        return usage._replace(free=len(kept) + engine.mp4._MARGIN - 1)

    monkeypatch.setattr(engine.mp4.shutil, "disk_usage", small)
    assert not faststart(path)
    assert path.read_bytes() == kept and os.listdir(tmp_path) == ["call.mp4"]


class _FullAfter(io.FileIO):
    """A new file on a disk that fills after ``room`` bytes (ENOSPC)."""

    room = 0

    def write(self, data) -> int:  # noqa: ANN001
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_copy_the_disk_refuses_half_way_leaves_the_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import engine.sinks

    path = clip_with_sound(tmp_path / "call.mp4")
    kept = path.read_bytes()
    _FullAfter.room = len(kept) // 2
    real = engine.sinks._create_partial

    def on_a_small_disk(target):  # noqa: ANN001, ANN202
        temp, file = real(target)
        file.close()
        return temp, _FullAfter(temp, "w")

    monkeypatch.setattr(engine.sinks, "_create_partial", on_a_small_disk)
    assert not faststart(path)
    assert path.read_bytes() == kept and os.listdir(tmp_path) == ["call.mp4"]


def test_the_copy_is_put_on_the_disk_as_it_goes(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    # Flushed once at the end, gigabytes went to the page cache within the time limit and
    # the flush then took minutes on a slow disk, past it.
    import engine.mp4

    path = clip_with_sound(tmp_path / "call.mp4")
    synced: list[int] = []
    real = getattr(os, "fdatasync", os.fsync)
    monkeypatch.setattr(engine.mp4, "_SYNC_EVERY", 4096)
    monkeypatch.setattr(engine.mp4, "_CHUNK", 4096)

    def counted(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync" if hasattr(os, "fdatasync") else "fsync", counted)
    assert faststart(path)
    assert len(synced) >= path.stat().st_size // 4096 - 2


def _vfr_clip(path: Path) -> Path:
    """50 pictures: 25 at 12.5 fps, then 25 at 25 fps (a phone's clip as the light changes)."""
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
         "-frames:v", "50", "-vf", "setpts='if(lt(N,25),2*N,25+N)/(25*TB)'",
         "-fps_mode", "passthrough", "-c:v", "mpeg4", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _written(path: Path, fourcc: str | None = None) -> Path:
    with VideoFileSink(path=path, size=(64, 48), fps=16.67, fourcc=fourcc) as sink:
        for i in range(50):
            sink.write(Frame(np.full((48, 64, 3), 5 * i, np.uint8), i, 0.0))
    return path


@pytest.mark.parametrize("fourcc", [None, "MJPG"])  # H.264, or MJPEG where FFmpeg lacks x264
def test_an_mkv_takes_its_sources_frame_times_through_a_mov(
    tmp_path: Path, fourcc: str | None
) -> None:
    from engine.remux import keep_timing

    source = _vfr_clip(tmp_path / "phone.mp4")
    out = _written(tmp_path / "out.mkv", fourcc)
    assert keep_timing(source, out, frames=50, ffmpeg=FFMPEG) == "retimed"
    scale, times, _ = picture_times(out, ffmpeg=FFMPEG)
    assert [t / scale for t in times] == pytest.approx(
        [0.08 * i for i in range(25)] + [2 + 0.04 * i for i in range(25)], abs=0.001
    )
    assert [round(float(f.mean()) / 5) for f in read_video(out)] == list(range(50))
    assert sorted(os.listdir(tmp_path)) == ["out.mkv", "phone.mp4"]


def test_an_mkv_whose_times_cannot_be_rewritten_is_left_as_it_was(
    tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    import engine.sinks
    from engine.remux import keep_timing

    source = _vfr_clip(tmp_path / "phone.mp4")
    out = _written(tmp_path / "out.mkv")
    kept = out.read_bytes()
    monkeypatch.setattr(engine.sinks, "retime_mp4", lambda *a, **k: False)
    assert keep_timing(source, out, frames=50, ffmpeg=FFMPEG) == "failed"
    assert out.read_bytes() == kept
    assert sorted(os.listdir(tmp_path)) == ["out.mkv", "phone.mp4"]
    # An AVI has one rate: said, not done.
    avi = _written(tmp_path / "out.avi")
    assert keep_timing(source, avi, frames=50, ffmpeg=FFMPEG) == "varies"


def test_keep_timing_puts_a_long_constant_clip_s_pictures_after_a_gap_at_their_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 pictures at 25 fps, picture 50 lost to damage: the hole is half a frame off the
    # mean grid, which reads as a constant rate, and every later picture came a frame early.
    import engine.remux
    import engine.sinks
    from engine.remux import keep_timing

    packets = [(i * 512, 512, 1) for i in range(100)]
    monkeypatch.setattr(engine.remux, "_packets", lambda *a, **k: (12800, packets))
    given: list[list[int]] = []
    monkeypatch.setattr(engine.sinks, "retime_mp4", lambda v, d, s: given.append(d) or True)
    out = tmp_path / "out.mp4"
    # The rate does not vary: nothing to say of it, but the durations were written.
    assert keep_timing("in.mp4", out, frames=99, ffmpeg="ffmpeg", gaps=[(50, 0.08)]) == ""
    assert given == [[512] * 49 + [1024] + [512] * 49]
    # Rewriting it failed (a full disk): said, as the frames after the gap playing early.
    monkeypatch.setattr(engine.sinks, "retime_mp4", lambda *a: False)
    failed = keep_timing("in.mp4", out, frames=99, ffmpeg="ffmpeg", gaps=[(50, 0.08)])
    assert failed == "failed-early"
    # An FFmpeg that cannot list the times leaves the video as it is.
    monkeypatch.setattr(engine.remux, "_packets", lambda *a, **k: None)
    assert keep_timing("in.mp4", out, frames=99, ffmpeg="ffmpeg", gaps=[(50, 0.08)]) == ""


def test_keep_timing_retimes_a_constant_clip_only_where_its_last_pictures_were_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A whole clip at a constant rate has nothing to keep: its index is not rewritten for
    # nothing. Its last picture lost (the decoded span a picture short of the packets'), the
    # picture before it lasts to the end, the sound's; a start at 0.4 s changes neither.
    import engine.remux
    import engine.sinks
    from engine.remux import keep_timing

    for start in (0, 5120):
        packets = [(start + i * 512, 512, 1) for i in range(100)]
        monkeypatch.setattr(engine.remux, "_packets", lambda *a, p=packets, **k: (12800, p))
        given: list[list[int]] = []
        monkeypatch.setattr(
            engine.sinks, "retime_mp4", lambda v, d, s, g=given: g.append(d) or True
        )
        out = tmp_path / "out.mp4"
        assert keep_timing("in.mp4", out, frames=100, ffmpeg="ffmpeg", decoded_s=3.96) == ""
        # Fewer pictures and no decoded span (a decoder that dropped some): left as it is.
        assert keep_timing("in.mp4", out, frames=99, ffmpeg="ffmpeg") == ""
        assert given == []
        assert keep_timing("in.mp4", out, frames=99, ffmpeg="ffmpeg", decoded_s=3.92) == ""
        assert given == [[512] * 98 + [1024]]


@pytest.mark.parametrize("change", ["replaced", "renamed", "written"])
def test_a_file_changed_during_the_copy_is_not_overwritten(
    tmp_path: Path, monkeypatch, change: str
) -> None:  # noqa: ANN001
    # The copy of the older file took the name back: a newer file put there meanwhile (a
    # second run, a sync client) was lost, and a renamed one came back as a second file.
    import engine.mp4

    path = clip_with_sound(tmp_path / "call.mp4")
    newer = clip_with_sound(tmp_path / "newer.mp4", "-metadata", "title=newer")
    newer_bytes = newer.read_bytes()
    real = engine.mp4._copy
    calls = []

    def meanwhile(*args):  # noqa: ANN002, ANN202
        calls.append(1)
        if len(calls) == 2:  # as the frames are copied
            if change == "replaced":
                os.replace(newer, path)
            elif change == "renamed":
                os.replace(path, tmp_path / "kept.mp4")
            else:
                with open(path, "ab") as f:
                    f.write(b"\0" * 8)
        return real(*args)

    monkeypatch.setattr(engine.mp4, "_copy", meanwhile)
    assert not faststart(path)
    if change == "replaced":
        assert path.read_bytes() == newer_bytes
        assert sorted(os.listdir(tmp_path)) == ["call.mp4"]
    elif change == "renamed":
        assert sorted(os.listdir(tmp_path)) == ["kept.mp4", "newer.mp4"]
    else:
        assert sorted(os.listdir(tmp_path)) == ["call.mp4", "newer.mp4"]


def test_a_copy_that_cannot_be_removed_is_named(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    # Its folder turned read-only during the copy: it stayed, as large as the video, hidden,
    # and nothing said so.
    path = clip_with_sound(tmp_path / "call.mp4")
    real = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if ".partial" in self.name:
            raise PermissionError(13, "Permission denied", str(self))
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    left: list[Path] = []
    assert not faststart(path, within_s=0.0, left=left)
    assert left == [tmp_path / ".call.partial.mp4"] and left[0].exists()


def test_the_walk_gives_a_box_cut_off_by_the_end_before_it_fails() -> None:
    # The readers of a camera's cut-off file still find its moov (and read what is there);
    # the move, which needs every box whole, refuses it.
    from engine.mp4 import top_level_boxes, walk_top_level_boxes

    data = box(b"ftyp", bytes(8)) + box(b"mdat", bytes(20)) + box(b"moov", bytes(40))[:-10]
    f = io.BytesIO(data)
    seen = []
    with pytest.raises(ValueError, match="past the end"):
        for found in walk_top_level_boxes(f, len(data)):
            seen.append(found)
    assert [kind for _, _, kind in seen] == [b"ftyp", b"mdat", b"moov"]
    with pytest.raises(ValueError):
        top_level_boxes(f, len(data))
    # A limit on the boxes walked: a file of many empty boxes is no writer's.
    many = box(b"free") * 50
    with pytest.raises(ValueError, match="too many"):
        list(walk_top_level_boxes(io.BytesIO(many), len(many), limit=10))
    assert len(list(walk_top_level_boxes(io.BytesIO(many), len(many), limit=50))) == 50


def _tiles(buf: bytes, start: int, end: int) -> None:
    """Walk every box of a moov as :func:`moov_with` lays it out, down to the chunk offsets:
    ValueError where a box's size is not what it holds."""
    from engine.mp4 import _TO_CHUNK_OFFSETS, boxes

    for pos, size, kind in boxes(buf, start, end):
        if kind in _TO_CHUNK_OFFSETS:
            _tiles(buf, pos + 8, pos + size)
        elif kind in (b"stco", b"co64"):
            (n,) = struct.unpack_from(">I", buf, pos + 12)
            assert size == 16 + n * (4 if kind == b"stco" else 8), kind


def test_an_index_widened_past_4_gib_is_whole_box_by_box() -> None:
    # A co64 made from an stco told 8 bytes less than it holds: players read the file's index
    # as broken (a recording over 4 GiB that no longer opened). An offset that lands on 4 GiB
    # exactly no longer fits in 32 bits either: such a file was left with its index last.
    lo, hi = 1000, (1 << 32) + 5000
    moov = moov_with(chunk_offsets(b"stco", [lo + 8, (1 << 32) - 100]))
    moved = moov_first(moov, lo, hi)
    _tiles(moved, 0, len(moved))
    edge = moov_with(chunk_offsets(b"stco", [lo + 8, 0]))
    edge = moov_with(chunk_offsets(b"stco", [lo + 8, (1 << 32) - len(edge)]))
    moved = moov_first(edge, lo, hi)
    _tiles(moved, 0, len(moved))
    assert offsets_in(moved) == [
        (b"co64", [lo + 8 + len(moved), (1 << 32) - len(edge) + len(moved)])
    ]


def test_a_moov_whose_box_runs_past_its_end_is_refused() -> None:
    # A damaged index, its boxes cut short, was rewritten as if whole and put in front of the
    # frames: the copy was a file no player opened, in place of one that had played.
    moov = bytearray(moov_with(chunk_offsets(b"stco", [1008])))
    at = moov.index(b"mvhd") - 4
    moov[at : at + 4] = (len(moov) + 50).to_bytes(4, "big")
    with pytest.raises(ValueError):
        moov_first(bytes(moov), 1000, 2000)


def test_an_index_between_frames_or_two_indexes_are_left_as_they_were(tmp_path: Path) -> None:
    # Neither is a writer's layout; moved, the first kept a second copy of itself among the
    # frames, and the second lost one of the two indexes without a word.
    ftyp = box(b"ftyp", b"isom" + bytes(4) + b"isommp41")
    lo = len(ftyp)
    mdat = box(b"mdat", bytes(200))
    moov = moov_with(chunk_offsets(b"stco", [lo + 8]))
    for name, data in [
        ("between.mp4", ftyp + mdat + moov + mdat),
        ("two.mp4", ftyp + mdat + moov + moov),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        assert not faststart(path), name
        assert path.read_bytes() == data, name
    # The same file with one index at its end is moved.
    path = tmp_path / "one.mp4"
    path.write_bytes(ftyp + mdat + moov)
    assert faststart(path)
    assert path.read_bytes().startswith(ftyp + moov_first(moov, lo, lo + len(mdat)))


def test_the_walk_takes_a_box_to_the_end_and_a_box_cut_by_a_byte() -> None:
    # A size of 0 is "to the end of the file" (a camera's mdat, written before its length was
    # known); and a last box one byte short is cut off all the same.
    from engine.mp4 import walk_top_level_boxes

    head = box(b"ftyp", bytes(8))
    data = head + struct.pack(">I4s", 0, b"mdat") + bytes(30)
    found = list(walk_top_level_boxes(io.BytesIO(data), len(data)))
    assert found == [(0, len(head), b"ftyp"), (len(head), len(data) - len(head), b"mdat")]
    cut = head + box(b"moov", bytes(40))[:-1]
    with pytest.raises(ValueError, match="past the end"):
        list(walk_top_level_boxes(io.BytesIO(cut), len(cut)))


def test_an_empty_box_last_in_the_index_is_whole() -> None:
    # A header-only box (an empty udta, a free of 8 bytes) ending its parent is a whole box:
    # refused, the index of a file that has one was left last.
    from engine.mp4 import boxes

    data = box(b"mvhd", bytes(4)) + box(b"udta")
    assert list(boxes(data, 0, len(data))) == [(0, 12, b"mvhd"), (12, 8, b"udta")]
    moov = box(b"moov", box(b"mvhd", bytes(100)) + box(b"free"))
    assert moov_first(moov, 1000, 2000) == moov  # no chunk offsets: nothing moved


def test_a_top_level_header_cut_anywhere_is_a_value_error() -> None:
    # Its callers catch ValueError: a last box's header cut to 7 bytes, or a 64-bit size cut
    # to 15, raised struct.error from the unpacking instead.
    from engine.mp4 import walk_top_level_boxes

    head = box(b"ftyp", bytes(8))
    large = struct.pack(">I4sQ", 1, b"mdat", 40)
    for data in (head + box(b"mdat", bytes(8))[:7], head + large[:15]):
        with pytest.raises(ValueError, match="cut off"):
            list(walk_top_level_boxes(io.BytesIO(data), len(data)))


def test_a_chunk_offset_table_with_bytes_past_its_entries_is_refused() -> None:
    # Its entries rewritten and the rest dropped, the box kept the size it said before: the
    # moved index's boxes no longer tiled it.
    table = bytearray(chunk_offsets(b"stco", [1008]) + bytes(4))
    table[:4] = struct.pack(">I", len(table))
    with pytest.raises(ValueError, match="not its entries"):
        moov_first(moov_with(bytes(table)), 1000, 2000)
