"""The engine: capture, inference and output on three threads.

::

    source.read() ─▶ [in] ─▶ backend.process + strength blend ─▶ [out] ─▶ sinks, preview
      capture thread          inference thread                      output thread

Live mode links the threads with latest-frame slots of capacity one: a new frame overwrites
the one waiting (counted in ``dropped``), so a slow model lowers the frame rate but never lets
frames pile up into latency. Offline mode links them with small bounded FIFOs: the producer
waits for room, every frame is processed in order and none is lost; the end of the source
drains the pipeline, closes the sinks and sets :attr:`Engine.done`.

Threads are daemons joined with a deadline, so :meth:`Engine.stop` returns within its timeout
even while a slow model call finishes (Ctrl-C). The output thread owns the sinks and closes
them when it ends; the capture thread owns the source likewise. A sink taken out with
:meth:`Engine.detach_sink` is closed by a short-lived helper thread once the write in progress
returns, so the caller (the app's GUI thread) never waits for a stalled device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import cv2
import numpy as np

from engine.backends import warm_up
from engine.denoise import NoiseMeter, TemporalDenoiser
from engine.frames import Frame, check_rgb8
from engine.sinks import FrameSink
from engine.sources import FrameSource
from engine.stats import EngineStats, StatsRecorder

__all__ = ["Engine"]

log = logging.getLogger(__name__)

#: A live source that has delivered nothing for this long, and for three of its frame
#: intervals, is named in the stats' warning: a camera whose read hangs (starved of USB
#: bandwidth, a driver waiting out its own timeout, another app holding it) froze the picture
#: in the call and the preview with nothing said but rates of zero.
STALL_S = 3.0
#: The first frame is given longer: some cameras take seconds to start streaming.
FIRST_FRAME_S = 6.0
#: A live output that has had no new frame for this long (a camera lost or hung, a model call
#: that takes long) is sent its last frame again, as often, by the sinks that keep one
#: (``repeat_last``: the virtual camera). Chrome's capture (Meet, Teams and Zoom in a browser
#: on Linux) restarts a device silent for 1 s and gives it up after 10: the call lost the
#: camera for good where the window said the picture stayed frozen until the camera was back.
RESEND_S = 0.5

_END = object()  # what a channel's get() returns once closed and empty, or aborted
_IDLE = object()  # what a channel's get() with a timeout returns when nothing came in time
_NO_SWAP = object()  # no backend swap waits (None is a backend too: passthrough)


class _Channel:
    """Hand-off between two threads: a latest-value slot (``overwrite``) or a bounded FIFO.

    ``put`` returns ``(accepted, displaced)``: in overwrite mode ``displaced`` is the item a
    full slot gave up; in FIFO mode ``put`` waits for room instead. ``close()`` lets getters
    drain what is left, then get ``_END``; ``abort()`` empties the channel and wakes everyone.
    """

    def __init__(self, capacity: int, *, overwrite: bool):
        self._items: deque[Any] = deque()
        self._capacity = max(1, capacity)
        self._overwrite = overwrite
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False

    def put(self, item: Any) -> tuple[bool, Any]:
        with self._cond:
            displaced = None
            if self._overwrite:
                if len(self._items) >= self._capacity:
                    displaced = self._items.popleft()
            else:
                while len(self._items) >= self._capacity and not (self._closed or self._aborted):
                    self._cond.wait()
            if self._closed or self._aborted:
                return False, displaced
            self._items.append(item)
            self._cond.notify_all()
            return True, displaced

    def get(self, timeout: float | None = None) -> Any:
        """The next item, or ``_END``; ``_IDLE`` when ``timeout`` passed with none."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not (self._closed or self._aborted):
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return _IDLE
                self._cond.wait(left)
            if self._aborted or not self._items:
                return _END
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> list[Any]:
        with self._cond:
            self._aborted = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left


