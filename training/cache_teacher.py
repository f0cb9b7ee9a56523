"""Run the frozen teacher once over a fixed set of training patches and store its outputs.

    python -m training.cache_teacher --config training/configs/fast.yaml [--key=value ...]
        [--count N] [--max_minutes M]

On a CPU the teacher (DMPHN: ~0.75 M multiply-adds per pixel, 1-2 s per 256 px patch) cannot run
every step, so the trainer draws ``teacher.cache_fraction`` of each batch from this cache and
distils on those. Patches come from the same synthesis as training (its own sample stream),
stored as uint8 ``(N, P, P, 3)`` blurry / sharp / teacher arrays keyed by the blurry patch's
content hash. The file is rewritten atomically after every chunk, so an interrupted run resumes
where it stopped when started again with the same settings.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training.config import (
    ONLINE_VS_CACHE,
    ConfigError,
    DataConfig,
    TrainConfig,
    config_to_dict,
    parse_cli,
)
from training.data import DeblurDataset, content_hash, damaged_record, to_uint8

log = logging.getLogger("training.cache_teacher")
# Set once build_cache() has its teacher and data: a FileNotFoundError after that is a failure
# of the run, shown with its traceback, not the one-line missing-data message.
_setup_done = False

CACHE_STREAM = 7_919  # the cache's own sample stream (the "rank" slot): never a training rank


class CacheInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``build_cache``, with what the file at ``out`` holds: ``kept`` patches of
    ``count`` this run's settings made, or None when nothing of them was written there yet. A
    KeyboardInterrupt still, so callers that stop on one go on stopping."""

    def __init__(self, out: Path, kept: int | None, count: int) -> None:
        super().__init__(out, kept, count)
        self.out, self.kept, self.count = out, kept, count


def cache_meta(cfg: TrainConfig) -> dict:
    """What the cached patches depend on; a file with other settings is not extended."""
    from training.teachers import teacher_code_fingerprint

    meta = {
        "teacher": cfg.teacher.name,
        "teacher_weights": cfg.teacher.weights,
        # The network's code, as for the evaluator's cache: after a fix in
        # training/models/dmphn.py the cached targets are what the old code computed.
        "teacher_code": teacher_code_fingerprint(cfg.teacher.name),
        "patch": cfg.teacher.cache_patch,
        "seed": cfg.seed,
        "data": {k: v for k, v in config_to_dict(cfg.data).items() if k != "num_workers"},
    }
    # The weights' contents, not only their path: new weights saved over the same path (or
    # another $SHARPCAM_SHARED under the default) would otherwise reuse the old ones' outputs.
    digest = teacher_weights_digest(cfg)
    if digest is not None:
        meta[TEACHER_WEIGHTS_DIGEST] = digest
    return meta


TEACHER_WEIGHTS_DIGEST = "teacher_weights_digest"  # cache_meta's key for teacher_weights_digest


def teacher_weights_path(cfg: TrainConfig) -> Path | None:
    """The weights file or folder the teacher would be loaded from (``teacher.weights``, else
    the shared folder's copy), or None when this machine has none."""
    from training.teachers import TEACHERS, default_weights

    if cfg.teacher.weights:
        return Path(cfg.teacher.weights)
    return default_weights(cfg.teacher.name) if cfg.teacher.name in TEACHERS else None


def teacher_weights_digest(cfg: TrainConfig) -> str | None:
    """``training.evaluate.weights_fingerprint`` of the teacher's weights; None when there are
    none here to read (a URL, a missing file, a teacher passed in by a test)."""
    from training.evaluate import weights_fingerprint

    path = teacher_weights_path(cfg)
    if path is None or not path.exists():
        return None
    return weights_fingerprint(path)


# Data settings the cached patches provably do not depend on: build_data reads the val_* ones
# only for the validation set (its own DeblurDataset and stream), and the cache is drawn in this
# process from the CPU dataset whatever the trainer's workers or raw_on_device would do. Settings
# that steer the leakage guard (eval_dirs, raw_val_range, leakage_check) are not here: they do
# not change a patch but decide which patches may be kept.
NON_PATCH_KEYS = ("num_workers", "raw_on_device", "val_windows", "val_count", "val_crop")
_DATA_DEFAULTS = config_to_dict(DataConfig())


def _cached_data(have_data: dict, key: str) -> object:
    """A cache's recorded data setting; one it lacks was added to the code after the cache was
    made, and a new setting's default is the old behaviour, so the default stands in for it."""
    if key in have_data:
        return have_data[key]
    return _DATA_DEFAULTS.get(key)


