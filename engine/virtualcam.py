"""The virtual camera sink: frames out to Zoom/Teams/Meet through ``pyvirtualcam``.

``pyvirtualcam.Camera`` tries its registered backends (v4l2loopback on Linux, OBS on Windows
and macOS, Unity Capture on Windows); when none works the user needs to install or start one,
so the error carries the per-OS steps rather than the backends' raw messages alone.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from typing import Any

import cv2
import numpy as np

from engine.frames import Frame, check_rgb8, even_size, fit_to
from engine.sinks import SinkError
from engine.sources import camera_device_path

__all__ = [
    "VirtualCameraSink",
    "VirtualCameraUnavailable",
    "is_source_device",
    "virtual_camera_guidance",
    "virtual_camera_status",
]


class VirtualCameraUnavailable(SinkError):
    """No virtual camera device could be opened; the message says how to get one."""


def virtual_camera_guidance(platform: str | None = None) -> str:
    """What to do on this OS (``sys.platform`` style name) to get a virtual camera."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return (
            "Linux needs the v4l2loopback kernel module (package v4l2loopback-dkms), loaded with:\n"
            "  sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=SharpCam\n"
            "then choose the 'SharpCam' camera in your video-call app."
        )
    if platform == "win32":
        return (
            "Windows: install OBS Studio >= 30 (https://obsproject.com) and start its virtual "
            "camera once (Start Virtual Camera, then Stop and close OBS); then choose "
            "'OBS Virtual Camera' in your video-call app."
        )
    if platform == "darwin":
        return (
            "macOS: install OBS Studio >= 30 (https://obsproject.com), start its virtual camera "
            "once and allow the system extension (System Settings > Privacy & Security); then "
            "choose 'OBS Virtual Camera' in your video-call app."
        )
    return "No virtual camera backend is known for this operating system."


def _pixel_format(name: str) -> Any:
    import pyvirtualcam

    try:
        return pyvirtualcam.PixelFormat[name.upper()]
    except KeyError:
        raise ValueError(
            f"unsupported virtual camera pixel format {name!r}; use RGB or BGR"
        ) from None


