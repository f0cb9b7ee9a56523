"""Reading back the videos tests write (frames as OpenCV decodes them: BGR uint8), and the EXIF
blocks and XMP packets tests put into (and read back from) still images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

#: EXIF tags the tests set and read back.
MAKE, ORIENTATION, EXIF_IFD = 0x010F, 0x0112, 0x8769
DATE_TAKEN, PIXEL_X, PIXEL_Y = 0x9003, 0xA002, 0xA003


def read_video(path: str | Path) -> list[np.ndarray]:
    """Every frame of ``path``, ``(H, W, 3)`` uint8 BGR, in order."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def exif_block(
    *,
    orientation: int = 6,
    make: bytes = b"Canon",
    date: bytes = b"2021:07:04 10:11:12",
    size: tuple[int, int] = (96, 128),
    order: str = "<",
) -> bytes:
    """An EXIF block (TIFF, little- or big-endian ``order``) as a camera writes one: IFD0 with
    Make, Orientation and the Exif IFD (date taken, pixel dimensions ``size`` ``(W, H)`` of
    the stored grid), linked to an IFD1 (the thumbnail's directory, empty here)."""
    make, date = make + b"\0", date + b"\0"
    make_at = 8 + 2 + 3 * 12 + 4
    exif_at = make_at + len(make)
    date_at = exif_at + 2 + 3 * 12 + 4
    ifd1_at = date_at + len(date)
    out = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    out += struct.pack(order + "H", 3)
    out += struct.pack(order + "HHII", MAKE, 2, len(make), make_at)
    out += struct.pack(order + "HHIH2x", ORIENTATION, 3, 1, orientation)
    out += struct.pack(order + "HHII", EXIF_IFD, 4, 1, exif_at)
    out += struct.pack(order + "I", ifd1_at) + make
    out += struct.pack(order + "H", 3)
    out += struct.pack(order + "HHII", DATE_TAKEN, 2, len(date), date_at)
    out += struct.pack(order + "HHII", PIXEL_X, 4, 1, size[0])
    out += struct.pack(order + "HHII", PIXEL_Y, 4, 1, size[1])
    out += struct.pack(order + "I", 0) + date
    return out + struct.pack(order + "HI", 0, 0)  # IFD1


def exif_tags(block: bytes) -> dict[int | str, object]:
    """The tags of IFD0 and the Exif IFD of an EXIF ``block`` (ASCII as bytes without the
    NUL, SHORT and LONG as ints), and ``"ifd1"``: IFD0's link to the next directory."""
    order = "<" if block[:2] == b"II" else ">"
    tags: dict[int | str, object] = {}

    def directory(at: int) -> int:
        (count,) = struct.unpack_from(order + "H", block, at)
        for i in range(count):
            tag, kind, n, raw = struct.unpack_from(order + "HHI4s", block, at + 2 + 12 * i)
            if kind == 2:
                (where,) = struct.unpack(order + "I", raw)
                value: object = (raw if n <= 4 else block[where : where + n]).rstrip(b"\0")
            elif kind == 3:
                value = struct.unpack(order + "H", raw[:2])[0]
            else:
                value = struct.unpack(order + "I", raw)[0]
            tags[tag] = value
        return struct.unpack_from(order + "I", block, at + 2 + 12 * count)[0]

    tags["ifd1"] = directory(struct.unpack_from(order + "I", block, 4)[0])
    if EXIF_IFD in tags:
        directory(int(tags[EXIF_IFD]))  # type: ignore[call-overload]
    return tags


def xmp_packet(
    *,
    orientation: int | None = 6,
    size: tuple[int, int] = (96, 128),
    thumbnail: bool = True,
    padding: int = 2000,
    keywords: tuple[str, ...] = ("Hike", "Zoë"),
) -> bytes:
    """An XMP packet as Lightroom writes one: a rating, keywords (one of them not ASCII), the
    TIFF orientation and dimensions ``size`` ``(W, H)`` as attributes, the EXIF pixel
    dimensions as elements, an ``xmp:Thumbnails`` entry, and ``padding`` bytes of space."""
    w, h = size
    turn = "" if orientation is None else f' tiff:Orientation="{orientation}"'
    thumb = (
        "<xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType='Resource'>"
        "<xmpGImg:width>256</xmpGImg:width><xmpGImg:image>/9j/4AAQSkZJRg==</xmpGImg:image>"
        "</rdf:li></rdf:Alt></xmp:Thumbnails>"
        if thumbnail
        else ""
    )
    words = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    text = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/" '
        f'xmp:Rating="4"{turn} tiff:ImageWidth="{w}" tiff:ImageLength="{h}">\n'
        f"<exif:PixelXDimension>{w}</exif:PixelXDimension>"
        f"<exif:PixelYDimension>{h}</exif:PixelYDimension>\n"
        f"<dc:subject><rdf:Bag>{words}</rdf:Bag></dc:subject>{thumb}\n"
        "</rdf:Description></rdf:RDF></x:xmpmeta>\n" + " " * padding + '<?xpacket end="w"?>'
    )
    return text.encode("utf-8")


XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\0"


def jpeg_with_metadata(
    data: bytes,
    exif: bytes | None = None,
    icc: bytes | None = None,
    xmp: bytes | None = None,
    *,
    extended: bytes | None = None,
) -> bytes:
    """The JPEG ``data`` with an APP1 Exif segment, an APP1 XMP segment (and an extended XMP
    one holding ``extended``) and the APP2 ICC segments (60000 bytes of profile each,
    numbered) right after its SOI, as a camera or an editor writes them."""
    segments = b""
    if exif is not None:
        payload = b"Exif\0\0" + exif
        segments += b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    if xmp is not None:
        payload = XMP_JPEG_HEADER + xmp
        segments += b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    if extended is not None:  # GUID, full length, offset, then the part
        head = b"http://ns.adobe.com/xmp/extension/\0" + b"0" * 32
        payload = head + struct.pack(">II", len(extended), 0) + extended
        segments += b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    if icc is not None:
        chunks = [icc[i : i + 60000] for i in range(0, len(icc), 60000)]
        for n, chunk in enumerate(chunks, 1):
            payload = b"ICC_PROFILE\0" + bytes([n, len(chunks)]) + chunk
            segments += b"\xff\xe2" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segments + data[2:]


def icc_profile(space: bytes = b"RGB ", size: int = 76_800) -> bytes:
    """``size`` bytes that open as an ICC profile of colour ``space`` does (``b"RGB "``,
    ``b"GRAY"``, ``b"CMYK"``): its header's size, version, device class, colour space, PCS
    and signature; filler after it. The default is larger than one JPEG segment holds."""
    head = struct.pack(
        ">I4sI4s4s4s12x4s", size, b"none", 0x02100000, b"mntr", space, b"XYZ ", b"acsp"
    )
    return (head + bytes(range(256)) * (size // 256 + 1))[:size]


def png_with_metadata(
    data: bytes, exif: bytes | None = None, icc: bytes | None = None, xmp: bytes | None = None
) -> bytes:
    """The PNG ``data`` with an iCCP, an eXIf and an XMP iTXt chunk after its IHDR."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload).to_bytes(4, "big")
        return len(payload).to_bytes(4, "big") + kind + payload + crc

    extra = b"" if icc is None else chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc))
    extra += b"" if exif is None else chunk(b"eXIf", exif)
    extra += b"" if xmp is None else chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    return data[:33] + extra + data[33:]


#: The SDR picture :func:`hdr_clip` encodes: a grey ramp above four patches (pure red,
#: green and blue, and a skin tone), RGB.
HDR_PATCHES = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 150, 100))


def hdr_picture(shift: int = 0) -> np.ndarray:
    """``(64, 128, 3)`` uint8 RGB: a grey ramp (rows 0-31, 8 px steps of 16 levels, rolled by
    ``shift`` steps so that pictures can be told apart) over :data:`HDR_PATCHES`, 32 px each."""
    ramp = np.repeat(np.arange(0, 256, 16, dtype=np.uint8), 8)
    ramp = np.roll(ramp, 8 * shift)
    top = np.repeat(np.repeat(ramp[None, :, None], 32, axis=0), 3, axis=2)
    bottom = np.zeros((32, 128, 3), np.uint8)
    for i, colour in enumerate(HDR_PATCHES):
        bottom[:, 32 * i : 32 * (i + 1)] = colour
    return np.vstack([top, bottom])


def hdr_clip(
    path: Path,
    ffmpeg: str,
    *,
    transfer: str,
    frames: int = 3,
    sound: bool = False,
    tag_matrix: bool = True,
) -> list[np.ndarray]:
    """Write ``frames`` :func:`hdr_picture` s (shifts 0, 1, ...) as 10-bit HDR video (FFV1,
    tagged BT.2020 and ``transfer``: ``smpte2084`` or ``arib-std-b67``), SDR's white at
    HDR's reference white (203 cd/m²), at 10 fps; with ``sound``, a second of a 440 Hz tone;
    without ``tag_matrix``, its matrix is left untagged (as some phone apps' re-encodes).
    Returns the SDR pictures, RGB."""
    import subprocess

    pictures = [hdr_picture(i) for i in range(frames)]
    to_hdr = (
        "zscale=rin=full:tin=bt709:pin=bt709:t=linear:p=bt709:npl=203,format=gbrpf32le,"
        f"zscale=p=bt2020:t={transfer}:m=bt2020nc:r=tv:npl=203,format=yuv444p10le"
        + ("" if tag_matrix else ",setparams=colorspace=unknown")
    )
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "128x64",
         "-r", "10", "-i", "-",
         *(["-f", "lavfi", "-i", "sine=frequency=440:duration=1"] if sound else []),
         "-vf", to_hdr, "-c:v", "ffv1", "-color_primaries", "bt2020", "-color_trc", transfer,
         *(["-colorspace", "bt2020nc"] if tag_matrix else []), "-color_range", "tv", *(["-c:a", "pcm_s16le"] if sound else []),
         str(path)],
        input=b"".join(p.tobytes() for p in pictures),
        check=True,
    )  # fmt: skip
    return pictures


def heic_photo(
    path: Path,
    rgb: np.ndarray,
    *,
    tile: int = 0,
    exif: bytes | None = None,
    icc: bytes | None = None,
    xmp: bytes | None = None,
    hdr_transfer: int | None = None,
) -> None:
    """Write ``rgb`` (``(H, W, 3)`` uint8 RGB, or uint16 for ``hdr_transfer``) as an HEIC
    photo with pillow-heif (libheif, x265): in ``tile``-pixel tiles as an iPhone writes its
    photos (512) where ``tile`` is given; with ``exif`` (a TIFF block: its Orientation becomes
    the picture's rotation property, as a phone writes it), ``icc`` and ``xmp``. With
    ``hdr_transfer`` (16: PQ, 18: HLG) the 16-bit ``rgb`` is coded in 10 bits, tagged BT.2020
    and that transfer, as a camera's HDR HIF."""
    import pillow_heif

    mode = "RGB;16" if rgb.dtype == np.uint16 else "RGB"
    heif = pillow_heif.from_bytes(mode=mode, size=(rgb.shape[1], rgb.shape[0]), data=rgb.tobytes())
    options: dict[str, object] = {"quality": -1 if hdr_transfer else 95}
    if exif is not None:
        options["exif"] = b"Exif\0\0" + exif
    if icc is not None:
        options["icc_profile"] = icc
    if xmp is not None:
        options["xmp"] = xmp
    if hdr_transfer is not None:
        options.update(
            color_primaries=9, transfer_characteristics=hdr_transfer, matrix_coefficients=9,
            full_range_flag=0,
        )  # fmt: skip
    before = pillow_heif.options.GRID_TILE_SIZE
    pillow_heif.options.GRID_TILE_SIZE = tile  # no argument for it
    try:
        heif.save(str(path), **options)
    finally:
        pillow_heif.options.GRID_TILE_SIZE = before


def with_clean_aperture(src: Path, dst: Path, width: int, height: int) -> Path:
    """A copy of the MP4 ``src`` (its ``moov`` last, as FFmpeg writes it by default) whose
    video sample entry holds a ``clap`` box cropping it to ``width`` x ``height``: a crop in
    the container, which FFmpeg 7.1 and later apply and OpenCV does not."""
    data = bytearray(Path(src).read_bytes())

    def child(start: int, end: int, name: bytes) -> tuple[int, int]:
        at = start
        while at < end:
            size, kind = struct.unpack(">I4s", data[at : at + 8])
            if kind == name:
                return at, size
            at += size
        raise KeyError(name)

    parents = []
    at, size = child(0, len(data), b"moov")
    assert at + size == len(data), "moov must be last: the boxes after it would move"
    for name in (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"):
        if name != b"moov":
            at, size = child(at + 8, at + size, name)
        parents.append(at)
    entry = at + 16  # stsd: header, version and flags, entry count
    (entry_size,) = struct.unpack(">I", data[entry : entry + 4])
    parents.append(entry)
    clap = struct.pack(">I4s8I", 40, b"clap", width, 1, height, 1, 0, 1, 0, 1)
    data[entry + entry_size : entry + entry_size] = clap
    for box in parents:
        (grown,) = struct.unpack(">I", data[box : box + 4])
        data[box : box + 4] = struct.pack(">I", grown + len(clap))
    Path(dst).write_bytes(data)
    return Path(dst)


def cover_first_mp4(path: Path) -> None:
    """Move the ``udta`` box of the MP4 at ``path`` (its ``covr``, an attached picture FFmpeg
    writes there) before the tracks, as some taggers store it: FFmpeg then lists the cover
    as the first video stream. The boxes keep their sizes: no offset changes."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"moov":
            kids, at = [], pos + 8
            while at < pos + size:
                length, name = struct.unpack_from(">I4s", data, at)
                kids.append((name, bytes(data[at : at + length])))
                at += length
            kids.sort(key=lambda kid: {b"mvhd": 0, b"udta": 1}.get(kid[0], 2))
            data[pos + 8 : pos + size] = b"".join(box for _, box in kids)
        pos += size
    path.write_bytes(bytes(data))
