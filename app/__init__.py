"""The SharpCam desktop app (PySide6)."""

from app._refcounts import keep_singletons_alive

# Before any Qt call: PySide6 6.12 on CPython < 3.12 aborts the app otherwise (app/_refcounts.py).
keep_singletons_alive()
