"""The one place where the engine meets Qt.

The engine calls back from its worker threads; widgets may only be touched from the GUI thread.
:class:`EngineBridge` is a ``QObject`` living in the GUI thread: engine callbacks only copy data
and emit signals (Qt queues cross-thread emissions to the receiver's thread), and the window's
commands (start, strength, on/off, processing size, virtual camera) arrive as plain method calls.
The slow parts run on short-lived worker threads: a start's (opening a camera, compiling a model;
the engine is started back in the GUI thread, :attr:`EngineBridge.start_finished`), a processing
size change's (loading the model at the new size; it is swapped into the running engine back in
the GUI thread, the camera staying open), a stop's (joining the engine's threads, which may wait
for a model call or a stalled output) and a virtual camera device's open (a driver that takes
seconds, or hangs; the device is handed to the engine back in the GUI thread); only closing the
window waits for a stop, bounded.

Previews follow the latest-frame rule of the engine itself: the callback stores the newest
``(original, processed)`` pair and emits :attr:`EngineBridge.preview_ready` only when the GUI has
taken the previous one, so a slow paint drops frames instead of piling up queued events.

The engine module is injected (``api=``) so tests can hand in a fake; by default it is the real
``engine`` package.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QImage

from app._gc import GuiThreadCollector
from app.camera_list import reads_virtual_device
from engine.pipeline import RESEND_S
from engine.sources import source_kind

log = logging.getLogger(__name__)

# How long a start waits for the previous one's camera open before opening its own anyway.
OPEN_WAIT_S = 15.0
# How long a stopped engine's threads get to end (on a worker, except when the window closes).
STOP_TIMEOUT_S = 2.0
# How long a start waits for the stopped engine's last model call before it loads the same
# model itself (a call in progress normally ends within a frame; a compile takes longer).
HANDOVER_WAIT_S = 3.0


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

    # "camera" | "model" | "gpu" | "virtual_camera" | "engine"; the window's own:
    # "saved" | "save_warning" | "save_failed" (app.save)
    kind: str
    text: str
    advice: str
    #: A folder the banner offers to open ("Show folder"): where a saved copy is.
    folder: str = ""


def describe_error(
    exc: BaseException,
    *,
    context: str = "",
    backend: str | None = None,
    model: str | None = None,
) -> UserMessage:
    """Map an engine exception to a message a person can act on.

    Matching is by exception type name and message because the window must not depend on the
    engine's private exception hierarchy; anything unrecognised still gets a sensible line.
    ``backend`` and ``model`` are what a model load was asked for (``model``: a file named with
    ``--model``, None for SharpCam's own weights): the advice for a load that failed follows them.
    """
    name = type(exc).__name__
    msg = str(exc).strip() or name
    low = f"{name} {msg}".lower()
    # Words in the message are a guess, made only without a context: a camera's error lists the
    # machine's cameras ("OBS Virtual Camera") and a file's names its path ("~/models/a.mp4"),
    # which made a camera in use a "Virtual camera problem".
    guess = not context
    if "passing frames through" in low:
        # The engine's own words for a model that loaded, ran, then failed: it did load, and
        # nothing falls back to the CPU; the video is unsharpened until the engine restarts.
        if "breaks the model contract" in low:
            # A model of the user's own that gives frames of another size or shape: a retry
            # runs it the same way, and SharpCam's weights are not the ones at fault.
            return UserMessage(
                "model",
                f"Sharpening stopped: {msg}",
                "The video keeps flowing unsharpened. The model breaks the model contract, so "
                "a retry fails the same way: start SharpCam without --model to use its own, or "
                "export yours again (README, the model contract).",
            )
        return UserMessage(
            "model",
            f"Sharpening stopped: {msg}",
            f"The video keeps flowing unsharpened. Press “{RETRY_LABELS['same']}” in the "
            "sidebar (or change the camera or the processing size) to restart the model; if it "
            "stops again, reinstall SharpCam's weights.",
        )
    if "has taken no frame" in low:
        # The engine's words for an output whose write hangs: in the app, the virtual camera.
        return UserMessage(
            "virtual_camera",
            f"Virtual camera problem: {msg}",
            "The picture in calls and here is frozen. Turn the virtual camera off and on again "
            "in the sidebar; if it stays frozen, restart the app that shows it (Zoom, Teams) "
            "or SharpCam.",
        )
    if "sent no frame" in low or "no frame from the" in low:
        # The engine's words for a source that stopped delivering (its read hangs): nothing
        # reconnects, as it would for a lost camera; the picture stays as it was.
        if "camera" in low:
            return UserMessage(
                "camera",
                f"Camera problem: {msg}",
                "The picture stays frozen until the camera sends again. Check the cable, close "
                "other apps that use the camera, or pick another camera above.",
            )
        # A file (on a network share or a USB stick that went away): no cable to check.
        return UserMessage(
            "camera",
            f"The video stopped: {msg}",
            "The picture stays frozen until the file can be read again. Check that the drive "
            "it is on is still there, or open another file (Open…) or pick another source "
            "above.",
        )
    if "while the computer is this busy" in low:
        # The engine's words for a file (or photos) that decodes in time by itself but is read
        # slower than its rate: a 720p H.264 clip beside the full-size model on two cores was
        # advised "1080p rather than 4K", as if the file were at fault.
        photos = "they play slower" in low
        it, its = ("they", "their") if photos else ("it", "its")
        return UserMessage(
            "camera",
            f"The {'photos play' if photos else 'video plays'} slower than {it} should: {msg}",
            f"{'The photos themselves are read' if photos else 'The file itself decodes'} in "
            f"time, but this computer is too busy to keep up with {its} rate (other programs, "
            "or sharpening at this processing size, take the time), so "
            f"{'each one shows longer' if photos else 'it plays slowed down, in calls too'}. "
            "Close other programs, or choose a smaller processing size.",
        )
    if "they play slower" in low:
        # The engine's words for a folder of photos read slower than its rate.
        return UserMessage(
            "camera",
            f"The photos play slower than they should: {msg}",
            "This computer cannot read them that fast, so each one shows longer. Smaller "
            "photos play in time.",
        )
    if "plays in slow motion" in low:
        # The engine's words for a file read slower than its rate: nothing failed, and it was
        # "RuntimeError: ... restart SharpCam", or a camera's advice for "screen capture.mkv".
        # Not "while it sharpens": with sharpening off, it is the reading alone.
        return UserMessage(
            "camera",
            f"The video plays slower than it should: {msg}",
            "This computer cannot read it at its own rate, so it plays slowed down, in calls "
            "too. A smaller file plays in time (1080p rather than 4K, H.264 rather than HEVC).",
        )
    if "nan or infinite values" in low:
        # The engine's words for a user's own model that runs but gives no picture in places:
        # it did load ("could not be loaded" said otherwise), and restarting it changes nothing.
        return UserMessage(
            "model",
            f"The sharpening model gives broken pictures: {msg}",
            "Where it does, the camera's own picture shows instead, in calls too. The model "
            "file is not one of SharpCam's own (it is listed in no manifest) and is faulty: "
            "start SharpCam without --model to use its own, or export yours again.",
        )
    if "looks like 0-255" in low:
        # The engine's words for a model whose output is 0-255: it loaded and runs, and its
        # all-white picture is what shows and what calls get (no passthrough stands in), so
        # "could not be loaded ... reinstall SharpCam" was wrong on every count.
        return UserMessage(
            "model",
            f"The sharpening model gives a white picture: {msg}",
            "The video, in calls too, shows the model's output as it is. The model file is not "
            "one of SharpCam's own (it is listed in no manifest): start SharpCam without "
            "--model to use its own, or export yours again with its output in 0-1.",
        )
    if context == "model" or (guess and ("integrity" in low or "onnx" in low or "model" in low)):
        advice = _load_failed_advice(exc, msg, backend=backend, model=model)
        text = f"The sharpening model could not be loaded: {_no_model_words(msg)}"
        return UserMessage("model", _hints_said_once(text, msg, advice), advice)
    if guess and ("cuda" in low or "tensorrt" in low or "provider" in low or "gpu" in low):
        return UserMessage(
            "gpu",
            f"GPU acceleration failed: {msg}",
            "SharpCam keeps running on the CPU. Update the GPU driver or the onnxruntime-gpu "
            "package to get the GPU back.",
        )
    if context == "virtual_camera" or (guess and "virtual" in low):
        return UserMessage(
            "virtual_camera",
            f"Virtual camera problem: {msg}",
            "Turn the virtual camera on again in the sidebar; if it cannot start, SharpCam "
            "shows the setup steps.",
        )
    # After the virtual-camera branch: "virtual camera" also contains "camera".
    if context == "camera" or (guess and ("camera" in low or "capture" in low or "source" in low)):
        return UserMessage(
            "camera",
            f"Camera problem: {msg}",
            "SharpCam keeps trying to reconnect. Check the cable, close other apps that use the "
            "camera, or pick another camera above.",
        )
    return UserMessage(
        "engine", f"{name}: {msg}", "The stream keeps running. If this repeats, restart SharpCam."
    )


def _runtime_hints(msg: str) -> tuple[list[str], bool]:
    """What to install for each failure ``msg`` reports that is a runtime package not
    installed (or not importing), as the engine words it, and whether every failure is one."""
    from engine.backends import INSTALL_HINTS

    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]  # `auto`'s "no backend could start:", one failure a line below it
    hints = []
    every = True
    for line in lines:
        # "backend 'torch' needs 'torch': <hint> (<the ImportError>)": the hint may hold
        # parentheses itself, the ImportError is the last pair.
        needs = re.search(r"needs '[^']+': (.+) \(", line)
        if needs:
            # The engine's own hint where it is one (the ImportError may hold parentheses too,
            # "... from 'openvino' (/path/__init__.py)": the greedy match took part of it).
            rest = line[needs.start(1) :]
            known = [h for h in INSTALL_HINTS.values() if rest.startswith(f"{h} (")]
            hint = known[0] if known else needs.group(1)
        # `auto`'s "onnx runtime is not installed: <hint>" (the engine's hint, as above).
        absent = re.search(r"\b(\w+) runtime is not installed(?:: (.+))?$", line)
        if needs:
            hints.append(hint)
        elif absent:
            hints.append(absent.group(2) or f"the {absent.group(1)} runtime")
        else:
            every = False
    return list(dict.fromkeys(hints)), every


def _missing_packages(msg: str) -> list[str] | None:
    """What to install when every failure ``msg`` reports is a runtime package that is not
    installed (or does not import), as the engine words it; None when any failure is another."""
    hints, every = _runtime_hints(msg)
    return hints if every and hints else None


def _hints_said_once(text: str, msg: str, advice: str) -> str:
    """``text`` (which cites ``msg``) without the engine's install commands that ``advice``
    gives: the banner said each pip command twice, in what happened and in what to do."""
    for hint in _runtime_hints(msg)[0]:
        if hint in advice:
            text = text.replace(f": {hint}", "")
    return text


def _model_runtime_installed() -> bool:
    """Whether a runtime the automatic backend tries for SharpCam's own weights (OpenVINO,
    ONNX Runtime) is installed: unsharp and passthrough run no model, and torch only a
    TorchScript file named with --model."""
    from engine.backends import BACKENDS

    return any(BACKENDS[name].available() for name in ("openvino", "onnx") if name in BACKENDS)


def _weights_file_named(msg: str) -> str | None:
    """The file of SharpCam's weights folder that ``msg`` names (the longest name first: a
    message about ``student_fast_int8.onnx`` must not be taken for ``student_fast.onnx``)."""
    from engine.backends import weights_dir

    folder = weights_dir()
    try:
        names = sorted((p.name for p in folder.iterdir()), key=len, reverse=True)
    except OSError:
        return None
    for name in names:
        if str(folder / name) in msg or re.search(rf"(?<![\w.-]){re.escape(name)}\b", msg):
            return str(folder / name)
    return None


@dataclass(frozen=True)
class _NoModel:
    """The engine's "no model given and none in FOLDER (expected ...)", read."""

    folder: str
    expected: str  # "student_fast.onnx or student.onnx"
    by_env: bool  # FOLDER is SHARPCAM_WEIGHTS's, not SharpCam's own weights folder
    exists: bool


# The engine's words for no weights (engine.backends._no_model_error), with the command line's
# advice that ends them.
_NO_MODEL = re.compile(
    r"no model given and none in (.+) \(expected ([^()]+)\)"
    r"(?:: pass --model PATH, or set SHARPCAM_WEIGHTS to a folder holding them)?"
)


def _no_model(found: re.Match[str]) -> _NoModel:
    """What a match of :data:`_NO_MODEL` says of the weights folder."""
    from engine.backends import weights_dir

    folder = found.group(1)
    by_env = bool(os.environ.get("SHARPCAM_WEIGHTS")) and str(weights_dir()) == folder
    return _NoModel(folder, found.group(2), by_env, os.path.isdir(folder))


def _no_model_in(msg: str) -> _NoModel | None:
    """What ``msg`` says of the weights folder, when it holds the engine's "no model given"."""
    found = _NO_MODEL.search(msg)
    return None if found is None else _no_model(found)


def _no_model_words(msg: str) -> str:
    """``msg`` with the engine's "no model given" in the window's words.

    The engine's own words end with the command line's ("pass --model PATH, or set
    SHARPCAM_WEIGHTS to a folder holding them"), and never said that SHARPCAM_WEIGHTS, set, is
    what sent SharpCam to a folder that does not exist, or holds no model.
    """

    def words(found: re.Match[str]) -> str:
        none = _no_model(found)
        if not none.by_env:
            return f"SharpCam's weights are not in {none.folder} (expected {none.expected})"
        if not none.exists:
            return f"SHARPCAM_WEIGHTS points to {none.folder}, which does not exist"
        return (
            f"SHARPCAM_WEIGHTS points to {none.folder}, which holds no model "
            f"(expected {none.expected})"
        )

    return _NO_MODEL.sub(words, msg)


# The sidebar's button for each way a model load can be retried from the window (its label is
# what the advice names): the same model again, the backend picked automatically instead of the
# one named, or SharpCam's own weights instead of the model file named.
RETRY_LABELS = {
    "same": "Retry sharpening",
    "auto": "Retry with the automatic backend",
    "own_weights": "Retry with SharpCam's own model",
}


@dataclass(frozen=True)
class ModelFailure:
    """Why the video runs unsharpened though sharpening is on: the model failed."""

    message: UserMessage  # what the banner said about it
    retry: str  # a key of RETRY_LABELS: what the window's retry tries
    loaded: bool = False  # it had loaded and failed while running (not at the start)


def _load_failed_advice(
    exc: BaseException, msg: str, *, backend: str | None, model: str | None
) -> str:
    """What to do about a model load that failed, by its cause."""
    return _load_failed(exc, msg, backend=backend, model=model)[0]


def load_retry(exc: BaseException, *, backend: str | None, model: str | None) -> str:
    """The retry (a key of :data:`RETRY_LABELS`) the advice for this failed load names."""
    msg = str(exc).strip() or type(exc).__name__
    return _load_failed(exc, msg, backend=backend, model=model)[1]


