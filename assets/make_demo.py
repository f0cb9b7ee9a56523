"""Render the bundled demo clip: a webcam-style shot of a person with synthetic hand-shake blur.

The app offers this clip when no camera exists, so SharpCam does something useful at once.
It is rendered from scikit-image's bundled ``astronaut`` sample (a portrait, so it looks like a
video call) and never from ``../shared``.

How the blur is made: the "camera" follows a smooth hand-shake trajectory (translation plus a
little roll and zoom). Each output frame integrates the scene over the exposure time: ``taps``
warped copies sampled along the trajectory are averaged in linear light, which is how real
motion blur forms on a sensor. Calm stretches stay nearly sharp, shaky stretches smear, so the
before/after split in the app shows a difference that comes and goes like a real hand-held call.
All frequencies are whole cycles over the clip, so it loops without a jump.

Run::

    python assets/make_demo.py                       # assets/demo.mp4 + still pairs
    python assets/make_demo.py --size 1280x720 --out /tmp/demo_720p.mp4 --no-stills
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parent


@dataclass
class DemoConfig:
    width: int = 640  # output frame width in pixels
    height: int = 360  # output frame height in pixels
    fps: int = 30  # frames per second of the clip
    seconds: float = 6.0  # clip length; shake frequencies are whole cycles over this span
    exposure: float = 0.8  # shutter open fraction of the frame interval (webcams run near 1)
    taps: int = 15  # sub-frame samples integrated per frame; more taps = smoother streaks
    shake_px: float = 18.0  # peak hand-shake translation, in output pixels at 640 wide
    seed: int = 7  # trajectory seed; the clip is deterministic for a given seed


def _scene() -> np.ndarray:
    """The static scene, ``(H, W, 3)`` float32 linear-light RGB in [0, 1]."""
    from skimage import data  # only the generator needs scikit-image (train extra)

    srgb = data.astronaut().astype(np.float32) / 255.0
    return _srgb_to_linear(srgb)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


class ShakeTrajectory:
    """A smooth, periodic hand-shake path: ``pose(t) -> (dx, dy, roll_rad, zoom)``.

    Hand tremor is a band of a few Hz; sums of sinusoids with random phases in that band, under
    a slow envelope that alternates calm and shaky stretches, look like a hand-held phone/laptop.
    """

    def __init__(self, cfg: DemoConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        self.period = cfg.seconds
        scale = cfg.shake_px * cfg.width / 640.0
        # Whole cycles over the clip (k / period Hz) keep the loop seamless; k spans ~1.5-8 Hz.
        ks = np.arange(max(1, round(1.5 * cfg.seconds)), round(8 * cfg.seconds) + 1)
        self.kx = rng.choice(ks, 5, replace=False)
        self.ky = rng.choice(ks, 5, replace=False)
        self.kr = rng.choice(ks, 3, replace=False)
        self.px, self.py, self.pr = (rng.uniform(0, 2 * np.pi, n) for n in (5, 5, 3))
        # Amplitudes fall with frequency like real tremor (roughly 1/f).
        self.ax = scale * rng.uniform(0.5, 1.0, 5) * (ks[0] / self.kx)
        self.ay = scale * rng.uniform(0.5, 1.0, 5) * (ks[0] / self.ky)
        self.ar = math.radians(0.6) * rng.uniform(0.5, 1.0, 3)

    def envelope(self, t: float) -> float:
        """Shake intensity in [0.08, 1]: calm at the start, shaky, calm, shaky again."""
        phase = 2 * np.pi * t / self.period
        return float(0.08 + 0.92 * (0.5 - 0.5 * math.cos(2 * phase)) ** 1.5)

    def pose(self, t: float) -> tuple[float, float, float, float]:
        w = 2 * np.pi / self.period
        env = self.envelope(t)
        dx = env * float(np.sum(self.ax * np.sin(w * self.kx * t + self.px)))
        dy = env * float(np.sum(self.ay * np.sin(w * self.ky * t + self.py)))
        roll = env * float(np.sum(self.ar * np.sin(w * self.kr * t + self.pr)))
        # A slow breathing zoom, as a person leans towards the screen and back.
        zoom = 1.0 + 0.04 * math.sin(w * t)
        return dx, dy, roll, zoom


def _view_matrix(cfg: DemoConfig, scene_hw: tuple[int, int], pose) -> np.ndarray:
    """2x3 affine mapping scene pixels to output pixels for one camera pose."""
    sh, sw = scene_hw
    dx, dy, roll, zoom = pose
    # Frame the head and shoulders: a 16:9 window ~84 % of the portrait's width, a bit above centre.
    view_w = 0.84 * sw
    s = zoom * cfg.width / view_w
    cx_scene, cy_scene = 0.5 * sw, 0.36 * sh
    c, si = math.cos(roll) * s, math.sin(roll) * s
    ox = cfg.width / 2 + dx
    oy = cfg.height / 2 + dy
    return np.array(
        [[c, -si, ox - c * cx_scene + si * cy_scene], [si, c, oy - si * cx_scene - c * cy_scene]],
        dtype=np.float64,
    )


def render_frame(
    cfg: DemoConfig,
    scene: np.ndarray,
    traj: ShakeTrajectory,
    t: float,
    *,
    exposure: float | None = None,
) -> np.ndarray:
    """One frame at time ``t`` (seconds): ``(H, W, 3)`` uint8 RGB.

    ``exposure`` overrides ``cfg.exposure``; 0 renders the sharp frame at the same pose.
    """
    exposure = cfg.exposure if exposure is None else exposure
    taps = 1 if exposure <= 0 else cfg.taps
    acc = np.zeros((cfg.height, cfg.width, 3), np.float32)
    dt = exposure / cfg.fps
    for i in range(taps):
        # Centred exposure window so the sharp frame (exposure 0) sits in the middle of the streak.
        ti = t + (0.0 if taps == 1 else dt * (i / (taps - 1) - 0.5))
        m = _view_matrix(cfg, scene.shape[:2], traj.pose(ti))
        acc += cv2.warpAffine(
            scene,
            m,
            (cfg.width, cfg.height),
            flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT101,
        )
    acc /= taps
    # A gentle vignette: real webcam lenses darken their corners.
    yy, xx = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float32)
    r2 = ((xx - cfg.width / 2) / cfg.width) ** 2 + ((yy - cfg.height / 2) / cfg.height) ** 2
    acc *= (1.0 - 0.35 * r2)[..., None]
    return (_linear_to_srgb(acc) * 255.0 + 0.5).astype(np.uint8)


def write_clip(cfg: DemoConfig, out: Path) -> int:
    """Write the clip as mp4v (OpenCV here cannot write H.264); returns the frame count."""
    scene = _scene()
    traj = ShakeTrajectory(cfg)
    n = round(cfg.seconds * cfg.fps)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(out), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (cfg.width, cfg.height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v to {out}")
    try:
        for i in range(n):
            rgb = render_frame(cfg, scene, traj, i / cfg.fps)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return n


def write_stills(cfg: DemoConfig, out_dir: Path) -> list[Path]:
    """Sharp/blurry pairs at the shakiest moments: ``demo_sharp[_k].png`` / ``demo_blurry[_k].png``.

    The sharp image is the same pose with a zero exposure, i.e. the ground truth for that blur.
    """
    scene = _scene()
    traj = ShakeTrajectory(cfg)
    n = round(cfg.seconds * cfg.fps)
    # Pick frames where the camera moves fastest (longest blur streaks), well apart in time.
    speed = []
    for i in range(n):
        t = i / cfg.fps
        a, b = traj.pose(t - 0.5 / cfg.fps), traj.pose(t + 0.5 / cfg.fps)
        speed.append(math.hypot(a[0] - b[0], a[1] - b[1]))
    picks: list[int] = []
    for i in np.argsort(speed)[::-1]:
        if all(abs(int(i) - p) > n // 4 for p in picks):
            picks.append(int(i))
        if len(picks) == 2:
            break
    paths = []
    for k, i in enumerate(sorted(picks)):
        suffix = "" if k == 0 else f"_{k + 1}"
        t = i / cfg.fps
        for name, exp in (("sharp", 0.0), ("blurry", cfg.exposure)):
            p = out_dir / f"demo_{name}{suffix}.png"
            rgb = render_frame(cfg, scene, traj, t, exposure=exp)
            cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS / "demo.mp4")
    parser.add_argument("--size", default="640x360", help="WxH, e.g. 1280x720")
    parser.add_argument("--seconds", type=float, default=DemoConfig.seconds)
    parser.add_argument("--fps", type=int, default=DemoConfig.fps)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument("--no-stills", action="store_true", help="skip the sharp/blurry PNG pairs")
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected WxH such as 1280x720, got {args.size!r}")
    # Even sizes: mp4v stores 4:2:0 chroma, and OpenCV wrote a 641x361 request as 640x360
    # without a word.
    if not (16 <= w <= 7680 and 16 <= h <= 4320 and w % 2 == 0 and h % 2 == 0):
        parser.error(f"--size: width and height must be even, 16 to 7680x4320, got {w}x{h}")
    if not 1 <= args.fps <= 240:
        parser.error(f"--fps: 1 to 240, got {args.fps}")
    # The shake needs whole cycles of at least 1.5 Hz in the clip, and the stills pick two
    # moments a quarter of the clip apart.
    if not 1.0 <= args.seconds <= 600.0:
        parser.error(f"--seconds: 1 to 600, got {args.seconds:g}")
    cfg = DemoConfig(width=w, height=h, fps=args.fps, seconds=args.seconds, seed=args.seed)
    n = write_clip(cfg, args.out)
    print(
        f"wrote {args.out} ({n} frames, {w}x{h} @ {cfg.fps} fps, "
        f"{args.out.stat().st_size / 1e6:.2f} MB)"
    )
    if not args.no_stills:
        for p in write_stills(cfg, args.out.parent):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
