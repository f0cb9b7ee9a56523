"""Inference backends: parity across runtimes, odd sizes, model checks, registry and `auto`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx", reason="tests build their contract models with the onnx package")

from contract_models import (  # noqa: E402
    make_bad_onnx_model,
    make_onnx_model,
    make_torch_model,
    write_manifest,
)

import engine.backends as backends  # noqa: E402
from engine.backends import (  # noqa: E402
    BACKENDS,
    INSTALL_HINTS,
    Backend,
    BackendError,
    ModelError,
    ModelIntegrityError,
    OnnxBackend,
    PassthroughBackend,
    check_onnxruntime_install,
    create_backend,
    list_backends,
    register_backend,
    resolve_default_model,
)
from engine.manifest import sha256_file  # noqa: E402

HAS_OPENVINO = backends.OpenVinoBackend.available()
HAS_TORCH = backends.TorchBackend.available()
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (train extra)")

ODD_H, ODD_W = 721, 1279


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Contract models in a folder with a matching manifest (so no unverified warnings)."""
    d = tmp_path_factory.mktemp("models")
    files = {
        "identity.onnx": make_onnx_model(d / "identity.onnx", "identity", multiple=8),
        "conv.onnx": make_onnx_model(d / "conv.onnx", "conv", multiple=8),
        "conv_fp16.onnx": make_onnx_model(d / "conv_fp16.onnx", "conv", dtype="float16"),
        "sharpen.onnx": make_onnx_model(d / "sharpen.onnx", "sharpen", multiple=16),
    }
    if HAS_TORCH:
        files["conv.pt"] = make_torch_model(d / "conv.pt", "conv", multiple=8)
    write_manifest(d, list(files))
    return files


@pytest.fixture(scope="module")
def frame():
    """A natural-looking `(721, 1279, 3)` uint8 RGB frame: gradients, edges and noise."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:ODD_H, 0:ODD_W].astype(np.float32)
    img = np.stack([xx / ODD_W, yy / ODD_H, 0.5 + 0.5 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], -1)
    img[200:400, 300:700] = [0.9, 0.1, 0.2]  # hard edges
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))


def model_backends() -> list:
    out = [pytest.param("onnx", {}, id="onnx")]
    out.append(pytest.param("openvino", {"precision": "f32"}, id="openvino", marks=needs_openvino))
    return out


def _make(name: str, models: dict, kind: str = "conv", **kw):
    if name == "torch":
        return create_backend("torch", model=models["conv.pt"], **kw)
    return create_backend(name, model=models[f"{kind}.onnx"], **kw)


# --------------------------------------------------------------------------- parity


def test_parity_onnx_openvino_torch_at_odd_size(models, frame):
    """Same contract model, every runtime: uint8 outputs within 1 of ONNX Runtime's."""
    ref_be = _make("onnx", models)
    ref = ref_be.process(frame).copy()
    assert ref.shape == frame.shape and ref.dtype == np.uint8
    assert np.abs(ref.astype(int) - frame).mean() > 2  # the model really changes the frame
    others = []
    if HAS_OPENVINO:
        others.append(_make("openvino", models, precision="f32"))
    if HAS_TORCH:
        others.append(_make("torch", models))
    if not others:
        pytest.skip("neither openvino nor torch is installed")
    for be in others:
        out = be.process(frame)
        assert out.shape == frame.shape, be.provider
        diff = np.abs(out.astype(int) - ref)
        assert diff.max() <= 1, f"{be.provider}: max diff {diff.max()}"
        be.close()
    ref_be.close()


@needs_torch
def test_float_parity_onnx_torch_and_eager(models, frame):
    """fp32 outputs of ONNX Runtime, TorchScript and the eager module agree to 1e-4."""
    import torch
    from contract_models import make_torch_module

    x = np.ascontiguousarray(frame.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    y_ort = _make("onnx", models).run_nchw(x)
    y_ts = _make("torch", models).run_nchw(x)
    with torch.no_grad():
        y_eager = make_torch_module("conv", 8)(torch.from_numpy(x)).numpy()
    assert y_ort.shape == x.shape
    assert np.abs(y_ort - y_eager).max() <= 1e-4
    assert np.abs(y_ts - y_eager).max() <= 1e-4


@pytest.mark.parametrize(("name", "kw"), model_backends())
def test_uint8_path_matches_float_model(models, frame, name, kw):
    """process() == floor(clip(model(frame / 255)) * 255 + 0.5): pre/post add no error
    (truncating instead of rounding would miss on about half the pixels)."""
    x = np.ascontiguousarray(frame.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    y = _make("onnx", models).run_nchw(x)  # fp32 reference for every runtime
    want = np.floor(np.clip(y[0].transpose(1, 2, 0), 0, 1) * 255 + 0.5)
    diff = np.abs(_make(name, models, **kw).process(frame).astype(int) - want)
    # only values within float noise of a .5 tie may round the other way
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@needs_openvino
def test_openvino_default_precision_close_to_onnx(models, frame):
    """OpenVINO's own precision choice (bf16 on CPUs that have it) stays within 2 levels."""
    ref = _make("onnx", models).process(frame).astype(int)
    be = _make("openvino", models)
    assert be.inference_precision in ("f32", "bf16", "f16")
    assert be.inference_precision in be.provider
    diff = np.abs(be.process(frame).astype(int) - ref)
    assert diff.max() <= 2 and diff.mean() < 0.25


@pytest.mark.parametrize(("name", "kw"), model_backends())
def test_fp16_model(models, frame, name, kw):
    ref = _make(name, models, **kw).process(frame).astype(int)
    out = create_backend(name, model=models["conv_fp16.onnx"], **kw).process(frame)
    assert out.shape == frame.shape
    assert np.abs(out.astype(int) - ref).max() <= 2  # fp16 I/O: a level of rounding more


# --------------------------------------------------------------------------- sizes


def _all_model_backends(models) -> list:
    out = [_make("onnx", models, kind="identity")]
    if HAS_OPENVINO:
        out.append(_make("openvino", models, kind="identity", precision="f32"))
    return out


@pytest.mark.parametrize("size", [(17, 33), (16, 16), (10, 7), (1, 1), (97, 130)])
def test_identity_model_is_exact_at_odd_sizes(models, size):
    """Identity contract model through every runtime returns the frame bit for bit
    (so channel order, padding, cropping and rounding are all right)."""
    rng = np.random.default_rng(size[0])
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    for be in _all_model_backends(models):
        out = be.process(rgb)
        assert out.shape == rgb.shape, be.provider
        np.testing.assert_array_equal(out, rgb, err_msg=be.provider)


def _needs_16(path: Path) -> Path:
    """An identity model that really needs H, W >= 16 (the contract's minimum): it reflects 15
    pixels out on each side and crops them off, and a reflection needs more pixels than that."""
    from contract_models import _save_onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, values: list[int]) -> object:
        return numpy_helper.from_array(np.array(values, np.int64), name)

    shape = [1, 3, "H", "W"]
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["output"]),
    ]
    inits = [
        const("pads", [0, 0, 15, 15, 0, 0, 15, 15]),
        const("starts", [15, 15]),
        const("ends", [-15, -15]),
        const("axes", [2, 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "needs_16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=inits,
    )
    path = _save_onnx(graph, path)
    write_manifest(path.parent, [path.name])
    return path


@pytest.mark.parametrize("name", ["onnx", pytest.param("openvino", marks=needs_openvino)])
@pytest.mark.parametrize("size", [(100, 8), (8, 100), (16, 15)])
def test_a_frame_with_one_side_under_16_is_padded_too(
    tmp_path: Path, name: str, size: tuple[int, int]
) -> None:
    # The contract promises a model only H *and* W >= 16: a frame with one tiny side (a thin
    # strip) is padded like one with two, or the model fails on it.
    be = create_backend(name, model=_needs_16(tmp_path / "needs16.onnx"))
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = be.process(rgb)
    assert out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)
    be.close()


@needs_torch
def test_torch_identity_exact_at_odd_size(tmp_path):
    path = make_torch_model(tmp_path / "id.pt", "identity")
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="unverified"):
        be = create_backend("torch", model=path)
    assert be.provider == "PyTorch · cpu fp32"
    np.testing.assert_array_equal(be.process(rgb), rgb)


