"""Frame conversion and sources: cameras (faked at the OpenCV boundary), videos, images, folders."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Container, Sequence
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from engine import sources
from engine.frames import Frame, resize_to, to_rgb8
from engine.sources import (
    CameraNotFoundError,
    CameraSource,
    ImageFolderSource,
    ImageSource,
    SourceError,
    VideoFileSource,
    list_cameras,
    open_source,
    read_image,
    source_kind,
    video_has_audio,
)

# --------------------------------------------------------------------------- helpers


def write_video(path: Path, n: int, size=(64, 48), fps=25.0, fourcc="MJPG") -> Path:
    """A clip whose frame i is a flat grey of value 4*i (BGR), so order is checkable."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((h, w, 3), 4 * i, np.uint8))
    writer.release()
    return path


def write_avi_with_sound(path: Path, n: int = 6, size=(64, 48), fps: int = 10) -> Path:
    """A playable MJPG AVI with a PCM sound track (OpenCV cannot write one; no ffmpeg here).
    Frame i is a flat grey of value 20*i."""
    w, h = size

    def chunk(tag: bytes, data: bytes) -> bytes:
        return tag + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)

    def riff_list(kind: bytes, body: bytes) -> bytes:
        return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body

    rate = 8000
    per_frame = rate // fps
    avih = struct.pack("<10I4I", 1_000_000 // fps, 0, 0, 0x10, n, 0, 2, 0, w, h, 0, 0, 0, 0)
    vstrh = b"vidsMJPG" + struct.pack(
        "<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, fps, 0, n, 0, 2**32 - 1, 0, 0, 0, w, h
    )
    vstrf = struct.pack("<IiiHH4sIiiII", 40, w, h, 1, 24, b"MJPG", w * h * 3, 0, 0, 0, 0)
    astrh = b"auds\0\0\0\0" + struct.pack(
        "<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, rate, 0, per_frame * n, 0, 2**32 - 1, 2, 0, 0, 0, 0
    )
    astrf = struct.pack("<HHIIHHH", 1, 1, rate, rate * 2, 2, 16, 0)
    hdrl = chunk(b"avih", avih)
    hdrl += riff_list(b"strl", chunk(b"strh", vstrh) + chunk(b"strf", vstrf))
    hdrl += riff_list(b"strl", chunk(b"strh", astrh) + chunk(b"strf", astrf))
    movi, idx1 = b"", b""
    for i in range(n):
        jpeg = cv2.imencode(".jpg", np.full((h, w, 3), 20 * i, np.uint8))[1].tobytes()
        for tag, data in ((b"00dc", jpeg), (b"01wb", bytes(2 * per_frame))):
            idx1 += tag + struct.pack("<III", 0x10, 4 + len(movi), len(data))
            movi += chunk(tag, data)
    body = b"AVI " + riff_list(b"hdrl", hdrl) + riff_list(b"movi", movi) + chunk(b"idx1", idx1)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_png(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


# --------------------------------------------------------------------------- to_rgb8


def test_to_rgb8_bgr_swaps_channels_and_keeps_input():
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    out = to_rgb8(bgr)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out[..., 0] == 200).all() and (out[..., 2] == 10).all()
    assert (bgr[..., 0] == 10).all(), "without inplace=True the caller's array is untouched"


def test_to_rgb8_rgb_passthrough_is_no_copy():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    assert to_rgb8(rgb, bgr=False) is rgb


def test_to_rgb8_inplace_reuses_memory():
    bgr = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    expected = bgr[..., ::-1].copy()
    out = to_rgb8(bgr, inplace=True)
    assert np.shares_memory(out, bgr)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("shape", [(17, 31), (17, 31, 1)])
def test_to_rgb8_grey_odd_size(shape):
    grey = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    out = to_rgb8(grey)
    assert out.shape == (17, 31, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey.reshape(17, 31))


def test_to_rgb8_bgra_and_rgba_drop_alpha():
    bgra = np.zeros((3, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 1, 2, 3, 77
    np.testing.assert_array_equal(to_rgb8(bgra)[0, 0], [3, 2, 1])
    np.testing.assert_array_equal(to_rgb8(bgra, bgr=False)[0, 0], [1, 2, 3])


def test_to_rgb8_16bit_full_range():
    img = np.array([[0, 257, 32768, 65535]], np.uint16)
    out = to_rgb8(img)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


def test_to_rgb8_16bit_rounds_every_level_to_the_nearest_8bit_one() -> None:
    # 65535 maps to 255: scaled by 1/256 instead, values just over a half level (51529 is
    # 200.502 levels) rounded down, one level too dark.
    img = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = (img.astype(np.int64) * 255 + 32767) // 65535
    np.testing.assert_array_equal(to_rgb8(img)[..., 0], want)


def test_to_rgb8_half_float_rounds_as_exactly_as_single_float() -> None:
    # A half-precision picture (a model's fp16 output, an EXR) scaled in float16 itself lost
    # the fraction: 0.12744 (32.497 levels) read 33, not 32.
    f = np.array([[0.12744140625, 0.2529296875, 0.5, 1.0]], np.float16)
    np.testing.assert_array_equal(to_rgb8(f)[0, :, 0], [32, 64, 128, 255])


def test_to_rgb8_float_and_bool():
    f = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], np.float64)
    np.testing.assert_array_equal(to_rgb8(f)[0, :, 1], [0, 0, 128, 255, 255])
    b = np.array([[True, False]])
    np.testing.assert_array_equal(to_rgb8(b)[0, :, 2], [255, 0])


def test_to_rgb8_float_nan_and_inf_are_defined_and_silent():
    # A float TIFF with NaN pixels (no data): np.clip kept NaN, whose cast to uint8 is undefined
    # and warned "invalid value encountered in cast".
    f = np.array([[np.nan, np.inf, -np.inf, 0.5]], np.float32)
    kept = f.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_rgb8(f)
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 0, 128])
    np.testing.assert_array_equal(f, kept)  # the caller's array is not written


def test_to_rgb8_non_contiguous():
    big = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    view = big[::2, 1::3]
    out = to_rgb8(view, bgr=False)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize(
    "shape", [(4, 4, 2), (4, 4, 5), (2, 4, 4, 3), (12,)], ids=["2ch", "5ch", "4d", "1d"]
)
def test_to_rgb8_rejects_non_images_with_exact_message(shape):
    with pytest.raises(ValueError) as info:
        to_rgb8(np.zeros(shape, np.uint8))
    assert str(info.value) == (
        f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {shape}"
    )


def test_to_rgb8_rejects_bad_dtype_empty_and_non_arrays():
    with pytest.raises(TypeError, match="got int32"):
        to_rgb8(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="non-empty"):
        to_rgb8(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="numpy array image, got list"):
        to_rgb8([[1, 2], [3, 4]])


def test_to_rgb8_rejects_an_image_of_no_width():
    # Zero columns is as empty as zero rows: named as such, not an OpenCV assertion (or, for
    # RGB input, an empty "frame" handed on to the model).
    for bgr in (True, False):
        with pytest.raises(ValueError, match="non-empty"):
            to_rgb8(np.zeros((4, 0, 3), np.uint8), bgr=bgr)


def test_a_frame_and_an_image_give_their_size_as_width_then_height():
    # (W, H), the order OpenCV and the rest of the API use: a 64x48 frame read as 48x64
    # opened the outputs at the transposed size.
    from engine.frames import image_size

    img = np.zeros((48, 64, 3), np.uint8)
    assert Frame(img, 0, 0.0).size == (64, 48)
    assert image_size(img) == (64, 48)


def test_pictures_differ_only_by_more_than_a_colour_matrix():
    # The check that FFmpeg's first picture is OpenCV's: the same picture decoded with another
    # colour matrix differs by about 9 levels (not another picture, even where FFmpeg's is
    # the brighter: a uint8 difference wrapped to 246), another picture by 50 or more, and
    # another size is another picture.
    from engine.frames import pictures_differ

    grey = np.full((8, 8, 3), 100, np.uint8)
    assert not pictures_differ(grey, grey + 10)
    assert not pictures_differ(grey + 10, grey)
    assert pictures_differ(grey, grey + 50)
    assert pictures_differ(grey, np.full((8, 9, 3), 100, np.uint8))


def test_pictures_differ_only_over_the_levels_not_at_them() -> None:
    # "Over levels": a mean difference of exactly 24 is still the same picture.
    from engine.frames import pictures_differ

    grey = np.full((8, 8, 3), 100, np.uint8)
    assert not pictures_differ(grey, grey + 24)
    assert pictures_differ(grey, grey + 25)
    assert not pictures_differ(grey, grey + 5, levels=5.0)


def test_resize_to_uses_out_buffer_and_skips_same_size():
    img = np.zeros((10, 20, 3), np.uint8)
    assert resize_to(img, (20, 10)) is img
    out = np.empty((5, 7, 3), np.uint8)
    assert resize_to(img, (7, 5), out=out) is out
    # Shrinking by 4 is area averaging (no aliasing): each output pixel is its 4x4 block's mean,
    # written into the caller's buffer.
    noise = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    blocks = noise.reshape(10, 4, 12, 4, 3).mean(axis=(1, 3))
    out = np.zeros((10, 12, 3), np.uint8)
    assert resize_to(noise, (12, 10), out=out) is out
    assert np.abs(out.astype(float) - blocks).max() <= 1
    assert np.abs(resize_to(noise, (12, 10)).astype(float) - blocks).max() <= 1


# --------------------------------------------------------------------------- images


def test_read_image_converts_16bit_grey_odd_size(tmp_path):
    grey16 = (np.arange(13 * 7, dtype=np.uint16).reshape(13, 7) * 700).astype(np.uint16)
    path = write_png(tmp_path / "g16.png", grey16)
    img = read_image(path)
    assert img.shape == (13, 7, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], cv2.convertScaleAbs(grey16, alpha=255 / 65535))


def test_read_image_bgra(tmp_path):
    bgra = np.zeros((9, 5, 4), np.uint8)
    bgra[..., 2] = 250  # red
    bgra[..., 3] = 128
    img = read_image(write_png(tmp_path / "a.png", bgra))
    assert img.shape == (9, 5, 3)
    np.testing.assert_array_equal(img[0, 0], [250, 0, 0])


def test_read_image_applies_the_exif_orientation(tmp_path):
    # A phone stores a portrait photo as landscape pixels plus "rotate 90" in its EXIF; every
    # viewer shows it upright, and so must the processed copy (which carries no EXIF).
    bgr = np.zeros((40, 80, 3), np.uint8)
    bgr[:, :40] = (0, 0, 255)  # left half red
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd
    path = tmp_path / "portrait.jpg"
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:])
    img = read_image(path)
    assert img.shape == (80, 40, 3)  # upright, as cv2.imread shows it
    assert img[5, 20, 0] > 200 and img[-5, 20, 0] < 50  # red on top after the turn


def test_still_image_offline_is_one_frame(tmp_path):
    path = write_png(tmp_path / "x.png", np.full((8, 12, 3), 9, np.uint8))
    with open_source(path, live=False) as src:
        assert isinstance(src, ImageSource) and src.frame_count == 1 and src.size == (12, 8)
        first = src.read()
        assert isinstance(first, Frame) and first.index == 0 and first.image.shape == (8, 12, 3)
        assert src.read() is None


def test_every_file_source_takes_loop(tmp_path):
    """The app opens any file the user names with ``loop=True`` (the demo clip's behaviour);
    a still image must accept it too, not fail as a "camera problem"."""
    path = write_png(tmp_path / "x.png", np.full((8, 12, 3), 9, np.uint8))
    with open_source(str(path), live=True, fps=200, loop=True) as src:
        assert isinstance(src, ImageSource)
        frames = [src.read() for _ in range(3)]
        assert [f.index for f in frames] == [0, 1, 2]


def test_still_image_live_repeats_at_requested_fps(tmp_path):
    path = write_png(tmp_path / "x.png", np.zeros((8, 12, 3), np.uint8))
    with open_source(str(path), live=True, fps=100, size=(6, 4)) as src:
        assert src.frame_count is None and src.size == (6, 4)
        t0 = time.perf_counter()
        frames = [src.read() for _ in range(11)]
        elapsed = time.perf_counter() - t0
    assert [f.index for f in frames] == list(range(11))
    assert all(f.image.shape == (4, 6, 3) for f in frames)
    # 10 periods of 10 ms after the first frame; pacing never runs ahead of the clock.
    assert elapsed >= 0.09


