"""The carried training subset: pack a small fake ``shared`` tree, unpack it, check what arrives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training import carry


def _fake_shared(root: Path, n_frames: int = 12) -> Path:
    rng = np.random.default_rng(0)
    raw = root / "data/train/gopro_raw_240fps" / carry.RAW_SEQ
    raw.mkdir(parents=True)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (128, 96))
    for i in range(1, n_frames + 1):
        frame = np.roll(base, 2 * i, axis=1)  # a smooth pan, like consecutive 240 fps frames
        cv2.imwrite(str(raw / f"{i:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    photos = root / "data/train/photos"
    (photos / "cset5").mkdir(parents=True)
    for j in range(5):
        img = rng.integers(0, 256, (300, 800 if j == 0 else 200, 3), dtype=np.uint8)
        cv2.imwrite(str(photos / "cset5" / f"img_{j:03d}.jpg"), img)
    # Two Lai benchmark images and one other: only the other may travel.
    (photos / "curban100").mkdir(parents=True)
    for name in ("img_049.jpg", "img_050.jpg", "img_098.jpg"):
        cv2.imwrite(str(photos / "curban100" / name), base)
    teacher = root / "weights/teachers/dmphn_1_2_4"
    teacher.mkdir(parents=True)
    for part in ("encoder_lv1", "decoder_lv1"):
        torch.save({"w": torch.randn(4, 3), "n": torch.tensor(3)}, teacher / f"{part}.pkl")
    vgg = root / "weights/vgg19_normalised"
    vgg.mkdir(parents=True)
    torch.save({"0.weight": torch.randn(3, 3, 1, 1)}, vgg / "vgg_normalised_conv3_1.pth")
    return root


@pytest.mark.parametrize(
    "codec",
    [
        "mjpg",
        pytest.param(
            "x264",
            # the same lookup pack() makes: the PATH, else the imageio-ffmpeg package
            marks=pytest.mark.skipif(carry._ffmpeg() is None, reason="no ffmpeg here"),
        ),
    ],
)
def test_pack_then_unpack_round_trips(tmp_path: Path, codec: str) -> None:
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "cache"
    video = carry.pack(shared, out, codec=codec)
    assert video.suffix == (".mkv" if codec == "x264" else ".avi")
    assert carry.unpack(out) == 12
    frames = sorted((out / "raw" / carry.RAW_SEQ).glob("*.png"))
    assert [p.name for p in frames[:2]] == ["000001.png", "000002.png"]
    for i in (1, 7, 12):
        ref = cv2.imread(
            str(shared / "data/train/gopro_raw_240fps" / carry.RAW_SEQ / f"{i:06d}.jpg")
        )
        got = cv2.imread(str(frames[i - 1]))
        mse = np.mean((ref.astype(np.float64) - got) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-10)) > 30, f"frame {i} decoded too far off"
    # 30 % of each folder, at least two; the Lai overlap is never among them; longest side 640.
    assert len(list((out / "photos/cset5").glob("*.jpg"))) == 2
    assert [p.name for p in (out / "photos/curban100").glob("*.jpg")] == ["img_050.jpg"]
    assert all(max(cv2.imread(str(p)).shape[:2]) <= 640 for p in (out / "photos").rglob("*.jpg"))
    sd = torch.load(out / "dmphn/encoder_lv1.pkl", weights_only=True)
    assert sd["w"].dtype == torch.float16 and sd["n"].dtype == torch.int64
    vgg = torch.load(out / "vgg/vgg_normalised_conv3_1.pth", weights_only=True)
    assert vgg["0.weight"].dtype == torch.float16  # half the bytes; the loss loads it into fp32
    meta = json.loads((out / "carry.json").read_text())
    assert (
        meta["frames"] == 12
        and meta["codec"] == codec
        and "curban100/img_050.jpg" in meta["photos"]
    )


def test_without_ffmpeg_auto_packs_mjpg_and_x264_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What CI (no ffmpeg) and the x264 round trip above cannot show: the fallback itself.
    monkeypatch.setattr(carry, "_ffmpeg", lambda: None)
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "cache"
    video = carry.pack(shared, out, codec="auto")
    assert video == out / "gopro.avi"
    assert json.loads((out / "carry.json").read_text())["codec"] == "mjpg"
    assert carry.unpack(out) == 12
    with pytest.raises(RuntimeError, match="codec x264 needs ffmpeg"):
        carry.pack(shared, tmp_path / "cache2", codec="x264")
    assert not (tmp_path / "cache2" / "gopro.mkv").exists()


def test_repack_and_unpack_replace_what_was_there(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "cache"
    (out / "photos/old_source").mkdir(parents=True)
    (out / "photos/old_source/x.jpg").write_bytes(b"stale")
    (out / f"raw/{carry.RAW_SEQ}").mkdir(parents=True)
    (out / f"raw/{carry.RAW_SEQ}/000099.png").write_bytes(b"stale")
    carry.pack(shared, out, codec="mjpg")
    assert not (out / "photos/old_source").exists()
    assert carry.unpack(out) == 12
    assert len(list((out / f"raw/{carry.RAW_SEQ}").iterdir())) == 12


def test_unpack_refuses_a_short_decode(tmp_path: Path) -> None:
    # A frame lost in decoding would shift every frame number and the held-out range with them.
    out = tmp_path / "cache"
    carry.pack(_fake_shared(tmp_path / "shared"), out, codec="mjpg")
    meta = json.loads((out / "carry.json").read_text())
    (out / "carry.json").write_text(json.dumps(meta | {"frames": 13}))
    with pytest.raises(RuntimeError, match="decoded 12 frames .* packed 13"):
        carry.unpack(out)
    assert not (out / "raw").exists() and not (out / "raw.partial").exists()


class _Released:
    """Wraps an OpenCV VideoWriter or VideoCapture and records whether it was released."""

    def __init__(self, inner: object) -> None:
        self.inner, self.released = inner, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def release(self) -> None:
        self.released = True
        self.inner.release()


def _spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> list[_Released]:
    """Replace ``cv2.<name>`` (VideoWriter, VideoCapture) by one whose objects are recorded."""
    made: list[_Released] = []
    real = getattr(cv2, name)

    def make(*args: object) -> _Released:
        made.append(_Released(real(*args)))
        return made[-1]

    monkeypatch.setattr(cv2, name, make)
    return made


@pytest.mark.parametrize("codec", ["mjpg", "x264"])
def test_a_pack_that_fails_midway_releases_its_writer_and_leaves_no_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str
) -> None:
    # A truncated gopro.* (and the earlier pack's carry.json beside it) looked like a whole pack.
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "cache"
    carry.pack(shared, out, codec="mjpg")  # an earlier, whole pack
    writers = _spy_on(monkeypatch, "VideoWriter")
    if codec == "mjpg":
        real_imread, calls = carry._imread, []

        def imread(path: Path) -> np.ndarray:
            calls.append(path)
            if len(calls) == 6:  # the frame size, then frames 1-4 written
                raise ValueError(f"cannot decode image {path}")
            return real_imread(path)

        monkeypatch.setattr(carry, "_imread", imread)
        fails = pytest.raises(ValueError, match="cannot decode image")
    else:  # ffmpeg stopped halfway through its output

        def run(cmd: list[str], **kwargs: object) -> None:
            Path(cmd[-1]).write_bytes(b"half a video")
            raise subprocess.CalledProcessError(1, cmd)

        monkeypatch.setattr(carry, "_ffmpeg", lambda: "ffmpeg")
        monkeypatch.setattr(carry.subprocess, "run", run)
        fails = pytest.raises(subprocess.CalledProcessError)
    with fails:
        carry.pack(shared, out, codec=codec)
    assert len(writers) == (1 if codec == "mjpg" else 0) and all(w.released for w in writers)
    assert list(out.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="run pack first"):
        carry.unpack(out)


@pytest.mark.parametrize("failure", ["raises", "returns False"])
def test_an_unpack_that_fails_midway_releases_its_reader_and_leaves_no_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    # The frames written before the failure stayed: a shorter sequence the trainer would use.
    out = tmp_path / "cache"
    carry.pack(_fake_shared(tmp_path / "shared"), out, codec="mjpg")
    assert carry.unpack(out) == 12  # an earlier, whole unpack
    readers = _spy_on(monkeypatch, "VideoCapture")
    real_imwrite, calls = cv2.imwrite, []

    def imwrite(path: str, *args: object) -> bool:
        calls.append(path)
        if len(calls) == 5:  # a full disk
            if failure == "raises":
                raise cv2.error("No space left on device")
            return False  # what cv2.imwrite does for most failures
        return real_imwrite(path, *args)

    monkeypatch.setattr(cv2, "imwrite", imwrite)
    fails = (
        pytest.raises(cv2.error, match="No space")
        if failure == "raises"
        else pytest.raises(OSError, match=r"cannot write .*000005\.png")
    )
    with fails:
        carry.unpack(out)
    assert len(readers) == 1 and readers[0].released
    assert not (out / "raw").exists() and not (out / "raw.partial").exists()


def test_pack_refuses_gaps_in_the_frame_numbers_and_missing_weights(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")
    raw = shared / "data/train/gopro_raw_240fps" / carry.RAW_SEQ
    (raw / "000005.jpg").rename(raw / "000013.jpg")
    with pytest.raises(ValueError, match="found 000006.jpg"):
        carry.pack(shared, tmp_path / "o", codec="mjpg")
    (raw / "000013.jpg").rename(raw / "000005.jpg")
    for f in (shared / "weights/teachers/dmphn_1_2_4").glob("*.pkl"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no DMPHN state dicts"):
        carry.pack(shared, tmp_path / "o", codec="mjpg")


def test_unpack_without_a_video_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run pack first"):
        carry.unpack(tmp_path)


def test_pack_refuses_an_unknown_codec_and_missing_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="codec must be"):
        carry.pack(tmp_path, tmp_path / "o", codec="h265")
    with pytest.raises(FileNotFoundError, match="no raw frames"):
        carry.pack(tmp_path, tmp_path / "o", codec="mjpg")


def test_travel_sizes_count_the_tracked_files_beside_the_carry_paths(tmp_path: Path) -> None:
    # The GPU machine's 64 MiB covers the tracked files too (~40 MiB of weights and checkpoints
    # here): a carry that fits alone can still get the call refused.
    out = tmp_path / "repo/data_cache"
    carry.pack(_fake_shared(tmp_path / "shared"), out, codec="mjpg", photo_quality=70)
    assert json.loads((out / "carry.json").read_text())["photo_quality"] == 70
    repo = tmp_path / "repo"
    (repo / "w.bin").write_bytes(b"x" * 1000)
    (repo / "untracked.bin").write_bytes(b"x" * 7)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "w.bin"], check=True)
    (repo / ".whl").mkdir()
    (repo / ".whl/k.whl").write_bytes(b"x" * 10)
    sizes = carry.travel_sizes(out, repo, (repo / ".whl",))
    assert sizes["tracked"] == 1000 and sizes[str(repo / ".whl")] == 10
    # Untracked files git does not ignore travel too; the carry paths are not counted twice.
    assert sizes["untracked"] == 7
    assert set(sizes) == {"tracked", "untracked", str(repo / ".whl")} | {
        str(out / n) for n in ("gopro.avi", "carry.json", "photos", "dmphn", "vgg")
    }
    (repo / ".gitignore").write_text("untracked.bin\n")
    sizes = carry.travel_sizes(out, repo, (repo / ".whl",))
    assert sizes["untracked"] == len("untracked.bin\n")  # .gitignore itself is untracked
    assert sizes[str(out / "dmphn")] == sum(f.stat().st_size for f in (out / "dmphn").iterdir())


def test_pack_shrinks_large_photos_and_writes_them_at_the_asked_quality(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")
    big = shared / "data/train/photos/cbig"
    big.mkdir()
    rng = np.random.default_rng(1)
    # two photos: both travel (at least two per folder); the longest side comes down to 640
    cv2.imwrite(str(big / "wide.png"), rng.integers(0, 256, (300, 800, 3), dtype=np.uint8))
    cv2.imwrite(str(big / "tall.png"), rng.integers(0, 256, (1000, 300, 3), dtype=np.uint8))
    (big.parent / "README.txt").write_text("not a source folder")  # a stray file beside them
    sizes = {}
    for q in (30, 95):
        out = tmp_path / f"q{q}"
        carry.pack(shared, out, codec="mjpg", photo_quality=q)
        assert cv2.imread(str(out / "photos/cbig/wide.jpg")).shape[:2] == (240, 640)
        assert cv2.imread(str(out / "photos/cbig/tall.jpg")).shape[:2] == (640, 192)
        sizes[q] = sum(f.stat().st_size for f in (out / "photos").rglob("*.jpg"))
    assert sizes[30] < 0.7 * sizes[95]  # the same photos, coarser


def test_pack_draws_its_photos_from_the_seed(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")

    def drawn(seed: int) -> list[str]:
        carry.pack(shared, tmp_path / "o", codec="mjpg", seed=seed)
        return json.loads((tmp_path / "o/carry.json").read_text())["photos"]

    first = drawn(0)
    assert drawn(0) == first
    assert any(drawn(seed) != first for seed in (1, 2, 3))


def test_x264_pack_encodes_every_frame_from_number_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the skipped round trip shows where ffmpeg exists: its command, checked here without it.
    shared = _fake_shared(tmp_path / "shared")
    calls: list[list[str]] = []

    listed: list[list[str]] = []  # what each concat call's list named (deleted after)

    def run(cmd: list[str], **kwargs: object) -> None:
        calls.append(cmd)
        if "concat" in cmd:
            text = Path(cmd[cmd.index("-i") + 1]).read_text()
            listed.append(re.findall(r"file '(.*)'", text))
        Path(cmd[-1]).write_bytes(b"video")

    monkeypatch.setattr(carry, "_ffmpeg", lambda: "ffmpeg")
    monkeypatch.setattr(carry.subprocess, "run", run)
    out = tmp_path / "cache"
    raw = shared / "data/train/gopro_raw_240fps" / carry.RAW_SEQ

    def encoded(cmd: list[str]) -> list[Path]:
        opt = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1) if cmd[i].startswith("-")}
        assert opt["-c:v"] == "libx264" and opt["-crf"] == "21"
        assert opt["-pix_fmt"] == "yuv444p"  # full-resolution chroma: the colours of the edges
        pattern, first = opt["-i"], int(opt["-start_number"])
        return [Path(pattern % (first + i)) for i in range(int(opt["-frames:v"]))]

    def joined(cmd: list[str]) -> list[str]:
        assert cmd[cmd.index("-f") + 1] == "concat" and cmd[cmd.index("-c") + 1] == "copy"
        assert cmd[-1].endswith("gopro.partial.mkv")  # renamed to gopro.mkv once whole
        return listed.pop(0)

    assert carry.pack(shared, out, codec="auto", crf=21) == out / "gopro.mkv"  # ffmpeg found
    enc, cat = calls  # 12 frames, none held out (the first held-out one is 240)
    assert encoded(enc) == sorted(raw.glob("*.jpg"))  # 000001.jpg .. 000012.jpg, all of them
    assert joined(cat) == [str(Path(enc[-1]).resolve())]
    meta = json.loads((out / "carry.json").read_text())
    assert meta["codec"] == "x264" and meta["crf"] == 21 and meta["video"] == "gopro.mkv"
    assert meta["held_out_first"] == carry.HELD_OUT_FIRST

    # Frames 9-12 held out: two streams, training frames first, joined in that order.
    calls.clear()
    carry.pack(shared, out, codec="x264", crf=21, held_out_first=9)
    train, held, cat = calls
    assert [p.name for p in encoded(train)] == [f"{i:06d}.jpg" for i in range(1, 9)]
    assert [p.name for p in encoded(held)] == [f"{i:06d}.jpg" for i in range(9, 13)]
    assert joined(cat) == [str(Path(train[-1]).resolve()), str(Path(held[-1]).resolve())]
    assert sorted(p.name for p in out.iterdir()) == [
        "carry.json",
        "dmphn",
        "gopro.mkv",
        "photos",
        "vgg",
    ]  # the parts and their list are gone
    carry.pack(shared, out, codec="mjpg", crf=21)
    assert json.loads((out / "carry.json").read_text())["crf"] is None  # MJPG has no CRF


def test_held_out_first_is_the_trainers() -> None:
    from training.config import DataConfig

    assert carry.HELD_OUT_FIRST == DataConfig().raw_val_range[0]


@pytest.mark.skipif(carry._ffmpeg() is None, reason="no ffmpeg here")
def test_x264_training_frames_do_not_depend_on_held_out_ones(tmp_path: Path) -> None:
    # Two trees whose frames 1-8 are the same bytes and whose held-out frames 9-12 differ.
    trees = [_fake_shared(tmp_path / name) for name in ("a", "b")]
    raw_b = trees[1] / "data/train/gopro_raw_240fps" / carry.RAW_SEQ
    for i in range(9, 13):
        img = cv2.imread(str(raw_b / f"{i:06d}.jpg"))
        cv2.imwrite(str(raw_b / f"{i:06d}.jpg"), 255 - img, [cv2.IMWRITE_JPEG_QUALITY, 95])

    def decoded(held_out_first: int) -> list[np.ndarray]:
        frames = []
        for tree in trees:
            out = tmp_path / f"cache_{tree.name}_{held_out_first}"
            carry.pack(tree, out, codec="x264", held_out_first=held_out_first)
            assert carry.unpack(out) == 12
            raw = out / "raw" / carry.RAW_SEQ
            frames.append(np.stack([cv2.imread(str(raw / f"{i:06d}.png")) for i in range(1, 9)]))
        return frames

    a, b = decoded(9)
    assert np.array_equal(a, b)
    # The check can fail: in one stream (nothing held out) frames 1-8 do depend on 9-12.
    a, b = decoded(13)
    assert not np.array_equal(a, b)


def test_unpack_refuses_a_video_that_does_not_decode(tmp_path: Path) -> None:
    (tmp_path / "gopro.avi").write_bytes(b"not a video at all")
    with pytest.raises(RuntimeError, match="could not decode"):
        carry.unpack(tmp_path)  # no carry.json to compare a count with: zero frames is refused
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_pack_command_line_adds_up_what_travels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = _fake_shared(tmp_path / "shared")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    argv = ["carry", "pack", "--shared", str(shared), "--out", "data_cache", "--codec", "mjpg"]
    monkeypatch.setattr(sys, "argv", argv)
    carry.main()
    out = capsys.readouterr().out
    assert "wrote data_cache/gopro.avi" in out and "of 64 MiB: fits" in out
    monkeypatch.setattr(carry, "LIMIT", 1000)  # fewer bytes than the carry's own
    carry.main()
    assert "OVER the limit" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["carry", "unpack", "--out", "missing"])
    with pytest.raises(SystemExit, match="carry unpack: no gopro.mkv"):
        carry.main()


def test_the_pack_verdict_weighs_the_limit_to_the_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A pack a little over the 64 MiB must say so: "fits" sent a call the machine refuses.
    shared = _fake_shared(tmp_path / "shared")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    # Every part weighs: the tracked files, the untracked ones, the wheels (ignored here).
    (repo / ".gitignore").write_text(".whl/\n")
    (repo / "tracked.bin").write_bytes(b"t" * 5000)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.bin"], check=True)
    (repo / ".whl").mkdir()
    (repo / ".whl/k.whl").write_bytes(b"w" * 3000)
    monkeypatch.chdir(repo)
    argv = ["carry", "pack", "--shared", str(shared), "--out", "data_cache", "--codec", "mjpg"]
    monkeypatch.setattr(sys, "argv", argv)
    carry.main()
    assert re.search(r"MiB  \.whl$", capsys.readouterr().out, re.M)
    total = sum(carry.travel_sizes(Path("data_cache"), Path("."), (Path(".whl"),)).values())
    monkeypatch.setattr(carry, "LIMIT", total)  # exactly the limit: it fits
    carry.main()
    assert "in all, of" in (out := capsys.readouterr().out) and ": fits" in out
    monkeypatch.setattr(carry, "LIMIT", total - 1)  # one byte over
    carry.main()
    assert "OVER the limit" in capsys.readouterr().out


def test_gpu_session_needs_no_wheels_to_benchmark_and_stubs_kornia_rs() -> None:
    # A benchmark-only call (NAMES=) carries no .whl: the install must not run (its glob would
    # fail and end the call before the benchmarks). Without the 5.3 MB kornia_rs wheel, a stub.
    script = (Path(__file__).parents[1] / "training/gpu_session.sh").read_text()
    assert 'if [ -n "$NAMES" ] && ! python3 -c "import kornia, pytorch_msssim"' in script
    assert 'echo "io = None' in script and ">/tmp/site/kornia_rs.py" in script


def test_the_kornia_rs_stub_lets_the_losses_import(tmp_path: Path) -> None:
    # What gpu_session.sh writes when the kornia_rs wheel stayed behind, ahead on the path.
    (tmp_path / "kornia_rs.py").write_text("io = None  # stub written by training/gpu_session.sh\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import kornia_rs, torch;"
        "assert kornia_rs.io is None; from training import losses;"
        "x = torch.rand(1, 3, 16, 16); print(float(losses.edge_loss(x, x) + losses.lab_loss(x, x)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == 0.0


# ---- training/gpu_session.sh, run here with stand-ins for the trainer and the data steps -------

_FAKE_TRAIN = r"""
import os, sys
from pathlib import Path

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
out = Path(args["out_dir"])
kind, name = out.name.split("_", 1)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
out.mkdir(parents=True, exist_ok=True)
if kind == "probe":
    rate = os.environ.get("FAKE_RATE_" + name)
    if rate is None:
        sys.exit("RuntimeError: the probe crashed")
    print(f"step limit: 60 steps in 0.5 min ({rate} steps/s after the first 10, ...)")
    sys.exit(0)