@needs_torch
def test_torch_models_loading_on_two_threads_leave_the_warning_filters_intact(
    tmp_path, monkeypatch
):
    """The app loads models on worker threads: two TorchScript loads at once must not be inside
    catch_warnings together (they would restore each other's filters in the wrong order)."""
    import threading
    import time
    import warnings

    import torch

    from engine.backends import collect_warnings

    path = make_torch_model(tmp_path / "id.pt", "identity")
    real_load, active, most = torch.jit.load, [0], [0]
    lock = threading.Lock()

    def slow_load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.2)
        try:
            return real_load(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(torch.jit, "load", slow_load)
    filters = list(warnings.filters)

    def load() -> None:
        with collect_warnings():  # as the app does; the model has no manifest
            create_backend("torch", model=path).close()

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1, "two loads were inside catch_warnings at once"
    assert warnings.filters == filters


@pytest.mark.parametrize(("name", "kw"), model_backends())
def test_size_change_mid_stream(models, name, kw):
    """Each size gives what a fresh backend gives for it, also when a size comes back."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(64, 80, 3), (48, 97, 3)]]
    be = _make(name, models, **kw)
    outs = [be.process(f).copy() for f in (frames[0], frames[1], frames[0])]
    for f, out in zip((frames[0], frames[1], frames[0]), outs, strict=True):
        fresh = _make(name, models, **kw).process(f)
        assert out.shape == f.shape
        np.testing.assert_array_equal(out, fresh)


def test_bad_frame_is_refused_with_shape_in_message(models):
    be = _make("onnx", models)
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\) uint8, got \(\(36, 64, 4\)"):
        be.process(np.zeros((36, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        be.process(np.zeros((36, 64, 3), np.float32))


@pytest.mark.parametrize("name", ["onnx", "unsharp"])
def test_a_frame_of_another_rank_or_no_array_is_refused_in_words(models, name):
    # A grey (H, W) frame, a batch (1, H, W, 3) or a plain list is refused before a runtime
    # sees it: the runtime's own error would be about a dimension (or an attribute).
    be = _make("onnx", models) if name == "onnx" else create_backend("unsharp")
    for bad, got in [
        (np.zeros((36, 3), np.uint8), r"\(\(36, 3\), dtype\('uint8'\)\)"),
        (np.zeros((1, 36, 64, 3), np.uint8), r"\(\(1, 36, 64, 3\), dtype\('uint8'\)\)"),
        ([[0, 0, 0]], "list"),
    ]:
        with pytest.raises(ValueError, match=rf"^expected \(H, W, 3\) uint8, got {got}$"):
            be.process(bad)
    be.close()


def test_closed_backend_refuses_frames_and_close_is_idempotent(models):
    be = _make("onnx", models)
    with be:
        pass
    be.close()
    with pytest.raises(BackendError, match="closed"):
        be.process(np.zeros((32, 32, 3), np.uint8))


def _frame_buffer_released_by_close(be, frame) -> bool:
    """Whether the buffer `process` handed out is freed once the caller drops it and the
    backend is closed (the app keeps a stopped engine's closed backend until its next start)."""
    import gc
    import weakref

    out = be.process(frame)  # the backend's own buffer: the same object every call
    ref = weakref.ref(out)
    del out
    be.close()
    gc.collect()
    return ref() is None


def test_a_closed_onnx_backend_lets_go_of_its_frame_buffers(models, frame):
    # Two float frames and more (~70 MB at 1080p) outlived the session they fed.
    assert _frame_buffer_released_by_close(_make("onnx", models), frame)


def test_a_closed_scaled_backend_lets_go_of_its_frame_buffers(models, frame):
    # Its own four (the result and a full-size int16 correction among them) stayed too.
    assert _frame_buffer_released_by_close(_make("onnx", models, scale=0.5), frame)


@needs_torch
def test_a_closed_torch_backend_lets_go_of_its_frame_buffers(models, frame):
    # On CUDA these are a device tensor and two pinned host buffers.
    assert _frame_buffer_released_by_close(_make("torch", models), frame)


@needs_openvino
@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps")
def test_a_closed_openvino_backend_unmaps_its_ir_weights(models, tmp_path, frame):
    # The graph OpenVINO read stayed with the closed backend, and with it the IR's .bin,
    # mapped into memory (on Windows a mapped file cannot be replaced by a re-export).
    import gc

    import openvino as ov

    # The engine's own Core: a second one destroyed here would put back a signal stack.
    graph = backends._ov_core().read_model(str(models["conv.onnx"]))
    ov.save_model(graph, str(tmp_path / "m.xml"))
    del graph
    write_manifest(tmp_path, ["m.xml", "m.bin"])
    be = create_backend("openvino", model=tmp_path / "m.xml", precision="f32")
    be.process(frame[:64, :96])

    def mapped() -> bool:
        return str(tmp_path / "m.bin") in Path("/proc/self/maps").read_text()

    assert mapped()  # else this test proves nothing
    be.close()
    gc.collect()
    assert not mapped()


@pytest.mark.parametrize("name,kw", model_backends())
def test_a_frame_too_large_for_memory_runs_in_tiles_with_the_whole_frames_result(
    name: str, kw: dict, models: dict, frame: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 12000x9000 photo took 7.6 GB in one model call (about 68 bytes a pixel): a
    # 200-megapixel one was killed for memory with no word. Past a pixel count the model runs
    # on tiles of one size with context around them; a local model gives the same pixels.
    be = _make(name, models, **kw)
    whole = be.process(frame).copy()
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 300 * 300, raising=False)
    monkeypatch.setattr(backends, "TILE_SIDE", 256, raising=False)
    monkeypatch.setattr(backends, "TILE_MARGIN", 32, raising=False)
    shapes: list[tuple[int, ...]] = []
    infer = be._infer
    monkeypatch.setattr(be, "_infer", lambda rgb: shapes.append(rgb.shape) or infer(rgb))
    tiled = be.process(frame)
    assert len(shapes) > 4 and max(h * w for h, w, _ in shapes) <= 287 * 287  # a tile's memory
    assert len(set(shapes)) <= 4  # a few sizes, a few compiles
    np.testing.assert_array_equal(tiled, whole)
    be.close()


@pytest.mark.parametrize("side,align,margin", [(3072, 32, 256), (256, 32, 32), (96, 16, 8)])
def test_tile_spans_keep_each_pixel_once_from_aligned_tiles_with_context(
    side: int, align: int, margin: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over every side length up to several tiles (a panorama's short side included): a pixel
    # kept twice or never is a seam, a tile repeating another's work is time lost, a tile off
    # the grid gives other pixels than the whole frame, a kept part at its tile's edge lacks
    # context, and each tile size is a compile.
    monkeypatch.setattr(backends, "TILE_SIDE", side)
    monkeypatch.setattr(backends, "TILE_ALIGN", align)
    monkeypatch.setattr(backends, "TILE_MARGIN", margin)
    for n in (*range(1, 5 * side, 1 if side < 1000 else 7), 3 * side - 2 * margin, side + align):
        spans = backends._tile_spans(n)
        assert spans[0][2] == 0 and spans[-1][3] == n, (n, spans)
        pairs = list(zip(spans, spans[1:], strict=False))
        assert all(a[3] == b[2] and a[0] < b[0] and a[1] < b[1] for a, b in pairs), (n, spans)
        for i, (s, e, k0, k1) in enumerate(spans):
            assert 0 <= s <= k0 < k1 <= e <= n and s % align == 0, (n, spans)
            assert i == 0 or k0 - s >= margin, (n, spans)
            assert i == len(spans) - 1 or e - k1 >= margin, (n, spans)
        if len(spans) > 1:
            assert {e - s for s, e, _, _ in spans[:-1]} == {side}, (n, spans)
            assert side <= spans[-1][1] - spans[-1][0] < side + align, (n, spans)


def test_a_frame_runs_whole_up_to_the_tile_threshold(
    models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8K (33 MP) fits in memory whole, where tiles would only add their overlaps' work; one
    # pixel past the threshold tiles; a tile is itself never a frame that would need tiles.
    be = _make("onnx", models)
    shapes: list[tuple[int, ...]] = []
    monkeypatch.setattr(be, "_infer", lambda rgb: shapes.append(rgb.shape) or rgb)
    be.process(np.zeros((4320, 7680, 3), np.uint8))
    assert shapes == [(4320, 7680, 3)]
    shapes.clear()
    small = np.zeros((40, 50, 3), np.uint8)
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 40 * 50)
    monkeypatch.setattr(backends, "TILE_SIDE", 16)
    monkeypatch.setattr(backends, "TILE_ALIGN", 8)
    monkeypatch.setattr(backends, "TILE_MARGIN", 2)
    be.process(small)
    assert shapes == [(40, 50, 3)]
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 40 * 50 - 1)
    be.process(small)
    assert len(shapes) > 2
    monkeypatch.undo()
    assert (backends.TILE_SIDE + backends.TILE_ALIGN) ** 2 < backends.TILE_ABOVE_PIXELS
    be.close()


@pytest.mark.skipif(not HAS_TORCH, reason="the students are PyTorch modules")
def test_tiles_start_on_the_grid_of_every_student() -> None:
    # A tile starting off a student's padding multiple ran its strided stages on another
    # grid than the whole frame's: other pixels at every tile.
    from training.models.student import STUDENTS, create_student

    for name in STUDENTS:
        multiple = create_student(name).multiple
        assert backends.TILE_ALIGN % multiple == 0, (name, multiple)


def test_io_binding_and_plain_run_agree(models, frame):
    bound = OnnxBackend(model=models["conv.onnx"], io_binding=True)
    plain = OnnxBackend(model=models["conv.onnx"], io_binding=False)
    assert bound._binding is None  # bound lazily, once per size
    a = bound.process(frame).copy()
    assert bound._binding is not None
    np.testing.assert_array_equal(a, plain.process(frame))


def test_onnx_runtime_binds_its_buffers_by_default_once_per_size_and_never_when_told_not_to(
    models, monkeypatch
):
    # Bound buffers spare ONNX Runtime an output allocation a frame; bound again every frame
    # (or bound when told not to) they cost what they save.
    import onnxruntime as ort

    made: list[int] = []
    real = ort.InferenceSession.io_binding
    monkeypatch.setattr(ort.InferenceSession, "io_binding", lambda s: made.append(1) or real(s))
    small = np.zeros((20, 24, 3), np.uint8)
    be = OnnxBackend(model=models["conv.onnx"], device="cpu")
    out = be.process(small)
    assert be.process(small) is out  # the same buffer: nothing allocated a frame
    assert len(made) == 1
    be.process(np.zeros((24, 20, 3), np.uint8))
    assert len(made) == 2
    plain = OnnxBackend(model=models["conv.onnx"], device="cpu", io_binding=False)
    plain.process(small)
    assert len(made) == 2 and plain._binding is None
    be.close()
    plain.close()


def test_a_bound_run_that_fails_for_another_reason_keeps_its_own_error(models, monkeypatch):
    # The output's size is looked at after a bound run fails; a failure it does not explain
    # (memory, a device lost) must not be reported as a contract break.
    be = OnnxBackend(model=models["conv.onnx"], device="cpu")

    def fail(binding: object) -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(be._session, "run_with_iobinding", fail)
    with pytest.raises(BackendError) as info:
        be.process(np.zeros((20, 24, 3), np.uint8))
    assert str(info.value).endswith("failed on a 24x20 frame: device lost")
    be.close()


def test_a_closed_onnx_backend_lets_go_of_its_session(models, frame):
    # The I/O binding holds the native session: kept after close, it would keep the model's
    # weights (on a GPU, its device memory).
    import gc
    import weakref

    be = _make("onnx", models)
    be.process(frame)
    refs = [weakref.ref(be._session), weakref.ref(be._binding)]
    be.close()
    gc.collect()
    assert [r() for r in refs] == [None, None]


# --------------------------------------------------------------------------- classic


def _high_freq_energy(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def test_unsharp_increases_high_frequency_energy(frame):
    blurred = cv2.GaussianBlur(frame, (0, 0), 2.0)
    be = create_backend("unsharp")
    out = be.process(blurred)
    assert be.provider == "unsharp mask · OpenCV"
    assert out.shape == blurred.shape and out.dtype == np.uint8
    assert _high_freq_energy(out) > 1.5 * _high_freq_energy(blurred)
    # amount 0 is the identity: the mask only ever adds `amount` of the detail.
    np.testing.assert_array_equal(create_backend("unsharp", amount=0.0).process(blurred), blurred)


def test_unsharp_is_the_input_plus_amount_times_its_detail(frame):
    # out = in + amount * (in - gaussian(in, radius)), saturated: the baseline every learned
    # result is compared to, and `tune_unsharp`'s amount and radius mean just that.
    for amount, radius in ((1.0, 2.0), (0.5, 1.5)):
        be = create_backend("unsharp", amount=amount, radius=radius)
        for rgb in (frame[:64, :96], frame[:48, :40]):  # a new size mid-stream too
            blur = cv2.GaussianBlur(rgb.astype(np.float64), (0, 0), radius)
            want = np.clip(rgb + amount * (rgb - blur), 0, 255)
            got = be.process(rgb)
            assert got.shape == rgb.shape and np.abs(got - want).max() <= 1.0


@pytest.mark.parametrize(
    ("amount", "radius"),
    [(1.0, 0.0), (1.0, -1.0), (-0.5, 2.0), (math.nan, 2.0), (1.0, math.nan), (math.inf, 2.0),
     (1.0, math.inf)],
)  # fmt: skip
def test_unsharp_refuses_a_radius_of_zero_or_less_and_a_negative_amount(
    amount: float, radius: float
) -> None:
    # A radius of 0 is no blur at all: OpenCV then fails every frame with its own
    # "ksize.width > 0" assertion instead of one line at start-up that names the option.
    with pytest.raises(BackendError) as info:
        create_backend("unsharp", amount=amount, radius=radius)
    assert str(info.value) == (f"unsharp needs amount >= 0 and radius > 0, got {amount}, {radius}")


def test_every_backend_takes_frames_of_any_memory_layout(models, frame):
    """A transposed (Fortran-ordered) or strided view gives what its contiguous copy gives."""
    small = np.ascontiguousarray(frame[:90, :120])
    views = {
        "fortran": np.asfortranarray(small),
        "strided": np.ascontiguousarray(np.repeat(small, 2, axis=1))[:, ::2],
        "flipped": np.ascontiguousarray(small[:, ::-1])[:, ::-1],
    }
    for make in (
        lambda: create_backend("unsharp"),
        lambda: create_backend("unsharp", scale=0.5),
        lambda: _make("onnx", models, kind="sharpen"),
    ):
        want = make().process(small).copy()
        for layout, view in views.items():
            assert np.array_equal(view, small)
            be = make()  # a fresh backend: its buffers are sized on this first frame
            np.testing.assert_array_equal(be.process(view), want, err_msg=f"{be!r} {layout}")


def test_passthrough_is_identity(frame):
    be = create_backend("passthrough")
    out = be.process(frame)
    np.testing.assert_array_equal(out, frame)
    assert be.provider == "passthrough" and be.name == "passthrough"


# --------------------------------------------------------------------------- auto


def test_auto_picks_a_working_backend_and_reports_provider(models, frame):
    be = create_backend("auto", model=models["conv.onnx"])
    assert isinstance(be, Backend)
    assert be.name in BACKENDS
    assert be.provider and be.provider != "?"
    if HAS_OPENVINO:  # no GPU provider here: OpenVINO is the fastest CPU runtime
        assert be.name == "openvino" and be.provider.startswith("OpenVINO · CPU")
    assert be.process(frame).shape == frame.shape


def test_auto_with_torchscript_model_uses_torch(models):
    if not HAS_TORCH:
        pytest.skip("torch is not installed (train extra)")
    be = create_backend("auto", model=models["conv.pt"])
    assert be.name == "torch"


def test_auto_reports_every_failure(models, monkeypatch):
    class Broken:
        needs_model = True

        def __init__(self, *, model, device="auto", threads=None):
            raise RuntimeError("simulated runtime crash")

        @classmethod
        def available(cls):
            return True

    monkeypatch.setitem(BACKENDS, "openvino", Broken)
    monkeypatch.setitem(BACKENDS, "onnx", Broken)
    with pytest.raises(BackendError) as info:
        create_backend("auto", model=models["conv.onnx"])
    msg = str(info.value)
    assert msg.startswith("no backend could start:")
    assert "openvino (cpu): simulated runtime crash" in msg
    assert "onnx (cpu): simulated runtime crash" in msg


def test_auto_with_one_runtime_missing_and_a_model_error_lists_both(
    models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only when *every* runtime refused the model is the model the problem (its ModelError
    # alone). A runtime that is not installed says nothing about the model: both lines show.
    class Missing:
        needs_model = True

        @classmethod
        def available(cls) -> bool:
            return False

    class Refuses:
        needs_model = True

        def __init__(self, *, model: object, device: str = "auto", threads: int | None = None):
            raise ModelError("simulated contract break")

        @classmethod
        def available(cls) -> bool:
            return True

    monkeypatch.setitem(BACKENDS, "openvino", Missing)
    monkeypatch.setitem(BACKENDS, "onnx", Refuses)
    with pytest.raises(BackendError) as info:
        create_backend("auto", model=models["conv.onnx"], device="cpu")
    assert str(info.value) == (
        "no backend could start:\n"
        f"  openvino (cpu): openvino runtime is not installed: {INSTALL_HINTS['openvino']}\n"
        "  onnx (cpu): simulated contract break"
    )


def test_the_torch_hint_installs_the_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain `pip install torch` is the CUDA build on Linux (gigabytes) for a backend the CPU
    # runs: the hint names the CPU wheels' index.
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendError) as got:
        backends._require("torch", "torch")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu " in str(got.value)


def test_gpu_provider_listed_but_not_coming_up(models, monkeypatch, frame):
    """onnxruntime-gpu lists CUDA on machines without a GPU: the session's list decides."""
    import onnxruntime as ort

    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns that CUDA is not really there
        with pytest.raises(BackendError, match=r"no GPU provider came up .*CPUExecutionProvider"):
            OnnxBackend(model=models["conv.onnx"], device="gpu")
        be = create_backend("auto", model=models["conv.onnx"])
    assert "CUDA" not in be.provider  # fell through to a CPU runtime that really works
    assert be.process(frame).shape == frame.shape


def test_onnx_default_model_follows_the_provider_that_came_up(tmp_path, monkeypatch):
    """onnxruntime-gpu without a GPU: the session runs on the CPU, so the CPU student runs."""
    import onnxruntime as ort

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    names = ["student.onnx", "student_fast.onnx"]
    for name in names:
        make_onnx_model(tmp_path / name, "identity")
    write_manifest(tmp_path, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns that CUDA is not really there
        be = create_backend("onnx", device="auto")
    assert be.providers[0] == "CPUExecutionProvider"
    assert be.model.path.name == "student_fast.onnx"  # not the GPU student on a CPU
    be.close()


def _cuda_comes_up(monkeypatch: pytest.MonkeyPatch, came_up: bool = True) -> None:
    """ONNX Runtime lists CUDA; with ``came_up`` its sessions report CUDA first too (they run
    on the CPU underneath: no GPU here), else CUDA is not even listed."""
    import onnxruntime as ort

    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if not came_up:
        monkeypatch.setattr(ort, "get_available_providers", lambda: listed[1:])
        return
    real = ort.InferenceSession

    class CudaSession(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: object = None, **_: object) -> None:
            super().__init__(path, sess_options=sess_options, providers=listed[1:])

        def get_providers(self) -> list[str]:
            return list(listed)

    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    monkeypatch.setattr(ort, "InferenceSession", CudaSession)


def _students(weights: Path) -> None:
    names = ["student.onnx", "student_fast.onnx"]
    for name in names:
        make_onnx_model(weights / name, "identity")
    write_manifest(weights, names)


def test_onnx_keeps_the_gpu_student_when_cuda_really_came_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The twin of the test above: the session's *first* provider is the one that runs, and
    # CUDA there means the GPU student stays (CPU is always last in a CUDA session's list).
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    _students(tmp_path)
    _cuda_comes_up(monkeypatch)
    be = create_backend("onnx", device="auto")
    assert be.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert be.model.path.name == "student.onnx"
    be.close()


def test_the_cpu_student_standing_in_for_the_gpu_one_is_loaded_once(tmp_path, monkeypatch):
    # onnxruntime-gpu without a GPU: the session falls back to the CPU, and the default is
    # reloaded as the CPU student. When the CPU student is what ran, it is loaded once.
    import onnxruntime as ort

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    write_manifest(tmp_path, ["student_fast.onnx"])
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    made: list[str] = []
    real = ort.InferenceSession

    class Cpu(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: object = None, **_: object) -> None:
            made.append(Path(path).name)
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", Cpu)
    with pytest.warns(UserWarning, match="student.onnx not found"):
        be = create_backend("onnx", device="auto")
    assert be.model.path.name == "student_fast.onnx" and made == ["student_fast.onnx"]
    be.close()


@pytest.mark.parametrize(
    ("cuda", "want"),
    [(True, "student.onnx"), (False, "student_fast.onnx")],
    ids=["cuda_came_up", "cpu_only"],  # not "gpu": conftest skips that keyword without CUDA
)
def test_auto_picks_the_student_for_the_device_that_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda: bool, want: str
) -> None:
    # A working GPU provider runs the GPU student (6x the work of the CPU one, which a GPU
    # easily keeps up with); a CPU-only machine the fast CPU student.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    _students(tmp_path)
    _cuda_comes_up(monkeypatch, came_up=cuda)
    for name in ("auto", "onnx"):
        be = create_backend(name, device="auto")
        assert be.model.path.name == want, name
        if cuda:
            assert be.name == "onnx" and be.provider == "ONNX Runtime · CUDAExecutionProvider"
        be.close()


def test_auto_gpu_only_without_gpu(models):
    with pytest.raises(BackendError, match="auto: no backend can run on device 'gpu' here"):
        create_backend("auto", model=models["conv.onnx"], device="gpu")


def test_default_model_from_weights_dir(tmp_path, monkeypatch, frame):
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    assert resolve_default_model(prefer_gpu=False) is None
    with pytest.raises(
        ModelError, match="no model given and none in .*or set SHARPCAM_WEIGHTS to a folder"
    ):
        create_backend("auto")
    make_onnx_model(tmp_path / "student.onnx", "identity")
    assert resolve_default_model(prefer_gpu=False) == tmp_path / "student.onnx"  # fallback
    make_onnx_model(tmp_path / "student_fast.onnx", "sharpen")
    assert resolve_default_model(prefer_gpu=False) == tmp_path / "student_fast.onnx"
    assert resolve_default_model(prefer_gpu=True) == tmp_path / "student.onnx"
    write_manifest(tmp_path, ["student.onnx", "student_fast.onnx"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a listed, matching model loads without a warning
        be = create_backend("onnx", device="cpu")
    assert be.model.path == tmp_path / "student_fast.onnx"
    assert be.model.entry is not None and be.model.entry.sha256


def _students_in(
    folder: Path, monkeypatch: pytest.MonkeyPatch, names: list[str], precision: str = "f32"
) -> list[str]:
    """``names`` as identity models of one export (one config digest) in the shipped-weights
    folder ``folder``, on a CPU that OpenVINO runs at ``precision``; returns ``names``."""
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(folder))
    monkeypatch.setitem(backends._CPU_PRECISION, "CPU", precision)
    for name in names:
        make_onnx_model(folder / name, "identity")
    write_manifest(folder, {name: {"config_digest": "a" * 64} for name in names})
    return names


@needs_openvino
@pytest.mark.parametrize("precision", ["bf16", "f32", "f16"])
def test_openvino_defaults_to_int8_where_it_runs_f32_or_bf16(tmp_path, monkeypatch, precision):

    # One export's files: one training run's digest.
    names = _students_in(
        tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx"], precision
    )
    want = "student_fast.onnx" if precision == "f16" else "student_fast_int8.onnx"
    assert create_backend("openvino", device="cpu").model.path.name == want
    assert create_backend("auto", device="cpu").model.path.name == want
    # ONNX Runtime runs the int8 graph slower than the float one; a forced precision keeps it
    assert create_backend("onnx", device="cpu").model.path.name == "student_fast.onnx"
    forced = create_backend("openvino", device="cpu", precision="f32")
    assert forced.model.path.name == "student_fast.onnx"
    # no int8 file shipped: the float model, whatever the CPU
    (tmp_path / "student_fast_int8.onnx").unlink()
    write_manifest(tmp_path, names[:1])
    assert create_backend("openvino", device="cpu").model.path.name == "student_fast.onnx"


@pytest.mark.parametrize(
    ("listed", "gpu"),
    [
        (["CoreMLExecutionProvider", "CPUExecutionProvider"], False),  # any Mac's onnxruntime
        (["CUDAExecutionProvider", "CPUExecutionProvider"], True),
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], True),
        (["DmlExecutionProvider", "CPUExecutionProvider"], True),
        (["CPUExecutionProvider"], False),
    ],
)
def test_only_a_listed_gpu_provider_makes_the_gpu_student_the_default(monkeypatch, listed, gpu):
    # CoreML, listed by every onnxruntime for macOS, made `auto` pick the GPU student (6x the
    # CPU student's work), never measured under it.
    ort = pytest.importorskip("onnxruntime")
    import engine.backends as B

    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    assert B._ort_gpu_listed() is gpu


def test_the_other_student_standing_in_for_a_missing_one_is_said(tmp_path, monkeypatch):
    # student_fast.onnx deleted: the GPU student ran on the CPU with no word, the stream
    # dropping frames and shrinking its processing size.
    import engine.backends as B

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    make_onnx_model(tmp_path / "student.onnx", "identity")
    write_manifest(tmp_path, ["student.onnx"])
    for name in ("onnx", "auto"):
        with pytest.warns(UserWarning, match=r"student_fast.onnx not found .* the GPU student"):
            be = create_backend(name, device="cpu")
        assert be.model.path.name == "student.onnx"
        be.close()
    # Both there: the CPU student, nothing said.
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    write_manifest(tmp_path, ["student.onnx", "student_fast.onnx"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert B._default_model_to_run(False).name == "student_fast.onnx"
        assert B._default_model_to_run(True).name == "student.onnx"


@needs_openvino
def test_openvino_on_a_cuda_machine_keeps_the_cpu_student(tmp_path, monkeypatch):
    import engine.backends as B

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setitem(B._CPU_PRECISION, "CPU", "bf16")
    monkeypatch.setattr(B, "_ort_gpu_listed", lambda: True)  # ONNX Runtime lists CUDA
    names = ["student.onnx", "student_fast.onnx"]
    for name in names:
        make_onnx_model(tmp_path / name, "identity")
    write_manifest(tmp_path, names)
    # OpenVINO's "auto" device is the CPU: the GPU student (6x the work) must not go there
    be = create_backend("openvino", device="auto")
    assert be.device == "CPU" and be.model.path.name == "student_fast.onnx"


@needs_openvino
def test_a_bad_or_foreign_int8_file_falls_back_to_the_float_student(tmp_path, monkeypatch):

    names = _students_in(tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx"])
    # exported from other weights (a leftover): the digests differ, the float file wins
    write_manifest(
        tmp_path, {names[0]: {"config_digest": "a" * 64}, names[1]: {"config_digest": "b" * 64}}
    )
    with pytest.warns(UserWarning, match="other weights"):
        assert create_backend("openvino", device="cpu").model.path.name == names[0]
    # No digests (entries made by hand): None == None said "the same weights".
    write_manifest(tmp_path, names)
    with pytest.warns(UserWarning, match="no config digest says so"):
        assert create_backend("openvino", device="cpu").model.path.name == names[0]
    # Quantized from another float file, by the sha256 it names: another run of the same
    # config had the same digest and passed.
    write_manifest(tmp_path, {name: {"config_digest": "a" * 64} for name in names})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"][names[1]]["quantized_from"] = "c" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="quantized from another file"):
        assert create_backend("openvino", device="cpu").model.path.name == names[0]
    manifest["files"][names[1]]["quantized_from"] = manifest["files"][names[0]]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert create_backend("openvino", device="cpu").model.path.name == names[1]
    # damaged after shipping (sha256 differs): a warning and the float file, not "no model"
    (tmp_path / names[1]).write_bytes(b"damaged")
    for name in ("openvino", "auto"):
        with pytest.warns(UserWarning, match="student_fast_int8.onnx not usable"):
            be = create_backend(name, device="cpu")
        assert be.name == "openvino" and be.model.path.name == names[0]


@needs_openvino
@pytest.mark.parametrize("damage", ["changed", "deleted"])
def test_a_damaged_or_missing_float_student_beside_the_int8_one_is_said(
    tmp_path, monkeypatch, damage
):
    # OpenVINO's default runs the int8 file: the float student beside it, changed by a byte or
    # deleted, went unsaid ("a missing or damaged shipped model ... with a visible warning").

    names = _students_in(tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both intact: nothing said
        assert create_backend("openvino", device="cpu").model.path.name == names[1]
    flt = tmp_path / names[0]
    if damage == "changed":
        data = bytearray(flt.read_bytes())
        data[-1] ^= 1
        flt.write_bytes(bytes(data))
        why = "does not match manifest.json"
    else:
        flt.unlink()
        why = "is missing"
    for name in ("openvino", "auto"):
        with pytest.warns(UserWarning, match=f"student_fast.onnx in .* {why}") as caught:
            be = create_backend(name, device="cpu")
        assert be.model.path.name == names[1]  # the int8 file is sound: it runs
        assert "running student_fast_int8.onnx" in str(caught[0].message)
        be.close()


@needs_openvino
def test_a_float_student_beside_the_int8_one_that_cannot_be_checked_says_why(tmp_path, monkeypatch):
    # It is there but cannot be read (its permissions, a file system error): "is missing"
    # would send a person looking for a file that is right there.
    names = _students_in(tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx"])
    real = backends.verify_file

    def verify(path: Path) -> object:
        if Path(path).name == names[0]:
            raise ModelError(f"cannot read model file {path}: Permission denied")
        return real(path)

    monkeypatch.setattr(backends, "verify_file", verify)
    with pytest.warns(UserWarning) as caught:
        be = create_backend("openvino", device="cpu")
    assert be.model.path.name == names[1]
    assert [str(w.message) for w in caught] == [
        f"student_fast.onnx in {tmp_path} cannot be checked (cannot read model file "
        f"{tmp_path / names[0]}: Permission denied): running student_fast_int8.onnx, its int8 "
        "copy; reinstall SharpCam to repair it"
    ]
    be.close()


@needs_openvino
def test_an_int8_student_that_will_not_start_gives_way_to_the_float_one(tmp_path, monkeypatch):
    # The int8 file is sound but its runtime refuses it (an op this OpenVINO cannot compile):
    # the float student beside it is the same network, and runs, with a word.
    names = _students_in(tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx"])
    real = backends._build

    def build(name: str, model: object, *args: object) -> object:
        if getattr(model, "path", Path()).name == names[1]:
            raise BackendError(f"OpenVINO cannot compile {model.path} at 96x64: FakeQuantize")
        return real(name, model, *args)

    monkeypatch.setattr(backends, "_build", build)
    for name in ("openvino", "auto"):
        with pytest.warns(UserWarning, match="student_fast_int8.onnx not usable .*FakeQuantize"):
            be = create_backend(name, device="cpu")
        assert be.model.path.name == names[0]
        be.close()


@needs_openvino
def test_openvino_on_its_gpu_does_not_try_the_int8_cpu_student(tmp_path, monkeypatch):
    # The int8 file is the CPU's choice: `--device gpu` does not try it (and call it not
    # usable) before saying there is no GPU.
    if "GPU" in backends._ov_core().available_devices:
        pytest.skip("this machine has a GPU OpenVINO runs on")
    _students_in(
        tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx", "student.onnx"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BackendError, match="OpenVINO device GPU not available"):
            create_backend("openvino", device="gpu")


@needs_openvino
def test_an_unlisted_int8_file_beside_a_listed_float_student_is_not_loaded(tmp_path, monkeypatch):
    import engine.backends as B

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setitem(B._CPU_PRECISION, "CPU", "f32")  # where int8 would be preferred
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    write_manifest(tmp_path, ["student_fast.onnx"])
    # a leftover of another export, or a file dropped in: no sha256 vouches for it
    make_onnx_model(tmp_path / "student_fast_int8.onnx", "sharpen")
    for name in ("openvino", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "loading it unverified"
            be = create_backend(name, device="cpu")
        assert be.model.path.name == "student_fast.onnx" and be.model.entry is not None


@needs_openvino
def test_an_int8_file_quantized_from_the_float_one_is_matched_in_any_hex_case(
    tmp_path, monkeypatch
):
    # A sha256 is compared as the digest it is: one written in capitals (by hand, by another
    # tool) names the same float file.
    names = _students_in(tmp_path, monkeypatch, ["student_fast.onnx", "student_fast_int8.onnx"])
    write_manifest(tmp_path, names)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"][names[1]]["quantized_from"] = manifest["files"][names[0]]["sha256"].upper()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert create_backend("openvino", device="cpu").model.path.name == names[1]
    # The int8 file is an ONNX one: no answer to a request for TorchScript files.
    assert resolve_default_model(False, suffix=".ts", int8=True) is None


@needs_openvino
def test_an_unreadable_manifest_is_said_by_the_float_student_not_as_an_unusable_int8_file(
    tmp_path, monkeypatch
):
    # The manifest that says whether the int8 file holds the float student's weights cannot be
    # read: the float student's own load says why, with no int8 warning before it.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setitem(backends._CPU_PRECISION, "CPU", "f32")
    for name in ("student_fast.onnx", "student_fast_int8.onnx"):
        make_onnx_model(tmp_path / name, "identity")
    (tmp_path / "manifest.json").write_text("{ not json")
    for name in ("openvino", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ModelError, match="cannot read manifest"):
                create_backend(name, device="cpu")


def test_a_student_standing_in_for_the_other_says_what_it_costs_at_the_callers_line(
    tmp_path, monkeypatch
):
    # The GPU student on a CPU is 6x the work: the warning says so (the stream then shrinks
    # its processing size), and points at the line that made the backend.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    make_onnx_model(tmp_path / "student.onnx", "identity")
    write_manifest(tmp_path, ["student.onnx"])
    for name in ("onnx", "auto"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            create_backend(name, device="cpu").close()
        said = [w for w in caught if "student_fast.onnx not found" in str(w.message)]
        assert len(said) == 1 and said[0].filename == __file__, name
    assert str(said[0].message) == (
        f"student_fast.onnx not found in {tmp_path}: using student.onnx, the GPU student; it "
        "is 6x the work of the CPU student, slower here"
    )
    # The CPU student standing in on a GPU costs nothing more there.
    (tmp_path / "student.onnx").rename(tmp_path / "student_fast.onnx")
    with pytest.warns(UserWarning) as caught:
        assert backends._default_model_to_run(True).name == "student_fast.onnx"
    assert str(caught[0].message) == (
        f"student.onnx not found in {tmp_path}: using student_fast.onnx, the CPU student"
    )


@needs_openvino
def test_without_a_manifest_the_int8_file_does_not_replace_the_float_student(tmp_path, monkeypatch):
    # SHARPCAM_WEIGHTS at a folder of copied model files: nothing says the int8 file holds the
    # float student's weights (a leftover of an older export, say), and the float file is the
    # one a person put there to run. ARCHITECTURE.md: int8 only with the float file's digest.
    import engine.backends as B

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setitem(B._CPU_PRECISION, "CPU", "f32")  # where int8 would be preferred
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    make_onnx_model(tmp_path / "student_fast_int8.onnx", "sharpen")
    for name in ("openvino", "auto"):
        with pytest.warns(UserWarning, match="loading it unverified") as record:
            be = create_backend(name, device="cpu")
        assert be.model.path.name == "student_fast.onnx"
        assert not [w for w in record if "student_fast_int8" in str(w.message)]


@needs_openvino
def test_no_weights_on_an_f32_cpu_is_the_no_model_error(tmp_path, monkeypatch):
    import engine.backends as B

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setitem(B._CPU_PRECISION, "CPU", "f32")  # the int8 path is tried first
    for name in ("openvino", "auto"):
        with pytest.raises(ModelError, match="no model given and none in"):
            create_backend(name, device="cpu")


@needs_torch
def test_torch_without_its_files_names_the_files_it_looked_for(tmp_path, monkeypatch):
    # The ONNX student sits right there; the message named it as what was expected.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    write_manifest(tmp_path, ["student_fast.onnx"])
    with pytest.raises(ModelError, match=r"expected student_fast\.ts or student\.ts\)"):
        create_backend("torch", device="cpu")


@needs_openvino
def test_openvino_cpu_precision_is_asked_of_openvino(monkeypatch):
    import engine.backends as B

    monkeypatch.setattr(B, "_CPU_PRECISION", {})
    got = B.openvino_cpu_precision()
    assert got in ("bf16", "f16", "f32")
    assert B.prefer_int8() == (got in ("f32", "bf16")) and B.prefer_int8("f32") is False


@needs_torch
def test_torch_backend_defaults_to_the_shipped_torchscript(tmp_path, monkeypatch, frame):
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    make_torch_model(tmp_path / "student_fast.ts", "identity")
    write_manifest(tmp_path, ["student_fast.onnx", "student_fast.ts"])
    assert resolve_default_model(False, suffix=".ts") == tmp_path / "student_fast.ts"
    be = create_backend("torch", device="cpu")
    assert be.model.path == tmp_path / "student_fast.ts"
    assert np.array_equal(be.process(frame), frame)


# --------------------------------------------------------------------------- model files


MODEL_BACKENDS = ["onnx", pytest.param("openvino", marks=needs_openvino)]


@pytest.mark.parametrize("name", [*MODEL_BACKENDS, "auto"])
def test_sha256_mismatch_is_refused(tmp_path, name):
    path = make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    write_manifest(tmp_path, {"student_fast.onnx": {"sha256": "0" * 64}})
    with pytest.raises(ModelIntegrityError) as info:
        create_backend(name, model=path)
    msg = str(info.value)
    assert str(path) in msg and "0" * 64 in msg
    assert sha256_file(path) in msg


def test_auto_goes_on_to_the_cpu_student_when_only_the_gpu_student_is_damaged(
    tmp_path, monkeypatch
):
    # ONNX Runtime GPU lists CUDA on a machine without one: the GPU student was hashed before
    # the session could show that, and its damage refused to start what would run here.
    import engine.backends as B

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(B, "_ort_gpu_listed", lambda: True)
    names = ["student.onnx", "student_fast.onnx"]
    for name in names:
        make_onnx_model(tmp_path / name, "identity")
    write_manifest(tmp_path, {"student.onnx": {"sha256": "0" * 64}, "student_fast.onnx": {}})
    with pytest.warns(UserWarning, match="trying the CPU student"):
        be = create_backend("auto", device="auto")
    assert be.model.path.name == "student_fast.onnx"
    be.close()
    # Asked for the GPU only, or for that file: still refused, and with no word of a CPU
    # student that will not be tried (it said "trying the CPU student", then refused).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelIntegrityError):
            create_backend("auto", device="gpu")
    assert not [w for w in caught if "CPU student" in str(w.message)]
    with pytest.raises(ModelIntegrityError):
        create_backend("auto", model=tmp_path / "student.onnx")


def test_a_damaged_cpu_student_is_refused_without_a_word_of_trying_it(tmp_path, monkeypatch):
    # Only the GPU student's damage lets `auto` go on to the CPU student: the CPU student's own
    # is refused with no word of "trying the CPU student".
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(backends, "_ort_gpu_listed", lambda: False)
    monkeypatch.setitem(backends._CPU_PRECISION, "CPU", "f16")  # no int8 file to try first
    make_onnx_model(tmp_path / "student_fast.onnx", "identity")
    write_manifest(tmp_path, {"student_fast.onnx": {"sha256": "0" * 64}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelIntegrityError):
            create_backend("auto", device="auto")
    assert not [str(w.message) for w in caught if "CPU student" in str(w.message)]


@pytest.mark.parametrize("name", [*MODEL_BACKENDS, "auto"])
def test_missing_model_file(tmp_path, name):
    path = tmp_path / "gone.onnx"
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path)
    assert str(info.value) == f"model file not found: {path}"


@pytest.mark.parametrize("name", [*MODEL_BACKENDS, "auto"])
def test_a_model_file_it_may_not_read_says_so(tmp_path, name, monkeypatch):
    # OpenVINO called it "not an ONNX model (damaged, truncated or in another format)", ONNX
    # Runtime "system error number 13". (The refusal is stood in for: root reads any file.)
    import builtins

    path = tmp_path / "locked.onnx"
    path.write_bytes(b"a model")
    real_open = builtins.open

    def open_(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path)
    assert str(info.value) == f"cannot read model file {path}: Permission denied"


@pytest.mark.parametrize("name", [*MODEL_BACKENDS, "auto"])
def test_corrupt_model_file_names_file_and_reason(tmp_path, name):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unverified: no manifest beside it
        with pytest.raises(ModelError) as info:
            create_backend(name, model=path)
    msg = str(info.value)
    assert msg.startswith(f"cannot load model {path}: ") and len(msg) > len(str(path)) + 25


@pytest.mark.parametrize("name", [*MODEL_BACKENDS, "auto"])
@pytest.mark.parametrize("damage", ["truncated", "torchscript", "text"])
def test_unloadable_model_is_one_line_with_no_runtime_noise(tmp_path, capfd, name, damage):
    # OpenVINO's messages span several lines of C++ source locations, and for a file that is
    # not ONNX its TensorFlow frontend printed parse errors straight to stderr; errors reach a
    # person as one line (the CLI's stderr, the app's warning).
    good = make_onnx_model(tmp_path / "good.onnx", "conv", multiple=8).read_bytes()
    path = tmp_path / "student_fast.onnx"
    path.write_bytes(
        {
            "truncated": good[: len(good) // 2],
            "torchscript": b"PK\x03\x04" + bytes(range(256)) * 4,  # a zip archive's header
            "text": b"hello",
        }[damage]
    )
    write_manifest(tmp_path, [path.name])  # listed and matching: the damage is the export's
    capfd.readouterr()
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot load model {path}: "), msg
    assert "Exception from src" not in msg
    err = capfd.readouterr().err
    assert "GraphDef" not in err and "text_format" not in err, err


@pytest.mark.parametrize(
    ("name", "file", "fmt", "use"),
    [
        ("onnx", "m.ts", "a TorchScript file", "the torch backend for it, or a .onnx file"),
        pytest.param(
            "openvino",
            "m.ts",
            "a TorchScript file",
            "the torch backend for it, or a .onnx file",
            marks=needs_openvino,
        ),
        pytest.param(
            "torch",
            "m.onnx",
            "an ONNX file",
            "the onnx or openvino backend for it, or a .ts file",
            marks=needs_torch,
        ),
        # The manifest's word where the suffix says nothing.
        ("onnx", "m.bin", "a TorchScript file", "the torch backend for it, or a .onnx file"),
        # A .pt file the manifest calls TorchScript is no training checkpoint.
        ("onnx", "m.pt", "a TorchScript file", "the torch backend for it, or a .onnx file"),
    ],
)
def test_a_model_in_the_other_format_names_both_formats(tmp_path, name, file, fmt, use):
    # `--backend torch --model weights/student_fast.onnx` ended in "PytorchStreamReader failed
    # reading zip archive: failed finding central directory ... checkpoint file is corrupted",
    # and the onnx backend given a .ts file in "INVALID_PROTOBUF".
    path = make_onnx_model(tmp_path / file, "identity") if file.endswith(".onnx") else None
    if path is None:
        path = tmp_path / file
        path.write_bytes(b"PK\x03\x04" + bytes(64))
    write_manifest(
        tmp_path, {file: {"format": "onnx" if file.endswith(".onnx") else "torchscript"}}
    )
    runs = "TorchScript" if name == "torch" else "ONNX"
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path)
    assert str(info.value) == (
        f"cannot load model {path}: it is {fmt} and the {name} backend runs {runs} models "
        f"(use {use})"
    )


@pytest.mark.parametrize(
    ("name", "runs", "suffix"),
    [("onnx", "ONNX", ".onnx"), pytest.param("torch", "TorchScript", ".ts", marks=needs_torch)],
)
@pytest.mark.parametrize("listed", [False, True])
def test_an_openvino_ir_given_to_another_backend_is_named(tmp_path, name, runs, suffix, listed):
    # ONNX Runtime said "INVALID_PROTOBUF : Protobuf parsing failed", torch that the file was
    # a corrupted checkpoint.
    path = tmp_path / "ir.xml"
    path.write_text('<?xml version="1.0"?>\n<net name="m" version="11"></net>\n')
    (tmp_path / "ir.bin").write_bytes(bytes(16))
    if listed:
        write_manifest(tmp_path, ["ir.xml", "ir.bin"])
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path)
    assert str(info.value) == (
        f"cannot load model {path}: it is an OpenVINO IR file and the {name} backend runs "
        f"{runs} models (use the openvino backend for it, or a {suffix} file)"
    )


def test_an_openvino_ir_in_capitals_given_to_onnx_runtime_is_named(tmp_path):
    path = tmp_path / "IR.XML"
    path.write_text('<?xml version="1.0"?>\n<net name="m" version="11"></net>\n')
    (tmp_path / "IR.BIN").write_bytes(bytes(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # loading it unverified
        with pytest.raises(ModelError, match="it is an OpenVINO IR file and the onnx backend"):
            create_backend("onnx", model=path)


def test_a_model_whose_format_nothing_states_is_left_to_the_runtime(tmp_path):
    # No manifest entry and a suffix that says nothing: no refusal by guess.
    path = make_onnx_model(tmp_path / "mine.model", "identity")
    with pytest.warns(UserWarning, match="loading it unverified"):
        be = create_backend("onnx", model=path)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert np.array_equal(be.process(rgb), rgb)


def test_model_without_manifest_warns(tmp_path):
    path = make_onnx_model(tmp_path / "mine.onnx", "identity")
    with pytest.warns(UserWarning, match=r"mine\.onnx: not listed in a manifest\.json"):
        create_backend("onnx", model=path)


def _bad_model(path: Path, problem: str) -> Path:
    """`make_bad_onnx_model`, plus ``batch2`` (`(2, 3, H, W)` both ends), ``batch0``, ``grey``
    (`(1, 1, H, W)` both ends), ``rank5`` (`(1, 3, D, H, W)`), ``nhwc4`` (`(N, H, W, 4)`, RGBA
    channels last), ``float64`` (double both ends), ``no_input`` (a constant frame out) and
    ``uint8_input`` / ``int64_input`` (integer `(1, 3, H, W)` in, cast to a float32 `(1, 3, H,
    W)` out)."""
    from contract_models import _save_onnx
    from onnx import TensorProto, helper, numpy_helper

    shapes = {
        "batch2": [2, 3, "H", "W"],
        "batch0": [0, 3, "H", "W"],
        "grey": [1, 1, "H", "W"],
        "rank5": [1, 3, "D", "H", "W"],
        "nhwc4": ["N", "H", "W", 4],
        "float64": [1, 3, "H", "W"],
    }
    elem = out_elem = TensorProto.FLOAT
    if problem == "no_input":
        frame = numpy_helper.from_array(np.zeros((1, 3, 32, 32), np.float32), "frame")
        nodes = [helper.make_node("Identity", ["frame"], ["output"])]
        output = helper.make_tensor_value_info("output", elem, [1, 3, 32, 32])
        graph = helper.make_graph(nodes, "bad_no_input", [], [output], initializer=[frame])
        return _save_onnx(graph, path)
    if problem in shapes:
        shape = shapes[problem]
        nodes = [helper.make_node("Identity", ["input"], ["output"])]
        if problem == "float64":
            elem = out_elem = TensorProto.DOUBLE
    elif problem in ("uint8_input", "int64_input"):
        shape = [1, 3, "H", "W"]
        nodes = [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT)]
        elem = TensorProto.UINT8 if problem == "uint8_input" else TensorProto.INT64
    else:
        return make_bad_onnx_model(path, problem)
    inputs = [helper.make_tensor_value_info("input", elem, shape)]
    outputs = [helper.make_tensor_value_info("output", out_elem, shape)]
    return _save_onnx(helper.make_graph(nodes, f"bad_{problem}", inputs, outputs), path)


@pytest.mark.parametrize("name", MODEL_BACKENDS)
@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("two_inputs", "expected 1 input, got 2 ('input', 'extra')"),
        ("two_outputs", "expected 1 output, got 2 ('output', 'extra')"),
        ("channels", "input 'input' must have 3 channels (1, 3, H, W), got (1, 4, "),
        ("rank", "input 'input' must be 4-D (1, 3, H, W), got (3, "),
        # Loaded, then ONNX Runtime failed the first frame ("Got invalid dimensions for input
        # ... index: 3 Got: 77 Expected: 3") and OpenVINO the load with a shape-inference
        # assertion of its Convolution: neither said the layout was the problem.
        ("nhwc", "input 'input' is channels last (NHWC): must be channels first (1, 3, H, W)"),
        # A batch of 2 or integer pixels: each check alone must refuse them (every other
        # dimension and type is right), else they load and fail or misread the first frame.
        ("batch2", "input 'input' must have batch 1 (1, 3, H, W), got (2, 3, "),
        ("uint8_input", "input 'input' must be float32 or float16, got "),
        ("int64_input", "input 'input' must be float32 or float16, got "),
        # Fewer channels than 3 (a greyscale model) loaded, and failed the first frame with
        # the runtime's message about a dimension.
        ("grey", "input 'input' must have 3 channels (1, 3, H, W), got (1, 1, "),
        # Each refused by its own check alone: past it, the first frame would fail with the
        # runtime's own message (or, with no input, come back as the model's constant).
        ("no_input", "expected 1 input, got 0 ()"),
        ("rank5", "input 'input' must be 4-D (1, 3, H, W), got (1, 3, "),
        ("nhwc4", "input 'input' is channels last (NHWC): must be channels first (1, 3, H, W)"),
        ("batch0", "input 'input' must have batch 1 (1, 3, H, W), got (0, 3, "),
        ("float64", "input 'input' must be float32 or float16, got "),
    ],
)
def test_contract_violations_are_refused(tmp_path, name, problem, message):
    path = _bad_model(tmp_path / f"{problem}.onnx", problem)
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: breaks the model contract: ")
    assert message in msg


@needs_openvino
def test_an_openvino_model_of_no_declared_rank_is_refused(tmp_path):
    # An IR converted without an input shape: its rank says nothing, and it is no (1, 3, H, W)
    # model until its graph says so.
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter(ov.PartialShape.dynamic(), ov.Type.f32, name="input")
    model = ov.Model([ops.result(ops.relu(x))], [x], "unranked")
    path = tmp_path / "unranked.xml"
    ov.save_model(model, str(path))
    write_manifest(tmp_path, ["unranked.xml", "unranked.bin"])
    with pytest.raises(ModelError) as info:
        create_backend("openvino", model=path)
    assert str(info.value) == (
        f"{path}: breaks the model contract: input 'input' must be 4-D (1, 3, H, W), got (...)"
    )


@needs_torch
def test_torchscript_contract_violation_is_refused(tmp_path):
    import torch

    class FourChannels(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x[:, :1]], 1)

    path = tmp_path / "four.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FourChannels()).save(str(path))
    write_manifest(tmp_path, [path.name])
    with pytest.raises(
        ModelError, match=r"breaks the model contract: output must be \(1, 3, 32, 33\)"
    ):
        create_backend("torch", model=path)


def test_torch_missing_gives_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    path.write_bytes(b"x")
    write_manifest(tmp_path, [path.name])
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(BackendError, match=r"backend 'torch' needs 'torch': pip install"):
        create_backend("torch", model=path)


def test_torch_missing_without_a_model_gives_the_same_clear_error(tmp_path, monkeypatch):
    # `--backend torch` with the shipped .ts files and no PyTorch: the CUDA probe that picks
    # the default file imported torch itself, and a bare ModuleNotFoundError came out.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    (tmp_path / "student_fast.ts").write_bytes(b"x")
    write_manifest(tmp_path, ["student_fast.ts"])
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(BackendError, match=r"backend 'torch' needs 'torch': pip install"):
        create_backend("torch")


def test_torch_missing_is_no_cuda_machine_and_no_student_is_said_to_stand_in(tmp_path, monkeypatch):
    # Without PyTorch nothing says CUDA is there: the CPU student is looked for, and no student
    # is said to stand in for the other just before the error that PyTorch is missing.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    (tmp_path / "student_fast.ts").write_bytes(b"x")
    write_manifest(tmp_path, ["student_fast.ts"])
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert backends.TorchBackend.gpu_listed() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BackendError, match=r"backend 'torch' needs 'torch'"):
            create_backend("torch")
        # What to install comes first: no model is looked at by a runtime that is not there.
        with pytest.raises(BackendError, match=r"backend 'torch' needs 'torch'"):
            create_backend("torch", model=tmp_path / "elsewhere.pt")


@needs_torch
def test_auto_runs_a_torchscript_model_on_the_device_asked_for(models):
    # `--device gpu` with a TorchScript model and no CUDA is refused, not run on the CPU.
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendError, match=r"torch \(gpu\): torch backend: CUDA is not avail"):
        create_backend("auto", model=models["conv.pt"], device="gpu")


@needs_torch
def test_a_zip_file_too_damaged_to_list_is_not_called_a_torchscript_archive(tmp_path):
    # Only an archive laid out as TorchScript is called one PyTorch cannot load; a file that
    # merely starts like a zip says what TorchScript made of it.
    path = tmp_path / "m.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(64))
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("torch", model=path, device="cpu")
    assert str(info.value).startswith(f"cannot load model {path}: not TorchScript (")


# --------------------------------------------------------------------------- registry


def test_register_backend_and_create(monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))

    class Invert(PassthroughBackend):
        name = "invert"
        provider = "numpy invert"

        def __init__(self, *, device: str = "auto") -> None:
            self.device = device

        def process(self, rgb):
            return 255 - rgb

    register_backend("invert", Invert)
    assert "invert" in list_backends()
    be = create_backend("invert", device="cpu")
    assert isinstance(be, Invert) and be.device == "cpu"
    np.testing.assert_array_equal(be.process(np.zeros((2, 2, 3), np.uint8)), 255)
    with pytest.raises(ValueError):
        register_backend("auto", Invert)


def test_the_registry_builds_a_backend_class_with_what_it_takes(monkeypatch, tmp_path):
    # A class with **options is given the device and the threads; one whose model has a
    # default of its own (a filter with built-in weights) keeps it when no model is given; a
    # class with no available() (nothing to import) is listed; and "" is no name.
    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))

    class Filter:
        name = provider = "filter"

        def __init__(self, *, model: object = "builtin.npz", **options: object) -> None:
            self.model, self.options = model, options

        def process(self, rgb: np.ndarray) -> np.ndarray:
            return rgb

        def close(self) -> None:
            pass

    register_backend("filter", Filter)
    assert "filter" in list_backends()
    be = create_backend("filter", device="cpu", threads=2)
    assert be.model == "builtin.npz" and be.options == {"device": "cpu", "threads": 2}
    assert create_backend("filter", model=tmp_path / "w.npz").model == tmp_path / "w.npz"
    for bad in ("", "auto"):
        with pytest.raises(ValueError, match="invalid backend name"):
            register_backend(bad, Filter)


def test_a_registered_model_backend_of_no_stated_format_takes_any_model_file(monkeypatch, tmp_path):
    # The format check is for the built-in runtimes: a registered backend that states no
    # format is given an OpenVINO IR or a TorchScript file it may well run.
    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))

    class Mine(PassthroughBackend):
        needs_model = True

        def __init__(self, *, model: object) -> None:
            self.model = model

    register_backend("mine", Mine)
    for file in ("m.xml", "m.ts", "m.onnx"):
        (tmp_path / file).write_bytes(b"weights")
    write_manifest(tmp_path, ["m.xml", "m.ts", "m.onnx"])
    for file in ("m.xml", "m.ts", "m.onnx"):
        assert create_backend("mine", model=tmp_path / file).model.path == tmp_path / file


def test_passthrough_takes_any_scale_and_rate(frame):
    # It is never scaled: a scale with no camera rate yet (0) is no reason to refuse it.
    be = create_backend("passthrough", scale=0.5, target_fps=0)
    assert be.process(frame) is frame


def test_auto_passes_each_runtime_only_the_options_it_takes(models, monkeypatch):
    # `--precision f32` is OpenVINO's: without OpenVINO, ONNX Runtime given it too would fail
    # ("unexpected keyword argument"), and `auto` say that no backend could start.
    monkeypatch.setattr(backends.OpenVinoBackend, "available", classmethod(lambda cls: False))
    be = create_backend("auto", model=models["conv.onnx"], precision="f32")
    assert be.name == "onnx"
    be.close()


@needs_openvino
def test_auto_reports_the_model_error_of_the_runtime_it_tried_first(tmp_path, monkeypatch):
    # A damaged file fails every runtime, each in its own words: said in the words of the one
    # `auto` would have run.
    monkeypatch.setattr(backends, "_ort_gpu_listed", lambda: False)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a model")
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as auto:
        create_backend("auto", model=path)
    with pytest.raises(ModelError) as first:
        create_backend("openvino", model=path)
    assert str(auto.value) == str(first.value)


def test_the_gpu_student_s_session_is_closed_when_the_cpu_student_replaces_it(
    tmp_path, monkeypatch
):
    # onnxruntime-gpu without a GPU: the GPU student's session does not stay open beside the
    # CPU student that replaces it (on a machine with a GPU driver, its device memory too).
    import onnxruntime as ort

    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    _students(tmp_path)
    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    closed: list[str] = []
    real = OnnxBackend.close
    monkeypatch.setattr(
        OnnxBackend, "close", lambda self: closed.append(self.model.path.name) or real(self)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns that CUDA is not really there
        be = create_backend("onnx", device="auto")
    assert be.model.path.name == "student_fast.onnx" and closed == ["student.onnx"]


@pytest.mark.parametrize("name", ["auto", "unsharp", "passthrough"])
def test_an_unknown_device_is_refused_by_name_for_every_backend(name):
    # A backend that runs on no device (unsharp) refuses `--device tpu` too, and `auto` says
    # the name is wrong, not that no backend can run on it.
    with pytest.raises(BackendError) as info:
        create_backend(name, device="tpu")
    assert str(info.value) == "device must be one of ('auto', 'cpu', 'gpu', 'cuda'), got 'tpu'"


def test_unknown_backend_lists_known():
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; known: auto, onnx"):
        create_backend("nope")


def test_list_backends_only_importable(monkeypatch):
    names = list_backends()
    assert {"onnx", "unsharp", "passthrough"} <= set(names)
    assert ("openvino" in names) == HAS_OPENVINO
    monkeypatch.setattr(backends.TorchBackend, "available", classmethod(lambda cls: False))
    assert "torch" not in list_backends()


# --------------------------------------------------------------------------- install check


def test_check_onnxruntime_install(monkeypatch):
    monkeypatch.setattr(backends, "_installed_distributions", lambda: {"numpy", "onnxruntime"})
    assert check_onnxruntime_install() is None
    monkeypatch.setattr(
        backends, "_installed_distributions", lambda: {"onnxruntime", "onnxruntime-gpu"}
    )
    msg = check_onnxruntime_install()
    assert "onnxruntime and onnxruntime-gpu are installed together" in msg
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in msg


def _fixed_size_model(path: Path, side: int, height: int | None = None) -> Path:
    """An identity ONNX model whose input and output are fixed at ``side`` x ``side`` (W x H),
    or ``side`` wide and ``height`` high."""
    onnx = pytest.importorskip("onnx")
    make_onnx_model(path, kind="identity")
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, n in ((2, side if height is None else height), (3, side)):
            dims[i].Clear()
            dims[i].dim_value = n
    onnx.save(model, str(path))
    return path


def test_refused_frame_size_leaves_the_onnx_backend_usable(tmp_path: Path) -> None:
    # A fixed-size model refuses other sizes, again and again, and still runs its own size:
    # the refusal must not leave the I/O binding pointing at freed buffers.
    path = _fixed_size_model(tmp_path / "fixed.onnx", 32)
    with pytest.warns(UserWarning):
        backend = create_backend("onnx", model=path)
    ok = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(backend.process(ok), ok)
    wrong = np.zeros((48, 48, 3), np.uint8)
    for _ in range(3):
        with pytest.raises(BackendError, match="fixed input size"):
            backend.process(wrong)
    assert np.array_equal(backend.process(ok), ok)
    backend.close()


def test_a_fixed_size_model_is_not_tiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its graph takes one size only: tiles of another were refused, at its own size too.
    path = _fixed_size_model(tmp_path / "fixed.onnx", 32)
    with pytest.warns(UserWarning):
        backend = create_backend("onnx", model=path)
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 16 * 16)
    monkeypatch.setattr(backends, "TILE_SIDE", 16)
    monkeypatch.setattr(backends, "TILE_ALIGN", 8)
    monkeypatch.setattr(backends, "TILE_MARGIN", 2)
    ok = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(backend.process(ok), ok)
    backend.close()


def test_a_fixed_size_model_runs_at_full_size_only(tmp_path: Path) -> None:
    # `--scale auto` (the default) ran it at full size, stepped down once it was slow, and the
    # model refused every smaller frame: the rest of the stream went out unsharpened, exit 0.
    import engine.backends as backends_module

    path = _fixed_size_model(tmp_path / "fixed.onnx", 64)
    closed: list[bool] = []
    real_close = backends_module.OnnxBackend.close

    def close(self) -> None:  # noqa: ANN001
        closed.append(True)
        real_close(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends_module.OnnxBackend, "close", close)
        with pytest.raises(BackendError, match="fixed input size, so it runs at processing scale"):
            with pytest.warns(UserWarning, match="loading it unverified"):
                create_backend("onnx", model=path, scale=0.75)
    assert closed == [True]  # the session it loaded is not left open
    with pytest.warns(UserWarning, match="fixed input size: the automatic processing scale"):
        backend = create_backend("onnx", model=path, scale="auto")
    ticks = iter(np.arange(1_000) * 0.05)  # each reading 50 ms on: slow against 27 ms
    backend._clock = lambda: float(next(ticks))
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for _ in range(60):
        assert np.array_equal(backend.process(frame), frame)
    assert backend.scale == 1.0
    backend.close()


def test_an_unwritable_tensorrt_cache_does_not_stop_onnx_runtime(tmp_path, monkeypatch, models):
    # onnxruntime-gpu lists TensorRT even on machines without a GPU, and a read-only home (a
    # sandbox, a service account) made OnnxBackend die creating the engine cache folder.
    import onnxruntime as ort

    listed = ort.get_available_providers()
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", *listed]
    )
    given: list = []
    session = ort.InferenceSession

    def record(path, sess_options=None, providers=None, **kw):
        given.extend(providers)
        return session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", record)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setenv("LOCALAPPDATA", str(blocker))
    monkeypatch.setattr(backends.Path, "home", lambda: blocker)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TensorRT did not come up: nothing to warn about
        be = create_backend("onnx", model=models["identity.onnx"], device="auto")
    assert be.provider == "ONNX Runtime · CPUExecutionProvider"
    trt = dict(p for p in given if isinstance(p, tuple))["TensorrtExecutionProvider"]
    assert trt == {"trt_fp16_enable": True}  # no cache options pointing into the file
    frame = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert np.array_equal(be.process(frame), frame)


@needs_openvino
@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize("listed", [True, False])
def test_openvino_refuses_a_model_whose_output_is_another_size(
    tmp_path: Path, listed: bool
) -> None:
    # Dynamic H and W say nothing about the output's size: OpenVINO returned a half-size frame
    # from `process` instead of refusing the model when it loads (where `auto` falls back).
    # Unlisted, the model is searched for NaN in its graph; a select of output and input of
    # two sizes must not be built there (an OpenVINO error on broadcasting), so the load says
    # which contract it breaks, as for a listed model.
    from contract_models import _save_onnx
    from onnx import TensorProto, helper

    def vi(name: str, hw: list) -> object:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, *hw])

    pool = helper.make_node(
        "AveragePool", ["input"], ["output"], kernel_shape=[2, 2], strides=[2, 2]
    )
    graph = helper.make_graph([pool], "half", [vi("input", ["H", "W"])], [vi("output", ["h", "w"])])
    path = _save_onnx(graph, tmp_path / "half.onnx")
    if listed:
        write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("openvino", model=path)
    # The load's trial frame is said to be one: "(1, 3, 64, 96)" read as the user's frame.
    assert str(info.value) == (
        f"{path}: breaks the model contract: its output must be as large as its input, and on "
        "a 96x64 trial frame it is 48x32 (0.5x its input)"
    )


