"""Run Python's cyclic garbage collector on the GUI thread only.

With automatic collection on, a collection starts on whichever thread happens to allocate: an
engine thread or the virtual camera's opener. When it frees a PySide QObject caught in a
reference cycle, ``~QObject`` runs on that thread, takes Qt's connection lock and then waits for
the GIL, while the GUI thread holds the GIL and waits for that lock in a ``connect``: the window
froze for good (seen once in ``tests/test_app.py``; py-spy showed ``gc_collect_main ->
QObject::~QObject -> GilState`` on "sharpcam-virtual-open" and ``QObject::connectImpl ->
QBasicMutex::lockInternal`` on the main thread). Collected from a timer on the GUI thread, such
objects are freed where they live, and cycles made by the other threads are still freed.
"""

from __future__ import annotations

import gc
import sys

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer

#: CPython 3.14's incremental collector (two generations) ignores the third threshold and gives
#: it as 0 (``gc.get_threshold()`` is (2000, 10, 0)), while ``gc.get_count()``'s third is the
#: other old space's count. Read as a threshold passed by any count, it asked for a full
#: collection on most ticks, which that interpreter never runs on its own. From 3.14 a third
#: threshold of 0 is taken for that one (a generational collector's default is never 0).
_INCREMENTAL_GC = sys.version_info >= (3, 14)


def due_generation(counts: tuple[int, int, int], thresholds: tuple[int, ...]) -> int:
    """The oldest generation whose count passed its threshold (what the interpreter would
    collect now), or -1 for none. A first threshold of 0 turns collection off (as
    ``gc.set_threshold(0)`` does); a later one of 0 is passed by any count, as CPython counts.
    CPython also defers a full collection until a quarter of the long-lived objects are new;
    that count is not public, so a generation-2 collection may come sooner here."""
    if not thresholds or thresholds[0] <= 0:
        return -1
    due = -1
    for generation, (count, threshold) in enumerate(zip(counts, thresholds, strict=False)):
        if count > threshold:
            due = generation
    return due


class GuiThreadCollector(QObject):
    """Turns automatic collection off and collects from a GUI-thread timer instead.

    Create it on the GUI thread (a bridge does, before it starts any worker thread).
    ``collect_due`` returns the generation it collected, or -1.
    """

    def __init__(self, parent: QObject | None = None, interval_ms: int = 200) -> None:
        app = QCoreApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            raise RuntimeError("GuiThreadCollector must be created on the Qt application's thread")
        super().__init__(parent)
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self._timer.start()

    def collect_due(self) -> int:
        thresholds = gc.get_threshold()
        if _INCREMENTAL_GC and thresholds[2:] == (0,):
            thresholds = thresholds[:2]
        generation = due_generation(gc.get_count(), thresholds)
        if generation >= 0:
            gc.collect(generation)
        return generation
