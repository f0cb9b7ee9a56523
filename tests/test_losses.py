"""Loss terms on known inputs: identical images give 0, different images more; module == function."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d
from pytorch_msssim.ssim import _ssim as _ssim_per_channel
from torch import nn

from training.config import LossConfig
from training.losses import (
    MS_SSIM_WEIGHTS,
    DistillLoss,
    EdgeLoss,
    FeatureAdapters,
    FFTLoss,
    L1Loss,
    LabLoss,
    MSSSIMLoss,
    SSIMLoss,
    VGGFeatures,
    VGGLoss,
    distill_loss,
    edge_loss,
    fft_loss,
    l1_loss,
    lab_loss,
    ms_ssim_loss,
    ms_ssim_value,
    ssim_loss,
    ssim_value,
)

PAIRS = [
    (l1_loss, L1Loss()),
    (ssim_loss, SSIMLoss()),
    (ms_ssim_loss, MSSSIMLoss()),
    (edge_loss, EdgeLoss()),
    (lab_loss, LabLoss()),
    (fft_loss, FFTLoss()),
]


def _images(size: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, size, size, generator=g)
    b = (a + 0.2 * torch.rand(2, 3, size, size, generator=g)).clamp(0, 1)
    return a, b


@pytest.mark.parametrize(
    ("fn", "module"), PAIRS, ids=lambda x: getattr(x, "__name__", type(x).__name__)
)
@pytest.mark.parametrize("size", [37, 48, 200])
def test_zero_on_identical_positive_on_different(fn, module, size: int) -> None:
    a, b = _images(size)
    assert float(fn(a, a)) == pytest.approx(0.0, abs=1e-5)
    assert float(fn(a, b)) > 1e-3
    assert torch.equal(fn(a, b), module(a, b))


def test_ssim_one_for_identical_and_ms_ssim_small_patches() -> None:
    a, b = _images(64)
    assert float(ssim_value(a, a)) == pytest.approx(1.0, abs=1e-5)
    # 64 px is below pytorch-msssim's 160 px: fewer scales, still 1 for identical images.
    assert float(ms_ssim_value(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert 0 < float(ms_ssim_value(a, b)) < 1


def _ms_ssim_by_hand(x: torch.Tensor, y: torch.Tensor, scales: int) -> torch.Tensor:
    """MS-SSIM over ``scales`` scales written out: the contrast-structure term of each scale but
    the last, the full SSIM of the last, with the standard weights cut to ``scales`` and
    renormalised; 2x average pooling between scales."""
    w = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    w = w / w.sum()
    win = _fspecial_gauss_1d(11, 1.5).repeat([3, 1, 1, 1])
    value = torch.ones(x.shape[:2])
    for i in range(scales):
        s, cs = _ssim_per_channel(x, y, win=win, data_range=1.0, size_average=False)
        value = value * torch.relu(s if i == scales - 1 else cs) ** w[i]
        pad = [n % 2 for n in x.shape[2:]]
        x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    return value.mean()


@pytest.mark.parametrize(("size", "scales"), [(37, 2), (64, 3), (120, 4)])
def test_ms_ssim_below_160_px_is_ms_ssim_with_fewer_scales(size: int, scales: int) -> None:
    # Patches under 161 px take losses.py's own fewer-scale path (pytorch-msssim refuses them);
    # "1 for identical, in (0, 1) otherwise" also held with the coarsest SSIM in place of every
    # scale's term. Pin the value: the recipe written out above matches the library at 5
    # scales, and the small path is that recipe with as many scales as fit an 11 px window.
    big_a, big_b = _images(176)
    w = torch.tensor(MS_SSIM_WEIGHTS)
    lib = pytorch_msssim.ms_ssim(big_a, big_b, data_range=1.0, weights=(w / w.sum()).tolist())
    assert float(_ms_ssim_by_hand(big_a, big_b, 5)) == pytest.approx(float(lib), abs=1e-6)
    a, b = _images(size)
    expect = float(_ms_ssim_by_hand(a, b, scales))
    assert float(ms_ssim_value(a, b)) == pytest.approx(expect, abs=1e-6)


def test_charbonnier_close_to_l1_and_zero() -> None:
    a, b = _images()
    assert float(l1_loss(a, a, charbonnier=1e-3)) == pytest.approx(0.0, abs=1e-7)
    assert float(l1_loss(a, b, charbonnier=1e-3)) == pytest.approx(float(l1_loss(a, b)), abs=2e-3)


def test_edge_loss_sees_gradients_not_brightness() -> None:
    # A uniform brightness offset changes every pixel (L1 = 0.1) but no edge: Sobel-based
    # edge loss must ignore it, and must see a pattern whose edges differ.
    a, _ = _images()
    a = a * 0.8
    assert float(l1_loss(a, a + 0.1)) == pytest.approx(0.1, abs=1e-5)
    assert float(edge_loss(a, a + 0.1)) == pytest.approx(0.0, abs=1e-5)
    assert float(edge_loss(a, a.flip(-1))) > 0.05


def test_lab_loss_known_value_and_judges_colour_not_detail() -> None:
    # sRGB grey 0.5 has L* = 53.39, a* = b* = 0; black is L* = 0: mean |d| / 100 = 53.39 / 300.
    grey, black = torch.full((1, 3, 16, 16), 0.5), torch.zeros(1, 3, 16, 16)
    assert float(lab_loss(grey, black)) == pytest.approx(53.389 / 300, abs=1e-3)
    # A +-0.1 one-pixel checkerboard (detail) vs a colour cast of the same size: the low-pass
    # makes the loss blind to the first and not to the second.
    base = torch.full((1, 3, 48, 48), 0.5)
    checker = ((torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2).float() * 0.2 - 0.1
    cast = torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1)
    assert float(lab_loss(base + checker, base)) < 1e-3
    assert float(lab_loss(base + cast, base)) > 0.05


def test_distill_mask_skips_samples_without_teacher() -> None:
    a, b = _images()
    t = b.clone()
    t[1] = 0.0  # sample 1 has no teacher output: must be ignored
    mask = torch.tensor([True, False])
    assert float(distill_loss(a, t, mask)) == pytest.approx(
        float((a[0] - b[0]).abs().mean()), rel=1e-5
    )
    assert float(distill_loss(a, t, torch.tensor([False, False]))) == 0.0
    assert float(distill_loss(a, a)) == 0.0


def test_distill_ignores_a_non_finite_teacher_output_it_leaves_out() -> None:
    # An fp16 teacher output that overflowed: the gain mask leaves it out, and neither the loss
    # nor the student's gradient may see it.
    a, b = _images()
    a = a.clone().requires_grad_(True)
    t = b.clone()
    t[1, 0, 0, 0], t[1, 1, 2, 3] = float("nan"), float("inf")
    loss = distill_loss(a, t, torch.tensor([True, False]))
    expected = float((a[0] - b[0]).abs().mean().detach())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(a.grad).all() and not a.grad[1].any()


def _vgg19n_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    layout = {
        "0": (3, 3, 1),
        "2": (64, 3, 3),
        "5": (64, 64, 3),
        "9": (128, 64, 3),
        "12": (128, 128, 3),
        "16": (256, 128, 3),
    }
    sd = {}
    for k, (o, i, ks) in layout.items():
        conv = nn.Conv2d(i, o, ks)
        sd[f"{k}.weight"], sd[f"{k}.bias"] = conv.weight.detach(), conv.bias.detach()
    return sd


def _vgg16_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
    sd, idx, cin = {}, 0, 3
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        conv = nn.Conv2d(cin, int(v), 3, padding=1)
        sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"] = (
            conv.weight.detach(),
            conv.bias.detach(),
        )
        idx += 2
        cin = int(v)
    return sd


@pytest.mark.parametrize(
    ("maker", "kind"), [(_vgg19n_state, "vgg19_normalised"), (_vgg16_state, "vgg16")]
)
def test_vgg_loss_both_state_dict_formats(tmp_path: Path, maker, kind: str) -> None:
    path = tmp_path / "vgg.pth"
    torch.save(maker(), path)
    layers = ["relu1_2", "relu2_2", "relu3_1"]
    feats = VGGFeatures(path, layers)
    assert feats.kind == kind
    a, b = _images(40)
    out = feats(a)
    assert [f.shape[1] for f in out] == [64, 128, 256]
    assert [f.shape[-1] for f in out] == [40, 20, 10]
    loss = VGGLoss(path, layers)
    assert float(loss(a, a)) == 0.0
    assert float(loss(a, b)) > 0.0
    assert not any(p.requires_grad for p in loss.parameters())


def test_vgg_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="loss.vgg_weights"):
        DistillLoss(LossConfig(vgg=0.1, vgg_weights=str(tmp_path / "nope.pth")))


def test_feature_adapters_match_channels_and_sizes() -> None:
    s = [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
    t = [torch.rand(2, 32, 32, 32), torch.rand(2, 64, 8, 8)]
    ad = FeatureAdapters(s, t)
    assert ad.pairs == [(0, 0), (1, 1)]
    loss = ad(s, t)
    loss.backward()
    assert float(loss) > 0 and all(p.grad is not None for p in ad.parameters())


def test_feature_term_leaves_out_samples_with_non_finite_teacher_features() -> None:
    # An fp16 teacher that overflowed on some samples: only the others may reach the term and
    # the gradients (of the adapters and of the student's features alike).
    torch.manual_seed(0)
    s = [torch.rand(3, 8, 16, 16, requires_grad=True), torch.rand(3, 16, 8, 8, requires_grad=True)]
    t = [torch.rand(3, 32, 32, 32), torch.rand(3, 64, 8, 8)]
    ad = FeatureAdapters(s, t)
    t[0][1, 0, 0, 0] = float("nan")
    t[1][2, 3, 1, 1] = float("inf")
    loss = ad(s, t)
    first = ad([x[:1] for x in s], [x[:1] for x in t])
    assert float(loss.detach()) == pytest.approx(float(first.detach()), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in ad.parameters())
    assert all(torch.isfinite(x.grad).all() and not x.grad[1:].any() for x in s)
    assert s[0].grad[0].any()
    # A sample the mask leaves out is dropped too; none left is 0, with finite gradients.
    keep_none = ad(s, t, torch.tensor([False, True, True]))
    assert float(keep_none.detach()) == 0.0
    ad.zero_grad()
    keep_none.backward()
    assert all(torch.isfinite(p.grad).all() for p in ad.parameters())


def test_distill_loss_feature_term_drops_a_sample_whose_teacher_output_overflowed() -> None:
    # Its features stayed finite, but its output did not: teacher_gain_mask leaves the output
    # out, and the feature term must not follow that sample's features either.
    torch.manual_seed(0)
    a, b = _images(32)
    sf = [torch.rand(2, 8, 16, 16, requires_grad=True)]
    tf = [torch.rand(2, 16, 16, 16)]
    fn = DistillLoss(LossConfig(l1=1.0, feature=0.5, distill=1.0))
    fn.init_adapters(sf, tf)
    teacher = b.clone()
    teacher[1, 0, 3, 3] = float("inf")
    terms = fn(a, b, teacher, torch.tensor([True, False]), sf, tf)
    assert all(torch.isfinite(v) for v in terms.values())
    assert fn.adapters is not None
    only_first = fn.adapters([x[:1] for x in sf], [x[:1] for x in tf])
    assert float(terms["feature"].detach()) == pytest.approx(float(only_first.detach()), rel=1e-5)
    terms["total"].backward()
    assert torch.isfinite(sf[0].grad).all() and not sf[0].grad[1].any()


def test_distill_loss_feature_term_follows_the_teacher_only_where_its_output_term_does() -> None:
    # The mask (the teacher beats the input by 0.5 dB; bounded: and the student) left the
    # output term, but the features followed the teacher on every sample: a quarter of the
    # patches distilled, the feature term on all of them.
    torch.manual_seed(0)
    a, b = _images(32)
    sf = [torch.rand(2, 8, 16, 16, requires_grad=True)]
    tf = [torch.rand(2, 16, 16, 16)]
    fn = DistillLoss(LossConfig(l1=1.0, feature=0.5, distill=1.0))
    fn.init_adapters(sf, tf)
    assert fn.adapters is not None
    terms = fn(a, b, b.clone(), torch.tensor([False, True]), sf, tf)
    only_second = fn.adapters([x[1:] for x in sf], [x[1:] for x in tf])
    assert float(terms["feature"].detach()) == pytest.approx(float(only_second.detach()), rel=1e-5)
    terms["total"].backward()
    assert not sf[0].grad[0].any() and sf[0].grad[1].any()
    sf[0].grad = None
    none = fn(a, b, b.clone(), torch.tensor([False, False]), sf, tf)
    assert float(none["feature"].detach()) == 0.0
    none["total"].backward()
    assert not sf[0].grad.any()


def test_fft_loss_known_values() -> None:
    h, w = 16, 24
    base = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    bins = h * (w // 2 + 1) * 2  # rfft2 bins, real and imaginary parts each
    # A constant offset is one DC coefficient of size a * sqrt(HW) (orthonormal FFT).
    a = 0.1
    expect = a * (h * w) ** 0.5 / bins
    assert float(fft_loss(base + a, base)) == pytest.approx(expect, rel=1e-5)
    # Detail at the highest frequency (a pixel checkerboard) costs exactly as much as that offset,
    # where a blur-blind average would charge it nothing.
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = a * (1 - 2 * ((yy + xx) % 2)).float()
    assert float(fft_loss(base + checker, base)) == pytest.approx(expect, rel=1e-5)
    assert float(fft_loss(base, base)) == 0.0


def test_distill_loss_total_is_weighted_sum(tmp_path: Path) -> None:
    cfg = LossConfig(l1=1.0, ssim=0.1, ms_ssim=0.2, edge=0.5, lab=0.3, fft=0.05, distill=0.7)
    a, b = _images(64)
    teacher = (b * 0.9).clamp(0, 1)
    terms = DistillLoss(cfg)(a, b, teacher, torch.tensor([True, True]))
    weights = {
        "l1": 1.0,
        "ssim": 0.1,
        "ms_ssim": 0.2,
        "edge": 0.5,
        "lab": 0.3,
        "fft": 0.05,
        "distill": 0.7,
    }
    assert set(terms) == {"total", *weights}
    expect = sum(w * float(terms[k]) for k, w in weights.items())
    assert float(terms["total"]) == pytest.approx(expect, rel=1e-5)
    # Each term is the named loss between the right tensors (not just any number summed):
    # l1 and distill against hand-written L1, the others against their own tested functions.
    assert float(terms["l1"]) == pytest.approx(float((a - b).abs().mean()), rel=1e-5)
    assert float(terms["distill"]) == pytest.approx(float((a - teacher).abs().mean()), rel=1e-5)
    for name, fn in [
        ("ssim", ssim_loss),
        ("ms_ssim", ms_ssim_loss),
        ("edge", edge_loss),
        ("lab", lab_loss),
        ("fft", fft_loss),
    ]:
        assert float(terms[name]) == pytest.approx(float(fn(a, b)), rel=1e-5), name
    no_teacher = DistillLoss(cfg)(a, b)
    assert "distill" not in no_teacher
    same = DistillLoss(cfg)(a, a, a)
    assert float(same["total"]) == pytest.approx(0.0, abs=1e-5)


def test_charbonnier_known_value_reaches_the_distill_loss() -> None:
    # With the epsilon ignored (by l1_loss or by DistillLoss) a run configured for the smooth
    # Charbonnier penalty trains on plain L1 and nothing says so: 0.05 here instead of 0.0118.
    a = torch.full((1, 3, 8, 8), 0.5)
    b = a + 0.05
    expect = (0.05**2 + 0.1**2) ** 0.5 - 0.1
    assert float(l1_loss(a, b, charbonnier=0.1)) == pytest.approx(expect, rel=1e-4)
    assert float(L1Loss(charbonnier=0.1)(a, b)) == pytest.approx(expect, rel=1e-4)
    terms = DistillLoss(LossConfig(l1=1.0, charbonnier=0.1))(a, b)
    assert float(terms["l1"]) == pytest.approx(expect, rel=1e-4)


def test_ssim_matches_skimage_at_data_range_1() -> None:
    # SSIM's constants scale with the data range: at 255 for [0, 1] images they swamp the
    # statistics and a clearly different pair scores ~0.999, so 1 - SSIM teaches nothing.
    from skimage.metrics import structural_similarity

    a, _ = _images(48)
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ours = float(ssim_value(a[:1], b[:1]))
    ref = structural_similarity(
        a[0].permute(1, 2, 0).numpy(),
        b[0].permute(1, 2, 0).numpy(),
        channel_axis=2,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ref < 0.97
    assert ours == pytest.approx(float(ref), abs=1e-4)


def test_edge_loss_of_a_unit_step_known_value() -> None:
    # kornia's normalised Sobel of a 0 -> 1 step along x is 0.5 on the two columns beside it
    # (magnitude sqrt(g^2 + 1e-6), so flat parts read 1e-3 on both sides and cancel): the
    # loss against black is 2 columns * (sqrt(0.25 + 1e-6) - 1e-3) / width. A scaled term
    # would silently change its weight against the others.
    w = 16
    step = torch.zeros(1, 3, 8, w)
    step[..., w // 2 :] = 1.0
    expect = 2 * ((0.25 + 1e-6) ** 0.5 - 1e-3) / w
    assert float(edge_loss(step, torch.zeros_like(step))) == pytest.approx(expect, rel=1e-4)


def test_vgg_loss_is_the_mean_over_layers(tmp_path: Path) -> None:
    # Summed over layers instead of averaged, the perceptual term grows with the number of
    # layers configured and its weight no longer means what the config says.
    path = tmp_path / "vgg.pth"
    torch.save(_vgg19n_state(), path)
    layers = ["relu1_1", "relu1_2", "relu2_1"]
    feats = VGGFeatures(path, layers)
    a, b = _images(24)
    per_layer = [float((x - y).abs().mean()) for x, y in zip(feats(a), feats(b), strict=True)]
    expect = sum(per_layer) / len(per_layer)
    assert float(VGGLoss(path, layers)(a, b)) == pytest.approx(expect, rel=1e-5)


def test_vgg16_normalises_its_input_with_imagenet_statistics(tmp_path: Path) -> None:
    # torchvision's VGG16 was trained on ImageNet-normalised input; fed raw [0, 1] values its
    # features (and the perceptual loss) are those of a dim, colour-shifted picture. relu1_1
    # of a constant grey image written out by hand.
    sd = _vgg16_state()
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    x = torch.full((1, 3, 12, 12), 0.6)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    w, b = sd["features.0.weight"], sd["features.0.bias"]
    expect = F.conv2d((x - mean) / std, w, b, padding=1).relu()
    (got,) = VGGFeatures(path, ["relu1_1"])(x)
    assert torch.allclose(got, expect, atol=1e-5)


def test_vgg19_normalised_uses_reflection_padding(tmp_path: Path) -> None:
    # The normalised VGG-19 was trained with reflection padding; zero padding darkens a frame
    # around every feature map, and the perceptual loss then charges the net for its borders.
    sd = _vgg19n_state()
    path = tmp_path / "vgg.pth"
    torch.save(sd, path)
    x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    y = F.conv2d(x, sd["0.weight"], sd["0.bias"])
    expect = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), sd["2.weight"], sd["2.bias"]).relu()
    (got,) = VGGFeatures(path, ["relu1_1"])(x)
    assert torch.allclose(got, expect, atol=1e-4)


def test_feature_loss_averages_over_pairs() -> None:
    # Summed over pairs, the feature term's weight would scale with how many student/teacher
    # feature pairs the models happen to have.
    from training.losses import feature_loss

    torch.manual_seed(0)
    s, t = torch.rand(2, 8, 8, 8), torch.rand(2, 16, 8, 8)
    conv = nn.Conv2d(8, 16, 1)
    with torch.no_grad():
        one = feature_loss([s], [t], nn.ModuleList([conv]), [(0, 0)])
        two = feature_loss([s, s], [t, t], nn.ModuleList([conv, conv]), [(0, 0), (1, 1)])
    assert float(one) > 0
    assert float(two) == pytest.approx(float(one), rel=1e-5)


def test_distill_loss_total_weighs_l1_vgg_and_feature_terms(tmp_path: Path) -> None:
    # A weight ignored (taken as 1) for l1, vgg or feature: the balance the config asks for is
    # not the one trained, with no error.
    path = tmp_path / "vgg.pth"
    torch.save(_vgg19n_state(), path)
    torch.manual_seed(0)
    cfg = LossConfig(l1=0.4, vgg=0.3, vgg_weights=str(path), feature=0.2)
    fn = DistillLoss(cfg)
    sf, tf = [torch.rand(2, 8, 16, 16)], [torch.rand(2, 16, 16, 16)]
    fn.init_adapters(sf, tf)
    a, b = _images(32)
    with torch.no_grad():
        terms = fn(a, b, None, None, sf, tf)
    weights = {"l1": 0.4, "vgg": 0.3, "feature": 0.2}
    assert set(terms) == {"total", *weights}
    assert all(float(terms[k]) > 0 for k in weights)
    expect = sum(w * float(terms[k]) for k, w in weights.items())
    assert float(terms["total"]) == pytest.approx(expect, rel=1e-5)


def test_distill_loss_with_every_weight_zero_is_refused() -> None:
    # A config with every term switched off would train on a constant 0: no gradient, a
    # wasted run that looks like it converged at once.
    cfg = LossConfig(l1=0.0)
    a, b = _images(16)
    with pytest.raises(ValueError, match="every loss weight is 0"):
        DistillLoss(cfg)(a, b)


def test_plain_l1_has_a_finite_gradient_where_prediction_and_target_agree() -> None:
    # With charbonnier 0 (the default) the loss is |d|, not sqrt(d^2 + 0) - 0: the same value,
    # but the square root's gradient at d = 0 is inf * 0 = NaN, and one pixel the student gets
    # exactly right (a saturated white, a flat border) made every weight NaN.
    a, b = _images(16)
    b[:, :, :4] = a[:, :, :4]
    pred = a.clone().requires_grad_(True)
    l1_loss(pred, b).backward()
    assert torch.isfinite(pred.grad).all()


def test_ms_ssim_weights_are_wang_et_als() -> None:
    # Fewer-scale MS-SSIM (patches under 161 px) renormalises these; the 5-scale path is
    # pytorch-msssim's with its own defaults. Both must be the published weights (Wang,
    # Simoncelli & Bovik 2003), or small and large patches train on different losses. The
    # by-hand recipe above reads MS_SSIM_WEIGHTS too, so the values are pinned here.
    assert MS_SSIM_WEIGHTS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    a, b = _images(176)
    assert float(ms_ssim_value(a, b)) == pytest.approx(float(_ms_ssim_by_hand(a, b, 5)), abs=1e-4)


@pytest.mark.parametrize(("size", "scales"), [(20, 1), (40, 2), (80, 3), (160, 4)])
def test_ms_ssim_scale_count_at_the_exact_limits(size: int, scales: int) -> None:
    # A side of exactly (11 - 1) * 2^(k - 1) px leaves the coarsest of k scales smaller than
    # the 11 px window: it takes k - 1 scales (at 160 px pytorch-msssim's 5-scale path refuses).
    a, b = _images(size)
    got = float(ms_ssim_value(a, b))
    expect = float(ssim_value(a, b)) if scales == 1 else float(_ms_ssim_by_hand(a, b, scales))
    assert got == pytest.approx(expect, abs=1e-6)


def test_ms_ssim_of_an_inverted_patch_is_zero_not_nan() -> None:
    # Anti-correlated patches have a negative contrast-structure term; raised to a fractional
    # weight it is NaN, and one such patch (a negative of the target) made the batch's loss NaN.
    a, _ = _images(64)
    value = ms_ssim_value(a, 1.0 - a)
    assert torch.isfinite(value)
    assert float(value) == pytest.approx(0.0, abs=1e-6)


def test_lab_loss_clamps_the_prediction_to_what_a_user_sees() -> None:
    # The student's raw output can overshoot [0, 1]; CIE LAB of such values (through the sRGB
    # curve's extension) is not a colour anyone sees, and the term then charged for it.
    a, b = _images(32)
    over = a + 0.8 * torch.randn(a.shape, generator=torch.Generator().manual_seed(7))
    assert over.min() < -0.5 and over.max() > 1.5
    assert float(lab_loss(over, b)) == pytest.approx(float(lab_loss(over.clamp(0, 1), b)), abs=1e-6)