class _BufferPool:
    """Recycled ``(H, W, 3) uint8`` output buffers, so the hot loop does not allocate.

    The inference thread takes one per frame and the output thread gives it back once the
    sinks wrote it. A backend may reuse its own output buffer on the next call, so its result
    is always copied (or blended) into a pool buffer before crossing to another thread.
    """

    def __init__(self, keep: int = 8):
        self._free: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def acquire(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            while self._free:
                buf = self._free.pop()
                if buf.shape == shape:
                    return buf
        return np.empty(shape, np.uint8)

    def release(self, buf: np.ndarray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)


class _Work:
    """A frame on its way out: the original, the processed one, and whether it is pooled."""

    __slots__ = ("original", "processed", "pooled")

    def __init__(self, original: Frame, processed: Frame, pooled: bool):
        self.original = original
        self.processed = processed
        self.pooled = pooled


class Engine:
    """Run ``source -> backend -> sinks`` on three threads.

    Args:
        source: a :class:`engine.sources.FrameSource` (any object with ``read()``, ``close()``;
            ``interrupt()``, ``reconnects``, ``last_wait_s``, ``frame_count`` are used if
            present).
        backend: object with ``name``, ``provider``, ``process(rgb) -> rgb`` on
            ``(H, W, 3) uint8 RGB`` and ``close()``; ``None`` passes frames through.
        sinks: where processed frames go (more can be added while running).
        live: latest-frame slots, drops instead of queues (default: ``source.live``); False
            processes every frame in order through bounded queues.
        strength: blend of model output over input in [0, 1] (0 = the input, backend skipped).
        enabled: False passes frames through without calling the backend.
        denoise: reduce noise over time (:class:`engine.denoise.TemporalDenoiser`) before the
            backend sees a frame; it acts only on noisy frames (poor light), also at strength
            0 (noise reduction alone), and is off while the engine is off or its backend failed.
            While it is off the noise is still measured now and then (:class:`NoiseMeter`), so
            a grainy camera can be told about it (:attr:`noise_level`).
        on_stats: called with an :class:`EngineStats` every ``stats_interval`` seconds from a
            stats thread, and once more at the end.
        on_preview: ``on_preview(original, processed)`` at most ``preview_fps`` times a second
            from the output thread; both frames are the callback's to keep.
        on_error: called with every exception a worker meets (source, backend, sink or
            callback). Without it errors are logged. :attr:`errors` keeps them all.
        queue_size: capacity of each offline FIFO.
        warning: a warning to show from the start (e.g. "model missing, passthrough").
        close_backend: close the backend when the inference thread ends (after its last call).
        warm_up: live mode only: the inference thread first calls the backend once on a blank
            frame of the source's size, and capture begins after it (OpenVINO compiles for a
            frame size on its first call: a second or more on two cores, whose frames were
            dropped); not when the engine starts off or at strength 0. A :meth:`stop`
            meanwhile waits for that call at most its ``timeout``, as for any model call.

    In live mode a sink with ``repeat_last()`` (the virtual camera) is asked to send its last
    frame again every :data:`RESEND_S` while no new frame comes. A backend that raises is
    reported once, and the engine keeps streaming in passthrough with ``stats().warning`` set;
    in offline mode any backend or sink error stops the run (a silently incomplete output file
    is worse than none).
    """

    def __init__(
        self,
        source: FrameSource,
        backend: Any,
        *,
        sinks: Iterable[FrameSink] = (),
        live: bool | None = None,
        strength: float = 1.0,
        enabled: bool = True,
        denoise: bool = False,
        on_stats: Callable[[EngineStats], Any] | None = None,
        on_preview: Callable[[Frame, Frame], Any] | None = None,
        preview_fps: float = 15.0,
        on_error: Callable[[BaseException], Any] | None = None,
        stats_interval: float = 0.5,
        queue_size: int = 4,
        warning: str | None = None,
        close_backend: bool = False,
        warm_up: bool = False,
    ):
        self.source = source
        self._backend = backend
        self._sinks: list[FrameSink] = list(sinks)
        self.live = bool(getattr(source, "live", True) if live is None else live)
        self._strength = 1.0
        self.set_strength(strength)
        self._enabled = bool(enabled)
        # Asked for by any thread; the inference thread alone runs (and resets) the filter.
        self._denoise = bool(denoise)
        self._denoising = False
        self._denoiser = TemporalDenoiser()
        self._denoise_s = 0.0  # its recent time per frame (a running mean), 0 while off
        self._metering = False  # measuring the noise of frames the filter does not see
        self._meter = NoiseMeter()
        self._on_stats = on_stats
        self._on_preview = on_preview
        self._preview_period = 1.0 / preview_fps if preview_fps and preview_fps > 0 else 0.0
        self._on_error = on_error
        self._stats_interval = max(0.05, float(stats_interval))
        self._warning = warning
        self._failure_warning: str | None = None  # set when the backend fails (live mode)
        # Set when the backend first reports non-finite model output (its nonfinite_frames).
        self._nonfinite_warning: str | None = None
        # Set when the backend first reports an output of 0-255 (its saturated_frames).
        self._range_warning: str | None = None
        self._failed_sinks: list[tuple[FrameSink, BaseException]] = []
        self._failures_warned_from = 0  # failed_sinks before this were followed by add_sink
        # Offline: a source, backend, sink or output failure, or a stop() before the source's
        # end, lost frames (callback errors and errors while closing do not), so sinks that can
        # tell are aborted as incomplete.
        self._frames_lost = False
        self._frames_captured = 0  # frames the capture thread handed on
        self._frames_handled = 0  # frames the output thread took (written or not)
        self._source_ended = False  # read() returned None, not because of a stop
        self._last_capture: float | None = None
        # perf_counter when capture began (after the warm-up) and when the last read returned
        # a frame: what a stall is measured from. Set by the capture thread only.
        self._capture_began: float | None = None
        self._last_read: float | None = None
        self._capture_over = False  # the capture thread ended: nothing more is awaited
        # A live source whose rate is the one asked for, unconfirmed: see _follow_rate.
        self._unconfirmed_rate = self.live and getattr(source, "fps_reported", True) is False
        self._next_follow = 0.0
        self._failure: BaseException | None = None  # what ended the run early
        self._close_backend = close_backend
        self._warm_up = bool(warm_up) and self.live
        # Set once the warm-up call returned (or there is none), or by stop(): capture waits.
        self._warmed = threading.Event()
        if not self._warm_up:
            self._warmed.set()

        capacity = 1 if self.live else queue_size
        self._in = _Channel(capacity, overwrite=self.live)
        self._out = _Channel(capacity, overwrite=self.live)
        self._pool = _BufferPool(keep=capacity + 4)
        self._stats = StatsRecorder()

        self._lock = threading.Lock()  # engine state: start/stop, backend swap, errors
        # Held for a whole pass of writes, so remove_sink waits for a write in progress;
        # reentrant, so a sink's own write (a callback) may add or remove sinks, itself included.
        self._sinks_lock = threading.RLock()
        # Held only for a moment, around every change of the sink list and the closer list:
        # add_sink and detach_sink must not wait for a stalled write under _sinks_lock. Taken
        # after _sinks_lock where both are held, never before it.
        self._list_lock = threading.RLock()
        self._closers: list[threading.Thread] = []  # closing detached sinks, replaced backends
        # False once no pass of writes will list a new sink (the output thread closed its sinks,
        # or stop() began): add_sink then closes the sink at once. Under _list_lock.
        self._accepting_sinks = True
        self._write_began = 0.0  # perf_counter when that write began
        self._writing: FrameSink | None = None  # the sink in a write now; set under _list_lock
        # (cleared after the write without it)
        self._pending_backend: Any = _NO_SWAP
        self._passthrough = False  # the backend failed in live mode
        # Under _lock: the inference thread may still call the backend or take a pending swap;
        # and whether close_backend's closing happened (a backend set after it is closed at once).
        self._infer_running = False
        self._backends_closed = False
        # keep_backend: the last backend is kept for take_backend instead of closed (under
        # _lock); set once the inference side is over and the backend kept or closed.
        self._keep_backend = False
        self._kept: Any = None
        self._backend_free = threading.Event()
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopping = False
        self._stop_ran = False  # stop() has closed what it could: a second one only joins
        self._running = False
        self._done = threading.Event()  # output finished: sinks closed, nothing more comes
        self._halt = threading.Event()  # done or stop(): ends the stats thread
        self._next_preview = 0.0

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the threads. An engine runs once; make a new one to run again.

        Raises what starting a thread raised (``RuntimeError: can't start new thread``) after
        the engine stopped what it had started and closed its source, sinks and (with
        ``close_backend``) backend: a failed start leaves nothing open.
        """
        targets = [
            ("capture", self._capture_loop),
            ("inference", self._infer_loop),
            ("output", self._output_loop),
        ]
        if self._on_stats is not None:
            targets.append(("stats", self._stats_loop))
        # Listed and started under the lock: a stop() from another thread during start-up found
        # no thread to join, returned True, and the threads started after it.
        with self._lock:
            if self._started or self._stopping:
                raise RuntimeError("engine already started; create a new Engine to run again")
            self._started = True
            self._running = True
            self._infer_running = True
            self._stats = StatsRecorder()
            error: BaseException | None = None
            try:
                for name, fn in targets:
                    t = threading.Thread(target=fn, name=f"sharpcam-{name}", daemon=True)
                    t.start()
                    # Only started threads are listed: joining an unstarted one raises.
                    self._threads.append(t)
            except BaseException as exc:
                error = exc
                if not any(t.name == "sharpcam-inference" for t in self._threads):
                    self._infer_running = False
        if error is not None:
            self.stop(timeout=1.0)
            raise error

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop, join the threads within ``timeout`` seconds in all, close sinks and source.

        Idempotent. Returns True when every thread ended in time. A thread still inside a slow
        ``backend.process`` call is left to finish it (daemon); the sinks and the source are
        closed by their own threads, which do not wait for the model, so an output file is
        complete when this returns. A sink stalled in ``write`` is closed by the output thread
        once that write returns; the other sinks are closed here when the time is up.
        """
        deadline = time.perf_counter() + max(0.0, timeout)
        with self._lock:
            again, self._stop_ran = self._stop_ran, True
        if again:
            # Only the joins: the first stop closed what it could, and a thread still running
            # closes what it holds when it returns. A thread that a Ctrl-C cut out of its join
            # reads as ended (Python 3.11 marks it so), and closing its sink again waited
            # forever on the lock of the write it is stuck in: `run` hung on a second Ctrl-C.
            return self.join(timeout=max(0.0, timeout))
        self._stats.finish()
        with self._lock:
            self._stopping = True
            self._running = False
        self._warmed.set()  # capture does not wait for a warm-up call in progress
        # Whether an offline output is complete is the output thread's to judge when it ends
        # (all the source's frames written, or not): judged here, a stop() that came while it
        # closed the sinks of a finished run turned complete files into incomplete ones.
        self._abort()
        with self._list_lock:
            # No pass of writes starts after the abort: a sink added from now on is closed at
            # once rather than listed where nothing writes or closes it.
            self._accepting_sinks = False
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(max(0.0, deadline - time.perf_counter()))
        threads = {t.name.removeprefix("sharpcam-"): t for t in self._threads}
        if "capture" not in threads or not threads["capture"].is_alive():
            self._close_source()
        if "inference" not in threads:
            self._end_backends()  # never ran: with close_backend, the backend is still ours
        if "output" not in threads or not threads["output"].is_alive():
            self._close_sinks()
            self._done.set()
        elif threads["output"] is not me:
            self._close_idle_sinks()
        self._running = False
        # Detached sinks still closing (after a write in progress): the caller may release
        # the device next (the app's next start), so they get the rest of the deadline too.
        closers = self._pending_closers()
        for t in closers:
            if t is not me:
                t.join(max(0.0, deadline - time.perf_counter()))
        alive = [t for t in (*self._threads, *closers) if t.is_alive() and t is not me]
        return not alive

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every engine thread to end (call after :meth:`stop`); True when none is left.

        Before the process exits: a thread still inside a native call when the interpreter shuts
        down (OpenVINO compiling the model for a new processing size under ``--scale auto``)
        aborts the whole process ("terminate called without an active exception", exit 134),
        after the output was complete.
        """
        deadline = None if timeout is None else time.perf_counter() + max(0.0, timeout)
        me = threading.current_thread()
        threads = [*self._threads, *self._pending_closers()]
        for t in threads:
            if t is not me:
                t.join(None if deadline is None else max(0.0, deadline - time.perf_counter()))
        return not any(t.is_alive() for t in threads if t is not me)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run is over (source ended and drained, or stopped); True if it is."""
        if not self._started and not self._stopping:
            raise RuntimeError("engine not started")
        return self._done.wait(timeout)

    @property
    def done(self) -> threading.Event:
        """Set when the output thread finished: every frame written, sinks closed."""
        return self._done

    @property
    def complete(self) -> bool:
        """Offline: the run is over and every frame the source gave reached the sinks, the
        source having ended on its own (its sinks were closed as finished, not aborted); a
        :meth:`stop` that came after that does not make it incomplete. False while running,
        and after a stop or failure that cut the run short."""
        return not self.live and self._done.is_set() and not self._frames_lost

    @property
    def running(self) -> bool:
        return self._running and not self._done.is_set()

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the run before the source's end (the source's ``read``
        raised, a worker failed, offline: a sink failed); None while running, after the
        source's end, and when :meth:`stop` ended the run. Set before it is reported to
        ``on_error``, so a callback can tell an error that ends the stream from one the stream
        goes on after."""
        return self._failure

    @property
    def source_ended(self) -> bool:
        """The source ended on its own (its ``read()`` returned None, not at a stop): a timed
        recording then ends at its last frame, whatever stops the engine after that."""
        return self._source_ended

    @property
    def last_capture(self) -> float | None:
        """``t_capture`` of the newest frame the source delivered (``time.perf_counter()``),
        None before the first. What a timed recording's ``mark_stop`` takes to tell a model
        still busy at the stop from a camera that had stalled before it."""
        return self._last_capture

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ settings

    def set_strength(self, strength: float) -> None:
        """Blend of model output over input, clamped to [0, 1]; applies from the next frame."""
        s = float(strength)
        self._strength = 0.0 if s != s else min(1.0, max(0.0, s))  # NaN -> 0

    @property
    def strength(self) -> float:
        return self._strength

    def set_enabled(self, enabled: bool) -> None:
        """False: frames pass through unprocessed and the backend is not called."""
        self._enabled = bool(enabled)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_denoise(self, on: bool) -> None:
        """Reduce noise over time from the next frame on (a new average each time it turns on)."""
        self._denoise = bool(on)

    @property
    def denoise(self) -> bool:
        return self._denoise

    @property
    def noise_level(self) -> float | None:
        """The noise measured in the frames (levels of half-size luma; noise reduction filters
        from :data:`engine.denoise.MIN_SIGMA`), whether noise reduction is on or not: while it
        is off, a rougher reading taken every :attr:`NoiseMeter.every` frames. ``None`` before
        three frames were seen, and while the engine is off or its backend failed."""
        if self._denoising:
            return self._denoiser.sigma
        return self._meter.sigma if self._metering else None

    @property
    def colour_noise_level(self) -> float | None:
        """The colour noise measured in the frames (levels of half-size Cr and Cb; noise
        reduction blurs it beside grain, :func:`engine.denoise.colour_blur`), as
        :attr:`noise_level`."""
        if self._denoising:
            return self._denoiser.colour_sigma
        return self._meter.colour_sigma if self._metering else None

    def set_backend(self, backend: Any) -> None:
        """Swap the backend between two frames (``None``: pass frames through). The replaced
        backend is closed by the engine (after its last call, on a thread of its own, which
        :meth:`stop` and :meth:`join` wait for), and a passthrough fallback is lifted. A swap
        still pending when another comes is dropped and its backend closed: it never ran."""
        late = None
        with self._lock:
            # The flag, not the thread's liveness: a thread past its last frame but not yet
            # ended took no swap and closed only the backends it had found.
            if self._infer_running:
                old, self._pending_backend = self._pending_backend, backend
                if old is self._backend:
                    # A pending swap back to the backend in use: replacing it must not close
                    # the backend the inference thread is calling.
                    old = _NO_SWAP
            else:
                old, self._backend = self._backend, backend
                self._passthrough = False
                self._failure_warning = None
                self._nonfinite_warning = self._range_warning = None
                if self._backends_closed:
                    # The run is over and closed its backend (close_backend): nothing will call
                    # this one, and nothing would close it later.
                    old, late = _NO_SWAP, backend
        if old is not None and old is not _NO_SWAP and old is not backend:
            _close_quietly(old)
        if late is not None:
            _close_quietly(late)

    @property
    def backend(self) -> Any:
        return self._backend

    def keep_backend(self) -> bool:
        """Keep the backend open when the run ends, for :meth:`take_backend` to hand on (a
        restart on another source with the same model need not load and compile it again),
        instead of closing it as ``close_backend`` says. Call it before :meth:`stop`. False
        when there is nothing to keep: the engine does not close its backend, closed it
        already, or the backend failed (live mode passes frames through after that)."""
        with self._lock:
            if not self._close_backend or self._backends_closed or self._passthrough:
                return False
            self._keep_backend = True
            return True

    def take_backend(self, timeout: float) -> Any:
        """The backend :meth:`keep_backend` kept, once the inference thread has made its last
        call (waited for up to ``timeout`` seconds): the caller's from then on, to use or to
        close; the engine neither calls nor closes it any more. None when the inference side is
        not over in time (the engine closes the backend when it is), or the backend failed
        first (closed); a second call returns None too."""
        self._backend_free.wait(max(0.0, timeout))
        with self._lock:
            kept, self._kept = self._kept, None
            # Not over in time: closed at the end of the run after all, as close_backend says.
            self._keep_backend = False
        return kept

    @property
    def nonfinite_warning(self) -> str | None:
        """What the stats' warning says once the model gave NaN or infinite values (the
        input stood in there); None until then."""
        return self._nonfinite_warning

    @property
    def range_warning(self) -> str | None:
        """What the stats' warning says once the model's output looked like 0-255, not the
        contract's 0-1 (a picture almost all white); None until then."""
        return self._range_warning

    def set_warning(self, warning: str | None) -> None:
        """Replace the warning given at construction (None: none): the stats stop saying it,
        e.g. "model missing, passthrough" once a caller has swapped in a model that loaded."""
        self._warning = warning

    def add_sink(self, sink: FrameSink, *, close: bool = True) -> bool:
        """Start writing to ``sink`` from the next frame (thread-safe); True when attached.

        The stats stop warning about outputs that failed before: the new output replaces them
        (the app's virtual camera turned on again), and a failure of its own must read as new.

        Once the run is over (the source ended and the sinks were closed, or :meth:`stop` was
        called) no frame will reach ``sink``: it is closed at once and False is returned, so a
        device or file is never left open waiting for a :meth:`stop` that may never come.
        ``close=False``: left open then, for the caller to close (a GUI thread must not wait
        for a device that another thread is still sending to).
        """
        if self._accepting_sinks:  # a hint; decided under _list_lock below
            # Before the sink is listed: the output thread may write it (and see it fail) at
            # once, and that failure must count as new.
            with self._lock:
                self._failures_warned_from = len(self._failed_sinks)
        # Not under _sinks_lock: a write stalled there (a hung virtual camera) would freeze the
        # caller too. The writer lists the sinks afresh for every frame, so this one is written
        # from the next frame on.
        with self._list_lock:
            attached = self._accepting_sinks
            if attached and sink not in self._sinks:
                self._sinks.append(sink)
        if not attached and close:
            self._end_sink(sink)
        return attached

    def remove_sink(self, sink: FrameSink, *, close: bool = True) -> bool:
        """Stop writing to ``sink`` (thread-safe; waits for a write in progress to finish) and
        close it unless ``close=False``. Returns False if it was not attached.

        A caller that must not block on a stalled sink (a GUI thread) uses :meth:`detach_sink`.
        """
        with self._sinks_lock, self._list_lock:
            if sink not in self._sinks:
                return False
            self._sinks.remove(sink)
        if close:
            try:
                sink.close()
            except Exception as exc:
                self._report(exc)
        return True

    def detach_sink(self, sink: FrameSink, *, close: bool = True) -> bool:
        """Stop writing to ``sink`` and close it, without waiting for a write in progress.

        Returns at once (thread-safe). Later frames do not go to ``sink``; a write already in
        progress may still finish on it, and a helper thread closes it when that pass of writes
        is over (a device must not be closed under its own ``send``): exactly once, also
        when the engine stops meanwhile. :meth:`stop` and :meth:`join` wait for that close
        within their timeouts; an error it raises goes to ``on_error`` like any other.

        ``close=False``: not closed, neither now nor when the engine stops; the caller's from
        then on (the app hands its open virtual camera on to the next engine). A write in
        progress may still be finishing on it, so the caller serialises its own writes and
        its close with that one (the app's sink wrapper holds a lock around each).

        Returns False if ``sink`` was not attached (the engine dropped it after a failed write
        and closed it, or its run ended and closed it): nothing is closed then.
        """
        with self._list_lock:
            if sink not in self._sinks:
                return False
            self._sinks.remove(sink)
            if close:
                self._close_beside(self._close_detached, sink, "sharpcam-close-sink")
        return True

    def _close_beside(self, close: Callable[[Any], None], obj: Any, name: str) -> None:
        """``close(obj)`` on a thread of its own, listed for :meth:`stop` and :meth:`join`."""
        closer = threading.Thread(target=close, args=(obj,), name=name, daemon=True)
        with self._list_lock:  # reentrant: detach_sink holds it already
            self._closers = [t for t in self._closers if t.is_alive()]
            self._closers.append(closer)
            # Started under the lock: stop() must never find it listed but not started (an
            # unstarted thread cannot be joined).
            closer.start()

    def _close_detached(self, sink: FrameSink) -> None:
        # The output thread holds _sinks_lock for a whole pass of writes: once it is free, the
        # write that may have used this sink has returned, and no later pass lists it.
        with self._sinks_lock:
            pass
        try:
            sink.close()
        except Exception as exc:
            self._report(exc)

    def _pending_closers(self) -> list[threading.Thread]:
        with self._list_lock:
            return list(self._closers)

    @property
    def sinks(self) -> tuple[FrameSink, ...]:
        # Not under _sinks_lock: that is held for a whole write, and the app's GUI thread polls
        # this, so a stalled virtual camera froze the window (it could not even be closed). The
        # list is only changed in place or replaced, and copying it is atomic.
        return tuple(self._sinks)

    @property
    def failed_sinks(self) -> list[tuple[FrameSink, BaseException]]:
        """Sinks dropped because ``write`` raised, with the exception, oldest first."""
        with self._lock:
            return list(self._failed_sinks)

    @property
    def errors(self) -> list[BaseException]:
        """Every exception reported so far, oldest first."""
        with self._lock:
            return list(self._errors)

    # ------------------------------------------------------------------ stats

    def stats(self) -> EngineStats:
        """A snapshot of the current statistics."""
        backend = self._backend
        if backend is None or self._passthrough:
            name, provider = "passthrough", ""
        else:
            name = str(getattr(backend, "name", type(backend).__name__))
            provider = str(getattr(backend, "provider", ""))
        warnings = [
            w
            for w in (
                self._warning,
                self._failure_warning,
                self._nonfinite_warning,
                self._range_warning,
            )
            if w
        ]
        with self._lock:
            failed = (
                self._failed_sinks[-1]
                if len(self._failed_sinks) > self._failures_warned_from
                else None
            )
        if failed is not None:
            warnings.append(
                f"output {_describe(failed[0])} failed ({failed[1]}); no longer written"
            )
        if getattr(self.source, "reconnecting", False):
            warnings.append("camera lost, reconnecting")
        else:
            stall = self._stall()
            if stall is not None:
                warnings.append(stall)
        behind = getattr(self.source, "falling_behind", None)
        if isinstance(behind, str) and behind and self.live and self._running:
            warnings.append(behind)
        return self._stats.snapshot(
            mode="live" if self.live else "offline",
            running=self.running,
            frames_total=getattr(self.source, "frame_count", None),
            reconnects=int(getattr(self.source, "reconnects", 0) or 0),
            backend=name,
            provider=provider,
            enabled=self._enabled,
            strength=self._strength,
            noise=self.noise_level,
            colour_noise=self.colour_noise_level,
            denoise=self._denoising,
            warning="; ".join(warnings) or None,
            warnings=tuple(warnings),
        )

    def _follow_rate(self, backend: Any, now: float) -> None:
        """Tell ``backend`` (``follow_rate``: a ``ScaledBackend`` at ``auto``) the rate frames
        really arrive at, once a second. A camera whose driver reports no rate (Media
        Foundation, AVFoundation) was taken to run at the rate asked for: at 15 fps in dim
        light, ``auto`` kept a 30 fps budget and lowered the resolution for nothing."""
        self._next_follow = now + 1.0
        follow = getattr(backend, "follow_rate", None)
        rate = self._stats.rate_in(now)
        if callable(follow) and rate > 0 and self._stats.frames_in >= 10:
            follow(rate)

    def _stall(self) -> str | None:
        """The warning for an output whose write has hung for :data:`STALL_S`, or a live
        source silent past it (:data:`FIRST_FRAME_S` before its first frame), or None. Its
        words stay the same while the stall lasts: the window shows each new warning once."""
        began, last = self._capture_began, self._last_read
        if not self.live or not self._running or began is None or self._stopping:
            return None
        writing, since = self._writing, self._write_began
        if writing is not None and time.perf_counter() - since >= STALL_S:
            # A virtual camera whose driver stopped taking frames: the call's picture and the
            # preview (shown after the writes) froze, and capture went on as if all was well.
            return f"output {_describe(writing)} has taken no frame for over {STALL_S:.0f} s"
        if self._capture_over:
            # Its end (or failure): a slow model still working through the last frames of a
            # clip was called a stalled source.
            return None
        fps = getattr(self.source, "fps", None)
        interval = 1.0 / fps if isinstance(fps, (int, float)) and fps > 0 else 0.0
        limit = max(STALL_S if last is not None else FIRST_FRAME_S, 3 * interval)
        if time.perf_counter() - (last if last is not None else began) < limit:
            return None
        what = "camera" if getattr(self.source, "reconnecting", None) is not None else "source"
        if last is None:
            return f"no frame from the {what} in its first {limit:.0f} s"
        return f"the {what} has sent no frame for over {limit:.0f} s"

    def latencies_ms(self) -> list[float]:
        """The recent capture-to-sink latencies in ms (up to 240), oldest first."""
        return self._stats.latencies()

    # ------------------------------------------------------------------ workers

    def _capture_loop(self) -> None:
        src = self.source
        read = src.read
        try:
            self._warmed.wait()
            self._capture_began = time.perf_counter()
            what = f"source {_describe(src)}"
            while not self._stopping:
                t0 = time.perf_counter()
                frame = read()
                if frame is None:
                    # An interrupted read() returns None too: only one no stop asked for is
                    # the source's end.
                    self._source_ended = not self._stopping
                    break
                # A registered source's grey or float frame reached the model, which failed
                # on it and stayed off for the rest of the stream, and the error blamed the
                # output: it ends the stream here, naming the source.
                check_rgb8(frame.image, what)
                self._last_capture = frame.t_capture
                t1 = self._last_read = time.perf_counter()
                waited = getattr(src, "last_wait_s", 0.0) or 0.0
                self._stats.frame_in(t1, max(0.0, t1 - t0 - waited) * 1000.0)
                accepted, displaced = self._in.put(frame)
                if displaced is not None:
                    self._stats.frame_dropped()
                if not accepted:
                    break
                self._frames_captured += 1
        except BaseException as exc:
            # A failed source ends the stream; what is in flight still drains to the sinks.
            self._frames_lost = True
            self._set_failure(exc)
            self._report(exc)
        finally:
            self._capture_over = True
            self._in.close()
            self._close_source()

    def _warm_up_backend(self) -> None:
        """One call on a blank frame before capture begins (``warm_up``); a failure is left for
        the first real frame to meet and report."""
        try:
            backend = self._backend
            size = getattr(self.source, "size", None)
            # Off or at strength 0 the stream calls no model: its first frame would wait for
            # nothing (a turn-on later compiles in the stream, as before).
            on = self._enabled and self._strength > 0 and not self._stopping
            if backend is not None and size and on:
                warm_up(backend, size)
        finally:
            self._warmed.set()

    def _infer_loop(self) -> None:
        if self._warm_up:
            self._warm_up_backend()
        try:
            while True:
                frame = self._in.get()
                if frame is _END:
                    break
                if self._pending_backend is not _NO_SWAP:
                    self._swap_backend()
                work = self._process(frame)
                accepted, displaced = self._out.put(work)
                if displaced is not None:
                    self._stats.frame_dropped()
                    if displaced.pooled:
                        self._pool.release(displaced.processed.image)
                if not accepted:
                    break
        except BaseException as exc:
            # Stop reading, but let the frames already processed reach the sinks.
            self._frames_lost = True
            self._set_failure(exc)
            self._report(exc)
            self._stop_input()
        finally:
            self._out.close()
            self._end_backends()

    def _end_backends(self) -> None:
        """The inference side is over (its thread ended, or never ran): a swap it did not take
        is made, so the replaced backend is closed as :meth:`set_backend` promises; with
        ``close_backend`` the last backend is closed, once."""
        close: list[Any] = []
        with self._lock:
            self._infer_running = False
            # A backend that failed is closed, never handed on; one swapped in now never ran.
            failed = self._passthrough
            if self._pending_backend is not _NO_SWAP:
                replaced, self._backend = self._backend, self._pending_backend
                self._pending_backend = _NO_SWAP
                failed = False
                if replaced is not self._backend:
                    close.append(replaced)
            if self._close_backend and not self._backends_closed:
                self._backends_closed = True
                if self._keep_backend and not failed and self._backend is not None:
                    self._kept = self._backend
                else:
                    close.append(self._backend)
        done: list[Any] = []
        try:
            for backend in close:
                if backend is not None and not any(backend is d for d in done):
                    done.append(backend)
                    _close_quietly(backend)
        finally:
            self._backend_free.set()

    def _swap_backend(self) -> None:
        with self._lock:
            old, self._backend = self._backend, self._pending_backend
            self._pending_backend = _NO_SWAP
            self._passthrough = False
            self._failure_warning = None
            self._nonfinite_warning = self._range_warning = None
        if old is not None and old is not self._backend:
            # Not on this thread: a ScaledBackend readying a size waits for that compile
            # (seconds) before it closes, and no frame went through meanwhile (1.9 s frozen).
            self._close_beside(_close_quietly, old, "sharpcam-close-backend")

    def _process(self, frame: Frame) -> _Work:
        """Reduce the noise (when asked), run the backend and blend; passthrough when off or
        after a failure, and no backend call at strength 0."""
        backend = self._backend
        strength = self._strength
        if backend is None or not self._enabled or self._passthrough:
            # Its average is stale once frames go by unseen: a new one when processing resumes.
            self._denoising = self._metering = False
            return _Work(frame, frame, False)
        src = frame.image
        if self._denoise != self._denoising:
            self._denoising = self._denoise
            self._denoiser.reset()
            self._denoise_s = 0.0
        if self._denoising:
            t_denoise = time.perf_counter()
            src = self._denoiser(src)
            took = time.perf_counter() - t_denoise
            self._denoise_s = took if not self._denoise_s else 0.9 * self._denoise_s + 0.1 * took
            self._metering = False
        else:
            if not self._metering:
                self._metering = True
                self._meter.reset()
            self._meter(src)
        set_overhead = getattr(backend, "set_overhead", None)
        if set_overhead is not None:
            set_overhead(self._denoise_s)  # 0 while off: --scale auto budgets for it
        t0 = time.perf_counter()
        if strength <= 0.0:
            # Noise reduction alone: a frame of the denoiser's own (it keeps a copy), or the input.
            if src is frame.image:
                return _Work(frame, frame, False)
            return _Work(frame, Frame(src, frame.index, frame.t_capture), False)
        if self._unconfirmed_rate and t0 >= self._next_follow:
            self._follow_rate(backend, t0)
        bad_before = getattr(backend, "nonfinite_frames", 0)
        white_before = getattr(backend, "saturated_frames", 0)
        try:
            result = backend.process(src)
            if (
                not isinstance(result, np.ndarray)
                or result.shape != src.shape
                or result.dtype != np.uint8
            ):
                got = (
                    f"{tuple(result.shape)} {result.dtype}"
                    if isinstance(result, np.ndarray)
                    else type(result).__name__
                )
                raise ValueError(
                    f"backend {getattr(backend, 'name', backend)!r} returned {got}, "
                    f"expected {tuple(src.shape)} uint8"
                )
        except Exception as exc:
            if not self.live:
                raise
            self._passthrough = True
            name = getattr(backend, "name", type(backend).__name__)
            self._failure_warning = f"backend {name} failed ({exc}); passing frames through"
            self._report(exc)
            return _Work(frame, frame, False)
        if self._nonfinite_warning is None:
            # This frame's call, not the warm-up's blank frame or an earlier stream's.
            bad = getattr(backend, "nonfinite_frames", 0)
            if isinstance(bad, int) and isinstance(bad_before, int) and bad > bad_before:
                # Words that do not change: `run` prints a warning once, the window shows it
                # once. No "; ": it joins the engine's warnings.
                self._nonfinite_warning = (
                    f"the model gave NaN or infinite values (first in frame {frame.index + 1}): "
                    "the input is shown there"
                )
        if self._range_warning is None:
            white = getattr(backend, "saturated_frames", 0)
            if isinstance(white, int) and isinstance(white_before, int) and white > white_before:
                self._range_warning = (
                    f"the model's output looks like 0-255, not the contract's 0-1 (frame "
                    f"{frame.index + 1} came out almost all white): scale it to 0-1 in the model"
                )
        buf = self._pool.acquire(src.shape)
        if strength >= 1.0:
            np.copyto(buf, result)
        else:
            cv2.addWeighted(src, 1.0 - strength, result, strength, 0.0, dst=buf)
        self._stats.inferred((time.perf_counter() - t0) * 1000.0)
        return _Work(frame, Frame(buf, frame.index, frame.t_capture), True)

    def _output_loop(self) -> None:
        idle = RESEND_S if self.live else None
        try:
            while True:
                work = self._out.get(idle)
                if work is _IDLE:
                    if not self._stopping:
                        self._write_sinks(None)
                    continue
                if work is _END:
                    break
                self._frames_handled += 1
                out = work.processed
                t0 = time.perf_counter()
                written = self._write_sinks(out)
                t1 = time.perf_counter()
                if written:
                    self._stats.frame_out(
                        t1, (t1 - t0) * 1000.0, (t1 - out.t_capture) * 1000.0, out.size
                    )
                slack = 0.5 * self._preview_period
                if self._on_preview is not None and t1 + slack >= self._next_preview:
                    # Deadlines one period after the previous deadline (not after "now"), with
                    # half a period of slack: frames arrive with jitter, and "now + period"
                    # skipped every other frame at preview_fps == camera fps. Never more than
                    # half a period behind, so a stall is not followed by a burst.
                    self._next_preview = max(self._next_preview, t1 - slack) + self._preview_period
                    self._preview(work)
                if work.pooled:
                    self._pool.release(out.image)
        except BaseException as exc:
            self._fail(exc)
        finally:
            # Judged here, before the sinks are closed: complete only when the source ended on
            # its own and every frame it gave reached this thread. A stop() in the middle makes
            # the output incomplete; one that comes after the last frame does not.
            if not self.live and not (
                self._source_ended and self._frames_handled == self._frames_captured
            ):
                self._frames_lost = True
            self._stats.finish()
            self._close_sinks()
            self._running = False
            self._done.set()
            self._halt.set()

    def _write_sinks(self, frame: Frame | None) -> bool:
        """Write ``frame`` to every sink; False when it reached none because writes failed
        (then it does not count in ``frames_out``: "failed after N frames" must be true).
        ``None``: the sinks that keep their last frame send it again (:data:`RESEND_S`)."""
        failed: list[tuple[FrameSink, Exception]] = []
        dropped: list[tuple[FrameSink, Exception]] = []
        wrote = 0
        with self._sinks_lock:
            for sink in tuple(self._sinks):
                repeat = getattr(sink, "repeat_last", None) if frame is None else None
                if frame is None and repeat is None:
                    continue  # a recording keeps its own clock; a callback wants new frames
                # The check and _writing under the list lock, the write outside it (a sink's
                # write may add or remove sinks): stop() closes every listed sink but _writing
                # when this write stalls, and one it closed is never written after.
                with self._list_lock:
                    if sink not in self._sinks:  # removed by an earlier write, or stop()
                        continue
                    self._write_began = time.perf_counter()
                    self._writing = sink
                try:
                    if repeat is not None:
                        repeat()
                    else:
                        sink.write(frame)
                    wrote += 1
                except Exception as exc:
                    failed.append((sink, exc))
                finally:
                    self._writing = None
            if failed:
                with self._list_lock:
                    for sink, exc in failed:
                        if sink in self._sinks:
                            self._sinks.remove(sink)
                            dropped.append((sink, exc))
        for sink, exc in failed:
            if not any(sink is d for d, _ in dropped):
                # Taken out during its own write (detach_sink, or remove_sink from a callback):
                # whoever took it closes it, and nobody lost an output they still wanted.
                self._report(exc)
                continue
            # A broken sink is dropped so the others keep going (live), and says so in the
            # stats' warning; offline the output is now incomplete, so the run stops.
            with self._lock:
                self._failed_sinks.append((sink, exc))
            self._frames_lost = True
            if not self.live:
                self._set_failure(exc)
            self._report(exc)
            self._end_sink(sink)
        if dropped and not self.live:
            self._abort()
        return wrote > 0 or not failed

    def _preview(self, work: _Work) -> None:
        original = work.original
        processed = work.processed
        if work.pooled:
            # The pooled buffer goes back for the next frame; the GUI gets its own copy.
            processed = Frame(processed.image.copy(), processed.index, processed.t_capture)
        try:
            self._on_preview(original, processed)  # type: ignore[misc]
        except Exception as exc:
            self._on_preview = None  # a broken callback would fail on every frame
            self._report(exc)

    def _stats_loop(self) -> None:
        while not self._halt.wait(self._stats_interval):
            self._emit_stats()
        # The final snapshot should carry the final counts: give the output thread a moment
        # to finish its last frame (it does not wait for the model, so this is short).
        self._done.wait(0.2)
        self._emit_stats()

    def _emit_stats(self) -> None:
        cb = self._on_stats
        if cb is None:
            return
        try:
            cb(self.stats())
        except Exception as exc:
            self._on_stats = None
            self._report(exc)

    # ------------------------------------------------------------------ teardown

    def _stop_input(self) -> None:
        """Stop the capture side: interrupt the source, drop frames not yet processed."""
        self._stopping = True
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt is not None:
            try:
                interrupt()
            except Exception as exc:
                self._report(exc)
        self._in.abort()

    def _abort(self) -> None:
        """Make every thread wind down now: interrupt the source, empty and wake the channels."""
        self._halt.set()
        self._stop_input()
        for work in self._out.abort():
            if work.pooled:
                self._pool.release(work.processed.image)

    def _fail(self, exc: BaseException) -> None:
        self._frames_lost = True
        self._set_failure(exc)
        self._report(exc)
        self._abort()

    def _set_failure(self, exc: BaseException) -> None:
        with self._lock:
            if self._failure is None and not self._stopping:
                self._failure = exc

    def _report(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        cb = self._on_error
        if cb is None:
            log.error("engine error: %s", exc, exc_info=exc)
            return
        try:
            cb(exc)
        except Exception:
            log.exception("on_error callback failed while reporting %r", exc)

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:
            self._report(exc)

    def _close_idle_sinks(self) -> None:
        """stop() ran out of time while the output thread is stuck (a virtual camera hung in
        ``send``, a preview callback that does not return): every sink it is not writing is
        closed now, so a recording beside a hung device is finished and playable; the one in
        the stalled write is closed by that thread once the write returns."""
        with self._list_lock:
            busy = self._writing
            idle = [s for s in self._sinks if s is not busy]
            self._sinks = [s for s in self._sinks if s is busy]
        if idle and not self.live:
            self._frames_lost = True  # stopped before the output thread got to the end
        for sink in idle:
            self._end_sink(sink)

    def _close_sinks(self) -> None:
        with self._sinks_lock, self._list_lock:
            sinks, self._sinks = self._sinks, []
            self._accepting_sinks = False
        for sink in sinks:
            self._end_sink(sink)

    def _end_sink(self, sink: FrameSink) -> None:
        """Close ``sink``; offline after a failure that lost frames or a stop() before the end,
        abort it instead when it can tell an incomplete output from a finished one (a video
        file). Live streams have no end to miss: a stop() closes them normally."""
        incomplete = not self.live and self._frames_lost
        abort = getattr(sink, "abort", None) if incomplete else None
        try:
            if abort is not None:
                abort()
            else:
                sink.close()
        except Exception as exc:
            self._report(exc)


def _describe(obj: Any) -> str:
    try:
        return str(obj.describe())
    except Exception:
        return type(obj).__name__


def _close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception:
        log.exception("closing %r failed", obj)
