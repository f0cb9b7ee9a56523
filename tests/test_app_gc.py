"""The cyclic garbage collector runs on the GUI thread only (app/_gc.py)."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
from PySide6.QtCore import QObject

from app._gc import GuiThreadCollector, due_generation


@pytest.mark.parametrize(
    ("counts", "thresholds", "expected"),
    [
        ((0, 0, 0), (700, 10, 10), -1),
        ((701, 0, 0), (700, 10, 10), 0),
        ((701, 11, 0), (700, 10, 10), 1),
        ((701, 11, 11), (700, 10, 10), 2),
        ((700, 10, 10), (700, 10, 10), -1),  # "passed", as the interpreter counts
        ((5000, 50, 50), (0, 10, 10), -1),  # threshold 0: collection off
        # A later threshold of 0 is passed by any count, as CPython compares them: after
        # gc.set_threshold(700, 0, 0) it collects an older generation holding anything.
        ((701, 1, 0), (700, 0, 0), 1),
        ((701, 1, 1), (700, 0, 0), 2),
        ((5000, 50, 50), (), -1),  # no thresholds at all: nothing is due
    ],
)
def test_due_generation(counts, thresholds, expected) -> None:  # noqa: ANN001
    assert due_generation(counts, thresholds) == expected


def test_a_qobject_cycle_is_freed_on_the_gui_thread_not_where_it_allocated(qtbot) -> None:  # noqa: ANN001
    collector = GuiThreadCollector()
    assert not gc.isenabled()
    freed_on: list[str] = []
    cycle = QObject()
    cycle.me = cycle  # only the cyclic collector can free it
    weakref.finalize(cycle, lambda: freed_on.append(threading.current_thread().name))
    del cycle

    kept: list[list] = []

    def allocate() -> None:
        # Far past generation 0's threshold, and kept (the count is of live objects): with
        # automatic collection on, this thread would have freed the cycle (~QObject here).
        kept.extend([] for _ in range(20 * gc.get_threshold()[0]))

    worker = threading.Thread(target=allocate, name="allocating-worker")
    worker.start()
    worker.join()
    assert freed_on == []
    qtbot.waitUntil(lambda: freed_on != [], timeout=5000)
    assert freed_on == [threading.main_thread().name]
    collector.deleteLater()


def test_the_collector_refuses_a_worker_thread(qapp) -> None:  # noqa: ANN001
    errors: list[BaseException] = []

    def make() -> None:
        try:
            GuiThreadCollector()
        except RuntimeError as e:
            errors.append(e)

    worker = threading.Thread(target=make)
    worker.start()
    worker.join()
    assert len(errors) == 1 and "application's thread" in str(errors[0])


def test_the_collector_collects_only_the_generation_due(qapp, monkeypatch) -> None:  # noqa: ANN001
    # A full collection every tick walks every object the app holds (tens of ms with a model
    # loaded), where the interpreter would have collected the youngest generation only.
    from PySide6.QtCore import QTimer

    collector = GuiThreadCollector(interval_ms=150)
    [timer] = collector.findChildren(QTimer)
    assert timer.interval() == 150  # not 0: a timer firing on every turn of the event loop
    collected: list[tuple[int, ...]] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collected.append(args) or 0)
    monkeypatch.setattr(gc, "get_count", lambda: (701, 3, 0))
    monkeypatch.setattr(gc, "get_threshold", lambda: (700, 10, 10))
    assert collector.collect_due() == 0
    assert collected == [(0,)]
    collector.deleteLater()


def test_the_collector_asks_no_full_collection_of_an_incremental_interpreter(
    qapp: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPython 3.14's incremental collector gives (2000, 10, 0) as thresholds, the third
    # ignored, and a third count above 0 once the old spaces swap: "0 is passed by any count"
    # collected the whole heap on the GUI thread (tens of ms with a model loaded) where the
    # interpreter would not.
    from app import _gc

    collector = GuiThreadCollector()
    collected: list[tuple[int, ...]] = []
    monkeypatch.setattr(_gc, "_INCREMENTAL_GC", True, raising=False)
    monkeypatch.setattr(gc, "collect", lambda *args: collected.append(args) or 0)
    monkeypatch.setattr(gc, "get_threshold", lambda: (2000, 10, 0))
    monkeypatch.setattr(gc, "get_count", lambda: (5, 3, 1))
    assert collector.collect_due() == -1
    monkeypatch.setattr(gc, "get_count", lambda: (2001, 11, 1))
    assert collector.collect_due() == 1  # the young generation and an increment of the old
    assert collected == [(1,)]
    collector.deleteLater()


def test_the_collector_keeps_a_third_threshold_of_0_where_the_collector_is_generational(
    qapp: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the incremental collector ignores a third threshold of 0; a generational one (before
    # 3.14) collects the oldest generation as soon as it holds anything, and so does this. A
    # third threshold of the incremental one's that is not 0 still counts.
    from app import _gc

    collector = GuiThreadCollector()
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    monkeypatch.setattr(gc, "get_count", lambda: (701, 11, 11))
    monkeypatch.setattr(_gc, "_INCREMENTAL_GC", False, raising=False)
    monkeypatch.setattr(gc, "get_threshold", lambda: (700, 10, 0))
    assert collector.collect_due() == 2
    monkeypatch.setattr(_gc, "_INCREMENTAL_GC", True, raising=False)
    monkeypatch.setattr(gc, "get_threshold", lambda: (700, 10, 10))
    assert collector.collect_due() == 2
    collector.deleteLater()