@needs_openvino
def test_openvino_refuses_a_model_that_swaps_h_and_w_under_other_names_at_load(tmp_path):
    # Output (1, 3, "h", "w") computed as a transpose: nothing declared says it is wrong, and
    # the square probe at load passed it; the first frame of a video that is not square failed
    # (offline: the run; live: passthrough from then on) instead of the load, where `auto`
    # falls back to another backend.
    from contract_models import _save_onnx
    from onnx import TensorProto, helper

    def vi(name: str, hw: list) -> object:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, *hw])

    swap = helper.make_node("Transpose", ["input"], ["output"], perm=[0, 1, 3, 2])
    graph = helper.make_graph([swap], "swap", [vi("input", ["H", "W"])], [vi("output", ["h", "w"])])
    path = _save_onnx(graph, tmp_path / "swap.onnx")
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("openvino", model=path)
    assert str(info.value) == (
        f"{path}: breaks the model contract: its output must be as large as its input, and on "
        "a 96x64 trial frame it is 64x96 (0.667x its width, 1.5x its height)"
    )


# --------------------------------------------------------------------------- output contract


def _declared_model(path: Path, kind: str) -> Path:
    """A model whose declared output is what ``kind`` names; its graph computes just that."""
    from contract_models import _save_onnx
    from onnx import TensorProto, helper, numpy_helper

    def vi(name: str, shape: list, elem: int = TensorProto.FLOAT) -> object:
        return helper.make_tensor_value_info(name, elem, shape)

    inits: list = []
    dynamic = [1, 3, "H", "W"]
    if kind == "fixed":  # any frame comes back 32x32
        sizes = numpy_helper.from_array(np.array([1, 3, 32, 32], np.int64), "sizes")
        nodes = [helper.make_node("Resize", ["input", "", "", "sizes"], ["output"])]
        inputs, outputs, inits = [vi("input", dynamic)], [vi("output", [1, 3, 32, 32])], [sizes]
    elif kind == "fixed_both":  # a fixed-size model that halves its frame
        pool = helper.make_node(
            "AveragePool", ["input"], ["output"], kernel_shape=[2, 2], strides=[2, 2]
        )
        nodes, inputs, outputs = (
            [pool],
            [vi("input", [1, 3, 32, 32])],
            [vi("output", [1, 3, 16, 16])],
        )
    elif kind in ("fixed_width", "fixed_height_unnamed"):  # one side cropped to 32
        axis = 3 if kind == "fixed_width" else 2
        hw = ["H", "W"] if kind == "fixed_width" else [None, None]  # None: an unnamed symbol
        out = [*hw]
        out[axis - 2] = 32
        inits = [
            numpy_helper.from_array(np.array([v], np.int64), name)
            for name, v in (("starts", 0), ("ends", 32), ("axes", axis))
        ]
        nodes = [helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["output"])]
        inputs, outputs = [vi("input", [1, 3, *hw])], [vi("output", [1, 3, *out])]
    elif kind == "swapped":  # (1, 3, W, H): wrong for every frame that is not square
        nodes = [helper.make_node("Transpose", ["input"], ["output"], perm=[0, 1, 3, 2])]
        inputs, outputs = [vi("input", dynamic)], [vi("output", [1, 3, "W", "H"])]
    elif kind == "channels":  # a fourth (zero) channel
        pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64), "pads")
        nodes = [helper.make_node("Pad", ["input", "pads"], ["output"])]
        inputs, outputs, inits = [vi("input", dynamic)], [vi("output", [1, 4, "H", "W"])], [pads]
    elif kind == "uint8":
        nodes = [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.UINT8)]
        inputs, outputs = [vi("input", dynamic)], [vi("output", dynamic, TensorProto.UINT8)]
    elif kind == "symbolic":  # every output dimension a symbol of its own: nothing to judge
        nodes = [helper.make_node("Identity", ["input"], ["output"])]
        inputs, outputs = [vi("input", ["n", "c", "H", "W"])], [vi("output", ["a", "b", "h", "w"])]
    elif kind == "float16_out":  # float32 in, float16 out: each end float, as the contract allows
        nodes = [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT16)]
        inputs, outputs = [vi("input", dynamic)], [vi("output", dynamic, TensorProto.FLOAT16)]
    else:
        raise ValueError(kind)
    graph = helper.make_graph(nodes, kind, inputs, outputs, initializer=inits)
    path = _save_onnx(graph, path)
    write_manifest(path.parent, [path.name])
    return path


