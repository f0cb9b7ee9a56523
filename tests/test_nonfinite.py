"""A model that outputs NaN or an infinity: the input stands in there, alike on every backend
(ONNX Runtime's conversion made NaN white, OpenVINO's and torch's black), and the engine warns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Engine, open_source
from engine.backends import OnnxBackend, OpenVinoBackend, TorchBackend


def _onnx_model(
    path: Path, nodes: list[tuple[str, list[str], str]], consts: dict[str, float]
) -> Path:
    """A contract-shaped ONNX model (``input`` -> ``output``, float32 ``(1, 3, H, W)``) of
    ``nodes`` (op, inputs, output) with ``consts`` as float32 scalars."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node(op, ins, [out]) for op, ins, out in nodes],
        path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
        initializer=[
            numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


#: ``k`` where the input is 100 / 255, the input elsewhere (ends in ``y``).
_BAD_AT_100 = [
    ("Sub", ["input", "g"], "d"),
    ("Abs", ["d"], "a"),
    ("Less", ["a", "t"], "m"),
    ("Where", ["m", "k", "input"], "y"),
]


def _onnx_bad(path: Path, what: str) -> Path:
    """``what`` where the input is 100 / 255 (grey: neither the 255 ONNX Runtime made of NaN
    nor the 0 OpenVINO and torch made of it), the input elsewhere."""
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 3e38}[what]
    nodes = [*_BAD_AT_100[:-1], ("Where", ["m", "k", "input"], "output")]
    return _onnx_model(path, nodes, {"g": 100 / 255, "t": 1e-3, "k": value})


def _frame() -> np.ndarray:
    img = np.zeros((40, 48, 3), np.uint8)
    img[:] = np.linspace(120, 220, 48).astype(np.uint8)[None, :, None]
    img[5:8, 5:8] = 100  # the bad pixels
    img[20, 30, 0] = 100  # one bad channel
    return img


