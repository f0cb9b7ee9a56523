"""The virtual camera's errors on Linux and Windows: a device that exists but is taken is not
"missing"."""

from __future__ import annotations

import sys

import pytest
import pyvirtualcam

import engine.virtualcam as vc
from engine import VirtualCameraBusy, VirtualCameraUnavailable, open_sink, virtual_camera_status

# pyvirtualcam's v4l2loopback backend, word for word, when no device takes a writer.
NONE_FREE = (
    "No v4l2 loopback device found at /dev/video[0-99]. Did you run 'modprobe v4l2loopback'? "
    "See also pyvirtualcam's documentation."
)


class RefusingCamera:
    """A backend that fails as pyvirtualcam's v4l2loopback one does when every device is taken."""

    message = NONE_FREE

    def __init__(self, *args, **kwargs):
        raise RuntimeError(self.message)


def make_sysfs(root, devices: dict[str, str]):
    for node, name in devices.items():
        (root / node).mkdir(parents=True)
        (root / node / "name").write_text(name + "\n")
    return root


@pytest.fixture
def linux_refusing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"v4l2loopback": RefusingCamera})


def test_loopback_devices_lists_sysfs_in_device_order(tmp_path):
    root = make_sysfs(tmp_path, {"video10": "SharpCam", "video2": "Dummy video device"})
    (tmp_path / "subsystem").mkdir()  # other entries of the tree are not devices
    assert vc.loopback_devices(str(root)) == [
        ("/dev/video2", "Dummy video device"),
        ("/dev/video10", "SharpCam"),
    ]
    assert vc.loopback_devices(str(tmp_path / "absent")) == []


def test_taken_device_is_reported_busy_not_missing(monkeypatch, tmp_path, linux_refusing):
    monkeypatch.setattr(vc, "LOOPBACK_SYSFS", str(make_sysfs(tmp_path, {"video10": "SharpCam"})))
    with pytest.raises(VirtualCameraBusy) as info:
        open_sink("virtual", size=(64, 48), fps=30)
    msg = str(info.value)
    assert "/dev/video10 ('SharpCam') is in use" in msg
    assert "devices=2" in msg  # one more than there are
    assert "install" not in msg and "v4l2loopback-dkms" not in msg
    assert info.value.devices == [("/dev/video10", "SharpCam")]
    assert isinstance(info.value, VirtualCameraUnavailable)  # callers that catch the parent
    ok, status = virtual_camera_status()
    assert not ok and "is in use" in status


def test_explicit_device_busy_only_when_it_exists(monkeypatch, tmp_path, linux_refusing):
    monkeypatch.setattr(vc, "LOOPBACK_SYSFS", str(make_sysfs(tmp_path, {"video10": "SharpCam"})))
    monkeypatch.setattr(
        RefusingCamera,
        "message",
        "Virtual camera device /dev/video10 is not a video output device.",
    )
    with pytest.raises(VirtualCameraBusy, match="/dev/video10"):
        open_sink("virtual", size=(64, 48), fps=30, device="/dev/video10")
    # Another node than the loopback one: nothing says it is a taken loopback device.
    monkeypatch.setattr(
        RefusingCamera, "message", "Virtual camera device /dev/video0 is not a video output device."
    )
    with pytest.raises(VirtualCameraUnavailable) as info:
        open_sink("virtual", size=(64, 48), fps=30, device="/dev/video0")
    assert not isinstance(info.value, VirtualCameraBusy)
    assert "sudo modprobe v4l2loopback" in str(info.value)


def test_no_loopback_module_still_gives_install_steps(monkeypatch, tmp_path, linux_refusing):
    monkeypatch.setattr(vc, "LOOPBACK_SYSFS", str(tmp_path / "no-such-tree"))
    with pytest.raises(VirtualCameraUnavailable) as info:
        open_sink("virtual", size=(64, 48), fps=30)
    assert not isinstance(info.value, VirtualCameraBusy)
    assert vc.virtual_camera_guidance("linux") in str(info.value)