def _differing_data(have_data: dict, want_data: dict) -> list[str]:
    """Data settings of a cache ``have_data`` that are not the config's ``want_data``, settings
    that cannot change a cached patch left out."""
    return sorted(
        k
        for k in set(have_data) | set(want_data)
        if k not in NON_PATCH_KEYS
        and (
            k not in want_data  # removed from the code since: what it did is unknown
            or not _same_setting(k, _cached_data(have_data, k), want_data[k])
        )
    )


TEACHER_CODE = "teacher_code"  # cache_meta's key for training.teachers.teacher_code_fingerprint

# Settings that decide which images a cached patch may come from: a cache made with others can
# hold patches of photos since excluded or of held-out frames, past the leakage guard.
SOURCE_KEYS = ("raw_dirs", "raw_train_range", "photo_dirs", "exclude", "gopro_dir", "eval_dirs")
# Of those (and the teacher's weights), the ones that name files: compared as the files they name.
PATH_KEYS = ("raw_dirs", "photo_dirs", "gopro_dir", "eval_dirs", "teacher_weights")


def _same_setting(key: str, cached: object, wanted: object) -> bool:
    """Whether a cache's recorded setting is the config's. Paths compare as the files they name
    (``../shared/x`` and ``/work/shared/x`` from the repository root are one folder, and so are a
    symlink and its target), so the same data under another spelling does not force a rebuild."""
    if cached == wanted:
        return True
    if key not in PATH_KEYS:
        return False

    def real(v: object) -> object:
        if isinstance(v, str) and v:
            return os.path.realpath(v)
        if isinstance(v, list | tuple):
            return [real(x) for x in v]
        return v

    return real(cached) == real(wanted)


def _weights_by_contents(have: dict, want: dict) -> bool:
    """Whether both caches' settings record the teacher weights' contents: then those are
    compared, not the path. The same files named another way (``""`` for the shared copy, or
    that copy's path, or a copy elsewhere) give the same outputs, and were refused."""
    return TEACHER_WEIGHTS_DIGEST in have and TEACHER_WEIGHTS_DIGEST in want


def _same_meta(have: dict, want: dict) -> bool:
    """Whether a cache file's settings ``have`` are ``want`` (``cache_meta``), its paths compared
    as the files they name: an interrupted build started again under another spelling of the
    same folders extends the file instead of recomputing every patch."""
    have_data, want_data = have.get("data"), want.get("data")
    if not isinstance(have_data, dict) or not isinstance(want_data, dict):
        return have == want
    # A cache from before the teacher's code was recorded: which code made it is unknown, and
    # starting it over would throw away hours of teacher time on a CPU for a mere suspicion.
    # The same for one from before the weights' contents were recorded.
    unknown = {"data"} | {k for k in (TEACHER_CODE, TEACHER_WEIGHTS_DIGEST) if k not in have}
    if _weights_by_contents(have, want):
        unknown.add("teacher_weights")
    return all(
        _same_setting(k, have.get(k), want.get(k)) for k in (set(have) | set(want)) - unknown
    ) and not _differing_data(have_data, want_data)