class VirtualCameraSink:
    """Frames to a virtual camera via the real ``pyvirtualcam.Camera``.

    Args:
        size: ``(W, H)`` the camera is opened at. It cannot change while open (v4l2loopback,
            OBS), so frames of another size are scaled to fit and letterboxed (black bars),
            never stretched.
        fps: the rate announced to the device (the pipeline decides the real rate).
        device: a specific device ("/dev/video10", "OBS Virtual Camera"); None = first usable.
        backend: a specific pyvirtualcam backend ("v4l2loopback", "obs", "unitycapture" or a
            registered one); None = try all.
        fmt: pixel format sent to pyvirtualcam, "RGB" (the engine's format: no conversion) or
            "BGR" (converted into a preallocated buffer).

    Raises:
        ValueError: a size or rate no device can take (checked before any device is opened).
        VirtualCameraUnavailable: no device could be opened; message has per-OS guidance.
    """

    def __init__(
        self,
        *,
        size: tuple[int, int],
        fps: float = 30.0,
        device: str | None = None,
        backend: str | None = None,
        fmt: str = "RGB",
    ):
        import pyvirtualcam  # imported here: loading the native backend costs at startup

        w, h = (int(v) for v in size)
        if w < 1 or h < 1:
            # even_size would have opened a 2-pixel-wide camera for a size of 0 or less.
            raise ValueError(f"expected a positive (W, H) size, got {tuple(size)}")
        fps = float(fps)
        if not (math.isfinite(fps) and fps > 0):
            # pyvirtualcam divides by it: 0 read as "cannot open a virtual camera" with the
            # steps to install one; NaN and negative rates reached the device.
            raise ValueError(f"expected a positive frame rate, got {fps}")
        # pyvirtualcam converts to I420/NV12/YUYV, whose chroma planes assume even sides.
        self.size = even_size((w, h))
        self.fps = fps
        self._fmt = _pixel_format(fmt)
        if self._fmt not in (pyvirtualcam.PixelFormat.RGB, pyvirtualcam.PixelFormat.BGR):
            raise ValueError(f"unsupported virtual camera pixel format {fmt!r}; use RGB or BGR")
        known = pyvirtualcam.camera.BACKENDS
        if backend is not None and backend not in known:
            raise VirtualCameraUnavailable(
                f"unknown virtual camera backend {backend!r}; available: "
                f"{', '.join(known) or 'none'}\n{virtual_camera_guidance()}"
            )
        if not known:
            raise VirtualCameraUnavailable(
                f"no virtual camera backend for this system\n{virtual_camera_guidance()}"
            )
        try:
            self._cam: Any = pyvirtualcam.Camera(
                self.size[0], self.size[1], self.fps, fmt=self._fmt, device=device, backend=backend
            )
        except Exception as exc:  # pyvirtualcam raises RuntimeError listing each backend's failure
            detail = str(exc).strip() or type(exc).__name__
            what = f"device {device!r}" if device else "a virtual camera"
            raise VirtualCameraUnavailable(
                f"cannot open {what}: {detail}\n{virtual_camera_guidance()}"
            ) from exc
        self._sent_before_close = 0
        try:
            self.device = self._cam.device
            self.backend = self._cam.backend
            w, h = self.size
            self._fitted = np.empty((h, w, 3), np.uint8)
            self._bgr = (
                np.empty((h, w, 3), np.uint8) if self._fmt is pyvirtualcam.PixelFormat.BGR else None
            )
        except BaseException:
            self.close()  # nobody gets a sink to close: the device would stay taken
            raise

    @property
    def frames_sent(self) -> int:
        """Frames sent so far, also after :meth:`close`."""
        cam = self._cam
        return self._sent_before_close if cam is None else int(cam.frames_sent)

    def write(self, frame: Frame) -> None:
        """Send ``frame.image`` ``(H, W, 3) uint8 RGB``; letterboxed to ``size`` if needed.

        Raises TypeError or ValueError, naming the device, for a frame of another layout.
        """
        if self._cam is None:
            raise RuntimeError("virtual camera sink is closed")
        check_rgb8(frame.image, f"virtual camera {self.device}")
        img = fit_to(frame.image, self.size, out=self._fitted)
        if self._bgr is not None:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR, dst=self._bgr)
        self._cam.send(img)

    def close(self) -> None:
        cam, self._cam = getattr(self, "_cam", None), None
        if cam is not None:
            self._sent_before_close = int(cam.frames_sent)
            cam.close()

    def describe(self) -> str:
        return f"virtual camera {self.device} ({self.backend}) · {self.size[0]}x{self.size[1]}"

    def __enter__(self) -> VirtualCameraSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_source_device(device: str | None, source: int | str) -> bool:
    """Whether virtual camera ``device`` (``"/dev/video10"``) is the device camera ``source``
    (an index or a path) reads: a stream that sends what it reads would read it back.

    Compared as files: ``/dev/v4l/by-id/...`` and other links resolve to their node, and two
    nodes of one device (the same major and minor numbers) are one device. False for devices
    without a file (OBS Virtual Camera on Windows and macOS).
    """
    source_path = camera_device_path(source)
    if not device or source_path is None:
        return False
    if os.path.realpath(device) == os.path.realpath(source_path):
        return True
    try:
        a, b = os.stat(device), os.stat(source_path)
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(a.st_mode) and stat.S_ISCHR(b.st_mode) and a.st_rdev == b.st_rdev


def virtual_camera_status(
    *, device: str | None = None, backend: str | None = None
) -> tuple[bool, str]:
    """Whether a virtual camera can be opened now: ``(ok, message)``.

    Opens one briefly at 640x480 and closes it. ``message`` names the device when ``ok``, and
    is the per-OS guidance (with the backends' errors) otherwise. Never raises.
    """
    try:
        import pyvirtualcam  # noqa: F401
    except Exception as exc:  # the native module can fail to load on an odd system
        return False, f"pyvirtualcam cannot be loaded: {exc}\n{virtual_camera_guidance()}"
    try:
        sink = VirtualCameraSink(size=(640, 480), fps=30.0, device=device, backend=backend)
    except VirtualCameraUnavailable as exc:
        return False, str(exc)
    except Exception as exc:
        return False, f"virtual camera check failed: {exc}\n{virtual_camera_guidance()}"
    try:
        return True, f"virtual camera available: {sink.device} ({sink.backend})"
    finally:
        sink.close()
