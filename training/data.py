"""Training data: real temporal-average blur, synthetic camera shake, webcam degradations.

Three sources feed the student, mixed by weight (``DataConfig``):

* ``raw``: folders of consecutive high-frame-rate frames (GoPro's raw 240 fps video). A random
  odd window of 7-13 frames is averaged into the blurry input and its centre frame is the sharp
  target, exactly how GoPro made its pairs: either the plain sRGB average (GoPro's ``blur``) or
  the average in linear light (``blur_gamma``).
* ``photos``: sharp photographs blurred by a random camera-shake PSF (Boracchi & Foi 2012
  trajectories) or by a real kernel from a folder (Lai et al.), or (``camera_fraction``) filmed
  by a simulated moving camera, frame by frame, and averaged like the raw frames: GoPro-style
  whole-frame blur on content the one raw clip does not have.
* ``gopro``: the GoPro dataset layout ``GOPRO_Large/{train,test}/<seq>/{blur,blur_gamma,sharp}``.

Every blurry patch then gets what a webcam stream adds: sensor noise and JPEG compression.

Speed on two CPU cores: each source image is decoded once and kept in memory as uint8; a sample
crops first and synthesises only the crop. A sample is a pure function of ``(seed, rank, index)``
so resumed runs see exactly the same data and no generator state has to be saved.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class LeakageError(RuntimeError):
    """Training and evaluation data share an image."""


# --------------------------------------------------------------------------------------------
# Image I/O and hashing
# --------------------------------------------------------------------------------------------


def list_images(root: str | Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (sorted, so ordering is stable across machines)."""
    root = Path(root)
    if root.is_file():
        return [root]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _natural_key(name: str) -> list[Any]:
    # Odd parts are the runs of digits re.split captured; not str.isdigit(), which also takes
    # digits int() refuses (a lone "²" between two numbers would raise).
    parts = re.split(r"(\d+)", name)
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(parts)]


def list_frames(folder: str | Path) -> list[Path]:
    """The frames of a raw clip in time order: its images sorted by the numbers in their names.

    Raw frames are numbered by their position in this list (1-239 train, 240-299 held out), so a
    clip named ``1.png .. 299.png`` must not sort as text (``10.png`` before ``2.png``): that
    would average frames out of time order and move held-out frames into training windows.
    When the names carry numbers (their last run of digits), those numbers must run on without
    a gap or a repeat, and every name must carry one (``ValueError`` otherwise): a missing file
    would make the frames on either side of it pass for consecutive ones and shift every later
    frame, the held-out ones included, by one position, and an image among them without a
    number (a ``cover.png``) was averaged in as a frame and turned that check off. Names with
    no number at all are taken in natural order.
    """
    paths = sorted(list_images(folder, recursive=False), key=lambda p: _natural_key(p.name))
    found = [re.findall(r"\d+", p.stem) for p in paths]
    if not any(found):
        return paths
    stray = [p.name for p, f in zip(paths, found, strict=True) if not f]
    if stray:
        shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        raise ValueError(
            f"raw frames in {folder}: {shown} {'has' if len(stray) == 1 else 'have'} no frame "
            "number among numbered frames; frames are numbered by position, so move "
            f"{'it' if len(stray) == 1 else 'them'} out of the clip's folder"
        )
    numbers = [int(f[-1]) for f in found]
    order = sorted(range(len(paths)), key=lambda i: (numbers[i], _natural_key(paths[i].name)))
    for prev, cur in zip(order, order[1:], strict=False):
        if numbers[cur] == numbers[prev]:
            raise ValueError(
                f"raw frames in {folder}: {paths[prev].name} and {paths[cur].name} are both "
                f"frame {numbers[cur]}"
            )
        if numbers[cur] != numbers[prev] + 1:
            gap = range(numbers[prev] + 1, numbers[cur])
            missing = f"frame {gap[0]} is" if len(gap) == 1 else f"frames {gap[0]}-{gap[-1]} are"
            raise ValueError(
                f"raw frames in {folder}: {missing} missing between {paths[prev].name} and "
                f"{paths[cur].name}; frames are numbered by position, so every one must be there"
            )
    return [paths[i] for i in order]


def load_image_u8(path: str | Path) -> np.ndarray | None:
    """Decode an image to ``(H, W, 3)`` uint8 RGB; ``None`` (with a warning) if unreadable.

    16-bit files are scaled down, grey is expanded, alpha dropped.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, cv2.error) as exc:  # a missing or unreadable file must not stop a run
        log.warning("skipping unreadable image %s: %s", path, exc)
        return None
    if img is None or img.size == 0:
        log.warning("skipping corrupt or unreadable image %s", path)
        return None
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        log.warning("skipping image %s with unsupported dtype %s", path, img.dtype)
        return None
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def load_image(path: str | Path) -> np.ndarray | None:
    """Decode an image to float32 RGB ``(H, W, 3)`` in [0, 1]; ``None`` with a warning if unreadable."""
    img = load_image_u8(path)
    return None if img is None else img.astype(np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] or uint8 ``(H, W, C)`` -> uint8 (rounded, clipped)."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def content_hash(path_or_array: str | Path | np.ndarray) -> str:
    """sha256 of an image's decoded pixels (with its shape), so re-saved copies still collide.

    A path is decoded first; a file that cannot be decoded is hashed by its bytes. Float arrays are
    quantised to uint8 first, so a file and its ``load_image`` result hash the same.
    """
    if isinstance(path_or_array, np.ndarray):
        arr = to_uint8(path_or_array)
    else:
        decoded = load_image_u8(path_or_array)
        if decoded is None:
            return hashlib.sha256(Path(path_or_array).read_bytes()).hexdigest()
        arr = decoded
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _hash_items(items: Mapping[str, str] | Iterable[Any]) -> dict[str, str]:
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2:
            out[str(item[0])] = str(item[1])
        elif isinstance(item, np.ndarray):
            # str() of an array is abridged: distinct images would share a name and drop out.
            out[f"image #{i}"] = content_hash(item)
        else:
            out[str(item)] = content_hash(item)
    return out


# Near-duplicate guard. A signature is a grey thumbnail (longest side NEAR_DUPLICATE_SIDE px). Two
# pictures are the same when one, shrunk by some m in [1, 1 / (1 - 2 * NEAR_DUPLICATE_MAX_CROP)]
# and turned into one of the 8 flipped and rotated forms, is found in the other: a copy with up to
# that fraction cut from any of its sides, rescaled or re-compressed (either may be the crop).
# Both are compared as band-pass images (a difference of Gaussians): a smooth gradient has no
# band-pass content, so skies, vignetting and shading no longer decide the score. With grey
# thumbnails a wind farm's sky and an upside-down blurry lion photo in ../shared scored 0.9599
# once crops were searched (against 0.96); band-passed, the best unrelated train/eval pair there
# scores 0.77 (two flat horizons), the four Urban100/Lai pairs >= 0.95, and 1932 copies of 17
# skimage and 25 Lai images (crops of 2-20 % a side, resized to as little as 1/8, JPEG 30-75,
# gamma, flipped, rotated, in both directions) >= 0.92, but for a 24 x 48 px eighth of
# skimage's page (0.86).
NEAR_DUPLICATE_SIDE = 128
NEAR_DUPLICATE_MAX_CROP = 0.2
NEAR_DUPLICATE_SCORE = 0.85
# The band: finer than 1 px is resampling and JPEG noise, coarser than ~4 px (3 % of the
# thumbnail) is shading. The centre (80 %) of the shrunk picture is searched for, so that up to
# 10 % a side of it may lie outside the other (both cut from a larger original).
_BAND_SIGMAS = (1.0, 4.0)
_CENTRE = 0.8
_MAGS = tuple((1 / (1 - 2 * NEAR_DUPLICATE_MAX_CROP)) ** (i / 4) for i in range(5))
# Searching every form, crop and position of every pair at full size would take minutes: a
# coarse pass scores them all at once (matrix products) and only hypotheses (pair, direction,
# form) scoring >= _COARSE_SCORE there are searched at full size. It compares where the edges of
# each orientation are (gradient magnitude in 8 signed directions, averaged over 8 px cells of a
# 64 px thumbnail, in a window of 4 x 4 cells around the centre): unlike grey levels this does
# not blur away at that size, and a flip or rotation of it is a permutation. The copies above
# score >= 0.82 there; on ../shared about 4.7k of the 1.2M hypotheses pass.
_COARSE_SIDE = 64
_CELL = 8
_BINS = 8
_STRIDE = 2
_GRIDS = (4, 3)  # cells a side of the window compared; 3 where a thumbnail is too narrow for 4
_COARSE_SCORE = 0.7
# A hypothesis is scored at the 5 magnifications of the coarse pass first and refined only if
# one reaches _SCAN_SCORE: a crop halfway between two of them scores >= 0.55 there (a 2 % crop of
# skimage's gravel), most unrelated pairs < 0.35.
_SCAN_SCORE = 0.45
# A band-passed template with less contrast than this (grey levels) holds no picture, only
# sensor noise and compression: it matches nothing, like a flat thumbnail. The same holds for
# the place it is compared with: normalised correlation with a flat stretch (a white page around
# a pasted photo) is 0 / 0, which OpenCV returns as 1.0; 5 unrelated photos pasted on a white
# page were refused at 1.000.
_FLAT_BAND = 0.5
# A template with fewer pixels than this (a 10:1 panorama's is ~6 x 61) finds a chance match
# above the threshold somewhere among the positions, scales and forms searched: 11 of 40 strips
# of unrelated photos were refused.
_MIN_TEMPLATE_PIXELS = 1024
_MIN_TEMPLATE_SIDE = 16


def image_signature(img: np.ndarray) -> np.ndarray:
    """A grey thumbnail (uint8, longest side ``NEAR_DUPLICATE_SIDE``) of an ``(H, W, 3)`` or grey
    image for ``near_duplicates`` (uint8, uint16 or float in [0, 1]; ``(H, W, 1)`` is grey).

    A uint16 array went through the float path (clipped to [0, 1]): a nearly white thumbnail,
    and a 16-bit copy of an evaluation image passed."""
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    x = to_uint8(img)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) if x.ndim == 3 else x
    return _resize_to(grey, NEAR_DUPLICATE_SIDE)


def _resize_to(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` scaled so that its longest side is ``side``."""
    return _scaled(img, side / max(img.shape[:2]))