def check_cache_meta(meta: dict, cfg: TrainConfig, path: str | Path = "") -> None:
    """Refuse a teacher cache made from other sources or by another teacher than ``cfg`` names
    (``ConfigError``); other differing synthesis settings are only logged."""
    if not meta:
        raise ConfigError(
            f"teacher cache {path} records no settings (made before they were recorded?): "
            "rebuild it with python -m training.cache_teacher"
        )
    want = cache_meta(cfg)
    names = ("teacher",) if _weights_by_contents(meta, want) else ("teacher", "teacher_weights")
    wrong = [
        f"teacher.{k}: cache {meta.get(k)!r}, config {want[k]!r}"
        for k in names
        if not _same_setting(k, meta.get(k), want[k])
    ]
    if TEACHER_CODE not in meta:
        log.warning(
            "teacher cache %s does not record the teacher's code (made before it was): its "
            "outputs are used as they are; rebuild it if the teacher's network code changed since",
            path,
        )
    elif meta[TEACHER_CODE] != want[TEACHER_CODE]:
        wrong.append(
            f"teacher code: the {cfg.teacher.name} network's code changed since the cache was "
            f"made (cache {meta[TEACHER_CODE][:12]!r}, now {want[TEACHER_CODE][:12]!r})"
        )
    if TEACHER_WEIGHTS_DIGEST not in meta:
        log.warning(
            "teacher cache %s does not record its teacher weights' contents (made before they "
            "were, or without a weights file): its outputs are used as they are; if the weights "
            "changed since, rebuild it (python -m training.cache_teacher --config ...)",
            path,
        )
    elif TEACHER_WEIGHTS_DIGEST not in want:
        log.warning(
            "teacher cache %s: no teacher weights here (%s) to check it was made from the same "
            "ones: its outputs are used as they are",
            path,
            teacher_weights_path(cfg) or "none configured",
        )
    elif meta[TEACHER_WEIGHTS_DIGEST] != want[TEACHER_WEIGHTS_DIGEST]:
        wrong.append(
            f"teacher weights: the contents of {teacher_weights_path(cfg)} changed since the "
            f"cache was made (cache {meta[TEACHER_WEIGHTS_DIGEST]!r}, "
            f"now {want[TEACHER_WEIGHTS_DIGEST]!r})"
        )
    have_data, want_data = meta.get("data", {}), want["data"]
    wrong += [
        f"data.{k}: cache {_cached_data(have_data, k)!r}, config {want_data.get(k)!r}"
        for k in SOURCE_KEYS
        if not _same_setting(k, _cached_data(have_data, k), want_data.get(k))
    ]
    if wrong:
        raise ConfigError(
            f"teacher cache {path} was made from other sources; rebuild it "
            "(python -m training.cache_teacher):\n  " + "\n  ".join(wrong)
        )
    other = _differing_data(have_data, want_data)
    if other:
        log.warning(
            "teacher cache %s was synthesised with other data settings (%s): its patches are "
            "used as they are",
            path,
            ", ".join(other),
        )


def build_cache(
    cfg: TrainConfig,
    *,
    teacher: torch.nn.Module | None = None,
    dataset: DeblurDataset | None = None,
    out: str | Path | None = None,
    count: int | None = None,
    max_minutes: float = 0.0,
    device: str | torch.device = "cpu",
) -> Path:
    """Compute (or extend) the teacher cache file; returns its path."""
    global _setup_done
    _setup_done = False
    where = out or cfg.teacher.cache_path
    if not str(where):  # checked before Path(): Path("") is "."
        raise ConfigError("teacher.cache_path is empty: where should the cache go?")
    out = Path(where)
    if teacher is None:
        from training.teachers import TEACHERS, list_teachers

        if cfg.teacher.name not in TEACHERS:
            # load_teacher's KeyError (unknown teacher '') was a traceback: the configs without
            # a teacher (smoke.yaml) leave the name empty.
            what = f"{cfg.teacher.name!r} is no known teacher" if cfg.teacher.name else "is empty"
            raise ConfigError(
                f"teacher.name {what}: name the teacher whose outputs to cache "
                f"(--teacher.name={' | '.join(list_teachers())})"
            )
    # Before the teacher and the data (minutes on the real data): --out naming some other file
    # is refused in seconds.
    # In a list _build empties: held by a name here, a cache of other settings (gigabytes)
    # stayed in memory for the whole build, whatever _build let go of.
    old = [_existing_cache(out)]
    count = int(count or cfg.teacher.cache_count)
    # Ctrl-C anywhere from here on (the teacher loading, minutes of data, hours of patches) was
    # a traceback that hid that the file was complete: the patches saved so far are reported.
    saved: list[int | None] = [None]
    try:
        return _build(cfg, teacher, dataset, out, count, max_minutes, device, old, saved)
    except CacheInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise CacheInterrupted(out, saved[0], count) from exc


