"""Statistics: the frame rates follow the stream, and fall when it stops."""

from __future__ import annotations

import time

import pytest

from engine.stats import EngineStats, StatsRecorder, _Rate

FPS = 30.0


def steady(seconds: float, fps: float = FPS, start: float = 100.0) -> _Rate:
    """A 2 s window fed ``seconds`` of events at ``fps`` from ``start``."""
    r = _Rate(2.0)
    r.times.extend(start + i / fps for i in range(round(seconds * fps) + 1))
    return r


def test_rate_of_a_steady_stream_ignores_jitter():
    r = steady(3.0)
    last = r.times[-1]
    assert r.rate(last) == pytest.approx(FPS)
    # The next frame is not late yet: no change while waiting less than one interval.
    assert r.rate(last + 0.9 / FPS) == pytest.approx(FPS)


def test_rate_falls_when_events_stop():
    r = steady(3.0)
    last = r.times[-1]
    rates = [r.rate(last + gap) for gap in (0.0, 0.25, 0.5, 1.0, 1.5, 1.9)]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    # Half a second without frames: about the frames of the last 2 s over those 2 s, not 30.
    assert rates[2] == pytest.approx(1.5 * FPS / 2.0, rel=0.05)
    assert rates[3] == pytest.approx(1.0 * FPS / 2.0, rel=0.05)
    assert rates[-1] < 2.0
    assert r.rate(last + 2.01) == 0.0  # the window holds no event


def test_rate_needs_two_events():
    r = _Rate(2.0)
    assert r.rate(5.0) == 0.0
    r.times.append(5.0)
    assert r.rate(5.0) == 0.0


def test_snapshot_fps_reflects_a_stalled_stream():
    rec = StatsRecorder(window_s=2.0)
    now = time.perf_counter()
    # Half a second at 30 fps that ended a second ago: nothing has moved since.
    for i in range(16):
        t = now - 1.5 + i / FPS
        rec.frame_in(t, 1.0)
        rec.frame_out(t, 1.0, 20.0, (64, 48))
    snap = rec.snapshot()
    assert snap.frames_in == snap.frames_out == 16
    assert 0.0 < snap.fps_in < FPS / 2 and 0.0 < snap.fps_out < FPS / 2


@pytest.mark.parametrize("fps", [0.5, 0.6, 0.8])
def test_rate_of_a_stream_slower_than_the_window_is_not_zero(fps):
    # FPS_RANGE starts at 0.5 fps (run --fps 0.5 on a folder; a big model on a small CPU): with
    # one event in the 2 s window between frames the status line said "0.0 fps" most of the time.
    r = steady(5.0 / fps, fps=fps)
    last = r.times[-1]
    for gap in (0.0, 0.25, 0.5, 0.75, 0.99):
        assert r.rate(last + gap / fps) == pytest.approx(fps)


def test_elapsed_stops_when_the_run_is_finished():
    # The app's final line divides frames by elapsed_s: a clip that ended while the window
    # stayed open must not read as a falling "run avg" frame rate.
    rec = StatsRecorder()
    time.sleep(0.02)
    rec.finish()
    first = rec.snapshot().elapsed_s
    assert first >= 0.02
    time.sleep(0.05)
    rec.finish()  # a second end (stop() after the run ended on its own) keeps the first
    assert rec.snapshot().elapsed_s == first


def test_snapshot_latency_percentiles_are_those_of_the_recorded_latencies() -> None:
    # The engine hands these to the status line and `bench`: a p50/p95 stuck at 0 passed every
    # pipeline test. 1..100 ms, fed out of order: numpy's linear percentiles are exact here.
    rec = StatsRecorder()
    assert (rec.snapshot().latency_ms_p50, rec.snapshot().latency_ms_p95) == (0.0, 0.0)
    now = time.perf_counter()
    values = [float(v) for v in range(1, 101)]
    for i, ms in enumerate(values[::2] + values[1::2]):
        rec.frame_out(now + i / FPS, 1.0, ms, (64, 48))
    snap = rec.snapshot()
    assert snap.latency_ms_p50 == pytest.approx(50.5)
    assert snap.latency_ms_p95 == pytest.approx(95.05)
    assert sorted(rec.latencies()) == values


def test_snapshot_latency_percentiles_cover_only_the_recent_frames() -> None:
    # Latency is "recent capture-to-sink times": old slow frames leave the window.
    rec = StatsRecorder(latency_recent=4)
    now = time.perf_counter()
    for i, ms in enumerate([500.0, 500.0, 10.0, 20.0, 30.0, 40.0]):
        rec.frame_out(now + i / FPS, 1.0, ms, (64, 48))
    snap = rec.snapshot()
    assert rec.latencies() == [10.0, 20.0, 30.0, 40.0]
    assert snap.latency_ms_p50 == pytest.approx(25.0)
    assert snap.latency_ms_p95 == pytest.approx(38.5)