@pytest.fixture
def no_trial_run(monkeypatch):
    """Fails a test whose backend runs its ONNX Runtime session while it loads."""
    import onnxruntime as ort

    loading = [True]

    def guard(real):  # noqa: ANN001, ANN202
        def run(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            assert not loading[0], "the model ran while loading (TensorRT builds an engine)"
            return real(self, *args, **kwargs)

        return run

    for method in ("run", "run_with_iobinding"):
        monkeypatch.setattr(
            ort.InferenceSession, method, guard(getattr(ort.InferenceSession, method))
        )
    yield loading
    loading[0] = False


@pytest.mark.parametrize(
    ("kind", "got"),
    [
        ("fixed", "must be (1, 3, H, W) like the input, got (1, 3, 32, 32)"),
        ("fixed_both", "must be (1, 3, 32, 32) like the input, got (1, 3, 16, 16)"),
        ("swapped", "must be (1, 3, H, W) like the input, got (1, 3, W, H)"),
        # One side wrong is enough; an unnamed dimension reads as the contract's letter.
        ("fixed_width", "must be (1, 3, H, W) like the input, got (1, 3, H, 32)"),
        ("fixed_height_unnamed", "must be (1, 3, H, W) like the input, got (1, 3, 32, ?)"),
        ("channels", "must have 3 channels (1, 3, H, W), got (1, 4, H, W)"),
        ("uint8", "must be float32 or float16, got tensor(uint8)"),
    ],
)
def test_onnx_runtime_refuses_an_output_that_breaks_the_contract_at_load(
    tmp_path, no_trial_run, kind, got
):
    # Judged from the session's declarations: a fixed or swapped output size loaded and failed
    # at the first frame instead, with ONNX Runtime's several-line message.
    path = _declared_model(tmp_path / f"{kind}.onnx", kind)
    with pytest.raises(ModelError) as info:
        create_backend("onnx", model=path)
    assert str(info.value) == f"{path}: breaks the model contract: output 'output' {got}"


@pytest.mark.parametrize("io_binding", [True, False])
def test_onnx_runtime_loads_what_its_declarations_cannot_judge(tmp_path, no_trial_run, io_binding):
    path = _declared_model(tmp_path / "symbolic.onnx", "symbolic")
    be = OnnxBackend(model=path, io_binding=io_binding)
    no_trial_run[0] = False
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(be.process(rgb), rgb)


@pytest.mark.parametrize("io_binding", [True, False])
def test_onnx_runtime_runs_a_float16_output_behind_a_float32_input(tmp_path, io_binding):
    # Each end may be float32 or float16: the bound output buffer had the input's type and the
    # first frame failed ("Unexpected output data type").
    path = _declared_model(tmp_path / "float16_out.onnx", "float16_out")
    be = OnnxBackend(model=path, io_binding=io_binding)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(be.process(rgb), rgb)  # k / 255 survives float16 rounding


# --------------------------------------------------------------------------- person warnings


def test_warnings_from_threads_a_backend_starts_reach_collect_warnings(monkeypatch):
    """A new thread starts with an empty context: a backend's loader thread warned past the
    caller's collect_warnings into Python's warnings, which the app never shows."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from engine.backends import carry_warnings, collect_warnings, warn_user

    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))

    class Threaded(PassthroughBackend):
        name = "threaded"

        def __init__(self) -> None:
            loader = threading.Thread(target=carry_warnings(warn_user), args=("from a thread",))
            loader.start()
            loader.join()
            # one carried callable run by two pool threads at once, each in its own context
            barrier = threading.Barrier(2)

            def both(text: str) -> None:
                barrier.wait(5)
                warn_user(text)

            with ThreadPoolExecutor(2) as pool:
                list(pool.map(carry_warnings(both), ["from a pool", "from a pool"]))

    register_backend("threaded", Threaded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none may escape as a Python warning
        with collect_warnings() as caught:
            create_backend("threaded")
    assert caught == ["from a thread", "from a pool", "from a pool"]


def test_a_warning_after_a_nested_collect_warnings_block_goes_to_the_outer_one():
    # A model loaded inside another block's load: after the inner block, the outer block's
    # warnings still go to its own list, not to Python's warnings (the app never shows those).
    with backends.collect_warnings() as outer:
        with backends.collect_warnings() as inner:
            backends.warn_user("inner")
        backends.warn_user("outer")
    assert inner == ["inner"] and outer == ["outer"]


def test_a_carried_warning_after_its_block_ended_is_a_python_warning():
    import threading

    from engine.backends import carry_warnings, collect_warnings, warn_user

    ended = threading.Event()

    def late() -> None:
        ended.wait(5)
        warn_user("after the block")

    with pytest.warns(UserWarning, match="after the block"):
        with collect_warnings() as caught:
            thread = threading.Thread(target=carry_warnings(late))
            thread.start()
        ended.set()
        thread.join(5)
    assert caught == []  # a list nobody reads any more is no place for it


def _run_python(script: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter at the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )


@needs_openvino
def test_ctrl_c_after_openvino_backends_closed_in_opening_order_is_not_a_segfault(
    tmp_path: Path,
) -> None:
    # OpenVINO gives the compiling thread an alternate signal stack per Core and puts back the
    # previous one when that Core goes: two closed first-in first-out (bench's rows) left an
    # unmapped stack registered, and Python's Ctrl-C handler ran on it (exit -11, no traceback).
    import textwrap

    model = make_onnx_model(tmp_path / "m.onnx")
    script = textwrap.dedent(
        f"""
        import os, signal, time
        import numpy as np
        from engine.backends import OpenVinoBackend
        frame = np.zeros((64, 64, 3), np.uint8)
        first, second = OpenVinoBackend(model={str(model)!r}), OpenVinoBackend(model={str(model)!r})
        first.process(frame); second.process(frame)
        first.close(); del first
        second.close(); del second
        import gc; gc.collect()
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            print("interrupted")
        """
    )
    proc = _run_python(script)
    assert proc.returncode == 0 and proc.stdout.strip() == "interrupted", (
        proc.returncode,
        proc.stderr[-2000:],
    )


@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize("file", ["best.pt", "best.pth"])
def test_a_pt_file_given_to_the_onnx_backend_is_not_called_torchscript(tmp_path, file):
    # A trainer checkpoint (runs/fast/best.pt) was "a TorchScript file ... use the torch backend
    # for it", which then refused it as a dict: the message must cover both kinds of .pt.
    path = tmp_path / file
    path.write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(ModelError) as info:
        create_backend("onnx", model=path)
    msg = str(info.value)
    assert "it is a PyTorch file" in msg and "TorchScript file" not in msg, msg
    assert "python -m training.export" in msg and "a .onnx file" in msg, msg


# --------------------------------------------------------------------------- unsafe or odd models


class _RunsCodeWhenUnpickled:
    """Unpickling this makes the folder ``marker``: what any pickle can make its loader do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.makedirs, (str(self.marker),))


