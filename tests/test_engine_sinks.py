"""Sinks: the virtual camera through the real pyvirtualcam.Camera, video files, image files."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pyvirtualcam
from videos import read_video  # noqa: E402

from engine.frames import Frame, even_size, fit_cuts, fit_to, resize_to
from engine.sinks import (
    CallbackSink,
    ImageSink,
    SinkError,
    VideoFileSink,
    _FFmpegWriter,
    _locked_elsewhere,
    open_sink,
    sink_kind,
    stale_work_files,
)
from engine.virtualcam import (
    VirtualCameraSink,
    VirtualCameraUnavailable,
    virtual_camera_guidance,
    virtual_camera_status,
)

RECORDER = "sharpcam-test-recorder"


class RecordingCamera:
    """A pyvirtualcam backend that keeps what it is sent (the Backend interface, duck-typed)."""

    instances: list[RecordingCamera] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.device_asked = device  # what the sink passed: None lets the backend choose
        self._device = device or "/dev/recorder0"
        self.frames: list[np.ndarray] = []
        self.closed = 0
        RecordingCamera.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        # pyvirtualcam hands over a 1-D C-contiguous view; keep a copy shaped as an image.
        assert frame.ndim == 1 and frame.flags.c_contiguous
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return self._device

    def native_fourcc(self):
        return self.fourcc


class BrokenCamera:
    def __init__(self, **kw):
        raise RuntimeError("no loopback device here")


@pytest.fixture
def recorder():
    RecordingCamera.instances.clear()
    pyvirtualcam.register_backend(RECORDER, RecordingCamera)
    yield RecordingCamera
    pyvirtualcam.camera.BACKENDS.pop(RECORDER, None)


def frame(i: int, size=(32, 24), value=None) -> Frame:
    w, h = size
    img = np.full((h, w, 3), i if value is None else value, np.uint8)
    img[0, 0] = (i, 255 - i, 7)
    return Frame(img, i, 0.0)


# --------------------------------------------------------------------------- virtual camera


@pytest.mark.parametrize(
    "system,machine,has_build",
    [("win32", "ARM64", False), ("win32", "AMD64", True), ("darwin", "arm64", True)],
)
def test_pyvirtualcam_lacks_a_build_only_on_windows_on_arm(
    system: str, machine: str, has_build: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only there does the guidance ask for no Retry: elsewhere installing it is the fix.
    import platform

    from engine.virtualcam import pyvirtualcam_has_build

    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert pyvirtualcam_has_build() is has_build


def test_virtual_sink_sends_every_frame_through_pyvirtualcam(recorder):
    with open_sink("virtual", size=(32, 24), fps=30, backend=RECORDER, device="/dev/video42") as s:
        assert isinstance(s, VirtualCameraSink)
        assert s.backend == RECORDER and s.device == "/dev/video42"
        for i in range(20):
            s.write(frame(i))
        assert s.frames_sent == 20
    cam = recorder.instances[-1]
    assert cam.fourcc == pyvirtualcam.util.encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    assert (cam.width, cam.height) == (32, 24) and cam.fps == 30
    assert len(cam.frames) == 20
    for i, got in enumerate(cam.frames):
        np.testing.assert_array_equal(got, frame(i).image)
    assert cam.closed == 1


def test_virtual_sink_resizes_and_converts_to_bgr(recorder):
    with VirtualCameraSink(size=(16, 12), backend=RECORDER, fmt="BGR") as s:
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 0] = 200  # red in RGB
        s.write(Frame(img, 0, 0.0))
    sent = recorder.instances[-1].frames[0]
    assert sent.shape == (12, 16, 3)
    assert (sent[..., 2] == 200).all() and (sent[..., 0] == 0).all()


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_virtual_sink_repeats_the_frame_it_sent_last_as_it_sent_it(recorder, fmt):
    # The engine's keep-alive while no new frame comes: the frame's buffer is the engine's,
    # reused for the next frame, so what is sent again must be the sink's own copy.
    with VirtualCameraSink(size=(32, 24), backend=RECORDER, fmt=fmt) as s:
        s.repeat_last()  # nothing sent yet: nothing to repeat
        img = picture((32, 24))
        s.write(Frame(img, 0, 0.0))
        img[:] = 0  # the engine's buffer, reused
        s.repeat_last()
        s.repeat_last()
        assert s.frames_written == 1  # new frames only: "failed after N frames" counts these
    sent = recorder.instances[-1].frames
    assert len(sent) == 3
    want = picture((32, 24))[..., ::-1] if fmt == "BGR" else picture((32, 24))
    for got in sent:
        np.testing.assert_array_equal(got, want)
    with pytest.raises(RuntimeError, match="closed"):
        s.repeat_last()


def picture(size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` gradient with no black pixel, so bars are told apart from the picture."""
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(40, 250, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(40, 250, h, dtype=np.uint8)[:, None]
    img[..., 2] = 90
    return img


def assert_boxed(out: np.ndarray, img: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """``out`` is ``img`` scaled undistorted into ``box`` ``(x, y, w, h)``, black elsewhere."""
    x, y, w, h = box
    inside = np.zeros(out.shape[:2], bool)
    inside[y : y + h, x : x + w] = True
    assert (out[~inside] == 0).all(), "the bars are not black"
    content = out[y : y + h, x : x + w]
    assert (content.max(axis=2) > 0).all(), "part of the picture is black"
    np.testing.assert_array_equal(content, resize_to(img, (w, h)))


def test_fit_to_same_size_is_the_image_itself():
    img = picture((64, 36))
    assert fit_to(img, (64, 36)) is img
    assert fit_to(img, (64, 36), out=np.empty_like(img)) is img


def test_fit_to_pillarboxes_4_3_into_16_9():
    img = picture((64, 48))
    out = fit_to(img, (128, 72))
    assert out.shape == (72, 128, 3)
    # 4:3 at full height is 96 wide: (128 - 96) / 2 = 16 black columns each side.
    assert_boxed(out, img, (16, 0, 96, 72))


def test_fit_to_letterboxes_16_9_into_4_3():
    img = picture((128, 72))
    out = fit_to(img, (64, 48))
    assert out.shape == (48, 64, 3)
    # 16:9 at full width is 36 high: (48 - 36) / 2 = 6 black rows above and below.
    assert_boxed(out, img, (0, 6, 64, 36))


def test_fit_to_reused_out_keeps_the_bars_black():
    out = np.full((72, 128, 3), 255, np.uint8)  # stale content must not survive in the bars
    tall, wide, same = picture((48, 48)), picture((256, 72)), picture((64, 36))
    assert fit_to(tall, (128, 72), out=out) is out
    assert_boxed(out, tall, (28, 0, 72, 72))
    assert fit_to(wide, (128, 72), out=out) is out  # where the picture was is now a bar
    assert_boxed(out, wide, (0, 18, 128, 36))
    assert fit_to(same, (128, 72), out=out) is out  # same aspect: no bars at all
    assert_boxed(out, same, (0, 0, 128, 72))
    assert fit_to(tall, (128, 72), out=out) is out
    assert_boxed(out, tall, (28, 0, 72, 72))


def test_virtual_sink_letterboxes_frames_of_another_aspect(recorder):
    """The camera keeps its opening size; a 4:3 frame in a 16:9 camera is pillarboxed."""
    narrow, full = picture((64, 48)), picture((128, 72))
    with VirtualCameraSink(size=(128, 72), backend=RECORDER) as s:
        s.write(Frame(narrow, 0, 0.0))
        s.write(Frame(full, 1, 0.0))
        s.write(Frame(narrow, 2, 0.0))
    sent = recorder.instances[-1].frames
    assert len(sent) == 3 and all(f.shape == (72, 128, 3) for f in sent)
    assert_boxed(sent[0], narrow, (16, 0, 96, 72))
    np.testing.assert_array_equal(sent[1], full)
    assert_boxed(sent[2], narrow, (16, 0, 96, 72))


def test_fit_to_treats_a_one_pixel_bar_as_rounding():
    """An odd camera into its even-sided output: the picture fills it, no black edge line, and
    not resampled: its last row and column are cut (stretched by that pixel, each pixel near
    the middle blended two neighbours half and half, half the fine detail gone)."""
    img = picture((641, 361))
    out = fit_to(img, (640, 360))
    np.testing.assert_array_equal(out, img[:360, :640])
    assert out.flags.c_contiguous
    buf = np.empty((360, 640, 3), np.uint8)
    assert fit_to(img, (640, 360), out=buf) is buf and np.array_equal(buf, out)
    # Two pixels over is resampled as before, filling the frame.
    wider = picture((642, 362))
    np.testing.assert_array_equal(fit_to(wider, (640, 360)), resize_to(wider, (640, 360)))
    assert (out[:, -1].max(axis=1) > 0).all() and (out[-1].max(axis=1) > 0).all()
    # On a tiny frame two pixels are another aspect ratio, not rounding: 4x3 into 4x2 is boxed.
    small = fit_to(picture((4, 3)), (4, 2))
    assert (small[:, -1] == 0).all() and (small[:, :3].max(axis=2) > 0).all()


@pytest.mark.parametrize("size", [(642, 360), (640, 362), (642, 361), (641, 362)])
def test_fit_to_scales_a_frame_two_pixels_over_on_either_side(size: tuple[int, int]):
    """Only one pixel over is cut: two over on either side (whatever the other) is scaled to
    fill the frame; cut instead, the picture lost two rows or columns at an edge and was off
    centre by one."""
    img = picture(size)
    want = cv2.resize(img, (640, 360), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(fit_to(img, (640, 360)), want)
    assert not np.array_equal(want, img[:360, :640])


@pytest.mark.parametrize("size", [(641, 360), (640, 361)])
def test_fit_to_cuts_one_pixel_over_on_one_side(size: tuple[int, int]):
    # An odd side into its even video: the last column or row goes, nothing is resampled.
    img = picture(size)
    np.testing.assert_array_equal(fit_to(img, (640, 360)), img[:360, :640])


@pytest.mark.parametrize("size", [(641, 361), (97, 65), (65, 49), (33, 25), (17, 16), (642, 360)])
def test_fit_cuts_says_what_fit_to_does(size: tuple[int, int]):
    # What the odd-side note says ("cut" or "scaled") follows fit_to, which scales small frames.
    img = picture(size)
    even = (size[0] // 2 * 2, size[1] // 2 * 2)
    cut = np.array_equal(fit_to(img, even), img[: even[1], : even[0]])
    assert fit_cuts(size, even) == cut


def test_fit_cuts_from_50_pixels_a_side_and_scales_below() -> None:
    # One pixel is within about 1 % from 50 pixels on: a 97x65 clip into 96x64 loses its last
    # column and row (what the odd-size note says), a 49-pixel side is resampled.
    assert fit_cuts((97, 65), (96, 64)) and fit_cuts((51, 51), (50, 50))
    assert not fit_cuts((49, 49), (48, 48))
    img = picture((97, 65))
    np.testing.assert_array_equal(fit_to(img, (96, 64)), img[:64, :96])


def test_fit_to_keeps_bars_of_a_few_percent():
    """Only a bar of up to 1 % is rounding: 4 rows of 100 are another aspect ratio, boxed."""
    wide, tall = picture((100, 96)), picture((96, 100))
    assert_boxed(fit_to(wide, (100, 100)), wide, (0, 2, 100, 96))
    assert_boxed(fit_to(tall, (100, 100)), tall, (2, 0, 96, 100))


def test_fit_to_rounds_the_scaled_side_to_the_nearest_pixel():
    # 3:2 at the full 100-pixel width is 66.7 rows high: 67 rows of picture, not 66.
    img = picture((3, 2))
    assert_boxed(fit_to(img, (100, 100)), img, (0, 16, 100, 67))


def test_fit_to_boxes_a_picture_one_pixel_smaller_than_the_frame():
    # Only one pixel over is cut: one pixel under fills the frame (a bar of 1 % is rounding),
    # never a result smaller than the size asked for, which the encoder would refuse.
    for size in ((639, 360), (640, 359), (639, 359)):
        img = picture(size)
        out = fit_to(img, (640, 360))
        assert out.shape == (360, 640, 3), size
        np.testing.assert_array_equal(out, resize_to(img, (640, 360)))


def test_fit_to_keeps_a_line_of_a_picture_far_wider_than_the_frame():
    # A 4000x2 strip into a 64x64 frame scales to under half a row: at least one row of it is
    # drawn, not a zero-height resize (an OpenCV error).
    out = fit_to(picture((4000, 2)), (64, 64))
    assert out.shape == (64, 64, 3)
    assert (out.max(axis=2) > 0).sum(axis=0).tolist() == [1] * 64


def test_fit_to_keeps_a_column_of_a_picture_far_taller_than_the_frame() -> None:
    # The pillarbox side of the strip test above: under half a column scaled is one column,
    # not a zero-width resize (an OpenCV error).
    out = fit_to(picture((2, 4000)), (64, 64))
    assert out.shape == (64, 64, 3)
    assert (out.max(axis=2) > 0).sum(axis=1).tolist() == [1] * 64


@pytest.mark.parametrize("size", [(641, 360), (64, 48)], ids=["cut", "boxed"])
def test_fit_to_ignores_an_out_buffer_of_another_dtype(size: tuple[int, int]) -> None:
    # A buffer of another dtype is no buffer for the result: the picture comes back as uint8
    # in a new array, neither cast into the float buffer nor lost from it (OpenCV writes a
    # resize of the wrong dtype elsewhere and leaves the buffer black).
    img = picture(size)
    buf = np.zeros((360, 640, 3), np.float32)
    out = fit_to(img, (640, 360), out=buf)
    assert out is not buf and out.dtype == np.uint8
    np.testing.assert_array_equal(out, fit_to(img, (640, 360)))
    assert out.max() > 0


def test_a_frame_of_no_width_is_refused_at_a_sinks_boundary() -> None:
    from engine.frames import check_rgb8

    with pytest.raises(ValueError, match=r"video x.avi: .*got \(24, 0, 3\) uint8"):
        check_rgb8(np.zeros((24, 0, 3), np.uint8), "video x.avi")
    ok = np.zeros((24, 32, 3), np.uint8)
    assert check_rgb8(ok, "video x.avi") is ok


def test_resize_to_resizes_when_only_one_side_differs():
    img = picture((64, 48))
    assert resize_to(img, (64, 48)) is img
    for w, h in ((64, 36), (32, 48)):
        out = resize_to(img, (w, h))
        assert out.shape == (h, w, 3)
        np.testing.assert_array_equal(out, cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))


def test_even_size_rounds_down_to_even_sides_of_at_least_two():
    # 4:2:0 encoders need even sides; a 1-pixel side is not one.
    assert even_size((641, 361)) == (640, 360)
    assert even_size((640, 360)) == (640, 360)
    assert even_size((1, 1)) == (2, 2)
    assert even_size((3, 1)) == (2, 2)


def test_video_sink_letterboxes_frames_of_another_aspect(tmp_path):
    """A camera back at 4:3 in a 16:9 recording keeps its proportions: black side bars."""
    path = tmp_path / "out.avi"
    with VideoFileSink(path=path, size=(128, 72), fps=25) as sink:
        sink.write(Frame(np.full((72, 128, 3), 200, np.uint8), 0, 0.0))
        sink.write(Frame(np.full((48, 64, 3), 200, np.uint8), 1, 0.0))
    wide, narrow = read_video(path)
    assert float(wide.mean()) > 190
    # 4:3 at height 72 is 96 wide: 16 black columns each side (MJPG blurs the edge a little).
    assert float(narrow[:, :12].max()) < 20 and float(narrow[:, -12:].max()) < 20
    assert float(narrow[:, 20:108].min()) > 180


def test_virtual_sink_close_is_idempotent(recorder):
    s = VirtualCameraSink(size=(8, 8), backend=RECORDER)
    s.close()
    s.close()
    assert recorder.instances[-1].closed == 1
    with pytest.raises(RuntimeError, match="closed"):
        s.write(frame(0, (8, 8)))


def test_no_virtual_camera_raises_with_guidance(monkeypatch):
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"broken": BrokenCamera})
    with pytest.raises(VirtualCameraUnavailable) as info:
        open_sink("virtual", size=(64, 48), fps=30)
    msg = str(info.value)
    assert "no loopback device here" in msg
    assert virtual_camera_guidance() in msg
    assert isinstance(info.value, SinkError)


def test_unknown_virtual_backend_lists_known(monkeypatch):
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"broken": BrokenCamera})
    with pytest.raises(VirtualCameraUnavailable, match="available: broken"):
        VirtualCameraSink(size=(8, 8), backend="nope")


def test_guidance_per_os():
    linux = virtual_camera_guidance("linux")
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=SharpCam" in linux
    for platform in ("win32", "darwin"):
        text = virtual_camera_guidance(platform)
        assert "OBS Studio >= 30" in text and "virtual camera once" in text


def test_virtual_camera_status(monkeypatch, recorder):
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"broken": BrokenCamera})
    ok, msg = virtual_camera_status()
    assert not ok and virtual_camera_guidance() in msg
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {RECORDER: RecordingCamera})
    ok, msg = virtual_camera_status()
    assert ok and "/dev/recorder0" in msg and RECORDER in msg
    assert recorder.instances[-1].closed == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2loopback is Linux only")
def test_real_v4l2loopback_missing_gives_guidance(monkeypatch):
    # On a machine without the module (CI) pyvirtualcam's own backend fails; with it, it works.
    only_native = {k: v for k, v in pyvirtualcam.camera.BACKENDS.items() if k == "v4l2loopback"}
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", only_native)
    ok, msg = virtual_camera_status()
    assert ok or "sudo modprobe v4l2loopback" in msg


# --------------------------------------------------------------------------- video


@pytest.mark.parametrize(
    "ext,codec", [(".avi", "MJPG"), (".mp4", "avc1"), (".mov", "avc1"), (".mkv", "avc1")]
)
def test_video_sink_writes_playable_file(tmp_path, ext, codec):
    path = tmp_path / "sub" / f"out{ext}"
    sink = open_sink(path, size=(64, 48), fps=25)
    assert isinstance(sink, VideoFileSink) and sink.fourcc == codec
    for i in range(10):
        sink.write(frame(i * 20, size=(64, 48)))
    sink.write(frame(250, size=(33, 17)))  # another size: resized, not refused
    assert not path.exists(), "the real name appears only when the file is complete"
    sink.close()
    sink.close()
    frames = read_video(path)
    assert len(frames) == 11 and frames[0].shape == (48, 64, 3)
    greys = [float(np.median(f)) for f in frames[:10]]
    assert all(abs(g - 20 * i) <= 6 for i, g in enumerate(greys)), greys  # codec drift
    assert list(tmp_path.joinpath("sub").iterdir()) == [path], "no partial file left behind"


def test_video_sink_abort_keeps_frames_and_never_replaces_a_finished_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"an earlier, complete result")
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    for i in range(4):
        sink.write(frame(i * 50, size=(64, 48)))
    sink.abort()
    sink.close()  # closing after an abort changes nothing
    assert path.read_bytes() == b"an earlier, complete result"
    kept = tmp_path / "out.incomplete.mp4"
    assert sink.kept_path == kept
    frames = read_video(kept)
    assert len(frames) == 4
    assert [round(float(np.median(f)) / 50) for f in frames] == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.incomplete.mp4", "out.mp4"]


def test_video_sink_never_truncates_a_file_with_its_working_name(tmp_path):
    # The hidden working file was opened for writing whatever was there: the frames a killed
    # run left (an MJPG .avi of them still plays), another run's working file, or the input
    # through a link of that name.
    path = tmp_path / "out.avi"
    leftover = tmp_path / ".out.partial.avi"
    leftover.write_bytes(b"frames of a killed run")
    other = tmp_path / "input.avi"
    other.write_bytes(b"the input")
    (tmp_path / ".out.partial-2.avi").symlink_to(other)
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    assert sink._partial == tmp_path / ".out.partial-3.avi"
    for i in range(3):
        sink.write(frame(i * 80, size=(64, 48)))
    sink.close()
    assert leftover.read_bytes() == b"frames of a killed run"
    assert other.read_bytes() == b"the input"
    assert len(read_video(path)) == 3
    assert not sink._partial.exists()


@pytest.mark.parametrize("end", ["publish", "keep"])
def test_a_video_sink_that_does_not_publish_leaves_its_finished_file_to_its_caller(tmp_path, end):
    # process puts the sound in after the frames: a copy that then failed had already
    # replaced the file at the output's name.
    path = tmp_path / "out.avi"
    path.write_bytes(b"an earlier result")
    sink = VideoFileSink(path=path, size=(64, 48), fps=25, publish=False)
    with pytest.raises(RuntimeError, match="no finished file is waiting"):
        sink.publish()  # still being written
    for i in range(3):
        sink.write(frame(i * 80, size=(64, 48)))
    sink.close()
    hidden = tmp_path / ".out.partial.avi"
    assert sink.awaiting_name and sink.kept_path == hidden and not sink.published
    assert sink.unfinished_path is None  # finished: nothing still being written
    assert path.read_bytes() == b"an earlier result" and len(read_video(hidden)) == 3
    if end == "publish":
        assert sink.publish() == path and sink.published and sink.kept_path == path
        assert len(read_video(path)) == 3
    else:
        assert sink.keep_incomplete() == tmp_path / "out.incomplete.avi"
        assert path.read_bytes() == b"an earlier result" and not sink.published
        assert len(read_video(sink.kept_path)) == 3
    assert not hidden.exists() and not sink.awaiting_name
    # The working file's lock goes with its hidden name: held on, it kept a descriptor open
    # on the named file for as long as the sink lived.
    assert _locked_elsewhere(sink.kept_path) is not True
    with pytest.raises(RuntimeError, match="no finished file is waiting"):
        sink.keep_incomplete()  # once only


def _age(path: Path, seconds: float = 600.0) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_working_files_a_killed_run_left_are_found_and_ones_being_written_are_not(
    tmp_path: Path,
) -> None:
    # A run killed while recording left its frames in a hidden .NAME.partial.EXT; the next
    # run to that name wrote beside it without a word. One another run writes is not stale,
    # however long since it was written to (a model taking minutes a frame).
    path = tmp_path / "out.avi"
    left = tmp_path / ".out.partial.avi"
    left.write_bytes(b"frames a killed run wrote")
    copy = tmp_path / "..out.partial.partial.avi"  # its sound was being put in
    copy.write_bytes(b"a copy of them")
    other = tmp_path / ".other.partial.avi"  # another output's
    other.write_bytes(b"not out.avi's")
    for file in (left, copy, other):
        _age(file)
    numbered = tmp_path / ".out.partial-2.avi"  # a second killed run's, beside the first's
    numbered.write_bytes(b"frames of another")
    source = tmp_path / "in.avi"
    source.write_bytes(b"the input")
    # A link of that name is no run's frames (_create_partial passes over it as taken).
    (tmp_path / ".out.partial-3.avi").symlink_to(source)
    for file in (left, copy, other, numbered, source):
        _age(file)
    assert stale_work_files(path) == [copy, numbered, left]
    assert stale_work_files(tmp_path / "missing" / "out.avi") == []  # its folder made later
    left.unlink()
    copy.unlink()
    numbered.unlink()
    sink = VideoFileSink(path=path, size=(64, 48), fps=25, publish=False)
    sink.write(frame(80, size=(64, 48)))
    _age(tmp_path / ".out.partial.avi")
    # The copy `process` puts the sound into is nobody's lock: it goes with the locked one.
    copy.write_bytes(b"the sound going in")
    _age(copy)
    assert stale_work_files(path) == []  # being written
    copy.unlink()
    sink.close()
    _age(tmp_path / ".out.partial.avi")
    assert stale_work_files(path) == []  # waiting for its name
    sink.publish()
    assert stale_work_files(path) == [] and len(read_video(path)) == 1
    left.write_bytes(b"frames a killed run wrote")
    assert stale_work_files(path) == []  # written to just now: maybe in use
    _age(left)
    assert stale_work_files(path) == [left]
    # A folder of frames: what was being written when the run was killed.
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "frame_000000.png").write_bytes(b"done")
    half = frames / ".frame_000001.partial.png"
    half.write_bytes(b"half a frame")
    beside = frames / ".frame_000002.partial-2.png"  # numbered: one was in the way
    beside.write_bytes(b"another half")
    for file in (half, beside):
        _age(file)
    assert stale_work_files(frames) == [half, beside]


