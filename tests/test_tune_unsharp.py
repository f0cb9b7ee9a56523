"""The unsharp-mask baseline at other settings: `training.tune_unsharp` and `evaluate --unsharp`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from training import data as D
from training import evaluate as EV
from training import tune_unsharp as TU
from training.metrics import psnr, unsharp_mask


def _pair(seed: int, blur: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sharp = cv2.GaussianBlur(rng.uniform(0, 1, (40, 48, 3)).astype(np.float32), (0, 0), 0.7)
    return cv2.GaussianBlur(sharp, (0, 0), blur), sharp


def _db(out: np.ndarray, sharp: np.ndarray) -> float:
    return float(psnr(EV._to_tensor(out), EV._to_tensor(sharp))[0])


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(D.to_uint8(img), cv2.COLOR_RGB2BGR))


def test_tune_ranks_settings_by_their_gain_averaged_per_set_then_over_sets() -> None:
    # Set "a" has three images and set "b" one: a mean over all images would let "a" decide.
    pairs = {"a": [_pair(i, 1.2) for i in range(3)], "b": [_pair(9, 3.0)]}
    samples = [
        EV.Sample(name, f"{name}{i}", blurry, sharp)
        for name, group in pairs.items()
        for i, (blurry, sharp) in enumerate(group)
    ]
    amounts, sigmas = (0.25, 1.0, 3.0), (0.5, 1.0, 4.0)
    result = TU.tune(iter(samples), amounts, sigmas)
    assert result["sets"] == {"a": 3, "b": 1}

    def gain(amount: float, sigma: float) -> float:
        per_set = [
            np.mean([_db(unsharp_mask(bl, amount, sigma), sh) - _db(bl, sh) for bl, sh in group])
            for group in pairs.values()
        ]
        return float(np.mean(per_set))

    want = sorted(((gain(a, s), a, s) for a in amounts for s in sigmas), key=lambda t: -t[0])
    got = result["settings"]
    assert len(got) == 9
    assert [(r["amount"], r["sigma"]) for r in got[:3]] == [(a, s) for _, a, s in want[:3]]
    assert got[0]["gain"] == pytest.approx(want[0][0], abs=1e-4)
    assert got[0]["gain"] > got[-1]["gain"]
    # The table names the sets with their counts and marks the engine's default.
    table = TU.table(result, top=2)
    assert "a (3)" in table and "b (1)" in table and "(engine default)" not in table
    assert "(engine default)" in TU.table(TU.tune(iter(samples), (1.0,), (2.0,)))


def test_tune_refuses_a_sample_without_a_sharp_frame() -> None:
    blurry, _ = _pair(0, 1.0)
    with pytest.raises(ValueError, match="no sharp frame"):
        TU.tune(iter([EV.Sample("real", "x", blurry, None)]))
    with pytest.raises(ValueError, match="no samples"):
        TU.tune(iter([]))


def test_cli_tunes_on_pairs_and_writes_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        blurry, sharp = _pair(i, 1.5)
        _write(tmp_path / "blur" / f"{i}.png", blurry)
        _write(tmp_path / "sharp" / f"{i}.png", sharp)
    out = tmp_path / "t" / "tune.json"
    code = TU.main(
        ["--data", f"pairs:{tmp_path / 'blur'},{tmp_path / 'sharp'}", "--amounts", "0.5,1",
         "--sigmas", "1,2", "--out", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(out.read_text())
    best = result["settings"][0]
    assert f"best: --unsharp {best['amount']:g},{best['sigma']:g} " in printed
    assert result["sets"] == {"pairs": 2} and len(result["settings"]) == 4
    # The setting it prints is one evaluate takes.
    assert EV.unsharp_setting(f"{best['amount']:g},{best['sigma']:g}") == (
        best["amount"],
        best["sigma"],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "raw:{clip}"], "reach into the held-out frames 240-299"),
        (["--data", "raw:{clip}:200-250"], "reach into the held-out frames"),
        # The held-out range's own first and last frames are held out too.
        (["--data", "raw:{clip}:1-240"], "tune on training frames (raw:DIR:1-239)"),
        (["--data", "raw:{clip}:299-320"], "reach into the held-out frames"),
        (["--data", "real:{clip}"], "no sharp frame"),
        (["--data", "sharp:{clip}"], "sharp frames have no blur to tune against"),
        (["--data", "lai:{clip}"], "the Lai benchmark is evaluation data"),
        (["--data", "gopro:{clip}"], "a GoPro root is read for its test split"),
        (
            ["--data", "raw:{clip}:1-20", "--sigmas", "2,150"],
            "--sigmas: expected numbers in (0, 100]",
        ),
        (["--data", "raw:{clip}:1-20", "--out", "{clip}"], "not a file SharpCam can write"),
        (["--data", "raw:{clip}:1-20", "--out", "{clip}/f/x.json/y"], "--out"),
        (["--data", "raw:{clip}:1-20", "--amounts", "0,1"], "--amounts: expected numbers > 0"),
        (["--data", "raw:{clip}:1-20", "--sigmas", "x"], "--sigmas: expected numbers"),
        (["--data", "raw:{clip}:1-20", "--windows", "8"], "--windows: windows must be odd"),
        (["--data", "raw:{clip}:1-20", "--windows", "abc"], "--windows: not whole numbers"),
        (["--data", "raw:{clip}:1-20", "--windows", "7,7.5"], "--windows: not whole numbers"),
        (["--data", "raw:{clip}:1-20", "--windows", ","], "--windows: no window sizes given"),
        (["--data", "raw:{clip}:1-20", "--amounts", "x,1"], "--amounts: expected numbers"),
        (["--data", "pairs:{clip}/none,{clip}"], "no such folder"),
        (["--data", "raw:{clip}:1-20", "--raw-stride", "0"], "--raw-stride must be >= 1"),
        (["--data", "raw:{clip}:1-20", "--max-size", "-1"], "--max-size must be >= 0"),
        (["--data", "raw:{clip}:1-20", "--crop", "-1"], "--crop must be >= 0"),
        (["--data", "raw:{clip}:1-20", "--limit", "-1"], "--limit must be >= 0"),
    ],
)
def test_cli_refuses_held_out_frames_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    clip = tmp_path / "clip"
    (clip / "test").mkdir(parents=True)  # as a GoPro dataset's root has
    (clip / "f").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as exc:
        TU.main([a.format(clip=clip) for a in args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_tunes_on_training_frames_of_a_raw_clip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    for i in range(1, 26):
        _write(tmp_path / "seq" / f"{i:06d}.png", rng.uniform(0, 1, (16, 16, 3)))
    code = TU.main(["--data", f"raw:{tmp_path / 'seq'}:1-25", "--windows", "7", "--sigmas", "1"])
    printed = capsys.readouterr().out
    assert code == 0 and "raw-plain" in printed and "raw-linear" in printed, printed


def test_evaluate_scores_each_unsharp_setting_in_its_own_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grids: dict[str, list[list[tuple[str, np.ndarray]]]] = {}
    monkeypatch.setattr(EV, "write_grid", lambda rows, path: grids.update({path.name: rows}))
    blurry, sharp = _pair(0, 1.5)
    sample = EV.Sample("pairs", "a", blurry, sharp)
    baselines = [EV.unsharp_baseline(0.5, 3.0), EV.unsharp_baseline(2.0, 1.0)]
    methods = [("student", lambda x: x * 0.5)]
    summary = EV.evaluate(iter([sample]), methods, tmp_path / "out", baselines=baselines)
    assert summary["methods"] == ["blurry", "unsharp", "unsharp@0.5,3", "unsharp@2,1", "student"]
    rows = summary["sets"]["pairs"]["methods"]
    assert rows["unsharp@0.5,3"]["psnr"] == pytest.approx(
        _db(unsharp_mask(blurry, 0.5, 3.0), sharp), abs=1e-5
    )
    assert rows["unsharp@2,1"]["psnr"] == pytest.approx(
        _db(unsharp_mask(blurry, 2.0, 1.0), sharp), abs=1e-5
    )
    assert rows["student"]["psnr"] == pytest.approx(_db(blurry * 0.5, sharp), abs=1e-5)
    # The grid's model column is the student's, not a baseline's.
    (row,) = grids["grid_pairs.png"]
    assert [label.split()[0] for label, _ in row] == ["blurry", "student", "sharp"]


def test_evaluate_labels_keep_every_digit_and_skip_the_engines_own_setting(tmp_path: Path) -> None:
    # Two settings that ":g" rounded alike became one row; "--unsharp 1,2" repeated the row
    # `unsharp` under another name.
    blurry, sharp = _pair(2, 1.5)
    for i, img in enumerate((blurry, sharp)):
        _write(tmp_path / ("blur", "sharp")[i] / "a.png", img)
    out = tmp_path / "out"
    code = EV.main(
        ["--data", f"pairs:{tmp_path / 'blur'},{tmp_path / 'sharp'}", "--unsharp", "0.1234567,2",
         "--unsharp", "0.1234568,2", "--unsharp", "1,2", "--unsharp", "1.0,2.0", "--no-perceptual",
         "--grid-rows", "0", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["blurry", "unsharp", "unsharp@0.1234567,2", "unsharp@0.1234568,2"]
    assert summary["options"]["unsharp"] == ["unsharp@0.1234567,2", "unsharp@0.1234568,2"]


def test_the_best_printed_is_the_setting_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry, sharp = _pair(4, 1.5)
    _write(tmp_path / "blur" / "a.png", blurry)
    _write(tmp_path / "sharp" / "a.png", sharp)
    code = TU.main(
        ["--data", f"pairs:{tmp_path / 'blur'},{tmp_path / 'sharp'}", "--amounts", "0.1234567",
         "--sigmas", "2.5"]
    )  # fmt: skip
    assert code == 0
    assert "best: --unsharp 0.1234567,2.5 (" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["1", "-1,2", "1,0", "1,nan", "a,b", "1,2,3", "1,500"])
def test_evaluate_refuses_a_bad_unsharp_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        EV.main(["--data", "demo:", f"--unsharp={text}", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--unsharp: expected AMOUNT,SIGMA" in capsys.readouterr().err


def test_the_search_scores_as_evaluate_does() -> None:
    # The search's own PSNR (numpy, no torch) and its reused blur give evaluate's numbers.
    blurry, sharp = _pair(3, 2.0)
    out = unsharp_mask(blurry, 0.4, 3.0)
    assert TU._psnr(out, sharp.astype(np.float64)) == pytest.approx(_db(out, sharp), abs=1e-6)
    gauss = cv2.GaussianBlur(blurry, (0, 0), 3.0)
    assert np.array_equal(unsharp_mask(blurry, 0.4, 3.0, blurred=gauss), out)
    assert TU._psnr(sharp, sharp.astype(np.float64)) == 100.0


def test_tune_breaks_ties_toward_the_gentler_setting() -> None:
    # A flat frame is left as it is by every setting: all gains tie at 0 dB.
    flat = np.full((16, 16, 3), 0.5, np.float32)
    result = TU.tune(iter([EV.Sample("s", "a", flat, flat)]), (2.0, 0.5), (4.0, 1.0))
    assert {r["gain"] for r in result["settings"]} == {0.0}
    assert [(r["amount"], r["sigma"]) for r in result["settings"]] == [
        (0.5, 1.0), (0.5, 4.0), (2.0, 1.0), (2.0, 4.0)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one amount"):
        TU.tune(iter([EV.Sample("s", "a", flat, flat)]), (), (1.0,))


def test_tune_scores_the_blurry_input_as_evaluate_does() -> None:
    # evaluate clamps what it scores to [0, 1]; an input that overshoots must read the same.
    blurry, sharp = _pair(5, 1.5)
    bright = blurry + 0.6  # mostly above 1
    result = TU.tune(iter([EV.Sample("s", "a", bright, sharp)]), (0.5,), (1.0,))
    assert result["blurry"]["s"] == pytest.approx(_db(bright, sharp), abs=1e-5)


def test_table_lists_the_top_then_the_engine_default_once() -> None:
    # Barely blurred: the engine's strong default over-sharpens and ranks below the gentlest.
    pairs = [_pair(i, 0.3) for i in range(2)]
    samples = [EV.Sample("a", f"a{i}", bl, sh) for i, (bl, sh) in enumerate(pairs)]
    result = TU.tune(iter(samples), (0.1, 1.0), (0.5, 2.0))
    best = result["settings"][0]
    assert (best["amount"], best["sigma"]) != (1.0, 2.0)
    lines = TU.table(result, top=1).splitlines()
    assert len(lines) == 4  # header, rule, the best, the engine's default
    assert lines[1].count("|") == lines[0].count("|")
    assert "(engine default)" in lines[3] and "(engine default)" not in lines[2]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(best["psnr"]["a"] - result["blurry"]["a"], abs=1e-3)
    assert float(cells[3]) == pytest.approx(best["gain"], abs=1e-3)
    # In the top rows already, the default is not repeated below them.
    assert TU.table(result, top=4).count("(engine default)") == 1


def test_number_lists_take_the_upper_bound_and_skip_blanks() -> None:
    # evaluate --unsharp takes sigma 100 (MAX_SIGMA), so the search may try it.
    assert TU._floats("1, 100,", "--sigmas", most=EV.MAX_SIGMA) == [1.0, 100.0]
    with pytest.raises(ValueError, match="expected numbers"):
        TU._floats(",", "--amounts")


def _fake_samples(calls: list[dict], n: int = 1) -> Callable[..., Iterator[EV.Sample]]:
    # Stands in for evaluate.iter_samples: records what main asks it for.
    def fake(spec: object, **kwargs: object) -> Iterator[EV.Sample]:
        calls.append(kwargs)
        for i in range(n):
            blurry, sharp = _pair(i, 1.5)
            yield EV.Sample("pairs", str(i), blurry, sharp)

    return fake


def test_cli_passes_its_options_to_the_sample_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(TU, "iter_samples", _fake_samples(calls))
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
    data = f"pairs:{tmp_path / 'blur'},{tmp_path / 'sharp'}"
    out = tmp_path / "tune.json"
    code = TU.main(
        ["--data", data, "--windows", "9", "--raw-stride", "5", "--max-size", "64", "--crop",
         "32", "--limit", "3", "--amounts", "1", "--sigmas", "2", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    options = {"windows": [9], "raw_stride": 5, "max_size": 64, "crop": 32, "limit": 3}
    assert calls == [{**options, "held_out": False}]
    result = json.loads(out.read_text())
    assert result["options"] == options and result["data"] == [data]


def test_cli_reports_errors_with_exit_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
    argv = ["--data", f"pairs:{tmp_path / 'blur'},{tmp_path / 'sharp'}", "--sigmas", "2"]
    monkeypatch.setattr(TU, "iter_samples", _fake_samples([], n=0))
    assert TU.main(argv) == 1
    assert "no samples" in capsys.readouterr().err
    # A failed write comes after the table is printed, so the search is not lost.
    monkeypatch.setattr(TU, "iter_samples", _fake_samples([]))

    def refuse(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", refuse)
    assert TU.main([*argv, "--out", str(tmp_path / "t.json")]) == 1
    captured = capsys.readouterr()
    assert "best: --unsharp" in captured.out and "disk full" in captured.err