@needs_torch
@pytest.mark.parametrize(
    ("holds", "said"),
    [
        ("code", "a pickled Python object (torch.save(model)), not TorchScript; SharpCam does not"),
        (
            "module",
            "a pickled Python object (torch.save(model)), not TorchScript; SharpCam does not",
        ),
        ("state_dict", "holds weights or a training checkpoint (OrderedDict), not a model"),
    ],
)
def test_the_torch_backend_never_unpickles_a_file_that_is_not_torchscript(tmp_path, holds, said):
    # The torch backend fell back to torch.load(weights_only=False) for any file TorchScript
    # could not read: a pickle runs the code it names while it loads, before any warning is
    # read, and a pickled nn.Module then ran as the model.
    import torch

    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    obj = {
        "code": {"model": _RunsCodeWhenUnpickled(marker)},
        "module": torch.nn.Identity(),
        "state_dict": torch.nn.Conv2d(3, 3, 1).state_dict(),
    }[holds]
    torch.save(obj, path)
    with pytest.warns(UserWarning, match="loading it unverified"):
        with pytest.raises(ModelError) as info:
            create_backend("torch", model=path, device="cpu")
    assert not marker.exists(), "the file's code ran"
    msg = str(info.value)
    assert msg.startswith(f"cannot load model {path}: {said}"), msg
    assert "torch.jit.script(model).save(PATH)" in msg and "torch.onnx.export" in msg, msg
    assert "\n" not in msg


