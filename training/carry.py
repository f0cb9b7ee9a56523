"""Pack a training subset of ``../shared`` small enough to travel to a lent GPU machine, and
unpack it there.

    python -m training.carry pack   [--shared ../shared] [--out data_cache]   # here
    python -m training.carry unpack [--out data_cache]                         # on the GPU box

Only the working tree and a few carried folders reach the GPU machine, 64 MiB in all, the
tracked files (~37 MiB of them: weights/, training/checkpoints/) included; the raw 240 fps frames
alone are 57 MB of JPEG. Consecutive 240 fps frames differ little, so an H.264 4:4:4 encode at
CRF 16 keeps all 299 of them in ~2.9 MB at 39-44 dB (mean 42.6) against the JPEGs (CRF 12: 7 MB,
40.6-44.5 dB; the synthesised blur is 26 dB away from sharp, so the codec's error is far below
what the student learns). ffmpeg comes from the PATH or the imageio-ffmpeg package (`pip install
--target /tmp/iioff imageio-ffmpeg` and PYTHONPATH=/tmp/iioff); without either, OpenCV's MJPG is
the fallback (~14 MB: too large to travel beside the tracked files). Photos: a seeded 30 % of
each source folder, longest side 640 px, re-encoded as JPEG q85 (6.8 MB; q92: 9.6 MB). Teacher
and VGG: fp16 copies of their state dicts (the teacher runs under fp16 autocast anyway; the VGG
loads them back into fp32). ``carry.json`` records what was packed, and ``unpack`` checks the
decoded frame count against it; ``pack`` prints what the carry paths and the tracked files add
up to. The folder is ignored by git (``/data_cache/``): nothing from ``../shared`` is committed.

The training frames and the held-out ones are encoded as two separate x264 streams, joined
without re-encoding: in one stream, B-frames and the rate control's lookahead made decoded
training frames (the last ~40 before 240) depend on held-out ones, by up to 35 levels.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

RAW_SEQ = "GOPR0477_11_00"
PHOTO_SIDE = 640
PHOTO_SHARE = 0.3
PHOTO_QUALITY = 85
CRF = 16
LIMIT = 64 * 2**20  # what travels to the GPU machine: tracked files + carried paths
# What gpu_session.sh's training call carries (gopro.avi instead where pack fell back to MJPG).
CARRY = ("gopro.mkv", "carry.json", "photos", "dmphn", "vgg")
# The Urban100 photos the leakage guard found among the Lai benchmark's sharp images (the
# configs' data.exclude; 024 and 051 are crops of a few pixels, seen by its near-duplicate check).
EXCLUDE = {("curban100", f"img_{n:03d}.jpg") for n in (24, 49, 51, 98)}
SUBDIRS = ("photos", "dmphn", "vgg", "raw")
#: The trainer's first held-out raw frame (``data.raw_val_range``'s default).
HELD_OUT_FIRST = 240


def _imread(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    if img is None:
        raise ValueError(f"cannot decode image {path}")
    return img


def _raw_frames(raw: Path) -> list[Path]:
    """The sequence's frames, which must be numbered 000001.jpg .. N.jpg without gaps: the
    trainer's frame ranges (1-239 train, 240-299 held out) are positions in that numbering."""
    frames = sorted(raw.glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"no raw frames (*.jpg) in {raw}")
    expected = [f"{i:06d}.jpg" for i in range(1, len(frames) + 1)]
    if [p.name for p in frames] != expected:
        odd = next(p.name for p, e in zip(frames, expected, strict=True) if p.name != e)
        raise ValueError(f"raw frames in {raw} must be 000001.jpg..{expected[-1]}; found {odd}")
    return frames


