"""The files in weights/ are what the manifest and the registry say they are, and the committed
training checkpoints are the weights inside them (so --init_from continues what ships)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine import manifest as manifest_mod
from training.models.student import STUDENTS, create_student
from training.train import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
ENTRIES = json.loads((WEIGHTS / "manifest.json").read_text())["files"]
CHECKPOINTS = {"student_fast.onnx": "student_fast.pt", "student.onnx": "student_hq.pt"}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_manifest_entry_matches_file_and_registry(name: str) -> None:
    entry = ENTRIES[name]
    assert manifest_mod.verify_file(WEIGHTS / name).variant == entry["variant"]  # sha256 too
    assert entry["variant"] in STUDENTS
    model = create_student(entry["variant"])
    assert entry["params"] == model.count_params()
    assert entry["macs_per_pixel"] == pytest.approx(model.macs_per_pixel(), abs=0.1)
    assert entry["input"]["multiple"] == model.multiple


def test_the_gpu_student_is_under_5_mb_and_both_defaults_ship() -> None:
    assert {"student.onnx", "student_fast.onnx"} <= set(ENTRIES)
    assert ENTRIES["student.onnx"]["variant"] == "hq"
    assert ENTRIES["student_fast.onnx"]["variant"] == "fast"
    assert (WEIGHTS / "student.onnx").stat().st_size < 5_000_000


@pytest.mark.parametrize("onnx_name", sorted(CHECKPOINTS))
def test_committed_checkpoint_is_the_shipped_model(onnx_name: str) -> None:
    ck = load_checkpoint(REPO / "training" / "checkpoints" / CHECKPOINTS[onnx_name])
    assert ck["variant"] == ENTRIES[onnx_name]["variant"]
    model = create_student(ck["variant"], **ck.get("student_kwargs", {})).eval()
    model.load_state_dict(ck["model"])  # strict: every key, every shape
    x = np.random.default_rng(0).random((1, 3, 37, 53), dtype=np.float32)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).clamp(0, 1).numpy()
    sess = ort.InferenceSession(str(WEIGHTS / onnx_name), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x})
    assert np.abs(out - eager).max() < 1e-4
    # A re-export names the same training run: without a stored digest the exporter
    # recomputed one from the stored config with today's defaults (c765422b for d40eaa58), and
    # the engine, which pairs the int8 file with the float one by digest, dropped int8.
    from training.export import stored_config_digest

    checkpoint = REPO / "training" / "checkpoints" / CHECKPOINTS[onnx_name]
    assert stored_config_digest(checkpoint) == ENTRIES[onnx_name]["config_digest"]


@pytest.mark.parametrize(
    "path", sorted((REPO / "training" / "checkpoints").glob("*.pt")), ids=lambda p: p.name
)
def test_every_committed_checkpoint_loads_into_its_variant(path: Path) -> None:
    # training/gpu_session.sh continues from these with --init_from (strict load).
    ck = load_checkpoint(path)
    model = create_student(ck["variant"], **ck.get("student_kwargs", {}))
    model.load_state_dict(ck["model"])
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_shipped_int8_student_is_the_quantized_fast_checkpoint() -> None:
    import onnx

    from training.export import INT8_MIN_PSNR, calibration_frames, int8_float_modules

    assert ENTRIES["student_fast_int8.onnx"]["precision"] == "int8"
    path = WEIGHTS / "student_fast_int8.onnx"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    ck = load_checkpoint(REPO / "training" / "checkpoints" / "student_fast.pt")
    model = create_student(ck["variant"], **ck.get("student_kwargs", {})).eval()
    model.load_state_dict(ck["model"])
    # the finest scale stays float: post-training int8 of it cost 0.08 dB on held-out blur
    assert ENTRIES["student_fast_int8.onnx"]["float_convs"] == int8_float_modules(model)
    (x,) = calibration_frames(count=1, size=(96, 160))
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).clamp(0, 1).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x})
    psnr = -10 * np.log10(np.mean((out.astype(np.float64) - eager) ** 2))
    assert INT8_MIN_PSNR <= psnr < 90  # close to the float student, and really quantized


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)
def test_openvino_says_when_it_runs_the_int8_student() -> None:
    from engine.backends import create_backend

    int8 = create_backend("openvino", model=WEIGHTS / "student_fast_int8.onnx", device="cpu")
    flt = create_backend("openvino", model=WEIGHTS / "student_fast.onnx", device="cpu")
    assert int8.provider.endswith(" · int8") and "int8" not in flt.provider
    frame = np.full((48, 64, 3), 128, np.uint8)
    frame[:, 32:] = 30  # an edge: both must sharpen it alike
    diff = np.abs(int8.process(frame).astype(int) - flt.process(frame).astype(int))
    assert diff.max() <= 8
