"""Evaluate students beside the blurry input, unsharp mask and (optionally) the teacher.

    python -m training.evaluate --model runs/fast/best.pt --data raw:../shared/data/train/gopro_raw_240fps/GOPR0477_11_00 \\
        --teacher dmphn --teacher-weights ../shared/weights/teachers/dmphn_1_2_4 --out runs/eval/fast
    python -m training.evaluate --model weights/student_fast.onnx --data demo: --teacher dmphn --out assets/demo

Models: trainer checkpoints (``.pt`` with the config inside) run in PyTorch; ``.onnx`` files run
in ONNX Runtime exactly as shipped (fp16 files get float16 input). ``--model`` may be repeated.

Data (``--data``, repeatable), each giving one or two sets:
  * ``raw:DIR[:first-last]`` held-out raw high-frame-rate frames (default 240-299): windows of
    ``--windows`` frames (odd, at least 3; the GoPro dataset's are 7-13) centred every
    ``--raw-stride`` frames from ``first+10``, entirely inside the range (the centres the
    largest window fits, the same for every size);
    sharp = centre frame; sets ``raw-plain`` / ``raw-linear`` (sRGB average / linear-light
    average, per ``--plain/--linear/--both``).
  * ``gopro:DIR`` GoPro layout (``.../<seq>/{blur,blur_gamma,sharp}``, searched below DIR);
    sets ``gopro-plain`` (``blur``) / ``gopro-linear`` (``blur_gamma``).
  * ``lai:DIR`` Lai et al. 2016: ``DIR/sharp`` x ``DIR/kernels``, blurred here with each kernel
    centred on its centre of mass (an off-centre kernel would also shift the image).
  * ``demo:`` scikit-image's sample images with synthetic hand shake (the README picture).
  * ``camera:DIR`` every sharp image in DIR filmed by a simulated moving camera (seeded per image
    and window, ``CAMERA_SPEED`` px per frame) and averaged over ``--windows`` frames as the raw
    frames are: GoPro-style whole-frame blur on content other than the one raw clip. Sets
    ``camera-plain`` / ``camera-linear``; a square centre crop whose frames all stay inside.
  * ``pairs:BLUR_DIR,SHARP_DIR`` any folders of blurry/sharp images matched by file name.
  * ``sharp:DIR`` every sharp image in DIR as its own input and reference (set ``sharp``): how
    much each method changes a frame with nothing to deblur, as most frames of a call are (a
    still person, a screen). The input's row scores the PSNR cap by construction; a method that
    leaves sharp frames alone stays near it, one that sharpens or invents detail drops.
  * ``real:DIR`` real blurry images with no ground truth (searched below DIR): the teacher's
    output is the reference (needs ``--teacher``), so these sets measure how far each method
    moves towards what a GoPro-trained network makes of real blur of other scenes, the one check
    of that kind possible without sharp frames. It rewards copying the teacher's
    own mistakes too; read it beside the sets with ground truth. Images the teacher changes by
    less than ``REAL_KEPT_DB`` (sharp already, or blur beyond it) go to ``real-vs-teacher-kept``,
    the rest to ``real-vs-teacher-changed``.

``--low-light PEAK[,SIGMA]`` films every set with ground truth in poor light instead: the
blurry input gets a dim webcam's noise (Poisson shot noise at PEAK photons for white, Gaussian
read noise SIGMA, 8-bit output), seeded per image so every method sees the same frame, and is
still scored against the clean sharp frame. Sets are named ``<set>-lowlight<PEAK>``. The noise
goes on the encoded picture (its grain grows with brightness), or with ``--noise-in sensor`` on
linear light before the sRGB curve, as a camera counts photons and then encodes them (even
grain from mid-tones up, the shadows noisiest; sets ``<set>-lowlight<PEAK>-sensor``).

Outputs in ``--out``: ``per_image.csv``, ``summary.json``, ``summary.md`` and one
``grid_<set>.png`` (crops: blurry | student | teacher | sharp) per set. Teacher outputs are
cached on disk keyed by the teacher, its code (``teacher_code_key``), its weights and the
input's content hash, so re-runs cost only the students.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import inspect
import json
import logging
import math
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from training import data as D
from training.metrics import (
    UNSHARP_AMOUNT,
    UNSHARP_SIGMA,
    PerceptualDistance,
    ms_ssim,
    psnr,
    ssim,
    unsharp_mask,
)

log = logging.getLogger("training.evaluate")

__all__ = [
    "Sample",
    "DataSpec",
    "check_raw_range_held_out",
    "evaluate",
    "iter_samples",
    "load_model_runner",
    "low_light",
    "main",
    "parse_data",
    "self_ensemble",
    "weights_fingerprint",
]

_REPO = Path(__file__).resolve().parents[1]
METRICS = ("psnr", "ssim", "ms_ssim", "perceptual")
RAW_DEFAULT_RANGE = (240, 299)  # the held-out frames of the raw GoPro sequence
RAW_FIRST_OFFSET = 10  # raw: the first window centre is this many frames after the range's first
# The camera: set's speed in px per 240 fps frame: around the held-out frames' whole-frame motion
# (median 1.5, p90 2.7 px: python -m training.data --motion-stats).
CAMERA_SPEED = (1.0, 3.0)
CAMERA_TURN, CAMERA_ZOOM = 0.1, 0.002  # degrees and relative scale per frame, at most
REAL_SET = "real-vs-teacher"  # real blur, no ground truth: scored against the teacher's output
# Real images the teacher changes by less than this (PSNR of its output against the input) are
# ones it leaves nearly as they are: sharp already (some sample folders hold other papers'
# deblurred results) or blurred beyond what it handles. They form their own set, which tells how
# much a method changes such frames, not whether it deblurs.
REAL_KEPT_DB = 30.0
DEMO_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


@dataclass
class Sample:
    """One evaluation pair: ``blurry`` and ``sharp`` float32 ``(H, W, 3)`` RGB in [0, 1].

    ``sharp`` is None for real blur without ground truth: ``evaluate`` then scores against the
    teacher's output."""

    set: str
    name: str
    blurry: np.ndarray
    sharp: np.ndarray | None
    # The frames a camera gave before ``blurry``, oldest first, as ``blurry`` (``--denoise``).
    history: tuple[np.ndarray, ...] = ()


@dataclass
class DataSpec:
    kind: str  # raw | gopro | lai | demo | camera | pairs | sharp | real
    path: str
    first: int = RAW_DEFAULT_RANGE[0]
    last: int = RAW_DEFAULT_RANGE[1]
    blur_dir: str = ""
    sharp_dir: str = ""


def parse_data(spec: str) -> DataSpec:
    """``raw:DIR[:first-last]``, ``gopro:DIR``, ``lai:DIR``, ``demo:``, ``camera:DIR``,
    ``pairs:BLUR,SHARP``, ``sharp:DIR``, ``real:DIR``."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in (
        "raw",
        "gopro",
        "lai",
        "demo",
        "camera",
        "pairs",
        "sharp",
        "real",
    ):
        raise ValueError(
            f"bad --data {spec!r}: expected raw:DIR[:first-last], gopro:DIR, lai:DIR, demo:, "
            "camera:DIR, pairs:BLUR_DIR,SHARP_DIR, sharp:DIR or real:DIR"
        )
    first, last = RAW_DEFAULT_RANGE
    blur_dir = sharp_dir = ""
    folders = [rest]
    if kind == "raw":
        m = re.fullmatch(r"(.*):(\d+)-(\d+)", rest)
        if m:
            rest, first, last = m.group(1), int(m.group(2)), int(m.group(3))
            if first > last:
                raise ValueError(f"bad frame range in {spec!r}: {first} > {last}")
        folders = [rest]
    elif kind == "pairs":
        blur_dir, comma, sharp_dir = rest.partition(",")
        if not comma:
            raise ValueError(f"bad --data {spec!r}: expected pairs:BLUR_DIR,SHARP_DIR")
        folders = [blur_dir, sharp_dir]
    elif kind == "demo":
        folders = []
    # An empty folder is the current directory to Path(""), which was then searched for images.
    if not all(folders):
        raise ValueError(f"bad --data {spec!r}: {kind} needs a folder")
    return DataSpec(kind, rest, first=first, last=last, blur_dir=blur_dir, sharp_dir=sharp_dir)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _fit(img: np.ndarray, max_size: int) -> np.ndarray:
    """Downscale ``(H, W, 3)`` so its longest side is at most ``max_size`` (area filter)."""
    h, w = img.shape[:2]
    if max_size and max(h, w) > max_size:
        s = max_size / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return img


def _center_crop(img: np.ndarray, crop: int) -> np.ndarray:
    if not crop:
        return img
    h, w = img.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def _modes(mode: str) -> list[tuple[str, bool]]:
    """(suffix, linear) for --plain / --linear / --both."""
    return {"plain": [("plain", False)], "linear": [("linear", True)]}.get(
        mode, [("plain", False), ("linear", True)]
    )


def demo_kernel(seed: int, size: int = 15) -> np.ndarray:
    """A hand-shake PSF about ``size`` px across: a smooth curved path (a drift plus two slow
    wobbles, as a hand moves during a 1/30 s exposure), rasterised, centred, summing to 1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, 400)
    angle = rng.uniform(0, 2 * math.pi)
    path = np.exp(1j * angle) * (t - 0.5)
    for _ in range(2):
        amp = rng.uniform(0.1, 0.3)
        path += (
            amp
            * np.exp(1j * rng.uniform(0, 2 * math.pi))
            * np.sin(2 * math.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * math.pi))
        )
    extent = max(np.ptp(path.real), np.ptp(path.imag), 1e-6)
    return D.trajectory_to_psf(path * (size - 3) / extent, size=size, exposure=1.0)