def _ffmpeg() -> str | None:
    """ffmpeg on the PATH, else the binary of the imageio-ffmpeg package when it is importable."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        try:
            import imageio_ffmpeg  # type: ignore[import-not-found]

            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            return None
    return exe


def pack(
    shared: Path,
    out: Path,
    *,
    crf: int = CRF,
    seed: int = 0,
    codec: str = "auto",
    photo_quality: int = PHOTO_QUALITY,
    held_out_first: int = HELD_OUT_FIRST,
) -> Path:
    """Write ``out/{gopro.mkv|gopro.avi, photos/, dmphn/, vgg/, carry.json}`` from ``shared``
    (replacing what an earlier pack left there); returns the video's path. ``codec``: ``x264``
    (ffmpeg), ``mjpg`` (OpenCV alone) or ``auto`` (x264 when ffmpeg is found: see ``_ffmpeg``).
    ``held_out_first``: the first held-out frame; x264 encodes the frames before it and from it
    as two streams, so that no decoded training frame depends on a held-out one (MJPG codes
    every frame on its own)."""
    if codec == "auto":
        codec = "x264" if _ffmpeg() else "mjpg"
    if codec not in ("x264", "mjpg"):
        raise ValueError(f"codec must be auto, x264 or mjpg, got {codec!r}")
    if held_out_first < 1:
        raise ValueError(f"held_out_first must be a frame number (1 or more), got {held_out_first}")
    frames = _raw_frames(shared / "data/train/gopro_raw_240fps" / RAW_SEQ)
    teacher = sorted((shared / "weights/teachers/dmphn_1_2_4").glob("*.pkl"))
    if not teacher:
        raise FileNotFoundError(f"no DMPHN state dicts (*.pkl) in {shared / 'weights/teachers'}")
    vgg = shared / "weights/vgg19_normalised/vgg_normalised_conv3_1.pth"
    if not vgg.is_file():
        raise FileNotFoundError(f"no VGG-19 weights at {vgg}")
    out.mkdir(parents=True, exist_ok=True)
    # A stale file from an earlier pack (another seed, a photo excluded since) must not travel,
    # nor its carry.json beside a pack that fails midway: it would pass for this pack's record.
    for stale in out.glob("gopro.*"):
        stale.unlink()
    (out / "carry.json").unlink(missing_ok=True)
    for sub in SUBDIRS:
        shutil.rmtree(out / sub, ignore_errors=True)

    video = out / ("gopro.mkv" if codec == "x264" else "gopro.avi")
    # Written under another name (the same extension: both writers take the container from it)
    # and renamed once whole: a pack stopped midway (a frame that does not decode, ffmpeg
    # failing) left a truncated video under the name unpack reads.
    partial = video.with_name(f"gopro.partial{video.suffix}")
    try:
        if codec == "x264":
            ffmpeg = _ffmpeg()
            if ffmpeg is None:
                raise RuntimeError(
                    "codec x264 needs ffmpeg on the PATH or the imageio-ffmpeg package "
                    "(pip install --target /tmp/iioff imageio-ffmpeg; PYTHONPATH=/tmp/iioff)"
                )
            # Each part encoded on its own (an IDR frame opens each; no reference, B-frame or
            # lookahead crosses the boundary), then the streams joined as they are.
            parts = [
                (first, n)
                for first, n in (
                    (1, min(held_out_first - 1, len(frames))),
                    (held_out_first, len(frames)),
                )
                if n >= first
            ]
            pieces = [partial.with_name(f"gopro.part{i}{video.suffix}") for i in range(len(parts))]
            try:
                for (first, last), piece in zip(parts, pieces, strict=True):
                    subprocess.run(
                        [ffmpeg, "-loglevel", "error", "-y", "-framerate", "240"]
                        + ["-start_number", str(first), "-i", str(frames[0].parent / "%06d.jpg")]
                        + ["-frames:v", str(last - first + 1), "-c:v", "libx264"]
                        + ["-preset", "slow", "-crf", str(crf), "-pix_fmt", "yuv444p", str(piece)],
                        check=True,
                    )
                listing = partial.with_name("gopro.parts.txt")
                # Absolute paths (the demuxer reads relative ones from the list's folder) need
                # -safe 0; a quote inside a quoted path is closed, escaped and reopened.
                quoted = [str(p.resolve()).replace("'", "'\\''") for p in pieces]
                listing.write_text("".join(f"file '{q}'\n" for q in quoted), encoding="utf-8")
                subprocess.run(
                    [ffmpeg, "-loglevel", "error", "-y", "-f", "concat", "-safe", "0"]
                    + ["-i", str(listing), "-c", "copy", str(partial)],
                    check=True,
                )
            finally:
                for piece in pieces:
                    piece.unlink(missing_ok=True)
                partial.with_name("gopro.parts.txt").unlink(missing_ok=True)
        else:
            h, w = _imread(frames[0]).shape[:2]
            writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), 240, (w, h))
            try:
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write MJPG to {partial}")
                for p in frames:
                    writer.write(_imread(p))
            finally:
                writer.release()  # before the rename or removal: it finishes the file
        os.replace(partial, video)
    finally:
        partial.unlink(missing_ok=True)

    rng = random.Random(seed)
    photos: list[str] = []
    for folder in sorted(p for p in (shared / "data/train/photos").iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        files = [p for p in files if (folder.name, p.name) not in EXCLUDE]
        k = min(len(files), max(2, round(len(files) * PHOTO_SHARE)))
        for p in rng.sample(files, k):
            img = _imread(p)
            h, w = img.shape[:2]
            s = PHOTO_SIDE / max(h, w)
            if s < 1:
                img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            dst = out / "photos" / folder.name / f"{p.stem}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, photo_quality])
            photos.append(f"{folder.name}/{p.name}")

    (out / "dmphn").mkdir()
    for f in teacher:
        _save_half(f, out / "dmphn" / f.name)
    (out / "vgg").mkdir()
    _save_half(vgg, out / "vgg" / vgg.name)
    manifest = {"sequence": RAW_SEQ, "frames": len(frames), "video": video.name, "codec": codec}
    manifest |= {"crf": crf if codec == "x264" else None, "seed": seed}
    manifest |= {"held_out_first": held_out_first}
    manifest |= {"photo_quality": photo_quality, "photos": sorted(photos)}
    (out / "carry.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return video


def _save_half(src: Path, dst: Path) -> None:
    import torch

    sd = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, dst)


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def travel_sizes(out: Path, repo: Path, extra: tuple[Path, ...] = ()) -> dict[str, int]:
    """Bytes of each carry path (``out``'s CARRY entries, the video whichever codec wrote it, and
    ``extra``, e.g. ``.whl``), of the files git tracks in ``repo`` (``tracked``) and of the
    untracked files it does not ignore (``untracked``, when there are any): what the GPU
    machine's 64 MiB limit counts."""
    sizes: dict[str, int] = {}
    for name in CARRY + ("gopro.avi",):
        if (out / name).exists():
            sizes[str(out / name)] = _size(out / name)
    for p in extra:
        if p.exists():
            sizes[str(p)] = _size(p)

    def listed(*args: str) -> list[Path]:
        names = subprocess.run(
            ["git", "ls-files", "-z", *args], cwd=repo, capture_output=True, check=True
        ).stdout.split(b"\0")
        return [repo / f.decode() for f in names if f]

    sizes["tracked"] = sum(f.stat().st_size for f in listed() if f.is_file())
    # A new module or a scratch file not yet committed travels too: left out, the sum said
    # "fits" for a tree the call would refuse. The carry paths are counted above already
    # (they are ignored in this repository, but need not be elsewhere).
    carried = [Path(k).resolve() for k in sizes if k != "tracked"]
    untracked = [
        f
        for f in listed("--others", "--exclude-standard")
        if f.is_file() and not any(f.resolve().is_relative_to(c) for c in carried)
    ]
    if untracked:
        sizes["untracked"] = sum(f.stat().st_size for f in untracked)
    return sizes


