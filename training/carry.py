"""Pack a training subset of ``../shared`` small enough to travel to a lent GPU machine, and
unpack it there.

    python -m training.carry pack   [--shared ../shared] [--out data_cache]   # here
    python -m training.carry unpack [--out data_cache]                         # on the GPU box

Only the working tree and a few carried folders (64 MiB in all) reach the GPU machine, and the
raw 240 fps frames alone are 57 MB of JPEG. Consecutive 240 fps frames differ little, so an
H.264 4:4:4 encode at CRF 12 keeps all 299 of them in ~6 MB at ~43 dB against the JPEGs (the
synthesised blur is 26 dB away from sharp, so the codec's error is far below what the student
learns). Photos: a seeded 30 % of each source folder, longest side 640 px. Teacher: fp16 copies
of the DMPHN state dicts (the teacher runs under fp16 autocast anyway). The folder is ignored by
git (``/data_cache/``): nothing from ``../shared`` is committed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
from pathlib import Path

import cv2

RAW_SEQ = "GOPR0477_11_00"
PHOTO_SIDE = 640
PHOTO_SHARE = 0.3
# The two Urban100 photos the leakage guard found among the Lai benchmark's sharp images.
EXCLUDE = {("curban100", "img_049.jpg"), ("curban100", "img_098.jpg")}


def pack(shared: Path, out: Path, *, crf: int = 12, seed: int = 0, codec: str = "auto") -> Path:
    """Write ``out/{gopro.mkv|gopro.avi, photos/, dmphn/, vgg/}`` from ``shared``; returns the
    video's path. ``codec``: ``x264`` (ffmpeg, the small one), ``mjpg`` (OpenCV alone, ~8x
    larger) or ``auto`` (x264 when ffmpeg is on the PATH)."""
    import torch

    if codec == "auto":
        codec = "x264" if shutil.which("ffmpeg") else "mjpg"
    if codec not in ("x264", "mjpg"):
        raise ValueError(f"codec must be auto, x264 or mjpg, got {codec!r}")
    out.mkdir(parents=True, exist_ok=True)
    raw = shared / "data/train/gopro_raw_240fps" / RAW_SEQ
    frames = sorted(raw.glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"no raw frames (*.jpg) in {raw}")
    for stale in out.glob("gopro.*"):
        stale.unlink()
    if codec == "x264":
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("codec x264 needs ffmpeg on the PATH (apt-get install ffmpeg)")
        video = out / "gopro.mkv"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-framerate", "240", "-start_number", "1"]
            + ["-i", str(raw / "%06d.jpg"), "-frames:v", str(len(frames)), "-c:v", "libx264"]
            + ["-preset", "slow", "-crf", str(crf), "-pix_fmt", "yuv444p", str(video)],
            check=True,
        )
    else:
        video = out / "gopro.avi"
        first = cv2.imread(str(frames[0]))
        h, w = first.shape[:2]
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 240, (w, h))
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
        for p in frames:
            writer.write(cv2.imread(str(p)))
        writer.release()
    rng = random.Random(seed)
    photos = shared / "data/train/photos"
    for folder in sorted(p for p in photos.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        files = [p for p in files if (folder.name, p.name) not in EXCLUDE]
        for p in rng.sample(files, min(len(files), max(2, round(len(files) * PHOTO_SHARE)))):
            img = cv2.imread(str(p))
            h, w = img.shape[:2]
            s = PHOTO_SIDE / max(h, w)
            if s < 1:
                img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            dst = out / "photos" / folder.name / f"{p.stem}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    (out / "dmphn").mkdir(exist_ok=True)
    for f in sorted((shared / "weights/teachers/dmphn_1_2_4").glob("*.pkl")):
        sd = torch.load(f, map_location="cpu", weights_only=True)
        torch.save(
            {k: v.half() if v.is_floating_point() else v for k, v in sd.items()},
            out / "dmphn" / f.name,
        )
    (out / "vgg").mkdir(exist_ok=True)
    shutil.copy2(shared / "weights/vgg19_normalised/vgg_normalised_conv3_1.pth", out / "vgg")
    return video


def unpack(out: Path) -> int:
    """Decode ``out/gopro.{mkv,avi}`` into ``out/raw/<seq>/000001.png ...``; returns the count."""
    videos = [p for p in (out / "gopro.mkv", out / "gopro.avi") if p.is_file()]
    if not videos:
        raise FileNotFoundError(f"no gopro.mkv or gopro.avi in {out} (run pack first)")
    dst = out / "raw" / RAW_SEQ
    dst.mkdir(parents=True, exist_ok=True)
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
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["pack", "unpack"])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--out", type=Path, default=Path("data_cache"))
    ap.add_argument("--codec", choices=("auto", "x264", "mjpg"), default="auto")
    args = ap.parse_args()
    if args.action == "pack":
        print(
            f"wrote {pack(args.shared, args.out, codec=args.codec)} and {args.out}/{{photos,dmphn,vgg}}"
        )
    else:
        print(f"decoded {unpack(args.out)} frames into {args.out / 'raw' / RAW_SEQ}")


if __name__ == "__main__":
    main()
