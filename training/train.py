"""Distil a deblurring student from a frozen teacher.

    python -m training.train --config training/configs/fast.yaml [--key=value ...] [--resume]
    torchrun --nproc_per_node=2 -m training.train --config ... (DDP: gloo on CPU, nccl on CUDA)

Reads top to bottom: config, data, teacher (frozen), student, losses, optimiser, loop. The
curriculum (patch size, batch) and the cosine learning rate are pure functions of the epoch and
step; every sample is a pure function of ``(seed, rank, sample index)``; so a checkpoint holding
the weights, optimiser, scheduler, scaler, RNG states and the position resumes exactly (with
as many processes as wrote it: a resume under another count is refused).

The run folder (``--out_dir``) holds ``last.pt``, ``best.pt``, ``config.yaml``, ``log.csv`` and
``curves.png``; a fresh run (no ``--resume``) first moves an earlier run's into ``previous_N``
there. ``--max_minutes`` stops cleanly with a resumable checkpoint, and so does Ctrl-C
(SIGINT) or SIGTERM (``timeout``, a watchdog): the step in hand finishes, ``last.pt`` is saved
and the process exits with 130 or 143 (128 + the signal); a second one ends it at once, unsaved.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import errno
import itertools
import logging
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from training.config import (
    ONLINE_VS_CACHE,
    ConfigError,
    TrainConfig,
    config_changes,
    config_digest,
    config_to_dict,
    parse_cli,
    save_config,
    stage_at,
    total_epochs,
)
from training.data import (
    DeblurDataset,
    IndexBatches,
    LeakageError,
    RawSequence,
    SkipCounter,
    SynthParams,
    TeacherCache,
    check_leakage,
    content_hash,
    file_signatures,
    gopro_pairs,
    image_signature,
    list_frames,
    list_images,
    load_image_u8,
    load_kernels,
    load_photos,
    raw_validation_pairs,
)
from training.losses import DistillLoss

log = logging.getLogger("training.train")

# The fallback validation set's sample stream (the dataset's "rank" slot): never a training
# rank (0..world-1) nor the teacher cache's stream, so validation never repeats a training draw.
VAL_STREAM = 104_729
WARM_STEPS = 10  # steps left out of the logged throughput
# Config keys that define the validation set (build_data): a resume that changes one compares
# PSNRs of different sets unless the best score so far starts again.
VALIDATION_KEYS = frozenset(
    f"data.{k}"
    for k in ("raw_dirs", "raw_val_range", "raw_scale", "val_windows", "val_count", "val_crop",
              "gamma")
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Pure functions of the schedule
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at optimiser ``step``: linear warm-up, then cosine to ``min_lr``
    over all epochs (``scheduler: cosine``) or constant (``plateau``/``none``)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.scheduler != "cosine":
        return 1.0
    total = max(1, total_epochs(cfg) * cfg.steps_per_epoch - cfg.warmup_steps)
    t = min(1.0, max(0.0, (step - cfg.warmup_steps) / total))
    # At most the peak: a min_lr above lr (a fine-tune's --lr under its config's floor) made
    # the "decay" climb to min_lr. ReduceLROnPlateau never raises a rate to its min_lr either.
    floor = min(1.0, cfg.min_lr / cfg.lr) if cfg.lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


# --------------------------------------------------------------------------------------------
# Data assembly
# --------------------------------------------------------------------------------------------


def teacher_gain_mask(
    teacher_out: torch.Tensor, blur: torch.Tensor, sharp: torch.Tensor, min_gain_db: float
) -> torch.Tensor:
    """``(B,)`` bool: where the teacher's output ``(B, 3, H, W)`` is finite and beats the blurry
    input by at least ``min_gain_db`` PSNR against the sharp target. Distillation only follows
    the teacher there (the same rule the teacher cache applies when it is loaded): a
    GoPro-trained teacher amplifies webcam noise and JPEG blocks, and the student should not
    learn that."""
    eps = 1e-10
    mse_t = (teacher_out.float().clamp(0, 1) - sharp.float()).pow(2).flatten(1).mean(1)
    mse_b = (blur.float() - sharp.float()).pow(2).flatten(1).mean(1)
    gain_db = 10.0 * torch.log10((mse_b + eps) / (mse_t + eps))
    # The clamp turns an fp16 overflow (+-inf) into 0 or 1, which can pass the gain test, and
    # distill_loss then becomes inf: such an output is never a teacher worth following.
    finite = torch.isfinite(teacher_out).flatten(1).all(1)
    return (gain_db >= min_gain_db) & finite


def synth_params(cfg: TrainConfig) -> SynthParams:
    d = cfg.data
    return SynthParams(
        raw_windows=tuple(d.raw_windows),
        linear_fraction=d.linear_fraction,
        gamma=d.gamma,
        psf_max_size=d.psf_max_size,
        exposure=(d.exposure[0], d.exposure[1]),
        camera_fraction=d.camera_fraction,
        raw_camera_fraction=d.raw_camera_fraction,
        camera_speed=(d.camera_speed[0], d.camera_speed[1]),
        camera_turn=d.camera_turn,
        camera_zoom=d.camera_zoom,
        real_kernel_fraction=d.real_kernel_fraction,
        psf_centre=d.psf_centre,
        photo_scale=(d.photo_scale[0], d.photo_scale[1]),
        noise_prob=d.noise_prob,
        noise_sigma=(d.noise_sigma[0], d.noise_sigma[1]),
        poisson_prob=d.poisson_prob,
        poisson_peak=(d.poisson_peak[0], d.poisson_peak[1]),
        jpeg_prob=d.jpeg_prob,
        jpeg_quality=(d.jpeg_quality[0], d.jpeg_quality[1]),
        sharpness_threshold=d.sharpness_threshold,
        max_blur_psnr=d.max_blur_psnr,
        still_fraction=d.still_fraction,
        still_scale=(d.still_scale[0], d.still_scale[1]) if d.still_scale else None,
        graphics_fraction=d.graphics_fraction,
        max_tries=d.max_tries,
        augment=d.augment,
    )


def build_data(
    cfg: TrainConfig, *, rank: int = 0, teacher_cache: TeacherCache | None = None
) -> tuple[DeblurDataset, list[tuple[np.ndarray, np.ndarray, str]], SkipCounter]:
    """Decode every source once, run the leakage guard, and build the training stream and the
    fixed validation set ``[(blurry, sharp, name)]`` (float32 ``(H, W, 3)``)."""
    d = cfg.data
    skips = SkipCounter()
    lo, hi = d.raw_train_range
    vlo, vhi = d.raw_val_range
    if d.raw_dirs and not (hi < vlo or vhi < lo):
        raise ConfigError(
            f"data.raw_train_range {d.raw_train_range} overlaps data.raw_val_range {d.raw_val_range}"
        )
    train_hashes: dict[str, str] = {}
    eval_hashes: dict[str, str] = {}
    raw, raw_val = [], []
    for folder in d.raw_dirs:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"data.raw_dirs: no folder {folder}")
        try:
            # A gap in the numbering, or an image without a number among the frames (see
            # list_frames): a usage error naming the key, not a traceback.
            list_frames(folder)
        except ValueError as exc:
            raise ConfigError(f"data.raw_dirs: {exc}") from exc
        raw.append(
            RawSequence.load(
                folder, first=lo, last=hi, scale=d.raw_scale, skips=skips, hashes=train_hashes
            )
        )
        raw_val.append(
            RawSequence.load(
                folder, first=vlo, last=vhi, scale=d.raw_scale, skips=skips, hashes=eval_hashes
            )
        )
    if raw and d.raw_weight > 0 and not any(s.windows(w) for s in raw for w in d.raw_windows):
        # Found only when the first raw sample was drawn: a ValueError traceback from the
        # sampler (an empty folder, a data.raw_train_range past its last frame).
        raise ConfigError(
            f"data.raw_dirs: no {min(d.raw_windows)} consecutive frames within "
            f"data.raw_train_range {list(d.raw_train_range)} in any folder "
            f"({sum(len(s.frames) for s in raw)} frames there), the shortest of "
            f"data.raw_windows {list(d.raw_windows)}"
        )
    photos, photo_paths = load_photos(
        d.photo_dirs, max_side=d.photo_max_side, skips=skips, exclude=d.exclude, hashes=train_hashes
    )
    for folder in d.photo_dirs:
        if not Path(folder).exists():
            raise FileNotFoundError(f"data.photo_dirs: no folder {folder}")
    if d.kernel_dir and d.leakage_check:
        # Lai's benchmark is its sharp images blurred by its kernels: blurring photos with an
        # evaluation set's kernels trains on half of what it measures.
        kernel_dir = Path(d.kernel_dir).resolve()
        for folder in d.eval_dirs:
            if kernel_dir.is_relative_to(Path(folder).resolve()):
                raise LeakageError(
                    f"data.kernel_dir {d.kernel_dir} lies inside data.eval_dirs folder {folder}: "
                    "training on an evaluation benchmark's blur kernels; refusing to train"
                )
    if d.kernel_dir and not Path(d.kernel_dir).is_dir():
        # load_kernels finds no images in a missing folder: a mistyped path trained on
        # trajectories alone, real_kernel_fraction ignored without a word.
        raise FileNotFoundError(f"data.kernel_dir: no folder {d.kernel_dir}")
    kernels = load_kernels(d.kernel_dir) if d.kernel_dir else []
    if d.kernel_dir and not kernels and d.real_kernel_fraction > 0:
        log.warning(
            "data.kernel_dir: no readable kernel images in %s; photo blur uses trajectories only",
            d.kernel_dir,
        )
    gopro = []
    if d.gopro_dir:
        gopro = gopro_pairs(d.gopro_dir, "train", blur=d.gopro_blur)
        # GoPro's training split holds whole sequences, held-out raw frames included (the raw
        # clip GOPR0477_11_00 is one of them): a sequence named like a raw folder goes.
        # Case-insensitively: a clip copied to a case-insensitive disk may change its case.
        held_out = {Path(folder).name.casefold() for folder in d.raw_dirs}
        dropped = [bp for bp, _ in gopro if bp.parent.parent.name.casefold() in held_out]
        if dropped:
            gopro = [
                (bp, sp) for bp, sp in gopro if bp.parent.parent.name.casefold() not in held_out
            ]
            log.warning(
                "GoPro training pairs: %d of sequence(s) %s left out, their frames %d-%d are "
                "held out for validation",
                len(dropped),
                ", ".join(sorted({bp.parent.parent.name for bp in dropped})),
                vlo,
                vhi,
            )
        test_dir = Path(d.gopro_dir) / "test"
        if test_dir.is_dir() and d.leakage_check:
            # A sequence is one video: its frames in train/ are neighbours of, and nearly the same
            # pictures as, its frames in test/, so a sequence in both splits leaks the test set.
            train_dir = Path(d.gopro_dir) / "train"
            train_seqs = {p.name.casefold(): p.name for p in train_dir.iterdir() if p.is_dir()}
            both = sorted(
                f"{train_seqs[p.name.casefold()]} (test/{p.name})"
                for p in test_dir.iterdir()
                if p.is_dir() and p.name.casefold() in train_seqs
            )
            if both:
                raise LeakageError(
                    f"GoPro sequence(s) in both {d.gopro_dir}/train and test: {', '.join(both)}; "
                    "refusing to train"
                )
        # Lazily decoded GoPro images are hashed by their file bytes (decoding thousands of 720p
        # PNGs only to hash them would cost minutes; the near-duplicate check below decodes them
        # where there are evaluation images to compare them with); evaluation images get both.
        for bp, sp in gopro:
            for p in (bp, sp):
                train_hashes[str(p)] = _file_hash(p)
        if test_dir.is_dir():
            for p in list_images(test_dir):
                eval_hashes[str(p)] = _file_hash(p)
    eval_signatures: dict[str, np.ndarray] = {}
    if d.leakage_check:
        # Held-out raw frames are evaluation images too: a JPEG or resized copy of one among the
        # photos would train on what validation measures, and its pixel hash differs.
        for seq in raw_val:
            for p, frame in zip(seq.paths, seq.frames, strict=True):
                eval_signatures[str(p)] = image_signature(frame)
    for folder in d.eval_dirs:
        # A mistyped folder would otherwise turn the guard off without a word.
        if not Path(folder).exists():
            raise FileNotFoundError(f"data.eval_dirs: no folder or file {folder}")
        paths = list_images(folder)
        if not paths:
            log.warning("data.eval_dirs: no images in %s, nothing to guard there", folder)
        for p in paths:
            img = load_image_u8(p)
            if img is None:
                skips.corrupt_files.append(str(p))
                continue
            eval_hashes[str(p)] = content_hash(img)
            if d.leakage_check:
                eval_signatures[str(p)] = image_signature(img)
            if gopro:
                eval_hashes[f"{p} (file)"] = _file_hash(p)
    if d.leakage_check:
        # Exact hashes miss a photo that is a slightly cropped or rescaled copy of an evaluation
        # image (Lai's sharp set holds such crops of Urban100 photos): thumbnails catch those.
        train_signatures = {
            str(p): image_signature(img) for p, img in zip(photo_paths, photos, strict=True)
        }
        if gopro and eval_signatures:
            # GoPro's frames are hashed by their bytes above: a re-encoded, resized or cropped
            # copy of an evaluation image (a held-out raw frame) among them would pass. Their
            # test split stays out of this comparison: some of its sequences are other stretches
            # of training sequences' recordings (same GOPRxxxx), which the crop search may match.
            # Decoding costs ~10 ms a 720p PNG and the check ~20 ms a frame against ~200
            # evaluation images on 2 cores: minutes for all of GoPro's 4206 training frames.
            log.info("leakage guard: decoding %d GoPro frames to compare", 2 * len(gopro))
            train_signatures.update(file_signatures(p for pair in gopro for p in pair))
        check_leakage(
            train_hashes,
            eval_hashes,
            train_signatures=train_signatures,
            eval_signatures=eval_signatures,
        )
    sources = dict(
        raw=raw,
        photos=photos,
        gopro=gopro,
        kernels=kernels,
        weights=(d.raw_weight, d.photo_weight, d.gopro_weight),
        params=synth_params(cfg),
    )
    try:
        dataset = DeblurDataset(
            **sources,
            patch=cfg.stages[0].patch,
            seed=cfg.seed,
            rank=rank,
            teacher_cache=teacher_cache,
            cache_fraction=cfg.teacher.cache_fraction,
        )
    except ValueError as exc:  # no source to draw from (empty folders): a usage error
        raise ConfigError(f"data: {exc}") from None
    val: list[tuple[np.ndarray, np.ndarray, str]] = []
    for seq in raw_val:
        val += raw_validation_pairs(
            seq, sizes=d.val_windows, count=d.val_count, crop=d.val_crop, gamma=d.gamma
        )
    if not val:
        # No held-out frames: a fixed synthetic set from a stream training never draws from.
        log.warning(
            "no held-out raw frames: validating on fixed synthetic samples of the training sources"
        )
        vds = DeblurDataset(
            **sources,
            patch=d.val_crop or 256,
            seed=cfg.seed,
            rank=VAL_STREAM,
        )
        for i in range(max(4, 2 * d.val_count)):
            item = vds[i]
            val.append(
                (
                    item["blur"].permute(1, 2, 0).numpy(),
                    item["sharp"].permute(1, 2, 0).numpy(),
                    f"synthetic_{i}",
                )
            )
    log.info(
        "data: %d raw sequences (%d frames), %d photos, %d kernels, %d GoPro pairs; %d validation "
        "images; %d training / %d evaluation images hashed, no overlap; %d unreadable files skipped",
        len(raw),
        sum(len(s.frames) for s in raw),
        len(photos),
        len(kernels),
        len(gopro),
        len(val),
        len(train_hashes),
        len(eval_hashes),
        len(skips.corrupt_files),
    )
    return dataset, val, skips


def _file_hash(path: Path) -> str:
    import hashlib

    return "file:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d * ema + (1 - d) * model``; ``d`` ramps up as ``(1 + step) / (10 + step)`` so the
    first steps of a fresh run are not averaged with the initial weights for long."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _device_share(batch: int, share: float) -> int:
    """How many of ``batch`` samples the device sampler makes for a source ``share`` in [0, 1]:
    the nearest count, but never all or none of a batch of two or more unless the share is."""
    if share <= 0:
        return 0
    if share >= 1:
        return batch
    n = round(batch * share)
    return min(batch - 1, max(1, n)) if batch >= 2 else n


def _with_device_raw(
    batch: dict[str, Any], raw: tuple[torch.Tensor, torch.Tensor, int], device: torch.device
) -> dict[str, Any]:
    """Append device-made raw samples to a worker batch (which may be empty)."""
    blur, sharp, rejected = raw
    n = blur.shape[0]
    extra = {
        "blur": blur,
        "sharp": sharp,
        "teacher": torch.zeros_like(blur),
        "has_teacher": torch.zeros(n, dtype=torch.bool, device=device),
        "source": torch.zeros(n, dtype=torch.long, device=device),  # 0 = raw
    }
    if not batch:
        return {**extra, "rejected": torch.tensor([rejected], device=device)}
    out = {k: torch.cat([batch[k].to(device, non_blocking=True), v]) for k, v in extra.items()}
    out["rejected"] = torch.cat(
        [batch["rejected"].to(device), torch.tensor([rejected], device=device)]
    )
    return out


def _apply_optimiser_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: TrainConfig,
    global_step: int,
    saved_lr: float | None = None,
) -> None:
    """After a resume: the optimiser and schedule settings of ``cfg``, not the checkpoint's.

    Loading their states brings back the saved rate, betas, weight decay and plateau settings,
    while ``lr_factor`` reads ``cfg``: a run resumed with another ``--lr`` took the old peak with
    the new floor (``min_lr / lr``) and ended at neither rate, though its config.yaml and the
    resume warning said the new one. The rate is re-derived at ``global_step``, which is what
    the scheduler held when the settings did not change. On ``plateau`` the rate reached is
    scaled by ``cfg.lr / saved_lr`` (the checkpoint's ``lr``): its reductions so far are kept,
    and the new ``--lr`` counts as it does on cosine (it was ignored after the warm-up).
    """
    for group in optimizer.param_groups:
        group["betas"] = (cfg.betas[0], cfg.betas[1])
        group["weight_decay"] = cfg.weight_decay
    if cfg.scheduler == "plateau":
        # Its rate is its state (reductions so far); the limits it applies are the config's.
        scheduler.min_lrs = [cfg.min_lr] * len(optimizer.param_groups)
        scheduler.factor = cfg.plateau_factor
        scheduler.patience = cfg.plateau_patience
        if saved_lr and saved_lr > 0 and saved_lr != cfg.lr:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * cfg.lr / saved_lr, cfg.min_lr)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        return
    scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * lr_factor(global_step, cfg)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _fit_adapter_slots(state: dict[str, Any], n_student: int, n_adapters: int) -> dict[str, Any]:
    """An Adam ``state_dict`` (one group: the student's ``n_student`` parameters, then the feature
    adapters' if that run had them) fitted to this run's ``n_student + n_adapters``.

    The adapters exist only with an online teacher and ``loss.feature > 0`` (on a GPU with
    ``teacher.mode: auto``): a run started without them and resumed with them, or the other
    way round, failed in ``load_state_dict`` ("a parameter group that doesn't match the size of
    optimizer's group"). The student's moments are kept; new adapters start without any, and
    those this run does not have are dropped. Any other mismatch is left to ``load_state_dict``.
    """
    (group,) = state["param_groups"]
    ids = list(group["params"])
    if len(ids) == n_student + n_adapters or len(ids) < n_student:
        return state
    first_new = max(ids, default=-1) + 1
    student_ids = ids[:n_student]
    kept = set(student_ids)
    return {
        "state": {i: v for i, v in state["state"].items() if i in kept},
        "param_groups": [
            {**group, "params": student_ids + list(range(first_new, first_new + n_adapters))}
        ],
    }


def _check_resume_world(ck: dict[str, Any], world: int, path: Path) -> None:
    """Refuse to resume ``ck`` (read from ``path``) with ``world`` processes when another number
    of processes wrote it.

    Each rank draws the samples ``(sample_counter + i) * world + rank`` and keeps its own RNG
    state: under another count the stream does not continue where it stopped, and a rank the
    checkpoint has no RNG state for failed with an IndexError. Checkpoints from before
    ``world_size`` was stored tell it by their RNG states: a list of one per rank from DDP, a
    single state from one process (so those stay resumable by one process).
    """
    saved = ck.get("world_size")
    if saved is None:
        saved = len(ck["rng"]) if isinstance(ck["rng"], list) else 1
    if saved == world:
        return
    how = f"--nproc_per_node={saved}" + (" (or without torchrun)" if saved == 1 else "")
    raise ConfigError(
        f"{path} was written by {saved} process{'es' if saved != 1 else ''}, this resume runs "
        f"{world}: each rank's samples and RNG state continue only under the same count; "
        f"resume with {how}, or start a new run from its weights with --init_from={path}"
    )


def _check_resume_student(ck: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume ``ck`` (read from ``path``) as another student than the one it holds.

    Its weights and Adam moments fit only its own layers: ``load_state_dict`` failed on them,
    after the data was built (minutes on the real data), in a page of missing keys and size
    mismatches. Checkpoints from before ``variant`` was stored tell it by their config.
    """
    saved = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    variant = ck.get("variant", saved.get("student"))
    if variant is None:
        return  # nothing recorded: loading the weights is the only check left
    kwargs = dict(ck.get("student_kwargs", saved.get("student_kwargs")) or {})
    if variant == cfg.student and kwargs == dict(cfg.student_kwargs):
        return
    raise ConfigError(
        f"{path} holds a {variant!r} student {kwargs}, this run configures {cfg.student!r} "
        f"{dict(cfg.student_kwargs)}: a resume continues the same student; to start this one "
        f"from those weights, run without --resume with --init_from={path}"
    )


def _average_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average the gradients of ``params`` over the DDP ranks (what DDP does for the modules it
    wraps), so parameters outside the wrapper stay identical on every rank."""
    for p in params:
        if p.grad is None:  # every rank must join each all_reduce, used or not
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)


DEVICES = "cpu, cuda, cuda:N, mps"  # the devices training runs on, as the tools name them


def _resolve_device(name: str) -> torch.device:
    """The torch device of config ``device`` (auto: CUDA when there is one), refused as a
    ``ConfigError`` when this machine has no such device: torch's AssertionError came only when
    the student moved there, after the earlier run in out_dir had been moved aside."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's own message lists twenty device types, in a traceback
        raise ConfigError(f"device: not a torch device ({DEVICES})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name} asked for, but no CUDA device is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {name} asked for, but this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        # Named in the tools' "not a torch device" hint, and off a Mac it failed only when
        # the data (or the teacher) first moved there, with torch's traceback.
        raise ConfigError(f"device: {name} asked for, but no MPS device is available here")
    elif device.type != "cpu":
        # meta, xpu, ...: torch knows the name, and the tools failed later in its traceback
        # (meta: "not an accelerator"; xpu on a build without it: "not compiled with XPU").
        raise ConfigError(f"device: {name} is not a device training runs on ({DEVICES})")
    return device


def device_option(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """``_resolve_device`` of a tool's ``--device`` option; a device torch does not know, or
    one this machine or training lacks, is ``parser.error`` (one line, exit status 2) worded
    alike in every tool."""
    try:
        return _resolve_device(name)
    except ConfigError as exc:
        parser.error(f"--device {name}: {str(exc).removeprefix('device: ')}")


def _check_student(cfg: TrainConfig) -> None:
    """Refuse an unknown student or constructor setting as a ``ConfigError``, before anything
    is loaded (a KeyError or TypeError traceback came after the earlier run was moved aside)."""
    from training.models.student import STUDENTS, list_students

    spec = STUDENTS.get(cfg.student)
    if spec is None:
        raise ConfigError(
            f"student: unknown student {cfg.student!r}; known: {', '.join(list_students())}"
        )
    settings = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(cfg.student_kwargs) - settings)
    if unknown:
        raise ConfigError(
            f"student_kwargs: {cfg.student!r} has no setting {', '.join(unknown)}; "
            f"its settings: {', '.join(sorted(settings))}"
        )


def _worker_init(_: int) -> None:
    # Workers synthesise with numpy/OpenCV; extra threads there only fight the training threads.
    # (OpenCV's own thread count is set in the parent before the fork: calling
    # cv2.setNumThreads in a forked child whose parent already used OpenCV's pool deadlocks.)
    torch.set_num_threads(1)
    # Ctrl-C reaches the terminal's whole process group and timeout's TERM its own group: the
    # workers too. One that died of it failed the main process's next batch ("worker exited
    # unexpectedly", "killed by signal") with a traceback and no checkpoint; the main process
    # finishes its step and shuts the workers down itself. (The loader's terminate() after a
    # shutdown a worker did not answer in 5 s is ignored too: that worker ends once it sees the
    # done event or its parent gone.)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# Why a run stopped on a signal, and the status `python -m training.train` exits with then:
# 128 + the signal's number, what a shell reports for a process the signal ended.
_SIGNAL_STOPS = {
    "interrupted by SIGTERM": 128 + signal.SIGTERM,
    "interrupted by SIGINT": 128 + signal.SIGINT,
}
# The terminal closing (SIGHUP, POSIX only) ended a run in the foreground without its checkpoint.
if hasattr(signal, "SIGHUP"):
    _SIGNAL_STOPS["interrupted by SIGHUP"] = 128 + signal.SIGHUP
_STOP_SIGNALS = tuple(signal.Signals[k.rsplit(" ", 1)[1]] for k in _SIGNAL_STOPS)


@contextlib.contextmanager
def _stop_signals(announce: bool) -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP while the loop runs: the first is appended to the yielded
    list (the loop stops after the step in hand and saves ``last.pt``) and puts the defaults
    back, so a second ends the process at once wherever it is stuck (a save on a hung disk:
    ``last.pt`` stays whole, written as a temp file then renamed). The handlers are restored
    on exit; one ignored at the start stays ignored."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # Python sets handlers from the main thread only
        return
    owner = os.getpid()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            return  # a DataLoader worker forked with this handler, before _worker_init ran
        received.append(signum)
        for sig in previous:
            signal.signal(sig, signal.SIG_DFL)
        if announce:
            # os.write, not logging: a handler that writes to a stream the main thread was
            # writing to when the signal came fails with "reentrant call".
            name = signal.Signals(signum).name
            note = (
                f"\n{name}: stopping after this step with a checkpoint (a second signal "
                "stops at once, unsaved)\n"
            )
            # An error here is raised in the middle of the step: `... | tee log` loses its
            # reader to the same Ctrl-C (EPIPE), and the run died without its checkpoint.
            with contextlib.suppress(OSError):
                os.write(2, note.encode())

    for sig in _STOP_SIGNALS:
        # A shell starts background jobs with SIGINT ignored: Ctrl-C there is not for them;
        # `nohup` ignores SIGHUP: the terminal closing is not for that run either.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            # None: a handler not set from Python; the default is what it was.
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temp file, fsync it, ``os.replace``, fsync the folder: neither a crash
    nor a power loss leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        # Without it the rename can reach the disk before the data does: after a power loss
        # the run's last.pt was there but empty. Opened for writing: Windows' fsync needs that.
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the part written stayed, on the disk that filled up
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable: the new name lives in the folder, not in the file."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder: nothing to sync there
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems refuse fsync on a folder (WSL1's DrvFs, CIFS mounts: EINVAL). The
        # checkpoint is already written, synced and renamed: raising here killed the run after
        # a save that had worked. Other errors (EIO) are real trouble and still raise.
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


# What fsync on a folder fails with where the file system cannot sync folders at all.
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP})


# What a run writes into its folder (``save_atomic``'s temp files aside).
RUN_FILES = ("last.pt", "best.pt", "best_old_val.pt", "config.yaml", "log.csv", "curves.png")


def move_aside_previous_run(out_dir: Path) -> Path | None:
    """Before a fresh run into ``out_dir``: move an earlier run's ``RUN_FILES`` into
    ``out_dir/previous_N`` (the first free N) when it left more than its ``config.yaml`` (a run
    that failed in its set-up) there; returns that folder, or None when nothing was moved.

    Left in place, the old ``best.pt`` stood until the new run's first better validation, and a
    run stopped before it left one beside its own ``config.yaml`` and ``last.pt`` that looked like
    its own; an old ``last.pt`` was what ``--resume`` continued if the new run failed before its
    first checkpoint. Moved, never deleted: it may be the only copy of hours of training.
    """
    if not any((out_dir / name).is_file() for name in RUN_FILES if name != "config.yaml"):
        return None
    dest = previous_folder(out_dir)
    for name in RUN_FILES:
        if (out_dir / name).is_file():
            os.replace(out_dir / name, dest / name)
    return dest


def previous_folder(parent: Path) -> Path:
    """A new, empty ``parent/previous_N`` (the first free N) to move earlier results into."""
    i = 1
    while True:
        dest = parent / f"previous_{i}"
        try:
            dest.mkdir()
            return dest
        except FileExistsError:
            i += 1


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    # CPU tensors whatever map_location the checkpoint was read with: both generators refuse
    # others ("RNG state must be a torch.ByteTensor").
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # As many as there are GPUs here: a checkpoint from a machine with more has one per GPU.
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint of this trainer (``weights_only=True``: nothing but tensors and plain data).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: torch cannot read it: a folder, another format (an ONNX file), a damaged
            file. What it holds is the caller's to check (`_check_weights`).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"checkpoint {path} is not a file")
    try:
        ck = torch.load(str(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise  # missing data: `python -m training.train` says so in one line
    except pickle.UnpicklingError as exc:
        # torch's message is a paragraph advising weights_only=False: for a file that is no
        # checkpoint (an .onnx) that is wrong, and for a foreign one a risk.
        raise ConfigError(
            f"cannot read checkpoint {path}: not one this trainer wrote (another format such "
            "as an exported .onnx, a damaged file, or one holding more than tensors and plain "
            "data)"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails in many ways
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ConfigError(
            f"cannot read checkpoint {path} (damaged, or not a trainer checkpoint): "
            f"{type(exc).__name__}: {first.strip()}"
        ) from exc
    return ck


def _check_weights(ck: Any, path: str | Path) -> None:
    """Refuse ``ck`` (read from ``path``) unless it holds a student's weights under ``model``, as
    every checkpoint of this trainer does: a bare state dict failed with ``KeyError: 'model'``."""
    if isinstance(ck, dict) and isinstance(ck.get("model"), dict):
        return
    bare = isinstance(ck, dict) and bool(ck) and all(torch.is_tensor(v) for v in ck.values())
    what = "a bare state dict" if bare else f"a {type(ck).__name__} without a 'model' entry"
    raise ConfigError(
        f"{path} is not a trainer checkpoint ({what}): --init_from needs a .pt file that "
        "training wrote (its weights under 'model', beside its config)"
    )


# --------------------------------------------------------------------------------------------
# Validation, logs, plot
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(model: torch.nn.Module, val: list, device: torch.device) -> dict[str, float]:
    """Mean PSNR/SSIM of the model and of the blurry input over the fixed validation set."""
    from training.metrics import psnr, ssim

    was_training = model.training
    model.eval()
    acc = {"val_psnr": 0.0, "val_ssim": 0.0, "blurry_psnr": 0.0, "blurry_ssim": 0.0}
    for blur, sharp, _ in val:
        b = torch.from_numpy(blur).permute(2, 0, 1)[None].to(device)
        s = torch.from_numpy(sharp).permute(2, 0, 1)[None].to(device)
        out = model(b).float().clamp(0, 1)
        acc["val_psnr"] += float(psnr(out, s)[0])
        acc["val_ssim"] += float(ssim(out, s)[0])
        acc["blurry_psnr"] += float(psnr(b, s)[0])
        acc["blurry_ssim"] += float(ssim(b, s)[0])
    model.train(was_training)
    return {k: v / max(1, len(val)) for k, v in acc.items()}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Training loss terms (log scale) and validation PSNR against the blurry input, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    tmp = path.with_name(path.stem + ".tmp.png")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    # pyplot holds every figure until it is closed: one left open by a failed save (a full
    # disk) would stay for the rest of the run, another at every epoch.
    try:
        for k in rows[-1]:
            if k.startswith("loss_"):
                ys = [r.get(k, float("nan")) for r in rows]
                ax1.plot(epochs, ys, label=k.removeprefix("loss_"))
        ax1.set_yscale("log")
        ax1.set_xlabel("epoch")
        ax1.set_title("training loss terms")
        ax1.legend(fontsize=8)
        vrows = [r for r in rows if r.get("val_psnr") not in (None, "")]
        if vrows:
            ax2.plot(
                [r["epoch"] for r in vrows], [r["val_psnr"] for r in vrows], "o-", label="student"
            )
            ax2.plot(
                [r["epoch"] for r in vrows],
                [r["blurry_psnr"] for r in vrows],
                "--",
                label="blurry input",
            )
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("PSNR (dB)")
        ax2.set_title("validation")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


# Set when train() has finished its set-up: from then on a FileNotFoundError is a failure of the
# run (a checkpoint folder removed under it, a bug), not missing data, and `python -m
# training.train` shows its traceback instead of the one-line set-up message.
_setup_done = False


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns ``{"steps": [total loss per step run here],
    "epochs": [log rows], "stopped": reason, "exit_status": 0 or 128 + the signal that stopped
    it, "out_dir": path}``."""
    # The loop's signal handlers go back however the run ends (a test, a caller's own handlers).
    with contextlib.ExitStack() as on_exit:
        return _train(cfg, on_exit)


def _train(cfg: TrainConfig, on_exit: contextlib.ExitStack) -> dict[str, Any]:
    global _setup_done
    _setup_done = False
    # ---- processes and device --------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    device = _resolve_device(cfg.device)
    _check_student(cfg)
    if ddp and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if ddp else 0
    if ddp and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    master = rank == 0
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed + rank)
    np.random.seed((cfg.seed + rank) % 2**32)
    torch.manual_seed(cfg.seed + rank)
    use_amp = cfg.amp and device.type == "cuda"
    out_dir = Path(cfg.out_dir)
    resuming = cfg.resume and (out_dir / "last.pt").is_file()
    ck: dict[str, Any] = {}
    if resuming:
        # Read and checked before the teacher, the student and above all the data are built
        # (minutes on the real data): a checkpoint this run cannot continue fails in seconds.
        # Read on the CPU whatever the device: the RNG states must be CPU tensors (a CUDA map
        # failed every GPU resume), and Adam keeps its step counts there (on the GPU each of
        # them was read back to the host on every step). Weights and moments still move to
        # their parameters' device as they load, below.
        ck = load_checkpoint(out_dir / "last.pt")
        if "optimizer" not in ck:
            # What comes back from a GPU call (gpu_session.sh slims it to fit) or ships in
            # training/checkpoints: a bare KeyError said nothing of what to do instead.
            raise ConfigError(
                f"{out_dir / 'last.pt'} holds weights only (no optimiser, schedule or position): "
                "it cannot be resumed; start a run from it with --init_from"
            )
        _check_resume_world(ck, world, out_dir / "last.pt")
        _check_resume_student(ck, cfg, out_dir / "last.pt")
        if ck.get("epoch", 0) >= total_epochs(cfg):
            # Said before the data is built (minutes on the real data): it logged "resumed ...
            # at epoch N+1 step 0" of an N-epoch run, trained nothing and exited 0 unexplained.
            if master:
                # One epoch past those done: stages shortened since the run (3 epochs done, 2
                # now) were told "one more" and were then as complete as before.
                more = ck["epoch"] - total_epochs(cfg) + 1
                longer = ", ".join(
                    f"{{patch: {st.patch}, epochs: "
                    f"{st.epochs + (more if i == len(cfg.stages) - 1 else 0)}, batch: {st.batch}}}"
                    for i, st in enumerate(cfg.stages)
                )
                log.info(
                    "the run in %s is already complete (%d of %d epochs, %d steps): nothing to "
                    "train. To train longer, give its stages more epochs (config key stages, "
                    "e.g. --stages='[%s]') and run with --resume again",
                    out_dir,
                    ck["epoch"],
                    total_epochs(cfg),
                    ck.get("global_step", 0),
                    longer,
                )
            return {
                "steps_per_s": None,
                "steps": [],
                "epochs": list(ck.get("rows") or []),
                "stopped": "finished",
                "exit_status": 0,
                "out_dir": str(out_dir),
                "skipped_files": [],
            }
    # Read before an earlier run in out_dir is moved aside: it may be that run's own best.pt.
    init = load_checkpoint(cfg.init_from) if cfg.init_from and not resuming else None
    if init is not None:
        _check_weights(init, cfg.init_from)
    cfg_dict, digest = config_to_dict(cfg), config_digest(cfg)
    t_start = time.monotonic()

    # ---- teacher (frozen): online on a GPU, else its cached outputs --------------------------
    # Loaded, as the student and the losses are built, before an earlier run in out_dir is moved
    # aside: a wrong name or weights file failed after the move, and a --resume then found no
    # last.pt and started afresh.
    mode = cfg.teacher.mode if cfg.teacher.name else "off"
    if not cfg.teacher.name and cfg.teacher.mode == "auto":
        # Off as mode auto's other fallback is, and said as it is: it was off without a word
        # (online and cache, which ask for the teacher, refuse an empty name in the config).
        if cfg.loss.distill > 0 or cfg.loss.feature > 0:
            log.warning(
                "teacher.name is empty: distillation terms are off for this run "
                "(name a teacher with --teacher.name=dmphn or restormer)"
            )
    elif mode == "auto":
        if device.type == "cuda":
            mode = "online"
        elif cfg.teacher.cache_path and Path(cfg.teacher.cache_path).is_file():
            mode = "cache"
        else:
            mode = "off"
            if cfg.loss.distill > 0 or cfg.loss.feature > 0:
                log.warning(
                    "no GPU and no teacher cache at %r: distillation terms are off for this run "
                    "(make one with python -m training.cache_teacher)",
                    cfg.teacher.cache_path,
                )
    if mode != "off" and cfg.loss.distill <= 0 and cfg.loss.feature <= 0:
        # Nothing reads the teacher then: online it ran on every batch for nothing (4x the
        # hq student's step on a CPU), and a cache still put its patches into the data mix.
        log.info(
            "teacher.mode=%s but loss.distill and loss.feature are 0: the teacher is not used",
            mode,
        )
        mode = "off"
    teacher, cache = None, None
    if mode == "online":
        from training.teachers import TEACHERS, load_teacher

        try:
            teacher = load_teacher(
                cfg.teacher.name, weights=cfg.teacher.weights or None, device=device
            )
        except KeyError as exc:
            if cfg.teacher.name in TEACHERS:
                raise  # not the name: a bug the traceback should show
            raise ConfigError(f"teacher.name: {exc.args[0]}") from None
    elif mode == "cache":
        if not Path(cfg.teacher.cache_path).is_file():
            raise FileNotFoundError(
                f"teacher.mode=cache but no cache file {cfg.teacher.cache_path}"
            )
        try:
            cache = TeacherCache.load(
                cfg.teacher.cache_path, min_gain_db=cfg.teacher.cache_min_gain
            )
        except ValueError as exc:  # bytes that fail their checksum: one line, not a traceback
            raise ConfigError(f"teacher.cache_path: {exc}") from None
        from training.cache_teacher import check_cache_meta

        check_cache_meta(cache.meta, cfg, cfg.teacher.cache_path)
        if not len(cache):
            log.warning(
                "teacher cache %s: no patch where the teacher beats the input by %.2f dB; "
                "distillation terms are off for this run",
                cfg.teacher.cache_path,
                cfg.teacher.cache_min_gain,
            )
            cache = None
        else:
            log.info(
                "teacher cache: %d patches of %d px from %s",
                len(cache),
                cache.patch,
                cfg.teacher.cache_path,
            )

    # ---- student (before the data, so a wrong name or device fails in seconds) ------------
    from training.models.student import create_student, grow_from

    # Seeded again: building the teacher draws from torch's generator, and the same seed gave
    # another starting student with the teacher online than without it (a GPU run than a CPU
    # one under teacher.mode=auto).
    torch.manual_seed(cfg.seed + rank)
    student = create_student(cfg.student, **cfg.student_kwargs).to(device)
    if init is not None:  # a first launch with --resume still starts from init
        source = init.get("variant", cfg.student)
        source_kwargs = dict(init.get("student_kwargs") or {})
        if source == cfg.student and source_kwargs == dict(cfg.student_kwargs):
            student.load_state_dict(init["model"])
            if master:
                log.info("student initialised from %s", cfg.init_from)
        else:
            # A deeper variant of the same family starts as the source's exact function.
            try:
                added = grow_from(student, init["model"])
            except ValueError as e:
                raise ConfigError(
                    f"init_from {cfg.init_from} holds a {source!r} student {source_kwargs}, not "
                    f"{cfg.student!r} {dict(cfg.student_kwargs)}, and it does not grow from it ({e})"
                ) from e
            if master:
                log.info(
                    "student grown from the %s in %s: %d blocks added (%s), each starting as "
                    "the identity",
                    source,
                    cfg.init_from,
                    len(added),
                    ", ".join(added),
                )
    if master:
        log.info(
            "student %s: %d params, %.0f multiply-adds per pixel",
            cfg.student,
            student.count_params(),
            student.macs_per_pixel(),
        )
    # Built before the run folder is touched, as the teacher is: a missing VGG file or layer
    # failed after the earlier run had been moved aside.
    try:
        loss_fn = DistillLoss(cfg.loss)
    except ValueError as exc:  # a VGG layer the weights file lacks, a file that is no VGG
        raise ConfigError(f"loss.vgg: {exc}") from None

    # ---- run folder: made before the data, so that a file in its way is said in seconds -------
    if ddp and init is not None:
        dist.barrier()  # every rank has read it before rank 0 moves it
    if master:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file there or on the way to it
            raise ConfigError(
                f"out_dir: {out_dir} is not a folder (a file is in the way)"
            ) from None
    # ---- data ------------------------------------------------------------------------------
    if cfg.data.num_workers > 0:
        import cv2

        # OpenCV's thread pool does not survive fork(): workers would hang in it.
        cv2.setNumThreads(1)
    dataset, val_set, skips = build_data(cfg, rank=rank, teacher_cache=cache)
    raw_sampler = None
    raw_share = 0.0
    if cfg.data.raw_on_device and dataset.raw and dataset.weights[0] > 0:
        from training.device_data import DeviceRawSampler

        raw_sampler = DeviceRawSampler(
            dataset.raw, dataset.params, device, seed=cfg.seed, rank=rank
        )
        raw_share = dataset.split_off_raw()
        if master:
            log.info(
                "raw source on %s: %.0f MB of frames, %.0f %% of each batch",
                device,
                raw_sampler.nbytes / 1e6,
                100 * raw_share,
            )

    # The average starts from the initial weights; resume restores it below.
    ema_model = copy.deepcopy(student).requires_grad_(False) if cfg.ema > 0 else None
    # What validation measures and checkpoints keep as "model" (an explicit None test: a
    # module's truth value is its length when it is a container).
    kept = ema_model if ema_model is not None else student
    model: torch.nn.Module = student
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ---- losses ------------------------------------------------------------------------------
    loss_fn.to(device)
    use_features = teacher is not None and cfg.loss.feature > 0
    if use_features:
        with torch.no_grad():
            probe = torch.rand(1, 3, 64, 64, device=device)
            _, sf = student(probe, return_features=True)
            _, tf = teacher(probe, return_features=True)
        loss_fn.init_adapters(sf, tf)
    adapter_params = list(loss_fn.adapters.parameters()) if loss_fn.adapters is not None else []
    if ddp:
        # The adapters are trained beside the student but are not inside its DDP wrapper: each
        # rank drew its own initial weights (seed + rank) and would step on its own gradients.
        # Start them from rank 0's, as DDP does for the student; gradients are averaged below.
        for p in adapter_params:
            dist.broadcast(p.data, src=0)

    # ---- optimiser, schedule, scaler -----------------------------------------------------------
    optimizer = torch.optim.Adam(
        list(student.parameters()) + adapter_params,
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        weight_decay=cfg.weight_decay,
    )
    if cfg.scheduler == "plateau":
        scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
            min_lr=cfg.min_lr,
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # ---- resume ------------------------------------------------------------------------------
    epoch, step_in_epoch, global_step, sample_counter = 0, 0, 0, 0
    # bad_epochs counts validations without a better PSNR, epochs only when val_every is 1
    # (the name stays: checkpoints store it under it).
    best_psnr, bad_epochs = -math.inf, 0
    rows: list[dict[str, Any]] = []
    # The configs earlier launches trained under, where a resume changed it: "config" (and
    # config.yaml) hold the latest only, which alone does not reproduce these weights.
    config_history: list[dict[str, Any]] = []
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    epoch_time = 0.0
    if resuming:  # ck: out_dir/last.pt, read and checked at the start
        student.load_state_dict(ck.get("model_raw", ck["model"]))
        if ema_model is not None:
            ema_model.load_state_dict(ck["model"])
        n_student = len(list(student.parameters()))
        saved_adapters = len(ck["optimizer"]["param_groups"][0]["params"]) - n_student
        # Adapters of another number of parameters start fresh, as their Adam slots do in
        # _fit_adapter_slots: loading their weights would fail on the missing or extra keys.
        if (
            loss_fn.adapters is not None
            and ck.get("adapters")
            and saved_adapters == len(adapter_params)
        ):
            loss_fn.adapters.load_state_dict(ck["adapters"])
        if saved_adapters != len(adapter_params) and master:
            if not saved_adapters:
                note = (
                    "the checkpoint has no feature adapters (saved without an online teacher): "
                    "they start fresh"
                )
            elif not adapter_params:
                note = (
                    "the checkpoint's feature adapters are left out: no online teacher's "
                    "feature term here"
                )
            else:
                note = (
                    f"the checkpoint's feature adapters ({saved_adapters} parameter tensors) do "
                    f"not match this run's ({len(adapter_params)}): they start fresh"
                )
            log.warning(note)
        optimizer.load_state_dict(
            _fit_adapter_slots(ck["optimizer"], n_student, len(adapter_params))
        )
        # Runs from before the stem became a strided conv keep its Adam moments in the old
        # shape of the same numbers (the weights were viewed on load): view them alike.
        for p, state in optimizer.state.items():
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape != p.shape and v.numel() == p.numel():
                    state[k] = v.reshape(p.shape)
        if cfg.scheduler == "plateau":
            # Its reductions so far. A cosine run continued on plateau (no such state) goes on
            # from the rate it had reached.
            if "num_bad_epochs" in ck["scheduler"]:
                scheduler.load_state_dict(ck["scheduler"])
        else:
            # LambdaLR's state is its step count, which is global_step: a plateau run continued
            # on cosine failed on its state (KeyError 'lr_lambdas'), and loaded as its count it
            # would restart the cosine from the plateau's number of validations.
            scheduler.last_epoch = ck["global_step"]
        if ck["scaler"]:
            # A run saved without AMP (the CPU) has no scaler state, and an enabled GradScaler
            # refuses an empty one: a CPU run resumed on the GPU starts a fresh scale instead.
            scaler.load_state_dict(ck["scaler"])
        epoch, step_in_epoch = ck["epoch"], ck["step_in_epoch"]
        global_step, sample_counter = ck["global_step"], ck["sample_counter"]
        saved_lr = (ck.get("config") or {}).get("lr")
        _apply_optimiser_settings(
            optimizer,
            scheduler,
            cfg,
            global_step,
            saved_lr if isinstance(saved_lr, (int, float)) else None,
        )
        best_psnr, bad_epochs = ck["best_psnr"], ck["bad_epochs"]
        rows, sums, counts = list(ck["rows"]), dict(ck["sums"]), dict(ck["counts"])
        epoch_time = ck.get("epoch_time", 0.0)
        set_rng_state(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"])
        changed: list[str] = []
        if ck.get("config_digest") != digest:
            saved = ck.get("config")
            # A digest also changes when a key is added to the code: compare the settings, so a
            # run started before that key existed resumes without a false alarm.
            changed = config_changes(saved, cfg) if isinstance(saved, dict) else ["(not saved)"]
            if changed and master:
                log.warning(
                    "resuming with a different config than the checkpoint's (digest %s != %s): %s",
                    digest[:12],
                    str(ck.get("config_digest"))[:12],
                    ", ".join(changed),
                )
        config_history = list(ck.get("config_history") or [])
        if changed:
            config_history.append(
                {
                    "until_step": global_step,
                    "config": ck.get("config"),
                    "config_digest": ck.get("config_digest"),
                    "changed": changed,
                }
            )
        # A synthetic validation set (no held-out raw frames) is drawn from the training
        # sources with the run's seed: any data setting or the seed redraws it.
        synthetic = bool(val_set) and all(name.startswith("synthetic_") for *_, name in val_set)
        val_changed = [
            k
            for k in changed
            if k in VALIDATION_KEYS
            or k == "(not saved)"
            or (synthetic and (k.startswith("data.") or k == "seed"))
        ]
        saved_dirs = ((ck.get("config") or {}).get("data") or {}).get("raw_dirs") or []
        if [Path(d).name for d in saved_dirs] == [Path(d).name for d in cfg.data.raw_dirs]:
            # The same clips at another path (a carried copy on the GPU machine): the same set.
            val_changed = [k for k in val_changed if k != "data.raw_dirs"]
        if val_changed:
            # Scores of another validation set are no yardstick: best.pt, early stopping and
            # the plateau's cuts compared the new set's PSNR with the old set's best.
            best_psnr, bad_epochs = -math.inf, 0
            if cfg.scheduler == "plateau":
                scheduler.best = scheduler.mode_worse
                scheduler.num_bad_epochs = 0
            old_best = out_dir / "best_old_val.pt"
            if master and (out_dir / "best.pt").is_file():
                # The next validation replaces best.pt whatever it scores: the old set's best
                # is kept under another name rather than lost.
                os.replace(out_dir / "best.pt", old_best)
            if master:
                log.warning(
                    "the validation set changed (%s): the best score so far and the epochs "
                    "without improvement start again (the old set's best.pt is now %s)",
                    ", ".join(val_changed),
                    old_best.name,
                )
        log.info(
            "resumed from %s at epoch %d step %d", out_dir / "last.pt", epoch + 1, step_in_epoch
        )
        if master:
            save_config(cfg, out_dir / "config.yaml")
    elif cfg.resume:
        log.warning("--resume given but %s does not exist: starting fresh", out_dir / "last.pt")

    def checkpoint(kind: str) -> None:
        if ddp:
            rngs: Any = [None] * world
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = rng_state()
        if not master:
            return
        state = {
            "model": kept.state_dict(),
            **({"model_raw": student.state_dict()} if ema_model is not None else {}),
            "adapters": loss_fn.adapters.state_dict() if loss_fn.adapters is not None else {},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rngs,
            "world_size": world,  # what a resume must run with (_check_resume_world)
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "sample_counter": sample_counter,
            "best_psnr": best_psnr,
            "bad_epochs": bad_epochs,
            "rows": rows,
            "sums": sums,
            "counts": counts,
            "epoch_time": epoch_time,
            "config": cfg_dict,
            "config_digest": digest,
            "config_history": config_history,
            "variant": cfg.student,
            "student_kwargs": dict(cfg.student_kwargs),
        }
        save_atomic(state, out_dir / f"{kind}.pt")

    # An earlier run in out_dir is moved aside only now that the data and the rest of the set-up
    # have held: a fresh run started by mistake and stopped in its data set-up (Ctrl-C, the
    # leakage guard) moved it, said "nothing saved", and the --resume after it started afresh.
    if master and not resuming:  # a resume writes it once last.pt loads: a failed one keeps it
        previous = move_aside_previous_run(out_dir)
        if previous is not None:
            log.warning(
                "%s held an earlier run's files: moved to %s (delete it if unneeded)",
                out_dir,
                previous,
            )
        save_config(cfg, out_dir / "config.yaml")

    # ---- loop ----------------------------------------------------------------------------------
    _setup_done = True
    # From here a SIGINT or SIGTERM stops after its step with a checkpoint (before, there is
    # nothing to save: Ctrl-C ends the set-up at once).
    signals = on_exit.enter_context(_stop_signals(announce=master))
    n_epochs = total_epochs(cfg)
    steps_run: list[float] = []
    stopped = "finished"
    if cfg.early_stop and bad_epochs >= cfg.early_stop:
        # Resumed after its early stop: the run is over. Training on would overwrite last.pt at
        # every launch of a job that is always started with --resume.
        stopped = "early stop"
        if master:
            log.info(
                "early stop reached before this launch (%d validations without a better "
                "validation PSNR): nothing to train",
                bad_epochs,
            )
    run_steps = 0
    # Throughput is timed from the WARM_STEPS-th step on (cuDNN autotuning, worker start-up and
    # allocator growth happen before it): what a short probe run needs to size a schedule.
    t_warm: float | None = None
    t_last = 0.0  # end of the latest step: checkpoints after the last one are not throughput
    paused = 0.0  # seconds of validation, logs and checkpoints since t_warm (not throughput)
    paused_at_last = 0.0  # of which before t_last
    model.train()
    while epoch < n_epochs and stopped == "finished":
        stage_idx, stage = stage_at(cfg, epoch)
        dataset.patch = stage.patch
        n_raw = _device_share(stage.batch, raw_share) if raw_sampler is not None else 0
        n_loader = stage.batch - n_raw
        # None left: a run stopped by a signal after the epoch's last step (the epoch's end is
        # this launch's), or resumed with fewer steps_per_epoch.
        n_batches = max(0, cfg.steps_per_epoch - step_in_epoch)
        loader: Iterable[dict[str, Any]]
        if n_loader == 0 or n_batches == 0:  # all from the device sampler, or nothing to make
            loader = itertools.repeat({}, n_batches)
        else:
            loader = DataLoader(
                dataset,
                batch_sampler=IndexBatches(
                    start=sample_counter,
                    n_batches=n_batches,
                    batch=n_loader,
                    rank=rank,
                    world_size=world,
                ),
                num_workers=cfg.data.num_workers,
                worker_init_fn=_worker_init if cfg.data.num_workers > 0 else None,
                pin_memory=device.type == "cuda",
                # Each new iterator draws its workers' seed; from torch's own generator, a
                # resume (one more iterator mid-epoch) left it where the unbroken run had not.
                generator=torch.Generator().manual_seed((cfg.seed + rank) * 1_000_003 + epoch),
            )
        t_epoch = time.monotonic()
        stop_now = ""  # why this launch stops after the current step ("" = it goes on)
        bar = _progress(
            loader,
            desc=f"epoch {epoch + 1}/{n_epochs} ({stage.patch}px x{stage.batch})",
            total=cfg.steps_per_epoch,
            initial=step_in_epoch,
            disable=not master,
        )
        for batch in bar:
            if n_raw > 0:
                assert raw_sampler is not None
                batch = _with_device_raw(
                    batch, raw_sampler.sample(n_raw, stage.patch, global_step), device
                )
            blur = batch["blur"].to(device, non_blocking=True)
            sharp = batch["sharp"].to(device, non_blocking=True)
            t_out, t_mask, t_feats = None, None, None
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                if teacher is not None:
                    with torch.no_grad():
                        if use_features:
                            t_out, t_feats = teacher(blur, return_features=True)
                        else:
                            t_out = teacher(blur)
                    t_mask = teacher_gain_mask(t_out, blur, sharp, cfg.teacher.cache_min_gain)
                elif cache is not None:
                    t_out = batch["teacher"].to(device, non_blocking=True)
                    t_mask = batch["has_teacher"].to(device)
                if use_features:
                    out, s_feats = model(blur, return_features=True)
                else:
                    out, s_feats = model(blur), None
                if t_mask is not None and cfg.teacher.bounded:
                    # The student's output stands where the blurry input stood: same PSNR test.
                    t_mask = t_mask.bool() & teacher_gain_mask(t_out, out.detach(), sharp, 0.0)
            terms = loss_fn(out, sharp, t_out, t_mask, s_feats, t_feats)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            if ddp and adapter_params:
                _average_grads(adapter_params, world)
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            if cfg.scheduler == "plateau" and global_step < cfg.warmup_steps:
                # ReduceLROnPlateau has no warm-up and only LambdaLR applies lr_factor's: ramp
                # here, a pure function of the step like lr_factor (so resume needs no state).
                # Validation cannot lower the rate before the warm-up has reached lr. Not at
                # step warmup_steps: lr is reached one step earlier, and a validation in between
                # may have lowered it since.
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(global_step, cfg)
            scaler.step(optimizer)
            scaler.update()
            if ema_model is not None:
                update_ema(ema_model, student, cfg.ema, global_step)
            if cfg.scheduler != "plateau":
                scheduler.step()
            global_step += 1
            step_in_epoch += 1
            run_steps += 1
            t_last = time.monotonic()
            # Pauses after the last step (the final validation and checkpoints) are outside
            # the span t_warm..t_last: subtracted, they made the rate huge (or 1e9 steps/s).
            paused_at_last = paused
            if run_steps == WARM_STEPS:
                t_warm = t_last
            sample_counter += n_loader
            total = float(terms["total"].detach())
            steps_run.append(total)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
                counts[k] = counts.get(k, 0) + 1
            sums["rejected"] = sums.get("rejected", 0.0) + float(batch["rejected"].sum())
            sums["cached"] = sums.get("cached", 0.0) + float((batch["source"] == 3).sum())
            if t_mask is not None:
                sums["distilled"] = sums.get("distilled", 0.0) + float(t_mask.sum())
            if master and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total:.4f}", refresh=False)
            if not math.isfinite(total):
                raise FloatingPointError(
                    f"loss became {total} at step {global_step}: lower lr or check data"
                )
            stop_now = _should_stop(cfg, t_start, run_steps, ddp, device, signals)
            # A signal stops before the epoch's end too: its validation can take a while, and
            # a watchdog's kill follows its TERM within seconds.
            if stop_now and (step_in_epoch < cfg.steps_per_epoch or stop_now in _SIGNAL_STOPS):
                break
        epoch_time += time.monotonic() - t_epoch
        # Stopped mid-epoch (or by a signal after its last step): save the position.
        if step_in_epoch < cfg.steps_per_epoch or stop_now in _SIGNAL_STOPS:
            checkpoint("last")
            stopped = stop_now or "the loader ended early"
            if master:
                log.info(
                    "stopped (%s) at epoch %d step %d; --resume continues",
                    stopped,
                    epoch + 1,
                    step_in_epoch,
                )
            break

        # ---- end of epoch: validate, log, checkpoint ----------------------------------------
        t_end = time.monotonic()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "stage": stage_idx + 1,
            "patch": stage.patch,
            "batch": stage.batch,
            "step": global_step,
            "lr": optimizer.param_groups[0]["lr"],
        }
        for k in sums:
            if k not in ("rejected", "cached", "distilled"):
                row[f"loss_{k}"] = sums[k] / max(1, counts.get(k, 1))
        row["flat_rejected"] = int(sums.get("rejected", 0))
        row["cached_patches"] = int(sums.get("cached", 0))
        row["distilled_patches"] = int(sums.get("distilled", 0))
        row["patches_per_s"] = cfg.steps_per_epoch * stage.batch * world / max(1e-9, epoch_time)
        row["epoch_s"] = epoch_time
        improved = False
        metric = torch.tensor([float("nan")], device=device)
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == n_epochs:
            if master:
                row.update(validate(kept, val_set, device))
                metric[0] = row["val_psnr"]
            if ddp:
                dist.broadcast(metric, src=0)
            if math.isfinite(float(metric[0])):
                if float(metric[0]) > best_psnr:
                    best_psnr, bad_epochs, improved = float(metric[0]), 0, True
                else:
                    bad_epochs += 1
                if cfg.scheduler == "plateau":
                    scheduler.step(float(metric[0]))
        rows.append(row)
        epoch += 1
        step_in_epoch, sums, counts, epoch_time = 0, {}, {}, 0.0
        if master:
            log.info(_format_row(row))
            write_csv(rows, out_dir / "log.csv")
            plot_curves(rows, out_dir / "curves.png")
        if not stop_now and epoch < n_epochs:
            # A signal (or the time budget) reached during validation, logs and plots stops
            # here, not a step into the next epoch.
            stop_now = _should_stop(cfg, t_start, run_steps, ddp, device, signals)
        early = bool(cfg.early_stop) and bad_epochs >= cfg.early_stop
        if improved:
            checkpoint("best")
        if epoch % cfg.ckpt_every == 0 or epoch == n_epochs or stop_now or early:
            checkpoint("last")
        if t_warm is not None:
            paused += time.monotonic() - t_end
        if early:
            stopped = "early stop"
            if master:
                log.info("early stop: no better validation PSNR for %d validations", bad_epochs)
            break
        if stop_now:
            stopped = stop_now
            if master:
                log.info("stopped (%s) after epoch %d; --resume continues", stopped, epoch)
            break
    steps_per_s = None
    if t_warm is not None and run_steps > WARM_STEPS:
        steps_per_s = (run_steps - WARM_STEPS) / max(1e-9, t_last - t_warm - paused_at_last)
    if master:
        # Where the schedule stands says whether a time-budget stop cut the cosine short (the
        # GPU sessions size it to end inside the budget; this is what tells they did).
        log.info(
            "%s: %d steps in %.1f min (%s steps/s after the first %d, validation excluded); "
            "schedule at step %d of %d; %d unreadable files skipped; run folder %s",
            stopped,
            run_steps,
            (time.monotonic() - t_start) / 60,
            f"{steps_per_s:.2f}" if steps_per_s is not None else "n/a",
            WARM_STEPS,
            global_step,
            n_epochs * cfg.steps_per_epoch,
            len(skips.corrupt_files),
            out_dir,
        )
    return {
        "steps_per_s": steps_per_s,
        "steps": steps_run,
        "epochs": rows,
        "stopped": stopped,
        "exit_status": _SIGNAL_STOPS.get(stopped, 0),
        "out_dir": str(out_dir),
        "skipped_files": list(skips.corrupt_files),
    }


_STOP_REASONS = ("", "step limit", "time budget", *_SIGNAL_STOPS)


def _should_stop(
    cfg: TrainConfig,
    t_start: float,
    run_steps: int,
    ddp: bool,
    device: torch.device,
    signals: list[int],
) -> str:
    """Why this launch stops after the step just taken: "" (it goes on), "step limit", "time
    budget" or "interrupted by SIG..." (``signals``: those received, from ``_stop_signals``).
    Said by what was reached, not by which limits are set: a probe with both that ran out of
    time was reported as having reached its step count."""
    stop = 0
    if cfg.stop_after_steps and run_steps >= cfg.stop_after_steps:
        stop = 1
    if cfg.max_minutes > 0 and time.monotonic() - t_start > cfg.max_minutes * 60:
        stop = 2
    if signals:
        stop = _STOP_REASONS.index(f"interrupted by {signal.Signals(signals[0]).name}")
    if ddp:  # every rank must stop at the same step or the collectives hang
        flag = torch.tensor([float(stop)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = int(flag.item())
    return _STOP_REASONS[stop]


def _progress(it, **kw):
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    # No bar when stderr is not a terminal (tqdm's disable=None): in a log file (a background
    # run) it was thousands of carriage-return updates; the epoch lines say what it said.
    disable = True if kw.pop("disable", False) else None
    return tqdm(
        it, mininterval=5.0, dynamic_ncols=True, leave=False, file=sys.stderr, disable=disable, **kw
    )


def _format_row(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']} (stage {row['stage']}, {row['patch']}px x{row['batch']})"]
    parts += [f"{k.removeprefix('loss_')} {v:.4f}" for k, v in row.items() if k.startswith("loss_")]
    if "val_psnr" in row:
        parts.append(
            f"val PSNR {row['val_psnr']:.2f} dB (blurry {row['blurry_psnr']:.2f}) "
            f"SSIM {row['val_ssim']:.4f} (blurry {row['blurry_ssim']:.4f})"
        )
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['patches_per_s']:.1f} patches/s")
    parts.append(f"flat {row['flat_rejected']}")
    if row.get("distilled_patches"):
        parts.append(f"distilled {row['distilled_patches']}")
    parts.append(f"{row['epoch_s']:.0f} s")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Distil a deblurring student. Any config field can be overridden with "
        "--key=value (nested with dots, e.g. --loss.vgg=0.1); --resume continues out_dir/last.pt.",
        epilog=ONLINE_VS_CACHE,
    )
    parser.add_argument("--config", help="YAML config (training/configs/*.yaml)")
    _, cfg = parse_cli(parser, argv)
    try:
        result = train(cfg)
    except BaseException as exc:
        if dist.is_initialized():
            dist.destroy_process_group()  # no barrier: the other rank may never reach it
        if isinstance(exc, ConfigError) and not _setup_done:
            # Refused in the set-up (a resume as another student, an --init_from that is no
            # checkpoint): a usage error in one line, as a bad override is, not a traceback.
            parser.error(str(exc))
        raise
    if dist.is_initialized():
        # Leave together: no rank tears its gloo connections down under the other's last
        # collective. (The abort CI saw at exit is another race: see run_and_exit_now.)
        dist.barrier()
        dist.destroy_process_group()
    return result


def _cli() -> NoReturn:
    from training.config import exit_leakage, exit_missing_data
    from training.teachers import WeightsError

    try:
        result = main()
    except KeyboardInterrupt:
        # Ctrl-C outside the loop, which stops on it with a checkpoint: during the set-up
        # (nothing trained yet) or the last log lines. A traceback said nothing more. The
        # status stands when the line cannot be written (`| tee log` ended by the same Ctrl-C).
        with contextlib.suppress(OSError):
            print(
                "training.train: interrupted"
                + ("" if _setup_done else " during set-up: nothing trained, nothing saved"),
                file=sys.stderr,
            )
        raise SystemExit(128 + signal.SIGINT) from None
    except (FileNotFoundError, WeightsError) as exc:
        if _setup_done:
            raise  # raised while training, not by missing data: the traceback says where
        exit_missing_data("train", exc)
    except LeakageError as exc:
        if _setup_done:
            raise
        exit_leakage("train", exc)
    raise SystemExit(result["exit_status"])


def _exit_status(code: object) -> int:
    """The status Python gives ``SystemExit(code)``: None is 0, a message is printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with contextlib.suppress(OSError):
        print(code, file=sys.stderr)
    return 1


def run_and_exit_now(entry: Callable[[], object]) -> NoReturn:
    """Call ``entry()`` and leave at once with its status, without finalizing Python.

    For a rank of a torchrun run. After the last collective a gloo worker thread can still be
    freeing that work's tensors, which takes the GIL; when the interpreter is finalizing by then,
    the thread is torn down inside a noexcept destructor and the process aborts (SIGABRT,
    "terminate called without an active exception"; gdb on the core shows
    ``~AsyncBarrierWork`` -> ``decref_pyobject`` -> ``take_gil`` -> ``pthread_exit``). On a loaded
    2-core machine that was about 1 exit in 10, barrier and destroy_process_group or not. The
    run's files are closed by then (checkpoints fsynced); only the standard streams need flushing.
    """
    try:
        entry()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:
        with contextlib.suppress(OSError):
            traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_and_exit_now(_cli)
    _cli()
