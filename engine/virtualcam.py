"""The virtual camera sink: frames out to Zoom/Teams/Meet through ``pyvirtualcam``.

``pyvirtualcam.Camera`` tries its registered backends (v4l2loopback on Linux, OBS on Windows
and macOS, Unity Capture on Windows); when none works the user needs to install or start one,
so the error carries the per-OS steps rather than the backends' raw messages alone.
"""

from __future__ import annotations

import math
import os
import platform
import stat
import sys
from typing import Any

import cv2
import numpy as np

from engine.frames import Frame, check_rgb8, even_size, fit_to
from engine.sinks import SinkError
from engine.sources import camera_device_path

__all__ = [
    "VirtualCameraBusy",
    "VirtualCameraNotInstalled",
    "VirtualCameraSink",
    "VirtualCameraUnavailable",
    "OBS_CAMERA",
    "loopback_devices",
    "is_source_device",
    "virtual_camera_guidance",
    "virtual_camera_status",
]


class VirtualCameraUnavailable(SinkError):
    """No virtual camera device could be opened; the message says how to get one."""


class VirtualCameraBusy(VirtualCameraUnavailable):
    """Virtual camera devices exist but another program is sending to each of them.

    Attributes:
        devices: ``[(path, name), ...]`` of the devices that exist, e.g.
            ``[("/dev/video10", "SharpCam")]`` (v4l2loopback on Linux), or
            ``[("OBS Virtual Camera", "")]`` (Windows, where it has no path).
    """

    def __init__(self, message: str, devices: list[tuple[str, str]]):
        super().__init__(message)
        self.devices = devices


class VirtualCameraNotInstalled(VirtualCameraUnavailable):
    """The ``pyvirtualcam`` package cannot be loaded: installing it is the fix, not the steps
    that make a device (v4l2loopback's, OBS's), which it cannot send to without it.
    ``installable`` is False where it has no build (:func:`pyvirtualcam_has_build`): then no
    retry can help."""

    def __init__(self, message: str, *, installable: bool = True) -> None:
        super().__init__(message)
        self.installable = installable


def pyvirtualcam_has_build() -> bool:
    """Whether pyvirtualcam has a build for this computer: none for Windows on ARM."""
    return not (sys.platform == "win32" and platform.machine().upper() == "ARM64")


def pyvirtualcam_missing(exc: BaseException) -> str:
    """What to do when ``import pyvirtualcam`` raised ``exc``. It comes with SharpCam (a
    dependency), except on Windows on ARM, where it has no build."""
    if not pyvirtualcam_has_build():
        return (
            f"pyvirtualcam cannot be loaded ({exc}): it has no build for Windows on ARM, so "
            "SharpCam cannot send to a virtual camera on this computer"
        )
    return (
        f"pyvirtualcam cannot be loaded ({exc}): SharpCam sends to the virtual camera through "
        "this package. Install it: pip install pyvirtualcam (it comes with SharpCam, so "
        "reinstalling SharpCam brings it back too)"
    )


# v4l2loopback's devices have no hardware behind them, so the kernel lists them under the
# virtual tree; webcams sit under their bus (pci, usb) and are not listed here.
LOOPBACK_SYSFS = "/sys/devices/virtual/video4linux"


def loopback_devices(sysfs: str | None = None) -> list[tuple[str, str]]:
    """The v4l2loopback devices the kernel has made: ``[("/dev/video10", "SharpCam"), ...]``.

    Read from ``sysfs`` (default :data:`LOOPBACK_SYSFS`). Sorted by device number; empty where
    there are none or no such tree (not Linux).
    """
    sysfs = sysfs or LOOPBACK_SYSFS
    try:
        entries = os.listdir(sysfs)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not (entry.startswith("video") and entry[5:].isdigit()):
            continue
        try:
            with open(os.path.join(sysfs, entry, "name"), encoding="utf-8", errors="replace") as f:
                name = f.read().strip()
        except OSError:
            name = ""
        found.append((int(entry[5:]), f"/dev/{entry}", name))
    return [(path, name) for _, path, name in sorted(found)]


# What pyvirtualcam's v4l2loopback backend says when every device refuses a writer; with
# exclusive_caps=1 (the setting the guidance gives) a device another program already writes
# to announces itself as a capture device, so pyvirtualcam reads it as "no loopback device".
_LOOPBACK_REFUSALS = ("No v4l2 loopback device found", "is not a video output device")
# What pyvirtualcam's OBS backend on Windows says when the camera's shared memory exists
# already ("fail if already in use" in its queue code): a program holds it, OBS with its own
# virtual camera started or a second SharpCam. Its missing camera is another message ("OBS
# Virtual Camera device not found! Did you install OBS?").
_OBS_WINDOWS_BUSY = "virtual camera output could not be started"
#: The one device OBS's virtual camera is on Windows and macOS.
OBS_CAMERA = "OBS Virtual Camera"