@needs_torch
@pytest.mark.parametrize(
    "refusal",
    [
        "Unsupported global: GLOBAL torch.nn.modules.linear.Identity was not an allowed global",
        "Unsupported class torch.nn.modules.linear.Identity",  # torch < 2.5
        "Trying to load unsupported GLOBAL os.system whose module os is blocked.",
    ],
)
def test_each_torch_wording_of_a_refused_class_is_a_pickled_object(tmp_path, monkeypatch, refusal):
    # PyTorch words the refusal of a pickled class its own way by version ("Unsupported
    # class" before 2.5): read as "not TorchScript", it would send a person to export what
    # they already have.
    import pickle

    import torch

    path = tmp_path / "model.pt"
    torch.save(torch.nn.Identity(), path)
    write_manifest(tmp_path, [path.name])

    def load(*args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError(f"Weights only load failed. {refusal}")

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(ModelError) as info:
        create_backend("torch", model=path, device="cpu")
    assert str(info.value).startswith(
        f"cannot load model {path}: a pickled Python object (torch.save(model)), not TorchScript"
    )


@needs_torch
def test_a_torchscript_model_loads_without_torch_s_deprecation_warning(tmp_path):
    # torch >= 2.10 flags TorchScript as deprecated on every load: a deliberate load, not
    # news for a person each time the app or the CLI loads the shipped .ts student.
    path = make_torch_model(tmp_path / "m.ts", "identity")
    write_manifest(tmp_path, [path.name])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_backend("torch", model=path, device="cpu").close()


@needs_torch
def test_the_torch_backend_says_what_a_model_returned_that_is_no_tensor(tmp_path):
    import torch

    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    path = tmp_path / "pair.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Pair()).save(str(path))
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("torch", model=path, device="cpu")
    assert str(info.value) == (
        f"{path}: breaks the model contract: output must be (1, 3, 32, 33) like the input, "
        "got tuple"
    )


@needs_torch
def test_the_torch_backend_refuses_device_cuda_without_cuda(models):
    # `cuda` names the GPU as `gpu` does: refused without CUDA, not run on the CPU.
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for device in ("gpu", "cuda"):
        with pytest.raises(BackendError, match="CUDA is not available in this PyTorch build"):
            backends.TorchBackend(model=models["conv.pt"], device=device)


@needs_torch
@pytest.mark.parametrize("holds", ["onnx", "numpy", "random"])
def test_a_file_that_is_no_pickle_is_not_called_a_pickled_object(tmp_path, holds):
    # torch.load(weights_only=True) words every unpickling failure "Weights only load failed",
    # garbage too: an ONNX model or a NumPy array saved as .pt was "a pickled Python object
    # (torch.save(model))", with advice to export the model it is not.
    path = tmp_path / "model.pt"
    if holds == "onnx":
        path.write_bytes(make_onnx_model(tmp_path / "m.onnx").read_bytes())
    elif holds == "numpy":
        np.save(tmp_path / "a.npy", np.zeros(3))
        path.write_bytes((tmp_path / "a.npy").read_bytes())
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("torch", model=path, device="cpu")
    msg = str(info.value)
    assert msg.startswith(f"cannot load model {path}: not TorchScript ("), msg
    assert "pickled" not in msg and "\n" not in msg, msg


@needs_torch
@pytest.mark.parametrize(
    ("holds", "said"),
    [
        ("module", "a pickled Python object (torch.save(model)), not TorchScript"),
        ("state_dict", "holds weights or a training checkpoint (OrderedDict), not a model"),
    ],
)
def test_a_file_in_torch_s_legacy_format_is_told_apart_too(tmp_path, holds, said):
    # The legacy format (torch < 1.6, or _use_new_zipfile_serialization=False) cannot be
    # memory-mapped: it is read as before.
    import torch

    path = tmp_path / "model.pt"
    obj = torch.nn.Identity() if holds == "module" else torch.nn.Conv2d(3, 3, 1).state_dict()
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("torch", model=path, device="cpu")
    assert str(info.value).startswith(f"cannot load model {path}: {said}"), str(info.value)


@needs_torch
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc (Linux)"
)
def test_a_large_checkpoint_is_described_without_reading_its_weights(tmp_path):
    # Telling a checkpoint from a pickled module read every tensor into memory: a training
    # checkpoint of some GB given as the model cost that much memory, and seconds, to say so.
    import textwrap

    import torch

    path = tmp_path / "best.pt"
    torch.save({"model": {"w": torch.zeros(64, 1024, 1024)}, "step": 1}, path)  # 256 MiB
    # VmHWM, not getrusage's ru_maxrss: a child inherits that from pytest's own peak.
    script = textwrap.dedent(
        f"""
        import re
        from pathlib import Path
        from engine.backends import ModelError, create_backend
        import torch

        def peak_kib():
            status = Path("/proc/self/status").read_text()
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))

        before = peak_kib()
        try:
            create_backend("torch", model={str(path)!r}, device="cpu")
        except ModelError as exc:
            print(exc)
        print((peak_kib() - before) // 1024)
        """
    )
    proc = _run_python(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said, grew_mib = proc.stdout.strip().splitlines()
    assert "holds weights or a training checkpoint (dict)" in said, said
    assert int(grew_mib) < 64, f"peak memory grew {grew_mib} MiB describing a 256 MiB file"


@needs_torch
def test_a_torchscript_archive_that_fails_to_load_is_called_one(tmp_path):
    # A damaged archive, or one saved by a newer PyTorch, was "not TorchScript", after
    # torch.load's own warning that it was "dispatching to 'torch.jit.load'" (it is not).
    import zipfile

    import torch

    good = tmp_path / "good.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates jit
        torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(good))
    path = tmp_path / "model.ts"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/code/" in info.filename and info.filename.endswith(".py"):
                data = data.replace(b"def forward(", b"def forward(((")  # code it cannot parse
            dst.writestr(info.filename, data)
    write_manifest(tmp_path, [path.name])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelError) as info:
            create_backend("torch", model=path, device="cpu")
    msg = str(info.value)
    assert msg.startswith(
        f"cannot load model {path}: a TorchScript archive PyTorch {torch.__version__} cannot "
        "load (damaged, or saved by a newer PyTorch): "
    ), msg
    assert "\n" not in msg
    assert not [w for w in caught if "torch.load" in str(w.message)], [
        str(w.message) for w in caught
    ]


def _one_side_fixed(path: Path, axis: int, size: int) -> Path:
    """The identity contract model with input and output dimension ``axis`` (2: H, 3: W) fixed."""
    import onnx

    make_onnx_model(path, kind="identity")
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[axis]
        dim.Clear()
        dim.dim_value = size
    onnx.save(model, str(path))
    write_manifest(path.parent, [path.name])
    return path


@pytest.mark.parametrize(
    ("axis", "ok", "wrong", "said"),
    [
        (
            2,
            (48, 64),
            (40, 64),
            "a fixed input height of 48 (input (1, 3, 48, W)) and runs only "
            "frames 48 pixels high, frame is 64x40",
        ),
        (
            3,
            (40, 48),
            (40, 64),
            "a fixed input width of 48 (input (1, 3, H, 48)) and runs only "
            "frames 48 pixels wide, frame is 64x40",
        ),
    ],
)
@pytest.mark.parametrize("io_binding", [True, False])
def test_a_model_with_one_fixed_side_names_it_and_the_frames_it_runs(
    tmp_path, axis, ok, wrong, said, io_binding
):
    # Only a model with both sides fixed got a message of its own; (1, 3, 720, W) failed every
    # frame with ONNX Runtime's "Got invalid dimensions for input ... index: 2 Got: 360
    # Expected: 720", over three lines.
    path = _one_side_fixed(tmp_path / "fixed.onnx", axis, 48)
    be = OnnxBackend(model=path, io_binding=io_binding)
    rng = np.random.default_rng(0)
    good = rng.integers(0, 256, (*ok, 3), dtype=np.uint8)
    for _ in range(2):  # a refused frame leaves the backend as it was
        np.testing.assert_array_equal(be.process(good), good)
        with pytest.raises(BackendError) as info:
            be.process(np.zeros((*wrong, 3), np.uint8))
        assert str(info.value) == f"{path} has {said}: export it with dynamic H and W"
    be.close()


@pytest.mark.parametrize("io_binding", [True, False])
def test_a_fixed_size_model_gives_its_size_and_the_frames_as_w_x_h(
    tmp_path: Path, io_binding: bool
) -> None:
    # The frame was "(75, 101)", (H, W), where the status line says 101x75. Not square: the
    # model's own size is W x H too.
    path = _fixed_size_model(tmp_path / "fixed.onnx", 48, height=32)
    write_manifest(tmp_path, [path.name])
    with OnnxBackend(model=path, io_binding=io_binding) as be:
        with pytest.raises(BackendError) as info:
            be.process(np.zeros((40, 64, 3), np.uint8))
    assert str(info.value) == (
        f"{path} has a fixed input size 48x32 (input (1, 3, 32, 48)), frame is 64x40: "
        "export it with dynamic H and W"
    )


@pytest.mark.parametrize(
    ("said", "contract"),
    [
        # The runtimes' words for a graph that cannot take the size, as `_SHAPE_FAILURE` lists.
        ("Attempting to broadcast an axis by a dimension other than 1. 96 by 101", True),
        ("Argument shapes are inconsistent", True),
        ("Check 'dim index: 2 Mismatch' failed", True),
        ("The size of tensor a (96) must match the size of tensor b (101)", True),
        ("Broadcast failed", True),
        ("out of memory", False),
    ],
)
def test_a_runtime_failure_about_shapes_names_the_contract(said: str, contract: bool) -> None:
    line = backends._failed_at("m.onnx failed on a 101x75 frame", RuntimeError(said))
    assert line.startswith("m.onnx failed on a 101x75 frame: ")
    assert line.endswith(said)
    assert ("the model contract asks for any H and W" in line) is contract, line


@pytest.mark.parametrize(
    ("size", "out", "said"),
    [
        ((96, 64), (192, 128), " (2x its input)"),
        ((96, 48), (64, 32), " (0.667x its input)"),
        ((96, 64), (64, 32), " (0.667x its width, 0.5x its height)"),
        ((96, 64), (-1, 64), ""),  # a side left dynamic: unknown
        ((96, 64), (96, "?"), ""),
    ],
)
def test_size_ratio_says_how_an_output_relates_to_its_input(
    size: tuple[int, int], out: tuple[object, object], said: str
) -> None:
    assert backends._size_ratio(*size, *out) == said


def _needs_multiple_of_16(path: Path) -> Path:
    """A model that pools 16x16 and upsamples back, with no padding inside: it runs sides of a
    multiple of 16 only (a frame 101 wide meets a 96-wide tensor), listed in a manifest."""
    from contract_models import _save_onnx
    from onnx import TensorProto, helper, numpy_helper

    nchw = [1, 3, "H", "W"]
    scales = numpy_helper.from_array(np.array([1, 1, 16, 16], np.float32), "scales")
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["input"], ["p"], kernel_shape=[16, 16], strides=[16, 16]
            ),
            helper.make_node("Resize", ["p", "", "scales"], ["up"], mode="nearest"),
            helper.make_node("Sub", ["input", "up"], ["detail"]),
            helper.make_node("Add", ["input", "detail"], ["output"]),
        ],
        "m16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, nchw)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, nchw)],
        initializer=[scales],
    )
    _save_onnx(graph, path)
    write_manifest(path.parent, [path.name])
    return path


@pytest.mark.parametrize("name", MODEL_BACKENDS)
def test_a_model_that_needs_a_multiple_of_16_names_the_size_and_the_contract(
    tmp_path: Path, name: str
) -> None:
    # The error was the runtime's alone: "... Attempting to broadcast an axis by a dimension
    # other than 1. 96 by 101", nothing of the frame's size or of what the contract asks.
    path = _needs_multiple_of_16(tmp_path / "m16.onnx")
    contract = (
        "the model contract asks for any H and W (>= 16), a model padding inside itself to the "
        "multiple it needs, as the shipped students do; the runtime said: "
    )
    with create_backend(name, model=path, device="cpu") as be:
        ok = np.full((64, 96, 3), 128, np.uint8)
        np.testing.assert_array_equal(be.process(ok), ok)
        with pytest.raises(BackendError) as info:
            be.process(np.full((75, 101, 3), 128, np.uint8))  # OpenVINO: its dynamic model
        assert str(info.value).startswith(f"{path} failed on a 101x75 frame: {contract}")
        if name == "openvino":
            with pytest.raises(BackendError) as info:
                be.prepare((101, 75))  # the size's own compile, as a stream's second frame
            said = str(info.value)
            assert said.startswith(f"OpenVINO cannot compile {path} at 101x75: {contract}"), said