def test_rate_of_events_with_one_timestamp_is_zero() -> None:
    # Two frames stamped alike measure no interval: 0, not a division by zero.
    r = _Rate(2.0)
    r.times.extend([5.0, 5.0])
    assert r.rate(5.0) == 0.0
    assert r.rate(5.5) == 0.0


def test_snapshot_reports_each_rate_and_stage_time_from_its_own_records() -> None:
    # Input at 30 fps, output at 15 (a slow model drops every other frame): each number is its
    # own stage's, and stage times are medians, a stray 100 ms (GC pause) does not move them.
    rec = StatsRecorder(window_s=2.0)
    now = time.perf_counter()
    for i in range(31):
        t = now - 1.0 + i / FPS
        rec.frame_in(t, 100.0 if i == 5 else 3.0)
        if i % 2 == 0:
            rec.inferred(100.0 if i == 6 else 5.0)
            rec.frame_out(t, 100.0 if i == 8 else 7.0, 20.0, (64, 48))
    snap = rec.snapshot()
    assert snap.fps_in == pytest.approx(FPS, rel=0.1)
    assert snap.fps_out == pytest.approx(FPS / 2, rel=0.1)
    assert (snap.capture_ms, snap.infer_ms, snap.output_ms) == (3.0, 5.0, 7.0)
    assert (snap.frames_in, snap.frames_out) == (31, 16)


def test_summary_shows_what_happened_and_only_that() -> None:
    quiet = EngineStats(fps_out=0.0, backend="onnx", provider="CPU").summary()
    assert "latency" not in quiet and "reconnects" not in quiet and "[off]" not in quiet
    assert "!" not in quiet and quiet.endswith("onnx (CPU)")
    busy = EngineStats(
        fps_out=29.94,
        frames_out=10,
        latency_ms_p50=41.2,
        latency_ms_p95=55.4,
        infer_ms=12.34,
        dropped=3,
        reconnects=2,
        backend="passthrough",
        enabled=False,
        warning="model failed",
    ).summary()
    assert busy.split(" · ") == [
        " 29.9 fps",
        "latency 41 ms (p95 55)",
        "model 12.3 ms",
        "3 dropped",
        "2 reconnects",
        "passthrough [off]",
        "! model failed",
    ]


@pytest.mark.parametrize("fps", [7.5, 10.0, 15.0, 30.0, 60.0])
@pytest.mark.parametrize("queued", [3, 5, 8, 20])
def test_rate_after_a_burst_of_any_length_is_unknown_or_the_pace(queued: int, fps: float) -> None:
    # Five or more queued frames were the window's median gap, and read 70-100 fps; a camera
    # at 15 fps or less (dim light) read 45-200 fps after its first paced frames.
    r = _Rate(2.0)
    r.times.extend(5.0 + i * 1e-5 for i in range(queued))
    start = r.times[-1]
    for i in range(1, int(3 * fps)):
        r.times.append(start + i / fps)
        rate = r.rate(r.times[-1])
        assert rate == 0.0 or rate == pytest.approx(fps, rel=0.02), (i, rate)
    assert r.rate(r.times[-1]) == pytest.approx(fps, rel=0.02)


def test_rate_of_a_burst_of_queued_frames_is_not_a_frame_rate() -> None:
    # A camera hands over the frames it queued while the model warmed up, microseconds apart:
    # the first status line read "in 932.0 fps", and auto's budget followed such a rate.
    r = _Rate(2.0)
    r.times.extend([5.0, 5.00001, 5.00002])
    assert r.rate(5.00003) == 0.0  # too short a span to tell a rate from
    # Then the camera's own pace: 30 fps, the burst counted as one frame.
    r.times.extend(5.00002 + (i + 1) / FPS for i in range(6))
    assert r.rate(r.times[-1]) == pytest.approx(FPS, rel=0.01)
    last = r.times[-1]
    r.times.extend(last + (i + 1) / FPS for i in range(30))
    assert r.rate(r.times[-1]) == pytest.approx(FPS, rel=0.01)


