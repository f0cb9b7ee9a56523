"""Metrics refuse images that are not in the data range they assume and clamp predictions;
the unsharp baseline is the engine's `unsharp` backend."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import pytorch_msssim
import torch

from tests.test_evaluate import _fake_vgg19n
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


# --------------------------------------------------------------------------------------------
# Known values: what the evaluation reports (per-image CSV rows, set means, deltas over the
# blurry input) must be the published definitions, not only "1 for identical, lower otherwise".
# --------------------------------------------------------------------------------------------


def test_psnr_is_per_image_and_refuses_unbatched_images() -> None:
    # Each row of the per-image CSV is one image's PSNR: a batch mixing a 20 dB and a 40 dB
    # image must not report their pooled MSE (~23 dB) for both. MSE 0.01 -> 20 dB, 1e-4 -> 40 dB
    # by hand (data range 1).
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    # A (C, H, W) image would be read as C one-channel "images": refused, not three numbers.
    with pytest.raises(ValueError, match="expected two"):
        psnr(pred[0], target[0])


def test_ssim_matches_skimage_with_wang_et_al_settings() -> None:
    # The reported SSIM is Wang et al. 2004's: 11x11 Gaussian window of sigma 1.5, K1 0.01,
    # K2 0.03, data range 1. scikit-image's structural_similarity with gaussian_weights=True,
    # sigma=1.5, use_sample_covariance=False and data_range=1 is that definition (both average
    # over the "valid" region and the channels), computed independently of pytorch-msssim.
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 48, 48, generator=g)
    noise = torch.tensor([0.05, 0.2]).view(2, 1, 1, 1) * torch.randn(2, 3, 48, 48, generator=g)
    pred = (target + noise).clamp(0, 1)
    ours = ssim(pred, target)
    for i in range(2):
        ref = structural_similarity(
            pred[i].permute(1, 2, 0).numpy(),
            target[i].permute(1, 2, 0).numpy(),
            channel_axis=2,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert float(ours[i]) == pytest.approx(float(ref), abs=1e-4), i
    assert float(ours[1]) < 0.9  # a clearly different pair, where the constants matter


def _ms_ssim_by_hand(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Five-scale MS-SSIM (Wang et al. 2003) per image written out: contrast-structure of the
    four finer scales, full SSIM of the coarsest, the paper's weights, 2x average pooling
    between scales; per-scale statistics from pytorch-msssim's ``_ssim`` at data range 1."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d
    from pytorch_msssim.ssim import _ssim as _ssim_per_channel

    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    win = _fspecial_gauss_1d(11, 1.5).repeat([x.shape[1], 1, 1, 1])
    value = torch.ones(x.shape[:2])
    for i, w in enumerate(weights):
        s, cs = _ssim_per_channel(x, y, win=win, data_range=1.0, size_average=False)
        value = value * torch.relu(s if i == len(weights) - 1 else cs) ** w
        pad = [n % 2 for n in x.shape[2:]]
        x = torch.nn.functional.avg_pool2d(x, 2, padding=pad)
        y = torch.nn.functional.avg_pool2d(y, 2, padding=pad)
    return value.mean(1)


def test_ms_ssim_known_value_at_data_range_one() -> None:
    # At data range 255 the constants swamp the statistics of [0, 1] images: a noisy pair read
    # 0.9999, and every method's MS-SSIM in the report looked the same.
    g = torch.Generator().manual_seed(4)
    target = torch.rand(1, 3, 176, 176, generator=g)
    pred = (target + 0.2 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    got = float(ms_ssim(pred, target)[0])
    assert got == pytest.approx(float(_ms_ssim_by_hand(pred, target)[0]), abs=1e-4)
    assert got < 0.95


def test_perceptual_distance_is_the_mean_over_layers_of_the_clamped_prediction(tmp_path) -> None:
    # The perceptual column is the mean over the VGG layers (as the loss is): summed, it would
    # grow with the number of layers and not compare with the loss's numbers. The prediction is
    # clamped to what a user sees, as for the other metrics.
    _fake_vgg19n(tmp_path / "vgg.pth")
    pd = PerceptualDistance(tmp_path / "vgg.pth")
    assert pd.available, pd.reason
    g = torch.Generator().manual_seed(5)
    target = torch.rand(2, 3, 24, 24, generator=g)
    pred = target + 0.8 * torch.randn(2, 3, 24, 24, generator=g)
    assert pred.min() < -0.5 and pred.max() > 1.5
    with torch.no_grad():
        fp, ft = pd.vgg(pred.clamp(0, 1)), pd.vgg(target)
    assert len(fp) == 3
    per_layer = torch.stack([(a - b).abs().flatten(1).mean(1) for a, b in zip(fp, ft, strict=True)])
    torch.testing.assert_close(pd(pred, target), per_layer.mean(0), rtol=1e-5, atol=1e-7)


def test_unsharp_mask_reads_uint8_as_levels_of_255() -> None:
    # uint8 in is the same picture as its float / 255: the baseline must not depend on the dtype.
    rgb = (np.random.default_rng(1).random((32, 40, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(
        unsharp_mask(rgb), unsharp_mask(rgb.astype(np.float32) / 255.0), atol=1e-6
    )