def test_folder_natural_order_and_every_image(tmp_path):
    for i in (10, 2, 1):
        write_png(tmp_path / f"f{i}.png", np.full((4, 4, 3), i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path, live=False) as src:
        assert isinstance(src, ImageFolderSource) and src.frame_count == 3
        values = [int(f.image[0, 0, 0]) for f in src]
    assert values == [1, 2, 10]


def test_folder_skips_hidden_files(tmp_path):
    # A macOS metadata twin ("._f1.png") or a killed writer's partial file used to stop the run.
    for i in (1, 2):
        write_png(tmp_path / f"f{i}.png", np.full((4, 4, 3), i, np.uint8))
    (tmp_path / "._f1.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (tmp_path / ".f3.partial.png").write_bytes(b"\x89PNG truncated")
    with open_source(tmp_path, live=False) as src:
        assert src.frame_count == 2
        assert [int(f.image[0, 0, 0]) for f in src] == [1, 2]


def test_folder_with_unreadable_image_names_it(tmp_path):
    write_png(tmp_path / "a1.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "a2.png").write_bytes(b"this is no png")
    with open_source(tmp_path, live=False) as src:
        assert src.read() is not None
        with pytest.raises(SourceError, match="a2.png"):
            src.read()


def _folder_with_bad_images(folder: Path) -> None:
    """a1, a3, a5 readable (grey 1, 3, 5); a0 garbage, a2 a truncated PNG, a6 empty."""
    for i in (1, 3, 5):
        write_png(folder / f"a{i}.png", np.full((4, 4, 3), i, np.uint8))
    (folder / "a0.png").write_bytes(b"this is no png")
    (folder / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    (folder / "a6.png").write_bytes(b"")


def test_folder_skipping_unreadable_images_lists_them(tmp_path):
    # One corrupt photo used to end `process DIR OUT` with the rest of the folder undone.
    _folder_with_bad_images(tmp_path)
    with open_source(tmp_path, live=False, skip_unreadable=True) as src:
        assert src.frame_count == 6 and src.size == (4, 4)  # the first readable image's
        frames = list(src)
        assert [int(f.image[0, 0, 0]) for f in frames] == [1, 3, 5]
        assert [f.index for f in frames] == [0, 1, 2]
        # Frame indices no longer follow the files: each frame's file is named.
        assert [p.name for p in src.frame_files] == ["a1.png", "a3.png", "a5.png"]
        assert [p.name for p, _ in src.skipped] == ["a0.png", "a2.png", "a6.png"]
        for file, message in src.skipped:
            assert f"cannot read image file {file}" in message


def test_a_folder_names_an_image_whose_link_is_broken(tmp_path):
    # A photo linked from a drive that is not mounted: counted and named among the skipped,
    # not left out of the folder without a word. A folder named like an image is no frame.
    for i in (1, 3):
        write_png(tmp_path / f"a{i}.png", np.full((4, 4, 3), i, np.uint8))
    (tmp_path / "a2.png").symlink_to(tmp_path / "unmounted" / "a2.png")
    (tmp_path / "a4.png").mkdir()
    with open_source(tmp_path, live=False, skip_unreadable=True) as src:
        assert src.frame_count == 3
        assert [int(f.image[0, 0, 0]) for f in src] == [1, 3]
        assert [p.name for p, _ in src.skipped] == ["a2.png"]
        assert "a2.png" in src.skipped[0][1]


def test_a_looping_folder_lists_a_skipped_image_once(tmp_path):
    _folder_with_bad_images(tmp_path)
    with open_source(tmp_path, live=False, loop=True, skip_unreadable=True) as src:
        values = [int(src.read().image[0, 0, 0]) for _ in range(7)]
        assert values == [1, 3, 5, 1, 3, 5, 1]
        assert len(src.skipped) == 3
        assert src.frame_files == []  # a looping source would grow it forever


def test_a_looping_folder_tries_a_skipped_image_again_on_each_pass(tmp_path):
    # The window's live view: a photo caught mid-save was skipped for the rest of the session,
    # and its banner said it could not be read long after it could.
    for i in (1, 2, 3):
        write_png(tmp_path / f"a{i}.png", np.full((4, 4, 3), i, np.uint8))
    whole = (tmp_path / "a2.png").read_bytes()
    with open_source(tmp_path, live=False, loop=True, skip_unreadable=True) as src:
        assert [int(src.read().image[0, 0, 0]) for _ in range(2)] == [1, 2]
        (tmp_path / "a2.png").write_bytes(whole[:20])  # half-written
        assert [int(src.read().image[0, 0, 0]) for _ in range(3)] == [3, 1, 3]
        assert [p.name for p, _ in src.unreadable] == ["a2.png"]
        (tmp_path / "a2.png").write_bytes(whole)
        assert [int(src.read().image[0, 0, 0]) for _ in range(3)] == [1, 2, 3]
        assert src.unreadable == [] and [p.name for p, _ in src.skipped] == ["a2.png"]


def test_a_looping_folder_that_can_no_longer_be_read_says_so(tmp_path):
    # Moved or unplugged while it played: it ended as if the source had simply run out.
    folder = tmp_path / "trip"
    folder.mkdir()
    for i in (1, 2):
        write_png(folder / f"a{i}.png", np.full((4, 4, 3), i, np.uint8))
    with open_source(folder, live=False, loop=True, skip_unreadable=True) as src:
        assert int(src.read().image[0, 0, 0]) == 1
        folder.rename(tmp_path / "moved")
        with pytest.raises(SourceError, match=r"none of the 2 images in folder .*trip can be read"):
            src.read()


def test_a_folder_without_a_readable_image_is_an_error_even_skipping(tmp_path):
    (tmp_path / "a.png").write_bytes(b"this is no png")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(SourceError, match=r"no readable images in folder .*all 2 failed.*a\.png"):
        open_source(tmp_path, live=False, skip_unreadable=True)
    # Without skipping, the first unreadable image is the error, as before.
    with pytest.raises(SourceError, match=r"cannot read image file .*a\.png"):
        open_source(tmp_path, live=False)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no images in folder"):
        open_source(tmp_path, live=False)


# --------------------------------------------------------------------------- files: errors


@pytest.mark.parametrize("name", ["missing.mp4", "missing.png", "missing_dir/"])
def test_missing_file_names_it(tmp_path, name):
    target = tmp_path / name
    with pytest.raises(SourceError) as info:
        open_source(target, live=False)
    assert str(target).rstrip("/") in str(info.value)


def test_missing_file_direct_constructors_name_it(tmp_path):
    for cls in (VideoFileSource, ImageSource, ImageFolderSource):
        with pytest.raises(SourceError, match="nothing_here"):
            cls(path=tmp_path / "nothing_here", live=False)


@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.png"])
def test_unreadable_file_names_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 definitely not media " * 50)
    with pytest.raises(SourceError) as info:
        open_source(path, live=False)
    assert str(path) in str(info.value)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` RGB and whose data is one row."""
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" + bytes(3 * width))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_an_image_declaring_more_pixels_than_opencv_reads_is_a_source_error(tmp_path):
    # cv2.imdecode raised its assertion (CV_IO_MAX_IMAGE_PIXELS): the user saw
    # "error: error: OpenCV(5.0.0) .../loadsave.cpp:79: error: (-215:Assertion failed) ...".
    path = _png_header_only(tmp_path / "huge.png", 100_000, 100_000)
    with pytest.raises(SourceError, match="huge.png: its declared size is larger than OpenCV"):
        read_image(path)
    with pytest.raises(SourceError, match="huge.png"):
        open_source(path, live=False)
    write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with open_source(tmp_path, live=False) as src:  # a folder reads it mid-run
        assert src.read() is not None
        with pytest.raises(SourceError, match="huge.png"):
            src.read()


def test_a_video_it_may_not_read_says_so(tmp_path, monkeypatch):
    # OpenCV only says "not opened": a file without read permission was "not a video, or a
    # codec OpenCV cannot decode". (Faked: the tests may run as root, who reads anything.)
    path = write_video(tmp_path / "locked.avi", 3)
    real_open = open

    def guarded(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(sources, "open", guarded, raising=False)
    with pytest.raises(SourceError, match="cannot read video file .*locked.avi: Permission denied"):
        open_source(path, live=False)


def test_a_folder_it_may_not_list_says_so(tmp_path, monkeypatch):
    # was a bare "[Errno 13] Permission denied: '...'"
    write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    real_iterdir = Path.iterdir

    def guarded(self):
        if self == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", guarded)
    with pytest.raises(SourceError, match=f"cannot read folder {tmp_path}: Permission denied"):
        open_source(tmp_path, live=False)


def test_source_kind():
    assert source_kind(0) == "camera"
    assert source_kind("1") == "camera"
    assert source_kind("/dev/video3") == "camera"
    assert source_kind("a/b.JPG") == "image"
    assert source_kind("clip.mp4") == "video"


def test_a_device_link_is_a_camera_with_its_nodes_index(tmp_path):
    # /dev/v4l/by-id/usb-...-video-index0 (the name that survives replugging) was taken for a
    # video file: the decoder read nothing from it and the run ended at once.
    from engine.sources import _parse_camera

    by_id = tmp_path / "usb-Logitech_BRIO-video-index0"
    by_id.symlink_to("/dev/null")  # a character device, as a camera node is
    assert source_kind(by_id) == "camera"
    assert source_kind("/dev/null") == "camera"
    node = tmp_path / "usb-Other-video-index0"
    node.symlink_to("/dev/video3")
    assert _parse_camera(str(node)) == (str(node), 3)
    assert _parse_camera("/dev/video5") == ("/dev/video5", 5)


def test_an_unplugged_cameras_device_link_is_still_a_camera(monkeypatch):
    # Unplugged, the by-id link is gone (nothing to stat): it read as a missing video file,
    # "no such file or folder", where /dev/video5 says which cameras there are (and the app
    # refused to start on it at all).
    gone = "/dev/v4l/by-id/usb-SharpCam_Test_Gone-video-index0"
    assert not os.path.lexists(gone)
    assert source_kind(gone) == "camera"
    monkeypatch.setattr(sources, "_probe_camera", lambda i: i == 0)
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, opened=False))
    with pytest.raises(CameraNotFoundError, match=f"camera {gone} does not exist; available"):
        open_source(gone, live=True)


def test_a_registered_kind_opens_specs_that_are_no_files(tmp_path, monkeypatch):
    # register_source is the way to add a source that is not a file (a test pattern, a
    # screen grab): open_source refused every such spec as "no such file or folder".
    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    image = write_png(tmp_path / "still.png", np.zeros((4, 6, 3), np.uint8))
    seen: list[object] = []

    def pattern(spec, *, live, size, fps, **options):  # noqa: ANN001, ANN003, ANN202
        seen.append(spec)
        return ImageSource(path=image, live=live, size=size, fps=fps)

    sources.register_source("pattern", pattern)
    with open_source("pattern:bars", kind="pattern", live=False) as src:
        assert src.read() is not None
    assert seen == ["pattern:bars"]
    # The built-in file kinds still name a missing file.
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(tmp_path / "missing.mp4", kind="video", live=False)


# --------------------------------------------------------------------------- video


def test_video_offline_every_frame_in_order(tmp_path):
    path = write_video(tmp_path / "v.avi", 12)
    with open_source(path, live=False) as src:
        assert isinstance(src, VideoFileSource)
        assert src.size == (64, 48) and src.fps == pytest.approx(25.0) and src.frame_count == 12
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    grey = [int(np.median(f.image)) for f in frames]
    assert all(abs(g - 4 * i) <= 2 for i, g in enumerate(grey)), grey
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)


def test_a_slow_videos_own_rate_is_kept(tmp_path):
    # A slideshow clip (ffmpeg -framerate 1/5): its declared 0.2 fps was taken for "no rate"
    # and replaced by 30, so `process` wrote it at 30 fps (150 times too short) and live
    # playback flashed through the pictures.
    path = write_video(tmp_path / "slides.avi", 3, fps=0.2)
    with open_source(path, live=False, fps=10) as src:
        assert src.fps == pytest.approx(0.2)
        assert "@ 0.2 fps" in src.describe()


def test_a_one_frame_video_is_described_as_one_frame(tmp_path):
    # "1 frames (offline)" on the first line of `process one.mp4 out.mp4`.
    with open_source(write_video(tmp_path / "one.avi", 1), live=False) as src:
        assert ", 1 frame (offline)" in src.describe(), src.describe()
    with open_source(write_video(tmp_path / "two.avi", 2), live=False) as src:
        assert ", 2 frames (offline)" in src.describe(), src.describe()


@pytest.mark.parametrize("declared", [0.0, float("nan"), -5.0, 1e-6, 90000.0])
def test_a_video_without_a_usable_rate_falls_back(tmp_path, monkeypatch, declared):
    path = write_video(tmp_path / "v.avi", 3)

    class Declares(FakeCapture):
        def get(self, prop):
            return declared if prop == cv2.CAP_PROP_FPS else super().get(prop)

    monkeypatch.setattr(sources, "_make_capture", Declares)
    with VideoFileSource(path=path, live=False, fps=12) as src:
        assert src.fps == 12.0
    with VideoFileSource(path=path, live=False) as src:
        assert src.fps == sources.DEFAULT_FPS


@pytest.mark.parametrize(
    ("declared", "step_ms", "expected", "count"),
    [
        # a browser's WebM (ms time base, no rate): its count followed 1000 fps, so none
        (1000.0, [33.0, 34.0], 1000 / 33.5, None),
        (0.0, [40.0], 25.0, 2944),  # no rate at all, but timestamps
        (240.0, [1000 / 240], 240.0, 2944),  # a real slow-motion clip keeps its declared rate
        (1000.0, [0.0], 1000.0, 2944),  # timestamps that say nothing change nothing
    ],
)
def test_a_video_rate_is_checked_against_its_timestamps(
    tmp_path, monkeypatch, declared, step_ms, expected, count
):
    path = write_video(tmp_path / "v.avi", 3)

    class Stamped(FakeCapture):
        # 90 frames; presentation times advancing by the steps in turn, as decoded.
        def __init__(self, target, api):
            super().__init__(target, api, frames=90)
            self.read_count = 0

        def grab(self):
            ok = super().grab()
            self.read_count += ok
            return ok

        def read(self):
            ok = self.grab()
            return ok, np.zeros((24, 32, 3), np.uint8)

        def get(self, prop):
            if prop == cv2.CAP_PROP_FPS:
                return declared
            if prop == cv2.CAP_PROP_FRAME_COUNT:
                return 2944.0  # the container's estimate: its length times the declared rate
            if prop == cv2.CAP_PROP_POS_MSEC:
                n = self.read_count - 1
                return sum(step_ms[i % len(step_ms)] for i in range(n))
            return super().get(prop)

    monkeypatch.setattr(sources, "_make_capture", Stamped)
    with VideoFileSource(path=path, live=False, fps=12) as src:
        assert src.fps == pytest.approx(expected, rel=0.01)
        assert src.frame_count == count


@pytest.mark.parametrize("times_from", [0, 7])  # OpenCV's positions known throughout, or late
def test_a_run_of_damaged_pictures_mid_video_does_not_end_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times_from: int
) -> None:
    # OpenCV's read fails once per picture its decoder refuses, then reads on: three in a row
    # ended the video there, and the pictures after them were lost.
    path = write_video(tmp_path / "v.avi", 3)
    lost = {4, 5, 6}

    class Damaged(_DamagedPictures):
        end, damaged = 12, lost

        def msec(self, shown: int) -> float:
            return 40.0 * shown if shown >= times_from else float("nan")

    monkeypatch.setattr(sources, "_make_capture", Damaged)
    with VideoFileSource(path=path, live=False) as src:
        seen = []
        while (frame := src.read()) is not None:
            seen.append(int(frame.image[0, 0, 0]) // 10)
    assert seen == [i for i in range(12) if i not in lost]


def test_a_looping_video_reports_each_pass_its_own_damaged_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `gaps` is the pass's: kept across passes, a damaged clip looping in the app (any file
    # the user names loops) grew the list by its damaged runs on every pass, for ever.
    path = write_video(tmp_path / "v.avi", 3)

    class DamagedLoop(FakeCapture):
        def __init__(self, target: str, api: int) -> None:
            super().__init__(target, api)
            self.pos = 0  # the next picture; 3 is damaged, 6 is the end
            self.shown = 0

        def set(self, prop: int, value: float) -> bool:
            if prop == cv2.CAP_PROP_POS_FRAMES:
                self.pos = int(value)
            return super().set(prop, value)

        def read(self) -> tuple[bool, np.ndarray | None]:
            i, self.pos = self.pos, self.pos + 1
            if i >= 6 or i == 3:
                return False, None
            self.shown = i
            return True, np.full((24, 32, 3), 10 * i, np.uint8)

        def get(self, prop: int) -> float:
            if prop == cv2.CAP_PROP_POS_MSEC:
                return 40.0 * self.shown
            return super().get(prop)

    monkeypatch.setattr(sources, "_make_capture", DamagedLoop)
    per_pass = []
    with VideoFileSource(path=path, live=False, loop=True) as src:
        for _ in range(3 * 5):
            if int(src.read().image[0, 0, 0]) == 50:  # a pass's last picture
                per_pass.append(list(src.gaps))
    # Picture 3 lost after 3 decoded: 2 (80 ms) to 4 (160 ms).
    assert per_pass == [[(3, pytest.approx(0.08))]] * 3


@pytest.mark.parametrize("seeks", [True, False])
def test_a_looping_video_whose_first_pictures_are_damaged_starts_each_pass_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeks: bool
) -> None:
    # The seek back to the start (or, where it cannot seek, the file opened again) read
    # once: the damaged first picture ended the loop after its first pass.
    path = write_video(tmp_path / "v.avi", 3)

    class DamagedStart(_DamagedPictures):
        end, damaged = 6, (0, 1)

        def msec(self, shown: int) -> float:
            return 40.0 * shown

        def set(self, prop: int, value: float) -> bool:
            if seeks and prop == cv2.CAP_PROP_POS_FRAMES:
                self.reads = int(value)
            return super().set(prop, value)

    monkeypatch.setattr(sources, "_make_capture", DamagedStart)
    seen, per_pass = [], []
    with VideoFileSource(path=path, live=False, loop=True) as src:
        for _ in range(4 * 3):
            seen.append(int(src.read().image[0, 0, 0]) // 10)
            if seen[-1] == 2:  # a pass's first picture
                per_pass.append(list(src.gaps))
    assert seen == [2, 3, 4, 5] * 3
    # Pictures 0 and 1 lost before any: the stream's start to 2 (80 ms), on every pass.
    assert per_pass == [[(0, pytest.approx(0.08))]] * 3


@pytest.mark.parametrize(
    ("sar", "turned", "expected"),
    [
        ((2.0, 1.0), False, (64, 24)),  # wide pixels (anamorphic): the width stretched
        ((8.0, 9.0), False, (28, 24)),  # a 4:3 DV frame's narrow pixels
        ((2.0, 1.0), True, (32, 48)),  # turned a quarter by OpenCV: the coded width is up
        ((1.0, 1.0), False, (32, 24)),
        ((0.0, 0.0), False, (32, 24)),  # not declared
    ],
)
def test_a_video_with_pixels_that_are_not_square_is_shown_with_square_ones(
    tmp_path, monkeypatch, sar, turned, expected
):
    # A 2:1 file went to the call (and to `process`'s output) squashed to half its width.
    path = write_video(tmp_path / "v.avi", 3)

    class Anamorphic(FakeCapture):
        def __init__(self, target, api):
            super().__init__(target, api, frames=3, value=7)

        def get(self, prop):
            props = {cv2.CAP_PROP_SAR_NUM: sar[0], cv2.CAP_PROP_SAR_DEN: sar[1]}
            props |= {cv2.CAP_PROP_ORIENTATION_META: 90.0 if turned else 0.0}
            props |= {cv2.CAP_PROP_ORIENTATION_AUTO: 1.0}
            return props.get(prop, super().get(prop))

    monkeypatch.setattr(sources, "_make_capture", Anamorphic)
    with VideoFileSource(path=path, live=False) as src:
        assert src.size == expected
        frames = list(src)
        assert len(frames) == 3
        assert all(f.image.shape == (expected[1], expected[0], 3) for f in frames)
        assert int(frames[0].image[5, 5, 0]) == 7  # the picture, stretched, not bars
    with VideoFileSource(path=path, live=False, size=(128, 96)) as src:
        image = src.read().image
        assert image.shape == (96, 128, 3) and src.size == (128, 96)
        # Fitted with the square-pixel aspect: 64x24 -> bars above and below.
        if expected == (64, 24):
            assert image[:20].max() == 0 and image[48].max() == 7


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_video_has_audio_reads_the_container_headers(tmp_path, monkeypatch):
    avi = write_avi_with_sound(tmp_path / "call.avi")
    with open_source(avi, live=False) as src:  # a real, decodable file
        assert src.frame_count == 6 and len(list(src)) == 6
    assert video_has_audio(avi) is True
    assert video_has_audio(write_video(tmp_path / "mute.avi", 3)) is False
    assert video_has_audio(write_video(tmp_path / "mute.mp4", 3, fourcc="mp4v")) is False

    def hdlr(handler: bytes) -> bytes:
        return _box(b"hdlr", bytes(8) + handler + bytes(12) + b"\0")

    def mp4(*handlers: bytes) -> bytes:
        traks = b"".join(_box(b"trak", _box(b"mdia", hdlr(h))) for h in handlers)
        # mdat before moov, as a camera writes it: the walk must skip the media data.
        return _box(b"ftyp", b"isom" + bytes(4)) + _box(b"mdat", bytes(5000)) + _box(b"moov", traks)

    (tmp_path / "call.mp4").write_bytes(mp4(b"vide", b"soun"))
    (tmp_path / "video.mov").write_bytes(mp4(b"vide"))
    assert video_has_audio(tmp_path / "call.mp4") is True
    assert video_has_audio(tmp_path / "video.mov") is False
    # A moov larger than what is read (hours of video) says nothing about the rest of it.
    (tmp_path / "long.mp4").write_bytes(mp4(*[b"vide"] * 40, b"soun"))
    monkeypatch.setattr(sources, "_MOOV_READ_LIMIT", 200)
    assert video_has_audio(tmp_path / "long.mp4") is None
    monkeypatch.undo()
    assert video_has_audio(tmp_path / "long.mp4") is True
    (tmp_path / "junk.mp4").write_bytes(b"garbage" * 10)
    assert video_has_audio(tmp_path / "junk.mp4") is None
    assert video_has_audio(tmp_path / "nothere.mp4") is None


def _ebml(eid: int, body: bytes, *, unknown_size: bool = False) -> bytes:
    size = b"\x01\xff\xff\xff\xff\xff\xff\xff" if unknown_size else bytes([0x80 | len(body)])
    if not unknown_size and len(body) > 126:
        size = (0x4000 | len(body)).to_bytes(2, "big")  # the two-byte form
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + size + body


def test_a_video_file_opencv_cannot_open_says_what_its_bytes_show(tmp_path: Path) -> None:
    # OpenCV says only "not opened": an empty file, a recording cut off before its index and
    # a sound-only .mp4 all read "a codec OpenCV cannot decode", sending the user after codecs.
    def hdlr(handler: bytes) -> bytes:
        return _box(b"hdlr", bytes(8) + handler + bytes(12) + b"\0")

    def opened(name: str, data: bytes) -> str:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError) as info:
            open_source(tmp_path / name, live=False)
        return str(info.value)

    ftyp = _box(b"ftyp", b"isom" + bytes(4))
    sound = _box(b"moov", _box(b"trak", _box(b"mdia", hdlr(b"soun"))))
    assert opened("empty.mp4", b"").endswith("empty.mp4: the file is empty (0 bytes)")
    assert opened("memo.m4v", ftyp + _box(b"mdat", bytes(64)) + sound).endswith(
        "memo.m4v: it has no video track (sound only)"
    )
    subtitles = _box(b"moov", _box(b"trak", _box(b"mdia", hdlr(b"sbtl"))))
    assert opened("subs.mp4", ftyp + subtitles).endswith("subs.mp4: it has no video track")
    # A camera writes its index last: cut off before it or inside it, the frames are there
    # but unplayable.
    clip = write_video(tmp_path / "whole.mp4", 10, fourcc="mp4v").read_bytes()
    moov = clip.rfind(b"moov") - 4
    assert moov > clip.find(b"mdat") > 0
    for name, end in [("in_data.mp4", moov - 100), ("in_index.mp4", moov + 100)]:
        said = opened(name, clip[:end])
        assert f"{name}: an MP4 / QuickTime file without its whole index" in said, said
    # Bytes of no kind it knows keep the general words.
    assert opened("junk.mp4", b"not a video" * 10).endswith(
        "junk.mp4: not a video, or a codec OpenCV cannot decode"
    )


def test_an_image_file_that_holds_a_video_or_nothing_says_so(tmp_path: Path) -> None:
    # A clip saved under a photo's name read "not an image OpenCV can decode": the file is a
    # good video under the wrong name.
    mp4 = write_video(tmp_path / "clip.mp4", 3, fourcc="mp4v").read_bytes()
    avi = write_video(tmp_path / "clip.avi", 3).read_bytes()
    mkv = _ebml(0x1A45DFA3, _ebml(0x4282, b"matroska")) + _ebml(0x18538067, b"")
    for name, data, kind in [
        ("a.jpg", mp4, "MP4 / QuickTime"),
        ("b.png", avi, "AVI"),
        ("c.webp", mkv, "Matroska / WebM"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=rf"{name}: it is a video \({kind}\), not an image"):
            read_image(tmp_path / name)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.jpg: the file is empty \(0 bytes\)$"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image" * 10)
    with pytest.raises(SourceError, match=r"junk\.jpg: not an image OpenCV can decode$"):
        read_image(tmp_path / "junk.jpg")


def test_a_file_opencv_cannot_open_that_is_no_mp4_video_keeps_the_general_words(
    tmp_path: Path,
) -> None:
    # An MP4 whose tracks include a video one (a codec OpenCV lacks), a damaged Matroska or
    # AVI, and HEIF / AVIF stills under a video's name: none is a cut-off or sound-only MP4,
    # and saying so sent the user after an index or a track the file has.
    def hdlr(handler: bytes) -> bytes:
        return _box(b"hdlr", bytes(8) + handler + bytes(12) + b"\0")

    def trak(handler: bytes) -> bytes:
        return _box(b"trak", _box(b"mdia", hdlr(handler)))

    ftyp = _box(b"ftyp", b"isom" + bytes(4))
    still = bytes(40)
    for name, data in [
        ("sound_then_video.mp4", ftyp + _box(b"moov", trak(b"soun") + trak(b"vide"))),
        ("cut.mkv", b"\x1a\x45\xdf\xa3" + bytes(60)),
        ("cut.avi", b"RIFF" + bytes(4) + b"AVI " + bytes(60)),
        ("photo.mp4", _box(b"ftyp", b"heic" + bytes(4) + b"mif1heic") + _box(b"mdat", still)),
        ("photo2.mp4", _box(b"ftyp", b"avif" + bytes(4) + b"mif1avif") + _box(b"mdat", still)),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError) as info:
            open_source(tmp_path / name, live=False)
        assert str(info.value).endswith(f"{name}: not a video, or a codec OpenCV cannot decode"), (
            info.value
        )


def test_a_damaged_image_that_opens_like_a_video_s_bytes_is_not_called_a_video(
    tmp_path: Path,
) -> None:
    # An AVIF and a WebP start as an MP4 and an AVI do ('ftyp', 'RIFF'): a damaged one was
    # told to take a video's extension.
    for name, data in [
        ("x.avif", _box(b"ftyp", b"avif" + bytes(4) + b"mif1avif") + _box(b"mdat", bytes(40))),
        ("y.webp", b"RIFF" + struct.pack("<I", 60) + b"WEBPVP8 " + bytes(52)),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=rf"{name}: not an image OpenCV can decode$"):
            read_image(tmp_path / name)


def test_an_image_file_cut_short_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A JPEG or PNG whose download stopped part-way read "not an image OpenCV can decode".
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    png = cv2.imencode(".png", picture)[1].tobytes()
    for name, data, why in [
        ("half.jpg", jpeg[: len(jpeg) // 2], "no JPEG end marker"),
        ("end.jpg", jpeg[:-2], "no JPEG end marker"),
        ("head.jpg", jpeg[:100], "it ends before its picture data"),
        ("half.png", png[: len(png) // 2], "its IDAT chunk runs past the end"),
        ("end.png", png[:-12], "no PNG end chunk, IEND"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=rf"{name}: the file is cut short \({why}\), as when"):
            read_image(tmp_path / name)
    # OpenCV 4 decodes a cut JPEG, its missing rows grey: the grey band is the input's.
    decoded = np.full((64, 96, 3), 128, np.uint8)
    monkeypatch.setattr(sources.cv2, "imdecode", lambda data, flags: decoded.copy())
    with caplog.at_level("WARNING", logger="engine.sources"):
        assert read_image(tmp_path / "half.jpg").shape == (64, 96, 3)
        (tmp_path / "whole.jpg").write_bytes(jpeg)
        read_image(tmp_path / "whole.jpg")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert "half.jpg: the file is cut short (no JPEG end marker)" in said[0]
    assert "grey band" in said[0]


def test_a_jpeg_or_png_is_called_cut_short_only_when_its_end_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every decoded JPEG is looked at: a whole one must not be warned of, whatever a camera
    # put in it (fill bytes, a thumbnail's end marker, a trailer after its own).
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    png = cv2.imencode(".png", picture)[1].tobytes()
    thumb = b"\xff\xd8\xff\xd9"  # an EXIF thumbnail's own start and end markers
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(thumb)) + b"Exif\0\0" + thumb
    with_thumb = jpeg[:2] + app1 + jpeg[2:]
    filled = jpeg[:2] + b"\xff\xff" + jpeg[2:]  # fill bytes before a marker
    whole = {
        "filled.jpg": filled,
        "thumb.jpg": with_thumb,
        "trailer.jpg": jpeg + b"a phone's trailer",
    }
    with caplog.at_level("WARNING", logger="engine.sources"):
        for name, data in whole.items():
            (tmp_path / name).write_bytes(data)
            assert read_image(tmp_path / name).shape == (64, 96, 3), name
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert jpeg[20:22] == b"\xff\xdb"  # the marker the damaged case below overwrites
    for data, why in [
        (jpeg, None),
        (png, None),
        (filled[: len(filled) // 2], "no JPEG end marker"),
        (with_thumb[: len(with_thumb) // 2], "no JPEG end marker"),
        (jpeg[:20] + b"\xff\xda\x00\x0c", "no JPEG end marker"),  # cut right at its scan
        # Damaged, not cut: no marker where APP0 (JFIF, 20 bytes in) ends.
        (jpeg[:20] + b"\x00\x00\xff\xff" + jpeg[24:], None),
        (png[:-4], "its IEND chunk runs past the end"),
    ]:
        assert sources._cut_short(data) == why, (data[:24], why)


def test_video_has_audio_reads_matroska_and_webm_track_lists(tmp_path, monkeypatch):
    # MKV (OBS's default recording format) and a browser's WebM lost their sound without a note.
    header = _ebml(0x1A45DFA3, _ebml(0x4282, b"webm"))

    def track(kind: int) -> bytes:
        return _ebml(0xAE, _ebml(0xD7, b"\x01") + _ebml(0x83, bytes([kind])))

    def mkv(*kinds: int, unknown_size: bool = False, cluster_first: bool = False) -> bytes:
        tracks = _ebml(0x1654AE6B, b"".join(track(k) for k in kinds))
        info = _ebml(0x1549A966, _ebml(0x2AD7B1, b"\x0f\x42\x40"))
        cluster = _ebml(0x1F43B675, _ebml(0xE7, b"\x00") + bytes(200))
        body = info + (cluster + tracks if cluster_first else tracks + cluster)
        return header + _ebml(0x18538067, body, unknown_size=unknown_size)

    cases = {
        "call.mkv": (mkv(1, 2), True),
        "live.webm": (mkv(1, 2, unknown_size=True), True),  # a recording's open-ended segment
        "mute.mkv": (mkv(1), False),
        "mute_live.webm": (mkv(1, unknown_size=True), False),
        "odd.mkv": (mkv(1, 2, cluster_first=True), None),  # no track list before the frames
        "cut.mkv": (mkv(1, 2)[:40], None),
        "junk.webm": (_EBML_JUNK, None),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert video_has_audio(tmp_path / name) is expected, name
    # A track list beyond what is read says nothing.
    monkeypatch.setattr(sources, "_MATROSKA_READ_LIMIT", 30)
    assert video_has_audio(tmp_path / "call.mkv") is None
    monkeypatch.undo()
    # A real file: OpenCV's own Matroska writer, pictures only.
    mkv_file = write_video(tmp_path / "opencv.mkv", 3, fourcc="MJPG")
    with open_source(mkv_file, live=False) as src:
        assert len(list(src)) == 3
    assert video_has_audio(mkv_file) is False


_EBML_JUNK = b"\x1a\x45\xdf\xa3" + b"\x00" * 30


def test_video_live_is_paced_and_interruptible(tmp_path):
    path = write_video(tmp_path / "v.avi", 6, fps=50.0)
    with open_source(path, live=True) as src:
        t0 = time.perf_counter()
        frames = list(src)
        elapsed = time.perf_counter() - t0
        assert len(frames) == 6
        assert elapsed >= 5 / 50 * 0.9  # five periods between six frames
        assert src.last_wait_s >= 0.0


def test_video_live_interrupt_wakes_a_waiting_read(tmp_path):
    path = write_video(tmp_path / "v.avi", 3, fps=1.0)  # one frame per second
    src = open_source(path, live=True)
    assert src.read() is not None
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(src.read()))
    t0 = time.perf_counter()
    reader.start()
    src.interrupt()
    reader.join(2.0)
    assert not reader.is_alive() and got == [None]
    assert time.perf_counter() - t0 < 0.9  # did not sit out the 1 s period
    src.close()
    src.close()  # idempotent


def test_video_loop_and_resize(tmp_path):
    path = write_video(tmp_path / "v.avi", 3)
    with open_source(path, live=False, loop=True, size=(32, 24)) as src:
        frames = [src.read() for _ in range(7)]
        assert src.frame_count is None
    assert [f.index for f in frames] == list(range(7))
    assert all(f.image.shape == (24, 32, 3) for f in frames)
    # The loop must rewind to the first frame, not just keep frames coming: a rewind to frame 2
    # still gave seven frames. The clip's grey ramp tells the frames apart (MJPG and the
    # BGR->RGB conversion shift the levels a little, so compare with the first pass).
    levels = [float(f.image.mean()) for f in frames]
    assert levels[0] + 1.0 < levels[1] < levels[2] - 1.0, levels
    assert levels[3:] == pytest.approx(levels[:3] + levels[:1], abs=1.0), levels


@pytest.mark.parametrize("name, fourcc", [("one.mp4", "mp4v"), ("one.avi", "MJPG")])
def test_a_looping_one_frame_video_repeats_its_frame(tmp_path, name, fourcc):
    # FFmpeg's seek back to frame 0 after the end of a one-frame file succeeds, then reads
    # nothing: the app's loop stopped after the only frame ("the source sends no more frames"),
    # and a virtual camera got nothing.
    path = write_video(tmp_path / name, 1, fourcc=fourcc)
    other = write_video(tmp_path / ("other" + path.suffix), 2, size=(32, 24), fourcc=fourcc)
    with open_source(path, live=False, loop=True) as src:
        frames = [src.read() for _ in range(3)]
        # Not decoded again (23 ms a 1080p frame), so a file put in its place meanwhile is
        # not read either: opened anew, it came out at the first file's size and flip.
        os.replace(other, path)
        frames += [src.read() for _ in range(3)]
    assert all(f is not None for f in frames), frames
    assert [f.index for f in frames] == list(range(6))
    assert all(np.array_equal(f.image, frames[0].image) for f in frames)
    path = write_video(tmp_path / name, 1, fourcc=fourcc)
    with open_source(path, live=False) as src:  # not looping: the one frame, then the end
        assert src.read() is not None and src.read() is None


def test_a_looping_video_that_cannot_seek_is_read_again_from_its_start(tmp_path):
    # A raw MJPEG stream (JPEGs one after another): the seek back to frame 0 says it worked and
    # reads nothing. Opened anew, it loops; a file put in its place meanwhile ends the stream
    # rather than play at the first one's size.
    path = tmp_path / "r3.mjpeg"

    def write(levels: list[int], size=(64, 48)) -> None:
        with open(path, "wb") as f:
            for v in levels:
                f.write(cv2.imencode(".jpg", np.full((size[1], size[0], 3), v, np.uint8))[1])

    def levels(src, n: int) -> list[float | None]:
        frames = [src.read() for _ in range(n)]
        return [None if f is None else round(float(f.image.mean()), -1) for f in frames]

    write([10, 90, 170])
    with open_source(path, live=False, kind="video", loop=True) as src:
        assert levels(src, 7) == [10, 90, 170, 10, 90, 170, 10]
        path.rename(tmp_path / "old.mjpeg")
        write([250, 250], size=(32, 24))
        assert levels(src, 3) == [90, 170, None]  # the open file's, then the end
    # The same file grown (a recording still being written) or touched loops on, grown.
    write([10, 90])
    with open_source(path, live=False, kind="video", loop=True) as src:
        assert levels(src, 1) == [10]
        with open(path, "ab") as f:
            f.write(cv2.imencode(".jpg", np.full((48, 64, 3), 170, np.uint8))[1])
        os.utime(path)
        assert levels(src, 6) == [90, 170, 10, 90, 170, 10]
        # Rewritten in place with pictures of another size: not played at the old one's.
        with open(path, "r+b") as f:
            f.truncate(0)
        write([250], size=(32, 24))
        assert levels(src, 3)[-1] is None


def test_a_size_asked_for_letterboxes_files_images_and_folders_never_stretches(tmp_path):
    # `run --size 640x360` squashed each portrait photo of a folder to 16:9 (3.2:1 here).
    portrait = np.full((40, 20, 3), 200, np.uint8)
    folder = tmp_path / "photos"
    folder.mkdir()
    write_png(folder / "a.png", portrait)
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (20, 40))
    for _ in range(2):
        writer.write(portrait)
    writer.release()
    for path in (folder / "a.png", folder, video):
        with open_source(str(path), live=False, size=(64, 36)) as src:
            img = src.read().image
        assert img.shape == (36, 64, 3), path
        # 18 px of picture in the middle (40x20 fitted to a height of 36), black either side.
        cols = np.flatnonzero(img[18, :, 0] > 100)
        assert cols.size and 16 <= cols.size <= 20 and abs(cols.mean() - 31.5) < 2, (path, cols)
        assert img[:, :20].max() < 10 and img[:, -20:].max() < 10, path


# --------------------------------------------------------------------------- cameras (faked)


class FakeCapture:
    """Stands in for cv2.VideoCapture: opened or not, a number of good frames, then failures."""

    def __init__(self, target, api, *, opened=True, frames=10**9, value=0, log=None):
        self.target, self.api = target, api
        self.opened = opened
        self.frames_left = frames
        self.value = value
        self.props: dict[int, float] = {}
        self.released = False
        if log is not None:
            log.append(self)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened and not self.released

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 30.0}.get(prop, self.props.get(prop, 0.0))

    def grab(self):
        if not self.isOpened() or self.frames_left <= 0:
            return False
        self.frames_left -= 1
        return True

    def retrieve(self):
        return True, np.full((24, 32, 3), self.value, np.uint8)

    def read(self):
        return (self.grab() and self.retrieve()[0]), np.full((24, 32, 3), self.value, np.uint8)

    def release(self):
        self.released = True


class _DamagedPictures(FakeCapture):
    """Pictures 0 to ``end`` - 1 (picture i all 10 * i), of which those in ``damaged`` fail
    to decode: OpenCV's read fails once for each and reads on. OpenCV's position is
    ``msec`` of the last picture it decoded."""

    end = 0
    damaged: Container[int] = ()

    def __init__(self, target: str, api: int) -> None:
        super().__init__(target, api)
        self.reads = 0
        self.shown = 0

    def msec(self, shown: int) -> float:
        raise NotImplementedError

    def read(self) -> tuple[bool, np.ndarray | None]:
        i, self.reads = self.reads, self.reads + 1
        if i >= self.end or i in self.damaged:
            return False, None
        self.shown = i
        return True, np.full((24, 32, 3), 10 * i, np.uint8)

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.msec(self.shown)
        return super().get(prop)


def test_camera_requests_format_size_rate_and_small_buffer(monkeypatch):
    made: list[FakeCapture] = []
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, log=made))
    with open_source("0", live=True, size=(1920, 1080), fps=30) as cam:
        assert isinstance(cam, CameraSource) and cam.live and cam.frame_count is None
        assert cam.size == (32, 24)  # what the device delivers, not what was asked
        frame = cam.read()
        assert frame.index == 0 and frame.image.shape == (24, 32, 3)
        assert cam.read().index == 1
    props = made[0].props
    assert made[0].target == 0 and made[0].api == sources._camera_apis()[0]
    assert props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert (props[cv2.CAP_PROP_FRAME_WIDTH], props[cv2.CAP_PROP_FRAME_HEIGHT]) == (1920, 1080)
    assert props[cv2.CAP_PROP_FPS] == 30 and props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert made[0].released


def test_camera_drops_its_probe_frame_once_stale(monkeypatch):
    values = iter(range(1, 100))

    class Counting(FakeCapture):
        def retrieve(self):
            return True, np.full((24, 32, 3), next(values), np.uint8)

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: Counting(t, a))
    with open_source("0", live=True, fps=30) as cam:
        time.sleep(0.2)  # a backend loading: the frame grabbed while opening is 0.2 s old
        frame = cam.read()
        assert int(frame.image[0, 0, 0]) == 2 and frame.index == 1
        # fresh, not the 0.2 s old probe frame (a loaded CI machine may take tens of ms here)
        assert time.perf_counter() - frame.t_capture < 0.15


def test_missing_camera_lists_available_ones(monkeypatch):
    monkeypatch.setattr(sources, "_probe_camera", lambda i: i in (0, 2))
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, opened=False))
    assert [c.index for c in list_cameras(max_index=5)] == [0, 2]
    with pytest.raises(CameraNotFoundError) as info:
        open_source("7", live=True)
    msg = str(info.value)
    assert "camera 7 does not exist" in msg and "available cameras: 0:" in msg and "2:" in msg
    assert [c.index for c in info.value.available] == [0, 2]


def test_windows_opens_and_lists_cameras_with_media_foundation_first(monkeypatch):
    # The app numbers cameras as Qt lists them, which on Windows is Media Foundation's list.
    # DirectShow used to be tried first, and its list also holds DirectShow-only virtual cameras
    # (OBS Virtual Camera, SharpCam's own output), so index i could open another device.
    monkeypatch.setattr(sources.sys, "platform", "win32")
    assert sources._camera_apis() == [cv2.CAP_MSMF]
    made: list[FakeCapture] = []
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, log=made))
    assert [c.index for c in list_cameras(max_index=1)] == [0]  # the listing probes the same way
    with open_source("0", live=True) as cam:
        cam.read()
    assert [c.api for c in made] == [cv2.CAP_MSMF, cv2.CAP_MSMF]

    # No webcam, OBS installed: DirectShow's camera 0 is the OBS Virtual Camera, SharpCam's own
    # output. Nothing may fall back to it.
    def only_dshow(target, api):  # noqa: ANN001, ANN202
        return FakeCapture(target, api, opened=api == cv2.CAP_DSHOW)

    monkeypatch.setattr(sources, "_make_capture", only_dshow)
    assert list_cameras(max_index=2) == []
    with pytest.raises(CameraNotFoundError):
        open_source("0", live=True)


def test_on_macos_no_camera_at_all_points_at_the_camera_permission(monkeypatch):
    # Without camera access macOS opens none, and "camera 0 does not exist" sent people to
    # their cables instead of System Settings.
    monkeypatch.setattr(sources.sys, "platform", "darwin")
    monkeypatch.setattr(sources, "_probe_camera", lambda i: False)
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, opened=False))
    with pytest.raises(CameraNotFoundError, match="Privacy & Security > Camera"):
        open_source("0", live=True)
    monkeypatch.setattr(sources.sys, "platform", "linux")
    with pytest.raises(CameraNotFoundError) as info:
        open_source("0", live=True)
    assert "Privacy" not in str(info.value)


def test_missing_camera_when_there_are_none(monkeypatch):
    monkeypatch.setattr(sources, "_probe_camera", lambda i: False)
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, opened=False))
    with pytest.raises(CameraNotFoundError, match="available cameras: none found"):
        open_source(3, live=True)


def test_camera_reconnects_after_unplug(monkeypatch):
    # Open #1 delivers 3 frames then dies (unplugged); open #2 fails (still gone);
    # open #3 works again with a different picture.
    plan = iter(
        [
            dict(frames=3, value=10),
            dict(opened=False),
            dict(frames=10**9, value=20),
        ]
    )
    made: list[FakeCapture] = []

    def factory(target, api):
        return FakeCapture(target, api, log=made, **next(plan, dict(opened=False)))

    monkeypatch.setattr(sources, "_make_capture", factory)
    cam = CameraSource(device=0, backoff=(0.001, 0.005))
    values = [int(cam.read().image[0, 0, 0]) for _ in range(6)]
    assert values == [10, 10, 10, 20, 20, 20]
    assert cam.reconnects == 1 and not cam.reconnecting
    assert made[0].released and len(made) == 3
    cam.close()
    assert made[-1].released


class _NumberedCameras:
    """Cameras A (50) and B (200) as Windows numbers them, by their place in ``order``: what
    each open of a number finds, logged in ``opened``; ``before_open(n)`` runs first."""

    VALUES = {"A": 50, "B": 200}

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sources.sys, "platform", "win32")
        monkeypatch.setattr(sources, "_make_capture", self.open)
        self.order = ["A", "B"]
        self.opened: list[FakeCapture] = []
        self.before_open = lambda n: None

    def open(self, target, api):  # noqa: ANN001, ANN201
        if not isinstance(target, int) or target >= len(self.order):
            return FakeCapture(target, api, opened=False)
        self.before_open(len(self.opened))
        value = self.VALUES[self.order[target]]
        return FakeCapture(target, api, value=value, log=self.opened)

    def unplug_a(self) -> None:
        """A goes (its open capture fails from now), and B takes its number."""
        self.order.remove("A")
        self.opened[0].frames_left = 0


def _value(cam: CameraSource) -> int:
    return int(cam.read().image[0, 0, 0])


def test_a_camera_told_where_it_went_reopens_there_and_not_the_next_in_line(monkeypatch):
    # Windows and macOS number cameras by their place in the list: camera A at 0 unplugged,
    # B moved from 1 to 0, and the reconnect to 0 opened B, sent to the call unasked.
    cams = _NumberedCameras(monkeypatch)
    cam = CameraSource(device="0", backoff=(0.001, 0.002), lost_after_reads=2)
    assert _value(cam) == 50
    cams.unplug_a()
    cam.retarget(None, taken=True)  # the app saw A gone, and its number taken by another
    reader = threading.Thread(target=cam.read, daemon=True)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and cam.reconnecting  # waits for A; B was never opened
    assert len(cams.opened) == 1
    cams.order.insert(1, "A")  # A plugged in again, listed second
    cam.retarget("1")
    reader.join(2.0)
    assert not reader.is_alive()
    assert _value(cam) == 50 and cam.reconnects == 1
    cam.close()


def test_a_camera_reopened_at_its_old_number_before_it_was_told_drops_that_camera(monkeypatch):
    # The reconnect can come before the app hears of the unplug: it opened B at A's old number,
    # and a later retarget(None) only stopped reopens, so B's picture went on to the call.
    cams = _NumberedCameras(monkeypatch)
    cam = CameraSource(device="0", backoff=(0.001, 0.002), lost_after_reads=2)
    assert _value(cam) == 50
    cams.unplug_a()  # and the list not yet read
    assert _value(cam) == 200  # the reconnect opened B: nothing to tell
    cam.retarget(None, taken=True)  # the app sees A gone, its number B's
    assert cams.opened[-1].released  # B is let go at once
    got: list[Frame | None] = []
    reader = threading.Thread(target=lambda: got.append(cam.read()), daemon=True)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and cam.reconnecting and not got  # no more of B
    cam.close()
    reader.join(2.0)


def test_a_camera_said_to_have_moved_lets_go_of_a_reconnect_at_its_old_number(monkeypatch):
    # A quick unplug and replug, seen by the app as one move (A now second): the reconnect had
    # opened B at A's old number, and retarget("1") only changed the next reopen: B went on.
    cams = _NumberedCameras(monkeypatch)
    cam = CameraSource(device="0", backoff=(0.001, 0.002), lost_after_reads=2)
    assert _value(cam) == 50
    cams.unplug_a()
    assert _value(cam) == 200  # B, at A's old number
    cams.order.append("A")  # back, second
    cam.retarget("1", taken=True)  # its old number is B's
    assert [_value(cam) for _ in range(3)] == [50, 50, 50]
    cam.close()


def test_a_camera_reconnected_to_itself_then_moved_keeps_its_capture(monkeypatch):
    # A read hiccup reopened A at its own number 1; 3 s later Z (0) was unplugged and A became
    # 0. The recent reopen was taken for another camera's: let go, a needless reconnect.
    monkeypatch.setattr(sources.sys, "platform", "win32")
    made: list[FakeCapture] = []
    plan = iter([dict(frames=1), dict(frames=10**9)])

    def factory(target, api):  # noqa: ANN001, ANN202
        return FakeCapture(target, api, value=50, log=made, **next(plan, {}))

    monkeypatch.setattr(sources, "_make_capture", factory)
    cam = CameraSource(device="1", backoff=(0.001, 0.002), lost_after_reads=2)
    cam.read()
    cam.read()  # the first capture fails: reopened at 1, A itself
    assert cam.reconnects == 1 and len(made) == 2
    cam.retarget("0", taken=False)  # Z gone: 1 is no one's, A's capture is still A's
    assert not made[-1].released and int(cam.read().image[0, 0, 0]) == 50
    assert cam.reconnects == 1
    cam.close()


def test_a_camera_said_to_have_moved_while_it_reopens_does_not_keep_that_capture(monkeypatch):
    # The capture thread inside the reopen at the old number (B's now) while the app says A
    # moved to 1: the capture it came back with was kept, and B streamed.
    cams = _NumberedCameras(monkeypatch)
    in_open, go = threading.Event(), threading.Event()

    def hold_the_reopen(n: int) -> None:
        if n == 1:  # the reconnect's open, at the old number
            in_open.set()
            go.wait(5)

    cams.before_open = hold_the_reopen
    cam = CameraSource(device="0", backoff=(0.001, 0.002), lost_after_reads=2)
    assert _value(cam) == 50
    cams.unplug_a()
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(_value(cam)))
    reader.start()
    assert in_open.wait(5)
    cams.order.append("A")  # back, second
    cam.retarget("1", taken=True)
    go.set()
    reader.join(5)
    got += [_value(cam) for _ in range(2)]
    assert got == [50, 50, 50], got
    cam.close()


def test_a_camera_that_moved_without_a_reconnect_keeps_its_capture(monkeypatch):
    # B streams at 1; A (0) unplugged makes B camera 0: its open capture is still B's, and
    # letting it go would freeze the call for a reconnect.
    monkeypatch.setattr(sources.sys, "platform", "win32")
    made: list[FakeCapture] = []
    monkeypatch.setattr(
        sources, "_make_capture", lambda t, a: FakeCapture(t, a, value=200, log=made)
    )
    cam = CameraSource(device="1")
    cam.read()
    cam.retarget("0")
    assert int(cam.read().image[0, 0, 0]) == 200
    assert len(made) == 1 and not made[0].released
    cam.close()


def test_camera_reconnect_wait_is_interruptible(monkeypatch):
    lost = threading.Event()

    class DyingCapture(FakeCapture):
        def grab(self):
            ok = super().grab()
            if not ok:
                lost.set()  # read() is about to enter its back-off wait
            return ok

    plan = iter([dict(frames=1)])
    monkeypatch.setattr(
        sources, "_make_capture", lambda t, a: DyingCapture(t, a, **next(plan, dict(opened=False)))
    )
    cam = CameraSource(device=0, backoff=(5.0, 5.0))
    assert cam.read() is not None
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(cam.read()))
    reader.start()
    assert lost.wait(2.0)
    t0 = time.perf_counter()
    cam.interrupt()
    reader.join(2.0)
    assert got == [None] and time.perf_counter() - t0 < 1.0
    cam.close()


def test_camera_without_reconnect_raises(monkeypatch):
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, frames=1))
    cam = CameraSource(device="/dev/video0", reconnect=False)
    assert cam.read() is not None
    with pytest.raises(SourceError, match="stopped delivering"):
        cam.read()
    cam.close()


class FlakyCapture(FakeCapture):
    """A device that is fine but fails the grabs numbered in ``fail_at`` (0-based over this
    capture's life, the probe frame's grab included), and every grab once ``frames`` good ones
    are spent. Each good frame has a new value (from ``value + 1``), so a repeat would show."""

    def __init__(self, target, api, *, fail_at=(), grab_s=0.0, failing=None, **kw):
        super().__init__(target, api, **kw)
        self.fail_at = set(fail_at)
        self.grab_s = grab_s  # how long each grab blocks (a driver's time-out)
        self.failing = failing  # set once two grabs failed: read() is retrying
        self.grabs = 0
        self.failed = 0

    def grab(self):
        if self.grab_s:
            time.sleep(self.grab_s)
        n, self.grabs = self.grabs, self.grabs + 1
        if n in self.fail_at or not super().grab():
            self.failed += 1
            if self.failing is not None and self.failed >= 2:
                self.failing.set()
            return False
        self.value += 1
        return True


def fake_cameras(monkeypatch, *plans):
    """Each open of the device makes the next plan's FlakyCapture (then unopenable ones)."""
    made: list[FlakyCapture] = []
    plan = iter(plans)
    monkeypatch.setattr(
        sources,
        "_make_capture",
        lambda t, a: FlakyCapture(t, a, log=made, **next(plan, dict(opened=False))),
    )
    return made


def test_camera_rides_out_a_few_failed_reads_without_reconnecting(monkeypatch):
    # A webcam that drops a frame now and then (a USB hiccup, an exposure change) is fine:
    # one failed read used to release and reopen it, seconds of frozen video on a live call.
    # (A second device is there to be reopened: the old code did, and the test failed, not hung.)
    made = fake_cameras(monkeypatch, dict(fail_at={2, 5, 6}), dict(value=200))
    cam = CameraSource(device=0)  # the defaults, as the app opens a camera
    frames, waits = [], []
    for _ in range(6):
        frames.append(cam.read())
        waits.append(cam.last_wait_s)
    values = [int(f.image[0, 0, 0]) for f in frames]
    assert values == sorted(set(values)), values  # all fresh: nothing repeated while retrying
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 6))
    assert made[0].failed == 3 and len(made) == 1 and not made[0].released
    assert cam.reconnects == 0 and not cam.reconnecting
    # Two failed reads in a row were retried a frame period (1/30 s) apart: waiting, not work.
    # Not ">= 2/30": time the thread spends off the CPU between a read and its pause shortens
    # the pause and counts as neither (a loaded CI box); one period is what no count of the
    # pauses as work could reach (it was 0 then).
    assert max(waits) >= 1 / 30 - 0.005, waits
    cam.close()
    assert made[0].released


def test_camera_failing_reads_in_a_row_still_mean_lost_and_reconnect(monkeypatch):
    # The first device delivers 3 frames (the probe's included) and then only failed reads.
    made = fake_cameras(monkeypatch, dict(frames=3, value=0), dict(value=100))
    cam = CameraSource(device=0, lost_after_reads=4, lost_after_s=60.0, backoff=(0.001, 0.005))
    values = []
    while not values or values[-1] < 103:
        values.append(int(cam.read().image[0, 0, 0]))
    assert values[-3:] == [101, 102, 103] and values[:-3] == sorted(set(values[:-3]))
    assert made[0].failed == 4 and made[0].released and len(made) == 2
    assert cam.reconnects == 1 and not cam.reconnecting
    cam.close()
    assert made[1].released


def test_camera_failing_reads_for_too_long_mean_lost_without_spinning(monkeypatch):
    made = fake_cameras(monkeypatch, dict(frames=1), dict(value=100))
    cam = CameraSource(device=0, lost_after_reads=10**6, lost_after_s=0.3, backoff=(0.001, 0.005))
    t0 = time.perf_counter()
    while int(cam.read().image[0, 0, 0]) < 100:
        pass
    assert time.perf_counter() - t0 >= 0.3
    # Retried once per frame period (1/30 s) for 0.3 s: about 10 reads, not a busy loop's
    # thousands (a loaded machine only makes the pauses longer and the reads fewer: a thread
    # off the CPU for 0.3 s after its first failed read finds the time up at the first).
    assert 1 <= made[0].failed <= 15, made[0].failed
    assert cam.reconnects == 1 and not cam.reconnecting
    cam.close()


def test_camera_reads_that_block_and_fail_are_timed_from_the_first_one(monkeypatch):
    # A driver whose failed reads each block (a time-out): the streak's time counts from when
    # the first of them began, so the device is lost after lost_after_s, not a count of them.
    made = fake_cameras(monkeypatch, dict(frames=1), dict(value=100))
    cam = CameraSource(device=0, lost_after_reads=10**6, lost_after_s=0.5, backoff=(0.001, 0.005))
    made[0].grab_s = 0.2
    while int(cam.read().image[0, 0, 0]) < 100:
        pass
    assert 1 <= made[0].failed <= 3, made[0].failed  # 0.2 s each: lost at the third
    assert cam.reconnects == 1
    cam.close()


def test_camera_stop_during_a_failed_read_streak_is_prompt(monkeypatch):
    failing = threading.Event()
    made = fake_cameras(monkeypatch, dict(frames=1, failing=failing))
    cam = CameraSource(device=0, lost_after_reads=10**6, lost_after_s=60.0)
    got: list[object] = []

    def reader():
        while (frame := cam.read()) is not None:
            got.append(frame)
        got.append(None)

    thread = threading.Thread(target=reader)
    thread.start()
    assert failing.wait(2.0)  # read() is retrying failed reads
    t0 = time.perf_counter()
    cam.interrupt()
    thread.join(2.0)
    assert not thread.is_alive() and time.perf_counter() - t0 < 1.0
    assert got[-1] is None and len(got) <= 2  # at most the probe frame, then nothing
    # Tolerated, not lost: the device was kept, and nothing says it was reconnecting.
    assert len(made) == 1 and not made[0].released
    assert cam.reconnects == 0 and not cam.reconnecting
    cam.close()
    assert made[0].released


def test_a_camera_that_fails_its_first_reads_opens(monkeypatch):
    # Some drivers fail a read or two while the sensor starts: that is no "delivers no frames".
    made = fake_cameras(monkeypatch, dict(fail_at={0, 1}))
    with CameraSource(device=0) as cam:
        assert cam.read() is not None and cam.reconnects == 0
    assert made[0].failed == 2 and len(made) == 1


def test_a_camera_that_never_delivers_says_how_many_reads_failed_and_is_released(monkeypatch):
    made = fake_cameras(monkeypatch, dict(frames=0))
    with pytest.raises(SourceError, match=r"camera 0 opened but delivers no frames \(3 reads"):
        CameraSource(device=0, lost_after_reads=3)
    assert made[0].failed == 3 and made[0].released


def test_camera_without_reconnect_rides_out_a_failed_read_and_raises_on_a_streak(monkeypatch):
    made = fake_cameras(monkeypatch, dict(frames=4, fail_at={2}))
    cam = CameraSource(device=0, reconnect=False, lost_after_reads=2)
    assert cam.read() is not None and cam.read() is not None  # the failed read was retried
    with pytest.raises(SourceError, match=r"camera 0 stopped delivering frames \(2 reads in a"):
        while True:
            cam.read()
    assert len(made) == 1
    cam.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(lost_after_reads=0), "lost_after_reads must be an integer >= 1, got 0"),
        (dict(lost_after_reads=2.5), "lost_after_reads must be an integer >= 1, got 2.5"),
        (dict(lost_after_reads=True), "lost_after_reads must be an integer >= 1, got True"),
        (dict(lost_after_s=0), "lost_after_s must be a finite number of seconds > 0, got 0"),
        (dict(lost_after_s=-1.0), "lost_after_s must be a finite number of seconds > 0, got -1.0"),
        (dict(lost_after_s=float("nan")), "seconds > 0, got nan"),
        (dict(lost_after_s=float("inf")), "seconds > 0, got inf"),
        (dict(lost_after_s="1s"), "seconds > 0, got '1s'"),
        (dict(backoff=(0.0, 1.0)), "backoff must satisfy 0 < first <= longest seconds, got (0.0"),
        (dict(backoff=(2.0, 1.0)), "backoff must satisfy 0 < first <= longest seconds, got (2.0"),
        (dict(backoff=(1.0,)), "backoff must be (first, longest) seconds, got (1.0,)"),
    ],
)
def test_camera_rejects_bad_loss_and_backoff_settings_before_opening(monkeypatch, options, message):
    made = fake_cameras(monkeypatch, dict())
    with pytest.raises(ValueError) as info:
        open_source("0", live=True, **options)
    assert message in str(info.value)
    assert made == []  # checked at the boundary: the device was never taken


def test_camera_takes_its_loss_settings_through_open_source(monkeypatch):
    fake_cameras(monkeypatch, dict())
    with open_source("0", live=True, lost_after_reads=np.int64(3), lost_after_s=2) as cam:
        assert (cam._lost_after_reads, cam._lost_after_s) == (3, 2.0)


# --------------------------------------------------------------------------- OpenCV environment

MSMF_ENV = "OPENCV_VIDEOIO_MSMF_ENABLE_HW_TRANSFORMS"
REPO = Path(__file__).resolve().parents[1]
#: Prints the variable as it stood when cv2 was first imported, after importing the given module.
_SEEN_AT_CV2_IMPORT = """
import os, sys
seen = []

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "cv2" and not seen:
            seen.append(os.environ.get({env!r}))
        return None

sys.meta_path.insert(0, Spy())
import {module}
import cv2
print(seen[0] if seen else "cv2 imported before the spy")
"""


def env_seen_by_cv2(module: str, value: str | None) -> str:
    """What ``import {module}`` leaves in the environment when cv2 loads (fresh interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != MSMF_ENV}
    if value is not None:
        env[MSMF_ENV] = value
    code = _SEEN_AT_CV2_IMPORT.format(env=MSMF_ENV, module=module)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("module", ["engine", "engine.sources", "main"])
def test_msmf_hardware_transforms_are_off_before_cv2_loads(module):
    # On Windows each C runtime copies the environment when it loads: the variable only reaches
    # OpenCV if it is set before cv2 is first imported. Without it MSMF, the first camera API on
    # Windows, takes seconds to open many webcams (opencv/opencv#17687).
    assert env_seen_by_cv2(module, None) == "0"


def test_a_users_msmf_setting_is_kept():
    assert env_seen_by_cv2("engine", "1") == "1"


# --------------------------------------------------------------------------- review: failure paths


def test_a_camera_with_frames_it_cannot_use_says_so_and_is_released(monkeypatch):
    # A driver that hands over raw 2-channel YUYV: the bare to_rgb8 ValueError named no camera,
    # and the capture opened for the probe frame stayed open (the device taken until exit).
    made: list[FakeCapture] = []

    class Raw(FakeCapture):
        def retrieve(self):
            return True, np.zeros((24, 32, 2), np.uint8)

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: Raw(t, a, log=made))
    with pytest.raises(SourceError, match=r"camera 0 delivers frames .*\(24, 32, 2\)"):
        CameraSource(device=0)
    assert made and all(c.released for c in made)


def test_a_camera_whose_frames_turn_unusable_mid_stream_names_it(monkeypatch):
    class Turns(FakeCapture):
        calls = 0

        def retrieve(self):
            Turns.calls += 1
            shape = (24, 32, 3) if Turns.calls <= 1 else (24, 32, 2)
            return True, np.zeros(shape, np.uint8)

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: Turns(t, a))
    with CameraSource(device="/dev/video3") as cam:
        with pytest.raises(SourceError, match="camera /dev/video3 delivers frames"):
            for _ in range(3):  # the probe frame first, unless it went stale meanwhile
                cam.read()


def test_a_video_whose_first_decode_raises_is_released(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.avi", 3)
    made: list[FakeCapture] = []

    class Corrupt(FakeCapture):
        def read(self):
            raise cv2.error("corrupt stream")

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: Corrupt(t, a, log=made))
    with pytest.raises(cv2.error, match="corrupt stream"):
        VideoFileSource(path=path, live=False)
    assert made and made[0].released


def test_quieting_opencv_from_two_threads_restores_the_users_log_level():
    # The app probes cameras while a lost camera reconnects on the capture thread: each saved
    # the level it found, so the one that entered second restored the first one's SILENT, and
    # OpenCV stayed mute for the rest of the session (or spoke while the other still probed).
    logging_mod = cv2.utils.logging
    original = logging_mod.getLogLevel()
    silent = getattr(logging_mod, "LOG_LEVEL_SILENT", logging_mod.LOG_LEVEL_ERROR)
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_WARNING)
    try:
        first, second = sources._quiet_opencv(), sources._quiet_opencv()
        first.__enter__()  # the interleaving two threads make, without the threads
        second.__enter__()
        first.__exit__(None, None, None)
        assert logging_mod.getLogLevel() == silent  # the other is still probing
        second.__exit__(None, None, None)
        assert logging_mod.getLogLevel() == logging_mod.LOG_LEVEL_WARNING
    finally:
        logging_mod.setLogLevel(original)


def test_a_folder_with_superscript_digits_in_a_name_opens_in_natural_order(tmp_path):
    # str.isdigit() is true for "²", which re's \d does not split on: int("²") raised a bare
    # ValueError from the constructor, naming no file.
    for name in ("a10.png", "a1²2.png", "a2.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    with ImageFolderSource(path=tmp_path, live=False) as src:
        assert [p.name for p in src.files] == ["a1²2.png", "a2.png", "a10.png"]


# --------------------------------------------------------------------------- mutation review


def test_source_kind_takes_a_camera_index_with_spaces_around_it():
    # A config file's " 0 " opens the camera, as open_source's camera parser does.
    assert source_kind(" 0 ") == "camera"


def test_a_file_named_with_other_digits_is_a_file_not_a_camera(tmp_path, monkeypatch):
    # "①" and "²" pass str.isdigit(): a file so named was taken for a camera, and int() of it
    # failed ("cannot open ①: invalid literal for int()") instead of opening the file.
    monkeypatch.chdir(tmp_path)
    for name in ("①", "²", "١"):  # a circled one, a superscript two, an Arabic-Indic one
        assert not sources.is_camera_number(name) and source_kind(name) != "camera"
    assert sources.is_camera_number(" 2 ") and source_kind("2") == "camera"
    os.replace(write_video(tmp_path / "c.avi", 3), tmp_path / "①")
    with open_source("①", live=False) as src:
        assert src.read() is not None


def test_the_top_of_the_fps_range_is_honoured(tmp_path):
    # FPS_RANGE is inclusive: 1000 fps is a rate a user may ask for, not "not given".
    path = write_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    with open_source(str(path), live=True, fps=1000.0) as src:
        assert src.fps == 1000.0
    with open_source(str(path), live=True, fps=1001.0) as src:
        assert src.fps == sources.DEFAULT_FPS


def test_a_looping_folder_has_no_frame_count(tmp_path):
    # The progress bar must not show "3 of 3" and then keep going.
    for i in range(3):
        write_png(tmp_path / f"f{i}.png", np.full((4, 4, 3), i, np.uint8))
    with open_source(tmp_path, live=True, loop=True) as src:
        assert src.frame_count is None


def test_folder_order_ignores_letter_case(tmp_path):
    # A person sorts "a.png" before "B.png"; a plain string sort puts capitals first.
    write_png(tmp_path / "B.png", np.full((4, 4, 3), 2, np.uint8))
    write_png(tmp_path / "a.png", np.full((4, 4, 3), 1, np.uint8))
    with open_source(tmp_path, live=False) as src:
        assert [int(f.image[0, 0, 0]) for f in src] == [1, 2]


def test_a_resized_video_reports_the_size_it_delivers(tmp_path):
    # Sinks are opened at the source's size before the first frame: it must be the frame size.
    path = write_video(tmp_path / "v.avi", 2, size=(64, 48))
    with open_source(str(path), live=False, size=(32, 32)) as src:
        assert src.size == (32, 32)
        assert src.read().image.shape == (32, 32, 3)


def test_the_pacer_restarts_its_schedule_after_falling_far_behind():
    # After a stall, frames come at the normal rate again, not as a burst of catch-up frames.
    pacer = sources._Pacer(100.0, threading.Event(), max_lag_s=0.05)
    pacer.wait()
    time.sleep(0.2)  # 20 periods late
    pacer.wait()
    t0 = time.perf_counter()
    for _ in range(3):
        pacer.wait()
    assert time.perf_counter() - t0 >= 0.015  # paced (3 periods: 30 ms), not all at once


def test_the_pacer_catches_up_a_short_lag_without_a_burst():
    # A decoding hiccup shorter than max_lag is caught up, but the late frames were released as
    # soon as each was decoded: after a 120 ms hiccup in a 30 fps file the virtual camera got
    # 4 frames 5 ms apart. Now none comes sooner than 3/4 of a period after the one before.
    period = 0.02
    pacer = sources._Pacer(1 / period, threading.Event(), max_lag_s=0.25)
    pacer.wait()
    time.sleep(0.12)  # six periods late, under max_lag: no restart
    pacer.wait()
    times = [time.perf_counter()]
    for _ in range(6):
        pacer.wait()
        times.append(time.perf_counter())
    gaps = np.diff(times)
    # 3/4 of a period from the pacer's own release; half from here, where a busy machine may
    # hold this thread a few ms between the two (the burst was 0.0006 ms).
    assert gaps.min() >= 0.5 * period, gaps
    assert not pacer._restarts  # caught up, not restarted: the file keeps its clock


class _PacerClock:
    """A virtual ``perf_counter`` for the pacer, and its interrupt: a wait (never interrupted)
    moves it on, by as much more as the next of ``oversleep`` (a timer that wakes late)."""

    def __init__(self, oversleep: Sequence[float] = ()) -> None:
        self.t = 100.0
        self.oversleep = list(oversleep)

    def perf_counter(self) -> float:
        return self.t

    def wait(self, delay: float) -> bool:
        self.t += delay + (self.oversleep.pop(0) if self.oversleep else 0.0)
        return False


def test_a_file_decoded_fast_enough_on_average_is_not_slowed_by_the_catch_up_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow keyframe every 15 frames (6 periods), the others 0.3 of a period: 0.68 of a
    # period a frame in all. Caught up at 4/3 of the rate however late it was, each keyframe
    # left it 50 ms further behind, until it restarted: it played at 0.85 of its speed and was
    # said to be in slow motion after 4.5 s, where it kept its rate before the limit came.
    clock = _PacerClock()
    monkeypatch.setattr(sources, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    period = 1 / 30
    pacer = sources._Pacer(30.0, clock, max_lag_s=0.25)  # type: ignore[arg-type]
    released = []
    for i in range(900):
        clock.t += (6.0 if i % 15 == 0 else 0.3) * period
        pacer.wait()
        released.append(clock.t)
        assert not pacer.behind(), i
    assert not pacer._restarts
    assert released[-1] - released[0] == pytest.approx(899 * period, abs=0.25)


def test_catch_up_frames_are_spaced_from_when_the_one_before_really_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The limit counted from when a frame was due to go: a wait that woke 10 ms late (a busy
    # machine, a timer tick on Windows) let the next frame go 5 ms after it, not 15.
    clock = _PacerClock(oversleep=[0.010])
    monkeypatch.setattr(sources, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    period = 0.02
    pacer = sources._Pacer(1 / period, clock, max_lag_s=0.25)  # type: ignore[arg-type]
    pacer.wait()
    clock.t += 0.12  # a decoding hiccup: 100 ms behind
    released = []
    for _ in range(6):  # decoded at once: only the limit spaces them
        pacer.wait()
        released.append(clock.t)
    gaps = np.diff(released)
    assert gaps.min() >= 0.75 * period - 1e-9, gaps
    assert not pacer._restarts


def test_an_mkv_is_paced_by_its_frames_times_not_the_rate_it_declares(tmp_path: Path) -> None:
    # A Matroska track's declared rate is its writer's hint: 30 here, for frames 40 ms apart.
    # Played at 30, the clip ran 1.2 times too fast. An MP4's stated rate is its frames'.
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for name in ("hint.mkv", "hint.mp4"):
        subprocess.run(
            [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=1",
             "-vf", "settb=1/1000,setpts=N/25/TB", "-fps_mode", "passthrough",
             "-enc_time_base", "1/1000", "-c:v", "mpeg4", str(tmp_path / name)],
            check=True,
        )  # fmt: skip
    mkv = sources.VideoFileSource(path=tmp_path / "hint.mkv", live=True)
    mp4 = sources.VideoFileSource(path=tmp_path / "hint.mp4", live=True)
    with mkv, mp4:
        assert cv2.VideoCapture(str(tmp_path / "hint.mkv")).get(cv2.CAP_PROP_FPS) == 30
        assert mkv.fps == pytest.approx(25.0) and mp4.fps == pytest.approx(25.0, rel=0.02)
    # A varying rate (30 fps for 1 s, then 15: a phone's clip as the light fails) plays at
    # the mean of all its frames' times (20.1), not its first frames' 30 (1.5 times too
    # fast, and the sound 2 s behind at the end of a 6 s clip).
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=30",
         "-frames:v", "60", "-vf", "settb=1/1000,setpts='if(lt(N,30),N/30,1+(N-30)/15)/TB'",
         "-fps_mode", "passthrough", "-enc_time_base", "1/1000", "-c:v", "mpeg4",
         str(tmp_path / "phone.mkv")],
        check=True,
    )  # fmt: skip
    with sources.VideoFileSource(path=tmp_path / "phone.mkv", live=True) as phone:
        assert abs(phone.fps / (59 / (1 + 29 / 15)) - 1) < 0.1, phone.fps


def _stepped_clip(path: Path) -> Path:
    """Six pictures 20 ms apart, then four 200 ms apart (a mean of 10 fps)."""
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=50", "-frames:v", "10",
         "-vf", "settb=1/1000,setpts='if(lt(N,6),N/50,0.1+(N-5)/5)/TB'", "-fps_mode",
         "passthrough", "-enc_time_base", "1/1000", "-c:v", "mpeg4", "-bf", "2", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("name", ["steps.mp4", "steps.mkv"])
def test_a_variable_rate_file_is_paced_by_each_pictures_own_time(tmp_path: Path, name: str) -> None:
    # Paced at its mean rate, a phone's clip at 30 fps then 15 played its first half at 0.76
    # times its speed and its second at 1.5 (the whole at its right length).
    path = _stepped_clip(tmp_path / name)
    with sources.VideoFileSource(path=path, live=True) as src:
        assert 8 < src.fps < 15  # its mean rate: all its steps were once one of 1 / fps
        times = [f.t_capture for f in src]
    steps = np.diff(times)
    assert len(times) == 10
    assert np.median(steps[:5]) < 0.06 and min(steps[6:]) > 0.15, steps


@pytest.mark.parametrize("name", ["steps.ts", "steps.m2ts"])
def test_a_step_too_long_to_be_a_pictures_own_lasts_one_period_where_clocks_jump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Broken times (an MPEG-TS joined from two recordings jumps by an hour) must not hold a
    # picture for as long: there a step longer than MAX_STEP_S is one period of the file's rate.
    path = _stepped_clip(tmp_path / name)
    monkeypatch.setattr(sources, "MAX_STEP_S", 0.1)
    with sources.VideoFileSource(path=path, live=True) as src:
        period = 1 / src.fps
        times = [f.t_capture for f in src]
    steps = np.diff(times)
    assert len(times) == 10 and np.median(steps[:5]) < 0.06
    assert all(0.7 * period < s < 0.15 for s in steps[6:]), (steps, period)


@pytest.mark.parametrize("junk", [1, 100])
def test_a_transport_stream_cut_mid_packet_is_still_one_whose_clock_may_jump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, junk: int
) -> None:
    # A recording cut at any byte (dd, a tuner's dump, a partial download) starts mid-packet,
    # and FFmpeg plays it from the next: a jump in its clock was held as a still (an hour).
    path = _stepped_clip(tmp_path / "steps.ts")
    cut = tmp_path / "cut.ts"
    cut.write_bytes(b"\0" * junk + path.read_bytes())
    assert sources._clock_may_jump(cut)
    assert not sources._clock_may_jump(_stepped_clip(tmp_path / "steps.mp4"))
    monkeypatch.setattr(sources, "MAX_STEP_S", 0.1)
    monkeypatch.setattr(sources, "REPEAT_S", 10.0)
    with sources.VideoFileSource(path=cut, live=True) as src:
        period = 1 / src.fps
        times = [f.t_capture for f in src]
    steps = np.diff(times)
    assert len(times) == 10
    assert all(0.7 * period < s < 0.15 for s in steps[6:]), (steps, period)


def test_a_long_still_is_held_its_whole_time_and_sent_again_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A screen recording's still of 6 s was held for one period (the 6.8 s clip played in
    # 1.06 s); held whole but sent once, the engine called the source stalled after 3 s and
    # a recording cut it to 2 s. Each REPEAT_S (here 0.08 s) of it, the picture goes again.
    path = _stepped_clip(tmp_path / "steps.mp4")
    monkeypatch.setattr(sources, "REPEAT_S", 0.08)
    with sources.VideoFileSource(path=path, live=True) as src:
        frames = list(src)
    times = np.array([f.t_capture for f in frames])
    # Six 20 ms steps, then four of 200 ms, each sent at 80, 160 and 200 ms.
    assert len(frames) == 6 + 4 * 3, len(frames)
    assert times[-1] - times[0] == pytest.approx(0.9, abs=0.08)
    for i in (5, 8, 11, 14):
        assert np.array_equal(frames[i].image, frames[i + 1].image)
        assert np.array_equal(frames[i].image, frames[i + 2].image)
        assert not np.array_equal(frames[i].image, frames[i + 3].image)
        assert np.diff(times[i : i + 4]) == pytest.approx([0.08, 0.08, 0.04], abs=0.03)
    assert [f.index for f in frames] == list(range(len(frames)))


def test_a_still_sends_no_repeat_just_before_the_next_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A still 3 ms longer than REPEAT_S sent its repeat and the next picture 6 ms apart, and a
    # live recording dropped that picture (the repeat's slot). A last bit under a quarter of
    # REPEAT_S goes with the wait before it. Here 200 ms steps at a REPEAT_S of 95 ms: one
    # repeat (95 ms, then 105), not two and a picture 10 ms after the second.
    path = _stepped_clip(tmp_path / "steps.mp4")
    monkeypatch.setattr(sources, "REPEAT_S", 0.095)
    with sources.VideoFileSource(path=path, live=True) as src:
        frames = list(src)
        assert src.repeats == 4
    times = np.array([f.t_capture for f in frames])
    assert len(frames) == 6 + 4 * 2, len(frames)
    assert np.diff(times[5:]).min() > 0.06, np.round(np.diff(times) * 1000)


def test_a_rewind_slower_than_a_period_brings_no_burst_of_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loop's rewind taking 0.15 s at 30 fps: the frames after it came 0 ms apart, to catch
    # up with a schedule that had not moved.
    path = write_video(tmp_path / "cfr.avi", 15, fps=30.0)
    armed = threading.Event()
    real = sources._make_capture

    class SlowToSeek:
        def __init__(self, cap) -> None:  # noqa: ANN001
            self.cap = cap

        def set(self, prop, value):  # noqa: ANN001, ANN202
            if armed.is_set() and prop == cv2.CAP_PROP_POS_FRAMES:
                time.sleep(0.15)
            return self.cap.set(prop, value)

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(self.cap, name)

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: SlowToSeek(real(t, a)))
    with sources.VideoFileSource(path=path, live=True, loop=True) as src:
        armed.set()
        times = [src.read().t_capture for _ in range(22)]
    steps = np.diff(times)
    assert steps[14] > 0.14 and min(steps[15:20]) > 0.5 / 30, np.round(steps * 1000)


def test_a_variable_rate_clip_ffmpeg_decodes_is_paced_by_its_pictures_own_times(
    tmp_path: Path,
) -> None:
    # FFmpeg's decoder (a 10-bit clip here, whose colours OpenCV gets wrong; HDR and interlaced
    # ones alike) gives no times: its pictures went one period apart, a variable-rate phone
    # clip at its mean rate. Listed on a thread, their times come a moment after it opens.
    import imageio_ffmpeg

    from engine.remux import tone_map_hdr

    path = tmp_path / "steps10.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=50", "-frames:v", "10",
         "-vf", "settb=1/1000,setpts='if(lt(N,6),N/50,0.1+(N-5)/5)/TB'", "-fps_mode",
         "passthrough", "-enc_time_base", "1/1000", "-c:v", "libx264", "-pix_fmt", "yuv420p10le",
         "-bf", "0", str(path)],
        check=True,
    )  # fmt: skip
    with sources.VideoFileSource(path=path, live=True) as src:
        tone_map_hdr(src, ffmpeg=imageio_ffmpeg.get_ffmpeg_exe())
        assert src._decoder is not None  # read through FFmpeg
        deadline = time.perf_counter() + 10
        while src._picture_times is None and time.perf_counter() < deadline:
            time.sleep(0.02)
        assert src._picture_times is not None and len(src._picture_times) == 10
        times = [f.t_capture for f in src]
    steps = np.diff(times)
    assert len(times) == 10
    assert np.median(steps[:5]) < 0.06 and min(steps[6:]) > 0.15, steps


def _wait_for_picture_times(src: sources.VideoFileSource) -> list[float]:
    deadline = time.perf_counter() + 10
    while src._picture_times is None and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert src._picture_times is not None
    return src._picture_times


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_a_clip_ffmpeg_decodes_from_between_keyframes_is_paced_by_the_pictures_shown(
    tmp_path: Path, codec: str
) -> None:
    # Cut between keyframes (a TS capture joined late; an open GOP, x265's default), the
    # decoder shows nothing before the first keyframe, nor the leading pictures that refer
    # to the GOP cut away: the listed times ran ahead of the pictures by as many (the slow
    # part began 3 pictures late).
    import imageio_ffmpeg

    from engine.remux import tone_map_hdr

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    kind = ".ts" if codec == "h264" else ".mkv"
    full, cut = tmp_path / f"full{kind}", tmp_path / f"cut{kind}"
    encode = (
        ["-c:v", "libx264", "-bf", "0", "-g", "6", "-keyint_min", "6", "-sc_threshold", "0"]
        if codec == "h264"
        else ["-c:v", "libx265", "-x265-params",
              "log-level=0:keyint=6:min-keyint=6:open-gop=1:scenecut=0"]
    )  # fmt: skip
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=50",
         "-frames:v", "24", "-vf", "settb=1/1000,setpts='if(lt(N,12),N/50,0.24+(N-11)/5)/TB'",
         "-fps_mode", "passthrough", "-enc_time_base", "1/1000", *encode,
         "-pix_fmt", "yuv420p10le", str(full)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(full), "-ss", "0.05", "-c", "copy", "-copyinkf",
         str(cut)],
        check=True,
    )  # fmt: skip
    with sources.VideoFileSource(path=cut, live=True) as src:
        tone_map_hdr(src, ffmpeg=ffmpeg)
        assert src._decoder is not None  # read through FFmpeg
        listed = _wait_for_picture_times(src)
        frames = list(src)
    steps = np.diff([f.t_capture for f in frames])
    assert len(listed) == len(frames), (len(listed), len(frames))
    # The first step is one period (a pass's first picture); the others, the listed ones.
    assert np.allclose(steps[1:], np.diff(listed)[1:], atol=0.03), np.round(steps * 1000)
    assert steps.max() > 0.15  # the slow part was shown


def test_picture_times_that_do_not_count_the_pictures_shown_are_dropped_after_a_pass(
    tmp_path: Path,
) -> None:
    # Damaged pictures skipped by the decoder, or a start it took otherwise: the times would
    # be other pictures' in every pass of a loop. Their count says so at the pass's end.
    import imageio_ffmpeg

    from engine.remux import tone_map_hdr

    path = tmp_path / "ten.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=25", "-frames:v", "6", "-c:v", "libx264", "-pix_fmt",
         "yuv420p10le", str(path)],
        check=True,
    )  # fmt: skip
    with sources.VideoFileSource(path=path, live=True, loop=True) as src:
        tone_map_hdr(src, ffmpeg=imageio_ffmpeg.get_ffmpeg_exe())
        _wait_for_picture_times(src)
        src.use_picture_times([0.0, 0.04, 0.08])  # three for six pictures
        for _ in range(6):
            src.read()
        assert src._picture_times == [0.0, 0.04, 0.08]
        src.read()  # the pass ended: the next begins
        assert src._picture_times == []


def test_a_step_longer_than_max_step_s_is_a_still_where_the_clock_does_not_jump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only TS, PS and FLV clocks jump where recordings were joined: in an MP4 a long step is a
    # screen recording's still, held its whole time (cut to one period, a 6 s still lasted
    # 0.03 s). MAX_STEP_S here 0.1 s, under the clip's 0.2 s steps.
    path = _stepped_clip(tmp_path / "steps.mp4")
    monkeypatch.setattr(sources, "MAX_STEP_S", 0.1)
    with sources.VideoFileSource(path=path, live=True) as src:
        times = [f.t_capture for f in src]
    steps = np.diff(times)
    assert len(times) == 10 and min(steps[6:]) > 0.15, steps


def test_the_containers_whose_clock_may_jump_are_told_by_their_first_bytes(tmp_path: Path) -> None:
    # MPEG-TS, MPEG-PS (a DVD's or camcorder's .mpg/.vob) and FLV are joined from recordings
    # with their clocks left as they were; a long step there is a jump, elsewhere a still.
    import imageio_ffmpeg

    made = {}
    for name, fmt in [("a.ts", "mpegts"), ("a.mpg", "vob"), ("a.flv", "flv"), ("a.mp4", "mp4"),
                      ("a.mkv", "matroska")]:  # fmt: skip
        made[name] = tmp_path / name
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
             "testsrc=size=64x48:rate=10", "-frames:v", "3", "-c:v", "mpeg2video" if fmt != "flv"
             else "flv1", "-f", fmt, str(made[name])],
            check=True,
        )  # fmt: skip
    assert {name: sources._clock_may_jump(p) for name, p in made.items()} == {
        "a.ts": True, "a.mpg": True, "a.flv": True, "a.mp4": False, "a.mkv": False
    }  # fmt: skip


def test_an_uncompressed_mov_of_a_flat_grey_is_no_transport_stream(tmp_path: Path) -> None:
    # A QuickTime file with its mdat first holds raw pixels from byte ~48: a flat 0x47 grey is
    # "sync bytes" 188 apart, and a still of more than MAX_STEP_S in it was cut to one period.
    import imageio_ffmpeg

    out = tmp_path / "grey.mov"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "color=c=0x474747:size=160x120:rate=10:duration=1", "-frames:v", "10",
         "-c:v", "rawvideo", "-pix_fmt", "bgr24", str(out)],
        check=True,
    )  # fmt: skip
    assert not sources._clock_may_jump(out)


def test_pictures_whose_times_do_not_advance_are_paced_one_period_apart(tmp_path: Path) -> None:
    # A damaged file whose pictures all carry one time (or a step back) has no step of its
    # own to wait: each goes one period after the last, not all at once.
    path = write_video(tmp_path / "cfr.avi", 6, fps=30.0)
    with sources.VideoFileSource(path=path, live=True) as src:
        src._position_s = lambda: 0.5  # type: ignore[method-assign]
        times = [f.t_capture for f in src]
    steps = np.diff(times)
    assert len(times) == 6 and min(steps[1:]) > 0.5 / 30, np.round(steps * 1000)


def test_a_loops_second_pass_is_paced_by_its_pictures_own_times_from_its_first(
    tmp_path: Path,
) -> None:
    # The pass's first picture's time is where its steps count from: taken from the last
    # pass's end, the second picture's step came out negative and it waited a whole period.
    path = _stepped_clip(tmp_path / "steps.mp4")
    tries = []
    for _ in range(3):
        # The best of three: a loaded machine may stall one 20 ms step past the bound now and
        # then, where the fault waited the whole period on every pass.
        with sources.VideoFileSource(path=path, live=True, loop=True) as src:
            period = 1 / src.fps
            times = [src.read().t_capture for _ in range(14)]
        steps = np.diff(times)
        tries.append(np.round(steps * 1000))
        # Pictures 10-13 are the second pass's 0-3, 20 ms apart as in the first.
        if max(steps[10:13]) < 0.6 * period:
            break
    else:
        pytest.fail(f"the second pass waited: steps (ms) {tries}, period {period}")


def test_a_still_of_seconds_in_a_transport_stream_is_held_its_whole_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MAX_STEP_S is for a clock's jump where recordings were joined (an hour), not for a
    # broadcast's still of a second or two, which must be held as in any other container.
    import imageio_ffmpeg

    path = tmp_path / "still.ts"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=25", "-frames:v", "4",
         "-vf", "settb=1/1000,setpts='if(lt(N,3),N/25,1.6)/TB'", "-fps_mode", "passthrough",
         "-enc_time_base", "1/1000", "-c:v", "mpeg4", str(path)],
        check=True,
    )  # fmt: skip
    monkeypatch.setattr(sources, "REPEAT_S", 10.0)  # held, not sent again meanwhile
    with sources.VideoFileSource(path=path, live=True) as src:
        times = [f.t_capture for f in src]
    assert len(times) == 4 and times[-1] - times[-2] > 1.4, np.diff(times)


def test_a_rewind_forgives_only_the_one_late_frame_after_it() -> None:
    # A loop's rewind is no frame read late; but a clip read slower than its rate after a
    # rewind plays in slow motion all the same and must be said to: the pardon is one frame's.
    pacer = sources._Pacer(100.0, threading.Event(), max_lag_s=0.02)
    pacer.wait()
    pacer.resync()
    time.sleep(0.05)
    pacer.wait()  # late by the rewind alone: no restart
    assert not pacer.behind() and len(pacer._restarts) == 0
    for _ in range(sources.BEHIND_RESTARTS):
        time.sleep(0.05)
        pacer.wait()
    assert pacer.behind()


def test_a_two_picture_mkv_keeps_its_rate(tmp_path: Path) -> None:
    # Two pictures are too few to measure a rate by (one step, and a last duration that is
    # the declared rate's): the declared 25 stands, not half of it.
    import imageio_ffmpeg

    path = tmp_path / "two.mkv"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=25", "-frames:v", "2", "-c:v", "mpeg4", str(path)],
        check=True,
    )  # fmt: skip
    with sources.VideoFileSource(path=path, live=False) as src:
        assert src.fps == pytest.approx(25.0) and len(list(src)) == 2


def test_a_matroska_rate_is_measured_over_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listed whole, a 30-minute 2 GB recording took 2.7 s to show its first picture in the
    # window: its rate is measured over its first _RATE_SPAN_S (here 1 s: 25 fps; 12.5 after).
    import imageio_ffmpeg

    path = tmp_path / "long.mkv"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=25", "-frames:v", "75",
         "-vf", "settb=1/1000,setpts='if(lt(N,25),N/25,1+(N-25)/12.5)/TB'", "-fps_mode",
         "passthrough", "-enc_time_base", "1/1000", "-c:v", "mpeg4", str(path)],
        check=True,
    )  # fmt: skip
    assert sources._mean_rate_from_packets(str(path)) == pytest.approx(74 / 4.92, rel=0.01)
    monkeypatch.setattr(sources, "_RATE_SPAN_S", 1.0)
    assert sources._mean_rate_from_packets(str(path)) == pytest.approx(25.0, rel=0.05)


def test_the_pacer_falls_behind_only_on_restarts_that_keep_coming():
    # One stall is a busy moment; a schedule restarted again and again is a file read slower
    # than its rate, which then plays in slow motion.
    pacer = sources._Pacer(100.0, threading.Event(), max_lag_s=0.02)
    pacer.wait()
    for restarts in range(1, sources.BEHIND_RESTARTS + 1):
        time.sleep(0.05)
        pacer.wait()
        assert pacer.behind() == (restarts == sources.BEHIND_RESTARTS)
    # Restarts spread wider than the window are separate stalls.
    assert not pacer.behind(time.perf_counter() + sources.BEHIND_WINDOW_S + 0.1)
    for _ in range(5):
        pacer.wait()  # on time: no restart
    assert pacer.behind()


def test_a_stall_or_two_or_restarts_spread_wider_than_the_window_are_not_slow_motion():
    # Two stalls (a busy machine for a moment, twice) are not a file read slower than its
    # rate; nor are three restarts whose first is older than the window, however recent the
    # last: only BEHIND_RESTARTS of them within BEHIND_WINDOW_S are.
    pacer = sources._Pacer(100.0, threading.Event(), max_lag_s=0.02)
    pacer.wait()
    time.sleep(0.1)
    before = time.perf_counter()
    pacer.wait()  # the first restart, between `before` and `first`
    first = time.perf_counter()
    assert not pacer.behind()
    time.sleep(0.1)
    pacer.wait()
    assert not pacer.behind()  # two
    time.sleep(0.1)
    pacer.wait()  # the third, 0.2 s after the first
    assert pacer.behind()
    assert pacer.behind(before + sources.BEHIND_WINDOW_S)
    # The first out of the window, the last two still in it: separate stalls.
    assert not pacer.behind(first + sources.BEHIND_WINDOW_S + 0.01)


@pytest.mark.parametrize("how", ["seek", "reopen", "decoder"])
def test_a_looping_clip_whose_rewind_is_slow_is_not_said_to_play_in_slow_motion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # However a pass starts again (OpenCV's seek back to 0, a raw MJPEG opened anew, an FFmpeg
    # decoder started again for a tone-mapped clip: 0.25-0.33 s), the rewind is no frame read
    # late: a 1 s clip looped in the window was said to play in slow motion.
    img = np.zeros((32, 32, 3), np.uint8)
    if how == "reopen":
        path = tmp_path / "loop.mjpeg"
        path.write_bytes(b"".join(cv2.imencode(".jpg", img)[1].tobytes() for _ in range(3)))
    else:
        path = tmp_path / "loop.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, (32, 32))
        for _ in range(3):
            writer.write(img)
        writer.release()
    armed = threading.Event()  # once the source is open: its rewinds are slow
    real = sources._make_capture

    class SlowToSeek:
        def __init__(self, cap) -> None:  # noqa: ANN001
            self.cap = cap

        def set(self, prop, value):  # noqa: ANN001, ANN202
            if armed.is_set() and how == "seek" and prop == cv2.CAP_PROP_POS_FRAMES:
                time.sleep(0.3)
            return self.cap.set(prop, value)

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(self.cap, name)

    def make(target, api):  # noqa: ANN001, ANN202
        if armed.is_set() and how == "reopen":
            time.sleep(0.3)
        return SlowToSeek(real(target, api))

    class Decoder:  # FFmpeg's pictures, three a pass; slow to start again
        left = 3

        def read(self):  # noqa: ANN202
            if not self.left:
                return None
            self.left -= 1
            return img.copy()

        def restart(self) -> None:
            time.sleep(0.3)
            self.left = 3

        def close(self) -> None:
            return None

    monkeypatch.setattr(sources, "_make_capture", make)
    kind = "video" if how == "reopen" else None
    with open_source(path, live=True, loop=True, kind=kind) as src:
        if how == "decoder":
            src.decode_with(Decoder())
        armed.set()
        for _ in range(3 * (sources.BEHIND_RESTARTS + 1)):
            assert src.read() is not None
        assert src.falling_behind is None and not src.fell_behind


class _FakePacer:
    """A live source's pacer that is behind when the test says so, and never waits."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.is_behind = False

    def wait(self, step: float | None = None) -> float:
        return 0.0

    def behind(self, now: float | None = None) -> bool:
        return self.is_behind


def test_a_file_is_judged_by_the_typical_decoding_time_of_its_recent_pictures(tmp_path: Path):
    # The median of the last DECODE_SAMPLES: a few pictures whose thread waited for a core (a
    # model call beside it) are not the file's doing, and older pictures no longer count.
    src = sources.VideoFileSource(path=write_video(tmp_path / "c.avi", 4), live=True)
    with src:
        period = src._pacer.period
        for _ in range(40):
            src._decoded(time.perf_counter() - 0.05)  # slow, but before the recent ones
        for _ in range(sources.DECODE_SAMPLES - 5):
            src._decoded(time.perf_counter())
        for _ in range(5):
            src._decoded(time.perf_counter() - 0.2)  # the newest waited for a core
        busy = src._too_busy()
        assert busy is not None and busy[0] < 0.5 * period and busy[1] == period


def test_a_stretch_read_late_keeps_its_words_and_the_next_stretch_is_judged_anew(
    tmp_path: Path,
) -> None:
    # The window shows each new text as a new warning: a stretch's words must not change
    # while it lasts; once the file has caught up, the next stretch is judged by itself.
    src = sources.VideoFileSource(path=write_video(tmp_path / "c.avi", 4), live=True)
    with src:
        pacer = src._pacer = _FakePacer(src._pacer.period)
        for _ in range(5):
            src._decoded(time.perf_counter())  # decodes in no time
        pacer.is_behind = True
        assert src._pace()
        said = src.falling_behind
        assert said is not None and "while the computer is this busy" in said, said
        for _ in range(sources.DECODE_SAMPLES):
            src._decoded(time.perf_counter() - 0.05)  # now slower than its 40 ms a frame
        assert src._pace() and src.falling_behind == said
        assert src.fell_behind and not src.fell_behind_decoding
        pacer.is_behind = False
        assert src._pace() and src.falling_behind is None
        pacer.is_behind = True
        assert src._pace()
        assert "c.avi cannot be decoded at its 25 fps" in src.falling_behind
        assert src.fell_behind_decoding


@pytest.mark.parametrize("kind", ["video", "folder", "image"])
def test_a_live_file_read_slower_than_its_rate_says_so(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    if kind == "video":
        path = tmp_path / "clip.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, (32, 32))
        for _ in range(40):
            writer.write(img)
        writer.release()
        cls, slow, what = (
            sources.VideoFileSource,
            "_decode",
            "clip.avi cannot be decoded at its 100 fps",
        )
    elif kind == "folder":
        path = tmp_path / "shots"
        path.mkdir()
        for i in range(40):
            cv2.imwrite(str(path / f"{i:02d}.png"), img)
        cls, slow, what = (
            sources.ImageFolderSource,
            "_next_image",
            "the images in shots cannot be read",
        )
    else:
        path = tmp_path / "one.png"
        cv2.imwrite(str(path), img)
        cls, slow, what = sources.ImageSource, "_emit", None
    src = cls(path=path, live=True, fps=100.0)
    with src:
        for _ in range(5):
            assert src.read() is not None
        assert src.falling_behind is None and not src.fell_behind  # at its rate
    real = getattr(cls, slow)

    def slowly(self, *args):  # noqa: ANN001, ANN202
        time.sleep(0.06)  # six periods: a schedule 0.25 s behind every five frames
        return real(self, *args)

    monkeypatch.setattr(cls, slow, slowly)
    src = cls(path=path, live=True, fps=100.0)
    with src:
        for _ in range(20):
            assert src.read() is not None
        if what is None:  # a still repeated: nothing plays slower
            assert src.falling_behind is None and not src.fell_behind
        else:
            assert what in src.falling_behind and src.fell_behind
            assert "busy" not in src.falling_behind and src.fell_behind_decoding
    monkeypatch.setattr(cls, slow, real)
    if what is not None:
        # Decoding in time, read late all the same: the reader thread waited for a core (a
        # full-size model, other programs). "cannot be decoded" blamed a 720p H.264 file.
        src = cls(path=path, live=True, fps=100.0)
        with src:
            for _ in range(20):
                assert src.read() is not None
                time.sleep(0.06)
            said = src.falling_behind
            assert said is not None and src.fell_behind and not src.fell_behind_decoding
            assert "while the computer is this busy" in said and "decoded" not in said, said
            assert said.endswith("of 10): " + ("it plays in slow motion" if kind == "video"
                                               else "they play slower")), said  # fmt: skip
    offline = cls(path=path, live=False, fps=100.0)
    with offline:
        offline.read()
        assert offline.falling_behind is None  # as fast as it is read: never behind


class _Waits(threading.Event):
    """Records every wait instead of waiting (the camera's back-off waits on its interrupt)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):  # noqa: ANN001, ANN201
        self.waits.append(timeout)
        return self.is_set()


def test_camera_reconnect_backoff_doubles_up_to_its_longest(monkeypatch):
    # A camera gone for a while is retried less and less often, but never rarer than `longest`.
    opens = [0]

    def factory(target, api):
        opens[0] += 1
        # The first open (2 APIs on Linux count as tries too) works for the probe frame only.
        if opens[0] == 1:
            return FakeCapture(target, api, frames=1)
        return FakeCapture(target, api, opened=opens[0] > 14)

    monkeypatch.setattr(sources, "_make_capture", factory)
    cam = CameraSource(device=0, backoff=(0.01, 0.04), lost_after_reads=1)
    cam._pending = None
    cam._interrupt = waits = _Waits()
    assert cam.read() is not None and cam.reconnects == 1
    assert waits.waits[:4] == [0.01, 0.02, 0.04, 0.04], waits.waits
    cam.close()


def test_a_camera_without_a_declared_rate_takes_the_requested_one_and_retries_promptly(
    monkeypatch,
):
    # A driver saying 0 fps: the rate asked for is used; failed reads at 1 fps are still
    # retried within 100 ms, not a whole second later.
    class NoRate(FlakyCapture):
        def get(self, prop):
            return 0.0 if prop == cv2.CAP_PROP_FPS else super().get(prop)

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: NoRate(t, a, fail_at={1}))
    cam = CameraSource(device=0, fps=1.0)
    assert cam.fps == 1.0
    assert cam.read() is not None  # the fresh probe frame
    t0 = time.perf_counter()
    assert cam.read() is not None  # one failed grab, then a retry
    assert time.perf_counter() - t0 < 0.5
    cam.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_a_video_whose_name_is_not_utf8_is_refused_in_one_line_not_a_crash(tmp_path):
    # A Latin-1 name (an old zip, a Samba share): OpenCV's binding crashed the process on the
    # surrogates Python decodes it to (a segmentation fault, exit 139, no message).
    good = write_video(tmp_path / "good.avi", 3)
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/vid\xe9o.avi")
    shutil.copy(good, odd)
    with pytest.raises(SourceError, match=r"vid\\udce9o.avi is not valid UTF-8"):
        VideoFileSource(path=odd, live=False)
    # An image of such a name is read (np.fromfile, not OpenCV's file functions).
    still = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.png")
    cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tofile(still)
    with ImageSource(path=still, live=False) as src:
        assert src.read() is not None


# --------------------------------------------------------------------------- animated images


def write_animation(path: Path, n: int = 4, durations: list[int] | None = None) -> Path:
    """An animated WebP, PNG (APNG) or GIF of ``n`` flat frames, frame i of grey value 60*i."""
    animation = cv2.Animation()
    animation.frames = [np.full((32, 48, 3), 60 * i, np.uint8) for i in range(n)]
    animation.durations = durations or [100] * n
    assert cv2.imwriteanimation(str(path), animation)
    return path


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "anim.gif"])
def test_an_animated_webp_or_png_is_a_video_of_all_its_frames(tmp_path, name):
    # Read as a still, an animated WebP came out as its first frame, without a word (an
    # animated GIF, a video to FFmpeg, kept them all).
    path = write_animation(tmp_path / name)
    assert sources.is_animated_image(path)
    assert source_kind(path) == "video"
    assert video_has_audio(path) is False  # no "could not be told" note about its sound
    with open_source(path, live=False) as src:
        assert isinstance(src, VideoFileSource)
        values = [int(f.image.mean()) for f in src]
    assert len(values) == 4
    assert all(abs(v - 60 * i) <= 3 for i, v in enumerate(values)), values


@pytest.mark.parametrize("ext", [".webp", ".png", ".gif"])
def test_a_still_webp_or_png_stays_an_image(tmp_path, ext):
    still = tmp_path / f"still{ext}"
    cv2.imwrite(str(still), np.full((8, 8, 3), 9, np.uint8))
    one = write_animation(tmp_path / f"one{ext}", n=1)  # an animation of one frame is a still
    broken = tmp_path / f"broken{ext}"
    broken.write_bytes(write_animation(tmp_path / f"a{ext}").read_bytes()[:30])
    for path in (still, one):
        assert not sources.is_animated_image(path)
        assert source_kind(path) == "image"
    assert not sources.is_animated_image(tmp_path / f"missing{ext}")
    sources.is_animated_image(broken)  # cut off: no exception, whatever it answers


def test_a_gif_s_frames_are_counted_past_its_extensions_and_colour_tables(tmp_path):
    # A GIF was a video whatever it held: `process logo.gif logo.png` was refused ("must be a
    # video file for a video input"). Its blocks are walked: the loop and timing extensions
    # Pillow writes, a local colour table per frame, image data in 255-byte sub-blocks.
    from PIL import Image

    rng = np.random.default_rng(3)
    pictures = [Image.fromarray(rng.integers(0, 256, (40, 56, 3), np.uint8)) for _ in range(3)]
    anim = tmp_path / "anim.gif"
    pictures[0].save(anim, save_all=True, append_images=pictures[1:], duration=80, loop=0)
    data = anim.read_bytes()
    assert data.count(b"NETSCAPE2.0") == 1 and data.count(b"\x21\xf9") >= 3
    assert sources.is_animated_image(anim) and source_kind(anim) == "video"
    one = tmp_path / "one.gif"
    pictures[0].save(one)
    assert not sources.is_animated_image(one) and source_kind(one) == "image"
    assert read_image(one).shape == (40, 56, 3)
    # Cut in the middle (inside its second of three like frames): two image descriptors
    # still; cut inside its first frame: one.
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: len(data) // 2])
    assert sources.is_animated_image(cut)
    cut.write_bytes(data[: len(data) // 5])
    assert not sources.is_animated_image(cut)
    # Frames with their own colour tables (no global one), whose bytes look like blocks.
    frame = (
        b"\x2c\0\0\0\0\x01\0\x01\0\x80"  # 1x1 at (0, 0), a local table of two colours
        + b"\x2c\x2c\x2c\x21\x21\x21"  # the table
        + b"\x02\x02\x44\x01\x00"  # LZW code size 2, one sub-block, the end
    )
    local = tmp_path / "local.gif"
    local.write_bytes(b"GIF89a\x01\0\x01\0\0\0\0" + frame * 2 + b"\x3b")
    assert sources.is_animated_image(local)
    local.write_bytes(b"GIF89a\x01\0\x01\0\0\0\0" + frame + b"\x3b")
    assert not sources.is_animated_image(local)
    fake = tmp_path / "fake.gif"
    fake.write_bytes(b"GIF89a")
    assert not sources.is_animated_image(fake) and source_kind(fake) == "image"


def test_an_animation_is_known_by_its_bytes_not_its_name(tmp_path):
    # An APNG named .gif lost its animation when the GIF reading came in ("1 frame", no
    # note), and an animated GIF named .png always had.
    for real, named in ((".png", "apng.gif"), (".gif", "gif.png"), (".webp", "webp.jpg")):
        path = write_animation(tmp_path / f"a{real}")
        path.rename(tmp_path / named)
        assert sources.is_animated_image(tmp_path / named), named
        assert source_kind(tmp_path / named) == "video", named
        with open_source(tmp_path / named, live=False) as src:
            assert len(list(src)) == 4, named
    still = tmp_path / "still.gif"
    cv2.imwrite(str(still), np.full((8, 8, 3), 9, np.uint8))
    still.rename(tmp_path / "still.png")  # a GIF named .png: a still all the same
    assert source_kind(tmp_path / "still.png") == "image"
    # Not named as an image: not looked into (a video's container is not an animation).
    assert not sources.is_animated_image(
        write_animation(tmp_path / "b.gif").rename(tmp_path / "b.bin")
    )


def test_a_gif_s_transparency_is_read_from_its_control_extension(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.gif")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "solid.gif")
    with open(tmp_path / "clear.gif", "rb") as f:
        assert sources.gif_transparency(f)
    with open(tmp_path / "solid.gif", "rb") as f:
        assert not sources.gif_transparency(f)
    # A control extension after the first image is the second image's.
    data = (tmp_path / "clear.gif").read_bytes()
    gce = data.index(b"\x21\xf9")
    image = data.index(b"\x2c", gce)
    end = data.rindex(b"\x3b")
    moved = data[:gce] + data[image:end] + data[gce:image] + data[image:end] + b"\x3b"
    assert not sources.gif_transparency(io.BytesIO(moved))
    assert not sources.gif_transparency(io.BytesIO(b"GIF89a"))


def test_a_png_that_announces_frames_it_does_not_hold_is_a_still(tmp_path):
    # acTL said 2 frames and no fcTL (frame header) followed: the PNG was refused as an
    # image output, then made a video of its one frame.
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    still = cv2.imencode(".png", np.full((24, 32, 3), 9, np.uint8))[1].tobytes()
    path = tmp_path / "announced.png"
    path.write_bytes(still[:33] + chunk(b"acTL", struct.pack(">II", 2, 0)) + still[33:])
    assert not sources.is_animated_image(path)
    assert source_kind(path) == "image"
    # A real APNG's frame headers are counted, the first before the image data, the others
    # after it; no more than acTL announces.
    animated = write_animation(tmp_path / "anim.png", n=3).read_bytes()
    assert animated.count(b"fcTL") == 3
    assert sources.is_animated_image(tmp_path / "anim.png")
    at = animated.index(b"acTL") - 4
    one = chunk(b"acTL", struct.pack(">II", 1, 0))
    (tmp_path / "one.png").write_bytes(animated[:at] + one + animated[at + len(one) :])
    assert not sources.is_animated_image(tmp_path / "one.png")


def test_a_folder_lists_what_it_leaves_out(tmp_path):
    # Sub-folders and files of other types were passed over without a word.
    for i in (1, 2):
        write_png(tmp_path / f"f{i}.png", np.full((4, 4, 3), i, np.uint8))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "f3.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "clip10.mkv").write_bytes(b"")
    (tmp_path / "clip9.mp4").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"")  # hidden: neither read nor worth a mention
    with open_source(tmp_path, live=False) as src:
        assert [p.name for p in src.files] == ["f1.png", "f2.png"]
        assert [p.name for p in src.left_out] == ["clip9.mp4", "clip10.mkv", "notes.txt", "raw"]


# --------------------------------------------------------------------------- image metadata


def test_image_metadata_is_read_from_jpeg_png_and_webp_headers(tmp_path):
    from videos import exif_block, jpeg_with_metadata

    exif, icc = exif_block(), bytes(range(256)) * 300  # a profile over two JPEG segments
    img = np.zeros((16, 16, 3), np.uint8)
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(jpeg_with_metadata(cv2.imencode(".jpg", img)[1].tobytes(), exif, icc))
    assert sources.read_image_metadata(jpeg) == sources.ImageMetadata(exif=exif, icc=icc)

    png = bytearray(cv2.imencode(".png", img)[1].tobytes())
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    # iCCP before the image data, eXIf after it (both are allowed)
    png[33:33] = chunk(b"iCCP", b"P3\0\0" + zlib.compress(icc))
    png[-12:-12] = chunk(b"eXIf", exif)
    (tmp_path / "a.png").write_bytes(png)
    assert sources.read_image_metadata(tmp_path / "a.png") == sources.ImageMetadata(
        exif, icc, lossless=True
    )

    def riff(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)

    body = b"WEBP" + riff(b"VP8X", bytes(10)) + riff(b"ICCP", icc) + riff(b"EXIF", exif)
    (tmp_path / "a.webp").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert sources.read_image_metadata(tmp_path / "a.webp") == sources.ImageMetadata(exif, icc)

    cv2.imwrite(str(tmp_path / "plain.jpg"), img)
    assert not sources.read_image_metadata(tmp_path / "plain.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe1\xff")
    assert not sources.read_image_metadata(tmp_path / "junk.jpg")
    assert not sources.read_image_metadata(tmp_path / "missing.jpg")


def test_xmp_is_read_from_jpeg_png_and_webp(tmp_path):
    # Ratings, keywords and captions (XMP) were dropped from processed photos without a word.
    import zlib

    from videos import exif_block, jpeg_with_metadata, png_with_metadata, xmp_packet

    exif, xmp = exif_block(), xmp_packet()
    img = np.zeros((16, 16, 3), np.uint8)
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(jpeg_with_metadata(cv2.imencode(".jpg", img)[1].tobytes(), exif, None, xmp))
    assert sources.read_image_metadata(jpeg) == sources.ImageMetadata(exif=exif, xmp=xmp)
    # An XMP packet over 64 KB continues in extended segments, which are not read: said.
    data = cv2.imencode(".jpg", img)[1].tobytes()
    jpeg.write_bytes(jpeg_with_metadata(data, None, None, xmp, extended=b"<x:xmpmeta/>"))
    read = sources.read_image_metadata(jpeg)
    assert read.xmp == xmp and read.xmp_extended

    png = tmp_path / "a.png"
    png.write_bytes(png_with_metadata(cv2.imencode(".png", img)[1].tobytes(), None, None, xmp))
    assert sources.read_image_metadata(png) == sources.ImageMetadata(xmp=xmp, lossless=True)
    # Compressed (flag 1, method 0), after the image data, beside other text: still found.
    data = bytearray(cv2.imencode(".png", img)[1].tobytes())
    for text in (b"Comment\0\0\0en\0\0hello", b"XML:com.adobe.xmp\0\1\0\0\0" + zlib.compress(xmp)):
        body = b"iTXt" + text
        data[-12:-12] = struct.pack(">I", len(text)) + body + struct.pack(">I", zlib.crc32(body))
    png.write_bytes(data)
    comment = ((b"iTXt", b"Comment\0\0\0en\0\0hello"),)  # kept as text, XMP not twice
    assert sources.read_image_metadata(png) == sources.ImageMetadata(
        xmp=xmp, png_text=comment, lossless=True
    )

    def riff(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)

    body = b"WEBP" + riff(b"VP8X", bytes(10)) + riff(b"XMP ", xmp + b"!")  # odd: padded
    (tmp_path / "a.webp").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert sources.read_image_metadata(tmp_path / "a.webp") == sources.ImageMetadata(xmp=xmp + b"!")


class _CountingReads:
    """A file that counts its ``read`` calls."""

    def __init__(self, data: bytes):
        import io

        self._file, self.reads = io.BytesIO(data), 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self._file.read(n)

    def seek(self, *args: int) -> int:
        return self._file.seek(*args)


def test_metadata_and_box_walks_stop_on_a_hostile_file(monkeypatch):
    # A JPEG of nothing but fill bytes was read one byte at a time to its end (100 s a
    # gigabyte), and an MP4 of millions of empty boxes walked box by box (seconds).
    monkeypatch.setattr(sources, "_JPEG_FILL_LIMIT", 100)
    exif = b"Exif\0\0II*\0" + bytes(4)
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    assert sources._jpeg_metadata(_CountingReads(b"\xff\xd8" + b"\xff" * 50 + app1)).exif
    hostile = _CountingReads(b"\xff\xd8" + b"\xff" * 10_000 + app1)
    assert not sources._jpeg_metadata(hostile)
    assert hostile.reads < 150, hostile.reads

    monkeypatch.setattr(sources, "_BOX_WALK_LIMIT", 100)
    moov = struct.pack(">I4s", 16, b"moov") + struct.pack(">I4s", 8, b"free")
    data = struct.pack(">I4s", 8, b"ftyp") + struct.pack(">I4s", 8, b"free") * 50 + moov
    assert sources._mp4_moov(_CountingReads(data), len(data)) == moov
    data = struct.pack(">I4s", 8, b"ftyp") + struct.pack(">I4s", 8, b"free") * 10_000 + moov
    hostile = _CountingReads(data)
    assert sources._mp4_moov(hostile, len(data)) is None
    assert hostile.reads <= 100, hostile.reads
    hostile = _CountingReads(data)
    assert sources._mp4_has_audio(hostile, len(data)) is None
    assert hostile.reads <= 100, hostile.reads


# --------------------------------------------------------------------------- display matrix


def with_display_matrix(path: Path, a: int, b: int, c: int, d: int) -> Path:
    """Set the 2x2 part of the video track's display matrix (tkhd, version 0) of the MP4 at
    ``path`` in place, as a phone or ``ffmpeg -display_hflip`` writes it (16.16 fixed)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") - 4
    assert data[at + 8] == 0  # version 0: the matrix is 48 bytes in
    struct.pack_into(">ii4xii", data, at + 48, a << 16, b << 16, c << 16, d << 16)
    path.write_bytes(bytes(data))
    return path


def quadrants() -> np.ndarray:
    """``(48, 64, 3)`` RGB: red, green / blue, black quadrants, so any turn or flip shows."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[:24, :32] = (255, 0, 0)
    img[:24, 32:] = (0, 255, 0)
    img[24:, :32] = (0, 0, 255)
    return img


@pytest.mark.parametrize(
    ("matrix", "shown"),
    [
        ((1, 0, 0, 1), lambda a: a),
        ((-1, 0, 0, 1), lambda a: a[:, ::-1]),  # mirrored left to right
        ((1, 0, 0, -1), lambda a: a[::-1]),  # upside down
        ((0, -1, -1, 0), lambda a: a[::-1, ::-1].transpose(1, 0, 2)),  # turned and mirrored
        ((0, 1, 1, 0), lambda a: a.transpose(1, 0, 2)),
        ((0, -1, 1, 0), lambda a: np.rot90(a)),  # a quarter turn, not mirrored
    ],
)
def test_a_mirrored_video_is_shown_mirrored_not_turned(tmp_path, matrix, shown):
    # OpenCV reads only the rotation of the display matrix: a mirrored clip came out turned
    # by half (its flip taken for a turn). Expected as FFmpeg 9 shows them (checked by hand).
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(2):
        writer.write(cv2.cvtColor(quadrants(), cv2.COLOR_RGB2BGR))
    writer.release()
    with_display_matrix(path, *matrix)
    assert sources.video_is_mirrored(path) == (matrix[0] * matrix[3] - matrix[1] * matrix[2] < 0)
    with open_source(path, live=False) as src:
        frames = [f.image for f in src]
    expected = shown(quadrants())
    assert len(frames) == 2 and src.size == (expected.shape[1], expected.shape[0])
    for img in frames:
        assert img.shape == expected.shape
        assert np.abs(img.astype(int) - expected).mean() < 8


@pytest.mark.parametrize(
    ("name", "flags", "mirrored"),
    [
        ("h.mkv", ["-display_hflip"], True),
        ("v.mkv", ["-display_vflip"], True),
        ("r90h.mkv", ["-display_rotation", "90", "-display_hflip"], True),
        ("r90.mkv", ["-display_rotation", "90"], False),
        ("h.webm", ["-display_hflip"], True),
    ],
)
def test_a_mirrored_matroska_video_is_shown_as_ffmpeg_shows_it(tmp_path, name, flags, mirrored):
    # Matroska has no display matrix: FFmpeg stores a flip as the track's projection (a yaw
    # of 180 degrees), which only MP4 / MOV files were read for; a mirrored MKV or WebM came
    # out turned. What FFmpeg itself shows is what is expected.
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(2):
        writer.write(cv2.cvtColor(quadrants(), cv2.COLOR_RGB2BGR))
    writer.release()
    if name.endswith(".webm"):  # WebM takes VP8, VP9 or AV1 only
        vp9 = tmp_path / "clip.webm"
        encode = [ffmpeg, "-v", "error", "-i", str(clip), "-c:v", "libvpx-vp9", "-crf", "10"]
        subprocess.run([*encode, "-b:v", "0", str(vp9)], check=True, capture_output=True)
        clip = vp9
    path = tmp_path / name
    copy = [ffmpeg, "-v", "error", *flags, "-i", str(clip), "-c", "copy", str(path)]
    subprocess.run(copy, check=True, capture_output=True)
    assert sources.video_is_mirrored(path) == mirrored
    with open_source(path, live=False) as src:
        frames = [f.image for f in src]
    w, h = src.size
    shown = [ffmpeg, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(shown, check=True, capture_output=True).stdout
    assert len(frames) == 2 and len(raw) == 2 * w * h * 3
    expected = np.frombuffer(raw, np.uint8).reshape(2, h, w, 3)
    for img, want in zip(frames, expected, strict=True):
        assert np.abs(img.astype(int) - want).mean() < 8


def test_a_video_file_can_take_its_pictures_from_another_decoder(tmp_path):
    # What process does for HDR video: FFmpeg tone maps, the file keeps its rate and count.
    clip = write_video(tmp_path / "c.avi", 3, size=(64, 48), fps=10)

    class Decoder:
        def __init__(self) -> None:
            self.left, self.closed = 2, 0

        def read(self):  # noqa: ANN201
            if not self.left:
                return None
            self.left -= 1
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0] = 200  # blue, in BGR: the source converts to RGB as for OpenCV's
            return img

        def close(self) -> None:
            self.closed += 1

    src = VideoFileSource(path=clip, live=False, size=(32, 24))
    assert src.decoded_size == (64, 48)
    decoder = Decoder()
    src.decode_with(decoder)
    frames = list(src)
    assert len(frames) == 2 and frames[0].image.shape == (24, 32, 3)  # scaled as the file's
    assert frames[0].image[0, 0].tolist() == [0, 0, 200]
    assert (src.fps, src.frame_count) == (10, 3)
    src.close()
    src.close()
    assert decoder.closed == 1
    # Only before the first picture: one already handed out came from OpenCV.
    src = VideoFileSource(path=clip, live=False)
    src.read()
    with pytest.raises(ValueError, match="before the first read"):
        src.decode_with(Decoder())
    src.close()


def test_a_looping_mjpeg_replaced_by_a_file_of_the_same_size_ends_at_the_wrap(tmp_path):
    # A raw MJPEG stream loops by being opened anew: another file of the same picture size
    # moved over its name (os.replace) went on playing as if it were the first.
    path = tmp_path / "r3.mjpeg"

    def write(target: Path, levels: list[int]) -> Path:
        with open(target, "wb") as f:
            for v in levels:
                f.write(cv2.imencode(".jpg", np.full((48, 64, 3), v, np.uint8))[1])
        return target

    write(path, [10, 90, 170])
    with open_source(path, live=False, kind="video", loop=True) as src:
        got = [round(float(src.read().image.mean()), -1) for _ in range(4)]
        assert got == [10, 90, 170, 10]  # it loops
        os.replace(write(tmp_path / "other.mjpeg", [250, 250, 250]), path)
        assert [round(float(src.read().image.mean()), -1) for _ in range(2)] == [90, 170]
        assert src.read() is None


def test_a_camera_s_frames_come_out_rgb(monkeypatch):
    # OpenCV hands a camera's pictures over in BGR: sent on as they were, every webcam's red
    # and blue were swapped in the call.
    class Coloured(FakeCapture):
        def retrieve(self):
            img = np.empty((24, 32, 3), np.uint8)
            img[:] = (10, 20, 30)  # B, G, R
            return True, img

    monkeypatch.setattr(sources, "_make_capture", lambda t, a: Coloured(t, a))
    with open_source("0", live=True) as cam:
        assert cam.read().image[5, 5].tolist() == [30, 20, 10]


def test_camera_reads_that_block_a_period_and_fail_are_retried_at_once(monkeypatch):
    # A driver whose failed read blocked for its time-out was then paused a whole period
    # more: a frame slot lost per failed read, twice the wait the sensor asked for.
    stamps: list[float] = []

    class Slow(FlakyCapture):
        def get(self, prop):
            return 10.0 if prop == cv2.CAP_PROP_FPS else super().get(prop)

        def grab(self):
            stamps.append(time.perf_counter())
            return super().grab()

    made: list[FlakyCapture] = []
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: Slow(t, a, log=made))
    cam = CameraSource(device=0, reconnect=False, lost_after_reads=4, lost_after_s=60.0)
    retry_s = cam._retry_s
    assert retry_s == pytest.approx(0.1)
    assert cam.read() is not None
    made[0].frames_left, made[0].grab_s = 0, retry_s  # from now each read blocks, then fails
    stamps.clear()
    with pytest.raises(SourceError, match="4 reads in a row failed"):
        cam.read()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3 and min(gaps) < 1.6 * retry_s, gaps
    cam.close()


def test_a_streaming_camera_whose_number_is_taken_keeps_its_capture(monkeypatch):
    # B streams at 1; A (0) unplugged and another camera took 1: B's open capture, never
    # reconnected, is still B's, and letting it go froze the call for a reconnect.
    monkeypatch.setattr(sources.sys, "platform", "win32")
    made: list[FakeCapture] = []
    monkeypatch.setattr(
        sources, "_make_capture", lambda t, a: FakeCapture(t, a, value=200, log=made)
    )
    cam = CameraSource(device="1")
    cam.read()
    cam.retarget("0", taken=True)
    assert not made[0].released
    assert int(cam.read().image[0, 0, 0]) == 200
    assert len(made) == 1 and cam.reconnects == 0
    cam.close()


@pytest.mark.parametrize("sar", [(100.0, 1.0), (1.0, 100.0)])
def test_a_video_declaring_an_absurd_pixel_aspect_is_not_stretched(tmp_path, monkeypatch, sar):
    # A damaged header's 100:1 sample aspect ratio stretched every frame a hundredfold.
    path = write_video(tmp_path / "v.avi", 2)

    class Damaged(FakeCapture):
        def __init__(self, target, api):
            super().__init__(target, api, frames=2, value=7)

        def get(self, prop):
            props = {cv2.CAP_PROP_SAR_NUM: sar[0], cv2.CAP_PROP_SAR_DEN: sar[1]}
            return props.get(prop, super().get(prop))

    monkeypatch.setattr(sources, "_make_capture", Damaged)
    with VideoFileSource(path=path, live=False) as src:
        assert src.size == (32, 24)
        assert src.read().image.shape == (24, 32, 3)


def test_a_pngs_colour_chunks_are_read_first_of_each_kind_and_only_whole(tmp_path: Path) -> None:
    # libpng takes the first gAMA and passes over one of a size its kind never has (a cHRM
    # cut short): taken, the second gAMA would say linear light of an sRGB picture, and a
    # short cHRM failed later in png_colour_is_srgb.
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    png = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    srgb_gamma, linear = (45455).to_bytes(4, "big"), (100000).to_bytes(4, "big")
    short_chrm = bytes(28)
    png[33:33] = chunk(b"gAMA", srgb_gamma) + chunk(b"gAMA", linear) + chunk(b"cHRM", short_chrm)
    path = tmp_path / "a.png"
    path.write_bytes(png)
    assert sources.read_image_metadata(path).png_colour == ((b"gAMA", srgb_gamma),)


# --------------------------------------------------------------------------- headers and checks


def test_a_size_with_no_width_or_no_height_is_refused() -> None:
    # Either side at 0 is a size nothing can be letterboxed into, not only both.
    for bad in ((0, 480), (640, 0), (-1, 480)):
        with pytest.raises(ValueError, match="positive"):
            sources._check_size(bad)
    assert sources._check_size((640.0, 480)) == (640, 480)  # type: ignore[arg-type]


def test_a_failed_camera_read_is_retried_one_frame_period_later_within_bounds() -> None:
    # A 30 fps camera retried every 50 ms would miss frames it could have had.
    assert sources._retry_period(30.0) == pytest.approx(1 / 30)
    assert sources._retry_period(1000.0) == pytest.approx(0.005)
    assert sources._retry_period(1.0) == pytest.approx(0.1)


def test_a_pixel_aspect_of_zero_height_is_no_aspect_at_all() -> None:
    # A header of 2:0 divided by zero and the file could not be opened.
    cap = SimpleNamespace(get=lambda prop: {cv2.CAP_PROP_SAR_NUM: 2.0}.get(prop, 0.0))
    assert sources._square_pixel_size(cap, (32, 24)) is None


def _jpeg_segments(*segments: tuple[int, bytes], before: bytes = b"") -> bytes:
    body = b"".join(bytes([0xFF, m]) + struct.pack(">H", len(p) + 2) + p for m, p in segments)
    return b"\xff\xd8" + before + body + b"\xff\xda\x00\x02\xff\xd9"


def test_a_jpeg_s_first_exif_is_kept_and_its_profile_joined_in_sequence(tmp_path: Path) -> None:
    first, second = b"Exif\0\0II*\0" + bytes(4), b"Exif\0\0MM\0*" + bytes(4)
    icc = b"ICC_PROFILE\0"
    path = tmp_path / "a.jpg"
    # Profile parts stored out of order, after a marker that has no length (TEM).
    path.write_bytes(
        _jpeg_segments(
            (0xE1, first),
            (0xE1, second),
            (0xE2, icc + b"\x02\x02BB"),
            (0xE2, icc + b"\x01\x02AA"),
            before=b"\xff\x01",
        )
    )
    read = sources.read_image_metadata(path)
    assert read.exif == first[6:]
    assert read.icc == b"AABB"


def test_a_jpeg_s_extended_xmp_without_its_main_packet_is_not_said_to_continue(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.jpg"
    extended = sources._XMP_EXTENDED_JPEG_HEADER + b"<x:xmpmeta/>"
    path.write_bytes(_jpeg_segments((0xE1, extended)))
    assert sources.read_image_metadata(path) == sources.ImageMetadata()


def test_a_webp_s_chunks_after_an_odd_sized_one_are_found(tmp_path: Path) -> None:
    # RIFF pads an odd chunk to even: the EXIF after an odd ICC profile was missed.
    exif, icc = b"II*\0" + bytes(4), b"odd"

    def riff(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)

    body = b"WEBP" + riff(b"VP8X", bytes(10)) + riff(b"ICCP", icc) + riff(b"EXIF", exif)
    (tmp_path / "a.webp").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert sources.read_image_metadata(tmp_path / "a.webp") == sources.ImageMetadata(exif, icc)


def test_an_mp4_that_opens_with_its_media_data_is_read_for_sound(tmp_path: Path) -> None:
    # Older QuickTime files start with mdat (or free / wide / skip), not ftyp.
    hdlr = _box(b"hdlr", bytes(8) + b"soun" + bytes(13))
    moov = _box(b"moov", _box(b"trak", _box(b"mdia", hdlr)))
    for first in (b"mdat", b"free", b"wide", b"skip"):
        (tmp_path / "a.mov").write_bytes(_box(first, bytes(100)) + moov)
        assert video_has_audio(tmp_path / "a.mov") is True, first


def test_a_matroska_subtitle_track_is_no_sound_and_an_odd_field_no_crash(tmp_path: Path) -> None:
    # Track type 17 (subtitles) is above audio's 2; a field of unknown size is damage.
    header = _ebml(0x1A45DFA3, _ebml(0x4282, b"webm"))

    def mkv(*entries: bytes) -> bytes:
        tracks = _ebml(0x1654AE6B, b"".join(_ebml(0xAE, e) for e in entries))
        return header + _ebml(0x18538067, tracks + _ebml(0x1F43B675, bytes(8)))

    video, subtitles = _ebml(0x83, b"\x01"), _ebml(0x83, b"\x11")
    (tmp_path / "subs.mkv").write_bytes(mkv(video, subtitles))
    assert video_has_audio(tmp_path / "subs.mkv") is False
    (tmp_path / "odd.mkv").write_bytes(mkv(video + _ebml(0x536E, b"", unknown_size=True)))
    assert video_has_audio(tmp_path / "odd.mkv") is None


def test_each_os_opens_cameras_with_its_own_capture_api_first(monkeypatch) -> None:
    # CAP_ANY first on Linux would open a camera through GStreamer, slow and without controls.
    for platform, apis in (
        ("linux", [cv2.CAP_V4L2, cv2.CAP_ANY]),
        ("darwin", [cv2.CAP_AVFOUNDATION]),
        ("freebsd14", [cv2.CAP_ANY]),
    ):
        monkeypatch.setattr(sys, "platform", platform)
        assert sources._camera_apis() == apis, platform


def test_a_linux_camera_s_name_is_its_node_s_without_the_line_end(
    tmp_path: Path, monkeypatch
) -> None:
    name = tmp_path / "name"
    monkeypatch.setattr(sources, "Path", lambda text: name)
    name.write_text("Integrated Camera\n")
    assert sources._linux_camera_name(0) == "Integrated Camera"
    name.write_text(" \n")
    assert sources._linux_camera_name(0) is None
    name.unlink()
    assert sources._linux_camera_name(0) is None


def test_closing_a_live_source_wakes_a_read_waiting_for_its_turn(tmp_path: Path) -> None:
    # The engine closes a source from another thread to stop: a read sitting out a 2 s
    # period delivered one more frame after the stop.
    path = write_png(tmp_path / "x.png", np.zeros((8, 12, 3), np.uint8))
    src = open_source(str(path), live=True, fps=0.5)
    assert src.read() is not None
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(src.read()))
    reader.start()
    src.close()
    reader.join(10.0)
    assert not reader.is_alive() and got == [None]


def _tkhd_v1(a: int, d: int) -> bytes:
    # Version 1: 64-bit times, so the matrix sits 12 bytes further in than in version 0.
    matrix = struct.pack(">9i", a << 16, 0, 0, 0, d << 16, 0, 0, 0, 1 << 30)
    return _box(b"tkhd", b"\x01\0\0\x03" + bytes(32) + bytes(16) + matrix + bytes(8))


def test_a_version_1_track_header_s_mirroring_is_read(tmp_path: Path) -> None:
    hdlr = _box(b"hdlr", bytes(8) + b"vide" + bytes(13))
    for (a, d), mirrored in (((-1, 1), True), ((1, 1), False)):
        trak = _box(b"trak", _tkhd_v1(a, d) + _box(b"mdia", hdlr))
        (tmp_path / "a.mp4").write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + _box(b"moov", trak))
        assert sources.video_is_mirrored(tmp_path / "a.mp4") is mirrored, (a, d)


@pytest.mark.parametrize(
    ("yaw", "pitch", "mirrored"),
    [(180.0, 0.0, True), (-180.0, 0.0, True), (180.0, 90.0, False), (90.0, 0.0, False)],
)
def test_a_matroska_projection_is_a_flip_only_at_a_yaw_of_180_either_way(
    yaw: float, pitch: float, mirrored: bool
) -> None:
    # FFmpeg reads any other pose as spherical video and shows it unflipped.
    pose = _ebml(0x7671, b"\0") + _ebml(0x7673, struct.pack(">f", yaw))
    pose += _ebml(0x7674, struct.pack(">f", pitch)) + _ebml(0x7675, struct.pack(">f", 0.0))
    entry = _ebml(0x83, b"\x01") + _ebml(0xE0, _ebml(0x7670, pose))
    tracks = _ebml(0x1654AE6B, _ebml(0xAE, entry))
    data = _ebml(0x1A45DFA3, _ebml(0x4282, b"webm")) + _ebml(0x18538067, tracks)
    assert sources._matroska_is_mirrored(data) is mirrored


def test_a_chrm_within_a_hundredth_of_srgb_s_is_srgb() -> None:
    # Writers round sRGB's primaries differently: 0.3127 stored as 0.3132 is still sRGB.
    def chrm(offset: int) -> tuple[tuple[bytes, bytes]]:
        values = (v + offset for v in sources._SRGB_CHRM)
        return ((b"cHRM", b"".join(v.to_bytes(4, "big") for v in values)),)

    assert sources.png_colour_is_srgb(chrm(500))
    assert sources.png_colour_is_srgb(chrm(-1000))
    assert not sources.png_colour_is_srgb(chrm(1001))


def test_a_camera_s_rate_is_the_one_its_driver_says_over_the_one_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pacing and retries follow what the camera really delivers, not the rate asked for.
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a))
    with open_source("0", live=True, fps=15) as cam:
        assert cam.fps == 30.0 and cam.fps_reported


def test_on_macos_a_missing_camera_among_others_gets_no_permission_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Other cameras open, so access is granted: the hint would send the user the wrong way.
    monkeypatch.setattr(sources.sys, "platform", "darwin")
    monkeypatch.setattr(sources, "_probe_camera", lambda i: i == 0)
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: FakeCapture(t, a, opened=False))
    with pytest.raises(CameraNotFoundError) as info:
        open_source("3", live=True)
    assert "does not exist" in str(info.value) and "Privacy" not in str(info.value)


def test_a_camera_streaming_a_format_opencv_cannot_convert_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenCV hands an H.264-only camera's stream over as one row of bytes, which would
    # otherwise pass for a 1-pixel-high grey picture.
    class OneRow(FakeCapture):
        def retrieve(self) -> tuple[bool, np.ndarray]:
            return True, np.zeros((1, 4096), np.uint8)

    made: list[FakeCapture] = []
    monkeypatch.setattr(sources, "_make_capture", lambda t, a: OneRow(t, a, log=made))
    with pytest.raises(SourceError, match=r"camera 0 delivers frames .*raw 4096-byte buffer"):
        CameraSource(device=0)
    assert made and all(c.released for c in made)


def test_a_camera_lost_on_its_first_failed_read_says_one_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_cameras(monkeypatch, dict(frames=0))
    with pytest.raises(SourceError, match=r"delivers no frames \(1 read in a row failed\)"):
        CameraSource(device=0, lost_after_reads=1)


def test_a_still_image_says_whether_it_is_repeated(tmp_path: Path) -> None:
    # The status line is how a user tells a photo being streamed from one processed once.
    path = write_png(tmp_path / "x.png", np.zeros((8, 12, 3), np.uint8))
    with open_source(path, live=True, fps=25) as src:
        assert src.describe() == "image x.png · 12x8 repeated @ 25 fps"
    with open_source(path, live=False) as src:
        assert src.describe() == "image x.png · 12x8"


def test_a_device_file_is_a_camera_only_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    # Elsewhere cameras have no device file: a character device there (NUL) is no camera.
    assert sources._is_device_file(Path(os.devnull))
    monkeypatch.setattr(sources.sys, "platform", "win32")
    assert source_kind(os.devnull) == "video"


def test_registering_a_kind_again_replaces_its_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plug-in overriding a kind (the built-in camera, say) must get its own factory used.
    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    image = write_png(tmp_path / "still.png", np.zeros((4, 6, 3), np.uint8))
    used: list[str] = []

    def factory(name: str):  # noqa: ANN202
        def make(spec, *, live, size, fps, **options):  # noqa: ANN001, ANN003, ANN202
            used.append(name)
            return ImageSource(path=image, live=live, size=size, fps=fps)

        return make

    sources.register_source("pattern", factory("old"))
    sources.register_source("pattern", factory("new"))
    with open_source("bars", kind="pattern", live=False):
        pass
    assert used == ["new"]


def test_a_path_the_system_cannot_stat_is_a_video_not_a_crash() -> None:
    # A NUL in a pasted path makes os.stat raise ValueError, not OSError.
    assert source_kind("clip\0.mp4") == "video"


def _clip_with_cover(tmp_path: Path, name: str, *, first: bool, tags: Sequence[str] = ()) -> Path:
    """A 64x48 MP4 of 5 pictures with a 32x32 JPEG cover (an attached picture), which FFmpeg
    lists after the video, or (``first``) before it; ``tags``: the video's colour options."""
    import imageio_ffmpeg
    from videos import cover_first_mp4

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    cover, plain, path = tmp_path / "cover.jpg", tmp_path / f"plain_{name}", tmp_path / name
    cv2.imwrite(str(cover), np.full((32, 32, 3), 200, np.uint8))
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
         "-frames:v", "5", "-c:v", "mpeg4", *tags, str(plain)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(plain), "-i", str(cover), "-map", "0", "-map", "1",
         "-c", "copy", "-disposition:v:1", "attached_pic", str(path)],
        check=True,
    )  # fmt: skip
    if first:
        cover_first_mp4(path)
    return path


def test_a_video_whose_cover_comes_first_is_refused_not_read_as_its_cover(tmp_path: Path) -> None:
    # OpenCV decodes the first video stream, and FFmpeg lists a cover stored before the
    # tracks first: a 5-picture clip was read as its 32x32 cover, one frame, without a word.
    last = _clip_with_cover(tmp_path, "last.mp4", first=False)
    with sources.VideoFileSource(path=last, live=False) as src:
        assert src.size == (64, 48)
    first = _clip_with_cover(tmp_path, "first.mp4", first=True)
    with pytest.raises(SourceError, match=r"first video stream is a cover picture.*-map 0:V"):
        sources.VideoFileSource(path=first, live=False)


def test_the_hdr_transfer_is_the_videos_not_a_cover_listed_before_it(tmp_path: Path) -> None:
    # The cover's JPEG line was read for the video's: a PQ clip's transfer went unseen.
    import imageio_ffmpeg

    from engine.remux import hdr_transfer

    pq = [
        "-c:v",
        "libx264",
        "-x264-params",
        "colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc",
    ]
    path = _clip_with_cover(tmp_path, "pq.mp4", first=True, tags=pq)
    assert hdr_transfer(path, ffmpeg=imageio_ffmpeg.get_ffmpeg_exe()) == "PQ"


@pytest.mark.parametrize("lost", [0, 3])
def test_a_video_whose_first_pictures_are_damaged_starts_at_the_first_decodable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lost: int
) -> None:
    # A run of damaged pictures at the start is read past as one further on (a second bad
    # read failed the open), and the time of the first decoded is where the output's sound
    # starts; a stream whose first picture is simply late (0.4 s in) has lost nothing.
    path = write_video(tmp_path / "v.avi", 3)

    class LateAndDamaged(_DamagedPictures):
        end, damaged = 8, range(lost)

        def msec(self, shown: int) -> float:
            return 400.0 + 40.0 * shown

    monkeypatch.setattr(sources, "_make_capture", LateAndDamaged)
    with VideoFileSource(path=path, live=False) as src:
        first = 0.4 + 0.04 * lost
        assert src.first_time_s == pytest.approx(first)
        assert src.gaps == ([(0, pytest.approx(first))] if lost else [])
        assert [int(f.image[0, 0, 0]) // 10 for f in src] == list(range(lost, 8))


def test_a_cover_with_no_video_after_it_is_not_said_to_come_first(tmp_path: Path) -> None:
    # A song's cover alone: "copy the file without it first" would leave no picture at all.
    import imageio_ffmpeg

    from engine.remux import cover_comes_first

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    cover, song = tmp_path / "cover.jpg", tmp_path / "song.mp4"
    cv2.imwrite(str(cover), np.full((32, 32, 3), 200, np.uint8))
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(cover), "-f", "lavfi", "-i", "sine=duration=0.2",
         "-map", "0", "-map", "1", "-c:v", "copy", "-c:a", "aac", "-disposition:v:0",
         "attached_pic", str(song)],
        check=True,
    )  # fmt: skip
    assert (
        "(attached pic)"
        in subprocess.run(
            [ffmpeg, "-hide_banner", "-i", str(song)], capture_output=True, text=True
        ).stderr
    )
    assert not cover_comes_first(song, ffmpeg=ffmpeg)
