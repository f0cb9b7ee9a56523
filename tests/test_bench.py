"""engine.bench: the clip, the on-demand pipeline measure, and the report the CLI prints."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from videos import read_video  # noqa: E402

from engine import bench
from engine.backends import create_backend
from engine.manifest import ModelError
from tests.contract_models import make_onnx_model


def _not_dropped(notes: list[str]) -> list[str]:
    """The notes but a row's "dropped frames" one: the live engine drops frames under load
    (measured: 1-4 of 8 with 8 processes on 2 cores), which only a busy machine says."""
    return [n for n in notes if "the live engine dropped frames" not in n]


def test_make_bench_clip_is_a_real_moving_textured_video(tmp_path: Path) -> None:
    for name in ("c.mp4", "c.avi"):
        path = bench.make_bench_clip(tmp_path / name, (96, 64), 12)
        frames = read_video(path)
        assert len(frames) == 12
        assert frames[0].shape == (64, 96, 3)
        assert frames[0].std() > 20  # textured, not flat
        assert np.abs(frames[0].astype(int) - frames[6].astype(int)).mean() > 5  # moving


def test_machine_info_describes_cpu_cores_and_versions() -> None:
    info = bench.machine_info()
    assert info["cores"] >= 1 and info["usable_cores"] >= 1
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["versions"]["opencv"] == cv2.__version__
    assert "numpy" in info["versions"]


class _SlowBackend:
    """Sleeps like a model that takes ``ms`` per frame; records the order of frames seen."""

    name = "slow"
    provider = "sleep"

    def __init__(self, ms: float) -> None:
        self.ms = ms
        self.calls = 0

    def process(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.ms / 1000.0)
        return rgb

    def close(self) -> None:
        pass


def _register_tracked(
    monkeypatch: pytest.MonkeyPatch, *, failing_close: bool = False
) -> list[_SlowBackend]:
    """Registers backend "tracked": instant, and listed in the returned list as it opens."""
    from engine import backends

    opened: list[_SlowBackend] = []

    class Tracked(_SlowBackend):
        def __init__(self, **_options: object) -> None:
            super().__init__(0.0)
            self.closed = False
            opened.append(self)

        def close(self) -> None:
            self.closed = True
            if failing_close:
                raise RuntimeError("the runtime would not let go")

    monkeypatch.setitem(backends.BACKENDS, "tracked", Tracked)
    return opened


@pytest.mark.parametrize("schedule", bench.SCHEDULES)
def test_pipeline_reads_on_demand_so_nothing_is_decoded_for_nothing(
    schedule: str, tmp_path: Path
) -> None:
    # An unpaced file into live slots would decode far ahead and drop nearly everything; read
    # on demand, every frame of the clip is processed once, in order, at the model's pace.
    clip = bench.make_bench_clip(tmp_path / "c.mp4", (64, 48), 10)
    slow = _SlowBackend(15.0)
    m = bench.measure_pipeline(slow, clip, frames=7, warmup=2, schedule=schedule)
    assert not m.errors
    assert m.frames_out == 10 and slow.calls == 10
    assert len(m.intervals_ms) == 6 and len(m.latencies_ms) == 7
    # One frame per model call: never faster than the 15 ms call. The upper bound is loose on
    # purpose (a loaded 2-core CI machine took 35 ms a frame): decoding for nothing is what the
    # counts above catch, and a bound near 15 ms timed the machine, not the schedule.
    assert 15.0 * 0.95 <= 1000 / m.fps < 4 * 15.0
    lat = float(np.median(m.latencies_ms))
    if schedule == "prefetch":
        # decoded as the previous model call starts: waits a whole call in the slot
        assert lat > 24.0
    else:
        # serial and just-in-time: a frame waits for little more than its own model call
        assert lat < 24.0


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule"):
        bench.GatedBackend(_SlowBackend(1.0), bench.DemandGate(), schedule="eager")


def test_run_bench_results_have_exactly_the_keys_and_consistent_numbers() -> None:
    report = bench.run_bench(["passthrough", "unsharp"], sizes=[(64, 48), (80, 48)], frames=3)
    assert [(r.backend, r.size) for r in report.results] == [
        ("passthrough", "64x48"),
        ("unsharp", "64x48"),
        ("passthrough", "80x48"),
        ("unsharp", "80x48"),
    ]
    for r in report.results:
        d = r.as_dict()
        assert tuple(d) == bench.RESULT_KEYS
        assert d["model_ms"] > 0 and d["pipeline_fps"] > 0
        assert d["model_fps"] == pytest.approx(1000.0 / d["model_ms"], rel=0.01)
        assert d["overhead_ratio"] == pytest.approx(d["pipeline_fps"] / d["model_fps"], rel=0.02)
        assert 0 <= d["latency_ms_p50"] <= d["latency_ms_p95"]
    out = report.as_json_dict()
    assert set(out) == {"machine", "results"}
    assert out["machine"]["backends"]["unsharp"].startswith("unsharp")
    table = bench.format_table(report)
    assert "overhead" in table and "passthrough" in table and "80x48" in table


def test_run_bench_denoise_times_the_pipeline_with_noise_reduction_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine import pipeline

    made: list[bool] = []
    real = pipeline.Engine.__init__

    def spy(self, *args, **kwargs) -> None:  # noqa: ANN001
        made.append(kwargs.get("denoise", False))
        real(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Engine, "__init__", spy)
    report = bench.run_bench(["passthrough"], sizes=[(64, 48)], frames=3, denoise=True)
    assert [r.backend for r in report.results] == ["passthrough + denoise"]
    assert made and all(made)


def test_run_bench_skips_model_backends_without_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))  # no shipped weights
    report = bench.run_bench(None, sizes=[(64, 48)], frames=3)
    assert [r.backend for r in report.results] == ["unsharp"]
    # Said once for every model backend, not once more per backend that failed to start.
    (note,) = _not_dropped(report.notes)
    assert "no model" in note and "onnx" in note, note
    # asked for by name, a model backend without a model is an error, not a note
    with pytest.raises(ModelError):
        bench.run_bench(["onnx"], sizes=[(64, 48)], frames=3)


def test_run_bench_with_a_contract_model(tmp_path: Path) -> None:
    model = make_onnx_model(tmp_path / "m.onnx", kind="sharpen")
    report = bench.run_bench(["onnx"], sizes=[(64, 48)], frames=3, model=model)
    (row,) = report.results
    assert row.backend == "onnx"
    assert "ONNX Runtime" in report.machine["backends"]["onnx"]


def _fixed_size_identity(path: Path, h: int, w: int) -> Path:
    """An ONNX identity exported with one input size only (no dynamic H and W)."""
    import onnx
    from onnx import TensorProto, helper

    shape = [1, 3, h, w]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_row_the_model_fails_in_keeps_the_other_rows(tmp_path: Path) -> None:
    # A fixed-size model runs one size under ONNX Runtime: the row at another size raised,
    # and the rows measured before it (and every later one) were lost with it, exit 1.
    model = _fixed_size_identity(tmp_path / "fixed.onnx", 48, 64)
    report = bench.run_bench(
        ["onnx", "unsharp"], sizes=[(64, 48), (80, 48)], frames=2, rounds=1, model=model
    )
    assert [(r.backend, r.size) for r in report.results] == [
        ("onnx", "64x48"),
        ("unsharp", "64x48"),
        ("unsharp", "80x48"),
    ]
    (failed,) = report.failed
    assert failed.startswith("onnx at 80x48: ") and "fixed input size" in failed, failed
    assert any(n.startswith("onnx at 80x48: not measured: ") for n in report.notes), report.notes
    assert report.as_json_dict()["failed"] == [failed]


def test_rows_that_fail_in_the_pipeline_are_each_said_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bench_backend's error already names the row ("unsharp at 64x48: ..."): the note and the
    # JSON's "failed" must not name it twice, and every failed row is listed, not the first.
    def failing(*args: object, **kw: object) -> bench.PipelineMeasure:
        return bench.PipelineMeasure([], [], 0, [RuntimeError("the model failed")])

    monkeypatch.setattr(bench, "measure_pipeline", failing)
    report = bench.run_bench(["unsharp"], sizes=[(64, 48), (80, 48)], frames=2, rounds=1)
    assert report.results == []
    assert report.failed == [
        "unsharp at 64x48: the model failed",
        "unsharp at 80x48: the model failed",
    ]
    assert "unsharp at 80x48: not measured: the model failed" in report.notes, report.notes
    assert report.as_json_dict()["failed"] == report.failed


@pytest.mark.filterwarnings("ignore:.*unverified")
@pytest.mark.parametrize(
    ("op", "said"),
    [
        ("nan", "gave NaN or infinite values"),
        ("x255", "gave 0-255 values, not the contract's 0-1"),
    ],
)
def test_a_model_whose_output_is_unusable_gets_a_note(tmp_path: Path, op: str, said: str) -> None:
    # The table looked like any model's: the engine warns a run of such a model, bench did not.
    from onnx import TensorProto, helper, numpy_helper

    from tests.contract_models import _save_onnx

    nchw = [1, 3, "H", "W"]
    if op == "nan":  # 0 / 0 added to every value
        nodes = [
            helper.make_node("Div", ["k", "k"], ["nan"]),
            helper.make_node("Add", ["input", "nan"], ["output"]),
        ]
        k = 0.0
    else:
        nodes = [helper.make_node("Mul", ["input", "k"], ["output"])]
        k = 255.0
    graph = helper.make_graph(
        nodes,
        op,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, nchw)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, nchw)],
        initializer=[numpy_helper.from_array(np.array(k, np.float32), "k")],
    )
    model = _save_onnx(graph, tmp_path / f"{op}.onnx")
    report = bench.run_bench(["onnx"], sizes=[(64, 48), (80, 48)], frames=2, rounds=1, model=model)
    assert len(report.results) == 2
    assert _not_dropped(report.notes) == [f"onnx: the model {said}: its output is not usable"]


def test_measure_model_reports_the_median() -> None:
    backend = create_backend("unsharp")
    median, times = bench.measure_model(backend, (64, 48), frames=5, warmup=1)
    assert len(times) == 5
    assert median == pytest.approx(float(np.median(times)))


def test_measure_model_times_the_real_duration_of_the_calls() -> None:
    # The median of the recorded times is not enough: a constant in place of the measured
    # time passed. A model that sleeps 15 ms must measure about 15 ms (never less; the upper
    # bound leaves room for a loaded 2-core CI machine).
    median, times = bench.measure_model(_SlowBackend(15.0), (64, 48), frames=5, warmup=1)
    assert len(times) == 5
    assert all(t >= 14.0 for t in times), times
    assert 14.0 <= median < 60.0, times


def test_model_only_calls_run_on_a_worker_thread_like_the_engines() -> None:
    # Timed on the main thread, a TorchScript model measured 5-10x slower than the same
    # calls on the engine's inference thread: "pipeline 3.8x faster than its model".
    threads: list[threading.Thread] = []

    class Records(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            threads.append(threading.current_thread())
            return rgb

    bench.measure_model(Records(0.0), (64, 48), frames=4, warmup=2)
    assert len(threads) == 6
    assert threading.main_thread() not in threads


def test_a_model_failure_in_the_model_only_measure_reaches_the_caller() -> None:
    class Fails(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            raise RuntimeError("no memory at this size")

    with pytest.raises(RuntimeError, match="no memory at this size"):
        bench.measure_model(Fails(0.0), (64, 48), frames=2, warmup=0)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a real SIGINT to this process")
def test_ctrl_c_during_the_model_only_measure_waits_for_the_call_in_progress() -> None:
    # The caller closes the backends once interrupted: never under a running model call.
    # The Ctrl-C comes during the third call, not after a fixed delay: on a loaded CPU a timer
    # fired before the first call had finished, and the count said nothing about waiting.
    state = {"in_call": False, "started": 0, "calls": 0}

    class Slow(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            state["in_call"] = True
            state["started"] += 1
            if state["started"] == 3:
                signal.raise_signal(signal.SIGINT)
            time.sleep(0.05)
            state["calls"] += 1
            state["in_call"] = False
            return rgb

    with pytest.raises(KeyboardInterrupt):
        bench.measure_model(Slow(0.0), (64, 48), frames=1000, warmup=0)
    assert not state["in_call"]
    assert 3 <= state["calls"] < 1000


@pytest.mark.skipif(sys.platform == "win32", reason="needs a real SIGINT to this process")
def test_ctrl_c_during_the_pipeline_measure_waits_for_the_call_in_progress(
    tmp_path: Path,
) -> None:
    # As for the model-only measure: the caller closes the backends once interrupted, and the
    # interpreter exits next; the engine's stop gives up on a model call after 2 s, and a call
    # longer than that (a large size on a CPU) was still running under both.
    clip = bench.make_bench_clip(tmp_path / "clip.mp4", (64, 48), 8)
    state = {"in_call": False, "calls": 0}

    class Slow(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            state["in_call"] = True
            if state["calls"] == 0:
                # Once the engine has started and the measure waits on it.
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            time.sleep(3.0)
            state["calls"] += 1
            state["in_call"] = False
            return rgb

    with pytest.raises(KeyboardInterrupt):
        bench.measure_pipeline(Slow(0.0), clip, frames=4, warmup=0)
    assert not state["in_call"]
    assert state["calls"] == 1


def test_a_model_failing_mid_run_ends_the_measure_at_once(tmp_path: Path) -> None:
    # Live, the engine passes frames over a failed model, so nothing asked the clip for its
    # next frame: the measure waited out its whole timeout (600 s) before saying why.
    class FailsOnThirdCall(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            if self.calls == 2:
                self.calls += 1
                raise RuntimeError("the model broke on its third call")
            return super().process(rgb)

    clip = bench.make_bench_clip(tmp_path / "c.mp4", (64, 48), 10)
    t0 = time.perf_counter()
    m = bench.measure_pipeline(FailsOnThirdCall(1.0), clip, frames=5, warmup=2, timeout_s=60.0)
    assert time.perf_counter() - t0 < 10.0
    assert m.errors and "third call" in str(m.errors[0])


def test_a_scaled_row_that_rounds_back_to_full_size_says_so() -> None:
    # "onnx @0.75x" at 64x64 timed the full frame: 0.75 of 64 rounds back to the shipped
    # model's multiple of 32 (its manifest entry says so).
    report = bench.run_bench(["onnx"], sizes=[(64, 64), (256, 128)], frames=3, scales=[0.75])
    notes = [n for n in report.notes if "rounds back" in n]
    assert notes == [
        "onnx @0.75x at 64x64: ran at full size (0.75x of it rounds back to it: sides are "
        "multiples of the model's 32, at least 16 px)"
    ], report.notes
    # No model, no multiple: a side below the 16 px minimum is what keeps it.
    report = bench.run_bench(["unsharp"], sizes=[(16, 16)], frames=3, rounds=1, scales=[0.75])
    assert [n for n in report.notes if "rounds back" in n] == [
        "unsharp @0.75x at 16x16: ran at full size (0.75x of it rounds back to it: sides are "
        "at least 16 px)"
    ], report.notes


def test_run_bench_labels_a_scale_as_create_backend_reads_it() -> None:
    # "Auto" is what parse_scale (and so create_backend) accepts; the label must not choke on it
    report = bench.run_bench(
        ["unsharp"], sizes=[(64, 48)], frames=2, rounds=1, scales=["Auto", "0.5"]
    )
    assert [r.backend for r in report.results] == ["unsharp @auto", "unsharp @0.5x"]


def test_run_bench_closes_what_it_opened_when_a_named_backend_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine import backends

    opened = _register_tracked(monkeypatch)
    with pytest.raises(backends.BackendError, match="unknown backend 'nope'"):
        bench.run_bench(["tracked", "nope"], sizes=[(64, 48)], frames=2, rounds=1)
    assert len(opened) == 1 and opened[0].closed


def test_auto_and_the_backend_it_picks_are_both_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import backends

    if not backends.OpenVinoBackend.available():
        pytest.skip("openvino is not installed")
    if backends.resolve_default_model(prefer_gpu=False, int8=True) is None:
        pytest.skip("no shipped weights")
    monkeypatch.setitem(backends._CPU_PRECISION, "CPU", "f32")  # auto takes the int8 student
    # --backend auto --backend openvino --precision f32: auto runs the int8 student at
    # OpenVINO's own precision, the named one the float student at f32; one row must not
    # stand for both
    report = bench.run_bench(
        ["auto", "openvino"], sizes=[(64, 48)], frames=2, rounds=1, precision="f32"
    )
    assert [r.backend for r in report.results] == ["auto (openvino)", "openvino"]
    runs_on = report.machine["backends"]
    assert runs_on["auto (openvino)"].endswith("int8") and "int8" not in runs_on["openvino"]


def test_a_precision_this_cpu_does_not_run_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import backends

    if not backends.OpenVinoBackend.available():
        pytest.skip("openvino is not installed")
    if backends.resolve_default_model(prefer_gpu=False) is None:
        pytest.skip("no shipped weights")
    # --precision bf16 on a CPU without bf16: OpenVINO runs f32, and the table said so only in
    # "runs on: ... · f32", as if f32 were what was asked for.
    monkeypatch.setattr(backends, "_ov_precision_name", lambda _hint: "f32")
    report = bench.run_bench(
        ["openvino"], sizes=[(64, 48), (96, 64)], frames=2, rounds=1, precision="bf16"
    )
    row = report.results[0]
    assert report.machine["backends"][row.backend].endswith("f32")
    (note,) = [n for n in report.notes if "bf16" in n]
    assert note.startswith("openvino: --precision bf16 asked for;") and "f32" in note, note
    # What was asked for and run alike says nothing.
    report = bench.run_bench(["openvino"], sizes=[(64, 48)], frames=2, rounds=1, precision="f32")
    assert not [n for n in report.notes if "--precision" in n]


def test_an_auto_row_says_which_scales_its_times_mix(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import backends

    # 40 ms a call against auto's 27 ms budget (0.9 / 30 FPS): it steps down after its first
    # nine calls, so the row's times come from several scales and the note must say so.
    monkeypatch.setitem(backends.BACKENDS, "slow", lambda **_o: _SlowBackend(40.0))
    report = bench.run_bench(
        ["slow"], sizes=[(64, 48)], frames=16, rounds=1, warmup=1, scales=["auto"]
    )
    (row,) = report.results
    assert row.backend.endswith("@auto")
    (note,) = [n for n in report.notes if n.startswith(row.backend)]
    assert "at 64x48: scale 1x for " in note
    assert "0.875x for" in note or "0.75x for" in note, note


def test_machine_info_names_the_cpu_model_not_the_field() -> None:
    cpu = str(bench.machine_info()["cpu"])
    assert cpu == cpu.strip() and not cpu.lower().startswith("model name")
    assert not cpu.startswith(":")


def test_an_avi_bench_clip_is_mjpg(tmp_path: Path) -> None:
    # Sizes past MPEG-4's limit go to .avi for MJPG: an .avi of mp4v would fail at 8K again.
    cap = cv2.VideoCapture(str(bench.make_bench_clip(tmp_path / "c.avi", (64, 48), 2)))
    try:
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
    finally:
        cap.release()
    assert "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)) == "MJPG"


def test_percentile_and_round_as_the_report_shows_them() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert bench.percentile(values, 50) == pytest.approx(50.5)
    assert bench.percentile(values, 95) == pytest.approx(95.05)
    assert np.isnan(bench.percentile([], 95))  # no frames: not measurable, no exception
    # JSON has no nan or inf: not measurable is None; tiny times keep their digits.
    assert bench._round(float("nan")) is None and bench._round(float("inf")) is None
    assert bench._round(0.000123456) == 0.0001235
    assert bench._round(12345.678) == 12350.0


def test_format_table_shows_small_numbers_and_only_known_providers() -> None:
    row = bench.BenchResult(
        "passthrough", "64x48", 0.0123, 81300.0, 950.0, 0.01168, 1.5, None, 900.0
    )
    report = bench.BenchReport(
        machine={
            "cpu": "X",
            "usable_cores": 2,
            "os": "L",
            "backends": {"passthrough": "", "onnx": "CPU"},
        },
        results=[row],
    )
    lines = bench.format_table(report).splitlines()
    assert lines[1] == "runs on: onnx = CPU"
    cells = lines[-2].split()
    assert cells == [
        "passthrough", "64x48", "0.012", "81300.0", "950.0", "900.0", "0.012", "1.5", "-"
    ]  # fmt: skip


class _FrameSource:
    size, fps, frame_count = (8, 8), 30.0, None

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> object:
        self.reads += 1
        return object()

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "frames"


def test_demand_source_counts_the_gate_wait_as_waiting_not_capture() -> None:
    # The engine's capture time is the decode: the wait for the gate must not be counted in it.
    gate = bench.DemandGate()
    src = bench.DemandSource(_FrameSource(), gate)
    assert src.read() is not None  # the first frame is wanted at once
    gate.open(time.perf_counter() + 0.05)
    assert src.read() is not None
    assert src.last_wait_s >= 0.04
    assert src.frames_read == 2


def test_an_interrupted_demand_source_returns_no_frame_and_never_blocks() -> None:
    gate = bench.DemandGate()
    inner = _FrameSource()
    src = bench.DemandSource(inner, gate)
    src.interrupt()
    results: list[object] = []
    reader = threading.Thread(
        target=lambda: results.extend(src.read() for _ in range(3)), daemon=True
    )
    reader.start()
    reader.join(5.0)
    assert not reader.is_alive(), "read() blocked after interrupt()"
    assert results == [None, None, None] and inner.reads == 0


def test_bench_backend_times_at_least_the_frames_asked_and_reports_their_percentiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The measures stubbed: what bench_backend asks of them and what it makes of their numbers.
    model_calls: list[tuple[int, int]] = []
    pipe_calls: list[tuple[int, int]] = []
    latencies = iter([float(v) for v in range(1, 101)])

    def measure_model(backend, size, frames, warmup=3):  # noqa: ANN001, ANN202
        model_calls.append((frames, warmup))
        return 10.0, [10.0] * frames

    def measure_pipeline(backend, clip, frames, warmup=2, **kw):  # noqa: ANN001, ANN202
        pipe_calls.append((frames, warmup))
        lat = [next(latencies) for _ in range(50)]
        return bench.PipelineMeasure([20.0] * (frames - 1), lat, frames + warmup, [])

    monkeypatch.setattr(bench, "measure_model", measure_model)
    monkeypatch.setattr(bench, "measure_pipeline", measure_pipeline)
    row = bench.bench_backend(_SlowBackend(0.0), (64, 48), "clip.mp4", 5, warmup=4, rounds=2)
    # 5 frames in 2 rounds: 3 a round (not 2: 4 < 5), the warm-up in the first round only
    assert model_calls == [(3, 4), (3, 1)]
    assert pipe_calls == [(4, 4), (4, 4)]
    assert (row.backend, row.size, row.model_ms, row.model_fps) == ("slow", "64x48", 10.0, 100.0)
    assert (row.pipeline_fps, row.overhead_ratio) == (50.0, 0.5)
    assert (row.latency_ms_p50, row.latency_ms_p95) == (50.5, 95.05)


def test_bench_backend_says_which_row_the_pipeline_failed_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "measure_model", lambda *a, **kw: (1.0, [1.0, 1.0]))
    monkeypatch.setattr(
        bench,
        "measure_pipeline",
        lambda *a, **kw: bench.PipelineMeasure([1.0], [1.0], 3, [RuntimeError("sink full")]),
    )
    with pytest.raises(RuntimeError, match="slow at 64x48: sink full"):
        bench.bench_backend(_SlowBackend(0.0), (64, 48), "clip.mp4", 2, rounds=1)


def test_the_pipeline_measure_leaves_the_warm_up_frames_untimed(tmp_path: Path) -> None:
    # Frames before `warmup` (graph compilation, first allocations) are slow: not in the numbers.
    clip = bench.make_bench_clip(tmp_path / "c.mp4", (64, 48), 8)

    class SlowStart(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            self.ms = 300.0 if self.calls < 2 else 5.0
            return super().process(rgb)

    m = bench.measure_pipeline(SlowStart(0.0), clip, frames=5, warmup=2)
    assert not m.errors and len(m.latencies_ms) == 5
    assert max(m.latencies_ms) < 200.0, m.latencies_ms


def test_a_slow_first_model_call_does_not_hold_back_the_frames_after_it(tmp_path: Path) -> None:
    # TorchScript on CUDA spends its first two calls optimising: the just-in-time schedule
    # must not go on delaying each decode by that call's time while its estimate decays.
    clip = bench.make_bench_clip(tmp_path / "c.mp4", (64, 48), 16)

    class SlowStart(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            self.ms = 400.0 if self.calls < 2 else 5.0
            return super().process(rgb)

    m = bench.measure_pipeline(SlowStart(0.0), clip, frames=9, warmup=2, schedule="jit")
    assert not m.errors and len(m.intervals_ms) == 8
    # With the estimate decaying from 400 ms the median interval was ~100 ms.
    assert float(np.median(m.intervals_ms)) < 40.0, m.intervals_ms


def test_just_in_time_decodes_early_enough_for_the_decode_to_end_with_the_model_call() -> None:
    gate = bench.DemandGate()
    gated = bench.GatedBackend(_SlowBackend(20.0), gate, schedule="jit")
    image = np.zeros((8, 8, 3), np.uint8)
    gated.process(image)  # no estimate yet: the next frame is wanted at once
    assert gate.not_before == 0.0
    # A decode as long as 200 ms: the lead (250 ms) is far above what a busy machine's
    # scheduling adds between t0 and the call's start, so the bound below can be loose.
    gate.read_s = 0.200
    est = gated._model_s
    assert est is not None and est >= 0.019
    t0 = time.perf_counter()
    gated.process(image)
    # Opened at the call's start for a decode of read_s (plus a 25 % margin) before its end.
    lead = 0.200 * 1.25 + 0.0005
    assert t0 + est - lead - 0.001 <= gate.not_before < t0 + est - lead + 0.1


def test_an_auto_rows_note_counts_the_calls_at_each_scale() -> None:
    class Scaled(_SlowBackend):
        scale = 1.0

    inner = Scaled(0.0)
    tally = bench._ScaleTally(inner)
    assert tally.describe() == "no calls"
    image = np.zeros((8, 8, 3), np.uint8)
    for scale, calls in ((0.5, 2), (1.0, 3), (0.75, 1)):
        inner.scale = scale
        for _ in range(calls):
            tally.process(image)
    assert inner.calls == 6 and tally.name == "slow"
    assert tally.describe() == "scale 1x for 3, 0.75x for 1, 0.5x for 2 calls (last 0.75x)"


def test_run_bench_times_passthrough_once_whatever_the_scales() -> None:
    report = bench.run_bench(
        ["passthrough"], sizes=[(64, 48)], frames=2, rounds=1, scales=["1", "0.5"]
    )
    assert [r.backend for r in report.results] == ["passthrough"]


def test_run_bench_at_a_side_past_mpeg4s_limit() -> None:
    # MPEG-4 takes sides up to 8191: a wider row gets an MJPG clip instead of failing.
    report = bench.run_bench(["passthrough"], sizes=[(8200, 16)], frames=2, rounds=1)
    assert [(r.backend, r.size) for r in report.results] == [("passthrough", "8200x16")]


def test_run_bench_starts_each_sizes_auto_row_at_full_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.backends import ScaledBackend

    seen: list[float] = []
    real_reset = ScaledBackend.reset

    def reset(self: ScaledBackend) -> None:
        self._scale = 0.5  # where a previous size's row would have left it
        real_reset(self)
        seen.append(self.scale)

    monkeypatch.setattr(ScaledBackend, "reset", reset)
    report = bench.run_bench(
        ["unsharp"], sizes=[(64, 48), (32, 24)], frames=2, rounds=1, scales=["auto"]
    )
    assert [r.size for r in report.results] == ["64x48", "32x24"]
    assert seen == [1.0, 1.0]
    assert all("scale 1x for" in n for n in _not_dropped(report.notes) if "auto" in n), report.notes


class _Stutters(_SlowBackend):
    """10 ms a call, and 60 ms every tenth: a model that stalls now and then."""

    def process(self, rgb: np.ndarray) -> np.ndarray:
        self.ms = 60.0 if self.calls % 10 == 9 else 10.0
        return super().process(rgb)


def test_bench_says_what_a_stuttering_pipeline_delivers_beside_its_steady_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "pipe fps" is the median interval's rate: it read 97.7 where 59.3 frames a second came
    # out, and only latency p95 hinted at the stalls.
    # The row is checked against the intervals the sink really saw, not against the 15 ms a
    # frame the sleeps add up to: on a loaded 2-core CI machine a 10 ms sleep took 16 ms and
    # the live engine dropped frames, so the absolute rates (it read 22.1 ms a frame, and a
    # steady 58 fps) say how busy the machine was, not whether the row is right.
    runs: list[bench.PipelineMeasure] = []
    real_measure = bench.measure_pipeline

    def measure(*args: object, **kwargs: object) -> bench.PipelineMeasure:
        m = real_measure(*args, **kwargs)  # type: ignore[arg-type]
        runs.append(m)
        return m

    monkeypatch.setattr(bench, "measure_pipeline", measure)
    clip = bench.make_bench_clip(tmp_path / "c.mp4", (64, 48), 50)
    row = bench.bench_backend(_Stutters(10.0), (64, 48), clip, frames=40, warmup=2, rounds=1)
    (run,) = runs
    intervals = run.intervals_ms
    assert row.pipeline_fps == pytest.approx(1000 / float(np.median(intervals)), rel=1e-3)
    # Delivered: the frames over the time they took, stalls included (36 x 10 ms + 4 x 60 ms
    # over 40 frames on an idle machine).
    assert row.pipeline_fps_mean == pytest.approx(1000 / float(np.mean(intervals)), rel=1e-3)
    # The stalls pull the delivered rate well below the steady one (about 10 / 15 idle; 0.59
    # under load). Reporting the median for both, the bug, fails here.
    assert row.pipeline_fps_mean < 0.8 * row.pipeline_fps
    # ...while the steady rate stays that of the 10 ms calls, not of a 60 ms stall.
    assert 1000 / row.pipeline_fps < 40.0


class _InterruptedAt(_SlowBackend):
    """A model the user stops with Ctrl-C once frames of ``width`` reach it."""

    def __init__(self, width: int) -> None:
        super().__init__(1.0)
        self.width = width
        self.closed = False

    def process(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[1] == self.width:
            raise KeyboardInterrupt
        return super().process(rgb)

    def close(self) -> None:
        self.closed = True


def test_ctrl_c_keeps_the_rows_measured_before_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bench of every size stopped in its last row printed "interrupted" and nothing of the
    # rows it had measured.
    import main as cli
    from engine import backends

    made: list[_InterruptedAt] = []

    def make(**_options: object) -> _InterruptedAt:
        made.append(_InterruptedAt(96))
        return made[-1]

    monkeypatch.setitem(backends.BACKENDS, "stoppable", make)
    report = bench.run_bench(["stoppable"], sizes=[(64, 48), (96, 64)], frames=2, rounds=1)
    assert [r.size for r in report.results] == ["64x48"]
    assert report.interrupted and report.as_json_dict()["interrupted"] is True
    assert "stopped by Ctrl-C: 1 row(s) measured before it" in report.notes
    assert made and all(m.closed for m in made)
    # The command prints them, says it was interrupted, and exits 130 as Ctrl-C does.
    monkeypatch.setattr(cli, "BACKEND_CHOICES", (*cli.BACKEND_CHOICES, "stoppable"))
    code = cli.main(["bench", "--backend", "stoppable", "--size", "64x48", "--size", "96x64",
                     "--frames", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 130 and "interrupted" in err
    assert "slow     64x48" in out and "96x64" not in out.split("note:")[0], out


def test_a_stalled_model_only_call_does_not_move_the_model_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One 40 ms stall (a GC pause, another app) in ten 10 ms calls reported 13 ms, 77 FPS and
    # an overhead ratio the pipeline did not have: the column is the median, as documented.
    def measure_model(backend, size, frames, warmup=3):  # noqa: ANN001, ANN202
        return 10.0, [10.0] * (frames - 1) + [40.0]

    def measure_pipeline(backend, clip, frames, warmup=2, **kw):  # noqa: ANN001, ANN202
        return bench.PipelineMeasure([20.0] * (frames - 1), [30.0] * frames, frames, [])

    monkeypatch.setattr(bench, "measure_model", measure_model)
    monkeypatch.setattr(bench, "measure_pipeline", measure_pipeline)
    row = bench.bench_backend(_SlowBackend(0.0), (64, 48), "clip.mp4", 10, warmup=1, rounds=1)
    assert (row.model_ms, row.model_fps, row.overhead_ratio) == (10.0, 100.0, 0.5)


def test_machine_info_counts_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A job pinned to one core of many (taskset, a container's cpuset) runs the model on that
    # one: the speeds quoted must say so, not the machine's total.
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 8)
    info = bench.machine_info()
    assert (info["cores"], info["usable_cores"]) == (8, 1)
    # The kernel release too: bug reports compare speeds across kernels, not only "Linux".
    assert info["os"] == f"{bench.platform.system()} {bench.platform.release()}"
    # Without sched_getaffinity (macOS, Windows) every core counts as usable.
    monkeypatch.delattr(bench.os, "sched_getaffinity", raising=False)
    assert bench.machine_info()["usable_cores"] == 8


def test_machine_info_lists_only_the_runtimes_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.importlib.metadata.version

    def version(dist: str) -> str:
        if dist == "torch":
            raise bench.importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(bench.importlib.metadata, "version", version)
    assert "torch" not in bench.machine_info()["versions"]


def test_format_table_aligns_its_columns_and_keeps_their_decimals() -> None:
    # A typical row: the ratio the README quotes keeps 3 decimals (0.823, not 0.82), a model
    # time 2 (12.35), and an exact 0 prints as the column's other numbers do.
    row = bench.BenchResult("onnx", "640x360", 12.3456, 81.0, 66.67, 0.823, 0.0, 20.0, 60.0)
    report = bench.BenchReport(
        machine={"cpu": "X", "cores": 8, "usable_cores": 2, "os": "L", "backends": {"onnx": ""}},
        results=[row],
    )
    lines = bench.format_table(report).splitlines()
    # The cores the run could use, not the machine's; no "runs on" line with no provider known.
    assert lines[0] == "machine: X · 2 cores · L"
    head, rule, text = lines[1], lines[2], lines[3]
    assert set(rule.replace(" ", "")) == {"-"}
    assert text.split() == [
        "onnx", "640x360", "12.35", "81.0", "66.7", "60.0", "0.823", "0.0", "20.0"
    ]  # fmt: skip
    # Names start under their heading; numbers end under theirs.
    assert text.index("640x360") == head.index("size")
    for title, value in (("model ms", "12.35"), ("overhead", "0.823"), ("lat p95", "20.0")):
        assert text.index(value) + len(value) == head.index(title) + len(title), (head, text)


class _Clock:
    """A ``perf_counter`` that moves only when told: the running estimates, exactly."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def test_demand_source_keeps_a_running_estimate_of_the_decode_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # read_s is how early the just-in-time schedule starts a decode: the first decode, then a
    # 0.7 / 0.3 average so that one slow decode moves it by a third only.
    clock = _Clock()
    monkeypatch.setattr(bench, "time", clock)
    took = iter([0.010, 0.020, 0.0])

    class Timed(_FrameSource):
        def read(self) -> object:
            clock.now += next(took)
            self.reads += 1
            return object() if self.reads < 3 else None  # then the clip ends

    gate = bench.DemandGate()
    src = bench.DemandSource(Timed(), gate)
    src.read()
    assert gate.read_s == pytest.approx(0.010)
    gate.open()
    src.read()
    assert gate.read_s == pytest.approx(0.7 * 0.010 + 0.3 * 0.020)
    gate.open()
    assert src.read() is None
    assert src.frames_read == 2  # the end of the clip is no frame


