"""HEIF stills (an iPhone's ``.heic``, a camera's ``.hif``): their pictures decoded by
FFmpeg, their EXIF block, XMP packet and colour profile read from the file's boxes.

OpenCV has no HEIF decoder, and HEIC is what an iPhone saves its photos as. The FFmpeg that
``process`` already runs for a video's sound (7.1 or newer) decodes HEVC-coded HEIF images,
the tiled ones every iPhone photo is (a grid of 512-pixel pictures) included, and turns them
upright by their rotation and mirror properties. AVIF, HEIF's AV1 sibling, OpenCV reads,
but not right where it is HDR, deeper than 8 bits, or cropped, turned or mirrored by a
property (:class:`HeifMetadata` says which): those FFmpeg decodes too.

:func:`engine.sources.read_image` and :func:`engine.sources.read_image_metadata` call this
module for a file whose first box says HEIF, whatever its name.
"""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np

from engine.remux import (
    FFMPEG_ENV,
    TONE_MAP,
    _transfer_of,
    ffmpeg_reason,
    file_arg,
    find_ffmpeg,
    tone_map_problem,
)

__all__ = [
    "HEIF_EXTENSIONS",
    "HeifError",
    "HeifMetadata",
    "MIN_FFMPEG",
    "decode_heif",
    "heif_metadata",
    "is_avif",
    "is_heif",
]

#: The names HEIF stills go by: Apple's, the standard's, and Canon's and Sony's cameras'.
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
#: The first FFmpeg whose CLI puts a tiled HEIF picture together (earlier ones give a tile).
MIN_FFMPEG = "7.1"
#: Brands (ISO/IEC 23008-12) of HEIF stills coded in HEVC, and the generic still brands.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis"})
_STILL_BRANDS = frozenset({b"mif1", b"mif2"})
#: AVIF's brands: OpenCV decodes those itself.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
#: Bounds on what metadata reading takes from a file: a damaged (or hostile) length must not
#: make it read or inflate gigabytes.
_METADATA_LIMIT = 16 << 20
_BOX_LIMIT = 100_000  # boxes, items or properties walked in all


class HeifError(RuntimeError):
    """An HEIF file could not be decoded; the message says why (the caller names the file)."""


class HeifMetadata(NamedTuple):
    """What an HEIF still holds besides its pixels, as stored: ``exif`` from its TIFF header
    on (where the item has one), ``icc`` the colour profile, ``xmp`` the XMP packet; None
    for each the file does not have. ``size``: ``(W, H)`` of the picture upright, by its
    size, crop and rotation properties (None where they cannot be read).
    AVIF stills are read too."""

    exif: bytes | None
    icc: bytes | None
    xmp: bytes | None
    size: tuple[int, int] | None = None
    #: The picture's transfer characteristics (ITU-T H.273: 16 PQ, 18 HLG) by its ``nclx``
    #: colour property; None without one.
    transfer: int | None = None
    #: Whether it has a crop, rotation or mirror property (``clap``, ``irot``, ``imir``): to
    #: be cropped and turned upright.
    transformed: bool = False
    #: Bits per channel by its ``pixi`` property (the most of any channel); None without one.
    bits: int | None = None
    #: Whether an alpha (transparency) picture goes with it (an ``auxl`` item whose ``auxC``
    #: property says alpha), which is not read.
    alpha: bool = False


def _brands(head: bytes) -> set[bytes]:
    """The brands ``head`` (a file's first bytes) names in its ``ftyp`` box; none without."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    size = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, size - 3, 4)}


def is_heif(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes; 64 are plenty) opens an HEIF still that is not
    an AVIF: its ``ftyp`` box names an HEVC still brand, or the generic one without AVIF's."""
    brands = _brands(head)
    if brands & _HEVC_BRANDS:
        return True
    return bool(brands & _STILL_BRANDS) and not brands & _AVIF_BRANDS


def is_avif(head: bytes) -> bool:
    """Whether ``head`` opens an AVIF still (HEIF's boxes around AV1), which OpenCV decodes
    (but see the module's note)."""
    brands = _brands(head)
    return bool(brands & _AVIF_BRANDS) and not brands & _HEVC_BRANDS


