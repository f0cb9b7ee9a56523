"""The choices in the camera and resolution pickers.

Camera names come from QtMultimedia's ``QMediaDevices.videoInputs()`` (the names a person sees
in their OS, e.g. "Logitech BRIO"); where QtMultimedia is missing or finds nothing, the engine's
OpenCV probing (``engine.list_cameras``) fills in, on a worker thread (:class:`CameraProbe`):
it opens each index in turn, which takes seconds on some systems. The bundled demo clip is
always offered last, so the app works at once on a machine without a camera.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.virtualcam import is_source_device

log = logging.getLogger(__name__)

DEMO_ID = "demo"
DEMO_CLIP = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"


@dataclass(frozen=True)
class CameraChoice:
    """One entry of the camera picker.

    ``source`` is what ``engine.open_source`` receives: an OpenCV index ("0"), a device path
    ("/dev/video0"), or a file path for the demo clip.
    """

    id: str  # stable key remembered in settings
    name: str  # what the picker shows
    source: str  # what the engine opens
    is_demo: bool = False
    is_virtual: bool = False  # a virtual camera (maybe SharpCam's own output): never the default


@dataclass(frozen=True)
class ResolutionChoice:
    label: str
    size: tuple[int, int]
    fps: int

    @property
    def key(self) -> str:
        return f"{self.size[0]}x{self.size[1]}@{self.fps}"


RESOLUTIONS: tuple[ResolutionChoice, ...] = (
    ResolutionChoice("720p · 30 fps", (1280, 720), 30),
    ResolutionChoice("1080p · 30 fps", (1920, 1080), 30),
    ResolutionChoice("720p · 60 fps", (1280, 720), 60),
    ResolutionChoice("480p · 30 fps", (640, 480), 30),
    ResolutionChoice("360p · 30 fps", (640, 360), 30),
)
DEFAULT_RESOLUTION = RESOLUTIONS[0]


def demo_choice(clip: Path | str = DEMO_CLIP) -> CameraChoice:
    return CameraChoice(id=DEMO_ID, name="Demo clip (bundled)", source=str(clip), is_demo=True)


def list_camera_choices(*, use_qt: bool = True, probe_opencv: bool = True) -> list[CameraChoice]:
    """Cameras found on this machine, then the demo clip (always present)."""
    cameras: list[CameraChoice] = []
    if use_qt:
        cameras = _qt_cameras()
    if not cameras and probe_opencv:
        cameras = _opencv_cameras()
    return [*distinct_names(_virtual_last(cameras)), demo_choice()]


def has_cameras(choices: list[CameraChoice]) -> bool:
    """Whether ``choices`` offer more than the demo clip."""
    return any(not c.is_demo for c in choices)


class CameraProbe(QObject):
    """Lists the cameras on a worker thread and delivers them to the GUI thread (``found``).

    OpenCV finds cameras only by opening index after index, and a missing one can take seconds
    to fail (Windows, macOS): the window must show, and stay responsive, meanwhile. Only the
    OpenCV probing by default: QtMultimedia's list is quick (the OS's device list, no camera
    opened) and its objects belong to the thread that makes them, so the GUI thread takes it.

    Signals:
        found(object): the ``list[CameraChoice]`` (the demo clip included), once; connect it
            queued, as :meth:`MainWindow.wait_for_cameras` does.
    """

    found = Signal(object)

    def __init__(
        self,
        list_choices: Callable[[], list[CameraChoice]] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._list = list_choices or (lambda: list_camera_choices(use_qt=False))
        self._done = threading.Event()
        self._result: list[CameraChoice] = [demo_choice()]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin the listing (once; later calls do nothing)."""
        if self._thread is not None:
            return
        # A daemon: a driver that never answers must not keep the process alive at exit;
        # run_app gives it a bounded join first (see join).
        self._thread = threading.Thread(target=self._run, name="sharpcam-cameras", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> list[CameraChoice] | None:
        """The choices found, waiting up to ``timeout`` seconds; None while still listing."""
        return list(self._result) if self._done.wait(timeout) else None

    def join(self, timeout: float) -> bool:
        """Wait for the worker to end; True when it did. Before the process exits: a thread
        inside a native call at interpreter shutdown aborts the process."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        try:
            choices = list(self._list())
        except Exception as exc:  # the demo clip still plays: the window must not wait on
            log.warning("listing the cameras failed: %s", exc)
            choices = []
        if not any(c.is_demo for c in choices):
            choices.append(demo_choice())
        self._result = choices
        self._done.set()
        try:
            self.found.emit(choices)
        except RuntimeError:  # the probe was deleted meanwhile (the app exits)
            pass


#: What the picker adds to a virtual camera's name.
VIRTUAL_SUFFIX = " (virtual camera)"
#: Names virtual cameras report (lower case): SharpCam's own v4l2loopback device (card_label),
#: v4l2loopback's default, and OBS's, which SharpCam drives on Windows and macOS.
VIRTUAL_CAMERA_NAMES = ("sharpcam", "dummy video device", "obs virtual camera", "obs-camera")


def _virtual_last(cameras: list[CameraChoice]) -> list[CameraChoice]:
    """Virtual cameras after the real ones, marked: SharpCam's own output listed first would be
    the default source, and the app would sharpen its own picture in a loop."""

    def virtual(cam: CameraChoice) -> bool:
        return any(v in cam.name.lower() for v in VIRTUAL_CAMERA_NAMES)

    real = [c for c in cameras if not virtual(c)]
    loops = [
        replace(c, name=f"{c.name}{VIRTUAL_SUFFIX}", is_virtual=True) for c in cameras if virtual(c)
    ]
    return real + loops


def reads_virtual_device(source: str, name: str, device: str) -> bool:
    """Whether the camera ``source`` (``name`` in the picker) is the virtual camera ``device``
    SharpCam sends to, as pyvirtualcam names it: a path on Linux ("/dev/video10"), a name
    elsewhere ("OBS Virtual Camera", "Unity Video Capture"). Reading it would show SharpCam its
    own picture in a loop. Another virtual camera (another app's output) is a camera like any.
    """
    if not device:
        return False
    if device.startswith("/dev/"):
        return is_source_device(device, source)
    # Windows and macOS open cameras by index: only the name the picker shows can tell, without
    # what the picker adds to it (the virtual-camera note, "(2)" for a second of that name).
    base = re.sub(r"(?: \(\d+\))?$", "", name)
    base = base.removesuffix(VIRTUAL_SUFFIX)
    return base.strip().casefold() == device.strip().casefold()


def distinct_names(cameras: list[CameraChoice]) -> list[CameraChoice]:
    """Two cameras of the same model report the same name: number the later ones
    ("HD Webcam", "HD Webcam (2)") so the picker can tell them apart."""
    # A number is skipped when another device already reports that name ("HD Webcam (2)" of
    # its own): two entries of one name cannot be told apart in the picker.
    reported = {cam.name for cam in cameras}
    used: set[str] = set()
    out = []
    for cam in cameras:
        name, n = cam.name, 1
        while name in used or (n > 1 and name in reported):
            n += 1
            name = f"{cam.name} ({n})"
        used.add(name)
        out.append(cam if n == 1 else replace(cam, name=name))
    return out


def watch_cameras(on_change: Callable[[list[CameraChoice]], None], parent: Any) -> Any:
    """Call ``on_change`` with the new choices whenever a camera is plugged in or unplugged;
    returns the watching ``QMediaDevices`` (owned by ``parent``), or None without QtMultimedia.
    """
    try:
        from PySide6.QtMultimedia import QMediaDevices
    except ImportError:
        return None  # OpenCV probing cannot tell: the list stays as it was at start
    devices = QMediaDevices(parent)
    # Qt's list only: re-probing with OpenCV would open the camera in use.
    devices.videoInputsChanged.connect(lambda: on_change(list_camera_choices(probe_opencv=False)))
    return devices


def _qt_cameras() -> list[CameraChoice]:
    try:
        from PySide6.QtMultimedia import QMediaDevices
    except ImportError as exc:  # e.g. libpulse missing on a minimal Linux
        log.info("QtMultimedia unavailable (%s); probing cameras with OpenCV", exc)
        return []
    out = []
    devices = list(QMediaDevices.videoInputs())
    ids = [bytes(dev.id().data()).decode(errors="replace") for dev in devices]
    # OpenCV's AVFoundation backend numbers the cameras sorted by their uniqueID, which is
    # Qt's id there; Qt lists them in discovery order (built-in first), so camera i of the
    # picker opened another device, possibly the OBS Virtual Camera that SharpCam sends to.
    by_id = sorted(range(len(ids)), key=lambda j: ids[j])
    opencv_index = {j: k for k, j in enumerate(by_id)}
    for i, (dev, dev_id) in enumerate(zip(devices, ids, strict=True)):
        if sys.platform.startswith("linux") and dev_id.startswith("/dev/"):
            source = dev_id  # a device path, which OpenCV opens directly
        elif sys.platform == "darwin":
            source = str(opencv_index[i])
        else:
            # Windows: OpenCV's Media Foundation index follows the order Qt lists (the engine
            # opens cameras with Media Foundation only, for that reason).
            source = str(i)
        out.append(
            CameraChoice(
                id=dev_id or str(i), name=dev.description() or f"Camera {i}", source=source
            )
        )
    return out


def os_camera_names() -> dict[str, str]:
    """``{OpenCV index: name}`` of the cameras, as the OS names them (``{"0": "FaceTime HD
    Camera", "1": "OBS Virtual Camera"}``), for the command line on macOS, where OpenCV names
    none: without them ``run --source 1 --output virtual`` could not tell that camera 1 is the
    virtual camera it sends to. Empty where QtMultimedia is missing or lists nothing."""
    from PySide6.QtCore import QCoreApplication

    # Qt's device list wants an application object; the command line has none. One made here
    # goes again: left behind, it would keep a window (a QApplication) from being made later.
    made = None if QCoreApplication.instance() is not None else QCoreApplication([])
    try:
        return {c.source: c.name for c in _qt_cameras()}
    finally:
        if made is not None:
            made.shutdown()


def _opencv_cameras() -> list[CameraChoice]:
    try:
        from engine import list_cameras
    except ImportError:
        return []
    try:
        found = list_cameras()
    except Exception as exc:  # probing must never keep the window from opening
        log.warning("camera probing failed: %s", exc)
        return []
    out = []
    for cam in found:
        index = getattr(cam, "index", None)
        path = getattr(cam, "path", None) or getattr(cam, "device", None)
        source = str(path if path is not None else index)
        name = getattr(cam, "name", None) or f"Camera {source}"
        out.append(CameraChoice(id=source, name=str(name), source=source))
    return out
