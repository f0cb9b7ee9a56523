"""Training data: averaging, kernels, PSFs, sharpness filter, leakage guard, corrupt files, augmentation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from training.data import (
    DeblurDataset,
    LeakageError,
    RawSequence,
    SkipCounter,
    SynthParams,
    TeacherCache,
    augment_pair,
    blur_with_kernel,
    center_kernel,
    check_leakage,
    content_hash,
    image_signature,
    load_image,
    load_image_u8,
    load_photos,
    make_synthetic_dataset,
    procedural_scene,
    random_psf,
    random_trajectory,
    raw_frame_windows,
    raw_validation_pairs,
    sharpness,
    temporal_average,
    to_uint8,
    trajectory_to_psf,
)

# cv2's bilinear warp (center_kernel's sub-pixel shift) rounds the shift to 1/32 px.
WARP_STEP = 1 / 32


def _com(k: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : k.shape[0], 0 : k.shape[1]]
    return float((k * ys).sum() / k.sum()), float((k * xs).sum() / k.sum())


def test_temporal_average_plain_and_linear() -> None:
    black = np.zeros((4, 4, 3), np.float32)
    white = np.ones((4, 4, 3), np.float32)
    assert np.allclose(temporal_average([black, white], linear=False), 0.5)
    assert np.allclose(
        temporal_average([black, white], linear=True, gamma=2.2), 0.5 ** (1 / 2.2), atol=1e-6
    )
    u8 = [np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2, 3), np.uint8)]
    assert np.allclose(temporal_average(u8, linear=False), 0.5)
    same = [np.full((2, 2, 3), 0.3, np.float32)] * 3
    assert np.allclose(temporal_average(same, linear=True), 0.3, atol=1e-6)


def test_raw_frame_windows_stay_inside_the_range(tmp_path: Path) -> None:
    for i in range(1, 31):
        cv2.imwrite(str(tmp_path / f"{i:06d}.png"), np.full((4, 4, 3), i, np.uint8))
    wins = raw_frame_windows(tmp_path, first=1, last=20, sizes=(7, 9))
    assert len(wins) == (20 - 7 + 1) + (20 - 9 + 1)
    for paths, centre in wins:
        numbers = [int(p.stem) for p in paths]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert 1 <= numbers[0] and numbers[-1] <= 20
        assert centre == numbers[len(numbers) // 2]
    val = raw_frame_windows(tmp_path, first=21, last=30, sizes=(7,))
    assert all(int(p.stem) >= 21 for paths, _ in val for p in paths)


def test_raw_frames_without_zero_padding_keep_time_order(tmp_path: Path) -> None:
    # 1.png .. 30.png sort as text 1, 10, 11, ..., 2, 20, ...: windows would average frames out
    # of time order, and frame 21-30 (held out here) would land in "training" positions.
    for i in range(1, 31):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 4, 3), i, np.uint8))
    for paths, centre in raw_frame_windows(tmp_path, first=1, last=20, sizes=(7,)):
        numbers = [int(p.stem) for p in paths]
        assert numbers == list(range(centre - 3, centre + 4))
        assert numbers[-1] <= 20
    seq = RawSequence.load(tmp_path, first=21, last=30)
    assert [int(p.stem) for p in seq.paths] == list(range(21, 31))
    assert [int(f[0, 0, 0]) for f in seq.frames] == list(range(21, 31))


def test_center_kernel_moves_centre_of_mass_to_centre() -> None:
    k = np.zeros((15, 15))
    k[2, 3] = 1.0
    k[2, 6] = 3.0
    c = center_kernel(k)
    assert c.shape[0] % 2 == 1 and c.shape[1] % 2 == 1
    assert c.sum() == pytest.approx(1.0, abs=1e-6)
    cy, cx = _com(c)
    assert cy == pytest.approx(c.shape[0] // 2, abs=1e-3)
    assert cx == pytest.approx(c.shape[1] // 2, abs=1e-3)


def test_blur_with_centred_kernel_does_not_shift() -> None:
    img = np.zeros((41, 41, 3), np.float32)
    img[20, 20] = 1.0
    k = np.zeros((9, 9))
    k[1, 1:8] = 1.0  # off-centre line
    out = blur_with_kernel(img, center_kernel(k))
    cy, cx = _com(out[:, :, 0])
    assert (cy, cx) == (pytest.approx(20, abs=1e-3), pytest.approx(20, abs=1e-3))
    # A one-hot kernel right of centre is a convolution: the image moves right, not left.
    shift = np.zeros((3, 3), np.float32)
    shift[1, 2] = 1
    assert np.argwhere(blur_with_kernel(img, shift)[:, :, 0] > 0.5).tolist() == [[20, 21]]


@pytest.mark.parametrize("seed", range(6))
def test_trajectory_psf_sums_to_one_within_size(seed: int) -> None:
    rng = np.random.default_rng(seed)
    traj = random_trajectory(rng, length=40.0, n_steps=64)
    assert np.abs(np.diff(traj)).sum() == pytest.approx(40.0, rel=1e-6)
    psf = trajectory_to_psf(traj, size=21, exposure=0.8)
    assert psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert max(psf.shape) <= 21 and (psf >= 0).all()
    cy, cx = _com(psf)
    assert (cy, cx) == (
        pytest.approx(psf.shape[0] // 2, abs=0.51),
        pytest.approx(psf.shape[1] // 2, abs=0.51),
    )
    p = random_psf(rng, max_size=15, exposure=(0.5, 1.0))
    assert max(p.shape) <= 15 and p.sum() == pytest.approx(1.0, abs=1e-5)


def test_time_centred_psf_puts_mid_exposure_at_the_centre() -> None:
    # An accelerating stroke along x (positions t^2): its middle sample sits 2 px behind the
    # centre of mass, so the two centrings give targets 2 px apart.
    traj = np.array([0.0, 1.0, 4.0, 9.0, 16.0]) + 0j
    by_mass = trajectory_to_psf(traj, size=41)
    by_time = trajectory_to_psf(traj, size=41, centre="time")
    assert by_time.sum() == pytest.approx(1.0, abs=1e-5) and by_time.shape == (41, 41)
    assert by_time[20, 20] == pytest.approx(0.2, abs=1e-4)  # the middle sample, at the centre
    assert _com(by_time) == (pytest.approx(20, abs=1e-3), pytest.approx(22, abs=1e-3))
    my, mx = (n // 2 for n in by_mass.shape)  # mass centring may trim empty rows
    assert _com(by_mass) == (pytest.approx(my, abs=0.51), pytest.approx(mx, abs=0.51))
    # The convention reaches the training samples through the config.
    rng = np.random.default_rng(0)
    p = random_psf(rng, max_size=31, exposure=(1.0, 1.0), centre="time")
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="centre"):
        trajectory_to_psf(traj, size=41, centre="middle")


def _textured(h: int = 96, w: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (h, w, 3))).astype(np.uint8)


def test_sharpness_filter_rejects_flat_patches_and_counts() -> None:
    flat = np.full((96, 96, 3), 128, np.uint8)
    assert sharpness(flat) == 0.0 and sharpness(_textured()) > 0.1
    params = SynthParams(
        noise_prob=0, jpeg_prob=0, sharpness_threshold=0.05, max_tries=4, psf_max_size=5
    )
    ds = DeblurDataset(photos=[flat], weights=(0, 1, 0), params=params, patch=32)
    item = ds[0]
    assert int(item["rejected"]) == 3  # every try flat; the last is kept so a run never stalls
    ds = DeblurDataset(photos=[_textured()], weights=(0, 1, 0), params=params, patch=32)
    assert int(ds[0]["rejected"]) == 0


def test_leakage_guard_names_overlapping_files(tmp_path: Path) -> None:
    img = _textured(32, 32)
    train_p, eval_p, other_p = tmp_path / "train.png", tmp_path / "eval.png", tmp_path / "other.png"
    cv2.imwrite(str(train_p), img)
    cv2.imwrite(str(eval_p), img)  # the same pixels under another name
    cv2.imwrite(str(other_p), _textured(32, 32, seed=1))
    assert content_hash(train_p) == content_hash(load_image(train_p))
    with pytest.raises(LeakageError) as exc:
        check_leakage([train_p, other_p], [eval_p])
    assert "train.png" in str(exc.value) and "eval.png" in str(exc.value)
    assert "other.png" not in str(exc.value)
    check_leakage([other_p], [eval_p])  # no overlap: passes


def test_leakage_guard_on_arrays_keeps_every_image() -> None:
    # Two images whose abridged str() is the same must not collapse into one entry.
    a = np.zeros((64, 64, 3), np.uint8)
    b = a.copy()
    b[30, 30] = 255
    with pytest.raises(LeakageError, match="image #0"):
        check_leakage([b, a], [b])


def test_leakage_guard_catches_a_slightly_cropped_copy(tmp_path: Path) -> None:
    # ../shared's Lai sharp image manmade_02 is Urban100's img_051 with 3 more rows (and manmade_03
    # img_024 less 6 px a side, re-compressed): different pixels, so no content hash matches.
    rng = np.random.default_rng(3)
    scene = cv2.cvtColor(procedural_scene(rng, 240, 360), cv2.COLOR_RGB2BGR)
    other = cv2.cvtColor(procedural_scene(rng, 240, 360), cv2.COLOR_RGB2BGR)
    eval_p, crop_p, inner_p, other_p = (
        tmp_path / n for n in ("eval.png", "crop.jpg", "inner.jpg", "other.png")
    )
    cv2.imwrite(str(eval_p), scene)
    cv2.imwrite(str(crop_p), scene[:-3], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(inner_p), scene[6:-6, 6:-6], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(other_p), other)
    train = [crop_p, inner_p, other_p]
    check_leakage(train, [eval_p])  # the exact hashes alone see nothing
    sigs = {str(p): image_signature(load_image_u8(p)) for p in train}
    with pytest.raises(LeakageError) as exc:
        check_leakage(
            train,
            [eval_p],
            train_signatures=sigs,
            eval_signatures={str(eval_p): image_signature(load_image_u8(eval_p))},
        )
    msg = str(exc.value)
    assert "crop.jpg" in msg and "inner.jpg" in msg and "eval.png" in msg
    assert "other.png" not in msg


def test_leakage_guard_catches_flipped_and_rotated_copies() -> None:
    from skimage import data as skdata

    from training.data import near_duplicates

    # Training flips and rotates every sample, so such a copy of an evaluation image teaches
    # exactly what the image itself would.
    ev = skdata.astronaut()
    copies = {
        "hflip": ev[:, ::-1],
        "vflip": ev[::-1],
        "rot90": np.rot90(ev),
        "rot180": np.rot90(ev, 2),
        "rot270_hflip_crop": np.rot90(ev, 3)[:, 5:-5][:, ::-1],
    }
    unrelated = {
        "coffee": skdata.coffee(),
        "rocket": skdata.rocket(),
        "chelsea": skdata.chelsea(),
        "camera": np.repeat(skdata.camera()[:, :, None], 3, axis=2),
    }
    train = {
        k: image_signature(np.ascontiguousarray(v)) for k, v in {**copies, **unrelated}.items()
    }
    found = near_duplicates(train, {"astronaut": image_signature(ev)})
    assert sorted(t for t, _, _ in found) == sorted(copies)
    # the evaluation image being the flipped one (a benchmark made from a training photo) too
    found = near_duplicates({"upright": image_signature(ev)}, {"flipped": train["hflip"]})
    assert [t for t, _, _ in found] == ["upright"]


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _cut(img: np.ndarray, top: float, bottom: float, left: float, right: float) -> np.ndarray:
    h, w = img.shape[:2]
    return np.ascontiguousarray(
        img[int(h * top) : h - int(h * bottom), int(w * left) : w - int(w * right)]
    )


def _sky(h: int, w: int, seed: int) -> np.ndarray:
    """A sky: a smooth gradient and faint, soft clouds, next to no detail."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    clouds = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 25)
    img = 230 - 90 * y + 8 * clouds / clouds.std() + rng.normal(0, 1, (h, w)).astype(np.float32)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _field(h: int, w: int, seed: int) -> np.ndarray:
    """Another sky's gradient over a horizon and a field of grass: texture where the sky has none."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    img = 220 - 100 * y + np.zeros((1, w), np.float32)
    grass = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2)
    ground = int(h * 0.75)
    img[ground:] = 110 - 30 * y[ground:] + 25 * (grass / grass.std())[ground:]
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def test_leakage_guard_catches_crops_of_up_to_a_fifth_a_side() -> None:
    from skimage import data as skdata

    from training.data import near_duplicates

    # A crop of 10 or 20 % a side, kept at its size or resized back to the original's, is the
    # evaluation picture at up to 1.67x; so is the evaluation image being such a crop of a photo.
    evals = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(), "rocket": skdata.rocket()}
    train: dict[str, np.ndarray] = {}
    for name, ev in evals.items():
        h, w = ev.shape[:2]
        train[f"{name} 10% a side"] = _cut(ev, 0.1, 0.1, 0.1, 0.1)
        train[f"{name} 20% a side"] = _cut(ev, 0.2, 0.2, 0.2, 0.2)
        train[f"{name} 20% a side, resized back"] = cv2.resize(
            _cut(ev, 0.2, 0.2, 0.2, 0.2), (w, h), interpolation=cv2.INTER_CUBIC
        )
        train[f"{name} 20% off one side, JPEG"] = _jpeg(_cut(ev, 0, 0, 0.2, 0), 75)
        train[f"{name} 15/5/20/0 %, rotated, half size"] = cv2.resize(
            np.rot90(_cut(ev, 0.15, 0.05, 0.2, 0)),
            None,
            fx=0.5,
            fy=0.5,
            interpolation=cv2.INTER_AREA,
        )
    sigs = {k: image_signature(v) for k, v in train.items()}
    found = near_duplicates(sigs, {k: image_signature(v) for k, v in evals.items()})
    assert sorted((t, e) for t, e, _ in found) == sorted((t, t.split()[0]) for t in train)
    # a benchmark image cut from a training photo (Lai's sharp images are crops of Urban100's)
    chelsea = skdata.chelsea()
    benchmark = {
        "chelsea crop": np.ascontiguousarray(np.rot90(_cut(chelsea, 0.2, 0.1, 0.15, 0.2), 3))
    }
    found = near_duplicates(
        {"chelsea": image_signature(chelsea)}, {k: image_signature(v) for k, v in benchmark.items()}
    )
    assert [(t, e) for t, e, _ in found] == [("chelsea", "chelsea crop")]


def test_leakage_guard_keeps_a_margin_on_unrelated_pictures() -> None:
    from skimage import data as skdata

    from training.data import NEAR_DUPLICATE_SCORE, near_duplicates

    # A smooth sky matched a textured field through their shared gradient and horizon (on
    # ../shared a wind farm's sky and an upside-down lion photo came within 0.0001 of the
    # threshold once crops were searched): no two different pictures here may come within 0.1
    # of it, in any of the 8 forms, at any crop the guard searches.
    grey = ("camera", "coins", "moon", "page", "brick", "grass", "gravel", "clock")
    colour = (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
    )
    pictures = {n: np.repeat(getattr(skdata, n)()[:, :, None], 3, axis=2) for n in grey}
    pictures |= {n: getattr(skdata, n)() for n in colour}
    pictures |= {"sky": _sky(300, 450, 0), "field": _field(300, 450, 1)}
    sigs = {k: image_signature(v) for k, v in pictures.items()}
    close = near_duplicates(sigs, sigs, threshold=NEAR_DUPLICATE_SCORE - 0.1)
    assert sorted((t, e, round(s, 3)) for t, e, s in close if t != e) == []
    # each picture is still its own near-duplicate, so the search did look at every one
    assert sorted(t for t, e, _ in close if t == e) == sorted(pictures)


def test_image_signature_takes_16_bit_and_single_channel_arrays() -> None:
    from skimage import data as skdata

    img = skdata.astronaut()
    upright = image_signature(img)
    wide = image_signature(img.astype(np.uint16) * 257)  # a 16-bit copy: was almost all white
    assert np.abs(wide.astype(int) - upright.astype(int)).max() <= 1
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(image_signature(grey[:, :, None]), image_signature(grey))  # raised


def test_leakage_guard_ignores_flat_pages_and_strips() -> None:
    from skimage import data as skdata

    from training.data import near_duplicates

    # Correlation with a flat stretch is 0 / 0, which OpenCV returned as 1.0: photos pasted on a
    # white or black page (a product shot, a scanned print) were refused at 1.000 against
    # unrelated evaluation images. A 10:1 strip's template is a few pixels tall and found a
    # chance match above the threshold among all the positions, scales and forms searched.
    names = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass")
    pictures = {}
    for n in names:
        img = getattr(skdata, n)()
        pictures[n] = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
    train = {}
    for i, (n, img) in enumerate(pictures.items()):
        for value in (0, 255):
            page = np.full((600, 800, 3), value, np.uint8)
            small = cv2.resize(img, (280, 210), interpolation=cv2.INTER_AREA)
            y, x = (0, 0) if i % 2 else (390, 520)  # in a corner: a wide flat stretch beside it
            page[y : y + 210, x : x + 280] = small
            train[f"{n}-on-{value}"] = image_signature(page)
        h, w = img.shape[:2]
        train[f"{n}-strip"] = image_signature(np.ascontiguousarray(img[: max(8, w // 10)]))
    evals = {f"eval-{n}": image_signature(v) for n, v in pictures.items()}
    found = near_duplicates(train, evals)
    unrelated = [(t, e, round(s, 3)) for t, e, s in found if t.split("-")[0] != e[5:]]
    assert unrelated == []
    # Pairs as above reach the full search only now and then (5 of 365 photos on ../shared):
    # the full search itself, an evaluation picture looked for in a white page beside a photo.
    from training.data import NEAR_DUPLICATE_SCORE, _FineSearch

    page = train["astronaut-on-255"]
    for form in range(8):
        score = _FineSearch().score(("e", evals["eval-rocket"]), ("p", page), form, 1.5)
        assert score < NEAR_DUPLICATE_SCORE - 0.2, (form, score)


def test_leakage_guard_compares_gopro_frames_with_evaluation_images(tmp_path: Path) -> None:
    from training.config import load_config
    from training.data import list_frames, make_synthetic_dataset
    from training.train import build_data

    # GoPro's frames are decoded lazily and were compared by their file bytes only: a held-out
    # raw frame re-encoded into a GoPro training sequence passed.
    d = make_synthetic_dataset(tmp_path / "synth", 2, frames=40, size=(160, 120))
    held_out = cv2.imread(str(list_frames(d["raw"] / "seq_01")[35]))  # smoke.yaml: 31-40 held out
    rng = np.random.default_rng(0)
    seq = tmp_path / "GOPRO_Large" / "train" / "GOPR_x"
    for sub in ("blur", "sharp"):
        (seq / sub).mkdir(parents=True)
        for i in (1, 2):
            cv2.imwrite(str(seq / sub / f"{i:06d}.png"), procedural_scene(rng, 120, 160))
    cv2.imwrite(str(seq / "sharp" / "000002.png"), _jpeg(held_out, 90))
    (seq / "blur" / "000003.png").write_bytes(b"not an image")
    raws = ",".join(str(d["raw"] / f"seq_{i:02d}") for i in range(2))
    cfg = load_config(
        Path(__file__).resolve().parent.parent / "training" / "configs" / "smoke.yaml",
        [
            f"--out_dir={tmp_path / 'run'}",
            f"--data.raw_dirs=[{raws}]",
            f"--data.photo_dirs=[{d['photos']}]",
            f"--data.eval_dirs=[{d['eval']}]",
            f"--data.gopro_dir={tmp_path / 'GOPRO_Large'}",
            "--data.gopro_weight=0.2",
        ],
    )
    with pytest.raises(LeakageError, match=r"GOPR_x/sharp/000002.png  ==  .*seq_01/000036.png"):
        build_data(cfg)
    from training.data import file_signatures

    # an unreadable file gets no thumbnail, every other frame does
    sigs = file_signatures(sorted(seq.rglob("*.png")), workers=2)
    assert len(sigs) == 4 and all(s.shape == (96, 128) for s in sigs.values())


def test_raw_frames_with_a_missing_or_repeated_number_are_refused(tmp_path: Path) -> None:
    # Frames are numbered by position: without 000010.png, frames 9 and 11 would pass for
    # neighbours and every held-out frame would move one place into the training range.
    gap, twice = tmp_path / "gap", tmp_path / "twice"
    for folder in (gap, twice):
        folder.mkdir()
        for i in range(1, 41):
            if folder is gap and i == 10:
                continue
            cv2.imwrite(str(folder / f"{i:06d}.png"), np.full((4, 4, 3), i, np.uint8))
    cv2.imwrite(str(twice / "frame_3.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"gap: frame 10 is missing between 000009.png"):
        RawSequence.load(gap, first=1, last=30)
    with pytest.raises(ValueError, match=r"gap: frame 10 is missing"):
        raw_frame_windows(gap, first=31, last=40, sizes=(7,))
    with pytest.raises(ValueError, match=r"twice: 000003.png and frame_3.jpg are both frame 3"):
        RawSequence.load(twice, first=31, last=40)
    (twice / "frame_3.jpg").unlink()
    seq = RawSequence.load(twice, first=31, last=40)
    assert seq.numbers == list(range(31, 41))
    assert [int(f[0, 0, 0]) for f in seq.frames] == list(range(31, 41))


def test_corrupt_file_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cv2.imwrite(str(tmp_path / "good.png"), _textured(64, 64))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.jpg").write_bytes(b"")
    skips = SkipCounter()
    with caplog.at_level(logging.WARNING):
        images, paths = load_photos([tmp_path], skips=skips)
        assert load_image(tmp_path / "bad.png") is None
    assert [p.name for p in paths] == ["good.png"] and len(images) == 1
    assert sorted(Path(p).name for p in skips.corrupt_files) == ["bad.png", "empty.jpg"]
    assert "bad.png" in caplog.text


def test_augmentation_keeps_pairs_aligned() -> None:
    a = _textured(16, 24).astype(np.float32) / 255
    b = a + 0.25
    for seed in range(8):
        out_a, out_b = augment_pair([a, b], np.random.default_rng(seed))
        assert np.allclose(out_b - out_a, 0.25)
    shapes = {augment_pair([a], np.random.default_rng(s))[0].shape for s in range(16)}
    assert shapes == {(16, 24, 3), (24, 16, 3)}  # 90-degree rotations happen


def test_dataset_is_a_pure_function_of_index_and_makes_real_blur(tmp_path: Path) -> None:
    dirs = make_synthetic_dataset(tmp_path, 1, frames=20, size=(80, 64), n_photos=2)
    seq = RawSequence.load(dirs["raw"] / "seq_00", first=1, last=15)
    assert seq.numbers == list(range(1, 16))
    frames = seq.frames[:7]
    blur = temporal_average(frames, linear=False)
    assert np.abs(blur - frames[3] / 255.0).mean() > 0.005  # the content moves: averaging blurs
    photos, _ = load_photos([dirs["photos"]])
    ds = DeblurDataset(raw=[seq], photos=photos, weights=(0.5, 0.5, 0), patch=48, seed=3)
    a, b = ds[11], ds[11]
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in ("blur", "sharp"))
    assert not np.array_equal(ds[12]["blur"].numpy(), a["blur"].numpy())
    assert (
        a["blur"].shape == (3, 48, 48)
        and 0 <= float(a["blur"].min())
        and float(a["blur"].max()) <= 1
    )
    # Training windows never reach past the loaded range (frames 16-20 are held out).
    assert max(s + 13 for s in seq.windows(13)) <= len(seq.frames)


def test_teacher_cache_lookup_and_sample() -> None:
    rng = np.random.default_rng(0)
    blur = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    sharp, teacher = blur[::-1].copy(), (255 - blur)
    cache = TeacherCache(blur, sharp, teacher, [content_hash(b) for b in blur])
    hit = cache.lookup(blur[1].astype(np.float32) / 255)
    assert hit is not None and np.allclose(hit, teacher[1] / 255.0)
    assert cache.lookup(np.zeros((32, 32, 3), np.float32)) is None
    b, s, t = cache.sample(rng, 16)
    assert b.shape == s.shape == t.shape == (16, 16, 3)
    assert np.allclose(t, 1.0 - b, atol=1e-6)  # the three crops come from the same place


def test_barely_blurred_patches_are_rejected() -> None:
    from training.data import DeblurDataset, SynthParams, psnr_np

    # A smooth scene: small shake kernels barely change it, so without the filter many patches
    # come out above 30 dB (nothing to learn), and with it none do.
    rng = np.random.default_rng(0)
    img = cv2.resize((rng.random((12, 12, 3)) * 255).astype(np.uint8), (96, 96))

    def patch_psnrs(max_blur_psnr: float) -> list[float]:
        params = SynthParams(
            max_blur_psnr=max_blur_psnr,
            max_tries=50,
            noise_prob=0.0,
            jpeg_prob=0.0,
            sharpness_threshold=0.0,
        )
        ds = DeblurDataset(photos=[img], weights=(0.0, 1.0, 0.0), params=params, patch=32, seed=1)
        items = [ds[i] for i in range(20)]
        return [
            psnr_np(it["blur"].permute(1, 2, 0).numpy(), it["sharp"].permute(1, 2, 0).numpy())
            for it in items
        ]

    assert sum(p > 30.0 for p in patch_psnrs(0.0)) >= 10
    assert max(patch_psnrs(30.0)) <= 30.0


def test_still_samples_show_the_sharp_crop_and_skip_the_blur_filter() -> None:
    from training.data import DeblurDataset, SynthParams

    rng = np.random.default_rng(0)
    img = (rng.random((96, 96, 3)) * 255).astype(np.uint8)

    def items(still: float) -> list[dict]:
        params = SynthParams(
            still_fraction=still, max_blur_psnr=30.0, noise_prob=0.0, jpeg_prob=0.0
        )
        ds = DeblurDataset(photos=[img], weights=(0.0, 1.0, 0.0), params=params, patch=32, seed=1)
        return [ds[i] for i in range(40)]

    same = [bool(torch.equal(it["blur"], it["sharp"])) for it in items(0.25)]
    assert 4 <= sum(same) <= 18  # about a quarter of 40
    every = items(1.0)
    assert all(torch.equal(it["blur"], it["sharp"]) for it in every)
    # a sharp input is far above 30 dB, yet it is taken at once, not rejected and redrawn
    assert all(it["rejected"] == 0 for it in every)
    assert not any(torch.equal(it["blur"], it["sharp"]) for it in items(0.0))


def test_still_scale_softens_still_photo_samples_and_leaves_the_rest() -> None:
    from training.data import DeblurDataset, SynthParams, sharpness

    photos = [make_texture(200, 240, seed=s) for s in range(3)]

    def items(still: float, still_scale: tuple[float, float] | None) -> list[dict]:
        # both photo paths: a drawn PSF and the moving camera
        params = SynthParams(
            still_fraction=still,
            still_scale=still_scale,
            camera_fraction=0.5,
            sharpness_threshold=0.0,
            noise_prob=0.0,
            jpeg_prob=0.0,
        )
        ds = DeblurDataset(photos=photos, weights=(0, 1, 0), params=params, patch=48, seed=2)
        return [ds[i] for i in range(16)]

    def mean_sharpness(its: list[dict]) -> float:
        return float(np.mean([sharpness(it["sharp"].permute(1, 2, 0).numpy()) for it in its]))

    crisp, soft = items(1.0, None), items(1.0, (2.0, 2.0))
    assert all(torch.equal(it["blur"], it["sharp"]) for it in soft)
    # upscaled twice, the still targets hold far less detail per pixel
    assert mean_sharpness(soft) < 0.7 * mean_sharpness(crisp)
    # samples with blur keep photo_scale, and the whole stream stays as it was
    for a, b in zip(items(0.0, None), items(0.0, (2.0, 2.0)), strict=True):
        assert torch.equal(a["blur"], b["blur"]) and torch.equal(a["sharp"], b["sharp"])


def test_render_graphic_is_a_seeded_screen_like_picture() -> None:
    from training.data import render_graphic, sharpness

    a = render_graphic(np.random.default_rng(3), 192)
    assert a.shape == (192, 192, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_graphic(np.random.default_rng(3), 192))
    assert not np.array_equal(a, render_graphic(np.random.default_rng(4), 192))
    # what photos lack, over a few seeds: flat saturated colour (a channel near 255 beside one
    # near 0) and many sharp edges
    pics = [render_graphic(np.random.default_rng(s), 192) for s in range(6)]
    saturated = [((p.max(2) >= 250) & (p.min(2) <= 5)).mean() for p in pics]
    assert max(saturated) > 0.2
    assert all(sharpness(p.astype(np.float32) / 255.0) > 0.02 for p in pics)


def test_graphics_fraction_replaces_photos_with_graphics() -> None:
    from training.data import DeblurDataset, SynthParams

    grey = np.full((160, 160, 3), 128, np.uint8)

    def sharp_patches(share: float) -> list[np.ndarray]:
        params = SynthParams(
            graphics_fraction=share, sharpness_threshold=0.0, noise_prob=0.0, jpeg_prob=0.0
        )
        ds = DeblurDataset(photos=[grey], weights=(0.0, 1.0, 0.0), params=params, patch=32, seed=2)
        return [ds[i]["sharp"].numpy() for i in range(30)]

    def from_photo(x: np.ndarray) -> bool:
        return bool(np.allclose(x, 128 / 255, atol=1e-6))

    assert all(from_photo(x) for x in sharp_patches(0.0))
    assert not any(from_photo(x) for x in sharp_patches(1.0))
    half = sum(from_photo(x) for x in sharp_patches(0.5))
    assert 5 <= half <= 25


def test_window_blur_stats_measures_motion_per_range(tmp_path: Path, capsys) -> None:
    from training.data import main, window_blur_stats

    still = [np.full((24, 32, 3), 90, np.uint8)] * 10
    rng = np.random.default_rng(0)
    moving = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(10)]
    seq = RawSequence(name="s", frames=still + moving, numbers=list(range(1, 21)), paths=[])
    rows = window_blur_stats(seq, [3], ranges={"a": (1, 10), "b": (11, 20)}, step=1)
    assert [(r["range"], r["windows"]) for r in rows] == [("a 1-10", 8), ("b 11-20", 8)]
    assert rows[0]["mean_db"] == 100.0 and rows[1]["mean_db"] < 15  # still vs noise frames
    # the command line, on frames written to disk
    for i, f in enumerate(still + moving, start=1):
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), f)
    main(
        [
            "--blur-stats",
            str(tmp_path),
            "--windows",
            "3,5",
            "--train",
            "1,10",
            "--held-out",
            "11,20",
        ]
    )
    table = capsys.readouterr().out
    assert (
        "| 3 | train 1-10 | 2 | 100.00 |" in table
    )  # every 4th of 8 windows and "| 5 | held-out 11-20 |" in table
    with pytest.raises(SystemExit):
        main(["--blur-stats", str(tmp_path), "--windows", "4"])


def make_texture(h: int, w: int, *, seed: int) -> np.ndarray:
    """A procedural scene with edges at every scale (uint8 RGB), as the demo material has."""
    from training.data import procedural_scene

    return procedural_scene(np.random.default_rng(seed), h, w)


def test_camera_path_centre_frame_is_identity_and_speed_is_per_frame() -> None:
    from training.data import camera_path

    rng = np.random.default_rng(3)
    maps = camera_path(rng, frames=9, speed=(2.0, 2.0), turn=0.0, zoom=0.0, curve=0.0)
    assert maps.shape == (9, 2, 3)
    assert np.array_equal(maps[4], [[1, 0, 0], [0, 1, 0]])
    steps = np.linalg.norm(np.diff(maps[:, :, 2], axis=0), axis=1)
    assert np.allclose(steps, 2.0)  # constant speed along a straight line without curve
    assert np.allclose(maps[:, :, :2], np.eye(2))  # no roll or zoom asked for
    bent = camera_path(rng, frames=13, speed=(1.0, 3.0), turn=0.5, zoom=0.01)
    assert not np.allclose(bent[0, :, :2], np.eye(2))  # roll and zoom change the linear part
    for bad in (0, 8):
        with pytest.raises(ValueError, match="odd"):
            camera_path(rng, frames=bad, speed=(1.0, 2.0))
    with pytest.raises(ValueError, match="speed"):
        camera_path(rng, frames=7, speed=(3.0, 1.0))


def test_render_camera_motion_shifts_the_scene_exactly_by_whole_pixels() -> None:
    from training.data import camera_path_margin, render_camera_motion

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)
    maps = np.zeros((3, 2, 3))
    maps[:, :, :2] = np.eye(2)
    maps[:, 0, 2] = [-2.0, 0.0, 2.0]  # frame k sees the scene 2k px to the right
    frames = render_camera_motion(img, maps, centre=(40, 45), size=32)
    assert [f.shape for f in frames] == [(32, 32, 3)] * 3 and frames[0].dtype == np.uint8
    assert np.array_equal(frames[1], img[24:56, 29:61])  # the centre frame is an exact crop
    assert np.array_equal(frames[0], img[24:56, 27:59])
    assert np.array_equal(frames[2], img[24:56, 31:63])
    assert camera_path_margin(maps, 32) == 2 + 2
    with pytest.raises(ValueError, match=r"\(N, 2, 3\)"):
        render_camera_motion(img, maps[:, :, :2], centre=(40, 45), size=32)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render_camera_motion(img[..., 0], maps, centre=(40, 45), size=32)


def test_upscaled_photo_samples_stay_in_range() -> None:
    # photo_scale above 1 upscales float crops with cubic interpolation, whose ringing made
    # sharp targets of -0.08..1.09; validation (metrics refuse such targets) then crashed.
    rng = np.random.default_rng(0)
    photos = [procedural_scene(rng, 240, 320) for _ in range(2)]
    params = SynthParams(photo_scale=(1.5, 2.0))
    ds = DeblurDataset(photos=photos, weights=(0, 1, 0), params=params, patch=64, seed=0)
    for i in range(6):
        item = ds[i]
        for key in ("blur", "sharp"):
            t = item[key]
            assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0, (i, key)


def test_camera_motion_photo_samples_blur_more_with_speed() -> None:
    from training.data import psnr_np

    photos = [make_texture(200, 240, seed=s) for s in range(3)]

    def mean_psnr(speed: tuple[float, float]) -> float:
        params = SynthParams(
            camera_fraction=1.0,
            camera_speed=speed,
            camera_turn=0.0,
            camera_zoom=0.0,
            noise_prob=0,
            jpeg_prob=0,
            max_tries=1,
        )
        ds = DeblurDataset(photos=photos, weights=(0, 1, 0), params=params, patch=64, seed=1)
        items = [ds[i] for i in range(12)]
        for it in items:
            assert it["blur"].shape == it["sharp"].shape == (3, 64, 64) and it["source"] == 1
        return float(np.mean([psnr_np(it["blur"].numpy(), it["sharp"].numpy()) for it in items]))

    still, slow, fast = mean_psnr((0.0, 0.0)), mean_psnr((0.5, 1.0)), mean_psnr((3.0, 4.0))
    assert still == 100.0  # a still camera averages identical frames: no blur at all
    assert slow > fast + 3.0
    # a sample is a pure function of its index, whichever path made it
    params = SynthParams(camera_fraction=0.5, noise_prob=0, jpeg_prob=0)
    ds = DeblurDataset(photos=photos, weights=(0, 1, 0), params=params, patch=48, seed=2)
    assert all(torch.equal(ds[i]["blur"], ds[i]["blur"]) for i in range(6))


def test_camera_fraction_zero_keeps_the_shake_stream_unchanged() -> None:
    photos = [make_texture(120, 140, seed=9)]
    base = SynthParams(noise_prob=0, jpeg_prob=0)
    a = DeblurDataset(photos=photos, weights=(0, 1, 0), params=base, patch=48, seed=5)
    b = DeblurDataset(
        photos=photos,
        weights=(0, 1, 0),
        params=SynthParams(noise_prob=0, jpeg_prob=0, camera_speed=(2.0, 3.0)),
        patch=48,
        seed=5,
    )
    assert all(torch.equal(a[i]["blur"], b[i]["blur"]) for i in range(5))


def test_camera_config_is_checked_and_reaches_the_synthesiser() -> None:
    from training.config import ConfigError, load_config
    from training.train import synth_params

    cfg = load_config(None, ["--data.camera_fraction=0.4", "--data.camera_speed=[1.0, 2.0]"])
    p = synth_params(cfg)
    assert p.camera_fraction == 0.4 and p.camera_speed == (1.0, 2.0)
    assert (p.camera_turn, p.camera_zoom) == (cfg.data.camera_turn, cfg.data.camera_zoom)
    with pytest.raises(ConfigError, match="camera_fraction"):
        load_config(None, ["--data.camera_fraction=1.5"])
    with pytest.raises(ConfigError, match="camera_speed"):
        load_config(None, ["--data.camera_speed=[3.0, 1.0]"])


def test_frame_motion_stats_sees_a_pan(tmp_path: Path, capsys) -> None:
    from training.data import frame_motion_stats, main

    scene = make_texture(120, 200, seed=4)
    still = [scene[20:84, 20:148].copy() for _ in range(6)]
    pan = [scene[20:84, 20 + 3 * k : 148 + 3 * k].copy() for k in range(1, 7)]  # 3 px per frame
    seq = RawSequence(name="s", frames=still + pan, numbers=list(range(1, 13)), paths=[])
    rows = frame_motion_stats(seq, ranges={"still": (1, 6), "pan": (7, 12)}, step=1)
    assert [(r["range"], r["pairs"]) for r in rows] == [("still 1-6", 5), ("pan 7-12", 5)]
    assert rows[0]["median_px"] < 0.3 and abs(rows[1]["median_px"] - 3.0) < 0.6
    for i, f in enumerate(still + pan, start=1):
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    main(["--motion-stats", str(tmp_path), "--train", "1,6", "--held-out", "7,12", "--step", "1"])
    out = capsys.readouterr().out
    assert "| train 1-6 | 5 |" in out and "| held-out 7-12 | 5 |" in out


def test_raw_camera_films_the_clip_with_a_moving_camera() -> None:
    from training.config import ConfigError, load_config
    from training.data import RawSequence, psnr_np
    from training.train import synth_params

    # A still scene from a still camera: the clip alone gives no blur at all.
    scene = make_texture(120, 150, seed=4)
    seq = RawSequence(name="still", frames=[scene] * 9, numbers=list(range(1, 10)), paths=[])

    def items(raw_camera: float, speed: tuple[float, float]) -> list[dict]:
        params = SynthParams(
            raw_windows=(7, 9),
            raw_camera_fraction=raw_camera,
            camera_speed=speed,
            noise_prob=0,
            jpeg_prob=0,
            max_tries=1,
            augment=False,
        )
        ds = DeblurDataset(raw=[seq], weights=(1, 0, 0), params=params, patch=48, seed=3)
        return [ds[i] for i in range(8)]

    def mean_psnr(its: list[dict]) -> float:
        return float(np.mean([psnr_np(it["blur"].numpy(), it["sharp"].numpy()) for it in its]))

    assert mean_psnr(items(0.0, (2.0, 3.0))) == 100.0
    moving = items(1.0, (2.0, 3.0))
    assert mean_psnr(moving) < 30.0
    assert mean_psnr(items(1.0, (0.25, 0.5))) > mean_psnr(moving) + 3.0
    # the target is an exact crop of the centre frame, not a resampled one
    flat = scene.astype(np.float32) / 255.0
    for it in moving:
        sharp = it["sharp"].numpy().transpose(1, 2, 0)
        hits = [
            (y, x)
            for y in range(scene.shape[0] - 47)
            for x in range(scene.shape[1] - 47)
            if np.array_equal(flat[y : y + 48, x : x + 48], sharp)
        ]
        assert len(hits) == 1
    cfg = load_config(None, ["--data.raw_camera_fraction=0.6"])
    assert synth_params(cfg).raw_camera_fraction == 0.6
    with pytest.raises(ConfigError, match="raw_camera_fraction"):
        load_config(None, ["--data.raw_camera_fraction=-0.1"])


def test_frame_order_is_natural_for_any_names(tmp_path: Path) -> None:
    from training.data import list_frames

    numbered, plain = tmp_path / "numbered", tmp_path / "plain"
    for folder, names in (
        (numbered, ["f10.png", "f9.png", "x11y8.png", "1²7.png", "11.png"]),
        (plain, ["b.png", "A.png", "cé.png", "Bc.png"]),
    ):
        folder.mkdir()
        for n in names:
            cv2.imwrite(str(folder / n), np.zeros((4, 4, 3), np.uint8))
    # by the last number in each name, which must run on without a gap
    got = [p.name for p in list_frames(numbered)]
    assert got == ["1²7.png", "x11y8.png", "f9.png", "f10.png", "11.png"]
    assert [p.name for p in list_frames(plain)] == ["A.png", "b.png", "Bc.png", "cé.png"]


def test_an_image_without_a_number_among_raw_frames_is_refused(tmp_path: Path) -> None:
    # A "cover.png" among 000001.png... turned the gap check off: it was averaged in as a frame,
    # and with one frame missing a held-out frame moved into the training range unsaid.
    from training.data import RawSequence, list_frames

    for k in (1, 2, 4, 5):  # frame 3 missing
        cv2.imwrite(str(tmp_path / f"{k:06d}.png"), np.full((4, 4, 3), k, np.uint8))
    cv2.imwrite(str(tmp_path / "cover.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"cover\.png has no frame number among numbered"):
        list_frames(tmp_path)
    with pytest.raises(ValueError, match="cover.png"):
        RawSequence.load(tmp_path, first=1, last=3)
    (tmp_path / "cover.png").unlink()
    with pytest.raises(ValueError, match="frame 3 is missing"):
        list_frames(tmp_path)


def test_still_samples_skip_the_blur_synthesis_but_not_its_random_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training.data as D

    scene = make_texture(80, 100, seed=1)
    seq = RawSequence(
        name="pan",
        frames=[np.roll(scene, 2 * k, axis=1)[:60, :72].copy() for k in range(12)],
        numbers=list(range(1, 13)),
        paths=[],
    )
    photos = [make_texture(90, 110, seed=s) for s in (2, 3)]
    kernels = [random_psf(np.random.default_rng(0), max_size=9, exposure=(0.5, 1.0))]
    calls = {"average": 0, "kernel": 0, "frames": 0}

    def counted(name: str, fn: Callable[..., Any], *, frames: bool = False) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            calls[name] += len(args[1]) if frames else 1  # render_camera_motion: one per map
            return fn(*args, **kw)

        return wrapper

    monkeypatch.setattr(D, "temporal_average", counted("average", D.temporal_average))
    monkeypatch.setattr(D, "blur_with_kernel", counted("kernel", D.blur_with_kernel))
    monkeypatch.setattr(
        D, "render_camera_motion", counted("frames", D.render_camera_motion, frames=True)
    )

    def items(still: float) -> tuple[list[dict], dict[str, int]]:
        # every path that synthesises blur: raw windows, raw through a moving camera, photos
        # with a drawn PSF or a real kernel, photos filmed by a moving camera
        params = SynthParams(
            raw_windows=(5, 7),
            raw_camera_fraction=0.5,
            camera_fraction=0.4,
            real_kernel_fraction=0.5,
            photo_scale=(0.8, 1.2),
            still_fraction=still,
            sharpness_threshold=0.0,
            # Noise off: Poisson and normal draws take as many numbers as their values need,
            # so after noise on a blurred and on a sharp input the streams part (flips differ).
            noise_prob=0.0,
            jpeg_prob=0.0,
        )
        ds = DeblurDataset(
            raw=[seq], photos=photos, kernels=kernels, weights=(1, 1, 0), params=params, patch=32
        )
        calls.update(average=0, kernel=0, frames=0)
        return [ds[i] for i in range(24)], dict(calls)

    # The smallest positive share draws the still decision but never says yes: the same
    # random numbers as a still run up to the synthesis, and the blur is made.
    moving, made = items(float(np.nextafter(0.0, 1.0)))
    still, skipped = items(1.0)
    assert made["average"] > 0 and made["kernel"] > 0 and made["frames"] > 0
    assert skipped["average"] == skipped["kernel"] == 0
    # one centre frame per camera sample instead of its whole window (5 to 7 frames)
    assert 0 < skipped["frames"] < made["frames"] // 4
    for a, b in zip(moving, still, strict=True):
        assert int(a["source"]) == int(b["source"])
        # same window, crop, kernel size and flips: the same sharp target
        assert torch.equal(a["sharp"], b["sharp"])
        assert not torch.equal(a["blur"], a["sharp"]) and torch.equal(b["blur"], b["sharp"])


def test_temporal_average_defaults_to_gamma_2_2() -> None:
    # The linear-light sets and blur_gamma are made with gamma 2.2 when no gamma is passed.
    black = np.zeros((2, 2, 3), np.float32)
    white = np.ones((2, 2, 3), np.float32)
    assert np.allclose(temporal_average([black, white], linear=True), 0.5 ** (1 / 2.2), atol=1e-6)


def test_raw_windows_never_span_a_missing_frame() -> None:
    # Frame 4 unreadable: a window over 3 and 5 would average frames further apart in time.
    frames = [np.zeros((4, 4, 3), np.uint8)] * 7
    seq = RawSequence(name="s", frames=frames, numbers=[1, 2, 3, 5, 6, 7, 8], paths=[])
    assert seq.windows(3) == [0, 3, 4]


def _flat_clip(values: list[int], size: int = 8) -> RawSequence:
    frames = [np.full((size, size, 3), v, np.uint8) for v in values]
    return RawSequence(
        name="clip", frames=frames, numbers=list(range(1, len(values) + 1)), paths=[]
    )


def test_raw_samples_follow_linear_fraction_and_gamma() -> None:
    # linear_fraction decides plain vs linear-light averages; the configured gamma is the one used.
    values = [0, 40, 80, 200, 255]
    seq = _flat_clip(values)
    x = np.float32(values) / 255.0
    for fraction, gamma, want in (
        (0.0, 2.2, x.mean()),
        (1.0, 2.0, np.mean(x**2.0) ** 0.5),
    ):
        params = SynthParams(raw_windows=(5,), linear_fraction=fraction, gamma=gamma, augment=False)
        ds = DeblurDataset(raw=[seq], params=params, patch=4)
        for i in range(3):
            blur, sharp = ds._raw(ds.rng_for(i), 4)
            assert np.allclose(blur, want, atol=1e-4)
            assert np.allclose(sharp, 80 / 255.0)


def test_camera_samples_follow_linear_fraction_and_gamma(monkeypatch: pytest.MonkeyPatch) -> None:
    # The moving-camera path draws plain vs linear-light averaging like the raw one: with
    # linear_fraction 0 every sample is the plain sRGB mean of its rendered frames, with 1 the
    # linear-light mean at the configured gamma (the two differ on any moving edge).
    import training.data as D

    rendered: list[list[np.ndarray]] = []
    render = D.render_camera_motion

    def keep(*args: Any, **kw: Any) -> Any:
        frames = render(*args, **kw)
        rendered.append(frames)
        return frames

    monkeypatch.setattr(D, "render_camera_motion", keep)
    photo = make_texture(120, 140, seed=5)
    for fraction, linear in ((0.0, False), (1.0, True)):
        params = SynthParams(
            raw_windows=(5,),
            camera_speed=(2.0, 3.0),
            linear_fraction=fraction,
            gamma=2.0,
            augment=False,
        )
        ds = DeblurDataset(photos=[photo], weights=(0, 1, 0), params=params, patch=24)
        for i in range(3):
            rendered.clear()
            blur, sharp = ds._camera(ds.rng_for(i), photo, 24)
            (frames,) = rendered
            assert len(frames) == 5
            np.testing.assert_allclose(sharp, frames[2].astype(np.float32) / 255.0)
            want = temporal_average(frames, linear=linear, gamma=2.0)
            other = temporal_average(frames, linear=not linear, gamma=2.0)
            assert np.abs(want - other).max() > 0.01
            np.testing.assert_allclose(blur, want, atol=1e-6)


def test_raw_validation_pairs_use_the_centre_frame_and_the_gamma() -> None:
    # The held-out validation score: sharp = centre frame; linear-light at the configured gamma.
    values = [0, 40, 80, 120, 255]
    pairs = raw_validation_pairs(
        _flat_clip(values), sizes=(5,), count=1, linear_modes=(False, True), gamma=2.0
    )
    x = np.float32(values) / 255.0
    (plain, sharp_p, name_p), (lin, sharp_l, name_l) = pairs
    assert np.allclose(sharp_p, 80 / 255.0) and np.allclose(sharp_l, 80 / 255.0)
    assert np.allclose(plain, x.mean(), atol=1e-5)
    assert np.allclose(lin, np.mean(x**2.0) ** 0.5, atol=1e-5)
    assert name_p == "clip_c3_w5_plain" and name_l == "clip_c3_w5_lin"


def test_training_range_touching_the_validation_range_is_refused(tmp_path: Path) -> None:
    # Frame 240 in both ranges would train on a validation frame: the bounds are inclusive.
    from training.config import ConfigError, TrainConfig
    from training.train import build_data

    cfg = TrainConfig()
    cfg.data.raw_dirs = [str(tmp_path)]
    cfg.data.raw_train_range = [1, 240]
    with pytest.raises(ConfigError, match="overlaps"):
        build_data(cfg)


def test_gopro_source_returns_the_sharp_file_as_the_target(tmp_path: Path) -> None:
    # GoPro pairs come as (blurry, sharp) paths; swapped, the student would be trained to blur
    # every frame it sees, and no other source would show it.
    from training.data import gopro_pairs

    sharp = make_texture(40, 48, seed=5)
    blurred = cv2.blur(sharp, (7, 7))
    seq = tmp_path / "train" / "GOPR_a"
    for sub, img in (("sharp", sharp), ("blur", blurred)):
        (seq / sub).mkdir(parents=True)
        cv2.imwrite(str(seq / sub / "000001.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    pairs = gopro_pairs(tmp_path, "train")
    params = SynthParams(noise_prob=0, jpeg_prob=0, augment=False)
    ds = DeblurDataset(gopro=pairs, weights=(0, 0, 1), params=params, patch=32, seed=1)
    for i in range(3):
        item = ds[i]
        assert item["source"] == 2
        out_sharp = item["sharp"].permute(1, 2, 0).numpy()
        out_blur = item["blur"].permute(1, 2, 0).numpy()
        assert sharpness(out_sharp) > 1.5 * sharpness(out_blur)
        ref = sharp.astype(np.float32) / 255.0
        hits = [
            (y, x)
            for y in range(40 - 32 + 1)
            for x in range(48 - 32 + 1)
            if np.array_equal(ref[y : y + 32, x : x + 32], out_sharp)
        ]
        assert len(hits) == 1
        y, x = hits[0]
        assert np.array_equal(out_blur, blurred[y : y + 32, x : x + 32].astype(np.float32) / 255.0)


def test_jpeg_compress_keeps_red_red() -> None:
    # OpenCV encodes BGR: without the conversion a webcam-degraded red patch comes back blue,
    # and the student learns to swap colours on every JPEG-degraded sample.
    from training.data import jpeg_compress

    red = np.zeros((16, 16, 3), np.float32)
    red[..., 0] = 0.9
    out = jpeg_compress(red, 95)
    assert out.shape == red.shape and out.dtype == np.float32
    assert np.allclose(out, red, atol=0.05)


def test_poisson_noise_keeps_the_mean_brightness() -> None:
    # Shot noise is zero-mean: a brightened (or darkened) noisy input teaches the student an
    # exposure shift along with the denoising.
    from training.data import add_noise

    grey = np.full((64, 64, 3), 0.5, np.float32)
    out = add_noise(grey, np.random.default_rng(0), gaussian_sigma=0.0, poisson_peak=1000.0)
    assert out.std() > 0.005
    assert float(out.mean()) == pytest.approx(0.5, abs=0.005)


def test_webcam_noise_sigma_spans_the_configured_range() -> None:
    # The read-noise level is drawn per sample from noise_sigma; stuck at the maximum, the
    # student never sees clean or lightly noisy inputs and smears fine detail as noise.
    params = SynthParams(noise_prob=1.0, poisson_prob=0.0, jpeg_prob=0.0, noise_sigma=(0.0, 0.04))
    ds = DeblurDataset(photos=[np.zeros((8, 8, 3), np.uint8)], weights=(0, 1, 0), params=params)
    grey = np.full((32, 32, 3), 0.5, np.float32)
    stds = [float(ds._webcam(grey, np.random.default_rng(s)).std()) for s in range(40)]
    assert max(stds) == pytest.approx(0.04, abs=0.005)
    assert min(stds) < 0.01
    assert 0.01 < float(np.median(stds)) < 0.03


def test_leakage_guard_catches_a_small_low_quality_crop_near_its_threshold() -> None:
    from skimage import data as skdata

    from training.data import NEAR_DUPLICATE_SCORE, near_duplicates

    # One of the hardest copies the threshold was set for: 20 % cut off each side, shrunk to
    # 1/8 and saved at JPEG 30. It scores below 0.95: a higher threshold lets it leak into
    # training while it is evaluated on.
    ev = np.repeat(skdata.coins()[:, :, None], 3, axis=2)
    copy = _jpeg(
        cv2.resize(
            _cut(ev, 0.2, 0.2, 0.2, 0.2), None, fx=1 / 8, fy=1 / 8, interpolation=cv2.INTER_AREA
        ),
        30,
    )
    found = near_duplicates({"copy": image_signature(copy)}, {"coins": image_signature(ev)})
    assert [(t, e) for t, e, _ in found] == [("copy", "coins")]
    assert NEAR_DUPLICATE_SCORE <= found[0][2] < 0.95


@pytest.mark.parametrize("max_size", [5, 8, 9])
def test_random_psf_never_exceeds_its_max_size(max_size: int) -> None:
    # A PSF larger than psf_max_size blurs more than the config allows and needs a larger
    # margin than the crop leaves, so the patch border is blurred with reflected content.
    for seed in range(50):
        p = random_psf(np.random.default_rng(seed), max_size=max_size, exposure=(0.5, 1.0))
        assert max(p.shape) <= max_size, (seed, p.shape)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)


def test_srgb_transfer_functions_known_values() -> None:
    # IEC 61966-2-1 by hand: a straight toe x / 12.92 up to 0.04045 (0.0031308 in linear light),
    # then ((x + 0.055) / 1.055) ** 2.4. The sensor-noise sets (evaluate's "-sensor" low-light
    # sets, training's webcam noise) put their noise through these, strongest in the shadows,
    # i.e. on the toe, which the mid-tone values elsewhere never reach.
    from training.data import linear_to_srgb, srgb_to_linear

    srgb = np.array([0.0, 0.02, 0.04045, 0.2, 0.5, 1.0], np.float32)
    lin = np.array([0.0, 0.0015479876, 0.0031308050, 0.0331047666, 0.2140411405, 1.0], np.float32)
    np.testing.assert_allclose(srgb_to_linear(srgb), lin, rtol=1e-5, atol=1e-8)
    lin2 = np.array([0.0, 0.001, 0.0031308, 0.01, 0.2140411405, 1.0], np.float32)
    srgb2 = np.array([0.0, 0.01292, 0.040449936, 0.0998528227, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(linear_to_srgb(lin2), srgb2, rtol=1e-5, atol=1e-8)
    # Out-of-range values (noise pushed past black or white) are clipped first, both ways.
    out = np.array([-0.2, 1.3], np.float32)
    np.testing.assert_allclose(srgb_to_linear(out), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(linear_to_srgb(out), [0.0, 1.0], atol=1e-6)


def test_linear_average_clips_out_of_range_float_frames() -> None:
    # A float frame a little past black or white (a rendered or noisy frame) counts as black or
    # white in linear light, not as |x| ** gamma: -0.5 would add light that was never there.
    black, white = np.zeros((2, 2, 3), np.float32), np.ones((2, 2, 3), np.float32)
    want = temporal_average([black, white], linear=True)
    got = temporal_average([black - 0.5, white + 0.5], linear=True)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_raw_frame_windows_refuse_even_sizes_and_start_at_frame_one(tmp_path: Path) -> None:
    # An even window has no centre frame: the sharp target would sit half a frame off the blur.
    # A range starting before frame 1 must not wrap around to the clip's last frames (Python's
    # negative indices), which would average frames from both ends of the clip.
    for i in range(1, 16):
        cv2.imwrite(str(tmp_path / f"{i:06d}.png"), np.full((4, 4, 3), i, np.uint8))
    with pytest.raises(ValueError, match="odd"):
        raw_frame_windows(tmp_path, first=1, last=15, sizes=(8,))
    assert raw_frame_windows(tmp_path, first=-3, last=15, sizes=(7,)) == raw_frame_windows(
        tmp_path, first=1, last=15, sizes=(7,)
    )


def test_raw_validation_pairs_spread_centres_to_the_last_window() -> None:
    # The validation set's centres are evenly spaced over the held-out windows, first to last:
    # ten frames and 5-frame windows give starts 0..5, so two picks are centres 3 and 8.
    pairs = raw_validation_pairs(
        _flat_clip(list(range(0, 200, 20))), sizes=(5,), count=2, linear_modes=(False,)
    )
    assert [name for _, _, name in pairs] == ["clip_c3_w5_plain", "clip_c8_w5_plain"]


def test_validation_range_ending_where_training_starts_is_refused(tmp_path: Path) -> None:
    # The same inclusive bound the other way round: validation frames 1-240 and training frames
    # 240-299 share frame 240.
    from training.config import ConfigError, TrainConfig
    from training.train import build_data

    cfg = TrainConfig()
    cfg.data.raw_dirs = [str(tmp_path)]
    cfg.data.raw_train_range = [240, 299]
    cfg.data.raw_val_range = [1, 240]
    with pytest.raises(ConfigError, match="overlaps"):
        build_data(cfg)


def test_list_images_finds_every_image_file_in_a_stable_order(tmp_path: Path) -> None:
    from training.data import list_images

    # Enough names that the file system's own listing order is unlikely to be sorted already.
    names = [f"{c}.png" for c in "qwertyuiopasdfghjkl"] + ["UPPER.JPG"]
    for n in names:
        cv2.imwrite(str(tmp_path / n), np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "deep.png"), np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()  # an image suffix on a folder must not be read as a file
    top = sorted(tmp_path / n for n in names)
    assert list_images(tmp_path, recursive=False) == top
    assert list_images(tmp_path) == sorted([*top, tmp_path / "sub" / "deep.png"])
    assert list_images(tmp_path / "q.png") == [tmp_path / "q.png"]  # a file names itself


def test_raw_frames_leave_subfolders_out(tmp_path: Path) -> None:
    from training.data import list_frames

    # A clip's folder may hold other things (a thumbnail folder): only its own images are frames.
    for i in (1, 2, 3):
        cv2.imwrite(str(tmp_path / f"{i:06d}.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "thumbs").mkdir()
    cv2.imwrite(str(tmp_path / "thumbs" / "000002.png"), np.zeros((2, 2, 3), np.uint8))
    assert [p.name for p in list_frames(tmp_path)] == ["000001.png", "000002.png", "000003.png"]


def test_load_image_u8_gives_rgb_uint8_for_every_stored_format(tmp_path: Path) -> None:
    rgb = np.array([[[10, 100, 200], [255, 0, 7]]], np.uint8)
    cv2.imwrite(str(tmp_path / "colour.png"), rgb[:, :, ::-1])
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((1, 2, 1), 50, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    cv2.imwrite(str(tmp_path / "grey.png"), np.array([[3, 250]], np.uint8))
    # 16-bit levels v map to round(v / 257): 25829 is 100.502, just past a rounding boundary.
    cv2.imwrite(str(tmp_path / "deep.png"), np.array([[0, 25828, 25829, 65535]], np.uint16))
    cv2.imwrite(str(tmp_path / "float.tiff"), np.full((2, 2, 3), 0.5, np.float32))
    for name in ("colour.png", "alpha.png"):
        got = load_image_u8(tmp_path / name)
        assert got is not None and got.dtype == np.uint8
        np.testing.assert_array_equal(got, rgb)
    grey = load_image_u8(tmp_path / "grey.png")
    assert grey is not None
    np.testing.assert_array_equal(grey, np.repeat(np.array([[[3], [250]]], np.uint8), 3, axis=2))
    deep = load_image_u8(tmp_path / "deep.png")
    assert deep is not None and deep.dtype == np.uint8
    np.testing.assert_array_equal(deep[0, :, 0], [0, 100, 101, 255])
    assert load_image_u8(tmp_path / "float.tiff") is None  # not silently a garbage uint8 image
    assert load_image_u8(tmp_path / "missing.png") is None  # warned about, not raised


def test_to_uint8_rounds_and_clips() -> None:
    x = np.array([[[-0.5, 0.0, 0.5], [100.4 / 255, 100.6 / 255, 1.5]]], np.float32)
    got = to_uint8(x)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [[[0, 0, 128], [100, 101, 255]]])
    u8 = np.array([[[1, 2, 3]]], np.uint8)
    assert to_uint8(u8) is u8


def test_content_hash_sees_shape_every_pixel_and_undecodable_bytes(tmp_path: Path) -> None:
    # The same bytes in another shape are another picture.
    zeros = np.zeros((4, 6, 3), np.uint8)
    assert content_hash(zeros) != content_hash(zeros.reshape(6, 4, 3))
    last = zeros.copy()
    last[-1, -1, -1] = 1
    assert content_hash(zeros) != content_hash(last)
    # A file no decoder reads is still compared, by its bytes (not its name).
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    a.write_bytes(b"not an image")
    b.write_bytes(b"not an image")
    c.write_bytes(b"not an image either")
    assert content_hash(a) == content_hash(b) != content_hash(c)


def test_leakage_guard_takes_hash_mappings_and_pairs_and_lists_every_overlap() -> None:
    with pytest.raises(LeakageError, match=r"1 training image\(s\)[^$]*t2  ==  e1"):
        check_leakage({"t1": "h1", "t2": "h2"}, {"e1": "h2"})
    with pytest.raises(LeakageError, match=r"t2  ==  e1"):
        check_leakage([("t1", "h1"), ("t2", "h2")], [("e1", "h2")])
    # One training image equal to two evaluation images is two overlaps; past 20 they are counted.
    train = {f"t{i}": f"h{i}" for i in range(12)}
    evals = {f"e{i}{s}": f"h{i}" for i in range(12) for s in "ab"}
    with pytest.raises(LeakageError) as exc:
        check_leakage(train, evals)
    msg = str(exc.value)
    assert msg.startswith("24 training image(s)")
    assert msg.count("  ==  ") == 20 and msg.endswith("... and 4 more")
    assert "t0  ==  e0a" in msg and "t0  ==  e0b" in msg


def test_leakage_guard_lists_a_byte_copy_once_and_needs_both_signature_sides() -> None:
    from skimage import data as skdata

    # A GoPro frame equal to an evaluation file's bytes matches "<eval> (file)" exactly; its
    # near-duplicate match with "<eval>" is the same overlap and must not count twice.
    sig = image_signature(skdata.astronaut())
    with pytest.raises(LeakageError, match=r"^1 training image\(s\)") as exc:
        check_leakage(
            {"gopro.png": "bytes"},
            {"eval.png": "pixels", "eval.png (file)": "bytes"},
            train_signatures={"gopro.png": sig},
            eval_signatures={"eval.png": sig},
        )
    assert "near-duplicate" not in str(exc.value)
    # without training thumbnails there is nothing to compare the evaluation thumbnails with
    check_leakage({"t": "a"}, {"e": "b"}, eval_signatures={"e": sig})


def test_file_signatures_match_decoded_images_in_any_order(tmp_path: Path) -> None:
    from training.data import file_signatures

    # Red beside blue: grey levels tell a colour decoded as BGR from one taken for RGB.
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        rgb = np.zeros((60, 80, 3), np.uint8)
        rgb[:, :40, 0] = 255
        rgb[:, 40:, 2] = 255
        rgb[rng.integers(0, 60, 30), rng.integers(0, 80, 30)] = 255 * (i % 2)
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), rgb[:, :, ::-1])
    paths.reverse()
    sigs = file_signatures(paths, workers=2)
    assert list(sigs) == [str(p) for p in paths]
    for p in paths:
        want = image_signature(load_image_u8(p)).astype(int)
        assert np.abs(sigs[str(p)].astype(int) - want).max() <= 2, p


def test_leakage_guard_searches_panoramas_too_narrow_for_the_coarse_pass() -> None:
    from skimage import data as skdata

    from training.data import near_duplicates

    # A 3:1 thumbnail holds no coarse window (its short side is under 3 cells of the coarse
    # thumbnail), so the coarse pass cannot pick it: it must go to the full search regardless,
    # or a re-saved copy of an evaluation panorama trains unseen.
    pano = np.ascontiguousarray(skdata.astronaut()[160:330])
    found = near_duplicates(
        {"copy": image_signature(_jpeg(pano, 80))}, {"pano": image_signature(pano)}
    )
    assert [(t, e) for t, e, _ in found] == [("copy", "pano")]


def _locate(patch: np.ndarray, images: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """Every ``(image, y, x)`` where the float ``patch`` is an exact crop of a uint8 image."""
    ph, pw = patch.shape[:2]
    found = []
    for n, img in enumerate(images):
        ref = img.astype(np.float32) / 255.0
        for y in range(img.shape[0] - ph + 1):
            for x in range(img.shape[1] - pw + 1):
                if np.array_equal(ref[y : y + ph, x : x + pw], patch):
                    found.append((n, y, x))
    return found


def test_raw_samples_draw_every_sequence_window_and_position() -> None:
    # Each raw sample is one window of one clip: the centre frame's crop as the target and the
    # average of the window's frames over the same crop as the input. Stuck on one clip, window
    # or crop corner, the student would see a sliver of the footage.
    rng = np.random.default_rng(0)
    long = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(9)]
    short = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(3)]
    seqs = [
        RawSequence(name="long", frames=long, numbers=list(range(1, 10)), paths=[]),
        # too short for a 5-frame window: only its 3-frame one can be drawn
        RawSequence(name="short", frames=short, numbers=[1, 2, 3], paths=[]),
    ]
    params = SynthParams(raw_windows=(3, 5), linear_fraction=0.0, augment=False)
    ds = DeblurDataset(raw=seqs, params=params, patch=6)
    seen = set()
    for i in range(40):
        blur, sharp = ds._raw(ds.rng_for(i), 6)
        hits = [
            (s, f, y, x) for s, seq in enumerate(seqs) for f, y, x in _locate(sharp, seq.frames)
        ]
        assert len(hits) == 1, i
        s, f, y, x = hits[0]
        frames = seqs[s].frames
        # the window round the centre frame f: 3 or 5 frames wide
        widths = [
            n
            for n in (3, 5)
            if n // 2 <= f < len(frames) - n // 2
            and np.allclose(
                blur,
                temporal_average(
                    [g[y : y + 6, x : x + 6] for g in frames[f - n // 2 : f + n // 2 + 1]],
                    linear=False,
                ),
                atol=1e-6,
            )
        ]
        assert widths, i
        seen.add((s, f, y, x, widths[0]))
    assert {s for s, *_ in seen} == {0, 1}
    assert len({f for s, f, *_ in seen if s == 0}) >= 3
    assert len({y for *_, y, x, n in seen}) >= 3 and len({x for *_, y, x, n in seen}) >= 3
    assert {n for *_, n in seen} == {3, 5}


def test_raw_frames_smaller_than_the_patch_are_padded_not_transposed() -> None:
    # A clip lower than the patch is cropped to its full height and reflect-padded to (P, P).
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (6, 10, 3), dtype=np.uint8) for _ in range(3)]
    seq = RawSequence(name="low", frames=frames, numbers=[1, 2, 3], paths=[])
    ds = DeblurDataset(raw=[seq], params=SynthParams(raw_windows=(3,), augment=False), patch=8)
    for i in range(5):
        _, sharp = ds._raw(ds.rng_for(i), 8)
        assert sharp.shape == (8, 8, 3)
        hits = _locate(sharp[:6], [frames[1]])
        assert len(hits) == 1 and hits[0][1] == 0
        assert np.array_equal(sharp[6:], sharp[[4, 3]])  # reflected without repeating the edge


def test_fit_crops_large_and_reflect_pads_small_images() -> None:
    from training.data import _fit

    img = np.arange(3 * 8 * 3, dtype=np.uint8).reshape(3, 8, 3)
    out = _fit(img, 5)
    assert out.shape == (5, 5, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out[:3], img[:, :5])
    assert np.array_equal(out[3:], img[[1, 0], :5])
    big = np.arange(7 * 9 * 3, dtype=np.float32).reshape(7, 9, 3)
    assert np.array_equal(_fit(big, 5), big[:5, :5])


def test_photo_blur_is_the_whole_photo_blurred_at_the_sharp_crop() -> None:
    # The blurred patch must be the sharp patch's own neighbourhood convolved: the crop keeps a
    # kernel-sized margin on every side, so no patch border is blurred with mirrored content,
    # and input and target stay pixel-aligned (a one-pixel shift teaches the student to move
    # the picture).
    photo = _textured(64, 80, seed=3)
    k = np.zeros((7, 7), np.float32)
    k[3, :] = np.arange(1, 8)
    k[1:6, 2] += 3.0
    k /= k.sum()
    params = SynthParams(
        real_kernel_fraction=1.0,
        noise_prob=0,
        jpeg_prob=0,
        sharpness_threshold=0.0,
        augment=False,
    )
    ds = DeblurDataset(photos=[photo], kernels=[k], weights=(0, 1, 0), params=params, patch=24)
    whole = blur_with_kernel(photo, k)
    corners = set()
    for i in range(8):
        item = ds[i]
        sharp = item["sharp"].permute(1, 2, 0).numpy()
        blur = item["blur"].permute(1, 2, 0).numpy()
        hits = _locate(sharp, [photo])
        assert len(hits) == 1
        _, y, x = hits[0]
        corners.add((y, x))
        np.testing.assert_allclose(blur, whole[y : y + 24, x : x + 24], atol=1e-5)
    assert len(corners) >= 4


def test_real_kernel_fraction_decides_between_real_and_drawn_kernels() -> None:
    # A delta "real" kernel leaves the patch as it is: with real_kernel_fraction 0 the drawn
    # shake kernels are used, with 1 only the real ones.
    photo = _textured(64, 64, seed=4)
    delta = np.zeros((3, 3), np.float32)
    delta[1, 1] = 1.0

    def unblurred(fraction: float) -> int:
        params = SynthParams(
            real_kernel_fraction=fraction,
            noise_prob=0,
            jpeg_prob=0,
            sharpness_threshold=0.0,
            max_tries=1,
        )
        ds = DeblurDataset(
            photos=[photo], kernels=[delta], weights=(0, 1, 0), params=params, patch=24
        )
        return sum(bool(torch.equal(ds[i]["blur"], ds[i]["sharp"])) for i in range(12))

    assert unblurred(1.0) == 12
    assert unblurred(0.0) < 6  # a drawn kernel is rarely close to a point


def _random_cache(n: int = 3, side: int = 16, seed: int = 0) -> TeacherCache:
    rng = np.random.default_rng(seed)
    blur, sharp, teacher = (rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8) for _ in "bst")
    return TeacherCache(blur, sharp, teacher, [content_hash(b) for b in blur])


def test_cached_patches_come_with_their_teacher_and_the_rest_without() -> None:
    cache = _random_cache()
    photo = _textured(48, 48)
    params = SynthParams(noise_prob=0, jpeg_prob=0, sharpness_threshold=0.0)

    def items(fraction: float) -> list[dict]:
        ds = DeblurDataset(
            photos=[photo],
            weights=(0, 1, 0),
            params=params,
            patch=16,
            teacher_cache=cache,
            cache_fraction=fraction,
        )
        return [ds[i] for i in range(10)]

    for it in items(1.0):
        assert int(it["source"]) == 3 and bool(it["has_teacher"]) and int(it["rejected"]) == 0
        i = next(
            j
            for j in range(3)
            if np.array_equal(
                it["blur"].numpy(), cache.blur[j].transpose(2, 0, 1) / np.float32(255)
            )
        )
        for key, arr in (("sharp", cache.sharp), ("teacher", cache.teacher)):
            np.testing.assert_allclose(
                it[key].numpy(), arr[i].transpose(2, 0, 1) / 255.0, atol=1e-6
            )
    for it in items(0.0):
        assert int(it["source"]) == 1 and not bool(it["has_teacher"])
        # no teacher: zeros, which the distillation loss masks out
        assert it["teacher"].shape == (3, 16, 16) and not it["teacher"].any()


def test_a_drawn_patch_that_is_in_the_cache_gets_its_teacher() -> None:
    # cache_teacher caches patches of the same stream: drawn again, the same blurry patch
    # finds its teacher output by content, whichever source made it.
    photo = _textured(48, 48)
    params = SynthParams(noise_prob=0, jpeg_prob=0, sharpness_threshold=0.0)

    def dataset(cache: TeacherCache) -> DeblurDataset:
        return DeblurDataset(
            photos=[photo], weights=(0, 1, 0), params=params, patch=16, teacher_cache=cache
        )

    item = dataset(_random_cache())[5]
    assert not bool(item["has_teacher"])
    blur = to_uint8(item["blur"].permute(1, 2, 0).numpy())[None]
    teacher = np.full_like(blur, 77)
    cache = TeacherCache(blur, blur.copy(), teacher, [content_hash(blur[0])])
    again = dataset(cache)[5]
    assert torch.equal(again["blur"], item["blur"]) and bool(again["has_teacher"])
    assert int(again["source"]) == 1
    np.testing.assert_allclose(again["teacher"].numpy(), 77 / 255.0, atol=1e-6)


def test_teacher_cache_samples_every_entry_and_position() -> None:
    cache = _random_cache(side=24)
    assert cache.patch == 24 and len(cache) == 3
    where = set()
    for seed in range(30):
        b, s, t = cache.sample(np.random.default_rng(seed), 16)
        ((i, y, x),) = _locate(b, list(cache.blur))
        # the three crops come from the same entry and place
        assert np.array_equal(s, cache.sharp[i, y : y + 16, x : x + 16] / np.float32(255))
        assert np.array_equal(t, cache.teacher[i, y : y + 16, x : x + 16] / np.float32(255))
        where.add((i, y, x))
    assert {i for i, _, _ in where} == {0, 1, 2}
    assert len({y for _, y, _ in where}) >= 3 and len({x for _, _, x in where}) >= 3
    with pytest.raises(ValueError, match="inconsistent"):
        TeacherCache(cache.blur, cache.sharp, cache.teacher, cache.keys[:2])


def test_teacher_cache_load_drops_mismatched_keys_and_small_gains(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sharp = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    blur = np.clip(sharp.astype(int) + rng.integers(-40, 41, sharp.shape), 0, 255).astype(np.uint8)
    # entry 0 has a stale key; the teacher restores entry 1 exactly and does nothing for entry 2
    teacher = np.stack([sharp[0], sharp[1], blur[2]])
    keys = ["stale"] + [content_hash(b) for b in blur[1:]]
    path = tmp_path / "cache.pt"
    torch.save(
        {
            "blur": torch.from_numpy(blur),
            "sharp": torch.from_numpy(sharp),
            "teacher": torch.from_numpy(teacher),
            "keys": keys,
            "meta": {"teacher": "fake"},
        },
        path,
    )
    every = TeacherCache.load(path)
    assert every.keys == keys[1:] and every.meta == {"teacher": "fake"}
    assert np.array_equal(every.blur, blur[1:]) and np.array_equal(every.teacher, teacher[1:])
    hit = every.lookup(blur[2].astype(np.float32) / 255.0)
    assert hit is not None and np.array_equal(hit, blur[2] / np.float32(255))
    gaining = TeacherCache.load(path, min_gain_db=1.0)
    assert gaining.keys == [keys[1]]
    assert np.array_equal(gaining.sharp, sharp[1:2])


def test_teacher_cache_load_takes_the_legacy_format_that_has_no_checksums(tmp_path: Path) -> None:
    cache = _random_cache()
    path = tmp_path / "cache.pt"
    arrays = {k: torch.from_numpy(getattr(cache, k)) for k in ("blur", "sharp", "teacher")}
    # Not a zip archive: nothing to test, and no reason to refuse what torch.load reads.
    data = {**arrays, "keys": cache.keys, "meta": {"teacher": "fake"}}
    torch.save(data, path, _use_new_zipfile_serialization=False)
    assert len(TeacherCache.load(path)) == 3


def _flip_a_byte_of(path: Path, record: str) -> None:
    """Invert one byte in the middle of the stored bytes of ``record`` of a torch.save file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(record))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_teacher_cache_load_refuses_a_file_whose_bytes_fail_their_checksum(tmp_path: Path) -> None:
    cache = _random_cache()
    path = tmp_path / "cache.pt"
    arrays = {k: torch.from_numpy(getattr(cache, k)) for k in ("blur", "sharp", "teacher")}
    torch.save({**arrays, "keys": cache.keys, "meta": {"teacher": "fake"}}, path)
    assert len(TeacherCache.load(path)) == 3
    # The teacher outputs are the third array saved; only the blurry patches are keyed by
    # content, and torch.load does not test the archive's checksums: this loaded as data.
    _flip_a_byte_of(path, "data/2")
    with pytest.raises(ValueError, match=r"cache.pt is damaged \(its record .*data/2 fails"):
        TeacherCache.load(path)


