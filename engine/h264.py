"""The clock an H.264 stream's sequence parameter set (SPS) declares, rewritten in place.

x264 writes the encoder's frame rate into the SPS's video usability information (VUI:
``num_units_in_tick``, ``time_scale``). A video SharpCam writes at a variable rate is
encoded at its mean rate and then given its source's frame durations in the MP4 index
(:func:`engine.sinks.retime_mp4`), so the SPS went on saying the mean rate: 20.45 fps for a
clip of 30 and 15 fps parts. FFmpeg decodes on that clock, and frames 1/30 s apart fell on
one tick: "non monotonically increasing dts" errors, and a re-encode lost 13 frames of 90.
:func:`avcc_with_clock` gives the SPS in an MP4's ``avcC`` box a clock that every duration
is a whole number of.

Only the SPS is parsed, as far as its timing fields (ITU-T H.264, 7.3.2.1.1 and E.1.1), and
only the two 32-bit fields and the fixed-rate flag after them change; an SPS this does not
read (scaling matrices, which x264 does not write by default) is left alone.
"""

from __future__ import annotations

__all__ = ["avcc_with_clock", "sps_with_clock"]

#: profile_idc values whose SPS carries the chroma format and bit depths (7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _unescape(nal: bytes) -> bytes:
    """The RBSP of ``nal``: the emulation prevention bytes (``00 00 03``) taken out."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(rbsp: bytes) -> bytes:
    """``rbsp`` as NAL bytes: a ``03`` put after two zeros where a byte up to 3 follows."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    """Reads ``data`` bit by bit, most significant first; IndexError past its end."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("an Exp-Golomb code over 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _timing_at(rbsp: bytes) -> int | None:
    """The bit position of ``num_units_in_tick`` in the SPS ``rbsp`` (its NAL header byte
    first); None where it declares no timing or holds what is not read here."""
    if not rbsp or rbsp[0] & 0x1F != 7:
        return None
    bits = _Bits(rbsp, 8)
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        if bits.ue() == 3:  # chroma_format_idc: 4:4:4 has separate_colour_plane_flag
            bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            return None
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue()  # pic_width_in_mbs_minus1
    bits.ue()  # pic_height_in_map_units_minus1
    if not bits.u(1):  # frame_mbs_only_flag
        bits.u(1)
    bits.u(1)  # direct_8x8_inference_flag
    if bits.u(1):  # frame_cropping_flag
        for _ in range(4):
            bits.ue()
    if not bits.u(1):  # vui_parameters_present_flag
        return None
    if bits.u(1) and bits.u(8) == 255:  # aspect ratio, given as two 16-bit numbers
        bits.u(32)
    if bits.u(1):  # overscan_info_present_flag
        bits.u(1)
    if bits.u(1):  # video_signal_type_present_flag
        bits.u(4)
        if bits.u(1):  # colour_description_present_flag
            bits.u(24)
    if bits.u(1):  # chroma_loc_info_present_flag
        bits.ue()
        bits.ue()
    if not bits.u(1):  # timing_info_present_flag
        return None
    return bits.pos if bits.pos + 65 <= len(rbsp) * 8 else None


def sps_with_clock(sps: bytes, num_units_in_tick: int, time_scale: int) -> bytes | None:
    """The SPS NAL unit ``sps`` declaring ``time_scale / num_units_in_tick`` ticks a second,
    not a fixed frame rate; None where it declares no timing or cannot be read here.

    A frame lasts two ticks (H.264 counts fields), so a clip whose frames last multiples of
    ``d`` units of a ``timescale`` clock takes ``(d, 2 * timescale)``.
    """
    if not (0 < num_units_in_tick < 1 << 32 and 0 < time_scale < 1 << 32):
        raise ValueError(f"a clock of {num_units_in_tick}/{time_scale} does not fit the SPS")
    rbsp = _unescape(sps)
    try:
        at = _timing_at(rbsp)
    except (IndexError, ValueError):
        return None
    if at is None:
        return None
    value = int.from_bytes(rbsp, "big")
    width = len(rbsp) * 8
    # num_units_in_tick, time_scale and fixed_frame_rate_flag: 65 bits from `at`.
    shift = width - at - 65
    field = (num_units_in_tick << 33 | time_scale << 1) << shift
    value = value & ~(((1 << 65) - 1) << shift) | field
    return _escape(value.to_bytes(len(rbsp), "big"))


def avcc_with_clock(avcc: bytes, num_units_in_tick: int, time_scale: int) -> bytes | None:
    """The body of an ``avcC`` box (an AVCDecoderConfigurationRecord) with its SPS given the
    clock :func:`sps_with_clock` gives; None where none of its SPS declares timing."""
    if len(avcc) < 6 or avcc[0] != 1:
        return None
    out = bytearray(avcc[:6])
    pos, changed = 6, False
    for _ in range(avcc[5] & 0x1F):
        if pos + 2 > len(avcc):
            return None
        size = int.from_bytes(avcc[pos : pos + 2], "big")
        sps = avcc[pos + 2 : pos + 2 + size]
        if len(sps) != size:
            return None
        edited = sps_with_clock(sps, num_units_in_tick, time_scale)
        if edited is not None:
            sps, changed = edited, True
        out += len(sps).to_bytes(2, "big") + sps
        pos += 2 + size
    return bytes(out + avcc[pos:]) if changed else None