def unpack(out: Path) -> int:
    """Decode ``out/gopro.{mkv,avi}`` into ``out/raw/<seq>/000001.png ...`` (replacing an earlier
    unpack); returns the frame count, checked against ``carry.json`` when it is there."""
    videos = [p for p in (out / "gopro.mkv", out / "gopro.avi") if p.is_file()]
    if not videos:
        raise FileNotFoundError(f"no gopro.mkv or gopro.avi in {out} (run pack first)")
    # Decoded beside out/raw and moved there once whole and counted: a decode that failed
    # midway (a full disk) or came up short left fewer frames there, which the trainer would
    # take for the packed sequence, its held-out range (frame positions) shifted.
    shutil.rmtree(out / "raw", ignore_errors=True)
    partial = out / "raw.partial"
    shutil.rmtree(partial, ignore_errors=True)
    dst = partial / RAW_SEQ
    dst.mkdir(parents=True)
    try:
        cap = cv2.VideoCapture(str(videos[0]))
        n = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                n += 1
                path = dst / f"{n:06d}.png"
                if not cv2.imwrite(str(path), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise OSError(f"cannot write {path}")
        finally:
            cap.release()
        # A video cut short in transit was blamed on a missing decoder, sending the reader to
        # reinstall OpenCV instead of copying the file again.
        if n == 0:
            raise RuntimeError(f"could not decode {videos[0]}: {_why_no_frame(videos[0])}")
        meta = out / "carry.json"
        if meta.is_file():
            expected = _packed_frames(meta)
            if n < expected:
                raise RuntimeError(
                    f"{videos[0]} is cut short or damaged: decoded {n} frames from it, packed "
                    f"{expected} (copy it again, or pack again)"
                )
            if n != expected:
                raise RuntimeError(f"decoded {n} frames from {videos[0]}, packed {expected}")
        partial.rename(out / "raw")
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return n


def _why_no_frame(video: Path) -> str:
    """Why OpenCV decoded no frame of ``video``: the file or, for an x264 MKV, OpenCV itself."""
    size = video.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes): copy it again, or pack again"
    if video.suffix == ".mkv" and not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        # The MJPG AVI needs none: OpenCV decodes it with its own reader.
        return "this OpenCV has no FFmpeg backend to decode x264 (pack with --codec mjpg)"
    return f"damaged or not a video OpenCV decodes ({size} bytes)"


