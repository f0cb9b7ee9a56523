"""Pack a training subset of ``../shared`` small enough to travel to a lent GPU machine, and
unpack it there.

    python -m training.carry pack   [--shared ../shared] [--out data_cache]   # here
    python -m training.carry unpack [--out data_cache]                         # on the GPU box

Only the working tree and a few carried folders (64 MiB in all) reach the GPU machine, and the
raw 240 fps frames alone are 57 MB of JPEG. Consecutive 240 fps frames differ little, so an
H.264 4:4:4 encode at CRF 12 keeps all 299 of them in ~6 MB at 42-44 dB against the JPEGs (the
synthesised blur is 26 dB away from sharp, so the codec's error is far below what the student
learns). Without ffmpeg, OpenCV's MJPG is the fallback (~2x larger). Photos: a seeded 30 % of
each source folder, longest side 640 px, re-encoded as JPEG q92. Teacher: fp16 copies of the
DMPHN state dicts (the teacher runs under fp16 autocast anyway). ``carry.json`` records what was
packed, and ``unpack`` checks the decoded frame count against it. The folder is ignored by git
(``/data_cache/``): nothing from ``../shared`` is committed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

RAW_SEQ = "GOPR0477_11_00"
PHOTO_SIDE = 640
PHOTO_SHARE = 0.3
PHOTO_QUALITY = 92
# The two Urban100 photos the leakage guard found among the Lai benchmark's sharp images.
EXCLUDE = {("curban100", "img_049.jpg"), ("curban100", "img_098.jpg")}
SUBDIRS = ("photos", "dmphn", "vgg", "raw")


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


def pack(shared: Path, out: Path, *, crf: int = 12, seed: int = 0, codec: str = "auto") -> Path:
    """Write ``out/{gopro.mkv|gopro.avi, photos/, dmphn/, vgg/, carry.json}`` from ``shared``
    (replacing what an earlier pack left there); returns the video's path. ``codec``: ``x264``
    (ffmpeg), ``mjpg`` (OpenCV alone) or ``auto`` (x264 when ffmpeg is on the PATH)."""
    import torch

    if codec == "auto":
        codec = "x264" if shutil.which("ffmpeg") else "mjpg"
    if codec not in ("x264", "mjpg"):
        raise ValueError(f"codec must be auto, x264 or mjpg, got {codec!r}")
    frames = _raw_frames(shared / "data/train/gopro_raw_240fps" / RAW_SEQ)
    teacher = sorted((shared / "weights/teachers/dmphn_1_2_4").glob("*.pkl"))
    if not teacher:
        raise FileNotFoundError(f"no DMPHN state dicts (*.pkl) in {shared / 'weights/teachers'}")
    vgg = shared / "weights/vgg19_normalised/vgg_normalised_conv3_1.pth"
    if not vgg.is_file():
        raise FileNotFoundError(f"no VGG-19 weights at {vgg}")
    out.mkdir(parents=True, exist_ok=True)
    # A stale file from an earlier pack (another seed, a photo excluded since) must not travel.
    for stale in out.glob("gopro.*"):
        stale.unlink()
    for sub in SUBDIRS:
        shutil.rmtree(out / sub, ignore_errors=True)

    if codec == "x264":
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("codec x264 needs ffmpeg on the PATH (apt-get install ffmpeg)")
        video = out / "gopro.mkv"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-framerate", "240", "-start_number", "1"]
            + ["-i", str(frames[0].parent / "%06d.jpg"), "-frames:v", str(len(frames))]
            + ["-c:v", "libx264", "-preset", "slow", "-crf", str(crf), "-pix_fmt", "yuv444p"]
            + [str(video)],
            check=True,
        )
    else:
        video = out / "gopro.avi"
        h, w = _imread(frames[0]).shape[:2]
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 240, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write MJPG to {video}")
        for p in frames:
            writer.write(_imread(p))
        writer.release()

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
            cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, PHOTO_QUALITY])
            photos.append(f"{folder.name}/{p.name}")

    (out / "dmphn").mkdir()
    for f in teacher:
        sd = torch.load(f, map_location="cpu", weights_only=True)
        half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        torch.save(half, out / "dmphn" / f.name)
    (out / "vgg").mkdir()
    shutil.copy2(vgg, out / "vgg")
    manifest = {"sequence": RAW_SEQ, "frames": len(frames), "video": video.name, "codec": codec}
    manifest |= {"crf": crf if codec == "x264" else None, "seed": seed, "photos": sorted(photos)}
    (out / "carry.json").write_text(json.dumps(manifest, indent=1))
    return video


def unpack(out: Path) -> int:
    """Decode ``out/gopro.{mkv,avi}`` into ``out/raw/<seq>/000001.png ...`` (replacing an earlier
    unpack); returns the frame count, checked against ``carry.json`` when it is there."""
    videos = [p for p in (out / "gopro.mkv", out / "gopro.avi") if p.is_file()]
    if not videos:
        raise FileNotFoundError(f"no gopro.mkv or gopro.avi in {out} (run pack first)")
    dst = out / "raw" / RAW_SEQ
    shutil.rmtree(out / "raw", ignore_errors=True)
    dst.mkdir(parents=True)
    cap = cv2.VideoCapture(str(videos[0]))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        cv2.imwrite(str(dst / f"{n:06d}.png"), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    cap.release()
    if n == 0:
        raise RuntimeError(f"could not decode {videos[0]} (no decoder for it in this OpenCV?)")
    meta = out / "carry.json"
    if meta.is_file():
        expected = json.loads(meta.read_text())["frames"]
        if n != expected:
            # A short decode would shift every frame number, and with it the held-out range.
            raise RuntimeError(f"decoded {n} frames from {videos[0]}, packed {expected}")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["pack", "unpack"])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--out", type=Path, default=Path("data_cache"))
    ap.add_argument("--codec", choices=("auto", "x264", "mjpg"), default="auto")
    args = ap.parse_args()
    try:
        if args.action == "pack":
            video = pack(args.shared, args.out, codec=args.codec)
            print(f"wrote {video} and {args.out}/{{photos,dmphn,vgg,carry.json}}")
        else:
            print(f"decoded {unpack(args.out)} frames into {args.out / 'raw' / RAW_SEQ}")
    except (OSError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"carry {args.action}: {exc}") from None


if __name__ == "__main__":
    main()
