"""Motion-adaptive temporal noise reduction for live video in poor light.

A dim webcam's frames carry shot and read noise that the deblurring students leave as it is
(they were trained not to amplify it; model card, "In poor light"). Where the scene holds still
(the wall behind a caller, most of a call) the same pixel is seen again each frame with fresh
noise, so a running average over frames removes the noise without touching detail; where it
moves, averaging would smear, so there the frame passes as it is. This is the recursive filter
of broadcast and camera noise reducers::

    out_t = frame_t + w * (out_{t-1} - frame_t)
    d     = luma(frame_t) - luma(out_{t-1})
    w     = strength * min3x3(clip(1 - max(|blur3x3(d)|, |d| / 2) / (threshold * sigma), 0, 1))

computed on half-size luma (a 2x2 mean halves white noise, so a change of one noise level over
a few pixels is told from noise), with ``sigma`` the noise level measured from the frames
themselves (:func:`estimate_noise`). The 3x3 minimum keeps a thin moving line from leaving a
trail (the blurred difference of a 2-pixel line cancels between where it was and where it is).
Below :data:`MIN_SIGMA` (a clean, well-lit camera) frames pass bit for bit, so a clean camera is
not touched; from there the strength rises over :data:`RAMP` levels, so noise near the threshold does
not switch it on and off from one measurement to the next.

Colour noise, the red and green speckle a dim sensor adds to its grain, is taken out of every
frame, moving or not, by blurring Cr and Cb alone (:func:`reduce_colour_noise`, a Gaussian of up
to :data:`COLOUR_BLUR` pixels): a picture's detail is in its luma and its colour is smooth, which
is why video codecs send colour at half size. It is measured from one frame at a time
(:func:`estimate_colour_noise`) and acts from :data:`COLOUR_MIN_SIGMA`, growing over
:data:`COLOUR_RAMP`, but only where the luma is noisy by the luma's own measure, both in one frame
and over time (from :data:`FLAT_FLOOR`, growing over :data:`RAMP`): in one frame a drawing's
coloured edges (a slide, text on a screen) and a clean photo sent with half-size colour read as
colour noise, a reading the colour alone cannot check over time (a shake or a flicker makes
any picture's frames differ), and a camera's colour noise comes with noise in its luma. A
camera whose MJPG compression has already taken out its fine colour noise reads clean and is
left as it is.

Grain in what moves, which the average over time passes as it is, is flattened within the frame
by a local adaptive Wiener filter on the luma (:func:`reduce_grain`): a pixel keeps of its
difference from the mean of its 5x5 window the share of the window's variance that is more than
the grain's, so a moving face's skin and a wall behind it lose their grain and edges keep
theirs. It is sized by the grain the average over time left at each pixel
(:func:`grain_flatness`): all of it where the scene
moved, a ninth of its variance where the average has settled, so a still picture is not flattened
further than its remaining grain asks. It goes by the lower of the two noise estimates (the
picture's own and the one over time, :func:`noise_levels`: a fine texture moving fast reads as
noise over time), taken to the frame's own pixels by how fine the grain is
(:func:`grain_fineness`: white noise is twice as strong there as on half-size luma, a webcam's
coarse grain no stronger), and acts, as the colour blur does, from :data:`FLAT_FLOOR`, growing
over :data:`RAMP`. The colour blur and the grain filter are the output's: the average over time is
kept without them, so they do not build up from frame to frame.

What it does not do: average what moves over time (there is no motion compensation: the grain
filter takes grain from its flat parts, not from beside its edges or from a texture that varies
about as much as the grain does); follow grain that varies with brightness (one level serves the
whole frame: where the grain is weaker than that level, as shot noise added to the encoded
picture is in its dark parts, a moving texture there loses some of its own variation, a dark
gravel texture under a bright wall ending up to a third further from the clean picture than
without the grain filter, and motion there is told from noise by the grainier parts' level,
so it is averaged, smeared: such a gravel panning 6 pixels a frame under a wall twice as
grainy ends 1.6x further from the clean picture than the frame as it came; where the grain is
stronger, the filter does less than it could. A level by band of brightness was tried and
dropped: a band all of fine moving texture reads as grain in both of its estimates, where the
frame's level has its flattest blocks to go by; weights/TRAINING_LOG.md); keep a
texture the average has already smeared (under coarse grain, moving 2-4 pixels a frame) from
being flattened a little further (up to 5 %); remove colour noise that comes without
grain, or with grain under :data:`FLAT_FLOOR` (it is not told from a drawing's edges), or coarse
colour blotches (a camera's compression leaves some 8 pixels and wider, which neither the
estimate nor a 1-pixel blur sees); tell an isoluminant change, red to green of the same
brightness, from noise over time (it compares luma); see grain as coarse as a Gaussian of 1.5
pixels (it reads as a clean picture); or leave alone a clean picture with no flat part at all
(foliage, a patterned wall filling the frame; flat parts clipped to white or black do not count,
so a textured object moving over a blown-out white wall is such a picture) that pans about 2
pixels a frame or more, or shakes back and forth by half a pixel or more (or by a tenth of a
pixel where each frame is resampled, which also changes its sharpness): its fine texture then
reads as noise, and changes under the thresholds are averaged (34-78 levels at most on such
photos in a 2-pixel pan; :func:`estimate_noise`), and its colour is blurred and its smoothest
texture flattened with the rest, which adds to the change; as it does under a light that
flickers by 6 % or more (by 6 levels at most there, where every frame is taken for a cut and
passes, colour included).

After a cut the levels, smoothed over measurements, lag the new scene: its colour and its grain
are left alone until a measurement of it finds grain over :data:`FLAT_FLOOR`.

Shapes: frames are ``(H, W, 3) uint8`` RGB; weights, flatness and luma are ``(H/2, W/2)
float32``.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.frames import check_rgb8

#: noise level (8-bit levels of half-size luma) below which frames pass untouched
MIN_SIGMA = 1.0
#: levels over MIN_SIGMA across which the strength rises from 0 to full
RAMP = 1.0
#: noise from which a stream filtered with noise reduction off is worth telling its user about
#: (where the filter works at full strength)
SUGGEST_SIGMA = MIN_SIGMA + RAMP
#: colour noise (levels of half-size Cr and Cb, :func:`estimate_colour_noise`) below which the
#: colour passes untouched
COLOUR_MIN_SIGMA = 0.6
#: levels over COLOUR_MIN_SIGMA across which the colour blur grows to full
COLOUR_RAMP = 0.6
#: the colour blur at full strength: the std (pixels) of a Gaussian over Cr and Cb alone
COLOUR_BLUR = 1.0
#: the flattest 1 % of a picture's 8x8 blocks measures less than this (levels, as white noise's std)
#: on a clean picture with a flat part anywhere: under it, what changes between frames is taken
#: for motion, not noise
FLAT_FLOOR = 1.2
#: the grain filter (:func:`reduce_grain`) takes this many times the grain's std on the frame's
#: own pixels (:func:`grain_fineness`) for the grain's share of each window's spread: a window
#: that varies by no more is averaged, one that varies more keeps what is above it
GRAIN_SPREAD = 1.0
#: the grain filter's window: (2 r + 1)^2 pixels
GRAIN_RADIUS = 2
#: frames smaller than this on a side are passed through (nothing to measure noise on)
MIN_SIDE = 16

# A 3x3 kernel whose response to an image's smooth parts is ~0 and to white noise of std s has
# std 6 s (Immerkaer, "Fast noise variance estimation", 1996).
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_MEAN_ABS = float(np.sqrt(2.0 / np.pi))  # mean |x| of a unit normal
_BLOCK = 8  # the blocks (of half-size luma) that noise is measured over
# What the estimates read on white noise (measured at 720p, std 1.4-5.4 of half-size luma): the
# flat one as a share of the std (a low percentile of block means sits below their mean), the
# three-frame one as a share of the variance (a high one above).
_FLAT_READS, _LAG_READS = 0.665, 1.18
_SQUARE = np.ones((3, 3), np.uint8)
_CLIPPED = 12.0  # blocks darker or brighter than this from the ends are left out of the estimate
_DRAWN = 0.05  # a block whose mean kernel response is under this is drawn, not filmed


def half_luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H // 2, W // 2)`` float32 luma, each pixel a 2x2 mean."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    small = cv2.resize(
        gray[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
    )
    return small.astype(np.float32)


def _blocks(values: np.ndarray) -> np.ndarray:
    """The means of ``values`` ``(H, W)`` over :data:`_BLOCK` x :data:`_BLOCK` blocks."""
    h, w = values.shape
    gh, gw = max(1, h // _BLOCK), max(1, w // _BLOCK)
    return cv2.resize(values[: gh * _BLOCK, : gw * _BLOCK], (gw, gh), interpolation=cv2.INTER_AREA)


def estimate_noise(luma: np.ndarray, *earlier: np.ndarray) -> float:
    """Noise std of ``luma`` ``(H, W)`` float32, in its levels: the second of
    :func:`noise_levels`."""
    return noise_levels(luma, *earlier)[1]


def noise_levels(luma: np.ndarray, *earlier: np.ndarray) -> tuple[float, float]:
    """Noise std of ``luma`` ``(H, W)`` float32, in its levels: ``(flat, sigma)``, the picture's
    own estimate and the one checked over time (the noise level).

    First from the picture alone: the flattest 1 % of its 8x8 blocks (leaving out blocks clipped
    to black or white and drawn ones, where no camera noise shows), through a kernel blind to
    smooth shading whose response to white noise of std s has std 6 s (Immerkaer 1996). Noise
    shows there, texture hardly (a picture with no flat part at all reads high). Under
    :data:`FLAT_FLOOR` the picture is clean and that is the answer: it then passes bit for bit
    however it moves.

    Above it, with the two frames before (``earlier``: the previous one first; same shape), from
    how the frame-to-frame differences go together in time. Noise is new in every frame, so over
    a still part of the scene the difference into a frame and the one out of it share its noise
    with opposite signs, and the covariance of ``d_t`` and ``-d_(t-1)`` within a block is the
    noise's variance, at the scale the filter works at however coarse the grain (a webcam's
    demosaicing and compression make it coarse). A steady motion makes the two differences agree,
    which lowers the estimate instead of passing for noise, and a brightness change the whole
    block shares (auto-exposure, a light flickering) is their means', not noise. Taken at the 75th
    percentile of blocks (a quarter of the picture still or flat is enough), and at most 3x the
    picture's own estimate: a fine texture moving faster than a quarter of its period a frame
    makes consecutive differences disagree as noise does.
    """
    flat = _flat_estimate(luma)
    if len(earlier) < 2 or any(e.shape != luma.shape for e in earlier[:2]) or flat < FLAT_FLOOR:
        return flat, flat
    previous, before = earlier[:2]
    # The covariance within each block, not the mean product: a brightness change shared by the
    # two differences (auto-exposure, a flicker) is their means', not noise.
    d_now, d_before = previous - luma, previous - before
    shared = _blocks(d_now) * _blocks(d_before)
    together = float(np.percentile(_blocks(d_now * d_before) - shared, 75))
    return flat, min(float(np.sqrt(max(together, 0.0) / _LAG_READS)), 3.0 * flat)


def _flat_estimate(luma: np.ndarray) -> float:
    """:func:`noise_levels`' estimate from the picture alone."""
    if luma.ndim != 2 or min(luma.shape) < 3:
        raise ValueError(f"expected (H, W) luma of at least 3x3, got {tuple(luma.shape)}")
    response = _blocks(np.abs(cv2.filter2D(luma, -1, _NOISE_KERNEL)))
    # Not where the picture is clipped to black or white, nor where it is drawn (a letterbox at
    # video black 16, a caption): no camera noise shows there, and one such block read clean.
    level = _blocks(luma)
    unclipped = response[(level > _CLIPPED) & (level < 255.0 - _CLIPPED) & (response > _DRAWN)]
    if unclipped.size == 0:
        return 0.0
    return float(np.percentile(unclipped, 1)) / (6.0 * _MEAN_ABS * _FLAT_READS)


