"""Raw-frame blur made on the training device: same definitions as the worker path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from training.data import RawSequence, SynthParams, psnr_np, sharpness, temporal_average
from training.device_data import DeviceRawSampler, psnr_batch, sharpness_batch

H, W = 40, 48


def _coded_sequence(n: int = 20) -> RawSequence:
    """Frame i: red = 8 i, green = row, blue = column, so a patch tells where it came from."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames = [
        np.stack([np.full((H, W), 8 * i), yy * 5, xx * 5], axis=-1).astype(np.uint8)
        for i in range(n)
    ]
    return RawSequence(name="coded", frames=frames, numbers=list(range(1, n + 1)), paths=[])


def _flicker() -> RawSequence:
    """Twelve frames of noise: every window's average is far from its centre frame."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(12)]
    return RawSequence(name="flicker", frames=frames, numbers=list(range(1, 13)), paths=[])


def _params(**kw: object) -> SynthParams:
    base = dict(
        raw_windows=(5, 7),
        linear_fraction=0.0,
        noise_prob=0.0,
        jpeg_prob=0.0,
        sharpness_threshold=0.0,
        max_blur_psnr=0.0,
        augment=False,
    )
    base.update(kw)
    return SynthParams(**base)  # type: ignore[arg-type]


def test_batched_metrics_match_the_worker_definitions() -> None:
    rng = np.random.default_rng(3)
    imgs = [rng.uniform(size=(33, 47, 3)).astype(np.float32) for _ in range(3)]
    noisy = [np.clip(a + rng.normal(0, 0.03 * (i + 1), a.shape), 0, 1) for i, a in enumerate(imgs)]
    t = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    tn = torch.from_numpy(np.stack(noisy)).permute(0, 3, 1, 2).float()
    assert sharpness_batch(t).tolist() == pytest.approx([sharpness(a) for a in imgs], rel=1e-5)
    assert psnr_batch(t, tn).tolist() == pytest.approx(
        [psnr_np(a, b) for a, b in zip(imgs, noisy, strict=True)], rel=1e-5
    )
    assert float(psnr_batch(t, t)[0]) == 100.0


def test_plain_average_is_a_window_of_one_crop_around_its_centre() -> None:
    seq = _coded_sequence()
    s = DeviceRawSampler([seq], _params(), "cpu", seed=1)
    blur, sharp, rejected = s.sample(12, 32, step=0)
    assert blur.shape == sharp.shape == (12, 3, 32, 32) and rejected == 0
    # red rises by 8 per frame: the plain mean of a centred window is the centre frame's red
    torch.testing.assert_close(blur[:, 0], sharp[:, 0], atol=1e-6, rtol=0)
    centre = sharp[:, 0, 0, 0] * 255 / 8
    assert torch.all((centre - centre.round()).abs() < 1e-4)
    assert centre.min() >= 2 and centre.max() <= 17  # windows of 5 / 7 inside frames 0-19
    # green / blue: one crop position for all frames, rows and columns in order
    torch.testing.assert_close(blur[:, 1:], sharp[:, 1:])
    rows = sharp[:, 1, :, 0] * 255 / 5
    torch.testing.assert_close(rows - rows[:, :1], torch.arange(32.0).expand(12, 32))


@pytest.mark.parametrize("gamma", [2.2, 1.6])
def test_linear_light_average_matches_temporal_average(gamma: float) -> None:
    seq = _coded_sequence()
    p = _params(raw_windows=(7,), linear_fraction=1.0, gamma=gamma)
    s = DeviceRawSampler([seq], p, "cpu", seed=2)
    blur, sharp, _ = s.sample(4, 32, step=5)
    for b, c in zip(blur, sharp, strict=True):
        i = round(float(c[0, 0, 0]) * 255 / 8)
        y, x = round(float(c[1, 0, 0]) * 255 / 5), round(float(c[2, 0, 0]) * 255 / 5)
        crops = [f[y : y + 32, x : x + 32] for f in seq.frames[i - 3 : i + 4]]
        want = temporal_average(crops, linear=True, gamma=gamma)
        np.testing.assert_allclose(b.permute(1, 2, 0).numpy(), want, atol=1e-5)
        assert float(b[0].mean()) > float(c[0].mean())  # the power mean lies above the centre


def test_same_step_same_batch_and_steps_differ() -> None:
    seq = _coded_sequence()
    p = _params(noise_prob=1.0, noise_sigma=(0.02, 0.02), augment=True, linear_fraction=0.5)
    a = DeviceRawSampler([seq], p, "cpu", seed=4).sample(6, 32, step=9)
    b = DeviceRawSampler([seq], p, "cpu", seed=4).sample(6, 32, step=9)
    c = DeviceRawSampler([seq], p, "cpu", seed=4).sample(6, 32, step=10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_augmentation_moves_blur_and_sharp_alike() -> None:
    s = DeviceRawSampler([_coded_sequence()], _params(augment=True), "cpu", seed=6)
    blur, sharp, _ = s.sample(16, 32, step=3)
    torch.testing.assert_close(blur, sharp, atol=1e-6, rtol=0)  # plain average = centre here
    rows = sharp[:, 1] * 255 / 5  # green codes the row: rotated / flipped crops differ in layout
    layouts = {
        (bool(rows[i, 1, 0] > rows[i, 0, 0]), bool(rows[i, 0, 1] > rows[i, 0, 0]))
        for i in range(16)
    }
    assert len(layouts) > 1


def test_sequences_of_different_sizes_mix() -> None:
    small = RawSequence(
        name="small",
        frames=[f[:24, :30] for f in _coded_sequence().frames],
        numbers=list(range(1, 21)),
        paths=[],
    )
    s = DeviceRawSampler([_coded_sequence(), small], _params(), "cpu", seed=7)
    assert s.sample(12, 32, step=0)[0].shape == (12, 3, 32, 32)


def test_jpeg_round_trip_on_the_host_when_drawn() -> None:
    p = _params(jpeg_prob=1.0, jpeg_quality=(30, 30))
    blur, sharp, _ = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=8).sample(4, 32, 0)
    clean, _, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=8).sample(4, 32, 0)
    assert not torch.equal(blur, clean)
    assert float(psnr_batch(blur, clean).min()) > 20  # compressed, not garbled
    # JPEG decodes to 8-bit levels
    torch.testing.assert_close(blur * 255, (blur * 255).round(), atol=1e-3, rtol=0)


def test_filters_reject_static_patches_but_still_fill_the_batch() -> None:
    still = RawSequence(
        name="still",
        frames=[np.full((H, W, 3), 120, np.uint8)] * 12,
        numbers=list(range(1, 13)),
        paths=[],
    )
    s = DeviceRawSampler([still], _params(max_blur_psnr=30.0, max_tries=3), "cpu")
    blur, sharp, rejected = s.sample(4, 16, step=0)
    assert blur.shape[0] == 4 and rejected == 2 * 10  # two over-drawn rounds of 10, all refused
    flicker = _flicker()
    moving = DeviceRawSampler([flicker], _params(max_blur_psnr=30.0), "cpu")
    assert moving.sample(4, 16, step=0)[2] == 0  # every average is far from its centre frame


def test_still_share_shows_the_centre_frame_as_input() -> None:
    flicker = _flicker()
    blur, sharp, _ = DeviceRawSampler([flicker], _params(still_fraction=1.0), "cpu").sample(
        6, 16, 0
    )
    torch.testing.assert_close(blur, sharp)
    blur, sharp, _ = DeviceRawSampler([flicker], _params(still_fraction=0.5), "cpu").sample(
        40, 16, 0
    )
    same = int((blur - sharp).abs().flatten(1).amax(1).eq(0).sum())
    assert 8 <= same <= 32
    blur, sharp, _ = DeviceRawSampler([flicker], _params(), "cpu").sample(6, 16, 0)
    assert bool((blur - sharp).abs().flatten(1).amax(1).gt(0.05).all())


def test_still_samples_come_from_any_textured_window_not_only_moving_ones() -> None:
    # Three clips: flat (refused by the flat-patch filter), textured but not moving (refused by
    # the blur filter), noise (passes both). A still sample skips the blur filter as the
    # workers' do, so it comes from the standing clip as often as from the noise.
    flat = RawSequence(
        name="flat",
        frames=[np.full((H, W, 3), 120, np.uint8)] * 12,
        numbers=list(range(1, 13)),
        paths=[],
    )
    standing = _coded_sequence()
    standing.frames = [standing.frames[5]] * len(standing.frames)  # red 40 in every frame
    p = _params(sharpness_threshold=0.02, max_blur_psnr=30.0, still_fraction=1.0)
    s = DeviceRawSampler([flat, standing, _flicker()], p, "cpu", seed=3)
    blur, sharp, _ = s.sample(60, 16, step=0)
    torch.testing.assert_close(blur, sharp)
    red = sharp[:, 0].flatten(1)
    from_standing = int((red - 40 / 255).abs().amax(1).lt(1e-6).sum())
    from_flat = int(sharp.flatten(1).std(1).lt(1e-6).sum())
    assert from_flat == 0
    assert 18 <= from_standing <= 42  # half of 60; before, none (they never pass the blur filter)
    # mixed with moving samples: those still pass the blur filter, the still ones need not
    p = _params(sharpness_threshold=0.02, max_blur_psnr=30.0, still_fraction=0.5)
    blur, sharp, rejected = DeviceRawSampler([flat, standing, _flicker()], p, "cpu").sample(
        60, 16, step=1
    )
    still = (blur - sharp).abs().flatten(1).amax(1).eq(0)
    assert 15 <= int(still.sum()) <= 45
    assert bool(psnr_batch(blur[~still], sharp[~still]).le(30.0).all())
    assert int((sharp[still, 0].flatten(1) - 40 / 255).abs().amax(1).lt(1e-6).sum()) > 0
    assert rejected > 0  # flat and standing candidates refused for the moving slots


def test_noise_has_the_asked_strength_and_stays_in_range() -> None:
    p = _params(noise_prob=1.0, noise_sigma=(0.05, 0.05), poisson_prob=0.0)
    s = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=5)
    clean = DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=5)
    noisy_b, _, _ = s.sample(8, 32, step=1)
    clean_b, _, _ = clean.sample(8, 32, step=1)
    assert noisy_b.min() >= 0 and noisy_b.max() <= 1
    d = (noisy_b - clean_b)[clean_b.gt(0.2) & clean_b.lt(0.8)]
    assert float(d.std()) == pytest.approx(0.05, rel=0.1)
    # each sample draws its own strength from the range, as a worker's sample does
    p = _params(noise_prob=1.0, noise_sigma=(0.0, 0.1), poisson_prob=0.0)
    noisy_b, _, _ = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=5).sample(16, 32, 1)
    clean_b, _, _ = clean.sample(16, 32, step=1)
    mid = clean_b.gt(0.2) & clean_b.lt(0.8)
    stds = [float((n - c)[m].std()) for n, c, m in zip(noisy_b, clean_b, mid, strict=True)]
    assert max(stds) > 2 * min(stds) and max(stds) < 0.11


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no raw window"):
        DeviceRawSampler([_coded_sequence(4)], _params(), "cpu")
    s = DeviceRawSampler([_coded_sequence()], _params(), "cpu")
    with pytest.raises(ValueError, match="too small"):
        s.sample(2, 128, step=0)
    with pytest.raises(ValueError, match="n >= 1"):
        s.sample(0, 16, step=0)
    # crops a little smaller than the patch are reflect-padded, as the workers do
    assert s.sample(2, 64, step=0)[0].shape == (2, 3, 64, 64)


def test_command_line_times_both_paths(tmp_path, capsys) -> None:
    import cv2

    from training.device_data import main

    rng = np.random.default_rng(1)
    for i in range(1, 15):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), rng.integers(0, 256, (24, 32, 3), np.uint8))
    main(
        [
            str(tmp_path),
            "--device",
            "cpu",
            "--last",
            "14",
            "--patch",
            "16",
            "--batch",
            "2",
            "--steps",
            "2",
            "--worker-samples",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert out.startswith("14 frames (0 MB) on cpu; 16 px raw patches: device sampler ")
    assert "one worker" in out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--config", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--patch", "0"], "--patch must be >= 16, got 0"),
        (["--batch", "0"], "--batch must be >= 1, got 0"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--worker-samples", "0"], "--worker-samples must be >= 1, got 0"),
        (["--first", "0"], "--first must be >= 1, got 0"),
        (["--first", "30", "--last", "1"], "--last must be >= 30, got 1"),
        (["--device", "bogus"], "--device bogus: not a torch device"),
        # Torch knows these names: meta was "not an accelerator" in a traceback, xpu "Torch
        # not compiled with XPU enabled".
        (["--device", "meta"], "--device meta: meta is not a device training runs on (cpu, "),
        (["--device", "xpu"], "--device xpu: xpu is not a device training runs on (cpu, "),
        # train's words, less its "device: " prefix (the flag is named already)
        (["--device", "mps"], "--device mps: mps asked for, but no MPS device is available"),
    ],
)
def test_command_line_refuses_bad_values_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    from training.device_data import main

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    # Refused before any frame is read: an empty folder must not matter.
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_command_line_says_when_the_frames_do_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    from training.device_data import main

    for i in range(1, 4):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.zeros((24, 32, 3), np.uint8))
    # "auto" is resolved as train resolves it: the sampler itself takes no such device.
    for device in ("cpu", "auto"):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path), "--device", device, "--patch", "16"])
        # argparse's own form, naming the folder: not pytest's or __main__.py's name.
        said = str(exc.value)
        assert said.startswith(f"python -m training.device_data: error: {tmp_path}: no raw window")
        assert "3 frames" in said


def test_windows_never_span_a_gap_in_the_frame_numbers() -> None:
    # A dropped (corrupt or held-out) frame splits the clip: frames 1-10 then 40-49. Red is
    # 5 x the frame number, so a window across the gap would average to far off its centre.
    yy, xx = np.mgrid[0:H, 0:W]
    numbers = list(range(1, 11)) + list(range(40, 50))
    frames = [
        np.stack([np.full((H, W), 5 * k), yy * 5, xx * 5], axis=-1).astype(np.uint8)
        for k in numbers
    ]
    seq = RawSequence(name="gap", frames=frames, numbers=numbers, paths=[])
    blur, sharp, _ = DeviceRawSampler([seq], _params(), "cpu", seed=1).sample(40, 32, step=0)
    torch.testing.assert_close(blur[:, 0], sharp[:, 0], atol=1e-6, rtol=0)
    centre = (sharp[:, 0, 0, 0] * 255 / 5).round()
    assert set(centre.tolist()) <= set(range(3, 9)) | set(range(42, 48))


def test_ranks_draw_different_batches() -> None:
    p = _params(linear_fraction=0.5)
    seq = _coded_sequence()
    a = DeviceRawSampler([seq], p, "cpu", seed=4, rank=0).sample(6, 32, step=3)
    b = DeviceRawSampler([seq], p, "cpu", seed=4, rank=1).sample(6, 32, step=3)
    c = DeviceRawSampler([seq], p, "cpu", seed=5, rank=0).sample(6, 32, step=3)
    assert not torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_small_crops_are_padded_as_the_workers_pad_them() -> None:
    from training.data import _fit as worker_fit

    # 64 px patches from 40x48 frames: the crop is the whole frame, reflect-padded (no edge repeat)
    _, sharp, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu").sample(3, 64, step=0)
    for s in sharp:
        crop = s[:, :H, :W].permute(1, 2, 0).numpy()
        want = worker_fit(np.ascontiguousarray(crop), 64)
        np.testing.assert_allclose(s.permute(1, 2, 0).numpy(), want, atol=1e-6)
    # 44 px: wide enough, too short: only the rows are padded
    _, sharp, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu").sample(3, 44, step=0)
    assert sharp.shape == (3, 3, 44, 44)
    for s in sharp:
        crop = np.ascontiguousarray(s[:, :H].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(s.permute(1, 2, 0).numpy(), worker_fit(crop, 44), atol=1e-6)


def test_a_sequence_without_frames_is_left_out() -> None:
    # a raw folder whose training range decoded to nothing (all frames corrupt or held out)
    empty = RawSequence(name="empty", frames=[], numbers=[], paths=[])
    s = DeviceRawSampler([empty, _coded_sequence()], _params(), "cpu", seed=2)
    blur, sharp, _ = s.sample(6, 32, step=0)
    assert blur.shape == (6, 3, 32, 32) and s.nbytes == 20 * 3 * H * W
    torch.testing.assert_close(blur, sharp, atol=1e-6, rtol=0)  # the coded clip's centres


def test_jpeg_uses_the_asked_quality() -> None:
    from training.data import jpeg_compress

    p = _params(jpeg_prob=1.0, jpeg_quality=(30, 30))
    blur, _, _ = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=8).sample(4, 32, 0)
    clean, _, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=8).sample(4, 32, 0)
    for b, c in zip(blur, clean, strict=True):
        want = jpeg_compress(np.ascontiguousarray(c.permute(1, 2, 0).numpy()), 30)
        np.testing.assert_allclose(b.permute(1, 2, 0).numpy(), want, atol=1e-6)


def test_shot_noise_counts_photons_at_the_drawn_peak() -> None:
    p = _params(noise_prob=1.0, noise_sigma=(0.0, 0.0), poisson_prob=1.0, poisson_peak=(20, 20))
    noisy, _, _ = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=5).sample(8, 32, step=1)
    clean, _, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=5).sample(
        8, 32, step=1
    )
    counts = noisy * 20  # Poisson counts at a peak of 20 photons: whole numbers
    torch.testing.assert_close(counts, counts.round(), atol=1e-4, rtol=0)
    assert not torch.equal(noisy, clean)
    # unbiased: the mean level stays the clean one; the variance is level / peak
    assert float((noisy - clean).mean()) == pytest.approx(0.0, abs=0.01)
    mid = clean.gt(0.3) & clean.lt(0.7)
    want = float((clean[mid] / 20).mean().sqrt())
    assert float((noisy - clean)[mid].std()) == pytest.approx(want, rel=0.15)


def _layout(x: Tensor) -> tuple[int, ...]:
    """Which way the coded rows (green) and columns (blue) run in a ``(3, P, P)`` patch: one of
    the 8 flipped and rotated forms."""
    g, b = x[1], x[2]
    return tuple(int(torch.sign(c[i, j] - c[0, 0])) for c in (g, b) for i, j in ((1, 0), (0, 1)))


def test_every_window_crop_and_sequence_can_be_drawn() -> None:
    # an off-by-one in a draw would never show the last window start or crop position
    shifted = _coded_sequence()
    shifted.frames = [f.copy() for f in shifted.frames]
    for f in shifted.frames:
        f[..., 0] += 4  # red 8 i + 4: this clip's centres read as i + 0.5
    s = DeviceRawSampler([_coded_sequence(), shifted], _params(raw_windows=(5,)), "cpu", seed=3)
    _, sharp, _ = s.sample(400, 32, step=0)
    centre = sharp[:, 0, 0, 0] * 255 / 8
    second = (centre - centre.floor() - 0.5).abs() < 1e-3
    assert set(centre[~second].round().int().tolist()) == set(range(2, 18))
    assert set((centre[second] - 0.5).round().int().tolist()) == set(range(2, 18))
    ys = (sharp[:, 1, 0, 0] * 255 / 5).round().int()
    xs = (sharp[:, 2, 0, 0] * 255 / 5).round().int()
    assert set(ys.tolist()) == set(range(H - 32 + 1)) and set(xs.tolist()) == set(range(W - 32 + 1))


def test_augmentation_reaches_all_eight_forms() -> None:
    s = DeviceRawSampler([_coded_sequence()], _params(augment=True), "cpu", seed=6)
    blur, sharp, _ = s.sample(96, 32, step=3)
    forms = {_layout(x) for x in sharp}
    assert len(forms) == 8
    assert all(_layout(b) == _layout(x) for b, x in zip(blur, sharp, strict=True))


def test_blur_and_sharp_stay_paired_across_draw_rounds() -> None:
    # Only every 4th frame has texture, so a quarter of the windows pass the flat-patch filter
    # and the batch fills over several rounds of draws; red codes the frame number.
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(24):
        g, b = (yy * 5, xx * 5) if i % 4 == 0 else (np.zeros((H, W)), np.zeros((H, W)))
        frames.append(np.stack([np.full((H, W), 8 * i), g, b], axis=-1).astype(np.uint8))
    seq = RawSequence(name="sparse", frames=frames, numbers=list(range(1, 25)), paths=[])
    p = _params(raw_windows=(5,), sharpness_threshold=0.02)
    blur, sharp, rejected = DeviceRawSampler([seq], p, "cpu", seed=1).sample(40, 32, step=0)
    assert rejected > 40  # more than one round was drawn
    assert bool(sharpness_batch(sharp).ge(0.02).all())
    # the plain mean of a centred window of the red ramp is its centre frame's red
    torch.testing.assert_close(blur[:, 0], sharp[:, 0], atol=1e-6, rtol=0)


def test_the_flat_patch_filter_looks_at_the_sharp_frame() -> None:
    # Flat grey even frames, noise odd ones: a window centred on a flat frame averages to a
    # textured blur, but its sharp target is flat and is refused, as in the workers.
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if i % 2
        else np.full((H, W, 3), 120, np.uint8)
        for i in range(20)
    ]
    seq = RawSequence(name="alternate", frames=frames, numbers=list(range(1, 21)), paths=[])
    p = _params(raw_windows=(5,), sharpness_threshold=0.02)
    _, sharp, rejected = DeviceRawSampler([seq], p, "cpu", seed=2).sample(20, 16, step=0)
    assert rejected > 0 and bool(sharpness_batch(sharp).ge(0.02).all())
    # with the filter off (threshold 0) nothing is refused, not even black frames (a fade out),
    # whose sharpness is exactly 0
    flat = RawSequence(
        name="black",
        frames=[np.zeros((H, W, 3), np.uint8)] * 12,
        numbers=list(range(1, 13)),
        paths=[],
    )
    assert DeviceRawSampler([flat], _params(), "cpu").sample(4, 16, step=0)[2] == 0


def test_noise_falls_only_on_the_samples_that_draw_it() -> None:
    clean, _, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=5).sample(32, 32, 1)
    for kw in (
        dict(noise_prob=0.5, noise_sigma=(0.05, 0.05), poisson_prob=0.0),
        dict(noise_prob=1.0, noise_sigma=(0.0, 0.0), poisson_prob=0.5, poisson_peak=(20, 20)),
    ):
        p = _params(**kw)
        noisy, _, _ = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=5).sample(32, 32, 1)
        untouched = (noisy - clean).flatten(1).abs().amax(1).eq(0)
        assert 4 <= int(untouched.sum()) <= 28, kw


def test_noise_is_fresh_at_every_step() -> None:
    # the same noise field at every step would be a fixed pattern the student could learn
    p = _params(noise_prob=1.0, noise_sigma=(0.05, 0.05), poisson_prob=0.0)
    residuals = []
    for step in (1, 2):
        noisy, _, _ = DeviceRawSampler([_coded_sequence()], p, "cpu", seed=5).sample(4, 32, step)
        clean, _, _ = DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=5).sample(
            4, 32, step
        )
        residuals.append((noisy - clean).flatten())
    corr = torch.corrcoef(torch.stack(residuals))[0, 1]
    assert abs(float(corr)) < 0.2


def test_no_retries_still_fills_the_batch() -> None:
    # max_tries 0 means one draw, taken as it is (the workers' max(1, max_tries))
    flat = RawSequence(
        name="flat",
        frames=[np.full((H, W, 3), 120, np.uint8)] * 12,
        numbers=list(range(1, 13)),
        paths=[],
    )
    p = _params(max_blur_psnr=30.0, sharpness_threshold=0.02, max_tries=0)
    blur, sharp, rejected = DeviceRawSampler([flat], p, "cpu").sample(3, 16, step=0)
    assert blur.shape == sharp.shape == (3, 3, 16, 16) and rejected == 0


def test_patch_twice_the_frame_is_refused_clearly() -> None:
    # reflect padding needs the pad shorter than the crop: 2 h == patch is already too small
    s = DeviceRawSampler([_coded_sequence()], _params(), "cpu")
    with pytest.raises(ValueError, match="too small"):
        s.sample(1, 2 * H, step=0)
    assert s.sample(1, 2 * H - 1, step=0)[0].shape == (1, 3, 2 * H - 1, 2 * H - 1)


def test_device_draws_are_not_the_workers_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    # Step k of the device stream must not replay worker sample k of the same seed and rank,
    # or the two halves of a batch would share their random choices.
    from training.data import DeblurDataset

    keys: list[object] = []
    real = np.random.default_rng

    def spy(key: object = None) -> np.random.Generator:
        keys.append(key)
        return real(key)

    monkeypatch.setattr(np.random, "default_rng", spy)
    DeviceRawSampler([_coded_sequence()], _params(), "cpu", seed=4, rank=1).sample(2, 16, step=3)
    device = real(keys[0]).random(8)
    ds = DeblurDataset(raw=[_coded_sequence()], params=_params(), patch=16, seed=4, rank=1)
    assert not np.array_equal(device, ds.rng_for(3).random(8))


def test_plain_average_matches_temporal_average_off_a_ramp() -> None:
    # Red i^2 is no straight ramp, so the window's mean is not its centre (nor its median)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = [
        np.stack([np.full((H, W), i * i), yy * 5, xx * 5], axis=-1).astype(np.uint8)
        for i in range(16)
    ]
    seq = RawSequence(name="squares", frames=frames, numbers=list(range(1, 17)), paths=[])
    blur, sharp, _ = DeviceRawSampler([seq], _params(raw_windows=(5,)), "cpu", seed=2).sample(
        6, 32, step=0
    )
    for b, c in zip(blur, sharp, strict=True):
        i = round(float(c[0, 0, 0] * 255) ** 0.5)
        y, x = round(float(c[1, 0, 0]) * 255 / 5), round(float(c[2, 0, 0]) * 255 / 5)
        crops = [f[y : y + 32, x : x + 32] for f in frames[i - 2 : i + 3]]
        want = temporal_average(crops, linear=False)
        np.testing.assert_allclose(b.permute(1, 2, 0).numpy(), want, atol=1e-5)
