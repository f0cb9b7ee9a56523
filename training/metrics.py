"""Image-quality metrics for evaluation: PSNR, SSIM, MS-SSIM, VGG perceptual distance.

All metric functions take ``(B, 3, H, W)`` float tensors in [0, 1] (prediction first) and return
one value per image, shape ``(B,)``, so an evaluator can write a per-image CSV. Predictions are
clamped to [0, 1] first: that is what a user sees.

Also here: ``unsharp_mask``, the classical baseline every evaluation reports beside the model.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

__all__ = [
    "PSNR_CAP",
    "UNSHARP_AMOUNT",
    "UNSHARP_SIGMA",
    "PerceptualDistance",
    "ms_ssim",
    "psnr",
    "ssim",
    "unsharp_mask",
]

PSNR_CAP = 100.0  # dB reported for identical images (MSE 0), so means stay finite
_RANGE_SLACK = 1e-3  # a target this far outside [0, 1] is rounding, not another data range

# The engine's `unsharp` backend defaults (engine/backends.py `UnsharpBackend`: amount 1.0,
# radius 2.0). Duplicated rather than imported: training never imports engine
# (docs/ARCHITECTURE.md). Keep the two in step.
UNSHARP_AMOUNT = 1.0
UNSHARP_SIGMA = 2.0


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of equal shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    # Every metric here assumes data range 1. A uint8 tensor (or a float one in [0, 255]) gave
    # a number that looked like a result: the prediction clamped to [0, 1] against a target
    # up to 255. The prediction is clamped by design (what a user sees); the target must be
    # in range already.
    if not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(f"expected float tensors in [0, 1], got {pred.dtype} and {target.dtype}")
    if target.numel() == 0:
        raise ValueError(f"expected images with pixels, got shape {tuple(target.shape)}")
    lo, hi = float(target.min()), float(target.max())
    if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
        raise ValueError(f"expected a target in [0, 1], got values in [{lo:g}, {hi:g}]")


def psnr(pred: torch.Tensor, target: torch.Tensor, cap: float = PSNR_CAP) -> torch.Tensor:
    """PSNR in dB per image ``(B,)`` for data range 1; identical images give ``cap``."""
    _check(pred, target)
    mse = (pred.clamp(0, 1).double() - target.double()).pow(2).flatten(1).mean(1)
    out = 10.0 * torch.log10(1.0 / mse.clamp_min(10.0 ** (-cap / 10.0)))
    return out.clamp_max(cap).float()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image ``(B,)`` (11x11 Gaussian window, sigma 1.5, as in Wang et al. 2004)."""
    from pytorch_msssim import ssim as _ssim

    _check(pred, target)
    return _ssim(pred.clamp(0, 1).float(), target.float(), data_range=1.0, size_average=False)


def ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image ``(B,)``; NaN when the shorter side is < 161 px (five scales of an
    11-px window do not fit; pytorch-msssim refuses such images)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check(pred, target)
    if min(pred.shape[-2:]) <= 160:
        return torch.full((pred.shape[0],), math.nan)
    return _ms_ssim(pred.clamp(0, 1).float(), target.float(), data_range=1.0, size_average=False)


class PerceptualDistance(nn.Module):
    """Mean L1 distance between VGG features of two images, per image ``(B,)``; lower is better.

    The VGG is the project's (``training.losses.VGGFeatures``, written for the perceptual loss),
    so the metric and the loss see the same features. ``available`` is False (and ``reason``
    says why) when that module or its weights are missing; ``forward`` then returns NaN so an
    evaluation still runs and reports the other metrics.
    """

    def __init__(self, weights: str | Path | None, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.vgg: nn.Module | None = None
        self.reason = ""
        if weights is None:
            self.reason = "no VGG weights file given"
            return
        if not Path(weights).is_file():
            # VGGFeatures' own message is the trainer's: it says to set loss.vgg_weights or
            # loss.vgg=0, settings an evaluation does not have.
            self.reason = f"VGG weights file {weights} does not exist"
            return
        try:
            from training.losses import VGGFeatures

            self.vgg = VGGFeatures(weights)
            self.vgg.to(device).eval()
            for p in self.vgg.parameters():
                p.requires_grad_(False)
        except Exception as exc:  # noqa: BLE001 - any failure means "metric unavailable"
            self.vgg = None
            self.reason = f"{type(exc).__name__}: {exc}"

    @property
    def available(self) -> bool:
        return self.vgg is not None

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG activations of ``(B, 3, H, W)``; compute a target's once, compare many predictions."""
        if self.vgg is None:
            return []
        f = self.vgg(x.clamp(0, 1))
        if isinstance(f, torch.Tensor):
            return [f]
        return list(f.values()) if isinstance(f, dict) else list(f)

    @torch.no_grad()
    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        target_features: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        _check(pred, target)
        if self.vgg is None:
            return torch.full((pred.shape[0],), math.nan)
        fp = self.features(pred)
        ft = target_features if target_features is not None else self.features(target)
        dists = [(a - b).abs().flatten(1).mean(1) for a, b in zip(fp, ft, strict=True)]
        return torch.stack(dists, 0).mean(0).float().cpu()


def unsharp_mask(
    img: np.ndarray,
    amount: float = UNSHARP_AMOUNT,
    sigma: float = UNSHARP_SIGMA,
    *,
    blurred: np.ndarray | None = None,
) -> np.ndarray:
    """Classical unsharp mask of an ``(H, W, 3)`` image: ``img + amount * (img - gauss(img))``.

    float32 in [0, 1] in and out (uint8 accepted). Same formula as the engine's `unsharp` backend.
    ``blurred``: ``gauss(img)`` at ``sigma`` (float32) when the caller has it already, as a
    search over amounts does.
    """
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if blurred is None:
        blurred = cv2.GaussianBlur(x, (0, 0), sigma)
    return np.clip(cv2.addWeighted(x, 1.0 + amount, blurred, -amount, 0.0), 0.0, 1.0)
