"""Training configuration: dataclass defaults (the paper's), YAML files, ``--key=value`` overrides.

``load_config("training/configs/fast.yaml", ["--loss.vgg=0.1", "--out_dir=runs/x"])`` returns a
``TrainConfig``. Unknown keys and values of the wrong type are rejected with the exact key path.
The resolved config is saved as ``config.yaml`` in the run folder and inside every checkpoint;
``config_digest`` is the sha256 recorded in the weights manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class StageConfig:
    """One curriculum stage."""

    patch: int = 128  # square training patch side, px
    epochs: int = 12  # epochs spent in this stage
    batch: int = 4  # patches per optimiser step (per process under DDP)


def _paper_stages() -> list[StageConfig]:
    # The paper's curriculum: small patches first, then larger ones with fewer per batch.
    return [StageConfig(128, 12, 4), StageConfig(256, 20, 2), StageConfig(288, 5, 1)]


@dataclass
class DataConfig:
    """Where training data comes from and how blur, noise and patches are synthesised."""

    raw_dirs: list[str] = field(default_factory=list)  # folders of consecutive high-fps frames
    raw_train_range: list[int] = field(
        default_factory=lambda: [1, 239]
    )  # frame numbers for training windows
    raw_val_range: list[int] = field(
        default_factory=lambda: [240, 299]
    )  # held-out frames, validation only
    raw_windows: list[int] = field(
        default_factory=lambda: [7, 9, 11, 13]
    )  # odd window sizes averaged
    raw_scale: float = 1.0  # resize raw frames once at load (0.5: 720p -> 360p, blur halves)
    linear_fraction: float = 0.3  # share of raw averages made in linear light (GoPro blur_gamma)
    gamma: float = 2.2  # sRGB <-> linear exponent for the linear-light average
    photo_dirs: list[str] = field(default_factory=list)  # sharp photos for camera-shake synthesis
    exclude: list[str] = field(
        default_factory=list
    )  # globs of photos left out (e.g. found by the leakage guard)
    photo_max_side: int = 1024  # photos larger than this are downscaled once at load
    photo_scale: list[float] = field(
        default_factory=lambda: [1.0, 1.0]
    )  # random rescale of photo crops
    kernel_dir: str = ""  # folder of real blur kernels (Lai-style images); "" = trajectories only
    real_kernel_fraction: float = 0.0  # share of photo samples blurred with a real kernel
    psf_max_size: int = 31  # largest synthetic camera-shake PSF side, px
    # Where a synthetic PSF is centred: its centre of mass, or mid-exposure ("time"), the GoPro
    # convention the clip, the simulated camera and the evaluations follow.
    psf_centre: str = "mass"
    exposure: list[float] = field(
        default_factory=lambda: [0.5, 1.0]
    )  # fraction of the trajectory exposed
    # Share of photo samples filmed by a simulated moving camera and averaged over a raw window
    # (raw_windows, linear_fraction) instead of convolved with a shake PSF. The one raw clip
    # moves its camera only in its last frames (python -m training.data --motion-stats).
    camera_fraction: float = 0.0
    # Share of raw-clip windows re-filmed by the same simulated camera, frame k through its map k,
    # so the clip's real scene motion also comes with camera motion (hand-held video).
    raw_camera_fraction: float = 0.0
    camera_speed: list[float] = field(
        default_factory=lambda: [0.25, 3.0]
    )  # px per frame at 240 fps (held-out clip: median 1-1.6)
    camera_turn: float = 0.1  # largest roll, degrees per frame
    camera_zoom: float = 0.002  # largest relative change of scale per frame
    gopro_dir: str = ""  # GOPRO_Large root ({train,test}/<seq>/{blur,blur_gamma,sharp}); "" = none
    gopro_blur: str = "blur"  # which GoPro blurry set: blur | blur_gamma
    raw_weight: float = 0.7  # sampling weight of raw-frame temporal averages
    photo_weight: float = 0.3  # sampling weight of shake-synthesised photos
    gopro_weight: float = 0.0  # sampling weight of GoPro pairs
    noise_prob: float = 0.8  # probability a blurry patch gets sensor noise
    noise_sigma: list[float] = field(
        default_factory=lambda: [0.0, 0.02]
    )  # Gaussian read-noise std range
    poisson_prob: float = 0.3  # probability of shot noise on top
    poisson_peak: list[float] = field(
        default_factory=lambda: [200.0, 2000.0]
    )  # photons at white, range
    jpeg_prob: float = 0.5  # probability of a JPEG round trip
    jpeg_quality: list[int] = field(default_factory=lambda: [50, 95])  # JPEG quality range
    sharpness_threshold: float = (
        0.02  # min mean Sobel magnitude of the sharp patch (flat ones rejected)
    )
    # > 0: reject patches whose blurry input is already within this PSNR (dB) of the sharp one.
    # Most raw-frame windows of a hand-held clip barely move; without this the loss is dominated
    # by patches with nothing to deblur and the student learns next to nothing (measured).
    max_blur_psnr: float = 0.0
    # Share of samples shown with nothing to deblur: the input is the sharp crop itself (then the
    # webcam degradations). max_blur_psnr leaves only strongly blurred patches, so without this a
    # student never sees a sharp frame and "sharpens" the ones a call is mostly made of (measured
    # on the real frames the teacher leaves alone: TRAINING_LOG.md, cpu_*_still).
    still_fraction: float = 0.0
    # Rescale of the still photo samples' crops ([] = photo_scale). Above 1 they are upscaled, so
    # soft: a webcam face is soft without any motion, and a student shown only crisp still
    # samples sharpens such faces into halos (the portraits of TRAINING_LOG.md, cpu_fast_pscale).
    still_scale: list[float] = field(default_factory=list)
    # Share of photo samples whose picture is a random screen-like graphic instead
    # (training.data.render_graphic: flat saturated colour, text, rules): slides, posters and
    # shared screens, which the photos barely hold.
    graphics_fraction: float = 0.0
    max_tries: int = 10  # draws before a flat (or barely blurred) patch is accepted anyway
    augment: bool = True  # random flips and 90-degree rotations
    eval_dirs: list[str] = field(
        default_factory=list
    )  # evaluation images checked by the leakage guard
    leakage_check: bool = True  # hash every training and evaluation image; refuse overlap
    val_windows: list[int] = field(
        default_factory=lambda: [7, 11]
    )  # window sizes of the validation set
    val_count: int = 4  # validation centres per window size (and per averaging mode)
    val_crop: int = 256  # centre crop of validation frames, px (0 = whole frame)
    num_workers: int = 0  # DataLoader worker processes
    # Synthesise the raw-frame source on the training device (training.device_data) instead of
    # in the workers: on a GPU the workers could not keep up.
    raw_on_device: bool = False


@dataclass
class LossConfig:
    """Weight of every loss term (0 disables it) and their settings."""

    l1: float = 1.0  # pixel L1 to the sharp target
    charbonnier: float = 0.0  # > 0: Charbonnier epsilon instead of plain L1
    ssim: float = 0.0  # weight of 1 - SSIM
    ms_ssim: float = 0.0  # weight of 1 - MS-SSIM (fewer scales on small patches)
    edge: float = 0.0  # Sobel edge L1
    lab: float = 0.0  # LAB colour consistency on low-passed images
    fft: float = 0.0  # L1 between the images' 2-D FFTs (detail weighs as much as the mean)
    vgg: float = 0.0  # VGG perceptual
    vgg_weights: str = ""  # VGG state dict: the normalised VGG-19 or torchvision's VGG16 file
    vgg_layers: list[str] = field(
        default_factory=lambda: ["relu1_2", "relu2_2", "relu3_1"]
    )  # features compared
    distill: float = 0.0  # L1 to the teacher's output (patches that have one)
    feature: float = 0.0  # feature matching to the teacher's features (online teacher only)


# Said where a user chooses between them (train's and cache_teacher's --help): the measured
# difference lived only in the model card.
ONLINE_VS_CACHE = (
    "--teacher.mode=online runs the teacher every step, --teacher.mode=cache uses "
    "python -m training.cache_teacher's outputs: against the same CPU fine-tune of hq with the "
    "teacher off, online gained +0.23 dB plain, -0.28 linear light and +0.22 on real blur, the "
    'cache +0.25, -0.53 and +0.09 (weights/MODEL_CARD.md, Status: "It is the online teacher '
    'that helps, not a cache of it"; TRAINING_LOG.md, the thirty-seventh session).'
)


@dataclass
class TeacherConfig:
    """The frozen teacher and where its outputs come from."""

    name: str = "dmphn"  # teacher registry name: dmphn | restormer; "" = no teacher
    weights: str = ""  # teacher weights path (folder for dmphn, .pth for restormer)
    mode: str = "auto"  # auto (online on GPU, else cache if present) | online | cache | off
    cache_path: str = ""  # teacher cache file from python -m training.cache_teacher
    cache_fraction: float = 0.25  # share of each batch drawn from the cached patches
    cache_count: int = 256  # patches cache_teacher computes
    cache_patch: int = 256  # side of the cached patches, px
    cache_batch: int = 4  # teacher batch size inside cache_teacher
    # Cached patches where the teacher beats the blurry input by less than this (dB) are left out:
    # DMPHN amplifies webcam noise and JPEG blocks, and distilling that would teach the student to.
    cache_min_gain: float = 0.5
    # Teacher-bounded distillation: follow the teacher only on samples where its output is no
    # farther from the sharp target than the student's own. DMPHN is a plain-average GoPro model;
    # on linear-light blur the student trained on the targets comes close to it, and pulling it
    # towards the teacher there cost linear-light PSNR in every distilled run (TRAINING_LOG).
    bounded: bool = False


@dataclass
class TrainConfig:
    """Everything a run needs; the YAML files override these defaults (the paper's)."""

    student: str = "unet"  # student registry name (training.models.student)
    student_kwargs: dict[str, Any] = field(default_factory=dict)  # constructor overrides
    stages: list[StageConfig] = field(default_factory=_paper_stages)  # curriculum
    steps_per_epoch: int = 1000  # optimiser steps per epoch (synthetic data is endless)
    lr: float = 5e-5  # Adam learning rate (peak)
    min_lr: float = 1e-7  # cosine floor
    warmup_steps: int = 0  # linear warm-up steps
    weight_decay: float = 0.0  # Adam weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam betas
    scheduler: str = "cosine"  # cosine | plateau | none
    plateau_factor: float = 0.5  # ReduceLROnPlateau factor (on validation PSNR)
    # ReduceLROnPlateau patience, in validations (one every val_every epochs), not epochs
    plateau_patience: int = 3
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    # > 0: an exponential moving average of the student's weights (this decay per step) is what
    # validation measures and what checkpoints keep as "model" (the raw weights: "model_raw").
    ema: float = 0.0
    # Stop after this many validations (one every val_every epochs) without a better validation
    # PSNR (0 = off): with val_every > 1, about val_every times as many epochs.
    early_stop: int = 0
    amp: bool = True  # mixed precision + GradScaler (CUDA only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = leave the default)
    seed: int = 0  # seed of everything (data samples are a pure function of it)
    out_dir: str = "runs/train"  # run folder: last.pt, best.pt, config.yaml, log.csv, curves.png
    ckpt_every: int = 1  # write last.pt every N epochs (best.pt whenever validation improves)
    val_every: int = 1  # validate every N epochs
    resume: bool = False  # continue from out_dir/last.pt
    # Fine-tuning: start the student from this checkpoint's weights (best.pt/last.pt of another
    # run); optimiser, schedule and epochs start fresh. "" = from scratch. Ignored with --resume.
    init_from: str = ""
    max_minutes: float = (
        0.0  # time budget of this invocation; stops cleanly with a checkpoint (0 = none)
    )
    stop_after_steps: int = (
        0  # stop (resumably) after this many steps in this invocation (0 = none)
    )
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


# --------------------------------------------------------------------------------------------
# Type-checked construction from dicts
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; build nested dataclasses; ints pass as floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__} {value!r}"
            )
        return _from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected None, got {type(value).__name__} {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads "5e-3" (no dot) as a string; take it as the number it means.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        if not math.isfinite(number):
            # NaN fails every comparison: the range checks passed it, and a filter given it
            # (data.max_blur_psnr, teacher.cache_min_gain) refused every patch without a word.
            # An infinity passes the one-sided range checks (lr >= 0, loss weights >= 0) and
            # turns the weights into NaN at the first step.
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def _from_dict(cls: type, data: dict[str, Any], *, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}"
            + (f" (and {', '.join(prefix + u for u in unknown[1:])})" if len(unknown) > 1 else "")
            + f"; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


_CHOICES = {
    "scheduler": ("cosine", "plateau", "none"),
    "teacher.mode": ("auto", "online", "cache", "off"),
    "data.gopro_blur": ("blur", "blur_gamma"),
    "data.psf_centre": ("mass", "time"),
}


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Check values a type cannot express (choices, ranges, odd windows); returns ``cfg``."""
    for key, choices in _CHOICES.items():
        obj = _get(cfg, key)
        if obj not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {obj!r}")
    if not cfg.stages:
        raise ConfigError("stages: the curriculum needs at least one stage")
    for i, s in enumerate(cfg.stages):
        if s.patch < 16 or s.epochs < 0 or s.batch < 1:
            raise ConfigError(f"stages[{i}]: need patch >= 16, epochs >= 0, batch >= 1, got {s}")
    for key in ("raw_windows", "val_windows"):
        if not getattr(cfg.data, key):
            # [] raw_windows failed at the first sample with a message about something else;
            # [] val_windows validated on synthetic samples of the training sources instead.
            raise ConfigError(f"data.{key}: expected at least one window size, got []")
    for w in cfg.data.raw_windows + cfg.data.val_windows:
        if w < 1 or w % 2 == 0:
            raise ConfigError(f"data windows must be odd and positive, got {w}")
    if not _DEVICE.fullmatch(cfg.device):
        # torch's own error for a misspelt device came after the earlier run was moved aside.
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if (
        cfg.teacher.mode in ("online", "cache")
        and not cfg.teacher.name
        and (cfg.loss.distill > 0 or cfg.loss.feature > 0)
    ):
        # An empty name means no teacher: the terms were turned off without a word. mode=auto
        # promises only what the machine allows and says so when it falls back; these modes
        # ask for the teacher by name.
        raise ConfigError(
            f"teacher.mode={cfg.teacher.mode} with loss.distill or loss.feature > 0 needs "
            "teacher.name (dmphn | restormer); set those weights to 0 or teacher.mode=off "
            "to train without a teacher"
        )
    for key in (
        "raw_train_range",
        "raw_val_range",
        "noise_sigma",
        "poisson_peak",
        "jpeg_quality",
        "exposure",
        "photo_scale",
        "camera_speed",
    ):
        v = getattr(cfg.data, key)
        if len(v) != 2 or v[0] > v[1]:
            raise ConfigError(f"data.{key}: expected [low, high] with low <= high, got {v}")
    if not 0.0 <= cfg.data.camera_fraction <= 1.0 or cfg.data.camera_speed[0] < 0:
        raise ConfigError(
            "data.camera_fraction: expected a share in [0, 1] and data.camera_speed >= 0, got "
            f"{cfg.data.camera_fraction} and {cfg.data.camera_speed}"
        )
    if not 0.0 <= cfg.data.raw_camera_fraction <= 1.0:
        raise ConfigError(
            f"data.raw_camera_fraction: expected a share in [0, 1], got {cfg.data.raw_camera_fraction}"
        )
    # Checked here, not at the end of the first epoch, where they are divisors (and an hour in).
    for key in ("steps_per_epoch", "val_every", "ckpt_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: expected >= 1, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"ema: expected a decay in [0, 1) (0 = off), got {cfg.ema}")
    _check_ranges(cfg)
    if cfg.data.psf_max_size < 5:
        # random_psf draws sizes from 5 px up: a smaller cap gave 5 px PSFs without a word.
        raise ConfigError(
            "data.psf_max_size: expected >= 5 (the smallest synthetic PSF), "
            f"got {cfg.data.psf_max_size}"
        )
    if cfg.data.raw_on_device and cfg.data.raw_camera_fraction > 0:
        # The device sampler has no simulated camera: the re-filmed share would silently vanish.
        raise ConfigError(
            "data.raw_camera_fraction > 0 needs the raw source in the data workers: "
            "set data.raw_on_device=false or data.raw_camera_fraction=0"
        )
    return cfg


# Shares and probabilities in [0, 1]; values that must be > 0 or >= 0 (a zero scale makes every
# frame 1x1, a zero photo scale divides by zero later, a negative weight breaks the sampler).
_SHARES = (
    "data.linear_fraction",
    "data.real_kernel_fraction",
    "data.noise_prob",
    "data.poisson_prob",
    "data.jpeg_prob",
    "data.still_fraction",
    "data.graphics_fraction",
    "teacher.cache_fraction",
)
_POSITIVE = ("data.raw_scale", "data.gamma")
_NON_NEGATIVE = (
    "lr",
    "min_lr",
    "weight_decay",
    "grad_clip",
    "warmup_steps",
    "max_minutes",
    "stop_after_steps",
    "early_stop",  # a negative count would stop after the first validation, silently
    # numpy refuses a negative seed only when the first sample is drawn, after the data has
    # been decoded (minutes on the real data).
    "seed",
    "plateau_patience",  # a negative one lowered the rate at every validation, better or not
    "threads",  # a negative count was ignored without a word
    "data.raw_weight",
    "data.photo_weight",
    "data.gopro_weight",
    "data.photo_max_side",
    "data.sharpness_threshold",
    "data.camera_turn",
    "data.camera_zoom",
    "data.val_count",
    "data.val_crop",  # a negative crop made empty validation images, an error an epoch in
    "data.num_workers",
    # cache_teacher read a negative count as "nothing to do" and wrote an empty cache, moving
    # aside the one there when it had other settings.
    "teacher.cache_count",
    # A term (or Charbonnier's epsilon) is on where > 0: a negative or NaN one turned it off
    # without a word.
    "loss.l1",
    "loss.charbonnier",
    "loss.ssim",
    "loss.ms_ssim",
    "loss.edge",
    "loss.lab",
    "loss.fft",
    "loss.vgg",
    "loss.distill",
    "loss.feature",
)


def _get(cfg: TrainConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _check_ranges(cfg: TrainConfig) -> None:
    """Ranges of the numeric settings, so that a typo fails here and not as odd data an hour in."""
    for keys, ok, want in (
        (_SHARES, lambda v: 0.0 <= v <= 1.0, "a share in [0, 1]"),
        (_POSITIVE, lambda v: v > 0, "a number > 0"),
        (_NON_NEGATIVE, lambda v: v >= 0, "a number >= 0"),
    ):
        for key in keys:
            v = _get(cfg, key)
            if not math.isfinite(v):
                raise ConfigError(f"{key}: expected a finite number, got {v}")
            if not ok(v):
                raise ConfigError(f"{key}: expected {want}, got {v}")
    d = cfg.data
    if d.raw_weight + d.photo_weight + d.gopro_weight <= 0:
        raise ConfigError("data.raw_weight + photo_weight + gopro_weight: at least one must be > 0")
    if not 0 <= d.jpeg_quality[0] <= d.jpeg_quality[1] <= 100:
        raise ConfigError(
            f"data.jpeg_quality: expected [low, high] within [0, 100], got {d.jpeg_quality}"
        )
    for key in ("photo_scale", "poisson_peak", "exposure"):
        v = getattr(d, key)
        if not all(math.isfinite(x) and x > 0 for x in v):
            raise ConfigError(f"data.{key}: expected numbers > 0, got {v}")
    if d.still_scale and (
        len(d.still_scale) != 2
        or not all(math.isfinite(x) and x > 0 for x in d.still_scale)
        or d.still_scale[0] > d.still_scale[1]
    ):
        raise ConfigError(
            f"data.still_scale: expected [] or [low, high] with 0 < low <= high, got {d.still_scale}"
        )
    if d.exposure[1] > 1.0:
        raise ConfigError(
            f"data.exposure: a fraction of the trajectory, at most 1, got {d.exposure}"
        )
    if d.noise_sigma[0] < 0:
        raise ConfigError(f"data.noise_sigma: expected >= 0, got {d.noise_sigma}")
    # Read only by cache_teacher, after the teacher has loaded and the data is decoded: a zero
    # batch failed there on an empty stack and a zero patch inside OpenCV, neither naming the key.
    if cfg.teacher.cache_batch < 1:
        raise ConfigError(f"teacher.cache_batch: expected >= 1, got {cfg.teacher.cache_batch}")
    if cfg.teacher.cache_patch < 16:
        raise ConfigError(
            f"teacher.cache_patch: expected >= 16 (as stages[].patch), got {cfg.teacher.cache_patch}"
        )
    if not 0.0 < cfg.plateau_factor < 1.0:
        raise ConfigError(f"plateau_factor: expected a factor in (0, 1), got {cfg.plateau_factor}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas: expected two numbers in [0, 1), got {cfg.betas}")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from a (possibly partial) nested dict; missing keys keep their defaults."""
    return validate_config(_from_dict(TrainConfig, data or {}))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# Fields that steer one invocation, not what is trained: a resumed run keeps its digest.
RUN_CONTROL_KEYS = ("resume", "max_minutes", "stop_after_steps", "out_dir", "threads")


def config_digest(cfg: TrainConfig) -> str:
    """sha256 of the canonical JSON of the resolved config (recorded in the weights manifest),
    leaving out the run-control fields ``RUN_CONTROL_KEYS``."""
    data = {k: v for k, v in config_to_dict(cfg).items() if k not in RUN_CONTROL_KEYS}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_changes(saved: Mapping[str, Any], cfg: TrainConfig) -> list[str]:
    """Key paths (``lr``, ``loss.fft``, ``stages[1].batch``) where ``cfg`` differs from a config
    saved earlier (a checkpoint's ``config``), run-control fields ``RUN_CONTROL_KEYS`` left out.

    A key missing from ``saved`` was added to the code after it was saved; new keys default to
    the old behaviour, so one at its default is no change. A key ``saved`` has that this code
    does not know was removed since: a change, as nothing says what the old value did."""
    current = config_to_dict(cfg)
    for key in RUN_CONTROL_KEYS:
        current.pop(key, None)
    saved = {k: v for k, v in saved.items() if k not in RUN_CONTROL_KEYS}
    return _changes(TrainConfig, saved, current, "")


def _changes(
    cls: type, saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str
) -> list[str]:
    hints = typing.get_type_hints(cls)
    # Defaults of the class itself: a stage missing a key gets StageConfig's default when
    # loaded, not the paper's curriculum's.
    defaults = config_to_dict(cls())
    out: list[str] = []
    for k in sorted(set(saved) | set(current), key=str):
        key = prefix + str(k)
        if k not in current:
            out.append(key)
            continue
        now = current[k]
        if k not in saved:
            if now != defaults[k]:
                out.append(key)
            continue
        was, tp = saved[k], hints[k]
        (item_tp,) = typing.get_args(tp)[:1] or (None,)
        if dataclasses.is_dataclass(tp) and isinstance(was, Mapping):
            out += _changes(tp, was, now, key + ".")
        elif (
            typing.get_origin(tp) is list
            and dataclasses.is_dataclass(item_tp)
            and isinstance(was, list)
            and len(was) == len(now)
            and all(isinstance(w, Mapping) for w in was)
        ):
            for i, (w, n) in enumerate(zip(was, now, strict=True)):
                out += _changes(item_tp, w, n, f"{key}[{i}].")
        elif was != now:
            out.append(key)
    return out


# --------------------------------------------------------------------------------------------
# YAML + overrides
# --------------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans, which
    turned ``--teacher.mode=off`` into ``False`` and a type error.

    A key given twice in one mapping is an error, as YAML 1.2 says: PyYAML kept the last one, so
    a second ``data:`` section in a config replaced the first, whose settings went back to their
    defaults without a word. Keys a merge (``<<: *base``) brings in may still be overridden."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()  # ids of the mapping nodes already checked

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Every mapping passes here before its merged keys are spliced in (and again, as a
        # merge's source, once they may be): check each one the first time.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: construct_mapping says so itself
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
        super().flatten_mapping(node)


_YamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--loss.vgg=0.1", "--stages=[...]", "--resume"]`` -> nested dict.

    Values are parsed as YAML (``0.1``, ``true``, ``[1, 2]``, ``{a: 1}``); a bare ``--flag`` means
    ``true``. Dots separate nested keys.
    """
    out: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key=value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
            try:
                value = _yaml_load(raw) if raw != "" else ""
            except yaml.YAMLError as exc:
                raise ConfigError(f"cannot parse value of --{key}: {raw!r} ({exc})") from None
            if value is None and raw.strip().lower() not in ("null", "~", "none"):
                value = raw
        else:
            key, value = body, True
        if not key:
            raise ConfigError(f"empty key in {arg!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--{key}: {part} is both a value and a section")
        last = parts[-1]
        if (
            isinstance(value, dict)
            and isinstance(node.get(last), dict)
            and last != "student_kwargs"
        ):
            # A section after some of its keys (--data.num_workers=2 --data={photo_weight: 1})
            # replaced them without a word; it merges, as it does into the YAML's section.
            value = _merge(node[last], value)
        node[last] = value
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "student_kwargs":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- ``--key=value`` overrides, type-checked."""
    data: dict[str, Any] = {}
    if isinstance(path, str) and not path:
        # `--config "$CFG"` with CFG unset trained the defaults, for hours, without a word.
        raise ConfigError("config path is empty (leave --config out for the defaults)")
    if path:
        text = Path(path).read_text(encoding="utf-8")
        try:
            loaded = _yaml_load(text)
        except yaml.YAMLError as exc:
            # A usage error with the file's name, as a bad override is, not a traceback.
            raise ConfigError(f"cannot parse {path}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    return config_from_dict(data)


def parse_cli(parser: Any, argv: list[str] | None = None) -> tuple[Any, TrainConfig]:
    """``(args, cfg)`` for a command line: ``parser``'s own options (it must define
    ``--config``), the rest as ``--key=value`` overrides of that config. A bad config or
    override is a usage error (``parser.error``, exit 2). Sets up the INFO log format too."""
    import logging

    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args, load_config(args.config, rest)
    except ConfigError as exc:
        parser.error(str(exc))  # exits
    except OSError as exc:
        parser.error(f"cannot read config {args.config}: {exc.strerror or exc}")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def total_epochs(cfg: TrainConfig) -> int:
    return sum(s.epochs for s in cfg.stages)


def stage_at(cfg: TrainConfig, epoch: int) -> tuple[int, StageConfig]:
    """The curriculum stage ``(index, stage)`` of 0-based ``epoch`` (pure function; past the end,
    the last stage)."""
    if not cfg.stages:
        raise ConfigError("stages: the curriculum needs at least one stage")
    start = 0
    for i, s in enumerate(cfg.stages):
        if epoch < start + s.epochs:
            return i, s
        start += s.epochs
    return len(cfg.stages) - 1, cfg.stages[-1]


def exit_missing_data(prog: str, exc: BaseException) -> NoReturn:
    """Report data or weights missing at start-up in one line and exit with status 2: a setup
    problem (no ``../shared`` beside the clone), not a crash worth a traceback."""
    print(
        f"{prog}: {exc}\n(the configs read the research data from ../shared beside the "
        "repository; point data.* or teacher.weights elsewhere with --key=value)",
        file=sys.stderr,
    )
    raise SystemExit(2) from None


def exit_leakage(prog: str, exc: BaseException) -> NoReturn:
    """Report the leakage guard's refusal at start-up (the data's overlap, not a crash) without a
    traceback, and exit with status 2 as missing data does."""
    print(f"{prog}: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