def _scaled(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return img
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def _form(x: np.ndarray, form: int) -> np.ndarray:
    """Form ``form`` (0-7) of the 8 flips and 90-degree rotations: training augments with all of
    them, so a flipped or rotated copy of an evaluation image teaches exactly what it would."""
    r = np.rot90(x, form // 2)
    return np.ascontiguousarray(r[:, ::-1] if form % 2 else r)


def _centre(x: np.ndarray, frac: float) -> np.ndarray:
    h, w = x.shape[:2]
    ch, cw = max(1, int(h * frac)), max(1, int(w * frac))
    y, x0 = (h - ch) // 2, (w - cw) // 2
    return x[y : y + ch, x0 : x0 + cw]


def _band(x: np.ndarray) -> np.ndarray:
    """Difference of Gaussians. The border is continued by odd reflection (``2 * edge - mirror``),
    which continues a gradient as itself: an even mirror folds it into a ridge along the border
    that two featureless skies then match each other by."""
    r = math.ceil(3 * _BAND_SIGMAS[1])
    p = np.pad(x.astype(np.float32), r, mode="reflect", reflect_type="odd")
    d = cv2.GaussianBlur(p, (0, 0), _BAND_SIGMAS[0]) - cv2.GaussianBlur(p, (0, 0), _BAND_SIGMAS[1])
    return d[r : r + x.shape[0], r : r + x.shape[1]]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean, scaled to unit length (flat rows become 0: they match nothing)."""
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-3, x / np.maximum(norm, 1e-3), 0.0).astype(np.float32)


def _bin_permutations() -> list[np.ndarray]:
    """For each form, where each signed direction bin goes: ``out[..., p[b]] = in[..., b]``."""
    perms = []
    for form in range(8):
        p = []
        for b in range(_BINS):
            a = 2 * math.pi * b / _BINS
            vx, vy = math.cos(a), math.sin(a)  # image axes: y points down
            for _ in range(form // 2):  # np.rot90: a quarter turn counter-clockwise on screen
                vx, vy = vy, -vx
            if form % 2:
                vx = -vx
            p.append(round(math.atan2(vy, vx) % (2 * math.pi) / (2 * math.pi) * _BINS) % _BINS)
        perms.append(np.argsort(p))
    return perms


_BIN_PERMS = _bin_permutations()


def _edge_cells(img: np.ndarray) -> np.ndarray:
    """``(H, W, _BINS)``: gradient magnitude split between its two nearest signed direction bins
    and averaged over a cell around each pixel."""
    x = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.7)
    mag, ang = cv2.cartToPolar(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))
    pos = ang * (_BINS / (2 * math.pi))
    lo = np.floor(pos)
    frac = pos - lo
    lo_bin = lo.astype(np.intp) % _BINS
    out = np.zeros((*img.shape, _BINS), np.float32)
    iy, ix = np.indices(img.shape)
    out[iy, ix, lo_bin] = mag * (1 - frac)
    out[iy, ix, (lo_bin + 1) % _BINS] = mag * frac
    return cv2.boxFilter(out, -1, (_CELL, _CELL), borderType=cv2.BORDER_REFLECT)


def _cell_windows(cells: np.ndarray, ys: np.ndarray, xs: np.ndarray, grid: int) -> np.ndarray:
    """``(len(ys), len(xs), grid, grid, _BINS)``: the cells of the windows whose corners are
    ``(ys[i], xs[j])``."""
    y = ys[:, None] + _CELL // 2 + _CELL * np.arange(grid)
    x = xs[:, None] + _CELL // 2 + _CELL * np.arange(grid)
    return cells[y[:, None, :, None], x[None, :, None, :]]


@dataclass
class _Coarse:
    """One picture in the coarse pass: its centre window in 8 forms (``templates[grid]``,
    ``(8, d)``), and the windows around the centre of its thumbnail enlarged by each of
    ``_MAGS`` (``windows[grid][i]``, ``(n, d)``), all as unit rows. ``grid`` is the largest of
    ``_GRIDS`` its thumbnail holds (``None``: none)."""

    grid: int | None
    templates: dict[int, np.ndarray] = field(default_factory=dict)
    windows: dict[int, list[np.ndarray]] = field(default_factory=dict)


def _coarse_grid(sig: np.ndarray) -> int | None:
    short = min(sig.shape) * _COARSE_SIDE / max(sig.shape)
    return next((g for g in _GRIDS if short >= g * _CELL), None)


def _coarse(sig: np.ndarray, grids: Sequence[int]) -> _Coarse:
    """``sig``'s coarse windows for each of ``grids`` that fits its thumbnail."""
    base = _resize_to(sig.astype(np.float32), _COARSE_SIDE)
    out = _Coarse(_coarse_grid(sig))
    grids = [g for g in grids if min(base.shape) >= g * _CELL]
    for i, m in enumerate(_MAGS):
        img = _scaled(base, m)
        cells = _edge_cells(img)
        h, w = img.shape
        reach = math.ceil(NEAR_DUPLICATE_MAX_CROP / 2 * max(h, w)) + 1
        for grid in grids:
            size = grid * _CELL
            if i == 0:
                centre = np.array([(h - size) // 2]), np.array([(w - size) // 2])
                t = _cell_windows(cells, *centre, grid)[0, 0]
                forms = [_form(t, f)[..., _BIN_PERMS[f]].ravel() for f in range(8)]
                out.templates[grid] = _unit_rows(np.stack(forms))
            y0, x0 = (h - size) / 2 - reach, (w - size) / 2 - reach
            ys = np.arange(max(0, math.floor(y0)), min(h - size, math.ceil(y0) + 2 * reach) + 1)
            xs = np.arange(max(0, math.floor(x0)), min(w - size, math.ceil(x0) + 2 * reach) + 1)
            win = _cell_windows(cells, ys[::_STRIDE], xs[::_STRIDE], grid)
            out.windows.setdefault(grid, []).append(_unit_rows(win.reshape(-1, win[0, 0].size)))
    return out


def _coarse_block(templates: Sequence[_Coarse], images: Sequence[_Coarse], grid: int) -> np.ndarray:
    """``(len(templates), len(images), 8)``: the best coarse score of each template's forms in
    each image, over its magnifications and window positions."""
    tmat = np.concatenate([t.templates[grid] for t in templates]).T
    out = np.full((len(templates), len(images), 8), -1.0, np.float32)
    for m in range(len(_MAGS)):
        blocks = [im.windows[grid][m] for im in images]
        n = max(len(b) for b in blocks)
        # Every image padded to n windows (repeating one) so a reshape takes each one's best.
        stack = np.stack([np.concatenate([b, np.repeat(b[:1], n - len(b), 0)]) for b in blocks])
        step = max(1, (1 << 23) // (n * tmat.shape[1]))  # score chunks of ~32 MB
        for a in range(0, len(images), step):
            part = stack[a : a + step]
            best = (part.reshape(-1, part.shape[-1]) @ tmat).reshape(len(part), n, -1).max(1)
            best = best.reshape(len(part), len(templates), 8).transpose(1, 0, 2)
            out[:, a : a + step] = np.maximum(out[:, a : a + step], best)
    return out


def _coarse_scores(templates: Sequence[_Coarse], images: Sequence[_Coarse]) -> np.ndarray:
    """``_coarse_block`` for every pair, each at the largest grid both thumbnails hold (-1 where
    one holds none)."""
    out = np.full((len(templates), len(images), 8), -1.0, np.float32)
    for grid in _GRIDS:
        # Pairs whose smaller grid is this one: the template's grid is it (and the image holds
        # it), or the image's is and the template's is larger.
        for t_exact in (True, False):
            ti = [
                i
                for i, t in enumerate(templates)
                if grid in t.templates and (t.grid == grid) == t_exact
            ]
            wi = [
                j for j, w in enumerate(images) if grid in w.windows and (t_exact or w.grid == grid)
            ]
            if ti and wi:
                block = _coarse_block([templates[i] for i in ti], [images[j] for j in wi], grid)
                idx = np.ix_(ti, wi)
                out[idx] = np.maximum(out[idx], block)
    return out


def _flat_windows(band: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Where, in ``cv2.matchTemplate``'s ``(H - h + 1, W - w + 1)`` result for a template of
    ``shape`` ``(h, w)``, the window of ``band`` under it has a band contrast (std) under
    ``_FLAT_BAND``: a correlation there is noise divided by noise."""
    h, w = shape[:2]
    x = band.astype(np.float64)
    s1, s2 = cv2.integral(x), cv2.integral(x * x)

    def window_sums(s: np.ndarray) -> np.ndarray:
        return s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]

    n = float(h * w)
    var = window_sums(s2) / n - (window_sums(s1) / n) ** 2
    return var < _FLAT_BAND**2


class _FineSearch:
    """Full-size search of one picture (the source, shrunk by m and turned into a form) in
    another, with the band-passed thumbnails cached: a source is searched in many images at
    the same magnifications."""

    def __init__(self) -> None:
        self.bands: dict[str, np.ndarray] = {}
        self.templates: dict[tuple[str, float], np.ndarray | None] = {}

    def _template(self, key: str, sig: np.ndarray, m: float) -> np.ndarray | None:
        if (key, m) not in self.templates:
            small = _scaled(sig.astype(np.float32), 1 / m)
            band = _centre(_band(small), _CENTRE)
            flat = _centre(small, _CENTRE).std() < 1.0 or band.std() < _FLAT_BAND
            self.templates[(key, m)] = None if flat else band
        return self.templates[(key, m)]

    def score(
        self, src: tuple[str, np.ndarray], img: tuple[str, np.ndarray], form: int, m: float
    ) -> float:
        t = self._template(*src, m)
        if t is None:
            return -1.0
        if img[0] not in self.bands:
            self.bands[img[0]] = _band(img[1])
        band = self.bands[img[0]]
        t = _form(t, form)
        if t.shape[0] > band.shape[0] or t.shape[1] > band.shape[1]:
            return -1.0
        if min(t.shape) < _MIN_TEMPLATE_SIDE or t.size < _MIN_TEMPLATE_PIXELS:
            return -1.0
        scores = cv2.matchTemplate(band, t, cv2.TM_CCOEFF_NORMED)
        scores[_flat_windows(band, t.shape)] = -1.0
        return float(np.nan_to_num(scores, nan=-1.0).max())

    def best(self, src: tuple[str, np.ndarray], img: tuple[str, np.ndarray], form: int) -> float:
        """The best score over magnifications: the coarse ones, then halving steps around the
        best (a crop between two of them scores well below its own magnification's score)."""
        tried: dict[float, float] = {}

        def at(m: float) -> tuple[float, float]:
            m = min(max(m, _MAGS[0]), _MAGS[-1])
            if m not in tried:
                tried[m] = self.score(src, img, form, m)
            return tried[m], m

        score, m = max(at(m) for m in _MAGS)
        if score < _SCAN_SCORE:
            return score
        step = _MAGS[1] ** 0.5  # half the coarse spacing: the best is within it
        for _ in range(3):
            score, m = max(at(m), at(m * step), at(m / step))
            step **= 0.5
        return score


def near_duplicates(
    train: Mapping[str, np.ndarray],
    evals: Mapping[str, np.ndarray],
    *,
    threshold: float = NEAR_DUPLICATE_SCORE,
) -> list[tuple[str, str, float]]:
    """``(train, eval, score)`` of image pairs that are the same picture up to a crop of up to
    ``NEAR_DUPLICATE_MAX_CROP`` a side, a rescale, re-compression, a flip or a 90-degree
    rotation, which content hashes cannot see.

    Both mappings hold ``image_signature`` thumbnails. Each is searched for in the other, shrunk
    by the magnification a crop would have brought, in each of the 8 flipped and rotated forms
    (normalised cross-correlation of band-passed images); a best score ``>= threshold`` is a
    match. A coarse pass over all pairs picks the searches worth doing at full size.
    """
    tnames, enames = list(train), list(evals)
    if not tnames or not enames:
        return []
    # The smaller grid only where a narrow thumbnail (a panorama, a strip of text) needs it.
    sigs = [*train.values(), *evals.values()]
    grids = _GRIDS[:1] + tuple(g for g in _GRIDS[1:] if any(_coarse_grid(s) == g for s in sigs))
    tc = [_coarse(train[t], grids) for t in tnames]
    ec = [_coarse(evals[e], grids) for e in enames]
    # (photos, evals, direction, form): direction 0 looks for the photo in the evaluation image
    # (the photo is the crop), 1 for the evaluation image in the photo.
    coarse = np.stack([_coarse_scores(tc, ec), _coarse_scores(ec, tc).transpose(1, 0, 2)], axis=2)
    # A thumbnail too narrow for any coarse window is searched in every form at full size.
    no_grid = np.array([c.grid is None for c in tc])[:, None] | [c.grid is None for c in ec]
    todo = (coarse >= _COARSE_SCORE) | no_grid[:, :, None, None]
    hypotheses = [(int(t), int(e), int(d), int(f)) for t, e, d, f in np.argwhere(todo)]
    # Grouped by the picture searched for, so its shrunk templates are made once, then let go.
    hypotheses.sort(key=lambda h: (h[2], h[0] if h[2] == 0 else h[1]))
    fine = _FineSearch()
    best: dict[tuple[int, int], float] = {}
    source = None
    for ti, ei, direction, form in hypotheses:
        if best.get((ti, ei), -1.0) >= threshold:
            continue  # already a match: other forms cannot take it back
        photo, ev = (f"t{ti}", train[tnames[ti]]), (f"e{ei}", evals[enames[ei]])
        src, img = (photo, ev) if direction == 0 else (ev, photo)
        if src[0] != source:
            fine.templates.clear()
            source = src[0]
        best[(ti, ei)] = max(best.get((ti, ei), -1.0), fine.best(src, img, form))
    return [(tnames[ti], enames[ei], s) for (ti, ei), s in best.items() if s >= threshold]


def file_signatures(
    paths: Iterable[str | Path], *, workers: int | None = None
) -> dict[str, np.ndarray]:
    """``{path: image_signature}`` of the readable image files among ``paths``, decoded in a
    few threads (OpenCV decodes outside the GIL): for the images a run decodes lazily, GoPro's,
    which the near-duplicate check would otherwise not see."""

    def sig(path: str) -> np.ndarray | None:
        data = np.fromfile(path, dtype=np.uint8)
        grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
        return None if grey is None or grey.size == 0 else image_signature(grey)

    names = [str(p) for p in paths]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sigs = list(pool.map(sig, names))
    return {n: s for n, s in zip(names, sigs, strict=True) if s is not None}


def check_leakage(
    train_items: Mapping[str, str] | Iterable[Any],
    eval_items: Mapping[str, str] | Iterable[Any],
    *,
    train_signatures: Mapping[str, np.ndarray] | None = None,
    eval_signatures: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Refuse to train when a training image is also an evaluation image.

    Items are a ``{name: content_hash}`` mapping, ``(name, hash)`` pairs or image paths (hashed
    here). Given ``{name: image_signature}`` of both sides, pictures that are the same up to a
    crop, a rescale, re-compression, a flip or a rotation (``near_duplicates``) count too. Raises
    ``LeakageError`` naming every overlapping pair.
    """
    train = _hash_items(train_items)
    evals = _hash_items(eval_items)
    by_hash: dict[str, list[str]] = {}
    for name, h in evals.items():
        by_hash.setdefault(h, []).append(name)
    overlaps = [(t, e) for t, h in train.items() for e in by_hash.get(h, [])]
    if train_signatures and eval_signatures:
        # An evaluation image hashed by its file bytes too (beside GoPro data) is listed once.
        exact = {(t, e.removesuffix(" (file)")) for t, e in overlaps}
        overlaps += [
            (t, f"{e} (near-duplicate, score {score:.3f})")
            for t, e, score in near_duplicates(train_signatures, eval_signatures)
            if (t, e) not in exact
        ]
    if overlaps:
        shown = "\n".join(f"  {t}  ==  {e}" for t, e in overlaps[:20])
        more = f"\n  ... and {len(overlaps) - 20} more" if len(overlaps) > 20 else ""
        raise LeakageError(
            f"{len(overlaps)} training image(s) also appear in the evaluation data; "
            "refusing to train (leave each out of the training data, a photo by adding a glob "
            f"for it to the config's data.exclude):\n{shown}{more}"
        )


# --------------------------------------------------------------------------------------------
# Temporal averaging (GoPro) and raw frame windows
# --------------------------------------------------------------------------------------------


def temporal_average(
    frames: Sequence[np.ndarray], *, linear: bool, gamma: float = 2.2
) -> np.ndarray:
    """Average frames ``(H, W, 3)`` into a blurry frame, float32 in [0, 1].

    ``linear=False`` is the plain average of the sRGB values (GoPro's ``blur``);
    ``linear=True`` averages ``x ** gamma`` and maps back with ``** (1 / gamma)`` (``blur_gamma``),
    closer to how a sensor integrates light. uint8 frames are scaled to [0, 1] first.
    """
    if len(frames) == 0:
        raise ValueError("temporal_average needs at least one frame")
    acc: np.ndarray | None = None
    for f in frames:
        x = f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32)
        if linear:
            x = np.power(np.clip(x, 0.0, 1.0), gamma)
        acc = x if acc is None else acc + x
    assert acc is not None
    acc /= len(frames)
    if linear:
        acc = np.power(np.clip(acc, 0.0, 1.0), 1.0 / gamma)
    return acc.astype(np.float32)


def raw_frame_windows(
    frame_dir: str | Path, *, first: int, last: int, sizes: Sequence[int] = (7, 9, 11, 13)
) -> list[tuple[list[Path], int]]:
    """Every window of consecutive frames lying entirely inside frames ``[first, last]``.

    Frames are the images of ``frame_dir`` in ``list_frames`` order, numbered from 1. Returns
    ``(paths, centre)`` pairs, ``centre`` the 1-based number of the middle frame, for each odd
    size in ``sizes`` and each admissible centre.
    """
    paths = list_frames(frame_dir)
    first = max(1, first)
    last = min(len(paths), last)
    out: list[tuple[list[Path], int]] = []
    for size in sizes:
        if size % 2 != 1:
            raise ValueError(f"window sizes must be odd, got {size}")
        half = size // 2
        for centre in range(first + half, last - half + 1):
            out.append((paths[centre - half - 1 : centre + half], centre))
    return out


# --------------------------------------------------------------------------------------------
# Camera-shake kernels
# --------------------------------------------------------------------------------------------


def center_kernel(kernel: np.ndarray) -> np.ndarray:
    """Normalise a blur kernel to sum 1 and move its centre of mass to its centre pixel.

    The result has odd height and width and is padded as needed, so convolving with it blurs
    without translating the image. Grey or RGB (averaged) kernels accepted.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 3:
        k = k.mean(axis=2)
    k = np.clip(k, 0.0, None)
    total = k.sum()
    if total <= 0:
        raise ValueError("kernel has no positive mass")
    k = k / total
    h, w = k.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = float((k * ys).sum()), float((k * xs).sum())
    # The output is centred on the centre of mass: make it large enough to hold the kernel.
    half_h = int(math.ceil(max(cy, h - 1 - cy))) + 1
    half_w = int(math.ceil(max(cx, w - 1 - cx))) + 1
    out_h, out_w = 2 * half_h + 1, 2 * half_w + 1
    shift = np.float64([[1, 0, half_w - cx], [0, 1, half_h - cy]])
    out = cv2.warpAffine(
        k, shift, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    out = np.clip(out, 0.0, None)
    # Trim all-zero borders symmetrically so the centre stays in the middle.
    rows = np.flatnonzero(out.sum(axis=1) > 1e-12)
    cols = np.flatnonzero(out.sum(axis=0) > 1e-12)
    ty = min(rows[0], out_h - 1 - rows[-1])
    tx = min(cols[0], out_w - 1 - cols[-1])
    out = out[ty : out_h - ty, tx : out_w - tx]
    return (out / out.sum()).astype(np.float32)


def blur_with_kernel(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve ``(H, W, C)`` float image with a 2-D kernel (reflect border), float32 out.

    ``cv2.filter2D`` computes correlation, so the kernel is flipped to make it a convolution.
    """
    k = np.ascontiguousarray(np.asarray(kernel, dtype=np.float32)[::-1, ::-1])
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    kh, kw = k.shape
    anchor = (kw // 2, kh // 2)
    if kh % 2 == 0 or kw % 2 == 0:
        k = center_kernel(k[::-1, ::-1])[::-1, ::-1].copy()
        anchor = (k.shape[1] // 2, k.shape[0] // 2)
    out = cv2.filter2D(x, -1, k, anchor=anchor, borderType=cv2.BORDER_REFLECT)
    if out.ndim == 2 and x.ndim == 3:
        out = out[:, :, None]
    return out


def random_trajectory(
    rng: np.random.Generator,
    *,
    length: float,
    n_steps: int = 2000,
    anxiety: float | None = None,
) -> np.ndarray:
    """A camera-shake trajectory (Boracchi & Foi 2012): a random walk with inertia and jerks.

    Returns complex positions ``(n_steps,)`` in pixels, total path length about ``length``.
    ``anxiety`` in [0, 1] sets how often and how hard the hand jerks (random if ``None``).
    """
    if anxiety is None:
        anxiety = float(rng.uniform(0.0, 1.0))
    centripetal = 0.7 * rng.uniform(0.0, 1.0)
    gaussian_term = 10.0 * rng.uniform(0.0, 1.0)
    freq_big_shakes = 0.2 * rng.uniform(0.0, 1.0) * anxiety
    init_angle = rng.uniform(0.0, 2.0 * math.pi)
    v = np.exp(1j * init_angle) * (length / (n_steps - 1))
    v0 = v
    x = np.zeros(n_steps, dtype=np.complex128)
    for t in range(n_steps - 1):
        if rng.uniform() < freq_big_shakes * anxiety:
            next_dir = 2.0 * v / (abs(v) + 1e-12)
            next_dir *= np.exp(1j * (math.pi + (rng.uniform() - 0.5)))
        else:
            next_dir = 0.0
        dv = next_dir + anxiety * (
            gaussian_term * (rng.normal() + 1j * rng.normal()) - centripetal * x[t]
        ) * (length / (n_steps - 1))
        v = v + dv
        v = (v / (abs(v) + 1e-12)) * (length / (n_steps - 1))
        x[t + 1] = x[t] + v
    del v0
    return x


def trajectory_to_psf(
    traj: np.ndarray,
    *,
    size: int,
    exposure: float = 1.0,
    subsample: int = 4,
    centre: str = "mass",
) -> np.ndarray:
    """Rasterise the first ``exposure`` fraction of a trajectory into a ``(size, size)`` PSF.

    Positions are splatted bilinearly at sub-pixel precision; the trajectory is scaled down if it
    does not fit; the PSF sums to 1. ``centre="mass"`` centres it on its centre of mass;
    ``"time"`` puts the middle of the exposure at the centre, so the sharp target is the scene at
    mid-exposure, as in the GoPro data (its centre frame) and the raw clip's windows; the two
    differ by over a pixel when the shake accelerates.
    """
    if centre not in ("mass", "time"):
        raise ValueError(f"centre must be 'mass' or 'time', got {centre!r}")
    if size % 2 == 0:
        size += 1
    n = max(2, int(round(len(traj) * float(np.clip(exposure, 0.05, 1.0)))))
    pts = traj[:n]
    if centre == "time":
        pts = pts - 0.5 * (pts[(n - 1) // 2] + pts[n // 2])
    else:
        pts = pts - (pts.real.mean() + 1j * pts.imag.mean())
    extent = max(np.abs(pts.real).max(), np.abs(pts.imag).max(), 1e-6)
    limit = (size - 3) / 2.0
    if extent > limit:
        pts = pts * (limit / extent)
    c = size // 2
    hi = size * subsample
    grid = np.zeros((hi, hi), dtype=np.float64)
    xs = (pts.real + c + 0.5) * subsample - 0.5
    ys = (pts.imag + c + 0.5) * subsample - 0.5
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, dx, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        yy, xx = np.clip(y0 + dy, 0, hi - 1), np.clip(x0 + dx, 0, hi - 1)
        np.add.at(grid, (yy, xx), w)
    psf = grid.reshape(size, subsample, size, subsample).sum(axis=(1, 3))
    if centre == "time":
        return (psf / psf.sum()).astype(np.float32)
    psf = center_kernel(psf)
    if psf.shape[0] > size or psf.shape[1] > size:  # centring padded it: crop back around centre
        ph, pw = psf.shape
        oy, ox = max(0, (ph - size) // 2), max(0, (pw - size) // 2)
        psf = psf[oy : oy + min(size, ph), ox : ox + min(size, pw)]
        psf = psf / psf.sum()
    return psf.astype(np.float32)


def random_psf(
    rng: np.random.Generator,
    *,
    max_size: int,
    exposure: tuple[float, float],
    centre: str = "mass",
) -> np.ndarray:
    """A random camera-shake PSF of at most ``max_size`` pixels (odd), summing to 1, centred as
    ``trajectory_to_psf``'s ``centre`` says."""
    size = int(rng.integers(5, max(6, max_size + 1)))
    size = size if size % 2 == 1 else size - 1
    # With 64 steps (Boracchi & Foi's size) the walk keeps some direction; longer paths than
    # the PSF are scaled down to fit, which gives the straight-ish strokes of real shake.
    length = float(rng.uniform(0.75, 3.0)) * size
    traj = random_trajectory(rng, length=length, n_steps=64)
    return trajectory_to_psf(traj, size=size, exposure=float(rng.uniform(*exposure)), centre=centre)


# Curvature of a simulated camera path: the per-frame acceleration is drawn with a standard
# deviation of this fraction of the speed, so paths bend as a walking hand-held camera's do
# without turning back inside 13 frames (1/20 s).
CAMERA_CURVE = 0.15


def camera_path(
    rng: np.random.Generator,
    *,
    frames: int,
    speed: tuple[float, float],
    turn: float = 0.0,
    zoom: float = 0.0,
    curve: float = CAMERA_CURVE,
) -> np.ndarray:
    """A short random camera motion over ``frames`` (odd) consecutive video frames.

    Returns ``(frames, 2, 3)`` float64 maps ``[A | d]``: frame ``k`` sees the point ``A @ x + d``
    of the scene where the centre frame sees ``x`` (coordinates relative to the patch centre). The
    centre frame is exactly ``[I | 0]``. Translation moves ``speed`` px per frame (uniform in the
    range) in a random direction, bent by a random acceleration; ``turn`` is the largest roll in
    degrees per frame and ``zoom`` the largest relative change of scale per frame.
    """
    if frames < 1 or frames % 2 != 1:
        raise ValueError(f"frames must be a positive odd number, got {frames}")
    if not 0.0 <= speed[0] <= speed[1]:
        raise ValueError(f"speed must be a range 0 <= low <= high, got {speed}")
    h = frames // 2
    k = np.arange(-h, h + 1, dtype=np.float64)
    s = float(rng.uniform(speed[0], speed[1]))
    theta = float(rng.uniform(0.0, 2.0 * math.pi))
    v = s * np.array([math.cos(theta), math.sin(theta)])
    a = s * curve * rng.normal(size=2)
    d = k[:, None] * v + 0.5 * (k**2)[:, None] * a
    phi = np.deg2rad(float(rng.uniform(-turn, turn))) * k
    scale = 1.0 + float(rng.uniform(-zoom, zoom)) * k
    cos, sin = np.cos(phi) * scale, np.sin(phi) * scale
    maps = np.zeros((frames, 2, 3))
    maps[:, 0, 0], maps[:, 0, 1], maps[:, 1, 0], maps[:, 1, 1] = cos, -sin, sin, cos
    maps[:, :, 2] = d
    maps[h] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # exact: no rounding in the sharp target
    return maps


def camera_path_margin(maps: np.ndarray, size: int) -> int:
    """Pixels the frames of ``maps`` ``(N, 2, 3)`` reach beyond a ``size`` x ``size`` patch."""
    c = size / 2.0
    corners = np.array([[-c, -c], [-c, c], [c, -c], [c, c]])
    moved = np.einsum("nij,kj->nki", maps[:, :, :2], corners) + maps[:, None, :, 2]
    return int(math.ceil(float(np.abs(moved - corners[None]).max()))) + 2


def render_camera_motion(
    img: np.ndarray, maps: np.ndarray, *, centre: tuple[int, int], size: int
) -> list[np.ndarray]:
    """The ``size`` x ``size`` frames a camera following ``maps`` ``(N, 2, 3)`` (``camera_path``)
    records of the flat scene ``img`` ``(H, W, 3)``, centred on pixel ``centre = (y, x)``.

    Returns ``N`` arrays ``(size, size, 3)`` of ``img``'s dtype; the centre frame (identity map) is
    an exact crop. Bicubic resampling; pixels beyond the image are mirrored.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {img.shape}")
    if maps.ndim != 3 or maps.shape[1:] != (2, 3):
        raise ValueError(f"expected maps of shape (N, 2, 3), got {maps.shape}")
    half = size // 2
    out = []
    for m in maps:
        a = m[:, :2]
        # Output pixel x (patch coordinates) reads the scene at centre + A (x - half) + d.
        origin = np.array([centre[1], centre[0]], dtype=np.float64) + m[:, 2] - a @ [half, half]
        inverse = np.concatenate([a, origin[:, None]], axis=1)
        out.append(
            cv2.warpAffine(
                img,
                inverse,
                (size, size),
                flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT_101,
            )
        )
    return out


def load_kernels(folder: str | Path) -> list[np.ndarray]:
    """Real blur kernels (images) from a folder, centred and normalised; unreadable ones skipped."""
    kernels = []
    for p in list_images(folder):
        img = load_image(p)
        if img is None:
            continue
        kernels.append(center_kernel(img.mean(axis=2)))
    return kernels


# --------------------------------------------------------------------------------------------
# Webcam degradations, sharpness, augmentation
# --------------------------------------------------------------------------------------------


def add_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    gaussian_sigma: float,
    poisson_peak: float | None = None,
) -> np.ndarray:
    """Sensor noise on a float ``(H, W, 3)`` image: Poisson shot noise at ``poisson_peak``
    photons for white (if given), then Gaussian read noise with std ``gaussian_sigma``."""
    out = img.astype(np.float32)
    if poisson_peak is not None and poisson_peak > 0:
        out = rng.poisson(np.clip(out, 0, 1) * poisson_peak).astype(np.float32) / poisson_peak
    if gaussian_sigma > 0:
        out = out + rng.normal(0.0, gaussian_sigma, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] -> linear light in [0, 1] (IEC 61966-2-1: a straight toe, then
    a 2.4 power), float32, any shape."""
    x = np.clip(img.astype(np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(img: np.ndarray) -> np.ndarray:
    """The inverse of :func:`srgb_to_linear`, float32 in [0, 1], any shape."""
    x = np.clip(img.astype(np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(
        np.float32
    )


def add_sensor_noise(
    img: np.ndarray, rng: np.random.Generator, *, poisson_peak: float, gaussian_sigma: float
) -> np.ndarray:
    """A sensor's noise on a float sRGB ``(H, W, 3)`` image in [0, 1]: :func:`add_noise` in
    linear light (shot noise of ``poisson_peak`` photons for white, read noise
    ``gaussian_sigma`` of white), then the sRGB curve, as a camera encodes what it counted.

    Unlike :func:`add_noise` on the encoded values, its grain is nearly even across the
    picture's brightness at mid-tones and up (the curve's slope falls about as fast as shot
    noise grows) and strongest in the shadows, where the read noise meets the curve's steep
    toe: a dim camera's noisy dark parts."""
    return linear_to_srgb(
        add_noise(
            srgb_to_linear(img), rng, gaussian_sigma=gaussian_sigma, poisson_peak=poisson_peak
        )
    )


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a float RGB image through JPEG at ``quality`` (what a webcam stream does)."""
    u8 = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.cvtColor(dec, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def psnr_np(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float ``(H, W, C)`` images in [0, 1] (100 for identical ones)."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 100.0 if mse <= 1e-10 else 10.0 * math.log10(1.0 / mse)


def sharpness(img: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of the luma of an ``(H, W, 3)`` image, on a [0, 1] scale."""
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    grey = x @ np.float32([0.299, 0.587, 0.114])
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.sqrt(gx * gx + gy * gy).mean())


def augment_pair(images: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one random flip / 90-degree rotation to every ``(H, W, C)`` image alike."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for img in images:
        x = np.rot90(img, k, axes=(0, 1))
        if flip:
            x = x[:, ::-1]
        out.append(np.ascontiguousarray(x))
    return out


def _load_tracked(
    path: Path, skips: SkipCounter | None, hashes: dict[str, str] | None
) -> np.ndarray | None:
    """Decode ``path`` (uint8 RGB); an unreadable file is counted in ``skips`` and gives None,
    a readable one has its content hash recorded in ``hashes`` for the leakage guard."""
    img = load_image_u8(path)
    if img is None:
        if skips is not None:
            skips.corrupt_files.append(str(path))
        return None
    if hashes is not None:
        hashes[str(path)] = content_hash(img)
    return img


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if out.dtype.kind == "f":
        # Cubic upscaling rings past the edges of the range (-0.08..1.09 on a procedural scene):
        # those would be sharp targets no image can have (uint8 saturates by itself).
        np.clip(out, 0.0, 1.0, out=out)
    return out


# --------------------------------------------------------------------------------------------
# Sources kept in memory
# --------------------------------------------------------------------------------------------


@dataclass
class SkipCounter:
    """How many files were skipped as unreadable and patches rejected as flat."""

    corrupt_files: list[str] = field(default_factory=list)
    flat_patches: int = 0


@dataclass
class RawSequence:
    """Consecutive frames of one high-frame-rate video, decoded (uint8 RGB) and kept in memory.

    ``frames[i]`` is frame number ``numbers[i]`` (1-based, in ``list_frames`` order).
    """

    name: str
    frames: list[np.ndarray]
    numbers: list[int]
    paths: list[Path]

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        first: int,
        last: int,
        scale: float = 1.0,
        skips: SkipCounter | None = None,
        hashes: dict[str, str] | None = None,
    ) -> RawSequence:
        """Decode frames ``first..last`` of ``folder`` (a corrupt frame breaks the windows over it).

        ``hashes`` (if given) receives ``{path: content_hash}`` of the decoded frames.
        """
        paths = list_frames(folder)
        frames, numbers, used = [], [], []
        for number, p in enumerate(paths, start=1):
            if number < first or number > last:
                continue
            img = _load_tracked(p, skips, hashes)
            if img is None:
                continue
            frames.append(_resize(img, scale))
            numbers.append(number)
            used.append(p)
        return cls(name=str(folder), frames=frames, numbers=numbers, paths=used)

    def windows(self, size: int) -> list[int]:
        """Start positions (into ``frames``) of windows of ``size`` truly consecutive frames."""
        out = []
        for s in range(0, len(self.frames) - size + 1):
            if self.numbers[s + size - 1] - self.numbers[s] == size - 1:
                out.append(s)
        return out


def load_photos(
    folders: Sequence[str | Path],
    *,
    max_side: int = 0,
    min_side: int = 32,
    skips: SkipCounter | None = None,
    exclude: Sequence[str] = (),
    hashes: dict[str, str] | None = None,
) -> tuple[list[np.ndarray], list[Path]]:
    """Decode every image under ``folders`` to uint8 RGB (longest side cut to ``max_side`` if > 0).

    Paths matching a glob of ``exclude`` (e.g. ``*/curban100/img_049.jpg``) are left out.
    """
    images, paths = [], []
    for folder in folders:
        for p in list_images(folder):
            if any(p.match(pattern) or fnmatch.fnmatch(str(p), pattern) for pattern in exclude):
                continue
            img = _load_tracked(p, skips, hashes)
            if img is None:
                continue
            if max_side and max(img.shape[:2]) > max_side:
                img = _resize(img, max_side / max(img.shape[:2]))
            if min(img.shape[:2]) < min_side:
                log.warning("skipping %s: smaller than %d px", p, min_side)
                continue
            images.append(img)
            paths.append(p)
    return images, paths


def gopro_pairs(root: str | Path, split: str, *, blur: str = "blur") -> list[tuple[Path, Path]]:
    """``(blurry, sharp)`` paths of the GoPro layout ``root/{split}/<seq>/{blur,blur_gamma,sharp}``."""
    if blur not in ("blur", "blur_gamma"):
        raise ValueError(f"blur must be 'blur' or 'blur_gamma', got {blur!r}")
    base = Path(root) / split
    if not base.is_dir():
        raise FileNotFoundError(f"no GoPro split folder {base}")
    pairs = []
    for seq in sorted(p for p in base.iterdir() if p.is_dir()):
        for bp in list_images(seq / blur, recursive=False):
            sp = seq / "sharp" / bp.name
            if sp.is_file():
                pairs.append((bp, sp))
    return pairs


# --------------------------------------------------------------------------------------------
# The synthesising dataset
# --------------------------------------------------------------------------------------------


@dataclass
class SynthParams:
    """Knobs of sample synthesis (filled from ``training.config.DataConfig``)."""

    raw_windows: tuple[int, ...] = (7, 9, 11, 13)
    linear_fraction: float = 0.3
    gamma: float = 2.2
    psf_max_size: int = 31
    exposure: tuple[float, float] = (0.5, 1.0)
    camera_fraction: float = 0.0
    raw_camera_fraction: float = 0.0
    camera_speed: tuple[float, float] = (0.25, 3.0)
    camera_turn: float = 0.1
    camera_zoom: float = 0.002
    real_kernel_fraction: float = 0.0
    psf_centre: str = "mass"
    photo_scale: tuple[float, float] = (1.0, 1.0)
    noise_prob: float = 0.8
    noise_sigma: tuple[float, float] = (0.0, 0.02)
    poisson_prob: float = 0.3
    poisson_peak: tuple[float, float] = (200.0, 2000.0)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (50, 95)
    sharpness_threshold: float = 0.02
    max_blur_psnr: float = 0.0
    still_fraction: float = 0.0
    still_scale: tuple[float, float] | None = None  # None: still photo samples use photo_scale
    graphics_fraction: float = 0.0
    max_tries: int = 10
    augment: bool = True


class DeblurDataset(Dataset):
    """Infinite stream of ``(blurry, sharp)`` patches; item ``i`` is a pure function of the seed.

    ``dataset[i]`` returns a dict: ``blur`` and ``sharp`` float32 ``(3, P, P)`` in [0, 1],
    ``teacher`` ``(3, P, P)`` (zeros unless a cached teacher output exists for this patch),
    ``has_teacher`` bool, ``source`` int (0 raw, 1 photo, 2 gopro, 3 cache), ``rejected`` int
    (flat patches thrown away on the way).
    """

    SOURCES = ("raw", "photo", "gopro", "cache")

    def __init__(
        self,
        *,
        raw: Sequence[RawSequence] = (),
        photos: Sequence[np.ndarray] = (),
        gopro: Sequence[tuple[Path, Path]] = (),
        kernels: Sequence[np.ndarray] = (),
        weights: tuple[float, float, float] = (1.0, 0.0, 0.0),
        params: SynthParams | None = None,
        patch: int = 128,
        seed: int = 0,
        rank: int = 0,
        teacher_cache: TeacherCache | None = None,
        cache_fraction: float = 0.0,
    ) -> None:
        self.raw = list(raw)
        self.photos = list(photos)
        self.gopro = list(gopro)
        self.kernels = list(kernels)
        self.params = params or SynthParams()
        self.patch = int(patch)
        self.seed = int(seed)
        self.rank = int(rank)
        self.cache = teacher_cache
        self.cache_fraction = float(cache_fraction) if teacher_cache is not None else 0.0
        present = (bool(self.raw), bool(self.photos), bool(self.gopro))
        w = np.array([wt if ok else 0.0 for wt, ok in zip(weights, present, strict=True)], float)
        if w.sum() <= 0:
            raise ValueError(
                "no training source: every source with a positive weight is empty "
                f"(raw sequences {len(self.raw)}, photos {len(self.photos)}, gopro pairs {len(self.gopro)})"
            )
        self.weights = w / w.sum()
        # Windows per (sequence, size) computed once: they depend only on which frames loaded.
        self._raw_windows = {
            (si, size): seq.windows(size)
            for si, seq in enumerate(self.raw)
            for size in self.params.raw_windows
        }

    def split_off_raw(self) -> float:
        """Stop drawing raw samples here (another sampler makes them); return their share of
        all samples.

        Afterwards ``self.weights`` covers the other sources only (all zero if there are none),
        and ``cache_fraction`` is raised so that cached patches keep their share of the whole.
        """
        cf = self.cache_fraction
        share = (1.0 - cf) * float(self.weights[0])
        rest = self.weights.copy()
        rest[0] = 0.0
        self.weights = rest / rest.sum() if rest.sum() > 0 else rest
        self.cache_fraction = min(1.0, cf / (1.0 - share)) if share < 1.0 else 0.0
        return share

    def __len__(self) -> int:  # the stream is infinite; samplers hand out the indices
        return 2**62

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.rank, int(index)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng_for(index)
        p = self.params
        P = self.patch
        if self.cache is not None and rng.uniform() < self.cache_fraction:
            blur, sharp, teacher = self.cache.sample(rng, P)
            return _pack(blur, sharp, teacher, source=3, rejected=0)
        source = int(rng.choice(3, p=self.weights))
        # Drawn only when on, so that runs without it keep their exact sample stream.
        still = p.still_fraction > 0 and rng.uniform() < p.still_fraction
        rejected = 0
        for attempt in range(max(1, p.max_tries)):
            blur, sharp = (self._raw, self._photo, self._gopro)[source](rng, P, still=still)
            if attempt == p.max_tries - 1:
                break
            if sharpness(sharp) >= p.sharpness_threshold and (
                still or p.max_blur_psnr <= 0 or psnr_np(blur, sharp) <= p.max_blur_psnr
            ):
                break
            rejected += 1
        if still:
            blur = sharp.copy()
        blur = self._webcam(blur, rng)
        if p.augment:
            blur, sharp = augment_pair([blur, sharp], rng)
        teacher = None
        if self.cache is not None:
            teacher = self.cache.lookup(blur)
        return _pack(blur, sharp, teacher, source=source, rejected=rejected)

    # Each synthesiser returns float32 (P, P, 3) blurry and sharp crops. With ``still`` the
    # blurry crop is the sharp one and the blur is not synthesised (a still sample throws it
    # away), but every random number is still drawn, in the same order: the rest of the sample
    # (which window, crop and kernel; noise, JPEG and flips after it) and every later retry
    # stay what they were, so a seed gives the same still samples with or without the saving.

    def _raw(
        self, rng: np.random.Generator, P: int, *, still: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        options = [
            (si, size)
            for si in range(len(self.raw))
            for size in p.raw_windows
            if self._raw_windows[(si, size)]
        ]
        if not options:
            raise ValueError("raw sequences are too short for any window size")
        si, size = options[int(rng.integers(len(options)))]
        starts = self._raw_windows[(si, size)]
        s = starts[int(rng.integers(len(starts)))]
        frames = self.raw[si].frames[s : s + size]
        # Drawn only when enabled, so runs without it keep their exact sample stream.
        if p.raw_camera_fraction > 0 and rng.uniform() < p.raw_camera_fraction:
            crops = self._raw_camera(rng, frames, P, still=still)
        else:
            h, w = frames[0].shape[:2]
            ph, pw = min(P, h), min(P, w)
            y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            crops = [f[y : y + ph, x : x + pw] for f in frames]
        linear = bool(rng.uniform() < p.linear_fraction)
        sharp = _fit(crops[len(crops) // 2].astype(np.float32) / 255.0, P)
        if still:
            return sharp, sharp
        return _fit(temporal_average(crops, linear=linear, gamma=p.gamma), P), sharp

    def _raw_camera(
        self, rng: np.random.Generator, frames: Sequence[np.ndarray], P: int, *, still: bool = False
    ) -> list[np.ndarray]:
        """The window ``frames`` as a hand-held camera would have recorded it: frame ``k`` is seen
        through map ``k`` of a ``camera_path``, so the scene's own motion (people, cars) and the
        camera's add up, as in hand-held video. The clip's training frames have a still camera
        (``--motion-stats``), so without this its real motion is never seen with camera blur.
        With ``still`` only the centre frame is rendered (a list of one)."""
        p = self.params
        maps = camera_path(
            rng, frames=len(frames), speed=p.camera_speed, turn=p.camera_turn, zoom=p.camera_zoom
        )
        h, w = frames[0].shape[:2]
        m = camera_path_margin(maps, P)
        # Mirrored borders stand in where a small frame cannot hold the path's margin.
        ylo, yhi = min(m + P // 2, h // 2), max(h - m - (P - P // 2), h // 2)
        xlo, xhi = min(m + P // 2, w // 2), max(w - m - (P - P // 2), w // 2)
        centre = (int(rng.integers(ylo, yhi + 1)), int(rng.integers(xlo, xhi + 1)))
        wanted = [len(frames) // 2] if still else range(len(frames))
        return [
            render_camera_motion(frames[k], maps[k : k + 1], centre=centre, size=P)[0]
            for k in wanted
        ]

    def _photo(
        self, rng: np.random.Generator, P: int, *, still: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        img = self.photos[int(rng.integers(len(self.photos)))]
        # Drawn only when on (after the photo's draw), so runs without it keep their stream.
        if p.graphics_fraction > 0 and rng.uniform() < p.graphics_fraction:
            img = render_graphic(rng, GRAPHIC_SIDE)
        # Drawn only when enabled, so runs without camera motion keep their exact sample stream.
        if p.camera_fraction > 0 and rng.uniform() < p.camera_fraction:
            return self._camera(rng, img, P, still=still)
        if self.kernels and rng.uniform() < p.real_kernel_fraction:
            k = self.kernels[int(rng.integers(len(self.kernels)))]
        else:
            k = random_psf(rng, max_size=p.psf_max_size, exposure=p.exposure, centre=p.psf_centre)
        crop, scale = self._photo_crop(rng, img, P, max(k.shape) // 2 + 1, still=still)
        crop = _resize(crop.astype(np.float32) / 255.0, scale)
        hh, ww = crop.shape[:2]
        oy, ox = max(0, (hh - P) // 2), max(0, (ww - P) // 2)
        sharp = _fit(crop[oy : oy + P, ox : ox + P], P)
        if still:
            return sharp, sharp
        blur = blur_with_kernel(crop, k)[oy : oy + P, ox : ox + P]
        return _fit(blur, P), sharp

    def _photo_crop(
        self, rng: np.random.Generator, img: np.ndarray, P: int, margin: int, *, still: bool = False
    ) -> tuple[np.ndarray, float]:
        """A random rescale factor of ``photo_scale`` (``still_scale`` for a still sample, when
        set) and the (unscaled, uint8) crop of ``img`` that holds a ``P`` px patch plus
        ``margin`` px on each side after that rescale."""
        p = self.params
        # One draw either way, so the rest of the sample stream does not move.
        scale = float(rng.uniform(*(p.still_scale if still and p.still_scale else p.photo_scale)))
        need = int(math.ceil((P + 2 * margin) / scale))
        h, w = img.shape[:2]
        ch, cw = min(need, h), min(need, w)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return img[y : y + ch, x : x + cw], scale

    def _camera(
        self, rng: np.random.Generator, img: np.ndarray, P: int, *, still: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """A photo filmed by a moving camera and averaged over a GoPro window: whole-frame,
        spatially varying blur like the raw clip's held-out frames, on any content."""
        p = self.params
        n = int(p.raw_windows[int(rng.integers(len(p.raw_windows)))])
        maps = camera_path(
            rng, frames=n, speed=p.camera_speed, turn=p.camera_turn, zoom=p.camera_zoom
        )
        crop, scale = self._photo_crop(rng, img, P, camera_path_margin(maps, P), still=still)
        crop = _resize(crop, scale)
        # Each frame is rendered through its own map: the centre one alone is the same frame.
        frames = render_camera_motion(
            crop,
            maps[n // 2 : n // 2 + 1] if still else maps,
            centre=(crop.shape[0] // 2, crop.shape[1] // 2),
            size=P,
        )
        linear = bool(rng.uniform() < p.linear_fraction)
        sharp = frames[len(frames) // 2].astype(np.float32) / 255.0
        if still:
            return sharp, sharp
        return temporal_average(frames, linear=linear, gamma=p.gamma), sharp

    def _gopro(
        self, rng: np.random.Generator, P: int, *, still: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        # Nothing is synthesised here (the blur is read from disk); ``still`` is taken for the
        # common signature. The blurry file is still read: it decides which pairs are usable.
        for _ in range(10):
            bp, sp = self.gopro[int(rng.integers(len(self.gopro)))]
            b, s = load_image(bp), load_image(sp)
            if b is not None and s is not None and b.shape == s.shape:
                break
        else:
            raise RuntimeError("ten unreadable GoPro pairs in a row")
        h, w = b.shape[:2]
        ph, pw = min(P, h), min(P, w)
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        return _fit(b[y : y + ph, x : x + pw], P), _fit(s[y : y + ph, x : x + pw], P)

    def _webcam(self, blur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        if rng.uniform() < p.noise_prob:
            peak = float(rng.uniform(*p.poisson_peak)) if rng.uniform() < p.poisson_prob else None
            blur = add_noise(
                blur, rng, gaussian_sigma=float(rng.uniform(*p.noise_sigma)), poisson_peak=peak
            )
        if rng.uniform() < p.jpeg_prob:
            blur = jpeg_compress(blur, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))
        return blur


def _fit(img: np.ndarray, P: int) -> np.ndarray:
    """Reflect-pad an image smaller than ``P`` up to ``(P, P)`` (small sources still batch)."""
    h, w = img.shape[:2]
    if h >= P and w >= P:
        return np.ascontiguousarray(img[:P, :P], dtype=np.float32)
    img = cv2.copyMakeBorder(img, 0, max(0, P - h), 0, max(0, P - w), cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(img[:P, :P], dtype=np.float32)


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def _pack(blur, sharp, teacher, *, source: int, rejected: int) -> dict[str, Any]:
    has_teacher = teacher is not None
    return {
        "blur": _chw(blur),
        "sharp": _chw(sharp),
        "teacher": _chw(teacher) if has_teacher else torch.zeros(3, *blur.shape[:2]),
        "has_teacher": torch.tensor(has_teacher),
        "source": torch.tensor(source),
        "rejected": torch.tensor(rejected),
    }


class IndexBatches(Sampler[list[int]]):
    """Batches of consecutive sample indices ``start, start+1, ...``: the data position is one int.

    With ``world_size > 1`` each rank takes its own interleaved indices so ranks never repeat.
    """

    def __init__(
        self, *, start: int, n_batches: int, batch: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.start, self.n_batches, self.batch = start, n_batches, batch
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.n_batches):
            base = self.start + b * self.batch
            yield [(base + i) * self.world_size + self.rank for i in range(self.batch)]

    def __len__(self) -> int:
        return self.n_batches


# --------------------------------------------------------------------------------------------
# Teacher cache: teacher outputs for a fixed set of patches, keyed by the blurry patch's hash
# --------------------------------------------------------------------------------------------


def damaged_record(path: str | Path) -> str | None:
    """The first record of a ``torch.save`` file whose bytes fail their CRC-32 (or whose index
    entry cannot be read), None when all pass (or the file is no zip archive: the legacy format
    has no checksums to test; or its index cannot be read: ``torch.load`` then says so)."""
    # torch.load does not test them: a flipped byte in the sharp or teacher arrays loaded as
    # data, and only the blurry patches are keyed by content, so the trainer distilled on it.
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError):
        return None  # not a zip, or its index damaged: torch.load says which
    with archive:
        for info in archive.infolist():
            # As ZipFile.testzip, which let a damaged index entry's error through (a version
            # or compression it does not know, an offset out of the file): a traceback.
            try:
                with archive.open(info) as record:
                    while record.read(1 << 20):
                        pass
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, zlib.error):
                return info.filename
    return None


class TeacherCache:
    """Cached ``(blurry, sharp, teacher)`` uint8 patches ``(N, P, P, 3)`` keyed by blurry content hash."""

    def __init__(
        self,
        blur: np.ndarray,
        sharp: np.ndarray,
        teacher: np.ndarray,
        keys: list[str],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not (blur.shape == sharp.shape == teacher.shape) or len(keys) != len(blur):
            raise ValueError(
                f"inconsistent teacher cache: blur {blur.shape}, sharp {sharp.shape}, "
                f"teacher {teacher.shape}, {len(keys)} keys"
            )
        self.blur, self.sharp, self.teacher, self.keys = blur, sharp, teacher, keys
        self.meta = dict(meta or {})  # the settings it was made with (cache_teacher.cache_meta)
        self.index = {k: i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def patch(self) -> int:
        return int(self.blur.shape[1]) if len(self) else 0

    @classmethod
    def load(cls, path: str | Path, *, min_gain_db: float | None = None) -> TeacherCache:
        """Read a cache written by ``python -m training.cache_teacher``; entries whose stored key
        does not match their content are dropped with a warning, and so are those where the
        teacher beats the blurry input by less than ``min_gain_db`` (when given); a file whose
        bytes fail their checksum, that is cut short or that is no cache is refused
        (``ValueError``)."""
        # cache_teacher will not overwrite such a file (it might be something else): it goes.
        rebuild = "delete it and rebuild it with python -m training.cache_teacher"
        damaged = damaged_record(path)
        if damaged is not None:
            raise ValueError(
                f"teacher cache {path} is damaged (its record {damaged} fails its checksum): "
                f"{rebuild}"
            )
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file cut short fails in many ways
            # A copy cut short or a damaged zip index: torch's traceback (an OSError, or a
            # paragraph about miniz) ended the run; damaged_record only tests whole records.
            raise ValueError(
                f"teacher cache {path} cannot be read (cut short or damaged: "
                f"{type(exc).__name__}): {rebuild}"
            ) from None
        if not isinstance(data, Mapping) or not all(
            k in data for k in ("blur", "sharp", "teacher", "keys")
        ):
            raise ValueError(
                f"{path} is not a teacher cache (no blur, sharp, teacher and keys: a trainer "
                f"checkpoint?): name the file python -m training.cache_teacher wrote"
            )
        blur, sharp, teacher = (data[k].numpy() for k in ("blur", "sharp", "teacher"))
        keys = list(data["keys"])
        good = [i for i, k in enumerate(keys) if content_hash(blur[i]) == k]
        if len(good) != len(keys):
            log.warning(
                "teacher cache %s: %d entries do not match their key, dropped",
                path,
                len(keys) - len(good),
            )
        if min_gain_db is not None:
            kept = [
                i
                for i in good
                if psnr_np(teacher[i] / 255.0, sharp[i] / 255.0)
                - psnr_np(blur[i] / 255.0, sharp[i] / 255.0)
                >= min_gain_db
            ]
            log.info(
                "teacher cache %s: %d of %d patches kept (teacher gains >= %.2f dB over blurry)",
                path,
                len(kept),
                len(good),
                min_gain_db,
            )
            good = kept
        return cls(
            blur[good], sharp[good], teacher[good], [keys[i] for i in good], data.get("meta")
        )

    def lookup(self, blur: np.ndarray) -> np.ndarray | None:
        """Teacher output (float ``(H, W, 3)``) for exactly this blurry patch, if cached."""
        i = self.index.get(content_hash(blur))
        return None if i is None else self.teacher[i].astype(np.float32) / 255.0

    def sample(self, rng: np.random.Generator, P: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A random cached triple cropped to ``P`` (pads if the cache patches are smaller)."""
        i = int(rng.integers(len(self)))
        h, w = self.blur.shape[1:3]
        ph, pw = min(P, h), min(P, w)
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        out = [
            _fit(a[i, y : y + ph, x : x + pw].astype(np.float32) / 255.0, P)
            for a in (self.blur, self.sharp, self.teacher)
        ]
        return out[0], out[1], out[2]


# --------------------------------------------------------------------------------------------
# Validation sets
# --------------------------------------------------------------------------------------------


def raw_validation_pairs(
    seq: RawSequence,
    *,
    sizes: Sequence[int] = (7, 11),
    count: int = 6,
    crop: int = 0,
    linear_modes: Sequence[bool] = (False, True),
    gamma: float = 2.2,
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """A fixed validation set from held-out frames: ``count`` evenly spaced centres per window
    size and averaging mode; centre crop of ``crop`` px (0 = whole frame). Returns
    ``(blurry, sharp, name)`` float32 ``(H, W, 3)``."""
    out = []
    for size in sizes:
        starts = seq.windows(size)
        if not starts:
            continue
        picks = np.unique(
            np.linspace(0, len(starts) - 1, num=min(count, len(starts))).round().astype(int)
        )
        for pi in picks:
            s = starts[pi]
            frames = seq.frames[s : s + size]
            h, w = frames[0].shape[:2]
            if crop:
                ch, cw = min(crop, h), min(crop, w)
                y, x = (h - ch) // 2, (w - cw) // 2
                frames = [f[y : y + ch, x : x + cw] for f in frames]
            sharp = frames[size // 2].astype(np.float32) / 255.0
            for linear in linear_modes:
                blur = temporal_average(frames, linear=linear, gamma=gamma)
                name = f"{Path(seq.name).name}_c{seq.numbers[s + size // 2]}_w{size}_{'lin' if linear else 'plain'}"
                out.append((blur, sharp, name))
    return out


# --------------------------------------------------------------------------------------------
# Procedural data for tests and the smoke config
# --------------------------------------------------------------------------------------------


GRAPHIC_SIDE = 768  # px: a graphic is a photo-sized canvas, cropped and rescaled like one
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:-+%$"


def _graphic_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Half the time a fully saturated colour (a channel at 0 and one at 255, as slides and
    logos have), else any colour, black or white."""
    u = rng.uniform()
    if u < 0.5:
        c = np.zeros(3)
        c[int(rng.integers(3))] = 255
        c[int(rng.integers(3))] = 255
        c[c == 0] = 255 * (rng.uniform() < 0.3) * rng.uniform()
        order = rng.permutation(3)
        return tuple(int(v) for v in c[order])
    if u < 0.7:
        v = 255 * int(rng.integers(2))
        return (v, v, v)
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def render_graphic(rng: np.random.Generator, side: int = 768) -> np.ndarray:
    """A random screen-like graphic ``(side, side, 3)`` uint8 RGB: flat (often saturated)
    panels, anti-aliased text of several fonts and sizes, rules, boxes and discs.

    Photos rarely hold what slides, posters and shared screens do (flat saturated colour, thin
    high-contrast glyphs): a student that never saw them smudges them (white text on magenta,
    ``--data sharp:`` in TRAINING_LOG.md). Drawn at twice the size and area-downsampled, so
    edges are as crisp as a rendered screen's.
    """
    s = 2 * side
    img = np.empty((s, s, 3), np.uint8)
    img[:] = _graphic_colour(rng)
    if rng.uniform() < 0.3:  # a gradient backdrop
        a, b = (
            np.array(_graphic_colour(rng), np.float32),
            np.array(_graphic_colour(rng), np.float32),
        )
        ramp = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
        img = (a + (b - a) * ramp).astype(np.uint8).repeat(s, axis=1)
    for _ in range(int(rng.integers(2, 6))):  # panels
        p1 = rng.integers(0, s, size=2)
        p2 = p1 + rng.integers(s // 8, s // 2, size=2)
        cv2.rectangle(
            img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), _graphic_colour(rng), -1
        )
    for _ in range(int(rng.integers(6, 16))):
        kind = rng.uniform()
        colour = _graphic_colour(rng)
        p1 = (int(rng.integers(0, s)), int(rng.integers(0, s)))
        if kind < 0.65:
            n = int(rng.integers(3, 24))
            text = "".join(_GLYPHS[int(i)] for i in rng.integers(len(_GLYPHS), size=n))
            scale = float(np.exp(rng.uniform(np.log(0.6), np.log(5.0))))
            thick = max(1, int(round(scale * rng.uniform(0.8, 2.5))))
            font = _FONTS[int(rng.integers(len(_FONTS)))]
            cv2.putText(img, text, p1, font, scale, colour, thick, cv2.LINE_AA)
        elif kind < 0.8:
            p2 = (
                int(rng.integers(0, s)),
                p1[1] if rng.uniform() < 0.6 else int(rng.integers(0, s)),
            )
            cv2.line(img, p1, p2, colour, int(rng.integers(2, 12)), cv2.LINE_AA)
        elif kind < 0.9:
            p2 = (p1[0] + int(rng.integers(20, s // 3)), p1[1] + int(rng.integers(20, s // 3)))
            cv2.rectangle(img, p1, p2, colour, int(rng.integers(2, 10)), cv2.LINE_AA)
        else:
            r = int(rng.integers(8, s // 6))
            cv2.circle(img, p1, r, colour, -1 if rng.uniform() < 0.5 else 6, cv2.LINE_AA)
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


def procedural_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random sharp scene ``(h, w, 3)`` uint8: textured background, shapes, lines and text."""
    img = np.empty((h, w, 3), np.uint8)
    base = rng.integers(40, 216, size=3)
    img[:] = base
    # A low-frequency texture so the background is not flat.
    noise = cv2.resize(
        rng.uniform(-40, 40, size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.float32), (w, h)
    )
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    # Checkerboard patch: strong edges at every orientation.
    cs = int(rng.integers(4, 12))
    cy, cx = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    yy, xx = np.mgrid[0 : h // 3, 0 : w // 3]
    board = (((yy // cs) + (xx // cs)) % 2 * 200 + 28).astype(np.uint8)
    img[cy : cy + h // 3, cx : cx + w // 3] = board[: h - cy, : w - cx, None][: h // 3, : w // 3]
    for _ in range(int(rng.integers(8, 20))):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = int(rng.integers(4))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            cv2.rectangle(img, p1, p2, color, -1 if rng.uniform() < 0.5 else 2)
        elif kind == 1:
            cv2.circle(
                img,
                p1,
                int(rng.integers(3, max(4, min(h, w) // 4))),
                color,
                -1 if rng.uniform() < 0.5 else 2,
            )
        elif kind == 2:
            cv2.line(img, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, size=int(rng.integers(3, 8))))
            cv2.putText(
                img,
                text,
                p1,
                cv2.FONT_HERSHEY_SIMPLEX,
                float(rng.uniform(0.4, 1.2)),
                color,
                int(rng.integers(1, 3)),
                cv2.LINE_AA,
            )
    return img


def make_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    *,
    frames: int = 40,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    n_photos: int | None = None,
    speed: float = 0.8,
) -> dict[str, Path]:
    """Write a small dataset made here: ``n`` raw-frame-like sequences and sharp photos.

    ``raw/seq_XX/000001.png ...``: a procedural scene (plus scikit-image samples when available)
    panned along a smooth random path at about ``speed`` px per frame, so averaging consecutive
    frames makes real motion blur. ``photos/*.png``: sharp procedural scenes and scikit-image's
    sample images. ``eval/*.png``: a few other scenes (for the leakage guard). Returns the folders.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    w, h = size
    raw_root, photo_root, eval_root = out / "raw", out / "photos", out / "eval"
    for d in (raw_root, photo_root, eval_root):
        d.mkdir(parents=True, exist_ok=True)
    samples = _skimage_samples()
    for si in range(n):
        margin = int(speed * frames) + 8
        big_h, big_w = h + 2 * margin, w + 2 * margin
        if samples and si % 2 == 1:
            scene = cv2.resize(
                samples[si % len(samples)], (big_w, big_h), interpolation=cv2.INTER_AREA
            )
        else:
            scene = procedural_scene(rng, big_h, big_w)
        seq_dir = raw_root / f"seq_{si:02d}"
        seq_dir.mkdir(exist_ok=True)
        angle = rng.uniform(0, 2 * math.pi)
        turn = rng.uniform(-0.05, 0.05)
        pos = np.zeros(2)
        for t in range(frames):
            angle += turn + rng.normal(0, 0.03)
            pos += speed * np.array([math.cos(angle), math.sin(angle)]) * rng.uniform(0.6, 1.4)
            pos = np.clip(pos, -margin + 2, margin - 2)
            m = np.float32([[1, 0, -(margin + pos[0])], [0, 1, -(margin + pos[1])]])
            frame = cv2.warpAffine(
                scene, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            cv2.imwrite(str(seq_dir / f"{t + 1:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    n_photos = n_photos if n_photos is not None else max(4, n * 2)
    for i in range(n_photos):
        if samples and i < len(samples):
            img = samples[i]
        else:
            img = procedural_scene(rng, h * 2, w * 2)
        cv2.imwrite(str(photo_root / f"photo_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    for i in range(2):
        img = procedural_scene(rng, h, w)
        cv2.imwrite(str(eval_root / f"eval_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return {"raw": raw_root, "photos": photo_root, "eval": eval_root}


def _skimage_samples() -> list[np.ndarray]:
    """A few of scikit-image's bundled colour sample images (uint8 RGB), if it is installed."""
    try:
        from skimage import data as skdata
    except ImportError:
        return []
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        try:
            img = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - a missing sample must not break data generation
            continue
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(np.ascontiguousarray(img[:, :, :3]))
    return out


def window_blur_stats(
    seq: RawSequence, sizes: Sequence[int], *, ranges: Mapping[str, tuple[int, int]], step: int = 4
) -> list[dict[str, Any]]:
    """How blurred plain temporal averages of ``seq`` are: per window size and frame range, the
    PSNR of the average against its centre frame, over every ``step``-th centre whose window
    lies inside the range. Returns rows ``{size, range, windows, mean_db, p10_db, min_db}``."""
    out: list[dict[str, Any]] = []
    for size in sizes:
        starts = seq.windows(size)
        for label, (lo, hi) in ranges.items():
            values = []
            for s in starts[::step]:
                first, last = seq.numbers[s], seq.numbers[s + size - 1]
                if first < lo or last > hi:
                    continue
                frames = seq.frames[s : s + size]
                blur = temporal_average(frames, linear=False)
                values.append(psnr_np(blur, frames[size // 2].astype(np.float32) / 255.0))
            if values:
                v = np.asarray(values)
                out.append(
                    dict(
                        size=size,
                        range=f"{label} {lo}-{hi}",
                        windows=len(v),
                        mean_db=round(float(v.mean()), 2),
                        p10_db=round(float(np.percentile(v, 10)), 2),
                        min_db=round(float(v.min()), 2),
                    )
                )
    return out


def frame_motion_stats(
    seq: RawSequence, *, ranges: Mapping[str, tuple[int, int]], step: int = 4
) -> list[dict[str, Any]]:
    """How far the pixels of ``seq`` move from one frame to the next (Farneback optical flow on
    grey frames), per frame range, over every ``step``-th consecutive pair inside it. A pair's
    median magnitude is whole-frame (camera) motion; its 90th percentile also sees moving objects.
    Returns rows ``{range, pairs, median_px, p90_px, max_p90_px}`` (medians over the pairs)."""
    out: list[dict[str, Any]] = []
    for label, (lo, hi) in ranges.items():
        medians, p90s = [], []
        for i in range(0, len(seq.frames) - 1, step):
            a, b = seq.numbers[i], seq.numbers[i + 1]
            if b != a + 1 or a < lo or b > hi:
                continue
            g0, g1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in seq.frames[i : i + 2])
            flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 4, 21, 3, 5, 1.1, 0)
            mag = np.hypot(flow[..., 0], flow[..., 1])
            medians.append(float(np.median(mag)))
            p90s.append(float(np.percentile(mag, 90)))
        if medians:
            out.append(
                dict(
                    range=f"{label} {lo}-{hi}",
                    pairs=len(medians),
                    median_px=round(float(np.median(medians)), 2),
                    p90_px=round(float(np.median(p90s)), 2),
                    max_p90_px=round(float(np.max(p90s)), 2),
                )
            )
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m training.data --make-synthetic DIR [--sequences N]``: the smoke config's data.
    ``python -m training.data --blur-stats FRAME_DIR``: how blurred its temporal averages are.
    ``python -m training.data --motion-stats FRAME_DIR``: how fast its frames move (optical flow)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.data", description=main.__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--make-synthetic", metavar="DIR")
    what.add_argument("--blur-stats", metavar="FRAME_DIR")
    what.add_argument("--motion-stats", metavar="FRAME_DIR")
    parser.add_argument("--sequences", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", default="7,13,21", help="window sizes for --blur-stats")
    parser.add_argument("--train", default="1,239", help="training frame range for --blur-stats")
    parser.add_argument("--held-out", default="240,299", help="held-out frame range")
    parser.add_argument("--step", type=int, default=4, help="every STEP-th window centre")
    args = parser.parse_args(argv)
    if args.make_synthetic:
        dirs = make_synthetic_dataset(args.make_synthetic, args.sequences, seed=args.seed)
        print("\n".join(f"{k}: {v}" for k, v in dirs.items()))
        return
    try:
        sizes = [int(w) for w in args.windows.split(",")]
        t0, t1 = (int(v) for v in args.train.split(","))
        h0, h1 = (int(v) for v in args.held_out.split(","))
        if any(w < 1 or w % 2 == 0 for w in sizes):
            raise ValueError
    except ValueError:
        parser.error("--windows takes odd sizes (7,13,21); --train / --held-out take FIRST,LAST")
    folder = args.blur_stats or args.motion_stats
    if not Path(folder).is_dir():
        parser.error(f"no folder {folder}")
    seq = RawSequence.load(folder, first=min(t0, h0), last=max(t1, h1))
    ranges = {"train": (t0, t1), "held-out": (h0, h1)}
    if args.motion_stats:
        print("| frames | pairs | median px/frame | p90 px/frame | largest p90 |")
        print("|---|---:|---:|---:|---:|")
        for r in frame_motion_stats(seq, ranges=ranges, step=max(1, args.step)):
            print(
                f"| {r['range']} | {r['pairs']} | {r['median_px']:.2f} | {r['p90_px']:.2f} | "
                f"{r['max_p90_px']:.2f} |"
            )
        return
    rows = window_blur_stats(seq, sizes, ranges=ranges, step=max(1, args.step))
    print("| window | frames | windows | mean dB | p10 dB | min dB |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']} | {r['range']} | {r['windows']} | {r['mean_db']:.2f} | "
            f"{r['p10_db']:.2f} | {r['min_db']:.2f} |"
        )


if __name__ == "__main__":
    main()