def _busy_message(detail: str, devices: list[tuple[str, str]]) -> str:
    named = ", ".join(f"{path} ({name!r})" if name else path for path, name in devices)
    one = len(devices) == 1
    return (
        f"the virtual camera {'device' if one else 'devices'} {named} "
        f"{'is' if one else 'are'} in use: another program (OBS, a second SharpCam) is "
        "already sending video to "
        f"{'it' if one else 'each'}. Close that program and try again, or make one more "
        "device:\n"
        "  sudo modprobe -r v4l2loopback\n"
        f"  sudo modprobe v4l2loopback devices={len(devices) + 1} exclusive_caps=1 "
        "card_label=SharpCam\n"
        f"(pyvirtualcam said: {detail})"
    )


def _obs_busy_message(detail: str) -> str:
    return (
        f"the virtual camera {OBS_CAMERA!r} is in use: another program is sending video to it "
        "(OBS with its virtual camera started, a second SharpCam). Stop it there (OBS: Stop "
        f"Virtual Camera) and try again.\n(pyvirtualcam said: {detail})"
    )


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
        try:
            import pyvirtualcam  # imported here: loading the native backend costs at startup
        except ImportError as exc:
            # Not installed where it has no build (Windows on ARM): an ImportError reached
            # `run --output virtual` as "error: ModuleNotFoundError: ...". The package is the
            # fix: the steps that make a device (v4l2loopback's) led away from it.
            raise VirtualCameraNotInstalled(
                pyvirtualcam_missing(exc), installable=pyvirtualcam_has_build()
            ) from exc

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
            if sys.platform.startswith("linux") and any(r in detail for r in _LOOPBACK_REFUSALS):
                # The steps to install v4l2loopback would send the user to install what
                # they have: a device exists and is taken.
                devices = loopback_devices()
                if device:
                    devices = [
                        d for d in devices if os.path.realpath(d[0]) == os.path.realpath(device)
                    ]
                if devices:
                    raise VirtualCameraBusy(_busy_message(detail, devices), devices) from exc
            if sys.platform == "win32" and _OBS_WINDOWS_BUSY in detail:
                # The steps to install OBS would send the user to install what they have.
                devices = [(OBS_CAMERA, "")]
                raise VirtualCameraBusy(_obs_busy_message(detail), devices) from exc
            what = f"device {device!r}" if device else "a virtual camera"
            raise VirtualCameraUnavailable(
                f"cannot open {what}: {detail}\n{virtual_camera_guidance()}"
            ) from exc
        self._sent_before_close = 0
        #: New frames the device took: pyvirtualcam's own count includes a send that failed,
        #: and the frames repeat_last sent again.
        self.frames_written = 0
        self._last: np.ndarray | None = None  # what the device was sent last, in its format
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
        self._send(frame.image)
        self.frames_written += 1

    def show(self, image: np.ndarray) -> None:
        """Send ``image`` ``(H, W, 3) uint8 RGB`` (letterboxed to ``size``) and keep it for
        :meth:`repeat_last`, as a frame would be; not in :attr:`frames_written`. A device
        reopened at another size shows what the one before it showed until the first new
        frame: a call app gives up a camera silent for 1 s (Chrome), and that frame may be
        seconds away (a model's warm-up)."""
        self._send(image)

    def last_picture(self) -> np.ndarray | None:
        """A copy of what the device was sent last, ``(H, W, 3) uint8 RGB`` at ``size`` (None
        before the first); kept after :meth:`close`."""
        last = self._last
        if last is None:
            return None
        if self._bgr is not None:
            return cv2.cvtColor(last, cv2.COLOR_BGR2RGB)
        return last.copy()

    def _send(self, image: np.ndarray) -> None:
        if self._cam is None:
            raise RuntimeError("virtual camera sink is closed")
        check_rgb8(image, f"virtual camera {self.device}")
        img = fit_to(image, self.size, out=self._fitted)
        if self._bgr is not None:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR, dst=self._bgr)
        elif img is image:
            # Kept for repeat_last: the engine reuses the frame's buffer for the next one.
            np.copyto(self._fitted, img)
            img = self._fitted
        self._cam.send(img)
        self._last = img

    def repeat_last(self) -> None:
        """Send the last frame again (none before the first): the engine's keep-alive while
        no new frame comes (:data:`engine.pipeline.RESEND_S`). Not in :attr:`frames_written`."""
        if self._cam is None:
            raise RuntimeError("virtual camera sink is closed")
        if self._last is not None:
            self._cam.send(self._last)

    def close(self) -> None:
        cam, self._cam = getattr(self, "_cam", None), None
        if cam is not None:
            self._sent_before_close = int(cam.frames_sent)
            try:
                cam.close()
            except BaseException:
                # pyvirtualcam keeps a backend whose close raised, and its __del__ closed it
                # again, printing "Exception ignored in ... Camera.__del__" and a traceback
                # at exit after the error had been reported.
                cam._backend = None
                raise

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
        return False, pyvirtualcam_missing(exc)
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
