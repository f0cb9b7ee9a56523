"""The engine's one frame format, and the conversion every source applies at its boundary.

Inside the engine a frame is always ``(H, W, 3) uint8 RGB``, C-contiguous. Whatever a camera,
a video decoder or an image file hands over (BGR, grey, BGRA, 16-bit, float) is converted once,
by :func:`to_rgb8`, where it enters; nothing downstream checks or converts again.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Frame",
    "check_rgb8",
    "even_size",
    "fit_cuts",
    "fit_to",
    "image_size",
    "opencv_name",
    "pictures_differ",
    "resize_to",
    "to_rgb8",
]

_SHAPE_ERROR = "expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {}"


@dataclass(slots=True)
class Frame:
    """One frame travelling through the engine.

    Attributes:
        image: ``(H, W, 3) uint8 RGB``, C-contiguous. Sources hand out a fresh (or never
            written) array per frame; the engine never writes into a source's array.
        index: 0-based position of the frame in its source.
        t_capture: ``time.perf_counter()`` when the frame was captured or decoded; the origin of
            the end-to-end latency the engine reports.
    """

    image: np.ndarray
    index: int
    t_capture: float

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the image, the order OpenCV and the rest of the API use for sizes."""
        return (self.image.shape[1], self.image.shape[0])


def opencv_path_problem(path: object) -> str | None:
    """Why OpenCV cannot be handed ``path`` by name, or None. A name whose bytes are not UTF-8
    (a Latin-1 name from an old zip or a Samba share) reaches Python with lone surrogates,
    and OpenCV's Python binding crashes the process on such a string (a segmentation fault,
    no message)."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str):
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"the name {text.encode('utf-8', 'backslashreplace').decode()} is not valid "
            "UTF-8, which OpenCV cannot open: rename it"
        )
    return None


#: OpenCV's Python binding hands a file name to FFmpeg in Windows' ANSI code page.
_WINDOWS = sys.platform == "win32"


def _short_name(path: str) -> str | None:
    """Windows' short (8.3) name of the existing ``path``, or None (none kept, no file)."""
    import ctypes
    from ctypes import wintypes

    get = ctypes.windll.kernel32.GetShortPathNameW  # type: ignore[attr-defined]
    get.argtypes = [wintypes.LPCWSTR, wintypes.LPWSTR, wintypes.DWORD]
    get.restype = wintypes.DWORD
    size = get(path, None, 0)
    if not size:
        return None
    buffer = ctypes.create_unicode_buffer(size)
    return buffer.value if get(path, buffer, size) else None


#: What FFmpeg reads as a protocol before a name's first colon (``rtsp:``, ``clip:``).
_URL_SCHEME = re.compile(r"[A-Za-z0-9+.-]+:")


def opencv_name(path: str | os.PathLike[str]) -> str:
    """The name to give OpenCV's video reader or writer for the existing file ``path``:
    ``path`` itself, or on Windows, where the name holds characters outside ASCII, its short
    (8.3) name. There OpenCV passes the name to FFmpeg in the ANSI code page: a video under
    ``C:\\Users\\José`` did not open ("not a video"), and a writer given ``résultat.avi``
    left it empty and wrote its frames to a file of a garbled name.

    Raises:
        ValueError: why no name works: not UTF-8 (:func:`opencv_path_problem`), or on
            Windows a drive that keeps no short names.
    """
    problem = opencv_path_problem(path)
    if problem:
        raise ValueError(problem)
    text = os.fspath(path)
    if not _WINDOWS and _URL_SCHEME.match(text) and not os.path.isabs(text):
        # "clip:1.mp4": FFmpeg, under OpenCV, took "clip" for a protocol ("not a video").
        # Not on Windows, where no name holds a colon but "C:x.mp4", a drive's.
        text = os.curdir + os.sep + text
    if not _WINDOWS or text.isascii():
        return text
    short = _short_name(os.path.abspath(text))
    if short is not None and short.isascii():
        return short
    raise ValueError(
        f"OpenCV on Windows opens videos by names of plain (ASCII) characters only, and "
        f"{text} has no such short name (its drive keeps no 8.3 names): move it to, or name "
        "it, a path of plain letters"
    )


