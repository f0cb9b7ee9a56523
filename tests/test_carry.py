"""The carried training subset: pack a small fake ``shared`` tree, unpack it, check what arrives."""

from __future__ import annotations

import json
import subprocess
import sys
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
    assert set(sizes) == {"tracked", str(repo / ".whl")} | {
        str(out / n) for n in ("gopro.avi", "carry.json", "photos", "dmphn", "vgg")
    }
    assert sizes[str(out / "dmphn")] == sum(f.stat().st_size for f in (out / "dmphn").iterdir())


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
