"""Benchmark: what the model costs alone, and what the whole live pipeline delivers.

For each backend and frame size:

* model-only: the median wall time of ``backend.process`` on one frame (its pre- and
  post-processing included, as the engine calls it), after a warm-up;
* pipeline: the real :class:`engine.pipeline.Engine` in live mode (latest-frame slots) on a real
  encoded video written here (textured moving content, mp4v), into a recording sink that only
  notes times. The file is not paced at its FPS but decoded on demand (:class:`DemandSource`),
  just in time for the model's next call (:class:`GatedBackend`), so the pipeline runs as fast
  as it can, with no frame-rate cap and no CPU spent decoding frames that a slot would drop.
  ``pipeline_fps`` is 1000 / the median interval between frames at the sink (the steady rate);
  ``pipeline_fps_mean`` is 1000 / the mean interval, the frames delivered per second with
  every stall counted (a pipeline that stutters has the first well above the second).

``overhead_ratio = pipeline_fps / model_fps`` is what the pipeline (decode, colour conversion,
thread hand-offs, the output copy, the sink) costs on top of the model: 1.0 means nothing.
Latency is per frame, from the capture timestamp (``Frame.t_capture``, when the frame was
decoded) to the sink. Model-only and pipeline measures alternate in rounds so that both see the
same background load on a shared machine.

Pure engine code: no Qt, no training imports.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.frames import opencv_name

#: The keys of one result object in ``bench --json`` output, in order.
RESULT_KEYS = (
    "backend",
    "size",
    "model_ms",
    "model_fps",
    "pipeline_fps",
    "overhead_ratio",
    "latency_ms_p50",
    "latency_ms_p95",
    "pipeline_fps_mean",
)

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720))
# Fewer frames let one noisy second of a shared VM swing the ratio by +-0.1 (measured: 0.75-0.87
# at 30 frames in 5 rounds; 0.81-0.84 at 150 frames in 15 rounds).
DEFAULT_FRAMES = 120
DEFAULT_ROUNDS = 12
#: Backends that need a model file; the others (``unsharp``, ``passthrough``) do not.
MODEL_BACKENDS = ("onnx", "openvino", "torch")


@dataclass
class BenchResult:
    """One row of the benchmark: one backend at one frame size."""

    backend: str  # backend name, with its provider when it has one ("onnx · CPU")
    size: str  # "WxH"
    # Numbers carry 4 significant digits; None where not measurable (JSON has no nan/inf).
    model_ms: float | None  # median ms per backend.process call
    model_fps: float | None  # 1000 / model_ms
    pipeline_fps: float | None  # 1000 / median interval between frames at the sink
    overhead_ratio: float | None  # pipeline_fps / model_fps (1.0 = the pipeline costs nothing)
    latency_ms_p50: float | None  # capture timestamp -> sink, median
    latency_ms_p95: float | None  # capture timestamp -> sink, 95th percentile
    # 1000 / mean interval: what was delivered, stalls included (the median hid a 60 ms call in
    # ten 10 ms ones: 97.7 against 59.3 FPS delivered).
    pipeline_fps_mean: float | None = None

    def as_dict(self) -> dict[str, float | str | None]:
        """The result as a plain dict with exactly :data:`RESULT_KEYS`."""
        return asdict(self)


@dataclass
class BenchReport:
    """Everything ``bench`` prints: the machine, the results, and notes (skipped backends)."""

    machine: dict[str, object]
    results: list[BenchResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C ended the measures: the results are those before it
    failed: list[str] = field(default_factory=list)  # rows a model failed in: "LABEL at WxH: why"

    def as_json_dict(self) -> dict[str, object]:
        """The ``--json`` object: ``{"machine": {...}, "results": [...]}`` (notes go to stderr),
        with ``"interrupted": true`` when Ctrl-C cut it short and ``"failed"`` listing the rows
        a model failed in."""
        out: dict[str, object] = {
            "machine": self.machine,
            "results": [r.as_dict() for r in self.results],
        }
        if self.interrupted:
            out["interrupted"] = True
        if self.failed:
            out["failed"] = list(self.failed)
        return out


# --------------------------------------------------------------------------- machine


def _cpu_name() -> str:
    """Human CPU model name; ``platform.processor()`` is empty on most Linux systems."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    # importlib.metadata reads the installed version without importing the package (torch
    # alone takes seconds to import).
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, object]:
    """Describe the machine the benchmark ran on: CPU, usable cores, OS and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    versions = {"python": platform.python_version(), "opencv": cv2.__version__}
    for dist, key in (
        ("numpy", "numpy"),
        ("onnxruntime", "onnxruntime"),
        ("onnxruntime-gpu", "onnxruntime-gpu"),
        ("openvino", "openvino"),
        ("torch", "torch"),
    ):
        v = _version(dist)
        if v is not None:
            versions[key] = v
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "versions": versions,
    }


# --------------------------------------------------------------------------- clip


def textured_frames(size: tuple[int, int], count: int, seed: int = 0) -> Iterable[np.ndarray]:
    """Yield ``count`` frames ``(H, W, 3) uint8 RGB`` of a multi-scale texture panning diagonally.

    Noise at several scales gives edges at every frequency (like a real scene, so codecs and
    models do real work); the pan makes consecutive frames differ.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    # Margin for the pan; it wraps around after ~80 frames so long clips stay small in memory.
    pad = min(3 * count, 240) + 8
    big_w, big_h = w + pad, h + pad
    tex = np.zeros((big_h, big_w, 3), np.float32)
    for scale, weight in ((32, 0.5), (8, 0.3), (2, 0.2)):
        small = rng.random((big_h // scale + 2, big_w // scale + 2, 3), dtype=np.float32)
        tex += weight * cv2.resize(small, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    tex = np.clip(tex * 255.0, 0, 255).astype(np.uint8)
    for i in range(count):
        x, y = (3 * i) % pad, (2 * i) % pad
        yield np.ascontiguousarray(tex[y : y + h, x : x + w])


def make_bench_clip(
    path: str | os.PathLike[str], size: tuple[int, int], frames: int, fps: float = 30.0
) -> Path:
    """Write a ``frames``-long clip of :func:`textured_frames` at ``size`` (W, H) to ``path``.

    The codec follows the extension: ``.avi`` -> MJPG, anything else -> mp4v (this OpenCV build
    cannot write H.264). Returns the path.
    """
    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    path.touch()  # a file to give OpenCV a name of (see opencv_name)
    writer = cv2.VideoWriter(opencv_name(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write a {fourcc} video to {path}")
    try:
        for rgb in textured_frames(size, frames):
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# --------------------------------------------------------------------------- helpers


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def format_size(size: tuple[int, int]) -> str:
    """``(1280, 720)`` -> ``"1280x720"``."""
    return f"{size[0]}x{size[1]}"


def _round(x: float, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits (passthrough takes microseconds: fixed decimals
    would round it to 0); None for nan/inf, which JSON cannot carry."""
    if not np.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def format_table(report: BenchReport) -> str:
    """A readable fixed-width table of ``report.results`` plus its notes."""
    head = (
        "backend",
        "size",
        "model ms",
        "model fps",
        "pipe fps",
        "mean fps",
        "overhead",
        "lat p50",
        "lat p95",
    )

    def cell(x: float | None, decimals: int) -> str:
        if x is None:
            return "-"
        return f"{x:.{decimals}f}" if abs(x) >= 0.1 or x == 0 else f"{x:.2g}"

    rows = [
        (
            r.backend,
            r.size,
            cell(r.model_ms, 2),
            cell(r.model_fps, 1),
            cell(r.pipeline_fps, 1),
            cell(r.pipeline_fps_mean, 1),
            cell(r.overhead_ratio, 3),
            cell(r.latency_ms_p50, 1),
            cell(r.latency_ms_p95, 1),
        )
        for r in report.results
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    m = report.machine
    lines = [f"machine: {m.get('cpu')} · {m.get('usable_cores')} cores · {m.get('os')}"]
    shown = {k: v for k, v in (m.get("backends") or {}).items() if v}
    if shown:
        lines.append("runs on: " + " | ".join(f"{k} = {v}" for k, v in shown.items()))
    lines.append(fmt.format(*head))
    lines.append(fmt.format(*("-" * w for w in widths)))
    lines.extend(fmt.format(*row) for row in rows)
    lines.append("latency = capture timestamp -> sink, in ms; overhead = pipeline fps / model fps")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


# --------------------------------------------------------------------------- on-demand reading


#: When the next frame is decoded, relative to the model call on the current one.
SCHEDULES = ("jit", "serial", "prefetch")


class DemandGate:
    """Lets the source decode the next frame only when the inference stage will want one.

    A video file read as fast as possible into a live pipeline decodes hundreds of frames per
    second only to have the latest-frame slot drop them, stealing CPU from the model on a small
    machine (measured: 549 of 600 frames decoded for nothing, overhead ratio 0.54-0.75). A
    camera paces itself; for a file the gate plays that role. :class:`GatedBackend` opens it,
    :class:`DemandSource` waits on it. ``not_before`` (a ``perf_counter`` time) delays the
    decode further, for the ``jit`` schedule.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._event.set()  # the first frame is wanted at once
        self._stop = threading.Event()
        self.not_before = 0.0
        self.read_s = 0.0  # recent decode time (EMA), how early the decode must start

    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def open(self, not_before: float = 0.0) -> None:
        """The consumer wants a frame (decoded no earlier than ``not_before``)."""
        self.not_before = not_before
        self._event.set()

    def interrupt(self) -> None:
        """Wake a waiting source for good (the engine is stopping)."""
        self._stop.set()
        self._event.set()

    def wait(self) -> float:
        """Block until opened (and ``not_before``), close again; return the seconds waited."""
        t0 = time.perf_counter()
        self._event.wait()
        delay = self.not_before - time.perf_counter()
        if delay > 0:
            self._stop.wait(delay)  # interruptible, like a camera's frame period
        if not self.interrupted:
            self._event.clear()
        return time.perf_counter() - t0


class DemandSource:
    """A :class:`engine.sources.FrameSource` wrapper that reads only when ``gate`` opens.

    Everything else (size, fps, frame_count, close, describe) is the wrapped source's.
    ``last_wait_s`` includes the gate wait, so the engine's capture time stays the decode time.
    """

    live = True

    def __init__(self, source: Any, gate: DemandGate) -> None:
        self._source = source
        self._gate = gate
        self.size = source.size
        self.fps = source.fps
        self.frame_count = getattr(source, "frame_count", None)
        self.reconnects = 0
        self.last_wait_s = 0.0
        self.frames_read = 0

    def read(self) -> Any:
        waited = self._gate.wait()
        if self._gate.interrupted:
            return None
        t0 = time.perf_counter()
        frame = self._source.read()
        dt = time.perf_counter() - t0
        g = self._gate
        g.read_s = dt if self.frames_read == 0 else 0.7 * g.read_s + 0.3 * dt
        self.last_wait_s = waited + float(getattr(self._source, "last_wait_s", 0.0) or 0.0)
        if frame is not None:
            self.frames_read += 1
        return frame

    def interrupt(self) -> None:
        self._gate.interrupt()
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def close(self) -> None:
        self._gate.interrupt()
        self._source.close()

    def describe(self) -> str:
        return f"on demand: {self._source.describe()}"


class GatedBackend:
    """Wraps a backend and opens ``gate`` so that the source decodes the next frame in time.

    Schedules:

    * ``serial``: decode after the model call. Nothing overlaps, so the frame is as fresh as
      it can be (latency = decode + model), but the decode adds to every frame's period.
    * ``prefetch``: decode as the model call starts. The decode overlaps the model (it fills
      the gaps a multi-threaded runtime leaves on the cores), but the decoded frame then waits
      for the whole model call: latency is about two model calls.
    * ``jit`` (just in time): decode so that it ends just as the model call ends, from running
      estimates of both: the overlap of ``prefetch`` with the latency of ``serial``. It is what a
      camera running at exactly the model's rate would deliver.
    """

    def __init__(self, backend: Any, gate: DemandGate, *, schedule: str = "jit") -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self._backend = backend
        self._gate = gate
        self._schedule = schedule
        self._model_s: float | None = None  # recent model call time (EMA)
        self.name = getattr(backend, "name", type(backend).__name__)
        self.provider = getattr(backend, "provider", "")

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB``, the wrapped backend's result."""
        t0 = time.perf_counter()
        if self._schedule == "prefetch":
            self._gate.open()
        elif self._schedule == "jit":
            est = self._model_s
            # A margin for the hand-off and jitter: a frame a little early costs a little
            # latency, a frame late stalls the model.
            lead = self._gate.read_s * 1.25 + 0.0005
            self._gate.open(t0 + est - lead if est is not None else 0.0)
        try:
            return self._backend.process(rgb)
        finally:
            dt = time.perf_counter() - t0
            # Never above the last call: a slow first call (TorchScript optimises on its first
            # two calls, on a GPU for a second or more) would otherwise hold every decode back
            # while the average decays, and the pipeline would time the decay (measured on the
            # H200: 8 FPS for a 4.8 ms model). Too low only starts a decode a little early.
            ema = dt if self._model_s is None else 0.7 * self._model_s + 0.3 * dt
            self._model_s = min(ema, dt)
            if self._schedule == "serial":
                self._gate.open()

    def set_overhead(self, seconds: float) -> None:
        """Passed on: an ``auto`` scale budgets for the engine's noise reduction (``--denoise``)."""
        set_overhead = getattr(self._backend, "set_overhead", None)
        if set_overhead is not None:
            set_overhead(seconds)

    def close(self) -> None:
        """The wrapped backend belongs to the caller: closing the wrapper leaves it open."""


class RecordingSink:
    """A sink that keeps only ``(t_capture, t_written)`` per frame: no encoding, no copy."""

    size = None

    def __init__(self) -> None:
        self.times: list[tuple[int, float, float]] = []

    def write(self, frame: Any) -> None:
        self.times.append((frame.index, frame.t_capture, time.perf_counter()))

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "recording sink"


# --------------------------------------------------------------------------- measures


def measure_model(
    backend: Any, size: tuple[int, int], frames: int, warmup: int = 3
) -> tuple[float, list[float]]:
    """Median ms of ``frames`` timed ``backend.process`` calls on a ``size`` (W, H) frame.

    Returns ``(median_ms, all_ms)``. ``warmup`` untimed calls first (graph compilation, memory
    arenas, caches). The calls run on a thread of their own, as the engine's inference thread
    makes them, so that both measures time the same thing: the same TorchScript call took
    400-1100 ms on the main thread against 60-110 ms on a worker thread here (2-core VM, one
    core busy; OpenMP keeps a thread team per calling thread), and ``bench`` reported a
    pipeline 3.8x faster than its own model.
    """
    image = next(iter(textured_frames(size, 1, seed=1)))

    def calls(stop: threading.Event) -> list[float]:
        times: list[float] = []
        for i in range(warmup + frames):
            if stop.is_set():
                break
            t0 = time.perf_counter()
            backend.process(image)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
        return times

    times = _on_worker_thread(calls)
    return float(np.median(times)), times


def _on_worker_thread(fn: Callable[[threading.Event], Any]) -> Any:
    """``fn(stop)`` run on a new thread; its result returned or its exception raised here.

    Interrupted here (Ctrl-C), ``stop`` is set and the call in progress is waited for before
    the interrupt goes on: the caller then closes the backend, which must not happen under a
    running model call, nor may the interpreter exit inside one.
    """
    outcome: list[tuple[bool, Any]] = []
    stop = threading.Event()
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn(stop)))
        except BaseException as exc:  # handed to the caller, as a direct call would raise it
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="bench-model", daemon=True).start()
    # An event, not Thread.join: Python 3.11's join, interrupted, marks the thread as ended
    # (bpo-45274's fix releases a lock it never held), and a second join returns at once.
    # Polled: on Windows before Python 3.14 a wait without a timeout cannot be interrupted, and
    # Ctrl-C would come only after the whole block of calls.
    try:
        while not done.wait(0.2):
            pass
    except BaseException:
        stop.set()
        while not done.wait(0.2):
            pass
        raise
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


@dataclass
class PipelineMeasure:
    """One pipeline run over the timed frames: sink intervals and capture-to-sink latencies."""

    intervals_ms: list[float]  # between consecutive frames at the sink
    latencies_ms: list[float]  # capture timestamp -> sink, per frame
    frames_out: int  # all frames the sink got, warm-up included
    errors: list[BaseException]

    @property
    def fps(self) -> float:
        """Steady-state rate: 1000 / the median interval (nan with fewer than two frames)."""
        return 1000.0 / float(np.median(self.intervals_ms)) if self.intervals_ms else float("nan")


def measure_pipeline(
    backend: Any,
    clip: str | os.PathLike[str],
    frames: int,
    warmup: int = 2,
    *,
    schedule: str = "jit",
    timeout_s: float = 600.0,
    denoise: bool = False,
) -> PipelineMeasure:
    """Run the real :class:`engine.pipeline.Engine` (live mode) on ``clip`` into a recording sink.

    The clip is decoded on demand (:class:`DemandSource`); the first ``warmup`` outputs are not
    timed, the next ``frames`` are. ``denoise`` turns the engine's noise reduction on.
    """
    from engine.pipeline import Engine
    from engine.sources import open_source

    gate = DemandGate()
    inner = open_source(os.fspath(clip), live=False, kind="video")
    source = DemandSource(inner, gate)
    sink = RecordingSink()
    errors: list[BaseException] = []
    failed = threading.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        failed.set()

    engine = Engine(
        source,
        GatedBackend(backend, gate, schedule=schedule),
        sinks=[sink],
        live=True,
        denoise=denoise,
        on_error=on_error,
    )
    try:
        engine.start()  # its first model call may begin before start() returns
        # Not only the end: a model failing mid-run is passed over (live), so no call asks
        # the clip for its next frame, and the run waited out the whole timeout (600 s).
        deadline = time.perf_counter() + timeout_s
        while not engine.wait(0.05) and not failed.is_set():
            if time.perf_counter() >= deadline:
                break
    finally:
        engine.stop(timeout=2.0)
        # stop() leaves a model call longer than that running (a large size on a CPU): the
        # caller then closes the backend, or Ctrl-C ends the process, under it, as
        # measure_model must not either. Polled: a second Ctrl-C still ends the wait.
        while not engine.join(timeout=0.2):
            pass
    timed = sink.times[warmup : warmup + frames]
    t_out = [t for _, _, t in timed]
    return PipelineMeasure(
        intervals_ms=[(b - a) * 1000.0 for a, b in zip(t_out, t_out[1:], strict=False)],
        latencies_ms=[(t_o - t_c) * 1000.0 for _, t_c, t_o in timed],
        frames_out=len(sink.times),
        errors=errors,
    )


def bench_backend(
    backend: Any,
    size: tuple[int, int],
    clip: str | os.PathLike[str],
    frames: int,
    *,
    warmup: int = 3,
    rounds: int = DEFAULT_ROUNDS,
    schedule: str = "jit",
    label: str | None = None,
    denoise: bool = False,
    notes: list[str] | None = None,
) -> BenchResult:
    """Measure one backend at one size: model-only and pipeline, in alternating rounds.

    The machine may be shared (other processes come and go): alternating ``rounds`` blocks of
    model-only calls and pipeline runs exposes both measures to the same background load, and
    both are medians (of call times; of frame intervals at the sink), robust to a stray stall.
    ``clip`` must hold at least ``warmup + ceil(frames / rounds) + 1`` frames. A note goes to
    ``notes`` when the pipeline delivered fewer frames than were to be timed.
    """
    per_round = max(2, -(-frames // rounds))
    model_times: list[float] = []
    intervals: list[float] = []
    latencies: list[float] = []
    name = label or str(getattr(backend, "name", type(backend).__name__))
    for r in range(rounds):
        _, times = measure_model(backend, size, per_round, warmup if r == 0 else 1)
        model_times += times
        pipe = measure_pipeline(
            backend, clip, per_round + 1, warmup, schedule=schedule, denoise=denoise
        )
        if pipe.errors:
            raise RuntimeError(f"{name} at {format_size(size)}: {pipe.errors[0]}")
        intervals += pipe.intervals_ms
        latencies += pipe.latencies_ms
    asked = rounds * per_round
    if notes is not None and len(intervals) < asked:
        # The live engine drops a frame that comes while the model is busy, as on a call; on
        # a loaded machine a round timed 1 interval of 4 and the row gave no sign of it.
        notes.append(
            f"{name} at {format_size(size)}: the pipeline figures come from {len(intervals)} "
            f"of {asked} frame intervals (the live engine dropped frames: a busy machine?)"
        )
    model_ms = float(np.median(model_times))
    model_fps = 1000.0 / model_ms if model_ms > 0 else float("inf")
    pipeline_fps = 1000.0 / float(np.median(intervals)) if intervals else float("nan")
    mean_fps = 1000.0 / float(np.mean(intervals)) if intervals else float("nan")
    return BenchResult(
        backend=name,
        size=format_size(size),
        model_ms=_round(model_ms),
        model_fps=_round(model_fps),
        pipeline_fps=_round(pipeline_fps),
        overhead_ratio=_round(pipeline_fps / model_fps),
        latency_ms_p50=_round(percentile(latencies, 50)),
        latency_ms_p95=_round(percentile(latencies, 95)),
        pipeline_fps_mean=_round(mean_fps),
    )


# --------------------------------------------------------------------------- the benchmark


def _close_quietly(backend: Any) -> None:
    """Close a backend; a runtime failing to let go never ends the benchmark or hides its rows."""
    with contextlib.suppress(Exception):
        backend.close()


class _ScaleTally:
    """Counts the calls an adaptive :class:`engine.backends.ScaledBackend` makes at each scale."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.calls: dict[float, int] = {}

    def process(self, rgb: np.ndarray) -> np.ndarray:
        scale = float(self.backend.scale)  # read before: a call may step the scale for the next
        self.calls[scale] = self.calls.get(scale, 0) + 1
        return self.backend.process(rgb)

    def describe(self) -> str:
        """``"scale 1x for 12 calls, 0.75x for 30 (last 0.75x)"``, largest scale first."""
        parts = [f"{s:g}x for {n}" for s, n in sorted(self.calls.items(), reverse=True)]
        if not parts:
            return "no calls"
        return f"scale {', '.join(parts)} calls (last {float(self.backend.scale):g}x)"

    def __getattr__(self, item: str) -> Any:
        if item == "backend":
            raise AttributeError(item)
        return getattr(self.backend, item)


def default_backends() -> list[str]:
    """Every model backend whose runtime is installed, then ``unsharp``."""
    from engine.backends import list_backends

    available = list_backends()
    return [b for b in MODEL_BACKENDS if b in available] + ["unsharp"]


def run_bench(
    backends: Sequence[str] | None = None,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    frames: int = DEFAULT_FRAMES,
    model: str | os.PathLike[str] | None = None,
    *,
    strict: bool | None = None,
    warmup: int = 3,
    rounds: int = DEFAULT_ROUNDS,
    schedule: str = "jit",
    workdir: str | os.PathLike[str] | None = None,
    on_progress: Callable[[str], Any] | None = None,
    precision: str | None = None,
    scales: Sequence[float | str] = (1.0,),
    denoise: bool = False,
) -> BenchReport:
    """Benchmark ``backends`` at ``sizes``; see the module docstring for what is measured.

    Args:
        backends: registry names (``auto`` allowed); None = :func:`default_backends`.
        sizes: ``(W, H)`` frame sizes.
        frames: timed frames per measure (model-only and pipeline each).
        model: model file for the model backends; None = the shipped weights.
        strict: a backend that cannot start raises instead of being skipped with a note
            (default: True when ``backends`` was given, False for the default list).
        warmup: untimed calls/frames before each measure.
        rounds: alternating model-only / pipeline blocks (see :func:`bench_backend`).
        schedule: when the next frame is decoded (:data:`SCHEDULES`, see :class:`GatedBackend`).
        workdir: where the temporary clips go (default: a fresh temporary folder).
        on_progress: called with a short text before each measure (for a progress line).
        precision: OpenVINO's inference precision (``"f32"``, ``"bf16"``, ``"f16"``; None = its
            choice, bf16 where the CPU has it). ``"f32"`` measures what a CPU without bf16 gets.
        scales: processing scales (:class:`engine.backends.ScaledBackend`; ``"auto"`` adapts
            to 30 FPS); each backend is measured at each, labelled ``name @0.75x`` below 1.
        denoise: the pipeline with the engine's noise reduction on (rows labelled
            ``+ denoise``; the model-only column is the model alone, as ever). The bench clip's
            fine texture reads as noise to it, so it filters every frame: its full cost.

    Raises:
        engine.manifest.ModelError, engine.backends.BackendError: with ``strict``, a backend
            that cannot start. A row the model fails in (at one size) raises nothing: it is
            listed in ``report.failed`` and the notes, and the other rows are measured.
    """
    from engine.backends import (
        MIN_SIZE,
        BackendError,
        ScaledBackend,
        create_backend,
        parse_scale,
        resolve_default_model,
        scaled_size,
        weights_dir,
    )
    from engine.sinks import MP4V_MAX_SIDE

    if strict is None:
        strict = backends is not None
    names = list(backends) if backends is not None else default_backends()
    report = BenchReport(machine=machine_info())
    providers: dict[str, str] = {}
    report.machine["backends"] = providers
    say = on_progress or (lambda _text: None)

    if model is None and not strict and resolve_default_model(prefer_gpu=False) is None:
        # Before trained weights ship: say it once instead of once per model backend.
        skipped = [n for n in names if n in (*MODEL_BACKENDS, "auto")]
        if skipped:
            report.notes.append(
                f"no model (none in {weights_dir()} and no --model given): "
                f"skipped {', '.join(skipped)}"
            )
        names = [n for n in names if n not in skipped]

    opened: list[tuple[str, Any]] = []
    forced: set[str] = set()  # the rows opened with --precision
    runs_model = False  # a backend that runs the model opened
    try:
        for name in names:
            for scale in scales:
                try:
                    options = {"precision": precision} if precision and name == "openvino" else {}
                    backend = create_backend(name, model=model, scale=scale, **options)
                except Exception as exc:
                    if strict:
                        raise
                    report.notes.append(f"{name} skipped: {exc}")
                    break
                label = str(getattr(backend, "name", name))
                if name == "auto" and label in names:
                    # `auto` next to the backend it picks (openvino) may be another model or
                    # precision (int8 vs --precision f32): both rows, told apart.
                    label = f"auto ({label})"
                if isinstance(backend, ScaledBackend):
                    parsed = parse_scale(scale)  # "Auto" and "0.75" as create_backend read them
                    label += f" @{parsed}" if parsed == "auto" else f" @{float(parsed):g}x"
                if denoise:
                    label += " + denoise"
                if any(label == seen for seen, _ in opened):
                    # passthrough is never scaled: one row for it, whatever the scales asked.
                    _close_quietly(backend)
                    continue
                opened.append((label, backend))
                if options:
                    forced.add(label)
                runs_model = runs_model or name not in ("unsharp", "passthrough")
                providers[label] = str(getattr(backend, "provider", ""))

        if model is not None and not runs_model:
            # `bench --model mine.txt` timed unsharp alone, exit 0, the model's failures notes
            # under a table that looked like a result: the one thing asked for did not run.
            why = "; ".join(report.notes) or f"no model backend in {', '.join(names)}"
            raise BackendError(f"no backend could run --model {model}: {why}")
        with tempfile.TemporaryDirectory(prefix="sharpcam-bench-", dir=workdir) as tmp:
            try:
                for size in sizes:
                    per_round = max(2, -(-frames // rounds))
                    # MPEG-4 takes sides up to 8191 only: an 8K row failed after the models loaded.
                    ext = ".avi" if max(size) > MP4V_MAX_SIDE else ".mp4"
                    clip = make_bench_clip(
                        Path(tmp) / f"clip_{format_size(size)}{ext}", size, warmup + per_round + 3
                    )
                    for label, backend in opened:
                        say(f"{label} {format_size(size)}")
                        adaptive = isinstance(backend, ScaledBackend) and backend.adaptive
                        if adaptive:
                            backend.reset()  # each size's row starts at full size, as a stream would
                        measured = _ScaleTally(backend) if adaptive else backend
                        try:
                            row = bench_backend(
                                measured,
                                size,
                                clip,
                                frames,
                                warmup=warmup,
                                rounds=rounds,
                                schedule=schedule,
                                label=label,
                                denoise=denoise,
                                notes=report.notes,
                            )
                        except RuntimeError as exc:
                            # A model that runs one size and not another (a fixed input size
                            # under ONNX Runtime, a side not its multiple) threw away the rows
                            # measured before it, and the other backends (OpenVINO reshapes a
                            # fixed size) were never timed: the row is said, the rest measured.
                            where = f"{label} at {format_size(size)}"
                            why = str(exc).removeprefix(f"{where}: ")
                            report.failed.append(f"{where}: {why}")
                            report.notes.append(f"{where}: not measured: {why}")
                            continue
                        report.results.append(row)
                        for count, said in (
                            ("nonfinite_frames", "gave NaN or infinite values"),
                            ("saturated_frames", "gave 0-255 values, not the contract's 0-1"),
                        ):
                            # The engine warns a run of it; the table looked like any model's.
                            bad = getattr(backend, count, 0)
                            if isinstance(bad, int) and bad > 0:
                                note = f"{label}: the model {said}: its output is not usable"
                                if note not in report.notes:  # once, not once per size
                                    report.notes.append(note)
                        ran = getattr(backend, "inference_precision", None)
                        if label in forced and ran and ran != precision:
                            # OpenVINO falls back where the CPU lacks the type: bf16 without
                            # AVX-512 BF16 or AMX runs f32, and the row is not what was asked for.
                            said = (
                                f"{label}: --precision {precision} asked for; this CPU ran {ran} "
                                f"(OpenVINO's fallback where the CPU has no {precision} support)"
                            )
                            if said not in report.notes:  # once, not once per size
                                report.notes.append(said)
                        if isinstance(measured, _ScaleTally):
                            # An `auto` row's times mix every scale it passed through: say which.
                            report.notes.append(
                                f"{label} at {format_size(size)}: {measured.describe()}"
                            )
                        elif (
                            isinstance(backend, ScaledBackend)
                            and scaled_size(size, backend.scale, backend.multiple) == size
                        ):
                            # A "@0.75x" row of a frame a few multiples of the model's wide timed
                            # the full size: its sides round back to it.
                            m = backend.multiple
                            rule = f"multiples of the model's {m}, " if m > 1 else ""
                            report.notes.append(
                                f"{label} at {format_size(size)}: ran at full size ({backend.scale:g}x "
                                f"of it rounds back to it: sides are {rule}at least {MIN_SIZE} px)"
                            )
            except KeyboardInterrupt:
                # The rows measured so far are kept: a long run (every size, a large
                # one on a CPU) stopped near its end showed nothing of them.
                report.interrupted = True
                done = len(report.results)
                report.notes.append(
                    f"stopped by Ctrl-C: {done} row(s) measured before it"
                    if done
                    else "stopped by Ctrl-C before a row was measured"
                )
    finally:
        # Also when a backend asked for by name fails to start after others did: their
        # sessions (and device memory) must not outlive the call.
        for _name, backend in opened:
            _close_quietly(backend)
    return report