def test_teacher_cache_load_says_a_damaged_zip_index_entry_in_one_line(tmp_path: Path) -> None:
    # A damaged index entry: zipfile's testzip let anything but BadZipFile through (a
    # compression method it does not know: NotImplementedError), a traceback for one line.
    cache = _random_cache()
    path = tmp_path / "cache.pt"
    arrays = {k: torch.from_numpy(getattr(cache, k)) for k in ("blur", "sharp", "teacher")}
    torch.save({**arrays, "keys": cache.keys, "meta": {"teacher": "fake"}}, path)
    whole = path.read_bytes()
    entry = whole.index(b"PK\x01\x02")  # the index's first entry
    data = bytearray(whole)
    data[entry + 10] = 99  # its compression method
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cache.pt is damaged \(its record \S+ fails"):
        TeacherCache.load(path)
    # Its "version needed to extract" (25.5) stops zipfile opening the archive at all: what
    # torch reads is read, the rest refused, never a traceback.
    data = bytearray(whole)
    data[entry + 6] = 0xFF
    path.write_bytes(bytes(data))
    assert len(TeacherCache.load(path)) == 3


def test_index_batches_hand_each_rank_its_own_consecutive_samples() -> None:
    from training.data import IndexBatches

    # batch b of a run at sample `start` holds samples start + b * batch ..., and rank r of w
    # takes every w-th index from r: a resume at `start` draws exactly what was left.
    two = [list(IndexBatches(start=4, n_batches=2, batch=3, rank=r, world_size=2)) for r in (0, 1)]
    assert two[0] == [[8, 10, 12], [14, 16, 18]]
    assert two[1] == [[9, 11, 13], [15, 17, 19]]
    assert len(IndexBatches(start=4, n_batches=2, batch=3)) == 2
    whole = [i for b in IndexBatches(start=0, n_batches=3, batch=2) for i in b]
    resumed = [i for b in IndexBatches(start=2, n_batches=2, batch=2) for i in b]
    assert whole[2:] == resumed


def test_raw_validation_pairs_crop_the_centre_and_skip_sizes_too_long() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (10, 14, 3), dtype=np.uint8) for _ in range(10)]
    seq = RawSequence(name="clips/day", frames=frames, numbers=list(range(1, 11)), paths=[])
    # 11 frames do not fit: that size is skipped, the next still gives its pairs; count 4 of
    # the starts 0..5 is 0, 1.67, 3.33, 5 rounded to the nearest: 0, 2, 3, 5
    pairs = raw_validation_pairs(seq, sizes=(11, 5), count=4, crop=4, linear_modes=(False,))
    assert [n for *_, n in pairs] == [f"day_c{c}_w5_plain" for c in (3, 5, 6, 8)]
    for (blur, sharp, _), s in zip(pairs, (0, 2, 3, 5), strict=True):
        assert sharp.shape == blur.shape == (4, 4, 3)
        assert np.array_equal(sharp, frames[s + 2][3:7, 5:9] / np.float32(255))
        window = [f[3:7, 5:9] for f in frames[s : s + 5]]
        np.testing.assert_allclose(blur, temporal_average(window, linear=False), atol=1e-6)


def test_source_weights_count_only_sources_with_data() -> None:
    # A weight on a source with no data is dropped (the rest renormalised); with no weighted
    # source left the run must stop with a message, not draw from NaN probabilities.
    photo = _textured(16, 16)
    ds = DeblurDataset(photos=[photo], weights=(2.0, 1.0, 0.5))
    assert ds.weights.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no training source"):
        DeblurDataset(photos=[photo], weights=(1.0, 0.0, 0.0))


def test_still_samples_get_webcam_noise_on_the_input_and_flips_on_both() -> None:
    # A still sample's input is its target through the webcam model (noise on the input only),
    # and augmentation flips and turns input and target together; off, every target is a plain
    # crop of the photo.
    photo = _textured(40, 40, seed=6)

    def items(augment: bool) -> list[dict]:
        params = SynthParams(
            still_fraction=1.0,
            noise_prob=1.0,
            noise_sigma=(0.05, 0.05),
            poisson_prob=0.0,
            jpeg_prob=0.0,
            sharpness_threshold=0.0,
            augment=augment,
        )
        ds = DeblurDataset(photos=[photo], weights=(0, 1, 0), params=params, patch=24, seed=1)
        return [ds[i] for i in range(12)]

    plain = items(False)
    for it in plain:
        assert len(_locate(it["sharp"].permute(1, 2, 0).numpy(), [photo])) == 1
        noise = (it["blur"] - it["sharp"]).numpy()
        assert 0.03 < float(noise.std()) < 0.06
    turned = items(True)
    assert any(not _locate(it["sharp"].permute(1, 2, 0).numpy(), [photo]) for it in turned)


