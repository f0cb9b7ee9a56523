"""The trainer: schedule, exact resume, teacher cache, DDP on gloo, and the smoke config end to end."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.cache_teacher import build_cache
from training.config import ConfigError, TrainConfig, load_config
from training.data import DeblurDataset, make_synthetic_dataset
from training.train import (
    VAL_STREAM,
    WARM_STEPS,
    _check_resume_world,
    _device_share,
    _worker_init,
    build_data,
    load_checkpoint,
    lr_factor,
    plot_curves,
    save_atomic,
    train,
    update_ema,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "training" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), 3, frames=40, size=(160, 120))


def _data_overrides(d: dict[str, Path]) -> list[str]:
    raws = ",".join(str(d["raw"] / f"seq_{i:02d}") for i in range(3))
    return [
        f"--data.raw_dirs=[{raws}]",
        f"--data.photo_dirs=[{d['photos']}]",
        f"--data.eval_dirs=[{d['eval']}]",
    ]


def _tiny_argv(d: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return _data_overrides(d) + [
        f"--out_dir={out}",
        "--student=tiny",
        "--steps_per_epoch=3",
        "--stages=[{patch: 32, epochs: 1, batch: 2}, {patch: 48, epochs: 1, batch: 2}]",
        "--data.val_count=1",
        "--data.val_crop=32",
        "--warmup_steps=2",
        *extra,
    ]


def _tiny(d: dict[str, Path], out: Path, *extra: str) -> TrainConfig:
    return load_config(SMOKE, _tiny_argv(d, out, *extra))


def test_lr_schedule_is_a_pure_function_of_step() -> None:
    cfg = load_config(
        None,
        [
            "--lr=0.01",
            "--min_lr=0.001",
            "--warmup_steps=10",
            "--steps_per_epoch=10",
            "--stages=[{patch: 64, epochs: 11, batch: 1}]",
        ],
    )
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-6)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert [lr_factor(s, cfg) for s in range(0, 110, 7)] == [
        lr_factor(s, cfg) for s in range(0, 110, 7)
    ]


def test_a_min_lr_above_lr_never_raises_the_rate() -> None:
    # A fine-tune at --lr=1e-5 from a config whose floor is 2e-5: the cosine climbed to 2x lr.
    cfg = load_config(
        None,
        ["--lr=1e-5", "--min_lr=2e-5", "--steps_per_epoch=10", "--stages=[{patch: 64, epochs: 2}]"],
    )
    assert [lr_factor(s, cfg) for s in (0, 10, 19, 20, 100)] == [1.0] * 5


def test_the_cosine_stays_at_its_floor_past_its_last_step() -> None:
    # A run resumed with fewer steps_per_epoch is past the schedule's end: without the clamp
    # the cosine climbed back towards lr (at twice its length it was at lr again).
    cfg = load_config(
        None,
        [
            "--lr=0.01",
            "--min_lr=0.001",
            "--warmup_steps=10",
            "--steps_per_epoch=10",
            "--stages=[{patch: 64, epochs: 11, batch: 1}]",
        ],
    )
    assert [lr_factor(s, cfg) for s in (110, 111, 150, 210, 1000)] == pytest.approx([0.1] * 5)


def test_plateau_scheduler_keeps_the_warm_up(synth: dict[str, Path], tmp_path: Path) -> None:
    cfg = _tiny(
        synth,
        tmp_path / "plateau",
        "--scheduler=plateau",
        "--lr=0.01",
        "--warmup_steps=100",
        "--stages=[{patch: 32, epochs: 1, batch: 1}]",
    )
    rows = train(cfg)["epochs"]
    # 3 steps into a 100-step warm-up the rate is still a few hundredths of lr, not lr.
    assert rows[-1]["lr"] == pytest.approx(0.01 * lr_factor(2, cfg))
    assert rows[-1]["lr"] == pytest.approx(0.0003)


def _flat_validation(model: nn.Module, val: list, device: torch.device) -> dict[str, float]:
    """A validation whose PSNR never improves: plateau and early-stop logic without training."""
    return {"val_psnr": 20.0, "blurry_psnr": 19.0, "val_ssim": 0.5, "blurry_ssim": 0.4}


def test_plateau_reduction_right_after_the_warm_up_is_kept(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # Validation PSNR never improves after the first epoch: with patience 0, the validation at
    # the end of epoch 2 (step 6, where the 6-step warm-up ends) halves the rate. The warm-up
    # must not put it back at lr on step 6 (its factor there is 1, the rate reached already).
    monkeypatch.setattr(T, "validate", _flat_validation)
    cfg = _tiny(
        synth,
        tmp_path / "plateau",
        "--scheduler=plateau",
        "--lr=0.01",
        "--warmup_steps=6",
        "--plateau_patience=0",
        "--plateau_factor=0.5",
        "--stages=[{patch: 32, epochs: 3, batch: 1}]",
    )
    rows = train(cfg)["epochs"]
    assert [r["lr"] for r in rows] == pytest.approx([0.005, 0.01, 0.005])


def test_a_plateau_run_resumed_with_another_lr_scales_the_rate_it_reached(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # The rate after the warm-up is the plateau's state: a resume with --lr=0.001 went on at
    # the checkpoint's 0.005, though config.yaml and the resume warning said the new rate.
    monkeypatch.setattr(T, "validate", _flat_validation)
    opts = ("--scheduler=plateau", "--warmup_steps=0", "--plateau_patience=0")
    opts += ("--plateau_factor=0.5", "--stages=[{patch: 32, epochs: 3, batch: 1}]")
    out = tmp_path / "plateau"
    first = train(_tiny(synth, out, *opts, "--lr=0.01", "--stop_after_steps=6"))["epochs"]
    # Epoch 2 did not improve on epoch 1: the rate was cut to 0.005 after it.
    assert [r["lr"] for r in first] == pytest.approx([0.01, 0.01])
    rows = train(_tiny(synth, out, *opts, "--lr=0.001", "--resume"))["epochs"]
    # The cut is kept, of the new rate: epoch 3 runs at half of 0.001 (it ran at 0.005).
    assert rows[-1]["lr"] == pytest.approx(0.0005)


def test_a_plateau_resume_under_a_lower_lr_never_goes_below_min_lr() -> None:
    from training.train import _apply_optimiser_settings

    # The plateau's rate reached (0.005 of lr 0.01) scaled to a resume's --lr=0.001 is 0.0005:
    # under the config's min_lr, a floor ReduceLROnPlateau itself never crosses.
    cfg = load_config(None, ["--scheduler=plateau", "--lr=0.001", "--min_lr=0.0008"])
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=0.005)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    _apply_optimiser_settings(optimizer, scheduler, cfg, global_step=100, saved_lr=0.01)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0008)
    assert scheduler.min_lrs == [0.0008]


def test_a_resumed_run_that_stopped_early_stays_stopped(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # Validation never improves after the first epoch: early_stop=1 ends the run after epoch 2.
    monkeypatch.setattr(T, "validate", _flat_validation)
    args = ("--early_stop=1", "--stages=[{patch: 32, epochs: 4, batch: 2}]")
    first = train(_tiny(synth, tmp_path / "es", *args))
    assert first["stopped"] == "early stop" and len(first["epochs"]) == 2
    before = load_checkpoint(tmp_path / "es" / "last.pt")
    # A job relaunched the same way (always with --resume) must not train another epoch.
    again = train(_tiny(synth, tmp_path / "es", *args, "--resume"))
    assert again["stopped"] == "early stop" and again["steps"] == []
    after = load_checkpoint(tmp_path / "es" / "last.pt")
    assert (
        (after["epoch"], after["global_step"]) == (before["epoch"], before["global_step"]) == (2, 6)
    )


def test_a_better_validation_starts_the_early_stop_count_again(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # early_stop counts validations without a better PSNR since the best one: counted since
    # the start, a run that kept improving every other validation stopped half-way.
    scores = iter([20.0, 19.0, 21.0, 20.0, 22.0])
    monkeypatch.setattr(
        T, "validate", lambda *a: {"val_psnr": next(scores), "blurry_psnr": 18.0,
                                   "val_ssim": 0.9, "blurry_ssim": 0.8},
    )  # fmt: skip
    run = tmp_path / "es"
    out = train(_tiny(synth, run, "--early_stop=2", "--stages=[{patch: 32, epochs: 5, batch: 1}]"))
    assert out["stopped"] == "finished" and len(out["epochs"]) == 5
    best = load_checkpoint(run / "best.pt")
    assert (best["epoch"], best["best_psnr"], best["bad_epochs"]) == (5, 22.0, 0)


def test_the_last_epoch_is_validated_and_saved_whatever_val_every_and_ckpt_every(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # 3 epochs with val_every=2 and ckpt_every=2: the run's end is epoch 3. Left unvalidated,
    # its best.pt was epoch 2's; left unsaved, last.pt missed the final epoch's training.
    scores = iter([20.0, 21.0])
    monkeypatch.setattr(
        T, "validate", lambda *a: {"val_psnr": next(scores), "blurry_psnr": 18.0,
                                   "val_ssim": 0.9, "blurry_ssim": 0.8},
    )  # fmt: skip
    run = tmp_path / "every"
    args = ("--val_every=2", "--ckpt_every=2", "--stages=[{patch: 32, epochs: 3, batch: 1}]")
    rows = train(_tiny(synth, run, *args))["epochs"]
    assert ["val_psnr" in r for r in rows] == [False, True, True]
    assert rows[-1]["val_psnr"] == 21.0
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert (last["epoch"], last["global_step"]) == (3, 9)
    assert (best["epoch"], best["best_psnr"]) == (3, 21.0)


def test_a_resume_on_another_validation_set_starts_its_best_score_again(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # The old set's best PSNR was compared with the new set's: with a harder new set nothing
    # ever beat it, best.pt stayed at the old epoch and early stopping ended the run.
    scores = iter([30.0, 25.0, 25.5, 26.0])

    def scored(model: object, val: object, device: object) -> dict[str, float]:
        return {"val_psnr": next(scores), "blurry_psnr": 20.0, "val_ssim": 0.9, "blurry_ssim": 0.8}

    monkeypatch.setattr(T, "validate", scored)
    stages = "--stages=[{patch: 32, epochs: 4, batch: 2}]"
    run = tmp_path / "val"
    train(_tiny(synth, run, "--early_stop=2", stages, "--stop_after_steps=3"))
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    out = train(_tiny(synth, run, "--early_stop=2", stages, "--resume", "--data.val_crop=0"))
    assert out["stopped"] != "early stop" and len(out["epochs"]) == 4
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 4 and best["best_psnr"] == 26.0
    assert load_checkpoint(run / "best_old_val.pt")["epoch"] == 1  # kept, not overwritten


def test_a_resume_on_the_same_clips_at_another_path_keeps_its_best_score(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import training.train as T

    # The GPU sessions carry the clips to another folder: the same validation set.
    scores = iter([30.0, 25.0, 25.5, 26.0])
    monkeypatch.setattr(
        T, "validate", lambda *a: {"val_psnr": next(scores), "blurry_psnr": 20.0,
                                   "val_ssim": 0.9, "blurry_ssim": 0.8},
    )  # fmt: skip
    moved = dict(synth, raw=tmp_path / "carried" / "raw")
    shutil.copytree(synth["raw"], moved["raw"])
    stages = "--stages=[{patch: 32, epochs: 4, batch: 2}]"
    run = tmp_path / "val"
    train(_tiny(synth, run, stages, "--stop_after_steps=3"))
    train(_tiny(moved, run, stages, "--resume"))
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 1 and best["best_psnr"] == 30.0
    assert not (run / "best_old_val.pt").exists()
    # Without held-out frames (none in 41-50 of these 40-frame clips) validation is drawn from
    # the training sources with the seed: another seed is another set.
    scores = iter([30.0, 25.0, 25.5, 26.0])
    again = tmp_path / "seeded"
    none_held_out = "--data.raw_val_range=[41, 50]"
    train(_tiny(synth, again, stages, none_held_out, "--stop_after_steps=3"))
    train(_tiny(synth, again, stages, none_held_out, "--resume", "--seed=7"))
    assert load_checkpoint(again / "best.pt")["best_psnr"] == 26.0
    assert load_checkpoint(again / "best_old_val.pt")["best_psnr"] == 30.0


def test_a_wrong_student_fails_before_the_data_is_built(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # Building the data takes minutes on real data: a typo in the student must not wait for it.
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_data ran before the student was checked")

    monkeypatch.setattr(T, "build_data", no_data)
    with pytest.raises(ConfigError, match="unknown student 'nosuch'"):
        train(_tiny(synth, tmp_path / "typo", "--student=nosuch"))


def test_a_set_up_mistake_is_refused_before_the_earlier_run_is_moved_aside(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of these failed only after the earlier run in out_dir had gone to previous_1: a
    # --resume then found no last.pt and started afresh.
    from training.teachers import WeightsError

    out = tmp_path / "run"
    train(_tiny(synth, out, "--stages=[{patch: 32, epochs: 1, batch: 2}]", "--stop_after_steps=1"))

    def files() -> dict[str, bytes | None]:
        return {p.name: p.read_bytes() if p.is_file() else None for p in out.iterdir()}

    before = files()
    from training.data import LeakageError

    leaky = _leaky_photos(synth, tmp_path)
    vgg = tmp_path / "vgg.pth"  # the normalised VGG-19 format, cut before its first ReLU
    torch.save({"0.weight": torch.zeros(3, 3, 1, 1), "0.bias": torch.zeros(3)}, vgg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    online = ("--teacher.mode=online", "--loss.distill=1")
    cases: list[tuple[tuple[str, ...], type[Exception], str]] = [
        (("--student=fats",), ConfigError, "student: unknown student 'fats'; known: "),
        (("--student_kwargs={foo: 1}",), ConfigError, "student_kwargs: 'tiny' has no setting foo"),
        (("--device=cuda",), ConfigError, "device: cuda asked for, but no CUDA device"),
        (("--teacher.name=foo", *online), ConfigError, "teacher.name: unknown teacher 'foo'"),
        (
            ("--loss.vgg=0.1", f"--loss.vgg_weights={vgg}", "--loss.vgg_layers=[relu9_9]"),
            ConfigError,
            r"loss.vgg: VGG layers \['relu9_9'\] not available",
        ),
        (
            ("--loss.vgg=0.1", f"--loss.vgg_weights={tmp_path / 'nope.pth'}"),
            FileNotFoundError,
            "nope.pth does not exist",
        ),
        (
            ("--teacher.name=restormer", f"--teacher.weights={tmp_path}", *online),
            WeightsError,
            "is a folder",
        ),
        (
            ("--teacher.name=restormer", f"--teacher.weights={vgg}", *online),
            WeightsError,
            "vgg.pth does not match Restormer",
        ),
        # refused by the leakage guard while the data is built, after the student and teacher
        ((f"--data.photo_dirs=[{leaky}]",), LeakageError, r"leak.png  ==  .*eval"),
    ]
    for extra, error, message in cases:
        with pytest.raises(error, match=message):
            train(_tiny(synth, out, *extra))
        assert files() == before, extra
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"device: cuda:3 asked for, but this machine has 1"):
        train(_tiny(synth, out, "--device=cuda:3"))
    assert files() == before


def _leaky_photos(synth: dict[str, Path], tmp_path: Path) -> Path:
    """A photo folder holding a byte copy of one of ``synth``'s evaluation images."""
    import shutil

    from training.data import list_images

    photos = tmp_path / "leaky"
    photos.mkdir()
    shutil.copy(list_images(synth["photos"])[-1], photos / "ok.png")
    shutil.copy(list_images(synth["eval"])[0], photos / "leak.png")
    return photos


