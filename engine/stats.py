"""Pipeline statistics: the snapshot the engine hands out, and the thread-safe recorder behind it.

Rates are measured over a sliding time window, stage times are the median of the most recent
frames (robust to the odd garbage-collection pause), latency percentiles come from the recent
capture-to-sink times.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["EngineStats", "StatsRecorder"]


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine, safe to hand to another thread.

    Times are milliseconds, rates frames per second. Stage times are the median of the recent
    frames; latency is from the frame's capture timestamp to the moment all sinks wrote it.
    """

    mode: str = "live"  # "live" (latest-frame slots, drops) or "offline" (every frame, in order)
    running: bool = False  # threads working (False before start and after the end or stop())
    fps_in: float = 0.0  # frames read from the source per second
    fps_out: float = 0.0  # frames written to the sinks per second
    capture_ms: float = 0.0  # source read + conversion, pacing and sensor waits excluded
    infer_ms: float = 0.0  # backend.process + strength blend
    output_ms: float = 0.0  # all sinks' write() together
    latency_ms_p50: float = 0.0  # capture -> sinks written, median
    latency_ms_p95: float = 0.0  # capture -> sinks written, 95th percentile
    frames_in: int = 0  # frames read from the source
    frames_out: int = 0  # frames written to the sinks
    frames_total: int | None = None  # frames the source will deliver, None when unknown/endless
    dropped: int = 0  # frames overwritten in a latest-frame slot (live mode only)
    reconnects: int = 0  # times a lost camera came back
    backend: str = ""  # backend name ("onnx", "passthrough" when falling back)
    provider: str = ""  # what really runs ("CPUExecutionProvider", "OpenVINO · CPU")
    enabled: bool = True  # False: frames pass through, the backend is not called
    strength: float = 1.0  # blend of output over input, [0, 1]
    # The noise measured in the frames (levels of half-size luma; noise reduction filters from
    # engine.denoise.MIN_SIGMA), also while noise reduction is off (then read every few frames);
    # None while the engine is off or before three frames.
    noise: float | None = None
    # The colour noise, as noise (levels of half-size Cr and Cb; blurred beside grain:
    # engine.denoise.colour_blur).
    colour_noise: float | None = None
    denoise: bool = False  # noise reduction on (it acts once noise reaches MIN_SIGMA)
    size: tuple[int, int] | None = None  # (W, H) of the last frame written
    elapsed_s: float = 0.0  # from start() to now, or to the end of the run once it ended
    warning: str | None = None  # something the user should see (model failed -> passthrough)
    # The same warnings each whole, in the order ``warning`` joins them with "; ": some hold
    # "; " themselves ("output ... failed (...); no longer written"), so ``warning`` cannot be
    # split back into them.
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of all fields."""
        return asdict(self)

    def summary(self) -> str:
        """One status line: ``"29.9 fps · latency 41 ms (p95 55) · 3 dropped · onnx (CPU…)"``."""
        parts = [f"{self.fps_out:5.1f} fps"]
        if self.frames_out:
            parts.append(f"latency {self.latency_ms_p50:.0f} ms (p95 {self.latency_ms_p95:.0f})")
        parts.append(f"model {self.infer_ms:.1f} ms")
        parts.append(f"{self.dropped} dropped")
        if self.reconnects:
            parts.append(f"{self.reconnects} reconnects")
        who = self.backend + (f" ({self.provider})" if self.provider else "")
        if not self.enabled:
            who += " [off]"
        parts.append(who)
        if self.warning:
            parts.append(f"! {self.warning}")
        return " · ".join(parts)


#: The least time (events and the wait after them) a rate is told from: 3 frames per 0.1 s.
MIN_SPAN_S = 0.1
#: How much slower than a burst's gaps the pace after it is: less, and it was no burst.
BURST_PACE = 2.0


class _Rate:
    """Events per second over the last ``window_s`` seconds, falling when events stop."""

    def __init__(self, window_s: float, maxlen: int = 1024):
        self.window_s = window_s
        self.times: deque[float] = deque(maxlen=maxlen)
        self.first: float | None = None  # the stream's first event (add), kept past the deque

    def add(self, t: float) -> None:
        if self.first is None:
            self.first = t
        self.times.append(t)

    def rate(self, now: float) -> float:
        """The rate at ``now`` (the clock of the recorded times), 0 with no event in the window.

        Steady: ``(events - 1)`` intervals over the time from the first to the last event in
        the window. Once the wait since the last event outlasts the mean interval, the excess
        counts too: otherwise a stalled stream kept its last rate until the window emptied
        (a GUI showing "30 fps" for 2 s while nothing was sent). Waits up to one mean interval
        count for nothing, so ordinary jitter does not make the number flicker. A window with
        one event measures from the event before it: a stream slower than one event per window
        (0.5 fps, the slowest a source paces at) read 0 between its events.

        A burst that opens the stream (a camera handing over the frames it queued while the
        model warmed up) counts as its last event, and under :data:`MIN_SPAN_S` of events and
        waiting is too little to tell a rate from (0): 3 frames microseconds apart read
        "932 fps".
        """
        recent = [t for t in self.times if t >= now - self.window_s]
        if len(recent) == 1 and len(self.times) >= 2:
            recent.insert(0, self.times[-2])
        first = self.first if self.first is not None else (self.times[0] if self.times else None)
        if len(recent) >= 3 and recent[0] == first:
            # The stream's first frames: where a burst comes (a camera's queue after the
            # warm-up). Its gaps are under a quarter of the longest of the last three (over the
            # whole window a burst of five frames or more was the median gap), and the pace
            # after the gap that ends it is slower than they are: one long gap (a 300 ms
            # hiccup) ends a run of gaps like those after it, and is no burst's end (30 fps
            # read 3.3). Until a gap after it tells, there is no rate.
            gaps = np.diff(recent)
            quick = float(np.max(gaps[-3:])) / 4
            run = 0
            while run < len(gaps) - 1 and gaps[run] < quick:
                run += 1
            if run:
                after = gaps[run + 1 :]
                if not len(after):
                    return 0.0
                if float(np.median(after)) >= BURST_PACE * float(np.max(gaps[:run])):
                    recent = recent[run:]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        intervals = len(recent) - 1
        span = recent[-1] - recent[0]
        overdue = max(0.0, (now - recent[-1]) - span / intervals)
        if span + overdue < MIN_SPAN_S - 1e-9:  # 3 frames at 30 fps span 0.0999...
            return 0.0
        return intervals / (span + overdue)


def _median(values: deque[float]) -> float:
    return float(np.median(np.fromiter(values, np.float64, len(values)))) if values else 0.0


class StatsRecorder:
    """Counters and windows written by the worker threads, read as an :class:`EngineStats`.

    One lock: each record is a few appends, so contention is negligible next to a frame.
    """

    def __init__(self, *, window_s: float = 2.0, recent: int = 60, latency_recent: int = 240):
        self._lock = threading.Lock()
        self._in = _Rate(window_s)
        self._out = _Rate(window_s)
        self._capture: deque[float] = deque(maxlen=recent)
        self._infer: deque[float] = deque(maxlen=recent)
        self._output: deque[float] = deque(maxlen=recent)
        self._latency: deque[float] = deque(maxlen=latency_recent)
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.last_size: tuple[int, int] | None = None
        self.t_start = time.perf_counter()
        self.t_end: float | None = None

    def finish(self) -> None:
        """The run is over: ``elapsed_s`` stops here (a clip that ended while the window stayed
        open read as a falling "run avg" fps). Later calls keep the first end."""
        with self._lock:
            if self.t_end is None:
                self.t_end = time.perf_counter()

    def frame_in(self, t: float, capture_ms: float) -> None:
        with self._lock:
            self.frames_in += 1
            self._in.add(t)
            self._capture.append(capture_ms)

    def frame_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def inferred(self, infer_ms: float) -> None:
        with self._lock:
            self._infer.append(infer_ms)

    def frame_out(
        self, t: float, output_ms: float, latency_ms: float, size: tuple[int, int]
    ) -> None:
        with self._lock:
            self.frames_out += 1
            self._out.add(t)
            self._output.append(output_ms)
            self._latency.append(latency_ms)
            self.last_size = size

    def rate_in(self, now: float) -> float:
        """Frames read from the source per second at ``now`` (``time.perf_counter()``)."""
        with self._lock:
            return self._in.rate(now)

    def latencies(self) -> list[float]:
        """The recent end-to-end latencies in ms, oldest first."""
        with self._lock:
            return list(self._latency)

    def snapshot(self, **fields: Any) -> EngineStats:
        """An :class:`EngineStats` of the recorded numbers plus ``fields`` (backend, mode...)."""
        now = time.perf_counter()
        with self._lock:
            lat = np.fromiter(self._latency, np.float64, len(self._latency))
            p50, p95 = (float(v) for v in np.percentile(lat, [50, 95])) if lat.size else (0.0, 0.0)
            return EngineStats(
                fps_in=self._in.rate(now),
                fps_out=self._out.rate(now),
                capture_ms=_median(self._capture),
                infer_ms=_median(self._infer),
                output_ms=_median(self._output),
                latency_ms_p50=p50,
                latency_ms_p95=p95,
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                dropped=self.dropped,
                size=self.last_size,
                elapsed_s=(now if self.t_end is None else self.t_end) - self.t_start,
                **fields,
            )