def test_working_files_are_not_named_where_their_locks_cannot_be_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file system without locks (an NFS mount without its lock daemon): one another
    # SharpCam writes there cannot be told from one a killed run left, so neither is named.
    import types

    import engine.sinks

    left = tmp_path / ".out.partial.avi"
    left.write_bytes(b"frames, or a live recording's")
    _age(left)
    assert stale_work_files(tmp_path / "out.avi") == [left]

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    real = engine.sinks.fcntl
    fake = types.SimpleNamespace(LOCK_SH=real.LOCK_SH, LOCK_EX=real.LOCK_EX, LOCK_NB=real.LOCK_NB)
    fake.flock = no_locks
    monkeypatch.setattr(engine.sinks, "fcntl", fake)
    assert stale_work_files(tmp_path / "out.avi") == []


def test_working_files_a_killed_run_left_are_found_on_windows_by_who_has_them_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows has no flock: no note was ever given there. A writer (FFmpeg, OpenCV) holds its
    # working file open for writing, and Windows refuses an open that bars writing while it
    # does; a killed process's handles close with it.
    import types

    import engine.sinks

    left = tmp_path / ".out.partial.avi"  # a killed run's
    live = tmp_path / ".out.partial-2.avi"  # another SharpCam's, recording slowly
    copy = tmp_path / "..out.partial-2.partial.avi"  # its sound going in: goes with it
    unreadable = tmp_path / ".out.partial-3.avi"  # denied to this user: cannot be told
    recent = tmp_path / ".out.partial-4.avi"  # nobody's handle, but written just now
    for file in (left, live, copy, unreadable, recent):
        file.write_bytes(b"frames")
        if file is not recent:
            _age(file)
    asked: list[tuple[str, int, int]] = []
    closed: list[int] = []

    def create_file(name: str, access: int, share: int, sa: int, how: int, *rest: int) -> int:
        asked.append((Path(name).name, access, share))
        assert how == 3  # OPEN_EXISTING: a probe never makes a file
        refused = {live.name: 32, unreadable.name: 5}.get(Path(name).name)
        if refused is not None:
            exc = PermissionError(errno.EACCES, "refused", name)
            exc.winerror = refused  # type: ignore[attr-defined]
            raise exc
        return 1000 + len(asked)

    monkeypatch.setitem(
        sys.modules,
        "_winapi",
        types.SimpleNamespace(CreateFile=create_file, CloseHandle=closed.append),
    )
    monkeypatch.setattr(engine.sinks, "fcntl", None)
    monkeypatch.setattr(sys, "platform", "win32")
    assert stale_work_files(tmp_path / "out.avi") == [left]
    # Read access, sharing reading and renaming (its writer's final rename) but not writing.
    assert {(n, a, s) for n, a, s in asked} >= {(left.name, 0x80000000, 0x1 | 0x4)}
    assert recent.name not in [n for n, _, _ in asked]  # recent enough: not opened
    assert len(closed) == len(asked) - 2  # every handle opened is closed


def test_a_video_sink_whose_name_is_refused_at_publish_keeps_its_frames(tmp_path):
    # A folder made at the output's name while the sound was put in: the frames must not be
    # left in a hidden file the message does not name.
    path = tmp_path / "out.avi"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25, publish=False)
    for i in range(3):
        sink.write(frame(i * 80, size=(64, 48)))
    sink.close()
    path.mkdir()
    (path / "inside").write_bytes(b"the user's")
    kept = tmp_path / "out.incomplete.avi"
    with pytest.raises(SinkError, match=f"cannot finish video .*; its frames are kept in {kept}"):
        sink.publish()
    assert sink.kept_path == kept and len(read_video(kept)) == 3
    assert not sink.awaiting_name and not (tmp_path / ".out.partial.avi").exists()
    assert (path / "inside").read_bytes() == b"the user's"


def test_a_video_sink_not_publishing_is_aborted_as_any_other(tmp_path):
    path = tmp_path / "out.avi"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25, publish=False)
    sink.write(frame(80, size=(64, 48)))
    sink.abort()
    assert sink.kept_path == tmp_path / "out.incomplete.avi" and not sink.awaiting_name


@pytest.mark.parametrize("end", ["abort", "failed write"])
def test_a_second_incomplete_run_keeps_the_frames_the_first_one_kept(tmp_path, monkeypatch, end):
    # The kept file of an earlier run (an hour of frames) was replaced by the next run's
    # (a second of them) when that one was interrupted too.
    path = tmp_path / "out.avi"
    earlier = tmp_path / "out.incomplete.avi"
    earlier.write_bytes(b"an hour of frames")
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    for i in range(2):
        sink.write(frame(i * 80, size=(64, 48)))
    if end == "abort":
        sink.abort()
    else:
        real = sink._writer
        monkeypatch.setattr(sink, "_writer", type("Full", (), {"write": lambda self, img: False})())
        with pytest.raises(SinkError, match="cannot write frame 2"):
            sink.write(frame(200, size=(64, 48)))
        sink._writer = real
        sink.close()
    assert earlier.read_bytes() == b"an hour of frames"
    assert sink.kept_path == tmp_path / "out.incomplete-2.avi"
    assert len(read_video(sink.kept_path)) == 2
    assert not path.exists()


def test_kept_frames_do_not_replace_a_link_named_like_them(tmp_path):
    # A link whose target is gone (a kept file moved to another drive, linked back) "does not
    # exist" to os.path.exists: the frames kept would have replaced it.
    path = tmp_path / "out.avi"
    link = tmp_path / "out.incomplete.avi"
    link.symlink_to(tmp_path / "moved" / "out.incomplete.avi")
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    for i in range(2):
        sink.write(frame(i * 80, size=(64, 48)))
    sink.abort()
    assert link.is_symlink()
    assert sink.kept_path == tmp_path / "out.incomplete-2.avi"
    assert len(read_video(sink.kept_path)) == 2


def test_video_sink_whose_name_is_refused_keeps_its_frames_in_sight(tmp_path):
    # The rename to the real name failed (a folder made under it; on Windows, an earlier
    # out.avi open in a player) and every frame stayed in the hidden .out.partial.avi, which
    # the error did not name.
    path = tmp_path / "out.avi"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    for i in range(3):
        sink.write(frame(i * 80, size=(64, 48)))
    path.mkdir()
    with pytest.raises(SinkError, match="cannot finish video"):
        sink.close()
    sink.close()  # once only
    assert sink.failed
    assert sink.kept_path == tmp_path / "out.incomplete.avi"
    assert len(read_video(sink.kept_path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.avi", "out.incomplete.avi"]


def test_video_sink_without_frames_leaves_nothing(tmp_path):
    with VideoFileSink(path=tmp_path / "x.avi", size=(16, 16)) as sink:
        pass
    assert list(tmp_path.iterdir()) == []
    # Nothing is said kept nor unfinished: "the frames written are kept in None" was a lie.
    assert sink.kept_path is None and sink.unfinished_path is None
    assert sink.kept_phrase() == ""


def test_video_sink_errors(tmp_path):
    with pytest.raises(SinkError, match="unknown extension"):
        VideoFileSink(path=tmp_path / "x.xyz", size=(16, 16))
    with pytest.raises(SinkError, match=r"unknown extension '\(none\)'; use one of .mp4, "):
        VideoFileSink(path=tmp_path / "clip", size=(16, 16))
    # The largest side MPEG-4 takes, whatever the case the FourCC is given in.
    with pytest.raises(SinkError, match=r"mp4v \(MPEG-4\) takes sides up to 8191"):
        VideoFileSink(path=tmp_path / "big.mp4", size=(8192, 64), fourcc="MP4V")
    # H.264's (16384), found on opening: it failed on the first frames, "invalid width x height".
    with pytest.raises(SinkError, match=r"takes sides up to \d+, not 20000x2; use .avi"):
        VideoFileSink(path=tmp_path / "wide.mp4", size=(20000, 1))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="needs a frame size"):
        open_sink(tmp_path / "x.mp4", size=None)
    sink = VideoFileSink(path=tmp_path / "y.avi", size=(16, 16))
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.write(frame(0, (16, 16)))


def test_video_sink_refuses_a_folder_before_any_frame(tmp_path):
    # The rename onto a folder used to fail only at close(): every frame lost in a hidden file.
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(SinkError, match="out.mp4: it is a folder"):
        VideoFileSink(path=tmp_path / "out.mp4", size=(32, 24))
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_an_mp4_past_mpeg4s_largest_side_says_why_and_what_takes_it(tmp_path, monkeypatch):
    # `run --size 8192x4320 --output big.mp4` (8K is in --size's range) said only "cannot write
    # video big.mp4 with codec mp4v". Where there is no FFmpeg with H.264, .mp4 is mp4v.

    without_x264(monkeypatch)
    with pytest.raises(SinkError) as info:
        VideoFileSink(path=tmp_path / "big.mp4", size=(8192, 4320))
    assert "mp4v (MPEG-4) takes sides up to 8191, not 8192x4320; use .avi or .mkv" in str(
        info.value
    )
    assert list(tmp_path.iterdir()) == []
    with VideoFileSink(path=tmp_path / "wide.mp4", size=(8190, 16)) as sink:  # the largest
        sink.write(frame(0, size=(8190, 16)))
    assert read_video(tmp_path / "wide.mp4")[0].shape == (16, 8190, 3)


def test_video_sink_rounds_odd_sizes_down_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoFileSink(path=path, size=(33, 17), fps=25) as sink:
        assert sink.size == (32, 16)
        for i in range(3):
            sink.write(frame(i * 60, size=(33, 17)))
    frames = read_video(path)
    assert len(frames) == 3 and frames[0].shape == (16, 32, 3)


def test_video_sink_reports_a_failed_write(tmp_path, monkeypatch):
    sink = VideoFileSink(path=tmp_path / "full.avi", size=(16, 16))
    sink.write(frame(0, (16, 16)))

    class DiskFull:
        def __init__(self, real):
            self.real = real

        def write(self, img):
            return False  # what cv2.VideoWriter.write returns when the encode or write fails

        def release(self):
            self.real.release()

    monkeypatch.setattr(sink, "_writer", DiskFull(sink._writer))
    with pytest.raises(SinkError, match="cannot write frame 1"):
        sink.write(frame(1, (16, 16)))
    assert sink.frames_written == 1
    sink.abort()


def test_video_sink_closed_after_a_failed_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    # A live run closes (not aborts) an output whose write failed: the broken file used to
    # take the real name, replacing yesterday's recording with one that does not play.
    path = tmp_path / "rec.avi"
    path.write_bytes(b"yesterday's recording")
    sink = VideoFileSink(path=path, size=(16, 16))
    sink.write(frame(0, (16, 16)))
    real = sink._writer
    monkeypatch.setattr(sink, "_writer", type("Full", (), {"write": lambda self, img: False})())
    with pytest.raises(SinkError, match="cannot write frame 1"):
        sink.write(frame(1, (16, 16)))
    sink._writer = real
    sink.close()
    assert path.read_bytes() == b"yesterday's recording"
    assert sink.kept_path == tmp_path / "rec.incomplete.avi"
    assert len(read_video(sink.kept_path)) == 1
    assert sink.not_kept is None


class FillingDisk:
    """A video writer whose disk fills after ``room`` frames: later writes fail (``False``, as
    cv2.VideoWriter.write says it), and ``release()`` leaves the file as a full disk does,
    through ``cut`` (what could not be written at the end is missing)."""

    def __init__(self, sink: VideoFileSink, room: int, cut):
        self.real, self.path, self.room, self.cut = sink._writer, sink._partial, room, cut

    def write(self, img):
        if self.room == 0:
            return False
        self.room -= 1
        return self.real.write(img)

    def release(self):
        self.real.release()
        self.cut(self.path)


def without_index(path: Path) -> None:
    """An MP4 whose moov box (its index, written last) found no room: nothing opens it."""
    data = path.read_bytes()
    at = data.rfind(b"moov") - 4  # the box starts with its 4-byte length
    assert at > 0, "the mp4 writer wrote its index last"
    path.write_bytes(data[:at])


def emptied(path: Path) -> None:
    """A file the disk took nothing of (full before the writer's first buffer)."""
    path.write_bytes(b"")


@pytest.mark.parametrize("end", ["close", "abort"])
@pytest.mark.parametrize(
    "name,cut,why",
    [
        (
            "out.mp4",
            without_index,
            "an MP4 writes its index at its end and the full disk had no room for it "
            "(.avi or .mkv keep the frames written)",
        ),
        ("out.avi", emptied, "the disk was full before a frame that plays reached it"),
    ],
)
def test_a_video_the_full_disk_left_unplayable_is_not_kept_as_frames(
    tmp_path, monkeypatch, capfd, end, name, cut, why
):
    # `process demo.mp4 o.mp4` on a disk that filled said "the frames written are kept in
    # o.incomplete.mp4", an MP4 without its index that nothing could open ("moov atom not
    # found"); `run --output r.avi` on a full disk kept a 0-byte r.incomplete.avi so.
    path = tmp_path / name
    path.write_bytes(b"an earlier, complete result")
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 3, cut))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: True, raising=False)
    for i in range(3):
        sink.write(frame(i * 50, size=(64, 48)))
    with pytest.raises(SinkError) as info:
        sink.write(frame(200, size=(64, 48)))
    said = str(info.value)
    sink.abort() if end == "abort" else sink.close()
    sink.close()  # once only
    assert sink.kept_path is None
    assert [p.name for p in tmp_path.iterdir()] == [name], "the unplayable file is removed"
    assert said == f"cannot write frame 3 to video {path}: the disk is full"
    assert sink.not_kept == f"nothing of video {name} could be kept: {why}"
    # What the engine and the CLI report is the failed write's error: it says where the
    # frames went, so that nobody adds "kept in out.incomplete...".
    assert str(info.value) == (
        f"cannot write frame 3 to video {path}: the disk is full; {sink.not_kept}"
    )
    assert path.read_bytes() == b"an earlier, complete result"
    assert "moov" not in capfd.readouterr().err, "no FFmpeg complaint from reading it back"


def test_an_mp4_kept_after_a_failed_write_still_plays(tmp_path, monkeypatch):
    # A write that failed for another reason (the encoder refused a frame) leaves an MP4 that
    # its writer finished: its frames are kept as before, and no disk is said to be full.
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 2, lambda path: None))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: False, raising=False)
    sink.write(frame(0, size=(64, 48)))
    sink.write(frame(100, size=(64, 48)))
    with pytest.raises(SinkError) as info:
        sink.write(frame(200, size=(64, 48)))
    sink.close()
    assert str(info.value) == f"cannot write frame 2 to video {path}"
    assert sink.kept_path == tmp_path / "out.incomplete.mp4" and sink.not_kept is None
    assert len(read_video(sink.kept_path)) == 2


def test_an_aborted_video_that_does_not_play_is_not_kept_and_says_so(tmp_path, monkeypatch):
    # Aborted for another reason (the model failed) with no write failed, yet no frame plays:
    # abort() says so, as the engine reports what closing a sink raises.
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 5, without_index))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: False, raising=False)
    sink.write(frame(0, size=(64, 48)))
    with pytest.raises(SinkError) as info:
        sink.abort()
    assert str(info.value) == (
        "nothing of video out.mp4 could be kept: it lacks the index an MP4 writes at its end "
        "(1 frame written)"
    )
    assert sink.kept_path is None and list(tmp_path.iterdir()) == []


def test_timed_video_sink_keeps_the_live_clock(tmp_path):
    """Frames the live engine dropped leave slots that repeat the previous frame; a frame whose
    slot is taken is skipped; so the file plays at the speed it was filmed."""
    path = tmp_path / "live.avi"
    fps = 10.0
    times = [0.0, 0.1, 0.4, 0.42, 0.5, 0.9]  # slots 0, 1, 4, 4 (taken), 5, 9
    with VideoFileSink(path=path, size=(32, 24), fps=fps, timed=True) as sink:
        for i, t in enumerate(times):
            img = np.full((24, 32, 3), 40 * i, np.uint8)
            sink.write(Frame(img, i, 1000.0 + t))  # t_capture is perf_counter(): any origin
        assert sink.frames_skipped == 1
    got = [round(float(np.median(f)) / 40) for f in read_video(path)]
    assert got == [0, 1, 1, 1, 2, 4, 4, 4, 4, 5]
    assert len(got) / fps == pytest.approx(times[-1] + 1 / fps)


@pytest.mark.parametrize(
    ("camera_fps", "first_late"),
    [(30.0, 0.45), (30.0, 0.55), (29.97, 0.3), (30.03, 0.7)],  # the last two drift across 0.5
)
def test_a_timed_video_keeps_every_frame_of_a_camera_at_its_rate(tmp_path, camera_fps, first_late):
    """A camera near the file's rate whose frames sat near half a slot from the first one's
    (a first frame served from the driver's buffer, or a 29.97 fps camera drifting there):
    jitter of a couple of ms put two frames in one slot, one was skipped and its neighbour
    repeated (up to 75 of 300)."""
    rng = np.random.default_rng(0)
    fps, n = 30.0, 300
    times = [0.0] + [(first_late + i) / camera_fps for i in range(1, n)]
    times = [t + (rng.uniform(-0.002, 0.002) if i else 0.0) for i, t in enumerate(times)]
    with VideoFileSink(path=tmp_path / "cam.avi", size=(32, 24), fps=fps, timed=True) as sink:
        for i, t in enumerate(times):
            sink.write(Frame(np.full((24, 32, 3), i % 200, np.uint8), i, 500.0 + t))
        assert sink.frames_skipped == 0
        # Still the clock's length: within a frame of the time filmed.
        assert abs(sink.frames_written - round(times[-1] * fps) - 1) <= 1


@pytest.mark.parametrize("after", ["on time", "caught up slowly"])
def test_a_timed_video_keeps_every_frame_of_a_source_with_one_late_frame(tmp_path, after):
    # One frame 0.6 of a slot late (a USB hiccup, a slow decode), nothing dropped: it left a
    # repeat of the frame before, and a frame after it fell into a taken slot and was skipped,
    # a stutter in the file (`run` to a file under load, in CI).
    late = {"on time": [16.6, 17.0, 18.0], "caught up slowly": [16.6, 17.35, 18.1, 19.0]}[after]
    slots = [*range(16), *late, *range(len(late) + 16, 24)]
    with VideoFileSink(path=tmp_path / "late.avi", size=(32, 24), fps=30.0, timed=True) as sink:
        for i, at in enumerate(slots):
            sink.write(Frame(np.full((24, 32, 3), 10 * i, np.uint8), i, 500.0 + at / 30.0))
        assert (sink.frames_skipped, sink.frames_written) == (0, 24)
    assert [round(float(f.mean()) / 10) for f in read_video(tmp_path / "late.avi")] == list(
        range(24)
    )


@pytest.mark.parametrize("early", [0.0, 0.3])
def test_a_timed_video_holds_each_frame_of_a_half_rate_camera_for_two_slots(tmp_path, early):
    # A webcam at 15 fps in dim light, in a 30 fps file (its announced rate): its frames are
    # due every other slot, none dropped. One on time (in floating point a hair under its slot)
    # or a little early was taken for a late frame of a 30 fps source and pulled a slot
    # earlier: the frames were held 1, 3, 2 slots, a judder the rounding never had.
    t0 = 1234.5678
    times = [t0 + (2 * i - (early if i % 2 else 0.0)) / 30.0 for i in range(12)]
    with VideoFileSink(path=tmp_path / "half.avi", size=(32, 24), fps=30.0, timed=True) as sink:
        for i, t in enumerate(times):
            sink.write(Frame(np.full((24, 32, 3), 10 * i, np.uint8), i, t))
        assert (sink.frames_skipped, sink.frames_written) == (0, 23)
    shown = [round(float(f.mean()) / 10) for f in read_video(tmp_path / "half.avi")]
    assert shown == [i // 2 for i in range(23)]


def test_a_timed_video_skips_the_extra_frames_of_a_faster_source(tmp_path):
    # The frames of a 60 fps source that a 30 fps file has no slot for are skipped; pulling a
    # frame into the next slot must not let the file run ahead of the clock.
    rng = np.random.default_rng(1)
    times = [i / 60 + rng.uniform(-0.002, 0.002) for i in range(600)]
    times[0] = 0.0
    with VideoFileSink(path=tmp_path / "fast.avi", size=(32, 24), fps=30.0, timed=True) as sink:
        for i, t in enumerate(times):
            sink.write(Frame(np.zeros((24, 32, 3), np.uint8), i, 500.0 + t))
        assert 290 <= sink.frames_skipped <= 310
        assert abs(sink.frames_written - round(times[-1] * 30) - 1) <= 1


def test_a_stopped_timed_video_holds_its_last_frame_until_the_stop(tmp_path):
    """`run --source still.png --output r.mp4 --duration 2` behind a slow model made a one-frame
    file: the file ended at the last frame the model finished, not when the stream stopped."""
    path = tmp_path / "live.avi"
    fps = 10.0
    with VideoFileSink(path=path, size=(32, 24), fps=fps, timed=True) as sink:
        for i, t in enumerate([0.0, 0.1]):
            sink.write(Frame(np.full((24, 32, 3), 40 * i, np.uint8), i, 1000.0 + t))
        sink.mark_stop(1000.0 + 1.0)
    got = [round(float(np.median(f)) / 40) for f in read_video(path)]
    assert got == [0] + [1] * 9  # one second at 10 fps, the last frame held
    assert sink.frames_written == 10


def test_a_timed_video_not_stopped_or_aborted_gets_no_tail(tmp_path):
    # A source that ended (no mark_stop) ends the file at its last frame; an aborted or untimed
    # file ignores the stop time.
    for timed, end in [(True, "close"), (True, "abort"), (False, "close")]:
        path = tmp_path / f"{timed}-{end}.avi"
        sink = VideoFileSink(path=path, size=(32, 24), fps=10.0, timed=timed)
        sink.write(Frame(np.zeros((24, 32, 3), np.uint8), 0, 1000.0))
        if end == "abort":
            sink.mark_stop(1002.0)
            sink.abort()
            path = sink.incomplete_path
        else:
            if not timed:
                sink.mark_stop(1002.0)
            sink.close()
        assert len(read_video(path)) == 1, (timed, end)


class _SlowEncoder(_FFmpegWriter):
    """An FFmpeg writer that takes 20 ms a frame: an encoder slower than the clock (x264 on
    4K frames at 60 fps on two cores)."""

    def write(self, bgr: np.ndarray) -> bool:
        time.sleep(0.02)
        return super().write(bgr)


def test_a_stop_cuts_short_the_repeats_a_slow_encoder_is_still_writing(tmp_path, monkeypatch):
    # `run` of a 4K clip decoded in slow motion, Ctrl-C: the write in progress was re-encoding
    # one picture for every 1/60 s the model had taken (minutes of work behind the clock),
    # mark_stop waited for it under the sink's lock, then close() held the last frame until
    # the stop: SharpCam gave up after 30 s and exited with FFmpeg still writing.
    import threading

    import engine.sinks

    monkeypatch.setattr(engine.sinks, "_FFmpegWriter", _SlowEncoder)
    monkeypatch.setattr(VideoFileSink, "STOP_REPEATS_S", 0.3, raising=False)
    path = tmp_path / "live.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=30.0, timed=True)
    sink.write(Frame(np.full((24, 32, 3), 40, np.uint8), 0, 1000.0))
    # 299 frames dropped by a model that took 10 s: 299 repeats to write, 6 s of encoding.
    writing = threading.Thread(
        target=sink.write, args=(Frame(np.full((24, 32, 3), 80, np.uint8), 300, 1010.0),)
    )
    writing.start()
    while sink.frames_written < 5:
        time.sleep(0.01)
    t0 = time.perf_counter()
    sink.mark_stop(1020.0)  # 10 s later still: a tail of 300 more slots
    assert time.perf_counter() - t0 < 0.1  # not behind the write's lock
    writing.join(timeout=5.0)
    sink.close()
    elapsed = time.perf_counter() - t0
    assert not writing.is_alive()
    assert elapsed < 0.3 + 1.0, elapsed  # not the 12 s the repeats and the tail would take
    frames = read_video(path)
    assert len(frames) == sink.frames_written < 60
    assert round(float(np.median(frames[-1]))) == 80  # the new frame is in, after the cut
    assert sink.repeats_cut == 299 - (sink.frames_written - 2) + 299  # the write, the tail


def test_a_timed_video_whose_source_had_ended_gets_no_tail_at_a_stop(tmp_path):
    # Ctrl-C while the output was still writing the frames of a clip that had ended: the file
    # was held up to 2 s past its last frame, as if the clip had stalled.
    path = tmp_path / "live.avi"
    with VideoFileSink(path=path, size=(32, 24), fps=10.0, timed=True) as sink:
        sink.write(Frame(np.zeros((24, 32, 3), np.uint8), 0, 1000.0))
        sink.mark_stop(1005.0, last_capture=1000.0, hold=False)
    assert len(read_video(path)) == 1


def test_an_encoder_ended_by_a_caller_that_stopped_waiting_keeps_its_frames(tmp_path):
    # FFmpeg runs in its own session: `run` that gave up waiting for it exited with FFmpeg
    # still writing, which then finished the file under its hidden name.
    path = tmp_path / "live.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10.0)
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 10
    i = 0
    while b"00dc" not in (tmp_path / ".live.partial.avi").read_bytes():  # FFmpeg has frames
        assert time.monotonic() < deadline
        noise = rng.integers(0, 256, (24, 32, 3), np.uint8)  # 2 KB a frame: its buffer fills
        sink.write(Frame(noise, i, 1000.0 + i / 10))
        i += 1
    proc = sink._writer._proc
    sink.end_writer()
    with pytest.raises(SinkError, match="SharpCam stopped waiting for FFmpeg"):
        sink.close()
    assert proc.returncode not in (None, 0)  # ended by the SIGTERM, not finished as asked
    assert not path.exists() and not sink.unfinished_path
    assert sink.kept_path == tmp_path / "live.incomplete.avi"
    assert len(read_video(sink.kept_path)) >= 1


def _ffmpeg_has_frames(sink: VideoFileSink, partial: Path) -> None:
    """Write noise to ``sink`` until its FFmpeg has put frames in ``partial``."""
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 10
    i = 0
    while not partial.exists() or b"00dc" not in partial.read_bytes():
        assert time.monotonic() < deadline
        noise = rng.integers(0, 256, (24, 32, 3), np.uint8)  # 2 KB a frame: its buffer fills
        sink.write(Frame(noise, i, 1000.0 + i / 10))
        i += 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_an_encoder_that_does_not_end_when_told_is_killed(tmp_path):
    # run asks FFmpeg to end (SIGTERM: it finishes the file with its frames, exit 255) and,
    # where it has not within END_WRITER_S, kills it: FFmpeg must not outlive SharpCam.
    import signal

    path = tmp_path / "live.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10.0)
    _ffmpeg_has_frames(sink, tmp_path / ".live.partial.avi")
    proc = sink._writer._proc
    proc.send_signal(signal.SIGSTOP)  # a hung FFmpeg: SIGTERM waits, SIGKILL does not
    try:
        sink.end_writer()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)
        sink.end_writer(kill=True)
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(SinkError, match="SharpCam stopped waiting for FFmpeg"):
        sink.close()


