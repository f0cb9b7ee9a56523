"""Motion-adaptive temporal noise reduction for live video in poor light.

A dim webcam's frames carry shot and read noise that the deblurring students leave as it is
(they were trained not to amplify it; model card, "In poor light"). Where the scene holds still
(the wall behind a caller, most of a call) the same pixel is seen again each frame with fresh
noise, so a running average over frames removes the noise without touching detail; where it
moves, averaging would smear, so there the frame passes as it is. This is the recursive filter
of broadcast and camera noise reducers::

    out_t = frame_t + w * (out_{t-1} - frame_t)
    w     = strength * min3x3(clip(1 - |blur(luma(frame_t) - luma(out_{t-1}))| / (threshold * sigma), 0, 1))

computed on half-size luma (a 2x2 mean halves white noise, so a change of one noise level over
a few pixels is told from noise), with ``sigma`` the noise level measured from the frames
themselves (:func:`estimate_noise`). The 3x3 minimum keeps a thin moving line from leaving a
trail (the blurred difference of a 2-pixel line cancels between where it was and where it is).
Below :data:`MIN_SIGMA` (a clean, well-lit camera) frames pass bit for bit, so the filter can be
left on; from there the strength rises over :data:`RAMP` levels, so noise near the threshold does
not switch it on and off from one measurement to the next.

What it does not do: remove noise from what moves (there is no motion compensation; a moving
face keeps its noise), tell an isoluminant colour change (red to green of the same brightness)
from noise, since it looks at luma only, or leave alone a clean picture with no flat part at all
that moves as a whole (fine foliage panned: its motion reads as noise, and faint changes under
``threshold`` noise levels are averaged); noise as coarse as a Gaussian of 2 pixels reads as a
clean picture and is left (:func:`estimate_noise`).

Shapes: frames are ``(H, W, 3) uint8`` RGB; weights and luma are ``(H/2, W/2) float32``.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.frames import check_rgb8

#: noise level (8-bit levels of half-size luma) below which frames pass untouched
MIN_SIGMA = 1.0
#: levels over MIN_SIGMA across which the strength rises from 0 to full
RAMP = 1.0
#: the flattest tenth of a picture's 8x8 blocks measures less than this on a clean picture (0.2-0.86
#: on photos, clips and the held-out GoPro frames), more with noise (1.0 and up for a webcam's
#: coarse grain): under it, what changes between frames is taken for motion, not noise
FLAT_FLOOR = 0.95
#: frames smaller than this on a side are passed through (nothing to measure noise on)
MIN_SIDE = 16

# A 3x3 kernel whose response to an image's smooth parts is ~0 and to white noise of std s has
# std 6 s (Immerkaer, "Fast noise variance estimation", 1996).
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_MEAN_ABS = float(np.sqrt(2.0 / np.pi))  # mean |x| of a unit normal
_BLOCK = 8  # the blocks (of half-size luma) that noise is measured over
# What the two estimates read on white noise, as a share of its std (measured at 720p, std 1.4-5.4
# of half-size luma): a low percentile of block means sits below their mean.
_FLAT_READS, _STILL_READS = 0.795, 0.93
_SQUARE = np.ones((3, 3), np.uint8)


def half_luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H // 2, W // 2)`` float32 luma, each pixel a 2x2 mean."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    small = cv2.resize(
        gray[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
    )
    return small.astype(np.float32)


def _block_means(values: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of the means of ``values`` over :data:`_BLOCK` x :data:`_BLOCK` blocks."""
    h, w = values.shape
    gh, gw = max(1, h // _BLOCK), max(1, w // _BLOCK)
    means = cv2.resize(values[: gh * _BLOCK, : gw * _BLOCK], (gw, gh), interpolation=cv2.INTER_AREA)
    return float(np.percentile(means, percentile))


def estimate_noise(luma: np.ndarray, previous: np.ndarray | None = None) -> float:
    """Noise std of ``luma`` ``(H, W)`` float32, in its levels.

    With ``previous`` (the previous frame's luma, same shape): from the frame-to-frame
    difference over the stillest quarter of the picture (the 25th percentile of 8x8 blocks'
    mean |difference|): what a still part of the scene shows is its noise at the scale the
    filter looks at, however fine or coarse the noise's grain (a webcam's demosaicing and
    compression make it coarse). Where the picture's flattest tenth of blocks shows less high
    frequency than :data:`FLAT_FLOOR`, the picture is clean and what changes between frames is
    motion (a clean photo panned by a pixel changes everywhere): then, and without a previous
    frame, the picture's own estimate, from those flattest blocks (a kernel blind to smooth
    shading whose response to white noise of std s has std 6 s; Immerkaer 1996).
    """
    if luma.ndim != 2 or min(luma.shape) < 3:
        raise ValueError(f"expected (H, W) luma of at least 3x3, got {tuple(luma.shape)}")
    response = np.abs(cv2.filter2D(luma, -1, _NOISE_KERNEL))
    flat = _block_means(response, 10) / (6.0 * _MEAN_ABS * _FLAT_READS)
    if previous is None or previous.shape != luma.shape or flat < FLAT_FLOOR:
        return flat
    still = _block_means(np.abs(luma - previous), 25)
    return still / (_MEAN_ABS * np.sqrt(2.0) * _STILL_READS)


def motion_weights(
    luma: np.ndarray, previous_out: np.ndarray, sigma: float, *, strength: float, threshold: float
) -> np.ndarray:
    """Per-pixel weight ``(H, W)`` float32 in ``[0, strength]`` of the previous output: high where
    the two differ by noise only, 0 where the local mean difference reaches ``threshold * sigma``."""
    diff = cv2.blur(luma - previous_out, (3, 3))
    np.abs(diff, out=diff)
    diff *= -1.0 / (threshold * sigma)
    diff += 1.0
    np.clip(diff, 0.0, 1.0, out=diff)
    # The 3x3 minimum: a thin line's blurred difference cancels between its old and new
    # places, and those pixels (and, through the upsampling, the line's) were averaged.
    weights = cv2.erode(diff, _SQUARE)
    weights *= strength
    return weights


def temporal_denoise(
    frame: np.ndarray,
    previous_out: np.ndarray,
    sigma: float,
    *,
    strength: float = 0.8,
    threshold: float = 4.0,
    luma: np.ndarray | None = None,
    previous_luma: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the recursive filter.

    Args:
        frame: ``(H, W, 3)`` uint8, this frame.
        previous_out: ``(H, W, 3)`` uint8, the filter's output for the previous frame.
        sigma: noise std in levels of half-size luma (:func:`estimate_noise` of
            :func:`half_luma`).
        strength: the most weight the past gets, in [0, 1); 0.8 averages ~9 frames of a still
            scene (noise std / 3).
        threshold: a local luma change of ``threshold * sigma`` counts as motion (weight 0).
        luma, previous_luma: :func:`half_luma` of ``frame`` and of ``previous_out`` when the
            caller has them.

    Returns:
        ``(out, out_luma)``: the ``(H, W, 3)`` uint8 output and its ``(H/2, W/2)`` luma (the
        weighted mean of the two lumas, for the next step).
    """
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength must be in [0, 1), got {strength!r}")
    if not threshold > 0.0 or not sigma > 0.0:
        raise ValueError(f"threshold and sigma must be > 0, got {threshold!r} and {sigma!r}")
    check_rgb8(frame, "temporal_denoise frame")
    check_rgb8(previous_out, "temporal_denoise previous_out")
    if frame.shape != previous_out.shape:
        raise ValueError(
            f"frame {tuple(frame.shape)} and previous_out {tuple(previous_out.shape)} differ"
        )
    luma = half_luma(frame) if luma is None else luma
    previous_luma = half_luma(previous_out) if previous_luma is None else previous_luma
    weights = motion_weights(luma, previous_luma, sigma, strength=strength, threshold=threshold)
    return _blend(frame, previous_out, luma, previous_luma, weights)


def _blend(
    frame: np.ndarray,
    previous_out: np.ndarray,
    luma: np.ndarray,
    previous_luma: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    out_luma = luma + weights * (previous_luma - luma)
    h, w = frame.shape[:2]
    full = cv2.resize(weights, (w, h), interpolation=cv2.INTER_LINEAR)
    # blendLinear divides by the sum of the two weights, 1 here: out = frame + w (prev - frame).
    out = cv2.blendLinear(frame, previous_out, 1.0 - full, full)
    return out, out_luma


class TemporalDenoiser:
    """Stateful :func:`temporal_denoise` over a stream, measuring the noise as it goes.

    ``denoiser(frame)`` returns the filtered frame (a new array, or ``frame`` itself when it
    passes untouched: the first frame, after a size change, or with noise under
    :data:`MIN_SIGMA`). The noise level is re-measured every ``measure_every`` frames and
    smoothed over time, so one odd frame (a cut, a flash) moves it little; a frame that changes
    almost everywhere starts the average afresh. Not thread-safe: one stream, one caller.

    Args:
        strength: see :func:`temporal_denoise`.
        threshold: see :func:`temporal_denoise`.
        measure_every: frames between noise measurements.
    """

    #: a frame where more than this share of pixels moved starts the average afresh (a cut)
    CUT_FRACTION = 0.6

    def __init__(
        self, *, strength: float = 0.8, threshold: float = 4.0, measure_every: int = 4
    ) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {strength!r}")
        if not threshold > 0.0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if int(measure_every) < 1:
            raise ValueError(f"measure_every must be >= 1, got {measure_every!r}")
        self.strength = float(strength)
        self.threshold = float(threshold)
        self.measure_every = int(measure_every)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame passes as it is and starts a new average."""
        self._out: np.ndarray | None = None
        self._out_luma: np.ndarray | None = None
        self._in_luma: np.ndarray | None = None
        self._sigma: float | None = None
        self._count = 0
        self.moving = 0.0  # share of pixels the last filtered frame took as moving

    @property
    def sigma(self) -> float | None:
        """The noise level now (levels of half-size luma), ``None`` before a frame."""
        return self._sigma

    @property
    def active(self) -> bool:
        """Whether frames are being filtered (the noise is over :data:`MIN_SIGMA`)."""
        return self._sigma is not None and self._sigma >= MIN_SIGMA

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        check_rgb8(frame, "TemporalDenoiser frame")
        h, w = frame.shape[:2]
        if min(h, w) < MIN_SIDE:
            self.reset()
            return frame
        luma = half_luma(frame)
        if self._out is None or self._out.shape != frame.shape:
            self.reset()
            self._sigma = estimate_noise(luma)
            self._keep(frame, luma, luma)
            return frame
        if self._count % self.measure_every == 0:
            sigma = estimate_noise(luma, self._in_luma)
            self._sigma = sigma if self._sigma is None else 0.7 * self._sigma + 0.3 * sigma
        self._count += 1
        assert self._sigma is not None and self._out_luma is not None
        if self._sigma < MIN_SIGMA:
            self._keep(frame, luma, luma)
            return frame
        ramp = min(1.0, (self._sigma - MIN_SIGMA) / RAMP)
        weights = motion_weights(
            luma,
            self._out_luma,
            self._sigma,
            strength=self.strength * ramp,
            threshold=self.threshold,
        )
        self.moving = float(np.count_nonzero(weights == 0.0)) / weights.size
        if self.moving > self.CUT_FRACTION:
            self._keep(frame, luma, luma)
            return frame
        out, out_luma = _blend(frame, self._out, luma, self._out_luma, weights)
        self._keep(out, luma, out_luma)
        return out

    def _keep(self, out: np.ndarray, luma: np.ndarray, out_luma: np.ndarray) -> None:
        # A copy: the caller may reuse or change the array it was given or got back.
        self._out = out.copy()
        self._in_luma = luma
        self._out_luma = out_luma