def test_just_in_time_opens_the_gate_a_decode_before_the_model_call_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(bench, "time", clock)

    class Takes(_SlowBackend):
        def process(self, rgb: np.ndarray) -> np.ndarray:
            clock.now += self.ms / 1000.0
            return rgb

    inner = Takes(10.0)
    gate = bench.DemandGate()
    gated = bench.GatedBackend(inner, gate, schedule="jit")
    image = np.zeros((8, 8, 3), np.uint8)
    gated.process(image)
    inner.ms = 20.0
    gated.process(image)
    # A slower call moves the estimate by 0.3 of the difference, not to the new call.
    assert gated._model_s == pytest.approx(0.7 * 0.010 + 0.3 * 0.020)
    gate.read_s = 0.100
    t0 = clock.now
    gated.process(image)
    # The decode (plus a quarter, plus half a millisecond) ends as the estimated call does.
    assert gate.not_before == pytest.approx(t0 + 0.013 - (0.100 * 1.25 + 0.0005), abs=1e-9)


class _Interruptible(_FrameSource):
    interrupted = False

    def interrupt(self) -> None:
        self.interrupted = True


def _read_stopped_by(stop: str, due_in_s: float | None) -> tuple[list[object], _Interruptible]:
    """A read waiting on its gate (closed, or opened for a decode ``due_in_s`` ahead), then
    ``src.<stop>()``: what the read returned, and the wrapped source."""
    inner = _Interruptible()
    gate = bench.DemandGate()
    src = bench.DemandSource(inner, gate)
    src.read()  # the first frame, wanted at once; the gate closes behind it
    if due_in_s is not None:
        gate.open(time.perf_counter() + due_in_s)
    results: list[object] = []
    reader = threading.Thread(target=lambda: results.append(src.read()), daemon=True)
    reader.start()
    time.sleep(0.05)
    getattr(src, stop)()
    reader.join(5.0)
    assert not reader.is_alive(), f"read() still waits after {stop}()"
    return results, inner


