"""Start the SharpCam window: ``python main.py`` (no command) ends up in :func:`run_app`.

``--screenshot OUT.png --quit-after SECONDS`` runs the window on a source, saves a picture of it
and quits, printing the final engine statistics: handy for bug reports, docs and tests.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QBuffer,
    QByteArray,
    QEvent,
    QEventLoop,
    QIODevice,
    QLoggingCategory,
    QObject,
    QThread,
    QTimer,
)
from PySide6.QtGui import QImageWriter
from PySide6.QtWidgets import QApplication

from app.camera_list import CameraProbe, has_cameras, list_camera_choices, watch_cameras
from app.engine_bridge import EngineBridge, backend_label
from app.settings import APPLICATION, ORGANIZATION, load_settings, open_store
from app.window import MainWindow, app_icon, format_stats

# How long a screenshot waits past --quit-after for the first frame before giving up.
FIRST_FRAME_GRACE_S = 10.0
DEFAULT_SCREENSHOT_DELAY_S = 3.0
# How long the exit waits for a camera probe still opening indices (see CameraProbe.join).
PROBE_JOIN_S = 10.0


def cli_name(argv0: str | None = None) -> str:
    """How to call SharpCam's command line as this process was started: ``python main.py`` in
    a checkout, ``sharpcam`` installed (where there is no main.py to name)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    return "python main.py" if Path(argv0).name == "main.py" else "sharpcam"