def _load_failed(
    exc: BaseException, msg: str, *, backend: str | None, model: str | None
) -> tuple[str, str]:
    """The advice for a model load that failed, by its cause, and the retry it names. One fixed
    line ("reinstall weights/student.onnx, or choose another backend") was wrong for most of
    them: the CPU runs another file, a missing package is installed rather than weights, a
    model file named is the person's own. The advice names the window's own controls: who
    reads it in the window may never have seen the command line (its ``--backend auto``)."""
    low = msg.lower()
    keeps = "The video keeps flowing unsharpened (passthrough). "
    # The backend named (on the command line, or remembered) is what failed; the automatic
    # pick may find another runtime.
    named = backend not in (None, "auto")
    packages = _missing_packages(msg)
    if packages is not None:
        # Before the GPU words: an ImportError may name libcudart without being about a GPU.
        # A model file named is made for its runtime (a .ts file for torch): installing that
        # is the fix, where the automatic pick would still load the same file.
        # Only where another runtime is there to pick: with none, the automatic backend
        # fails the same way.
        if named and model is None and _model_runtime_installed():
            return (
                f"{keeps}Install what it needs: {' or '.join(packages)}; then restart "
                f"SharpCam. Or press “{RETRY_LABELS['auto']}” in the sidebar to use a runtime "
                "that is installed.",
                "auto",
            )
        return (
            f"{keeps}Install what it needs: {' or '.join(packages)}; then restart SharpCam.",
            "same",
        )
    if "cuda" in low or "tensorrt" in low or "provider" in low or "directml" in low:
        # A load that raised: passthrough runs, no model at all (`auto` had tried the CPU
        # already, and nothing retries it there). "Keeps running on the CPU" was false.
        return (
            "The video keeps flowing unsharpened (passthrough): nothing sharpens it on the "
            "CPU instead. Update the GPU driver or install the matching onnxruntime-gpu "
            "build, then restart SharpCam.",
            "same",
        )
    names = {cls.__name__ for cls in type(exc).__mro__}
    if model is not None and "ModelError" in names:
        return (
            f"{keeps}The model file SharpCam was started with ({model}) cannot be used, for "
            f"the reason above: press “{RETRY_LABELS['own_weights']}” in the sidebar to "
            "sharpen with the weights that come with SharpCam.",
            "own_weights",
        )
    # A guess from an error's words (no load asked for: no backend) brings no retry button.
    again = (
        f"then press “{RETRY_LABELS['same']}” in the sidebar"
        if backend is not None
        else "then restart SharpCam"
    )
    if "no model given" in low:
        none = _no_model_in(msg)
        # Where SHARPCAM_WEIGHTS named the folder, it is what to fix: "Reinstall SharpCam's
        # weights in that folder" was said of one that did not exist, and set by hand.
        unset = (
            "SHARPCAM_WEIGHTS (SharpCam then uses the weights it comes with) or correct it, "
            "then restart SharpCam"
        )
        if none is not None and none.by_env and not none.exists:
            return f"{keeps}Unset {unset}.", "same"
        if none is not None and none.by_env:
            return (
                f"{keeps}Put SharpCam's weights (with their manifest.json) in that folder, "
                f"{again}; or unset {unset}.",
                "same",
            )
        return (
            f"{keeps}Reinstall SharpCam's weights in that folder (with their manifest.json), "
            f"{again}.",
            "same",
        )
    if "ModelError" in names:
        file = _weights_file_named(msg)
        what = f"{file}, with the manifest.json beside it" if file else "with their manifest.json"
        return f"{keeps}Reinstall SharpCam's weights ({what}), {again}.", "same"
    if named:
        return (
            f"{keeps}Press “{RETRY_LABELS['auto']}” in the sidebar to use a runtime that "
            "works here.",
            "auto",
        )
    if "no backend could start" in low:
        # Some runtimes missing, another failing on its own: either is a way out.
        hints = _runtime_hints(msg)[0]
        install = f", or install one that is missing: {' or '.join(hints)};" if hints else ","
        return (
            f"{keeps}Fix what the lines above say for one of the runtimes{install} then "
            "restart SharpCam.",
            "same",
        )
    if backend is None:
        return f"{keeps}If this repeats, reinstall SharpCam and its weights.", "same"
    return (
        f"{keeps}Press “{RETRY_LABELS['same']}” in the sidebar to load it again; if this "
        "repeats, reinstall SharpCam and its weights.",
        "same",
    )


def close_failed_message(exc: BaseException) -> UserMessage:
    """The message for a virtual camera device whose close raised: it may still be held."""
    return UserMessage(
        "virtual_camera",
        f"The virtual camera did not close properly: {str(exc).strip() or type(exc).__name__}",
        "Video calls may still list it, and turning it on again may fail until its driver lets "
        "go of it; SharpCam then shows the setup steps.",
    )


def scale_failed_message(scale: float | str, exc: BaseException) -> UserMessage:
    """The message for a processing size whose model did not load: the stream goes on with the
    model it had (a restart would have fallen back to passthrough). A model file damaged or
    gone since it loaded is to be reinstalled before any restart: "restart SharpCam" sent
    the person to a window that then ran unsharpened."""
    msg = str(exc).strip() or type(exc).__name__
    advice = (
        "The video keeps running as before, at the previous processing size (the picker shows "
        "it again)."
    )
    if "ModelError" in {cls.__name__ for cls in type(exc).__mro__}:
        file = _weights_file_named(msg)
        what = f"{file}, with the manifest.json beside it" if file else "with their manifest.json"
        advice += (
            f" The model file on disk no longer loads: reinstall SharpCam's weights ({what}) "
            "before SharpCam is restarted, or it will start unsharpened."
        )
    else:
        advice += " If this repeats, restart SharpCam."
    return UserMessage(
        "model", f"The processing size could not be changed to {_scale_words(scale)}: {msg}", advice
    )


def open_failed_message(exc: BaseException) -> UserMessage:
    """The message for a virtual camera open that failed on an unexpected error (a fault in
    SharpCam, not a missing device: the setup steps would send the person to install a driver
    they may well have)."""
    return UserMessage(
        "virtual_camera",
        "The virtual camera could not be turned on: unexpected error "
        f"({type(exc).__name__}: {_first_line(exc)})",
        "This is most likely a fault in SharpCam, not a missing driver; the video keeps "
        "running without it. The log has the details (start SharpCam from a terminal to see "
        "them): please include them when you report it.",
    )


def _expected_open_error(exc: BaseException) -> bool:
    """Whether ``exc`` is how a virtual camera open says there is no usable device (none set
    up, busy, refused by the OS), rather than a fault in SharpCam (a ``TypeError``, ...).

    By type name, as :func:`describe_error` matches: the engine says ``VirtualCameraUnavailable``
    (a ``SinkError``), and an injected engine need not share its classes.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"VirtualCameraUnavailable", "SinkError"}) or isinstance(exc, OSError)


def feedback_loop_message(camera: str, device: str) -> UserMessage:
    """The message for a virtual camera not sent to: ``device`` is the ``camera`` SharpCam
    reads, so it would show its own picture in a loop."""
    return UserMessage(
        "virtual_camera",
        f"Not sent to video calls: SharpCam reads its video from {camera}, the virtual camera "
        f"({device}) it would send to.",
        "Sending there would show SharpCam its own picture in a loop, so the virtual camera is "
        "off. Pick your real camera above, then turn “Send to video calls” on again.",
    )


def ended_message(exc: BaseException | None, kind: str = "camera") -> UserMessage:
    """The message for a stream that ended on its own (``exc``: what ended it, or None when the
    source sent no more frames): the cause, and that nothing restarts it. The generic advice
    ("keeps trying to reconnect", "the stream keeps running") would be false then. ``kind``:
    what was read (:func:`engine.source_kind`).
    """
    stopped = "The video stopped and SharpCam does not retry it. "
    if kind == "camera":
        advice = (
            f"{stopped}Check the cable and close other apps that use the camera, then pick the "
            "camera again above (or the demo clip)."
        )
    else:
        # A file or folder that failed mid-stream: the camera's cable and the other apps were
        # no advice for it, as at an open that failed (_open_source).
        advice = (
            f"{stopped}Check that {_SOURCE_OPENS.get(kind, 'it opens')} in another program, "
            "then pick it again above (or a camera, or the demo clip)."
        )
    if exc is None:
        return UserMessage("camera", "The video stopped: the source sends no more frames.", advice)
    if kind == "camera":
        return replace(describe_error(exc), advice=advice)
    msg = describe_error(exc, context="camera")
    return replace(msg, text=_source_problem(kind, msg.text), advice=advice)


# What each kind of file source is called in a message, and what the advice asks to check.
_SOURCE_WORDS = {"video": "Video file", "image": "Image", "folder": "Image folder"}
_SOURCE_OPENS = {
    "video": "the video file opens",
    "image": "the image opens",
    "folder": "the folder's images open",
}


def _source_problem(kind: str, text: str) -> str:
    """``text`` (a "Camera problem: ..." of :func:`describe_error`) said of a ``kind`` of file
    source instead."""
    return f"{_SOURCE_WORDS.get(kind, 'Video file')} problem: {text.split(': ', 1)[-1]}"


def virtual_camera_busy_guidance(
    devices: list[tuple[str, str]], platform: str | None = None
) -> str:
    """What to do when every virtual camera device (``[(path, name), ...]``: v4l2loopback's,
    or OBS's one on Windows) is taken by another program (plain text, one step per line)."""
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        # OBS's camera, the only one: no second one can be made, as a modprobe makes one.
        return (
            f'The virtual camera "{devices[0][0]}" is in use: another program is already '
            "sending video to it (OBS with its virtual camera started, a second SharpCam).\n\n"
            'In OBS, click "Stop Virtual Camera" (or close the other SharpCam), then press '
            "Retry."
        )
    named = ", ".join(f'{path} ("{name}")' if name else path for path, name in devices)
    one = len(devices) == 1
    return (
        f"The virtual camera {'device' if one else 'devices'} {named} "
        f"{'is' if one else 'are'} in use: another program (OBS, a second SharpCam) is already "
        f"sending video to {'it' if one else 'each of them'}.\n\n"
        "1. Close that program, or stop its virtual camera, then press Retry.\n"
        "2. Or make one more device for SharpCam (this closes the ones there are):\n"
        "     sudo modprobe -r v4l2loopback\n"
        f"     sudo modprobe v4l2loopback devices={len(devices) + 1} exclusive_caps=1 "
        "card_label=SharpCam\n"
        "   then press Retry."
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
        virtual_camera_changed(bool, str): the virtual camera device open (sending) or not, and
            its device name. Not sending is not the same as not wanted: see
            :attr:`virtual_camera_wanted`, which a restart, a start without video and a stream
            that ended keep (it is sent again once video runs). Also emitted (False) when an
            open begins on its worker thread (:attr:`virtual_camera_opening`).
        virtual_camera_closing_changed(bool): True while a virtual camera device that was
            turned off is still closing (its driver stalled in a write) or still opening, False
            once every one has closed (:attr:`virtual_camera_closing`).
        virtual_camera_missing(str): no virtual camera; the argument is the setup guidance.
        start_finished(bool): the latest :meth:`start` ended: True when the engine runs (after
            its running_changed(True)), False when there is no video. Not emitted for a start
            superseded by a newer one or cancelled by :meth:`stop`.
        stream_ended(object): the engine ended on its own (its source failed or ended), with
            the :class:`UserMessage` shown for it; running_changed(False) and, when it was on,
            virtual_camera_changed(False, "") came before. Nothing restarts it; the engine is
            stopped on a worker thread, and the next :meth:`start` opens its source only once the
            engine's has closed.
        scale_change_failed(object): the model did not load at the processing scale
            :meth:`set_scale` asked for (a :attr:`message` says why); the argument is the scale
            the running engine keeps.
    """

    preview_ready = Signal()
    stats_updated = Signal(object)
    message = Signal(object)
    message_cleared = Signal(object)
    running_changed = Signal(bool)
    backend_changed = Signal(str)
    virtual_camera_changed = Signal(bool, str)
    virtual_camera_closing_changed = Signal(bool)
    virtual_camera_missing = Signal(str)
    start_finished = Signal(bool)
    stream_ended = Signal(object)
    scale_change_failed = Signal(object)

    # Emitted from worker threads; connected (queued) to GUI-thread slots.
    _error_from_worker = Signal(object, object)  # (the engine's feed token, the exception)
    _sink_closed = Signal(object)  # a _WatchedSink whose device close returned
    _opened = Signal(object)  # a _StartRequest whose source and backend are open
    _engine_done = Signal(object)  # an engine whose run is over (ended, or stopped)
    _virtual_opened = Signal(object)  # a _VirtualOpen whose open_sink returned (or raised)
    _swap_loaded = Signal(object)  # a _BackendSwap whose create_backend returned (or raised)

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
        # Before any worker thread exists: a collection there could free a QObject off the GUI
        # thread and deadlock it (app/_gc.py).
        self._collector = GuiThreadCollector(self)
        self._api = api if api is not None else _default_api()
        # Above the camera rate on purpose: the engine throttles to "one per period", and a
        # period equal to the frame interval would skip every other frame on timing jitter. The
        # GUI is protected by the pending flag in _on_preview, not by this rate.
        self._preview_fps = preview_fps
        self._virtual_backend = virtual_backend
        self._engine: Any = None
        self._source: _WatchedSource | None = None
        self._backend: Any = None
        self._virtual_sink: _WatchedSink | None = None
        self._virtual_device = ""
        # The virtual camera is wanted: sent to whenever an engine runs. Only a command changes
        # it, or a device that cannot be opened or written (the person has to act then).
        self._want_virtual = False
        # The (size, fps) the device was first opened with while wanted, and whether a camera
        # gave it: a restart on another camera or resolution reopens it the same (frames are
        # letterboxed), as a call app reading v4l2loopback may not follow a format change. A
        # file's format gives way to the first camera's (a 640x360 clip must not hold a 1080p
        # camera's calls at 640x360 for the rest of the session). A turn-off forgets it.
        self._virtual_format: tuple[tuple[int, int], float, bool] | None = None
        self._closing_sinks: set[_WatchedSink] = set()  # turned off, their close not returned
        # The open device between a restart's stop and its engine (see _hold_virtual).
        self._held: _HeldSink | None = None
        # Device opens run on worker threads. The one whose device the running engine gets:
        self._virtual_opening: _VirtualOpen | None = None
        self._last_virtual_open: _VirtualOpen | None = None  # the next open waits for its release
        self._virtual_opens: list[tuple[threading.Thread, _VirtualOpen]] = []  # for join()
        # Superseded (turned off, the engine stopped) while their driver still opens.
        self._cancelled_opens: set[_VirtualOpen] = set()
        self._answering_turn_on = False  # see answering_turn_on
        self._refusing_loop = False  # see refusing_loop
        self._camera_absent = False  # the playing camera was said gone (retarget_camera)
        # (source, picker name) the running engine reads, None for the fallback clip: the
        # virtual camera must not send to the device it reads (its own picture in a loop).
        self._playing: tuple[str, str] | None = None
        self._reading = "camera"  # the running engine's source_kind (the fallback included)
        # Said since a device last opened: a virtual camera whose close failed (it may still be
        # held), taken down once one opens again.
        self._close_failures: list[UserMessage] = []
        # Said since a device last opened: an open that failed on an unexpected error.
        self._open_failure: UserMessage | None = None
        #: The devices the latest failed open found taken by another program, or None (the
        #: failure, if any, was a missing device).
        self.virtual_camera_busy: list[tuple[str, str]] | None = None
        self._fps = 30.0
        self._strength = 1.0
        self._denoise = False
        self._enabled = True
        self._lock = threading.Lock()
        # The running engine's token for its callbacks. A stopped engine is joined on a worker
        # and runs on for a moment: its late previews and errors must not pass for the next
        # stream's ("Opening…" replaced by an old frame, an old camera's error in the banner).
        self._feed: object | None = None
        self._latest: tuple[QImage, QImage] | None = None
        self._pending = False
        self.previews_received = 0  # previews delivered by the engine (any thread)
        self.last_frame_size: tuple[int, int] | None = None  # (W, H) of the latest preview
        self._label = "—"
        # Each of the engine's stats warnings already shown, with the message that showed it.
        self._warnings_shown: dict[str, UserMessage] = {}
        # Every message shown about the latest start and its stream, still up: a new start takes
        # them down ("The video stopped" stayed over the video the person had just restarted).
        self._said: list[UserMessage] = []
        # Stopped engines, until all their threads ended (join() waits for them at exit).
        self._stopping: list[_Stopping] = []
        # The source failed to open and the fallback (demo) plays, or the demo stands in for a
        # camera not plugged in (start's stand_in): either way nothing is sent to calls.
        self.using_fallback = False
        # Why the latest start's source did not open (None when it did): the engine's own words,
        # for a caller that reports it outside the window (run_app's scripted mode).
        self.source_error: BaseException | None = None
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(stats_interval_ms)
        self._stats_timer.timeout.connect(self._poll_stats)
        self._error_from_worker.connect(self._on_worker_error)
        # Queued also when the GUI thread closes a sink itself: the slot must find the sink
        # already listed as closing, whichever thread closed it.
        self._sink_closed.connect(self._on_sink_closed, Qt.ConnectionType.QueuedConnection)
        # Starts: the newest generation wins; older results are closed when they arrive.
        self._generation = 0
        self._opening: _StartRequest | None = None  # the start whose result is awaited
        self._openers: list[tuple[threading.Thread, _StartRequest]] = []  # for join()
        self._closers: list[threading.Thread] = []  # closing stale results, for join()
        # (engine, thread) saying when each engine's run is over: stop(wait=True) and join()
        # wait for those of stopped engines too (they end as soon as the engine's done is set).
        self._watchers: list[tuple[Any, threading.Thread]] = []
        self._opened.connect(self._on_opened)
        self._engine_done.connect(self._on_engine_done)
        self._virtual_opened.connect(self._on_virtual_opened)
        # The message shown for the error that ends the current engine, when it came first.
        self._end_message: tuple[BaseException, UserMessage] | None = None
        # Processing-scale changes swap a new backend into the running engine (see set_scale).
        # The scale asked for, and the one the running engine's backend was built for:
        self._scale: float | str = "auto"
        self._running_scale: float | str = "auto"
        # What the running engine's start asked for (backend name, model), to build the same
        # backend at another scale; and the warning it started with (its model did not load).
        self._backend_spec: tuple[str, str | None] | None = None
        self._start_warning: str | None = None
        # What the running backend's load warned about (said again by a start it is handed on
        # to), and its model file as it was then (see _model_stamp).
        self._load_messages: list[UserMessage] = []
        self._model_stamp: tuple[str, int, int] | None = None
        # The loaded backend on its way from a stopped engine to the start that asked for the
        # same one (see _hand_over); let go (closed) by any other start, a stop, or join().
        self._handover: _Handover | None = None
        # The running engine's model did not load at its start (passthrough runs in its place).
        self._model_failure: ModelFailure | None = None
        # The newest change wins (a counter, under _lock); older loads are closed on arrival.
        self._swap_seq = 0
        self._swapping: _BackendSwap | None = None  # the load whose backend is awaited
        self._swappers: list[tuple[threading.Thread, _BackendSwap]] = []  # for join()
        self._swap_failure: UserMessage | None = None  # said for the latest failed change
        self._swap_loaded.connect(self._on_swap_loaded)

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
    def reading(self) -> str:
        """What the running stream reads (:func:`engine.source_kind`: ``camera``, ``video``,
        ``image`` or ``folder``), the demo clip standing in for a source that failed included."""
        return self._reading

    @property
    def source_fps(self) -> float | None:
        """The rate the running source says it delivers (a camera's driver may give 30 when 60
        was asked for; a file its own), or None while none runs."""
        fps = float(getattr(self._source, "fps", 0) or 0) if self._source is not None else 0.0
        return fps if fps > 0 else None

    @property
    def virtual_camera_on(self) -> bool:
        """A virtual camera device is open and the engine sends to it."""
        return self._virtual_sink is not None

    @property
    def virtual_camera_wanted(self) -> bool:
        """The virtual camera was turned on (and not off since): sent to whenever video runs."""
        return self._want_virtual

    @property
    def virtual_camera_opening(self) -> bool:
        """A virtual camera device opens on a worker thread for the running engine;
        :attr:`virtual_camera_changed` (or :attr:`virtual_camera_missing`) follows."""
        return self._virtual_opening is not None

    @property
    def virtual_camera_closing(self) -> bool:
        """A virtual camera device turned off is still closing (a stalled driver), or its open,
        superseded, has not returned yet (it is closed once it does)."""
        return bool(self._closing_sinks or self._cancelled_opens)

    @property
    def answering_turn_on(self) -> bool:
        """True while the signals that end an open a :meth:`set_virtual_camera` turn-on asked
        for are emitted (the device opened, was missing or refused): they answer that command,
        as they did when the device opened inside it, not a start's reopening."""
        return self._answering_turn_on

    @property
    def refusing_loop(self) -> bool:
        """True while ``virtual_camera_changed(False)`` says the device was not sent to because
        the engine reads it (:func:`feedback_loop_message`): off until the person turns it on
        again, as the message says."""
        return self._refusing_loop

    @property
    def virtual_camera_held(self) -> bool:
        """A restart keeps the device open, sending it the last frame until its video runs."""
        return self._held is not None

    @property
    def virtual_camera_device(self) -> str:
        """The device sent to ("" when none), also while a restart keeps it open."""
        return self._held.device if self._held is not None else self._virtual_device

    @property
    def virtual_camera_size(self) -> tuple[int, int] | None:
        """``(W, H)`` the open virtual camera sends (frames of another size are letterboxed)."""
        fmt = self._virtual_format
        return tuple(fmt[0]) if fmt is not None and self._virtual_sink is not None else None

    @property
    def scale(self) -> float | str:
        """The processing scale the running engine's backend was built for (while none runs:
        the one the next start uses)."""
        return self._running_scale if self._engine is not None else self._scale

    @property
    def changing_scale(self) -> bool:
        """A :meth:`set_scale` is loading the model at its scale on a worker thread."""
        return self._swapping is not None

    @property
    def model_failure(self) -> ModelFailure | None:
        """Why the running engine sharpens nothing though sharpening is on (its model did not
        load, or failed while running and the engine passes frames through); None when its
        model works, or no engine runs. The banner's message about it can be dismissed: the
        window keeps saying it from this."""
        if self._engine is None:
            return None
        if self._model_failure is not None:
            return self._model_failure
        for part, msg in self._warnings_shown.items():
            # The engine's words for a model that failed while running.
            if part.endswith("passing frames through"):
                return ModelFailure(msg, "same", loaded=True)
        return None

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
        denoise: bool = False,
        loop: bool = False,
        fallback_source: str | None = None,
        scale: float | str = "auto",
        source_name: str = "",
        wait: bool = False,
        stand_in: bool = False,
    ) -> bool | None:
        """(Re)start the engine on ``source``.

        The running engine is stopped first, without waiting for its threads: the source is
        opened once it has released its own (a camera cannot be opened twice). Opening the
        source and loading the backend can take seconds (a Media Foundation camera, an OpenVINO
        compile), so by default they run on a worker thread and this returns None at once;
        :attr:`start_finished` says how it ended. A newer :meth:`start` or a :meth:`stop`
        before then supersedes this one: what it opened is closed and nothing is emitted for
        it. ``wait=True`` does it all in the calling thread and returns True when the engine
        runs (no event loop needed).

        A source that fails to open is reported (also as :attr:`source_error`) and
        ``fallback_source`` (the demo clip), when given, is used instead; a backend that fails to
        load is reported and ``passthrough`` is used, so the window shows video unless there is
        no fallback source. ``loop`` replays a file source at its end (the demo clip behaves like
        an endless camera); the fallback always loops.
        ``scale`` is the processing scale (``auto``: full size while the model keeps up with
        the source's frame rate, smaller when it does not; see ``engine.backends.ScaledBackend``).
        ``source_name`` is the source's name in the camera picker: where pyvirtualcam names a
        device rather than giving its path (OBS Virtual Camera), that is how the virtual camera
        knows not to send to the device the engine reads.
        ``stand_in``: ``source`` plays in the window in place of the camera wanted (one not
        plugged in); like the fallback, it is never sent to the virtual camera.

        A restart that asks for the backend, model file and scale the running engine was
        started with takes that engine's loaded model once its last call is over, instead of
        loading and compiling it again (see :meth:`_hand_over`).
        """
        # Before the stop: the engine must know to keep its backend when its run ends.
        handover = self._hand_over(backend, model, scale)
        # Before the stop too: the stopped engine must not close the device.
        held = self._hold_virtual(source, source_name)
        # Not waiting for the engine's threads here (up to seconds: a model call, a stalled
        # output): the new source opens only once the stopped engines released theirs.
        self.stop(wait=False)
        self._held = held
        if held is not None:
            # Said once it is held: the window tells calls see the last picture meanwhile,
            # not that nothing is sent.
            self.virtual_camera_changed.emit(False, "")
        self._take_down(self._said)
        # Taken down with the rest: a later turn-on's setup steps must not cite it.
        self._close_failures = []
        self._open_failure = None
        self._swap_failure = None
        self._scale = scale
        self.using_fallback = False
        self.source_error = None
        self._fps = fps
        self._strength = strength
        self._enabled = enabled
        self._denoise = bool(denoise)
        req = _StartRequest(
            generation=self._generation,
            source=source,
            size=size,
            fps=fps,
            backend=backend,
            model=model,
            loop=loop,
            fallback_source=fallback_source,
            scale=scale,
            source_name=source_name,
            stand_in=stand_in,
            after=[s for s in self._stopping if not s.released()],
            handover=handover,
            devices=tuple(
                w
                for w in self._closing_sinks
                if reads_virtual_device(source, source_name, _device_name(w))
            ),
        )
        if handover is not None:
            with handover.lock:
                handover.owner = req
                handover.lock.notify_all()  # a superseded start waiting for it gives up
        self._handover = handover
        # The previous start may still be opening the same camera: each start waits for it.
        prev = self._openers[-1] if self._openers else None
        self._openers = [(t, r) for t, r in self._openers if t.is_alive() or not r.claimed]
        self._closers = [c for c in self._closers if c.is_alive()]
        if wait:
            self._after_previous(prev)
            _wait_stopped(req.after)
            _wait_devices_closed(req.devices)
            _open_request(self._api, req, take=self._take_handover)
            self._claim(req)
            return self._finish_start(req, wait=True)
        self._opening = req
        thread = threading.Thread(
            target=self._open_in_worker,
            args=(req, prev),
            name=f"sharpcam-open-{req.generation}",
            # A camera driver that never returns must not keep the process alive at exit;
            # join() gives it a bounded wait first.
            daemon=True,
        )
        self._openers.append((thread, req))
        thread.start()
        return None

    @property
    def starting(self) -> bool:
        """A :meth:`start` is opening its source and backend; :attr:`start_finished` follows."""
        return self._opening is not None

    def stop(self, timeout: float = STOP_TIMEOUT_S, *, wait: bool = True) -> bool:
        """Stop the engine; a start still opening is cancelled (what it opens is closed when it
        arrives).

        ``wait=True`` (the window closing) joins the engine's threads, and those of engines
        stopped earlier, within ``timeout`` in all; True when every one ended in time.
        ``wait=False`` (a restart, a stream that ended) returns at once with True: a worker
        thread stops the engine. Either way the next :meth:`start` opens its source only once
        the stopped engine's source has closed (a capture thread stuck in a driver's read
        closes the camera only when that read returns), so a camera is never opened twice;
        after ``OPEN_WAIT_S`` it opens anyway, and the log says so. It does not wait for a
        model call still running. :meth:`join` waits for every thread at exit.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._stats_timer.stop()
        self._end_message = None
        cancelled = self._opening is not None
        self._opening = None
        # A model loading for a scale change is stale too (the generation): closed on arrival.
        self._swapping = None
        # A start's (start() takes its own out before it stops): no start will take it now.
        self._drop_handover(self._handover)
        self._handover = None
        with self._lock:
            # Any result still on its way is stale from here on (see _on_opened).
            self._generation += 1
            self._feed = None
            self._latest = None
            self._pending = False
        eng, self._engine = self._engine, None
        src, self._source = self._source, None
        self._playing = None
        # The engine closes its sinks when it stops; the wish for a virtual camera stays.
        had_virtual = self._release_virtual()
        self._stopping = [s for s in self._stopping if not s.finished()]
        earlier = list(self._stopping)
        current = None
        if eng is not None:
            current = _Stopping(
                eng,
                timeout,
                source_closed=src.closed if src is not None else _set_event(),
                sinks=tuple(s for s in self._closing_sinks if s.engine is eng),
            )
            # Listed before it runs: a start that follows a stop(wait=True) at once must also
            # wait for a camera that a read stuck past the stop still holds.
            self._stopping.append(current)
            if wait:
                current.run()
            else:
                current.thread = threading.Thread(
                    target=current.run, name="sharpcam-stop", daemon=True
                )
                current.thread.start()
        if had_virtual:
            self.virtual_camera_changed.emit(False, "")
        if eng is None:
            if cancelled:
                self.running_changed.emit(False)  # the window must not stay "Starting"
        else:
            # What the stopped engine warned about (camera lost, output failed) no longer
            # applies.
            shown, self._warnings_shown = self._warnings_shown, {}
            self._take_down(shown.values())
            self.running_changed.emit(False)
        if not wait:
            return True
        ok = current is None or current.in_time
        for s in earlier:
            if s.thread is not None:
                s.thread.join(max(0.0, deadline - time.monotonic()))
            ok = (
                ok
                and s.done.is_set()
                and bool(s.engine.join(max(0.0, deadline - time.monotonic())))
            )
        return self._join_watchers(deadline) and ok

    def _join_watchers(self, deadline: float) -> bool:
        """Wait (until ``deadline``) for the end-watchers of engines whose run is over: each
        ends right after its engine's done is set, and none may outlive the window's close."""
        for e, t in list(self._watchers):
            if e.done.is_set():  # only engines with a done event are watched
                t.join(max(0.0, deadline - time.monotonic()))
        self._watchers = [(e, t) for e, t in self._watchers if t.is_alive()]
        return not any(e.done.is_set() for e, _ in self._watchers)

    def set_strength(self, strength: float) -> None:
        self._strength = min(max(float(strength), 0.0), 1.0)
        if self._engine is not None:
            self._engine.set_strength(self._strength)

    def set_enabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)
        if self._engine is not None:
            self._engine.set_enabled(self._enabled)

    def set_denoise(self, on: bool) -> None:
        """Reduce the camera's noise over time (``Engine.set_denoise``) from the next frame."""
        self._denoise = bool(on)
        if self._engine is not None:
            self._engine.set_denoise(self._denoise)

    def set_scale(self, scale: float | str) -> bool:
        """Run the model at processing ``scale`` (see :meth:`start`) from now on, without
        restarting the stream; True when a running engine gets it now.

        The scale wraps the backend when it is created, so a new backend is built the way the
        start built its own, on a worker thread (a model load or compile takes a second), and
        swapped into the running engine between two frames (:meth:`engine.Engine.set_backend`,
        which closes the old one after its last call): the camera stays open, the virtual camera
        and the preview go on unbroken, and the output keeps its size (the scaled backend
        returns frames at the input's size). The newest change wins: a backend built for an
        older one, or for an engine stopped or restarted meanwhile, is closed, never installed.
        One that fails to load leaves the running one in place: a :attr:`message` says so and
        :attr:`scale_change_failed` gives the scale kept. Without a running engine the scale is
        only remembered, and the window passes it to the next :meth:`start`. A start still
        opening takes it itself: its model loads at it when the load has not begun yet, and one
        already loading is wrapped at it (:func:`_rescaled`) rather than loaded a second time.
        """
        self._scale = scale
        if self._engine is None:
            if self._opening is not None:
                # Read by the start's worker when its model load begins (an attribute written
                # whole: no lock). Missed that, _finish_start rescales what it loaded.
                self._opening.scale = scale
            return False
        self._swap_to(scale)
        return True

    def join(self, timeout: float) -> bool:
        """Wait for engines stopped late (a model call still in progress), for starts still
        opening (a camera, a model compile), for models loading for a scale change and for
        virtual camera devices still opening or closing to end; True when none is left. Before
        the process exits: a thread inside a native call at interpreter shutdown aborts the
        process. What a cancelled start or a stale scale change opened is closed here if its
        result never reached the event loop.
        """
        deadline = time.monotonic() + timeout
        self._drop_handover(self._handover)
        self._handover = None
        held, self._held = self._held, None
        self._close_held(held)
        for thread, _ in self._openers:
            thread.join(max(0.0, deadline - time.monotonic()))
        still: list[tuple[threading.Thread, _StartRequest]] = []
        for thread, req in self._openers:
            if thread.is_alive():
                still.append((thread, req))  # it closes its result itself: it is stale
            elif self._is_stale(req) and self._claim(req):
                req.close()
        self._openers = still
        for thread, _ in self._swappers:
            thread.join(max(0.0, deadline - time.monotonic()))
        loading: list[tuple[threading.Thread, _BackendSwap]] = []
        for thread, sreq in self._swappers:
            if thread.is_alive():
                loading.append((thread, sreq))  # it closes its backend itself: it is stale
            elif self._is_stale_swap(sreq) and self._claim(sreq):
                sreq.close()  # its result never reached the event loop
        self._swappers = loading
        for thread, _ in self._virtual_opens:
            thread.join(max(0.0, deadline - time.monotonic()))
        opening: list[tuple[threading.Thread, _VirtualOpen]] = []
        for thread, vreq in self._virtual_opens:
            if thread.is_alive():
                opening.append((thread, vreq))  # it closes its device itself: it is cancelled
            elif vreq.cancelled.is_set() and self._claim(vreq):
                self._close_opened(vreq)  # its result never reached the event loop
        self._virtual_opens = opening
        for closer in self._closers:
            closer.join(max(0.0, deadline - time.monotonic()))
        self._closers = [c for c in self._closers if c.is_alive()]
        for s in self._stopping:
            if s.thread is not None:
                s.thread.join(max(0.0, deadline - time.monotonic()))
        self._stopping = [
            s
            for s in self._stopping
            if not (s.done.is_set() and s.engine.join(max(0.0, deadline - time.monotonic())))
        ]
        watched = self._join_watchers(deadline)
        return (
            not self._stopping
            and not self._openers
            and not self._swappers
            and not self._virtual_opens
            and not self._closers
            and watched
        )

    def set_virtual_camera(self, on: bool) -> bool:
        """Turn the virtual camera output on or off; returns whether a device is open now.

        The choice is kept (:attr:`virtual_camera_wanted`) across restarts, a start without
        video and a stream that ended: the device is opened whenever an engine runs on the
        source asked for (not on the demo clip standing in for a camera that failed). The open
        runs on a worker thread (a driver may take seconds, or hang), so a turn-on returns False
        at once; :attr:`virtual_camera_changed` says when the device is open. A device turned
        off a moment ago is given up to ``OPEN_WAIT_S`` to close first (a driver may refuse a
        second open as busy). When no virtual camera exists, emits
        :attr:`virtual_camera_missing` with the OS's setup steps and drops the wish (the person
        has to set one up first), as it does when the device is the camera the engine reads (it
        would send SharpCam its own picture in a loop; a message says so). An open that fails
        on an unexpected error drops it too, with a :attr:`message` that says so (and the log
        its traceback), not the setup steps.
        """
        self._want_virtual = bool(on)
        if not on:
            self._virtual_format = None
            self._release_virtual()
            self.virtual_camera_changed.emit(False, "")
            return False
        if self._virtual_sink is not None:
            return True
        if self._virtual_opening is not None:
            self._virtual_opening.asked = True  # its outcome answers this turn-on now
            return False
        if self._engine is None or self.using_fallback:
            # Nothing runs now (a start opening, no video): sent to once something does. The
            # demo clip standing in for a camera that did not open is not sent either: the
            # people in the call would see the bundled clip instead of the person.
            self.virtual_camera_changed.emit(False, "")
            return False
        self._open_virtual(asked=True)
        return False

    def _drop_virtual_wish(self) -> None:
        """The virtual camera is no longer wanted (the device failed, or is missing)."""
        self._want_virtual = False
        self._virtual_format = None

    def _virtual_format_now(self) -> tuple[tuple[int, int], float, bool]:
        """``(size, fps, from_camera)`` the device is to have for the running engine."""
        camera = self._playing is not None and source_kind(self._playing[0]) == "camera"
        kept = self._virtual_format
        if kept is not None and (kept[2] or not camera):
            # A camera's format stays a camera's while a file plays in it: marked as the
            # file's, the next camera took the device over at its own size, mid-call.
            return kept
        size = self._output_size()
        # The rate the source really delivers (a camera asked for 60 may give 30): calls
        # must not be promised frames that never come.
        fps = self.source_fps or self._fps
        return size, fps, camera

    def _open_virtual(
        self, *, asked: bool, wait: bool = False, replaces: _WatchedSink | None = None
    ) -> None:
        """Open a virtual camera device for the running engine on a worker thread (``wait``:
        in this one); :meth:`_on_virtual_opened` hands it to the engine in the GUI thread.
        ``replaces``: the device it reopens at another format, whose last picture it shows."""
        size, fps, from_camera = self._virtual_format_now()
        options: dict[str, Any] = {"size": size, "fps": fps}
        if self._virtual_backend:
            options["backend"] = self._virtual_backend
        req = _VirtualOpen(
            engine=self._engine,
            options=options,
            asked=asked,
            from_camera=from_camera,
            replaces=replaces,
        )
        # An open superseded a moment ago may still be in its driver, a device turned off may
        # still be closing: the same device must not be opened twice at once (the second open
        # fails "busy", or waits with it).
        prev, self._last_virtual_open = self._last_virtual_open, req
        self._virtual_opening = req
        self._virtual_opens = [
            (t, r) for t, r in self._virtual_opens if t.is_alive() or not r.claimed
        ]
        if wait:
            self._run_virtual_open(req, prev)
            self._on_virtual_opened(req)
            return
        thread = threading.Thread(
            target=self._open_virtual_in_worker,
            args=(req, prev),
            name="sharpcam-virtual-open",
            # A driver that never returns must not keep the process alive at exit; join()
            # gives it a bounded wait first.
            daemon=True,
        )
        self._virtual_opens.append((thread, req))
        thread.start()
        self.virtual_camera_changed.emit(False, "")  # not sending yet: "opening"

    def _run_virtual_open(self, req: _VirtualOpen, prev: _VirtualOpen | None) -> None:
        """The slow part of an open (any thread, no Qt): wait for ``prev`` to hold no device
        (its open returned, and its device closed), then open ``req``'s, unless it was
        superseded meanwhile."""
        if prev is not None and not prev.released.wait(OPEN_WAIT_S):
            log.warning(
                "the previous virtual camera device has not closed after %.0f s (a driver not "
                "answering); opening anyway",
                OPEN_WAIT_S,
            )
        if req.cancelled.is_set():
            return  # turned off, or its engine stopped, while it waited: nothing to open
        try:
            req.sink = self._api.open_sink("virtual", **req.options)
        except Exception as exc:
            req.error = exc
            # The window shows the setup steps or a short message: a bug report needs the cause.
            if _expected_open_error(exc):
                log.warning("the virtual camera did not open: %s", _first_line(exc))
                log.debug("the virtual camera's open failed", exc_info=True)
            else:
                log.exception("opening the virtual camera failed on an unexpected error")
            return
        _show_last_picture(req)

    def _open_virtual_in_worker(self, req: _VirtualOpen, prev: _VirtualOpen | None) -> None:
        self._run_virtual_open(req, prev)
        if req.cancelled.is_set() and self._claim(req):
            # Superseded while its driver opened: closed here, off the GUI thread, and also
            # when the window has closed and no event loop runs any more (join() waits).
            self._close_opened(req)
        try:
            self._virtual_opened.emit(req)  # queued: the GUI thread uses it, or forgets it
        except RuntimeError:  # the bridge was deleted meanwhile (the app exits)
            if self._claim(req):
                self._close_opened(req)

    def _close_opened(self, req: _VirtualOpen) -> None:
        """Close the device ``req`` opened (any thread); then it holds none (``released``)."""
        try:
            if req.sink is not None:
                self._close_sink(self._watch(req.sink, engine=req.engine))
        finally:
            req.released.set()

    def _close_in_background(self, req: _VirtualOpen) -> None:
        """Close the device ``req`` opened on a worker thread (a driver may take a while to let
        go); :attr:`virtual_camera_closing` says so until it has. GUI thread."""
        if req.sink is None:
            req.released.set()
            return
        self._close_sink_in_background(
            self._watch(req.sink, engine=req.engine, closed=req.released)
        )

    def _close_sink_in_background(self, watched: _WatchedSink) -> None:
        """Close ``watched`` on a worker thread (a driver may take a while to let go);
        :attr:`virtual_camera_closing` says so until it has. GUI thread."""
        if watched.is_closed:
            return
        self._track_closing(watched)
        closer = threading.Thread(
            target=self._close_sink, args=(watched,), name="sharpcam-close", daemon=True
        )
        self._closers = [c for c in self._closers if c.is_alive()]
        self._closers.append(closer)
        closer.start()

    def _on_virtual_opened(self, req: _VirtualOpen) -> None:
        current = req is self._virtual_opening
        if current:
            self._virtual_opening = None
        was_closing = self.virtual_camera_closing
        self._cancelled_opens.discard(req)
        if not self._claim(req):
            pass  # closed already: by its worker (it was superseded meanwhile) or by join()
        elif not current:
            # Superseded after its worker looked (turned off, the engine stopped or restarted).
            self._close_in_background(req)
        else:
            self._answering_turn_on = req.asked
            try:
                self._send_to_opened(req)
            finally:
                self._answering_turn_on = False
        if was_closing and not self.virtual_camera_closing:
            self.virtual_camera_closing_changed.emit(False)

    def _send_to_opened(self, req: _VirtualOpen) -> None:
        """Give the running engine the device ``req`` opened for it (GUI thread), or say why
        not."""
        if req.error is not None:
            req.released.set()
            if _expected_open_error(req.error):
                self._say_missing(req.error)
            else:
                self._say_open_failed(req.error)
            return
        sink = req.sink
        device = str(getattr(sink, "device", "") or "virtual camera")
        # `released` once the engine has closed the device (turned off, stopped): the next open
        # waits for that, as a driver still closing it may refuse a new open as busy.
        watched = self._watch(sink, engine=self._engine, closed=req.released)
        self._send_to(watched, device, (req.options["size"], req.options["fps"], req.from_camera))

    def _send_to(
        self, watched: _WatchedSink, device: str, fmt: tuple[tuple[int, int], float, bool]
    ) -> None:
        """Give the running engine the open device (``fmt``: its size, rate and whether a
        camera gave them), or close it and say why not (GUI thread)."""
        if self._playing is not None and reads_virtual_device(*self._playing, device):
            # The engine reads this very device (another app may have been feeding it): sending
            # there would show SharpCam its own picture in a loop. Off, and said why: nothing
            # is wrong with the device, and the setup steps would mislead.
            self._drop_virtual_wish()
            self._close_sink_in_background(watched)
            self._refusing_loop = True
            try:
                self.virtual_camera_changed.emit(False, "")
            finally:
                self._refusing_loop = False
            self._say(feedback_loop_message(self._playing[1] or self._playing[0], device))
            return
        watched.engine = self._engine
        # Where the run is over already, add_sink must not close it: that close would wait in
        # this thread for a send in progress, and a device held over a restart may be stuck in
        # one (it is closed in the background below). An attached one the engine closes at
        # its end as any sink.
        added = self._engine.add_sink(watched, close=False)
        if added is False:
            # The run is over (its end is on its way to _on_engine_done): nothing would be
            # sent. Still wanted: on with the next video.
            self._close_sink_in_background(watched)
            self.virtual_camera_changed.emit(False, "")
            return
        self._virtual_sink = watched
        self._virtual_device = device
        self._virtual_format = fmt
        # It opened: a failed close before did not keep it, and the warning would mislead;
        # nor does a failed open before apply any more.
        failures, self._close_failures = self._close_failures, []
        if self._open_failure is not None:
            failures.append(self._open_failure)
            self._open_failure = None
        self._take_down(failures)
        self.virtual_camera_busy = None
        self.virtual_camera_changed.emit(True, self._virtual_device)

    def _say_missing(self, exc: BaseException) -> None:
        """No virtual camera device could be opened: the wish is dropped, the steps shown."""
        self._drop_virtual_wish()
        detail = str(exc).strip()
        # By type name, as describe_error matches. A device another program sends to: the
        # steps to install the module would send the person to install what they have.
        busy = getattr(exc, "devices", None) if type(exc).__name__ == "VirtualCameraBusy" else None
        self.virtual_camera_busy = list(busy) if busy else None
        if self.virtual_camera_busy:
            guidance = virtual_camera_busy_guidance(self.virtual_camera_busy)
        elif type(exc).__name__ == "VirtualCameraNotInstalled":
            # The pyvirtualcam package, not a device: the steps that make one led away from it.
            # Where it has no build (Windows on ARM), no retry can help: none is asked for.
            guidance = f"{detail}."
            if getattr(exc, "installable", True):
                guidance += "\n\nThen press Retry (or restart SharpCam)."
        else:
            guidance = virtual_camera_guidance()
            if detail:
                guidance = f"{guidance}\n\nDetails: {detail.splitlines()[0]}"
        if self.virtual_camera_closing:
            # The device may simply still be held by the connection turned off before.
            guidance += (
                "\n\nThe virtual camera turned off before has not closed yet (its driver "
                "is not answering); Retry once the sidebar no longer says it is closing."
            )
        elif self._close_failures:
            # Steps to create a device the computer has would mislead: say what went wrong.
            said = self._close_failures[-1].text.rstrip(".")
            guidance += f"\n\n{said}. Its driver may still hold it."
        self.virtual_camera_changed.emit(False, "")
        self.virtual_camera_missing.emit(guidance)

    def _say_open_failed(self, exc: BaseException) -> None:
        """The device did not open on an unexpected error: the wish is dropped, as for a
        missing device, and the banner says so (the log has the traceback)."""
        self._drop_virtual_wish()
        self.virtual_camera_changed.emit(False, "")
        if self._open_failure is not None:
            # Replaced: an open that works takes down only the failure held here.
            self._take_down([self._open_failure])
        self._open_failure = open_failed_message(exc)
        self._say(self._open_failure)

    def _cancel_virtual_open(self) -> bool:
        """Supersede the open in progress, if any (its device is closed once it opens)."""
        req, self._virtual_opening = self._virtual_opening, None
        if req is None:
            return False
        req.cancelled.set()
        was_closing = self.virtual_camera_closing
        self._cancelled_opens.add(req)
        if not was_closing:
            self.virtual_camera_closing_changed.emit(True)
        return True

    def _track_closing(self, sink: _WatchedSink) -> None:
        was_closing = self.virtual_camera_closing
        self._closing_sinks.add(sink)
        if not was_closing:
            self.virtual_camera_closing_changed.emit(True)

    def _hold_virtual(self, source: str, source_name: str) -> _HeldSink | None:
        """The open device a restart keeps for its engine (GUI thread, before the running
        engine stops, which would close it): taken off that engine and sent its last frame
        until the next one runs (:class:`_HeldSink`), or the one an earlier start still holds.
        A call app loses no camera at a switch: the device stays open, and a call reading it
        sees the picture frozen for the restart instead of a camera gone for seconds (Chrome
        restarts one silent for 1 s; with ``exclusive_caps=1`` a device without a writer is no
        camera at all). None when there is none, it is not wanted, or the new source reads it
        (sending there would be a loop: it closes, and the source opens once it has)."""
        held, self._held = self._held, None
        sink, eng = self._virtual_sink, self._engine
        if held is None and sink is not None and eng is not None and self._want_virtual:
            device = self._virtual_device
            if reads_virtual_device(source, source_name, device):
                return None  # closed by the stopped engine; the start waits for that
            # False: the engine dropped it after a failed write (and closed it).
            if eng.detach_sink(sink, close=False):
                self._virtual_sink = None
                self._virtual_device = ""
                held = _HeldSink(sink, device)
                self._closers = [c for c in self._closers if c.is_alive()]
                self._closers.append(held.thread)  # join() waits for its last send
        if held is not None and reads_virtual_device(source, source_name, held.device):
            self._close_held(held)
            return None
        return held

    def _close_held(self, held: _HeldSink | None) -> None:
        """Close the device a restart held (not handed on: turned off, another format, no
        video, a stop); :attr:`virtual_camera_closing` says so until it has. GUI thread."""
        if held is None:
            return
        self._close_sink_in_background(held.end(handed_on=False))

    def _close_sink(self, watched: _WatchedSink) -> None:
        """Close ``watched`` (any thread). A failure is said as it closes (``on_close_error``):
        the device may still be held, and the next turn-on may fail on it."""
        try:
            watched.close()
        except VirtualCameraCloseError:
            pass  # said already

    def _watch(
        self, sink: Any, *, engine: Any, closed: threading.Event | None = None
    ) -> _WatchedSink:
        """``sink`` wrapped to say when it has closed, and how its close failed."""
        return _WatchedSink(
            sink,
            self._say_sink_closed,
            engine=engine,
            closed=closed,
            on_close_error=self._say_close_failed,
        )

    def _release_virtual(self) -> bool:
        """Stop sending to the virtual camera device, and supersede an open in progress (the
        wish is left as it is); True when one was open or opening. A running engine closes it
        once a write in progress returns, a stopped one with its other outputs:
        :attr:`virtual_camera_closing` is True until that close returns, so the window does not
        say "Off" while a stalled device is still open. A device a restart holds is closed."""
        cancelled = self._cancel_virtual_open()
        held, self._held = self._held, None
        self._close_held(held)
        sink, self._virtual_sink = self._virtual_sink, None
        self._virtual_device = ""
        if sink is None:
            return cancelled or held is not None
        if self._engine is not None:
            # Not remove_sink: it waits for the write in progress, and a device hung in send()
            # froze the window. False: the engine dropped (and closed) it after a failed write.
            self._engine.detach_sink(sink)
        if not sink.is_closed:
            self._track_closing(sink)
        return True

    def _say_close_failed(self, exc: VirtualCameraCloseError) -> None:
        """A device's close raised (any thread): said once, whoever closed it."""
        self._on_error(None, exc)
        exc.said = True

    def _say_sink_closed(self, sink: _WatchedSink) -> None:
        try:
            self._sink_closed.emit(sink)  # any thread; queued to the GUI thread
        except RuntimeError:  # the bridge was deleted meanwhile (the app exits)
            pass

    def _on_sink_closed(self, sink: _WatchedSink) -> None:
        if sink in self._closing_sinks:
            self._closing_sinks.discard(sink)
            if not self.virtual_camera_closing:
                self.virtual_camera_closing_changed.emit(False)

    def take_preview(self) -> tuple[QImage, QImage] | None:
        """The newest ``(original, processed)`` pair, or None; re-arms :attr:`preview_ready`."""
        with self._lock:
            pair, self._latest = self._latest, None
            self._pending = False
        return pair

    # --- engine callbacks (worker threads: copy and signal, nothing else) ----------------------
    def _on_preview(self, feed: object, original: Any, processed: Any) -> None:
        if feed is not self._feed:
            return  # a stopped engine's last frames (checked again below, under the lock)
        # Copy now: the engine reuses these buffers as soon as we return.
        orig_img = frame_to_qimage(original.image)
        proc_img = frame_to_qimage(processed.image)
        with self._lock:
            if feed is not self._feed:
                return
            self._latest = (orig_img, proc_img)
            self.previews_received += 1
            self.last_frame_size = (proc_img.width(), proc_img.height())
            notify = not self._pending
            self._pending = True
        if notify:
            self.preview_ready.emit()

    def _on_error(self, feed: object, exc: BaseException) -> None:
        if isinstance(exc, VirtualCameraCloseError) and exc.said:
            return  # said by the device as it closed; the engine that closed it reports it too
        try:
            self._error_from_worker.emit(feed, exc)
        except RuntimeError:  # the bridge was deleted meanwhile (the app exits)
            pass

    def _watch_end(self, eng: Any) -> None:
        """Say (queued) when ``eng``'s run is over. A thread, not the stats poll: the engine
        reports the error that ends it before its run is over, and queued signals arrive in the
        order they were emitted, so the end is always handled after that error."""
        done = getattr(eng, "done", None)
        if done is None:
            return

        def watch() -> None:
            done.wait()
            try:
                self._engine_done.emit(eng)
            except RuntimeError:  # the bridge was deleted meanwhile (the app exits)
                pass

        thread = threading.Thread(target=watch, name="sharpcam-watch", daemon=True)
        self._watchers = [(e, t) for e, t in self._watchers if t.is_alive()]
        self._watchers.append((eng, thread))
        thread.start()

    # --- starting (worker thread, then the GUI thread) ------------------------------------------
    def _claim(self, req: _StartRequest | _VirtualOpen | _BackendSwap) -> bool:
        """True for the one caller that gets to use or close ``req``'s result."""
        with self._lock:
            if req.claimed:
                return False
            req.claimed = True
            return True

    def _is_stale(self, req: _StartRequest) -> bool:
        """A newer start or a stop came after ``req`` (any thread; once True, always True)."""
        with self._lock:
            return req.generation != self._generation

    def _after_previous(self, prev: tuple[threading.Thread, _StartRequest] | None) -> None:
        """Wait until the previous start holds no camera, so that a camera is never opened
        while a superseded start still holds it; its model compile is not waited for."""
        if prev is None:
            return
        thread, old = prev
        if self._is_stale(old):
            old.release_source()  # closes its camera now if its open has returned
        # Bounded: a driver that never returns must not block every later start.
        if not old.released.wait(OPEN_WAIT_S):
            log.warning("the previous camera open has not returned after %.0f s", OPEN_WAIT_S)
        if not thread.is_alive() and self._is_stale(old) and self._claim(old):
            old.close()  # it reached the event loop's queue before it went stale

    def _hand_over(self, backend: str, model: str | None, scale: float | str) -> _Handover | None:
        """The loaded backend a start of ``backend``, ``model`` at ``scale`` can have instead of
        loading the model again (0.4 s, and as long again for OpenVINO's compile, at every
        switch of source): the running engine's, when it was built for the same backend, model
        file and processing scale and its model works (one that failed is loaded again: that
        is the retry); or the one a superseded start was to get. Any other is let go. Call it
        before the running engine is stopped: it must know to keep its backend."""
        old, self._handover = self._handover, None
        spec = (backend, model, _scale_key(scale))
        eng = self._engine
        if eng is None:
            # The file is looked at again: a start that did not open its source leaves the
            # handover open until the next start, and the model may be reinstalled meanwhile.
            if old is not None and old.spec == spec and _same_file(old.stamp):
                with old.lock:
                    # Or taken by a start this one supersedes (not one an engine runs): it
                    # gives the model back when it is closed, and this start takes it then.
                    if old.state == "open" or (
                        old.state == "taken" and old.taker is not None and not old.taker.adopted
                    ):
                        return old
            self._drop_handover(old)
            return None
        self._drop_handover(old)
        running = self._backend_spec
        keep = getattr(eng, "keep_backend", None)
        if (
            running is None
            or (*running, _scale_key(self._running_scale)) != spec
            or self.model_failure is not None
            # The model file was replaced since it loaded: the new one is verified and loaded.
            or _model_stamp(self._backend) != self._model_stamp
            or not callable(keep)
            or not keep()
        ):
            return None
        return _Handover(
            engine=eng,
            spec=spec,
            scale=self._running_scale,
            messages=self._load_messages,
            stamp=self._model_stamp,
        )

    def _take_handover(self, req: _StartRequest) -> Any:
        """``req``'s handed-over backend, once the stopped engine made its last call with it
        (an OpenVINO model or ONNX session is never called from two threads at once), or None:
        there is none, a newer start came, or the engine's last call did not end within
        ``HANDOVER_WAIT_S`` (it closes the backend itself then). Worker thread."""
        h = req.handover
        if h is None:
            return None
        deadline = time.monotonic() + HANDOVER_WAIT_S
        closed: _StartRequest | None = None
        with h.lock:
            while h.state == "taken" and h.owner is req and not self._is_stale(req):
                # A start this one superseded has it: given back once that start is closed,
                # by its own worker, or here if its result was left for the event loop.
                taker, thread = h.taker, h.taker_thread
                if taker is not closed and thread is not None and not thread.is_alive():
                    closed = taker
                    h.lock.release()
                    try:
                        if taker is not None and self._is_stale(taker) and self._claim(taker):
                            taker.close()
                    finally:
                        h.lock.acquire()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                h.lock.wait(min(left, 0.1))
            if h.owner is not req or h.state != "open" or self._is_stale(req):
                return None
            h.state, h.taker, h.taker_thread = "taken", req, threading.current_thread()
            be, h.be = h.be, None
        if be is None:
            be = h.engine.take_backend(HANDOVER_WAIT_S)
        if be is None:  # the engine closes it: no later start is to wait for it
            with h.lock:
                h.state, h.taker, h.taker_thread = "dropped", None, None
                h.lock.notify_all()
            return None
        # Built for this scale; one picked since is applied as to a model this start loaded.
        req.loaded_scale = h.scale
        if getattr(be, "adaptive", False) and callable(getattr(be, "reset", None)):
            # `auto` starts over at full size with the new source's rate, as a load's would:
            # the old source's steps down and frame budget are not this one's.
            be.reset()
            be.follow_rate(_target_fps(req))
        req.load_messages = [replace(m) for m in h.messages]
        req.messages.extend(req.load_messages)
        req.model_stamp = h.stamp
        return be

    def _drop_handover(self, h: _Handover | None) -> None:
        """Let go of ``h`` unless a start took it: its backend is closed (off the GUI thread),
        now if its engine's run is over, else by that engine when it is."""
        if h is None:
            return
        with h.lock:
            h.owner = None  # a start holding it closes it, not gives it back
            h.lock.notify_all()
            if h.state != "open":
                return
            h.state = "dropped"
            be, h.be = h.be, None
        if be is None:
            be = h.engine.take_backend(0)
        if be is not None:
            # An OpenVINO model may take a moment to let go; join() waits for it at exit.
            closer = threading.Thread(
                target=_close_quietly, args=(be,), name="sharpcam-close", daemon=True
            )
            self._closers = [c for c in self._closers if c.is_alive()]
            self._closers.append(closer)
            closer.start()

    def _open_in_worker(
        self, req: _StartRequest, prev: tuple[threading.Thread, _StartRequest] | None
    ) -> None:
        self._after_previous(prev)
        _wait_stopped(req.after)
        _wait_devices_closed(req.devices)
        if self._is_stale(req):  # superseded while waiting: nothing to open
            req.source_opened()
            req.released.set()
        else:
            _open_request(
                self._api, req, stale=lambda: self._is_stale(req), take=self._take_handover
            )
        if self._is_stale(req):
            # Superseded or stopped while opening: close it here, off the GUI thread.
            if self._claim(req):
                req.close()
            return
        try:
            self._opened.emit(req)  # queued: _on_opened runs in the GUI thread
        except RuntimeError:  # the bridge was deleted meanwhile
            if self._claim(req):
                req.close()

    def _on_opened(self, req: _StartRequest) -> None:
        if not self._claim(req):
            return  # join() closed it already
        if req.generation != self._generation:
            # A newer start or a stop came after the worker's check. A camera release can take
            # a while: not on the GUI thread (join() waits for it at exit).
            closer = threading.Thread(target=req.close, name="sharpcam-close", daemon=True)
            self._closers.append(closer)
            closer.start()
            return
        self._opening = None
        self._finish_start(req)

    def _finish_start(self, req: _StartRequest, *, wait: bool = False) -> bool:
        """Start the engine on what ``req`` opened and say so, in the GUI thread (``wait``:
        the wanted virtual camera device, too, is opened in it)."""
        # A stand-in for a camera not plugged in is held back from calls as the fallback is:
        # the people in the call would see the bundled clip instead of the person.
        self.using_fallback = req.using_fallback or req.stand_in
        self.source_error = req.source_error
        # The device held over the restart: handed on below, or closed (no video, nothing
        # sent to calls, or opened again at another format).
        held, self._held = self._held, None
        for msg in req.messages:
            self._say(msg)
        if req.src is None or req.be is None:
            self._close_held(held)
            return self._start_failed(req)
        scale = req.scale if req.loaded_scale is None else req.loaded_scale
        if not _same_scale(self._scale, scale):
            # The processing size changed while the model loaded (set_scale): the model that
            # loaded is put at the new size, as a load would have, instead of a second load.
            rescaled = _rescaled(req, self._scale)
            if rescaled is not None:
                req.be, scale = rescaled, self._scale
        # The next start opens its camera once this close has returned (see _Stopping).
        src, be = _WatchedSource(req.src), req.be
        api = self._api
        feed = object()
        with self._lock:
            self._feed = feed
        try:
            eng = api.Engine(
                src,
                be,
                sinks=[],
                live=True,
                # The current values: the slider may have moved while the camera opened.
                strength=self._strength,
                enabled=self._enabled,
                denoise=self._denoise,
                on_preview=functools.partial(self._on_preview, feed),
                preview_fps=self._preview_fps,
                on_error=functools.partial(self._on_error, feed),
                warning=req.warning,
                close_backend=True,
                # OpenVINO compiles on its first call: those frames were dropped as the clip
                # or camera began ("dropped 18" in the status bar of a clip just started).
                warm_up=True,
            )
            eng.start()
        except Exception as exc:
            with self._lock:
                self._feed = None
            self._say(describe_error(exc))
            self._close_held(held)
            return self._start_failed(req)
        self._watch_end(eng)
        req.adopted = True
        req.released.set()  # the engine owns the camera now: the next start stops it first
        self._source, self._backend, self._engine = src, be, eng
        self._running_scale = scale
        self._backend_spec = (req.backend, req.model)
        self._start_warning = req.warning
        self._load_messages = req.load_messages
        self._model_stamp = req.model_stamp
        self._model_failure = (
            ModelFailure(req.model_msg, req.model_retry)
            if req.warning and req.model_msg is not None
            else None
        )
        self._playing = None if self.using_fallback else (req.source, req.source_name)
        self._camera_absent = False  # see retarget_camera
        # What the engine reads, for the message should it end: a file's end is no camera's.
        self._reading = _kind_or_camera(req.fallback_source if req.using_fallback else req.source)
        self._label = backend_label(be)
        if req.warning and req.model_msg is not None:
            # The engine repeats this warning in its stats: it was shown already.
            self._warnings_shown = {req.warning: req.model_msg}
        self.backend_changed.emit(self._label)
        self._stats_timer.start()
        self.running_changed.emit(True)
        if self._want_virtual and not self.using_fallback:
            fmt, kept = self._virtual_format_now(), self._virtual_format
            # Reopened only at another size or rate (a camera after a file): what it had.
            if held is not None and kept is not None and fmt[:2] == kept[:2]:
                self._send_to(held.end(handed_on=True), held.device, fmt)
            else:
                self._close_held(held)  # the next open waits for its close
                replaces = held.sink if held is not None else None
                self._open_virtual(asked=False, wait=wait, replaces=replaces)
        else:
            self._close_held(held)
        if not _same_scale(self._scale, scale):
            # Changed while this start's model loaded, and _rescaled could not apply it (the
            # model failed to load, which this retries; or a backend it cannot unwrap).
            self._swap_to(self._scale)
        self.start_finished.emit(True)
        return True

    def _start_failed(self, req: _StartRequest) -> bool:
        """No video from ``req``: close what it opened and say so; returns False. A wanted
        virtual camera stays wanted: it comes on with the next start that has video."""
        req.close()
        self.start_finished.emit(False)
        return False

    # --- processing scale (worker thread, then the GUI thread) ----------------------------------
    def _is_stale_swap(self, req: _BackendSwap) -> bool:
        """A newer scale change, a start or a stop came after ``req`` (any thread; once True,
        always True)."""
        with self._lock:
            return req.generation != self._generation or req.seq != self._swap_seq

    def _swap_to(self, scale: float | str) -> None:
        """Build a backend at ``scale`` for the running engine on a worker thread;
        :meth:`_on_swap_loaded` installs it in the GUI thread. Any change still loading is
        superseded."""
        with self._lock:
            self._swap_seq += 1
            seq, generation = self._swap_seq, self._generation
        if _same_scale(scale, self._running_scale) or self._backend_spec is None:
            # Back to the scale in use (a picker scrolled through): the load on its way, if
            # any, is stale now, and the running backend is what was asked for.
            self._swapping = None
            return
        name, model = self._backend_spec
        req = _BackendSwap(
            generation=generation,
            seq=seq,
            engine=self._engine,
            scale=scale,
            backend=name,
            model=model,
            # As the start passed it: the rate the source really delivers.
            target_fps=self.source_fps or self._fps,
            size=getattr(self._source, "size", None),
        )
        # One load at a time: a person scrolling through the sizes starts one per entry, and
        # two model compiles at once only slow each other (and the stream) down; those
        # superseded while they wait load nothing.
        prev = self._swappers[-1] if self._swappers else None
        self._swappers = [(t, r) for t, r in self._swappers if t.is_alive() or not r.claimed]
        self._swapping = req
        thread = threading.Thread(
            target=self._swap_in_worker,
            args=(req, prev),
            name="sharpcam-scale",
            # A model load that never returns must not keep the process alive at exit; join()
            # gives it a bounded wait first.
            daemon=True,
        )
        self._swappers.append((thread, req))
        thread.start()

    def _swap_in_worker(
        self, req: _BackendSwap, prev: tuple[threading.Thread, _BackendSwap] | None
    ) -> None:
        if prev is not None and not prev[1].loaded.wait(OPEN_WAIT_S):
            log.warning(
                "the previous processing size's model has not loaded after %.0f s; loading "
                "the next one anyway",
                OPEN_WAIT_S,
            )
        try:
            if not self._is_stale_swap(req):
                _load_swap_backend(self._api, req)
        finally:
            req.loaded.set()
        if self._is_stale_swap(req):
            # Superseded, or its engine stopped, while it loaded: closed here, off the GUI
            # thread, and also when no event loop runs any more.
            if self._claim(req):
                req.close()
            return
        try:
            self._swap_loaded.emit(req)  # queued: _on_swap_loaded runs in the GUI thread
        except RuntimeError:  # the bridge was deleted meanwhile (the app exits)
            if self._claim(req):
                req.close()

    def _on_swap_loaded(self, req: _BackendSwap) -> None:
        if not self._claim(req):
            return  # join() closed it already
        eng = self._engine
        if self._is_stale_swap(req) or eng is None or eng is not req.engine:
            # Superseded after the worker's check: closed off the GUI thread (an OpenVINO
            # model may take a moment to let go), and join() waits for it at exit.
            closer = threading.Thread(target=req.close, name="sharpcam-close", daemon=True)
            self._closers = [c for c in self._closers if c.is_alive()]
            self._closers.append(closer)
            closer.start()
            return
        self._swapping = None
        for msg in req.messages:
            if msg not in self._said:  # the start said the same warning (a manifest missing)
                self._say(msg)
        if req.error is not None:
            # The running backend stays; the scale asked for is given up (the picker goes back).
            self._scale = self._running_scale
            if self._swap_failure is not None:
                self._take_down([self._swap_failure])
            self._swap_failure = scale_failed_message(req.scale, req.error)
            self._say(self._swap_failure)
            self.scale_change_failed.emit(self._running_scale)
            return
        be, req.be = req.be, None
        # The engine closes the old backend after its last call, on a thread of its own; the
        # stats poll says what runs once the swap is taken (at the next frame).
        eng.set_backend(be)
        self._backend = be
        self._running_scale = req.scale
        self._load_messages = list(req.messages)
        self._model_stamp = _model_stamp(be)
        if self._swap_failure is not None:
            self._take_down([self._swap_failure])
            self._swap_failure = None
        if self._start_warning is not None:
            # The start's model had not loaded (passthrough ran, and the engine said so): it
            # has now, and the poll takes that message down once the warning is gone.
            self._start_warning = None
            self._model_failure = None
            eng.set_warning(None)

    # --- GUI-thread slots ----------------------------------------------------------------------
    def _on_worker_error(self, feed: object, exc: BaseException) -> None:
        if isinstance(exc, VirtualCameraCloseError):
            if self._virtual_sink is not None and exc.sink is not self._virtual_sink:
                # An old device, and the one turned on since works: the banner would say that
                # calls may not get the video while they do, and nothing would take it down.
                log.warning("a virtual camera turned off before did not close properly: %s", exc)
                return
            # Said also when its engine was stopped already (a restart, the stream's end, closes
            # the device): a driver that failed to let go may make the next turn-on fail, a
            # restart's own included, and the setup steps alone would not say why.
            msg = close_failed_message(exc)
            self._close_failures.append(msg)
            self._say(msg)
            return
        if feed is not self._feed:
            log.info("error from a stopped engine: %s", exc)
            return
        eng = self._engine
        if eng is not None and any(e is exc for _, e in getattr(eng, "failed_sinks", ())):
            # A dropped output: the stats poll says it with the output's name and takes it down
            # when the output is back. The bare error ("RuntimeError: device gone"), coming
            # before or after that, covered it and stayed up for good.
            log.info("output failed: %s", exc)
            return
        if eng is not None and _passing_through_after(eng, exc):
            # The model failed and the engine passes frames through: its stats warning says so
            # ("Sharpening stopped"), shown now and taken down with it. The bare error said too
            # ("The sharpening model could not be loaded": it had loaded) stayed under that
            # one and came back once it was dismissed, or the stream ended.
            log.info("the model failed; passing frames through: %s", exc)
            self._poll_stats()
            return
        if eng is not None and exc is getattr(eng, "failure", None):
            # The error that ends the stream: said as such at once (the end follows).
            msg = ended_message(exc, self._reading)
            self._end_message = (exc, msg)
            self._say(msg)
            return
        self._say(describe_error(exc))

    def _on_engine_done(self, eng: Any) -> None:
        if eng is not self._engine:
            return  # stopped by stop() (a restart, the window closing): not an end of its own
        failure = getattr(eng, "failure", None)
        shown, self._end_message = self._end_message, None
        # Forgotten at once, so nothing is sent to it any more; joined on a worker: a model
        # call or a stalled output still ending must not freeze the window. A wanted virtual
        # camera stays wanted: it comes back with the video.
        self.stop(wait=False)
        if shown is not None and shown[0] is failure:
            msg = shown[1]
        else:
            msg = ended_message(failure, self._reading)
            self._say(msg)
        self.stream_ended.emit(msg)

    def retarget_camera(self, was: str, now: str | None, *, taken: bool = False) -> None:
        """The camera the stream reads as ``was`` is now ``now`` in the OS's list, or gone
        with its number another camera's (None): its next reopen goes there, or waits
        (``CameraSource.retarget``). Windows and macOS number cameras by their place in the
        list, which an unplug shifts. ``taken``: ``was`` is another camera's number now."""
        if self._engine is None or self.using_fallback or self._playing is None:
            return
        if self._playing[0] != was:
            return  # another source plays
        if now == was and not self._camera_absent:
            return  # where it was, and never said gone
        retarget = getattr(self._source, "retarget", None)
        if callable(retarget):
            # Also back at the number it had: told gone, it waits until told where it is.
            retarget(now, taken=taken)
        self._camera_absent = now is None
        if now is not None:
            self._playing = (now, self._playing[1])

    def poll_now(self) -> None:
        """Take the engine's statistics now, as the timer does: a scripted run's end must not
        miss a model failure since the last poll."""
        self._poll_stats()

    def _poll_stats(self) -> None:
        if self._engine is None:
            return
        try:
            st = self._engine.stats()
        except Exception as exc:  # a stats hiccup must not kill the GUI timer
            log.debug("stats failed: %s", exc)
            return
        sink = self._virtual_sink
        failed = getattr(self._engine, "failed_sinks", ())
        if sink is not None and any(f is sink for f, _ in failed):
            # The engine drops a sink whose write failed (v4l2loopback unloaded, OBS's camera
            # stopped): the switch must not go on saying "sending", and nothing may turn it on
            # again by itself (it would fail again): the banner asks the person to.
            self._drop_virtual_wish()
            self._release_virtual()
            self.virtual_camera_changed.emit(False, "")
        # The engine may fall back (backend failed -> passthrough): say what really runs.
        label = backend_label(
            name=getattr(st, "backend", None), provider=getattr(st, "provider", None)
        )
        if label != "—" and label != self._label:
            self._label = label
            self.backend_changed.emit(label)
        parts = list(getattr(st, "warnings", ()))
        skipped = _skipped_message(self._source)
        if skipped is not None:
            parts.append(skipped.text)
            if skipped.text not in self._warnings_shown:
                self._warnings_shown[skipped.text] = skipped
                self._say(skipped)
        # Each new warning its own message, with its own advice: joined, a model's NaN that came
        # in the poll a slow-motion warning did was read as slow motion, and got its advice.
        for part in parts:
            if part not in self._warnings_shown:
                msg = describe_error(RuntimeError(part))
                self._warnings_shown[part] = msg
                self._say(msg)
        # A warning that cleared (the camera is back) is taken down, and shown again if it
        # returns: a second loss of the camera must be as visible as the first.
        gone = {p: m for p, m in self._warnings_shown.items() if p not in parts}
        for p in gone:
            del self._warnings_shown[p]
        still = set(map(id, self._warnings_shown.values()))
        self._take_down(m for m in gone.values() if id(m) not in still)
        self.stats_updated.emit(st)

    def _say(self, msg: UserMessage) -> None:
        self._said.append(msg)
        self.message.emit(msg)

    def _take_down(self, msgs: Iterable[UserMessage]) -> None:
        """Say that ``msgs`` no longer apply (each once)."""
        gone = _unique(msgs)
        ids = {id(m) for m in gone}
        self._said = [m for m in self._said if id(m) not in ids]
        for msg in gone:
            self.message_cleared.emit(msg)

    def _output_size(self) -> tuple[int, int]:
        """``(W, H)`` the virtual camera must accept: what the source really delivers."""
        size = getattr(self._source, "size", None)
        if size:
            return int(size[0]), int(size[1])
        # The virtual camera sink letterboxes whatever arrives, so a guess is safe here.
        return self.last_frame_size or (1280, 720)


@dataclass(eq=False)
class _StartRequest:
    """One :meth:`EngineBridge.start`: what to open, then what was opened (by the worker)."""

    generation: int
    source: str
    size: tuple[int, int] | None
    fps: float
    backend: str
    model: str | None
    loop: bool
    fallback_source: str | None
    scale: float | str  # set_scale changes it while the start opens
    source_name: str = ""  # the source's name in the camera picker
    stand_in: bool = False  # plays in place of a camera not plugged in: never sent
    # The engines stopped before this start that still held their camera or virtual camera.
    after: list[_Stopping] = field(default_factory=list)
    handover: _Handover | None = None  # a stopped engine's backend this start may take
    # Virtual camera devices still closing that its source reads (SharpCam's own output, held
    # over a restart, then turned to as the camera): the source opens once they have closed.
    devices: tuple[_WatchedSink, ...] = ()
    load_messages: list[UserMessage] = field(default_factory=list)  # what the load warned
    model_stamp: tuple[str, int, int] | None = None  # the model file as loaded (_model_stamp)
    src: Any = None
    be: Any = None
    using_fallback: bool = False
    source_error: BaseException | None = None  # why `source` did not open
    messages: list[UserMessage] = field(default_factory=list)  # to emit, in order
    loaded_scale: float | str | None = None  # the scale the model load was asked for
    warning: str | None = None  # for the engine's stats: the model failed, passthrough runs
    model_msg: UserMessage | None = None
    model_retry: str = "same"  # what the window's retry of a model that failed tries
    claimed: bool = False  # under the bridge's lock: the result was used or closed
    adopted: bool = False  # an engine took src and be (its stop() closes them)
    # Set once this start holds no camera: its source closed, never opened, or adopted (the
    # next start's stop() stops that engine first). The next start opens only after it.
    released: threading.Event = field(default_factory=threading.Event)
    _src_lock: threading.Lock = field(default_factory=threading.Lock)
    _source_done: bool = False  # the worker's open_source returned (src is final)
    _src_closing: bool = False  # a thread took src and is closing it: it sets `released`

    def source_opened(self) -> None:
        """The worker's source phase is over: :meth:`release_source` may close ``src`` now."""
        with self._src_lock:
            self._source_done = True

    def release_source(self) -> None:
        """Close the source now (the start went stale), even while its model still compiles:
        the next start must not wait for a compile nobody needs to get the camera. Before the
        worker's open returns this does nothing: the worker releases it then."""
        with self._src_lock:
            if not self._source_done:
                return
        self._release_source()

    def close(self) -> None:
        """Close what this start opened (its result was claimed: nothing else will use it)."""
        with self._src_lock:
            self._source_done = True  # the worker is done with it when anyone closes all
            be, self.be = self.be, None
        if not self._give_back(be):
            _close_quietly(be)
        self._release_source()

    def _give_back(self, be: Any) -> bool:
        """Give the model this start took from a stopped engine back to its handover, for the
        start that superseded this one (True), unless no start is to have it any more."""
        h = self.handover
        if be is None or h is None:
            return False
        with h.lock:
            if h.state != "taken" or h.taker is not self:
                return False
            given = h.owner not in (None, self)
            h.state, h.taker, h.taker_thread = ("open" if given else "dropped"), None, None
            h.be = be if given else None
            h.lock.notify_all()
        return given

    def _release_source(self) -> None:
        # Taken under the lock, so exactly one thread closes the source, and only that thread
        # says `released`, after the close returns: a second caller must not let the next
        # start open the camera while the first is still closing it.
        with self._src_lock:
            if self.adopted:
                self.released.set()  # the engine owns it; the next start stops that first
                return
            src, self.src = self.src, None
            if src is None:
                if not self._src_closing:
                    self.released.set()  # never opened, or closed already
                return
            self._src_closing = True
        _close_quietly(src)
        self.released.set()


@dataclass(eq=False)
class _Handover:
    """A stopped engine's loaded backend on its way to the start that asked for the same one
    (:meth:`EngineBridge._hand_over`). ``state`` goes from ``open`` to ``taken`` (by the
    ``owner``'s worker, which then waits for the engine's last call) or ``dropped`` (closed),
    under ``lock``; a start superseded after it took it gives it back (``open`` again, in
    ``be``) for the start that superseded it."""

    engine: Any  # the stopped engine that keeps the backend (Engine.keep_backend)
    spec: tuple[str, str | None, float | str]  # backend name, model, processing scale key
    scale: float | str  # the processing scale it was built for, as the start asked for it
    messages: list[UserMessage]  # what its load warned about, said again by the next start
    stamp: tuple[str, int, int] | None  # its model file as loaded
    owner: _StartRequest | None = None  # the start it is for (a newer one takes it over)
    state: str = "open"
    taker: _StartRequest | None = None  # the start that took it, while ``taken``
    taker_thread: threading.Thread | None = None  # the thread that took it
    be: Any = None  # the backend a superseded start gave back (else the engine keeps it)
    lock: threading.Condition = field(default_factory=threading.Condition)


@dataclass(eq=False)
class _VirtualOpen:
    """One virtual camera device open (a worker thread: a driver may take seconds, or hang):
    what to open for which engine, then what came of it."""

    engine: Any  # the engine to send to once the device is open
    options: dict[str, Any]  # open_sink's keyword arguments
    asked: bool  # a set_virtual_camera(True) asked for it (not a start reopening it)
    from_camera: bool = False  # its format is a camera's (kept for later sources)
    # The device it replaces (closed at another format): what that one showed last, the new
    # one shows as soon as it opens, until the first new frame.
    replaces: _WatchedSink | None = None
    sink: Any = None  # the device, once open
    error: BaseException | None = None  # why it did not open
    claimed: bool = False  # under the bridge's lock: the device was used or closed
    # Superseded (turned off, its engine stopped): its device is closed as soon as it opens.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set once it holds no device: the open failed, or the device closed (also the engine's
    # close, after it was turned off or its engine stopped). The next open waits for it.
    released: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _BackendSwap:
    """One processing-scale change for the running engine (:meth:`EngineBridge.set_scale`): the
    backend to build on a worker thread, then what came of it."""

    generation: int  # the bridge's start generation then: a start or a stop makes it stale
    seq: int  # the change's number: a newer change makes it stale
    engine: Any  # the engine to swap it into
    scale: float | str
    backend: str  # as the start asked: create_backend's name and model
    model: str | None
    target_fps: float
    size: tuple[int, int] | None = None  # the source's frame size: the warm-up call's
    be: Any = None  # the backend, once built
    error: BaseException | None = None  # why it was not built
    messages: list[UserMessage] = field(default_factory=list)  # the load's warnings, to say
    claimed: bool = False  # under the bridge's lock: the backend was installed or closed
    # Set once the load is over (built, failed or skipped as stale): the next change's load
    # waits for it.
    loaded: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Close what the load built (its result was claimed: nothing else will use it)."""
        be, self.be = self.be, None
        _close_quietly(be)


@dataclass(eq=False)
class _Stopping:
    """An engine being stopped: :meth:`run` (a worker thread, or the caller when it waits)."""

    engine: Any
    timeout: float
    # Set once the engine's source has closed: the camera is free for the next start.
    source_closed: threading.Event
    # The virtual camera devices still closing when it was stopped (a new one may not open
    # while the old one is held).
    sinks: tuple[_WatchedSink, ...] = ()
    began: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)  # :meth:`run` is over
    in_time: bool = False  # every thread of it ended within the timeout

    def run(self) -> None:
        try:
            self.in_time = bool(self.engine.stop(timeout=self.timeout))
        except Exception as exc:
            log.warning("stopping the engine failed: %s", exc)
        finally:
            self.done.set()

    def released(self) -> bool:
        return self.source_closed.is_set() and all(s.closed.is_set() for s in self.sinks)

    def wait_released(self) -> None:
        """Wait until the stopped engine holds neither the camera nor a virtual camera device.

        The camera and the virtual camera devices only, not every thread: a model call still running (an OpenVINO recompile)
        holds no camera and must not delay a restart by seconds. ``stop()`` returning would not
        do either: a capture thread stuck in a driver's ``read()`` (deaf to ``interrupt()``)
        outlives the stop's timeout and closes the camera only once that read returns. Bounded,
        counted from the stop: by ``OPEN_WAIT_S`` for the camera; by the stop's own timeout for
        the devices, as ``stop()`` gave them before (a hung one stays hung, and turning the
        virtual camera on says so).
        """
        if not self.source_closed.wait(max(0.0, self.began + OPEN_WAIT_S - time.monotonic())):
            log.warning(
                "a stopped engine has not released its camera %.0f s after its stop began (a "
                "driver not answering); the next start opens anyway",
                OPEN_WAIT_S,
            )
        for sink in self.sinks:
            if not sink.closed.wait(max(0.0, self.began + self.timeout - time.monotonic())):
                log.info("a stopped engine's virtual camera device has not closed yet")
                return

    def finished(self) -> bool:
        """Stopped, and none of its threads is left (a model call, a sink still closing)."""
        return self.done.is_set() and bool(self.engine.join(0))


class _WatchedSource:
    """The source as the engine gets it: says when its ``close()`` has returned, whichever
    thread closed it (the capture thread once its read returns, or ``stop()``). Everything
    else (``read``, ``interrupt``, ``fps``, ...) is the source's own."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.closed = threading.Event()

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            self.closed.set()

    def __getattr__(self, name: str) -> Any:
        if name == "source":  # not set yet (a copy in the making): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)


class VirtualCameraCloseError(RuntimeError):
    """The virtual camera device raised while it closed (the device's error is the cause)."""

    sink: _WatchedSink | None = None  # the device that failed to close
    said: bool = False  # on its way to the GUI thread already (the sink said it as it closed)


class _WatchedSink:
    """The virtual camera sink as the engine gets it: says when its device has really closed,
    whoever closed it (the engine's helper after a detach, the engine at its end or after a
    failed write). Everything else is the sink's own.

    Its sends and its close hold one lock: a restart hands the open device from the stopped
    engine (maybe still in a write) to a :class:`_HeldSink`, then to the next engine, and the
    device never has two writers at once, nor a close under a send."""

    def __init__(
        self,
        sink: Any,
        on_closed: Callable[[_WatchedSink], None],
        *,
        engine: Any = None,
        closed: threading.Event | None = None,
        on_close_error: Callable[[VirtualCameraCloseError], None] | None = None,
    ) -> None:
        self.sink = sink
        # ``closed``: an event of the caller's to set, too (a _VirtualOpen's `released`).
        self.closed = closed if closed is not None else threading.Event()
        self._on_closed = on_closed
        self._on_close_error = on_close_error
        self.engine = engine  # the engine it was given to
        self._lock = threading.Lock()
        self._over = False  # under the lock: its close has returned (or raised)

    def write(self, frame: Any) -> None:
        with self._lock:
            self.sink.write(frame)

    def _repeat_last(self, repeat: Callable[[], None]) -> None:
        with self._lock:
            # A held device closed meanwhile (turned off during a restart): nothing to send.
            if not self._over:
                repeat()

    @property
    def is_closed(self) -> bool:
        """Its close has returned: what it had to say about that is on its way already (unlike
        :attr:`closed`, which may be set a moment later)."""
        return self._over

    def close(self) -> None:
        first, error = False, None
        try:
            with self._lock:
                first = not self._over
                try:
                    self.sink.close()
                finally:
                    self._over = True
        except Exception as exc:
            # Its own type: the bridge drops a stopped engine's errors (its stream is gone), but
            # the device outlives the stream, and the next turn-on may fail on it.
            error = VirtualCameraCloseError(str(exc).strip() or type(exc).__name__)
            error.sink = self
            raise error from exc
        finally:
            try:
                if first:
                    # Said before `closed` is set: the next open waits for that, and what comes
                    # of it is queued to the GUI thread behind these, so a turn-on that fails
                    # finds the close failure said and the device closed (its setup steps cite
                    # the failure, not "still closing"). Set first, an open could overtake them.
                    if error is not None and self._on_close_error is not None:
                        self._on_close_error(error)
                    self._on_closed(self)
            finally:
                self.closed.set()

    def last_picture(self) -> Any:
        """What the device was sent last (RGB, its size), or None: none yet, a sink that keeps
        none, or a send that has not returned in a moment (a stuck driver: not waited for)."""
        get = getattr(self.sink, "last_picture", None)
        if get is None or not self._lock.acquire(timeout=0.2):
            return None
        try:
            return get()
        finally:
            self._lock.release()

    def describe(self) -> str:
        describe = getattr(self.sink, "describe", None)
        return str(describe()) if describe is not None else type(self.sink).__name__

    def __getattr__(self, name: str) -> Any:
        if name == "sink":  # not set yet (a copy in the making): no recursion
            raise AttributeError(name)
        attr = getattr(self.sink, name)
        if name == "repeat_last":  # the engine's keep-alive sends too: under the lock
            return functools.partial(self._repeat_last, attr)
        return attr


class _HeldSink:
    """The open virtual camera device between two engines (a restart that keeps its format):
    sent its last frame every ``RESEND_S`` on a thread of its own while the next source opens
    (seconds for a camera), so a call app does not give the device up (Chrome restarts one
    silent for 1 s) and, with v4l2loopback's ``exclusive_caps=1``, the device stays a camera
    at all (one with no writer is none). Its sends take the sink's lock: one that the stopped
    engine is still writing is waited for, and the next engine's writes wait for a resend."""

    def __init__(self, sink: _WatchedSink, device: str) -> None:
        self.sink = sink
        self.device = device
        self._repeat = getattr(sink, "repeat_last", None)
        self._end = threading.Event()
        self._final = False
        self.thread = threading.Thread(target=self._run, name="sharpcam-keep-virtual", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self._repeat is None:
            return  # a device that keeps no frame: nothing to send again
        # The first at once: the stopped engine's last send may be RESEND_S old already (it
        # repeats its last frame too while none comes: a slow model, a camera stalled), and
        # waiting RESEND_S more left the device silent 1 s, as long as a call app waits.
        wait = 0.0
        while True:
            ended = self._end.wait(wait)
            if ended and not self._final:
                return
            try:
                self._repeat()
            except Exception as exc:  # the next engine's write says it if the device is gone
                log.warning("the virtual camera held over a restart failed: %s", exc)
                return
            if ended:
                return  # that was the last, for the next engine
            wait = RESEND_S

    def end(self, *, handed_on: bool) -> _WatchedSink:
        """Stop sending (any thread); ``handed_on``: the next engine has it, whose first send
        of its own may be ``RESEND_S`` away, so the last frame goes once more now."""
        self._final = handed_on
        self._end.set()
        return self.sink


def _show_last_picture(req: _VirtualOpen) -> None:
    """Show on the device ``req`` opened what the one it replaces showed last (its open's
    thread, before the engine has it): the first new frame may be seconds away, and a call app
    gives up a camera silent for 1 s (Chrome). The engine resends it every ``RESEND_S`` until
    then (``repeat_last``)."""
    old, show = req.replaces, getattr(req.sink, "show", None)
    picture = old.last_picture() if old is not None and show is not None else None
    req.replaces = None  # its picture is not kept for as long as the request is
    if picture is None:
        return
    try:
        show(picture)
    except Exception as exc:  # the engine's first write says it if the device is gone
        log.warning("the reopened virtual camera did not take the last picture: %s", exc)


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def _device_name(sink: _WatchedSink) -> str:
    return str(getattr(sink, "device", "") or "")


def _wait_devices_closed(devices: Iterable[_WatchedSink]) -> None:
    """Wait (``OPEN_WAIT_S`` at most) until ``devices`` have closed."""
    deadline = time.monotonic() + OPEN_WAIT_S
    for sink in devices:
        if not sink.closed.wait(max(0.0, deadline - time.monotonic())):
            log.warning("a virtual camera device the next source reads has not closed yet")
            return


def _wait_stopped(stopped: Iterable[_Stopping]) -> None:
    """Wait (bounded, see :meth:`_Stopping.wait_released`) until the engines stopped before a
    start let go of the camera and the virtual camera device."""
    for s in stopped:
        s.wait_released()


def _open_request(
    api: Any,
    req: _StartRequest,
    stale: Callable[[], bool] = lambda: False,
    take: Callable[[_StartRequest], Any] = lambda req: None,
) -> None:
    """Open ``req``'s source (or the fallback) and backend (or passthrough), collecting the
    messages to show. Any thread, no Qt: this is the slow part of a start. A start that went
    ``stale`` meanwhile skips the backend (a model compile for nothing). ``take`` gives the
    backend a stopped engine hands on, if any (no load then)."""
    try:
        _open_source(api, req)
    finally:
        req.source_opened()
    if stale():
        req.release_source()  # superseded while the camera opened: free it at once
        return
    if req.src is None:
        req.released.set()
        return
    try:
        _open_backend(api, req, take, stale)
    except Exception as exc:  # the passthrough fallback itself failed: no video, said why
        req.messages.append(describe_error(exc))
        req.close()


def _tone_map(req: _StartRequest) -> None:
    """A picked HDR video (a phone's clip) plays tone mapped to SDR (``tone_map_hdr``):
    read as it was, its saturated colours were shifted. Where that cannot be done, a message
    says the colours will not look right. The bundled demo clip is SDR: not asked (an FFmpeg
    run at every start)."""
    from app.camera_list import DEMO_CLIP
    from engine.remux import tone_map_hdr
    from engine.sources import VideoFileSource

    src = req.src
    if not isinstance(src, VideoFileSource) or src.path.resolve() == DEMO_CLIP:
        return
    try:
        done = tone_map_hdr(src)
    except Exception as exc:  # never at the cost of the video itself
        log.warning("the HDR check of %s failed: %s", src.path.name, exc)
        return
    if done is not None and done.problem is not None:
        req.messages.append(
            UserMessage(
                "warning",
                f"{src.path.name} is HDR video ({done.transfer}): its colours will not look "
                "right, as SharpCam works in 8-bit SDR.",
                f"It could not be tone mapped ({done.problem}). Convert it to SDR first.",
            )
        )


def _skipped_message(source: Any) -> UserMessage | None:
    """What to say of the images a looping folder source passes over as unreadable (its
    ``unreadable``: at their latest try, each tried again every pass), None while there are
    none. Its text changes with their count, so a file found unreadable later in the loop is
    said again with the rest, and one that reads again takes it down."""
    skipped = getattr(source, "unreadable", None)
    if not skipped:
        return None
    n, total = len(skipped), len(getattr(source, "files", ()) or ()) or len(skipped)
    folder = getattr(getattr(source, "path", None), "name", "") or "the folder"
    names = ", ".join(Path(f).name for f, _ in skipped[:3]) + (
        f" and {n - 3} more" if n > 3 else ""
    )
    photos = "photo" if total == 1 else "photos"
    return UserMessage(
        "warning",
        f"{n} of the {total} {photos} in {folder} cannot be read and "
        f"{'is' if n == 1 else 'are'} skipped: {names}",
        f"{'The other one plays' if total - n == 1 else 'The others play'} on. Check that "
        f"{'it opens' if n == 1 else 'they open'} in another "
        f"program. First problem: {skipped[0][1]}",
    )


def _open_source(api: Any, req: _StartRequest) -> None:
    source, fallback_source, fps = req.source, req.fallback_source, req.fps
    options = _loop_opt(req.loop)
    if _kind_or_camera(source) == "folder":
        # A folder's photos are separate pictures, as a save of it takes them: one that cannot
        # be read stopped the stream for good (or, first in the folder, never let it play).
        options["skip_unreadable"] = True
    try:
        req.src = api.open_source(source, live=True, size=req.size, fps=fps, **options)
        _tone_map(req)
        return
    except Exception as exc:
        req.source_error = exc
        msg = describe_error(exc, context="camera")
    # A file that failed is no camera: "Camera problem ... close other apps that use the
    # camera, check the cable" sent a person with a damaged video to their webcam's cable.
    kind = _kind_or_camera(source)
    if kind != "camera":
        msg = replace(msg, text=_source_problem(kind, msg.text))
    fallback_error = None
    if fallback_source is not None and fallback_source != source:
        try:
            req.src = api.open_source(
                fallback_source, live=True, size=None, fps=fps, **_loop_opt(True)
            )
            req.using_fallback = True
        except Exception as exc2:
            fallback_error = exc2
    if req.using_fallback:
        # Nothing retries a camera that failed to open: the advice must not promise a
        # reconnect, and must say that the picture is the demo (calls are not sent it).
        msg = replace(
            msg,
            advice="Showing the demo clip instead. "
            + (
                "Close other apps that use the camera, check the cable, then pick the camera "
                "again above."
                if kind == "camera"
                else "Check that it opens in another program, or open another file (Open…) or pick "
                "another source above."
            ),
        )
    req.messages.append(msg)
    if fallback_error is not None:
        # The demo clip is a file: "Camera problem: cannot open .../demo.mp4" blamed a camera.
        said = describe_error(fallback_error, context="camera")
        fallback_kind = _kind_or_camera(fallback_source)
        if fallback_kind != "camera":
            said = replace(said, text=_source_problem(fallback_kind, said.text))
        req.messages.append(said)
    if not req.using_fallback:
        # No video at all, and nothing retries: the generic advice's reconnect never comes.
        # The demo clip is offered only where it was not what failed to open.
        demo_failed = fallback_error is not None or source == fallback_source
        first = (
            "Close other apps that use the camera, check the cable, then pick the camera "
            "again above"
            if kind == "camera"
            else "Check that it opens in another program, or open another file (Open…) or pick "
            "another source above"
        )
        advice = first + ("." if demo_failed else ", or pick the demo clip.")
        req.messages = [replace(m, advice=advice) for m in req.messages]


def _kind_or_camera(source: Any) -> str:
    """:func:`engine.source_kind` of ``source``; "camera" where it cannot tell."""
    try:
        return source_kind(source)
    except Exception:  # noqa: BLE001 - a message's wording must not fail a start
        return "camera"


def _open_backend(
    api: Any,
    req: _StartRequest,
    take: Callable[[_StartRequest], Any] = lambda req: None,
    stale: Callable[[], bool] = lambda: False,
) -> None:
    from engine.backends import collect_warnings

    # Read once, as late as can be: the GUI thread's set_scale may change it until now.
    req.loaded_scale = scale = req.scale
    be = take(req)
    if be is not None:
        req.be = be
        return
    if stale():
        # Superseded while it waited (up to HANDOVER_WAIT_S) for the stopped engine's last
        # model call: a load and compile now would be for nothing, beside the newer start's.
        return
    try:
        # Only this thread's backend warnings: the GUI thread goes on meanwhile, and Python's
        # warnings machinery (catch_warnings) is process-wide.
        with collect_warnings() as caught:
            req.be = api.create_backend(
                req.backend, model=req.model, scale=scale, target_fps=_target_fps(req)
            )
        req.model_stamp = _model_stamp(req.be)
        req.load_messages = _load_warnings(caught)
        req.messages.extend(req.load_messages)
    except Exception as exc:
        req.model_msg = describe_error(exc, context="model", backend=req.backend, model=req.model)
        req.model_retry = load_retry(exc, backend=req.backend, model=req.model)
        req.messages.append(req.model_msg)
        req.warning = req.model_msg.text
        req.be = api.create_backend("passthrough")


def _target_fps(req: _StartRequest) -> float:
    """The rate ``scale="auto"`` keeps up with: what the source really delivers."""
    return float(getattr(req.src, "fps", 0) or 0) or req.fps


def _rescaled(req: _StartRequest, scale: float | str) -> Any:
    """``req``'s backend, loaded at ``req.loaded_scale``, at processing ``scale`` without loading
    its model again; None where that cannot be told apart (a second load has to do).

    ``create_backend`` wraps the model it loaded in a ``ScaledBackend`` below full size and
    leaves it bare at full size (passthrough always); the wrapper holds no model, only the
    scale, so a new one around the same model is what a load at ``scale`` builds.
    """
    from engine.backends import BackendError, ScaledBackend, parse_scale

    be = req.be
    if req.warning is not None:
        return None  # passthrough stands in for a model that failed: a load at ``scale`` retries
    if req.backend == "passthrough":
        return be  # the same at every scale
    if type(be) is ScaledBackend:
        # Not closed: that would close the model it hands on. It holds only resize buffers.
        model = be.inner
    elif req.loaded_scale is not None and _same_scale(req.loaded_scale, 1.0):
        model = be
    else:
        return None  # another wrapper (a test's fake): what it wraps, and how, is unknown
    if getattr(model, "fixed_size", False):
        # A model of one input size: the load says what a scale does to it (auto's warning,
        # a refusal), which a wrapper built here would say to no one.
        return None
    try:
        parsed = parse_scale(scale)
        if parsed == 1.0:
            return model
        return ScaledBackend(model, parsed, target_fps=_target_fps(req))
    except BackendError:
        return None  # a scale create_backend refuses: the load says why (scale_change_failed)


def _load_swap_backend(api: Any, req: _BackendSwap) -> None:
    """Build ``req``'s backend as a start builds its own (:func:`_open_backend`), but with no
    passthrough fallback: a failure leaves the running backend in place (``req.error``). Any
    thread, no Qt."""
    from engine.backends import collect_warnings, warm_up

    try:
        with collect_warnings() as caught:
            req.be = api.create_backend(
                req.backend, model=req.model, scale=req.scale, target_fps=req.target_fps
            )
            if req.size:
                # Its first call compiles (OpenVINO): here, while the running backend goes on,
                # not in the stream, whose frames it dropped; and a model that fails at this
                # scale leaves the running one in place instead of passthrough.
                warm_up(req.be, req.size, strict=True)
        req.messages.extend(_load_warnings(caught))
    except Exception as exc:
        if req.be is not None:
            _close_quietly(req.be)
            req.be = None
        req.error = exc
        log.warning("the model did not load at processing scale %s: %s", req.scale, exc)


def _model_stamp(backend: Any) -> tuple[str, int, int] | None:
    """The model file ``backend`` runs, as ``(path, mtime_ns, size)``; None without one (or
    gone): a start hands the backend on only while its file is the one it loaded."""
    return _file_stamp(getattr(getattr(backend, "model", None), "path", None))


def _same_file(stamp: tuple[str, int, int] | None) -> bool:
    """Whether the model file of ``stamp`` (a :func:`_model_stamp`) is still the one loaded."""
    return stamp is None or _file_stamp(stamp[0]) == stamp


def _file_stamp(path: Any) -> tuple[str, int, int] | None:
    """``path`` as ``(path, mtime_ns, size)`` (see :func:`_model_stamp`); None for none."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return str(path), st.st_mtime_ns, st.st_size


def _load_warnings(caught: Iterable[str]) -> list[UserMessage]:
    """The messages for what a backend's load warned about (``collect_warnings``)."""
    out = []
    for text in caught:
        if "using the float model" in text:
            # A damaged (or foreign) int8 file: verified and rejected, the float one runs;
            # advice about adding a manifest would be wrong.
            advice = (
                "SharpCam keeps sharpening with the float model, a little slower. "
                "Reinstall the weights to get the faster int8 model back."
            )
        elif "manifest" in text:
            # A model without a manifest beside it: it runs, but unverified.
            advice = (
                "It runs, but SharpCam could not verify it. Ship a manifest.json with "
                "its sha256 beside the model to silence this."
            )
        else:
            # e.g. a TensorRT engine cache that cannot be written: the model was verified and
            # runs; the manifest advice said it could not be.
            advice = "SharpCam keeps sharpening; only what this line names is affected."
        out.append(UserMessage("warning", text, advice))
    return out


def _scale_key(scale: float | str) -> float | str:
    # "auto", 0.75 and "0.75" as one: the window passes text, a caller may pass numbers.
    if str(scale).strip().lower() == "auto":
        return "auto"
    try:
        return float(scale)
    except ValueError:
        return str(scale)


def _same_scale(a: float | str, b: float | str) -> bool:
    return _scale_key(a) == _scale_key(b)


def _scale_words(scale: float | str) -> str:
    key = _scale_key(scale)
    if key == "auto":
        return "auto"
    if isinstance(key, float):
        return "full size" if key >= 1.0 else f"{key * 100:g} % size"
    return str(key)


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


def _passing_through_after(eng: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is the model failure ``eng`` now passes frames through after, as its
    stats warning says (``backend NAME failed (EXC); passing frames through``)."""
    try:
        warning = str(getattr(eng.stats(), "warning", None) or "")
    except Exception:  # a stats hiccup: the error is said as any other
        return False
    return f"({exc}); passing frames through" in warning


def _unique(msgs: Any) -> list[UserMessage]:
    # By identity: equal texts may come from different polls, each shown (and cleared) once.
    out: dict[int, UserMessage] = {}
    for m in msgs:
        out.setdefault(id(m), m)
    return list(out.values())


def _loop_opt(loop: bool) -> dict[str, Any]:
    # Only file sources take ``loop``; cameras would reject the unknown option.
    return {"loop": True} if loop else {}


def _first_line(exc: BaseException) -> str:
    # The engine's "no virtual camera" errors go on with the setup steps, line after line.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _close_quietly(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:
        log.debug("close failed: %s", exc)