def test_the_leakage_guard_refusing_is_its_message_and_status_2_on_the_command_line(
    synth: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import runpy

    import training.train as T
    from training import teachers

    # The overlap is the data's, not a crash: it was a 20-line traceback under its message.
    leaky = _leaky_photos(synth, tmp_path)
    argv = [
        "--config",
        str(SMOKE),
        *_tiny_argv(synth, tmp_path / "run"),
        f"--data.photo_dirs=[{leaky}]",
    ]
    monkeypatch.setattr(sys, "argv", ["training.train", *argv])
    with pytest.raises(SystemExit) as e:
        T._cli()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("train: 1 training image(s) also appear in the evaluation data")
    assert re.search(r"leak.png  ==  .*eval", err) and "data.exclude" in err
    # cache_teacher builds the same data; its teacher is loaded first (none is needed here)
    monkeypatch.setattr(teachers, "load_teacher", lambda *a, **k: nn.Identity())
    cache = tmp_path / "cache.pt"
    monkeypatch.setattr(
        sys,
        "argv",
        ["cache_teacher", *argv, "--teacher.name=dmphn", "--out", str(cache), "--device", "cpu"],
    )
    monkeypatch.delitem(sys.modules, "training.cache_teacher")  # run afresh as __main__
    with pytest.raises(SystemExit) as e:
        runpy.run_module("training.cache_teacher", run_name="__main__")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("cache_teacher: 1 training image(s)")
    assert not cache.exists()


def test_a_set_up_mistake_is_one_line_and_status_2_before_anything_is_written(
    synth: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(
            ["--config", str(SMOKE), *_data_overrides(synth), f"--out_dir={out}", "--student=fats"]
        )
    assert e.value.code == 2
    assert "error: student: unknown student 'fats'" in capsys.readouterr().err.splitlines()[-1]
    assert not out.exists()  # its config.yaml was written before the student was built


def test_distillation_without_a_teacher_name_under_mode_auto_says_so(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # mode auto falls back to no teacher with a warning when it has none to run; an empty name
    # turned the terms off without one.
    terms = ("--teacher.name=", "--teacher.mode=auto", "--loss.distill=1", "--stop_after_steps=1")
    with caplog.at_level(logging.WARNING, logger="training.train"):
        train(_tiny(synth, tmp_path / "run", *terms))
    assert "teacher.name is empty: distillation terms are off for this run" in caplog.text


@pytest.mark.parametrize(("name", "said"), [("", "is empty"), ("foo", "'foo' is no known teacher")])
def test_cache_teacher_without_a_known_teacher_name_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, said: str
) -> None:
    # smoke.yaml names no teacher: load_teacher's KeyError (unknown teacher '') was a traceback.
    from training.cache_teacher import main

    out = tmp_path / "cache.pt"
    with pytest.raises(SystemExit) as e:
        main(["--config", str(SMOKE), f"--out={out}", f"--teacher.name={name}"])
    assert e.value.code == 2
    assert f"error: teacher.name {said}: name the teacher" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_resume_keeps_the_runs_config(synth: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2"))
    saved = (out / "config.yaml").read_text()
    # Another student cannot load this last.pt: the run's own record of its settings must stay.
    with pytest.raises(ConfigError):
        train(_tiny(synth, out, "--resume", "--student=fast_s"))
    assert (out / "config.yaml").read_text() == saved
    # A resume that loads writes the config it continues with.
    train(_tiny(synth, out, "--resume", "--lr=0.0005"))
    assert "lr: 0.0005" in (out / "config.yaml").read_text()


def test_resume_continues_exactly(synth: dict[str, Path], tmp_path: Path) -> None:
    full = train(_tiny(synth, tmp_path / "full"))
    assert len(full["steps"]) == 6 and full["stopped"] == "finished"
    assert full["steps_per_s"] is None  # no steps after the warm-up ones to time
    first = train(_tiny(synth, tmp_path / "split", "--stop_after_steps=4"))  # stops mid-epoch 2
    assert first["stopped"] == "step limit" and len(first["steps"]) == 4
    second = train(_tiny(synth, tmp_path / "split", "--resume"))
    assert first["steps"] + second["steps"] == full["steps"]
    # A resume continues the run in place: nothing of it is moved aside as an earlier run's.
    assert not list((tmp_path / "split").glob("previous_*"))
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # The generators go on as they would have: a student with dropout draws from torch's.
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["rng"]["numpy"] == b["rng"]["numpy"] and a["rng"]["python"] == b["rng"]["python"]
    assert a["config"]["student"] == "tiny" and a["config_digest"] == b["config_digest"]
    for name in ("last.pt", "best.pt", "config.yaml", "log.csv", "curves.png"):
        assert (tmp_path / "full" / name).is_file(), name
    assert not list((tmp_path / "full").glob("*.tmp"))


def test_a_fresh_run_moves_an_earlier_runs_checkpoints_aside(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stages=[{patch: 32, epochs: 1, batch: 2}]"))
    old = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt", "config.yaml")}
    # A fresh run stopped before its first validation: an old best.pt left beside its own
    # config.yaml and last.pt looked like its own.
    res = train(_tiny(synth, out, "--stop_after_steps=1", "--lr=0.0005"))
    assert res["stopped"] == "step limit"
    assert not (out / "best.pt").exists()
    assert load_checkpoint(out / "last.pt")["global_step"] == 1
    assert "lr: 0.0005" in (out / "config.yaml").read_text()
    # Moved, never deleted; a third run does not overwrite the second's.
    assert {n: (out / "previous_1" / n).read_bytes() for n in old} == old
    train(_tiny(synth, out, "--stop_after_steps=1"))
    assert (out / "previous_2" / "last.pt").is_file()
    assert (out / "previous_1" / "best.pt").read_bytes() == old["best.pt"]


def test_a_run_folder_holding_only_its_config_is_not_moved_aside(tmp_path: Path) -> None:
    from training.train import move_aside_previous_run

    # A set-up that failed (a mistyped path) leaves its config.yaml alone: each retry moved it
    # into a previous_N of its own, burying a real earlier run among config-only folders.
    (tmp_path / "config.yaml").write_text("lr: 0.001\n")
    assert move_aside_previous_run(tmp_path) is None
    assert (tmp_path / "config.yaml").is_file() and not list(tmp_path.glob("previous_*"))
    (tmp_path / "log.csv").write_text("epoch\n1\n")
    moved = move_aside_previous_run(tmp_path)
    assert moved == tmp_path / "previous_1"
    assert sorted(p.name for p in moved.iterdir()) == ["config.yaml", "log.csv"]


def test_init_from_the_out_dirs_own_checkpoint_reads_it_before_moving_it(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stages=[{patch: 32, epochs: 1, batch: 2}]"))
    before = load_checkpoint(out / "best.pt")
    res = train(_tiny(synth, out, f"--init_from={out / 'best.pt'}", "--max_minutes=0.00001"))
    assert res["stopped"] == "time budget"
    assert load_checkpoint(out / "previous_1" / "best.pt")["global_step"] == before["global_step"]


def test_resuming_a_run_from_before_a_new_config_key_warns_only_of_real_changes(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import hashlib
    import json
    import shutil

    from training.config import RUN_CONTROL_KEYS

    old = tmp_path / "old"
    train(_tiny(synth, old, "--stop_after_steps=2"))
    # The checkpoint as a run started before data.psf_centre and loss.fft existed wrote it.
    ck = load_checkpoint(old / "last.pt")
    del ck["config"]["data"]["psf_centre"], ck["config"]["loss"]["fft"]
    kept = {k: v for k, v in ck["config"].items() if k not in RUN_CONTROL_KEYS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    ck["config_digest"] = hashlib.sha256(text.encode()).hexdigest()
    torch.save(ck, old / "last.pt")
    shutil.copytree(old, tmp_path / "changed")
    with caplog.at_level(logging.WARNING, logger="training.train"):
        train(_tiny(synth, old, "--stop_after_steps=1", "--resume"))
    assert "different config" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.train"):
        train(
            _tiny(
                synth,
                tmp_path / "changed",
                "--stop_after_steps=1",
                "--resume",
                "--loss.edge=0.3",
                "--data.psf_centre=time",
            )
        )
    warned = [r.getMessage() for r in caplog.records if "different config" in r.getMessage()]
    assert len(warned) == 1 and warned[0].endswith(": data.psf_centre, loss.edge")


def test_a_run_from_before_the_strided_stem_resumes_exactly(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    from training.models.student import create_student

    train(_tiny(synth, tmp_path / "full"))
    train(_tiny(synth, tmp_path / "old", "--stop_after_steps=4"))
    # Rewrite the checkpoint as the pixel-unshuffle stem stored it: weight and Adam moments
    # (C, 3*s*s, 1, 1) instead of (C, 3, s, s), the same numbers.
    path = tmp_path / "old" / "last.pt"
    ck = torch.load(path, map_location="cpu", weights_only=False)
    names = [n for n, _ in create_student("tiny").named_parameters()]
    index = names.index("stem.weight")
    for key in ("model", "model_raw"):
        if key in ck:
            w = ck[key]["stem.weight"]
            ck[key]["stem.weight"] = w.reshape(w.shape[0], -1, 1, 1)
    moments = ck["optimizer"]["state"][index]
    for k in ("exp_avg", "exp_avg_sq"):
        moments[k] = moments[k].reshape(moments[k].shape[0], -1, 1, 1)
    assert ck["model"]["stem.weight"].shape[1] == 48
    torch.save(ck, path)
    second = train(_tiny(synth, tmp_path / "old", "--resume"))
    assert len(second["steps"]) == 2
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(path)["model"]
    assert b["stem.weight"].shape == a["stem.weight"].shape
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_save_atomic_syncs_the_data_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    # Without the syncs the rename can reach the disk before the data: after a power loss,
    # last.pt was there but empty.
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        events.append((f"fsync {kind}", st.st_ino if kind == "dir" else st.st_size))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", Path(str(dst)).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_atomic({"w": torch.arange(1000)}, tmp_path / "last.pt")
    assert [e[0] for e in events] == ["fsync file", "replace", "fsync dir"]
    assert events[0][1] == (tmp_path / "last.pt").stat().st_size > 0  # synced whole
    assert events[1][1] == "last.pt" and events[2][1] == tmp_path.stat().st_ino
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.arange(1000))
    assert not (tmp_path / "last.pt.tmp").exists()


def test_save_atomic_skips_the_folder_sync_where_a_folder_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows refuses os.open on a folder: the checkpoint must still be saved.
    synced: list[int] = []
    real_open = os.open

    def open_(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(str(path)).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", synced.append)
    save_atomic({"w": torch.ones(3)}, tmp_path / "last.pt")
    assert len(synced) == 1  # the file's, not the folder's
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(3))


def test_save_atomic_goes_on_where_the_file_system_refuses_to_sync_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import stat

    # WSL1's DrvFs and CIFS mounts open a folder but fail its fsync with EINVAL: the checkpoint
    # was already written, synced and renamed, and the error ended the run. An I/O error is
    # still one.
    real_fsync = os.fsync
    code = errno.EINVAL

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_atomic({"w": torch.ones(3)}, tmp_path / "last.pt")
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(3))
    code = errno.EIO
    with pytest.raises(OSError) as info:
        save_atomic({"w": torch.zeros(3)}, tmp_path / "last.pt")
    assert info.value.errno == errno.EIO


def test_a_save_atomic_that_fails_keeps_the_earlier_file_and_frees_its_part(
    tmp_path: Path,
) -> None:
    # A write cut short (here by something that cannot be pickled; a full disk in a run) left
    # last.pt.tmp beside the checkpoint, holding the space the disk had run out of.
    save_atomic({"w": torch.ones(3)}, tmp_path / "last.pt")
    with pytest.raises(TypeError, match="pickle"):
        save_atomic({"w": torch.zeros(3), "x": (i for i in ())}, tmp_path / "last.pt")
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_failed_curve_plot_closes_its_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyplot holds a figure until it is closed: one per failed save (a full disk) piled up.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    def full_disk(self: Figure, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    plt.close("all")
    monkeypatch.setattr(Figure, "savefig", full_disk)
    rows = [{"epoch": 1, "loss_l1": 0.1, "val_psnr": 30.0, "blurry_psnr": 25.0}]
    with pytest.raises(OSError, match="No space left"):
        plot_curves(rows, tmp_path / "curves.png")
    assert plt.get_fignums() == []
    assert not (tmp_path / "curves.png").exists()


def test_ema_update_is_the_moving_average() -> None:
    ema, model = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        model.weight.fill_(3.0)
    update_ema(ema, model, 0.9, step=1000)
    assert torch.allclose(ema.weight, torch.full_like(ema.weight, 0.9 * 1 + 0.1 * 3))
    update_ema(ema, model, 0.9, step=0)  # ramp: d = 1 / 10
    assert torch.allclose(ema.weight, torch.full_like(ema.weight, 0.1 * 1.2 + 0.9 * 3))


def test_ema_run_resumes_exactly_and_keeps_both_weights(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    full = train(_tiny(synth, tmp_path / "full", "--ema=0.9"))
    train(_tiny(synth, tmp_path / "split", "--ema=0.9", "--stop_after_steps=4"))
    second = train(_tiny(synth, tmp_path / "split", "--ema=0.9", "--resume"))
    assert full["steps"][4:] == second["steps"]
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    for key in ("model", "model_raw"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert any(not torch.equal(a["model"][k], a["model_raw"][k]) for k in a["model"])
    off = train(_tiny(synth, tmp_path / "off"))
    assert off["steps"] == full["steps"]  # the average does not touch training
    assert "model_raw" not in load_checkpoint(tmp_path / "off" / "last.pt")


def test_the_ema_follows_every_step_with_its_count(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # Never called, the "model" saved and validated stayed the initial weights; called with
    # another step count, its ramp (d = (1 + step) / (10 + step)) was skipped or repeated.
    calls: list[tuple[float, int, bool]] = []

    def spy(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
        calls.append((decay, step, ema is model))
        update_ema(ema, model, decay, step)

    monkeypatch.setattr(T, "update_ema", spy)
    train(_tiny(synth, tmp_path / "ema", "--ema=0.9"))
    assert calls == [(0.9, step, False) for step in range(6)]


def test_grad_clip_bounds_every_step_at_its_value(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # grad_clip is what keeps a bad batch from throwing the student off: a clip left out, or
    # at another norm, trained on without a sign.
    clip = torch.nn.utils.clip_grad_norm_
    seen: list[tuple[float, float]] = []

    def spy(params: object, max_norm: float, *args: object, **kwargs: object) -> torch.Tensor:
        params = list(params)  # type: ignore[call-overload]
        norm = clip(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        seen.append((max_norm, float(after)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(_tiny(synth, tmp_path / "clip", "--grad_clip=0.001"))
    assert [m for m, _ in seen] == [0.001] * 6
    assert all(after <= 0.001 * 1.001 for _, after in seen)
    seen.clear()
    train(_tiny(synth, tmp_path / "off", "--grad_clip=0"))
    assert seen == []  # 0 = off


def test_validation_scores_are_the_mean_over_its_images() -> None:
    from training.train import validate

    # Summed instead of averaged, the logged PSNR grew with val_count (60 dB for two images of
    # 20 and 40 dB), and a resume with another val_count compared sums of different lengths.
    sharp = np.full((32, 32, 3), 0.5, np.float32)
    val = [(sharp + 0.1, sharp, "a"), (sharp + 0.01, sharp, "b")]
    model = nn.Identity().train()
    scores = validate(model, val, torch.device("cpu"))
    assert scores["val_psnr"] == pytest.approx(30.0, abs=1e-3)
    assert scores["blurry_psnr"] == pytest.approx(30.0, abs=1e-3)
    assert 0.0 < scores["val_ssim"] <= 1.0
    assert model.training  # put back in training mode


def test_device_share_of_a_batch() -> None:
    assert [_device_share(16, w) for w in (0.0, 0.7, 1.0)] == [0, 11, 16]
    assert _device_share(2, 0.01) == 1  # a positive share always gets a sample ...
    assert _device_share(2, 0.99) == 1  # ... and so do the other sources
    assert [_device_share(1, w) for w in (0.3, 0.7)] == [0, 1]  # batch 1: the nearest


def test_split_off_raw_keeps_the_cache_share() -> None:
    from training.data import DeblurDataset, RawSequence

    seq = RawSequence(name="s", frames=[], numbers=[], paths=[])
    ds = DeblurDataset(raw=[seq], photos=[torch.zeros(8, 8, 3).numpy()], weights=(0.7, 0.3, 0.0))
    ds.cache_fraction = 0.25  # as a teacher cache would set it
    share = ds.split_off_raw()
    assert share == pytest.approx(0.75 * 0.7)  # raw's share of all samples, cache drawn first
    assert ds.weights.tolist() == [0.0, 1.0, 0.0]
    # the workers' part of the batch: cached patches keep 25 % of the whole
    assert (1 - share) * ds.cache_fraction == pytest.approx(0.25)


@pytest.mark.parametrize("photo_weight", [0.3, 0.0])
def test_raw_on_device_trains_and_resumes_exactly(
    synth: dict[str, Path], tmp_path: Path, photo_weight: float, caplog: pytest.LogCaptureFixture
) -> None:
    extra = ("--data.raw_on_device=true", f"--data.photo_weight={photo_weight}")
    with caplog.at_level(logging.INFO, logger="training.train"):
        full = train(_tiny(synth, tmp_path / "full", *extra))
    assert "raw source on cpu" in caplog.text
    share = "100 %" if photo_weight == 0 else "70 %"
    assert f"{share} of each batch" in caplog.text
    assert len(full["steps"]) == 6 and all(math.isfinite(v) for v in full["steps"])
    first = train(_tiny(synth, tmp_path / "split", *extra, "--stop_after_steps=4"))
    second = train(_tiny(synth, tmp_path / "split", *extra, "--resume"))
    assert first["steps"] + second["steps"] == full["steps"]
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the device draws are not the workers' draws: the same run without the flag differs
    plain = train(_tiny(synth, tmp_path / "plain", f"--data.photo_weight={photo_weight}"))
    assert plain["steps"] != full["steps"]


def test_raw_on_device_without_raw_samples_leaves_the_frames_alone(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # raw frames only for validation: nothing to put on the device, no zero-size draws
    extra = ("--data.raw_on_device=true", "--data.raw_weight=0")
    with caplog.at_level(logging.INFO, logger="training.train"):
        res = train(_tiny(synth, tmp_path / "noraw", *extra))
    assert "raw source on" not in caplog.text and len(res["steps"]) == 6


def test_init_from_starts_a_fresh_run_from_trained_weights(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    train(_tiny(synth, tmp_path / "pre"))
    pre = load_checkpoint(tmp_path / "pre" / "last.pt")
    # Zero steps: the checkpoint written is the initial student, so it must equal the source.
    res = train(
        _tiny(
            synth,
            tmp_path / "fine",
            f"--init_from={tmp_path / 'pre' / 'last.pt'}",
            "--max_minutes=0.00001",
            "--lr=0",
            "--warmup_steps=0",
        )
    )
    assert res["stopped"] == "time budget"
    fine = load_checkpoint(tmp_path / "fine" / "last.pt")
    assert fine["global_step"] == 1, "a fresh schedule, not the source run's position"
    assert all(torch.equal(pre["model"][k], fine["model"][k]) for k in pre["model"])
    with pytest.raises(ConfigError, match="holds a 'tiny' student"):
        train(
            _tiny(
                synth,
                tmp_path / "bad",
                f"--init_from={tmp_path / 'pre' / 'last.pt'}",
                "--student=fast",
            )
        )


def _not_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Files an --init_from may name by mistake, by case."""
    import onnx
    from onnx import helper

    from training.models.student import create_student

    files = {"onnx": tmp_path / "student.onnx", "bare": tmp_path / "bare.pt"}
    onnx.save(helper.make_model(helper.make_graph([], "g", [], [])), files["onnx"])
    torch.save(create_student("tiny").state_dict(), files["bare"])
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    files["list"] = tmp_path / "list.pt"
    torch.save([1, 2], files["list"])
    files["folder"] = tmp_path
    return files


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("onnx", "not one this trainer wrote"),
        ("bare", r"not a trainer checkpoint \(a bare state dict\)"),
        ("empty", "damaged, or not a trainer checkpoint"),
        ("list", r"not a trainer checkpoint \(a list without a 'model' entry\)"),
        ("folder", "is not a file"),
    ],
)
def test_init_from_a_file_that_is_no_checkpoint_is_a_one_line_error(
    synth: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    # An .onnx ended in torch's paragraph advising weights_only=False, a bare state dict in
    # KeyError: 'model'.
    path = _not_checkpoints(tmp_path)[case]
    with pytest.raises(ConfigError, match=message) as e:
        train(_tiny(synth, tmp_path / "run", f"--init_from={path}"))
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_set_up_refusal_is_one_line_and_status_2_on_the_command_line(tmp_path: Path) -> None:
    # A ConfigError of the set-up (here --init_from naming an .onnx) ended in a traceback.
    onnx_file = _not_checkpoints(tmp_path)["onnx"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--config",
            str(SMOKE),
            "--student=tiny",
            f"--out_dir={tmp_path / 'run'}",
            f"--init_from={onnx_file}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"error: cannot read checkpoint {onnx_file}: not one this trainer wrote" in last


def test_init_from_a_shallower_student_grows_it(synth: dict[str, Path], tmp_path: Path) -> None:
    train(_tiny(synth, tmp_path / "pre"))
    pre = load_checkpoint(tmp_path / "pre" / "last.pt")
    deeper = "--student_kwargs={body_blocks: 1, dec_blocks: [2]}"
    # Zero steps: the checkpoint written is the grown student before any update.
    train(
        _tiny(
            synth,
            tmp_path / "grown",
            f"--init_from={tmp_path / 'pre' / 'last.pt'}",
            deeper,
            "--max_minutes=0.00001",
            "--lr=0",
            "--warmup_steps=0",
        )
    )
    grown = load_checkpoint(tmp_path / "grown" / "last.pt")
    assert grown["student_kwargs"] == {"body_blocks": 1, "dec_blocks": [2]}
    assert all(torch.equal(pre["model"][k], grown["model"][k]) for k in pre["model"])
    added = sorted(set(grown["model"]) - set(pre["model"]))
    assert added and all(k.startswith(("encoders.1.1.", "decoders.0.1.")) for k in added)
    assert not grown["model"]["decoders.0.1.project.weight"].any()
    with pytest.raises(ConfigError, match="does not grow from it"):
        train(
            _tiny(
                synth,
                tmp_path / "narrower",
                f"--init_from={tmp_path / 'pre' / 'last.pt'}",
                "--student_kwargs={widths: [8, 24]}",
            )
        )


def test_init_from_with_resume_on_a_first_launch_uses_the_init(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # A preemptible fine-tune is launched the same way every time: --resume --init_from=X.
    # The first launch has no last.pt to resume, so it must start from X, not from scratch.
    train(_tiny(synth, tmp_path / "pre"))
    pre = load_checkpoint(tmp_path / "pre" / "last.pt")
    args = [f"--init_from={tmp_path / 'pre' / 'last.pt'}", "--resume", "--lr=0", "--warmup_steps=0"]
    train(_tiny(synth, tmp_path / "fine", "--max_minutes=0.00001", *args))
    fine = load_checkpoint(tmp_path / "fine" / "last.pt")
    assert all(torch.equal(pre["model"][k], fine["model"][k]) for k in pre["model"])
    # The second launch resumes its own run (step 1 -> more), not the init again.
    res = train(_tiny(synth, tmp_path / "fine", "--stop_after_steps=1", *args))
    assert load_checkpoint(tmp_path / "fine" / "last.pt")["global_step"] == 2
    assert len(res["steps"]) == 1


def test_without_held_out_frames_validation_uses_a_separate_synthetic_stream(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    cfg = _tiny(synth, tmp_path / "photos", "--data.raw_dirs=[]")
    res = train(cfg)
    assert res["stopped"] == "finished"
    assert all(math.isfinite(row["val_psnr"]) for row in res["epochs"])
    # Separate means other samples: validating on the training stream's own draws (rank 0)
    # measured memorised regions, and the run above still finished with a finite PSNR.
    dataset, val, _ = build_data(cfg)
    sources = dict(
        raw=dataset.raw,
        photos=dataset.photos,
        gopro=dataset.gopro,
        kernels=dataset.kernels,
        weights=tuple(dataset.weights),
        params=dataset.params,
        patch=cfg.data.val_crop or 256,
        seed=cfg.seed,
    )
    training_stream = DeblurDataset(**sources, rank=0)
    val_stream = DeblurDataset(**sources, rank=VAL_STREAM)
    assert len(val) >= 4
    for i, (blur, sharp, name) in enumerate(val):
        assert name == f"synthetic_{i}"
        # none is the training stream's item at the same index ...
        drawn = training_stream[i]
        assert not np.array_equal(sharp, drawn["sharp"].permute(1, 2, 0).numpy())
        assert not np.array_equal(blur, drawn["blur"].permute(1, 2, 0).numpy())
        # ... and each is the validation stream's (so the comparison above is like for like)
        assert np.array_equal(sharp, val_stream[i]["sharp"].permute(1, 2, 0).numpy())


def test_time_budget_stops_with_a_checkpoint(synth: dict[str, Path], tmp_path: Path) -> None:
    res = train(_tiny(synth, tmp_path / "budget", "--max_minutes=0.00001"))
    assert res["stopped"] == "time budget" and len(res["steps"]) == 1
    ck = load_checkpoint(tmp_path / "budget" / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (0, 1, 1)


def test_the_stop_reason_is_the_limit_reached_not_the_limits_set(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # gpu_session.sh's probes set both: one that ran out of time read as having done its steps.
    with caplog.at_level(logging.INFO, logger="training.train"):
        res = train(
            _tiny(synth, tmp_path / "both", "--stop_after_steps=100", "--max_minutes=0.00001")
        )
    assert res["stopped"] == "time budget" and len(res["steps"]) == 1
    # ... and the last line says how far the schedule got (2 epochs of 3 steps here)
    assert "time budget: 1 steps in" in caplog.text and "schedule at step 1 of 6" in caplog.text
    res = train(_tiny(synth, tmp_path / "steps", "--stop_after_steps=2", "--max_minutes=60"))
    assert res["stopped"] == "step limit" and len(res["steps"]) == 2


def test_a_resume_with_another_lr_follows_it(synth: dict[str, Path], tmp_path: Path) -> None:
    # The warning and config.yaml say the run goes on with the new rate: the old peak with the
    # new floor (min_lr / lr) ended the run at ten times min_lr here.
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2", "--lr=0.01"))
    cfg = _tiny(synth, out, "--resume", "--lr=0.001", "--weight_decay=0.01")
    rows = train(cfg)["epochs"]
    assert [r["lr"] for r in rows] == pytest.approx([0.001 * lr_factor(s, cfg) for s in (3, 6)])
    assert rows[-1]["lr"] == pytest.approx(cfg.min_lr)
    group = load_checkpoint(out / "last.pt")["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.01 and group["initial_lr"] == 0.001
    # Unchanged settings resume exactly (test_resume_continues_exactly); and so does a rate
    # changed back: the schedule is a function of the step and the config alone.
    again = _tiny(synth, tmp_path / "again", "--stop_after_steps=2", "--lr=0.001")
    first = train(again)
    second = train(_tiny(synth, tmp_path / "again", "--resume", "--lr=0.001"))
    full = train(_tiny(synth, tmp_path / "full", "--lr=0.001"))
    assert first["steps"] + second["steps"] == full["steps"]


def test_a_resume_with_another_config_keeps_the_earlier_one_in_the_checkpoint(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # config and config.yaml say the latest launch's settings only: without the earlier ones
    # nothing in the run told that its weights came from two configs, nor how to redo them.
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2", "--lr=0.01"))
    first = load_checkpoint(out / "last.pt")
    train(_tiny(synth, out, "--resume", "--stop_after_steps=1", "--lr=0.01"))  # no change
    assert load_checkpoint(out / "last.pt")["config_history"] == []
    train(_tiny(synth, out, "--resume", "--stop_after_steps=1", "--lr=0.001"))
    second = load_checkpoint(out / "last.pt")
    assert len(second["config_history"]) == 1
    # A later change adds to the history: each launch's config stays, not the last one only.
    train(_tiny(synth, out, "--resume", "--lr=0.002"))
    for kind in ("last", "best"):
        history = load_checkpoint(out / f"{kind}.pt")["config_history"]
        assert [h["until_step"] for h in history] == [3, 4]
        assert [h["changed"] for h in history] == [["lr"], ["lr"]]
        assert [h["config"]["lr"] for h in history] == [0.01, 0.001]
        assert history[0]["config_digest"] == first["config_digest"]
        assert history[1]["config_digest"] == second["config_digest"]


@pytest.mark.parametrize(
    ("first", "done", "epochs"),
    [
        ((), "2 of 2 epochs, 6 steps", 2),
        (
            ("--stages=[{patch: 32, epochs: 1, batch: 2}, {patch: 48, epochs: 2, batch: 2}]",),
            "3 of 2 epochs, 9 steps",
            3,
        ),
    ],
    ids=["finished", "stages shortened since"],
)
def test_resuming_a_finished_run_says_it_is_complete_and_how_to_train_longer(
    synth: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    first: tuple[str, ...],
    done: str,
    epochs: int,
) -> None:
    # It logged "resumed ... at epoch 3 step 0" of a 2-epoch run and exited 0 having done
    # nothing, unexplained. Stages shortened since (3 epochs done, the stages now hold 2): the
    # advice gave the last stage one more epoch, 3 in all, as complete as this run. The advice
    # is one epoch past what was done, in either case.
    out = tmp_path / "run"
    train(_tiny(synth, out, *first))
    before = (out / "last.pt").read_bytes()
    with caplog.at_level(logging.INFO, logger="training.train"):
        res = train(_tiny(synth, out, "--resume"))
    assert res["steps"] == [] and res["exit_status"] == 0 and len(res["epochs"]) == epochs
    assert res["stopped"] == "finished" and res["out_dir"] == str(out)  # as a run that ran
    assert f"the run in {out} is already complete ({done})" in caplog.text, caplog.text
    # the key to raise, as an override that runs as it is written
    longer = f"{{patch: 32, epochs: 1, batch: 2}}, {{patch: 48, epochs: {epochs}, batch: 2}}"
    assert f"--stages='[{longer}]') and run with --resume again" in caplog.text, caplog.text
    assert "resumed from" not in caplog.text
    assert (out / "last.pt").read_bytes() == before
    more = train(_tiny(synth, out, "--resume", f"--stages=[{longer}]"))
    assert len(more["steps"]) == 3


def test_a_run_saved_without_amp_resumes_with_it(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CPU run (no AMP: an empty scaler state) continued on the GPU (AMP on): an enabled
    # GradScaler refuses to load an empty state. CPU AMP's scaler stands in for CUDA's here.
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2"))
    assert load_checkpoint(out / "last.pt")["scaler"] == {}
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: real("cpu"))
    res = train(_tiny(synth, out, "--resume"))
    assert len(res["steps"]) == 4 and all(math.isfinite(v) for v in res["steps"])
    assert load_checkpoint(out / "last.pt")["scaler"]["scale"] > 0


def test_resume_reads_the_checkpoint_on_the_cpu(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mapped to a GPU, the RNG states are CUDA tensors that torch.set_rng_state refuses (every
    # resume on the GPU failed) and Adam's step counts sync the host on every step. The real
    # failure needs CUDA: test_resume_on_the_gpu_continues_exactly.
    import training.train as T

    seen: list[object] = []
    real = T.load_checkpoint

    def spy(path, map_location="cpu"):
        seen.append(map_location)
        return real(path, map_location)

    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2"))
    monkeypatch.setattr(T, "load_checkpoint", spy)
    train(_tiny(synth, out, "--resume", "--device=cpu"))
    assert seen == ["cpu"] and isinstance(seen[0], str)


def test_a_weights_only_checkpoint_is_refused_with_what_to_do(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # gpu_session.sh brings its runs back slimmed to the weights: continuing one on the CPU
    # with --resume must say to use --init_from, not fail on a missing key.
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2"))
    ck = load_checkpoint(out / "last.pt")
    torch.save({k: ck[k] for k in ("model", "config", "variant", "epoch")}, out / "last.pt")
    with pytest.raises(ConfigError, match="weights only.*--init_from"):
        train(_tiny(synth, out, "--resume"))


def test_a_resume_under_another_number_of_processes_is_refused_with_what_to_do(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # Each rank draws its own interleaved samples and keeps its own RNG state: under another
    # count the stream does not continue (and an extra rank failed with an IndexError).
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2"))
    ck = load_checkpoint(out / "last.pt")
    assert ck["world_size"] == 1
    # As two DDP ranks write it: one RNG state per rank.
    torch.save(ck | {"rng": [ck["rng"], ck["rng"]], "world_size": 2}, out / "last.pt")
    saved = (out / "config.yaml").read_text()
    with pytest.raises(
        ConfigError,
        match=r"written by 2 processes, this resume runs 1: .* --nproc_per_node=2, or .* "
        r"--init_from=",
    ):
        train(_tiny(synth, out, "--resume"))
    assert (out / "config.yaml").read_text() == saved  # refused before anything was written
    # From before world_size was stored: its RNG states tell how many processes wrote it.
    old = {k: v for k, v in ck.items() if k != "world_size"}
    torch.save(old | {"rng": [ck["rng"], ck["rng"]]}, out / "last.pt")
    with pytest.raises(ConfigError, match="written by 2 processes, this resume runs 1"):
        train(_tiny(synth, out, "--resume"))
    torch.save(old, out / "last.pt")  # one process's: it still resumes
    assert train(_tiny(synth, out, "--resume"))["stopped"] == "finished"


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"optimizer": {}, "world_size": 2}, "written by 2 processes, this resume runs 1"),
        ({"optimizer": {}, "rng": [{}, {}]}, "written by 2 processes, this resume runs 1"),
        ({"model": {}}, "holds weights only"),
    ],
)
def test_a_resume_that_cannot_continue_is_refused_before_the_data_is_built(
    synth: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    checkpoint: dict[str, object],
    message: str,
) -> None:
    import training.train as T

    # Building the data takes minutes on the real data: the refusal, which needs only the
    # checkpoint, came after it.
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_data ran before the checkpoint was checked")

    monkeypatch.setattr(T, "build_data", no_data)
    out = tmp_path / "run"
    out.mkdir()
    torch.save(checkpoint, out / "last.pt")
    with pytest.raises(ConfigError, match=message):
        train(_tiny(synth, out, "--resume"))


def test_a_resume_as_another_student_is_refused_before_the_data_is_built(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    out = tmp_path / "run"
    train(_tiny(synth, out, "--stop_after_steps=2"))
    saved = (out / "config.yaml").read_text()

    # It failed in load_state_dict, after the data was built (minutes on the real data), in a
    # page of missing keys and size mismatches.
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_data ran before the checkpoint's student was checked")

    monkeypatch.setattr(T, "build_data", no_data)
    for other in ("--student=fast_s", "--student_kwargs={body_blocks: 1, dec_blocks: [2]}"):
        with pytest.raises(ConfigError, match=r"holds a 'tiny' student \{\}, .*--init_from=") as e:
            train(_tiny(synth, out, "--resume", other))
        assert "\n" not in str(e.value)
    assert (out / "config.yaml").read_text() == saved


def test_the_resume_check_names_both_process_counts() -> None:
    # What torchrun ranks meet (tested without torchrun): more ranks than the checkpoint has
    # RNG states, a single process's checkpoint under DDP, and the same count.
    state = {"python": None}
    with pytest.raises(ConfigError, match=r"by 2 processes, this resume runs 4: .*=2, or"):
        _check_resume_world({"rng": [state, state]}, 4, Path("run/last.pt"))
    with pytest.raises(
        ConfigError, match=r"by 1 process, this resume runs 2: .*=1 \(or without torchrun\)"
    ):
        _check_resume_world({"rng": state, "world_size": 1}, 2, Path("run/last.pt"))
    _check_resume_world({"rng": [state, state], "world_size": 2}, 2, Path("run/last.pt"))
    _check_resume_world({"rng": state}, 1, Path("run/last.pt"))


def test_a_resume_switching_from_plateau_to_cosine_follows_the_cosine(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # LambdaLR cannot load ReduceLROnPlateau's state (KeyError 'lr_lambdas'); and its step count
    # is the step's, not the number of validations the plateau scheduler counted.
    out = tmp_path / "run"
    train(_tiny(synth, out, "--scheduler=plateau", "--stop_after_steps=2", "--lr=0.01"))
    cfg = _tiny(synth, out, "--resume", "--lr=0.01")
    rows = train(cfg)["epochs"]
    assert [r["lr"] for r in rows] == pytest.approx([0.01 * lr_factor(s, cfg) for s in (3, 6)])
    assert load_checkpoint(out / "last.pt")["scheduler"]["last_epoch"] == 6


def _signal_in_step(monkeypatch: pytest.MonkeyPatch, sig: int, at: int) -> None:
    """Send ``sig`` to this process in the middle of optimiser step ``at`` (1-based)."""
    real = torch.optim.Adam.step
    seen: list[None] = []

    def step(self, *args, **kwargs):
        seen.append(None)
        if len(seen) == at:
            signal.raise_signal(sig)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)


@pytest.mark.parametrize(
    ("sig", "at", "position"),
    [
        pytest.param(signal.SIGINT, 4, (1, 1), id="SIGINT-mid-epoch"),  # 3 steps an epoch
        # the last step of epoch 1: its validation is left to the resumed run
        pytest.param(signal.SIGTERM, 3, (0, 3), id="SIGTERM-last-step-of-an-epoch"),
        # the terminal closed: the run ended without its checkpoint
        *(
            [pytest.param(signal.SIGHUP, 5, (1, 2), id="SIGHUP-mid-epoch")]
            if hasattr(signal, "SIGHUP")
            else []
        ),
    ],
)
def test_a_signal_stops_after_its_step_with_a_checkpoint_that_resumes_exactly(
    synth: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sig: int,
    at: int,
    position: tuple[int, int],
) -> None:
    # Ctrl-C (or a watchdog's TERM) printed a traceback and lost everything since the last
    # epoch's last.pt (10-15 minutes on the CPU).
    full = train(_tiny(synth, tmp_path / "full"))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _signal_in_step(monkeypatch, sig, at)
    split = tmp_path / "split"
    with caplog.at_level(logging.INFO, logger="training.train"):
        first = train(_tiny(synth, split))
    monkeypatch.undo()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    name = signal.Signals(sig).name
    assert first["stopped"] == f"interrupted by {name}" and first["exit_status"] == 128 + sig
    assert len(first["steps"]) == at
    epoch, step = position
    assert f"stopped (interrupted by {name}) at epoch {epoch + 1} step {step}" in caplog.text
    ck = load_checkpoint(split / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (epoch, step, at)
    second = train(_tiny(synth, split, "--resume"))
    assert second["stopped"] == "finished" and second["exit_status"] == 0
    # The same steps, learning rates, validations and weights as the run left alone.
    assert first["steps"] + second["steps"] == full["steps"]

    def record(rows: list[dict]) -> list[tuple]:
        return [(r["epoch"], r["step"], r["lr"], r["val_psnr"], r["loss_total"]) for r in rows]

    assert record(second["epochs"]) == record(full["epochs"])
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(split / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.gpu
def test_resume_on_the_gpu_continues_exactly(synth: dict[str, Path], tmp_path: Path) -> None:
    # AMP, the EMA and the device sampler: what gpu_session.sh's runs use.
    extra = ("--device=cuda", "--amp=true", "--ema=0.9", "--data.raw_on_device=true")
    full = train(_tiny(synth, tmp_path / "full", *extra))
    first = train(_tiny(synth, tmp_path / "split", *extra, "--stop_after_steps=4"))
    second = train(_tiny(synth, tmp_path / "split", *extra, "--resume"))
    assert first["steps"] + second["steps"] == pytest.approx(full["steps"], rel=1e-5)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["global_step"] == 6


class _FakeTeacher(nn.Module):
    """Stands in for DMPHN: a fixed, cheap 'deblur' (the test checks plumbing, not quality)."""

    def forward(self, x: torch.Tensor, return_features: bool = False):
        y = (x + 0.05).clamp(0, 1)
        return (y, [x.mean(1, keepdim=True).repeat(1, 4, 1, 1)]) if return_features else y


class _CountingTeacher(_FakeTeacher):
    """A fake teacher that records how many patches each call computes (in ``seen``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.seen.append(x.shape[0])
        return super().forward(x, return_features)


def _cache_options(cache: Path) -> tuple[str, ...]:
    """A one-patch-per-call fake-teacher cache at ``cache``."""
    return (
        f"--teacher.cache_path={cache}",
        "--teacher.name=fake",
        "--teacher.cache_patch=32",
        "--teacher.cache_batch=1",
    )


def _adam_steps(ck: dict) -> list[int]:
    """Adam's step count of each parameter slot of a checkpoint's optimiser, in order."""
    state = ck["optimizer"]["state"]
    return [int(state[i]["step"]) for i in ck["optimizer"]["param_groups"][0]["params"]]


@pytest.mark.parametrize("first_mode", ["off", "online"])
def test_a_resume_that_turns_the_feature_term_on_or_off_keeps_the_students_optimiser(
    synth: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    first_mode: str,
) -> None:
    # The feature adapters exist only with an online teacher (teacher.mode auto: a GPU): a CPU
    # run resumed on a GPU, or the other way round, failed in Adam's load_state_dict.
    import training.teachers
    from training.models.student import create_student

    monkeypatch.setattr(training.teachers, "load_teacher", lambda *a, **k: _FakeTeacher())
    out = tmp_path / "run"
    terms = ("--teacher.name=fake", "--loss.distill=1.0", "--loss.feature=0.1")
    stage = "--stages=[{patch: 32, epochs: 1, batch: 2}]"
    then = "online" if first_mode == "off" else "off"
    train(_tiny(synth, out, *terms, stage, f"--teacher.mode={first_mode}", "--stop_after_steps=2"))
    with caplog.at_level(logging.WARNING, logger="training.train"):
        res = train(_tiny(synth, out, *terms, stage, f"--teacher.mode={then}", "--resume"))
    assert res["stopped"] == "finished"
    warned = [r.getMessage() for r in caplog.records if "feature adapters" in r.getMessage()]
    assert warned == [
        "the checkpoint has no feature adapters (saved without an online teacher): they start fresh"
        if then == "online"
        else "the checkpoint's feature adapters are left out: no online teacher's feature term here"
    ]
    ck = load_checkpoint(out / "last.pt")
    n_student = len(list(create_student("tiny").parameters()))
    steps = _adam_steps(ck)
    assert steps[:n_student] == [3] * n_student  # the student's moments went on from step 2
    assert steps[n_student:] == ([1] * len(ck["adapters"]) if then == "online" else [])
    assert bool(ck["adapters"]) == (then == "online")


@pytest.mark.parametrize("mode", ["online", "cache"])
def test_a_teacher_no_loss_term_reads_is_neither_run_nor_drawn(
    synth: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    # loss.distill=0 and loss.feature=0 (gpu_session.sh's hq_nodist): the teacher ran on every
    # batch for nothing, or its cache still made up part of every batch.
    import training.teachers

    teacher = _CountingTeacher()
    monkeypatch.setattr(training.teachers, "load_teacher", lambda *a, **k: teacher)
    cache = tmp_path / "cache.pt"
    opts = _distil_from_cache(cache)
    if mode == "cache":
        build_cache(_tiny(synth, tmp_path / "run", *opts), teacher=teacher)
        teacher.seen.clear()
    off = ("--loss.distill=0", "--loss.feature=0", f"--teacher.mode={mode}")
    with caplog.at_level(logging.INFO, logger="training.train"):
        res = train(_tiny(synth, tmp_path / "run", *opts, *off))
    assert res["stopped"] == "finished"
    assert teacher.seen == []
    assert [e["cached_patches"] for e in res["epochs"]] == [0, 0]
    assert f"teacher.mode={mode} but loss.distill and loss.feature are 0" in caplog.text


def test_the_same_seed_starts_the_same_student_with_the_teacher_online_or_not(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building the teacher drew from torch's generator: a "teacher on vs off" comparison from
    # scratch also compared two starting students.
    import training.teachers

    def drawing_teacher(*args: object, **kwargs: object) -> nn.Module:
        nn.Conv2d(3, 3, 3)  # its random initialisation draws, as DMPHN's does
        return _FakeTeacher()

    monkeypatch.setattr(training.teachers, "load_teacher", drawing_teacher)
    starts = {}
    for mode in ("off", "online"):
        out = tmp_path / mode
        train(_tiny(synth, out, "--teacher.name=fake", f"--teacher.mode={mode}",
                    "--loss.distill=1.0", "--stop_after_steps=1", "--lr=0"))  # fmt: skip
        starts[mode] = load_checkpoint(out / "last.pt")["model"]
    for k, v in starts["off"].items():
        torch.testing.assert_close(starts["online"][k], v, msg=k)


def test_a_resume_with_another_number_of_feature_adapters_starts_them_fresh_and_says_so(
    synth: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both runs have adapters, but not as many (here: the resume pairs one student feature of
    # the tiny student's two). The warning said the checkpoint had none, and loading the saved
    # adapters failed on their missing keys before it.
    import training.teachers
    from training.losses import DistillLoss
    from training.models.student import create_student

    monkeypatch.setattr(training.teachers, "load_teacher", lambda *a, **k: _FakeTeacher())
    out = tmp_path / "run"
    terms = ("--teacher.name=fake", "--loss.distill=1.0", "--loss.feature=0.1")
    terms += ("--teacher.mode=online", "--stages=[{patch: 32, epochs: 1, batch: 2}]")
    train(_tiny(synth, out, *terms, "--stop_after_steps=2"))
    assert len(load_checkpoint(out / "last.pt")["adapters"]) == 4  # two 1x1 convs
    real = DistillLoss.init_adapters
    monkeypatch.setattr(DistillLoss, "init_adapters", lambda self, sf, tf: real(self, sf[:1], tf))
    with caplog.at_level(logging.WARNING, logger="training.train"):
        res = train(_tiny(synth, out, *terms, "--resume"))
    assert res["stopped"] == "finished"
    warned = [r.getMessage() for r in caplog.records if "feature adapters" in r.getMessage()]
    assert warned == [
        "the checkpoint's feature adapters (4 parameter tensors) do not match this run's (2): "
        "they start fresh"
    ]
    ck = load_checkpoint(out / "last.pt")
    n_student = len(list(create_student("tiny").parameters()))
    assert _adam_steps(ck) == [3] * n_student + [1, 1]


def _distil_from_cache(cache: Path) -> tuple[str, ...]:
    """Overrides for a run distilling from ``cache`` (6 patches of 48 px, half of each batch)."""
    return (
        f"--teacher.cache_path={cache}",
        "--teacher.mode=cache",
        "--teacher.name=fake",
        "--teacher.cache_count=6",
        "--teacher.cache_patch=48",
        "--teacher.cache_fraction=0.5",
        "--loss.distill=1.0",
        # the fake teacher only brightens: it never beats the input, so keep every patch
        "--teacher.cache_min_gain=-100",
    )


def test_teacher_cache_feeds_distillation(synth: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache.pt"
    cfg = _tiny(synth, tmp_path / "run", *_distil_from_cache(cache))
    build_cache(cfg, teacher=_FakeTeacher())
    data = torch.load(cache, weights_only=True)
    assert data["blur"].shape == (6, 48, 48, 3) and len(data["keys"]) == 6
    assert torch.equal(
        data["teacher"], (data["blur"].int() + 13).clamp(max=255).to(torch.uint8)
    ) or ((data["teacher"].int() - data["blur"].int()).abs().max() <= 13)
    res = train(cfg)
    rows = res["epochs"]
    assert sum(r["cached_patches"] for r in rows) > 0
    assert all("loss_distill" in r for r in rows)


def test_distillation_follows_the_teacher_only_on_the_samples_it_has(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An uncached sample's teacher output is zeros: passed without the mask, the distill term
    # pulled the student towards black on it while the log still counted only cached ones.
    from training.losses import DistillLoss

    masks: list[list[bool] | None] = []
    real = DistillLoss.forward

    def forward(self, pred, target, teacher=None, teacher_mask=None, *rest):  # noqa: ANN001, ANN202
        masks.append(None if teacher_mask is None else teacher_mask.bool().tolist())
        return real(self, pred, target, teacher, teacher_mask, *rest)

    monkeypatch.setattr(DistillLoss, "forward", forward)
    cache = tmp_path / "cache.pt"
    cfg = _tiny(synth, tmp_path / "run", *_distil_from_cache(cache))
    build_cache(cfg, teacher=_FakeTeacher())
    res = train(cfg)
    assert masks and None not in masks, masks
    flat = [m for step in masks for m in step if step is not None]
    assert 0 < sum(flat) < len(flat), masks  # both kinds of sample were drawn
    assert sum(flat) == sum(r["distilled_patches"] for r in res["epochs"])


@pytest.mark.slow
def test_ddp_two_processes_gloo(synth: dict[str, Path], tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "training.train",
        "--config",
        str(SMOKE),
        *_data_overrides(synth),
        f"--out_dir={tmp_path / 'ddp'}",
        "--student=tiny",
        "--steps_per_epoch=2",
        "--stages=[{patch: 32, epochs: 2, batch: 2}]",
        "--data.val_count=1",
        "--data.val_crop=32",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["epoch"] == 2 and ck["global_step"] == 4
    assert isinstance(ck["rng"], list) and len(ck["rng"]) == 2  # one RNG state per rank
    assert ck["world_size"] == 2
    assert "epoch 2" in proc.stderr


# Run under torchrun: rank 0 alone gets a SIGTERM in the middle of optimiser step 3.
_DDP_SIGNAL_SCRIPT = """
import atexit, os, runpy, signal, sys
import torch

# Printed only if the rank finalizes Python, where a gloo thread can still be freeing the last
# collective's tensors: that race aborted a rank in about 1 exit in 10 on a loaded machine.
atexit.register(lambda: print("rank finalized Python", file=sys.stderr))

real_step = torch.optim.Adam.step
steps = []

def step(self, *args, **kwargs):
    steps.append(None)
    if len(steps) == 3 and os.environ["RANK"] == "0":
        signal.raise_signal(signal.SIGTERM)
    return real_step(self, *args, **kwargs)

torch.optim.Adam.step = step
sys.argv = ["training.train", *sys.argv[1:]]
runpy.run_module("training.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_ddp_ranks_stop_together_on_a_signal_to_one(synth: dict[str, Path], tmp_path: Path) -> None:
    # A rank that stopped alone would leave the other waiting in its next all-reduce for ever.
    script = tmp_path / "ddp_signal.py"
    script.write_text(_DDP_SIGNAL_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29521",
        str(script),
        "--config",
        str(SMOKE),
        *_data_overrides(synth),
        f"--out_dir={tmp_path / 'ddp'}",
        "--student=tiny",
        "--steps_per_epoch=2",
        "--stages=[{patch: 32, epochs: 2, batch: 2}]",
        "--data.val_count=1",
        "--data.val_crop=32",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert "stopped (interrupted by SIGTERM) at epoch 2 step 1" in proc.stderr, proc.stderr[-3000:]
    # The first rank out exits with the signal's status; torchrun then TERMs the other, by then
    # past the save (main() leaves through a barrier).
    assert proc.returncode != 0 and "exitcode  : 143" in proc.stderr, proc.stderr[-3000:]
    assert "rank finalized Python" not in proc.stderr, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr and "SIGABRT" not in proc.stderr
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 1, 3)
    assert len(ck["rng"]) == 2


_EXIT_NOW_SCRIPT = """
import atexit, sys
from training.train import run_and_exit_now

atexit.register(lambda: print("finalized"))

def entry():
    print("written before leaving")  # a pipe buffers it: lost unless flushed
    print("to stderr too", file=sys.stderr)
    {how}

run_and_exit_now(entry)
"""


@pytest.mark.parametrize(
    ("how", "status", "err"),
    [
        ("pass", 0, ""),
        ("raise SystemExit(143)", 143, ""),
        ("raise SystemExit(None)", 0, ""),
        ("sys.exit('a message')", 1, "a message\n"),
        ("raise ValueError('broke')", 1, "ValueError: broke"),
    ],
)
def test_run_and_exit_now_keeps_the_status_and_output_and_skips_finalizing(
    tmp_path: Path, how: str, status: int, err: str
) -> None:
    script = tmp_path / "exit_now.py"
    script.write_text(_EXIT_NOW_SCRIPT.replace("{how}", how))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "written before leaving\n"  # flushed, and no atexit hook ran
    assert proc.stderr.startswith("to stderr too\n") and err in proc.stderr, proc.stderr
    if how == "raise ValueError('broke')":
        assert "Traceback (most recent call last)" in proc.stderr


# Run under torchrun: trains with an online teacher and feature matching, then every rank saves
# the feature adapters it ended with (only rank 0 writes checkpoints, so they would not show).
_DDP_ADAPTERS_SCRIPT = """
import os, sys
from pathlib import Path
import torch
import torch.distributed as dist
import training.train as T
from training.config import load_config

made = []

class Recording(T.DistillLoss):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        made.append(self)

T.DistillLoss = Recording

def run():
    T.train(load_config(sys.argv[1], sys.argv[3:]))
    torch.save(made[0].adapters.state_dict(), Path(sys.argv[2]) / f"adapters{os.environ['RANK']}.pt")
    dist.barrier()
    dist.destroy_process_group()

T.run_and_exit_now(run)  # as training.train's own CLI leaves a torchrun rank
"""


@pytest.mark.slow
def test_ddp_keeps_the_feature_adapters_identical_on_every_rank(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    from training.models.dmphn import _PARTS, DMPHN

    torch.manual_seed(0)
    teacher = DMPHN()
    weights = tmp_path / "dmphn"
    weights.mkdir()
    for part in _PARTS:
        torch.save(getattr(teacher, part).state_dict(), weights / f"{part}.pkl")
    script = tmp_path / "ddp_adapters.py"
    script.write_text(_DDP_ADAPTERS_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29519",
        str(script),
        str(SMOKE),
        str(tmp_path),
        *_data_overrides(synth),
        f"--out_dir={tmp_path / 'ddp'}",
        "--student=tiny",
        "--device=cpu",
        "--steps_per_epoch=2",
        "--stages=[{patch: 32, epochs: 1, batch: 1}]",
        "--data.val_count=1",
        "--data.val_crop=32",
        "--teacher.name=dmphn",
        f"--teacher.weights={weights}",
        "--teacher.mode=online",
        "--loss.distill=1.0",
        "--loss.feature=0.1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"adapters{r}.pt") for r in (0, 1))
    assert set(a) == set(b) and a
    # Trained like the student: one set of weights, whichever rank saves the checkpoint.
    assert all(torch.equal(a[k], b[k]) for k in a), {k: float((a[k] - b[k]).abs().max()) for k in a}


@pytest.mark.slow
def test_smoke_config_trains_and_beats_the_blurry_input(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    t0 = time.monotonic()
    res = train(load_config(SMOKE, _data_overrides(synth) + [f"--out_dir={tmp_path / 'smoke'}"]))
    elapsed = time.monotonic() - t0
    rows = res["epochs"]
    assert res["stopped"] == "finished" and len(rows) == 4
    assert elapsed < 180, f"smoke run took {elapsed:.0f} s"
    last = rows[-1]
    assert math.isfinite(last["loss_total"])
    # Training makes the student sharpen: it beats its starting point (the identity = the blurry
    # input) on the held-out frames, and the training loss fell. At 150 steps per epoch the gain
    # was 0.0195 dB on one CPU and a hair above 0.02 on others; 250 give ~0.07 dB.
    assert last["val_psnr"] > last["blurry_psnr"] + 0.02, (last["val_psnr"], last["blurry_psnr"])
    assert last["val_ssim"] > last["blurry_ssim"]
    assert rows[-1]["loss_l1"] < rows[0]["loss_l1"] * 1.05
    log_text = (tmp_path / "smoke" / "log.csv").read_text()
    assert log_text.startswith("epoch,") and len(log_text.splitlines()) == 5


def test_teacher_gain_mask_keeps_only_samples_the_teacher_improves() -> None:
    from training.train import teacher_gain_mask

    torch.manual_seed(0)
    sharp = torch.rand(3, 3, 16, 16)
    blur = sharp + 0.05 * torch.randn_like(sharp)
    teacher = torch.stack(
        [
            sharp[0] + 0.01 * torch.randn_like(sharp[0]),  # much better than blurry: kept
            blur[1] + 0.05 * torch.randn_like(sharp[1]),  # worse than blurry: dropped
            blur[2],  # no gain: dropped at 0.5 dB
        ]
    )
    assert teacher_gain_mask(teacher, blur, sharp, 0.5).tolist() == [True, False, False]
    assert teacher_gain_mask(teacher, blur, sharp, -100.0).all()


def test_teacher_gain_mask_leaves_out_an_overflowed_output() -> None:
    # fp16 overflow: the clamp would make +-inf a valid pixel and let the sample through, and
    # distill_loss would be inf. A NaN output fails the PSNR test by itself.
    from training.losses import distill_loss
    from training.train import teacher_gain_mask

    torch.manual_seed(0)
    sharp = torch.rand(4, 3, 16, 16)
    blur = (sharp + 0.2 * torch.randn_like(sharp)).clamp(0, 1)
    teacher = sharp.clone()
    teacher[0, 0, 5, 5] = float("inf")
    teacher[1, 2, 1, 1] = float("-inf")
    teacher[2] = float("nan")
    mask = teacher_gain_mask(teacher, blur, sharp, 0.5)
    assert mask.tolist() == [False, False, False, True]
    assert torch.isfinite(distill_loss(blur, teacher, mask))


def test_throughput_is_timed_after_the_warm_up_steps(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="training.train"):
        res = train(_tiny(synth, tmp_path / "rate", "--steps_per_epoch=7"))
    assert len(res["steps"]) == 14 > WARM_STEPS
    assert res["steps_per_s"] is not None and res["steps_per_s"] > 0
    # training/gpu_session.sh sizes its schedules from this line, with this pattern.
    script = (REPO / "training" / "gpu_session.sh").read_text()
    assert 'grep -oE "\\(([0-9.]+) steps/s"' in script
    found = re.findall(r"\(([0-9.]+) steps/s", caplog.text)
    assert found and float(found[-1]) == pytest.approx(res["steps_per_s"], abs=0.01)


def test_throughput_leaves_out_the_final_validation_only_once(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # The last epoch's validation ran after the last step yet was subtracted from the steps'
    # time: "20000000000.00 steps/s" for a run that ends at an epoch's end.
    def slow(*args: object) -> dict[str, float]:
        time.sleep(0.5)
        return _flat_validation(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(T, "validate", slow)
    t0 = time.monotonic()
    res = train(_tiny(synth, tmp_path / "rate", "--steps_per_epoch=7"))
    # 4 timed steps (14 minus 10 warm-up), all inside the run's wall time less the two pauses.
    assert 4 / (time.monotonic() - t0 - 1.0) < res["steps_per_s"] < 1e5


def test_a_mistyped_eval_folder_is_an_error_not_a_silent_guard(synth, tmp_path: Path) -> None:
    from training.train import build_data

    cfg = _tiny(synth, tmp_path / "run", f"--data.eval_dirs=[{tmp_path / 'evall'}]")
    with pytest.raises(FileNotFoundError, match="data.eval_dirs: no folder or file"):
        build_data(cfg)


def test_a_raw_clip_with_an_unnumbered_image_is_a_usage_error(
    synth, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cover.png among the frames: a ValueError traceback from deep in the data loading, in
    # training and in the evaluator alike.
    import shutil

    from training import evaluate
    from training.config import ConfigError
    from training.train import build_data

    clip = tmp_path / "clip"
    shutil.copytree(synth["raw"] / "seq_00", clip)
    shutil.copy(next(iter(sorted(clip.iterdir()))), clip / "cover.png")
    cfg = _tiny(synth, tmp_path / "run", f"--data.raw_dirs=[{clip}]")
    with pytest.raises(ConfigError, match=r"data.raw_dirs: raw frames in .*cover\.png has no"):
        build_data(cfg)
    model = Path(__file__).resolve().parents[1] / "weights" / "student_fast.onnx"
    argv = ["--model", str(model), "--data", f"raw:{clip}", "--out", str(tmp_path / "eval")]
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    assert exc.value.code == 2
    assert f"error: --data raw:{clip}: raw frames in {clip}: cover.png has no" in (
        capsys.readouterr().err
    )


def test_a_mistyped_kernel_folder_is_an_error_not_trajectories_alone(synth, tmp_path: Path) -> None:
    from training.train import build_data

    # load_kernels found no images there: real_kernel_fraction was ignored without a word
    cfg = _tiny(
        synth,
        tmp_path / "run",
        f"--data.kernel_dir={tmp_path / 'kernelz'}",
        "--data.real_kernel_fraction=0.5",
    )
    with pytest.raises(FileNotFoundError, match="data.kernel_dir: no folder"):
        build_data(cfg)


def test_an_empty_raw_folder_is_a_usage_error_not_a_sampler_traceback(
    synth: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The sampler found it only at the first raw draw: "raw sequences are too short for any
    # window size", a ValueError traceback with no folder or key named.
    from training.train import main

    empty = tmp_path / "clip"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"data.raw_dirs: no 5 consecutive frames .* \(0 frames"):
        build_data(_tiny(synth, tmp_path / "run", f"--data.raw_dirs=[{empty}]"))
    # Frames there, but none in the training range: the same refusal.
    with pytest.raises(ConfigError, match=r"data.raw_train_range \[50, 60\]"):
        build_data(_tiny(synth, tmp_path / "run", "--data.raw_train_range=[50,60]"))
    # No source at all (empty photo folder, no raw clip): one line from the command line.
    photos = [f"--data.photo_dirs=[{empty}]", "--data.raw_dirs=[]"]
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(SMOKE), *_tiny_argv(synth, tmp_path / "run2"), *photos])
    assert exc.value.code == 2
    assert "error: data: no training source" in capsys.readouterr().err


def test_an_empty_raw_folder_beside_a_usable_one_or_with_raw_not_drawn_is_no_error(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # Only a raw set that can give no window at all is refused: one empty folder among the
    # clips, or raw clips kept for validation at raw_weight 0, trained as before.
    empty = tmp_path / "clip"
    empty.mkdir()
    clip = synth["raw"] / "seq_00"
    build_data(_tiny(synth, tmp_path / "run", f"--data.raw_dirs=[{empty},{clip}]"))
    build_data(_tiny(synth, tmp_path / "run", f"--data.raw_dirs=[{empty}]", "--data.raw_weight=0"))


def test_an_out_dir_that_is_a_file_is_a_usage_error(
    synth: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # mkdir's FileExistsError was a traceback.
    from training.train import main

    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(SMOKE), *_tiny_argv(synth, tmp_path / "run")])
    assert exc.value.code == 2
    assert "error: out_dir: " in capsys.readouterr().err
    assert (tmp_path / "run").read_text() == "not a folder"
    # A file on the way to it (NotADirectoryError): the same one line.
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(SMOKE), *_tiny_argv(synth, tmp_path / "run" / "sub")])
    assert exc.value.code == 2
    assert "error: out_dir: " in capsys.readouterr().err


def _gopro_layout(root: Path, seqs: dict[str, np.ndarray]) -> None:
    import cv2

    for name, img in seqs.items():
        for sub in ("blur", "sharp"):
            (root / "train" / name / sub).mkdir(parents=True)
            cv2.imwrite(str(root / "train" / name / sub / "000001.png"), img)


def test_gopro_guard_drops_held_out_sequences_and_catches_copies_in_eval(
    synth, tmp_path: Path
) -> None:
    import shutil

    from training.data import LeakageError
    from training.train import build_data

    rng = np.random.default_rng(0)
    imgs = {n: rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for n in ("seq_00", "GOPR_other")}
    gopro = tmp_path / "GOPRO_Large"
    _gopro_layout(gopro, imgs)
    extra = (f"--data.gopro_dir={gopro}", "--data.gopro_weight=0.2")
    # seq_00 is one of the raw folders, whose frames are partly held out: its GoPro pairs go
    dataset, _, _ = build_data(_tiny(synth, tmp_path / "run", *extra))
    assert [bp.parent.parent.name for bp, _ in dataset.gopro] == ["GOPR_other"]
    # a GoPro training image copied into an evaluation folder is found (by its file bytes)
    ev = tmp_path / "eval"
    ev.mkdir()
    shutil.copy(gopro / "train" / "GOPR_other" / "sharp" / "000001.png", ev / "x.png")
    cfg = _tiny(synth, tmp_path / "run", *extra, f"--data.eval_dirs=[{synth['eval']},{ev}]")
    with pytest.raises(LeakageError, match="x.png"):
        build_data(cfg)


def test_leakage_guard_in_build_data_catches_cropped_eval_copies(synth, tmp_path: Path) -> None:
    import cv2

    from training.data import LeakageError, list_images
    from training.train import build_data

    eval_img = cv2.imread(str(list_images(synth["eval"])[0]))
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "ok.png"), cv2.imread(str(list_images(synth["photos"])[-1])))
    # an evaluation image missing its last rows, re-saved: no content hash matches it
    cv2.imwrite(str(photos / "cropped.jpg"), eval_img[:-3], [cv2.IMWRITE_JPEG_QUALITY, 95])
    extra = [f"--data.photo_dirs=[{photos}]"]
    with pytest.raises(LeakageError, match="cropped.jpg"):
        build_data(_tiny(synth, tmp_path / "run", *extra))
    build_data(_tiny(synth, tmp_path / "run", *extra, "--data.exclude=['*/cropped.jpg']"))


def test_leakage_guard_catches_a_jpeg_or_resized_copy_of_a_held_out_raw_frame(
    synth, tmp_path: Path
) -> None:
    import cv2

    from training.data import LeakageError, list_frames, list_images
    from training.train import build_data

    # Frames 31-40 of each raw folder are held out (smoke.yaml): validation measures them
    held_out = cv2.imread(str(list_frames(synth["raw"] / "seq_01")[35]))
    for name, img, args in (
        ("f36.jpg", held_out, [cv2.IMWRITE_JPEG_QUALITY, 90]),
        ("f36_small.png", cv2.resize(held_out, None, fx=0.5, fy=0.5), []),
    ):
        photos = tmp_path / name.replace(".", "_")
        photos.mkdir()
        cv2.imwrite(str(photos / "ok.png"), cv2.imread(str(list_images(synth["photos"])[-1])))
        cv2.imwrite(str(photos / name), img, args)
        extra = [f"--data.photo_dirs=[{photos}]"]
        with pytest.raises(LeakageError, match=rf"{name}  ==  .*seq_01/000036.png"):
            build_data(_tiny(synth, tmp_path / "run", *extra))


def test_a_kernel_folder_inside_an_evaluation_folder_is_refused(synth, tmp_path: Path) -> None:
    import shutil

    import cv2

    from training.data import LeakageError, list_images
    from training.train import build_data

    # Lai's benchmark is its sharp images blurred by its own kernels (../shared/data/eval/lai)
    lai = tmp_path / "lai"
    (lai / "sharp").mkdir(parents=True)
    (lai / "kernels").mkdir()
    shutil.copy(list_images(synth["eval"])[0], lai / "sharp")
    kernel = np.zeros((15, 15), np.uint8)
    cv2.line(kernel, (2, 3), (12, 11), 255, 1)
    cv2.imwrite(str(lai / "kernels" / "kernel_01.png"), kernel)
    kernels = (f"--data.kernel_dir={lai / 'kernels'}", "--data.real_kernel_fraction=0.5")
    cfg = _tiny(synth, tmp_path / "run", *kernels, f"--data.eval_dirs=[{lai}]")
    with pytest.raises(LeakageError, match=r"data.kernel_dir .*kernels lies inside .*lai"):
        build_data(cfg)
    # the same kernels beside an evaluation folder that does not hold them are a choice
    dataset, _, _ = build_data(
        _tiny(synth, tmp_path / "run", *kernels, f"--data.eval_dirs=[{lai / 'sharp'}]")
    )
    assert len(dataset.kernels) == 1


def test_a_gopro_sequence_in_both_splits_is_refused(synth, tmp_path: Path) -> None:
    import shutil

    from training.data import LeakageError
    from training.train import build_data

    rng = np.random.default_rng(1)
    imgs = {n: rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for n in ("SEQ_01", "GOPR_a")}
    gopro = tmp_path / "GOPRO_Large"
    _gopro_layout(gopro, imgs)
    extra = (f"--data.gopro_dir={gopro}", "--data.gopro_weight=0.2")
    # the raw folder seq_01 and the GoPro sequence SEQ_01 are one clip, whatever the case
    dataset, _, _ = build_data(_tiny(synth, tmp_path / "run", *extra))
    assert [bp.parent.parent.name for bp, _ in dataset.gopro] == ["GOPR_a"]
    # one sequence's frames in train/ and test/ (here under another case): neighbours of the
    # test frames would train
    (gopro / "test").mkdir()
    shutil.copytree(gopro / "train" / "GOPR_a", gopro / "test" / "gopr_A")
    for p in (gopro / "test" / "gopr_A").rglob("000001.png"):
        p.rename(p.with_name("000002.png"))
    with pytest.raises(LeakageError, match=r"in both .*train and test: GOPR_a \(test/gopr_A\)"):
        build_data(_tiny(synth, tmp_path / "run", *extra))


def _distill_cache_options(cache: Path) -> tuple[str, ...]:
    """A two-patch fake-teacher cache at ``cache`` that the distillation term reads."""
    return (
        f"--teacher.cache_path={cache}",
        "--teacher.mode=cache",
        "--teacher.name=fake",
        "--teacher.cache_count=2",
        "--teacher.cache_patch=32",
        "--teacher.cache_min_gain=-100",
        "--loss.distill=1.0",  # a cache no loss term reads is not opened
    )


def test_a_teacher_cache_whose_bytes_fail_their_checksum_is_a_usage_error(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # The load refuses it (ValueError); the run said so in a traceback, not one line.
    from tests.test_training_data import _flip_a_byte_of

    cache = tmp_path / "cache.pt"
    common = _distill_cache_options(cache)
    build_cache(_tiny(synth, tmp_path / "run", *common), teacher=_FakeTeacher())
    _flip_a_byte_of(cache, "data/2")
    # cache_teacher will not overwrite it: the line says to delete it first.
    said = r"is damaged \(its record .*\): delete it and rebuild it with python -m training"
    with pytest.raises(ConfigError, match=r"teacher.cache_path: teacher cache .* " + said):
        train(_tiny(synth, tmp_path / "run", *common))


@pytest.mark.parametrize("damage", ["cut short", "zip index", "no cache", "a tensor", "no keys"])
def test_a_teacher_cache_cut_short_or_with_a_damaged_index_is_a_usage_error(
    synth: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    # torch.load's own traceback (an OSError, a paragraph about miniz, a KeyError) ended the
    # run: the checksums only cover whole records, and a file cut short has no index to test.
    cache = tmp_path / "cache.pt"
    common = _distill_cache_options(cache)
    build_cache(_tiny(synth, tmp_path / "run", *common), teacher=_FakeTeacher())
    data = cache.read_bytes()
    if damage == "cut short":
        cache.write_bytes(data[: len(data) * 6 // 10])
    elif damage == "zip index":
        at = data.rindex(b"PK\x01\x02")  # a central directory entry's signature
        cache.write_bytes(data[:at] + b"XXXX" + data[at + 4 :])
    elif damage == "no cache":
        torch.save({"model": {}}, cache)  # a trainer checkpoint named as the cache
    elif damage == "a tensor":
        torch.save(torch.zeros(3), cache)  # torch's "Tensor.__contains__ only supports ..."
    else:
        # Some of a cache's arrays, not all of them: a KeyError from deep in the load.
        kept = torch.load(cache, weights_only=True)
        torch.save({k: kept[k] for k in ("blur", "sharp", "teacher")}, cache)
    said = (
        r".*cache.pt is not a teacher cache \(no blur, .*\): name the file python -m "
        r"training.cache_teacher wrote"
        if damage in ("no cache", "a tensor", "no keys")
        else r"teacher cache .*cache.pt cannot be read \(cut short or damaged: \w+\): delete it "
        r"and rebuild it with python -m training.cache_teacher"
    )
    with pytest.raises(ConfigError, match=r"teacher.cache_path: " + said):
        train(_tiny(synth, tmp_path / "run", *common))


def test_a_teacher_cache_too_large_for_memory_is_not_called_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Out of memory says nothing of the file: "delete it and rebuild it" would throw away
    # hours of teacher inference that a machine with more memory reads.
    from training.data import TeacherCache

    cache = tmp_path / "cache.pt"
    torch.save({"blur": torch.zeros(1)}, cache)

    def out_of_memory(*_: object, **__: object) -> None:
        raise MemoryError

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(MemoryError):
        TeacherCache.load(cache)


def test_teacher_cache_from_other_sources_is_refused(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import check_cache_meta
    from training.data import TeacherCache

    cache = tmp_path / "cache.pt"
    common = _distill_cache_options(cache)
    build_cache(_tiny(synth, tmp_path / "run", *common), teacher=_FakeTeacher())
    # a photo excluded since (the leakage guard found it) may still sit in the cache: refused
    later = _tiny(synth, tmp_path / "run", *common, "--data.exclude=['*/photo_000.png']")
    with pytest.raises(ConfigError, match=r"other sources(.|\n)*data.exclude"):
        train(later)
    meta = TeacherCache.load(cache).meta
    with pytest.raises(ConfigError, match="teacher.teacher: cache 'fake'"):
        check_cache_meta(meta, _tiny(synth, tmp_path / "run", *common, "--teacher.name=dmphn"))
    with pytest.raises(ConfigError, match="records no settings"):
        check_cache_meta({}, later)
    # A source key the cache predates reads as its default (no exclusions), also in the message.
    older = {**meta, "data": {k: v for k, v in meta["data"].items() if k != "exclude"}}
    with pytest.raises(ConfigError, match=r"data.exclude: cache \[\], config \['\*/photo_000"):
        check_cache_meta(older, later)
    # other synthesis settings only change how new patches would look: a warning
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        check_cache_meta(meta, _tiny(synth, tmp_path / "run", *common, "--data.noise_prob=0.1"))
    assert "noise_prob" in caplog.text
    # The same folders under another spelling are the same sources: no rebuild, no warning.
    alias = tmp_path / "alias"
    alias.symlink_to(synth["photos"].parent, target_is_directory=True)
    respelled = {k: alias / v.relative_to(synth["photos"].parent) for k, v in synth.items()}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        check_cache_meta(meta, _tiny(respelled, tmp_path / "run", *common))
    assert "other data settings" not in caplog.text
    other = tmp_path / "other_photos"
    other.mkdir()
    with pytest.raises(ConfigError, match="data.photo_dirs"):
        check_cache_meta(meta, _tiny({**synth, "photos": other}, tmp_path / "run", *common))


def test_an_interrupted_cache_build_extends_under_another_spelling_of_its_folders(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache.pt"
    common = _cache_options(cache)
    build_cache(
        _tiny(synth, tmp_path / "run", *common, "--teacher.cache_count=2"), teacher=_FakeTeacher()
    )
    first = torch.load(cache, weights_only=True)
    alias = tmp_path / "alias"
    alias.symlink_to(synth["photos"].parent, target_is_directory=True)
    respelled = {k: alias / v.relative_to(synth["photos"].parent) for k, v in synth.items()}
    # Started again (the same folders, named another way) with a larger count: only the
    # missing patch is computed; the teacher's work so far is kept, not redone from patch 0.
    cfg = _tiny(respelled, tmp_path / "run", *common, "--teacher.cache_count=3")
    counting = _CountingTeacher()
    build_cache(cfg, teacher=counting)
    assert sum(counting.seen) == 1
    data = torch.load(cache, weights_only=True)
    assert data["keys"][:2] == first["keys"] and len(data["keys"]) == 3


def test_an_interrupted_cache_build_from_before_a_new_data_key_is_extended(
    synth: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.cache_teacher import check_cache_meta

    cache = tmp_path / "cache.pt"
    common = _cache_options(cache)
    build_cache(
        _tiny(synth, tmp_path / "run", *common, "--teacher.cache_count=2"), teacher=_FakeTeacher()
    )
    # As a build started before data.psf_centre existed wrote it, with validation and
    # trainer-side settings that cannot change a cached patch set otherwise.
    old = torch.load(cache, weights_only=True)
    del old["meta"]["data"]["psf_centre"]
    old["meta"]["data"].update(val_count=5, val_windows=[3], val_crop=0, raw_on_device=True)
    torch.save(old, cache)
    cfg = _tiny(synth, tmp_path / "run", *common, "--teacher.cache_count=3")
    with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
        check_cache_meta(old["meta"], cfg, cache)
    assert "other data settings" not in caplog.text
    counting = _CountingTeacher()
    build_cache(cfg, teacher=counting)
    assert sum(counting.seen) == 1
    data = torch.load(cache, weights_only=True)
    assert data["keys"][:2] == old["keys"] and len(data["keys"]) == 3
    # A missing key the config sets away from its default, or a patch setting that differs,
    # is a real change: warned of at training, and a build starts over.
    for change in ("--data.psf_centre=time", "--data.noise_prob=0.1"):
        torch.save(old, cache)
        caplog.clear()
        cfg = _tiny(synth, tmp_path / "run", *common, "--teacher.cache_count=3", change)
        with caplog.at_level(logging.WARNING, logger="training.cache_teacher"):
            check_cache_meta(old["meta"], cfg, cache)
        key = change[len("--data.") : change.index("=")]
        assert f"other data settings ({key})" in caplog.text
        counting = _CountingTeacher()
        build_cache(cfg, teacher=counting)
        assert sum(counting.seen) == 3, change


def test_missing_data_is_a_one_line_error_not_a_traceback(tmp_path: Path) -> None:
    # A clone without ../shared beside it: a setup problem, said in one line with exit status 2.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--config",
            "training/configs/fast.yaml",
            f"--data.raw_dirs=[{tmp_path / 'nowhere'}]",
            f"--out_dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "nowhere" in proc.stderr and "../shared" in proc.stderr


_MID_RUN_SCRIPT = """
import runpy, sys
import torch

def step(*args, **kwargs):  # a file gone while training runs (or a bug), not missing data
    raise FileNotFoundError("mid-run: no such file /tmp/vanished")

torch.optim.Adam.step = step
sys.argv = ["training.train", *sys.argv[1:]]
runpy.run_module("training.train", run_name="__main__", alter_sys=True)
"""


def test_a_file_error_while_training_keeps_its_traceback(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # The one-line "point data.* elsewhere" exit is for set-up; a FileNotFoundError raised once
    # training runs is a failure of the run, and its traceback must show where it came from.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MID_RUN_SCRIPT,
            "--config",
            str(SMOKE),
            *_data_overrides(synth),
            f"--out_dir={tmp_path / 'run'}",
            "--student=tiny",
            "--steps_per_epoch=1",
            "--stages=[{patch: 32, epochs: 1, batch: 1}]",
            "--data.val_count=1",
            "--data.val_crop=32",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and "mid-run" in proc.stderr
    assert "../shared" not in proc.stderr


def test_the_progress_bar_stays_out_of_a_log_file(tmp_path: Path) -> None:
    # A background run's log (stderr to a file) filled with carriage-return bar updates; the
    # epoch lines carry the same figures.
    code = (
        "import sys; from training.train import _progress\n"
        "assert sum(_progress(range(50), desc='epoch 1/1')) == 1225\n"
        "assert sum(_progress(range(50), desc='epoch 1/1', disable=False)) == 1225\n"
    )
    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stderr=fh, check=True, cwd=REPO)
    assert log.read_text() == ""


class _SignalledSamples(torch.utils.data.Dataset):
    """Sample 0 is made while the worker gets ``sig``, as the whole process group does from a
    Ctrl-C in a terminal or from timeout's TERM."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        if i == 0:
            signal.raise_signal(self.sig)
        return i


@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])],
    ids=lambda s: signal.Signals(s).name,
)
def test_data_workers_leave_a_signal_to_the_main_process(sig: int) -> None:
    # A worker that died of it (SIGTERM) or left on its KeyboardInterrupt failed the main
    # process's next batch ("killed by signal", "exited unexpectedly"): the main process stops
    # after its step, with a checkpoint, and shuts the workers down itself.
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _SignalledSamples(sig), batch_size=1, num_workers=1, worker_init_fn=_worker_init
    )
    assert [int(b) for b in loader] == [0, 1, 2, 3]


# A run of `python -m training.train` in which a signal comes in the middle of optimiser step
# AT, sent to the whole process group (DataLoader workers too) as Ctrl-C in a terminal or
# timeout's TERM are. With STUCK_SAVE, the save that follows is stuck on a hung disk (half a
# temp file written) when the same signal comes again.
_SIGNAL_SCRIPT = """
import os, runpy, sys, time
import torch

sig, at, stuck_save = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "STUCK_SAVE"
real_step, real_save = torch.optim.Adam.step, torch.save
steps = []

def step(self, *args, **kwargs):
    steps.append(None)
    if len(steps) == at:
        os.killpg(0, sig)
    return real_step(self, *args, **kwargs)

def save(obj, f, *args, **kwargs):
    if stuck_save and len(steps) >= at:
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        os.killpg(0, sig)
        time.sleep(120)
    return real_save(obj, f, *args, **kwargs)

torch.optim.Adam.step, torch.save = step, save
sys.argv = ["training.train", *sys.argv[4:]]
runpy.run_module("training.train", run_name="__main__", alter_sys=True)
"""


def _run_signalled(
    synth: dict[str, Path],
    out: Path,
    sig: int,
    at: int,
    how: str,
    *extra: str,
    output: int | None = None,
) -> subprocess.CompletedProcess:
    """``output``: a file descriptor for stdout and stderr both (``2>&1 | tee``); by default
    they are captured."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _SIGNAL_SCRIPT,
            str(int(sig)),
            str(at),
            how,
            "--config",
            str(SMOKE),
            *_data_overrides(synth),
            f"--out_dir={out}",
            "--student=tiny",
            "--steps_per_epoch=3",
            "--stages=[{patch: 32, epochs: 2, batch: 2}]",
            "--data.val_count=1",
            "--data.val_crop=32",
            *extra,
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE if output is None else output,
        stderr=subprocess.PIPE if output is None else output,
        text=True,
        timeout=300,
        start_new_session=True,  # its own process group: the signal reaches no one else
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_process_group_exits_with_its_status_and_no_traceback(
    synth: dict[str, Path], tmp_path: Path, sig: int
) -> None:
    # The data worker gets it too: one that died of it failed the main process's next batch
    # (KeyboardInterrupt in the worker, "DataLoader worker ... killed by signal" in the main).
    out = tmp_path / "run"
    proc = _run_signalled(synth, out, sig, 4, "-", "--data.num_workers=1")
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    assert f"{name}: stopping after this step with a checkpoint" in proc.stderr
    assert f"stopped (interrupted by {name}) at epoch 2 step 1; --resume continues" in proc.stderr
    assert f"interrupted by {name}: 4 steps in" in proc.stderr
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 1, 4)
    assert not list(out.glob("*.tmp"))


def test_a_signal_still_saves_when_its_output_pipe_closed_on_the_same_ctrl_c(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # `python -m training.train ... 2>&1 | tee run.log`: Ctrl-C ends tee too, and the note the
    # handler wrote to the closed pipe raised BrokenPipeError inside the step (exit 1, no
    # checkpoint). Logging already carries on past a closed stderr; the stop must as well.
    read, write = os.pipe()
    os.close(read)
    out = tmp_path / "run"
    try:
        proc = _run_signalled(synth, out, signal.SIGINT, 4, "-", output=write)
    finally:
        os.close(write)
    assert proc.returncode == 130
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 1, 4)


def test_a_second_signal_stops_a_stuck_save_at_once_and_last_pt_stays_whole(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = _run_signalled(synth, out, signal.SIGINT, 4, "STUCK_SAVE")
    # Ended by the second SIGINT itself (not after the 120 s stuck save, not a traceback).
    assert proc.returncode == -signal.SIGINT, proc.stderr[-3000:]
    assert time.monotonic() - t0 < 100
    assert "Traceback" not in proc.stderr
    # The half-written temp file was never renamed: last.pt is epoch 1's, whole.
    assert (out / "last.pt.tmp").read_bytes() == b"half a checkpoint"
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 0, 3)


_SETUP_INTERRUPT_SCRIPT = """
import os, runpy, signal, sys
import training.data

def build(*args, **kwargs):  # Ctrl-C while the data is decoded (minutes on the real data)
    signal.raise_signal(signal.SIGINT)

training.data.DeblurDataset.__init__ = build
sys.argv = ["training.train", *sys.argv[1:]]
runpy.run_module("training.train", run_name="__main__", alter_sys=True)
"""


def _interrupt_set_up(
    synth: dict[str, Path], tmp_path: Path, **run: object
) -> subprocess.CompletedProcess:
    """The trainer's command line, interrupted while it builds its data set."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _SETUP_INTERRUPT_SCRIPT,
            "--config",
            str(SMOKE),
            *_data_overrides(synth),
            f"--out_dir={tmp_path / 'run'}",
            "--student=tiny",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=300,
        **run,
    )


def test_ctrl_c_during_set_up_is_one_line_and_status_130(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    proc = _interrupt_set_up(synth, tmp_path, capture_output=True, text=True)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "interrupted during set-up: nothing trained, nothing saved" in proc.stderr


def test_ctrl_c_during_set_up_leaves_an_earlier_run_in_place_for_resume(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # The command run again without --resume, stopped at once: it had moved the earlier run to
    # previous_1 before its data, said "nothing saved", and the --resume after it started afresh.
    out = tmp_path / "run"
    train(_tiny(synth, out, "--stages=[{patch: 32, epochs: 1, batch: 2}]", "--stop_after_steps=1"))

    def files() -> dict[str, bytes | None]:
        return {p.name: p.read_bytes() if p.is_file() else None for p in out.iterdir()}

    before = files()
    proc = _interrupt_set_up(synth, tmp_path, capture_output=True, text=True)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert files() == before


def test_ctrl_c_during_set_up_is_status_130_when_its_output_pipe_closed_too(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # `... | tee log`: the same Ctrl-C ends tee, and printing the one line raised
    # BrokenPipeError (exit 1, where a script waits for 130).
    read, write = os.pipe()
    os.close(read)
    try:
        proc = _interrupt_set_up(synth, tmp_path, stdout=write, stderr=write)
    finally:
        os.close(write)
    assert proc.returncode == 130


def test_bounded_distillation_follows_the_teacher_only_where_it_beats_the_student(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # The fake teacher brightens every patch by 13 levels: farther from the sharp target than a
    # near-identity student, so the bounded run distils on fewer patches than the plain run,
    # which distils on every cached one.
    common = _distil_from_cache(tmp_path / "cache.pt")
    plain_cfg = _tiny(synth, tmp_path / "plain", *common)
    build_cache(plain_cfg, teacher=_FakeTeacher())
    plain = train(plain_cfg)["epochs"]
    bounded = train(_tiny(synth, tmp_path / "bounded", *common, "--teacher.bounded=true"))["epochs"]
    assert sum(r["distilled_patches"] for r in plain) == sum(r["cached_patches"] for r in plain)
    assert sum(r["cached_patches"] for r in bounded) > 0
    assert sum(r["distilled_patches"] for r in bounded) < sum(r["cached_patches"] for r in bounded)


@pytest.mark.parametrize("scheduler", ["none", "plateau"])
def test_the_constant_schedules_keep_the_rate_after_the_warm_up(scheduler: str) -> None:
    # scheduler: none promises lr throughout: a cosine there ended a run at min_lr unasked.
    cfg = load_config(
        None,
        [
            f"--scheduler={scheduler}",
            "--lr=0.01",
            "--min_lr=0.001",
            "--warmup_steps=4",
            "--steps_per_epoch=10",
            "--stages=[{patch: 64, epochs: 2, batch: 1}]",
        ],
    )
    assert [lr_factor(s, cfg) for s in (0, 3)] == pytest.approx([0.25, 1.0])
    assert [lr_factor(s, cfg) for s in (4, 10, 19, 20, 100)] == [1.0] * 5


def test_teacher_gain_mask_keeps_a_gain_of_exactly_the_threshold_and_judges_the_clamped_output() -> (
    None
):
    from training.train import teacher_gain_mask

    # "At least min_gain_db", as the teacher cache keeps its patches; and the output is judged
    # as it is used, clipped to [0, 1]: an overshoot past white on a white target is no error.
    sharp = torch.full((2, 3, 8, 8), 0.5)
    sharp[1, :, :4] = 1.0
    blur = sharp.clone()
    blur[1] = 0.5
    teacher = torch.stack([blur[0], sharp[1] + 0.5 * (sharp[1] == 1.0)])
    assert teacher_gain_mask(teacher, blur, sharp, 0.0).tolist() == [True, True]
    assert teacher_gain_mask(teacher, blur, sharp, 50.0).tolist() == [False, True]


def test_overlapping_raw_training_and_validation_ranges_are_refused(synth, tmp_path: Path) -> None:
    from training.train import build_data

    # A frame in both ranges trains on what validation measures: refused by its keys (with the
    # leakage guard off too), down to a single frame shared at the ranges' edge.
    off = "--data.leakage_check=false"
    for train_range, val_range in (
        ("[1, 31]", "[31, 40]"),
        ("[31, 40]", "[1, 31]"),
        ("[1, 40]", "[31, 35]"),
    ):
        cfg = _tiny(
            synth,
            tmp_path / "run",
            f"--data.raw_train_range={train_range}",
            f"--data.raw_val_range={val_range}",
            off,
        )
        with pytest.raises(ConfigError, match="raw_train_range .* overlaps data.raw_val_range"):
            build_data(cfg)
    # Disjoint, validation first: accepted.
    build_data(
        _tiny(
            synth,
            tmp_path / "run",
            "--data.raw_train_range=[32, 40]",
            "--data.raw_val_range=[1, 31]",
            off,
        )
    )


def test_gopro_guard_drops_a_held_out_sequence_whatever_its_case(synth, tmp_path: Path) -> None:
    import shutil

    from training.train import build_data

    # A clip copied to a case-insensitive disk may change its case: GoPro's pairs of it hold
    # the held-out validation frames and must not be trained on, whichever side changed case.
    clip = tmp_path / "GOPR0477_11_00"
    shutil.copytree(synth["raw"] / "seq_00", clip)
    rng = np.random.default_rng(1)
    names = ("gopr0477_11_00", "GOPR_x")
    gopro = tmp_path / "GOPRO_Large"
    _gopro_layout(gopro, {n: rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for n in names})
    cfg = _tiny(
        synth,
        tmp_path / "run",
        f"--data.raw_dirs=[{clip}]",
        f"--data.gopro_dir={gopro}",
        "--data.gopro_weight=0.2",
    )
    dataset, _, _ = build_data(cfg)
    assert [bp.parent.parent.name for bp, _ in dataset.gopro] == ["GOPR_x"]


def test_validation_scores_the_blurry_input_against_the_sharp_target_not_the_output() -> None:
    from training.train import validate

    # blurry_psnr is the yardstick of every log row and curves.png: taken from the model's
    # output, the student "beat the input" by 0 dB whatever it learnt.
    sharp = np.full((32, 32, 3), 0.5, np.float32)
    val = [(sharp + 0.1, sharp, "a")]  # blurry at 20 dB
    model = nn.Conv2d(3, 3, 1)  # a flat 0.51 whatever its input: 40 dB
    nn.init.zeros_(model.weight)
    nn.init.constant_(model.bias, 0.51)
    scores = validate(model, val, torch.device("cpu"))
    assert scores["val_psnr"] == pytest.approx(40.0, abs=1e-3)
    assert scores["blurry_psnr"] == pytest.approx(20.0, abs=1e-3)
    assert scores["val_ssim"] > scores["blurry_ssim"]


def test_each_stage_trains_on_its_own_patch_and_batch(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # The curriculum is what the stages are for: a loader left at the first stage's patch or
    # batch trained the whole run on it while the log rows named the stage's.
    shapes: list[tuple[int, ...]] = []

    class Recording(T.DistillLoss):
        def forward(self, pred: torch.Tensor, target: torch.Tensor, *args: object) -> dict:
            shapes.append(tuple(target.shape))
            return super().forward(pred, target, *args)

    monkeypatch.setattr(T, "DistillLoss", Recording)
    stages = "--stages=[{patch: 32, epochs: 1, batch: 2}, {patch: 48, epochs: 1, batch: 1}]"
    rows = train(_tiny(synth, tmp_path / "stages", stages, "--steps_per_epoch=2"))["epochs"]
    assert shapes == [(2, 3, 32, 32)] * 2 + [(1, 3, 48, 48)] * 2
    assert [(r["stage"], r["patch"], r["batch"]) for r in rows] == [(1, 32, 2), (2, 48, 1)]


def test_each_loss_term_is_logged_as_its_epochs_mean(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # log.csv and the curves are how a run's loss mix is judged: a term summed, kept from the
    # epoch's last step only, or carried over from the epoch before, misreports it.
    seen: list[dict[str, float]] = []

    class Recording(T.DistillLoss):
        def forward(self, *args: object) -> dict[str, torch.Tensor]:
            terms = super().forward(*args)
            seen.append({k: float(v) for k, v in terms.items()})
            return terms

    monkeypatch.setattr(T, "DistillLoss", Recording)
    res = train(_tiny(synth, tmp_path / "log"))
    rows = res["epochs"]
    assert {"total", "l1", "ssim", "edge"} <= set(seen[0]) and len(seen) == 6
    # ... and what the run returns per step (what resume and DDP tests compare) is the total
    assert res["steps"] == [s["total"] for s in seen]
    for row, steps in zip(rows, (seen[:3], seen[3:]), strict=True):
        for k in seen[0]:
            assert row[f"loss_{k}"] == pytest.approx(sum(s[k] for s in steps) / 3), k


def test_every_weighted_loss_term_reaches_the_gradient(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # The step follows the weighted total: backpropagating one term alone (L1) trained the same
    # student whatever loss.ssim and loss.edge said.
    def trained(name: str, *opts: str) -> dict[str, torch.Tensor]:
        train(_tiny(synth, tmp_path / name, "--stop_after_steps=2", *opts))
        return load_checkpoint(tmp_path / name / "last.pt")["model"]

    l1_only = trained("l1", "--loss.ssim=0", "--loss.edge=0")
    mixed = trained("mixed", "--loss.ssim=1", "--loss.edge=1")
    assert any(not torch.equal(l1_only[k], mixed[k]) for k in l1_only)


def test_validation_and_best_pt_measure_the_moving_average(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as T

    # With ema > 0 the average is what ships: validating the raw weights picked best.pt by
    # another model's score than the one it holds.
    validated: list[dict[str, torch.Tensor]] = []

    def spy(model: nn.Module, val: list, device: torch.device) -> dict[str, float]:
        validated.append({k: v.clone() for k, v in model.state_dict().items()})
        return _flat_validation(model, val, device)

    monkeypatch.setattr(T, "validate", spy)
    run = tmp_path / "ema"
    train(_tiny(synth, run, "--ema=0.9", "--stages=[{patch: 32, epochs: 1, batch: 2}]"))
    best = load_checkpoint(run / "best.pt")
    (seen,) = validated
    assert all(torch.equal(seen[k], best["model"][k]) for k in best["model"])
    assert any(not torch.equal(seen[k], best["model_raw"][k]) for k in best["model"])


def test_the_average_copies_buffers_as_they_are() -> None:
    # Running statistics are not weights to average: left at their initial values (mean 0,
    # variance 1), the average normalised with statistics its weights never saw.
    ema, model = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    model.train()(torch.randn(4, 2, 3, 3) * 3 + 1)
    update_ema(ema, model, 0.999, step=1000)
    for a, b in zip(ema.buffers(), model.buffers(), strict=True):
        assert torch.equal(a, b)


def test_the_run_time_limit_is_counted_in_minutes() -> None:
    from training.train import _should_stop

    cpu = torch.device("cpu")
    now = time.monotonic()
    cfg = load_config(None, ["--max_minutes=1"])
    assert _should_stop(cfg, now - 50, 1, False, cpu, []) == ""
    assert _should_stop(cfg, now - 70, 1, False, cpu, []) == "time budget"
    # 0 is no limit, however long the run has been going
    assert _should_stop(load_config(None, []), now - 1e6, 1, False, cpu, []) == ""


def test_a_stop_at_an_epochs_end_saves_last_pt_whatever_ckpt_every(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    # ckpt_every=5 writes last.pt every fifth epoch: a step limit or time budget reached on an
    # epoch's last step ended the launch there with nothing to resume from.
    out = tmp_path / "run"
    args = ("--ckpt_every=5", "--stages=[{patch: 32, epochs: 3, batch: 1}]")
    first = train(_tiny(synth, out, *args, "--stop_after_steps=3"))
    assert first["stopped"] == "step limit" and len(first["epochs"]) == 1
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 0, 3)


def test_clipping_bounds_the_whole_students_gradient(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # grad_clip bounds the norm of the step's whole gradient: clipping some parameters (the
    # first layer) left the others' gradients as large as they came.
    real = torch.optim.Adam.step
    norms: list[float] = []

    def step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    train(_tiny(synth, tmp_path / "clip", "--grad_clip=0.001", "--stop_after_steps=2"))
    assert len(norms) == 2 and all(n <= 0.001 * 1.001 for n in norms)


def test_a_resumed_epochs_time_counts_the_launch_that_stopped_in_it(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import training.train as T

    # patches/s and epoch_s of an epoch split by a stop: timed from the resume alone, the
    # epoch looked faster than it ran. The first launch's clock runs 100 s a reading.
    clock = iter(range(0, 10**9, 100))
    monkeypatch.setattr(T, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    out = tmp_path / "run"
    one_epoch = "--stages=[{patch: 32, epochs: 1, batch: 1}]"
    train(_tiny(synth, out, one_epoch, "--stop_after_steps=1"))
    before = load_checkpoint(out / "last.pt")["epoch_time"]
    assert before >= 100
    monkeypatch.undo()
    (row,) = train(_tiny(synth, out, one_epoch, "--resume"))["epochs"]
    assert before < row["epoch_s"] < before + 60


def test_a_resume_continues_the_global_generators_where_they_stopped(
    synth: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    import training.train as T

    # A student with dropout, or anything else in the step that draws from torch's, numpy's or
    # Python's generator: restarted from the seed, a resumed run repeated the draws it had made.
    draws: list[tuple[float, float, float]] = []

    class Drawing(T.DistillLoss):
        def forward(self, *args: object) -> dict[str, torch.Tensor]:
            draws.append((float(torch.rand(())), float(np.random.rand()), random.random()))
            return super().forward(*args)

    monkeypatch.setattr(T, "DistillLoss", Drawing)
    one = "--stages=[{patch: 32, epochs: 1, batch: 1}]"
    train(_tiny(synth, tmp_path / "full", one))
    full = list(draws)
    draws.clear()
    train(_tiny(synth, tmp_path / "split", one, "--stop_after_steps=1"))
    train(_tiny(synth, tmp_path / "split", one, "--resume"))
    assert len(set(full)) == 3 and draws == full


def test_mps_asked_for_where_there_is_none_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training.train import _resolve_device

    # The tools' "not a torch device" hint names mps: off a Mac it passed, and the run (or
    # cache_teacher, device_data) failed with torch's traceback once data moved there.
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: mps asked for, but no MPS device"):
        _resolve_device("mps")
    assert _resolve_device("cpu") == torch.device("cpu")