def missing_display(
    env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> str | None:
    """Why the window cannot open, or None. Qt aborts the whole process (no exception, a core
    dump) when Linux has no display, so the app checks first and says what to do instead."""
    env = os.environ if env is None else env
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    cli = cli_name()
    return (
        "no display: the SharpCam window needs a desktop session (DISPLAY or WAYLAND_DISPLAY "
        "is not set). On a headless machine use the command line instead, e.g. "
        f"`{cli} run --source 0 --output virtual` or "
        f"`{cli} process IN OUT`, or start the window under `xvfb-run`."
    )


def x11_problem(
    env: Mapping[str, str] | None = None,
    platform: str = sys.platform,
    load_library: Callable[[str], Any] = ctypes.CDLL,
) -> str | None:
    """Why Qt's X11 plugin would abort the process, or None (also where it is not used).

    Qt ends the process with a core dump when the X display does not answer (a DISPLAY left
    over from an ssh session) or when its xcb plugin misses a library (Qt 6.5+ needs
    libxcb-cursor0, which stock desktops lack), and its last words pointed at OpenCV's plugin
    folder ("Reinstalling the application may fix this problem"). Checked first, in
    milliseconds, and said in one line. The libraries are loaded as the plugin loads them (by
    their sonames, through the dynamic loader), so a library found there is never refused."""
    env = os.environ if env is None else env
    forced = env.get("QT_QPA_PLATFORM", "")
    if not platform.startswith("linux") or not env.get("DISPLAY"):
        return None
    if forced and not forced.startswith("xcb"):
        return None
    if not forced and env.get("WAYLAND_DISPLAY"):
        return None  # a Wayland session: Qt takes its Wayland plugin
    display = env["DISPLAY"]
    try:
        load_library("libxcb-cursor.so.0")
    except OSError:
        return (
            f"the window cannot open on the X display {display}: Qt needs the libxcb-cursor0 "
            "library (e.g. `sudo apt install libxcb-cursor0`)"
        )
    try:
        xcb = load_library("libxcb.so.1")
    except OSError:
        return f"the window cannot open on the X display {display}: libxcb is not installed"
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        failed = xcb.xcb_connection_has_error(conn)
    finally:
        xcb.xcb_disconnect(conn)  # an error connection too: it holds memory
    if failed:
        return (
            f"cannot connect to the X display {display} (DISPLAY left over from another "
            "session?). Start SharpCam from the desktop's own terminal, or use the command line: "
            f"`{cli_name()} run --source 0 --output virtual`."
        )
    return None


def run_app(
    options: Mapping[str, Any] | None = None,
    /,
    *,
    source: str | None = None,
    screenshot: str | None = None,
    quit_after: float | None = None,
    backend: str | None = None,
    model: str | None = None,
    settings_path: str | None = None,
    api: Any = None,
    tray: bool = True,
    virtual_backend: str | None = None,
) -> int:
    """Open the window and run until it closes; returns the process exit code.

    Args:
        options: the same keys as the keyword arguments, as a mapping (what ``main.py`` passes);
            keyword arguments given explicitly take precedence over its values.
        source: camera index/device or video path; None = the remembered or first camera,
            else the demo clip.
        screenshot: save a PNG of the window here just before quitting.
        quit_after: close the window after this many seconds (default 3 with ``screenshot``)
            and print the final statistics line.
            With either of these (scripted mode) a start without video, or a stream that ends on
            its own (the source failed mid-run), ends the run at once with exit code 1 and the
            reason on stderr, and a ``source`` that fails to open is not replaced by the demo
            clip: the picture must be of the source named. A run whose preview has shown no
            frame by then waits up to ``FIRST_FRAME_GRACE_S`` more for one (a model still
            loading), then ends with exit code 1 and says so.
        backend, model: inference backend (None = remembered, "auto" by default) and model file.
        settings_path: an ``.ini`` settings store instead of the user's (tests, portable use).
        api: the engine module (tests pass a fake); default ``engine``.
        tray: offer a system-tray icon where the platform has one.
        virtual_backend: the pyvirtualcam backend for the virtual camera (tests).
    """
    if options:
        given = {k: v for k, v in options.items() if v is not None}
        source = given.get("source", source)
        screenshot = given.get("screenshot", screenshot)
        quit_after = given.get("quit_after", quit_after)
        backend = given.get("backend", backend)
        model = given.get("model", model)
        settings_path = given.get("settings_path", settings_path)
    scripted = bool(screenshot) or quit_after is not None
    if not logging.getLogger().handlers:
        # The app's warnings (settings not saved, no camera list) reached the terminal through
        # logging's last-resort handler, bare, beside the "sharpcam: ..." lines of the rest.
        logging.basicConfig(level=logging.WARNING, format="sharpcam: %(message)s")
    if screenshot and quit_after is None:
        quit_after = DEFAULT_SCREENSHOT_DELAY_S

    # QtMultimedia logs every optional codec library it cannot find; none matter here.
    # Under QT_QPA_PLATFORM=offscreen, "This plugin does not support propagateSizeHints()" is
    # left: that plugin has no window manager to pass the window's size limits to, and Qt logs
    # it uncategorised, where a rule would silence every Qt warning. Real displays never say it.
    # The platform warnings are silenced only once the application exists: before, they are
    # the lines that say why Qt could not start ("could not connect to display").
    QLoggingCategory.setFilterRules("qt.multimedia*=false")
    app = QApplication.instance()
    if app is None:
        problem = missing_display() or x11_problem()
        if problem:
            print(f"sharpcam: {problem}", file=sys.stderr)
            return 1
        app = QApplication(sys.argv[:1])
        app.setStyle("Fusion")
    QLoggingCategory.setFilterRules("qt.multimedia*=false\nqt.qpa.*.warning=false")
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("SharpCam")
    app.setWindowIcon(app_icon())

    store = open_store(settings_path)
    settings = load_settings(store)
    if backend is None and model is not None and settings.backend in ("unsharp", "passthrough"):
        # --model names a model to run: a remembered backend that runs none ignored it silently
        # (main.py refuses --backend unsharp --model as a usage error).
        backend = "auto"
    bridge = EngineBridge(api=api, virtual_backend=virtual_backend)
    # QtMultimedia's list is quick (the OS's device list: no camera opened). Where it has none,
    # OpenCV probes camera indices, opening each: seconds on some systems, so on a worker
    # thread while the window shows, and the picker fills in when it is done.
    cameras = list_camera_choices(probe_opencv=False)
    probe = None if has_cameras(cameras) else CameraProbe()
    window = MainWindow(
        bridge,
        store=store,
        settings=settings,
        cameras=cameras,
        camera_probe=probe,
        source=source,
        backend=backend,
        model=model,
        tray=tray,
        # The interactive window shows the demo clip with a message; a script has nobody to
        # read that message, and its screenshot would pass the demo clip off as the source.
        demo_fallback=not (scripted and source is not None),
    )
    watch_cameras(window.set_cameras, window)
    window.show()
    t0 = time.perf_counter()

    result: dict[str, Any] = {"code": 0, "failed": False}
    if scripted:

        def fail(reason: str) -> None:
            if result["failed"]:
                return
            result["failed"] = True
            result["code"] = 1
            print(f"sharpcam: error: {reason}", file=sys.stderr)
            # Not from inside the bridge's own signal: it is still finishing that start.
            QTimer.singleShot(0, window.close)

        def say_model_failure() -> None:
            failure = window.bridge.model_failure
            if failure is not None and not result["code"]:
                # The video runs unsharpened (the banner and the badge say so in the picture):
                # a scripted run that exited 0 passed a broken model off as a working one. The
                # screenshot is still taken; the run fails.
                result["code"] = 1
                reason = " ".join(failure.message.text.split())
                print(f"sharpcam: error: {reason}", file=sys.stderr)

        def on_start_finished(ok: bool) -> None:
            if not ok:
                fail(no_video_reason(window))
                return
            say_model_failure()

        window.bridge.start_finished.connect(on_start_finished)
        # A stream that ended on its own (the source failed mid-run) is over for good: waiting
        # for --quit-after, then for a frame to picture, ended in "no frame arrived".
        window.bridge.stream_ended.connect(lambda msg: fail(" ".join(msg.text.split())))
    window.start_stream()

    if quit_after is not None:
        deadline = t0 + float(quit_after)

        def finish() -> None:
            if result["failed"]:
                return  # the window closed already; nothing to picture
            # A scripted run that showed no video proves nothing, with or without a screenshot
            # (`--quit-after 1` exited 0 with "preview frames 0"): a slow first frame (a model
            # still compiling) gets a little longer, then the run fails.
            if not window.preview.has_frame():
                if time.perf_counter() < deadline + FIRST_FRAME_GRACE_S:
                    QTimer.singleShot(100, finish)
                    return
                print(f"sharpcam: {no_frame_reason(window, screenshot)}", file=sys.stderr)
                result["code"] = 1
            # A model that loaded and failed on a frame (after the start): said as one that
            # did not load.
            window.bridge.poll_now()
            say_model_failure()
            if screenshot:
                why = save_screenshot(window, Path(screenshot))
                if why is not None:
                    print(f"sharpcam: cannot write screenshot {screenshot}{why}", file=sys.stderr)
                    result["code"] = 1
            window.close()

        QTimer.singleShot(int(float(quit_after) * 1000), finish)

    closed: list[bool] = []
    window.closed.connect(lambda: closed.append(True))
    restore_signals = _close_on_signals(window)
    try:
        code = _run_until_closed(app, window)
    finally:
        restore_signals()
    if not closed:
        # The loop ended another way (an exit() of a loop this one runs in): closed now, so
        # the engine stops and the outputs finish as when the window is closed.
        window.close()
    if code > 0 and not result["code"]:
        result["code"] = code  # app.exit(code): the code asked for
    if quit_after is not None and not result["failed"]:
        print(final_stats_line(window, time.perf_counter() - t0))
    if not getattr(window, "stopped_in_time", True):
        print("sharpcam: the engine did not stop within 2 s", file=sys.stderr)
        result["code"] = 1
    # The window is gone; the process must not exit while a model call, a camera open or a
    # virtual camera device's open or close is still in progress.
    if not bridge.join(timeout=30.0):
        print(
            "sharpcam: the model, camera or virtual camera was still busy after 30 s; exiting",
            file=sys.stderr,
        )
    if probe is not None and not probe.join(PROBE_JOIN_S):
        print(
            f"sharpcam: the camera listing was still busy after {PROBE_JOIN_S:.0f} s; exiting",
            file=sys.stderr,
        )
    window.deleteLater()
    bridge.deleteLater()
    return result["code"]


def _run_until_closed(app: QApplication, window: MainWindow) -> int:
    """Run the application's event loop until ``window`` has closed; returns the loop's code.

    QApplication.exec(), not a QEventLoop of its own: Qt's quit() does nothing unless exec()
    runs, and QApplication.quit() (a platform's "quit" request, a script) left the window open.
    quit() and app.exit() end the app as closing the window does (settings saved, engine and
    outputs stopped). Called inside a loop that runs already (exec() would refuse), a nested
    loop runs instead, which the window's closing ends."""
    quitting = False

    def about_to_quit() -> None:
        # app.exit(code) ends the loop without closing a window: closed here, while it runs.
        nonlocal quitting
        quitting = True
        window.close()

    quit_filter = _QuitFilter(window)
    app.installEventFilter(quit_filter)
    app.aboutToQuit.connect(about_to_quit)
    try:
        if QThread.currentThread().loopLevel() > 0:
            loop = QEventLoop()
            window.closed.connect(loop.quit)
            return loop.exec()

        def closed() -> None:
            if not quitting:
                app.exit(0)  # an exit() under way keeps its own code

        window.closed.connect(closed)
        # The window's closing ends the loop; left to Qt, the last window closed posts a Quit
        # event, which outlives this loop and would end a later one (tests run several).
        quit_on_last = app.quitOnLastWindowClosed()
        app.setQuitOnLastWindowClosed(False)
        try:
            return app.exec()
        finally:
            app.setQuitOnLastWindowClosed(quit_on_last)
    finally:
        app.removeEventFilter(quit_filter)
        app.aboutToQuit.disconnect(about_to_quit)


class _QuitFilter(QObject):
    """Closes the window first when the application is asked to quit: Qt closes its windows in
    no set order, and the setup dialog closed before the window counted as the person's answer
    to it (see MainWindow._on_virtual_dialog_rejected)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__()
        self._window = window

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Quit and watched is QApplication.instance():
            if not self._window.close():
                # The person kept the window (a save runs): no quit. Passed on, Qt closed the
                # window again for the same Quit, and asked a second time.
                return True
        return False  # Qt goes on: its other windows closed, then the loop ends


def _close_on_signals(window: MainWindow) -> Callable[[], None]:
    """Ctrl+C in the terminal, a logout or `kill` (SIGTERM) and the terminal closing (SIGHUP)
    close the window as Ctrl+Q does (settings saved, engine and virtual camera stopped);
    returns what puts the previous handlers back. Python's own SIGINT handler raised
    KeyboardInterrupt inside whichever slot ran next, where Qt printed it and went on: a
    traceback, and the window stayed open; SIGTERM and SIGHUP ended the process at once."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set a handler
    signums = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    # One ignored at the start stays so: `nohup sharpcam &` must outlive its terminal.
    previous = {n: h for n in signums if (h := signal.getsignal(n)) is not signal.SIG_IGN}
    for n in previous:
        signal.signal(n, lambda *_: QTimer.singleShot(0, window.close_without_asking))
    # Python runs a handler only when it runs code on the main thread: without video (no
    # preview, no stats), nothing else would, and Ctrl+C waited for the next mouse move.
    wake = QTimer(window)
    wake.timeout.connect(lambda: None)
    wake.start(200)

    def restore() -> None:
        wake.stop()
        for n, handler in previous.items():
            signal.signal(n, handler)

    return restore


def no_frame_reason(window: MainWindow, screenshot: str | None) -> str:
    """The line for a scripted run whose preview showed no frame in its time."""
    when = "before the screenshot" if screenshot else "before --quit-after ended the run"
    waited = f"(waited {FIRST_FRAME_GRACE_S:g} s more for the first one"
    if window.bridge.starting:
        return f"no frame arrived {when} {waited}; the source or the model was still opening)"
    return f"no frame arrived {when} {waited})"


def save_screenshot(window: MainWindow, out: Path) -> str | None:
    """Save a picture of ``window`` to ``out``; None when saved, else ``": reason"``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # Raised out of the timer's slot, Qt printed a traceback and went on, and the window
        # was never closed: the scripted run hung instead of failing.
        return f": {exc.strerror or exc}"
    # QImageWriter, not QPixmap.save: that says only False, and "cannot write screenshot"
    # left the reason to guess. The format from the lower-cased extension, as QPixmap.save
    # takes it (main.py checks the name that way). Encoded in memory, then written whole
    # (engine.sinks.write_file): written in place, a full disk truncated an earlier
    # screenshot of the same name, then the failed one was removed with it.
    from engine.sinks import SinkError, write_file

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QImageWriter(buffer, out.suffix.lower().removeprefix(".").encode())
    if not writer.write(window.grab().toImage()):
        return f": {writer.errorString() or 'the image could not be encoded'}"
    buffer.close()
    try:
        write_file(out, data.data())
    except SinkError as exc:
        return f": {str(exc).removeprefix(f'cannot write {out}: ')}"
    return None


def no_video_reason(window: MainWindow) -> str:
    """Why the window's latest start has no video, in one line."""
    error = window.bridge.source_error
    if error is not None:
        # The engine's words name the source and the problem, as `run --source` prints them.
        return " ".join(str(error).split()) or type(error).__name__
    msg = window.banner.message
    if msg is not None:  # the model or the engine failed: what the banner says
        return " ".join(msg.text.split())
    return f"no video from {window.current_camera().name}"


def final_stats_line(window: MainWindow, elapsed_s: float) -> str:
    """The engine's last statistics as one line, printed when the app quits by itself."""
    stats = getattr(window, "final_stats", None)
    size = window.bridge.last_frame_size
    size_txt = f"{size[0]}x{size[1]}" if size else "?"
    avg = ""
    if stats is not None and getattr(stats, "elapsed_s", 0) > 0:
        # The status line's rate is a 2 s window; the run average is what a benchmark compares.
        n = stats.frames_out
        avg = f" · run avg {n / stats.elapsed_s:.1f} fps ({n} frame{'' if n == 1 else 's'})"
    # What ran last, from the engine's own last word: the bridge's label, once the engine is
    # gone, named the backend it had loaded (passthrough had stood in for it since).
    label = window.bridge.backend_label
    if stats is not None and getattr(stats, "backend", ""):
        label = backend_label(name=stats.backend, provider=getattr(stats, "provider", None))
    return (
        f"sharpcam app: {window.shown_source_name()} {size_txt} · {format_stats(stats)}{avg} · "
        f"{label} · preview frames {window.preview.frames_shown} in {elapsed_s:.1f} s"
    )