import torch

torch.save({"model": {"w": torch.zeros(1)}, "config": {"student": name}}, out / "last.pt")
if os.environ.get("FAKE_BAD_CKPT_" + name):
    (out / "last.pt").write_bytes(b"not a checkpoint")
print("time budget: 100 steps in 5.0 min (2.00 steps/s after the first 10, ...)")
sys.exit(int(os.environ.get("FAKE_EXIT_" + name, "0")))
"""


def _session_tree(tmp_path: Path) -> Path:
    """A folder the script runs in: the repository's training/, a fake carry, a fake python3
    that stands in for the trainer, the unpack and the sampler timing (the rest is real)."""
    repo = Path(__file__).parents[1]
    root = tmp_path / "tree"
    root.mkdir()
    (root / "training").symlink_to(repo / "training", target_is_directory=True)
    for sub in ("photos/cset5", "dmphn", "vgg"):
        (root / "data_cache" / sub).mkdir(parents=True)
    (root / "data_cache/vgg/vgg_normalised_conv3_1.pth").write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = "-m" ]; then\n'
        '  case "$2" in\n'
        f'    training.train) shift 2; exec {sys.executable} -c "$FAKE_TRAIN" "$@" ;;\n'
        '    training.carry) echo "decoded (fake)"; exit 0 ;;\n'
        '    training.device_data) echo "timing (fake)"; exit "${FAKE_SAMPLER_EXIT:-0}" ;;\n'
        "  esac\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    return root


def _run_session(root: Path, **env: str) -> subprocess.CompletedProcess:
    import os

    repo = Path(__file__).parents[1]
    full = dict(os.environ, PATH=f"{root.parent / 'bin'}:{os.environ['PATH']}", BENCH="0")
    full |= {"FAKE_TRAIN": _FAKE_TRAIN, "FAKE_CALLS": str(root / "calls.txt"), "OUT": "out"}
    full |= env
    return subprocess.run(
        ["bash", str(repo / "training/gpu_session.sh")],
        cwd=root,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_gpu_session_reports_a_failed_run_and_sizes_from_the_configs_epochs(
    tmp_path: Path,
) -> None:
    root = _session_tree(tmp_path)
    # What an earlier call on the same (warm) machine left: never packed as this call's.
    (root / "runs/gpu_fast_cont").mkdir(parents=True)
    (root / "runs/gpu_fast_cont/best.pt").write_bytes(b"stale")
    done = _run_session(
        root,
        NAMES="fast_cont plus_cont",
        TRAIN_S="3000",
        EXTRA='--stages=[{"patch":64,"epochs":4,"batch":2}]',
        FAKE_RATE_fast_cont="2.5",  # plus_cont's probe crashes: no rate
        FAKE_EXIT_plus_cont="1",
        # The device sampler's first run on the GPU failed: every run would fail alike.
        FAKE_SAMPLER_EXIT="1",
    )
    log = (root / "out/session.log").read_text()
    # A run that failed is the call's exit status, after everything was saved.
    assert done.returncode == 1, log[-3000:]
    assert "== plus_cont: exit 1 (failed)" in log and "== fast_cont: exit 0" in log
    assert "training failed: plus_cont" in log
    assert "probe plus_cont: FAILED steps/s (exit 1)" in log
    calls = (root / "calls.txt").read_text().splitlines()
    probes = [c for c in calls if "--out_dir=runs/probe_" in c]
    assert len(probes) == 2 and all("--max_minutes=2.5" in c.split() for c in probes)
    # Sized by the epochs of the config the runs train with (4 here), not a fixed 8.
    m = re.search(r"train fast_cont: steps_per_epoch=(\d+) \(x4\), max_minutes=([\d.]+)", log)
    assert m, log
    left = float(m[2]) * 60 + 5
    assert abs(int(m[1]) - (left - 35) * 2.5 * 0.9 / 4) <= 2
    assert "device_data failed (exit 1): raw samples from the data workers" in log
    assert all(
        c.split().index("--data.raw_on_device=false") > c.split().index("--data.raw_on_device=true")
        for c in calls
    )
    train_plus = next(c for c in calls if "--out_dir=runs/gpu_plus_cont" in c)
    assert "--amp=false" in train_plus  # the crashed probe's fp32 retry
    with tarfile.open(root / "out/run_fast_cont.tar") as tar:
        assert sorted(tar.getnames()) == [
            "gpu_fast_cont/gpu_fast_cont.log",
            "gpu_fast_cont/last.pt",
            "gpu_fast_cont/probe_fast_cont.log",
        ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # the device sampler has no simulated camera: the trainer refuses this pair
        ({"EXTRA": "--data.raw_camera_fraction=0.5"}, "run fast_cont: config refused"),
        ({"EXTRA": "--data.nosuch=1"}, "unknown config key data.nosuch"),
        ({"PROBE_STEPS": "10"}, "PROBE_STEPS=10: must be above 10"),
        # shell arithmetic in every backgrounded probe failed on these, after the data step
        ({"PROBE_S": "1.5"}, "PROBE_S=1.5: must be a positive whole number of seconds"),
        ({"PROBE_S": "0"}, "PROBE_S=0: must be a positive whole number of seconds"),
        # ... and on these in the training runs' sizing ("abc" read as 0), after the probe too
        ({"TRAIN_S": "abc"}, "TRAIN_S=abc: must be a positive whole number of seconds"),
        ({"TRAIN_S": "450.5"}, "TRAIN_S=450.5: must be a positive whole number of seconds"),
        ({"TRAIN_S": "0450"}, "TRAIN_S=0450: must be a positive whole number of seconds"),
        # no training left after the probe: every run overran the call at its 0.5-minute floor
        ({"TRAIN_S": "125"}, "TRAIN_S=125: too small for the set-up and the probe (PROBE_S=150"),
        ({"TRAIN_S": "300", "PROBE_S": "400"}, "must be above 375"),
        # split into words, the value reached the config loader in pieces (a bare YAML error)
        (
            {"EXTRA": "--stages=[{patch: 256, epochs: 8, batch: 16}]"},
            "EXTRA is split on spaces ('256,' is not a --key=value)",
        ),
    ],
)
def test_gpu_session_refuses_bad_settings_before_any_work(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    root = _session_tree(tmp_path)
    done = _run_session(root, NAMES="fast_cont", **env)
    log = (root / "out/session.log").read_text()
    assert done.returncode == 2 and message in log, log
    assert not (root / "calls.txt").exists()  # no probe, no training


def test_gpu_session_names_a_carry_path_left_out(tmp_path: Path) -> None:
    import shutil

    root = _session_tree(tmp_path)
    shutil.rmtree(root / "data_cache/vgg")
    done = _run_session(root, NAMES="hq_cont fast_cont")
    log = (root / "out/session.log").read_text()
    assert done.returncode == 2, log
    assert "missing here (a carry path left out?): loss.vgg_weights=data_cache/vgg/" in log
    assert not (root / "calls.txt").exists()


@pytest.mark.slow
def test_gpu_session_sizes_the_watchdog_from_the_runs_time_limit(tmp_path: Path) -> None:
    # Past the budget (the probe ran long), left is negative while max_minutes keeps its 0.5 min
    # floor: a watchdog sized from left refused to start the run (timeout's exit 125), had no
    # limit, or killed it before its own stop.
    import shutil

    root = _session_tree(tmp_path)
    wrapper = root.parent / "bin/timeout"
    wrapper.write_text(
        f'#!/usr/bin/env bash\necho "$@" >>"$FAKE_TIMEOUTS"\nexec {shutil.which("timeout")} "$@"\n'
    )
    wrapper.chmod(0o755)
    # The clock: the script's start (its first `date +%s`), then 1000 s on, as after a probe
    # that ran long (the default TRAIN_S=390 leaves 390 - 1000 + 60 s).
    clock = root.parent / "bin/date"
    clock.write_text(
        "#!/usr/bin/env bash\n"
        f'now=$({shutil.which("date")} "$@")\n'
        'if [ -e "$FAKE_STARTED" ]; then echo $((now + 1000)); else touch "$FAKE_STARTED"; '
        'echo "$now"; fi\n'
    )
    clock.chmod(0o755)
    done = _run_session(
        root,
        NAMES="fast_cont",
        FAKE_RATE_fast_cont="2.5",
        FAKE_TIMEOUTS=str(root / "timeouts.txt"),
        FAKE_STARTED=str(root / "started"),
    )
    log = (root / "out/session.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert "max_minutes=0.5, watchdog 80 s" in log and "== fast_cont: exit 0" in log
    train = [t for t in (root / "timeouts.txt").read_text().splitlines() if "runs/gpu_" in t]
    assert len(train) == 1 and train[0].startswith("-k 5 80 python3 -m training.train ")
    assert "--max_minutes=0.5" in train[0].split()


@pytest.mark.slow
def test_gpu_session_tells_the_watchdog_from_a_kill_and_a_failed_save(tmp_path: Path) -> None:
    root = _session_tree(tmp_path)
    done = _run_session(
        root,
        NAMES="fast_cont plus_cont hq_cont",
        FAKE_RATE_fast_cont="2.5",
        FAKE_RATE_plus_cont="2.5",
        FAKE_RATE_hq_cont="2.5",
        # The trainer stops on the watchdog's TERM after its step, with a checkpoint (timeout
        # still exits 124); a hung one gets the -k's SIGKILL.
        FAKE_EXIT_fast_cont="124",
        FAKE_EXIT_plus_cont="137",  # SIGKILL: the watchdog's -k, or the OOM killer
        FAKE_EXIT_hq_cont="143",  # a TERM from elsewhere: the trainer's own status for it
    )
    log = (root / "out/session.log").read_text()
    assert done.returncode == 1, log[-3000:]
    assert (
        "== fast_cont: exit 124 (stopped by the watchdog after a stall; last.pt saved once "
        "training had begun)" in log
    )
    assert "== plus_cont: exit 137 (killed: hung past the watchdog's TERM, or out of memory)" in log
    # A TERM in the set-up (the data, the teacher) ends it by the default action: the same
    # 143 with nothing saved.
    assert "== hq_cont: exit 143 (interrupted; last.pt saved once training had begun)" in log
    # Every run ended well, but nothing could be saved: not an exit 0.
    (tmp_path / "save").mkdir()
    root = _session_tree(tmp_path / "save")
    done = _run_session(
        root, NAMES="fast_cont", FAKE_RATE_fast_cont="2.5", FAKE_BAD_CKPT_fast_cont="1"
    )
    log = (root / "out/session.log").read_text()
    assert done.returncode == 1, log[-3000:]
    assert "== fast_cont: exit 0" in log and "results saved" not in log
    assert "saving the results failed (its error above)" in log


@pytest.mark.parametrize("shipped", ["1", "0"])
def test_gpu_session_keeps_what_the_shipped_students_learnt_on_the_cpu(
    tmp_path: Path, shipped: str
) -> None:
    # fast_cont and hq_cont start from the shipped weights, which learnt drawn graphics, still
    # samples, longer motion, mid-exposure kernels and the FFT term after the GPU calls (hq also
    # photos at a random scale): a run without them would unlearn them (text smudged on sharp
    # frames again).
    from training.config import load_config

    root = _session_tree(tmp_path)
    done = _run_session(
        root,
        NAMES="fast_cont hq_cont",
        SHIPPED=shipped,
        FAKE_RATE_fast_cont="2.5",
        FAKE_RATE_hq_cont="2.5",
    )
    log = (root / "out/session.log").read_text()
    assert done.returncode == 0, log[-3000:]
    train = [c.split() for c in (root / "calls.txt").read_text().splitlines()]
    train = [c for c in train if any(a.startswith("--out_dir=runs/gpu_") for a in c)]
    assert len(train) == 2
    for words in train:
        cfg = load_config(words[words.index("--config") + 1], words[2:])
        got = (
            cfg.data.psf_centre,
            list(cfg.data.camera_speed),
            cfg.data.psf_max_size,
            cfg.data.still_fraction,
            cfg.data.graphics_fraction,
            cfg.loss.fft,
        )
        hq = cfg.student == "hq"
        if shipped == "1":
            assert got == ("time", [0.25, 4.0], 41, 0.1, 0.2, 0.5), words
            # only hq learnt the photo scale
            assert list(cfg.data.photo_scale) == ([0.5, 1.0] if hq else [1.0, 1.0]), words
        else:
            assert got[4] == 0.0 and got[5] == 0.0 and got[0] == "mass", words
            assert list(cfg.data.photo_scale) == [1.0, 1.0], words
        # the camera mix (CAMERA=1) is there either way
        assert (cfg.data.photo_weight, cfg.data.camera_fraction) == (0.5, 0.7)


@pytest.mark.slow
def test_gpu_session_runs_hq_without_the_teacher_beside_hq_cont(tmp_path: Path) -> None:
    # hq_nodist is hq_cont less the teacher's terms and nothing else: the pair isolates them.
    from training.config import load_config

    root = _session_tree(tmp_path)
    done = _run_session(
        root, NAMES="hq_cont hq_nodist", FAKE_RATE_hq_cont="2.5", FAKE_RATE_hq_nodist="2.5"
    )
    log = (root / "out/session.log").read_text()
    assert done.returncode == 0, log[-3000:]
    train = [c.split() for c in (root / "calls.txt").read_text().splitlines()]
    train = [c for c in train if any(a.startswith("--out_dir=runs/gpu_") for a in c)]
    cfgs = {}
    for words in train:
        out = next(a for a in words if a.startswith("--out_dir="))
        cfgs[out.split("gpu_", 1)[1]] = load_config(words[words.index("--config") + 1], words[2:])
    assert sorted(cfgs) == ["hq_cont", "hq_nodist"]
    cont, nodist = cfgs["hq_cont"], cfgs["hq_nodist"]
    assert cont.loss.distill > 0 and cont.loss.feature > 0
    assert nodist.loss.distill == 0 and nodist.loss.feature == 0
    assert list(nodist.data.photo_scale) == list(cont.data.photo_scale) == [0.5, 1.0]
    assert (nodist.student, nodist.lr, nodist.ema, nodist.loss.l1, nodist.loss.vgg) == (
        cont.student,
        cont.lr,
        cont.ema,
        cont.loss.l1,
        cont.loss.vgg,
    )


# ---- gaps found by mutation testing of training/carry.py ----------------------------------------


def test_pack_takes_a_rounded_30_percent_of_a_folder_whatever_the_case_of_its_extensions(
    tmp_path: Path,
) -> None:
    shared = _fake_shared(tmp_path / "shared")
    many = shared / "data/train/photos/cmany"
    many.mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    # 9 photos: 30 % is 2.7, so 3 travel (truncated, 2; at 50 %, 4)
    for j in range(9):
        cv2.imwrite(str(many / f"img_{j}.jpg"), img)
    upper = shared / "data/train/photos/cupper"
    upper.mkdir()
    for name in ("A.JPG", "B.PNG"):  # a camera's or a download's spelling: they must travel too
        cv2.imwrite(str(upper / name.lower()), img)
        (upper / name.lower()).rename(upper / name)
    out = tmp_path / "o"
    carry.pack(shared, out, codec="mjpg")
    photos = json.loads((out / "carry.json").read_text())["photos"]
    assert sum(p.startswith("cmany/") for p in photos) == 3
    assert photos == sorted(photos)  # the record, not the order they were drawn in
    assert sorted(p for p in photos if p.startswith("cupper/")) == ["cupper/A.JPG", "cupper/B.PNG"]
    assert sorted(p.name for p in (out / "photos/cupper").iterdir()) == ["A.jpg", "B.jpg"]


def test_pack_shrinks_photos_by_averaging_not_by_dropping_pixels(tmp_path: Path) -> None:
    # Alternate black and white columns, halved: area averaging gives an even grey; nearest
    # neighbour would keep one colour of each pair (aliasing the student would learn from).
    shared = _fake_shared(tmp_path / "shared")
    stripes = shared / "data/train/photos/cstripes"
    stripes.mkdir()
    img = np.zeros((16, 1280, 3), np.uint8)
    img[:, ::2] = 255
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(stripes / name), img)
    out = tmp_path / "o"
    carry.pack(shared, out, codec="mjpg")
    got = cv2.imread(str(out / "photos/cstripes/a.jpg")).astype(np.float64)
    assert got.shape[:2] == (8, 640)
    assert abs(got.mean() - 127.5) < 4 and got.std() < 8


def test_pack_refuses_a_photo_that_does_not_decode(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")
    bad = shared / "data/train/photos/cbad"
    bad.mkdir()
    cv2.imwrite(str(bad / "good.jpg"), np.zeros((8, 8, 3), np.uint8))
    (bad / "broken.jpg").write_bytes(b"not a jpeg")  # one of two: it is drawn
    with pytest.raises(ValueError, match=r"cannot decode image .*broken\.jpg"):
        carry.pack(shared, tmp_path / "o", codec="mjpg")


def test_pack_refuses_a_misnumbered_last_frame_a_zero_held_out_frame_and_missing_vgg(
    tmp_path: Path,
) -> None:
    shared = _fake_shared(tmp_path / "shared")
    raw = shared / "data/train/gopro_raw_240fps" / carry.RAW_SEQ
    (raw / "000012.jpg").rename(raw / "000013.jpg")
    with pytest.raises(ValueError, match="found 000013.jpg"):
        carry.pack(shared, tmp_path / "o", codec="mjpg")
    (raw / "000013.jpg").rename(raw / "000012.jpg")
    with pytest.raises(ValueError, match="held_out_first must be"):
        carry.pack(shared, tmp_path / "o", codec="x264", held_out_first=0)
    (shared / "weights/vgg19_normalised/vgg_normalised_conv3_1.pth").unlink()
    # refused before minutes of encoding, with nothing written
    with pytest.raises(FileNotFoundError, match="no VGG-19 weights"):
        carry.pack(shared, tmp_path / "o", codec="mjpg")
    assert not (tmp_path / "o").exists()


def test_pack_removes_an_earlier_unpack_and_records_its_settings(tmp_path: Path) -> None:
    # Frames decoded from an earlier pack, left beside this one, would train as its frames.
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "o"
    carry.pack(shared, out, codec="mjpg")
    assert carry.unpack(out) == 12
    carry.pack(shared, out, codec="mjpg", seed=3, held_out_first=9)
    assert not (out / "raw").exists()
    meta = json.loads((out / "carry.json").read_text())
    assert (meta["video"], meta["seed"], meta["held_out_first"]) == ("gopro.avi", 3, 9)


def test_ffmpeg_falls_back_to_the_package_and_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    monkeypatch.setattr(carry.shutil, "which", lambda name: None)
    pkg = types.ModuleType("imageio_ffmpeg")
    pkg.get_ffmpeg_exe = lambda: "/pkg/ffmpeg"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", pkg)
    assert carry._ffmpeg() == "/pkg/ffmpeg"

    def missing() -> str:  # what the package raises when its binary is not there
        raise RuntimeError("No ffmpeg exe could be found")

    pkg.get_ffmpeg_exe = missing  # type: ignore[attr-defined]
    assert carry._ffmpeg() is None


def test_a_failed_x264_encode_stops_the_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ffmpeg exits non-zero with half a part written: joined, it made a short video.
    def run(cmd: list[str], check: bool = False, **kwargs: object) -> None:
        Path(cmd[-1]).write_bytes(b"half a video")
        if "libx264" in cmd and check:
            raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(carry.subprocess, "run", run)
    monkeypatch.setattr(carry, "_ffmpeg", lambda: "ffmpeg")
    out = tmp_path / "o"
    with pytest.raises(subprocess.CalledProcessError):
        carry.pack(_fake_shared(tmp_path / "shared"), out, codec="x264")
    assert list(out.iterdir()) == []


def test_the_concat_list_names_the_parts_absolutely_and_quoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex

    listed: list[str] = []

    def run(cmd: list[str], **kwargs: object) -> None:
        if "concat" in cmd:
            # the concat demuxer's quoting is the shell's single quotes
            for line in Path(cmd[cmd.index("-i") + 1]).read_text().splitlines():
                word, path = shlex.split(line)
                assert word == "file" and Path(path).is_file()
                listed.append(path)
        Path(cmd[-1]).write_bytes(b"video")

    monkeypatch.setattr(carry.subprocess, "run", run)
    monkeypatch.setattr(carry, "_ffmpeg", lambda: "ffmpeg")
    shared = _fake_shared(tmp_path / "shared")
    monkeypatch.chdir(tmp_path)
    carry.pack(shared, Path("it's"), codec="x264", held_out_first=9)  # relative, with a quote
    assert [Path(p).name for p in listed] == ["gopro.part0.mkv", "gopro.part1.mkv"]
    assert all(Path(p).is_absolute() and "it's" in p for p in listed)


def test_travel_sizes_count_every_byte_of_the_video_and_the_nested_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An x264 pack's video (its largest file) or the photos' subfolders counted as nothing said
    # "fits" for a carry the call refuses.
    repo = tmp_path / "repo"
    out = repo / "data_cache"
    (out / "photos/cset5").mkdir(parents=True)
    (out / "gopro.mkv").write_bytes(b"v" * 300)
    (out / "carry.json").write_bytes(b"{}")
    (out / "photos/cset5/a.jpg").write_bytes(b"p" * 40)
    (repo / "dangling").symlink_to(repo / "nowhere")  # a link is not a file that travels
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    # Relative paths, as the command line passes them: the carry is still not counted twice.
    monkeypatch.chdir(repo)
    sizes = carry.travel_sizes(Path("data_cache"), Path("."), (Path(".whl"),))
    assert sizes == {
        "data_cache/gopro.mkv": 300,
        "data_cache/carry.json": 2,
        "data_cache/photos": 40,
        "tracked": 0,
    }  # and no .whl, which is not there


def test_pack_command_line_passes_its_options_and_works_outside_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got: list[dict[str, object]] = []

    def pack(shared: Path, out: Path, **kwargs: object) -> Path:
        got.append(kwargs)
        return out / "gopro.avi"

    monkeypatch.setattr(carry, "pack", pack)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)  # not a git checkout: nothing to add up, and no traceback
    argv = ["carry", "pack", "--crf", "20", "--photo-quality", "70"]
    monkeypatch.setattr(sys, "argv", argv)
    carry.main()
    assert got == [{"codec": "auto", "crf": 20, "photo_quality": 70}]
    assert "wrote data_cache/gopro.avi" in capsys.readouterr().out
    # Both ends of each range are taken.
    for crf, quality in (("0", "100"), ("51", "0")):
        argv = ["carry", "pack", "--crf", crf, "--photo-quality", quality]
        monkeypatch.setattr(sys, "argv", argv)
        carry.main()
    assert [(g["crf"], g["photo_quality"]) for g in got[1:]] == [(0, 100), (51, 0)]
    # A refused input (a gap in the frames: a ValueError) is one line, not a traceback.
    monkeypatch.undo()
    shared = _fake_shared(tmp_path / "shared")
    (shared / "data/train/gopro_raw_240fps" / carry.RAW_SEQ / "000005.jpg").unlink()
    monkeypatch.setattr(
        sys, "argv", ["carry", "pack", "--shared", str(shared), "--out", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit, match="carry pack: raw frames in .* found 000006.jpg"):
        carry.main()


def test_pack_command_line_refuses_settings_out_of_range_before_clearing_the_last_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "o"
    carry.pack(shared, out, codec="mjpg")
    before = sorted(p.name for p in out.iterdir())
    for flag, value, said in (
        ("--crf", "-5", "--crf: expected 0-51"),  # x264 failed on it, a traceback
        ("--crf", "99", "--crf: expected 0-51"),  # clamped, recorded as asked
        ("--crf", "52", "--crf: expected 0-51"),
        ("--photo-quality", "101", "--photo-quality: expected 0-100"),
        ("--photo-quality", "500", "--photo-quality: expected 0-100"),
        ("--photo-quality", "-3", "--photo-quality: expected 0-100"),
    ):
        argv = ["carry", "pack", "--shared", str(shared), "--out", str(out), flag, value]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as e:
            carry.main()
        assert e.value.code == 2 and said in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == before

    # ffmpeg's own failure is one line too (it printed its reason itself), not a traceback.
    def run(cmd: list[str], check: bool = False, **kwargs: object) -> None:
        raise subprocess.CalledProcessError(222, cmd)

    monkeypatch.setattr(carry.subprocess, "run", run)
    monkeypatch.setattr(carry, "_ffmpeg", lambda: "ffmpeg")
    argv = ["carry", "pack", "--shared", str(shared), "--out", str(out), "--codec", "x264"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"^carry pack: ffmpeg failed \(exit 222\)$"):
        carry.main()


def test_unpack_names_a_carry_json_that_is_not_packs_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    carry.pack(_fake_shared(tmp_path / "shared"), out, codec="mjpg")
    monkeypatch.setattr(sys, "argv", ["carry", "unpack", "--out", str(out)])
    for text, why in (
        ('{"sequence": "x"}', "KeyError: 'frames'"),  # was a KeyError traceback
        ("{bad json", "JSONDecodeError"),  # did not name the file
        ('{"frames": "12"}', "frames: '12'"),
        ('{"frames": true}', "frames: True"),  # a bool is an int to isinstance
        ("[12]", "TypeError"),  # JSON, but not an object
    ):
        (out / "carry.json").write_text(text, encoding="utf-8")
        with pytest.raises(
            SystemExit, match=f"carry.json is not pack's record \\({re.escape(why)}"
        ):
            carry.main()
        assert not (out / "raw").exists() and not (out / "raw.partial").exists()


def test_unpack_tells_a_cut_short_or_damaged_video_from_a_missing_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cache"
    carry.pack(_fake_shared(tmp_path / "shared"), out, codec="mjpg")
    video = out / "gopro.avi"
    whole = video.read_bytes()
    # Cut short in transit: the frames that are there decode, the rest are missing.
    video.write_bytes(whole[: len(whole) * 3 // 4])
    with pytest.raises(RuntimeError, match=r"gopro.avi is cut short or damaged: decoded \d+ "):
        carry.unpack(out)
    # OpenCV reads the MJPG AVI itself: no FFmpeg backend is no excuse for one.
    monkeypatch.setattr(carry.cv2.videoio_registry, "hasBackend", lambda backend: False)
    for data, said in ((whole[:2000], "damaged or not a video OpenCV decodes"), (b"", "empty")):
        video.write_bytes(data)
        with pytest.raises(RuntimeError) as exc:
            carry.unpack(out)
        assert said in str(exc.value) and "no decoder" not in str(exc.value)
    assert not (out / "raw").exists() and not (out / "raw.partial").exists()
    # Only an x264 MKV on an OpenCV without FFmpeg is a missing decoder.
    video.unlink()
    (out / "gopro.mkv").write_bytes(b"x264 frames this OpenCV cannot read")
    with pytest.raises(RuntimeError, match="no FFmpeg backend"):
        carry.unpack(out)


def test_unpack_refuses_extra_frames_and_survives_a_killed_unpacks_leftovers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "cache"
    carry.pack(_fake_shared(tmp_path / "shared"), out, codec="mjpg")
    # A SIGKILL skips the clean-up: the next unpack must start over, not stop on the folder.
    (out / f"raw.partial/{carry.RAW_SEQ}").mkdir(parents=True)
    (out / f"raw.partial/{carry.RAW_SEQ}/000099.png").write_bytes(b"stale")
    assert carry.unpack(out) == 12
    assert len(list((out / f"raw/{carry.RAW_SEQ}").iterdir())) == 12
    # More frames than packed shift nothing, but they are not the packed sequence either.
    meta = json.loads((out / "carry.json").read_text())
    (out / "carry.json").write_text(json.dumps(meta | {"frames": 11}))
    with pytest.raises(RuntimeError, match="decoded 12 frames .* packed 11"):
        carry.unpack(out)


def test_an_x264_part_of_one_frame_is_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first held-out frame the last one (or 2): a one-frame part left out lost that frame.
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: object) -> None:
        calls.append(cmd)
        Path(cmd[-1]).write_bytes(b"video")

    monkeypatch.setattr(carry.subprocess, "run", run)
    monkeypatch.setattr(carry, "_ffmpeg", lambda: "ffmpeg")
    shared = _fake_shared(tmp_path / "shared")
    for held, counts in ((12, ["11", "1"]), (2, ["1", "11"])):
        calls.clear()
        carry.pack(shared, tmp_path / "o", codec="x264", held_out_first=held)
        encodes = [c for c in calls if "libx264" in c]
        assert [c[c.index("-frames:v") + 1] for c in encodes] == counts


def test_pack_says_when_opencv_cannot_write_the_mjpg_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unopened:
        def __init__(self, *args: object) -> None:
            self.released = False

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return False

        def write(self, frame: np.ndarray) -> None:
            pass

        def release(self) -> None:
            self.released = True

    monkeypatch.setattr(cv2, "VideoWriter", Unopened)
    with pytest.raises(RuntimeError, match="OpenCV cannot write MJPG"):
        carry.pack(_fake_shared(tmp_path / "shared"), tmp_path / "o", codec="mjpg")
