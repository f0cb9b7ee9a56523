"""Student registry: every variant honours the model contract at odd sizes and trains."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")

from training.models.student import (  # noqa: E402
    ShuffleUNetConfig,
    create_student,
    grow_from,
    list_students,
    pad_to_multiple,
)

VARIANTS = list_students()


def test_registry_has_the_required_variants() -> None:
    assert {"unet", "fast", "hq", "tiny"} <= set(VARIANTS)
    assert all(create_student(name).variant == name for name in ("tiny", "unet"))


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("size", [(16, 16), (37, 53), (61, 17)])
def test_forward_keeps_odd_sizes(name: str, size: tuple[int, int]) -> None:
    model = create_student(name).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_untrained_student_is_identity(name: str) -> None:
    # The zero-initialised residual head makes a fresh student exactly the identity: training
    # starts from "never worse than the input".
    model = create_student(name).eval()
    x = torch.rand(1, 3, 40, 72)
    with torch.no_grad():
        assert torch.allclose(model(x), x)


@pytest.mark.parametrize("name", VARIANTS)
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_student(name)
    # Perturb the zero-initialised head so gradients flow back through the whole net.
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 1e-2)
    x = torch.rand(1, 3, 48, 80)
    loss = (model(x) - x.flip(-1)).abs().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", VARIANTS)
def test_features_are_returned(name: str) -> None:
    model = create_student(name).eval()
    out, feats = model(torch.rand(1, 3, 64, 64), return_features=True)
    assert out.shape == (1, 3, 64, 64)
    assert feats and all(f.ndim == 4 and f.shape[0] == 1 for f in feats)
    # One map per level of the decoder path, coarsest first: the bottleneck, then each decoder
    # level's output (feature distillation builds one adapter per map).
    widths = list(model.cfg.widths)
    assert [f.shape[1] for f in feats] == widths[::-1]
    assert [f.shape[-1] for f in feats] == sorted(f.shape[-1] for f in feats)


def test_reported_cost_and_size() -> None:
    fast = create_student("fast")
    hq = create_student("hq")
    # The design targets: fast stays within ~2.5 K multiply-adds per pixel (~26 ms per 720p
    # frame under OpenVINO on two cores), hq fits in 5 MB.
    assert fast.macs_per_pixel() <= 2500
    assert create_student("fast_s").macs_per_pixel() < fast.macs_per_pixel()
    assert hq.count_params() * 4 < 5_000_000
    assert hq.macs_per_pixel() > 5 * fast.macs_per_pixel()
    # The counter is a real count: a 1x1 conv of 3->3 channels costs 9 MACs per pixel.
    tiny = create_student("tiny")
    assert tiny.macs_per_pixel() == pytest.approx(tiny.macs_per_pixel((64, 64)), rel=1e-6)


def test_macs_count_matches_hand_count() -> None:
    cfg = dict(
        stem_scale=2, widths=(8,), enc_blocks=(0,), body_blocks=0, dec_blocks=(), stem_kernel=3
    )
    model = create_student("tiny", **cfg)
    # stem 1x1 12->8 and head 1x1 8->12 at 1/4 of the pixels, two depthwise 3x3 on 8 channels.
    expected = (12 * 8 + 8 * 12 + 2 * 9 * 8) / 4
    assert model.macs_per_pixel() == pytest.approx(expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_odd_frame_is_the_top_left_of_its_padded_frame(name: str) -> None:
    # pad (bottom/right) -> net -> crop: the output for an odd frame is the top-left of the
    # output for the padded frame, so every pixel comes from its own place in the input.
    model = _trained_like(create_student(name))
    x = torch.rand(1, 3, 37, 53)
    padded, h, w = pad_to_multiple(x, model.multiple)
    assert padded.shape[-2:] != x.shape[-2:]
    with torch.no_grad():
        y = model(x)
        ref = model(padded)[..., :h, :w]
    assert not torch.allclose(y, x, atol=1e-3)  # not the identity: the net's part is checked
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_macs_count_matches_hand_count_for_the_unet() -> None:
    w0, w1 = 4, 8
    model = create_student("unet", widths=(w0, w1), convs_per_level=1)
    # Full resolution: inc 3x3 3->w0, level-0 DSConv w0->w0, decoder DSConv 2*w0->w0, out 1x1.
    full = 9 * 3 * w0 + (9 * w0 + w0 * w0) + (9 * 2 * w0 + 2 * w0 * w0) + w0 * 3
    # Half resolution (a quarter of the pixels): level-1 DSConv w0->w1, and the 2x2 stride-2
    # transposed conv w1->w0, which spends w0 * 4 MACs on each of its input values.
    half = (9 * w0 + w0 * w1) + w1 * w0 * 4
    assert model.macs_per_pixel((32, 32)) == pytest.approx(full + half / 4)


def test_macs_count_leaves_the_training_mode_alone() -> None:
    model = create_student("tiny")
    model.train()
    model.macs_per_pixel((32, 32))
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    model.macs_per_pixel((32, 32))
    assert not model.training


def test_pad_to_multiple_replicates_edges_and_reports_size() -> None:
    x = torch.arange(16 * 17, dtype=torch.float32).reshape(1, 1, 16, 17)
    y, h, w = pad_to_multiple(x, 8)
    assert (h, w) == (16, 17) and y.shape == (1, 1, 16, 24)
    assert torch.equal(y[..., :17], x)
    assert torch.equal(y[..., 0, 17:], x[..., 0, 16:17].expand(1, 1, 7))  # edge, not zeros


def test_unknown_variant_and_keys_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown student 'nope'"):
        create_student("nope")
    with pytest.raises(TypeError, match="unknown config keys"):
        create_student("fast", colour=3)
    with pytest.raises(ValueError, match="enc_blocks"):
        create_student("fast", enc_blocks=(1,))
    assert ShuffleUNetConfig().stem_scale == 4


def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # Untrained students are the identity; random weights everywhere make the check meaningful.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["fast", "hq"])
def test_the_strided_stem_is_pixel_unshuffle_then_1x1_and_old_weights_load(name: str) -> None:
    torch.manual_seed(0)
    model = create_student(name).eval()
    s = model.cfg.stem_scale
    w, b = model.stem.weight, model.stem.bias
    old = w.detach().reshape(w.shape[0], 3 * s * s, 1, 1)  # how the unshuffle stem stored it
    x = torch.rand(2, 3, 8 * s, 12 * s)
    with torch.no_grad():
        assert torch.allclose(model.stem(x), F.conv2d(F.pixel_unshuffle(x, s), old, b), atol=1e-6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["stem.weight"] = old
    fresh = create_student(name)
    fresh.load_state_dict(state)  # strict: the old shape is viewed, not refused
    assert torch.equal(fresh.stem.weight, w.detach())
    grown = create_student("fast_plus")
    if name == "fast":
        assert grow_from(grown, state) and torch.equal(grown.stem.weight, w.detach())


def test_grown_student_starts_as_the_source_function() -> None:
    source = _trained_like(create_student("tiny"))
    grown = _trained_like(create_student("tiny", body_blocks=2, dec_blocks=(2,)), seed=1)
    added = grow_from(grown, source.state_dict())
    assert added == ["decoders.0.1", "encoders.1.1", "encoders.1.2"]
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        assert torch.equal(grown(x), source(x))
    # It is a real growth: the added blocks train and change the output.
    grown.train()
    loss = (grown(x) - x.flip(-1)).abs().mean()
    loss.backward()
    assert grown.get_submodule("encoders.1.2").project.weight.grad.abs().sum() > 0

    big = create_student("fast")
    assert len(grow_from(create_student("fast_plus"), big.state_dict())) == 8


def test_growth_refuses_what_is_not_a_growth() -> None:
    tiny = create_student("tiny")
    with pytest.raises(ValueError, match="not a growth"):  # other widths
        grow_from(create_student("tiny", widths=(8, 24)), tiny.state_dict())
    with pytest.raises(ValueError, match="encoders.1.0.expand.weight .* absent"):  # shallower
        grow_from(create_student("tiny", enc_blocks=(0, 0)), tiny.state_dict())
    with pytest.raises(ValueError, match="only ShuffleUNet students grow, not DSUNet"):
        grow_from(create_student("unet", convs_per_level=3), create_student("unet").state_dict())
    # A tensor the source lacks, outside the blocks it adds, would be left at random init.
    for lost in ("head.bias", "encoders.1.0.dw.weight"):
        partial = {k: v for k, v in tiny.state_dict().items() if k != lost}
        with pytest.raises(ValueError, match=f"{lost} is missing"):
            grow_from(create_student("tiny", body_blocks=1), partial)


@pytest.mark.parametrize("name", VARIANTS)
def test_export_parity(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from training.export import FP32_TOLERANCE, export_onnx

    torch.manual_seed(0)
    model = create_student(name).eval()
    # Real, non-identity weights: the fresh student is exactly the identity and would hide a
    # broken graph behind a trivially matching output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in ((67, 97), (16, 33)):
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = model(x).clamp(0, 1).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(ref - x.numpy()).max() > 1e-3
        assert abs(got - ref).max() <= FP32_TOLERANCE


def test_pad_to_multiple_leaves_a_fitting_frame_alone() -> None:
    # A 720p or 1080p frame padded by a whole extra multiple would cost the net that much more.
    x = torch.rand(1, 3, 32, 64)
    y, h, w = pad_to_multiple(x, 32)
    assert (h, w) == (32, 64) and torch.equal(y, x)
    y, _, _ = pad_to_multiple(torch.rand(1, 3, 17, 16), 8)
    assert y.shape[-2:] == (24, 16)


def test_count_params_matches_hand_count() -> None:
    cfg = dict(
        stem_scale=2, widths=(8,), enc_blocks=(0,), body_blocks=0, dec_blocks=(), stem_kernel=3
    )
    model = create_student("tiny", **cfg)
    # stem 2x2 3->8, two depthwise 3x3 on 8 channels, head 1x1 8->12; each with its bias.
    expected = (4 * 3 * 8 + 8) + 2 * (9 * 8 + 8) + (8 * 12 + 12)
    assert model.count_params() == expected


def test_macs_count_is_per_pixel_at_any_aspect_and_leaves_no_hooks() -> None:
    model = create_student("tiny")
    assert model.macs_per_pixel((32, 96)) == pytest.approx(model.macs_per_pixel((64, 64)))
    # Hooks left behind would run on every later training step and export trace.
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", VARIANTS)
def test_multiple_is_the_nets_whole_downsampling(name: str) -> None:
    # A frame of exactly `multiple` reaches the bottleneck as one cell: the padding asks for no
    # more than the net needs (the engine pads every frame to the exported multiple).
    model = create_student(name).eval()
    m = model.multiple
    with torch.no_grad():
        _, feats = model(torch.rand(1, 3, m, m), return_features=True)
    assert feats[0].shape[-2:] == (1, 1)


@pytest.mark.parametrize("name", ["fast", "hq"])
def test_fresh_blocks_start_close_to_identity(name: str) -> None:
    # A deep stack trains from scratch at high lr only if each block starts near the identity.
    from training.models.student import InvertedResidual

    torch.manual_seed(0)
    model = create_student(name)
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert blocks
    with torch.no_grad():
        for block in blocks:
            x = torch.rand(1, block.expand.in_channels, 8, 8)
            assert (block(x) - x).abs().max() < 0.05


def test_grow_from_leaves_the_callers_state_alone() -> None:
    # --init_from keeps the loaded checkpoint; growing must not rewrite its stem in place.
    tiny = create_student("tiny")
    state = dict(tiny.state_dict())
    w = state["stem.weight"]
    old = w.reshape(w.shape[0], -1, 1, 1).clone()  # the pixel-unshuffle stem's layout
    state["stem.weight"] = old
    grown = create_student("tiny", body_blocks=1)
    grow_from(grown, state)
    assert state["stem.weight"] is old and old.shape[-2:] == (1, 1)
    assert torch.equal(grown.stem.weight, w)