@pytest.mark.parametrize("name", [*MODEL_BACKENDS, "auto"])
def test_a_model_moved_without_its_weights_file_names_it_on_every_backend(
    tmp_path: Path, name: str
) -> None:
    # ONNX Runtime said "External data path does not exist", OpenVINO (and `auto`, which tries
    # it first) "Invalid usage of method for externally stored data".
    pytest.importorskip("torch")
    from contract_models import make_external_data_model

    path = make_external_data_model(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelError) as info:
        create_backend(name, model=path)
    assert str(info.value) == (
        f"cannot load model {path}: its weights file m.onnx.data is missing "
        f"(next to the .onnx, in {tmp_path})"
    )


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_an_unlisted_model_with_its_weights_file_loads_wherever_the_process_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The weights file is looked for beside the model, not in the working folder, and only a
    # file will do (a folder of that name is still "missing").
    pytest.importorskip("torch")
    from contract_models import make_external_data_model

    path = make_external_data_model(tmp_path / "models" / "m.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with create_backend("onnx", model=path) as be:
        assert be.process(np.zeros((24, 32, 3), np.uint8)).shape == (24, 32, 3)
    data = path.parent / "m.onnx.data"
    data.unlink()
    data.mkdir()
    with pytest.raises(ModelError, match="its weights file m.onnx.data is missing"):
        create_backend("onnx", model=path)


@pytest.mark.parametrize(
    "name", [*MODEL_BACKENDS, pytest.param("torch", marks=needs_torch), "auto"]
)
def test_a_model_folder_is_said_to_be_one_with_the_model_files_in_it(tmp_path, name):
    # It was "model file not found: weights" (the app's banner said so too), for a folder that
    # holds the very files meant.
    for file in ("b.onnx", "a.ts", "notes.txt", "ir.xml", "ir.bin", "lone.xml"):
        (tmp_path / file).write_bytes(b"")
    (tmp_path / "sub.onnx").mkdir()  # a folder, whatever its name
    with pytest.raises(ModelError) as info:
        create_backend(name, model=tmp_path)
    assert str(info.value) == (
        f"model {tmp_path} is a folder: give one of the model files in it (a.ts, b.onnx, ir.xml)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError) as info:
        create_backend(name, model=empty)
    assert str(info.value) == (
        f"model {empty} is a folder and holds no model file "
        "(.onnx, .pt, .pth, .ts, .torchscript, .jit, .xml): give a model file"
    )


def test_a_long_model_folder_names_its_first_files_and_a_count(tmp_path):
    for i in range(11):
        (tmp_path / f"m{i:02d}.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match=r"\(m00.onnx, .*, m07.onnx, and 3 more\)$"):
        backends.open_model(tmp_path)


def test_a_model_folder_names_files_whatever_the_case_of_their_suffix_and_no_zero_more(
    tmp_path,
):
    # A suffix in capitals (a copy made on Windows) is a model file's too; and exactly as many
    # files as are named is no ", and 0 more".
    for i in range(7):
        (tmp_path / f"m{i}.onnx").write_bytes(b"")
    (tmp_path / "STUDENT.ONNX").write_bytes(b"")
    with pytest.raises(ModelError) as info:
        backends.open_model(tmp_path)
    names = ", ".join(["STUDENT.ONNX", *(f"m{i}.onnx" for i in range(7))])
    assert str(info.value).endswith(f"give one of the model files in it ({names})")


def test_a_model_folder_that_cannot_be_listed_is_still_said_to_be_a_folder(tmp_path, monkeypatch):
    # The folder's files are named only as a help: a folder this process may not list still
    # gets the reason the model cannot load, not a PermissionError's traceback.
    def refuse(self):  # noqa: ANN001, ANN202
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(ModelError) as info:
        backends.open_model(tmp_path)
    assert str(info.value) == f"model {tmp_path} is a folder: give a model file, not a folder"


def test_a_folder_named_like_a_student_is_not_the_default_model(tmp_path, monkeypatch):
    # An unpacked archive or a failed copy can leave a folder of the model's name: the other
    # student, a file, is the default.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    (tmp_path / "student_fast.onnx").mkdir()
    make_onnx_model(tmp_path / "student.onnx", "identity")
    assert resolve_default_model(prefer_gpu=False) == tmp_path / "student.onnx"


def test_a_model_path_starting_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    # A service file or an IDE's run configuration hands "~/..." over unexpanded.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    path = make_onnx_model(tmp_path / "mine.onnx", "identity")
    write_manifest(tmp_path, [path.name])
    be = create_backend("onnx", model="~/mine.onnx")
    assert be.model.path == path
    be.close()


def test_an_unlisted_model_is_warned_of_once_at_the_line_that_loads_it(tmp_path):
    # create_backend checks the file once and hands the backend the checked file: checked
    # again, it would be hashed and warned of twice. The warning names the caller's line.
    path = make_onnx_model(tmp_path / "mine.onnx", "identity")
    for name, load in (
        ("onnx", lambda: create_backend("onnx", model=path)),
        ("auto", lambda: create_backend("auto", model=path)),
        ("class", lambda: OnnxBackend(model=path)),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load().close()
        said = [w for w in caught if "not listed in a manifest.json" in str(w.message)]
        assert len(said) == 1, [str(w.message) for w in said]
        assert said[0].filename == __file__, name  # `auto` opens it a call deeper: the same


@pytest.mark.parametrize(
    ("file", "listed"),
    [
        pytest.param("m.bin", True, marks=needs_torch, id="listed-torchscript"),
        pytest.param("MINE.TS", False, marks=needs_torch, id="capital-suffix"),
        ("mine.model", False),  # nothing says: ONNX, the format auto tries first
    ],
)
def test_auto_runs_a_model_on_the_runtime_its_format_needs(tmp_path, file, listed):
    # The manifest's word, then the suffix in any case, say the format: a listed TorchScript
    # file (or a .TS one) goes to torch, not through the ONNX runtimes.
    path = tmp_path / file
    if file == "mine.model":
        make_onnx_model(path, "identity")
    else:
        make_torch_model(path, "identity")
    if listed:
        write_manifest(tmp_path, {file: {"format": "torchscript"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # loading it unverified
        be = create_backend("auto", model=path)
    onnx_first = "openvino" if HAS_OPENVINO else "onnx"
    assert be.name == (onnx_first if file == "mine.model" else "torch")
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert np.array_equal(be.process(rgb), rgb)
    be.close()


@pytest.mark.parametrize("io_binding", [True, False])
def test_onnx_runtime_output_of_another_size_at_run_is_a_contract_break(
    tmp_path, capfd, io_binding
):
    # Bound, ONNX Runtime failed with a paragraph on pre-allocated OrtValues (and printed its
    # own red log line with C++ paths to stderr first); unbound, the result buffer was handed
    # back unwritten: a blank frame, exit 0.
    path = make_bad_onnx_model(tmp_path / "half.onnx", "halves")
    write_manifest(tmp_path, [path.name])
    be = OnnxBackend(model=path, io_binding=io_binding)
    capfd.readouterr()
    with pytest.raises(ModelError) as info:
        be.process(np.full((40, 64, 3), 200, np.uint8))
    assert str(info.value) == (
        f"{path}: breaks the model contract: output must be (1, 3, 40, 64) like the input, "
        "got (1, 3, 20, 32)"
    )
    assert "onnxruntime" not in capfd.readouterr().err


def _torchscript(path: Path, kind: str) -> Path:
    """A TorchScript model that passes the load probe (32x33) and breaks on larger frames."""
    import torch

    class Breaks(torch.nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[2] <= 32:
                return x
            if self.kind == "fails":
                return x.reshape(1, 3, 1000, -1)
            if self.kind == "pooled":
                return x.mean(dim=(2, 3), keepdim=True)
            return x[:, :, ::2, ::2]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates jit
        torch.jit.script(Breaks(kind)).save(str(path))
    write_manifest(path.parent, [path.name])
    return path


@needs_torch
@pytest.mark.parametrize(
    ("kind", "said"),
    [
        # TorchScript's message quotes the model's code twice with "<--- HERE" marks: 17 lines.
        (
            "fails",
            "failed on a 64x40 frame: RuntimeError: shape '[1, 3, 1000, -1]' is invalid "
            "for input of size 7680",
        ),
        # Broadcast over the whole frame: a flat grey picture, exit 0.
        (
            "pooled",
            ": breaks the model contract: output must be (1, 3, 40, 64) like the input, "
            "got (1, 3, 1, 1)",
        ),
        # "The size of tensor a (64) must match the size of tensor b (32) at non-singleton ..."
        (
            "halved",
            ": breaks the model contract: output must be (1, 3, 40, 64) like the input, "
            "got (1, 3, 20, 32)",
        ),
    ],
)
def test_a_torchscript_model_failing_on_a_frame_says_so_in_one_line(tmp_path, kind, said):
    path = _torchscript(tmp_path / f"{kind}.ts", kind)
    be = create_backend("torch", model=path, device="cpu")
    with pytest.raises((BackendError, ModelError)) as info:
        be.process(np.full((40, 64, 3), 200, np.uint8))
    assert str(info.value) == f"{path}{' ' if kind == 'fails' else ''}{said}"


@needs_torch
def test_a_torchscript_model_failing_its_load_probe_says_so_in_one_line(tmp_path):
    import torch

    class Refuses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(1, 3, 1000, -1)

    path = tmp_path / "refuses.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Refuses()).save(str(path))
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("torch", model=path, device="cpu")
    assert str(info.value) == (
        f"{path}: breaks the model contract: a (1, 3, H, W) input fails: RuntimeError: shape "
        "'[1, 3, 1000, -1]' is invalid for input of size 3168"
    )


@pytest.mark.parametrize(
    ("platform", "variable", "default"),
    [("linux", "XDG_CACHE_HOME", (".cache",)), ("win32", "LOCALAPPDATA", ("AppData", "Local"))],
)
@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_an_empty_or_relative_cache_variable_is_ignored(
    tmp_path, monkeypatch, platform, variable, default, value
):
    # The XDG spec: an empty or relative XDG_CACHE_HOME is invalid and ignored. Taken as given,
    # TensorRT's engine cache went to ./sharpcam/tensorrt in whatever folder the app started in.
    monkeypatch.setattr(backends.sys, "platform", platform)
    monkeypatch.setattr(backends.Path, "home", lambda: tmp_path)
    monkeypatch.setenv(variable, value)
    assert backends.user_cache_dir() == tmp_path.joinpath(*default, "sharpcam")
    monkeypatch.setenv(variable, str(tmp_path / "mine"))  # an absolute one is still used
    assert backends.user_cache_dir() == tmp_path / "mine" / "sharpcam"


@needs_openvino
def test_openvino_prepares_a_size_beside_the_one_in_use_without_dropping_it(models, monkeypatch):
    # At 4K, ScaledBackend readying the next scale on its own thread dropped the size in use
    # from the cache (over cache_pixels), and the stream compiled it again on its thread.
    be = backends.OpenVinoBackend(
        model=models["conv.onnx"], precision="f32", cache_pixels=96 * 128 + 1
    )
    compiles: list[tuple[int, int]] = []
    real = be._compile
    monkeypatch.setattr(be, "_compile", lambda h, w: compiles.append((h, w)) or real(h, w))
    frame = np.zeros((96, 128, 3), np.uint8)
    be.process(frame)
    be.process(frame)  # met again: compiled for itself, and in use
    assert be.is_prepared((128, 96)) and not be.is_prepared((160, 112))
    be.prepare((160, 112), beside=True)
    assert be.is_prepared((160, 112)) and be.is_prepared((128, 96))  # over the limit, kept
    compiled = len(compiles)
    be.process(frame)
    assert len(compiles) == compiled  # the size in use runs on without a compile
    # A stream's own prepare (warm_up, a new size) drops what is no longer in use.
    be.prepare((72, 80))
    assert be.is_prepared((72, 80)) and not be.is_prepared((128, 96))
    be.close()


@needs_openvino
def test_a_size_prepared_beside_the_stream_is_offered_only_after_its_first_inference(
    models, monkeypatch
):
    # The cache offered the request before the helper's first inference on it: the stream
    # stepped and ran the same request at once, and got the zeros in its frame (or a
    # corrupted heap).
    be = backends.OpenVinoBackend(model=models["conv.onnx"], precision="f32")
    seen: list[bool] = []

    class Request:
        def __init__(self, real):  # noqa: ANN001
            self._real = real

        def infer(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen.append(be.is_prepared((160, 112)))
            return self._real.infer(*args, **kwargs)

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self._real, name)

    class Compiled:
        def __init__(self, real):  # noqa: ANN001
            self._real = real

        def create_infer_request(self):  # noqa: ANN202
            return Request(self._real.create_infer_request())

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self._real, name)

    real = be._compile
    monkeypatch.setattr(be, "_compile", lambda h, w: Compiled(real(h, w)))
    be.prepare((160, 112), beside=True)
    assert seen == [False] and be.is_prepared((160, 112))
    be.close()


@needs_openvino
def test_openvino_compiles_a_frame_size_only_once_it_repeats(models, monkeypatch):
    # A folder of photos of mixed sizes compiled a model per photo (0.3-0.9 s each, 10x ONNX
    # Runtime's time) and kept eight of them (3.5 GB of 12 MP photos).
    be = backends.OpenVinoBackend(
        model=models["conv.onnx"], precision="f32", cache_pixels=2 * 96 * 128
    )
    compiles: list[tuple[int, int]] = []
    real = be._compile
    monkeypatch.setattr(be, "_compile", lambda h, w: compiles.append((h, w)) or real(h, w))
    rng = np.random.default_rng(0)
    frames = {s: rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in [(96, 128), (80, 72)]}
    ref = backends.OnnxBackend(model=models["conv.onnx"], device="cpu")
    once = {s: be.process(f).copy() for s, f in frames.items()}  # met once: the dynamic model
    assert compiles == [(-1, -1)]
    again = be.process(frames[(96, 128)]).copy()  # met again: its own static model
    assert compiles == [(-1, -1), (96, 128)]
    be.process(frames[(96, 128)])
    assert len(compiles) == 2  # cached
    for s, f in frames.items():
        np.testing.assert_allclose(once[s], ref.process(f), atol=1)
    np.testing.assert_allclose(again, once[(96, 128)], atol=1)
    # `prepare` (what warm_up calls before a stream) compiles at once; and the cache keeps
    # cache_pixels at most: the 96x128 model is dropped for 112x160, the newest stays.
    backends.warm_up(be, (160, 112))
    assert compiles[-1] == (112, 160)
    assert list(be._compiled) == [(112, 160)]
    be.process(rng.integers(0, 256, (112, 160, 3), dtype=np.uint8))
    assert compiles[-1] == (112, 160) and len(compiles) == 3
    # The scaled path prepares the size its model will see.
    scaled = backends.ScaledBackend(be, 0.5)
    scaled.prepare((320, 224))
    assert compiles[-1] == backends.scaled_size((320, 224), 0.5, scaled.multiple)[::-1]
    ref.close()
    be.close()


@needs_openvino
def test_two_sizes_prepared_beside_the_stream_in_a_row_keep_the_size_in_use(models):
    # ScaledBackend readies one scale after another beside the stream: the size the stream
    # runs is the one its frames last had, not the one prepared last.
    be = backends.OpenVinoBackend(
        model=models["conv.onnx"], precision="f32", cache_pixels=96 * 128 + 1
    )
    frame = np.zeros((96, 128, 3), np.uint8)
    be.process(frame)
    be.process(frame)  # compiled for itself, and in use
    be.prepare((160, 112), beside=True)
    be.prepare((144, 104), beside=True)
    assert be.is_prepared((128, 96)) and be.is_prepared((144, 104))
    be.close()


@needs_openvino
def test_openvino_keeps_cache_size_sizes_and_cache_pixels_pixels_least_recently_used_out(models):
    be = backends.OpenVinoBackend(model=models["conv.onnx"], precision="f32", cache_size=2)
    be.prepare((128, 96))
    be.prepare((160, 112))
    assert be.is_prepared((128, 96)) and be.is_prepared((160, 112))
    be.process(np.zeros((96, 128, 3), np.uint8))  # 128x96 used last: 160x112 goes first
    be.prepare((80, 72))
    assert not be.is_prepared((160, 112))
    assert be.is_prepared((128, 96)) and be.is_prepared((80, 72))
    be.close()
    # Exactly cache_pixels pixels stay (the load's own small size is dropped for them).
    be = backends.OpenVinoBackend(
        model=models["conv.onnx"], precision="f32", cache_pixels=128 * 96 + 160 * 112
    )
    be.prepare((128, 96))
    be.prepare((160, 112))
    assert be.is_prepared((128, 96)) and be.is_prepared((160, 112))
    be.close()


@needs_openvino
def test_openvino_compiles_a_size_met_again_after_others_met_once(models, monkeypatch):
    # Photos of a few sizes, interleaved: each size is compiled on its second photo, however
    # many other sizes came between.
    be = backends.OpenVinoBackend(model=models["conv.onnx"], precision="f32")
    sizes = [(96, 128), (80, 72), (112, 160), (72, 88)]
    for h, w in [*sizes, sizes[0]]:
        be.process(np.zeros((h, w, 3), np.uint8))
    assert be.is_prepared((128, 96))
    assert not any(be.is_prepared((w, h)) for h, w in sizes[1:])
    be.close()


@needs_openvino
def test_openvino_says_at_which_frame_size_it_cannot_compile(models, monkeypatch):
    be = backends.OpenVinoBackend(model=models["conv.onnx"], precision="f32")

    class Core:
        def compile_model(self, *args: object) -> None:
            raise RuntimeError("Exception from src/plugin.cpp:1:\nout of memory")

    monkeypatch.setattr(be, "_core", Core())
    with pytest.raises(BackendError) as info:
        be.prepare((128, 96))
    assert str(info.value) == (
        f"OpenVINO cannot compile {models['conv.onnx']} at 128x96: out of memory"
    )
    be.close()


@needs_openvino
def test_a_size_under_the_minimum_is_prepared_as_the_padded_size_it_runs_at(models):
    # A thumbnail runs padded up to 16: its size is prepared, and said to be, as that one.
    be = backends.OpenVinoBackend(model=models["conv.onnx"], precision="f32")
    be.prepare((10, 8))
    assert be.is_prepared((10, 8)) and be.is_prepared((16, 16))
    be.close()


@needs_openvino
def test_openvino_output_of_another_size_at_a_first_met_size_is_a_contract_break(tmp_path):
    # A model that crops frames wider than 96 passes the load's probe (96 wide): the first
    # wider frame, run on the dynamic-shape model, is refused in the contract's own words.
    from contract_models import _save_onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([v], np.int64), name)
        for name, v in (("starts", 0), ("ends", 96), ("axes", 3))
    ]
    crop = helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["output"])
    vi = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, None, None])
        for name in ("input", "output")
    ]
    path = _save_onnx(helper.make_graph([crop], "crop", vi[:1], vi[1:], initializer=inits),
                      tmp_path / "crop.onnx")  # fmt: skip
    write_manifest(tmp_path, [path.name])
    be = backends.OpenVinoBackend(model=path, precision="f32")
    with pytest.raises(ModelError) as info:
        be.process(np.zeros((40, 120, 3), np.uint8))
    assert str(info.value) == (
        f"{path}: breaks the model contract: output must be (1, 3, 40, 120) like the input, "
        "got (1, 3, 40, 96)"
    )
    be.close()


@needs_openvino
def test_openvino_loads_a_model_when_its_frontends_cannot_be_asked(models, monkeypatch):
    # The frontend check only spares stderr the noise of the wrong frontend: where it cannot be
    # made, read_model decides (a sound model loads).
    import openvino.frontend

    def broken() -> None:
        raise RuntimeError("no frontends here")

    monkeypatch.setattr(openvino.frontend, "FrontEndManager", broken)
    be = backends.OpenVinoBackend(model=models["conv.onnx"], precision="f32")
    assert be.process(np.zeros((20, 24, 3), np.uint8)).shape == (20, 24, 3)
    be.close()


@needs_openvino
def test_openvino_takes_the_precisions_and_devices_it_documents(models):
    # "f16" (ARM CPUs, Intel GPUs) is one of the precisions it takes; "cuda" names the GPU, as
    # for the other backends: on a machine without an Intel GPU that is said, not run on the CPU.
    try:
        backends.OpenVinoBackend(model=models["conv.onnx"], precision="f16").close()
    except BackendError as exc:  # OpenVINO's own refusal on some CPU: not ours
        assert "precision must be" not in str(exc)
    if "GPU" in backends._ov_core().available_devices:
        pytest.skip("this machine has a GPU OpenVINO runs on")
    for device in ("gpu", "cuda"):
        with pytest.raises(BackendError, match=r"OpenVINO device GPU not available \(available"):
            backends.OpenVinoBackend(model=models["conv.onnx"], device=device)


@needs_openvino
def test_a_damaged_openvino_xml_is_one_line_without_other_frameworks_noise(tmp_path, capfd):
    # read_model tried every frontend: TensorFlow's printed its parse errors to stderr around
    # the error, which then listed "Available frontends: jax paddle ...".
    (tmp_path / "m.xml").write_text("<net></net>")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="not an OpenVINO model \\(damaged, truncated"):
        backends.OpenVinoBackend(model=tmp_path / "m.xml")
    err = capfd.readouterr().err
    assert "tensorflow" not in err.lower() and "frontends" not in err, err


def test_physical_cores_are_not_guessed_from_the_logical_count_off_linux(monkeypatch):
    # On Windows and macOS (no affinity call, no /sys) without psutil the logical count came
    # back: a hyper-threaded PC ran ONNX Runtime on twice the threads of its own default.
    import engine.backends as backends

    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for platform in ("win32", "darwin"):
        monkeypatch.setattr(sys, "platform", platform)
        assert backends.physical_cores() is None
    monkeypatch.undo()
    if hasattr(os, "sched_getaffinity"):  # Linux: counted, within the CPUs allowed
        assert 1 <= backends.physical_cores() <= len(os.sched_getaffinity(0))


