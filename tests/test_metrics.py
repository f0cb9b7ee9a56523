"""Metrics refuse images that are not in the data range they assume."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from training.metrics import PerceptualDistance, ms_ssim, psnr, ssim

torch.set_num_threads(2)


@pytest.mark.parametrize("metric", [psnr, ssim, ms_ssim], ids=["psnr", "ssim", "ms_ssim"])
def test_metrics_refuse_images_outside_data_range_one(
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    x = torch.rand(1, 3, 176, 176, generator=torch.Generator().manual_seed(0))
    u8 = (x * 255).round().to(torch.uint8)
    # Before, psnr(u8, u8) read 100 dB and psnr(x * 255, x * 255) -41 dB: numbers that looked
    # like results, from a prediction clamped to [0, 1] against a target up to 255.
    with pytest.raises(ValueError, match="expected float tensors in"):
        metric(u8, u8)
    with pytest.raises(ValueError, match=r"expected a target in \[0, 1\], got values in \[0"):
        metric(x * 255, x * 255)
    with pytest.raises(ValueError, match=r"target in \[0, 1\]"):
        metric(x, x - 0.5)
    # The prediction is clamped (what a user sees); rounding just past 1 in a target is fine.
    assert float(metric(x * 2, (x + 1e-4).clamp(max=1.0001))[0]) < 1e3


def test_perceptual_distance_checks_the_same_way() -> None:
    missing = PerceptualDistance(None)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="expected float tensors in"):
        missing(x.to(torch.uint8), x.to(torch.uint8))
