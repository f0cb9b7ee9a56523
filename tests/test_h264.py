"""engine.h264: the clock in an H.264 SPS, rewritten for a variable-rate MP4."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine.frames import Frame
from engine.h264 import _Bits, _escape, _timing_at, _unescape, avcc_with_clock, sps_with_clock
from engine.sinks import VideoFileSink


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _avcc(path: Path) -> bytes:
    """The body of the ``avcC`` box in the MP4 at ``path``."""
    data = path.read_bytes()
    at = data.index(b"avcC")
    size = int.from_bytes(data[at - 4 : at], "big")
    return data[at + 4 : at - 4 + size]


def _sps_pps(avcc: bytes) -> tuple[bytes, bytes]:
    assert avcc[5] & 0x1F == 1
    n = int.from_bytes(avcc[6:8], "big")
    sps = avcc[8 : 8 + n]
    rest = avcc[8 + n :]
    assert rest[0] == 1
    m = int.from_bytes(rest[1:3], "big")
    return sps, rest[3 : 3 + m]


def _clock(sps: bytes) -> tuple[int, int, int]:
    """num_units_in_tick, time_scale and fixed_frame_rate_flag of ``sps``."""
    rbsp = _unescape(sps)
    at = _timing_at(rbsp)
    assert at is not None
    bits = _Bits(rbsp, at)
    return bits.u(32), bits.u(32), bits.u(1)


@pytest.fixture(scope="module")
def x264_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("h264") / "a.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
        assert sink.fourcc == "avc1"
        for i in range(3):
            sink.write(Frame(np.full((48, 64, 3), 40 * i, np.uint8), i, i / 25))
    return path


def test_emulation_prevention_round_trips() -> None:
    # Three zeros or 00 00 01 in an SPS would read as a start code: a 03 goes between.
    rbsp = bytes([0x67, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0])
    nal = _escape(rbsp)
    assert nal == bytes([0x67, 0, 0, 3, 0, 0, 3, 0, 1, 0, 0, 3, 2, 0, 0, 3, 3, 0, 0, 4, 0, 0])
    assert _unescape(nal) == rbsp
    assert _escape(b"\x01\x02") == b"\x01\x02" and _unescape(b"\x01\x02") == b"\x01\x02"


def test_the_sps_x264_writes_is_read_to_its_clock(x264_mp4: Path) -> None:
    sps, _ = _sps_pps(_avcc(x264_mp4))
    # x264 at 25 fps: a tick of 1/50 s, two a frame.
    assert _clock(sps) == (1, 50, 0)


@pytest.mark.parametrize(("tick", "scale"), [(512, 30720), (1, 2), (1, 0x01000000), (0xFFFF, 2)])
def test_the_clock_is_rewritten_and_nothing_else(x264_mp4: Path, tick: int, scale: int) -> None:
    sps, _ = _sps_pps(_avcc(x264_mp4))
    edited = sps_with_clock(sps, tick, scale)
    assert edited is not None and _clock(edited) == (tick, scale, 0)
    # Every other bit as it was: the 65 bits of the clock and flag are all that differ.
    before, after = _unescape(sps), _unescape(edited)
    assert len(before) == len(after)
    at = _timing_at(before)
    width = len(before) * 8
    mask = ((1 << 65) - 1) << (width - at - 65)
    a, b = int.from_bytes(before, "big"), int.from_bytes(after, "big")
    assert a & ~mask == b & ~mask
    # No start code inside it, whatever zeros the clock put there.
    assert not re.search(rb"\x00\x00[\x00-\x02]", edited)
    assert all(edited[m.end()] == 3 for m in re.finditer(rb"\x00\x00(?=[\x00-\x03])", edited))


def test_what_cannot_be_read_is_left_alone(x264_mp4: Path) -> None:
    sps, pps = _sps_pps(_avcc(x264_mp4))
    assert sps_with_clock(pps, 1, 2) is None  # not an SPS
    assert sps_with_clock(sps[:12], 1, 2) is None  # cut off before its timing
    assert sps_with_clock(b"", 1, 2) is None
    with pytest.raises(ValueError, match="does not fit"):
        sps_with_clock(sps, 0, 2)
    with pytest.raises(ValueError, match="does not fit"):
        sps_with_clock(sps, 1, 1 << 32)
    assert avcc_with_clock(b"\x01\x64", 1, 2) is None
    assert avcc_with_clock(_avcc(x264_mp4)[:20], 1, 2) is None  # an SPS length past its end


def test_an_avcc_keeps_its_pps_and_lengths(x264_mp4: Path) -> None:
    avcc = _avcc(x264_mp4)
    sps, pps = _sps_pps(avcc)
    edited = avcc_with_clock(avcc, 512, 30720)
    assert edited is not None and edited[:6] == avcc[:6]
    new_sps, new_pps = _sps_pps(edited)
    assert new_pps == pps and _clock(new_sps) == (512, 30720, 0)
    # What follows the PPS (a High profile's chroma format and bit depths) is kept.
    assert edited.endswith(avcc[8 + len(sps) :])


def test_ffmpeg_reads_the_rewritten_clock(x264_mp4: Path, tmp_path: Path) -> None:
    # The decoder's own reading, through a file whose avcC is replaced (same length here).
    avcc = _avcc(x264_mp4)
    edited = avcc_with_clock(avcc, 1, 60)
    assert edited is not None and len(edited) == len(avcc)
    path = tmp_path / "b.mp4"
    path.write_bytes(x264_mp4.read_bytes().replace(avcc, edited))
    trace = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    assert re.search(r"num_units_in_tick\s+[01]+ = 1$", trace, re.M), trace
    assert re.search(r"time_scale\s+[01]+ = 60$", trace, re.M), trace
    check = [_ffmpeg(), "-v", "error", "-i", str(path), "-f", "null", "-"]
    assert subprocess.run(check, capture_output=True, text=True).stderr == ""


@pytest.mark.parametrize(
    ("what", "options"),
    [
        ("4:4:4", ["-pix_fmt", "yuv444p"]),  # High 4:4:4: chroma_format_idc 3, one more flag
        ("4:2:2", ["-pix_fmt", "yuv422p"]),  # High 4:2:2: chroma_format_idc 2, no flag
        ("anamorphic", ["-pix_fmt", "yuv420p", "-vf", "setsar=16:15"]),  # SAR not in the table
        # The same with an even sar_height: read a bit short, 16:15's odd last bit stood in for
        # the overscan flag and the clock was found all the same.
        ("anamorphic 5:8", ["-pix_fmt", "yuv420p", "-vf", "setsar=5/8"]),
        ("cropped", ["-pix_fmt", "yuv420p", "-vf", "scale=66:50"]),  # four crop offsets
    ],
)
def test_the_clock_is_found_after_every_field_before_it(
    tmp_path: Path, what: str, options: list[str]
) -> None:
    # Read a field short or long, the clock was written over other bits of the SPS: a
    # 4:4:4 or 4:2:2 clip, or an anamorphic one (its pixel aspect given as two 16-bit
    # numbers), came out of a variable-rate recording with a header FFmpeg could not decode.
    path = tmp_path / "a.mp4"
    subprocess.run(
        [_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
         "-frames:v", "2", "-c:v", "libx264", *options, str(path)],
        check=True,
    )  # fmt: skip
    avcc = _avcc(path)
    sps, _ = _sps_pps(avcc)
    assert _clock(sps) == (1, 50, 0), what
    edited = avcc_with_clock(avcc, 7, 150)
    assert edited is not None and _clock(_sps_pps(edited)[0]) == (7, 150, 0)
    out = tmp_path / "b.mp4"
    out.write_bytes(path.read_bytes().replace(avcc, edited))
    trace = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-i", str(out), "-c", "copy", "-bsf:v", "trace_headers",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    assert re.search(r"num_units_in_tick\s+[01]+ = 7$", trace, re.M), trace
    assert re.search(r"time_scale\s+[01]+ = 150$", trace, re.M), trace


def test_an_sps_with_scaling_matrices_is_left_alone(x264_mp4: Path) -> None:
    # Its matrices are not read here: read past as if absent, the clock would be written over
    # other bits. x264 keeps its matrices in the PPS; another encoder's SPS may carry them.
    sps, _ = _sps_pps(_avcc(x264_mp4))
    rbsp = bytearray(_unescape(sps))
    bits = _Bits(bytes(rbsp), 8)
    assert bits.u(8) == 100  # High profile: the chroma format, bit depths and the flag
    bits.u(16)
    for _ in range(4):  # seq_parameter_set_id, chroma_format_idc, the two bit depths
        bits.ue()
    bits.u(1)
    rbsp[bits.pos >> 3] |= 0x80 >> (bits.pos & 7)  # seq_scaling_matrix_present_flag
    assert sps_with_clock(_escape(bytes(rbsp)), 7, 150) is None


def test_a_nal_of_another_type_is_no_sps(x264_mp4: Path) -> None:
    # Only nal_unit_type 7 is an SPS: type 23 (reserved) shares its low four bits.
    sps, _ = _sps_pps(_avcc(x264_mp4))
    assert sps_with_clock(bytes([sps[0] & 0xE0 | 23]) + sps[1:], 7, 150) is None


def test_an_exp_golomb_code_is_read_up_to_32_bits() -> None:
    # ue(v) holds 32 bits at most (2**32 - 2): 31 leading zeros are read, 32 are a damaged SPS.
    assert _Bits(bytes(3) + b"\x01" + b"\xff" * 4).ue() == (1 << 31) - 1 + (1 << 31) - 1
    with pytest.raises(ValueError, match="over 32 bits"):
        _Bits(bytes(4) + b"\x80" + b"\xff" * 4).ue()


def test_an_avcc_whose_sps_runs_past_its_end_is_left_alone(x264_mp4: Path) -> None:
    # Cut one byte short of its stated SPS length: the SPS read from what is there was given a
    # clock and its length written as the shorter one, a record no decoder reads.
    avcc = _avcc(x264_mp4)
    sps, _ = _sps_pps(avcc)
    assert avcc_with_clock(avcc[: 8 + len(sps) - 1], 7, 150) is None


def test_a_retimed_mp4_s_sps_takes_a_clock_of_its_durations(x264_mp4: Path, tmp_path: Path) -> None:
    # The SPS still declared the writer's mean rate: its clock is now their common tick, two
    # a field pair (time_scale is twice the timescale, as x264 writes it).
    from engine.sinks import retime_mp4

    path = tmp_path / "a.mp4"
    path.write_bytes(x264_mp4.read_bytes())
    assert retime_mp4(path, [1024, 512, 1536], 12800)
    data = path.read_bytes()
    at = data.rindex(b"avcC")  # the new index comes after the old one, now a `free` box
    size = int.from_bytes(data[at - 4 : at], "big")
    sps, _ = _sps_pps(data[at + 4 : at - 4 + size])
    assert _clock(sps) == (512, 25600, 0)
