"""Export: ONNX fp32/fp16 and TorchScript match eager PyTorch at 721x1279; the manifest is the
engine's format with correct sha256s."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import export as E
from training.config import (
    RUN_CONTROL_KEYS,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
)
from training.config import config_digest as train_config_digest
from training.models.student import create_student

torch.set_num_threads(2)

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")


def _tiny_with_weights(seed: int, scale: float = 0.05) -> torch.nn.Module:
    """A tiny student whose weights do something (seeded): a fresh one outputs its input
    exactly (its last convolution starts at zero), so parity would check only the identity."""
    torch.manual_seed(seed)
    model = create_student("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, Path]:
    """A tiny student checkpoint exported through the CLI, with a metrics file."""
    root = tmp_path_factory.mktemp("export")
    # Make the residual visible so parity compares real outputs, not the identity.
    model = _tiny_with_weights(1)
    config = {"student": "tiny", "student_kwargs": {}, "lr": 5e-5}
    ckpt = root / "best.pt"
    torch.save({"model": model.state_dict(), "config": config, "epoch": 3}, ckpt)
    metrics = root / "summary.json"
    # The checkpoint evaluated (`training.evaluate --model best.pt`): its row records its bytes.
    table = {"raw-plain": {"n": 6, "methods": {"best": {"psnr": 30.0}}}}
    metrics.write_text(json.dumps({"sets": table, "model_sha256": {"best": E.sha256_file(ckpt)}}))
    out = root / "weights"
    out.mkdir()
    # Another model's entry already in the manifest must survive the update.
    (out / "manifest.json").write_text(
        json.dumps({"schema": E.SCHEMA, "files": {"other.onnx": {"sha256": "a" * 64, "bytes": 1}}})
    )
    rc = E.main(
        [
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--name",
            "student_fast",
            "--metrics",
            str(metrics),
        ]
    )
    assert rc == 0
    return out, model.eval(), ckpt


def test_config_digest_is_the_trainers() -> None:
    # A resumed run (other run-control keys) is the same run: the manifest must say so.
    cfg = load_config(None, ["--student=tiny", "--lr=0.002"])
    resumed = load_config(None, ["--student=tiny", "--lr=0.002", "--resume", "--max_minutes=5"])
    assert E.config_digest(config_to_dict(resumed)) == train_config_digest(cfg)
    assert E.config_digest(config_to_dict(cfg)) != E.config_digest(
        config_to_dict(load_config(None, ["--student=tiny", "--lr=0.003"]))
    )
    # --random-init has no training config: its small dict is hashed as it is
    rand = {"student": "tiny", "student_kwargs": {}, "random_init": True, "seed": 0}
    assert len(E.config_digest(rand)) == 64 and E.config_digest(rand) != E.config_digest(
        {**rand, "seed": 1}
    )


def test_the_manifest_keeps_the_checkpoints_own_config_digest(tmp_path: Path) -> None:
    # It was recomputed from the checkpoint's config with the code's current defaults filled
    # in: a key added since (teacher.bounded) changed the digest of the same checkpoint, and
    # the engine pairs student_fast_int8.onnx with student_fast.onnx by it.
    config = config_to_dict(load_config(None, ["--student=tiny"]))
    del config["teacher"]["bounded"]  # as a run from before that key existed saved it
    then = {k: v for k, v in config.items() if k not in RUN_CONTROL_KEYS}
    stored = hashlib.sha256(json.dumps(then, sort_keys=True, separators=(",", ":")).encode())
    assert stored.hexdigest() != E.config_digest(config)  # what today's defaults make of it
    ckpt = tmp_path / "best.pt"
    state = create_student("tiny").state_dict()
    torch.save({"model": state, "config": config, "config_digest": stored.hexdigest()}, ckpt)
    assert E.stored_config_digest(ckpt) == stored.hexdigest()
    assert _export(ckpt, tmp_path / "w", "--no-fp16", "--no-torchscript") == 0
    files = json.loads((tmp_path / "w" / "manifest.json").read_text())["files"]
    assert files["student_fast.onnx"]["config_digest"] == stored.hexdigest()
    assert "config_history" not in files["student_fast.onnx"]  # a run whose config never changed
    # None stored (a training.average soup): computed from the config, as before.
    torch.save({"model": state, "config": config}, ckpt)
    assert E.stored_config_digest(ckpt) is None


def test_the_manifest_says_the_run_was_resumed_under_a_changed_config(tmp_path: Path) -> None:
    # The checkpoint's config_history stopped at the checkpoint: the manifest (what a model
    # card is written from) named the last config's digest only, as if the run had one config.
    from engine.manifest import load_manifest

    config = config_to_dict(load_config(None, ["--student=tiny", "--lr=0.001"]))
    earlier = {**config, "lr": 0.01}
    history = [{"until_step": 3, "config": earlier, "config_digest": "ab" * 32, "changed": ["lr"]}]
    ckpt = tmp_path / "best.pt"
    state = create_student("tiny").state_dict()
    torch.save({"model": state, "config": config, "config_history": history}, ckpt)
    assert _export(ckpt, tmp_path / "w", "--no-fp16", "--no-torchscript") == 0
    files = json.loads((tmp_path / "w" / "manifest.json").read_text())["files"]
    # each change as the checkpoint keeps it, less the earlier whole config its digest names
    said = [{"until_step": 3, "config_digest": "ab" * 32, "changed": ["lr"]}]
    assert files["student_fast.onnx"]["config_history"] == said
    # an optional key to the engine: the manifest loads, and keeps it on a round trip
    entry = load_manifest(tmp_path / "w").files["student_fast.onnx"]  # type: ignore[union-attr]
    assert entry.extra["config_history"] == said
    assert entry.to_dict()["config_history"] == said
    assert E.stored_config_history(ckpt) == history


def test_an_out_that_is_a_file_is_refused_before_the_checkpoint_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # mkdir failed on it after the checkpoint was read and the student built, in a
    # FileExistsError traceback.
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for out in (afile, afile / "sub"):
        with pytest.raises(SystemExit) as exc:
            E.main(["--checkpoint", str(tmp_path / "gone.pt"), "--out", str(out)])
        assert exc.value.code == 2
        assert f"--out {out}: {afile} is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "mine\n"
    # A folder it cannot write in: a PermissionError traceback after the student was built.
    # (The access check is stood in for: this runs as root, whom it never refuses.)
    locked = tmp_path / "locked"
    locked.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E.os, "access", lambda p, mode: Path(p) != locked)
        with pytest.raises(SystemExit) as exc:
            E.main(["--random-init", "--variant", "tiny", "--out", str(locked / "exp")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {locked / 'exp'}: cannot write in {locked} (permission denied)" in err, err


def test_files_and_parity(exported: tuple[Path, torch.nn.Module, Path]) -> None:
    out, model, _ = exported
    import onnxruntime as ort

    for name in ("student_fast.onnx", "student_fast_fp16.onnx", "student_fast.ts"):
        assert (out / name).is_file(), name
    # one self-contained file per model: nothing beside it that the manifest would not hash
    assert not list(out.glob("*.data"))
    x = torch.rand(1, 3, 721, 1279)
    with torch.no_grad():
        ref = model(x).clamp(0, 1).numpy()
    assert np.abs(ref - x.numpy()).max() > 1e-3  # the student really changes the image

    sess = ort.InferenceSession(str(out / "student_fast.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["output"]
    assert sess.get_inputs()[0].shape[2:] == ["height", "width"]  # dynamic H and W
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= E.FP32_TOLERANCE
    assert got.min() >= 0.0 and got.max() <= 1.0  # clamped in the graph

    sess16 = ort.InferenceSession(
        str(out / "student_fast_fp16.onnx"), providers=["CPUExecutionProvider"]
    )
    assert "float16" in sess16.get_inputs()[0].type
    got16 = sess16.run(None, {"input": x.numpy().astype(np.float16)})[0]
    assert got16.dtype == np.float16 and np.abs(got16.astype(np.float32) - ref).max() < 1e-2

    ts = torch.jit.load(str(out / "student_fast.ts"))
    small = torch.rand(1, 3, 19, 33)  # another size: nothing was fixed at export time
    with torch.no_grad():
        assert (ts(x) - torch.from_numpy(ref)).abs().max() <= E.FP32_TOLERANCE
        assert ts(small).shape == small.shape


def test_manifest_format(exported: tuple[Path, torch.nn.Module, Path]) -> None:
    out, model, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == "sharpcam-manifest/1"
    assert set(manifest["files"]) == {
        "other.onnx",
        "student_fast.onnx",
        "student_fast_fp16.onnx",
        "student_fast.ts",
    }
    # the trainer's digest of the checkpoint's config, not a hash of the dict as stored
    expected_digest = train_config_digest(
        config_from_dict({"student": "tiny", "student_kwargs": {}, "lr": 5e-5})
    )
    for name, entry in manifest["files"].items():
        if name == "other.onnx":
            continue
        data = (out / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["format"] == ("torchscript" if name.endswith(".ts") else "onnx")
        fp16 = name.endswith("_fp16.onnx")
        assert entry["precision"] == ("fp16" if fp16 else "fp32")
        assert entry["variant"] == "tiny" and entry["device"] == "cpu"
        assert entry["input"] == {
            "name": "input",
            "dtype": "float16" if fp16 else "float32",
            "layout": "NCHW",
            "color": "RGB",
            "range": [0, 1],
            "min_size": 16,
            "multiple": model.multiple,
        }
        assert entry["output"] == {
            "name": "output",
            "dtype": "float16" if fp16 else "float32",
            "layout": "NCHW",
            "color": "RGB",
            "range": [0, 1],
        }
        assert entry["params"] == model.count_params()
        assert entry["macs_per_pixel"] == pytest.approx(model.macs_per_pixel(), abs=0.1)
        assert entry["metrics"]["sets"]["raw-plain"]["n"] == 6
        assert entry["config_digest"] == expected_digest
        assert set(entry["parity_max_abs_diff"]) == {"721x1279", "37x53"}
        # only the fp32 ONNX file was evaluated: the others say whose numbers they carry
        assert entry.get("metrics_of") == (
            None if name == "student_fast.onnx" else "student_fast.onnx"
        )


def test_manifest_readable_by_engine(exported: tuple[Path, torch.nn.Module, Path]) -> None:
    out, _, _ = exported
    manifest_mod = pytest.importorskip("engine.manifest")
    entry = manifest_mod.verify_file(out / "student_fast.onnx")
    assert entry is not None and entry.variant == "tiny" and entry.input.multiple is not None


def export_tiny(
    model: torch.nn.Module, out: Path, *, fp16: bool, torchscript: bool
) -> E.ExportResult:
    """``E.export_all`` of a tiny student as ``m``, checked at a small size (fast)."""
    return E.export_all(
        model,
        out,
        name="m",
        variant="tiny",
        config={},
        fp16=fp16,
        torchscript=torchscript,
        check_size=(33, 47),
    )


@pytest.mark.parametrize(
    "tolerance,fp16,message",
    [
        ("FP32_TOLERANCE", False, "ONNX Runtime differs"),
        ("FP16_TOLERANCE", True, "fp16 ONNX differs"),
    ],
)
def test_parity_failure_is_loud(
    tolerance: str, fp16: bool, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create_student("tiny").eval()
    monkeypatch.setattr(E, tolerance, -1.0)  # nothing can pass: the check must raise
    with pytest.raises(E.ExportError, match=message) as info:
        export_tiny(model, tmp_path, fp16=fp16, torchscript=False)
    assert not (tmp_path / "manifest.json").exists()
    # nothing half-done is left where the engine would find it
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # The file is named as it would have been, not by the deleted staging copy's path.
    text = str(info.value)
    assert text.startswith("m_fp16.onnx: " if fp16 else "m.onnx: ") and ".export." not in text
    assert text.endswith(f"(nothing in {tmp_path} was changed)")


def test_torchscript_file_that_differs_from_eager_fails_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real mismatch, not a tolerance forced below zero: the file written holds other weights.
    model = create_student("tiny").eval()
    write = E.export_torchscript

    def drifted(m: torch.nn.Module, path: str | Path) -> str:
        other = create_student("tiny").eval()
        other.load_state_dict(m.state_dict())
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.01)
        return write(other, path)

    monkeypatch.setattr(E, "export_torchscript", drifted)
    with pytest.raises(E.ExportError) as info:
        export_tiny(model, tmp_path, fp16=False, torchscript=True)
    assert str(info.value).startswith("m.ts: TorchScript differs from PyTorch by ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # m.onnx, which passed, neither


def test_an_onnx_file_that_differs_from_eager_fails_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real mismatch in the graph written, at the default tolerances. A fresh student outputs
    # its input exactly (its last convolution starts at zero), so parity of one checked only
    # that the identity stays the identity: the model here has weights that do something.
    model = _tiny_with_weights(3)
    write = E.export_onnx

    def drifted(m: torch.nn.Module, path: str | Path, **kwargs: int) -> str:
        other = create_student("tiny").eval()
        other.load_state_dict(m.state_dict())
        with torch.no_grad():
            other.stem.weight.mul_(1.02)  # 2 %: a wrong scale folded in, say
        return write(other, path, **kwargs)

    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        assert (model(x) - x).abs().max() > 0.05  # not the identity
    monkeypatch.setattr(E, "export_onnx", drifted)
    with pytest.raises(E.ExportError, match="m.onnx: ONNX Runtime differs from PyTorch by"):
        export_tiny(model, tmp_path, fp16=True, torchscript=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class _NaNAtSecondSize:
    """An ONNX Runtime session whose graph breaks (all NaN) at the second check size only."""

    def __init__(self, session: object) -> None:
        self.session = session

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)

    def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.session.run(names, feed)
        if feed["input"].shape[2] == E.SECOND_SIZE[0]:
            out[0] = np.full_like(out[0], np.nan)
        return out


@pytest.mark.parametrize(
    "broken,message", [("m.onnx", "ONNX Runtime differs"), ("m_fp16.onnx", "fp16 ONNX differs")]
)
def test_nan_at_the_second_check_size_fails_the_parity_check(
    broken: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Right at 33x47, NaN at 37x53: the worst difference is NaN, not the 33x47 one (Python's
    # max() returns its first argument when the second is NaN).
    real_session = E._cpu_session

    def session(path: str | Path) -> object:
        s = real_session(path)
        return _NaNAtSecondSize(s) if Path(path).name == broken else s

    monkeypatch.setattr(E, "_cpu_session", session)
    with pytest.raises(E.ExportError, match=message):
        export_tiny(create_student("tiny").eval(), tmp_path, fp16=True, torchscript=False)
    assert not (tmp_path / "manifest.json").exists()


@needs_openvino
def test_openvino_parity_is_recorded_at_the_precision_the_engine_runs(
    exported: tuple[Path, torch.nn.Module, Path],
) -> None:
    out, _, _ = exported
    files = json.loads((out / "manifest.json").read_text())["files"]
    for name, fp16 in (("student_fast.onnx", False), ("student_fast_fp16.onnx", True)):
        ov = files[name]["parity_openvino"]
        assert set(ov["max_abs_diff"]) == set(files[name]["parity_max_abs_diff"])
        tolerance = E.openvino_tolerance(ov["inference_precision"], fp16=fp16)
        assert 0 <= max(ov["max_abs_diff"].values()) <= tolerance, name
        assert ov["openvino"]
    assert "parity_openvino" not in files["student_fast.ts"]  # OpenVINO does not run it
    for name, fp16 in (("student_fast.onnx", False), ("student_fast_fp16.onnx", True)):
        ov = files[name]["parity_openvino"]
        if ov["inference_precision"] == "f32":  # the default check was the f32 one
            assert "f32" not in ov
        else:  # bf16 / f16 by default: f32 forced too, held to f32's tolerance
            diffs = ov["f32"]["max_abs_diff"]
            assert set(diffs) == {"37x53"}
            assert 0 <= max(diffs.values()) <= E.openvino_tolerance("f32", fp16=fp16), name
    # The export compiles as the engine's OpenVINO backend does by default (training/ cannot
    # import engine/, so the config is a copy): the same config, so the same precision.
    backends = pytest.importorskip("engine.backends")
    be = backends.create_backend("openvino", model=out / "student_fast.onnx", device="cpu")
    try:
        # But where it keeps its compiled models, which changes no result.
        compiled_as = {k: v for k, v in be._config.items() if k != "CACHE_DIR"}
        assert compiled_as == E.OPENVINO_CONFIG
        assert (
            be.inference_precision
            == files["student_fast.onnx"]["parity_openvino"]["inference_precision"]
        )
    finally:
        be.close()


def _calib_folder(folder: Path, count: int = 4) -> Path:
    """``count`` smooth 128x96 images: an int8 calibration source."""
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(
            str(folder / f"{i}.png"), cv2.resize(small, (128, 96), interpolation=cv2.INTER_CUBIC)
        )
    return folder


@needs_openvino
@pytest.mark.parametrize(
    "broken,how,message",
    [
        (
            "m.onnx",
            "shift",
            r"m\.onnx: OpenVINO \(CPU, inference precision \w+\) differs from "
            r"PyTorch by 0\.1\d* \(max abs\) > ",
        ),
        (
            "m_fp16.onnx",
            "nan",
            r"m_fp16\.onnx: OpenVINO \(CPU, inference precision \w+\) "
            r"differs from PyTorch by nan \(max abs\)",
        ),
        (
            "m_int8.onnx",
            "shift",
            r"m_int8\.onnx: OpenVINO \(CPU, int8, float parts in \w+\) "
            r"output too far from PyTorch's .* max abs diff",
        ),
    ],
)
def test_an_openvino_mismatch_fails_the_export(
    broken: str, how: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ONNX Runtime runs the file right, OpenVINO (what most CPUs run) does not: the export
    # must fail, naming the file, the runtime and its precision, and the error.
    real_run = E.OpenVinoRun.run

    def run(self: E.OpenVinoRun, x: np.ndarray) -> np.ndarray:
        out = real_run(self, x)
        if self.path.name != broken:
            return out
        if how == "nan":  # right at the first size, NaN at the second (see _worst)
            return np.full_like(out, np.nan) if x.shape[2] == E.SECOND_SIZE[0] else out
        return out + np.asarray(0.1, dtype=out.dtype)

    monkeypatch.setattr(E.OpenVinoRun, "run", run)
    out = tmp_path / "w"
    with pytest.raises(E.ExportError, match=message):
        E.export_all(
            create_student("tiny").eval(),
            out,
            name="m",
            variant="tiny",
            config={},
            fp16=broken == "m_fp16.onnx",
            torchscript=False,
            check_size=(33, 47),
            int8=broken == "m_int8.onnx",
            calib=_calib_folder(tmp_path / "calib"),
        )
    assert sorted(p.name for p in out.iterdir()) == []  # nothing half-done left behind


def _openvino_defaulting_to(precision: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """OpenVINO reporting ``precision`` as its default (a bf16 or f16 CPU, on any CPU: the
    numbers stay this CPU's own); the list collects each run's ``"hint:used"``."""
    real_run = E.OpenVinoRun.run
    runs: list[str] = []

    def run(self: E.OpenVinoRun, x: np.ndarray) -> np.ndarray:
        out = real_run(self, x)
        if self.precision_hint is None:
            self.precision = precision
        runs.append(f"{self.precision_hint}:{self.precision}")
        return out

    monkeypatch.setattr(E.OpenVinoRun, "run", run)
    return runs


@needs_openvino
def test_where_openvino_defaults_to_bf16_float32_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The engine's OpenVINO backend takes precision="f32"; bf16's tolerance (2e-2) says
    # nothing about it. Each float file is run with f32 forced too, at the small size only.
    runs = _openvino_defaulting_to("bf16", monkeypatch)
    result = E.export_all(
        create_student("tiny").eval(),
        tmp_path,
        name="m",
        variant="tiny",
        config={},
        torchscript=False,
        check_size=(33, 47),
    )
    # two sizes at the default, one forced, for each of the fp32 and fp16 files
    assert runs == ["None:bf16", "None:bf16", "f32:f32"] * 2
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    for name, fp16 in (("m.onnx", False), ("m_fp16.onnx", True)):
        ov = files[name]["parity_openvino"]
        # the default check's keys as before: older readers see what they always saw
        assert ov["inference_precision"] == "bf16"
        assert set(ov["max_abs_diff"]) == {"33x47", "37x53"}
        assert set(ov) == {"openvino", "inference_precision", "max_abs_diff", "f32"}
        diffs = ov["f32"]["max_abs_diff"]
        assert diffs == result.parity_openvino_f32[name] and set(diffs) == {"37x53"}
        assert 0 <= max(diffs.values()) <= E.openvino_tolerance("f32", fp16=fp16)
    # ... and the CLI reports it
    capsys.readouterr()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": create_student("tiny").state_dict(), "config": {"student": "tiny"}}, ckpt)
    assert _export(ckpt, tmp_path / "cli", "--no-fp16", "--no-torchscript") == 0
    assert "OpenVINO f32 (forced): max abs diff  37x53: " in capsys.readouterr().out


@needs_openvino
@pytest.mark.parametrize("broken", ["m.onnx", "m_fp16.onnx"])
def test_float32_off_by_more_than_its_tolerance_fails_the_export(
    broken: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Off only when f32 is forced, by less than bf16's tolerance (2e-2) and more than f32's:
    # 1e-4 for the fp32 file, 1e-2 for the fp16 one (its weights are rounded anyway).
    _openvino_defaulting_to("bf16", monkeypatch)
    shift = 1.5e-2 if broken == "m_fp16.onnx" else 2e-3
    checked_run = E.OpenVinoRun.run

    def run(self: E.OpenVinoRun, x: np.ndarray) -> np.ndarray:
        out = checked_run(self, x)
        if self.path.name == broken and self.precision_hint == "f32":
            out = out + np.asarray(shift, dtype=out.dtype)
        return out

    monkeypatch.setattr(E.OpenVinoRun, "run", run)
    tolerance = E.openvino_tolerance("f32", fp16=broken == "m_fp16.onnx")
    message = (
        rf"{broken.replace('.', '[.]')}: OpenVINO \(CPU, inference precision f32, forced\) "
        rf"differs from PyTorch by [0-9.e-]+ \(max abs\) > {tolerance:g}: \{{'37x53': "
    )
    with pytest.raises(E.ExportError, match=message):
        E.export_all(
            create_student("tiny").eval(),
            tmp_path / "w",
            name="m",
            variant="tiny",
            config={},
            fp16=broken == "m_fp16.onnx",
            torchscript=False,
            check_size=(33, 47),
        )
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_without_openvino_the_export_runs_and_says_the_check_was_skipped(
    exported: tuple[Path, torch.nn.Module, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, ckpt = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with caplog.at_level(logging.INFO, logger="training.export"):
        result = E.export_all(
            create_student("tiny").eval(),
            tmp_path / "api",
            name="m",
            variant="tiny",
            config={},
            torchscript=False,
            check_size=(33, 47),
        )
    assert result.openvino_skipped.startswith("openvino is not installed")
    assert result.parity_openvino == {} and set(result.parity) == {"m.onnx", "m_fp16.onnx"}
    assert "OpenVINO parity check skipped: openvino is not installed" in caplog.text
    files = json.loads((tmp_path / "api" / "manifest.json").read_text())["files"]
    assert not any("parity_openvino" in entry for entry in files.values())
    # the CLI's report says so too
    capsys.readouterr()
    assert _export(ckpt, tmp_path / "cli", "--no-fp16", "--no-torchscript") == 0
    assert "OpenVINO check skipped: openvino is not installed" in capsys.readouterr().out
    entry = json.loads((tmp_path / "cli" / "manifest.json").read_text())["files"]
    assert "parity_max_abs_diff" in entry["student_fast.onnx"]
    assert "parity_openvino" not in entry["student_fast.onnx"]


def test_load_student_errors(tmp_path: Path) -> None:
    sd = create_student("tiny").state_dict()
    path = tmp_path / "raw.pt"
    torch.save(sd, path)
    with pytest.raises(E.ExportError, match="holds no config"):
        E.load_student(path)
    model, variant, _ = E.load_student(path, variant="tiny")
    assert variant == "tiny"
    with pytest.raises(E.ExportError, match="does not match student 'fast'"):
        E.load_student(path, variant="fast")


def test_a_state_dict_of_another_network_is_refused_in_a_short_line(tmp_path: Path) -> None:
    # torch's thirty lines to 11 KB of "size mismatch for ..." (another student's shapes) or
    # every key of the network (another network's file) were the whole message.
    unet = tmp_path / "unet.pt"
    torch.save(create_student("unet").state_dict(), unet)
    with pytest.raises(E.ExportError) as exc:
        E.load_student(unet, variant="fast")
    said = str(exc.value)
    assert "\n" not in said and len(said) < 700, said
    assert "does not match student 'fast'" in said
    # The counts of each kind and the first few names: what the file looks like.
    assert "missing keys: 72 (stem.weight, stem.bias, stem_dw.weight, ...)" in said
    assert "unexpected keys: 46 (inc.weight, inc.bias, " in said
    assert "shape mismatches: 20 (encoders.0.0.dw.weight (32, 1, 3, 3) vs (48, 1, 5, 5), " in said
    # A checkpoint from before the stem became a conv is compared in the view it loads in.
    old_stem = create_student("fast").state_dict()
    stem = old_stem["stem.weight"]
    old_stem["stem.weight"] = stem.reshape(stem.shape[0], -1, 1, 1)  # the 1x1 after unshuffle
    legacy = tmp_path / "legacy.pt"
    torch.save(old_stem, legacy)
    model, _, _ = E.load_student(legacy, variant="fast")
    assert torch.equal(model.stem.weight, stem)


def test_a_checkpoint_of_another_variant_is_a_one_line_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "last.pt"
    torch.save({"model": create_student("tiny").state_dict(), "config": {"student": "tiny"}}, ckpt)
    # exit status 1 and "export failed: ...", as for a failed parity check, not a traceback;
    # one line that says what the checkpoint holds, not torch's thirty of size mismatches
    assert _export(ckpt, tmp_path / "w", "--variant", "fast") == 1
    err = capsys.readouterr().err
    assert err.strip().endswith(
        f"{ckpt} holds a 'tiny' student, not 'fast': leave out --variant, or name 'tiny'"
    ), err
    assert "export failed:" in err and "size mismatch" not in err, err
    assert not (tmp_path / "w" / "manifest.json").exists()


GROWN = {"body_blocks": 1, "dec_blocks": [2]}  # a student grown by --init_from


@pytest.mark.parametrize(
    "config",
    [
        {"student": "tiny", "student_kwargs": GROWN},
        {"model": {"name": "tiny", "kwargs": GROWN}},
    ],
    ids=["student", "model-section"],
)
@pytest.mark.parametrize("named", [None, "tiny"], ids=["from-config", "named"])
def test_naming_the_checkpoints_own_variant_keeps_its_constructor_overrides(
    tmp_path: Path, config: dict, named: str | None
) -> None:
    ckpt = tmp_path / "last.pt"
    state = create_student("tiny", **GROWN).state_dict()
    assert set(state) != set(create_student("tiny").state_dict())  # the overrides matter
    torch.save({"model": state, "config": config}, ckpt)
    model, variant, _ = E.load_student(ckpt, variant=named)
    assert variant == "tiny" and set(model.state_dict()) == set(state)


def test_opset_17_uses_an_exporter_that_honours_it(tmp_path: Path) -> None:
    import onnx

    model = create_student("tiny").eval()
    used = E.export_onnx(model, tmp_path / "m.onnx", opset=17)
    assert used in ("dynamo", "torchscript")
    opsets = {o.domain: o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import}
    assert opsets[""] == 17
    diffs = E.check_onnx(model, tmp_path / "m.onnx", [(33, 47), (16, 16)])
    assert max(diffs.values()) <= E.FP32_TOLERANCE


def _export(ckpt: Path, out: Path, *flags: str) -> int:
    """The export CLI on ``ckpt`` into ``out`` as ``student_fast``; its exit code."""
    return E.main(["--checkpoint", str(ckpt), "--out", str(out), "--name", "student_fast", *flags])


def test_int8_export_is_quantized_checked_and_listed(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path
) -> None:
    import cv2
    import onnx
    import onnxruntime as ort

    _, model, ckpt = exported
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # smooth scenes, as frames are: noise would make every range extreme
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(
            str(calib / f"{i}.png"), cv2.resize(small, (128, 96), interpolation=cv2.INTER_CUBIC)
        )
    out = tmp_path / "w"
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--int8", "--calib", str(calib)) == 0
    path = out / "student_fast_int8.onnx"
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    entry = json.loads((out / "manifest.json").read_text())["files"]["student_fast_int8.onnx"]
    assert entry["precision"] == "int8" and entry["input"]["dtype"] == "float32"
    # The float file it was quantized from, which the engine pairs it with by sha256.
    assert entry["quantized_from"] == E.sha256_file(out / "student_fast.onnx")
    assert min(entry["parity_psnr_db"].values()) >= E.INT8_MIN_PSNR
    assert min(entry["parity_residual_snr_db"].values()) >= E.INT8_MIN_SNR
    if HAS_OPENVINO:  # what the engine runs on x86 CPUs: checked against the same bounds
        ov = entry["parity_openvino"]
        assert set(ov["psnr_db"]) == set(ov["max_abs_diff"]) == set(entry["parity_psnr_db"])
        assert min(ov["psnr_db"].values()) >= E.INT8_MIN_PSNR
        assert min(ov["residual_snr_db"].values()) >= E.INT8_MIN_SNR
    assert "metrics_of" not in entry and entry["metrics"] == {}  # never the float file's numbers
    # the convolutions listed as float are exactly the Conv nodes without int8 weights
    graph = onnx.load(str(path)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    float_nodes = [
        n.name
        for n in graph.node
        if n.op_type == "Conv" and made_by.get(n.input[1]) != "DequantizeLinear"
    ]
    kept = entry["float_convs"]
    assert kept == E.int8_float_modules(model) and len(kept) >= 2
    assert float_nodes == E.onnx_conv_nodes(model, out / "student_fast.onnx", kept)
    # the same frames through ONNX Runtime: close to eager PyTorch, and not the float graph
    x = E.calibration_frames(calib, size=(96, 128))[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        ref = E.ExportWrapper(model).eval()(torch.from_numpy(x)).numpy()
    err = np.abs(got - ref)
    assert 0 < err.max() and -10 * np.log10(np.mean(err**2)) >= E.INT8_MIN_PSNR
    # a calibration source that is not there fails before anything lands
    rc = _export(ckpt, tmp_path / "x", "--int8", "--calib", str(tmp_path / "nothing.mp4"))
    assert rc == 1 and not (tmp_path / "x" / "student_fast.onnx").exists()


def test_int8_keeps_the_first_last_and_finest_scale_convolutions_float(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_student("fast").eval()
    for p in model.parameters():  # distinct weights, as trained ones are (init zeros some)
        p.data.normal_(0, 0.05)
    kept = E.int8_float_modules(model)
    finest = ["stem_dw", "encoders.0.0.expand", "encoders.0.0.dw", "encoders.0.0.project"]
    finest += ["downs.0", "decoders.2.0.expand", "decoders.2.0.dw", "decoders.2.0.project"]
    assert kept == ["stem", *finest, "head_dw", "head"]
    assert E.int8_float_modules(create_student("tiny"))[0] == "stem"
    path = tmp_path / "fast.onnx"
    E.export_onnx(model, path)
    nodes = E.onnx_conv_nodes(model, path, kept)
    assert len(set(nodes)) == len(kept)
    with pytest.raises(E.ExportError, match="no Conv node with the weights of head"):
        other = create_student("fast")
        other.load_state_dict(model.state_dict())
        other.head.weight.data += 1
        E.onnx_conv_nodes(other, path, ["stem", "head"])


def test_int8_float_convolutions_with_equal_weights_map_to_their_own_nodes(
    tmp_path: Path,
) -> None:
    import onnx

    from training.models.student import grow_from

    # Equal widths at both scales: the zero `project` of the block grown at the coarse level
    # (quantized) and of the one grown at the finest (kept float) have the same weights.
    kwargs = {"widths": (8, 8), "dec_blocks": (2,), "enc_blocks": (1, 2)}
    torch.manual_seed(0)
    source = create_student("tiny", widths=(8, 8), enc_blocks=(1, 1))
    for p in source.parameters():
        p.data.normal_(0, 0.05)
    model = create_student("tiny", **kwargs)
    assert grow_from(model, source.state_dict()) == ["decoders.0.1", "encoders.1.1"]
    model.eval()
    kept = E.int8_float_modules(model)
    assert "decoders.0.1.project" in kept and "encoders.1.1.project" not in kept
    path = tmp_path / "m.onnx"
    E.export_onnx(model, path)
    node_of = dict(zip(kept, E.onnx_conv_nodes(model, path, kept), strict=True))
    # Read the graph: the node kept for a block's `project` convolves relu(its own `dw`).
    graph = onnx.load(str(path)).graph
    nodes = {n.name: n for n in graph.node}
    made_by = {o: n for n in graph.node for o in n.output}
    for block in ("decoders.0.0", "decoders.0.1"):
        relu = made_by[nodes[node_of[f"{block}.project"]].input[0]]
        assert relu.op_type == "Relu"
        assert made_by[relu.input[0]].name == node_of[f"{block}.dw"]


def test_default_calibration_is_the_projects_demo_clip() -> None:
    import cv2

    frames = E.calibration_frames(count=3, size=(64, 96))
    assert len(frames) == 3 and frames[0].shape == (1, 3, 64, 96) and frames[0].dtype == np.float32
    assert 0.05 < float(np.mean(frames[0])) < 0.95 and not np.array_equal(frames[0], frames[2])
    # The models run on RGB: calibrating on OpenCV's BGR frames set the int8 ranges of the red
    # and blue inputs from each other's statistics, and every check above still held. The first
    # pick is the clip's first frame, resized and then turned RGB.
    cap = cv2.VideoCapture(str(E.DEMO_CLIP))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    rgb = cv2.cvtColor(cv2.resize(bgr, (96, 64)), cv2.COLOR_BGR2RGB)
    expect = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(frames[0], expect)
    # ... a frame whose colour order shows: its red and blue planes differ
    assert np.abs(expect[0, 0] - expect[0, 2]).mean() > 0.02


def test_int8_that_does_not_deblur_is_refused(
    exported: tuple[Path, torch.nn.Module, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from contract_models import make_onnx_model

    _, _, ckpt = exported
    # a "quantized" graph that passes the image through: ~33 dB PSNR to the student's output
    monkeypatch.setattr(
        E, "quantize_int8", lambda src, dst, frames, keep_float: make_onnx_model(dst, "identity")
    )
    out = tmp_path / "w"
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--int8") == 1
    assert "int8 output too far from PyTorch's" in capsys.readouterr().err
    assert (
        not (out / "student_fast_int8.onnx").exists() and not (out / "student_fast.onnx").exists()
    )


def test_reexport_removes_files_of_the_family_it_did_not_make(
    exported: tuple[Path, torch.nn.Module, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, ckpt = exported
    out = tmp_path / "w"
    assert _export(ckpt, out, "--no-torchscript", "--int8") == 0
    assert {"student_fast_fp16.onnx", "student_fast_int8.onnx"} <= set(
        json.loads((out / "manifest.json").read_text())["files"]
    )
    (out / "notes.txt").write_text("mine")  # not of the family: never touched
    (out / "student_hq_int8.onnx").write_bytes(b"another name's")
    # exported without --int8 / fp16: those files must not stay listed or on disk
    with caplog.at_level(logging.INFO, logger="training.export"):
        assert _export(ckpt, out, "--no-fp16", "--no-torchscript") == 0
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert set(files) == {"student_fast.onnx"}
    assert sorted(p.name for p in out.glob("*.onnx")) == [
        "student_fast.onnx",
        "student_hq_int8.onnx",
    ]
    assert (out / "notes.txt").read_text() == "mine"
    # The same checkpoint both times: "it held the previous weights" was untrue. The message
    # says what holds whatever the weights were.
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed ")]
    assert said == [
        f"removed student_fast{sfx}: it was not made by this export, and the engine would load "
        "it beside the new weights"
        for sfx in ("_fp16.onnx", "_int8.onnx")
    ]
    # --help says so where a user chooses what to make.
    with pytest.raises(SystemExit):
        E.main(["--help"])
    helped = " ".join(capsys.readouterr().out.split())
    assert "--no-fp16 skip the fp16 ONNX (and remove DIR/NAME_fp16.onnx of an earlier export)" in (
        helped
    )
    assert "--no-torchscript skip TorchScript (and remove DIR/NAME.ts of an earlier export)" in (
        helped
    )
    assert "without it, DIR/NAME_int8.onnx of an earlier export is removed" in helped
    assert "already in DIR that this export does not make are removed" in helped


def test_an_unusable_manifest_stops_the_export_before_files_move(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, _, ckpt = exported
    out = tmp_path / "w"
    out.mkdir()
    (out / "manifest.json").write_text("{not json")
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript") == 1
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_metrics_measured_on_other_bytes_are_refused(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # New weights exported with an old summary would ship the old numbers as theirs.
    _, _, ckpt = exported
    first = tmp_path / "first"
    assert _export(ckpt, first, "--no-fp16", "--no-torchscript") == 0
    sha = hashlib.sha256((first / "student_fast.onnx").read_bytes()).hexdigest()
    table = {"raw-plain": {"n": 1, "methods": {"student_fast": {"psnr": 30.0}}}}
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({"sets": table, "model_sha256": {"student_fast": "0" * 64}}))
    out = tmp_path / "w"
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--metrics", str(stale)) == 1
    assert "different file" in capsys.readouterr().err
    assert not (out / "student_fast.onnx").exists()  # nothing shipped under the wrong numbers
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps({"sets": table, "model_sha256": {"student_fast": sha}}))
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--metrics", str(fresh)) == 0
    entry = json.loads((out / "manifest.json").read_text())["files"]["student_fast.onnx"]
    assert entry["sha256"] == sha and entry["metrics"]["sets"] == table


def test_metrics_that_measured_neither_the_file_nor_the_checkpoint_are_refused(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Another variant's summary (rows `student`, hq) was shipped as student_fast's numbers.
    _, _, ckpt = exported
    table = {"raw-plain": {"n": 1, "methods": {"blurry": {"psnr": 25.0}, "student": {}}}}
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"sets": table, "model_sha256": {"student": "0" * 64}}))
    out = tmp_path / "w"
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--metrics", str(other)) == 1
    err = capsys.readouterr().err
    assert "measured neither student_fast.onnx nor this checkpoint" in err, err
    assert "its rows: blurry, student" in err and not out.exists()
    # The checkpoint evaluated under the export's name (training/checkpoints/student_fast.pt
    # exported as student_fast): its row measured these weights.
    own = tmp_path / "own.json"
    table = {"raw-plain": {"n": 1, "methods": {"student_fast": {"psnr": 30.0}}}}
    own.write_text(
        json.dumps({"sets": table, "model_sha256": {"student_fast": E.sha256_file(ckpt)}})
    )
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--metrics", str(own)) == 0
    entry = json.loads((out / "manifest.json").read_text())["files"]["student_fast.onnx"]
    assert entry["metrics"]["sets"] == table


def test_metrics_keep_how_they_were_measured_and_only_this_exports_rows(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The hq student's rows rode along in student_fast's entries and went stale when it was
    # retrained; a 48-pixel crop's scores read like whole frames'; scores on training frames
    # read as held-out.
    _, _, ckpt = exported
    rows = {
        "blurry": {"psnr": 25.0},
        "student_fast": {"psnr": 27.0},
        "student": {"psnr": 26.0},
        "student@0.5x": {"psnr": 25.5},
        "teacher_dmphn": {"psnr": 32.0},
    }
    summary = {
        "sets": {"raw-plain": {"n": 2, "methods": rows}},
        "options": {"crop": 48, "windows": [7]},
        "model_sha256": {"student_fast": E.sha256_file(ckpt), "student": "1" * 64},
        "not_held_out": [],
    }
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    out = tmp_path / "w"
    assert _export(ckpt, out, "--no-fp16", "--no-torchscript", "--metrics", str(path)) == 0
    metrics = json.loads((out / "manifest.json").read_text())["files"]["student_fast.onnx"][
        "metrics"
    ]
    assert list(metrics["sets"]["raw-plain"]["methods"]) == [
        "blurry",
        "student_fast",
        "teacher_dmphn",
    ]
    assert metrics["model_sha256"] == {"student_fast": E.sha256_file(ckpt)}
    assert metrics["options"] == {"crop": 48, "windows": [7]}
    summary["not_held_out"] = [
        "student_fast: GOPR_x frames 207-293 overlap its training frames 1-239"
    ]
    path.write_text(json.dumps(summary))
    assert _export(ckpt, tmp_path / "w2", "--no-fp16", "--metrics", str(path)) == 1
    assert "scored frames a model was trained on (student_fast: GOPR_x" in capsys.readouterr().err
    assert not (tmp_path / "w2").exists()


def test_a_checkpoint_and_random_init_together_are_refused(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The checkpoint was ignored without a word, and random weights exported under its name.
    _, _, ckpt = exported
    with pytest.raises(SystemExit) as exc:
        E.main(["--checkpoint", str(ckpt), "--random-init", "--variant", "tiny", "--out",
                str(tmp_path / "w")])  # fmt: skip
    assert exc.value.code == 2
    assert "--checkpoint and --random-init exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_fresh_summary_of_the_onnx_file_exports_with_torchscript_and_fp16(
    exported: tuple[Path, torch.nn.Module, Path], tmp_path: Path
) -> None:
    # student_fast.onnx and student_fast.ts share the row name `student_fast`: a summary that
    # measured the ONNX file is this export's, not "a different file" because of the .ts.
    _, _, ckpt = exported
    first = tmp_path / "first"
    assert _export(ckpt, first) == 0
    assert (first / "student_fast.ts").is_file() and (first / "student_fast_fp16.onnx").is_file()
    sha = hashlib.sha256((first / "student_fast.onnx").read_bytes()).hexdigest()
    table = {"raw-plain": {"n": 1, "methods": {"student_fast": {"psnr": 30.0}}}}
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps({"sets": table, "model_sha256": {"student_fast": sha}}))
    out = tmp_path / "w"
    assert _export(ckpt, out, "--metrics", str(fresh)) == 0
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["student_fast.ts"]["metrics"]["sets"] == table
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({"sets": table, "model_sha256": {"student_fast": "0" * 64}}))
    assert _export(ckpt, tmp_path / "w2", "--metrics", str(stale)) == 1


def _checkpoint_cases(tmp_path: Path) -> dict[str, list[str]]:
    """CLI arguments that name a checkpoint or summary the export cannot use, by case."""
    state = create_student("tiny").state_dict()
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    renamed = tmp_path / "renamed.pt"  # a variant renamed since (fast was fast_l once)
    torch.save({"model": state, "config": {"student": "tiny_old"}}, renamed)
    kwargs = tmp_path / "kwargs.pt"  # constructor overrides this code's variant does not have
    torch.save(
        {"model": state, "config": {"student": "tiny", "student_kwargs": {"gone": 1}}}, kwargs
    )
    good = tmp_path / "good.pt"
    torch.save({"model": state, "config": {"student": "tiny"}}, good)
    bad_json = tmp_path / "summary.json"
    bad_json.write_text("{half a summary")
    return {
        "missing": ["--checkpoint", str(tmp_path / "gone.pt")],
        "folder": ["--checkpoint", str(tmp_path)],
        "junk": ["--checkpoint", str(junk)],
        "renamed-variant": ["--checkpoint", str(renamed)],
        "unknown-kwargs": ["--checkpoint", str(kwargs)],
        "variant-typo": ["--variant", "tinyy", "--random-init"],
        "metrics-missing": ["--checkpoint", str(good), "--metrics", str(tmp_path / "no.json")],
        "metrics-not-json": ["--checkpoint", str(good), "--metrics", str(bad_json)],
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "folder",
        "junk",
        "renamed-variant",
        "unknown-kwargs",
        "variant-typo",
        "metrics-missing",
        "metrics-not-json",
    ],
)
def test_an_unusable_checkpoint_or_summary_is_a_one_line_failure(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # These ended in a traceback (KeyError, TypeError, FileNotFoundError, JSONDecodeError),
    # where a checkpoint of another variant already said "export failed: ..." and exited 1.
    args = _checkpoint_cases(tmp_path)[case]
    out = tmp_path / "w"
    assert E.main([*args, "--out", str(out), "--no-fp16", "--no-torchscript"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("export failed: ") and err.count("\n") == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_the_unknown_variant_message_names_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _checkpoint_cases(tmp_path)["renamed-variant"]
    assert E.main([*args, "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "'tiny_old'" in err and "tiny" in err.split("'tiny_old'")[1] and "--variant" in err
    args = _checkpoint_cases(tmp_path)["unknown-kwargs"]
    assert E.main([*args, "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "unknown config keys for student 'tiny': ['gone']" in err and "--variant" not in err


@pytest.mark.parametrize("name", ["student_fast.onnx", "sub/student_fast", "", "../student"])
def test_a_name_that_is_not_a_file_stem_is_refused_before_any_work(
    name: str, tmp_path: Path
) -> None:
    # --name student_fast.onnx wrote student_fast.onnx.onnx beside the old student_fast.onnx
    # (still listed, still the one the engine loads); a path escaped --out.
    with pytest.raises(E.ExportError, match="--name"):
        E.export_all(
            create_student("tiny").eval(),
            tmp_path / "w",
            name=name,
            variant="tiny",
            config={},
            fp16=False,
            torchscript=False,
        )
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_a_name_ending_like_a_variant_file_keeps_each_files_own_contract(tmp_path: Path) -> None:
    # The precision was read from the end of the whole file name: --name cam_fp16 listed its
    # float32 file cam_fp16.onnx as fp16 with a float16 input and output.
    torch.manual_seed(0)
    result = E.export_all(
        create_student("tiny").eval(),
        tmp_path,
        name="cam_fp16",
        variant="tiny",
        config={},
        torchscript=False,
        check_size=(37, 45),
    )
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert set(files) == set(result.files) == {"cam_fp16.onnx", "cam_fp16_fp16.onnx"}
    for fname, precision, dtype in (
        ("cam_fp16.onnx", "fp32", "float32"),
        ("cam_fp16_fp16.onnx", "fp16", "float16"),
    ):
        entry = files[fname]
        assert entry["precision"] == precision, fname
        assert entry["input"]["dtype"] == entry["output"]["dtype"] == dtype, fname


def _entry(path: Path) -> dict:
    """A manifest entry for the few bytes at ``path`` (a tiny fp32 ONNX student's keys)."""
    return E.manifest_entry(
        path,
        fmt="onnx",
        precision="fp32",
        variant="tiny",
        device="cpu",
        multiple=8,
        params=1,
        macs_per_pixel=1.0,
        metrics={},
        digest="d" * 64,
    )


def _listed(directory: Path, name: str = "m.onnx") -> dict:
    """``directory/name`` (a few bytes) listed in ``directory/manifest.json``; its entry."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(b"model bytes")
    entry = _entry(directory / name)
    E.update_manifest(directory, {name: entry})
    return entry


@pytest.mark.parametrize("problem", ["only-the-changed-keys", "other-bytes", "no-file"])
def test_update_manifest_refuses_an_entry_the_engine_would_refuse(
    problem: str, tmp_path: Path
) -> None:
    # update_manifest replaces whole entries: {"m.onnx": {"metrics": ...}} (the keys to change,
    # the model card's "metrics set" step) wrote an entry without a sha256, and the engine then
    # refused the whole manifest, every model in the folder; an entry whose sha256 is not its
    # file's made the engine refuse that model.
    manifest_mod = pytest.importorskip("engine.manifest")
    entry = _listed(tmp_path)
    (tmp_path / "other.onnx").write_bytes(b"other bytes")
    before = (tmp_path / "manifest.json").read_text()
    bad = {
        "only-the-changed-keys": {"m.onnx": {"metrics": {"sets": {}}}},
        "other-bytes": {"other.onnx": entry},
        "no-file": {"gone.onnx": entry},
    }[problem]
    with pytest.raises(E.ExportError, match=next(iter(bad))):
        E.update_manifest(tmp_path, bad)
    assert (tmp_path / "manifest.json").read_text() == before
    assert manifest_mod.verify_file(tmp_path / "m.onnx") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "manifest.json", "other.onnx"]


def test_update_manifest_keeps_other_entries_and_takes_a_whole_changed_entry(
    tmp_path: Path,
) -> None:
    entry = _listed(tmp_path, "a.onnx")
    _listed(tmp_path, "b.onnx")
    changed = {**entry, "metrics": {"sets": {"raw": {"n": 1}}}}
    E.update_manifest(tmp_path, {"a.onnx": changed})
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert set(files) == {"a.onnx", "b.onnx"} and files["a.onnx"] == changed


def test_a_reexport_under_another_case_of_the_name_drops_the_entry_of_the_same_file(
    tmp_path: Path,
) -> None:
    # On Windows and macOS `--name Student_Fast` rewrites student_fast.onnx (one file, two
    # spellings); its old entry stayed, and the engine refused the new bytes as damaged. A hard
    # link stands in for a case-insensitive file system here: two names, one file.
    manifest_mod = pytest.importorskip("engine.manifest")
    _listed(tmp_path, "student_fast.onnx")
    try:
        (tmp_path / "Student_Fast.onnx").hardlink_to(tmp_path / "student_fast.onnx")
    except OSError:
        pytest.skip("no hard links here")
    (tmp_path / "student_fast.onnx").write_bytes(b"new weights")  # both names see them
    entry = _entry(tmp_path / "Student_Fast.onnx")
    E.update_manifest(tmp_path, {"Student_Fast.onnx": entry})
    assert set(json.loads((tmp_path / "manifest.json").read_text())["files"]) == {
        "Student_Fast.onnx"
    }
    assert manifest_mod.verify_file(tmp_path / "student_fast.onnx") is not None
    # two different files whose names differ in case (a case-sensitive file system) both stay
    other = tmp_path / "other"
    _listed(other, "student_fast.onnx")
    (other / "Student_Fast.onnx").write_bytes(b"model bytes")
    E.update_manifest(
        other, {"Student_Fast.onnx": entry | {"sha256": E.sha256_file(other / "Student_Fast.onnx")}}
    )
    assert len(json.loads((other / "manifest.json").read_text())["files"]) == 2


def test_two_updates_finishing_together_keep_both_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two exports of different names into one folder: each read the manifest, added its entry
    # and replaced the file, so the one that wrote last dropped the other's entry.
    import threading

    names = ("a.onnx", "b.onnx")
    entries = {}
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
        entries[name] = _entry(tmp_path / name)
    have_read = {name: threading.Event() for name in names}
    mine = threading.local()
    real = E._existing_files

    def read_then_wait(path: Path) -> dict:
        files = real(path)
        have_read[mine.name].set()
        # Unlocked, both updates read the manifest before either writes; locked, the second
        # waits for the first, and this wait runs out.
        other = next(n for n in names if n != mine.name)
        have_read[other].wait(timeout=1.0)
        return files

    monkeypatch.setattr(E, "_existing_files", read_then_wait)
    errors = []

    def update(name: str) -> None:
        mine.name = name
        try:
            E.update_manifest(tmp_path, {name: entries[name]})
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=update, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert set(json.loads((tmp_path / "manifest.json").read_text())["files"]) == set(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == [*names, "manifest.json"]


def test_a_manifest_lock_left_behind_is_a_one_line_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(E, "MANIFEST_LOCK_TIMEOUT", 0.2)
    (tmp_path / "m.onnx").write_bytes(b"model bytes")
    lock = tmp_path / "manifest.json.lock"
    lock.write_text("12345")
    with pytest.raises(E.ExportError) as info:
        E.update_manifest(tmp_path, {"m.onnx": _entry(tmp_path / "m.onnx")})
    assert str(lock) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "manifest.json").exists() and lock.read_text() == "12345"


def test_a_manifest_lock_that_cannot_be_taken_stops_an_export_before_files_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock was taken only once the new files had replaced the old: a lock left behind (or
    # Ctrl-C while waiting for it) left new weights beside a manifest listing the old sha256,
    # and the engine refused them.
    entry = _listed(tmp_path, "m.onnx")

    def export_checked(model, stage, *, name, **kwargs):  # noqa: ANN001, ANN003, ANN202
        result = E.ExportResult()
        (stage / f"{name}.onnx").write_bytes(b"new model bytes")
        result.files[f"{name}.onnx"] = stage / f"{name}.onnx"
        result.entries[f"{name}.onnx"] = _entry(stage / f"{name}.onnx")
        return result

    monkeypatch.setattr(E, "_export_checked", export_checked)
    monkeypatch.setattr(E, "MANIFEST_LOCK_TIMEOUT", 0.2)
    (tmp_path / "manifest.json.lock").write_text("12345")
    with pytest.raises(E.ExportError, match="locked by another export"):
        E.export_all(torch.nn.Identity(), tmp_path, name="m", variant="tiny", config={})
    assert (tmp_path / "m.onnx").read_bytes() == b"model bytes"
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]["m.onnx"] == entry
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.onnx",
        "manifest.json",
        "manifest.json.lock",
    ]
    # Once it is gone, the same export goes through.
    (tmp_path / "manifest.json.lock").unlink()
    E.export_all(torch.nn.Identity(), tmp_path, name="m", variant="tiny", config={})
    assert (tmp_path / "m.onnx").read_bytes() == b"new model bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "manifest.json"]


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"schema": E.SCHEMA, "files": None}).encode(),
        json.dumps({"schema": E.SCHEMA, "files": ["student.onnx"]}).encode(),
        b"\xff\xfe{",  # not UTF-8
    ],
)
def test_a_manifest_the_engine_refuses_is_a_one_line_export_failure(
    content: bytes, tmp_path: Path
) -> None:
    # "files" that is no object, or a file that is not UTF-8: the engine refuses such a
    # manifest in one line; the export stopped with a TypeError or UnicodeDecodeError traceback.
    (tmp_path / "m.onnx").write_bytes(b"model bytes")
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(E.ExportError) as info:
        E.update_manifest(tmp_path, {"m.onnx": _entry(tmp_path / "m.onnx")})
    assert str(tmp_path / "manifest.json") in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "manifest.json").read_bytes() == content


def test_calibration_from_a_clip_keeps_only_the_frames_it_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every frame of the clip was held in memory to pick `count` of them: a long recording
    # given as --calib (10,000 frames of 1080p: 62 GB) ran out of memory.
    import cv2

    n, decoded = 50, []

    class Clip:  # a 50-frame clip whose frame k (from 1) is blue k; counts the frames handed out
        def __init__(self, path: str) -> None:
            self.k = 0

        def grab(self) -> bool:
            self.k += 1
            return self.k <= n

        def retrieve(self) -> tuple[bool, np.ndarray]:
            decoded.append(self.k)
            bgr = np.zeros((8, 8, 3), np.uint8)
            bgr[..., 0] = self.k
            return True, bgr

        def read(self) -> tuple[bool, np.ndarray | None]:
            return self.retrieve() if self.grab() else (False, None)

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Clip)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    frames = E.calibration_frames(clip, count=4, size=(8, 8))
    # spread over the whole clip as before: frames 1, 17, 34 and 50
    assert [round(float(f.max()) * 255) for f in frames] == [1, 17, 34, 50]
    assert len(decoded) == 4
    # OpenCV decodes BGR; the frames handed on are RGB: the blue is in the last plane
    assert all(f[0, 2].all() and not f[0, :2].any() for f in frames)


# --------------------------------------------------------------------------------------------
# ONNX external data: the weights of a graph saved with save_as_external_data live in files
# beside it, which the graph's sha256 does not cover.
# --------------------------------------------------------------------------------------------


def test_manifest_entry_lists_external_data_and_the_engine_checks_it(tmp_path: Path) -> None:
    from contract_models import make_external_data_model

    manifest_mod = pytest.importorskip("engine.manifest")
    path = make_external_data_model(tmp_path / "m.onnx")
    side = tmp_path / "m.onnx.data"
    entry = _entry(path)
    assert entry["external_data"] == {
        "m.onnx.data": {"sha256": E.sha256_file(side), "bytes": side.stat().st_size}
    }
    E.update_manifest(tmp_path, {"m.onnx": entry})
    assert manifest_mod.verify_file(path) is not None
    side.write_bytes(side.read_bytes()[::-1])  # other weights, same size
    with pytest.raises(manifest_mod.ModelIntegrityError, match=str(side)):
        manifest_mod.verify_file(path)


@pytest.mark.parametrize("problem", ["not-listed", "other-bytes", "no-file"])
def test_update_manifest_refuses_an_entry_whose_external_data_the_engine_would_refuse(
    problem: str, tmp_path: Path
) -> None:
    from contract_models import make_external_data_model

    path = make_external_data_model(tmp_path / "m.onnx")
    side = tmp_path / "m.onnx.data"
    entry = _entry(path)
    if problem == "not-listed":  # an entry from before external_data, or written by hand
        del entry["external_data"]
    elif problem == "other-bytes":
        side.write_bytes(side.read_bytes()[::-1])
    else:
        side.unlink()
    with pytest.raises(E.ExportError, match="external data") as info:
        E.update_manifest(tmp_path, {"m.onnx": entry})
    assert "m.onnx" in str(info.value)
    assert not (tmp_path / "manifest.json").exists()


def test_engine_and_export_find_the_same_external_data(tmp_path: Path) -> None:
    # The engine reads the protobuf itself (it does not need the onnx package); the export
    # records what onnx finds. Tensors in initializers, in Constant nodes and inside an If
    # branch, each in a file of its own: the engine must find each one the export lists, or
    # it refuses the model although the entry is right.
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    manifest_mod = pytest.importorskip("engine.manifest")

    def tensor(name: str) -> TensorProto:
        return numpy_helper.from_array(np.full((4, 4), 0.5, np.float32), name)

    def const(name: str) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=tensor(f"{name}_value"))

    branch = helper.make_graph(
        [const("b")], "branch", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 4])]
    )
    graph = helper.make_graph(
        [
            const("c"),
            helper.make_node("Add", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "c"], ["y0"]),
            helper.make_node("If", ["cond"], ["br"], then_branch=branch, else_branch=branch),
            helper.make_node("Add", ["y0", "br"], ["y"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        initializer=[tensor("w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # convert_attribute: the Constant values too (onnx.save alone moves initializers only)
    convert_model_to_external_data(
        model, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    found = E.external_data_files(path)
    assert set(found) == {"w", "c_value", "b_value"}  # the branch's tensor is saved once
    assert set(manifest_mod.onnx_external_data(path)) == set(found)
    E.update_manifest(tmp_path, {"m.onnx": _entry(path)})
    assert set(manifest_mod.verify_file(path).external_data) == set(found)


def test_an_export_carries_its_external_data_files_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exporter that keeps the weights beside the graph (onnx does for models over 2 GiB):
    # the side file moves in with the graph and is listed, or the graph loads without weights.
    import onnx

    manifest_mod = pytest.importorskip("engine.manifest")
    real_export = E.export_onnx

    def export_external(model: torch.nn.Module, path: str | Path, *, opset: int = 18) -> str:
        used = real_export(model, path, opset=17)  # 17: the fast TorchScript-based exporter
        onnx.save(
            onnx.load(str(path)),
            str(path),
            save_as_external_data=True,
            location=f"{Path(path).name}.data",
            size_threshold=0,
        )
        return used

    monkeypatch.setattr(E, "export_onnx", export_external)
    result = export_tiny(create_student("tiny").eval(), tmp_path, fp16=False, torchscript=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "manifest.json"]
    listed = json.loads((tmp_path / "manifest.json").read_text())["files"]["m.onnx"]
    assert listed == result.entries["m.onnx"]
    assert listed["external_data"]["m.onnx.data"]["sha256"] == E.sha256_file(
        tmp_path / "m.onnx.data"
    )
    assert manifest_mod.verify_file(tmp_path / "m.onnx") is not None


def test_external_data_outside_the_model_folder_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ONNX Runtime and the engine refuse a graph naming a file outside its folder: the entry
    # hashed whatever it named (any file of the machine), and export_all would have moved that
    # file into the weights folder.
    from onnx import TensorProto, helper, numpy_helper

    models = tmp_path / "models"
    models.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(4, np.float32).tobytes())
    hashed: list[Path] = []
    real_sha = E.sha256_file
    monkeypatch.setattr(E, "sha256_file", lambda p: hashed.append(Path(p)) or real_sha(p))
    for location in ("../secret.bin", str(secret)):
        w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value=location)
        graph = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["y"])],
            "g",
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
            initializer=[w],
        )
        path = models / "m.onnx"
        path.write_bytes(helper.make_model(graph).SerializeToString())
        assert E.external_data_files(path) == [location]
        with pytest.raises(E.ExportError, match="is not inside its folder"):
            _entry(path)
        entry = {"sha256": real_sha(path), "format": "onnx"}
        entry["external_data"] = {location: {"sha256": real_sha(secret)}}
        with pytest.raises(E.ExportError, match="is not inside its folder"):
            E.update_manifest(models, {"m.onnx": entry})
        assert secret not in hashed and secret.resolve() not in hashed, location
    assert not (models / "manifest.json").exists()


def test_both_onnx_files_declare_the_contracts_shape_on_input_and_output(
    exported: tuple[Path, torch.nn.Module, Path],
) -> None:
    # The contract is (1, 3, H, W) in and the same out: a free batch dim, or the exporter's
    # symbolic output dims left in place, would pass every numeric check (they run batch 1).
    import onnxruntime as ort

    out, _, _ = exported
    for name in ("student_fast.onnx", "student_fast_fp16.onnx"):
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        for value in (*sess.get_inputs(), *sess.get_outputs()):
            assert value.shape == [1, 3, "height", "width"], (name, value.name, value.shape)


class _NaNTorchScriptAtSecondSize:
    """A loaded TorchScript module whose output is all NaN at the second check size only."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def eval(self) -> _NaNTorchScriptAtSecondSize:
        self.module.eval()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x)
        return torch.full_like(y, float("nan")) if x.shape[2] == E.SECOND_SIZE[0] else y


def test_nan_at_the_second_check_size_fails_the_torchscript_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for the ONNX files: `worst > tolerance` is False for NaN, so only `not worst <= ...`
    # refuses a TorchScript file that breaks at the second size.
    load = torch.jit.load
    monkeypatch.setattr(
        torch.jit, "load", lambda *a, **k: _NaNTorchScriptAtSecondSize(load(*a, **k))
    )
    with pytest.raises(E.ExportError, match="TorchScript differs from PyTorch by nan"):
        export_tiny(create_student("tiny").eval(), tmp_path, fp16=False, torchscript=True)
    assert not (tmp_path / "manifest.json").exists()


def test_int8_residual_snr_compares_the_corrections(tmp_path: Path) -> None:
    # A graph that applies half of the student's correction: 6.02 dB residual SNR (error is half
    # the correction), whatever the PSNR. Measured against the output instead of the correction,
    # the SNR would be ~22 dB here (~16 more) and a graph that barely deblurs would pass.
    model = _tiny_with_weights(1)
    wrapper = E.ExportWrapper(model).eval()

    def half(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(x)).numpy()
        return x + 0.5 * (ref - x)

    g = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, 48, 64, generator=g).numpy() for _ in range(2)]
    _, snr, _ = E._int8_scores(model, tmp_path / "m.onnx", frames, half)
    assert len(snr) == 3 and all(v == pytest.approx(6.02, abs=0.05) for v in snr.values()), snr