def test_one_long_gap_in_a_running_stream_is_not_taken_for_a_burst() -> None:
    # 90 frames at 30 fps, then a 300 ms hiccup: the burst rule trimmed every gap before it
    # and read 3.3 fps, then 6 and 8, for a camera at 30.
    r = steady(3.0)
    last = r.times[-1]
    r.times.append(last + 0.3)
    after = [r.rate(r.times[-1])]
    for i in range(1, 4):
        r.times.append(last + 0.3 + i / FPS)
        after.append(r.rate(r.times[-1]))
    assert all(rate > 20 for rate in after), after


@pytest.mark.parametrize(
    ("fps", "at"), [(30.0, 1.0), (30.0, 3.0), (32.0, 1.0), (600.0, 1.0), (1000.0, 3.0)]
)
def test_a_hiccup_early_in_a_stream_or_in_a_fast_one_is_no_burst(fps: float, at: float) -> None:
    # In the first 2 s (the window still holding the stream's first frame) a 300 ms hiccup
    # read 30 fps as 3.3; past 512 events a second the deque wrapped and the burst rule stayed
    # on for good (1000 fps read 3.3). At 32 fps the gaps are alike to the bit (1/32 s): a
    # pace after the hiccup merely as slow as before it is no burst's end either.
    r = _Rate(2.0)
    for i in range(round(at * fps) + 1):
        r.add(100.0 + i / fps)
    last = r.times[-1]
    r.add(last + 0.3)
    after = [r.rate(r.times[-1])]
    for i in range(1, 4):
        r.add(last + 0.3 + i / fps)
        after.append(r.rate(r.times[-1]))
    # 0 ("no rate yet") at most, right after it in the first 2 s: a burst's end looks alike
    # until the next gap.
    assert after[0] == 0.0 or after[0] > fps * 0.5, after
    assert all(rate > fps * 0.5 for rate in after[1:]), after


@pytest.mark.parametrize("start", [0.0, 100.0, 12345.678])
def test_the_first_rate_of_a_30_fps_camera_is_read_at_its_fourth_frame(start: float) -> None:
    # Four frames at 30 fps span 3/30 s, which the clock's rounding makes 0.0999...: a strict
    # "under 0.1 s" showed 0 fps for the first frames of every 30 fps camera.
    r = _Rate(2.0)
    for i in range(4):
        r.add(start + i / FPS)
    assert r.rate(r.times[-1]) == pytest.approx(FPS)


def test_a_burst_recorded_by_the_engine_is_told_as_one() -> None:
    # The engine records through StatsRecorder.frame_in (_Rate.add), which keeps the stream's
    # first frame: fed that way too, a camera's queue after the warm-up must count as one
    # frame, not read 40 fps for a camera at 30.
    rec = StatsRecorder(window_s=2.0)
    for i in range(3):
        rec.frame_in(5.0 + i * 1e-5, 1.0)
    for i in range(6):
        rec.frame_in(5.00002 + (i + 1) / FPS, 1.0)
    assert rec.rate_in(5.00002 + 6 / FPS) == pytest.approx(FPS, rel=0.01)


def test_the_first_rate_after_a_burst_is_read_at_its_third_paced_frame() -> None:
    # The burst counts as its last frame, the camera's first at its pace: three frames after
    # it span 0.1 s at 30 fps, as a camera's first four frames do, and the rate shows there.
    r = _Rate(2.0)
    for i in range(3):
        r.add(5.0 + i * 1e-5)
    for i in range(3):
        r.add(5.00002 + (i + 1) / FPS)
    assert r.rate(r.times[-1]) == pytest.approx(FPS)


def test_a_burst_ended_by_one_paced_frame_has_no_rate_yet() -> None:
    # Two queued frames, then the camera's first frame at its 5 fps: until a gap after it
    # tells the pace there is no rate, not the 10 fps the three frames' span would say.
    r = _Rate(2.0)
    for t in (5.0, 5.00001, 5.20001):
        r.add(t)
    assert r.rate(5.20001) == 0.0
    r.add(5.40001)
    assert r.rate(5.40001) == pytest.approx(5.0)


def test_the_second_frame_of_a_stream_slower_than_the_window_tells_its_rate() -> None:
    # At 0.5 fps (the slowest a source paces at) the window holds one frame between two: the
    # frame before it is measured from as soon as there are two, not from the third on.
    r = _Rate(2.0)
    r.add(100.0)
    r.add(102.0)
    assert r.rate(102.5) == pytest.approx(0.5)


def test_a_stream_that_slows_down_early_is_no_burst() -> None:
    # A 60 fps webcam dropping to 25 fps as the light dims, in its first second: its 60 fps
    # frames are frames, not a queue, and the window's rate counts them (no 0 or 25 fps).
    r = _Rate(2.0)
    for i in range(31):
        r.add(100.0 + i / 60)
    last = r.times[-1]
    rates = []
    for i in range(1, 16):
        r.add(last + i / 25)
        rates.append(r.rate(r.times[-1]))
    assert all(35.0 < rate < 60.0 for rate in rates), rates