def test_an_encoder_that_finished_is_not_failed_by_a_late_end(tmp_path):
    # end_writer() from a caller whose wait ran out just as FFmpeg finished: the file is whole,
    # and nothing may call it failed after the fact.
    path = tmp_path / "live.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10.0)
    sink.write(Frame(np.zeros((24, 32, 3), np.uint8), 0, 1000.0))
    sink.close()
    sink.end_writer()
    assert not sink._encoder.error and path.is_file()


def test_bytes_written_is_the_size_of_the_file_being_written(tmp_path):
    # What run's wait for an output counts as progress while FFmpeg catches up.
    path = tmp_path / "live.avi"
    partial = tmp_path / ".live.partial.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10.0)
    _ffmpeg_has_frames(sink, partial)
    assert sink.bytes_written == partial.stat().st_size > 0
    sink.close()
    assert sink.bytes_written == 0 and path.is_file()  # the hidden file has gone


def test_enoent_says_the_folder_is_missing_only_where_it_is(tmp_path: Path) -> None:
    # /proc answers ENOENT for a new file in a folder that is there; a folder removed meanwhile
    # answers the same, and then it does not exist.
    from engine.sinks import _write_problem

    refused = OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    assert _write_problem(refused, tmp_path) == (
        f"folder {tmp_path} does not let files be created in it"
    )
    gone = tmp_path / "gone"
    assert _write_problem(refused, gone) == f"folder {gone} does not exist"


@pytest.mark.parametrize(
    "code,needle",
    [
        (errno.EACCES, "no permission to write in folder {}"),
        (errno.EROFS, "folder {} is on a read-only"),
        (errno.ENOENT, "folder {} does not let files be created in it"),
    ],
)
def test_a_video_in_a_folder_it_may_not_write_names_the_cause(tmp_path, monkeypatch, code, needle):
    # It was "cannot write video X with codec mp4v": OpenCV's writer says only "not opened".
    import engine.sinks

    real_open = open

    def refused(file, *args, **kwargs):
        if Path(file).parent == tmp_path:
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(engine.sinks, "open", refused, raising=False)
    with pytest.raises(SinkError) as info:
        VideoFileSink(path=tmp_path / "out.mp4", size=(32, 24))
    assert f"cannot write video {tmp_path / 'out.mp4'}: {needle.format(tmp_path)}" in str(
        info.value
    )
    assert "codec" not in str(info.value)


def _without_root_powers() -> list[str] | None:
    """A command prefix that runs a process as one who may not write everywhere, or None."""
    if not hasattr(os, "geteuid"):
        return None
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def _opened_without_root_powers(tmp_path: Path, opening: str) -> tuple[Path, Callable[[Path], str]]:
    """A read-only folder, and ``open(target)``: what a process that root's powers do not let
    write there prints running ``opening`` (a sink made on ``sys.argv[1]``), "opened" or the
    SinkError's text, with its stderr after it."""
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("cannot run a process that root's powers do not let write anywhere")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    code = (
        "import sys\n"
        "from engine.sinks import ImageSink, SinkError, VideoFileSink\n"
        "try:\n"
        f"    {opening}\n"
        "    print('opened')\n"
        "except SinkError as exc:\n"
        "    print(exc)\n"
    )
    repo = Path(__file__).resolve().parents[1]

    def open_(target: Path) -> str:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", code, str(target)],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        return proc.stdout + proc.stderr

    return folder, open_


def test_a_video_in_a_read_only_folder_says_so_for_real(tmp_path):
    folder, open_ = _opened_without_root_powers(
        tmp_path, "VideoFileSink(path=sys.argv[1], size=(32, 24))"
    )
    for target, needle in [
        (folder / "out.mp4", f"no permission to write in folder {folder}"),
        (folder / "sub" / "out.mp4", f"cannot create folder {folder / 'sub'}: Permission denied"),
    ]:
        said = open_(target)
        assert needle in said and "codec" not in said, said
    assert list(folder.iterdir()) == []


def test_untimed_video_sink_keeps_every_frame(tmp_path):
    path = tmp_path / "all.avi"
    with VideoFileSink(path=path, size=(32, 24), fps=10) as sink:
        for i, t in enumerate([0.0, 0.0, 0.5, 0.5]):
            sink.write(Frame(np.full((24, 32, 3), 40 * i, np.uint8), i, t))
    assert [round(float(np.median(f)) / 40) for f in read_video(path)] == [0, 1, 2, 3]


def test_virtual_sink_opens_odd_sizes_as_even(recorder):
    with VirtualCameraSink(size=(33, 17), backend=RECORDER) as s:
        s.write(frame(5, size=(33, 17)))
    cam = recorder.instances[-1]
    assert (cam.width, cam.height) == (32, 16)
    assert cam.frames[0].shape == (16, 32, 3)


# --------------------------------------------------------------------------- images


def test_image_sink_folder_numbered(tmp_path):
    out = tmp_path / "frames"
    with open_sink(str(out) + "/", size=None) as sink:
        assert isinstance(sink, ImageSink) and not sink.single
        for i in range(3):
            sink.write(frame(i * 50, size=(7 + i, 5)))  # each frame keeps its own size
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    for i, f in enumerate(files):
        img = cv2.imread(str(f))
        assert img.shape == (5, 7 + i, 3)
        np.testing.assert_array_equal(img[0, 0], [7, 255 - i * 50, i * 50])  # BGR on disk


def test_image_sink_on_a_file_named_like_a_folder_says_so(tmp_path):
    # "cannot create folder notes: [Errno 17] File exists: 'notes'"
    notes = tmp_path / "notes"
    notes.write_text("keep me")
    with pytest.raises(SinkError) as info:
        open_sink(notes, size=None)
    assert str(info.value) == f"cannot write frames to {notes}: it is a file, not a folder"
    assert notes.read_text() == "keep me"
    # A link to a folder that does not exist is one, as `process` says: it was "a file".
    gone = tmp_path / "gone"
    gone.symlink_to(tmp_path / "nowhere")
    with pytest.raises(SinkError) as info:
        open_sink(gone, size=None)
    assert str(info.value) == (
        f"cannot create folder {gone}: {gone} is a link to something that does not exist"
    )


def test_image_sink_of_one_photo_says_image_not_frames(tmp_path: Path) -> None:
    # A photo's output was "images x.jpg", and "cannot write frames to notes: ...".
    notes = tmp_path / "notes"
    notes.write_text("keep me")
    with pytest.raises(SinkError) as info:
        open_sink(notes / "out.jpg", size=None)
    assert str(info.value) == f"cannot write image out.jpg to {notes}: it is a file, not a folder"
    photo = open_sink(tmp_path / "x.jpg", size=None)
    assert photo.describe() == "image x.jpg"
    with pytest.raises(ValueError, match=r"^image x\.jpg: expected an \(H, W, 3\) uint8"):
        photo.write(Frame(np.zeros((8, 8), np.uint8), 0, 0.0))
    frames = open_sink(tmp_path / "shots", size=None)
    assert frames.describe() == f"images {tmp_path / 'shots'}/frame_NNNNNN.png"


def test_image_sink_refuses_a_folder_with_earlier_frames(tmp_path):
    # A second, shorter run used to overwrite frame_000000.. and leave the first run's tail:
    # one numbered sequence mixing two recordings.
    out = tmp_path / "frames"
    with open_sink(out, size=None) as sink:
        for i in range(3):
            sink.write(frame(i))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SinkError, match="already holds frames"):
        open_sink(out, size=None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a frame")
    # Names that only start like a frame are a person's files, not an earlier run's frames.
    cv2.imwrite(str(tmp_path / "other" / "frame_4k_reference.png"), np.zeros((2, 2, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "other" / "frame_12.png"), np.zeros((2, 2, 3), np.uint8))
    with open_sink(tmp_path / "other", size=None) as sink:  # other files are no conflict
        sink.write(frame(1))
    assert (tmp_path / "other" / "frame_000000.png").is_file()
    (tmp_path / "upper").mkdir()
    (tmp_path / "upper" / "frame_000007.PNG").write_bytes(b"")
    with pytest.raises(SinkError, match="frame_000007.PNG"):
        open_sink(tmp_path / "upper", size=None)
    # Past a million frames the numbers grow a seventh digit: still this sink's frames.
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "frame_1000000.png").write_bytes(b"")
    with pytest.raises(SinkError, match="frame_1000000.png"):
        open_sink(tmp_path / "long", size=None)


def test_image_sink_single_file_resized(tmp_path):
    path = tmp_path / "one.png"
    with open_sink(path, size=(10, 6)) as sink:
        assert sink.single
        sink.write(frame(9, size=(40, 24), value=99))
    img = cv2.imread(str(path))
    assert img.shape == (6, 10, 3) and int(np.median(img)) == 99


@pytest.mark.parametrize("name", ["frames", "last.png"])
def test_image_sink_letterboxes_frames_of_another_aspect(tmp_path, name):
    # `run --source photos --output frames/` gave every photo the first one's size by
    # stretching: a portrait photo after a landscape one came out squashed four to one (a
    # camera back at 4:3 after a reconnect too), where the video sink letterboxes.
    with open_sink(tmp_path / name, size=(40, 20)) as sink:
        sink.write(frame(0, size=(20, 40), value=200))  # portrait into landscape
    path = tmp_path / name
    img = cv2.imread(str(path if path.suffix else path / "frame_000000.png"), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (20, 40)
    lit = np.flatnonzero(img[10] > 100)
    assert (lit[0], lit[-1]) == (15, 24)  # the picture 10 wide, centred on black bars
    assert img[:, :15].max() == 0 and img[:, 25:].max() == 0


def test_image_sink_writes_grey_only_formats(tmp_path):
    # PGM holds grey only: a colour frame used to fail to encode ("expects gray image").
    path = tmp_path / "one.pgm"
    with open_sink(path, size=None) as sink:
        sink.write(frame(0, size=(10, 6), value=80))
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img.shape == (6, 10) and int(np.median(img)) == 80


def test_image_sink_failed_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    import engine.sinks

    real_open = open

    class HalfWritten:
        """A file whose disk runs out half way through the image."""

        def __init__(self, target, mode: str) -> None:  # noqa: ANN001
            self.file = real_open(target, mode)

        def __enter__(self):  # noqa: ANN204
            return self

        def __exit__(self, *exc) -> None:  # noqa: ANN002
            self.file.close()

        def fileno(self) -> int:
            return self.file.fileno()

        def write(self, data) -> None:  # noqa: ANN001
            self.file.write(bytes(data)[:10])
            raise OSError(28, "No space left on device")

    path = tmp_path / "out.png"
    path.write_bytes(b"yesterday's result")
    monkeypatch.setattr(engine.sinks, "open", HalfWritten, raising=False)
    sink = open_sink(path, size=None)
    with pytest.raises(SinkError) as info:
        sink.write(frame(0))
    # The OS's words, not "[Errno 28] ...: '.out.partial.png'": a hidden name nobody gave.
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == b"yesterday's result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no partial left behind


def test_a_closed_image_sink_refuses_a_frame_and_writes_nothing(tmp_path: Path) -> None:
    # A frame after close() would add to a sequence already reported finished.
    out = tmp_path / "frames"
    sink = ImageSink(path=out)
    sink.write(frame(1))
    sink.close()
    with pytest.raises(SinkError, match="is closed"):
        sink.write(frame(2))
    assert [p.name for p in out.iterdir()] == ["frame_000000.png"]


def test_an_existing_folder_named_like_an_image_gets_numbered_frames(tmp_path: Path) -> None:
    # Taken for one image, every frame went to a file named like the folder, and failed.
    shots = tmp_path / "shots.png"
    shots.mkdir()
    with open_sink(shots, size=None) as sink:
        assert isinstance(sink, ImageSink) and not sink.single
        sink.write(frame(3))
    assert [p.name for p in shots.iterdir()] == ["frame_000000.png"]


def test_an_existing_folder_with_a_dot_in_its_name_takes_frames(tmp_path: Path) -> None:
    # `--output run.v2` names a folder that exists: not a file of an unknown format.
    out = tmp_path / "run.v2"
    out.mkdir()
    assert sink_kind(out) == "images"
    with open_sink(out, size=None) as sink:
        sink.write(frame(4))
    assert [p.name for p in out.iterdir()] == ["frame_000000.png"]


@pytest.mark.parametrize("ext", ["JPG", ".JPG"])
def test_numbered_frames_take_their_extension_in_any_case_with_or_without_a_dot(
    tmp_path: Path, ext: str
) -> None:
    # `ext="JPG"` wrote "frame_000000JPG", a name no viewer opens as a JPEG.
    out = tmp_path / "frames"
    with ImageSink(path=out, ext=ext) as sink:
        sink.write(frame(5))
    assert [p.name for p in out.iterdir()] == ["frame_000000.jpg"]
    assert cv2.imread(str(out / "frame_000000.jpg")) is not None


def test_only_a_sinks_own_frame_names_count_as_earlier_frames(tmp_path: Path) -> None:
    # A backup of an earlier frame (frame_000000.png.bak) is not one the new run overwrites.
    from engine.sinks import earlier_frame

    out = tmp_path / "frames"
    out.mkdir()
    (out / "frame_000000.png.bak").write_bytes(b"kept")
    assert earlier_frame(out) is None
    with open_sink(out, size=None) as sink:
        sink.write(frame(6))
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.png", "frame_000000.png.bak"]


def test_write_image_never_truncates_a_file_with_its_working_name(tmp_path):
    # `process .a.partial.png a.png` wrote the result into its input and then moved the
    # input onto a.png: the input was gone. A link of that name led the write elsewhere.
    from engine.sinks import write_image

    mine = tmp_path / ".a.partial.png"
    mine.write_bytes(b"my own file")
    other = tmp_path / "elsewhere.png"
    other.write_bytes(b"not to be touched")
    (tmp_path / ".a.partial-2.png").symlink_to(other)
    write_image(tmp_path / "a.png", frame(90).image)
    assert mine.read_bytes() == b"my own file"
    assert other.read_bytes() == b"not to be touched"
    assert int(np.median(cv2.imread(str(tmp_path / "a.png")))) == 90
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.partial-2.png",
        ".a.partial.png",
        "a.png",
        "elsewhere.png",
    ]


def test_a_folder_with_the_working_name_is_passed_as_windows_reports_it(tmp_path, monkeypatch):
    # Windows refuses an exclusive create on a folder with "access denied", which read as the
    # output folder being closed to us; the name is only taken, and the next one is free.
    import builtins

    from engine.sinks import write_image

    real_open = builtins.open

    def windows_open(path, mode="r", *args, **kwargs):
        if "x" in mode and Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", windows_open)
    (tmp_path / ".a.partial.png").mkdir()
    write_image(tmp_path / "a.png", frame(90).image)
    assert int(np.median(cv2.imread(str(tmp_path / "a.png")))) == 90
    assert (tmp_path / ".a.partial.png").is_dir()


def test_virtual_keyword_folds_case_but_not_the_device(monkeypatch):
    import engine.virtualcam

    opened = []
    monkeypatch.setattr(engine.virtualcam, "VirtualCameraSink", lambda **kw: opened.append(kw))
    open_sink("Virtual:/dev/Video9", size=(64, 48))
    open_sink("VIRTUAL", size=(64, 48))
    assert [kw.get("device") for kw in opened] == ["/dev/Video9", None]


def test_callback_sink_and_kinds(tmp_path):
    got = []
    sink = open_sink(lambda f: got.append(f.index), size=None)
    assert isinstance(sink, CallbackSink)
    sink.write(frame(3))
    sink.close()
    sink.write(frame(4))  # closed: ignored
    assert got == [3]
    # A sized callback sink resizes frames of another size (stretched, not letterboxed) and
    # passes frames of its own size as they are.
    seen: list[np.ndarray] = []
    sized = open_sink(lambda f: seen.append(f.image.copy()), size=(16, 12))
    big, same = picture((32, 24)), picture((16, 12))
    sized.write(Frame(big, 0, 0.0))
    sized.write(Frame(same, 1, 0.0))
    assert [s.shape for s in seen] == [(12, 16, 3), (12, 16, 3)]
    np.testing.assert_array_equal(seen[0], resize_to(big, (16, 12)))
    np.testing.assert_array_equal(seen[1], same)
    assert sink_kind("virtual") == "virtual" and sink_kind("virtual:/dev/video9") == "virtual"
    assert sink_kind("VIRTUAL") == "virtual" and sink_kind("Virtual:/dev/video9") == "virtual"
    assert sink_kind("virtually") == "images" and sink_kind("virtual.mp4") == "video"
    assert sink_kind("a.MP4") == "video" and sink_kind("b.jpg") == "images"
    assert sink_kind(tmp_path) == "images"
    with pytest.raises(SinkError, match="cannot tell what to write"):
        sink_kind("out.docx")


# --------------------------------------------------------------------------- review: timing


def _timed(path: Path, shots: list[tuple[int, float]], stop=None, last_capture=None) -> list[int]:
    """Write frames ``(index, t)`` (the n-th shot grey 40 * n) to a timed 10 fps video, mark the
    stop when given, close; the order number of the shot behind each frame of the file."""
    with VideoFileSink(path=path, size=(32, 24), fps=10.0, timed=True) as sink:
        for n, (index, t) in enumerate(shots):
            sink.write(Frame(np.full((24, 32, 3), 40 * n, np.uint8), index, 1000.0 + t))
        if stop is not None:
            sink.mark_stop(1000.0 + stop, last_capture=last_capture)
    return [round(float(np.median(f)) / 40) for f in read_video(path)]


def test_a_timed_video_keeps_the_seconds_a_slow_model_took(tmp_path):
    # `run --duration 6` behind a model taking 2.6 s a frame (a loaded CPU) made a 4 s file:
    # every gap over 2 s was cut to 2 s as if the camera had stalled, and so was the tail.
    # Here the engine dropped frames 2..30 (the source went on) while the model ran 3 s.
    got = _timed(tmp_path / "slow.avi", [(0, 0.0), (1, 0.1), (31, 3.1)], stop=6.0)
    assert len(got) == 60, "6 s at 10 fps"
    assert got == [0] + [1] * 30 + [2] * 29


def test_a_timed_video_still_shortens_a_stalled_source(tmp_path):
    # Consecutive indices 10 s apart: the source delivered nothing in between (a camera
    # reconnecting), which is shortened to MAX_GAP_S as before.
    got = _timed(tmp_path / "stall.avi", [(0, 0.0), (1, 10.0)])
    assert got == [0] * 21 + [1]
    # A stop long after the source stalled holds MAX_GAP_S past its last frame, when told.
    got = _timed(tmp_path / "tail.avi", [(0, 0.0)], stop=30.0, last_capture=1000.5)
    assert len(got) == 25


# --------------------------------------------------------------------------- review: boundaries

BAD_FRAMES = [
    (np.zeros((24, 32), np.uint8), ValueError, r"\(24, 32\) uint8"),
    (np.zeros((24, 32, 4), np.uint8), ValueError, r"\(24, 32, 4\) uint8"),
    (np.zeros((24, 32, 3), np.float32), TypeError, r"\(24, 32, 3\) float32"),
    (np.zeros((24, 32, 3), np.uint16), TypeError, r"\(24, 32, 3\) uint16"),
    (np.zeros((0, 32, 3), np.uint8), ValueError, r"\(0, 32, 3\) uint8"),
    ([[0]], TypeError, "list"),
]


@pytest.mark.parametrize("bad,error,got", BAD_FRAMES)
def test_a_video_sink_refuses_a_frame_of_another_layout_and_keeps_its_file(
    tmp_path, bad, error, got
):
    # Grey and 16-bit frames were encoded as garbage, a float one raised an OpenCV assertion.
    path = tmp_path / "out.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10)
    sink.write(frame(100, size=(32, 24)))
    with pytest.raises(
        error, match=rf"video out.avi: expected an \(H, W, 3\) uint8 RGB frame, got {got}"
    ):
        sink.write(Frame(bad, 1, 0.0))
    sink.write(frame(200, size=(32, 24)))
    sink.close()
    assert not sink.failed and sink.kept_path == path
    assert [round(float(np.median(f)) / 100) for f in read_video(path)] == [1, 2]


@pytest.mark.parametrize("bad,error,got", BAD_FRAMES)
def test_virtual_and_image_sinks_refuse_a_frame_of_another_layout(
    recorder, tmp_path, bad, error, got
):
    with VirtualCameraSink(size=(32, 24), backend=RECORDER, device="/dev/video7") as s:
        with pytest.raises(error, match=rf"virtual camera /dev/video7: expected .*{got}"):
            s.write(Frame(bad, 0, 0.0))
    assert recorder.instances[-1].frames == []
    sink = ImageSink(path=tmp_path / "frames")
    with pytest.raises(error, match=rf"images frames: expected .*{got}"):
        sink.write(Frame(bad, 0, 0.0))
    assert list((tmp_path / "frames").iterdir()) == []


def test_a_bad_fourcc_leaves_no_hidden_file(tmp_path, monkeypatch):
    # The FourCC's TypeError came after the hidden partial file was made, and left it there.
    with pytest.raises(ValueError, match="FourCC is 4 characters"):
        VideoFileSink(path=tmp_path / "x.avi", size=(32, 24), fourcc="MJP")
    assert list(tmp_path.iterdir()) == []

    # Whatever fails once that file exists removes it again.
    def broken_writer(*args):  # noqa: ANN002, ANN202
        raise cv2.error("VideoWriter exploded")

    import engine.sinks

    # The hidden file held open for its lock is closed too: nobody is left to close it.
    held: list[Any] = []
    keep_lock = engine.sinks._keep_lock
    monkeypatch.setattr(engine.sinks, "_keep_lock", lambda f: held.append(keep_lock(f)) or held[-1])
    monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: None)  # OpenCV's
    monkeypatch.setattr(cv2, "VideoWriter", broken_writer)
    with pytest.raises(cv2.error, match="exploded"):
        VideoFileSink(path=tmp_path / "y.avi", size=(32, 24))
    assert list(tmp_path.iterdir()) == []
    assert held and all(f is None or f.closed for f in held), held
    # An FFmpeg that cannot run: said as OpenCV's writer's failure is, nothing left.
    monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: "/no/such/ffmpeg")
    with pytest.raises(SinkError, match="cannot write video .*z.avi with codec MJPG"):
        VideoFileSink(path=tmp_path / "z.avi", size=(32, 24))
    assert list(tmp_path.iterdir()) == []