def grain_fineness(rgb: np.ndarray, flat: float) -> float:
    """How many times the noise level (of half-size luma) the grain's std is on the frame's own
    pixels, in [1, 2]: the picture's own estimate (:func:`noise_levels`) on the frame's luma over
    ``flat``, that estimate on its half-size luma. White noise reads twice as strong at full
    size (a 2x2 mean halves it); grain two pixels across or coarser, a webcam's demosaiced and
    compressed noise, reads weaker there (the estimate's kernel is blind to most of it), and its
    half-size level is at most its spread at full size (as much where it lines up with the 2x2
    grid, less where it does not: the filter then does less than it could); a texture reads
    weaker too. So the grain filter is sized for the frame's own grain, never above it on a
    picture with a flat part, and for coarse grain or texture no larger than the half-size
    level. ``rgb`` ``(H, W, 3)`` uint8."""
    check_rgb8(rgb, "grain_fineness frame")
    if not flat > 0.0:
        return 1.0
    fine = _flat_estimate(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32))
    return min(2.0, max(1.0, fine / flat))


def estimate_colour_noise(rgb: np.ndarray) -> float:
    """Colour noise of one ``(H, W, 3)`` uint8 RGB frame, in levels of its half-size Cr and Cb.

    The flat estimate of :func:`estimate_noise` (the flattest 1 % of 8x8 blocks, clipped and
    drawn ones left out) on each of the two, the larger. It is one frame's reading, which only
    sizes the colour blur: coloured text on white (the white clipped, left out) leaves only the
    text's edges, which read as noise, and a clean photo sent with half-size colour reads so too,
    so the blur acts only beside grain that the luma's estimate has checked over time
    (:func:`colour_blur`). A camera sending MJPG has had its fine colour noise removed by the
    compression, and reads clean.
    """
    check_rgb8(rgb, "estimate_colour_noise frame")
    h, w = rgb.shape[:2]
    if min(h, w) < 6:
        raise ValueError(f"expected a frame of at least 6x6, got {w}x{h}")
    # Halved in RGB and converted in float: Cr and Cb rounded to whole levels make a smooth
    # colour gradient a staircase, which read as 0.5 levels of noise.
    half = cv2.resize(
        rgb[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
    )
    small = cv2.cvtColor(half.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    level = _blocks(np.ascontiguousarray(small[..., 0]))
    unclipped = (level > _CLIPPED) & (level < 255.0 - _CLIPPED)
    worst = 0.0
    for channel in (1, 2):
        plane = np.ascontiguousarray(small[..., channel])
        response = _blocks(np.abs(cv2.filter2D(plane, -1, _NOISE_KERNEL)))
        values = response[unclipped & (response > _DRAWN)]
        if values.size:
            worst = max(worst, float(np.percentile(values, 1)))
    return worst / (6.0 * _MEAN_ABS * _FLAT_READS)


def reduce_colour_noise(rgb: np.ndarray, blur: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB with its Cr and Cb blurred by a Gaussian of std ``blur`` pixels
    and its luma kept (to rounding, and to a few levels at saturated colour edges, where the way
    back to RGB clips): colour noise goes, detail (in the luma) stays, as a video codec's
    half-size colour keeps a picture sharp."""
    if not blur > 0.0:
        raise ValueError(f"blur must be > 0, got {blur!r}")
    return _reduce_in_frame(rgb, blur, None, 1.0)


def reduce_grain(rgb: np.ndarray, flatness: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB with the grain in its luma flattened and its Cr and Cb kept.

    A local adaptive Wiener filter (Lee, "Digital image enhancement and noise filtering by use
    of local statistics", 1980): each pixel keeps a share ``max(var - flatness, 0) / var`` of
    its difference from the mean of its window (:data:`GRAIN_RADIUS`), ``var`` the luma's
    variance over the window and ``flatness`` the grain's: where the luma varies by no more than
    the grain (a flat wall, skin) it is averaged; where it varies by more (an edge, a texture)
    the part above the grain is kept, so it does not blur the way a Gaussian would (as far as
    ``flatness`` is the grain there: the engine's is one level for the whole frame). A point of
    a pixel or two adds little to its window's variance and is dimmed (a 1-pixel dot 25 levels
    over grain of std 6 keeps about three quarters on a still picture).
    Cr and Cb are kept (to rounding, and to a few levels at saturated colours, where the way
    back to RGB clips).
    ``flatness`` ``(H // 2, W // 2)`` float32 > 0, the grain's variance in squared levels
    (:func:`grain_flatness`), is upsampled to the frame; ``amount`` in (0, 1] mixes the result
    with the luma as it was.
    """
    _check_flatness(rgb, flatness)
    if not 0.0 < amount <= 1.0:
        raise ValueError(f"amount must be in (0, 1], got {amount!r}")
    return _reduce_in_frame(rgb, 0.0, flatness, amount)


def _check_flatness(rgb: np.ndarray, flatness: np.ndarray) -> None:
    check_rgb8(rgb, "reduce_grain frame")
    h, w = rgb.shape[:2]
    if min(h, w) < 2:
        raise ValueError(f"expected a frame of at least 2x2, got {w}x{h}")
    if not isinstance(flatness, np.ndarray) or flatness.dtype != np.float32:
        raise ValueError(
            f"flatness must be a float32 array, got {type(flatness).__name__} "
            f"{getattr(flatness, 'dtype', '')}".rstrip()
        )
    if flatness.shape != (h // 2, w // 2):
        raise ValueError(
            f"flatness must be ({h // 2}, {w // 2}) for a {w}x{h} frame, got "
            f"{tuple(flatness.shape)}"
        )
    if not np.all(flatness > 0.0):  # NaN fails too
        raise ValueError("flatness must be > 0 everywhere")


def _flattened_luma(luma: np.ndarray, flatness: np.ndarray, amount: float) -> np.ndarray:
    """:func:`reduce_grain` on ``(H, W)`` uint8 luma, returning it as uint8."""
    # OpenCV's arithmetic rather than numpy's: it runs on every core, and this is per frame.
    y = luma.astype(np.float32)
    size = (2 * GRAIN_RADIUS + 1, 2 * GRAIN_RADIUS + 1)
    mean = cv2.boxFilter(y, -1, size)
    var = cv2.boxFilter(cv2.multiply(y, y), -1, size)
    var = cv2.max(cv2.subtract(var, cv2.multiply(mean, mean)), 0.0)  # 0: float rounding
    keep = cv2.resize(flatness, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR)
    # var / (var + 1e-6): 0 / 0 is NaN in float, and a flat window's keep is 0
    keep = cv2.divide(cv2.max(cv2.subtract(var, keep), 0.0), cv2.add(var, 1e-6))
    if amount < 1.0:
        # luma + amount * (out - luma) keeps a share 1 - amount of the rest too
        keep = cv2.addWeighted(keep, amount, keep, 0.0, 1.0 - amount)
    # mean + keep * (luma - mean), rounded to nearest and saturated
    return cv2.add(mean, cv2.multiply(keep, cv2.subtract(y, mean)), dtype=cv2.CV_8U)


def _reduce_in_frame(
    rgb: np.ndarray, blur: float, flatness: np.ndarray | None, amount: float
) -> np.ndarray:
    """The colour blur and the grain filter in one trip through YCrCb."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    if blur > 0.0:
        smooth = cv2.GaussianBlur(ycc, (0, 0), blur)
        cv2.mixChannels([smooth], [ycc], [1, 1, 2, 2])
    if flatness is not None:
        luma = _flattened_luma(np.ascontiguousarray(ycc[..., 0]), flatness, amount)
        cv2.mixChannels([luma], [ycc], [0, 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def grain_strength(sigma: float | None) -> float:
    """How much of :func:`reduce_grain`'s result is taken, 0 for none, for a (luma) noise
    level: from :data:`FLAT_FLOOR`, where the level has been checked over time
    (:func:`estimate_noise`), growing over :data:`RAMP` to 1, as the colour blur does."""
    if sigma is None:
        return 0.0
    return min(1.0, max(0.0, (sigma - FLAT_FLOOR) / RAMP))


def grain_flatness(grain: float, weights: np.ndarray) -> np.ndarray:
    """:func:`reduce_grain`'s ``flatness`` ``(H/2, W/2)`` float32 after a step of the filter
    over time with ``weights`` (:func:`motion_weights`) on grain of std ``grain`` on the frame's
    own pixels (the noise level times :func:`grain_fineness`): the square of
    :data:`GRAIN_SPREAD` times the grain left. Where the scene moved (weight 0) that is the
    frame's own; where it held still the average over time has taken most of it, and the grain
    filter takes only what is left, a share ``(1 - w) / (1 + w)`` of the variance once the
    average has settled (a ninth at the full weight of 0.8), so that a still, sharp picture is
    not flattened further than its noise asks."""
    flatness = (1.0 - weights) / (1.0 + weights)
    flatness *= (GRAIN_SPREAD * grain) ** 2
    return flatness


def colour_blur(colour_sigma: float | None, sigma: float | None) -> float:
    """The std of :func:`reduce_colour_noise`'s blur for a colour noise level and the (luma)
    noise level, 0 for none: it grows from :data:`COLOUR_MIN_SIGMA` over :data:`COLOUR_RAMP`
    levels of colour noise, and from :data:`FLAT_FLOOR` over :data:`RAMP` levels of luma noise,
    to :data:`COLOUR_BLUR`. From :data:`FLAT_FLOOR` the luma's reading has been checked over
    time (:func:`estimate_noise`), which no colour reading is: under it, a drawing or a clean
    photo that shakes or flickers would have its colour blurred."""
    if colour_sigma is None or sigma is None:
        return 0.0
    by_colour = (colour_sigma - COLOUR_MIN_SIGMA) / COLOUR_RAMP
    by_luma = (sigma - FLAT_FLOOR) / RAMP
    return (
        COLOUR_BLUR * min(1.0, by_colour) * min(1.0, by_luma)
        if min(by_colour, by_luma) > 0
        else 0.0
    )


def reduces(noise: float | None) -> bool:
    """Whether noise reduction acts on a stream with this noise level (:attr:`TemporalDenoiser.sigma`;
    its colour blur needs more, :func:`colour_blur`)."""
    return noise is not None and noise >= MIN_SIGMA


def worth_telling(noise: float | None, *, told: bool = False) -> bool:
    """Whether a stream with this noise level, noise reduction off, is grainy enough to tell its
    user of it: from :data:`SUGGEST_SIGMA`, where it works at full strength. ``told``: already
    said, and said on until the level falls under that where it acts at all, so that a reading
    wavering around the first does not flicker."""
    if noise is None:
        return False
    return noise >= (MIN_SIGMA if told else SUGGEST_SIGMA)


def motion_weights(
    luma: np.ndarray, previous_out: np.ndarray, sigma: float, *, strength: float, threshold: float
) -> np.ndarray:
    """Per-pixel weight ``(H, W)`` float32 in ``[0, strength]`` of the previous output: high where
    the two differ by noise only, 0 where the local mean difference reaches ``threshold * sigma``
    or a pixel's own difference twice that (a fine texture moving: its differences change sign
    from pixel to pixel, and their mean hides them)."""
    change = luma - previous_out
    diff = cv2.blur(change, (3, 3))
    np.abs(diff, out=diff)
    np.maximum(diff, np.abs(change) * 0.5, out=diff)
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
    luma, previous_luma = half_luma(frame), half_luma(previous_out)
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
    passes untouched: the first two frames, as the noise is measured over three, the first two
    after a size change, and frames with noise under :data:`MIN_SIGMA`). The noise levels are
    re-measured every ``measure_every`` frames and smoothed over time, so one odd frame (a cut,
    a flash) moves them little; a frame that changes almost everywhere starts the average
    afresh. Colour noise beside grain is then blurred away in every frame, moving or not
    (:func:`colour_blur`, :func:`reduce_colour_noise`), and the grain the average left is
    flattened (:func:`grain_strength`, :func:`grain_flatness`, :func:`reduce_grain`), but for a
    frame taken for a cut and those after it until the next measurement; the average over time
    is kept without either, so they do not compound from frame to frame. Not thread-safe: one
    stream, one caller.

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
        self._in_luma: np.ndarray | None = None  # the previous frame's
        self._in_luma2: np.ndarray | None = None  # the one before it
        self._sigma: float | None = None
        self._flat: float | None = None  # the pictures' own estimate, smoothed as _sigma
        self._fineness: float | None = None  # grain_fineness, smoothed the same way
        self._colour: float | None = None
        # The last measurement read grain over FLAT_FLOOR, checked over time, and no cut came
        # since: only then is the colour blurred. The smoothed levels lag a change of scene.
        self._grain_checked = False
        self._count = 0
        self._weights: np.ndarray | None = None  # this frame's step over time, None if it passed
        self.moving = 0.0  # share of pixels the last filtered frame took as moving

    @property
    def sigma(self) -> float | None:
        """The noise level now (levels of half-size luma), ``None`` before three frames (its
        measure needs three; frames pass untouched until then)."""
        return self._sigma

    @property
    def colour_sigma(self) -> float | None:
        """The colour noise level now (levels of half-size Cr and Cb), ``None`` before three
        frames, as :attr:`sigma`."""
        return self._colour

    @property
    def active(self) -> bool:
        """Whether frames are being filtered (the noise is over :data:`MIN_SIGMA`; the colour
        blur needs more, :func:`colour_blur`)."""
        return reduces(self._sigma)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        check_rgb8(frame, "TemporalDenoiser frame")
        out = self._over_time(frame)
        if not self._grain_checked or self._weights is None:
            return out
        blur = colour_blur(self._colour, self._sigma)
        grain = grain_strength(self.grain_sigma)
        if not blur and not grain:
            return out
        flatness = None
        if grain:
            assert self.grain_std is not None
            flatness = grain_flatness(self.grain_std, self._weights)
        return _reduce_in_frame(out, blur, flatness, grain)

    @property
    def grain_sigma(self) -> float | None:
        """The noise level the grain filter goes by: the lower of :attr:`sigma` and the
        pictures' own estimate (:func:`noise_levels`). A fine texture moving fast reads as noise
        over time, up to three times what is there (:func:`estimate_noise`), and the filter
        would flatten it; the picture's flat parts show fine grain as it is, and coarse grain
        weaker (then the filter does less than it could, not more)."""
        if self._sigma is None or self._flat is None:
            return None
        return min(self._sigma, self._flat)

    @property
    def grain_std(self) -> float | None:
        """The grain's std on the frame's own pixels, which sizes the grain filter:
        :attr:`grain_sigma` times :func:`grain_fineness`."""
        if self.grain_sigma is None or self._fineness is None:
            return None
        return self.grain_sigma * self._fineness

    def _over_time(self, frame: np.ndarray) -> np.ndarray:
        self._weights = None
        h, w = frame.shape[:2]
        if min(h, w) < MIN_SIDE:
            self.reset()
            return frame
        luma = half_luma(frame)
        if self._out is None or self._out.shape != frame.shape:
            self.reset()
            self._keep(frame, luma, luma)
            return frame
        earlier = (self._in_luma, self._in_luma2)
        measurable = self._in_luma2 is not None
        if measurable and self._count % self.measure_every == 0:
            flat, sigma = noise_levels(luma, *earlier)  # type: ignore[arg-type]
            self._sigma = sigma if self._sigma is None else 0.7 * self._sigma + 0.3 * sigma
            self._flat = flat if self._flat is None else 0.7 * self._flat + 0.3 * flat
            fine = grain_fineness(frame, flat)
            self._fineness = fine if self._fineness is None else 0.7 * self._fineness + 0.3 * fine
            self._grain_checked = sigma >= FLAT_FLOOR
            colour = estimate_colour_noise(frame)
            self._colour = colour if self._colour is None else 0.7 * self._colour + 0.3 * colour
        if measurable:
            self._count += 1
        assert self._out_luma is not None
        if self._sigma is None or self._sigma < MIN_SIGMA:
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
            # A new scene (or a picture the luma takes for noise under a strong flicker): its
            # colour is left as it is until a measurement of it finds grain.
            self._grain_checked = False
            self._keep(frame, luma, luma)
            return frame
        out, out_luma = _blend(frame, self._out, luma, self._out_luma, weights)
        self._keep(out, luma, out_luma)
        self._weights = weights
        return out

    def _keep(self, out: np.ndarray, luma: np.ndarray, out_luma: np.ndarray) -> None:
        # A copy: the caller may reuse or change the array it was given or got back.
        self._out = out.copy()
        self._in_luma2 = self._in_luma
        self._in_luma = luma
        self._out_luma = out_luma


class NoiseMeter:
    """The noise level of a stream that is not being filtered, measured now and then.

    So that a grainy camera can be told about noise reduction while it is off. Every ``every``
    frames it takes the half-size luma of three consecutive frames and measures them as
    :class:`TemporalDenoiser` does (:func:`estimate_noise`, and the last one's colour noise,
    :func:`estimate_colour_noise`), smoothed the same way; the first measurement is on the
    third frame. In between it does nothing (the other frames of each
    ``every`` are not looked at). Not thread-safe: one stream, one caller.

    Args:
        every: frames from one measurement to the next (at least 3).
    """

    def __init__(self, *, every: int = 15) -> None:
        if int(every) < 3:
            raise ValueError(
                f"every must be >= 3 (a measurement takes three frames), got {every!r}"
            )
        self.every = int(every)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: measure afresh from the next three frames."""
        self._lumas: list[np.ndarray] = []
        self._phase = self.every - 3  # the first three frames measure at once
        self._sigma: float | None = None
        self._colour: float | None = None
        self._shape: tuple[int, ...] | None = None  # of the lumas measured

    @property
    def sigma(self) -> float | None:
        """The noise level (levels of half-size luma), ``None`` before the first measurement."""
        return self._sigma

    @property
    def colour_sigma(self) -> float | None:
        """The colour noise level (levels of half-size Cr and Cb), ``None`` before the first
        measurement."""
        return self._colour

    def __call__(self, frame: np.ndarray) -> None:
        check_rgb8(frame, "NoiseMeter frame")
        phase, self._phase = self._phase, (self._phase + 1) % self.every
        if phase < self.every - 3:
            return
        h, w = frame.shape[:2]
        if min(h, w) < MIN_SIDE:
            self._lumas.clear()
            return
        luma = half_luma(frame)
        if luma.shape != self._shape:
            # Another camera or size, here or in the frames not looked at: its noise is its own.
            self._sigma = self._colour = None
            self._shape = luma.shape
            if self._lumas:  # mid-measurement: this frame is the first of a new three
                self._lumas = []
                phase, self._phase = self.every - 3, self.every - 2
        self._lumas.append(luma)
        if phase == self.every - 1:
            lumas, self._lumas = self._lumas, []
            if len(lumas) == 3:
                sigma = estimate_noise(lumas[2], lumas[1], lumas[0])
                self._sigma = sigma if self._sigma is None else 0.7 * self._sigma + 0.3 * sigma
                colour = estimate_colour_noise(frame)
                self._colour = colour if self._colour is None else 0.7 * self._colour + 0.3 * colour