def _backends(tmp_path: Path, what: str) -> Iterator[Callable[[], Any]]:
    model = _onnx_bad(tmp_path / f"{what}.onnx", what)
    yield lambda: OnnxBackend(model=model, device="cpu")
    yield lambda: OnnxBackend(model=model, device="cpu", io_binding=False)
    if OpenVinoBackend.available():
        yield lambda: OpenVinoBackend(model=model, device="cpu")
    if TorchBackend.available() and what == "nan":
        import torch

        class Bad(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                bad = (x - 100.0 / 255.0).abs() < 1e-3
                return torch.where(bad, torch.full_like(x, float("nan")), x)

        ts = tmp_path / "nan.ts"
        torch.jit.script(Bad()).save(str(ts))
        yield lambda: TorchBackend(model=ts, device="cpu")


@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize("what", ["nan", "inf", "-inf"])
def test_nonfinite_output_shows_the_input_on_every_backend(tmp_path: Path, what: str) -> None:
    img = _frame()
    for make in _backends(tmp_path, what):
        with make() as backend:
            out = backend.process(img).copy()  # OpenVINO: its dynamic-shape model
            assert np.array_equal(out, img), backend.provider
            assert backend.nonfinite_frames == 1, backend.provider
            bad = 1
            if hasattr(backend, "prepare"):  # OpenVINO: the size's static model, as warm_up does
                backend.prepare((img.shape[1], img.shape[0]))
                assert np.array_equal(backend.process(img), img), backend.provider
                bad = 2
            backend.process(np.full_like(img, 30))  # finite: not counted
            assert backend.nonfinite_frames == bad, backend.provider


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_a_frame_run_in_tiles_counts_once_however_many_tiles_gave_nan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A frame over 40 MP runs in tiles, each its own model call: one with three bad tiles
    # was counted as three frames.
    from engine import backends

    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 16 * 16)
    monkeypatch.setattr(backends, "TILE_SIDE", 16)
    monkeypatch.setattr(backends, "TILE_ALIGN", 8)
    monkeypatch.setattr(backends, "TILE_MARGIN", 2)
    img = np.full((40, 48, 3), 150, np.uint8)
    img[2:4, 2:4] = img[30:32, 40:42] = img[20, 20] = 100  # in three tiles far apart
    for make in _backends(tmp_path, "nan"):
        with make() as backend:
            calls: list[int] = []

            def counted(rgb: np.ndarray, infer: Any = backend._infer, calls: list = calls) -> Any:
                calls.append(0)
                return infer(rgb)

            monkeypatch.setattr(backend, "_infer", counted)
            assert np.array_equal(backend.process(img), img), backend.provider
            assert len(calls) > 3 and backend.nonfinite_frames == 1, backend.provider
            backend.process(np.full_like(img, 30))  # finite: not counted
            assert backend.nonfinite_frames == 1, backend.provider
            backend.process(img)
            assert backend.nonfinite_frames == 2, backend.provider


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_the_engine_warns_of_nonfinite_output_once(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "in.png"
    cv2.imwrite(str(path), _frame())
    got: list[np.ndarray] = []

    class Keep:
        def write(self, frame: Any) -> None:
            got.append(frame.image.copy())

        def close(self) -> None:
            pass

    backend = OnnxBackend(model=_onnx_bad(tmp_path / "nan.onnx", "nan"), device="cpu")
    eng = Engine(open_source(str(path), live=False), backend, sinks=[Keep()], live=False)
    eng.start()
    assert eng.wait(20)
    eng.stop()
    assert np.array_equal(got[0], _frame()[:, :, ::-1])
    assert eng.nonfinite_warning and "NaN or infinite" in eng.nonfinite_warning
    assert eng.nonfinite_warning in (eng.stats().warning or "")


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_process_with_a_model_that_gives_nan_keeps_the_input_there_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It exited 0 with no word, the pixels white through ONNX Runtime, black through OpenVINO.
    import cv2

    import main as cli

    source = tmp_path / "in.png"
    cv2.imwrite(str(source), _frame())
    model = _onnx_bad(tmp_path / "nan.onnx", "nan")
    for backend in ("onnx", "openvino"):
        out = tmp_path / f"out_{backend}.png"
        args = ["process", str(source), str(out), "--model", str(model), "--backend", backend]
        assert cli.main(args) == 0
        err = capsys.readouterr().err
        said = "warning: the model gave NaN or infinite values (first in frame 1): the input"
        assert err.count(said) == 1, err
        assert np.array_equal(cv2.imread(str(out)), _frame())


def test_the_shipped_models_go_without_the_search(tmp_path: Path) -> None:
    # Listed in a manifest, a model passed training.export's check, which refuses NaN: the
    # select and the reduction in OpenVINO's graph (1-6 % of a 1280x720 call) are left out.
    from engine.backends import INT8_NAME, weights_dir

    shipped = weights_dir() / INT8_NAME
    with OpenVinoBackend(model=shipped, device="cpu") as backend:
        assert not backend.guarded
        backend.prepare((64, 48))
        assert len(backend._request_for(48, 64).model_outputs) == 1
    with OpenVinoBackend(model=_onnx_bad(tmp_path / "nan.onnx", "nan"), device="cpu") as user:
        assert user.guarded
        user.prepare((64, 48))
        assert len(user._request_for(48, 64).model_outputs) == 2


def _onnx_nan_then_clip(path: Path) -> Path:
    """NaN where the input is 100 / 255, then Clip(0, 1): "clamped inside the graph", as the
    contract (docs/ARCHITECTURE.md) has a model end."""
    consts = {"g": 100 / 255, "t": 1e-3, "k": np.nan, "lo": 0.0, "hi": 1.0}
    return _onnx_model(path, [*_BAD_AT_100, ("Clip", ["y", "lo", "hi"], "output")], consts)


@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize("make", [OnnxBackend, OpenVinoBackend])
def test_nan_before_the_contracts_final_clamp_shows_the_input(
    tmp_path: Path, make: type[Any]
) -> None:
    # OpenVINO's Clamp turns NaN into 0 before a flag on its output could see it: black, and
    # no warning, on the backend `auto` picks first on a CPU.
    img = np.full((40, 48, 3), 150, np.uint8)
    img[5:8, 5:8] = 100
    with make(model=_onnx_nan_then_clip(tmp_path / "nan_clip.onnx"), device="cpu") as backend:
        out = backend.process(img).copy()
        assert out[6, 6].tolist() == [100, 100, 100], out[6, 6]
        assert backend.nonfinite_frames == 1


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_process_says_so_when_it_ends_with_images_skipped_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was said only where `process` ended well: a folder with one unreadable image ended
    # with exit 1 and the NaN-touched outputs went unsaid.
    import cv2

    import main as cli

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _frame())
    (folder / "b.png").write_bytes(b"not a picture")
    model = _onnx_bad(tmp_path / "nan.onnx", "nan")
    args = ["process", str(folder), str(tmp_path / "out"), "--model", str(model)]
    assert cli.main([*args, "--backend", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 images skipped" in err and "gave NaN or infinite values" in err, err


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_huge_finite_output_is_no_nan_and_is_neither_replaced_nor_counted(tmp_path: Path) -> None:
    # 3e38 a pixel overflows a plane's float32 sum, the gate to the search: the search must
    # then find nothing, keep the model's values (clamped: 255) and count no frame, or a
    # model that saturates would be warned of as giving NaN. Nor may the overflow print
    # numpy's "overflow encountered" on the user's console.
    import warnings

    img = _frame()
    want = np.where(img == 100, 255, img).astype(np.uint8)
    for make in _backends(tmp_path, "huge"):
        with make() as backend, warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert np.array_equal(backend.process(img), want), backend.provider
            assert backend.nonfinite_frames == 0, backend.provider


def _with_tail(path: Path, source: Path, tail: list[str]) -> Path:
    """``source``'s model with ``tail`` (ONNX op names: "Relu", "Clip") after its output."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    model.graph.node[-1].output[0] = "t0"
    for i, op in enumerate(tail):
        ins = [f"t{i}", "lo", "hi"] if op == "Clip" else [f"t{i}"]
        out = "output" if i == len(tail) - 1 else f"t{i + 1}"
        model.graph.node.append(helper.make_node(op, ins, [out]))
    for name, value in (("lo", 0.0), ("hi", 1.0)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    onnx.save(model, str(path))
    return path


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_nan_before_a_relu_and_the_final_clip_is_alike_on_every_backend(tmp_path: Path) -> None:
    # ONNX Runtime's Relu keeps NaN (the input shows, and it is counted); OpenVINO's made it
    # 0: black there, and no warning.
    path = _with_tail(tmp_path / "relu_clip.onnx", _onnx_bad(tmp_path / "nan.onnx", "nan"),
                      ["Relu", "Clip"])  # fmt: skip
    img = _frame()
    for make in (OnnxBackend, OpenVinoBackend):
        with make(model=path, device="cpu") as backend:
            assert np.array_equal(backend.process(img), img), make
            assert backend.nonfinite_frames == 1, make


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_nan_before_the_clip_of_an_ir_saved_with_f16_constants_shows_the_input(
    tmp_path: Path,
) -> None:
    # `ovc` and openvino.save_model keep constants in f16 by default: the Clip's bounds come
    # behind a Convert, were taken for varying inputs, and the NaN the clamp had made 0 went
    # black and unsaid, in the ordinary way a user makes an OpenVINO model.
    import openvino as ov

    onnx_path = _onnx_nan_then_clip(tmp_path / "nan_clip.onnx")
    xml = tmp_path / "nan_clip.xml"
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml))
    img = np.full((40, 48, 3), 150, np.uint8)
    img[5:8, 5:8] = 100
    with OpenVinoBackend(model=xml, device="cpu") as backend:
        backend.prepare((48, 40))
        out = backend.process(img).copy()
        assert out[6, 6].tolist() == [100, 100, 100], out[6, 6]
        assert backend.nonfinite_frames == 1


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_an_infinity_the_models_own_clamp_maps_into_range_is_no_fault(tmp_path: Path) -> None:
    # Clip(1 / x, 0, 1) of a black pixel is 1.0, white: the model's own, finite answer. Looked
    # for before the clamp, OpenVINO put the input there and warned; ONNX Runtime did not.
    nodes = [("Div", ["one", "input"], "r"), ("Clip", ["r", "lo", "hi"], "output")]
    path = _onnx_model(tmp_path / "recip.onnx", nodes, {"one": 1.0, "lo": 0.0, "hi": 1.0})
    img = np.full((32, 48, 3), 200, np.uint8)
    img[4:8, 4:8] = 0
    for make in (OnnxBackend, OpenVinoBackend):
        with make(model=path, device="cpu") as backend:
            out = backend.process(img)
            assert (out[4:8, 4:8] == 255).all() and backend.nonfinite_frames == 0, make


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_nan_before_the_clamp_op_of_an_openvino_model_shows_the_input(tmp_path: Path) -> None:
    # A model converted to OpenVINO from PyTorch (torch.clamp) ends in OpenVINO's own Clamp,
    # not an ONNX Clip's Maximum and Minimum: the NaN it makes 0 is looked for before it.
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(str(_onnx_bad(tmp_path / "nan.onnx", "nan")))
    result = model.get_results()[0]
    clamp = ops.clamp(result.input_value(0), 0.0, 1.0)
    result.input(0).replace_source_output(clamp.output(0))
    model.validate_nodes_and_infer_types()
    xml = tmp_path / "nan_clamp.xml"
    ov.save_model(model, str(xml))
    img = _frame()
    with OpenVinoBackend(model=xml, device="cpu") as backend:
        assert np.array_equal(backend.process(img), img)
        assert backend.nonfinite_frames == 1


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_nan_before_the_half_precision_tail_of_a_float32_model_shows_the_input(
    tmp_path: Path,
) -> None:
    # A model run in float16 behind a float32 interface ends in Relu and Clip in float16, then
    # a Cast back: NaN is looked for before the clamp, through the Convert and the Relu too.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(_onnx_bad(tmp_path / "nan.onnx", "nan")))
    model.graph.node[-1].output[0] = "y"
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    model.graph.node.extend(
        [
            helper.make_node("Cast", ["y"], ["h"], to=f16),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
            helper.make_node("Cast", ["c"], ["output"], to=f32),
        ]
    )
    for name, value in (("lo", 0.0), ("hi", 1.0)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float16), name))
    path = tmp_path / "nan_half_tail.onnx"
    onnx.save(model, str(path))
    img = _frame()
    for make in (OnnxBackend, OpenVinoBackend):
        with make(model=path, device="cpu") as backend:
            assert np.array_equal(backend.process(img), img), make
            assert backend.nonfinite_frames == 1, make


# --------------------------------------------------------------------------- 0-255 output


def _mid_range_frame() -> np.ndarray:
    """A textured frame of values well inside 0-255, as a camera's mostly are."""
    rng = np.random.default_rng(3)
    return rng.integers(40, 210, (48, 64, 3), dtype=np.uint8)


def _onnx_x255(path: Path) -> Path:
    """A model that scales its 0-1 input to 0-255, not the contract's 0-1: its output
    clips to white."""
    return _onnx_model(path, [("Mul", ["input", "k"], "output")], {"k": 255})


def _range_backends(model: Path) -> Iterator[Callable[[], Any]]:
    yield lambda: OnnxBackend(model=model, device="cpu")
    yield lambda: OnnxBackend(model=model, device="cpu", io_binding=False)
    if OpenVinoBackend.available():
        yield lambda: OpenVinoBackend(model=model, device="cpu")


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_a_model_whose_output_is_0_to_255_is_counted_once_on_every_backend(
    tmp_path: Path,
) -> None:
    # Its picture came out all white, with no word: NaN got a warning, a saturated output none.
    model = _onnx_x255(tmp_path / "x255.onnx")
    for make in _range_backends(model):
        with make() as backend:
            backend.process(np.zeros((48, 64, 3), np.uint8))  # a warm-up's blank frame
            assert backend.saturated_frames == 0, backend.provider  # says nothing either way
            for _ in range(2):
                assert (backend.process(_mid_range_frame()) == 255).all(), backend.provider
            assert backend.saturated_frames == 1, backend.provider


@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize("kind", ["identity", "sharpen", "shipped"])
def test_a_model_whose_output_is_0_to_1_is_not_counted(tmp_path: Path, kind: str) -> None:
    import shutil

    from engine.bench import textured_frames
    from tests.contract_models import make_onnx_model

    if kind == "shipped":
        shipped = Path(__file__).resolve().parents[1] / "weights" / "student_fast.onnx"
        if not shipped.is_file():
            pytest.skip("no shipped student_fast.onnx")
        # Copied out of its manifest's folder: judged as a user's own model would be.
        model = Path(shutil.copy(shipped, tmp_path / "student_fast.onnx"))
    else:
        model = make_onnx_model(tmp_path / f"{kind}.onnx", kind)
    frames = [_mid_range_frame(), next(iter(textured_frames((320, 256), 1, seed=1)))]
    for make in _range_backends(model):
        for frame in frames:
            with make() as backend:
                backend.process(np.ascontiguousarray(frame))
                assert backend._range_judged, backend.provider
                assert backend.saturated_frames == 0, backend.provider


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_the_engine_and_process_warn_of_0_to_255_output_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    import main as cli

    path = tmp_path / "in.png"
    cv2.imwrite(str(path), _mid_range_frame())
    model = _onnx_x255(tmp_path / "x255.onnx")
    backend = OnnxBackend(model=model, device="cpu")
    eng = Engine(open_source(str(path), live=False), backend, sinks=[], live=False)
    eng.start()
    assert eng.wait(20)
    eng.stop()
    assert eng.range_warning and "0-255, not the contract's 0-1" in eng.range_warning
    assert eng.range_warning in (eng.stats().warning or "")
    assert eng.nonfinite_warning is None

    argv = ["process", str(path), str(tmp_path / "out.png"), "--backend", "onnx"]
    assert cli.main([*argv, "--model", str(model), "--progress", "lines"]) == 0
    err = capsys.readouterr().err
    said = [ln for ln in err.splitlines() if "0-255" in ln]
    assert said == [
        "sharpcam: warning: the model's output looks like 0-255, not the contract's 0-1 "
        "(frame 1 came out almost all white): scale it to 0-1 in the model"
    ], err


@pytest.mark.filterwarnings("ignore:.*unverified")
def test_the_0_to_255_check_waits_for_a_frame_of_enough_mid_range_values(tmp_path: Path) -> None:
    # A few mid-range values on a dark frame (a dark camera, a title card) are too few to judge
    # by: the check waits for a frame where at least a quarter of the values are mid-range.
    model = _onnx_x255(tmp_path / "x255.onnx")
    dark = np.zeros((48, 64, 3), np.uint8)
    dark[:16, :16] = 128  # 768 mid-range values: over 256, under a quarter of 9216
    for make in _range_backends(model):
        with make() as backend:
            backend.process(dark)
            assert not backend._range_judged, backend.provider
            assert backend.saturated_frames == 0, backend.provider
            backend.process(_mid_range_frame())
            assert backend.saturated_frames == 1, backend.provider


@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize(
    ("nodes", "consts"),
    [
        # Twice as bright: every value over 127 clips to white, about half the frame's.
        ([("Mul", ["input", "k"], "output")], {"k": 2.0}),
        # Near white everywhere (250, not 255): a 0-255 model's output clips to 255 exactly.
        ([("Mul", ["input", "z"], "zero"), ("Add", ["zero", "k"], "output")], {"z": 0, "k": 0.98}),
    ],
    ids=["brighter", "near-white"],
)
def test_a_bright_output_in_0_to_1_is_not_taken_for_0_to_255(
    tmp_path: Path, nodes: list[tuple[str, list[str], str]], consts: dict[str, float]
) -> None:
    model = _onnx_model(tmp_path / "bright.onnx", nodes, consts)
    for make in _range_backends(model):
        with make() as backend:
            backend.process(_mid_range_frame())
            assert backend._range_judged, backend.provider
            assert backend.saturated_frames == 0, backend.provider


def test_a_model_listed_in_a_manifest_is_not_judged_for_0_to_255(tmp_path: Path) -> None:
    # As for NaN (see `guarded`): a listed model passed training.export's checks and goes
    # without the cost of the look.
    from tests.contract_models import write_manifest

    model = _onnx_x255(tmp_path / "x255.onnx")
    write_manifest(tmp_path, [model.name])
    for make in _range_backends(model):
        with make() as backend:
            assert not backend.guarded
            backend.process(_mid_range_frame())
            assert not backend._range_judged and backend.saturated_frames == 0, backend.provider