def _build(
    cfg: TrainConfig,
    teacher: torch.nn.Module | None,
    dataset: DeblurDataset | None,
    out: Path,
    count: int,
    max_minutes: float,
    device: str | torch.device,
    old: list[dict | None],
    saved: list[int | None],
) -> Path:
    """``build_cache`` past its checks; ``saved[0]``: the patches of these settings at ``out``."""
    global _setup_done
    # Before the teacher and the data (minutes): a Ctrl-C there said no patch of these settings
    # was saved yet, of a file holding them.
    meta = cache_meta(cfg)
    blur, sharp, outs, keys = [], [], [], []
    other_settings = False
    cached = old.pop()
    if cached is not None:
        old_meta = cached.get("meta") or {}
        if _same_meta(old_meta, meta):
            blur, sharp, outs = [list(cached[k].numpy()) for k in ("blur", "sharp", "teacher")]
            keys = list(cached["keys"])
            saved[0] = len(keys)
            # Its patches so far came from code or weights it did not record: claiming these
            # made them would hide that from the trainer's check.
            meta = {
                k: v
                for k, v in meta.items()
                if k not in (TEACHER_CODE, TEACHER_WEIGHTS_DIGEST) or k in old_meta
            }
            log.info("extending %s: %d of %d patches present", out, len(keys), count)
        else:
            other_settings = True
        del cached  # one of other settings need not stay in memory for the whole build
    P = cfg.teacher.cache_patch
    if teacher is None:
        from training.teachers import load_teacher

        teacher = load_teacher(cfg.teacher.name, weights=cfg.teacher.weights or None, device=device)
    if dataset is None:
        from training.train import build_data

        dataset, _, _ = build_data(cfg, rank=CACHE_STREAM)
    dataset.rank = CACHE_STREAM
    dataset.patch = P
    t0 = time.monotonic()
    index = len(keys)
    out.parent.mkdir(parents=True, exist_ok=True)
    if other_settings:
        from training.train import previous_folder

        # Moved, never deleted: it may be hours of teacher time on a CPU, and the settings it
        # was made with may be the ones wanted back.
        dest = previous_folder(out.parent) / out.name
        os.replace(out, dest)
        log.warning(
            "%s was made with other settings: moved to %s (delete it if unneeded); starting a "
            "new cache",
            out,
            dest,
        )
    _setup_done = True
    while len(keys) < count:
        n = min(cfg.teacher.cache_batch, count - len(keys))
        items = [dataset[index + i] for i in range(n)]
        index += n
        # Quantise first: the teacher sees exactly the uint8 patch the trainer will read back.
        b_u8 = [to_uint8(it["blur"].permute(1, 2, 0).numpy()) for it in items]
        s_u8 = [to_uint8(it["sharp"].permute(1, 2, 0).numpy()) for it in items]
        x = torch.from_numpy(np.stack(b_u8)).permute(0, 3, 1, 2).float().div(255).to(device)
        with torch.no_grad():
            y = teacher(x).float()
        level, given = float(y.mean()), float(x.mean())
        # Deblurring keeps a patch's mean level: a teacher far from its input's is in another
        # range. Clamped, a teacher giving 0-255 filled the cache with white patches without a
        # word (or, on dark patches, within [-1, 2] as first checked, grey ones), and one
        # giving -1 to 1 (tanh) with black ones; the trainer then found "no patch where the
        # teacher beats the input".
        if not abs(level - given) <= _TEACHER_LEVEL_SHIFT:
            raise TeacherRangeError(
                f"teacher {cfg.teacher.name!r} gave outputs of mean {level:.4g} on inputs of "
                f"mean {given:.4g} in [0, 1]: a teacher must return RGB in about [0, 1] (one "
                "giving 0-255, or -1 to 1?)"
            )
        y = y.clamp(0, 1).cpu()
        t_u8 = (y.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        blur += b_u8
        sharp += s_u8
        outs += list(t_u8)
        keys += [content_hash(b) for b in b_u8]
        _save(out, blur, sharp, outs, keys, meta)
        saved[0] = len(keys)
        rate = (time.monotonic() - t0) / max(1, len(keys))
        log.info("teacher cache: %d/%d patches (%.1f s per patch)", len(keys), count, rate)
        if max_minutes and time.monotonic() - t0 > max_minutes * 60:
            log.info("time budget reached; run again to extend the cache")
            break
    if not keys:
        _save(out, blur, sharp, outs, keys, meta)
    # The last line says where the cache went: --out defaults to the config's cache_path, and
    # the per-chunk lines above named neither the file nor its size.
    size = out.stat().st_size / 2**20
    log.info("teacher cache: %d of %d patches in %s (%.1f MiB)", len(keys), count, out, size)
    return out


#: How far a teacher's mean output may lie from its input's (see _build).
_TEACHER_LEVEL_SHIFT = 0.25


class TeacherRangeError(ValueError):
    """The teacher's outputs are in another range than its inputs' [0, 1]: nothing is cached."""


CACHE_KEYS = ("blur", "sharp", "teacher", "keys", "meta")  # what _save writes


def _existing_cache(out: Path) -> dict | None:
    """The teacher cache already at ``out``, None when nothing is there; ConfigError when ``out``
    is something else (a trainer checkpoint, a folder), which a build would overwrite."""
    if not out.exists():
        return None
    refuse = (
        "name another --out (or teacher.cache_path), or move it away: a build would overwrite it"
    )
    if not out.is_file():
        raise ConfigError(f"{out} is not a file, so not a teacher cache: {refuse}")
    try:
        old = torch.load(str(out), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any file torch cannot read is not a cache
        raise ConfigError(
            f"{out} is not a teacher cache (torch cannot read it: {type(exc).__name__}): {refuse}"
        ) from exc
    missing = [k for k in CACHE_KEYS if not isinstance(old, dict) or k not in old]
    damaged = None if missing else damaged_record(out)
    if damaged is not None:
        # Extended, its damaged patches were carried into the new file, which then passed
        # its checksums: the damage could no longer be seen.
        raise ConfigError(
            f"{out} is a damaged teacher cache (its record {damaged} fails its checksum): move "
            "it away (or delete it) and run again to rebuild it"
        )
    if missing:
        # A trainer checkpoint passed as --out was taken for a cache "made with other
        # settings" and overwritten with only a warning.
        raise ConfigError(
            f"{out} is not a teacher cache (no {', '.join(missing)}: a trainer checkpoint?): "
            f"{refuse}"
        )
    return old


def _save(out: Path, blur, sharp, outs, keys, meta) -> None:
    def stack(a):
        if not a:
            return torch.zeros(0, 1, 1, 3, dtype=torch.uint8)
        return torch.from_numpy(np.stack(a))

    data = {
        "blur": stack(blur),
        "sharp": stack(sharp),
        "teacher": stack(outs),
        "keys": keys,
        "meta": meta,
    }
    tmp = out.with_name(out.name + ".tmp")
    try:
        torch.save(data, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk's part file (gigabytes of patches) is freed
        raise


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m training.cache_teacher",
        description=__doc__.split("\n\n")[0],
        epilog=ONLINE_VS_CACHE,
    )
    parser.add_argument("--config", help="training YAML config (teacher.* and data.* are used)")
    parser.add_argument(
        "--count", type=int, default=0, help="patches (default teacher.cache_count)"
    )
    parser.add_argument("--out", default="", help="cache file (default teacher.cache_path)")
    parser.add_argument("--max_minutes", type=float, default=0.0, help="stop after this long")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    # Read by the config as threads= all along, but unlisted here: a user looking for it in
    # --help did not find it.
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: the config's threads; 0 = torch's own default, "
        "one per core)",
    )
    args, cfg = parse_cli(parser, argv)
    if args.threads is not None:
        if args.threads < 0:
            parser.error(f"--threads: expected a number >= 0, got {args.threads}")
        cfg.threads = args.threads
    # As the config's own counts and minutes are checked: -1 wrote an empty cache (moving aside
    # one of other settings), a negative budget stopped after one chunk and NaN meant no limit.
    if args.count < 0:
        parser.error(f"--count: expected a number of patches >= 0, got {args.count}")
    if not (math.isfinite(args.max_minutes) and args.max_minutes >= 0):
        parser.error(f"--max_minutes: expected a finite number >= 0, got {args.max_minutes}")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    from training.train import device_option

    device = device_option(parser, args.device)
    try:
        return build_cache(
            cfg,
            out=args.out or None,
            count=args.count or None,
            max_minutes=args.max_minutes,
            device=device,
        )
    except CacheInterrupted as exc:
        # The file is rewritten whole after each chunk (a Ctrl-C mid-write leaves the last one):
        # what it holds is complete, and the next run extends it.
        if exc.kept is None:
            said = f"no patch of these settings saved in {exc.out} yet"
        else:
            said = f"{exc.kept} of {exc.count} patches kept in {exc.out}; run again to extend it"
        with contextlib.suppress(OSError):  # `| tee log` ended by the same Ctrl-C
            print(f"cache_teacher: interrupted: {said}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except ConfigError as exc:
        if _setup_done:
            raise
        # Refused before any work (--out names another file): one line, as a bad override is.
        parser.error(str(exc))
    except TeacherRangeError as exc:
        # Found on its first outputs, before anything is written: a traceback had said it.
        with contextlib.suppress(OSError):
            print(f"cache_teacher: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    from training.config import exit_leakage, exit_missing_data
    from training.data import LeakageError
    from training.teachers import WeightsError

    try:
        main()
    except (FileNotFoundError, WeightsError) as exc:
        if _setup_done:
            raise  # raised while caching, not by missing data: the traceback says where
        exit_missing_data("cache_teacher", exc)
    except LeakageError as exc:
        exit_leakage("cache_teacher", exc)