def check_rgb8(image: object, what: str) -> np.ndarray:
    """``image`` itself when it is an engine frame's ``(H, W, 3) uint8`` array, else an error
    naming ``what`` (a sink: ``"video out.mp4"``) and what was given.

    For the outputs' boundary: a frame of another layout written straight to a sink (not
    through the engine, whose frames always fit) reached the encoder, which wrote grey or
    16-bit frames as garbage and raised an OpenCV assertion for float ones.

    Raises:
        TypeError: not a numpy array, or not uint8 (as ``pyvirtualcam`` does for a dtype).
        ValueError: not ``(H, W, 3)``, or empty.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{what}: expected an (H, W, 3) uint8 RGB frame, got {type(image).__name__}"
        )
    # The message only when raising: this runs for every frame of every sink.
    if image.dtype != np.uint8:
        raise TypeError(
            f"{what}: expected an (H, W, 3) uint8 RGB frame, got {tuple(image.shape)} {image.dtype}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(
            f"{what}: expected an (H, W, 3) uint8 RGB frame, got {tuple(image.shape)} {image.dtype}"
        )
    return image


def image_size(img: np.ndarray) -> tuple[int, int]:
    """``(W, H)`` of an ``(H, W, ...)`` image."""
    return (int(img.shape[1]), int(img.shape[0]))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Map any supported dtype to uint8 keeping the channel layout ``(H, W[, C])``."""
    dt = img.dtype
    if dt == np.uint8:
        return img
    if dt == np.uint16:
        # Full 16-bit range -> 8 bits with rounding (65535 -> 255, 32768 -> 128).
        return cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    if dt == np.bool_:
        return img.view(np.uint8) * np.uint8(255)
    if np.issubdtype(dt, np.floating):
        # Float images are [0, 1] by convention (OpenCV, skimage, the model contract).
        f = img.astype(np.float32, copy=False)
        # fmax/fmin, not clip: they map NaN to the bound (0, black) where clip kept it, and a
        # NaN cast to uint8 is undefined (numpy warns "invalid value encountered in cast").
        g = np.fmax(f * 255.0 + 0.5, 0.0)
        return np.fmin(g, 255.0, out=g).astype(np.uint8)
    raise TypeError(f"expected a uint8, uint16, bool or float image, got {dt}")


def to_rgb8(img: np.ndarray, *, bgr: bool = True, inplace: bool = False) -> np.ndarray:
    """Convert an image to the engine format ``(H, W, 3) uint8 RGB``, C-contiguous.

    Args:
        img: ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 3)`` colour or ``(H, W, 4)`` colour
            with alpha (dropped, not composited). dtype uint8, uint16 (full range), bool, or
            float in [0, 1] (clipped; NaN is black). Any H, W >= 1, any strides.
        bgr: channel order of colour input: True for OpenCV's BGR/BGRA (what ``imread`` and
            ``VideoCapture`` return), False for RGB/RGBA.
        inplace: allow swapping the channels of a contiguous ``(H, W, 3) uint8`` BGR input in
            its own memory (the caller gives up the array); saves one allocation per frame.

    Returns:
        ``(H, W, 3) uint8 RGB`` C-contiguous. An input already in that format with
        ``bgr=False`` is returned as is (no copy).

    Raises:
        TypeError: not a numpy array, or an unsupported dtype.
        ValueError: a shape that is not an image (message
            ``expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got (...)``), or empty.
    """
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a numpy array image, got {type(img).__name__}")
    shape = tuple(img.shape)
    if not (img.ndim == 2 or (img.ndim == 3 and shape[2] in (1, 3, 4))):
        raise ValueError(_SHAPE_ERROR.format(shape))
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got {shape}")

    owned = False  # True once img is a temporary of ours, so converting in place is safe
    if not img.flags.c_contiguous:
        img = np.ascontiguousarray(img)
        owned = True
    if img.dtype != np.uint8:
        img = _to_uint8(img)
        owned = True
    if img.ndim == 3 and img.shape[2] == 1:
        img = img.reshape(img.shape[0], img.shape[1])

    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    if not bgr:
        return img
    if inplace or owned:
        # A 3-channel swap reads each pixel before writing it, so dst may alias src.
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """``(W, H)`` rounded down to even sides, at least 2: video encoders with 4:2:0 chroma
    (H.264, mp4v, the virtual cameras' I420 / NV12) need them, and OpenCV would crop odd ones
    silently."""
    w, h = size
    return (max(2, w - w % 2), max(2, h - h % 2))


