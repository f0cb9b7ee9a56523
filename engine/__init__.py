"""SharpCam's real-time engine: sources -> inference backend -> sinks, with no Qt and no training.

The public API (see docs/ARCHITECTURE.md)::

    from engine import (Frame, EngineStats, Engine, open_source, create_backend, open_sink,
                        list_backends, list_cameras, virtual_camera_status)

``create_backend``, ``list_backends`` and the model errors live in :mod:`engine.backends` and are loaded on first
use: the inference runtimes (ONNX Runtime, OpenVINO) are heavy imports that a caller needing
only sources or sinks should not pay for.
"""

from __future__ import annotations

import os
from typing import Any

# Before any engine module imports cv2: on Windows each C runtime copies the environment when it
# loads, so OpenCV never sees a value set after ``import cv2``. With hardware transforms on, Media
# Foundation (the first camera API on Windows) takes seconds to open many webcams
# (opencv/opencv#17687). setdefault so a user's own value wins; main.py does the same.
os.environ.setdefault("OPENCV_VIDEOIO_MSMF_ENABLE_HW_TRANSFORMS", "0")

from engine.frames import Frame, to_rgb8  # noqa: E402
from engine.pipeline import Engine  # noqa: E402
from engine.sinks import (  # noqa: E402
    SINKS,
    CallbackSink,
    FrameSink,
    ImageSink,
    SinkError,
    VideoFileSink,
    open_sink,
    register_sink,
)
from engine.sources import (  # noqa: E402
    SOURCES,
    CameraInfo,
    CameraNotFoundError,
    FrameSource,
    SourceError,
    list_cameras,
    open_source,
    register_source,
)
from engine.stats import EngineStats  # noqa: E402
from engine.virtualcam import (  # noqa: E402
    VirtualCameraBusy,
    VirtualCameraSink,
    VirtualCameraUnavailable,
    virtual_camera_status,
)

# Loaded from engine.backends on first access (see the module docstring).
_FROM_BACKENDS = (
    "create_backend",
    "list_backends",
    "BackendError",
    "ModelError",
    "ModelIntegrityError",
)

__all__ = [
    "BackendError",
    "ModelError",
    "ModelIntegrityError",
    "SINKS",
    "SOURCES",
    "CallbackSink",
    "CameraInfo",
    "CameraNotFoundError",
    "Engine",
    "EngineStats",
    "Frame",
    "FrameSink",
    "FrameSource",
    "ImageSink",
    "SinkError",
    "SourceError",
    "VideoFileSink",
    "VirtualCameraBusy",
    "VirtualCameraSink",
    "VirtualCameraUnavailable",
    "create_backend",
    "list_backends",
    "list_cameras",
    "open_sink",
    "open_source",
    "register_sink",
    "register_source",
    "to_rgb8",
    "virtual_camera_status",
]


def __getattr__(name: str) -> Any:
    # PEP 562: `from engine import create_backend` imports engine.backends only then.
    if name in _FROM_BACKENDS:
        from engine import backends

        value = getattr(backends, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
