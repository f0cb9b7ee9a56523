"""HEIF photos (an iPhone's .heic): decoded by FFmpeg, their metadata read from the boxes, and
what `process` makes of them. The photos are written here with pillow-heif (libheif, x265)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from videos import (
    DATE_TAKEN,
    ORIENTATION,
    exif_block,
    exif_tags,
    hdr_picture,
    heic_photo,
    icc_profile,
    xmp_packet,
)

import engine.heif
import main as cli
from engine.heif import HeifError, decode_heif, heif_metadata, is_heif
from engine.sources import SourceError, read_image, read_image_metadata

pytest.importorskip("pillow_heif")


def _bundled() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def photo(h: int = 150, w: int = 200) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB: smooth ramps, with a pure red square at the top left corner
    and a green one at the top right (which way up it is shows)."""
    y, x = np.mgrid[:h, :w]
    rgb = np.stack([x * 200 // w + 20, y * 200 // h + 20, np.full_like(x, 90)], -1)
    rgb = rgb.astype(np.uint8)
    rgb[8:40, 8:40] = (255, 0, 0)
    rgb[8:40, -40:-8] = (0, 255, 0)
    return rgb


def _off(got: np.ndarray, want: np.ndarray) -> float:
    """Mean error in levels (4:2:0 colour and HEVC's loss leave a few)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got.astype(int) - want).mean())


def test_is_heif_by_the_brands_of_its_first_box() -> None:
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        body = major + b"\0\0\0\0" + b"".join(compatible)
        return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\0" * 32

    assert is_heif(ftyp(b"heic", b"mif1", b"heic"))
    assert is_heif(ftyp(b"mif1", b"heic"))  # Samsung's: the generic brand first
    assert is_heif(ftyp(b"heix", b"mif1"))  # 10-bit, a camera's HIF
    assert is_heif(ftyp(b"mif1", b"miaf"))
    assert not is_heif(ftyp(b"avif", b"mif1", b"miaf"))  # AVIF: OpenCV reads it
    assert not is_heif(ftyp(b"mif1", b"avif"))
    assert not is_heif(ftyp(b"isom", b"mp41"))  # a video
    assert not is_heif(ftyp(b"heic")[:12])  # too short to tell
    assert not is_heif(b"\xff\xd8\xff\xe0" + b"\0" * 60)


@pytest.mark.parametrize("tile", [0, 64])
def test_read_image_decodes_a_heic_photo_tiled_or_not(tmp_path: Path, tile: int) -> None:
    # OpenCV has no HEIF decoder: "cannot open video file ...: not a video" was all it said.
    # Every iPhone photo is tiled (512 pixels): FFmpeg puts the tiles together.
    rgb = photo()
    heic_photo(tmp_path / "IMG_0001.HEIC", rgb, tile=tile)
    got = read_image(tmp_path / "IMG_0001.HEIC")
    assert got.dtype == np.uint8 and got.flags.writeable
    assert _off(got, rgb) < 3
    assert np.abs(got[24, 24].astype(int) - (255, 0, 0)).max() <= 4  # RGB, not BGR
    assert np.abs(got[24, -24].astype(int) - (0, 255, 0)).max() <= 4


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (3, 2), (8, 1)])
def test_a_heic_photo_is_turned_upright(tmp_path: Path, orientation: int, turns: int) -> None:
    # A phone held upright stores the picture on its side with a rotation property.
    rgb = photo(128, 192)
    heic_photo(tmp_path / "p.heic", rgb, tile=64, exif=exif_block(orientation=orientation))
    want = np.rot90(rgb, turns)
    assert _off(read_image(tmp_path / "p.heic"), want) < 3
    h, w = want.shape[:2]
    assert heif_metadata(tmp_path / "p.heic").size == (w, h)


@pytest.mark.parametrize("tile", [0, 64])
def test_a_heic_photos_exif_xmp_and_colour_profile_are_read(tmp_path: Path, tile: int) -> None:
    exif, icc, xmp = exif_block(orientation=6), icc_profile(size=3000), xmp_packet()
    heic_photo(tmp_path / "p.heic", photo(), tile=tile, exif=exif, icc=icc, xmp=xmp)
    meta = read_image_metadata(tmp_path / "p.heic")
    tags = exif_tags(meta.exif)
    assert tags[DATE_TAKEN] == b"2021:07:04 10:11:12" and tags[ORIENTATION] == 6
    assert meta.icc == icc
    assert meta.xmp == xmp
    # A photo without them has none.
    heic_photo(tmp_path / "bare.heic", photo(), tile=tile)
    assert not read_image_metadata(tmp_path / "bare.heic")


def test_a_tiled_photos_profile_is_found_on_its_tiles_too(tmp_path: Path) -> None:
    # Some writers give the colour property to the tiles only, not to the grid they make up.
    icc = icc_profile(size=800)
    heic_photo(tmp_path / "p.heic", photo(), tile=64, icc=icc)
    data = bytearray((tmp_path / "p.heic").read_bytes())
    at = data.index(b"ipma") + 4
    assert data[at] == 0 and data[at + 3] & 1 == 0  # version 0, one-byte property numbers
    assert int.from_bytes(data[at + 8 : at + 10], "big") == 1  # the grid's entry comes first
    count = data[at + 10]
    numbers = data[at + 11 : at + 11 + count]
    colr = [i for i, n in enumerate(numbers) if n & 0x7F == 3]
    assert len(colr) == 1  # libheif: ispe, hvcC, colr, ...: the grid's third association
    first_other = next(n & 0x7F for n in numbers if n & 0x7F != 3)
    data[at + 11 + colr[0]] = (numbers[colr[0]] & 0x80) | first_other
    (tmp_path / "tiles.heic").write_bytes(bytes(data))
    assert heif_metadata(tmp_path / "tiles.heic").icc == icc


def test_heif_metadata_of_damaged_or_other_files_is_empty(tmp_path: Path) -> None:
    heic_photo(tmp_path / "p.heic", photo(), exif=exif_block(), icc=icc_profile(size=500))
    data = (tmp_path / "p.heic").read_bytes()
    for n in range(0, len(data), 37):  # every cut through the boxes: nothing raises
        (tmp_path / "cut.heic").write_bytes(data[:n])
        assert isinstance(heif_metadata(tmp_path / "cut.heic"), engine.heif.HeifMetadata)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    empty = engine.heif.HeifMetadata(None, None, None)
    assert heif_metadata(tmp_path / "a.png") == empty
    assert heif_metadata(tmp_path / "none.heic") == empty


def _hdr_heic(path: Path, transfer: int, name: str, tile: int = 0) -> np.ndarray:
    """:func:`videos.hdr_picture` coded in ``name`` (PQ or HLG), SDR's white at HDR's
    reference white, as a 10-bit BT.2020 HEIC; returns the SDR picture."""
    sdr = hdr_picture()
    to_hdr = (
        "zscale=rin=full:tin=bt709:pin=bt709:t=linear:p=bt709:npl=203,format=gbrpf32le,"
        f"zscale=p=bt2020:t={name}:npl=203,format=rgb48le"
    )
    done = subprocess.run(
        [_bundled(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "128x64",
         "-i", "-", "-vf", to_hdr, "-f", "rawvideo", "-"],
        input=sdr.tobytes(), capture_output=True, check=True,
    )  # fmt: skip
    hdr = np.frombuffer(done.stdout, "<u2").reshape(64, 128, 3).copy()
    heic_photo(path, hdr, hdr_transfer=transfer, tile=tile)
    return sdr


def _patch_errors(got: np.ndarray, want: np.ndarray) -> tuple[int, int]:
    """The largest errors at the middles of the grey ramp's steps and of the colour patches."""
    greys = np.abs(got[8:24, 2:128:8].astype(int) - want[8:24, 2:128:8]).max()
    patches = np.abs(got[40:56, 8:128:32].astype(int) - want[40:56, 8:128:32]).max()
    return int(greys), int(patches)


@pytest.mark.parametrize(
    ("transfer", "name", "tile"),
    [(16, "smpte2084", 0), (18, "arib-std-b67", 0), (16, "smpte2084", 64)],
)
def test_an_hdr_heic_is_tone_mapped_and_said_where_it_cannot_be(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    transfer: int,
    name: str,
    tile: int,
) -> None:
    # A camera's 10-bit HIF (PQ or HLG): read as it is, its colours are far off. A tiled one
    # failed ("Error opening output files"): FFmpeg takes no -vf after the graph it puts the
    # tiles together in.
    sdr = _hdr_heic(tmp_path / "hdr.hif", transfer, name, tile)
    greys, patches = _patch_errors(read_image(tmp_path / "hdr.hif"), sdr)
    assert greys <= 2 and patches <= 26, (greys, patches)
    monkeypatch.setattr(engine.heif, "tone_map_problem", lambda ffmpeg: "it has no zscale")
    with caplog.at_level(logging.WARNING):
        as_is = read_image(tmp_path / "hdr.hif")
    assert "it is HDR (" in caplog.text and "its colours off: it has no zscale" in caplog.text
    assert _patch_errors(as_is, sdr)[1] >= 50


def _fake_ffmpeg(path: Path, script: str) -> str:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


posix_only = pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpegs are shell scripts")


@posix_only
def test_an_ffmpeg_that_cannot_read_heif_is_passed_over_for_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ubuntu 22.04's FFmpeg 4.4 on the PATH reads no HEIF; imageio-ffmpeg's does.
    old = _fake_ffmpeg(tmp_path / "ffmpeg", 'echo "moov atom not found" >&2; exit 1\n')
    heic_photo(tmp_path / "p.heic", photo(), tile=64)
    monkeypatch.delenv("SHARPCAM_FFMPEG", raising=False)
    monkeypatch.setattr(engine.heif, "find_ffmpeg", lambda: old)
    assert engine.heif._ffmpegs(None) == [old, _bundled()]
    assert _off(read_image(tmp_path / "p.heic"), photo()) < 3
    # Named by the user, it is the only one tried; its reason reaches the message.
    monkeypatch.setenv("SHARPCAM_FFMPEG", old)
    with pytest.raises(SourceError) as caught:
        read_image(tmp_path / "p.heic")
    assert str(caught.value) == (
        f"cannot read image file {tmp_path / 'p.heic'}: an HEIF image, which SharpCam decodes "
        f"with FFmpeg 7.1 or newer: {old} could not (moov atom not found)"
    )


@posix_only
@pytest.mark.parametrize(
    ("h", "w", "tile"), [(151, 201, 0), (65, 129, 64), (3, 5, 0), (150, 201, 0), (151, 200, 0)]
)
def test_an_odd_sized_heic_keeps_its_size(tmp_path: Path, h: int, w: int, tile: int) -> None:
    # An edited or cropped photo: FFmpeg crops 4:2:0 pictures to even sizes. An untiled one
    # lost its last row and column without a word, a tiled one was refused.
    rgb = photo(h, w) if h > 40 else np.full((h, w, 3), (40, 120, 200), np.uint8)
    heic_photo(tmp_path / "p.heic", rgb, tile=tile)
    meta = heif_metadata(tmp_path / "p.heic")
    assert meta.size == (w, h)
    # Untiled, libheif codes it even and crops it (clap): what OpenCV would not apply to an
    # AVIF either (160x96 where the file said 100x60), which then goes to FFmpeg.
    assert meta.transformed == (tile == 0)
    got = read_image(tmp_path / "p.heic")
    assert got.shape == (h, w, 3)
    assert _off(got, rgb) < 3 and _off(got[-1:, -1:], rgb[-1:, -1:]) < 8  # the corner copied


def test_the_files_own_picture_is_read_not_the_largest(tmp_path: Path) -> None:
    # Left to itself, FFmpeg decodes a second image 5 megapixels larger than the photo: it
    # came back in place of the photo, without a word where the photo was cropped.
    import pillow_heif

    rgb, big = photo(151, 201), np.zeros((2400, 2400, 3), np.uint8)
    heif = pillow_heif.HeifFile()
    for a in (rgb, big):
        heif.add_frombytes("RGB", (a.shape[1], a.shape[0]), a.tobytes())
    heif.save(str(tmp_path / "two.heic"), quality=95, primary_index=0)
    assert _off(read_image(tmp_path / "two.heic"), rgb) < 3
    # An HDR primary after an SDR picture: the HDR one's line decides the tone mapping.
    sdr = _hdr_heic(tmp_path / "hdr.hif", 16, "smpte2084")
    import pillow_heif as ph

    hdr = ph.open_heif(str(tmp_path / "hdr.hif"), convert_hdr_to_8bit=False)
    pair = ph.HeifFile()
    pair.add_frombytes("RGB", (128, 64), sdr.tobytes())
    pair.add_frombytes(hdr.mode, hdr.size, bytes(hdr.data), stride=hdr.stride)
    pair.save(str(tmp_path / "pair.hif"), quality=-1, primary_index=1, color_primaries=9,
              transfer_characteristics=16, matrix_coefficients=9, full_range_flag=0)  # fmt: skip
    greys, patches = _patch_errors(read_image(tmp_path / "pair.hif"), sdr)
    assert greys <= 2 and patches <= 26, (greys, patches)


def test_a_name_with_a_colon_is_a_file_not_a_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "IMG:1.heic" was "Protocol not found" to FFmpeg.
    heic_photo(tmp_path / "IMG:1.heic", photo(), tile=64)
    monkeypatch.chdir(tmp_path)
    assert _off(read_image("IMG:1.heic"), photo()) < 3


def test_a_picture_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    # An FFmpeg before 7.1 gives one tile of a tiled picture, and said nothing of it.
    tile = _fake_ffmpeg(
        tmp_path / "ffmpeg",
        'case "$*" in *pipe:1*) printf "P6\\n64 64\\n255\\n"; head -c 12288 /dev/zero;; esac\n',
    )
    heic_photo(tmp_path / "p.heic", photo(), tile=64)
    with pytest.raises(
        HeifError, match=r"could not \(it decoded 64x64 pixels where the file says 200x150\)"
    ):
        decode_heif(tmp_path / "p.heic", ffmpeg=tile)
    # Where the file does not say its size, it is taken as it comes.
    assert decode_heif(tmp_path / "p.heic", ffmpeg=_bundled())[0].shape == (150, 200, 3)


def test_without_ffmpeg_or_with_a_damaged_file_the_error_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heic_photo(tmp_path / "p.heic", photo(), tile=64)
    monkeypatch.setattr(engine.heif, "_ffmpegs", lambda ffmpeg: [])
    with pytest.raises(SourceError, match=r"none was found \(pip install imageio-ffmpeg"):
        read_image(tmp_path / "p.heic")
    monkeypatch.undo()
    data = (tmp_path / "p.heic").read_bytes()
    (tmp_path / "cut.heic").write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceError) as caught:
        read_image(tmp_path / "cut.heic")
    text = str(caught.value)
    assert text.startswith(f"cannot read image file {tmp_path / 'cut.heic'}: an HEIF image")
    # FFmpeg's telling line, not its last one ("Terminating thread with return code
    # -1145393733"), nor the one that blamed the output ("Error opening output files").
    reason = text.partition(" could not (")[2]
    assert reason and not reason.startswith(("Terminating", "Error opening", "[")), text


def test_heif_is_known_by_content_not_by_name(tmp_path: Path) -> None:
    # A transfer tool's rename: a HEIC named .jpg, a JPEG named .heic.
    heic_photo(tmp_path / "really_heic.jpg", photo(), tile=64)
    assert _off(read_image(tmp_path / "really_heic.jpg"), photo()) < 3
    (tmp_path / "really_jpeg.heic").write_bytes(cv2.imencode(".jpg", photo()[..., ::-1])[1])
    assert _off(read_image(tmp_path / "really_jpeg.heic"), photo()) < 3


# --- process ------------------------------------------------------------------------------


def test_process_a_heic_photo_to_jpeg_keeps_its_date_place_and_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    icc = icc_profile(size=3000)
    rgb = photo(128, 192)
    heic_photo(tmp_path / "IMG_0001.HEIC", rgb, tile=64, exif=exif_block(orientation=6), icc=icc)
    out = tmp_path / "sharp.jpg"
    code = cli.main(["process", str(tmp_path / "IMG_0001.HEIC"), str(out), "--backend", "unsharp"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "will be without" not in err, err
    got = cv2.imread(str(out))
    assert got.shape == (192, 128, 3)  # upright: portrait
    meta = read_image_metadata(out)
    tags = exif_tags(meta.exif)
    assert tags[DATE_TAKEN] == b"2021:07:04 10:11:12"
    assert tags[ORIENTATION] == 1  # the pixels are upright: a viewer must not turn them again
    assert meta.icc == icc


def test_process_refuses_a_heic_output_before_the_model_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), photo())
    code = cli.main(
        ["process", str(tmp_path / "a.png"), str(tmp_path / "b.heic"), "--backend", "unsharp"]
    )
    assert code == 2
    assert capsys.readouterr().err.endswith(
        f"output {tmp_path / 'b.heic'}: SharpCam reads .heic photos but cannot write them; "
        "give .jpg (it keeps the date, place and colour profile) or .png\n"
    )
    assert not (tmp_path / "b.heic").exists()
    # Nor is it offered where an image output is asked for.
    code = cli.main(
        ["process", str(tmp_path / "a.png"), str(tmp_path / "b.txt"), "--backend", "unsharp"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "must be an image file (.avif, .bmp, " in err
    assert ".heic" not in err and ".pbm" not in err, err


def test_a_folder_run_writes_a_heic_photos_result_as_jpeg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    heic_photo(folder / "IMG_0001.HEIC", photo(), tile=64, exif=exif_block(orientation=1))
    cv2.imwrite(str(folder / "b.png"), photo()[..., ::-1])
    out = tmp_path / "out"
    code = cli.main(["process", str(folder), str(out), "--backend", "unsharp"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "lose their" not in err, err  # the .jpg keeps the EXIF data
    assert sorted(p.name for p in out.iterdir()) == ["IMG_0001.jpg", "b.png"]
    assert cv2.imread(str(out / "IMG_0001.jpg")).shape == (150, 200, 3)
    assert exif_tags(read_image_metadata(out / "IMG_0001.jpg").exif)[DATE_TAKEN]
    # Beside a JPEG of the same name, both results would be IMG_0001.jpg: said before the run.
    cv2.imwrite(str(folder / "IMG_0001.jpg"), photo()[..., ::-1])
    code = cli.main(["process", str(folder), str(tmp_path / "out2"), "--backend", "unsharp"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.endswith(
        f"IMG_0001.HEIC and IMG_0001.jpg would both be written to "
        f"{tmp_path / 'out2' / 'IMG_0001.jpg'}: an HEIF photo's result is a .jpg; rename one "
        "of them\n"
    ), err
    assert not (tmp_path / "out2").exists()
    # A second run into the first one's folder: its .jpg is an output already there.
    folder.joinpath("IMG_0001.jpg").unlink()
    folder.joinpath("b.png").unlink()
    code = cli.main(["process", str(folder), str(out), "--backend", "unsharp"])
    assert code == 2
    assert f"folder {out} already holds IMG_0001.jpg, which this run" in capsys.readouterr().err


def test_heif_photos_need_no_pillow_heif_at_run_time() -> None:
    # pillow-heif only writes the tests' photos: the engine must not import it.
    code = (
        "import sys; sys.modules['pillow_heif'] = None; sys.modules['PIL'] = None\n"
        "import engine.heif, engine.sources, engine.sinks\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# --- AVIF ---------------------------------------------------------------------------------


def _avif(path: Path, rgb: np.ndarray, **options: object) -> None:
    """Write ``rgb`` as an AVIF with Pillow (libavif): an EXIF orientation becomes the
    picture's rotation or mirror property, as a phone writes it."""
    from PIL import Image, features

    if not features.check("avif"):
        pytest.fail("this Pillow writes no AVIF (11.2 or newer does): pip install -U pillow")
    Image.fromarray(rgb).save(path, quality=95, **options)  # type: ignore[arg-type]


def test_a_turned_avif_is_read_upright_with_its_exif_xmp_and_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenCV applies no rotation property: a phone's portrait AVIF came out on its side. And
    # its EXIF data, XMP data and profile were dropped without a note.
    rgb = photo(128, 192)
    icc, xmp = icc_profile(size=3000), xmp_packet()
    _avif(tmp_path / "p.avif", rgb, exif=exif_block(orientation=6), icc_profile=icc, xmp=xmp)
    assert cv2.imread(str(tmp_path / "p.avif")).shape == (128, 192, 3)  # why: on its side
    assert heif_metadata(tmp_path / "p.avif").transformed
    assert _off(read_image(tmp_path / "p.avif"), np.rot90(rgb, -1)) < 3
    meta = read_image_metadata(tmp_path / "p.avif")
    assert exif_tags(meta.exif)[DATE_TAKEN] == b"2021:07:04 10:11:12"
    assert meta.icc == icc and meta.xmp == xmp
    # An AVIF that needs no turning stays with OpenCV; one that does, without an FFmpeg that
    # reads it, is read as it is, and said so.
    _avif(tmp_path / "plain.avif", rgb)
    assert not heif_metadata(tmp_path / "plain.avif").transformed
    monkeypatch.setattr(engine.heif, "_ffmpegs", lambda ffmpeg: [])
    assert _off(read_image(tmp_path / "plain.avif"), rgb) < 3
    with caplog.at_level(logging.WARNING):
        assert read_image(tmp_path / "p.avif").shape == (128, 192, 3)
    assert "p.avif: read as it is (not cropped and turned as it says): an HEIF image" in caplog.text


def test_an_hdr_avif_is_tone_mapped(tmp_path: Path) -> None:
    # OpenCV gives its PQ code values as they are: greys and colours ~100 levels off or more.
    sdr = hdr_picture()
    to_hdr = (
        "zscale=rin=full:tin=bt709:pin=bt709:t=linear:p=bt709:npl=203,format=gbrpf32le,"
        "zscale=p=bt2020:t=smpte2084:m=bt2020nc:r=tv:npl=203,format=yuv444p10le"
    )
    subprocess.run(
        [_bundled(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "128x64",
         "-i", "-", "-vf", to_hdr, "-frames:v", "1", "-c:v", "libaom-av1", "-still-picture", "1",
         "-crf", "10", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
         "-colorspace", "bt2020nc", "-color_range", "tv", str(tmp_path / "hdr.avif")],
        input=sdr.tobytes(), check=True,
    )  # fmt: skip
    assert heif_metadata(tmp_path / "hdr.avif").transfer == 16
    as_is = cv2.imread(str(tmp_path / "hdr.avif"))[..., ::-1]
    assert min(_patch_errors(as_is, sdr)) >= 50
    greys, patches = _patch_errors(read_image(tmp_path / "hdr.avif"), sdr)
    assert greys <= 2 and patches <= 26, (greys, patches)


def test_a_link_to_a_heic_in_the_output_folder_is_no_clash(tmp_path: Path) -> None:
    # The link check took the target's name for a result's (IMG_1.HEIC as IMG_1.jpg) and
    # refused a run that writes nothing over it.
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    heic_photo(tmp_path / "in" / "IMG_1.HEIC", photo(), tile=64)
    heic_photo(tmp_path / "out" / "IMG_1.HEIC", photo(), tile=64)
    (tmp_path / "in" / "old.heic").symlink_to(tmp_path / "out" / "IMG_1.HEIC")
    code = cli.main(
        ["process", str(tmp_path / "in"), str(tmp_path / "out"), "--backend", "unsharp"]
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "IMG_1.HEIC", "IMG_1.jpg", "old.jpg"
    ]  # fmt: skip


@pytest.mark.parametrize("bits", [10, 12])
def test_a_deep_avif_is_read_at_its_levels(tmp_path: Path, bits: int) -> None:
    # OpenCV gives a 10- or 12-bit AVIF's levels as they are in 16 bits: a mid grey read as 2.
    grey = np.full((64, 96, 3), 128, np.uint8)
    fmt = "yuv420p10le" if bits == 10 else "yuv420p12le"
    subprocess.run(
        [_bundled(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64", "-i", "-",
         "-frames:v", "1", "-pix_fmt", fmt, "-c:v", "libaom-av1", "-still-picture", "1",
         "-crf", "10", str(tmp_path / "deep.avif")],
        input=grey.tobytes(), check=True,
    )  # fmt: skip
    assert heif_metadata(tmp_path / "deep.avif").bits == bits
    assert _off(read_image(tmp_path / "deep.avif"), grey) < 3


def test_process_says_what_a_deep_or_transparent_heif_loses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The engine is 8-bit RGB: a camera's 10-bit HIF and a transparent HEIC lost their depth
    # and alpha without the note a 16-bit or transparent PNG gets (OpenCV decodes no HEIF).
    import pillow_heif

    _hdr_heic(tmp_path / "deep.hif", 16, "smpte2084")
    rgba = np.zeros((64, 96, 4), np.uint8)
    rgba[..., 3] = 128
    heif = pillow_heif.from_bytes(mode="RGBA", size=(96, 64), data=rgba.tobytes())
    heif.save(str(tmp_path / "clear.heic"), quality=90)
    heic_photo(tmp_path / "plain.heic", photo())
    for name, said in (("deep.hif", "the 10-bit depth"), ("clear.heic", "the alpha channel")):
        out = tmp_path / f"{name}.png"
        assert cli.main(["process", str(tmp_path / name), str(out), "--backend", "unsharp"]) == 0
        assert (
            f"note: {out} will be 8-bit RGB, without {said} of {name}\n" in capsys.readouterr().err
        )
    out = tmp_path / "plain.png"
    assert (
        cli.main(["process", str(tmp_path / "plain.heic"), str(out), "--backend", "unsharp"]) == 0
    )
    assert "8-bit RGB" not in capsys.readouterr().err


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def _full_box(kind: bytes, payload: bytes, version: int = 0) -> bytes:
    return _box(kind, bytes([version, 0, 0, 0]) + payload)


def test_items_of_empty_extents_are_read_in_bounded_time(tmp_path: Path) -> None:
    # 12 KB: 2,000 items of 65,535 extents, every size 0, so no extent read a byte. The
    # parser held ~131 M of them (a MemoryError after 45 s, or the machine's memory).
    items = b"".join(
        (i + 1).to_bytes(2, "big") + (0).to_bytes(2, "big") + (0xFFFF).to_bytes(2, "big")
        for i in range(2000)
    )
    meta = _full_box(
        b"meta",
        _full_box(b"hdlr", bytes(4) + b"pict" + bytes(13))
        + _full_box(b"pitm", (1).to_bytes(2, "big"))
        + _full_box(b"iinf", (0).to_bytes(2, "big"))
        + _full_box(b"iloc", bytes([0, 0]) + (2000).to_bytes(2, "big") + items),
    )
    path = tmp_path / "iloc.heic"
    path.write_bytes(_box(b"ftyp", b"heic" + bytes(4) + b"mif1heic") + meta)
    assert len(path.read_bytes()) < 13_000
    found = engine.heif._locations(
        path.read_bytes(), path.read_bytes().index(b"iloc") + 4
    )  # the box's payload
    assert sum(len(parts) for parts in found.values()) <= 2000
    assert isinstance(heif_metadata(path), engine.heif.HeifMetadata)


def test_a_short_pixi_loses_only_the_depth(tmp_path: Path) -> None:
    # Its length was tested with another property's bounds: a pixi of 5 bytes or less raised
    # inside, and the photo's EXIF, profile and XMP were lost with it, without a word.
    heic_photo(
        tmp_path / "p.heic", photo(), exif=exif_block(), icc=icc_profile(size=500),
        xmp=xmp_packet(),
    )  # fmt: skip
    data = bytearray((tmp_path / "p.heic").read_bytes())
    p = data.index(b"pixi") - 4
    plen = int.from_bytes(data[p : p + 4], "big")
    assert plen == 16
    # The property before it (in ipco) takes the 3 bytes the pixi loses: the others keep
    # their places and numbers.
    c = data.index(b"ipco") + 4
    while c + int.from_bytes(data[c : c + 4], "big") != p:
        c += int.from_bytes(data[c : c + 4], "big")
    clen = int.from_bytes(data[c : c + 4], "big")
    before = (clen + 3).to_bytes(4, "big") + data[c + 4 : c + clen] + bytes(3)
    pixi = (13).to_bytes(4, "big") + b"pixi" + bytes(4) + b"\x03"  # no depths: cut off
    data[c : p + plen] = before + pixi
    (tmp_path / "short.heic").write_bytes(bytes(data))
    whole, short = heif_metadata(tmp_path / "p.heic"), heif_metadata(tmp_path / "short.heic")
    assert whole.exif and whole.icc and whole.xmp
    assert (short.exif, short.icc, short.xmp) == (whole.exif, whole.icc, whole.xmp)


def test_a_deep_avif_is_read_at_its_levels_whatever_the_order_of_its_properties(
    tmp_path: Path,
) -> None:
    # A short property checked last (an av1C without config OBUs) hid a valid pixi: a 10-bit
    # AVIF read as 16-bit levels, nearly black.
    grey = np.full((48, 64, 3), 128, np.uint8)
    avif = tmp_path / "deep.avif"
    subprocess.run(
        [_bundled(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-i", "-",
         "-frames:v", "1", "-pix_fmt", "yuv420p10le", "-c:v", "libaom-av1", "-still-picture", "1",
         "-crf", "10", str(avif)],
        input=grey.tobytes(), check=True,
    )  # fmt: skip
    data = bytearray(avif.read_bytes())
    i = data.index(b"ipma") + 4 + 4 + 4 + 2
    assert data[i] == 4 and bytes(data[i + 1 : i + 5]) == bytes([0x01, 0x02, 0x83, 0x04])
    data[i + 1 : i + 5] = bytes([0x01, 0x02, 0x04, 0x83])  # ispe, pixi, colr, av1C
    reordered = tmp_path / "order.avif"
    reordered.write_bytes(bytes(data))
    assert heif_metadata(reordered).bits == 10
    assert _off(read_image(reordered), grey) < 3


def _metadata_file(
    path: Path, exif: bytes, *, iinf_version: int = 0, index_size: int = 0, spare: int = 0
) -> Path:
    """An HEIC of boxes alone whose EXIF item (item 2, describing item 1) lies in the meta
    box's ``idat`` (construction method 1), read through an ``iloc`` of version 1 with
    ``index_size``-byte extent indexes; its extent claims ``spare`` bytes more than ``idat``
    holds."""
    infe = b"".join(
        _full_box(b"infe", i.to_bytes(2, "big") + bytes(2) + kind + b"\0", version=2)
        for i, kind in [(1, b"hvc1"), (2, b"Exif")]
    )
    data = bytes(4) + exif  # the offset to the TIFF header, then the header
    extent = bytes(index_size) + (0).to_bytes(4, "big") + (len(data) + spare).to_bytes(4, "big")
    iloc = (
        bytes([0x44, index_size])  # 4-byte offsets and lengths, no base offset
        + (1).to_bytes(2, "big")  # one item
        + (2).to_bytes(2, "big") + (1).to_bytes(2, "big")  # item 2, construction method 1
        + bytes(2) + (1).to_bytes(2, "big") + extent  # data reference 0, one extent
    )  # fmt: skip
    meta = _full_box(
        b"meta",
        _full_box(b"hdlr", bytes(4) + b"pict" + bytes(13))
        + _full_box(b"pitm", (1).to_bytes(2, "big"))
        + _full_box(
            b"iinf", (2).to_bytes(2 if iinf_version == 0 else 4, "big") + infe, iinf_version
        )
        + _full_box(b"iloc", iloc, version=1)
        + _full_box(b"iref", _box(b"cdsc", (2).to_bytes(2, "big") + (1).to_bytes(2, "big") * 2))
        + _box(b"idat", data),
    )
    path.write_bytes(_box(b"ftyp", b"heic" + bytes(4) + b"mif1heic") + meta)
    return path


@pytest.mark.parametrize(("iinf_version", "index_size"), [(0, 0), (1, 0), (0, 4)])
def test_exif_kept_in_the_meta_box_is_read(
    tmp_path: Path, iinf_version: int, index_size: int
) -> None:
    # Some writers keep a small EXIF block in the meta box itself (idat), not among the
    # pictures; a version 1 iinf counts its items in 4 bytes, a version 1 iloc may number its
    # extents: the photo's date and camera were lost from the output without a word.
    exif = exif_block()
    path = _metadata_file(
        tmp_path / "p.heic", exif, iinf_version=iinf_version, index_size=index_size
    )
    got = heif_metadata(path).exif
    assert got == exif and exif_tags(got)[DATE_TAKEN] == b"2021:07:04 10:11:12"
    # An extent that runs past the idat is damage: no EXIF rather than a piece of one.
    assert heif_metadata(_metadata_file(tmp_path / "cut.heic", exif, spare=10)).exif is None


def _xmp_file(path: Path, stored: bytes, encoding: bytes) -> Path:
    """An HEIC of boxes alone whose XMP item (item 2, a ``mime`` item of content type
    ``application/rdf+xml`` and content encoding ``encoding``, describing item 1) holds
    ``stored``, in the meta box's ``idat``."""
    # Its type, an empty name, its content type and its content encoding.
    mime = b"mime\0application/rdf+xml\0" + encoding + b"\0"
    infe = _full_box(b"infe", (1).to_bytes(2, "big") + bytes(2) + b"hvc1\0", version=2)
    infe += _full_box(b"infe", (2).to_bytes(2, "big") + bytes(2) + mime, version=2)
    iloc = (
        bytes([0x44, 0])  # 4-byte offsets and lengths, no base offset
        + (1).to_bytes(2, "big")  # one item
        + (2).to_bytes(2, "big") + (1).to_bytes(2, "big")  # item 2, construction method 1
        + bytes(2) + (1).to_bytes(2, "big")  # data reference 0, one extent
        + (0).to_bytes(4, "big") + len(stored).to_bytes(4, "big")
    )  # fmt: skip
    meta = _full_box(
        b"meta",
        _full_box(b"hdlr", bytes(4) + b"pict" + bytes(13))
        + _full_box(b"pitm", (1).to_bytes(2, "big"))
        + _full_box(b"iinf", (2).to_bytes(2, "big") + infe)
        + _full_box(b"iloc", iloc, version=1)
        + _full_box(b"iref", _box(b"cdsc", (2).to_bytes(2, "big") + (1).to_bytes(2, "big") * 2))
        + _box(b"idat", stored),
    )
    path.write_bytes(_box(b"ftyp", b"heic" + bytes(4) + b"mif1heic") + meta)
    return path


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
def test_a_compressed_xmp_item_is_read_as_its_packet(tmp_path: Path, encoding: bytes) -> None:
    # HEIF lets a writer compress its XMP item (content encoding "gzip", or "deflate": zlib's
    # format): the packet is what is read, to be written into the output, not the compressed
    # bytes, which no reader of the output's XMP could parse.
    import gzip
    import zlib

    xmp = xmp_packet()
    packed = gzip.compress(xmp, mtime=0) if encoding == b"gzip" else zlib.compress(xmp)
    assert len(packed) < len(xmp) // 2
    assert heif_metadata(_xmp_file(tmp_path / "p.heic", packed, encoding)).xmp == xmp
    # Stored as it is (no encoding, or "identity"): read as it is.
    for plain in (b"", b"identity"):
        assert heif_metadata(_xmp_file(tmp_path / "plain.heic", xmp, plain)).xmp == xmp
    # Damaged, or in an encoding not known here: no XMP rather than bytes that are not one.
    damaged = packed[:10] + bytes(len(packed) - 10)
    assert heif_metadata(_xmp_file(tmp_path / "bad.heic", damaged, encoding)).xmp is None
    assert heif_metadata(_xmp_file(tmp_path / "br.heic", packed, b"br")).xmp is None
    # Cut off part-way: a piece of the packet was read (339 bytes of a 2,907-byte one).
    cut = packed[: len(packed) // 2]
    assert heif_metadata(_xmp_file(tmp_path / "cut.heic", cut, encoding)).xmp is None


def test_a_heic_with_an_unknown_matrix_is_tagged_bt2020_for_its_tone_mapping() -> None:
    # A camera's HLG HIF that leaves its matrix unspecified: "unknown" went to zscale, which
    # refuses a conversion from it, and the photo came out with its colours off.
    line = "Stream #0:0: Video: hevc (Main 10), yuv420p10le(tv, unknown/bt2020/arib-std-b67), 64x48"
    assert engine.heif._tags(line) == (
        "setparams=range=tv:colorspace=bt2020nc:color_primaries=bt2020:color_trc=arib-std-b67,"
    )


def test_an_avif_upside_down_is_turned_by_ffmpeg(tmp_path: Path) -> None:
    # A half turn (irot 2) is a rotation too: only quarter turns were, and OpenCV gave a
    # phone's upside-down AVIF upside down.
    rgb = photo(128, 192)
    _avif(tmp_path / "p.avif", rgb, exif=exif_block(orientation=3))
    assert heif_metadata(tmp_path / "p.avif").transformed
    assert _off(read_image(tmp_path / "p.avif"), np.rot90(rgb, 2)) < 3


def _heif_of_boxes(
    path: Path,
    items: list[tuple[int, bytes]],
    *,
    props: list[bytes] = (),  # type: ignore[assignment]
    assoc: dict[int, list[int]] | None = None,
    refs: list[tuple[bytes, int, list[int]]] = (),  # type: ignore[assignment]
    stored: dict[int, bytes] | None = None,
    pitm_version: int = 0,
    ipma_version: int = 0,
    ipma_wide: bool = False,
) -> Path:
    """An HEIC of boxes alone: ``items`` ``(id, type)``, item 1 the primary one (its ``pitm``
    of version ``pitm_version``); ``props`` the ``ipco`` properties and ``assoc`` each item's
    property numbers (an ``ipma`` of version ``ipma_version``, with 2-byte numbers where
    ``ipma_wide``); ``refs`` ``(type, from item, [to items])``; ``stored`` the bytes of
    items kept in the meta box's ``idat``."""
    stored = stored or {}
    infe = b"".join(
        _full_box(b"infe", i.to_bytes(2, "big") + bytes(2) + kind + b"\0", version=2)
        for i, kind in items
    )
    iloc, at = bytes([0x44, 0]) + len(stored).to_bytes(2, "big"), 0
    for i, data in stored.items():
        iloc += i.to_bytes(2, "big") + (1).to_bytes(2, "big") + bytes(2) + (1).to_bytes(2, "big")
        iloc += at.to_bytes(4, "big") + len(data).to_bytes(4, "big")
        at += len(data)
    id_size = 4 if ipma_version else 2
    ipma = len(assoc or {}).to_bytes(4, "big") + b"".join(
        i.to_bytes(id_size, "big") + bytes([len(numbers)])
        + b"".join(n.to_bytes(2 if ipma_wide else 1, "big") for n in numbers)
        for i, numbers in (assoc or {}).items()
    )  # fmt: skip
    iref = b"".join(
        _box(kind, src.to_bytes(2, "big") + len(to).to_bytes(2, "big")
             + b"".join(t.to_bytes(2, "big") for t in to))
        for kind, src, to in refs
    )  # fmt: skip
    meta = _full_box(
        b"meta",
        _full_box(b"hdlr", bytes(4) + b"pict" + bytes(13))
        + _full_box(b"pitm", (1).to_bytes(4 if pitm_version else 2, "big"), pitm_version)
        + _full_box(b"iinf", len(items).to_bytes(2, "big") + infe)
        + _full_box(b"iloc", iloc, version=1)
        + (_full_box(b"iref", iref) if refs else b"")
        + _box(
            b"iprp",
            _box(b"ipco", b"".join(props))
            + _box(b"ipma", bytes([ipma_version, 0, 0, 1 if ipma_wide else 0]) + ipma),
        )
        + _box(b"idat", b"".join(stored.values())),
    )
    path.write_bytes(_box(b"ftyp", b"heic" + bytes(4) + b"mif1heic") + meta)
    return path


def _ispe(w: int, h: int) -> bytes:
    return _full_box(b"ispe", w.to_bytes(4, "big") + h.to_bytes(4, "big"))


@pytest.mark.parametrize(
    ("pitm_version", "ipma_version", "ipma_wide"), [(0, 0, False), (1, 0, False), (0, 1, False),
                                                    (0, 0, True)]
)  # fmt: skip
def test_the_primary_pictures_properties_are_read_from_boxes_of_every_version(
    tmp_path: Path, pitm_version: int, ipma_version: int, ipma_wide: bool
) -> None:
    # A pitm of version 1 and an ipma of version 1 number items in 4 bytes; an ipma flagged 1
    # numbers properties in 2 (a grid of over 127 properties: a large camera photo). Misread,
    # the photo lost its size, and with it the check that FFmpeg decoded the right picture;
    # and its depth, so that a 12-bit photo went to 8 bits without a word.
    path = _heif_of_boxes(
        tmp_path / "p.heic",
        [(1, b"hvc1")],
        props=[_full_box(b"pixi", bytes([3, 10, 10, 12])), _ispe(640, 480)],
        assoc={1: [1, 2]},
        pitm_version=pitm_version,
        ipma_version=ipma_version,
        ipma_wide=ipma_wide,
    )
    meta = heif_metadata(path)
    assert meta.size == (640, 480)
    assert meta.bits == 12  # the deepest channel's depth, not the shallowest


def test_the_exif_of_the_primary_picture_wins_over_a_thumbnails(tmp_path: Path) -> None:
    # An iPhone's thumbnail may carry an EXIF block of its own, listed first: the output got
    # the thumbnail's date and orientation, not the photo's.
    photo_exif = exif_block(orientation=6)
    thumb_exif = exif_block(orientation=1)
    path = _heif_of_boxes(
        tmp_path / "p.heic",
        [(1, b"hvc1"), (2, b"Exif"), (3, b"hvc1"), (4, b"Exif")],
        refs=[(b"thmb", 3, [1]), (b"cdsc", 2, [3]), (b"cdsc", 4, [1])],
        stored={2: bytes(4) + thumb_exif, 4: bytes(4) + photo_exif},
    )
    assert heif_metadata(path).exif == photo_exif


def test_a_tiled_pictures_hdr_transfer_is_found_on_its_tiles_too(tmp_path: Path) -> None:
    # As its profile: a writer may give the nclx colour property to the tiles only. Missed,
    # a tiled HDR AVIF was read by OpenCV, its colours off, without a word.
    nclx = _box(b"colr", b"nclx" + (9).to_bytes(2, "big") + (16).to_bytes(2, "big")
                + (9).to_bytes(2, "big") + b"\0")  # fmt: skip
    path = _heif_of_boxes(
        tmp_path / "p.heic",
        [(1, b"grid"), (2, b"hvc1"), (3, b"hvc1")],
        props=[_ispe(128, 64), _ispe(64, 64), nclx],
        assoc={1: [1], 2: [2, 3], 3: [2, 3]},
        refs=[(b"dimg", 1, [2, 3])],
    )
    assert heif_metadata(path).transfer == 16


def test_an_hdr_heic_without_a_range_is_tone_mapped_as_limited_range() -> None:
    # FFmpeg lists no range where the stream says none, and HEVC's default is limited (tv)
    # range: taken as full, the tone mapped photo's blacks and whites were off.
    line = "Stream #0:0: Video: hevc (Main 10), yuv420p10le(bt2020nc/bt2020/smpte2084), 64x48"
    assert engine.heif._tags(line) == (
        "setparams=range=tv:colorspace=bt2020nc:color_primaries=bt2020:color_trc=smpte2084,"
    )