def test_a_demand_source_blocked_on_its_gate_wakes_when_interrupted_or_closed() -> None:
    # The engine stops its source with interrupt() or close(): a read waiting for the gate or
    # for a decode due 30 s ahead must return at once, and the wrapped source be told too.
    for due_in_s in (None, 30.0):
        results, inner = _read_stopped_by("interrupt", due_in_s)
        assert results == [None] and inner.interrupted
        results, inner = _read_stopped_by("close", due_in_s)
        assert results == [None] and not inner.interrupted  # closed instead


def test_gated_backend_passes_the_denoise_overhead_to_an_auto_scale() -> None:
    # --scale auto --denoise: the engine tells the backend what noise reduction costs, and
    # the bench's wrapper stood between them.
    told: list[float] = []

    class Budgets(_SlowBackend):
        def set_overhead(self, seconds: float) -> None:
            told.append(seconds)

    bench.GatedBackend(Budgets(0.0), bench.DemandGate()).set_overhead(0.004)
    bench.GatedBackend(_SlowBackend(0.0), bench.DemandGate()).set_overhead(0.004)
    assert told == [0.004]


def test_pipeline_measure_fps_is_the_median_interval() -> None:
    m = bench.PipelineMeasure([10.0, 10.0, 40.0], [1.0] * 4, 4, [])
    assert m.fps == pytest.approx(100.0)
    assert np.isnan(bench.PipelineMeasure([], [1.0], 1, []).fps)


def test_a_pipeline_measure_that_does_not_end_stops_at_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import pipeline

    modes: list[bool] = []
    real = pipeline.Engine.start

    def start(self: pipeline.Engine) -> None:
        modes.append(self.live)
        real(self)

    monkeypatch.setattr(pipeline.Engine, "start", start)
    clip = bench.make_bench_clip(tmp_path / "c.mp4", (64, 48), 20)
    t0 = time.perf_counter()
    m = bench.measure_pipeline(_SlowBackend(250.0), clip, frames=18, warmup=1, timeout_s=0.3)
    # 20 calls of 250 ms took 5 s: the timeout ends it after the call in progress.
    assert time.perf_counter() - t0 < 3.0
    assert m.frames_out < 20
    assert modes == [True]  # the live pipeline (latest-frame slots) the README's numbers are


def test_bench_backend_pools_every_rounds_times_and_passes_its_options_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rounds alternate so that both measures see the same background load: a row made of the
    # last round alone (or the first) is the noise the rounds are there to average out.
    model_ms = iter([10.0, 30.0])
    interval_ms = iter([20.0, 40.0])
    pipe_kw: list[dict[str, object]] = []

    def measure_model(backend, size, frames, warmup=3):  # noqa: ANN001, ANN202
        t = next(model_ms)
        return t, [t] * frames

    def measure_pipeline(backend, clip, frames, warmup=2, **kw):  # noqa: ANN001, ANN202
        pipe_kw.append(kw)
        return bench.PipelineMeasure([next(interval_ms)] * 3, [5.0] * 4, 4, [])

    monkeypatch.setattr(bench, "measure_model", measure_model)
    monkeypatch.setattr(bench, "measure_pipeline", measure_pipeline)
    row = bench.bench_backend(
        _SlowBackend(0.0), (64, 48), "c.mp4", 6, rounds=2, schedule="prefetch", denoise=True
    )
    assert (row.model_ms, row.model_fps) == (20.0, 50.0)  # the median of 3 x 10 and 3 x 30
    assert row.pipeline_fps == pytest.approx(1000 / 30.0, rel=1e-3)
    assert pipe_kw == [{"schedule": "prefetch", "denoise": True}] * 2