def test_a_fast_start_then_a_hiccup_is_no_burst() -> None:
    # 60 fps for half a second, a 300 ms hiccup, then 25 fps: the burst rule looks at the
    # last three gaps only, and the hiccup (further back) does not make the fast start a
    # queue; once a gap after it tells, the rate is the window's (over 25), not about 10.
    r = _Rate(2.0)
    for i in range(31):
        r.add(100.0 + i / 60)
    last = r.times[-1] + 0.3
    r.add(last)
    rates = []
    for i in range(1, 16):
        r.add(last + i / 25)
        rates.append(r.rate(r.times[-1]))
    assert all(rate > 25.0 for rate in rates[2:]), rates


def test_snapshot_counts_drops_and_keeps_the_last_size() -> None:
    # The status line's "3 dropped" and the size the outputs were opened at come from here.
    rec = StatsRecorder()
    assert (rec.snapshot().dropped, rec.snapshot().size) == (0, None)
    for _ in range(3):
        rec.frame_dropped()
    now = time.perf_counter()
    rec.frame_out(now, 1.0, 20.0, (64, 48))
    rec.frame_out(now + 1 / FPS, 1.0, 20.0, (32, 24))
    snap = rec.snapshot()
    assert (snap.dropped, snap.size) == (3, (32, 24))


def test_snapshot_rates_follow_the_recorders_window() -> None:
    # A 0.5 s window has let go of frames that ended 0.6 s ago, in and out alike (a 2 s one
    # would still read them).
    rec = StatsRecorder(window_s=0.5)
    now = time.perf_counter()
    for i in range(31):
        t = now - 1.6 + i / FPS
        rec.frame_in(t, 1.0)
        rec.frame_out(t, 1.0, 20.0, (64, 48))
    snap = rec.snapshot()
    assert (snap.fps_in, snap.fps_out) == (0.0, 0.0)


def test_summary_shows_the_latency_of_a_stalled_stream_and_one_reconnect() -> None:
    # Latency is shown once frames were written, also while none flows (0 fps); a camera that
    # came back once is told too.
    line = EngineStats(frames_out=5, latency_ms_p50=40.0, latency_ms_p95=60.0, reconnects=1)
    parts = line.summary().split(" · ")
    assert "latency 40 ms (p95 60)" in parts and "1 reconnects" in parts


def test_rate_needs_a_tenth_of_a_second_of_events() -> None:
    # Four frames at 60 fps span 0.05 s: too little to tell a rate from; seven span 0.1 s.
    r = _Rate(2.0)
    for i in range(4):
        r.add(100.0 + i / 60)
    assert r.rate(r.times[-1]) == 0.0
    for i in range(4, 7):
        r.add(100.0 + i / 60)
    assert r.rate(r.times[-1]) == pytest.approx(60.0)


def test_rate_of_a_short_start_counts_the_wait_after_it() -> None:
    # Two frames 0.05 s apart, then half a second of nothing: events and waiting together
    # span 0.5 s, enough to read a falling 2 fps rather than nothing.
    r = _Rate(2.0)
    r.add(100.0)
    r.add(100.05)
    assert r.rate(100.55) == pytest.approx(2.0)


def test_rate_of_a_fast_stream_that_slows_down_is_no_burst() -> None:
    # Past 512 events a second the deque forgets the stream's first frame: the frames it holds
    # are no opening burst, and a 1000 fps stream dropping to 100 fps read 0 fps, then 100.
    r = _Rate(2.0)
    for i in range(1500):
        r.add(100.0 + i / 1000)
    last = r.times[-1]
    rates = []
    for i in range(1, 6):
        r.add(last + i / 100)
        rates.append(r.rate(r.times[-1]))
    assert all(rate > 500.0 for rate in rates), rates


def test_an_opening_run_with_one_gap_near_the_pace_is_no_burst() -> None:
    # A queue's gaps all are at least BURST_PACE times quicker than the pace after it: a start
    # at about 30 fps with one doubled frame, a 300 ms hiccup, then 20 fps, keeps its first
    # frames (5 intervals over 0.43 s), not the 7.5 fps of the frames from the hiccup on.
    r = _Rate(2.0)
    for t in (0.0, 1e-5, 0.03001, 0.33001, 0.38001, 0.43001):
        r.add(100.0 + t)
    assert r.rate(r.times[-1]) == pytest.approx(5 / 0.43001)
