"""Tune the unsharp-mask baseline on training data, so the students are read against its best.

    python -m training.tune_unsharp --data raw:../shared/data/train/gopro_raw_240fps/GOPR0477_11_00:1-239 \\
        --data camera:../shared/data/train/photos --out runs/tune_unsharp.json
    python -m training.evaluate ... --unsharp AMOUNT,SIGMA     # the setting it prints

The ``unsharp`` row of every evaluation is the engine's default (amount 1, sigma 2), chosen for
the live preview, not for PSNR: a fixed yardstick, but not the strongest classical sharpener.
This grid-searches ``img + amount * (img - gauss(img, sigma))`` (``training.metrics.unsharp_mask``)
on the samples of ``--data`` (the same specs and options as ``training.evaluate``) and ranks each
setting by its PSNR gain over the blurry input, averaged per set and then over sets, so a set
with more images does not decide alone. Tuned on the frames the tables score, the baseline would
be flattered: a ``raw:`` range that reaches into the held-out frames 240-299 is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.evaluate import (
    MAX_SIGMA,
    RAW_DEFAULT_RANGE,
    Sample,
    check_windows,
    iter_samples,
    parse_data,
    plain_number,
)
from training.metrics import PSNR_CAP, UNSHARP_AMOUNT, UNSHARP_SIGMA, unsharp_mask

log = logging.getLogger("training.tune_unsharp")

__all__ = ["AMOUNTS", "SIGMAS", "tune"]

AMOUNTS = (0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)


def _psnr(out: np.ndarray, sharp: np.ndarray) -> float:
    """``training.metrics.psnr`` of two ``(H, W, 3)`` float arrays in [0, 1], without torch
    (a grid search scores every sample a hundred times)."""
    mse = float(np.mean(np.square(out.astype(np.float64) - sharp)))
    return min(PSNR_CAP, 10.0 * math.log10(1.0 / max(mse, 10.0 ** (-PSNR_CAP / 10.0))))


def tune(
    samples: Iterable[Sample],
    amounts: Sequence[float] = AMOUNTS,
    sigmas: Sequence[float] = SIGMAS,
) -> dict[str, Any]:
    """Score every ``(amount, sigma)`` on ``samples`` (each with a sharp frame).

    Returns ``{"sets": {set: n}, "blurry": {set: mean dB}, "settings": [...]}``, the settings
    best first, each ``{"amount", "sigma", "psnr": {set: mean dB}, "gain"}``: ``gain`` is the
    mean over sets of the set's mean PSNR minus the blurry input's. Ties go to the gentler
    setting (smaller amount, then sigma).
    """
    grid = [(float(a), float(s)) for a in dict.fromkeys(amounts) for s in dict.fromkeys(sigmas)]
    if not grid:
        raise ValueError("expected at least one amount and one sigma")
    blurry: dict[str, list[float]] = {}
    scores: dict[tuple[float, float], dict[str, list[float]]] = {k: {} for k in grid}
    for sample in samples:
        if sample.sharp is None:
            raise ValueError(f"{sample.set} {sample.name} has no sharp frame to tune against")
        sharp = sample.sharp.astype(np.float64)
        blurry.setdefault(sample.set, []).append(_psnr(np.clip(sample.blurry, 0, 1), sharp))
        x = sample.blurry.astype(np.float32)
        gauss = {s: cv2.GaussianBlur(x, (0, 0), s) for s in dict.fromkeys(s for _, s in grid)}
        for amount, sigma in grid:
            out = unsharp_mask(x, amount, sigma, blurred=gauss[sigma])
            scores[amount, sigma].setdefault(sample.set, []).append(_psnr(out, sharp))
    if not blurry:
        raise ValueError("no samples to tune on")
    base = {name: float(np.mean(v)) for name, v in blurry.items()}
    settings = []
    for (amount, sigma), per_set in scores.items():
        means = {name: float(np.mean(v)) for name, v in per_set.items()}
        gain = float(np.mean([means[name] - base[name] for name in base]))
        settings.append({"amount": amount, "sigma": sigma, "psnr": means, "gain": gain})
    settings.sort(key=lambda r: (-r["gain"], r["amount"], r["sigma"]))
    return {"sets": {k: len(v) for k, v in blurry.items()}, "blurry": base, "settings": settings}


def table(result: dict[str, Any], top: int = 10) -> str:
    """Markdown: the ``top`` settings and the engine's default, gains per set and overall."""
    names = list(result["sets"])
    rows = result["settings"][:top]
    default = [
        r
        for r in result["settings"]
        if (r["amount"], r["sigma"]) == (UNSHARP_AMOUNT, UNSHARP_SIGMA) and r not in rows
    ]
    head = " | ".join(f"{n} ({result['sets'][n]})" for n in names)
    lines = [f"| amount | sigma | {head} | mean gain |", "|" + "---:|" * (len(names) + 3)]
    for r in rows + default:
        gains = " | ".join(f"{r['psnr'][n] - result['blurry'][n]:+.3f}" for n in names)
        mark = (
            " (engine default)"
            if (r["amount"], r["sigma"]) == (UNSHARP_AMOUNT, UNSHARP_SIGMA)
            else ""
        )
        lines.append(
            f"| {plain_number(r['amount'])} | {plain_number(r['sigma'])}{mark} | {gains} | {r['gain']:+.3f} |"
        )
    return "\n".join(lines)


