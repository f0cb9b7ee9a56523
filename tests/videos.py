"""Reading back the videos tests write (frames as OpenCV decodes them: BGR uint8)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_video(path: str | Path) -> list[np.ndarray]:
    """Every frame of ``path``, ``(H, W, 3)`` uint8 BGR, in order."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames
