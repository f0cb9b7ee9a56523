"""Metrics on known inputs, and `python -m training.evaluate` end to end on data made here."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training import data as D
from training import evaluate as EV
from training.metrics import PerceptualDistance, ms_ssim, psnr, ssim, unsharp_mask
from training.models.dmphn import DMPHN
from training.models.student import create_student

torch.set_num_threads(2)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def test_psnr_known_values() -> None:
    x = torch.rand(2, 3, 32, 32) * 0.8
    assert psnr(x, x).tolist() == [100.0, 100.0]  # identical: capped, finite
    assert psnr(x + 0.1, x)[0].item() == pytest.approx(20.0, abs=1e-3)  # MSE 0.01
    assert psnr(x + 0.01, x)[1].item() == pytest.approx(40.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"equal shape, got \(2, 3, 32, 32\) and \(2, 3, 32, 31\)"):
        psnr(x, x[..., :31])


def test_ssim_and_ms_ssim() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 192, 192, generator=g)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert ssim(noisy, x).item() < 0.97
    assert ms_ssim(noisy, x).item() < 1.0
    assert math.isnan(ms_ssim(x[..., :64, :64], x[..., :64, :64]).item())  # too small for 5 scales


def _fake_vgg19n(path: Path) -> Path:
    """A random state dict laid out like the normalised VGG-19 (keys 0, 2, 5, 9, 12, 16)."""
    torch.manual_seed(0)
    shapes = {
        0: (3, 3, 1, 1),
        2: (64, 3, 3, 3),
        5: (64, 64, 3, 3),
        9: (128, 64, 3, 3),
        12: (128, 128, 3, 3),
        16: (256, 128, 3, 3),
    }
    sd = {}
    for i, shape in shapes.items():
        sd[f"{i}.weight"] = torch.randn(shape) * 0.1
        sd[f"{i}.bias"] = torch.zeros(shape[0])
    torch.save(sd, path)
    return path


def test_perceptual_distance(tmp_path: Path) -> None:
    pd = PerceptualDistance(_fake_vgg19n(tmp_path / "vgg.pth"))
    assert pd.available, pd.reason
    x = torch.rand(2, 3, 40, 40)
    assert pd(x, x).tolist() == [0.0, 0.0]
    assert (pd(x.flip(-1), x) > 0).all()
    missing = PerceptualDistance(tmp_path / "nope.pth")
    assert not missing.available and "nope.pth" in missing.reason
    assert math.isnan(missing(x, x)[0].item())


def test_unsharp_mask_formula() -> None:
    flat = np.full((20, 20, 3), 0.4, np.float32)
    assert np.allclose(unsharp_mask(flat), flat, atol=1e-6)  # nothing to sharpen
    img = np.zeros((21, 21, 3), np.float32)
    img[:, 10:] = 0.5
    out = unsharp_mask(img, amount=1.0, sigma=2.0)
    expected = np.clip(2 * img - cv2.GaussianBlur(img, (0, 0), 2.0), 0, 1)
    assert np.allclose(out, expected, atol=1e-6)
    assert out[5, 11, 0] > 0.5  # overshoot on the bright side of the edge


# --------------------------------------------------------------------------------------------
# data kinds
# --------------------------------------------------------------------------------------------


def test_parse_data() -> None:
    assert EV.parse_data("raw:/a/b").first == 240
    spec = EV.parse_data("raw:/a:b:250-260")
    assert (spec.path, spec.first, spec.last) == ("/a:b", 250, 260)
    assert EV.parse_data("pairs:x,y").sharp_dir == "y"
    assert EV.parse_data("demo:").kind == "demo"
    assert EV.parse_data("camera:/x").path == "/x"
    assert EV.parse_data("sharp:/x").kind == "sharp"
    with pytest.raises(ValueError, match="bad --data"):
        EV.parse_data("zip:/x")


@pytest.mark.parametrize(
    "spec", ["raw:", "raw::240-299", "pairs:,sharp", "pairs:blur,", "real:", "sharp:"]
)
def test_parse_data_refuses_an_empty_folder(spec: str) -> None:
    # Path("") is the current directory: `raw:` searched it for frames and failed later with
    # "no frame windows in  frames 240-299"; `pairs:,sharp` read the blurry images from there.
    with pytest.raises(ValueError, match="needs a folder"):
        EV.parse_data(spec)


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(D.to_uint8(img), cv2.COLOR_RGB2BGR))


def test_raw_windows_stay_inside_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(1, 41):
        _write(tmp_path / "seq" / f"{i:06d}.png", rng.uniform(0, 1, (24, 32, 3)).astype(np.float32))
    samples = list(EV.iter_samples(EV.parse_data(f"raw:{tmp_path / 'seq'}:5-25"), windows=(7, 11)))
    # Centres from first+10 every 20 frames: only 15; both windows fit in 5-25; two modes each.
    assert sorted((s.set, s.name) for s in samples) == [
        ("raw-linear", "seq_c015_w11"),
        ("raw-linear", "seq_c015_w7"),
        ("raw-plain", "seq_c015_w11"),
        ("raw-plain", "seq_c015_w7"),
    ]
    frames = [D.load_image(tmp_path / "seq" / f"{i:06d}.png") for i in range(12, 19)]
    plain = next(s for s in samples if s.name.endswith("w7") and s.set == "raw-plain")
    assert np.allclose(plain.blurry, np.mean(frames, axis=0), atol=1e-5)
    assert np.array_equal(plain.sharp, frames[3])
    linear = next(s for s in samples if s.name.endswith("w7") and s.set == "raw-linear")
    assert not np.allclose(linear.blurry, plain.blurry, atol=1e-3)
    only_plain = list(
        EV.iter_samples(EV.parse_data(f"raw:{tmp_path / 'seq'}:5-25"), mode="plain", windows=(7,))
    )
    assert [s.set for s in only_plain] == ["raw-plain"]


def test_raw_limit_scores_every_window_size(tmp_path: Path) -> None:
    """--limit takes whole centres, each with all its windows, not the smallest windows only."""
    rng = np.random.default_rng(0)
    for i in range(1, 61):
        _write(tmp_path / "seq" / f"{i:06d}.png", rng.uniform(0, 1, (16, 16, 3)).astype(np.float32))
    spec = EV.parse_data(f"raw:{tmp_path / 'seq'}:1-60")
    samples = list(EV.iter_samples(spec, mode="plain", windows=(7, 11), limit=2))
    assert [s.name for s in samples] == ["seq_c011_w7", "seq_c011_w11"]
    everything = list(EV.iter_samples(spec, mode="plain", windows=(7, 11)))
    assert [s.name for s in everything] == [
        "seq_c011_w7",
        "seq_c011_w11",
        "seq_c031_w7",
        "seq_c031_w11",
        "seq_c051_w7",
        "seq_c051_w11",
    ]


def test_lai_kernel_is_centred(tmp_path: Path) -> None:
    """An off-centre delta kernel must leave the image unchanged (no shift)."""
    sharp = np.random.default_rng(1).uniform(0, 1, (40, 50, 3)).astype(np.float32)
    _write(tmp_path / "lai" / "sharp" / "a.png", sharp)
    k = np.zeros((9, 9, 3), np.float32)
    k[1, 2] = 1.0
    _write(tmp_path / "lai" / "kernels" / "k.png", k)
    (s,) = list(EV.iter_samples(EV.parse_data(f"lai:{tmp_path / 'lai'}")))
    assert s.name == "a_k"
    assert np.abs(s.blurry - s.sharp).max() < 1e-5


def test_gopro_root_scores_only_its_test_split(tmp_path: Path) -> None:
    img = np.random.default_rng(2).uniform(0, 1, (32, 48, 3)).astype(np.float32)
    for split in ("train", "test"):
        for sub in ("blur", "sharp"):
            _write(tmp_path / "GOPRO" / split / f"{split}_seq" / sub / "0001.png", img)
    samples = list(EV.iter_samples(EV.parse_data(f"gopro:{tmp_path / 'GOPRO'}"), mode="plain"))
    assert [s.name for s in samples] == ["test_seq_0001"]
    # a folder of sequences without the split level still works
    samples = list(
        EV.iter_samples(EV.parse_data(f"gopro:{tmp_path / 'GOPRO' / 'train'}"), mode="plain")
    )
    assert [s.name for s in samples] == ["train_seq_0001"]


def test_gopro_pair_of_different_sizes_is_skipped_not_a_crash(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    seq = tmp_path / "gopro" / "seq"
    for name, sharp_shape in (("0001.png", (32, 48, 3)), ("0002.png", (40, 48, 3))):
        _write(seq / "blur" / name, rng.uniform(0, 1, (32, 48, 3)).astype(np.float32))
        _write(seq / "sharp" / name, rng.uniform(0, 1, sharp_shape).astype(np.float32))
    spec = EV.parse_data(f"gopro:{tmp_path / 'gopro'}")
    # The pair that differs would stop evaluate() at its metrics, after every earlier image.
    samples = list(EV.iter_samples(spec, mode="plain"))
    assert [s.name for s in samples] == ["seq_0001"]


def test_bad_lai_and_pairs_folders_fail_loudly(tmp_path: Path) -> None:
    _write(tmp_path / "lai" / "sharp" / "a.png", np.zeros((20, 20, 3), np.float32))
    (tmp_path / "lai" / "kernels").mkdir()
    (tmp_path / "lai" / "kernels" / "k.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="unreadable blur kernel"):
        list(EV.iter_samples(EV.parse_data(f"lai:{tmp_path / 'lai'}")))
    spec = EV.parse_data(f"pairs:{tmp_path / 'nope'},{tmp_path / 'lai' / 'sharp'}")
    with pytest.raises(FileNotFoundError, match="pairs: no folder"):
        list(EV.iter_samples(spec))
    (tmp_path / "empty").mkdir()
    spec = EV.parse_data(f"pairs:{tmp_path / 'empty'},{tmp_path / 'lai' / 'sharp'}")
    with pytest.raises(FileNotFoundError, match="pairs: no images"):
        list(EV.iter_samples(spec))


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaldata")
    folders = D.make_synthetic_dataset(root, 1, frames=32, size=(96, 80), seed=3, n_photos=0)
    # A GoPro-layout folder and a plain pairs folder from the same frames.
    seq = sorted(folders["raw"].glob("seq_00/*.png"))
    frames = [D.load_image(p) for p in seq[:9]]
    for sub, linear in (("blur", False), ("blur_gamma", True)):
        _write(
            root / "GOPRO" / "test" / "s1" / sub / "0001.png",
            D.temporal_average(frames, linear=linear),
        )
    _write(root / "GOPRO" / "test" / "s1" / "sharp" / "0001.png", frames[4])
    _write(root / "pairs" / "blur" / "x.png", D.temporal_average(frames[:7], linear=False))
    _write(root / "pairs" / "sharp" / "x.png", frames[3])
    # A student checkpoint and a (random) DMPHN teacher in the released file layout.
    torch.manual_seed(0)
    student = create_student("tiny")
    torch.save({"model": student.state_dict(), "config": {"student": "tiny"}}, root / "best.pt")
    teacher = DMPHN()
    tdir = root / "dmphn"
    tdir.mkdir()
    for part in (
        "encoder_lv1",
        "encoder_lv2",
        "encoder_lv3",
        "decoder_lv1",
        "decoder_lv2",
        "decoder_lv3",
    ):
        torch.save(getattr(teacher, part).state_dict(), tdir / f"{part}.pkl")
    return {
        "root": root,
        "raw": folders["raw"] / "seq_00",
        "ckpt": root / "best.pt",
        "teacher": tdir,
    }


def test_sharp_spec_scores_how_much_each_method_changes_a_sharp_frame(
    dataset: dict[str, Path], tmp_path: Path
) -> None:
    frames = sorted(dataset["raw"].glob("*.png"))
    folder = tmp_path / "sharp"
    for i in (0, 5):
        _write(folder / f"f{i}.png", D.load_image(frames[i]))
    (folder / "broken.png").write_bytes(b"not a png")  # skipped with a warning, not fatal
    with pytest.raises(FileNotFoundError, match="sharp: no images"):
        list(EV.iter_samples(EV.parse_data(f"sharp:{tmp_path / 'empty_dir'}")))
    # The untrained student is the identity (zero head); a copy whose head adds 0.02 everywhere
    # changes every pixel by 5 levels of 255, which the set must show.
    torch.manual_seed(0)
    shifted = create_student("tiny")
    with torch.no_grad():
        shifted.head.bias.fill_(0.02)
    torch.save(
        {"model": shifted.state_dict(), "config": {"student": "tiny"}}, tmp_path / "shifted.pt"
    )
    args = [
        "--model", str(dataset["ckpt"]), "--model", str(tmp_path / "shifted.pt"),
        "--data", f"sharp:{folder}", "--no-perceptual", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert EV.main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["sets"]) == ["sharp"]
    rows = summary["sets"]["sharp"]
    assert rows["n"] == 2
    scores = {m: rows["methods"][m]["psnr"] for m in summary["methods"]}
    identity, changed = summary["methods"][2], summary["methods"][3]
    assert scores["blurry"] == 100.0 and scores[identity] == 100.0
    assert scores[changed] == pytest.approx(-10 * math.log10(0.02**2), abs=1.0)  # ~34 dB
    assert scores["unsharp"] < 60  # the unsharp mask sharpens whatever it gets


def test_evaluate_cli_end_to_end(
    dataset: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = dataset["root"]
    args = [
        "--model", str(dataset["ckpt"]),
        "--data", f"raw:{dataset['raw']}:1-30",
        "--data", f"gopro:{root / 'GOPRO'}",
        "--data", f"pairs:{root / 'pairs' / 'blur'},{root / 'pairs' / 'sharp'}",
        "--teacher", "dmphn", "--teacher-weights", str(dataset["teacher"]),
        "--cache-dir", str(tmp_path / "cache"),
        "--vgg-weights", str(_fake_vgg19n(tmp_path / "vgg.pth")),
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert EV.main(args) == 0
    first = capsys.readouterr().out
    assert "1 computed" not in first and "0 from cache" in first

    out = tmp_path / "out"
    methods = ["blurry", "unsharp", "best_model", "teacher_dmphn"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"][0] == "blurry" and summary["methods"][1] == "unsharp"
    assert summary["methods"][3] == "teacher_dmphn" and len(summary["methods"]) == 4
    # which bytes the row measured (training.export --metrics checks it against what it ships)
    digest = hashlib.sha256(dataset["ckpt"].read_bytes()).hexdigest()
    assert summary["model_sha256"] == {summary["methods"][2]: digest}
    assert set(summary["sets"]) == {
        "raw-plain",
        "raw-linear",
        "gopro-plain",
        "gopro-linear",
        "pairs",
    }
    raw = summary["sets"]["raw-plain"]
    assert raw["n"] == 2  # centre 11, windows 7 and 11
    assert raw["methods"]["blurry"]["delta_psnr"] == 0.0
    assert raw["methods"]["blurry"]["psnr"] < 60  # the average really is blurry
    assert raw["methods"]["blurry"]["perceptual"] > 0

    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * (2 + 2 + 1 + 1 + 1)
    per_method = {r["method"] for r in rows}
    assert per_method == {summary["methods"][2], *[m for m in methods if m != "best_model"]}
    blurry_raw = [
        float(r["psnr"]) for r in rows if r["set"] == "raw-plain" and r["method"] == "blurry"
    ]
    assert np.mean(blurry_raw) == pytest.approx(raw["methods"]["blurry"]["psnr"], abs=1e-4)

    md = (out / "summary.md").read_text()
    assert "| blurry |" in md and "| unsharp |" in md and "| teacher_dmphn |" in md
    grid = cv2.imread(str(out / "grid_raw-plain.png"))
    assert grid is not None and grid.shape[1] > 3 * 80  # blurry | student | teacher | sharp

    # Second run: every teacher output comes from the disk cache.
    assert EV.main(args) == 0
    second = capsys.readouterr().out
    assert "teacher: 0 computed" in second


def test_camera_set_films_each_image_and_blurs_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        _write(tmp_path / "imgs" / f"{name}.png", D.procedural_scene(rng, 120, 160) / 255.0)
    spec = EV.parse_data(f"camera:{tmp_path / 'imgs'}")
    samples = list(EV.iter_samples(spec, windows=(7, 13), max_size=140))
    assert [(s.set, s.name) for s in samples[:2]] == [
        ("camera-plain", "a_w7"),
        ("camera-linear", "a_w7"),
    ]
    assert len(samples) == 8  # 2 images x 2 windows x 2 averages
    for s in samples:
        assert s.blurry.shape == s.sharp.shape and s.blurry.shape[0] == s.blurry.shape[1]
        assert s.blurry.dtype == np.float32 and 0 <= s.blurry.min() and s.blurry.max() <= 1
    # the centre frame is the sharp target: a crop of the image, untouched by resampling
    img = D.load_image_u8(tmp_path / "imgs" / "a.png")
    img = EV._fit(img, 140)
    side = samples[0].sharp.shape[0]
    y, x = img.shape[0] // 2 - side // 2, img.shape[1] // 2 - side // 2
    assert np.array_equal(D.to_uint8(samples[0].sharp), img[y : y + side, x : x + side])
    p7 = [D.psnr_np(s.blurry, s.sharp) for s in samples if s.name == "a_w7"]
    p13 = [D.psnr_np(s.blurry, s.sharp) for s in samples if s.name == "a_w13"]
    assert max(p7) < 40 and np.mean(p13) < np.mean(p7)  # longer windows blur more
    # seeded: the same files give the same set
    again = list(EV.iter_samples(spec, windows=(7, 13), max_size=140))
    assert all(np.array_equal(a.blurry, b.blurry) for a, b in zip(samples, again, strict=True))
    with pytest.raises(FileNotFoundError, match="no images"):
        list(EV.iter_samples(EV.parse_data(f"camera:{tmp_path / 'none'}")))


def test_evaluate_onnx_model_and_demo(tmp_path: Path) -> None:
    from training.export import export_onnx

    model = create_student("tiny").eval()
    export_onnx(model, tmp_path / "m.onnx")
    label, run = EV.load_model_runner(tmp_path / "m.onnx")
    assert label == "m"
    (sample,) = list(EV.iter_samples(EV.parse_data("demo:"), max_size=96, limit=1))
    with torch.no_grad():
        ref = model(torch.from_numpy(sample.blurry.transpose(2, 0, 1))[None]).clamp(0, 1)[0]
    assert np.abs(run(sample.blurry) - ref.permute(1, 2, 0).numpy()).max() < 1e-4
    assert psnr(torch.from_numpy(sample.blurry)[None].permute(0, 3, 1, 2),
                torch.from_numpy(sample.sharp)[None].permute(0, 3, 1, 2)).item() < 40  # fmt: skip


def test_same_named_models_get_their_own_rows_and_nan_output_is_refused(tmp_path: Path) -> None:
    samples = list(EV.iter_samples(EV.parse_data("demo:"), max_size=96, limit=2))
    brighter = ("student_fast", lambda x: np.clip(x * 1.1, 0, 1))
    same = ("student_fast", lambda x: x.copy())
    summary = EV.evaluate(iter(samples), [brighter, same], tmp_path / "a")
    table = summary["sets"][samples[0].set]["methods"]
    assert summary["methods"] == ["blurry", "unsharp", "student_fast", "student_fast_2"]
    assert table["student_fast_2"]["psnr"] == pytest.approx(table["blurry"]["psnr"])
    assert table["student_fast"]["psnr"] != pytest.approx(table["blurry"]["psnr"])

    def broken(x: np.ndarray) -> np.ndarray:
        y = x.copy()
        y[0, 0, 0] = np.nan
        return y

    with pytest.raises(RuntimeError, match="broken produced non-finite pixels"):
        EV.evaluate(iter(samples), [("broken", broken)], tmp_path / "b")


def test_rerun_into_the_same_folder_leaves_no_grid_of_the_earlier_run(tmp_path: Path) -> None:
    (sample,) = list(EV.iter_samples(EV.parse_data("demo:"), max_size=96, limit=1))
    EV.evaluate(iter([sample]), [], tmp_path)
    assert (tmp_path / "grid_demo.png").is_file()
    other = EV.Sample("pairs", "x", sample.blurry, sample.sharp)
    summary = EV.evaluate(iter([other]), [], tmp_path)
    assert list(summary["sets"]) == ["pairs"]
    assert sorted(p.name for p in tmp_path.glob("grid_*.png")) == ["grid_pairs.png"]


class _Teacher:
    """Stands in for ``CachedTeacher``: a fixed unsharp mask (Gaussian sigma 1), so its output
    differs from the blurry input and from every method below."""

    name = "standin"
    weights = Path("standin.pth")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        blur = cv2.GaussianBlur(img, (0, 0), 1.0)
        return np.clip(img + 1.5 * (img - blur), 0, 1).astype(np.float32)


def test_real_blur_is_scored_against_the_teacher(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for sub in ("paper_a", "paper_b"):  # the same file name in two folders keeps two rows
        _write(tmp_path / "real" / sub / "01.png", D.procedural_scene(rng, 64, 96))
    spec = EV.parse_data(f"real:{tmp_path / 'real'}")
    samples = list(EV.iter_samples(spec))
    assert sorted(s.name for s in samples) == ["paper_a_01", "paper_b_01"]
    assert all(s.sharp is None and s.set == EV.REAL_SET for s in samples)

    teacher = _Teacher()
    halfway = ("halfway", lambda x: (x + teacher(x)) / 2)
    # The stand-in changes a flat frame by far less than REAL_KEPT_DB: it counts as kept.
    flat = EV.Sample(EV.REAL_SET, "flat", np.full((48, 48, 3), 0.5, np.float32), None)
    summary = EV.evaluate(iter([*samples, flat]), [halfway], tmp_path / "out", teacher=teacher)  # type: ignore[arg-type]
    changed = summary["sets"]["real-vs-teacher-changed"]
    # The teacher is the reference, so it has no row; a method half way to it gains ~6 dB.
    assert list(changed["methods"]) == ["blurry", "unsharp", "halfway"]
    assert changed["n"] == 2 and summary["sets"]["real-vs-teacher-kept"]["n"] == 1
    assert changed["methods"]["halfway"]["delta_psnr"] == pytest.approx(
        20 * math.log10(2), abs=0.05
    )
    assert "reference: the teacher's output" in (tmp_path / "out" / "summary.md").read_text()
    assert (tmp_path / "out" / "grid_real-vs-teacher-changed.png").is_file()

    with pytest.raises(ValueError, match="no ground truth: pass --teacher"):
        EV.evaluate(iter(samples), [halfway], tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="real: no folder"):
        list(EV.iter_samples(EV.parse_data(f"real:{tmp_path / 'missing'}")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="real: no images"):
        list(EV.iter_samples(EV.parse_data(f"real:{tmp_path / 'empty'}")))


def test_cached_teacher_gives_the_same_output_computed_and_from_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.teachers as T

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.pkl").write_bytes(b"stand-in")
    torch.manual_seed(0)
    net = T.freeze(torch.nn.Conv2d(3, 3, 3, padding=1))
    monkeypatch.setattr(T, "load_teacher", lambda *args, **kwargs: net)
    teacher = EV.CachedTeacher("dmphn", weights, tmp_path / "cache")
    img = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    first, again = teacher(img), teacher(img)
    assert (teacher.misses, teacher.hits) == (1, 1)
    # A re-run reads the cache: its scores (and the real-blur kept/changed split) must be the
    # first run's, not those of the float16-rounded copy.
    assert first.dtype == again.dtype == np.float32
    assert np.array_equal(first, again)


def test_rerun_removes_only_the_grids_the_earlier_run_wrote(tmp_path: Path) -> None:
    # --out may be a folder of the user's: a file of theirs named grid_*.png is not a stale grid.
    (sample,) = list(EV.iter_samples(EV.parse_data("demo:"), max_size=96, limit=1))
    mine = tmp_path / "grid_my_notes.png"
    mine.write_bytes(b"the user's file")
    EV.evaluate(iter([sample]), [], tmp_path)
    other = EV.Sample("pairs", "x", sample.blurry, sample.sharp)
    EV.evaluate(iter([other]), [], tmp_path, grid_rows=0)  # no grid this time: none may stay
    assert sorted(p.name for p in tmp_path.glob("grid_*.png")) == ["grid_my_notes.png"]
    assert mine.read_bytes() == b"the user's file"


def test_model_sha256_names_rows_as_the_summary_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two files of one name get rows `student` and `student_2`: each row keeps its own file's
    # sha256 (a shared None made training.export refuse the row of the right file too).
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [tmp_path / "a/student.onnx", tmp_path / "b/student.onnx"]
    for i, f in enumerate(files):
        f.write_bytes(b"model %d" % i)
    monkeypatch.setattr(
        EV, "load_model_runner", lambda m, threads=0, device="cpu": (Path(m).stem, lambda x: x)
    )
    out = tmp_path / "out"
    args = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--no-perceptual"]
    args += ["--model", str(files[0]), "--model", str(files[1]), "--out", str(out)]
    assert EV.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["blurry", "unsharp", "student", "student_2"]
    assert summary["model_sha256"] == {
        "student": hashlib.sha256(b"model 0").hexdigest(),
        "student_2": hashlib.sha256(b"model 1").hexdigest(),
    }


# --------------------------------------------------------------------------------------------
# review fixes: window centres, the teacher cache, ONNX input names, CLI refusals
# --------------------------------------------------------------------------------------------


def _raw_clip(folder: Path, n: int, shape: tuple[int, int] = (16, 16)) -> Path:
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        _write(folder / f"{i:06d}.png", rng.uniform(0, 1, (*shape, 3)).astype(np.float32))
    return folder


def test_raw_scores_every_window_size_at_the_same_centres(tmp_path: Path) -> None:
    # Centres 11, 31, 51 in frames 1-60: a 21-frame window fits 11 and 31, not 51 (41-61).
    # Scoring 51 for the 7-frame window only made the set's mean lean towards short windows.
    seq = _raw_clip(tmp_path / "seq", 60)
    spec = EV.parse_data(f"raw:{seq}:1-60")
    names = [s.name for s in EV.iter_samples(spec, mode="plain", windows=(7, 21))]
    assert names == ["seq_c011_w7", "seq_c011_w21", "seq_c031_w7", "seq_c031_w21"]
    # A repeated size is scored once, not twice (which doubled its weight and the set's n).
    names = [s.name for s in EV.iter_samples(spec, mode="plain", windows=(7, 7))]
    assert names == ["seq_c011_w7", "seq_c031_w7", "seq_c051_w7"]
    with pytest.raises(FileNotFoundError, match="holds a 63-frame window"):
        list(EV.iter_samples(spec, mode="plain", windows=(7, 63)))
    with pytest.raises(ValueError, match="stride"):
        list(EV.iter_samples(spec, mode="plain", windows=(7,), raw_stride=0))


def test_raw_windows_read_only_frames_inside_the_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = _raw_clip(tmp_path / "seq", 40)
    read: list[int] = []
    load = D.load_image_u8

    def spy(path: str | Path) -> np.ndarray | None:
        read.append(int(Path(path).stem))
        return load(path)

    monkeypatch.setattr(D, "load_image_u8", spy)
    samples = list(EV.iter_samples(EV.parse_data(f"raw:{seq}:20-40"), windows=(7, 13)))
    # Centre 30 only (from 20+10, every 20); the 13-frame window spans 24-36.
    assert {s.name for s in samples} == {"seq_c030_w7", "seq_c030_w13"}
    assert min(read) == 24 and max(read) == 36
    sharp = D.load_image(seq / "000030.png")
    assert all(np.array_equal(s.sharp, sharp) for s in samples)


def test_camera_refuses_even_windows(tmp_path: Path) -> None:
    # An even window has no centre frame to be the sharp target (refused before any image is
    # read; `camera_path` refuses it too).
    _write(
        tmp_path / "imgs" / "a.png", D.procedural_scene(np.random.default_rng(0), 96, 96) / 255.0
    )
    spec = EV.parse_data(f"camera:{tmp_path / 'imgs'}")
    with pytest.raises(ValueError, match="odd"):
        list(EV.iter_samples(spec, windows=(8,)))


def _standin_teacher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[EV.CachedTeacher, torch.nn.Module]:
    import training.teachers as T

    weights = tmp_path / "weights"
    weights.mkdir(exist_ok=True)
    (weights / "w.pkl").write_bytes(b"stand-in")
    torch.manual_seed(0)
    net = T.freeze(torch.nn.Conv2d(3, 3, 3, padding=1))
    monkeypatch.setattr(T, "load_teacher", lambda *args, **kwargs: net)
    return EV.CachedTeacher("dmphn", weights, tmp_path / "cache"), net


def test_cached_teacher_recomputes_empty_or_misshapen_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher, _ = _standin_teacher(tmp_path, monkeypatch)
    img = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    expected = teacher(img)
    entry = teacher.cache_dir / f"{teacher._key(img)}.npy"
    assert entry.is_file()
    # An empty file (np.load raises EOFError, not ValueError) stopped the whole evaluation.
    entry.write_bytes(b"")
    again = EV.CachedTeacher("dmphn", teacher.weights, tmp_path / "cache")
    assert np.array_equal(again(img), expected)
    # A damaged entry is a miss, not a hit as well: the printed counts add up to the images.
    assert (again.hits, again.misses) == (0, 1)
    np.save(entry, np.zeros((4, 4, 3), np.float16))  # a readable array of the wrong shape
    third = EV.CachedTeacher("dmphn", teacher.weights, tmp_path / "cache")
    assert np.array_equal(third(img), expected) and (third.hits, third.misses) == (0, 1)
    assert np.array_equal(third(img), expected) and (third.hits, third.misses) == (1, 1)


def test_cached_teacher_refuses_unknown_names_and_missing_weights(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    with pytest.raises(ValueError, match="unknown teacher 'nope'"):
        EV.CachedTeacher("nope", tmp_path / "w", tmp_path / "cache")
    # Every missing path had one fingerprint (of no file), so one cache folder.
    with pytest.raises(FileNotFoundError, match="no such file"):
        EV.CachedTeacher("dmphn", tmp_path / "missing", tmp_path / "cache")


def test_onnx_runner_feeds_the_files_own_input_name(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 3, None, None])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, None, None])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["frames", "half"], ["out"])], "g", [x], [y], [half]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "other.onnx")
    _, run = EV.load_model_runner(tmp_path / "other.onnx")
    img = np.random.default_rng(0).random((17, 23, 3), dtype=np.float32)
    np.testing.assert_allclose(run(img), img * 0.5, atol=1e-7)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "demo:", "--windows", "8"], "windows must be odd"),
        (["--data", "demo:", "--windows", "7,x"], "--windows: not whole numbers"),
        (["--data", "demo:", "--raw-stride", "0"], "--raw-stride must be >= 1"),
        # A history of 0 frames is --denoise with nothing to denoise from.
        (["--data", "demo:", "--denoise", "--history", "0"], "--history must be >= 1"),
        # Above full size the app never runs: a typo for 0.5, not an upscaled row.
        (["--data", "demo:", "--scale", "1.5"], "--scale must be in (0, 1]"),
        (["--data", "demo:", "--crop", "-5"], "--crop must be >= 0"),
        (["--data", "demo:", "--max-size", "-1"], "--max-size must be >= 0"),
        (["--data", "demo:", "--limit", "-1"], "--limit must be >= 0"),
        (["--data", "demo:", "--grid-crop", "0"], "--grid-crop must be >= 1"),
        (["--data", "raw:{tmp}/missing"], "no such folder"),
        (["--data", "pairs:{tmp},{tmp}/missing"], "no such folder"),
        (["--data", "raw:{tmp}/seq:300-400"], "no frame windows"),
        (["--data", "demo:", "--data", "real:{tmp}/seq"], "pass --teacher"),
        (["--data", "demo:", "--model", "{tmp}/missing.onnx"], "no such file"),
        (["--data", "demo:", "--teacher", "nope", "--teacher-weights", "{tmp}"], "unknown teacher"),
        (["--data", "demo:", "--teacher", "dmphn", "--teacher-weights", "{tmp}/x"], "no such file"),
        # Weights that exist but are not the teacher's: refused before the students run, not
        # a traceback at the first image the cache lacks.
        (
            ["--data", "demo:", "--teacher", "dmphn", "--teacher-weights", "{tmp}"],
            "DMPHN weights incomplete",
        ),
        (
            [
                "--data",
                "demo:",
                "--teacher",
                "restormer",
                "--teacher-weights",
                "{tmp}/seq/000001.png",
            ],
            "is not a PyTorch checkpoint",
        ),
        (["--data", "raw:"], "needs a folder"),
        (["--data", "pairs:,{tmp}/seq"], "needs a folder"),
        (["--data", "demo:", "--ensemble", "3"], "--ensemble must be one of [2, 4, 8]"),
        # --device as every other training tool reads it (it had none: the CPU only).
        (["--data", "demo:", "--device", "bogus"], "--device bogus: not a torch device (cpu, "),
        (["--data", "demo:", "--device", "meta"], "--device meta: meta is not a device training"),
        (["--data", "demo:", "--device", "xpu"], "--device xpu: xpu is not a device training "),
        # mkdir failed on these after the models had loaded, in a FileExistsError traceback
        (["--data", "demo:", "--out", "{tmp}/seq/000001.png"], "is a file, not a folder"),
        (["--data", "demo:", "--out", "{tmp}/seq/000001.png/sub"], "is a file, not a folder"),
        (["--data", "demo:", "--low-light", "dim"], "expected PEAK[,SIGMA] numbers"),
        (["--data", "demo:", "--low-light", "0"], "PEAK must be > 0"),
        (["--data", "demo:", "--low-light", "nan"], "PEAK must be > 0"),
        (["--data", "demo:", "--low-light", "100,-0.1"], "SIGMA must be >= 0"),
        (["--data", "demo:", "--noise-in", "sensor"], "only with --low-light"),
        (
            ["--data", "demo:", "--data", "real:{tmp}/seq", "--low-light", "100"],
            "real: sets have no clean frame",
        ),
    ],
)
def test_cli_refuses_bad_input_before_any_model_runs(
    extra: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Each was a traceback (or a silent run): several only after the models had loaded, or
    # after every --data set before the bad one had been scored.
    _raw_clip(tmp_path / "seq", 30)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(EV, "load_model_runner", no_model)
    monkeypatch.setattr(EV, "evaluate", no_model)
    args = ["--no-perceptual", "--max-size", "64", "--out", str(tmp_path / "out")]
    args += ["--cache-dir", str(tmp_path / "cache")]  # never the user's teacher cache
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]  # the later option wins
    with pytest.raises(SystemExit) as exc:
        EV.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# review fixes: the teacher cache keys on the teacher's code, non-finite references, held-out
# frames
# --------------------------------------------------------------------------------------------

_FAKE_TEACHER = """
from torch import nn


class Net(nn.Module):
    \"\"\"A stand-in teacher{doc}.\"\"\"

    def forward(self, x):
        return x * {factor}  # {comment}
"""


def _install_fake_teacher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factor: float, doc: str = "", comment: str = ""
) -> None:
    """Write the fake teacher's module, import it afresh and register it as teacher "fake",
    as a new process would find it after an edit."""
    import importlib.util
    import sys

    import training.teachers as T

    source = tmp_path / "fake_teacher_net.py"
    source.write_text(_FAKE_TEACHER.format(factor=factor, doc=doc, comment=comment))
    spec = importlib.util.spec_from_file_location("fake_teacher_net", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fake_teacher_net", module)
    spec.loader.exec_module(module)
    monkeypatch.setitem(
        T.TEACHERS,
        "fake",
        T.TeacherSpec(
            build=module.Net,
            load=lambda path, device: module.Net(),
            description="a stand-in",
            weights_hint="any folder",
            folder=True,
        ),
    )


def test_an_out_folder_it_cannot_write_in_is_refused_before_any_model_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A read-only parent: mkdir failed after the models had loaded, in a PermissionError
    # traceback. (The access check is stood in for: this runs as root, whom it never refuses.)
    import training.export as export_mod

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        export_mod.os,
        "access",
        lambda p, mode: Path(p).resolve() != locked and real_access(p, mode),
    )
    monkeypatch.setattr(EV, "load_model_runner", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exc:
        EV.main(["--data", "demo:", "--no-perceptual", "--out", str(locked / "res")])
    assert exc.value.code == 2
    assert f"--out {locked / 'res'}: cannot write in {locked} (permission denied)" in (
        capsys.readouterr().err
    )
    # No --out, run where it may not write: it blamed "--out", an option nobody gave.
    monkeypatch.chdir(locked)
    with pytest.raises(SystemExit) as exc:
        EV.main(["--data", "demo:", "--no-perceptual"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: the default output folder runs/eval/" in err, err
    assert "cannot write in . (permission denied); give one with --out DIR" in err, err


def test_a_grid_that_cannot_be_written_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A full disk: cv2.imwrite said False, unread, and the run ended "results in" with exit 0
    # and no picture. A file size limit fails the write as a full disk does.
    import resource
    import signal

    out = tmp_path / "res"
    assert EV.main(["--data", "demo:", "--limit", "1", "--no-perceptual", "--out", str(out)]) == 0
    earlier = (out / "grid_demo.png").read_bytes()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, limit[1]))
    try:
        code = EV.main(["--data", "demo:", "--limit", "1", "--no-perceptual", "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, xfsz)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: cannot write {out / 'grid_demo.png'}: File too large" in err, err
    # No picture cut short, and the earlier run's is where it was (written in place, it was
    # removed with the failed one).
    assert (out / "grid_demo.png").read_bytes() == earlier
    assert not list(out.glob(".*"))
    assert (out / "summary.json").is_file()  # what was written is kept


def test_cached_teacher_recomputes_after_a_change_to_the_teachers_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.pkl").write_bytes(b"the same weights throughout")
    img = np.random.default_rng(0).random((16, 24, 3), dtype=np.float32) * 0.5
    _install_fake_teacher(tmp_path, monkeypatch, factor=2.0)
    first = EV.CachedTeacher("fake", weights, tmp_path / "cache")
    assert np.allclose(first(img), img * 2.0, atol=2e-3) and first.misses == 1
    # Reworded comments and docstrings compute the same: the cache still serves.
    _install_fake_teacher(tmp_path, monkeypatch, factor=2.0, doc=" (reworded)", comment="why")
    again = EV.CachedTeacher("fake", weights, tmp_path / "cache")
    assert again.cache_dir == first.cache_dir
    assert np.allclose(again(img), img * 2.0, atol=2e-3) and (again.hits, again.misses) == (1, 0)
    # A change to what the network computes, same weights: the old outputs are not served
    # (they were, and the teacher's column scored code that no longer existed).
    _install_fake_teacher(tmp_path, monkeypatch, factor=0.5)
    changed = EV.CachedTeacher("fake", weights, tmp_path / "cache")
    assert changed.cache_dir != first.cache_dir
    assert np.allclose(changed(img), img * 0.5, atol=2e-3) and changed.misses == 1


def test_real_blur_refuses_a_non_finite_teacher_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    samples = [
        EV.Sample(
            EV.REAL_SET, name, (D.procedural_scene(rng, 48, 64) / 255.0).astype(np.float32), None
        )
        for name in ("good", "bad")
    ]

    class BrokenOnOne(_Teacher):
        def __call__(self, img: np.ndarray) -> np.ndarray:
            out = super().__call__(img)
            if img is samples[1].blurry:
                out[0, 0, 0] = np.nan
            return out

    # Every score against a NaN reference is NaN, and the set's means skip NaN: the image left
    # the table silently while the set's n still counted it.
    with pytest.raises(RuntimeError, match="teacher_standin produced non-finite pixels on bad"):
        EV.evaluate(iter(samples), [], tmp_path / "out", teacher=BrokenOnOne())  # type: ignore[arg-type]


def test_raw_frames_of_the_training_range_are_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seq = _raw_clip(tmp_path / "seq", 40)
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        samples = list(EV.iter_samples(EV.parse_data(f"raw:{seq}:1-40"), windows=(7,)))
    # The set is named raw-plain / raw-linear whatever its frames: nothing else says that
    # these windows (8-14 and 28-34) are frames the students were trained on.
    assert samples and "8-34 include frames the students trained on (1-239" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        # The model card's held-out windows: centres 250-290, up to 13 frames.
        assert EV.check_raw_range_held_out(244, 296)
        assert not EV.check_raw_range_held_out(236, 250)
    assert "236-250" in caplog.text and "244-296" not in caplog.text


def test_the_same_data_given_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every image was scored again and counted twice in its set's n and mean.
    seq = _raw_clip(tmp_path / "seq", 60)
    with pytest.raises(SystemExit) as exc:
        EV.main(["--data", f"raw:{seq}:1-60", "--data", f"raw:{seq}/:1-60", "--no-perceptual",
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert exc.value.code == 2
    assert f"11, 31, 51 are scored by --data raw:{seq}:1-60 too" in capsys.readouterr().err
    pairs = f"pairs:{seq},{seq}"
    with pytest.raises(SystemExit):
        EV.main(["--data", pairs, "--data", pairs.replace(",", "/,"), "--out", str(tmp_path / "o")])
    assert f"the same data as --data {pairs} (scored twice)" in capsys.readouterr().err
    # Overlapping ranges of one clip repeat windows: refused before anything is scored.
    with pytest.raises(SystemExit):
        EV.main(["--data", f"raw:{seq}:1-40", "--data", f"raw:{seq}:21-60", "--windows", "7",
                 "--no-perceptual", "--out", str(tmp_path / "out")])  # fmt: skip
    assert "windows centred on frames 31 are scored by --data" in capsys.readouterr().err
    # Ranges of one clip that share no window, and different folders that share file names or
    # a folder name, are different data.
    other = _raw_clip(tmp_path / "elsewhere" / "seq", 60)
    args = [
        "--data",
        f"raw:{seq}:1-20",
        "--data",
        f"raw:{seq}:21-40",
        "--data",
        f"raw:{other}:1-20",
    ]
    assert EV.main([*args, "--windows", "7", "--plain", "--no-perceptual",
                    "--out", str(tmp_path / "ok")]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["sets"]["raw-plain"]["n"] == 3


def test_a_checkpoint_trained_on_the_frames_scored_is_flagged_by_its_own_range(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The guard compared with the default training range (1-239) only: a student trained on
    # frames 1-279 of the clip was scored on 240-299 as "held-out" without a word.
    seq = _raw_clip(tmp_path / "GOPR_x", 60)
    torch.manual_seed(0)
    state = create_student("tiny").state_dict()
    for name, rng, dirs in (
        ("wide", [1, 50], [str(tmp_path / "elsewhere" / "GOPR_x")]),  # the clip by its name
        ("narrow", [1, 20], [str(seq)]),
        ("other_clip", [1, 60], [str(tmp_path / "GOPR_y")]),
    ):
        config = {"student": "tiny", "data": {"raw_dirs": dirs, "raw_train_range": rng}}
        torch.save({"model": state, "config": config}, tmp_path / f"{name}.pt")
    args = ["--data", f"raw:{seq}:41-60", "--windows", "7", "--plain", "--no-perceptual"]
    for name in ("wide", "narrow", "other_clip"):
        args += ["--model", str(tmp_path / f"{name}.pt")]
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        assert EV.main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "48-54 include frames wide trained on (1-50" in caplog.text
    assert "narrow trained" not in caplog.text and "other_clip trained" not in caplog.text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["not_held_out"] == ["wide: GOPR_x frames 48-54 overlap its training frames 1-50"]
    assert "**Not held-out**: wide" in (tmp_path / "out" / "summary.md").read_text()


def test_an_exported_model_scored_on_the_default_training_frames_is_flagged_in_the_summary(
    tmp_path: Path,
) -> None:
    # An .onnx file records no data: frames 1-239 were only logged, and the summary of a shipped
    # file scored on training frames read as held-out.
    from training.export import export_onnx

    seq = _raw_clip(tmp_path / "GOPR_x", 60)
    export_onnx(create_student("tiny").eval(), tmp_path / "shipped.onnx")
    args = ["--data", f"raw:{seq}:41-60", "--windows", "7", "--plain", "--no-perceptual"]
    assert EV.main([*args, "--model", str(tmp_path / "shipped.onnx"), "--out",
                    str(tmp_path / "out")]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["not_held_out"] == [
        "shipped: GOPR_x frames 48-54 overlap the default training frames 1-239 (the model "
        "records no data of its own)"
    ]
    assert "**Not held-out**: shipped" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("junk.pt", b"not a checkpoint", "cannot read checkpoint"),
        ("junk.onnx", b"not a graph", "cannot load ONNX model"),
        ("renamed.pt", None, "'gone'"),
    ],
)
def test_a_model_that_cannot_load_is_a_one_line_refusal(
    name: str,
    data: bytes | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A damaged checkpoint or .onnx file, or a checkpoint of a variant renamed since, stopped
    # the run with a traceback (training.export says the same in one line).
    model = tmp_path / name
    if data is None:
        torch.save({"model": {}, "config": {"student": "gone"}}, model)
    else:
        model.write_bytes(data)
    _raw_clip(tmp_path / "seq", 30)
    args = ["--no-perceptual", "--max-size", "64", "--out", str(tmp_path / "out")]
    args += ["--data", f"raw:{tmp_path / 'seq'}:1-30", "--model", str(model)]
    with pytest.raises(SystemExit) as exc:
        EV.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m training.evaluate: error: --model ")
    assert message in err and str(model) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "problem", ["two_inputs", "two_outputs", "nhwc", "halves", "one_channel", "unpadded"]
)
def test_an_onnx_file_of_another_contract_is_a_one_line_refusal(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It loaded, then failed on the first sample with ONNX Runtime's traceback (a missing
    # input, a wrong dimension) or the metrics' (an output of another size). A grey output
    # is as large as the input, so the trial compares channels too; a model that takes only
    # even sides (no padding of its own) must be tried at odd ones, as the engine runs any
    # H and W.
    from tests.contract_models import make_bad_onnx_model

    model = make_bad_onnx_model(tmp_path / f"{problem}.onnx", problem)
    args = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--no-perceptual"]
    with pytest.raises(SystemExit) as exc:
        EV.main([*args, "--model", str(model), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"python -m training.evaluate: error: --model {model}: ")
    assert "breaks the model contract" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# review fixes: GoPro images left out, --vgg-weights
# --------------------------------------------------------------------------------------------


def test_gopro_images_left_out_are_named_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    img = np.random.default_rng(5).uniform(0, 1, (32, 48, 3)).astype(np.float32)
    for seq, subs in (("s1", ("blur", "blur_gamma", "sharp")), ("s2", ("blur", "sharp"))):
        for sub in subs:
            _write(tmp_path / "gopro" / seq / sub / "0001.png", img)
    _write(tmp_path / "gopro" / "s1" / "blur" / "0002.png", img)  # its sharp frame is missing
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        samples = list(EV.iter_samples(EV.parse_data(f"gopro:{tmp_path / 'gopro'}")))
    assert sorted((s.set, s.name) for s in samples) == [
        ("gopro-linear", "s1_0001"),
        ("gopro-plain", "s1_0001"),
        ("gopro-plain", "s2_0001"),
    ]
    # Both were left out without a word: the set's n was the only trace, and gopro-plain and
    # gopro-linear were tables of different sequences under one dataset's name.
    assert "0002.png" in caplog.text
    assert "blur_gamma" in caplog.text and "s2" in caplog.text


def test_perceptual_distance_names_a_missing_file_not_the_trainers_settings(
    tmp_path: Path,
) -> None:
    pd = PerceptualDistance(tmp_path / "nope.pth")
    assert not pd.available and "nope.pth" in pd.reason
    # The evaluator has no loss.vgg / loss.vgg_weights: that advice was the trainer's.
    assert "loss." not in pd.reason


@pytest.mark.parametrize("kind", ["missing", "not a VGG file"])
def test_cli_refuses_vgg_weights_it_cannot_use(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A mistyped --vgg-weights was a warning in the log and a perceptual column of n/a, found
    # only once the run (hours on a CPU) had finished.
    vgg = tmp_path / "vgg.pth"
    if kind != "missing":
        vgg.write_bytes(b"junk")

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(EV, "load_model_runner", no_model)
    monkeypatch.setattr(EV, "evaluate", no_model)
    args = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--vgg-weights", str(vgg)]
    args += ["--model", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "out")]
    (tmp_path / "x.onnx").write_bytes(b"never loaded")
    with pytest.raises(SystemExit) as exc:
        EV.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--vgg-weights" in err and str(vgg) in err and "loss." not in err


def test_limit_caps_each_set_of_each_data_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --limit is per spec: two raw clips feed the one raw-plain set, one sample each.
    clips = [_raw_clip(tmp_path / name, 30) for name in ("a", "b")]
    out = tmp_path / "out"
    args = ["--limit", "1", "--plain", "--windows", "7", "--no-perceptual", "--out", str(out)]
    for clip in clips:
        args += ["--data", f"raw:{clip}:1-30"]
    assert EV.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["sets"]) == ["raw-plain"] and summary["sets"]["raw-plain"]["n"] == 2
    with open(out / "per_image.csv") as f:
        names = {r["image"] for r in csv.DictReader(f)}
    assert names == {"a_c011_w7", "b_c011_w7"}
    # and within one spec, each of its sets has its own cap
    both = list(EV.iter_samples(EV.parse_data(f"raw:{clips[0]}:1-30"), windows=(7,), limit=1))
    assert [s.set for s in both] == ["raw-plain", "raw-linear"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        EV.main(["--help"])
    assert "each set of each --data spec" in " ".join(capsys.readouterr().out.split())


def test_held_out_check_counts_the_last_training_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ranges are inclusive: a window starting on frame 239 (the last trained on) is not held-out.
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        assert not EV.check_raw_range_held_out(239, 260)
        assert EV.check_raw_range_held_out(240, 299)


def test_linear_mode_scores_only_the_linear_light_average(tmp_path: Path) -> None:
    # --linear must give raw-linear rows made in linear light, not a second plain average.
    seq = _raw_clip(tmp_path / "seq", 25)
    (s,) = EV.iter_samples(EV.parse_data(f"raw:{seq}:5-25"), mode="linear", windows=(7,))
    frames = [D.load_image_u8(seq / f"{i:06d}.png") for i in range(12, 19)]
    assert s.set == "raw-linear" and s.name == "seq_c015_w7"
    assert np.allclose(s.blurry, D.temporal_average(frames, linear=True), atol=1e-6)
    assert not np.allclose(s.blurry, D.temporal_average(frames, linear=False), atol=1e-3)


def test_unsharp_row_scores_the_unsharp_mask_baseline(tmp_path: Path) -> None:
    # The unsharp row is the classical baseline every student is read against: the metrics
    # of unsharp_mask(blurry), with its default amount and sigma, against the sharp image.
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 1, (48, 48, 3)).astype(np.float32)
    blurry = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    sample = EV.Sample("pairs", "a", blurry, sharp)
    summary = EV.evaluate(iter([sample]), [], tmp_path / "out", grid_rows=0)
    want = float(psnr(EV._to_tensor(unsharp_mask(blurry)), EV._to_tensor(sharp))[0])
    got = summary["sets"]["pairs"]["methods"]["unsharp"]
    assert got["psnr"] == pytest.approx(want, abs=1e-5)
    blurry_psnr = summary["sets"]["pairs"]["methods"]["blurry"]["psnr"]
    assert got["delta_psnr"] == pytest.approx(want - blurry_psnr, abs=1e-5)


def test_crop_takes_the_centre_of_both_images(tmp_path: Path) -> None:
    # --crop scores the image's centre, the same pixels in blurry and sharp.
    img = np.random.default_rng(0).uniform(0, 1, (40, 60, 3)).astype(np.float32)
    _write(tmp_path / "s" / "a.png", img)
    (s,) = EV.iter_samples(EV.parse_data(f"sharp:{tmp_path / 's'}"), crop=16)
    full = D.load_image(tmp_path / "s" / "a.png")
    assert np.array_equal(s.sharp, full[12:28, 22:38])
    assert np.array_equal(s.blurry, s.sharp)


# --------------------------------------------------------------------------------------------
# low light
# --------------------------------------------------------------------------------------------


def test_low_light_noise_is_seeded_by_name_and_scales_with_the_photons() -> None:
    sharp = np.full((64, 64, 3), 0.5, np.float32)
    sample = EV.Sample("demo", "grey", sharp.copy(), sharp)
    dim, dimmer = EV.low_light(sample, 400.0, 0.0), EV.low_light(sample, 50.0, 0.0)
    assert (dim.set, dim.name) == ("demo-lowlight400", "grey")
    assert dim.sharp is sharp  # scored against the clean frame
    np.testing.assert_array_equal(EV.low_light(sample, 400.0, 0.0).blurry, dim.blurry)
    other = EV.low_light(EV.Sample("demo", "grey2", sharp.copy(), sharp), 400.0, 0.0)
    assert not np.array_equal(other.blurry, dim.blurry)
    # Shot noise: std sqrt(0.5 * peak) / peak at mid grey; fewer photons, more noise.
    assert float(dim.blurry.std()) == pytest.approx(math.sqrt(0.5 / 400), rel=0.1)
    assert float(dimmer.blurry.std()) == pytest.approx(math.sqrt(0.5 / 50), rel=0.1)
    assert float(dim.blurry.mean()) == pytest.approx(0.5, abs=0.01)  # the gain keeps exposure
    np.testing.assert_array_equal(dim.blurry * 255, np.round(dim.blurry * 255))  # 8-bit
    read = EV.low_light(sample, 1e9, 0.02)  # read noise alone
    assert float(read.blurry.std()) == pytest.approx(0.02, rel=0.15)
    with pytest.raises(ValueError, match="has none"):
        EV.low_light(EV.Sample("real-vs-teacher", "x", sharp, None), 100.0)


def test_cli_low_light_scores_the_noisy_input_against_the_clean_frame(tmp_path: Path) -> None:
    args = ["--data", "demo:", "--limit", "2", "--max-size", "96", "--no-perceptual"]
    assert EV.main([*args, "--out", str(tmp_path / "clean")]) == 0
    assert EV.main([*args, "--low-light", "60,0.01", "--out", str(tmp_path / "dim")]) == 0
    clean = json.loads((tmp_path / "clean" / "summary.json").read_text())
    dim = json.loads((tmp_path / "dim" / "summary.json").read_text())
    assert list(dim["sets"]) == ["demo-lowlight60"]
    assert dim["options"]["low_light"] == {"peak": 60.0, "sigma": 0.01, "noise_in": "encoded"}
    assert clean["options"]["low_light"] is None
    noisy = dim["sets"]["demo-lowlight60"]["methods"]["blurry"]["psnr"]
    assert noisy < clean["sets"]["demo"]["methods"]["blurry"]["psnr"] - 1.0
    sensor_args = ["--low-light", "60", "--noise-in", "sensor", "--out", str(tmp_path / "s")]
    assert EV.main([*args, *sensor_args]) == 0
    sensor = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert list(sensor["sets"]) == ["demo-lowlight60-sensor"]
    assert sensor["options"]["low_light"]["noise_in"] == "sensor"
    # No SIGMA given: the documented read noise of 0.01, not a read-noise-free sensor.
    assert sensor["options"]["low_light"]["sigma"] == 0.01
    noisier = sensor["sets"]["demo-lowlight60-sensor"]["methods"]["blurry"]["psnr"]
    assert noisier < clean["sets"]["demo"]["methods"]["blurry"]["psnr"] - 1.0
    assert noisier != noisy


def test_sensor_noise_is_added_in_linear_light() -> None:
    """A sensor counts photons in linear light and the camera encodes them: the grain is nearly
    even from mid-tones up and strongest in the shadows, where noise on the encoded picture is
    weakest."""
    levels = np.array([0.1, 0.3, 0.5, 0.7], np.float32)
    img = np.repeat(levels[:, None], 4096, axis=1)[..., None].repeat(3, axis=2)
    lin = D.srgb_to_linear(levels)
    assert lin[2] == pytest.approx(0.214, abs=0.001)  # mid grey is a fifth of white's light
    np.testing.assert_allclose(D.linear_to_srgb(lin), levels, atol=1e-6)
    sample = EV.Sample("demo", "ramp", img.copy(), img)
    encoded = EV.low_light(sample, 100.0, 0.0).blurry.std(axis=(1, 2))
    sensor = EV.low_light(sample, 100.0, 0.0, "sensor")
    assert sensor.set == "demo-lowlight100-sensor" and sensor.sharp is img
    by_level = sensor.blurry.std(axis=(1, 2))
    # On the encoded picture the grain grows as the square root of the level; in linear light
    # the curve's slope undoes most of that.
    assert encoded[3] / encoded[1] == pytest.approx(math.sqrt(0.7 / 0.3), rel=0.1)
    assert by_level[3] / by_level[1] < 0.95 and by_level[0] > by_level[2]
    # The gain restores the exposure: mid-tones keep their mean (the shadows come out darker,
    # noise through the concave curve, as a camera's do).
    np.testing.assert_allclose(sensor.blurry.mean(axis=(1, 2))[1:], levels[1:], atol=0.01)
    dark_read = EV.low_light(sample, 1e9, 0.01, "sensor").blurry.std(axis=(1, 2))
    assert dark_read[0] > 2.0 * dark_read[3]  # read noise meets the steep toe
    with pytest.raises(ValueError, match="space must be one of"):
        EV.low_light(sample, 100.0, 0.0, "linear")


# --------------------------------------------------------------------------------------------
# self-ensemble
# --------------------------------------------------------------------------------------------


def test_self_ensemble_turns_each_output_back() -> None:
    img = np.random.default_rng(0).random((6, 10, 3), dtype=np.float32)
    seen: list[tuple[int, int]] = []

    def shift_right(x: np.ndarray) -> np.ndarray:  # not flip-invariant: shows each undo
        seen.append(x.shape[:2])
        return np.roll(x, 1, axis=1)

    def rolls(*shifts: tuple[int, int]) -> np.ndarray:
        return np.mean([np.roll(img, s, axis=a) for s, a in shifts], axis=0)

    np.testing.assert_allclose(
        EV.self_ensemble(shift_right, 2)(img), rolls((1, 1), (-1, 1)), atol=1e-6
    )
    np.testing.assert_allclose(
        EV.self_ensemble(shift_right, 4)(img), rolls((1, 1), (-1, 1)), atol=1e-6
    )
    np.testing.assert_allclose(
        EV.self_ensemble(shift_right, 8)(img), rolls((1, 1), (-1, 1), (1, 0), (-1, 0)), atol=1e-6
    )
    assert seen.count((10, 6)) == 4  # the quarter turns see the frame on its side
    box = EV.self_ensemble(lambda x: cv2.blur(x, (3, 3), borderType=cv2.BORDER_REFLECT), 8)
    np.testing.assert_allclose(
        box(img), cv2.blur(img, (3, 3), borderType=cv2.BORDER_REFLECT), atol=1e-6
    )
    with pytest.raises(ValueError, match="one of"):
        EV.self_ensemble(shift_right, 3)


def test_cli_ensemble_adds_a_row_per_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.setattr(
        EV,
        "load_model_runner",
        lambda m, threads=0, device="cpu": ("m", lambda x: np.roll(x, 2, axis=1)),
    )
    args = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--no-perceptual"]
    args += ["--model", str(model), "--ensemble", "2", "--ensemble", "8", "--ensemble", "2"]
    assert EV.main([*args, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["methods"] == ["blurry", "unsharp", "m", "m@ens2", "m@ens8"]
    assert summary["options"]["ensemble"] == [2, 8]
    rows = summary["sets"]["demo"]["methods"]
    assert rows["m@ens2"]["psnr"] != rows["m"]["psnr"]


# --------------------------------------------------------------------------------------------
# noise reduction over time (--denoise)
# --------------------------------------------------------------------------------------------


def _still_raw_clip(folder: Path, frames: int = 60) -> Path:
    """A raw clip of a still scene (every frame the same smooth picture)."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    still = np.stack([0.2 + x / 160, 0.3 + y / 120, 0.5 + 0 * x], axis=2)
    for i in range(1, frames + 1):
        _write(folder / f"{i:06d}.png", still)
    return folder


def test_raw_samples_carry_the_frames_before_them(tmp_path: Path) -> None:
    seq = _still_raw_clip(tmp_path / "seq")
    spec = EV.parse_data(f"raw:{seq}:1-60")
    samples = list(
        EV.iter_samples(spec, mode="plain", windows=(7,), raw_stride=5, history=3, frame_step=4)
    )
    # Centres from 11 every 5; a history of 3 windows 4 frames apart needs centre - 12 >= 4.
    assert [s.name for s in samples] == [f"seq_c{c:03d}_w7" for c in range(16, 57, 5)]
    assert all(len(s.history) == 3 for s in samples)
    assert all(h.shape == samples[0].blurry.shape for s in samples for h in s.history)
    assert [len(s.history) for s in EV.iter_samples(spec, mode="plain", windows=(7,))] == [0] * 3
    with pytest.raises(ValueError, match="raw: clips"):
        next(EV.iter_samples(EV.parse_data("demo:"), history=2))


def test_low_light_films_the_history_with_its_own_noise_and_keeps_the_frames_noise() -> None:
    sharp = np.full((32, 32, 3), 0.5, np.float32)
    plain = EV.low_light(EV.Sample("raw-plain", "a", sharp.copy(), sharp), 100.0)
    with_history = EV.low_light(
        EV.Sample("raw-plain", "a", sharp.copy(), sharp, (sharp.copy(), sharp.copy())), 100.0
    )
    np.testing.assert_array_equal(plain.blurry, with_history.blurry)  # old results still hold
    a, b = with_history.history
    assert a.std() > 0.02 and not np.array_equal(a, b) and not np.array_equal(a, plain.blurry)


def test_cli_denoise_cleans_a_dim_still_clip_before_the_model(tmp_path: Path) -> None:
    seq = _still_raw_clip(tmp_path / "seq")
    args = [
        "--data", f"raw:{seq}:1-60", "--plain", "--windows", "7", "--raw-stride", "10",
        "--denoise", "--history", "6", "--frame-step", "4", "--low-light", "100",
        "--no-perceptual", "--grid-rows", "0", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert EV.main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["denoise"] == {"history": 6, "frame_step": 4}
    methods = summary["sets"]["raw-plain-lowlight100"]["methods"]
    assert set(methods) == {"blurry", "unsharp", "denoise"}
    assert methods["denoise"]["delta_psnr"] > 3.0  # seven noisy frames of a still scene


def test_cli_denoise_refuses_data_without_earlier_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        EV.main(["--data", "demo:", "--denoise", "--out", str(tmp_path / "o")])
    # Said as a usage error naming the flag, before any model or data is loaded.
    assert "--denoise: every --data must be a raw: clip" in capsys.readouterr().err


def test_the_evaluators_noise_reduction_is_the_apps() -> None:
    """training stands alone, so it has its own copy of engine.denoise: frame for frame the same,
    on a still scene, across a cut, with motion, and on a clean stream."""
    from engine import denoise as E

    assert (E.MIN_SIGMA, E.RAMP, E.FLAT_FLOOR, E.TemporalDenoiser.CUT_FRACTION) == (
        EV.DENOISE_MIN_SIGMA,
        EV.DENOISE_RAMP,
        EV.DENOISE_FLAT_FLOOR,
        EV.DENOISE_CUT,
    )
    assert (E.COLOUR_MIN_SIGMA, E.COLOUR_RAMP, E.COLOUR_BLUR) == (
        EV.DENOISE_COLOUR_MIN_SIGMA,
        EV.DENOISE_COLOUR_RAMP,
        EV.DENOISE_COLOUR_BLUR,
    )
    assert (E.GRAIN_SPREAD, E.GRAIN_RADIUS) == (EV.DENOISE_GRAIN_SPREAD, EV.DENOISE_GRAIN_RADIUS)
    app = E.TemporalDenoiser()
    assert (app.strength, app.threshold, app.measure_every) == (
        EV.DENOISE_STRENGTH,
        EV.DENOISE_THRESHOLD,
        EV.DENOISE_MEASURE_EVERY,
    )
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:121].astype(np.float32)
    still = np.stack([40 + x, 60 + y, 90 + 0 * x], axis=2)
    frames = []
    for i in range(14):
        scene = still.copy()
        scene[30:50, 5 + 6 * i : 25 + 6 * i] = 220  # something moving
        if i == 9:
            scene = 255 - scene  # a cut
        noisy = scene + rng.normal(0, 10, scene.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    clean = [np.clip(still + i, 0, 255).astype(np.uint8) for i in range(5)]
    # Light noise, where the colour blur rises through its ramps as the readings are smoothed;
    # colour noise alone (the same luma in every frame), which is left as it is; a drawn
    # picture, shaking a pixel back and forth, which reads as colour noise in one frame.
    import cv2

    ycc = cv2.cvtColor(still.astype(np.uint8), cv2.COLOR_RGB2YCrCb).astype(np.float32)
    colour_alone = []
    for _ in range(6):
        noisy = ycc.copy()
        noisy[..., 1:] += rng.normal(0, 4.0, noisy[..., 1:].shape)
        colour_alone.append(
            cv2.cvtColor(np.clip(np.round(noisy), 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)
        )
    colour = [np.clip(np.round(still + rng.normal(0, 4.0, still.shape)), 0, 255).astype(np.uint8)
              for _ in range(10)]  # fmt: skip
    drawn = np.full((90, 121, 3), 255, np.uint8)
    for i in range(3):
        cv2.putText(drawn, f"Slide {i}", (5, 25 + 28 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (30, 60, 200) if i % 2 else (220, 40, 40), 2, cv2.LINE_AA)  # fmt: skip
    # Fine stripes moving fast, which read as more noise over time than the picture shows: the
    # grain filter goes by the picture's own estimate.
    stripes = []
    for i in range(10):
        scene = still.copy()
        scene[20:70, 20:100] = (100 + 30 * np.sign(np.sin((x + 2 * i) * np.pi / 2 + 0.1)))[
            20:70, 20:100, None
        ]
        stripes.append(np.clip(np.round(scene + rng.normal(0, 3.0, (90, 121, 1))), 0, 255))
    stripes = [frame.astype(np.uint8) for frame in stripes]
    blurs, grains, lower = [], [], []
    shaken = [np.ascontiguousarray(np.roll(drawn, i % 2, axis=1)) for i in range(8)]
    for sequence in ([drawn] * 6, shaken, colour_alone, frames, clean, stripes, colour):
        app = E.TemporalDenoiser()
        for n, frame in enumerate(sequence, 1):
            np.testing.assert_array_equal(app(frame), EV.denoised_last(sequence[:n]))
            blurs.append(E.colour_blur(app.colour_sigma, app.sigma))
            grains.append(E.grain_strength(app.grain_sigma))
            lower.append(app.grain_sigma is not None and app.grain_sigma < app.sigma - 0.5)
    assert 0.0 < min(blurs[-7:]) and min(blurs[-7:]) < E.COLOUR_BLUR  # within the ramp
    assert 0.0 < min(grains[-7:]) < 1.0 and max(grains) == 1.0  # the grain filter's ramp, too
    assert any(lower[-17:-7])  # the stripes


def test_cli_denoise_says_what_it_leaves_out_and_why_nothing_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seq = _still_raw_clip(tmp_path / "seq", frames=40)
    base = ["--data", f"raw:{seq}:1-40", "--plain", "--windows", "7", "--no-perceptual"]
    with pytest.raises(SystemExit):
        EV.main([*base, "--denoise", "--out", str(tmp_path / "a")])  # 6 x 8 frames do not fit
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        assert EV.main([*base, "--raw-stride", "5", "--denoise", "--history", "2",
                        "--frame-step", "4", "--grid-rows", "0", "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert "windows left out: they have no 2 earlier windows 4 frames apart" in caplog.text


def test_the_history_is_the_windows_before_oldest_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(1, 61):
        _write(tmp_path / "seq" / f"{i:06d}.png", rng.uniform(0, 1, (16, 24, 3)).astype(np.float32))
    spec = EV.parse_data(f"raw:{tmp_path / 'seq'}:1-60")
    sample = next(
        EV.iter_samples(spec, mode="plain", windows=(7,), raw_stride=5, history=3, frame_step=4)
    )
    centre = int(sample.name.split("_c")[1][:3])

    def window(c: int) -> np.ndarray:
        return np.mean(
            [D.load_image(tmp_path / "seq" / f"{i:06d}.png") for i in range(c - 3, c + 4)], axis=0
        )

    for k, frame in zip((3, 2, 1), sample.history, strict=True):
        np.testing.assert_allclose(frame, window(centre - 4 * k), atol=1e-5)


def test_the_evaluators_noise_reduction_restarts_on_a_size_change_as_the_apps() -> None:
    from engine import denoise as E

    rng = np.random.default_rng(2)
    frames = [
        np.clip(rng.normal(100, 8, shape), 0, 255).astype(np.uint8)
        for shape in [(64, 64, 3)] * 4 + [(10, 10, 3)] + [(48, 80, 3)] * 5
    ]
    app = E.TemporalDenoiser()
    for n, frame in enumerate(frames, 1):
        np.testing.assert_array_equal(app(frame), EV.denoised_last(frames[:n]))


def test_raw_centres_keep_the_largest_window_inside_the_range_at_its_start() -> None:
    # Held-out frames 240-299 with 7- and 23-frame windows: centre 250's 23-frame window would
    # start on frame 239, a training frame, so only 270 is scored (290's reaches 301). The
    # first-frame bound matters only for windows over 21 frames (the first centre is 10 in).
    assert EV.raw_centres(240, 299, (7, 23), 20) == [270]


# --------------------------------------------------------------------------------------------
# mutation run: sizes, modes, window bounds and spans
# --------------------------------------------------------------------------------------------


def test_max_size_shrinks_the_longest_side_and_keeps_the_aspect(tmp_path: Path) -> None:
    # --max-size bounds the work per image: the longest side, not the shortest, comes to it,
    # and a (H, W) image stays (H, W), not turned to (W, H) against its sharp frame.
    _write(tmp_path / "s" / "a.png", np.random.default_rng(0).uniform(0, 1, (40, 60, 3)))
    (s,) = EV.iter_samples(EV.parse_data(f"sharp:{tmp_path / 's'}"), max_size=30)
    assert s.blurry.shape == s.sharp.shape == (20, 30, 3)
    (whole,) = EV.iter_samples(EV.parse_data(f"sharp:{tmp_path / 's'}"), max_size=60)
    assert whole.sharp.shape == (40, 60, 3)


def test_a_crop_larger_than_one_side_keeps_that_whole_side(tmp_path: Path) -> None:
    # --crop 50 of a 40 x 60 frame: all 40 rows and the middle 50 columns, not a sliver.
    img = np.random.default_rng(0).uniform(0, 1, (40, 60, 3)).astype(np.float32)
    _write(tmp_path / "s" / "a.png", img)
    (s,) = EV.iter_samples(EV.parse_data(f"sharp:{tmp_path / 's'}"), crop=50)
    full = D.load_image(tmp_path / "s" / "a.png")
    assert np.array_equal(s.sharp, full[:, 5:55])


def test_plain_mode_scores_only_the_srgb_average(tmp_path: Path) -> None:
    # --plain must give raw-plain rows made by averaging sRGB values, not linear light.
    seq = _raw_clip(tmp_path / "seq", 25)
    (s,) = EV.iter_samples(EV.parse_data(f"raw:{seq}:5-25"), mode="plain", windows=(7,))
    frames = [D.load_image_u8(seq / f"{i:06d}.png") for i in range(12, 19)]
    assert s.set == "raw-plain"
    assert np.allclose(s.blurry, D.temporal_average(frames, linear=False), atol=1e-6)


@pytest.mark.parametrize("windows", [(), (1,), (7, 1)])
def test_windows_of_one_frame_or_none_are_refused(windows: tuple[int, ...]) -> None:
    # A 1-frame window is the sharp frame itself (a blurry input scoring the PSNR cap).
    with pytest.raises(ValueError):
        EV.check_windows(windows)


def test_raw_centres_keep_a_window_ending_on_the_last_frame_and_none_before_frame_1() -> None:
    # Ranges are inclusive at both ends; frame numbers start at 1 (a range from 0 has no
    # frame 0, so a window reaching it would be scored for the small windows alone).
    assert EV.raw_centres(240, 293, (7,), 20) == [250, 270, 290]
    assert EV.raw_centres(0, 60, (7, 21), 20) == [30, 50]


def test_held_out_check_with_a_checkpoints_own_range_is_inclusive_at_its_start() -> None:
    # A checkpoint trained on frames 100-200 and scored on 80-100 saw frame 100; one scored
    # on 10-60 saw none of them.
    assert not EV.check_raw_range_held_out(80, 100, train_range=(100, 200))
    assert EV.check_raw_range_held_out(10, 60, train_range=(100, 200))


def test_raw_span_covers_the_largest_window_and_only_the_clips_frames(tmp_path: Path) -> None:
    # The span is what the not-held-out check compares with the training frames: every frame
    # the largest window reads, and none past the clip's end (a 60-frame clip under 1-299).
    seq = _raw_clip(tmp_path / "seq", 60, shape=(4, 4))
    assert EV.raw_span(EV.parse_data(f"raw:{seq}:1-60"), (7, 21), 20) == (1, 41)
    assert EV.raw_span(EV.parse_data(f"raw:{seq}:1-299"), (7,), 20) == (8, 54)


def test_a_window_starting_on_the_last_default_training_frame_is_flagged(tmp_path: Path) -> None:
    # An exported model records no training range: frame 239 is the default's last one.
    seq = _raw_clip(tmp_path / "seq", 250, shape=(2, 2))
    spec = EV.parse_data(f"raw:{seq}:232-250")
    assert EV.raw_span(spec, (7,), 20) == (239, 245)
    assert len(EV.check_trained_on([spec], [("m", None)], (7,), 20)) == 1


def test_the_history_frames_count_in_the_held_out_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # --denoise reads windows before each sample's: from frame 235 here (centre 246, a window
    # 8 frames before it), so frames 235-239 of the training range are read, not held-out.
    seq = _raw_clip(tmp_path / "seq", 260, shape=(2, 2))
    spec = EV.parse_data(f"raw:{seq}:235-260")
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        samples = EV.iter_samples(spec, mode="plain", windows=(7,), raw_stride=1, history=1)
        assert next(samples).name == "seq_c246_w7"
    assert "not held-out" in caplog.text


def test_a_pair_of_different_sizes_is_skipped_not_a_crash(tmp_path: Path) -> None:
    # As for gopro: one odd pair must not stop a long run at its metrics.
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (32, 48, 3)), ("b.png", (40, 48, 3))):
        _write(tmp_path / "blur" / name, rng.uniform(0, 1, (32, 48, 3)))
        _write(tmp_path / "sharp" / name, rng.uniform(0, 1, shape))
    spec = EV.parse_data(f"pairs:{tmp_path / 'blur'},{tmp_path / 'sharp'}")
    assert [s.name for s in EV.iter_samples(spec)] == ["a"]


def test_a_student_named_unsharp_gets_its_own_row(tmp_path: Path) -> None:
    # A file called unsharp.onnx would otherwise share the baseline's row, averaged with it.
    sharp = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    sample = EV.Sample("pairs", "a", cv2.GaussianBlur(sharp, (0, 0), 1.5), sharp)
    summary = EV.evaluate(iter([sample]), [("unsharp", lambda x: x.copy())], tmp_path, grid_rows=0)
    assert summary["methods"] == ["blurry", "unsharp", "unsharp_2"]
    table = summary["sets"]["pairs"]["methods"]
    assert table["unsharp_2"]["psnr"] == pytest.approx(table["blurry"]["psnr"])


def test_the_grid_keeps_the_pictures_colours(tmp_path: Path) -> None:
    # The README picture: a red frame must be red in the PNG, not blue (RGB written as BGR).
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 1.0
    EV.evaluate(iter([EV.Sample("pairs", "red", red, red.copy())]), [], tmp_path)
    grid = cv2.imread(str(tmp_path / "grid_pairs.png"))  # BGR
    b, g, r = grid[-1, -1]
    assert (b, g, r) == (0, 0, 255)


def test_a_checkpoints_output_is_clamped_to_what_a_user_sees(tmp_path: Path) -> None:
    # The app shows [0, 1]: the grid, the teacher cache and real blur's reference use it too.
    torch.manual_seed(0)
    bright = create_student("tiny")
    with torch.no_grad():
        bright.head.bias.fill_(2.0)
    torch.save({"model": bright.state_dict(), "config": {"student": "tiny"}}, tmp_path / "b.pt")
    _, run = EV.load_model_runner(tmp_path / "b.pt")
    assert run(np.full((32, 32, 3), 0.5, np.float32)).max() == 1.0


def test_an_unsharp_baseline_runs_at_its_own_amount_and_sigma() -> None:
    # --unsharp 0.5,3 must score unsharp_mask(x, amount=0.5, sigma=3), as its row is named.
    img = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    label, run = EV.unsharp_baseline(0.5, 3.0)
    assert label == "unsharp@0.5,3"
    np.testing.assert_array_equal(run(img), unsharp_mask(img, 0.5, 3.0))


def test_an_fp16_onnx_file_is_fed_float16_frames(tmp_path: Path) -> None:
    # The fp16 export takes float16 input: fed float32, ONNX Runtime refuses the shipped file.
    from onnx import TensorProto

    _, run = EV.load_model_runner(_identity_onnx(tmp_path / "half.onnx", TensorProto.FLOAT16))
    img = np.random.default_rng(0).random((17, 23, 3), dtype=np.float32)
    out = run(img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img.astype(np.float16).astype(np.float32))


def test_the_grids_student_column_shows_the_students_output(tmp_path: Path) -> None:
    # The README picture compares the student with the teacher: its column must be the student's.
    blurry = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    green = np.zeros_like(blurry)
    green[..., 1] = 1.0
    sample = EV.Sample("pairs", "a", blurry, blurry.copy())
    EV.evaluate(iter([sample]), [("student", lambda x: green.copy())], tmp_path)
    grid = cv2.cvtColor(cv2.imread(str(tmp_path / "grid_pairs.png")), cv2.COLOR_BGR2RGB)
    # Cells are a 22-pixel caption over the 32-pixel crop, 4 white pixels apart.
    cell = grid[22 : 22 + 32, 32 + 4 : 32 + 4 + 32]
    np.testing.assert_array_equal(cell, np.broadcast_to(D.to_uint8(green), cell.shape))


def test_crop_cuts_the_history_as_it_cuts_the_frame(tmp_path: Path) -> None:
    # Frames of another size than the one scored restart the noise reduction: no history at all.
    seq = _still_raw_clip(tmp_path / "seq")
    spec = EV.parse_data(f"raw:{seq}:1-60")
    sample = next(
        EV.iter_samples(
            spec, mode="plain", windows=(7,), crop=32, raw_stride=5, history=2, frame_step=4
        )
    )
    assert sample.blurry.shape == (32, 32, 3)
    assert [h.shape for h in sample.history] == [(32, 32, 3)] * 2


def test_a_history_zero_frames_apart_is_refused(tmp_path: Path) -> None:
    # frame_step 0 would hand the denoiser the scored window itself as every earlier frame.
    spec = EV.parse_data(f"raw:{_still_raw_clip(tmp_path / 'seq')}:1-60")
    with pytest.raises(ValueError, match="frame_step >= 1"):
        next(EV.iter_samples(spec, windows=(7,), history=2, frame_step=0))


def test_each_window_size_carries_a_history_of_its_own_size(tmp_path: Path) -> None:
    # A 5-frame sample's earlier frames are 5-frame averages too, as a camera's would be.
    rng = np.random.default_rng(2)
    for i in range(1, 61):
        _write(tmp_path / "seq" / f"{i:06d}.png", rng.uniform(0, 1, (16, 24, 3)).astype(np.float32))
    spec = EV.parse_data(f"raw:{tmp_path / 'seq'}:1-60")
    samples = list(
        EV.iter_samples(spec, mode="plain", windows=(5, 9), raw_stride=10, history=1, frame_step=4)
    )
    assert {s.name.rsplit("_w", 1)[1] for s in samples} == {"5", "9"}
    for s in samples:
        centre, size = int(s.name.split("_c")[1][:3]), int(s.name.rsplit("_w", 1)[1])
        frames = range(centre - 4 - size // 2, centre - 4 + size // 2 + 1)
        window = np.mean([D.load_image(tmp_path / "seq" / f"{i:06d}.png") for i in frames], axis=0)
        np.testing.assert_allclose(s.history[0], window, atol=1e-5)


def test_linear_mode_averages_the_history_in_linear_light_too(tmp_path: Path) -> None:
    # The denoiser's earlier frames must be filmed as the frame it cleans, not another camera's.
    rng = np.random.default_rng(3)
    for i in range(1, 61):
        _write(tmp_path / "seq" / f"{i:06d}.png", rng.uniform(0, 1, (16, 24, 3)).astype(np.float32))
    spec = EV.parse_data(f"raw:{tmp_path / 'seq'}:1-60")
    sample = next(
        EV.iter_samples(spec, mode="linear", windows=(7,), raw_stride=5, history=1, frame_step=4)
    )
    centre = int(sample.name.split("_c")[1][:3]) - 4
    frames = [
        D.load_image_u8(tmp_path / "seq" / f"{i:06d}.png") for i in range(centre - 3, centre + 4)
    ]
    np.testing.assert_allclose(
        sample.history[0], D.temporal_average(frames, linear=True), atol=1e-6
    )


def test_gopro_spec_of_one_sequences_sharp_folder_scores_that_sequence(tmp_path: Path) -> None:
    # gopro:GOPRO/test/seq/sharp names one sequence: it must not be refused as holding none.
    img = np.random.default_rng(4).uniform(0, 1, (32, 48, 3)).astype(np.float32)
    for sub in ("blur", "sharp"):
        _write(tmp_path / "seq" / sub / "0001.png", img)
    spec = EV.parse_data(f"gopro:{tmp_path / 'seq' / 'sharp'}")
    assert [s.name for s in EV.iter_samples(spec, mode="plain")] == ["seq_0001"]


def test_camera_set_crops_are_even_and_too_small_images_are_skipped(tmp_path: Path) -> None:
    # An odd side breaks the halving models; a crop under 32 pixels has nothing left to score.
    rng = np.random.default_rng(0)
    _write(tmp_path / "imgs" / "a.png", D.procedural_scene(rng, 97, 97) / 255.0)
    _write(tmp_path / "imgs" / "b.png", D.procedural_scene(rng, 40, 40) / 255.0)
    spec = EV.parse_data(f"camera:{tmp_path / 'imgs'}")
    samples = list(EV.iter_samples(spec, mode="plain", windows=(7,)))
    assert [s.name for s in samples] == ["a_w7"]
    assert samples[0].blurry.shape[0] % 2 == 0


@pytest.mark.parametrize(("peak", "sigma"), [(0.0, 0.0), (100.0, -0.01)])
def test_low_light_refuses_no_photons_or_negative_read_noise(peak: float, sigma: float) -> None:
    # A peak of 0 photons is no picture at all: the set would be named for a light it never had.
    sharp = np.full((16, 16, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match="peak > 0"):
        EV.low_light(EV.Sample("demo", "grey", sharp.copy(), sharp), peak, sigma)


def test_processing_size_keeps_the_contracts_minimum_of_16_at_any_multiple() -> None:
    # The model's contract refuses sides under 16: a 10-pixel side would fail where the app runs.
    assert EV.processing_size(40, 24, 0.25, 1) == (16, 16)
    assert EV.processing_size(40, 24, 0.25, 8) == (16, 16)


def test_at_scale_refuses_a_scale_of_zero() -> None:
    # Scale 0 has no frame to run the model on: it is a typo, not a tiny resolution.
    with pytest.raises(ValueError, match="scale must be in"):
        EV.at_scale(lambda x: x, 0.0)


def test_an_onnx_files_output_is_clamped_to_what_a_user_sees(tmp_path: Path) -> None:
    # As a checkpoint's: the app shows [0, 1], so over- and undershoot are scored as shown.
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 3, None, None])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, None, None])
    nodes = [
        helper.make_node("Constant", [], ["three"], value_float=3.0),
        helper.make_node("Constant", [], ["one"], value_float=1.0),
        helper.make_node("Mul", ["frames", "three"], ["big"]),
        helper.make_node("Sub", ["big", "one"], ["out"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.save(model, tmp_path / "loud.onnx")
    _, run = EV.load_model_runner(tmp_path / "loud.onnx")
    img = np.random.default_rng(0).random((17, 23, 3), dtype=np.float32)
    np.testing.assert_allclose(run(img), np.clip(img * 3 - 1, 0, 1), atol=1e-6)


def test_the_teacher_cache_stores_float16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Full-size teacher outputs of every data set: float32 entries would take twice the disk.
    teacher, _ = _standin_teacher(tmp_path, monkeypatch)
    img = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    out = teacher(img)
    stored = np.load(teacher.cache_dir / f"{teacher._key(img)}.npy")
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(out, stored.astype(np.float32))


def test_the_grid_crop_is_where_the_detail_is() -> None:
    # The README crops show blur being removed: a flat patch of sky shows nothing.
    img = np.full((96, 96, 3), 0.5, np.float32)
    img[64:, 64:] = np.random.default_rng(0).uniform(0, 1, (32, 32, 3))
    assert EV._best_crop(img, 32) == (64, 64, 32)


def test_unsharp_setting_takes_amount_zero_and_refuses_sigma_zero() -> None:
    # Amount 0 is the no-sharpening row a sweep starts from; a sigma of 0 blurs by nothing.
    assert EV.unsharp_setting("0,1.5") == (0.0, 1.5)
    with pytest.raises(ValueError, match="SIGMA in"):
        EV.unsharp_setting("1,0")


def test_a_rerun_of_the_same_set_keeps_its_new_grid(tmp_path: Path) -> None:
    # Only grids of sets this run did not draw are stale: the one just written must stay.
    sharp = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    sample = EV.Sample("pairs", "a", cv2.GaussianBlur(sharp, (0, 0), 1.5), sharp)
    EV.evaluate(iter([sample]), [], tmp_path)
    EV.evaluate(iter([sample]), [], tmp_path)
    assert (tmp_path / "grid_pairs.png").is_file()


def test_a_baseline_given_twice_is_one_row(tmp_path: Path) -> None:
    # Two rows of one name would be listed twice and averaged together in the table.
    sharp = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    sample = EV.Sample("pairs", "a", cv2.GaussianBlur(sharp, (0, 0), 1.5), sharp)
    base = EV.unsharp_baseline(0.5, 3.0)
    summary = EV.evaluate(iter([sample]), [], tmp_path, baselines=[base, base], grid_rows=0)
    assert summary["methods"] == ["blurry", "unsharp", "unsharp@0.5,3"]
    assert summary["sets"]["pairs"]["n"] == 1


def test_the_grid_crops_where_the_reference_has_detail(tmp_path: Path) -> None:
    # The crop shows what the methods should restore: the sharp frame's detail, not the noise
    # or streaks that only the blurry input has.
    rng = np.random.default_rng(0)
    sharp = np.full((96, 96, 3), 0.5, np.float32)
    sharp[64:, 64:] = rng.uniform(0, 1, (32, 32, 3))
    blurry = np.full((96, 96, 3), 0.5, np.float32)
    blurry[:32, :32] = rng.uniform(0, 1, (32, 32, 3))
    EV.evaluate(iter([EV.Sample("pairs", "a", blurry, sharp)]), [], tmp_path, grid_crop=32)
    grid = cv2.cvtColor(cv2.imread(str(tmp_path / "grid_pairs.png")), cv2.COLOR_BGR2RGB)
    # Cells are a 22-pixel caption over the 32-pixel crop, 4 white pixels apart: blurry, sharp.
    np.testing.assert_array_equal(grid[22:, :32], D.to_uint8(blurry[64:, 64:]))
    np.testing.assert_array_equal(grid[22:, 36:68], D.to_uint8(sharp[64:, 64:]))


def test_unsharp_at_the_engines_own_setting_adds_no_second_row(tmp_path: Path) -> None:
    # The row `unsharp` is the engine's setting already: a copy would be scored twice.
    own = f"{EV.plain_number(EV.UNSHARP_AMOUNT)},{EV.plain_number(EV.UNSHARP_SIGMA)}"
    args = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--no-perceptual"]
    assert EV.main([*args, "--unsharp", own, "--grid-rows", "0", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["methods"] == ["blurry", "unsharp"]


def test_the_denoised_frame_is_the_samples_own_not_its_oldest_history() -> None:
    # The noise reduction cleans the newest frame after the earlier ones, as the app's stream.
    img = np.full((32, 32, 3), 0.9, np.float32)
    history = (np.zeros_like(img), np.zeros_like(img))
    out = EV.with_denoise(lambda x: x)(img, history)
    assert float(out.mean()) > 0.6


def _identity_onnx(path: Path, elem_type: int | None = None) -> Path:
    """An ONNX file whose output is its input, of ``elem_type`` (default float32)."""
    import onnx
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT if elem_type is None else elem_type
    x = helper.make_tensor_value_info("frames", elem, [1, 3, None, None])
    y = helper.make_tensor_value_info("out", elem, [1, 3, None, None])
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_scale_1_adds_no_second_row_of_the_same_model(tmp_path: Path) -> None:
    # --scale 1 is the model's own row: an "@1x" copy would be scored and listed twice.
    model = _identity_onnx(tmp_path / "m.onnx")
    args = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--no-perceptual"]
    args += ["--model", str(model), "--scale", "1", "--scale", "0.5", "--grid-rows", "0"]
    assert EV.main([*args, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [m for m in summary["methods"] if "@" in m] == [f"{summary['methods'][2]}@0.5x"]


def test_an_onnx_file_of_a_fixed_size_loads_and_runs_at_that_size(tmp_path: Path) -> None:
    # The engine runs a model exported without dynamic H and W (at scale 1, OnnxBackend's
    # fixed_size); its contract trial at 37x53 refused it here, though `--crop 64` on frames
    # of at least 64 px gives it only its own size.
    import onnx

    from tests.contract_models import make_onnx_model

    path = make_onnx_model(tmp_path / "fixed.onnx", kind="identity")
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i in (2, 3):
            dims[i].Clear()
            dims[i].dim_value = 64
    onnx.save(model, str(path))
    _label, run = EV.load_model_runner(path)
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(run(img), img, atol=1e-6)


@pytest.mark.parametrize("fixed", [(16,), (16, 16)], ids=["h16", "h16w16"])
def test_an_onnx_file_of_the_least_fixed_side_is_tried_at_it(
    fixed: tuple[int, ...], tmp_path: Path
) -> None:
    # 16 is the contract's least side, so a model exported at it has a fixed size the engine
    # runs it at: tried at 37 instead, ONNX Runtime would refuse the frame and evaluate the
    # model.
    import onnx

    from tests.contract_models import make_onnx_model

    path = make_onnx_model(tmp_path / "fixed16.onnx", kind="identity")
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, side in enumerate(fixed, start=2):
            dims[i].Clear()
            dims[i].dim_value = side
    onnx.save(model, str(path))
    _label, run = EV.load_model_runner(path)
    img = np.random.default_rng(0).random((16, 16 if len(fixed) == 2 else 24, 3))
    img = img.astype(np.float32)
    np.testing.assert_allclose(run(img), img, atol=1e-6)


# --------------------------------------------------------------------------------------------
# the teacher's memory, and --device
# --------------------------------------------------------------------------------------------


def test_teacher_memory_warning_says_what_fits_and_where(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import training.teachers as T

    cpu, gib = torch.device("cpu"), 1 << 30
    # Restormer at 1280x720 on an 8 GiB laptop: swapped or killed without a word.
    said = EV.teacher_memory_warning("restormer", 720, 1280, cpu, 8 * gib)
    assert said is not None and "\n" not in said
    need = T.TEACHERS["restormer"].cpu_bytes_per_pixel * 720 * 1280
    assert (
        f"teacher restormer needs about {need / gib:.1f} GiB for a 1280x720 image on cpu, " in said
    )
    assert "more than half of this machine's 8.0 GiB: it may swap or be killed; --max-size " in said
    assert said.endswith(", or --device cuda")
    fit = int(said.split("--max-size ")[1].split()[0])
    assert (
        fit % 16 == 0
        and EV.teacher_memory_warning("restormer", fit * 9 // 16, fit, cpu, 8 * gib) is None
    )
    assert EV.teacher_memory_warning("restormer", (fit + 16) * 9 // 16, fit + 16, cpu, 8 * gib)
    # Enough memory, or a teacher that needs little: nothing said.
    assert EV.teacher_memory_warning("restormer", 720, 1280, cpu, 64 * gib) is None
    assert EV.teacher_memory_warning("dmphn", 720, 1280, cpu, 8 * gib) is None
    # On a GPU its own memory counts, and the way out is not the GPU.
    said = EV.teacher_memory_warning("restormer", 720, 1280, torch.device("cuda", 1), 4 * gib)
    assert said is not None and "more than half of cuda:1's 4.0 GiB" in said
    assert "--device cuda" not in said
    # Memory unknown (Windows): more than 4 GiB is said.
    assert "more than 4 GiB" in (EV.teacher_memory_warning("restormer", 720, 1280, cpu, None) or "")
    spec = dataclasses.replace(T.TEACHERS["dmphn"], cpu_bytes_per_pixel=0)
    monkeypatch.setitem(T.TEACHERS, "unmeasured", spec)
    assert EV.teacher_memory_warning("unmeasured", 4000, 4000, cpu, gib) is None


def test_a_teacher_too_big_for_memory_is_warned_of_before_the_run_unless_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    import training.teachers as T

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.pkl").write_bytes(b"stand-in")
    _install_fake_teacher(tmp_path, monkeypatch, factor=1.0)
    # 1 MiB a pixel: a 64 px image needs 4 GiB where the machine has 1.
    monkeypatch.setitem(
        T.TEACHERS, "fake", dataclasses.replace(T.TEACHERS["fake"], cpu_bytes_per_pixel=1 << 20)
    )
    monkeypatch.setattr(EV, "physical_memory", lambda: 1 << 30)
    real_evaluate = EV.evaluate
    warned_before: list[bool] = []

    def evaluate(*args: object, **kwargs: object) -> dict:
        warned_before.append("--max-size 16 needs about" in caplog.text)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(EV, "evaluate", evaluate)
    argv = ["--data", "demo:", "--limit", "1", "--max-size", "64", "--no-perceptual"]
    argv += ["--teacher", "fake", "--teacher-weights", str(weights)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--grid-rows", "0"]
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        assert EV.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert warned_before == [True]
    line = next(r.getMessage() for r in caplog.records if "needs about" in r.getMessage())
    assert line.startswith("warning: teacher fake needs about 4.0 GiB for a 64x")
    assert "more than half of this machine's 1.0 GiB" in line
    # Its outputs cached, it does not run: nothing to warn of.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        assert EV.main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "needs about" not in caplog.text and warned_before == [True, False]


def test_device_moves_the_teacher_and_pytorch_students_input_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export as X
    import training.teachers as T

    seen: list[torch.device] = []

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.device)
            return torch.zeros(x.shape)  # on the CPU: "meta" has no pixels to score

    loaded: list[object] = []
    monkeypatch.setattr(
        T, "load_teacher", lambda *args, **kwargs: loaded.append(kwargs["device"]) or Recorder()
    )
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.pkl").write_bytes(b"stand-in")
    teacher = EV.CachedTeacher("dmphn", weights, tmp_path / "cache", device="meta")
    img = np.zeros((16, 24, 3), np.float32)
    assert teacher(img).shape == img.shape
    assert loaded == [torch.device("meta")] and seen == [torch.device("meta")]
    moved: list[torch.device] = []
    student = Recorder()
    student.to = lambda device: moved.append(torch.device(device)) or student  # type: ignore[method-assign]
    monkeypatch.setattr(X, "load_student", lambda path: (student, "tiny", {}))
    _, run = EV.load_model_runner(tmp_path / "best.pt", device="meta")
    assert run(img).shape == img.shape
    assert moved == [torch.device("meta")] and seen[-1] == torch.device("meta")