def x264_settings(path: Path) -> str:
    """The options string libx264 writes into its first frame (an SEI), as found in the file."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\0", start)].decode()


@pytest.mark.parametrize(("timed", "preset_subme"), [(False, "subme=2"), (True, "subme=0")])
def test_mp4_mov_and_mkv_are_h264_that_a_browser_plays(tmp_path, timed, preset_subme):
    # MPEG-4 part 2 (mp4v, all OpenCV's writer has here) plays in no browser, so in no chat
    # app's preview. H.264 in 4:2:0 (what every browser decodes), CRF 18, no B-frames
    # (retime_mp4 rewrites the durations alone); a live recording takes the fastest preset,
    # as the encoder shares the CPU with the model (x264's veryfast has subme=2, ultrafast 0).
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for name in ("a.mp4", "a.mov", "a.mkv"):
        path = tmp_path / name
        with VideoFileSink(path=path, size=(64, 48), fps=25, timed=timed) as sink:
            assert sink.fourcc == "avc1" and "(avc1)" in sink.describe()
            for i in range(3):
                sink.write(Frame(np.full((48, 64, 3), i * 60, np.uint8), i, i / 25))
        info = subprocess.run(
            [ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True
        )
        assert "Video: h264 (" in info.stderr and "yuv420p(tv, smpte170m/bt709/bt709" in info.stderr
        settings = x264_settings(path)
        assert "crf=18.0" in settings and "bframes=0" in settings, settings
        assert f" {preset_subme} " in settings, settings
        assert [round(float(np.median(f)) / 60) for f in read_video(path)] == [0, 1, 2]


def test_without_an_ffmpeg_that_writes_h264_mp4_is_mp4v_and_mkv_mjpeg(tmp_path, monkeypatch):
    # An FFmpeg without libx264 (a distribution's LGPL build) or none at all: the codecs
    # OpenCV's writer has, as before; a FourCC asked for by name is not swapped.
    import engine.sinks

    without_x264(monkeypatch)
    for name, fourcc in (
        ("a.mp4", "mp4v"),
        ("a.mov", "mp4v"),
        ("a.mkv", "MJPG"),
        ("a.avi", "MJPG"),
    ):
        with VideoFileSink(path=tmp_path / name, size=(64, 48), fps=25) as sink:
            assert sink.fourcc == fourcc, name
            assert isinstance(sink._writer, engine.sinks._FFmpegWriter)
            sink.write(frame(128, size=(64, 48)))
        assert len(read_video(tmp_path / name)) == 1
    monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, ext: None)
    with VideoFileSink(path=tmp_path / "b.mp4", size=(64, 48), fps=25) as sink:
        assert sink.fourcc == "mp4v" and isinstance(sink._writer, cv2.VideoWriter)
        sink.write(frame(128, size=(64, 48)))
    assert len(read_video(tmp_path / "b.mp4")) == 1
    with pytest.raises(SinkError, match="cannot write video .*c.mp4 with codec avc1"):
        VideoFileSink(path=tmp_path / "c.mp4", size=(64, 48), fourcc="avc1")
    assert not any(p.name.startswith(".c") for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["out.mkv", "out.avi", "out.mp4"])
def test_a_failed_write_says_how_many_frames_the_kept_file_holds(tmp_path, monkeypatch, name):
    # On a full disk FFmpeg ends with frames still in the pipe and its encoder: "cannot
    # write frame 12", and the kept file held 5. The kept file is counted.
    import engine.sinks

    real_writer = engine.sinks._FFmpegWriter

    class EndsEarly:
        def __init__(self, *args, **kwargs):
            self.real, self.writes = real_writer(*args, **kwargs), 0

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return self.real.isOpened()

        def write(self, bgr):
            self.writes += 1
            if self.writes <= 6:
                return self.real.write(bgr)
            if self.writes == 7:
                self.real.release()  # FFmpeg has finished the file with six frames
            return self.writes < 12  # taken by the pipe, as far as a write can tell

        def release(self):
            self.real.release()

    monkeypatch.setattr(engine.sinks, "_FFmpegWriter", EndsEarly)
    sink = VideoFileSink(path=tmp_path / name, size=(64, 48), fps=25)
    with pytest.raises(SinkError, match="cannot write frame 11 to video"):
        for i in range(20):
            sink.write(frame(i * 10, size=(64, 48)))
    sink.close()
    kept = tmp_path / name.replace("out.", "out.incomplete.")
    assert sink.kept_path == kept and sink.frames_written == 11
    assert sink.frames_kept == 6 == len(read_video(kept))
    assert sink.kept_phrase() == f"6 frames are kept in {kept}"


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001])
def test_a_frame_cut_off_by_the_full_disk_is_not_counted(tmp_path, fps):
    # A disk that fills inside a frame's chunk leaves a fragment of it (20 bytes of a 66 KB
    # JPEG): FFmpeg lists it as a packet, flagged corrupt, and nothing decodes from it. It
    # was counted: "48 frames are kept", and 47 decoded. At 29.97 fps too, whose AVI clock
    # is 100/2997 s: taken for one FFmpeg cannot list, it was counted from OpenCV's index.
    import engine.sinks
    from engine.remux import find_ffmpeg, packet_count

    path = tmp_path / "a.avi"
    rng = np.random.default_rng(1)
    with VideoFileSink(path=path, size=(64, 48), fps=fps) as sink:
        for i in range(5):
            sink.write(Frame(rng.integers(0, 256, (48, 64, 3), np.uint8), i, i / fps))
    data = path.read_bytes()
    last = data.rindex(b"00dc", 0, data.rindex(b"idx1"))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: last + 8 + 20])
    assert packet_count(path, ffmpeg=find_ffmpeg()) == 5
    assert packet_count(cut, ffmpeg=find_ffmpeg()) == 4 == len(read_video(cut))
    assert engine.sinks._count_frames(cut) == 4


def test_a_disk_full_as_opencv_s_writer_finishes_is_a_failure(tmp_path, monkeypatch):
    # OpenCV's writer says nothing of a failed write: without FFmpeg, "30 frames -> out.mkv",
    # exit 0, for a file holding 24 (an .mp4 without its index).
    import engine.sinks

    monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: None)
    out = tmp_path / "out.avi"
    sink = VideoFileSink(path=out, size=(64, 48), fps=25)
    assert isinstance(sink._writer, cv2.VideoWriter)
    for i in range(3):
        sink.write(frame(i * 40, size=(64, 48)))
    monkeypatch.setattr(engine.sinks, "_disk_full", lambda folder: True)
    kept = tmp_path / "out.incomplete.avi"
    with pytest.raises(SinkError, match=r"cannot finish video .*out.avi: the disk is full; 3 "):
        sink.close()
    assert sink.failed and sink.kept_path == kept and not out.exists()
    # With room to spare it is finished, as before.
    monkeypatch.setattr(engine.sinks, "_disk_full", lambda folder: False)
    with VideoFileSink(path=out, size=(64, 48), fps=25) as sink:
        sink.write(frame(0, size=(64, 48)))
    assert not sink.failed and len(read_video(out)) == 1


def test_a_kept_file_is_counted_without_ffmpeg_too(tmp_path, monkeypatch):
    import engine.remux
    import engine.sinks

    monkeypatch.setattr(engine.remux, "find_ffmpeg", lambda: None)
    monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: None)
    path = tmp_path / "a.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
        for i in range(4):
            sink.write(frame(i * 10, size=(64, 48)))
    assert engine.sinks._count_frames(path) == 4
    assert engine.sinks._count_frames(tmp_path / "missing.mp4") is None


def test_an_ffmpeg_is_used_for_the_codecs_and_the_colour_filter_it_has(monkeypatch):
    # A distribution's LGPL build has no libx264; one without setparams (the colour tag)
    # would fail every file it was given.
    import engine.sinks

    monkeypatch.setattr(engine.remux, "find_ffmpeg", lambda: "/opt/ffmpeg")
    lists = {
        "encoders": " V....D libx264  libx264 H.264\n V.S..D mpeg4  MPEG-4 part 2\n",
        "filters": " .. format  V->V  Convert\n .. setparams  V->V  Force\n",
    }
    monkeypatch.setattr(engine.sinks, "ffmpeg_list", lambda ffmpeg, kind: lists[kind])
    assert engine.sinks._ffmpeg_for("avc1", ".mp4") == "/opt/ffmpeg"
    assert engine.sinks._ffmpeg_for("MJPG", ".avi") is None  # no mjpeg encoder listed
    # A container FFmpeg is not told how to write (a `fourcc=` given through the API): OpenCV's.
    assert engine.sinks._ffmpeg_for("avc1", ".wmv") is None
    lists["encoders"] = " V.S..D mpeg4  MPEG-4 part 2\n V....D libx264rgb  RGB\n"
    assert engine.sinks._ffmpeg_for("avc1", ".mp4") is None
    assert engine.sinks._ffmpeg_for("mp4v", ".mp4") == "/opt/ffmpeg"
    lists["encoders"] += " V....D libx264  libx264 H.264\n"
    lists["filters"] = " .. format  V->V  Convert\n .. setparamsx  V->V  Other\n"
    assert engine.sinks._ffmpeg_for("avc1", ".mp4") is None
    # mp4v is tagged after the fact: FFmpeg still writes it, rounding where OpenCV truncated.
    assert engine.sinks._ffmpeg_for("mp4v", ".mp4") == "/opt/ffmpeg"


def test_an_ffmpeg_without_the_colour_filter_still_writes_mp4v_right(tmp_path, monkeypatch):
    # One without setparams made every file go through OpenCV's writer: a 128 grey came back
    # 123/126/124. Its mp4v is written by FFmpeg, untagged, and tagged on closing.
    import engine.sinks

    monkeypatch.setattr(engine.sinks, "_has_setparams", lambda ffmpeg: False)
    path = tmp_path / "g.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
        assert sink.fourcc == "mp4v" and isinstance(sink._writer, engine.sinks._FFmpegWriter)
        sink.write(Frame(np.full((48, 64, 3), 128, np.uint8), 0, 0.0))
    assert np.abs(read_video(path)[0].astype(int) - 128).max() <= 1
    assert colour_boxes(path) == [b"nclx\0\x01\0\x01\0\x06\0"]


def test_video_files_keep_their_colours(tmp_path):
    # OpenCV's writer converts to YUV by swscale's truncating path: a 128 grey came back
    # 124/126/123 from an .mp4 and 126/128/126 from an .avi, every video a little darker and
    # greener. FFmpeg, fed the frames raw, rounds.
    import engine.sinks

    assert engine.sinks._ffmpeg_for("mp4v", ".mp4") is not None  # imageio-ffmpeg's
    y, x = np.mgrid[:96, :128]
    ramp = np.stack([x * 2, y * 2, np.full_like(x, 128)], -1).astype(np.uint8)
    for name in ("g.mp4", "g.mov", "g.avi", "g.mkv"):
        sink = VideoFileSink(path=tmp_path / name, size=(128, 96), fps=25.0)
        for i, level in enumerate((40, 128, 200)):
            sink.write(Frame(np.full((96, 128, 3), level, np.uint8), i, i / 25))
        sink.write(Frame(ramp, 3, 3 / 25))
        sink.close()
        frames = [f[..., ::-1] for f in read_video(tmp_path / name)]
        assert len(frames) == 4, name
        for got, level in zip(frames, (40, 128, 200), strict=False):
            assert np.abs(got.astype(int) - level).max() <= 1, (name, level)
        # A colour ramp keeps what 4:2:0 colour and the codec lose: OpenCV's .mp4 was 2.0
        # levels off on average.
        assert np.abs(frames[3].astype(int) - ramp).mean() < 1.6, name


@pytest.mark.parametrize(
    "size,fps,match",
    [
        ((0, 0), 30, "positive \\(W, H\\) size"),
        ((-4, 24), 30, "positive \\(W, H\\) size"),
        ((32, 0), 30, "positive \\(W, H\\) size"),
        ((32, 24), 0, "positive frame rate"),
        ((32, 24), float("nan"), "positive frame rate"),
        ((32, 24), float("inf"), "positive frame rate"),  # passes `> 0`; no device takes it
        ((32, 24), -1, "positive frame rate"),
    ],
)
def test_virtual_sink_checks_size_and_rate_before_opening_a_device(recorder, size, fps, match):
    # (0, 0) opened a 2x2 camera, (32, 0) one 2 pixels high; fps 0 said "cannot open a virtual camera" with the steps to
    # install one; NaN and negative rates reached the device.
    with pytest.raises(ValueError, match=match):
        VirtualCameraSink(size=size, fps=fps, backend=RECORDER)
    assert recorder.instances == []


def test_virtual_sink_that_fails_after_opening_releases_the_device(recorder):
    class NoName(RecordingCamera):
        def device(self) -> str:
            raise RuntimeError("device name unavailable")

    pyvirtualcam.register_backend("sharpcam-test-noname", NoName)
    held: list[BaseException] = []
    try:
        VirtualCameraSink(size=(32, 24), backend="sharpcam-test-noname")
    except RuntimeError as exc:
        # Kept, as a caller that shows the error later does: its traceback keeps the half-made
        # sink alive, and pyvirtualcam's own close on garbage collection never comes.
        held.append(exc)
    finally:
        pyvirtualcam.camera.BACKENDS.pop("sharpcam-test-noname", None)
    assert "device name unavailable" in str(held[0])
    assert [cam.closed for cam in recorder.instances] == [1]


def test_virtual_sink_counts_its_frames_after_close(recorder):
    s = VirtualCameraSink(size=(8, 8), backend=RECORDER)
    for i in range(3):
        s.write(frame(i, (8, 8)))
    s.close()
    assert s.frames_sent == 3  # was 0 once closed


def test_virtual_sink_counts_the_frames_the_device_took(recorder):
    # `run --output virtual` says "output virtual camera ... failed after N frames" from this
    # count (pyvirtualcam's frames_sent includes a send that failed): it must follow every write.
    with VirtualCameraSink(size=(8, 8), backend=RECORDER) as s:
        for i in range(3):
            s.write(frame(i, (8, 8)))
        assert s.frames_written == 3 == len(recorder.instances[-1].frames)


def test_a_virtual_camera_is_its_source_by_any_name(tmp_path):
    from engine.virtualcam import is_source_device

    link = tmp_path / "usb-SharpCam-video-index0"
    link.symlink_to("/dev/video7")  # as /dev/v4l/by-id/ names a node
    assert is_source_device("/dev/video7", "/dev/video7")
    assert is_source_device(str(link), "/dev/video7")
    assert is_source_device("/dev/video7", str(link))
    assert not is_source_device("/dev/video8", "/dev/video7")
    assert not is_source_device(None, "/dev/video7")
    assert not is_source_device("OBS Virtual Camera", "/dev/video7")
    if sys.platform.startswith("linux"):  # OpenCV's V4L2 index N is /dev/videoN
        assert is_source_device("/dev/video7", "7") and is_source_device(str(link), 7)
        assert not is_source_device("/dev/video17", "7")
    if Path("/dev/null").exists() and hasattr(os, "mknod"):
        twin = tmp_path / "null-twin"  # another node of one device: same major and minor
        try:
            os.mknod(twin, 0o600 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
        except OSError:
            pass  # not allowed here
        else:
            assert is_source_device(str(twin), "/dev/null")
    # Files that are not devices all have device number 0: only character devices compare so.
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    b.write_bytes(b"")
    assert not is_source_device(str(a), str(b))


# --------------------------------------------------------------------------- review: survivors


@pytest.mark.parametrize("writer_after", ["still failing", "recovered"])
def test_a_failed_timed_video_gets_no_tail_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer_after: str
) -> None:
    # close() after a failed write keeps the frames as they are: holding the last frame until
    # the stop would write into a file known to be incomplete (and, the disk still full, fail
    # again from close(), replacing the failed write's error with another).
    path = tmp_path / "live.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10.0, timed=True)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 2, lambda path: None))
    for i, t in enumerate([0.0, 0.1]):
        sink.write(Frame(np.full((24, 32, 3), 40 * i, np.uint8), i, 1000.0 + t))
    with pytest.raises(SinkError, match="cannot write frame 2") as info:
        sink.write(Frame(np.full((24, 32, 3), 80, np.uint8), 2, 1000.2))
    error = sink._write_error
    assert error is info.value
    if writer_after == "recovered":
        sink._writer.room = 1000  # the disk has room again: padding would succeed
    sink.mark_stop(1000.0 + 1.0)
    sink.close()  # no new error
    assert sink.frames_written == 2 and sink._write_error is error
    assert str(error) == f"cannot write frame 2 to video {path}"
    assert sink.kept_path == tmp_path / "live.incomplete.avi"
    assert len(read_video(sink.kept_path)) == 2


def test_virtual_with_an_empty_device_lets_the_backend_choose(
    recorder: type[RecordingCamera],
) -> None:
    # "virtual:" names no device: the backend gets None (its first device), not "".
    with open_sink("virtual:", size=(32, 24), backend=RECORDER) as s:
        assert s.device == "/dev/recorder0"
    assert recorder.instances[-1].device_asked is None
    with open_sink("virtual:/dev/video9", size=(32, 24), backend=RECORDER):
        pass
    assert recorder.instances[-1].device_asked == "/dev/video9"


def _box(kind: bytes, payload: bytes = b"", *, size: int | None = None) -> bytes:
    """An MP4 box: 32-bit length (``size`` overrides it: 0 = to the end of the file), type."""
    return struct.pack(">I4s", 8 + len(payload) if size is None else size, kind) + payload


def _large_box(kind: bytes, payload: bytes) -> bytes:
    """An MP4 box with a 64-bit length: 1, type, then the length as 8 more bytes."""
    return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload


@pytest.mark.timeout(5)  # a box of length 0 read as "advance by 0" looped forever
def test_mp4_boxes_of_length_zero_and_64_bits_are_read_as_the_format_says(tmp_path: Path) -> None:
    from engine.sinks import _has_moov, _unplayable

    def mp4(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    ftyp = _box(b"ftyp", b"isom" + bytes(4))
    # An mdat that never finished (length 0: it runs to the end of the file), no moov.
    path = mp4("open.mp4", ftyp + _box(b"mdat", bytes(40), size=0))
    assert not _has_moov(path, path.stat().st_size)
    assert _unplayable(path) == "index"
    # A 64-bit mdat (what large recordings have) before the moov: the moov is found.
    path = mp4("large.mp4", ftyp + _large_box(b"mdat", bytes(40)) + _box(b"moov", bytes(8)))
    assert _has_moov(path, path.stat().st_size)
    # A box shorter than its own header: not read on.
    path = mp4("short.mp4", ftyp + _box(b"mdat", size=4) + _box(b"moov"))
    assert not _has_moov(path, path.stat().st_size)


def test_a_real_mp4_with_a_64_bit_mdat_plays(tmp_path: Path) -> None:
    # The writer reserves a `free` box before `mdat` for a 64-bit length; used, the frames stay
    # where they were and the file plays: it must not be taken for one without its index.
    from engine.sinks import _unplayable

    path = tmp_path / "out.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
        for i in range(3):
            sink.write(frame(i * 50, size=(64, 48)))
    data = path.read_bytes()
    at = data.find(b"free") - 4
    (free_len, _), (mdat_len, mdat) = (struct.unpack(">I4s", data[p : p + 8]) for p in (at, at + 8))
    assert (free_len, mdat) == (8, b"mdat"), "the writer left room for a 64-bit length"
    path.write_bytes(data[:at] + struct.pack(">I4sQ", 1, b"mdat", 8 + mdat_len) + data[at + 16 :])
    assert _unplayable(path) is None
    assert len(read_video(path)) == 3


def test_a_codec_opencv_cannot_write_is_a_sink_error_leaving_no_file(tmp_path: Path) -> None:
    # OpenCV's writer says "not opened" only through isOpened(): a sink without a writer wrote
    # frames into nothing, and the hidden file stayed behind.
    with pytest.raises(SinkError, match=r"cannot write video .*x\.avi with codec ZZZZ"):
        VideoFileSink(path=tmp_path / "x.avi", size=(32, 24), fourcc="ZZZZ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [-5, 0, float("nan")])
def test_a_video_without_a_usable_rate_is_written_at_30_fps(tmp_path: Path, fps: float) -> None:
    with VideoFileSink(path=tmp_path / "x.avi", size=(32, 24), fps=fps) as sink:
        assert sink.fps == 30.0 and sink.describe().endswith("@ 30 fps (MJPG)")
        sink.write(frame(0, size=(32, 24)))
    cap = cv2.VideoCapture(str(tmp_path / "x.avi"))
    try:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    finally:
        cap.release()


def test_virtual_sink_refuses_a_pixel_format_it_does_not_convert_to(
    recorder: type[RecordingCamera],
) -> None:
    # pyvirtualcam knows I420, but the sink sends RGB or BGR frames: opened so, every send
    # failed on the frame's shape.
    with pytest.raises(ValueError, match="unsupported virtual camera pixel format 'I420'"):
        VirtualCameraSink(size=(32, 24), backend=RECORDER, fmt="I420")
    assert recorder.instances == []


def test_a_device_that_cannot_be_opened_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"broken": BrokenCamera})
    with pytest.raises(VirtualCameraUnavailable) as info:
        VirtualCameraSink(size=(32, 24), device="/dev/video10", backend="broken")
    assert "cannot open device '/dev/video10': " in str(info.value)
    assert "no loopback device here" in str(info.value)


def test_virtual_camera_status_never_raises(
    monkeypatch: pytest.MonkeyPatch, recorder: type[RecordingCamera]
) -> None:
    # A backend that opens and then fails in another way than VirtualCameraUnavailable: the
    # status (`sharpcam doctor`) says so instead of raising.
    class NoName(RecordingCamera):
        def device(self) -> str:
            raise RuntimeError("device name unavailable")

    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"noname": NoName})
    ok, msg = virtual_camera_status()
    assert not ok
    assert msg.startswith("virtual camera check failed: device name unavailable")
    assert virtual_camera_guidance() in msg
    assert [cam.closed for cam in recorder.instances] == [1]


@pytest.mark.parametrize("name", ["shots.png/", "clip.mp4/"])
def test_a_name_ending_in_a_slash_is_not_written_as_a_file(tmp_path, name):
    # Path() drops the slash: `shots.png/` wrote every frame over one file, `clip.mp4/` a video.
    spec = f"{tmp_path}/{name}"
    with pytest.raises(SinkError, match="ends with a slash \\(a folder\\) but is named like"):
        sink_kind(spec)
    with pytest.raises(SinkError, match="ends with a slash"):
        open_sink(spec, size=(32, 24))
    assert list(tmp_path.iterdir()) == []
    # A folder of that name that exists is a folder; ImageSink given the slash writes into it.
    (tmp_path / "shots.png").mkdir()
    assert sink_kind(spec.replace("clip.mp4", "shots.png")) == "images"
    sink = ImageSink(path=f"{tmp_path}/new.png/")
    sink.write(Frame(np.zeros((24, 32, 3), np.uint8), 0, 0.0))
    sink.close()
    assert (tmp_path / "new.png").is_dir() and len(list((tmp_path / "new.png").iterdir())) == 1


def test_a_video_left_on_an_error_keeps_an_earlier_file_of_its_name(tmp_path):
    # `with VideoFileSink(...)` left on an exception published the partial frames under the
    # real name, over the complete recording there.
    path = tmp_path / "out.avi"
    with VideoFileSink(path=path, size=(32, 24), fps=10.0) as sink:
        for i in range(5):
            sink.write(Frame(np.full((24, 32, 3), 40 * i, np.uint8), i, float(i)))
    assert len(read_video(path)) == 5
    with pytest.raises(RuntimeError, match="producer failed"):
        with VideoFileSink(path=path, size=(32, 24), fps=10.0) as sink:
            for i in range(3):
                sink.write(Frame(np.zeros((24, 32, 3), np.uint8), i, float(i)))
            raise RuntimeError("producer failed")
    assert len(read_video(path)) == 5  # the earlier, complete recording
    assert sink.kept_path == tmp_path / "out.incomplete.avi"
    assert len(read_video(sink.kept_path)) == 3


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_a_video_output_whose_name_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/o\xe9.mp4")
    with pytest.raises(SinkError, match=r"o\\udce9.mp4 is not valid UTF-8"):
        VideoFileSink(path=odd, size=(32, 24), fps=10.0)
    assert list(tmp_path.iterdir()) == []  # no hidden partial file left


# --------------------------------------------------------------------------- long names


def long_name(ext: str, length: int = 250) -> str:
    """A file name of ``length`` bytes: 2-byte letters (the limit counts bytes), then ASCII."""
    stem = "é" * ((length - len(ext)) // 2) + "a" * ((length - len(ext)) % 2)
    name = stem + ext
    assert len(os.fsencode(name)) == length
    return name


def test_a_video_named_near_the_length_limit_is_written_under_its_exact_name(tmp_path):
    # The hidden working name (.NAME.partial.EXT, 9 bytes more) did not fit in the 255 bytes a
    # file name takes: a 250-byte name failed with "File name too long".
    from engine.sinks import incomplete_path, partial_path

    path = tmp_path / long_name(".avi")
    (tmp_path / path.name.replace(".avi", ".mp4")).write_bytes(b"")  # a neighbour cut alike
    for kept in (False, True):
        sink = VideoFileSink(path=path, size=(64, 48), fps=25)
        assert len(os.fsencode(sink._partial.name)) <= 255 - len("-1000")
        assert sink._partial.name.startswith(".") and sink._partial.suffix == ".avi"
        assert sink._partial == partial_path(path)
        for i in range(3):
            sink.write(frame(i * 80, size=(64, 48)))
        sink.abort() if kept else sink.close()
        target = incomplete_path(path) if kept else path
        assert sink.kept_path == target and target.parent == tmp_path
        assert len(os.fsencode(target.name)) <= 255 - len("-1000")
        assert len(read_video(target)) == 3
    assert partial_path(path) != partial_path(path.with_suffix(".mp4"))
    # Names that fit are the ones they always were.
    assert partial_path(tmp_path / "out.mp4") == tmp_path / ".out.partial.mp4"
    assert incomplete_path(tmp_path / "out.mp4") == tmp_path / "out.incomplete.mp4"


def test_an_image_named_near_the_length_limit_is_written_under_its_exact_name(tmp_path):
    from engine.sinks import write_image

    path = tmp_path / long_name(".png")
    write_image(path, np.full((6, 10, 3), 70, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert int(cv2.imread(str(path))[0, 0, 0]) == 70


def test_a_name_longer_than_the_file_system_takes_is_refused_in_one_line(tmp_path):
    from engine.sinks import check_name_fits, write_image

    too_long = tmp_path / long_name(".mp4", 257)
    with pytest.raises(SinkError, match=r"its name is 257 bytes long, more than the 255 the"):
        VideoFileSink(path=too_long, size=(64, 48))
    with pytest.raises(SinkError, match=r"its name is 257 bytes long"):
        write_image(too_long.with_suffix(".png"), np.zeros((4, 4, 3), np.uint8))
    folder = tmp_path / long_name("", 256)
    with pytest.raises(SinkError, match=r"the name of folder .* is 256 bytes long"):
        check_name_fits(folder / "out.mp4")
    check_name_fits(tmp_path / long_name(".mp4", 255))
    assert list(tmp_path.iterdir()) == []


def test_working_names_are_cut_only_past_the_limit_and_two_cut_alike_stay_apart(
    tmp_path: Path,
) -> None:
    from engine.sinks import incomplete_path, partial_path

    # 255 bytes less 5 for a number ("-1000"): a kept name of 250 bytes is kept whole.
    stem = "a" * (250 - len(".incomplete.mp4"))
    assert incomplete_path(tmp_path / f"{stem}.mp4").name == f"{stem}.incomplete.mp4"
    assert "~" in incomplete_path(tmp_path / f"{stem}a.mp4").name
    # Cut to fit, two outputs that differ only at their ends kept their frames apart.
    one, two = tmp_path / ("x" * 240 + "1.mp4"), tmp_path / ("x" * 240 + "2.mp4")
    assert partial_path(one) != partial_path(two)
    assert incomplete_path(one) != incomplete_path(two)


def _path_of(folder: Path, length: int, ext: str) -> Path:
    """A path of ``length`` bytes under ``folder``: folders of 100 bytes, then a file name."""
    text = str(folder)
    while length - len(os.fsencode(text)) > 210:
        text += "/" + "d" * 100
    text += "/" + "f" * (length - len(os.fsencode(text)) - 1 - len(ext)) + ext
    assert len(os.fsencode(text)) == length
    return Path(text)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows limits names, not whole paths")
def test_a_path_is_refused_only_past_the_length_the_system_takes(tmp_path: Path) -> None:
    from engine.sinks import _PATH_ROOM, PATH_MAX, check_name_fits, write_image

    most = PATH_MAX - 1 - _PATH_ROOM
    check_name_fits(_path_of(tmp_path, most, ".mp4"))
    with pytest.raises(SinkError, match=f"is {most + 1} bytes long, more than the {most} "):
        check_name_fits(_path_of(tmp_path, most + 1, ".mp4"))
    # An image needs room for its own working name only: a path a video could not take is
    # written (a frame in a deep folder was refused at its first write, the model run).
    deep = _path_of(tmp_path, most + 20, ".png")
    deep.parent.mkdir(parents=True)
    write_image(deep, np.full((4, 6, 3), 30, np.uint8))
    assert [p.name for p in deep.parent.iterdir()] == [deep.name]


# --------------------------------------------------------------------------- image metadata


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_write_image_keeps_exif_upright_and_the_colour_profile(tmp_path, ext, order):
    # The date taken, the camera and a phone's Display P3 profile were dropped without a word.
    from videos import (
        DATE_TAKEN,
        MAKE,
        ORIENTATION,
        PIXEL_X,
        PIXEL_Y,
        exif_block,
        exif_tags,
        icc_profile,
    )

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    icc = icc_profile()  # an RGB one, over one JPEG segment
    metadata = ImageMetadata(exif=exif_block(order=order), icc=icc)
    path = tmp_path / f"out{ext}"
    rgb = np.full((128, 96, 3), 50, np.uint8)  # the 96x128 grid turned upright: 128 tall
    assert metadata_lost(metadata, path) == []
    write_image(path, rgb, metadata=metadata)
    assert int(cv2.imread(str(path))[0, 0, 0]) == 50  # still an image OpenCV decodes alike
    kept = read_image_metadata(path)
    assert kept.icc == icc
    tags = exif_tags(kept.exif)
    assert tags[MAKE] == b"Canon" and tags[DATE_TAKEN] == b"2021:07:04 10:11:12"
    # The pixels are upright already: the orientation kept would turn them again; and the
    # thumbnail (the unprocessed picture, as stored) is no longer linked.
    assert tags[ORIENTATION] == 1 and tags["ifd1"] == 0
    assert (tags[PIXEL_X], tags[PIXEL_Y]) == (96, 128)
    assert cv2.imread(str(path)).shape == (128, 96, 3)  # not turned by the reader either
    try:
        from PIL import Image  # not a dependency: a second opinion where it is installed
    except ImportError:
        return
    with Image.open(path) as im:
        assert im.getexif()[ORIENTATION] == 1 and im.getexif()[MAKE] == "Canon"
        assert im.info["icc_profile"] == icc


def test_write_image_writes_webp_lossy_unless_the_input_was_lossless(tmp_path: Path) -> None:
    # OpenCV writes WebP lossless unless told a quality: a 7 KB lossy WebP came out 55 KB.
    from engine.sinks import write_image
    from engine.sources import read_image_metadata

    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (0, 0), 2)
    inputs = {
        "lossy.webp": [cv2.IMWRITE_WEBP_QUALITY, 75],
        "lossless.webp": [],
        "photo.jpg": [],
        "shot.png": [],
    }
    for name, params in inputs.items():
        assert cv2.imwrite(str(tmp_path / name), picture, params)
    assert (tmp_path / "lossy.webp").read_bytes()[12:16] == b"VP8 "
    assert (tmp_path / "lossless.webp").read_bytes()[12:16] == b"VP8L"
    # A lossless one with EXIF: VP8X first, the EXIF after its VP8L.
    vp8l, exif = (tmp_path / "lossless.webp").read_bytes()[12:], b"Exif\0\0II*\0"
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + bytes(10) + vp8l
    body += b"EXIF" + struct.pack("<I", len(exif)) + exif
    (tmp_path / "lossless_exif.webp").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)

    def written_as(metadata: object) -> bytes:
        out = write_image(tmp_path / "out.webp", picture[..., ::-1], metadata=metadata)
        return out.read_bytes()[12:16]

    for name, kind in [
        ("lossy.webp", b"VP8 "),
        ("photo.jpg", b"VP8 "),
        ("lossless.webp", b"VP8L"),
        ("lossless_exif.webp", b"VP8L"),
        ("shot.png", b"VP8L"),
    ]:
        assert written_as(read_image_metadata(tmp_path / name)) == kind, name
    assert written_as(None) == b"VP8 "  # a video's frames: lossy already


def test_write_image_writes_webp_lossless_from_every_lossless_input(tmp_path: Path) -> None:
    # A scan's TIFF, a screenshot's BMP, a PPM or a GIF went lossy: only a PNG and a lossless
    # WebP counted as lossless.
    from PIL import Image

    from engine.sinks import write_image
    from engine.sources import read_image_metadata

    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (0, 0), 2)
    for name in ("scan.tif", "screen.bmp", "frame.ppm", "grey.pgm", "logo.gif"):
        Image.fromarray(picture[..., 0] if name.endswith(".pgm") else picture).save(tmp_path / name)
        metadata = read_image_metadata(tmp_path / name)
        out = write_image(tmp_path / "out.webp", picture, metadata=metadata)
        assert out.read_bytes()[12:16] == b"VP8L", name
        assert not metadata  # nothing to keep: the notes of what is lost stay unsaid


def test_write_image_says_what_a_format_cannot_keep(tmp_path):
    from videos import exif_block

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    keep = "only .jfif/.jpe/.jpeg/.jpg/.png outputs keep them"
    both = ImageMetadata(exif=exif_block(), icc=b"profile")
    both_lost = [("the EXIF data", keep), ("the colour profile", keep)]
    assert metadata_lost(both, "out.webp") == both_lost
    assert metadata_lost(both, "out.bmp") == both_lost
    assert metadata_lost(ImageMetadata(icc=b"p"), "out.tif") == [("the colour profile", keep)]
    assert metadata_lost(ImageMetadata(), "out.webp") == []
    # An EXIF block that cannot be read cannot be put upright: dropped rather than copied.
    unreadable = ImageMetadata(exif=b"II*\0" + b"\xff" * 20)
    [(what, why)] = metadata_lost(unreadable, "out.jpg")
    assert what == "the EXIF data" and why.startswith("its structure cannot be read"), why
    write_image(tmp_path / "out.jpg", np.zeros((4, 4, 3), np.uint8), metadata=unreadable)
    assert not read_image_metadata(tmp_path / "out.jpg")
    # A PNG's EXIF may be larger than the one segment a JPEG holds it in: the .jpg went
    # without it, and the note said "only .jfif/.jpe/.jpeg/.jpg/.png outputs keep them".
    large = ImageMetadata(exif=exif_block(make=b"x" * 70_000))
    assert metadata_lost(large, "out.png") == []
    assert metadata_lost(large, "out.jpg") == [
        ("the EXIF data", "it is 68 KB, more than the 64 KB a JPEG holds; a .png output keeps it")
    ]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_write_image_keeps_the_xmp_data_upright(tmp_path, ext):
    # Ratings, keywords and captions (XMP) were dropped without a word; kept, the packet's
    # TIFF orientation and its thumbnail must follow the pixels as the EXIF block's do.
    from videos import exif_block, xmp_packet

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    metadata = ImageMetadata(exif=exif_block(orientation=6), xmp=xmp_packet(orientation=6))
    path = tmp_path / f"out{ext}"
    rgb = np.full((128, 96, 3), 50, np.uint8)  # the 96x128 grid turned upright: 128 tall
    assert metadata_lost(metadata, path) == []
    write_image(path, rgb, metadata=metadata)
    kept = read_image_metadata(path)
    assert kept.exif is not None and kept.xmp is not None
    text = kept.xmp.decode("utf-8")
    assert 'xmp:Rating="4"' in text and "<rdf:li>Zoë</rdf:li>" in text
    assert 'tiff:Orientation="1"' in text and 'tiff:Orientation="6"' not in text
    assert 'tiff:ImageWidth="96" tiff:ImageLength="128"' in text
    assert "<exif:PixelXDimension>96</exif:PixelXDimension>" in text
    assert "<exif:PixelYDimension>128</exif:PixelYDimension>" in text
    assert "Thumbnails" not in text and "xmpGImg:image" not in text
    assert text.endswith('<?xpacket end="w"?>')
    assert int(cv2.imread(str(path))[0, 0, 0]) == 50  # still an image OpenCV decodes alike
    try:
        from PIL import Image  # not a dependency: a second opinion where it is installed
    except ImportError:
        return
    with Image.open(path) as im:
        raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        assert raw is not None
        raw = raw.encode() if isinstance(raw, str) else raw
        assert raw == kept.xmp


def test_an_xmp_orientation_the_decoder_did_not_apply_stays():
    # OpenCV turns the pixels by the EXIF orientation only: an XMP one without an EXIF one
    # describes the stored pixels still, and set to 1 the copy would show turned.
    from videos import exif_block, xmp_packet

    from engine.sinks import _metadata_to_write
    from engine.sources import ImageMetadata

    for exif in (None, exif_block(orientation=1)):
        kept = _metadata_to_write(ImageMetadata(exif=exif, xmp=xmp_packet()), ".png", (8, 8))
        assert b'tiff:Orientation="6"' in kept.xmp
    kept = _metadata_to_write(
        ImageMetadata(exif=exif_block(orientation=3), xmp=xmp_packet(orientation=None)),
        ".png",
        (8, 8),
    )
    assert b"Orientation" not in kept.xmp and b'tiff:ImageWidth="8"' in kept.xmp


def test_xmp_edits_touch_properties_only_and_keep_the_xml_well_formed():
    # Found in review: a property quoted in a caption or another attribute's value was
    # rewritten, a ">" inside an attribute value broke the XML, and an orientation given as
    # a qualified value (rdf:value) kept turning the copy.
    from xml.dom import minidom

    from engine.sinks import _upright_xmp

    head = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:t="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:foo="urn:f"'
    )
    tail = "</rdf:Description></rdf:RDF></x:xmpmeta>"
    cases = {
        # in a caption and in another attribute's value: text, left alone
        " t:Orientation='6' dc:format='a t:Orientation=\"3\" b'>"
        '<dc:description>x t:ImageWidth="123" &lt;t:ImageLength&gt;77&lt;/t:ImageLength&gt;'
        "</dc:description>": (
            ["t:Orientation='1'", "dc:format='a t:Orientation=\"3\" b'", 't:ImageWidth="123"'],
            ["&lt;t:ImageLength&gt;77&lt;"],
        ),
        # a ">" inside an attribute value of the property's own element
        '><t:Orientation foo:x="a>b">6</t:Orientation>': (
            ['<t:Orientation foo:x="a>b">1</t:Orientation>'],
            [],
        ),
        # qualified values: rdf:value under parseType Resource, or a nested description
        '><t:Orientation rdf:parseType="Resource"><rdf:value>6</rdf:value><foo:q>6</foo:q>'
        "</t:Orientation>": (["<rdf:value>1</rdf:value><foo:q>6</foo:q>"], []),
        '><t:ImageWidth><rdf:Description rdf:value="96"/></t:ImageWidth>': (
            ['rdf:value="40"'],
            [],
        ),
        # names that only start like a property's
        ' t:ImageWidthFoo="7"><t:Orientation2>6</t:Orientation2>': (
            ['t:ImageWidthFoo="7"', "<t:Orientation2>6</t:Orientation2>"],
            [],
        ),
    }
    for body, (kept, also) in cases.items():
        packet = (head + body + tail).encode()
        out = _upright_xmp(packet, (40, 30), turned=True)
        minidom.parseString(out)  # well-formed
        for text in kept + also:
            assert text.encode() in out, (text, out)


def test_a_jpeg_keeps_or_drops_xmp_as_its_note_said_near_64_kb(tmp_path):
    # The note was decided at a 1x1 size and the write at the real one: a packet whose
    # dimensions grew by a few digits was dropped without a note.
    import time

    from videos import xmp_packet

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    rgb = np.zeros((1000, 1000, 3), np.uint8)
    plain = {"size": (1, 1), "padding": 0, "thumbnail": False}
    base = len(xmp_packet(**plain, keywords=()))
    outcomes = set()
    for room in range(-40, 40, 3):  # around the segment's limit, sized with 1x1
        words = ("x" * (65_533 - 29 - base - 17 + room),)  # 29: the header, 17: <rdf:li>
        metadata = ImageMetadata(xmp=xmp_packet(**plain, keywords=words))
        said = metadata_lost(metadata, "out.jpg")
        write_image(tmp_path / "out.jpg", rgb, metadata=metadata)
        kept = read_image_metadata(tmp_path / "out.jpg").xmp is not None
        assert kept == (said == []), (room, said)
        outcomes.add(kept)
    assert outcomes == {True, False}
    # A long run of whitespace in a large packet: padding found in linear time (a regex
    # took 30 s for 80 KB of it).
    spaced = ImageMetadata(xmp=xmp_packet(padding=0, keywords=(" " * 400_000 + "x",)))
    t0 = time.perf_counter()
    assert metadata_lost(spaced, "out.jpg")[0].what == "the XMP data"
    assert time.perf_counter() - t0 < 2.0


def test_xmp_that_cannot_be_kept_is_said(tmp_path):
    from videos import xmp_packet

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    keep = "only .jfif/.jpe/.jpeg/.jpg/.png outputs keep them"
    assert metadata_lost(ImageMetadata(xmp=xmp_packet()), "out.webp") == [("the XMP data", keep)]
    # Not UTF-8 (a UTF-16 packet): it cannot be put upright, so it is not copied.
    utf16 = ImageMetadata(xmp=xmp_packet().decode().encode("utf-16"))
    [(what, why)] = metadata_lost(utf16, "out.png")
    assert what == "the XMP data" and why.startswith("it is not UTF-8 text"), why
    # Over the 64 KB of a JPEG segment: its padding goes first, and only if that is not
    # enough, the packet (a .png keeps it).
    padded = ImageMetadata(xmp=xmp_packet(padding=70_000))
    assert metadata_lost(padded, "out.jpg") == []
    write_image(tmp_path / "p.jpg", np.zeros((8, 8, 3), np.uint8), metadata=padded)
    assert read_image_metadata(tmp_path / "p.jpg").xmp.endswith(b'\n<?xpacket end="w"?>')
    large = ImageMetadata(xmp=xmp_packet(keywords=("x" * 70_000,)))
    assert metadata_lost(large, "out.png") == []
    assert metadata_lost(large, "out.jpg") == [
        ("the XMP data", "it is 70 KB, more than the 64 KB a JPEG holds; a .png output keeps it")
    ]
    # A JPEG's extended XMP is not read: its main packet is kept, and the rest said.
    extended = ImageMetadata(xmp=xmp_packet(), xmp_extended=True)
    assert metadata_lost(extended, "out.jpg") == [
        ("the XMP data's extension", "SharpCam copies only the main XMP packet of a JPEG")
    ]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize(("space", "kind"), [(b"GRAY", "a grey"), (b"CMYK", "a CMYK")])
def test_a_grey_or_cmyk_profile_is_not_put_into_an_rgb_output(tmp_path, ext, space, kind):
    # The output is always RGB: a grey photo's profile copied into it made colour-managed
    # viewers fail to show it, and libpng warn "Gray color space not permitted on RGB PNG".
    from videos import exif_block, icc_profile

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    metadata = ImageMetadata(exif=exif_block(), icc=icc_profile(space, size=600))
    path = tmp_path / f"out{ext}"
    assert metadata_lost(metadata, path) == [
        ("the colour profile", f"it is {kind} profile, not an RGB one, and the output is RGB")
    ]
    write_image(path, np.full((8, 8, 3), 50, np.uint8), metadata=metadata)
    kept = read_image_metadata(path)
    assert kept.icc is None and kept.exif is not None
    assert metadata_lost(ImageMetadata(icc=b"\0" * 200), path) == [
        ("the colour profile", "it does not say it is an RGB profile, and the output is RGB")
    ]
    assert metadata_lost(ImageMetadata(icc=icc_profile(size=600)), path) == []


def _ifd(order: str, entries: list[tuple[int, int, int]], link: int | None) -> bytes:
    """A TIFF directory of ``(tag, kind, value)`` entries of count 1, the value inline (a SHORT
    in the first two of its four bytes), and its ``link`` to the next one (None: cut off)."""
    out = struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        inline = struct.pack(order + ("H2x" if kind == 3 else "I"), value)
        out += struct.pack(order + "HHI", tag, kind, 1) + inline
    return out + (b"" if link is None else struct.pack(order + "I", link))


def _tiff(order: str, ifd0_at: int, *parts: tuple[int, bytes]) -> bytes:
    """A TIFF block: its header pointing at ``ifd0_at``, and each ``(offset, bytes)`` there."""
    out = bytearray((b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, ifd0_at))
    for at, data in parts:
        out += bytes(at - len(out)) + data
    return bytes(out)


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_directories_are_edited_where_they_lie_in_either_byte_order(order: str) -> None:
    # Cameras write the Exif IFD pointer as LONG or IFD, the pixel dimensions as SHORT or
    # LONG, and other SHORT tags beside them; the fixture's block has one of each form only,
    # and its stored dimensions were those written, so a skipped edit went unseen.
    from videos import EXIF_IFD, ORIENTATION, PIXEL_X, PIXEL_Y, exif_tags

    from engine.sinks import _upright_exif

    program = 0x8822  # ExposureProgram, a SHORT beside the dimensions: not a dimension
    ifd0 = _ifd(order, [(ORIENTATION, 3, 6), (EXIF_IFD, 13, 38)], 80)
    sub = _ifd(order, [(program, 3, 2), (PIXEL_X, 3, 128), (PIXEL_Y, 4, 96)], 0)
    block = _tiff(order, 8, (8, ifd0), (38, sub), (80, _ifd(order, [], 0)))
    out = _upright_exif(block, (96, 128))
    assert out is not None and len(out) == len(block)
    tags = exif_tags(out)
    assert tags[ORIENTATION] == 1 and tags["ifd1"] == 0 and tags[program] == 2
    assert (tags[PIXEL_X], tags[PIXEL_Y]) == (96, 128)
    # A SHORT holds up to 65535: a wider image leaves it as it was rather than the block
    # dropped (or a wrapped width written).
    assert exif_tags(_upright_exif(block, (65_535, 128)))[PIXEL_X] == 65_535
    assert exif_tags(_upright_exif(block, (70_000, 128)))[PIXEL_X] == 128


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_directories_at_the_block_edges_are_read_or_refused(order: str) -> None:
    from videos import MAKE, ORIENTATION, exif_tags

    from engine.sinks import _upright_exif

    def upright(block: bytes) -> bytes | None:
        return _upright_exif(block, (8, 8))

    # IFD0 last, without its link to a next directory (cut short): still put upright.
    out = upright(_tiff(order, 8, (8, _ifd(order, [(ORIENTATION, 3, 6)], None))))
    assert out is not None and struct.unpack_from(order + "H", out, 8 + 2 + 8)[0] == 1
    empty = _tiff(order, 8, (8, _ifd(order, [], None)))
    assert upright(empty) == empty
    # The thumbnail's directory stored before IFD0, whose link then ends the block.
    ahead = _tiff(order, 14, (8, _ifd(order, [], 0)), (14, _ifd(order, [(ORIENTATION, 3, 6)], 8)))
    tags = exif_tags(upright(ahead))
    assert tags[ORIENTATION] == 1 and tags["ifd1"] == 0
    # Not readable, so dropped rather than copied with its orientation: an orientation that
    # is not one SHORT, and a directory inside the 8-byte header.
    assert upright(_tiff(order, 8, (8, _ifd(order, [(ORIENTATION, 4, 6)], 0)))) is None
    into_header = _tiff(order, 4, (64, _ifd(order, [(MAKE, 3, 0)], 0)))
    assert upright(into_header) is None


@pytest.mark.parametrize("order", ["<", ">"])
def test_an_xmp_orientation_follows_an_exif_one_in_either_byte_order(order: str) -> None:
    from videos import exif_block, xmp_packet

    from engine.sinks import _metadata_to_write
    from engine.sources import ImageMetadata

    metadata = ImageMetadata(exif=exif_block(order=order), xmp=xmp_packet())
    kept = _metadata_to_write(metadata, ".png", (8, 8))
    assert b'tiff:Orientation="1"' in kept.xmp and b'tiff:Orientation="6"' not in kept.xmp


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_written_metadata_gives_the_upright_size_not_the_stored_one(
    tmp_path: Path, ext: str
) -> None:
    # A portrait photo stored 128x96 and turned by its orientation: both the EXIF block and
    # the XMP packet must say 96x128, as the written pixels are.
    from videos import PIXEL_X, PIXEL_Y, exif_block, exif_tags, xmp_packet

    from engine.sinks import write_image
    from engine.sources import ImageMetadata, read_image_metadata

    stored = (128, 96)
    metadata = ImageMetadata(exif=exif_block(size=stored), xmp=xmp_packet(size=stored))
    path = tmp_path / f"out{ext}"
    write_image(path, np.full((128, 96, 3), 50, np.uint8), metadata=metadata)
    kept = read_image_metadata(path)
    tags = exif_tags(kept.exif)
    assert (tags[PIXEL_X], tags[PIXEL_Y]) == (96, 128)
    text = kept.xmp.decode("utf-8")
    assert 'tiff:ImageWidth="96" tiff:ImageLength="128"' in text
    assert "<exif:PixelXDimension>96</exif:PixelXDimension>" in text
    assert "<exif:PixelYDimension>128</exif:PixelYDimension>" in text


def test_xmp_is_put_upright_in_the_forms_other_writers_use() -> None:
    # Pretty-printed packets (qualified values and thumbnails over several lines), namespaces
    # declared in single quotes or with spaces, the TIFF namespace bound twice, an end tag
    # with a space, and RDF under another prefix: each kept the old orientation or thumbnail.
    from xml.dom import minidom

    from engine.sinks import _upright_xmp

    rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    tiff, basic = "http://ns.adobe.com/tiff/1.0/", "http://ns.adobe.com/xap/1.0/"
    packet = f"""<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="{rdf}">
  <rdf:Description rdf:about="" xmlns:tiff = '{tiff}' tiff:Orientation="6">
   <tiff:ImageWidth rdf:parseType="Resource">
    <rdf:value>128</rdf:value>
   </tiff:ImageWidth>
  </rdf:Description>
  <rdf:Description rdf:about="" xmlns:t2="{tiff}" xmlns:xmp="{basic}"
    xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/">
   <t2:Orientation>6</t2:Orientation >
   <xmp:Thumbnails>
    <rdf:Alt>
     <rdf:li rdf:parseType="Resource"><xmpGImg:image>/9j/4AAQ</xmpGImg:image></rdf:li>
    </rdf:Alt>
   </xmp:Thumbnails>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>""".encode()
    out = _upright_xmp(packet, (96, 128), turned=True)
    minidom.parseString(out)  # still well-formed
    assert b'tiff:Orientation="1"' in out and b"<t2:Orientation>1</t2:Orientation >" in out
    assert b"<rdf:value>96</rdf:value>" in out
    assert b"Thumbnails" not in out and b"/9j/" not in out
    other_rdf = (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><r:RDF xmlns:r="{rdf}"><r:Description '
        f'xmlns:tiff="{tiff}"><tiff:Orientation r:parseType="Resource"><r:value>6</r:value>'
        "</tiff:Orientation></r:Description></r:RDF></x:xmpmeta>"
    ).encode()
    assert b"<r:value>1</r:value>" in _upright_xmp(other_rdf, (96, 128), turned=True)


@pytest.mark.parametrize("ext", [".jpeg", ".jpe", ".jfif"])
def test_every_jpeg_extension_keeps_the_metadata_a_jpg_keeps(tmp_path: Path, ext: str) -> None:
    # Only .jpg was tested: the others are JPEGs too, and must get JPEG segments (PNG chunks
    # spliced into one corrupt it) and the JPEG's 64 KB limit on the EXIF block.
    from videos import exif_block, icc_profile, xmp_packet

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    metadata = ImageMetadata(exif=exif_block(), icc=icc_profile(), xmp=xmp_packet())
    path = tmp_path / f"out{ext}"
    write_image(path, np.full((16, 16, 3), 50, np.uint8), metadata=metadata)
    assert int(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[0, 0, 0]) == 50
    kept = read_image_metadata(path)
    assert kept.exif is not None and kept.icc == metadata.icc and kept.xmp is not None
    large = ImageMetadata(exif=exif_block(make=b"x" * 70_000))
    assert metadata_lost(large, f"out{ext}") == metadata_lost(large, "out.jpg") != []


def test_an_exif_block_that_just_fills_a_jpeg_segment_is_kept(tmp_path: Path) -> None:
    # The segment holds 65533 bytes after its length: the "Exif\0\0" header and the block.
    from videos import MAKE, exif_block, exif_tags

    from engine.sinks import metadata_lost, write_image
    from engine.sources import ImageMetadata, read_image_metadata

    room = 0xFFFF - 2 - len(b"Exif\0\0") - len(exif_block(make=b""))
    fills = ImageMetadata(exif=exif_block(make=b"x" * room))
    assert metadata_lost(fills, "out.jpg") == []
    write_image(tmp_path / "out.jpg", np.zeros((8, 8, 3), np.uint8), metadata=fills)
    assert exif_tags(read_image_metadata(tmp_path / "out.jpg").exif)[MAKE] == b"x" * room
    over = ImageMetadata(exif=exif_block(make=b"x" * (room + 1)))
    assert [lost.what for lost in metadata_lost(over, "out.jpg")] == ["the EXIF data"]


def test_the_xmp_extension_is_not_said_lost_apart_from_a_packet_itself_lost() -> None:
    from videos import xmp_packet

    from engine.sinks import metadata_lost
    from engine.sources import ImageMetadata

    large = ImageMetadata(xmp=xmp_packet(keywords=("x" * 70_000,)), xmp_extended=True)
    assert [lost.what for lost in metadata_lost(large, "out.jpg")] == ["the XMP data"]
    utf16 = ImageMetadata(xmp=xmp_packet().decode().encode("utf-16"), xmp_extended=True)
    assert [lost.what for lost in metadata_lost(utf16, "out.jpg")] == ["the XMP data"]


def test_a_profile_of_another_named_space_is_said_by_its_name() -> None:
    # Spaces ICC names with a trailing space ("Luv ", "HSV ") read as unnamed ones.
    from videos import icc_profile

    from engine.sinks import metadata_lost
    from engine.sources import ImageMetadata

    [(what, why)] = metadata_lost(ImageMetadata(icc=icc_profile(b"Luv ", size=600)), "out.png")
    assert (what, why) == (
        "the colour profile",
        "it is a Luv profile, not an RGB one, and the output is RGB",
    )
    # Cut off inside the space's four bytes: not a name.
    [(_, why)] = metadata_lost(ImageMetadata(icc=icc_profile(size=600)[:18]), "out.png")
    assert why == "it does not say it is an RGB profile, and the output is RGB"


def test_a_file_system_without_a_name_limit_takes_any_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pathconf says -1 where there is no limit: read as one, every name was refused.
    from engine.sinks import check_name_fits, partial_path

    monkeypatch.setattr(os, "pathconf", lambda path, name: -1)
    check_name_fits(tmp_path / ("a" * 200 + ".png"))
    assert partial_path(tmp_path / "a.png").name == ".a.partial.png"


def test_a_working_name_cut_to_fit_is_as_long_as_the_limit_allows(tmp_path: Path) -> None:
    from engine.sinks import _name_max, incomplete_path

    most = _name_max(tmp_path) - len("-1000")  # room kept for a number
    assert len(incomplete_path(tmp_path / ("a" * 300 + ".mp4")).name) == most


def test_a_registered_sink_kind_replaces_the_one_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.sinks
    from engine.sinks import register_sink

    monkeypatch.setitem(engine.sinks.SINKS, "images", engine.sinks.SINKS["images"])
    opened: list[tuple[object, object, float]] = []

    def factory(spec: object, *, size: object, fps: float, **options: object) -> CallbackSink:
        opened.append((spec, size, fps))
        return CallbackSink(callback=lambda f: None)

    register_sink("images", factory)
    assert isinstance(open_sink(tmp_path / "frames", size=(8, 6), fps=12.0), CallbackSink)
    assert opened == [(tmp_path / "frames", (8, 6), 12.0)]


# --------------------------------------------------------------------------- mp4v colour


def colour_boxes(path: Path) -> list[bytes]:
    """The bodies of the ``colr`` boxes in the video sample entries of an MP4 / MOV; asserts
    that the boxes on the way tile their parents exactly (every size grown to match)."""
    data = path.read_bytes()
    found = []

    def walk(start: int, end: int, in_entry: bool = False) -> None:
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                walk(pos + 8, pos + size)
            elif kind == b"stsd":
                walk(pos + 16, pos + size)
            elif kind in (b"mp4v", b"avc1"):
                walk(pos + 86, pos + size, True)
            elif kind == b"colr" and in_entry:  # beside the entry, no player reads it
                found.append(data[pos + 8 : pos + size])
            pos += max(size, 8)
        assert pos == end, f"boxes overrun their parent by {pos - end} bytes"

    walk(0, len(data))
    return found


@pytest.mark.parametrize("writer", ["ffmpeg", "ffmpeg mp4v", "opencv"])
@pytest.mark.parametrize(
    ("name", "colr"),
    [("hd.mp4", b"nclx\0\x01\0\x01\0\x06\0"), ("hd.mov", b"nclc\0\x01\0\x01\0\x06")],
)
def test_a_video_says_its_colours_are_bt601(tmp_path, monkeypatch, name, colr, writer):
    # Both writers convert with the BT.601 matrix; OpenCV's tagged nothing: players take
    # untagged HD for BT.709, and greens played 16 % darker. Primaries and transfer 1
    # (BT.709, as sRGB), matrix 6 (BT.601), limited range: FFmpeg says so itself (H.264 or
    # mp4v), OpenCV's mp4v is tagged on closing (tag_mp4v_colour).
    import engine.sinks

    if writer == "opencv":
        monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: None)
    path = tmp_path / name
    green = np.zeros((720, 1280, 3), np.uint8)
    green[..., 1] = 200
    fourcc = "mp4v" if writer == "ffmpeg mp4v" else None
    with VideoFileSink(path=path, size=(1280, 720), fps=10, fourcc=fourcc) as sink:
        assert sink.fourcc == ("avc1" if writer == "ffmpeg" else "mp4v")
        for i in range(3):
            sink.write(Frame(green, i, 0.0))
    assert colour_boxes(path) == [colr]
    frames = read_video(path)
    assert len(frames) == 3
    assert abs(int(np.median(frames[-1][..., 1])) - 200) <= 3  # OpenCV decodes it as before


def test_tagging_leaves_a_tagged_file_or_another_layout_alone(tmp_path):
    from engine.sinks import tag_mp4v_colour

    path = tmp_path / "a.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=10, fourcc="mp4v") as sink:
        sink.write(frame(0, size=(64, 48)))
    before = path.read_bytes()
    assert not tag_mp4v_colour(path)  # tagged on closing already
    assert path.read_bytes() == before
    # A moov before the frames (a "fast start" file): growing it would move them.
    moved = tmp_path / "moved.mp4"
    moov_at = before.index(b"moov") - 4
    moved.write_bytes(before[:28] + before[moov_at:] + before[28:moov_at])
    assert not tag_mp4v_colour(moved)
    (tmp_path / "junk.mp4").write_bytes(b"\0\0\0\x08moov" + b"junk")
    assert not tag_mp4v_colour(tmp_path / "junk.mp4")
    assert not tag_mp4v_colour(tmp_path / "missing.mp4")


@pytest.mark.parametrize("fourcc", ["FMP4", "XVID", "DIVX"])
def test_other_mpeg4_fourccs_are_tagged_too(tmp_path, fourcc):
    # OpenCV writes the same mp4v entry for these in an MP4: they were left untagged, and HD
    # played with the wrong matrix.
    path = tmp_path / "a.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=10, fourcc=fourcc) as sink:
        sink.write(frame(0, size=(64, 48)))
    assert colour_boxes(path) == [b"nclx\0\x01\0\x01\0\x06\0"]
    mov = tmp_path / "a.mov"  # a MOV of MJPG frames: no mp4v entry, left alone
    with VideoFileSink(path=mov, size=(64, 48), fps=10, fourcc="MJPG") as sink:
        sink.write(frame(0, size=(64, 48)))
    assert colour_boxes(mov) == [] and len(read_video(mov)) == 1


def without_x264(monkeypatch: pytest.MonkeyPatch) -> None:
    """As where the FFmpeg found has no libx264: it writes the other codecs."""
    import engine.sinks

    real = engine.sinks._ffmpeg_for
    monkeypatch.setattr(
        engine.sinks,
        "_ffmpeg_for",
        lambda fourcc, ext: None if fourcc == "avc1" else real(fourcc, ext),
    )


class FailsAtTheEnd(_FFmpegWriter):
    """An FFmpeg writer that fails as it finishes the file (its index, on a disk just full)."""

    def release(self) -> None:
        super().release()
        self.failed, self.error = True, "Error writing trailer: No space left on device"


class _FailingFile:
    """A file whose ``fail_at``-th write (1 = the first) writes half of its bytes, then raises
    ENOSPC, as a full copy-on-write file system can part-way through an overwrite."""

    def __init__(self, file, fail_at: int):
        self._file, self._fail_at, self.writes = file, fail_at, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes == self._fail_at:
            self._file.write(data[: len(data) // 2])
            self._file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)


@pytest.mark.parametrize("fail", ["write 1", "write 2", "write 3", "fsync 1", "fsync 2"])
def test_a_tag_whose_write_fails_leaves_a_video_that_plays(tmp_path, monkeypatch, fail):
    # The index was rewritten in place: a write that failed half-way left half of it, and
    # close() published that file, which no player opened, as the finished video. Whichever
    # write fails now (of the new index, or of either box type that swaps it in), or is
    # refused only when flushed to the disk (EIO, delayed allocation), the file plays,
    # untagged, under its name.
    import builtins

    import engine.sinks

    how, at = fail.split()
    if how == "write":

        def failing_open(path, mode="r", *args, **kwargs):
            file = builtins.open(path, mode, *args, **kwargs)
            return _FailingFile(file, int(at)) if mode == "r+b" else file

        monkeypatch.setattr(engine.sinks, "open", failing_open, raising=False)
    else:
        real_fsync, calls = os.fsync, []

        def failing_fsync(fd: int) -> None:
            calls.append(fd)
            if len(calls) == int(at):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fsync(fd)

        monkeypatch.setattr(engine.sinks.os, "fsync", failing_fsync)
    # OpenCV's writer: its mp4v is tagged on closing (FFmpeg's file is tagged as written).
    monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: None)
    path = tmp_path / "out.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=10) as sink:
        for i in range(12):
            sink.write(frame(i, size=(64, 48), value=20 * i))
    assert sink.kept_path == path and not sink.failed
    frames = read_video(path)
    assert [round(float(f.mean()) / 20) for f in frames] == list(range(12))
    assert colour_boxes(path) == []


@pytest.mark.parametrize("fourcc", [None, "mp4v"])
def test_an_hd_video_plays_as_bt601_in_ffmpeg(tmp_path, fourcc):
    # What a player reads: FFmpeg (mpv, VLC) reports the tag, and decodes the green right
    # with it. The ffmpeg binary comes with imageio-ffmpeg (a dependency).
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    path = tmp_path / "hd.mp4"
    green = np.zeros((720, 1280, 3), np.uint8)
    green[..., 1] = 200
    with VideoFileSink(path=path, size=(1280, 720), fps=10, fourcc=fourcc) as sink:
        sink.write(Frame(green, 0, 0.0))
    info = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    codec = "h264 (High) (avc1" if fourcc is None else "mpeg4 (Simple Profile) (mp4v"
    assert codec in info.stderr, info.stderr
    assert "yuv420p(tv, smpte170m/bt709/bt709" in info.stderr, info.stderr
    raw = subprocess.run(
        [ffmpeg, "-loglevel", "error", "-i", str(path), "-frames:v", "1"]
        + ["-vf", "format=rgb24", "-f", "rawvideo", "-"],
        capture_output=True,
        check=True,
    ).stdout
    rgb = np.frombuffer(raw, np.uint8).reshape(720, 1280, 3)
    assert abs(int(np.median(rgb[..., 1])) - 200) <= 3
    check = [ffmpeg, "-loglevel", "error", "-i", str(path), "-f", "null", "-"]
    assert subprocess.run(check, capture_output=True, text=True).stderr == ""


def test_retime_mp4_gives_each_frame_its_duration_or_leaves_the_file(tmp_path):
    # OpenCV's writer has one frame rate; a variable-rate source's own durations are put in
    # its index (stts), in the source's timescale, and every duration of the file follows.
    import subprocess

    import imageio_ffmpeg

    from engine.remux import picture_times
    from engine.sinks import VideoFileSink, retime_mp4

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    for i in range(10):
        sink.write(Frame(np.full((48, 64, 3), 20 * i, np.uint8), i, 0.0))
    sink.close()
    before = path.read_bytes()
    assert not retime_mp4(path, [512] * 9, 12800)  # not one duration per frame
    assert not retime_mp4(path, [512] * 5 + [0] * 5, 12800)
    assert path.read_bytes() == before
    assert retime_mp4(path, [1024] * 5 + [512] * 5, 12800)
    scale, times, _ = picture_times(path, ffmpeg=ffmpeg)
    assert [t / scale for t in times] == pytest.approx(
        [0.08 * i for i in range(5)] + [0.4 + 0.04 * i for i in range(5)]
    )
    probe = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    assert "Duration: 00:00:00.60" in probe.stderr and "smpte170m" in probe.stderr, probe.stderr
    assert len(read_video(path)) == 10
    # Another layout (two tracks, as FFmpeg writes a video with sound) is left alone.
    other = tmp_path / "two.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
         "-f", "lavfi", "-i", "sine", "-t", "0.4", "-c:v", "mpeg4", str(other)],
        check=True,
    )  # fmt: skip
    kept = other.read_bytes()
    assert not retime_mp4(other, [512] * 10, 12800)
    assert other.read_bytes() == kept


class _SmallDisk(io.FileIO):
    """A file on a disk with room for ``limit`` bytes: a write past it writes what fits,
    then fails (ENOSPC), as a full file system does."""

    limit = 0

    def write(self, data) -> int:
        room = self.limit - self.tell()
        if room < len(data):
            if room > 0:
                super().write(bytes(data)[:room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_an_index_rewrite_the_full_disk_refuses_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    # Opened buffered, the refused bytes stayed in Python's buffer: the cut back then flushed
    # them first, failed the same way, and the file kept a box cut off at its end.
    import engine.sinks
    from engine.sinks import retime_mp4, tag_mp4v_colour

    path = tmp_path / "out.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    before = path.read_bytes()
    _SmallDisk.limit = len(before) + 100  # room for a part of the new index only

    def small_disk_open(file, mode="r", *args, buffering=-1, **kwargs):
        if mode != "r+b":
            return open(file, mode, *args, buffering=buffering, **kwargs)
        raw = _SmallDisk(file, "r+")
        return raw if buffering == 0 else io.BufferedRandom(raw)

    monkeypatch.setattr(engine.sinks, "open", small_disk_open, raising=False)
    assert not tag_mp4v_colour(path)
    assert not retime_mp4(path, [512] * 5 + [1024] * 5, 12800)
    assert path.read_bytes() == before


def _windows_short_names(monkeypatch, tmp_path, keeps: bool = True) -> list[str]:  # noqa: ANN001
    """Windows as OpenCV sees it, on this machine: ``engine.frames`` believes it runs on
    Windows, and its short (8.3) names are ASCII links in ``tmp_path / "8.3"`` to the files
    asked about (None where the drive ``keeps`` none). Returns the names asked for."""
    import engine.frames

    asked: list[str] = []
    aliases = tmp_path / "8.3"
    aliases.mkdir(exist_ok=True)

    def short(path: str) -> str | None:
        asked.append(path)
        if not keeps or not os.path.exists(path):
            return None
        alias = aliases / f"SHORT~{len(asked)}{Path(path).suffix.upper()}"
        alias.symlink_to(path)
        return str(alias)

    monkeypatch.setattr(engine.frames, "_WINDOWS", True)
    monkeypatch.setattr(engine.frames, "_short_name", short)
    return asked


def test_on_windows_opencv_gets_a_video_name_of_plain_letters(tmp_path, monkeypatch):
    # OpenCV passes names to FFmpeg in the ANSI code page there: a video under C:\Users\José
    # did not open, and a writer given résultat.avi left it empty, its frames elsewhere.
    import engine.sinks
    import engine.sources
    from engine import open_source
    from engine.sources import SourceError

    named: list[str] = []

    class Recording:  # cv2, with the names its video classes are given recorded
        def __getattr__(self, item: str):  # noqa: ANN204
            return getattr(cv2, item)

        @staticmethod
        def VideoWriter(name, *args):  # noqa: ANN001, ANN205, N802
            named.append(name)
            return cv2.VideoWriter(name, *args)

        @staticmethod
        def VideoCapture(name, *args):  # noqa: ANN001, ANN205, N802
            named.append(name)
            return cv2.VideoCapture(name, *args)

    for module in (engine.sinks, engine.sources):
        monkeypatch.setattr(module, "cv2", Recording())
    asked = _windows_short_names(monkeypatch, tmp_path)
    folder = tmp_path / "José"
    folder.mkdir()
    out = folder / "résultat.avi"
    sink = open_sink(out, size=(64, 48), fps=25.0)
    for i in range(5):
        sink.write(frame(i, size=(64, 48), value=40 * i))
    sink.close()
    src = open_source(out, live=False)
    got = [round(float(f.image.mean()) / 40) for f in src]
    src.close()
    assert got == [0, 1, 2, 3, 4] and sink.kept_path == out
    assert named and all(n.isascii() for n in named), named
    assert any("résultat" in a for a in asked)
    assert sorted(p.name for p in folder.iterdir()) == ["résultat.avi"]

    # A drive that keeps no short names: said, and nothing left behind.
    _windows_short_names(monkeypatch, tmp_path, keeps=False)
    with pytest.raises(SinkError, match="plain .ASCII. characters only"):
        open_sink(folder / "deuxième.avi", size=(64, 48), fps=25.0)
    with pytest.raises(SourceError, match="plain .ASCII. characters only"):
        open_source(out, live=False)
    assert sorted(p.name for p in folder.iterdir()) == ["résultat.avi"]


def test_opencv_gets_a_name_with_a_colon_as_a_file(monkeypatch):
    # "clip:1.mp4" was a protocol to FFmpeg under OpenCV; on Windows "C:x.mp4" is a drive's
    # file, and ".\\C:x.mp4" would name an alternate data stream.
    import engine.frames
    from engine.frames import opencv_name

    assert opencv_name("clip:1.mp4") == os.path.join(os.curdir, "clip:1.mp4")
    assert opencv_name("sub/clip:1.mp4") == "sub/clip:1.mp4"  # "sub/clip" is no protocol
    assert opencv_name("/videos/clip:1.mp4") == "/videos/clip:1.mp4"
    assert opencv_name("clip.mp4") == "clip.mp4"
    monkeypatch.setattr(engine.frames, "_WINDOWS", True)
    assert opencv_name("C:x.mp4") == "C:x.mp4"
    assert opencv_name("D:.out.partial.mp4") == "D:.out.partial.mp4"


def test_opencv_on_windows_gets_an_ascii_short_name_or_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A short name that is itself not ASCII reaches FFmpeg garbled as the long one would: no
    # name works then, which is said, not a file of a garbled name written.
    import engine.frames
    from engine.frames import opencv_name

    monkeypatch.setattr(engine.frames, "_WINDOWS", True)
    monkeypatch.setattr(engine.frames, "_short_name", lambda path: "C:\\JOS~1\\R~1.AVI")
    assert opencv_name("résultat.avi") == "C:\\JOS~1\\R~1.AVI"
    for short in ("C:\\José\\R~1.AVI", None):
        monkeypatch.setattr(engine.frames, "_short_name", lambda path, s=short: s)
        with pytest.raises(ValueError, match="plain .ASCII. characters only"):
            opencv_name("résultat.avi")


def test_a_video_whose_ffmpeg_fails_as_it_finishes_is_not_called_complete(tmp_path, monkeypatch):
    # FFmpeg writes the index as it ends: where that fails (a disk just full), the writes
    # had all gone well, and the file would have taken the real name unplayable.
    import engine.sinks

    monkeypatch.setattr(engine.sinks, "_FFmpegWriter", FailsAtTheEnd)
    out = tmp_path / "out.avi"
    out.write_bytes(b"an earlier recording")
    sink = VideoFileSink(path=out, size=(64, 48), fps=25.0)
    for i in range(3):
        sink.write(frame(i, size=(64, 48), value=40 * i))
    with pytest.raises(SinkError) as caught:
        sink.close()
    kept = tmp_path / "out.incomplete.avi"
    assert str(caught.value) == (
        f"cannot finish video {out}: Error writing trailer: No space left on device; 3 "
        f"frames are kept in {kept}"
    )
    assert sink.failed and sink.kept_path == kept
    assert out.read_bytes() == b"an earlier recording"
    assert len(read_video(kept)) == 3


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
@pytest.mark.parametrize("found", ["named", "on the path", "bundled"])
def test_an_ffmpeg_that_does_not_answer_its_queries_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    # A $SHARPCAM_FFMPEG that hung held `process` before its first frame, silently, for good:
    # its encoders were asked without a limit, then the input's streams, then the sound copy.
    # An ffmpeg on the PATH or imageio-ffmpeg's can hang as well.
    import imageio_ffmpeg

    import engine.remux

    hung = tmp_path / "ffmpeg"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    monkeypatch.delenv("SHARPCAM_FFMPEG", raising=False)
    if found == "named":
        monkeypatch.setenv("SHARPCAM_FFMPEG", str(hung))
    elif found == "on the path":
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    else:
        monkeypatch.setattr(engine.remux.shutil, "which", lambda *_, **__: None)
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(hung))
    monkeypatch.setattr(engine.remux, "_UNANSWERING", set())
    # One slower than a poll of it (0.1 s) but inside the limit is waited for, and kept.
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 0.3\necho ' V..... mjpeg  MJPEG'\n")
    slow.chmod(0o755)
    monkeypatch.setattr(engine.remux, "_QUERY_TIMEOUT_S", 10.0)
    assert "mjpeg" in engine.remux.ffmpeg_list(str(slow), "encoders")
    assert engine.remux.find_ffmpeg() == str(hung)
    monkeypatch.setattr(engine.remux, "_QUERY_TIMEOUT_S", 0.5)
    started = time.monotonic()
    assert engine.remux.ffmpeg_list(str(hung), "encoders") == ""
    # The input's streams are asked with the same limit: nothing said of them, no hang.
    assert engine.remux.other_streams(tmp_path / "in.mp4", ffmpeg=str(hung)) == {}
    assert time.monotonic() - started < 10
    assert engine.remux.find_ffmpeg() is None  # the sound copy is not tried on it after


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_that_hangs_on_its_own_lists_is_passed_over_though_it_says_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `-encoders` names no file: past its limit it is FFmpeg that hangs, not a file slow to
    # read. Kept in use because it said its version, it was then run without a limit (the
    # frame times, the sound copy) and `process` waited for good.
    import engine.remux

    hung = tmp_path / "ffmpeg"
    hung.write_text(
        '#!/bin/sh\nif [ "$1" = "-version" ]; then echo "ffmpeg version stand-in"; exit 0; fi\n'
        "exec sleep 30\n"
    )
    hung.chmod(0o755)
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(hung))
    monkeypatch.setattr(engine.remux, "_UNANSWERING", set())
    monkeypatch.setattr(engine.remux, "_QUERY_TIMEOUT_S", 0.5)
    started = time.monotonic()
    assert engine.remux.ffmpeg_list(str(hung), "encoders") == ""
    assert time.monotonic() - started < 10
    assert engine.remux.find_ffmpeg() is None
    assert "did not answer" in (engine.remux.ffmpeg_unusable() or "")


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_asked_its_version_after_a_query_ran_out_is_hung_or_stopped_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The version question after a query ran out is short (not the query's whole limit again)
    # and, unanswered, says the FFmpeg hung, not that the file is slow to read. A stop during
    # it is a stop: the FFmpeg was not found hung, and is not passed over for good.
    import threading

    import engine.remux
    from engine.remux import RemuxError, RemuxStopped

    hung = tmp_path / "ffmpeg"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    query = [str(hung), "-hide_banner", "-i", str(tmp_path / "in.mp4")]
    monkeypatch.setattr(engine.remux, "_UNANSWERING", set())
    monkeypatch.setattr(engine.remux, "_VERSION_TIMEOUT_S", 0.1)
    started = time.monotonic()
    with pytest.raises(RemuxError, match="did not answer in 1.5 s$"):
        engine.remux._run(query, None, 1.5)
    assert time.monotonic() - started < 2.6  # 1.5 s and the version's 0.1 s, not 1.5 s more
    assert engine.remux._UNANSWERING == {str(hung)}
    monkeypatch.setattr(engine.remux, "_UNANSWERING", set())
    monkeypatch.setattr(engine.remux, "_VERSION_TIMEOUT_S", 5.0)
    stop = threading.Event()
    timer = threading.Timer(1.4, stop.set)  # during the version question (1 s to 2 s)
    timer.start()
    try:
        with pytest.raises(RemuxStopped):
            engine.remux._run(query, stop, 1.0)
    finally:
        timer.cancel()
    assert not engine.remux._UNANSWERING


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_slow_to_list_one_file_is_kept_and_copies_its_sound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file slow to list (a network share, a virus scan at its first open) took FFmpeg past
    # the query limit: it was passed over for the rest of the run as hung, and the sound copy
    # was never tried, although FFmpeg answered everything else.
    import engine.remux

    slow = tmp_path / "ffmpeg"
    slow.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-version" ]; then echo "ffmpeg version stand-in"; exit 0; fi\n'
        # `-hide_banner -i FILE`: the stream listing, slower than the limit (each one noted).
        f'if [ "$#" -eq 3 ]; then echo listed >> {tmp_path / "listings"}; exec sleep 20; fi\n'
        'case "$*" in *framecrc*) exit 1;; esac\n'
        # The sound copy: its output is the last argument (as file:PATH).
        'for last; do :; done\necho sound > "${last#file:}"\n'
    )
    slow.chmod(0o755)
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(slow))
    monkeypatch.setattr(engine.remux, "_UNANSWERING", set())
    monkeypatch.setattr(engine.remux, "_SLOW_TO_LIST", set())
    # Well short of the listing's sleep 20, and long enough for its -version to answer on a
    # loaded machine (past the limit it is passed over as hung, as the test says it is not).
    monkeypatch.setattr(engine.remux, "_QUERY_TIMEOUT_S", 2.0)
    source, video = tmp_path / "in.mp4", tmp_path / "out.mp4"
    source.write_bytes(b"source")
    video.write_bytes(b"pictures")
    started = time.monotonic()
    # The listing counts as none (as for a file FFmpeg cannot read): nothing said of it.
    assert engine.remux.other_streams(source, ffmpeg=str(slow)) == {}
    assert engine.remux.find_ffmpeg() == str(slow) and engine.remux.ffmpeg_unusable() is None
    engine.remux.copy_audio(source, video)
    assert video.read_text() == "sound\n"
    assert engine.remux.find_ffmpeg() == str(slow)
    assert time.monotonic() - started < 15  # each listing ended at its limit, not waited out
    # Asked again (each note asks in turn), the file is not listed again: each had waited.
    assert engine.remux.cover_pictures(source, ffmpeg=str(slow)) == 0
    assert (tmp_path / "listings").read_text().count("listed") == 1


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_that_does_not_finish_the_file_is_ended(tmp_path, monkeypatch):
    # Waited for without a limit, an FFmpeg that hung as it finished held the run for ever.
    import engine.sinks

    stuck = tmp_path / "ffmpeg"
    stuck.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = "-encoders" ]; then echo " V....D mjpeg  MJPEG"; exit 0; fi\n'
        'if [ "$2" = "-filters" ]; then echo " .. setparams  V->V  Force"; exit 0; fi\n'
        "cat > /dev/null\nexec sleep 30\n"
    )
    stuck.chmod(0o755)
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(stuck))
    monkeypatch.setattr(engine.sinks, "_FFMPEG_FINISH_S", 0.5)
    sink = VideoFileSink(path=tmp_path / "out.avi", size=(64, 48), fps=25.0)
    assert isinstance(sink._writer, engine.sinks._FFmpegWriter)
    sink.write(frame(0, size=(64, 48)))
    started = time.monotonic()
    with pytest.raises(
        SinkError, match=r"cannot finish video .*out.avi: FFmpeg did not finish it within 0.5 s"
    ):
        sink.close()
    assert time.monotonic() - started < 20  # ended, not waited out (the stand-in sleeps 30 s)
    assert sink.failed and not (tmp_path / "out.avi").exists()


def _stand_in_ffmpeg(path, script):
    """An executable FFmpeg stand-in that lists the mjpeg encoder (and the setparams filter)
    and runs ``script`` when asked to write."""
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = "-encoders" ]; then echo " V....D mjpeg  MJPEG"; exit 0; fi\n'
        'if [ "$2" = "-filters" ]; then echo " .. setparams  V->V  Force"; exit 0; fi\n' + script
    )
    path.chmod(0o755)
    return path


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_ffmpeg_s_own_reason_reaches_the_error(tmp_path, monkeypatch):
    # "cannot write frame 0 to video x.avi" or "with codec MJPG" (which blamed the codec),
    # by timing, where FFmpeg had said what was wrong.
    refuses = _stand_in_ffmpeg(
        tmp_path / "ffmpeg", 'echo "[mjpeg @ 0x1] boom: the encoder refused" >&2\nexit 3\n'
    )
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(refuses))
    big = np.zeros((1080, 1920, 3), np.uint8)  # more than a pipe holds
    sink = None
    with pytest.raises(SinkError, match=r"x.avi.*: boom: the encoder refused$"):
        # Refused as it opens or at a write, as FFmpeg's timing falls.
        sink = VideoFileSink(path=tmp_path / "x.avi", size=(1920, 1080), fps=25.0)
        for i in range(3):
            sink.write(Frame(big, i, i / 25))
    if sink is not None:
        sink.close()  # as the engine closes a failed output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg"]


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_that_stops_taking_frames_is_ended(tmp_path, monkeypatch):
    # A write into the pipe of one that stopped reading held the writing thread, and Ctrl-C
    # with it, for ever.
    import engine.sinks

    stuck = _stand_in_ffmpeg(tmp_path / "ffmpeg", "exec sleep 60\n")
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(stuck))
    monkeypatch.setattr(engine.sinks, "_FFMPEG_STALL_S", 1.0)
    sink = VideoFileSink(path=tmp_path / "x.avi", size=(1920, 1080), fps=25.0)
    big = np.zeros((1080, 1920, 3), np.uint8)
    started = time.monotonic()
    with pytest.raises(
        SinkError, match=r"cannot write frame 0 to video .*x.avi: FFmpeg took no frame for 1 s"
    ):
        for i in range(3):
            sink.write(Frame(big, i, i / 25))
    assert time.monotonic() - started < 20  # ended, not waited out (the stand-in sleeps 60 s)
    sink.close()


def test_the_image_formats_offered_are_those_this_opencv_writes(monkeypatch):
    # ".exr" was listed in "must be an image file (...)", then refused: "this OpenCV cannot
    # write .exr images".
    from engine import sinks

    offered = sinks.writable_image_extensions()
    assert ".png" in offered and ".jfif" in offered  # .jfif is written as .jpg
    assert all(cv2.haveImageWriter("x" + sinks.ENCODE_AS.get(e, e)) for e in offered), offered
    monkeypatch.setattr(sinks.cv2, "haveImageWriter", lambda name: not name.endswith(".webp"))
    now = sinks.writable_image_extensions()
    assert ".webp" not in now and set(offered) - {".webp"} <= set(now), now


def test_make_folder_names_what_stands_in_the_way(tmp_path):
    from engine.sinks import make_folder

    note = tmp_path / "note"
    note.write_text("mine")
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    to_file = tmp_path / "to_file"
    to_file.symlink_to(note)
    to_folder = tmp_path / "to_folder"
    to_folder.symlink_to(tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for folder, why in [
        (note / "sub", f"{note} is a file, not a folder"),
        (note / "a" / "b", f"{note} is a file, not a folder"),
        (to_file / "sub", f"{to_file} is a file, not a folder"),
        # A broken link was called a file.
        (dangling / "sub", f"{dangling} is a link to something that does not exist"),
        (dangling, f"{dangling} is a link to something that does not exist"),
        # mkdir's "File exists" of a link that leads back to itself.
        (loop, f"{loop} is a loop of symbolic links"),
        (loop / "sub", f"{loop} is a loop of symbolic links"),
    ]:
        with pytest.raises(SinkError) as info:
            make_folder(folder)
        assert str(info.value) == f"cannot create folder {folder}: {why}"
    make_folder(to_folder / "x" / "y")
    assert (tmp_path / "x" / "y").is_dir() and note.read_text() == "mine"


@pytest.mark.skipif(cv2.haveImageWriter("x.exr"), reason="this OpenCV writes .exr")
def test_an_image_format_this_opencv_cannot_encode_is_a_sink_error(tmp_path: Path) -> None:
    # OpenCV's own exception (cv2.error) escaped the sink: a traceback, not one line.
    from engine.sinks import write_image

    with pytest.raises(SinkError, match=r"cannot encode .*render\.exr as \.exr"):
        write_image(tmp_path / "render.exr", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_folder_run_names_the_results_of_formats_it_does_not_write_in_any_case() -> None:
    # Cameras and old Windows tools name files in capitals: LOGO.GIF stayed .GIF, refused.
    from engine.sinks import output_image_name

    assert output_image_name("LOGO.GIF") == "LOGO.png"
    assert output_image_name("IMG_0001.HEIC") == "IMG_0001.jpg"
    assert output_image_name("shot.JPG") == "shot.JPG"


def test_what_an_output_keeps_does_not_depend_on_the_case_of_its_extension() -> None:
    # `process IMG.jpg OUT.JPG` said the EXIF data and profile were lost, yet kept them.
    from videos import exif_block, icc_profile

    from engine.sinks import _JPEG_ICC_CHUNK, metadata_lost
    from engine.sources import ImageMetadata

    metadata = ImageMetadata(exif=exif_block(), icc=icc_profile())
    assert metadata_lost(metadata, "OUT.JPG") == metadata_lost(metadata, "out.jpg") == []
    # A JPEG holds a profile in up to 255 segments: one that fills them is kept whole.
    largest = ImageMetadata(icc=icc_profile(size=255 * _JPEG_ICC_CHUNK))
    assert metadata_lost(largest, "out.jpg") == []
    larger = ImageMetadata(icc=icc_profile(size=255 * _JPEG_ICC_CHUNK + 1))
    assert [lost.what for lost in metadata_lost(larger, "out.jpg")] == ["the colour profile"]


def test_a_sink_refuses_a_size_with_a_side_of_zero(tmp_path: Path) -> None:
    # A zero side made every frame an empty image, refused only at its first write.
    for size in ((0, 24), (32, 0)):
        with pytest.raises(ValueError, match="expected a positive"):
            ImageSink(path=tmp_path / "frames", size=size)
        with pytest.raises(ValueError, match="expected a positive"):
            VideoFileSink(path=tmp_path / "out.avi", size=size)
    assert list(tmp_path.iterdir()) == []


def test_an_image_named_by_a_link_is_written_through_it(tmp_path):
    # Written beside its name and renamed, an image replaced the link named with a file and
    # left the file it pointed at as it was.
    from engine.sinks import write_image

    real = tmp_path / "shots" / "real.png"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "latest.png"
    link.symlink_to(real)
    assert write_image(link, np.full((8, 8, 3), 200, np.uint8)) == link
    assert link.is_symlink()
    assert cv2.imread(str(real))[0, 0].tolist() == [200, 200, 200]
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.png"]
    # A link to nothing (its folder gone) is replaced by the image, not followed to nowhere.
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "removed" / "old.png")
    assert write_image(dangling, np.full((8, 8, 3), 90, np.uint8)) == dangling
    assert not dangling.is_symlink()
    assert cv2.imread(str(dangling))[0, 0].tolist() == [90, 90, 90]


# FFmpeg said "Error writing trailer" (a disk just full) and exited 1 as it finished: the file
# without its index took the real name over an earlier recording, exit 0. Killed by a signal
# (the OOM killer), its status is negative and it says nothing: the same must hold.
_FFMPEG_ENDS_BADLY = {
    "error": (
        "cat > /dev/null\n"
        'echo "[avi @ 0x1] Error writing trailer: No space left on device" >&2\n'
        "exit 1\n",
        "Error writing trailer: No space left on device",
    ),
    "killed": ("cat > /dev/null\nkill -KILL $$\n", "ffmpeg exited with status -9"),
}


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
@pytest.mark.parametrize("end", sorted(_FFMPEG_ENDS_BADLY))
def test_an_ffmpeg_that_fails_as_it_finishes_is_not_called_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    script, said = _FFMPEG_ENDS_BADLY[end]
    monkeypatch.setenv("SHARPCAM_FFMPEG", str(_stand_in_ffmpeg(tmp_path / "ffmpeg", script)))
    out = tmp_path / "out.avi"
    out.write_bytes(b"an earlier recording")
    sink = VideoFileSink(path=out, size=(64, 48), fps=25.0)
    for i in range(3):
        sink.write(frame(i, size=(64, 48), value=40 * i))
    with pytest.raises(SinkError) as caught:
        sink.close()
    assert str(caught.value).startswith(f"cannot finish video {out}: {said}"), caught.value
    assert sink.failed and sink.kept_path != out
    assert out.read_bytes() == b"an earlier recording"


def test_an_aborted_avi_holding_only_junk_is_not_kept_and_says_so(tmp_path, monkeypatch):
    # An .avi the disk left holding bytes that are no video was kept: "the frames written
    # are kept in out.incomplete.avi", a file no player opened.
    path = tmp_path / "out.avi"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    monkeypatch.setattr(
        sink, "_writer", FillingDisk(sink, 5, lambda p: p.write_bytes(b"RIFF" + b"\x5a" * 4000))
    )
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: False, raising=False)
    sink.write(frame(0, size=(64, 48)))
    with pytest.raises(SinkError) as info:
        sink.abort()
    assert str(info.value) == (
        "nothing of video out.avi could be kept: no frame in it plays (1 frame written)"
    )
    assert sink.not_kept == "nothing of video out.avi could be kept: no frame in it plays"
    assert sink.kept_path is None and list(tmp_path.iterdir()) == []


def test_an_image_output_in_a_read_only_folder_is_refused_before_any_frame(tmp_path):
    # A folder it may not write in failed only at the first frame, once the model had run.
    folder, open_ = _opened_without_root_powers(tmp_path, "ImageSink(path=sys.argv[1])")
    for target in (folder, folder / "still.png"):
        said = open_(target)
        needle = f"cannot write {target}: no permission to write in folder {folder}"
        assert needle in said and "opened" not in said, said
    assert list(folder.iterdir()) == []


def test_a_written_jpeg_keeps_its_jfif_header_first(tmp_path):
    # JFIF wants its APP0 right after SOI: the Exif, XMP and profile put before it made a
    # file that strict readers took for no JFIF.
    from videos import exif_block, icc_profile

    from engine.sinks import write_image
    from engine.sources import ImageMetadata

    path = tmp_path / "out.jpg"
    metadata = ImageMetadata(exif=exif_block(), icc=icc_profile())
    write_image(path, np.full((16, 16, 3), 50, np.uint8), metadata=metadata)
    data = path.read_bytes()
    assert data[:4] == b"\xff\xd8\xff\xe0" and data[6:11] == b"JFIF\0"
    after = 4 + int.from_bytes(data[4:6], "big")
    assert data[after : after + 2] == b"\xff\xe1"  # the Exif comes next
    assert int(cv2.imread(str(path))[0, 0, 0]) == 50


def test_a_virtual_device_given_as_an_option_wins_over_the_spec(monkeypatch):
    # `device=` from the caller (the app's chosen loopback) was replaced by the spec's.
    import engine.virtualcam

    opened = []
    monkeypatch.setattr(engine.virtualcam, "VirtualCameraSink", lambda **kw: opened.append(kw))
    open_sink("virtual:/dev/video9", size=(64, 48), device="/dev/video3")
    assert [kw.get("device") for kw in opened] == ["/dev/video3"]


def test_an_existing_folder_named_like_a_video_given_with_a_slash_is_a_folder(tmp_path):
    # `clip.mp4/` where a folder clip.mp4 exists: the slash says the folder, not a video.
    (tmp_path / "clip.mp4").mkdir()
    assert sink_kind(f"{tmp_path}/clip.mp4/") == "images"


@pytest.mark.parametrize(
    ("chunks", "srgb"),
    [
        ((), True),
        (((b"sRGB", b"\0"),), True),
        (((b"gAMA", (45455).to_bytes(4, "big")),), True),
        (((b"gAMA", (45000).to_bytes(4, "big")),), True),  # within 1 %
        (((b"gAMA", (100000).to_bytes(4, "big")),), False),  # linear light
        (((b"gAMA", (55556).to_bytes(4, "big")),), False),  # 1/1.8, an old Mac's
        (((b"gAMA", (50000).to_bytes(4, "big")),), False),  # 1/2.0: 10 % off
        (((b"sRGB", b"\0"), (b"gAMA", (100000).to_bytes(4, "big"))), True),  # sRGB wins
        (((b"cICP", bytes([1, 13, 0, 1])),), True),
        (((b"cICP", bytes([1, 8, 0, 1])),), False),  # BT.709 primaries in linear light
        (((b"cICP", bytes([9, 16, 0, 1])), (b"sRGB", b"\0")), False),  # BT.2100 PQ wins
        (((b"cHRM", b"".join(v.to_bytes(4, "big") for v in (31270, 32900, 64000, 33000, 30000,
                                                             60000, 15000, 6000))),), True),
        (((b"cHRM", b"".join(v.to_bytes(4, "big") for v in (31270, 32900, 65500, 33000, 30000,
                                                             60000, 15000, 6000))),), False),  # red 0.015 off
        (((b"cHRM", b"".join(v.to_bytes(4, "big") for v in (31270, 32900, 68000, 32000, 26500,
                                                             69000, 15000, 6000))),), False),
    ],
)  # fmt: skip
def test_png_colour_chunks_say_srgb_as_a_viewer_reads_them(
    chunks: tuple[tuple[bytes, bytes], ...], srgb: bool
) -> None:
    from engine.sources import png_colour_is_srgb

    assert png_colour_is_srgb(chunks) is srgb


def test_a_jpeg_keeping_a_pngs_profile_loses_its_gamma_unsaid_but_not_its_cicp() -> None:
    # A kept RGB profile is what viewers read instead of gAMA / cHRM; a cICP chunk outranks
    # the profile, and a PQ one went into a JPEG with no word of it.
    from engine.sinks import metadata_lost
    from engine.sources import ImageMetadata
    from tests.videos import icc_profile

    icc = icc_profile(b"RGB ", size=600)
    linear = ((b"gAMA", (100000).to_bytes(4, "big")),)
    pq = ((b"cICP", bytes([9, 16, 0, 1])),)
    lost = ("the PNG gamma and colour space", "only a .png output keeps them")
    assert metadata_lost(ImageMetadata(icc=icc, png_colour=linear), "out.jpg") == []
    assert metadata_lost(ImageMetadata(png_colour=linear), "out.jpg") == [lost]
    assert metadata_lost(ImageMetadata(icc=icc, png_colour=pq), "out.jpg") == [lost]
    assert metadata_lost(ImageMetadata(icc=icc, png_colour=pq), "out.png") == []


def test_a_pngs_colour_chunks_are_said_lost_by_other_outputs_unless_a_kept_profile_rules() -> None:
    # gAMA 1.0 (linear light) is how a viewer shows the values: a JPEG, WebP or BMP output goes
    # without it and is shown darker. Where a JPEG keeps the PNG's RGB profile, viewers follow
    # the profile instead (as they did the PNG's), and nothing is lost; a profile not kept
    # (a WebP holds none, a grey one goes with no RGB output) overrides nothing.
    from videos import icc_profile

    from engine.sinks import metadata_lost
    from engine.sources import ImageMetadata

    linear = ((b"gAMA", (100000).to_bytes(4, "big")),)
    lost = ("the PNG gamma and colour space", "only a .png output keeps them")
    assert metadata_lost(ImageMetadata(png_colour=linear), "out.png") == []
    for ext in (".jpg", ".webp", ".bmp"):
        assert lost in metadata_lost(ImageMetadata(png_colour=linear), f"out{ext}"), ext
    rgb = ImageMetadata(icc=icc_profile(size=600), png_colour=linear)
    assert metadata_lost(rgb, "out.jpg") == []
    assert lost in metadata_lost(rgb, "out.webp")
    grey = ImageMetadata(icc=icc_profile(b"GRAY", size=600), png_colour=linear)
    assert lost in metadata_lost(grey, "out.jpg")


def test_a_png_output_keeps_its_colour_chunks_beside_the_exif_profile_and_xmp(
    tmp_path: Path,
) -> None:
    # A linear-light photo with a date and place: the colour chunks must not push the rest
    # out (a PNG with any colour chunk took another path through write_image).
    from videos import exif_block, icc_profile, xmp_packet

    from engine.sinks import write_image
    from engine.sources import ImageMetadata, read_image_metadata

    linear = ((b"gAMA", (100000).to_bytes(4, "big")),)
    metadata = ImageMetadata(
        exif=exif_block(), icc=icc_profile(size=600), xmp=xmp_packet(), png_colour=linear
    )
    path = tmp_path / "out.png"
    write_image(path, np.full((8, 8, 3), 50, np.uint8), metadata=metadata)
    kept = read_image_metadata(path)
    assert kept.png_colour == linear and kept.icc == metadata.icc and kept.xmp is not None
    assert kept.exif is not None


def test_a_png_output_keeps_its_text_chunks_and_others_say_they_go_without(
    tmp_path: Path,
) -> None:
    # A PNG's Comment, Author and Description were dropped with no note.
    from videos import png_with_metadata, xmp_packet

    from engine.sinks import metadata_lost, write_image
    from engine.sources import read_image_metadata

    def chunk(kind: bytes, payload: bytes, crc_off: int = 0) -> bytes:
        crc = (zlib.crc32(kind + payload) + crc_off) & 0xFFFFFFFF
        return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")

    texts = [
        (b"tEXt", b"Comment\0a sunny day"),
        (b"zTXt", b"Author\0\0" + zlib.compress(b"Ann")),
        (b"iTXt", "Description\0\0\0fr\0\0café".encode()),
    ]
    png = png_with_metadata(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes(),
                            xmp=xmp_packet())  # fmt: skip
    iend = png.rindex(b"IEND") - 4
    png = (
        png[:iend]
        + b"".join(chunk(kind, data) for kind, data in texts)  # after the image data
        + chunk(b"tEXt", b"Raw profile type exif\0\nexif\n  4\n49492a00\n")  # a stale copy
        + chunk(b"tEXt", b"Title\0damaged", crc_off=1)
        + chunk(b"iTXt", b"Note\0\0\0\0\0damaged", crc_off=1)
        + png[iend:]
    )
    (tmp_path / "in.png").write_bytes(png)
    metadata = read_image_metadata(tmp_path / "in.png")
    assert metadata.png_text == tuple(texts)
    out = write_image(tmp_path / "out.png", np.zeros((8, 8, 3), np.uint8), metadata=metadata)
    kept = read_image_metadata(out)
    assert kept.png_text == tuple(texts) and kept.xmp is not None
    assert out.read_bytes().count(b"XML:com.adobe.xmp") == 1  # XMP not copied twice
    assert cv2.imread(str(out)) is not None
    assert metadata_lost(metadata, "out.png") == []
    text_lost = ("the PNG text (Comment, Author, Description)", "only a .png output keeps it")
    assert text_lost in metadata_lost(metadata, "out.jpg")
    assert text_lost in metadata_lost(metadata, "out.webp")


def test_a_png_with_only_text_chunks_keeps_them_and_names_each_keyword_once(
    tmp_path: Path,
) -> None:
    # Text alone is metadata too: a PNG with a Comment and nothing else must not be taken for
    # one without any. Where it is lost, each keyword is named once, the first three.
    from engine.sinks import metadata_lost, write_image
    from engine.sources import read_image_metadata

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload).to_bytes(4, "big")
        return len(payload).to_bytes(4, "big") + kind + payload + crc

    keywords = [b"Comment", b"Comment", b"Author", b"Title", b"Software"]
    texts = tuple((b"tEXt", k + b"\0" + k.lower()) for k in keywords)
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    iend = png.rindex(b"IEND") - 4
    (tmp_path / "in.png").write_bytes(
        png[:iend] + b"".join(chunk(kind, data) for kind, data in texts) + png[iend:]
    )
    metadata = read_image_metadata(tmp_path / "in.png")
    assert metadata and metadata.png_text == texts
    out = write_image(tmp_path / "out.png", np.zeros((8, 8, 3), np.uint8), metadata=metadata)
    assert read_image_metadata(out).png_text == texts
    assert metadata_lost(metadata, "out.jpg") == [
        ("the PNG text (Comment, Author, Title, ...)", "only a .png output keeps it")
    ]


class _AbortFailed(Exception):
    """What a run failed with, before its output is aborted."""


def test_a_video_left_on_an_error_whose_abort_fails_raises_that_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The error that ended the run is the one to see: abort()'s own (no frame that plays
    # could be kept) is only logged beside it.
    path = tmp_path / "out.mp4"
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: False, raising=False)
    with caplog.at_level("WARNING", logger="engine.sinks"):
        with pytest.raises(_AbortFailed, match="the model failed"):
            with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
                monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 5, without_index))
                sink.write(frame(0, size=(64, 48)))
                raise _AbortFailed("the model failed")
    assert "nothing of video out.mp4 could be kept" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_slow_to_take_a_frame_is_not_ended_before_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write that waits a moment (FFmpeg behind on a 4K frame) is not a stall: only one that
    # waits past _FFMPEG_STALL_S ends it.
    slow = _stand_in_ffmpeg(tmp_path / "ffmpeg", "sleep 1.5\ncat > /dev/null\n")
    writer = _FFmpegWriter(str(slow), tmp_path / "x.avi", "MJPG", 25.0, (1920, 1080))
    big = np.zeros((1080, 1920, 3), np.uint8)  # more than a pipe holds: the write waits
    assert writer.write(big), writer.error
    writer.release()
    assert not writer.failed and writer.error == ""


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_idle_between_frames_is_not_taken_for_stalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Time between two frames (a model taking seconds a frame) is no write waiting: it
    # ended a recording whose FFmpeg had taken every frame it was given.
    import engine.sinks

    monkeypatch.setattr(engine.sinks, "_FFMPEG_STALL_S", 0.2)
    sink = VideoFileSink(path=tmp_path / "x.avi", size=(64, 48), fps=25.0)
    assert isinstance(sink._writer, _FFmpegWriter)
    sink.write(frame(0, size=(64, 48)))
    time.sleep(1.5)  # the watch looks once a second
    sink.write(frame(1, size=(64, 48)))
    sink.close()
    assert not sink.failed and len(read_video(tmp_path / "x.avi")) == 2


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_an_ffmpeg_that_refused_to_start_says_why_as_the_writer_opens(tmp_path: Path) -> None:
    # Ended before the sink asked whether it was open, its reason was lost: the sink said
    # only "with codec MJPG", which blamed the codec.
    refuses = _stand_in_ffmpeg(
        tmp_path / "ffmpeg", 'echo "[mjpeg @ 0x1] boom: the encoder refused" >&2\nexit 3\n'
    )
    writer = _FFmpegWriter(str(refuses), tmp_path / "x.avi", "MJPG", 25.0, (64, 48))
    assert writer._proc is not None
    writer._proc.wait()
    assert not writer.isOpened()
    assert writer.error.endswith("boom: the encoder refused"), writer.error
    writer.release()


def test_an_ffmpeg_writer_leaves_no_thread_or_file_behind_once_released(tmp_path: Path) -> None:
    # A sink a recording: every one left its watch thread polling and its error file open.
    import threading

    sink = VideoFileSink(path=tmp_path / "x.avi", size=(64, 48), fps=25.0)
    writer = sink._writer
    assert isinstance(writer, _FFmpegWriter)
    sink.write(frame(0, size=(64, 48)))
    watches = [t for t in threading.enumerate() if t.name == "ffmpeg-writer-watch"]
    sink.close()
    for watch in watches:
        watch.join(timeout=0.5)
    assert not any(t.is_alive() for t in watches)
    assert writer._errors.closed


@pytest.mark.skipif(os.name == "nt", reason="a POSIX session")
def test_ffmpeg_runs_in_its_own_session_out_of_reach_of_a_terminal_ctrl_c(tmp_path: Path) -> None:
    # In the terminal's process group, a Ctrl-C ended FFmpeg at once, and the file with it,
    # before the sink could finish it.
    sink = VideoFileSink(path=tmp_path / "x.avi", size=(64, 48), fps=25.0)
    writer = sink._writer
    assert isinstance(writer, _FFmpegWriter) and writer._proc is not None
    assert os.getpgid(writer._proc.pid) != os.getpgid(0)
    sink.close()


def test_a_video_at_an_ntsc_rate_keeps_it(tmp_path: Path) -> None:
    # 29.97 fps said to FFmpeg as "30" drifted a frame in every 1001 from its sound.
    path = tmp_path / "ntsc.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=30000 / 1001) as sink:
        for i in range(3):
            sink.write(frame(i, size=(64, 48)))
    cap = cv2.VideoCapture(str(path))
    rate = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert rate == pytest.approx(30000 / 1001, abs=1e-3)


@pytest.mark.parametrize("writer", ["ffmpeg", "opencv"])
@pytest.mark.parametrize(
    ("name", "colr"),
    [("OUT.MP4", b"nclx\0\x01\0\x01\0\x06\0"), ("OUT.MOV", b"nclc\0\x01\0\x01\0\x06")],
)
def test_a_video_named_with_a_capital_extension_is_written_and_tagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, name: str, colr: bytes
) -> None:
    # "OUT.MP4" (a camera's own naming) failed in FFmpeg's muxer table, or went untagged, or
    # tagged as an MP4 in a MOV.
    import engine.sinks

    if writer == "opencv":
        monkeypatch.setattr(engine.sinks, "_ffmpeg_for", lambda fourcc, suffix: None)
    path = tmp_path / name
    with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
        for i in range(2):
            sink.write(frame(i, size=(64, 48)))
    assert len(read_video(path)) == 2
    assert colour_boxes(path) == [colr]


def test_an_mp4_named_in_capitals_without_its_index_is_said_to_lack_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read back by OpenCV instead of by its boxes, it was "no frame in it plays", and FFmpeg
    # printed "moov atom not found".
    sink = VideoFileSink(path=tmp_path / "OUT.MP4", size=(64, 48), fps=25)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 5, without_index))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: False, raising=False)
    sink.write(frame(0, size=(64, 48)))
    with pytest.raises(SinkError, match="it lacks the index an MP4 writes at its end"):
        sink.abort()


@pytest.mark.skipif(os.name == "nt", reason="the stand-in FFmpeg is a shell script")
def test_a_failed_write_waits_a_moment_for_ffmpeg_s_reason(tmp_path: Path) -> None:
    # FFmpeg closes the pipe before it has said why and ended: asked at once, the reason
    # was not there yet, and the error blamed no cause.
    closed = tmp_path / "closed"
    script = (
        f"exec 0<&-\ntouch '{closed}'\nsleep 0.2\n"
        'echo "[mjpeg @ 0x1] boom: the volume went away" >&2\nexit 3\n'
    )
    closes = _stand_in_ffmpeg(tmp_path / "ffmpeg", script)
    writer = _FFmpegWriter(str(closes), tmp_path / "x.avi", "MJPG", 25.0, (64, 48))
    deadline = time.monotonic() + 20
    while not closed.exists() and time.monotonic() < deadline:  # however slow its start
        time.sleep(0.01)
    assert not writer.write(np.zeros((48, 64, 3), np.uint8))  # the pipe is closed, FFmpeg runs
    assert writer.error.endswith("boom: the volume went away"), writer.error
    writer.release()


def test_a_disk_full_at_the_failed_write_is_said_though_space_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write that failed found the disk full; by the time the file is read back, space
    # was freed elsewhere: the reason its index is missing is still the full disk.
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 1, without_index))
    full = [True]
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: full[0], raising=False)
    sink.write(frame(0, size=(64, 48)))
    with pytest.raises(SinkError, match="the disk is full"):
        sink.write(frame(100, size=(64, 48)))
    full[0] = False
    sink.close()
    assert sink.not_kept == (
        "nothing of video out.mp4 could be kept: an MP4 writes its index at its end and the "
        "full disk had no room for it (.avi or .mkv keep the frames written)"
    )
    assert sink.kept_path is None and list(tmp_path.iterdir()) == []


def test_an_aborted_mp4_the_full_disk_left_without_its_index_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Aborted for another reason, no write having failed, FFmpeg's file lacks its index on
    # a disk now full: the disk is the reason given, not a bare "lacks the index".
    import engine.sinks

    class LosesItsIndex(_FFmpegWriter):
        def __init__(self, ffmpeg: str, path: Path, *args: object, **kwargs: object) -> None:
            super().__init__(ffmpeg, path, *args, **kwargs)  # type: ignore[arg-type]
            self.path = path

        def release(self) -> None:
            super().release()
            without_index(self.path)

    monkeypatch.setattr(engine.sinks, "_FFmpegWriter", LosesItsIndex)
    sink = VideoFileSink(path=tmp_path / "out.mp4", size=(64, 48), fps=25)
    sink.write(frame(0, size=(64, 48)))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: True, raising=False)
    with pytest.raises(SinkError) as info:
        sink.abort()
    assert str(info.value) == (
        "nothing of video out.mp4 could be kept: an MP4 writes its index at its end and the "
        "full disk had no room for it (.avi or .mkv keep the frames written) (1 frame written)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_timed_video_of_a_source_at_twice_its_rate_keeps_each_frame_near_its_time(
    tmp_path: Path,
) -> None:
    # Frames exactly half a slot apart (a 60 fps camera in a 30 fps file): one a whole slot
    # early is skipped. Written to the next slot, every later frame went a slot late.
    with VideoFileSink(path=tmp_path / "x2.avi", size=(32, 24), fps=4.0, timed=True) as sink:
        for i in range(8):  # times in eighths of a second: exact in binary
            sink.write(Frame(np.full((24, 32, 3), 20 * i, np.uint8), i, 64.0 + i / 8))
        assert (sink.frames_written, sink.frames_skipped) == (5, 3)
    shown = [round(float(f.mean()) / 20) for f in read_video(tmp_path / "x2.avi")]
    assert shown == [0, 1, 3, 5, 7]  # slot k holds the frame of k - 0.5 slots


def test_a_stopped_timed_video_holds_its_last_frame_to_the_slot_nearest_the_stop(
    tmp_path: Path,
) -> None:
    # A stop 0.56 s in is 5.6 slots at 10 fps: the file lasts 6, as the frames' own slots
    # are the nearest ones, not 5.
    assert _timed(tmp_path / "stop.avi", [(0, 0.0), (1, 0.1)], stop=0.56) == [0] + [1] * 5


def test_a_timed_video_whose_tail_fails_to_write_still_keeps_its_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk fills as close() repeats the last frame up to the stop: the frames written
    # stayed in the hidden working file, unannounced, and FFmpeg was never told to finish.
    path = tmp_path / "live.avi"
    sink = VideoFileSink(path=path, size=(32, 24), fps=10.0, timed=True)
    monkeypatch.setattr(sink, "_writer", FillingDisk(sink, 2, lambda p: None))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: False, raising=False)
    for i in range(2):
        sink.write(Frame(np.full((24, 32, 3), 40 * i, np.uint8), i, 100.0 + i / 10))
    sink.mark_stop(101.0)
    with pytest.raises(SinkError, match="cannot write frame 2 to video"):
        sink.close()
    assert sink.kept_path == tmp_path / "live.incomplete.avi"
    assert len(read_video(sink.kept_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["live.incomplete.avi"]


def test_an_ffmpeg_that_finished_its_file_on_a_nearly_full_disk_published_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg says itself whether it finished (its status): a disk with little room left
    # after it did is no failure, unlike after OpenCV's writer, which says nothing.
    path = tmp_path / "out.avi"
    sink = VideoFileSink(path=path, size=(64, 48), fps=25.0)
    assert isinstance(sink._writer, _FFmpegWriter)
    for i in range(2):
        sink.write(frame(i, size=(64, 48)))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: True, raising=False)
    sink.close()
    assert not sink.failed and sink.kept_path == path and len(read_video(path)) == 2


def test_an_ffmpeg_failing_as_it_finishes_on_a_full_disk_says_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own words were a muxer's ("Error writing trailer"): the full disk is what the
    # user can act on.
    import engine.sinks

    monkeypatch.setattr(engine.sinks, "_FFmpegWriter", FailsAtTheEnd)
    out = tmp_path / "out.avi"
    sink = VideoFileSink(path=out, size=(64, 48), fps=25.0)
    sink.write(frame(0, size=(64, 48)))
    monkeypatch.setattr("engine.sinks._disk_full", lambda folder: True, raising=False)
    with pytest.raises(SinkError) as caught:
        sink.close()
    kept = tmp_path / "out.incomplete.avi"
    assert str(caught.value) == (
        f"cannot finish video {out}: the disk is full; 1 frame is kept in {kept}"
    )


def test_a_hidden_file_gone_before_publish_is_said_kept_nowhere(tmp_path: Path) -> None:
    # Removed under the sink (a cleaner, the user), it was still named as where the frames
    # were: "its frames are kept in .out.partial.avi", a file that no longer existed.
    sink = VideoFileSink(path=tmp_path / "out.avi", size=(64, 48), fps=25.0, publish=False)
    sink.write(frame(0, size=(64, 48)))
    sink.close()
    assert sink.kept_path is not None
    sink.kept_path.unlink()
    with pytest.raises(SinkError) as caught:
        sink.publish()
    assert sink.kept_path is None and "kept in" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


class _Trickle(io.FileIO):
    """A file whose writes take ``most`` bytes at a time at most (0: none), as an unbuffered
    write may."""

    most = 0

    def write(self, data) -> int:  # noqa: ANN001 - what FileIO.write takes
        return super().write(bytes(data)[: self.most])


def test_an_index_write_taken_in_parts_is_finished_and_one_taking_nothing_fails(
    tmp_path: Path,
) -> None:
    from engine.sinks import _write_at

    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    with _Trickle(path, "r+") as f:
        f.most = 3
        _write_at(f, 2, b"abcdefg")
        f.most = 0  # looped on, or taken as written, a write that took nothing hung or lied
        with pytest.raises(OSError, match="nothing written"):
            _write_at(f, 0, b"xy")
    assert path.read_bytes() == b"01abcdefg9"


def _one_frame_mp4v(path: Path) -> Path:
    """A one-frame 64x48 MPEG-4 part 2 MP4 as OpenCV writes it: its index last, untagged."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    return path