def test_bench_backend_of_a_model_too_fast_to_time_has_no_fps_but_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A call shorter than the clock's resolution times 0 ms: the row says "not measurable"
    # for its rate (JSON has no inf) instead of dividing by zero and losing every other row.
    monkeypatch.setattr(bench, "measure_model", lambda *a, **kw: (0.0, [0.0, 0.0]))
    monkeypatch.setattr(
        bench,
        "measure_pipeline",
        lambda *a, **kw: bench.PipelineMeasure([], [1.0], 1, []),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a numpy warning about an empty list on stderr
        row = bench.bench_backend(_SlowBackend(0.0), (64, 48), "c.mp4", 2, rounds=1)
    assert (row.model_ms, row.model_fps, row.pipeline_fps, row.pipeline_fps_mean) == (
        0.0, None, None, None
    )  # fmt: skip


def test_run_bench_hands_its_options_to_each_row_and_says_where_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The library call's schedule, warm-up and rounds reach the measures; the clips go to
    # workdir and are gone after; the progress line names each row as it starts.
    rows: list[dict[str, object]] = []
    clips: list[Path] = []
    real_clip = bench.make_bench_clip

    def make_bench_clip(path, size, frames, fps=30.0):  # noqa: ANN001, ANN202
        clips.append(Path(path))
        return real_clip(path, size, frames, fps)

    def bench_backend(backend, size, clip, frames, **kw):  # noqa: ANN001, ANN202
        rows.append(kw)
        return bench.BenchResult(kw["label"], bench.format_size(size), *[1.0] * 6)

    monkeypatch.setattr(bench, "make_bench_clip", make_bench_clip)
    monkeypatch.setattr(bench, "bench_backend", bench_backend)
    said: list[str] = []
    report = bench.run_bench(
        ["passthrough"], sizes=[(64, 48)], frames=4, warmup=1, rounds=2, schedule="serial",
        workdir=tmp_path, on_progress=said.append,
    )  # fmt: skip
    assert rows[0].pop("notes") is report.notes  # a short row's note lands in the report
    assert rows == [
        {"warmup": 1, "rounds": 2, "schedule": "serial", "label": "passthrough", "denoise": False}
    ]
    assert said == ["passthrough 64x48"]
    assert [c.parent.parent for c in clips] == [tmp_path] and not list(tmp_path.iterdir())


def test_an_auto_rows_tally_reads_the_scale_a_call_runs_at_not_the_next() -> None:
    # ScaledBackend steps its scale during a call, for the next one: read after, a call at 1x
    # that stepped down was counted at 0.75x.
    class Steps(_SlowBackend):
        scale = 1.0

        def process(self, rgb: np.ndarray) -> np.ndarray:
            self.scale = 0.75
            return rgb

    tally = bench._ScaleTally(Steps(0.0))
    tally.process(np.zeros((8, 8, 3), np.uint8))
    assert tally.calls == {1.0: 1}


def test_a_backend_that_cannot_start_is_noted_once_whatever_the_scales() -> None:
    report = bench.run_bench(
        ["nope", "passthrough"], sizes=[(64, 48)], frames=2, rounds=1, strict=False,
        scales=["1", "0.5"],
    )  # fmt: skip
    (note,) = [n for n in report.notes if "nope" in n]  # not once per scale
    assert note.startswith("nope skipped: unknown backend 'nope'"), note
    assert [r.backend for r in report.results] == ["passthrough"]


def test_run_bench_closes_a_backend_it_opened_twice_and_survives_a_failing_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = _register_tracked(monkeypatch, failing_close=True)
    # Asked for twice at full size: one row; the duplicate's session is closed at once, and a
    # runtime failing to close, the duplicate before any row or the measured one at the end,
    # loses none of the rows.
    report = bench.run_bench(["tracked"], sizes=[(64, 48)], frames=2, rounds=1, scales=["1", "1.0"])
    assert [r.backend for r in report.results] == ["slow"]
    assert len(opened) == 2 and all(b.closed for b in opened)


def test_ctrl_c_before_the_first_row_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import backends

    monkeypatch.setitem(backends.BACKENDS, "stoppable", lambda **_o: _InterruptedAt(64))
    report = bench.run_bench(["stoppable"], sizes=[(64, 48)], frames=2, rounds=1)
    assert report.interrupted and report.results == []
    assert report.notes == ["stopped by Ctrl-C before a row was measured"]


def test_precision_is_openvinos_alone_the_other_rows_run_as_ever(tmp_path: Path) -> None:
    # `bench --backend openvino --backend onnx --precision f32`: ONNX Runtime has no precision
    # to force, and handed one it could not start.
    model = make_onnx_model(tmp_path / "m.onnx", kind="sharpen")
    report = bench.run_bench(
        ["onnx", "unsharp"], sizes=[(64, 48)], frames=2, rounds=1, model=model, precision="f32"
    )
    assert [r.backend for r in report.results] == ["onnx", "unsharp"]
    assert not _not_dropped(report.notes)


def test_the_bench_clip_holds_every_frame_a_round_reads_and_two_to_spare(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The pipeline measure runs the live engine, which may drop a frame or two under load: the
    # clip holds two more than a round's warm-up and timed frames, so a round still times them
    # all. Fewer frames than rounds (1 in 4) still times two intervals a round: a round of one
    # sample is whatever stall it met. The clip is counted as written, not from a run.
    asked: list[tuple[int, int, int]] = []  # (frames, warmup, frames in the clip) per round

    def measure_model(backend, size, frames, warmup=3):  # noqa: ANN001, ANN202
        return 1.0, [1.0] * frames

    def measure_pipeline(backend, clip, frames, warmup=2, **kw):  # noqa: ANN001, ANN202
        asked.append((frames, warmup, len(read_video(clip))))
        return bench.PipelineMeasure([1.0] * (frames - 1), [1.0] * frames, frames + warmup, [])

    monkeypatch.setattr(bench, "measure_model", measure_model)
    monkeypatch.setattr(bench, "measure_pipeline", measure_pipeline)
    report = bench.run_bench(
        ["passthrough"], sizes=[(64, 48)], frames=1, rounds=4, warmup=1, workdir=tmp_path
    )
    assert len(report.results) == 1 and len(asked) == 4
    for frames, warmup, in_clip in asked:
        assert frames >= 3 and in_clip >= warmup + frames + 2, asked


def test_auto_without_weights_is_skipped_with_the_model_backends_in_one_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `auto` picks a model backend: with no weights it cannot start either, and is named in
    # the one "no model" note instead of a note of its own that reads like a broken runtime.
    monkeypatch.setenv("SHARPCAM_WEIGHTS", str(tmp_path))  # no shipped weights
    report = bench.run_bench(
        ["auto", "unsharp"], sizes=[(64, 48)], frames=2, rounds=1, strict=False
    )
    assert [r.backend for r in report.results] == ["unsharp"]
    (note,) = _not_dropped(report.notes)
    assert note.startswith("no model") and note.endswith("skipped auto"), note


def test_format_table_prints_every_note_and_a_tenth_with_its_columns_decimals() -> None:
    # Each skipped backend, fallback precision and auto row has a note of its own: a table
    # showing only the first hid why the others' rows were missing or what they mixed.
    row = bench.BenchResult("unsharp", "64x48", 0.1, 10.0, 10.0, 1.0, 0.1, 5.0, 10.0)
    notes = ["onnx skipped: no runtime", "openvino skipped: no runtime"]
    report = bench.BenchReport(machine={"cpu": "X"}, results=[row], notes=notes)
    lines = bench.format_table(report).splitlines()
    assert lines[-2:] == [f"note: {n}" for n in notes]
    # 0.1 is the first value the fixed decimals show in full: "0.10", not the "0.1" of a
    # smaller number's two significant digits.
    assert lines[3].split()[2] == "0.10", lines[3]


def _deliver_intervals(monkeypatch: pytest.MonkeyPatch, per_round: list[int]) -> None:
    """Stand-in measurements: each pipeline round times the intervals ``per_round`` names
    (4 once they run out), as a live engine that drops frames does."""
    delivered = iter(per_round)

    def measure_model(backend, size, frames, warmup=3):  # noqa: ANN001, ANN202
        return 1.0, [1.0] * frames

    def measure_pipeline(backend, clip, frames, warmup=2, **kw):  # noqa: ANN001, ANN202
        n = next(delivered, 4)
        return bench.PipelineMeasure([10.0] * n, [5.0] * (n + 1), n + 1 + warmup, [])

    monkeypatch.setattr(bench, "measure_model", measure_model)
    monkeypatch.setattr(bench, "measure_pipeline", measure_pipeline)


def test_a_row_timed_from_fewer_frames_than_asked_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Under load the live engine drops frames: a round timed 1 interval of 4, and the row's
    # medians came from a quarter of the frames with nothing to say so.
    _deliver_intervals(monkeypatch, [4, 1, 4])
    report = bench.run_bench(
        ["passthrough"], sizes=[(64, 48), (32, 24)], frames=12, rounds=3, workdir=tmp_path
    )
    assert len(report.results) == 2
    # Only the short size's row, with its counts: the next size's full rounds say nothing.
    assert report.notes == [
        "passthrough at 64x48: the pipeline figures come from 9 of 12 frame intervals "
        "(the live engine dropped frames: a busy machine?)"
    ]


def test_the_dropped_frames_note_counts_the_intervals_the_rounds_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 10 frames in 3 rounds time 4 intervals a round: 11 timed is one fewer than asked, though
    # more than the 10 frames named.
    _deliver_intervals(monkeypatch, [4, 3, 4])
    report = bench.run_bench(
        ["passthrough"], sizes=[(64, 48)], frames=10, rounds=3, workdir=tmp_path
    )
    assert [n for n in report.notes if "dropped frames" in n] == [
        "passthrough at 64x48: the pipeline figures come from 11 of 12 frame intervals "
        "(the live engine dropped frames: a busy machine?)"
    ]