class ObsWindowsCamera:
    """pyvirtualcam's OBS backend on Windows, word for word: ``message`` is what it raises."""

    message = "virtual camera output could not be started"

    def __init__(self, *args, **kwargs):
        raise RuntimeError(self.message)


def test_obs_camera_in_use_on_windows_is_busy_not_missing(monkeypatch):
    # OBS's own Start Virtual Camera (or a second SharpCam) holding the camera was reported
    # as OBS not installed, with the steps to install it.
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"obs": ObsWindowsCamera})
    with pytest.raises(VirtualCameraBusy) as info:
        open_sink("virtual", size=(64, 48), fps=30)
    msg = str(info.value)
    assert "'OBS Virtual Camera' is in use" in msg and "Stop Virtual Camera" in msg
    assert "install" not in msg and "modprobe" not in msg
    assert info.value.devices == [("OBS Virtual Camera", "")]
    # Not installed: the install steps, as before.
    monkeypatch.setattr(
        ObsWindowsCamera, "message", "OBS Virtual Camera device not found! Did you install OBS?"
    )
    with pytest.raises(VirtualCameraUnavailable) as info:
        open_sink("virtual", size=(64, 48), fps=30)
    assert not isinstance(info.value, VirtualCameraBusy)
    assert vc.virtual_camera_guidance("win32") in str(info.value)


def test_obs_not_starting_on_macos_is_unavailable_not_in_use(monkeypatch):
    # The Windows OBS backend's words mean "in use" there only: on macOS, where OBS's camera
    # extension has to be installed and allowed, they were reported as "OBS Virtual Camera is
    # in use" with no steps to get one working.
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"obs": ObsWindowsCamera})
    with pytest.raises(VirtualCameraUnavailable) as info:
        open_sink("virtual", size=(64, 48), fps=30)
    assert not isinstance(info.value, VirtualCameraBusy)
    msg = str(info.value)
    assert "could not be started" in msg and "is in use" not in msg
    assert vc.virtual_camera_guidance("darwin") in msg


def test_a_virtual_camera_without_pyvirtualcam_says_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pyvirtualcam has no build for Windows on ARM: `run --output virtual` said
    # "error: ModuleNotFoundError: No module named 'pyvirtualcam'". Elsewhere the package is
    # the fix: `devices` and `run` followed the error with v4l2loopback's module steps, which
    # cannot help without it.
    from engine.virtualcam import VirtualCameraNotInstalled, VirtualCameraSink

    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import raises ImportError
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(VirtualCameraUnavailable) as info:
        VirtualCameraSink(size=(64, 48))
    assert isinstance(info.value, VirtualCameraNotInstalled)  # the app tells it by its type
    ok, status = virtual_camera_status()
    for msg in (str(info.value), status):
        assert msg.startswith("pyvirtualcam cannot be loaded ("), msg
        assert "Install it: pip install pyvirtualcam" in msg, msg
        assert "v4l2loopback" not in msg and "modprobe" not in msg, msg
    assert not ok
    # Windows on ARM: no build to install; no pip command that would fail.
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(vc.platform, "machine", lambda: "ARM64")
    ok, status = virtual_camera_status()
    assert not ok and "no build for Windows on ARM" in status and "pip" not in status, status
    # Windows on an Intel or AMD processor has a build: installing it is the fix there.
    monkeypatch.setattr(vc.platform, "machine", lambda: "AMD64")
    ok, status = virtual_camera_status()
    assert not ok and "Install it: pip install pyvirtualcam" in status, status
    monkeypatch.setattr(vc.platform, "machine", lambda: "arm64")  # in any case
    assert "no build for Windows on ARM" in virtual_camera_status()[1]