def check_windows(windows: Sequence[int]) -> None:
    """Raise ValueError unless ``windows`` is a non-empty list of odd sizes >= 3: the sharp
    target is the centre frame, which an even window does not have."""
    if not windows:
        raise ValueError("no window sizes given")
    for w in windows:
        if w % 2 != 1 or w < 3:
            raise ValueError(f"windows must be odd and >= 3, got {w}")


def raw_centres(first: int, last: int, windows: Sequence[int], stride: int) -> list[int]:
    """The centres (1-based frame numbers) scored in frames ``[first, last]``: every ``stride``
    frames from ``first + RAW_FIRST_OFFSET``, keeping those around which the *largest* window
    fits inside the range, so every window size is scored on the same frames (a centre that
    only the small windows fit would weigh the set's mean towards them)."""
    nominal = range(first + RAW_FIRST_OFFSET, last + 1, stride)
    first = max(1, first)

    def fits(c: int, size: int) -> bool:
        return c - size // 2 >= first and c + size // 2 <= last

    kept = [c for c in nominal if fits(c, max(windows))]
    # A centre that no window fits (at the range's end) was never scored; one that only the
    # smaller windows fit used to be, for them alone: say so.
    partly = [c for c in nominal if c not in kept and fits(c, min(windows))]
    if partly:
        log.warning(
            "raw: centres %s dropped for every window: a %d-frame window does not fit them "
            "inside frames %d-%d",
            partly,
            max(windows),
            first,
            last,
        )
    return kept


def check_raw_range_held_out(
    first: int,
    last: int,
    path: str | Path = "",
    train_range: Sequence[int] | None = None,
    who: str = "the students",
) -> bool:
    """Whether raw frames ``first..last`` stay clear of training frames ``train_range``
    (default: the trainer's ``data.raw_train_range``, 1-239); warns when they do not.

    The raw sets are named alike whatever range they come from, so frames a student was
    trained on would be scored and read as held-out. ``who`` names the model in the warning
    when ``train_range`` is one checkpoint's own."""
    from training.config import DataConfig

    train_first, train_last = train_range or DataConfig().raw_train_range
    if first > train_last or last < train_first:
        return True
    log.warning(
        "raw: %s frames %d-%d include frames %s trained on (%d-%d, data.raw_train_range):"
        " these scores are not held-out%s",
        path,
        first,
        last,
        who,
        train_first,
        train_last,
        "" if train_range else "; the held-out frames are {}-{}".format(*RAW_DEFAULT_RANGE),
    )
    return False


def raw_spec_centres(spec: DataSpec, windows: Sequence[int], raw_stride: int) -> list[int]:
    """The window centres a ``raw:`` spec scores (its range cut to the clip's frames)."""
    last = min(spec.last, len(D.list_frames(spec.path)))
    return raw_centres(spec.first, last, windows, raw_stride)


def raw_span(spec: DataSpec, windows: Sequence[int], raw_stride: int) -> tuple[int, int] | None:
    """The first and last frame a ``raw:`` spec scores with ``windows`` (None: no centre)."""
    centres = raw_spec_centres(spec, windows, raw_stride)
    if not centres:
        return None
    return min(centres) - max(windows) // 2, max(centres) + max(windows) // 2


def check_trained_on(
    specs: Sequence[DataSpec],
    trained: Sequence[tuple[str, Any]],
    windows: Sequence[int],
    raw_stride: int,
) -> list[str]:
    """Warn for every ``raw:`` clip a checkpoint was trained on in the frames scored here
    (its own ``data.raw_dirs`` and ``data.raw_train_range``, which need not be the defaults
    :func:`iter_samples` checks); returns one line per overlap for the run's summary.

    ``trained``: ``(label, the checkpoint's data config)`` of each model
    (:func:`checkpoint_data_config`); ``None`` for a model that records none (an ``.onnx``
    file, every shipped one): any clip is taken as trained on in the default range, which
    :func:`iter_samples` has already warned about."""
    from training.config import DataConfig

    found = []
    for spec in specs:
        if spec.kind != "raw":
            continue
        span = raw_span(spec, windows, raw_stride)
        here = Path(spec.path).resolve()
        for label, data in trained:
            if span is None:
                continue
            if data is None:
                first, last = DataConfig().raw_train_range
                if span[0] <= last and span[1] >= first:
                    # Only logged before: an exported model's summary looked held-out.
                    found.append(
                        f"{label}: {here.name} frames {span[0]}-{span[1]} overlap the default "
                        f"training frames {first}-{last} (the model records no data of its own)"
                    )
                continue
            dirs = [Path(d) for d in data.get("raw_dirs") or []]
            # By path, or by the clip's folder name: the run's copy may live elsewhere.
            if not any(d.resolve() == here or d.name == here.name for d in dirs):
                continue
            rng = list(data.get("raw_train_range") or DataConfig().raw_train_range)
            if not check_raw_range_held_out(*span, spec.path, rng, who=label):
                found.append(
                    f"{label}: {here.name} frames {span[0]}-{span[1]} overlap its training "
                    f"frames {rng[0]}-{rng[1]}"
                )
    return found