def test_still_gopro_samples_show_the_sharp_frame_as_input(tmp_path: Path) -> None:
    # GoPro pairs come with their blur on disk: a still sample must still show the sharp frame.
    from training.data import gopro_pairs

    sharp = _textured(40, 48, seed=7)
    seq = tmp_path / "train" / "GOPR_b"
    for sub, img in (("sharp", sharp), ("blur", cv2.blur(sharp, (5, 5)))):
        (seq / sub).mkdir(parents=True)
        cv2.imwrite(str(seq / sub / "000001.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    params = SynthParams(still_fraction=1.0, noise_prob=0, jpeg_prob=0)
    ds = DeblurDataset(
        gopro=gopro_pairs(tmp_path, "train"), weights=(0, 0, 1), params=params, patch=32
    )
    assert all(torch.equal(ds[i]["blur"], ds[i]["sharp"]) for i in range(3))


def test_gopro_pairs_that_cannot_be_used_are_drawn_again(tmp_path: Path) -> None:
    # A missing file or a pair whose two frames differ in size is skipped for another draw;
    # one bad pair must not stop the run, nor a mismatched one pair a target with another crop.
    sharp = _textured(32, 48, seed=8)
    good, odd = tmp_path / "good", tmp_path / "odd"
    for folder, s in ((good, sharp), (odd, _textured(28, 40, seed=9))):
        folder.mkdir()
        cv2.imwrite(str(folder / "sharp.png"), cv2.cvtColor(s, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "blur.png"), cv2.cvtColor(_textured(32, 48), cv2.COLOR_RGB2BGR))
    missing = (tmp_path / "none_blur.png", tmp_path / "none_sharp.png")
    pairs = [missing, (odd / "blur.png", odd / "sharp.png")]
    pairs += [(good / "blur.png", good / "sharp.png")] * 4
    params = SynthParams(noise_prob=0, jpeg_prob=0, augment=False, sharpness_threshold=0.0)
    # the patch is as tall as the frames: the only row to crop from is the first
    ds = DeblurDataset(gopro=pairs, weights=(0, 0, 1), params=params, patch=32)
    for i in range(10):
        hits = _locate(ds[i]["sharp"].permute(1, 2, 0).numpy(), [sharp])
        assert len(hits) == 1 and hits[0][1] == 0, i


def test_jpeg_quality_range_includes_its_upper_end() -> None:
    # jpeg_quality (lo, hi) is inclusive: (90, 90) means quality 90 on every JPEG-degraded input.
    from training.data import jpeg_compress

    params = SynthParams(
        still_fraction=1.0, noise_prob=0, jpeg_prob=1.0, jpeg_quality=(90, 90), augment=False
    )
    ds = DeblurDataset(photos=[_textured(40, 40)], weights=(0, 1, 0), params=params, patch=24)
    for i in range(3):
        item = ds[i]
        sharp = item["sharp"].permute(1, 2, 0).numpy()
        assert np.array_equal(item["blur"].permute(1, 2, 0).numpy(), jpeg_compress(sharp, 90))


# --------------------------------------------------------------------------------------------
# Blur synthesis, noise model and loading: behaviour each training pair depends on
# --------------------------------------------------------------------------------------------


def test_raw_frame_windows_past_the_clip_end_at_its_last_frame(tmp_path: Path) -> None:
    # A range reaching past the clip (the config's default end on a short clip) must give the
    # same full windows, not short slices whose "centre" is no longer the middle frame.
    for i in range(1, 16):
        cv2.imwrite(str(tmp_path / f"{i:06d}.png"), np.full((4, 4, 3), i, np.uint8))
    wins = raw_frame_windows(tmp_path, first=1, last=100, sizes=(7,))
    assert wins == raw_frame_windows(tmp_path, first=1, last=15, sizes=(7,))
    assert [int(p.stem) for p in wins[-1][0]] == list(range(9, 16)) and wins[-1][1] == 12


def test_center_kernel_is_mirror_symmetric_and_averages_colour_kernels() -> None:
    # Mass heavier on the far side of the centre leaves more empty border on the near side:
    # trimming both sides by the larger margin would cut off kernel mass and move the centre.
    k = np.zeros((9, 15))
    k[4, 3], k[4, 6], k[2, 6] = 1.0, 3.0, 0.5
    for kk in (k, k[:, ::-1], k[::-1], k.T, k.T[::-1]):
        c = center_kernel(kk)
        assert c.sum() == pytest.approx(1.0, abs=1e-6)
        assert _com(c) == (
            pytest.approx(c.shape[0] // 2, abs=WARP_STEP),
            pytest.approx(c.shape[1] // 2, abs=WARP_STEP),
        )
    np.testing.assert_allclose(center_kernel(k[:, ::-1]), center_kernel(k)[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(center_kernel(k[::-1]), center_kernel(k)[::-1], atol=1e-6)
    # An RGB kernel is the mean of its channels; negative values (a badly exported kernel) are
    # no light and count as zero.
    rgb = np.zeros((9, 15, 3))
    rgb[..., 0], rgb[..., 2] = k, k[::-1]
    np.testing.assert_allclose(center_kernel(rgb), center_kernel(k + k[::-1]), atol=1e-6)
    np.testing.assert_allclose(center_kernel(np.where(k > 0, k, -0.2)), center_kernel(k), atol=1e-6)
    for empty in (np.zeros((5, 5)), -np.ones((5, 5))):
        with pytest.raises(ValueError, match="no positive mass"):
            center_kernel(empty)


def test_blur_with_kernel_keeps_non_square_and_even_kernels_in_place() -> None:
    img = np.zeros((41, 41, 3), np.float32)
    img[20, 20] = 1.0
    # A one-hot 3 x 7 kernel at its centre pixel is the identity.
    one = np.zeros((3, 7), np.float32)
    one[1, 3] = 1.0
    np.testing.assert_array_equal(blur_with_kernel(img, one), img)
    # Even kernels have no centre pixel: they are centred first (else half a pixel of shift).
    for shape in ((2, 3), (3, 2), (2, 2), (4, 6)):
        k = np.ones(shape, np.float32)
        k[0, 0] = 3.0  # asymmetric, so the centring has a direction to get wrong
        out = blur_with_kernel(img, k / k.sum())
        assert out.sum() == pytest.approx(3.0, abs=1e-4)
        assert _com(out[:, :, 0]) == (
            pytest.approx(20, abs=WARP_STEP),
            pytest.approx(20, abs=WARP_STEP),
        )
    # The border is reflected: a flat picture stays flat right up to its edges (no dark frame).
    flat = np.full((12, 16, 3), 0.5, np.float32)
    np.testing.assert_allclose(
        blur_with_kernel(flat, center_kernel(np.ones((5, 9)))), 0.5, atol=1e-6
    )
    # uint8 pictures come out on the [0, 1] scale, and one channel stays (H, W, 1).
    u8 = np.full((12, 16, 3), 255, np.uint8)
    np.testing.assert_allclose(blur_with_kernel(u8, np.ones((3, 3)) / 9), 1.0, atol=1e-6)
    assert blur_with_kernel(flat[:, :, :1], np.ones((3, 3)) / 9).shape == (12, 16, 1)


def test_a_calm_hand_moves_in_a_straight_line() -> None:
    # anxiety 0 switches off the jerks and the random acceleration: the walk keeps its first
    # direction, so its end lies the whole path length from its start.
    for seed in range(4):
        traj = random_trajectory(np.random.default_rng(seed), length=30.0, n_steps=64, anxiety=0.0)
        assert abs(traj[-1] - traj[0]) == pytest.approx(30.0, rel=1e-6)


def test_trajectory_psf_exposure_even_samples_and_even_size() -> None:
    # exposure keeps the first fraction of the path: half of a 10-sample stroke is its first 5.
    line = np.arange(10, dtype=np.float64) + 0j
    np.testing.assert_allclose(
        trajectory_to_psf(line, size=21, exposure=0.5, centre="time"),
        trajectory_to_psf(line[:5], size=21, centre="time"),
        atol=1e-7,
    )
    # With an even count of samples, mid-exposure lies between the two middle ones: a uniform
    # stroke of 4 samples then has its centre of mass on the centre pixel.
    four = trajectory_to_psf(line[:4], size=21, centre="time")
    assert _com(four) == (pytest.approx(10, abs=1e-3), pytest.approx(10, abs=1e-3))
    # An even size grows to the next odd one, so the PSF has a centre pixel.
    assert trajectory_to_psf(line, size=20, centre="time").shape == (21, 21)
    assert max(trajectory_to_psf(line, size=20).shape) <= 21
    # A stroke longer than the PSF is scaled about its centre to fill all but a one-pixel border
    # (room for the centring): 13 of 15 pixels, not the longest possible or half of it.
    long = np.arange(41, dtype=np.float64) + 0j
    assert trajectory_to_psf(long, size=15).shape == (1, 13)


def test_random_psf_passes_its_draws_to_the_rasteriser(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.data as D

    calls: list[dict[str, Any]] = []
    real = D.trajectory_to_psf

    def spy(traj: np.ndarray, **kw: Any) -> np.ndarray:
        calls.append(kw)
        return real(traj, **kw)

    monkeypatch.setattr(D, "trajectory_to_psf", spy)
    for seed in range(40):
        D.random_psf(np.random.default_rng(seed), max_size=15, exposure=(0.3, 0.4), centre="time")
    assert all(c["centre"] == "time" and 0.3 <= c["exposure"] <= 0.4 for c in calls)
    sizes = {c["size"] for c in calls}
    assert sizes == {5, 7, 9, 11, 13, 15}  # every odd size up to the maximum, not only it


def test_camera_path_is_a_scaled_roll_drawn_both_ways() -> None:
    from training.data import camera_path

    angles, zooms, diagonals = [], [], []
    for seed in range(40):
        maps = camera_path(
            np.random.default_rng(seed), frames=7, speed=(1.0, 1.0), turn=2.0, zoom=0.05, curve=0.0
        )
        a = maps[4, :, :2]  # one frame after the centre
        assert a[0, 0] == pytest.approx(a[1, 1]) and a[0, 1] == pytest.approx(-a[1, 0])
        angles.append(math.degrees(math.atan2(a[1, 0], a[0, 0])))
        zooms.append(math.hypot(a[0, 0], a[1, 0]) - 1.0)
        step = maps[4, :, 2]
        diagonals.append(step[0] * step[1])
    # turn is in degrees per frame, zoom a fraction per frame, each drawn from -max to +max.
    assert max(abs(x) for x in angles) <= 2.0 and min(angles) < -0.5 and max(angles) > 0.5
    assert max(abs(z) for z in zooms) <= 0.05 and min(zooms) < -0.01 and max(zooms) > 0.01
    assert min(diagonals) < -0.1 and max(diagonals) > 0.1  # directions in every quadrant
    with pytest.raises(ValueError, match="speed"):
        camera_path(np.random.default_rng(0), frames=7, speed=(-1.0, 2.0))
    with pytest.raises(ValueError, match="odd"):
        camera_path(np.random.default_rng(0), frames=-1, speed=(1.0, 2.0))


def test_camera_path_curve_is_a_fraction_of_the_speed() -> None:
    from training.data import CAMERA_CURVE, camera_path

    # The same draws at twice the speed give twice the path, bend included.
    slow = camera_path(np.random.default_rng(5), frames=9, speed=(1.0, 1.0))
    fast = camera_path(np.random.default_rng(5), frames=9, speed=(2.0, 2.0))
    np.testing.assert_allclose(fast[:, :, 2], 2.0 * slow[:, :, 2], atol=1e-12)
    # The per-frame acceleration (second difference) has a standard deviation of curve x speed
    # on each axis, so its squared length averages 2 (curve x speed)^2.
    acc = []
    for seed in range(200):
        d = camera_path(np.random.default_rng(seed), frames=3, speed=(2.0, 2.0))[:, :, 2]
        acc.append(float(np.sum((d[0] + d[2] - 2 * d[1]) ** 2)) / (2.0 * CAMERA_CURVE) ** 2)
    assert 1.5 < float(np.mean(acc)) < 2.5


def test_camera_path_margin_counts_zoom_from_the_patch_centre() -> None:
    from training.data import camera_path_margin

    maps = np.zeros((2, 2, 3))
    maps[0, :, :2] = np.eye(2)
    maps[1, :, :2] = 1.1 * np.eye(2)  # corners of a 32-px patch move 1.6 px outwards
    assert camera_path_margin(maps, 32) == 2 + 2


def test_render_camera_motion_rolls_about_the_centre_and_mirrors_the_border() -> None:
    from training.data import render_camera_motion

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    # A quarter turn: patch point (x, y) sees scene point (-y, x) about the centre pixel.
    quarter = np.array([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    (frame,) = render_camera_motion(img, quarter, centre=(30, 35), size=21)
    np.testing.assert_array_equal(frame, np.rot90(img[20:41, 25:46]))
    # Near the corner the frame reads the mirror image (edge pixel not repeated), not black.
    ident = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    (corner,) = render_camera_motion(img, ident, centre=(4, 5), size=21)
    padded = np.pad(img, ((10, 10), (10, 10), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(corner, padded[4:25, 5:26])


def test_load_kernels_skips_unreadable_files_and_averages_colour(tmp_path: Path) -> None:
    from training.data import load_kernels

    k = np.zeros((9, 9, 3), np.uint8)
    k[4, 2, 2] = 200  # red only (BGR on disk)
    k[4, 6, 1] = 200  # green only
    cv2.imwrite(str(tmp_path / "a.png"), k)
    (tmp_path / "b.png").write_bytes(b"not a png")
    (kernel,) = load_kernels(tmp_path)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    # Both dots count, half each, with the centre of mass between them.
    assert sorted(kernel.ravel())[-2:] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert _com(kernel) == (
        pytest.approx(kernel.shape[0] // 2),
        pytest.approx(kernel.shape[1] // 2),
    )


def test_add_noise_grain_is_per_channel_and_stays_in_range() -> None:
    from training.data import add_noise

    grey = np.full((64, 64, 3), 0.5, np.float32)
    out = add_noise(grey, np.random.default_rng(0), gaussian_sigma=0.05)
    r, g = (out[..., i].ravel() - 0.5 for i in range(2))
    assert abs(float(np.corrcoef(r, g)[0, 1])) < 0.1  # a sensor's pixels, not grey blotches
    black = add_noise(np.zeros_like(grey), np.random.default_rng(0), gaussian_sigma=0.05)
    assert float(black.min()) == 0.0 and float(black.max()) <= 1.0 and black.max() > 0
    # No photons asked for (0): no shot noise, not a division by zero.
    np.testing.assert_array_equal(
        add_noise(grey, np.random.default_rng(0), gaussian_sigma=0.0, poisson_peak=0.0), grey
    )


def test_jpeg_quality_is_the_one_asked_for() -> None:
    from training.data import jpeg_compress

    img = make_texture(48, 48, seed=0).astype(np.float32) / 255.0
    err = [float(np.abs(jpeg_compress(img, q) - img).mean()) for q in (10, 95)]
    assert err[0] > 2.0 * err[1]


def test_psnr_np_known_values() -> None:
    from training.data import psnr_np

    a = np.zeros((4, 4, 3), np.float32)
    assert psnr_np(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    assert psnr_np(a, a + 0.01) == pytest.approx(40.0, abs=1e-3)
    assert psnr_np(a, a) == 100.0


def test_sharpness_weighs_luma_and_both_directions() -> None:
    edge = np.zeros((16, 16, 3), np.float32)
    edge[:, 8:] = 1.0
    assert sharpness(edge) > 0 and sharpness(edge) == pytest.approx(
        sharpness(edge.transpose(1, 0, 2))
    )
    u8 = (edge * 255).astype(np.uint8)
    assert sharpness(u8) == pytest.approx(sharpness(edge))
    green, blue = edge * [0, 1, 0], edge * [0, 0, 1]
    assert sharpness(green) / sharpness(blue) == pytest.approx(0.587 / 0.114, rel=1e-4)


def test_augmentation_draws_all_eight_flips_and_turns() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    seen = {augment_pair([a], np.random.default_rng(s))[0].tobytes() for s in range(64)}
    dihedral = {
        np.ascontiguousarray(np.rot90(x, k)).tobytes() for x in (a, a[:, ::-1]) for k in range(4)
    }
    assert seen == dihedral


def test_load_photos_cuts_the_longest_side_without_aliasing_and_skips_small(
    tmp_path: Path,
) -> None:
    noise = _textured(64, 128)
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    cv2.imwrite(str(tmp_path / "strip.png"), _textured(20, 100))
    images, paths = load_photos([tmp_path], max_side=32, min_side=16)
    assert [p.name for p in paths] == ["noise.png"]  # the strip is 10 px high once cut
    (img,) = images
    assert img.shape == (16, 32, 3)
    # Area averaging: each pixel is the mean of the 4 x 4 block it covers. Sampling instead
    # (cubic) aliases fine detail into coarse false texture the student would learn as real.
    blocks = noise[..., ::-1].reshape(16, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(img - blocks).max() <= 1.0
    images, _ = load_photos([tmp_path], min_side=32)
    assert [i.shape[:2] for i in images] == [(64, 128)]  # strip 20 px high: too small


def test_load_photos_excludes_by_name_and_by_whole_path(tmp_path: Path) -> None:
    for rel in ("a.png", "b.png", "held/sub/c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), _textured(40, 40))
    hashes: dict[str, str] = {}
    images, paths = load_photos([tmp_path], exclude=["b.png", "*/held/*"], hashes=hashes)
    assert [p.name for p in paths] == ["a.png"]
    # The leakage guard's exact-copy check reads these hashes of what was loaded.
    assert hashes == {str(paths[0]): content_hash(images[0])}


def test_raw_sequence_scale_and_last_window(tmp_path: Path) -> None:
    for i in range(1, 8):
        cv2.imwrite(str(tmp_path / f"{i:06d}.png"), np.full((8, 12, 3), i, np.uint8))
    seq = RawSequence.load(tmp_path, first=1, last=7, scale=0.5)
    assert [f.shape for f in seq.frames] == [(4, 6, 3)] * 7
    assert seq.windows(7) == [0] and seq.windows(3) == [0, 1, 2, 3, 4]


def test_gopro_pairs_use_the_asked_blur_and_need_a_sharp_frame(tmp_path: Path) -> None:
    from training.data import gopro_pairs

    for seq in ("b_seq", "a_seq"):
        for sub in ("blur", "blur_gamma", "sharp"):
            (tmp_path / "train" / seq / sub).mkdir(parents=True)
            for name in ("1.png", "2.png"):
                if sub == "sharp" and name == "2.png":
                    continue  # a blurry frame without its sharp frame is no pair
                cv2.imwrite(str(tmp_path / "train" / seq / sub / name), _textured(8, 8))
    (tmp_path / "train" / "notes.txt").write_text("not a sequence")
    pairs = gopro_pairs(tmp_path, "train", blur="blur_gamma")
    rel = [(str(b.relative_to(tmp_path)), str(s.relative_to(tmp_path))) for b, s in pairs]
    assert rel == [
        ("train/a_seq/blur_gamma/1.png", "train/a_seq/sharp/1.png"),
        ("train/b_seq/blur_gamma/1.png", "train/b_seq/sharp/1.png"),
    ]
    with pytest.raises(ValueError, match="blur_gamma"):
        gopro_pairs(tmp_path, "train", blur="gamma")
    with pytest.raises(FileNotFoundError, match="no GoPro split"):
        gopro_pairs(tmp_path, "test")


def test_leakage_guard_searches_the_centre_of_two_crops_of_one_picture() -> None:
    from training.data import near_duplicates

    # Two pictures cut from one larger original, 10 % off different sides: neither holds the
    # other, only their centres overlap. The centre 80 % of each is what is searched for; its
    # corner, or the whole picture, hangs out of the other one and scores below the threshold.
    orig = make_texture(240, 300, seed=7)
    a = np.ascontiguousarray(orig[24:, :-30])
    b = np.ascontiguousarray(orig[:-24, 30:])
    found = near_duplicates({"a": image_signature(a)}, {"b": image_signature(b)})
    assert [(t, e) for t, e, _ in found] == [("a", "b")]
    # A score equal to the threshold is a match (">= threshold", as documented).
    score = found[0][2]
    again = near_duplicates({"a": image_signature(a)}, {"b": image_signature(b)}, threshold=score)
    assert [(t, e) for t, e, _ in again] == [("a", "b")]


def test_band_pass_continues_a_gradient_to_the_border_without_a_ridge() -> None:
    from training.data import _band, _FineSearch

    # A linear ramp has no band-pass content anywhere: the odd reflection padding (wide enough
    # for the coarser Gaussian) continues it as itself. An even mirror, a repeated edge or a
    # too-narrow pad folds it into a ridge of a few grey levels along the border, which two
    # featureless skies then match each other by.
    ramp = np.tile(np.arange(128, dtype=np.uint8), (96, 1))
    assert float(np.abs(_band(ramp)).max()) < 0.05
    assert float(np.abs(_band(ramp.T.copy())).max()) < 0.05
    # Such a picture (grey levels spread, no band contrast) holds nothing to search for.
    assert _FineSearch()._template("ramp", ramp, 1.0) is None


def test_fine_search_refuses_faint_pictures_and_templates_just_under_its_size_limits() -> None:
    from training.data import _FineSearch

    # Under 1 grey level of contrast a picture is sensor noise and compression, even where its
    # band-pass still shows it: stripes of +-1 grey level (std < 1) hold no template.
    x = np.arange(128, dtype=np.float64)
    faint = np.tile(np.round(100 + 1.3 * np.sin(x * 0.6)).astype(np.uint8), (128, 1))
    assert 0.5 < float(np.std(faint)) < 1.0
    assert _FineSearch()._template("faint", faint, 1.0) is None

    # A textured picture searched for in itself at magnification 1 scores 1 unless its template
    # (the centre 80 %) is under 16 px a side or under 1024 px: a chance match waits above the
    # threshold for a template that small among all the positions, scales and forms searched.
    def self_score(h: int, w: int) -> float:
        sig = np.random.default_rng(h * w).integers(0, 256, (h, w), dtype=np.uint8)
        return _FineSearch().score(("s", sig), ("s", sig), 0, 1.0)

    assert self_score(20, 80) == pytest.approx(1.0, abs=1e-4)  # template 16 x 64 = 1024 px
    assert self_score(19, 87) == -1.0  # 15 x 69 = 1035 px: one row too narrow
    assert self_score(25, 64) == -1.0  # 20 x 51 = 1020 px: too few pixels


def test_flat_windows_split_at_half_a_grey_level_of_band_contrast() -> None:
    from training.data import _flat_windows

    # Correlation over a window of the searched image with a band contrast (std) under 0.5 is
    # noise over noise: those windows are left out, those just above it are kept.
    checker = np.indices((12, 24)).sum(axis=0) % 2 * 2.0 - 1.0
    band = checker * np.where(np.arange(24) < 12, 0.55, 0.45)
    flat = _flat_windows(band.astype(np.float32), (4, 4))
    assert flat.shape == (9, 21)
    assert not flat[:, :9].any()  # windows inside the 0.55 half
    assert flat[:, 12:].all()  # windows inside the 0.45 half


def test_leakage_guard_pairs_panoramas_with_their_crops_at_the_coarse_grid_they_hold() -> None:
    from training.data import near_duplicates

    # A 2.4:1 thumbnail is too narrow for the 4-cell coarse window but holds the 3-cell one,
    # which is then made for every picture: without it a re-saved panorama, or its middle cut
    # to a 1.44:1 photo, never reaches the full search.
    pano = make_texture(100, 240, seed=9)
    train = {"copy": image_signature(_jpeg(pano, 80)), "middle": image_signature(pano[:, 48:192])}
    found = near_duplicates(train, {"pano": image_signature(pano)})
    assert sorted((t, e) for t, e, _ in found) == [("copy", "pano"), ("middle", "pano")]
    # A 3:1 panorama holds no coarse window at all; a 2.4:1 crop of it does. The pair goes to
    # the full search when either picture has no window, not only when both lack one.
    wide = make_texture(80, 240, seed=10)
    found = near_duplicates(
        {"cut": image_signature(wide[:, 24:216])}, {"wide": image_signature(wide)}
    )
    assert [(t, e) for t, e, _ in found] == [("cut", "wide")]


class _ScriptedHand:
    """Stands in for the generator of ``random_trajectory``: ``uniform`` returns the scripted
    fractions of its range in turn, ``normal`` 0 (no random acceleration)."""

    def __init__(self, fractions: list[float]) -> None:
        self.fractions = fractions

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.fractions.pop(0)

    def normal(self) -> float:
        return 0.0


def test_a_jerk_turns_the_hand_back_and_the_pull_is_towards_the_start() -> None:
    from typing import cast

    # Draws: centripetal, gaussian term, jerk frequency, initial angle, then one per step (a
    # jerk when under 0.2 here) and, for a jerk, its angle about pi. 20 steps of 1 px along x;
    # one jerk at step 10, straight back (pi): Boracchi & Foi's jerk reverses the hand.
    steps = [0.99] * 10 + [0.0, 0.5] + [0.99] * 9
    hand = cast(np.random.Generator, _ScriptedHand([0.0, 0.0, 1.0, 0.0, *steps]))
    traj = random_trajectory(hand, length=20.0, n_steps=21, anxiety=1.0)
    np.testing.assert_allclose(traj[:11], np.arange(11), atol=1e-9)
    np.testing.assert_allclose(traj[11:], np.arange(9, -1, -1), atol=1e-9)
    # No jerks, no noise, full centripetal term: the hand is pulled back towards where it
    # started and swings within 2 px of it instead of walking away.
    hand = cast(np.random.Generator, _ScriptedHand([1.0, 0.0, 0.0, 0.0, *[0.5] * 20]))
    traj = random_trajectory(hand, length=20.0, n_steps=21, anxiety=1.0)
    assert float(np.abs(traj).max()) == pytest.approx(2.0, abs=1e-9)


def test_trajectory_psf_splats_each_sample_bilinearly_between_pixels() -> None:
    # With 4 sub-pixels a pixel, a sample 0.45 px right of the centre lies 0.3 of the way from
    # the centre pixel's last sub-pixel to the next pixel's first: 0.7 of its mass stays, 0.3
    # goes right. 0.55 px down it is 0.7 of the way, so 0.3 stays and 0.7 goes down. The pair
    # of samples +-(0.45, 0.55) around mid-exposure gives the mirrored split at the other one.
    traj = np.array([-0.45 - 0.55j, 0.45 + 0.55j])
    psf = trajectory_to_psf(traj, size=9, centre="time")
    a = np.outer([0.0, 0.3, 0.7], [0.0, 0.7, 0.3])  # rows c-1..c+1, columns c-1..c+1
    b = np.outer([0.7, 0.3, 0.0], [0.3, 0.7, 0.0])
    expected = np.zeros((9, 9))
    expected[3:6, 3:6] = 0.5 * (a + b)
    np.testing.assert_allclose(psf, expected, atol=1e-6)


def test_render_camera_motion_resamples_a_half_pixel_shift_bicubically() -> None:
    from training.data import render_camera_motion

    # A half-pixel shift of a sinusoid (period 10 px) through OpenCV's bicubic kernel keeps its
    # contrast within 2 %; bilinear interpolation loses cos(pi / 10), 5 %, and nearest-neighbour
    # is half a pixel off. The scene is float, so no rounding hides the difference.
    xs = np.arange(60, dtype=np.float32)
    img = np.repeat(np.tile(np.cos(2 * np.pi * xs / 10), (40, 1))[:, :, None], 3, axis=2)
    shift = np.array([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    (frame,) = render_camera_motion(img, shift, centre=(20, 30), size=21)
    want = np.cos(2 * np.pi * (np.arange(21) + 20 + 0.5) / 10)
    err = np.abs(frame[:, :, 0] - want[None, :]).max()
    assert err < 0.03, err


def test_frame_motion_stats_skip_pairs_across_a_missing_frame() -> None:
    from training.data import frame_motion_stats

    # Frames 5 and 6 are missing: frames 4 and 7 are not a consecutive pair, and their motion
    # (three frames' worth) must not count as one frame's.
    scene = make_texture(48, 120, seed=2)
    numbers = [1, 2, 3, 4, 7, 8, 9]
    frames = [scene[8:40, 2 * n : 2 * n + 64].copy() for n in numbers]
    seq = RawSequence(name="s", frames=frames, numbers=numbers, paths=[])
    rows = frame_motion_stats(seq, ranges={"all": (1, 9)}, step=1)
    assert [(r["range"], r["pairs"]) for r in rows] == [("all 1-9", 5)]