def _ffmpegs(ffmpeg: str | None) -> list[str]:
    """The executables to try, in order: ``ffmpeg`` where given; else the one
    :func:`engine.remux.find_ffmpeg` finds, then the one ``imageio-ffmpeg`` bundles where
    that differs (an older FFmpeg on the ``PATH``, Ubuntu 22.04's 4.4, reads no HEIF)."""
    if ffmpeg:
        return [ffmpeg]
    found = [f for f in (find_ffmpeg(),) if f]
    if not os.environ.get(FFMPEG_ENV):  # named by the user: that one only
        try:
            import imageio_ffmpeg

            bundled = imageio_ffmpeg.get_ffmpeg_exe()
        except Exception:  # not installed, or its binary missing for this platform
            bundled = None
        if bundled and bundled not in found:
            found.append(bundled)
    return found


def _run(command: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` with ``data`` on its standard input (nothing where None)."""
    stdin = {"input": data} if data is not None else {"stdin": subprocess.DEVNULL}
    try:
        return subprocess.run(command, capture_output=True, check=False, **stdin)  # type: ignore[call-overload]
    except OSError as exc:  # not there, not executable
        raise HeifError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc


class _Picture(NamedTuple):
    """What FFmpeg lists of the picture a file marks as its own (``(default)``)."""

    map: list[str]  # ``-map`` for it; [] for a tiled one, which FFmpeg picks by itself
    line: str  # FFmpeg's line for it ("" where it lists none)


def _picture(ffmpeg: str, source: str) -> _Picture:
    """The file's own picture as FFmpeg lists it: its primary item, marked ``(default)``, a
    tiled one as a "Tile Grid" stream group. Left to FFmpeg, it decodes the largest picture,
    which is not always that one (a second, larger image); but a tiled picture cannot be
    named (``-map 0:g:0`` gives its tiles), and is the largest."""
    text = _run([ffmpeg, "-hide_banner", "-nostdin", "-i", source]).stderr.decode(
        "utf-8", errors="replace"
    )
    found = re.search(r"^\s*Stream group #\S+: Tile Grid: [^\n]*\(default\)", text, re.M)
    if found:
        return _Picture([], found.group(0).strip())
    found = re.search(r"^\s*Stream #\d+:(\d+)\S*: Video: [^\n]*\(default\)", text, re.M)
    if found:
        return _Picture(["-map", f"0:{found.group(1)}"], found.group(0).strip())
    found = re.search(r"^\s*(Stream group #\S+: Tile Grid|Stream #\S+: Video): [^\n]*", text, re.M)
    return _Picture([], found.group(0).strip() if found else "")


def _tags(line: str) -> str:
    """``setparams`` giving the pictures the range, matrix, primaries and transfer FFmpeg's
    ``line`` lists (``yuv420p10le(tv, bt2020nc/bt2020/smpte2084)``), BT.2020's where it lists
    none, with a comma after it: pictures piped from one FFmpeg to another lose their colour
    tags, and ``zscale`` refuses a conversion from unknown."""
    found = re.search(r"\w\((?:(tv|pc), )?([\w-]+)(?:/([\w-]+)/([\w-]+))?\)", line)
    colour_range, *names = found.groups() if found else (None, None, None, None)
    matrix, primaries, transfer = names if names[1] else [names[0]] * 3
    params = {
        "range": colour_range or "tv",
        "colorspace": matrix if matrix not in (None, "unknown") else "bt2020nc",
        "color_primaries": primaries if primaries not in (None, "unknown") else "bt2020",
        "color_trc": transfer,
    }
    return "setparams=" + ":".join(f"{k}={v}" for k, v in params.items() if v) + ","


def _fits(got: tuple[int, int], expected: tuple[int, int] | None) -> bool:
    """Whether a decoded picture of size ``got`` is the one of size ``expected``: the same, or
    one short on an odd side (FFmpeg crops 4:2:0 pictures to even sizes)."""
    if expected is None:
        return True
    return all(e - g in ((0, 1) if e % 2 else (0,)) for g, e in zip(got, expected, strict=True))


def decode_heif(
    path: str | os.PathLike[str], *, ffmpeg: str | None = None
) -> tuple[np.ndarray, str | None]:
    """Decode the HEIF still at ``path`` with FFmpeg.

    Returns ``(image, note)``: ``image`` ``(H, W, 3) uint8 BGR``, the file's own picture
    (its primary item), upright, at the size the file gives it; an HDR picture (PQ or HLG, a
    camera's 10-bit HIF) tone mapped to SDR BT.709 as :class:`engine.remux.SdrFrames` maps
    video. ``note`` says where such a picture could not be tone mapped (its colours are then
    off), else None.

    Tries ``ffmpeg``, or each executable :func:`_ffmpegs` lists, until one decodes it.
    Raises :class:`HeifError` when none is found or none can.
    """
    source = file_arg(path)  # a name with a colon ("IMG:1.heic") was taken for a protocol
    candidates = _ffmpegs(ffmpeg)
    if not candidates:
        raise HeifError(
            f"an HEIF image, which SharpCam decodes with FFmpeg {MIN_FFMPEG} or newer, and "
            "none was found (pip install imageio-ffmpeg, or name one in $SHARPCAM_FFMPEG)"
        )
    expected = heif_metadata(path).size
    failures = []
    for exe in candidates:
        picture = _picture(exe, source)
        note = tone = None
        transfer = _transfer_of(picture.line)
        if transfer is not None:
            problem = tone_map_problem(exe)
            if problem:
                note = f"it is HDR ({transfer}) and is read as it is, its colours off: {problem}"
            else:
                tone = _tags(picture.line) + TONE_MAP
        # PPM: raw RGB behind a header that says the size, which FFmpeg's rotation decides.
        # An HDR picture goes as it is decoded (raw, in NUT, which says its size and pixel
        # format) to a second FFmpeg that tone maps it: a tiled one is put together in a
        # filter graph of FFmpeg's own, and FFmpeg takes no filter (-vf) after one of those.
        command = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", source]
        command += [*picture.map, "-frames:v", "1", "-an", "-sn", "-dn"]
        ppm = ["-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"]
        done = _run(command + (["-f", "nut", "-c:v", "rawvideo", "pipe:1"] if tone else ppm))
        if tone and done.returncode == 0 and done.stdout:
            command = [exe, "-hide_banner", "-loglevel", "error", "-f", "nut", "-i", "pipe:0"]
            done = _run(command + ["-vf", tone, *ppm], done.stdout)
        image = None
        if done.returncode == 0 and done.stdout:
            image = cv2.imdecode(np.frombuffer(done.stdout, np.uint8), cv2.IMREAD_COLOR)
        got = None if image is None else (image.shape[1], image.shape[0])
        if got is not None and _fits(got, expected):
            if expected is not None and got != expected:  # back to its odd size
                right, bottom = expected[0] - got[0], expected[1] - got[1]
                image = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REPLICATE)
            return image, note
        if got is not None and expected is not None:
            # An FFmpeg before 7.1 gives one tile of a tiled picture; FFmpeg 9 puts tiles of
            # under 64 pixels together wrongly: a picture of the wrong size, said nothing.
            why = (
                f"it decoded {got[0]}x{got[1]} pixels where the file says "
                f"{expected[0]}x{expected[1]}"
            )
        else:
            why = ffmpeg_reason(done.stderr) or (
                f"it exited with status {done.returncode}" if done.returncode else "no picture"
            )
        failures.append(f"{exe} could not ({why})")
    raise HeifError(
        f"an HEIF image, which SharpCam decodes with FFmpeg {MIN_FFMPEG} or newer: "
        + "; ".join(failures)
    )


# --- metadata -------------------------------------------------------------------------------


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, payload end)`` of the boxes in ``data[start:end]``; stops at one
    whose size does not fit."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        head = 8
        if size == 1:  # a 64-bit size follows
            if pos + 16 > end:
                return
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:  # to the end
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise ValueError("a box ends early")
    return int.from_bytes(data[pos : pos + size], "big")


def _cstring(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    stop = data.find(b"\0", pos, end)
    stop = end if stop < 0 else stop
    return data[pos:stop], stop + 1


class _Item(NamedTuple):
    kind: bytes
    content_type: bytes
    encoding: bytes


def _items(meta: bytes, start: int, end: int) -> dict[int, _Item]:
    """``iinf``'s items: their ids, types, and a ``mime`` item's content type and encoding."""
    version = meta[start]
    pos = start + 4 + (2 if version == 0 else 4)
    items: dict[int, _Item] = {}
    for kind, s, e in _boxes(meta, pos, end):
        if kind != b"infe" or len(items) >= _BOX_LIMIT:
            continue
        v = meta[s]
        if v < 2:
            continue  # versions 0 and 1 have no item type
        id_size = 2 if v == 2 else 4
        item_id = _uint(meta, s + 4, id_size)
        p = s + 4 + id_size + 2
        item_type = meta[p : p + 4]
        _, p = _cstring(meta, p + 4, e)  # the item's name
        content_type = encoding = b""
        if item_type == b"mime":
            content_type, p = _cstring(meta, p, e)
            encoding, _ = _cstring(meta, p, e) if p < e else (b"", p)
        items[item_id] = _Item(item_type, content_type, encoding)
    return items


class _Extent(NamedTuple):
    method: int  # 0: from the file's start; 1: from the idat box's payload
    offset: int
    length: int


def _locations(meta: bytes, start: int) -> dict[int, list[_Extent]]:
    """``iloc``'s extents per item; items in other files, or built of other items, left out."""
    version = meta[start]
    sizes = meta[start + 4]
    offset_size, length_size = sizes >> 4, sizes & 15
    base_size = meta[start + 5] >> 4
    index_size = meta[start + 5] & 15 if version in (1, 2) else 0
    id_size = 4 if version == 2 else 2
    count = _uint(meta, start + 6, id_size)
    pos = start + 6 + id_size
    found: dict[int, list[_Extent]] = {}
    per_extent = index_size + offset_size + length_size
    budget = _BOX_LIMIT  # extents in all: 12 KB of items of 65,535 empty ones each ran out
    for _ in range(min(count, _BOX_LIMIT)):
        item_id = _uint(meta, pos, id_size)
        pos += id_size
        method = 0
        if version in (1, 2):
            method = _uint(meta, pos, 2) & 15
            pos += 2
        reference = _uint(meta, pos, 2)
        base = _uint(meta, pos + 2, base_size) if base_size else 0
        pos += 2 + base_size
        extents = _uint(meta, pos, 2)
        pos += 2
        if per_extent == 0:
            # Extents of no bytes (every size 0) cannot differ, and bound nothing: one says all.
            extents = min(extents, 1)
        budget -= extents
        if budget < 0:
            break
        parts = []
        for _ in range(extents):
            pos += index_size
            offset = _uint(meta, pos, offset_size) if offset_size else 0
            length = _uint(meta, pos + offset_size, length_size) if length_size else 0
            pos += offset_size + length_size
            parts.append(_Extent(method, base + offset, length))
        if reference == 0 and method in (0, 1):
            found[item_id] = parts
    return found


def _references(meta: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, list[int]]]]:
    """``iref``'s references by type: ``(from item, [to items])``."""
    id_size = 2 if meta[start] == 0 else 4
    refs: dict[bytes, list[tuple[int, list[int]]]] = {}
    for kind, s, _ in _boxes(meta, start + 4, end):
        source = _uint(meta, s, id_size)
        count = _uint(meta, s + id_size, 2)
        p = s + id_size + 2
        targets = [_uint(meta, p + i * id_size, id_size) for i in range(count)]
        refs.setdefault(kind, []).append((source, targets))
    return refs


def _properties(
    meta: bytes, start: int, end: int
) -> tuple[list[tuple[bytes, int, int]], dict[int, list[int]]]:
    """``iprp``'s properties (``ipco``, in order: associations count from 1) and each item's
    associated property numbers (``ipma``)."""
    props: list[tuple[bytes, int, int]] = []
    assoc: dict[int, list[int]] = {}
    for kind, s, e in _boxes(meta, start, end):
        if kind == b"ipco":
            props = list(_boxes(meta, s, e))[:_BOX_LIMIT]
        elif kind == b"ipma":
            version, flags = meta[s], _uint(meta, s + 1, 3)
            id_size = 2 if version < 1 else 4
            index_size = 2 if flags & 1 else 1
            count = _uint(meta, s + 4, 4)
            p = s + 8
            for _ in range(min(count, _BOX_LIMIT)):
                item_id = _uint(meta, p, id_size)
                n = meta[p + id_size]
                p += id_size + 1
                mask = 0x7FFF if index_size == 2 else 0x7F
                assoc[item_id] = [
                    _uint(meta, p + i * index_size, index_size) & mask for i in range(n)
                ]
                p += n * index_size
    return props, assoc


def _read_extents(
    f: object, meta: bytes, idat: tuple[int, int] | None, parts: list[_Extent]
) -> bytes | None:
    total = sum(part.length for part in parts)
    if not parts or total > _METADATA_LIMIT:
        return None
    out = b""
    for part in parts:
        if part.method == 1:
            if idat is None or idat[0] + part.offset + part.length > idat[1]:
                return None
            out += meta[idat[0] + part.offset : idat[0] + part.offset + part.length]
        else:
            f.seek(part.offset)  # type: ignore[attr-defined]
            chunk = f.read(part.length)  # type: ignore[attr-defined]
            if len(chunk) != part.length:
                return None
            out += chunk
    return out


def _describing(
    items: dict[int, _Item],
    refs: dict[bytes, list[tuple[int, list[int]]]],
    primary: int,
    wanted: object,
) -> list[int]:
    """The items ``wanted`` accepts, those that describe the primary picture (``cdsc``) first
    (a thumbnail may have its own)."""
    chosen = [i for i, item in items.items() if wanted(item)]  # type: ignore[operator]
    about = {source for source, targets in refs.get(b"cdsc", []) if primary in targets}
    return sorted(chosen, key=lambda i: (i not in about, i))


def heif_metadata(path: str | os.PathLike[str]) -> HeifMetadata:
    """What :class:`HeifMetadata` says of the HEIF or AVIF still at ``path``, from its boxes
    (nothing is decoded); None (or False) for each it does not have or that cannot be read."""
    empty = HeifMetadata(None, None, None)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if not is_heif(head) and not is_avif(head):
                return empty
            meta = b""
            pos = 0
            for _ in range(_BOX_LIMIT):
                f.seek(pos)
                top = f.read(16)
                if len(top) < 8:
                    break
                size, kind = int.from_bytes(top[:4], "big"), top[4:8]
                head_size = 8
                if size == 1:
                    size, head_size = int.from_bytes(top[8:16], "big"), 16
                if size < head_size:
                    break
                if kind == b"meta":
                    if size > _METADATA_LIMIT:
                        return empty
                    f.seek(pos + head_size)
                    meta = f.read(size - head_size)
                    break
                pos += size
            if not meta:
                return empty
            return _from_meta(f, meta)
    except (OSError, ValueError, IndexError):
        return empty


def _from_meta(f: object, meta: bytes) -> HeifMetadata:
    children = {kind: (s, e) for kind, s, e in _boxes(meta, 4)}  # after version and flags
    if b"pitm" not in children or b"iinf" not in children or b"iloc" not in children:
        return HeifMetadata(None, None, None)
    s, _ = children[b"pitm"]
    primary = _uint(meta, s + 4, 2 if meta[s] == 0 else 4)
    items = _items(meta, *children[b"iinf"])
    where = _locations(meta, children[b"iloc"][0])
    refs = _references(meta, *children[b"iref"]) if b"iref" in children else {}
    idat = children.get(b"idat")

    exif = None
    for item in _describing(items, refs, primary, lambda i: i.kind == b"Exif"):
        data = _read_extents(f, meta, idat, where.get(item, []))
        if data and len(data) > 4:
            # A 4-byte offset to the TIFF header comes first (it skips Apple's "Exif\0\0").
            exif = data[4 + int.from_bytes(data[:4], "big") :] or None
            break

    xmp = None
    for item in _describing(
        items,
        refs,
        primary,
        lambda i: i.kind == b"mime" and i.content_type == b"application/rdf+xml",
    ):
        data = _read_extents(f, meta, idat, where.get(item, []))
        if data and items[item].encoding in (b"deflate", b"gzip"):
            inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
            try:
                data = inflate.decompress(data, _METADATA_LIMIT)
            except zlib.error:
                data = None
            if not inflate.eof or inflate.unconsumed_tail:
                # Cut off (or past the limit): no XMP rather than a piece of one, as for EXIF.
                data = None
        elif items[item].encoding not in (b"", b"identity"):
            data = None
        if data:
            xmp = data
            break

    icc = size = transfer = None
    transformed = alpha = False
    bits = None
    if b"iprp" in children:
        props, assoc = _properties(meta, *children[b"iprp"])
        # A tiled picture's profile may be on its tiles only.
        tiles = [t for src, targets in refs.get(b"dimg", []) if src == primary for t in targets]
        for item in [primary, *tiles[:1]]:
            for number in assoc.get(item, []):
                if not 1 <= number <= len(props):
                    continue
                kind, s, e = props[number - 1]
                if kind == b"colr" and meta[s : s + 4] in (b"prof", b"rICC") and e - s > 4:
                    icc = meta[s + 4 : e]
                    break
            if icc is not None:
                break
        own = [props[n - 1] for n in assoc.get(primary, []) if 1 <= n <= len(props)]
        size = _upright_size(meta, own)
        transformed = any(
            kind in (b"imir", b"clap") or kind == b"irot" and meta[s] & 3 for kind, s, _ in own
        )
        pixi = [(s, e) for kind, s, e in own if kind == b"pixi"]
        if pixi:
            # Its own bounds: those left by the loop above were another property's (a short
            # last one hid a 10-bit AVIF's depth; a short pixi lost the EXIF, ICC and XMP).
            s, e = pixi[0]
            if e - s > 5 and meta[s + 4]:
                bits = max(meta[s + 5 : min(e, s + 5 + meta[s + 4])])
        for item in [primary, *tiles[:1]]:
            nclx = [
                _uint(meta, s + 6, 2)
                for number in assoc.get(item, [])
                if 1 <= number <= len(props)
                for kind, s, _ in [props[number - 1]]
                if kind == b"colr" and meta[s : s + 4] == b"nclx"
            ]
            if nclx:
                transfer = nclx[0]
                break
        auxiliary = [src for src, targets in refs.get(b"auxl", []) if primary in targets]
        alpha = any(
            kind == b"auxC" and _is_alpha(meta[s + 4 : e])
            for item in auxiliary
            for number in assoc.get(item, [])
            if 1 <= number <= len(props)
            for kind, s, e in [props[number - 1]]
        )
    return HeifMetadata(exif, icc, xmp, size, transfer, transformed, bits, alpha)


def _is_alpha(aux_type: bytes) -> bool:
    """Whether an ``auxC`` property's type (NUL-ended URN, subtype after it) names an alpha
    picture: the generic URN, or HEVC's auxiliary picture type 1 (2 is depth)."""
    urn = aux_type.split(b"\0", 1)[0]
    return urn.endswith(b":alpha") or urn == b"urn:mpeg:hevc:2015:auxid:1"


def _upright_size(meta: bytes, props: list[tuple[bytes, int, int]]) -> tuple[int, int] | None:
    """``(W, H)`` of a picture with properties ``props`` once cropped by its ``clap`` (an odd
    size is coded even, and cropped) and turned by its ``irot``; None without a size
    (``ispe``)."""
    kinds = {kind: (s, e) for kind, s, e in props}
    if b"ispe" not in kinds:
        return None
    s, _ = kinds[b"ispe"]
    width, height = _uint(meta, s + 4, 4), _uint(meta, s + 8, 4)
    if b"clap" in kinds:
        s, _ = kinds[b"clap"]
        fractions = [_uint(meta, s + 4 * i, 4) for i in range(4)]
        if not fractions[1] or not fractions[3]:
            return None
        width = round(fractions[0] / fractions[1])
        height = round(fractions[2] / fractions[3])
    if b"irot" in kinds and meta[kinds[b"irot"][0]] & 1:  # a quarter turn, either way
        width, height = height, width
    return width, height