def _linux_cpus(monkeypatch: pytest.MonkeyPatch, siblings: dict[int, str | None]) -> None:
    """Linux without psutil, allowed the CPUs of ``siblings``: each CPU's thread_siblings_list
    (None: it cannot be read)."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(siblings), raising=False)
    real = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self.name != "thread_siblings_list":
            return real(self, *args, **kwargs)
        text = siblings[int(self.parent.parent.name.removeprefix("cpu"))]
        if text is None:
            raise PermissionError(13, "Permission denied", str(self))
        return text + "\n"

    monkeypatch.setattr(Path, "read_text", read_text)


def test_physical_cores_count_hyperthread_siblings_once_on_linux(monkeypatch):
    # Two hyper-threads of one core share its FPUs: four CPUs of two cores are two threads'
    # worth of ONNX Runtime, not four.
    _linux_cpus(monkeypatch, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert backends.physical_cores() == 2
    # A CPU whose topology cannot be read: the logical count, not a guess from the others.
    _linux_cpus(monkeypatch, {0: "0,2", 1: "1,3", 2: "0,2", 3: None})
    assert backends.physical_cores() == 4


def test_physical_cores_stay_within_the_cpus_allowed_on_a_large_host(monkeypatch):
    # psutil and os.cpu_count count the host: 2 CPUs allowed of 32 are 2 threads at most.
    import types

    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(cpu_count=lambda logical: 16))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert backends.physical_cores() == 2


def test_the_cache_folder_on_macos_is_library_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(backends.sys, "platform", "darwin")
    monkeypatch.setattr(backends.Path, "home", lambda: tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # not macOS's variable
    assert backends.user_cache_dir() == tmp_path / "Library" / "Caches" / "sharpcam"


# --------------------------------------------------------------------------- what the runtimes are told


def _recording_sessions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """ONNX Runtime lists CUDA; each session records the providers it was asked for (and runs
    on the CPU: no GPU here)."""
    import onnxruntime as ort

    asked: list[list[str]] = []
    real = ort.InferenceSession

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: object = None, **kw: object) -> None:
            asked.append([p if isinstance(p, str) else p[0] for p in kw["providers"]])
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return asked


def test_onnx_runtime_is_asked_only_for_the_providers_it_lists(models, monkeypatch):
    # Only listed providers are asked for (ONNX Runtime warns of each other one); when none of
    # those wanted is listed, that is said, with what to install for a GPU.
    import onnxruntime as ort

    asked = _recording_sessions(monkeypatch)
    OnnxBackend(model=models["conv.onnx"]).close()
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    gpus = re.escape(str(list(backends.ORT_GPU_PROVIDERS)))
    with pytest.raises(BackendError) as info:
        OnnxBackend(model=models["conv.onnx"], device="gpu")
    assert re.fullmatch(
        rf"onnxruntime has none of the providers {gpus} \(available: "
        r"\['CPUExecutionProvider'\]\); for a GPU install onnxruntime-gpu",
        str(info.value),
    )
    with pytest.raises(BackendError, match=r"none of the providers \['NoSuchExecutionProvider'\]"):
        OnnxBackend(model=models["conv.onnx"], providers=["NoSuchExecutionProvider"])
    assert len(asked) == 1


def test_device_cuda_without_a_gpu_session_fails_like_gpu_and_providers_override_it(
    models, monkeypatch
):
    # onnxruntime-gpu lists CUDA on a machine without a GPU: `cuda` is refused as `gpu` is,
    # not run on the CPU. Providers given by name are what the caller chose, whatever the
    # device.
    import onnxruntime as ort

    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns that CUDA is not really there
        with pytest.raises(BackendError, match=r"no GPU provider came up"):
            OnnxBackend(model=models["conv.onnx"], device="cuda")
        be = OnnxBackend(model=models["conv.onnx"], device="gpu", providers=listed[1:])
    assert be.providers == ["CPUExecutionProvider"]
    be.close()


def test_onnx_runtime_threads_default_to_the_physical_cores(models, monkeypatch):
    # ONNX Runtime's own count ignores the CPUs this process may use (containers, affinity).
    for cores, want in ((3, 3), (None, 0)):  # None: not counted, ONNX Runtime's own default
        monkeypatch.setattr(backends, "physical_cores", lambda cores=cores: cores)
        be = OnnxBackend(model=models["conv.onnx"], device="cpu")
        assert be._session.get_session_options().intra_op_num_threads == want
        be.close()


def _sessions_on(monkeypatch: pytest.MonkeyPatch, first: str) -> list[tuple[object, list]]:
    """ONNX Runtime lists ``first`` and the CPU, and its sessions report ``first`` as what
    runs (they run on the CPU underneath); each records its options and providers."""
    import onnxruntime as ort

    listed = [first, "CPUExecutionProvider"]
    given: list[tuple[object, list]] = []
    real = ort.InferenceSession

    class Session(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: object = None, **kw: object) -> None:
            given.append((sess_options, list(kw["providers"])))
            super().__init__(path, sess_options=sess_options, providers=listed[1:])

        def get_providers(self) -> list[str]:
            return list(listed)

    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    monkeypatch.setattr(ort, "InferenceSession", Session)
    return given


def test_tensorrt_caches_its_engines_where_it_may_write_and_says_where_it_may_not(
    tmp_path, monkeypatch, models
):
    # Without the cache options each start builds every engine again (minutes); a cache
    # TensorRT cannot write is said.
    given = _sessions_on(monkeypatch, "TensorrtExecutionProvider")

    def trt_options() -> dict:
        return dict(p for p in given[-1][1] if isinstance(p, tuple))["TensorrtExecutionProvider"]

    cache = tmp_path / "engines"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxBackend(model=models["identity.onnx"], trt_cache_dir=cache).close()
    assert cache.is_dir()
    assert trt_options() == {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    # A folder it may not write (os.access says so; root may write anywhere) or cannot make.
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != cache and access(p, mode))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    for where in (cache, blocker / "engines"):
        with pytest.warns(UserWarning) as caught:
            OnnxBackend(model=models["identity.onnx"], trt_cache_dir=where).close()
        assert [str(w.message) for w in caught] == [
            f"TensorRT engine cache {where} is not writable; TensorRT rebuilds its engines at "
            "every start"
        ]
        assert trt_options() == {"trt_fp16_enable": True}


def test_directml_runs_without_memory_patterns(models, monkeypatch):
    # DirectML cannot run with memory patterns or parallel execution.
    import onnxruntime as ort

    given = _sessions_on(monkeypatch, "DmlExecutionProvider")
    OnnxBackend(model=models["identity.onnx"]).close()
    options = given[-1][0]
    assert options.enable_mem_pattern is False
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_device_cpu_asks_onnx_runtime_for_the_cpu_only(
    models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --device cpu on a machine with onnxruntime-gpu: CUDA (or TensorRT) would still be asked
    # for first, and the model ran on the GPU the user had kept free.
    asked = _recording_sessions(monkeypatch)
    OnnxBackend(model=models["conv.onnx"], device="cpu").close()
    create_backend("onnx", model=models["conv.onnx"], device="cpu").close()
    assert asked == [["CPUExecutionProvider"], ["CPUExecutionProvider"]]


@pytest.mark.parametrize("name", ["auto", "onnx"])
def test_device_cuda_runs_the_gpu_student_like_device_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # `--device cuda` is a name for the GPU: `auto` said no backend could run on it, and
    # `--backend onnx` ran the CPU student on the GPU instead of the GPU student.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))
    _students(tmp_path)
    _cuda_comes_up(monkeypatch)
    be = create_backend(name, device="cuda")
    assert be.model.path.name == "student.onnx"
    assert be.provider == "ONNX Runtime · CUDAExecutionProvider"
    be.close()


def test_onnx_runtime_gets_the_threads_asked_for_and_does_not_spin(models: dict) -> None:
    # `--threads 1` was ignored (the session took every core), and a session spinning after
    # each run took the cycles the capture and sink threads need on a small CPU.
    be = OnnxBackend(model=models["conv.onnx"], device="cpu", threads=1)
    so = be._session.get_session_options()
    assert so.intra_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    be.close()


@needs_openvino
def test_openvino_gets_the_precision_and_threads_asked_for(
    models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--precision f32` on a bf16 CPU (or `--threads`) was not passed on: OpenVINO ran its own
    # choice, and the bench row labelled f32 timed bf16.
    real = backends._ov_core()
    configs: list[dict] = []

    class Core:
        def compile_model(self, model: object, device: str, config: dict) -> object:
            configs.append(dict(config))
            return real.compile_model(model, device, config)

        def __getattr__(self, item: str) -> object:
            return getattr(real, item)

    monkeypatch.setattr(backends, "_ov_core", Core)
    be = create_backend("openvino", model=models["conv.onnx"], precision="f32", threads=1)
    assert configs and all(
        c.get("INFERENCE_PRECISION_HINT") == "f32" and c.get("INFERENCE_NUM_THREADS") == 1
        for c in configs
    )
    # One frame at a time, each as soon as it can be: THROUGHPUT's streams add latency.
    assert all(c.get("PERFORMANCE_HINT") == "LATENCY" for c in configs)
    be.close()


def test_onnx_runtime_threads_stay_within_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A container allowed 2 CPUs of a 16-core host: psutil counts the host's 16 cores, and
    # ONNX Runtime ran 16 threads on 2 CPUs (several times slower than 2 threads).
    import types

    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(cpu_count=lambda logical: 16))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert backends.physical_cores() == 2


@needs_torch
def test_torch_rounds_and_saturates_its_output_like_the_other_backends(tmp_path: Path) -> None:
    # The torch backend truncated (a whole frame one level darker than ONNX Runtime's) or,
    # unclamped, wrapped an output above 1.0 round to 0: white highlights came out black.
    import torch

    class Brighter(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.7 / 255.0

    path = tmp_path / "brighter.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Brighter()).save(str(path))
    write_manifest(tmp_path, [path.name])
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.ascontiguousarray(np.stack([levels] * 3, -1))
    be = create_backend("torch", model=path, device="cpu")
    want = np.minimum(rgb.astype(np.int16) + 1, 255).astype(np.uint8)
    np.testing.assert_array_equal(be.process(rgb), want)
    be.close()


@needs_openvino
def test_an_operation_openvino_cannot_convert_is_named_in_one_line(tmp_path: Path) -> None:
    # OpenVINO's message began with the C++ file it passed through ("Exception from
    # src/inference/src/cpp/core.cpp:84:"), above the line that names the operation.
    import onnx
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, "H", "W"]) for n in "io"]
    node = helper.make_node("Sharpen", ["i"], ["o"], domain="com.example")
    graph = helper.make_graph([node], "custom", vi[:1], vi[1:])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    write_manifest(tmp_path, [path.name])
    with pytest.raises(ModelError) as info:
        create_backend("openvino", model=path)
    msg = str(info.value)
    assert msg.startswith(f"cannot load model {path}: ") and "\n" not in msg
    assert "com.example.Sharpen" in msg and "Exception from" not in msg


@needs_openvino
def test_openvino_caches_compiled_models_by_their_content_not_their_file(tmp_path):
    # Each start, and each new size, compiled the model while the picture waited (0.6 s a
    # size for the int8 student on two cores, 0.25 from the cache). A file given new weights
    # must never get the old ones' compiled model back.
    import shutil

    d = tmp_path / "models"
    d.mkdir()
    make_onnx_model(d / "a.onnx", "conv", seed=0)
    make_onnx_model(d / "b.onnx", "conv", seed=1)  # same graph and shapes, other weights
    path, cache = d / "m.onnx", tmp_path / "cache"
    frame = np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8)

    def run(source: str, where: Path) -> tuple[np.ndarray, str]:
        shutil.copyfile(d / source, path)
        write_manifest(d, ["m.onnx"])
        with backends.OpenVinoBackend(model=path, precision="f32", cache_dir=where) as be:
            be.prepare((56, 40))
            return be.process(frame).copy(), be.provider

    def entries() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.blob")}

    a, provider = run("a.onnx", cache)
    blobs = entries()
    assert len(blobs) == 2  # the load's trial size and 56x40
    again, provider_again = run("a.onnx", cache)
    assert entries() == blobs  # loaded, not compiled and written again
    assert np.array_equal(again, a) and provider_again == provider
    b, _ = run("b.onnx", cache)  # the same file, new weights
    assert len(entries()) == 4
    assert np.array_equal(b, run("b.onnx", tmp_path / "fresh")[0])
    assert not np.array_equal(b, a)


@needs_openvino
def test_an_openvino_cache_it_cannot_use_is_said_once_and_the_model_still_loads(
    tmp_path, models, monkeypatch
):
    cache = tmp_path / "cache"
    # A folder it may not write (os.access says so; root may write anywhere) or cannot make.
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != cache and access(p, mode))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    for where in (cache, blocker / "openvino"):
        with pytest.warns(UserWarning) as caught:
            be = backends.OpenVinoBackend(model=models["conv.onnx"], cache_dir=where)
        assert [str(w.message) for w in caught] == [
            f"OpenVINO model cache {where} is not writable; OpenVINO compiles its models at "
            "every start"
        ]
        assert "CACHE_DIR" not in be._config
        be.close()
    assert not list(cache.iterdir())
    monkeypatch.undo()

    # One that fails the compile itself (a folder gone bad since the start, an OpenVINO that
    # raises where it could not write): compiled without it, said once at the second failure
    # (the first may be another process's race for the entry), not asked again.
    class Core:
        def __init__(self, real):  # noqa: ANN001
            self._real, self.cached = real, 0

        def compile_model(self, model, device, config):  # noqa: ANN001, ANN202
            if "CACHE_DIR" in config:
                self.cached += 1
                raise RuntimeError("Exception from core.cpp:117:\nCouldn't create directory")
            return self._real.compile_model(model, device, config)

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self._real, name)

    core = Core(backends._ov_core())
    monkeypatch.setattr(backends, "_OV_CORE", core)
    with pytest.warns(UserWarning) as caught:
        be = backends.OpenVinoBackend(model=models["conv.onnx"], cache_dir=tmp_path / "later")
        be.prepare((56, 40))
        be.process(np.zeros((40, 56, 3), np.uint8))
    assert [str(w.message) for w in caught] == [
        f"OpenVINO model cache {tmp_path / 'later'} cannot be used (Couldn't create "
        "directory); OpenVINO compiles its models at every start"
    ]
    assert core.cached == 2
    be.process(np.zeros((48, 64, 3), np.uint8))
    assert core.cached == 2
    be.close()


@needs_openvino
def test_a_cache_entry_another_start_raced_for_keeps_the_cache_and_says_nothing(
    tmp_path, models, monkeypatch
):
    # Two starts on an empty cache: OpenVINO writes an entry in place, the other process's
    # read of it half written deletes it, and this one's chmod of it then fails. That warned
    # that OpenVINO compiles at every start, and dropped the cache for the session.
    class Core:
        def __init__(self, real):  # noqa: ANN001
            self._real, self.raced = real, False

        def compile_model(self, model, device, config):  # noqa: ANN001, ANN202
            if "CACHE_DIR" in config and not self.raced:
                self.raced = True
                raise RuntimeError(
                    "Exception from src/inference/src/dev/core_impl.cpp:1734:\nfilesystem "
                    "error: cannot set permissions: No such file or directory"
                )
            return self._real.compile_model(model, device, config)

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self._real, name)

    monkeypatch.setattr(backends, "_OV_CORE", Core(backends._ov_core()))
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with backends.OpenVinoBackend(model=models["conv.onnx"], cache_dir=cache) as be:
            be.prepare((56, 40))
            assert be._config.get("CACHE_DIR") == str(cache)
    assert len(list(cache.glob("*.blob"))) == 1  # 56x40's; the trial size's raced


def test_the_openvino_cache_drops_its_least_recently_used_entries_over_its_limit(tmp_path):
    # One entry per model, size and setting: a folder of photos of mixed sizes grew it without
    # end.
    sizes = {"old.blob": 300, "used.blob": 300, "newer.blob": 300, "newest.blob": 300}
    for i, (name, size) in enumerate(sizes.items()):
        (tmp_path / name).write_bytes(b"x" * size)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    os.utime(tmp_path / "used.blob", (5000, 1001))  # read since (a hit)
    (tmp_path / "other.txt").write_bytes(b"x" * 5000)  # not an entry: not counted, kept
    backends._prune_cache(tmp_path, 700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newest.blob", "other.txt", "used.blob"]
    backends._prune_cache(tmp_path, 10)  # the newest stays, however large
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "used.blob"]
    backends._prune_cache(tmp_path / "missing", 10)  # nothing to prune: no error


@needs_openvino
def test_openvino_prunes_its_cache_as_it_compiles(tmp_path, models, monkeypatch):
    monkeypatch.setattr(backends, "OPENVINO_CACHE_BYTES", 1)
    with backends.OpenVinoBackend(model=models["conv.onnx"], cache_dir=tmp_path) as be:
        assert len(list(tmp_path.glob("*.blob"))) == 1
        be.prepare((56, 40))
        assert len(list(tmp_path.glob("*.blob"))) == 1


@needs_openvino
def test_openvino_caches_in_the_user_cache_folder_by_default(tmp_path, models, monkeypatch):
    monkeypatch.setattr(backends.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with backends.OpenVinoBackend(model=models["conv.onnx"]):
        assert len(list((tmp_path / "sharpcam" / "openvino").glob("*.blob"))) == 1


def test_the_openvino_cache_stops_pruning_at_its_limit_exactly(tmp_path):
    # "Until it holds limit bytes at most": a folder at its limit keeps every entry.
    for i, name in enumerate(("a.blob", "b.blob", "c.blob")):
        (tmp_path / name).write_bytes(b"x" * 300)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    backends._prune_cache(tmp_path, 900)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.blob", "b.blob", "c.blob"]
    backends._prune_cache(tmp_path, 600)  # the oldest goes, and no more
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.blob", "c.blob"]


@needs_openvino
def test_an_openvino_model_that_fails_to_compile_without_a_cache_is_compiled_once(
    tmp_path, models, monkeypatch
):
    # The retry without CACHE_DIR is for a cache gone bad: with none set, a compile that
    # fails is the model's error, not compiled a second time.
    cache = tmp_path / "cache"
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != cache and access(p, mode))

    class Core:
        def __init__(self, real):  # noqa: ANN001
            self._real, self.calls, self.fail = real, 0, False

        def compile_model(self, model, device, config):  # noqa: ANN001, ANN202
            if self.fail:
                self.calls += 1
                raise RuntimeError("Exception from core.cpp:1:\nunsupported")
            return self._real.compile_model(model, device, config)

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self._real, name)

    core = Core(backends._ov_core())
    monkeypatch.setattr(backends, "_OV_CORE", core)
    with pytest.warns(UserWarning):  # the cache that is not writable
        be = backends.OpenVinoBackend(model=models["conv.onnx"], cache_dir=cache)
    try:
        assert "CACHE_DIR" not in be._config
        core.fail = True
        with pytest.raises(backends.BackendError, match="unsupported"):
            be._compile(40, 56)
        assert core.calls == 1
    finally:
        be.close()