def resize_to(img: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Resize ``(H, W, C)`` ``img`` to ``size`` ``(W, H)``; returns ``img`` itself when it fits.

    ``out`` (``(H', W', C)`` of the target size, same dtype) is written into when given, so a
    sink that always resizes allocates its buffer once. Area interpolation when shrinking
    (no aliasing), bilinear when enlarging.
    """
    w, h = size
    if img.shape[1] == w and img.shape[0] == h:
        return img
    shrinking = w * h < img.shape[0] * img.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if out is not None and out.shape[:2] == (h, w) and out.dtype == img.dtype:
        return cv2.resize(img, (w, h), dst=out, interpolation=interp)
    return cv2.resize(img, (w, h), interpolation=interp)


def fit_cuts(img_size: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether :func:`fit_to` takes an image of ``img_size`` ``(W, H)`` to ``size`` by cutting
    its last column or row (at most one pixel over on each side, within 1 % or so), not by
    resampling it: what a note on an odd-sized video's output may say of it."""
    (iw, ih), (w, h) = img_size, size
    return 0 <= iw - w <= min(1, 0.01 * w + 0.5) and 0 <= ih - h <= min(1, 0.01 * h + 0.5)


def fit_to(img: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Scale ``img`` to fit ``size`` keeping its aspect ratio, centred on black bars.

    Letterbox (bars top and bottom) or pillarbox (bars left and right): nothing of the picture
    is cut and nothing is stretched, for outputs whose size cannot follow the source's (a
    virtual camera keeps the size it was opened at, a video file its first frame's). Bars that
    would be at most 1 % of a side (rounded to whole pixels) are rounding: the picture fills the
    frame then, as :func:`resize_to` would, or, when ``img`` is at most one pixel larger on each
    side (an odd size into its even video), its last row or column is cut instead. Area interpolation when shrinking, bilinear
    when enlarging, as :func:`resize_to`.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` image, any dtype OpenCV resizes.
        size: ``(W', H')`` of the result.
        out: ``(H', W'[, C])`` buffer of ``img``'s dtype, written into when given so a sink
            allocates once. Its earlier content does not matter: the bars are cleared on every
            call, since the previous frame may have had another aspect ratio.

    Returns:
        ``(H', W'[, C])``: ``img`` itself when it already has ``size``, else ``out`` when it
        was given and matches, else a new array.
    """
    w, h = size
    ih, iw = img.shape[:2]
    if iw == w and ih == h:
        return img
    shape = (h, w, *img.shape[2:])
    if fit_cuts((iw, ih), size):
        # One pixel over on a side (an odd 641x359 frame into its even 640x358 video): the
        # last row or column is cut. Resampled by that pixel, each output pixel near the middle
        # blended two input pixels half and half, which took half the fine detail away.
        if out is not None and out.shape == shape and out.dtype == img.dtype:
            np.copyto(out, img[:h, :w])
            return out
        return np.ascontiguousarray(img[:h, :w])
    # The limiting side fills the frame exactly; the other is rounded and never overflows it.
    if w * ih <= h * iw:  # relatively wider than the frame: full width, bars top and bottom
        fw, fh = w, min(h, max(1, round(ih * w / iw)))
    else:
        fw, fh = min(w, max(1, round(iw * h / ih))), h
    # A bar of up to 1 % is rounding, not another aspect ratio (an odd 641x361 camera into its
    # even 640x360 output): stretch by that pixel rather than draw a black line at the edge.
    if w - fw <= 0.01 * w + 0.5 and h - fh <= 0.01 * h + 0.5:
        fw, fh = w, h
    x0, y0 = (w - fw) // 2, (h - fh) // 2
    if out is None or out.shape != shape or out.dtype != img.dtype:
        out = np.zeros(shape, img.dtype)
    else:
        # Clearing only the bars costs a fraction of a full fill; the picture overwrites the rest.
        out[:y0] = 0
        out[y0 + fh :] = 0
        out[y0 : y0 + fh, :x0] = 0
        out[y0 : y0 + fh, x0 + fw :] = 0
    interp = cv2.INTER_AREA if fw * fh < iw * ih else cv2.INTER_LINEAR
    # cv2.resize writes straight into the strided view of the picture's area, no copy.
    cv2.resize(img, (fw, fh), dst=out[y0 : y0 + fh, x0 : x0 + fw], interpolation=interp)
    return out


def pictures_differ(a: np.ndarray, b: np.ndarray, *, levels: float = 24.0) -> bool:
    """Whether two uint8 pictures ``(H, W[, C])`` are not the same picture: another shape, or
    a mean absolute difference over ``levels`` (the same picture decoded with another colour
    matrix differs by about 9; another picture, or one read at the wrong size, by 50-125)."""
    return a.shape != b.shape or float(np.abs(a.astype(np.int16) - b).mean()) > levels
