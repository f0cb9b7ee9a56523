"""Training config: defaults, YAML, --key=value overrides, rejection messages, curriculum."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from training.config import (
    RUN_CONTROL_KEYS,
    ConfigError,
    StageConfig,
    TrainConfig,
    config_changes,
    config_digest,
    config_from_dict,
    config_to_dict,
    exit_missing_data,
    load_config,
    parse_overrides,
    save_config,
    stage_at,
    total_epochs,
)

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_defaults_are_the_papers() -> None:
    cfg = TrainConfig()
    assert [(s.patch, s.epochs, s.batch) for s in cfg.stages] == [
        (128, 12, 4),
        (256, 20, 2),
        (288, 5, 1),
    ]
    assert cfg.lr == 5e-5
    assert cfg.data.raw_train_range == [1, 239] and cfg.data.raw_val_range == [240, 299]


def test_the_patch_filters_and_cache_defaults_are_the_documented_ones() -> None:
    # The configs that leave these out (paper.yaml, hq.yaml) run with them.
    d, t = TrainConfig().data, TrainConfig().teacher
    assert d.raw_windows == [7, 9, 11, 13] and d.val_windows == [7, 11]
    assert (d.sharpness_threshold, d.max_blur_psnr, d.max_tries) == (0.02, 0.0, 10)
    assert (d.still_fraction, d.raw_on_device, d.augment, d.leakage_check) == (0, False, True, True)
    assert (t.cache_fraction, t.cache_min_gain, t.cache_patch) == (0.25, 0.5, 256)


def test_override_parsing_nested_lists_and_flags() -> None:
    got = parse_overrides(
        ["--loss.vgg=0.1", "--data.raw_windows=[7, 9]", "--resume", "--out_dir=runs/x"]
    )
    assert got == {
        "loss": {"vgg": 0.1},
        "data": {"raw_windows": [7, 9]},
        "resume": True,
        "out_dir": "runs/x",
    }
    cfg = load_config(
        None, ["--loss.vgg=0.1", "--lr=5e-3", "--stages=[{patch: 64, epochs: 2, batch: 3}]"]
    )
    assert cfg.loss.vgg == 0.1
    assert cfg.lr == 5e-3  # YAML 1.1 reads 5e-3 as a string; the float field takes it
    assert cfg.stages == [StageConfig(64, 2, 3)]


def test_a_section_override_after_some_of_its_keys_keeps_them() -> None:
    # The section replaced the keys given before it: num_workers went back to 0 silently.
    cfg = load_config(None, ["--data.num_workers=2", "--data={photo_weight: 1}"])
    assert (cfg.data.num_workers, cfg.data.photo_weight) == (2, 1.0)
    # The later of two values of one key wins, inside a section as outside one.
    cfg = load_config(None, ["--data.num_workers=2", "--data={num_workers: 3}", "--lr=1", "--lr=2"])
    assert (cfg.data.num_workers, cfg.lr) == (3, 2.0)
    # A student's constructor arguments stay one unit, as they do over the YAML's.
    got = parse_overrides(["--student_kwargs.width=8", "--student_kwargs={depth: 2}"])
    assert got == {"student_kwargs": {"depth": 2}}


def test_off_on_yes_no_stay_words(tmp_path: Path) -> None:
    # YAML 1.1 would read these as booleans; teacher.mode takes the word "off".
    assert parse_overrides(["--teacher.mode=off", "--x=yes", "--amp=true", "--y=FALSE"]) == {
        "teacher": {"mode": "off"},
        "x": "yes",
        "amp": True,
        "y": False,  # YAML 1.2 spells false in three cases
    }
    p = tmp_path / "c.yaml"
    p.write_text("teacher:\n  mode: off\namp: false\n")
    cfg = load_config(p)
    assert cfg.teacher.mode == "off" and cfg.amp is False
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(None, ["--amp=on"])


def test_yaml_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"lr": 0.001, "loss": {"ssim": 0.5}, "data": {"raw_scale": 0.5}}))
    cfg = load_config(p, ["--loss.ssim=0.25"])
    assert cfg.lr == 0.001 and cfg.loss.ssim == 0.25 and cfg.data.raw_scale == 0.5
    assert cfg.loss.l1 == 1.0  # untouched defaults stay


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--lossx=1"], "unknown config key lossx"),
        (["--loss.vggg=1"], "unknown config key loss.vggg"),
        (["--lr=fast"], "lr: expected float, got str 'fast'"),
        (["--steps_per_epoch=1.5"], "steps_per_epoch: expected int, got float 1.5"),
        (["--resume=3"], "resume: expected bool, got int 3"),
        (["--data.raw_dirs=abc"], "data.raw_dirs: expected a list, got str 'abc'"),
        (
            ["--stages=[{patch: 64, epochs: 1, batch: 1, extra: 2}]"],
            "unknown config key stages[0].extra",
        ),
        (["--scheduler=linear"], "scheduler: expected one of cosine, plateau, none"),
        (["--data.raw_windows=[8]"], "odd"),
        (["--data.raw_scale=0"], "data.raw_scale: expected a number > 0"),
        (["--data.linear_fraction=1.7"], "data.linear_fraction: expected a share in [0, 1]"),
        (["--data.noise_prob=-1"], "data.noise_prob: expected a share in [0, 1]"),
        (
            ["--data.jpeg_quality=[0, 400]"],
            "data.jpeg_quality: expected [low, high] within [0, 100]",
        ),
        (["--data.photo_scale=[0, 0]"], "data.photo_scale: expected numbers > 0"),
        (["--data.still_scale=[2, 1]"], "data.still_scale: expected"),
        (["--data.still_scale=[0, 1]"], "data.still_scale: expected"),
        (["--data.still_scale=[1]"], "data.still_scale: expected"),
        (["--data.raw_weight=-0.5"], "data.raw_weight: expected a number >= 0"),
        (["--data.raw_weight=0", "--data.photo_weight=0"], "at least one must be > 0"),
        (["--teacher.cache_fraction=3.0"], "teacher.cache_fraction: expected a share in [0, 1]"),
        # read only by cache_teacher, after the teacher and the data had loaded: an empty stack
        # and an OpenCV assertion that named neither key
        (["--teacher.cache_batch=0"], "teacher.cache_batch: expected >= 1, got 0"),
        (["--teacher.cache_patch=0"], "teacher.cache_patch: expected >= 16"),
        (["--teacher.cache_patch=15"], "teacher.cache_patch: expected >= 16"),
        (["--lr=nan"], "lr: expected a finite number"),
        (["--lr=-0.1"], "lr: expected a number >= 0"),
        (["--betas=[0.9, 1.0]"], "betas: expected two numbers in [0, 1)"),
        # divisors at the end of every epoch: 0 crashed after the first one had trained
        (["--val_every=0"], "val_every: expected >= 1, got 0"),
        (["--ckpt_every=0"], "ckpt_every: expected >= 1, got 0"),
        (["--early_stop=-1"], "early_stop: expected a number >= 0"),
        (["--data.val_count=-1"], "data.val_count: expected a number >= 0"),
        (["--data.num_workers=-1"], "data.num_workers: expected a number >= 0"),
        # ignored without a word: only a count > 0 sets torch's threads
        (["--threads=-1"], "threads: expected a number >= 0, got -1"),
        # a term is on where its weight is > 0: these turned it off without a word
        (["--loss.ssim=-0.1"], "loss.ssim: expected a number >= 0"),
        (["--loss.vgg=nan"], "loss.vgg: expected a finite number"),
        # NaN fails every comparison: the range checks passed it, and the patch filter given it
        # refused every patch (each sample was its last draw, unfiltered) without a word
        (["--data.max_blur_psnr=nan"], "data.max_blur_psnr: expected a finite number"),
        (["--teacher.cache_min_gain=.nan"], "teacher.cache_min_gain: expected a finite number"),
        (["--data.noise_sigma=[0, .nan]"], "data.noise_sigma[1]: expected a finite number"),
        # numpy refused it only at the first sample, after the data had been decoded
        (["--seed=-1"], "seed: expected a number >= 0, got -1"),
        # 2 would raise the LR on every plateau; torch says so only after the data is built
        (["--plateau_factor=2"], "plateau_factor: expected a factor in (0, 1)"),
        (
            ["--data.raw_on_device=true", "--data.raw_camera_fraction=0.5"],
            "raw_camera_fraction > 0 needs the raw source in the data workers",
        ),
    ],
)
def test_rejects_bad_keys_and_types(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # a curriculum stage the trainer cannot run: tiny patches, empty batches
        (["--stages=[{patch: 8, epochs: 1, batch: 1}]"], "stages[0]: need patch >= 16"),
        (["--stages=[{patch: 64, epochs: 1, batch: 0}]"], "stages[0]: need patch >= 16"),
        (["--stages=[{patch: 64, epochs: -1, batch: 1}]"], "stages[0]: need patch >= 16"),
        (["--data.raw_windows=[-1]"], "data windows must be odd and positive, got -1"),
        (["--data.val_windows=[7, 4]"], "data windows must be odd and positive, got 4"),
        # the frame ranges the leakage guard splits the clip by
        (["--data.raw_train_range=[239, 1]"], "data.raw_train_range: expected [low, high]"),
        (["--data.raw_train_range=[1]"], "data.raw_train_range: expected [low, high]"),
        (["--data.raw_val_range=[299, 240]"], "data.raw_val_range: expected [low, high]"),
        (["--data.camera_fraction=1.5"], "data.camera_fraction: expected a share in [0, 1]"),
        (["--data.camera_speed=[-1, 2]"], "data.camera_speed >= 0"),
        (["--data.raw_camera_fraction=-0.1"], "data.raw_camera_fraction: expected a share"),
        (["--steps_per_epoch=0"], "steps_per_epoch: expected >= 1, got 0"),
        (["--ema=1.0"], "ema: expected a decay in [0, 1)"),
        (["--data.exposure=[0.5, 1.5]"], "data.exposure: a fraction of the trajectory, at most 1"),
        (["--data.noise_sigma=[-0.01, 0.02]"], "data.noise_sigma: expected >= 0"),
        # the shot noise divides by the peak
        (["--data.poisson_peak=[0, 100]"], "data.poisson_peak: expected numbers > 0"),
        (["--data.exposure=[0, 0.5]"], "data.exposure: expected numbers > 0"),
        # numpy draws from a reversed range without a word: these were not the ranges asked for
        (["--data.poisson_peak=[2000, 200]"], "data.poisson_peak: expected [low, high] with low"),
        (["--data.exposure=[1.0, 0.5]"], "data.exposure: expected [low, high] with low <= high"),
        (["--data.photo_scale=[2, 1]"], "data.photo_scale: expected [low, high] with low <= high"),
        (["--data.camera_speed=[3, 1]"], "data.camera_speed: expected [low, high] with low"),
        (["--data.jpeg_quality=[-5, 90]"], "data.jpeg_quality: expected [low, high] within"),
        (["--data.raw_camera_fraction=1.5"], "data.raw_camera_fraction: expected a share"),
        # a negative decay is no EMA at all (the trainer's is on where ema > 0)
        (["--ema=-0.1"], "ema: expected a decay in [0, 1)"),
        (["--stages=[]"], "stages: the curriculum needs at least one stage"),
        (["--plateau_factor=0"], "plateau_factor: expected a factor in (0, 1)"),
        (["--betas=[0.9, 0.99, 0.5]"], "betas: expected two numbers in [0, 1)"),
        (["--betas=[-0.1, 0.9]"], "betas: expected two numbers in [0, 1)"),
        (["--plateau_factor=1.0"], "plateau_factor: expected a factor in (0, 1)"),
        (["--steps_per_epoch=true"], "steps_per_epoch: expected int, got bool True"),
        # words the trainer and the data branch on: a typo fell through to a default branch
        (["--teacher.mode=offline"], "teacher.mode: expected one of auto, online, cache, off"),
        (["--data.gopro_blur=gamma"], "data.gopro_blur: expected one of blur, blur_gamma"),
        (["--data.psf_centre=centre"], "data.psf_centre: expected one of mass, time"),
        # [] raw windows failed at the first sample with a message about something else; []
        # validation windows validated on synthetic samples of the training sources
        (["--data.raw_windows=[]"], "data.raw_windows: expected at least one window size"),
        (["--data.val_windows=[]"], "data.val_windows: expected at least one window size"),
        # torch's RuntimeError came after the earlier run in out_dir was moved aside
        (["--device=banana"], "device: expected auto, cpu, cuda or cuda:N, got 'banana'"),
        (["--device=gpu"], "device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        # a teacher asked for by mode but not named: distillation was off without a word
        (
            ["--teacher.name=", "--teacher.mode=online", "--loss.distill=1"],
            "teacher.mode=online with loss.distill or loss.feature > 0 needs teacher.name",
        ),
        (
            ["--teacher.name=", "--teacher.mode=cache", "--loss.feature=0.5"],
            "teacher.mode=cache with loss.distill or loss.feature > 0 needs teacher.name",
        ),
    ],
)
def test_rejects_values_the_pipeline_cannot_use(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert message in str(exc.value)


def test_the_limits_of_those_checks_are_accepted() -> None:
    cfg = load_config(
        None,
        [
            "--stages=[{patch: 16, epochs: 0, batch: 1}]",
            "--data.raw_windows=[1]",
            "--data.raw_train_range=[5, 5]",
            "--data.exposure=[1.0, 1.0]",
            "--data.noise_sigma=[0, 0]",
            "--data.camera_fraction=1",
            "--data.camera_speed=[0, 0]",
            "--data.raw_camera_fraction=1",  # raw_on_device is false: the workers film it
            "--data.jpeg_quality=[0, 100]",
            "--data.still_scale=[1.5, 1.5]",
            "--steps_per_epoch=1",
            "--ema=0.999",
            "--device=cuda:1",  # which devices this machine has is the trainer's to check
            # no teacher and no term that reads one; under mode auto the trainer only warns
            "--teacher.name=",
            "--teacher.mode=online",
        ],
    )
    assert cfg.stages == [StageConfig(16, 0, 1)] and cfg.data.raw_train_range == [5, 5]
    assert cfg.data.raw_camera_fraction == 1.0 and cfg.data.still_scale == [1.5, 1.5]
    load_config(None, ["--teacher.name=", "--teacher.mode=auto", "--loss.distill=1"])


def test_override_values_keep_what_yaml_would_drop() -> None:
    # Only the first "=" separates key and value; a value YAML reads as nothing (a comment)
    # stays the text given; "null" is still None.
    got = parse_overrides(["--out_dir=runs/a=b", "--kernel_dir=#3", "--teacher.cache_path=null"])
    assert got == {
        "out_dir": "runs/a=b",
        "kernel_dir": "#3",
        "teacher": {"cache_path": None},
    }
    # YAML's other spellings of null are null too, not the text.
    assert parse_overrides(["--a=~", "--b=NULL", "--c=Null"]) == {"a": None, "b": None, "c": None}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--=3"], "empty key in '--=3'"),
        (["--lr=1", "--lr.x=2"], "--lr.x: lr is both a value and a section"),
        (["lr=1"], "expected --key=value, got 'lr=1'"),
        (["-lr=1"], "expected --key=value, got '-lr=1'"),
        (["--lr=[1, 2"], "cannot parse value of --lr"),
    ],
)
def test_malformed_overrides_are_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_overrides(overrides)
    assert message in str(exc.value)


def test_a_student_kwargs_override_replaces_the_yamls_as_one(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("student_kwargs: {width: 16, depth: 3}\ndata: {num_workers: 2}\n")
    cfg = load_config(p, ["--student_kwargs={depth: 2}", "--data={photo_weight: 1}"])
    assert cfg.student_kwargs == {"depth": 2}  # constructor arguments stay one unit
    assert (cfg.data.num_workers, cfg.data.photo_weight) == (2, 1.0)  # other sections merge


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("- lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: expected a mapping at the top level"):
        load_config(p)
    p.write_text("lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"cannot parse .*c\.yaml"):
        load_config(p)
    p.write_text("")
    assert load_config(p) == TrainConfig()  # an empty file is the defaults


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Empty validation images: the run failed at its first validation, an epoch in.
        ("--data.val_crop=-64", "data.val_crop: expected a number >= 0"),
        # ReduceLROnPlateau lowered the rate at every validation, improved or not.
        ("--plateau_patience=-1", "plateau_patience: expected a number >= 0"),
        # 1.5 would make every sample a still one without saying so
        ("--data.still_fraction=1.5", "data.still_fraction: expected a share in [0, 1]"),
        ("--data.graphics_fraction=-0.1", "data.graphics_fraction: expected a share in [0, 1]"),
    ],
)
def test_a_negative_validation_crop_or_patience_is_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
    assert load_config(None, ["--data.val_crop=0", "--plateau_patience=0"]).data.val_crop == 0


def _float_fields(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, bool]]:
    """``(key path, is a list)`` of every float field of the config, nested ones included."""
    out: list[tuple[str, bool]] = []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out += _float_fields(tp, f"{prefix}{name}.")
        elif tp is float or typing.get_args(tp) == (float,):
            out.append((prefix + name, tp is not float))
    return out


FLOAT_FIELDS = _float_fields()


def test_the_float_field_list_is_complete() -> None:
    # A sanity check of the helper, so the test below cannot pass by testing nothing.
    keys = dict(FLOAT_FIELDS)
    assert keys["lr"] is False and keys["data.max_blur_psnr"] is False
    assert keys["data.noise_sigma"] is True and keys["teacher.cache_min_gain"] is False
    assert len(FLOAT_FIELDS) > 40


@pytest.mark.parametrize(("key", "is_list"), FLOAT_FIELDS)
@pytest.mark.parametrize("spelling", [".inf", "-.inf", "inf", "-Infinity", "1e999"])
def test_every_float_field_refuses_an_infinity(
    key: str, is_list: bool, spelling: str, tmp_path: Path
) -> None:
    # An infinity passed the one-sided range checks (lr >= 0) or none at all: a filter given
    # data.max_blur_psnr=inf or teacher.cache_min_gain=inf refused every patch without a word.
    raw = f"[1.0, {spelling}]" if is_list else spelling
    where = f"{key}[1]" if is_list else key
    message = f"{where}: expected a finite number, got "
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f"--{key}={raw}"])
    # The same in a YAML file, nested as it is there.
    *sections, name = key.split(".")
    text = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(sections))
    p = tmp_path / "c.yaml"
    p.write_text(text + f"{'  ' * len(sections)}{name}: {raw}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(p)


@pytest.mark.parametrize("size", [4, 3, 1, 0])
def test_a_psf_cap_below_the_smallest_psf_is_refused(size: int) -> None:
    # random_psf draws sizes from 5 px up: a smaller cap gave 5 px PSFs without a word.
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"data.psf_max_size: expected >= 5 (the smallest synthetic PSF), got {size}"
        ),
    ):
        load_config(None, [f"--data.psf_max_size={size}"])


def test_the_smallest_psf_cap_is_accepted() -> None:
    assert load_config(None, ["--data.psf_max_size=5"]).data.psf_max_size == 5


def test_range_checks_keep_the_documented_special_values() -> None:
    # 0 = no cap / off, and Adam's beta1 = 0 (no momentum) are valid settings
    cfg = load_config(
        None, ["--data.photo_max_side=0", "--data.max_blur_psnr=-1", "--betas=[0.0, 0.99]"]
    )
    assert cfg.data.photo_max_side == 0 and cfg.betas == [0.0, 0.99]


def test_saved_config_round_trips_and_digest(tmp_path: Path) -> None:
    cfg = load_config(None, ["--lr=0.002", "--loss.edge=0.3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_digest(again) == config_digest(cfg)
    assert config_digest(load_config(None, ["--lr=0.003", "--loss.edge=0.3"])) != config_digest(cfg)
    # Run-control fields do not change what is trained: resuming keeps the digest.
    assert config_digest(
        load_config(None, ["--lr=0.002", "--loss.edge=0.3", "--resume"])
    ) == config_digest(cfg)
    # The seed decides every data sample: another seed is another training run.
    reseeded = load_config(None, ["--lr=0.002", "--loss.edge=0.3", "--seed=1"])
    assert config_digest(reseeded) != config_digest(cfg)
    assert config_changes(config_to_dict(cfg), reseeded) == ["seed"]


def test_a_key_added_since_a_config_was_saved_is_no_change_at_its_default() -> None:
    cfg = load_config(None, ["--lr=0.002", "--out_dir=runs/a"])
    # Saved before data.psf_centre, loss.fft and a stage's batch existed (all at their defaults
    # now; StageConfig's batch default is the first stage's): its digest is not cfg's.
    saved = config_to_dict(cfg)
    del saved["data"]["psf_centre"], saved["loss"]["fft"], saved["stages"][0]["batch"]
    old_digest = hashlib.sha256(
        json.dumps(
            {k: v for k, v in saved.items() if k not in RUN_CONTROL_KEYS},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert old_digest != config_digest(cfg)
    assert config_changes(saved, cfg) == []
    # Run-control fields are no change either, as in the digest.
    assert config_changes(saved, load_config(None, ["--lr=0.002", "--resume", "--threads=1"])) == []
    # Real changes are still found, a new key set away from its default among them.
    later = load_config(
        None,
        ["--lr=0.001", "--data.psf_centre=time", "--loss.fft=0.1", "--stages=[{batch: 2}]"],
    )
    assert config_changes(saved, later) == ["data.psf_centre", "loss.fft", "lr", "stages"]
    two = load_config(None, ["--lr=0.002", "--stages=[{batch: 4}, {batch: 3}]"])
    saved["stages"] = config_to_dict(two)["stages"]
    del saved["stages"][0]["batch"]
    saved["stages"][1]["batch"] = 2
    assert config_changes(saved, two) == ["stages[1].batch"]
    # A key this code no longer knows was removed since: what it did is unknown, so a change.
    saved["data"]["retired"] = 1
    assert config_changes(saved, two) == ["data.retired", "stages[1].batch"]


def test_curriculum_is_a_pure_function_of_epoch() -> None:
    cfg = TrainConfig()
    assert total_epochs(cfg) == 37
    expected = [0] * 12 + [1] * 20 + [2] * 5
    assert [stage_at(cfg, e)[0] for e in range(37)] == expected
    assert stage_at(cfg, 11)[1].patch == 128 and stage_at(cfg, 12)[1].patch == 256
    assert stage_at(cfg, 36)[1] == StageConfig(288, 5, 1)
    assert stage_at(cfg, 100)[0] == 2  # past the end: the last stage
    assert [stage_at(cfg, e) for e in range(37)] == [stage_at(cfg, e) for e in range(37)]


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    from training.models.student import STUDENTS

    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, TrainConfig)
    assert cfg.student in STUDENTS
    assert config_from_dict(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())) == cfg


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path: Path) -> None:
    # PyYAML keeps the last: the second data section replaced the first, whose photo_weight and
    # noise_prob went back to their defaults without a word.
    p = tmp_path / "c.yaml"
    p.write_text(
        "data:\n  photo_weight: 0.5\n  noise_prob: 0.1\nlr: 0.001\ndata:\n  num_workers: 2\n"
    )
    with pytest.raises(ConfigError, match=r"(?s)cannot parse .*c\.yaml.*duplicate key 'data'"):
        load_config(p)
    with pytest.raises(ConfigError, match="duplicate key 'x'"):
        parse_overrides(["--data={x: 1, x: 2}"])
    # A merge's keys may still be overridden: that is what merges are for.
    p.write_text(
        "base: &b {patch: 64, epochs: 1, batch: 2}\nstages:\n  - {<<: *b, batch: 3}\n  - *b\n"
    )
    with pytest.raises(ConfigError, match="unknown config key base"):
        load_config(p)  # parsed; only the helper key is refused, by the config itself
    assert parse_overrides(["--stages=[{<<: {patch: 64, batch: 2}, batch: 3}]"]) == {
        "stages": [{"patch": 64, "batch": 3}]
    }
    # A mapping that overrides a merged key may itself be a merge's source: its merged keys
    # spliced in beside its own are no duplicate.
    chain = "--stages=[&m {<<: {patch: 64, batch: 2}, patch: 32}, {<<: *m, epochs: 3}]"
    assert parse_overrides([chain]) == {
        "stages": [{"patch": 32, "batch": 2}, {"patch": 32, "batch": 2, "epochs": 3}]
    }


def test_command_line_config_errors_are_usage_errors(tmp_path, capsys):
    import argparse

    from training.config import parse_cli

    parser = argparse.ArgumentParser(prog="train")
    parser.add_argument("--config")
    for argv, needle in [
        (["--config", str(tmp_path / "nope.yaml")], "cannot read config"),
        (["--bogus=1"], "unknown config key bogus"),
    ]:
        with pytest.raises(SystemExit) as info:
            parse_cli(parser, argv)
        assert info.value.code == 2
        assert needle in capsys.readouterr().err
    args, cfg = parse_cli(parser, ["--lr=0.5"])
    assert args.config is None and cfg.lr == 0.5


# Every training module with a command line, found by its parser: a new tool is checked too.
_TOOLS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "training").glob("*.py")
    if "ArgumentParser(" in p.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("tool", _TOOLS)
def test_every_training_tool_shows_how_it_is_run(
    tool: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    # Run with -m, argparse named the file ("usage: train.py") in help and errors, not the
    # command that runs it, as evaluate's "usage: python -m training.evaluate" does.
    main = importlib.import_module(f"training.{tool}").main
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m training.{tool} ")
    with pytest.raises(SystemExit) as info:
        main(["--no-such-option"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m training.{tool} ")
    assert f"\npython -m training.{tool}: error: " in err


def _loss_weight_keys() -> list[str]:
    from training.config import LossConfig

    return [f"loss.{f.name}" for f in dataclasses.fields(LossConfig) if f.type in (float, "float")]


def test_the_loss_weight_key_list_covers_every_term() -> None:
    assert {"loss.l1", "loss.edge", "loss.fft", "loss.feature"} <= set(_loss_weight_keys())


@pytest.mark.parametrize("key", _loss_weight_keys())
def test_every_negative_loss_weight_is_refused(key: str) -> None:
    # A term is on where its weight is > 0: a negative one turned the term off without a word
    # (or, summed into the total, trained the net to make that loss worse).
    with pytest.raises(ConfigError, match=re.escape(f"{key}: expected a number >= 0, got -0.1")):
        load_config(None, [f"--{key}=-0.1"])
    assert _float_field(load_config(None, [f"--{key}=0"]), key) == 0.0


def _float_field(cfg: TrainConfig, key: str) -> float:
    obj: typing.Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return float(obj)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # YAML's true is 1 to Python: a learning rate of 1.0 diverged at the first steps
        ("--lr=true", "lr: expected float, got bool True"),
        # a list where a folder is wanted failed as a path error far from the key
        ("--data.kernel_dir=[1, 2]", "data.kernel_dir: expected str, got list [1, 2]"),
        # a prefix of a device name is not the device
        ("--device=cudax", "device: expected auto, cpu, cuda or cuda:N, got 'cudax'"),
        ("--device=cuda:1x", "device: expected auto, cpu, cuda or cuda:N, got 'cuda:1x'"),
        ("--device='cuda:'", "device: expected auto, cpu, cuda or cuda:N, got 'cuda:'"),
        # a section or a stage given as a number failed inside the dataclass, naming no key
        ("--data=3", "data: expected a mapping for DataConfig, got int 3"),
        ("--stages=[3]", "stages[0]: expected a mapping for StageConfig, got int 3"),
        ("--student_kwargs=[1]", "student_kwargs: expected a mapping, got list [1]"),
        # a third number was dropped without a word: the range was not the one asked for
        (
            "--data.noise_sigma=[0, 0.01, 0.02]",
            "data.noise_sigma: expected [low, high] with low <= high, got [0.0, 0.01, 0.02]",
        ),
    ],
)
def test_wrong_types_devices_and_range_lengths_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_a_stage_that_leaves_keys_out_gets_the_first_stages_values() -> None:
    # StageConfig's defaults are the paper's first stage, so {epochs: 3} is that stage, shorter.
    first = TrainConfig().stages[0]
    cfg = load_config(None, ["--stages=[{epochs: 3}]"])
    assert cfg.stages == [StageConfig(patch=first.patch, epochs=3, batch=first.batch)]


def test_the_defaults_train_as_the_paper_config_does() -> None:
    # The defaults are documented as the paper's: a config that leaves these out trains as
    # paper.yaml (which spells them out) does.
    paper = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    defaults = config_to_dict(TrainConfig())
    for key in ("stages", "steps_per_epoch", "lr", "min_lr", "scheduler", "grad_clip", "amp"):
        assert defaults[key] == paper[key], key


# Written out here, not taken from the module's own lists: a key dropped from those lists is
# exactly what these tests are for.
SHARE_KEYS = [
    "data.linear_fraction",
    "data.real_kernel_fraction",
    "data.noise_prob",
    "data.poisson_prob",
    "data.jpeg_prob",
    "data.still_fraction",
    "data.graphics_fraction",
    "data.camera_fraction",
    "data.raw_camera_fraction",
    "teacher.cache_fraction",
]
NON_NEGATIVE_KEYS = [
    "lr",
    "min_lr",
    "weight_decay",
    "grad_clip",
    "warmup_steps",
    "max_minutes",
    "stop_after_steps",
    "early_stop",
    "seed",
    "plateau_patience",
    "threads",
    "data.raw_weight",
    "data.photo_weight",
    "data.gopro_weight",
    "data.photo_max_side",
    "data.sharpness_threshold",
    "data.camera_turn",
    "data.camera_zoom",
    "data.val_count",
    "data.val_crop",
    "data.num_workers",
]


@pytest.mark.parametrize("key", SHARE_KEYS)
def test_every_share_is_checked_and_its_ends_are_accepted(key: str) -> None:
    # A share above 1 (or below 0) made the sampler's choice for every sample without a word.
    for bad in ("1.5", "-0.1"):
        with pytest.raises(ConfigError, match=re.escape(f"{key}: expected a share in [0, 1]")):
            load_config(None, [f"--{key}={bad}"])
    for end in (0.0, 1.0):
        assert _float_field(load_config(None, [f"--{key}={end}"]), key) == end


@pytest.mark.parametrize("key", NON_NEGATIVE_KEYS)
def test_every_count_rate_and_weight_refuses_a_negative_value(key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{key}: expected a number >= 0, got -1")):
        load_config(None, [f"--{key}=-1"])


@pytest.mark.parametrize("key", ["data.raw_scale", "data.gamma"])
def test_a_zero_scale_or_gamma_is_refused(key: str) -> None:
    # raw_scale 0 makes every frame 1x1; gamma 0 makes every linear-light average white.
    with pytest.raises(ConfigError, match=re.escape(f"{key}: expected a number > 0, got 0")):
        load_config(None, [f"--{key}=0"])


def test_a_gopro_only_mix_is_accepted() -> None:
    cfg = load_config(
        None, ["--data.raw_weight=0", "--data.photo_weight=0", "--data.gopro_weight=1"]
    )
    assert (cfg.data.raw_weight, cfg.data.photo_weight, cfg.data.gopro_weight) == (0, 0, 1)


def test_every_unknown_key_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["--loss.vggg=1", "--loss.ll1=2"])
    message = str(exc.value)
    assert message.startswith("unknown config key loss.ll1 (and loss.vggg); valid keys here: ")
    assert "vgg_weights" in message and "ssim" in message


def test_the_run_control_fields_change_neither_digest_nor_changes() -> None:
    # Each is spelt out (RUN_CONTROL_KEYS is what is under test): a resumed run with another
    # budget, folder or thread count is the same training run.
    cfg = load_config(None, ["--lr=0.002"])
    for override in (
        "--resume",
        "--max_minutes=5",
        "--stop_after_steps=10",
        "--out_dir=runs/other",
        "--threads=2",
    ):
        other = load_config(None, ["--lr=0.002", override])
        assert config_digest(other) == config_digest(cfg), override
        assert config_changes(config_to_dict(cfg), other) == [], override


def test_the_digest_is_the_sha256_of_the_canonical_json() -> None:
    # Manifests record it and export compares it with the one a checkpoint stored, maybe by
    # older code: the canonical form (sorted keys, no spaces) is the contract, not an accident.
    cfg = load_config(None, ["--lr=0.002", "--data.num_workers=2"])
    data = {k: v for k, v in config_to_dict(cfg).items() if k not in RUN_CONTROL_KEYS}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert config_digest(cfg) == hashlib.sha256(text.encode()).hexdigest()


def test_an_empty_curriculum_is_a_config_error_for_stage_at() -> None:
    with pytest.raises(ConfigError, match="stages: the curriculum needs at least one stage"):
        stage_at(TrainConfig(stages=[]), 0)


def test_an_empty_config_path_is_refused() -> None:
    # `--config "$CFG"` with CFG unset trained the paper's defaults into runs/train, for hours,
    # without a word.
    with pytest.raises(ConfigError, match="config path is empty"):
        load_config("")


def test_missing_data_is_one_line_on_stderr_and_exit_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        exit_missing_data("train", FileNotFoundError("no frames in /x/nowhere"))
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("train: no frames in /x/nowhere\n") and "../shared" in err


def test_parse_cli_turns_on_the_info_log() -> None:
    # The trainer reports its epochs at INFO: without this set-up a run printed nothing. In a
    # fresh interpreter, as pytest's own log handlers make logging.basicConfig do nothing here.
    script = (
        "import argparse, logging\n"
        "from training.config import parse_cli\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--config')\n"
        "parse_cli(p, ['--lr=0.5'])\n"
        "logging.getLogger('training.train').info('epoch 1 done')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=CONFIGS.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1 done" in proc.stderr
