"""The one place where the engine meets Qt.

The engine calls back from its worker threads; widgets may only be touched from the GUI thread.
:class:`EngineBridge` is a ``QObject`` living in the GUI thread: engine callbacks only copy data
and emit signals (Qt queues cross-thread emissions to the receiver's thread), and the window's
commands (start, strength, on/off, virtual camera) arrive as plain method calls.

Previews follow the latest-frame rule of the engine itself: the callback stores the newest
``(original, processed)`` pair and emits :attr:`EngineBridge.preview_ready` only when the GUI has
taken the previous one, so a slow paint drops frames instead of piling up queued events.

The engine module is injected (``api=``) so tests can hand in a fake; by default it is the real
``engine`` package.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

log = logging.getLogger(__name__)


def frame_to_qimage(image: np.ndarray) -> QImage:
    """Deep-copy an ``(H, W, 3) uint8 RGB`` array into a ``QImage`` that owns its pixels.

    The engine reuses its buffers, and ``QImage(buffer, ...)`` only borrows memory, so the
    ``.copy()`` is what makes the result safe to paint later on another thread.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if not image.flags.c_contiguous:
        image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


# --------------------------------------------------------------------------- user-facing errors


@dataclass(frozen=True)
class UserMessage:
    """An error as the window shows it: what happened, and what to do about it."""

    kind: str  # "camera" | "model" | "gpu" | "virtual_camera" | "engine"
    text: str
    advice: str


def describe_error(exc: BaseException, *, context: str = "") -> UserMessage:
    """Map an engine exception to a message a person can act on.

    Matching is by exception type name and message because the window must not depend on the
    engine's private exception hierarchy; anything unrecognised still gets a sensible line.
    """
    name = type(exc).__name__
    msg = str(exc).strip() or name
    low = f"{name} {msg} {context}".lower()
    if "passing frames through" in low:
        # The engine's own words for a model that loaded, ran, then failed: it did load, and
        # nothing falls back to the CPU; the video is unsharpened until the engine restarts.
        return UserMessage(
            "model",
            f"Sharpening stopped: {msg}",
            "The video keeps flowing unsharpened. Changing the camera or the processing size "
            "restarts the model; if it stops again, reinstall SharpCam's weights.",
        )
    if context == "model" or "integrity" in low or "onnx" in low or "model" in low:
        if "cuda" in low or "tensorrt" in low or "provider" in low or "directml" in low:
            return UserMessage(
                "gpu",
                f"GPU acceleration failed: {msg}",
                "SharpCam keeps running on the CPU. Update the GPU driver or install the matching "
                "onnxruntime-gpu build to get the GPU back.",
            )
        return UserMessage(
            "model",
            f"The sharpening model could not be loaded: {msg}",
            "The video keeps flowing unsharpened (passthrough). Reinstall the weights "
            "(weights/student.onnx with its manifest.json) or choose another backend.",
        )
    if "cuda" in low or "tensorrt" in low or "provider" in low or "gpu" in low:
        return UserMessage(
            "gpu",
            f"GPU acceleration failed: {msg}",
            "SharpCam keeps running on the CPU. Update the GPU driver or the onnxruntime-gpu "
            "package to get the GPU back.",
        )
    if context == "virtual_camera" or "virtual" in low:
        return UserMessage(
            "virtual_camera",
            f"Virtual camera problem: {msg}",
            "Turn the virtual camera on again in the sidebar; if it cannot start, SharpCam "
            "shows the setup steps.",
        )
    # After the virtual-camera branch: "virtual camera" also contains "camera".
    if context == "camera" or "camera" in low or "capture" in low or "source" in low:
        return UserMessage(
            "camera",
            f"Camera problem: {msg}",
            "SharpCam keeps trying to reconnect. Check the cable, close other apps that use the "
            "camera, or pick another camera above.",
        )
    return UserMessage(
        "engine", f"{name}: {msg}", "The stream keeps running. If this repeats, restart SharpCam."
    )