def _edits_through(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], Any]) -> None:
    """engine.sinks' in-place edits (files opened ``r+b``) go through ``wrap(file)``."""
    import builtins

    import engine.sinks

    def edit_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        opened = builtins.open(file, mode, *args, **kwargs)
        return wrap(opened) if mode == "r+b" else opened

    monkeypatch.setattr(engine.sinks, "open", edit_open, raising=False)


def test_a_fast_start_mp4_is_not_tagged(tmp_path: Path) -> None:
    # Its index first, untagged: the grown copy would go after the frames, and the file
    # would be a fast start no more.
    from engine.sinks import tag_mp4v_colour

    path = _one_frame_mp4v(tmp_path / "out.mp4")
    data = path.read_bytes()
    assert colour_boxes(path) == []  # OpenCV tags nothing
    ftyp = struct.unpack(">I", data[:4])[0]
    moov = data.rindex(b"moov") - 4
    path.write_bytes(data[:ftyp] + data[moov:] + data[ftyp:moov])
    moved = path.read_bytes()
    assert not tag_mp4v_colour(path)
    assert path.read_bytes() == moved


def test_a_retimed_mp4_says_its_new_length_in_the_movie_header(tmp_path: Path) -> None:
    # The movie header's duration is what players show as the length: left at the writer's
    # constant-rate sum, a 0.6 s file read 0.4 s.
    from engine.sinks import retime_mp4

    path = tmp_path / "out.mp4"
    with VideoFileSink(path=path, size=(64, 48), fps=25) as sink:
        for i in range(10):
            sink.write(frame(i, size=(64, 48)))
    assert retime_mp4(path, [1024] * 5 + [512] * 5, 12800)
    data = path.read_bytes()
    at = data.rindex(b"mvhd")  # the new index comes after the old one, now a `free` box
    scale, duration = struct.unpack(">II", data[at + 16 : at + 24])
    assert duration / scale == pytest.approx(0.6)


