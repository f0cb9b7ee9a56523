"""Metrics refuse images that are not in the data range they assume and clamp predictions;
the unsharp baseline is the engine's `unsharp` backend."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import pytorch_msssim
import torch

from training.metrics import (
    UNSHARP_AMOUNT,
    UNSHARP_SIGMA,
    PerceptualDistance,
    ms_ssim,
    psnr,
    ssim,
    unsharp_mask,
)

torch.set_num_threads(2)


def _psnr_unclamped(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(1.0 / mse)).float()


def _ssim_unclamped(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return pytorch_msssim.ssim(pred, target, data_range=1.0, size_average=False)


def _ms_ssim_unclamped(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return pytorch_msssim.ms_ssim(pred, target, data_range=1.0, size_average=False)


METRICS = [(psnr, _psnr_unclamped), (ssim, _ssim_unclamped), (ms_ssim, _ms_ssim_unclamped)]


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
    # The prediction is clamped (test below); rounding just past 1 in a target is fine.
    assert torch.isfinite(metric(x * 2, (x + 1e-4).clamp(max=1.0001))).all()


@pytest.mark.parametrize(("metric", "unclamped"), METRICS, ids=["psnr", "ssim", "ms_ssim"])
def test_metrics_clamp_the_prediction_to_what_a_user_sees(
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    unclamped: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    # A prediction overshooting [0, 1] is shown saturated: it scores as its clamped self, not as
    # the raw numbers (which a "< 1e3" bound let through: PSNR is capped, SSIM is <= 1).
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 3, 176, 176, generator=g)
    pred = target + 0.6 * torch.randn(1, 3, 176, 176, generator=g)
    assert pred.min() < -0.5 and pred.max() > 1.5
    got = metric(pred, target)
    assert torch.equal(got, metric(pred.clamp(0, 1), target))
    # ... and clamping changes the number here, so the check above can tell the two apart.
    assert (got - unclamped(pred, target)).abs().min() > 1e-3


def test_unsharp_constants_follow_the_engines_unsharp_backend() -> None:
    # The evaluation's unsharp baseline must be the one the app shows: training duplicates
    # the engine's defaults (it never imports engine), so a change on one side must fail here.
    from engine.backends import UnsharpBackend

    backend = UnsharpBackend()
    assert (backend.amount, backend.radius) == (UNSHARP_AMOUNT, UNSHARP_SIGMA)
    # Same formula too: the engine rounds its blur and its output to uint8 (amount 1: up to
    # 1.5 levels apart), the baseline stays float.
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    engine_out = backend.process(rgb).astype(np.float32) / 255.0
    assert np.abs(engine_out - unsharp_mask(rgb)).max() <= 2.0 / 255


def test_perceptual_distance_checks_the_same_way() -> None:
    missing = PerceptualDistance(None)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="expected float tensors in"):
        missing(x.to(torch.uint8), x.to(torch.uint8))


def test_ms_ssim_is_nan_below_161_px_and_a_mean_skips_it() -> None:
    # pytorch-msssim refuses a shorter side of 160 px or less: evaluate stopped on such an
    # image, where it records NaN and averages the images that have a score.
    from training.evaluate import _mean

    torch.manual_seed(0)
    for side, defined in ((160, False), (161, True)):
        a = torch.rand(1, 3, side, 200)
        score = ms_ssim(a, a)
        assert bool(torch.isfinite(score).all()) == defined, side
    assert _mean([0.9, float("nan"), 0.7]) == pytest.approx(0.8)
    assert _mean([float("nan")]) is None  # "n/a" in the tables, not "nan"