@pytest.mark.parametrize(
    "psnr,snr",
    [
        ({"a": 40.0, "b": 40.0}, {"a": 40.0, "b": E.INT8_MIN_SNR - 1}),  # barely deblurs
        ({"a": 40.0, "b": float("nan")}, {"a": 40.0, "b": float("nan")}),  # breaks on the crop
    ],
)
def test_int8_checks_on_frames_left_out_of_calibration_and_needs_both_bounds(
    psnr: dict[str, float],
    snr: dict[str, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Checked on frames it was calibrated on, int8 would look better than it is; a PSNR above
    # its bound must not excuse a residual SNR below its own; and NaN on a later frame must not
    # hide behind a good first one (Python's min() keeps its first argument against NaN).
    import cv2
    from contract_models import make_onnx_model

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(calib / f"{i}.png"), cv2.resize(small, (64, 48)))
    seen: dict[str, list[np.ndarray]] = {}

    def quantize(src: object, dst: Path, frames: list[np.ndarray], keep_float: object) -> None:
        seen["calib"] = list(frames)
        make_onnx_model(dst, "identity")

    def check(model: object, path: object, frames: list[np.ndarray]) -> tuple[dict, dict]:
        seen["check"] = list(frames)
        return psnr, snr

    monkeypatch.setattr(E, "quantize_int8", quantize)
    monkeypatch.setattr(E, "check_int8", check)
    model = create_student("tiny").eval()
    with pytest.raises(E.ExportError, match="int8 output too far from PyTorch's"):
        E.export_all(model, tmp_path / "w", name="m", variant="tiny", config={}, fp16=False,
                     torchscript=False, check_size=(33, 47), int8=True, calib=calib)  # fmt: skip
    assert len(seen["check"]) == E.INT8_CHECK_FRAMES and len(seen["calib"]) == 6 - 2
    for f in seen["check"]:
        assert not any(np.array_equal(f, c) for c in seen["calib"])


def test_one_wrong_pixel_fails_the_parity_check() -> None:
    # Parity is the worst pixel: averaged over the frame, a graph that breaks one pixel (an edge
    # case of padding, say) by 0.5 differs by ~3e-5 and passes the 1e-4 bound.
    torch.manual_seed(0)
    model = create_student("tiny").eval()
    wrapper = E.ExportWrapper(model).eval()

    def off_at_one_pixel(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = wrapper(torch.from_numpy(x)).numpy().copy()
        out[0, 1, 5, 7] += 0.5
        return out

    diffs = E._max_abs_diffs(model, "m.onnx", [(64, 96), E.SECOND_SIZE], off_at_one_pixel)
    assert diffs == {"64x96": pytest.approx(0.5, abs=1e-6), "37x53": pytest.approx(0.5, abs=1e-6)}
    assert not E._worst(diffs) <= E.FP32_TOLERANCE


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", "float32"), ("fp16", "float16")])
def test_manifest_entry_declares_the_files_dtype_on_input_and_output(
    precision: str, dtype: str, tmp_path: Path
) -> None:
    # The engine allocates its output buffer by the declared dtype: an fp16 file listed with a
    # float32 output is read back as garbage (or refused) on every frame.
    path = tmp_path / "m.onnx"
    path.write_bytes(b"model bytes")
    entry = E.manifest_entry(
        path,
        fmt="onnx",
        precision=precision,
        variant="tiny",
        device="cpu",
        multiple=8,
        params=1,
        macs_per_pixel=1.0,
        metrics={},
        digest="d" * 64,
    )
    assert entry["input"]["dtype"] == dtype
    assert entry["output"] == {
        "name": "output",
        "dtype": dtype,
        "layout": "NCHW",
        "color": "RGB",
        "range": [0, 1],
    }


@pytest.mark.parametrize("fp16", [False, True])
def test_forced_f32_is_held_to_f32s_tolerance_whatever_openvino_reports(
    fp16: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CPU that ignores the f32 hint and says bf16: the forced check must still use f32's
    # bound (the engine runs f32), not bf16's 2e-2, or a graph off by 5e-3 ships as checked.
    off = 1.5e-2 if fp16 else 5e-3
    calls: list[str | None] = []

    def check(
        model: torch.nn.Module,
        path: str | Path,
        sizes: list[tuple[int, int]],
        *,
        fp16: bool = False,
        precision_hint: str | None = None,
    ) -> tuple[dict[str, float], str]:
        calls.append(precision_hint)
        return ({"37x53": 1e-3 if precision_hint is None else off}, "bf16")

    monkeypatch.setattr(E, "check_openvino", check)
    result = E.ExportResult()
    tolerance = E.openvino_tolerance("f32", fp16=fp16)
    assert off > tolerance
    message = (
        r"m\.onnx: OpenVINO \(CPU, inference precision bf16, forced\) differs from PyTorch by "
        rf"[0-9.e-]+ \(max abs\) > {tolerance:g}"
    )
    with pytest.raises(E.ExportError, match=message):
        E._openvino_parity(
            create_student("tiny").eval(), tmp_path / "m.onnx", [(33, 47)], result, fp16=fp16
        )
    assert calls == [None, "f32"]
    assert result.parity_openvino_f32 == {"m.onnx": {"37x53": off}}


class _OffBy:
    """An ONNX Runtime session whose output is off by ``shift`` everywhere."""

    def __init__(self, session: object, shift: float) -> None:
        self.session, self.shift = session, shift

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)

    def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.session.run(names, feed)
        return [out[0] + np.asarray(self.shift, dtype=out[0].dtype)]


def test_fp32_onnx_off_by_a_few_times_its_tolerance_fails_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fp32 file is the one the engine runs everywhere: 5e-4 is 5x its documented 1e-4
    # bound (docs/ARCHITECTURE.md) and must not ship as checked.
    real_session = E._cpu_session
    monkeypatch.setattr(E, "_cpu_session", lambda path: _OffBy(real_session(path), 5e-4))
    with pytest.raises(E.ExportError, match=r"m\.onnx: ONNX Runtime differs .* > 0\.0001"):
        export_tiny(create_student("tiny").eval(), tmp_path, fp16=False, torchscript=False)
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("name", ["..", "student_fast.pt", "weights\\student_fast"])
def test_a_dotdot_checkpoint_suffixed_or_backslashed_name_is_refused(
    name: str, tmp_path: Path
) -> None:
    # ".." and a Windows path escape --out; "student_fast.pt" writes student_fast.pt.onnx.
    with pytest.raises(E.ExportError, match="--name"):
        E.export_all(create_student("tiny").eval(), tmp_path / "w", name=name, variant="tiny",
                     config={}, fp16=False, torchscript=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_the_manifest_written_is_readable_by_everyone(tmp_path: Path) -> None:
    # It ships with the weights: a private (0600) manifest makes the engine, run as another
    # user, refuse every model in the folder.
    _listed(tmp_path)
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_an_entry_with_an_uppercase_sha256_is_accepted_as_the_engine_accepts_it(
    tmp_path: Path,
) -> None:
    import engine.manifest as manifest_mod

    (tmp_path / "m.onnx").write_bytes(b"model bytes")
    entry = _entry(tmp_path / "m.onnx")
    entry["sha256"] = entry["sha256"].upper()
    E.update_manifest(tmp_path, {"m.onnx": entry})
    assert manifest_mod.verify_file(tmp_path / "m.onnx") is not None


class _NotATensor:
    """Something a pickle can carry that is not a tensor or plain data."""


def test_a_checkpoint_holding_arbitrary_objects_is_refused_unread(tmp_path: Path) -> None:
    # torch.load without weights_only runs whatever a downloaded .pt file's pickle says.
    ckpt = tmp_path / "evil.pt"
    model = create_student("tiny")
    config = {"student": "tiny", "student_kwargs": {}}
    torch.save({"model": model.state_dict(), "config": config, "x": _NotATensor()}, ckpt)
    with pytest.raises(E.ExportError, match="cannot read checkpoint"):
        E.load_student(ckpt)


def test_a_calibration_source_of_only_the_check_frames_is_refused(tmp_path: Path) -> None:
    # With INT8_CHECK_FRAMES frames, none would be left to calibrate on.
    import cv2

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(E.INT8_CHECK_FRAMES):
        cv2.imwrite(str(calib / f"{i}.png"), np.full((48, 64, 3), 40 * i, dtype=np.uint8))
    with pytest.raises(E.ExportError, match="need more than"):
        E.export_all(create_student("tiny").eval(), tmp_path / "w", name="m", variant="tiny",
                     config={}, fp16=False, torchscript=False, int8=True, calib=calib)  # fmt: skip
    assert not (tmp_path / "w" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("precision", "fp16", "expected"),
    [
        ("f32", False, E.FP32_TOLERANCE),
        ("f32", True, E.FP16_TOLERANCE),
        ("bf16", True, E.BF16_TOLERANCE),
        ("i4", False, E.BF16_TOLERANCE),
    ],
)
def test_openvino_tolerance_by_precision_and_file(
    precision: str, fp16: bool, expected: float
) -> None:
    # The fp16 file's weights are rounded whatever OpenVINO computes in: held to f32's 1e-4,
    # every healthy fp16 export on an f32 CPU would fail its OpenVINO check.
    assert E.openvino_tolerance(precision, fp16=fp16) == expected


def test_an_hq_export_is_listed_for_the_gpu_by_default(tmp_path: Path) -> None:
    # The engine's `auto` picks a model by its listed device: hq (too slow on a CPU) listed as
    # "cpu" is the one a CPU-only machine would load.
    result = E.export_all(create_student("tiny").eval(), tmp_path, name="m", variant="hq",
                          config={}, fp16=False, torchscript=False, check_size=(33, 47))  # fmt: skip
    assert result.entries["m.onnx"]["device"] == "gpu"
    listed = json.loads((tmp_path / "manifest.json").read_text())["files"]["m.onnx"]
    assert listed["device"] == "gpu"


def test_a_summary_without_tables_is_no_other_models_numbers() -> None:
    # An empty `sets` carries no row that another model's bytes could have scored: refusing it
    # as "measured neither" stops an export over numbers it does not ship.
    E._check_metrics_measured({"sets": {}}, "m", None)
    E._check_metrics_measured({"sets": {}, "model_sha256": {"x": "0" * 64}}, "m", "1" * 64)
    with pytest.raises(E.ExportError, match="measured neither m.onnx"):
        E._check_metrics_measured({"sets": {"s": {"methods": {"x": {}}}}}, "m", None)


@needs_openvino
@pytest.mark.parametrize(
    "psnr,snr",
    [
        ({"a": 40.0, "b": 40.0}, {"a": 40.0, "b": E.INT8_MIN_SNR - 1}),  # barely deblurs
        ({"a": 40.0, "b": E.INT8_MIN_PSNR - 1}, {"a": 40.0, "b": 40.0}),  # far from PyTorch
    ],
)
def test_openvinos_int8_run_needs_both_bounds_too(
    psnr: dict[str, float], snr: dict[str, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenVINO's int8 run is what the engine loads by default on x86 CPUs: one bound met there
    # must not excuse the other, as on ONNX Runtime.
    from contract_models import make_onnx_model

    good = {"a": 40.0, "b": 40.0}
    monkeypatch.setattr(
        E, "quantize_int8", lambda src, dst, frames, keep_float: make_onnx_model(dst, "identity")
    )
    monkeypatch.setattr(E, "check_int8", lambda model, path, frames: (good, good))
    monkeypatch.setattr(
        E, "check_openvino_int8", lambda model, path, frames: (psnr, snr, {"a": 0.0}, "f32")
    )
    with pytest.raises(E.ExportError, match=r"OpenVINO \(CPU, int8, float parts in f32\)"):
        E.export_all(create_student("tiny").eval(), tmp_path / "w", name="m", variant="tiny",
                     config={}, fp16=False, torchscript=False, check_size=(33, 47), int8=True,
                     calib=_calib_folder(tmp_path / "calib"))  # fmt: skip


def test_external_data_named_by_an_absolute_path_is_refused_even_inside_the_folder(
    tmp_path: Path,
) -> None:
    # ONNX Runtime refuses an absolute external data location wherever it points, and the
    # absolute path stops naming the file once the weights folder is copied elsewhere.
    from onnx import TensorProto, helper, numpy_helper

    models = tmp_path / "models"
    models.mkdir()
    data = models / "w.bin"
    data.write_bytes(np.zeros(4, np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=str(data))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[w],
    )
    path = models / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(E.ExportError, match="is not inside its folder"):
        _entry(path)


@pytest.mark.parametrize("problem", ["two_inputs", "two_outputs"])
def test_parity_refuses_a_file_without_the_contracts_one_input_and_one_output(
    problem: str, tmp_path: Path
) -> None:
    # The engine refuses such a file: a parity check that fed "input" and read the first output
    # would have passed it (two_outputs: an identity that matches PyTorch's residual closely).
    from contract_models import make_bad_onnx_model

    path = make_bad_onnx_model(tmp_path / "m.onnx", problem)
    with pytest.raises(E.ExportError, match="expected input 'input' and output 'output'"):
        E.check_onnx(create_student("tiny").eval(), path, [(33, 47)])


def test_a_stored_config_digest_that_is_not_a_sha256_is_not_used(tmp_path: Path) -> None:
    # The engine pairs an int8 file with its float file by the digest: a damaged or foreign
    # value stored in the checkpoint must fall back to the computed one, not ship as it is.
    ckpt = tmp_path / "best.pt"
    state = create_student("tiny").state_dict()
    for bad in ("d" * 63, "g" * 64, "run-7"):
        torch.save({"model": state, "config": {}, "config_digest": bad}, ckpt)
        assert E.stored_config_digest(ckpt) is None, bad
    torch.save({"model": state, "config": {}, "config_digest": "d" * 64}, ckpt)
    assert E.stored_config_digest(ckpt) == "d" * 64


def test_a_config_the_trainer_cannot_read_is_hashed_without_its_run_control_keys() -> None:
    # A resumed or time-limited run is the same run: its digest must not change with them,
    # also for a config training.config no longer reads (a key since removed).
    config = {"student": "tiny", "removed_key": 1}
    with pytest.raises(ConfigError):
        config_from_dict(dict(config))
    resumed = {**config, "resume": True, "max_minutes": 5.0, "out_dir": "runs/x"}
    assert E.config_digest(resumed) == E.config_digest(config)


def test_int8_that_makes_half_the_correction_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half the student's correction scores a high PSNR (the output is mostly its input) but
    # 6 dB residual SNR: it visibly deblurs less than the float file and must not ship.
    from contract_models import make_onnx_model

    model = _tiny_with_weights(1, 0.01)  # small: half of it stays above the PSNR bound
    wrapper = E.ExportWrapper(model).eval()
    scores: list[tuple[dict, dict]] = []

    def half(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(x)).numpy()
        return x + 0.5 * (ref - x)

    def check(model: torch.nn.Module, path: Path, frames: list[np.ndarray]) -> tuple[dict, dict]:
        scores.append(E._int8_scores(model, path, frames, half)[:2])
        return scores[-1]

    monkeypatch.setattr(
        E, "quantize_int8", lambda src, dst, frames, keep_float: make_onnx_model(dst, "identity")
    )
    monkeypatch.setattr(E, "check_int8", check)
    with pytest.raises(E.ExportError, match=r"m_int8\.onnx: int8 output too far"):
        E.export_all(model, tmp_path / "w", name="m", variant="tiny", config={}, fp16=False,
                     torchscript=False, check_size=(33, 47), int8=True,
                     calib=_calib_folder(tmp_path / "calib"))  # fmt: skip
    psnr, snr = scores[0]
    assert min(psnr.values()) >= E.INT8_MIN_PSNR  # the residual SNR alone refused it
    assert all(v == pytest.approx(6.02, abs=0.05) for v in snr.values()), snr


def test_int8_keeps_a_summary_only_with_a_row_of_its_own(tmp_path: Path) -> None:
    # Its parity does not bound int8 tightly enough to borrow the float file's numbers: a
    # summary that scored only m.onnx must not be listed as the int8 file's scores.
    torch.manual_seed(0)
    model = create_student("tiny").eval()
    calib = _calib_folder(tmp_path / "calib")
    for rows, int8_keeps in ((("m",), False), (("m", "m_int8"), True)):
        table = {"raw-plain": {"n": 1, "methods": {r: {"psnr": 30.0} for r in rows}}}
        E.export_all(model, tmp_path / "w", name="m", variant="tiny", config={}, fp16=False,
                     torchscript=False, check_size=(33, 47), int8=True, calib=calib,
                     metrics={"sets": table})  # fmt: skip
        files = json.loads((tmp_path / "w" / "manifest.json").read_text())["files"]
        assert files["m.onnx"]["metrics"] == {"sets": table}
        assert files["m_int8.onnx"]["metrics"] == ({"sets": table} if int8_keeps else {}), rows


def test_an_export_without_metrics_names_no_file_whose_numbers_it_carries(
    tmp_path: Path,
) -> None:
    # "metrics_of" says an entry's numbers are another file's: with no summary there are none.
    export_tiny(create_student("tiny").eval(), tmp_path, fp16=False, torchscript=True)
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert set(files) == {"m.onnx", "m.ts"}
    assert all("metrics_of" not in e and e["metrics"] == {} for e in files.values()), files


def test_a_checkpoint_saved_with_module_prefixed_keys_loads(tmp_path: Path) -> None:
    # DDP / EMA wrappers save their weights as "module.<key>": such a checkpoint is the same
    # student and must export, not fail as missing every key.
    torch.manual_seed(0)
    state = create_student("tiny").state_dict()
    ckpt = tmp_path / "ema.pt"
    wrapped = {f"module.{k}": v for k, v in state.items()}
    torch.save({"model": wrapped, "config": {"student": "tiny"}}, ckpt)
    model, variant, _ = E.load_student(ckpt)
    assert variant == "tiny"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_another_variant_named_is_built_without_the_checkpoints_overrides(tmp_path: Path) -> None:
    # The config's constructor overrides describe its own variant's shape: applied to the
    # variant named on the command line, they build a model the weights do not fit.
    state = create_student("fast").state_dict()  # fast takes no GROWN: it fails to build
    ckpt = tmp_path / "last.pt"
    torch.save({"model": state, "config": {"student": "tiny", "student_kwargs": GROWN}}, ckpt)
    model, variant, _ = E.load_student(ckpt, variant="fast")
    assert variant == "fast" and set(model.state_dict()) == set(state)


def test_a_checkpoint_with_weights_the_student_does_not_have_is_refused(tmp_path: Path) -> None:
    # Extra weights mean another architecture (a grown student): loading the rest silently
    # would export a model that is not the one trained.
    state = {**create_student("tiny").state_dict(), "head.extra.weight": torch.zeros(3)}
    path = tmp_path / "raw.pt"
    torch.save(state, path)
    with pytest.raises(E.ExportError, match=r"unexpected keys: 1 \(head.extra.weight\)"):
        E.load_student(path, variant="tiny")


def test_a_config_naming_its_model_section_by_a_string_is_read(tmp_path: Path) -> None:
    # `model: tiny` is the short form of `model: {name: tiny}` in a checkpoint's config.
    ckpt = tmp_path / "last.pt"
    torch.save({"model": create_student("tiny").state_dict(), "config": {"model": "tiny"}}, ckpt)
    _, variant, config = E.load_student(ckpt)
    assert variant == "tiny" and config == {"model": "tiny"}


def test_a_self_contained_onnx_entry_has_no_external_data_key(tmp_path: Path) -> None:
    # Self-contained files keep the keys they always had: manifests of older exports compare
    # equal, and readers that predate the key see nothing new.
    from contract_models import make_onnx_model

    entry = _entry(make_onnx_model(tmp_path / "m.onnx", "identity"))
    assert "external_data" not in entry


def test_a_manifest_of_another_schema_is_left_as_it_is(tmp_path: Path) -> None:
    # A newer version's manifest (or another tool's JSON) rewritten as schema 1 would lose
    # what it says in keys this version does not know, and the engine reads it as schema 1.
    (tmp_path / "m.onnx").write_bytes(b"model bytes")
    content = json.dumps({"schema": "sharpcam-manifest/2", "files": {}}).encode()
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(E.ExportError, match="has schema 'sharpcam-manifest/2'"):
        E.update_manifest(tmp_path, {"m.onnx": _entry(tmp_path / "m.onnx")})
    assert (tmp_path / "manifest.json").read_bytes() == content


def test_the_cli_takes_opset_17_and_refuses_16(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 17 is the oldest opset the exporters write (and older runtimes need): the documented
    # lower bound must itself be accepted.
    import onnx

    out = tmp_path / "w"
    with pytest.raises(SystemExit) as exc:
        E.main(["--random-init", "--variant", "tiny", "--out", str(out), "--opset", "16"])
    assert exc.value.code == 2 and "--opset must be >= 17" in capsys.readouterr().err
    assert not out.exists()
    flags = ["--no-fp16", "--no-torchscript", "--opset", "17"]
    assert E.main(["--random-init", "--variant", "tiny", "--out", str(out), *flags]) == 0
    opsets = {o.domain: o.version for o in onnx.load(str(out / "student.onnx")).opset_import}
    assert opsets[""] == 17


def test_opset_18_is_written_by_the_dynamo_exporter(tmp_path: Path) -> None:
    # torch's default exporter since 2.9: the TorchScript-based one is deprecated and only
    # tried first for opset 17, which the dynamo exporter cannot write.
    import onnx

    assert E.export_onnx(create_student("tiny").eval(), tmp_path / "m.onnx") == "dynamo"
    opsets = {o.domain: o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import}
    assert opsets[""] == 18