def test_a_virtual_camera_whose_close_failed_is_not_closed_again_when_collected(monkeypatch):
    # pyvirtualcam's __del__ closed it again: a traceback at exit after the error was said.
    import gc

    import pyvirtualcam

    from engine.virtualcam import VirtualCameraSink

    class FailingClose:
        def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:  # noqa: ANN001, ANN003
            self.closes = 0

        def device(self) -> str:
            return "failing"

        def native_fourcc(self):  # noqa: ANN201
            return None

        def send(self, frame) -> None:  # noqa: ANN001
            pass

        def close(self) -> None:
            self.closes += 1
            raise RuntimeError("device gone")

    pyvirtualcam.register_backend("sharpcam-test-failing-close", FailingClose)
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    sink = VirtualCameraSink(size=(64, 48), backend="sharpcam-test-failing-close")
    backend = sink._cam._backend
    with pytest.raises(RuntimeError, match="device gone"):
        sink.close()
    del sink
    gc.collect()
    assert unraisable == [] and backend.closes == 1


def test_explicit_device_named_through_a_link_is_busy(monkeypatch, tmp_path, linux_refusing):
    # `--device /dev/v4l/by-id/...` (any link to the taken loopback node) is that device: it was
    # compared as text with sysfs's /dev/video10 and reported missing, with the steps to install
    # the v4l2loopback module the user already has.
    sysfs = make_sysfs(tmp_path / "sysfs", {"video10": "SharpCam"})
    monkeypatch.setattr(vc, "LOOPBACK_SYSFS", str(sysfs))
    link = tmp_path / "by-id-sharpcam"
    link.symlink_to("/dev/video10")
    monkeypatch.setattr(
        RefusingCamera, "message", f"Virtual camera device {link} is not a video output device."
    )
    with pytest.raises(VirtualCameraBusy) as info:
        open_sink("virtual", size=(64, 48), fps=30, device=str(link))
    assert info.value.devices == [("/dev/video10", "SharpCam")]


def test_a_loopback_device_whose_name_cannot_be_read_is_still_listed(
    monkeypatch, tmp_path, linux_refusing
):
    # The name is only a label: a device without one is still a loopback device, and taken it is
    # "in use", not "install v4l2loopback".
    (tmp_path / "video10").mkdir()
    assert vc.loopback_devices(str(tmp_path)) == [("/dev/video10", "")]
    monkeypatch.setattr(vc, "LOOPBACK_SYSFS", str(tmp_path))
    with pytest.raises(VirtualCameraBusy, match="/dev/video10 is in use"):
        open_sink("virtual", size=(64, 48), fps=30)


class _Keeping:
    """A pyvirtualcam backend that keeps what it is sent, as ``(H, W, 3)`` arrays."""

    sent: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:  # noqa: ANN001, ANN003
        self.shape = (height, width, 3)

    def device(self) -> str:
        return "keeping"

    def native_fourcc(self):  # noqa: ANN201
        return None

    def send(self, frame) -> None:  # noqa: ANN001
        _Keeping.sent.append(frame.reshape(self.shape).copy())

    def close(self) -> None:
        pass


pyvirtualcam.register_backend("sharpcam-test-keeping", _Keeping)


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_a_picture_shown_is_fit_to_the_device_kept_for_resends_and_read_back_as_rgb(fmt):
    # A device reopened at another size shows what the one before it showed (read back from
    # it, RGB whatever the device's format) until the first new frame: the engine resends it.
    import numpy as np

    from engine.frames import Frame, fit_to
    from engine.virtualcam import VirtualCameraSink

    _Keeping.sent = []
    old = VirtualCameraSink(size=(64, 36), backend="sharpcam-test-keeping", fmt=fmt)
    assert old.last_picture() is None
    image = np.random.default_rng(1).integers(0, 256, (36, 64, 3), dtype=np.uint8)
    old.write(Frame(image, 0, 0.0))
    old.close()
    picture = old.last_picture()  # after its close, too
    assert picture is not None and np.array_equal(picture, image)
    new = VirtualCameraSink(size=(128, 96), backend="sharpcam-test-keeping", fmt=fmt)
    new.show(picture)
    new.repeat_last()
    expected = fit_to(image, (128, 96))  # letterboxed: 128x72 between bars
    native = expected[..., ::-1] if fmt == "BGR" else expected
    assert all(np.array_equal(sent, native) for sent in _Keeping.sent[1:])
    assert len(_Keeping.sent) == 3 and new.frames_written == 0
    assert np.array_equal(new.last_picture(), expected)
    new.close()