def test_a_new_index_cut_off_and_not_removable_is_a_box_players_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half of the grown index got to the disk and the cut back failed too: named `free`
    # until whole, it is skipped; named `moov` at once, it was a second, broken index.

    import engine.sinks
    from engine.sinks import tag_mp4v_colour

    path = _one_frame_mp4v(tmp_path / "out.mp4")
    size = path.stat().st_size

    def no_cut(fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    _edits_through(monkeypatch, lambda f: _FailingFile(f, 1))
    monkeypatch.setattr(engine.sinks.os, "ftruncate", no_cut)
    assert not tag_mp4v_colour(path)
    data = path.read_bytes()
    assert len(data) > size and data[size + 4 : size + 8] == b"free"
    assert len(read_video(path)) == 1


class _FailsFrom(_FailingFile):
    """As :class:`_FailingFile`, and every write after that one fails having written nothing
    (the disk stays full)."""

    def write(self, data: bytes) -> int:
        if self.writes >= self._fail_at:
            self.writes += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_an_old_index_half_renamed_and_not_restorable_keeps_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old index's type got half of `free` and the disk refused putting `moov` back: the
    # new index is then the only one, and cutting it off left a file with none.

    from engine.sinks import tag_mp4v_colour

    path = _one_frame_mp4v(tmp_path / "out.mp4")

    _edits_through(monkeypatch, lambda f: _FailsFrom(f, 3))
    assert not tag_mp4v_colour(path)
    assert len(read_video(path)) == 1