def virtual_camera_guidance(platform: str | None = None) -> str:
    """Exact steps to create a virtual camera on this OS (plain text, one step per line)."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return (
            'SharpCam sends video to a v4l2loopback device. Create one named "SharpCam":\n\n'
            "1. Install the module:\n"
            "     Debian/Ubuntu:  sudo apt install v4l2loopback-dkms\n"
            "     Fedora:         sudo dnf install v4l2loopback\n"
            "     Arch:           sudo pacman -S v4l2loopback-dkms\n"
            "2. Load it:\n"
            "     sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=SharpCam\n"
            "3. (Optional) load it at every boot:\n"
            "     echo v4l2loopback | sudo tee /etc/modules-load.d/v4l2loopback.conf\n"
            "     echo 'options v4l2loopback devices=1 exclusive_caps=1 card_label=SharpCam' "
            "| sudo tee /etc/modprobe.d/v4l2loopback.conf\n"
            '4. Press Retry, then choose "SharpCam" as the camera in Zoom, Teams or Meet.'
        )
    if platform == "darwin":
        return (
            "SharpCam sends video through the OBS virtual camera.\n\n"
            "1. Install OBS Studio 30 or newer from https://obsproject.com\n"
            '2. Open OBS once and click "Start Virtual Camera"; when macOS asks, allow the '
            "system extension in System Settings → Privacy & Security, then restart OBS.\n"
            '3. Click "Stop Virtual Camera" and quit OBS (SharpCam drives it directly).\n'
            '4. Press Retry, then choose "OBS Virtual Camera" in Zoom, Teams or FaceTime.'
        )
    return (
        "SharpCam sends video through the OBS virtual camera.\n\n"
        "1. Install OBS Studio 30 or newer from https://obsproject.com\n"
        '2. Open OBS once, click "Start Virtual Camera", then "Stop Virtual Camera", and '
        "close OBS (this registers the camera with Windows).\n"
        '3. Press Retry, then choose "OBS Virtual Camera" in Zoom, Teams or Meet.'
    )


# --------------------------------------------------------------------------- the bridge


def _default_api() -> types.ModuleType:
    import engine

    return engine


class EngineBridge(QObject):
    """Owns the running engine and turns its callbacks into Qt signals.

    Signals (all delivered in the GUI thread):
        preview_ready(): a new pair waits in :meth:`take_preview`.
        stats_updated(object): an engine stats snapshot (``EngineStats``), every
            ``stats_interval_ms``.
        message(object): a :class:`UserMessage` to show; the stream keeps going.
        message_cleared(object): a :class:`UserMessage` emitted earlier no longer applies (the
            camera came back, the engine was restarted).
        running_changed(bool): the engine started or stopped.
        backend_changed(str): the "Backend · Provider" label actually in use.
        virtual_camera_changed(bool, str): virtual camera on/off and its device name.
        virtual_camera_missing(str): no virtual camera; the argument is the setup guidance.
    """

    preview_ready = Signal()
    stats_updated = Signal(object)
    message = Signal(object)
    message_cleared = Signal(object)
    running_changed = Signal(bool)
    backend_changed = Signal(str)
    virtual_camera_changed = Signal(bool, str)
    virtual_camera_missing = Signal(str)

    # Emitted from worker threads; connected (queued) to GUI-thread slots.
    _error_from_worker = Signal(object)

    def __init__(
        self,
        *,
        api: Any = None,
        preview_fps: float = 60.0,
        stats_interval_ms: int = 500,
        virtual_backend: str | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._api = api if api is not None else _default_api()
        # Above the camera rate on purpose: the engine throttles to "one per period", and a
        # period equal to the frame interval would skip every other frame on timing jitter. The
        # GUI is protected by the pending flag in _on_preview, not by this rate.
        self._preview_fps = preview_fps
        self._virtual_backend = virtual_backend
        self._engine: Any = None
        self._source: Any = None
        self._backend: Any = None
        self._virtual_sink: Any = None
        self._virtual_device = ""
        self._fps = 30.0
        self._strength = 1.0
        self._enabled = True
        self._lock = threading.Lock()
        self._latest: tuple[QImage, QImage] | None = None
        self._pending = False
        self.previews_received = 0  # previews delivered by the engine (any thread)
        self.last_frame_size: tuple[int, int] | None = None  # (W, H) of the latest preview
        self._label = "—"
        # Each part of the engine's stats warning already shown, with the message that showed it.
        self._warnings_shown: dict[str, UserMessage] = {}
        self._lingering: list[Any] = []  # stopped engines whose threads had not ended yet
        self.using_fallback = False  # the source failed to open and the fallback (demo) plays
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(stats_interval_ms)
        self._stats_timer.timeout.connect(self._poll_stats)
        self._error_from_worker.connect(self._on_worker_error)

    # --- state ---------------------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The running engine (or None); for tests and diagnostics."""
        return self._engine

    @property
    def is_running(self) -> bool:
        return self._engine is not None

    @property
    def backend_label(self) -> str:
        """What runs now, e.g. "ONNX Runtime · CPU" ("Passthrough" after a failure)."""
        if self._engine is not None and self._label != "—":
            return self._label
        return backend_label(self._backend)

    @property
    def virtual_camera_on(self) -> bool:
        return self._virtual_sink is not None

    @property
    def virtual_camera_device(self) -> str:
        return self._virtual_device

    def stats(self) -> Any:
        return self._engine.stats() if self._engine is not None else None

    # --- commands ------------------------------------------------------------------------------
    def start(
        self,
        source: str,
        *,
        size: tuple[int, int] | None = None,
        fps: float = 30.0,
        backend: str = "auto",
        model: str | None = None,
        strength: float = 1.0,
        enabled: bool = True,
        loop: bool = False,
        fallback_source: str | None = None,
        scale: float | str = "auto",
    ) -> bool:
        """(Re)start the engine on ``source``; returns True when it runs.

        A source that fails to open is reported and ``fallback_source`` (the demo clip) is used
        instead; a backend that fails to load is reported and ``passthrough`` is used, so the
        window always shows video. ``loop`` replays a file source at its end (the demo clip
        behaves like an endless camera); the fallback always loops.
        ``scale`` is the processing scale (``auto``: full size while the model keeps up with
        the source's frame rate, smaller when it does not; see ``engine.backends.ScaledBackend``).
        """
        want_virtual = self._virtual_sink is not None
        self.stop()
        self._fps = fps
        self._strength = strength
        self._enabled = enabled
        api = self._api
        src = None
        self.using_fallback = False
        try:
            src = api.open_source(source, live=True, size=size, fps=fps, **_loop_opt(loop))
        except Exception as exc:
            msg = describe_error(exc, context="camera")
            fallback_error = None
            if fallback_source is not None and fallback_source != source:
                try:
                    src = api.open_source(
                        fallback_source, live=True, size=None, fps=fps, **_loop_opt(True)
                    )
                    self.using_fallback = True
                except Exception as exc2:
                    fallback_error = exc2
            if self.using_fallback:
                # Nothing retries a camera that failed to open: the advice must not promise a
                # reconnect, and must say that the picture (also what calls receive) is the demo.
                msg = replace(
                    msg,
                    advice="Showing the demo clip instead. Close other apps that use the camera, "
                    "check the cable, then pick the camera again above.",
                )
            self.message.emit(msg)
            if fallback_error is not None:
                self.message.emit(describe_error(fallback_error, context="camera"))
        if src is None:
            if want_virtual:
                # Nothing runs to send to: the switch must not go on saying "sending".
                self._virtual_device = ""
                self.virtual_camera_changed.emit(False, "")
            return False
        be = None
        warning = None
        model_msg: UserMessage | None = None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                be = api.create_backend(
                    backend, model=model, scale=scale, target_fps=getattr(src, "fps", 0) or fps
                )
            for w in caught:
                text = str(w.message)
                if "using the float model" in text:
                    # A damaged (or foreign) int8 file: verified and rejected, the float one
                    # runs; advice about adding a manifest would be wrong.
                    advice = (
                        "SharpCam keeps sharpening with the float model, a little slower. "
                        "Reinstall the weights to get the faster int8 model back."
                    )
                else:
                    # e.g. a model without a manifest beside it: it runs, but unverified.
                    advice = (
                        "It runs, but SharpCam could not verify it. Ship a manifest.json with "
                        "its sha256 beside the model to silence this."
                    )
                self.message.emit(UserMessage("warning", text, advice))
        except Exception as exc:
            model_msg = describe_error(exc, context="model")
            self.message.emit(model_msg)
            warning = model_msg.text
            be = api.create_backend("passthrough")
        try:
            eng = api.Engine(
                src,
                be,
                sinks=[],
                live=True,
                strength=strength,
                enabled=enabled,
                on_preview=self._on_preview,
                preview_fps=self._preview_fps,
                on_error=self._on_error,
                warning=warning,
                close_backend=True,
            )
            eng.start()
        except Exception as exc:
            self.message.emit(describe_error(exc))
            _close_quietly(be)
            _close_quietly(src)
            if want_virtual:
                self._virtual_device = ""
                self.virtual_camera_changed.emit(False, "")
            return False
        self._source, self._backend, self._engine = src, be, eng
        self._label = backend_label(be)
        if warning and model_msg is not None:
            # The engine repeats this warning in its stats: it was shown already.
            self._warnings_shown = dict.fromkeys(_warning_parts(warning), model_msg)
        self.backend_changed.emit(self._label)
        self._stats_timer.start()
        self.running_changed.emit(True)
        if want_virtual:
            self.set_virtual_camera(True)
        return True

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the engine and join its threads; True when everything joined within ``timeout``."""
        self._stats_timer.stop()
        eng, self._engine = self._engine, None
        self._virtual_sink = None  # the engine closes its sinks
        if eng is None:
            return True
        joined = bool(eng.stop(timeout=timeout))
        # Kept to be joined before the process exits (see join()).
        self._lingering = [e for e in self._lingering if not e.join(0)] + ([] if joined else [eng])
        self._source = None
        with self._lock:
            self._latest = None
            self._pending = False
        # What the stopped engine warned about (camera lost, output failed) no longer applies.
        shown, self._warnings_shown = self._warnings_shown, {}
        for msg in _unique(shown.values()):
            self.message_cleared.emit(msg)
        self.running_changed.emit(False)
        return joined

    def set_strength(self, strength: float) -> None:
        self._strength = min(max(float(strength), 0.0), 1.0)
        if self._engine is not None:
            self._engine.set_strength(self._strength)

    def set_enabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)
        if self._engine is not None:
            self._engine.set_enabled(self._enabled)

    def join(self, timeout: float) -> bool:
        """Wait for engines stopped late (a model call still in progress) to end; True when none
        is left. Before the process exits: a thread inside a native call at interpreter shutdown
        aborts the process."""
        deadline = time.monotonic() + timeout
        self._lingering = [
            e for e in self._lingering if not e.join(max(0.0, deadline - time.monotonic()))
        ]
        return not self._lingering

    def set_virtual_camera(self, on: bool) -> bool:
        """Turn the virtual camera output on or off; returns the resulting state.

        When no virtual camera exists, emits :attr:`virtual_camera_missing` with the OS's
        setup steps and stays off.
        """
        if not on:
            sink, self._virtual_sink = self._virtual_sink, None
            if sink is not None and self._engine is not None:
                self._engine.remove_sink(sink)
            _close_quietly(sink)
            self._virtual_device = ""
            self.virtual_camera_changed.emit(False, "")
            return False
        if self._virtual_sink is not None:
            return True
        if self._engine is None:
            self.virtual_camera_changed.emit(False, "")
            return False
        size = self._output_size()
        # The rate the source really delivers (a camera asked for 60 may give 30): calls must
        # not be promised frames that never come.
        fps = float(getattr(self._source, "fps", 0) or 0) or self._fps
        kwargs: dict[str, Any] = {"size": size, "fps": fps}
        if self._virtual_backend:
            kwargs["backend"] = self._virtual_backend
        try:
            sink = self._api.open_sink("virtual", **kwargs)
        except Exception as exc:
            detail = str(exc).strip()
            guidance = virtual_camera_guidance()
            if detail:
                guidance = f"{guidance}\n\nDetails: {detail.splitlines()[0]}"
            self.virtual_camera_changed.emit(False, "")
            self.virtual_camera_missing.emit(guidance)
            return False
        self._virtual_sink = sink
        self._virtual_device = str(getattr(sink, "device", "") or "virtual camera")
        self._engine.add_sink(sink)
        self.virtual_camera_changed.emit(True, self._virtual_device)
        return True

    def take_preview(self) -> tuple[QImage, QImage] | None:
        """The newest ``(original, processed)`` pair, or None; re-arms :attr:`preview_ready`."""
        with self._lock:
            pair, self._latest = self._latest, None
            self._pending = False
        return pair

    # --- engine callbacks (worker threads: copy and signal, nothing else) ----------------------
    def _on_preview(self, original: Any, processed: Any) -> None:
        # Copy now: the engine reuses these buffers as soon as we return.
        orig_img = frame_to_qimage(original.image)
        proc_img = frame_to_qimage(processed.image)
        with self._lock:
            self._latest = (orig_img, proc_img)
            self.previews_received += 1
            self.last_frame_size = (proc_img.width(), proc_img.height())
            notify = not self._pending
            self._pending = True
        if notify:
            self.preview_ready.emit()

    def _on_error(self, exc: BaseException) -> None:
        self._error_from_worker.emit(exc)

    # --- GUI-thread slots ----------------------------------------------------------------------
    def _on_worker_error(self, exc: BaseException) -> None:
        self.message.emit(describe_error(exc))

    def _poll_stats(self) -> None:
        if self._engine is None:
            return
        try:
            st = self._engine.stats()
        except Exception as exc:  # a stats hiccup must not kill the GUI timer
            log.debug("stats failed: %s", exc)
            return
        sinks = getattr(self._engine, "sinks", None)
        if self._virtual_sink is not None and sinks is not None and self._virtual_sink not in sinks:
            # The engine drops a sink whose write failed (v4l2loopback unloaded, OBS's camera
            # stopped): the switch must not go on saying "sending".
            self._virtual_sink = None
            self.virtual_camera_changed.emit(False, "")
        # The engine may fall back (backend failed -> passthrough): say what really runs.
        label = backend_label(
            name=getattr(st, "backend", None), provider=getattr(st, "provider", None)
        )
        if label != "—" and label != self._label:
            self._label = label
            self.backend_changed.emit(label)
        parts = _warning_parts(getattr(st, "warning", None))
        # The engine joins its warnings with "; ", and some contain "; " themselves ("output ...
        # failed (...); no longer written"): the parts new in one poll are one message, never a
        # fragment ("RuntimeError: no longer written") that hides the real one.
        new = [p for p in parts if p not in self._warnings_shown]
        if new:
            msg = describe_error(RuntimeError("; ".join(new)))
            self._warnings_shown.update(dict.fromkeys(new, msg))
            self.message.emit(msg)
        # A warning that cleared (the camera is back) is taken down, and shown again if it
        # returns: a second loss of the camera must be as visible as the first.
        gone = {p: m for p, m in self._warnings_shown.items() if p not in parts}
        for p in gone:
            del self._warnings_shown[p]
        still = set(map(id, self._warnings_shown.values()))
        for msg in _unique(gone.values()):
            if id(msg) not in still:
                self.message_cleared.emit(msg)
        self.stats_updated.emit(st)

    def _output_size(self) -> tuple[int, int]:
        """``(W, H)`` the virtual camera must accept: what the source really delivers."""
        size = getattr(self._source, "size", None)
        if size:
            return int(size[0]), int(size[1])
        # The virtual camera sink letterboxes whatever arrives, so a guess is safe here.
        return self.last_frame_size or (1280, 720)


_BACKEND_NAMES = {
    "onnx": "ONNX Runtime",
    "openvino": "OpenVINO",
    "torch": "PyTorch",
    "unsharp": "Unsharp mask",
    "passthrough": "Passthrough",
}


def backend_label(
    backend: Any = None, *, name: str | None = None, provider: str | None = None
) -> str:
    """A person-readable "Backend · Provider", e.g. "ONNX Runtime · CPU", "OpenVINO · CPU".

    Takes a backend object, or the ``name``/``provider`` pair an ``EngineStats`` carries.
    """
    if backend is not None:
        name = str(getattr(backend, "name", type(backend).__name__))
        provider = getattr(backend, "provider", None)
    if not name:
        return "—"
    title = _BACKEND_NAMES.get(name, name)
    prov = str(provider or "").replace("ExecutionProvider", "").strip()
    if not prov or prov.lower() == name.lower():
        return title
    if "·" in prov:
        # The engine already says "Runtime · device"; only tidy the capitalisation.
        return prov[0].upper() + prov[1:]
    return f"{title} · {prov}"


def _warning_parts(warning: object) -> list[str]:
    return str(warning).split("; ") if warning else []


def _unique(msgs: Any) -> list[UserMessage]:
    # By identity: equal texts may come from different polls, each shown (and cleared) once.
    out: dict[int, UserMessage] = {}
    for m in msgs:
        out.setdefault(id(m), m)
    return list(out.values())


def _loop_opt(loop: bool) -> dict[str, Any]:
    # Only file sources take ``loop``; cameras would reject the unknown option.
    return {"loop": True} if loop else {}


def _close_quietly(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:
        log.debug("close failed: %s", exc)