def _floats(text: str, flag: str, *, most: float = math.inf) -> list[float]:
    """Numbers > 0 (and <= ``most``) separated by commas."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected numbers separated by commas, got {text!r}") from None
    if not values or not all(0 < v <= most for v in values):  # NaN fails both
        span = "> 0" if math.isinf(most) else f"in (0, {most:g}]"
        raise ValueError(f"{flag}: expected numbers {span}, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.tune_unsharp",
        description="Grid-search the unsharp mask's amount and sigma on training data "
        "(training.evaluate's --data specs); prints the best as an --unsharp setting.",
    )
    p.add_argument("--data", action="append", required=True, help="data spec (repeatable)")
    p.add_argument("--amounts", default=",".join(f"{a:g}" for a in AMOUNTS))
    p.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS))
    p.add_argument("--windows", default="7,11", help="raw:/camera: window sizes (default 7,11)")
    p.add_argument("--raw-stride", type=int, default=20, help="raw: frames between centres")
    p.add_argument("--max-size", type=int, default=1280, help="longest side (0 = full size)")
    p.add_argument("--crop", type=int, default=0, help="centre crop of this side, px (0 = off)")
    p.add_argument("--limit", type=int, default=0, help="at most this many samples per set")
    p.add_argument("--out", type=Path, help="also write the whole result as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        amounts = _floats(args.amounts, "--amounts")
        # What evaluate --unsharp takes: the best must be a setting it scores.
        sigmas = _floats(args.sigmas, "--sigmas", most=MAX_SIGMA)
        specs = [parse_data(s) for s in args.data]
    except ValueError as exc:
        p.error(str(exc))
    # Neither int()'s own words ("invalid literal for int()") nor check_windows' named the flag.
    try:
        windows = [int(w) for w in args.windows.split(",") if w.strip()]
    except ValueError:
        p.error(f"--windows: not whole numbers separated by commas: {args.windows!r}")
    try:
        check_windows(windows)
    except ValueError as exc:
        p.error(f"--windows: {exc}")
    for flag, value, least in (
        ("--raw-stride", args.raw_stride, 1),
        ("--max-size", args.max_size, 0),
        ("--crop", args.crop, 0),
        ("--limit", args.limit, 0),
    ):
        if value < least:
            p.error(f"{flag} must be >= {least}, got {value}")
    held_first, held_last = RAW_DEFAULT_RANGE
    for spec, text in zip(specs, args.data, strict=True):
        if spec.kind == "real":
            p.error(f"--data {text}: real blur has no sharp frame to tune against")
        if spec.kind == "sharp":
            # Its input is its reference (capped at 100 dB): its gains of -60 dB and less
            # would decide the ranking alone.
            p.error(f"--data {text}: sharp frames have no blur to tune against")
        if spec.kind == "lai":
            p.error(f"--data {text}: the Lai benchmark is evaluation data; tune on training data")
        if spec.kind == "gopro" and (Path(spec.path) / "test").is_dir():
            # A dataset's root is read for its test split, as evaluate scores it.
            p.error(
                f"--data {text}: a GoPro root is read for its test split; tune on its "
                f"training split (gopro:{Path(spec.path) / 'train'})"
            )
        if spec.kind == "raw" and spec.first <= held_last and spec.last >= held_first:
            p.error(
                f"--data {text}: frames {spec.first}-{spec.last} reach into the held-out frames "
                f"{held_first}-{held_last} the tables score; tune on training frames "
                f"(raw:DIR:1-{held_first - 1})"
            )
        if spec.kind != "demo" and not Path(spec.blur_dir or spec.path).exists():
            p.error(f"--data {text}: no such folder {spec.blur_dir or spec.path}")
    if args.out is not None:
        # Before the search (twenty minutes on the card's data), not after it.
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            p.error(f"--out {args.out}: {exc}")
        if args.out.is_dir() or not os.access(args.out.parent, os.W_OK):
            p.error(f"--out {args.out}: not a file SharpCam can write")

    def samples() -> Iterable[Sample]:
        for spec in specs:
            yield from iter_samples(
                spec,
                windows=windows,
                raw_stride=args.raw_stride,
                max_size=args.max_size,
                crop=args.crop,
                limit=args.limit,
                held_out=False,  # training frames are what it is for
            )

    try:
        result = tune(samples(), amounts, sigmas)
    except (FileNotFoundError, ValueError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 1
    result["data"] = args.data
    result["options"] = {"windows": windows, "raw_stride": args.raw_stride,
                         "max_size": args.max_size, "crop": args.crop, "limit": args.limit}  # fmt: skip
    best = result["settings"][0]
    # Printed first: a write that fails (a full disk) must not lose the result.
    print(table(result))
    print(
        f"best: --unsharp {plain_number(best['amount'])},{plain_number(best['sigma'])} "
        f"({best['gain']:+.3f} dB over the blurry input, mean of {len(result['sets'])} sets)"
    )
    if args.out is not None:
        try:
            args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"{p.prog}: error: cannot write {args.out}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