def _packed_frames(meta: Path) -> int:
    """The frame count ``pack`` recorded in ``meta`` (its carry.json)."""
    try:
        frames = json.loads(meta.read_text(encoding="utf-8"))["frames"]
    except (ValueError, KeyError, TypeError) as exc:
        # A KeyError (a hand-made or foreign carry.json) was a traceback, and a JSON error
        # did not say which file it was about.
        raise ValueError(f"{meta} is not pack's record ({type(exc).__name__}: {exc})") from None
    if not isinstance(frames, int) or isinstance(frames, bool):
        raise ValueError(f"{meta} is not pack's record (frames: {frames!r})")
    return frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m training.carry",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    ap.add_argument("action", choices=["pack", "unpack"])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--out", type=Path, default=Path("data_cache"))
    ap.add_argument("--codec", choices=("auto", "x264", "mjpg"), default="auto")
    ap.add_argument("--crf", type=int, default=CRF, help="x264 quality (lower: larger, closer)")
    ap.add_argument("--photo-quality", type=int, default=PHOTO_QUALITY, help="JPEG quality")
    args = ap.parse_args(argv)
    # Before pack clears the earlier pack: x264 fails on a CRF below 0 (a traceback, the old
    # pack already gone), clamps one above 51 and OpenCV a JPEG quality outside 0-100, while
    # carry.json recorded the number asked for.
    if not 0 <= args.crf <= 51:
        ap.error(f"--crf: expected 0-51 (x264's range), got {args.crf}")
    if not 0 <= args.photo_quality <= 100:
        ap.error(f"--photo-quality: expected 0-100, got {args.photo_quality}")
    try:
        if args.action == "pack":
            video = pack(
                args.shared,
                args.out,
                codec=args.codec,
                crf=args.crf,
                photo_quality=args.photo_quality,
            )
            print(f"wrote {video} and {args.out}/{{photos,dmphn,vgg,carry.json}}")
            try:
                sizes = travel_sizes(args.out, Path("."), (Path(".whl"),))
            except (OSError, subprocess.CalledProcessError):
                return  # not in a git checkout: nothing to add up
            for k, v in sizes.items():
                print(f"  {v / 2**20:7.2f} MiB  {k}")
            total = sum(sizes.values())
            verdict = "fits" if total <= LIMIT else "OVER the limit: the call would be refused"
            print(f"  {total / 2**20:7.2f} MiB  in all, of {LIMIT / 2**20:.0f} MiB: {verdict}")
        else:
            print(f"decoded {unpack(args.out)} frames into {args.out / 'raw' / RAW_SEQ}")
    except subprocess.CalledProcessError as exc:
        # ffmpeg printed its own reason above (-loglevel error); a traceback added nothing.
        raise SystemExit(f"carry {args.action}: ffmpeg failed (exit {exc.returncode})") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"carry {args.action}: {exc}") from None


if __name__ == "__main__":
    main()