def iter_samples(
    spec: DataSpec,
    *,
    mode: str = "both",
    windows: Sequence[int] = (7, 11),
    raw_stride: int = 20,
    max_size: int = 1280,
    crop: int = 0,
    limit: int = 0,
    history: int = 0,
    frame_step: int = 8,
    held_out: bool = True,
) -> Iterator[Sample]:
    """Yield the samples of one ``--data`` spec (lazily: one pair in memory at a time).

    ``held_out``: warn when a ``raw:`` range reaches into the students' training frames (off
    for a caller that means to read training frames, ``training.tune_unsharp``).

    ``history`` (``raw:`` only): each sample also carries the ``history`` windows of its size
    centred ``frame_step``, ``2 * frame_step``, ... frames before its own, as the frames a
    camera gave before it (8 raw frames of 240 fps: a 30 fps camera); a window without them all
    in the range is left out.

    ``limit`` (0 = all) caps each set this spec gives, not the spec and not the whole run:
    ``--both`` gives up to ``limit`` in ``raw-plain`` and ``limit`` more in ``raw-linear``, and
    two specs that feed one set (two raw clips) give it up to ``limit`` each, so every clip is
    scored rather than only the first.
    """
    counts: dict[str, int] = {}

    def emit(
        set_name: str,
        name: str,
        blurry: np.ndarray,
        sharp: np.ndarray | None,
        before: Sequence[np.ndarray] = (),
    ) -> Sample | None:
        if limit and counts.get(set_name, 0) >= limit:
            return None
        counts[set_name] = counts.get(set_name, 0) + 1
        return Sample(
            set_name,
            name,
            np.ascontiguousarray(_center_crop(blurry, crop), dtype=np.float32),
            None
            if sharp is None
            else np.ascontiguousarray(_center_crop(sharp, crop), dtype=np.float32),
            tuple(np.ascontiguousarray(_center_crop(b, crop), dtype=np.float32) for b in before),
        )

    if history and spec.kind != "raw":
        raise ValueError(
            f"{spec.kind}: has no frames before each sample; a history (--denoise) is for raw: "
            "clips"
        )
    if history < 0 or frame_step < 1:
        raise ValueError(f"history must be >= 0 and frame_step >= 1, got {history}, {frame_step}")
    if spec.kind in ("raw", "camera"):
        check_windows(windows)
        # "7,7" would score every window twice (and count it twice in the set's n).
        windows = list(dict.fromkeys(windows))
    if spec.kind == "raw":
        if raw_stride < 1:
            raise ValueError(f"raw stride must be >= 1, got {raw_stride}")
        found = D.raw_frame_windows(spec.path, first=spec.first, last=spec.last, sizes=windows)
        if not found:
            raise FileNotFoundError(
                f"no frame windows in {spec.path} frames {spec.first}-{spec.last}"
            )
        centres = set(raw_spec_centres(spec, windows, raw_stride))
        if not centres:
            raise FileNotFoundError(
                f"no centre in {spec.path} frames {spec.first}-{spec.last} (from "
                f"{spec.first + RAW_FIRST_OFFSET}, every {raw_stride}) holds a "
                f"{max(windows)}-frame window"
            )
        if held_out:
            check_raw_range_held_out(
                max(spec.first, min(centres) - history * frame_step - max(windows) // 2),
                max(centres) + max(windows) // 2,
                spec.path,
            )
        seq = Path(spec.path).name
        by_window = {(c, len(paths)): paths for paths, c in found}
        no_history = 0  # windows left out: their earlier windows are not all in the range
        # Centre by centre, every window of each: a --limit then scores each window size,
        # not only the smallest one that raw_frame_windows lists first.
        found = sorted(found, key=lambda pc: (pc[1], len(pc[0])))
        for paths, centre in found:
            if centre not in centres:
                continue
            frames = [D.load_image_u8(p) for p in paths]
            if any(f is None for f in frames):
                log.warning("skipping window centred on %d: unreadable frame", centre)
                continue
            frames = [_fit(f, max_size) for f in frames]
            sharp = frames[len(frames) // 2].astype(np.float32) / 255.0
            earlier = [
                by_window.get((centre - k * frame_step, len(paths))) for k in range(history, 0, -1)
            ]
            if None in earlier:
                no_history += 1
                continue
            loaded = [[D.load_image_u8(p) for p in w] for w in earlier]
            if any(f is None for w in loaded for f in w):
                log.warning("skipping window centred on %d: unreadable frame before it", centre)
                continue
            before_frames = [[_fit(f, max_size) for f in w] for w in loaded]
            for suffix, linear in _modes(mode):
                blurry = D.temporal_average(frames, linear=linear)
                before = [D.temporal_average(b, linear=linear) for b in before_frames]
                name = f"{seq}_c{centre:03d}_w{len(paths)}"
                s = emit(f"raw-{suffix}", name, blurry, sharp, before)
                if s:
                    yield s
        if no_history:
            # The sets then hold fewer images than without --denoise: said, not silent.
            log.warning(
                "raw: %d of %s's windows left out: they have no %d earlier windows %d frames "
                "apart inside frames %d-%d",
                no_history,
                seq,
                history,
                frame_step,
                spec.first,
                spec.last,
            )
    elif spec.kind == "gopro":
        root = Path(spec.path)
        if (root / "test").is_dir():
            # GOPRO_Large's root: its training split must not be scored with the test split
            root = root / "test"
        sharp_dirs = sorted(p for p in root.rglob("sharp") if p.is_dir())
        if root.name == "sharp":
            sharp_dirs = [root]
        if not sharp_dirs:
            raise FileNotFoundError(f"no GoPro-layout '<seq>/sharp' folders under {root}")
        for suffix, linear in _modes(mode):
            blur_name = "blur_gamma" if linear else "blur"
            for sd in sharp_dirs:
                if not (sd.parent / blur_name).is_dir():
                    # Said, as for every image left out: otherwise gopro-plain and gopro-linear
                    # score different sequences with nothing but their n to tell.
                    log.warning(
                        "gopro: no %s folder beside %s: not in gopro-%s", blur_name, sd, suffix
                    )
                    continue
                for bp in D.list_images(sd.parent / blur_name, recursive=False):
                    sp = sd / bp.name
                    if not sp.is_file():
                        log.warning("gopro: skipping %s: no sharp image %s", bp, sp)
                        continue
                    b, s_img = D.load_image(bp), D.load_image(sp)
                    if b is None or s_img is None:  # load_image has said which and why
                        continue
                    if b.shape != s_img.shape:
                        # as for pairs: one odd pair must not end a long run with a shape error
                        log.warning("skipping %s: sizes differ from %s", bp, sp)
                        continue
                    s = emit(
                        f"gopro-{suffix}",
                        f"{sd.parent.name}_{bp.stem}",
                        _fit(b, max_size),
                        _fit(s_img, max_size),
                    )
                    if s:
                        yield s
    elif spec.kind == "lai":
        root = Path(spec.path)
        kernels = []
        for p in D.list_images(root / "kernels"):
            k = D.load_image(p)
            if k is None:
                raise ValueError(f"unreadable blur kernel {p}")
            kernels.append((p.stem, D.center_kernel(k.mean(axis=2))))
        if not kernels:
            raise FileNotFoundError(f"no kernels in {root / 'kernels'}")
        for sp in D.list_images(root / "sharp"):
            sharp = D.load_image(sp)
            if sharp is None:
                continue
            sharp = _fit(sharp, max_size)
            for kname, k in kernels:
                blurry = np.clip(D.blur_with_kernel(sharp, k), 0.0, 1.0)
                s = emit("lai", f"{sp.stem}_{kname}", blurry, sharp)
                if s:
                    yield s
    elif spec.kind == "demo":
        from skimage import data as skdata

        for i, name in enumerate(DEMO_IMAGES):
            try:
                img = getattr(skdata, name)()
            except Exception as exc:  # noqa: BLE001 - a sample missing from this install
                log.warning("skipping demo image %s: %s", name, exc)
                continue
            if img.ndim != 3 or img.shape[2] < 3:
                continue
            sharp = _fit(img[:, :, :3].astype(np.float32) / 255.0, max_size)
            blurry = np.clip(D.blur_with_kernel(sharp, demo_kernel(seed=i)), 0.0, 1.0)
            # A webcam's blur comes with its noise: mild, seeded, so the picture is reproducible.
            blurry = D.add_noise(blurry, np.random.default_rng(100 + i), gaussian_sigma=0.005)
            s = emit("demo", name, blurry, sharp)
            if s:
                yield s
    elif spec.kind == "camera":
        paths = D.list_images(spec.path)
        if not paths:
            raise FileNotFoundError(f"no images in {spec.path}")
        for i, path in enumerate(paths):
            img = D.load_image_u8(path)
            if img is None:
                log.warning("skipping unreadable %s", path)
                continue
            img = _fit(img, max_size)
            h, w_img = img.shape[:2]
            short = min(h, w_img)
            for w in windows:
                rng = np.random.default_rng([i, w])
                maps = D.camera_path(
                    rng, frames=w, speed=CAMERA_SPEED, turn=CAMERA_TURN, zoom=CAMERA_ZOOM
                )
                side = short - 2 * D.camera_path_margin(maps, short)
                side -= side % 2
                if side < 32:
                    log.warning("skipping %s: too small for a %d-frame camera path", path, w)
                    continue
                frames = D.render_camera_motion(img, maps, centre=(h // 2, w_img // 2), size=side)
                sharp = frames[w // 2].astype(np.float32) / 255.0
                for suffix, linear in _modes(mode):
                    blurry = D.temporal_average(frames, linear=linear)
                    s = emit(f"camera-{suffix}", f"{path.stem}_w{w}", blurry, sharp)
                    if s:
                        yield s
    elif spec.kind == "pairs":
        for folder in (spec.blur_dir, spec.sharp_dir):
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"pairs: no folder {folder}")
        blurs = D.list_images(spec.blur_dir, recursive=False)
        if not blurs:
            raise FileNotFoundError(f"pairs: no images in {spec.blur_dir}")
        for bp in blurs:
            sp = Path(spec.sharp_dir) / bp.name
            if not sp.is_file():
                log.warning("no sharp image for %s in %s", bp.name, spec.sharp_dir)
                continue
            b, s_img = D.load_image(bp), D.load_image(sp)
            if b is None or s_img is None or b.shape != s_img.shape:
                log.warning("skipping pair %s: unreadable or sizes differ", bp.name)
                continue
            s = emit("pairs", bp.stem, _fit(b, max_size), _fit(s_img, max_size))
            if s:
                yield s
    elif spec.kind == "sharp":
        paths = D.list_images(spec.path)
        if not paths:
            raise FileNotFoundError(f"sharp: no images in {spec.path}")
        for path in paths:
            img = D.load_image(path)
            if img is None:
                log.warning("skipping unreadable %s", path)
                continue
            img = _fit(img, max_size)
            s = emit("sharp", path.stem, img, img.copy())
            if s:
                yield s
    elif spec.kind == "real":
        root = Path(spec.path)
        if not root.is_dir():
            raise FileNotFoundError(f"real: no folder {spec.path}")
        paths = D.list_images(root)
        if not paths:
            raise FileNotFoundError(f"real: no images in {spec.path}")
        for path in paths:
            img = D.load_image(path)
            if img is None:
                log.warning("skipping unreadable %s", path)
                continue
            # Names keep the sub-folder: sample folders from different papers reuse file names.
            name = path.relative_to(root).with_suffix("").as_posix().replace("/", "_")
            s = emit(REAL_SET, name, _fit(img, max_size), None)
            if s:
                yield s


#: where ``--low-light`` adds its noise: to the encoded picture, or to linear light before
#: the sRGB curve, as a sensor does
NOISE_SPACES = ("encoded", "sensor")


def low_light(sample: Sample, peak: float, sigma: float = 0.01, space: str = "encoded") -> Sample:
    """``sample`` filmed in poor light: its blurry input with a dim webcam's noise, its sharp
    frame clean, its set named ``<set>-lowlight<peak>`` (``<set>-lowlight<peak>-sensor`` for
    ``space="sensor"``).

    A webcam's gain lifts a dim frame to a normal exposure, so the picture keeps its brightness
    and gets the shot noise of few photons (``peak`` for white), read noise ``sigma`` and 8-bit
    output. ``space="encoded"`` adds them to the sRGB values (``training.data.add_noise``: the
    grain grows with brightness, weakest in the shadows); ``"sensor"`` to linear light before
    the sRGB curve (``training.data.add_sensor_noise``: even grain from mid-tones up, the
    shadows the noisiest), as a camera counts photons and then encodes them. The noise is seeded
    by the set and image name: every method, and every run, sees the same frame."""
    if space not in NOISE_SPACES:
        raise ValueError(f"space must be one of {NOISE_SPACES}, got {space!r}")
    if sample.sharp is None:
        raise ValueError(
            f"{sample.set} {sample.name}: low light is scored against the clean sharp frame, "
            "and this set has none"
        )
    if not peak > 0 or not sigma >= 0:
        raise ValueError(f"low light needs peak > 0 and sigma >= 0, got {peak}, {sigma}")
    rng = np.random.default_rng([zlib.crc32(f"{sample.set}/{sample.name}".encode()), int(peak)])

    add = D.add_noise if space == "encoded" else D.add_sensor_noise

    def film(img: np.ndarray) -> np.ndarray:
        noisy = add(img, rng, gaussian_sigma=sigma, poisson_peak=peak)
        return np.round(noisy * 255.0).astype(np.float32) / 255.0

    # The frame scored first: its noise is what it was before samples had a history.
    noisy = film(sample.blurry)
    before = tuple(film(b) for b in sample.history)
    suffix = "" if space == "encoded" else f"-{space}"
    return Sample(
        f"{sample.set}-lowlight{peak:g}{suffix}", sample.name, noisy, sample.sharp, before
    )


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

Runner = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) float32 [0, 1] -> same


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()


def _to_image(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())


def processing_size(w: int, h: int, scale: float, multiple: int = 32) -> tuple[int, int]:
    """``(W, H)`` the app's ``--scale`` runs the model at: each side ``scale`` times smaller,
    rounded to the nearest ``multiple`` (the model pads to it), >= 16, never above the input.

    The engine computes the same (``engine.backends.scaled_size``; training does not import
    the engine, and ``tests/test_scale.py`` checks the two agree)."""
    if scale >= 1.0:
        return w, h

    def side(n: int) -> int:
        r = multiple * round(n * scale / multiple)
        if r < 16:
            r = max(16, round(n * scale))
        return min(n, r)

    return side(w), side(h)


def at_scale(run: Runner, scale: float, multiple: int = 32) -> Runner:
    """``run`` at a lower processing resolution, as the app does: ``x + up(run(down(x)) -
    down(x))`` with bilinear resizes, so only the model's correction loses resolution.

    ``(H, W, 3)`` float32 in [0, 1] -> same. ``scale`` 1 returns ``run`` itself."""
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if scale == 1.0:
        return run

    def run_scaled(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        size = processing_size(w, h, scale, multiple)
        small = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        correction = cv2.resize(run(small) - small, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(img + correction, 0.0, 1.0)

    return run_scaled


# The dihedral group of the square as (quarter turns, then a left-right flip): blur is a
# motion along some direction, and each of these maps one motion blur to another.
ENSEMBLES = {
    2: ((0, False), (0, True)),
    4: ((0, False), (0, True), (2, False), (2, True)),
    8: tuple((k, flip) for k in range(4) for flip in (False, True)),
}


def self_ensemble(run: Runner, n: int) -> Runner:
    """``run`` averaged over ``n`` (2, 4 or 8) flips and quarter turns of its input, each
    output turned back: a geometric self-ensemble, ``n`` times the work.

    ``(H, W, 3)`` float32 in [0, 1] -> same. A model that only runs at fixed sizes cannot take
    the turned ``(W, H)`` frames of ``n`` = 8."""
    if n not in ENSEMBLES:
        raise ValueError(f"self-ensemble size must be one of {sorted(ENSEMBLES)}, got {n}")

    def run_ensemble(img: np.ndarray) -> np.ndarray:
        total = np.zeros(img.shape, np.float32)
        for k, flip in ENSEMBLES[n]:
            x = np.rot90(img, k)
            y = run(np.ascontiguousarray(x[:, ::-1] if flip else x))
            total += np.rot90(y[:, ::-1] if flip else y, -k)
        return np.clip(total / n, 0.0, 1.0)

    return run_ensemble


# The app's noise reduction (engine.denoise.TemporalDenoiser, `run --denoise`), written again
# here because training stands alone (ARCHITECTURE.md), as the unsharp mask is; a test checks
# that the two give the same frames. Its settings, as the engine's defaults:
DENOISE_STRENGTH = 0.8  # the most weight the past gets
DENOISE_THRESHOLD = 4.0  # a local luma change of this many noise levels counts as motion
DENOISE_MIN_SIGMA = 1.0  # noise (levels of half-size luma) below which frames pass untouched
DENOISE_RAMP = 1.0  # levels over that across which the strength rises to full
DENOISE_FLAT_FLOOR = 1.2  # a picture whose flattest blocks measure less is clean
DENOISE_MEASURE_EVERY = 4  # frames between noise measurements
DENOISE_CUT = 0.6  # a frame where more than this share of pixels moved starts afresh
DENOISE_COLOUR_MIN_SIGMA = 0.6  # colour noise (half-size Cr and Cb) below which colour passes
DENOISE_COLOUR_RAMP = 0.6  # levels over that across which the colour blur grows to full
DENOISE_COLOUR_BLUR = 1.0  # the colour blur's Gaussian std (pixels) at full strength
DENOISE_GRAIN_SPREAD = 1.0  # the grain's share of a window's spread, in the grain's std
DENOISE_GRAIN_RADIUS = 2  # its window: (2 r + 1)^2 pixels
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_MEAN_ABS = float(np.sqrt(2.0 / np.pi))


def _half_luma(rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    small = cv2.resize(
        gray[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
    )
    return small.astype(np.float32)


def _blocks(values: np.ndarray) -> np.ndarray:
    h, w = values.shape
    gh, gw = max(1, h // 8), max(1, w // 8)
    return cv2.resize(values[: gh * 8, : gw * 8], (gw, gh), interpolation=cv2.INTER_AREA)


def _flat(luma: np.ndarray) -> float:
    response = _blocks(np.abs(cv2.filter2D(luma, -1, _NOISE_KERNEL)))
    level = _blocks(luma)
    unclipped = response[(level > 12.0) & (level < 243.0) & (response > 0.05)]
    if unclipped.size == 0:
        return 0.0
    return float(np.percentile(unclipped, 1)) / (6.0 * _MEAN_ABS * 0.665)


def _fineness(rgb: np.ndarray, flat: float) -> float:
    # The grain's std on the frame's own pixels over its half-size level: 2 for white noise, 1
    # for grain two pixels across or coarser (or a texture).
    if not flat > 0.0:
        return 1.0
    fine = _flat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32))
    return min(2.0, max(1.0, fine / flat))


def _noise(
    luma: np.ndarray, previous: np.ndarray | None, before: np.ndarray | None
) -> tuple[float, float]:
    """(the picture's own estimate, the one checked over time)"""
    flat = _flat(luma)
    if previous is None or before is None or flat < DENOISE_FLAT_FLOOR:
        return flat, flat
    d_now, d_before = previous - luma, previous - before
    shared = _blocks(d_now) * _blocks(d_before)
    together = float(np.percentile(_blocks(d_now * d_before) - shared, 75))
    return flat, min(float(np.sqrt(max(together, 0.0) / 1.18)), 3.0 * flat)


def _colour_noise(rgb: np.ndarray) -> float:
    h, w = rgb.shape[:2]
    half = cv2.resize(
        rgb[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
    )
    small = cv2.cvtColor(half.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    level = _blocks(np.ascontiguousarray(small[..., 0]))
    unclipped = (level > 12.0) & (level < 243.0)
    worst = 0.0
    for channel in (1, 2):
        response = _blocks(
            np.abs(cv2.filter2D(np.ascontiguousarray(small[..., channel]), -1, _NOISE_KERNEL))
        )
        values = response[unclipped & (response > 0.05)]
        if values.size:
            worst = max(worst, float(np.percentile(values, 1)))
    return worst / (6.0 * _MEAN_ABS * 0.665)


def _flattened(luma: np.ndarray, flatness: np.ndarray, amount: float) -> np.ndarray:
    # A local adaptive Wiener filter: mean + max(var - flatness, 0) / var * (luma - mean).
    y = luma.astype(np.float32)
    size = (2 * DENOISE_GRAIN_RADIUS + 1, 2 * DENOISE_GRAIN_RADIUS + 1)
    mean = cv2.boxFilter(y, -1, size)
    var = cv2.boxFilter(cv2.multiply(y, y), -1, size)
    var = cv2.max(cv2.subtract(var, cv2.multiply(mean, mean)), 0.0)
    keep = cv2.resize(flatness, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR)
    # var / (var + 1e-6): 0 / 0 is NaN in float, and a flat window's keep is 0
    keep = cv2.divide(cv2.max(cv2.subtract(var, keep), 0.0), cv2.add(var, 1e-6))
    if amount < 1.0:
        keep = cv2.addWeighted(keep, amount, keep, 0.0, 1.0 - amount)
    return cv2.add(mean, cv2.multiply(keep, cv2.subtract(y, mean)), dtype=cv2.CV_8U)


def _in_frame(
    rgb: np.ndarray,
    colour: float | None,
    sigma: float | None,
    flat: float | None,
    fineness: float | None,
    weights: np.ndarray,
) -> np.ndarray:
    """The output's own step: colour blur and grain filter, from the luma's checked level."""
    if colour is None or sigma is None or flat is None or fineness is None:
        return rgb
    # From the flat floor the luma's reading was checked over time; the colour's never is.
    by_colour = (colour - DENOISE_COLOUR_MIN_SIGMA) / DENOISE_COLOUR_RAMP
    by_luma = (sigma - DENOISE_FLAT_FLOOR) / DENOISE_RAMP
    blur = 0.0
    if min(by_colour, by_luma) > 0:
        blur = DENOISE_COLOUR_BLUR * min(1.0, by_colour) * min(1.0, by_luma)
    # The grain filter goes by the lower of the two estimates: a fine texture moving fast
    # reads as noise over time.
    level = min(sigma, flat)
    grain = min(1.0, max(0.0, (level - DENOISE_FLAT_FLOOR) / DENOISE_RAMP))
    if not blur and not grain:
        return rgb
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    if blur > 0:
        cv2.mixChannels([cv2.GaussianBlur(ycc, (0, 0), blur)], [ycc], [1, 1, 2, 2])
    if grain > 0:
        # What the average over time left of the noise's variance, (1 - w) / (1 + w) once settled.
        flatness = (1.0 - weights) / (1.0 + weights)
        flatness *= (DENOISE_GRAIN_SPREAD * level * fineness) ** 2
        luma = _flattened(np.ascontiguousarray(ycc[..., 0]), flatness, grain)
        cv2.mixChannels([luma], [ycc], [0, 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def denoised_last(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The last of ``frames`` (``(H, W, 3)`` uint8 RGB of one size, oldest first) as the app's
    noise reduction gives it after seeing them all in turn."""
    out = out_luma = None
    lumas: list[np.ndarray] = []  # the inputs', newest first
    sigma: float | None = None
    flat: float | None = None  # the pictures' own estimate, smoothed as sigma
    fineness: float | None = None  # the grain's std at full size over its half-size level
    colour: float | None = None
    checked = False  # the last measurement read grain over the flat floor, and no cut since
    count = 0
    weights: np.ndarray | None = None  # the last frame's step over time, None if it passed
    for frame in frames:
        weights = None
        if min(frame.shape[:2]) < 16:
            out = None  # passed, and a new start after it, as the engine does
            continue
        luma = _half_luma(frame)
        if out is None or out.shape != frame.shape:
            out, out_luma, lumas, sigma, colour, count = frame, luma, [luma], None, None, 0
            flat = fineness = None
            checked = False
            continue
        if len(lumas) >= 2:
            if count % DENOISE_MEASURE_EVERY == 0:
                new_flat, new = _noise(luma, lumas[0], lumas[1])
                sigma = new if sigma is None else 0.7 * sigma + 0.3 * new
                flat = new_flat if flat is None else 0.7 * flat + 0.3 * new_flat
                new_fine = _fineness(frame, new_flat)
                fineness = new_fine if fineness is None else 0.7 * fineness + 0.3 * new_fine
                checked = new >= DENOISE_FLAT_FLOOR
                new = _colour_noise(frame)
                colour = new if colour is None else 0.7 * colour + 0.3 * new
            count += 1
        lumas = [luma, *lumas[:1]]
        if sigma is None or sigma < DENOISE_MIN_SIGMA:
            out, out_luma = frame, luma
            continue
        # In the engine's order of operations: the same float32 roundings, the same frames.
        change = luma - out_luma
        diff = np.abs(cv2.blur(change, (3, 3)))
        np.maximum(diff, np.abs(change) * 0.5, out=diff)
        diff *= -1.0 / (DENOISE_THRESHOLD * sigma)
        diff += 1.0
        np.clip(diff, 0.0, 1.0, out=diff)
        weights = cv2.erode(diff, np.ones((3, 3), np.uint8))
        weights *= DENOISE_STRENGTH * min(1.0, (sigma - DENOISE_MIN_SIGMA) / DENOISE_RAMP)
        if np.count_nonzero(weights == 0.0) / weights.size > DENOISE_CUT:
            out, out_luma, checked, weights = frame, luma, False, None
            continue
        out_luma = luma + weights * (out_luma - luma)
        full = cv2.resize(weights, frame.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        out = cv2.blendLinear(frame, out, 1.0 - full, full)
    # The colour blur and the grain filter are the output's, not the average's: they are not
    # carried to the next frame.
    if out is None:
        return frames[-1]
    if not checked or weights is None:
        return out
    return _in_frame(out, colour, sigma, flat, fineness, weights)


def with_denoise(run: Runner) -> Runner:
    """``run`` after the app's noise reduction (:func:`denoised_last`, as ``run --denoise``)
    has seen the sample's history and then its frame, in 8 bits as a camera gives them. The
    runner takes ``(img, history)``; ``evaluate`` knows it by ``temporal``."""

    def run_denoised(img: np.ndarray, history: Sequence[np.ndarray] = ()) -> np.ndarray:
        out = denoised_last([D.to_uint8(frame) for frame in (*history, img)])
        return run(out.astype(np.float32) / 255.0)

    run_denoised.temporal = True  # type: ignore[attr-defined]
    return run_denoised


def model_multiple(path: str | Path) -> int:
    """The multiple the app rounds ``--scale`` sizes to for this model file: its manifest's
    ``input.multiple`` beside an ``.onnx`` (1 when no manifest lists it, as in the engine), the
    network's own for a checkpoint."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from training.export import _existing_files

        entry = _existing_files(path.parent / "manifest.json").get(path.name, {})
        return int(entry.get("input", {}).get("multiple") or 1)
    from training.export import load_student

    model, _variant, _cfg = load_student(path)
    return int(getattr(model, "multiple", 1))


def load_model_label(path: str | Path) -> str:
    """A model's row name: its file stem (``runs/x/last.pt``: ``x_last``)."""
    path = Path(path)
    return path.stem if path.stem not in ("best", "last") else f"{path.parent.name}_{path.stem}"


def checkpoint_data_config(path: str | Path) -> dict[str, Any] | None:
    """The ``data`` section of a trainer checkpoint's config (None: an ONNX file, a bare state
    dict, or a checkpoint that records none)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return None
    from training.export import _read_checkpoint

    ckpt = _read_checkpoint(path)
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else None


def load_model_runner(
    path: str | Path, *, threads: int = 0, device: str | torch.device = "cpu"
) -> tuple[str, Runner]:
    """``(label, run)`` for a trainer checkpoint ``.pt`` (run on ``device``) or an ``.onnx``
    file (ONNX Runtime on the CPU)."""
    path = Path(path)
    label = load_model_label(path)
    if path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors are plain Exceptions
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise RuntimeError(f"cannot load ONNX model {path}: {first.strip()}") from exc
        inp = sess.get_inputs()[0]
        dtype = np.float16 if "float16" in inp.type else np.float32
        # A file of another contract (two inputs, NHWC, another output size) failed on the
        # first sample with ONNX Runtime's or the metrics' traceback: tried once on a small
        # frame here, it is refused in one line. 37x53 goes through the model's padding; a
        # model exported with a fixed H or W (the engine runs it at that size) is tried at it
        # (not a channels-last 3: that layout must still fail).
        declared = list(inp.shape)[2:] if len(inp.shape) == 4 else [None, None]
        h, w = (
            d if isinstance(d, int) and d >= 16 else odd
            for d, odd in zip(declared, (37, 53), strict=True)
        )
        trial = np.random.default_rng(0).random((1, 3, h, w)).astype(dtype)
        try:
            if len(sess.get_inputs()) != 1 or len(sess.get_outputs()) != 1:
                raise ValueError(
                    f"{len(sess.get_inputs())} inputs and {len(sess.get_outputs())} outputs"
                )
            got = sess.run(None, {inp.name: trial})[0].shape
            if tuple(got) != trial.shape:
                raise ValueError(f"output {tuple(got)} for input {trial.shape}")
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors are plain Exceptions
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise RuntimeError(
                f"{path} breaks the model contract (one input, one output, float (1, 3, H, W) "
                f"for any H, W >= 16, the output as large as the input): {first.strip()}"
            ) from exc

        def run_onnx(img: np.ndarray) -> np.ndarray:
            x = img.transpose(2, 0, 1)[None].astype(dtype)
            y = sess.run(None, {inp.name: x})[0][0].astype(np.float32)
            return np.ascontiguousarray(np.clip(y.transpose(1, 2, 0), 0.0, 1.0))

        return label, run_onnx

    from training.export import load_student

    model, _variant, _cfg = load_student(path)
    model.to(device)

    @torch.no_grad()
    def run_torch(img: np.ndarray) -> np.ndarray:
        return _to_image(model(_to_tensor(img).to(device)))

    return label, run_torch


def weights_fingerprint(weights: Path) -> str:
    """Digest of a weights file's or folder's contents (every file under a folder, in path
    order): new weights saved over the same path give another. Keys this evaluator's teacher
    cache and is recorded in the trainer's (``training.cache_teacher.cache_meta``)."""
    files = sorted(weights.rglob("*")) if weights.is_dir() else [weights]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def _teacher_output(model: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    """The teacher's output for ``img`` as the cache stores it and every run scores it."""
    with torch.no_grad():
        out = _to_image(model(_to_tensor(img)))
    # Scored as stored: a first run and a cached re-run must give the same numbers (and the
    # same kept / changed split of real blur, which is thresholded on this output).
    return out.astype(np.float16)


def teacher_code_key(name: str) -> str:
    """Digest of the code teacher ``name``'s cached outputs depend on: the module of its network
    (comments, docstrings and formatting aside: ``training.teachers.code_fingerprint``) and the
    conversions here between an image and what the cache stores."""
    from training.teachers import code_fingerprint, teacher_code_fingerprint

    here = code_fingerprint(
        *(inspect.getsource(f) for f in (_to_tensor, _to_image, _teacher_output))
    )
    return hashlib.sha256(f"{teacher_code_fingerprint(name)}:{here}".encode()).hexdigest()


class CachedTeacher:
    """Teacher outputs cached as float16 ``.npy`` files keyed by teacher, its code, its weights
    and the input."""

    def __init__(
        self,
        name: str,
        weights: str | Path | None,
        cache_dir: Path,
        threads: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        from training.teachers import TEACHERS, default_weights

        self.name = name
        self.device = torch.device(device)
        if name not in TEACHERS:
            # Found here, not at the first image the cache lacks, after the students ran on it.
            raise ValueError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}")
        self.weights = Path(weights) if weights else default_weights(name)
        if self.weights is None:
            raise FileNotFoundError(f"no weights for teacher {name!r}: pass --teacher-weights")
        if not self.weights.exists():
            # Its fingerprint would be that of no file at all, the same for every missing path.
            raise FileNotFoundError(f"teacher weights {self.weights}: no such file or folder")
        # The code is in the key as well as the weights: after a change to the network's code
        # (a fix in training/models/dmphn.py) the cache would otherwise keep serving what the
        # old code computed, and the teacher column would score code that no longer exists.
        self.code = teacher_code_key(name)[:12]
        self.cache_dir = cache_dir / f"{name}_{weights_fingerprint(self.weights)}_{self.code}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._model: torch.nn.Module | None = None
        self.hits = self.misses = 0
        self.seconds = 0.0

    def load(self) -> torch.nn.Module:
        """The teacher network, loaded on first use; call it early to have wrong weights refused
        before any model runs (raises ``FileNotFoundError`` or ``RuntimeError``)."""
        if self._model is None:
            from training.teachers import load_teacher

            self._model = load_teacher(self.name, weights=self.weights, device=self.device)
        return self._model

    def cached(self, img: np.ndarray) -> bool:
        """Whether the output for ``img`` is in the cache (and the network need not run)."""
        return (self.cache_dir / f"{self._key(img)}.npy").is_file()

    def _key(self, img: np.ndarray) -> str:
        h = hashlib.sha256(str(img.shape).encode())
        h.update(np.ascontiguousarray(img, dtype=np.float32).tobytes())
        return h.hexdigest()

    def __call__(self, img: np.ndarray) -> np.ndarray:
        path = self.cache_dir / f"{self._key(img)}.npy"
        if path.is_file():
            try:
                cached = np.load(path)
            except (OSError, ValueError, EOFError):  # EOFError: an empty file
                cached = None
            if cached is not None and cached.shape == img.shape:
                self.hits += 1
                return cached.astype(np.float32)
            log.warning("damaged teacher cache entry %s: recomputing", path)
        model = self.load()
        # The input is moved here, not in _teacher_output: its code is in the cache key, and a
        # change to it would throw away every cached output.
        run = model if self.device.type == "cpu" else (lambda x: model(x.to(self.device)))
        self.misses += 1
        t = time.perf_counter()
        out = _teacher_output(run, img)
        self.seconds += time.perf_counter() - t
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        np.save(tmp, out)
        os.replace(tmp, path)  # atomic: a concurrent or killed run never sees half a file
        return out.astype(np.float32)


_GIB = 1 << 30


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say: Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def teacher_memory_warning(
    name: str, height: int, width: int, device: torch.device, have: int | None
) -> str | None:
    """One line when teacher ``name`` on ``device`` needs more than half of the ``have`` bytes
    there for an ``height`` x ``width`` image (more than 4 GiB when ``have`` is None), with the
    ``--max-size`` that fits; None when it fits.

    The teacher runs on the whole image, not in tiles (tiles would change its outputs, and the
    cached ones with them): Restormer needs about 9.9 GiB at 1280x720 on the CPU, and a laptop
    swapped or killed the run without a word first. The estimate is the CPU's, measured
    (``TeacherSpec.cpu_bytes_per_pixel``); a GPU's is of the same order."""
    from training.teachers import TEACHERS

    per_pixel = TEACHERS[name].cpu_bytes_per_pixel
    need = per_pixel * height * width
    budget = have // 2 if have else 4 * _GIB
    if not per_pixel or need <= budget:
        return None
    where = "this machine's" if device.type in ("cpu", "mps") else f"{device}'s"
    of = f"more than half of {where} {have / _GIB:.1f} GiB" if have else "more than 4 GiB"
    longest = max(height, width)
    fit = max(16, int(longest * math.sqrt(budget / need)) // 16 * 16)
    fit_need = need * (fit / longest) ** 2
    gpu = ", or --device cuda" if device.type == "cpu" else ""
    return (
        f"teacher {name} needs about {need / _GIB:.1f} GiB for a {width}x{height} image on "
        f"{device.type}, {of}: it may swap or be killed; --max-size {fit} needs about "
        f"{fit_need / _GIB:.1f} GiB{gpu}"
    )


def device_memory(device: torch.device) -> int | None:
    """Memory the teacher can use on ``device``: a CUDA device's own, else this machine's."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return physical_memory()


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def _best_crop(sharp: np.ndarray, size: int) -> tuple[int, int, int]:
    """(y, x, side) of the square crop with the most gradient energy (where blur shows)."""
    h, w = sharp.shape[:2]
    side = min(size, h, w)
    grey = cv2.cvtColor(sharp, cv2.COLOR_RGB2GRAY)
    mag = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    ii = cv2.integral(mag)
    best, by, bx = -1.0, 0, 0
    step = max(8, side // 4)
    for y in range(0, h - side + 1, step):
        for x in range(0, w - side + 1, step):
            e = ii[y + side, x + side] - ii[y, x + side] - ii[y + side, x] + ii[y, x]
            if e > best:
                best, by, bx = e, y, x
    return by, bx, side


def _label(img: np.ndarray, text: str) -> np.ndarray:
    """uint8 RGB crop with a white caption band on top."""
    band = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, img])


def write_grid(rows: list[list[tuple[str, np.ndarray]]], path: Path) -> None:
    """Rows of (caption, uint8 crop) as one PNG; every crop in a row has the same size."""
    if not rows:
        return
    side = max(c.shape[0] for row in rows for _, c in row)
    lines = []
    for row in rows:
        cells = []
        for caption, crop in row:
            if crop.shape[0] != side:
                crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_NEAREST)
            cells.append(_label(crop, caption))
            cells.append(np.full((side + 22, 4, 3), 255, np.uint8))
        lines.append(np.hstack(cells[:-1]))
        lines.append(np.full((4, lines[-1].shape[1], 3), 255, np.uint8))
    grid = np.vstack(lines[:-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    # Encoded here and written with errors checked: imwrite said False (unread) of a full
    # disk, or True where only its last buffer failed, and a truncated picture passed.
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path}")
    # Beside it, then renamed over it: a failed write left no grid where the earlier run's was.
    part = path.with_name(f".{path.name}.partial")
    try:
        with open(part, "wb") as f:
            f.write(data.tobytes())
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _metric_row(
    pred: np.ndarray,
    sharp: np.ndarray,
    perceptual: PerceptualDistance | None,
    sharp_features: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    p, s = _to_tensor(pred), _to_tensor(sharp)
    row = {
        "psnr": float(psnr(p, s)[0]),
        "ssim": float(ssim(p, s)[0]),
        "ms_ssim": float(ms_ssim(p, s)[0]),
        "perceptual": math.nan,
    }
    if perceptual is not None and perceptual.available:
        row["perceptual"] = float(perceptual(p, s, sharp_features)[0])
    return row


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def unique_labels(labels: list[str], taken: Sequence[str] = ()) -> list[str]:
    """The methods' row names: ``labels`` with ``_2``, ``_3`` ... added where a name is taken
    (``blurry`` and ``unsharp`` always are, and the baselines' labels in ``taken``)."""
    taken = {"blurry", "unsharp", *taken}
    out = []
    for label in labels:
        # Two files named alike (runs/a/student_fast.onnx, weights/student_fast.onnx) would
        # otherwise share one row of the summary, averaged together.
        unique, n = label, 2
        while unique in taken:
            unique, n = f"{label}_{n}", n + 1
        taken.add(unique)
        out.append(unique)
    return out


MAX_SIGMA = 100.0  # px: an unsharp mask's widest Gaussian (--unsharp)


def plain_number(x: float) -> str:
    """``x`` as a label or option shows it: ``2`` for 2.0, every digit a float keeps
    (``:g``'s six made 0.1234567 and 0.1234568 one row)."""
    return repr(float(x)).removesuffix(".0")


def unsharp_setting(text: str) -> tuple[float, float]:
    """``"AMOUNT,SIGMA"`` of an unsharp mask (``--unsharp``), checked: amount >= 0, sigma > 0."""
    amount_text, comma, sigma_text = text.partition(",")
    try:
        amount, sigma = float(amount_text), float(sigma_text)
    except ValueError:
        amount = sigma = math.nan
    if not comma or not (math.isfinite(amount) and amount >= 0):
        raise ValueError(f"expected AMOUNT,SIGMA with AMOUNT >= 0, got {text!r}")
    if not (math.isfinite(sigma) and 0 < sigma <= MAX_SIGMA):
        raise ValueError(
            f"expected AMOUNT,SIGMA with SIGMA in (0, {MAX_SIGMA:g}] pixels, got {text!r}"
        )
    return amount, sigma


def unsharp_baseline(amount: float, sigma: float) -> tuple[str, Runner]:
    """The unsharp mask at other settings than the engine's, as a row ``unsharp@AMOUNT,SIGMA``
    (``training.tune_unsharp`` finds the best on training data)."""
    return f"unsharp@{plain_number(amount)},{plain_number(sigma)}", lambda x: unsharp_mask(
        x, amount, sigma
    )


def evaluate(
    samples: Iterator[Sample],
    methods: list[tuple[str, Runner]],
    out_dir: Path,
    *,
    baselines: Sequence[tuple[str, Runner]] = (),
    teacher: CachedTeacher | None = None,
    perceptual: PerceptualDistance | None = None,
    grid_rows: int = 4,
    grid_crop: int = 192,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every method on every sample; write CSV, summary (JSON + markdown) and grids.

    ``methods`` are the students ``(label, run)``; ``blurry`` and ``unsharp`` are always added
    first, then ``baselines`` (more methods that are not students: :func:`unsharp_baseline`),
    and the teacher (``teacher_<name>``) last. Returns the summary dict.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    all_methods: list[tuple[str, Runner]] = [("blurry", lambda x: x), ("unsharp", unsharp_mask)]
    all_methods += list(dict(baselines).items())  # one row per label
    labels = unique_labels([label for label, _ in methods], [label for label, _ in baselines])
    first_student = len(all_methods)
    all_methods += [(label, run) for label, (_, run) in zip(labels, methods, strict=True)]
    if teacher is not None:
        all_methods.append((f"teacher_{teacher.name}", teacher))
    student = all_methods[first_student][0] if methods else None

    rows: list[dict[str, Any]] = []
    grids: dict[str, list[list[tuple[str, np.ndarray]]]] = {}
    timings: dict[str, list[float]] = {}
    for sample in samples:
        outputs: dict[str, np.ndarray] = {}
        sample_methods = all_methods
        set_name = sample.set
        reference = sample.sharp
        has_truth = reference is not None
        if not has_truth:
            if teacher is None:
                raise ValueError(
                    f"{set_name} {sample.name} has no ground truth: pass --teacher, whose "
                    "output is the reference for real blur"
                )
            teacher_label = f"teacher_{teacher.name}"
            reference = outputs[teacher_label] = teacher(sample.blurry)
            if not np.isfinite(reference).all():
                # Every method's score against it would be NaN, which the set's means drop:
                # the image would vanish from the table without a word.
                raise RuntimeError(
                    f"teacher_{teacher.name} produced non-finite pixels on {sample.name}"
                )
            change = float(psnr(_to_tensor(sample.blurry), _to_tensor(reference))[0])
            set_name += "-kept" if change >= REAL_KEPT_DB else "-changed"
            # Scored against itself the teacher would read infinite dB.
            sample_methods = [m for m in all_methods if m[0] != teacher_label]
        # The sharp image's VGG features are the same for every method: compute them once.
        sharp_features = (
            perceptual.features(_to_tensor(reference))
            if perceptual is not None and perceptual.available
            else None
        )
        for label, run in sample_methods:
            t = time.perf_counter()
            if getattr(run, "temporal", False):
                outputs[label] = run(sample.blurry, sample.history)  # type: ignore[call-arg]
            else:
                outputs[label] = run(sample.blurry)
            timings.setdefault(label, []).append(time.perf_counter() - t)
            if not np.isfinite(outputs[label]).all():
                # A NaN score would drop out of the average and flatter the model.
                raise RuntimeError(f"{label} produced non-finite pixels on {sample.name}")
            row = {"set": set_name, "image": sample.name, "method": label}
            row.update(_metric_row(outputs[label], reference, perceptual, sharp_features))
            rows.append(row)
        log.info(
            "%s %s: %s",
            set_name,
            sample.name,
            "  ".join(f"{r['method']} {r['psnr']:.2f}" for r in rows[-len(sample_methods) :]),
        )
        grid = grids.setdefault(set_name, [])
        if len(grid) < grid_rows:
            y, x, side = _best_crop(reference, grid_crop)
            psnr_of = {r["method"]: r["psnr"] for r in rows[-len(sample_methods) :]}
            cols = ["blurry"] + ([student] if student else [])
            # Without ground truth the teacher is the last column, in the place of the sharp one.
            cols += [f"teacher_{teacher.name}"] if teacher is not None and has_truth else []
            row_cells = []
            for c in cols:
                crop = D.to_uint8(outputs[c][y : y + side, x : x + side])
                row_cells.append((f"{c.removeprefix('teacher_')} {psnr_of[c]:.2f} dB", crop))
            last = "sharp" if has_truth or teacher is None else f"teacher {teacher.name}"
            row_cells.append(
                (
                    f"{last} ({sample.name})"[:40],
                    D.to_uint8(reference[y : y + side, x : x + side]),
                )
            )
            grid.append(row_cells)

    if not rows:
        raise RuntimeError("no samples were evaluated (empty or unreadable data)")

    with open(out_dir / "per_image.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["set", "image", "method", *METRICS])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})

    sets: dict[str, Any] = {}
    for set_name in dict.fromkeys(r["set"] for r in rows):
        set_rows = [r for r in rows if r["set"] == set_name]
        table: dict[str, Any] = {}
        for label, _ in all_methods:
            mrows = [r for r in set_rows if r["method"] == label]
            if mrows:  # the teacher has no row on real blur, where it is the reference
                table[label] = {m: _mean([r[m] for r in mrows]) for m in METRICS}
        base = table["blurry"]["psnr"]
        for label in table:
            table[label]["delta_psnr"] = table[label]["psnr"] - base
        sets[set_name] = {"n": len(set_rows) // len(table), "methods": table}

    summary: dict[str, Any] = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "methods": [label for label, _ in all_methods],
        "sets": sets,
        "seconds_per_image": {k: float(np.mean(v)) for k, v in timings.items()},
        "perceptual": "VGG L1 distance"
        if perceptual is not None and perceptual.available
        else (f"unavailable: {perceptual.reason}" if perceptual is not None else "off"),
    }
    if teacher is not None:
        summary["teacher"] = {"name": teacher.name, "weights": str(teacher.weights)}
        if getattr(teacher, "code", None):
            summary["teacher"]["code"] = teacher.code
    summary.update(meta or {})
    # An earlier run into the same folder may have scored other sets: its grids would sit
    # beside this summary as if they were this run's. Only the grids its summary names go
    # (--out may be a folder of the user's, with other files called grid_*.png).
    earlier: list[str] = []
    try:
        earlier = list(json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["sets"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out_dir / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    for set_name, grid in grids.items():
        write_grid(grid, out_dir / f"grid_{set_name}.png")
    for name in earlier:
        stale = out_dir / f"grid_{name}.png"
        if not grids.get(name) and stale.parent == out_dir:  # none written for it this time
            stale.unlink(missing_ok=True)
    return summary


def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """One markdown table per set: method, PSNR, gain over blurry, SSIM, MS-SSIM, perceptual."""
    lines = []
    for set_name, s in summary["sets"].items():
        real = set_name.startswith(REAL_SET)
        ref = "; reference: the teacher's output, no ground truth" if real else ""
        lines += [
            f"### {set_name} ({s['n']} images{ref})",
            "",
            "| method | PSNR (dB) | vs blurry | SSIM | MS-SSIM | perceptual (lower better) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, m in s["methods"].items():
            lines.append(
                f"| {label} | {_fmt(m['psnr'], 2)} | {m['delta_psnr']:+.2f} | {_fmt(m['ssim'], 4)} "
                f"| {_fmt(m['ms_ssim'], 4)} | {_fmt(m['perceptual'], 4)} |"
            )
        lines.append("")
    for line in summary.get("not_held_out") or []:
        # The raw tables above read as held-out; for this model they are not.
        lines.append(f"**Not held-out**: {line}.")
    return "\n".join(lines)


def _refuse_repeated_data(
    p: argparse.ArgumentParser,
    specs: Sequence[DataSpec],
    texts: Sequence[str],
    windows: Sequence[int],
    raw_stride: int,
) -> None:
    """A usage error for data given twice (by any spelling of its folders), or raw ranges of one
    clip whose windows share centres: each image would be scored twice and weigh double in its
    set's mean and n."""
    seen: list[tuple[tuple[str, ...], str, set[int] | None]] = []
    for spec, text in zip(specs, texts, strict=True):
        folders = (spec.blur_dir, spec.sharp_dir) if spec.kind == "pairs" else (spec.path,)
        key = (spec.kind, *(str(Path(f).resolve()) for f in folders if f))
        centres = None
        if spec.kind == "raw":
            centres = set(raw_spec_centres(spec, windows, raw_stride))
        for other_key, other_text, other_centres in seen:
            if other_key != key:
                continue
            if centres is None or other_centres is None:
                p.error(f"--data {text}: the same data as --data {other_text} (scored twice)")
            if centres & other_centres:
                p.error(
                    f"--data {text}: windows centred on frames "
                    f"{', '.join(map(str, sorted(centres & other_centres)))} are scored by "
                    f"--data {other_text} too"
                )
        seen.append((key, text, centres))


def _default_vgg() -> Path | None:
    shared = Path(os.environ.get("SHARPCAM_SHARED", _REPO.parent / "shared"))
    p = shared / "weights" / "vgg19_normalised" / "vgg_normalised_conv3_1.pth"
    return p if p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="PSNR / SSIM / MS-SSIM / perceptual distance of students beside the blurry "
        "input, unsharp mask and the teacher.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Data (")[1].split("Outputs")[0].join(["Data (", ""]),
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        type=Path,
        help="checkpoint .pt or .onnx (repeatable)",
    )
    p.add_argument("--data", action="append", required=True, help="data spec (repeatable)")
    p.add_argument("--teacher", help="teacher registry name (dmphn, restormer)")
    p.add_argument("--teacher-weights", type=Path, help="teacher weights (file or folder)")
    p.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "sharpcam" / "teacher_eval"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--plain", dest="mode", action="store_const", const="plain", help="sRGB average only"
    )
    g.add_argument(
        "--linear", dest="mode", action="store_const", const="linear", help="linear-light only"
    )
    g.add_argument("--both", dest="mode", action="store_const", const="both", help="both (default)")
    p.set_defaults(mode="both")
    p.add_argument(
        "--windows",
        default="7,11",
        help="raw: window sizes, odd and at least 3; the GoPro dataset's are 7-13 (default 7,11)",
    )
    p.add_argument("--raw-stride", type=int, default=20, help="raw: frames between window centres")
    p.add_argument(
        "--max-size", type=int, default=1280, help="downscale longest side to this (0 = off)"
    )
    p.add_argument(
        "--crop", type=int, default=0, help="centre crop of this side, px (0 = whole image)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="at most this many samples in each set of each --data spec (0 = all): two specs "
        "that give the same set (two raw clips) give it up to twice as many",
    )
    p.add_argument(
        "--vgg-weights",
        type=Path,
        default=_default_vgg(),
        help="VGG file for the perceptual distance",
    )
    p.add_argument("--no-perceptual", action="store_true", help="skip the perceptual distance")
    p.add_argument(
        "--unsharp",
        metavar="AMOUNT,SIGMA",
        action="append",
        default=[],
        help="also score the unsharp mask at this amount and Gaussian sigma (repeatable; rows "
        "named unsharp@AMOUNT,SIGMA; the row 'unsharp' is the engine's default, 1,2). "
        "python -m training.tune_unsharp finds the best on training data: tuned on the frames "
        "scored here it would flatter the baseline",
    )
    p.add_argument("--grid-rows", type=int, default=4)
    p.add_argument("--grid-crop", type=int, default=192)
    p.add_argument(
        "--scale",
        type=float,
        action="append",
        help="also run every model at this processing scale in (0, 1], as the app's --scale "
        "does (repeatable; rows named MODEL@0.75x)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        action="append",
        help="also run every model as a geometric self-ensemble of 2, 4 or 8 flips and quarter "
        "turns, that many times the work (repeatable; rows named MODEL@ensN)",
    )
    p.add_argument(
        "--low-light",
        metavar="PEAK[,SIGMA]",
        help="film every set in poor light: shot noise at PEAK photons for white, read noise "
        "SIGMA (default 0.01), 8-bit; sets named SET-lowlightPEAK (not for real:, which has no "
        "clean frame)",
    )
    p.add_argument(
        "--noise-in",
        choices=NOISE_SPACES,
        default="encoded",
        help="--low-light: add the noise to the encoded picture (default; its grain grows with "
        "brightness) or to linear light before the sRGB curve, as a sensor does (SIGMA then of "
        "white's light; even grain from mid-tones up, the shadows noisiest; sets named "
        "SET-lowlightPEAK-sensor)",
    )
    p.add_argument(
        "--denoise",
        action="store_true",
        help="raw: only: also run the app's noise reduction (run --denoise) over each "
        "sample's --history frames and the sample, alone (row 'denoise') and before every "
        "model (rows MODEL+denoise); with --low-light, what it is for. Windows without "
        "that many earlier windows in the range are left out (a warning counts them), so the "
        "sets are smaller than without it",
    )
    p.add_argument(
        "--history",
        type=int,
        default=6,
        help="--denoise: frames the camera gave before each sample (default 6)",
    )
    p.add_argument(
        "--frame-step",
        type=int,
        default=8,
        help="--denoise: raw frames between those frames (default 8: a 30 fps camera from "
        "240 fps frames)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch / ORT CPU threads (0 = default)")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the teacher and .pt checkpoints run: auto | cpu | cuda | cuda:N | mps "
        "(default cpu; .onnx files run on ONNX Runtime's CPU provider)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/eval/<time>)"
    )
    args = p.parse_args(argv)
    # Only this module's progress at INFO: libraries (onnxscript's optimiser) are chatty there.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    # Everything a run can be refused for is checked here, before a model is loaded: a bad
    # option found at its first use fails with a traceback, and may do so only after the
    # earlier --data sets (or the students' work on a first image) have run.
    from training.export import folder_refusal

    out = args.out or Path("runs/eval") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    refusal = folder_refusal(out)
    if refusal is not None:
        # mkdir failed on it after the models had loaded, in a traceback.
        if args.out is None:
            p.error(f"the default output folder {out}: {refusal}; give one with --out DIR")
        p.error(f"--out {out}: {refusal}")
    try:
        specs = [parse_data(s) for s in args.data]
        try:
            windows = [int(w) for w in args.windows.split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"--windows: not whole numbers: {args.windows!r}") from None
        check_windows(windows)
    except ValueError as exc:
        p.error(str(exc))
    windows = list(dict.fromkeys(windows))
    light: tuple[float, float] | None = None
    if args.low_light is not None:
        peak_text, _, sigma_text = args.low_light.partition(",")
        try:
            light = (float(peak_text), float(sigma_text) if sigma_text else 0.01)
        except ValueError:
            p.error(f"--low-light: expected PEAK[,SIGMA] numbers, got {args.low_light!r}")
        if not (math.isfinite(light[0]) and light[0] > 0):
            p.error(f"--low-light: PEAK must be > 0, got {peak_text}")
        if not (math.isfinite(light[1]) and light[1] >= 0):
            p.error(f"--low-light: SIGMA must be >= 0, got {sigma_text}")
        if any(spec.kind == "real" for spec in specs):
            p.error("--low-light: real: sets have no clean frame to score the noisy input against")
    elif args.noise_in != "encoded":
        p.error(f"--noise-in {args.noise_in}: only with --low-light, which adds the noise")
    for flag, value, least in (
        ("--raw-stride", args.raw_stride, 1),
        ("--max-size", args.max_size, 0),
        ("--crop", args.crop, 0),
        ("--limit", args.limit, 0),
        ("--grid-rows", args.grid_rows, 0),
        ("--grid-crop", args.grid_crop, 1),
        ("--threads", args.threads, 0),
        ("--history", args.history, 1),
        ("--frame-step", args.frame_step, 1),
    ):
        if value < least:
            p.error(f"{flag} must be >= {least}, got {value}")
    for spec, text in zip(specs, args.data, strict=True):
        folders = [spec.blur_dir, spec.sharp_dir] if spec.kind == "pairs" else [spec.path]
        for folder in folders if spec.kind != "demo" else []:
            if not Path(folder).exists():
                p.error(f"--data {text}: no such folder {folder}")
        if spec.kind == "raw":
            try:
                D.list_frames(spec.path)  # a gap, or an image without a number among them
            except ValueError as exc:
                p.error(f"--data {text}: {exc}")
        if spec.kind == "real" and not args.teacher:
            p.error(
                f"--data {text}: real blur has no ground truth; pass --teacher, whose "
                "output is the reference"
            )
    if args.denoise and any(spec.kind != "raw" for spec in specs):
        p.error("--denoise: every --data must be a raw: clip (the others have no earlier frames)")
    _refuse_repeated_data(p, specs, args.data, windows, args.raw_stride)
    for m in args.model:
        if not m.is_file():
            p.error(f"--model {m}: no such file")
    for scale in args.scale or []:
        if not 0.0 < scale <= 1.0:
            p.error(f"--scale must be in (0, 1], got {scale}")
    for n in args.ensemble or []:
        if n not in ENSEMBLES:
            p.error(f"--ensemble must be one of {sorted(ENSEMBLES)}, got {n}")
    try:
        settings = [unsharp_setting(text) for text in args.unsharp]
    except ValueError as exc:
        p.error(f"--unsharp: {exc}")
    # The engine's own setting is the row `unsharp` already: not twice.
    baselines = [
        unsharp_baseline(*setting)
        for setting in dict.fromkeys(settings)
        if setting != (UNSHARP_AMOUNT, UNSHARP_SIGMA)
    ]
    from training.train import device_option

    device = device_option(p, args.device)
    teacher = None
    if args.teacher:
        try:
            teacher = CachedTeacher(
                args.teacher, args.teacher_weights, args.cache_dir, device=device
            )
            # Loaded now even when every output is cached (a second or so): a folder without
            # the teacher's files, or a checkpoint of another network, otherwise stopped the
            # run with a traceback at the first uncached image, after the students ran on it.
            teacher.load()
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            p.error(f"--teacher: {exc}")
    perceptual = None if args.no_perceptual else PerceptualDistance(args.vgg_weights)
    if perceptual is not None and not perceptual.available:
        if args.vgg_weights is not None:
            # Named (on the command line, or the shared copy found by default) but unusable:
            # a warning in the log and a column of n/a, seen once the whole run had finished.
            p.error(f"--vgg-weights {args.vgg_weights}: {perceptual.reason} (or --no-perceptual)")
        log.warning("perceptual distance unavailable: %s", perceptual.reason)

    def samples_of(spec: DataSpec) -> Iterator[Sample]:
        samples = iter_samples(
            spec,
            mode=args.mode,
            windows=windows,
            raw_stride=args.raw_stride,
            max_size=args.max_size,
            crop=args.crop,
            limit=args.limit,
            history=args.history if args.denoise else 0,
            frame_step=args.frame_step,
        )
        if light is None:
            return samples
        return (low_light(s, *light, space=args.noise_in) for s in samples)

    # Each set's first sample, now: a folder without images (or a raw range without windows)
    # otherwise stops the run only when its turn comes, after every set before it.
    firsts = []
    for spec, text in zip(specs, args.data, strict=True):
        try:
            firsts.append(next(samples_of(spec)).blurry)
        except StopIteration:
            if args.denoise:
                p.error(
                    f"--data {text}: no window has --history {args.history} earlier windows "
                    f"--frame-step {args.frame_step} frames apart inside its range: lower them, "
                    "or widen the range"
                )
            p.error(f"--data {text}: no readable samples")
        except (FileNotFoundError, ValueError) as exc:
            p.error(f"--data {text}: {exc}")
    uncached = [img for img in firsts if teacher is not None and not teacher.cached(img)]
    if uncached:
        h, w = max((img.shape[:2] for img in uncached), key=lambda hw: hw[0] * hw[1])
        warning = teacher_memory_warning(args.teacher, h, w, device, device_memory(device))
        if warning is not None:
            log.warning("warning: %s", warning)
    if args.threads:
        torch.set_num_threads(args.threads)
    ensembles = list(dict.fromkeys(args.ensemble or []))  # --ensemble 2 twice: one row
    methods = []
    file_rows = []  # (index in methods, model file)
    for m in args.model:
        scales = [s for s in args.scale or [] if s != 1.0]
        try:
            label, run = load_model_runner(m, threads=args.threads, device=device)
            multiple = model_multiple(m) if scales else 1
        except RuntimeError as exc:  # ExportError too: a damaged file, a renamed variant
            p.error(f"--model {m}: {exc}")
        file_rows.append((len(methods), m))
        methods.append((label, run))
        methods += [(f"{label}@{s:g}x", at_scale(run, s, multiple)) for s in scales]
        methods += [(f"{label}@ens{n}", self_ensemble(run, n)) for n in ensembles]
        if args.denoise:
            methods.append((f"{label}+denoise", with_denoise(run)))
    if args.denoise:
        methods.append(("denoise", with_denoise(lambda x: x)))

    def all_samples() -> Iterator[Sample]:
        for spec in specs:
            yield from samples_of(spec)

    from training.teachers import sha256_file

    # Which bytes each row measured: `training.export --metrics` refuses a summary whose row
    # for a file name was measured on other bytes (new weights under an old summary). Rows are
    # named as evaluate() names them: a second file of the same name is `<name>_2`.
    labels = unique_labels([label for label, _ in methods], [label for label, _ in baselines])
    shas = {labels[i]: sha256_file(m) for i, m in file_rows}
    # A model scored on raw frames it was trained on (a checkpoint's own range, else the
    # default one): its raw sets read as held-out.
    trained = [(labels[i], checkpoint_data_config(m)) for i, m in file_rows]
    meta = {
        "data": args.data,
        "models": [str(m) for m in args.model],
        "model_sha256": shas,
        "not_held_out": check_trained_on(specs, trained, windows, args.raw_stride),
        "options": {
            "windows": windows,
            "raw_stride": args.raw_stride,
            "max_size": args.max_size,
            "crop": args.crop,
            "limit": args.limit,
            "mode": args.mode,
            "ensemble": ensembles,
            "unsharp": list(dict(baselines)),
            "low_light": (
                None
                if light is None
                else {"peak": light[0], "sigma": light[1], "noise_in": args.noise_in}
            ),
            "denoise": (
                {"history": args.history, "frame_step": args.frame_step} if args.denoise else None
            ),
        },
    }
    try:
        summary = evaluate(
            all_samples(),
            methods,
            out,
            baselines=baselines,
            teacher=teacher,
            perceptual=perceptual,
            grid_rows=args.grid_rows,
            grid_crop=args.grid_crop,
            meta=meta,
        )
    except OSError as exc:  # a full disk: one line and exit 1, what was written is kept
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 1
    print(summary_markdown(summary))
    if teacher is not None:
        print(
            f"teacher: {teacher.misses} computed ({teacher.seconds:.0f} s), {teacher.hits} from cache"
        )
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
